//! Tests of the parent module.

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn line(n: usize) -> Vec<u8> {
    // 100 bytes a line, numbered so the order across files can be checked.
    let mut line = format!("line {n:06} ").into_bytes();
    line.resize(99, b'x');
    line.push(b'\n');
    line
}

fn first_line_number(path: &Path) -> usize {
    let text = fs::read_to_string(path).unwrap();
    text[5..11].parse().unwrap()
}

#[test]
fn rotation_keeps_at_most_keep_files_each_bounded_by_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SizeRotatingFile::open(dir.path(), 1000, 3, Duration::ZERO);
    // 10 lines a file; 75 lines rotate seven times.
    for n in 0..75 {
        log.write_all(&line(n)).unwrap();
    }
    log.flush().unwrap();

    assert_eq!(
        names(dir.path()),
        [
            "tidegate.log",
            "tidegate.log.1",
            "tidegate.log.2",
            "tidegate.log.3"
        ]
    );
    for name in names(dir.path()) {
        let size = fs::metadata(dir.path().join(&name)).unwrap().len();
        assert!(size <= 1000, "{name} is {size} bytes");
    }
    // Newest lines live, then .1, .2, .3 going back in time.
    assert_eq!(
        fs::metadata(dir.path().join("tidegate.log")).unwrap().len(),
        500
    );
    assert_eq!(first_line_number(&dir.path().join("tidegate.log")), 70);
    assert_eq!(first_line_number(&dir.path().join("tidegate.log.1")), 60);
    assert_eq!(first_line_number(&dir.path().join("tidegate.log.2")), 50);
    assert_eq!(first_line_number(&dir.path().join("tidegate.log.3")), 40);
}

#[test]
fn reopening_appends_and_rotates_by_the_existing_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SizeRotatingFile::open(dir.path(), 1000, 2, Duration::ZERO);
    for n in 0..8 {
        log.write_all(&line(n)).unwrap();
    }
    drop(log);
    let mut log = SizeRotatingFile::open(dir.path(), 1000, 2, Duration::ZERO);
    for n in 8..12 {
        log.write_all(&line(n)).unwrap();
    }
    assert_eq!(names(dir.path()), ["tidegate.log", "tidegate.log.1"]);
    assert_eq!(
        fs::metadata(dir.path().join("tidegate.log.1"))
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(first_line_number(&dir.path().join("tidegate.log")), 10);
}

#[test]
fn keep_zero_keeps_only_the_live_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SizeRotatingFile::open(dir.path(), 250, 0, Duration::ZERO);
    for n in 0..10 {
        log.write_all(&line(n)).unwrap();
    }
    assert_eq!(names(dir.path()), ["tidegate.log"]);
    assert_eq!(first_line_number(&dir.path().join("tidegate.log")), 8);
}

#[test]
fn a_line_larger_than_max_size_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SizeRotatingFile::open(dir.path(), 50, 5, Duration::ZERO);
    for n in 0..3 {
        log.write_all(&line(n)).unwrap();
    }
    assert_eq!(
        names(dir.path()),
        ["tidegate.log", "tidegate.log.1", "tidegate.log.2"]
    );
    for name in names(dir.path()) {
        assert_eq!(fs::metadata(dir.path().join(name)).unwrap().len(), 100);
    }
}

#[test]
fn an_unusable_directory_never_fails_a_write_and_recovers() {
    let parent = tempfile::tempdir().unwrap();
    // A plain file where the directory should be: create_dir_all fails.
    let dir = parent.path().join("logs");
    fs::write(&dir, b"not a directory").unwrap();
    let mut log = SizeRotatingFile::open(&dir, 1000, 2, Duration::ZERO);
    assert!(log.file.is_none());
    assert!(log.reported);
    log.write_all(&line(0)).unwrap();
    log.flush().unwrap();

    fs::remove_file(&dir).unwrap();
    log.write_all(&line(1)).unwrap();
    assert!(!log.reported);
    assert_eq!(first_line_number(&dir.join("tidegate.log")), 1);
}

#[test]
fn after_an_error_the_file_output_waits_before_retrying() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("logs");
    fs::write(&dir, b"not a directory").unwrap();
    let mut log = SizeRotatingFile::open(&dir, 1000, 2, Duration::from_secs(3600));
    fs::remove_file(&dir).unwrap();
    log.write_all(&line(0)).unwrap();
    assert!(!dir.exists(), "no retry before retry_after");
}

#[test]
fn rotation_index_accepts_only_numbered_rotations() {
    let check = |name: &str, expected: Option<u32>| {
        assert_eq!(rotation_index(name), expected, "{name}");
    };
    check("tidegate.log.1", Some(1));
    check("tidegate.log.12", Some(12));
    check("tidegate.log", None);
    check("tidegate.log.0", None);
    check("tidegate.log.", None);
    check("tidegate.log.1.gz", None);
    check("tidegate.log.-1", None);
    check("other.log.1", None);
}

#[test]
fn pruning_deletes_only_rotated_files_older_than_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let day = Duration::from_secs(86_400);
    let files = [
        ("tidegate.log", 30),  // live: never pruned, however old
        ("tidegate.log.1", 1), // recent
        ("tidegate.log.2", 6),
        ("tidegate.log.3", 8), // older than 7 days
        ("tidegate.log.4", 20),
        ("notes.txt", 30), // not ours
    ];
    for (name, age_days) in files {
        let file = File::create(dir.path().join(name)).unwrap();
        file.set_modified(now - day * age_days).unwrap();
    }
    fs::create_dir(dir.path().join("tidegate.log.9")).unwrap();

    let deleted = prune_old_logs(dir.path(), day * 7, now).unwrap();

    assert_eq!(deleted, 2);
    assert_eq!(
        names(dir.path()),
        [
            "notes.txt",
            "tidegate.log",
            "tidegate.log.1",
            "tidegate.log.2",
            "tidegate.log.9"
        ]
    );
    assert_eq!(prune_old_logs(dir.path(), day * 7, now).unwrap(), 0);
}

#[test]
fn pruning_a_missing_directory_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    assert_eq!(
        prune_old_logs(&missing, Duration::from_secs(1), SystemTime::UNIX_EPOCH).unwrap(),
        0
    );
}

#[test]
fn the_log_cap_deletes_extra_and_oldest_rotations_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let write =
        |name: &str, len: usize| std::fs::write(dir.path().join(name), vec![b'x'; len]).unwrap();
    write("tidegate.log", 100);
    for n in 1..=6 {
        write(&format!("tidegate.log.{n}"), 100);
    }
    write("notes.txt", 10_000);
    write("tidegate.log.old", 10_000);
    // keep 3 of 100 bytes: .4 to .6 are past keep; the rest fits the cap of 400.
    assert_eq!(cap_logs(dir.path(), 3, 100).unwrap(), (3, 300));
    assert_eq!(
        names(dir.path()),
        [
            "notes.txt",
            "tidegate.log",
            "tidegate.log.1",
            "tidegate.log.2",
            "tidegate.log.3",
            "tidegate.log.old"
        ]
    );
    // Files grown past the cap (max_size lowered): the oldest go until it fits.
    write("tidegate.log.1", 150);
    write("tidegate.log.3", 150);
    assert_eq!(cap_logs(dir.path(), 3, 100).unwrap(), (1, 150));
    assert!(!dir.path().join("tidegate.log.3").exists());
    assert!(dir.path().join("tidegate.log.2").exists());
    assert_eq!(cap_logs(dir.path(), 3, 100).unwrap(), (0, 0));
    assert!(dir.path().join("notes.txt").exists() && dir.path().join("tidegate.log.old").exists());
}
