//! Where restored data goes: entries of a snapshot, then commands of the
//! stream, into a Redis. [`RedisTarget`] is the one implementation: the RESTORE
//! loader (`restore.rs`) and point-in-time replay (`replay.rs`) over one
//! pipelined writer (`pipeline.rs`) on a few connections. `load.rs` drives a
//! target from RDB inputs (scanner thread -> entries).
//!
//! A cluster target (slot-routed over standalone ones) or the replication feed
//! implements the same trait and gets the target suite (`tests/target_suite.rs`).

mod cluster;
mod cluster_replay;
mod filter;
mod load;
mod older;
mod pipeline;
mod replay;
mod restore;
mod split;

pub use cluster::{hash_tag, key_slot, ClusterTarget};
pub use filter::{glob_match, type_name, Filter, TYPE_NAMES};
pub use load::{import, load, LoadInputError};
pub use restore::RedisTarget;

/// The target at `url`: a [`ClusterTarget`] when it is a Redis Cluster node
/// (keys routed by slot to every primary), else a [`RedisTarget`]. A dry run
/// connects to nothing.
pub async fn connect(
    url: &crate::resp::RedisUrl,
    link: &crate::resp::ConnectOptions,
    opts: LoadOptions,
) -> Result<Box<dyn Target>, TargetError> {
    if !opts.dry_run {
        let mut conn = crate::resp::connect(url, link).await?;
        if crate::resp::is_cluster_node(&mut conn).await {
            let t = ClusterTarget::connect(url, link, opts).await?;
            tracing::info!(
                "{} is a Redis Cluster node: keys go to the primary of their slot ({} primaries)",
                url.addr(),
                t.primaries()
            );
            return Ok(Box::new(t));
        }
    }
    Ok(Box::new(RedisTarget::connect(url, link, opts).await?))
}

