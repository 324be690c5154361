//! Events: what an operator must hear about, raised once where it happens and sent to
//! `{topic_prefix}/event` (SPEC section 9).
//!
//! An event is queued in `buffer.db` the moment it is raised ([`Events::raise`]), so
//! it waits out a broker outage and a restart; [`forward`] sends the queue oldest
//! first whenever the broker is connected and deletes what it handed over. The queue
//! holds at most [`MAX_QUEUED`] events: past that the oldest go, and are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::config::Severity;
use crate::mqtt::{MqttHandle, PublishError};
use crate::store::StoreHandle;
use crate::store::events as event_store;
use crate::time::format_utc;

/// Events kept while the broker is away; the oldest beyond this are dropped.
pub const MAX_QUEUED: usize = 1000;

/// Events sent per database read.
const BATCH: usize = 50;

/// How often the forwarder looks again without being woken (a reconnect wakes it
/// no sooner than this).
const RECHECK: Duration = Duration::from_secs(2);

/// The first wait after the MQTT client would take no more; doubled up to [`RECHECK`].
const FIRST_RETRY: Duration = Duration::from_millis(20);

/// The kinds SPEC section 9 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    JobFailed,
    SensorBad,
    SensorRecovered,
    BusDown,
    BusUp,
    BufferHigh,
    BufferDropped,
    UploadPaused,
    ClockTrusted,
    ConfigApplied,
    ConfigRejected,
    ConfigRolledBack,
    AlarmRaised,
    AlarmCleared,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JobFailed => "job_failed",
            Kind::SensorBad => "sensor_bad",
            Kind::SensorRecovered => "sensor_recovered",
            Kind::BusDown => "bus_down",
            Kind::BusUp => "bus_up",
            Kind::BufferHigh => "buffer_high",
            Kind::BufferDropped => "buffer_dropped",
            Kind::UploadPaused => "upload_paused",
            Kind::ClockTrusted => "clock_trusted",
            Kind::ConfigApplied => "config_applied",
            Kind::ConfigRejected => "config_rejected",
            Kind::ConfigRolledBack => "config_rolled_back",
            Kind::AlarmRaised => "alarm_raised",
            Kind::AlarmCleared => "alarm_cleared",
        }
    }
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// One event as it is queued and sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: DateTime<Utc>,
    pub kind: Kind,
    pub severity: Severity,
    /// The job, sensor, bus or alarm id; the version for config events.
    pub subject: String,
    pub message: String,
}

impl Event {
    pub fn new(
        ts: DateTime<Utc>,
        kind: Kind,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Event {
        Event {
            ts,
            kind,
            severity,
            subject: subject.into(),
            message: message.into(),
        }
    }

    /// The payload on `{prefix}/event`.
    pub fn to_json(&self) -> Value {
        json!({
            "ts": format_utc(self.ts),
            "kind": self.kind.as_str(),
            "severity": severity_name(self.severity),
            "subject": self.subject,
            "message": self.message,
        })
    }
}

/// Where events are raised: queues them and wakes the forwarder. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    /// `None` without a broker to send to: events are only logged.
    store: Option<StoreHandle>,
    wake: Arc<Notify>,
    /// Whether the queue may hold events: set by every raise (and at the start, for
    /// events queued before it), cleared when the forwarder takes a look, so an idle
    /// agent never reads the queue just to find it empty.
    maybe_queued: Arc<AtomicBool>,
}

impl Events {
    /// Events queued in `store` for [`forward`].
    pub fn queued(store: StoreHandle) -> Events {
        Events {
            store: Some(store),
            wake: Arc::new(Notify::new()),
            maybe_queued: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Events that are only logged (no `[mqtt]`, or a CLI command).
    pub fn log_only() -> Events {
        Events {
            store: None,
            wake: Arc::new(Notify::new()),
            maybe_queued: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Logs `event` and queues it (in order with every other write).
    pub fn raise(&self, event: Event) {
        tracing::info!(
            kind = event.kind.as_str(),
            subject = %event.subject,
            severity = severity_name(event.severity),
            "event: {}",
            event.message
        );
        if let Some(store) = &self.store {
            store.submit("cannot queue an event", move |c| {
                event_store::push(c, &event, MAX_QUEUED)
            });
            self.maybe_queued.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }
}

/// Sends queued events to the broker, oldest first, for as long as it runs.
pub async fn forward(events: Events, mqtt: MqttHandle) {
    let Some(store) = events.store.clone() else {
        return;
    };
    let mut retry = FIRST_RETRY;
    loop {
        // Taken before the read: an event raised meanwhile sets it again.
        if mqtt.connected() && events.maybe_queued.swap(false, Ordering::AcqRel) {
            match send_queued(&store, &mqtt).await {
                // All of it went: nothing waits until the next raise.
                Ok(Sent::All) => retry = FIRST_RETRY,
                Ok(Sent::Some) => {
                    events.maybe_queued.store(true, Ordering::Release);
                    retry = FIRST_RETRY;
                    continue;
                }
                // The client's queue is full (a burst bigger than it): while connected
                // it drains in milliseconds, so look again soon, then less often.
                Ok(Sent::Stuck) => {
                    events.maybe_queued.store(true, Ordering::Release);
                    let _ = tokio::time::timeout(retry, events.wake.notified()).await;
                    retry = (retry * 2).min(RECHECK);
                    continue;
                }
                Err(error) => {
                    events.maybe_queued.store(true, Ordering::Release);
                    tracing::warn!(%error, "cannot send queued events");
                }
            }
        }
        let _ = tokio::time::timeout(RECHECK, events.wake.notified()).await;
    }
}

/// How much of the queue one [`send_queued`] handed over.
enum Sent {
    /// Everything that was queued.
    All,
    /// A full batch: more may wait.
    Some,
    /// The client would not take more (its queue full, or gone): try again later.
    Stuck,
}

/// Hands one batch to the MQTT client and deletes what it took.
async fn send_queued(store: &StoreHandle, mqtt: &MqttHandle) -> Result<Sent, String> {
    let batch = store
        .call(|c| event_store::oldest(c, BATCH))
        .await
        .map_err(|e| e.to_string())?;
    let mut done = Vec::new();
    let mut stuck = false;
    for (id, event) in &batch {
        match mqtt.offer_event(&event.to_json()) {
            Ok(()) => {}
            // It can never be sent: skip it rather than block the queue behind it.
            Err(error @ PublishError::TooLarge { .. }) => {
                tracing::error!(%error, kind = event.kind.as_str(), "event dropped");
            }
            Err(_) => {
                stuck = true;
                break;
            }
        }
        done.push(*id);
    }
    let full = batch.len() == BATCH;
    if !done.is_empty() {
        store
            .call(move |c| event_store::delete(c, &done))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(if stuck {
        Sent::Stuck
    } else if full {
        Sent::Some
    } else {
        Sent::All
    })
}
