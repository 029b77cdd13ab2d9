//! Where a backup's data comes from: a snapshot (an RDB byte stream, with the
//! replication id and offset at which it was taken), then the command stream
//! from that offset. Export takes only the snapshot; the daemon takes both and
//! later resumes the stream after a restart.
//!
//! Implementations: [`PsyncSource`] (redvault as a replica, `replication/`),
//! [`ScanSource`] (SCAN and DUMP, for servers that refuse PSYNC; no stream),
//! [`AutoSource`] (PSYNC, else SCAN), and [`Reencoded`] (any source's
//! snapshots rewritten for an older RDB version). One per cluster shard would
//! implement the same traits and get export and the daemon for free.

mod auto;
mod psync;
mod reencode;
mod scan;

pub use auto::AutoSource;
pub use psync::PsyncSource;
pub use reencode::Reencoded;
pub use scan::ScanSource;

use crate::command::Command;
use crate::resp::RedisError;
use async_trait::async_trait;
use bytes::Bytes;

/// Why a source could not deliver; each message names the server.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// What this kind of source cannot do (a SCAN source has no stream).
    #[error("{0}")]
    Unsupported(String),
    /// The server is a Redis Cluster node: its snapshot would be one shard.
    #[error("{0}")]
    ClusterNode(String),
    /// The snapshot could not be rewritten for an older RDB version.
    #[error("{0}")]
    Rewrite(String),
}

/// What the server said when a snapshot started.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The replication id the snapshot and its stream belong to.
    pub replid: String,
    /// The replication offset of the snapshot: its stream starts just after it.
    pub offset: u64,
    /// The server agreed to send only the snapshot (no stream follows).
    pub rdb_only: bool,
    /// The server's version, if it told it.
    pub server_version: Option<String>,
    /// How it was taken: `Method::Scan` is not point-in-time.
    pub method: Method,
    /// The RDB's checksum was checked as it arrived (the replication transfer
    /// does); false where redvault wrote the RDB, so its reader checks it.
    pub rdb_checked: bool,
}

/// How a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The server's own RDB, at one replication offset.
    Psync,
    /// Key by key with SCAN and DUMP: keys changed during the scan may be
    /// from different moments.
    Scan,
}

/// A place to back up from.
///
/// Contract: nothing is retried here; a failed call leaves no server state
/// behind that a later call must undo (the caller retries with backoff).
#[async_trait]
pub trait Source: Send + Sync {
    /// Where it reads from, for messages (never a password).
    fn describe(&self) -> String;

    /// Starts a new snapshot. With `then_stream` the command stream follows
    /// the snapshot on the same link (`Snapshot::into_stream`); without, the
    /// caller wants only the snapshot and the source may tell the server so.
    async fn snapshot(&self, then_stream: bool) -> Result<Box<dyn Snapshot>, SourceError>;

    /// Continues the stream of `replid` after `held` (the offset of everything
    /// already kept). `Resumed::NeedSnapshot` when the server cannot (a
    /// failover, a restart, a backlog too short): the caller takes a new
    /// snapshot, which is a gap in point-in-time coverage.
    async fn resume(&self, replid: &str, held: u64) -> Result<Resumed, SourceError>;
}

/// A snapshot being received.
#[async_trait]
pub trait Snapshot: Send {
    fn info(&self) -> &SnapshotInfo;

    /// The next piece of RDB bytes; None at the end, once the RDB's own
    /// checksum checked out (a mismatch is an error, never a short snapshot).
    async fn next_piece(&mut self) -> Result<Option<Bytes>, SourceError>;

    /// RDB bytes delivered so far.
    fn received(&self) -> u64;

    /// The total size, if the server announced it.
    fn announced_size(&self) -> Option<u64>;

    /// The RDB version from its header, once the first bytes arrived.
    fn rdb_version(&self) -> Option<u32>;

    /// After the last piece: the command stream from `info().offset`.
    fn into_stream(self: Box<Self>) -> CommandFeed;
}

/// How `Source::resume` went.
pub enum Resumed {
    /// The stream goes on after the offset asked, under `replid` (which the
    /// server may have renamed).
    Stream { replid: String, feed: CommandFeed },
    /// The server cannot continue; `replid` is what it offered instead.
    NeedSnapshot { replid: String },
}

/// A command stream: a reader for one task and an acknowledger for another
/// (ACKs must go out while the reader waits).
pub struct CommandFeed {
    pub reader: Box<dyn CommandReader>,
    pub acker: Box<dyn Acker>,
}

/// Reads the command stream.
#[async_trait]
pub trait CommandReader: Send {
    /// The next command, with its offset and receive time; None when the
    /// server ends the stream.
    async fn next(&mut self) -> Result<Option<Command>, SourceError>;
}

/// Tells the source what is durable.
#[async_trait]
pub trait Acker: Send {
    /// Everything up to `offset` is kept (the daemon acknowledges only what
    /// storage holds, so WAIT on the primary means "durable").
    async fn ack(&mut self, offset: u64) -> Result<(), SourceError>;
}
