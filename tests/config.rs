//! The config contract from the outside: example files parse, broken files give exact
//! `FILE:LINE: key.path: message` lines, the printed config reads back equal, and a
//! broken file falls back to the last good one.

use std::path::{Path, PathBuf};

use tidegate::config::{
    self, BusKind, Config, CronExpr, Every, JobKind, Overlap, Source, Threshold, Trigger,
    load_with_fallback, parse_json, parse_str, save_last_good, to_toml_masked,
};

/// Every error line, in order.
fn error_lines(result: Result<Config, config::ConfigErrors>) -> Vec<String> {
    match result {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// Parses `text` as `demo.toml` and compares every error line; a mismatch is described.
fn mismatch(text: &str, expected: &[&str]) -> Option<String> {
    let expected: Vec<&str> = expected.to_vec();
    let got = error_lines(parse_str(text, "demo.toml"));
    (got != expected).then(|| {
        format!(
            "config:\n{text}\nexpected:\n{}\ngot:\n{}\n",
            expected.join("\n"),
            got.join("\n")
        )
    })
}

fn check(text: &str, expected: &[&str]) {
    if let Some(m) = mismatch(text, expected) {
        panic!("{m}");
    }
}

/// A valid `Config`; panics with every error otherwise.
fn parse_ok(text: &str, origin: &str) -> Config {
    parse_str(text, origin).unwrap_or_else(|e| panic!("{origin} does not parse:\n{e}"))
}

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "config/ holds the demo and the production example"
    );
    files
}

#[test]
fn every_example_config_parses() {
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let origin = path.display().to_string();
        let c = parse_ok(&text, &origin);
        for name in ["cleanup", "heartbeat", "sample", "upload"] {
            assert!(c.job(name).is_some(), "{origin}: built-in {name}");
        }
    }
}

#[test]
fn printed_config_reads_back_equal() {
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let origin = path.display().to_string();
        let first = parse_ok(&text, &origin);
        let printed = to_toml_masked(&first);
        let second = parse_str(&printed, "printed")
            .unwrap_or_else(|e| panic!("{origin} printed:\n{printed}\n{e}"));
        assert_eq!(first, second, "{origin} printed:\n{printed}");
    }
}

#[test]
fn defaults_and_built_in_jobs() {
    let c = parse_ok("[agent]\nid = \"p\"\ntimezone = \"UTC\"\n", "min.toml");
    assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/tidegate"));
    assert_eq!(c.agent.log_dir, Some(PathBuf::from("/var/log/tidegate")));
    assert_eq!(c.agent.log_max_size, 10 << 20);
    assert_eq!(c.agent.max_running, 4);
    assert_eq!(c.buffer.max_size, 512 << 20);
    assert!(c.mqtt.is_none() && c.upload.is_none() && c.metrics.is_none());
    // An empty [metrics] serves on loopback.
    let m = parse_ok(
        "[agent]\nid = \"p\"\ntimezone = \"UTC\"\n[metrics]\n",
        "m.toml",
    );
    assert_eq!(
        m.metrics.map(|m| m.listen.to_string()).as_deref(),
        Some("127.0.0.1:9464")
    );
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["cleanup", "heartbeat", "sample", "upload"]);
    let sample = c.job("sample").expect("built-in");
    assert_eq!(
        sample.trigger,
        Some(Trigger::Every(Every::Fixed(
            std::time::Duration::from_secs(300)
        )))
    );
    assert_eq!(sample.kind, JobKind::Sample { sensors: None });
    assert!(sample.coalesce && sample.enabled && sample.retry.is_none());
    assert_eq!(sample.overlap, Overlap::Skip);
    assert!(matches!(
        c.job("cleanup").and_then(|j| j.trigger.as_ref()),
        Some(Trigger::Cron(_))
    ));
}

#[test]
fn built_in_job_is_merged_key_by_key() {
    let text = "[agent]\nid = \"p\"\n[jobs.upload]\ncron = \"0 * * * *\"\njitter = \"1m\"\nretry = { delay = \"2s\" }\n";
    let c = parse_ok(text, "m.toml");
    let upload = c.job("upload").expect("built-in");
    assert_eq!(upload.kind, JobKind::Upload);
    assert!(
        matches!(upload.trigger, Some(Trigger::Cron(_))),
        "the given trigger replaces the default"
    );
    let retry = upload.retry.expect("retry table given");
    assert_eq!((retry.attempts, retry.backoff), (3, 2.0));
    assert_eq!(retry.delay, std::time::Duration::from_secs(2));
    assert_eq!(retry.max_delay, std::time::Duration::from_secs(300));
}

