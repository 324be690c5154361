//! The alarm rules' state in `buffer.db`, stepped on every stored cycle.
//!
//! A row is written only when a rule's phase changes (ok, pending, raised), so a
//! steady pond costs the card nothing per cycle; the last value `tidegate alarms`
//! shows comes from the readings themselves. A rule whose row names another sensor
//! (the rule was repointed) starts over at `ok`.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::alarm::{AlarmState, Change, Phase};
use crate::config::AlarmConfig;
use crate::reading::{Quality, Reading};
use crate::time::from_millis;

/// What one cycle did to the alarms: the changes in the order the readings came,
/// with the index of their rule in the slice given to [`step`].
#[derive(Debug, Default)]
pub struct Stepped {
    pub changes: Vec<(usize, Change)>,
    /// Set when the new phases could not be written (a full disk): the changes above
    /// still happened and are acted on, but a restart will not remember them.
    pub save_error: Option<StoreError>,
}

/// Each rule's state, in the order of `rules`.
pub fn load(conn: &Connection, rules: &[AlarmConfig]) -> Result<Vec<AlarmState>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT sensor, phase, since_ms, last_value, last_ts_ms FROM alarms WHERE id = ?1",
    )?;
    rules
        .iter()
        .map(|rule| {
            let row = stmt
                .query_row([&rule.id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<f64>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })
                .optional()?;
            Ok(match row {
                Some((sensor, phase, since, last_value, last_ts)) if sensor == rule.sensor => {
                    let since = since.and_then(from_millis);
                    AlarmState {
                        phase: match (phase.as_str(), since) {
                            ("pending", Some(since)) => Phase::Pending { since },
                            ("raised", Some(since)) => Phase::Raised { since },
                            _ => Phase::Ok,
                        },
                        last_value,
                        last_ts: last_ts.and_then(from_millis),
                    }
                }
                _ => AlarmState::default(),
            })
        })
        .collect()
}

/// Steps every rule on `readings`, in order, and writes the rules whose phase changed.
pub fn step(
    conn: &mut Connection,
    rules: &[AlarmConfig],
    readings: &[Reading],
) -> Result<Stepped, StoreError> {
    if rules.is_empty() {
        return Ok(Stepped::default());
    }
    let mut states = load(conn, rules)?;
    let before: Vec<Phase> = states.iter().map(|s| s.phase).collect();
    let mut changes = Vec::new();
    for reading in readings.iter().filter(|r| r.quality == Quality::Good) {
        for (i, rule) in rules.iter().enumerate() {
            if let Some(change) = states[i].observe(rule, reading) {
                changes.push((i, change));
            }
        }
    }
    let changed: Vec<usize> = (0..rules.len())
        .filter(|&i| states[i].phase != before[i])
        .collect();
    let save_error = if changed.is_empty() {
        None
    } else {
        save(conn, rules, &states, &changed).err()
    };
    Ok(Stepped {
        changes,
        save_error,
    })
}

fn save(
    conn: &mut Connection,
    rules: &[AlarmConfig],
    states: &[AlarmState],
    which: &[usize],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO alarms (id, sensor, phase, since_ms, last_value, last_ts_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET sensor = ?2, phase = ?3, since_ms = ?4,
                 last_value = ?5, last_ts_ms = ?6",
        )?;
        for &i in which {
            let state = &states[i];
            stmt.execute(params![
                rules[i].id,
                rules[i].sensor,
                state.phase.name(),
                state.phase.since().map(|t| t.timestamp_millis()),
                state.last_value,
                state.last_ts.map(|t| t.timestamp_millis()),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The newest good reading of `sensor` in the buffer: (value, ts in ms).
pub fn last_good(conn: &Connection, sensor: &str) -> Result<Option<(f64, i64)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT value, ts FROM readings
             WHERE sensor = ?1 AND quality = 'good' AND value IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([sensor], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::config::{Severity, Threshold};

    fn rule(id: &str, sensor: &str, hold_s: u64) -> AlarmConfig {
        AlarmConfig {
            id: id.into(),
            sensor: sensor.into(),
            threshold: Threshold::Below(5.0),
            hold_for: Duration::from_secs(hold_s),
            clear_at: 5.5,
            severity: Severity::Critical,
            run: None,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_000_000 + s, 0).unwrap()
    }

    fn cycle(s: i64, values: &[(&str, f64)]) -> Vec<Reading> {
        values
            .iter()
            .map(|&(sensor, v)| Reading::good(sensor, at(s), v, Some("mg/L")))
            .collect()
    }

    fn open() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path()).unwrap();
        (dir, conn)
    }

    #[test]
    fn a_hold_spans_cycles_and_survives_reopening_the_database() {
        let (dir, mut conn) = open();
        let rules = [rule("low1", "pond1.do", 30), rule("low2", "pond2.do", 0)];
        let first = step(
            &mut conn,
            &rules,
            &cycle(0, &[("pond1.do", 4.0), ("pond2.do", 7.0)]),
        )
        .unwrap();
        assert!(first.changes.is_empty());
        drop(conn);

        let mut conn = crate::store::open(dir.path()).unwrap();
        let states = load(&conn, &rules).unwrap();
        assert_eq!(states[0].phase, Phase::Pending { since: at(0) });
        assert_eq!(states[1].phase, Phase::Ok);
        let second = step(
            &mut conn,
            &rules,
            &cycle(30, &[("pond1.do", 4.1), ("pond2.do", 4.9)]),
        )
        .unwrap();
        assert_eq!(
            second.changes,
            [
                (
                    0,
                    Change::Raised {
                        value: 4.1,
                        ts: at(30)
                    }
                ),
                (
                    1,
                    Change::Raised {
                        value: 4.9,
                        ts: at(30)
                    }
                )
            ]
        );
        assert!(second.save_error.is_none());
        // Raised stays raised: a restart does not raise (or run its job) again.
        let third = step(
            &mut conn,
            &rules,
            &cycle(60, &[("pond1.do", 4.0), ("pond2.do", 4.0)]),
        )
        .unwrap();
        assert!(third.changes.is_empty());
        let states = load(&conn, &rules).unwrap();
        assert_eq!(states[0].phase, Phase::Raised { since: at(30) });
    }

    #[test]
    fn a_rule_pointed_at_another_sensor_starts_over() {
        let (_dir, mut conn) = open();
        let rules = [rule("low", "pond1.do", 0)];
        let raised = step(&mut conn, &rules, &cycle(0, &[("pond1.do", 4.0)])).unwrap();
        assert_eq!(raised.changes.len(), 1);
        let moved = [rule("low", "pond2.do", 0)];
        assert_eq!(load(&conn, &moved).unwrap()[0].phase, Phase::Ok);
    }

    #[test]
    fn a_steady_pond_writes_nothing() {
        let (_dir, mut conn) = open();
        let rules = [rule("low", "pond1.do", 0)];
        for s in 0..5 {
            step(&mut conn, &rules, &cycle(s * 300, &[("pond1.do", 7.0)])).unwrap();
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM alarms", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }
}
