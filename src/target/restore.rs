//! `RedisTarget`: a Redis reached on a few connections. Entries become
//! `RESTORE key ttl payload [ABSTTL] [REPLACE]` built from the scanner's raw
//! value bytes (which keeps every type exactly), spread round-robin over the
//! connections; keys already expired are skipped and counted; conflicts follow
//! the policy. Commands go through `replay.rs` on the same writer. Into a
//! server that reads an older RDB version, values of types it lacks are
//! converted first (`rdb::convert`), and what it cannot hold is counted.

use super::pipeline::{Expect, Pipeline};
use super::split;
use super::{
    max_rdb_for, min_server_for, show_key, Conflict, LoadOptions, LoadStats, Target, TargetError,
};
use crate::command::Command;
use crate::rdb::value::{decode, Value};
use crate::rdb::{
    add_lost, convert, needs_conversion, put_rdb_len, restore_payload, Entry, LOST_FUNCTIONS,
    MAX_RDB_VERSION, OLDEST_CONVERSION,
};
use crate::resp::{ConnectOptions, RedisError, RedisUrl, Reply};
use async_trait::async_trait;

pub struct RedisTarget {
    pub(super) opts: LoadOptions,
    pub(super) pipe: Pipeline,
    next: usize,
    pub(super) stats: LoadStats,
    payload_version: u16,
    /// The older RDB version values are converted to, if the target reads
    /// only that.
    convert_to: Option<u32>,
    /// The target's version, if INFO told it.
    pub(super) target: Option<crate::resp::ServerVersion>,
    /// Whether replay has started (entries before it have landed).
    pub(super) replaying: bool,
    /// Values split into commands so far (numbers their temporary keys).
    splits: u64,
    /// Where the target is, for a connection of its own (`delete_slots`).
    url: RedisUrl,
    link: ConnectOptions,
    /// A cluster node: a multi-key command names keys of one slot only.
    cluster_node: bool,
    /// The code of each library pushed in this load.
    libraries: std::collections::HashSet<Vec<u8>>,
}

impl RedisTarget {
    /// Connects `opts.connections` times (none for a dry run) and reads the
    /// target's version and proto-max-bulk-len.
    pub async fn connect(
        url: &RedisUrl,
        link: &ConnectOptions,
        opts: LoadOptions,
    ) -> Result<Self, TargetError> {
        Self::connect_node(url, link, opts, None).await
    }

    /// As `connect`, for a cluster node: RESTOREs answered MOVED or ASK go to
    /// `redirects` instead of failing.
    pub(super) async fn connect_node(
        url: &RedisUrl,
        link: &ConnectOptions,
        opts: LoadOptions,
        redirects: Option<super::pipeline::Redirects>,
    ) -> Result<Self, TargetError> {
        let n = if opts.dry_run {
            0
        } else {
            opts.connections.max(1)
        };
        let mut target = None;
        let mut max_bulk = opts.max_bulk;
        let expiry = match (&link.auth, n) {
            (Some(a), 1..) => {
                a.credentials()
                    .await
                    .map_err(|e| {
                        TargetError::Connect(RedisError::Auth {
                            addr: url.addr(),
                            user: None,
                            message: e.0,
                        })
                    })?
                    .expires_on
            }
            _ => None,
        };
        let mut conns = vec![];
        for i in 0..n {
            let mut conn = crate::resp::connect(url, link).await?;
            if i == 0 {
                target = crate::resp::server_version(&mut conn).await;
                if let Some(max) = crate::resp::config_get(&mut conn, "proto-max-bulk-len")
                    .await
                    .and_then(|v| v.parse().ok())
                {
                    max_bulk = max;
                }
            }
            conns.push(conn);
        }
        let cluster_node = redirects.is_some();
        let pipe = Pipeline::new(
            conns,
            opts.conflict,
            opts.pipeline,
            opts.batch_bytes,
            link.auth.clone(),
            expiry,
            redirects,
        );
        Ok(RedisTarget {
            opts: LoadOptions { max_bulk, ..opts },
            pipe,
            next: 0,
            stats: LoadStats::default(),
            payload_version: 0,
            convert_to: None,
            target,
            replaying: false,
            splits: 0,
            url: url.clone(),
            link: link.clone(),
            cluster_node,
            libraries: Default::default(),
        })
    }
}

