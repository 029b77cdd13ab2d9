//! The loader: RESTORE commands built from the scanner's raw value bytes,
//! pipelined in batches over several connections, every reply checked. Keys
//! already expired are skipped and counted; conflicts follow the chosen policy.
//! Any other error stops the load and is named, with the counts so far.

pub mod filter;
mod pipeline;
pub mod sources;

pub use pipeline::{import, ImportError};

pub use filter::{glob_match, type_name, Filter, TYPE_NAMES};

use crate::rdb::{restore_payload, Entry};
use crate::replication::{LinkOptions, ReplError};
use crate::resp::{Conn, RedisUrl, Reply};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Connect(#[from] ReplError),
    #[error("key {key} already exists in db {db} of the target; use --replace, --skip-existing or --flush")]
    KeyExists { key: String, db: u64 },
    #[error("the target refused key {key} (db {db}): {message}")]
    Refused {
        key: String,
        db: u64,
        message: String,
    },
    #[error("the target refused function library {library}: {message}")]
    Function { library: String, message: String },
    #[error("a loader connection ended unexpectedly: {0}")]
    Worker(String),
    #[error("the target refused SELECT {db}: {message}")]
    Select { db: u64, message: String },
    #[error("key {key} (db {db}) is {size} bytes as one RESTORE, over the target's proto-max-bulk-len of {max}")]
    TooLarge {
        key: String,
        db: u64,
        size: u64,
        max: u64,
    },
    #[error("the RDB is version {source_version}; the target (Redis {target}) reads up to RDB {target_max}: loading into an older Redis is not supported yet")]
    TargetTooOld {
        source_version: u32,
        target: String,
        target_max: u32,
    },
}

/// A key name for messages: printable, binary bytes escaped.
pub fn show_key(k: &[u8]) -> String {
    k.escape_ascii().to_string()
}

/// The newest RDB version a Redis version reads (for RESTORE payloads).
pub fn max_rdb_for(redis_version: &str) -> u32 {
    let mut it = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    match (major, minor) {
        (m, _) if m >= 8 => 12,
        (7, n) if n >= 4 => 12,
        (7, n) if n >= 2 => 11,
        (7, _) => 10,
        (5 | 6, _) => 9,
        (4, _) => 8,
        (3, n) if n >= 2 => 7,
        (2, n) if n >= 6 => 6,
        _ => 5,
    }
}

enum Expect {
    /// A re-AUTH with a fresh token on a long-lived connection.
    Auth {
        user: String,
    },
    Select(u64),
    Function {
        library: String,
    },
    Restore {
        key: Vec<u8>,
        db: u64,
    },
}

#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    expect: Vec<Expect>,
}

#[derive(Default)]
struct WorkerStats {
    loaded: u64,
    skipped: u64,
    functions: u64,
}

pub struct Loader {
    opts: LoadOptions,
    senders: Vec<mpsc::Sender<Batch>>,
    workers: Vec<JoinHandle<Result<WorkerStats, LoadError>>>,
    batches: Vec<Batch>,
    conn_db: Vec<u64>,
    next: usize,
    stats: LoadStats,
    payload_version: u16,
    /// The target's Redis version, if INFO told it.
    target: Option<String>,
    /// Fetched credentials (Entra ID tokens) and, per connection, the Unix time
    /// after which it must AUTH again before its token expires.
    auth: Option<std::sync::Arc<dyn crate::resp::RedisAuth>>,
    reauth_due: Vec<i64>,
}

/// Re-AUTH this long before a token expires (the token cache refreshes it 300 s
/// before; this leaves a minute of margin after that).
const REAUTH_MARGIN_SECS: i64 = 240;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn reauth_due(expires_on: Option<i64>) -> i64 {
    expires_on.map_or(i64::MAX, |t| t - REAUTH_MARGIN_SECS)
}

impl Loader {
    /// Connects `connections` times (none for a dry run).
    pub async fn start(
        url: &RedisUrl,
        link: &LinkOptions,
        opts: LoadOptions,
    ) -> Result<Self, LoadError> {
        let n = if opts.dry_run {
            0
        } else {
            opts.connections.max(1)
        };
        let mut senders = vec![];
        let mut workers = vec![];
        let mut target = None;
        let mut max_bulk = opts.max_bulk;
        let due = match (&link.auth, n) {
            (Some(a), 1..) => reauth_due(
                a.credentials()
                    .await
                    .map_err(|message| {
                        LoadError::Connect(ReplError::Auth {
                            addr: url.addr(),
                            user: None,
                            message,
                        })
                    })?
                    .expires_on,
            ),
            _ => i64::MAX,
        };
        for i in 0..n {
            let mut conn = crate::resp::connect(url, link).await?;
            if i == 0 {
                target = crate::resp::redis_version(&mut conn).await;
                if let Some(max) = proto_max_bulk_len(&mut conn).await {
                    max_bulk = max;
                }
            }
            let (tx, rx) = mpsc::channel(2);
            senders.push(tx);
            workers.push(tokio::spawn(worker(conn, rx, opts.conflict)));
        }
        let opts = LoadOptions { max_bulk, ..opts };
        Ok(Loader {
            batches: (0..n).map(|_| Batch::default()).collect(),
            conn_db: vec![0; n],
            opts,
            senders,
            workers,
            next: 0,
            stats: LoadStats::default(),
            payload_version: 0,
            target,
            auth: link.auth.clone(),
            reauth_due: vec![due; n],
        })
    }

