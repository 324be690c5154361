//! What survives a restart of remote configuration: the applied overlay, the highest
//! version seen, and the overlay to return to if the applied one fails its probation.
//! Kept as `{state_dir}/remote.json`.
//!
//! Invariants: the highest version seen never goes down, whatever happens to the
//! overlays (a rolled-back or rejected version is never applied again unless re-issued
//! with a higher one); the rollback target is always an overlay that passed its
//! probation, or none (the local file alone), never one that did not; the file is only
//! ever replaced whole and durably (temp file, fsync, rename, fsync of the directory),
//! so a power cut leaves the old state or the new one. A missing file is no overlay; a
//! file that cannot be read back is an error the caller reports and then runs on
//! without an overlay: it never stops the agent. This module decides nothing about
//! pushes; it holds and stores what `consider` and the probation decided.
//!
//! The file, for operators who look:
//! ```json
//! {
//!   "format": 1,
//!   "highest_seen": 8,
//!   "applied": { "version": 8, "config": { "jobs": { "sample": { "every": "1m" } } } },
//!   "confirmed": false,
//!   "unconfirmed_starts": 0,
//!   "previous": { "version": 5, "config": { } }
//! }
//! ```
//! `config` is the pushed `config` member exactly as it arrived; `previous` is present
//! only while `applied` is on probation.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The file name inside `state_dir`.
pub const STATE_FILE: &str = "remote.json";
/// The temporary name a new state is written under before it replaces the old.
const TEMP_FILE: &str = "remote.json.tmp";
/// Starts of the agent an overlay may see on probation before it is rolled back: an
/// overlay that makes the agent crash or be restarted over and over must not hold a
/// gateway for ever.
pub const PROBATION_STARTS: u32 = 3;
/// A state file larger than this is not one the agent wrote.
const MAX_STATE_BYTES: u64 = 4 * super::MAX_PUSH_BYTES as u64;
const FORMAT: u32 = 1;

/// One overlay: a version and its `config` member as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub version: u64,
    /// The pushed `config` member, exactly as it appeared in the message.
    pub config: String,
}

/// The persisted state of remote configuration. `Default` is no overlay and nothing
/// seen (`config_version` 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteState {
    applied: Option<Overlay>,
    /// Whether `applied` passed its probation.
    confirmed: bool,
    /// Starts of the agent since `applied` was applied and before it was confirmed.
    unconfirmed_starts: u32,
    /// Where a rollback of `applied` returns to; `None` is the local file alone.
    previous: Option<Overlay>,
    highest_seen: u64,
}

