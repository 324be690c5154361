//! The broker connection of SPEC sections 5 and 8: health out, configuration pushes
//! and commands in.
//!
//! Three parts, one owner each:
//! - the event-loop task ([`run_event_loop`]) owns rumqttc's `EventLoop` and does
//!   nothing but poll it: it forwards inbound messages with `try_send`, tells the
//!   session task when a connection comes and goes, and after an error waits a
//!   full-jitter backoff ([`reconnect`]) before polling again, which reconnects;
//! - the session task ([`run_session`]) speaks for the agent on each connection: after
//!   every CONNACK it subscribes again (clean session: the broker forgot everything)
//!   and publishes the retained `online` status, republishes it when the configuration
//!   status changes, and hands the queued QoS 1 messages to the client while connected;
//! - [`MqttHandle`] is how everyone else publishes, never waiting for the broker.
//!
//! Invariants:
//! - Nothing blocks a job or the event loop. The event-loop task never publishes (an
//!   awaited publish there deadlocks once rumqttc's request queue is full). Heartbeats
//!   go straight to the client with `try_publish` while connected and are dropped and
//!   counted otherwise; QoS 1 messages wait in a bounded queue and are dropped and
//!   counted when it is full. Inbound messages are dropped and counted when the agent
//!   is behind: a configuration push is state and a retained one comes back at the
//!   next connect.
//! - Reconnects never stop. The last will is the retained `offline`; a clean stop
//!   publishes it explicitly before DISCONNECT (which makes the broker discard the
//!   will), within a bound, and never waits for a broker that is gone.
//! - A packet past a limit never wedges the client: an outgoing one is refused here
//!   before rumqttc would drop the connection over it; an incoming one costs a
//!   reconnect, and the same thing again right after subscribing holds the
//!   subscriptions back ([`reconnect`]) so status and heartbeats go on.
//!
//! This module does not read what arrives (the agent serves [`Inbound`]) and does not
//! decide what to publish or when.

pub mod options;
pub mod reconnect;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet,
    QoS, StateError,
};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::MqttConfig;
use crate::health::{self, ConfigStatus, Health};
use reconnect::{Ending, Reconnect};

/// Inbound messages waiting for the agent. Each may be up to 1 MiB.
const INBOUND_QUEUE: usize = 8;
/// QoS 1 messages waiting for a connection.
const OUTBOUND_QUEUE: usize = 32;
/// rumqttc's own request queue, between the handles and the event loop.
const REQUEST_QUEUE: usize = 32;

/// A message from the broker for the agent to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `{prefix}/config/set`; `retained` when the broker sent its retained copy on
    /// subscribing.
    ConfigSet { payload: Bytes, retained: bool },
    /// `{prefix}/cmd/request`.
    Command { payload: Bytes },
}

/// Every topic of SPEC section 5 under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub status: String,
    pub heartbeat: String,
    pub event: String,
    pub config_set: String,
    pub config_state: String,
    pub cmd_request: String,
    pub cmd_response: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        let t = |leaf: &str| format!("{prefix}/{leaf}");
        Topics {
            status: t("status"),
            heartbeat: t("heartbeat"),
            event: t("event"),
            config_set: t("config/set"),
            config_state: t("config/state"),
            cmd_request: t("cmd/request"),
            cmd_response: t("cmd/response"),
        }
    }

    /// What an incoming publish on `topic` is for the agent, if anything.
    fn route(&self, topic: &str, payload: Bytes, retained: bool) -> Option<Inbound> {
        if topic == self.config_set {
            Some(Inbound::ConfigSet { payload, retained })
        } else if topic == self.cmd_request {
            Some(Inbound::Command { payload })
        } else {
            None
        }
    }
}

/// Why a message was not handed to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    Offline,
    #[error("the outgoing queue is full")]
    QueueFull,
    #[error("{bytes} bytes is over the {limit}-byte packet limit")]
    TooLarge { bytes: usize, limit: usize },
    #[error("the MQTT client has stopped")]
    Stopped,
}

