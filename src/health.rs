//! The agent's health as SPEC section 5 fixes it: the heartbeat payload, the figures
//! the retained `status` carries, and where each figure comes from.
//!
//! Invariants:
//! - A figure the agent cannot know is `null`, never invented or defaulted: CPU before
//!   a previous sample, a temperature without a sensor, a time never recorded,
//!   `started_at` while the wall clock is not trusted, and every buffer, upload and
//!   job figure when the database cannot be read (health never fails because the
//!   buffer does).
//! - Building the payload is pure ([`heartbeat_payload`]); gathering the figures
//!   ([`heartbeat`]) is one short read on the store's writer, the sampler's memory and
//!   a few /proc files.
//!
//! This module publishes nothing (that is [`crate::mqtt`]'s) and decides nothing about
//! the figures: it reports them.

mod system;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::clock::Now;
use crate::config::{Config, JobConfig};
use crate::job::JobContext;
use crate::reading::Quality;
use crate::sensor::bus::BusCounters;
use crate::sensor::sampler::LastRead;
use crate::store::inspect::{self, Stats};
use crate::store::jobs::{self, JobRecord, Lifecycle};
use crate::store::upload::{self, UploadStatus};
use crate::time::format_utc;
pub use system::{Probe, SystemFigures};

/// The agent's version, as status and heartbeat report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which configuration the agent runs: the remote overlay's version (0 while none is
/// applied) and, while the file is broken, why (SPEC section 8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigStatus {
    pub version: u64,
    pub error: Option<String>,
}

/// What lives as long as the agent and feeds both status and heartbeat: when it
/// started, which configuration it runs, and the system probe's memory between two
/// heartbeats. Shared by the agent (which updates the configuration status), the MQTT
/// task (which republishes status when it changes) and the heartbeat job.
pub struct Health {
    /// Monotonic time of the start.
    started: Duration,
    config: watch::Sender<ConfigStatus>,
    probe: Mutex<Probe>,
}

impl Health {
    pub fn new(start: Now, config: ConfigStatus) -> Health {
        Health {
            started: start.mono,
            config: watch::Sender::new(config),
            probe: Mutex::new(Probe::new()),
        }
    }

    pub fn config(&self) -> ConfigStatus {
        self.config.borrow().clone()
    }

    /// Records which configuration runs now; status is republished when it changed.
    pub fn set_config(&self, status: ConfigStatus) {
        self.config.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    /// Keeps the overlay version, changes only the error.
    pub fn set_config_error(&self, error: Option<String>) {
        let version = self.config().version;
        self.set_config(ConfigStatus { version, error });
    }

    /// Wakes whenever [`Health::set_config`] changed something.
    pub fn watch_config(&self) -> watch::Receiver<ConfigStatus> {
        self.config.subscribe()
    }

    pub fn uptime(&self, now: &Now) -> Duration {
        now.mono.saturating_sub(self.started)
    }

    /// The start on the wall clock, known only while that clock is trusted (and then
    /// right even if the clock was stepped since).
    pub fn started_at(&self, now: &Now) -> Option<DateTime<Utc>> {
        now.trusted.then(|| now.wall_at(self.started))
    }

    fn sample_system(&self, state_dir: &std::path::Path) -> SystemFigures {
        self.probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(state_dir)
    }
}

/// The retained `status` while connected (SPEC section 5).
pub fn status_online(health: &Health, now: &Now) -> Value {
    let config = health.config();
    json!({
        "state": "online",
        "version": VERSION,
        "config_version": config.version,
        "started_at": health.started_at(now).map(format_utc),
        "config_error": config.error,
    })
}

/// What a job looks like in `jobs --json` and in the heartbeat: disabled in the
/// configuration, running, or its persisted lifecycle.
pub fn job_state(job: &JobConfig, record: Option<&JobRecord>) -> &'static str {
    match record {
        _ if !job.enabled => "disabled",
        Some(r) if r.running => "running",
        Some(r) => r.state.as_str(),
        None => Lifecycle::Active.as_str(),
    }
}

/// Every figure of one heartbeat, gathered.
#[derive(Debug, Clone)]
pub struct Figures {
    pub now: Now,
    pub uptime: Duration,
    pub config: ConfigStatus,
    pub system: SystemFigures,
    /// `None` when the database could not be read.
    pub store: Option<StoreFigures>,
    /// Each configured job with what the store knows of it.
    pub jobs: Vec<(JobConfig, Option<JobRecord>)>,
    /// Each enabled sensor, in configuration order.
    pub sensors: Vec<SensorFigure>,
    /// Each configured bus and its counters (`None`: nothing known).
    pub buses: Vec<(String, Option<BusCounters>)>,
}

/// An enabled sensor and what its reads left.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorFigure {
    pub id: String,
    pub unit: Option<String>,
    /// `None` until it is first read.
    pub last: Option<LastRead>,
}

impl SensorFigure {
    fn is(&self, quality: Quality) -> bool {
        self.last.is_some_and(|l| l.quality == quality)
    }
}

/// What the heartbeat reads from the database.
#[derive(Debug, Clone)]
pub struct StoreFigures {
    pub buffer: Stats,
    pub upload: UploadStatus,
}

