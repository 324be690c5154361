//! How long to wait before retrying a failed run: exponential backoff with jitter.
//!
//! Pure: the random draw is passed in, so the bounds are testable.

use std::time::Duration;

use crate::config::RetryPolicy;

/// The wait before retry number `retry` (1 for the first retry), given a uniform draw
/// `unit` in `[0, 1)`. The exponential delay is capped at `max_delay`; the wait is drawn
/// from its upper half ("equal jitter"), so retries spread out yet never hammer.
pub fn backoff(policy: &RetryPolicy, retry: u32, unit: f64) -> Duration {
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let grown = policy.delay.as_secs_f64() * policy.backoff.max(1.0).powi(exponent);
    let capped = grown.min(policy.max_delay.as_secs_f64());
    let wait = capped / 2.0 + capped / 2.0 * unit.clamp(0.0, 1.0);
    Duration::try_from_secs_f64(wait).unwrap_or(policy.max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retry: u32, unit: f64, expected_ms: u64) {
        let policy = RetryPolicy {
            attempts: 5,
            delay: Duration::from_secs(1),
            backoff: 2.0,
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(
            backoff(&policy, retry, unit).as_millis() as u64,
            expected_ms,
            "retry {retry} unit {unit}"
        );
    }

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        check(1, 0.0, 500);
        check(1, 0.999_999, 999);
        check(2, 0.0, 1000);
        check(3, 0.5, 3000);
        check(4, 1.0, 8000);
        check(5, 0.0, 5000); // 16 s capped at 10 s
        check(40, 1.0, 10_000);
    }
}
