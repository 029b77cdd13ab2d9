//! One job (one Redis being backed up): replication sessions (a new base, or
//! the stream resumed from the checkpoint), the command stream cut into sealed
//! segments and spooled, ACKs of the durable offset, and the loop that restarts
//! sessions with backoff.

use super::checkpoint::{Checkpoint, Checkpoints};
use super::metrics::{unix_now, SourceMetrics};
use super::schedule::BaseSchedule;
use super::segmenter::Segmenter;
use super::spool::Spool;
use super::DaemonError;
use crate::backup::{export_and_follow, prune, ExportRequest, Retention};
use crate::command::Command;
use crate::data_key::DataKey;
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::sealer::SealOptions;
use crate::signing::{Signer, Trust};
use crate::source::{Acker, CommandFeed, Resumed, Source, SourceError};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Everything one job needs: what to back up, where, and how.
pub struct Job {
    /// The source name in the layout (and the metrics' `source` label).
    pub name: String,
    /// The daemon's state directory (the writer lease names it).
    pub state_dir: PathBuf,
    pub from: Arc<dyn Source>,
    /// A source with no command stream (SCAN): a base on every schedule
    /// tick, nothing between them.
    pub bases_only: bool,
    pub store: Store,
    pub kek: Arc<dyn Kek>,
    /// Signs manifests, segments and chain heads.
    pub signer: Arc<Signer>,
    /// Whose generations retention counts (this signer, and any configured).
    pub trust: Trust,
    pub seal: SealOptions,
    pub checkpoints: Arc<Checkpoints>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Cut a segment this long after its first write.
    pub cut_interval: Duration,
    /// ... or when it holds this many bytes.
    pub segment_max_bytes: usize,
    /// Cuts asked for by WAIT (REPLCONF GETACK) a second, at most.
    pub max_segments_per_sec: u32,
    /// Read the source's keys per database this often, for drills
    /// (`fingerprint.rs`); None: never.
    pub fingerprint_every: Option<Duration>,
    pub schedule: Option<BaseSchedule>,
    pub retention: Retention,
    /// Records this source's events (generation start, gap, spool full,
    /// retention) in the audit log.
    pub audit: crate::audit::Audit,
    pub metrics: Arc<SourceMetrics>,
    /// The Redis the source is reached by: a Redis Cluster node there makes
    /// this a cluster job (`cluster.rs`; a SCAN job's bases read every
    /// primary).
    pub seed: Option<(crate::resp::RedisUrl, crate::resp::ConnectOptions)>,
    /// One shard's stream of a cluster job (`shard-<first>-<last>`): its
    /// checkpoint is `<name>/<stream>`, and a new base is the cluster's.
    pub stream: Option<String>,
    /// Scheduled drills of this source (`drills.rs`), run beside the job.
    pub drill: Option<super::drills::DrillPlan>,
    /// A cluster's shards are read from a replica of each primary (sparing
    /// the primaries' forks and replication buffers).
    pub from_replica: bool,
}

/// The checkpoint key (and metrics name) of a cluster source's shard stream.
pub(super) fn stream_key(source: &str, stream: &str) -> String {
    format!("{source}/{stream}")
}

impl Job {
    /// A cluster base of this job's source into its store.
    pub(super) fn cluster_request(
        &self,
        shards: Vec<crate::backup::Shard>,
        seed: crate::resp::RedisUrl,
        link: crate::resp::ConnectOptions,
        topology: Vec<crate::resp::cluster::SlotRange>,
    ) -> crate::backup::ClusterExportRequest {
        crate::backup::ClusterExportRequest {
            shards,
            seed,
            link,
            topology,
            store: self.store.clone(),
            source: self.name.clone(),
            kek: Some(self.kek.clone()),
            signer: self.signer.clone(),
            seal: self.seal.clone(),
        }
    }

    /// The checkpoint's key: the source, or `<source>/<shard stream>`.
    pub fn key(&self) -> String {
        match &self.stream {
            Some(s) => stream_key(&self.name, s),
            None => self.name.clone(),
        }
    }

