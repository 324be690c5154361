//! What one run of a job does, wrapped in its policy: timeout, retries with backoff,
//! cancellation, and the record it leaves in the store.
//!
//! Invariants: a run's outcome is decided here and nowhere else; a failed attempt is
//! retried only while attempts remain and the run was not cancelled; the whole run,
//! retries and their waits included, is one record in `job_runs`. This module does not
//! know when jobs fire (that is the scheduler's).

pub mod command;
pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::alarm::Change;
use crate::clock::{BootTime, Clock};
use crate::config::{AlarmConfig, Config, JobConfig, JobKind, SensorConfig, Severity, Threshold};
use crate::event::{Event, Events, Kind};
use crate::health::{ConfigStatus, Health};
use crate::mqtt::{MqttHandle, PublishError};
use crate::reading::{Quality, Reading};
use crate::scheduler::SchedulerHandle;
use crate::sensor::sampler::{Changes, Sampler};
use crate::store::alarms as alarm_store;
use crate::store::jobs::{self, Origin, Outcome};
use crate::store::readings::{self, ClockQuality};
use crate::store::upload as upload_store;
use crate::store::{StoreError, StoreHandle};
use crate::time::format_utc;

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Cancelled,
    Error(String),
}

/// How a whole run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: Outcome,
    pub error: Option<String>,
    pub attempts: u32,
    pub duration: Duration,
}

/// What a run may reach: the configuration it runs under, the clocks, the store, the
/// buses, the agent's health and, with `[mqtt]`, the broker.
#[derive(Clone)]
pub struct JobContext {
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub store: StoreHandle,
    pub sampler: Arc<Sampler>,
    /// Readings sampled while the buffer could not take them.
    pub held: Arc<readings::Held>,
    pub health: Arc<Health>,
    /// `None` without `[mqtt]` (or in a CLI `job run`): the heartbeat only logs.
    pub mqtt: Option<MqttHandle>,
    /// Queued for the broker with `[mqtt]`, else only logged.
    pub events: Events,
    /// The scheduler running these jobs, for an alarm's `run` (set by the scheduler;
    /// `None` in a CLI `job run`).
    pub scheduler: Option<SchedulerHandle>,
    /// Whether the buffer is past [`BUFFER_HIGH`] full (its event was raised).
    pub buffer_high: Arc<AtomicBool>,
}

/// A buffer this full raises `buffer_high` once...
pub const BUFFER_HIGH: f64 = 0.8;
/// ...and must fall below this before it can again.
const BUFFER_HIGH_CLEAR: f64 = 0.75;

impl JobContext {
    /// Must be called inside the runtime: it starts the bus tasks.
    pub fn new(config: Arc<Config>, clock: Arc<dyn Clock>, store: StoreHandle) -> JobContext {
        let health = Arc::new(Health::new(clock.now(), ConfigStatus::default()));
        JobContext::with_health(config, clock, store, health, None)
    }

    /// A context whose heartbeat reports `health` and publishes through `mqtt`.
    pub fn with_health(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        store: StoreHandle,
        health: Arc<Health>,
        mqtt: Option<MqttHandle>,
    ) -> JobContext {
        let sampler = Arc::new(Sampler::start(&config, Arc::clone(&clock), None));
        let events = if mqtt.is_some() {
            Events::queued(store.clone())
        } else {
            Events::log_only()
        };
        JobContext {
            config,
            clock,
            store,
            sampler,
            held: Arc::default(),
            health,
            mqtt,
            events,
            scheduler: None,
            buffer_high: Arc::default(),
        }
    }

    /// The same world under a new configuration: unchanged buses keep their tasks.
    pub fn reconfigured(&self, config: Arc<Config>) -> JobContext {
        let sampler = Arc::new(Sampler::start(
            &config,
            Arc::clone(&self.clock),
            Some(&self.sampler),
        ));
        JobContext {
            config,
            clock: Arc::clone(&self.clock),
            store: self.store.clone(),
            sampler,
            held: Arc::clone(&self.held),
            health: Arc::clone(&self.health),
            mqtt: self.mqtt.clone(),
            events: self.events.clone(),
            scheduler: self.scheduler.clone(),
            buffer_high: Arc::clone(&self.buffer_high),
        }
    }
}