    /// Before each source: the target must read its RDB version, which becomes
    /// the version of the RESTORE payloads. Checked before any key is sent.
    pub fn begin_source(&mut self, rdb_version: u32) -> Result<(), LoadError> {
        if let Some(v) = &self.target {
            let max = max_rdb_for(v);
            if rdb_version > max {
                return Err(LoadError::TargetTooOld {
                    source_version: rdb_version,
                    target: v.clone(),
                    target_max: max,
                });
            }
        }
        self.payload_version = rdb_version as u16;
        Ok(())
    }

    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }

    pub async fn push(&mut self, e: Entry) -> Result<(), LoadError> {
        self.stats.seen += 1;
        if !self.opts.filter.accepts(&e) {
            self.stats.filtered += 1;
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if e.expire_ms.is_some_and(|t| t <= now) {
            self.stats.expired += 1;
            return Ok(());
        }
        let db = self.opts.target_db.unwrap_or(e.db);
        let payload = restore_payload(&e.raw, self.payload_version);
        if payload.len() as u64 > self.opts.max_bulk {
            return Err(LoadError::TooLarge {
                key: show_key(&e.key),
                db,
                size: payload.len() as u64,
                max: self.opts.max_bulk,
            });
        }
        self.stats.bytes += payload.len() as u64;
        if self.opts.dry_run {
            self.stats.loaded += 1;
            return Ok(());
        }
        let c = self.next;
        if self.conn_db[c] != db {
            let b = &mut self.batches[c];
            put_command(&mut b.buf, &[b"SELECT", db.to_string().as_bytes()]);
            b.expect.push(Expect::Select(db));
            self.conn_db[c] = db;
        }
        let ttl = e
            .expire_ms
            .map(|t| t.to_string())
            .unwrap_or_else(|| "0".into());
        let mut args: Vec<&[u8]> = vec![b"RESTORE", &e.key, ttl.as_bytes(), &payload];
        if e.expire_ms.is_some() {
            args.push(b"ABSTTL");
        }
        if self.opts.conflict == Conflict::Replace {
            args.push(b"REPLACE");
        }
        let b = &mut self.batches[c];
        put_command(&mut b.buf, &args);
        b.expect.push(Expect::Restore { key: e.key, db });
        if b.expect.len() >= self.opts.pipeline || b.buf.len() >= self.opts.batch_bytes {
            self.flush_batch(c).await?;
            self.next = (c + 1) % self.senders.len();
        }
        Ok(())
    }

    /// A function library (its code, as FUNCTION2 stores it): FUNCTION RESTORE,
    /// with the conflict policy (REPLACE; or APPEND, where an existing library
    /// fails, or is counted as skipped).
    pub async fn push_function(&mut self, code: Vec<u8>) -> Result<(), LoadError> {
        let library = library_name(&code);
        if self.opts.dry_run {
            self.stats.functions += 1;
            return Ok(());
        }
        let mut payload = vec![0xF5];
        put_rdb_len(&mut payload, code.len() as u64);
        payload.extend_from_slice(&code);
        // Functions exist from RDB 10 (Redis 7.0) on.
        let payload = restore_payload(&payload, self.payload_version.max(10));
        let policy: &[u8] = if self.opts.conflict == Conflict::Replace {
            b"REPLACE"
        } else {
            b"APPEND"
        };
        let b = &mut self.batches[0];
        put_command(&mut b.buf, &[b"FUNCTION", b"RESTORE", &payload, policy]);
        b.expect.push(Expect::Function { library });
        Ok(())
    }

    async fn flush_batch(&mut self, c: usize) -> Result<(), LoadError> {
        let mut batch = std::mem::take(&mut self.batches[c]);
        if batch.expect.is_empty() {
            return Ok(());
        }
        if let Some(auth) = self
            .auth
            .as_ref()
            .filter(|_| unix_now() >= self.reauth_due[c])
        {
            // The token is about to expire: AUTH again ahead of this batch.
            let creds = auth.credentials().await.map_err(LoadError::Worker)?;
            let mut buf = Vec::with_capacity(batch.buf.len() + 64);
            put_command(
                &mut buf,
                &[b"AUTH", creds.user.as_bytes(), creds.password.as_bytes()],
            );
            buf.extend_from_slice(&batch.buf);
            batch.buf = buf;
            batch.expect.insert(
                0,
                Expect::Auth {
                    user: creds.user.clone(),
                },
            );
            self.reauth_due[c] = reauth_due(creds.expires_on).max(unix_now() + 30);
        }
        if self.senders[c].send(batch).await.is_err() {
            // The worker stopped on an error: collect it.
            return Err(self.fail().await);
        }
        Ok(())
    }

    /// The first worker error, after stopping all of them.
    async fn fail(&mut self) -> LoadError {
        self.senders.clear();
        let mut first = None;
        for w in self.workers.drain(..) {
            if let Ok(Err(e)) = w.await {
                first.get_or_insert(e);
            }
        }
        first.unwrap_or_else(|| LoadError::Worker("no error was reported".into()))
    }

    /// Sends what is batched, waits for every reply, and returns the counts.
    pub async fn finish(mut self) -> Result<LoadStats, LoadError> {
        for c in 0..self.senders.len() {
            self.flush_batch(c).await?;
        }
        self.senders.clear();
        let mut first_err = None;
        for w in self.workers.drain(..) {
            match w.await {
                Ok(Ok(s)) => {
                    self.stats.skipped_existing += s.skipped;
                    self.stats.loaded += s.loaded;
                    self.stats.functions += s.functions;
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(LoadError::Worker(e.to_string()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(self.stats),
        }
    }
}

/// The target's proto-max-bulk-len, if CONFIG GET is allowed.
async fn proto_max_bulk_len(conn: &mut Conn) -> Option<u64> {
    conn.send(&[b"CONFIG", b"GET", b"proto-max-bulk-len"])
        .await
        .ok()?;
    let first = conn.read_line("the reply to CONFIG GET").await.ok()?;
    let n: usize = first.strip_prefix('*')?.parse().ok()?;
    let mut items = vec![];
    for _ in 0..n {
        if let Reply::Bulk(Some(b)) = conn.read_reply("the reply to CONFIG GET").await.ok()? {
            items.push(b);
        }
    }
    std::str::from_utf8(items.get(1)?).ok()?.parse().ok()
}

/// The library name from a `#!lua name=NAME` first line.
fn library_name(code: &[u8]) -> String {
    let first = code.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(first)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("name=").map(String::from))
        .unwrap_or_else(|| "(unnamed)".into())
}

/// An RDB length (6, 14, 32 or 64 bits).
fn put_rdb_len(buf: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        buf.push(n as u8);
    } else if n < 1 << 14 {
        buf.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u32::MAX as u64 {
        buf.push(0x80);
        buf.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        buf.push(0x81);
        buf.extend_from_slice(&n.to_be_bytes());
    }
}

fn put_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// One connection: writes a batch, then reads and checks its replies.
async fn worker(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Batch>,
    conflict: Conflict,
) -> Result<WorkerStats, LoadError> {
    let mut stats = WorkerStats::default();
    while let Some(batch) = rx.recv().await {
        conn.write_raw(&batch.buf).await?;
        for exp in batch.expect {
            let reply = conn.read_reply("the reply to RESTORE").await?;
            match (exp, reply) {
                (Expect::Auth { .. }, Reply::Status(_)) => {}
                (Expect::Auth { user }, reply) => {
                    return Err(LoadError::Connect(ReplError::Auth {
                        addr: conn.addr.clone(),
                        user: Some(user),
                        message: match reply {
                            Reply::Error(m) => m,
                            _ => "unexpected reply".into(),
                        },
                    }))
                }
                (Expect::Select(_), Reply::Status(_)) => {}
                (Expect::Function { .. }, Reply::Status(_)) => stats.functions += 1,
                (Expect::Function { .. }, Reply::Error(m))
                    if conflict == Conflict::Skip && m.contains("already exists") =>
                {
                    stats.skipped += 1
                }
                (Expect::Function { library }, Reply::Error(message)) => {
                    return Err(LoadError::Function { library, message })
                }
                (Expect::Function { library }, _) => {
                    return Err(LoadError::Function {
                        library,
                        message: "unexpected reply".into(),
                    })
                }
                (Expect::Select(db), Reply::Error(message)) => {
                    return Err(LoadError::Select { db, message })
                }
                (Expect::Restore { .. }, Reply::Status(_)) => stats.loaded += 1,
                (Expect::Restore { key, db }, Reply::Error(m)) if m.starts_with("BUSYKEY") => {
                    if conflict == Conflict::Skip {
                        stats.skipped += 1;
                    } else {
                        return Err(LoadError::KeyExists {
                            key: show_key(&key),
                            db,
                        });
                    }
                }
                (Expect::Restore { key, db }, Reply::Error(message)) => {
                    return Err(LoadError::Refused {
                        key: show_key(&key),
                        db,
                        message,
                    })
                }
                (Expect::Select(db), _) => {
                    return Err(LoadError::Select {
                        db,
                        message: "unexpected reply".into(),
                    })
                }
                (Expect::Restore { key, db }, _) => {
                    return Err(LoadError::Refused {
                        key: show_key(&key),
                        db,
                        message: "unexpected reply".into(),
                    })
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::max_rdb_for;

    #[test]
    fn rdb_versions_each_redis_reads() {
        for (v, max) in [
            ("2.4.17", 5),
            ("2.8.24", 6),
            ("3.2.12", 7),
            ("4.0.14", 8),
            ("5.0.14", 9),
            ("6.2.14", 9),
            ("7.0.15", 10),
            ("7.2.5", 11),
            ("7.4.1", 12),
            ("8.0.2", 12),
        ] {
            assert_eq!(max_rdb_for(v), max, "{v}");
        }
    }
}
