//! Tests of the parent module.

use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::reading::Reading;
use crate::store::readings::{BootTime, ClockQuality, insert_cycle};

const T0_MS: i64 = 1_795_000_000_000;

fn boot() -> BootTime {
    BootTime {
        boot_id: "b1".into(),
        since_boot_ms: 1_000,
    }
}

/// A database with `n` readings of `sensors` sensors in turn, one second apart.
fn buffer(n: usize, sensors: usize) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::store::open(dir.path()).unwrap();
    let cycle: Vec<Reading> = (0..n)
        .map(|i| {
            let ts = Utc.timestamp_millis_opt(T0_MS + 1_000 * i as i64).unwrap();
            Reading::good(&format!("s{}", i % sensors), ts, i as f64, Some("degC"))
        })
        .collect();
    insert_cycle(&mut conn, &cycle, ClockQuality::Synced, &boot()).unwrap();
    (dir, conn)
}

fn kill(conn: &Connection, seqs: &[i64]) {
    for seq in seqs {
        conn.execute(
            "INSERT INTO dead_letter (seq, batch, status, response, dead_ms)
             VALUES (?1, 'gw:e:1-1', 422, 'no', 0)",
            [seq],
        )
        .unwrap();
    }
}

fn seqs(rows: &[StoredReading]) -> Vec<i64> {
    rows.iter().map(|r| r.seq).collect()
}

#[test]
fn stats_agree_with_counting_every_row() {
    let (_dir, conn) = buffer(50, 3);
    conn.execute("UPDATE readings SET acked_ms = 1 WHERE seq <= 20", [])
        .unwrap();
    kill(&conn, &[21, 22, 40]);
    conn.execute("DELETE FROM readings WHERE seq <= 5", [])
        .unwrap();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('dropped_total', '5')",
        [],
    )
    .unwrap();
    let stats = stats(&conn).unwrap();
    let count = |sql: &str| -> u64 {
        let n: i64 = conn.query_row(sql, [], |r| r.get(0)).unwrap();
        u64::try_from(n).unwrap()
    };
    assert_eq!(stats.pending, count("SELECT count(*) FROM pending"));
    assert_eq!(stats.pending, 27);
    assert_eq!(stats.uploaded, 15);
    assert_eq!(stats.dead_letter, 3);
    assert_eq!(stats.dropped_total, 5);
    assert_eq!(
        stats.oldest_pending.map(|t| t.timestamp_millis()),
        Some(T0_MS + 22_000),
        "seq 23, past the acknowledged ones and the two dead letters"
    );
    assert_eq!(stats.epoch, crate::store::epoch(&conn).unwrap());
    assert_eq!(stats.upload, UploadStatus::default());
    let path = Path::new(conn.path().unwrap());
    let wal = std::fs::metadata(format!("{}-wal", path.display()))
        .unwrap()
        .len();
    assert!(wal > 0, "the WAL holds the writes above");
    assert_eq!(
        stats.db_bytes,
        Some(std::fs::metadata(path).unwrap().len() + wal)
    );
}

#[test]
fn stats_of_an_empty_buffer_have_no_oldest_pending() {
    let dir = tempfile::tempdir().unwrap();
    let conn = crate::store::open(dir.path()).unwrap();
    let stats = stats(&conn).unwrap();
    assert_eq!(
        (stats.pending, stats.uploaded, stats.dead_letter),
        (0, 0, 0)
    );
    assert_eq!(stats.oldest_pending, None);
}

#[test]
fn stats_read_the_upload_status_where_the_uploader_left_one() {
    let (_dir, conn) = buffer(1, 1);
    conn.execute_batch(
        "INSERT INTO meta (key, value) VALUES
             ('upload_last_ok_ms', '1795000000000'),
             ('upload_last_error', 'HTTP 503 from https://ingest.example'),
             ('upload_paused', '0');",
    )
    .unwrap();
    let upload = stats(&conn).unwrap().upload;
    assert_eq!(upload.last_ok.map(|t| t.timestamp_millis()), Some(T0_MS));
    assert_eq!(
        upload.last_error.as_deref(),
        Some("HTTP 503 from https://ingest.example")
    );
    assert_eq!(upload.paused, None, "'0' is not paused");
    conn.execute(
        "UPDATE meta SET value = '401 Unauthorized' WHERE key = 'upload_paused'",
        [],
    )
    .unwrap();
    assert_eq!(
        stats(&conn).unwrap().upload.paused.as_deref(),
        Some("401 Unauthorized")
    );
}