/// Why `remote.json` could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: corrupt ({reason})", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl RemoteState {
    /// The overlay in force, if any.
    pub fn applied(&self) -> Option<&Overlay> {
        self.applied.as_ref()
    }

    /// The overlay a rollback would return to (`None`: the local file alone).
    pub fn previous(&self) -> Option<&Overlay> {
        self.previous.as_ref()
    }

    /// The highest version that passed the signature check (or any version, without a
    /// key), applied or not.
    pub fn highest_seen(&self) -> u64 {
        self.highest_seen
    }

    /// The heartbeat's and status's `config_version`: the applied overlay's, 0 for none.
    pub fn config_version(&self) -> u64 {
        self.applied.as_ref().map_or(0, |o| o.version)
    }

    /// The applied overlay's version while it is on probation.
    pub fn on_probation(&self) -> Option<u64> {
        match &self.applied {
            Some(o) if !self.confirmed => Some(o.version),
            _ => None,
        }
    }

    /// This state with `overlay` applied and on probation. The rollback target is the
    /// overlay now in force if it passed its probation, else the one it would itself
    /// have returned to.
    pub(super) fn with_applied(&self, overlay: Overlay) -> RemoteState {
        let previous = if self.confirmed || self.applied.is_none() {
            self.applied.clone()
        } else {
            self.previous.clone()
        };
        RemoteState {
            highest_seen: self.highest_seen.max(overlay.version),
            applied: Some(overlay),
            confirmed: false,
            unconfirmed_starts: 0,
            previous,
        }
    }

    /// This state with `version` counted as seen.
    pub fn with_seen(&self, version: u64) -> RemoteState {
        RemoteState {
            highest_seen: self.highest_seen.max(version),
            ..self.clone()
        }
    }

    /// The applied overlay passed its probation: it is kept, and is what a later
    /// overlay would be rolled back to.
    pub fn confirmed(&self) -> RemoteState {
        RemoteState {
            confirmed: true,
            unconfirmed_starts: 0,
            previous: None,
            ..self.clone()
        }
    }

    /// The applied overlay failed its probation: back to the previous one (or the file
    /// alone), keeping the highest version seen, so the failed version is never applied
    /// again unless it is re-issued with a higher version.
    pub fn rolled_back(&self) -> RemoteState {
        RemoteState {
            applied: self.previous.clone(),
            confirmed: true,
            unconfirmed_starts: 0,
            previous: None,
            highest_seen: self.highest_seen,
        }
    }

    /// The state to start the agent with. An overlay still on probation counts this
    /// start; at the [`PROBATION_STARTS`]th it is rolled back, with the reason (for
    /// `config/state` `rolled_back`, the log and an event). The caller saves the state
    /// it gets back before applying it.
    pub fn restarted(&self) -> (RemoteState, Option<String>) {
        let Some(version) = self.on_probation() else {
            return (self.clone(), None);
        };
        let starts = self.unconfirmed_starts.saturating_add(1);
        if starts >= PROBATION_STARTS {
            let reason = format!(
                "the agent started {starts} times while version {version} was on probation"
            );
            (self.rolled_back(), Some(reason))
        } else {
            let state = RemoteState {
                unconfirmed_starts: starts,
                ..self.clone()
            };
            (state, None)
        }
    }

    /// Reads `{state_dir}/remote.json`. A missing file is `Ok(default)`: no overlay.
    /// On `Err` the caller logs it as an error and runs with `RemoteState::default()`.
    pub fn load(state_dir: &Path) -> Result<RemoteState, StateError> {
        let path = state_dir.join(STATE_FILE);
        let unreadable = |source| StateError::Unreadable {
            path: path.clone(),
            source,
        };
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RemoteState::default());
            }
            Err(e) => return Err(unreadable(e)),
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.clone(),
            reason,
        };
        if size > MAX_STATE_BYTES {
            return Err(corrupt(format!("{size} bytes, more than the agent writes")));
        }
        let text = fs::read(&path).map_err(unreadable)?;
        from_bytes(&text).map_err(corrupt)
    }

    /// Replaces `{state_dir}/remote.json` whole and durably, creating `state_dir` if it
    /// is missing.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        save_with(state_dir, &self.to_bytes()?, |file, bytes| {
            file.write_all(bytes)
        })
    }

    fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let stored = Stored {
            format: FORMAT,
            highest_seen: self.highest_seen,
            applied: self.applied.as_ref().map(StoredOverlay::of).transpose()?,
            confirmed: self.confirmed,
            unconfirmed_starts: self.unconfirmed_starts,
            previous: self.previous.as_ref().map(StoredOverlay::of).transpose()?,
        };
        let mut bytes = serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored<'a> {
    format: u32,
    highest_seen: u64,
    #[serde(borrow)]
    applied: Option<StoredOverlay<'a>>,
    confirmed: bool,
    unconfirmed_starts: u32,
    #[serde(borrow)]
    previous: Option<StoredOverlay<'a>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredOverlay<'a> {
    version: u64,
    #[serde(borrow)]
    config: &'a RawValue,
}