/// What the connection has done since the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStats {
    pub connected: bool,
    /// CONNACKs received.
    pub connects: u64,
    pub heartbeats_sent: u64,
    /// Heartbeats not sent: broker away or the client's queue full.
    pub heartbeats_dropped: u64,
    /// QoS 1 messages not queued: queue full or too large.
    pub messages_dropped: u64,
    /// Messages that arrived on `config/set` and `cmd/request`.
    pub inbound_received: u64,
    /// Of those, the ones dropped because the agent was behind.
    pub inbound_dropped: u64,
    /// Incoming packets over the limit (each cost a reconnect).
    pub oversize: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    heartbeats_sent: AtomicU64,
    heartbeats_dropped: AtomicU64,
    messages_dropped: AtomicU64,
    inbound_received: AtomicU64,
    inbound_dropped: AtomicU64,
    oversize: AtomicU64,
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// A QoS 1 message waiting for a connection.
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// The connection as the event loop sees it, for the session task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    /// Which CONNACK this is (1 for the first).
    generation: u64,
    up: bool,
    /// When to subscribe, if not at once.
    subscribe_at: Option<Instant>,
}

struct Tasks {
    event_loop: JoinHandle<()>,
    session: JoinHandle<()>,
    cancel: CancellationToken,
}

struct Shared {
    client: AsyncClient,
    topics: Topics,
    remote_config: bool,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    connected: AtomicBool,
    /// Set by [`MqttHandle::stop`]: an error ends the event loop instead of a reconnect.
    stopping: AtomicBool,
    /// Whether the last status published had a trusted clock (a `started_at`).
    status_trusted: AtomicBool,
    /// Asks the session task to publish the status again.
    republish: tokio::sync::Notify,
    counters: Counters,
    outbound: mpsc::Sender<Message>,
    tasks: Mutex<Option<Tasks>>,
}

/// The clonable side of the connection.
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

/// Starts the connection's tasks and returns at once: the broker being away is
/// normal, and the tasks keep trying. Must be called inside the runtime.
pub fn spawn(
    config: &MqttConfig,
    client_id: &str,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
) -> (MqttHandle, mpsc::Receiver<Inbound>) {
    // The real options (files read, TLS built) replace these before every attempt.
    let placeholder = MqttOptions::new(client_id, "", 0);
    let (client, mut event_loop) = AsyncClient::new(placeholder, REQUEST_QUEUE);
    let mut network = NetworkOptions::new();
    network.set_connection_timeout(options::CONNECT_TIMEOUT_SECS);
    // Small messages, each worth sending now: without this, Nagle's algorithm holds an
    // answer until the broker's delayed ACK of the previous one (some 40 ms each).
    network.set_tcp_nodelay(true);
    event_loop.set_network_options(network);

    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (link_tx, link_rx) = watch::channel(Link {
        generation: 0,
        up: false,
        subscribe_at: None,
    });
    let shared = Arc::new(Shared {
        client,
        topics: Topics::new(&config.topic_prefix),
        remote_config: config.remote_config,
        health: Arc::clone(&health),
        clock,
        connected: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        status_trusted: AtomicBool::new(false),
        republish: tokio::sync::Notify::new(),
        counters: Counters::default(),
        outbound: outbound_tx,
        tasks: Mutex::new(None),
    });
    let cancel = CancellationToken::new();
    let event_loop = tokio::spawn(run_event_loop(
        event_loop,
        config.clone(),
        client_id.to_string(),
        Arc::clone(&shared),
        inbound_tx,
        link_tx,
        cancel.clone(),
    ));
    let session = tokio::spawn(run_session(
        Arc::clone(&shared),
        link_rx,
        outbound_rx,
        health.watch_config(),
    ));
    *shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = Some(Tasks {
        event_loop,
        session,
        cancel,
    });
    (MqttHandle { shared }, inbound_rx)
}

impl MqttHandle {
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    pub fn stats(&self) -> MqttStats {
        let c = &self.shared.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MqttStats {
            connected: self.connected(),
            connects: n(&c.connects),
            heartbeats_sent: n(&c.heartbeats_sent),
            heartbeats_dropped: n(&c.heartbeats_dropped),
            messages_dropped: n(&c.messages_dropped),
            inbound_received: n(&c.inbound_received),
            inbound_dropped: n(&c.inbound_dropped),
            oversize: n(&c.oversize),
        }
    }

