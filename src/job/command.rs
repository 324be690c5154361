//! A farm's own program run as a job: its output to the log, its exit code as the
//! outcome, and its whole process group killed at a timeout or at shutdown.
//!
//! Invariant: every command runs in a new process group whose id is the child's pid,
//! so a kill reaches the grandchildren a shell script started too.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::config::CommandSpec;

/// How long output already written may take to reach the log after the command exits.
const DRAIN: Duration = Duration::from_millis(500);

pub async fn run(
    job: &str,
    spec: &CommandSpec,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let program = spec
        .argv
        .first()
        .ok_or_else(|| Failure::Error("empty command".into()))?;
    let mut command = Command::new(program);
    command
        .args(&spec.argv[1..])
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| Failure::Error(format!("cannot start {program}: {e}")))?;
    let group = child.id();
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(pump(job.to_string(), out, false)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(pump(job.to_string(), err, true)));

    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        () = limit => {
            kill_group(group);
            let _ = child.wait().await;
            return Err(Failure::Timeout);
        }
        () = cancel.cancelled() => {
            kill_group(group);
            let _ = child.wait().await;
            return Err(Failure::Cancelled);
        }
    };
    let _ = collect(stdout).await;
    let last_err = collect(stderr).await;
    let status = status.map_err(|e| Failure::Error(format!("waiting for {program}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let what = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "failed".to_string(),
    };
    Err(Failure::Error(match last_err {
        Some(line) => format!("{what}: {line}"),
        None => what,
    }))
}

/// Sends each line of output to the log; returns the last non-empty line.
async fn pump(job: String, stream: impl AsyncRead + Unpin, is_stderr: bool) -> Option<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut last = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if is_stderr {
            tracing::warn!(job = %job, stream = "stderr", "{line}");
        } else {
            tracing::info!(job = %job, stream = "stdout", "{line}");
        }
        if !line.trim().is_empty() {
            last = Some(line.chars().take(200).collect());
        }
    }
    last
}

/// Waits briefly for a pump: a background grandchild may hold the pipe open for ever.
async fn collect(pump: Option<tokio::task::JoinHandle<Option<String>>>) -> Option<String> {
    let mut pump = pump?;
    match tokio::time::timeout(DRAIN, &mut pump).await {
        Ok(result) => result.ok().flatten(),
        Err(_) => {
            pump.abort();
            None
        }
    }
}

fn kill_group(group: Option<u32>) {
    let Some(pgid) = group.and_then(|g| libc::pid_t::try_from(g).ok()) else {
        return;
    };
    // SAFETY: plain syscall; a negative pid addresses the process group we created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
