//! Tests of the parent module.

use chrono::TimeZone;

use super::*;
use crate::reading::Reading;
use crate::store::readings::{self, insert_cycle};

const NOW_MS: i64 = 1_795_395_600_000;

fn boot(id: &str, since_boot_ms: i64) -> BootTime {
    BootTime {
        boot_id: id.into(),
        since_boot_ms,
    }
}

/// A fresh database in a directory kept as long as it is.
fn db() -> (Connection, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (crate::store::open(dir.path()).unwrap(), dir)
}

/// Stores `n` good readings, one cycle, with the given clock and boot.
fn store(conn: &mut Connection, n: usize, clock: ClockQuality, taken: &BootTime) {
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    let cycle: Vec<Reading> = (0..n)
        .map(|i| {
            Reading::good(
                &format!("pond{}.do", i % 3),
                ts,
                7.0 + i as f64,
                Some("mg/L"),
            )
        })
        .collect();
    insert_cycle(conn, &cycle, clock, taken).unwrap();
}

fn seqs(batch: &Batch) -> Vec<i64> {
    batch.readings.iter().map(|r| r.seq).collect()
}

fn batch(next: Next) -> Batch {
    match next {
        Next::Batch(b) => b,
        other => panic!("expected a batch, got {other:?}"),
    }
}

