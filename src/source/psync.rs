//! The replication link as a `Source`: redvault connects as a replica
//! (REPLCONF, PSYNC), receives the RDB and then the command stream.

use super::{
    Acker, CommandFeed, CommandReader, Resumed, Snapshot, SnapshotInfo, Source, SourceError,
};
use crate::command::Command;
use crate::replication::{AckSender, CommandStream, PsyncReply, RdbTransfer, ReplicaLink};
use crate::resp::{ConnectOptions, RedisUrl};
use async_trait::async_trait;
use bytes::Bytes;

/// A Redis primary (or replica) reached with PSYNC.
pub struct PsyncSource {
    url: RedisUrl,
    opts: ConnectOptions,
    /// One primary of a cluster, backed up as one shard of a cluster
    /// generation; else a cluster node is refused.
    shard: bool,
}

impl PsyncSource {
    pub fn new(url: RedisUrl, opts: ConnectOptions) -> Self {
        PsyncSource {
            url,
            opts,
            shard: false,
        }
    }

    /// A cluster primary, as one shard of a cluster export.
    pub fn shard(url: RedisUrl, opts: ConnectOptions) -> Self {
        PsyncSource {
            url,
            opts,
            shard: true,
        }
    }
}

#[async_trait]
impl Source for PsyncSource {
    fn describe(&self) -> String {
        format!("Redis at {}", self.url.addr())
    }

    async fn snapshot(&self, then_stream: bool) -> Result<Box<dyn Snapshot>, SourceError> {
        let mut link = ReplicaLink::connect(&self.url, &self.opts).await?;
        // A node's snapshot holds only its own slots: refused, never a
        // backup that looks whole.
        let cluster = if self.shard {
            Some(false)
        } else {
            link.cluster_mode().await
        };
        let Some(cluster) = cluster else {
            return Err(SourceError::Unsupported(format!(
                "Redis at {}: cannot tell whether it is a Redis Cluster node (this user may run neither INFO nor CLUSTER MYID), and a node's snapshot would hold only its own slots; grant +info (`redvault acl print --role backup`)",
                self.url.addr()
            )));
        };
        if cluster {
            return Err(SourceError::ClusterNode(format!(
                "Redis at {} is a Redis Cluster node: its snapshot holds only its own slots, so a backup of it would be partial; give any node as --redis to `export` or `daemon`, which back up every primary",
                self.url.addr()
            )));
        }
        let server_version = link.server_version().await;
        let (info, transfer) = link.full_sync(!then_stream).await?;
        Ok(Box::new(PsyncSnapshot {
            info: SnapshotInfo {
                replid: info.replid,
                offset: info.offset,
                rdb_only: info.rdb_only,
                server_version,
                method: super::Method::Psync,
                rdb_checked: true,
            },
            transfer,
        }))
    }

    async fn resume(&self, replid: &str, held: u64) -> Result<Resumed, SourceError> {
        let link = ReplicaLink::connect(&self.url, &self.opts).await?;
        Ok(match link.resume(replid, held + 1).await? {
            PsyncReply::Continue { replid, conn } => Resumed::Stream {
                replid,
                feed: feed(CommandStream::new(conn, held)),
            },
            PsyncReply::Full(info, _) => Resumed::NeedSnapshot {
                replid: info.replid,
            },
        })
    }
}

struct PsyncSnapshot {
    info: SnapshotInfo,
    transfer: RdbTransfer,
}

#[async_trait]
impl Snapshot for PsyncSnapshot {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, SourceError> {
        Ok(self.transfer.next().await?)
    }

    fn received(&self) -> u64 {
        self.transfer.received()
    }

    fn announced_size(&self) -> Option<u64> {
        self.transfer.announced_size()
    }

    fn rdb_version(&self) -> Option<u32> {
        self.transfer.rdb_version()
    }

    fn into_stream(self: Box<Self>) -> CommandFeed {
        feed(CommandStream::new(
            self.transfer.into_conn(),
            self.info.offset,
        ))
    }
}

fn feed(stream: CommandStream) -> CommandFeed {
    let (reader, acker) = stream.split();
    CommandFeed {
        reader: Box::new(Reader(reader)),
        acker: Box::new(Ack(acker)),
    }
}

struct Reader(CommandStream);

#[async_trait]
impl CommandReader for Reader {
    async fn next(&mut self) -> Result<Option<Command>, SourceError> {
        Ok(self.0.next().await?)
    }
}

struct Ack(AckSender);

#[async_trait]
impl Acker for Ack {
    async fn ack(&mut self, offset: u64) -> Result<(), SourceError> {
        Ok(self.0.ack(offset).await?)
    }
}
