//! Export: one consistent snapshot from a `Source`, streamed straight into
//! storage (sealed, or plain with `--plain`),
//! keyring first and manifest last. Nothing of the snapshot touches local disk and
//! memory stays at a few chunks.

use super::layout::{self, GenerationDir, BASE_PLAIN, BASE_SEALED};
use super::manifest::{
    Manifest, ObjectEntry, RedisInfo, ShardEntry, MANIFEST_FORMAT, MANIFEST_VERSION,
};
use super::BackupError;
use crate::data_key::DataKey;
use crate::format::ObjectKind;
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::rdb::KeyCounter;
use crate::sealer::{ObjectSpec, SealOptions, Sealer};
use crate::signing::Signer;
use crate::source::{CommandFeed, Snapshot, Source};
use crate::store::{Store, StoreError};
use crate::text::{one_line, rfc3339};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWriteExt;

pub struct ExportRequest {
    /// Where the snapshot comes from.
    pub from: Arc<dyn Source>,
    pub store: Store,
    /// The source name in the layout.
    pub source: String,
    /// None exports plain (unencrypted) RDB.
    pub kek: Option<Arc<dyn Kek>>,
    /// Signs the manifest: readers count only a trusted signer's generations.
    pub signer: Arc<Signer>,
    pub seal: SealOptions,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub generation: String,
    pub source: String,
    pub location: String,
    pub rdb_bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
    pub manifest: Manifest,
}

/// Called with (bytes received, size announced by the primary if any).
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Sync);

/// One snapshot into a new generation: keyring first, the base streamed, the
/// manifest last. On failure, what this run wrote is removed (best effort) and
/// no manifest exists: nothing looks like a complete backup.
pub async fn export(
    req: ExportRequest,
    progress: Progress<'_>,
) -> Result<ExportSummary, BackupError> {
    Ok(export_inner(req, progress, false).await?.0)
}

/// A base snapshot for the daemon: a full sync with the command stream kept
/// (no `rdb-only`), the base written as `export` writes it, then the link handed
/// back to follow the stream from the snapshot's offset.
pub async fn export_and_follow(
    req: ExportRequest,
    progress: Progress<'_>,
) -> Result<(ExportSummary, CommandFeed), BackupError> {
    let (summary, feed) = export_inner(req, progress, true).await?;
    Ok((summary, feed.expect("follow keeps the stream")))
}

async fn export_inner(
    req: ExportRequest,
    progress: Progress<'_>,
    follow: bool,
) -> Result<(ExportSummary, Option<CommandFeed>), BackupError> {
    layout::check_source_name(&req.source)?;
    let started = Instant::now();
    let store = &req.store;

    // Keys first: with no usable KEK, nothing is written and Redis is not asked
    // to fork.
    let keys = new_keys(&req.kek).await?;
    // Storage reachable and the container there, before the primary forks.
    store.probe().await?;

    let created = SystemTime::now();
    let mut transfer = req.from.snapshot(follow).await?;
    let info = transfer.info().clone();
    let version = info.server_version.clone();
    let generation = layout::generation_id(created, &info.replid);
    let dir = GenerationDir::new(&req.source, &generation);
    tracing::info!(generation, replid = %info.replid, offset = info.offset, rdb_only = info.rdb_only, "full sync started");

    // The keyring, create-only, claims the folder: were the id ever taken,
    // this fails and nothing of the other generation is touched.
    if let Some((_, ring)) = &keys {
        store.create(&dir.keyring(store), ring.to_json()).await?;
    }
    let base_name = if keys.is_some() {
        BASE_SEALED
    } else {
        BASE_PLAIN
    };
    let to = Destination {
        store,
        dir: &dir,
        generation: &generation,
        dek: keys.as_ref().map(|(d, _)| d),
        seal: &req.seal,
    };
    let describe = req.from.describe();
    let progress = |got: u64, total: Option<u64>| progress(got, total);
    let result = store_snapshot(&to, base_name, transfer.as_mut(), &describe, &progress).await;
    let (entry, key_counts) = match result {
        Ok((entry, counts)) => (entry, Some(counts)),
        Err(e) => {
            // Leave nothing that looks like a backup: the manifest was never
            // written; also remove what was (best effort).
            let _ = store.delete(&dir.keyring(store)).await;
            let _ = store.delete(&dir.object(store, base_name)).await;
            return Err(e);
        }
    };

    let redis = RedisInfo {
        version,
        rdb_version: transfer.rdb_version(),
        replid: info.replid.clone(),
        offset: info.offset,
        method: (info.method == crate::source::Method::Scan).then(|| "scan".into()),
    };
    let mut manifest = new_manifest(
        &generation,
        &req.source,
        created,
        &keys,
        redis,
        vec![entry.clone()],
        key_counts,
        None,
    );
    let json = manifest
        .to_json(keys.as_ref().map(|(d, _)| d), &req.signer)
        .await
        .map_err(|e| BackupError::Invalid(format!("manifest: {e}")))?;
    store.create(&dir.manifest(store), json).await?;
    let summary = ExportSummary {
        generation,
        source: req.source.clone(),
        location: display_path(store, &dir.dir(store)),
        rdb_bytes: transfer.received(),
        stored_bytes: entry.stored_bytes,
        seconds: started.elapsed().as_secs_f64(),
        manifest,
    };
    Ok((summary, follow.then(|| transfer.into_stream())))
}

