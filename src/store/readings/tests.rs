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

#[test]
fn readings_taken_before_the_clock_was_trusted_are_restamped_for_this_boot_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::store::open(dir.path()).unwrap();
    let in_1970 = chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 5, 0).unwrap();
    let this_boot = BootTime {
        boot_id: "b2".into(),
        since_boot_ms: 300_000,
    };
    let old_boot = BootTime {
        boot_id: "b1".into(),
        since_boot_ms: 300_000,
    };
    let one = |id: &str| vec![Reading::good(id, in_1970, 1.0, None)];
    insert_cycle(&mut conn, &one("old"), ClockQuality::Unsynced, &old_boot).unwrap();
    insert_cycle(&mut conn, &one("early"), ClockQuality::Unsynced, &this_boot).unwrap();
    let synced = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    let later = BootTime {
        boot_id: "b2".into(),
        since_boot_ms: 900_000,
    };
    insert_cycle(
        &mut conn,
        &[Reading::good("late", synced, 2.0, None)],
        ClockQuality::Synced,
        &later,
    )
    .unwrap();

    // The clock became trusted 600 s after boot, at 01:00:00 UTC.
    let offset = synced.timestamp_millis() - 600_000;
    assert_eq!(correct_boot(&mut conn, "b2", offset).unwrap(), 1);
    let rows: Vec<(String, i64, String)> = conn
        .prepare("SELECT sensor, ts, clock FROM readings ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let five_minutes_before = synced.timestamp_millis() - 300_000;
    assert_eq!(
        rows,
        vec![
            ("old".into(), in_1970.timestamp_millis(), "unsynced".into()),
            ("early".into(), five_minutes_before, "corrected".into()),
            ("late".into(), synced.timestamp_millis(), "synced".into()),
        ]
    );
    assert_eq!(
        correct_boot(&mut conn, "b2", offset).unwrap(),
        0,
        "done once"
    );
}