impl RedisTarget {
    /// Whether the target keeps hash field TTLs (Redis 7.4 on).
    fn has_field_ttls(&self) -> bool {
        let reads = self.target.as_ref().map_or(12, |v| max_rdb_for(&v.redis));
        reads >= 12 && self.convert_to.is_none_or(|v| v >= 12)
    }

    /// A value over proto-max-bulk-len as one RESTORE: built with commands
    /// under a temporary key on one connection, then renamed onto its key
    /// (RENAME under --replace, else RENAMENX, and the temporary key deleted).
    async fn push_split(
        &mut self,
        e: &Entry,
        raw: &[u8],
        db: u64,
        size: u64,
        now: i64,
    ) -> Result<(), TargetError> {
        let max = self.opts.max_bulk;
        let too_large = |why: String| TargetError::TooLarge {
            key: show_key(&e.key),
            db,
            size,
            max,
            why,
        };
        let mut value = decode(raw).map_err(|w| too_large(w.to_string()))?;
        if let Value::Hash(fields) = &mut value {
            fields.retain(|(_, _, at)| at.is_none_or(|at| at > now));
            if fields.is_empty() {
                self.stats.expired += 1;
                return Ok(());
            }
        }
        let parts = split::plan(&value, max, self.has_field_ttls())
            .map_err(|w| too_large(w.to_string()))?;
        self.stats.split += 1;
        self.stats.bytes += size;
        if self.opts.dry_run {
            self.stats.loaded += 1;
            return Ok(());
        }
        let c = self.next;
        self.pipe.select(c, db);
        self.splits += 1;
        let tmp = split::temp_key(&e.key, self.splits);
        let part = || Expect::Part {
            key: e.key.clone(),
            db,
        };
        // What a run stopped half-way may have left under this name.
        self.pipe.queue(c, &[b"DEL", &tmp], part());
        for p in &parts {
            let args = split::args(&tmp, &value, p);
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
            if self.pipe.queue(c, &args, part()) {
                self.pipe.flush(c).await?;
            }
        }
        // Every part must have landed before the value takes its key: a part
        // refused stops the load here, and the rename is never sent.
        self.pipe.barrier().await?;
        let last = split::final_expiry(e.expire_ms);
        let args = split::args(&tmp, &value, &last);
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        self.pipe.queue(c, &args, part());
        let placed = Expect::Placed {
            key: e.key.clone(),
            db,
            expire_ms: e.expire_ms,
        };
        let full = if self.opts.conflict == Conflict::Replace {
            self.pipe.queue(c, &[b"RENAME", &tmp, &e.key], placed)
        } else {
            self.pipe.queue(c, &[b"RENAMENX", &tmp, &e.key], placed);
            self.pipe.queue(c, &[b"DEL", &tmp], part())
        };
        if full {
            self.pipe.flush(c).await?;
            self.next = (c + 1) % self.pipe.connections();
        }
        Ok(())
    }
}

#[async_trait]
impl Target for RedisTarget {
    async fn barrier(&mut self) -> Result<(), TargetError> {
        self.pipe.barrier().await
    }

    async fn delete_slots(
        &mut self,
        slots: &[[u16; 2]],
        all_dbs: bool,
        offset: u64,
    ) -> Result<u64, TargetError> {
        self.delete_slots_here(slots, all_dbs, offset).await
    }

    fn begin(&mut self, rdb_version: u32) -> Result<(), TargetError> {
        self.convert_to = None;
        self.payload_version = rdb_version as u16;
        if let Some(v) = &self.target {
            let max = max_rdb_for(&v.redis);
            if rdb_version > max && rdb_version <= MAX_RDB_VERSION && max >= OLDEST_CONVERSION {
                tracing::info!(
                    "the snapshot is RDB version {rdb_version}; {} reads up to RDB {max}: converting the values it lacks",
                    v.label
                );
                self.convert_to = Some(max);
                self.stats.converted_to = Some(max);
                self.payload_version = max as u16;
            } else if rdb_version > max {
                return Err(TargetError::TargetTooOld {
                    source_version: rdb_version,
                    needs: min_server_for(rdb_version),
                    target: v.label.clone(),
                    target_max: max,
                });
            }
        }
        Ok(())
    }

