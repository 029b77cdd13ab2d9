//! The replication client: connects to Redis as a replica does (AUTH, REPLCONF,
//! PSYNC), receives the RDB snapshot as a byte stream (length-prefixed or diskless
//! EOF-marker form), and checks the RDB's own CRC64 trailer.

mod command_stream;
mod rdb_transfer;

pub use command_stream::{CommandStream, ReplCommand};

pub use crate::resp::{Conn, RedisUrl, Reply, Transport};
pub use rdb_transfer::RdbTransfer;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("cannot connect to Redis at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("Redis at {addr}: no answer within {secs} s while waiting for {waiting_for}")]
    Timeout {
        addr: String,
        secs: u64,
        waiting_for: String,
    },
    #[error("Redis at {addr}: connection error: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("Redis at {addr} closed the connection during {during}")]
    Closed { addr: String, during: String },
    #[error("Redis at {addr} refused authentication{}: {message}", user.as_ref().map(|u| format!(" for user {u}")).unwrap_or_default())]
    Auth {
        addr: String,
        user: Option<String>,
        message: String,
    },
    #[error("Redis at {addr}: {user} lacks the permission to run '{command}', which a replica needs ({message})")]
    NoPermission {
        addr: String,
        user: String,
        command: String,
        message: String,
    },
    #[error("Redis at {addr} refused {command}: {message}")]
    Refused {
        addr: String,
        command: String,
        message: String,
    },
    #[error("Redis at {addr}: the snapshot's CRC64 is {actual:016x}, its trailer says {expected:016x}: the RDB is corrupt")]
    BadCrc {
        addr: String,
        expected: u64,
        actual: u64,
    },
    #[error("{0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub connect_timeout: Duration,
    /// How long to wait for any byte before giving up (keepalives count).
    pub read_timeout: Duration,
    /// AUTH with fetched credentials (Entra ID) instead of the URL's password.
    pub auth: Option<std::sync::Arc<dyn crate::resp::RedisAuth>>,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            auth: None,
        }
    }
}

/// A connection that has authenticated and can start a sync.
pub struct ReplicaLink {
    conn: Conn,
    user: String,
}

/// What the primary said when a full sync started.
#[derive(Debug, Clone)]
pub struct FullSyncInfo {
    pub replid: String,
    pub offset: u64,
    /// The primary agreed to send only the RDB (Redis 7.0+ `REPLCONF rdb-only`).
    pub rdb_only: bool,
}

impl ReplicaLink {
    pub async fn connect(url: &RedisUrl, opts: &LinkOptions) -> Result<Self, ReplError> {
        Ok(ReplicaLink {
            conn: crate::resp::connect(url, opts).await?,
            user: url.user.clone().unwrap_or_else(|| "user default".into()),
        })
    }

    /// The server's version from INFO, if the user may run INFO.
    pub async fn server_version(&mut self) -> Option<String> {
        crate::resp::redis_version(&mut self.conn).await
    }

    /// A one-line command for the handshake; a NOPERM reply names the command.
    async fn handshake_command(&mut self, args: &[&[u8]]) -> Result<Reply, ReplError> {
        let reply = self.conn.command(args).await?;
        if let Reply::Error(message) = &reply {
            if message.starts_with("NOPERM") || message.contains("no permissions") {
                return Err(ReplError::NoPermission {
                    addr: self.conn.addr.clone(),
                    user: self.user.clone(),
                    command: String::from_utf8_lossy(args[0]).to_lowercase(),
                    message: message.clone(),
                });
            }
        }
        Ok(reply)
    }

    /// Asks for a full sync (`PSYNC ? -1`) and returns the snapshot transfer.
    /// With `rdb_only`, asks the primary (7.0+) to send only the RDB and no
    /// command stream; older servers send a full sync, and the caller stops after
    /// the RDB.
    pub async fn full_sync(
        mut self,
        rdb_only: bool,
    ) -> Result<(FullSyncInfo, RdbTransfer), ReplError> {
        let addr = self.conn.addr.clone();
        let refused = |command: &str, message: String| ReplError::Refused {
            addr: addr.clone(),
            command: command.into(),
            message,
        };
        if let Reply::Error(m) = self
            .handshake_command(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
            .await?
        {
            return Err(refused("REPLCONF capa", m));
        }
        let mut rdb_only_accepted = false;
        if rdb_only {
            // Older servers answer -ERR Unrecognized REPLCONF option: fine.
            rdb_only_accepted = matches!(
                self.handshake_command(&[b"REPLCONF", b"rdb-only", b"1"])
                    .await?,
                Reply::Status(_)
            );
        }
        let line = match self.handshake_command(&[b"PSYNC", b"?", b"-1"]).await? {
            Reply::Status(s) => s,
            Reply::Error(m) => return Err(refused("PSYNC", m)),
            _ => {
                return Err(ReplError::Protocol(format!(
                    "{addr}: unexpected reply to PSYNC"
                )))
            }
        };
        let mut parts = line.split_whitespace();
        let (Some("FULLRESYNC"), Some(replid), Some(offset)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(ReplError::Protocol(format!(
                "{addr}: unexpected reply to PSYNC: {line}"
            )));
        };
        let info = FullSyncInfo {
            replid: replid.to_string(),
            offset: offset
                .parse()
                .map_err(|_| ReplError::Protocol(format!("{addr}: bad offset in {line}")))?,
            rdb_only: rdb_only_accepted,
        };
        let transfer = RdbTransfer::start(self.conn).await?;
        Ok((info, transfer))
    }
}
