//! The `config/state` payload: how every push is answered (SPEC sections 5 and 8).
//!
//! `{"version", "status": "applied" | "rejected" | "rolled_back", "error", "applied_at"}`:
//! `version` is the pushed version when the message was a JSON object whose `version`
//! is an integer ≥ 1, else null; `error` is null when applied, else one line of at most
//! 1 KiB; `applied_at` is when the reported configuration took effect (the overlay for
//! `applied`, the previous configuration again for `rolled_back`), null for `rejected`
//! and whenever the wall clock is not trusted, written RFC 3339 UTC with milliseconds.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::MAX_ERROR_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Applied,
    Rejected,
    RolledBack,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Rejected => "rejected",
            Status::RolledBack => "rolled_back",
        }
    }
}

/// One `config/state` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigState {
    pub version: Option<u64>,
    pub status: Status,
    pub error: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
}

impl ConfigState {
    /// `version` is in force since `at` (`None` on an untrusted clock).
    pub fn applied(version: u64, at: Option<DateTime<Utc>>) -> ConfigState {
        ConfigState {
            version: Some(version),
            status: Status::Applied,
            error: None,
            applied_at: at,
        }
    }

    pub fn rejected(version: Option<u64>, error: &str) -> ConfigState {
        ConfigState {
            version,
            status: Status::Rejected,
            error: Some(error.to_owned()),
            applied_at: None,
        }
    }

    /// `version` failed its probation for `reason`; the previous configuration is in
    /// force again since `at`.
    pub fn rolled_back(version: u64, reason: &str, at: Option<DateTime<Utc>>) -> ConfigState {
        ConfigState {
            version: Some(version),
            status: Status::RolledBack,
            error: Some(reason.to_owned()),
            applied_at: at,
        }
    }

    /// The payload. The error is made one line of at most 1 KiB here too, whoever
    /// wrote it.
    pub fn to_json(&self) -> String {
        json!({
            "version": self.version,
            "status": self.status.name(),
            "error": self.error.as_deref().map(|e| super::fit_line(e, MAX_ERROR_BYTES)),
            "applied_at": self.applied_at.map(crate::time::format_utc),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(state: &ConfigState, expected: serde_json::Value) {
        let got: serde_json::Value = serde_json::from_str(&state.to_json()).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn payloads() {
        let at = DateTime::from_timestamp_millis(1_795_395_600_123).unwrap();
        check(
            &ConfigState::applied(7, Some(at)),
            json!({"version": 7, "status": "applied", "error": null, "applied_at": "2026-11-23T01:00:00.123Z"}),
        );
        check(
            &ConfigState::applied(7, None),
            json!({"version": 7, "status": "applied", "error": null, "applied_at": null}),
        );
        check(
            &ConfigState::rejected(None, "config/set: push: not valid JSON"),
            json!({"version": null, "status": "rejected", "error": "config/set: push: not valid JSON", "applied_at": null}),
        );
        check(
            &ConfigState::rolled_back(8, "bus \"a\" returns only bad readings", Some(at)),
            json!({"version": 8, "status": "rolled_back", "error": "bus \"a\" returns only bad readings", "applied_at": "2026-11-23T01:00:00.123Z"}),
        );
    }

    #[test]
    fn an_error_is_one_line_of_at_most_a_kibibyte() {
        let long = format!("first\nsecond {}", "x".repeat(5000));
        let json = ConfigState::rejected(Some(1), &long).to_json();
        let got: serde_json::Value = serde_json::from_str(&json).unwrap();
        let error = got["error"].as_str().unwrap();
        assert!(error.len() <= MAX_ERROR_BYTES, "{}", error.len());
        assert!(error.starts_with("first\\nsecond xxx"), "{error}");
        assert!(!error.contains('\n'));
    }
}