/// Runs `job` once under its policy: each attempt limited by `timeout`, failures
/// retried per `retry`, everything stopped by `cancel`.
pub async fn run(job: &JobConfig, ctx: &JobContext, cancel: &CancellationToken) -> RunReport {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = attempt(job, ctx, cancel).await;
        let failure = match result {
            Ok(()) => {
                return RunReport {
                    outcome: Outcome::Success,
                    error: None,
                    attempts,
                    duration: started.elapsed(),
                };
            }
            Err(failure) => failure,
        };
        let retry = job.retry.filter(|r| attempts <= r.attempts);
        if let Some(policy) = retry
            && failure != Failure::Cancelled
        {
            let wait = retry::backoff(&policy, attempts, fastrand::f64());
            tracing::warn!(job = %job.name, attempt = attempts, error = %describe(&failure), retry_in = ?wait, "run failed, retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                () = cancel.cancelled() => {
                    return report(Failure::Cancelled, attempts, started);
                }
            }
        }
        return report(failure, attempts, started);
    }
}

fn report(failure: Failure, attempts: u32, started: Instant) -> RunReport {
    let outcome = match failure {
        Failure::Timeout => Outcome::Timeout,
        Failure::Cancelled => Outcome::Cancelled,
        Failure::Error(_) => Outcome::Failure,
    };
    RunReport {
        outcome,
        error: Some(describe(&failure)),
        attempts,
        duration: started.elapsed(),
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Timeout => "timed out".to_string(),
        Failure::Cancelled => "cancelled at shutdown".to_string(),
        Failure::Error(e) => e.clone(),
    }
}

async fn attempt(
    job: &JobConfig,
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    if let JobKind::Command(spec) = &job.kind {
        return command::run(&job.name, spec, job.timeout, cancel).await;
    }
    let work = builtin(job, ctx, cancel);
    let limit = async {
        match job.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // The work first: a job that watches `cancel` itself (the upload) ends in its
        // own words rather than being dropped mid-sentence.
        biased;
        result = work => result,
        () = limit => Err(Failure::Timeout),
        () = cancel.cancelled() => Err(Failure::Cancelled),
    }
}

/// The built-in jobs.
async fn builtin(
    job: &JobConfig,
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    match &job.kind {
        JobKind::Heartbeat => heartbeat(job, ctx).await?,
        JobKind::Sample { sensors } => sample(job, ctx, sensors.as_deref()).await?,
        JobKind::Upload => {
            let was_paused = ctx
                .store
                .call(|c| upload_store::status(c))
                .await
                .is_ok_and(|s| s.paused.is_some());
            match crate::upload::run(ctx, cancel).await {
                Ok(_) => {}
                Err(crate::upload::UploadError::Stopped) => return Err(Failure::Cancelled),
                Err(e) => {
                    // Raised when uploads pause, not at every run that finds them paused.
                    if matches!(e, crate::upload::UploadError::Paused { .. }) && !was_paused {
                        ctx.events.raise(Event::new(
                            ctx.clock.now().wall,
                            Kind::UploadPaused,
                            Severity::Critical,
                            "upload",
                            e.to_string(),
                        ));
                    }
                    return Err(Failure::Error(e.to_string()));
                }
            }
        }
        JobKind::Cleanup => cleanup(job, ctx).await?,
        JobKind::Command(_) => unreachable!("command jobs are run by attempt()"),
    }
    Ok(())
}

/// Builds the health payload and publishes it. A heartbeat the broker cannot take now
/// (away, or the client's queue full) is dropped and counted by the client, not
/// queued: the run still succeeds, since being offline is normal and the next
/// heartbeat says everything this one would have. Without `[mqtt]` it only logs.
async fn heartbeat(job: &JobConfig, ctx: &JobContext) -> Result<(), Failure> {
    let Some(mqtt) = &ctx.mqtt else {
        let now = ctx.clock.now();
        tracing::info!(job = %job.name, trusted = now.trusted, mqtt = ctx.config.mqtt.is_some(), "heartbeat: alive; not published: no broker connection here");
        return Ok(());
    };
    let payload = crate::health::heartbeat_payload(&crate::health::heartbeat(ctx).await);
    match mqtt.publish_heartbeat(&payload) {
        Ok(()) => Ok(()),
        Err(error @ PublishError::TooLarge { .. }) => {
            Err(Failure::Error(format!("heartbeat not published: {error}")))
        }
        Err(error) => {
            let dropped = mqtt.stats().heartbeats_dropped;
            tracing::debug!(job = %job.name, %error, dropped, "heartbeat dropped");
            Ok(())
        }
    }
}

