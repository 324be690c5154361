//! Events on `{topic_prefix}/event`: raised once where they happen, queued in the
//! database while the broker is away, and sent in the order they happened once it
//! is back.

use std::time::Duration;

use crate::support::agent::{Site, eventually};
use crate::support::broker::{Broker, Msg, Watcher, unique_prefix};

const RECONNECT: Duration = Duration::from_secs(45);

fn is_utc_millis(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[test]
fn events_raised_while_the_broker_is_down_arrive_after_it_returns_in_order() {
    let broker = Broker::start();
    let url = broker.url();
    broker.stop();
    let prefix = unique_prefix("events");
    let topic = format!("{prefix}/event");
    let rest = format!(
        "[mqtt]\nurl = \"{url}\"\ntopic_prefix = \"{prefix}\"\n\
         [jobs.sample]\nevery = \"1s\"\n\
         [jobs.broken]\nkind = \"command\"\ncommand = [\"/bin/false\"]\nevery = \"1s\"\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"pond1.do\"\nbus = \"sim\"\nunit = \"mg/L\"\nmodel = {{ base = 4.2 }}\n\
         [[alarm]]\nid = \"pond1-low-oxygen\"\nsensor = \"pond1.do\"\nbelow = 5.0\nseverity = \"critical\"\n"
    );
    let site = Site::with_id(&format!("events-{:06x}", fastrand::u32(..0xff_ffff)), &rest);
    let mut agent = site.start();
    eventually(Duration::from_secs(20), "events raised offline", || {
        let log = agent.log();
        log.contains("kind=\"alarm_raised\"") && log.matches("kind=\"job_failed\"").count() >= 3
    });
    let raised_offline = agent.log().matches("event: ").count();

    broker.restart();
    let watcher = Watcher::connect(&url, &[&topic]);
    watcher.wait_for(&topic, RECONNECT, "the queued alarm", |m| {
        m.json()["kind"] == "alarm_raised"
    });
    eventually(Duration::from_secs(10), "every offline event", || {
        watcher.on(&topic).len() >= raised_offline
    });

    let events: Vec<serde_json::Value> = watcher.on(&topic).iter().map(Msg::json).collect();
    let alarms: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "alarm_raised")
        .collect();
    assert_eq!(alarms.len(), 1, "one raise: {events:#?}");
    assert_eq!(alarms[0]["subject"], "pond1-low-oxygen");
    assert_eq!(alarms[0]["severity"], "critical");
    let failures: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "job_failed")
        .collect();
    assert!(failures.len() >= 3, "{events:#?}");
    for failure in &failures {
        assert_eq!(failure["subject"], "broken");
        assert_eq!(failure["severity"], "warning");
    }
    for e in &events {
        assert!(is_utc_millis(e["ts"].as_str().unwrap()), "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    // The ones raised during the outage came out in the order they happened.
    let times: Vec<&str> = events[..raised_offline]
        .iter()
        .map(|e| e["ts"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted);

    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Events of `kind` seen so far.
fn of_kind(watcher: &Watcher, topic: &str, kind: &str) -> Vec<serde_json::Value> {
    watcher
        .on(topic)
        .iter()
        .map(Msg::json)
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_going_away_and_back_a_job_failure_and_a_rejected_push_are_one_event_each() {
    use std::collections::HashMap;

    use crate::support::broker::any_broker;
    use crate::support::modbus::TcpDevice;

    let broker = any_broker();
    let prefix = unique_prefix("events-each");
    let topic = format!("{prefix}/event");
    let device = TcpDevice::start(HashMap::from([(1, vec![720])])).await;
    let address = device.address;
    let rest = format!(
        "[mqtt]\nurl = \"{}\"\ntopic_prefix = \"{prefix}\"\nremote_config = true\nallow_remote_commands = true\n\
         [jobs.sample]\nevery = \"1s\"\n\
         [jobs.broken]\nkind = \"command\"\ncommand = [\"/bin/false\"]\n\
         [[bus]]\nname = \"plc\"\nkind = \"modbus-tcp\"\naddress = \"{address}\"\ntimeout = \"200ms\"\nretries = 0\n\
         [[sensor]]\nid = \"pond1.do\"\nbus = \"plc\"\nslave = 1\nregister = 0\nscale = 0.01\nunit = \"mg/L\"\n",
        broker.url
    );
    let site = Site::with_id(&format!("each-{:06x}", fastrand::u32(..0xff_ffff)), &rest);
    let watcher = Watcher::connect(&broker.url, &[&topic]);
    let mut agent = site.start();
    let seen = Duration::from_secs(20);
    let cycles = |n: usize| {
        let start = agent.log().matches("sample: readings stored").count();
        eventually(seen, "more sampling cycles", || {
            agent.log().matches("sample: readings stored").count() >= start + n
        });
    };
    cycles(2);

    device.stop().await;
    watcher.wait_for(&topic, seen, "sensor_bad", |m| {
        m.json()["kind"] == "sensor_bad"
    });
    cycles(3);
    let device = TcpDevice::start_at(address, HashMap::from([(1, vec![710])])).await;
    watcher.wait_for(&topic, seen, "sensor_recovered", |m| {
        m.json()["kind"] == "sensor_recovered"
    });
    cycles(3);

    watcher.publish(
        &format!("{prefix}/cmd/request"),
        r#"{"id":"r1","cmd":"run-job","args":{"job":"broken"}}"#,
        false,
    );
    watcher.publish(
        &format!("{prefix}/config/set"),
        r#"{"version":1,"config":{"jobs":{"sample":{"every":"5 parsecs"}}}}"#,
        false,
    );
    watcher.wait_for(&topic, seen, "job_failed", |m| {
        m.json()["kind"] == "job_failed"
    });
    watcher.wait_for(&topic, seen, "config_rejected", |m| {
        m.json()["kind"] == "config_rejected"
    });
    cycles(2);

    let bad = of_kind(&watcher, &topic, "sensor_bad");
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0]["subject"], "pond1.do");
    assert_eq!(bad[0]["severity"], "warning");
    let back = of_kind(&watcher, &topic, "sensor_recovered");
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0]["message"], "reads again: 7.1");
    let down = of_kind(&watcher, &topic, "bus_down");
    assert_eq!(down.len(), 1, "{down:#?}");
    assert_eq!(down[0]["subject"], "plc");
    let up = of_kind(&watcher, &topic, "bus_up");
    assert_eq!(up.len(), 1, "{up:#?}");
    let failed = of_kind(&watcher, &topic, "job_failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["subject"], "broken");
    let rejected = of_kind(&watcher, &topic, "config_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(rejected[0]["subject"], "1");
    assert!(
        rejected[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("jobs.sample.every")),
        "{rejected:#?}"
    );

    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    device.stop().await;
}

#[test]
fn a_filling_buffer_and_a_refused_token_are_heard_about_once() {
    use chrono::TimeZone;
    use tidegate::clock::BootTime;
    use tidegate::reading::Reading;
    use tidegate::store::{self, readings};

    use crate::support::broker::any_broker;
    use crate::support::ingest::{Answer, Ingest};

    let broker = any_broker();
    let ingest = Ingest::start();
    ingest.otherwise(Answer::status(401));
    let prefix = unique_prefix("events-buffer");
    let topic = format!("{prefix}/event");
    let rest = format!(
        "[mqtt]\nurl = \"{}\"\ntopic_prefix = \"{prefix}\"\n\
         [upload]\nurl = \"{}\"\n\
         [buffer]\nmax_rows = 1000\n\
         [jobs.sample]\nevery = \"1s\"\n\
         [jobs.upload]\nevery = \"1s\"\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"pond1.do\"\nbus = \"sim\"\nmodel = {{ base = 7.5 }}\n\
         [[sensor]]\nid = \"pond1.temp\"\nbus = \"sim\"\nmodel = {{ base = 18.0 }}\n",
        broker.url,
        ingest.url()
    );
    let site = Site::with_id(&format!("fill-{:06x}", fastrand::u32(..0xff_ffff)), &rest);
    // 995 readings from an earlier outage: past 80 % at once, at the cap in 3 cycles.
    {
        let mut conn = store::open(&site.state_dir()).unwrap();
        let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
        let cycle: Vec<Reading> = (0..995)
            .map(|i| Reading::good("pond1.do", ts, f64::from(i), Some("mg/L")))
            .collect();
        let boot = BootTime {
            boot_id: "an-earlier-boot".into(),
            since_boot_ms: 1_000,
        };
        readings::insert_cycle(&mut conn, &cycle, readings::ClockQuality::Synced, &boot).unwrap();
    }
    let watcher = Watcher::connect(&broker.url, &[&topic]);
    let mut agent = site.start();
    let seen = Duration::from_secs(20);
    watcher.wait_for(&topic, seen, "buffer_high", |m| {
        m.json()["kind"] == "buffer_high"
    });
    watcher.wait_for(&topic, seen, "upload_paused", |m| {
        m.json()["kind"] == "upload_paused"
    });
    let dropped = watcher.wait_for(&topic, seen, "buffer_dropped", |m| {
        m.json()["kind"] == "buffer_dropped"
    });
    assert_eq!(dropped.json()["severity"], "critical");
    assert!(
        dropped.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("100 readings")),
        "{}",
        dropped.json()
    );
    // Several more upload runs meet the same 401, and more cycles stay above 80 %.
    eventually(seen, "more refused uploads", || {
        ingest.requests().len() >= 4
    });

    let high = of_kind(&watcher, &topic, "buffer_high");
    assert_eq!(high.len(), 1, "{high:#?}");
    assert_eq!(high[0]["severity"], "warning");
    let paused = of_kind(&watcher, &topic, "upload_paused");
    assert_eq!(paused.len(), 1, "{paused:#?}");
    assert_eq!(paused[0]["severity"], "critical");
    assert!(
        paused[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "{paused:#?}"
    );
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}
