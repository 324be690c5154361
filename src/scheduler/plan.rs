//! When each job fires: the scheduler's pure core.
//!
//! A [`Plan`] is plain data driven by [`Now`] readings: `tick(now)` returns the
//! [`Action`]s due at that instant, `finished` tells it a run ended, `next_wake` says
//! when it wants to be asked again. It does no IO and never sleeps, so tests drive a
//! simulated week in milliseconds and step the wall clock at will.
//!
//! Invariants:
//! - Intervals live on the monotonic clock as a grid `anchor + k·period`; a fire never
//!   moves the grid, jitter is drawn per fire and never fed back, and after a stall the
//!   index jumps arithmetically to the present: no burst, no enumeration.
//! - While the wall clock is trusted the grid is aligned to wall-clock multiples of the
//!   period; it is re-aligned when trust arrives and after every wall-clock step.
//! - Calendar triggers (cron, months, one-shots) and `start`/`end` act only on a
//!   trusted clock. A backward step recomputes the next fire from the corrected clock
//!   (no stall); a forward step is handled like downtime (one catch-up at most).
//! - A job runs at most once at a time; at most `max_running` runs at once, and time
//!   spent waiting for a slot counts against the fire's `misfire_grace`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::calendar::Calendar;
use crate::clock::Now;
use crate::config::{Every, JobConfig, Overlap, Trigger};
use crate::store::jobs::{Lifecycle, Origin, Outcome};

/// A change of `wall − monotonic` larger than this is a step, not a slew.
pub const STEP_THRESHOLD_MS: i64 = 2_000;
/// The plan wants to look at the clocks at least this often, to see steps and trust.
pub const MAX_SLEEP_MS: i64 = 10_000;
/// With `coalesce = false`, at most this many missed fires are run to catch up.
pub const MAX_CATCH_UP: u64 = 10;

/// Monotonic milliseconds since the clock's origin; negative is before it.
type Ms = i64;

fn ms(d: Duration) -> Ms {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a run of the job now.
    Start {
        job: String,
        origin: Origin,
        nominal: Option<DateTime<Utc>>,
        late: Duration,
    },
    /// Fires that did not run: too late for their grace, or lost while the agent was down.
    Missed { job: String, count: u64 },
    /// A fire while the job's previous run still ran.
    Skipped { job: String },
    /// The job's next fire changed (for `tidegate jobs` and the heartbeat).
    NextDue {
        job: String,
        at: Option<DateTime<Utc>>,
    },
    /// The job's lifecycle state changed.
    State { job: String, state: Lifecycle },
    /// The wall clock moved by this much relative to the monotonic clock.
    ClockStep { delta_ms: i64 },
    /// The wall clock became trusted.
    ClockTrusted,
}

/// What the store remembers of a job, read at start-up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remembered {
    pub state: Option<Lifecycle>,
    pub last_nominal: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Next {
    /// Not scheduled: manual only, disabled, finished, or waiting for a trusted clock.
    Idle,
    Grid {
        anchor: Ms,
        /// The wall time of the anchor (ms since the epoch), fixed when the grid is
        /// laid, so due times and nominal times do not wobble with clock rounding.
        anchor_wall: i64,
        period: Ms,
        k: i64,
    },
    Wall(DateTime<Utc>),
}

#[derive(Debug, Clone)]
struct Pending {
    origin: Origin,
    nominal_wall: Option<DateTime<Utc>>,
    /// When it may start: the nominal time plus this fire's jitter.
    start_at: Ms,
    /// Runs still owed by this fire (more than one only when catching up without coalescing).
    runs: u64,
    order: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    cfg: JobConfig,
    calendar: Option<Calendar>,
    life: Lifecycle,
    next: Next,
    running: bool,
    pending: Option<Pending>,
    last_fire: Option<Ms>,
    last_nominal: Option<DateTime<Utc>>,
    /// Missed fires and overlap skips noted since the last report.
    pending_missed: u64,
    pending_skips: u64,
    /// The last `NextDue` and `State` reported, to report only changes.
    reported_due: Option<Option<DateTime<Utc>>>,
    reported_life: Option<Lifecycle>,
}

