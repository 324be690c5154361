//! `[metrics]`: the agent's figures in the Prometheus text format (0.0.4) at
//! `/metrics` (SPEC section 9), for a Prometheus, vmagent or Grafana Agent to scrape.
//!
//! Invariants:
//! - One source of truth: every series is read at scrape time from what the heartbeat
//!   reads ([`health::gather`]) and from the counters the store keeps as runs end;
//!   nothing is counted a second time for the endpoint.
//! - A figure the agent cannot know is absent, never invented (as the heartbeat's
//!   `null`): a sensor not read yet has no value, every buffer and job series is
//!   missing while the database cannot be read.
//! - A scrape never holds up a job: it costs the writer two short reads, at most once
//!   per [`FRESH`] however many clients ask (one renders, the others get its body).
//!   The server holds at most [`CONNECTIONS`] connections, cuts each off after
//!   [`CONNECTION_LIMIT`], wants a request's headers within [`HEADER_LIMIT`] and buffers
//!   at most [`MAX_BUFFER`] of them: a slow or hostile client costs bounded memory.
//!
//! Anything but `GET /metrics` (or `HEAD`) answers 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::alarm::Phase;
use crate::health::{self, Figures, Probe, VERSION};
use crate::job::JobContext;
use crate::reading::Quality;
use crate::scheduler::SchedulerHandle;
use crate::store::jobs::{DURATION_BUCKETS_MS, Lifecycle, Outcome, RunStats};
use crate::store::{alarms, events, jobs};

/// A body younger than this is served again instead of read anew.
const FRESH: Duration = Duration::from_secs(1);
/// Connections served at once; more are closed as they arrive.
const CONNECTIONS: usize = 8;
/// How long one connection may last, keep-alive included.
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);
/// How long a request's headers may take to arrive.
const HEADER_LIMIT: Duration = Duration::from_secs(5);
/// The most a connection buffers of a request (hyper's smallest allowed).
const MAX_BUFFER: usize = 8192;

/// What one scrape reports: the heartbeat's figures and the store's counters that
/// only the endpoint shows.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub figures: Figures,
    /// `None` when the database could not be read.
    pub counters: Option<StoreCounters>,
    /// Whether the broker is connected; `None` without `[mqtt]`.
    pub mqtt_connected: Option<bool>,
}

/// What `/metrics` reads from the database beside the heartbeat's figures.
#[derive(Debug, Clone, Default)]
pub struct StoreCounters {
    /// Each job's runs by outcome and their durations, by name.
    pub runs: BTreeMap<String, RunStats>,
    /// Each alarm rule of the configuration and whether it is raised, in order.
    pub alarms: Vec<(String, bool)>,
    pub events_queued: u64,
    pub events_dropped_total: u64,
}

/// Reads every figure for a scrape now. `probe` is the endpoint's own (the
/// heartbeat's CPU share is measured between heartbeats, and a scrape must not move
/// it).
pub async fn scrape(ctx: &JobContext, probe: &Mutex<Probe>) -> Scrape {
    let system = probe
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sample(&ctx.config.agent.state_dir);
    let figures = health::gather(ctx, system).await;
    let rules = ctx.config.alarms.clone();
    let counters = ctx
        .store
        .call(move |c| {
            let states = alarms::load(c, &rules)?;
            Ok(StoreCounters {
                runs: jobs::run_stats(c)?,
                alarms: rules
                    .iter()
                    .zip(states)
                    .map(|(rule, state)| {
                        (rule.id.clone(), matches!(state.phase, Phase::Raised { .. }))
                    })
                    .collect(),
                events_queued: events::queued(c)?,
                events_dropped_total: events::dropped_total(c)?,
            })
        })
        .await;
    let counters = match counters {
        Ok(counters) => Some(counters),
        Err(error) => {
            tracing::debug!(%error, "metrics: cannot read the store's counters; their series are left out");
            None
        }
    };
    Scrape {
        figures,
        counters,
        mqtt_connected: ctx.mqtt.as_ref().map(crate::mqtt::MqttHandle::connected),
    }
}

/// The families of one scrape, in the order they are written.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

type Labels<'a> = &'a [(&'a str, &'a str)];

impl Families {
    /// Adds a family; one without samples is left out (the format has no empty ones).
    fn add(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.0.push(family);
    }

