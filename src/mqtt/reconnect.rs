//! When to try the broker again, and when to hold back the subscriptions: the pure
//! core of the connection task. No IO and no clock of its own: monotonic `now` and the
//! random draw are passed in.
//!
//! Invariants:
//! - Waits between attempts are full-jitter exponential: a uniform draw in
//!   `[0, min(60 s, 1 s · 2^n))` after the n-th failure in a row, so a fleet that lost
//!   its broker at once does not come back at once, and a broker that stays away costs
//!   at most one attempt a minute on average once the cap is reached.
//! - A session that lasted [`STABLE_SESSION`] was healthy: the next loss starts the
//!   backoff over. A session that fails sooner keeps growing it, so a broker that
//!   accepts and then drops the client at once is not hammered.
//! - A packet over the incoming limit kills the connection (the client cannot skip
//!   it). If that happens twice in a row soon after subscribing, a retained message
//!   is the likely cause and would come back at every subscription: the next
//!   sessions then stay connected without subscribing for a hold (5 min, doubling to
//!   1 h), so status and heartbeats still go out.

use std::time::Duration;

/// The first backoff window.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The largest backoff window.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A session this long was healthy; an oversized packet this long after subscribing
/// is a live message, not a retained one.
pub const STABLE_SESSION: Duration = Duration::from_secs(30);
/// The first subscription hold after repeated oversized packets.
pub const OVERSIZE_HOLD: Duration = Duration::from_secs(300);
/// The longest subscription hold.
pub const OVERSIZE_HOLD_CAP: Duration = Duration::from_secs(3600);

/// How a connection or an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The attempt or the session failed for any reason but the one below.
    Failed,
    /// An incoming packet was over the limit.
    Oversize,
}

/// The reconnect state of one client.
#[derive(Debug, Default, Clone)]
pub struct Reconnect {
    /// Failures (attempts or short sessions) since the last stable session.
    failures: u32,
    connected_at: Option<Duration>,
    subscribed_at: Option<Duration>,
    /// Oversized packets in a row that came soon after subscribing.
    oversize_streak: u32,
    hold_until: Option<Duration>,
}

impl Reconnect {
    /// A connection is up. Returns when to subscribe: `None` at once, else the
    /// monotonic instant a hold ends.
    pub fn connected(&mut self, now: Duration) -> Option<Duration> {
        self.connected_at = Some(now);
        self.subscribed_at = None;
        self.hold_until.filter(|&until| until > now)
    }

    /// The subscriptions of this session went out.
    pub fn subscribed(&mut self, now: Duration) {
        self.subscribed_at = Some(now);
    }

