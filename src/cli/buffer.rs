//! `tidegate buffer stats|list|export|requeue-dead`: the reading buffer seen and
//! handled by an operator, while the agent runs.
//!
//! Every command opens the existing database (never creating one), reads in short
//! transactions with the store's busy timeout, and writes to stdout in a way that a
//! reader going away (`| head`) ends quietly. Flags are checked before anything is
//! opened, so a usage error costs nothing. The queries are the store's
//! ([`crate::store::inspect`]); this file only turns flags into a filter and readings
//! into text.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use rusqlite::Connection;
use serde::Serialize;

use super::{Failure, columns, load_for_cli, other};
use crate::clock::wall_now;
use crate::store::inspect::{self, Filter, Pages, State, Stats, StoredReading};
use crate::store::{self, StoreError};
use crate::time::format_utc;

/// The most `list` prints; more is what `export` is for.
const MAX_LIST: u32 = 100_000;

/// Seqs per page of an export: a few thousand rows, read in a few milliseconds.
const EXPORT_CHUNK: u32 = 4_096;

/// What an export writes first, and the order of every row's fields (SPEC section 8).
const CSV_HEADER: &str = "seq,sensor,ts,value,unit,quality,clock,error\n";

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Pending, uploaded, dead-letter and dropped readings, the oldest pending one, the
    /// database's size and epoch.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Readings in the buffer: by default the newest 100, printed oldest first.
    ///
    /// Filters combine. --since includes its time, --until excludes it; both compare
    /// the time a reading was taken and take RFC 3339 ("2026-11-23T01:00:00Z") or a
    /// duration back from now ("2h", "1h30m", "7d").
    List(ListArgs),
    /// Every reading matching the filters, oldest first, streamed as CSV or JSON lines.
    ///
    /// The export reads a few thousand readings at a time, so it can run beside the
    /// agent on any size of buffer; it ends at the newest reading stored when it began.
    Export(ExportArgs),
    /// Put every dead-letter reading back in the upload queue.
    RequeueDead,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only readings the server does not have yet (dead letters excluded).
    #[arg(long, conflicts_with = "dead")]
    pending: bool,
    /// Only readings the server refused (the dead letter).
    #[arg(long)]
    dead: bool,
    /// Only this sensor (may be given more than once).
    #[arg(long = "sensor", value_name = "ID")]
    sensors: Vec<String>,
    #[command(flatten)]
    window: Window,
    /// At most N readings: the newest N that match (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIST)))]
    limit: u32,
    /// One JSON array of reading objects.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// How to write the readings.
    #[arg(long, value_enum)]
    format: Format,
    #[command(flatten)]
    window: Window,
    /// Write to FILE instead of stdout: to FILE.tmp first, renamed once complete.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The time window shared by `list` and `export`.
#[derive(Args, Debug)]
struct Window {
    /// Only readings taken at or after T: RFC 3339 or a duration back from now ("2h").
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only readings taken before T: RFC 3339 or a duration back from now.
    #[arg(long, value_name = "T")]
    until: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// A header row, then one row a reading; RFC 4180 quoting.
    Csv,
    /// One JSON reading object a line.
    Jsonl,
}

pub fn run(path: &Path, action: Action) -> Result<ExitCode, Failure> {
    match action {
        Action::Stats { json } => stats(path, json),
        Action::List(args) => list(path, &args),
        Action::Export(args) => export(path, &args),
        Action::RequeueDead => requeue_dead(path),
    }
}

/// The database named by the configuration at `path`. Read-only commands ask SQLite
/// to refuse any write, so a mistake here can never touch the agent's data.
fn open(path: &Path, writes: bool) -> Result<Connection, Failure> {
    let config = load_for_cli(path)?;
    let conn = store::open_existing(&config.agent.state_dir).map_err(other)?;
    if !writes {
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| other(StoreError::from(e)))?;
    }
    Ok(conn)
}

fn stats(path: &Path, as_json: bool) -> Result<ExitCode, Failure> {
    let conn = open(path, false)?;
    let stats = inspect::stats(&conn).map_err(other)?;
    drop(conn);
    let text = if as_json {
        let mut text = serde_json::to_string_pretty(&StatsJson::from(&stats)).map_err(other)?;
        text.push('\n');
        text
    } else {
        stats_text(&stats, wall_now())
    };
    emit(text.as_bytes())
}

