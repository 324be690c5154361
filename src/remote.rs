//! Remote configuration: everything a `config/set` push goes through before it may
//! change a gateway, as plain functions with no MQTT in them (SPEC sections 5 and 8).
//!
//! [`consider`] takes the bytes of one push and decides, in this order: the size limit
//! (256 KiB); a JSON object with an integer `version` ≥ 1 and an object `config`;
//! remote configuration switched on in the local file; the signature, when
//! `mqtt.config_hmac_key_file` is set; a version greater than the
//! highest seen; only the sections an overlay may hold; the overlay laid over the local
//! file ([`merge`]) and validated exactly like a file, every problem named by its key
//! path; and the command policy ([`policy`]). Its answer is a [`Decision`]: apply this
//! validated [`Config`] and persist this [`RemoteState`], or reject with one line for
//! `config/state` ([`ConfigState`]). [`effective`] lays the persisted overlay over the
//! file at start-up and on SIGHUP through the same path, so an overlay is never judged
//! two ways. [`Probation`] decides, once `mqtt.config_confirm` has passed, whether an
//! applied overlay stays or is rolled back.
//!
//! Invariants: everything arriving is untrusted and nothing here panics on it; an
//! error is one line of at most 1 KiB that names the key; the highest version seen is
//! raised by every push that passed the signature check (or every push, without a
//! key), applied or not, and never by one that failed it, so unsigned junk cannot raise
//! the bar; a rejected push changes nothing else. This module does no IO but reading
//! and writing `remote.json` (`state`), and does not apply anything: the agent does,
//! then persists the state it was given.

mod answer;
mod envelope;
mod merge;
mod policy;
mod probation;
mod sign;
mod state;

use crate::config::node::{self, Table, Value};
use crate::config::{self, Config, ConfigErrors};

pub use answer::{ConfigState, Status};
pub use probation::{Baseline, Probation, ReadCounts, Verdict, changed_buses};
pub use sign::sign;
pub use state::{Overlay, PROBATION_STARTS, RemoteState, STATE_FILE, StateError};

/// The largest push taken; larger ones are rejected unread.
pub const MAX_PUSH_BYTES: usize = 256 * 1024;
/// The longest error in a `config/state` or `cmd/response` answer.
pub const MAX_ERROR_BYTES: usize = 1024;
/// The largest version taken: 2^53 − 1, the largest integer every JSON reader keeps
/// exactly. A version past it would lock out every later push.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// The local configuration a push is laid over: the file's tree and its validated
/// `Config` (the last good copy when the file is broken and the agent runs on that).
#[derive(Debug, Clone)]
pub struct FileConfig {
    tree: Table,
    config: Config,
}

impl FileConfig {
    /// Reads and validates the local file's text; `origin` names it in errors.
    pub fn new(text: &str, origin: &str) -> Result<FileConfig, ConfigErrors> {
        let config = config::parse_str(text, origin)?;
        let tree = node::from_toml(text).map_err(|e| {
            ConfigErrors(vec![config::ConfigError {
                origin: origin.to_owned(),
                line: e.line,
                path: "syntax".to_owned(),
                message: e.message,
            }])
        })?;
        Ok(FileConfig { tree, config })
    }

    /// The file's own configuration, without any overlay.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// What to do with one push.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Apply `config` (the file with the overlay laid over it, validated); once it is
    /// applied, persist `state` and answer [`ConfigState::applied`]. If applying fails,
    /// answer rejected and persist `state.with_seen(version)` instead.
    Apply {
        config: Box<Config>,
        state: RemoteState,
    },
    /// Answer [`ConfigState::rejected`] with `version` and `error`; when `seen` is
    /// given, persist `state.with_seen(seen)`.
    Reject {
        version: Option<u64>,
        error: String,
        seen: Option<u64>,
    },
    /// A retained push of a version already answered, delivered again at a reconnect:
    /// nothing to do and nothing to answer (the retained `config/state` still holds
    /// the answer it was given).
    Ignore { version: u64 },
}

