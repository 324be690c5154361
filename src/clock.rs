//! The clocks, read together: monotonic time, the wall clock, and whether the wall clock
//! can be believed (SPEC section 3).
//!
//! Invariants: every reading of the wall clock in the agent goes through a [`Clock`], so
//! tests can drive time; monotonic time is `tokio::time::Instant`, so a paused tokio
//! runtime moves it too. Trust is sticky for the life of the process: once the system
//! said the clock is synchronised, a flapping kernel flag does not un-schedule calendar
//! jobs. A wall clock before [`PLAUSIBLE_FLOOR`] is never trusted, whatever the system
//! says. This module never sets the clock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::time::Instant;

use crate::config::ClockMode;

/// No clock earlier than this is real: the software did not exist yet.
pub const PLAUSIBLE_FLOOR: DateTime<Utc> =
    DateTime::from_timestamp_nanos(1_767_225_600_000_000_000); // 2026-01-01

/// The file systemd-timesyncd touches on every successful synchronisation.
pub const TIMESYNC_FLAG: &str = "/run/systemd/timesync/synchronized";

/// All clocks at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since the clock's origin.
    pub mono: Duration,
    pub wall: DateTime<Utc>,
    pub trusted: bool,
}

impl Now {
    /// The wall time that corresponds to a monotonic instant, by this reading's offset.
    pub fn wall_at(&self, mono: Duration) -> DateTime<Utc> {
        let delta = signed_millis(mono) - signed_millis(self.mono);
        self.wall + chrono::Duration::milliseconds(delta)
    }

    /// The wall time of a monotonic instant given in milliseconds (negative: before
    /// the origin).
    pub fn wall_at_ms(&self, mono_ms: i64) -> DateTime<Utc> {
        // Whole milliseconds on both sides, so a grid point maps to the exact wall
        // instant it was aligned to.
        let offset = self.wall.timestamp_millis() - signed_millis(self.mono);
        DateTime::from_timestamp_millis(offset.saturating_add(mono_ms)).unwrap_or(self.wall)
    }

