//! The RDB snapshot as it arrives over the replication link, in either form:
//! `$<length>\r\n<bytes>` (disk-based sync) or `$EOF:<40-byte mark>\r\n<bytes><mark>`
//! (diskless). Yields the RDB bytes in pieces and checks the CRC64 trailer.

use crate::crc64::Crc64;
use crate::resp::{Conn, RedisError as ReplError};
use bytes::{Buf, Bytes};

const MARK_LEN: usize = 40;
const TRAILER_LEN: usize = 8;

enum Form {
    Length { remaining: u64 },
    Marker { mark: [u8; MARK_LEN] },
}

pub struct RdbTransfer {
    conn: Conn,
    form: Form,
    crc: Box<Crc64>,
    /// Bytes yielded so far.
    received: u64,
    /// The first bytes of the RDB, for its magic and version.
    head: Vec<u8>,
    /// The last bytes yielded, for the CRC trailer.
    tail: [u8; TRAILER_LEN],
    done: bool,
}

impl RdbTransfer {
    pub(super) async fn start(mut conn: Conn) -> Result<Self, ReplError> {
        let line = conn.read_line("the snapshot").await?;
        let form = if let Some(m) = line.strip_prefix("$EOF:") {
            let mark: [u8; MARK_LEN] = m.as_bytes().try_into().map_err(|_| {
                ReplError::Protocol(format!("{}: bad EOF mark in {line:?}", conn.addr))
            })?;
            Form::Marker { mark }
        } else if let Some(n) = line.strip_prefix('$') {
            Form::Length {
                remaining: n.parse().map_err(|_| {
                    ReplError::Protocol(format!("{}: bad snapshot length in {line:?}", conn.addr))
                })?,
            }
        } else if let Some(e) = line.strip_prefix('-') {
            return Err(ReplError::Refused {
                addr: conn.addr.clone(),
                command: "the snapshot".into(),
                message: e.into(),
            });
        } else {
            return Err(ReplError::Protocol(format!(
                "{}: expected the snapshot, got {:?}",
                conn.addr,
                line.chars().take(60).collect::<String>()
            )));
        };
        Ok(RdbTransfer {
            conn,
            form,
            crc: Box::new(Crc64::new()),
            received: 0,
            head: Vec::with_capacity(9),
            tail: [0; TRAILER_LEN],
            done: false,
        })
    }

    /// The size announced by a disk-based sync; None for the diskless form.
    pub fn announced_size(&self) -> Option<u64> {
        match self.form {
            Form::Length { remaining } => Some(remaining + self.received),
            Form::Marker { .. } => None,
        }
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The RDB version from the header (once its first 9 bytes arrived).
    pub fn rdb_version(&self) -> Option<u32> {
        std::str::from_utf8(self.head.get(5..9)?).ok()?.parse().ok()
    }

    /// The next piece of the RDB; None at its end, once the trailer checked out.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ReplError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let piece = match &mut self.form {
                Form::Length { remaining } => {
                    if *remaining == 0 {
                        return self.finish().map(|_| None);
                    }
                    if self.conn.buf.is_empty() && self.conn.fill("the snapshot").await? == 0 {
                        return Err(self.closed());
                    }
                    let n = (*remaining).min(self.conn.buf.len() as u64) as usize;
                    *remaining -= n as u64;
                    // Hold back nothing: the trailer is the last 8 bytes, known by count.
                    self.conn.buf.split_to(n).freeze()
                }
                Form::Marker { mark } => {
                    if let Some(at) = memchr::memmem::find(&self.conn.buf, mark) {
                        let data = self.conn.buf.split_to(at).freeze();
                        self.conn.buf.advance(MARK_LEN);
                        self.form = Form::Length { remaining: 0 };
                        if data.is_empty() {
                            continue;
                        }
                        data
                    } else if self.conn.buf.len() > MARK_LEN {
                        // Keep the last bytes: they may be the start of the mark.
                        let n = self.conn.buf.len() - MARK_LEN;
                        self.conn.buf.split_to(n).freeze()
                    } else {
                        if self.conn.fill("the snapshot").await? == 0 {
                            return Err(self.closed());
                        }
                        continue;
                    }
                }
            };
            self.account(&piece);
            return Ok(Some(piece));
        }
    }

    fn account(&mut self, piece: &[u8]) {
        if self.head.len() < 9 {
            let n = (9 - self.head.len()).min(piece.len());
            self.head.extend_from_slice(&piece[..n]);
        }
        // CRC over everything but the last 8 bytes: feed what falls out of the
        // 8-byte tail window.
        let total = self.received + piece.len() as u64;
        if piece.len() >= TRAILER_LEN {
            let held = self.received.min(TRAILER_LEN as u64) as usize;
            self.crc.update(&self.tail[TRAILER_LEN - held..]);
            self.crc.update(&piece[..piece.len() - TRAILER_LEN]);
            self.tail
                .copy_from_slice(&piece[piece.len() - TRAILER_LEN..]);
        } else {
            let mut window = Vec::with_capacity(TRAILER_LEN * 2);
            let held = self.received.min(TRAILER_LEN as u64) as usize;
            window.extend_from_slice(&self.tail[TRAILER_LEN - held..]);
            window.extend_from_slice(piece);
            let keep = window.len().min(TRAILER_LEN);
            self.crc.update(&window[..window.len() - keep]);
            self.tail = [0; TRAILER_LEN];
            self.tail[TRAILER_LEN - keep..].copy_from_slice(&window[window.len() - keep..]);
        }
        self.received = total;
    }

    fn finish(&mut self) -> Result<(), ReplError> {
        self.done = true;
        let addr = self.conn.addr.clone();
        if self.head.len() < 9 || &self.head[..5] != b"REDIS" {
            return Err(ReplError::Protocol(format!(
                "{addr}: the snapshot does not start with the RDB magic"
            )));
        }
        // The version must be a number: an unreadable one would skip the check.
        let Some(version) = self.rdb_version() else {
            return Err(ReplError::Protocol(format!(
                "{addr}: the snapshot's RDB version {:?} is not a number",
                String::from_utf8_lossy(&self.head[5..])
            )));
        };
        // RDB 5 and later end with a CRC64 (little-endian); 0 means checksums are off.
        if version >= 5 {
            let expected = u64::from_le_bytes(self.tail);
            let actual = self.crc.value();
            if expected != 0 && expected != actual {
                return Err(ReplError::BadCrc {
                    addr,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    fn closed(&self) -> ReplError {
        ReplError::Closed {
            addr: self.conn.addr.clone(),
            during: format!("the snapshot (after {} bytes)", self.received),
        }
    }

    /// The connection, after the snapshot: the command stream follows on it.
    pub fn into_conn(self) -> Conn {
        self.conn
    }
}
