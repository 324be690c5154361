//! MQTT against a real broker (SPEC sections 5, 7 and 8): the binary's status, will,
//! clean stop and heartbeat, and the client library through broker restarts, outages
//! and packets past the limits.
//!
//! Tests that restart the broker start their own rumqttd; the others use
//! `TIDEGATE_TEST_MQTT_URL` when it is set (see `support::broker`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidegate::clock::{Clock, SystemClock};
use tidegate::config::ClockMode;
use tidegate::health::{ConfigStatus, Health};
use tidegate::mqtt::{self, Inbound, MqttHandle, PublishError};

use crate::support::agent::{Agent, Site, eventually};
use crate::support::broker::{Broker, TlsFront, Watcher, any_broker, tls_fixture, unique_prefix};

const START: Duration = Duration::from_secs(10);
const SEEN: Duration = Duration::from_secs(10);
/// After an outage the next attempt may be a full-jitter backoff away (up to 16 s
/// after five seconds of failures), plus the connect.
const RECONNECT: Duration = Duration::from_secs(45);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A site whose agent talks to `url` under `prefix`, with a unique agent id.
fn site(name: &str, url: &str, prefix: &str, rest: &str) -> Site {
    let id = format!("{name}-{:06x}", fastrand::u32(..0xff_ffff));
    Site::with_id(&id, &with_mqtt(url, prefix, rest))
}

fn with_mqtt(url: &str, prefix: &str, rest: &str) -> String {
    format!("[mqtt]\nurl = \"{url}\"\ntopic_prefix = \"{prefix}\"\n{rest}")
}

fn online(m: &crate::support::broker::Msg) -> bool {
    m.json()["state"] == "online"
}

fn offline(m: &crate::support::broker::Msg) -> bool {
    m.json() == json!({"state": "offline"})
}

/// `2026-11-23T01:00:00.000Z`: RFC 3339, UTC, milliseconds.
fn is_utc_millis(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn stop(mut agent: Agent) {
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0), "{}", agent.log());
}

#[test]
fn online_status_is_retained_on_connect_with_the_spec_fields() {
    let broker = any_broker();
    let prefix = unique_prefix("online");
    let status = format!("{prefix}/status");
    let watcher = Watcher::connect(&broker.url, &[&status]);
    let site = site("online", &broker.url, &prefix, "");
    let agent = site.start();

    let msg = watcher.wait_for(&status, SEEN, "online status", online);
    let v = msg.json();
    assert_eq!(
        keys(&v),
        [
            "config_error",
            "config_version",
            "started_at",
            "state",
            "version"
        ]
    );
    assert_eq!(v["version"], VERSION);
    assert_eq!(v["config_version"], 0);
    assert_eq!(v["config_error"], Value::Null);
    assert!(is_utc_millis(&v["started_at"]), "{v}");

    // Retained: a subscriber that comes later is told at once.
    let late = Watcher::connect(&broker.url, &[&status]);
    let kept = late.wait_for(&status, SEEN, "retained status", online);
    assert!(kept.retain, "status must be retained");
    assert_eq!(kept.json(), v);
    stop(agent);
}

#[test]
fn a_refused_reload_sets_config_error_in_status_and_a_good_one_clears_it() {
    let broker = any_broker();
    let prefix = unique_prefix("reload");
    let status = format!("{prefix}/status");
    let watcher = Watcher::connect(&broker.url, &[&status]);
    let site = site("reload", &broker.url, &prefix, "");
    let agent = site.start();
    watcher.wait_for(&status, SEEN, "online", online);

    site.write_raw(&format!(
        "[agent]\nid = \"{}\"\nbogus = 1\n{}",
        site.id,
        with_mqtt(&broker.url, &prefix, "")
    ));
    agent.signal(libc::SIGHUP);
    let refused = watcher.wait_for(&status, SEEN, "status with the error", |m| {
        m.json()["config_error"].is_string()
    });
    let error = refused.json()["config_error"].as_str().unwrap().to_string();
    assert!(error.contains("agent.bogus: unknown key"), "{error}");
    assert_eq!(refused.json()["state"], "online");

    site.write_config(&with_mqtt(&broker.url, &prefix, ""));
    agent.signal(libc::SIGHUP);
    let fixed = watcher.wait_for(&status, SEEN, "status cleared", |m| {
        m.at > refused.at && m.json()["config_error"].is_null()
    });
    assert_eq!(fixed.json()["config_version"], 0);
    stop(agent);
}

#[test]
fn kill_9_leaves_the_last_will_offline_retained() {
    let broker = any_broker();
    let prefix = unique_prefix("will");
    let status = format!("{prefix}/status");
    let watcher = Watcher::connect(&broker.url, &[&status]);
    let site = site("will", &broker.url, &prefix, "");
    let mut agent = site.start();
    watcher.wait_for(&status, SEEN, "online status", online);

    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    watcher.wait_for(&status, SEEN, "the will", offline);
    let late = Watcher::connect(&broker.url, &[&status]);
    let kept = late.wait_for(&status, SEEN, "retained will", |_| true);
    assert!(kept.retain);
    assert_eq!(kept.json(), json!({"state": "offline"}));
}

