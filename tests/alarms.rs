//! `[[alarm]]` rules end to end through the binary: raised from the readings the
//! sample job stores, with no broker and no upload server, listed by `tidegate
//! alarms`, and still raised (not raised again) after a kill -9.

use std::time::Duration;

use crate::support::agent::{Agent, Site, eventually};

/// Two simulated sensors sampled every second, a low-oxygen rule (with `extra` keys)
/// that the constant 4.2 mg/L breaks, and a temperature rule it does not.
fn rules(extra: &str) -> String {
    format!(
        "[jobs.sample]\nevery = \"1s\"\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"pond1.do\"\nbus = \"sim\"\nunit = \"mg/L\"\nmodel = {{ base = 4.2 }}\n\
         [[sensor]]\nid = \"pond1.temp\"\nbus = \"sim\"\nunit = \"degC\"\nmodel = {{ base = 18.0 }}\n\
         [[alarm]]\nid = \"pond1-hot\"\nsensor = \"pond1.temp\"\nabove = 30.0\n\
         [[alarm]]\nid = \"pond1-low-oxygen\"\nsensor = \"pond1.do\"\nbelow = 5.0\nclear_above = 5.5\nfor = \"2s\"\nseverity = \"critical\"\n{extra}"
    )
}

/// Kills the agent with -9 and starts it again; returns once it has stored three
/// more cycles.
fn kill_and_restart(site: &Site, mut agent: Agent) -> Agent {
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5));
    let again = site.start();
    eventually(
        Duration::from_secs(20),
        "readings after the restart",
        || again.log().matches("sample: readings stored").count() >= 3,
    );
    again
}

fn alarms(site: &Site) -> Vec<serde_json::Value> {
    let (code, out, err) = site.cli(&["alarms", "--json"]);
    assert_eq!(code, 0, "alarms failed: {err}");
    serde_json::from_str(&out).expect("alarms --json is a JSON array")
}

#[test]
fn before_any_reading_every_rule_is_ok() {
    let site = Site::new(&rules(""));
    let rows = alarms(&site);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["state"], "ok");
        assert!(row["since"].is_null() && row["last_value"].is_null() && row["last_ts"].is_null());
    }
    let (code, table, _) = site.cli(&["alarms"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("pond1-low-oxygen") && table.contains("< 5"),
        "{table}"
    );
}