/// A fresh data key wrapped under `kek`; None for a plain export.
async fn new_keys(kek: &Option<Arc<dyn Kek>>) -> Result<Option<(DataKey, Keyring)>, BackupError> {
    Ok(match kek {
        Some(kek) => {
            let dek = DataKey::generate();
            let ring = Keyring::wrap(&dek, kek.as_ref()).await?;
            Some((dek, ring))
        }
        None => None,
    })
}

/// The manifest of a generation whose objects are all stored (signed by
/// `to_json`).
#[allow(clippy::too_many_arguments)]
fn new_manifest(
    generation: &str,
    source: &str,
    created: SystemTime,
    keys: &Option<(DataKey, Keyring)>,
    redis: RedisInfo,
    objects: Vec<ObjectEntry>,
    key_counts: Option<BTreeMap<String, u64>>,
    cluster: Option<Vec<ShardEntry>>,
) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        generation: generation.into(),
        source: source.into(),
        created: rfc3339(created),
        completed: rfc3339(SystemTime::now()),
        sealed: keys.is_some(),
        redis,
        keks: keys
            .as_ref()
            .map(|(_, r)| r.wrapped.iter().map(|w| w.kek.clone()).collect())
            .unwrap_or_default(),
        data_key_id: keys.as_ref().map(|(_, r)| r.data_key_id.clone()),
        objects,
        keys: key_counts,
        cluster,
        signer: None,
        mac: None,
        signature: None,
    }
}

/// Where the snapshot objects of one generation go.
struct Destination<'a> {
    store: &'a Store,
    dir: &'a GenerationDir,
    generation: &'a str,
    /// None writes plain objects.
    dek: Option<&'a DataKey>,
    seal: &'a SealOptions,
}

/// One snapshot streamed into the object `name` of a generation (sealed
/// under the data key, or plain), its keys counted as it passes: the RDB's
/// CRC checked (by the transfer, or here where redvault wrote the RDB) and
/// walked to its end, or no object stays (the upload is aborted).
async fn store_snapshot(
    to: &Destination<'_>,
    name: &str,
    transfer: &mut dyn Snapshot,
    describe: &str,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
) -> Result<(ObjectEntry, BTreeMap<String, u64>), BackupError> {
    let store = to.store;
    let path = to.dir.object(store, name);
    let upload_err = |op: &'static str, e: &dyn std::fmt::Display| {
        BackupError::Store(StoreError::Op {
            url: store.url.clone(),
            op,
            path: path.to_string(),
            message: one_line(e),
        })
    };
    let upload = store.upload(&path, 10 << 20);
    let mut sink = match to.dek {
        Some(dek) => {
            let spec = ObjectSpec {
                kind: ObjectKind::Rdb,
                generation: to.generation.to_string(),
                name: name.into(),
                embedded_keyring: vec![],
                attestation: vec![],
            };
            Sink::Sealed(Box::new(Sealer::new(upload, spec, dek, to.seal).await?))
        }
        None => Sink::Plain {
            out: Box::new(upload),
            sha: Sha256::new(),
            bytes: 0,
        },
    };
    let mut counter = KeyCounter::start(!transfer.info().rdb_checked);
    let step = async {
        while let Some(piece) = transfer.next_piece().await? {
            sink.write(&piece)
                .await
                .map_err(|e| upload_err("upload", &e))?;
            counter.send(piece).await;
            progress(transfer.received(), transfer.announced_size());
        }
        Ok::<_, BackupError>(())
    }
    .await;
    if let Err(e) = step {
        sink.abort().await;
        return Err(e);
    }
    // The snapshot must walk to its end, or it could never be restored: no
    // manifest for a snapshot that does not parse.
    let counts = match counter.finish().await {
        Ok(c) => c.into_iter().map(|(db, n)| (db.to_string(), n)).collect(),
        Err(e) => {
            sink.abort().await;
            return Err(BackupError::Corrupt {
                label: to.dir.label(name),
                why: format!("the snapshot from {describe} does not parse: {e}"),
            });
        }
    };
    let mut entry = sink
        .finish()
        .await
        .map_err(|e| upload_err("complete the upload of", &e))?;
    entry.name = name.into();
    Ok((entry, counts))
}