#[test]
fn sigterm_publishes_retained_offline_then_disconnects_cleanly() {
    let broker = any_broker();
    let prefix = unique_prefix("sigterm");
    let status = format!("{prefix}/status");
    let watcher = Watcher::connect(&broker.url, &[&status]);
    let site = site(
        "sigterm",
        &broker.url,
        &prefix,
        "[jobs.heartbeat]\nevery = \"1s\"\n",
    );
    let mut agent = site.start();
    watcher.wait_for(&status, SEEN, "online status", online);

    let asked = Instant::now();
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(START), Some(0), "{}", agent.log());
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert!(
        agent
            .log()
            .contains("offline status published; disconnected from the broker"),
        "{}",
        agent.log()
    );
    watcher.wait_for(&status, SEEN, "offline status", offline);
    let late = Watcher::connect(&broker.url, &[&status]);
    let kept = late.wait_for(&status, SEEN, "retained offline", |_| true);
    assert!(kept.retain);
    assert_eq!(kept.json(), json!({"state": "offline"}));
    // With DISCONNECT last the broker discards the will: the retained offline is the
    // agent's own publish. (Only our own broker shows what the agent sent.)
    if let Some(own) = &broker.own {
        let traffic = own.traffic_of(&site.id);
        let last = traffic.last().expect("the agent connected");
        assert!(
            last.ended_with_disconnect(),
            "the agent's last packet was not DISCONNECT: {:02x?}",
            last.tail
        );
    }
}

#[test]
fn a_broker_restart_without_persistence_brings_back_subscriptions_and_online() {
    let broker = Broker::start();
    let url = broker.url();
    let prefix = unique_prefix("restart");
    let (status, request, response, set, state) = (
        format!("{prefix}/status"),
        format!("{prefix}/cmd/request"),
        format!("{prefix}/cmd/response"),
        format!("{prefix}/config/set"),
        format!("{prefix}/config/state"),
    );
    let watcher = Watcher::connect(&url, &[&status, &response, &state]);
    let site = site("restart", &url, &prefix, "");
    let agent = site.start();
    watcher.wait_for(&status, SEEN, "online status", online);
    watcher.publish(
        &request,
        r#"{"id":"a","cmd":"get-config","args":{}}"#,
        false,
    );
    watcher.wait_for(&response, SEEN, "the first command answered", |m| {
        m.json()["id"] == "a" && m.json()["ok"] == true
    });

    watcher.clear();
    broker.restart();
    // The farm's server pushes its configuration while the agent is away, retained.
    let push = r#"{"version":1,"config":{"jobs":{"heartbeat":{"every":"7s"}}}}"#;
    watcher.publish(&set, push, true);
    watcher.wait_for(&status, RECONNECT, "online again after the restart", online);
    // The new broker knows nothing but what the agent told it since.
    let late = Watcher::connect(&url, &[&status]);
    assert!(late.wait_for(&status, SEEN, "retained", online).retain);
    watcher.wait_for(&state, SEEN, "the retained push applied", |m| {
        m.json()["version"] == 1 && m.json()["status"] == "applied"
    });
    watcher.publish(
        &request,
        r#"{"id":"b","cmd":"get-config","args":{}}"#,
        false,
    );
    let answer = watcher.wait_for(&response, SEEN, "a command after the restart", |m| {
        m.json()["id"] == "b"
    });
    let config = answer.json()["result"].as_str().unwrap().to_owned();
    assert!(
        config.contains("every = \"7s\""),
        "the overlay runs: {config}"
    );
    // Applied once: the retained push seen again (a resubscription) is not re-applied.
    std::thread::sleep(Duration::from_millis(500));
    let applied = watcher
        .on(&state)
        .iter()
        .filter(|m| m.json()["status"] == "applied")
        .count();
    assert_eq!(applied, 1);
    assert!(agent.log().contains("connection to the broker lost"));
    stop(agent);
}

