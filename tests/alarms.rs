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
