//! Tests of the parent module.

use chrono::TimeZone;

use super::*;

#[test]
fn a_cycle_gets_dense_seqs_in_one_transaction_and_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::store::open(dir.path()).unwrap();
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    let boot = BootTime {
        boot_id: "b1".into(),
        since_boot_ms: 42_000,
    };
    let cycle = vec![
        Reading::good("pond7.do", ts, 7.83, Some("mg/L")),
        Reading::bad(
            "pond7.temp",
            ts,
            Some("degC"),
            "slave 3: no answer within 500ms",
        ),
    ];
    assert_eq!(
        insert_cycle(&mut conn, &cycle, ClockQuality::Synced, &boot).unwrap(),
        Some((1, 2))
    );
    assert_eq!(
        insert_cycle(&mut conn, &cycle, ClockQuality::Unsynced, &boot).unwrap(),
        Some((3, 4))
    );
    assert_eq!(
        insert_cycle(&mut conn, &[], ClockQuality::Synced, &boot).unwrap(),
        None
    );
    assert_eq!(pending_count(&conn).unwrap(), 4);
    let row: (
        i64,
        String,
        i64,
        Option<f64>,
        String,
        String,
        Option<String>,
    ) = conn
        .query_row(
            "SELECT seq, sensor, ts, value, quality, clock, error FROM pending WHERE seq = 2",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            2,
            "pond7.temp".into(),
            ts.timestamp_millis(),
            None,
            "bad".into(),
            "synced".into(),
            Some("slave 3: no answer within 500ms".into())
        )
    );
    // Seqs are never reused, even when the newest rows are deleted.
    conn.execute("DELETE FROM readings WHERE seq >= 3", [])
        .unwrap();
    assert_eq!(
        insert_cycle(&mut conn, &cycle[..1], ClockQuality::Synced, &boot).unwrap(),
        Some((5, 5))
    );
}
