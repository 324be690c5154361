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
