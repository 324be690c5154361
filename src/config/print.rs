//! The effective configuration written back out as TOML, secrets masked.
//!
//! Invariants: every value is written, defaults and built-in jobs included, so the text
//! shows exactly what the agent runs; the text is valid TOML that `parse_str` reads back
//! into an equal `Config` (with masked values in place of secrets). Masked: the password
//! in a URL's userinfo, and the `env` values of command jobs whose name says KEY, TOKEN,
//! SECRET or PASS. Paths of secret files are not secrets and are printed as they are.

use std::fmt::Write as _;
use std::path::Path;

use super::parse::mask_url;
use super::units::{format_duration, format_every, format_size};
use super::{
    AlarmConfig, BusConfig, BusKind, ClockMode, Config, JobConfig, JobKind, Overlap, Parity,
    SensorConfig, SensorSource, Severity, Table, Threshold, Trigger, UploadFormat, ValueType,
    WordOrder,
};

const MASK: &str = "***";

/// The effective configuration as TOML, secrets masked.
pub fn to_toml_masked(config: &Config) -> String {
    let mut out = Doc::default();
    let a = &config.agent;
    out.header("[agent]");
    out.kv("id", &quote(&a.id));
    if let Some(site) = &a.site {
        out.kv("site", &quote(site));
    }
    out.kv("state_dir", &quote_path(&a.state_dir));
    out.kv(
        "log_dir",
        &a.log_dir.as_deref().map_or_else(|| quote(""), quote_path),
    );
    out.kv("log_max_size", &quote(&format_size(a.log_max_size)));
    out.kv("log_keep", &a.log_keep.to_string());
    out.kv("log_max_age", &quote(&format_duration(a.log_max_age)));
    out.kv("max_running", &a.max_running.to_string());
    out.kv("shutdown_grace", &quote(&format_duration(a.shutdown_grace)));
    out.kv("timezone", &quote(a.timezone.name()));
    out.kv(
        "clock",
        &quote(match a.clock {
            ClockMode::Ntp => "ntp",
            ClockMode::Trusted => "trusted",
        }),
    );

    if let Some(m) = &config.mqtt {
        out.header("[mqtt]");
        out.kv("url", &quote(&mask_url(&m.url)));
        if let Some(u) = &m.username {
            out.kv("username", &quote(u));
        }
        for (key, path) in [
            ("password_file", &m.password_file),
            ("ca_file", &m.ca_file),
            ("cert_file", &m.cert_file),
            ("key_file", &m.key_file),
            ("config_hmac_key_file", &m.config_hmac_key_file),
        ] {
            if let Some(p) = path {
                out.kv(key, &quote_path(p));
            }
        }
        out.kv("topic_prefix", &quote(&m.topic_prefix));
        out.kv("remote_config", &m.remote_config.to_string());
        out.kv(
            "allow_remote_commands",
            &m.allow_remote_commands.to_string(),
        );
        out.kv("config_confirm", &quote(&format_duration(m.config_confirm)));
    }

    if let Some(u) = &config.upload {
        out.header("[upload]");
        out.kv("url", &quote(&mask_url(&u.url)));
        if let Some(p) = &u.token_file {
            out.kv("token_file", &quote_path(p));
        }
        out.kv(
            "format",
            &quote(match u.format {
                UploadFormat::Json => "json",
                UploadFormat::Influx => "influx",
            }),
        );
        out.kv("batch_size", &u.batch_size.to_string());
        out.kv("timeout", &quote(&format_duration(u.timeout)));
        out.kv("gzip", &u.gzip.to_string());
    }

    let b = &config.buffer;
    out.header("[buffer]");
    out.kv("max_rows", &b.max_rows.to_string());
    out.kv("max_size", &quote(&format_size(b.max_size)));
    out.kv("min_free_disk", &quote(&format_size(b.min_free_disk)));
    out.kv("keep_uploaded", &quote(&format_duration(b.keep_uploaded)));

    if let Some(m) = &config.metrics {
        out.header("[metrics]");
        out.kv("listen", &quote(&m.listen.to_string()));
    }

    for bus in &config.buses {
        write_bus(&mut out, bus);
    }
    for sensor in &config.sensors {
        write_sensor(&mut out, sensor);
    }
    for alarm in &config.alarms {
        write_alarm(&mut out, alarm);
    }
    for job in &config.jobs {
        write_job(&mut out, job);
    }
    out.text
}

fn write_bus(out: &mut Doc, bus: &BusConfig) {
    out.header("[[bus]]");
    out.kv("name", &quote(&bus.name));
    match &bus.kind {
        BusKind::ModbusRtu {
            port,
            baud,
            parity,
            data_bits,
            stop_bits,
        } => {
            out.kv("kind", &quote("modbus-rtu"));
            out.kv("port", &quote_path(port));
            out.kv("baud", &baud.to_string());
            out.kv(
                "parity",
                &quote(match parity {
                    Parity::None => "none",
                    Parity::Even => "even",
                    Parity::Odd => "odd",
                }),
            );
            out.kv("data_bits", &data_bits.to_string());
            out.kv("stop_bits", &stop_bits.to_string());
        }
        BusKind::ModbusTcp { address } => {
            out.kv("kind", &quote("modbus-tcp"));
            out.kv("address", &quote(address));
        }
        BusKind::Simulated => out.kv("kind", &quote("simulated")),
    }
    out.kv("timeout", &quote(&format_duration(bus.timeout)));
    out.kv("retries", &bus.retries.to_string());
    if let Some(gap) = bus.frame_gap {
        out.kv("frame_gap", &quote(&format_duration(gap)));
    }
}

