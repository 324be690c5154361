//! POSIX crontab expressions (SPEC section 1), evaluated in an IANA zone.
//!
//! Pure: no clock, no IO. `next_after` is the whole interface the scheduler needs.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed, valid crontab expression.
#[derive(Debug, Clone, PartialEq)]
pub struct CronExpr {
    source: String,
}

impl CronExpr {
    /// Parses a 5-field (or 6-field, seconds first) expression or a macro.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        Err(format!("cron is not implemented yet ({text:?})"))
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first fire strictly after `after`, in `zone`.
    pub fn next_after(&self, _after: DateTime<Utc>, _zone: Tz) -> Option<DateTime<Utc>> {
        None
    }

    /// The latest fire at or before `at`, in `zone`.
    pub fn prev_at_or_before(&self, _at: DateTime<Utc>, _zone: Tz) -> Option<DateTime<Utc>> {
        None
    }
}
