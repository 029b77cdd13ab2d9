//! A source for servers that refuse PSYNC (managed services): every key read
//! with SCAN, DUMP and its expiry, pipelined over several connections, and
//! written as a standard RDB, so export, import and verify take it like any
//! other snapshot. It is not point-in-time: keys changed during the scan may
//! be from different moments (the manifest says so). There is no command
//! stream after it.

use super::{CommandFeed, Snapshot, SnapshotInfo, Source, SourceError};
use crate::rdb::{max_rdb_for, EntryEncoder, RdbWriter};
use crate::resp::{Conn, ConnectOptions, RedisError, RedisUrl, Reply, ServerVersion};
use async_trait::async_trait;
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Keys asked per SCAN (and per pipelined batch of DUMPs).
const SCAN_COUNT: &str = "1000";

pub struct ScanSource {
    url: RedisUrl,
    opts: ConnectOptions,
    /// Connections that DUMP in parallel (besides the one that scans).
    connections: usize,
    /// Keys read per second at most (each is a DUMP and an expiry query).
    max_keys_per_sec: Option<u32>,
    /// One primary of a cluster, read as a shard of a cluster export: its
    /// own slots are what is wanted.
    shard: bool,
}

impl ScanSource {
    pub fn new(
        url: RedisUrl,
        opts: ConnectOptions,
        connections: usize,
        max_keys_per_sec: Option<u32>,
    ) -> Self {
        ScanSource {
            url,
            opts,
            connections: connections.max(1),
            max_keys_per_sec,
            shard: false,
        }
    }

    /// The same source, reading one primary of a cluster as its shard.
    pub fn shard(self) -> Self {
        ScanSource {
            shard: true,
            ..self
        }
    }
}

/// What the scan needs to know of the server first.
struct Plan {
    version: Option<ServerVersion>,
    replid: String,
    offset: u64,
    /// Databases holding keys (INFO keyspace).
    dbs: Vec<u64>,
    /// PEXPIRETIME exists (7.0): expiries read as absolute times.
    absolute_expiry: bool,
    functions: Option<Vec<u8>>,
    /// Server clock minus ours (ms), from TIME: PTTL is relative to it.
    clock_offset_ms: i64,
}

fn refused(conn: &Conn, command: &str, message: String) -> SourceError {
    let message = if message.starts_with("NOPERM") {
        format!("{message}; `redvault acl print --role scan` prints a user that has what a SCAN backup needs")
    } else {
        message
    };
    SourceError::Redis(RedisError::Refused {
        addr: conn.addr.clone(),
        command: command.into(),
        message,
    })
}

async fn info(conn: &mut Conn, section: &str) -> Result<String, SourceError> {
    match conn.command(&[b"INFO", section.as_bytes()]).await? {
        Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Reply::Error(e) => Err(refused(conn, "INFO", e)),
        other => Err(refused(conn, "INFO", format!("{other:?}"))),
    }
}

