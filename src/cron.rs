//! POSIX crontab expressions (SPEC section 1), evaluated in an IANA zone.
//!
//! Pure: no clock, no IO. `next_after` is what the scheduler waits on; `prev_at_or_before`
//! finds the last fire missed during downtime without enumerating the ones before it.
//!
//! # Which crate, and what is wrapped
//!
//! Evaluation is done by `croner` 4: it speaks the POSIX/Vixie dialect (5 fields, or 6
//! with seconds first; day of week 0-7 with 0 and 7 both Sunday; day-of-month OR
//! day-of-week) and implements the OCPS DST rules below, which the tests pin down. The
//! `cron` crate is not used: it speaks the Quartz dialect (seconds required, so
//! `*/5 * * * *` is an error; 1 = Sunday and 0 rejected; day-of-month AND day-of-week;
//! both instants of a repeated hour for a fixed-time job). croner is not trusted with
//! the text as written: its parser substitutes names anywhere in the string (`jan` in
//! the day-of-week field becomes 1, Monday), silently accepts Quartz `?`, `L`, `W`, `#`
//! and its own `+`, and words its errors for programmers. So this module parses
//! strictly itself (names per field, ranges, lists, steps, macros), rejecting Quartz
//! syntax, reversed ranges, out-of-range values, steps without a range (`5/15`) and
//! days that never come (`0 0 30 feb *`) with a one-line lowercase message, and hands
//! croner a normalised numeric 6-field pattern (explicit value lists; `*` only where
//! the text said `*`) parsed with seconds required, no year field, OR rule, POSIX
//! weekdays and no sloppy ranges. Around croner's search: inputs are truncated to whole
//! seconds, instants outside years 1000-4000 give `None` (chrono panics converting at
//! the edges of its range), every answer is checked to lie on the right side of the
//! input, and a search croner gives up on (a clock gap longer than its 2 h gap search,
//! e.g. Pacific/Apia skipping 2011-12-30) is retried an hour further on instead of
//! reporting that the job never fires again.
//!
//! # DST rules (croner's OCPS rules, verified by the tests below)
//!
//! A job is *fixed-time* when its second, minute and hour fields each select exactly one
//! value (`30 2 * * *`, `0 0 3 * * *`, macros other than `@hourly`); anything else is an
//! *interval/wildcard* job (`*/15 * * * *`, `0 * * * *`, `0 1,2 * * *`).
//! - Gap (spring forward): a fixed-time job whose time does not exist that day fires
//!   once, at the first real instant after the gap (Berlin 2026-03-29 `30 2 * * *` fires
//!   at 03:00 CEST = 01:00 UTC). An interval job skips the nonexistent times.
//! - Fold (fall back): a fixed-time job fires once, at the first occurrence (Berlin
//!   2026-10-25 `30 2 * * *` fires at 00:30 UTC, not at 01:30 UTC). An interval job fires
//!   at every real instant whose wall time matches: `*/15 * * * *` fires four times in
//!   each of the two passes through the repeated hour.
//!
//! Day-of-month and day-of-week: when both are restricted (anything but a bare `*`,
//! so `*/2` counts as restricted) a day matching either fires, as in croner. Vixie
//! cron's quirk of treating any field that starts with `*` as unrestricted is not
//! copied. `0 0 31 * *` fires only in months with a 31st, as in every cron.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed, valid crontab expression.
#[derive(Debug, Clone, PartialEq)]
pub struct CronExpr {
    source: String,
    /// The normalised numeric 6-field pattern handed to croner.
    normalized: String,
    /// Boxed: croner's pattern is a few hundred bytes and `CronExpr` sits in enums.
    cron: Box<Cron>,
}

/// One field of the expression: its name in messages, its range, and its names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names; `names[i]` is the value `names_base + i`.
    names: &'static [&'static str],
    names_base: u32,
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DOW_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [FieldSpec; 6] = [
    FieldSpec {
        name: "second",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        names_base: 1,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &DOW_NAMES,
        names_base: 0,
    },
];
const DOM: usize = 3;
const MONTH: usize = 4;
const DOW: usize = 5;

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Longest month per month number, leap years included.
const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Inputs outside these years give `None` rather than risking chrono's range edges.
const MIN_YEAR: i32 = 1000;
const MAX_YEAR: i32 = 4000;

