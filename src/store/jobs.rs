//! Job bookkeeping in `buffer.db`: counters, the last run, the next due time, and a
//! bounded history of runs.
//!
//! Invariants: counters only ever grow by increments made in SQL, so the agent and a
//! CLI `job run` in another process can both record runs without overwriting each other;
//! a run row is inserted when it starts and completed when it ends, so a run cut off by
//! a crash is visible and is closed as `aborted` by the next start-up; at most
//! [`HISTORY`] runs are kept per job.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::time::from_millis;

/// Runs kept per job.
pub const HISTORY: i64 = 50;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Killed at its timeout.
    Timeout,
    /// Stopped by shutdown.
    Cancelled,
    /// Cut off by a crash of the process running it.
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Aborted => "aborted",
        }
    }

    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }
}

/// Lifecycle state kept across restarts (`running` is derived from open run rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    Paused,
    Completed,
    Failed,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Paused => "paused",
            Lifecycle::Completed => "completed",
            Lifecycle::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Lifecycle {
        match s {
            "paused" => Lifecycle::Paused,
            "completed" => Lifecycle::Completed,
            "failed" => Lifecycle::Failed,
            _ => Lifecycle::Active,
        }
    }
}

/// Where a run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Schedule,
    Manual,
}

/// One job's persisted record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub name: String,
    pub kind: String,
    pub state: Lifecycle,
    pub running: bool,
    pub runs: u64,
    pub successes: u64,
    pub failures: u64,
    pub missed: u64,
    pub skipped: u64,
    pub last_start: Option<DateTime<Utc>>,
    pub last_duration_ms: Option<u64>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub next_due: Option<DateTime<Utc>>,
    pub last_nominal: Option<DateTime<Utc>>,
}

/// One run from the history.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub origin: String,
    pub started: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// Makes sure a row exists for the job.
pub fn ensure(conn: &Connection, name: &str, kind: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO job_state (name, kind) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET kind = excluded.kind",
    )?
    .execute(params![name, kind])?;
    Ok(())
}

/// Records the start of a run and returns its id.
pub fn start_run(
    conn: &Connection,
    name: &str,
    origin: Origin,
    started: DateTime<Utc>,
    nominal: Option<DateTime<Utc>>,
) -> Result<i64, StoreError> {
    let origin = match origin {
        Origin::Schedule => "schedule",
        Origin::Manual => "manual",
    };
    conn.prepare_cached(
        "INSERT INTO job_runs (job, origin, pid, nominal_ms, started_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        name,
        origin,
        std::process::id(),
        nominal.map(|t| t.timestamp_millis()),
        started.timestamp_millis()
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "UPDATE job_state SET last_start_ms = ?2,
                last_nominal_ms = coalesce(?3, last_nominal_ms)
         WHERE name = ?1",
    )?
    .execute(params![
        name,
        started.timestamp_millis(),
        nominal.map(|t| t.timestamp_millis())
    ])?;
    Ok(id)
}

/// Records how a run ended, in one transaction with the counters and the history cap.
pub fn finish_run(
    conn: &mut Connection,
    name: &str,
    run_id: i64,
    outcome: Outcome,
    error: Option<&str>,
    duration_ms: u64,
    attempts: u32,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    finish_in(&tx, name, run_id, outcome, error, duration_ms, attempts)?;
    tx.commit()?;
    Ok(())
}

/// Records a whole run, start and outcome, in one transaction: what a short run
/// writes, once, when it has ended.
#[allow(clippy::too_many_arguments)]
pub fn record_run(
    conn: &mut Connection,
    name: &str,
    origin: Origin,
    started: DateTime<Utc>,
    nominal: Option<DateTime<Utc>>,
    outcome: Outcome,
    error: Option<&str>,
    duration_ms: u64,
    attempts: u32,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let id = start_run(&tx, name, origin, started, nominal)?;
    finish_in(&tx, name, id, outcome, error, duration_ms, attempts)?;
    tx.commit()?;
    Ok(())
}

