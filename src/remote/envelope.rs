//! The outside of a `config/set` push: its size, its JSON, its members, its version and
//! the exact text of its `config` member.
//!
//! Invariants: nothing here trusts the bytes. The size is checked before anything is
//! parsed; serde_json's recursion limit bounds nesting; a member given twice is refused
//! (with a map, the last would silently win); a version is reported only when it is an
//! integer ≥ 1, so an answer never echoes something the sender did not mean as one.
//! This module does not look inside `config` beyond seeing that it is an object, and it
//! checks no signature (that is `sign`).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{MAX_PUSH_BYTES, MAX_VERSION};

/// The members a push may hold.
const MEMBERS: [&str; 3] = ["version", "config", "hmac"];

/// A push whose outside is sound.
pub(super) struct Envelope<'a> {
    pub version: u64,
    /// The `config` member exactly as it appears in the message (an object).
    pub config: &'a RawValue,
    pub hmac: Option<&'a RawValue>,
}

/// Why a push was refused before its content was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed {
    /// The pushed version when the message is an object whose `version` is an integer ≥ 1.
    pub version: Option<u64>,
    pub path: &'static str,
    pub message: String,
}

/// Reads the outside of a push.
pub(super) fn open(push: &[u8]) -> Result<Envelope<'_>, Malformed> {
    if push.len() > MAX_PUSH_BYTES {
        return Err(Malformed {
            version: None,
            path: "push",
            message: format!(
                "{} bytes is over the {} KiB limit for a config push",
                push.len(),
                MAX_PUSH_BYTES / 1024
            ),
        });
    }
    let members = match serde_json::from_slice::<Members<'_>>(push) {
        Ok(m) => m.0,
        Err(e) => {
            let message = match e.classify() {
                serde_json::error::Category::Data => {
                    format!("expected a JSON object: {e}")
                }
                _ => format!("not valid JSON: {e}"),
            };
            return Err(Malformed {
                version: None,
                path: "push",
                message,
            });
        }
    };

    let versions: Vec<&RawValue> = find(&members, "version").collect();
    let version = match versions.as_slice() {
        [] => {
            return Err(Malformed {
                version: None,
                path: "version",
                message: "missing: a push needs an integer version of 1 or more".to_owned(),
            });
        }
        [one] => read_version(one),
        [_, ..] => {
            return Err(Malformed {
                version: None,
                path: "version",
                message: "given more than once".to_owned(),
            });
        }
    };
    let version = version?;
    let refuse = |path: &'static str, message: String| Malformed {
        version: Some(version),
        path,
        message,
    };
    if let Some((name, _)) = members
        .iter()
        .find(|(name, _)| !MEMBERS.contains(&name.as_str()))
    {
        return Err(refuse(
            "push",
            format!(
                "unknown member {:?}: a push holds \"version\", \"config\" and \"hmac\"",
                shorten(name, 64)
            ),
        ));
    }
    if version > MAX_VERSION {
        return Err(refuse(
            "version",
            format!("{version} is past the largest version accepted, {MAX_VERSION}"),
        ));
    }
    let config = match find(&members, "config").collect::<Vec<_>>().as_slice() {
        [] => {
            return Err(refuse(
                "config",
                "missing: a push carries the overlay in \"config\"".to_owned(),
            ));
        }
        [one] => *one,
        [_, ..] => return Err(refuse("config", "given more than once".to_owned())),
    };
    if !config.get().starts_with('{') {
        return Err(refuse(
            "config",
            format!("expected an object, got {}", json_type(config.get())),
        ));
    }
    let hmac = match find(&members, "hmac").collect::<Vec<_>>().as_slice() {
        [] => None,
        [one] => Some(*one),
        [_, ..] => return Err(refuse("hmac", "given more than once".to_owned())),
    };
    Ok(Envelope {
        version,
        config,
        hmac,
    })
}

fn find<'m, 'a>(
    members: &'m [(String, &'a RawValue)],
    name: &'m str,
) -> impl Iterator<Item = &'a RawValue> + 'm {
    members
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| *v)
}

fn read_version(raw: &RawValue) -> Result<u64, Malformed> {
    let text = raw.get();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 => Ok(v),
            _ => Err(Malformed {
                version: None,
                path: "version",
                message: format!("must be an integer of 1 or more, got {}", shorten(text, 40)),
            }),
        },
        _ => Err(Malformed {
            version: None,
            path: "version",
            message: format!("must be an integer of 1 or more, got {}", json_type(text)),
        }),
    }
}