async fn plan(conn: &mut Conn, shard: bool) -> Result<Plan, SourceError> {
    let server = info(conn, "server").await?;
    let version = ServerVersion::from_info(&server);
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let repl = info(conn, "replication").await.unwrap_or_default();
    // A replication id names the dataset's history; a managed server that
    // hides it still has a run id (both 40 hex).
    let replid = field(&repl, "master_replid:")
        .or_else(|| field(&server, "run_id:"))
        .filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            refused(
                conn,
                "INFO",
                "neither master_replid nor run_id is in INFO: the source cannot be named".into(),
            )
        })?;
    let offset = field(&repl, "master_repl_offset:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let keyspace = info(conn, "keyspace").await?;
    let dbs = keyspace
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect();
    let major = version
        .as_ref()
        .and_then(|v| v.redis.split('.').next()?.parse::<u32>().ok())
        .unwrap_or(0);
    let functions = if major >= 7 {
        match conn.command(&[b"FUNCTION", b"DUMP"]).await? {
            Reply::Bulk(Some(p)) => Some(p),
            Reply::Bulk(None) => None,
            Reply::Error(e) => return Err(refused(conn, "FUNCTION DUMP", e)),
            other => return Err(refused(conn, "FUNCTION DUMP", format!("{other:?}"))),
        }
    } else {
        None
    };
    // A node's keys are only its own slots': refused, never a backup that
    // looks whole (export and the daemon then read every primary).
    let cluster = info(conn, "cluster").await.unwrap_or_default();
    if !shard && field(&cluster, "cluster_enabled:").as_deref() == Some("1") {
        return Err(SourceError::ClusterNode(format!(
            "Redis at {} is a Redis Cluster node: SCAN reads only its own slots, so a backup of it would be partial; give any node as --redis to `export` or `daemon`, which back up every primary",
            conn.addr
        )));
    }
    if let Ok(Reply::Array(mods)) = conn.command(&[b"MODULE", b"LIST"]).await {
        if !mods.is_empty() {
            tracing::warn!(
                "Redis at {} has modules loaded: module values are in the snapshot, but data modules keep outside keys (such as search index definitions) is not",
                conn.addr
            );
        }
    }
    let clock_offset_ms = if major >= 7 {
        0
    } else {
        server_clock_offset(conn).await?
    };
    Ok(Plan {
        version,
        replid,
        offset,
        dbs,
        absolute_expiry: major >= 7,
        functions,
        clock_offset_ms,
    })
}

/// The server's clock minus ours, in ms (TIME answers seconds and
/// microseconds), measured at the middle of the round trip.
async fn server_clock_offset(conn: &mut Conn) -> Result<i64, SourceError> {
    let before = crate::text::now_ms() as i64;
    let reply = conn.command(&[b"TIME"]).await?;
    let after = crate::text::now_ms() as i64;
    let parts = match reply {
        Reply::Array(p) if p.len() == 2 => p,
        Reply::Error(e) => return Err(refused(conn, "TIME", e)),
        other => return Err(refused(conn, "TIME", format!("{other:?}"))),
    };
    let num = |r: &Reply| {
        r.as_bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<i64>().ok())
    };
    match (num(&parts[0]), num(&parts[1])) {
        (Some(s), Some(us)) => Ok(s * 1000 + us / 1000 - (before + after) / 2),
        _ => Err(refused(conn, "TIME", "a malformed answer".into())),
    }
}

#[async_trait]
impl Source for ScanSource {
    fn describe(&self) -> String {
        format!("Redis at {} (SCAN)", self.url.addr())
    }

    async fn snapshot(&self, then_stream: bool) -> Result<Box<dyn Snapshot>, SourceError> {
        if then_stream {
            return Err(SourceError::Unsupported(format!(
                "{}: a SCAN source has no command stream to follow",
                self.describe()
            )));
        }
        let mut ctl = crate::resp::connect(&self.url, &self.opts).await?;
        let plan = plan(&mut ctl, self.shard).await?;
        let mut workers = vec![];
        for _ in 0..self.connections {
            workers.push(crate::resp::connect(&self.url, &self.opts).await?);
        }
        let rdb_version = plan
            .version
            .as_ref()
            .map(|v| max_rdb_for(&v.redis))
            .unwrap_or(9);
        let info = SnapshotInfo {
            replid: plan.replid.clone(),
            offset: plan.offset,
            rdb_only: true,
            server_version: plan.version.as_ref().map(|v| v.redis.clone()),
            method: super::Method::Scan,
            rdb_checked: false,
        };
        let redis_ver = plan
            .version
            .as_ref()
            .map(|v| v.redis.clone())
            .unwrap_or_default();
        let (writer, header) = RdbWriter::new(
            rdb_version,
            &[("redis-ver", &redis_ver), ("redvault-source", "scan")],
        );
        let (tx, rx) = mpsc::channel(PIECES);
        let limit = self.max_keys_per_sec;
        let enc = writer.encoder();
        tokio::spawn(async move {
            let result = produce(ctl, workers, plan, header, enc, limit, &tx).await;
            let _ = tx.send(result.map(|()| Piece::End)).await;
        });
        Ok(Box::new(ScanSnapshot {
            info,
            rx,
            writer: Some(writer),
            received: 0,
            rdb_version,
        }))
    }