/// One primary of a cluster, to back up.
pub struct Shard {
    pub from: Arc<dyn Source>,
    pub node_id: String,
    pub addr: String,
    /// The URL it is read from (the seed's user, TLS and options): the
    /// primary's, or with `from_replica` its replica's.
    pub url: crate::resp::RedisUrl,
    /// The primary's, which alone knows its slot migrations.
    pub primary: crate::resp::RedisUrl,
    /// Its slot ranges, first and last slot.
    pub ranges: Vec<(u16, u16)>,
}

impl Shard {
    /// Its first and last slot.
    pub fn span(&self) -> (u16, u16) {
        let first = self.ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let last = self.ranges.iter().map(|r| r.1).max().unwrap_or(0);
        (first, last)
    }

    /// Its command stream's folder in a generation (`shard-<first>-<last>`).
    pub fn stream(&self) -> String {
        let (first, last) = self.span();
        layout::shard_stream(first, last)
    }
}

/// Fails unless the cluster's slot map (ranges and node ids) is still the one
/// the shards were chosen from.
async fn topology_unchanged(req: &ClusterExportRequest) -> Result<(), BackupError> {
    let mut conn = crate::resp::connect(&req.seed, &req.link)
        .await
        .map_err(crate::source::SourceError::from)?;
    let mut now = crate::resp::cluster::cluster_slots(&mut conn)
        .await
        .map_err(crate::source::SourceError::from)?;
    let mut before = req.topology.clone();
    now.sort_by_key(|r| r.first);
    before.sort_by_key(|r| r.first);
    let key = |v: &[crate::resp::cluster::SlotRange]| -> Vec<(u16, u16, String)> {
        v.iter()
            .map(|r| (r.first, r.last, r.node_id.clone()))
            .collect()
    };
    if key(&now) != key(&before) {
        return Err(BackupError::Invalid(format!(
            "the slots of the cluster at {} moved during the export (a migration or a failover): its shards are not of one layout, so nothing was kept; export again",
            req.seed.addr()
        )));
    }
    Ok(())
}

