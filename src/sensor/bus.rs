//! One bus read as one half-duplex line: a sampling cycle's requests, one
//! transaction at a time, with the inter-frame gap kept, retries per the bus config,
//! and dead slaves backed off.
//!
//! Invariants:
//! - Exactly one [`Bus`] exists per configured bus, owned by one task ([`spawn`]); the
//!   link is opened lazily and reopened after any failure that is not an exception.
//! - Every sensor asked for gets exactly one reading per cycle: `good`, or `bad` with
//!   the error. A fault touches only the sensors of the request that failed.
//! - A slave whose requests time out is skipped for a growing number of cycles (1, 2,
//!   4, … up to [`MAX_SKIP`]) and then probed again with a single attempt, so one dead
//!   probe costs its line at most one timeout a cycle; it is never forgotten.
//! - Exceptions are answers: no retry. A merged read refused with exception 02 is
//!   split, remembered, and read again at once, one sensor a request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{self, Request, Splits};
use super::decode;
use super::modbus::{self, Link, ReadError, Words};
use crate::clock::Clock;
use crate::config::{BusConfig, RegisterMap, SensorConfig, SensorSource};
use crate::reading::Reading;
use tokio_modbus::ExceptionCode;

/// The most cycles a dead slave is skipped between two probes.
pub const MAX_SKIP: u32 = 32;

/// What the heartbeat reports of a bus (SPEC section 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusCounters {
    pub requests: u64,
    pub timeouts: u64,
    pub crc_errors: u64,
    pub exceptions: u64,
    /// Transactions lost to the link itself (a TCP connection dropped, a serial
    /// write failed); not in the heartbeat, which predates it.
    pub link_errors: u64,
    pub last_good_read: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SlaveHealth {
    /// Cycles in a row whose requests to this slave timed out.
    dead_cycles: u32,
    /// Cycles still to skip before the next probe.
    skip: u32,
}

/// A Modbus bus and what it remembers between cycles.
pub struct Bus {
    cfg: BusConfig,
    link: Option<Link>,
    splits: Splits,
    slaves: HashMap<u8, SlaveHealth>,
    counters: Arc<Mutex<BusCounters>>,
    gap: Duration,
    last_frame: Option<Instant>,
}

impl Bus {
    pub fn new(cfg: BusConfig) -> Bus {
        let gap = modbus::frame_gap(&cfg.kind, cfg.frame_gap);
        Bus {
            cfg,
            link: None,
            splits: Splits::default(),
            slaves: HashMap::new(),
            counters: Arc::new(Mutex::new(BusCounters::default())),
            gap,
            last_frame: None,
        }
    }

    pub fn counters(&self) -> BusCounters {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// One sampling cycle: a reading for every sensor in `sensors` (all on this bus).
    pub async fn read_cycle(
        &mut self,
        sensors: &[&SensorConfig],
        clock: &dyn Clock,
    ) -> Vec<Reading> {
        let maps: Vec<(usize, &RegisterMap)> = sensors
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.source {
                SensorSource::Modbus(map) => Some((i, map)),
                SensorSource::Simulated(_) => None,
            })
            .collect();
        let mut readings: Vec<Option<Reading>> = vec![None; sensors.len()];
        let mut queue: std::collections::VecDeque<Request> =
            batch::plan(&maps, &self.splits).into();
        let mut dead_this_cycle: Vec<u8> = Vec::new();
        let mut skipped: Vec<u8> = Vec::new();
        for (slave, health) in &mut self.slaves {
            if health.skip > 0 {
                health.skip -= 1;
                skipped.push(*slave);
            }
        }
        while let Some(request) = queue.pop_front() {
            let now = clock.now().wall;
            if skipped.contains(&request.slave) || dead_this_cycle.contains(&request.slave) {
                let error = format!("slave {} not answering; skipped this cycle", request.slave);
                fill_bad(&mut readings, sensors, &request, now, &error);
                continue;
            }
            let probing = self
                .slaves
                .get(&request.slave)
                .is_some_and(|h| h.dead_cycles > 0);
            let attempts = if probing { 1 } else { 1 + self.cfg.retries };
            let result = self.transact(&request, attempts).await;
            let now = clock.now().wall;
            match result {
                Ok(words) => {
                    self.slaves.remove(&request.slave);
                    if let Ok(mut c) = self.counters.lock() {
                        c.last_good_read = Some(now);
                    }
                    for part in &request.parts {
                        let sensor = sensors[part.index];
                        readings[part.index] =
                            Some(decode_part(sensor, &words, part.offset, part.width, now));
                    }
                }
                Err(ReadError::Exception(ExceptionCode::IllegalDataAddress))
                    if request.parts.len() > 1 =>
                {
                    tracing::warn!(bus = %self.cfg.name, slave = request.slave, start = request.start, count = request.count, "merged read refused; reading its sensors one by one from now on");
                    self.splits.refused(&request);
                    let group: Vec<(usize, &RegisterMap)> = maps
                        .iter()
                        .filter(|(i, _)| request.parts.iter().any(|p| p.index == *i))
                        .copied()
                        .collect();
                    for split in batch::plan(&group, &self.splits).into_iter().rev() {
                        queue.push_front(split);
                    }
                }
                Err(error) => {
                    if matches!(error, ReadError::Timeout(_) | ReadError::Garbled { .. }) {
                        dead_this_cycle.push(request.slave);
                    }
                    let message = format!("slave {}: {error}", request.slave);
                    fill_bad(&mut readings, sensors, &request, now, &message);
                }
            }
        }
        for slave in dead_this_cycle {
            let health = self.slaves.entry(slave).or_default();
            health.dead_cycles += 1;
            health.skip = (1u32 << health.dead_cycles.saturating_sub(1).min(5)).min(MAX_SKIP);
            tracing::warn!(bus = %self.cfg.name, slave, cycles = health.dead_cycles, skip = health.skip, "slave not answering; backing off");
        }
        let now = clock.now().wall;
        readings
            .into_iter()
            .zip(sensors)
            .map(|(r, s)| {
                r.unwrap_or_else(|| Reading::bad(&s.id, now, s.unit.as_deref(), "not read"))
            })
            .collect()
    }

