//! The scheduler's async shell: it reads the clocks, asks the [`plan::Plan`] what is
//! due, starts runs, records what happened in the store, and takes commands (run now,
//! pause, resume, a new configuration) through a [`SchedulerHandle`].
//!
//! Invariants: one task owns the plan; every decision is the plan's, this loop only
//! carries them out. At shutdown nothing new fires; running jobs get
//! `agent.shutdown_grace`, then are cancelled (command jobs killed) and recorded.

mod calendar;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use calendar::Calendar;
use plan::{Action, Plan, Remembered};

use crate::clock::{BootTime, Clock};
use crate::config::{Config, Severity};
use crate::event::{Event, Kind};
use crate::job::{self, JobContext};
use crate::store::StoreHandle;
use crate::store::jobs::{self as job_store, Outcome};
use crate::store::readings;

/// After the grace time, how long cancelled runs get to be killed and recorded.
const CANCEL_WAIT: Duration = Duration::from_secs(3);

enum Command {
    RunNow(String, oneshot::Sender<Result<(), String>>),
    Pause(String, oneshot::Sender<Result<(), String>>),
    Resume(String, oneshot::Sender<Result<(), String>>),
    Reconfigure(Arc<Config>),
}

/// The clonable side of the scheduler task.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    ticks: Arc<AtomicU64>,
    /// The world the runs see now (without this handle: no cycle through it).
    context: watch::Receiver<JobContext>,
}

impl SchedulerHandle {
    pub async fn run_now(&self, job: &str) -> Result<(), String> {
        self.ask(|reply| Command::RunNow(job.to_string(), reply))
            .await
    }

    pub async fn pause(&self, job: &str) -> Result<(), String> {
        self.ask(|reply| Command::Pause(job.to_string(), reply))
            .await
    }

    pub async fn resume(&self, job: &str) -> Result<(), String> {
        self.ask(|reply| Command::Resume(job.to_string(), reply))
            .await
    }

    /// Hands over a new, already validated configuration.
    pub async fn reconfigure(&self, config: Arc<Config>) -> Result<(), String> {
        self.tx
            .send(Command::Reconfigure(config))
            .await
            .map_err(|_| "scheduler has stopped".to_string())
    }

    /// The world runs started now would see: the running configuration, its sampler
    /// and the agent's shared parts (for `/metrics`).
    pub fn context(&self) -> JobContext {
        self.context.borrow().clone()
    }

    /// How many times the loop has looked at the clocks: the watchdog's proof of life.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| "scheduler has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "scheduler has stopped".to_string())?
    }
}

/// Starts the scheduler task. It ends after `shutdown` is cancelled and its runs have
/// finished or been cancelled.
pub async fn spawn(
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    store: StoreHandle,
    shutdown: CancellationToken,
) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), crate::store::StoreError> {
    spawn_with(JobContext::new(config, clock, store), shutdown).await
}

/// [`spawn`] with the world the runs see made by the caller (the agent's health and
/// MQTT handle).
pub async fn spawn_with(
    ctx: JobContext,
    shutdown: CancellationToken,
) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), crate::store::StoreError> {
    let (config, clock, store) = (
        Arc::clone(&ctx.config),
        Arc::clone(&ctx.clock),
        ctx.store.clone(),
    );
    let names: Vec<(String, &'static str)> = config
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.kind.name()))
        .collect();
    let records = store
        .call(move |conn| {
            let aborted = job_store::abort_orphaned_runs(conn)?;
            if aborted > 0 {
                tracing::warn!(
                    runs = aborted,
                    "runs cut off by the previous stop recorded as aborted"
                );
            }
            for (name, kind) in &names {
                job_store::ensure(conn, name, kind)?;
            }
            job_store::all(conn)
        })
        .await?;
    let remembered: BTreeMap<String, Remembered> = records
        .into_iter()
        .map(|r| {
            (
                r.name.clone(),
                Remembered {
                    state: Some(r.state),
                    last_nominal: r.last_nominal,
                },
            )
        })
        .collect();
    let now = clock.now();
    let plan = Plan::new(
        &config.jobs,
        config.agent.timezone,
        config.agent.max_running,
        &remembered,
        now,
    );
    let (tx, rx) = mpsc::channel(16);
    let ticks = Arc::new(AtomicU64::new(0));
    let (context, context_rx) = watch::channel(ctx.clone());
    let handle = SchedulerHandle {
        tx,
        ticks: Arc::clone(&ticks),
        context: context_rx,
    };
    // Runs may ask for other runs (an alarm's job).
    let mut ctx = ctx;
    ctx.scheduler = Some(handle.clone());
    let shell = Shell {
        plan,
        ctx,
        context,
        store,
        ticks: Arc::clone(&ticks),
        tracker: TaskTracker::new(),
        cancel_runs: CancellationToken::new(),
        done: mpsc::unbounded_channel(),
    };
    let task = tokio::spawn(shell.run(rx, shutdown));
    Ok((handle, task))
}