/// The primaries of the cluster `seed` is a node of, one source each (what
/// `make` builds for the node's URL: PSYNC or SCAN of that shard, maybe
/// re-encoded), and the slot map they were chosen from. Refused: slots no primary serves, and two primaries at one
/// address. (A slot being migrated is refused at the snapshot,
/// `export_cluster`.)
/// With `from_replica`, each shard is read from a replica of its primary
/// (sparing the primary's fork), and a primary without one is refused.
pub async fn cluster_shards(
    seed: &crate::resp::RedisUrl,
    link: &crate::resp::ConnectOptions,
    make: &(dyn Fn(crate::resp::RedisUrl) -> Arc<dyn Source> + Sync),
    from_replica: bool,
) -> Result<(Vec<Shard>, Vec<crate::resp::cluster::SlotRange>), BackupError> {
    use crate::resp::cluster::{cluster_slots, primaries, unowned_slots};
    use crate::source::SourceError;
    let mut conn = crate::resp::connect(seed, link)
        .await
        .map_err(SourceError::from)?;
    let ranges = cluster_slots(&mut conn).await.map_err(SourceError::from)?;
    let unowned = unowned_slots(&ranges);
    if unowned > 0 {
        return Err(BackupError::Invalid(format!(
            "the cluster at {} leaves {unowned} of 16384 slots without a primary: a backup of it would be partial",
            seed.addr()
        )));
    }
    let primaries = primaries(&ranges, &seed.host);
    if from_replica {
        if let Some(p) = primaries.iter().find(|p| p.replicas.is_empty()) {
            return Err(BackupError::Invalid(format!(
                "the primary {}:{} (slots {}-{}) of the cluster at {} has no replica to back up from: add one, or back up without --from-replica",
                p.host,
                p.port,
                p.first_slot(),
                p.last_slot(),
                seed.addr()
            )));
        }
    }
    let shards: Vec<Shard> = primaries
        .into_iter()
        .map(|p| {
            let (host, port) = match (from_replica, p.replicas.first()) {
                (true, Some((h, port))) => (h.clone(), *port),
                _ => (p.host.clone(), p.port),
            };
            let url = crate::resp::RedisUrl {
                host,
                port,
                ..seed.clone()
            };
            Shard {
                from: make(url.clone()),
                node_id: p.node_id.clone(),
                addr: url.addr(),
                url,
                primary: crate::resp::RedisUrl {
                    host: p.host.clone(),
                    port: p.port,
                    ..seed.clone()
                },
                ranges: p.ranges.clone(),
            }
        })
        .collect();
    let mut addrs: Vec<&str> = shards.iter().map(|s| s.addr.as_str()).collect();
    addrs.sort();
    if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
        return Err(BackupError::Invalid(format!(
            "two primaries of the cluster at {} are reached at {}: their addresses cannot be told apart (set cluster-announce-ip)",
            seed.addr(),
            w[0]
        )));
    }
    Ok((shards, ranges))
}

/// Fails if a primary of the cluster is migrating a slot: a slot half moved
/// has keys on two nodes, and snapshots taken one after the other could miss
/// or double them. Each node tells only its own migrations (a user who may
/// not ask is warned).
async fn no_slot_migrating(req: &ClusterExportRequest) -> Result<(), BackupError> {
    use crate::source::SourceError;
    for s in &req.shards {
        // Only a primary shows its own migrations (a replica does not).
        let url = &s.primary;
        let mut conn = crate::resp::connect(url, &req.link)
            .await
            .map_err(SourceError::from)?;
        match crate::resp::cluster::migrating_slots(&mut conn)
            .await
            .map_err(SourceError::from)?
        {
            Some(moving) if !moving.is_empty() => {
                return Err(BackupError::Invalid(format!(
                    "slot {} of the cluster at {} is being migrated by {} ({} slots in all): a snapshot now could miss or double its keys; back it up once the migration ends",
                    moving[0],
                    req.seed.addr(),
                    url.addr(),
                    moving.len()
                )));
            }
            Some(_) => {}
            None => tracing::warn!(
                "cannot tell whether {} is migrating a slot (CLUSTER NODES refused): a snapshot during a migration could miss or double its keys",
                url.addr()
            ),
        }
    }
    Ok(())
}

/// A cluster export: as `ExportRequest`, one source per primary.
pub struct ClusterExportRequest {
    pub shards: Vec<Shard>,
    /// The node the cluster was reached by, and the slot map the shards
    /// were chosen from (checked again before the manifest).
    pub seed: crate::resp::RedisUrl,
    pub link: crate::resp::ConnectOptions,
    pub topology: Vec<crate::resp::cluster::SlotRange>,
    pub store: Store,
    pub source: String,
    pub kek: Option<Arc<dyn Kek>>,
    pub signer: Arc<Signer>,
    pub seal: SealOptions,
}

/// Shards snapshotted at once, at most (each one forks its primary).
const SHARDS_AT_ONCE: usize = 4;

/// A whole cluster into one generation: keyring first, one snapshot object
/// per primary (`shard-<first>-<last>.rdb.rv`), taken in parallel, then one
/// manifest naming every shard. Complete only when every shard is: on any
/// failure, nothing of it stays that looks like a backup.
pub async fn export_cluster(
    req: ClusterExportRequest,
    progress: Progress<'_>,
) -> Result<ExportSummary, BackupError> {
    Ok(export_cluster_inner(req, progress, false).await?.0)
}

/// A cluster base for the daemon: as `export_cluster`, with each shard's
/// command stream kept, handed back in the order of the manifest's shards.
pub async fn export_cluster_and_follow(
    req: ClusterExportRequest,
    progress: Progress<'_>,
) -> Result<(ExportSummary, Vec<CommandFeed>), BackupError> {
    export_cluster_inner(req, progress, true).await
}