    async fn push(&mut self, e: Entry) -> Result<(), TargetError> {
        // Commands applied after this entry must wait for it again.
        self.replaying = false;
        self.stats.seen += 1;
        if !self.opts.filter.accepts(&e) {
            self.stats.filtered += 1;
            return Ok(());
        }
        let now = crate::text::now_ms() as i64;
        if e.expire_ms.is_some_and(|t| t <= now) {
            self.stats.expired += 1;
            return Ok(());
        }
        let db = self.opts.target_db.unwrap_or(e.db);
        let converted;
        let raw = match self.convert_to {
            Some(to) if needs_conversion(e.type_byte, to) => {
                let c = convert(&e.raw, to, now).map_err(|why| TargetError::Convert {
                    key: show_key(&e.key),
                    db,
                    message: why.to_string(),
                })?;
                let Some(c) = c else {
                    unreachable!("needs_conversion said so")
                };
                self.stats.converted += 1;
                add_lost(&mut self.stats.lost, &c.lost);
                match c.raw {
                    Some(raw) => {
                        converted = raw;
                        &converted
                    }
                    None => {
                        // Every field of the hash had expired.
                        self.stats.expired += 1;
                        return Ok(());
                    }
                }
            }
            _ => &e.raw,
        };
        let payload = restore_payload(raw, self.payload_version);
        if payload.len() as u64 > self.opts.max_bulk {
            let size = payload.len() as u64;
            drop(payload);
            return self.push_split(&e, raw, db, size, now).await;
        }
        self.stats.bytes += payload.len() as u64;
        if self.opts.dry_run {
            self.stats.loaded += 1;
            return Ok(());
        }
        let c = self.next;
        self.pipe.select(c, db);
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
        let full = self.pipe.queue(
            c,
            &args,
            Expect::Restore {
                key: e.key.clone(),
                db,
            },
        );
        if full {
            self.pipe.flush(c).await?;
            self.next = (c + 1) % self.pipe.connections();
        }
        Ok(())
    }

    /// A function library (its code, as FUNCTION2 stores it): FUNCTION RESTORE,
    /// with the conflict policy (REPLACE; or APPEND, where an existing library
    /// fails, or is counted as skipped).
    async fn push_function(&mut self, code: Vec<u8>) -> Result<(), TargetError> {
        self.replaying = false;
        let library = library_name(&code);
        // The same library in several inputs (every shard of a cluster
        // generation carries the primaries' libraries) is restored once.
        if !self.libraries.insert(code.clone()) {
            return Ok(());
        }
        // Functions exist from RDB 10 (Redis 7.0) on.
        if self.convert_to.is_some_and(|v| v < 10) {
            *self.stats.lost.entry(LOST_FUNCTIONS).or_insert(0) += 1;
            return Ok(());
        }
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
        self.pipe.queue(
            0,
            &[b"FUNCTION", b"RESTORE", &payload, policy],
            Expect::Function { library },
        );
        Ok(())
    }

    async fn apply(&mut self, cmd: &Command) -> Result<(), TargetError> {
        self.apply_command(cmd).await
    }

    fn stats(&self) -> &LoadStats {
        &self.stats
    }

    async fn finish(&mut self) -> Result<LoadStats, TargetError> {
        let r = self.pipe.finish().await?;
        self.stats.skipped_existing += r.skipped;
        self.stats.loaded += r.loaded;
        self.stats.functions += r.functions;
        self.stats.commands += r.commands;
        self.stats.expired += r.expired;
        Ok(self.stats.clone())
    }
}

