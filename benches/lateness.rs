//! Fire lateness of the real scheduler with 1,000 jobs: 500 interval jobs (periods of
//! 1 to 59 s, so their wall-aligned grids coincide in irregular bursts) and 500 cron
//! jobs with seconds (each every minute, spread over the 60 seconds). Every run is a
//! built-in heartbeat recorded in a real `buffer.db`, as in production.
//!
//! Lateness is the run's start (wall clock, when its task began) minus its nominal due
//! time, read back from `job_runs`, in whole milliseconds.
//!
//! Run: `cargo bench --bench lateness [-- SECONDS [MAX_RUNNING]]` (defaults 120, 1000).
//! With a `max_running` below the largest burst of simultaneous fires, the tail of a
//! burst waits for free slots, and that wait is lateness too.
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tidegate::clock::{Clock, SystemClock};
use tidegate::config::ClockMode;
use tidegate::scheduler;
use tidegate::store::{self, StoreHandle};
use tokio_util::sync::CancellationToken;

fn config_text(state_dir: &std::path::Path, max_running: usize) -> String {
    let mut text = format!(
        "[agent]\nid = \"bench\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\nmax_running = {max_running}\n",
        state_dir.display()
    );
    for i in 0..500 {
        let _ = write!(
            text,
            "\n[jobs.every-{i}]\nkind = \"heartbeat\"\nevery = \"{}s\"\n",
            1 + i % 59
        );
    }
    for i in 0..500 {
        let _ = write!(
            text,
            "\n[jobs.cron-{i}]\nkind = \"heartbeat\"\ncron = \"{} * * * * *\"\n",
            i % 60
        );
    }
    text
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let numbers: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let seconds = numbers.first().copied().unwrap_or(120);
    let max_running = numbers.get(1).copied().unwrap_or(1000) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tidegate::config::parse_str(&config_text(dir.path(), max_running), "bench.toml")
        .expect("bench config is valid");
    assert_eq!(config.jobs.len(), 1004, "1000 jobs and the four built-ins");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = StoreHandle::spawn(store::open(dir.path()).expect("store"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(ClockMode::Trusted));
        let shutdown = CancellationToken::new();
        let (_handle, task) =
            scheduler::spawn(Arc::new(config), clock, store.clone(), shutdown.clone())
                .await
                .expect("scheduler");
        println!("1,000 jobs, max_running = {max_running}, for {seconds} s");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        shutdown.cancel();
        task.await.expect("scheduler task");
        let runs: Vec<(i64, String, i64)> = store
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT started_ms - nominal_ms, job, nominal_ms FROM job_runs
                     WHERE nominal_ms IS NOT NULL
                       AND job NOT IN ('heartbeat', 'sample', 'upload', 'cleanup')
                     ORDER BY 1 DESC",
                )?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .expect("read runs");
        // The latest fires, grouped by due time: which bursts were late, and how big.
        let mut worst: Vec<i64> = Vec::new();
        for (_, _, nominal) in &runs {
            if worst.len() == 5 {
                break;
            }
            if !worst.contains(nominal) {
                worst.push(*nominal);
            }
        }
        for nominal in &worst {
            let burst: Vec<i64> = runs
                .iter()
                .filter(|r| r.2 == *nominal)
                .map(|r| r.0)
                .collect();
            let due = tidegate::time::from_millis(*nominal).map(tidegate::time::format_utc);
            println!(
                "late up to {} ms: {} fires due {}",
                burst.iter().max().unwrap_or(&0),
                burst.len(),
                due.unwrap_or_default()
            );
        }
        let mut late: Vec<i64> = runs.iter().map(|r| r.0).collect();
        late.sort_unstable();
        let n = late.len();
        println!("fires measured: {n} (history keeps the last 50 per job)");
        println!(
            "lateness ms: p50 {}  p90 {}  p99 {}  max {}",
            percentile(&late, 50.0),
            percentile(&late, 90.0),
            percentile(&late, 99.0),
            late[n - 1]
        );
    });
}