/// How many one-hour hops a search may take past a span croner gives up on.
const RETRY_HOURS: i64 = 72;

impl CronExpr {
    /// Parses a 5-field (or 6-field, seconds first) expression or a macro.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let source = text.trim();
        if source.is_empty() {
            return Err("empty cron expression".to_string());
        }
        let body = if source.starts_with('@') {
            expand_macro(source)?
        } else {
            source
        };
        let mut tokens: Vec<&str> = body.split_whitespace().collect();
        if tokens.len() != 5 && tokens.len() != 6 {
            return Err(format!(
                "expected 5 or 6 fields, got {} ({source:?})",
                tokens.len()
            ));
        }
        if tokens.len() == 5 {
            tokens.insert(0, "0");
        }

        let mut sets = [0u64; 6];
        for (i, (spec, token)) in FIELDS.iter().zip(&tokens).enumerate() {
            sets[i] = parse_field(spec, token)?;
        }
        // 7 is Sunday too.
        if sets[DOW] & (1 << 7) != 0 {
            sets[DOW] = (sets[DOW] & !(1 << 7)) | 1;
        }
        let dom_star = tokens[DOM] == "*";
        let dow_star = tokens[DOW] == "*";
        if !dom_star && dow_star {
            let possible = (1..=12u32).any(|month| {
                sets[MONTH] & (1 << month) != 0
                    && (1..=MAX_DAYS[month as usize - 1]).any(|day| sets[DOM] & (1 << day) != 0)
            });
            if !possible {
                return Err(format!(
                    "never fires: day-of-month {:?} does not occur in month {:?}",
                    tokens[DOM], tokens[MONTH]
                ));
            }
        }

