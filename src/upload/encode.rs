//! A batch as a request body: the JSON of SPEC section 4, or InfluxDB line protocol,
//! gzip-compressed when asked. Pure: readings in, bytes out.
//!
//! JSON: `{"gateway","site","epoch","batch","readings":[{"seq","sensor","ts","value",
//! "unit","quality","clock"}]}` with `ts` in RFC 3339 UTC milliseconds; a reading
//! with an error (a bad one) carries `"error"`, and a reading without a value
//! `"value": null`.
//!
//! Line protocol (InfluxDB v2 `/api/v2/write`, VictoriaMetrics), one line a reading:
//! `tidegate,clock=synced,epoch=4f3c…,gateway=pond-07,quality=good,sensor=pond7.do,site=kagoshima-1,unit=mg/L value=7.83,seq=1042i 1795395600000000000`.
//! Tags in key order (what InfluxDB sorts to anyway); `site` and `unit` are left out
//! when empty (line protocol has no empty tag); a reading without a value has no
//! `value` field, one with an error an `error` string field; the timestamp is in
//! nanoseconds (the default precision). Escaping: commas, spaces and equals signs in
//! tag values take a backslash; quotes and backslashes in strings take a backslash;
//! line breaks (which line protocol cannot carry) become spaces, and a backslash
//! ending a tag value (which would escape the separator after it) is dropped.
//!
//! Invariant: the body is written in one pass straight into the (compressing)
//! buffer; nothing per reading is allocated on the way.

use std::borrow::Cow;
use std::io::{self, Write};

use chrono::{DateTime, Datelike, Timelike};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use crate::config::UploadFormat;
use crate::store::upload::BatchReading;

/// What a body says about where its readings come from.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub gateway: &'a str,
    pub site: Option<&'a str>,
    pub epoch: &'a str,
    /// The batch's Idempotency-Key.
    pub batch: &'a str,
}

/// The `Content-Type` of a format.
pub fn content_type(format: UploadFormat) -> &'static str {
    match format {
        UploadFormat::Json => "application/json",
        UploadFormat::Influx => "text/plain; charset=utf-8",
    }
}

/// Fast compression: readings compress about tenfold even so, and at level 1 the
/// gateway's CPU is not what limits a drain.
const GZIP_LEVEL: u32 = 1;

/// The body of a batch in `format`, gzip-compressed when `gzip`.
pub fn body(
    format: UploadFormat,
    gzip: bool,
    envelope: &Envelope<'_>,
    readings: &[BatchReading],
) -> io::Result<Vec<u8>> {
    // About 150 bytes a reading in JSON, a tenth of that compressed.
    let estimate = readings.len().saturating_mul(if gzip { 16 } else { 160 });
    if gzip {
        let encoder = GzEncoder::new(Vec::with_capacity(estimate), Compression::new(GZIP_LEVEL));
        // Serializers write in small pieces; the encoder prefers large ones.
        let mut out = io::BufWriter::with_capacity(32 * 1024, encoder);
        write(format, &mut out, envelope, readings)?;
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .finish()
    } else {
        let mut out = Vec::with_capacity(estimate);
        write(format, &mut out, envelope, readings)?;
        Ok(out)
    }
}

fn write<W: Write>(
    format: UploadFormat,
    out: &mut W,
    envelope: &Envelope<'_>,
    readings: &[BatchReading],
) -> io::Result<()> {
    match format {
        UploadFormat::Json => json(out, envelope, readings),
        UploadFormat::Influx => influx(out, envelope, readings),
    }
}

/// The JSON body.
pub fn json<W: Write>(
    out: &mut W,
    envelope: &Envelope<'_>,
    readings: &[BatchReading],
) -> io::Result<()> {
    let doc = Document { envelope, readings };
    serde_json::to_writer(out, &doc).map_err(io::Error::from)
}

struct Document<'a> {
    envelope: &'a Envelope<'a>,
    readings: &'a [BatchReading],
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.envelope;
        let mut doc = s.serialize_struct("Batch", 5)?;
        doc.serialize_field("gateway", e.gateway)?;
        doc.serialize_field("site", &e.site)?;
        doc.serialize_field("epoch", e.epoch)?;
        doc.serialize_field("batch", e.batch)?;
        doc.serialize_field("readings", &Readings(self.readings))?;
        doc.end()
    }
}

struct Readings<'a>(&'a [BatchReading]);