    /// One request, tried up to `attempts` times while the error is retryable.
    async fn transact(&mut self, request: &Request, attempts: u32) -> Result<Words, ReadError> {
        let mut last = ReadError::Link("not tried".into());
        for _ in 0..attempts.max(1) {
            if let Some(at) = self.last_frame {
                tokio::time::sleep_until(at + self.gap).await;
            }
            let link = match self.link.as_mut() {
                Some(link) => link,
                None => match Link::open(&self.cfg.kind, self.cfg.timeout).await {
                    Ok(link) => self.link.insert(link),
                    Err(error) => {
                        last = error;
                        continue;
                    }
                },
            };
            let result = link
                .read(
                    request.slave,
                    request.table,
                    request.start,
                    request.count,
                    self.cfg.timeout,
                )
                .await;
            self.last_frame = Some(Instant::now());
            if let Ok(mut c) = self.counters.lock() {
                c.requests += 1;
                match &result {
                    Err(ReadError::Timeout(_)) => c.timeouts += 1,
                    Err(ReadError::Garbled { .. }) => c.crc_errors += 1,
                    Err(ReadError::Exception(_)) => c.exceptions += 1,
                    Err(ReadError::Link(_)) => c.link_errors += 1,
                    Ok(_) => {}
                }
            }
            match result {
                Ok(words) => return Ok(words),
                Err(error) if !error.is_retryable() => return Err(error),
                Err(error) => {
                    tracing::debug!(bus = %self.cfg.name, slave = request.slave, error = %error, "transaction failed");
                    self.link = None;
                    last = error;
                }
            }
        }
        Err(last)
    }
}

fn decode_part(
    sensor: &SensorConfig,
    words: &Words,
    offset: u16,
    width: u16,
    now: DateTime<Utc>,
) -> Reading {
    let unit = sensor.unit.as_deref();
    let (start, end) = (
        usize::from(offset),
        usize::from(offset) + usize::from(width),
    );
    let value = match (words, &sensor.source) {
        (Words::Registers(regs), SensorSource::Modbus(map)) => match regs.get(start..end) {
            Some(slice) => decode::decode(map, slice).map_err(|e| e.to_string()),
            None => Err(format!("answer too short for register offset {offset}")),
        },
        (Words::Bits(bits), SensorSource::Modbus(_)) => match bits.get(start) {
            Some(bit) => Ok(decode::decode_bit(*bit)),
            None => Err(format!("answer too short for bit offset {offset}")),
        },
        (_, SensorSource::Simulated(_)) => Err("a simulated sensor on a Modbus bus".to_string()),
    };
    match value {
        Ok(v) => Reading::good(&sensor.id, now, v, unit),
        Err(e) => Reading::bad(&sensor.id, now, unit, e),
    }
}

fn fill_bad(
    readings: &mut [Option<Reading>],
    sensors: &[&SensorConfig],
    request: &Request,
    now: DateTime<Utc>,
    error: &str,
) {
    for part in &request.parts {
        let sensor = sensors[part.index];
        readings[part.index] = Some(Reading::bad(&sensor.id, now, sensor.unit.as_deref(), error));
    }
}

/// A cycle asked of a bus task: these sensors, answered with their readings.
struct Cycle {
    sensors: Vec<SensorConfig>,
    reply: oneshot::Sender<Vec<Reading>>,
}

/// The clonable side of a bus task.
#[derive(Clone)]
pub struct BusHandle {
    tx: mpsc::Sender<Cycle>,
    counters: Arc<Mutex<BusCounters>>,
}

impl BusHandle {
    /// Reads `sensors` (all on this bus) once; `None` when the bus task has stopped.
    pub async fn read(&self, sensors: Vec<SensorConfig>) -> Option<Vec<Reading>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Cycle { sensors, reply }).await.ok()?;
        answer.await.ok()
    }

    pub fn counters(&self) -> BusCounters {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Starts the one task that owns this bus; it ends when every handle is dropped.
pub fn spawn(cfg: BusConfig, clock: Arc<dyn Clock>) -> BusHandle {
    let (tx, mut rx) = mpsc::channel::<Cycle>(4);
    let mut bus = Bus::new(cfg);
    let counters = Arc::clone(&bus.counters);
    tokio::spawn(async move {
        while let Some(cycle) = rx.recv().await {
            let sensors: Vec<&SensorConfig> = cycle.sensors.iter().collect();
            let readings = bus.read_cycle(&sensors, clock.as_ref()).await;
            let _ = cycle.reply.send(readings);
        }
    });
    BusHandle { tx, counters }
}

#[cfg(test)]
mod tests;
