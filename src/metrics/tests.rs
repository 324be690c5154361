//! Tests of the parent module.

use serde_json::Value as Json;

use super::*;
use crate::health::heartbeat_payload;
use crate::health::tests::known;

/// The text read as Prometheus reads it, after checking that every line is a
/// comment or a sample the parser understood (it skips what it cannot read).
fn parse(text: &str) -> prometheus_parse::Scrape {
    use prometheus_parse::LineInfo;
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => {
                typed.insert(metric_alias.unwrap_or(metric_name));
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(metric_name);
                assert!(typed.contains(family), "no # TYPE before {line}");
            }
            other => panic!("not the text format: {line:?} ({other:?})"),
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| &s.value)
}

/// A gauge's or counter's value.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match sample(scrape, name, labels)? {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => Some(*v),
        other => panic!("{name} is not a single value: {other:?}"),
    }
}

fn secs(json: &Json) -> f64 {
    let t: DateTime<Utc> = json.as_str().unwrap().parse().unwrap();
    seconds(t)
}

fn known_scrape() -> Scrape {
    let stats = RunStats {
        outcomes: vec![("success".to_string(), 11), ("timeout".to_string(), 1)],
        le: [0, 3, 9, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11],
        count: 11,
        sum_ms: 1_250,
    };
    Scrape {
        figures: known(),
        counters: Some(StoreCounters {
            runs: BTreeMap::from([("sample".to_string(), stats)]),
            alarms: vec![
                ("do-low".to_string(), true),
                ("temp-high".to_string(), false),
            ],
            events_queued: 3,
            events_dropped_total: 2,
        }),
        mqtt_connected: Some(true),
    }
}