    /// Publishes a heartbeat (QoS 0) if the broker is there and the client can take
    /// it now; otherwise it is dropped and counted: a late heartbeat is a wrong one.
    pub fn publish_heartbeat(&self, payload: &Value) -> Result<(), PublishError> {
        let s = &self.shared;
        let result = self.try_heartbeat(payload);
        match result {
            Ok(()) => bump(&s.counters.heartbeats_sent),
            Err(_) => bump(&s.counters.heartbeats_dropped),
        };
        // A status published before the clock was trusted had no `started_at`.
        if self.connected() && !s.status_trusted.load(Ordering::Relaxed) && s.clock.now().trusted {
            s.status_trusted.store(true, Ordering::Relaxed);
            s.republish.notify_one();
        }
        result
    }

    fn try_heartbeat(&self, payload: &Value) -> Result<(), PublishError> {
        let s = &self.shared;
        if !self.connected() {
            return Err(PublishError::Offline);
        }
        let bytes = payload.to_string().into_bytes();
        check_size(&s.topics.heartbeat, &bytes)?;
        s.client
            .try_publish(s.topics.heartbeat.as_str(), QoS::AtMostOnce, false, bytes)
            .map_err(|e| match e {
                rumqttc::ClientError::TryRequest(_) => PublishError::QueueFull,
                rumqttc::ClientError::Request(_) => PublishError::Stopped,
            })
    }

    /// `{prefix}/config/state`, retained, QoS 1.
    pub fn publish_config_state(&self, state: &Value) -> Result<(), PublishError> {
        self.queue(self.shared.topics.config_state.clone(), state, true)
    }

    /// `{prefix}/cmd/response`, QoS 1.
    pub fn publish_cmd_response(&self, response: &Value) -> Result<(), PublishError> {
        self.queue(self.shared.topics.cmd_response.clone(), response, false)
    }

    /// Offers an event for `{prefix}/event`, QoS 1. Unlike the other publishes, a full
    /// queue is not a loss: the event stays in the database's queue and is offered
    /// again, so nothing is counted or logged here.
    pub fn offer_event(&self, event: &Value) -> Result<(), PublishError> {
        let s = &self.shared;
        let topic = s.topics.event.clone();
        let payload = event.to_string().into_bytes();
        check_size(&topic, &payload)?;
        s.outbound
            .try_send(Message {
                topic,
                payload,
                retain: false,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => PublishError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => PublishError::Stopped,
            })
    }

    /// Records the configuration status and republishes `status` with it.
    pub fn set_config_status(&self, status: ConfigStatus) {
        self.shared.health.set_config(status);
    }

    fn queue(&self, topic: String, value: &Value, retain: bool) -> Result<(), PublishError> {
        let s = &self.shared;
        let payload = value.to_string().into_bytes();
        let result = check_size(&topic, &payload).and_then(|()| {
            s.outbound
                .try_send(Message {
                    topic: topic.clone(),
                    payload,
                    retain,
                })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => PublishError::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => PublishError::Stopped,
                })
        });
        if let Err(error) = &result {
            let dropped = bump(&s.counters.messages_dropped);
            tracing::warn!(%topic, %error, dropped, "message not published");
        }
        result
    }

    /// Leaves the broker cleanly: the retained `offline` status, then DISCONNECT, so
    /// the broker discards the will. Takes at most `limit`; without a connection it
    /// only stops the tasks (the will, or the broker's absence, says offline).
    pub async fn stop(&self, limit: Duration) {
        let s = &self.shared;
        let Some(mut tasks) = s.tasks.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        s.stopping.store(true, Ordering::SeqCst);
        tasks.session.abort();
        let clean = self.connected()
            && s.client
                .try_publish(
                    s.topics.status.as_str(),
                    QoS::AtLeastOnce,
                    true,
                    options::OFFLINE,
                )
                .is_ok()
            && s.client.try_disconnect().is_ok();
        if !clean {
            tasks.cancel.cancel();
        }
        if tokio::time::timeout(limit, &mut tasks.event_loop)
            .await
            .is_err()
        {
            tasks.cancel.cancel();
            tasks.event_loop.abort();
            tracing::warn!(limit = ?limit, "broker did not take the offline status in time; the will says it");
        } else if clean {
            tracing::info!("offline status published; disconnected from the broker");
        }
        s.connected.store(false, Ordering::Relaxed);
    }
}

fn check_size(topic: &str, payload: &[u8]) -> Result<(), PublishError> {
    // Fixed header (at most 5), topic length (2), packet id (2).
    let bytes = 9 + topic.len() + payload.len();
    if bytes > options::MAX_OUTGOING {
        return Err(PublishError::TooLarge {
            bytes,
            limit: options::MAX_OUTGOING,
        });
    }
    Ok(())
}

