//! The signature of a push: HMAC-SHA256, lower-case hex, over the exact bytes of its
//! `config` member (SPEC section 5).
//!
//! Invariants: the comparison is constant-time (ring's `hmac::verify`); an empty key
//! verifies nothing, since anyone could sign with it. This module knows nothing of
//! versions or of what the overlay says.

use ring::hmac;
use serde_json::value::RawValue;

use super::envelope::{json_type, shorten};

/// The lower-case hex HMAC-SHA256 of `config_text` under `key`: what a push carries
/// in `hmac`.
pub fn sign(key: &[u8], config_text: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), config_text);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the `hmac` member against the config text; the message says what is wrong.
pub(super) fn verify(
    key: &[u8],
    config_text: &[u8],
    hmac_member: Option<&RawValue>,
) -> Result<(), String> {
    if key.is_empty() {
        return Err(
            "the key in mqtt.config_hmac_key_file is empty, so no push can be trusted: put a key in it"
                .to_owned(),
        );
    }
    let Some(raw) = hmac_member else {
        return Err("missing: this gateway takes only signed pushes (HMAC-SHA256 of the config member, lower-case hex)".to_owned());
    };
    let Ok(given) = serde_json::from_str::<String>(raw.get()) else {
        return Err(format!(
            "expected a string of 64 lower-case hex digits, got {}",
            json_type(raw.get())
        ));
    };
    let Some(tag) = decode_hex(&given) else {
        return Err(format!(
            "expected 64 lower-case hex digits, got {:?}",
            shorten(&given, 80)
        ));
    };
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), config_text, &tag).map_err(|_| {
        "does not match the config member: signed with another key, or the config text changed after signing".to_owned()
    })
}

/// 64 lower-case hex digits as 32 bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            Some(digit(*pair.first()?)? << 4 | digit(*pair.get(1)?)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn rfc_4231_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_same_as_openssl() {
        // printf '%s' '{"jobs":{}}' | openssl dgst -sha256 -hmac 's3cret'
        assert_eq!(
            sign(b"s3cret", br#"{"jobs":{}}"#),
            "571029e6da1fe5430b375984866bddae531a3525573a13f7c8f7c34ffa7e3270"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_signature() {
        let text = br#"{"jobs": {}}"#;
        let good = sign(b"k", text);
        assert_eq!(verify(b"k", text, Some(&raw(&format!("{good:?}")))), Ok(()));
        let check = |key: &[u8], member: Option<&str>, start: &str| {
            let member = member.map(raw);
            let err = verify(key, text, member.as_deref()).expect_err("refused");
            assert!(err.starts_with(start), "{err}");
        };
        check(b"other", Some(&format!("{good:?}")), "does not match");
        check(b"k", None, "missing");
        check(
            b"k",
            Some("42"),
            "expected a string of 64 lower-case hex digits, got a number",
        );
        check(
            b"k",
            Some(&format!("{:?}", good.to_uppercase())),
            "expected 64 lower-case hex",
        );
        check(
            b"k",
            Some(&format!("{:?}", &good[..63])),
            "expected 64 lower-case hex",
        );
        check(
            b"",
            Some(&format!("{:?}", sign(b"", text))),
            "the key in mqtt.config_hmac_key_file is empty",
        );
        // The signature is over the exact text: the same JSON spelled differently fails.
        check(
            b"k",
            Some(&format!("{:?}", sign(b"k", br#"{"jobs":{}}"#))),
            "does not match",
        );
    }

    #[test]
    fn hex_is_exact() {
        assert_eq!(decode_hex(&"0f".repeat(32)), Some(vec![15; 32]));
        assert_eq!(decode_hex(&"0g".repeat(32)), None);
        assert_eq!(decode_hex("é"), None);
    }
}
