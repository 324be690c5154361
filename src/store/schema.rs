//! The schema of `buffer.db` and its migrations.
//!
//! Invariants: `PRAGMA user_version` is the number of migrations applied; migrations
//! only ever append to [`MIGRATIONS`], each runs in one `BEGIN IMMEDIATE` transaction,
//! and a database from a newer build is refused rather than guessed at.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Each entry upgrades the schema by one version.
const MIGRATIONS: &[&str] = &[
    // 1: identity and job bookkeeping.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     ) STRICT;
     -- One row per job name ever scheduled: counters and the last run, across restarts.
     CREATE TABLE job_state (
         name             TEXT PRIMARY KEY,
         kind             TEXT NOT NULL,
         state            TEXT NOT NULL DEFAULT 'active',  -- active | paused | completed | failed
         runs             INTEGER NOT NULL DEFAULT 0,
         successes        INTEGER NOT NULL DEFAULT 0,
         failures         INTEGER NOT NULL DEFAULT 0,
         missed           INTEGER NOT NULL DEFAULT 0,
         skipped          INTEGER NOT NULL DEFAULT 0,
         last_start_ms    INTEGER,
         last_duration_ms INTEGER,
         last_outcome     TEXT,
         last_error       TEXT,
         next_due_ms      INTEGER,
         last_nominal_ms  INTEGER   -- the scheduled time of the last fire, for catch-up
     ) STRICT;
     -- Recent runs, newest kept; a row without an outcome is a run in progress.
     CREATE TABLE job_runs (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         job         TEXT NOT NULL,
         origin      TEXT NOT NULL,      -- schedule | manual
         pid         INTEGER NOT NULL,   -- the process running it
         nominal_ms  INTEGER,            -- when it was due; null for manual runs
         started_ms  INTEGER NOT NULL,
         duration_ms INTEGER,
         attempts    INTEGER NOT NULL DEFAULT 1,
         outcome     TEXT,               -- success | failure | timeout | cancelled | aborted
         error       TEXT
     ) STRICT;
     CREATE INDEX job_runs_by_job ON job_runs (job, id);",
    // 2: readings, in the contract's shape (SPEC sections 3 and 8).
    "-- AUTOINCREMENT: a seq is never reused, even after the newest rows are gone.
     CREATE TABLE readings (
         seq      INTEGER PRIMARY KEY AUTOINCREMENT,
         sensor   TEXT NOT NULL,
         ts       INTEGER NOT NULL,      -- UTC milliseconds since the epoch
         value    REAL,                  -- null for a bad reading
         unit     TEXT,
         quality  TEXT NOT NULL,         -- good | bad | uncertain
         clock    TEXT NOT NULL,         -- synced | corrected | unsynced
         error    TEXT,
         boot_id  TEXT NOT NULL,         -- the boot it was taken in, and its time
         boot_ms  INTEGER NOT NULL,      --   since boot, to re-stamp it later
         acked_ms INTEGER                -- when the server acknowledged it
     ) STRICT;
     CREATE INDEX readings_pending ON readings (seq) WHERE acked_ms IS NULL;
     -- What the server does not have yet.
     CREATE VIEW pending AS
         SELECT seq, sensor, ts, value, unit, quality, clock, error
         FROM readings WHERE acked_ms IS NULL;",
    // 3: upload batches and the dead letter (SPEC section 4).
    "-- A batch is a fixed seq range, recorded before it is first sent, so a retry (after a
     -- crash too) carries the same Idempotency-Key and the same readings. Open batches
     -- only: a delivered batch's row is deleted as its readings are acknowledged.
     CREATE TABLE batches (
         first_seq   INTEGER PRIMARY KEY,
         last_seq    INTEGER NOT NULL,
         created_ms  INTEGER NOT NULL,
         attempts    INTEGER NOT NULL DEFAULT 0,
         last_status INTEGER,           -- the last HTTP status, null for a network error
         last_error  TEXT
     ) STRICT;
     -- Readings the server refused, isolated one by one. The reading itself stays in
     -- `readings` (so seqs stay dense there); requeue-dead deletes rows here.
     CREATE TABLE dead_letter (
         seq      INTEGER PRIMARY KEY REFERENCES readings (seq) ON DELETE CASCADE,
         batch    TEXT NOT NULL,        -- the key of the batch that isolated it
         status   INTEGER NOT NULL,     -- the HTTP status of the refusal
         response TEXT,                 -- the start of the server's answer
         dead_ms  INTEGER NOT NULL
     ) STRICT;
     -- Row counts, kept by triggers in the same transaction as the change: count(*)
     -- over millions of rows is too slow for every cycle's limits and every stats.
     CREATE TABLE counts (
         id       INTEGER PRIMARY KEY CHECK (id = 1),
         readings INTEGER NOT NULL,     -- rows in readings
         acked    INTEGER NOT NULL,     -- of which the server acknowledged
         dead     INTEGER NOT NULL      -- rows in dead_letter
     ) STRICT;
     INSERT INTO counts SELECT 1, count(*), count(acked_ms), 0 FROM readings;
     CREATE TRIGGER readings_counted_in AFTER INSERT ON readings BEGIN
         UPDATE counts SET readings = readings + 1, acked = acked + (NEW.acked_ms IS NOT NULL);
     END;
     CREATE TRIGGER readings_counted_out AFTER DELETE ON readings BEGIN
         UPDATE counts SET readings = readings - 1, acked = acked - (OLD.acked_ms IS NOT NULL);
     END;
     CREATE TRIGGER readings_counted_acked AFTER UPDATE OF acked_ms ON readings
     WHEN (OLD.acked_ms IS NULL) != (NEW.acked_ms IS NULL) BEGIN
         UPDATE counts SET acked = acked + (NEW.acked_ms IS NOT NULL) - (OLD.acked_ms IS NOT NULL);
     END;
     CREATE TRIGGER dead_counted_in AFTER INSERT ON dead_letter BEGIN
         UPDATE counts SET dead = dead + 1;
     END;
     CREATE TRIGGER dead_counted_out AFTER DELETE ON dead_letter BEGIN
         UPDATE counts SET dead = dead - 1;
     END;
     DROP VIEW pending;
     -- What the server does not have yet and may still take: dead letters excluded.
     CREATE VIEW pending AS
         SELECT seq, sensor, ts, value, unit, quality, clock, error
         FROM readings r
         WHERE acked_ms IS NULL
           AND NOT EXISTS (SELECT 1 FROM dead_letter d WHERE d.seq = r.seq);",
    // 4: alarm rules' state, so a raised alarm stays raised (and its job unrun) across
    // restarts. One row per rule id; a rule whose sensor changed starts over.
    "CREATE TABLE alarms (
         id         TEXT PRIMARY KEY,
         sensor     TEXT NOT NULL,
         phase      TEXT NOT NULL CHECK (phase IN ('ok', 'pending', 'raised')),
         since_ms   INTEGER,            -- pending or raised since this reading's ts
         last_value REAL,               -- the last good reading the rule saw
         last_ts_ms INTEGER
     ) STRICT;",
    // 5: events waiting for the broker, oldest first (at most 1000; `meta`
    // events_dropped_total counts the ones dropped to make room).
    "CREATE TABLE events (
         id       INTEGER PRIMARY KEY AUTOINCREMENT,
         ts_ms    INTEGER NOT NULL,
         kind     TEXT NOT NULL,
         severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
         subject  TEXT NOT NULL,
         message  TEXT NOT NULL
     ) STRICT;",
    // 6: what `/metrics` reports of each job's runs: how many ended in each outcome,
    // and a histogram of their durations (one row per bucket a run fell in, the
    // bucket named by its upper bound; i64::MAX past the last). A database from
    // before this counts its earlier runs as success or failure (timeouts included,
    // which it did not tell apart) and has no durations for them.
    "CREATE TABLE job_outcomes (
         job     TEXT NOT NULL,
         outcome TEXT NOT NULL,
         runs    INTEGER NOT NULL,
         PRIMARY KEY (job, outcome)
     ) STRICT, WITHOUT ROWID;
     INSERT INTO job_outcomes SELECT name, 'success', successes FROM job_state WHERE successes > 0;
     INSERT INTO job_outcomes SELECT name, 'failure', failures FROM job_state WHERE failures > 0;
     CREATE TABLE job_durations (
         job   TEXT NOT NULL,
         le_ms INTEGER NOT NULL,
         runs  INTEGER NOT NULL,
         PRIMARY KEY (job, le_ms)
     ) STRICT, WITHOUT ROWID;
     ALTER TABLE job_state ADD COLUMN duration_ms_sum INTEGER NOT NULL DEFAULT 0;",
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_to(conn, path, MIGRATIONS.len())
}

/// Applies the first `target` migrations (a test builds an older database with it).
pub(super) fn migrate_to(
    conn: &mut Connection,
    path: &Path,
    target: usize,
) -> Result<(), StoreError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (version, sql) in (1..)
        .zip(&MIGRATIONS[..target.min(MIGRATIONS.len())])
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)?;
        if version == 1 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', ?1)",
                [new_epoch()],
            )?;
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

/// Refuses a database whose schema is not this build's, for connections that must not
/// migrate it (the CLI beside a running agent).
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let path = path.to_path_buf();
    match found.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::TooOld { path, found, known }),
        std::cmp::Ordering::Greater => Err(StoreError::TooNew { path, found, known }),
    }
}

/// 128 random bits as lower-case hex.
fn new_epoch() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