    /// Records a daemon event for this source. A log that cannot be written
    /// is an error in the journal and the error count, never the end of the
    /// backups it would record.
    pub fn audit(&self, event: &str, details: serde_json::Value, error: Option<&str>) {
        let mut details = details;
        if let Some(m) = details.as_object_mut() {
            m.insert("source".into(), self.name.clone().into());
        }
        if let Err(e) = self.audit.record(event, Some(details), error) {
            self.metrics.errors.fetch_add(1, Relaxed);
            tracing::error!(source = %self.name, "{e}");
        }
    }
}

/// Why a session ended without an error.
enum SessionEnd {
    Shutdown,
    NewBase,
}

/// Runs sessions for one job until `shutdown` turns true; then waits briefly
/// for the spool to drain and leaves a checkpoint for the next start. Errors
/// of a session are logged, counted and retried here with backoff.
pub async fn run_job(j: Arc<Job>, mut shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    // One writer per source: nothing is sent or stored without the lease.
    let lease = Arc::new(super::lease::Lease::acquire(&j.store, &j.name, &j.state_dir).await?);
    let mut renewer = {
        let lease = lease.clone();
        let name = j.name.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::lease::RENEW_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = lease.renew().await {
                    tracing::error!(source = %name, "renewing the writer lease: {e}");
                }
            }
        }))
    };
    let r = if j.bases_only {
        run_bases(&j, &mut shutdown).await
    } else {
        match super::cluster::is_cluster(&j, &mut shutdown).await {
            Some(true) => super::cluster::run_cluster(&j, &mut shutdown).await,
            Some(false) if j.from_replica => Err(DaemonError::Invalid(format!(
                "source {}: from_replica reads each shard of a Redis Cluster from a replica, and its server is no cluster node: give the replica's URL as its redis instead",
                j.name
            ))),
            Some(false) => run_sessions(&j, &mut shutdown, None).await,
            None => Ok(()), // stopped before the server answered
        }
    };
    // The renewer holds a reference: end it before giving the lease up.
    renewer.0.abort();
    let _ = (&mut renewer.0).await;
    if let Ok(lease) = Arc::try_unwrap(lease) {
        lease.release().await;
    }
    r
}

