//! A buffered connection to Redis with timeouts, speaking just enough RESP for the
//! replica handshake. The transport is any byte stream (TCP now, TLS later).

use crate::replication::ReplError;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

pub enum Reply {
    Status(String),
    Error(String),
    Bulk(Option<Vec<u8>>),
    Integer(i64),
}

/// A command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct Conn {
    io: Box<dyn Transport>,
    pub buf: BytesMut,
    pub addr: String,
    pub read_timeout: Duration,
}

impl Conn {
    pub fn new(io: Box<dyn Transport>, addr: String, read_timeout: Duration) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(256 << 10),
            addr,
            read_timeout,
        }
    }

    /// Reads more bytes into the buffer; Ok(0) at end of stream.
    pub async fn fill(&mut self, waiting_for: &str) -> Result<usize, ReplError> {
        if self.buf.capacity() - self.buf.len() < 64 << 10 {
            self.buf.reserve(256 << 10);
        }
        match tokio::time::timeout(self.read_timeout, self.io.read_buf(&mut self.buf)).await {
            Err(_) => Err(ReplError::Timeout {
                addr: self.addr.clone(),
                secs: self.read_timeout.as_secs(),
                waiting_for: waiting_for.into(),
            }),
            Ok(Err(source)) => Err(ReplError::Io {
                addr: self.addr.clone(),
                source,
            }),
            Ok(Ok(n)) => Ok(n),
        }
    }

    /// Writes bytes already framed as RESP commands (pipelining).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ReplError> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|source| ReplError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), ReplError> {
        self.io
            .write_all(&encode_command(args))
            .await
            .map_err(|source| ReplError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    /// One line without its CRLF. Bare `\n` keepalives (sent while the primary
    /// forks) before the line are skipped.
    pub async fn read_line(&mut self, waiting_for: &str) -> Result<String, ReplError> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                let line = &line[..line.len() - 1];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if self.buf.len() > 1 << 20 {
                return Err(ReplError::Protocol(format!(
                    "{}: reply line longer than 1 MiB while waiting for {waiting_for}",
                    self.addr
                )));
            }
            if self.fill(waiting_for).await? == 0 {
                return Err(ReplError::Closed {
                    addr: self.addr.clone(),
                    during: waiting_for.into(),
                });
            }
        }
    }

    pub async fn read_reply(&mut self, waiting_for: &str) -> Result<Reply, ReplError> {
        let line = self.read_line(waiting_for).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Reply::Status(rest.into())),
            "-" => Ok(Reply::Error(rest.into())),
            ":" => Ok(Reply::Integer(rest.parse().unwrap_or(0))),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| {
                    ReplError::Protocol(format!("{}: bad bulk length {rest}", self.addr))
                })?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let need = n as usize + 2;
                while self.buf.len() < need {
                    if self.fill(waiting_for).await? == 0 {
                        return Err(ReplError::Closed {
                            addr: self.addr.clone(),
                            during: waiting_for.into(),
                        });
                    }
                }
                let v = self.buf.split_to(need);
                Ok(Reply::Bulk(Some(v[..n as usize].to_vec())))
            }
            _ => Err(ReplError::Protocol(format!(
                "{}: unexpected reply {:?} while waiting for {waiting_for}",
                self.addr,
                line.chars().take(60).collect::<String>()
            ))),
        }
    }

    /// Reads one reply of any shape; arrays (EXEC's, say) are read whole and
    /// reported as `Integer(length)`; only a top-level error is an error.
    pub async fn read_any(&mut self, waiting_for: &str) -> Result<Reply, ReplError> {
        let mut owed: u64 = 1;
        let mut top = None;
        while owed > 0 {
            owed -= 1;
            if self.buf.first() == Some(&b'*')
                || (self.buf.is_empty() && {
                    self.fill(waiting_for).await?;
                    self.buf.first() == Some(&b'*')
                })
            {
                let line = self.read_line(waiting_for).await?;
                let n: i64 = line[1..].parse().map_err(|_| {
                    ReplError::Protocol(format!("{}: bad array length {line}", self.addr))
                })?;
                owed += n.max(0) as u64;
                top.get_or_insert(Reply::Integer(n));
            } else {
                let r = self.read_reply(waiting_for).await?;
                top.get_or_insert(r);
            }
        }
        Ok(top.expect("one reply read"))
    }

    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, ReplError> {
        self.send(args).await?;
        let what = format!(
            "the reply to {}",
            String::from_utf8_lossy(args[0]).to_uppercase()
        );
        self.read_reply(&what).await
    }
}

/// The reading side of a split connection: writes fail (it has none).
struct ReadOnly(tokio::io::ReadHalf<Box<dyn Transport>>);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the read half of a split connection cannot write",
        )))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The writing side of a split connection.
pub struct ConnWriter {
    io: tokio::io::WriteHalf<Box<dyn Transport>>,
    pub addr: String,
}

impl ConnWriter {
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), ReplError> {
        self.io
            .write_all(&encode_command(args))
            .await
            .map_err(|source| ReplError::Io {
                addr: self.addr.clone(),
                source,
            })
    }
}

impl Conn {
    /// Splits into a reader (keeping what is buffered) and a writer, so one task
    /// can block on reads while another writes (a replica's ACKs).
    pub fn split(self) -> (Conn, ConnWriter) {
        let (r, w) = tokio::io::split(self.io);
        (
            Conn {
                io: Box::new(ReadOnly(r)),
                buf: self.buf,
                addr: self.addr.clone(),
                read_timeout: self.read_timeout,
            },
            ConnWriter {
                io: w,
                addr: self.addr,
            },
        )
    }
}
