//! Reading a config tree into a validated [`Config`], collecting every problem.
//!
//! Invariants: the whole document is always read, so one pass reports every unknown
//! key, wrong type, bad value and broken cross-reference (sensor → bus, job → sensor,
//! alarm → sensor/job) as its own `ConfigError`, sorted into document order. A value
//! that is wrong is replaced by its default only to keep reading; a document with any
//! error never yields a `Config`. Defaults are SPEC section 2's, and the four built-in
//! jobs are always present. This module reads text and the system's zone setting; it
//! does not touch `state_dir` (that is `last_good`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::node::{self, Entry, Node, Table, Value};
use super::units::{parse_duration, parse_every, parse_size};
use super::{
    AgentConfig, AlarmConfig, BufferConfig, BusConfig, BusKind, ClockMode, CommandSpec, Config,
    ConfigError, ConfigErrors, CronExpr, DEFAULT_STATE_DIR, JobConfig, JobKind, MetricsConfig,
    MqttConfig, Overlap, Parity, RegisterMap, RetryPolicy, SensorConfig, SensorSource, Severity,
    SimModel, Table as RegTable, Threshold, Trigger, UploadConfig, UploadFormat, ValueType,
    WordOrder,
};

/// The built-in jobs, their kinds and default triggers (SPEC section 1).
pub(crate) const BUILT_IN_JOBS: [(&str, &str, &str); 4] = [
    ("cleanup", "cron", "30 3 * * *"),
    ("heartbeat", "every", "30s"),
    ("sample", "every", "5m"),
    ("upload", "every", "1h"),
];

const TOP_KEYS: &[&str] = &[
    "agent", "mqtt", "upload", "buffer", "metrics", "bus", "sensor", "alarm", "jobs",
];
const AGENT_KEYS: &[&str] = &[
    "id",
    "site",
    "state_dir",
    "log_dir",
    "log_max_size",
    "log_keep",
    "log_max_age",
    "max_running",
    "shutdown_grace",
    "timezone",
    "clock",
];
const MQTT_KEYS: &[&str] = &[
    "url",
    "username",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "topic_prefix",
    "remote_config",
    "allow_remote_commands",
    "config_hmac_key_file",
    "config_confirm",
];
const UPLOAD_KEYS: &[&str] = &[
    "url",
    "token_file",
    "format",
    "batch_size",
    "timeout",
    "gzip",
];
const BUFFER_KEYS: &[&str] = &["max_rows", "max_size", "min_free_disk", "keep_uploaded"];
const METRICS_KEYS: &[&str] = &["listen"];
const BUS_KEYS: &[&str] = &[
    "name",
    "kind",
    "port",
    "baud",
    "parity",
    "data_bits",
    "stop_bits",
    "address",
    "timeout",
    "retries",
    "frame_gap",
];
const RTU_KEYS: &[&str] = &["port", "baud", "parity", "data_bits", "stop_bits"];
const SENSOR_KEYS: &[&str] = &[
    "id",
    "bus",
    "enabled",
    "unit",
    "slave",
    "table",
    "register",
    "type",
    "word_order",
    "scale",
    "offset",
    "model",
];
const REGISTER_KEYS: &[&str] = &[
    "slave",
    "table",
    "register",
    "type",
    "word_order",
    "scale",
    "offset",
];
const MODEL_KEYS: &[&str] = &["base", "amplitude", "period", "noise"];
const ALARM_KEYS: &[&str] = &[
    "id",
    "sensor",
    "below",
    "above",
    "for",
    "clear_above",
    "clear_below",
    "severity",
    "run",
];
const JOB_KEYS: &[&str] = &[
    "kind",
    "every",
    "cron",
    "at",
    "enabled",
    "start",
    "end",
    "timeout",
    "retry",
    "jitter",
    "misfire_grace",
    "coalesce",
    "overlap",
    "sensors",
    "command",
    "working_dir",
    "env",
];
const RETRY_KEYS: &[&str] = &["attempts", "delay", "backoff", "max_delay"];
const TRIGGER_KEYS: [&str; 3] = ["every", "cron", "at"];

/// Reads a config file; `origin` in every error is the path as given.
pub fn load(path: &Path) -> Result<(Config, String), ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            path: "file".to_owned(),
            message: format!("cannot read: {}", lowercase_first(&e.to_string())),
        }])
    })?;
    let config = parse_str(&text, &origin)?;
    Ok((config, text))
}

/// Reads and validates a TOML document.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    match node::from_toml(text) {
        Ok(root) => read_config(&root, origin),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            origin: origin.to_owned(),
            line: e.line,
            path: "syntax".to_owned(),
            message: e.message,
        }])),
    }
}

/// Reads and validates a JSON document of the config file's shape (a remote overlay
/// once laid over the file); errors carry no lines.
pub fn parse_json(value: &serde_json::Value, origin: &str) -> Result<Config, ConfigErrors> {
    let root = match node::from_json(value) {
        Ok(Node {
            value: Value::Table(t),
            ..
        }) => t,
        Ok(other) => {
            return Err(ConfigErrors(vec![ConfigError {
                origin: origin.to_owned(),
                line: None,
                path: "config".to_owned(),
                message: format!("expected an object, got {}", other.value.type_name()),
            }]));
        }
        Err(errors) => {
            return Err(ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| ConfigError {
                        origin: origin.to_owned(),
                        line: None,
                        path: e.path,
                        message: e.message,
                    })
                    .collect(),
            ));
        }
    };
    read_config(&root, origin)
}

