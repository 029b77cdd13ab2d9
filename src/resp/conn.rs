//! A buffered connection to Redis with timeouts: RESP2 frames in (one parser,
//! arrays included), commands out (one encoder). The transport is any byte
//! stream (TCP now, TLS later).

use super::RedisError as ReplError;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// One RESP2 reply. A nil bulk string and a nil array are both `Bulk(None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Bulk(Option<Vec<u8>>),
    Integer(i64),
    Array(Vec<Reply>),
}

impl Reply {
    /// The first error in this reply, at any depth (EXEC answers an array
    /// whose elements may be errors).
    pub fn first_error(&self) -> Option<&str> {
        match self {
            Reply::Error(m) => Some(m),
            Reply::Array(items) => items.iter().find_map(Reply::first_error),
            _ => None,
        }
    }

    /// The bytes of a bulk or status reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// Appends a command, as a RESP array of bulk strings, to `buf`: the one
/// encoder every writer uses (handshake, loader, replay, AOF records).
pub fn encode_into<A: AsRef<[u8]>>(buf: &mut Vec<u8>, args: &[A]) {
    buf.push(b'*');
    buf.extend_from_slice(args.len().to_string().as_bytes());
    buf.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        buf.push(b'$');
        buf.extend_from_slice(a.len().to_string().as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    encode_into(&mut out, args);
    out
}

/// A RESP array of bulk strings back into its arguments; None if `b` is not
/// exactly one such array.
pub fn decode_command(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn line<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let i = memchr::memchr(b'\n', b)?;
        let l = b.get(..i)?.strip_suffix(b"\r")?;
        *b = &b[i + 1..];
        Some(l)
    }
    let n: usize = std::str::from_utf8(line(&mut b)?.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let len: usize = std::str::from_utf8(line(&mut b)?.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if b.len() < len + 2 || &b[len..len + 2] != b"\r\n" {
            return None;
        }
        args.push(b[..len].to_vec());
        b = &b[len + 2..];
    }
    b.is_empty().then_some(args)
}

pub struct Conn {
    io: Box<dyn Transport>,
    /// Bytes read and not yet consumed (the RDB transfer reads from it directly).
    pub buf: BytesMut,
    pub addr: String,
    pub read_timeout: Duration,
    /// Bytes consumed as frames so far (keepalive newlines not counted): the
    /// replication offset advances by exactly this.
    pub consumed: u64,
}

impl Conn {
    pub fn new(io: Box<dyn Transport>, addr: String, read_timeout: Duration) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(256 << 10),
            addr,
            read_timeout,
            consumed: 0,
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
        self.write_raw(&encode_command(args)).await
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
                self.consumed += line.len() as u64;
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

    /// One whole reply, arrays included (nested to any depth), read without
    /// recursion: a stack of arrays still being filled.
    pub async fn read_reply(&mut self, waiting_for: &str) -> Result<Reply, ReplError> {
        // (elements still owed, elements read so far) per open array.
        let mut open: Vec<(usize, Vec<Reply>)> = vec![];
        loop {
            let mut item = match self.read_one(waiting_for).await? {
                Frame::Array(n) if n > 0 => {
                    open.push((n, Vec::with_capacity(n.min(1 << 16))));
                    continue;
                }
                Frame::Array(_) => Reply::Array(vec![]),
                Frame::Value(r) => r,
            };
            // Close every array this item completes.
            loop {
                match open.last_mut() {
                    None => return Ok(item),
                    Some((owed, items)) => {
                        items.push(item);
                        *owed -= 1;
                        if *owed > 0 {
                            break;
                        }
                        let (_, items) = open.pop().expect("an open array");
                        item = Reply::Array(items);
                    }
                }
            }
        }
    }

    /// One frame: a scalar reply, or the header of an array.
    async fn read_one(&mut self, waiting_for: &str) -> Result<Frame, ReplError> {
        let line = self.read_line(waiting_for).await?;
        // By the first character, not byte: a reply may start with anything
        // (read_line made invalid UTF-8 into U+FFFD).
        let kind_len = line.chars().next().map_or(0, char::len_utf8);
        let (kind, rest) = line.split_at(kind_len);
        let bad = |what: &str| {
            ReplError::Protocol(format!(
                "{}: bad {what} {rest:?} while waiting for {waiting_for}",
                self.addr
            ))
        };
        match kind {
            "+" => Ok(Frame::Value(Reply::Status(rest.into()))),
            "-" => Ok(Frame::Value(Reply::Error(rest.into()))),
            ":" => Ok(Frame::Value(Reply::Integer(rest.parse().unwrap_or(0)))),
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad("array length"))?;
                if n < 0 {
                    return Ok(Frame::Value(Reply::Bulk(None)));
                }
                Ok(Frame::Array(n as usize))
            }
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad("bulk length"))?;
                if n < 0 {
                    return Ok(Frame::Value(Reply::Bulk(None)));
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
                self.consumed += need as u64;
                Ok(Frame::Value(Reply::Bulk(Some(v[..n as usize].to_vec()))))
            }
            _ => Err(ReplError::Protocol(format!(
                "{}: unexpected reply {:?} while waiting for {waiting_for}",
                self.addr,
                line.chars().take(60).collect::<String>()
            ))),
        }
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

enum Frame {
    Value(Reply),
    Array(usize),
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
                consumed: self.consumed,
            },
            ConnWriter {
                io: w,
                addr: self.addr,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection over an in-memory pipe holding `bytes`.
    async fn conn_over(bytes: &[u8]) -> Conn {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        a.write_all(bytes).await.unwrap();
        drop(a);
        Conn::new(Box::new(b), "test".into(), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn arrays_nested_and_nil_parse_and_count_bytes() {
        let wire = b"*3\r\n$3\r\nfoo\r\n*2\r\n:1\r\n-ERR no\r\n*-1\r\n+OK\r\n";
        let mut c = conn_over(wire).await;
        let r = c.read_reply("t").await.unwrap();
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Bulk(Some(b"foo".to_vec())),
                Reply::Array(vec![Reply::Integer(1), Reply::Error("ERR no".into())]),
                Reply::Bulk(None),
            ])
        );
        assert_eq!(r.first_error(), Some("ERR no"));
        assert_eq!(c.consumed, (wire.len() - 5) as u64);
        assert_eq!(c.read_reply("t").await.unwrap(), Reply::Status("OK".into()));
        assert!(
            c.read_reply("t").await.is_err(),
            "end of stream is an error"
        );
    }

    #[test]
    fn one_encoder_round_trips() {
        let args: Vec<Vec<u8>> = vec![b"SET".to_vec(), b"k\r\n".to_vec(), vec![0, 255]];
        let wire = encode_command(&args);
        assert_eq!(decode_command(&wire), Some(args));
        assert_eq!(decode_command(&wire[..wire.len() - 1]), None);
    }
}