impl Entry {
    fn period(&self) -> Option<Ms> {
        match self.cfg.trigger {
            Some(Trigger::Every(Every::Fixed(d))) => Some(ms(d).max(1)),
            _ => None,
        }
    }

    fn schedulable(&self) -> bool {
        self.cfg.enabled && self.life == Lifecycle::Active
    }
}

/// The scheduler's state for every job.
#[derive(Debug, Clone)]
pub struct Plan {
    shared: Shared,
    max_running: usize,
    jobs: BTreeMap<String, Entry>,
    running: usize,
    trusted: bool,
    offset: Option<i64>,
}

impl Plan {
    /// A plan for `jobs` as of `now`, continuing from what the store remembers.
    pub fn new(
        jobs: &[JobConfig],
        zone: Tz,
        max_running: usize,
        remembered: &BTreeMap<String, Remembered>,
        now: Now,
    ) -> Plan {
        let mut plan = Plan {
            shared: Shared {
                zone,
                rng: fastrand::Rng::new(),
                order: 0,
            },
            max_running: max_running.max(1),
            jobs: BTreeMap::new(),
            running: 0,
            trusted: now.trusted,
            offset: Some(offset_of(now)),
        };
        for cfg in jobs {
            let memory = remembered.get(&cfg.name).cloned().unwrap_or_default();
            plan.insert(cfg.clone(), memory, now);
        }
        plan
    }

    /// A fixed random seed, so tests can predict jitter.
    pub fn with_seed(mut self, seed: u64) -> Plan {
        self.shared.rng = fastrand::Rng::with_seed(seed);
        self
    }

    fn insert(&mut self, cfg: JobConfig, memory: Remembered, now: Now) {
        let life = match memory.state {
            // A one-shot that fired at its time stays finished; moved to another time
            // it is a new one-shot. A job past its `end` is found finished again below.
            Some(state @ (Lifecycle::Completed | Lifecycle::Failed)) if matches!(cfg.trigger, Some(Trigger::At(at)) if memory.last_nominal == Some(at)) => {
                state
            }
            Some(Lifecycle::Paused) => Lifecycle::Paused,
            _ => Lifecycle::Active,
        };
        let mut entry = Entry {
            calendar: Calendar::of(cfg.trigger.as_ref()),
            cfg,
            life,
            next: Next::Idle,
            running: false,
            pending: None,
            last_fire: None,
            last_nominal: memory.last_nominal,
            pending_missed: 0,
            pending_skips: 0,
            reported_due: None,
            reported_life: memory.state,
        };
        self.shared.schedule(&mut entry, now, true);
        self.jobs.insert(entry.cfg.name.clone(), entry);
    }

    /// Everything due at `now`, in the order it must be done.
    pub fn tick(&mut self, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        let now_ms = ms(now.mono);

        let offset = offset_of(now);
        let delta = self.offset.map_or(0, |prev| offset - prev);
        self.offset = Some(offset);
        let stepped = delta.abs() > STEP_THRESHOLD_MS;
        let became_trusted = now.trusted && !self.trusted;
        self.trusted = now.trusted;
        if stepped {
            out.push(Action::ClockStep { delta_ms: delta });
        }
        if became_trusted {
            out.push(Action::ClockTrusted);
        }

        let shared = &mut self.shared;
        for entry in self.jobs.values_mut() {
            if became_trusted {
                shared.schedule(entry, now, true);
            } else if stepped {
                match entry.next {
                    Next::Grid { period, .. } if now.trusted => {
                        entry.next =
                            Next::grid(grid_start(period, now, entry.last_fire), period, now);
                    }
                    // Untrusted: the grid stays; only its wall-clock estimate moves.
                    Next::Grid {
                        anchor, period, k, ..
                    } => {
                        let anchor_wall = now.wall_at_ms(anchor).timestamp_millis();
                        entry.next = Next::Grid {
                            anchor,
                            anchor_wall,
                            period,
                            k,
                        };
                    }
                    // Backwards: the earlier fires happened at wrong wall times; plan
                    // from the corrected clock rather than stall until the old time.
                    Next::Wall(_) if delta < 0 && now.trusted => shared.schedule(entry, now, false),
                    _ => {}
                }
            }
            shared.fire_due(entry, now, now_ms);
        }

        self.start_pending(now, &mut out);
        self.report(&mut out);
        out
    }

