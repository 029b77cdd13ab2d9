//! The daemon on a Redis Cluster: one generation for the whole cluster (a
//! snapshot of every primary, `backup::export_cluster_and_follow`), then each
//! shard's command stream followed by a session loop of its own
//! (`session::run_sessions`: its own checkpoint `<source>/<shard>`, spool,
//! segments, signed chain and ACKs), all under the source's one writer lease.
//! A restart continues every shard's stream from its checkpoint when the slot
//! map is the one the generation was taken under. A shard that cannot go on
//! (a failover, its backlog gone, a base due), or a slot map that changed
//! (watched every few seconds: a failover, a slot moved), ends the generation
//! for every shard (each cuts, drains and signs its end) and a new cluster
//! generation starts; the gap is recorded with each shard's offset.

use super::checkpoint::Checkpoint;
use super::metrics::SourceMetrics;
use super::session::{base_stored, run_sessions, stream_key, Job};
use super::DaemonError;
use crate::backup::{cluster_shards, export_cluster_and_follow, Retention};
use crate::resp::cluster::SlotRange;
use crate::resp::RedisUrl;
use crate::source::{CommandFeed, Source};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the slot map is read again while the shards are followed.
const LAYOUT_EVERY: Duration = Duration::from_secs(2);

/// Whether the job's Redis is a cluster node (INFO, else CLUSTER MYID),
/// asked until it answers (with backoff; a server that comes up after the
/// daemon is told apart too). One whose user may ask neither is taken as a
/// single server, whose session then refuses it, naming why. None: stopped
/// meanwhile.
pub(super) async fn is_cluster(j: &Job, shutdown: &mut watch::Receiver<bool>) -> Option<bool> {
    let Some((url, link)) = &j.seed else {
        return Some(false);
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        match crate::resp::connect(url, link).await {
            Ok(mut conn) => return Some(crate::resp::is_cluster_node(&mut conn).await),
            Err(e) => {
                j.metrics.errors.fetch_add(1, Relaxed);
                tracing::error!(source = %j.name, "{e}; retrying in {backoff:?}");
            }
        }
        let _ = tokio::time::timeout(backoff, shutdown.changed()).await;
        if *shutdown.borrow() {
            return None;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The slot map as one comparable text: each range, its primary's node id
/// and address (a primary that moved is reached elsewhere). Kept as the
/// cluster checkpoint's `replid`, so a restart knows whether the shards'
/// checkpoints still describe the cluster.
fn layout(topology: &[SlotRange]) -> String {
    let mut v: Vec<String> = topology
        .iter()
        .map(|r| format!("{}-{}@{}/{}:{}", r.first, r.last, r.node_id, r.host, r.port))
        .collect();
    v.sort();
    format!("cluster {}", v.join(","))
}

/// Following replicas (`from_replica`): the replicas read from, for the
/// checkpoint's text (a restart that would read others starts anew).
fn via(addrs: &[String]) -> String {
    if addrs.is_empty() {
        return String::new();
    }
    let mut a = addrs.to_vec();
    a.sort();
    format!(" via {}", a.join(","))
}

/// Whether every replica in `addrs` is still listed as one in `t`.
fn still_replicas(t: &[SlotRange], seed_host: &str, addrs: &[String]) -> bool {
    let listed: Vec<String> = crate::resp::cluster::primaries(t, seed_host)
        .into_iter()
        .flat_map(|p| p.replicas)
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    addrs.iter().all(|a| listed.contains(a))
}

/// CLUSTER SLOTS on `conn`, else from the first of `known` that answers
/// (kept in `conn` for the next time).
async fn slot_map(
    conn: &mut Option<crate::resp::Conn>,
    known: &[RedisUrl],
    link: &crate::resp::ConnectOptions,
) -> Option<Vec<SlotRange>> {
    if let Some(c) = conn.as_mut() {
        if let Ok(t) = crate::resp::cluster::cluster_slots(c).await {
            return Some(t);
        }
        *conn = None;
    }
    for url in known {
        if let Ok(mut c) = crate::resp::connect(url, link).await {
            if let Ok(t) = crate::resp::cluster::cluster_slots(&mut c).await {
                *conn = Some(c);
                return Some(t);
            }
        }
    }
    None
}

/// One shard's stream to follow: its source and stream name.
struct ShardRun {
    from: Arc<dyn Source>,
    stream: String,
    addr: String,
}

/// Follows the cluster until `shutdown`: a round per generation, retried
/// with backoff when one fails.
pub(super) async fn run_cluster(
    j: &Arc<Job>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let mut force_new = false;
    let mut backoff = Duration::from_secs(1);
    // The nodes the cluster may be reached by: the configured one, then
    // every primary seen (the configured one may be the primary that failed).
    let mut known = vec![j.seed.clone().expect("a cluster job has its seed").0];
    while !*shutdown.borrow() {
        match round(j, &mut known, &mut force_new, shutdown).await {
            Ok(None) => break,
            Ok(Some(why)) => {
                j.metrics.gaps.fetch_add(1, Relaxed);
                tracing::warn!(source = %j.name, "{why}: the cluster generation ends there; a new one starts (a gap in point-in-time coverage)");
                force_new = true;
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                j.metrics.errors.fetch_add(1, Relaxed);
                tracing::error!(source = %j.name, "cluster session ended: {e}; retrying in {backoff:?}");
                let _ = tokio::time::timeout(backoff, shutdown.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    tracing::info!(source = %j.name, "stopped");
    Ok(())
}

/// One cluster generation followed: continued from the checkpoints when the
/// slot map is the one they were taken under (and `force_new` is not set),
/// else a new cluster base. None at shutdown; Some(why) when a new
/// generation is needed.
async fn round(
    j: &Arc<Job>,
    known: &mut Vec<RedisUrl>,
    force_new: &mut bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<String>, DaemonError> {
    let link = j.seed.clone().expect("a cluster job has its seed").1;
    let mut found = None;
    let mut failed = None;
    for seed in known.iter() {
        let psync = |url| -> Arc<dyn crate::source::Source> {
            Arc::new(crate::source::PsyncSource::shard(url, link.clone()))
        };
        match cluster_shards(seed, &link, &psync, j.from_replica).await {
            Ok(x) => {
                found = Some((seed.clone(), x));
                break;
            }
            Err(e) => failed = Some(e),
        }
    }
    let Some((seed, (shards, topology))) = found else {
        return Err(failed.expect("one node at least").into());
    };
    for s in &shards {
        if !known.iter().any(|k| k.addr() == s.addr) {
            known.push(s.url.clone());
        }
    }
    let followed: Vec<String> = if j.from_replica {
        shards.iter().map(|s| s.addr.clone()).collect()
    } else {
        vec![]
    };
    let primaries_now = layout(&topology);
    let now = format!("{primaries_now}{}", via(&followed));
    let runs: Vec<ShardRun> = shards
        .iter()
        .map(|s| ShardRun {
            from: s.from.clone(),
            stream: s.stream(),
            addr: s.addr.clone(),
        })
        .collect();
    drain_leftover_spools(j, &runs).await;
    let held = j.checkpoints.get(&j.name)?;
    let mut resumable = !*force_new && held.as_ref().is_some_and(|cp| cp.replid == now);
    if let (true, Some(cp)) = (resumable, &held) {
        for r in &runs {
            let want = format!("{}/{}", cp.generation, r.stream);
            let shard = j.checkpoints.get(&stream_key(&j.name, &r.stream))?;
            resumable &= shard.is_some_and(|s| s.generation == want);
        }
    }
    let mut initial: Vec<Option<(Checkpoint, CommandFeed)>> = runs.iter().map(|_| None).collect();
    let (generation, stored) = if resumable {
        let g = held.expect("resumable").generation;
        tracing::info!(source = %j.name, generation = %g, shards = runs.len(), "continuing the cluster generation");
        (g, None)
    } else {
        if let Some(old) = &held {
            if !*force_new {
                // Recorded by the round that ended it otherwise.
                j.audit(
                    "gap",
                    serde_json::json!({"generation": old.generation, "why": "the cluster's slot map is not the one its generation was taken under (a failover or a slot moved while the daemon was stopped)"}),
                    None,
                );
            }
            j.audit(
                "generation end",
                serde_json::json!({"generation": old.generation}),
                None,
            );
        }
        j.metrics.in_base.store(true, Relaxed);
        let req = j.cluster_request(shards, seed.clone(), link.clone(), topology);
        let r = export_cluster_and_follow(req, &|_, _| {}).await;
        j.metrics.in_base.store(false, Relaxed);
        let (summary, feeds) = r?;
        let entries = summary.manifest.cluster.clone().unwrap_or_default();
        for ((entry, feed), slot) in entries.iter().zip(feeds).zip(initial.iter_mut()) {
            let cp = Checkpoint {
                replid: entry.replid.clone(),
                generation: format!("{}/{}", summary.generation, entry.stream()),
                durable: entry.offset,
                spooled: entry.offset,
                link: Some(hex::encode(crate::aof::chain::GENESIS)),
            };
            j.checkpoints
                .put(&stream_key(&j.name, &entry.stream()), &cp)?;
            *slot = Some((cp, feed));
        }
        j.checkpoints.put(
            &j.name,
            &Checkpoint {
                replid: now.clone(),
                generation: summary.generation.clone(),
                durable: 0,
                spooled: 0,
                link: None,
            },
        )?;
        // A later failure of this round continues this generation.
        *force_new = false;
        (summary.generation.clone(), Some(summary))
    };
    let watch = Layout {
        primaries: &primaries_now,
        followed: &followed,
        seed_host: &seed.host,
    };
    follow_shards(
        j,
        known,
        &generation,
        runs,
        initial,
        &watch,
        stored,
        shutdown,
    )
    .await
}

/// What the slot map must keep while a generation is followed: its
/// primaries and slots, and the replicas read from (if any).
struct Layout<'a> {
    primaries: &'a str,
    followed: &'a [String],
    seed_host: &'a str,
}

impl Layout<'_> {
    fn holds(&self, t: &[SlotRange]) -> bool {
        layout(t) == self.primaries && still_replicas(t, self.seed_host, self.followed)
    }
}

/// Every shard's session loop until shutdown, a shard that needs a new
/// base, or a slot map other than `layout_now`; then every shard is stopped
/// (each cuts, drains its spool and signs its end) before returning.
#[allow(clippy::too_many_arguments)]
async fn follow_shards(
    j: &Arc<Job>,
    known: &[RedisUrl],
    generation: &str,
    runs: Vec<ShardRun>,
    mut initial: Vec<Option<(Checkpoint, CommandFeed)>>,
    layout_now: &Layout<'_>,
    stored: Option<crate::backup::ExportSummary>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<String>, DaemonError> {
    let link = j.seed.clone().expect("a cluster job has its seed").1;
    let metrics: Vec<Arc<SourceMetrics>> = runs
        .iter()
        .map(|r| SourceMetrics::new(&stream_key(&j.name, &r.stream)))
        .collect();
    if let Ok(mut m) = j.metrics.shards.lock() {
        *m = metrics.clone();
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, r) in runs.iter().enumerate() {
        let sub = Arc::new(shard_job(j, r, metrics[i].clone()));
        let mut stop = stop_rx.clone();
        let init = initial[i].take();
        tracing::info!(source = %j.name, stream = %r.stream, node = %r.addr, "following the shard");
        tasks.spawn(async move { run_sessions(&sub, &mut stop, init).await });
    }
    // The base's record, metrics and retention once the shards' streams are
    // followed (and acknowledged) again.
    if let Some(summary) = &stored {
        base_stored(j, summary).await;
    }
    let mut check = tokio::time::interval(LAYOUT_EVERY);
    let mut watching = None;
    check.tick().await;
    let end: Result<Option<String>, DaemonError> = loop {
        tokio::select! {
            _ = shutdown.changed() => break Ok(None),
            _ = check.tick() => {
                j.metrics
                    .connected
                    .store(metrics.iter().all(|m| m.connected.load(Relaxed)), Relaxed);
                // The first node that answers; none answering says nothing
                // (the shards' own links do).
                if let Some(t) = slot_map(&mut watching, known, &link).await {
                    if !layout_now.holds(&t) {
                        break Ok(Some("the cluster's slot map changed (a failover, or a slot moved)".into()));
                    }
                }
            }
            r = tasks.join_next() => match r {
                Some(Ok(Err(DaemonError::NeedClusterBase(why)))) => break Ok(Some(why)),
                Some(Ok(Err(e))) => break Err(e),
                Some(Ok(Ok(()))) | None => break Err(DaemonError::Lost("a shard's stream stopped".into())),
                Some(Err(e)) => break Err(DaemonError::Lost(format!("a shard's task ended: {e}"))),
            },
        }
    };
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) | Ok(Err(DaemonError::NeedClusterBase(_))) => {}
            Ok(Err(e)) => tracing::error!(source = %j.name, "stopping a shard: {e}"),
            Err(e) => tracing::error!(source = %j.name, "stopping a shard: {e}"),
        }
    }
    j.metrics.connected.store(false, Relaxed);
    if let Ok(Some(why)) = &end {
        let shards: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                let key = stream_key(&j.name, &r.stream);
                let at = j.checkpoints.get(&key).ok().flatten().map(|c| c.spooled);
                serde_json::json!({"stream": r.stream, "node": r.addr, "offset": at})
            })
            .collect();
        j.audit(
            "gap",
            serde_json::json!({"generation": generation, "why": why, "shards": shards}),
            None,
        );
    }
    end
}

/// Segments left in spools no shard of this round opens (a shard of an
/// earlier slot layout, or the single-server stream of a source that became
/// a cluster) are stored now, with their signed end, before anything else:
/// nothing cut is left behind. Bounded in time; what is still there stays
/// for the next round.
async fn drain_leftover_spools(j: &Job, runs: &[ShardRun]) {
    let Ok(entries) = std::fs::read_dir(&j.spool_dir) else {
        return;
    };
    let mut dirs = vec![j.spool_dir.clone()];
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let current = runs.iter().any(|r| r.stream == name);
        if e.path().is_dir() && name.starts_with("shard-") && !current {
            dirs.push(e.path());
        }
    }
    for dir in dirs {
        let metrics = SourceMetrics::new(&j.name);
        let Ok(spool) = super::spool::Spool::open(&dir, j.spool_max_bytes, metrics) else {
            continue;
        };
        if !spool.is_empty() {
            tracing::info!(source = %j.name, spool = %dir.display(), "storing what an earlier stream left in its spool");
            let (tx, _rx) = watch::channel((String::new(), 0u64));
            let uploader = super::session::AbortOnDrop(tokio::spawn(spool.clone().upload_forever(
                j.store.clone(),
                j.name.clone(),
                j.signer.clone(),
                tx,
            )));
            let drained = spool
                .drain_and_sign(&j.store, &j.name, &j.signer, Duration::from_secs(60), || {})
                .await;
            drop(uploader);
            if !drained {
                continue;
            }
        }
        if dir != j.spool_dir {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// A shard's stream as a job of its own: the cluster job's storage, keys and
/// settings, its own checkpoint key, spool and metrics; no retention (the
/// cluster job prunes whole generations).
fn shard_job(j: &Job, r: &ShardRun, metrics: Arc<SourceMetrics>) -> Job {
    Job {
        name: j.name.clone(),
        state_dir: j.state_dir.clone(),
        from: r.from.clone(),
        bases_only: false,
        store: j.store.clone(),
        kek: j.kek.clone(),
        signer: j.signer.clone(),
        trust: j.trust.clone(),
        seal: j.seal.clone(),
        checkpoints: j.checkpoints.clone(),
        spool_dir: j.spool_dir.join(&r.stream),
        spool_max_bytes: j.spool_max_bytes,
        cut_interval: j.cut_interval,
        segment_max_bytes: j.segment_max_bytes,
        max_segments_per_sec: j.max_segments_per_sec,
        fingerprint_every: None,
        drill: None,
        from_replica: false,
        schedule: j.schedule.clone(),
        retention: Retention::default(),
        audit: j.audit.clone(),
        metrics,
        seed: None,
        stream: Some(r.stream.clone()),
    }
}