#[test]
fn every_named_series_is_there_with_the_heartbeats_figures() {
    let scrape = known_scrape();
    let m = parse(&render(&scrape));
    let hb = heartbeat_payload(&scrape.figures);
    for name in [
        "tidegate_build_info",
        "tidegate_job_runs_total",
        "tidegate_job_duration_seconds",
        "tidegate_job_running",
        "tidegate_job_next_run_timestamp_seconds",
        "tidegate_sensor_value",
        "tidegate_sensor_up",
        "tidegate_bus_requests_total",
        "tidegate_buffer_pending",
        "tidegate_buffer_dropped_total",
        "tidegate_buffer_dead_letter",
        "tidegate_buffer_db_bytes",
        "tidegate_upload_last_success_timestamp_seconds",
        "tidegate_mqtt_connected",
        "tidegate_clock_trusted",
        "tidegate_config_version",
        "tidegate_events_dropped_total",
        "tidegate_alarm_raised",
    ] {
        assert!(sample(&m, name, &[]).is_some(), "{name} missing");
    }
    assert_eq!(
        value(&m, "tidegate_build_info", &[("version", VERSION)]),
        Some(1.0)
    );
    let figure = |path: &str| hb.pointer(path).unwrap().as_f64().unwrap();
    assert_eq!(
        value(&m, "tidegate_uptime_seconds", &[]),
        Some(figure("/uptime_s"))
    );
    assert_eq!(
        value(&m, "tidegate_config_version", &[]),
        Some(figure("/config_version"))
    );
    assert_eq!(value(&m, "tidegate_config_error", &[]), Some(0.0));
    assert_eq!(value(&m, "tidegate_clock_trusted", &[]), Some(1.0));
    assert_eq!(value(&m, "tidegate_mqtt_connected", &[]), Some(1.0));
    for (series, path) in [
        ("tidegate_buffer_pending", "/buffer/pending"),
        ("tidegate_buffer_dropped_total", "/buffer/dropped_total"),
        ("tidegate_buffer_dead_letter", "/buffer/dead_letter"),
        ("tidegate_buffer_db_bytes", "/buffer/db_bytes"),
        (
            "tidegate_upload_consecutive_failures",
            "/upload/consecutive_failures",
        ),
        (
            "tidegate_system_memory_used_bytes",
            "/system/mem_used_bytes",
        ),
        ("tidegate_system_disk_free_bytes", "/system/disk_free_bytes"),
        ("tidegate_system_load1", "/system/load1"),
        ("tidegate_system_temperature_celsius", "/system/temp_c"),
    ] {
        assert_eq!(value(&m, series, &[]), Some(figure(path)), "{series}");
    }
    assert_eq!(
        value(&m, "tidegate_upload_last_success_timestamp_seconds", &[]),
        Some(secs(&hb["upload"]["last_success_ts"]))
    );
    assert_eq!(
        value(&m, "tidegate_buffer_oldest_pending_timestamp_seconds", &[]),
        Some(secs(&hb["buffer"]["oldest_pending_ts"]))
    );

    // Jobs: each configured job, its heartbeat times, running and state.
    for (name, job) in hb["jobs"].as_object().unwrap() {
        let job_label = [("job", name.as_str())];
        let running = value(&m, "tidegate_job_running", &job_label);
        assert_eq!(running, Some(flag(job["state"] == "running")), "{name}");
        let next = value(&m, "tidegate_job_next_run_timestamp_seconds", &job_label);
        assert_eq!(next, Some(secs(&job["next_run"])), "{name}");
        let last = value(&m, "tidegate_job_last_run_timestamp_seconds", &job_label);
        assert_eq!(last, Some(secs(&job["last_run"])), "{name}");
        let missed = value(&m, "tidegate_job_missed_total", &job_label);
        assert_eq!(missed, job["missed"].as_f64(), "{name}");
    }
    let state = |job: &str, s: &str| value(&m, "tidegate_job_state", &[("job", job), ("state", s)]);
    assert_eq!(state("cleanup", "paused"), Some(1.0));
    assert_eq!(state("cleanup", "active"), Some(0.0));
    assert_eq!(state("upload", "disabled"), Some(1.0));
    let runs = |outcome: &str| {
        value(
            &m,
            "tidegate_job_runs_total",
            &[("job", "sample"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        [
            runs("success"),
            runs("failure"),
            runs("timeout"),
            runs("cancelled"),
            runs("aborted")
        ],
        [Some(11.0), Some(0.0), Some(1.0), Some(0.0), Some(0.0)]
    );
    assert_eq!(
        value(
            &m,
            "tidegate_job_runs_total",
            &[("job", "heartbeat"), ("outcome", "success")]
        ),
        Some(0.0),
        "a job without runs counts 0 in every outcome"
    );
    let Some(prometheus_parse::Value::Histogram(buckets)) =
        sample(&m, "tidegate_job_duration_seconds", &[("job", "sample")])
    else {
        panic!("no duration histogram for sample");
    };
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
    assert_eq!(
        (at(0.005), at(0.01), at(0.025), at(1.0)),
        (Some(0.0), Some(3.0), Some(9.0), Some(11.0))
    );
    assert_eq!(at(f64::INFINITY), Some(11.0));
    assert_eq!(buckets.len(), DURATION_BUCKETS_MS.len() + 1);
    let sum = value(
        &m,
        "tidegate_job_duration_seconds_sum",
        &[("job", "sample")],
    );
    let count = value(
        &m,
        "tidegate_job_duration_seconds_count",
        &[("job", "sample")],
    );
    assert_eq!((sum, count), (Some(1.25), Some(11.0)));

    // Sensors: enabled ones read at least once; a bad one keeps its last good value.
    let bad: Vec<&str> = hb["sensors"]["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(bad, ["pond7.ph"]);
    let up = |id: &str| value(&m, "tidegate_sensor_up", &[("sensor", id)]);
    assert_eq!(
        (up("pond7.do"), up("pond7.temp"), up("pond7.ph")),
        (Some(1.0), Some(1.0), Some(0.0))
    );
    let ups = m
        .samples
        .iter()
        .filter(|s| s.metric == "tidegate_sensor_up");
    assert_eq!(
        ups.filter(|s| s.value == prometheus_parse::Value::Gauge(1.0))
            .count() as u64,
        hb["sensors"]["good"].as_u64().unwrap()
    );
    assert_eq!(
        value(
            &m,
            "tidegate_sensor_value",
            &[("sensor", "pond7.do"), ("unit", "")]
        ),
        Some(7.5)
    );
    assert_eq!(
        value(&m, "tidegate_sensor_value", &[("sensor", "pond7.ph")]),
        Some(7.1)
    );
    assert_eq!(up("pond7.orp"), None, "never read");

    // Buses: the results add up to the heartbeat's requests.
    for (bus, figures) in hb["buses"].as_object().unwrap() {
        let total: f64 = ["ok", "timeout", "crc_error", "exception", "link_error"]
            .iter()
            .map(|r| {
                value(
                    &m,
                    "tidegate_bus_requests_total",
                    &[("bus", bus), ("result", r)],
                )
                .unwrap()
            })
            .sum();
        assert_eq!(Some(total), figures["requests"].as_f64(), "{bus}");
        for (result, key) in [
            ("timeout", "timeouts"),
            ("crc_error", "crc_errors"),
            ("exception", "exceptions"),
        ] {
            let n = value(
                &m,
                "tidegate_bus_requests_total",
                &[("bus", bus), ("result", result)],
            );
            assert_eq!(n, figures[key].as_f64(), "{bus} {result}");
        }
    }
    assert_eq!(
        value(
            &m,
            "tidegate_bus_requests_total",
            &[("bus", "rs485-a"), ("result", "ok")]
        ),
        Some(6.0)
    );

    assert_eq!(value(&m, "tidegate_events_dropped_total", &[]), Some(2.0));
    assert_eq!(value(&m, "tidegate_events_queued", &[]), Some(3.0));
    assert_eq!(
        value(&m, "tidegate_alarm_raised", &[("alarm", "do-low")]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "tidegate_alarm_raised", &[("alarm", "temp-high")]),
        Some(0.0)
    );
}

#[test]
fn what_is_not_known_is_left_out() {
    let mut scrape = known_scrape();
    let f = &mut scrape.figures;
    f.store = None;
    f.system = Default::default();
    f.config.error = Some("t.toml:3: agent.id: invalid".to_string());
    for sensor in &mut f.sensors {
        sensor.last = None;
    }
    f.buses[0].1 = None;
    scrape.counters = None;
    scrape.mqtt_connected = None;
    let text = render(&scrape);
    let m = parse(&text);
    let names: std::collections::BTreeSet<&str> =
        m.samples.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "tidegate_build_info",
            "tidegate_bus_requests_total",
            "tidegate_clock_trusted",
            "tidegate_config_error",
            "tidegate_config_version",
            "tidegate_uptime_seconds",
        ],
        "{text}"
    );
    assert_eq!(value(&m, "tidegate_config_error", &[]), Some(1.0));
    assert!(sample(&m, "tidegate_bus_requests_total", &[("bus", "rs485-a")]).is_none());
}

#[test]
fn label_values_are_escaped() {
    let mut scrape = known_scrape();
    scrape.figures.sensors[0].unit = Some("mg/L \"dissolved\" \\ O2\n".to_string());
    let text = render(&scrape);
    assert!(
        text.contains(
            r#"tidegate_sensor_value{sensor="pond7.do",unit="mg/L \"dissolved\" \\ O2\n"} 7.5"#
        ),
        "{text}"
    );
}
