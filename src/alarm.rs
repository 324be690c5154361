//! Local alarms: `[[alarm]]` threshold rules checked on every stored reading, with no
//! network needed (SPEC section 9).
//!
//! This is the pure core: an [`AlarmState`] steps on each reading of its rule's sensor
//! and says when the alarm is raised or cleared. Time is the readings' own `ts`, never
//! a clock, so a rule behaves the same live, in a replay and under a test clock.
//!
//! - `ok` → `pending`: a good reading past the threshold (strictly below `below`, or
//!   strictly above `above`). With `for = 0` the alarm is raised at once instead.
//! - `pending` → `raised`: a good reading still past the threshold at least `for`
//!   after the first one. Any good reading not past the threshold on the way goes
//!   back to `ok`: the condition must hold on every reading in between.
//! - `raised` → `ok`: a good reading strictly beyond the clear value (`clear_above` of
//!   a `below` rule, `clear_below` of an `above` rule; the threshold by default), so
//!   a value hovering at the threshold does not raise and clear on every cycle.
//! - A bad reading changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{AlarmConfig, Threshold};
use crate::reading::Reading;

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Ok,
    /// Past the threshold since this reading's `ts`, not yet for long enough.
    Pending {
        since: DateTime<Utc>,
    },
    /// Raised by the reading of this `ts`.
    Raised {
        since: DateTime<Utc>,
    },
}

impl Phase {
    /// The name `tidegate alarms` shows: `ok`, `pending` or `raised`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Ok => "ok",
            Phase::Pending { .. } => "pending",
            Phase::Raised { .. } => "raised",
        }
    }

    /// Since when the rule has been pending or raised.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        match *self {
            Phase::Ok => None,
            Phase::Pending { since } | Phase::Raised { since } => Some(since),
        }
    }
}

/// A rule's state: its phase and the last good reading it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmState {
    pub phase: Phase,
    pub last_value: Option<f64>,
    pub last_ts: Option<DateTime<Utc>>,
}

/// What a reading did to an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Raised { value: f64, ts: DateTime<Utc> },
    Cleared { value: f64, ts: DateTime<Utc> },
}

impl Default for AlarmState {
    fn default() -> Self {
        AlarmState {
            phase: Phase::Ok,
            last_value: None,
            last_ts: None,
        }
    }
}

impl AlarmState {
    /// Steps on `reading`; a reading of another sensor or a bad one changes nothing.
    pub fn observe(&mut self, rule: &AlarmConfig, reading: &Reading) -> Option<Change> {
        if reading.sensor != rule.sensor {
            return None;
        }
        let value = reading.value?;
        let ts = reading.ts;
        self.last_value = Some(value);
        self.last_ts = Some(ts);
        let past = match rule.threshold {
            Threshold::Below(limit) => value < limit,
            Threshold::Above(limit) => value > limit,
        };
        let clears = match rule.threshold {
            Threshold::Below(_) => value > rule.clear_at,
            Threshold::Above(_) => value < rule.clear_at,
        };
        match self.phase {
            Phase::Ok if past => {
                if rule.hold_for.is_zero() {
                    self.phase = Phase::Raised { since: ts };
                    return Some(Change::Raised { value, ts });
                }
                self.phase = Phase::Pending { since: ts };
                None
            }
            Phase::Ok => None,
            Phase::Pending { since } if past => {
                if held(since, ts, rule.hold_for) {
                    self.phase = Phase::Raised { since: ts };
                    return Some(Change::Raised { value, ts });
                }
                None
            }
            Phase::Pending { .. } => {
                self.phase = Phase::Ok;
                None
            }
            Phase::Raised { .. } if clears => {
                self.phase = Phase::Ok;
                Some(Change::Cleared { value, ts })
            }
            Phase::Raised { .. } => None,
        }
    }
}

