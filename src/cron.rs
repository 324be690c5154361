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
mod tests;