/// `buffer stats --json`: exactly the keys of SPEC section 8.
#[derive(Serialize)]
struct StatsJson<'a> {
    pending: u64,
    uploaded: u64,
    dead_letter: u64,
    dropped_total: u64,
    oldest_pending_ts: Option<String>,
    db_bytes: Option<u64>,
    epoch: &'a str,
}

impl<'a> From<&'a Stats> for StatsJson<'a> {
    fn from(s: &'a Stats) -> Self {
        StatsJson {
            pending: s.pending,
            uploaded: s.uploaded,
            dead_letter: s.dead_letter,
            dropped_total: s.dropped_total,
            oldest_pending_ts: s.oldest_pending.map(format_utc),
            db_bytes: s.db_bytes,
            epoch: &s.epoch,
        }
    }
}

fn stats_text(s: &Stats, now: DateTime<Utc>) -> String {
    let mut pending = count(s.pending);
    if let Some(oldest) = s.oldest_pending {
        pending.push_str(&format!(
            ", oldest {}{}",
            format_utc(oldest),
            ago(oldest, now)
        ));
    }
    let mut lines = vec![
        ["pending".to_string(), pending],
        ["uploaded".to_string(), count(s.uploaded)],
        ["dead letter".to_string(), count(s.dead_letter)],
        ["dropped".to_string(), count(s.dropped_total)],
        [
            "database".to_string(),
            s.db_bytes.map_or_else(|| "unknown".to_string(), size),
        ],
        ["epoch".to_string(), s.epoch.clone()],
    ];
    let u = &s.upload;
    if let Some(ok) = u.last_ok {
        lines.push([
            "last upload".to_string(),
            format!("{}{}", format_utc(ok), ago(ok, now)),
        ]);
    }
    if let Some(reason) = &u.paused {
        let reason = if matches!(reason.as_str(), "1" | "true") {
            "paused".to_string()
        } else {
            format!("paused: {reason}")
        };
        lines.push(["upload".to_string(), reason]);
    }
    if let Some(error) = &u.last_error {
        lines.push(["upload error".to_string(), error.clone()]);
    }
    columns(&lines)
}

/// ` (3h 12m ago)`, to the minute past an hour; empty for a time not in the past.
fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let Ok(elapsed) = (now - t).to_std() else {
        return String::new();
    };
    let secs = elapsed.as_secs();
    let secs = if secs >= 3_600 {
        secs - secs % 60
    } else {
        secs
    };
    format!(
        " ({} ago)",
        humantime::format_duration(std::time::Duration::from_secs(secs))
    )
}

/// `1234567` as `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units, as the config writes sizes: `812 B`, `4.0 KiB`, `1.21 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value < 10.0 => format!("{value:.2} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

impl Window {
    /// The window in UTC milliseconds, checked: each time must parse, and the window
    /// must not be empty.
    fn to_millis(&self, now: DateTime<Utc>) -> Result<(Option<i64>, Option<i64>), Failure> {
        let since = self
            .since
            .as_deref()
            .map(|t| parse_time("--since", t, now))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|t| parse_time("--until", t, now))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(Failure::Usage(format!(
                "--since {} is not before --until {}",
                format_utc(since),
                format_utc(until)
            )));
        }
        Ok((
            since.map(|t| t.timestamp_millis()),
            until.map(|t| t.timestamp_millis()),
        ))
    }
}

/// A `--since`/`--until` value: RFC 3339, or a humantime duration back from `now`.
fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let back = humantime::parse_duration(text.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d));
    back.ok_or_else(|| {
        Failure::Usage(format!(
            "{flag}: invalid time {text:?}: expected RFC 3339 (2026-11-23T01:00:00Z) \
             or a duration back from now (2h, 1h30m, 7d)"
        ))
    })
}

