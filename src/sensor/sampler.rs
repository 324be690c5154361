//! Every bus of a configuration, ready to be read: one task per Modbus bus, the
//! simulator for simulated ones, and a cycle over any set of sensors.
//!
//! Invariants: a Modbus bus has exactly one task for the life of its configuration;
//! a new configuration keeps the task of every bus whose settings did not change, so
//! a reload never reopens a port it does not have to. Different buses are read
//! concurrently; the readings come back in the order the sensors were asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::bus::{self, BusCounters, BusHandle};
use super::simulated;
use crate::clock::Clock;
use crate::config::{BusConfig, BusKind, Config, SensorConfig};
use crate::reading::Reading;

pub struct Sampler {
    buses: HashMap<String, (BusConfig, Option<BusHandle>)>,
    zone: chrono_tz::Tz,
    clock: Arc<dyn Clock>,
    rng: Mutex<fastrand::Rng>,
}

impl Sampler {
    /// The buses of `config`, keeping the tasks of `previous` whose bus is unchanged.
    /// Must be called inside the runtime: it starts the bus tasks.
    pub fn start(config: &Config, clock: Arc<dyn Clock>, previous: Option<&Sampler>) -> Sampler {
        let buses = config
            .buses
            .iter()
            .map(|cfg| {
                let kept = previous
                    .and_then(|p| p.buses.get(&cfg.name))
                    .filter(|(old, _)| old == cfg)
                    .and_then(|(_, handle)| handle.clone());
                let handle = match cfg.kind {
                    BusKind::Simulated => None,
                    _ => Some(kept.unwrap_or_else(|| bus::spawn(cfg.clone(), Arc::clone(&clock)))),
                };
                (cfg.name.clone(), (cfg.clone(), handle))
            })
            .collect();
        Sampler {
            buses,
            zone: config.agent.timezone,
            clock,
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

    /// One reading of each of `sensors`, in their order.
    pub async fn read(&self, sensors: &[SensorConfig]) -> Vec<Reading> {
        let mut by_bus: BTreeMap<&str, Vec<SensorConfig>> = BTreeMap::new();
        for sensor in sensors {
            by_bus
                .entry(sensor.bus.as_str())
                .or_default()
                .push(sensor.clone());
        }
        let mut found: HashMap<String, Reading> = HashMap::new();
        let mut cycles = JoinSet::new();
        for (name, group) in by_bus {
            match self.buses.get(name) {
                Some((_, Some(handle))) => {
                    let handle = handle.clone();
                    cycles.spawn(async move { handle.read(group).await });
                }
                Some((_, None)) => {
                    let refs: Vec<&SensorConfig> = group.iter().collect();
                    let now = self.clock.now().wall;
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    for r in simulated::read(&refs, now, self.zone, &mut rng) {
                        found.insert(r.sensor.clone(), r);
                    }
                }
                None => {}
            }
        }
        while let Some(joined) = cycles.join_next().await {
            for r in joined.ok().flatten().unwrap_or_default() {
                found.insert(r.sensor.clone(), r);
            }
        }
        let now = self.clock.now().wall;
        sensors
            .iter()
            .map(|s| {
                found.remove(&s.id).unwrap_or_else(|| {
                    Reading::bad(
                        &s.id,
                        now,
                        s.unit.as_deref(),
                        format!("bus {} is not running", s.bus),
                    )
                })
            })
            .collect()
    }

    /// Each Modbus bus's counters, by name.
    pub fn counters(&self) -> BTreeMap<String, BusCounters> {
        self.buses
            .iter()
            .filter_map(|(name, (_, handle))| Some((name.clone(), handle.as_ref()?.counters())))
            .collect()
    }
}
