//! Remote configuration and commands against hostile input: many thousands of malformed
//! pushes and requests (random bytes, cut and mutated documents, a wrong type at every
//! key, huge numbers, deep nesting) must each be refused with one non-empty line of at
//! most 1 KiB, and nothing may panic. Seeded, so a failure names a case that repeats.

use serde_json::{Value, json};
use tidegate::command;
use tidegate::remote::{self, Decision, FileConfig, MAX_ERROR_BYTES, RemoteState};

const FILE: &str = r#"
[agent]
id = "pond-07"
timezone = "UTC"

[mqtt]
url = "mqtt://broker.example.com"

[upload]
url = "https://ingest.example.com/v1/readings"

[[bus]]
name = "rs485-a"
kind = "modbus-rtu"
port = "/dev/ttyUSB0"

[[sensor]]
id = "pond7.do"
bus = "rs485-a"
slave = 3
register = 0

[jobs.aerator]
kind = "command"
command = ["/usr/local/bin/aerator"]
"#;

const KEY: &[u8] = b"farm-key";

/// A valid overlay touching every section it may hold.
fn base_overlay() -> Value {
    json!({
        "jobs": {
            "sample": {"every": "1m", "jitter": "1s", "retry": {"attempts": 2, "delay": "1s"}},
            "fast": {"kind": "sample", "sensors": ["pond7.do"], "every": "30s", "enabled": true}
        },
        "bus": [{"name": "sim2", "kind": "simulated"}],
        "sensor": [
            {"id": "pond7.do", "bus": "rs485-a", "slave": 3, "register": 0, "type": "f32", "scale": 1.5},
            {"id": "x.sim", "bus": "sim2", "model": {"base": 1.0, "amplitude": 0.5, "period": "1h", "noise": 0.1}}
        ],
        "alarm": [{"id": "hot", "sensor": "x.sim", "above": 30.0, "clear_below": 29.0, "severity": "warning", "for": "1m"}],
        "upload": {"batch_size": 200, "gzip": false, "format": "influx"},
        "buffer": {"max_rows": 5000, "keep_uploaded": "1d"}
    })
}

fn file(signed: bool) -> FileConfig {
    let text = if signed {
        FILE.replace(
            "[upload]",
            "config_hmac_key_file = \"/etc/tidegate/config.key\"\n\n[upload]",
        )
    } else {
        FILE.to_owned()
    };
    FileConfig::new(&text, "tidegate.toml").expect("fixture is valid")
}

/// Placeholders a document is built with, replaced by text `serde_json` cannot hold.
fn render(doc: &Value, rng: &mut fastrand::Rng) -> String {
    let depth = rng.usize(100..3000);
    doc.to_string()
        .replace("\"__HUGE_INT__\"", "123456789012345678901234567890")
        .replace("\"__HUGE_NEG__\"", "-99999999999999999999999")
        .replace("\"__HUGE_FLOAT__\"", "1e400")
        .replace(
            "\"__DEEP__\"",
            &format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        )
}

fn push_text(version: &str, config: &str, hmac: Option<&str>) -> String {
    match hmac {
        Some(h) => format!(r#"{{"version": {version}, "config": {config}, "hmac": "{h}"}}"#),
        None => format!(r#"{{"version": {version}, "config": {config}}}"#),
    }
}

/// Values of every JSON type, and the ones serde_json cannot hold.
fn wrong_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e308),
        json!(i64::MIN),
        json!(u64::MAX),
        json!("__HUGE_INT__"),
        json!("__HUGE_NEG__"),
        json!("__HUGE_FLOAT__"),
        json!("zz\u{0}\n\u{202e}"),
        json!("x".repeat(5000)),
        json!([]),
        json!([1, "a", null]),
        json!({}),
        json!({"unknown": 1}),
        json!("__DEEP__"),
    ]
}

fn json_kind(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(s) if s.starts_with("__HUGE") => 2,
        Value::String(s) if s == "__DEEP__" => 4,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Every path in a document, as steps from the root.
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                out.push(here.clone());
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::Index(i));
                out.push(here.clone());
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn at_mut<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

fn mutate(text: &str, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..bytes.len().max(1));
        match rng.u8(..4) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] = rng.u8(..);
            }
            1 if !bytes.is_empty() => {
                bytes.remove(at.min(bytes.len() - 1));
            }
            2 => {
                let syntax = b"{}[]\",:-09.en\\";
                bytes.insert(at.min(bytes.len()), syntax[rng.usize(..syntax.len())]);
            }
            _ => bytes.insert(at.min(bytes.len()), rng.u8(..)),
        }
    }
    bytes
}

fn random_bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = rng.usize(..300);
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    if rng.bool() {
        bytes.insert(0, b'{');
    }
    bytes
}