async fn export_cluster_inner(
    req: ClusterExportRequest,
    progress: Progress<'_>,
    follow: bool,
) -> Result<(ExportSummary, Vec<CommandFeed>), BackupError> {
    use futures::{StreamExt, TryStreamExt};
    let shards = &req.shards;
    if shards.is_empty() {
        return Err(BackupError::Invalid("a cluster with no primary".into()));
    }
    layout::check_source_name(&req.source)?;
    let started = Instant::now();
    let store = &req.store;
    let keys = new_keys(&req.kek).await?;
    store.probe().await?;
    no_slot_migrating(&req).await?;
    let created = SystemTime::now();
    // Named after the first primary's node id (40 hex digits), as a single
    // server's generation is after its replication id.
    let generation = layout::generation_id(created, &shards[0].node_id);
    let dir = GenerationDir::new(&req.source, &generation);
    if let Some((_, ring)) = &keys {
        store.create(&dir.keyring(store), ring.to_json()).await?;
    }
    let to = Destination {
        store,
        dir: &dir,
        generation: &generation,
        dek: keys.as_ref().map(|(d, _)| d),
        seal: &req.seal,
    };
    let names: Vec<String> = shards
        .iter()
        .map(|s| {
            let (first, last) = s.span();
            layout::shard_object(first, last, keys.is_some())
        })
        .collect();
    let received: Vec<std::sync::atomic::AtomicU64> =
        shards.iter().map(|_| Default::default()).collect();
    let received = &received;
    let to = &to;
    // The futures are made first, then run a few at once: a stream mapping
    // each shard to its future would not be Send for the daemon's tasks.
    let jobs: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
        let name = names[i].clone();
        async move {
            let mut transfer = s.from.snapshot(follow).await?;
            let info = transfer.info().clone();
            tracing::info!(shard = %name, node = %s.addr, replid = %info.replid, offset = info.offset, "shard sync started");
            let shard_progress = |got: u64, _: Option<u64>| {
                received[i].store(got, std::sync::atomic::Ordering::Relaxed);
                let sum = received
                    .iter()
                    .map(|r| r.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                progress(sum, None);
            };
            let (entry, counts) = store_snapshot(
                to,
                &name,
                transfer.as_mut(),
                &s.from.describe(),
                &shard_progress,
            )
            .await?;
            let shard = ShardEntry {
                object: name,
                slots: s.ranges.iter().map(|&(a, b)| [a, b]).collect(),
                node: s.node_id.clone(),
                addr: s.addr.clone(),
                replid: info.replid.clone(),
                offset: info.offset,
                rdb_version: transfer.rdb_version(),
                keys: counts,
            };
            let received = transfer.received();
            let stream = follow.then(|| KeptAlive::start(transfer.into_stream(), info.offset));
            Ok::<_, BackupError>((entry, shard, info, received, stream))
        }
        })
        .collect();
    let done: Result<Vec<_>, BackupError> = futures::stream::iter(jobs)
        .buffer_unordered(SHARDS_AT_ONCE)
        .try_collect()
        .await;
    // The slots must be where they were when the shards were chosen: a
    // migration or failover meanwhile could lose or double keys.
    let done = match done {
        Ok(d) => match topology_unchanged(&req).await {
            Ok(()) => Ok(d),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut done = match done {
        Ok(d) => d,
        Err(e) => {
            let _ = store.delete(&dir.keyring(store)).await;
            for n in &names {
                let _ = store.delete(&dir.object(store, n)).await;
            }
            return Err(e);
        }
    };
    done.sort_by_key(|d| names.iter().position(|n| *n == d.1.object));
    // Every kept stream is still up, or the generation is not kept: the
    // daemon would follow it with a shard missing.
    let mut feeds = vec![];
    for d in done.iter_mut() {
        if let Some(kept) = d.4.take() {
            match kept.stop().await {
                Ok(feed) => feeds.push(feed),
                Err(e) => {
                    let _ = store.delete(&dir.keyring(store)).await;
                    for n in &names {
                        let _ = store.delete(&dir.object(store, n)).await;
                    }
                    return Err(e);
                }
            }
        }
    }
    let mut keys_total: BTreeMap<String, u64> = BTreeMap::new();
    for (_, s, _, _, _) in &done {
        for (db, n) in &s.keys {
            *keys_total.entry(db.clone()).or_insert(0) += n;
        }
    }
    let first = &done[0].2;
    // One shard read by SCAN (a managed server that refuses PSYNC) makes
    // the generation not point-in-time.
    let scanned = done
        .iter()
        .any(|d| d.2.method == crate::source::Method::Scan);
    let redis = RedisInfo {
        version: first.server_version.clone(),
        rdb_version: done.iter().filter_map(|d| d.1.rdb_version).max(),
        replid: first.replid.clone(),
        offset: first.offset,
        method: scanned.then(|| "scan".into()),
    };
    let mut manifest = new_manifest(
        &generation,
        &req.source,
        created,
        &keys,
        redis,
        done.iter().map(|d| d.0.clone()).collect(),
        Some(keys_total),
        Some(done.iter().map(|d| d.1.clone()).collect()),
    );
    let json = manifest
        .to_json(keys.as_ref().map(|(d, _)| d), &req.signer)
        .await
        .map_err(|e| BackupError::Invalid(format!("manifest: {e}")))?;
    store.create(&dir.manifest(store), json).await?;
    let summary = ExportSummary {
        generation,
        source: req.source.clone(),
        location: display_path(store, &dir.dir(store)),
        rdb_bytes: done.iter().map(|d| d.3).sum(),
        stored_bytes: done.iter().map(|d| d.0.stored_bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
        manifest,
    };
    Ok((summary, feeds))
}

/// A shard's stream while the other shards' snapshots are still being
/// stored: acknowledged at its snapshot's offset every second, so its
/// primary does not drop the link as a silent replica (repl-timeout). Its
/// commands wait in the link meanwhile, read once the shard is followed.
struct KeptAlive {
    reader: Box<dyn crate::source::CommandReader>,
    stop: tokio::sync::oneshot::Sender<()>,
    task:
        tokio::task::JoinHandle<Result<Box<dyn crate::source::Acker>, crate::source::SourceError>>,
}

impl KeptAlive {
    fn start(feed: CommandFeed, offset: u64) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let mut acker = feed.acker;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(acker),
                    _ = tick.tick() => acker.ack(offset).await?,
                }
            }
        });
        KeptAlive {
            reader: feed.reader,
            stop,
            task,
        }
    }

    async fn stop(self) -> Result<CommandFeed, BackupError> {
        let _ = self.stop.send(());
        let acker = self
            .task
            .await
            .map_err(|e| BackupError::Invalid(format!("a shard's keepalive ended: {e}")))??;
        Ok(CommandFeed {
            reader: self.reader,
            acker,
        })
    }
}

