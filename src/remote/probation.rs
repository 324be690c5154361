//! Probation of an applied overlay: for `mqtt.config_confirm` after it took effect, is
//! the gateway worse off than before? (SPEC section 5.)
//!
//! Two signs count, both comparisons with how things went just before the overlay:
//! uploads that fail where they succeeded before (the overlay broke the way out: a URL,
//! a token, a size), and a changed bus that returns only bad readings where it had good
//! ones (a wrong port, baud rate or slave map). Either one at the end of the window
//! rolls the overlay back, with a reason an operator can act on; neither confirms it.
//!
//! Invariants: pure, `now` passed in; nothing is decided before the window ends, so a
//! bus that needs a cycle or two after reopening its port is not held against the
//! overlay; with no evidence at all (no upload ran in the window, a bus had no good
//! reads before) the overlay is confirmed, since it cannot be shown to have made things
//! worse. The caller collects the observations (upload outcomes, per-bus read counts
//! from the sampler's counters) and carries out the verdict with
//! `RemoteState::confirmed` / `rolled_back`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Good and bad reads of one bus over some span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadCounts {
    pub good: u64,
    pub bad: u64,
}

/// How things went just before the overlay was applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Baseline {
    /// Whether the last upload run before the apply succeeded (`None`: none ran, or
    /// uploading is off).
    pub upload_ok: Option<bool>,
    /// Recent reads per bus name, e.g. since the previous heartbeat or over the last
    /// few sampling cycles.
    pub buses: BTreeMap<String, ReadCounts>,
}

/// What to do with the overlay on probation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The window has not ended.
    Pending,
    /// Keep it: `RemoteState::confirmed`.
    Confirmed,
    /// Return to the previous configuration: `RemoteState::rolled_back`, and answer
    /// `rolled_back` with this reason.
    RollBack(String),
}

/// One applied overlay on probation.
#[derive(Debug, Clone)]
pub struct Probation {
    version: u64,
    ends: Instant,
    baseline: Baseline,
    changed_buses: BTreeSet<String>,
    uploads_ok: u64,
    uploads_failed: u64,
    last_upload_error: Option<String>,
    reads: BTreeMap<String, ReadCounts>,
}