/// Reads the enabled sensors (or the job's own list) once and stores the cycle in one
/// transaction. Bad readings are stored too, with their errors: the run fails only
/// when the cycle cannot be stored. Steps the alarm rules on the cycle (stored or
/// not) and raises the events of what changed: sensors, buses, alarms, the buffer.
async fn sample(job: &JobConfig, ctx: &JobContext, only: Option<&[String]>) -> Result<(), Failure> {
    let chosen: Vec<SensorConfig> = ctx
        .config
        .sensors
        .iter()
        .filter(|s| s.enabled && only.is_none_or(|ids| ids.contains(&s.id)))
        .cloned()
        .collect();
    if chosen.is_empty() {
        tracing::info!(job = %job.name, "sample: no enabled sensors");
        return Ok(());
    }
    let (readings, changes) = ctx.sampler.read_noting_changes(&chosen).await;
    raise_read_changes(ctx, &readings, changes);
    let clock = if ctx.clock.now().trusted {
        ClockQuality::Synced
    } else {
        ClockQuality::Unsynced
    };
    let boot = BootTime::now();
    let good = readings
        .iter()
        .filter(|r| r.quality == Quality::Good)
        .count();
    let bad: Vec<String> = readings
        .iter()
        .filter(|r| r.quality == Quality::Bad)
        .map(|r| r.sensor.clone())
        .collect();
    let buffer = &ctx.config.buffer;
    let limits = readings::Limits {
        max_rows: buffer.max_rows,
        max_size: buffer.max_size,
        min_free_disk: buffer.min_free_disk,
    };
    let state_dir = ctx.config.agent.state_dir.clone();
    let held = Arc::clone(&ctx.held);
    let rules = ctx.config.alarms.clone();
    let watched = if rules.is_empty() {
        Vec::new()
    } else {
        readings.clone()
    };
    let cycle = readings::Cycle {
        readings,
        clock,
        boot,
    };
    let cannot_store = |e: StoreError| {
        Failure::Error(format!(
            "cannot store readings ({e}); {} readings held in memory until the buffer takes them",
            ctx.held.len()
        ))
    };
    let (stored, stepped) = ctx
        .store
        .call(move |c| {
            let stored =
                readings::store_cycle(c, &held, cycle, &limits, || readings::free_disk(&state_dir));
            // Alarms are checked even when the buffer refuses the cycle.
            let stepped = alarm_store::step(c, &rules, &watched);
            Ok((stored, stepped))
        })
        .await
        .map_err(cannot_store)?;
    match stepped {
        Ok(stepped) => report_alarms(ctx, stepped).await,
        Err(error) => tracing::error!(%error, "cannot check the alarm rules"),
    }
    let stored = stored.map_err(cannot_store)?;
    raise_buffer_events(ctx, &stored);
    match stored.seqs {
        Some((first, last)) => {
            tracing::info!(job = %job.name, good, bad = ?bad, first, last, "sample: readings stored")
        }
        None => tracing::info!(job = %job.name, "sample: nothing read"),
    }
    Ok(())
}

/// Events for the sensors and buses whose state changed with this read.
fn raise_read_changes(ctx: &JobContext, readings: &[Reading], changes: Changes) {
    let now = ctx.clock.now().wall;
    for (bus, down) in changes.buses {
        ctx.events.raise(if down {
            Event::new(
                now,
                Kind::BusDown,
                Severity::Warning,
                &bus,
                "no sensor on it reads",
            )
        } else {
            Event::new(
                now,
                Kind::BusUp,
                Severity::Info,
                &bus,
                "its sensors read again",
            )
        });
    }
    for (sensor, quality) in changes.sensors {
        let reading = readings.iter().find(|r| r.sensor == sensor);
        let ts = reading.map_or(now, |r| r.ts);
        ctx.events.raise(if quality == Quality::Bad {
            let error = reading.and_then(|r| r.error.clone());
            Event::new(
                ts,
                Kind::SensorBad,
                Severity::Warning,
                &sensor,
                error.unwrap_or_else(|| "read failed".to_string()),
            )
        } else {
            let message = match reading.and_then(|r| r.value) {
                Some(v) => format!("reads again: {v}"),
                None => "reads again".to_string(),
            };
            Event::new(ts, Kind::SensorRecovered, Severity::Info, &sensor, message)
        });
    }
}

