//! `tidegate run`: wires the parts from a validated configuration, tells systemd when
//! it is ready, reloads on SIGHUP and stops cleanly on SIGTERM/SIGINT.
//!
//! Invariants: start-up is the first reload (the same load-validate-apply path runs at
//! boot and on SIGHUP); a configuration is applied whole or not at all; a broken file
//! never stops the agent while a last good configuration exists. The watchdog is fed
//! only while the scheduler loop ticks and the database writer answers. With `[mqtt]`
//! the broker connection starts beside the scheduler and never delays readiness
//! (offline is normal); what arrives from it is served by [`serve`] through the
//! control plane.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigErrors, Severity, Source};
use crate::control::{self, Control, Outbound};
use crate::event::{Event, Events, Kind};
use crate::health::{ConfigStatus, Health};
use crate::job::JobContext;
use crate::mqtt::{self, Inbound};
use crate::remote::{ConfigState, Status};
use crate::scheduler;
use crate::store::{self, StoreHandle};
use crate::watchdog::Watchdog;

/// The whole stop must take less than this (SPEC section 8), whatever the jobs do.
const STOP_LIMIT: Duration = Duration::from_secs(9);
/// The part of [`STOP_LIMIT`] kept for leaving the broker cleanly.
const MQTT_STOP_LIMIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No valid configuration at all: exit 2.
    #[error("{0}")]
    Config(ConfigErrors),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<(), AgentError> {
    // First, so that a SIGTERM or SIGHUP during start-up waits for `serve` instead of
    // killing the process with the signal's default action.
    let signals = Signals::install()?;
    let loaded = config::load_with_fallback(config_path).map_err(AgentError::Config)?;
    let config = Arc::new(loaded.config);
    let agent = &config.agent;
    let _log_guard =
        crate::logging::init(agent.log_dir.as_deref(), agent.log_max_size, agent.log_keep)?;
    let mut file_error = None;
    match &loaded.source {
        Source::File => remember_good(&config, &loaded.text),
        Source::LastGood { errors } => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(
                state_dir = %agent.state_dir.display(),
                "configuration file is broken; running on the last good configuration until it is fixed"
            );
            file_error = Some(summary(errors));
        }
    }
    // The file (or its last good copy) with the remote overlay laid over it.
    let start = control::start(&loaded.text, &config_path.display().to_string(), file_error)
        .map_err(AgentError::Config)?;
    let answers = start.answers.clone();
    let config = Arc::new(start.config.clone());
    let agent = &config.agent;
    let config_error = start.file_error.clone().or(start.overlay_error.clone());

    // A corrupt database is moved aside and replaced here, loudly, rather than
    // failing every start: a crash loop would stop the pond's data altogether.
    let conn = store::recover::open_checked(&agent.state_dir)?.conn;
    let epoch = store::epoch(&conn)?;
    let store = StoreHandle::spawn(conn);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(agent.clock));
    let health = Arc::new(Health::new(
        clock.now(),
        ConfigStatus {
            version: 0,
            error: config_error.clone(),
        },
    ));
    let (mqtt, inbound) = config
        .mqtt
        .as_ref()
        .map(|m| mqtt::spawn(m, &agent.id, Arc::clone(&health), Arc::clone(&clock)))
        .unzip();
    let shutdown = CancellationToken::new();
    let ctx = JobContext::with_health(
        Arc::clone(&config),
        Arc::clone(&clock),
        store.clone(),
        Arc::clone(&health),
        mqtt.clone(),
    );
    let events = ctx.events.clone();
    let forwarder = mqtt
        .clone()
        .map(|m| tokio::spawn(crate::event::forward(events.clone(), m)));
    let (scheduler, scheduler_task) = scheduler::spawn_with(ctx, shutdown.clone()).await?;
    let metrics = match &config.metrics {
        Some(m) => crate::metrics::start(m.listen, scheduler.clone(), shutdown.clone()).await,
        None => None,
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        id = %agent.id,
        state_dir = %agent.state_dir.display(),
        epoch = %epoch,
        jobs = config.jobs.len(),
        mqtt = config.mqtt.as_ref().map(|m| config::mask_url(&m.url)),
        config_error = config_error.as_deref(),
        "agent started"
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    let watchdog = Watchdog::from_env().map(|w| {
        tokio::spawn(w.run(scheduler.clone(), store.clone(), || {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }))
    });

    let out = Arc::new(Published {
        mqtt: mqtt.clone(),
        health: Arc::clone(&health),
        events,
        clock: Arc::clone(&clock),
    });
    let mut control = Control::new(
        config_path,
        start,
        Arc::clone(&config),
        scheduler.clone(),
        store.clone(),
        Arc::clone(&clock),
        out,
    );
    control.started(&answers).await;
    serve(&mut control, inbound, signals).await;

    tracing::info!("stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // Events not yet handed over stay queued in the database for the next start.
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    shutdown.cancel();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if tokio::time::timeout(STOP_LIMIT - MQTT_STOP_LIMIT, scheduler_task)
        .await
        .is_err()
    {
        tracing::error!("scheduler did not stop in time");
    }
    if let Some(mqtt) = &mqtt {
        mqtt.stop(MQTT_STOP_LIMIT).await;
    }
    if let Err(e) = store
        .call(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?))
        .await
    {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The signals `serve` answers, installed before anything else.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Serves SIGHUP, `config/set`, `cmd/request` and the probation of an applied overlay
/// until SIGTERM or SIGINT.
async fn serve(
    control: &mut Control,
    mut inbound: Option<tokio::sync::mpsc::Receiver<Inbound>>,
    mut signals: Signals,
) {
    loop {
        let probation = control.probation_check();
        tokio::select! {
            _ = signals.term.recv() => return,
            _ = signals.int.recv() => return,
            _ = signals.hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                control.reload().await;
                notify(&[sd_notify::NotifyState::Ready]);
            }
            message = next(&mut inbound) => match message {
                Some(Inbound::ConfigSet { payload, retained }) => control.push(&payload, retained).await,
                Some(Inbound::Command { payload }) => control.command(&payload).await,
                None => inbound = None,
            },
            () = after(probation) => control.check_probation().await,
        }
    }
}

/// The next inbound message; never, without a broker.
async fn next(inbound: &mut Option<tokio::sync::mpsc::Receiver<Inbound>>) -> Option<Inbound> {
    match inbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps for `wait`; never, without one.
async fn after(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// What the control plane says, said over MQTT (when there is a broker) and in the
/// status the heartbeat and `status` carry.
struct Published {
    mqtt: Option<mqtt::MqttHandle>,
    health: Arc<Health>,
    events: Events,
    clock: Arc<dyn Clock>,
}

impl Outbound for Published {
    fn config_state(&self, state: &ConfigState) {
        // Every push is answered once, where it was decided: the answer is the event.
        let (kind, severity) = match state.status {
            Status::Applied => (Kind::ConfigApplied, Severity::Info),
            Status::Rejected => (Kind::ConfigRejected, Severity::Warning),
            Status::RolledBack => (Kind::ConfigRolledBack, Severity::Warning),
        };
        self.events.raise(Event::new(
            self.clock.now().wall,
            kind,
            severity,
            state
                .version
                .map_or_else(|| "null".to_string(), |v| v.to_string()),
            state
                .error
                .clone()
                .unwrap_or_else(|| format!("configuration {}", state.status.name())),
        ));
        if let Some(mqtt) = &self.mqtt
            && let Ok(value) = serde_json::from_str(&state.to_json())
        {
            // A failure is counted and logged by the handle; the retained state is
            // published again with the next answer.
            let _ = mqtt.publish_config_state(&value);
        }
    }

    fn cmd_response(&self, json: &str) {
        if let Some(mqtt) = &self.mqtt
            && let Ok(value) = serde_json::from_str(json)
        {
            let _ = mqtt.publish_cmd_response(&value);
        }
    }

    fn status(&self, config_version: u64, config_error: Option<&str>) {
        self.health.set_config(ConfigStatus {
            version: config_version,
            error: config_error.map(str::to_owned),
        });
    }
}

/// Keys the running agent cannot change in place.
pub(crate) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.agent, &new.agent);
    let mut keys = Vec::new();
    if a.id != b.id {
        keys.push("agent.id");
    }
    if a.state_dir != b.state_dir {
        keys.push("agent.state_dir");
    }
    if a.log_dir != b.log_dir || a.log_max_size != b.log_max_size || a.log_keep != b.log_keep {
        keys.push("agent.log_dir");
    }
    if a.clock != b.clock {
        keys.push("agent.clock");
    }
    if old.mqtt != new.mqtt {
        keys.push("mqtt");
    }
    if old.metrics != new.metrics {
        keys.push("metrics");
    }
    keys
}

pub(crate) fn remember_good(config: &Config, text: &str) {
    if let Err(e) = config::save_last_good(&config.agent.state_dir, text) {
        tracing::warn!(state_dir = %config.agent.state_dir.display(), error = %e, "cannot keep a copy of the last good configuration");
    }
}

/// One line for `config_error`: the first problem and how many more there are.
pub fn summary(errors: &ConfigErrors) -> String {
    match errors.0.as_slice() {
        [] => "invalid configuration".to_string(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The state directory a CLI command should use.
pub fn state_dir(config: &Config) -> PathBuf {
    config.agent.state_dir.clone()
}