/// Reads a whole tree. Shared by TOML and JSON so both are validated alike.
pub(crate) fn read_config(root: &Table, origin: &str) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        origin,
        errors: Vec::new(),
    };
    let top = Tbl {
        t: root,
        path: String::new(),
        line: None,
    };
    top.check_keys(&mut cx, TOP_KEYS);

    let agent = read_agent(&mut cx, &top);
    let mqtt = top
        .table(&mut cx, "mqtt")
        .map(|t| read_mqtt(&mut cx, &t, &agent));
    let upload = top
        .table(&mut cx, "upload")
        .map(|t| read_upload(&mut cx, &t));
    let buffer_table = top
        .table(&mut cx, "buffer")
        .unwrap_or_else(|| top.empty("buffer"));
    let buffer = read_buffer(&mut cx, &buffer_table);
    let metrics = top
        .table(&mut cx, "metrics")
        .and_then(|t| read_metrics(&mut cx, &t));
    let buses = read_buses(&mut cx, &top);
    let sensors = read_sensors(&mut cx, &top, &buses);
    let known = Known::gather(&top);
    let jobs = read_jobs(&mut cx, &top, &known);
    let alarms = read_alarms(&mut cx, &top, &known);

    if cx.errors.is_empty() {
        Ok(Config {
            agent,
            mqtt,
            upload,
            buffer,
            metrics,
            buses,
            sensors,
            alarms,
            jobs,
        })
    } else {
        // Errors without a line (a missing section) come first; the rest by line. The sort
        // is stable, so a JSON document keeps the order it was read in.
        cx.errors.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors(cx.errors))
    }
}

/// Every sensor id and job name written in the document, valid or not, so a reference
/// to an entry that has its own error is not reported a second time as unknown.
struct Known {
    sensors: Vec<String>,
    jobs: Vec<String>,
}

impl Known {
    fn gather(top: &Tbl<'_>) -> Known {
        let mut sensors = Vec::new();
        if let Some(Value::Array(items)) = top.entry("sensor").map(|e| &e.node.value) {
            for item in items {
                if let Value::Table(t) = &item.value
                    && let Some(Value::String(id)) = t.get("id").map(|e| &e.node.value)
                {
                    sensors.push(id.clone());
                }
            }
        }
        let mut jobs: Vec<String> = BUILT_IN_JOBS
            .iter()
            .map(|(n, _, _)| (*n).to_owned())
            .collect();
        if let Some(Value::Table(t)) = top.entry("jobs").map(|e| &e.node.value) {
            jobs.extend(t.entries.iter().map(|e| e.key.clone()));
        }
        Known { sensors, jobs }
    }
}

/// Collects errors for one document.
struct Cx<'a> {
    origin: &'a str,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    fn error(&mut self, line: Option<u32>, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            origin: self.origin.to_owned(),
            line,
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A table being read, with the key path leading to it and the line of its header.
struct Tbl<'a> {
    t: &'a Table,
    path: String,
    line: Option<u32>,
}

static EMPTY: Table = Table {
    entries: Vec::new(),
};

impl<'a> Tbl<'a> {
    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A stand-in for an absent optional section, so its defaults come from one place.
    fn empty(&self, key: &str) -> Tbl<'static> {
        Tbl {
            t: &EMPTY,
            path: self.key_path(key),
            line: None,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.t.get(key).is_some()
    }

    fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.t.get(key)
    }

    fn check_keys(&self, cx: &mut Cx<'_>, allowed: &[&str]) {
        for e in &self.t.entries {
            if !allowed.contains(&e.key.as_str()) {
                cx.error(
                    e.line,
                    self.key_path(&e.key),
                    format!("unknown key {:?}", e.key),
                );
            }
        }
    }

    /// Reports `key` as not allowed here, with the reason.
    fn reject(&self, cx: &mut Cx<'_>, key: &str, why: &str) {
        if let Some(e) = self.entry(key) {
            cx.error(e.line, self.key_path(key), why.to_owned());
        }
    }

    fn missing(&self, cx: &mut Cx<'_>, key: &str) {
        cx.error(self.line, self.key_path(key), "missing required key");
    }

    fn wrong_type(&self, cx: &mut Cx<'_>, e: &Entry, expected: &str) {
        cx.error(
            e.line,
            self.key_path(&e.key),
            format!("expected {expected}, got {}", e.node.value.type_name()),
        );
    }

    /// Reads a value with `read`, which gives `None` for a wrong type; then checks it
    /// with `check`, whose message is reported at the key's line.
    fn get<T, U>(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
        expected: &str,
        read: impl FnOnce(&'a Value) -> Option<U>,
        check: impl FnOnce(U) -> Result<T, String>,
    ) -> Option<T> {
        let e = self.entry(key)?;
        let Some(raw) = read(&e.node.value) else {
            self.wrong_type(cx, e, expected);
            return None;
        };
        match check(raw) {
            Ok(v) => Some(v),
            Err(message) => {
                cx.error(e.line, self.key_path(key), message);
                None
            }
        }
    }

    fn string_with<T>(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.get(cx, key, "a string", as_str, check)
    }

    fn string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        self.string_with(cx, key, |s| Ok(s.to_owned()))
    }

    fn required_string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        if !self.has(key) {
            self.missing(cx, key);
        }
        self.string(cx, key)
    }

    fn path(&self, cx: &mut Cx<'_>, key: &str) -> Option<PathBuf> {
        self.string_with(cx, key, |s| {
            if s.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(PathBuf::from(s))
            }
        })
    }

    fn bool(&self, cx: &mut Cx<'_>, key: &str) -> Option<bool> {
        self.get(
            cx,
            key,
            "a boolean",
            |v| {
                if let Value::Bool(b) = v {
                    Some(*b)
                } else {
                    None
                }
            },
            Ok,
        )
    }

    fn int_in<T: TryFrom<i64>>(&self, cx: &mut Cx<'_>, key: &str, min: i64, max: i64) -> Option<T> {
        self.get(cx, key, "an integer", as_int, |n| {
            if n < min || n > max {
                Err(range_message(n, min, max))
            } else {
                T::try_from(n).map_err(|_| range_message(n, min, max))
            }
        })
    }

    fn float(&self, cx: &mut Cx<'_>, key: &str) -> Option<f64> {
        self.get(cx, key, "a number", as_float, |f| {
            if f.is_finite() {
                Ok(f)
            } else {
                Err("must be a finite number".to_owned())
            }
        })
    }

    fn duration(&self, cx: &mut Cx<'_>, key: &str) -> Option<Duration> {
        self.string_with(cx, key, parse_duration)
    }

    fn size(&self, cx: &mut Cx<'_>, key: &str) -> Option<u64> {
        self.get(cx, key, "a size", as_size_source, |s| match s {
            SizeSource::Text(t) => parse_size(t),
            SizeSource::Bytes(n) => u64::try_from(n).map_err(|_| format!("invalid size {n}")),
        })
    }

    fn time(&self, cx: &mut Cx<'_>, key: &str) -> Option<DateTime<Utc>> {
        self.get(cx, key, "an RFC 3339 time", as_time_text, parse_time)
    }

    fn one_of<T: Copy>(&self, cx: &mut Cx<'_>, key: &str, choices: &[(&str, T)]) -> Option<T> {
        self.string_with(cx, key, |s| {
            choices
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<String> =
                        choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                    format!("invalid value {s:?}: expected one of {}", names.join(", "))
                })
        })
    }

    fn table(&self, cx: &mut Cx<'_>, key: &str) -> Option<Tbl<'a>> {
        let e = self.entry(key)?;
        match &e.node.value {
            Value::Table(t) => Some(Tbl {
                t,
                path: self.key_path(key),
                line: e.node.line.or(e.line),
            }),
            _ => {
                self.wrong_type(cx, e, "a table");
                None
            }
        }
    }

    fn array(&self, cx: &mut Cx<'_>, key: &str) -> Option<&'a [Node]> {
        self.get(
            cx,
            key,
            "an array",
            |v| {
                if let Value::Array(a) = v {
                    Some(a.as_slice())
                } else {
                    None
                }
            },
            Ok,
        )
    }

    /// An array of strings; a wrong element is reported at its own index.
    fn strings(&self, cx: &mut Cx<'_>, key: &str) -> Option<Vec<(String, Option<u32>)>> {
        let items = self.array(cx, key)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(s) => out.push((s.clone(), item.line)),
                other => {
                    ok = false;
                    cx.error(
                        item.line,
                        format!("{}[{i}]", self.key_path(key)),
                        format!("expected a string, got {}", other.type_name()),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    /// `[[name]]` entries as tables, each with its `name[i]` path.
    fn tables(&self, cx: &mut Cx<'_>, key: &str) -> Vec<Tbl<'a>> {
        let Some(items) = self.array(cx, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.key_path(key));
            match &item.value {
                Value::Table(t) => out.push(Tbl {
                    t,
                    path,
                    line: item.line,
                }),
                other => cx.error(
                    item.line,
                    path,
                    format!("expected a table, got {}", other.type_name()),
                ),
            }
        }
        out
    }
}

enum SizeSource<'a> {
    Text(&'a str),
    Bytes(i64),
}

fn as_str(v: &Value) -> Option<&str> {
    if let Value::String(s) = v {
        Some(s)
    } else {
        None
    }
}

fn as_int(v: &Value) -> Option<i64> {
    if let Value::Integer(n) = v {
        Some(*n)
    } else {
        None
    }
}

#[allow(clippy::cast_precision_loss)] // config numbers written as integers are small
fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Integer(n) => Some(*n as f64),
        _ => None,
    }
}

fn as_size_source(v: &Value) -> Option<SizeSource<'_>> {
    match v {
        Value::String(s) => Some(SizeSource::Text(s)),
        Value::Integer(n) => Some(SizeSource::Bytes(*n)),
        _ => None,
    }
}

fn as_time_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) | Value::Datetime(s) => Some(s),
        _ => None,
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("invalid RFC 3339 time {text:?} (a date, a time and an offset, e.g. \"2026-12-25T10:00:00+09:00\")"))
}

