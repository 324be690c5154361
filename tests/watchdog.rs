//! systemd's notify protocol. The real binary tells a listener on `NOTIFY_SOCKET` it is
//! ready once its database exists, feeds the watchdog at the period `WATCHDOG_USEC`
//! asks for and says it is stopping on SIGTERM. The watchdog itself, run on the real
//! scheduler and database writer, stops pinging when either is wedged and starts again
//! once it moves.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tidegate::scheduler::SchedulerHandle;
use tidegate::store::StoreHandle;
use tidegate::watchdog::Watchdog;
use tokio_util::sync::CancellationToken;

use crate::support::agent::{Site, path_str};

/// Every datagram that arrives within `limit`, as text.
fn receive_for(socket: &UnixDatagram, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    messages
}

/// A `NOTIFY_SOCKET` in the site's directory, as systemd makes one for a unit.
fn listen(site: &Site) -> (UnixDatagram, String) {
    let path = site.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    (socket, path_str(&path))
}

/// Waits for the agent's first message, which must say READY=1.
fn wait_for_ready(socket: &UnixDatagram, agent: &crate::support::agent::Agent) {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let first = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no READY within 10 s:\n{}",
            agent.log()
        );
        if let Ok(n) = socket.recv(&mut buf) {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    };
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
}

#[test]
fn the_agent_reports_ready_feeds_the_watchdog_and_reports_stopping() {
    let site = Site::new("[jobs.heartbeat]\nevery = \"1s\"\n");
    let (socket, path) = listen(&site);
    let mut agent = site.start_with_env(&[
        ("NOTIFY_SOCKET", &path),
        // systemd's WatchdogSec=400ms: a ping every 200 ms.
        ("WATCHDOG_USEC", "400000"),
    ]);
    wait_for_ready(&socket, &agent);
    assert!(
        site.state_dir().join("buffer.db").exists(),
        "READY before the database exists"
    );

    let after = receive_for(&socket, Duration::from_secs(2));
    let pings = after
        .iter()
        .filter(|m| m.trim_end() == "WATCHDOG=1")
        .count();
    // 2 s at one ping per 200 ms is 10; a loaded machine may lose a few.
    assert!(pings >= 5, "{pings} pings in 2 s: {after:?}");
    assert!(pings <= 12, "{pings} pings in 2 s: {after:?}");

    agent.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rest.iter().any(|m: &String| m.contains("STOPPING=1")) {
        assert!(Instant::now() < deadline, "no STOPPING=1: {rest:?}");
        rest.extend(receive_for(&socket, Duration::from_millis(100)));
    }
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn without_a_watchdog_the_agent_never_pings() {
    let site = Site::new("[jobs.heartbeat]\nevery = \"1s\"\n");
    let (socket, path) = listen(&site);
    let mut agent = site.start_with_env(&[("NOTIFY_SOCKET", &path)]);
    let messages = receive_for(&socket, Duration::from_millis(1500));
    assert!(
        messages.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{messages:?}\n{}",
        agent.log()
    );
    assert!(
        !messages.iter().any(|m| m.contains("WATCHDOG=1")),
        "{messages:?}"
    );
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

/// The real scheduler on a real database, alone on a single-thread runtime of its
/// own, so that a test can wedge its loop while the writer and the watchdog go on.
struct Agent {
    _dir: tempfile::TempDir,
    store: StoreHandle,
    scheduler: SchedulerHandle,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[agent]\nid = \"t\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\n[jobs.heartbeat]\nevery = \"1s\"\n",
            dir.path().display()
        );
        let config = Arc::new(tidegate::config::parse_str(&text, "t.toml").unwrap());
        let store = StoreHandle::spawn(tidegate::store::open(dir.path()).unwrap());
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let clock = Arc::new(tidegate::clock::SystemClock::new(
                        tidegate::config::ClockMode::Trusted,
                    ));
                    let (handle, task) = tidegate::scheduler::spawn(config, clock, store, shutdown)
                        .await
                        .unwrap();
                    tx.send((handle, tokio::runtime::Handle::current()))
                        .unwrap();
                    task.await.unwrap();
                });
            })
        };
        let (scheduler, runtime) = rx.recv().unwrap();
        Agent {
            _dir: dir,
            store,
            scheduler,
            runtime,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Blocks the scheduler's only thread until the returned sender is dropped.
    fn wedge_scheduler(&self) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        self.runtime.spawn(async move {
            let _ = wait.recv();
        });
        release
    }

    /// Blocks the database writer inside a call until the returned sender is dropped.
    fn wedge_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        self.store.submit("wedged by the test", move |_| {
            let _ = wait.recv();
            Ok(())
        });
        release
    }

    /// Runs the watchdog with a short period and checks that a healthy second is
    /// pinged; returns the ping count.
    async fn watch(&self, stall_after: Duration) -> Arc<AtomicUsize> {
        let pings = Arc::new(AtomicUsize::new(0));
        let dog = Watchdog {
            period: Duration::from_millis(100),
            stall_after,
        };
        let counted = Arc::clone(&pings);
        tokio::spawn(
            dog.run(self.scheduler.clone(), self.store.clone(), move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        );
        pings
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const STALL_AFTER: Duration = Duration::from_secs(2);

/// Waits until a wedge has had time to withhold the pings, then asserts that none
/// come for a second; returns the count.
async fn assert_no_pings_while_wedged(pings: &AtomicUsize, what: &str) -> usize {
    tokio::time::sleep(STALL_AFTER + Duration::from_millis(500)).await;
    let at_stall = pings.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pings.load(Ordering::Relaxed),
        at_stall,
        "pinged with the {what} wedged"
    );
    at_stall
}

async fn assert_pings_resume(pings: &AtomicUsize, from: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pings.load(Ordering::Relaxed) < from + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pings after the {what} moved again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_scheduler_loop_stops_the_pings() {
    let agent = Agent::start();
    let pings = agent.watch(STALL_AFTER).await;

    let release = agent.wedge_scheduler();
    let writer_before = agent.store.progress();
    let at_stall = assert_no_pings_while_wedged(&pings, "scheduler").await;
    // The writer kept answering the probes: the scheduler alone stopped the pings.
    assert!(agent.store.progress() > writer_before + 5);

    drop(release);
    assert_pings_resume(&pings, at_stall, "scheduler").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_database_writer_stops_the_pings() {
    let agent = Agent::start();
    let pings = agent.watch(STALL_AFTER).await;

    let release = agent.wedge_writer();
    let ticks_before = agent.scheduler.ticks();
    let at_stall = assert_no_pings_while_wedged(&pings, "database writer").await;
    // The scheduler loop kept ticking: the writer alone stopped the pings.
    assert!(agent.scheduler.ticks() > ticks_before + 2);

    drop(release);
    assert_pings_resume(&pings, at_stall, "database writer").await;
}

#[test]
fn a_sigterm_right_after_ready_stops_the_agent_cleanly() {
    // systemd may stop a unit the moment it is ready (`systemctl restart` twice);
    // the signal must reach the shutdown path, not the default action.
    for _ in 0..5 {
        let site = Site::new("");
        let (socket, path) = listen(&site);
        let mut agent = site.start_with_env(&[("NOTIFY_SOCKET", &path)]);
        wait_for_ready(&socket, &agent);
        agent.signal(libc::SIGTERM);
        assert_eq!(
            agent.wait_exit(Duration::from_secs(10)),
            Some(0),
            "{}",
            agent.log()
        );
    }
}
