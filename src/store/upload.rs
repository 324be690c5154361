//! The uploader's side of `buffer.db`: batches as fixed seq ranges, their
//! acknowledgement, their splitting and the dead letter, and the upload status in
//! `meta` (SPEC sections 3 and 4).
//!
//! Invariants: a batch is recorded in `batches` in the same transaction that forms
//! it, before any of it is sent, and its readings are, for ever after, the rows with
//! a seq in `[first_seq, last_seq]` that are neither acknowledged nor dead-lettered:
//! a retry, after a crash too, carries the same readings under the same key. Only a
//! split replaces a batch, by two halves that are new batches. Every change names
//! the batch by both ends and does nothing when that row is gone or changed, so two
//! uploaders at once (the agent and `tidegate job run upload`) can waste a request
//! but never mix batches. A reading that may still be corrected is never put in a
//! batch (hold-back, [`next_batch`]).
//!
//! This module knows tables and transactions, not HTTP: what an answer means is
//! `crate::upload::policy`'s.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::StoreError;
use super::readings::ClockQuality;
use crate::clock::BootTime;
use crate::reading::Quality;

/// How long a reading taken on an untrusted clock in this boot waits for the clock to
/// be trusted (and the reading corrected) before it goes as `unsynced` (SPEC 3).
pub const HOLD_BACK_MS: i64 = 3_600_000;

/// How much of a refusal's answer the dead letter keeps.
pub const RESPONSE_EXCERPT_CHARS: usize = 200;

/// One reading of a batch, as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReading {
    pub seq: i64,
    /// Shared between the readings of a batch: a batch has few distinct sensors.
    pub sensor: Arc<str>,
    /// UTC milliseconds since the epoch.
    pub ts_ms: i64,
    pub value: Option<f64>,
    pub unit: Option<Arc<str>>,
    pub quality: Quality,
    pub clock: ClockQuality,
    pub error: Option<String>,
}

/// A recorded batch and its readings, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub first_seq: i64,
    pub last_seq: i64,
    /// Failed attempts recorded so far, over every run.
    pub attempts: u32,
    pub readings: Vec<BatchReading>,
}

/// What there is to send next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Batch(Batch),
    /// The oldest pending reading, `seq`, may still be corrected: it and everything
    /// after it wait.
    HeldBack {
        seq: i64,
    },
    /// Nothing pending.
    Empty,
}

/// The readings of a batch, by the batch's definition.
const BATCH_READINGS: &str =
    "SELECT seq, sensor, ts, value, unit, quality, clock, error, boot_id, boot_ms
     FROM readings r
     WHERE seq BETWEEN ?1 AND ?2 AND acked_ms IS NULL
       AND NOT EXISTS (SELECT 1 FROM dead_letter d WHERE d.seq = r.seq)
     ORDER BY seq";

/// The oldest pending readings. INDEXED BY pins the partial index of unacknowledged
/// rows (and fails loudly if it ever could not be used): a scan in rowid order would
/// walk every acknowledged row first, on every batch of a long drain.
const OLDEST_PENDING: &str =
    "SELECT seq, sensor, ts, value, unit, quality, clock, error, boot_id, boot_ms
     FROM readings r INDEXED BY readings_pending
     WHERE acked_ms IS NULL
       AND NOT EXISTS (SELECT 1 FROM dead_letter d WHERE d.seq = r.seq)
     ORDER BY seq LIMIT ?1";

/// The batch to send next: the oldest open batch again (same range, same readings),
/// or else a new one of at most `max` pending readings in seq order, ending before
/// the first reading that is held back, recorded before this returns. A reading is
/// held back while it may still be corrected: taken on an untrusted clock
/// (`unsynced`) in the current boot (`boot`), less than an hour ago by time since
/// boot. Readings of other boots can never be corrected and go at once.
pub fn next_batch(
    conn: &mut Connection,
    max: u32,
    boot: &BootTime,
    now_ms: i64,
) -> Result<Next, StoreError> {
    // The batch may reach the server the moment this returns, so its readings and its
    // range must survive a power cut: with `synchronous = NORMAL` a cut may roll back
    // the latest commits, and their seqs (and this key) would go to other readings.
    // FULL syncs the WAL at this commit, which makes every earlier commit durable
    // too: one fsync per batch formed, none for a batch resumed.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let next = form_or_resume(conn, max, boot, now_ms);
    let restored = conn.pragma_update(None, "synchronous", "NORMAL");
    let next = next?;
    restored?;
    Ok(next)
}