fn range_message(n: i64, min: i64, max: i64) -> String {
    if max >= i64::from(u32::MAX) {
        format!("must be at least {min}, got {n}")
    } else {
        format!("must be {min}..={max}, got {n}")
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_agent_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(is_name_char) {
        Err(format!(
            "invalid id {id:?}: use 1 to 64 letters, digits, \"_\" or \"-\""
        ))
    } else {
        Ok(id.to_owned())
    }
}

fn check_sensor_id(id: &str) -> Result<String, String> {
    if id.is_empty() || !id.chars().all(|c| is_name_char(c) || c == '.') {
        Err(format!(
            "invalid id {id:?}: use letters, digits, \"_\", \"-\" or \".\""
        ))
    } else {
        Ok(id.to_owned())
    }
}

fn check_nonempty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

/// A URL for messages: the password in its userinfo, if any, replaced by `***`.
pub(crate) fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// Checks that `url` uses one of `schemes` and names a host.
fn check_url(url: &str, schemes: &[&str]) -> Result<String, String> {
    let shown = mask_url(url);
    let wanted = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("invalid url {shown:?}: must start with {wanted}"));
    };
    if !schemes.contains(&scheme) {
        return Err(format!("invalid url {shown:?}: must start with {wanted}"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || url.contains(char::is_whitespace) {
        return Err(format!("invalid url {shown:?}: no host"));
    }
    Ok(url.to_owned())
}

/// The system's zone when `agent.timezone` is absent: `TZ`, then the `/etc/localtime`
/// link, then `/etc/timezone`, else UTC.
pub(crate) fn system_timezone() -> Tz {
    zone_from_sources(
        std::env::var("TZ").ok().as_deref(),
        std::fs::read_link("/etc/localtime").ok().as_deref(),
        std::fs::read_to_string("/etc/timezone").ok().as_deref(),
    )
}

fn zone_from_sources(
    tz_env: Option<&str>,
    localtime_link: Option<&Path>,
    etc_timezone: Option<&str>,
) -> Tz {
    let from_env = tz_env.and_then(|v| v.trim().trim_start_matches(':').parse::<Tz>().ok());
    let from_link = || {
        let link = localtime_link?.to_str()?;
        let (_, name) = link.rsplit_once("zoneinfo/")?;
        name.parse::<Tz>().ok()
    };
    let from_file = || etc_timezone?.trim().parse::<Tz>().ok();
    from_env
        .or_else(from_link)
        .or_else(from_file)
        .unwrap_or(Tz::UTC)
}

fn read_agent(cx: &mut Cx<'_>, top: &Tbl<'_>) -> AgentConfig {
    let t = top.table(cx, "agent").unwrap_or_else(|| top.empty("agent"));
    t.check_keys(cx, AGENT_KEYS);
    if !t.has("id") {
        t.missing(cx, "id");
    }
    let id = t.string_with(cx, "id", check_agent_id).unwrap_or_default();
    let log_dir = match t.string(cx, "log_dir") {
        Some(s) if s.is_empty() => None,
        Some(s) => Some(PathBuf::from(s)),
        None => Some(PathBuf::from("/var/log/tidegate")),
    };
    AgentConfig {
        id,
        site: t.string_with(cx, "site", check_nonempty),
        state_dir: t
            .path(cx, "state_dir")
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        log_dir,
        log_max_size: t.size(cx, "log_max_size").unwrap_or(10 << 20),
        log_keep: t
            .int_in(cx, "log_keep", 0, i64::from(u32::MAX))
            .unwrap_or(5),
        log_max_age: t
            .duration(cx, "log_max_age")
            .unwrap_or(Duration::from_secs(7 * 86_400)),
        max_running: t.int_in(cx, "max_running", 1, i64::MAX).unwrap_or(4),
        shutdown_grace: t
            .duration(cx, "shutdown_grace")
            .unwrap_or(Duration::from_secs(5)),
        timezone: t
            .string_with(cx, "timezone", |s| {
                s.parse::<Tz>().map_err(|_| {
                    format!("unknown time zone {s:?} (an IANA name like \"Asia/Tokyo\")")
                })
            })
            .unwrap_or_else(system_timezone),
        clock: t
            .one_of(
                cx,
                "clock",
                &[("ntp", ClockMode::Ntp), ("trusted", ClockMode::Trusted)],
            )
            .unwrap_or(ClockMode::Ntp),
    }
}

fn read_mqtt(cx: &mut Cx<'_>, t: &Tbl<'_>, agent: &AgentConfig) -> MqttConfig {
    t.check_keys(cx, MQTT_KEYS);
    if !t.has("url") {
        t.missing(cx, "url");
    }
    let cert_file = t.path(cx, "cert_file");
    let key_file = t.path(cx, "key_file");
    if cert_file.is_some() != key_file.is_some() {
        let (given, other) = if cert_file.is_some() {
            ("cert_file", "key_file")
        } else {
            ("key_file", "cert_file")
        };
        t.reject(cx, given, &format!("needs {other} too"));
    }
    // Without `agent.site` the prefix names the site "default", so topics never hold an
    // empty level.
    let site = agent.site.as_deref().unwrap_or("default");
    MqttConfig {
        url: t
            .string_with(cx, "url", |s| check_url(s, &["mqtt", "mqtts"]))
            .unwrap_or_default(),
        username: t.string(cx, "username"),
        password_file: t.path(cx, "password_file"),
        ca_file: t.path(cx, "ca_file"),
        cert_file,
        key_file,
        topic_prefix: t
            .string_with(cx, "topic_prefix", |s| {
                if s.is_empty() || s.ends_with('/') || s.contains(['+', '#']) {
                    Err(format!(
                        "invalid topic prefix {s:?}: no wildcards, no trailing \"/\""
                    ))
                } else {
                    Ok(s.to_owned())
                }
            })
            .unwrap_or_else(|| format!("tidegate/{site}/{}", agent.id)),
        remote_config: t.bool(cx, "remote_config").unwrap_or(true),
        allow_remote_commands: t.bool(cx, "allow_remote_commands").unwrap_or(false),
        config_hmac_key_file: t.path(cx, "config_hmac_key_file"),
        config_confirm: t
            .duration(cx, "config_confirm")
            .unwrap_or(Duration::from_secs(300)),
    }
}

fn read_upload(cx: &mut Cx<'_>, t: &Tbl<'_>) -> UploadConfig {
    t.check_keys(cx, UPLOAD_KEYS);
    if !t.has("url") {
        t.missing(cx, "url");
    }
    UploadConfig {
        url: t
            .string_with(cx, "url", |s| check_url(s, &["http", "https"]))
            .unwrap_or_default(),
        token_file: t.path(cx, "token_file"),
        format: t
            .one_of(
                cx,
                "format",
                &[
                    ("json", UploadFormat::Json),
                    ("influx", UploadFormat::Influx),
                ],
            )
            .unwrap_or(UploadFormat::Json),
        batch_size: t
            .int_in(cx, "batch_size", 1, i64::from(u32::MAX))
            .unwrap_or(5000),
        timeout: t.duration(cx, "timeout").unwrap_or(Duration::from_secs(30)),
        gzip: t.bool(cx, "gzip").unwrap_or(true),
    }
}

fn read_buffer(cx: &mut Cx<'_>, t: &Tbl<'_>) -> BufferConfig {
    t.check_keys(cx, BUFFER_KEYS);
    BufferConfig {
        max_rows: t.int_in(cx, "max_rows", 1, i64::MAX).unwrap_or(2_000_000),
        max_size: t.size(cx, "max_size").unwrap_or(512 << 20),
        min_free_disk: t.size(cx, "min_free_disk").unwrap_or(64 << 20),
        keep_uploaded: t
            .duration(cx, "keep_uploaded")
            .unwrap_or(Duration::from_secs(7 * 86_400)),
    }
}

fn read_metrics(cx: &mut Cx<'_>, t: &Tbl<'_>) -> Option<MetricsConfig> {
    t.check_keys(cx, METRICS_KEYS);
    if !t.has("listen") {
        // Loopback unless the farm chooses otherwise: the endpoint has no authentication.
        return Some(MetricsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        });
    }
    let listen = t.string_with(cx, "listen", |s| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("invalid socket address {s:?} (like \"127.0.0.1:9464\")"))
    })?;
    Some(MetricsConfig { listen })
}