    fn gauges(&mut self, name: &str, help: &str, samples: Vec<Metric>) {
        self.add(name, help, MetricType::GAUGE, samples);
    }

    fn counters(&mut self, name: &str, help: &str, samples: Vec<Metric>) {
        self.add(name, help, MetricType::COUNTER, samples);
    }

    /// One unlabelled gauge, when known.
    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        self.gauges(
            name,
            help,
            value.map(|v| gauge(&[], v)).into_iter().collect(),
        );
    }
}

fn labelled(labels: Labels<'_>) -> Metric {
    Metric::from_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_string());
                pair.set_value((*value).to_string());
                pair
            })
            .collect(),
    )
}

fn gauge(labels: Labels<'_>, value: f64) -> Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = labelled(labels);
    m.set_gauge(g);
    m
}

fn counter(labels: Labels<'_>, value: u64) -> Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = labelled(labels);
    m.set_counter(c);
    m
}

fn histogram(labels: Labels<'_>, runs: &RunStats) -> Metric {
    let buckets = DURATION_BUCKETS_MS
        .iter()
        .zip(runs.le)
        .map(|(bound, count)| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound as f64 / 1000.0);
            b.set_cumulative_count(count);
            b
        })
        .collect();
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(runs.count);
    h.set_sample_sum(runs.sum_ms as f64 / 1000.0);
    let mut m = labelled(labels);
    m.set_histogram(h);
    m
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Every outcome a run can end in; each job has a series for each, 0 until one ends so.
const OUTCOMES: [Outcome; 5] = [
    Outcome::Success,
    Outcome::Failure,
    Outcome::Timeout,
    Outcome::Cancelled,
    Outcome::Aborted,
];

/// The states of `tidegate_job_state`: the lifecycle, or `disabled` in the configuration.
const STATES: [&str; 5] = ["active", "paused", "completed", "failed", "disabled"];

/// The text of one scrape (pure).
pub fn render(s: &Scrape) -> String {
    let f = &s.figures;
    let mut out = Families::default();
    out.gauges(
        "tidegate_build_info",
        "The agent's version, as a label; always 1.",
        vec![gauge(&[("version", VERSION)], 1.0)],
    );
    out.gauge(
        "tidegate_uptime_seconds",
        "Seconds since the agent started.",
        Some(f.uptime.as_secs_f64()),
    );
    out.gauge(
        "tidegate_config_version",
        "The version of the applied remote overlay (0: none).",
        Some(f.config.version as f64),
    );
    out.gauge(
        "tidegate_config_error",
        "1 while the configuration file is broken or the remote overlay was refused (status says why).",
        Some(flag(f.config.error.is_some())),
    );
    out.gauge(
        "tidegate_clock_trusted",
        "1 once the wall clock is synchronised.",
        Some(flag(f.now.trusted)),
    );
    out.gauge(
        "tidegate_mqtt_connected",
        "1 while the MQTT broker is connected (absent without [mqtt]).",
        s.mqtt_connected.map(flag),
    );
    let sys = &f.system;
    let bytes = |v: Option<u64>| v.map(|v| v as f64);
    out.gauge(
        "tidegate_system_memory_used_bytes",
        "The gateway's used memory.",
        bytes(sys.mem_used_bytes),
    );
    out.gauge(
        "tidegate_system_memory_total_bytes",
        "The gateway's memory.",
        bytes(sys.mem_total_bytes),
    );
    out.gauge(
        "tidegate_system_disk_free_bytes",
        "Free space on the file system of the state directory.",
        bytes(sys.disk_free_bytes),
    );
    out.gauge(
        "tidegate_system_load1",
        "The one-minute load average.",
        sys.load1,
    );
    out.gauge(
        "tidegate_system_temperature_celsius",
        "The SoC's temperature.",
        sys.temp_c,
    );
    jobs_families(&mut out, s);
    sensor_families(&mut out, f);
    bus_families(&mut out, f);
    if let Some(store) = &f.store {
        let (b, u) = (&store.buffer, &store.upload);
        out.gauge(
            "tidegate_buffer_pending",
            "Readings not yet acknowledged by the server.",
            Some(b.pending as f64),
        );
        out.counters(
            "tidegate_buffer_dropped_total",
            "Readings dropped to keep the buffer within its limits.",
            vec![counter(&[], b.dropped_total)],
        );
        out.gauge(
            "tidegate_buffer_dead_letter",
            "Readings the server refused, kept aside.",
            Some(b.dead_letter as f64),
        );
        out.gauge(
            "tidegate_buffer_db_bytes",
            "The size of buffer.db and its write-ahead log.",
            bytes(b.db_bytes),
        );
        out.gauge(
            "tidegate_buffer_oldest_pending_timestamp_seconds",
            "When the oldest pending reading was taken.",
            b.oldest_pending.map(seconds),
        );
        out.gauge(
            "tidegate_upload_last_success_timestamp_seconds",
            "When an upload last succeeded.",
            u.last_ok_ms.map(|ms| ms as f64 / 1000.0),
        );
        out.gauge(
            "tidegate_upload_consecutive_failures",
            "Upload attempts failed in a row.",
            Some(u.consecutive_failures as f64),
        );
    }
    if let Some(c) = &s.counters {
        out.gauge(
            "tidegate_events_queued",
            "Events waiting for the broker.",
            Some(c.events_queued as f64),
        );
        out.counters(
            "tidegate_events_dropped_total",
            "Events dropped while the broker was away, to keep at most 1000 queued.",
            vec![counter(&[], c.events_dropped_total)],
        );
        out.gauges(
            "tidegate_alarm_raised",
            "1 while the alarm rule is raised.",
            c.alarms
                .iter()
                .map(|(id, raised)| gauge(&[("alarm", id)], flag(*raised)))
                .collect(),
        );
    }
    let mut text = String::new();
    if let Err(error) = prometheus::TextEncoder::new().encode_utf8(&out.0, &mut text) {
        // Only an empty family fails, and none is added; say so rather than serve half.
        tracing::warn!(%error, "metrics: cannot encode a scrape");
        text.clear();
    }
    text
}