impl RedisTarget {
    /// [`Target::delete_slots`]: once everything queued has landed, SCAN on
    /// a connection of its own, each batch's keys of those slots unlinked
    /// in one pipelined round (per slot on a cluster node). The cost is a
    /// SCAN of every key of the databases emptied.
    pub(super) async fn delete_slots_here(
        &mut self,
        slots: &[[u16; 2]],
        all_dbs: bool,
        offset: u64,
    ) -> Result<u64, TargetError> {
        if self.opts.dry_run {
            return Ok(0);
        }
        self.start_replay().await?;
        self.pipe.barrier().await?;
        let mut conn = crate::resp::connect(&self.url, &self.link).await?;
        let dbs = if all_dbs {
            keyspace_dbs(&mut conn, offset).await?
        } else {
            vec![self.pipe.db(0)]
        };
        let mut deleted = 0;
        for db in dbs {
            if let Reply::Error(message) = conn
                .command(&[b"SELECT", db.to_string().as_bytes()])
                .await?
            {
                return Err(TargetError::Select { db, message });
            }
            deleted += delete_in_db(&mut conn, slots, self.cluster_node, offset).await?;
        }
        Ok(deleted)
    }
}

/// The databases holding keys, from INFO keyspace (`db3:keys=...`).
async fn keyspace_dbs(conn: &mut crate::resp::Conn, offset: u64) -> Result<Vec<u64>, TargetError> {
    match conn.command(&[b"INFO", b"keyspace"]).await? {
        Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
            .collect()),
        other => Err(TargetError::Command {
            offset,
            message: format!("INFO keyspace answered {other:?}"),
        }),
    }
}

/// Unlinks the selected database's keys of `slots`; how many were there.
async fn delete_in_db(
    conn: &mut crate::resp::Conn,
    slots: &[[u16; 2]],
    cluster_node: bool,
    offset: u64,
) -> Result<u64, TargetError> {
    let refused = |message: String| TargetError::Command { offset, message };
    let wanted = |k: &[u8]| {
        let slot = super::key_slot(k) as u16;
        slots.iter().any(|r| r[0] <= slot && slot <= r[1])
    };
    let mut cursor = b"0".to_vec();
    let mut deleted = 0;
    loop {
        let (next, keys) = match conn.command(&[b"SCAN", &cursor, b"COUNT", b"1000"]).await? {
            Reply::Array(mut page) if page.len() == 2 => match (page.pop(), page.pop()) {
                (Some(Reply::Array(keys)), Some(Reply::Bulk(Some(next)))) => (next, keys),
                other => return Err(refused(format!("SCAN answered {other:?}"))),
            },
            Reply::Error(m) => return Err(refused(format!("SCAN: {m}"))),
            other => return Err(refused(format!("SCAN answered {other:?}"))),
        };
        // A cluster node takes a multi-key command over one slot only.
        let mut groups: std::collections::BTreeMap<usize, Vec<Vec<u8>>> = Default::default();
        for k in keys {
            if let Reply::Bulk(Some(k)) = k {
                if wanted(&k) {
                    let group = if cluster_node { super::key_slot(&k) } else { 0 };
                    groups.entry(group).or_default().push(k);
                }
            }
        }
        let mut batch = vec![];
        for keys in groups.values() {
            let mut args: Vec<&[u8]> = vec![b"UNLINK"];
            args.extend(keys.iter().map(Vec::as_slice));
            crate::resp::encode_into(&mut batch, &args);
        }
        if !batch.is_empty() {
            conn.write_raw(&batch).await?;
            for _ in 0..groups.len() {
                match conn.read_reply("UNLINK").await? {
                    Reply::Integer(n) => deleted += n.max(0) as u64,
                    Reply::Error(m) => return Err(refused(format!("UNLINK: {m}"))),
                    other => return Err(refused(format!("UNLINK answered {other:?}"))),
                }
            }
        }
        if next == b"0" {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// The library name from a `#!lua name=NAME` first line.
fn library_name(code: &[u8]) -> String {
    let first = code.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(first)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("name=").map(String::from))
        .unwrap_or_else(|| "(unnamed)".into())
}