/// Reports a repeated name at its later entry, naming where it was first seen.
fn check_unique(
    cx: &mut Cx<'_>,
    seen: &mut HashMap<String, String>,
    what: &str,
    value: &str,
    t: &Tbl<'_>,
    key: &str,
) {
    if let Some(first) = seen.get(value) {
        let line = t.entry(key).and_then(|e| e.line);
        cx.error(
            line,
            t.key_path(key),
            format!("duplicate {what} {value:?} (also {first})"),
        );
    } else {
        seen.insert(value.to_owned(), t.path.clone());
    }
}

/// A required `id` in the sensor-id alphabet, unique among `seen`.
fn read_id(
    cx: &mut Cx<'_>,
    t: &Tbl<'_>,
    seen: &mut HashMap<String, String>,
    what: &str,
) -> Option<String> {
    let id = t
        .required_string(cx, "id")
        .and_then(|id| match check_sensor_id(&id) {
            Ok(id) => Some(id),
            Err(message) => {
                t.reject(cx, "id", &message);
                None
            }
        })?;
    check_unique(cx, seen, what, &id, t, "id");
    Some(id)
}

fn read_buses(cx: &mut Cx<'_>, top: &Tbl<'_>) -> Vec<BusConfig> {
    let mut seen = HashMap::new();
    let mut buses = Vec::new();
    for t in top.tables(cx, "bus") {
        t.check_keys(cx, BUS_KEYS);
        let name = t.required_string(cx, "name");
        if let Some(name) = &name {
            check_unique(cx, &mut seen, "bus name", name, &t, "name");
        }
        if !t.has("kind") {
            t.missing(cx, "kind");
        }
        let kind = t.one_of(
            cx,
            "kind",
            &[
                ("modbus-rtu", "modbus-rtu"),
                ("modbus-tcp", "modbus-tcp"),
                ("simulated", "simulated"),
            ],
        );
        let kind = match kind {
            Some("modbus-rtu") => {
                t.reject(cx, "address", "only modbus-tcp buses take \"address\"");
                if !t.has("port") {
                    t.missing(cx, "port");
                }
                Some(BusKind::ModbusRtu {
                    port: t.path(cx, "port").unwrap_or_default(),
                    baud: t.int_in(cx, "baud", 1, i64::from(u32::MAX)).unwrap_or(9600),
                    parity: t
                        .one_of(
                            cx,
                            "parity",
                            &[
                                ("none", Parity::None),
                                ("even", Parity::Even),
                                ("odd", Parity::Odd),
                            ],
                        )
                        .unwrap_or(Parity::None),
                    data_bits: t.int_in(cx, "data_bits", 5, 8).unwrap_or(8),
                    stop_bits: t
                        .get(cx, "stop_bits", "an integer", as_int, |n| match n {
                            1 | 2 => Ok(u8::try_from(n).unwrap_or(1)),
                            _ => Err(format!("must be 1 or 2, got {n}")),
                        })
                        .unwrap_or(1),
                })
            }
            Some("modbus-tcp") => {
                for key in RTU_KEYS {
                    t.reject(cx, key, &format!("only modbus-rtu buses take {key:?}"));
                }
                if !t.has("address") {
                    t.missing(cx, "address");
                }
                let address = t
                    .string_with(cx, "address", check_host_port)
                    .unwrap_or_default();
                Some(BusKind::ModbusTcp { address })
            }
            Some(_) => {
                for key in RTU_KEYS {
                    t.reject(cx, key, &format!("only modbus-rtu buses take {key:?}"));
                }
                t.reject(cx, "address", "only modbus-tcp buses take \"address\"");
                Some(BusKind::Simulated)
            }
            None => None,
        };
        let timeout = t.duration(cx, "timeout");
        if timeout.is_some_and(|d| d.is_zero()) {
            t.reject(cx, "timeout", "must be greater than zero");
        }
        let valid = kind.is_some();
        let bus = BusConfig {
            name: name.unwrap_or_default(),
            kind: kind.unwrap_or(BusKind::Simulated),
            timeout: timeout.unwrap_or(Duration::from_millis(500)),
            retries: t.int_in(cx, "retries", 0, 100).unwrap_or(2),
            frame_gap: t.duration(cx, "frame_gap"),
        };
        if valid {
            buses.push(bus);
        }
    }
    buses
}

/// A Modbus TCP address: `host:port`, the port a number.
fn check_host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "invalid address {s:?}: expected host:port, like \"192.168.1.50:502\""
        )),
    }
}

fn read_sensors(cx: &mut Cx<'_>, top: &Tbl<'_>, buses: &[BusConfig]) -> Vec<SensorConfig> {
    let mut seen = HashMap::new();
    let mut sensors = Vec::new();
    for t in top.tables(cx, "sensor") {
        t.check_keys(cx, SENSOR_KEYS);
        let id = read_id(cx, &t, &mut seen, "sensor id");
        let bus_name = t.required_string(cx, "bus");
        let bus = bus_name
            .as_deref()
            .and_then(|name| buses.iter().find(|b| b.name == name));
        if let (Some(name), None) = (&bus_name, bus) {
            t.reject(cx, "bus", &format!("unknown bus {name:?}"));
        }
        // With an unknown bus, the presence of `model` decides which fields to read, so
        // their own errors are still reported.
        let simulated = match bus {
            Some(b) => matches!(b.kind, BusKind::Simulated),
            None => t.has("model"),
        };
        let source = if simulated {
            if bus.is_some() {
                for key in REGISTER_KEYS {
                    t.reject(
                        cx,
                        key,
                        &format!("a sensor on a simulated bus takes \"model\", not {key:?}"),
                    );
                }
            }
            if !t.has("model") {
                t.missing(cx, "model");
            }
            t.table(cx, "model")
                .and_then(|m| read_model(cx, &m))
                .map(SensorSource::Simulated)
        } else {
            if bus.is_some() {
                t.reject(
                    cx,
                    "model",
                    "only sensors on a simulated bus take \"model\"",
                );
            }
            read_register_map(cx, &t).map(SensorSource::Modbus)
        };
        let enabled = t.bool(cx, "enabled").unwrap_or(true);
        let unit = t.string(cx, "unit");
        if let (Some(id), Some(bus), Some(source)) = (id, bus, source) {
            sensors.push(SensorConfig {
                id,
                bus: bus.name.clone(),
                enabled,
                unit,
                source,
            });
        }
    }
    sensors
}