fn form_or_resume(
    conn: &mut Connection,
    max: u32,
    boot: &BootTime,
    now_ms: i64,
) -> Result<Next, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sensors = Interner::default();
    // Bounded: each pass either returns or deletes an open batch row.
    loop {
        let open: Option<(i64, i64, i64)> = tx
            .prepare_cached(
                "SELECT first_seq, last_seq, attempts FROM batches ORDER BY first_seq LIMIT 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((first, last, attempts)) = open else {
            break;
        };
        let mut readings = Vec::new();
        {
            let mut stmt = tx.prepare_cached(BATCH_READINGS)?;
            let mut rows = stmt.query(params![first, last])?;
            while let Some(row) = rows.next()? {
                readings.push(batch_reading(row, &mut sensors)?);
            }
        }
        if readings.is_empty() {
            // Everything in it was acknowledged or dead-lettered by another uploader.
            tx.execute(
                "DELETE FROM batches WHERE first_seq = ?1 AND last_seq = ?2",
                params![first, last],
            )?;
            continue;
        }
        tx.commit()?;
        return Ok(Next::Batch(Batch {
            first_seq: first,
            last_seq: last,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            readings,
        }));
    }

    let mut readings = Vec::new();
    let mut held = None;
    {
        let mut stmt = tx.prepare_cached(OLDEST_PENDING)?;
        let mut rows = stmt.query([i64::from(max.max(1))])?;
        while let Some(row) = rows.next()? {
            if is_held_back(row, boot)? {
                held = Some(row.get::<_, i64>(0)?);
                break;
            }
            readings.push(batch_reading(row, &mut sensors)?);
        }
    }
    let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
        tx.commit()?;
        return Ok(match held {
            Some(seq) => Next::HeldBack { seq },
            None => Next::Empty,
        });
    };
    let (first_seq, last_seq) = (first.seq, last.seq);
    tx.prepare_cached("INSERT INTO batches (first_seq, last_seq, created_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![first_seq, last_seq, now_ms])?;
    tx.commit()?;
    Ok(Next::Batch(Batch {
        first_seq,
        last_seq,
        attempts: 0,
        readings,
    }))
}

/// Whether the reading in `row` (columns of [`OLDEST_PENDING`]) may still be corrected.
fn is_held_back(row: &Row<'_>, boot: &BootTime) -> rusqlite::Result<bool> {
    if text(row, 6)? != ClockQuality::Unsynced.as_str() || text(row, 8)? != boot.boot_id {
        return Ok(false);
    }
    let taken: i64 = row.get(9)?;
    Ok(boot.since_boot_ms.saturating_sub(taken) < HOLD_BACK_MS)
}

fn batch_reading(row: &Row<'_>, sensors: &mut Interner) -> rusqlite::Result<BatchReading> {
    let quality = match text(row, 5)? {
        "good" => Quality::Good,
        "bad" => Quality::Bad,
        "uncertain" => Quality::Uncertain,
        other => return Err(unknown(5, "quality", other)),
    };
    let clock = match text(row, 6)? {
        "synced" => ClockQuality::Synced,
        "corrected" => ClockQuality::Corrected,
        "unsynced" => ClockQuality::Unsynced,
        other => return Err(unknown(6, "clock", other)),
    };
    let unit = match row.get_ref(4)? {
        ValueRef::Null => None,
        _ => Some(sensors.get(text(row, 4)?)),
    };
    Ok(BatchReading {
        seq: row.get(0)?,
        sensor: sensors.get(text(row, 1)?),
        ts_ms: row.get(2)?,
        value: row.get(3)?,
        unit,
        quality,
        clock,
        error: row.get(7)?,
    })
}

