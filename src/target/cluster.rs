//! A Redis Cluster as a target: each key goes to the primary that owns its
//! hash slot (CRC16 of its hash tag, mod 16384), through one `RedisTarget`
//! per primary (its own pipelined connections); function libraries go to
//! every primary. A RESTORE answered MOVED or ASK (a slot migrating during
//! the load) is sent again to the node named (after ASKING for ASK), a few
//! rounds at most. A cluster has only db 0: a key of another db is refused,
//! naming it, unless `--target-db 0` maps it there. Replay: `cluster_replay.rs`.

use super::pipeline::{redirect_of, Redirects};
use super::{show_key, Conflict, Filter, LoadOptions, LoadStats, RedisTarget, Target, TargetError};
use crate::command::Command;
use crate::rdb::{add_lost, Entry, LOST_FUNCTIONS};
use crate::resp::cluster::{cluster_slots, primaries, unowned_slots, Primary, SLOTS};
use crate::resp::{Conn, ConnectOptions, RedisUrl, Reply};
use async_trait::async_trait;
use crc::{Crc, CRC_16_XMODEM};
use std::collections::HashMap;

static CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The part of a key that picks its slot: the first `{...}` with something
/// inside, else the whole key (Redis's rule).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&c| c == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&c| c == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The hash slot of a key.
pub fn key_slot(key: &[u8]) -> usize {
    usize::from(CRC16.checksum(hash_tag(key))) % SLOTS
}

/// How many rounds of MOVED/ASK are followed before giving up.
const REDIRECT_ROUNDS: usize = 5;

pub struct ClusterTarget {
    pub(super) seed: RedisUrl,
    pub(super) link: ConnectOptions,
    conflict: Conflict,
    filter: Filter,
    pub(super) target_db: Option<u64>,
    nodes: Vec<RedisTarget>,
    /// The address of each of `nodes`.
    addrs: Vec<String>,
    /// Per slot, the index of its primary in `nodes`.
    pub(super) owner: Vec<usize>,
    /// Replay: the db the stream last SELECTed.
    pub(super) replay_db: u64,
    /// Replay has started: the snapshot's keys, redirected ones too, landed.
    pub(super) replaying: bool,
    /// Replay: a connection for COMMAND GETKEYS (module commands).
    pub(super) control: Option<Conn>,
    redirects: Redirects,
    /// Counted here: keys the filter left out; the rest, by the nodes.
    filtered: u64,
    pushed: u64,
    stats: LoadStats,
    /// For primaries that appear during the load (a failover).
    opts: LoadOptions,
    rdb_version: Option<u32>,
    /// Redirected RESTOREs that landed, or met an existing key, so far.
    redirected: (u64, u64),
}

/// Redirected RESTOREs held (their payloads) before they are sent on, at most.
const REDIRECT_BYTES: usize = 16 << 20;

/// The primaries of the cluster `conn` is a node of (hosts it announces
/// as empty are the seed's); every slot must be served.
async fn primaries_of(conn: &mut Conn, seed: &RedisUrl) -> Result<Vec<Primary>, TargetError> {
    let ranges = cluster_slots(conn).await?;
    let unowned = unowned_slots(&ranges);
    if unowned > 0 {
        return Err(TargetError::Cluster(format!(
            "the cluster at {} leaves {unowned} of {SLOTS} slots without a primary; fix the cluster (CLUSTER INFO says cluster_state) before importing",
            seed.addr()
        )));
    }
    Ok(primaries(&ranges, &seed.host))
}

/// The URL of every primary of the cluster `conn` is a node of.
pub(super) async fn primary_urls(
    conn: &mut Conn,
    seed: &RedisUrl,
) -> Result<Vec<RedisUrl>, TargetError> {
    Ok(primaries_of(conn, seed)
        .await?
        .into_iter()
        .map(|p| RedisUrl {
            host: p.host,
            port: p.port,
            ..seed.clone()
        })
        .collect())
}