fn read_model(cx: &mut Cx<'_>, t: &Tbl<'_>) -> Option<SimModel> {
    t.check_keys(cx, MODEL_KEYS);
    if !t.has("base") {
        t.missing(cx, "base");
    }
    let base = t.float(cx, "base");
    let amplitude = t.float(cx, "amplitude").unwrap_or(0.0);
    let period = t
        .duration(cx, "period")
        .unwrap_or(Duration::from_secs(86_400));
    if period.is_zero() {
        t.reject(cx, "period", "must be greater than zero");
    }
    let noise = t.float(cx, "noise").unwrap_or(0.0);
    if noise < 0.0 {
        t.reject(cx, "noise", "must not be negative");
    }
    Some(SimModel {
        base: base?,
        amplitude,
        period,
        noise,
    })
}

fn read_register_map(cx: &mut Cx<'_>, t: &Tbl<'_>) -> Option<RegisterMap> {
    for key in ["slave", "register"] {
        if !t.has(key) {
            t.missing(cx, key);
        }
    }
    let slave = t.int_in(cx, "slave", 1, 247);
    let table = t
        .one_of(
            cx,
            "table",
            &[
                ("holding", RegTable::Holding),
                ("input", RegTable::Input),
                ("coil", RegTable::Coil),
                ("discrete", RegTable::Discrete),
            ],
        )
        .unwrap_or(RegTable::Holding);
    let register = t.get(
        cx,
        "register",
        "an integer or a \"0x\" hex string",
        register_source,
        |r| r,
    );
    let value_type = t
        .one_of(
            cx,
            "type",
            &[
                ("u16", ValueType::U16),
                ("i16", ValueType::I16),
                ("u32", ValueType::U32),
                ("i32", ValueType::I32),
                ("f32", ValueType::F32),
                ("u64", ValueType::U64),
                ("i64", ValueType::I64),
                ("f64", ValueType::F64),
                ("bool", ValueType::Bool),
            ],
        )
        .unwrap_or(ValueType::U16);
    let is_bit_table = matches!(table, RegTable::Coil | RegTable::Discrete);
    if is_bit_table && value_type != ValueType::Bool {
        let key = if t.has("type") { "type" } else { "table" };
        let line = t.entry(key).and_then(|e| e.line);
        cx.error(
            line,
            t.key_path(key),
            "coil and discrete tables hold single bits: type must be \"bool\"",
        );
    }
    if let Some(reg) = register {
        let last = u32::from(reg) + u32::from(value_type.width()) - 1;
        if last > 65_535 {
            let line = t.entry("register").and_then(|e| e.line);
            cx.error(
                line,
                t.key_path("register"),
                format!(
                    "a {} at register {reg} runs past register 65535",
                    value_type.name()
                ),
            );
        }
    }
    let scale = t.float(cx, "scale").unwrap_or(1.0);
    let offset = t.float(cx, "offset").unwrap_or(0.0);
    if value_type == ValueType::Bool {
        // A bool reading is 1 or 0, unscaled (SPEC section 8); a scale would be ignored.
        if t.has("scale") || t.has("offset") {
            let key = if t.has("scale") { "scale" } else { "offset" };
            t.reject(cx, key, "bool readings are 1 or 0, unscaled");
        }
    }
    Some(RegisterMap {
        slave: slave?,
        table,
        register: register?,
        value_type,
        word_order: t
            .one_of(
                cx,
                "word_order",
                &[("big", WordOrder::Big), ("little", WordOrder::Little)],
            )
            .unwrap_or(WordOrder::Big),
        scale,
        offset,
    })
}

/// A register address as written: a decimal integer or a `"0x…"` string.
fn register_source(v: &Value) -> Option<Result<u16, String>> {
    match v {
        Value::Integer(n) => {
            Some(u16::try_from(*n).map_err(|_| format!("must be 0..=65535, got {n}")))
        }
        Value::String(s) => Some(
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) if !hex.is_empty() => match u32::from_str_radix(hex, 16) {
                    Ok(n) => {
                        u16::try_from(n).map_err(|_| format!("must be 0x0000..=0xFFFF, got {s:?}"))
                    }
                    Err(_) => Err(format!("invalid register {s:?}")),
                },
                _ => Err(format!(
                    "invalid register {s:?}: a decimal integer or a hex string like \"0x0010\""
                )),
            },
        ),
        _ => None,
    }
}

