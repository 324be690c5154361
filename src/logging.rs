//! Where log lines go: human-readable lines on stderr (which is the journal under
//! systemd), and, when `agent.log_dir` is set, also a size-rotated `tidegate.log` there.
//!
//! Invariants:
//! - Logging never stops the agent. A missing directory, a full card or a failed rename
//!   is reported once on stderr; the file output then goes quiet (stderr keeps every
//!   line) and is retried now and then, so logging to the file resumes when the card
//!   has room again.
//! - The file output is written by one background thread (`tracing_appender`'s
//!   non-blocking worker), so a slow SD card never stalls the scheduler; under a burst
//!   that outruns the card, lines are dropped from the file rather than waiting.
//! - `tidegate.log` never grows past `max_size` unless a single line is larger; it is
//!   rotated to `tidegate.log.1`, the old `.1` to `.2`, and so on, keeping at most
//!   `keep` rotated files.
//!
//! This module does not decide when old files are deleted by age: [`prune_old_logs`]
//! takes `now` and is called by the cleanup job only once the wall clock is trusted,
//! because a gateway that booted in 1970 would otherwise think every file is new, or,
//! after a step forward, delete them all.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing_appender::non_blocking::WorkerGuard;

/// Lines the file writer may hold while the card is slow; past that, lines are
/// dropped from the file (stderr still has them).
const LINE_QUEUE: usize = 1024;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable holding a `RUST_LOG`-style filter, e.g.
/// `TIDEGATE_LOG=debug` or `TIDEGATE_LOG=info,tidegate::store=debug`.
pub const FILTER_ENV: &str = "TIDEGATE_LOG";

/// The name of the live log file in `log_dir`; rotated ones are `tidegate.log.N`.
pub const LOG_FILE: &str = "tidegate.log";

/// How long the file output stays quiet after an IO error before it tries again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(30);

/// Keeps the file output's background writer alive. Hold it for as long as the agent
/// runs; dropping it flushes the lines still queued and stops the writer thread.
#[must_use = "dropping the guard stops writing the log file"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Sets the global subscriber for `tidegate run`: stderr always, and
/// `{log_dir}/tidegate.log` rotated at `max_size` bytes with `keep` rotated files when
/// `log_dir` is given. The filter comes from `TIDEGATE_LOG` (default `info`).
///
/// A log directory that cannot be created or written is not an error: it is reported
/// on stderr and the agent logs to stderr alone until the directory works. The only
/// error is a global subscriber that is already set.
pub fn init(log_dir: Option<&Path>, max_size: u64, keep: u32) -> io::Result<LogGuard> {
    let (filter, bad_filter) = env_filter(LevelFilter::INFO);
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![stderr_layer()];
    let mut worker = None;
    if let Some(dir) = log_dir {
        let file = SizeRotatingFile::open(dir, max_size, keep, RETRY_AFTER_ERROR);
        // The worker's queue is allocated whole up front; the default 128,000 lines
        // would be 4 MiB of resident memory on a box that logs a line a second.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(LINE_QUEUE)
            .thread_name("tidegate-log")
            .finish(file);
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .boxed(),
        );
        worker = Some(guard);
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|err| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("logging already set up: {err}"),
            )
        })?;
    if let Some(bad) = bad_filter {
        tracing::warn!(filter = %bad, "ignoring invalid {FILTER_ENV}, logging at info");
    }
    Ok(LogGuard { _worker: worker })
}

/// Sets a stderr-only subscriber for the CLI commands. Their output belongs on stdout,
/// so the default filter is `warn`; `TIDEGATE_LOG` raises it. Calling it when a
/// subscriber is already set does nothing.
pub fn init_stderr() {
    let (filter, bad_filter) = env_filter(LevelFilter::WARN);
    let installed = tracing_subscriber::registry()
        .with(stderr_layer())
        .with(filter)
        .try_init()
        .is_ok();
    if let (true, Some(bad)) = (installed, bad_filter) {
        tracing::warn!(filter = %bad, "ignoring invalid {FILTER_ENV}, logging at warn");
    }
}

