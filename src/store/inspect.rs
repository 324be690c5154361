//! The operator's view of the reading buffer (`tidegate buffer …`): its figures, the
//! readings themselves, and the one operator action on it, putting dead letters back
//! in the queue.
//!
//! Invariants: everything here runs beside a live agent, so no read holds a
//! transaction for longer than a bounded amount of work. Figures come from the
//! trigger-kept `counts` row and from indexes, never from a scan of `readings`; an
//! export goes through [`Pages`], each page its own short read, so the agent's writes
//! and WAL checkpoints go on while millions of rows are streamed out. Nothing here
//! decides what the uploader sends or when.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};

use super::StoreError;
use super::readings;
use crate::time::from_millis;

/// What `buffer stats` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Readings the server does not have yet and may still take (dead letters excluded).
    pub pending: u64,
    /// Readings the server acknowledged, kept until their retention passes.
    pub uploaded: u64,
    /// Readings the server refused, isolated in the dead letter.
    pub dead_letter: u64,
    /// Pending readings dropped at a size cap since the database was created.
    pub dropped_total: u64,
    /// When the pending reading that has waited longest (the lowest seq) was taken.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// The database file plus its WAL; `None` when the files cannot be measured.
    pub db_bytes: Option<u64>,
    pub epoch: String,
    pub upload: UploadStatus,
}

/// What the uploader last recorded in `meta`, where it records anything: every field
/// is `None` when its key is absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadStatus {
    pub last_ok: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The reason uploading is paused (401/403), as recorded.
    pub paused: Option<String>,
}

/// The oldest pending reading through the partial index `readings_pending`: it holds
/// only unacknowledged rows, so however many uploaded rows come first the answer is a
/// few page reads. Dead letters are skipped one index probe each (there are few).
const OLDEST_PENDING: &str = "SELECT r.ts FROM readings AS r INDEXED BY readings_pending
     WHERE r.acked_ms IS NULL
       AND NOT EXISTS (SELECT 1 FROM dead_letter d WHERE d.seq = r.seq)
     ORDER BY r.seq LIMIT 1";

/// The buffer's figures, from one consistent snapshot. Costs the same for ten rows as
/// for ten million.
pub fn stats(conn: &Connection) -> Result<Stats, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let counts = readings::counts(&tx)?;
    let dropped_total = readings::dropped_total(&tx)?;
    let oldest: Option<i64> = tx.query_row(OLDEST_PENDING, [], |r| r.get(0)).optional()?;
    let epoch = super::epoch(&tx)?;
    let upload = upload_status(&tx)?;
    tx.commit()?;
    Ok(Stats {
        pending: counts.pending(),
        uploaded: counts.acked,
        dead_letter: counts.dead,
        dropped_total,
        oldest_pending: oldest.and_then(from_millis),
        db_bytes: conn.path().and_then(|p| db_bytes(Path::new(p))),
        epoch,
        upload,
    })
}

/// The database file plus its `-wal` (absent: 0); `None` when the file itself cannot be
/// measured.
fn db_bytes(path: &Path) -> Option<u64> {
    let main = std::fs::metadata(path).ok()?.len();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::fs::metadata(wal).map_or(0, |m| m.len());
    Some(main + wal)
}

fn upload_status(conn: &Connection) -> Result<UploadStatus, StoreError> {
    let mut status = UploadStatus::default();
    let mut stmt = conn.prepare(
        "SELECT key, value FROM meta
         WHERE key IN ('upload_last_ok_ms', 'upload_last_error', 'upload_paused')",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (key, value) = row?;
        match key.as_str() {
            "upload_last_ok_ms" => {
                status.last_ok = value.trim().parse().ok().and_then(from_millis);
            }
            "upload_last_error" if !value.is_empty() => status.last_error = Some(value),
            "upload_paused" if !matches!(value.as_str(), "" | "0" | "false") => {
                status.paused = Some(value);
            }
            _ => {}
        }
    }
    Ok(status)
}

/// Where a reading is on its way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting to be sent (or being sent).
    Pending,
    /// Acknowledged by the server.
    Uploaded,
    /// Refused by the server and isolated; waits for `requeue-dead`.
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Uploaded => "uploaded",
            State::Dead => "dead",
        }
    }

    fn condition(self) -> &'static str {
        match self {
            State::Pending => "r.acked_ms IS NULL AND d.seq IS NULL",
            State::Uploaded => "r.acked_ms IS NOT NULL AND d.seq IS NULL",
            State::Dead => "d.seq IS NOT NULL",
        }
    }
}

/// A reading as the buffer holds it, with the upload fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub seq: i64,
    pub sensor: String,
    /// UTC milliseconds since the epoch.
    pub ts_ms: i64,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub quality: String,
    pub clock: String,
    pub error: Option<String>,
    pub state: State,
}

impl StoredReading {
    /// `None` only for a time chrono cannot represent.
    pub fn ts(&self) -> Option<DateTime<Utc>> {
        from_millis(self.ts_ms)
    }

    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReading> {
        let acked: bool = r.get(8)?;
        let dead: bool = r.get(9)?;
        Ok(StoredReading {
            seq: r.get(0)?,
            sensor: r.get(1)?,
            ts_ms: r.get(2)?,
            value: r.get(3)?,
            unit: r.get(4)?,
            quality: r.get(5)?,
            clock: r.get(6)?,
            error: r.get(7)?,
            state: if dead {
                State::Dead
            } else if acked {
                State::Uploaded
            } else {
                State::Pending
            },
        })
    }
}

