//! The validated configuration: every key of the contract (SPEC section 2) as a type
//! that cannot be wrong.
//!
//! Invariants: a `Config` exists only after the whole document was read and validated
//! (`load` / `parse_str`); nobody downstream re-checks a slave id, a cron expression or
//! a duration. The four built-in jobs are always present in `jobs`. This module does no
//! scheduling and opens no ports: it only reads text and files and says what is wrong.
//!
//! Layout: `node` turns TOML (with lines) or JSON (a remote overlay, no lines) into one
//! spanned tree; `parse` reads that tree into these types, collecting every problem;
//! `units` reads durations and sizes; `print` writes the effective config back out with
//! secrets masked; `last_good` keeps the last valid file in `state_dir`.

mod error;
mod last_good;
pub mod node;
mod parse;
mod print;
mod secret;
mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use crate::cron::CronExpr;
pub use error::{ConfigError, ConfigErrors};
pub use last_good::{LoadedConfig, Source, load_with_fallback, save_last_good};
pub(crate) use parse::mask_url;
pub(crate) use parse::read_config;
pub use parse::{load, parse_json, parse_str};
pub use print::to_toml_masked;
pub use secret::read_secret_file;
pub use units::{parse_duration, parse_size};

/// Where the agent reads its configuration unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/tidegate/tidegate.toml";
/// Where state lives when the file is too broken to name its own `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tidegate";

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: AgentConfig,
    pub mqtt: Option<MqttConfig>,
    pub upload: Option<UploadConfig>,
    pub buffer: BufferConfig,
    pub metrics: Option<MetricsConfig>,
    pub buses: Vec<BusConfig>,
    pub sensors: Vec<SensorConfig>,
    pub alarms: Vec<AlarmConfig>,
    /// Every job, built-ins included, sorted by name.
    pub jobs: Vec<JobConfig>,
}

impl Config {
    /// The job of that name (`jobs` is sorted by name).
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        let at = self
            .jobs
            .binary_search_by(|j| j.name.as_str().cmp(name))
            .ok()?;
        self.jobs.get(at)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub id: String,
    pub site: Option<String>,
    pub state_dir: PathBuf,
    /// `None` when `log_dir = ""`: journald/stderr only.
    pub log_dir: Option<PathBuf>,
    pub log_max_size: u64,
    pub log_keep: u32,
    pub log_max_age: Duration,
    pub max_running: usize,
    pub shutdown_grace: Duration,
    /// The configured zone, or the system's when the key is absent.
    pub timezone: Tz,
    pub clock: ClockMode,
}

/// How the agent decides whether the wall clock can be believed (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Trusted once the system reports NTP synchronisation.
    Ntp,
    /// Always trusted: a board with a real-time clock or GPS.
    Trusted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub url: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub topic_prefix: String,
    pub remote_config: bool,
    pub allow_remote_commands: bool,
    pub config_hmac_key_file: Option<PathBuf>,
    pub config_confirm: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFormat {
    Json,
    Influx,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UploadConfig {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub format: UploadFormat,
    pub batch_size: u32,
    pub timeout: Duration,
    pub gzip: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    pub max_rows: u64,
    pub max_size: u64,
    pub min_free_disk: u64,
    pub keep_uploaded: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub name: String,
    pub kind: BusKind,
    /// How long one transaction may take before it counts as a timeout.
    pub timeout: Duration,
    /// Extra attempts after a timeout, a CRC error or a broken connection.
    pub retries: u32,
    /// Silence kept between two frames; `None` means 3.5 characters at the line speed.
    pub frame_gap: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusKind {
    ModbusRtu {
        port: PathBuf,
        baud: u32,
        parity: Parity,
        data_bits: u8,
        stop_bits: u8,
    },
    ModbusTcp {
        address: String,
    },
    Simulated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    pub id: String,
    pub bus: String,
    pub enabled: bool,
    pub unit: Option<String>,
    pub source: SensorSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SensorSource {
    Modbus(RegisterMap),
    Simulated(SimModel),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisterMap {
    pub slave: u8,
    pub table: Table,
    pub register: u16,
    pub value_type: ValueType,
    pub word_order: WordOrder,
    pub scale: f64,
    pub offset: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Holding,
    Input,
    Coil,
    Discrete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
    Bool,
}

impl ValueType {
    /// The type's name as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
            ValueType::Bool => "bool",
        }
    }

    /// Registers (or bits, for `Bool` on bit tables) one value occupies.
    pub fn width(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 | ValueType::Bool => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    Big,
    Little,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimModel {
    pub base: f64,
    pub amplitude: f64,
    pub period: Duration,
    pub noise: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlarmConfig {
    pub id: String,
    pub sensor: String,
    pub threshold: Threshold,
    /// How long the condition must hold, by the readings' timestamps.
    pub hold_for: Duration,
    /// The value a reading must pass strictly to clear the alarm.
    pub clear_at: f64,
    pub severity: Severity,
    pub run: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Below(f64),
    Above(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One job: what it does, when it fires, and the policy around its runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub name: String,
    pub kind: JobKind,
    /// `None`: runs only when asked (`tidegate job run`, a remote command, an alarm).
    pub trigger: Option<Trigger>,
    pub enabled: bool,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub jitter: Duration,
    /// `None`: a late fire runs however late it is.
    pub misfire_grace: Option<Duration>,
    pub coalesce: bool,
    pub overlap: Overlap,
}

impl JobConfig {
    /// Whether this job can only be scheduled on a trusted wall clock.
    pub fn needs_trusted_clock(&self) -> bool {
        self.start.is_some()
            || self.end.is_some()
            || matches!(
                self.trigger,
                Some(Trigger::Cron(_) | Trigger::At(_) | Trigger::Every(Every::Months(_)))
            )
    }
}

/// The closed set of things a job can do.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    Heartbeat,
    /// `sensors`: `None` reads every enabled sensor.
    Sample {
        sensors: Option<Vec<String>>,
    },
    Upload,
    Cleanup,
    Command(CommandSpec),
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Heartbeat => "heartbeat",
            JobKind::Sample { .. } => "sample",
            JobKind::Upload => "upload",
            JobKind::Cleanup => "cleanup",
            JobKind::Command(_) => "command",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Every(Every),
    Cron(CronExpr),
    At(DateTime<Utc>),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Every(Every::Fixed(d)) => {
                write!(f, "every {}", humantime::format_duration(*d))
            }
            Trigger::Every(Every::Months(n)) => write!(f, "every {n}mo"),
            Trigger::Cron(c) => write!(f, "cron {}", c.source()),
            Trigger::At(t) => write!(f, "at {}", crate::time::format_utc(*t)),
        }
    }
}

/// An interval: a fixed length on the monotonic clock, or whole calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Fixed(Duration),
    Months(u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Extra attempts after the first failure.
    pub attempts: u32,
    pub delay: Duration,
    pub backoff: f64,
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// A fire while the previous run still runs is skipped and counted.
    Skip,
    /// A fire while the previous run still runs waits; at most one waits.
    Queue,
}
