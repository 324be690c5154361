//! `tidegate buffer …` end to end: the real binary on a `buffer.db` filled through the
//! library as the agent fills it, with SQL for what the uploader would record
//! (acknowledgements, dead letters, drops).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use serde_json::{Value, json};
use tidegate::reading::Reading;
use tidegate::store::{self, readings};
use tidegate::time::format_utc;

use crate::support::agent::{Site, binary, path_str};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap()
}

/// Stores `cycle` in the site's buffer as one sampling cycle; the connection stays
/// open for the caller's SQL.
fn store_cycle(site: &Site, cycle: &[Reading]) -> Connection {
    let mut conn = store::open(&site.state_dir()).unwrap();
    let boot = readings::BootTime {
        boot_id: "boot-1".into(),
        since_boot_ms: 5_000,
    };
    readings::insert_cycle(&mut conn, cycle, readings::ClockQuality::Synced, &boot).unwrap();
    conn
}

/// `n` good readings of pond1.do, a second apart from t0.
fn numbered(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| {
            let ts = t0() + chrono::Duration::seconds(i as i64);
            Reading::good("pond1.do", ts, i as f64 / 100.0, Some("mg/L"))
        })
        .collect()
}

/// The uploader's acknowledgement of `seqs`.
fn ack(conn: &Connection, seqs: std::ops::RangeInclusive<i64>) {
    conn.execute(
        "UPDATE readings SET acked_ms = ?3 WHERE seq BETWEEN ?1 AND ?2",
        [*seqs.start(), *seqs.end(), t0().timestamp_millis()],
    )
    .unwrap();
}

/// The uploader isolating `seqs` as refused by the server.
fn dead(conn: &Connection, seqs: &[i64]) {
    for seq in seqs {
        conn.execute(
            "INSERT INTO dead_letter (seq, batch, status, response, dead_ms)
             VALUES (?1, 'test-gw:e:' || ?1 || '-' || ?1, 422, 'unknown sensor', 0)",
            [seq],
        )
        .unwrap();
    }
}

fn json_of(site: &Site, args: &[&str]) -> Value {
    let (code, out, err) = site.cli(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}:\n{out}"))
}

fn stats(site: &Site) -> Value {
    json_of(site, &["buffer", "stats", "--json"])
}

/// The seqs `buffer list --json` prints with these extra flags.
fn listed(site: &Site, flags: &[&str]) -> Vec<i64> {
    let args: Vec<&str> = ["buffer", "list", "--json"]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    json_of(site, &args)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect()
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn stats_json_is_one_object_with_every_figure_of_the_buffer() {
    let site = Site::new("");
    let conn = store_cycle(&site, &numbered(10));
    ack(&conn, 1..=3);
    dead(&conn, &[4, 5]);
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('dropped_total', '7')",
        [],
    )
    .unwrap();
    let stats = stats(&site);
    let mut keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "db_bytes",
            "dead_letter",
            "dropped_total",
            "epoch",
            "oldest_pending_ts",
            "pending",
            "uploaded"
        ]
    );
    assert_eq!(stats["pending"], 5, "{stats}");
    assert_eq!(stats["uploaded"], 3);
    assert_eq!(stats["dead_letter"], 2);
    assert_eq!(stats["dropped_total"], 7);
    // seq 6: past the acknowledged 1-3 and the dead 4 and 5.
    assert_eq!(stats["oldest_pending_ts"], "2026-11-23T01:00:05.000Z");
    assert_eq!(stats["epoch"], store::epoch(&conn).unwrap());
    // This connection stays open, so the WAL is neither checkpointed nor removed.
    let db = site.state_dir().join("buffer.db");
    let wal = file_len(&site.state_dir().join("buffer.db-wal"));
    assert!(wal > 0);
    assert_eq!(stats["db_bytes"], file_len(&db) + wal);

    let (code, out, _) = site.cli(&["buffer", "stats"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("pending      5, oldest 2026-11-23T01:00:05.000Z ("),
        "{out}"
    );
    assert!(out.contains("\ndead letter  2\ndropped      7\n"), "{out}");
}

#[test]
fn stats_of_a_buffer_without_pending_readings_has_a_null_oldest() {
    let site = Site::new("");
    let conn = store_cycle(&site, &numbered(2));
    ack(&conn, 1..=2);
    let stats = stats(&site);
    assert_eq!(stats["pending"], 0);
    assert_eq!(stats["uploaded"], 2);
    assert_eq!(stats["oldest_pending_ts"], Value::Null);
}