    /// The monotonic instant that corresponds to a wall time, saturating at the origin.
    pub fn mono_at(&self, wall: DateTime<Utc>) -> Duration {
        let delta = (wall - self.wall).num_milliseconds();
        let ms = signed_millis(self.mono).saturating_add(delta).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

fn signed_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A source of [`Now`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Now;
    /// The monotonic origin, to turn `Now::mono` into a tokio deadline.
    fn origin(&self) -> Instant;
}

/// The real clocks of this machine.
pub struct SystemClock {
    origin: Instant,
    mode: ClockMode,
    flag_file: PathBuf,
    kernel_synced: fn() -> bool,
    trusted: AtomicBool,
}

impl SystemClock {
    pub fn new(mode: ClockMode) -> SystemClock {
        SystemClock::with_probes(mode, PathBuf::from(TIMESYNC_FLAG), kernel_ntp_synced)
    }

    /// A system clock that asks `flag_file` and `kernel_synced` whether NTP has
    /// synchronised it (tests point these elsewhere).
    pub fn with_probes(
        mode: ClockMode,
        flag_file: PathBuf,
        kernel_synced: fn() -> bool,
    ) -> SystemClock {
        SystemClock {
            origin: Instant::now(),
            mode,
            flag_file,
            kernel_synced,
            trusted: AtomicBool::new(false),
        }
    }

    fn system_says_synced(&self) -> bool {
        match self.mode {
            ClockMode::Trusted => true,
            ClockMode::Ntp => self.flag_file.exists() || (self.kernel_synced)(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        let wall = wall_now();
        let mut trusted = self.trusted.load(Ordering::Relaxed);
        if !trusted && wall >= PLAUSIBLE_FLOOR && self.system_says_synced() {
            self.trusted.store(true, Ordering::Relaxed);
            trusted = true;
        }
        Now {
            mono: self.origin.elapsed(),
            wall,
            trusted,
        }
    }

    fn origin(&self) -> Instant {
        self.origin
    }
}

/// The one place the agent reads the system's wall clock.
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> DateTime<Utc> {
    Utc::now()
}

/// The boot this process runs in and how long ago it started: with it a reading
/// taken on a wrong clock can be re-stamped once the clock is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTime {
    pub boot_id: String,
    pub since_boot_ms: i64,
}

impl BootTime {
    /// Reads the kernel's boot id and `CLOCK_BOOTTIME` (which, unlike the monotonic
    /// clock, keeps counting through suspend).
    pub fn now() -> BootTime {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0;
        // time_t is 32 bits on armv7: widen before multiplying.
        #[allow(clippy::useless_conversion)]
        let since_boot_ms = if ok {
            i64::from(ts.tv_sec) * 1000 + i64::from(ts.tv_nsec) / 1_000_000
        } else {
            0
        };
        BootTime {
            boot_id,
            since_boot_ms,
        }
    }
}

/// The kernel's NTP discipline status, as `timedatectl` reads it: synchronised when
/// `adjtimex` neither fails nor reports `STA_UNSYNC`.
fn kernel_ntp_synced() -> bool {
    // SAFETY: `timex` is plain data; modes = 0 makes adjtimex a pure read.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state != -1 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

/// A clock for tests: monotonic time is tokio's (pause the runtime to drive it), the
/// wall clock follows it from a settable start and can be stepped, and trust is a
/// switch.
#[derive(Clone)]
pub struct TestClock {
    inner: Arc<TestClockInner>,
}

struct TestClockInner {
    origin: Instant,
    wall_at_origin: Mutex<DateTime<Utc>>,
    trusted: AtomicBool,
    extra_ms: AtomicI64,
}

impl TestClock {
    pub fn new(wall: DateTime<Utc>, trusted: bool) -> TestClock {
        TestClock {
            inner: Arc::new(TestClockInner {
                origin: Instant::now(),
                wall_at_origin: Mutex::new(wall),
                trusted: AtomicBool::new(trusted),
                extra_ms: AtomicI64::new(0),
            }),
        }
    }

    /// A clock starting at a UTC calendar time. For tests: a date that does not exist
    /// is a mistake in the test, so it panics.
    #[allow(clippy::expect_used)]
    pub fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, trusted: bool) -> TestClock {
        let wall = Utc
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test date");
        TestClock::new(wall, trusted)
    }

    /// Steps the wall clock by `delta` (negative: backwards); monotonic time is unmoved.
    pub fn step(&self, delta: chrono::Duration) {
        self.inner
            .extra_ms
            .fetch_add(delta.num_milliseconds(), Ordering::SeqCst);
    }

    pub fn set_trusted(&self, trusted: bool) {
        self.inner.trusted.store(trusted, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Now {
        let mono = self.inner.origin.elapsed();
        let base = *self
            .inner
            .wall_at_origin
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let extra = chrono::Duration::milliseconds(self.inner.extra_ms.load(Ordering::SeqCst));
        let wall = base + chrono::Duration::from_std(mono).unwrap_or_default() + extra;
        Now {
            mono,
            wall,
            trusted: self.inner.trusted.load(Ordering::SeqCst),
        }
    }

    fn origin(&self) -> Instant {
        self.inner.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_and_mono_convert_both_ways() {
        let now = Now {
            mono: Duration::from_secs(100),
            wall: Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap(),
            trusted: true,
        };
        let later = now.wall_at(Duration::from_secs(160));
        assert_eq!(later, Utc.with_ymd_and_hms(2026, 11, 23, 1, 1, 0).unwrap());
        assert_eq!(now.mono_at(later), Duration::from_secs(160));
        // Before the origin saturates instead of wrapping.
        assert_eq!(
            now.mono_at(now.wall - chrono::Duration::hours(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn floor_is_2026() {
        assert_eq!(
            PLAUSIBLE_FLOOR,
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn trusted_mode_trusts_a_plausible_clock() {
        let clock = SystemClock::new(ClockMode::Trusted);
        // The machine running the tests has a real date.
        assert!(clock.now().trusted);
    }

    #[test]
    fn ntp_mode_trusts_after_the_timesync_flag_or_the_kernel_and_stays_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("synchronized");
        let clock = SystemClock::with_probes(ClockMode::Ntp, flag.clone(), || false);
        assert!(!clock.now().trusted, "no flag, kernel unsynchronised");
        std::fs::write(&flag, "").unwrap();
        assert!(clock.now().trusted, "timesyncd's flag file");
        std::fs::remove_file(&flag).unwrap();
        assert!(clock.now().trusted, "trust is sticky for the process");

        let kernel = SystemClock::with_probes(ClockMode::Ntp, dir.path().join("absent"), || true);
        assert!(
            kernel.now().trusted,
            "the kernel's NTP status alone is enough"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn test_clock_follows_tokio_time_and_steps() {
        let clock = TestClock::at(2026, 3, 1, 0, 0, 0, false);
        let t0 = clock.now();
        tokio::time::sleep(Duration::from_secs(90)).await;
        clock.step(chrono::Duration::hours(-1));
        let t1 = clock.now();
        assert_eq!(t1.mono - t0.mono, Duration::from_secs(90));
        assert_eq!((t1.wall - t0.wall).num_seconds(), 90 - 3600);
    }
}
