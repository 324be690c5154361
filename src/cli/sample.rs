//! `tidegate sample [--sensor ID]`: read sensors once and print them, storing nothing.
//! For commissioning: is the probe wired, addressed and scaled right?

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{Failure, load_for_cli, other};
use crate::clock::{Clock, SystemClock};
use crate::config::SensorConfig;
use crate::reading::{Quality, Reading};
use crate::sensor::sampler::Sampler;
use crate::time::format_utc;

pub fn run(path: &Path, only: &[String]) -> Result<ExitCode, Failure> {
    let config = load_for_cli(path)?;
    for id in only {
        if !config.sensors.iter().any(|s| &s.id == id) {
            return Err(Failure::Usage(format!("no sensor named {id:?}")));
        }
    }
    // Asked for by name, a disabled sensor is read too; otherwise only enabled ones.
    let chosen: Vec<SensorConfig> = config
        .sensors
        .iter()
        .filter(|s| {
            if only.is_empty() {
                s.enabled
            } else {
                only.contains(&s.id)
            }
        })
        .cloned()
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(other)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(config.agent.clock));
    let readings = runtime.block_on(async {
        let sampler = Sampler::start(&config, clock, None);
        sampler.read(&chosen).await
    });
    print!("{}", table(&readings));
    let all_bad = !readings.is_empty() && readings.iter().all(|r| r.quality == Quality::Bad);
    Ok(if all_bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn table(readings: &[Reading]) -> String {
    let mut lines =
        vec![["SENSOR", "VALUE", "UNIT", "QUALITY", "ERROR", "READ AT"].map(String::from)];
    for r in readings {
        lines.push([
            r.sensor.clone(),
            r.value.map_or_else(|| "-".to_string(), |v| format!("{v}")),
            r.unit.clone().unwrap_or_else(|| "-".to_string()),
            r.quality.as_str().to_string(),
            r.error.clone().unwrap_or_else(|| "-".to_string()),
            format_utc(r.ts),
        ]);
    }
    super::columns(&lines)
}