/// Events for readings dropped at a limit and for a buffer filling up.
fn raise_buffer_events(ctx: &JobContext, stored: &readings::Stored) {
    let now = ctx.clock.now().wall;
    if stored.dropped > 0 {
        let message = format!(
            "{} readings the server did not have were dropped at a buffer limit",
            stored.dropped
        );
        ctx.events.raise(Event::new(
            now,
            Kind::BufferDropped,
            Severity::Critical,
            "buffer",
            message,
        ));
    }
    if stored.fill >= BUFFER_HIGH {
        if !ctx.buffer_high.swap(true, Ordering::Relaxed) {
            let message = format!(
                "the buffer is {:.0} % full; past its limits the oldest readings are dropped",
                stored.fill * 100.0
            );
            ctx.events.raise(Event::new(
                now,
                Kind::BufferHigh,
                Severity::Warning,
                "buffer",
                message,
            ));
        }
    } else if stored.fill < BUFFER_HIGH_CLEAR {
        ctx.buffer_high.store(false, Ordering::Relaxed);
    }
}

/// Logs what a cycle did to the alarms, raises their events, and starts the job of
/// each rule raised (once per raise: a raise happens once, and survives restarts).
async fn report_alarms(ctx: &JobContext, stepped: alarm_store::Stepped) {
    let rules = &ctx.config.alarms;
    let mut to_run = Vec::new();
    for (i, change) in stepped.changes {
        let Some(rule) = rules.get(i) else { continue };
        let event = match change {
            Change::Raised { value, ts } => {
                let (alarm, sensor, at) = (&rule.id, &rule.sensor, format_utc(ts));
                match rule.severity {
                    Severity::Critical => {
                        tracing::error!(%alarm, %sensor, value, ts = %at, "alarm raised (critical)")
                    }
                    Severity::Warning => {
                        tracing::warn!(%alarm, %sensor, value, ts = %at, "alarm raised (warning)")
                    }
                    Severity::Info => {
                        tracing::info!(%alarm, %sensor, value, ts = %at, "alarm raised (info)")
                    }
                }
                if let Some(job) = &rule.run {
                    to_run.push((rule.id.clone(), job.clone()));
                }
                Event::new(
                    ts,
                    Kind::AlarmRaised,
                    rule.severity,
                    &rule.id,
                    format!("{sensor} {value} {}", condition(rule)),
                )
            }
            Change::Cleared { value, ts } => {
                tracing::info!(
                    alarm = %rule.id,
                    sensor = %rule.sensor,
                    value,
                    ts = %format_utc(ts),
                    "alarm cleared"
                );
                Event::new(
                    ts,
                    Kind::AlarmCleared,
                    Severity::Info,
                    &rule.id,
                    format!("{} {value}: cleared", rule.sensor),
                )
            }
        };
        ctx.events.raise(event);
    }
    if let Some(error) = stepped.save_error {
        tracing::warn!(%error, "alarm states not saved: a restart will not remember these changes");
    }
    for (alarm, job) in to_run {
        match &ctx.scheduler {
            Some(scheduler) => match scheduler.run_now(&job).await {
                Ok(()) => tracing::info!(%alarm, %job, "alarm raised: its job started"),
                Err(error) => {
                    tracing::error!(%alarm, %job, %error, "alarm raised: its job could not start")
                }
            },
            None => tracing::warn!(%alarm, %job, "alarm raised: no scheduler here to run its job"),
        }
    }
}

/// A rule's condition as text: "below 5", "above 30".
fn condition(rule: &AlarmConfig) -> String {
    match rule.threshold {
        Threshold::Below(t) => format!("below {t}"),
        Threshold::Above(t) => format!("above {t}"),
    }
}