/// The one task that polls the event loop. It never publishes and never waits on
/// anything but the poll, its backoff and cancellation.
async fn run_event_loop(
    mut event_loop: EventLoop,
    config: MqttConfig,
    client_id: String,
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Inbound>,
    link: watch::Sender<Link>,
    cancel: CancellationToken,
) {
    let origin = Instant::now();
    let mut policy = Reconnect::default();
    let mut rng = fastrand::Rng::new();
    let mut generation = 0;
    // The last error logged at WARN: the same one again is logged at DEBUG, so a
    // broker that stays away costs one line, not one per attempt.
    let mut logged: Option<String> = None;
    let mut attempts: u64 = 0;
    let broker = options::broker(&config.url)
        .map(|b| format!("{}:{}", b.host, b.port))
        .unwrap_or_default();
    loop {
        let setup = if event_loop.network.is_none() {
            options::build(&config, &client_id, &shared.topics.status)
                .map(|options| event_loop.mqtt_options = options)
                .err()
        } else {
            None
        };
        let (ending, text) = match &setup {
            Some(error) => (Ending::Failed, error.to_string()),
            None => {
                let event = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    event = event_loop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        generation += 1;
                        bump(&shared.counters.connects);
                        shared.connected.store(true, Ordering::Relaxed);
                        let hold = policy.connected(origin.elapsed());
                        tracing::info!(%broker, session_present = ack.session_present, failed_attempts = attempts, "connected to the broker");
                        if let Some(until) = hold {
                            tracing::warn!(hold = ?until.saturating_sub(origin.elapsed()), "subscriptions held back: packets over the limit kept arriving right after subscribing (a retained config/set?)");
                        }
                        logged = None;
                        attempts = 0;
                        link.send_replace(Link {
                            generation,
                            up: true,
                            subscribe_at: hold.map(|h| origin + h),
                        });
                        continue;
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        forward(&shared, &inbound, publish);
                        continue;
                    }
                    Ok(Event::Outgoing(Outgoing::Subscribe(_))) => {
                        policy.subscribed(origin.elapsed());
                        continue;
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        let ending = match &e {
                            ConnectionError::MqttState(StateError::Deserialization(
                                rumqttc::Error::PayloadSizeLimitExceeded(_),
                            )) => Ending::Oversize,
                            _ => Ending::Failed,
                        };
                        (ending, e.to_string())
                    }
                }
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let was_up = shared.connected.swap(false, Ordering::Relaxed);
        if was_up {
            link.send_replace(Link {
                generation,
                up: false,
                subscribe_at: None,
            });
        }
        attempts += 1;
        let wait = policy.ended(origin.elapsed(), ending, rng.f64());
        if ending == Ending::Oversize {
            let total = bump(&shared.counters.oversize);
            tracing::warn!(limit = options::MAX_INCOMING, total, retry_in = ?wait, "a packet over the incoming limit arrived; reconnecting");
        } else if was_up {
            tracing::warn!(%broker, error = %text, retry_in = ?wait, "connection to the broker lost; reconnecting");
        } else if logged.as_deref() == Some(text.as_str()) {
            tracing::debug!(%broker, error = %text, retry_in = ?wait, "still cannot connect to the broker");
        } else if setup.is_some() {
            // A file to fix: an operator must act. It is read again at every attempt.
            tracing::error!(error = %text, "cannot set up the broker connection; retrying with backoff");
        } else {
            tracing::warn!(%broker, error = %text, "cannot connect to the broker; retrying with backoff");
        }
        logged = Some(text);
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    shared.connected.store(false, Ordering::Relaxed);
    link.send_replace(Link {
        generation,
        up: false,
        subscribe_at: None,
    });
}

/// Hands an incoming publish to the agent without waiting.
fn forward(shared: &Shared, inbound: &mpsc::Sender<Inbound>, publish: rumqttc::Publish) {
    let topic = publish.topic.clone();
    let bytes = publish.payload.len();
    let Some(message) = shared
        .topics
        .route(&publish.topic, publish.payload, publish.retain)
    else {
        tracing::debug!(%topic, "message on a topic the agent does not serve");
        return;
    };
    // Counted before it is handed over, so whoever reads it sees the count too.
    bump(&shared.counters.inbound_received);
    if inbound.try_send(message).is_err() {
        let dropped = bump(&shared.counters.inbound_dropped);
        tracing::warn!(%topic, bytes, dropped, "inbound message dropped: the agent is behind");
    }
}

/// Speaks for the agent on each connection: subscriptions and status after every
/// CONNACK, status again when the configuration status changes, queued QoS 1 messages
/// while connected. Waiting on the client's queue here holds up only this task.
async fn run_session(
    shared: Arc<Shared>,
    mut link: watch::Receiver<Link>,
    mut outbound: mpsc::Receiver<Message>,
    mut config: watch::Receiver<ConfigStatus>,
) {
    let mut up = false;
    let mut subscribe_at: Option<Instant> = None;
    loop {
        let hold = async {
            match subscribe_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = link.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *link.borrow_and_update();
                up = now.up;
                subscribe_at = None;
                if up {
                    match now.subscribe_at {
                        Some(at) => subscribe_at = Some(at),
                        None => subscribe(&shared).await,
                    }
                    publish_status(&shared).await;
                }
            }
            () = hold => {
                subscribe_at = None;
                if up {
                    subscribe(&shared).await;
                }
            }
            changed = config.changed() => {
                if changed.is_err() {
                    break;
                }
                config.borrow_and_update();
                if up {
                    publish_status(&shared).await;
                }
            }
            () = shared.republish.notified() => {
                if up {
                    publish_status(&shared).await;
                }
            }
            Some(message) = outbound.recv(), if up => {
                if let Err(e) = shared.client.publish(message.topic.as_str(), QoS::AtLeastOnce, message.retain, message.payload).await {
                    tracing::warn!(topic = %message.topic, error = %e, "message not handed to the client");
                }
            }
        }
    }
}