    /// Starts pending fires, oldest first, while slots are free.
    fn start_pending(&mut self, now: Now, out: &mut Vec<Action>) {
        let now_ms = ms(now.mono);
        for (name, entry) in &mut self.jobs {
            if entry.pending_missed > 0 {
                out.push(Action::Missed {
                    job: name.clone(),
                    count: entry.pending_missed,
                });
                entry.pending_missed = 0;
            }
            for _ in 0..entry.pending_skips {
                out.push(Action::Skipped { job: name.clone() });
            }
            entry.pending_skips = 0;
        }
        let mut ready: Vec<(u64, String)> = self
            .jobs
            .iter()
            .filter_map(|(name, e)| {
                let p = e.pending.as_ref()?;
                (!e.running && p.start_at <= now_ms).then(|| (p.order, name.clone()))
            })
            .collect();
        ready.sort();
        for (_, name) in ready {
            if self.running >= self.max_running {
                break;
            }
            let Some(entry) = self.jobs.get_mut(&name) else {
                continue;
            };
            let Some(mut pending) = entry.pending.take() else {
                continue;
            };
            let late = now_ms - pending.start_at;
            let grace = entry.cfg.misfire_grace.map(ms);
            if pending.origin == Origin::Schedule && grace.is_some_and(|g| late > g) {
                out.push(Action::Missed {
                    job: name.clone(),
                    count: pending.runs,
                });
                continue;
            }
            out.push(Action::Start {
                job: name.clone(),
                origin: pending.origin,
                nominal: pending.nominal_wall,
                late: Duration::from_millis(u64::try_from(late).unwrap_or(0)),
            });
            entry.running = true;
            entry.last_fire = Some(now_ms);
            self.running += 1;
            if pending.runs > 1 {
                pending.runs -= 1;
                pending.start_at = now_ms;
                entry.pending = Some(pending);
            }
        }
    }

    /// Reports lifecycle and next-due changes since the last report.
    fn report(&mut self, out: &mut Vec<Action>) {
        for (name, entry) in &mut self.jobs {
            Self::report_one(name, entry, out);
        }
    }

    /// Reports one job's lifecycle and next-due changes since its last report.
    fn report_one(name: &str, entry: &mut Entry, out: &mut Vec<Action>) {
        if entry.reported_life != Some(entry.life) {
            entry.reported_life = Some(entry.life);
            out.push(Action::State {
                job: name.to_string(),
                state: entry.life,
            });
        }
        let due = match entry.next {
            Next::Grid {
                anchor_wall,
                period,
                k,
                ..
            } if entry.schedulable() => Some(wall_ms(anchor_wall + k * period)),
            Next::Wall(t) if entry.schedulable() => Some(t),
            _ => None,
        };
        if entry.reported_due != Some(due) {
            entry.reported_due = Some(due);
            out.push(Action::NextDue {
                job: name.to_string(),
                at: due,
            });
        }
    }

    /// A run of `job` ended. One-shots complete or fail here.
    pub fn finished(&mut self, job: &str, outcome: Outcome) -> Vec<Action> {
        self.running = self.running.saturating_sub(1);
        let mut out = Vec::new();
        if let Some(entry) = self.jobs.get_mut(job) {
            entry.running = false;
            let one_shot = entry.calendar.as_ref().is_some_and(Calendar::is_one_shot);
            let schedule_over = entry.next == Next::Idle && (one_shot || entry.cfg.end.is_some());
            let shutting_down = outcome == Outcome::Cancelled;
            if schedule_over
                && entry.pending.is_none()
                && !shutting_down
                && entry.life == Lifecycle::Active
            {
                entry.life = if outcome.is_success() || !one_shot {
                    Lifecycle::Completed
                } else {
                    Lifecycle::Failed
                };
            }
            Self::report_one(job, entry, &mut out);
        }
        out
    }