fn recorded(conn: &Connection) -> Vec<(i64, i64)> {
    conn.prepare("SELECT first_seq, last_seq FROM batches ORDER BY first_seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const NOW_BOOT: &str = "this-boot";

fn here() -> BootTime {
    boot(NOW_BOOT, 10 * HOLD_BACK_MS)
}

#[test]
fn a_batch_is_recorded_when_formed_and_comes_back_unchanged_until_acknowledged() {
    let (mut conn, _dir) = db();
    store(&mut conn, 7, ClockQuality::Synced, &here());
    let first = batch(next_batch(&mut conn, 3, &here(), NOW_MS).unwrap());
    assert_eq!((first.first_seq, first.last_seq, first.attempts), (1, 3, 0));
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(
        recorded(&conn),
        [(1, 3)],
        "recorded before anything is sent"
    );
    let created: i64 = conn
        .query_row("SELECT created_ms FROM batches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(created, NOW_MS);

    // Newer readings and a larger size change nothing: the open batch comes back.
    store(&mut conn, 2, ClockQuality::Synced, &here());
    let again = batch(next_batch(&mut conn, 100, &here(), NOW_MS + 1).unwrap());
    assert_eq!(again, first);

    assert_eq!(acknowledge(&mut conn, 1, 3, NOW_MS + 5).unwrap(), 3);
    assert!(recorded(&conn).is_empty());
    let acked: Vec<Option<i64>> = conn
        .prepare("SELECT acked_ms FROM readings ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        acked[..4],
        [Some(NOW_MS + 5), Some(NOW_MS + 5), Some(NOW_MS + 5), None]
    );
    assert_eq!(readings::pending_count(&conn).unwrap(), 6);

    let next = batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    assert_eq!(seqs(&next), [4, 5, 6, 7, 8, 9]);
    acknowledge(&mut conn, 4, 9, NOW_MS).unwrap();
    assert_eq!(
        next_batch(&mut conn, 100, &here(), NOW_MS).unwrap(),
        Next::Empty
    );
}

#[test]
fn readings_come_out_as_stored_and_share_their_sensor_names() {
    let (mut conn, _dir) = db();
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    let cycle = vec![
        Reading::good("pond7.do", ts, 7.83, Some("mg/L")),
        Reading::bad("pond7.do", ts, None, "slave 3: no answer within 500ms"),
    ];
    insert_cycle(&mut conn, &cycle, ClockQuality::Corrected, &here()).unwrap();
    let b = batch(next_batch(&mut conn, 10, &here(), NOW_MS).unwrap());
    let good = &b.readings[0];
    assert_eq!(
        (good.seq, &*good.sensor, good.ts_ms, good.value),
        (1, "pond7.do", ts.timestamp_millis(), Some(7.83))
    );
    assert_eq!(good.unit.as_deref(), Some("mg/L"));
    assert_eq!(
        (good.quality, good.clock, &good.error),
        (Quality::Good, ClockQuality::Corrected, &None)
    );
    let bad = &b.readings[1];
    assert_eq!(
        (bad.value, bad.unit.clone(), bad.quality),
        (None, None, Quality::Bad)
    );
    assert_eq!(
        bad.error.as_deref(),
        Some("slave 3: no answer within 500ms")
    );
    assert!(
        Arc::ptr_eq(&good.sensor, &bad.sensor),
        "one copy per sensor"
    );
}

#[test]
fn correctable_readings_are_held_back_and_stop_the_batch_before_them() {
    let (mut conn, _dir) = db();
    let now = here();
    // 1-2 synced, 3-4 unsynced in this boot ten minutes ago, 5 synced.
    store(&mut conn, 2, ClockQuality::Synced, &now);
    let young = boot(NOW_BOOT, now.since_boot_ms - 600_000);
    store(&mut conn, 2, ClockQuality::Unsynced, &young);
    store(&mut conn, 1, ClockQuality::Synced, &now);

    let b = batch(next_batch(&mut conn, 100, &now, NOW_MS).unwrap());
    assert_eq!(
        seqs(&b),
        [1, 2],
        "the batch ends before the first held-back reading"
    );
    acknowledge(&mut conn, 1, 2, NOW_MS).unwrap();
    assert_eq!(
        next_batch(&mut conn, 100, &now, NOW_MS).unwrap(),
        Next::HeldBack { seq: 3 }
    );
    assert!(
        recorded(&conn).is_empty(),
        "nothing recorded for held-back readings"
    );

    // An hour after they were taken they go as they are.
    let later = boot(NOW_BOOT, young.since_boot_ms + HOLD_BACK_MS);
    let b = batch(next_batch(&mut conn, 100, &later, NOW_MS).unwrap());
    assert_eq!(seqs(&b), [3, 4, 5]);
    assert_eq!(b.readings[0].clock, ClockQuality::Unsynced);
}

#[test]
fn corrected_readings_and_readings_of_other_boots_are_not_held_back() {
    let (mut conn, _dir) = db();
    let now = here();
    let earlier_boot = boot("an-earlier-boot", 1_000);
    store(&mut conn, 2, ClockQuality::Unsynced, &earlier_boot);
    store(&mut conn, 2, ClockQuality::Unsynced, &now);
    let b = batch(next_batch(&mut conn, 100, &now, NOW_MS).unwrap());
    assert_eq!(
        seqs(&b),
        [1, 2],
        "an earlier boot can never be corrected: sent at once"
    );
    acknowledge(&mut conn, 1, 2, NOW_MS).unwrap();
    assert_eq!(
        next_batch(&mut conn, 100, &now, NOW_MS).unwrap(),
        Next::HeldBack { seq: 3 }
    );
    // The clock became trusted: the scheduler re-stamps this boot's readings.
    assert_eq!(
        readings::correct_boot(&mut conn, NOW_BOOT, NOW_MS).unwrap(),
        2
    );
    let b = batch(next_batch(&mut conn, 100, &now, NOW_MS).unwrap());
    assert_eq!(seqs(&b), [3, 4]);
    assert!(
        b.readings
            .iter()
            .all(|r| r.clock == ClockQuality::Corrected)
    );
}

#[test]
fn a_refused_batch_splits_into_halves_by_count_and_a_single_reading_is_dead_lettered() {
    let (mut conn, _dir) = db();
    store(&mut conn, 5, ClockQuality::Synced, &here());
    let b = batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    assert_eq!(
        refuse(&mut conn, 1, 5, "gw:e:1-5", 422, "bad", NOW_MS).unwrap(),
        Refused::Split([(1, 3), (4, 5)])
    );
    assert_eq!(b.readings.len(), 5);
    assert_eq!(recorded(&conn), [(1, 3), (4, 5)]);
    let older = batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    assert_eq!(seqs(&older), [1, 2, 3], "the older half goes first");

    refuse(&mut conn, 1, 3, "gw:e:1-3", 422, "bad", NOW_MS).unwrap();
    assert_eq!(recorded(&conn), [(1, 2), (3, 3), (4, 5)]);
    let long_answer = "x".repeat(500);
    assert_eq!(
        refuse(&mut conn, 3, 3, "gw:e:3-3", 422, &long_answer, NOW_MS + 9).unwrap(),
        Refused::DeadLettered(3)
    );
    assert_eq!(recorded(&conn), [(1, 2), (4, 5)]);
    let dead: (i64, String, i64, String, i64) = conn
        .query_row(
            "SELECT seq, batch, status, response, dead_ms FROM dead_letter",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        dead,
        (3, "gw:e:3-3".into(), 422, "x".repeat(200), NOW_MS + 9)
    );
    let counts = readings::counts(&conn).unwrap();
    assert_eq!((counts.dead, counts.pending()), (1, 4));
    let pending: i64 = conn
        .query_row("SELECT count(*) FROM pending WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(pending, 0, "the pending view leaves dead letters out");

    // Later batches over that range skip the dead letter; acknowledging never marks it.
    acknowledge(&mut conn, 1, 2, NOW_MS).unwrap();
    acknowledge(&mut conn, 4, 5, NOW_MS).unwrap();
    let acked_dead: Option<i64> = conn
        .query_row("SELECT acked_ms FROM readings WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(acked_dead, None);
    assert_eq!(
        next_batch(&mut conn, 100, &here(), NOW_MS).unwrap(),
        Next::Empty
    );
}

#[test]
fn changes_to_a_batch_that_is_no_longer_recorded_as_given_do_nothing() {
    let (mut conn, _dir) = db();
    store(&mut conn, 4, ClockQuality::Synced, &here());
    batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    // Another uploader split it meanwhile.
    refuse(&mut conn, 1, 4, "k", 413, "", NOW_MS).unwrap();
    assert_eq!(
        refuse(&mut conn, 1, 4, "k", 413, "", NOW_MS).unwrap(),
        Refused::Gone
    );
    record_attempt(&mut conn, 1, 4, Some(503), "503 Service Unavailable", false).unwrap();
    let attempts: Vec<i64> = conn
        .prepare("SELECT attempts FROM batches ORDER BY first_seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(attempts, [0, 0]);
    assert_eq!(recorded(&conn), [(1, 2), (3, 4)]);

    // A recorded batch whose readings all went elsewhere is dropped, not sent empty.
    conn.execute("UPDATE readings SET acked_ms = 1 WHERE seq <= 2", [])
        .unwrap();
    let b = batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    assert_eq!(seqs(&b), [3, 4]);
    assert_eq!(recorded(&conn), [(3, 4)]);
}

#[test]
fn attempts_and_the_upload_status_are_recorded_and_cleared_by_an_acknowledgement() {
    let (mut conn, _dir) = db();
    store(&mut conn, 2, ClockQuality::Synced, &here());
    assert_eq!(status(&conn).unwrap(), UploadStatus::default());
    batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    record_attempt(&mut conn, 1, 2, None, "connection refused", false).unwrap();
    record_attempt(&mut conn, 1, 2, Some(401), "401 Unauthorized", true).unwrap();
    let row: (i64, Option<i64>, String) = conn
        .query_row(
            "SELECT attempts, last_status, last_error FROM batches",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, (2, Some(401), "401 Unauthorized".into()));
    let b = batch(next_batch(&mut conn, 100, &here(), NOW_MS).unwrap());
    assert_eq!(b.attempts, 2, "attempts survive across runs");
    assert_eq!(
        status(&conn).unwrap(),
        UploadStatus {
            last_ok_ms: None,
            last_error: Some("401 Unauthorized".into()),
            paused: Some("401 Unauthorized".into()),
            consecutive_failures: 2,
            run: None,
        }
    );
    record_failure(&mut conn, "cannot read the token").unwrap();
    assert_eq!(status(&conn).unwrap().consecutive_failures, 3);

    acknowledge(&mut conn, 1, 2, NOW_MS).unwrap();
    assert_eq!(
        status(&conn).unwrap(),
        UploadStatus {
            last_ok_ms: Some(NOW_MS),
            ..UploadStatus::default()
        }
    );
}

#[test]
fn forming_a_batch_leaves_the_connection_at_normal_durability() {
    // Formed under FULL (one sync, so a power cut cannot take back what may be sent);
    // every later commit of the writer goes back to NORMAL, without a sync each.
    let (mut conn, _dir) = db();
    store(&mut conn, 3, ClockQuality::Synced, &here());
    let level =
        |c: &Connection| -> i64 { c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap() };
    assert_eq!(level(&conn), 1);
    batch(next_batch(&mut conn, 2, &here(), NOW_MS).unwrap());
    assert_eq!(level(&conn), 1, "NORMAL again after forming");
    batch(next_batch(&mut conn, 2, &here(), NOW_MS).unwrap());
    assert_eq!(level(&conn), 1, "and after resuming");
}

#[test]
fn a_run_counts_its_own_deliveries_and_failures_under_its_url() {
    let (mut conn, _dir) = db();
    store(&mut conn, 4, ClockQuality::Synced, &here());
    record_failure(&mut conn, "before any run").unwrap();
    assert_eq!(status(&conn).unwrap().run, None, "no run began yet");
    begin_run(&mut conn, "https://old.example/ingest").unwrap();
    batch(next_batch(&mut conn, 2, &here(), NOW_MS).unwrap());
    acknowledge(&mut conn, 1, 2, NOW_MS).unwrap();
    let old = status(&conn).unwrap().run.unwrap();
    assert_eq!(
        (old.url.as_str(), old.delivered, old.failed),
        ("https://old.example/ingest", 1, 0)
    );
    begin_run(&mut conn, "https://new.example/ingest").unwrap();
    record_attempt(&mut conn, 3, 4, None, "connection refused", false).unwrap();
    record_attempt(&mut conn, 3, 4, None, "connection refused", false).unwrap();
    let new = status(&conn).unwrap().run.unwrap();
    assert_eq!(
        (new.url.as_str(), new.delivered, new.failed),
        ("https://new.example/ingest", 0, 2)
    );
}