/// The contract's version rule read on its own: a JSON object whose `version` is an
/// integer of 1 or more (members kept raw, so deep nesting elsewhere does not hide it).
fn pushed_version(push: &[u8]) -> Option<u64> {
    let members: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(push).ok()?;
    let version: Value = serde_json::from_str(members.get("version")?.get()).ok()?;
    version.as_u64().filter(|v| *v >= 1)
}

struct Tally {
    cases: usize,
    rejected: usize,
}

/// Runs one push; checks what every answer must be; says whether it was rejected.
#[track_caller]
fn run_push(
    push: &[u8],
    file: &FileConfig,
    key: Option<&[u8]>,
    must_reject: bool,
    tally: &mut Tally,
) {
    tally.cases += 1;
    let state = RemoteState::default().with_seen(2);
    let decision = remote::consider(push, false, &state, file, key);
    match &decision {
        Decision::Reject {
            version,
            error,
            seen,
        } => {
            tally.rejected += 1;
            let shown = String::from_utf8_lossy(&push[..push.len().min(300)]);
            assert!(!error.is_empty(), "empty error for {shown}");
            assert!(
                error.len() <= MAX_ERROR_BYTES,
                "{} bytes: {error}",
                error.len()
            );
            assert!(!error.contains(['\n', '\r']), "two lines: {error}");
            assert!(error.starts_with("config/set"), "{error}");
            if let Some(v) = version {
                assert_eq!(pushed_version(push), Some(*v), "{shown}");
                assert!(error.starts_with(&format!("config/set v{v}: ")), "{error}");
            }
            if let Some(s) = seen {
                assert_eq!(Some(*s), *version);
            }
            let answer = decision
                .rejection()
                .expect("a rejection has an answer")
                .to_json();
            let answer: Value = serde_json::from_str(&answer).expect("answer is JSON");
            assert_eq!(answer["status"], "rejected");
        }
        Decision::Apply { .. } | Decision::Ignore { .. } => {
            assert!(
                !must_reject,
                "malformed push taken: {}",
                String::from_utf8_lossy(push)
            );
        }
    }
}

#[test]
fn the_base_overlay_is_valid_plain_and_signed() {
    let config = base_overlay().to_string();
    let plain = push_text("3", &config, None);
    assert!(matches!(
        remote::consider(
            plain.as_bytes(),
            false,
            &RemoteState::default(),
            &file(false),
            None
        ),
        Decision::Apply { .. }
    ));
    let signed = push_text("3", &config, Some(&remote::sign(KEY, config.as_bytes())));
    assert!(matches!(
        remote::consider(
            signed.as_bytes(),
            false,
            &RemoteState::default(),
            &file(true),
            Some(KEY)
        ),
        Decision::Apply { .. }
    ));
}