impl<'a> StoredOverlay<'a> {
    /// Fails only for a config that is not JSON, which `consider` never accepts.
    fn of(overlay: &'a Overlay) -> std::io::Result<StoredOverlay<'a>> {
        let config =
            serde_json::from_str::<&RawValue>(&overlay.config).map_err(std::io::Error::other)?;
        Ok(StoredOverlay {
            version: overlay.version,
            config,
        })
    }

    fn overlay(&self, what: &str) -> Result<Overlay, String> {
        if !self.config.get().starts_with('{') {
            return Err(format!("{what}.config is not an object"));
        }
        if self.version == 0 {
            return Err(format!("{what}.version is 0"));
        }
        Ok(Overlay {
            version: self.version,
            config: self.config.get().to_owned(),
        })
    }
}

fn from_bytes(bytes: &[u8]) -> Result<RemoteState, String> {
    let stored: Stored<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if stored.format != FORMAT {
        return Err(format!("format {} is not {FORMAT}", stored.format));
    }
    let applied = stored
        .applied
        .as_ref()
        .map(|o| o.overlay("applied"))
        .transpose()?;
    let previous = stored
        .previous
        .as_ref()
        .map(|o| o.overlay("previous"))
        .transpose()?;
    // The highest seen is at least what was applied, whatever the file says.
    let highest_seen = applied
        .iter()
        .chain(&previous)
        .map(|o| o.version)
        .fold(stored.highest_seen, u64::max);
    Ok(RemoteState {
        applied,
        confirmed: stored.confirmed,
        unconfirmed_starts: stored.unconfirmed_starts,
        previous,
        highest_seen,
    })
}

/// Writes `bytes` as the state file with `write`, durably: the old file stays until the
/// new one is whole on disk.
fn save_with(
    state_dir: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut fs::File, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let temp = state_dir.join(TEMP_FILE);
    let written = (|| {
        let mut file = fs::File::create(&temp)?;
        write(&mut file, bytes)?;
        file.sync_all()?;
        fs::rename(&temp, state_dir.join(STATE_FILE))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename is durable only once the directory entry is on disk.
    fs::File::open(state_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(version: u64, config: &str) -> Overlay {
        Overlay {
            version,
            config: config.to_owned(),
        }
    }

    fn sample_state() -> RemoteState {
        RemoteState::default()
            .with_applied(overlay(3, r#"{"jobs": {"sample": {"every": "1m"}}}"#))
            .confirmed()
            .with_applied(overlay(5, "{ }"))
            .with_seen(9)
    }

    #[test]
    fn a_missing_file_is_no_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let state = RemoteState::load(dir.path()).unwrap();
        assert_eq!(state, RemoteState::default());
        assert_eq!(state.config_version(), 0);
    }

    #[test]
    fn round_trip_keeps_everything_and_the_exact_config_text() {
        let dir = tempfile::tempdir().unwrap();
        let state = sample_state();
        state.save(dir.path()).unwrap();
        let back = RemoteState::load(dir.path()).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.applied().unwrap().config, "{ }");
        assert_eq!(
            back.previous().unwrap().config,
            r#"{"jobs": {"sample": {"every": "1m"}}}"#
        );
        assert_eq!((back.highest_seen(), back.config_version()), (9, 5));
        assert_eq!(back.on_probation(), Some(5));
    }

    #[test]
    fn a_corrupt_file_is_an_error_to_report_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for bad in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            b"[]",
            br#"{"format": 2, "highest_seen": 1, "applied": null, "confirmed": true, "unconfirmed_starts": 0, "previous": null}"#,
            br#"{"format": 1, "highest_seen": 1, "applied": {"version": 1, "config": [1]}, "confirmed": true, "unconfirmed_starts": 0, "previous": null}"#,
            br#"{"format": 1, "highest_seen": -1, "applied": null, "confirmed": true, "unconfirmed_starts": 0, "previous": null}"#,
            br#"{"format": 1, "highest_seen": 1, "applied": null, "confirmed": true, "unconfirmed_starts": 0, "previous": null, "x": 1}"#,
        ] {
            fs::write(&path, bad).unwrap();
            let err = RemoteState::load(dir.path()).expect_err("corrupt");
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("remote.json: corrupt ("), "{err}");
        }
    }

    #[test]
    fn an_inconsistent_highest_seen_is_raised_to_what_was_applied() {
        let bytes = br#"{"format": 1, "highest_seen": 2, "applied": {"version": 7, "config": {}}, "confirmed": true, "unconfirmed_starts": 0, "previous": null}"#;
        assert_eq!(from_bytes(bytes).unwrap().highest_seen(), 7);
    }

    #[test]
    fn a_torn_write_never_replaces_the_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = sample_state();
        good.save(dir.path()).unwrap();
        let newer = good.with_seen(12);
        let bytes = newer.to_bytes().unwrap();
        // The write fails half way (disk full, power cut seen as an error).
        let half = bytes.len() / 2;
        let err = save_with(dir.path(), &bytes, |file, b| {
            file.write_all(&b[..half])?;
            Err(std::io::Error::other("disk full"))
        })
        .expect_err("write failed");
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(RemoteState::load(dir.path()).unwrap(), good);
        assert!(!dir.path().join(TEMP_FILE).exists(), "temp file removed");

        // A power cut leaves a torn temp file behind: it is ignored, then overwritten.
        fs::write(dir.path().join(TEMP_FILE), &bytes[..half]).unwrap();
        assert_eq!(RemoteState::load(dir.path()).unwrap(), good);
        newer.save(dir.path()).unwrap();
        assert_eq!(RemoteState::load(dir.path()).unwrap(), newer);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn rollback_returns_to_the_last_confirmed_overlay_and_keeps_highest_seen() {
        let state = sample_state();
        let back = state.rolled_back();
        assert_eq!(back.applied().unwrap().version, 3);
        assert_eq!(back.highest_seen(), 9);
        assert_eq!(back.on_probation(), None);
        // Rolling back the first overlay returns to the file alone.
        let first = RemoteState::default().with_applied(overlay(4, "{}"));
        let back = first.rolled_back();
        assert_eq!((back.applied(), back.highest_seen()), (None, 4));
        assert_eq!(back.config_version(), 0);
    }

    #[test]
    fn an_unconfirmed_overlay_is_never_a_rollback_target() {
        let state = RemoteState::default()
            .with_applied(overlay(3, "{}"))
            .confirmed()
            .with_applied(overlay(5, "{}"))
            .with_applied(overlay(6, "{}"));
        assert_eq!(state.previous().unwrap().version, 3);
        assert_eq!(state.rolled_back().applied().unwrap().version, 3);
    }

    #[test]
    fn repeated_starts_on_probation_roll_back() {
        let (state, reason) = sample_state().restarted();
        assert_eq!((state.on_probation(), reason), (Some(5), None));
        let (state, reason) = state.restarted();
        assert_eq!((state.on_probation(), reason), (Some(5), None));
        let (state, reason) = state.restarted();
        assert_eq!(state.config_version(), 3);
        assert_eq!(
            reason.as_deref(),
            Some("the agent started 3 times while version 5 was on probation")
        );
        assert_eq!(state.highest_seen(), 9);
        // A confirmed overlay is not counted.
        let (confirmed, reason) = sample_state().confirmed().restarted();
        assert_eq!((confirmed, reason), (sample_state().confirmed(), None));
    }
}
