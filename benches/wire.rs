//! A sampling cycle over a serial line at 9600 baud against its theoretical wire time.
//!
//! 32 sensors on 4 slaves (8 each: four f32 values, status words, a scaled u16, an
//! i16) are read through the real bus task over a pseudo-terminal pair. The device on
//! the far end answers each request only after the time the frames would take on a
//! real 9600-baud 8N1 line: the request, 3.5 characters of silence, and the response.
//! The theoretical wire time of a cycle is, for each request, its request and response
//! frames plus 3.5 characters of silence after each. Requests issued are counted at the
//! device and compared with the minimum (one per slave, whose registers span 21).
//!
//! Run: `cargo bench --bench wire [-- CYCLES]` (default 20).
#![allow(clippy::expect_used)] // a measurement harness: a failed step ends the run

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidegate::clock::{Clock, TestClock};
use tidegate::config::{
    BusConfig, BusKind, Parity, RegisterMap, SensorConfig, SensorSource, Table, ValueType,
    WordOrder,
};
use tidegate::reading::Quality;
use tidegate::sensor::bus::Bus;
use tokio_modbus::ExceptionCode;
use tokio_modbus::prelude::{Request, Response, SlaveRequest};
use tokio_serial::{SerialPort, SerialStream};

const BAUD: u32 = 9600;
const BITS_PER_CHAR: u32 = 10;

fn chars(n: f64) -> Duration {
    Duration::from_secs_f64(n * f64::from(BITS_PER_CHAR) / f64::from(BAUD))
}

/// Bytes of an RTU read request and of its response for `count` registers.
fn frame_bytes(count: u16) -> (f64, f64) {
    (8.0, 5.0 + 2.0 * f64::from(count))
}

#[derive(Clone)]
struct SlowDevice {
    requests: Arc<AtomicU64>,
}

impl tokio_modbus::server::Service for SlowDevice {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Exception>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let Request::ReadHoldingRegisters(start, count) = req.request else {
                return Err(ExceptionCode::IllegalFunction);
            };
            let (request, response) = frame_bytes(count);
            tokio::time::sleep(chars(request + 3.5 + response)).await;
            Ok(Some(Response::ReadHoldingRegisters(
                (start..start + count).collect(),
            )))
        })
    }
}

fn sensors() -> Vec<SensorConfig> {
    let layout = [
        (0, ValueType::F32),
        (2, ValueType::F32),
        (4, ValueType::F32),
        (6, ValueType::F32),
        (8, ValueType::U16),
        (9, ValueType::U16),
        (12, ValueType::U16),
        (20, ValueType::I16),
    ];
    (1..=4u8)
        .flat_map(|slave| {
            layout
                .iter()
                .enumerate()
                .map(move |(k, (register, value_type))| SensorConfig {
                    id: format!("s{slave}.{k}"),
                    bus: "line".into(),
                    enabled: true,
                    unit: None,
                    source: SensorSource::Modbus(RegisterMap {
                        slave,
                        table: Table::Holding,
                        register: *register,
                        value_type: *value_type,
                        word_order: WordOrder::Big,
                        scale: 1.0,
                        offset: 0.0,
                    }),
                })
        })
        .collect()
}

fn main() {
    let cycles: u32 = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (master, slave) = SerialStream::pair().expect("pty pair");
        let path = PathBuf::from(slave.name().expect("pty name"));
        let requests = Arc::new(AtomicU64::new(0));
        let device = SlowDevice {
            requests: Arc::clone(&requests),
        };
        tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(device));
        let cfg = BusConfig {
            name: "line".into(),
            kind: BusKind::ModbusRtu {
                port: path,
                baud: BAUD,
                parity: Parity::None,
                data_bits: 8,
                stop_bits: 1,
            },
            timeout: Duration::from_millis(500),
            retries: 0,
            frame_gap: None,
        };
        let sensors = sensors();
        let refs: Vec<&SensorConfig> = sensors.iter().collect();
        let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, true));
        let mut bus = Bus::new(cfg);
        // One cycle to open the port.
        bus.read_cycle(&refs, clock.as_ref()).await;
        requests.store(0, Ordering::SeqCst);
        let mut times = Vec::new();
        for _ in 0..cycles {
            let started = Instant::now();
            let readings = bus.read_cycle(&refs, clock.as_ref()).await;
            times.push(started.elapsed());
            assert!(
                readings.iter().all(|r| r.quality == Quality::Good),
                "{readings:?}"
            );
        }
        let per_cycle = requests.load(Ordering::SeqCst) as f64 / f64::from(cycles);
        let minimum = 4.0;
        let (request, response) = frame_bytes(21);
        let theory = chars(request + response + 7.0) * 4;
        times.sort();
        let mean = times.iter().sum::<Duration>() / cycles;
        println!("32 sensors on 4 slaves at {BAUD} baud, {cycles} cycles");
        println!("requests per cycle: {per_cycle} (minimum {minimum})");
        println!(
            "theoretical wire time: {:.1} ms",
            theory.as_secs_f64() * 1e3
        );
        println!(
            "measured cycle: mean {:.1} ms, min {:.1} ms, max {:.1} ms ({:.3}x the wire time)",
            mean.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            mean.as_secs_f64() / theory.as_secs_f64()
        );
    });
}
