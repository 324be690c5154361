//! The agent's control plane: SIGHUP reloads, `config/set` pushes and `cmd/request`
//! commands, and what follows from a push (live apply, probation, rollback), on one
//! task that owns the running configuration.
//!
//! Invariants: the running configuration is always the local file (or its last good
//! copy) with the applied overlay laid over it, validated whole; a configuration is
//! persisted before it is applied and the persisted state is put back if applying
//! fails, so a restart never finds a half-applied push; every push is answered on
//! `config/state` except a retained one already answered; an overlay on probation is
//! judged from what the buffer and the uploader recorded, never from a guess. This
//! module does not know MQTT: what it says goes through [`Outbound`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::command::{self, Action};
use crate::config::{self, Config, ConfigErrors};
use crate::remote::{
    self, Baseline, ConfigState, Decision, FileConfig, Probation, ReadCounts, RemoteState, Verdict,
};
use crate::scheduler::SchedulerHandle;
use crate::store::StoreHandle;
use crate::store::upload::UploadStatus;

/// Readings read back to judge a bus before and during probation.
const PROBATION_READINGS: i64 = 5_000;

/// What the control plane says to the world: `config/state`, `cmd/response` and the
/// retained `status` (through MQTT in the agent; recorded in tests).
pub trait Outbound: Send + Sync {
    fn config_state(&self, state: &ConfigState);
    fn cmd_response(&self, json: &str);
    /// The running configuration changed: `config_version` and `config_error` as the
    /// status and the heartbeat should now say.
    fn status(&self, config_version: u64, config_error: Option<&str>);
}

/// An overlay on probation and what the buffer and the uploader looked like when it
/// was applied.
struct OnProbation {
    probation: Probation,
    /// The newest seq when the overlay was applied: readings after it are its own.
    seq_at_apply: i64,
    /// The upload status when it was applied, to tell new runs from old ones.
    upload_at_apply: UploadStatus,
}

pub struct Control {
    path: PathBuf,
    file: FileConfig,
    remote: RemoteState,
    running: Arc<Config>,
    /// Why the file is not what runs (it is broken, running on the last good copy).
    file_error: Option<String>,
    /// Why the persisted overlay is not laid over the file.
    overlay_error: Option<String>,
    scheduler: SchedulerHandle,
    store: StoreHandle,
    clock: Arc<dyn Clock>,
    out: Arc<dyn Outbound>,
    probation: Option<OnProbation>,
}

/// The configuration to start with: the file (or its last good copy) with the
/// persisted overlay laid over it, and what to say about it once the agent runs.
pub struct Start {
    pub config: Config,
    pub file: FileConfig,
    pub remote: RemoteState,
    pub file_error: Option<String>,
    pub overlay_error: Option<String>,
    /// `config/state` answers owed from start-up (a rollback at the third start, an
    /// overlay that no longer fits the file).
    pub answers: Vec<ConfigState>,
}

/// Lays the persisted overlay over the loaded file text, counting this start for an
/// overlay on probation (rolled back at the third).
pub fn start(text: &str, origin: &str, file_error: Option<String>) -> Result<Start, ConfigErrors> {
    let file = FileConfig::new(text, origin)?;
    let state_dir = file.config().agent.state_dir.clone();
    let loaded = RemoteState::load(&state_dir).unwrap_or_else(|e| {
        tracing::error!(error = %e, "remote configuration state unreadable; running without an overlay until the next push");
        RemoteState::default()
    });
    let (remote, rolled_back) = loaded.restarted();
    let mut answers = Vec::new();
    if let Some(reason) = rolled_back {
        let version = loaded.config_version();
        tracing::error!(version, %reason, "remote configuration rolled back at start-up");
        answers.push(ConfigState::rolled_back(version, &reason, None));
    }
    if remote != loaded {
        save(&remote, &state_dir);
    }
    let (config, overlay_error) = match remote::effective(&file, &remote) {
        Ok(config) => (config, None),
        Err(refused) => {
            tracing::error!(version = refused.version, error = %refused.error, "the applied remote overlay does not fit the local file; running on the file alone");
            answers.push(ConfigState::rejected(Some(refused.version), &refused.error));
            (file.config().clone(), Some(refused.error))
        }
    };
    Ok(Start {
        config,
        file,
        remote,
        file_error,
        overlay_error,
        answers,
    })
}

