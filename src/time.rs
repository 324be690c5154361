//! How times are written: RFC 3339 UTC with milliseconds (SPEC section 8).

use chrono::{DateTime, SecondsFormat, Utc};

/// `2026-11-23T01:00:00.000Z`.
pub fn format_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch back to a time; `None` when out of range.
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}
