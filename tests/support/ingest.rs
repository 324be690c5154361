//! A farm server's ingest endpoint for tests: HTTP/1.1 on `127.0.0.1:0`, on its own
//! thread and runtime (so sync tests, async tests and child processes can all talk
//! to it), keep-alive aware, bodies by `Content-Length`, gunzipped when
//! `Content-Encoding: gzip`. It records every request (headers, Idempotency-Key, the
//! seqs it carried, JSON or line protocol) and answers by a plan a test can script:
//!
//! 1. a custom responder, if one is set and it answers ([`Ingest::respond_with`]);
//! 2. else the next scripted answer, in order ([`Ingest::then`]);
//! 3. else a refusal when the batch holds a refused seq ([`Ingest::refuse`]);
//! 4. else the default answer (`200 OK` unless [`Ingest::otherwise`] says else).
//!
//! An [`Answer`] is a status with headers and body, after an optional delay, or a
//! connection closed without an answer, or no answer ever. Stopped when dropped.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Respond,
    /// Close the connection without a word.
    Close,
    /// Keep the connection open and never answer.
    Hang,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    pub action: Action,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
            action: Action::Respond,
        }
    }

    pub fn ok() -> Answer {
        Answer::status(200)
    }

    /// The connection is closed without an answer.
    pub fn close() -> Answer {
        Answer {
            action: Action::Close,
            ..Answer::status(0)
        }
    }

    /// No answer, ever (until the server stops).
    pub fn hang() -> Answer {
        Answer {
            action: Action::Hang,
            ..Answer::status(0)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &str) -> Answer {
        self.body = body.to_string();
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its body had fully arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body as sent (compressed when it was), unless bodies are not kept.
    pub raw: Vec<u8>,
    /// The body decompressed, unless bodies are not kept.
    pub body: Vec<u8>,
    /// The body parsed, for a JSON body whose body is kept.
    pub json: Option<serde_json::Value>,
    pub key: Option<String>,
    /// The seqs of the readings it carried, in order (JSON or line protocol).
    pub seqs: Vec<i64>,
    /// The status the server chose, set as it chose it (like a server that commits
    /// before it answers, so a client that gave up waiting may never see it); `None`
    /// when the connection was closed or left hanging.
    pub answered: Option<u16>,
}

impl Request {
    /// The value of a header (case-insensitive name), if sent once or more.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Responder = Box<dyn Fn(&Request) -> Option<Answer> + Send + Sync>;

struct State {
    requests: Vec<Request>,
    script: VecDeque<Answer>,
    refused: BTreeMap<i64, u16>,
    default: Answer,
    responder: Option<Responder>,
    keep_bodies: bool,
    connections: u64,
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running ingest server.
pub struct Ingest {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ingest {
    /// Starts a server answering `200 OK` to everything.
    pub fn start() -> Ingest {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                script: VecDeque::new(),
                refused: BTreeMap::new(),
                default: Answer::ok(),
                responder: None,
                keep_bodies: true,
                connections: 0,
            }),
            arrived: Condvar::new(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("ingest runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        () = accept(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection, hanging ones too.
            })
            .expect("ingest thread");
        Ingest {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}/v1/readings", self.addr)
    }

    /// Answers the next request not taken by a responder with `answer`; several calls
    /// script several requests, in order.
    pub fn then(&self, answer: Answer) -> &Ingest {
        self.shared.lock().script.push_back(answer);
        self
    }

    /// The answer when nothing else applies (default `200 OK`).
    pub fn otherwise(&self, answer: Answer) {
        self.shared.lock().default = answer;
    }

    /// A batch holding any of `seqs` is refused with `status` (and a body naming the
    /// first refused seq), like a server rejecting those readings.
    pub fn refuse(&self, seqs: impl IntoIterator<Item = i64>, status: u16) {
        let mut state = self.shared.lock();
        for seq in seqs {
            state.refused.insert(seq, status);
        }
    }

    /// A plan of one's own, asked first for every request; `None` falls through to
    /// the script, refusals and default.
    pub fn respond_with(&self, f: impl Fn(&Request) -> Option<Answer> + Send + Sync + 'static) {
        self.shared.lock().responder = Some(Box::new(f));
    }

    /// With `false`, requests keep their headers and seqs but not their bodies (for
    /// long drains).
    pub fn keep_bodies(&self, keep: bool) {
        self.shared.lock().keep_bodies = keep;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// The seqs of every request the server took (answered 2xx), in order, repeats
    /// included.
    pub fn delivered(&self) -> Vec<i64> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .flat_map(|r| r.seqs.iter().copied())
            .collect()
    }

    /// Blocks until `n` requests have arrived; panics after `limit`.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        let mut state = self.shared.lock();
        while state.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} requests within {limit:?}, wanted {n}",
                state.requests.len()
            );
            state = self
                .shared
                .arrived
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.requests.clone()
    }

    /// [`Ingest::wait_for`] for async tests: polls without blocking the runtime.
    pub async fn arrived(&self, n: usize, limit: Duration) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        while self.request_count() < n {
            assert!(
                Instant::now() < deadline,
                "{} requests within {limit:?}, wanted {n}",
                self.request_count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.requests()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        shared.lock().connections += 1;
        tokio::spawn(connection(socket, Arc::clone(&shared)));
    }
}

