//! `tidegate jobs [--json]` and `tidegate job run NAME`.
//!
//! Both read the configuration for the set of jobs and the database for their state,
//! so they work while an agent runs; `job run` runs the job in this process and records
//! the run like the agent would.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Failure, load_for_cli, other};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, JobConfig};
use crate::job::{self, JobContext};
use crate::store::jobs::{self as job_store, JobRecord, Origin};
use crate::store::{self, StoreHandle};
use crate::time::format_utc;

/// One line of the listing: the configured job and what the store knows of it.
struct Row<'a> {
    job: &'a JobConfig,
    record: Option<JobRecord>,
}

impl Row<'_> {
    fn state(&self) -> &'static str {
        crate::health::job_state(self.job, self.record.as_ref())
    }

    fn trigger(&self) -> Option<String> {
        self.job.trigger.as_ref().map(ToString::to_string)
    }

    fn to_json(&self) -> Value {
        let r = self.record.as_ref();
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(format_utc);
        json!({
            "name": self.job.name,
            "kind": self.job.kind.name(),
            "trigger": self.trigger(),
            "enabled": self.job.enabled,
            "state": self.state(),
            "last_outcome": r.and_then(|r| r.last_outcome.clone()),
            "last_error": r.and_then(|r| r.last_error.clone()),
            "last_run": time(r.and_then(|r| r.last_start)),
            "last_duration_ms": r.and_then(|r| r.last_duration_ms),
            "next_run": time(r.and_then(|r| r.next_due)),
            "runs": r.map_or(0, |r| r.runs),
            "successes": r.map_or(0, |r| r.successes),
            "failures": r.map_or(0, |r| r.failures),
            "missed": r.map_or(0, |r| r.missed),
            "skipped": r.map_or(0, |r| r.skipped),
        })
    }
}

pub fn list(path: &Path, as_json: bool) -> Result<ExitCode, Failure> {
    let config = load_for_cli(path)?;
    let conn = store::open(&config.agent.state_dir).map_err(other)?;
    let records = job_store::all(&conn).map_err(other)?;
    let rows: Vec<Row<'_>> = config
        .jobs
        .iter()
        .map(|job| Row {
            job,
            record: records.iter().find(|r| r.name == job.name).cloned(),
        })
        .collect();
    if as_json {
        let array = Value::Array(rows.iter().map(Row::to_json).collect());
        println!("{}", serde_json::to_string_pretty(&array).map_err(other)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn table(rows: &[Row<'_>]) -> String {
    let dash = || "-".to_string();
    let short = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(dash, |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
    };
    let mut lines = vec![
        [
            "NAME", "KIND", "TRIGGER", "STATE", "LAST RUN", "OUTCOME", "NEXT RUN", "RUNS",
            "FAILED", "MISSED",
        ]
        .map(String::from),
    ];
    for row in rows {
        let r = row.record.as_ref();
        lines.push([
            row.job.name.clone(),
            row.job.kind.name().to_string(),
            row.trigger().unwrap_or_else(|| "manual".to_string()),
            row.state().to_string(),
            short(r.and_then(|r| r.last_start)),
            r.and_then(|r| r.last_outcome.clone()).unwrap_or_else(dash),
            short(r.and_then(|r| r.next_due)),
            r.map_or(0, |r| r.runs).to_string(),
            r.map_or(0, |r| r.failures).to_string(),
            r.map_or(0, |r| r.missed).to_string(),
        ]);
    }
    super::columns(&lines)
}

pub fn run_one(path: &Path, name: &str) -> Result<ExitCode, Failure> {
    let config = load_for_cli(path)?;
    let Some(job) = config.job(name).cloned() else {
        let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(Failure::Usage(format!(
            "no job named {name:?}; jobs are: {}",
            names.join(", ")
        )));
    };
    crate::logging::init_stderr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(other)?;
    let report = runtime.block_on(run_with_store(Arc::new(config), job))?;
    let secs = report.duration.as_secs_f64();
    let tries = if report.attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{} attempts", report.attempts)
    };
    match &report.error {
        None => {
            println!("job {name}: success ({tries}, {secs:.2}s)");
            Ok(ExitCode::SUCCESS)
        }
        Some(error) => {
            println!(
                "job {name}: {} ({tries}, {secs:.2}s): {error}",
                report.outcome.as_str()
            );
            Ok(ExitCode::from(1))
        }
    }
}

async fn run_with_store(config: Arc<Config>, job: JobConfig) -> Result<job::RunReport, Failure> {
    let conn = store::open(&config.agent.state_dir).map_err(other)?;
    let store = StoreHandle::spawn(conn);
    let (name, kind) = (job.name.clone(), job.kind.name());
    store
        .call(move |c| job_store::ensure(c, &name, kind))
        .await
        .map_err(other)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(config.agent.clock));
    let ctx = JobContext::new(config, clock, store.clone());
    let cancel = CancellationToken::new();
    let interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.cancel();
        }
    });
    let report = job::run_recorded(&job, &ctx, &store, Origin::Manual, None, &cancel).await;
    // The run's record is queued on the writer; wait until it is written.
    store.call(|_| Ok(())).await.map_err(other)?;
    Ok(report)
}
