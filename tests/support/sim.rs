//! A simulated world for the scheduler's plan: a monotonic clock, a wall clock that
//! can be stepped, trust that can be switched on, and runs that take a set time.
//! A simulated week takes milliseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use tidegate::clock::Now;
use tidegate::config::{Every, JobConfig, JobKind, Overlap, Trigger};
use tidegate::scheduler::plan::{Action, Plan, Remembered};
use tidegate::store::jobs::{Lifecycle, Outcome};

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid date")
}

/// A job with every option at its default.
pub fn job(name: &str, trigger: Option<Trigger>) -> JobConfig {
    JobConfig {
        name: name.to_string(),
        kind: JobKind::Heartbeat,
        trigger,
        enabled: true,
        start: None,
        end: None,
        timeout: None,
        retry: None,
        jitter: Duration::ZERO,
        misfire_grace: None,
        coalesce: true,
        overlap: Overlap::Skip,
    }
}

pub fn every(secs: u64) -> Option<Trigger> {
    Some(Trigger::Every(Every::Fixed(Duration::from_secs(secs))))
}

pub fn cron(expr: &str) -> Option<Trigger> {
    Some(Trigger::Cron(
        tidegate::config::CronExpr::parse(expr).expect("valid cron"),
    ))
}

/// One start seen by the simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub job: String,
    pub mono_ms: i64,
    pub wall: DateTime<Utc>,
    pub nominal: Option<DateTime<Utc>>,
}

pub struct Sim {
    pub plan: Plan,
    pub mono_ms: i64,
    /// Wall time minus monotonic time, in milliseconds.
    pub offset_ms: i64,
    pub trusted: bool,
    pub starts: Vec<Start>,
    pub missed: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    pub states: BTreeMap<String, Lifecycle>,
    pub next_due: BTreeMap<String, Option<DateTime<Utc>>>,
    pub steps: Vec<i64>,
    /// How long each job's runs take (default one second) and how they end.
    pub run_time: BTreeMap<String, Duration>,
    pub fail: BTreeMap<String, bool>,
    running: Vec<(String, i64)>,
    pub ticks: u64,
}

impl Sim {
    pub fn new(jobs: &[JobConfig], zone: &str, wall: DateTime<Utc>, trusted: bool) -> Sim {
        Sim::remembering(jobs, zone, wall, trusted, &BTreeMap::new(), 4)
    }

    pub fn remembering(
        jobs: &[JobConfig],
        zone: &str,
        wall: DateTime<Utc>,
        trusted: bool,
        remembered: &BTreeMap<String, Remembered>,
        max_running: usize,
    ) -> Sim {
        let zone: Tz = zone.parse().expect("zone");
        // Monotonic time starts at ten seconds, as after a boot.
        let mono_ms = 10_000;
        let offset_ms = wall.timestamp_millis() - mono_ms;
        let now = Now {
            mono: Duration::from_millis(10_000),
            wall,
            trusted,
        };
        let plan = Plan::new(jobs, zone, max_running, remembered, now).with_seed(7);
        Sim {
            plan,
            mono_ms,
            offset_ms,
            trusted,
            starts: Vec::new(),
            missed: BTreeMap::new(),
            skipped: BTreeMap::new(),
            states: BTreeMap::new(),
            next_due: BTreeMap::new(),
            steps: Vec::new(),
            run_time: BTreeMap::new(),
            fail: BTreeMap::new(),
            running: Vec::new(),
            ticks: 0,
        }
    }

    pub fn now(&self) -> Now {
        Now {
            mono: Duration::from_millis(u64::try_from(self.mono_ms).expect("positive")),
            wall: DateTime::from_timestamp_millis(self.mono_ms + self.offset_ms).expect("in range"),
            trusted: self.trusted,
        }
    }

    pub fn wall(&self) -> DateTime<Utc> {
        self.now().wall
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start { job, nominal, .. } => {
                    let run = self
                        .run_time
                        .get(&job)
                        .copied()
                        .unwrap_or(Duration::from_secs(1));
                    let end = self.mono_ms + i64::try_from(run.as_millis()).expect("fits");
                    self.starts.push(Start {
                        job: job.clone(),
                        mono_ms: self.mono_ms,
                        wall: self.wall(),
                        nominal,
                    });
                    self.running.push((job, end));
                }
                Action::Missed { job, count } => *self.missed.entry(job).or_default() += count,
                Action::Skipped { job } => *self.skipped.entry(job).or_default() += 1,
                Action::State { job, state } => {
                    self.states.insert(job, state);
                }
                Action::NextDue { job, at } => {
                    self.next_due.insert(job, at);
                }
                Action::ClockStep { delta_ms } => self.steps.push(delta_ms),
                Action::ClockTrusted => {}
            }
        }
    }

    /// Runs the world until monotonic time `until_ms`, waking when the plan asks and
    /// when runs end, as the real shell does.
    pub fn run_until_mono(&mut self, until_ms: i64) {
        loop {
            self.finish_ended_runs();
            let actions = self.plan.tick(self.now());
            self.ticks += 1;
            self.absorb(actions);
            let wake = i64::try_from(self.plan.next_wake(self.now()).as_millis()).expect("fits");
            let next_end = self
                .running
                .iter()
                .map(|(_, end)| *end)
                .min()
                .unwrap_or(i64::MAX);
            let next = wake.min(next_end);
            if next > until_ms {
                self.mono_ms = until_ms;
                return;
            }
            self.mono_ms = next.max(self.mono_ms);
        }
    }

    /// Tells the plan about runs that have ended by now, as the shell's channel does.
    fn finish_ended_runs(&mut self) {
        let now = self.mono_ms;
        let (done, still): (Vec<_>, Vec<_>) =
            self.running.drain(..).partition(|(_, end)| *end <= now);
        self.running = still;
        for (job, _) in done {
            let failed = self.fail.get(&job).copied().unwrap_or(false);
            let outcome = if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            let actions = self.plan.finished(&job, outcome);
            self.absorb(actions);
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.mono_ms + i64::try_from(d.as_millis()).expect("fits");
        self.run_until_mono(until);
    }

    /// Time passes with nobody looking (a stalled process): no ticks in between.
    pub fn stall(&mut self, d: Duration) {
        self.mono_ms += i64::try_from(d.as_millis()).expect("fits");
    }

    /// Steps the wall clock; monotonic time is unmoved.
    pub fn step_wall(&mut self, delta: chrono::Duration) {
        self.offset_ms += delta.num_milliseconds();
    }

    pub fn starts_of(&self, job: &str) -> Vec<Start> {
        self.starts
            .iter()
            .filter(|s| s.job == job)
            .cloned()
            .collect()
    }

    pub fn missed_of(&self, job: &str) -> u64 {
        self.missed.get(job).copied().unwrap_or(0)
    }

    pub fn skipped_of(&self, job: &str) -> u64 {
        self.skipped.get(job).copied().unwrap_or(0)
    }
}