fn jobs_families(out: &mut Families, s: &Scrape) {
    let f = &s.figures;
    // Job series come from the database; none while it cannot be read.
    let (Some(_), Some(counters)) = (&f.store, &s.counters) else {
        return;
    };
    let none = RunStats::default();
    let mut runs = Vec::new();
    let mut durations = Vec::new();
    let mut running = Vec::new();
    let mut state = Vec::new();
    let mut missed = Vec::new();
    let mut last = Vec::new();
    let mut next = Vec::new();
    for (job, record) in &f.jobs {
        let name = job.name.as_str();
        let stats = counters.runs.get(name).unwrap_or(&none);
        for outcome in OUTCOMES {
            let outcome = outcome.as_str();
            let n = stats
                .outcomes
                .iter()
                .find(|(o, _)| o == outcome)
                .map_or(0, |(_, n)| *n);
            runs.push(counter(&[("job", name), ("outcome", outcome)], n));
        }
        durations.push(histogram(&[("job", name)], stats));
        let r = record.as_ref();
        running.push(gauge(&[("job", name)], flag(r.is_some_and(|r| r.running))));
        let current = if job.enabled {
            r.map_or(Lifecycle::Active, |r| r.state).as_str()
        } else {
            "disabled"
        };
        for s in STATES {
            state.push(gauge(&[("job", name), ("state", s)], flag(s == current)));
        }
        missed.push(counter(&[("job", name)], r.map_or(0, |r| r.missed)));
        if let Some(t) = r.and_then(|r| r.last_start) {
            last.push(gauge(&[("job", name)], seconds(t)));
        }
        if let Some(t) = r.and_then(|r| r.next_due) {
            next.push(gauge(&[("job", name)], seconds(t)));
        }
    }
    out.counters(
        "tidegate_job_runs_total",
        "Runs that ended, by outcome (success, failure, timeout, cancelled, aborted).",
        runs,
    );
    out.add(
        "tidegate_job_duration_seconds",
        "How long runs took, retries included.",
        MetricType::HISTOGRAM,
        durations,
    );
    out.gauges(
        "tidegate_job_running",
        "1 while a run of the job is going on.",
        running,
    );
    out.gauges(
        "tidegate_job_state",
        "1 for the job's state: active, paused, completed, failed or disabled.",
        state,
    );
    out.counters(
        "tidegate_job_missed_total",
        "Fires missed: later than their grace, or lost while the agent was down.",
        missed,
    );
    out.gauges(
        "tidegate_job_last_run_timestamp_seconds",
        "When the job's last run started.",
        last,
    );
    out.gauges(
        "tidegate_job_next_run_timestamp_seconds",
        "When the job runs next.",
        next,
    );
}