/// A text column borrowed from the row, without copying it.
fn text<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

fn unknown(i: usize, what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        Type::Text,
        format!("unknown {what} {value:?}").into(),
    )
}

/// One shared copy of each sensor id and unit met in a batch.
#[derive(Default)]
struct Interner(HashMap<Box<str>, Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.0.insert(Box::from(s), Arc::clone(&shared));
        shared
    }
}

/// The server acknowledged the batch `[first, last]`: in one transaction its readings
/// are marked acknowledged at `acked_ms`, its row goes, and the upload status says
/// so. Returns how many readings were acknowledged.
pub fn acknowledge(
    conn: &mut Connection,
    first: i64,
    last: i64,
    acked_ms: i64,
) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let acked = tx
        .prepare_cached(
            "UPDATE readings SET acked_ms = ?3
             WHERE seq BETWEEN ?1 AND ?2 AND acked_ms IS NULL
               AND NOT EXISTS (SELECT 1 FROM dead_letter d WHERE d.seq = readings.seq)",
        )?
        .execute(params![first, last, acked_ms])?;
    tx.prepare_cached("DELETE FROM batches WHERE first_seq = ?1 AND last_seq = ?2")?
        .execute(params![first, last])?;
    set_meta(&tx, LAST_OK, &acked_ms.to_string())?;
    bump(&tx, RUN_OK)?;
    tx.prepare_cached(
        "DELETE FROM meta WHERE key IN ('upload_last_error', 'upload_paused', 'upload_failures')",
    )?
    .execute([])?;
    tx.commit()?;
    Ok(acked)
}

/// What became of a refused batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Replaced by two new batches, `[first, last]` each, older first.
    Split([(i64, i64); 2]),
    /// A batch of one reading: that reading went to the dead letter.
    DeadLettered(i64),
    /// The batch was no longer recorded as given (another uploader got there first).
    Gone,
}