/// The query plans that keep `stats` and `list --pending` fast on ten million rows.
#[test]
fn the_oldest_pending_and_newest_pending_come_from_the_partial_index() {
    let (_dir, conn) = buffer(3, 1);
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        rows.join("\n")
    };
    let oldest = plan(OLDEST_PENDING);
    assert!(oldest.contains("USING INDEX readings_pending"), "{oldest}");
    assert!(!oldest.contains("TEMP B-TREE"), "{oldest}");
    let newest = plan(&format!(
        "{SELECT} WHERE 1 AND {} ORDER BY r.seq DESC LIMIT 100",
        State::Pending.condition()
    ));
    assert!(newest.contains("readings_pending"), "{newest}");
    assert!(!newest.contains("TEMP B-TREE"), "{newest}");
}

#[test]
fn newest_filters_by_state_sensor_and_time_and_returns_oldest_first() {
    let (_dir, conn) = buffer(20, 2);
    conn.execute("UPDATE readings SET acked_ms = 1 WHERE seq <= 10", [])
        .unwrap();
    kill(&conn, &[11, 12]);
    let check = |filter: Filter, limit: u32, expected: &[i64]| {
        let rows = newest(&conn, &filter, limit).unwrap();
        assert_eq!(seqs(&rows), expected, "{filter:?} limit {limit}");
    };
    check(Filter::default(), 3, &[18, 19, 20]);
    check(Filter::default(), 100, &(1..=20).collect::<Vec<_>>());
    let pending = Filter {
        state: Some(State::Pending),
        ..Filter::default()
    };
    check(pending.clone(), 100, &(13..=20).collect::<Vec<_>>());
    check(
        Filter {
            state: Some(State::Dead),
            ..Filter::default()
        },
        100,
        &[11, 12],
    );
    check(
        Filter {
            state: Some(State::Uploaded),
            ..Filter::default()
        },
        2,
        &[9, 10],
    );
    // Sensor s1 has the even seqs (seq 1 is reading 0, of s0).
    check(
        Filter {
            sensors: vec!["s1".into()],
            ..pending.clone()
        },
        100,
        &[14, 16, 18, 20],
    );
    check(
        Filter {
            sensors: vec!["s1".into(), "s0".into()],
            ..Filter::default()
        },
        2,
        &[19, 20],
    );
    // seq n was taken at T0 + (n - 1) s: since includes, until excludes.
    check(
        Filter {
            since_ms: Some(T0_MS + 4_000),
            until_ms: Some(T0_MS + 7_000),
            ..Filter::default()
        },
        100,
        &[5, 6, 7],
    );
    let rows = newest(&conn, &Filter::default(), 100).unwrap();
    let states: Vec<State> = [1, 11, 13].iter().map(|&s| rows[s - 1].state).collect();
    assert_eq!(states, [State::Uploaded, State::Dead, State::Pending]);
}

/// Everything the pages hold, in order.
fn drain(conn: &Connection, pages: &mut Pages) -> Vec<StoredReading> {
    let mut all = Vec::new();
    while let Some(page) = pages.next_page(conn).unwrap() {
        assert!(!page.is_empty());
        all.extend(page);
    }
    all
}