/// How a message names the JSON type of a raw value, from its first character.
pub(super) fn json_type(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// At most `max` characters of `text`, marked when cut.
pub(super) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A JSON object's members in order, duplicates kept, each value's exact text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
            out.push((name, value));
        }
        Ok(Members(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(push: &str) -> Malformed {
        match open(push.as_bytes()) {
            Ok(_) => panic!("accepted: {push}"),
            Err(m) => m,
        }
    }

    #[test]
    fn a_sound_push_keeps_the_exact_config_text() {
        let push =
            r#"{"version": 7, "config": {"jobs" : {"sample": {"every": "1m"}}}, "hmac": "ab"}"#;
        let env = open(push.as_bytes()).expect("sound");
        assert_eq!(env.version, 7);
        assert_eq!(
            env.config.get(),
            r#"{"jobs" : {"sample": {"every": "1m"}}}"#
        );
        assert_eq!(env.hmac.map(RawValue::get), Some(r#""ab""#));
    }

    #[test]
    fn versions_that_are_not_integers_of_one_or_more_are_not_reported() {
        for (version, message) in [
            ("0", "must be an integer of 1 or more, got 0"),
            ("-3", "must be an integer of 1 or more, got -3"),
            ("1.5", "must be an integer of 1 or more, got 1.5"),
            ("7.0", "must be an integer of 1 or more, got 7.0"),
            ("1e3", "must be an integer of 1 or more, got 1e3"),
            ("\"7\"", "must be an integer of 1 or more, got a string"),
            ("null", "must be an integer of 1 or more, got null"),
            ("[7]", "must be an integer of 1 or more, got an array"),
            (
                "123456789012345678901234567890",
                "must be an integer of 1 or more, got 123456789012345678901234567890",
            ),
        ] {
            let m = refused(&format!(r#"{{"version": {version}, "config": {{}}}}"#));
            assert_eq!(
                m,
                Malformed {
                    version: None,
                    path: "version",
                    message: message.to_owned()
                },
                "{version}"
            );
        }
    }

    #[test]
    fn a_version_past_the_limit_is_reported_and_refused() {
        let m = refused(r#"{"version": 18446744073709551615, "config": {}}"#);
        assert_eq!(m.version, Some(u64::MAX));
        assert_eq!(m.path, "version");
    }

    #[test]
    fn the_outside_is_checked() {
        let check = |push: &str, version: Option<u64>, path: &str, start: &str| {
            let m = refused(push);
            assert_eq!((m.version, m.path), (version, path), "{push}: {m:?}");
            assert!(m.message.starts_with(start), "{push}: {}", m.message);
        };
        check("", None, "push", "not valid JSON");
        check("{\"version\": 1", None, "push", "not valid JSON");
        check("[1, 2]", None, "push", "expected a JSON object");
        check("42", None, "push", "expected a JSON object");
        check(r#"{"config": {}}"#, None, "version", "missing");
        check(
            r#"{"version": 1, "version": 2, "config": {}}"#,
            None,
            "version",
            "given more than once",
        );
        check(r#"{"version": 3}"#, Some(3), "config", "missing");
        check(
            r#"{"version": 3, "config": [1]}"#,
            Some(3),
            "config",
            "expected an object, got an array",
        );
        check(
            r#"{"version": 3, "config": {}, "config": {}}"#,
            Some(3),
            "config",
            "given more than once",
        );
        check(
            r#"{"version": 3, "config": {}, "sig": "x"}"#,
            Some(3),
            "push",
            "unknown member \"sig\"",
        );
    }

    #[test]
    fn an_oversized_push_is_refused_before_parsing() {
        let mut push = br#"{"version": 9, "config": {"x": ""#.to_vec();
        push.resize(MAX_PUSH_BYTES + 1, b'a');
        let m = open(&push).err().expect("too big");
        assert_eq!(m.version, None);
        assert_eq!(
            m.message,
            "262145 bytes is over the 256 KiB limit for a config push"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 100_000;
        let push = format!(
            r#"{{"version": 1, "config": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        refused(&push);
    }
}
