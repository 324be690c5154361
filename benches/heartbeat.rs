//! What a heartbeat costs: CPU time per heartbeat built and published to a real broker,
//! and so per hour at the default 30 s (120 heartbeats).
//!
//! The agent's setting: the current-thread runtime, a real `buffer.db` with the four
//! built-in jobs and four simulated sensors sampled, the MQTT client connected. Each
//! heartbeat is the built-in job run the scheduler's way (`job::run_recorded`:
//! gather the figures, build the payload, publish at QoS 0, record the run), back to
//! back. CPU is the process's user + system time (`getrusage`: the runtime, the
//! database writer, the log writer), so it includes the run's bookkeeping commit;
//! the broker's own CPU is not counted. A second pass leaves out the run record.
//! With a pause between heartbeats the caches are as cold as in the agent, and the
//! figure includes the runtime's and the client's idle work over the pauses.
//!
//! Run: `cargo bench --bench heartbeat [-- N [PAUSE_MS]]` (defaults 2000 and 0) with a
//! broker at `TIDEGATE_BENCH_MQTT_URL` (default `mqtt://127.0.0.1:1883`).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate::clock::{Clock, SystemClock};
use tidegate::config::ClockMode;
use tidegate::health::{self, ConfigStatus, Health};
use tidegate::job::{self, JobContext};
use tidegate::store::jobs::Origin;
use tidegate::store::{self, StoreHandle};
use tokio_util::sync::CancellationToken;

fn config_text(state_dir: &std::path::Path, url: &str) -> String {
    let mut text = format!(
        "[agent]\nid = \"bench-{:06x}\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\n\n[mqtt]\nurl = \"{url}\"\ntopic_prefix = \"tgbench/heartbeat\"\n\n[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n",
        fastrand::u32(..0xff_ffff),
        state_dir.display()
    );
    for id in ["pond1.do", "pond1.temp", "pond1.ph", "pond1.salinity"] {
        text.push_str(&format!(
            "\n[[sensor]]\nid = \"{id}\"\nbus = \"sim\"\nmodel = {{ base = 7.5, amplitude = 1.0, period = \"24h\", noise = 0.05 }}\n"
        ));
    }
    text
}

/// User + system CPU time of this process so far.
fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn main() {
    let numbers: Vec<u32> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let n = numbers.first().copied().unwrap_or(2000);
    let pause = Duration::from_millis(u64::from(numbers.get(1).copied().unwrap_or(0)));
    let url = std::env::var("TIDEGATE_BENCH_MQTT_URL")
        .unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_string());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Arc::new(
        tidegate::config::parse_str(&config_text(dir.path(), &url), "bench.toml")
            .expect("bench config is valid"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = StoreHandle::spawn(store::open(dir.path()).expect("store"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(ClockMode::Trusted));
        let health = Arc::new(Health::new(clock.now(), ConfigStatus::default()));
        let (mqtt, _inbound) = tidegate::mqtt::spawn(
            config.mqtt.as_ref().expect("[mqtt]"),
            &config.agent.id,
            Arc::clone(&health),
            Arc::clone(&clock),
        );
        let ctx = JobContext::with_health(
            Arc::clone(&config),
            clock,
            store.clone(),
            health,
            Some(mqtt.clone()),
        );
        for name in ["heartbeat", "sample", "upload", "cleanup"] {
            store
                .call(move |c| tidegate::store::jobs::ensure(c, name, name))
                .await
                .expect("job rows");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mqtt.connected() {
            assert!(Instant::now() < deadline, "no broker at {url}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cancel = CancellationToken::new();
        let sample = config.job("sample").expect("sample job").clone();
        for _ in 0..12 {
            job::run_recorded(&sample, &ctx, &store, Origin::Schedule, None, &cancel).await;
        }
        let heartbeat = config.job("heartbeat").expect("heartbeat job").clone();
        let payload = health::heartbeat_payload(&health::heartbeat(&ctx).await);
        println!(
            "{n} heartbeats to {url}, {} bytes each, {pause:?} apart",
            payload.to_string().len()
        );

        let (cpu0, wall0, sent0) = (cpu(), Instant::now(), mqtt.stats().heartbeats_sent);
        for _ in 0..n {
            job::run_recorded(&heartbeat, &ctx, &store, Origin::Schedule, None, &cancel).await;
            tokio::time::sleep(pause).await;
        }
        store.call(|_| Ok(())).await.expect("writer");
        let (run_cpu, run_wall) = (cpu() - cpu0, wall0.elapsed());
        let sent = mqtt.stats().heartbeats_sent - sent0;

        let (cpu1, wall1) = (cpu(), Instant::now());
        for _ in 0..n {
            let payload = health::heartbeat_payload(&health::heartbeat(&ctx).await);
            let _ = mqtt.publish_heartbeat(&payload);
            if pause.is_zero() {
                // Let the event loop take it, as the agent's idle runtime would.
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
        let (bare_cpu, bare_wall) = (cpu() - cpu1, wall1.elapsed());
        let stats = mqtt.stats();

        let per = |total: Duration| total / n;
        println!(
            "heartbeat job run (gather, publish, record): {:?} CPU each ({:?} wall); {:.1} ms CPU per hour at 30 s = {:.4} % of one core",
            per(run_cpu),
            per(run_wall),
            per(run_cpu).as_secs_f64() * 120.0 * 1000.0,
            per(run_cpu).as_secs_f64() * 120.0 / 3600.0 * 100.0
        );
        println!(
            "gather + publish only: {:?} CPU each ({:?} wall)",
            per(bare_cpu),
            per(bare_wall)
        );
        println!(
            "sent {sent} of {n} in the job pass; dropped in all: {}",
            stats.heartbeats_dropped
        );
        mqtt.stop(Duration::from_secs(1)).await;
    });
}