impl Control {
    pub fn new(
        path: &Path,
        start: Start,
        running: Arc<Config>,
        scheduler: SchedulerHandle,
        store: StoreHandle,
        clock: Arc<dyn Clock>,
        out: Arc<dyn Outbound>,
    ) -> Control {
        Control {
            path: path.to_path_buf(),
            file: start.file,
            remote: start.remote,
            running,
            file_error: start.file_error,
            overlay_error: start.overlay_error,
            scheduler,
            store,
            clock,
            out,
            probation: None,
        }
    }

    /// The configuration that runs.
    pub fn running(&self) -> &Arc<Config> {
        &self.running
    }

    /// `config_version` for status and heartbeat: 0 while no overlay is laid over.
    pub fn config_version(&self) -> u64 {
        if self.overlay_error.is_some() {
            0
        } else {
            self.remote.config_version()
        }
    }

    /// `config_error` for status and heartbeat: null while the file and its overlay
    /// are valid.
    pub fn config_error(&self) -> Option<String> {
        self.file_error
            .clone()
            .or_else(|| self.overlay_error.clone())
    }

    /// Answers owed from start-up, and probation resumed for an overlay applied before
    /// a restart (its window starts again).
    pub async fn started(&mut self, answers: &[ConfigState]) {
        for answer in answers {
            self.out.config_state(answer);
        }
        if let Some(version) = self.remote.on_probation()
            && self.overlay_error.is_none()
        {
            self.begin_probation(version, Vec::new()).await;
        }
        self.announce();
    }

    fn announce(&self) {
        self.out
            .status(self.config_version(), self.config_error().as_deref());
    }

