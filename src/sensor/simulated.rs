//! Simulated sensors: plausible diurnal water-quality values with no hardware, so
//! `config/demo.toml` produces realistic data on any laptop.
//!
//! A pond's dissolved oxygen, temperature and pH follow the sun: photosynthesis lifts
//! them through the day and respiration pulls them down through the night. The model
//! is a cosine over `period` whose low point is at 06:00 local time and whose high
//! point is twelve hours later (for a 24 h period), plus noise of standard deviation
//! `noise`. Pure: the time, the zone offset and the random source are passed in.

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{SensorConfig, SensorSource, SimModel};
use crate::reading::Reading;

/// The low point of the cycle, in seconds after local midnight: around dawn.
const LOW_AT_SECS: f64 = 6.0 * 3600.0;

/// The model's value at `t`, for a zone `utc_offset_secs` ahead of UTC.
pub fn value(
    model: &SimModel,
    t: DateTime<Utc>,
    utc_offset_secs: i32,
    rng: &mut fastrand::Rng,
) -> f64 {
    let period = model.period.as_secs_f64().max(1.0);
    let local = (t.timestamp_millis() as f64) / 1000.0 + f64::from(utc_offset_secs);
    let phase = (local - LOW_AT_SECS).rem_euclid(period) / period;
    let cycle = -(std::f64::consts::TAU * phase).cos();
    model.base + model.amplitude * cycle + model.noise * gaussian(rng)
}

/// One reading of every simulated sensor among `sensors`, all stamped `now`.
/// Sensors of other sources are not this module's and are left out.
pub fn read(
    sensors: &[&SensorConfig],
    now: DateTime<Utc>,
    zone: Tz,
    rng: &mut fastrand::Rng,
) -> Vec<Reading> {
    let offset = zone
        .offset_from_utc_datetime(&now.naive_utc())
        .fix()
        .local_minus_utc();
    sensors
        .iter()
        .filter_map(|sensor| match &sensor.source {
            SensorSource::Simulated(model) => {
                let v = value(model, now, offset, rng);
                Some(Reading::good(&sensor.id, now, v, sensor.unit.as_deref()))
            }
            SensorSource::Modbus(_) => None,
        })
        .collect()
}

/// A standard normal draw (Irwin-Hall: twelve uniforms, minus six), bounded to ±6.
fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    (0..12).map(|_| rng.f64()).sum::<f64>() - 6.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn model(noise: f64) -> SimModel {
        SimModel {
            base: 7.5,
            amplitude: 1.5,
            period: Duration::from_secs(86_400),
            noise,
        }
    }

    #[test]
    fn oxygen_is_lowest_at_dawn_and_highest_in_the_evening_local_time() {
        let mut rng = fastrand::Rng::with_seed(1);
        let tokyo = 9 * 3600;
        // 06:00 and 18:00 in Tokyo are 21:00 and 09:00 UTC.
        let dawn = Utc.with_ymd_and_hms(2026, 11, 22, 21, 0, 0).unwrap();
        let dusk = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let noon = Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 0).unwrap();
        assert!((value(&model(0.0), dawn, tokyo, &mut rng) - 6.0).abs() < 1e-9);
        assert!((value(&model(0.0), dusk, tokyo, &mut rng) - 9.0).abs() < 1e-9);
        assert!((value(&model(0.0), noon, tokyo, &mut rng) - 7.5).abs() < 1e-9);
    }

    #[test]
    fn reads_every_simulated_sensor_in_the_demo_config_as_good() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
        let (config, _) = crate::config::load(std::path::Path::new(path)).unwrap();
        let sensors: Vec<&SensorConfig> = config.sensors.iter().collect();
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
        let readings = read(
            &sensors,
            now,
            config.agent.timezone,
            &mut fastrand::Rng::with_seed(3),
        );
        assert_eq!(readings.len(), config.sensors.len());
        for (r, s) in readings.iter().zip(&config.sensors) {
            assert_eq!(r.sensor, s.id);
            assert_eq!(r.unit, s.unit);
            assert_eq!(r.quality, crate::reading::Quality::Good);
            let SensorSource::Simulated(m) = &s.source else {
                panic!("demo sensors are simulated")
            };
            let v = r.value.unwrap();
            assert!(
                (v - m.base).abs() <= m.amplitude + 6.0 * m.noise,
                "{} = {v}",
                s.id
            );
        }
    }

    #[test]
    fn noise_has_the_configured_spread_around_the_curve() {
        let mut rng = fastrand::Rng::with_seed(7);
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap();
        let samples: Vec<f64> = (0..20_000)
            .map(|_| value(&model(0.05), t, 0, &mut rng) - 6.0)
            .collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let sd =
            (samples.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
        assert!(mean.abs() < 0.002, "mean {mean}");
        assert!((sd - 0.05).abs() < 0.002, "sd {sd}");
        assert!(
            samples.iter().all(|d| d.abs() <= 0.3),
            "bounded at six sigma"
        );
    }
}