/// Empties the target of keys (FLUSHALL) and function libraries (FUNCTION
/// FLUSH, from 7.0), on every primary for a cluster: what was there must not
/// mix with what is loaded, and a library left would stop the load.
pub async fn flush_all(
    url: &crate::resp::RedisUrl,
    link: &crate::resp::ConnectOptions,
) -> Result<(), TargetError> {
    let mut conn = crate::resp::connect(url, link).await?;
    let urls = if crate::resp::is_cluster_node(&mut conn).await {
        cluster::primary_urls(&mut conn, url).await?
    } else {
        vec![url.clone()]
    };
    for u in urls {
        let mut c = crate::resp::connect(&u, link).await?;
        if let crate::resp::Reply::Error(message) = c.command(&[b"FLUSHALL"]).await? {
            return Err(TargetError::Flush {
                addr: u.addr(),
                command: "FLUSHALL",
                message,
            });
        }
        match c.command(&[b"FUNCTION", b"FLUSH"]).await? {
            // Before 7.0 there are no functions to flush.
            crate::resp::Reply::Error(m) if m.to_ascii_lowercase().contains("unknown command") => {}
            crate::resp::Reply::Error(message) => {
                return Err(TargetError::Flush {
                    addr: u.addr(),
                    command: "FUNCTION FLUSH",
                    message,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

use crate::command::Command;
use crate::rdb::Entry;
use crate::resp::RedisError;
use async_trait::async_trait;

/// Where entries and commands go.
///
/// Contract: `begin` before each snapshot's entries; entries may land in any
/// order; `apply` commands land in the order given, after every entry pushed
/// before them; nothing is retried (the first refusal stops the load and is
/// returned, naming the key or the offset); `finish` waits for every reply.
#[async_trait]
pub trait Target: Send {
    /// A snapshot of this RDB version follows; refused (before any key is
    /// sent) if the target cannot read it.
    fn begin(&mut self, rdb_version: u32) -> Result<(), TargetError>;

    /// One key of the snapshot (filters, expiry and conflicts apply).
    async fn push(&mut self, e: Entry) -> Result<(), TargetError>;

    /// One function library of the snapshot (its code).
    async fn push_function(&mut self, code: Vec<u8>) -> Result<(), TargetError>;

    /// One command of the stream (a write to replay).
    async fn apply(&mut self, cmd: &Command) -> Result<(), TargetError>;

    /// The counts so far.
    fn stats(&self) -> &LoadStats;

    /// Waits until the target has applied everything sent so far (its
    /// state may then be read, e.g. a drill's key counts); more may follow.
    async fn barrier(&mut self) -> Result<(), TargetError>;

    /// Deletes every key whose hash slot is in `slots` from the database
    /// the replayed stream has selected (every database, with `all_dbs`),
    /// after everything sent before it has landed: a cluster shard's
    /// FLUSHDB or FLUSHALL (at `offset` of its stream), which emptied only
    /// that shard's slots, replayed into a target that holds other shards'
    /// keys too. The count deleted.
    async fn delete_slots(
        &mut self,
        slots: &[[u16; 2]],
        all_dbs: bool,
        offset: u64,
    ) -> Result<u64, TargetError>;

    /// Sends what is batched and waits for every reply; the final counts.
    async fn finish(&mut self) -> Result<LoadStats, TargetError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Stop at the first key that exists in the target, and name it.
    Fail,
    Replace,
    /// Leave existing keys, count them.
    Skip,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub connections: usize,
    /// Commands per batch on one connection.
    pub pipeline: usize,
    /// Bytes per batch on one connection (commands in flight are bounded by
    /// connections x 2 batches).
    pub batch_bytes: usize,
    pub conflict: Conflict,
    pub filter: Filter,
    pub target_db: Option<u64>,
    pub dry_run: bool,
    /// The largest bulk string the target accepts (proto-max-bulk-len).
    pub max_bulk: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            connections: 4,
            pipeline: 512,
            batch_bytes: 4 << 20,
            conflict: Conflict::Fail,
            filter: Filter::default(),
            target_db: None,
            dry_run: false,
            max_bulk: 512 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadStats {
    /// Function libraries restored (FUNCTION RESTORE).
    pub functions: u64,
    pub seen: u64,
    pub loaded: u64,
    pub skipped_existing: u64,
    pub expired: u64,
    pub filtered: u64,
    pub bytes: u64,
    /// Commands of the stream applied.
    pub commands: u64,
    /// The older RDB version values were converted to, for the target.
    pub converted_to: Option<u32>,
    /// Keys whose values were converted.
    pub converted: u64,
    /// Keys too large for one RESTORE, sent as commands.
    pub split: u64,
    /// What the target cannot hold, by what it is (hash field TTLs, ...).
    pub lost: crate::rdb::Lost,
}

impl LoadStats {
    /// A restore's counts: the base's as loaded, with what `finish` (after
    /// the replay) settled: keys landed, skipped, libraries, and what the
    /// target cannot hold, from the base and the segments.
    pub fn settled(self, done: LoadStats) -> LoadStats {
        LoadStats {
            loaded: done.loaded,
            skipped_existing: done.skipped_existing,
            functions: done.functions,
            lost: done.lost,
            ..self
        }
    }

    /// For a summary: what conversion and splitting did, or "" when neither ran.
    pub fn notes(&self) -> String {
        let mut s = String::new();
        if self.split > 0 {
            s += &format!(
                "; {} keys over the target's proto-max-bulk-len sent as commands",
                self.split
            );
        }
        if let Some(to) = self.converted_to {
            s += &format!("; {} keys converted for RDB {to}", self.converted);
        }
        if !self.lost.is_empty() {
            s += &format!(
                "; left out, as the target cannot hold them: {}",
                crate::rdb::describe_lost(&self.lost)
            );
        }
        s
    }
}

/// For a NOPERM refusal: the `acl print` role whose user has the permission.
fn perm_hint(message: &str, role: &str) -> String {
    if message.starts_with("NOPERM") {
        format!("; `redvault acl print --role {role}` prints a user that has it")
    } else {
        String::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Connect(#[from] RedisError),
    #[error("key {key} already exists in db {db} of the target; use --replace, --skip-existing or --flush")]
    KeyExists { key: String, db: u64 },
    #[error(
        "the target refused key {key} (db {db}): {message}{}",
        perm_hint(message, "import")
    )]
    Refused {
        key: String,
        db: u64,
        message: String,
    },
    #[error(
        "the target refused function library {library}: {message}{}",
        perm_hint(message, "import")
    )]
    Function { library: String, message: String },
    #[error(
        "the target refused the command at offset {offset}: {message}{}",
        perm_hint(message, "restore")
    )]
    Command { offset: u64, message: String },
    #[error("key {key} (db {db}) cannot be converted for the target: {message}")]
    Convert {
        key: String,
        db: u64,
        message: String,
    },
    #[error(
        "the target at {addr} refused {command}: {message}{}",
        perm_hint(message, "import")
    )]
    Flush {
        addr: String,
        command: &'static str,
        message: String,
    },
    /// What a cluster target cannot do, or a cluster in no state to load.
    #[error("{0}")]
    Cluster(String),
    #[error("a loader connection ended unexpectedly: {0}")]
    Worker(String),
    /// The replication feed's stream to the target failed.
    #[error("{0}")]
    Feed(String),
    #[error(
        "the target refused SELECT {db}: {message}{}",
        perm_hint(message, "import")
    )]
    Select { db: u64, message: String },
    #[error("key {key} (db {db}) is {size} bytes as one RESTORE, over the target's proto-max-bulk-len of {max}, and cannot be sent as commands: {why}")]
    TooLarge {
        key: String,
        db: u64,
        size: u64,
        max: u64,
        why: String,
    },
    #[error("the snapshot is RDB version {source_version} (written by {needs} or newer); the target, {target}, reads up to RDB {target_max}: restore into {needs} or newer (redvault converts for servers down to Redis 5.0, RDB 9)")]
    TargetTooOld {
        source_version: u32,
        /// The oldest server that reads it.
        needs: &'static str,
        target: String,
        target_max: u32,
    },
}

/// A key name for messages: printable, binary bytes escaped.
pub fn show_key(k: &[u8]) -> String {
    k.escape_ascii().to_string()
}

pub use crate::rdb::{max_rdb_for, min_server_for};