    /// SIGHUP: the file again, with the overlay over it. A broken file changes nothing.
    pub async fn reload(&mut self) {
        let origin = self.path.display().to_string();
        let loaded = config::load(&self.path).and_then(|(_, text)| {
            let file = FileConfig::new(&text, &origin)?;
            Ok((file, text))
        });
        let (file, text) = match loaded {
            Ok(loaded) => loaded,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                let summary = crate::agent::summary(&errors);
                tracing::error!(config_error = %summary, "reload refused: the running configuration stays");
                self.file_error = Some(summary);
                self.announce();
                return;
            }
        };
        let (config, overlay_error) = match remote::effective(&file, &self.remote) {
            Ok(config) => (config, None),
            Err(refused) => {
                tracing::error!(version = refused.version, error = %refused.error, "the applied remote overlay does not fit the new file; running on the file alone");
                (file.config().clone(), Some(refused.error))
            }
        };
        for key in crate::agent::restart_only_changes(&self.running, &config) {
            tracing::warn!(key, "this change takes effect at the next restart");
        }
        let config = Arc::new(config);
        if let Err(e) = self.scheduler.reconfigure(Arc::clone(&config)).await {
            tracing::error!(error = %e, "reload could not be applied");
            return;
        }
        crate::agent::remember_good(&config, &text);
        self.file = file;
        self.running = config;
        self.file_error = None;
        self.overlay_error = overlay_error;
        tracing::info!(path = %self.path.display(), "configuration reloaded");
        self.announce();
    }

    /// One `config/set` delivery.
    pub async fn push(&mut self, payload: &[u8], retained: bool) {
        let key = self.hmac_key();
        let decision =
            remote::consider(payload, retained, &self.remote, &self.file, key.as_deref());
        let state_dir = self.running.agent.state_dir.clone();
        match decision {
            Decision::Ignore { version } => {
                tracing::debug!(version, "retained config/set already answered");
            }
            Decision::Reject {
                version,
                error,
                seen,
            } => {
                tracing::warn!(version, %error, "config/set rejected; nothing changed");
                if let Some(seen) = seen {
                    self.remote = self.remote.with_seen(seen);
                    save(&self.remote, &state_dir);
                }
                self.out
                    .config_state(&ConfigState::rejected(version, &error));
            }
            Decision::Apply { config, state } => {
                let version = state.config_version();
                let config = Arc::new(*config);
                // Persisted first: a crash between the two restarts on the new state,
                // which is what is about to run.
                save(&state, &state_dir);
                if let Err(e) = self.scheduler.reconfigure(Arc::clone(&config)).await {
                    let error = format!("config/set v{version}: could not be applied: {e}");
                    tracing::error!(%error, "config/set rejected");
                    self.remote = self.remote.with_seen(version);
                    save(&self.remote, &state_dir);
                    self.out
                        .config_state(&ConfigState::rejected(Some(version), &error));
                    return;
                }
                let previous = std::mem::replace(&mut self.running, Arc::clone(&config));
                self.remote = state;
                self.overlay_error = None;
                tracing::info!(version, "remote configuration applied; on probation");
                let now = self.clock.now();
                self.out.config_state(&ConfigState::applied(
                    version,
                    now.trusted.then_some(now.wall),
                ));
                self.announce();
                let changed = remote::changed_buses(&previous, &config);
                self.begin_probation(version, changed).await;
                if previous.upload != config.upload && config.upload.is_some() {
                    // Probation needs evidence about the new upload settings now, not
                    // at the next hourly run.
                    if let Err(e) = self.scheduler.run_now("upload").await {
                        tracing::debug!(error = %e, "no upload run after the push");
                    }
                }
            }
        }
    }

    fn hmac_key(&self) -> Option<Vec<u8>> {
        let path = self
            .file
            .config()
            .mqtt
            .as_ref()?
            .config_hmac_key_file
            .as_ref()?;
        match config::read_secret_file(path) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read mqtt.config_hmac_key_file: every push is refused");
                None
            }
        }
    }

    /// One `cmd/request`.
    pub async fn command(&mut self, payload: &[u8]) {
        let request = match command::parse(payload, &self.running) {
            Ok(request) => request,
            Err(refused) => {
                tracing::warn!(error = %refused.error, "cmd/request refused");
                self.out.cmd_response(&refused.response());
                return;
            }
        };
        let done = match &request.action {
            Action::RunJob(_) | Action::UploadNow => {
                self.scheduler.run_now(job_name(&request.action)).await
            }
            Action::PauseJob(job) => self.scheduler.pause(job).await,
            Action::ResumeJob(job) => self.scheduler.resume(job).await,
            Action::GetConfig => {
                self.out
                    .cmd_response(&request.ok(command::config_result(&self.running)));
                return;
            }
        };
        let response = match done {
            Ok(()) => request.done(),
            Err(e) => request.failed(&e),
        };
        tracing::info!(id = %request.id, action = ?request.action, "cmd/request done");
        self.out.cmd_response(&response);
    }

    /// When the control loop must next look at the probation, if one runs.
    pub fn probation_check(&self) -> Option<Duration> {
        self.probation.as_ref().map(|p| {
            p.probation
                .ends()
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(5))
        })
    }

    /// Gathers what happened under the overlay and, at the end of its window, keeps
    /// it or rolls it back.
    pub async fn check_probation(&mut self) {
        let Some(on) = self.probation.as_mut() else {
            return;
        };
        let seq = on.seq_at_apply;
        let observed = self
            .store
            .call(move |c| {
                let upload = crate::store::upload::status(c)?;
                let reads = reads_by_sensor(c, seq, i64::MAX)?;
                Ok((upload, reads))
            })
            .await;
        let Ok((upload, reads)) = observed else {
            return;
        };
        let mut probation = on.probation.clone();
        // Upload runs since the apply, to the URL that runs now (a run that began
        // before the push says nothing about it): a new acknowledgement, or more
        // failures.
        let url = self
            .running
            .upload
            .as_ref()
            .map(|u| crate::config::mask_url(&u.url));
        if let Some(run) = upload.run.as_ref().filter(|r| Some(&r.url) == url.as_ref())
            && on.upload_at_apply.run != upload.run
        {
            if run.delivered > 0 {
                probation.upload_finished(Ok(()));
            } else if run.failed > 0 {
                probation
                    .upload_finished(Err(upload.last_error.as_deref().unwrap_or("upload failed")));
            }
        }
        for (bus, counts) in by_bus(&self.running, &reads) {
            probation.bus_reads(&bus, counts);
        }
        match probation.verdict(Instant::now()) {
            Verdict::Pending => {}
            Verdict::Confirmed => {
                let version = probation.version();
                tracing::info!(version, "remote configuration confirmed after probation");
                self.probation = None;
                self.remote = self.remote.confirmed();
                save(&self.remote, &self.running.agent.state_dir.clone());
            }
            Verdict::RollBack(reason) => {
                self.probation = None;
                self.roll_back(probation.version(), &reason).await;
            }
        }
    }

    async fn roll_back(&mut self, version: u64, reason: &str) {
        let state = self.remote.rolled_back();
        let config = match remote::effective(&self.file, &state) {
            Ok(config) => config,
            Err(refused) => {
                tracing::error!(error = %refused.error, "the configuration to roll back to does not fit the file; running on the file alone");
                self.file.config().clone()
            }
        };
        let config = Arc::new(config);
        let state_dir = self.running.agent.state_dir.clone();
        save(&state, &state_dir);
        if let Err(e) = self.scheduler.reconfigure(Arc::clone(&config)).await {
            tracing::error!(error = %e, "rollback could not be applied");
            return;
        }
        tracing::error!(version, %reason, "remote configuration rolled back");
        self.running = config;
        self.remote = state;
        let now = self.clock.now();
        self.out.config_state(&ConfigState::rolled_back(
            version,
            reason,
            now.trusted.then_some(now.wall),
        ));
        self.announce();
    }

    /// Starts the probation of `version`: the window, and what the buffer and the
    /// uploader looked like just before.
    async fn begin_probation(&mut self, version: u64, changed_buses: Vec<String>) {
        let Some(mqtt) = self.running.mqtt.as_ref() else {
            return;
        };
        let confirm = mqtt.config_confirm;
        let baseline = self
            .store
            .call(|c| {
                let seq: i64 =
                    c.query_row("SELECT coalesce(max(seq), 0) FROM readings", [], |r| {
                        r.get(0)
                    })?;
                let upload = crate::store::upload::status(c)?;
                let reads = reads_by_sensor(c, seq - PROBATION_READINGS, seq)?;
                Ok((seq, upload, reads))
            })
            .await;
        let (seq, upload, reads) = match baseline {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the buffer for probation; the overlay is kept");
                return;
            }
        };
        // The last upload run before the apply: failing if it has failed since its
        // last acknowledgement, working if it was acknowledged, unknown if none ran.
        let upload_ok = if upload.consecutive_failures > 0 {
            Some(false)
        } else {
            upload.last_ok_ms.map(|_| true)
        };
        let baseline = Baseline {
            upload_ok,
            buses: by_bus(&self.running, &reads),
        };
        self.probation = Some(OnProbation {
            probation: Probation::start(version, Instant::now(), confirm, baseline, changed_buses),
            seq_at_apply: seq,
            upload_at_apply: upload,
        });
    }
}