#[test]
fn a_low_oxygen_alarm_is_raised_offline_and_survives_a_kill() {
    let site = Site::new(&rules(""));
    let agent = site.start();
    agent.wait_for_log("alarm raised (critical)", Duration::from_secs(20));

    let rows = alarms(&site);
    let low = rows.iter().find(|r| r["id"] == "pond1-low-oxygen").unwrap();
    assert_eq!(low["state"], "raised", "{low}");
    assert_eq!(low["sensor"], "pond1.do");
    assert_eq!(low["last_value"], 4.2);
    let since = low["since"].as_str().unwrap().to_string();
    assert!(since.ends_with('Z') && since.len() == 24, "{since}");
    let hot = rows.iter().find(|r| r["id"] == "pond1-hot").unwrap();
    assert_eq!(hot["state"], "ok");
    assert_eq!(hot["last_value"], 18.0);

    // Raised once, and only after the condition held `for`: by the first reading.
    let log = agent.log();
    assert_eq!(log.matches("alarm raised").count(), 1, "{log}");
    let (code, out, err) = site.cli(&["buffer", "list", "--json", "--sensor", "pond1.do"]);
    assert_eq!(code, 0, "{err}");
    let readings: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    let first = readings
        .iter()
        .map(|r| time(r["ts"].as_str().unwrap()))
        .min()
        .unwrap();
    let held = time(&since) - first;
    assert!(held >= chrono::Duration::seconds(2), "raised after {held}");
    assert!(held < chrono::Duration::seconds(4), "raised after {held}");

    let mut again = kill_and_restart(&site, agent);
    assert!(!again.log().contains("alarm raised"), "{}", again.log());
    let low = alarms(&site)
        .into_iter()
        .find(|r| r["id"] == "pond1-low-oxygen")
        .unwrap();
    assert_eq!(low["state"], "raised");
    assert_eq!(low["since"].as_str(), Some(since.as_str()));
    again.signal(libc::SIGTERM);
    assert_eq!(again.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_raised_alarm_runs_its_job_once_and_not_again_after_a_restart() {
    let marker = tempfile::tempdir().unwrap();
    let runs = marker.path().join("aerator-runs");
    let rest = rules(&format!(
        "run = \"aerator\"\n\
         [jobs.aerator]\nkind = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo on >> {}\"]\n",
        runs.display()
    ));
    let site = Site::new(&rest);
    let agent = site.start();
    agent.wait_for_log("alarm raised: its job started", Duration::from_secs(20));
    eventually(Duration::from_secs(10), "the aerator ran", || runs.exists());
    // Cycles go on with the oxygen still low: no second start.
    eventually(Duration::from_secs(20), "more cycles", || {
        agent.log().matches("sample: readings stored").count() >= 6
    });
    let count = || std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(count(), 1, "{}", agent.log());

    let mut again = kill_and_restart(&site, agent);
    assert_eq!(count(), 1, "{}", again.log());
    again.signal(libc::SIGTERM);
    assert_eq!(again.wait_exit(Duration::from_secs(10)), Some(0));
}

/// The whole path (the sample job, the buffer, the rules, an alarm's job) on a wall
/// clock the test moves five seconds per cycle: two minutes of pond in well under a
/// second. The simulated oxygen is a cosine with its low at 06:00; with base 5.5 and
/// amplitude 1 it is under 5.0 for a third of its period: 20 s for pond1 (60 s
/// period), 40 s for pond2 (120 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_driven_clock_a_20s_dip_is_not_raised_a_40s_one_is_and_clears_past_its_hysteresis() {
    use std::sync::Arc;

    use tidegate::alarm::Phase;
    use tidegate::clock::{Clock, TestClock};
    use tidegate::store::{self, StoreHandle, alarms as alarm_store, jobs};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("aerator-runs");
    let config = tidegate::config::parse_str(
        &format!(
            "[agent]\nid = \"t\"\ntimezone = \"UTC\"\nclock = \"trusted\"\n\
             [jobs.heartbeat]\nenabled = false\n[jobs.upload]\nenabled = false\n[jobs.cleanup]\nenabled = false\n\
             [jobs.sample]\ncron = \"0 0 1 1 *\"\n\
             [jobs.aerator]\nkind = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo on >> {}\"]\n\
             [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
             [[sensor]]\nid = \"pond1.do\"\nbus = \"sim\"\nmodel = {{ base = 5.5, amplitude = 1.0, period = \"60s\" }}\n\
             [[sensor]]\nid = \"pond2.do\"\nbus = \"sim\"\nmodel = {{ base = 5.5, amplitude = 1.0, period = \"120s\" }}\n\
             [[alarm]]\nid = \"pond1-low\"\nsensor = \"pond1.do\"\nbelow = 5.0\nfor = \"30s\"\n\
             [[alarm]]\nid = \"pond2-low\"\nsensor = \"pond2.do\"\nbelow = 5.0\nclear_above = 5.8\nfor = \"30s\"\nrun = \"aerator\"\n",
            marker.display()
        ),
        "t.toml",
    )
    .unwrap();
    let rules = config.alarms.clone();
    let clock = TestClock::at(2026, 11, 23, 5, 59, 0, true);
    let store = StoreHandle::spawn(store::open(dir.path()).unwrap());
    let shutdown = CancellationToken::new();
    let (scheduler, task) = tidegate::scheduler::spawn(
        Arc::new(config),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
        store.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let runs_of = |job: &'static str| {
        let store = store.clone();
        async move {
            let record = store.call(move |c| jobs::get(c, job)).await.unwrap();
            record.map_or(0, |r| r.runs)
        }
    };

    let mut pond1_pending = false;
    let mut dip_began = None;
    let mut raised_at = None;
    let mut held_in_band = 0;
    let mut cleared = false;
    for cycle in 1..=30 {
        clock.step(chrono::Duration::seconds(5));
        scheduler.run_now("sample").await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs_of("sample").await < cycle {
            assert!(
                std::time::Instant::now() < deadline,
                "cycle {cycle} did not run"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rules = rules.clone();
        let (states, last) = store
            .call(move |c| {
                Ok((
                    alarm_store::load(c, &rules)?,
                    alarm_store::last_good(c, "pond2.do")?,
                ))
            })
            .await
            .unwrap();
        let (pond1, pond2) = (&states[0], &states[1]);
        let (value, ts) = last.unwrap();
        let ts = chrono::DateTime::from_timestamp_millis(ts).unwrap();
        assert!(
            !matches!(pond1.phase, Phase::Raised { .. }),
            "a 20 s dip raised pond1 at cycle {cycle}: {pond1:?}"
        );
        pond1_pending |= matches!(pond1.phase, Phase::Pending { .. });
        match (raised_at, pond2.phase) {
            (None, Phase::Pending { since }) => dip_began = Some(since),
            (None, Phase::Raised { since }) => {
                // Raised by the first reading at least 30 s after the dip began.
                let began = dip_began.expect("pending before raised");
                assert_eq!(since, ts);
                assert!(
                    ts - began >= chrono::Duration::seconds(30),
                    "{began} to {ts}"
                );
                assert!(
                    ts - began < chrono::Duration::seconds(35),
                    "{began} to {ts}"
                );
                raised_at = Some(cycle);
            }
            (Some(_), Phase::Raised { .. }) if !cleared => {
                assert!(value <= 5.8, "still raised at {value}, past clear_above");
                if value > 5.0 {
                    held_in_band += 1;
                }
            }
            (Some(_), Phase::Ok) if !cleared => {
                assert!(value > 5.8, "cleared at {value}, inside the hysteresis");
                cleared = true;
            }
            (None, _) | (Some(_), _) => {}
        }
        if cleared {
            break;
        }
    }
    assert!(
        pond1_pending,
        "pond1 never dipped: the test saw no short dip"
    );
    assert!(raised_at.is_some(), "the 40 s dip did not raise pond2");
    assert!(
        held_in_band >= 2,
        "no readings in the hysteresis band: {held_in_band}"
    );
    assert!(cleared, "pond2 never cleared");

    // The aerator ran once for the one raise, however many cycles followed it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs_of("aerator").await < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the aerator never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs_of("aerator").await, 1);
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 1);
    shutdown.cancel();
    task.await.unwrap();
}