impl Decision {
    /// The version the push named, where it named one.
    pub fn version(&self) -> Option<u64> {
        match self {
            Decision::Apply { state, .. } => state.applied().map(|o| o.version),
            Decision::Reject { version, .. } => *version,
            Decision::Ignore { version } => Some(*version),
        }
    }

    /// The `config/state` answer for a rejection (the others are answered once
    /// applied, or not at all).
    pub fn rejection(&self) -> Option<ConfigState> {
        match self {
            Decision::Reject { version, error, .. } => Some(ConfigState::rejected(*version, error)),
            _ => None,
        }
    }
}

/// Decides what to do with one `config/set` push. `retained` is the MQTT retain flag
/// of the delivery; `hmac_key` the key read from `mqtt.config_hmac_key_file` (`None`
/// when the file sets none, or when it could not be read: then every push is refused).
pub fn consider(
    push: &[u8],
    retained: bool,
    state: &RemoteState,
    file: &FileConfig,
    hmac_key: Option<&[u8]>,
) -> Decision {
    let reject =
        |version: Option<u64>, problems: &[(String, String)], seen: Option<u64>| Decision::Reject {
            version,
            error: one_line(version, problems),
            seen,
        };
    let env = match envelope::open(push) {
        Ok(env) => env,
        Err(m) => return reject(m.version, &[(m.path.to_owned(), m.message)], None),
    };
    let version = Some(env.version);
    if let Err(why) = remote_config_on(&file.config) {
        return reject(version, &[("push".to_owned(), why)], None);
    }
    let key_file = file
        .config
        .mqtt
        .as_ref()
        .and_then(|m| m.config_hmac_key_file.as_ref());
    match (hmac_key, key_file) {
        (Some(key), _) => {
            if let Err(why) = sign::verify(key, env.config.get().as_bytes(), env.hmac) {
                return reject(version, &[("hmac".to_owned(), why)], None);
            }
        }
        (None, Some(path)) => {
            let why = format!(
                "the key in mqtt.config_hmac_key_file ({}) could not be read, so every push is refused until it can",
                path.display()
            );
            return reject(version, &[("hmac".to_owned(), why)], None);
        }
        (None, None) => {}
    }
    if env.version <= state.highest_seen() {
        if retained {
            return Decision::Ignore {
                version: env.version,
            };
        }
        let why = format!(
            "stale: not greater than {}, the highest version this gateway has seen (a replay or an old document; push a higher version)",
            state.highest_seen()
        );
        return reject(version, &[("version".to_owned(), why)], None);
    }
    // From here on the push counts as seen, whatever becomes of it.
    let seen = version;
    let text = env.config.get();
    match lay_over(file, text, env.version) {
        Ok(config) => Decision::Apply {
            config: Box::new(config),
            state: state.with_applied(Overlay {
                version: env.version,
                config: text.to_owned(),
            }),
        },
        Err(problems) => reject(version, &problems, seen),
    }
}

/// The persisted overlay could not be laid over the local file (the file changed
/// since, or no longer allows it): run on the file alone and report this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct OverlayRefused {
    pub version: u64,
    /// One line, like a rejected push's: `config/set v7: sensor[0].bus: unknown bus "b"`.
    pub error: String,
}

/// The configuration to run: the local file with the applied overlay laid over it,
/// validated like a push. On `Err` the caller runs on `file.config()` alone, reports
/// the error (log, `config_error`, `config/state` rejected) and reports
/// `config_version` 0, keeping `state` as it is: a later file may fit it again.
pub fn effective(file: &FileConfig, state: &RemoteState) -> Result<Config, OverlayRefused> {
    let Some(overlay) = state.applied() else {
        return Ok(file.config.clone());
    };
    let refused = |problems: &[(String, String)]| OverlayRefused {
        version: overlay.version,
        error: one_line(Some(overlay.version), problems),
    };
    remote_config_on(&file.config).map_err(|why| refused(&[("push".to_owned(), why)]))?;
    lay_over(file, &overlay.config, overlay.version).map_err(|p| refused(&p))
}

