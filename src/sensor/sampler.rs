//! Every bus of a configuration, ready to be read: one task per Modbus bus, the
//! simulator for simulated ones, and a cycle over any set of sensors.
//!
//! Invariants: a Modbus bus has exactly one task for the life of its configuration;
//! a new configuration keeps the task of every bus whose settings did not change, so
//! a reload never reopens a port it does not have to. Different buses are read
//! concurrently; the readings come back in the order the sensors were asked for.
//! The sampler remembers each sensor's last quality and counts the reads of simulated
//! buses, for the heartbeat; both survive a reload for the sensors and buses kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::bus::{self, BusCounters, BusHandle};
use super::simulated;
use crate::clock::Clock;
use crate::config::{BusConfig, BusKind, Config, SensorConfig};
use crate::reading::{Quality, Reading};

/// A bus as the sampler holds it: the task of a Modbus bus, or the counters of a
/// simulated one (whose "requests" are the cycles the simulator answered).
#[derive(Clone)]
enum Line {
    Modbus(BusHandle),
    Simulated(Arc<Mutex<BusCounters>>),
}

pub struct Sampler {
    buses: HashMap<String, (BusConfig, Line)>,
    zone: chrono_tz::Tz,
    clock: Arc<dyn Clock>,
    rng: Mutex<fastrand::Rng>,
    /// Each sensor's last read, by id; shared with the previous sampler so a run
    /// still going on it during a reload is remembered too.
    last: Arc<Mutex<HashMap<String, LastRead>>>,
    /// Each bus's state after its last read: down when none of its sensors read
    /// good. Shared across reloads like `last`.
    down: Arc<Mutex<HashMap<String, bool>>>,
}

/// What the sampler remembers of a sensor's reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastRead {
    /// The last read's quality.
    pub quality: Quality,
    /// The value of the last good read, however long ago.
    pub good_value: Option<f64>,
}

/// What changed with one read, for events.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Sensors that went bad or stopped being bad, with their new quality.
    pub sensors: Vec<(String, Quality)>,
    /// Buses that went down (`true`: no sensor on it read good) or came back.
    pub buses: Vec<(String, bool)>,
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
                    .map(|(_, line)| line.clone());
                let line = kept.unwrap_or_else(|| match cfg.kind {
                    BusKind::Simulated => Line::Simulated(Arc::default()),
                    _ => Line::Modbus(bus::spawn(cfg.clone(), Arc::clone(&clock))),
                });
                (cfg.name.clone(), (cfg.clone(), line))
            })
            .collect();
        let last = previous.map_or_else(Arc::default, |p| Arc::clone(&p.last));
        let down = previous.map_or_else(Arc::default, |p| Arc::clone(&p.down));
        down.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| config.buses.iter().any(|b| &b.name == name));
        last.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| config.sensors.iter().any(|s| &s.id == id));
        Sampler {
            buses,
            zone: config.agent.timezone,
            clock,
            rng: Mutex::new(fastrand::Rng::new()),
            last,
            down,
        }
    }

    /// One reading of each of `sensors`, in their order.
    pub async fn read(&self, sensors: &[SensorConfig]) -> Vec<Reading> {
        self.read_noting_changes(sensors).await.0
    }

    /// [`read`](Self::read), and what changed with it: sensors that went bad or
    /// stopped being bad, buses that went down or came back. A first read that is
    /// bad counts (a sensor or bus bad from the start must be heard about too); a
    /// first good one does not.
    pub async fn read_noting_changes(&self, sensors: &[SensorConfig]) -> (Vec<Reading>, Changes) {
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
                Some((_, Line::Modbus(handle))) => {
                    let handle = handle.clone();
                    cycles.spawn(async move { handle.read(group).await });
                }
                Some((_, Line::Simulated(counters))) => {
                    let refs: Vec<&SensorConfig> = group.iter().collect();
                    let now = self.clock.now().wall;
                    let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                    let readings = simulated::read(&refs, now, self.zone, &mut rng);
                    let mut c = counters.lock().unwrap_or_else(|e| e.into_inner());
                    c.requests += 1;
                    if readings.iter().any(|r| r.quality == Quality::Good) {
                        c.last_good_read = Some(now);
                    }
                    for r in readings {
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
        let readings: Vec<Reading> = sensors
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
            .collect();
        let mut changes = Changes::default();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for r in &readings {
            let kept = last.get(&r.sensor).and_then(|l| l.good_value);
            let read = LastRead {
                quality: r.quality,
                good_value: good_value(r).or(kept),
            };
            let before = last.insert(r.sensor.clone(), read).map(|l| l.quality);
            let (bad_now, bad_before) = (r.quality == Quality::Bad, before == Some(Quality::Bad));
            if bad_now != bad_before && (before.is_some() || bad_now) {
                changes.sensors.push((r.sensor.clone(), r.quality));
            }
        }
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let mut buses: Vec<&str> = sensors.iter().map(|s| s.bus.as_str()).collect();
        buses.sort_unstable();
        buses.dedup();
        for bus in buses {
            let is_down = !sensors
                .iter()
                .zip(&readings)
                .any(|(s, r)| s.bus == bus && r.quality != Quality::Bad);
            let before = down.insert(bus.to_string(), is_down);
            if before != Some(is_down) && (before.is_some() || is_down) {
                changes.buses.push((bus.to_string(), is_down));
            }
        }
        (readings, changes)
    }

    /// Each bus's counters, by name.
    pub fn counters(&self) -> BTreeMap<String, BusCounters> {
        self.buses
            .iter()
            .map(|(name, (_, line))| {
                let counters = match line {
                    Line::Modbus(handle) => handle.counters(),
                    Line::Simulated(c) => c.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                };
                (name.clone(), counters)
            })
            .collect()
    }

    /// What each sensor's reads left, by id; a sensor not read since the start is
    /// absent.
    pub fn last_reads(&self) -> HashMap<String, LastRead> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn good_value(r: &Reading) -> Option<f64> {
    r.value.filter(|_| r.quality == Quality::Good)
}