fn list(path: &Path, args: &ListArgs) -> Result<ExitCode, Failure> {
    let (since_ms, until_ms) = args.window.to_millis(wall_now())?;
    let state = if args.pending {
        Some(State::Pending)
    } else if args.dead {
        Some(State::Dead)
    } else {
        None
    };
    let filter = Filter {
        state,
        sensors: args.sensors.clone(),
        since_ms,
        until_ms,
    };
    let conn = open(path, false)?;
    // One more than asked for tells whether older readings were left out.
    let mut rows = inspect::newest(&conn, &filter, args.limit + 1).map_err(other)?;
    drop(conn);
    let left_out = rows.len() > args.limit as usize;
    if left_out {
        rows.remove(0);
    }
    let text = if args.json {
        let objects: Vec<ReadingJson<'_>> = rows.iter().map(ReadingJson::from).collect();
        let mut text = serde_json::to_string_pretty(&objects).map_err(other)?;
        text.push('\n');
        text
    } else if rows.is_empty() {
        "no readings match\n".to_string()
    } else {
        table(&rows)
    };
    let code = emit(text.as_bytes())?;
    if left_out && !args.json {
        eprintln!(
            "tidegate: note: the newest {} matching readings; older ones left out (--limit, or buffer export)",
            args.limit
        );
    }
    Ok(code)
}

fn table(rows: &[StoredReading]) -> String {
    let dash = || "-".to_string();
    let mut lines = vec![
        [
            "SEQ", "TIME", "SENSOR", "VALUE", "UNIT", "QUALITY", "CLOCK", "STATE", "ERROR",
        ]
        .map(String::from),
    ];
    for r in rows {
        lines.push([
            r.seq.to_string(),
            r.ts().map_or_else(|| r.ts_ms.to_string(), format_utc),
            r.sensor.clone(),
            r.value.map_or_else(dash, |v| v.to_string()),
            r.unit.clone().unwrap_or_else(dash),
            r.quality.clone(),
            r.clock.clone(),
            r.state.as_str().to_string(),
            r.error.clone().unwrap_or_else(dash),
        ]);
    }
    columns(&lines)
}

/// A reading as `list --json` and `export --format jsonl` write it: the upload fields
/// (SPEC section 4), `error` only where there is one, and where the reading stands.
#[derive(Serialize)]
struct ReadingJson<'a> {
    seq: i64,
    sensor: &'a str,
    ts: Option<String>,
    value: Option<f64>,
    unit: Option<&'a str>,
    quality: &'a str,
    clock: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    state: &'static str,
}

impl<'a> From<&'a StoredReading> for ReadingJson<'a> {
    fn from(r: &'a StoredReading) -> Self {
        ReadingJson {
            seq: r.seq,
            sensor: &r.sensor,
            ts: r.ts().map(format_utc),
            value: r.value,
            unit: r.unit.as_deref(),
            quality: &r.quality,
            clock: &r.clock,
            error: r.error.as_deref(),
            state: r.state.as_str(),
        }
    }
}

