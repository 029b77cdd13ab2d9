//! The command stream after the snapshot: the primary's writes as RESP arrays,
//! each with the replication offset after it, and the ACKs a replica sends. What
//! offset to acknowledge is the caller's choice (the daemon acknowledges only what
//! storage holds, so WAIT on the primary means "durable").

use super::{Conn, ReplError, Reply};
use crate::resp::ConnWriter;

/// One command of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplCommand {
    pub args: Vec<Vec<u8>>,
    /// The replication offset just after this command.
    pub offset: u64,
}

impl ReplCommand {
    /// `REPLCONF GETACK *`: the primary asks for an ACK.
    pub fn is_getack(&self) -> bool {
        self.args.len() >= 2
            && self.args[0].eq_ignore_ascii_case(b"REPLCONF")
            && self.args[1].eq_ignore_ascii_case(b"GETACK")
    }
}

pub struct CommandStream {
    conn: Conn,
    offset: u64,
}

impl CommandStream {
    /// `offset` is the one FULLRESYNC (or CONTINUE) announced.
    pub fn new(conn: Conn, offset: u64) -> Self {
        CommandStream { conn, offset }
    }

    /// The replication offset of everything received so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next command; None when the primary closes the link.
    pub async fn next(&mut self) -> Result<Option<ReplCommand>, ReplError> {
        let addr = self.conn.addr.clone();
        let line = match self.conn.read_line("the command stream").await {
            Ok(l) => l,
            Err(ReplError::Closed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let n: usize = line
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                ReplError::Protocol(format!("{addr}: unexpected {line:?} in the command stream"))
            })?;
        let mut consumed = line.len() as u64 + 2;
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            match self.conn.read_reply("the command stream").await? {
                Reply::Bulk(Some(a)) => {
                    consumed += format!("${}\r\n", a.len()).len() as u64 + a.len() as u64 + 2;
                    args.push(a);
                }
                _ => {
                    return Err(ReplError::Protocol(format!(
                        "{addr}: a command argument is not a bulk string"
                    )))
                }
            }
        }
        self.offset += consumed;
        Ok(Some(ReplCommand {
            args,
            offset: self.offset,
        }))
    }

    /// A reader for one task and an ACK sender for another: ACKs must go out
    /// while the reader waits for the next command.
    pub fn split(self) -> (CommandStream, AckSender) {
        let (r, w) = self.conn.split();
        (
            CommandStream {
                conn: r,
                offset: self.offset,
            },
            AckSender { w },
        )
    }

    /// `REPLCONF ACK <offset>`: tells the primary what this replica holds.
    pub async fn ack(&mut self, offset: u64) -> Result<(), ReplError> {
        self.conn
            .send(&[b"REPLCONF", b"ACK", offset.to_string().as_bytes()])
            .await
    }
}

/// Sends `REPLCONF ACK` on a split command stream.
pub struct AckSender {
    w: ConnWriter,
}

impl AckSender {
    pub async fn ack(&mut self, offset: u64) -> Result<(), ReplError> {
        self.w
            .send(&[b"REPLCONF", b"ACK", offset.to_string().as_bytes()])
            .await
    }
}