fn read_jobs(cx: &mut Cx<'_>, top: &Tbl<'_>, known: &Known) -> Vec<JobConfig> {
    let jobs_table = top.table(cx, "jobs");
    let mut jobs = Vec::new();
    if let Some(jt) = &jobs_table {
        for e in &jt.t.entries {
            let path = jt.key_path(&e.key);
            if e.key.is_empty() || !e.key.chars().all(is_name_char) {
                cx.error(
                    e.line,
                    path.clone(),
                    format!(
                        "invalid job name {:?}: use letters, digits, \"_\" or \"-\"",
                        e.key
                    ),
                );
            }
            match &e.node.value {
                Value::Table(t) => {
                    let t = Tbl {
                        t,
                        path,
                        line: e.node.line.or(e.line),
                    };
                    if let Some(job) = read_job(cx, &e.key, &t, known) {
                        jobs.push(job);
                    }
                }
                other => cx.error(
                    e.line,
                    path,
                    format!("expected a table, got {}", other.type_name()),
                ),
            }
        }
    }
    for (name, _, _) in BUILT_IN_JOBS {
        if !jobs.iter().any(|j| j.name == name)
            && !jobs_table.as_ref().is_some_and(|jt| jt.has(name))
        {
            let t = top.empty("jobs").empty(name);
            if let Some(job) = read_job(cx, name, &t, known) {
                jobs.push(job);
            }
        }
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    jobs
}

fn read_job(cx: &mut Cx<'_>, name: &str, t: &Tbl<'_>, known: &Known) -> Option<JobConfig> {
    t.check_keys(cx, JOB_KEYS);
    let built_in = BUILT_IN_JOBS.iter().find(|(n, _, _)| *n == name);
    let kind_name = t.one_of(
        cx,
        "kind",
        &[
            ("heartbeat", "heartbeat"),
            ("sample", "sample"),
            ("upload", "upload"),
            ("cleanup", "cleanup"),
            ("command", "command"),
        ],
    );
    let kind_name = match (built_in, kind_name) {
        (Some((n, _, _)), Some(k)) if k != *n => {
            t.reject(
                cx,
                "kind",
                &format!("the built-in job {n:?} is of kind {n:?}"),
            );
            Some(*n)
        }
        (Some((n, _, _)), _) => Some(*n),
        (None, Some(k)) => Some(k),
        (None, None) => {
            if !t.has("kind") {
                t.missing(cx, "kind");
            }
            None
        }
    };

    if kind_name != Some("sample") {
        t.reject(cx, "sensors", "only sample jobs take \"sensors\"");
    }
    if kind_name.is_some() && kind_name != Some("command") {
        for key in ["command", "working_dir", "env"] {
            t.reject(cx, key, &format!("only command jobs take {key:?}"));
        }
    }
    let kind = match kind_name {
        Some("heartbeat") => Some(JobKind::Heartbeat),
        Some("upload") => Some(JobKind::Upload),
        Some("cleanup") => Some(JobKind::Cleanup),
        Some("sample") => {
            let list = t.strings(cx, "sensors").map(|items| {
                let path = t.key_path("sensors");
                for (i, (id, line)) in items.iter().enumerate() {
                    if !known.sensors.iter().any(|s| s == id) {
                        cx.error(
                            *line,
                            format!("{path}[{i}]"),
                            format!("unknown sensor {id:?}"),
                        );
                    }
                }
                items.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            });
            Some(JobKind::Sample { sensors: list })
        }
        Some(_) => read_command(cx, t).map(JobKind::Command),
        None => None,
    };

    let trigger = read_trigger(cx, t, built_in.map(|(_, k, v)| (*k, *v)));
    let start = t.time(cx, "start");
    let end = t.time(cx, "end");
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        t.reject(cx, "end", "must be after start");
    }
    let retry = t.table(cx, "retry").map(|r| read_retry(cx, &r));
    let timeout = t.duration(cx, "timeout");
    if timeout.is_some_and(|d| d.is_zero()) {
        t.reject(cx, "timeout", "must be greater than zero");
    }
    let enabled = t.bool(cx, "enabled").unwrap_or(true);
    let jitter = t.duration(cx, "jitter").unwrap_or(Duration::ZERO);
    let misfire_grace = t.duration(cx, "misfire_grace");
    let coalesce = t.bool(cx, "coalesce").unwrap_or(true);
    let overlap = t
        .one_of(
            cx,
            "overlap",
            &[("skip", Overlap::Skip), ("queue", Overlap::Queue)],
        )
        .unwrap_or(Overlap::Skip);
    Some(JobConfig {
        name: name.to_owned(),
        kind: kind?,
        trigger: trigger.ok()?,
        enabled,
        start,
        end,
        timeout,
        retry,
        jitter,
        misfire_grace,
        coalesce,
        overlap,
    })
}

/// The job's trigger: the one given, else a built-in's default. `Err` when what was
/// written is wrong (already reported).
fn read_trigger(
    cx: &mut Cx<'_>,
    t: &Tbl<'_>,
    default: Option<(&str, &str)>,
) -> Result<Option<Trigger>, ()> {
    let given: Vec<&str> = TRIGGER_KEYS.into_iter().filter(|k| t.has(k)).collect();
    if given.len() > 1 {
        let listed = given
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        for key in &given[1..] {
            t.reject(
                cx,
                key,
                &format!("a job has at most one trigger, got {listed}"),
            );
        }
    }
    let Some(key) = given.first() else {
        return match default {
            Some((key, text)) => built_in_trigger(key, text).map(Some).map_err(|message| {
                cx.error(None, t.key_path(key), message);
            }),
            None => Ok(None),
        };
    };
    let trigger = match *key {
        "every" => t.string_with(cx, "every", parse_every).map(Trigger::Every),
        "cron" => t
            .string_with(cx, "cron", CronExpr::parse)
            .map(Trigger::Cron),
        _ => t.time(cx, "at").map(Trigger::At),
    };
    match trigger {
        Some(tr) if given.len() == 1 => Ok(Some(tr)),
        _ => Err(()),
    }
}

fn built_in_trigger(key: &str, text: &str) -> Result<Trigger, String> {
    match key {
        "cron" => CronExpr::parse(text).map(Trigger::Cron),
        _ => parse_every(text).map(Trigger::Every),
    }
}

fn read_command(cx: &mut Cx<'_>, t: &Tbl<'_>) -> Option<CommandSpec> {
    if !t.has("command") {
        t.missing(cx, "command");
    }
    let argv = t.strings(cx, "command");
    if argv
        .as_ref()
        .is_some_and(|a| a.is_empty() || a[0].0.is_empty())
    {
        t.reject(
            cx,
            "command",
            "must name a program: a non-empty array of strings",
        );
    }
    let working_dir = t.path(cx, "working_dir");
    let mut env = BTreeMap::new();
    if let Some(et) = t.table(cx, "env") {
        for e in &et.t.entries {
            match &e.node.value {
                Value::String(v) => {
                    env.insert(e.key.clone(), v.clone());
                }
                _ => et.wrong_type(cx, e, "a string"),
            }
            if e.key.is_empty() || e.key.contains(['=', '\0']) {
                cx.error(
                    e.line,
                    et.key_path(&e.key),
                    format!("invalid environment variable name {:?}", e.key),
                );
            }
        }
    }
    let argv: Vec<String> = argv?.into_iter().map(|(s, _)| s).collect();
    if argv.first().is_none_or(String::is_empty) {
        return None;
    }
    Some(CommandSpec {
        argv,
        working_dir,
        env,
    })
}

