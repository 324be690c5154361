//! Durations, intervals and sizes as people write them in config (SPEC section 8).
//!
//! Durations are humantime-style text (`"500ms"`, `"1h30m"`, `"7d"`, `"1w"`); a job's
//! `every` also takes whole calendar months (`"3mo"`); sizes are `"512MiB"`, `"64MB"` or
//! a plain byte count. Invariants: nothing negative or empty is accepted, messages are
//! one lowercase line quoting what was written, and the `format_*` functions write text
//! that the matching `parse_*` reads back to the same value.

use std::time::Duration;

use super::Every;

/// Reads a humantime-style duration: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"7d"`, `"1w"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}");
    let trimmed = text.trim();
    // humantime would read "1M" as a month of 30.44 days; months are calendar months
    // here, and only `every` takes them (as `mo`).
    let calendar_unit = trimmed
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|unit| matches!(unit, "M" | "month" | "months" | "y" | "year" | "years"));
    if trimmed.is_empty() || trimmed.starts_with('-') || calendar_unit {
        return Err(invalid());
    }
    humantime::parse_duration(trimmed).map_err(|_| invalid())
}

/// Reads a job's `every`: a duration greater than zero, or `N` calendar months as `"Nmo"`.
pub fn parse_every(text: &str) -> Result<Every, String> {
    let trimmed = text.trim();
    if let Some(n) = trimmed.strip_suffix("mo")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return match n.parse::<u32>() {
            Ok(0) => Err(format!("interval {text:?} must be greater than zero")),
            Ok(months) => Ok(Every::Months(months)),
            Err(_) => Err(format!("invalid interval {text:?}")),
        };
    }
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("interval {text:?} must be greater than zero"));
    }
    Ok(Every::Fixed(d))
}

/// Reads a size: plain bytes, or a number with `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000)
/// or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?}");
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(invalid());
    }
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(invalid()),
    };
    number.checked_mul(factor).ok_or_else(invalid)
}

/// Writes a duration compactly (`"1h30m"`, `"500ms"`, `"0s"`) so `parse_duration` reads
/// it back exactly.
pub fn format_duration(d: Duration) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, len) in UNITS {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (value, unit) in [(ms, "ms"), (us, "us"), (ns, "ns")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

/// Writes an interval as `parse_every` reads it.
pub fn format_every(every: Every) -> String {
    match every {
        Every::Fixed(d) => format_duration(d),
        Every::Months(n) => format!("{n}mo"),
    }
}

/// Writes a size in the largest binary unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(
        parse: fn(&str) -> Result<T, String>,
        cases: &[(&str, Result<T, &str>)],
    ) {
        for (input, expected) in cases {
            let got = parse(input);
            let expected = expected.as_ref().map_err(|e| (*e).to_owned());
            assert_eq!(got.as_ref(), expected.as_ref().copied(), "input {input:?}");
        }
    }

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn durations() {
        check(
            parse_duration,
            &[
                ("500ms", Ok(Duration::from_millis(500))),
                ("30s", Ok(secs(30))),
                ("5m", Ok(secs(300))),
                ("1h30m", Ok(secs(5400))),
                ("1h 30m", Ok(secs(5400))),
                ("7d", Ok(secs(7 * 86_400))),
                ("1w", Ok(secs(7 * 86_400))),
                ("0s", Ok(secs(0))),
                ("5 parsecs", Err(r#"invalid duration "5 parsecs""#)),
                ("", Err(r#"invalid duration """#)),
                ("-5s", Err(r#"invalid duration "-5s""#)),
                ("5", Err(r#"invalid duration "5""#)),
                ("1M", Err(r#"invalid duration "1M""#)),
                ("1y", Err(r#"invalid duration "1y""#)),
                ("2days", Ok(secs(2 * 86_400))),
            ],
        );
    }

    #[test]
    fn intervals() {
        check(
            parse_every,
            &[
                ("30s", Ok(Every::Fixed(secs(30)))),
                ("1mo", Ok(Every::Months(1))),
                ("12mo", Ok(Every::Months(12))),
                ("0mo", Err(r#"interval "0mo" must be greater than zero"#)),
                ("0s", Err(r#"interval "0s" must be greater than zero"#)),
                ("mo", Err(r#"invalid duration "mo""#)),
                ("soon", Err(r#"invalid duration "soon""#)),
            ],
        );
    }

    #[test]
    fn sizes() {
        check(
            parse_size,
            &[
                ("512MiB", Ok(512 << 20)),
                ("64MB", Ok(64_000_000)),
                ("10KiB", Ok(10_240)),
                ("1GiB", Ok(1 << 30)),
                ("10KB", Ok(10_000)),
                ("4096", Ok(4096)),
                ("1 GiB", Ok(1 << 30)),
                ("12 apples", Err(r#"invalid size "12 apples""#)),
                ("MiB", Err(r#"invalid size "MiB""#)),
                ("-1", Err(r#"invalid size "-1""#)),
                ("99999999999TiB", Err(r#"invalid size "99999999999TiB""#)),
            ],
        );
    }

    #[test]
    fn formats_read_back() {
        for d in [
            secs(0),
            secs(5400),
            Duration::from_millis(1500),
            secs(7 * 86_400 + 1),
            Duration::from_nanos(1_001),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(secs(5400)), "1h30m");
        for n in [0, 1, 1023, 1024, 512 << 20, 64_000_000] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{n}");
        }
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_every(Every::Months(3)), "3mo");
    }
}
