//! Peak resident memory of the agent draining a million-reading backlog.
//!
//! The backlog of `support/backlog.rs` (24 sensors every 5 minutes, 145 days of them)
//! is built once and copied for each run. Then the real release binary drains it to
//! the tests' ingest server in this process (`200 OK` to each batch, no bodies kept),
//! with the defaults (`format = "json"`, `gzip = true`, `batch_size` 5,000):
//!
//! 1. `tidegate run` with `[jobs.upload] every = "1s"`, so the first upload run starts
//!    within a second of start-up. Every 50 ms this process reads the agent's `VmRSS`
//!    and `VmHWM` from `/proc/PID/status` and the pending count from the database
//!    (the counts `tidegate buffer stats` reads); once nothing is pending it reads
//!    them a last time, lets the agent idle 3 s (three more, empty, upload runs),
//!    reads them again, and stops it with SIGTERM.
//! 2. `tidegate job run upload`, the same drain by the CLI in its own process, for
//!    comparison, sampled the same way until the process ends.
//!
//! The peak is `VmHWM`, not the `ru_maxrss` of `wait4`: a child started with
//! `posix_spawn` (vfork) carries its parent's peak into its own `ru_maxrss` at exec,
//! so a bench process holding a million seqs would report its own size.
//!
//! Each run checks that nothing is left pending and that the sink took every seq.
//!
//! The binary `cargo bench` builds beside a bench is compiled with the
//! dev-dependencies' features (tokio's multi-thread runtime, `net`, `test-util`) and
//! replaces `target/release/tidegate`; to measure the binary `cargo build --release`
//! ships, copy that aside first and name it in `TIDEGATE_BIN`:
//!
//! ```sh
//! cargo build --release && cp target/release/tidegate /tmp/tidegate
//! TIDEGATE_BIN=/tmp/tidegate cargo bench --bench drain_rss [-- READINGS]   # default 1000000
//! ```
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

#[path = "support/backlog.rs"]
mod backlog;
#[allow(dead_code)]
#[path = "../tests/support/ingest.rs"]
mod ingest;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidegate::store::{self, inspect};

const LIMIT: Duration = Duration::from_secs(600);

fn main() {
    let total: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let template = dir.path().join("template");
    let took = backlog::build(&template, usize::try_from(total).expect("readings"));
    let binary = binary();
    println!(
        "built {total} pending readings in {:.1} s; binary {} ({} bytes)",
        took.as_secs_f64(),
        binary.display(),
        std::fs::metadata(&binary).expect("binary").len()
    );

    let site = Site::new(dir.path(), "run", &template, &binary);
    agent_run(&site, total);
    let site = Site::new(dir.path(), "job-run", &template, &binary);
    job_run(&site, total);
}

/// `TIDEGATE_BIN`, or the binary built for the benches.
fn binary() -> PathBuf {
    std::env::var_os("TIDEGATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tidegate")),
        PathBuf::from,
    )
}

/// A state directory holding a copy of the backlog, a config and a sink.
struct Site {
    binary: PathBuf,
    state_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    sink: ingest::Ingest,
}

impl Site {
    fn new(root: &Path, name: &str, template: &Path, binary: &Path) -> Site {
        let state_dir = root.join(name);
        backlog::copy(template, &state_dir);
        let sink = ingest::Ingest::start();
        sink.keep_bodies(false);
        let config = root.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[agent]\nid = \"pond-07\"\nsite = \"kagoshima-1\"\nstate_dir = \"{}\"\nlog_dir = \"\"\n\
                 timezone = \"UTC\"\nclock = \"trusted\"\n\
                 [upload]\nurl = \"{}\"\n\
                 [jobs.upload]\nevery = \"1s\"\n",
                state_dir.display(),
                sink.url()
            ),
        )
        .expect("write config");
        Site {
            binary: binary.to_path_buf(),
            log: root.join(format!("{name}.log")),
            state_dir,
            config,
            sink,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log file"));
        cmd
    }

    /// Nothing pending, and the sink took seqs 1 to `total`; returns how many seqs
    /// it took in all (repeats included).
    fn check_drained(&self, total: u64) -> usize {
        let conn = store::open_existing(&self.state_dir).expect("open buffer.db");
        assert_eq!(inspect::stats(&conn).expect("stats").pending, 0);
        let mut seqs = self.sink.delivered();
        let delivered = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len() as u64, total, "the sink took every reading");
        assert_eq!(seqs.first().copied(), Some(1));
        assert_eq!(seqs.last().copied(), i64::try_from(total).ok());
        delivered
    }
}