/// Every key of SPEC section 5, and its type: from simulated sensors, a PLC that
/// never answers, the four built-in jobs.
#[test]
fn heartbeat_carries_every_spec_field_with_nulls_where_unknown() {
    let broker = any_broker();
    let prefix = unique_prefix("heartbeat");
    let topic = format!("{prefix}/heartbeat");
    let watcher = Watcher::connect(&broker.url, &[&topic]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let site = site(
        "heartbeat",
        &broker.url,
        &prefix,
        &format!(
            r#"
[jobs.heartbeat]
every = "1s"
[jobs.sample]
every = "1s"

[[bus]]
name = "sim"
kind = "simulated"
[[bus]]
name = "plc"
kind = "modbus-tcp"
address = "{closed}"
timeout = "200ms"
retries = 0

[[sensor]]
id = "pond1.do"
bus = "sim"
unit = "mg/L"
model = {{ base = 7.5, amplitude = 1.5, period = "24h", noise = 0.05 }}
[[sensor]]
id = "pond1.temp"
bus = "sim"
model = {{ base = 18.0, amplitude = 1.0, period = "24h", noise = 0.05 }}
[[sensor]]
id = "plc.level"
bus = "plc"
slave = 1
register = 0
type = "u16"
"#
        ),
    );
    let agent = site.start();
    let msg = watcher.wait_for(&topic, SEEN, "a heartbeat after a sample", |m| {
        let v = m.json();
        v["sensors"]["good"] == 2 && v["buffer"]["pending"].as_u64() > Some(0)
    });
    assert!(!msg.retain, "heartbeats are not retained");
    let v = msg.json();
    assert_eq!(
        keys(&v),
        [
            "buffer",
            "buses",
            "clock",
            "config_error",
            "config_version",
            "jobs",
            "sensors",
            "system",
            "ts",
            "upload",
            "uptime_s",
            "version"
        ]
    );
    assert!(is_utc_millis(&v["ts"]), "{v}");
    assert!(v["uptime_s"].is_u64());
    assert_eq!(v["version"], VERSION);
    assert_eq!(v["config_version"], 0);
    assert_eq!(v["config_error"], Value::Null);
    assert_eq!(v["clock"], "trusted");

    let system = &v["system"];
    assert_eq!(
        keys(system),
        [
            "cpu_pct",
            "disk_free_bytes",
            "load1",
            "mem_total_bytes",
            "mem_used_bytes",
            "temp_c"
        ]
    );
    assert!(system["cpu_pct"].is_null() || system["cpu_pct"].is_f64());
    assert!(system["mem_total_bytes"].as_u64() > Some(0));
    assert!(system["mem_used_bytes"].as_u64() <= system["mem_total_bytes"].as_u64());
    assert!(system["disk_free_bytes"].is_u64());
    assert!(system["load1"].is_number());
    let has_thermal = std::fs::read_dir("/sys/class/thermal").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
    });
    if has_thermal {
        assert!(system["temp_c"].is_number(), "{system}");
    } else {
        assert_eq!(system["temp_c"], Value::Null, "no sensor: not invented");
    }

    let buffer = &v["buffer"];
    assert_eq!(
        keys(buffer),
        [
            "db_bytes",
            "dead_letter",
            "dropped_total",
            "epoch",
            "oldest_pending_ts",
            "pending"
        ]
    );
    assert!(buffer["pending"].as_u64() >= Some(3), "{buffer}");
    assert!(is_utc_millis(&buffer["oldest_pending_ts"]));
    assert_eq!(
        (&buffer["dropped_total"], &buffer["dead_letter"]),
        (&json!(0), &json!(0))
    );
    assert!(buffer["db_bytes"].as_u64() > Some(0));
    assert!(buffer["epoch"].as_str().is_some_and(|e| !e.is_empty()));

    // No [upload]: nothing has happened, nothing is invented.
    assert_eq!(
        v["upload"],
        json!({"last_success_ts": null, "last_error": null, "consecutive_failures": 0})
    );

    let jobs = &v["jobs"];
    assert_eq!(keys(jobs), ["cleanup", "heartbeat", "sample", "upload"]);
    for (name, job) in jobs.as_object().unwrap() {
        assert_eq!(
            keys(job),
            [
                "failures",
                "last_outcome",
                "last_run",
                "missed",
                "next_run",
                "runs",
                "state"
            ],
            "{name}"
        );
        assert!(job["state"].is_string() && job["runs"].is_u64() && job["failures"].is_u64());
        assert!(job["missed"].is_u64());
        assert!(
            job["next_run"].is_null() || is_utc_millis(&job["next_run"]),
            "{name}: {job}"
        );
    }
    let sample = &jobs["sample"];
    assert!(sample["runs"].as_u64() >= Some(1));
    assert_eq!(sample["last_outcome"], "success");
    assert!(is_utc_millis(&sample["last_run"]) && is_utc_millis(&sample["next_run"]));
    assert_eq!(jobs["heartbeat"]["state"], "active");

    assert_eq!(v["sensors"], json!({"good": 2, "bad": ["plc.level"]}));

    let buses = &v["buses"];
    assert_eq!(keys(buses), ["plc", "sim"]);
    for bus in ["plc", "sim"] {
        assert_eq!(
            keys(&buses[bus]),
            [
                "crc_errors",
                "exceptions",
                "last_good_read",
                "requests",
                "timeouts"
            ]
        );
    }
    assert!(buses["sim"]["requests"].as_u64() >= Some(1));
    assert!(is_utc_millis(&buses["sim"]["last_good_read"]));
    assert_eq!(
        buses["plc"]["last_good_read"],
        Value::Null,
        "never answered"
    );
    assert!(buses["plc"]["requests"].is_u64() && buses["plc"]["timeouts"].is_u64());

    // CPU is measured between two heartbeats: a later one has it.
    let later = watcher.wait_for(&topic, SEEN, "a later heartbeat", |m| {
        m.json()["system"]["cpu_pct"].is_number()
    });
    let cpu = later.json()["system"]["cpu_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{cpu}");
    stop(agent);
}