    /// Asks for a run now, outside the schedule (`job run`, a remote command, an alarm).
    pub fn run_now(&mut self, job: &str, now: Now) -> Result<(), String> {
        let entry = self
            .jobs
            .get_mut(job)
            .ok_or_else(|| format!("no job named {job:?}"))?;
        if entry.pending.is_some() {
            return Err(format!("job {job:?} already has a run waiting"));
        }
        self.shared.order += 1;
        entry.pending = Some(Pending {
            origin: Origin::Manual,
            nominal_wall: None,
            start_at: ms(now.mono),
            runs: 1,
            order: self.shared.order,
        });
        Ok(())
    }

    /// Stops a job firing until it is resumed; a run in progress goes on.
    pub fn pause(&mut self, job: &str) -> Result<Vec<Action>, String> {
        let entry = self
            .jobs
            .get_mut(job)
            .ok_or_else(|| format!("no job named {job:?}"))?;
        if entry.life != Lifecycle::Active {
            return Err(format!("job {job:?} is {}", entry.life.as_str()));
        }
        entry.life = Lifecycle::Paused;
        entry.pending = None;
        entry.next = Next::Idle;
        let mut out = Vec::new();
        self.report(&mut out);
        Ok(out)
    }

    /// Lets a paused job fire again from its next regular time; fires due while it was
    /// paused are neither run nor counted as missed.
    pub fn resume(&mut self, job: &str, now: Now) -> Result<Vec<Action>, String> {
        let mut entry = self
            .jobs
            .remove(job)
            .ok_or_else(|| format!("no job named {job:?}"))?;
        if entry.life != Lifecycle::Paused {
            let state = entry.life;
            self.jobs.insert(job.to_string(), entry);
            return Err(format!("job {job:?} is {}, not paused", state.as_str()));
        }
        entry.life = Lifecycle::Active;
        self.shared.schedule(&mut entry, now, false);
        self.jobs.insert(job.to_string(), entry);
        let mut out = Vec::new();
        self.report(&mut out);
        Ok(out)
    }

    /// Takes a new set of jobs: an unchanged job keeps its grid, its running run and
    /// its waiting fire; a changed or new one is planned afresh.
    pub fn reconfigure(&mut self, jobs: &[JobConfig], zone: Tz, max_running: usize, now: Now) {
        let zone_changed = zone != self.shared.zone;
        self.shared.zone = zone;
        self.max_running = max_running.max(1);
        let mut old = std::mem::take(&mut self.jobs);
        for cfg in jobs {
            match old.remove(&cfg.name) {
                Some(entry) if entry.cfg == *cfg && !(zone_changed && entry.calendar.is_some()) => {
                    self.jobs.insert(cfg.name.clone(), entry);
                }
                previous => {
                    let memory = Remembered {
                        state: previous
                            .as_ref()
                            .map(|e| e.life)
                            .filter(|l| *l == Lifecycle::Paused),
                        last_nominal: previous.as_ref().and_then(|e| e.last_nominal),
                    };
                    self.insert(cfg.clone(), memory, now);
                    if let (Some(prev), Some(entry)) = (previous, self.jobs.get_mut(&cfg.name)) {
                        entry.running = prev.running;
                        entry.last_fire = prev.last_fire;
                    }
                }
            }
        }
    }

    /// When the plan next needs a tick, in monotonic time.
    pub fn next_wake(&self, now: Now) -> Duration {
        let now_ms = ms(now.mono);
        let mut wake = now_ms + MAX_SLEEP_MS;
        for entry in self.jobs.values() {
            // A fire that waits for a free slot is woken by the run that frees it.
            if let Some(p) = &entry.pending {
                let slot_free = self.running < self.max_running;
                if !entry.running && (p.start_at > now_ms || slot_free) {
                    wake = wake.min(p.start_at);
                }
            }
            match entry.next {
                Next::Grid {
                    anchor, period, k, ..
                } => wake = wake.min(anchor + k * period),
                Next::Wall(t) if now.trusted => {
                    wake = wake.min(now_ms + (t - now.wall).num_milliseconds())
                }
                _ => {}
            }
        }
        Duration::from_millis(u64::try_from(wake.max(now_ms)).unwrap_or(0))
    }

    /// Runs in progress, all jobs.
    pub fn running(&self) -> usize {
        self.running
    }

