//! Remote commands: a `cmd/request` read and checked against the running configuration
//! into an [`Action`], and the `cmd/response` that answers it (SPEC sections 5 and 8).
//!
//! A request is `{"id": "…", "cmd": "…", "args": {…}}`. `run-job`, `pause-job` and
//! `resume-job` take `{"job": NAME}`; `get-config` and `upload-now` take no arguments
//! (`args` may be left out or `{}`). The answer is `{"id", "ok": true, "result"}` or
//! `{"id", "ok": false, "error"}`, the error one line of at most 1 KiB; a request that
//! cannot be answered to its own string `id` is answered to the id it gave (a number,
//! say), else to `null`.
//!
//! Invariants: everything arriving is untrusted: the size is checked before parsing,
//! nothing panics, and every refusal says which member is wrong. An action names only
//! a job that exists in the configuration it was checked against, and `run-job` names
//! a `command` job only where the local file sets `mqtt.allow_remote_commands = true`
//! (pausing and resuming one is always allowed: neither makes a program run sooner).
//! This module does not carry actions out; the agent hands them to the scheduler.

use serde_json::{Map, Value, json};

use crate::config::{Config, JobKind};
use crate::remote::{MAX_ERROR_BYTES, fit_line};

/// The largest request taken; larger ones are refused unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The longest `id` taken, so an answer never carries a caller's megabyte back.
pub const MAX_ID_BYTES: usize = 256;

const COMMANDS: [&str; 5] = [
    "run-job",
    "pause-job",
    "resume-job",
    "get-config",
    "upload-now",
];

/// A checked command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run this job once now (the scheduler queues a manual run).
    RunJob(String),
    /// Stop this job firing until it is resumed.
    PauseJob(String),
    ResumeJob(String),
    /// Answer with [`config_result`] of the effective configuration.
    GetConfig,
    /// Run the built-in `upload` job now.
    UploadNow,
}