/// Gathers the figures for a heartbeat now.
pub async fn heartbeat(ctx: &JobContext) -> Figures {
    let system = ctx.health.sample_system(&ctx.config.agent.state_dir);
    gather(ctx, system).await
}

/// Gathers every figure now but the system's, which the caller read: the heartbeat
/// its CPU share since the last heartbeat, a metrics scrape without one.
pub async fn gather(ctx: &JobContext, system: SystemFigures) -> Figures {
    let now = ctx.clock.now();
    let config = &ctx.config;
    let read = ctx
        .store
        .call(|c| Ok((inspect::stats(c)?, upload::status(c)?, jobs::all(c)?)))
        .await;
    let (store, mut records) = match read {
        Ok((buffer, upload, records)) => (Some(StoreFigures { buffer, upload }), records),
        Err(error) => {
            tracing::warn!(%error, "heartbeat: cannot read the buffer's figures; they are null");
            (None, Vec::new())
        }
    };
    let jobs = config
        .jobs
        .iter()
        .map(|job| {
            let at = records.iter().position(|r| r.name == job.name);
            (job.clone(), at.map(|i| records.swap_remove(i)))
        })
        .collect();
    let sensors = sensor_figures(config, ctx.sampler.last_reads());
    let counters = ctx.sampler.counters();
    let buses = config
        .buses
        .iter()
        .map(|b| (b.name.clone(), counters.get(&b.name).cloned()))
        .collect();
    Figures {
        now,
        uptime: ctx.health.uptime(&now),
        config: ctx.health.config(),
        system,
        store,
        jobs,
        sensors,
        buses,
    }
}

/// Each enabled sensor of `config` with its last read.
fn sensor_figures(
    config: &Config,
    mut last: std::collections::HashMap<String, LastRead>,
) -> Vec<SensorFigure> {
    config
        .sensors
        .iter()
        .filter(|s| s.enabled)
        .map(|s| SensorFigure {
            id: s.id.clone(),
            unit: s.unit.clone(),
            last: last.remove(&s.id),
        })
        .collect()
}

/// The heartbeat of SPEC section 5, every key present, unknown figures `null`.
pub fn heartbeat_payload(f: &Figures) -> Value {
    let time = |t: Option<DateTime<Utc>>| t.map(format_utc);
    let buffer = f.store.as_ref().map(|s| &s.buffer);
    let upload = f.store.as_ref().map(|s| &s.upload);
    let jobs: Map<String, Value> = f
        .jobs
        .iter()
        .map(|(job, record)| {
            let r = record.as_ref();
            let known = f.store.is_some();
            let count = |n: fn(&JobRecord) -> u64| known.then(|| r.map_or(0, n));
            let entry = json!({
                "state": known.then(|| job_state(job, r)),
                "last_outcome": r.and_then(|r| r.last_outcome.clone()),
                "last_run": time(r.and_then(|r| r.last_start)),
                "next_run": time(r.and_then(|r| r.next_due)),
                "runs": count(|r| r.runs),
                "failures": count(|r| r.failures),
                "missed": count(|r| r.missed),
            });
            (job.name.clone(), entry)
        })
        .collect();
    let buses: Map<String, Value> = f
        .buses
        .iter()
        .map(|(name, c)| {
            let c = c.as_ref();
            let entry = json!({
                "requests": c.map(|c| c.requests),
                "timeouts": c.map(|c| c.timeouts),
                "crc_errors": c.map(|c| c.crc_errors),
                "exceptions": c.map(|c| c.exceptions),
                "last_good_read": time(c.and_then(|c| c.last_good_read)),
            });
            (name.clone(), entry)
        })
        .collect();
    let s = &f.system;
    json!({
        "ts": format_utc(f.now.wall),
        "uptime_s": f.uptime.as_secs(),
        "version": VERSION,
        "config_version": f.config.version,
        "config_error": f.config.error,
        "clock": if f.now.trusted { "trusted" } else { "untrusted" },
        "system": {
            "cpu_pct": s.cpu_pct,
            "mem_used_bytes": s.mem_used_bytes,
            "mem_total_bytes": s.mem_total_bytes,
            "disk_free_bytes": s.disk_free_bytes,
            "load1": s.load1,
            "temp_c": s.temp_c,
        },
        "buffer": {
            "pending": buffer.map(|b| b.pending),
            "oldest_pending_ts": time(buffer.and_then(|b| b.oldest_pending)),
            "dropped_total": buffer.map(|b| b.dropped_total),
            "dead_letter": buffer.map(|b| b.dead_letter),
            "db_bytes": buffer.and_then(|b| b.db_bytes),
            "epoch": buffer.map(|b| b.epoch.clone()),
        },
        "upload": {
            "last_success_ts": time(upload.and_then(|u| u.last_ok_ms).and_then(crate::time::from_millis)),
            "last_error": upload.and_then(|u| u.last_error.clone()),
            "consecutive_failures": upload.map(|u| u.consecutive_failures),
        },
        "jobs": jobs,
        "sensors": {
            "good": f.sensors.iter().filter(|s| s.is(Quality::Good)).count(),
            "bad": f.sensors.iter().filter(|s| s.is(Quality::Bad)).map(|s| &s.id).collect::<Vec<_>>(),
        },
        "buses": buses,
    })
}

#[cfg(test)]
pub(crate) mod tests;