fn display_path(store: &Store, p: &Path) -> String {
    format!("{}/{}", store.url.trim_end_matches('/'), p)
}

enum Sink {
    Sealed(Box<Sealer<BufWriter>>),
    Plain {
        out: Box<BufWriter>,
        sha: Sha256,
        bytes: u64,
    },
}

impl Sink {
    async fn write(&mut self, data: &[u8]) -> Result<(), std::io::Error> {
        match self {
            Sink::Sealed(s) => s.write(data).await.map_err(std::io::Error::other),
            Sink::Plain { out, sha, bytes } => {
                sha.update(data);
                *bytes += data.len() as u64;
                out.write_all(data).await
            }
        }
    }

    async fn abort(self) {
        match self {
            Sink::Sealed(s) => {
                let _ = s.into_inner().abort().await;
            }
            Sink::Plain { mut out, .. } => {
                let _ = out.abort().await;
            }
        }
    }

    async fn finish(self) -> Result<ObjectEntry, std::io::Error> {
        match self {
            Sink::Sealed(s) => {
                let (sum, _) = s.finish().await.map_err(std::io::Error::other)?;
                Ok(ObjectEntry {
                    name: String::new(),
                    kind: "rdb".into(),
                    stored_bytes: sum.stored_bytes,
                    plaintext_bytes: sum.plaintext_bytes,
                    plaintext_sha256: hex::encode(sum.plaintext_sha256),
                    chunks: sum.chunks,
                })
            }
            Sink::Plain {
                mut out,
                sha,
                bytes,
            } => {
                out.shutdown().await?;
                Ok(ObjectEntry {
                    name: String::new(),
                    kind: "rdb".into(),
                    stored_bytes: bytes,
                    plaintext_bytes: bytes,
                    plaintext_sha256: hex::encode(sha.finalize()),
                    chunks: 0,
                })
            }
        }
    }
}