    async fn resume(&self, _replid: &str, _held: u64) -> Result<super::Resumed, SourceError> {
        Err(SourceError::Unsupported(format!(
            "{}: a SCAN source has no command stream to resume",
            self.describe()
        )))
    }
}

/// What the writing tasks send the snapshot's reader, in file order: bytes
/// (whole entries), then the end (the reader adds the EOF and checksum).
enum Piece {
    Data(Vec<u8>),
    End,
}

type Sent = Result<Piece, SourceError>;

/// Pieces in the channel at most, each up to `PIECE_BYTES` plus one value.
const PIECES: usize = 8;
const PIECE_BYTES: usize = 256 << 10;
/// Keys whose DUMP a worker asks before reading the answers: the primary
/// holds at most this many values in its output buffer for us.
const WINDOW: usize = 64;

/// Sends the header, the functions, then each database: its SELECTDB, then
/// its keys, batch by batch on the workers, which send their entries
/// themselves (in pieces of about `PIECE_BYTES`). Every batch of a database
/// has sent all it has before the next SELECTDB goes, so entries stay under
/// their database; within it, order does not matter.
async fn produce(
    mut ctl: Conn,
    workers: Vec<Conn>,
    plan: Plan,
    header: Vec<u8>,
    enc: EntryEncoder,
    limit: Option<u32>,
    tx: &mpsc::Sender<Sent>,
) -> Result<(), SourceError> {
    let mut out = header;
    if let Some(f) = &plan.functions {
        RdbWriter::functions(&mut out, f)
            .map_err(|e| refused(&ctl, "FUNCTION DUMP", e.to_string()))?;
    }
    let mut idle: Vec<(Conn, Option<u64>)> = workers.into_iter().map(|c| (c, None)).collect();
    let mut running: JoinSet<Result<(Conn, u64), SourceError>> = JoinSet::new();
    let mut pace = Pace::new(limit);
    let mut seen = Seen::default();
    for &db in &plan.dbs {
        seen.clear();
        // Every batch of the previous database has sent its entries.
        while let Some(done) = running.join_next().await {
            let (conn, at) = joined(done)?;
            idle.push((conn, Some(at)));
        }
        RdbWriter::select_db(&mut out, db);
        if tx
            .send(Ok(Piece::Data(std::mem::take(&mut out))))
            .await
            .is_err()
        {
            return Ok(()); // the reader went away
        }
        select(&mut ctl, db).await?;
        let mut cursor = b"0".to_vec();
        loop {
            if tx.is_closed() {
                return Ok(());
            }
            let (next, mut keys) = scan(&mut ctl, &cursor).await?;
            keys.retain(|k| seen.first_time(k));
            if !keys.is_empty() {
                pace.take(keys.len()).await;
                if idle.is_empty() {
                    let (conn, at) = joined(running.join_next().await.expect("a batch runs"))?;
                    idle.push((conn, Some(at)));
                }
                let (conn, at) = idle.pop().expect("an idle connection");
                let batch = Batch {
                    db,
                    keys,
                    absolute: plan.absolute_expiry,
                    clock_offset_ms: plan.clock_offset_ms,
                    enc,
                };
                let tx = tx.clone();
                running.spawn(async move { dump_batch(conn, at, batch, &tx).await });
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    while let Some(done) = running.join_next().await {
        joined(done)?;
    }
    if !out.is_empty() {
        let _ = tx.send(Ok(Piece::Data(out))).await;
    }
    Ok(())
}

fn joined(
    r: Result<Result<(Conn, u64), SourceError>, tokio::task::JoinError>,
) -> Result<(Conn, u64), SourceError> {
    r.map_err(|e| SourceError::Unsupported(format!("a DUMP worker ended: {e}")))?
}

async fn select(conn: &mut Conn, db: u64) -> Result<(), SourceError> {
    match conn
        .command(&[b"SELECT", db.to_string().as_bytes()])
        .await?
    {
        Reply::Status(_) => Ok(()),
        Reply::Error(e) => Err(refused(conn, "SELECT", e)),
        other => Err(refused(conn, "SELECT", format!("{other:?}"))),
    }
}

async fn scan(conn: &mut Conn, cursor: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), SourceError> {
    match conn
        .command(&[b"SCAN", cursor, b"COUNT", SCAN_COUNT.as_bytes()])
        .await?
    {
        Reply::Array(mut parts) if parts.len() == 2 => {
            let keys = match parts.pop() {
                Some(Reply::Array(k)) => k
                    .into_iter()
                    .filter_map(|r| match r {
                        Reply::Bulk(Some(b)) => Some(b),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            };
            let next = match parts.pop() {
                Some(Reply::Bulk(Some(c))) => c,
                _ => return Err(refused(conn, "SCAN", "a malformed cursor".into())),
            };
            Ok((next, keys))
        }
        Reply::Error(e) => Err(refused(conn, "SCAN", e)),
        other => Err(refused(conn, "SCAN", format!("{other:?}"))),
    }
}

/// One SCAN page to DUMP, and how.
struct Batch {
    db: u64,
    keys: Vec<Vec<u8>>,
    /// PEXPIRETIME (absolute) rather than PTTL.
    absolute: bool,
    clock_offset_ms: i64,
    enc: EntryEncoder,
}

/// DUMP and the expiry of every key, pipelined on one connection in windows
/// of `WINDOW` keys, the entries sent on as they fill pieces; returns the
/// connection and the database it has selected. A key gone since SCAN (DUMP
/// answers nil) is skipped: it is not in the data set any more.
async fn dump_batch(
    mut conn: Conn,
    at: Option<u64>,
    b: Batch,
    tx: &mpsc::Sender<Sent>,
) -> Result<(Conn, u64), SourceError> {
    if at != Some(b.db) {
        select(&mut conn, b.db).await?;
    }
    let ttl_cmd: &[u8] = if b.absolute { b"PEXPIRETIME" } else { b"PTTL" };
    let ttl_name = std::str::from_utf8(ttl_cmd).expect("ascii");
    let mut bytes = vec![];
    for window in b.keys.chunks(WINDOW) {
        let mut req = vec![];
        for k in window {
            crate::resp::encode_into(&mut req, &[b"DUMP".as_slice(), k]);
            crate::resp::encode_into(&mut req, &[ttl_cmd, k.as_slice()]);
        }
        // The moment the TTLs are counted from, on the server's clock (PTTL,
        // before 7.0); taken before sending, so expiries are never late.
        let sent_ms = crate::text::now_ms() as i64 + b.clock_offset_ms;
        conn.write_raw(&req).await?;
        for k in window {
            let dump = conn.read_reply("DUMP").await?;
            let ttl = conn.read_reply("the key's expiry").await?;
            let payload = match dump {
                Reply::Bulk(Some(p)) => p,
                Reply::Bulk(None) => continue,
                Reply::Error(e) => return Err(refused(&conn, "DUMP", e)),
                other => return Err(refused(&conn, "DUMP", format!("{other:?}"))),
            };
            let expire_ms = match ttl {
                Reply::Integer(t) if t >= 0 && b.absolute => Some(t),
                Reply::Integer(t) if t >= 0 => Some(sent_ms + t),
                Reply::Integer(-1) => None,
                // Gone between DUMP and the expiry query (it expired): not in
                // the data set any more, and never written without its expiry.
                Reply::Integer(_) => continue,
                Reply::Error(e) => return Err(refused(&conn, ttl_name, e)),
                other => return Err(refused(&conn, ttl_name, format!("{other:?}"))),
            };
            b.enc
                .entry(&mut bytes, k, expire_ms, &payload)
                .map_err(|e| {
                    refused(
                        &conn,
                        "DUMP",
                        format!("key {}: {e}", crate::target::show_key(k)),
                    )
                })?;
            if bytes.len() >= PIECE_BYTES
                && tx
                    .send(Ok(Piece::Data(std::mem::take(&mut bytes))))
                    .await
                    .is_err()
            {
                return Ok((conn, b.db)); // the reader went away
            }
        }
    }
    if !bytes.is_empty() {
        let _ = tx.send(Ok(Piece::Data(bytes))).await;
    }
    Ok((conn, b.db))
}

/// The keys of one database already taken. SCAN may return a key more than
/// once (when the table is resized during the scan), and an RDB holding a
/// key twice is refused by Redis's own loader and by RESTORE: each key is
/// kept once. 128-bit keyed hashes, not the keys: about 32 bytes a key for
/// the largest database, the one memory cost that grows with the data.
#[derive(Default)]
struct Seen {
    hashes: std::collections::HashSet<u128>,
    a: std::collections::hash_map::RandomState,
    b: std::collections::hash_map::RandomState,
}

impl Seen {
    fn clear(&mut self) {
        self.hashes = Default::default();
    }

    fn first_time(&mut self, key: &[u8]) -> bool {
        use std::hash::BuildHasher;
        let h = (u128::from(self.a.hash_one(key)) << 64) | u128::from(self.b.hash_one(key));
        self.hashes.insert(h)
    }
}

/// At most `limit` keys a second, measured from the start.
struct Pace {
    limit: Option<u32>,
    started: Instant,
    taken: u64,
}

impl Pace {
    fn new(limit: Option<u32>) -> Self {
        Pace {
            limit,
            started: Instant::now(),
            taken: 0,
        }
    }

    async fn take(&mut self, n: usize) {
        let Some(limit) = self.limit.filter(|l| *l > 0) else {
            return;
        };
        self.taken += n as u64;
        let due = Duration::from_secs_f64(self.taken as f64 / f64::from(limit));
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The reader's side: pieces in the order they arrive are the file, so the
/// checksum is kept here; at the end the EOF opcode and checksum follow.
struct ScanSnapshot {
    info: SnapshotInfo,
    rx: mpsc::Receiver<Sent>,
    /// None once the trailer was given.
    writer: Option<RdbWriter>,
    received: u64,
    rdb_version: u32,
}

#[async_trait]
impl Snapshot for ScanSnapshot {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, SourceError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(None);
        };
        let piece = match self.rx.recv().await {
            Some(Ok(Piece::Data(b))) => {
                writer.account(&b);
                b
            }
            Some(Ok(Piece::End)) => {
                let mut trailer = vec![];
                self.writer.take().expect("a writer").finish(&mut trailer);
                trailer
            }
            Some(Err(e)) => return Err(e),
            // The writing task ended without its end: never a short file.
            None => {
                return Err(SourceError::Unsupported(
                    "the SCAN stopped before its end (its task ended)".into(),
                ))
            }
        };
        self.received += piece.len() as u64;
        Ok(Some(Bytes::from(piece)))
    }

    fn received(&self) -> u64 {
        self.received
    }

    fn announced_size(&self) -> Option<u64> {
        None
    }

    fn rdb_version(&self) -> Option<u32> {
        Some(self.rdb_version)
    }

    fn into_stream(self: Box<Self>) -> CommandFeed {
        unreachable!("a SCAN snapshot is taken without a stream")
    }
}
