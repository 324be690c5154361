//! `/metrics` and alarm events on a big gateway: 200 sensors (50 ponds of four, on the
//! simulated bus) and 50 alarm rules, sampled every second, connected to a loopback
//! MQTT broker. Measures, on one `tidegate run`:
//!
//! - a scrape's latency, from connect to the last byte: a fresh one (the body is
//!   older than a second, so the agent reads the store and renders), one every 1.1 s
//!   for the whole run; and cached ones (200 back to back at the end);
//! - the time from a reading crossing its threshold to its event arriving at a
//!   subscriber: each pond's oxygen is a 30 s cosine around its threshold, so every
//!   rule is raised and cleared once a cycle; an alarm event carries its reading's
//!   `ts`, and the latency is arrival minus `ts`. All 50 cross in the same sampling
//!   cycle, so the events come in bursts of 50: the first of a burst is a lone
//!   crossing's latency, the rest queue behind it;
//! - the agent's resident memory (VmRSS every minute, VmHWM) and CPU time at the end.
//!
//! ```sh
//! cargo build --release && cp target/release/tidegate /tmp/tidegate
//! TIDEGATE_BIN=/tmp/tidegate cargo bench --bench metrics [-- SECONDS]   # default 120
//! ```
//! with a broker at `TIDEGATE_BENCH_MQTT_URL` (default `mqtt://127.0.0.1:1883`).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

const PONDS: usize = 50;

fn config(state: &std::path::Path, url: &str, prefix: &str, listen: SocketAddr) -> String {
    let mut text = format!(
        "[agent]\nid = \"bench-metrics-{:06x}\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\n\n\
         [mqtt]\nurl = \"{url}\"\ntopic_prefix = \"{prefix}\"\n\n\
         [metrics]\nlisten = \"{listen}\"\n\n\
         [jobs.sample]\nevery = \"1s\"\n\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n",
        fastrand::u32(..0xff_ffff),
        state.display()
    );
    for pond in 1..=PONDS {
        text.push_str(&format!(
            "\n[[sensor]]\nid = \"pond{pond}.do\"\nbus = \"sim\"\nunit = \"mg/L\"\n\
             model = {{ base = 5.0, amplitude = 1.0, period = \"30s\", noise = 0.01 }}\n"
        ));
        for (q, unit, base) in [
            ("temp", "degC", 18.0),
            ("ph", "pH", 7.8),
            ("salinity", "ppt", 32.0),
        ] {
            text.push_str(&format!(
                "\n[[sensor]]\nid = \"pond{pond}.{q}\"\nbus = \"sim\"\nunit = \"{unit}\"\n\
                 model = {{ base = {base}, amplitude = 1.0, period = \"24h\", noise = 0.05 }}\n"
            ));
        }
        text.push_str(&format!(
            "\n[[alarm]]\nid = \"pond{pond}-low-oxygen\"\nsensor = \"pond{pond}.do\"\nbelow = 4.8\nclear_above = 5.2\nseverity = \"critical\"\n"
        ));
    }
    text
}

/// GET /metrics on a new connection: (latency to the last byte, body bytes).
fn scrape(address: SocketAddr) -> (Duration, usize) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(address).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let elapsed = start.elapsed();
    assert!(response.starts_with(b"HTTP/1.1 200"), "not 200");
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| response.len() - at - 4);
    (elapsed, body)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        println!("{name}: none");
        return;
    }
    v.sort();
    println!(
        "{name}: n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

fn status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map_or_else(String::new, |l| l[key.len()..].trim().to_string())
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Milliseconds since the epoch on this machine's clock: the agent stamps with the same.
#[allow(clippy::disallowed_methods)]
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(120);
    let binary = std::env::var_os("TIDEGATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tidegate")),
        PathBuf::from,
    );
    let url = std::env::var("TIDEGATE_BENCH_MQTT_URL")
        .unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_string());
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let prefix = format!("tgbench/metrics/{:08x}", fastrand::u32(..));
    let path = dir.path().join("bench.toml");
    std::fs::write(
        &path,
        config(&dir.path().join("state"), &url, &prefix, listen),
    )
    .expect("config");

    // The subscriber: every event with its arrival time.
    let (host, port) = url
        .trim_start_matches("mqtt://")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse().expect("port")))
        .expect("mqtt://host:port");
    let mut options =
        MqttOptions::new(format!("bench-watch-{:08x}", fastrand::u32(..)), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 1024);
    client
        .subscribe(format!("{prefix}/event"), QoS::AtLeastOnce)
        .expect("subscribe");
    let events: Arc<Mutex<Vec<(i64, serde_json::Value)>>> = Arc::default();
    let seen = Arc::clone(&events);
    std::thread::spawn(move || {
        for notification in connection.iter() {
            match notification {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = now_ms();
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        seen.lock().expect("events").push((at, v));
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let mut agent = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&path)
        .env("TIDEGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let pid = agent.id();
    let up = Instant::now();
    while TcpStream::connect(listen).is_err() {
        assert!(up.elapsed() < Duration::from_secs(30), "no /metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));

    let end = Instant::now() + Duration::from_secs(secs);
    let mut fresh = Vec::new();
    let mut size = 0;
    let mut rss_over_time = Vec::new();
    let mut next_rss = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1100));
        let (latency, bytes) = scrape(listen);
        fresh.push(latency);
        size = bytes;
        if Instant::now() >= next_rss {
            rss_over_time.push(format!(
                "{}s {}",
                up.elapsed().as_secs(),
                status(pid, "VmRSS:")
            ));
            next_rss += Duration::from_secs(60);
        }
    }
    let cached: Vec<Duration> = (0..200).map(|_| scrape(listen).0).collect();
    let rss = status(pid, "VmRSS:");
    let hwm = status(pid, "VmHWM:");
    let cpu = cpu_seconds(pid);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let code = agent.wait().expect("wait").code();
    std::thread::sleep(Duration::from_millis(300));
    let _ = client.disconnect();

    let events = events.lock().expect("events").clone();
    let mut all = Vec::new();
    let mut first_of_burst = Vec::new();
    let mut by_ts: std::collections::BTreeMap<String, i64> = Default::default();
    for (arrived, e) in &events {
        let kind = e["kind"].as_str().unwrap_or("");
        if kind != "alarm_raised" && kind != "alarm_cleared" {
            continue;
        }
        let ts = e["ts"].as_str().expect("ts");
        let at: chrono::DateTime<chrono::Utc> = ts.parse().expect("RFC 3339");
        let latency = arrived - at.timestamp_millis();
        all.push(Duration::from_millis(u64::try_from(latency).unwrap_or(0)));
        let first = by_ts.entry(ts.to_string()).or_insert(latency);
        *first = (*first).min(latency);
    }
    for latency in by_ts.values() {
        first_of_burst.push(Duration::from_millis(u64::try_from(*latency).unwrap_or(0)));
    }

    println!(
        "binary {} ({} bytes); {PONDS} ponds: {} sensors, {PONDS} alarm rules, sample every 1 s, {secs} s",
        binary.display(),
        std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0),
        PONDS * 4
    );
    println!("/metrics body: {size} bytes");
    summary("scrape, fresh (store read + render)", fresh);
    summary("scrape, cached (body under 1 s old)", cached);
    summary("reading ts -> alarm event at subscriber, every event", all);
    summary(
        "reading ts -> alarm event at subscriber, first of each burst",
        first_of_burst,
    );
    println!("VmRSS every minute: {}", rss_over_time.join(", "));
    println!("agent at the end: VmRSS {rss}, VmHWM {hwm}, CPU {cpu:.2} s; exit {code:?}");
}