impl ClusterTarget {
    /// Reads the slot map from the node at `seed` and connects to every
    /// primary; every slot must be owned.
    pub async fn connect(
        seed: &RedisUrl,
        link: &ConnectOptions,
        opts: LoadOptions,
    ) -> Result<Self, TargetError> {
        let mut conn = crate::resp::connect(seed, link).await?;
        let ps = primaries_of(&mut conn, seed).await?;
        let mut owner = vec![usize::MAX; SLOTS];
        for (n, p) in ps.iter().enumerate() {
            for &(a, b) in &p.ranges {
                owner[a as usize..=b as usize]
                    .iter_mut()
                    .for_each(|o| *o = n);
            }
        }
        let redirects = Redirects::default();
        let mut nodes = vec![];
        let mut addrs = vec![];
        for p in ps {
            let url = RedisUrl {
                host: p.host,
                port: p.port,
                ..seed.clone()
            };
            addrs.push(url.addr());
            nodes.push(
                RedisTarget::connect_node(&url, link, opts.clone(), Some(redirects.clone()))
                    .await?,
            );
        }
        Ok(ClusterTarget {
            seed: seed.clone(),
            link: link.clone(),
            conflict: opts.conflict,
            filter: opts.filter.clone(),
            target_db: opts.target_db,
            nodes,
            addrs,
            owner,
            redirects,
            filtered: 0,
            pushed: 0,
            stats: LoadStats::default(),
            opts,
            rdb_version: None,
            redirected: (0, 0),
            replay_db: 0,
            replaying: false,
            control: None,
        })
    }

    /// Reads the slot map again (after a MOVED: a failover or a slot moved
    /// for good), connecting to primaries not seen before.
    async fn refresh_map(&mut self) -> Result<(), TargetError> {
        let mut conn = crate::resp::connect(&self.seed, &self.link).await?;
        let ps = primaries_of(&mut conn, &self.seed).await?;
        for p in &ps {
            let url = RedisUrl {
                host: p.host.clone(),
                port: p.port,
                ..self.seed.clone()
            };
            let addr = url.addr();
            let n = match self.addrs.iter().position(|a| *a == addr) {
                Some(n) => n,
                None => {
                    let mut t = RedisTarget::connect_node(
                        &url,
                        &self.link,
                        self.opts.clone(),
                        Some(self.redirects.clone()),
                    )
                    .await?;
                    if let Some(v) = self.rdb_version {
                        t.begin(v)?;
                    }
                    tracing::info!("{addr} now serves slots of the cluster: keys go there");
                    self.nodes.push(t);
                    self.addrs.push(addr);
                    self.nodes.len() - 1
                }
            };
            for &(a, b) in &p.ranges {
                self.owner[a as usize..=b as usize]
                    .iter_mut()
                    .for_each(|o| *o = n);
            }
        }
        Ok(())
    }

    /// While loading: after a MOVED, the slot map is read again; held
    /// redirects are sent on once they are many (or after a MOVED), so they
    /// never pile up in memory.
    async fn tend_redirects(&mut self) -> Result<(), TargetError> {
        let (moved, bytes) = match self.redirects.lock() {
            Ok(q) => (
                q.iter().any(|r| !r.ask),
                q.iter().map(|r| r.command.len()).sum::<usize>(),
            ),
            Err(_) => return Err(TargetError::Worker("a loader connection panicked".into())),
        };
        if moved || bytes > REDIRECT_BYTES {
            self.send_held(moved).await?;
        }
        Ok(())
    }

    /// Sends the held redirects on (after reading the slot map again, if
    /// one was a MOVED), counting what landed.
    async fn send_held(&mut self, moved: bool) -> Result<(), TargetError> {
        if moved {
            self.refresh_map().await?;
        }
        let (l, s) = self.follow_redirects().await?;
        self.redirected.0 += l;
        self.redirected.1 += s;
        Ok(())
    }

    /// Until every node has applied what was sent to it, and the RESTOREs
    /// held back by MOVED or ASK have landed where the cluster says.
    pub(super) async fn settle(&mut self) -> Result<(), TargetError> {
        for n in &mut self.nodes {
            n.barrier().await?;
        }
        let moved = match self.redirects.lock() {
            Ok(q) => q.iter().any(|r| !r.ask),
            Err(_) => return Err(TargetError::Worker("a loader connection panicked".into())),
        };
        self.send_held(moved).await
    }

