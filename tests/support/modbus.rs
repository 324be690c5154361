//! Modbus devices for tests: RTU on the far end of a real pseudo-terminal pair, or TCP
//! on a local port. A register image per live slave (a bit is on where its word is
//! nonzero), silence for the others, and a count of the requests seen.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_modbus::ExceptionCode;
use tokio_modbus::prelude::{Request, Response, SlaveRequest};
use tokio_serial::{SerialPort, SerialStream};

#[derive(Clone)]
struct Device {
    images: Arc<HashMap<u8, Vec<u16>>>,
    requests: Arc<AtomicU64>,
}

impl tokio_modbus::server::Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let Some(image) = self.images.get(&req.slave) else {
            return ready(Ok(None));
        };
        let slice = |a: u16, n: u16| {
            image
                .get(usize::from(a)..usize::from(a) + usize::from(n))
                .map(<[u16]>::to_vec)
        };
        ready(match req.request {
            Request::ReadHoldingRegisters(a, n) => slice(a, n)
                .map(|w| Some(Response::ReadHoldingRegisters(w)))
                .ok_or(ExceptionCode::IllegalDataAddress),
            Request::ReadInputRegisters(a, n) => slice(a, n)
                .map(|w| Some(Response::ReadInputRegisters(w)))
                .ok_or(ExceptionCode::IllegalDataAddress),
            Request::ReadCoils(a, n) => slice(a, n)
                .map(|w| Some(Response::ReadCoils(w.iter().map(|x| *x != 0).collect())))
                .ok_or(ExceptionCode::IllegalDataAddress),
            Request::ReadDiscreteInputs(a, n) => slice(a, n)
                .map(|w| {
                    Some(Response::ReadDiscreteInputs(
                        w.iter().map(|x| *x != 0).collect(),
                    ))
                })
                .ok_or(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// A line with these slaves on it, served until the test ends.
pub struct SerialLine {
    /// The path the agent opens.
    pub path: PathBuf,
    pub requests: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _keep: SerialStream,
}

impl SerialLine {
    /// Must be called inside a tokio runtime.
    pub fn start(images: HashMap<u8, Vec<u16>>) -> SerialLine {
        let (master, slave) = SerialStream::pair().expect("pty pair");
        let path = PathBuf::from(slave.name().expect("pty name"));
        let requests = Arc::new(AtomicU64::new(0));
        let device = Device {
            images: Arc::new(images),
            requests: Arc::clone(&requests),
        };
        let server =
            tokio::spawn(tokio_modbus::server::rtu::Server::new(master).serve_forever(device));
        SerialLine {
            path,
            requests,
            server,
            _keep: slave,
        }
    }

    /// Pulls the plug: the device end closes and the line hangs up.
    pub async fn unplug(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

/// A Modbus TCP device on 127.0.0.1 with these slaves.
pub struct TcpDevice {
    pub address: std::net::SocketAddr,
    pub requests: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl TcpDevice {
    /// On a free port. Must be called inside a tokio runtime.
    pub async fn start(images: HashMap<u8, Vec<u16>>) -> TcpDevice {
        TcpDevice::start_at("127.0.0.1:0".parse().expect("address"), images).await
    }

    /// On `address`, as a device that comes back after a restart.
    pub async fn start_at(
        address: std::net::SocketAddr,
        images: HashMap<u8, Vec<u16>>,
    ) -> TcpDevice {
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicU64::new(0));
        let device = Device {
            images: Arc::new(images),
            requests: Arc::clone(&requests),
        };
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let server = tokio::spawn(async move {
            let on_connected = move |stream, _addr| {
                let device = device.clone();
                async move { Ok(Some((device, stream))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        TcpDevice {
            address,
            requests,
            server,
        }
    }

    /// The device goes away: the listener and every connection close.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

/// Registers holding `value` as an f32, high word first.
pub fn f32_words(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [(bits >> 16) as u16, bits as u16]
}