async fn subscribe(shared: &Shared) {
    let t = &shared.topics;
    let mut filters = vec![rumqttc::SubscribeFilter::new(
        t.cmd_request.clone(),
        QoS::AtLeastOnce,
    )];
    if shared.remote_config {
        filters.push(rumqttc::SubscribeFilter::new(
            t.config_set.clone(),
            QoS::AtLeastOnce,
        ));
    }
    if let Err(e) = shared.client.subscribe_many(filters).await {
        tracing::warn!(error = %e, "cannot subscribe");
    }
}

async fn publish_status(shared: &Shared) {
    let now = shared.clock.now();
    let payload = health::status_online(&shared.health, &now).to_string();
    shared.status_trusted.store(now.trusted, Ordering::Relaxed);
    if let Err(e) = shared
        .client
        .publish(
            shared.topics.status.as_str(),
            QoS::AtLeastOnce,
            true,
            payload,
        )
        .await
    {
        tracing::warn!(error = %e, "status not handed to the client");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_routing() {
        let t = Topics::new("tidegate/kagoshima-1/pond-07");
        assert_eq!(t.status, "tidegate/kagoshima-1/pond-07/status");
        assert_eq!(t.config_set, "tidegate/kagoshima-1/pond-07/config/set");
        assert_eq!(t.cmd_response, "tidegate/kagoshima-1/pond-07/cmd/response");
        let p = Bytes::from_static(b"{}");
        assert_eq!(
            t.route(&t.config_set, p.clone(), true),
            Some(Inbound::ConfigSet {
                payload: p.clone(),
                retained: true
            })
        );
        assert_eq!(
            t.route(&t.cmd_request, p.clone(), false),
            Some(Inbound::Command { payload: p.clone() })
        );
        assert_eq!(t.route(&t.cmd_response, p.clone(), false), None);
        assert_eq!(
            t.route("tidegate/kagoshima-1/pond-07/config/set/x", p, false),
            None
        );
    }

    #[test]
    fn outgoing_size_is_checked_before_the_client() {
        let topic = "t/cmd/response";
        let fits = vec![b'x'; options::MAX_OUTGOING - 9 - topic.len()];
        assert_eq!(check_size(topic, &fits), Ok(()));
        let over = vec![b'x'; fits.len() + 1];
        assert_eq!(
            check_size(topic, &over),
            Err(PublishError::TooLarge {
                bytes: options::MAX_OUTGOING + 1,
                limit: options::MAX_OUTGOING
            })
        );
    }
}