/// Deletes the rotated files (`tidegate.log.N`) in `log_dir` whose modification time is
/// more than `max_age` before `now`, and returns how many it deleted. The live
/// `tidegate.log` and any other file are left alone; a missing directory deletes
/// nothing. Call it only with a trusted `now`.
pub fn prune_old_logs(log_dir: &Path, max_age: Duration, now: SystemTime) -> io::Result<usize> {
    let Some(cutoff) = now.checked_sub(max_age) else {
        return Ok(0);
    };
    let entries = match fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut deleted = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().and_then(rotation_index).is_none() {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() || meta.modified()? >= cutoff {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => deleted += 1,
            // Deleted meanwhile (by a rotation): the goal is reached all the same.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}

/// Caps what `log_dir` holds of this agent's logs, on any clock: rotated files past
/// `keep` (left by an earlier, larger `log_keep`) go, and then the oldest rotated
/// files while all of them with the live one come to more than `(keep + 1) ×
/// max_size`. Only `tidegate.log.N` files are ever deleted. Returns the files and
/// bytes deleted.
pub fn cap_logs(log_dir: &Path, keep: u32, max_size: u64) -> io::Result<(usize, u64)> {
    let entries = match fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(err) => return Err(err),
    };
    let mut total = 0u64;
    let mut rotated: Vec<(u32, PathBuf, u64)> = Vec::new();
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LOG_FILE {
            total += meta.len();
        } else if let Some(n) = rotation_index(name) {
            total += meta.len();
            rotated.push((n, entry.path(), meta.len()));
        }
    }
    // Oldest first: the highest index.
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let cap = max_size.saturating_mul(u64::from(keep) + 1);
    let (mut files, mut bytes) = (0, 0);
    for (n, path, len) in rotated {
        if n <= keep && total <= cap {
            break;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                files += 1;
                bytes += len;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        total = total.saturating_sub(len);
    }
    Ok((files, bytes))
}

/// The filter from `TIDEGATE_LOG`, or `default` when it is unset or does not parse
/// (returned second, so it can be reported once logging works). The syntax is
/// `RUST_LOG`'s without span and field matching: a default level and
/// `target=level` pairs (`Targets`, which needs no regex engine).
fn env_filter(default: LevelFilter) -> (Targets, Option<String>) {
    let fallback = || Targets::new().with_default(default);
    match std::env::var(FILTER_ENV) {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(_) => (fallback(), Some(spec)),
        },
        _ => (fallback(), None),
    }
}

/// Human-readable lines on stderr: colours only for a terminal, and no timestamp when
/// stderr is the journal, which stamps every line itself.
fn stderr_layer() -> Box<dyn Layer<Registry> + Send + Sync> {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    if stderr_is_journal() {
        layer.without_time().boxed()
    } else {
        layer.boxed()
    }
}

/// Whether stderr goes to journald. systemd sets `JOURNAL_STREAM=DEV:INODE` for a
/// service whose output it connects to the journal; children inherit the variable
/// even when their stderr goes elsewhere, so when stderr can be inspected it must
/// also be that very stream.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return true;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return true;
    };
    stderr_identity().is_none_or(|identity| identity == (dev, ino))
}

fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let meta = File::from(io::stderr().as_fd().try_clone_to_owned().ok()?)
        .metadata()
        .ok()?;
    Some((meta.dev(), meta.ino()))
}

/// `N` for a rotated file name `tidegate.log.N` (N ≥ 1), else `None`.
fn rotation_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(LOG_FILE)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n >= 1)
}

/// `tidegate.log` in a directory, rotated by size. Every write succeeds as far as the
/// caller can tell: IO errors are reported once on stderr and the file output pauses
/// for `retry_after`, because the writer thread has nobody to return them to.
struct SizeRotatingFile {
    dir: PathBuf,
    max_size: u64,
    keep: u32,
    retry_after: Duration,
    /// The open live file and its size; `None` while broken.
    file: Option<(File, u64)>,
    /// When to try again after an error.
    retry_at: Option<Instant>,
    /// An outage has been reported and its end has not yet been.
    reported: bool,
}

impl SizeRotatingFile {
    fn open(dir: &Path, max_size: u64, keep: u32, retry_after: Duration) -> Self {
        let mut this = Self {
            dir: dir.to_path_buf(),
            max_size,
            keep,
            retry_after,
            file: None,
            retry_at: None,
            reported: false,
        };
        if let Err(err) = this.reopen() {
            this.fail(&err);
        }
        this
    }

    fn live_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn rotated_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{LOG_FILE}.{n}"))
    }

    fn reopen(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.dir).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot create {}: {err}", self.dir.display()),
            )
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.live_path())?;
        let size = file.metadata()?.len();
        self.file = Some((file, size));
        Ok(())
    }

    /// `tidegate.log` becomes `.1`, `.1` becomes `.2`, …; the oldest beyond `keep` is
    /// deleted, and a fresh `tidegate.log` is opened.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some((mut file, _)) = self.file.take() {
            file.flush()?;
        }
        remove_if_exists(&self.rotated_path(self.keep.max(1)))?;
        if self.keep == 0 {
            remove_if_exists(&self.live_path())?;
        } else {
            for n in (1..self.keep).rev() {
                rename_if_exists(&self.rotated_path(n), &self.rotated_path(n + 1))?;
            }
            rename_if_exists(&self.live_path(), &self.rotated_path(1))?;
        }
        self.reopen()
    }

    fn write_line(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let len = buf.len() as u64;
        if let Some((_, size)) = &self.file
            && *size > 0
            && size.saturating_add(len) > self.max_size
        {
            self.rotate()?;
        }
        let Some((file, size)) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open after rotation"));
        };
        file.write_all(buf)?;
        *size += len;
        Ok(())
    }

    fn fail(&mut self, err: &io::Error) {
        self.file = None;
        self.retry_at = Some(Instant::now() + self.retry_after);
        if !self.reported {
            self.reported = true;
            report(&format!(
                "cannot write log file {}: {err}; logging to stderr only until it works again",
                self.live_path().display()
            ));
        }
    }
}

impl Write for SizeRotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(buf.len());
        }
        self.retry_at = None;
        match self.write_line(buf) {
            Ok(()) if self.reported => {
                self.reported = false;
                report(&format!(
                    "writing log file {} again",
                    self.live_path().display()
                ));
            }
            Ok(()) => {}
            Err(err) => self.fail(&err),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some((file, _)) = &mut self.file
            && let Err(err) = file.flush()
        {
            self.fail(&err);
        }
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// A line straight to stderr, bypassing tracing: this runs on the log writer thread,
/// and a failing log file must not feed its own failure back into itself.
fn report(message: &str) {
    let _ = writeln!(io::stderr(), "tidegate: {message}");
}

#[cfg(test)]
mod tests;