#[test]
fn malformed_pushes_are_each_refused_in_one_short_line() {
    let mut rng = fastrand::Rng::with_seed(0x71de_0001);
    let plain = file(false);
    let signed = file(true);
    let base = base_overlay();
    let mut all_paths = Vec::new();
    paths(&base, &mut Vec::new(), &mut all_paths);
    let mut tally = Tally {
        cases: 0,
        rejected: 0,
    };

    // A wrong type at every key of the overlay, signed and not.
    let mut wrong_type_cases = Vec::new();
    for path in &all_paths {
        for wrong in wrong_values() {
            let mut doc = base.clone();
            let slot = at_mut(&mut doc, path);
            // A key that takes a string or an integer, or a value of its own type, may
            // still be valid: those are run, not required to fail.
            let last = match path.last() {
                Some(Step::Key(k)) => k.as_str(),
                _ => "",
            };
            let flexible = ["register", "max_size", "min_free_disk"].contains(&last);
            let must = !flexible && json_kind(slot) != json_kind(&wrong);
            *slot = wrong.clone();
            wrong_type_cases.push((doc, must));
        }
    }
    for (doc, must) in &wrong_type_cases {
        let config = render(doc, &mut rng);
        run_push(
            push_text("3", &config, None).as_bytes(),
            &plain,
            None,
            *must,
            &mut tally,
        );
        let hmac = remote::sign(KEY, config.as_bytes());
        let push = push_text("3", &config, Some(&hmac));
        run_push(push.as_bytes(), &signed, Some(KEY), *must, &mut tally);
    }

    // The envelope's own members, with every wrong value.
    let config = base.to_string();
    for wrong in wrong_values() {
        let w = render(&wrong, &mut rng);
        // None of the values is an integer from 3 to the largest version taken.
        run_push(
            push_text(&w, &config, None).as_bytes(),
            &plain,
            None,
            true,
            &mut tally,
        );
        // An empty object is a valid overlay: the file alone.
        let must_config = wrong != json!({});
        run_push(
            push_text("3", &w, None).as_bytes(),
            &plain,
            None,
            must_config,
            &mut tally,
        );
        let push = format!(r#"{{"version": 3, "config": {config}, "hmac": {w}}}"#);
        run_push(push.as_bytes(), &signed, Some(KEY), true, &mut tally);
    }

    let valid_plain = push_text("3", &config, None);
    let valid_signed = push_text("3", &config, Some(&remote::sign(KEY, config.as_bytes())));
    while tally.cases < 12_000 {
        let key_side = rng.bool();
        let (f, key, valid) = if key_side {
            (&signed, Some(KEY), &valid_signed)
        } else {
            (&plain, None, &valid_plain)
        };
        match rng.u8(..5) {
            0 => run_push(&random_bytes(&mut rng), f, key, true, &mut tally),
            1 => {
                // Cut anywhere before the closing brace: never a whole document.
                let cut = rng.usize(..valid.len() - 1);
                run_push(&valid.as_bytes()[..cut], f, key, true, &mut tally);
            }
            2 => run_push(&mutate(valid, &mut rng), f, key, false, &mut tally),
            3 => {
                let (doc, must) = &wrong_type_cases[rng.usize(..wrong_type_cases.len())];
                let config = render(doc, &mut rng);
                let hmac = remote::sign(KEY, config.as_bytes());
                let push = push_text("3", &config, key.map(|_| hmac.as_str()));
                run_push(push.as_bytes(), f, key, *must, &mut tally);
            }
            _ => {
                let depth = rng.usize(1..5000);
                let deep = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
                let push = push_text("3", &format!(r#"{{"jobs": {deep}}}"#), None);
                run_push(push.as_bytes(), f, key, true, &mut tally);
            }
        }
    }
    assert!(
        tally.rejected * 10 > tally.cases * 8,
        "most cases must be refused: {} of {}",
        tally.rejected,
        tally.cases
    );
}

/// A request's members, each with every wrong value, and the ways a request is broken.
#[test]
fn malformed_commands_are_each_refused_in_one_short_line() {
    let mut rng = fastrand::Rng::with_seed(0x71de_0002);
    let config = file(false).config().clone();
    let bases = [
        json!({"id": "r1", "cmd": "run-job", "args": {"job": "sample"}}),
        json!({"id": "r1", "cmd": "pause-job", "args": {"job": "aerator"}}),
        json!({"id": "r1", "cmd": "resume-job", "args": {"job": "upload"}}),
        json!({"id": "r1", "cmd": "get-config", "args": {}}),
        json!({"id": "r1", "cmd": "upload-now", "args": {}}),
    ];
    let cases = std::cell::Cell::new(0_usize);
    let check = |payload: &[u8], must_refuse: bool| {
        cases.set(cases.get() + 1);
        match command::parse(payload, &config) {
            Ok(request) => {
                assert!(!must_refuse, "taken: {}", String::from_utf8_lossy(payload));
                let answer: Value = serde_json::from_str(&request.done()).expect("JSON");
                assert_eq!(answer["ok"], true);
            }
            Err(refused) => {
                assert!(!refused.error.is_empty());
                assert!(refused.error.len() <= MAX_ERROR_BYTES, "{}", refused.error);
                assert!(!refused.error.contains(['\n', '\r']), "{}", refused.error);
                let answer: Value = serde_json::from_str(&refused.response()).expect("JSON");
                assert_eq!(answer["ok"], false);
                assert!(matches!(
                    answer["id"],
                    Value::Null | Value::String(_) | Value::Number(_)
                ));
            }
        }
    };
    let mut wrong_cases = Vec::new();
    for base in &bases {
        assert!(
            command::parse(base.to_string().as_bytes(), &config).is_ok(),
            "{base}"
        );
        let mut all = Vec::new();
        paths(base, &mut Vec::new(), &mut all);
        for path in &all {
            for wrong in wrong_values() {
                let mut doc = base.clone();
                let slot = at_mut(&mut doc, path);
                // An empty args object for a command that takes none stays valid.
                let must = json_kind(slot) != json_kind(&wrong);
                *slot = wrong.clone();
                wrong_cases.push((doc, must));
            }
        }
        for extra in [
            json!({"id": "r1"}),
            json!({"cmd": "get-config"}),
            json!({"id": "r1", "cmd": "x"}),
        ] {
            wrong_cases.push((extra, true));
        }
    }
    for (doc, must) in &wrong_cases {
        check(render(doc, &mut rng).as_bytes(), *must);
    }
    let valid: Vec<String> = bases.iter().map(Value::to_string).collect();
    while cases.get() < 12_000 {
        let base = &valid[rng.usize(..valid.len())];
        match rng.u8(..5) {
            0 => check(&random_bytes(&mut rng), true),
            1 => check(&base.as_bytes()[..rng.usize(..base.len() - 1)], true),
            2 => check(&mutate(base, &mut rng), false),
            3 => {
                let (doc, must) = &wrong_cases[rng.usize(..wrong_cases.len())];
                check(render(doc, &mut rng).as_bytes(), *must);
            }
            _ => {
                let depth = rng.usize(1..5000);
                let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                check(
                    format!(r#"{{"id": "r1", "cmd": "get-config", "args": {deep}}}"#).as_bytes(),
                    true,
                );
            }
        }
    }
}
