//! Tests of the parent module.

use std::collections::HashMap;

use chrono::TimeZone;

use super::*;

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).unwrap()
}

fn now(trusted: bool) -> Now {
    Now {
        mono: Duration::from_secs(3_725),
        wall: at(1, 0, 0),
        trusted,
    }
}

fn config() -> Config {
    crate::config::parse_str(
        r#"
[agent]
id = "pond-07"
state_dir = "/var/lib/tidegate"
timezone = "UTC"

[[bus]]
name = "sim"
kind = "simulated"

[[bus]]
name = "rs485-a"
kind = "modbus-tcp"
address = "127.0.0.1:1502"

[[sensor]]
id = "pond7.do"
bus = "sim"
model = { base = 7.5, amplitude = 1.5, period = "24h", noise = 0.05 }

[[sensor]]
id = "pond7.temp"
bus = "sim"
model = { base = 18.0, amplitude = 1.0, period = "24h", noise = 0.05 }

[[sensor]]
id = "pond7.ph"
bus = "rs485-a"
slave = 3
register = 0
type = "u16"

[[sensor]]
id = "pond7.orp"
bus = "rs485-a"
slave = 3
register = 1
type = "u16"
enabled = false

[jobs.upload]
enabled = false
"#,
        "t.toml",
    )
    .unwrap()
}

fn record(name: &str) -> JobRecord {
    JobRecord {
        name: name.to_string(),
        kind: name.to_string(),
        state: Lifecycle::Active,
        running: false,
        runs: 12,
        successes: 11,
        failures: 1,
        missed: 2,
        skipped: 0,
        last_start: Some(at(0, 59, 30)),
        last_duration_ms: Some(4),
        last_outcome: Some("success".to_string()),
        last_error: None,
        next_due: Some(at(1, 0, 30)),
        last_nominal: None,
    }
}

fn sensor(id: &str, last: Option<(Quality, Option<f64>)>) -> SensorFigure {
    SensorFigure {
        id: id.to_string(),
        unit: None,
        last: last.map(|(quality, good_value)| LastRead {
            quality,
            good_value,
        }),
    }
}

/// Every figure known.
pub(crate) fn known() -> Figures {
    let config = config();
    let jobs = config
        .jobs
        .iter()
        .map(|j| {
            let mut r = record(&j.name);
            if j.name == "sample" {
                r.running = true;
            }
            if j.name == "cleanup" {
                r.state = Lifecycle::Paused;
            }
            (j.clone(), Some(r))
        })
        .collect();
    Figures {
        now: now(true),
        uptime: Duration::from_secs(3_600),
        config: ConfigStatus {
            version: 7,
            error: None,
        },
        system: SystemFigures {
            cpu_pct: Some(3.5),
            mem_used_bytes: Some(100),
            mem_total_bytes: Some(400),
            disk_free_bytes: Some(1_000),
            load1: Some(0.12),
            temp_c: Some(48.3),
        },
        store: Some(StoreFigures {
            buffer: Stats {
                pending: 40,
                uploaded: 9,
                dead_letter: 1,
                dropped_total: 3,
                oldest_pending: Some(at(0, 30, 0)),
                db_bytes: Some(4096),
                epoch: "e1".to_string(),
                upload: inspect::UploadStatus::default(),
            },
            upload: UploadStatus {
                last_ok_ms: Some(at(0, 0, 0).timestamp_millis()),
                last_error: Some("503 Service Unavailable".to_string()),
                paused: None,
                consecutive_failures: 2,
                run: None,
            },
        }),
        jobs,
        sensors: vec![
            sensor("pond7.do", Some((Quality::Good, Some(7.5)))),
            sensor("pond7.temp", Some((Quality::Good, Some(18.0)))),
            sensor("pond7.ph", Some((Quality::Bad, Some(7.1)))),
            sensor("pond7.orp", None),
        ],
        buses: vec![
            (
                "rs485-a".to_string(),
                Some(BusCounters {
                    requests: 10,
                    timeouts: 2,
                    crc_errors: 1,
                    exceptions: 0,
                    link_errors: 1,
                    last_good_read: Some(at(0, 55, 0)),
                }),
            ),
            ("sim".to_string(), Some(BusCounters::default())),
        ],
    }
}

