//! Runs of jobs under their policy, with real processes: timeouts kill the whole
//! process tree, retries back off, cancellation stops a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate::clock::{Clock, TestClock};
use tidegate::config::{self, CommandSpec, JobKind, RetryPolicy};
use tidegate::job::{self, JobContext};
use tidegate::store::jobs::Outcome;
use tokio_util::sync::CancellationToken;

use crate::support::agent::{eventually, process_alive};
use crate::support::sim::job;

fn context() -> JobContext {
    let config =
        config::parse_str("[agent]\nid = \"t\"\ntimezone = \"UTC\"\n", "t.toml").expect("valid");
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 0, 0, 0, true));
    JobContext {
        config: Arc::new(config),
        clock,
    }
}

fn command(name: &str, script: &str) -> tidegate::config::JobConfig {
    let mut j = job(name, None);
    j.kind = JobKind::Command(CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        working_dir: None,
        env: Default::default(),
    });
    j
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_the_grandchild_it_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let mut j = command(
        "tree",
        &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
    );
    j.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let report = job::run(&j, &context(), &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(report.error.as_deref(), Some("timed out"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(Duration::from_secs(3), "grandchild killed", || {
        !process_alive(pid)
    });
}

#[tokio::test]
async fn failures_are_retried_with_growing_waits_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // Fails on the first two attempts, succeeds on the third.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
        c = count.display()
    );
    let mut j = command("flaky", &script);
    j.retry = Some(RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(200),
        backoff: 2.0,
        max_delay: Duration::from_secs(5),
    });
    let started = Instant::now();
    let report = job::run(&j, &context(), &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.attempts, 3);
    // Waits of at least 100 ms and 200 ms (half of 200 ms and of 400 ms).
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_stop_when_attempts_run_out() {
    let mut j = command("broken", "echo 'no probe on slave 3' >&2; exit 4");
    j.retry = Some(RetryPolicy {
        attempts: 2,
        delay: Duration::from_millis(10),
        backoff: 2.0,
        max_delay: Duration::from_millis(50),
    });
    let report = job::run(&j, &context(), &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Failure);
    assert_eq!(report.attempts, 3, "the first try and two retries");
    assert_eq!(
        report.error.as_deref(),
        Some("exit status 4: no probe on slave 3")
    );
}

#[tokio::test]
async fn cancellation_kills_a_running_command_and_skips_retries() {
    let mut j = command("long", "sleep 300");
    j.retry = Some(RetryPolicy {
        attempts: 5,
        delay: Duration::from_millis(10),
        backoff: 1.0,
        max_delay: Duration::from_millis(10),
    });
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let report = job::run(&j, &context(), &cancel).await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.attempts, 1);
}

#[tokio::test]
async fn a_missing_program_is_a_failure_naming_it() {
    let mut j = command("ghost", "");
    j.kind = JobKind::Command(CommandSpec {
        argv: vec!["/nonexistent/aerator-check".into()],
        working_dir: None,
        env: Default::default(),
    });
    let report = job::run(&j, &context(), &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Failure);
    let error = report.error.unwrap();
    assert!(
        error.starts_with("cannot start /nonexistent/aerator-check: "),
        "{error}"
    );
}

#[tokio::test]
async fn working_dir_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = command("env", "");
    j.kind = JobKind::Command(CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "echo \"$POND\" > out".into()],
        working_dir: Some(dir.path().to_path_buf()),
        env: [("POND".to_string(), "7".to_string())].into(),
    });
    let report = job::run(&j, &context(), &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        "7\n"
    );
}