/// Serves requests on one connection until the client closes it or asks to.
async fn connection(mut socket: TcpStream, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_string();
        let path = request_line.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let end = head_end + 4 + length;
        while buf.len() < end {
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let raw = buf[head_end + 4..end].to_vec();
        buf.drain(..end);
        let close_after = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let body = if header("content-encoding").as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("a gzip body that decompresses");
            out
        } else {
            raw.clone()
        };
        let is_json = header("content-type").is_some_and(|t| t.starts_with("application/json"));
        let keep = shared.lock().keep_bodies;
        let (json, seqs) = if is_json {
            if keep {
                let value: serde_json::Value =
                    serde_json::from_slice(&body).expect("a JSON body that parses");
                let seqs = value["readings"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r["seq"].as_i64()).collect())
                    .unwrap_or_default();
                (Some(value), seqs)
            } else {
                (None, json_seqs(&body))
            }
        } else {
            (None, line_seqs(&body))
        };
        let mut request = Request {
            at: Instant::now(),
            method,
            path,
            key: header("idempotency-key"),
            headers,
            raw: if keep { raw } else { Vec::new() },
            body: if keep { body } else { Vec::new() },
            json,
            seqs,
            answered: None,
        };

        let answer = {
            let mut state = shared.lock();
            let answer = plan(&mut state, &request);
            if answer.action == Action::Respond {
                request.answered = Some(answer.status);
            }
            state.requests.push(request);
            shared.arrived.notify_all();
            answer
        };
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        match answer.action {
            Action::Close => return,
            Action::Hang => std::future::pending::<()>().await,
            Action::Respond => {}
        }
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
            answer.status,
            reason(answer.status),
            answer.body.len()
        );
        for (name, value) in &answer.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if close_after {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&answer.body);
        if socket.write_all(out.as_bytes()).await.is_err() || close_after {
            return;
        }
    }
}

fn plan(state: &mut State, request: &Request) -> Answer {
    if let Some(answer) = state.responder.as_ref().and_then(|f| f(request)) {
        return answer;
    }
    if let Some(answer) = state.script.pop_front() {
        return answer;
    }
    if let Some((seq, status)) = request
        .seqs
        .iter()
        .find_map(|s| state.refused.get(s).map(|status| (*s, *status)))
    {
        return Answer::status(status).body(&format!("{{\"error\":\"reading {seq} refused\"}}"));
    }
    state.default.clone()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        425 => "Too Early",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The seqs of a JSON body, without building the whole document.
fn json_seqs(body: &[u8]) -> Vec<i64> {
    #[derive(serde::Deserialize)]
    struct Doc {
        readings: Vec<Seq>,
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: i64,
    }
    serde_json::from_slice::<Doc>(body)
        .expect("a JSON body with readings")
        .readings
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

/// The `seq=Ni` field of each line of a line-protocol body.
fn line_seqs(body: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| {
            let at = line.find(" seq=").or_else(|| line.find(",seq="))?;
            let digits: String = line[at + 5..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            digits.parse().ok()
        })
        .collect()
}