impl Serialize for Readings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&Wire(r))?;
        }
        seq.end()
    }
}

/// One reading in its JSON shape.
struct Wire<'a>(&'a BatchReading);

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_struct("Reading", 7 + usize::from(r.error.is_some()))?;
        m.serialize_field("seq", &r.seq)?;
        m.serialize_field("sensor", &*r.sensor)?;
        let mut buf = [0u8; 24];
        match rfc3339_millis(r.ts_ms, &mut buf) {
            Some(ts) => m.serialize_field("ts", ts)?,
            // Outside years 0-9999: chrono's own (longer) form.
            None => m.serialize_field(
                "ts",
                &crate::time::from_millis(r.ts_ms).map(crate::time::format_utc),
            )?,
        }
        m.serialize_field("value", &r.value)?;
        m.serialize_field("unit", &r.unit.as_deref())?;
        m.serialize_field("quality", r.quality.as_str())?;
        m.serialize_field("clock", r.clock.as_str())?;
        if let Some(error) = &r.error {
            m.serialize_field("error", error)?;
        }
        m.end()
    }
}

/// `2026-11-23T01:00:00.000Z` written into `buf`, for years 0 to 9999.
fn rfc3339_millis(ms: i64, buf: &mut [u8; 24]) -> Option<&str> {
    let t = DateTime::from_timestamp_millis(ms)?;
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut put = |at: usize, n: u32, digits: usize| {
        let mut n = n;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
            n /= 10;
        }
    };
    put(0, year, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    put(20, t.timestamp_subsec_millis(), 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = c;
    }
    std::str::from_utf8(buf).ok()
}

/// The line-protocol body.
pub fn influx<W: Write>(
    out: &mut W,
    envelope: &Envelope<'_>,
    readings: &[BatchReading],
) -> io::Result<()> {
    // The tags every line shares, escaped once.
    let epoch = tag_value(envelope.epoch);
    let gateway = tag_value(envelope.gateway);
    let site = envelope.site.map(tag_value).filter(|s| !s.is_empty());
    for r in readings {
        out.write_all(b"tidegate,clock=")?;
        out.write_all(r.clock.as_str().as_bytes())?;
        write_tag(out, "epoch", &epoch)?;
        write_tag(out, "gateway", &gateway)?;
        out.write_all(b",quality=")?;
        out.write_all(r.quality.as_str().as_bytes())?;
        write_tag(out, "sensor", &tag_value(&r.sensor))?;
        if let Some(site) = &site {
            write_tag(out, "site", site)?;
        }
        if let Some(unit) = r.unit.as_deref().map(tag_value).filter(|u| !u.is_empty()) {
            write_tag(out, "unit", &unit)?;
        }
        out.write_all(b" ")?;
        if let Some(value) = r.value {
            write!(out, "value={value},")?;
        }
        write!(out, "seq={}i", r.seq)?;
        if let Some(error) = &r.error {
            out.write_all(b",error=\"")?;
            write_string_field(out, error)?;
            out.write_all(b"\"")?;
        }
        writeln!(out, " {}", i128::from(r.ts_ms) * 1_000_000)?;
    }
    Ok(())
}

fn write_tag<W: Write>(out: &mut W, key: &str, value: &str) -> io::Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    out.write_all(b",")?;
    out.write_all(key.as_bytes())?;
    out.write_all(b"=")?;
    out.write_all(value.as_bytes())
}

/// A tag value escaped for line protocol (borrowed when nothing needs escaping, as
/// for every validated sensor id).
fn tag_value(value: &str) -> Cow<'_, str> {
    let value = value.trim_end_matches('\\');
    if !value.contains([',', ' ', '=', '\n', '\r']) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            ',' | ' ' | '=' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\n' | '\r' => escaped.push_str("\\ "),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn write_string_field<W: Write>(out: &mut W, value: &str) -> io::Result<()> {
    let mut rest = value;
    while let Some(at) = rest.find(['"', '\\', '\n', '\r']) {
        out.write_all(&rest.as_bytes()[..at])?;
        let c = rest.as_bytes()[at];
        match c {
            b'"' => out.write_all(b"\\\"")?,
            b'\\' => out.write_all(b"\\\\")?,
            _ => out.write_all(b" ")?,
        }
        rest = &rest[at + 1..];
    }
    out.write_all(rest.as_bytes())
}

#[cfg(test)]
mod tests;
