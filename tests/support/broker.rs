//! An MQTT broker for the tests, and a small client that watches it.
//!
//! [`Broker::start`] runs rumqttd in this process behind a TCP relay on a fixed local
//! port, so it can be stopped and started again on the same port without
//! persistence: [`Broker::stop`] closes the port and cuts every connection,
//! [`Broker::restart`] puts a fresh rumqttd (no retained messages, no sessions)
//! behind the same port. rumqttd can neither stop nor bind port 0, so each instance
//! listens on a free port of its own and is left idle when replaced. The relay also
//! keeps what each client sent first and last, so a test can tell a clean DISCONNECT
//! from a dropped connection.
//!
//! [`any_broker`] is the broker for tests that do not restart it: the one at
//! `TIDEGATE_TEST_MQTT_URL` when that is set (e.g. Mosquitto on
//! `mqtt://127.0.0.1:1883`), else an own rumqttd. Tests share an external broker, so
//! each uses its own topic prefix ([`unique_prefix`]) and client ids.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Payloads up to this size pass the test broker (the agent's limit is 1 MiB).
const BROKER_MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// A broker for a test: an external one, or an own rumqttd.
pub struct TestBroker {
    pub url: String,
    pub own: Option<Broker>,
}

/// The external broker if `TIDEGATE_TEST_MQTT_URL` is set, else an own rumqttd.
pub fn any_broker() -> TestBroker {
    match std::env::var("TIDEGATE_TEST_MQTT_URL") {
        Ok(url) if !url.is_empty() => TestBroker { url, own: None },
        _ => {
            let own = Broker::start();
            TestBroker {
                url: own.url(),
                own: Some(own),
            }
        }
    }
}

/// A topic prefix no other test (or run) uses: `tgtest/{name}/{random}`.
pub fn unique_prefix(name: &str) -> String {
    format!("tgtest/{name}/{:08x}", fastrand::u32(..))
}

/// What one client connection carried towards the broker.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// The first bytes (the CONNECT packet, with the client id).
    pub head: Vec<u8>,
    /// The last bytes before the connection closed.
    pub tail: Vec<u8>,
    pub closed: bool,
}

impl Traffic {
    /// Whether the client sent DISCONNECT as its last packet.
    pub fn ended_with_disconnect(&self) -> bool {
        self.closed && self.tail.ends_with(&[0xE0, 0x00])
    }

    fn is_from(&self, client_id: &str) -> bool {
        self.head
            .windows(client_id.len())
            .any(|w| w == client_id.as_bytes())
    }
}

struct Relay {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

struct State {
    relay: Option<Relay>,
    /// Every relayed connection's sockets, to cut them at a stop.
    sockets: Vec<TcpStream>,
    traffic: Vec<Arc<Mutex<Traffic>>>,
}

/// An own rumqttd behind a relay on a port that stays the same across restarts.
pub struct Broker {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Broker {
    pub fn start() -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let broker = Broker {
            port,
            state: Arc::new(Mutex::new(State {
                relay: None,
                sockets: Vec::new(),
                traffic: Vec::new(),
            })),
        };
        broker.open(listener);
        broker
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Closes the port and cuts every connection, like a broker that went away.
    pub fn stop(&self) {
        let relay = self.state.lock().unwrap().relay.take();
        if let Some(relay) = relay {
            relay.stop.store(true, Ordering::SeqCst);
            let _ = relay.accept.join();
        }
        let sockets = std::mem::take(&mut self.state.lock().unwrap().sockets);
        for s in sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// A fresh broker, nothing remembered, on the same port.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot bind port {} again: {e}", self.port),
            }
        };
        self.open(listener);
    }

    /// What the connections of `client_id` carried, oldest first.
    pub fn traffic_of(&self, client_id: &str) -> Vec<Traffic> {
        self.state
            .lock()
            .unwrap()
            .traffic
            .iter()
            .map(|t| t.lock().unwrap().clone())
            .filter(|t| t.is_from(client_id))
            .collect()
    }

    fn open(&self, listener: TcpListener) {
        let backend = start_rumqttd();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, state) = (Arc::clone(&stop), Arc::clone(&self.state));
        let accept = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay(client, backend, &state),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.state.lock().unwrap().relay = Some(Relay { stop, accept });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies one client's connection to the backend and back, recording what it sent.
fn relay(client: TcpStream, backend: SocketAddr, state: &Arc<Mutex<State>>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&backend, Duration::from_secs(2)) else {
        return;
    };
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    {
        let mut s = state.lock().unwrap();
        for sock in [&client, &server] {
            if let Ok(clone) = sock.try_clone() {
                s.sockets.push(clone);
            }
        }
        s.traffic.push(Arc::clone(&traffic));
    }
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy(client_read, server_write, Some(traffic)));
    std::thread::spawn(move || copy(server, client, None));
}

