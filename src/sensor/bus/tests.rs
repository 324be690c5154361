//! A bus over a real pseudo-terminal pair with a Modbus RTU device on the far end:
//! the fewest requests for a realistic map, decoded values, a dead slave backed off.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_modbus::prelude::{Request, Response, SlaveRequest};
use tokio_serial::{SerialPort, SerialStream};

use super::*;
use crate::clock::TestClock;
use crate::config::{BusKind, Parity, Table, ValueType, WordOrder};
use crate::reading::Quality;

/// Devices on one line: a register image per live slave, and a request counter.
#[derive(Clone)]
struct Line {
    images: Arc<HashMap<u8, Vec<u16>>>,
    /// Registers the device refuses to be read with exception 02, alone or merged.
    holes: Arc<Vec<u16>>,
    requests: Arc<AtomicU64>,
}

impl tokio_modbus::server::Service for Line {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let Some(image) = self.images.get(&req.slave) else {
            return ready(Ok(None));
        };
        ready(match req.request {
            Request::ReadHoldingRegisters(a, n)
                if self.holes.iter().any(|h| (a..a + n).contains(h)) =>
            {
                Err(ExceptionCode::IllegalDataAddress)
            }
            Request::ReadHoldingRegisters(a, n) => {
                match image.get(usize::from(a)..usize::from(a) + usize::from(n)) {
                    Some(words) => Ok(Some(Response::ReadHoldingRegisters(words.to_vec()))),
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

fn bus_on(path: PathBuf) -> BusConfig {
    BusConfig {
        name: "rs485-a".into(),
        kind: BusKind::ModbusRtu {
            port: path,
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        },
        timeout: Duration::from_millis(80),
        retries: 2,
        frame_gap: None,
    }
}

fn sensor(id: &str, slave: u8, register: u16, value_type: ValueType, scale: f64) -> SensorConfig {
    SensorConfig {
        id: id.into(),
        bus: "rs485-a".into(),
        enabled: true,
        unit: Some("u".into()),
        source: SensorSource::Modbus(RegisterMap {
            slave,
            table: Table::Holding,
            register,
            value_type,
            word_order: WordOrder::Big,
            scale,
            offset: 0.0,
        }),
    }
}

/// A probe's register image: f32 values at 0, 2, 4 and 6, status words at 8 and 9,
/// a scaled u16 at 12, an i16 at 20.
fn probe_image(seed: f32) -> Vec<u16> {
    let mut image = vec![0u16; 32];
    for (k, v) in [seed, seed + 1.0, seed + 2.0, seed + 3.0]
        .into_iter()
        .enumerate()
    {
        let bits = v.to_bits();
        image[2 * k] = (bits >> 16) as u16;
        image[2 * k + 1] = bits as u16;
    }
    image[8] = 1;
    image[9] = 0;
    image[12] = 720;
    image[20] = (-5i16) as u16;
    image
}

fn probe_sensors(slave: u8) -> Vec<SensorConfig> {
    let id = |n: &str| format!("s{slave}.{n}");
    vec![
        sensor(&id("do"), slave, 0, ValueType::F32, 1.0),
        sensor(&id("temp"), slave, 2, ValueType::F32, 1.0),
        sensor(&id("ph"), slave, 4, ValueType::F32, 1.0),
        sensor(&id("sal"), slave, 6, ValueType::F32, 1.0),
        sensor(&id("status"), slave, 8, ValueType::U16, 1.0),
        sensor(&id("alarm"), slave, 9, ValueType::U16, 1.0),
        sensor(&id("orp"), slave, 12, ValueType::U16, 0.01),
        sensor(&id("trend"), slave, 20, ValueType::I16, 1.0),
    ]
}

fn start_line(images: HashMap<u8, Vec<u16>>) -> (BusConfig, Arc<AtomicU64>, SerialStream) {
    start_line_with_holes(images, Vec::new())
}

fn start_line_with_holes(
    images: HashMap<u8, Vec<u16>>,
    holes: Vec<u16>,
) -> (BusConfig, Arc<AtomicU64>, SerialStream) {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let path = PathBuf::from(slave.name().expect("pty name"));
    let requests = Arc::new(AtomicU64::new(0));
    let line = Line {
        images: Arc::new(images),
        holes: Arc::new(holes),
        requests: Arc::clone(&requests),
    };
    tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(line));
    (bus_on(path), requests, slave)
}

#[tokio::test]
async fn a_realistic_map_is_read_in_the_fewest_requests_and_decoded_exactly() {
    let images = HashMap::from([
        (1, probe_image(7.5)),
        (2, probe_image(20.25)),
        (3, probe_image(31.0)),
    ]);
    let (cfg, requests, _keep) = start_line(images);
    let sensors: Vec<SensorConfig> = [1, 2, 3].into_iter().flat_map(probe_sensors).collect();
    assert_eq!(sensors.len(), 24);
    let refs: Vec<&SensorConfig> = sensors.iter().collect();
    let clock = TestClock::at(2026, 11, 23, 1, 0, 0, true);
    let mut bus = Bus::new(cfg);
    let readings = bus.read_cycle(&refs, &clock).await;
    // Each probe's registers 0..=20 fit one request: three slaves, three requests.
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert_eq!(bus.counters().requests, 3);
    let value = |id: &str| {
        readings
            .iter()
            .find(|r| r.sensor == id)
            .and_then(|r| r.value)
    };
    assert_eq!(value("s1.do"), Some(7.5));
    assert_eq!(value("s2.temp"), Some(21.25));
    assert_eq!(value("s3.sal"), Some(34.0));
    assert_eq!(value("s1.status"), Some(1.0));
    assert_eq!(value("s2.orp"), Some(720.0 * 0.01));
    assert_eq!(value("s3.trend"), Some(-5.0));
    assert!(
        readings.iter().all(|r| r.quality == Quality::Good),
        "{readings:?}"
    );
}

#[tokio::test]
async fn a_dead_slave_costs_at_most_one_timeout_a_cycle_once_backed_off() {
    let images = HashMap::from([(1, probe_image(7.5)), (2, probe_image(8.5))]);
    let (cfg, _requests, _keep) = start_line(images);
    // Slave 5 is on the map but dead.
    let sensors: Vec<SensorConfig> = [1, 2, 5].into_iter().flat_map(probe_sensors).collect();
    let refs: Vec<&SensorConfig> = sensors.iter().collect();
    let clock = TestClock::at(2026, 11, 23, 1, 0, 0, true);
    let mut bus = Bus::new(cfg);
    let mut timeouts_per_cycle = Vec::new();
    for _ in 0..8 {
        let before = bus.counters().timeouts;
        let readings = bus.read_cycle(&refs, &clock).await;
        timeouts_per_cycle.push(bus.counters().timeouts - before);
        for r in &readings {
            if r.sensor.starts_with("s5.") {
                assert_eq!(r.quality, Quality::Bad);
                assert!(
                    r.error.as_deref().is_some_and(|e| e.starts_with("slave 5")),
                    "{r:?}"
                );
            } else {
                assert_eq!(
                    r.quality,
                    Quality::Good,
                    "live slaves are unaffected: {r:?}"
                );
            }
        }
    }
    // First cycle: the first try and two retries. Then skipped 1 cycle, probed once,
    // skipped 2, probed once, skipped 4...
    assert_eq!(timeouts_per_cycle, vec![3, 0, 1, 0, 0, 1, 0, 0]);
}

#[tokio::test]
async fn a_merged_read_refused_with_exception_02_is_split_at_once_and_remembered() {
    // The device has nothing at register 3 and refuses any read that covers it.
    let images = HashMap::from([(1, probe_image(7.5))]);
    let (cfg, requests, _keep) = start_line_with_holes(images, vec![3]);
    let sensors = [
        sensor("s1.status", 1, 8, ValueType::U16, 1.0),
        sensor("s1.do", 1, 0, ValueType::F32, 1.0),
        sensor("s1.trend", 1, 20, ValueType::I16, 1.0),
    ];
    let refs: Vec<&SensorConfig> = sensors.iter().collect();
    let clock = TestClock::at(2026, 11, 23, 1, 0, 0, true);
    let mut bus = Bus::new(cfg);
    let readings = bus.read_cycle(&refs, &clock).await;
    let values: Vec<Option<f64>> = readings.iter().map(|r| r.value).collect();
    assert_eq!(
        values,
        vec![Some(1.0), Some(7.5), Some(-5.0)],
        "{readings:?}"
    );
    // The merged read 0..=20, refused, then one request per sensor.
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    assert_eq!(bus.counters().exceptions, 1);
    bus.read_cycle(&refs, &clock).await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        7,
        "the split is remembered"
    );
}
