//! The replication client: connects to Redis as a replica does (AUTH, REPLCONF,
//! PSYNC), receives the RDB snapshot as a byte stream (length-prefixed or diskless
//! EOF-marker form), and checks the RDB's own CRC64 trailer.

//!
//! This is the protocol; `crate::source::PsyncSource` puts it behind the
//! `Source` seam that export and the daemon use.

mod command_stream;
mod rdb_transfer;

pub use command_stream::{AckSender, CommandStream};
pub use rdb_transfer::RdbTransfer;

use crate::resp::{Conn, ConnectOptions, RedisError as ReplError, RedisUrl, Reply};

/// A connection that has authenticated and can start a sync.
pub struct ReplicaLink {
    conn: Conn,
    user: String,
}

/// How the primary answered PSYNC.
pub enum PsyncReply {
    /// `+CONTINUE [new replid]`: the command stream goes on from the offset asked.
    Continue { replid: String, conn: Conn },
    /// `+FULLRESYNC`: a new snapshot, then the stream from its offset.
    Full(FullSyncInfo, RdbTransfer),
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
    pub async fn connect(url: &RedisUrl, opts: &ConnectOptions) -> Result<Self, ReplError> {
        Ok(ReplicaLink {
            conn: crate::resp::connect(url, opts).await?,
            user: url.user.clone().unwrap_or_else(|| "user default".into()),
        })
    }

    /// The server's version from INFO, if the user may run INFO.
    pub async fn server_version(&mut self) -> Option<String> {
        crate::resp::redis_version(&mut self.conn).await
    }

    /// Whether the server is a Redis Cluster node (None: the user may ask
    /// neither INFO nor CLUSTER).
    pub async fn cluster_mode(&mut self) -> Option<bool> {
        crate::resp::cluster_mode(&mut self.conn).await
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
    pub async fn full_sync(self, rdb_only: bool) -> Result<(FullSyncInfo, RdbTransfer), ReplError> {
        match self.sync(None, rdb_only).await? {
            PsyncReply::Full(info, transfer) => Ok((info, transfer)),
            PsyncReply::Continue { .. } => Err(ReplError::Protocol(
                "the primary answered CONTINUE to PSYNC ? -1".into(),
            )),
        }
    }

    /// `PSYNC <replid> <offset>`: carry on from `offset` (the first byte not yet
    /// held) if the primary's backlog still has it, else a full sync.
    pub async fn resume(self, replid: &str, offset: u64) -> Result<PsyncReply, ReplError> {
        self.sync(Some((replid, offset)), false).await
    }

    async fn sync(
        mut self,
        from: Option<(&str, u64)>,
        rdb_only: bool,
    ) -> Result<PsyncReply, ReplError> {
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
        let (replid_arg, offset_arg) = match from {
            Some((r, o)) => (r.to_string(), o.to_string()),
            None => ("?".to_string(), "-1".to_string()),
        };
        let line = match self
            .handshake_command(&[b"PSYNC", replid_arg.as_bytes(), offset_arg.as_bytes()])
            .await?
        {
            Reply::Status(s) => s,
            Reply::Error(m) => return Err(refused("PSYNC", m)),
            _ => {
                return Err(ReplError::Protocol(format!(
                    "{addr}: unexpected reply to PSYNC"
                )))
            }
        };
        let mut parts = line.split_whitespace();
        let bad_replid = |r: &str| {
            ReplError::Protocol(format!(
                "{addr}: the primary's replication id {:?} is not 40 hex digits",
                r.chars().take(60).collect::<String>()
            ))
        };
        match (parts.next(), parts.next(), parts.next()) {
            (Some("CONTINUE"), Some(r), None) if !is_replid(r) => Err(bad_replid(r)),
            (Some("FULLRESYNC"), Some(r), Some(_)) if !is_replid(r) => Err(bad_replid(r)),
            (Some("CONTINUE"), new_replid, None) => {
                let replid = new_replid
                    .map(str::to_string)
                    .or_else(|| from.map(|(r, _)| r.to_string()))
                    .unwrap_or_default();
                Ok(PsyncReply::Continue {
                    replid,
                    conn: self.conn,
                })
            }
            (Some("FULLRESYNC"), Some(replid), Some(offset)) => {
                let info = FullSyncInfo {
                    replid: replid.to_string(),
                    offset: offset.parse().map_err(|_| {
                        ReplError::Protocol(format!("{addr}: bad offset in {line}"))
                    })?,
                    rdb_only: rdb_only_accepted,
                };
                let transfer = RdbTransfer::start(self.conn).await?;
                Ok(PsyncReply::Full(info, transfer))
            }
            _ => Err(ReplError::Protocol(format!(
                "{addr}: unexpected reply to PSYNC: {line}"
            ))),
        }
    }
}

/// A replication id as Redis makes them: 40 hex digits. It becomes part of
/// object names, so nothing else is taken.
pub fn is_replid(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
