//! Tests of the parent module.

use super::*;

#[test]
fn open_sets_wal_and_keeps_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(dir.path()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(vacuum, 2, "incremental auto-vacuum is set at creation");
    let first = epoch(&conn).unwrap();
    assert_eq!(first.len(), 32);
    drop(conn);
    let again = open(dir.path()).unwrap();
    assert_eq!(epoch(&again).unwrap(), first, "reopening keeps the epoch");
}

#[tokio::test]
async fn writer_thread_runs_calls_and_counts_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::spawn(open(dir.path()).unwrap());
    let before = store.progress();
    let n: i64 = store
        .call(|c| Ok(c.query_row("SELECT 41 + 1", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(n, 42);
    assert!(store.progress() > before);
}

#[test]
fn open_existing_neither_creates_nor_migrates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Err(StoreError::Missing { path }) = open_existing(&state) else {
        panic!("a missing database is an error");
    };
    assert_eq!(path, state.join(DB_FILE));
    assert!(!state.exists(), "nothing was created");

    let conn = open(&state).unwrap();
    let existing = open_existing(&state).unwrap();
    assert_eq!(epoch(&existing).unwrap(), epoch(&conn).unwrap());
    drop(existing);

    conn.pragma_update(None, "user_version", 2).unwrap();
    assert!(matches!(
        open_existing(&state),
        Err(StoreError::TooOld { found: 2, .. })
    ));
    conn.pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        open_existing(&state),
        Err(StoreError::TooNew { found: 99, .. })
    ));
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99, "left as it was");
}