#[test]
fn farm_example_reads_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tidegate.toml");
    let text = std::fs::read_to_string(path).expect("readable");
    let c = parse_ok(&text, "tidegate.toml");
    assert_eq!(c.buses.len(), 3);
    assert!(matches!(c.buses[2].kind, BusKind::ModbusTcp { .. }));
    assert_eq!(c.alarms[0].threshold, Threshold::Below(4.0));
    assert_eq!(c.alarms[0].clear_at, 5.0);
    assert_eq!(
        c.mqtt.as_ref().map(|m| m.topic_prefix.as_str()),
        Some("tidegate/kagoshima-1/pond-07")
    );
    assert!(c.job("aerator-boost").is_some_and(|j| j.trigger.is_none()));
}

#[test]
fn topic_prefix_defaults_to_site_and_id() {
    let text = "[agent]\nid = \"p1\"\n[mqtt]\nurl = \"mqtt://b\"\n";
    let c = parse_ok(text, "t.toml");
    assert_eq!(c.mqtt.expect("mqtt").topic_prefix, "tidegate/default/p1");
}

#[test]
fn secrets_are_masked_and_secret_files_printed() {
    let text = r#"[agent]
id = "p"
[mqtt]
url = "mqtts://pond:hunter2@broker:8883"
password_file = "/etc/tidegate/mqtt.pass"
[jobs.script]
kind = "command"
command = ["/bin/true"]
env = { API_KEY = "k1", db_password = "pw", SECRET_SAUCE = "s", AUTH_TOKEN = "t", POND = "7" }
"#;
    let c = parse_ok(text, "s.toml");
    let printed = to_toml_masked(&c);
    for secret in ["hunter2", "k1", "\"pw\"", "\"s\"", "\"t\""] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    assert!(
        printed.contains("mqtts://pond:***@broker:8883"),
        "{printed}"
    );
    assert!(
        printed.contains("password_file = \"/etc/tidegate/mqtt.pass\""),
        "{printed}"
    );
    assert!(printed.contains("\"POND\" = \"7\""), "{printed}");
}

#[test]
fn json_overlay_reads_like_a_file_without_lines() {
    let doc = serde_json::json!({
        "agent": {"id": "p"},
        "jobs": {"sample": {"every": "5 parsecs"}, "x": {"kind": "nope"}},
        "sensor": [{"id": "a", "bus": "nowhere", "slave": 1, "register": 0}],
    });
    let got = error_lines(parse_json(&doc, "config/set v7"));
    assert_eq!(
        got,
        [
            r#"config/set v7: sensor[0].bus: unknown bus "nowhere""#,
            r#"config/set v7: jobs.sample.every: invalid duration "5 parsecs""#,
            r#"config/set v7: jobs.x.kind: invalid value "nope": expected one of "heartbeat", "sample", "upload", "cleanup", "command""#,
        ]
    );
    let null = serde_json::json!({"agent": {"id": null}});
    assert_eq!(
        error_lines(parse_json(&null, "config/set v8")),
        ["config/set v8: agent.id: null is not a value here"]
    );
}

#[test]
fn unreadable_file_is_one_error() {
    let err = config::load(Path::new("/nonexistent/tidegate.toml")).expect_err("missing file");
    assert_eq!(
        err.to_string(),
        "/nonexistent/tidegate.toml: file: cannot read: no such file or directory (os error 2)"
    );
}

#[test]
fn broken_file_falls_back_to_last_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let good = format!(
        "[agent]\nid = \"good\"\nstate_dir = {:?}\ntimezone = \"UTC\"\n",
        state.display().to_string()
    );
    let path = dir.path().join("tidegate.toml");
    let broken = format!(
        "[agent]\nid = \"bad\"\nstate_dir = {:?}\nmax_running = 0\n",
        state.display().to_string()
    );
    std::fs::write(&path, &broken).expect("write");

    // No last good file yet: the file's own errors.
    let errors = load_with_fallback(&path).expect_err("nothing to fall back on");
    assert!(
        errors
            .to_string()
            .contains(":4: agent.max_running: must be at least 1, got 0"),
        "{errors}"
    );

    save_last_good(&state, &good).expect("save");
    let loaded = load_with_fallback(&path).expect("falls back to the last good file");
    assert_eq!(loaded.config.agent.id, "good");
    assert_eq!(loaded.text, good);
    let Source::LastGood { errors } = loaded.source else {
        panic!("falls back")
    };
    assert!(errors.to_string().contains("agent.max_running"), "{errors}");

    // A file that is good loads as itself.
    std::fs::write(&path, &good).expect("write");
    let loaded = load_with_fallback(&path).expect("a good file loads");
    assert_eq!(loaded.source, Source::File);
}

