//! Tests of the parent module.

use chrono::TimeZone;

use super::*;
use crate::store::inspect::UploadStatus;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

#[test]
fn times_are_rfc_3339_or_a_duration_back_from_now() {
    let check = |text: &str, expected: Option<&str>| {
        let got = parse_time("--since", text, now()).ok().map(format_utc);
        assert_eq!(got.as_deref(), expected, "{text:?}");
    };
    check("2026-11-23T01:00:00Z", Some("2026-11-23T01:00:00.000Z"));
    check(
        "2026-11-23T10:00:00.250+09:00",
        Some("2026-11-23T01:00:00.250Z"),
    );
    check("2h", Some("2026-11-23T10:00:00.000Z"));
    check("1h30m", Some("2026-11-23T10:30:00.000Z"));
    check("7d", Some("2026-11-16T12:00:00.000Z"));
    check("500ms", Some("2026-11-23T11:59:59.500Z"));
    check("yesterday", None);
    check("2026-11-23", None);
    check("5 parsecs", None);
    check("", None);
}

#[test]
fn a_bad_time_is_a_usage_error_naming_the_flag_and_the_value() {
    let Err(Failure::Usage(message)) = parse_time("--until", "noon", now()) else {
        panic!("a usage error");
    };
    assert!(
        message.starts_with("--until: invalid time \"noon\""),
        "{message}"
    );
    assert!(!message.contains('\n'));
    let window = Window {
        since: Some("1h".into()),
        until: Some("2h".into()),
    };
    let Err(Failure::Usage(message)) = window.to_millis(now()) else {
        panic!("an empty window is a usage error");
    };
    assert_eq!(
        message,
        "--since 2026-11-23T11:00:00.000Z is not before --until 2026-11-23T10:00:00.000Z"
    );
}

#[test]
fn counts_and_sizes_read_easily() {
    let counts: Vec<String> = [0, 7, 999, 1_000, 12_345, 10_000_000]
        .into_iter()
        .map(count)
        .collect();
    assert_eq!(counts, ["0", "7", "999", "1,000", "12,345", "10,000,000"]);
    let sizes: Vec<String> = [0, 812, 4_096, 1_048_576 * 15 / 2, 1_300_000_000]
        .into_iter()
        .map(size)
        .collect();
    assert_eq!(sizes, ["0 B", "812 B", "4.00 KiB", "7.50 MiB", "1.21 GiB"]);
}

fn reading(value: Option<f64>, unit: Option<&str>, error: Option<&str>) -> StoredReading {
    StoredReading {
        seq: 42,
        sensor: "pond7.do".into(),
        ts_ms: 1_795_395_600_000,
        value,
        unit: unit.map(str::to_string),
        quality: if value.is_some() { "good" } else { "bad" }.into(),
        clock: "synced".into(),
        error: error.map(str::to_string),
        state: State::Pending,
    }
}

fn csv(r: &StoredReading) -> String {
    let mut out = Vec::new();
    csv_row(&mut out, r).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn csv_rows_quote_only_what_needs_it() {
    assert_eq!(
        csv(&reading(Some(7.83), Some("mg/L"), None)),
        "42,pond7.do,2026-11-23T01:00:00.000Z,7.83,mg/L,good,synced,\n"
    );
    assert_eq!(
        csv(&reading(
            None,
            Some("µS/cm, 25 °C"),
            Some("slave 3: \"no answer\"\r\nafter 3 tries")
        )),
        "42,pond7.do,2026-11-23T01:00:00.000Z,,\"µS/cm, 25 °C\",bad,synced,\
         \"slave 3: \"\"no answer\"\"\r\nafter 3 tries\"\n"
    );
    assert_eq!(
        csv(&reading(Some(1e-7), None, None)),
        "42,pond7.do,2026-11-23T01:00:00.000Z,1e-7,,good,synced,\n"
    );
}

#[test]
fn json_readings_have_the_upload_fields_and_error_only_when_bad() {
    let json = |r: &StoredReading| serde_json::to_string(&ReadingJson::from(r)).unwrap();
    assert_eq!(
        json(&reading(Some(7.83), Some("mg/L"), None)),
        r#"{"seq":42,"sensor":"pond7.do","ts":"2026-11-23T01:00:00.000Z","value":7.83,"unit":"mg/L","quality":"good","clock":"synced","state":"pending"}"#
    );
    assert_eq!(
        json(&reading(None, None, Some("timeout"))),
        r#"{"seq":42,"sensor":"pond7.do","ts":"2026-11-23T01:00:00.000Z","value":null,"unit":null,"quality":"bad","clock":"synced","error":"timeout","state":"pending"}"#
    );
}

#[test]
fn stats_text_is_aligned_and_shows_the_upload_status_when_recorded() {
    let mut stats = Stats {
        pending: 1_234_567,
        uploaded: 9_000_000,
        dead_letter: 3,
        dropped_total: 0,
        oldest_pending: Some(now() - chrono::Duration::seconds(3 * 3_600 + 12 * 60 + 5)),
        db_bytes: Some(1_300_000_000),
        epoch: "4f3c9a".into(),
        upload: UploadStatus::default(),
    };
    assert_eq!(
        stats_text(&stats, now()),
        "pending      1,234,567, oldest 2026-11-23T08:47:55.000Z (3h 12m ago)
uploaded     9,000,000
dead letter  3
dropped      0
database     1.21 GiB
epoch        4f3c9a
"
    );
    stats.upload = UploadStatus {
        last_ok: Some(now() - chrono::Duration::seconds(42)),
        last_error: Some("HTTP 401".into()),
        paused: Some("true".into()),
    };
    stats.oldest_pending = None;
    let text = stats_text(&stats, now());
    assert!(text.starts_with("pending       1,234,567\n"), "{text}");
    assert!(
        text.ends_with(
            "last upload   2026-11-23T11:59:18.000Z (42s ago)
upload        paused
upload error  HTTP 401
"
        ),
        "{text}"
    );
}