    pub fn state(&self, job: &str) -> Option<Lifecycle> {
        self.jobs.get(job).map(|e| e.life)
    }
}

/// What planning a fire needs besides the job itself: the zone, the jitter draw and
/// the order in which fires became pending.
#[derive(Debug, Clone)]
struct Shared {
    zone: Tz,
    rng: fastrand::Rng,
    order: u64,
}

impl Shared {
    /// Computes an entry's next fire from scratch as of `now`. With `catch_up`, fires
    /// missed since the remembered last one are turned into at most one pending fire.
    fn schedule(&mut self, entry: &mut Entry, now: Now, catch_up: bool) {
        entry.next = Next::Idle;
        if !entry.schedulable() || (entry.cfg.needs_trusted_clock() && !now.trusted) {
            return;
        }
        let now_ms = ms(now.mono);
        if let Some(period) = entry.period() {
            entry.next = Next::grid(grid_start(period, now, entry.last_fire), period, now);
            if catch_up
                && now.trusted
                && entry.last_fire.is_none()
                && let Some(last) = entry.last_nominal
            {
                let since = (now.wall - last).num_milliseconds();
                let missed = since.div_euclid(period);
                if missed >= 1 && since >= 0 {
                    let latest = last + chrono::Duration::milliseconds(missed * period);
                    let late = (now.wall - latest).num_milliseconds();
                    let passed = u64::try_from(missed).unwrap_or(u64::MAX);
                    self.fire(entry, passed, now_ms - late, Some(latest), now);
                }
            }
        } else if let Some(calendar) = entry.calendar.clone() {
            let from = match entry.cfg.start {
                Some(start) if start > now.wall => start - chrono::Duration::milliseconds(1),
                _ => now.wall,
            };
            if catch_up && let Some(last) = entry.last_nominal {
                if let Some(latest) = calendar
                    .prev_at_or_before(now.wall, self.zone)
                    .filter(|t| *t > last)
                {
                    let count = calendar.count_between(last, now.wall, self.zone);
                    let late = (now.wall - latest).num_milliseconds();
                    if !past_end(&entry.cfg, latest) {
                        self.fire(entry, count.max(1), now_ms - late, Some(latest), now);
                    }
                }
            } else if catch_up && calendar.is_one_shot() {
                // A one-shot whose time passed before it ever ran is due now (or missed).
                if let Some(latest) = calendar.prev_at_or_before(now.wall, self.zone) {
                    let late = (now.wall - latest).num_milliseconds();
                    self.fire(entry, 1, now_ms - late, Some(latest), now);
                    return;
                }
            }
            match calendar.next_after(from, self.zone) {
                Some(t) if !past_end(&entry.cfg, t) => entry.next = Next::Wall(t),
                // Nothing left to fire: past its end, or a one-shot whose time has gone
                // by without being due now (it fired before, or passed while paused).
                _ => {
                    if entry.pending.is_none() && !entry.running {
                        entry.life = Lifecycle::Completed;
                    }
                }
            }
        }
    }

    /// Turns a passed nominal fire into a pending run (or a skip).
    fn fire_due(&mut self, entry: &mut Entry, now: Now, now_ms: Ms) {
        if !entry.schedulable() {
            return;
        }
        match entry.next.clone() {
            Next::Grid {
                anchor,
                anchor_wall,
                period,
                k,
            } => {
                let due = anchor + k * period;
                if due > now_ms {
                    return;
                }
                let passed = (now_ms - due) / period + 1;
                let latest = due + (passed - 1) * period;
                entry.next = Next::Grid {
                    anchor,
                    anchor_wall,
                    period,
                    k: k + passed,
                };
                let nominal_wall = now
                    .trusted
                    .then(|| wall_ms(anchor_wall + (latest - anchor)));
                if let (Some(end), Some(wall)) = (entry.cfg.end, nominal_wall)
                    && wall > end
                {
                    entry.next = Next::Idle;
                    if !entry.running && entry.pending.is_none() {
                        entry.life = Lifecycle::Completed;
                    }
                    return;
                }
                if let (Some(start), Some(wall)) = (entry.cfg.start, nominal_wall)
                    && wall < start
                {
                    return;
                }
                self.fire(
                    entry,
                    u64::try_from(passed).unwrap_or(u64::MAX),
                    latest,
                    nominal_wall,
                    now,
                );
            }
            Next::Wall(t) => {
                if !now.trusted || t > now.wall {
                    return;
                }
                let Some(calendar) = entry.calendar.clone() else {
                    return;
                };
                let latest = calendar
                    .prev_at_or_before(now.wall, self.zone)
                    .unwrap_or(t)
                    .max(t);
                let count = 1 + calendar.count_between(t, latest, self.zone);
                let late = (now.wall - latest).num_milliseconds();
                self.fire(entry, count, now_ms - late, Some(latest), now);
                entry.next = match calendar.next_after(now.wall, self.zone) {
                    Some(next) if !past_end(&entry.cfg, next) => Next::Wall(next),
                    _ => Next::Idle,
                };
            }
            Next::Idle => {}
        }
    }