fn check(figures: &Figures, expected: &Value) {
    let got = heartbeat_payload(figures);
    assert_eq!(
        &got,
        expected,
        "got:\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn every_figure_known() {
    let job = |state: &str| {
        json!({
            "state": state, "last_outcome": "success", "last_run": "2026-11-23T00:59:30.000Z",
            "next_run": "2026-11-23T01:00:30.000Z", "runs": 12, "failures": 1, "missed": 2,
        })
    };
    check(
        &known(),
        &json!({
            "ts": "2026-11-23T01:00:00.000Z",
            "uptime_s": 3600,
            "version": VERSION,
            "config_version": 7,
            "config_error": null,
            "clock": "trusted",
            "system": {
                "cpu_pct": 3.5, "mem_used_bytes": 100, "mem_total_bytes": 400,
                "disk_free_bytes": 1000, "load1": 0.12, "temp_c": 48.3,
            },
            "buffer": {
                "pending": 40, "oldest_pending_ts": "2026-11-23T00:30:00.000Z",
                "dropped_total": 3, "dead_letter": 1, "db_bytes": 4096, "epoch": "e1",
            },
            "upload": {
                "last_success_ts": "2026-11-23T00:00:00.000Z",
                "last_error": "503 Service Unavailable",
                "consecutive_failures": 2,
            },
            "jobs": {
                "cleanup": job("paused"),
                "heartbeat": job("active"),
                "sample": job("running"),
                "upload": job("disabled"),
            },
            "sensors": { "good": 2, "bad": ["pond7.ph"] },
            "buses": {
                "rs485-a": {
                    "requests": 10, "timeouts": 2, "crc_errors": 1, "exceptions": 0,
                    "last_good_read": "2026-11-23T00:55:00.000Z",
                },
                "sim": {
                    "requests": 0, "timeouts": 0, "crc_errors": 0, "exceptions": 0,
                    "last_good_read": null,
                },
            },
        }),
    );
}

#[test]
fn what_is_not_known_is_null_and_every_key_stays() {
    let mut f = known();
    f.now = now(false);
    f.config.error = Some("t.toml:3: agent.id: invalid".to_string());
    f.system = SystemFigures::default();
    f.store = None;
    f.buses[0].1 = None;
    for (_, record) in &mut f.jobs {
        *record = None;
    }
    for s in &mut f.sensors {
        s.last = None;
    }
    let job = json!({
        "state": null, "last_outcome": null, "last_run": null, "next_run": null,
        "runs": null, "failures": null, "missed": null,
    });
    let bus = json!({
        "requests": null, "timeouts": null, "crc_errors": null, "exceptions": null,
        "last_good_read": null,
    });
    check(
        &f,
        &json!({
            "ts": "2026-11-23T01:00:00.000Z",
            "uptime_s": 3600,
            "version": VERSION,
            "config_version": 7,
            "config_error": "t.toml:3: agent.id: invalid",
            "clock": "untrusted",
            "system": {
                "cpu_pct": null, "mem_used_bytes": null, "mem_total_bytes": null,
                "disk_free_bytes": null, "load1": null, "temp_c": null,
            },
            "buffer": {
                "pending": null, "oldest_pending_ts": null, "dropped_total": null,
                "dead_letter": null, "db_bytes": null, "epoch": null,
            },
            "upload": { "last_success_ts": null, "last_error": null, "consecutive_failures": null },
            "jobs": { "cleanup": job, "heartbeat": job, "sample": job, "upload": job },
            "sensors": { "good": 0, "bad": [] },
            "buses": {
                "rs485-a": bus,
                "sim": { "requests": 0, "timeouts": 0, "crc_errors": 0, "exceptions": 0, "last_good_read": null },
            },
        }),
    );
}

#[test]
fn a_job_the_store_has_not_seen_yet_counts_zero() {
    let mut f = known();
    f.jobs[0].1 = None;
    let got = heartbeat_payload(&f);
    assert_eq!(
        got["jobs"][&f.jobs[0].0.name],
        json!({
            "state": "active", "last_outcome": null, "last_run": null, "next_run": null,
            "runs": 0, "failures": 0, "missed": 0,
        })
    );
}

#[test]
fn sensors_are_the_enabled_ones_with_their_last_read() {
    let config = config();
    let read = |quality, good_value| LastRead {
        quality,
        good_value,
    };
    let ids = |f: &[SensorFigure]| -> Vec<String> { f.iter().map(|s| s.id.clone()).collect() };
    let none = sensor_figures(&config, HashMap::new());
    assert_eq!(
        ids(&none),
        ["pond7.do", "pond7.temp", "pond7.ph"],
        "pond7.orp is disabled"
    );
    assert!(none.iter().all(|s| s.last.is_none()), "nothing read yet");
    let last = HashMap::from([
        ("pond7.do".to_string(), read(Quality::Good, Some(7.5))),
        ("pond7.temp".to_string(), read(Quality::Bad, Some(18.0))),
        ("gone".to_string(), read(Quality::Good, Some(1.0))),
    ]);
    let figures = sensor_figures(&config, last);
    assert_eq!(ids(&figures), ["pond7.do", "pond7.temp", "pond7.ph"]);
    assert_eq!(figures[1].last, Some(read(Quality::Bad, Some(18.0))));
    assert_eq!(figures[2].last, None);
}

#[test]
fn status_says_when_the_agent_started_only_on_a_trusted_clock() {
    let start = Now {
        mono: Duration::from_secs(125),
        wall: at(0, 0, 0),
        trusted: false,
    };
    let health = Health::new(
        start,
        ConfigStatus {
            version: 0,
            error: Some("broken".to_string()),
        },
    );
    assert_eq!(
        status_online(&health, &now(false)),
        json!({
            "state": "online", "version": VERSION, "config_version": 0,
            "started_at": null, "config_error": "broken",
        })
    );
    // Trusted an hour later: the start is placed by the monotonic clock.
    assert_eq!(
        status_online(&health, &now(true))["started_at"],
        "2026-11-23T00:00:00.000Z"
    );
    assert_eq!(health.uptime(&now(true)), Duration::from_secs(3_600));
}

#[test]
fn a_config_status_change_wakes_the_watchers_once() {
    let health = Health::new(now(true), ConfigStatus::default());
    let mut watch = health.watch_config();
    health.set_config(ConfigStatus::default());
    assert!(!watch.has_changed().unwrap(), "nothing changed");
    health.set_config_error(Some("bad".to_string()));
    assert!(watch.has_changed().unwrap());
    assert_eq!(
        watch.borrow_and_update().clone(),
        ConfigStatus {
            version: 0,
            error: Some("bad".to_string())
        }
    );
    health.set_config(ConfigStatus {
        version: 3,
        error: None,
    });
    assert_eq!(health.config().version, 3);
}
