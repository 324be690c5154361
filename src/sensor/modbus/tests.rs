//! The link over a real pseudo-terminal pair against tokio-modbus's RTU server, and
//! over TCP against its TCP server: every table, exceptions, silence and garbage.

use std::future::{Ready, ready};
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio_modbus::prelude::{Request, Response, SlaveRequest};
use tokio_serial::SerialStream;

use super::*;

/// A device that answers as slave 7: register n holds n, input register n holds 2n,
/// coil and discrete input n are on when n is even; addresses from 1000 are illegal.
#[derive(Clone, Copy)]
struct Device;

impl tokio_modbus::server::Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != 7 {
            return ready(Ok(None));
        }
        let range = |a: u16, n: u16| a..a.saturating_add(n);
        ready(match req.request {
            Request::ReadHoldingRegisters(a, _) | Request::ReadInputRegisters(a, _)
                if a >= 1000 =>
            {
                Err(ExceptionCode::IllegalDataAddress)
            }
            Request::ReadHoldingRegisters(a, n) => {
                Ok(Some(Response::ReadHoldingRegisters(range(a, n).collect())))
            }
            Request::ReadInputRegisters(a, n) => Ok(Some(Response::ReadInputRegisters(
                range(a, n).map(|x| x.wrapping_mul(2)).collect(),
            ))),
            Request::ReadCoils(a, n) => Ok(Some(Response::ReadCoils(
                range(a, n).map(|x| x % 2 == 0).collect(),
            ))),
            Request::ReadDiscreteInputs(a, n) => Ok(Some(Response::ReadDiscreteInputs(
                range(a, n).map(|x| x % 2 == 0).collect(),
            ))),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// A pty pair: the device end (master) and the path the agent opens, plus the slave
/// end the pair came with, kept open so the line does not hang up.
fn pty() -> (SerialStream, PathBuf, SerialStream) {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let path = PathBuf::from(slave.name().expect("pty has a name"));
    (master, path, slave)
}

fn rtu(port: PathBuf) -> BusKind {
    BusKind::ModbusRtu {
        port,
        baud: 9600,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
    }
}

const LIMIT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn reads_every_table_over_a_serial_line() {
    let (master, path, _keep) = pty();
    tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(Device));
    let mut link = Link::open(&rtu(path), LIMIT).await.unwrap();
    assert_eq!(
        link.read(7, Table::Holding, 10, 3, LIMIT).await,
        Ok(Words::Registers(vec![10, 11, 12]))
    );
    assert_eq!(
        link.read(7, Table::Input, 10, 2, LIMIT).await,
        Ok(Words::Registers(vec![20, 22]))
    );
    assert_eq!(
        link.read(7, Table::Coil, 3, 3, LIMIT).await,
        Ok(Words::Bits(vec![false, true, false]))
    );
    assert_eq!(
        link.read(7, Table::Discrete, 0, 2, LIMIT).await,
        Ok(Words::Bits(vec![true, false]))
    );
    // 125 registers, the most one request may carry.
    let Ok(Words::Registers(many)) = link.read(7, Table::Holding, 0, 125, LIMIT).await else {
        panic!()
    };
    assert_eq!(many, (0..125).collect::<Vec<u16>>());
}

#[tokio::test]
async fn an_exception_is_an_answer_and_not_retryable() {
    let (master, path, _keep) = pty();
    tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(Device));
    let mut link = Link::open(&rtu(path), LIMIT).await.unwrap();
    let err = link
        .read(7, Table::Holding, 1000, 2, LIMIT)
        .await
        .unwrap_err();
    assert_eq!(err, ReadError::Exception(ExceptionCode::IllegalDataAddress));
    assert!(!err.is_retryable());
    // The link stays usable after an exception.
    assert_eq!(
        link.read(7, Table::Holding, 1, 1, LIMIT).await,
        Ok(Words::Registers(vec![1]))
    );
}

#[tokio::test]
async fn a_silent_slave_is_a_timeout() {
    let (master, path, _keep) = pty();
    tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(Device));
    let mut link = Link::open(&rtu(path), LIMIT).await.unwrap();
    let err = link.read(9, Table::Holding, 0, 1, LIMIT).await.unwrap_err();
    assert_eq!(err, ReadError::Timeout(LIMIT));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn garbage_on_the_line_is_told_from_silence() {
    let (mut master, path, _keep) = pty();
    let mut link = Link::open(&rtu(path), LIMIT).await.unwrap();
    // The "device" answers every request with noise.
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        loop {
            use tokio::io::AsyncReadExt;
            if master.read(&mut buf).await.unwrap_or(0) == 0 {
                break;
            }
            let _ = master
                .write_all(&[0x07, 0x03, 0x02, 0x00, 0x2A, 0xDE, 0xAD])
                .await;
        }
    });
    let err = link.read(7, Table::Holding, 0, 1, LIMIT).await.unwrap_err();
    assert!(
        matches!(err, ReadError::Garbled { bytes } if bytes > 0),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_missing_port_is_a_link_error_naming_it() {
    let err = Link::open(&rtu(PathBuf::from("/nonexistent/ttyUSB9")), LIMIT)
        .await
        .err()
        .unwrap();
    let ReadError::Link(message) = err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("cannot open /nonexistent/ttyUSB9: "),
        "{message}"
    );
}

#[tokio::test]
async fn reads_over_tcp_and_sees_a_reset_peer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let serving = tokio::spawn(async move {
        let on_connected = |stream, _addr| async move { Ok(Some((Device, stream))) };
        let _ = server
            .serve(&on_connected, |e| tracing::debug!(error = %e, "server"))
            .await;
    });
    let kind = BusKind::ModbusTcp {
        address: address.to_string(),
    };
    let mut link = Link::open(&kind, LIMIT).await.unwrap();
    assert_eq!(
        link.read(7, Table::Holding, 5, 2, LIMIT).await,
        Ok(Words::Registers(vec![5, 6]))
    );
    serving.abort();
    let _ = serving.await;
    let err = link.read(7, Table::Holding, 5, 2, LIMIT).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        Link::open(&kind, LIMIT).await.is_err(),
        "nobody listens any more"
    );
}

#[test]
fn the_frame_gap_is_three_and_a_half_characters() {
    let at = |baud, parity| BusKind::ModbusRtu {
        port: PathBuf::from("/dev/null"),
        baud,
        parity,
        data_bits: 8,
        stop_bits: 1,
    };
    // 9600 8N1: 10 bits a character, 3.5 of them.
    assert_eq!(frame_gap(&at(9600, Parity::None), None).as_micros(), 3645);
    // 4800 8E1: 11 bits.
    assert_eq!(frame_gap(&at(4800, Parity::Even), None).as_micros(), 8020);
    assert_eq!(
        frame_gap(&at(115_200, Parity::None), None),
        Duration::from_micros(1750)
    );
    assert_eq!(
        frame_gap(&at(9600, Parity::None), Some(Duration::from_millis(10))),
        Duration::from_millis(10)
    );
}
