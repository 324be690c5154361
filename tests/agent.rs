//! The binary end to end: exit codes, the last good configuration, signals, job state
//! across kill -9, and the CLI reading and acting while an agent runs.

use std::time::Duration;

use crate::support::agent::{Site, eventually, path_str};

const START: Duration = Duration::from_secs(10);

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let site = Site::new(
        r#"
[jobs.probe]
kind = "command"
command = ["/bin/true"]
env = { API_TOKEN = "s3cret", POND = "7" }
every = "1m"
"#,
    );
    let (code, out, err) = site.cli(&["check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[jobs.heartbeat]"),
        "built-ins are printed:\n{out}"
    );
    assert!(
        out.contains(r#""API_TOKEN" = "***""#),
        "secret env masked:\n{out}"
    );
    assert!(out.contains(r#""POND" = "7""#), "other env kept:\n{out}");
    assert!(!out.contains("s3cret"));
}

#[test]
fn check_config_names_every_problem_and_exits_2() {
    let site = Site::new("");
    site.write_raw(
        r#"[agent]
id = "pond 7"
max_running = "four"

[jobs.sample]
every = "5 parsecs"

[jobs.nightly]
kind = "command"
command = ["/bin/true"]
cron = "0 3 * *"
"#,
    );
    let (code, out, err) = site.cli(&["check-config"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let file = path_str(&site.config());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with(&format!("{file}:2: agent.id: ")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:3: agent.max_running: ")),
        "{err}"
    );
    assert_eq!(
        lines[2],
        format!("{file}:6: jobs.sample.every: invalid duration \"5 parsecs\"")
    );
    assert!(
        lines[3].starts_with(&format!(
            "{file}:11: jobs.nightly.cron: expected 5 or 6 fields"
        )),
        "{err}"
    );
}

#[test]
fn bad_usage_exits_2_and_unknown_job_is_named() {
    let site = Site::new("");
    let (code, _, err) = site.cli(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    // --config may also stand before the command words.
    let out = std::process::Command::new(crate::support::agent::binary())
        .arg("--config")
        .arg(site.config())
        .args(["job", "run", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"nope\""));
    let (code, _, err) = site.cli(&["job", "run", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("tidegate: no job named \"nope\"; jobs are: cleanup, heartbeat"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
}

#[test]
fn run_without_any_valid_config_exits_2() {
    let site = Site::new("");
    site.write_raw("[agent]\nid = \"x\"\nstate_dir = \"/nonexistent/never\"\nbogus = 1\n");
    let mut agent = site.start();
    assert_eq!(agent.wait_exit(START), Some(2));
    assert!(
        agent.log().contains("agent.bogus: unknown key"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_broken_file_at_start_runs_on_the_last_good_config() {
    let site = Site::new("[jobs.heartbeat]\nevery = \"1s\"\n");
    let mut agent = site.start();
    agent.wait_for_log("agent started", START);
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
    assert!(site.state_dir().join("last-good.toml").exists());

    let good = std::fs::read_to_string(site.config()).unwrap();
    site.write_raw(&good.replace("every = \"1s\"", "every = \"soon\""));
    let mut agent = site.start();
    agent.wait_for_log("running on the last good configuration", START);
    assert!(
        agent
            .log()
            .contains("jobs.heartbeat.every: invalid duration \"soon\""),
        "{}",
        agent.log()
    );
    // It really runs: the heartbeat of the last good file fires every second.
    agent.wait_for_log("heartbeat: alive", START);
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
}

#[test]
fn sighup_applies_a_good_file_and_refuses_a_bad_one() {
    let site = Site::new("");
    let mut agent = site.start();
    agent.wait_for_log("agent started", START);

    let good = std::fs::read_to_string(site.config()).unwrap();
    site.write_raw(&format!("{good}\n[jobs.sample]\nevery = \"nope\"\n"));
    agent.signal(libc::SIGHUP);
    agent.wait_for_log("reload refused", START);
    assert!(
        agent
            .log()
            .contains("jobs.sample.every: invalid duration \"nope\"")
    );
    assert!(agent.child.try_wait().unwrap().is_none(), "still running");

    let marker = site.dir.path().join("ran");
    site.write_raw(&format!(
        "{good}\n[jobs.touch]\nkind = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}\"]\nevery = \"1s\"\n",
        marker.display()
    ));
    agent.signal(libc::SIGHUP);
    agent.wait_for_log("configuration reloaded", START);
    eventually(START, "the new job runs", || marker.exists());
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
    let saved = std::fs::read_to_string(site.state_dir().join("last-good.toml")).unwrap();
    assert!(
        saved.contains("[jobs.touch]"),
        "the applied file is the new last good one"
    );
}

#[test]
fn sigterm_gives_running_jobs_their_grace_then_kills_them() {
    let site = Site::new(
        r#"
[jobs.long]
kind = "command"
command = ["/bin/sh", "-c", "echo long-job-began; sleep 60"]
every = "1s"
"#,
    );
    let mut agent = site.start();
    agent.wait_for_log("long-job-began", START);
    let asked = std::time::Instant::now();
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the 1 s grace was given: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "the stop is bounded: {took:?}"
    );
    let long = site.job("long");
    assert_eq!(long["last_outcome"], "cancelled", "{long}");
    assert_eq!(long["state"], "active");
}

#[test]
fn job_state_survives_kill_9_and_the_cut_off_run_is_aborted() {
    let site = Site::new(
        r#"
[jobs.tick]
kind = "command"
command = ["/bin/true"]
every = "1s"

[jobs.long]
kind = "command"
command = ["/bin/sh", "-c", "echo long-started; sleep 60"]
every = "2s"
"#,
    );
    let mut agent = site.start();
    eventually(Duration::from_secs(15), "three runs recorded", || {
        site.job("tick")["runs"].as_u64().unwrap_or(0) >= 3
    });
    agent.wait_for_log("long-started", START);
    // A run gets its open row once it has run a second.
    eventually(START, "the long run is recorded as open", || {
        site.job("long")["state"] == "running"
    });
    agent.signal(libc::SIGKILL);
    assert_eq!(agent.wait_exit(START), None, "killed by a signal");

    let tick = site.job("tick");
    let runs_before = tick["runs"].as_u64().unwrap();
    assert!(runs_before >= 3, "{tick}");
    assert_eq!(tick["successes"].as_u64(), Some(runs_before));
    assert!(tick["last_run"].is_string());
    assert_eq!(
        site.job("long")["state"],
        "running",
        "the open run is visible"
    );

    let mut agent = site.start();
    agent.wait_for_log("recorded as aborted", START);
    let long = site.job("long");
    assert_eq!(long["last_outcome"], "aborted", "{long}");
    eventually(START, "counting goes on from the persisted state", || {
        site.job("tick")["runs"].as_u64().unwrap_or(0) > runs_before
    });
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
}

#[test]
fn job_run_runs_now_prints_the_outcome_and_is_recorded_while_an_agent_runs() {
    let site = Site::new(
        r#"
[jobs.ok]
kind = "command"
command = ["/bin/sh", "-c", "echo fine"]

[jobs.broken]
kind = "command"
command = ["/bin/sh", "-c", "echo 'probe unreachable' >&2; exit 3"]
"#,
    );
    let mut agent = site.start();
    agent.wait_for_log("agent started", START);

    let (code, out, err) = site.cli(&["job", "run", "ok"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("job ok: success (1 attempt, "), "{out}");
    let (code, out, _) = site.cli(&["job", "run", "broken"]);
    assert_eq!(code, 1);
    assert!(out.contains("job broken: failure (1 attempt, "), "{out}");
    assert!(
        out.trim_end().ends_with("exit status 3: probe unreachable"),
        "{out}"
    );

    let ok = site.job("ok");
    assert_eq!(
        (ok["runs"].as_u64(), ok["successes"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(ok["trigger"], serde_json::Value::Null, "manual-only job");
    let broken = site.job("broken");
    assert_eq!(broken["failures"].as_u64(), Some(1));
    assert_eq!(broken["last_error"], "exit status 3: probe unreachable");
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
}

#[test]
fn the_sample_job_stores_each_cycle_of_simulated_readings() {
    let site = Site::new(
        r#"
[[bus]]
name = "sim"
kind = "simulated"

[[sensor]]
id = "pond1.do"
bus = "sim"
unit = "mg/L"
model = { base = 7.5, amplitude = 1.5, period = "24h", noise = 0.05 }

[[sensor]]
id = "pond1.temp"
bus = "sim"
unit = "degC"
model = { base = 18.0, amplitude = 2.0, period = "24h", noise = 0.1 }

[[sensor]]
id = "pond1.off"
bus = "sim"
enabled = false
model = { base = 1.0 }

[jobs.sample]
every = "1s"
"#,
    );
    let mut agent = site.start();
    agent.wait_for_log("sample: readings stored", START);
    agent.wait_for_log("first=3 last=4", START);
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
    let db = tidegate::store::open(&site.state_dir()).unwrap();
    let rows: Vec<(i64, String, Option<f64>, String, String, String)> = db
        .prepare("SELECT seq, sensor, value, unit, quality, clock FROM pending ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.len() >= 4, "{rows:?}");
    for (i, (seq, sensor, value, unit, quality, clock)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1, "seqs are dense from 1");
        let (expected, base, spread) = if i % 2 == 0 {
            ("pond1.do", 7.5, 1.5 + 0.3)
        } else {
            ("pond1.temp", 18.0, 2.0 + 0.6)
        };
        assert_eq!(sensor, expected, "the disabled sensor is not read");
        assert!(
            (value.unwrap() - base).abs() <= spread,
            "{sensor} = {value:?}"
        );
        assert_eq!(unit, if i % 2 == 0 { "mg/L" } else { "degC" });
        assert_eq!((quality.as_str(), clock.as_str()), ("good", "synced"));
    }
}

#[test]
fn a_corrupt_buffer_at_start_is_moved_aside_and_sampling_goes_on_in_a_new_epoch() {
    let site = Site::new(
        "[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\n[[sensor]]\nid = \"p.do\"\nbus = \"sim\"\nmodel = { base = 7.5 }\n\n[jobs.sample]\nevery = \"1s\"\n",
    );
    std::fs::create_dir_all(site.state_dir()).unwrap();
    let garbage = b"SQLite format 3\0 but then nothing a database would hold".repeat(100);
    std::fs::write(site.state_dir().join("buffer.db"), &garbage).unwrap();
    let mut agent = site.start();
    agent.wait_for_log("the buffer database is corrupt", START);
    agent.wait_for_log("sample: readings stored", START);
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
    let kept: Vec<_> = std::fs::read_dir(site.state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("buffer.db.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(std::fs::read(&kept[0]).unwrap()[100..] == garbage[100..]);
    let db = tidegate::store::open(&site.state_dir()).unwrap();
    assert_eq!(tidegate::store::epoch(&db).unwrap().len(), 32);
    let first: i64 = db
        .query_row("SELECT min(seq) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(first, 1, "the new database starts at seq 1");
    // A second start finds the new database sound and keeps it.
    let mut agent = site.start();
    agent.wait_for_log("agent started", START);
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0));
    assert!(!agent.log().contains("corrupt"), "{}", agent.log());
}

/// Commissioning against a real line: a Modbus RTU device on a pty, a dead slave, a
/// simulated bus. Multi-threaded so the device answers while the CLI runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_reads_once_prints_a_table_and_stores_nothing() {
    use std::collections::HashMap;

    use crate::support::modbus::{SerialLine, f32_words};

    let mut image = vec![0u16; 4];
    image[0..2].copy_from_slice(&f32_words(7.83));
    let line = SerialLine::start(HashMap::from([(3, image)]));
    let site = Site::new(&format!(
        r#"
[[bus]]
name = "rs485-a"
kind = "modbus-rtu"
port = "{}"
timeout = "100ms"
retries = 0

[[bus]]
name = "sim"
kind = "simulated"

[[sensor]]
id = "pond7.do"
bus = "rs485-a"
slave = 3
register = 0
type = "f32"
unit = "mg/L"

[[sensor]]
id = "pond8.do"
bus = "rs485-a"
slave = 4
register = 0
type = "f32"
unit = "mg/L"

[[sensor]]
id = "pond9.temp"
bus = "sim"
unit = "degC"
model = {{ base = 18.0 }}
"#,
        line.path.display()
    ));
    let cli = {
        let site = &site;
        move |args: &[&str]| site.cli(args)
    };
    let (code, out, err) = tokio::task::block_in_place(|| cli(&["sample"]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("SENSOR"), "{out}");
    let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[1])[..4],
        ["pond7.do", &f64::from(7.83f32).to_string(), "mg/L", "good"]
    );
    assert!(
        lines[2].starts_with("pond8.do") && lines[2].contains("bad"),
        "{out}"
    );
    assert!(
        lines[2].contains("slave 4: no answer within 100ms"),
        "{out}"
    );
    assert_eq!(cells(lines[3])[..4], ["pond9.temp", "18", "degC", "good"]);

    let (code, out, _) = tokio::task::block_in_place(|| cli(&["sample", "--sensor", "pond9.temp"]));
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, _, err) = tokio::task::block_in_place(|| cli(&["sample", "--sensor", "pond6.do"]));
    assert_eq!(
        (code, err.trim()),
        (2, "tidegate: no sensor named \"pond6.do\"")
    );

    let db = tidegate::store::open(&site.state_dir()).unwrap();
    let stored: i64 = db
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "sample stores nothing");
}