    /// The attempt or session ended; returns how long to wait before the next attempt.
    /// `draw` is uniform in `[0, 1)`.
    pub fn ended(&mut self, now: Duration, ending: Ending, draw: f64) -> Duration {
        if let Some(since) = self.connected_at.take()
            && now.saturating_sub(since) >= STABLE_SESSION
        {
            self.failures = 0;
        }
        let subscribed_for = self.subscribed_at.take().map(|at| now.saturating_sub(at));
        match (ending, subscribed_for) {
            (Ending::Oversize, Some(d)) if d < STABLE_SESSION => {
                self.oversize_streak += 1;
                if self.oversize_streak >= 2 {
                    let doublings = (self.oversize_streak - 2).min(5);
                    let hold = (OVERSIZE_HOLD * (1 << doublings)).min(OVERSIZE_HOLD_CAP);
                    self.hold_until = Some(now + hold);
                }
            }
            // Subscribed long enough to have had every retained message: whatever
            // ended this session, it was not one of them.
            (_, Some(_)) => self.oversize_streak = 0,
            // A failed attempt says nothing about what the subscriptions bring.
            (_, None) => {}
        }
        let wait = full_jitter(self.failures, draw);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Whether subscriptions are held back at `now`, and until when.
    pub fn hold(&self, now: Duration) -> Option<Duration> {
        self.hold_until.filter(|&until| until > now)
    }
}

/// A uniform draw in `[0, min(cap, base · 2^failures))`.
pub fn full_jitter(failures: u32, draw: f64) -> Duration {
    let window = BACKOFF_BASE
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_CAP);
    window.mul_f64(draw.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_windows_double_up_to_the_cap() {
        for (failures, window) in [(0, 1), (1, 2), (2, 4), (5, 32), (6, 60), (40, 60)] {
            assert_eq!(full_jitter(failures, 1.0), S(window), "after {failures}");
            assert_eq!(full_jitter(failures, 0.0), Duration::ZERO);
            assert_eq!(full_jitter(failures, 0.5), S(window) / 2);
        }
    }

    #[test]
    fn failed_attempts_grow_the_window_and_a_stable_session_resets_it() {
        let mut r = Reconnect::default();
        let windows: Vec<Duration> = (0..8).map(|i| r.ended(S(i), Ending::Failed, 1.0)).collect();
        assert_eq!(windows, [1, 2, 4, 8, 16, 32, 60, 60].map(S));

        // A session that drops at once does not start the backoff over.
        r.connected(S(100));
        assert_eq!(r.ended(S(101), Ending::Failed, 1.0), S(60));

        // One that lasted does.
        r.connected(S(200));
        assert_eq!(r.ended(S(200) + STABLE_SESSION, Ending::Failed, 1.0), S(1));
        assert_eq!(r.ended(S(300), Ending::Failed, 1.0), S(2));
    }

    #[test]
    fn repeated_oversize_right_after_subscribing_holds_the_subscriptions() {
        let mut r = Reconnect::default();
        // First time: reconnect and subscribe as usual.
        assert_eq!(r.connected(S(0)), None);
        r.subscribed(S(0));
        r.ended(S(1), Ending::Oversize, 0.5);
        assert_eq!(
            r.connected(S(2)),
            None,
            "one oversized packet is not a pattern"
        );
        r.subscribed(S(2));
        // Second time in a row: hold for 5 minutes.
        r.ended(S(3), Ending::Oversize, 0.5);
        assert_eq!(r.hold(S(3)), Some(S(3) + OVERSIZE_HOLD));
        assert_eq!(r.connected(S(4)), Some(S(3) + OVERSIZE_HOLD));
        // The hold ends, the subscription brings it again: the hold doubles.
        let t = S(3) + OVERSIZE_HOLD;
        r.subscribed(t);
        r.ended(t + S(1), Ending::Oversize, 0.5);
        assert_eq!(r.hold(t + S(1)), Some(t + S(1) + OVERSIZE_HOLD * 2));
        // And is capped.
        let mut now = t + S(1);
        for _ in 0..10 {
            now = r.hold(now).unwrap_or(now);
            r.connected(now);
            r.subscribed(now);
            r.ended(now + S(1), Ending::Oversize, 0.5);
            now += S(1);
        }
        assert_eq!(r.hold(now), Some(now + OVERSIZE_HOLD_CAP));
        assert_eq!(r.connected(now + OVERSIZE_HOLD_CAP), None, "holds end");
    }

    #[test]
    fn an_oversized_live_message_long_after_subscribing_is_not_a_pattern() {
        let mut r = Reconnect::default();
        for i in 0..5 {
            let t = S(1000 * i);
            r.connected(t);
            r.subscribed(t);
            r.ended(t + STABLE_SESSION, Ending::Oversize, 0.5);
            assert_eq!(r.hold(t + STABLE_SESSION), None);
        }
        // A quick one after a live one is the first of its kind.
        r.connected(S(9000));
        r.subscribed(S(9000));
        r.ended(S(9001), Ending::Oversize, 0.5);
        assert_eq!(r.hold(S(9001)), None);
        // Failed attempts in between neither count nor reset the streak.
        r.ended(S(9002), Ending::Failed, 0.5);
        r.connected(S(9003));
        r.subscribed(S(9003));
        r.ended(S(9004), Ending::Oversize, 0.5);
        assert!(r.hold(S(9004)).is_some());
    }

    #[test]
    fn a_session_that_kept_its_subscriptions_resets_the_streak() {
        let mut r = Reconnect::default();
        r.connected(S(0));
        r.subscribed(S(0));
        r.ended(S(1), Ending::Oversize, 0.5);
        r.connected(S(2));
        r.subscribed(S(2));
        r.ended(S(2) + STABLE_SESSION, Ending::Failed, 0.5);
        r.connected(S(100));
        r.subscribed(S(100));
        r.ended(S(101), Ending::Oversize, 0.5);
        assert_eq!(r.hold(S(101)), None);
    }
}