/// Every column a [`StoredReading`] needs, in `from_row`'s order.
const SELECT: &str = "SELECT r.seq, r.sensor, r.ts, r.value, r.unit, r.quality, r.clock,
            r.error, r.acked_ms IS NOT NULL, d.seq IS NOT NULL
     FROM readings r LEFT JOIN dead_letter d ON d.seq = r.seq";

/// Which readings to show. Empty means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<State>,
    /// Any of these sensors.
    pub sensors: Vec<String>,
    /// Taken at or after (UTC milliseconds).
    pub since_ms: Option<i64>,
    /// Taken before (UTC milliseconds).
    pub until_ms: Option<i64>,
}

impl Filter {
    /// Appends ` AND …` for each condition to `sql`, and its parameters to `params`.
    fn push_conditions(&self, sql: &mut String, params: &mut Vec<Value>) {
        if let Some(state) = self.state {
            sql.push_str(" AND ");
            sql.push_str(state.condition());
        }
        if !self.sensors.is_empty() {
            let marks = vec!["?"; self.sensors.len()].join(", ");
            sql.push_str(&format!(" AND r.sensor IN ({marks})"));
            params.extend(self.sensors.iter().cloned().map(Value::Text));
        }
        if let Some(since) = self.since_ms {
            sql.push_str(" AND r.ts >= ?");
            params.push(Value::Integer(since));
        }
        if let Some(until) = self.until_ms {
            sql.push_str(" AND r.ts < ?");
            params.push(Value::Integer(until));
        }
    }
}

/// The newest `limit` readings that match `filter` (by seq: the order they were
/// stored), oldest first. One read; without a time filter it walks back from the
/// newest row, with one it may scan the table (there is no index on `ts`: every
/// reading would pay for it on the SD card, for a query an operator runs by hand).
pub fn newest(
    conn: &Connection,
    filter: &Filter,
    limit: u32,
) -> Result<Vec<StoredReading>, StoreError> {
    let mut sql = format!("{SELECT} WHERE 1");
    let mut params = Vec::new();
    filter.push_conditions(&mut sql, &mut params);
    sql.push_str(" ORDER BY r.seq DESC LIMIT ?");
    params.push(Value::Integer(i64::from(limit)));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt
        .query_map(params_from_iter(params), StoredReading::from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// Readings matching a filter, in seq order, a page at a time: each page is one short
/// read of at most `chunk` consecutive seqs, and nothing is held between pages, so an
/// export of any size holds neither memory nor a read transaction for its whole run.
///
/// The export ends at the newest seq that existed when it started: readings stored
/// meanwhile belong to the next export, and a busy agent cannot keep it running for
/// ever. A reading acknowledged, corrected or pruned during the export shows as it was
/// when its page was read.
#[derive(Debug)]
pub struct Pages {
    filter: Filter,
    chunk: i64,
    /// Every seq up to this one has been read.
    done: i64,
    /// The newest seq when the export started.
    last: i64,
}

impl Pages {
    pub fn start(conn: &Connection, filter: Filter, chunk: u32) -> Result<Pages, StoreError> {
        let last: Option<i64> =
            conn.query_row("SELECT max(seq) FROM readings", [], |r| r.get(0))?;
        Ok(Pages {
            filter,
            chunk: i64::from(chunk.max(1)),
            done: 0,
            last: last.unwrap_or(0),
        })
    }

    /// The next page with at least one matching reading, or `None` at the end. Ranges
    /// of seqs with no rows (pruned, dropped) are stepped over in one lookup.
    pub fn next_page(
        &mut self,
        conn: &Connection,
    ) -> Result<Option<Vec<StoredReading>>, StoreError> {
        let mut sql = format!("{SELECT} WHERE r.seq BETWEEN ? AND ?");
        let mut params = vec![Value::Null, Value::Null];
        self.filter.push_conditions(&mut sql, &mut params);
        sql.push_str(" ORDER BY r.seq");
        while self.done < self.last {
            let first: Option<i64> = conn
                .prepare_cached("SELECT min(seq) FROM readings WHERE seq > ?1")?
                .query_row([self.done], |r| r.get(0))?;
            let Some(first) = first.filter(|&f| f <= self.last) else {
                self.done = self.last;
                break;
            };
            let end = first.saturating_add(self.chunk - 1).min(self.last);
            params[0] = Value::Integer(first);
            params[1] = Value::Integer(end);
            let page = conn
                .prepare_cached(&sql)?
                .query_map(params_from_iter(&params), StoredReading::from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            self.done = end;
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }
}

/// Puts every dead-letter reading back in the queue, in one IMMEDIATE transaction:
/// their rows in `dead_letter` go, the readings themselves never left `readings`, so
/// the uploader sends them with the next pending batch. Returns how many.
pub fn requeue_dead(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // An open batch whose range spans a dead letter would gain a reading under a key
    // that promised the same readings on every retry: it is forgotten, and what it
    // held goes out again in new batches with new keys.
    tx.execute(
        "DELETE FROM batches WHERE EXISTS (
             SELECT 1 FROM dead_letter d WHERE d.seq BETWEEN batches.first_seq AND batches.last_seq)",
        [],
    )?;
    let requeued = tx.execute("DELETE FROM dead_letter", [])?;
    tx.commit()?;
    Ok(requeued)
}

#[cfg(test)]
mod tests;
