//! Tests of the parent module.

use std::io::Read;
use std::sync::Arc;

use super::*;
use crate::reading::Quality;
use crate::store::readings::ClockQuality;

/// 2026-11-23T01:00:00.000Z
const TS: i64 = 1_795_395_600_000;

fn reading(seq: i64, value: Option<f64>, error: Option<&str>) -> BatchReading {
    BatchReading {
        seq,
        sensor: Arc::from("pond7.do"),
        ts_ms: TS,
        value,
        unit: Some(Arc::from("mg/L")),
        quality: if value.is_some() {
            Quality::Good
        } else {
            Quality::Bad
        },
        clock: ClockQuality::Synced,
        error: error.map(str::to_string),
    }
}

const ENVELOPE: Envelope<'static> = Envelope {
    gateway: "pond-07",
    site: Some("kagoshima-1"),
    epoch: "4f3c9a",
    batch: "pond-07:4f3c9a:1042-1043",
};

fn text(format: UploadFormat, envelope: &Envelope<'_>, readings: &[BatchReading]) -> String {
    String::from_utf8(body(format, false, envelope, readings).unwrap()).unwrap()
}

#[test]
fn json_is_the_contracts_shape_with_a_bad_reading_carrying_null_and_its_error() {
    let readings = [
        reading(1042, Some(7.83), None),
        reading(1043, None, Some("slave 3: no answer within 500ms")),
    ];
    assert_eq!(
        text(UploadFormat::Json, &ENVELOPE, &readings),
        concat!(
            r#"{"gateway":"pond-07","site":"kagoshima-1","epoch":"4f3c9a","batch":"pond-07:4f3c9a:1042-1043","#,
            r#""readings":[{"seq":1042,"sensor":"pond7.do","ts":"2026-11-23T01:00:00.000Z","value":7.83,"unit":"mg/L","quality":"good","clock":"synced"},"#,
            r#"{"seq":1043,"sensor":"pond7.do","ts":"2026-11-23T01:00:00.000Z","value":null,"unit":"mg/L","quality":"bad","clock":"synced","error":"slave 3: no answer within 500ms"}]}"#,
        )
    );
    // No site, no unit: nulls, not missing keys.
    let mut r = reading(1, Some(8.0), None);
    r.unit = None;
    r.clock = ClockQuality::Corrected;
    let bare = Envelope {
        site: None,
        ..ENVELOPE
    };
    let doc: serde_json::Value =
        serde_json::from_str(&text(UploadFormat::Json, &bare, &[r])).unwrap();
    assert_eq!(doc["site"], serde_json::Value::Null);
    assert_eq!(doc["readings"][0]["unit"], serde_json::Value::Null);
    assert_eq!(doc["readings"][0]["value"], 8.0);
    assert_eq!(doc["readings"][0]["clock"], "corrected");
}

#[test]
fn timestamps_are_rfc3339_utc_milliseconds_like_everywhere_else() {
    for ms in [
        TS,
        TS + 7,
        0,
        -1,
        86_399_999,
        253_402_300_799_999,
        951_782_400_123,
    ] {
        let mut buf = [0u8; 24];
        let expected = crate::time::format_utc(crate::time::from_millis(ms).unwrap());
        assert_eq!(
            rfc3339_millis(ms, &mut buf),
            Some(expected.as_str()),
            "{ms}"
        );
    }
    // Year 10000 does not fit the short form; the JSON still carries a time.
    let mut buf = [0u8; 24];
    assert_eq!(rfc3339_millis(253_402_300_800_000, &mut buf), None);
    let mut far = reading(1, Some(1.0), None);
    far.ts_ms = 253_402_300_800_000;
    let doc: serde_json::Value =
        serde_json::from_str(&text(UploadFormat::Json, &ENVELOPE, &[far])).unwrap();
    assert!(
        doc["readings"][0]["ts"]
            .as_str()
            .unwrap()
            .starts_with("+10000-01-01T00:00:00")
    );
}

#[test]
fn influx_lines_byte_for_byte() {
    let readings = [
        reading(1042, Some(7.83), None),
        reading(1043, None, Some("slave 3: no answer within 500ms")),
    ];
    assert_eq!(
        text(UploadFormat::Influx, &ENVELOPE, &readings),
        concat!(
            "tidegate,clock=synced,epoch=4f3c9a,gateway=pond-07,quality=good,sensor=pond7.do,site=kagoshima-1,unit=mg/L value=7.83,seq=1042i 1795395600000000000\n",
            "tidegate,clock=synced,epoch=4f3c9a,gateway=pond-07,quality=bad,sensor=pond7.do,site=kagoshima-1,unit=mg/L seq=1043i,error=\"slave 3: no answer within 500ms\" 1795395600000000000\n",
        )
    );
}

#[test]
fn influx_escapes_tags_and_strings_and_leaves_out_empty_tags() {
    let mut r = reading(7, Some(-0.5), Some("said \"no\" at C:\\modbus\nthen hung"));
    r.quality = Quality::Uncertain;
    r.unit = Some(Arc::from("deg C, x=1"));
    r.ts_ms = -1;
    let site = Envelope {
        site: Some("west pond,2=b\\"),
        ..ENVELOPE
    };
    assert_eq!(
        text(UploadFormat::Influx, &site, &[r.clone()]),
        "tidegate,clock=synced,epoch=4f3c9a,gateway=pond-07,quality=uncertain,sensor=pond7.do,site=west\\ pond\\,2\\=b,unit=deg\\ C\\,\\ x\\=1 value=-0.5,seq=7i,error=\"said \\\"no\\\" at C:\\\\modbus then hung\" -1000000\n"
    );
    r.unit = Some(Arc::from(""));
    let bare = Envelope {
        site: None,
        ..ENVELOPE
    };
    assert_eq!(
        text(UploadFormat::Influx, &bare, &[r]),
        "tidegate,clock=synced,epoch=4f3c9a,gateway=pond-07,quality=uncertain,sensor=pond7.do value=-0.5,seq=7i,error=\"said \\\"no\\\" at C:\\\\modbus then hung\" -1000000\n"
    );
    assert_eq!(tag_value("a\nb\r"), "a\\ b\\ ");
    assert_eq!(tag_value("ends\\"), "ends");
}

#[test]
fn gzip_wraps_exactly_the_plain_body() {
    let readings: Vec<BatchReading> = (1..=500).map(|s| reading(s, Some(7.0), None)).collect();
    for format in [UploadFormat::Json, UploadFormat::Influx] {
        let plain = body(format, false, &ENVELOPE, &readings).unwrap();
        let packed = body(format, true, &ENVELOPE, &readings).unwrap();
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain);
        assert!(
            packed.len() * 5 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
    }
    assert_eq!(content_type(UploadFormat::Json), "application/json");
    assert_eq!(
        content_type(UploadFormat::Influx),
        "text/plain; charset=utf-8"
    );
}