const AGENT: &str = "[agent]\nid = \"p\"\n";

#[test]
fn broken_configs_give_exact_lines() {
    // The message after the key path is the cron module's own.
    let bad_cron = format!(
        "demo.toml:5: jobs.x.cron: {}",
        CronExpr::parse("0 * * *").expect_err("four fields are not a crontab")
    );
    let bus = "[[bus]]\nname = \"a\"\nkind = \"modbus-rtu\"\nport = \"/dev/ttyUSB0\"\n";
    let cases: Vec<(String, Vec<&str>)> = vec![
        // 1: unknown key at top level
        (
            format!("colour = \"blue\"\n{AGENT}"),
            vec![r#"demo.toml:1: colour: unknown key "colour""#],
        ),
        // 2: unknown key in agent
        (
            format!("{AGENT}nmae = \"x\"\n"),
            vec![r#"demo.toml:3: agent.nmae: unknown key "nmae""#],
        ),
        // 3: unknown key in a job
        (
            format!("{AGENT}[jobs.sample]\nevry = \"1m\"\n"),
            vec![r#"demo.toml:4: jobs.sample.evry: unknown key "evry""#],
        ),
        // 4: unknown key in a sensor
        (
            format!(
                "{AGENT}{bus}[[sensor]]\nid = \"s\"\nbus = \"a\"\nslave = 1\nregister = 0\nunits = \"mg/L\"\n"
            ),
            vec![r#"demo.toml:12: sensor[0].units: unknown key "units""#],
        ),
        // 5: wrong types, one of each
        (
            format!(
                "{AGENT}site = 7\nmax_running = \"4\"\nlog_max_age = 7\n[upload]\nurl = \"https://x\"\ngzip = \"yes\"\n"
            ),
            vec![
                "demo.toml:3: agent.site: expected a string, got an integer",
                "demo.toml:4: agent.max_running: expected an integer, got a string",
                "demo.toml:5: agent.log_max_age: expected a string, got an integer",
                "demo.toml:8: upload.gzip: expected a boolean, got a string",
            ],
        ),
        // 6: a section of the wrong type
        (
            format!("bus = \"a\"\nmqtt = 1\n{AGENT}"),
            vec![
                "demo.toml:1: bus: expected an array, got a string",
                "demo.toml:2: mqtt: expected a table, got an integer",
            ],
        ),
        // 7: bad cron
        (
            format!("{AGENT}[jobs.x]\nkind = \"upload\"\ncron = \"0 * * *\"\n"),
            vec![bad_cron.as_str()],
        ),
        // 8: bad zone
        (
            format!("{AGENT}timezone = \"Mars/Olympus\"\n"),
            vec![
                r#"demo.toml:3: agent.timezone: unknown time zone "Mars/Olympus" (an IANA name like "Asia/Tokyo")"#,
            ],
        ),
        // 9: bad duration
        (
            format!("{AGENT}[jobs.sample]\nevery = \"5 parsecs\"\n"),
            vec![r#"demo.toml:4: jobs.sample.every: invalid duration "5 parsecs""#],
        ),
        // 10: bad size
        (
            format!("{AGENT}[buffer]\nmax_size = \"lots\"\n"),
            vec![r#"demo.toml:4: buffer.max_size: invalid size "lots""#],
        ),
        // 11: duplicate job table: TOML itself refuses it
        (
            format!("{AGENT}[jobs.x]\nkind = \"upload\"\n[jobs.x]\nkind = \"cleanup\"\n"),
            vec![r#"demo.toml:5: syntax: duplicate key "x": table [jobs.x] is defined twice"#],
        ),
        // 12: duplicate sensor ids
        (
            format!(
                "{AGENT}{bus}[[sensor]]\nid = \"s\"\nbus = \"a\"\nslave = 1\nregister = 0\n[[sensor]]\nid = \"s\"\nbus = \"a\"\nslave = 2\nregister = 0\n"
            ),
            vec![r#"demo.toml:13: sensor[1].id: duplicate sensor id "s" (also sensor[0])"#],
        ),
        // 13: sensor on an unknown bus
        (
            format!("{AGENT}[[sensor]]\nid = \"s\"\nbus = \"b\"\nslave = 1\nregister = 0\n"),
            vec![r#"demo.toml:5: sensor[0].bus: unknown bus "b""#],
        ),
        // 14: register past 65535, by itself and by its width
        (
            format!(
                "{AGENT}{bus}[[sensor]]\nid = \"s\"\nbus = \"a\"\nslave = 1\nregister = 65536\n[[sensor]]\nid = \"t\"\nbus = \"a\"\nslave = 1\nregister = \"0xFFFF\"\ntype = \"f32\"\n"
            ),
            vec![
                "demo.toml:11: sensor[0].register: must be 0..=65535, got 65536",
                "demo.toml:16: sensor[1].register: a f32 at register 65535 runs past register 65535",
            ],
        ),
        // 15: missing agent.id: at the header's line; without [agent], no line
        (
            "[agent]\nsite = \"x\"\n".to_owned(),
            vec!["demo.toml:1: agent.id: missing required key"],
        ),
        (
            "[buffer]\n".to_owned(),
            vec!["demo.toml: agent.id: missing required key"],
        ),
        // 16: bad agent.id characters
        (
            "[agent]\nid = \"pond 7/α\"\n".to_owned(),
            vec![
                r#"demo.toml:2: agent.id: invalid id "pond 7/α": use 1 to 64 letters, digits, "_" or "-""#,
            ],
        ),
        // 17: TOML that does not parse
        (
            format!("{AGENT}[jobs.sample\nevery = \"1m\"\n"),
            vec!["demo.toml:3: syntax: unclosed table, expected `]`"],
        ),
        // 18: two triggers on one job
        (
            format!("{AGENT}[jobs.sample]\nevery = \"1m\"\nat = \"2026-12-25T10:00:00+09:00\"\n"),
            vec![
                r#"demo.toml:5: jobs.sample.at: a job has at most one trigger, got "every", "at""#,
            ],
        ),
        // 19: command job without command, and with an empty one
        (
            format!(
                "{AGENT}[jobs.x]\nkind = \"command\"\nevery = \"1m\"\n[jobs.y]\nkind = \"command\"\ncommand = []\n"
            ),
            vec![
                "demo.toml:3: jobs.x.command: missing required key",
                "demo.toml:8: jobs.y.command: must name a program: a non-empty array of strings",
            ],
        ),
        // 20: out-of-range numbers and enum values
        (
            format!(
                "{AGENT}max_running = 0\nclock = \"atomic\"\n[[bus]]\nname = \"a\"\nkind = \"modbus-rtu\"\nport = \"/dev/ttyS0\"\nbaud = 0\nparity = \"mark\"\ndata_bits = 9\nstop_bits = 3\n[[sensor]]\nid = \"s\"\nbus = \"a\"\nslave = 248\nregister = 0\ntable = \"coil\"\n"
            ),
            vec![
                "demo.toml:3: agent.max_running: must be at least 1, got 0",
                r#"demo.toml:4: agent.clock: invalid value "atomic": expected one of "ntp", "trusted""#,
                "demo.toml:9: bus[0].baud: must be at least 1, got 0",
                r#"demo.toml:10: bus[0].parity: invalid value "mark": expected one of "none", "even", "odd""#,
                "demo.toml:11: bus[0].data_bits: must be 5..=8, got 9",
                "demo.toml:12: bus[0].stop_bits: must be 1 or 2, got 3",
                "demo.toml:16: sensor[0].slave: must be 1..=247, got 248",
                r#"demo.toml:18: sensor[0].table: coil and discrete tables hold single bits: type must be "bool""#,
            ],
        ),
        // 21: urls and the metrics address
        (
            format!(
                "{AGENT}[mqtt]\nurl = \"http://u:pw@broker\"\n[upload]\nurl = \"ftp://x\"\n[metrics]\nlisten = \"localhost\"\n"
            ),
            vec![
                r#"demo.toml:4: mqtt.url: invalid url "http://u:***@broker": must start with mqtt:// or mqtts://"#,
                r#"demo.toml:6: upload.url: invalid url "ftp://x": must start with http:// or https://"#,
                r#"demo.toml:8: metrics.listen: invalid socket address "localhost" (like "127.0.0.1:9464")"#,
            ],
        ),
        // 22: simulated and Modbus fields in the wrong place
        (
            format!(
                "{AGENT}{bus}[[bus]]\nname = \"sim\"\nkind = \"simulated\"\nbaud = 9600\n[[sensor]]\nid = \"s\"\nbus = \"a\"\nslave = 1\nregister = 0\nmodel = {{ base = 1.0 }}\n[[sensor]]\nid = \"t\"\nbus = \"sim\"\nslave = 1\nmodel = {{ base = 1.0 }}\n"
            ),
            vec![
                r#"demo.toml:10: bus[1].baud: only modbus-rtu buses take "baud""#,
                r#"demo.toml:16: sensor[0].model: only sensors on a simulated bus take "model""#,
                r#"demo.toml:20: sensor[1].slave: a sensor on a simulated bus takes "model", not "slave""#,
            ],
        ),
        // 23: alarm rules
        (
            format!(
                "{AGENT}[[alarm]]\nid = \"a\"\nsensor = \"nope\"\nbelow = 1.0\nabove = 2.0\nclear_below = 0.5\nrun = \"ghost\"\n[[alarm]]\nid = \"a\"\nsensor = \"nope\"\n"
            ),
            vec![
                r#"demo.toml:5: alarm[0].sensor: unknown sensor "nope""#,
                r#"demo.toml:7: alarm[0].above: an alarm takes "below" or "above", not both"#,
                r#"demo.toml:9: alarm[0].run: unknown job "ghost""#,
                r#"demo.toml:10: alarm[1].below: missing required key: an alarm needs "below" or "above""#,
                r#"demo.toml:11: alarm[1].id: duplicate alarm id "a" (also alarm[0])"#,
                r#"demo.toml:12: alarm[1].sensor: unknown sensor "nope""#,
            ],
        ),
        // 24: job options
        (
            format!(
                "{AGENT}[jobs.heartbeat]\nkind = \"sample\"\nsensors = [\"x\"]\nstart = \"2026-02-01T00:00:00Z\"\nend = \"2026-01-01T00:00:00Z\"\noverlap = \"stack\"\nretry = {{ backoff = 0.5, tries = 2 }}\n[jobs.\"bad name\"]\nkind = \"upload\"\n[jobs.y]\nevery = \"0mo\"\nenv = {{ A = \"1\" }}\n"
            ),
            vec![
                r#"demo.toml:4: jobs.heartbeat.kind: the built-in job "heartbeat" is of kind "heartbeat""#,
                r#"demo.toml:5: jobs.heartbeat.sensors: only sample jobs take "sensors""#,
                "demo.toml:7: jobs.heartbeat.end: must be after start",
                r#"demo.toml:8: jobs.heartbeat.overlap: invalid value "stack": expected one of "skip", "queue""#,
                r#"demo.toml:9: jobs.heartbeat.retry.tries: unknown key "tries""#,
                "demo.toml:9: jobs.heartbeat.retry.backoff: must be at least 1.0, got 0.5",
                r#"demo.toml:10: jobs.bad name: invalid job name "bad name": use letters, digits, "_" or "-""#,
                "demo.toml:12: jobs.y.kind: missing required key",
                r#"demo.toml:13: jobs.y.every: interval "0mo" must be greater than zero"#,
            ],
        ),
        // 25: a one-shot needs an offset; sizes and registers in their other spellings
        (
            format!(
                "{AGENT}log_max_size = 1048576\n[jobs.once]\nkind = \"upload\"\nat = 2026-12-25T10:00:00\n[buffer]\nmin_free_disk = -1\n"
            ),
            vec![
                r#"demo.toml:6: jobs.once.at: invalid RFC 3339 time "2026-12-25T10:00:00" (a date, a time and an offset, e.g. "2026-12-25T10:00:00+09:00")"#,
                "demo.toml:8: buffer.min_free_disk: invalid size -1",
            ],
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(text, expected)| mismatch(text, expected))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The same through the binary: exit 2 and exactly these lines on stderr.
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in &cases {
        std::fs::write(dir.path().join("demo.toml"), text).unwrap();
        let out = std::process::Command::new(crate::support::agent::binary())
            .current_dir(dir.path())
            .args(["check-config", "--config", "demo.toml"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout for a broken file");
        assert_eq!(stderr.lines().collect::<Vec<_>>(), *expected, "{text}");
    }
}

#[test]
fn several_errors_at_once_all_appear_in_document_order() {
    let text = r#"[agent]
id = "pond 7"
max_running = 0
colour = "blue"

[[bus]]
name = "a"
kind = "modbus-rtu"
port = "/dev/ttyUSB0"

[[sensor]]
id = "s"
bus = "b"
slave = 0
register = 0

[jobs.sample]
every = "5 parsecs"
sensors = ["ghost"]
"#;
    check(
        text,
        &[
            r#"demo.toml:2: agent.id: invalid id "pond 7": use 1 to 64 letters, digits, "_" or "-""#,
            "demo.toml:3: agent.max_running: must be at least 1, got 0",
            r#"demo.toml:4: agent.colour: unknown key "colour""#,
            r#"demo.toml:13: sensor[0].bus: unknown bus "b""#,
            "demo.toml:14: sensor[0].slave: must be 1..=247, got 0",
            r#"demo.toml:18: jobs.sample.every: invalid duration "5 parsecs""#,
            r#"demo.toml:19: jobs.sample.sensors[0]: unknown sensor "ghost""#,
        ],
    );
}
