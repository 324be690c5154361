//! Readings in `buffer.db`: a sampling cycle stored in one transaction.
//!
//! Invariants: `seq` comes from SQLite's AUTOINCREMENT, so it grows by one per stored
//! reading and is never reused; a cycle is stored whole or not at all. Each reading
//! keeps the boot it was taken in and its time since boot, so a clock that becomes
//! trusted later can re-stamp it. Upload, acknowledgement and limits are not here yet.

use rusqlite::{Connection, params};

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
/// can never be known.
pub fn correct_boot(
    conn: &mut Connection,
    boot_id: &str,
    offset_ms: i64,
) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let corrected = tx.execute(
        "UPDATE readings SET ts = boot_ms + ?2, clock = 'corrected'
         WHERE boot_id = ?1 AND clock = 'unsynced'",
        params![boot_id, offset_ms],
    )?;
    tx.commit()?;
    Ok(corrected)
}

/// Readings not yet acknowledged.
pub fn pending_count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM pending", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests;
