//! A backlog of pending readings as a gateway that was offline for months holds it,
//! for the drain benches: 24 sensors (six ponds, each with dissolved oxygen,
//! temperature, pH and salinity) every 5 minutes, values with two decimals as the
//! registers give them, one reading in a thousand bad with its error, all taken on a
//! trusted clock in an earlier boot (so none is held back). Stored through the
//! agent's own insert path, `insert_cycle`, a thousand cycles a transaction, then the
//! WAL truncated as the agent's checkpoints keep it. A million readings is 41,667
//! cycles: 145 days offline.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use tidegate::reading::Reading;
use tidegate::store::{self, readings};

/// Sensors of one pond: suffix, unit, mean, daily swing.
const QUANTITIES: [(&str, &str, f64, f64); 4] = [
    ("do", "mg/L", 7.5, 1.5),
    ("temp", "degC", 27.0, 1.2),
    ("ph", "pH", 7.9, 0.2),
    ("sal", "ppt", 31.0, 0.4),
];
const PONDS: usize = 6;
const CYCLE_MS: i64 = 300_000;
const CYCLES_PER_TRANSACTION: usize = 1_000;

/// Builds `buffer.db` in `state_dir` holding `total` pending readings, seqs 1 to
/// `total`; returns how long it took.
pub fn build(state_dir: &Path, total: usize) -> Duration {
    let started = Instant::now();
    let mut conn = store::open(state_dir).expect("create buffer.db");
    let boot = readings::BootTime {
        boot_id: "5d0c2a7e9b3f4e1a8c6d2b0f7e9a1c3d".into(),
        since_boot_ms: 0,
    };
    let sensors = QUANTITIES.len() * PONDS;
    let first_ts = chrono::Utc
        .with_ymd_and_hms(2026, 7, 8, 0, 0, 0)
        .single()
        .expect("a valid date");
    let ids: Vec<String> = (0..sensors)
        .map(|s| format!("pond{}.{}", s / 4 + 1, QUANTITIES[s % 4].0))
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let per_transaction = sensors * CYCLES_PER_TRANSACTION;
    let mut chunk = Vec::with_capacity(per_transaction);
    let mut i = 0;
    while i < total {
        chunk.clear();
        while chunk.len() < per_transaction && i < total {
            let (cycle, s) = (i / sensors, i % sensors);
            let ts = first_ts + chrono::Duration::milliseconds(cycle as i64 * CYCLE_MS);
            let (_, unit, mean, swing) = QUANTITIES[s % 4];
            let reading = if rng.u32(..1000) == 0 {
                Reading::bad(&ids[s], ts, None, "slave 3: no answer within 500ms")
            } else {
                let day = (cycle % 288) as f64 / 288.0 * std::f64::consts::TAU;
                let value = mean + swing * day.sin() + swing * 0.1 * (rng.f64() - 0.5);
                Reading::good(&ids[s], ts, (value * 100.0).round() / 100.0, Some(unit))
            };
            chunk.push(reading);
            i += 1;
        }
        readings::insert_cycle(&mut conn, &chunk, readings::ClockQuality::Synced, &boot)
            .expect("insert readings");
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    let pending = readings::pending_count(&conn).expect("counts");
    assert_eq!(pending, total as u64, "every reading pending");
    started.elapsed()
}

/// Copies the database built in `from` into a new state directory `to`.
pub fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("state dir");
    std::fs::copy(from.join(store::DB_FILE), to.join(store::DB_FILE)).expect("copy buffer.db");
}

/// The load averages over 1, 5 and 15 minutes, as `uptime` shows them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
