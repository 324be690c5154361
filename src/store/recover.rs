//! Start-up for the agent: a quick integrity check, and a corrupt database moved
//! aside for forensics so the gateway goes on buffering in a new one.
//!
//! Invariants: a damaged file is never written to and never deleted by the check; it
//! is renamed with its `-wal` and `-shm`, and the new database gets a new epoch, so
//! (gateway, epoch, seq) still names every reading uniquely. The fresh database
//! records where the old one went. Only the newest [`KEEP`] quarantined sets are
//! kept, so a card that keeps corrupting cannot fill itself with evidence. Errors
//! that are not corruption (permissions, a newer schema) are returned as they are:
//! moving a healthy file aside would hide its readings.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

use super::{DB_FILE, StoreError, open};

/// Quarantined database sets kept in `state_dir`.
const KEEP: usize = 3;

/// Marks a quarantined file: `buffer.db.corrupt-<UTC stamp>`.
const MARK: &str = ".corrupt-";

/// The database the agent runs on, and what happened to a corrupt predecessor.
pub struct Checked {
    pub conn: Connection,
    /// Where a corrupt database was moved, when one was.
    pub quarantined: Option<PathBuf>,
}

/// Opens the database in `state_dir` after `PRAGMA quick_check`; a corrupt one is
/// moved aside and a new one created.
pub fn open_checked(state_dir: &Path) -> Result<Checked, StoreError> {
    let reason = match open(state_dir) {
        Ok(conn) => match quick_check(&conn) {
            Ok(None) => {
                return Ok(Checked {
                    conn,
                    quarantined: None,
                });
            }
            Ok(Some(problem)) => problem,
            Err(err) => corruption(err)?,
        },
        Err(err) => corruption(err)?,
    };
    let moved = quarantine(state_dir)?;
    tracing::error!(
        moved_to = %moved.display(),
        %reason,
        "the buffer database is corrupt: it was moved aside and a new one started \
         (new epoch); its readings can be recovered from the moved file with sqlite3 .recover"
    );
    let conn = open(state_dir)?;
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('replaced_corrupt', ?1)",
        [format!("{}: {reason}", moved.display())],
    )?;
    Ok(Checked {
        conn,
        quarantined: Some(moved),
    })
}

/// `None` when SQLite finds the file sound, else its first complaint.
fn quick_check(conn: &Connection) -> Result<Option<String>, StoreError> {
    let first: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    Ok((first != "ok").then_some(first))
}

/// The reason when `err` says the file is damaged; `err` itself otherwise.
fn corruption(err: StoreError) -> Result<String, StoreError> {
    let sqlite = match &err {
        StoreError::Open { source, .. } | StoreError::Sql(source) => source,
        _ => return Err(err),
    };
    match sqlite.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Ok(sqlite.to_string()),
        _ => Err(err),
    }
}

/// Renames `buffer.db` and its `-wal` and `-shm` to `buffer.db.corrupt-<stamp>…`;
/// returns the new name of the database file.
fn quarantine(state_dir: &Path) -> Result<PathBuf, StoreError> {
    let io = |source| StoreError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    };
    let stamp = crate::clock::wall_now()
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    // A clock stuck at boot can repeat a stamp: never overwrite earlier evidence.
    let mut base = format!("{DB_FILE}{MARK}{stamp}");
    for n in 1.. {
        if !state_dir.join(&base).exists() {
            break;
        }
        base = format!("{DB_FILE}{MARK}{stamp}.{n}");
    }
    for suffix in ["-wal", "-shm", ""] {
        let from = state_dir.join(format!("{DB_FILE}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, state_dir.join(format!("{base}{suffix}"))).map_err(io)?;
        }
    }
    prune_quarantined(state_dir);
    Ok(state_dir.join(base))
}

/// Deletes all but the newest [`KEEP`] quarantined sets (by modification time).
fn prune_quarantined(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    let prefix = format!("{DB_FILE}{MARK}");
    let mut sets: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && !name.ends_with("-wal") && !name.ends_with("-shm")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    sets.sort();
    let excess = sets.len().saturating_sub(KEEP);
    for (_, db) in sets.into_iter().take(excess) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = db.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(path = %Path::new(&path).display(), "old quarantined database deleted")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %Path::new(&path).display(), error = %e, "cannot delete an old quarantined database")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
