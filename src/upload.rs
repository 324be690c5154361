//! Getting readings to the farm's server (SPEC section 4): an upload run drains
//! everything pending, batch by batch, oldest first.
//!
//! A run: take the next batch from the store (an open one again, or a new one recorded
//! before it is sent: `store::upload`), encode it once (`encode`), POST it with its
//! Idempotency-Key (`client`), and do what [`policy`] says the answer means: 2xx
//! acknowledges it; 408/425/429/5xx, network errors and 409 retry the same bytes after
//! a full-jitter backoff or the server's `Retry-After`, a bounded number of times a
//! run; 413 halves the batch and the run's batch size; 401/403 stop the run and mark
//! uploading paused (never the readings' fault); any other 4xx splits the batch until
//! the refused readings are alone, and those go to the dead letter while the rest go
//! on. A batch that is not delivered stays recorded and is sent again, with the same
//! key and readings, at the next run.
//!
//! Invariants: at most one batch (its readings, then its body) is in memory; nothing
//! is acknowledged without a 2xx; nothing is dead-lettered except a single reading the
//! server refused; the run stops at once when cancelled, the batch staying recorded.
//! This module does not know when runs happen (the scheduler's `upload` job, or an
//! `upload-now` command through [`run`]).

mod client;
pub mod encode;
pub mod policy;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::clock::BootTime;
use crate::config::UploadConfig;
use crate::job::JobContext;
use crate::store::StoreError;
use crate::store::upload::{self as buffer, Next, Refused};
use policy::Verdict;

/// The knobs of a run that are not configuration: fixed in production, shrunk by tests
/// so a whole status table runs in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The first retry waits up to this (full jitter), doubling with each retry...
    pub backoff_base: Duration,
    /// ...up to this; also the longest `Retry-After` honoured within a run.
    pub backoff_cap: Duration,
    /// Attempts at one batch in one run before the run gives up (the batch stays
    /// recorded for the next run).
    pub attempts: u32,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
            attempts: 6,
        }
    }
}

/// A run that dead-letters this many readings without delivering a single one stops:
/// a server that refuses everything has a wrong URL or a broken endpoint, and
/// isolating every reading of a backlog would move it all into the dead letter.
pub const DEAD_LETTERS_WITHOUT_DELIVERY: u64 = 16;

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Batches the server acknowledged.
    pub batches: u64,
    /// Readings acknowledged.
    pub readings: u64,
    /// Readings moved to the dead letter.
    pub dead_lettered: u64,
    /// The first reading held back (and everything after it), when the run ended there.
    pub held_back_from: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read upload.token_file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upload.token_file {path} {what}")]
    BadToken { path: PathBuf, what: &'static str },
    #[error("cannot set up uploading to {url}: {reason}")]
    Setup { url: String, reason: String },
    #[error("cannot encode batch {key}: {source}")]
    Encode { key: String, source: std::io::Error },
    #[error(
        "uploading paused: the server answered {answer} to batch {key}; check the token in upload.token_file and that the gateway's clock is right (tokens and TLS need it); nothing was dead-lettered and the batch is sent again at the next run"
    )]
    Paused { answer: String, key: String },
    #[error(
        "batch {key} not delivered after {attempts} attempts (last: {last}); it stays recorded and is sent again with the same key at the next run"
    )]
    GaveUp {
        key: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "the server refused every reading sent this run ({dead} dead-lettered, last answer {answer}); check upload.url; the rest stays pending"
    )]
    RefusesEverything { dead: u64, answer: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stopped at shutdown")]
    Stopped,
}

/// One upload run with the production tuning: what the `upload` job and an
/// `upload-now` command call. Without `[upload]` it says readings stay buffered and
/// succeeds. In the agent, prefer `SchedulerHandle::run_now("upload")`, so the job's
/// overlap rule keeps one run at a time (two at once are safe, only wasteful).
pub async fn run(ctx: &JobContext, cancel: &CancellationToken) -> Result<Report, UploadError> {
    run_with(ctx, Tuning::default(), cancel).await
}

