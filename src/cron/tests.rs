//! Tests of the parent module.

use super::*;
use Want::*;

/// What one table row expects of an expression.
enum Want {
    /// `parse` fails with a message containing this text.
    Rejects(&'static str),
    /// In `zone`, the fires strictly after `from` are, in order, exactly `fires`
    /// (UTC, RFC 3339). Each fire is also cross-checked with `prev_at_or_before`.
    Fires {
        zone: &'static str,
        from: &'static str,
        fires: &'static [&'static str],
    },
    /// In `zone`, the latest fire at or before `at` is `want`.
    Prev {
        zone: &'static str,
        at: &'static str,
        want: &'static str,
    },
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text:?}: {e}"))
        .with_timezone(&Utc)
}

fn tz(name: &str) -> Tz {
    name.parse()
        .unwrap_or_else(|e| panic!("bad test zone {name:?}: {e}"))
}

/// Runs every row and reports all mismatches at once.
fn check(rows: &[(&str, Want)]) {
    let mut failures = Vec::new();
    for (expr, want) in rows {
        let parsed = CronExpr::parse(expr);
        match (want, parsed) {
            (Rejects(needle), Err(message)) => {
                if !message.contains(needle) {
                    failures.push(format!("{expr:?}: error {message:?} lacks {needle:?}"));
                }
                let lowercase_start = message.chars().next().is_some_and(|c| c.is_lowercase());
                if message.contains('\n') || !lowercase_start || message.ends_with('.') {
                    failures.push(format!(
                        "{expr:?}: error {message:?} not one lowercase line"
                    ));
                }
            }
            (Rejects(_), Ok(parsed)) => {
                failures.push(format!("{expr:?}: accepted as {:?}", parsed.normalized));
            }
            (_, Err(message)) => failures.push(format!("{expr:?}: rejected: {message}")),
            (Fires { zone, from, fires }, Ok(parsed)) => {
                let zone = tz(zone);
                if parsed.source() != expr.trim() {
                    failures.push(format!("{expr:?}: source is {:?}", parsed.source()));
                }
                let mut got = Vec::new();
                let mut cursor = utc(from);
                let mut previous: Option<DateTime<Utc>> = None;
                for _ in 0..fires.len() {
                    let Some(next) = parsed.next_after(cursor, zone) else {
                        break;
                    };
                    got.push(next.to_rfc3339());
                    let back = parsed.prev_at_or_before(next, zone);
                    if back != Some(next) {
                        failures.push(format!("{expr:?}: prev_at_or_before({next}) = {back:?}"));
                    }
                    if let Some(previous) = previous {
                        let before = parsed.prev_at_or_before(next - Duration::seconds(1), zone);
                        if before != Some(previous) {
                            failures.push(format!(
                                "{expr:?}: prev_at_or_before({next} - 1s) = {before:?}, want {previous}"
                            ));
                        }
                    }
                    previous = Some(next);
                    cursor = next;
                }
                let want: Vec<String> = fires.iter().map(|f| utc(f).to_rfc3339()).collect();
                if got != want {
                    failures.push(format!(
                        "{expr:?} in {zone} after {from}:\n    got  {got:?}\n    want {want:?}"
                    ));
                }
            }
            (Prev { zone, at, want }, Ok(parsed)) => {
                let got = parsed.prev_at_or_before(utc(at), tz(zone));
                if got != Some(utc(want)) {
                    failures.push(format!(
                        "{expr:?} in {zone}: prev_at_or_before({at}) = {got:?}, want {want}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// 2026-01-01 is a Thursday.
const NEW_YEAR: &str = "2026-01-01T00:00:00Z";

fn fires(fires: &'static [&'static str]) -> Want {
    Fires {
        zone: "UTC",
        from: NEW_YEAR,
        fires,
    }
}

#[rustfmt::skip]
#[test]
fn parse_accepts_posix_and_evaluates_it() {
    check(&[
        // 0 and 7 are both Sunday, and so is `sun`.
        ("0 0 * * 0", fires(&["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"])),
        ("0 0 * * 7", fires(&["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"])),
        ("0 0 * * sun", fires(&["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"])),
        ("0 0 * * 0-7", fires(&["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"])),
        // Both day fields restricted: the 1st, the 15th and every Friday.
        (
            "30 4 1,15 * 5",
            fires(&[
                "2026-01-01T04:30:00Z",
                "2026-01-02T04:30:00Z",
                "2026-01-09T04:30:00Z",
                "2026-01-15T04:30:00Z",
                "2026-01-16T04:30:00Z",
                "2026-01-23T04:30:00Z",
                "2026-01-30T04:30:00Z",
                "2026-02-01T04:30:00Z",
                "2026-02-06T04:30:00Z",
            ]),
        ),
        ("0 0 13 * 5", fires(&["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z"])),
        // `*/2` restricts the day of month, so the OR rule applies (Monday the 12th).
        (
            "0 0 */2 * 1",
            fires(&[
                "2026-01-03T00:00:00Z",
                "2026-01-05T00:00:00Z",
                "2026-01-07T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-11T00:00:00Z",
                "2026-01-12T00:00:00Z",
                "2026-01-13T00:00:00Z",
            ]),
        ),
        ("0 0 * * */2", fires(&["2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-06T00:00:00Z"])),
        ("0 0 */10 * *", fires(&["2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z", "2026-01-31T00:00:00Z", "2026-02-01T00:00:00Z"])),
        ("*/5 * * * *", fires(&["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:15:00Z"])),
        ("1-30/10 * * * *", fires(&["2026-01-01T00:01:00Z", "2026-01-01T00:11:00Z", "2026-01-01T00:21:00Z", "2026-01-01T01:01:00Z"])),
        (
            "0 8-17/3,22 * * *",
            fires(&[
                "2026-01-01T08:00:00Z",
                "2026-01-01T11:00:00Z",
                "2026-01-01T14:00:00Z",
                "2026-01-01T17:00:00Z",
                "2026-01-01T22:00:00Z",
                "2026-01-02T08:00:00Z",
            ]),
        ),
        // Six fields: seconds first.
        ("*/20 * * * * *", fires(&["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"])),
        ("30 15 10 * * *", fires(&["2026-01-01T10:15:30Z", "2026-01-02T10:15:30Z"])),
        // Names, any case; a range may end on `sun`.
        ("0 9 * * mon-fri", fires(&["2026-01-01T09:00:00Z", "2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z"])),
        ("0 9 * * MON-Fri", fires(&["2026-01-01T09:00:00Z", "2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z"])),
        ("0 12 * * fri-sun", fires(&["2026-01-02T12:00:00Z", "2026-01-03T12:00:00Z", "2026-01-04T12:00:00Z", "2026-01-09T12:00:00Z"])),
        ("0 0 1 jan,JUL *", fires(&["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"])),
        ("0 6 1 feb-apr/2 *", fires(&["2026-02-01T06:00:00Z", "2026-04-01T06:00:00Z", "2027-02-01T06:00:00Z"])),
        // Macros.
        ("@hourly", fires(&["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"])),
        ("@daily", fires(&["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"])),
        ("@midnight", fires(&["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"])),
        ("@weekly", fires(&["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"])),
        ("@monthly", fires(&["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"])),
        ("@yearly", fires(&["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"])),
        ("@ANNUALLY", fires(&["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"])),
        // Rare but real days; surrounding blanks are trimmed.
        ("  0 0 29 2 *  ", fires(&["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"])),
        ("0 0 31 * *", fires(&["2026-01-31T00:00:00Z", "2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"])),
        ("59 23 31 12 *", fires(&["2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z"])),
        // Evaluated in the zone: midnight in Tokyo is 15:00 UTC.
        ("@daily", Fires { zone: "Asia/Tokyo", from: NEW_YEAR, fires: &["2026-01-01T15:00:00Z", "2026-01-02T15:00:00Z"] }),
    ]);
}

#[rustfmt::skip]
#[test]
fn parse_rejects_with_one_line_naming_the_problem() {
    check(&[
        ("0 * * *", Rejects(r#"expected 5 or 6 fields, got 4 ("0 * * *")"#)),
        ("0 0 0 1 1 * 2026", Rejects("expected 5 or 6 fields, got 7")),
        ("", Rejects("empty cron expression")),
        ("   ", Rejects("empty cron expression")),
        // Quartz and croner extensions.
        ("0 0 12 ? * 6", Rejects(r#"unsupported quartz "?""#)),
        ("0 0 ? * *", Rejects(r#"quartz "?" (no specific value; use "*") in the day-of-month field"#)),
        ("0 0 L * *", Rejects(r#"quartz "L"/"W""#)),
        ("0 0 15W * *", Rejects(r#"quartz "L"/"W""#)),
        ("0 0 LW * *", Rejects(r#"quartz "L"/"W""#)),
        ("0 0 * * 5L", Rejects(r#"quartz "L"/"W" (last day, nearest weekday) in the day-of-week field"#)),
        ("0 0 * * mon#2", Rejects(r##"quartz "#" (nth weekday of the month)"##)),
        ("0 0 1 * +mon", Rejects(r#"croner "+""#)),
        // Out of range.
        ("60 * * * *", Rejects("value 60 out of range 0-59 in the minute field")),
        ("0 24 * * *", Rejects("value 24 out of range 0-23 in the hour field")),
        ("0 0 0 * *", Rejects("value 0 out of range 1-31 in the day-of-month field")),
        ("0 0 32 * *", Rejects("value 32 out of range 1-31 in the day-of-month field")),
        ("0 0 * 13 *", Rejects("value 13 out of range 1-12 in the month field")),
        ("0 0 * * 8", Rejects("value 8 out of range 0-7 in the day-of-week field")),
        ("61 * * * * *", Rejects("value 61 out of range 0-59 in the second field")),
        ("99999999999 * * * *", Rejects("out of range 0-59 in the minute field")),
        // Steps and ranges.
        ("5/15 * * * *", Rejects(r#"a step needs "*" or a range before "/" in the minute field"#)),
        ("*/0 * * * *", Rejects("step 0 out of range 1-60 in the minute field")),
        ("*/61 * * * *", Rejects("step 61 out of range")),
        ("*/x * * * *", Rejects("bad step in the minute field")),
        ("0 0 * jan-dec/ *", Rejects("bad step in the month field")),
        ("5-1 * * * *", Rejects(r#"reversed range "5-1" in the minute field"#)),
        ("0 0 * * fri-mon", Rejects(r#"reversed range "fri-mon""#)),
        ("-5 * * * *", Rejects("missing value in the minute field")),
        ("1,,2 * * * *", Rejects("empty list item in the minute field")),
        // Names belong to their own field only.
        ("0 0 * foo *", Rejects(r#"unknown name "foo" in the month field"#)),
        ("0 0 * * jan", Rejects(r#"unknown name "jan" in the day-of-week field"#)),
        ("0 0 * mon *", Rejects(r#"unknown name "mon" in the month field"#)),
        ("0 0 * * monday", Rejects(r#"unknown name "monday""#)),
        ("abc * * * *", Rejects(r#"expected a number in the minute field, got "abc""#)),
        // Macros.
        ("@reboot", Rejects(r#"unknown macro "@reboot""#)),
        ("@daily 5", Rejects("a macro must stand alone")),
        // Days that never come.
        ("0 0 30 2 *", Rejects("never fires")),
        ("0 0 31 apr,jun,sep,nov *", Rejects("never fires")),
    ]);
}

const BERLIN: &str = "Europe/Berlin";
const NEW_YORK: &str = "America/New_York";
const SYDNEY: &str = "Australia/Sydney";

#[rustfmt::skip]
#[test]
fn berlin_spring_forward_2026_03_29() {
    // 02:00 CET (01:00 UTC) jumps to 03:00 CEST: 02:00-02:59 local does not exist.
    check(&[
        // Fixed time in the gap: once, at the first instant after it (03:00 CEST).
        ("30 2 * * *", Fires { zone: BERLIN, from: "2026-03-27T12:00:00Z", fires: &["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"] }),
        ("0 2 * * *", Fires { zone: BERLIN, from: "2026-03-27T12:00:00Z", fires: &["2026-03-28T01:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"] }),
        ("0 30 2 * * *", Fires { zone: BERLIN, from: "2026-03-29T00:59:59Z", fires: &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"] }),
        // Fixed time right after the gap: unaffected.
        ("0 3 * * *", Fires { zone: BERLIN, from: "2026-03-27T12:00:00Z", fires: &["2026-03-28T02:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"] }),
        // Interval: the nonexistent quarter hours are skipped, UTC spacing stays 15 min.
        (
            "*/15 * * * *",
            Fires {
                zone: BERLIN,
                from: "2026-03-29T00:30:00Z",
                fires: &[
                    "2026-03-29T00:45:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T01:15:00Z",
                    "2026-03-29T01:30:00Z",
                ],
            },
        ),
        // Several hours are an interval job: 02:00 is skipped, not moved
        // (the next 01:00 CEST is 23:00 UTC).
        ("0 1,2,3 * * *", Fires { zone: BERLIN, from: "2026-03-28T23:00:00Z", fires: &["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T23:00:00Z"] }),
        ("30 2 * * *", Prev { zone: BERLIN, at: "2026-03-29T05:00:00Z", want: "2026-03-29T01:00:00Z" }),
        ("30 2 * * *", Prev { zone: BERLIN, at: "2026-03-29T01:00:00Z", want: "2026-03-29T01:00:00Z" }),
        ("30 2 * * *", Prev { zone: BERLIN, at: "2026-03-29T00:59:59Z", want: "2026-03-28T01:30:00Z" }),
        ("*/15 * * * *", Prev { zone: BERLIN, at: "2026-03-29T00:59:59Z", want: "2026-03-29T00:45:00Z" }),
        ("*/15 * * * *", Prev { zone: BERLIN, at: "2026-03-29T01:14:59Z", want: "2026-03-29T01:00:00Z" }),
    ]);
}

#[rustfmt::skip]
#[test]
fn berlin_fall_back_2026_10_25() {
    // 03:00 CEST (01:00 UTC) goes back to 02:00 CET: 02:00-02:59 local happens twice,
    // first at 00:00-00:59 UTC, then at 01:00-01:59 UTC.
    check(&[
        // Fixed time in the fold: the first 02:30 only.
        ("30 2 * * *", Fires { zone: BERLIN, from: "2026-10-24T12:00:00Z", fires: &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"] }),
        ("30 2 * * *", Fires { zone: BERLIN, from: "2026-10-25T00:30:00Z", fires: &["2026-10-26T01:30:00Z"] }),
        ("30 2 * * *", Fires { zone: BERLIN, from: "2026-10-25T01:00:00Z", fires: &["2026-10-26T01:30:00Z"] }),
        ("0 2 * * *", Fires { zone: BERLIN, from: "2026-10-23T12:00:00Z", fires: &["2026-10-24T00:00:00Z", "2026-10-25T00:00:00Z", "2026-10-26T01:00:00Z"] }),
        ("0 3 * * *", Fires { zone: BERLIN, from: "2026-10-23T12:00:00Z", fires: &["2026-10-24T01:00:00Z", "2026-10-25T02:00:00Z", "2026-10-26T02:00:00Z"] }),
        // Interval: four fires in each pass through 02:00-02:59.
        (
            "*/15 * * * *",
            Fires {
                zone: BERLIN,
                from: "2026-10-24T23:30:00Z",
                fires: &[
                    "2026-10-24T23:45:00Z",
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T00:15:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-25T00:45:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T01:15:00Z",
                    "2026-10-25T01:30:00Z",
                    "2026-10-25T01:45:00Z",
                    "2026-10-25T02:00:00Z",
                ],
            },
        ),
        // Starting inside the second pass finds the rest of it.
        ("*/15 * * * *", Fires { zone: BERLIN, from: "2026-10-25T01:20:00Z", fires: &["2026-10-25T01:30:00Z", "2026-10-25T01:45:00Z", "2026-10-25T02:00:00Z"] }),
        // Starting late in the first pass still finds the second.
        ("*/15 * * * *", Fires { zone: BERLIN, from: "2026-10-25T00:50:00Z", fires: &["2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z"] }),
        ("0 * * * *", Fires { zone: BERLIN, from: "2026-10-24T23:00:00Z", fires: &["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"] }),
        // The last fire at or before a time inside the second pass.
        ("30 2 * * *", Prev { zone: BERLIN, at: "2026-10-25T01:45:00Z", want: "2026-10-25T00:30:00Z" }),
        ("30 2 * * *", Prev { zone: BERLIN, at: "2026-10-25T00:29:59Z", want: "2026-10-24T00:30:00Z" }),
        ("30 2 * * *", Prev { zone: BERLIN, at: "2026-10-26T01:29:59Z", want: "2026-10-25T00:30:00Z" }),
        ("*/15 * * * *", Prev { zone: BERLIN, at: "2026-10-25T01:10:00Z", want: "2026-10-25T01:00:00Z" }),
        ("*/15 * * * *", Prev { zone: BERLIN, at: "2026-10-25T00:59:59Z", want: "2026-10-25T00:45:00Z" }),
        ("*/15 * * * *", Prev { zone: BERLIN, at: "2026-10-25T01:59:59Z", want: "2026-10-25T01:45:00Z" }),
    ]);
}

#[rustfmt::skip]
#[test]
fn new_york_transitions_2026() {
    // 2026-03-08 02:00 EST (07:00 UTC) jumps to 03:00 EDT;
    // 2026-11-01 02:00 EDT (06:00 UTC) goes back to 01:00 EST.
    check(&[
        ("30 2 * * *", Fires { zone: NEW_YORK, from: "2026-03-06T12:00:00Z", fires: &["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"] }),
        ("*/15 * * * *", Fires { zone: NEW_YORK, from: "2026-03-08T06:30:00Z", fires: &["2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z"] }),
        ("30 1 * * *", Fires { zone: NEW_YORK, from: "2026-10-30T12:00:00Z", fires: &["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"] }),
        ("30 2 * * *", Fires { zone: NEW_YORK, from: "2026-10-30T12:00:00Z", fires: &["2026-10-31T06:30:00Z", "2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"] }),
        (
            "*/15 * * * *",
            Fires {
                zone: NEW_YORK,
                from: "2026-11-01T04:30:00Z",
                fires: &[
                    "2026-11-01T04:45:00Z",
                    "2026-11-01T05:00:00Z",
                    "2026-11-01T05:15:00Z",
                    "2026-11-01T05:30:00Z",
                    "2026-11-01T05:45:00Z",
                    "2026-11-01T06:00:00Z",
                    "2026-11-01T06:15:00Z",
                    "2026-11-01T06:30:00Z",
                    "2026-11-01T06:45:00Z",
                    "2026-11-01T07:00:00Z",
                ],
            },
        ),
        ("30 1 * * *", Prev { zone: NEW_YORK, at: "2026-11-01T06:45:00Z", want: "2026-11-01T05:30:00Z" }),
        ("30 2 * * *", Prev { zone: NEW_YORK, at: "2026-03-08T12:00:00Z", want: "2026-03-08T07:00:00Z" }),
        // After long downtime the last missed fire is found directly.
        ("0 3 * * *", Prev { zone: BERLIN, at: "2026-06-01T12:00:00Z", want: "2026-06-01T01:00:00Z" }),
        ("@yearly", Prev { zone: "Asia/Tokyo", at: "2026-06-01T00:00:00Z", want: "2025-12-31T15:00:00Z" }),
        ("30 4 1,15 * 5", Prev { zone: "UTC", at: "2026-01-15T04:29:59Z", want: "2026-01-09T04:30:00Z" }),
    ]);
}

#[rustfmt::skip]
#[test]
fn sydney_transitions_2026() {
    // 2026-04-05 03:00 AEDT (16:00 UTC the day before) goes back to 02:00 AEST;
    // 2026-10-04 02:00 AEST (16:00 UTC the day before) jumps to 03:00 AEDT.
    check(&[
        ("30 2 * * *", Fires { zone: SYDNEY, from: "2026-04-03T16:00:00Z", fires: &["2026-04-04T15:30:00Z", "2026-04-05T16:30:00Z"] }),
        ("30 2 * * *", Fires { zone: SYDNEY, from: "2026-10-02T12:00:00Z", fires: &["2026-10-02T16:30:00Z", "2026-10-03T16:00:00Z", "2026-10-04T15:30:00Z"] }),
        ("*/30 * * * *", Fires { zone: SYDNEY, from: "2026-04-04T15:00:00Z", fires: &["2026-04-04T15:30:00Z", "2026-04-04T16:00:00Z", "2026-04-04T16:30:00Z"] }),
        ("*/30 * * * *", Fires { zone: SYDNEY, from: "2026-10-03T15:00:00Z", fires: &["2026-10-03T15:30:00Z", "2026-10-03T16:00:00Z"] }),
        ("30 2 * * *", Prev { zone: SYDNEY, at: "2026-04-04T16:45:00Z", want: "2026-04-04T15:30:00Z" }),
    ]);
}

#[test]
fn croner_alone_would_misread_these() {
    // Why the text is validated here and not handed to croner as written.
    for text in [
        "0 0 * mon *",
        "0 0 * * jan",
        "0 0 12 ? * 6",
        "0 0 L * *",
        "0 0 * * 5#2",
    ] {
        assert!(
            text.parse::<Cron>().is_ok(),
            "croner rejects {text:?} by itself now"
        );
        assert!(CronExpr::parse(text).is_err(), "{text:?} accepted");
    }
    // croner replaces names anywhere in the text: `jan` in the day-of-week field
    // becomes 1, Monday.
    let misread: Cron = "0 0 * * jan".parse().expect("croner accepts it");
    let monday = misread.find_next_occurrence(&utc(NEW_YEAR), false).ok();
    assert_eq!(monday, Some(utc("2026-01-05T00:00:00Z")));
}

#[test]
fn sub_second_inputs_are_truncated_not_rounded() {
    let expr = CronExpr::parse("*/15 * * * *").expect("valid");
    let zone = tz("UTC");
    let at = utc("2026-01-01T00:14:59.999Z");
    assert_eq!(expr.next_after(at, zone), Some(utc("2026-01-01T00:15:00Z")));
    let at = utc("2026-01-01T00:15:00.5Z");
    assert_eq!(expr.next_after(at, zone), Some(utc("2026-01-01T00:30:00Z")));
    assert_eq!(
        expr.prev_at_or_before(at, zone),
        Some(utc("2026-01-01T00:15:00Z"))
    );
}

#[test]
fn extreme_instants_give_none_not_a_panic() {
    let expr = CronExpr::parse("* * * * *").expect("valid");
    for zone in ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"] {
        let zone = tz(zone);
        assert_eq!(expr.next_after(DateTime::<Utc>::MAX_UTC, zone), None);
        assert_eq!(expr.next_after(DateTime::<Utc>::MIN_UTC, zone), None);
        assert_eq!(expr.prev_at_or_before(DateTime::<Utc>::MAX_UTC, zone), None);
        assert_eq!(expr.prev_at_or_before(DateTime::<Utc>::MIN_UTC, zone), None);
    }
}

/// Every fire strictly after `from` up to `until`, checking on the way that fires
/// increase and that `prev_at_or_before` agrees with `next_after`.
fn walk(
    expr: &CronExpr,
    zone: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut fires: Vec<DateTime<Utc>> = Vec::new();
    let mut cursor = from;
    while let Some(next) = expr.next_after(cursor, zone) {
        let context = format!("{:?} in {zone} after {cursor}", expr.source());
        assert!(next > cursor, "{context}: went back to {next}");
        if next > until {
            break;
        }
        assert_eq!(expr.prev_at_or_before(next, zone), Some(next), "{context}");
        if let Some(&last) = fires.last() {
            let before = expr.prev_at_or_before(next - Duration::seconds(1), zone);
            assert_eq!(before, Some(last), "{context}: prev before {next}");
        }
        fires.push(next);
        cursor = next;
    }
    fires
}

/// The hours (UTC, on the hour) during which `zone`'s offset changes.
fn transitions(zone: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    use chrono::{Offset, TimeZone};
    let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix();
    let mut found = Vec::new();
    let mut t = from;
    while t < until {
        if offset(t) != offset(t + Duration::hours(1)) {
            found.push(t);
        }
        t += Duration::hours(1);
    }
    found
}

const SWEEP_ZONES: [&str; 14] = [
    "UTC",
    "Europe/Berlin",
    "Europe/Oslo",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe", // 30-minute DST
    "America/Santiago",    // clocks change at midnight
    "America/Havana",      // clocks change at midnight
    "Pacific/Chatham",     // +12:45 / +13:45
    "Africa/Casablanca",   // DST suspended for Ramadan
    "America/St_Johns",    // -03:30 / -02:30
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Asia/Kolkata",
];

#[test]
fn sweep_zones_for_years_without_panics_and_with_the_dst_rules() {
    use chrono::{NaiveTime, TimeZone};
    let from = utc("2026-01-01T00:00:00Z");
    let until = utc("2030-01-01T00:00:00Z");
    for name in SWEEP_ZONES {
        let zone = tz(name);

        // Fixed time: exactly one fire per local day; where the time does not exist
        // that day, the fire is the first instant after the gap.
        for (text, hour, minute) in [
            ("30 2 * * *", 2, 30),
            ("0 2 * * *", 2, 0),
            ("0 0 * * *", 0, 0),
            ("30 0 * * *", 0, 30),
            ("45 23 * * *", 23, 45),
            ("0 1 3 * * *", 3, 1),
        ] {
            let expr = CronExpr::parse(text).expect("valid");
            assert!(expr.is_fixed_time(), "{text:?}");
            let wanted = NaiveTime::from_hms_opt(hour, minute, 0).expect("valid time");
            let fires = walk(&expr, zone, from, until);
            // Four years of days; the exact count depends on the zone's offset at the
            // ends, so consecutive local dates below are what proves one a day.
            assert!(
                fires.len() >= 1460,
                "{text:?} in {name}: {} fires",
                fires.len()
            );
            for pair in fires.windows(2) {
                let (a, b) = (pair[0].with_timezone(&zone), pair[1].with_timezone(&zone));
                assert_eq!(
                    a.date_naive().succ_opt(),
                    Some(b.date_naive()),
                    "{text:?} in {name}: {a} then {b}"
                );
            }
            for fire in &fires {
                let local = fire.with_timezone(&zone);
                if local.time() != wanted {
                    let intended = local.date_naive().and_time(wanted);
                    assert!(
                        zone.from_local_datetime(&intended).single().is_none()
                            && zone.from_local_datetime(&intended).earliest().is_none(),
                        "{text:?} in {name}: fired at {local}, but {intended} exists"
                    );
                    let just_before = (*fire - Duration::seconds(1)).with_timezone(&zone);
                    assert!(
                        just_before.naive_local() < intended,
                        "{text:?} in {name}: {local} is not the first instant after the gap"
                    );
                }
            }
        }

        // Interval jobs around every change of offset: every real instant whose wall
        // time matches, and offsets are whole quarter hours, so the UTC spacing never
        // changes.
        for at in transitions(zone, from, until) {
            for (text, spacing) in [
                ("*/15 * * * *", 900),
                ("*/30 * * * * *", 30),
                ("0 */5 * * * *", 300),
            ] {
                let expr = CronExpr::parse(text).expect("valid");
                assert!(!expr.is_fixed_time(), "{text:?}");
                let fires = walk(
                    &expr,
                    zone,
                    at - Duration::hours(3),
                    at + Duration::hours(3),
                );
                assert!(
                    fires.len() as i64 >= 6 * 3600 / spacing - 1,
                    "{text:?} in {name} at {at}"
                );
                for pair in fires.windows(2) {
                    assert_eq!(
                        (pair[1] - pair[0]).num_seconds(),
                        spacing,
                        "{text:?} in {name}: {} then {}",
                        pair[0],
                        pair[1]
                    );
                }
            }
        }

        // Hourly for a year: on the hour every time, and an hour apart wherever
        // DST moves clocks by a whole hour.
        let expr = CronExpr::parse("0 * * * *").expect("valid");
        let fires = walk(&expr, zone, from, utc("2027-01-01T00:00:00Z"));
        for pair in fires.windows(2) {
            let local = pair[1].with_timezone(&zone);
            assert_eq!((local.minute(), local.second()), (0, 0), "{name}: {local}");
            if name != "Australia/Lord_Howe" {
                assert_eq!(
                    (pair[1] - pair[0]).num_seconds(),
                    3600,
                    "{name}: {} then {}",
                    pair[0],
                    pair[1]
                );
            }
        }

        // Rarer patterns: no panics, and prev agrees with next.
        for text in [
            "30 4 1,15 * 5",
            "0 0 29 2 *",
            "@weekly",
            "@monthly",
            "0 9-17 * jun-aug mon-fri",
        ] {
            let expr = CronExpr::parse(text).expect("valid");
            assert!(
                !walk(&expr, zone, from, until).is_empty(),
                "{text:?} in {name}"
            );
        }
    }
}

#[rustfmt::skip]
#[test]
fn a_missing_calendar_day_is_skipped_not_fatal() {
    // Samoa skipped 2011-12-30 entirely (-10:00 to +14:00), a gap far longer than
    // croner's gap search. The search recovers instead of reporting "never".
    check(&[
        ("30 12 * * *", Fires { zone: "Pacific/Apia", from: "2011-12-28T12:00:00Z", fires: &["2011-12-28T22:30:00Z", "2011-12-29T22:30:00Z", "2011-12-30T22:30:00Z"] }),
        ("0 */6 * * *", Fires { zone: "Pacific/Apia", from: "2011-12-29T21:00:00Z", fires: &["2011-12-29T22:00:00Z", "2011-12-30T04:00:00Z", "2011-12-30T10:00:00Z"] }),
        ("30 12 * * *", Prev { zone: "Pacific/Apia", at: "2011-12-30T22:29:59Z", want: "2011-12-29T22:30:00Z" }),
    ]);
    // croner by itself gives up on that search; `next_after` retries past the gap.
    let apia = tz("Pacific/Apia");
    let expr = CronExpr::parse("30 12 * * *").expect("valid");
    let from = utc("2011-12-29T22:30:00Z").with_timezone(&apia);
    assert!(expr.cron.find_next_occurrence(&from, false).is_err());
}

#[test]
fn junk_never_panics_and_whatever_parses_fires() {
    // Random field soup, weighted towards almost-valid expressions.
    let atoms = [
        "*", "*/5", "0", "7", "15", "29", "30", "31", "59", "60", "1-5", "5-1", "mon", "jan",
        "fri-sun", "?", "L", "5L", "15W", "#", "1,15", "/", "-", ",", "@daily", "@x", "feb",
        "0-7/2", "2", "24", "+1", "",
    ];
    let mut rng = fastrand::Rng::with_seed(0x71de_9a7e);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let fields = rng.usize(0..8);
        let text: Vec<&str> = (0..fields)
            .map(|_| atoms[rng.usize(..atoms.len())])
            .collect();
        let text = text.join(if rng.bool() { " " } else { "\t" });
        let Ok(expr) = CronExpr::parse(&text) else {
            continue;
        };
        parsed += 1;
        for zone in ["UTC", "Europe/Berlin", "Australia/Lord_Howe"] {
            let next = expr.next_after(utc(NEW_YEAR), tz(zone));
            assert!(next.is_some(), "{text:?} in {zone} never fires");
            assert!(
                expr.prev_at_or_before(utc("2035-01-01T00:00:00Z"), tz(zone))
                    .is_some()
            );
        }
    }
    assert!(parsed > 100, "only {parsed} of the samples parsed");
}
