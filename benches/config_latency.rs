//! Time from a `config/set` to its `config/state` on a loopback broker.
//!
//! The real binary (`TIDEGATE_BIN`, default `target/release/tidegate`) runs with four
//! simulated sensors sampled every second and the default jobs, connected to the
//! broker at the URL given (default Mosquitto on `mqtt://127.0.0.1:1883`). This process
//! publishes pushes v1, v2, … (each changes the sample interval, so every one is laid
//! over the file, validated, persisted with an fsync, applied to the running scheduler
//! and answered) one at a time, and times each from the publish to the arrival of its
//! `config/state`.
//!
//! ```sh
//! cargo build --release && cp target/release/tidegate /tmp/tidegate
//! TIDEGATE_BIN=/tmp/tidegate cargo bench --bench config_latency [-- PUSHES [URL]]   # 50, Mosquitto
//! ```
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let pushes: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let bin = std::env::var("TIDEGATE_BIN").unwrap_or_else(|_| "target/release/tidegate".into());
    let (host, port) = {
        let rest = url.trim_start_matches("mqtt://");
        let (h, p) = rest.rsplit_once(':').expect("mqtt://host:port");
        (h.to_string(), p.parse::<u16>().expect("port"))
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("tgbench/{:08x}", fastrand::u32(..));
    let mut text = format!(
        "[agent]\nid = \"bench-{:06x}\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\n\
         [mqtt]\nurl = \"{url}\"\ntopic_prefix = \"{prefix}\"\nconfig_confirm = \"1h\"\n\
         [jobs.sample]\nevery = \"1s\"\n[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n",
        fastrand::u32(..0xff_ffff),
        dir.path().join("state").display()
    );
    for i in 0..4 {
        text.push_str(&format!(
            "[[sensor]]\nid = \"pond{i}.do\"\nbus = \"sim\"\nmodel = {{ base = 7.5 }}\n"
        ));
    }
    let config = dir.path().join("tidegate.toml");
    std::fs::write(&config, text).expect("config");
    let mut agent = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");

    let mut options = MqttOptions::new(format!("bench-{:08x}", fastrand::u32(..)), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 64);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    connection.eventloop.set_network_options(network);
    let (state_tx, state_rx) = mpsc::channel::<(Instant, serde_json::Value)>();
    let (online_tx, online_rx) = mpsc::channel::<()>();
    let state_topic = format!("{prefix}/config/state");
    let status_topic = format!("{prefix}/status");
    client
        .subscribe(&state_topic, QoS::AtLeastOnce)
        .expect("subscribe");
    client
        .subscribe(&status_topic, QoS::AtLeastOnce)
        .expect("subscribe");
    std::thread::spawn(move || {
        for event in connection.iter() {
            if let Ok(Event::Incoming(Packet::Publish(p))) = event {
                let Ok(json) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                    continue;
                };
                if p.topic == status_topic && json["state"] == "online" {
                    let _ = online_tx.send(());
                } else if p.topic == state_topic {
                    let _ = state_tx.send((Instant::now(), json));
                }
            }
        }
    });
    online_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the agent came online");
    std::thread::sleep(Duration::from_millis(500));

    let set = format!("{prefix}/config/set");
    let mut latencies = Vec::new();
    for version in 1..=pushes {
        let every = if version % 2 == 0 { "1s" } else { "2s" };
        let push = format!(
            r#"{{"version":{version},"config":{{"jobs":{{"sample":{{"every":"{every}"}}}}}}}}"#
        );
        let sent = Instant::now();
        client
            .publish(&set, QoS::AtLeastOnce, false, push)
            .expect("publish");
        loop {
            let (at, state) = state_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("an answer within 10 s");
            if state["version"] == version {
                assert_eq!(state["status"], "applied", "{state}");
                latencies.push(at - sent);
                break;
            }
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} pushes to {url}: median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(p(0.5)),
        ms(p(0.9)),
        ms(*latencies.last().expect("a push"))
    );
}