/// Writes `bytes` to stdout. A reader that has gone away (`| head`) is not a failure:
/// it asked for no more.
fn emit(bytes: &[u8]) -> Result<ExitCode, Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::Other(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Why an export stopped early.
enum Stop {
    Store(StoreError),
    Write(io::Error),
}

fn export(path: &Path, args: &ExportArgs) -> Result<ExitCode, Failure> {
    let (since_ms, until_ms) = args.window.to_millis(wall_now())?;
    let filter = Filter {
        since_ms,
        until_ms,
        ..Filter::default()
    };
    let conn = open(path, false)?;
    match &args.out {
        None => {
            let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
            match write_all(&conn, filter, args.format, &mut out) {
                Ok(_) => {}
                Err(Stop::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(Stop::Write(e)) => {
                    return Err(Failure::Other(format!("cannot write to stdout: {e}")));
                }
                Err(Stop::Store(e)) => return Err(other(e)),
            }
        }
        Some(file) => {
            let written = export_to_file(&conn, filter, args.format, file)?;
            let readings = if written == 1 { "reading" } else { "readings" };
            let text = format!(
                "{} {readings} written to {}\n",
                count(written),
                file.display()
            );
            return emit(text.as_bytes());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the export to `FILE.tmp` and renames it to `file` once complete and on disk:
/// a failed or interrupted export never leaves a `file` that looks whole.
fn export_to_file(
    conn: &Connection,
    filter: Filter,
    format: Format,
    file: &Path,
) -> Result<u64, Failure> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let created =
        File::create(&tmp).map_err(|e| Failure::Other(format!("{}: {e}", tmp.display())))?;
    let mut out = BufWriter::with_capacity(64 * 1024, created);
    let result = match write_all(conn, filter, format, &mut out) {
        Ok(n) => out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, file))
            .map(|()| n)
            .map_err(|e| Failure::Other(format!("{}: {e}", file.display()))),
        Err(Stop::Write(e)) => Err(Failure::Other(format!("{}: {e}", tmp.display()))),
        Err(Stop::Store(e)) => Err(other(e)),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Streams every matching reading to `out`, page by page; returns how many.
fn write_all(
    conn: &Connection,
    filter: Filter,
    format: Format,
    out: &mut impl Write,
) -> Result<u64, Stop> {
    let mut pages = Pages::start(conn, filter, EXPORT_CHUNK).map_err(Stop::Store)?;
    if format == Format::Csv {
        out.write_all(CSV_HEADER.as_bytes()).map_err(Stop::Write)?;
    }
    let mut written = 0u64;
    // The page is read whole, and its read transaction over, before it is written:
    // a slow reader of the output never holds up the agent's checkpoints.
    while let Some(page) = pages.next_page(conn).map_err(Stop::Store)? {
        for r in &page {
            match format {
                Format::Csv => csv_row(out, r),
                Format::Jsonl => jsonl_row(out, r),
            }
            .map_err(Stop::Write)?;
        }
        written += page.len() as u64;
    }
    out.flush().map_err(Stop::Write)?;
    Ok(written)
}

fn jsonl_row(out: &mut impl Write, r: &StoredReading) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &ReadingJson::from(r))?;
    out.write_all(b"\n")
}

/// One CSV row: `seq,sensor,ts,value,unit,quality,clock,error`, an absent value empty.
///
/// Quoted by hand rather than with the csv crate: eight fixed fields, of which the
/// free text ones (sensor, unit, error) need RFC 4180's one rule, and the binary stays
/// one dependency smaller. Numbers are written as in the JSON forms.
fn csv_row(out: &mut impl Write, r: &StoredReading) -> io::Result<()> {
    write!(out, "{},", r.seq)?;
    csv_field(out, &r.sensor)?;
    match r.ts() {
        Some(ts) => write!(out, ",{},", format_utc(ts))?,
        None => write!(out, ",{},", r.ts_ms)?,
    }
    if let Some(v) = r.value.and_then(serde_json::Number::from_f64) {
        write!(out, "{v}")?;
    }
    out.write_all(b",")?;
    csv_field(out, r.unit.as_deref().unwrap_or(""))?;
    out.write_all(b",")?;
    csv_field(out, &r.quality)?;
    out.write_all(b",")?;
    csv_field(out, &r.clock)?;
    out.write_all(b",")?;
    csv_field(out, r.error.as_deref().unwrap_or(""))?;
    out.write_all(b"\n")
}

/// RFC 4180: a field holding a comma, a quote or a line break is quoted, its quotes
/// doubled; any other field is written as it is.
fn csv_field(out: &mut impl Write, field: &str) -> io::Result<()> {
    if field.contains([',', '"', '\n', '\r']) {
        write!(out, "\"{}\"", field.replace('"', "\"\""))
    } else {
        out.write_all(field.as_bytes())
    }
}

fn requeue_dead(path: &Path) -> Result<ExitCode, Failure> {
    let mut conn = open(path, true)?;
    let requeued = inspect::requeue_dead(&mut conn).map_err(other)?;
    drop(conn);
    let text = match requeued {
        0 => "no dead-letter readings to requeue\n".to_string(),
        1 => "requeued 1 dead-letter reading\n".to_string(),
        n => format!("requeued {} dead-letter readings\n", count(n as u64)),
    };
    emit(text.as_bytes())
}

#[cfg(test)]
mod tests;
