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
}