    /// The primaries, in the order of their first slots.
    pub fn primaries(&self) -> usize {
        self.nodes.len()
    }

    /// The index of the primary owning `key`'s slot.
    pub(super) fn owner_of(&self, key: &[u8]) -> usize {
        self.owner[key_slot(key)]
    }

    pub(super) fn node(&mut self, n: usize) -> &mut RedisTarget {
        &mut self.nodes[n]
    }

    /// The counts of every node, and the keys filtered here.
    fn sum(&self, per_node: &[LoadStats]) -> LoadStats {
        let mut t = LoadStats {
            seen: self.filtered,
            filtered: self.filtered,
            ..LoadStats::default()
        };
        for s in per_node {
            t.seen += s.seen;
            t.loaded += s.loaded;
            t.skipped_existing += s.skipped_existing;
            t.expired += s.expired;
            t.filtered += s.filtered;
            t.bytes += s.bytes;
            t.commands += s.commands;
            t.converted += s.converted;
            t.split += s.split;
            t.converted_to = t.converted_to.or(s.converted_to);
            add_lost(&mut t.lost, &s.lost);
        }
        // A library goes to every primary: count it once.
        t.functions = per_node.iter().map(|s| s.functions).min().unwrap_or(0);
        let left_out = |s: &LoadStats| s.lost.get(LOST_FUNCTIONS).copied().unwrap_or(0);
        match per_node.iter().map(left_out).min() {
            Some(0) | None => {
                t.lost.remove(LOST_FUNCTIONS);
            }
            Some(n) => {
                t.lost.insert(LOST_FUNCTIONS, n);
            }
        }
        t
    }

    /// Sends the RESTOREs that came back MOVED or ASK to the nodes named,
    /// until none comes back (a few rounds at most); how many landed and
    /// how many were skipped as existing.
    async fn follow_redirects(&mut self) -> Result<(u64, u64), TargetError> {
        let mut conns: HashMap<String, Conn> = HashMap::new();
        let (mut loaded, mut skipped) = (0, 0);
        for _ in 0..REDIRECT_ROUNDS {
            let round: Vec<_> = std::mem::take(
                &mut *self
                    .redirects
                    .lock()
                    .map_err(|_| TargetError::Worker("a loader connection panicked".into()))?,
            );
            if round.is_empty() {
                return Ok((loaded, skipped));
            }
            let mut again = vec![];
            for r in round {
                if !conns.contains_key(&r.addr) {
                    let (host, port) = r
                        .addr
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
                        .ok_or_else(|| {
                            TargetError::Cluster(format!("a redirect to {:?}", r.addr))
                        })?;
                    let url = RedisUrl {
                        host: if host.is_empty() {
                            self.seed.host.clone()
                        } else {
                            host.to_string()
                        },
                        port,
                        ..self.seed.clone()
                    };
                    conns.insert(
                        r.addr.clone(),
                        crate::resp::connect(&url, &self.link).await?,
                    );
                }
                let conn = conns.get_mut(&r.addr).expect("inserted above");
                if r.ask {
                    if let Reply::Error(m) = conn.command(&[b"ASKING"]).await? {
                        return Err(TargetError::Refused {
                            key: show_key(&r.key),
                            db: r.db,
                            message: format!("ASKING: {m}"),
                        });
                    }
                }
                conn.write_raw(&r.command).await?;
                match conn.read_reply("the reply to RESTORE").await? {
                    Reply::Status(_) => loaded += 1,
                    Reply::Error(m) if m.starts_with("BUSYKEY") => {
                        if self.conflict == Conflict::Skip {
                            skipped += 1;
                        } else {
                            return Err(TargetError::KeyExists {
                                key: show_key(&r.key),
                                db: r.db,
                            });
                        }
                    }
                    Reply::Error(m) => match redirect_of(&m) {
                        Some((ask, addr)) => {
                            again.push(super::pipeline::Redirect { ask, addr, ..r })
                        }
                        None => {
                            return Err(TargetError::Refused {
                                key: show_key(&r.key),
                                db: r.db,
                                message: m,
                            })
                        }
                    },
                    other => {
                        return Err(TargetError::Refused {
                            key: show_key(&r.key),
                            db: r.db,
                            message: format!("{other:?}"),
                        })
                    }
                }
            }
            if let Ok(mut q) = self.redirects.lock() {
                q.extend(again);
            }
        }
        let left = self.redirects.lock().map(|q| q.len()).unwrap_or(0);
        if left == 0 {
            return Ok((loaded, skipped));
        }
        Err(TargetError::Cluster(format!(
            "{left} keys were still redirected after {REDIRECT_ROUNDS} rounds of MOVED/ASK: the cluster's slots keep moving; import again once they settle"
        )))
    }
}

