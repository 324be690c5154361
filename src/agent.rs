//! `tidegate run`: wires the parts from a validated configuration, tells systemd when
//! it is ready, reloads on SIGHUP and stops cleanly on SIGTERM/SIGINT.
//!
//! Invariants: start-up is the first reload (the same load-validate-apply path runs at
//! boot and on SIGHUP); a configuration is applied whole or not at all; a broken file
//! never stops the agent while a last good configuration exists. The watchdog is fed
//! only while the scheduler loop ticks and the database writer answers. With `[mqtt]`
//! the broker connection starts beside the scheduler and never delays readiness
//! (offline is normal); what arrives from it is served by [`serve_inbound`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigErrors, Source};
use crate::health::{ConfigStatus, Health};
use crate::job::JobContext;
use crate::mqtt::{self, Inbound};
use crate::scheduler::{self, SchedulerHandle};
use crate::store::{self, StoreHandle};

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
    let loaded = config::load_with_fallback(config_path).map_err(AgentError::Config)?;
    let config = Arc::new(loaded.config);
    let agent = &config.agent;
    let _log_guard =
        crate::logging::init(agent.log_dir.as_deref(), agent.log_max_size, agent.log_keep)?;
    let mut config_error = None;
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
            config_error = Some(summary(errors));
        }
    }

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
    if let Some(inbound) = inbound {
        tokio::spawn(serve_inbound(inbound));
    }
    let shutdown = CancellationToken::new();
    let ctx = JobContext::with_health(
        Arc::clone(&config),
        Arc::clone(&clock),
        store.clone(),
        Arc::clone(&health),
        mqtt.clone(),
    );
    let (scheduler, scheduler_task) = scheduler::spawn_with(ctx, shutdown.clone()).await?;
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
    let watchdog = tokio::spawn(watchdog(scheduler.clone(), store.clone()));

    wait_for_stop(config_path, &config, &scheduler, &health).await?;

    tracing::info!("stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    shutdown.cancel();
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

/// Waits for SIGTERM/SIGINT, reloading the file on every SIGHUP meanwhile.
async fn wait_for_stop(
    path: &Path,
    running: &Arc<Config>,
    scheduler: &SchedulerHandle,
    health: &Health,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut running = Arc::clone(running);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                match reload(path, &running, scheduler).await {
                    Ok(new) => {
                        running = new;
                        health.set_config_error(None);
                    }
                    Err(Some(error)) => health.set_config_error(Some(error)),
                    Err(None) => {}
                }
            }
        }
    }
}

/// Loads and applies the file; on any problem the running configuration stays, and a
/// broken file's summary comes back for `config_error`.
async fn reload(
    path: &Path,
    running: &Config,
    scheduler: &SchedulerHandle,
) -> Result<Arc<Config>, Option<String>> {
    notify(&[sd_notify::NotifyState::Reloading]);
    let result = config::load(path);
    notify(&[sd_notify::NotifyState::Ready]);
    let (new, text) = match result {
        Ok(loaded) => loaded,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            let summary = summary(&errors);
            tracing::error!(config_error = %summary, "reload refused: the running configuration stays");
            return Err(Some(summary));
        }
    };
    for key in restart_only_changes(running, &new) {
        tracing::warn!(key, "this change takes effect at the next restart");
    }
    let new = Arc::new(new);
    if let Err(e) = scheduler.reconfigure(Arc::clone(&new)).await {
        tracing::error!(error = %e, "reload could not be applied");
        return Err(None);
    }
    remember_good(&new, &text);
    tracing::info!(path = %path.display(), "configuration reloaded");
    Ok(new)
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
    keys
}

pub(crate) fn remember_good(config: &Config, text: &str) {
    if let Err(e) = config::save_last_good(&config.agent.state_dir, text) {
        tracing::warn!(state_dir = %config.agent.state_dir.display(), error = %e, "cannot keep a copy of the last good configuration");
    }
}

/// Serves what arrives from the broker. Remote configuration (`config/set`) and
/// commands (`cmd/request`) are not served by this build yet: each message is logged
/// at debug level and dropped, and a retained configuration push is read again at the
/// next connect.
async fn serve_inbound(mut inbound: tokio::sync::mpsc::Receiver<Inbound>) {
    while let Some(message) = inbound.recv().await {
        match message {
            Inbound::ConfigSet { payload, retained } => {
                tracing::debug!(
                    bytes = payload.len(),
                    retained,
                    "inbound config/set dropped: remote configuration is not served yet"
                );
            }
            Inbound::Command { payload } => {
                tracing::debug!(
                    bytes = payload.len(),
                    "inbound cmd/request dropped: commands are not served yet"
                );
            }
        }
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

/// Feeds systemd's watchdog while the scheduler ticks and the writer answers.
async fn watchdog(scheduler: SchedulerHandle, store: StoreHandle) {
    let Some(limit) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = limit / 2;
    let mut last_ticks = scheduler.ticks();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let ticks = scheduler.ticks();
        let writer_ok = tokio::time::timeout(period / 2, store.call(|_| Ok(())))
            .await
            .is_ok_and(|r| r.is_ok());
        if ticks != last_ticks && writer_ok {
            notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!(
                scheduler_ticked = ticks != last_ticks,
                writer_ok,
                "no progress; withholding the watchdog ping"
            );
        }
        last_ticks = ticks;
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