/// Whether a condition that began at `since` has held for `hold` by `ts`.
fn held(since: DateTime<Utc>, ts: DateTime<Utc>, hold: Duration) -> bool {
    match (ts - since).to_std() {
        Ok(elapsed) => elapsed >= hold,
        // A reading older than the first past the threshold (a clock step back).
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;
    use chrono::TimeZone;

    fn low_oxygen(hold_s: u64) -> AlarmConfig {
        AlarmConfig {
            id: "pond1-low-oxygen".into(),
            sensor: "pond1.do".into(),
            threshold: Threshold::Below(5.0),
            hold_for: Duration::from_secs(hold_s),
            clear_at: 5.5,
            severity: Severity::Critical,
            run: None,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_000_000 + s, 0).unwrap()
    }

    fn good(s: i64, value: f64) -> Reading {
        Reading::good("pond1.do", at(s), value, Some("mg/L"))
    }

    /// Feeds (second, value) readings; returns the changes in order.
    fn feed(rule: &AlarmConfig, state: &mut AlarmState, readings: &[(i64, f64)]) -> Vec<Change> {
        readings
            .iter()
            .filter_map(|&(s, v)| state.observe(rule, &good(s, v)))
            .collect()
    }

    #[test]
    fn a_dip_shorter_than_for_is_not_raised() {
        let rule = low_oxygen(30);
        let mut state = AlarmState::default();
        // Readings every 10 s: under 5.0 for 20 s, then back.
        let changes = feed(
            &rule,
            &mut state,
            &[(0, 6.0), (10, 4.8), (20, 4.7), (30, 4.6), (40, 5.1)],
        );
        assert_eq!(changes, []);
        assert_eq!(state.phase, Phase::Ok);
    }

    #[test]
    fn a_dip_as_long_as_for_is_raised_once_by_the_reading_that_completes_it() {
        let rule = low_oxygen(30);
        let mut state = AlarmState::default();
        let changes = feed(
            &rule,
            &mut state,
            &[
                (0, 6.0),
                (10, 4.8),
                (20, 4.7),
                (30, 4.6),
                (40, 4.5),
                (50, 4.4),
            ],
        );
        assert_eq!(
            changes,
            [Change::Raised {
                value: 4.5,
                ts: at(40)
            }]
        );
        assert_eq!(state.phase, Phase::Raised { since: at(40) });
        assert_eq!(state.last_value, Some(4.4));
    }

    #[test]
    fn one_reading_back_over_the_threshold_restarts_the_wait() {
        let rule = low_oxygen(30);
        let mut state = AlarmState::default();
        let changes = feed(
            &rule,
            &mut state,
            &[
                (0, 4.8),
                (10, 4.8),
                (20, 5.0),
                (30, 4.8),
                (40, 4.8),
                (50, 4.8),
            ],
        );
        // 5.0 is not below 5.0: the wait starts again at 30 and is not over at 50.
        assert_eq!(changes, []);
        assert_eq!(state.phase, Phase::Pending { since: at(30) });
    }

    #[test]
    fn it_clears_only_past_the_hysteresis() {
        let rule = low_oxygen(0);
        let mut state = AlarmState::default();
        let changes = feed(
            &rule,
            &mut state,
            &[(0, 4.9), (10, 5.2), (20, 5.5), (30, 4.0), (40, 5.6)],
        );
        assert_eq!(
            changes,
            [
                Change::Raised {
                    value: 4.9,
                    ts: at(0)
                },
                Change::Cleared {
                    value: 5.6,
                    ts: at(40)
                }
            ]
        );
        assert_eq!(state.phase, Phase::Ok);
    }

    #[test]
    fn bad_readings_and_other_sensors_change_nothing() {
        let rule = low_oxygen(30);
        let mut state = AlarmState::default();
        assert_eq!(state.observe(&rule, &good(0, 4.0)), None);
        let bad = Reading::bad("pond1.do", at(10), Some("mg/L"), "timeout");
        assert_eq!(state.observe(&rule, &bad), None);
        let other = Reading::good("pond2.do", at(20), 9.0, Some("mg/L"));
        assert_eq!(state.observe(&rule, &other), None);
        assert_eq!(state.phase, Phase::Pending { since: at(0) });
        assert_eq!(state.last_ts, Some(at(0)));
        // The bad reading did not break the hold.
        assert!(matches!(
            state.observe(&rule, &good(30, 4.0)),
            Some(Change::Raised { .. })
        ));
    }

    #[test]
    fn an_above_rule_mirrors_a_below_rule() {
        let rule = AlarmConfig {
            id: "pond1-hot".into(),
            sensor: "pond1.do".into(),
            threshold: Threshold::Above(30.0),
            hold_for: Duration::from_secs(10),
            clear_at: 29.0,
            severity: Severity::Warning,
            run: None,
        };
        let mut state = AlarmState::default();
        let changes = feed(
            &rule,
            &mut state,
            &[(0, 30.5), (10, 31.0), (20, 29.5), (30, 28.9)],
        );
        assert_eq!(
            changes,
            [
                Change::Raised {
                    value: 31.0,
                    ts: at(10)
                },
                Change::Cleared {
                    value: 28.9,
                    ts: at(30)
                }
            ]
        );
    }

    #[test]
    fn a_reading_from_before_the_wait_began_does_not_complete_it() {
        let rule = low_oxygen(30);
        let mut state = AlarmState::default();
        let changes = feed(&rule, &mut state, &[(100, 4.0), (40, 4.0)]);
        assert_eq!(changes, []);
        assert_eq!(state.phase, Phase::Pending { since: at(100) });
    }
}
