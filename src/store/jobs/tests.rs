//! Tests of the parent module.

use super::*;
use chrono::TimeZone;

fn t(s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, s).unwrap()
}

#[test]
fn runs_count_and_history_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::store::open(dir.path()).unwrap();
    ensure(&conn, "probe", "command").unwrap();
    for i in 0..60 {
        let id = start_run(&conn, "probe", Origin::Schedule, t(i % 60), Some(t(0))).unwrap();
        let outcome = if i % 3 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        finish_run(&mut conn, "probe", id, outcome, None, 10, 1).unwrap();
    }
    add_missed(&conn, "probe", 4).unwrap();
    add_skipped(&conn, "probe").unwrap();
    let rec = get(&conn, "probe").unwrap().unwrap();
    assert_eq!(
        (
            rec.runs,
            rec.successes,
            rec.failures,
            rec.missed,
            rec.skipped
        ),
        (60, 40, 20, 4, 1)
    );
    assert!(!rec.running);
    assert_eq!(
        history(&conn, "probe", 1000).unwrap().len(),
        HISTORY as usize
    );
}

#[test]
fn a_run_cut_off_by_a_dead_process_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::store::open(dir.path()).unwrap();
    ensure(&conn, "probe", "command").unwrap();
    // A run recorded by a process id that cannot exist.
    conn.execute(
        "INSERT INTO job_runs (job, origin, pid, started_ms)
         VALUES ('probe', 'schedule', 2147483600, 0)",
        [],
    )
    .unwrap();
    assert!(get(&conn, "probe").unwrap().unwrap().running);
    assert_eq!(abort_orphaned_runs(&mut conn).unwrap(), 1);
    let rec = get(&conn, "probe").unwrap().unwrap();
    assert!(!rec.running);
    assert_eq!(rec.last_outcome.as_deref(), Some("aborted"));
    assert_eq!(rec.failures, 1);
    // Counted by outcome for /metrics, with no duration to put in a bucket.
    let probe = &run_stats(&conn).unwrap()["probe"];
    assert_eq!(probe.outcomes, [("aborted".to_string(), 1)]);
    assert_eq!(probe.count, 0);
}

#[test]
fn run_stats_count_outcomes_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::store::open(dir.path()).unwrap();
    ensure(&conn, "probe", "command").unwrap();
    ensure(&conn, "idle", "command").unwrap();
    let runs = [
        (Outcome::Success, 3),
        (Outcome::Success, 5),
        (Outcome::Failure, 6),
        (Outcome::Timeout, 30_000),
        (Outcome::Success, 7_200_000),
    ];
    for (outcome, ms) in runs {
        record_run(
            &mut conn,
            "probe",
            Origin::Schedule,
            t(0),
            None,
            outcome,
            None,
            ms,
            1,
        )
        .unwrap();
    }
    let stats = run_stats(&conn).unwrap();
    let probe = &stats["probe"];
    assert_eq!(
        probe.outcomes,
        [
            ("failure".to_string(), 1),
            ("success".to_string(), 3),
            ("timeout".to_string(), 1)
        ]
    );
    // Cumulative: 3 and 5 ms in the 5 ms bucket, 6 ms in 10 ms, 30 s exactly in its
    // own bound, two hours past every bound.
    assert_eq!(probe.le[0], 2);
    assert_eq!(probe.le[1], 3);
    assert_eq!(probe.le[10], 3);
    assert_eq!(probe.le[11], 4);
    assert_eq!(probe.le[15], 4);
    assert_eq!((probe.count, probe.sum_ms), (5, 7_230_014));
    assert!(
        !stats.contains_key("idle"),
        "a job that never ran has no figures"
    );
}

#[test]
fn an_older_database_keeps_its_run_counts_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::store::DB_FILE);
    // A bare connection: an older build's database, before the current migrations.
    #[allow(clippy::disallowed_methods)]
    let mut conn = Connection::open(&path).unwrap();
    crate::store::schema::migrate_to(&mut conn, &path, 5).unwrap();
    conn.execute(
        "INSERT INTO job_state (name, kind, runs, successes, failures)
         VALUES ('probe', 'command', 5, 3, 2), ('idle', 'command', 0, 0, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let conn = crate::store::open(dir.path()).unwrap();
    let stats = run_stats(&conn).unwrap();
    assert_eq!(
        stats["probe"].outcomes,
        [("failure".to_string(), 2), ("success".to_string(), 3)]
    );
    assert!(!stats.contains_key("idle"));
    assert_eq!(get(&conn, "probe").unwrap().unwrap().runs, 5);
}