fn finish_in(
    tx: &Connection,
    name: &str,
    run_id: i64,
    outcome: Outcome,
    error: Option<&str>,
    duration_ms: u64,
    attempts: u32,
) -> Result<(), StoreError> {
    let duration = i64::try_from(duration_ms).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "UPDATE job_runs SET outcome = ?2, error = ?3, duration_ms = ?4, attempts = ?5
         WHERE id = ?1",
    )?
    .execute(params![run_id, outcome.as_str(), error, duration, attempts])?;
    let ok = i64::from(outcome.is_success());
    tx.prepare_cached(
        "UPDATE job_state SET runs = runs + 1, successes = successes + ?2,
                failures = failures + (1 - ?2), last_outcome = ?3, last_error = ?4,
                last_duration_ms = ?5
         WHERE name = ?1",
    )?
    .execute(params![name, ok, outcome.as_str(), error, duration])?;
    count_outcome(tx, name, outcome.as_str())?;
    tx.prepare_cached(
        "INSERT INTO job_durations (job, le_ms, runs) VALUES (?1, ?2, 1)
         ON CONFLICT (job, le_ms) DO UPDATE SET runs = runs + 1",
    )?
    .execute(params![name, bucket_of(duration_ms)])?;
    tx.prepare_cached(
        "UPDATE job_state SET duration_ms_sum = duration_ms_sum + ?2 WHERE name = ?1",
    )?
    .execute(params![name, duration])?;
    tx.prepare_cached(
        "DELETE FROM job_runs WHERE job = ?1 AND id <= (
             SELECT id FROM job_runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![name, HISTORY])?;
    Ok(())
}

fn count_outcome(tx: &Connection, name: &str, outcome: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO job_outcomes (job, outcome, runs) VALUES (?1, ?2, 1)
         ON CONFLICT (job, outcome) DO UPDATE SET runs = runs + 1",
    )?
    .execute(params![name, outcome])?;
    Ok(())
}

/// The upper bounds, in milliseconds, of the buckets run durations are counted in:
/// from a heartbeat's few milliseconds to an hour-long command job.
pub const DURATION_BUCKETS_MS: [u64; 16] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
    3_600_000,
];

/// The bucket a run of `duration_ms` is counted in: the first bound it does not
/// pass, `i64::MAX` past the last.
fn bucket_of(duration_ms: u64) -> i64 {
    DURATION_BUCKETS_MS
        .iter()
        .find(|&&le| duration_ms <= le)
        .and_then(|&le| i64::try_from(le).ok())
        .unwrap_or(i64::MAX)
}

/// What `/metrics` reports of one job's runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    /// Runs by outcome (`success`, `failure`, `timeout`, `cancelled`, `aborted`).
    pub outcomes: Vec<(String, u64)>,
    /// Runs with a known duration at or under each of [`DURATION_BUCKETS_MS`]
    /// (cumulative), then all of them.
    pub le: [u64; DURATION_BUCKETS_MS.len()],
    pub count: u64,
    pub sum_ms: u64,
}

/// Each job's [`RunStats`], by name.
pub fn run_stats(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<String, RunStats>, StoreError> {
    let mut stats: std::collections::BTreeMap<String, RunStats> = Default::default();
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut stmt = conn.prepare_cached("SELECT job, outcome, runs FROM job_outcomes")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let s = stats.entry(r.get(0)?).or_default();
        s.outcomes.push((r.get(1)?, count(r.get(2)?)));
    }
    let mut stmt = conn.prepare_cached("SELECT job, le_ms, runs FROM job_durations")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let s = stats.entry(r.get(0)?).or_default();
        let (le_ms, runs) = (count(r.get(1)?), count(r.get(2)?));
        // A bucket of an earlier build's bounds counts under every bound above it.
        for (i, bound) in DURATION_BUCKETS_MS.iter().enumerate() {
            if le_ms <= *bound {
                s.le[i] += runs;
            }
        }
        s.count += runs;
    }
    let mut stmt = conn.prepare_cached("SELECT name, duration_ms_sum FROM job_state")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(s) = stats.get_mut(&r.get::<_, String>(0)?) {
            s.sum_ms = count(r.get(1)?);
        }
    }
    Ok(stats)
}