/// The server refused the batch `[first, last]` (413, or a poison answer): a batch of
/// several readings is replaced by two halves by reading count (new batches, with new
/// keys); a batch of one reading sends it to the dead letter with the batch's `key`,
/// the answer's `status` and the start of its `response`.
pub fn refuse(
    conn: &mut Connection,
    first: i64,
    last: i64,
    key: &str,
    status: u16,
    response: &str,
    now_ms: i64,
) -> Result<Refused, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let removed = tx
        .prepare_cached("DELETE FROM batches WHERE first_seq = ?1 AND last_seq = ?2")?
        .execute(params![first, last])?;
    if removed == 0 {
        tx.commit()?;
        return Ok(Refused::Gone);
    }
    let seqs: Vec<i64> = tx
        .prepare_cached(
            "SELECT seq FROM readings r
             WHERE seq BETWEEN ?1 AND ?2 AND acked_ms IS NULL
               AND NOT EXISTS (SELECT 1 FROM dead_letter d WHERE d.seq = r.seq)
             ORDER BY seq",
        )?
        .query_map(params![first, last], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let outcome = match seqs.as_slice() {
        [] => Refused::Gone,
        [seq] => {
            let excerpt: String = response.chars().take(RESPONSE_EXCERPT_CHARS).collect();
            tx.prepare_cached(
                "INSERT INTO dead_letter (seq, batch, status, response, dead_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq, key, status, excerpt, now_ms])?;
            Refused::DeadLettered(*seq)
        }
        [.., end] => {
            let mid = seqs.len().div_ceil(2);
            let halves = [(seqs[0], seqs[mid - 1]), (seqs[mid], *end)];
            let mut insert = tx.prepare_cached(
                "INSERT INTO batches (first_seq, last_seq, created_ms) VALUES (?1, ?2, ?3)",
            )?;
            for (f, l) in halves {
                insert.execute(params![f, l, now_ms])?;
            }
            Refused::Split(halves)
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// An attempt at the batch `[first, last]` failed without being the readings' fault
/// (a network error, 408/425/429/5xx, 409, or 401/403 when `pause`): counted on the
/// batch and in the upload status; `pause` also marks uploading paused.
pub fn record_attempt(
    conn: &mut Connection,
    first: i64,
    last: i64,
    status: Option<u16>,
    error: &str,
    pause: bool,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "UPDATE batches SET attempts = attempts + 1, last_status = ?3, last_error = ?4
         WHERE first_seq = ?1 AND last_seq = ?2",
    )?
    .execute(params![first, last, status, error])?;
    note_failure(&tx, error)?;
    if pause {
        set_meta(&tx, PAUSED, error)?;
    }
    tx.commit()?;
    Ok(())
}

/// A run failed before any batch could be tried (an unreadable token file, no usable
/// TLS set-up): the upload status says why.
pub fn record_failure(conn: &mut Connection, error: &str) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    note_failure(&tx, error)?;
    tx.commit()?;
    Ok(())
}

fn note_failure(conn: &Connection, error: &str) -> Result<(), StoreError> {
    set_meta(conn, LAST_ERROR, error)?;
    bump(conn, FAILURES)?;
    bump(conn, RUN_FAILURES)
}

/// Adds one to the counter `key` in `meta`.
fn bump(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
    )?
    .execute([key])?;
    Ok(())
}

const LAST_OK: &str = "upload_last_ok_ms";
const LAST_ERROR: &str = "upload_last_error";
const PAUSED: &str = "upload_paused";
const FAILURES: &str = "upload_failures";
const URL: &str = "upload_run_url";
const RUN_OK: &str = "upload_run_ok";
const RUN_FAILURES: &str = "upload_run_failures";

/// An upload run begins with `url` (masked): the batches it delivers and the attempts
/// that fail are counted for it alone. Runs of the upload job never overlap, so a
/// probation can tell evidence about a pushed URL from a run that began before the
/// push.
pub fn begin_run(conn: &mut Connection, url: &str) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    set_meta(&tx, URL, url)?;
    set_meta(&tx, RUN_OK, "0")?;
    set_meta(&tx, RUN_FAILURES, "0")?;
    tx.commit()?;
    Ok(())
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Where uploading stands, for the CLI and the heartbeat: kept in `meta`
/// (`upload_last_ok_ms`, `upload_last_error`, `upload_paused`, `upload_failures`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadStatus {
    /// When the server last acknowledged a batch (UTC milliseconds).
    pub last_ok_ms: Option<i64>,
    /// The last failure since then; cleared by the next acknowledgement.
    pub last_error: Option<String>,
    /// Set by a 401/403 (why), cleared by the next acknowledgement.
    pub paused: Option<String>,
    /// Failed attempts since the last acknowledgement.
    pub consecutive_failures: u64,
    /// The latest run: its URL (masked), the batches it delivered and the attempts
    /// of it that failed.
    pub run: Option<RunOutcomes>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcomes {
    pub url: String,
    pub delivered: u64,
    pub failed: u64,
}

pub fn status(conn: &Connection) -> Result<UploadStatus, StoreError> {
    let mut status = UploadStatus::default();
    let mut stmt = conn.prepare_cached(
        "SELECT key, value FROM meta
         WHERE key IN ('upload_last_ok_ms', 'upload_last_error', 'upload_paused', 'upload_failures',
                       'upload_run_url', 'upload_run_ok', 'upload_run_failures')",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let value: String = row.get(1)?;
        match text(row, 0)? {
            LAST_OK => status.last_ok_ms = value.parse().ok(),
            LAST_ERROR => status.last_error = Some(value),
            PAUSED => status.paused = Some(value),
            FAILURES => status.consecutive_failures = value.parse().unwrap_or(0),
            URL => status.run.get_or_insert_with(RunOutcomes::default).url = value,
            RUN_OK => {
                status
                    .run
                    .get_or_insert_with(RunOutcomes::default)
                    .delivered = value.parse().unwrap_or(0)
            }
            RUN_FAILURES => {
                status.run.get_or_insert_with(RunOutcomes::default).failed =
                    value.parse().unwrap_or(0)
            }
            _ => {}
        }
    }
    // Counters without a URL are from before any run began.
    status.run = status.run.filter(|run| !run.url.is_empty());
    Ok(status)
}

#[cfg(test)]
mod tests;
