//! Wall-clock triggers: cron expressions, whole calendar months, and one-shots.
//!
//! Pure: every function takes the instant it reasons about. Nothing here enumerates an
//! unbounded number of fires: the latest fire before an instant is found directly, and
//! counting fires is capped at [`COUNT_CAP`].

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{CronExpr, Every, Trigger};

/// Counting missed calendar fires stops here; the count is then a lower bound.
pub const COUNT_CAP: u64 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum Calendar {
    Cron(CronExpr),
    Months(u32),
    At(DateTime<Utc>),
}

impl Calendar {
    /// The wall-clock part of a trigger; `None` for fixed intervals and manual jobs.
    pub fn of(trigger: Option<&Trigger>) -> Option<Calendar> {
        match trigger? {
            Trigger::Cron(c) => Some(Calendar::Cron(c.clone())),
            Trigger::Every(Every::Months(n)) => Some(Calendar::Months(*n)),
            Trigger::At(t) => Some(Calendar::At(*t)),
            Trigger::Every(Every::Fixed(_)) => None,
        }
    }

    /// The first fire strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        match self {
            Calendar::Cron(c) => c.next_after(after, zone),
            Calendar::Months(n) => {
                let mut index = month_index(after, zone);
                loop {
                    if index % i64::from(*n) == 0 {
                        let start = month_start(index, zone)?;
                        if start > after {
                            return Some(start);
                        }
                    }
                    index += 1;
                }
            }
            Calendar::At(t) => (*t > after).then_some(*t),
        }
    }

    /// The latest fire at or before `at`.
    pub fn prev_at_or_before(&self, at: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        match self {
            Calendar::Cron(c) => c.prev_at_or_before(at, zone),
            Calendar::Months(n) => {
                let mut index = month_index(at, zone);
                index -= index.rem_euclid(i64::from(*n));
                loop {
                    let start = month_start(index, zone)?;
                    if start <= at {
                        return Some(start);
                    }
                    index -= i64::from(*n);
                }
            }
            Calendar::At(t) => (*t <= at).then_some(*t),
        }
    }

    /// Fires in `(after, until]`, counted up to [`COUNT_CAP`].
    pub fn count_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, zone: Tz) -> u64 {
        let mut count = 0;
        let mut t = after;
        while count < COUNT_CAP {
            match self.next_after(t, zone) {
                Some(next) if next <= until => {
                    count += 1;
                    t = next;
                }
                _ => break,
            }
        }
        count
    }

    pub fn is_one_shot(&self) -> bool {
        matches!(self, Calendar::At(_))
    }
}

/// Months since year 0 of the local date of `t`.
fn month_index(t: DateTime<Utc>, zone: Tz) -> i64 {
    let local = t.with_timezone(&zone);
    i64::from(local.year()) * 12 + i64::from(local.month0())
}

/// Local midnight of the first day of month `index`, or the first valid instant after
/// it when midnight falls in a DST gap.
fn month_start(index: i64, zone: Tz) -> Option<DateTime<Utc>> {
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
    let midnight = NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)?;
    for minutes in (0..=180).step_by(15) {
        let local = midnight + chrono::Duration::minutes(minutes);
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return Some(t.with_timezone(&Utc));
            }
            LocalResult::None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn months_fire_at_local_month_starts_on_their_multiple() {
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let every3 = Calendar::Months(3);
        // Local 2026-04-01 00:00 JST is 2026-03-31 15:00 UTC; index of April is a multiple of 3.
        let next = every3.next_after(utc(2026, 2, 10, 0, 0), tokyo).unwrap();
        assert_eq!(next, utc(2026, 3, 31, 15, 0));
        assert_eq!(
            every3.next_after(next, tokyo).unwrap(),
            utc(2026, 6, 30, 15, 0)
        );
        assert_eq!(
            every3
                .prev_at_or_before(utc(2026, 6, 1, 0, 0), tokyo)
                .unwrap(),
            next
        );
        assert_eq!(
            every3.count_between(utc(2026, 1, 1, 0, 0), utc(2027, 1, 1, 0, 0), tokyo),
            4
        );
    }

    #[test]
    fn one_shot_fires_once() {
        let at = Calendar::At(utc(2026, 12, 25, 1, 0));
        let zone = Tz::UTC;
        assert_eq!(
            at.next_after(utc(2026, 12, 1, 0, 0), zone),
            Some(utc(2026, 12, 25, 1, 0))
        );
        assert_eq!(at.next_after(utc(2026, 12, 25, 1, 0), zone), None);
        assert_eq!(
            at.prev_at_or_before(utc(2026, 12, 26, 0, 0), zone),
            Some(utc(2026, 12, 25, 1, 0))
        );
        assert_eq!(
            at.count_between(utc(2026, 1, 1, 0, 0), utc(2027, 1, 1, 0, 0), zone),
            1
        );
    }
}
