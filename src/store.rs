//! The agent's one SQLite database, `{state_dir}/buffer.db`, and the one thread that
//! writes to it.
//!
//! Invariants: every connection in the program is made by [`open`], so every one has
//! WAL, `synchronous = NORMAL`, a busy timeout and the current schema. Inside the agent
//! exactly one thread owns the writing connection ([`StoreHandle`]); other processes
//! (the CLI) open their own connection and keep their transactions short. The database
//! `epoch` is made once, when the file is created. This module knows tables and
//! transactions, not scheduling: it never decides when anything runs.
//!
//! Durability: WAL with `synchronous = NORMAL` cannot corrupt on power loss; it can
//! lose the last commits since the last checkpoint's sync. For job bookkeeping that
//! loses at most a few counter increments.

pub mod alarms;
pub mod events;
pub mod inspect;
pub mod jobs;
pub mod readings;
pub mod recover;
mod schema;
pub mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// File name of the database inside `state_dir`.
pub const DB_FILE: &str = "buffer.db";

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} was written by a newer tidegate (schema {found}, this build knows {known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("no database at {path}: the agent has stored nothing with this state_dir")]
    Missing { path: PathBuf },
    #[error(
        "database {path} has schema {found}, this build needs {known}: start the agent once to upgrade it"
    )]
    TooOld {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database writer has stopped")]
    WriterGone,
}

/// Opens (creating if needed) the database in `state_dir` and brings its schema up to
/// date.
pub fn open(state_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(state_dir).map_err(|source| StoreError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join(DB_FILE);
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    #[allow(clippy::disallowed_methods)]
    let mut conn = Connection::open(&path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // Page size and auto-vacuum only take effect before the first table exists.
    conn.execute_batch(
        "PRAGMA page_size = 4096;
         PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA journal_size_limit = 8388608;",
    )
    .map_err(open_err)?;
    schema::migrate(&mut conn, &path)?;
    Ok(conn)
}

/// Opens the database in `state_dir` for a command beside a running agent: never
/// creates it (a missing file is [`StoreError::Missing`]) and never migrates it (a
/// schema other than this build's is an error), but waits for the agent's writer like
/// [`open`] does. Journal mode and the rest are properties of the file, set by `open`.
pub fn open_existing(state_dir: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let path = state_dir.join(DB_FILE);
    if !path.is_file() {
        return Err(StoreError::Missing { path });
    }
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    // Without SQLITE_OPEN_CREATE: a file removed since the check above stays missing.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    schema::check(&conn, &path)?;
    Ok(conn)
}

/// The database's epoch: a random id made when it was created.
pub fn epoch(conn: &Connection) -> Result<String, StoreError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })?,
    )
}

type Call = Box<dyn FnOnce(&mut Connection) + Send>;

/// The clonable side of the writer thread: every write of the agent goes through it.
#[derive(Clone)]
pub struct StoreHandle {
    tx: std::sync::mpsc::Sender<Call>,
    progress: Arc<AtomicU64>,
}

impl StoreHandle {
    /// Moves `conn` into a new writer thread. The thread ends when the last handle is
    /// dropped, checkpointing the WAL on its way out.
    pub fn spawn(conn: Connection) -> StoreHandle {
        let (tx, rx) = std::sync::mpsc::channel::<Call>();
        let progress = Arc::new(AtomicU64::new(0));
        let spawned = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(call) = rx.recv() {
                    call(&mut conn);
                }
                if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                    tracing::warn!(error = %err, "final checkpoint failed");
                }
            });
        if let Err(err) = spawned {
            // Without a thread every call reports WriterGone; the agent says so.
            tracing::error!(error = %err, "cannot start the database writer thread");
        }
        StoreHandle { tx, progress }
    }

    /// Runs `f` on the writer thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let progress = Arc::clone(&self.progress);
        let call: Call = Box::new(move |conn| {
            let outcome = f(conn);
            progress.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(outcome);
        });
        self.tx.send(call).map_err(|_| StoreError::WriterGone)?;
        result.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `f` on the writer thread without waiting for it; a failure is logged
    /// there with `what`. Calls run in the order they were queued.
    pub fn submit<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&mut Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let progress = Arc::clone(&self.progress);
        let call: Call = Box::new(move |conn| {
            if let Err(error) = f(conn) {
                tracing::error!(%error, "{what}");
            }
            progress.fetch_add(1, Ordering::Relaxed);
        });
        if self.tx.send(call).is_err() {
            tracing::error!("{what}: the database writer has stopped");
        }
    }

    /// How many calls the writer has finished: the watchdog's proof of progress.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
