//! `/metrics` of a running agent: the Prometheus text format, the heartbeat's figures,
//! and a server that slow or hostile clients cannot wedge.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agent::{Site, eventually};
use crate::support::broker::{Watcher, any_broker, unique_prefix};
use crate::support::ingest::Ingest;
use crate::support::modbus::TcpDevice;

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
fn get(address: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

/// `/metrics` read by a Prometheus text-format parser, after checking that it
/// understood every line (it skips what it cannot read).
fn scrape(address: SocketAddr) -> prometheus_parse::Scrape {
    let (status, head, body) = get(address, "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for line in body.lines() {
        assert!(
            !matches!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Ignored | prometheus_parse::LineInfo::Empty
            ),
            "not the text format: {line:?}"
        );
    }
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(m: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let s = m
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    match s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => Some(v),
        ref other => panic!("{name}: {other:?}"),
    }
}

/// The sum of a family's samples that carry `labels`.
fn total(m: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
        .sum()
}

fn secs(time: &Value) -> Option<f64> {
    let t: chrono::DateTime<chrono::Utc> = time.as_str()?.parse().unwrap();
    Some(t.timestamp_millis() as f64 / 1000.0)
}

/// `s` seconds from now on the real clock: the agent under test reads that one.
#[allow(clippy::disallowed_methods)]
fn in_seconds(s: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(s))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_carry_the_heartbeats_figures() {
    let broker = any_broker();
    let prefix = unique_prefix("metrics");
    let ingest = Ingest::start();
    let device = TcpDevice::start(HashMap::from([(1, vec![710])])).await;
    let listen = free_port();
    // Every job but the heartbeat runs once, early; then only the heartbeat moves.
    let rest = format!(
        "[mqtt]\nurl = \"{}\"\ntopic_prefix = \"{prefix}\"\n\
         [upload]\nurl = \"{}\"\n\
         [metrics]\nlisten = \"{listen}\"\n\
         [jobs.heartbeat]\nevery = \"2s\"\n\
         [jobs.sample]\nat = \"{}\"\n\
         [jobs.broken]\nkind = \"command\"\ncommand = [\"/bin/false\"]\nat = \"{}\"\n\
         [jobs.upload]\nat = \"{}\"\n\
         [[bus]]\nname = \"plc\"\nkind = \"modbus-tcp\"\naddress = \"{}\"\ntimeout = \"200ms\"\nretries = 0\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"pond1.do\"\nbus = \"plc\"\nslave = 1\nregister = 0\nscale = 0.01\nunit = \"mg/L\"\n\
         [[sensor]]\nid = \"pond1.ph\"\nbus = \"plc\"\nslave = 1\nregister = 5\nunit = \"pH\"\n\
         [[sensor]]\nid = \"pond2.do\"\nbus = \"sim\"\nunit = \"mg/L\"\nmodel = {{ base = 4.2 }}\n\
         [[alarm]]\nid = \"pond1-low-oxygen\"\nsensor = \"pond1.do\"\nbelow = 5.0\n\
         [[alarm]]\nid = \"pond2-low-oxygen\"\nsensor = \"pond2.do\"\nbelow = 5.0\n",
        broker.url,
        ingest.url(),
        in_seconds(2),
        in_seconds(2),
        in_seconds(4),
        device.address,
    );
    let site = Site::with_id(
        &format!("metrics-{:06x}", fastrand::u32(..0xff_ffff)),
        &rest,
    );
    let topic = format!("{prefix}/heartbeat");
    let watcher = Watcher::connect(&broker.url, &[&topic]);
    let mut agent = site.start();
    let settled = Duration::from_secs(20);
    eventually(settled, "sample, broken and upload ran", || {
        let log = agent.log();
        log.contains("sample: readings stored")
            && log.contains("job=broken")
            && log.contains("run succeeded job=upload")
    });
    std::thread::sleep(Duration::from_millis(500));

    // Between two heartbeats only the first one's own run is written, and the next
    // reads after that: a scrape in between must show what the next one says.
    let seen = watcher.on(&topic).len();
    eventually(settled, "a heartbeat", || watcher.on(&topic).len() > seen);
    let before = watcher.on(&topic)[seen].json();
    std::thread::sleep(Duration::from_millis(600));
    let m = scrape(listen);
    eventually(settled, "the next heartbeat", || {
        watcher.on(&topic).len() > seen + 1
    });
    let hb = watcher.on(&topic)[seen + 1].json();
    let figure = |path: &str| hb.pointer(path).unwrap().as_f64();

    assert_eq!(
        value(
            &m,
            "tidegate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "tidegate_config_version", &[]),
        figure("/config_version")
    );
    assert_eq!(value(&m, "tidegate_clock_trusted", &[]), Some(1.0));
    assert_eq!(hb["clock"], "trusted");
    assert_eq!(value(&m, "tidegate_mqtt_connected", &[]), Some(1.0));
    for (series, path) in [
        ("tidegate_buffer_pending", "/buffer/pending"),
        ("tidegate_buffer_dropped_total", "/buffer/dropped_total"),
        ("tidegate_buffer_dead_letter", "/buffer/dead_letter"),
        (
            "tidegate_upload_consecutive_failures",
            "/upload/consecutive_failures",
        ),
    ] {
        assert_eq!(value(&m, series, &[]), figure(path), "{series}");
    }
    // The write-ahead log grows with every commit, the heartbeat's own included.
    let db_bytes = value(&m, "tidegate_buffer_db_bytes", &[]).unwrap();
    let (low, high) = (
        before["buffer"]["db_bytes"].as_f64().unwrap(),
        figure("/buffer/db_bytes").unwrap(),
    );
    assert!(
        low <= db_bytes && db_bytes <= high,
        "{low} <= {db_bytes} <= {high}"
    );
    assert_eq!(
        value(&m, "tidegate_upload_last_success_timestamp_seconds", &[]),
        secs(&hb["upload"]["last_success_ts"])
    );
    assert!(
        ingest.delivered().len() >= 3,
        "the upload delivered the cycle"
    );

    for (name, job) in hb["jobs"].as_object().unwrap() {
        let j = [("job", name.as_str())];
        assert_eq!(
            Some(total(&m, "tidegate_job_runs_total", &j)),
            job["runs"].as_f64(),
            "{name} runs"
        );
        let failures = total(&m, "tidegate_job_runs_total", &j)
            - value(
                &m,
                "tidegate_job_runs_total",
                &[j[0], ("outcome", "success")],
            )
            .unwrap();
        assert_eq!(Some(failures), job["failures"].as_f64(), "{name} failures");
        assert_eq!(
            value(&m, "tidegate_job_missed_total", &j),
            job["missed"].as_f64(),
            "{name}"
        );
        let running = value(&m, "tidegate_job_running", &j);
        assert_eq!(
            running,
            Some(if job["state"] == "running" { 1.0 } else { 0.0 })
        );
        assert_eq!(
            value(&m, "tidegate_job_last_run_timestamp_seconds", &j),
            secs(&job["last_run"]),
            "{name}"
        );
        // The heartbeat's next fire was planned after the scrape, when it fired.
        if name != "heartbeat" {
            assert_eq!(
                value(&m, "tidegate_job_next_run_timestamp_seconds", &j),
                secs(&job["next_run"]),
                "{name}"
            );
        }
    }
    let broken = [("job", "broken")];
    assert_eq!(
        value(
            &m,
            "tidegate_job_runs_total",
            &[broken[0], ("outcome", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "tidegate_job_duration_seconds_count", &broken),
        Some(1.0)
    );
    // A one-shot that failed stays failed; the one that succeeded is completed.
    assert_eq!(hb["jobs"]["broken"]["state"], "failed");
    assert_eq!(
        value(&m, "tidegate_job_state", &[broken[0], ("state", "failed")]),
        Some(1.0)
    );
    assert_eq!(hb["jobs"]["sample"]["state"], "completed");
    assert_eq!(
        value(
            &m,
            "tidegate_job_state",
            &[("job", "sample"), ("state", "completed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "tidegate_job_next_run_timestamp_seconds", &broken),
        None
    );
    assert!(hb["jobs"]["broken"]["next_run"].is_null());

    // Sensors: up where the heartbeat counts them good, the bad one down.
    assert_eq!(hb["sensors"]["bad"], serde_json::json!(["pond1.ph"]));
    let up = |id: &str| value(&m, "tidegate_sensor_up", &[("sensor", id)]);
    assert_eq!(
        (up("pond1.do"), up("pond2.do"), up("pond1.ph")),
        (Some(1.0), Some(1.0), Some(0.0))
    );
    assert_eq!(hb["sensors"]["good"], 2);
    assert_eq!(
        value(
            &m,
            "tidegate_sensor_value",
            &[("sensor", "pond1.do"), ("unit", "mg/L")]
        ),
        Some(7.1)
    );
    assert_eq!(
        value(&m, "tidegate_sensor_value", &[("sensor", "pond1.ph")]),
        None
    );

    // Buses: the results add up to the heartbeat's requests, failures by kind.
    for (bus, c) in hb["buses"].as_object().unwrap() {
        let b = |result: &'static str| [("bus", bus.as_str()), ("result", result)];
        assert_eq!(
            Some(total(&m, "tidegate_bus_requests_total", &b("")[..1])),
            c["requests"].as_f64(),
            "{bus}"
        );
        assert_eq!(
            value(&m, "tidegate_bus_requests_total", &b("timeout")),
            c["timeouts"].as_f64()
        );
        assert_eq!(
            value(&m, "tidegate_bus_requests_total", &b("crc_error")),
            c["crc_errors"].as_f64()
        );
        assert_eq!(
            value(&m, "tidegate_bus_requests_total", &b("exception")),
            c["exceptions"].as_f64()
        );
        assert_eq!(
            value(
                &m,
                "tidegate_bus_last_good_read_timestamp_seconds",
                &[("bus", bus.as_str())]
            ),
            secs(&c["last_good_read"])
        );
    }
    let exceptions = hb["buses"]["plc"]["exceptions"].as_u64().unwrap();
    assert!(exceptions >= 1, "pond1.ph's register is not there");

    // Alarms as `tidegate alarms --json` lists them; no events lost.
    let (code, out, err) = site.cli(&["alarms", "--json"]);
    assert_eq!(code, 0, "{err}");
    let alarms: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(alarms.len(), 2);
    for alarm in &alarms {
        let raised = value(
            &m,
            "tidegate_alarm_raised",
            &[("alarm", alarm["id"].as_str().unwrap())],
        );
        assert_eq!(
            raised,
            Some(if alarm["state"] == "raised" { 1.0 } else { 0.0 }),
            "{alarm}"
        );
    }
    assert_eq!(
        value(
            &m,
            "tidegate_alarm_raised",
            &[("alarm", "pond2-low-oxygen")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&m, "tidegate_events_dropped_total", &[]), Some(0.0));

    assert_eq!(get(listen, "GET", "/").0, 404);
    assert_eq!(get(listen, "GET", "/metrics/extra").0, 404);
    assert_eq!(get(listen, "POST", "/metrics").0, 404);

    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    device.stop().await;
}

/// One simulated sensor sampled every second, metrics on `listen`.
fn sampled_every_second(listen: SocketAddr) -> String {
    format!(
        "[metrics]\nlisten = \"{listen}\"\n\
         [jobs.sample]\nevery = \"1s\"\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"pond1.do\"\nbus = \"sim\"\nmodel = {{ base = 7.5 }}\n"
    )
}

#[test]
fn slow_and_hostile_clients_neither_wedge_the_endpoint_nor_the_jobs() {
    let listen = free_port();
    let site = Site::new(&sampled_every_second(listen));
    let mut agent = site.start();
    eventually(Duration::from_secs(10), "the endpoint", || {
        TcpStream::connect(listen).is_ok()
    });

    // Connections that never finish their headers, and one that sends too many.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(listen).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut flood = TcpStream::connect(listen).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let header = format!(
        "GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = flood.write_all(header.as_bytes());

    let start = Instant::now();
    let m = scrape(listen);
    assert!(
        value(
            &m,
            "tidegate_job_runs_total",
            &[("job", "sample"), ("outcome", "success")]
        )
        .is_some()
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a scrape waited on the others: {:?}",
        start.elapsed()
    );

    // The oversized request is refused, the slow ones cut off after the header limit.
    flood
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = flood.read_to_string(&mut answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "idle connections held on"
    );

    // Scrapes at once (as many as the connection limit allows) all answer; sampling
    // went on all along.
    let runs = |m: &prometheus_parse::Scrape| {
        value(
            m,
            "tidegate_job_runs_total",
            &[("job", "sample"), ("outcome", "success")],
        )
        .unwrap()
    };
    let first = runs(&m);
    let scrapes: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || scrape(listen)))
        .collect();
    for s in scrapes {
        s.join().unwrap();
    }
    let later = runs(&scrape(listen));
    assert!(
        later >= first + 3.0,
        "sampling stalled: {first} then {later}"
    );
    assert!(agent.log().matches("sample: readings stored").count() as f64 >= later);

    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_port_in_use_leaves_the_agent_running_without_the_endpoint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let site = Site::new(&sampled_every_second(listen));
    let mut agent = site.start();
    agent.wait_for_log("metrics endpoint not started", Duration::from_secs(10));
    assert!(agent.log().contains(&format!("listen={listen}")));
    agent.wait_for_log("sample: readings stored", Duration::from_secs(10));
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}
