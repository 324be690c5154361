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

/// Rows per INSERT statement: one statement for a whole cycle of a typical gateway,
/// well inside SQLite's limit of bound parameters (9 a row).
const ROWS_PER_INSERT: usize = 64;

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
    let mut first = None;
    for rows in readings.chunks(ROWS_PER_INSERT) {
        // One statement per chunk size, prepared once and cached.
        let sql = format!(
            "INSERT INTO readings (sensor, ts, value, unit, quality, clock, error, boot_id, boot_ms)
             VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ")
        );
        let mut insert = tx.prepare_cached(&sql)?;
        let mut i = 1;
        for r in rows {
            insert.raw_bind_parameter(i, &r.sensor)?;
            insert.raw_bind_parameter(i + 1, r.ts.timestamp_millis())?;
            insert.raw_bind_parameter(i + 2, r.value)?;
            insert.raw_bind_parameter(i + 3, &r.unit)?;
            insert.raw_bind_parameter(i + 4, r.quality.as_str())?;
            insert.raw_bind_parameter(i + 5, clock.as_str())?;
            insert.raw_bind_parameter(i + 6, &r.error)?;
            insert.raw_bind_parameter(i + 7, &boot.boot_id)?;
            insert.raw_bind_parameter(i + 8, boot.since_boot_ms)?;
            i += 9;
        }
        insert.raw_execute()?;
        // The rows of one statement get consecutive seqs: this is the only writer.
        let last = tx.last_insert_rowid();
        first.get_or_insert(last + 1 - rows.len() as i64);
    }
    let last = tx.last_insert_rowid();
    tx.commit()?;
    Ok(first.map(|first| (first, last)))
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

/// On a disk below `min_free_disk` the file must not grow: the oldest rows go until
/// this much room is free inside the file for the next readings (some 800 of them).
/// Deleting rows gives pages back to the file, not the disk, so dropping until the
/// disk itself has room again would empty the buffer when something else fills it.
const LOW_DISK_ROOM: i64 = 64 * 1024;

/// Rows removed in one step when a cap is passed: a small share of the cap (some
/// 80 KiB of rows at most), so the buffer settles just under it rather than far below.
fn chunk(limits: &Limits) -> i64 {
    i64::try_from((limits.max_rows / 100).clamp(100, 1_000)).unwrap_or(100)
}

