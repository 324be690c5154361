//! Start-up time to READY: from spawning `tidegate run` to systemd's `READY=1`
//! arriving on a `NOTIFY_SOCKET` this process listens on, as systemd itself would
//! see it for a `Type=notify` unit.
//!
//! Three states of the gateway, each started RUNS times (default 20):
//! - first boot: an empty state directory (the database is created);
//! - restart: the database of the previous start, a few readings in it;
//! - backlog: a copy of a buffer holding BACKLOG pending readings (default 100,000:
//!   two weeks of 24 sensors every 5 minutes offline), which start-up checks with
//!   `PRAGMA quick_check` before it opens for business.
//!
//! The config has 24 simulated sensors and the default jobs, no MQTT (the broker
//! connection starts beside the scheduler and never delays readiness). Every start
//! is stopped with SIGTERM after READY and must exit 0.
//!
//! ```sh
//! cargo build --release && cp target/release/tidegate /tmp/tidegate
//! TIDEGATE_BIN=/tmp/tidegate cargo bench --bench ready [-- RUNS [BACKLOG]]
//! ```
//! (`cargo bench` builds its own copy of the binary with the dev-dependencies'
//! features; `TIDEGATE_BIN` measures the one `cargo build --release` ships.)
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

#[path = "support/backlog.rs"]
mod backlog;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let backlog_size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let binary = std::env::var_os("TIDEGATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tidegate")),
        PathBuf::from,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "binary {} ({} bytes), {runs} starts each",
        binary.display(),
        std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0)
    );

    let first: Vec<Duration> = (0..runs)
        .map(|i| {
            let state = dir.path().join(format!("first-{i}"));
            start_to_ready(&binary, dir.path(), &state)
        })
        .collect();
    report("first boot (empty state directory)", &first);

    let state = dir.path().join("restart");
    start_to_ready(&binary, dir.path(), &state);
    let restart: Vec<Duration> = (0..runs)
        .map(|_| start_to_ready(&binary, dir.path(), &state))
        .collect();
    report("restart (database of the previous start)", &restart);

    let template = dir.path().join("template");
    let took = backlog::build(&template, backlog_size);
    let size = std::fs::metadata(template.join(tidegate::store::DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "built {backlog_size} pending readings ({:.1} MiB) in {:.1} s",
        size as f64 / 1_048_576.0,
        took.as_secs_f64()
    );
    let backlog: Vec<Duration> = (0..runs)
        .map(|i| {
            let state = dir.path().join(format!("backlog-{i}"));
            backlog::copy(&template, &state);
            start_to_ready(&binary, dir.path(), &state)
        })
        .collect();
    report(
        &format!("backlog ({backlog_size} pending readings, page cache warm)"),
        &backlog,
    );
    println!("load average: {}", backlog::load());
}

/// Starts the agent on `state`, waits for READY=1, stops it; returns the wait.
fn start_to_ready(binary: &Path, dir: &Path, state: &Path) -> Duration {
    let config = dir.join("ready.toml");
    std::fs::write(&config, config_text(state)).expect("write config");
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");

    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("TIDEGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidegate");
    let mut buf = [0u8; 512];
    let ready = loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            break started.elapsed();
        }
        assert!(started.elapsed() < LIMIT, "no READY=1 within {LIMIT:?}");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the agent exited before READY"
        );
    };
    // SAFETY: a plain kill(2) on our own child.
    unsafe {
        libc::kill(
            libc::pid_t::try_from(child.id()).expect("pid"),
            libc::SIGTERM,
        );
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "the agent exited with {status}");
    ready
}

fn config_text(state: &Path) -> String {
    let mut text = format!(
        "[agent]\nid = \"bench-ready\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\nshutdown_grace = \"1s\"\n\n[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n",
        state.display()
    );
    for pond in 1..=6 {
        for (q, base) in [("do", 7.5), ("temp", 18.0), ("ph", 7.8), ("sal", 32.0)] {
            text.push_str(&format!(
                "\n[[sensor]]\nid = \"pond{pond}.{q}\"\nbus = \"sim\"\nmodel = {{ base = {base} }}\n"
            ));
        }
    }
    text
}

fn report(what: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        pick(0.5),
        pick(0.9),
        ms[0],
        ms[ms.len() - 1]
    );
}
