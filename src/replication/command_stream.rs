//! The command stream after the snapshot: the primary's writes as RESP arrays,
//! each with the replication offset after it, and the ACKs a replica sends. What
//! offset to acknowledge is the caller's choice (the daemon acknowledges only what
//! storage holds, so WAIT on the primary means "durable").

use crate::command::Command;
use crate::resp::{Conn, ConnWriter, RedisError as ReplError, Reply};

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

    /// The next command, stamped with its offset and the time it arrived;
    /// None when the primary closes the link.
    pub async fn next(&mut self) -> Result<Option<Command>, ReplError> {
        let before = self.conn.consumed;
        let reply = match self.conn.read_reply("the command stream").await {
            Ok(r) => r,
            // Closed between commands is the end; inside one, an error.
            Err(ReplError::Closed { .. }) if self.conn.consumed == before => return Ok(None),
            Err(e) => return Err(e),
        };
        let Reply::Array(items) = reply else {
            return Err(ReplError::Protocol(format!(
                "{}: unexpected {reply:?} in the command stream",
                self.conn.addr
            )));
        };
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Reply::Bulk(Some(a)) => args.push(a),
                _ => {
                    return Err(ReplError::Protocol(format!(
                        "{}: a command argument is not a bulk string",
                        self.conn.addr
                    )))
                }
            }
        }
        self.offset += self.conn.consumed - before;
        Ok(Some(Command {
            args,
            offset: self.offset,
            time_ms: crate::text::now_ms(),
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