/// A run's end, as the run task reports it to the loop.
type Finished = (String, Outcome);

struct Shell {
    plan: Plan,
    ctx: JobContext,
    /// `ctx` without the scheduler handle, for [`SchedulerHandle::context`].
    context: watch::Sender<JobContext>,
    store: StoreHandle,
    ticks: Arc<AtomicU64>,
    tracker: TaskTracker,
    cancel_runs: CancellationToken,
    done: (
        mpsc::UnboundedSender<Finished>,
        mpsc::UnboundedReceiver<Finished>,
    ),
}

impl Shell {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        loop {
            let now = self.ctx.clock.now();
            self.ticks.fetch_add(1, Ordering::Relaxed);
            let actions = self.plan.tick(now);
            self.carry_out(actions).await;
            let wake = self.ctx.clock.origin() + self.plan.next_wake(now);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(first) = self.done.1.recv() => {
                    // Take every run that has ended, then plan once for all of them.
                    let mut ended = vec![first];
                    while let Ok(next) = self.done.1.try_recv() {
                        ended.push(next);
                    }
                    let mut actions = Vec::new();
                    for (job, outcome) in ended {
                        actions.extend(self.plan.finished(&job, outcome));
                    }
                    self.carry_out(actions).await;
                }
                Some(command) = commands.recv() => self.command(command).await,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        self.stop().await;
    }