fn read_retry(cx: &mut Cx<'_>, t: &Tbl<'_>) -> RetryPolicy {
    t.check_keys(cx, RETRY_KEYS);
    let backoff = t.float(cx, "backoff").unwrap_or(2.0);
    if backoff < 1.0 {
        t.reject(
            cx,
            "backoff",
            &format!("must be at least 1.0, got {backoff}"),
        );
    }
    RetryPolicy {
        attempts: t.int_in(cx, "attempts", 0, 1000).unwrap_or(3),
        delay: t.duration(cx, "delay").unwrap_or(Duration::from_secs(1)),
        backoff,
        max_delay: t
            .duration(cx, "max_delay")
            .unwrap_or(Duration::from_secs(300)),
    }
}

fn read_alarms(cx: &mut Cx<'_>, top: &Tbl<'_>, known: &Known) -> Vec<AlarmConfig> {
    let mut seen = HashMap::new();
    let mut alarms = Vec::new();
    for t in top.tables(cx, "alarm") {
        t.check_keys(cx, ALARM_KEYS);
        let id = read_id(cx, &t, &mut seen, "alarm id");
        let sensor = t.required_string(cx, "sensor");
        if let Some(s) = &sensor
            && !known.sensors.iter().any(|c| c == s)
        {
            t.reject(cx, "sensor", &format!("unknown sensor {s:?}"));
        }
        let below = t.float(cx, "below");
        let above = t.float(cx, "above");
        let threshold = match (t.has("below"), t.has("above")) {
            (true, true) => {
                t.reject(
                    cx,
                    "above",
                    "an alarm takes \"below\" or \"above\", not both",
                );
                None
            }
            (false, false) => {
                cx.error(
                    t.line,
                    t.key_path("below"),
                    "missing required key: an alarm needs \"below\" or \"above\"",
                );
                None
            }
            _ => below.map(Threshold::Below).or(above.map(Threshold::Above)),
        };
        if !t.has("below") {
            t.reject(
                cx,
                "clear_above",
                "\"clear_above\" goes with a \"below\" alarm",
            );
        }
        if !t.has("above") {
            t.reject(
                cx,
                "clear_below",
                "\"clear_below\" goes with an \"above\" alarm",
            );
        }
        let clear_above = t.float(cx, "clear_above");
        let clear_below = t.float(cx, "clear_below");
        let clear_at = match threshold {
            Some(Threshold::Below(b)) => {
                let c = clear_above.unwrap_or(b);
                if c < b {
                    t.reject(
                        cx,
                        "clear_above",
                        &format!("must not be below the threshold {b}"),
                    );
                }
                c
            }
            Some(Threshold::Above(a)) => {
                let c = clear_below.unwrap_or(a);
                if c > a {
                    t.reject(
                        cx,
                        "clear_below",
                        &format!("must not be above the threshold {a}"),
                    );
                }
                c
            }
            None => 0.0,
        };
        let run = t.string(cx, "run");
        if let Some(r) = &run
            && !known.jobs.iter().any(|j| j == r)
        {
            t.reject(cx, "run", &format!("unknown job {r:?}"));
        }
        let alarm = AlarmConfig {
            id: id.unwrap_or_default(),
            sensor: sensor.unwrap_or_default(),
            threshold: threshold.unwrap_or(Threshold::Below(0.0)),
            hold_for: t.duration(cx, "for").unwrap_or(Duration::ZERO),
            clear_at,
            severity: t
                .one_of(
                    cx,
                    "severity",
                    &[
                        ("info", Severity::Info),
                        ("warning", Severity::Warning),
                        ("critical", Severity::Critical),
                    ],
                )
                .unwrap_or(Severity::Critical),
            run,
        };
        alarms.push(alarm);
    }
    alarms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_sources_in_order() {
        let link = Path::new("/usr/share/zoneinfo/Asia/Tokyo");
        let check = |env, link, file, expected: Tz| {
            assert_eq!(zone_from_sources(env, link, file), expected)
        };
        check(
            Some("Europe/Oslo"),
            Some(link),
            Some("UTC\n"),
            Tz::Europe__Oslo,
        );
        check(Some(":Europe/Oslo"), None, None, Tz::Europe__Oslo);
        check(Some("JST-9"), Some(link), None, Tz::Asia__Tokyo);
        check(
            None,
            Some(Path::new("../zoneinfo/America/New_York")),
            None,
            Tz::America__New_York,
        );
        check(
            None,
            Some(Path::new("/etc/whatever")),
            Some("Europe/Berlin\n"),
            Tz::Europe__Berlin,
        );
        check(None, None, None, Tz::UTC);
    }

    #[test]
    fn urls_mask_passwords() {
        assert_eq!(
            mask_url("mqtts://u:secret@host:8883"),
            "mqtts://u:***@host:8883"
        );
        assert_eq!(mask_url("mqtts://u@host"), "mqtts://u@host");
        assert_eq!(mask_url("https://host/a@b"), "https://host/a@b");
        assert_eq!(
            check_url("http://u:pw@x", &["mqtt", "mqtts"]),
            Err(r#"invalid url "http://u:***@x": must start with mqtt:// or mqtts://"#.to_owned())
        );
        assert!(check_url("mqtt://", &["mqtt"]).is_err());
        assert!(check_url("https://ingest.example.com/v1", &["http", "https"]).is_ok());
    }

    #[test]
    fn registers_read_decimal_or_hex() {
        let check = |v: Value, expected: Option<Result<u16, &str>>| {
            assert_eq!(
                register_source(&v),
                expected.map(|r| r.map_err(str::to_owned)),
                "{v:?}"
            );
        };
        check(Value::Integer(10), Some(Ok(10)));
        check(Value::String("0x0010".into()), Some(Ok(16)));
        check(
            Value::Integer(70_000),
            Some(Err("must be 0..=65535, got 70000")),
        );
        check(
            Value::String("0x10000".into()),
            Some(Err("must be 0x0000..=0xFFFF, got \"0x10000\"")),
        );
        check(Value::Bool(true), None);
    }
}
