//! One Modbus connection, serial (RTU) or TCP, and one read transaction at a time
//! over it.
//!
//! tokio-modbus speaks the protocol; this module opens the link, bounds every
//! transaction by the bus timeout, and says what went wrong in the terms the bus
//! needs: the device said no ([`ReadError::Exception`], an answer: not retried), no
//! answer at all ([`ReadError::Timeout`]), bytes that never formed a valid frame
//! ([`ReadError::Garbled`]: a bad CRC or noise on the line), or a broken link
//! ([`ReadError::Link`]: the adapter was unplugged, the peer reset).
//!
//! Invariant: after anything but an exception the link is dropped and opened afresh
//! for the next transaction, with the serial input flushed, so a late answer to an
//! abandoned request can never be taken for the answer to the next one. This module
//! does not retry, back off or pace the line: the bus task does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_serial::{SerialPort, SerialPortBuilderExt};

use crate::config::{BusKind, Parity, Table};

/// What a read returns: registers for holding/input tables, bits for coil/discrete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Words {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("garbled answer ({bytes} bytes that never formed a valid frame)")]
    Garbled { bytes: u64 },
    #[error("device exception: {0}")]
    Exception(ExceptionCode),
    #[error("link: {0}")]
    Link(String),
}

impl ReadError {
    /// Exceptions are answers: the sensors are bad at once, with no retry.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ReadError::Exception(_))
    }
}

/// An open connection to one bus.
pub struct Link {
    ctx: Context,
    received: Arc<AtomicU64>,
}

impl Link {
    /// Opens the bus: the serial port with its line settings (input flushed), or a TCP
    /// connection within `timeout`.
    pub async fn open(kind: &BusKind, timeout: Duration) -> Result<Link, ReadError> {
        let received = Arc::new(AtomicU64::new(0));
        let ctx = match kind {
            BusKind::ModbusRtu {
                port,
                baud,
                parity,
                data_bits,
                stop_bits,
            } => {
                let path = port.to_string_lossy();
                let stream = tokio_serial::new(path.as_ref(), *baud)
                    .parity(match parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .data_bits(match data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .stop_bits(if *stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .open_native_async()
                    .map_err(|e| ReadError::Link(format!("cannot open {path}: {e}")))?;
                stream
                    .clear(tokio_serial::ClearBuffer::All)
                    .map_err(|e| ReadError::Link(format!("cannot flush {path}: {e}")))?;
                let counted = Counted {
                    inner: stream,
                    received: Arc::clone(&received),
                };
                tokio_modbus::client::rtu::attach(counted)
            }
            BusKind::ModbusTcp { address } => {
                let connect = tokio::net::TcpStream::connect(address.as_str());
                let stream = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(|_| {
                        ReadError::Link(format!(
                            "cannot connect to {address}: no answer within {timeout:?}"
                        ))
                    })?
                    .map_err(|e| ReadError::Link(format!("cannot connect to {address}: {e}")))?;
                let _ = stream.set_nodelay(true);
                let counted = Counted {
                    inner: stream,
                    received: Arc::clone(&received),
                };
                tokio_modbus::client::tcp::attach(counted)
            }
            BusKind::Simulated => {
                return Err(ReadError::Link("a simulated bus has no link".into()));
            }
        };
        Ok(Link { ctx, received })
    }

    /// Reads `count` registers or bits from `start` of `table` on `slave`, within
    /// `timeout`. After an error other than an exception the link must be dropped.
    pub async fn read(
        &mut self,
        slave: u8,
        table: Table,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<Words, ReadError> {
        self.ctx.set_slave(Slave(slave));
        let before = self.received.load(Ordering::Relaxed);
        let ctx = &mut self.ctx;
        let request = async move {
            match table {
                Table::Holding => ctx
                    .read_holding_registers(start, count)
                    .await
                    .map(|r| r.map(Words::Registers)),
                Table::Input => ctx
                    .read_input_registers(start, count)
                    .await
                    .map(|r| r.map(Words::Registers)),
                Table::Coil => ctx
                    .read_coils(start, count)
                    .await
                    .map(|r| r.map(Words::Bits)),
                Table::Discrete => ctx
                    .read_discrete_inputs(start, count)
                    .await
                    .map(|r| r.map(Words::Bits)),
            }
        };
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(Ok(words))) => Ok(words),
            Ok(Ok(Err(code))) => Err(ReadError::Exception(code)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(ReadError::Link(describe_io(&e))),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(ReadError::Garbled {
                bytes: self.received.load(Ordering::Relaxed) - before,
            })
            .inspect_err(|_| tracing::debug!(error = %e, "protocol error")),
            Err(_) => match self.received.load(Ordering::Relaxed) - before {
                0 => Err(ReadError::Timeout(timeout)),
                bytes => Err(ReadError::Garbled { bytes }),
            },
        }
    }
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
        _ => e.to_string(),
    }
}

/// The silence kept between two frames on a serial line: `frame_gap` when
/// configured, else 3.5 characters at the line's speed (11 bits a character with
/// parity or two stop bits, else 10), and at least the 1.75 ms Modbus sets above
/// 19,200 baud.
pub fn frame_gap(kind: &BusKind, configured: Option<Duration>) -> Duration {
    if let Some(gap) = configured {
        return gap;
    }
    match kind {
        BusKind::ModbusRtu {
            baud,
            parity,
            stop_bits,
            data_bits,
            ..
        } => {
            let bits = 1
                + u32::from(*data_bits)
                + u32::from(*parity != Parity::None)
                + u32::from(*stop_bits);
            if *baud > 19_200 {
                return Duration::from_micros(1750);
            }
            let char_time = f64::from(bits) / f64::from((*baud).max(1));
            Duration::from_secs_f64(3.5 * char_time)
        }
        BusKind::ModbusTcp { .. } | BusKind::Simulated => Duration::ZERO,
    }
}

/// A transport that counts the bytes it receives, so a transaction that timed out
/// can tell silence from garbage.
#[derive(Debug)]
struct Counted<T> {
    inner: T,
    received: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.received.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
