//! Drain rate of a million-reading backlog to a local ingest endpoint, gzip on.
//!
//! The backlog (`support/backlog.rs`: 24 sensors every 5 minutes, 145 days of them)
//! is built once and copied for each run. A run is the real uploader,
//! `tidegate::upload::run` with the production tuning, through a `JobContext` on the
//! current-thread runtime and database writer thread the agent uses, with the default
//! `batch_size` (5,000) and `gzip = true`, once with `format = "json"` and once with
//! `format = "influx"`, over plain HTTP on loopback to the tests' ingest server, which
//! answers `200 OK` to each batch, decompresses and reads its seqs, and keeps no
//! bodies.
//!
//! The sink runs in this process on its own thread (`ingest`), so CPU time is
//! reported per side from `/proc/self/task`: the uploader is the process minus that
//! thread, split into the runtime (read answers, encode, compress, HTTP) and the
//! database writer (form and record batches, acknowledge them). After each run it
//! checks that nothing is left pending and that the sink took every seq from 1 to N.
//!
//! Run: `cargo bench --bench drain [-- READINGS]` (default 1000000).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

#[path = "support/backlog.rs"]
mod backlog;
#[allow(dead_code)]
#[path = "../tests/support/ingest.rs"]
mod ingest;

use std::sync::Arc;
use std::time::Instant;

use tidegate::clock::{Clock, SystemClock};
use tidegate::config::ClockMode;
use tidegate::job::JobContext;
use tidegate::store::{self, StoreHandle, readings};
use tokio_util::sync::CancellationToken;

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let template = dir.path().join("template");
    let took = backlog::build(&template, total);
    let bytes = std::fs::metadata(template.join(store::DB_FILE))
        .expect("buffer.db")
        .len();
    println!(
        "built {total} pending readings in {:.1} s: buffer.db {:.1} MiB",
        took.as_secs_f64(),
        bytes as f64 / 1_048_576.0
    );
    for format in ["json", "influx"] {
        let state_dir = dir.path().join(format);
        backlog::copy(&template, &state_dir);
        drain(&state_dir, format, total);
        std::fs::remove_dir_all(&state_dir).expect("remove state dir");
    }
}

fn drain(state_dir: &std::path::Path, format: &str, total: usize) {
    let sink = ingest::Ingest::start();
    sink.keep_bodies(false);
    let text = format!(
        "[agent]\nid = \"pond-07\"\nsite = \"kagoshima-1\"\nstate_dir = \"{}\"\nlog_dir = \"\"\n\
         timezone = \"UTC\"\nclock = \"trusted\"\n\
         [upload]\nurl = \"{}\"\nformat = \"{format}\"\ngzip = true\n",
        state_dir.display(),
        sink.url()
    );
    let config = Arc::new(tidegate::config::parse_str(&text, "drain.toml").expect("config"));
    assert_eq!(config.upload.as_ref().map(|u| u.batch_size), Some(5_000));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let load_before = backlog::load();
    let (report, wall, cpu, pending) = runtime.block_on(async move {
        let store = StoreHandle::spawn(store::open(state_dir).expect("open buffer.db"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(ClockMode::Trusted));
        let ctx = JobContext::new(config, clock, store);
        let before = Cpu::now();
        let started = Instant::now();
        let report = tidegate::upload::run(&ctx, &CancellationToken::new())
            .await
            .expect("upload run");
        let wall = started.elapsed().as_secs_f64();
        let cpu = Cpu::now().since(&before);
        let pending = ctx
            .store
            .call(|c| readings::pending_count(c))
            .await
            .expect("pending count");
        (report, wall, cpu, pending)
    });
    let load_after = backlog::load();

    assert_eq!(pending, 0, "nothing left pending");
    assert_eq!(report.readings, total as u64, "every reading acknowledged");
    let requests = sink.requests();
    let sent: u64 = requests
        .iter()
        .filter_map(|r| r.header("content-length")?.parse::<u64>().ok())
        .sum();
    let mut seqs = sink.delivered();
    let delivered = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        total,
        "the sink took every reading once or more"
    );
    assert_eq!(
        (seqs.first().copied(), seqs.last().copied()),
        (Some(1), Some(total as i64)),
        "seqs 1 to N"
    );

    let uploader = cpu.process - cpu.sink;
    println!(
        "{format:>6}: {total} readings in {} batches, {wall:.2} s: {:.0} readings/s wall",
        report.batches,
        total as f64 / wall
    );
    println!(
        "        CPU: process {:.2} s = uploader {uploader:.2} s (runtime {:.2} s, database writer {:.2} s) \
         + sink {:.2} s; {:.0} readings per uploader CPU-second",
        cpu.process,
        uploader - cpu.writer,
        cpu.writer,
        cpu.sink,
        total as f64 / uploader
    );
    println!(
        "        sent {:.1} MiB gzipped ({:.1} bytes a reading, {:.0} KiB a batch); sink: {} requests, \
         {delivered} seqs, {} distinct (1..={total}), pending after: {pending}; load {load_before} -> {load_after}",
        sent as f64 / 1_048_576.0,
        sent as f64 / total as f64,
        sent as f64 / 1024.0 / requests.len().max(1) as f64,
        requests.len(),
        seqs.len()
    );
}

/// CPU time of the process and of two of its threads, in seconds.
struct Cpu {
    process: f64,
    sink: f64,
    writer: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime fills the struct we own.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        Cpu {
            process: ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9,
            sink: thread_cpu("ingest"),
            writer: thread_cpu("store-writer"),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            process: self.process - before.process,
            sink: self.sink - before.sink,
            writer: self.writer - before.writer,
        }
    }
}

/// User plus system time of the threads of this process named `name`, from
/// `/proc/self/task/*/stat` (in clock ticks, 10 ms).
fn thread_cpu(name: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        // After the name: state is field 3, utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        total += field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0);
    }
    total / ticks
}