/// [`run`] with explicit tuning.
pub async fn run_with(
    ctx: &JobContext,
    tuning: Tuning,
    cancel: &CancellationToken,
) -> Result<Report, UploadError> {
    let Some(config) = ctx.config.upload.as_ref() else {
        tracing::info!("upload: no [upload] section; readings stay buffered");
        return Ok(Report::default());
    };
    let result = drain(ctx, config, tuning, cancel).await;
    match &result {
        Ok(report) => {
            if report.batches + report.dead_lettered > 0 {
                tracing::info!(
                    batches = report.batches,
                    readings = report.readings,
                    dead_lettered = report.dead_lettered,
                    "upload run done"
                );
            } else if report.held_back_from.is_none() {
                tracing::info!("upload run done: nothing pending");
            }
        }
        // Failures that never reached a batch still belong in the status.
        Err(
            e @ (UploadError::Token { .. }
            | UploadError::BadToken { .. }
            | UploadError::Setup { .. }),
        ) => {
            let error = e.to_string();
            if let Err(store) = ctx
                .store
                .call(move |c| buffer::record_failure(c, &error))
                .await
            {
                tracing::warn!(error = %store, "cannot record the upload failure");
            }
        }
        Err(_) => {}
    }
    result
}

async fn drain(
    ctx: &JobContext,
    config: &UploadConfig,
    tuning: Tuning,
    cancel: &CancellationToken,
) -> Result<Report, UploadError> {
    let client = client::Client::new(config)?;
    let url = crate::config::mask_url(&config.url);
    ctx.store.call(move |c| buffer::begin_run(c, &url)).await?;
    let epoch = ctx.store.call(|c| crate::store::epoch(c)).await?;
    let agent = &ctx.config.agent;
    let boot = BootTime::now();
    let mut run = Run {
        ctx,
        config,
        tuning,
        cancel,
        client,
        envelope_gateway: agent.id.clone(),
        envelope_site: agent.site.clone(),
        epoch,
        batch_size: config.batch_size.max(1),
        report: Report::default(),
    };
    loop {
        if cancel.is_cancelled() {
            return Err(UploadError::Stopped);
        }
        let (max, boot, now_ms) = (run.batch_size, boot.clone(), run.now_ms());
        let next = ctx
            .store
            .call(move |c| buffer::next_batch(c, max, &boot, now_ms))
            .await?;
        match next {
            Next::Empty => return Ok(run.report),
            Next::HeldBack { seq } => {
                tracing::info!(
                    seq,
                    "readings from seq {seq} on wait: taken before the clock was trusted, they may still be corrected (at most an hour)"
                );
                run.report.held_back_from = Some(seq);
                return Ok(run.report);
            }
            Next::Batch(batch) => run.deliver(batch).await?,
        }
    }
}

/// The state of one run.
struct Run<'a> {
    ctx: &'a JobContext,
    config: &'a UploadConfig,
    tuning: Tuning,
    cancel: &'a CancellationToken,
    client: client::Client,
    envelope_gateway: String,
    envelope_site: Option<String>,
    epoch: String,
    /// `upload.batch_size`, halved by every 413 of the run.
    batch_size: u32,
    report: Report,
}