#[async_trait]
impl Target for ClusterTarget {
    async fn barrier(&mut self) -> Result<(), TargetError> {
        self.settle().await
    }

    async fn delete_slots(
        &mut self,
        slots: &[[u16; 2]],
        all_dbs: bool,
        offset: u64,
    ) -> Result<u64, TargetError> {
        // Keys held back by ASK or MOVED must land before the deletes.
        self.settle().await?;
        let db = self.target_db.unwrap_or(self.replay_db);
        if !all_dbs && db != 0 {
            return Err(TargetError::Cluster(format!(
                "the flush at offset {offset} empties db {db}, and a cluster has only db 0"
            )));
        }
        // Only the primaries owning some of those slots hold such keys.
        let mut holders: Vec<usize> = slots
            .iter()
            .flat_map(|r| self.owner[r[0] as usize..=r[1] as usize].iter().copied())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let mut deleted = 0;
        for n in holders {
            // A cluster node holds db 0 only.
            deleted += self.nodes[n]
                .delete_slots_here(slots, false, offset)
                .await?;
        }
        Ok(deleted)
    }

    fn begin(&mut self, rdb_version: u32) -> Result<(), TargetError> {
        self.rdb_version = Some(rdb_version);
        self.nodes.iter_mut().try_for_each(|n| n.begin(rdb_version))
    }

    async fn push(&mut self, e: Entry) -> Result<(), TargetError> {
        if !self.filter.accepts(&e) {
            self.filtered += 1;
            return Ok(());
        }
        let db = self.target_db.unwrap_or(e.db);
        if db != 0 {
            return Err(TargetError::Cluster(format!(
                "key {} is in db {}, and a cluster has only db 0: import with --db 0 to load only db 0, or --target-db 0 to put every database into it",
                show_key(&e.key),
                e.db
            )));
        }
        let n = self.owner[key_slot(&e.key)];
        self.nodes[n].push(e).await?;
        self.pushed += 1;
        if self.pushed.is_multiple_of(1024) {
            self.tend_redirects().await?;
            let per: Vec<LoadStats> = self.nodes.iter().map(|n| n.stats().clone()).collect();
            self.stats = self.sum(&per);
            self.stats.loaded += self.redirected.0;
        }
        Ok(())
    }

    async fn push_function(&mut self, code: Vec<u8>) -> Result<(), TargetError> {
        for n in &mut self.nodes {
            n.push_function(code.clone()).await?;
        }
        Ok(())
    }

    async fn apply(&mut self, cmd: &Command) -> Result<(), TargetError> {
        self.replay(cmd).await
    }

    fn stats(&self) -> &LoadStats {
        &self.stats
    }

    async fn finish(&mut self) -> Result<LoadStats, TargetError> {
        let mut per = vec![];
        for n in &mut self.nodes {
            per.push(n.finish().await?);
        }
        if self
            .redirects
            .lock()
            .map(|q| q.iter().any(|r| !r.ask))
            .unwrap_or(false)
        {
            self.refresh_map().await?;
        }
        let (loaded, skipped) = self.follow_redirects().await?;
        let mut total = self.sum(&per);
        total.loaded += loaded + self.redirected.0;
        total.skipped_existing += skipped + self.redirected.1;
        self.stats = total.clone();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots Redis gives (CLUSTER KEYSLOT).
    #[test]
    fn key_slots_follow_hash_tags() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b""), 0);
    }
}