fn job_name(action: &Action) -> &str {
    match action {
        Action::RunJob(job) | Action::PauseJob(job) | Action::ResumeJob(job) => job,
        Action::UploadNow => "upload",
        Action::GetConfig => "",
    }
}

/// Good and bad readings per sensor with seq in (after, up_to].
fn reads_by_sensor(
    conn: &rusqlite::Connection,
    after: i64,
    up_to: i64,
) -> Result<BTreeMap<String, ReadCounts>, crate::store::StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT sensor, quality = 'good', count(*) FROM readings
         WHERE seq > ?1 AND seq <= ?2 GROUP BY sensor, quality = 'good'",
    )?;
    let mut rows = stmt.query([after, up_to])?;
    let mut reads: BTreeMap<String, ReadCounts> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let counts = reads.entry(row.get(0)?).or_default();
        let n = u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
        if row.get::<_, bool>(1)? {
            counts.good += n;
        } else {
            counts.bad += n;
        }
    }
    Ok(reads)
}

/// Per-sensor counts summed per bus of `config`.
fn by_bus(config: &Config, reads: &BTreeMap<String, ReadCounts>) -> BTreeMap<String, ReadCounts> {
    let mut buses: BTreeMap<String, ReadCounts> = BTreeMap::new();
    for sensor in &config.sensors {
        if let Some(counts) = reads.get(&sensor.id) {
            let bus = buses.entry(sensor.bus.clone()).or_default();
            bus.good += counts.good;
            bus.bad += counts.bad;
        }
    }
    buses
}

fn save(state: &RemoteState, state_dir: &Path) {
    if let Err(e) = state.save(state_dir) {
        tracing::error!(state_dir = %state_dir.display(), error = %e, "cannot save the remote configuration state");
    }
}
