//! What the server's answer means for a batch, and how long to wait before the next
//! try. Pure: the answer, its headers and the attempt number go in, a [`Verdict`] or
//! a [`Duration`] comes out.
//!
//! The table (SPEC section 4): 2xx delivers; 408, 425, 429, 5xx, other unexpected
//! answers and network errors retry with exponential backoff and full jitter, honouring
//! `Retry-After`; 409 (the server is still working on that key) retries later with the
//! batch unchanged; 413 halves the batch; 401 and 403 pause uploading (a wrong token,
//! or a wrong clock breaking TLS: never the readings' fault); any other 4xx is a
//! poison batch, split until the readings the server refuses are isolated.
//!
//! `Retry-After` as an HTTP date is read against the response's own `Date`, never the
//! gateway's clock alone: a gateway still in 1970 would otherwise wait for decades.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// What to do with a batch after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server has it: acknowledge the batch.
    Delivered,
    /// Try the same batch again after a backoff (or the server's `Retry-After`).
    Retry { after: Option<Duration> },
    /// 409: the server is still working on this key; send it again later, unchanged.
    InProgress { after: Option<Duration> },
    /// 413: split the batch in two halves and send those.
    TooLarge,
    /// 401/403: stop uploading and report it; nothing is dead-lettered.
    Paused,
    /// Another 4xx: the server refuses these readings; split to isolate them.
    Poison,
}

/// The verdict for an HTTP answer. `retry_after` and `date` are the raw header
/// values; `trusted_now` is the gateway's clock when it is trusted, used for an HTTP
/// date only when the answer carries no `Date`.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    date: Option<&str>,
    trusted_now: Option<DateTime<Utc>>,
) -> Verdict {
    let after = || retry_after.and_then(|v| parse_retry_after(v, date, trusted_now));
    match status {
        200..=299 => Verdict::Delivered,
        409 => Verdict::InProgress { after: after() },
        413 => Verdict::TooLarge,
        401 | 403 => Verdict::Paused,
        408 | 425 | 429 => Verdict::Retry { after: after() },
        400..=499 => Verdict::Poison,
        _ => Verdict::Retry { after: after() },
    }
}

/// `Retry-After` as delta-seconds, or as an HTTP date measured from the answer's
/// `Date` (or from a trusted local clock when there is none). A date in the past
/// means now; anything unreadable is ignored.
pub fn parse_retry_after(
    value: &str,
    date: Option<&str>,
    trusted_now: Option<DateTime<Utc>>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let then = parse_http_date(value)?;
    let now = match date.and_then(parse_http_date) {
        Some(server_now) => server_now,
        None => trusted_now?,
    };
    Some((then - now).to_std().unwrap_or(Duration::ZERO))
}

/// An HTTP date in any of the three forms RFC 9110 allows.
pub fn parse_http_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc2822(text) {
        return Some(t.with_timezone(&Utc));
    }
    // RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37 1994").
    let rfc850 = text
        .strip_suffix(" GMT")
        .and_then(|t| NaiveDateTime::parse_from_str(t, "%A, %d-%b-%y %H:%M:%S").ok());
    let asctime = || NaiveDateTime::parse_from_str(text, "%a %b %e %H:%M:%S %Y").ok();
    rfc850.or_else(asctime).map(|t| t.and_utc())
}

/// Exponential backoff with full jitter: a uniform draw `unit` in `[0, 1)` of
/// `min(cap, base · 2^attempt)`, where attempt 0 is the first retry.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let grown = base.as_secs_f64() * 2f64.powi(i32::try_from(attempt.min(62)).unwrap_or(62));
    let ceiling = grown.min(cap.as_secs_f64());
    Duration::try_from_secs_f64(ceiling * unit.clamp(0.0, 1.0)).unwrap_or(cap)
}

/// The wait before the next try: the server's `Retry-After` when it gave one (never
/// more than `cap`), else the backoff.
pub fn wait(
    verdict_after: Option<Duration>,
    attempt: u32,
    base: Duration,
    cap: Duration,
    unit: f64,
) -> Duration {
    match verdict_after {
        Some(after) => after.min(cap),
        None => backoff(attempt, base, cap, unit),
    }
}

#[cfg(test)]
mod tests;