impl Run<'_> {
    fn now_ms(&self) -> i64 {
        self.ctx.clock.now().wall.timestamp_millis()
    }

    /// Sends one batch until it is delivered, split, dead-lettered, or the run ends.
    async fn deliver(&mut self, batch: buffer::Batch) -> Result<(), UploadError> {
        let (first, last) = (batch.first_seq, batch.last_seq);
        let key = format!("{}:{}:{first}-{last}", self.envelope_gateway, self.epoch);
        let count = batch.readings.len();
        let envelope = encode::Envelope {
            gateway: &self.envelope_gateway,
            site: self.envelope_site.as_deref(),
            epoch: &self.epoch,
            batch: &key,
        };
        let body = encode::body(
            self.config.format,
            self.config.gzip,
            &envelope,
            &batch.readings,
        )
        .map_err(|source| UploadError::Encode {
            key: key.clone(),
            source,
        })?;
        drop(batch);
        // One encoding for every attempt: a retry is byte for byte the same request.
        let body = Bytes::from(body);
        tracing::debug!(batch = %key, readings = count, bytes = body.len(), "sending batch");
        let mut failures = 0u32;
        loop {
            let sent = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(self.stopped(&key)),
                sent = self.client.post(&key, body.clone()) => sent,
            };
            let now = self.ctx.clock.now();
            let trusted_now = now.trusted.then_some(now.wall);
            let (verdict, status, what, response) = match sent {
                Ok(answer) => {
                    let verdict = policy::classify(
                        answer.status,
                        answer.retry_after.as_deref(),
                        answer.date.as_deref(),
                        trusted_now,
                    );
                    (verdict, Some(answer.status), answer.describe(), answer.body)
                }
                Err(error) => {
                    let hint = if now.trusted || !error.contains("certificate") {
                        ""
                    } else {
                        " (the gateway's clock is not trusted yet: certificates may look invalid)"
                    };
                    (
                        Verdict::Retry { after: None },
                        None,
                        format!("{error}{hint}"),
                        String::new(),
                    )
                }
            };
            let now_ms = now.wall.timestamp_millis();
            match verdict {
                Verdict::Delivered => {
                    let acked = self
                        .ctx
                        .store
                        .call(move |c| buffer::acknowledge(c, first, last, now_ms))
                        .await?;
                    tracing::info!(batch = %key, readings = acked, answer = %what, "batch delivered");
                    self.report.batches += 1;
                    self.report.readings += u64::try_from(acked).unwrap_or(0);
                    return Ok(());
                }
                Verdict::Retry { after } | Verdict::InProgress { after } => {
                    failures += 1;
                    self.record(first, last, status, &what, false).await?;
                    if failures >= self.tuning.attempts {
                        tracing::warn!(batch = %key, attempts = failures, error = %what, "upload failed; giving up until the next run");
                        return Err(UploadError::GaveUp {
                            key,
                            attempts: failures,
                            last: what,
                        });
                    }
                    let wait = policy::wait(
                        after,
                        failures - 1,
                        self.tuning.backoff_base,
                        self.tuning.backoff_cap,
                        fastrand::f64(),
                    );
                    let why = if matches!(verdict, Verdict::InProgress { .. }) {
                        "the server is still working on this batch; sending it again unchanged"
                    } else {
                        "upload failed; retrying the same batch"
                    };
                    tracing::warn!(batch = %key, attempt = failures, error = %what, response = %excerpt(&response), retry_in = ?wait, "{why}");
                    tokio::select! {
                        biased;
                        () = self.cancel.cancelled() => return Err(self.stopped(&key)),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Verdict::Paused => {
                    self.record(first, last, status, &what, true).await?;
                    tracing::error!(batch = %key, answer = %what, response = %excerpt(&response), "uploading paused: check the token and the gateway's clock; nothing was dead-lettered");
                    return Err(UploadError::Paused { answer: what, key });
                }
                Verdict::TooLarge | Verdict::Poison => {
                    if verdict == Verdict::TooLarge {
                        let half = u32::try_from(count.div_ceil(2)).unwrap_or(u32::MAX);
                        self.batch_size = self.batch_size.min(half).max(1);
                    }
                    return self
                        .refused(
                            first,
                            last,
                            key,
                            status.unwrap_or(0),
                            what,
                            response,
                            now_ms,
                        )
                        .await;
                }
            }
        }
    }

    /// The server refused the batch: split it, or dead-letter its only reading.
    #[allow(clippy::too_many_arguments)]
    async fn refused(
        &mut self,
        first: i64,
        last: i64,
        key: String,
        status: u16,
        what: String,
        response: String,
        now_ms: i64,
    ) -> Result<(), UploadError> {
        let (k, r) = (key.clone(), response.clone());
        let outcome = self
            .ctx
            .store
            .call(move |c| buffer::refuse(c, first, last, &k, status, &r, now_ms))
            .await?;
        match outcome {
            Refused::Split([a, b]) => {
                tracing::warn!(batch = %key, answer = %what, response = %excerpt(&response), halves = %format!("{}-{} and {}-{}", a.0, a.1, b.0, b.1), batch_size = self.batch_size, "server refused the batch; sending it in two halves");
            }
            Refused::DeadLettered(seq) => {
                self.report.dead_lettered += 1;
                tracing::error!(batch = %key, seq, answer = %what, response = %excerpt(&response), "server refused this reading; it is kept in the dead letter and the rest goes on");
                if self.report.readings == 0
                    && self.report.dead_lettered >= DEAD_LETTERS_WITHOUT_DELIVERY
                {
                    return Err(UploadError::RefusesEverything {
                        dead: self.report.dead_lettered,
                        answer: what,
                    });
                }
            }
            Refused::Gone => {}
        }
        Ok(())
    }

    async fn record(
        &self,
        first: i64,
        last: i64,
        status: Option<u16>,
        what: &str,
        pause: bool,
    ) -> Result<(), UploadError> {
        let what = what.to_string();
        self.ctx
            .store
            .call(move |c| buffer::record_attempt(c, first, last, status, &what, pause))
            .await?;
        Ok(())
    }

    fn stopped(&self, key: &str) -> UploadError {
        tracing::info!(batch = %key, "upload stopped at shutdown; the batch stays recorded and is sent again with the same key");
        UploadError::Stopped
    }
}

/// The start of a server's answer, for a log line.
fn excerpt(response: &str) -> String {
    response
        .chars()
        .take(buffer::RESPONSE_EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