    /// `passed` fires are due, the latest at monotonic `latest`. Applies coalesce,
    /// grace and overlap, leaving at most one pending fire.
    fn fire(
        &mut self,
        entry: &mut Entry,
        passed: u64,
        latest: Ms,
        nominal_wall: Option<DateTime<Utc>>,
        now: Now,
    ) {
        let now_ms = ms(now.mono);
        let late = now_ms - latest;
        let grace = entry.cfg.misfire_grace.map(ms);
        let runs = if entry.cfg.coalesce {
            1
        } else {
            // Fires at latest, latest − period, … that are still within the grace.
            let within = match (grace, entry.period()) {
                (Some(g), Some(p)) if g >= late => u64::try_from((g - late) / p + 1).unwrap_or(1),
                (Some(_), Some(_)) => 0,
                _ => MAX_CATCH_UP,
            };
            passed.min(within).min(MAX_CATCH_UP)
        };
        let mut missed = passed.saturating_sub(runs);
        entry.last_nominal = nominal_wall.or(entry.last_nominal);
        if grace.is_some_and(|g| late > g) {
            missed += runs;
            Self::note_missed(entry, missed);
            return;
        }
        Self::note_missed(entry, missed);
        if entry.running || entry.pending.is_some() {
            let queue_free = entry.cfg.overlap == Overlap::Queue && entry.pending.is_none();
            if !queue_free {
                entry.pending_skips += 1;
                return;
            }
        }
        let jitter = ms(entry.cfg.jitter);
        let offset = if jitter > 0 {
            self.rng.i64(0..=jitter)
        } else {
            0
        };
        self.order += 1;
        entry.pending = Some(Pending {
            origin: Origin::Schedule,
            nominal_wall,
            start_at: latest + offset,
            runs,
            order: self.order,
        });
    }

    fn note_missed(entry: &mut Entry, count: u64) {
        entry.pending_missed += count;
    }
}

impl Next {
    /// A grid whose first point is `anchor`, with its wall time as of `now`.
    fn grid(anchor: Ms, period: Ms, now: Now) -> Next {
        let anchor_wall = now.wall_at_ms(anchor).timestamp_millis();
        Next::Grid {
            anchor,
            anchor_wall,
            period,
            k: 0,
        }
    }
}

/// A wall time from milliseconds since the epoch (saturating at chrono's range).
fn wall_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn offset_of(now: Now) -> i64 {
    now.wall.timestamp_millis() - ms(now.mono)
}

fn past_end(cfg: &JobConfig, t: DateTime<Utc>) -> bool {
    cfg.end.is_some_and(|end| t > end)
}

/// The first grid point of a period as of `now`: the next wall-clock multiple of the
/// period on a trusted clock (never closer than half a period to the last fire), else
/// one period after the last fire or after now.
fn grid_start(period: Ms, now: Now, last_fire: Option<Ms>) -> Ms {
    let now_ms = ms(now.mono);
    if !now.trusted {
        return last_fire.map_or(now_ms + period, |last| (last + period).max(now_ms));
    }
    let wall = now.wall.timestamp_millis();
    let mut due = now_ms + (wall.div_euclid(period) + 1) * period - wall;
    if last_fire.is_some_and(|last| due - last < period / 2) {
        due += period;
    }
    due
}