/// Keeps the gateway tidy, age-based deletion only on a trusted clock (a clock in
/// 2099 would make everything old): rotated logs past `log_max_age`, and readings the
/// server acknowledged more than `keep_uploaded` ago. Then lets SQLite refresh its
/// query statistics.
async fn cleanup(job: &JobConfig, ctx: &JobContext) -> Result<(), Failure> {
    let now = ctx.clock.now();
    let mut pruned = 0;
    if now.trusted {
        let agent = &ctx.config.agent;
        if let Some(dir) = &agent.log_dir {
            let removed = crate::logging::prune_old_logs(dir, agent.log_max_age, now.wall.into())
                .map_err(|e| {
                Failure::Error(format!("pruning logs in {}: {e}", dir.display()))
            })?;
            tracing::info!(job = %job.name, removed, "cleanup: old logs pruned");
        }
        let keep = chrono::Duration::from_std(ctx.config.buffer.keep_uploaded)
            .unwrap_or(chrono::Duration::MAX);
        let cutoff = now
            .wall
            .checked_sub_signed(keep)
            .map_or(i64::MIN, |t| t.timestamp_millis());
        pruned = ctx
            .store
            .call(move |c| readings::prune_uploaded(c, cutoff))
            .await
            .map_err(|e| Failure::Error(format!("pruning uploaded readings: {e}")))?;
        tracing::info!(job = %job.name, pruned, "cleanup: uploaded readings past retention pruned");
    } else {
        tracing::info!(job = %job.name, "cleanup: clock not trusted; age-based deletion waits");
    }
    // The size cap and compaction need no clock.
    let agent = &ctx.config.agent;
    if let Some(dir) = &agent.log_dir {
        let (files, bytes) = crate::logging::cap_logs(dir, agent.log_keep, agent.log_max_size)
            .map_err(|e| Failure::Error(format!("capping logs in {}: {e}", dir.display())))?;
        if files > 0 {
            tracing::info!(job = %job.name, files, bytes, "cleanup: logs over their cap deleted");
        }
    }
    let compacted = ctx
        .store
        .call(|c| {
            let compacted = readings::compact(c)?;
            c.execute_batch("PRAGMA optimize;")?;
            Ok(compacted)
        })
        .await
        .map_err(|e| Failure::Error(format!("compacting the database: {e}")))?;
    tracing::info!(
        job = %job.name,
        pruned,
        released_bytes = compacted.released_bytes,
        wal_truncated = compacted.wal_truncated,
        "cleanup: database compacted"
    );
    Ok(())
}

/// A run still going after this long gets its row at once, so a crash leaves an open
/// run that the next start-up closes as aborted. A shorter run (a heartbeat, a sample:
/// milliseconds) is written once, whole, when it ends: every commit costs an SD card
/// a few pages, and half the pages of a day's writes were the rows of runs that
/// lasted milliseconds.
const OPEN_RUN_AFTER: Duration = Duration::from_secs(1);

/// Runs `job` and records the run in the store: a row once it has run for
/// [`OPEN_RUN_AFTER`], and its outcome at the end (or both at once for a short run).
/// The writes are queued to the writer thread without waiting, in order, so a run
/// never waits for the database.
pub async fn run_recorded(
    job: &JobConfig,
    ctx: &JobContext,
    store: &StoreHandle,
    origin: Origin,
    nominal: Option<DateTime<Utc>>,
    cancel: &CancellationToken,
) -> RunReport {
    let started = ctx.clock.now().wall;
    // The row id, once the writer has inserted the start (0 until then, or if it failed).
    let run_id = Arc::new(AtomicI64::new(0));
    let work = run(job, ctx, cancel);
    tokio::pin!(work);
    let mut opened = false;
    let report = tokio::select! {
        report = &mut work => report,
        () = tokio::time::sleep(OPEN_RUN_AFTER) => {
            opened = true;
            let (name, id) = (job.name.clone(), Arc::clone(&run_id));
            store.submit("cannot record run start", move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                id.store(
                    jobs::start_run(&tx, &name, origin, started, nominal)?,
                    Ordering::Release,
                );
                tx.commit()?;
                Ok(())
            });
            tracing::debug!(job = %job.name, ?origin, "run still going: recorded as open");
            work.await
        }
    };
    match &report.error {
        None => {
            tracing::info!(job = %job.name, attempts = report.attempts, duration = ?report.duration, "run succeeded")
        }
        Some(err) => {
            tracing::warn!(job = %job.name, outcome = report.outcome.as_str(), attempts = report.attempts, error = %err, "run failed");
            if matches!(report.outcome, Outcome::Failure | Outcome::Timeout) {
                ctx.events.raise(Event::new(
                    ctx.clock.now().wall,
                    Kind::JobFailed,
                    Severity::Warning,
                    &job.name,
                    format!(
                        "{} after {} attempt(s): {err}",
                        report.outcome.as_str(),
                        report.attempts
                    ),
                ));
            }
        }
    }
    let (name, outcome, error, attempts) = (
        job.name.clone(),
        report.outcome,
        report.error.clone(),
        report.attempts,
    );
    let ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
    store.submit("cannot record run outcome", move |c| {
        if !opened {
            let error = error.as_deref();
            return jobs::record_run(
                c, &name, origin, started, nominal, outcome, error, ms, attempts,
            );
        }
        match run_id.load(Ordering::Acquire) {
            0 => Ok(()),
            id => jobs::finish_run(c, &name, id, outcome, error.as_deref(), ms, attempts),
        }
    });
    report
}