#[test]
fn pages_cover_every_match_once_in_order_across_gaps() {
    let (_dir, conn) = buffer(1_000, 4);
    conn.execute(
        "DELETE FROM readings WHERE seq BETWEEN 100 AND 700 OR seq <= 3",
        [],
    )
    .unwrap();
    let mut pages = Pages::start(&conn, Filter::default(), 64).unwrap();
    let all = drain(&conn, &mut pages);
    let expected: Vec<i64> = (4..100).chain(701..=1_000).collect();
    assert_eq!(seqs(&all), expected);
    assert!(pages.next_page(&conn).unwrap().is_none(), "stays ended");

    let filter = Filter {
        sensors: vec!["s2".into()],
        since_ms: Some(T0_MS + 900_000),
        ..Filter::default()
    };
    let mut pages = Pages::start(&conn, filter.clone(), 7).unwrap();
    let filtered = drain(&conn, &mut pages);
    assert_eq!(filtered, newest(&conn, &filter, 1_000).unwrap());
    assert_eq!(filtered.len(), 25);
}

#[test]
fn an_export_ends_at_the_newest_reading_when_it_started() {
    let (_dir, mut conn) = buffer(10, 1);
    let mut pages = Pages::start(&conn, Filter::default(), 4).unwrap();
    let first = pages.next_page(&conn).unwrap().unwrap();
    assert_eq!(seqs(&first), [1, 2, 3, 4]);
    let more = vec![Reading::good("s0", wall(), 1.0, None); 5];
    insert_cycle(&mut conn, &more, ClockQuality::Synced, &boot()).unwrap();
    let rest = drain(&conn, &mut pages);
    assert_eq!(seqs(&rest), (5..=10).collect::<Vec<_>>());
}

fn wall() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(T0_MS).unwrap()
}

/// Between pages no read transaction is open: a writer can insert and truncate the
/// WAL, which it cannot do past a reader's snapshot.
#[test]
fn between_pages_the_wal_can_be_checkpointed_and_truncated() {
    let (dir, reader) = buffer(100, 1);
    let mut writer = crate::store::open(dir.path()).unwrap();
    writer.busy_timeout(Duration::from_millis(50)).unwrap();
    let mut pages = Pages::start(&reader, Filter::default(), 10).unwrap();
    let mut seen = 0;
    while let Some(page) = pages.next_page(&reader).unwrap() {
        seen += page.len();
        let cycle = [Reading::good("s0", wall(), 2.0, None)];
        insert_cycle(&mut writer, &cycle, ClockQuality::Synced, &boot()).unwrap();
        let (busy, log, checkpointed): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(
            (busy, log, checkpointed),
            (0, 0, 0),
            "after {seen} rows: no reader pins the WAL"
        );
    }
    assert_eq!(seen, 100);
}

#[test]
fn requeue_dead_makes_dead_letters_pending_again() {
    let (_dir, mut conn) = buffer(10, 1);
    kill(&conn, &[2, 3, 7]);
    let before = stats(&conn).unwrap();
    assert_eq!((before.pending, before.dead_letter), (7, 3));
    assert_eq!(
        before.oldest_pending.map(|t| t.timestamp_millis()),
        Some(T0_MS)
    );
    assert_eq!(requeue_dead(&mut conn).unwrap(), 3);
    let after = stats(&conn).unwrap();
    assert_eq!((after.pending, after.dead_letter), (10, 0));
    assert_eq!(requeue_dead(&mut conn).unwrap(), 0);
    let pending = Filter {
        state: Some(State::Pending),
        ..Filter::default()
    };
    assert_eq!(newest(&conn, &pending, 100).unwrap().len(), 10);
}

#[test]
fn requeue_forgets_open_batches_spanning_a_dead_letter_and_no_other() {
    let (_dir, mut conn) = buffer(10, 1);
    kill(&conn, &[5]);
    conn.execute_batch(
        "INSERT INTO batches (first_seq, last_seq, created_ms) VALUES (4, 6, 0), (7, 8, 0);",
    )
    .unwrap();
    requeue_dead(&mut conn).unwrap();
    let left: Vec<i64> = conn
        .prepare("SELECT first_seq FROM batches ORDER BY first_seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        left,
        vec![7],
        "the batch over seq 5 would change its readings"
    );
}