/// Whether the local file takes remote configuration at all.
fn remote_config_on(config: &Config) -> Result<(), String> {
    match &config.mqtt {
        None => Err("remote configuration is off: the local file has no [mqtt] section".to_owned()),
        Some(m) if !m.remote_config => Err(
            "remote configuration is off on this gateway (mqtt.remote_config = false in the local file)"
                .to_owned(),
        ),
        Some(_) => Ok(()),
    }
}

/// The overlay text (a JSON object) laid over the file and validated; or every problem
/// as (key path, message) in the sender's terms.
fn lay_over(file: &FileConfig, text: &str, version: u64) -> Result<Config, Vec<(String, String)>> {
    let problem = |path: &str, message: String| vec![(path.to_owned(), message)];
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| problem("config", format!("cannot be read: {e}")))?;
    let overlay = match node::from_json(&json) {
        Ok(node::Node {
            value: Value::Table(t),
            ..
        }) => t,
        Ok(other) => {
            return Err(problem(
                "config",
                format!("expected an object, got {}", other.value.type_name()),
            ));
        }
        Err(errors) => {
            return Err(errors.into_iter().map(|e| (e.path, e.message)).collect());
        }
    };
    let outside: Vec<_> = merge::check_sections(&overlay)
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect();
    if !outside.is_empty() {
        return Err(outside);
    }
    let (root, origins, own) = merge::lay_over(&file.tree, &overlay);
    let mut problems: Vec<_> = own.into_iter().map(|p| (p.path, p.message)).collect();
    let origin = format!("config/set v{version}");
    let merged = match config::read_config(&root, &origin) {
        Ok(merged) => merged,
        Err(errors) => {
            problems.extend(errors.0.iter().map(|e| origins.rename(&e.path, &e.message)));
            return Err(problems);
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let allowed = file
        .config
        .mqtt
        .as_ref()
        .is_some_and(|m| m.allow_remote_commands);
    if !allowed {
        let refused: Vec<_> = policy::command_changes(&file.config, &merged)
            .iter()
            .map(|(path, message)| origins.rename(path, message))
            .collect();
        if !refused.is_empty() {
            return Err(refused);
        }
    }
    Ok(merged)
}

/// `config/set v7: a.b: what; c.d: what (and 3 more)`: every problem that fits in one
/// line of at most [`MAX_ERROR_BYTES`], then how many more there are.
fn one_line(version: Option<u64>, problems: &[(String, String)]) -> String {
    let mut out = match version {
        Some(v) => format!("config/set v{v}: "),
        None => "config/set: ".to_owned(),
    };
    if problems.is_empty() {
        out.push_str("config: invalid");
        return out;
    }
    let items: Vec<String> = problems
        .iter()
        .map(|(path, message)| escape_controls(&format!("{path}: {message}")))
        .collect();
    for (i, item) in items.iter().enumerate() {
        let after = items.len() - i - 1;
        let more = if after > 0 {
            format!(" (and {after} more)")
        } else {
            String::new()
        };
        let sep = if i == 0 { "" } else { "; " };
        if out.len() + sep.len() + item.len() + more.len() <= MAX_ERROR_BYTES {
            out.push_str(sep);
            out.push_str(item);
            continue;
        }
        if i == 0 {
            let room = MAX_ERROR_BYTES.saturating_sub(out.len() + more.len() + '…'.len_utf8());
            out.push_str(cut(item, room));
            out.push('…');
            out.push_str(&more);
        } else {
            out.push_str(&format!(" (and {} more)", items.len() - i));
        }
        return out;
    }
    out
}

/// `text` as one line of at most `max` bytes: control characters escaped, the end cut.
pub(crate) fn fit_line(text: &str, max: usize) -> String {
    let line = escape_controls(text);
    if line.len() <= max {
        return line;
    }
    let mut out = cut(&line, max.saturating_sub('…'.len_utf8())).to_owned();
    out.push('…');
    out
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Newlines and other control characters written as escapes, so an error stays on one
/// line whatever the sender put in a key.
fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if c.is_control() => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