fn write_sensor(out: &mut Doc, s: &SensorConfig) {
    out.header("[[sensor]]");
    out.kv("id", &quote(&s.id));
    out.kv("bus", &quote(&s.bus));
    out.kv("enabled", &s.enabled.to_string());
    if let Some(unit) = &s.unit {
        out.kv("unit", &quote(unit));
    }
    match &s.source {
        SensorSource::Modbus(r) => {
            out.kv("slave", &r.slave.to_string());
            out.kv(
                "table",
                &quote(match r.table {
                    Table::Holding => "holding",
                    Table::Input => "input",
                    Table::Coil => "coil",
                    Table::Discrete => "discrete",
                }),
            );
            out.kv("register", &r.register.to_string());
            out.kv("type", &quote(r.value_type.name()));
            out.kv(
                "word_order",
                &quote(match r.word_order {
                    WordOrder::Big => "big",
                    WordOrder::Little => "little",
                }),
            );
            // A bool reading is unscaled, and the reader refuses a scale on one.
            if r.value_type != ValueType::Bool {
                out.kv("scale", &float(r.scale));
                out.kv("offset", &float(r.offset));
            }
        }
        SensorSource::Simulated(m) => {
            let model = format!(
                "{{ base = {}, amplitude = {}, period = {}, noise = {} }}",
                float(m.base),
                float(m.amplitude),
                quote(&format_duration(m.period)),
                float(m.noise)
            );
            out.kv("model", &model);
        }
    }
}

fn write_alarm(out: &mut Doc, a: &AlarmConfig) {
    out.header("[[alarm]]");
    out.kv("id", &quote(&a.id));
    out.kv("sensor", &quote(&a.sensor));
    match a.threshold {
        Threshold::Below(v) => {
            out.kv("below", &float(v));
            out.kv("clear_above", &float(a.clear_at));
        }
        Threshold::Above(v) => {
            out.kv("above", &float(v));
            out.kv("clear_below", &float(a.clear_at));
        }
    }
    out.kv("for", &quote(&format_duration(a.hold_for)));
    out.kv(
        "severity",
        &quote(match a.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }),
    );
    if let Some(run) = &a.run {
        out.kv("run", &quote(run));
    }
}

fn write_job(out: &mut Doc, job: &JobConfig) {
    out.header(&format!("[jobs.{}]", key(&job.name)));
    out.kv("kind", &quote(job.kind.name()));
    match &job.trigger {
        Some(Trigger::Every(e)) => out.kv("every", &quote(&format_every(*e))),
        Some(Trigger::Cron(c)) => out.kv("cron", &quote(c.source())),
        Some(Trigger::At(t)) => out.kv("at", &quote(&crate::time::format_utc(*t))),
        None => {}
    }
    out.kv("enabled", &job.enabled.to_string());
    if let Some(t) = job.start {
        out.kv("start", &quote(&crate::time::format_utc(t)));
    }
    if let Some(t) = job.end {
        out.kv("end", &quote(&crate::time::format_utc(t)));
    }
    if let Some(t) = job.timeout {
        out.kv("timeout", &quote(&format_duration(t)));
    }
    if let Some(r) = &job.retry {
        let retry = format!(
            "{{ attempts = {}, delay = {}, backoff = {}, max_delay = {} }}",
            r.attempts,
            quote(&format_duration(r.delay)),
            float(r.backoff),
            quote(&format_duration(r.max_delay))
        );
        out.kv("retry", &retry);
    }
    out.kv("jitter", &quote(&format_duration(job.jitter)));
    if let Some(g) = job.misfire_grace {
        out.kv("misfire_grace", &quote(&format_duration(g)));
    }
    out.kv("coalesce", &job.coalesce.to_string());
    out.kv(
        "overlap",
        &quote(match job.overlap {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }),
    );
    match &job.kind {
        JobKind::Sample { sensors: Some(ids) } => out.kv("sensors", &array(ids)),
        JobKind::Command(c) => {
            out.kv("command", &array(&c.argv));
            if let Some(dir) = &c.working_dir {
                out.kv("working_dir", &quote_path(dir));
            }
            if !c.env.is_empty() {
                let pairs: Vec<String> = c
                    .env
                    .iter()
                    .map(|(k, v)| {
                        let shown = if is_secret_name(k) { MASK } else { v.as_str() };
                        format!("{} = {}", quote(k), quote(shown))
                    })
                    .collect();
                out.kv("env", &format!("{{ {} }}", pairs.join(", ")));
            }
        }
        _ => {}
    }
}

/// Whether an environment variable's name says it holds a secret.
fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASS"]
        .iter()
        .any(|w| upper.contains(w))
}

/// The text being written: sections separated by a blank line.
#[derive(Default)]
struct Doc {
    text: String,
}

impl Doc {
    fn header(&mut self, header: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(header);
        self.text.push('\n');
    }

    fn kv(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.text, "{key} = {value}");
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// A table key: bare when TOML allows it, quoted otherwise.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        quote(k)
    }
}

/// A float TOML reads back exactly (`Debug` is the shortest round-tripping form).
fn float(f: f64) -> String {
    format!("{f:?}")
}

fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quote("\u{1}"), r#""\u0001""#);
    }

    #[test]
    fn secret_names() {
        for (name, secret) in [
            ("API_KEY", true),
            ("token", true),
            ("db_password", true),
            ("MySecret", true),
            ("POND", false),
            ("PATH", false),
        ] {
            assert_eq!(is_secret_name(name), secret, "{name}");
        }
    }

    #[test]
    fn floats_read_back() {
        for f in [1.0, 0.05, -3.25, 1e-7, 123_456_789.0] {
            let text = format!("x = {}", float(f));
            let v: toml::Table = toml::from_str(&text).expect("valid toml");
            assert_eq!(v["x"].as_float(), Some(f), "{text}");
        }
    }
}