fn agent_run(site: &Site, total: u64) {
    let load_before = backlog::load();
    let conn = store::open_existing(&site.state_dir).expect("open buffer.db");
    let pending = || inspect::stats(&conn).expect("stats").pending;
    let started = Instant::now();
    let child = Running::spawn(site.command(&["run"]));
    let pid = child.pid();
    let mut first_ack = None;
    let mut max_rss = 0;
    let drained = loop {
        std::thread::sleep(Duration::from_millis(50));
        let status = Status::of(pid);
        max_rss = max_rss.max(status.rss_kib);
        let left = pending();
        if left < total && first_ack.is_none() {
            first_ack = Some(started.elapsed());
        }
        if left == 0 {
            break (started.elapsed(), status);
        }
        assert!(
            started.elapsed() < LIMIT,
            "{left} readings still pending after {LIMIT:?}; log in {}",
            site.log.display()
        );
    };
    let load_after = backlog::load();
    std::thread::sleep(Duration::from_secs(3));
    let idle = Status::of(pid);
    // SAFETY: plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    let (code, cpu_s) = child.wait();
    assert_eq!(code, Some(0), "tidegate run exit status");
    let delivered = site.check_drained(total);

    let (at, status) = drained;
    let first = first_ack.unwrap_or(at);
    println!(
        "tidegate run: first batch acknowledged at {:.2} s, backlog drained at {:.2} s \
         ({:.0} readings/s between the two; CPU {:.2} s to then)",
        first.as_secs_f64(),
        at.as_secs_f64(),
        total as f64 / (at - first).as_secs_f64().max(1e-3),
        status.cpu_s
    );
    println!(
        "  drained: VmHWM {} KiB ({:.1} MiB), VmRSS {} KiB (anonymous {}, file {}, shared memory {}), \
         largest VmRSS sampled {} KiB, {} threads",
        status.hwm_kib,
        status.hwm_kib as f64 / 1024.0,
        status.rss_kib,
        status.anon_kib,
        status.file_kib,
        status.shmem_kib,
        max_rss,
        status.threads
    );
    println!(
        "  3 s later: VmHWM {} KiB, VmRSS {} KiB; after SIGTERM: exit 0, CPU {cpu_s:.2} s in all",
        idle.hwm_kib, idle.rss_kib
    );
    println!(
        "  sink: {} requests, {delivered} seqs, {total} distinct; load {load_before} -> {load_after}",
        site.sink.request_count()
    );
}

fn job_run(site: &Site, total: u64) {
    let load_before = backlog::load();
    let started = Instant::now();
    let child = Running::spawn(site.command(&["job", "run", "upload"]));
    let pid = child.pid();
    // Sampled until the process has exited (a zombie reports no memory).
    let mut last = None;
    while started.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(10));
        match Status::try_of(pid) {
            Some(status) if status.hwm_kib > 0 => last = Some(status),
            _ => break,
        }
    }
    let (code, cpu_s) = child.wait();
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(code, Some(0), "tidegate job run upload exit status");
    let load_after = backlog::load();
    let delivered = site.check_drained(total);
    let last = last.expect("at least one sample");
    println!(
        "tidegate job run upload: {wall:.2} s ({:.0} readings/s), CPU {cpu_s:.2} s; \
         VmHWM at the last sample before exit {} KiB ({:.1} MiB), {} threads",
        total as f64 / wall,
        last.hwm_kib,
        last.hwm_kib as f64 / 1024.0,
        last.threads
    );
    println!(
        "  sink: {} requests, {delivered} seqs, {total} distinct; load {load_before} -> {load_after}",
        site.sink.request_count()
    );
}

/// What `/proc/PID/status` and `/proc/PID/stat` say of a running process.
struct Status {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    shmem_kib: u64,
    threads: u64,
    cpu_s: f64,
}

impl Status {
    fn of(pid: i32) -> Status {
        Status::try_of(pid).expect("/proc/PID/status of a running process")
    }

    /// `None` once the process has exited.
    fn try_of(pid: i32) -> Option<Status> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // After the name: state is field 3, utime and stime are fields 14 and 15.
        let ticks: f64 = [14, 15]
            .iter()
            .filter_map(|i| fields.get(i - 3)?.parse::<f64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(Status {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
            shmem_kib: field("RssShmem:"),
            threads: field("Threads:"),
            cpu_s: ticks / per_s,
        })
    }
}

/// A child process, killed if the bench fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn spawn(mut command: Command) -> Running {
        Running(Some(command.spawn().expect("start tidegate")))
    }

    fn pid(&self) -> i32 {
        let child = self.0.as_ref().expect("running");
        i32::try_from(child.id()).expect("pid")
    }

    /// Waits for the process to end: its exit code (`None` when a signal ended it)
    /// and the CPU time it used, in seconds (`Child::wait` does not give the rusage).
    fn wait(mut self) -> (Option<i32>, f64) {
        let pid = self.pid();
        // Reaped here, so not by `drop`.
        self.0 = None;
        let mut status = 0;
        // SAFETY: wait4 fills the structs we own, for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(waited, pid, "wait4");
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (code, secs(usage.ru_utime) + secs(usage.ru_stime))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