fn copy(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Traffic>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(record) = &record {
            let mut t = record.lock().unwrap();
            if t.head.len() < 512 {
                let room = 512 - t.head.len();
                t.head.extend_from_slice(&buf[..n.min(room)]);
            }
            t.tail.extend_from_slice(&buf[..n]);
            let excess = t.tail.len().saturating_sub(64);
            t.tail.drain(..excess);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if let Some(record) = &record {
        record.lock().unwrap().closed = true;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A new rumqttd on a free port of its own, listening when this returns.
fn start_rumqttd() -> SocketAddr {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: BROKER_MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 2 * BROKER_MAX_PAYLOAD,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&listen, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "rumqttd did not start on {listen}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    listen
}

/// A message a [`Watcher`] saw.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "not JSON on {}: {e}: {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A test client: subscribes (again after every reconnect) and records what arrives.
pub struct Watcher {
    client: Client,
    messages: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
    /// SUBACKs received: one per (re)connection, all filters in one SUBSCRIBE.
    subscribed: Arc<AtomicUsize>,
}

impl Watcher {
    /// Connects to `url` and subscribes to `filters`; returns once subscribed.
    pub fn connect(url: &str, filters: &[&str]) -> Watcher {
        let (host, port) = host_port(url);
        let id = format!("watcher-{:08x}", fastrand::u32(..));
        let mut options = MqttOptions::new(id, host, port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(BROKER_MAX_PAYLOAD + 1024, BROKER_MAX_PAYLOAD + 1024);
        let (client, mut connection) = Client::new(options, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicUsize::new(0));
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        {
            let (client, messages, stop, subscribed) = (
                client.clone(),
                Arc::clone(&messages),
                Arc::clone(&stop),
                Arc::clone(&subscribed),
            );
            std::thread::spawn(move || {
                for event in connection.iter() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let all = filters.iter().map(|f| {
                                rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)
                            });
                            let _ = client.try_subscribe_many(all);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            subscribed.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            messages.lock().unwrap().push(Msg {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                                at: Instant::now(),
                            });
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            });
        }
        let watcher = Watcher {
            client,
            messages,
            stop,
            subscribed,
        };
        watcher.wait_subscribed(1);
        watcher
    }

    /// How many times the watcher has subscribed (once per connection).
    pub fn subscriptions(&self) -> usize {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Waits until the watcher has subscribed `n` times in all (after reconnects).
    pub fn wait_subscribed(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.subscriptions() < n {
            assert!(Instant::now() < deadline, "watcher did not subscribe");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.messages.lock().unwrap().clone()
    }

    /// The messages on `topic`, oldest first.
    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits for a message on `topic` that `pred` accepts; panics after `limit`.
    pub fn wait_for(
        &self,
        topic: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(m) = self.on(topic).into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no such message on {topic} within {limit:?}; saw:\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Forgets what arrived so far.
    pub fn clear(&self) {
        self.messages.lock().unwrap().clear();
    }

    /// Publishes at QoS 1.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("publish");
    }

    fn describe(&self) -> String {
        self.messages()
            .iter()
            .map(|m| {
                let text = String::from_utf8_lossy(&m.payload);
                let short: String = text.chars().take(300).collect();
                format!("  {} retain={} {short}", m.topic, m.retain)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

/// `mqtt://host:port` → (host, port).
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("mqtt://")
        .unwrap_or_else(|| panic!("test broker url must be mqtt://host:port, got {url}"));
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    (host.to_string(), port.parse().expect("port"))
}

/// The test CA's files (`tests/fixtures/tls`): `ca.pem`, `server.pem`/`server.key`
/// (for `localhost` and 127.0.0.1), `client.pem`/`client.key`.
pub fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A TLS front for a broker: terminates TLS with the test CA's server certificate
/// (demanding a client certificate from the same CA when asked) and relays the
/// plain stream to `backend`. Stopped when dropped.
pub struct TlsFront {
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    pub fn start(backend: &str, client_auth: bool) -> TlsFront {
        use rumqttc::tokio_rustls::TlsAcceptor;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let (host, port) = host_port(backend);
        let backend = format!("{host}:{port}");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(tls_fixture("ca.pem")).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let acceptor = TlsAcceptor::from(Arc::new(builder.with_single_cert(chain, key).unwrap()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            port,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }
}
