//! `tidegate buffer stats` on a ten-million-row buffer.
//!
//! Builds `buffer.db` through the store's own opener (schema, triggers, the partial
//! pending index) and fills it with a recursive CTE, a million rows a transaction, as
//! a gateway that has been offline for a long while would hold it: 32 sensors every
//! 5 minutes, the oldest 90 % acknowledged, the first 100 of the pending readings
//! dead-lettered, so the oldest pending reading is found past nine million uploaded
//! rows and a hundred dead letters. The WAL is then truncated, as the agent's
//! checkpoints keep it.
//!
//! Then it times what the command does, warm: the library (open the existing
//! database, `query_only`, `inspect::stats`) and the real binary end to end (process
//! start, config, the same calls, output), each over RUNS runs; and once, for scale,
//! counting the pending rows instead. Last, one export of every row in each format to
//! /dev/null, with the largest resident set it reached.
//!
//! Run: `cargo bench --bench buffer_stats [-- ROWS [RUNS]]` (defaults 10000000, 21).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidegate::store::{self, inspect};

const SENSORS: u64 = 32;
const EVERY_MS: u64 = 300_000;
const DEAD: u64 = 100;
const START_MS: u64 = 1_700_000_000_000;

fn build(state_dir: &std::path::Path, rows: u64) {
    let conn = store::open(state_dir).expect("create buffer.db");
    let acked = rows / 10 * 9;
    let step = 1_000_000u64;
    let mut from = 1;
    while from <= rows {
        let to = (from + step - 1).min(rows);
        conn.execute_batch(&format!(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to})
             INSERT INTO readings
                 (sensor, ts, value, unit, quality, clock, error, boot_id, boot_ms, acked_ms)
             SELECT 'pond' || (i % {SENSORS}) || '.do',
                    {START_MS} + (i / {SENSORS}) * {EVERY_MS},
                    CASE WHEN i % 997 = 0 THEN NULL ELSE 7.0 + (i % 100) / 50.0 END,
                    'mg/L',
                    CASE WHEN i % 997 = 0 THEN 'bad' ELSE 'good' END,
                    'synced',
                    CASE WHEN i % 997 = 0 THEN 'slave 3: no answer within 500ms' END,
                    'bench-boot', i * 1000,
                    CASE WHEN i <= {acked} THEN {START_MS} + i END
             FROM n;
             COMMIT;"
        ))
        .expect("insert rows");
        from = to + 1;
    }
    conn.execute_batch(&format!(
        "INSERT INTO dead_letter (seq, batch, status, response, dead_ms)
         SELECT seq, 'bench:e:' || seq || '-' || seq, 422, 'unknown sensor', 0
         FROM readings WHERE acked_ms IS NULL ORDER BY seq LIMIT {DEAD};
         INSERT INTO meta (key, value) VALUES ('dropped_total', '0');
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .expect("dead letters");
}

fn summary(name: &str, mut times: Vec<Duration>) {
    let first = times[0];
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!(
        "{name:<28} median {:>7.2} ms   max {:>7.2} ms   first {:>7.2} ms   ({} runs)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        ms(first),
        times.len()
    );
}

fn main() {
    let numbers: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let rows = numbers.first().copied().unwrap_or(10_000_000);
    let runs = numbers.get(1).copied().unwrap_or(21).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");

    let started = Instant::now();
    build(&state_dir, rows);
    let db = state_dir.join(store::DB_FILE);
    let bytes = std::fs::metadata(&db).expect("buffer.db").len();
    println!(
        "built {rows} rows in {:.1} s: buffer.db {:.1} MiB",
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1_048_576.0
    );

    let mut times = Vec::new();
    let mut stats = None;
    for _ in 0..runs {
        let t = Instant::now();
        let conn = store::open_existing(&state_dir).expect("open buffer.db");
        conn.pragma_update(None, "query_only", true)
            .expect("query_only");
        stats = Some(inspect::stats(&conn).expect("stats"));
        drop(conn);
        times.push(t.elapsed());
    }
    let stats = stats.expect("at least one run");
    let acked = rows / 10 * 9;
    assert_eq!(stats.uploaded, acked);
    assert_eq!(stats.dead_letter, DEAD.min(rows - acked));
    assert_eq!(stats.pending, rows - acked - stats.dead_letter);
    if stats.pending > 0 {
        let oldest = (acked + DEAD + 1) / SENSORS * EVERY_MS + START_MS;
        assert_eq!(
            stats.oldest_pending.map(|t| t.timestamp_millis()),
            Some(i64::try_from(oldest).expect("ms"))
        );
    }
    println!(
        "pending {}, uploaded {}, dead letter {}, oldest pending {:?}",
        stats.pending, stats.uploaded, stats.dead_letter, stats.oldest_pending
    );
    summary("library: open + stats", times);

    // For scale: what the same figures cost by counting rows, as stats must not.
    let conn = store::open_existing(&state_dir).expect("open buffer.db");
    let t = Instant::now();
    let counted: i64 = conn
        .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
        .expect("count");
    let elapsed = t.elapsed();
    assert_eq!(u64::try_from(counted).ok(), Some(stats.pending));
    println!(
        "{:<28} {:>14.2} ms   (once, for comparison)",
        "count(*) FROM pending",
        elapsed.as_secs_f64() * 1_000.0
    );
    drop(conn);

    let config = dir.path().join("tidegate.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"bench\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\n",
            state_dir.display()
        ),
    )
    .expect("config");
    for json in [false, true] {
        let mut times = Vec::new();
        for _ in 0..runs {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
            cmd.args(["buffer", "stats", "--config"]).arg(&config);
            if json {
                cmd.arg("--json");
            }
            let t = Instant::now();
            let status = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status()
                .expect("run tidegate");
            times.push(t.elapsed());
            assert!(status.success(), "tidegate buffer stats failed");
        }
        let name = if json {
            "binary: buffer stats --json"
        } else {
            "binary: buffer stats"
        };
        summary(name, times);
    }

    // The export streams: its time grows with the rows, its memory does not.
    for format in ["csv", "jsonl"] {
        let t = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["buffer", "export", "--format", format, "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .status()
            .expect("run tidegate");
        assert!(status.success(), "tidegate buffer export failed");
        println!(
            "{:<28} {:>11.1} s   peak RSS of any child so far {} KiB",
            format!("binary: export --format {format}"),
            t.elapsed().as_secs_f64(),
            children_max_rss_kib()
        );
    }
}

/// The largest resident set of any child process waited for so far.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return -1;
    }
    usage.ru_maxrss
}
