//! Sustained insert rate of readings in sample-cycle transactions.
//!
//! Cycles of 24 readings (a gateway's sensors) are stored one transaction each on a
//! real WAL database in a temporary directory (on the disk holding `$TMPDIR`), through
//! the two paths the agent has: `insert_cycle` alone, and `store_cycle`, which is what
//! the sample job calls (held-cycle queue, buffer limits checked before and after).
//! SQLite's automatic checkpoints run as they would in the agent.
//!
//! Run: `cargo bench --bench insert [-- READINGS]` (default 2,000,000).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::time::Instant;

use chrono::TimeZone;
use tidegate::reading::Reading;
use tidegate::store::{self, readings};

const SENSORS: usize = 24;

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let cycles = total / SENSORS;
    let boot = readings::BootTime {
        boot_id: "3b1f0d7ce4a94c0f8f2e9a6b5c4d3e2f".into(),
        since_boot_ms: 0,
    };
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
    let cycle = |i: usize| -> Vec<Reading> {
        let ts = t0 + chrono::Duration::seconds(i as i64 * 300);
        (0..SENSORS)
            .map(|s| {
                Reading::good(
                    &format!("pond{}.s{}", s / 4, s % 4),
                    ts,
                    7.0 + s as f64 * 0.01,
                    Some("mg/L"),
                )
            })
            .collect()
    };
    let prepared: Vec<Vec<Reading>> = (0..cycles).map(cycle).collect();
    let limits = readings::Limits {
        max_rows: 100_000_000,
        max_size: 1 << 40,
        min_free_disk: 64 << 20,
    };

    for path in ["insert_cycle", "store_cycle"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = store::open(dir.path()).expect("open");
        let held = readings::Held::default();
        let started = Instant::now();
        let cpu_started = thread_cpu();
        for readings_of_cycle in &prepared {
            match path {
                "insert_cycle" => {
                    readings::insert_cycle(
                        &mut conn,
                        readings_of_cycle,
                        readings::ClockQuality::Synced,
                        &boot,
                    )
                    .expect("insert");
                }
                _ => {
                    let cycle = readings::Cycle {
                        readings: readings_of_cycle.clone(),
                        clock: readings::ClockQuality::Synced,
                        boot: boot.clone(),
                    };
                    readings::store_cycle(&mut conn, &held, cycle, &limits, || {
                        readings::free_disk(dir.path())
                    })
                    .expect("store");
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = thread_cpu() - cpu_started;
        let stored = readings::counts(&conn).expect("counts").readings;
        assert_eq!(stored as usize, cycles * SENSORS);
        println!(
            "{path:>12}: {stored} readings in {cycles} transactions, {secs:.2} s ({cpu:.2} s CPU): \
             {:.0} readings/s, {:.0} cycles/s",
            stored as f64 / secs,
            cycles as f64 / secs
        );
    }
}

/// CPU time of this thread (the one writing), in seconds: steadier than wall time on
/// a shared machine, and what the agent's writer thread would spend.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