impl Action {
    /// The job the action is about (`upload` for `upload-now`).
    pub fn job(&self) -> Option<&str> {
        match self {
            Action::RunJob(j) | Action::PauseJob(j) | Action::ResumeJob(j) => Some(j),
            Action::UploadNow => Some("upload"),
            Action::GetConfig => None,
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    pub action: Action,
}

impl Request {
    /// The `cmd/response` for a command carried out: `result` is [`config_result`] for
    /// `get-config`, `{"job": NAME}` ([`Request::done`]) for the others.
    pub fn ok(&self, result: Value) -> String {
        json!({"id": self.id, "ok": true, "result": result}).to_string()
    }

    /// The success answer of a job command: `{"job": NAME}`.
    pub fn done(&self) -> String {
        self.ok(json!({"job": self.action.job()}))
    }

    /// The `cmd/response` for a command that could not be carried out (the
    /// scheduler's own reason: a job already waiting, a job not paused, ...).
    pub fn failed(&self, error: &str) -> String {
        response_error(&Value::String(self.id.clone()), error)
    }
}

/// A request refused before anything was done, with the id to answer to.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The request's `id` when it gave a string or a number, else `null`.
    pub id: Value,
    /// `member: what is wrong`, one line of at most 1 KiB.
    pub error: String,
}

impl Refused {
    /// The `cmd/response` payload.
    pub fn response(&self) -> String {
        response_error(&self.id, &self.error)
    }
}

fn response_error(id: &Value, error: &str) -> String {
    json!({"id": id, "ok": false, "error": fit_line(error, MAX_ERROR_BYTES)}).to_string()
}

/// The `get-config` result: the effective configuration as TOML text with secrets
/// masked, exactly what `tidegate check-config` prints (a JSON string).
pub fn config_result(config: &Config) -> Value {
    Value::String(crate::config::to_toml_masked(config))
}

/// Reads one `cmd/request` and checks it against `config`, the running configuration.
pub fn parse(payload: &[u8], config: &Config) -> Result<Request, Refused> {
    let refuse = |id: &Value, path: &str, message: String| Refused {
        id: id.clone(),
        error: fit_line(&format!("{path}: {message}"), MAX_ERROR_BYTES),
    };
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(refuse(
            &Value::Null,
            "request",
            format!(
                "{} bytes is over the {} KiB limit for a command",
                payload.len(),
                MAX_REQUEST_BYTES / 1024
            ),
        ));
    }
    let members = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(members)) => members,
        Ok(other) => {
            return Err(refuse(
                &Value::Null,
                "request",
                format!("expected a JSON object, got {}", type_name(&other)),
            ));
        }
        Err(e) => {
            return Err(refuse(
                &Value::Null,
                "request",
                format!("not valid JSON: {e}"),
            ));
        }
    };
    let id = match members.get("id") {
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES => s.clone(),
        Some(Value::String(s)) => {
            return Err(refuse(
                &Value::Null,
                "id",
                format!("{} bytes is longer than {MAX_ID_BYTES}", s.len()),
            ));
        }
        Some(n @ Value::Number(_)) => {
            return Err(refuse(
                n,
                "id",
                "expected a string, got a number".to_owned(),
            ));
        }
        Some(other) => {
            return Err(refuse(
                &Value::Null,
                "id",
                format!("expected a string, got {}", type_name(other)),
            ));
        }
        None => {
            return Err(refuse(
                &Value::Null,
                "id",
                "missing: a request needs a string id to be answered to".to_owned(),
            ));
        }
    };
    let answer_to = Value::String(id.clone());
    let refuse = |path: &str, message: String| refuse(&answer_to, path, message);
    if let Some(name) = members
        .keys()
        .find(|k| !["id", "cmd", "args"].contains(&k.as_str()))
    {
        return Err(refuse(
            "request",
            format!("unknown member {name:?}: a request holds \"id\", \"cmd\" and \"args\""),
        ));
    }
    let cmd = match members.get("cmd") {
        Some(Value::String(c)) => c.as_str(),
        Some(other) => {
            return Err(refuse(
                "cmd",
                format!("expected a string, got {}", type_name(other)),
            ));
        }
        None => return Err(refuse("cmd", "missing".to_owned())),
    };
    if !COMMANDS.contains(&cmd) {
        return Err(refuse(
            "cmd",
            format!(
                "unknown command {cmd:?}: expected one of {}",
                quoted(&COMMANDS)
            ),
        ));
    }
    let empty = Map::new();
    let args = match members.get("args") {
        None => &empty,
        Some(Value::Object(args)) => args,
        Some(other) => {
            return Err(refuse(
                "args",
                format!("expected an object, got {}", type_name(other)),
            ));
        }
    };
    let action = match cmd {
        "run-job" | "pause-job" | "resume-job" => {
            if let Some(name) = args.keys().find(|k| k.as_str() != "job") {
                return Err(refuse(
                    "args",
                    format!("unknown argument {name:?}: {cmd} takes {{\"job\": NAME}}"),
                ));
            }
            let job = match args.get("job") {
                Some(Value::String(j)) => j,
                Some(other) => {
                    return Err(refuse(
                        "args.job",
                        format!("expected a job name, got {}", type_name(other)),
                    ));
                }
                None => return Err(refuse("args.job", format!("missing: {cmd} needs a job"))),
            };
            let Some(found) = config.job(job) else {
                return Err(refuse("args.job", format!("unknown job {job:?}")));
            };
            let allowed = config
                .mqtt
                .as_ref()
                .is_some_and(|m| m.allow_remote_commands);
            match cmd {
                "run-job" if matches!(found.kind, JobKind::Command(_)) && !allowed => {
                    return Err(refuse(
                        "args.job",
                        format!(
                            "{job:?} is a command job, and mqtt.allow_remote_commands is false in the local file"
                        ),
                    ));
                }
                "run-job" => Action::RunJob(job.clone()),
                "pause-job" => Action::PauseJob(job.clone()),
                _ => Action::ResumeJob(job.clone()),
            }
        }
        _ => {
            if let Some(name) = args.keys().next() {
                return Err(refuse(
                    "args",
                    format!("unknown argument {name:?}: {cmd} takes none"),
                ));
            }
            if cmd == "get-config" {
                Action::GetConfig
            } else if config.upload.is_none() {
                return Err(refuse(
                    "cmd",
                    "upload-now: uploading is off on this gateway (no [upload] section)".to_owned(),
                ));
            } else {
                Action::UploadNow
            }
        }
    };
    Ok(Request { id, action })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[agent]
