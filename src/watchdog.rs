//! systemd's service watchdog, fed only while the agent does its work.
//!
//! A ping tells systemd "this agent is alive", so it is sent only while both loops the
//! work depends on show progress: the scheduler's loop, which looks at the clocks at
//! least every ten seconds even with nothing due, and the database writer, probed with
//! an empty call each round. Either counter standing still for longer than
//! `stall_after` withholds the ping; systemd then kills the unit after `WatchdogSec`
//! and `Restart=always` starts a fresh one. A busy writer (a long checkpoint on a slow
//! card) is not a stall: `stall_after` is far longer than any call the agent makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::scheduler::SchedulerHandle;
use crate::store::StoreHandle;

/// How long a loop may show no progress before the pings stop.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// When and how strictly to judge progress.
#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    /// How often to judge and ping: half of systemd's `WatchdogSec`.
    pub period: Duration,
    /// How long a counter may stand still before the pings stop.
    pub stall_after: Duration,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`, `WATCHDOG_PID`), if any.
    pub fn from_env() -> Option<Self> {
        let limit = sd_notify::watchdog_enabled()?;
        Some(Watchdog {
            period: limit / 2,
            stall_after: STALL_AFTER,
        })
    }

    /// Judges progress every `period` and calls `ping` while both loops move; never
    /// returns (abort the task to stop it).
    pub async fn run(self, scheduler: SchedulerHandle, store: StoreHandle, ping: impl Fn()) {
        let start = Instant::now();
        let mut ticks = Counter::new(scheduler.ticks(), start);
        let mut calls = Counter::new(store.progress(), start);
        // One probe at a time: a stuck writer must not collect a queue of them.
        let probe_out = Arc::new(AtomicBool::new(false));
        let mut stalled = false;
        let mut interval = tokio::time::interval(self.period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if !probe_out.swap(true, Ordering::AcqRel) {
                let done = Arc::clone(&probe_out);
                store.submit("watchdog probe", move |_| {
                    done.store(false, Ordering::Release);
                    Ok(())
                });
            }
            let now = Instant::now();
            let scheduler_still = ticks.still_for(scheduler.ticks(), now);
            let writer_still = calls.still_for(store.progress(), now);
            let moving = scheduler_still <= self.stall_after && writer_still <= self.stall_after;
            if moving {
                ping();
                if stalled {
                    tracing::warn!("scheduler and database writer move again; watchdog fed");
                }
            } else if !stalled {
                tracing::error!(
                    scheduler_still_s = scheduler_still.as_secs(),
                    writer_still_s = writer_still.as_secs(),
                    "no progress; withholding the watchdog ping so systemd restarts the agent"
                );
            }
            stalled = !moving;
        }
    }
}

/// A progress counter and when it last moved.
struct Counter {
    value: u64,
    moved_at: Instant,
}

impl Counter {
    fn new(value: u64, now: Instant) -> Self {
        Counter {
            value,
            moved_at: now,
        }
    }

    /// How long the counter has stood still, given its value `now`.
    fn still_for(&mut self, value: u64, now: Instant) -> Duration {
        if value != self.value {
            self.value = value;
            self.moved_at = now;
        }
        now - self.moved_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_measures_how_long_it_stood_still() {
        let t0 = Instant::now();
        let mut c = Counter::new(5, t0);
        assert_eq!(
            c.still_for(5, t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(c.still_for(6, t0 + Duration::from_secs(4)), Duration::ZERO);
        assert_eq!(
            c.still_for(6, t0 + Duration::from_secs(9)),
            Duration::from_secs(5)
        );
    }
}