/// Sessions of one stream until shutdown. `initial`: the stream of a base
/// just taken (a cluster shard's). A shard's stream that needs a new base
/// ends with `NeedClusterBase`, after its spool drained as at a stop.
pub(super) async fn run_sessions(
    j: &Arc<Job>,
    shutdown: &mut watch::Receiver<bool>,
    mut initial: Option<(Checkpoint, CommandFeed)>,
) -> Result<(), DaemonError> {
    let spool = Spool::open(&j.spool_dir, j.spool_max_bytes, j.metrics.clone())
        .map_err(DaemonError::Spool)?;
    let (dtx, mut durable) = watch::channel((String::new(), 0u64));
    // Aborted whenever this function ends, a panic included: a restarted job
    // must not find a second uploader on its spool.
    let _uploader = AbortOnDrop(tokio::spawn(spool.clone().upload_forever(
        j.store.clone(),
        j.name.clone(),
        j.signer.clone(),
        dtx,
    )));
    let mut force_full = false;
    let mut backoff = Duration::from_secs(1);
    let mut ended = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let r = session(
            j,
            &spool,
            &mut durable,
            force_full,
            initial.take(),
            shutdown,
        )
        .await;
        j.metrics.connected.store(false, Relaxed);
        match r {
            Ok(SessionEnd::Shutdown) => break,
            Err(DaemonError::NeedClusterBase(why)) => {
                ended = Some(why);
                break;
            }
            Ok(SessionEnd::NewBase) => {
                force_full = true;
                backoff = Duration::from_secs(1);
            }
            Err(DaemonError::SpoolFull(why)) => {
                j.metrics.spool_full.store(true, Relaxed);
                j.metrics.gaps.fetch_add(1, Relaxed);
                tracing::error!(source = %j.key(), "{why}; the link is dropped until storage catches up, then a new generation starts (a gap in point-in-time coverage)");
                j.audit("spool full", serde_json::json!({}), Some(&why.to_string()));
                while !spool.is_empty() && !*shutdown.borrow() {
                    apply_durable(j, &mut durable);
                    let _ = tokio::time::timeout(Duration::from_secs(1), shutdown.changed()).await;
                }
                j.metrics.spool_full.store(false, Relaxed);
                force_full = true;
            }
            Err(e) => {
                j.metrics.errors.fetch_add(1, Relaxed);
                tracing::error!(source = %j.key(), "replication session ended: {e}; retrying in {backoff:?}");
                let _ = tokio::time::timeout(backoff, shutdown.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Give storage a moment to take what is spooled; the rest is uploaded on the
    // next start (the spool is on disk, sealed).
    spool
        .drain_and_sign(
            &j.store,
            &j.name,
            &j.signer,
            Duration::from_secs(10),
            || apply_durable(j, &mut durable),
        )
        .await;
    tracing::info!(source = %j.key(), spooled_segments_left = !spool.is_empty(), "stopped");
    match ended {
        Some(why) => Err(DaemonError::NeedClusterBase(why)),
        None => Ok(()),
    }
}

/// One SCAN base of every primary of the cluster the job's server is a
/// node of, as one cluster generation.
async fn scan_cluster_base(
    j: &Job,
) -> Result<crate::backup::ExportSummary, crate::backup::BackupError> {
    let (seed, link) = j.seed.clone().ok_or_else(|| {
        crate::backup::BackupError::Invalid("a SCAN job without its server's address".into())
    })?;
    let scan = |url| -> Arc<dyn Source> {
        Arc::new(crate::source::ScanSource::new(url, link.clone(), 4, None).shard())
    };
    let (shards, topology) = crate::backup::cluster_shards(&seed, &link, &scan, false).await?;
    let req = j.cluster_request(shards, seed, link, topology);
    crate::backup::export_cluster(req, &|_, _| {}).await
}

/// A source with no stream (SCAN): a base now and on every schedule tick,
/// each a generation of its own (not point-in-time), retried with backoff
/// when one fails. `connected` says whether the last base was stored.
async fn run_bases(j: &Arc<Job>, shutdown: &mut watch::Receiver<bool>) -> Result<(), DaemonError> {
    let mut backoff = Duration::from_secs(1);
    while !*shutdown.borrow() {
        j.metrics.in_base.store(true, Relaxed);
        let req = ExportRequest {
            from: j.from.clone(),
            store: j.store.clone(),
            source: j.name.clone(),
            kek: Some(j.kek.clone()),
            signer: j.signer.clone(),
            seal: j.seal.clone(),
        };
        let r = match crate::backup::export(req, &|_, _| {}).await {
            // A cluster node: every primary, read with SCAN.
            Err(crate::backup::BackupError::Source(SourceError::ClusterNode(_))) => {
                scan_cluster_base(j).await
            }
            other => other,
        };
        j.metrics.in_base.store(false, Relaxed);
        let wait = match r {
            Ok(summary) => {
                j.metrics.connected.store(true, Relaxed);
                base_stored(j, &summary).await;
                backoff = Duration::from_secs(1);
                j.schedule
                    .as_ref()
                    .map_or(Duration::from_secs(3600), |s| s.until_next())
            }
            Err(e) => {
                j.metrics.connected.store(false, Relaxed);
                j.metrics.errors.fetch_add(1, Relaxed);
                tracing::error!(source = %j.key(), "SCAN base failed: {e}; retrying in {backoff:?}");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                w
            }
        };
        let _ = tokio::time::timeout(wait, shutdown.changed()).await;
    }
    tracing::info!(source = %j.key(), "stopped");
    Ok(())
}

/// A task aborted when this is dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records a durable offset of `generation` in the checkpoint and the metrics;
/// true if it moved.
fn record_durable(j: &Job, generation: &str, to: u64) -> Result<bool, DaemonError> {
    let mut moved = false;
    j.checkpoints.update(&j.key(), generation, |cp| {
        if to > cp.durable {
            cp.durable = to;
            moved = true;
        }
    })?;
    if moved {
        j.metrics.durable_offset.store(to, Relaxed);
    }
    Ok(moved)
}

/// Takes what storage acknowledged (outside a session) into the checkpoint.
fn apply_durable(j: &Job, durable: &mut watch::Receiver<(String, u64)>) {
    if !durable.has_changed().unwrap_or(false) {
        return;
    }
    let (generation, to) = durable.borrow_and_update().clone();
    if let Err(e) = record_durable(j, &generation, to) {
        tracing::error!(source = %j.key(), "{e}");
    }
}

/// A new generation: a snapshot that becomes the base, then its stream. A
/// cluster shard's base is the whole cluster's: its job asks for it.
async fn new_base(j: &Job) -> Result<(Checkpoint, CommandFeed), DaemonError> {
    if j.stream.is_some() {
        return Err(DaemonError::NeedClusterBase(format!(
            "{} needs a new base",
            j.key()
        )));
    }
    let req = ExportRequest {
        from: j.from.clone(),
        store: j.store.clone(),
        source: j.name.clone(),
        kek: Some(j.kek.clone()),
        signer: j.signer.clone(),
        seal: j.seal.clone(),
    };
    let (summary, feed) = export_and_follow(req, &|_, _| {}).await?;
    let offset = summary.manifest.redis.offset;
    let cp = Checkpoint {
        replid: summary.manifest.redis.replid.clone(),
        generation: summary.generation.clone(),
        durable: offset,
        spooled: offset,
        link: Some(hex::encode(crate::aof::chain::GENESIS)),
    };
    // The generation this one replaces ends where its checkpoint stood.
    let ended = j.checkpoints.get(&j.key())?;
    j.checkpoints.put(&j.key(), &cp)?;
    // Recorded before the metrics say so: whoever reads them sees it logged.
    if let Some(old) = ended.filter(|old| old.generation != cp.generation) {
        j.audit(
            "generation end",
            serde_json::json!({"generation": old.generation, "offset": old.spooled}),
            None,
        );
    }
    base_stored(j, &summary).await;
    Ok((cp, feed))
}

/// A base is stored: its audit record, metrics, log line, and retention.
pub(super) async fn base_stored(j: &Job, summary: &crate::backup::ExportSummary) {
    let offset = summary.manifest.redis.offset;
    j.audit(
        "generation start",
        serde_json::json!({
            "generation": summary.generation,
            "offset": offset,
            "replid": summary.manifest.redis.replid,
            "method": summary.manifest.redis.method.as_deref().unwrap_or("psync"),
            "keks": summary.manifest.keks,
            "signer": summary.manifest.signer,
            "rdb_bytes": summary.rdb_bytes,
            "stored_bytes": summary.stored_bytes,
        }),
        None,
    );
    j.metrics.bases.fetch_add(1, Relaxed);
    j.metrics.last_base_time.store(unix_now(), Relaxed);
    j.metrics.durable_offset.store(offset, Relaxed);
    j.metrics
        .uploaded_bytes
        .fetch_add(summary.stored_bytes, Relaxed);
    tracing::info!(source = %j.key(), generation = %summary.generation, offset, rdb_bytes = summary.rdb_bytes, stored_bytes = summary.stored_bytes, seconds = summary.seconds, point_in_time = summary.manifest.redis.point_in_time(), "base snapshot stored");
    if j.retention.is_set() {
        match prune(&j.store, Some(&j.name), &j.retention, false, &j.trust).await {
            Ok(p) if !p.is_empty() => {
                tracing::info!(source = %j.key(), generations = p.len(), "retention pruned");
                j.audit("prune", serde_json::json!({"pruned": p}), None);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(source = %j.key(), "retention: {e}");
                j.audit("prune", serde_json::json!({}), Some(&e.to_string()));
            }
        }
    }
}

/// A segment cut just before a crash is in the spool (or already in storage)
/// while the checkpoint was not yet told: take it in (its end and its link),
/// so the stream resumes after it and the chain goes on from it, instead of
/// cutting the same range again under another key.
async fn catch_up_cut(j: &Job, spool: &Spool, cp: &mut Checkpoint) -> Result<(), DaemonError> {
    use crate::backup::layout::{parse_segment_name, GenerationDir};
    let dir = GenerationDir::new(&j.name, &cp.generation);
    for _ in 0..4 {
        let sealed = match spool.queued_from(&cp.generation, cp.spooled) {
            Some(b) => Some(b),
            None => {
                // Storage down: the spool goes on; at worst the range is cut
                // again (both cuts fit the chain; see backup::chain).
                let Ok(listed) = j.store.list(&dir.aof_dir(&j.store)).await else {
                    return Ok(());
                };
                let found = listed.into_iter().find(|o| {
                    o.location
                        .filename()
                        .and_then(parse_segment_name)
                        .is_some_and(|(from, _)| from == cp.spooled)
                });
                match found {
                    Some(o) => j.store.read(&o.location).await.ok().map(|b| b.to_vec()),
                    None => None,
                }
            }
        };
        let Some(sealed) = sealed else { return Ok(()) };
        let mut input = &sealed[..];
        let Ok(raw) = crate::opener::RawHeader::read(&mut input, "segment").await else {
            return Ok(());
        };
        let Some((st, link)) = crate::aof::chain::own_statement(&raw.header.attestation) else {
            return Ok(());
        };
        let ours = st.signer == j.signer.id_bytes()
            && st.source == j.name
            && st.generation == cp.generation
            && st.from == cp.spooled
            && st.to > st.from;
        if !ours {
            return Ok(());
        }
        tracing::info!(source = %j.key(), generation = %cp.generation, from = st.from, to = st.to, "a segment cut before the last stop was not yet in the checkpoint; continuing after it");
        cp.spooled = st.to;
        cp.link = Some(hex::encode(link));
        j.checkpoints.put(&j.key(), cp)?;
    }
    Ok(())
}

/// The stream of the checkpoint's generation, or a new base when there is
/// none or the source cannot continue it.
async fn start(
    j: &Job,
    spool: &Spool,
    force_full: bool,
    initial: Option<(Checkpoint, CommandFeed)>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Checkpoint, CommandFeed), DaemonError> {
    if let Some(taken) = initial {
        return Ok(taken);
    }
    let checkpoint = if force_full {
        None
    } else {
        j.checkpoints.get(&j.key())?
    };
    let Some(mut cp) = checkpoint else {
        return new_base(j).await;
    };
    if cp.link.is_none() {
        tracing::warn!(source = %j.key(), generation = %cp.generation, "the checkpoint was written by an older redvault (unsigned segments): generation {} ends at offset {}; a new, signed generation starts", cp.generation, cp.spooled);
        j.audit(
            "gap",
            serde_json::json!({"generation": cp.generation, "offset": cp.spooled, "why": "the checkpoint was written by an older redvault (unsigned segments)"}),
            None,
        );
        return new_base(j).await;
    }
    catch_up_cut(j, spool, &mut cp).await?;
    // A server that takes long to answer (a node in the middle of its own
    // sync after a failover) must not hold up a stop.
    let resumed = tokio::select! {
        r = j.from.resume(&cp.replid, cp.spooled) => r?,
        _ = stop.changed() => return Err(DaemonError::Stopped),
    };
    match resumed {
        Resumed::Stream { replid, feed } => {
            tracing::info!(source = %j.key(), generation = %cp.generation, offset = cp.spooled, "continuing the stream (PSYNC CONTINUE)");
            if replid != cp.replid {
                cp.replid = replid;
                j.checkpoints.put(&j.key(), &cp)?;
            }
            Ok((cp, feed))
        }
        Resumed::NeedSnapshot { replid } => {
            j.metrics.gaps.fetch_add(1, Relaxed);
            tracing::warn!(source = %j.key(), old_generation = %cp.generation, closed_at = cp.spooled, new_replid = %replid, "the primary cannot continue from offset {} (failover, restart or backlog too small): generation {} ends there; a new generation starts (gap)", cp.spooled, cp.generation);
            j.audit(
                "gap",
                serde_json::json!({
                    "generation": cp.generation,
                    "offset": cp.spooled,
                    "replid": cp.replid,
                    "new_replid": replid,
                    "why": "the primary cannot continue from the offset (failover, restart or backlog too small)",
                }),
                None,
            );
            new_base(j).await
        }
    }
}

async fn session(
    j: &Job,
    spool: &Arc<Spool>,
    durable: &mut watch::Receiver<(String, u64)>,
    force_full: bool,
    initial: Option<(Checkpoint, CommandFeed)>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, DaemonError> {
    // This session's data key for its segments, wrapped before anything else:
    // with no usable KEK nothing is written.
    let dek = DataKey::generate();
    let ring = Keyring::wrap(&dek, j.kek.as_ref()).await?;
    let (cp, feed) = match start(j, spool, force_full, initial, shutdown.clone()).await {
        Err(DaemonError::Stopped) => return Ok(SessionEnd::Shutdown),
        r => r?,
    };
    j.metrics.connected.store(true, Relaxed);
    j.metrics.received_offset.store(cp.spooled, Relaxed);
    j.metrics.durable_offset.store(cp.durable, Relaxed);
    super::notify::notify(&format!(
        "STATUS={}: following generation {}",
        j.name, cp.generation
    ));

    let CommandFeed {
        mut reader,
        mut acker,
    } = feed;
    let (tx, mut rx) = mpsc::channel::<Result<Option<Command>, SourceError>>(8192);
    let reader_task = tokio::spawn(async move {
        loop {
            let item = reader.next().await;
            let end = !matches!(item, Ok(Some(_)));
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    let prev = cp
        .link
        .as_deref()
        .and_then(|l| hex::decode(l).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            DaemonError::Lost("the checkpoint's chain link is not 32 bytes of hex".into())
        })?;
    let mut seg = Segmenter::new(
        &j.name,
        &cp.generation,
        cp.spooled,
        prev,
        dek,
        ring,
        j.signer.clone(),
    );
    // Fingerprints for drills: a single server's (a shard's counts would
    // hold only its slots, and a cluster generation is drilled whole).
    let _fingerprints = match (&j.seed, j.fingerprint_every, &j.stream) {
        (Some((url, link)), Some(every), None) => Some(AbortOnDrop(tokio::spawn(fingerprints(
            url.clone(),
            link.clone(),
            spool.clone(),
            cp.generation.clone(),
            cp.replid.clone(),
            every,
            j.name.clone(),
        )))),
        _ => None,
    };
    let mut wires = Wires {
        durable,
        shutdown,
        commands: &mut rx,
        acker: acker.as_mut(),
    };
    let result = follow(j, spool, &mut wires, &mut seg, cp.durable).await;
    reader_task.abort();
    result
}

/// What a session listens to and talks on.
struct Wires<'a> {
    /// (generation, offset) storage has acknowledged.
    durable: &'a mut watch::Receiver<(String, u64)>,
    shutdown: &'a mut watch::Receiver<bool>,
    /// The command stream, read by the reader task.
    /// The command stream as the reader task saw it (`Ok(None)`: it ended).
    commands: &'a mut mpsc::Receiver<Result<Option<Command>, SourceError>>,
    acker: &'a mut dyn Acker,
}

async fn ack(acker: &mut dyn Acker, offset: u64) -> Result<(), DaemonError> {
    acker
        .ack(offset)
        .await
        .map_err(|e| DaemonError::Lost(format!("sending ACK: {e}")))
}

/// The session's loop: commands into the segment, cuts when due, ACKs of
/// what storage holds, until a new base is due, shutdown, or the link fails.
/// Whatever ends it, the open segment is cut first.
async fn follow(
    j: &Job,
    spool: &Spool,
    w: &mut Wires<'_>,
    seg: &mut Segmenter,
    mut durable_offset: u64,
) -> Result<SessionEnd, DaemonError> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ack_tick = tokio::time::interval(Duration::from_secs(1));
    let next_base = j
        .schedule
        .as_ref()
        .map(|b| tokio::time::Instant::now() + b.until_next());
    let base_due = async {
        match next_base {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(base_due);
    // RPO on demand: Redis asks its replicas for an ACK (REPLCONF GETACK)
    // when a client waits in WAIT. Writes pending then are cut at once (a
    // burst of waiters within COALESCE shares one segment), at most
    // max_segments_per_sec such cuts a second; the ACK follows when storage
    // holds them. Without waiters the cut interval stays.
    const COALESCE: Duration = Duration::from_millis(2);
    let spacing = Duration::from_secs(1) / j.max_segments_per_sec.max(1);
    let mut cut_soon: Option<tokio::time::Instant> = None;
    let mut last_asked_cut: Option<tokio::time::Instant> = None;
    // A diskless primary starts the stream only after the first ACK.
    ack(w.acker, durable_offset).await?;
    loop {
        tokio::select! {
            _ = async { tokio::time::sleep_until(cut_soon.expect("guarded")).await }, if cut_soon.is_some() => {
                cut_soon = None;
                // A cut by interval or size may have taken the writes already.
                if seg.has_writes() {
                    last_asked_cut = Some(tokio::time::Instant::now());
                    cut_segment(j, seg, spool).await?;
                }
            }
            m = w.commands.recv() => match m {
                Some(Ok(Some(cmd))) => {
                    let getack = cmd.is_getack();
                    if getack {
                        ack(w.acker, durable_offset).await?;
                    }
                    seg.add(&cmd);
                    if getack && seg.has_writes() && cut_soon.is_none() {
                        let now = tokio::time::Instant::now();
                        let earliest = last_asked_cut.map_or(now, |t| t + spacing);
                        cut_soon = Some((now + COALESCE).max(earliest));
                    }
                    j.metrics.received_offset.store(cmd.offset, Relaxed);
                    if seg.buf.len() >= j.segment_max_bytes {
                        cut_segment(j, seg, spool).await?;
                    }
                }
                Some(Ok(None)) => {
                    cut_segment(j, seg, spool).await?;
                    return Err(DaemonError::Lost("the primary closed the replication link".into()));
                }
                Some(Err(e)) => {
                    cut_segment(j, seg, spool).await?;
                    return Err(DaemonError::Lost(e.to_string()));
                }
                None => {
                    cut_segment(j, seg, spool).await?;
                    return Err(DaemonError::Lost("the stream reader stopped".into()));
                }
            },
            _ = tick.tick() => {
                if seg.due(j.cut_interval, j.segment_max_bytes) {
                    cut_segment(j, seg, spool).await?;
                }
            }
            _ = ack_tick.tick() => ack(w.acker, durable_offset).await?,
            changed = w.durable.changed() => {
                if changed.is_ok() {
                    let (generation, to) = w.durable.borrow_and_update().clone();
                    if generation == seg.generation && to > durable_offset {
                        durable_offset = to;
                        record_durable(j, &generation, to)?;
                        j.metrics.durable_offset.store(to, Relaxed);
                        // WAIT on the primary returns now: the write is stored.
                        ack(w.acker, durable_offset).await?;
                    }
                }
            }
            _ = &mut base_due => {
                cut_segment(j, seg, spool).await?;
                tracing::info!(source = %j.key(), "scheduled base snapshot due");
                return Ok(SessionEnd::NewBase);
            }
            _ = w.shutdown.changed() => {
                cut_segment(j, seg, spool).await?;
                return Ok(SessionEnd::Shutdown);
            }
        }
    }
}

/// Takes a fingerprint of the source every `every` while none waits for a
/// head, on a connection of its own. The counts are worth nothing without
/// the right offset: one read under another replication id (a failover)
/// is dropped. A user that may not run MULTI, EXEC or INFO gets one warning.
async fn fingerprints(
    url: crate::resp::RedisUrl,
    link: crate::resp::ConnectOptions,
    spool: Arc<Spool>,
    stream: String,
    replid: String,
    every: Duration,
    source: String,
) {
    use crate::fingerprint::{probe, ProbeError};
    let mut conn = None;
    let mut tick = tokio::time::interval(every);
    // A failure that passes is logged once until a probe works again.
    let mut told = false;
    let tell = |told: &mut bool, why: String| {
        if !std::mem::replace(told, true) {
            tracing::warn!(source = %source, "reading the key counts for drills: {why}; trying again");
        }
    };
    loop {
        tick.tick().await;
        if spool.has_fingerprint(&stream) {
            continue;
        }
        if conn.is_none() {
            match crate::resp::connect(&url, &link).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tell(&mut told, crate::text::one_line(&e));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match tokio::time::timeout(Duration::from_secs(5), probe(c)).await {
            Ok(Ok((id, f))) if id == replid => {
                spool.offer_fingerprint(&stream, f);
                told = false;
            }
            Ok(Ok(_)) => {}
            Ok(Err(ProbeError::Refused(what))) => {
                tracing::warn!(
                    source = %source,
                    "no key counts for drills to compare: the server refused {what}; `redvault acl print --role daemon` prints a user that may"
                );
                return;
            }
            Ok(Err(ProbeError::Link(why))) => {
                tell(&mut told, why);
                conn = None;
            }
            Err(_) => {
                tell(&mut told, "no answer within 5 s".into());
                conn = None;
            }
        }
    }
}

async fn cut_segment(j: &Job, seg: &mut Segmenter, spool: &Spool) -> Result<(), DaemonError> {
    seg.cut(&j.key(), &j.seal, spool, &j.checkpoints).await
}