/// Adds to the missed count (fires later than their grace, or lost to downtime).
pub fn add_missed(conn: &Connection, name: &str, count: u64) -> Result<(), StoreError> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    conn.prepare_cached("UPDATE job_state SET missed = missed + ?2 WHERE name = ?1")?
        .execute(params![name, count])?;
    Ok(())
}

/// Adds one to the skipped count (a fire while the previous run still ran).
pub fn add_skipped(conn: &Connection, name: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE job_state SET skipped = skipped + 1 WHERE name = ?1")?
        .execute([name])?;
    Ok(())
}

pub fn set_state(conn: &Connection, name: &str, state: Lifecycle) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE job_state SET state = ?2 WHERE name = ?1")?
        .execute(params![name, state.as_str()])?;
    Ok(())
}

pub fn set_next_due(
    conn: &Connection,
    name: &str,
    due: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE job_state SET next_due_ms = ?2 WHERE name = ?1")?
        .execute(params![name, due.map(|t| t.timestamp_millis())])?;
    Ok(())
}

/// Closes runs left open by a process that no longer exists: they were cut off.
/// Returns how many were closed.
pub fn abort_orphaned_runs(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let open: Vec<(i64, String, i64)> = {
        let mut stmt = tx.prepare("SELECT id, job, pid FROM job_runs WHERE outcome IS NULL")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut closed = 0;
    for (id, job, pid) in open {
        if pid_alive(pid) && pid != i64::from(std::process::id()) {
            continue;
        }
        tx.prepare_cached(
            "UPDATE job_runs SET outcome = 'aborted', error = 'the process running it stopped'
             WHERE id = ?1",
        )?
        .execute([id])?;
        tx.prepare_cached(
            "UPDATE job_state SET runs = runs + 1, failures = failures + 1,
                    last_outcome = 'aborted', last_error = 'the process running it stopped'
             WHERE name = ?1",
        )?
        .execute([&job])?;
        count_outcome(&tx, &job, Outcome::Aborted.as_str())?;
        closed += 1;
    }
    tx.commit()?;
    Ok(closed)
}

fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

const RECORD_COLUMNS: &str = "s.name, s.kind, s.state, s.runs, s.successes, s.failures, s.missed, s.skipped,
     s.last_start_ms, s.last_duration_ms, s.last_outcome, s.last_error, s.next_due_ms,
     s.last_nominal_ms, EXISTS (SELECT 1 FROM job_runs r WHERE r.job = s.name AND r.outcome IS NULL)";

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let count =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    let time = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(r.get::<_, Option<i64>>(i)?.and_then(from_millis))
    };
    Ok(JobRecord {
        name: r.get(0)?,
        kind: r.get(1)?,
        state: Lifecycle::parse(&r.get::<_, String>(2)?),
        runs: count(3)?,
        successes: count(4)?,
        failures: count(5)?,
        missed: count(6)?,
        skipped: count(7)?,
        last_start: time(8)?,
        last_duration_ms: r
            .get::<_, Option<i64>>(9)?
            .map(|v| u64::try_from(v).unwrap_or(0)),
        last_outcome: r.get(10)?,
        last_error: r.get(11)?,
        next_due: time(12)?,
        last_nominal: time(13)?,
        running: r.get(14)?,
    })
}

/// Every job's record, by name.
pub fn all(conn: &Connection) -> Result<Vec<JobRecord>, StoreError> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM job_state s ORDER BY s.name");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], record_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM job_state s WHERE s.name = ?1");
    Ok(conn.query_row(&sql, [name], record_from_row).optional()?)
}

/// The most recent runs of a job, newest first.
pub fn history(conn: &Connection, name: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, origin, started_ms, duration_ms, attempts, outcome, error
         FROM job_runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![name, limit], |r| {
            Ok(RunRecord {
                id: r.get(0)?,
                origin: r.get(1)?,
                started: r.get::<_, i64>(2).map(from_millis)?,
                duration_ms: r
                    .get::<_, Option<i64>>(3)?
                    .map(|v| u64::try_from(v).unwrap_or(0)),
                attempts: r.get(4)?,
                outcome: r.get(5)?,
                error: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