/// Keeps the buffer within its caps: while there are more rows than `max_rows`, the
/// database uses more than `max_size`, or the disk has less than `min_free_disk`
/// free (`free_disk`, when known) and the file has less than [`LOW_DISK_ROOM`] free
/// inside, the oldest rows go, in chunks: readings the server already has first, then
/// the oldest pending ones, never the newest. Pending rows dropped are added to
/// `dropped_total`. Deleted pages are reused, so the file stops growing. Returns the
/// pending rows dropped.
pub fn enforce_limits(
    conn: &mut Connection,
    limits: &Limits,
    free_disk: impl Fn() -> Option<u64>,
) -> Result<u64, StoreError> {
    let mut dropped = 0u64;
    // Bounded: each pass removes a chunk, and a database holds finitely many.
    for _ in 0..10_000 {
        let rows = i64::try_from(counts(conn)?.readings).unwrap_or(i64::MAX);
        let (used, room): (i64, i64) = conn
            .prepare_cached(
                "SELECT (page_count - freelist_count) * page_size, freelist_count * page_size
                 FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let over_rows = u64::try_from(rows).unwrap_or(0) > limits.max_rows;
        let over_size = u64::try_from(used).unwrap_or(0) > limits.max_size;
        let low_disk =
            room < LOW_DISK_ROOM && free_disk().is_some_and(|free| free < limits.min_free_disk);
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
            add_dropped(&tx, u64::try_from(pending).unwrap_or(0))?;
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

/// One sampling cycle on its way to the buffer.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub readings: Vec<Reading>,
    pub clock: ClockQuality,
    pub boot: BootTime,
}

/// Readings held in memory at most while the buffer cannot take them: about a day
/// and a half of 24 sensors every 5 minutes, a megabyte or two.
pub const MAX_HELD: usize = 10_000;

/// Cycles the buffer could not take yet (a full disk, a failing card), oldest first.
/// They are stored, in order and before anything newer, as soon as a write succeeds;
/// past [`MAX_HELD`] readings the oldest held go and are counted in `dropped_total`
/// once the buffer takes writes again. What is held when the agent stops is lost,
/// and said so.
#[derive(Debug, Default)]
pub struct Held {
    state: std::sync::Mutex<HeldState>,
}

#[derive(Debug, Default)]
struct HeldState {
    cycles: std::collections::VecDeque<Cycle>,
    readings: usize,
    /// Held readings dropped for room and not yet added to `dropped_total`.
    dropped: u64,
}

impl Held {
    /// Readings waiting in memory.
    pub fn len(&self) -> usize {
        self.lock().readings
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeldState> {
        // A panic while holding the lock cannot leave the queue half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let state = self.lock();
        if state.readings > 0 {
            tracing::error!(
                readings = state.readings,
                "stopping with readings the buffer never took (disk full?): they are lost"
            );
        }
    }
}

/// What [`store_cycle`] did: the seqs given to this call's readings, first and last
/// (`None` when nothing was stored), and how many readings are still held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub seqs: Option<(i64, i64)>,
    pub held: usize,
    /// Readings the server did not have that this call dropped (limits, or held in
    /// memory past their bound).
    pub dropped: u64,
    /// How full the buffer is against its nearer limit, rows or size: 0.0 to 1.0.
    pub fill: f64,
}

/// Stores `cycle` after any cycles held from earlier failures, in order, then keeps
/// the buffer within `limits`. A cycle the database refuses (disk full) is kept in
/// `held` and the error returned; the next call tries again.
pub fn store_cycle(
    conn: &mut Connection,
    held: &Held,
    cycle: Cycle,
    limits: &Limits,
    free_disk: impl Fn() -> Option<u64>,
) -> Result<Stored, StoreError> {
    let mut state = held.lock();
    state.readings += cycle.readings.len();
    state.cycles.push_back(cycle);
    while state.readings > MAX_HELD {
        let Some(oldest) = state.cycles.pop_front() else {
            break;
        };
        state.readings -= oldest.readings.len();
        state.dropped += oldest.readings.len() as u64;
    }
    let mut seqs: Option<(i64, i64)> = None;
    let mut made_room = false;
    let mut dropped = 0;
    while let Some(next) = state.cycles.front() {
        let mut inserted = insert_cycle(conn, &next.readings, next.clock, &next.boot);
        if inserted.is_err() && !made_room {
            // A full file on a low disk: the oldest rows make way, then once more.
            made_room = true;
            match enforce_limits(conn, limits, &free_disk) {
                Ok(n) => dropped += n,
                Err(err) => tracing::warn!(error = %err, "cannot make room in the buffer"),
            }
            inserted = insert_cycle(conn, &next.readings, next.clock, &next.boot);
        }
        match inserted {
            Ok(got) => {
                if let Some((first, last)) = got {
                    seqs = Some((seqs.map_or(first, |s| s.0), last));
                }
                state.readings -= next.readings.len();
                state.cycles.pop_front();
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    held = state.readings,
                    "the buffer cannot take readings: holding them in memory until it can"
                );
                return Err(err);
            }
        }
    }
    if state.dropped > 0 {
        add_dropped(conn, state.dropped)?;
        tracing::error!(
            dropped = state.dropped,
            "readings held in memory while the buffer was full were dropped, oldest first"
        );
        dropped += state.dropped;
        state.dropped = 0;
    }
    dropped += enforce_limits(conn, limits, &free_disk)?;
    Ok(Stored {
        seqs,
        held: state.readings,
        dropped,
        fill: fill(conn, limits)?,
    })
}

/// How full the buffer is against the nearer of its row and size limits.
fn fill(conn: &Connection, limits: &Limits) -> Result<f64, StoreError> {
    let rows = counts(conn)?.readings as f64;
    let used: i64 = conn
        .prepare_cached(
            "SELECT (page_count - freelist_count) * page_size
             FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
        )?
        .query_row([], |r| r.get(0))?;
    let by_rows = rows / (limits.max_rows.max(1) as f64);
    let by_size = used as f64 / (limits.max_size.max(1) as f64);
    Ok(by_rows.max(by_size).min(1.0))
}

fn add_dropped(conn: &Connection, n: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('dropped_total', ?1)
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?1",
        [i64::try_from(n).unwrap_or(i64::MAX)],
    )?;
    Ok(())
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
    Ok(conn
        .prepare_cached("SELECT readings, acked, dead FROM counts")?
        .query_row([], |r| {
            Ok(Counts {
                readings: n(r.get(0)?),
                acked: n(r.get(1)?),
                dead: n(r.get(2)?),
            })
        })?)
}

/// Free pages kept inside the file when compacting: room for the next readings, so
/// a card that is nearly full does not see the file shrink and grow back (and the
/// low-disk cap drop readings to make the room again). 256 pages: 1 MiB.
pub const COMPACT_RESERVE_PAGES: i64 = 256;

/// What [`compact`] gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Bytes of free pages returned to the filesystem by incremental vacuum.
    pub released_bytes: u64,
    /// Whether the WAL could be checkpointed whole and truncated (a reader holding an
    /// old snapshot, such as a long export, defers that to the next time).
    pub wal_truncated: bool,
}

/// Keeps the file compact without a full VACUUM (which rewrites the whole database,
/// an SD card's worst case): frees pages beyond [`COMPACT_RESERVE_PAGES`] with
/// incremental vacuum, then checkpoints and truncates the WAL.
pub fn compact(conn: &mut Connection) -> Result<Compacted, StoreError> {
    let (free, page_size): (i64, i64) = conn.query_row(
        "SELECT freelist_count, page_size FROM pragma_freelist_count(), pragma_page_size()",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let release = (free - COMPACT_RESERVE_PAGES).max(0);
    if release > 0 {
        // The pragma frees pages a step at a time: step it to the end.
        let mut vacuum = conn.prepare(&format!("PRAGMA incremental_vacuum({release})"))?;
        let mut steps = vacuum.raw_query();
        while steps.next()?.is_some() {}
    }
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(Compacted {
        released_bytes: u64::try_from(release * page_size).unwrap_or(0),
        wal_truncated: busy == 0,
    })
}

/// Readings not yet acknowledged (dead letters excluded).
pub fn pending_count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(counts(conn)?.pending())
}

#[cfg(test)]
mod tests;
