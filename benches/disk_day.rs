//! Bytes written to the card in a day at the default schedule with 24 sensors.
//!
//! The real scheduler, jobs and database writer run a simulated day on a paused
//! tokio clock moved on a second at a time (so a day takes seconds; a task that only
//! yields keeps the runtime from skipping ahead on its own while a job waits for the
//! writer thread): heartbeat every 30 s, sample every 5 min
//! (24 simulated sensors), upload every hour, cleanup at 03:30. The server is stood in
//! for by acknowledging every pending reading at each hour, as a delivered batch
//! does, so the day's writes include acknowledgements and retention. The figures
//! are this process's `/proc/self/io`: `wchar`, the bytes handed to write(2) (WAL
//! frames, checkpoints, logs: there are none, logging is off; but also the 8-byte
//! wake-ups of the runtime's eventfd, about 2.7 MiB a day of this second-by-second
//! loop, which never reach a disk), and `write_bytes`, what the kernel sent to the
//! block device on its behalf: the figure for the card. Day 1 grows the file; day 2
//! is the steady state, with the first day's pages reused.
//!
//! Run: `cargo bench --bench disk_day [-- DAYS [JOB...]]` (default 2 days); the jobs
//! named after DAYS are disabled, to see what each of the others writes
//! (`-- 2 sample upload cleanup` leaves the heartbeat alone).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::sync::Arc;
use std::time::Duration;

use tidegate::clock::{Clock, TestClock};
use tidegate::store::{self, StoreHandle};

fn io() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

fn main() {
    // `cargo bench` passes `--bench`: options are not ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let days: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let disabled: Vec<&String> = args.iter().filter(|a| a.parse::<u64>().is_err()).collect();
    let dir = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("temp dir");
    let mut text = format!(
        "[agent]\nid = \"bench\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n",
        dir.path().display()
    );
    for i in 0..24 {
        text.push_str(&format!(
            "[[sensor]]\nid = \"pond{}.s{}\"\nbus = \"sim\"\nunit = \"mg/L\"\n\
             model = {{ base = 7.5, amplitude = 1.5, period = \"24h\", noise = 0.05 }}\n",
            i / 4,
            i % 4
        ));
    }
    for job in &disabled {
        text.push_str(&format!("[jobs.{job}]\nenabled = false\n"));
    }
    if !disabled.is_empty() {
        println!("disabled: {disabled:?}");
    }
    let config = Arc::new(tidegate::config::parse_str(&text, "bench.toml").expect("config"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let clock = TestClock::at(2026, 11, 23, 0, 0, 0, true);
        let store = StoreHandle::spawn(store::open(dir.path()).expect("open"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (_handle, task) = tidegate::scheduler::spawn(
            config,
            Arc::new(clock.clone()),
            store.clone(),
            shutdown.clone(),
        )
        .await
        .expect("scheduler");
        // Never idle, so the paused clock moves only when advanced below.
        tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        for day in 1..=days {
            let (w0, b0) = io();
            for _hour in 0..24 {
                for _ in 0..3600 {
                    tokio::time::advance(Duration::from_secs(1)).await;
                    // Let the second's runs reach the writer, and the writer finish them.
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                        store.call(|_| Ok(())).await.expect("writer");
                    }
                }
                let now = clock.now().wall.timestamp_millis();
                store
                    .call(move |c| {
                        c.execute(
                            "UPDATE readings SET acked_ms = ?1 WHERE acked_ms IS NULL",
                            [now],
                        )?;
                        Ok(())
                    })
                    .await
                    .expect("ack");
            }
            // Let the writer finish what the day queued before reading the counters.
            let (rows, pages): (i64, i64) = store
                .call(|c| {
                    Ok(c.query_row(
                        "SELECT (SELECT count(*) FROM readings), page_count FROM pragma_page_count()",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .await
                .expect("count");
            let (w1, b1) = io();
            println!(
                "day {day}: wchar {:.1} MiB, write_bytes {:.1} MiB; {rows} readings kept, database {} pages ({:.1} MiB)",
                (w1 - w0) as f64 / 1048576.0,
                (b1 - b0) as f64 / 1048576.0,
                pages,
                pages as f64 * 4096.0 / 1048576.0
            );
        }
        let runs: Vec<(String, i64)> = store
            .call(|c| {
                let mut stmt = c.prepare("SELECT name, runs FROM job_state ORDER BY name")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .expect("runs");
        println!("runs: {runs:?}");
        shutdown.cancel();
        task.await.expect("scheduler task");
    });
}