id = "pond-07"
timezone = "UTC"
[mqtt]
url = "mqtt://broker"
[upload]
url = "https://ingest.example.com/v1"
[jobs.aerator]
kind = "command"
command = ["/usr/local/bin/aerator"]
"#;

    fn config() -> Config {
        crate::config::parse_str(FILE, "t.toml").unwrap()
    }

    fn parsed(payload: &str) -> Result<Request, Refused> {
        parse(payload.as_bytes(), &config())
    }

    #[track_caller]
    fn check_ok(payload: &str, action: Action) {
        assert_eq!(
            parsed(payload),
            Ok(Request {
                id: "r1".into(),
                action
            })
        );
    }

    #[track_caller]
    fn check_refused(payload: &str, id: Value, error: &str) {
        assert_eq!(
            parsed(payload),
            Err(Refused {
                id,
                error: error.into()
            })
        );
    }

    #[test]
    fn each_command_is_read() {
        check_ok(
            r#"{"id": "r1", "cmd": "run-job", "args": {"job": "sample"}}"#,
            Action::RunJob("sample".into()),
        );
        check_ok(
            r#"{"id": "r1", "cmd": "pause-job", "args": {"job": "aerator"}}"#,
            Action::PauseJob("aerator".into()),
        );
        check_ok(
            r#"{"id": "r1", "cmd": "resume-job", "args": {"job": "aerator"}}"#,
            Action::ResumeJob("aerator".into()),
        );
        check_ok(r#"{"id": "r1", "cmd": "get-config"}"#, Action::GetConfig);
        check_ok(
            r#"{"id": "r1", "cmd": "get-config", "args": {}}"#,
            Action::GetConfig,
        );
        check_ok(
            r#"{"id": "r1", "cmd": "upload-now", "args": {}}"#,
            Action::UploadNow,
        );
    }

    #[test]
    fn a_command_job_runs_only_where_the_file_allows() {
        let payload = r#"{"id": "r1", "cmd": "run-job", "args": {"job": "aerator"}}"#;
        check_refused(
            payload,
            "r1".into(),
            "args.job: \"aerator\" is a command job, and mqtt.allow_remote_commands is false in the local file",
        );
        let allowing = crate::config::parse_str(
            &FILE.replace("[upload]", "allow_remote_commands = true\n[upload]"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            parse(payload.as_bytes(), &allowing).map(|r| r.action),
            Ok(Action::RunJob("aerator".into()))
        );
    }

    #[test]
    fn requests_without_a_string_id_are_answered_to_what_they_gave() {
        check_refused(
            r#"{"cmd": "get-config"}"#,
            Value::Null,
            "id: missing: a request needs a string id to be answered to",
        );
        check_refused(
            r#"{"id": 42, "cmd": "get-config"}"#,
            json!(42),
            "id: expected a string, got a number",
        );
        check_refused(
            r#"{"id": ["x"], "cmd": "get-config"}"#,
            Value::Null,
            "id: expected a string, got an array",
        );
        let long = "x".repeat(MAX_ID_BYTES + 1);
        check_refused(
            &format!(r#"{{"id": "{long}", "cmd": "get-config"}}"#),
            Value::Null,
            "id: 257 bytes is longer than 256",
        );
    }

    #[test]
    fn each_rejection_names_the_member() {
        let r1 = || Value::from("r1");
        for (payload, id, error) in [
            (
                "",
                Value::Null,
                "request: not valid JSON: EOF while parsing a value at line 1 column 0",
            ),
            (
                "[1]",
                Value::Null,
                "request: expected a JSON object, got an array",
            ),
            (
                r#"{"id": "r1", "cmd": "reboot"}"#,
                r1(),
                "cmd: unknown command \"reboot\": expected one of \"run-job\", \"pause-job\", \"resume-job\", \"get-config\", \"upload-now\"",
            ),
            (r#"{"id": "r1"}"#, r1(), "cmd: missing"),
            (
                r#"{"id": "r1", "cmd": 7}"#,
                r1(),
                "cmd: expected a string, got a number",
            ),
            (
                r#"{"id": "r1", "cmd": "get-config", "args": []}"#,
                r1(),
                "args: expected an object, got an array",
            ),
            (
                r#"{"id": "r1", "cmd": "get-config", "args": null}"#,
                r1(),
                "args: expected an object, got null",
            ),
            (
                r#"{"id": "r1", "cmd": "get-config", "args": {"full": true}}"#,
                r1(),
                "args: unknown argument \"full\": get-config takes none",
            ),
            (
                r#"{"id": "r1", "cmd": "run-job"}"#,
                r1(),
                "args.job: missing: run-job needs a job",
            ),
            (
                r#"{"id": "r1", "cmd": "run-job", "args": {"job": 3}}"#,
                r1(),
                "args.job: expected a job name, got a number",
            ),
            (
                r#"{"id": "r1", "cmd": "pause-job", "args": {"job": "nope"}}"#,
                r1(),
                "args.job: unknown job \"nope\"",
            ),
            (
                r#"{"id": "r1", "cmd": "resume-job", "args": {"job": "sample", "now": true}}"#,
                r1(),
                "args: unknown argument \"now\": resume-job takes {\"job\": NAME}",
            ),
            (
                r#"{"id": "r1", "cmd": "get-config", "arg": {}}"#,
                r1(),
                "request: unknown member \"arg\": a request holds \"id\", \"cmd\" and \"args\"",
            ),
        ] {
            check_refused(payload, id, error);
        }
    }

    #[test]
    fn upload_now_needs_an_upload_section() {
        let without =
            crate::config::parse_str("[agent]\nid = \"p\"\ntimezone = \"UTC\"\n", "t.toml")
                .unwrap();
        let refused = parse(br#"{"id": "r1", "cmd": "upload-now"}"#, &without).unwrap_err();
        assert_eq!(
            refused.error,
            "cmd: upload-now: uploading is off on this gateway (no [upload] section)"
        );
    }

    #[test]
    fn an_oversized_request_is_refused_unread() {
        let payload = vec![b' '; MAX_REQUEST_BYTES + 1];
        let refused = parse(&payload, &config()).unwrap_err();
        assert_eq!(
            refused.error,
            "request: 65537 bytes is over the 64 KiB limit for a command"
        );
    }

    #[test]
    fn responses() {
        let request =
            parsed(r#"{"id": "r1", "cmd": "run-job", "args": {"job": "sample"}}"#).unwrap();
        let as_json = |s: String| serde_json::from_str::<Value>(&s).unwrap();
        assert_eq!(
            as_json(request.done()),
            json!({"id": "r1", "ok": true, "result": {"job": "sample"}})
        );
        assert_eq!(
            as_json(request.failed("job \"sample\" already has a run waiting")),
            json!({"id": "r1", "ok": false, "error": "job \"sample\" already has a run waiting"})
        );
        let refused = parsed(r#"{"id": 9, "cmd": "x"}"#).unwrap_err();
        assert_eq!(
            as_json(refused.response()),
            json!({"id": 9, "ok": false, "error": "id: expected a string, got a number"})
        );
        let long = request.failed(&"e\n".repeat(2000));
        let error = as_json(long)["error"].as_str().unwrap().to_owned();
        assert!(error.len() <= MAX_ERROR_BYTES && !error.contains('\n'));
    }

    #[test]
    fn get_config_is_the_masked_toml() {
        let mut config = config();
        config.upload.as_mut().unwrap().url = "https://u:hunter2@ingest.example.com/v1".into();
        let request = parsed(r#"{"id": "r1", "cmd": "get-config"}"#).unwrap();
        let answer: Value = serde_json::from_str(&request.ok(config_result(&config))).unwrap();
        let text = answer["result"].as_str().unwrap();
        assert!(
            text.contains("url = \"https://u:***@ingest.example.com/v1\""),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
        assert!(crate::config::parse_str(text, "printed").is_ok());
    }
}