#[test]
fn list_filters_by_state_sensor_time_and_limit() {
    let site = Site::new("");
    // Two sensors, one reading each at 5, 4, 3, 2 and 1 hours ago: seqs 1-10, pond1.do
    // odd, pond1.temp even.
    let now = tidegate::clock::wall_now();
    let hours_ago = |h: i64| now - chrono::Duration::hours(h);
    let mut cycle = Vec::new();
    for h in (1..=5).rev() {
        cycle.push(Reading::good("pond1.do", hours_ago(h), 8.0, Some("mg/L")));
        cycle.push(Reading::good(
            "pond1.temp",
            hours_ago(h),
            20.0,
            Some("degC"),
        ));
    }
    let conn = store_cycle(&site, &cycle);
    ack(&conn, 1..=4);
    let three_hours_ago = format_utc(hours_ago(3));

    assert_eq!(listed(&site, &[]), (1..=10).collect::<Vec<_>>());
    assert_eq!(listed(&site, &["--pending"]), [5, 6, 7, 8, 9, 10]);
    assert_eq!(listed(&site, &["--sensor", "pond1.do"]), [1, 3, 5, 7, 9]);
    assert_eq!(
        listed(&site, &["--sensor", "pond1.do", "--sensor", "pond1.temp"]).len(),
        10
    );
    assert_eq!(listed(&site, &["--sensor", "pond9.ph"]), [0; 0]);
    assert_eq!(listed(&site, &["--since", "2h30m"]), [7, 8, 9, 10]);
    assert_eq!(
        listed(&site, &["--since", &three_hours_ago]),
        [5, 6, 7, 8, 9, 10],
        "--since includes its time"
    );
    assert_eq!(listed(&site, &["--until", "2h30m"]), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        listed(&site, &["--until", &three_hours_ago]),
        [1, 2, 3, 4],
        "--until excludes its time"
    );
    assert_eq!(
        listed(&site, &["--since", "4h30m", "--until", "1h30m"]),
        [3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        listed(&site, &["--limit", "3"]),
        [8, 9, 10],
        "the newest, oldest first"
    );
    assert_eq!(
        listed(
            &site,
            &["--pending", "--sensor", "pond1.temp", "--limit", "2"]
        ),
        [8, 10]
    );

    let (code, out, err) = site.cli(&["buffer", "list", "--sensor", "pond1.do", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("SEQ  TIME                      SENSOR    VALUE  UNIT  QUALITY"),
        "{out}"
    );
    assert!(lines[1].starts_with("7    "), "{out}");
    assert!(lines[2].contains("  pond1.do  8      mg/L  good     synced  pending  -"));
    assert!(err.contains("older ones left out"), "{err}");
}

#[test]
fn list_json_is_an_array_of_readings_with_the_upload_fields() {
    let site = Site::new("");
    let conn = store_cycle(
        &site,
        &[
            Reading::good("pond7.do", t0(), 7.83, Some("mg/L")),
            Reading::bad(
                "pond7.temp",
                t0(),
                Some("degC"),
                "slave 3: no answer within 500ms",
            ),
            Reading::good("pond7.ph", t0(), 7.2, None),
            Reading::good("pond7.orp", t0(), 412.0, Some("mV")),
        ],
    );
    ack(&conn, 3..=3);
    dead(&conn, &[4]);
    let list = json_of(&site, &["buffer", "list", "--json"]);
    assert_eq!(
        list,
        json!([
            {"seq": 1, "sensor": "pond7.do", "ts": "2026-11-23T01:00:00.000Z", "value": 7.83,
             "unit": "mg/L", "quality": "good", "clock": "synced", "state": "pending"},
            {"seq": 2, "sensor": "pond7.temp", "ts": "2026-11-23T01:00:00.000Z", "value": null,
             "unit": "degC", "quality": "bad", "clock": "synced",
             "error": "slave 3: no answer within 500ms", "state": "pending"},
            {"seq": 3, "sensor": "pond7.ph", "ts": "2026-11-23T01:00:00.000Z", "value": 7.2,
             "unit": null, "quality": "good", "clock": "synced", "state": "uploaded"},
            {"seq": 4, "sensor": "pond7.orp", "ts": "2026-11-23T01:00:00.000Z", "value": 412.0,
             "unit": "mV", "quality": "good", "clock": "synced", "state": "dead"},
        ])
    );
    assert_eq!(listed(&site, &["--dead"]), [4]);
    assert_eq!(listed(&site, &["--pending"]), [1, 2]);
}

/// Readings whose text needs every kind of CSV quoting.
fn awkward(site: &Site) -> Connection {
    store_cycle(
        site,
        &[
            Reading::good("pond7.do", t0(), 7.83, Some("mg/L")),
            Reading::bad(
                "pond7.temp",
                t0(),
                Some("degC"),
                r#"slave 3: "no answer", retried"#,
            ),
            Reading::good("pond,7", t0(), -0.5, None),
            Reading::bad("pond7.ph", t0(), None, "line one\nline two"),
        ],
    )
}

#[test]
fn export_csv_has_the_header_and_quotes_byte_for_byte() {
    let site = Site::new("");
    let _conn = awkward(&site);
    let (code, out, err) = site.cli(&["buffer", "export", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    assert_eq!(
        out,
        "seq,sensor,ts,value,unit,quality,clock,error\n\
         1,pond7.do,2026-11-23T01:00:00.000Z,7.83,mg/L,good,synced,\n\
         2,pond7.temp,2026-11-23T01:00:00.000Z,,degC,bad,synced,\"slave 3: \"\"no answer\"\", retried\"\n\
         3,\"pond,7\",2026-11-23T01:00:00.000Z,-0.5,,good,synced,\n\
         4,pond7.ph,2026-11-23T01:00:00.000Z,,,bad,synced,\"line one\nline two\"\n"
    );
}

#[test]
fn export_jsonl_is_one_list_json_object_a_line() {
    let site = Site::new("");
    let conn = awkward(&site);
    dead(&conn, &[2]);
    let (code, out, err) = site.cli(&["buffer", "export", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with('\n'));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let list = json_of(&site, &["buffer", "list", "--json"]);
    assert_eq!(Value::Array(lines), list);
    assert_eq!(list[1]["state"], "dead");
}

#[test]
fn export_filters_by_time() {
    let site = Site::new("");
    let _conn = store_cycle(&site, &numbered(10));
    let since = format_utc(t0() + chrono::Duration::seconds(3));
    let until = format_utc(t0() + chrono::Duration::seconds(6));
    let (code, out, err) = site.cli(&[
        "buffer", "export", "--format", "csv", "--since", &since, "--until", &until,
    ]);
    assert_eq!(code, 0, "{err}");
    let seqs: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(seqs, ["4", "5", "6"]);
    let (code, out, _) = site.cli(&["buffer", "export", "--format", "csv", "--since", "1h"]);
    assert_eq!(code, 0);
    assert_eq!(out, "seq,sensor,ts,value,unit,quality,clock,error\n");
}

#[test]
fn export_out_writes_the_whole_file_through_a_temporary() {
    let site = Site::new("");
    let _conn = awkward(&site);
    let file = site.dir.path().join("readings.csv");
    let (code, out, err) = site.cli(&[
        "buffer",
        "export",
        "--format",
        "csv",
        "--out",
        &path_str(&file),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("4 readings written to {}\n", file.display()));
    let (_, stdout_export, _) = site.cli(&["buffer", "export", "--format", "csv"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stdout_export);
    assert!(!site.dir.path().join("readings.csv.tmp").exists());

    let nowhere = site.dir.path().join("no-such-dir").join("readings.csv");
    let (code, out, err) = site.cli(&[
        "buffer",
        "export",
        "--format",
        "jsonl",
        "--out",
        &path_str(&nowhere),
    ]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-dir/readings.csv.tmp"), "{err}");
}

#[test]
fn export_into_a_reader_that_goes_away_ends_quietly() {
    let site = Site::new("");
    // About 1.5 MB of CSV: far more than a pipe holds, so the export is still
    // writing when the reader goes.
    let _conn = store_cycle(&site, &numbered(20_000));
    let mut child = Command::new(binary())
        .args(["buffer", "export", "--format", "csv", "--config"])
        .arg(site.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "seq,sensor,ts,value,unit,quality,clock,error\n");
    // The reader is dropped here, like `head -n 1` exiting.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn requeue_dead_puts_dead_letters_back_in_the_queue() {
    let site = Site::new("");
    let conn = store_cycle(&site, &numbered(6));
    ack(&conn, 1..=1);
    dead(&conn, &[2, 3, 5]);
    let before = stats(&site);
    assert_eq!(
        (&before["pending"], &before["dead_letter"]),
        (&json!(2), &json!(3))
    );
    assert_eq!(before["oldest_pending_ts"], "2026-11-23T01:00:03.000Z");

    let (code, out, err) = site.cli(&["buffer", "requeue-dead"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "requeued 3 dead-letter readings\n");
    let after = stats(&site);
    assert_eq!(
        (&after["pending"], &after["dead_letter"]),
        (&json!(5), &json!(0))
    );
    assert_eq!(after["oldest_pending_ts"], "2026-11-23T01:00:01.000Z");
    assert_eq!(listed(&site, &["--pending"]), [2, 3, 4, 5, 6]);
    assert_eq!(
        site.cli(&["buffer", "requeue-dead"]).1,
        "no dead-letter readings to requeue\n"
    );
}

#[test]
fn a_missing_database_is_one_line_naming_it_and_is_not_created() {
    let site = Site::new("");
    let db = site.state_dir().join("buffer.db");
    for args in [
        &["buffer", "stats"][..],
        &["buffer", "stats", "--json"],
        &["buffer", "list"],
        &["buffer", "export", "--format", "csv"],
        &["buffer", "requeue-dead"],
    ] {
        let (code, out, err) = site.cli(args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(
            err,
            format!(
                "tidegate: no database at {}: the agent has stored nothing with this state_dir\n",
                db.display()
            ),
            "{args:?}"
        );
    }
    assert!(!site.state_dir().exists(), "nothing was created");
}

#[test]
fn bad_flags_and_bad_config_exit_2() {
    // Flags are checked first: no database is needed to refuse them.
    let site = Site::new("");
    let (code, out, err) = site.cli(&["buffer", "list", "--since", "yesterday"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tidegate: --since: invalid time \"yesterday\": expected RFC 3339"),
        "{err}"
    );
    let (code, _, err) = site.cli(&[
        "buffer",
        "export",
        "--format",
        "csv",
        "--until",
        "2026-13-01",
    ]);
    assert_eq!(code, 2);
    assert!(err.starts_with("tidegate: --until: invalid time"), "{err}");
    let (code, _, err) = site.cli(&["buffer", "list", "--since", "1h", "--until", "2h"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not before --until"), "{err}");
    assert_eq!(site.cli(&["buffer", "list", "--limit", "0"]).0, 2);
    assert_eq!(site.cli(&["buffer", "export"]).0, 2, "--format is required");
    assert_eq!(site.cli(&["buffer", "export", "--format", "xml"]).0, 2);

    site.write_raw("[agent]\nid = \"pond 7\"\n");
    let (code, _, err) = site.cli(&["buffer", "stats"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!("{}:2: agent.id: ", path_str(&site.config()))),
        "{err}"
    );
}

#[test]
fn commands_work_while_another_connection_holds_a_write_transaction() {
    let site = Site::new("");
    let conn = store_cycle(&site, &numbered(5));
    dead(&conn, &[1, 2]);
    drop(conn);
    let (held_tx, held) = std::sync::mpsc::channel();
    let state_dir = site.state_dir();
    let writer = std::thread::spawn(move || {
        let conn = store::open(&state_dir).unwrap();
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO readings (sensor, ts, value, unit, quality, clock, boot_id, boot_ms)
             VALUES ('pond1.do', 0, 1.0, 'mg/L', 'good', 'synced', 'b', 0);",
        )
        .unwrap();
        held_tx.send(Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(1_500));
        conn.execute_batch("COMMIT").unwrap();
    });
    let since = held.recv().unwrap();

    // Readers are not held up by the writer, and see what was committed before it.
    let stats = stats(&site);
    assert_eq!(
        (&stats["pending"], &stats["dead_letter"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(listed(&site, &[]), [1, 2, 3, 4, 5]);
    let (code, _, err) = site.cli(&["buffer", "export", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        since.elapsed() < Duration::from_millis(1_500),
        "readers waited"
    );

    // requeue-dead needs the write lock: it waits for it, within the busy timeout.
    let (code, out, err) = site.cli(&["buffer", "requeue-dead"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "requeued 2 dead-letter readings\n");
    assert!(since.elapsed() >= Duration::from_millis(1_500));
    writer.join().unwrap();
    let stats = self::stats(&site);
    assert_eq!(
        (&stats["pending"], &stats["dead_letter"]),
        (&json!(6), &json!(0))
    );
}
