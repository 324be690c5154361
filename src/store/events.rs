//! The queue of events waiting for the broker: appended as they are raised, read
//! oldest first, deleted once handed over. Bounded: the oldest beyond the limit are
//! dropped and counted in `meta.events_dropped_total`.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::config::Severity;
use crate::event::{Event, Kind, severity_name};
use crate::time::from_millis;

/// Appends `event`, then drops the oldest while more than `limit` wait.
pub fn push(conn: &mut Connection, event: &Event, limit: usize) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.prepare_cached(
        "INSERT INTO events (ts_ms, kind, severity, subject, message) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.ts.timestamp_millis(),
        event.kind.as_str(),
        severity_name(event.severity),
        event.subject,
        event.message,
    ])?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let dropped = tx
        .prepare_cached(
            "DELETE FROM events WHERE id <= (
                 SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        )?
        .execute([limit])?;
    if dropped > 0 {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('events_dropped_total', ?1)
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?1",
            [i64::try_from(dropped).unwrap_or(i64::MAX)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Up to `n` events in the order they happened (by `ts`, then as raised), with their
/// queue ids.
pub fn oldest(conn: &Connection, n: usize) -> Result<Vec<(i64, Event)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts_ms, kind, severity, subject, message FROM events ORDER BY ts_ms, id LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::try_from(n).unwrap_or(i64::MAX)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (id, ts, kind, severity, subject, message) = row?;
        // A row this build cannot read (written by a newer one) is skipped, not fatal.
        let (Some(ts), Some(kind), Some(severity)) =
            (from_millis(ts), kind_from(&kind), severity_from(&severity))
        else {
            tracing::warn!(id, kind, "skipping an event this build cannot read");
            continue;
        };
        events.push((
            id,
            Event {
                ts,
                kind,
                severity,
                subject,
                message,
            },
        ));
    }
    Ok(events)
}

/// Deletes the events with these queue ids (the ones handed over).
pub fn delete(conn: &mut Connection, ids: &[i64]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
        for id in ids {
            stmt.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Events waiting for the broker.
pub fn queued(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Events dropped from a full queue since the database was created.
pub fn dropped_total(conn: &Connection) -> Result<u64, StoreError> {
    let n: Option<i64> = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'events_dropped_total'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

fn kind_from(s: &str) -> Option<Kind> {
    ALL_KINDS.iter().copied().find(|k| k.as_str() == s)
}

fn severity_from(s: &str) -> Option<Severity> {
    [Severity::Info, Severity::Warning, Severity::Critical]
        .into_iter()
        .find(|&v| severity_name(v) == s)
}

const ALL_KINDS: [Kind; 14] = [
    Kind::JobFailed,
    Kind::SensorBad,
    Kind::SensorRecovered,
    Kind::BusDown,
    Kind::BusUp,
    Kind::BufferHigh,
    Kind::BufferDropped,
    Kind::UploadPaused,
    Kind::ClockTrusted,
    Kind::ConfigApplied,
    Kind::ConfigRejected,
    Kind::ConfigRolledBack,
    Kind::AlarmRaised,
    Kind::AlarmCleared,
];

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn event(i: i64) -> Event {
        Event::new(
            Utc.timestamp_opt(1_795_000_000 + i, 0).unwrap(),
            ALL_KINDS[usize::try_from(i).unwrap() % ALL_KINDS.len()],
            Severity::Warning,
            format!("subject-{i}"),
            format!("message {i}"),
        )
    }

    #[test]
    fn events_come_back_oldest_first_and_go_once_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(dir.path()).unwrap();
        for i in 0..5 {
            push(&mut conn, &event(i), 1000).unwrap();
        }
        let first = oldest(&conn, 3).unwrap();
        assert_eq!(
            first.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            (0..3).map(event).collect::<Vec<_>>()
        );
        let ids: Vec<i64> = first.iter().map(|(id, _)| *id).collect();
        delete(&mut conn, &ids).unwrap();
        let rest = oldest(&conn, 10).unwrap();
        assert_eq!(
            rest.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            (3..5).map(event).collect::<Vec<_>>()
        );
        assert_eq!(queued(&conn).unwrap(), 2);
        assert_eq!(dropped_total(&conn).unwrap(), 0);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(dir.path()).unwrap();
        for i in 0..25 {
            push(&mut conn, &event(i), 10).unwrap();
        }
        assert_eq!(queued(&conn).unwrap(), 10);
        assert_eq!(dropped_total(&conn).unwrap(), 15);
        let kept: Vec<String> = oldest(&conn, 100)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.subject)
            .collect();
        assert_eq!(kept.first().map(String::as_str), Some("subject-15"));
        assert_eq!(kept.last().map(String::as_str), Some("subject-24"));
    }

    #[test]
    fn events_go_out_in_the_order_they_happened() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(dir.path()).unwrap();
        // An alarm's event carries its reading's time and may be queued a moment
        // after an event that happened later.
        push(&mut conn, &event(5), 1000).unwrap();
        push(&mut conn, &event(3), 1000).unwrap();
        let order: Vec<String> = oldest(&conn, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.subject)
            .collect();
        assert_eq!(order, ["subject-3", "subject-5"]);
        // Deleting what was sent leaves exactly the rest.
        let first = oldest(&conn, 1).unwrap();
        delete(&mut conn, &[first[0].0]).unwrap();
        assert_eq!(oldest(&conn, 10).unwrap()[0].1.subject, "subject-5");
    }

    #[test]
    fn every_kind_reads_back() {
        for kind in ALL_KINDS {
            assert_eq!(kind_from(kind.as_str()), Some(kind));
        }
    }
}
