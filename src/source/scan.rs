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

async fn plan(conn: &mut Conn) -> Result<Plan, SourceError> {
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
    Ok(Plan {
        version,
        replid,
        offset,
        dbs,
        absolute_expiry: major >= 7,
        functions,
    })
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
        let plan = plan(&mut ctl).await?;
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
        };
        let (tx, rx) = mpsc::channel(8);
        let limit = self.max_keys_per_sec;
        tokio::spawn(async move {
            let result = produce(ctl, workers, plan, rdb_version, limit, &tx).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::new(ScanSnapshot {
            info,
            rx,
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

type Piece = Result<Bytes, SourceError>;

/// Writes the RDB: header, functions, then each database's keys, batch by
/// batch as the workers return them (at most one batch per worker in
/// flight, so memory stays at a few batches).
async fn produce(
    mut ctl: Conn,
    workers: Vec<Conn>,
    plan: Plan,
    rdb_version: u32,
    limit: Option<u32>,
    tx: &mpsc::Sender<Piece>,
) -> Result<(), SourceError> {
    let redis_ver = plan
        .version
        .as_ref()
        .map(|v| v.redis.clone())
        .unwrap_or_default();
    let (mut w, mut out) = RdbWriter::new(
        rdb_version,
        &[("redis-ver", &redis_ver), ("redvault-source", "scan")],
    );
    if let Some(f) = &plan.functions {
        RdbWriter::functions(&mut out, f)
            .map_err(|e| refused(&ctl, "FUNCTION DUMP", e.to_string()))?;
    }
    let mut idle: Vec<(Conn, Option<u64>)> = workers.into_iter().map(|c| (c, None)).collect();
    let mut running: JoinSet<Result<Batch, SourceError>> = JoinSet::new();
    let mut pace = Pace::new(limit);
    for &db in &plan.dbs {
        // Every batch of the previous database is in before this SELECTDB.
        while let Some(done) = running.join_next().await {
            let b = joined(done)?;
            out.extend_from_slice(&b.bytes);
            idle.push((b.conn, Some(b.db)));
        }
        RdbWriter::select_db(&mut out, db);
        select(&mut ctl, db).await?;
        let mut cursor = b"0".to_vec();
        loop {
            let (next, keys) = scan(&mut ctl, &cursor).await?;
            if !keys.is_empty() {
                pace.take(keys.len()).await;
                if idle.is_empty() {
                    let b = joined(running.join_next().await.expect("a batch runs"))?;
                    out.extend_from_slice(&b.bytes);
                    idle.push((b.conn, Some(b.db)));
                }
                let (conn, at) = idle.pop().expect("an idle connection");
                let enc = w.encoder();
                let absolute = plan.absolute_expiry;
                running.spawn(async move { dump_batch(conn, at, db, keys, absolute, enc).await });
            }
            if out.len() >= 256 << 10 {
                w.account(&out);
                if tx
                    .send(Ok(Bytes::from(std::mem::take(&mut out))))
                    .await
                    .is_err()
                {
                    return Ok(()); // the reader went away
                }
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    while let Some(done) = running.join_next().await {
        out.extend_from_slice(&joined(done)?.bytes);
    }
    w.finish(&mut out);
    let _ = tx.send(Ok(Bytes::from(out))).await;
    Ok(())
}

fn joined(
    r: Result<Result<Batch, SourceError>, tokio::task::JoinError>,
) -> Result<Batch, SourceError> {
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

/// One batch's entries, encoded, and the connection back.
struct Batch {
    conn: Conn,
    db: u64,
    bytes: Vec<u8>,
}

/// DUMP and the expiry of every key, pipelined on one connection. A key
/// gone since SCAN (DUMP answers nil) is skipped: it is not in the data set
/// any more.
async fn dump_batch(
    mut conn: Conn,
    at: Option<u64>,
    db: u64,
    keys: Vec<Vec<u8>>,
    absolute: bool,
    enc: EntryEncoder,
) -> Result<Batch, SourceError> {
    let mut req = vec![];
    if at != Some(db) {
        crate::resp::encode_into(&mut req, &[b"SELECT".as_slice(), db.to_string().as_bytes()]);
    }
    let ttl_cmd: &[u8] = if absolute { b"PEXPIRETIME" } else { b"PTTL" };
    for k in &keys {
        crate::resp::encode_into(&mut req, &[b"DUMP".as_slice(), k]);
        crate::resp::encode_into(&mut req, &[ttl_cmd, k.as_slice()]);
    }
    conn.write_raw(&req).await?;
    if at != Some(db) {
        if let Reply::Error(e) = conn.read_reply("SELECT").await? {
            return Err(refused(&conn, "SELECT", e));
        }
    }
    let mut bytes = vec![];
    for k in &keys {
        let dump = conn.read_reply("DUMP").await?;
        let ttl = conn.read_reply("the key's expiry").await?;
        let payload = match dump {
            Reply::Bulk(Some(p)) => p,
            Reply::Bulk(None) => continue,
            Reply::Error(e) => return Err(refused(&conn, "DUMP", e)),
            other => return Err(refused(&conn, "DUMP", format!("{other:?}"))),
        };
        let expire_ms = match ttl {
            Reply::Integer(t) if t >= 0 && absolute => Some(t),
            Reply::Integer(t) if t >= 0 => Some(crate::text::now_ms() as i64 + t),
            Reply::Integer(_) => None,
            Reply::Error(e) => {
                return Err(refused(&conn, std::str::from_utf8(ttl_cmd).unwrap(), e))
            }
            other => {
                return Err(refused(
                    &conn,
                    std::str::from_utf8(ttl_cmd).unwrap(),
                    format!("{other:?}"),
                ))
            }
        };
        enc.entry(&mut bytes, k, expire_ms, &payload).map_err(|e| {
            refused(
                &conn,
                "DUMP",
                format!("key {}: {e}", crate::target::show_key(k)),
            )
        })?;
    }
    Ok(Batch { conn, db, bytes })
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

struct ScanSnapshot {
    info: SnapshotInfo,
    rx: mpsc::Receiver<Piece>,
    received: u64,
    rdb_version: u32,
}

#[async_trait]
impl Snapshot for ScanSnapshot {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, SourceError> {
        match self.rx.recv().await {
            Some(Ok(b)) => {
                self.received += b.len() as u64;
                Ok(Some(b))
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
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