fn sensor_families(out: &mut Families, f: &Figures) {
    let mut values = Vec::new();
    let mut up = Vec::new();
    for sensor in &f.sensors {
        let Some(last) = sensor.last else {
            continue;
        };
        up.push(gauge(
            &[("sensor", &sensor.id)],
            flag(last.quality == Quality::Good),
        ));
        if let Some(v) = last.good_value.filter(|v| v.is_finite()) {
            let unit = sensor.unit.as_deref().unwrap_or("");
            values.push(gauge(&[("sensor", &sensor.id), ("unit", unit)], v));
        }
    }
    out.gauges(
        "tidegate_sensor_value",
        "The sensor's last good value, in its unit.",
        values,
    );
    out.gauges(
        "tidegate_sensor_up",
        "1 when the sensor's last read was good.",
        up,
    );
}

fn bus_families(out: &mut Families, f: &Figures) {
    let mut requests = Vec::new();
    let mut last_good = Vec::new();
    for (bus, c) in &f.buses {
        let Some(c) = c else { continue };
        let failed = c.timeouts + c.crc_errors + c.exceptions + c.link_errors;
        let results = [
            ("ok", c.requests.saturating_sub(failed)),
            ("timeout", c.timeouts),
            ("crc_error", c.crc_errors),
            ("exception", c.exceptions),
            ("link_error", c.link_errors),
        ];
        for (result, n) in results {
            requests.push(counter(&[("bus", bus), ("result", result)], n));
        }
        if let Some(t) = c.last_good_read {
            last_good.push(gauge(&[("bus", bus)], seconds(t)));
        }
    }
    out.counters(
        "tidegate_bus_requests_total",
        "Modbus transactions by result (ok, timeout, crc_error, exception, link_error).",
        requests,
    );
    out.gauges(
        "tidegate_bus_last_good_read_timestamp_seconds",
        "When a read on the bus last returned a good value.",
        last_good,
    );
}

/// The endpoint's state, shared by its connections.
struct Endpoint {
    scheduler: SchedulerHandle,
    probe: Mutex<Probe>,
    /// The last body and when it was rendered; the lock is held while rendering, so
    /// clients that arrive meanwhile wait for that body instead of reading again.
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Endpoint {
    async fn body(&self) -> Bytes {
        let mut last = self.last.lock().await;
        if let Some((at, body)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return body.clone();
        }
        let ctx = self.scheduler.context();
        let body = Bytes::from(render(&scrape(&ctx, &self.probe).await));
        *last = Some((Instant::now(), body.clone()));
        body
    }
}

/// Binds `listen` and serves `/metrics` until `shutdown`. A port that cannot be bound
/// is logged and the agent goes on without the endpoint.
pub async fn start(
    listen: SocketAddr,
    scheduler: SchedulerHandle,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    match TcpListener::bind(listen).await {
        Ok(listener) => {
            tracing::info!(%listen, "metrics served at /metrics");
            Some(tokio::spawn(serve(listener, scheduler, shutdown)))
        }
        Err(error) => {
            tracing::error!(%listen, %error, "metrics endpoint not started: free the port or change metrics.listen, then restart");
            None
        }
    }
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, scheduler: SchedulerHandle, shutdown: CancellationToken) {
    let endpoint = Arc::new(Endpoint {
        scheduler,
        probe: Mutex::new(Probe::new()),
        last: tokio::sync::Mutex::new(None),
    });
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(%error, "metrics: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics: too many connections; one closed");
            continue;
        };
        let endpoint = Arc::clone(&endpoint);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let endpoint = Arc::clone(&endpoint);
                async move { Ok::<_, std::convert::Infallible>(answer(&endpoint, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_LIMIT)
                .max_buf_size(MAX_BUFFER)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIMIT, connection) => {}
                () = shutdown.cancelled() => {}
            }
            drop(slot);
        });
    }
}

async fn answer(
    endpoint: &Endpoint,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let wanted = request.uri().path() == "/metrics"
        && (request.method() == Method::GET || request.method() == Method::HEAD);
    let (status, content_type, body) = if wanted {
        (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            endpoint.body().await,
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found: the metrics are at /metrics\n"),
        )
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests;