/// While the broker is away the heartbeat job goes on and its heartbeats are dropped
/// and counted; when it is back, heartbeats are current, not a burst of old ones.
#[test]
fn heartbeats_while_the_broker_is_down_are_dropped_not_queued() {
    let broker = Broker::start();
    let url = broker.url();
    let prefix = unique_prefix("outage");
    let (status, topic) = (format!("{prefix}/status"), format!("{prefix}/heartbeat"));
    let watcher = Watcher::connect(&url, &[&status, &topic]);
    let site = site(
        "outage",
        &url,
        &prefix,
        "[jobs.heartbeat]\nevery = \"1s\"\n",
    );
    let agent = site.start_logging("info,tidegate::job=debug");
    watcher.wait_for(&topic, SEEN, "a heartbeat", |_| true);

    broker.stop();
    let runs_before = site.job("heartbeat")["runs"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let heartbeat = site.job("heartbeat");
    assert!(
        heartbeat["runs"].as_u64().unwrap() >= runs_before + 3,
        "the job keeps running: {heartbeat}"
    );
    assert_eq!(heartbeat["last_outcome"], "success", "offline is normal");
    let log = agent.log();
    let counted = log
        .lines()
        .filter(|l| l.contains("heartbeat dropped"))
        .filter_map(|l| {
            l.split("dropped=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(counted >= Some(3), "dropped and counted:\n{log}");

    let back = tidegate::clock::wall_now();
    watcher.clear();
    broker.restart();
    watcher.wait_for(&status, RECONNECT, "online again", online);
    let online_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let beats: Vec<Value> = watcher
        .on(&topic)
        .into_iter()
        .filter(|m| m.at >= online_at)
        .map(|m| m.json())
        .collect();
    assert!(!beats.is_empty(), "heartbeats resume");
    assert!(
        beats.len() <= 5,
        "no burst: {} heartbeats in 3 s",
        beats.len()
    );
    for beat in &beats {
        let ts = chrono::DateTime::parse_from_rfc3339(beat["ts"].as_str().unwrap()).unwrap();
        assert!(
            ts >= back - chrono::Duration::milliseconds(1500),
            "a heartbeat from the outage was sent late: {ts} (broker back at {back})"
        );
    }
    stop(agent);
}

#[test]
fn a_packet_over_the_limit_does_not_stop_the_heartbeat() {
    let broker = any_broker();
    let prefix = unique_prefix("oversize");
    let (status, topic) = (format!("{prefix}/status"), format!("{prefix}/heartbeat"));
    let watcher = Watcher::connect(&broker.url, &[&status, &topic]);
    let site = site(
        "oversize",
        &broker.url,
        &prefix,
        "[jobs.heartbeat]\nevery = \"1s\"\n",
    );
    let agent = site.start();
    watcher.wait_for(&topic, SEEN, "a heartbeat", |_| true);

    let huge = vec![b'x'; 1024 * 1024 + 1];
    watcher.publish(&format!("{prefix}/cmd/request"), huge, false);
    eventually(SEEN, "the client notices the packet", || {
        agent
            .log()
            .contains("a packet over the incoming limit arrived")
    });
    let after = Instant::now();
    eventually(SEEN, "heartbeats go on", || {
        watcher.on(&topic).iter().filter(|m| m.at > after).count() >= 3
    });
    let last_status = watcher.on(&status).pop().unwrap();
    assert!(online(&last_status), "{:?}", last_status.json());
    stop(agent);
}

#[test]
fn mqtts_with_the_farm_ca_and_a_client_certificate_brings_the_agent_online() {
    let broker = Broker::start();
    let front = TlsFront::start(&broker.url(), true);
    let prefix = unique_prefix("tls");
    let status = format!("{prefix}/status");
    let watcher = Watcher::connect(&broker.url(), &[&status]);
    let file = |name: &str| tls_fixture(name).display().to_string();
    let site = site(
        "tls",
        &front.url(),
        &prefix,
        &format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            file("ca.pem"),
            file("client.pem"),
            file("client.key")
        ),
    );
    let agent = site.start();
    watcher.wait_for(&status, SEEN, "online over TLS", online);
    stop(agent);
    watcher.wait_for(&status, SEEN, "offline over TLS", offline);
}

#[test]
fn mqtts_to_a_server_the_agent_cannot_trust_is_retried_quietly_and_said_once() {
    let broker = Broker::start();
    let front = TlsFront::start(&broker.url(), false);
    let prefix = unique_prefix("untrusted");
    let status = format!("{prefix}/status");
    let watcher = Watcher::connect(&broker.url(), &[&status]);
    // No ca_file: the system's roots, which do not know the test CA.
    let site = site(
        "untrusted",
        &front.url(),
        &prefix,
        "[jobs.heartbeat]\nevery = \"1s\"\n",
    );
    let agent = site.start();
    eventually(SEEN, "the reason is logged", || {
        agent.log().contains("cannot connect to the broker")
            || agent.log().contains("cannot set up the broker connection")
    });
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log();
    let said = log
        .lines()
        .filter(|l| l.contains("cannot connect to the broker") || l.contains("cannot set up"))
        .collect::<Vec<_>>();
    assert_eq!(said.len(), 1, "once, not once per attempt:\n{log}");
    assert!(
        said[0].contains("invalid peer certificate") || said[0].contains("no CA certificates"),
        "{}",
        said[0]
    );
    assert!(watcher.on(&status).is_empty(), "never online");
    assert!(
        site.job("heartbeat")["runs"].as_u64() >= Some(3),
        "jobs go on"
    );
    stop(agent);
}

// The client library in this process: what the agent reads and the counters.

struct Client {
    rt: tokio::runtime::Runtime,
    handle: MqttHandle,
    inbound: tokio::sync::mpsc::Receiver<Inbound>,
}

impl Client {
    fn start(url: &str, prefix: &str, extra: &str) -> Client {
        let text = format!(
            "[agent]\nid = \"lib-{:06x}\"\nstate_dir = \"/nonexistent\"\n[mqtt]\nurl = \"{url}\"\ntopic_prefix = \"{prefix}\"\n{extra}",
            fastrand::u32(..0xff_ffff)
        );
        let config = tidegate::config::parse_str(&text, "t.toml").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(ClockMode::Trusted));
        let health = Arc::new(Health::new(clock.now(), ConfigStatus::default()));
        let (handle, inbound) = rt.block_on(async {
            mqtt::spawn(
                config.mqtt.as_ref().unwrap(),
                &config.agent.id,
                health,
                clock,
            )
        });
        Client {
            rt,
            handle,
            inbound,
        }
    }

    fn wait_connects(&self, n: u64) {
        eventually(SEEN, &format!("{n} connections"), || {
            self.handle.connected() && self.handle.stats().connects >= n
        });
    }

    fn next(&mut self) -> Option<Inbound> {
        let rx = &mut self.inbound;
        self.rt
            .block_on(async { tokio::time::timeout(SEEN, rx.recv()).await.ok().flatten() })
    }

    fn nothing_within(&mut self, d: Duration) -> bool {
        let rx = &mut self.inbound;
        self.rt
            .block_on(async { tokio::time::timeout(d, rx.recv()).await.is_err() })
    }

    fn stop(&self) {
        self.rt.block_on(self.handle.stop(Duration::from_secs(1)));
    }
}

fn command(payload: &str) -> Inbound {
    Inbound::Command {
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
    }
}

#[test]
fn inbound_messages_reach_the_agent_before_and_after_a_broker_restart() {
    let broker = Broker::start();
    let url = broker.url();
    let prefix = unique_prefix("inbound");
    let (request, set) = (
        format!("{prefix}/cmd/request"),
        format!("{prefix}/config/set"),
    );
    let watcher = Watcher::connect(&url, &[&format!("{prefix}/status")]);
    // A desired configuration is waiting, retained, before the agent connects.
    watcher.publish(&set, r#"{"version":3}"#, true);
    let mut client = Client::start(&url, &prefix, "");
    assert_eq!(
        client.next(),
        Some(Inbound::ConfigSet {
            payload: bytes::Bytes::from_static(br#"{"version":3}"#),
            retained: true
        })
    );
    watcher.wait_for(&format!("{prefix}/status"), SEEN, "online", online);
    watcher.publish(&request, "before", false);
    assert_eq!(client.next(), Some(command("before")));

    watcher.clear();
    broker.restart();
    client.wait_connects(2);
    watcher.wait_for(
        &format!("{prefix}/status"),
        RECONNECT,
        "online again",
        online,
    );
    watcher.publish(&request, "after", false);
    assert_eq!(client.next(), Some(command("after")));
    watcher.publish(&set, r#"{"version":4}"#, false);
    assert_eq!(
        client.next(),
        Some(Inbound::ConfigSet {
            payload: bytes::Bytes::from_static(br#"{"version":4}"#),
            retained: false
        })
    );
    let stats = client.handle.stats();
    assert_eq!(
        (
            stats.connects,
            stats.inbound_received,
            stats.inbound_dropped
        ),
        (2, 4, 0)
    );
    client.stop();
}

#[test]
fn without_remote_config_config_set_is_not_subscribed() {
    let broker = any_broker();
    let prefix = unique_prefix("noremote");
    let watcher = Watcher::connect(&broker.url, &[&format!("{prefix}/status")]);
    let mut client = Client::start(&broker.url, &prefix, "remote_config = false\n");
    watcher.wait_for(&format!("{prefix}/status"), SEEN, "online", online);
    watcher.publish(&format!("{prefix}/config/set"), r#"{"version":1}"#, false);
    watcher.publish(&format!("{prefix}/cmd/request"), "x", false);
    assert_eq!(
        client.next(),
        Some(command("x")),
        "only the command arrives"
    );
    assert!(client.nothing_within(Duration::from_millis(300)));
    client.stop();
}

#[test]
fn heartbeats_are_counted_when_dropped_and_never_sent_late() {
    let broker = Broker::start();
    let url = broker.url();
    let prefix = unique_prefix("counted");
    let topic = format!("{prefix}/heartbeat");
    let watcher = Watcher::connect(&url, &[&topic]);
    let client = Client::start(&url, &prefix, "");
    client.wait_connects(1);
    assert_eq!(client.handle.publish_heartbeat(&json!({"n": 0})), Ok(()));
    watcher.wait_for(&topic, SEEN, "heartbeat 0", |m| m.json()["n"] == 0);

    broker.stop();
    eventually(SEEN, "the client notices", || !client.handle.connected());
    for n in 1..=50 {
        assert_eq!(
            client.handle.publish_heartbeat(&json!({"n": n})),
            Err(PublishError::Offline)
        );
    }
    let stats = client.handle.stats();
    assert_eq!((stats.heartbeats_sent, stats.heartbeats_dropped), (1, 50));

    let subscribed = watcher.subscriptions();
    broker.restart();
    client.wait_connects(2);
    watcher.wait_subscribed(subscribed + 1);
    watcher.clear();
    assert_eq!(client.handle.publish_heartbeat(&json!({"n": 51})), Ok(()));
    watcher.wait_for(&topic, SEEN, "heartbeat 51", |m| m.json()["n"] == 51);
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<Value> = watcher
        .on(&topic)
        .iter()
        .map(|m| m.json()["n"].clone())
        .collect();
    assert_eq!(seen, [json!(51)], "nothing from the outage");
    client.stop();
}

#[test]
fn packets_up_to_the_limit_are_read_and_one_past_it_costs_only_a_reconnect() {
    let broker = any_broker();
    let prefix = unique_prefix("limit");
    let request = format!("{prefix}/cmd/request");
    let watcher = Watcher::connect(&broker.url, &[&format!("{prefix}/heartbeat")]);
    let mut client = Client::start(&broker.url, &prefix, "");
    client.wait_connects(1);

    // The whole packet (fixed header, topic, packet id, payload) fits in 1 MiB.
    let fits = 1024 * 1024 - 2 - request.len() - 2;
    watcher.publish(&request, vec![b'a'; fits], false);
    match client.next() {
        Some(Inbound::Command { payload }) => assert_eq!(payload.len(), fits),
        other => panic!("{other:?}"),
    }
    watcher.publish(&request, vec![b'b'; fits + 1], false);
    eventually(SEEN, "oversize counted", || {
        client.handle.stats().oversize == 1
    });
    client.wait_connects(2);
    watcher.publish(&request, "small", false);
    assert_eq!(client.next(), Some(command("small")));
    assert_eq!(
        client.handle.publish_heartbeat(&json!({"alive": true})),
        Ok(())
    );
    watcher.wait_for(
        &format!("{prefix}/heartbeat"),
        SEEN,
        "health goes on",
        |_| true,
    );
    client.stop();
}

#[test]
fn a_retained_oversized_config_push_holds_the_subscriptions_not_the_health() {
    let broker = any_broker();
    let prefix = unique_prefix("retained-huge");
    let (status, topic, set) = (
        format!("{prefix}/status"),
        format!("{prefix}/heartbeat"),
        format!("{prefix}/config/set"),
    );
    let watcher = Watcher::connect(&broker.url, &[&status, &topic]);
    watcher.publish(&set, vec![b'x'; 2 * 1024 * 1024], true);
    let mut client = Client::start(&broker.url, &prefix, "");
    // Twice right after subscribing, then the subscriptions wait and health goes on.
    eventually(Duration::from_secs(20), "two oversized packets", || {
        client.handle.stats().oversize >= 2
    });
    client.wait_connects(3);
    std::thread::sleep(Duration::from_secs(2));
    assert!(client.handle.connected());
    assert_eq!(client.handle.stats().oversize, 2, "no loop");
    assert_eq!(
        client.handle.publish_heartbeat(&json!({"alive": true})),
        Ok(())
    );
    watcher.wait_for(&topic, SEEN, "heartbeat during the hold", |_| true);
    let last = watcher.on(&status).pop().unwrap();
    assert!(online(&last), "{:?}", last.json());
    // Held: commands do not arrive either until the hold ends.
    watcher.publish(&format!("{prefix}/cmd/request"), "held", false);
    assert!(client.nothing_within(Duration::from_millis(500)));
    client.stop();
    // Leave a shared broker clean.
    watcher.publish(&set, Vec::new(), true);
}

#[test]
fn a_message_over_the_outgoing_limit_is_refused_and_the_connection_stays() {
    let broker = any_broker();
    let prefix = unique_prefix("outgoing");
    let response = format!("{prefix}/cmd/response");
    let watcher = Watcher::connect(&broker.url, &[&response]);
    let client = Client::start(&broker.url, &prefix, "");
    client.wait_connects(1);
    let big = json!({"id": "1", "ok": true, "result": "x".repeat(300 * 1024)});
    assert!(matches!(
        client.handle.publish_cmd_response(&big),
        Err(PublishError::TooLarge { .. })
    ));
    assert_eq!(client.handle.stats().messages_dropped, 1);
    let small = json!({"id": "2", "ok": true, "result": {}});
    assert_eq!(client.handle.publish_cmd_response(&small), Ok(()));
    let got = watcher.wait_for(&response, SEEN, "the small response", |_| true);
    assert_eq!(got.json(), small);
    assert!(!got.retain);
    assert_eq!(client.handle.stats().connects, 1, "never reconnected");
    client.stop();
}

/// A push over the broker, signed with `key` when given (`Some(b"")` signs with a
/// wrong key).
fn push_text(version: u64, config: &str, key: Option<&[u8]>) -> String {
    match key {
        Some(key) => format!(
            r#"{{"version":{version},"config":{config},"hmac":"{}"}}"#,
            tidegate::remote::sign(
                if key.is_empty() { b"wrong" } else { key },
                config.as_bytes()
            )
        ),
        None => format!(r#"{{"version":{version},"config":{config}}}"#),
    }
}

/// Every remote-config outcome through the real agent and broker, signed pushes.
#[test]
fn remote_config_outcomes_over_the_broker_with_signed_pushes() {
    let broker = any_broker();
    let prefix = unique_prefix("remote");
    let (status, set, state) = (
        format!("{prefix}/status"),
        format!("{prefix}/config/set"),
        format!("{prefix}/config/state"),
    );
    let watcher = Watcher::connect(&broker.url, &[&status, &state]);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("config.key");
    std::fs::write(&key_file, "farm-key\n").unwrap();
    let key: &[u8] = b"farm-key";
    let site = site(
        "remote",
        &broker.url,
        &prefix,
        &format!("config_hmac_key_file = \"{}\"\n", key_file.display()),
    );
    let agent = site.start();
    watcher.wait_for(&status, SEEN, "online", online);
    let answer = |version: u64, what: &str| {
        let msg = watcher.wait_for(&state, SEEN, what, |m| m.json()["version"] == version);
        watcher.clear();
        msg.json()
    };

    let v1 = r#"{"jobs":{"heartbeat":{"every":"7s"}}}"#;
    watcher.publish(&set, push_text(1, v1, Some(key)), false);
    watcher.wait_for(&status, SEEN, "status says v1", |m| {
        m.json()["config_version"] == 1
    });
    let a = answer(1, "v1 applied");
    assert_eq!(a["status"], "applied", "{a}");
    assert!(
        a["error"].is_null() && is_utc_millis(&a["applied_at"]),
        "{a}"
    );
    let late = Watcher::connect(&broker.url, &[&state]);
    let kept = late.wait_for(&state, SEEN, "the answer is retained", |m| {
        m.json()["version"] == 1
    });
    assert!(kept.retain);

    watcher.publish(&set, push_text(2, v1, Some(b"")), false);
    let a = answer(2, "a wrong signature");
    assert_eq!(a["status"], "rejected");
    assert!(a["error"].as_str().unwrap().contains("hmac"), "{a}");

    watcher.publish(&set, push_text(2, v1, None), false);
    let a = answer(2, "no signature");
    assert!(
        a["error"].as_str().unwrap().contains("hmac: missing"),
        "{a}"
    );

    let bad = r#"{"jobs":{"heartbeat":{"every":"5 parsecs"}}}"#;
    watcher.publish(&set, push_text(2, bad, Some(key)), false);
    let a = answer(2, "a bad value");
    assert_eq!(a["status"], "rejected");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with("config/set v2: jobs.heartbeat.every"),
        "{a}"
    );

    let pump = r#"{"jobs":{"pump":{"kind":"command","command":["/bin/true"],"every":"1h"}}}"#;
    watcher.publish(&set, push_text(3, pump, Some(key)), false);
    let a = answer(3, "a command job");
    assert_eq!(a["status"], "rejected");
    assert!(a["error"].as_str().unwrap().contains("command job"), "{a}");

    // v1 again, validly signed: a replay of an older document.
    watcher.publish(&set, push_text(1, v1, Some(key)), false);
    let a = answer(1, "a replay");
    assert_eq!(a["status"], "rejected");
    assert!(a["error"].as_str().unwrap().contains("stale"), "{a}");

    let v5 = r#"{"jobs":{"heartbeat":{"every":"9s"}}}"#;
    watcher.publish(&set, push_text(5, v5, Some(key)), false);
    assert_eq!(answer(5, "v5 applied")["status"], "applied");
    stop(agent);

    // Persisted: after a restart the overlay runs and status says so.
    let agent = site.start();
    let online_again = watcher.wait_for(&status, SEEN, "online after restart", |m| {
        online(m) && m.json()["config_version"] == 5
    });
    assert!(online_again.json()["config_error"].is_null());
    let (code, out, _) = site.cli(&["jobs", "--json"]);
    assert_eq!(code, 0);
    assert!(!out.is_empty());
    // The restarted agent runs the overlay: get-config shows it.
    let request = format!("{prefix}/cmd/request");
    let response = format!("{prefix}/cmd/response");
    let asker = Watcher::connect(&broker.url, &[&response]);
    asker.publish(
        &request,
        r#"{"id":"cfg","cmd":"get-config","args":{}}"#,
        false,
    );
    let got = asker.wait_for(&response, SEEN, "get-config", |m| m.json()["id"] == "cfg");
    assert!(
        got.json()["result"]
            .as_str()
            .unwrap()
            .contains("every = \"9s\""),
        "{:?}",
        got.json()
    );
    stop(agent);
}

/// A sample interval changed by a push takes effect at once, and no reading is lost
/// or numbered twice across the change.
#[test]
fn a_pushed_sample_interval_applies_live_without_losing_a_reading() {
    let broker = any_broker();
    let prefix = unique_prefix("live");
    let (set, state) = (
        format!("{prefix}/config/set"),
        format!("{prefix}/config/state"),
    );
    let watcher = Watcher::connect(&broker.url, &[&state]);
    let site = site(
        "live",
        &broker.url,
        &prefix,
        "[jobs.sample]\nevery = \"1s\"\n[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"p.do\"\nbus = \"sim\"\nmodel = { base = 7.5 }\n",
    );
    let agent = site.start();
    let count = || -> i64 {
        let conn = tidegate::store::open(&site.state_dir()).unwrap();
        conn.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap()
    };
    eventually(SEEN, "a few readings at 1 s", || count() >= 3);
    watcher.publish(
        &set,
        r#"{"version":1,"config":{"jobs":{"sample":{"every":"3s"}}}}"#,
        false,
    );
    let a = watcher.wait_for(&state, SEEN, "applied", |m| m.json()["version"] == 1);
    assert_eq!(a.json()["status"], "applied");
    let applied = tidegate::clock::wall_now().timestamp_millis();
    std::thread::sleep(Duration::from_millis(7500));
    stop(agent);
    let conn = tidegate::store::open(&site.state_dir()).unwrap();
    let rows: Vec<(i64, i64)> = conn
        .prepare("SELECT seq, ts FROM readings ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (i, (seq, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1, "dense seqs: nothing lost");
    }
    let before: Vec<i64> = rows
        .iter()
        .map(|r| r.1)
        .filter(|ts| *ts < applied)
        .collect();
    let after: Vec<i64> = rows
        .iter()
        .map(|r| r.1)
        .filter(|ts| *ts > applied + 500)
        .collect();
    assert!(
        before.windows(2).all(|w| (w[1] - w[0]) < 1600),
        "{before:?}"
    );
    assert!(
        (2..=3).contains(&after.len()),
        "every 3 s after the push: {after:?}"
    );
    assert!(after.windows(2).all(|w| (w[1] - w[0]) >= 2500), "{after:?}");
}

/// Each remote command through the real agent and broker.
#[test]
fn remote_commands_are_answered_over_the_broker() {
    let broker = any_broker();
    let prefix = unique_prefix("cmds");
    let (request, response) = (
        format!("{prefix}/cmd/request"),
        format!("{prefix}/cmd/response"),
    );
    let watcher = Watcher::connect(&broker.url, &[&response, &format!("{prefix}/status")]);
    let site = site(
        "cmds",
        &broker.url,
        &prefix,
        "[jobs.probe]\nkind = \"command\"\ncommand = [\"/bin/true\"]\nevery = \"1h\"\n",
    );
    let agent = site.start();
    watcher.wait_for(&format!("{prefix}/status"), SEEN, "online", online);
    let ask = |id: &str, body: &str| -> Value {
        watcher.publish(&request, body, false);
        watcher
            .wait_for(&response, SEEN, id, |m| m.json()["id"] == id)
            .json()
    };
    let r = ask(
        "p",
        r#"{"id":"p","cmd":"pause-job","args":{"job":"sample"}}"#,
    );
    assert_eq!(r["ok"], true, "{r}");
    eventually(SEEN, "sample paused", || {
        site.job("sample")["state"] == "paused"
    });
    let r = ask(
        "r",
        r#"{"id":"r","cmd":"resume-job","args":{"job":"sample"}}"#,
    );
    assert_eq!(r["ok"], true, "{r}");
    eventually(SEEN, "sample active", || {
        site.job("sample")["state"] != "paused"
    });
    let runs = site.job("heartbeat")["runs"].as_u64().unwrap_or(0);
    let r = ask(
        "h",
        r#"{"id":"h","cmd":"run-job","args":{"job":"heartbeat"}}"#,
    );
    assert_eq!(r["ok"], true, "{r}");
    eventually(SEEN, "heartbeat ran", || {
        site.job("heartbeat")["runs"].as_u64().unwrap_or(0) > runs
    });
    let r = ask("c", r#"{"id":"c","cmd":"run-job","args":{"job":"probe"}}"#);
    assert_eq!(
        r["ok"], false,
        "command jobs need allow_remote_commands: {r}"
    );
    let r = ask("u", r#"{"id":"u","cmd":"upload-now","args":{}}"#);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("no [upload] section"),
        "{r}"
    );
    let r = ask("g", r#"{"id":"g","cmd":"get-config","args":{}}"#);
    assert!(
        r["result"].as_str().unwrap().contains("[jobs.probe]"),
        "{r}"
    );
    let r = ask("x", r#"{"id":"x","cmd":"self-destruct","args":{}}"#);
    assert_eq!(r["ok"], false, "{r}");
    watcher.publish(&request, r#"{"cmd":"get-config"}"#, false);
    let r = watcher
        .wait_for(&response, SEEN, "no id", |m| m.json()["id"].is_null())
        .json();
    assert_eq!(r["ok"], false, "{r}");
    stop(agent);
}

/// An overlay that breaks uploads is rolled back by the real agent: the old URL
/// worked, the pushed one fails, and at the end of `config_confirm` the agent is back
/// on the old one and says `rolled_back`.
#[test]
fn a_push_that_breaks_uploads_is_rolled_back_over_the_broker() {
    let ingest = crate::support::ingest::Ingest::start();
    let broker = any_broker();
    let prefix = unique_prefix("rollback");
    let (set, state, status, request, response, event) = (
        format!("{prefix}/config/set"),
        format!("{prefix}/config/state"),
        format!("{prefix}/status"),
        format!("{prefix}/cmd/request"),
        format!("{prefix}/cmd/response"),
        format!("{prefix}/event"),
    );
    let watcher = Watcher::connect(&broker.url, &[&state, &status, &response, &event]);
    let site = site(
        "rollback",
        &broker.url,
        &prefix,
        &format!(
            "config_confirm = \"4s\"\n[upload]\nurl = \"{}\"\n\
             [jobs.sample]\nevery = \"1s\"\n[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
             [[sensor]]\nid = \"p.do\"\nbus = \"sim\"\nmodel = {{ base = 7.5 }}\n",
            ingest.url()
        ),
    );
    let agent = site.start();
    watcher.wait_for(&status, SEEN, "online", online);
    // The old URL works.
    let uploaded = || {
        let conn = tidegate::store::open(&site.state_dir()).unwrap();
        tidegate::store::upload::status(&conn)
            .unwrap()
            .last_ok_ms
            .is_some()
    };
    while !uploaded() {
        watcher.publish(
            &request,
            r#"{"id":"up","cmd":"upload-now","args":{}}"#,
            false,
        );
        watcher.wait_for(&response, SEEN, "upload-now", |m| m.json()["id"] == "up");
        watcher.clear();
        std::thread::sleep(Duration::from_millis(300));
    }
    let dead = "http://127.0.0.1:9/readings";
    watcher.publish(
        &set,
        format!(r#"{{"version":4,"config":{{"upload":{{"url":"{dead}"}}}}}}"#),
        false,
    );
    let applied = watcher.wait_for(&state, SEEN, "applied", |m| m.json()["version"] == 4);
    assert_eq!(applied.json()["status"], "applied");
    // A reading to send under the new URL, and a run to send it (the one the push
    // started may have found nothing pending).
    std::thread::sleep(Duration::from_millis(1500));
    watcher.publish(
        &request,
        r#"{"id":"up2","cmd":"upload-now","args":{}}"#,
        false,
    );
    let back = watcher.wait_for(&state, SEEN, "rolled back", |m| {
        m.json()["status"] == "rolled_back"
    });
    let back = back.json();
    assert_eq!(back["version"], 4, "{back}");
    assert!(back["error"].as_str().unwrap().contains("upload"), "{back}");
    watcher.wait_for(&status, SEEN, "status back to the file", |m| {
        online(m) && m.json()["config_version"] == 0
    });
    watcher.publish(
        &request,
        r#"{"id":"cfg","cmd":"get-config","args":{}}"#,
        false,
    );
    let config = watcher.wait_for(&response, SEEN, "get-config", |m| m.json()["id"] == "cfg");
    let text = config.json()["result"].as_str().unwrap().to_owned();
    assert!(
        text.contains(&ingest.url()) && !text.contains(dead),
        "{text}"
    );
    // Each outcome of the push is one event, the version its subject.
    let rolled = watcher.wait_for(&event, SEEN, "config_rolled_back", |m| {
        m.json()["kind"] == "config_rolled_back"
    });
    assert_eq!(rolled.json()["subject"], "4");
    assert_eq!(rolled.json()["severity"], "warning");
    let kinds: Vec<String> = watcher
        .on(&event)
        .iter()
        .filter_map(|m| m.json()["kind"].as_str().map(str::to_owned))
        .filter(|k| k.starts_with("config_"))
        .collect();
    assert_eq!(kinds, ["config_applied", "config_rolled_back"], "{kinds:?}");
    stop(agent);
}
