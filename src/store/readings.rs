//! Readings in `buffer.db`: a sampling cycle stored in one transaction.
//!
//! Invariants: `seq` comes from SQLite's AUTOINCREMENT, so it grows by one per stored
//! reading and is never reused; a cycle is stored whole or not at all. Each reading
//! keeps the boot it was taken in and its time since boot, so a clock that becomes
//! trusted later can re-stamp it.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
pub use crate::clock::BootTime;
use crate::reading::Reading;

/// Where a reading's timestamp came from (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockQuality {
    Synced,
    Corrected,
    Unsynced,
}

impl ClockQuality {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockQuality::Synced => "synced",
            ClockQuality::Corrected => "corrected",
            ClockQuality::Unsynced => "unsynced",
        }
    }
}

/// Stores one cycle's readings in one transaction; returns the seqs given, first and
/// last (`None` for an empty cycle).
pub fn insert_cycle(
    conn: &mut Connection,
    readings: &[Reading],
    clock: ClockQuality,
    boot: &BootTime,
) -> Result<Option<(i64, i64)>, StoreError> {
    if readings.is_empty() {
        return Ok(None);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut seqs = (0, 0);
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO readings (sensor, ts, value, unit, quality, clock, error, boot_id, boot_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (i, r) in readings.iter().enumerate() {
            insert.execute(params![
                r.sensor,
                r.ts.timestamp_millis(),
                r.value,
                r.unit,
                r.quality.as_str(),
                clock.as_str(),
                r.error,
                boot.boot_id,
                boot.since_boot_ms
            ])?;
            let seq = tx.last_insert_rowid();
            if i == 0 {
                seqs.0 = seq;
            }
            seqs.1 = seq;
        }
    }
    tx.commit()?;
    Ok(Some(seqs))
}

/// Re-stamps the readings of boot `boot_id` taken before the clock was trusted, in
/// one transaction: their time becomes their time since boot plus `offset_ms` (the
/// trusted wall clock minus the time since boot) and their clock `corrected`. Returns
/// how many were corrected. Readings of other boots stay `unsynced`: their offset
/// can never be known. So do readings already sent (acknowledged, or in a batch
/// whose key promises the same readings on every retry); the uploader holds back
/// correctable readings to make that rare.
pub fn correct_boot(
    conn: &mut Connection,
    boot_id: &str,
    offset_ms: i64,
) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let corrected = tx.execute(
        "UPDATE readings SET ts = boot_ms + ?2, clock = 'corrected'
         WHERE boot_id = ?1 AND clock = 'unsynced' AND acked_ms IS NULL
           AND NOT EXISTS (SELECT 1 FROM batches b
                           WHERE readings.seq BETWEEN b.first_seq AND b.last_seq)",
        params![boot_id, offset_ms],
    )?;
    tx.commit()?;
    Ok(corrected)
}

/// The buffer's caps (SPEC section 3; `[buffer]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: u64,
    pub max_size: u64,
    pub min_free_disk: u64,
}

/// Rows removed in one step when a cap is passed: a small share of the cap, so the
/// buffer settles just under it rather than far below.
fn chunk(limits: &Limits) -> i64 {
    i64::try_from((limits.max_rows / 100).clamp(100, 10_000)).unwrap_or(100)
}

/// Keeps the buffer within its caps: while there are more rows than `max_rows`, the
/// database uses more than `max_size`, or the disk has less than `min_free_disk`
/// free (`free_disk`, when known), the oldest rows go, in chunks: readings the server
/// already has first, then the oldest pending ones, never the newest. Pending rows
/// dropped are added to `dropped_total`. Deleted pages are reused, so the file stops
/// growing. Returns the pending rows dropped.
pub fn enforce_limits(
    conn: &mut Connection,
    limits: &Limits,
    free_disk: impl Fn() -> Option<u64>,
) -> Result<u64, StoreError> {
    let mut dropped = 0u64;
    // Bounded: each pass removes a chunk, and a database holds finitely many.
    for _ in 0..10_000 {
        let rows = i64::try_from(counts(conn)?.readings).unwrap_or(i64::MAX);
        let used: i64 = conn.query_row(
            "SELECT (page_count - freelist_count) * page_size
             FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )?;
        let over_rows = u64::try_from(rows).unwrap_or(0) > limits.max_rows;
        let over_size = u64::try_from(used).unwrap_or(0) > limits.max_size;
        let low_disk = free_disk().is_some_and(|free| free < limits.min_free_disk);
        if !(over_rows || over_size || low_disk) || rows == 0 {
            break;
        }
        let excess = if over_rows {
            rows - i64::try_from(limits.max_rows).unwrap_or(i64::MAX)
        } else {
            0
        };
        let step = excess.max(chunk(limits)).min(rows);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let acked = tx.execute(
            "DELETE FROM readings WHERE seq IN (
                 SELECT seq FROM readings WHERE acked_ms IS NOT NULL ORDER BY seq LIMIT ?1)",
            [step],
        )?;
        let rest = step - i64::try_from(acked).unwrap_or(0);
        if rest > 0 {
            let pending = tx.execute(
                "DELETE FROM readings WHERE seq IN (
                     SELECT seq FROM readings WHERE acked_ms IS NULL ORDER BY seq LIMIT ?1)",
                [rest],
            )?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('dropped_total', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?1",
                [i64::try_from(pending).unwrap_or(0)],
            )?;
            // An open batch that lost readings is no longer the batch its key named:
            // forget it, and its survivors go out in a new batch.
            tx.execute(
                "DELETE FROM batches
                 WHERE NOT EXISTS (SELECT 1 FROM readings WHERE seq = batches.first_seq)",
                [],
            )?;
            dropped += u64::try_from(pending).unwrap_or(0);
        }
        tx.commit()?;
    }
    if dropped > 0 {
        tracing::error!(
            dropped,
            "buffer limit reached: oldest readings the server does not have were dropped"
        );
    }
    Ok(dropped)
}

/// Pending readings dropped at a cap since the database was created.
pub fn dropped_total(conn: &Connection) -> Result<u64, StoreError> {
    let n: Option<i64> = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'dropped_total'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
pub fn free_disk(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we own from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Deletes readings the server acknowledged before `acked_before_ms`; returns how
/// many. Pending readings are never touched.
pub fn prune_uploaded(conn: &mut Connection, acked_before_ms: i64) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let pruned = tx.execute(
        "DELETE FROM readings WHERE acked_ms IS NOT NULL AND acked_ms < ?1",
        [acked_before_ms],
    )?;
    tx.commit()?;
    Ok(pruned)
}

/// How many readings the buffer holds, by state; kept by triggers, so reading them
/// costs nothing however large the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Rows in `readings`.
    pub readings: u64,
    /// Readings the server acknowledged.
    pub acked: u64,
    /// Readings isolated in the dead letter.
    pub dead: u64,
}

impl Counts {
    /// Readings waiting for the server: the rows of the `pending` view.
    pub fn pending(&self) -> u64 {
        self.readings.saturating_sub(self.acked + self.dead)
    }
}

pub fn counts(conn: &Connection) -> Result<Counts, StoreError> {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(
        conn.query_row("SELECT readings, acked, dead FROM counts", [], |r| {
            Ok(Counts {
                readings: n(r.get(0)?),
                acked: n(r.get(1)?),
                dead: n(r.get(2)?),
            })
        })?,
    )
}

/// Readings not yet acknowledged (dead letters excluded).
pub fn pending_count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(counts(conn)?.pending())
}

#[cfg(test)]
mod tests;