impl Probation {
    /// Probation of `version`, applied at `now`, for `confirm` (`mqtt.config_confirm`).
    /// `changed_buses`: [`changed_buses`] of the configurations before and after.
    pub fn start(
        version: u64,
        now: Instant,
        confirm: Duration,
        baseline: Baseline,
        changed_buses: impl IntoIterator<Item = String>,
    ) -> Probation {
        Probation {
            version,
            ends: now.checked_add(confirm).unwrap_or(now),
            baseline,
            changed_buses: changed_buses.into_iter().collect(),
            uploads_ok: 0,
            uploads_failed: 0,
            last_upload_error: None,
            reads: BTreeMap::new(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the verdict is due: the caller wakes then and asks.
    pub fn ends(&self) -> Instant {
        self.ends
    }

    /// An upload run under the overlay ended: `Err` carries its last error.
    pub fn upload_finished(&mut self, result: Result<(), &str>) {
        match result {
            Ok(()) => self.uploads_ok += 1,
            Err(e) => {
                self.uploads_failed += 1;
                self.last_upload_error = Some(e.to_owned());
            }
        }
    }

    /// Reads on `bus` under the overlay (added to what was seen before).
    pub fn bus_reads(&mut self, bus: &str, counts: ReadCounts) {
        let seen = self.reads.entry(bus.to_owned()).or_default();
        seen.good = seen.good.saturating_add(counts.good);
        seen.bad = seen.bad.saturating_add(counts.bad);
    }

    pub fn verdict(&self, now: Instant) -> Verdict {
        if now < self.ends {
            return Verdict::Pending;
        }
        let v = self.version;
        if self.baseline.upload_ok == Some(true) && self.uploads_failed > 0 && self.uploads_ok == 0
        {
            let error = self
                .last_upload_error
                .as_deref()
                .map(|e| format!(": last error: {e}"))
                .unwrap_or_default();
            return Verdict::RollBack(format!(
                "uploads failed {} times and never succeeded under version {v}, after succeeding before it{error}",
                self.uploads_failed
            ));
        }
        for bus in &self.changed_buses {
            let before = self.baseline.buses.get(bus).copied().unwrap_or_default();
            let after = self.reads.get(bus).copied().unwrap_or_default();
            if before.good > 0 && after.good == 0 && after.bad > 0 {
                return Verdict::RollBack(format!(
                    "bus {bus:?} returned only bad readings under version {v} ({} bad, none good), after good ones before it",
                    after.bad
                ));
            }
        }
        Verdict::Confirmed
    }
}

/// Buses the change from `old` to `new` touches: the bus itself changed, or a sensor
/// on it was added, changed or removed. Sorted; buses only in `old` are left out.
pub fn changed_buses(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = BTreeSet::new();
    for bus in &new.buses {
        if old.buses.iter().find(|b| b.name == bus.name) != Some(bus) {
            changed.insert(bus.name.clone());
        }
    }
    for sensor in &new.sensors {
        if old.sensors.iter().find(|s| s.id == sensor.id) != Some(sensor) {
            changed.insert(sensor.bus.clone());
        }
    }
    for sensor in &old.sensors {
        if !new.sensors.iter().any(|s| s.id == sensor.id) {
            changed.insert(sensor.bus.clone());
        }
    }
    changed.retain(|name| new.buses.iter().any(|b| &b.name == name));
    changed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn baseline(upload_ok: Option<bool>, buses: &[(&str, u64, u64)]) -> Baseline {
        Baseline {
            upload_ok,
            buses: buses
                .iter()
                .map(|(n, good, bad)| {
                    (
                        (*n).to_owned(),
                        ReadCounts {
                            good: *good,
                            bad: *bad,
                        },
                    )
                })
                .collect(),
        }
    }

    fn probation(base: Baseline, changed: &[&str]) -> (Probation, Instant) {
        let t0 = Instant::now();
        let p = Probation::start(7, t0, WINDOW, base, changed.iter().map(|s| (*s).to_owned()));
        (p, t0)
    }

    #[test]
    fn nothing_is_decided_before_the_window_ends() {
        let (mut p, t0) = probation(baseline(Some(true), &[]), &[]);
        p.upload_finished(Err("401"));
        assert_eq!(
            p.verdict(t0 + WINDOW - Duration::from_secs(1)),
            Verdict::Pending
        );
        assert!(matches!(p.verdict(t0 + WINDOW), Verdict::RollBack(_)));
        assert_eq!(p.ends(), t0 + WINDOW);
        assert_eq!(p.version(), 7);
    }

    #[test]
    fn uploads_that_worked_before_and_fail_now_roll_back() {
        let (mut p, t0) = probation(baseline(Some(true), &[]), &[]);
        p.upload_finished(Err("connect timed out"));
        p.upload_finished(Err("HTTP 401 Unauthorized"));
        assert_eq!(
            p.verdict(t0 + WINDOW),
            Verdict::RollBack(
                "uploads failed 2 times and never succeeded under version 7, after succeeding before it: last error: HTTP 401 Unauthorized".into()
            )
        );
        // One success is enough to show the way out still works.
        p.upload_finished(Ok(()));
        assert_eq!(p.verdict(t0 + WINDOW), Verdict::Confirmed);
    }

    #[test]
    fn uploads_that_failed_before_too_are_not_the_overlays_fault() {
        for before in [Some(false), None] {
            let (mut p, t0) = probation(baseline(before, &[]), &[]);
            p.upload_finished(Err("503"));
            assert_eq!(p.verdict(t0 + WINDOW), Verdict::Confirmed, "{before:?}");
        }
    }

    #[test]
    fn a_changed_bus_with_only_bad_reads_rolls_back() {
        let (mut p, t0) = probation(baseline(None, &[("a", 10, 0), ("b", 10, 0)]), &["a"]);
        p.bus_reads("a", ReadCounts { good: 0, bad: 4 });
        p.bus_reads("a", ReadCounts { good: 0, bad: 2 });
        p.bus_reads("b", ReadCounts { good: 0, bad: 9 });
        assert_eq!(
            p.verdict(t0 + WINDOW),
            Verdict::RollBack(
                "bus \"a\" returned only bad readings under version 7 (6 bad, none good), after good ones before it".into()
            )
        );
    }

    #[test]
    fn buses_are_confirmed_without_evidence_against_the_overlay() {
        // b is unchanged: its trouble is not the overlay's.
        let (mut p, t0) = probation(baseline(None, &[("a", 10, 0), ("b", 10, 0)]), &["a"]);
        p.bus_reads("a", ReadCounts { good: 1, bad: 20 });
        p.bus_reads("b", ReadCounts { good: 0, bad: 9 });
        assert_eq!(p.verdict(t0 + WINDOW), Verdict::Confirmed);
        // No good reads before: nothing to compare with. No reads after: no evidence.
        let (mut p, t0) = probation(baseline(None, &[("a", 0, 5)]), &["a", "new"]);
        p.bus_reads("a", ReadCounts { good: 0, bad: 5 });
        p.bus_reads("new", ReadCounts { good: 0, bad: 5 });
        assert_eq!(p.verdict(t0 + WINDOW), Verdict::Confirmed);
        let (p, t0) = probation(baseline(None, &[("a", 3, 0)]), &["a"]);
        assert_eq!(p.verdict(t0 + WINDOW), Verdict::Confirmed);
    }

    #[test]
    fn changed_buses_follow_buses_and_their_sensors() {
        let old = crate::config::parse_str(
            r#"
[agent]
id = "p"
timezone = "UTC"
[[bus]]
name = "a"
kind = "simulated"
[[bus]]
name = "b"
kind = "simulated"
[[bus]]
name = "c"
kind = "simulated"
[[sensor]]
id = "s1"
bus = "b"
model = { base = 1.0 }
[[sensor]]
id = "s2"
bus = "c"
model = { base = 1.0 }
"#,
            "old.toml",
        )
        .unwrap();
        let mut new = old.clone();
        assert!(changed_buses(&old, &new).is_empty());
        new.buses[0].retries = 5;
        new.sensors[0].enabled = false;
        new.sensors.remove(1);
        assert_eq!(changed_buses(&old, &new), ["a", "b", "c"]);
    }
}
