//! The vocabulary of measurements: a [`Reading`] of one sensor at one instant, and its
//! [`Quality`].
//!
//! Invariants: a `good` reading has a finite value and no error; a `bad` one has no
//! value and says why. No IO here: where a reading goes is the store's business.

use chrono::{DateTime, Utc};

/// How far a reading can be trusted (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    /// The read failed: no value, an error.
    Bad,
    /// A value, but the device or the agent doubts it.
    Uncertain,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::Uncertain => "uncertain",
        }
    }
}

/// One sensor's value at one instant, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: String,
    pub ts: DateTime<Utc>,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub quality: Quality,
    pub error: Option<String>,
}

impl Reading {
    /// A good reading; a value that is not finite becomes a bad one.
    pub fn good(sensor: &str, ts: DateTime<Utc>, value: f64, unit: Option<&str>) -> Reading {
        if !value.is_finite() {
            return Reading::bad(sensor, ts, unit, format!("not a finite number: {value}"));
        }
        Reading {
            sensor: sensor.to_string(),
            ts,
            value: Some(value),
            unit: unit.map(str::to_string),
            quality: Quality::Good,
            error: None,
        }
    }

    /// A failed read: no value, and the reason.
    pub fn bad(
        sensor: &str,
        ts: DateTime<Utc>,
        unit: Option<&str>,
        error: impl Into<String>,
    ) -> Reading {
        Reading {
            sensor: sensor.to_string(),
            ts,
            value: None,
            unit: unit.map(str::to_string),
            quality: Quality::Bad,
            error: Some(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_is_not_finite_is_a_bad_reading() {
        let ts = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let ok = Reading::good("pond7.do", ts, 7.83, Some("mg/L"));
        assert_eq!(
            (ok.quality, ok.value, ok.error),
            (Quality::Good, Some(7.83), None)
        );
        let nan = Reading::good("pond7.do", ts, f64::NAN, Some("mg/L"));
        assert_eq!(nan.quality, Quality::Bad);
        assert_eq!(nan.value, None);
        assert_eq!(nan.error.as_deref(), Some("not a finite number: NaN"));
        assert_eq!(Quality::Uncertain.as_str(), "uncertain");
    }
}
