//! The last valid configuration, kept as `{state_dir}/last-good.toml` (SPEC section 2).
//!
//! A typo in the config file must never stop a pond's data: at start-up a broken file
//! falls back to the last configuration that was valid, and says so through
//! [`Source::LastGood`], which carries the file's errors for the log, status and
//! heartbeat. Invariants: `last-good.toml` is only ever replaced whole (temp file in the
//! same directory, fsync, rename, fsync of the directory), so a power cut leaves the old
//! or the new file, never half of one; the fallback is only taken when it parses and
//! validates itself. This module does not decide when to save: the agent saves a text
//! once it has applied it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::node::{self, Value};
use super::{Config, ConfigErrors, DEFAULT_STATE_DIR};

/// The file name of the kept configuration inside `state_dir`.
pub const LAST_GOOD_FILE: &str = "last-good.toml";

/// Where the running configuration came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File,
    LastGood { errors: ConfigErrors },
}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub text: String,
    pub source: Source,
}

/// Loads `path`; when it is broken, the last good configuration instead, if there is
/// one that is itself valid. Otherwise the file's errors.
pub fn load_with_fallback(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let errors = match super::load(path) {
        Ok((config, text)) => {
            return Ok(LoadedConfig {
                config,
                text,
                source: Source::File,
            });
        }
        Err(errors) => errors,
    };
    let state_dir = fs::read_to_string(path)
        .ok()
        .and_then(|text| state_dir_named_in(&text))
        .or_else(|| {
            std::env::var_os("STATE_DIRECTORY")
                .map(PathBuf::from)
                .filter(|p| !p.as_os_str().is_empty())
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    // systemd may pass several directories separated by ':'; ours is the first.
    let state_dir = first_of_list(&state_dir);
    match super::load(&state_dir.join(LAST_GOOD_FILE)) {
        Ok((config, text)) => Ok(LoadedConfig {
            config,
            text,
            source: Source::LastGood { errors },
        }),
        Err(_) => Err(errors),
    }
}

/// Writes `text` as `{state_dir}/last-good.toml`, atomically, creating `state_dir` if
/// it is missing.
pub fn save_last_good(state_dir: &Path, text: &str) -> std::io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let target = state_dir.join(LAST_GOOD_FILE);
    let temp = state_dir.join(format!(".{LAST_GOOD_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename is only durable once the directory entry itself is on disk.
    fs::File::open(state_dir)?.sync_all()
}

/// The `agent.state_dir` of a document, read as far as the TOML parser can recover.
fn state_dir_named_in(text: &str) -> Option<PathBuf> {
    let root = node::from_toml_lenient(text);
    let Value::Table(agent) = &root.get("agent")?.node.value else {
        return None;
    };
    match &agent.get("state_dir")?.node.value {
        Value::String(s) if !s.is_empty() => Some(PathBuf::from(s)),
        _ => None,
    }
}

fn first_of_list(dir: &Path) -> PathBuf {
    match dir.to_str() {
        Some(s) if s.contains(':') => PathBuf::from(s.split(':').next().unwrap_or(s)),
        _ => dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_is_found_in_a_broken_file() {
        let text = "[agent]\nid = \"p\"\nstate_dir = \"/srv/tg\"\n\n[jobs.sample]\nevery = \n";
        assert_eq!(state_dir_named_in(text), Some(PathBuf::from("/srv/tg")));
        assert_eq!(state_dir_named_in("[agent\nid = 1"), None);
    }

    #[test]
    fn save_creates_the_dir_and_replaces_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/b");
        save_last_good(&state, "one").expect("first save");
        save_last_good(&state, "two").expect("second save");
        assert_eq!(
            fs::read_to_string(state.join(LAST_GOOD_FILE)).expect("read"),
            "two"
        );
        let names: Vec<_> = fs::read_dir(&state)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    #[test]
    fn list_of_state_dirs_takes_the_first() {
        assert_eq!(
            first_of_list(Path::new("/var/lib/a:/var/lib/b")),
            PathBuf::from("/var/lib/a")
        );
        assert_eq!(
            first_of_list(Path::new("/var/lib/a")),
            PathBuf::from("/var/lib/a")
        );
    }
}