        let normalized = tokens
            .iter()
            .zip(sets)
            .map(|(token, set)| {
                if *token == "*" {
                    "*".to_string()
                } else {
                    values(set)
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .alternative_weekdays(false)
            .sloppy_ranges(false)
            .build()
            .parse(&normalized)
            .map_err(|e| format!("cannot evaluate {source:?}: {e}"))?;
        Ok(CronExpr {
            source: source.to_string(),
            normalized,
            cron: Box::new(cron),
        })
    }

    /// The expression as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first fire strictly after `after`, evaluated in `zone`.
    ///
    /// `None` if there is none before year 5000 or `after` is outside years 1000-4000.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let after = whole_second(after)?;
        for hop in 0..=RETRY_HOURS {
            let from = (after + Duration::hours(hop)).with_timezone(&zone);
            // A hop past the start is an inclusive search: `from` itself may fire.
            match self.cron.find_next_occurrence(&from, hop > 0) {
                Ok(found) => {
                    let found = found.with_timezone(&Utc);
                    return (found > after).then_some(found);
                }
                Err(CronError::TimeSearchLimitExceeded) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// The latest fire at or before `at`, evaluated in `zone`.
    ///
    /// Used after downtime to find the last missed fire without enumerating; `None`
    /// if there is none after year 1 or `at` is outside years 1000-4000.
    pub fn prev_at_or_before(&self, at: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let at = whole_second(at)?;
        for hop in 0..=RETRY_HOURS {
            let from = (at - Duration::hours(hop)).with_timezone(&zone);
            match self.cron.find_previous_occurrence(&from, true) {
                Ok(found) => {
                    let found = found.with_timezone(&Utc);
                    return (found <= at).then_some(found);
                }
                Err(CronError::TimeSearchLimitExceeded) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Whether DST gaps and folds treat this as a fixed-time job (see the module doc).
    pub fn is_fixed_time(&self) -> bool {
        self.cron.determine_job_type() == croner::JobType::FixedTime
    }
}

impl std::fmt::Display for CronExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// Truncates to whole seconds (fires are whole seconds, so "strictly after" and
/// "at or before" keep their meaning) and refuses years chrono cannot shift safely.
fn whole_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !(MIN_YEAR..=MAX_YEAR).contains(&t.year()) {
        return None;
    }
    t.with_nanosecond(0)
}

fn expand_macro(source: &str) -> Result<&'static str, String> {
    if source.split_whitespace().count() != 1 {
        return Err(format!("a macro must stand alone ({source:?})"));
    }
    let lower = source.to_ascii_lowercase();
    MACROS
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, body)| *body)
        .ok_or_else(|| {
            format!(
                "unknown macro {source:?} (expected @hourly, @daily, @midnight, @weekly, \
                 @monthly, @yearly or @annually)"
            )
        })
}

/// The set values of a field bit set, ascending.
fn values(set: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |v| set & (1 << v) != 0)
}

/// Parses one field into a bit set of its values (bit `v` set when `v` matches).
fn parse_field(spec: &FieldSpec, token: &str) -> Result<u64, String> {
    let field = spec.name;
    if let Some(problem) = quartz_token(token) {
        return Err(format!(
            "unsupported {problem} in the {field} field ({token:?}); only posix cron syntax is accepted"
        ));
    }
    let mut set = 0u64;
    for item in token.split(',') {
        if item.is_empty() {
            return Err(format!("empty list item in the {field} field ({token:?})"));
        }
        let (base, step) = match item.split_once('/') {
            None => (item, None),
            Some((base, step)) => (base, Some(parse_step(spec, item, step)?)),
        };
        let (low, high) = if base == "*" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = base.split_once('-') {
            let low = parse_value(spec, low, false)?;
            let high = parse_value(spec, high, true)?;
            if low > high {
                return Err(format!(
                    "reversed range {item:?} in the {field} field (wrap-around is not supported)"
                ));
            }
            (low, high)
        } else {
            let value = parse_value(spec, base, false)?;
            if step.is_some() {
                return Err(format!(
                    "a step needs \"*\" or a range before \"/\" in the {field} field \
                     ({item:?}; write \"{value}-{}/…\")",
                    spec.max
                ));
            }
            (value, value)
        };
        let step = step.unwrap_or(1);
        let mut value = low;
        while value <= high {
            set |= 1 << value;
            value += step;
        }
    }
    Ok(set)
}

fn parse_step(spec: &FieldSpec, item: &str, step: &str) -> Result<u32, String> {
    let field = spec.name;
    let span = spec.max - spec.min + 1;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad step in the {field} field ({item:?})"));
    }
    match step.parse::<u32>() {
        Ok(n) if (1..=span).contains(&n) => Ok(n),
        _ => Err(format!(
            "step {step} out of range 1-{span} in the {field} field ({item:?})"
        )),
    }
}

/// Parses a number or a three-letter name; `range_end` maps `sun` to 7 so `fri-sun` works.
fn parse_value(spec: &FieldSpec, text: &str, range_end: bool) -> Result<u32, String> {
    let field = spec.name;
    if text.is_empty() {
        return Err(format!("missing value in the {field} field"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "value {text} out of range {}-{} in the {field} field",
                spec.min, spec.max
            )),
        };
    }
    let lower = text.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        let value = spec.names_base + i as u32;
        return Ok(if range_end && spec.name == "day-of-week" && value == 0 {
            7
        } else {
            value
        });
    }
    if spec.names.is_empty() {
        Err(format!(
            "expected a number in the {field} field, got {text:?}"
        ))
    } else {
        Err(format!("unknown name {text:?} in the {field} field"))
    }
}

/// Names Quartz-only (or croner-only) syntax in a field, if any.
fn quartz_token(token: &str) -> Option<&'static str> {
    if token.contains('?') {
        return Some("quartz \"?\" (no specific value; use \"*\")");
    }
    if token.contains('#') {
        return Some("quartz \"#\" (nth weekday of the month)");
    }
    if token.starts_with('+') {
        return Some("croner \"+\" (day-of-month and day-of-week)");
    }
    // `L`, `LW`, `15W`, `5L`: digits then L or W. Names (`jul`, `wed`) never match.
    let quartz_day = |value: &str| {
        let upper = value.to_ascii_uppercase();
        upper == "LW"
            || upper
                .strip_suffix(['L', 'W'])
                .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
    };
    let hit = token
        .split([',', '-', '/'])
        .any(|value| !value.is_empty() && quartz_day(value));
    hit.then_some("quartz \"L\"/\"W\" (last day, nearest weekday)")
}

#[cfg(test)]
mod tests {
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
                            failures
                                .push(format!("{expr:?}: prev_at_or_before({next}) = {back:?}"));
                        }
                        if let Some(previous) = previous {
                            let before =
                                parsed.prev_at_or_before(next - Duration::seconds(1), zone);
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
}
