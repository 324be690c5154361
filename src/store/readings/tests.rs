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

/// A new database in its own directory, and a boot to take readings in.
fn fresh() -> (tempfile::TempDir, Connection, BootTime) {
    let dir = tempfile::tempdir().unwrap();
    let conn = crate::store::open(dir.path()).unwrap();
    let boot = BootTime {
        boot_id: "b".into(),
        since_boot_ms: 0,
    };
    (dir, conn, boot)
}

fn cycle_of(n: usize) -> Vec<Reading> {
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    (0..n)
        .map(|i| Reading::good(&format!("s{i}"), ts, i as f64, Some("u")))
        .collect()
}

fn seqs(conn: &Connection) -> Vec<i64> {
    conn.prepare("SELECT seq FROM readings ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const ROOMY: Limits = Limits {
    max_rows: 1_000_000,
    max_size: 1 << 40,
    min_free_disk: 0,
};

#[test]
fn at_the_row_cap_the_oldest_go_uploaded_first_and_pending_drops_are_counted() {
    let (_dir, mut conn, boot) = fresh();
    insert_cycle(&mut conn, &cycle_of(250), ClockQuality::Synced, &boot).unwrap();
    // The first 60 reached the server.
    conn.execute("UPDATE readings SET acked_ms = 1 WHERE seq <= 60", [])
        .unwrap();
    let limits = Limits {
        max_rows: 200,
        ..ROOMY
    };
    assert_eq!(enforce_limits(&mut conn, &limits, || None).unwrap(), 40);
    assert_eq!(dropped_total(&conn).unwrap(), 40);
    let left = seqs(&conn);
    assert_eq!(
        left.len(),
        150,
        "a chunk of 100 (more than the excess of 50) went: 150 left"
    );
    assert_eq!(
        *left.first().unwrap(),
        101,
        "the oldest went: uploaded ones, then pending"
    );
    assert_eq!(*left.last().unwrap(), 250, "never the newest");
    // Under the cap nothing happens; seqs go on from where they were.
    assert_eq!(enforce_limits(&mut conn, &limits, || None).unwrap(), 0);
    assert_eq!(
        insert_cycle(&mut conn, &cycle_of(1), ClockQuality::Synced, &boot).unwrap(),
        Some((251, 251))
    );
}

#[test]
fn at_the_size_cap_the_file_stops_growing() {
    let (_dir, mut conn, boot) = fresh();
    let limits = Limits {
        max_size: 256 * 1024,
        ..ROOMY
    };
    let pages =
        |c: &Connection| -> i64 { c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap() };
    let mut sizes = Vec::new();
    for _ in 0..60 {
        insert_cycle(&mut conn, &cycle_of(100), ClockQuality::Synced, &boot).unwrap();
        enforce_limits(&mut conn, &limits, || None).unwrap();
        sizes.push(pages(&conn));
    }
    assert!(dropped_total(&conn).unwrap() > 0);
    let settled = sizes[45..].iter().max().unwrap() - sizes[45..].iter().min().unwrap();
    assert!(settled <= 2, "the file stops growing: {sizes:?}");
    assert!(*sizes.last().unwrap() * 4096 <= 320 * 1024, "{sizes:?}");
    assert_eq!(*seqs(&conn).last().unwrap(), 6000, "the newest is kept");
}

#[test]
fn a_low_disk_drops_only_enough_that_the_file_stops_growing() {
    let (_dir, mut conn, boot) = fresh();
    for _ in 0..50 {
        insert_cycle(&mut conn, &cycle_of(100), ClockQuality::Synced, &boot).unwrap();
    }
    let limits = Limits {
        min_free_disk: 64 << 20,
        ..ROOMY
    };
    // Something else filled the card: deleting rows cannot give the disk space back.
    let full = || Some(0);
    let dropped = enforce_limits(&mut conn, &limits, full).unwrap();
    assert!(dropped > 0, "the oldest make room");
    assert!(dropped < 2500, "not the whole buffer: {dropped}");
    assert_eq!(dropped_total(&conn).unwrap(), dropped);
    assert_eq!(
        seqs(&conn)[0],
        i64::try_from(dropped).unwrap() + 1,
        "oldest first"
    );
    assert_eq!(
        enforce_limits(&mut conn, &limits, full).unwrap(),
        0,
        "room inside the file is enough"
    );
    let pages =
        |c: &Connection| -> i64 { c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap() };
    let before = pages(&conn);
    for _ in 0..100 {
        insert_cycle(&mut conn, &cycle_of(24), ClockQuality::Synced, &boot).unwrap();
        enforce_limits(&mut conn, &limits, full).unwrap();
    }
    assert!(
        pages(&conn) <= before,
        "the file does not grow on a full disk"
    );
    assert_eq!(
        *seqs(&conn).last().unwrap(),
        5000 + 2400,
        "the newest are kept"
    );
}

#[test]
fn a_full_database_holds_cycles_in_memory_and_stores_them_in_order_when_room_returns() {
    let (_dir, mut conn, boot) = fresh();
    let held = Held::default();
    let cycle = |i: i64| {
        let ts = chrono::DateTime::from_timestamp_millis(1_795_395_600_000 + i * 300_000).unwrap();
        Cycle {
            readings: (0..24)
                .map(|s| Reading::good(&format!("s{s}"), ts, i as f64, Some("u")))
                .collect(),
            clock: ClockQuality::Synced,
            boot: boot.clone(),
        }
    };
    let stored = store_cycle(&mut conn, &held, cycle(0), &ROOMY, || None).unwrap();
    assert_eq!(
        (stored.seqs, stored.held, stored.dropped),
        (Some((1, 24)), 0, 0)
    );
    assert!(stored.fill > 0.0 && stored.fill < 0.01, "{stored:?}");
    // The disk is full: not one more page.
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();
    let mut i = 1;
    while held.len() < 24 * 5 {
        // A cycle may still fit in a half-empty page; sooner or later none does.
        match store_cycle(&mut conn, &held, cycle(i), &ROOMY, || None) {
            Ok(s) => assert_eq!(s.held, 0),
            Err(e) => assert!(e.to_string().contains("full"), "{e}"),
        }
        i += 1;
        assert!(i < 1000, "the database never filled");
    }
    let stored_before: i64 = conn
        .query_row("SELECT max(seq) FROM readings", [], |r| r.get(0))
        .unwrap();
    // Room again: everything held goes in first, in order, then the new cycle.
    conn.pragma_update(None, "max_page_count", 1_000_000)
        .unwrap();
    let stored = store_cycle(&mut conn, &held, cycle(i), &ROOMY, || None).unwrap();
    assert_eq!(stored.held, 0);
    assert!(held.is_empty());
    assert_eq!(stored.seqs, Some((stored_before + 1, (i + 1) * 24)));
    let values: Vec<f64> = conn
        .prepare("SELECT value FROM readings WHERE sensor = 's0' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<f64> = (0..=i).map(|i| i as f64).collect();
    assert_eq!(values, expected, "every cycle once, oldest first");
    assert_eq!(dropped_total(&conn).unwrap(), 0);
}

#[test]
fn held_readings_past_the_bound_drop_oldest_first_and_are_counted() {
    let (_dir, mut conn, boot) = fresh();
    let held = Held::default();
    let big = |v: f64| Cycle {
        readings: vec![
            Reading::good("s", chrono::Utc.timestamp_millis_opt(0).unwrap(), v, None);
            MAX_HELD / 4
        ],
        clock: ClockQuality::Synced,
        boot: boot.clone(),
    };
    // A database that refuses every write, as a dying card does.
    conn.execute_batch("PRAGMA query_only = 1").unwrap();
    for v in 0..6 {
        assert!(store_cycle(&mut conn, &held, big(f64::from(v)), &ROOMY, || None).is_err());
    }
    assert_eq!(held.len(), MAX_HELD);
    conn.execute_batch("PRAGMA query_only = 0").unwrap();
    let stored = store_cycle(&mut conn, &held, big(6.0), &ROOMY, || None).unwrap();
    assert_eq!(stored.held, 0);
    let first: f64 = conn
        .query_row("SELECT value FROM readings ORDER BY seq LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(first, 3.0, "cycles 0..=2 made room for the newer ones");
    assert_eq!(dropped_total(&conn).unwrap(), 3 * (MAX_HELD / 4) as u64);
}

#[test]
fn retention_prunes_only_readings_acknowledged_long_enough_ago() {
    let (_dir, mut conn, boot) = fresh();
    insert_cycle(&mut conn, &cycle_of(6), ClockQuality::Synced, &boot).unwrap();
    conn.execute("UPDATE readings SET acked_ms = 1000 WHERE seq <= 2", [])
        .unwrap();
    conn.execute(
        "UPDATE readings SET acked_ms = 5000 WHERE seq IN (3, 4)",
        [],
    )
    .unwrap();
    assert_eq!(prune_uploaded(&mut conn, 2000).unwrap(), 2);
    assert_eq!(seqs(&conn), vec![3, 4, 5, 6]);
    assert_eq!(prune_uploaded(&mut conn, i64::MAX).unwrap(), 2);
    assert_eq!(
        seqs(&conn),
        vec![5, 6],
        "pending readings stay, however old"
    );
    assert_eq!(pending_count(&conn).unwrap(), 2);
}

#[test]
fn the_kept_counts_match_the_rows_through_every_kind_of_change() {
    let (_dir, mut conn, boot) = fresh();
    let counted = |conn: &Connection| {
        let q = |sql: &str| -> u64 {
            let n: i64 = conn.query_row(sql, [], |r| r.get(0)).unwrap();
            u64::try_from(n).unwrap()
        };
        let truth = Counts {
            readings: q("SELECT count(*) FROM readings"),
            acked: q("SELECT count(*) FROM readings WHERE acked_ms IS NOT NULL"),
            dead: q("SELECT count(*) FROM dead_letter"),
        };
        assert_eq!(counts(conn).unwrap(), truth);
        assert_eq!(truth.pending(), q("SELECT count(*) FROM pending"));
        truth
    };
    for _ in 0..10 {
        insert_cycle(&mut conn, &cycle_of(10), ClockQuality::Synced, &boot).unwrap();
    }
    assert_eq!(counted(&conn).pending(), 100);
    conn.execute("UPDATE readings SET acked_ms = 5 WHERE seq <= 30", [])
        .unwrap();
    // Acknowledging twice counts once.
    conn.execute("UPDATE readings SET acked_ms = 6 WHERE seq <= 40", [])
        .unwrap();
    conn.execute(
        "INSERT INTO dead_letter (seq, batch, status, dead_ms) VALUES (41, 'k', 422, 1), (42, 'k', 422, 1)",
        [],
    )
    .unwrap();
    assert_eq!(
        counted(&conn),
        Counts {
            readings: 100,
            acked: 40,
            dead: 2
        }
    );
    conn.execute("DELETE FROM dead_letter WHERE seq = 42", [])
        .unwrap();
    prune_uploaded(&mut conn, 6).unwrap();
    let limits = Limits {
        max_rows: 50,
        max_size: u64::MAX,
        min_free_disk: 0,
    };
    // Drops reach the dead letter at seq 41: the cascade keeps `dead` right.
    enforce_limits(&mut conn, &limits, || None).unwrap();
    let after = counted(&conn);
    assert!(after.readings <= 50, "{after:?}");
    assert_eq!(after.dead, 0, "{after:?}");
}

#[test]
fn compacting_gives_free_pages_back_but_keeps_a_reserve_and_truncates_the_wal() {
    let (dir, mut conn, boot) = fresh();
    for _ in 0..600 {
        insert_cycle(&mut conn, &cycle_of(100), ClockQuality::Synced, &boot).unwrap();
    }
    conn.execute("UPDATE readings SET acked_ms = 1", [])
        .unwrap();
    prune_uploaded(&mut conn, 2).unwrap();
    let pragma = |c: &Connection, name: &str| -> i64 {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    };
    let free_before = pragma(&conn, "freelist_count");
    assert!(free_before > COMPACT_RESERVE_PAGES + 100, "{free_before}");
    let pages_before = pragma(&conn, "page_count");
    let compacted = compact(&mut conn).unwrap();
    assert_eq!(pragma(&conn, "freelist_count"), COMPACT_RESERVE_PAGES);
    assert_eq!(
        compacted.released_bytes,
        u64::try_from((free_before - COMPACT_RESERVE_PAGES) * 4096).unwrap()
    );
    assert_eq!(
        pragma(&conn, "page_count"),
        pages_before - (free_before - COMPACT_RESERVE_PAGES)
    );
    assert!(compacted.wal_truncated);
    let wal = std::fs::metadata(dir.path().join("buffer.db-wal"))
        .unwrap()
        .len();
    assert_eq!(wal, 0, "the WAL is truncated");
    // Nothing more to give: the reserve stays.
    assert_eq!(compact(&mut conn).unwrap().released_bytes, 0);
    assert_eq!(pragma(&conn, "freelist_count"), COMPACT_RESERVE_PAGES);
}
