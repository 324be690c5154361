//! Tests of the parent module.

use super::*;
use crate::store::{epoch, readings};

fn filled(dir: &Path) -> String {
    let mut conn = open(dir).unwrap();
    let boot = readings::BootTime {
        boot_id: "b".into(),
        since_boot_ms: 0,
    };
    let ts = chrono::DateTime::from_timestamp_millis(1_795_395_600_000).unwrap();
    for _ in 0..200 {
        let cycle: Vec<_> = (0..24)
            .map(|i| crate::reading::Reading::good(&format!("pond.s{i}"), ts, 7.5, Some("mg/L")))
            .collect();
        readings::insert_cycle(&mut conn, &cycle, readings::ClockQuality::Synced, &boot).unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    epoch(&conn).unwrap()
}

fn quarantined(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(MARK))
        .collect();
    names.sort();
    names
}

#[test]
fn a_sound_database_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = filled(dir.path());
    let checked = open_checked(dir.path()).unwrap();
    assert!(checked.quarantined.is_none());
    assert_eq!(epoch(&checked.conn).unwrap(), first);
    assert!(quarantined(dir.path()).is_empty());
}

#[test]
fn a_damaged_page_moves_the_database_aside_and_starts_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let first = filled(dir.path());
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let original = bytes.clone();
    // Scribble over an interior page of the readings table, not the header.
    let page = 4096;
    assert!(bytes.len() > 8 * page);
    for b in &mut bytes[5 * page..5 * page + 200] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();

    let checked = open_checked(dir.path()).unwrap();
    let moved = checked.quarantined.clone().expect("quarantined");
    let fresh = epoch(&checked.conn).unwrap();
    assert_ne!(fresh, first, "a new database has a new epoch");
    assert_eq!(readings::counts(&checked.conn).unwrap().readings, 0);
    let note: String = checked
        .conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'replaced_corrupt'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(note.contains(&moved.display().to_string()), "{note}");
    // The evidence is the damaged file itself, byte for byte.
    let kept = std::fs::read(&moved).unwrap();
    // SQLite may bump the header's change counters (bytes 24..28, 92..96) on close;
    // every page's content is as it was found.
    let differ: Vec<usize> = (100..kept.len().max(bytes.len()))
        .filter(|&i| kept.get(i) != bytes.get(i))
        .take(8)
        .collect();
    assert!(
        differ.is_empty(),
        "the moved file was changed at {differ:?}"
    );
    assert!(bytes != original);
    drop(checked);
    // The next start finds the new database sound: no loop of quarantines.
    let again = open_checked(dir.path()).unwrap();
    assert!(again.quarantined.is_none());
    assert_eq!(epoch(&again.conn).unwrap(), fresh);
    assert_eq!(quarantined(dir.path()).len(), 1);
}

#[test]
fn a_file_that_is_not_a_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x42u8; 10_000]).unwrap();
    let checked = open_checked(dir.path()).unwrap();
    let moved = checked.quarantined.clone().unwrap();
    assert_eq!(std::fs::read(moved).unwrap(), vec![0x42u8; 10_000]);
    assert_eq!(epoch(&checked.conn).unwrap().len(), 32);
}

#[test]
fn only_the_newest_quarantined_sets_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        std::fs::write(
            dir.path().join(DB_FILE),
            b"not a database at all, not at all",
        )
        .unwrap();
        let checked = open_checked(dir.path()).unwrap();
        assert!(checked.quarantined.is_some());
        drop(checked);
        // The fresh database's own files must go before the next garbage is written.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
        }
    }
    assert_eq!(quarantined(dir.path()).len(), KEEP);
}

#[test]
fn a_database_that_cannot_be_opened_for_another_reason_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: an error, but not corruption.
    std::fs::create_dir(dir.path().join(DB_FILE)).unwrap();
    assert!(open_checked(dir.path()).is_err());
    assert!(quarantined(dir.path()).is_empty());
}