    async fn command(&mut self, command: Command) {
        let now = self.ctx.clock.now();
        match command {
            Command::RunNow(job, reply) => {
                let _ = reply.send(self.plan.run_now(&job, now));
            }
            Command::Pause(job, reply) => {
                let result = self.plan.pause(&job);
                let answer = result.as_ref().map(|_| ()).map_err(Clone::clone);
                if let Ok(actions) = result {
                    self.carry_out(actions).await;
                }
                let _ = reply.send(answer);
            }
            Command::Resume(job, reply) => {
                let result = self.plan.resume(&job, now);
                let answer = result.as_ref().map(|_| ()).map_err(Clone::clone);
                if let Ok(actions) = result {
                    self.carry_out(actions).await;
                }
                let _ = reply.send(answer);
            }
            Command::Reconfigure(config) => {
                let names: Vec<(String, &'static str)> = config
                    .jobs
                    .iter()
                    .map(|j| (j.name.clone(), j.kind.name()))
                    .collect();
                self.store.submit("cannot record the new jobs", move |c| {
                    for (name, kind) in &names {
                        job_store::ensure(c, name, kind)?;
                    }
                    Ok(())
                });
                self.plan.reconfigure(
                    &config.jobs,
                    config.agent.timezone,
                    config.agent.max_running,
                    now,
                );
                self.ctx = self.ctx.reconfigured(config);
                let mut published = self.ctx.clone();
                published.scheduler = None;
                self.context.send_replace(published);
                tracing::info!(
                    jobs = self.ctx.config.jobs.len(),
                    "scheduler took the new configuration"
                );
            }
        }
    }

    /// Starts runs and logs what the plan decided; the bookkeeping of one batch of
    /// actions goes to the store as one transaction, queued without waiting, so a
    /// thousand jobs cost the loop no round trips to the writer thread.
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut bookkeeping = Vec::new();
        for action in actions {
            match action {
                Action::Start {
                    job,
                    origin,
                    nominal,
                    late,
                } => self.start(&job, origin, nominal, late),
                Action::Missed { ref job, count } => {
                    tracing::warn!(job = %job, count, "fires missed");
                    bookkeeping.push(action);
                }
                Action::Skipped { ref job } => {
                    tracing::warn!(job = %job, "fire skipped: the previous run is still running");
                    bookkeeping.push(action);
                }
                Action::State { ref job, state } => {
                    tracing::info!(job = %job, state = state.as_str(), "job state");
                    bookkeeping.push(action);
                }
                Action::NextDue { .. } => bookkeeping.push(action),
                Action::ClockStep { delta_ms } => {
                    tracing::warn!(
                        delta_ms,
                        "wall clock stepped; intervals re-aligned, calendar jobs re-planned"
                    );
                }
                Action::ClockTrusted => {
                    tracing::info!("wall clock is trusted; calendar jobs scheduled");
                    self.correct_readings();
                    self.ctx.events.raise(Event::new(
                        self.ctx.clock.now().wall,
                        Kind::ClockTrusted,
                        Severity::Info,
                        "clock",
                        "the wall clock is synchronised: calendar jobs scheduled, this boot's readings re-stamped",
                    ));
                }
            }
        }
        if !bookkeeping.is_empty() {
            self.store.submit("cannot record job state", move |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for action in &bookkeeping {
                    match action {
                        Action::Missed { job, count } => job_store::add_missed(&tx, job, *count)?,
                        Action::Skipped { job } => job_store::add_skipped(&tx, job)?,
                        Action::State { job, state } => job_store::set_state(&tx, job, *state)?,
                        Action::NextDue { job, at } => job_store::set_next_due(&tx, job, *at)?,
                        _ => {}
                    }
                }
                tx.commit()?;
                Ok(())
            });
        }
    }

    /// Re-stamps the readings this boot took before the clock was trusted. Queued
    /// ahead of any later bookkeeping, so nothing reads them uncorrected after this.
    fn correct_readings(&self) {
        let boot = BootTime::now();
        let offset = self.ctx.clock.now().wall.timestamp_millis() - boot.since_boot_ms;
        self.store.submit("cannot correct readings taken before the clock was trusted", move |c| {
            let corrected = readings::correct_boot(c, &boot.boot_id, offset)?;
            if corrected > 0 {
                tracing::info!(corrected, boot_id = %boot.boot_id, "readings taken before the clock was trusted re-stamped");
            }
            Ok(())
        });
    }

    fn start(
        &self,
        job: &str,
        origin: job_store::Origin,
        nominal: Option<chrono::DateTime<chrono::Utc>>,
        late: Duration,
    ) {
        let Some(cfg) = self.ctx.config.job(job).cloned() else {
            return;
        };
        if late > Duration::from_secs(1) {
            tracing::debug!(job = %job, late = ?late, "starting late");
        }
        let (ctx, store, cancel, done) = (
            self.ctx.clone(),
            self.store.clone(),
            self.cancel_runs.clone(),
            self.done.0.clone(),
        );
        self.tracker.spawn(async move {
            let report = job::run_recorded(&cfg, &ctx, &store, origin, nominal, &cancel).await;
            let _ = done.send((cfg.name, report.outcome));
        });
    }

    /// Stops firing, gives running jobs their grace, then cancels what is left.
    async fn stop(self) {
        self.tracker.close();
        let grace = self.ctx.config.agent.shutdown_grace;
        if !self.tracker.is_empty() {
            tracing::info!(running = self.tracker.len(), grace = ?grace, "waiting for running jobs");
        }
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tracker.len(),
                "grace time over; cancelling running jobs"
            );
            self.cancel_runs.cancel();
            if tokio::time::timeout(CANCEL_WAIT, self.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("runs did not stop after cancellation");
            }
        }
    }
}
