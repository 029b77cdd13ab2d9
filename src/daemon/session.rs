//! One source: the replication session (a new base, or PSYNC continue from the
//! checkpoint), the command stream cut into sealed segments and spooled, ACKs of
//! the durable offset, and the supervisor that restarts sessions.

use super::checkpoint::{Checkpoint, Checkpoints};
use super::metrics::{unix_now, SourceMetrics};
use super::schedule::BaseSchedule;
use super::spool::{Spool, SpoolError};
use crate::aof::{encode_record, seal_segment, segment_name};
use crate::backup::export::{export_and_follow, ExportRequest};
use crate::backup::retention::{prune, Retention};
use crate::kek::Kek;
use crate::keyring::{DataKey, Keyring};
use crate::replication::{
    AckSender, CommandStream, Conn, LinkOptions, RedisUrl, ReplCommand, ReplicaLink, Sync,
};
use crate::sealer::SealOptions;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Everything one source needs.
pub struct SourceSettings {
    pub name: String,
    pub redis: RedisUrl,
    pub link: LinkOptions,
    pub store: Store,
    pub kek: Arc<dyn Kek>,
    pub seal: SealOptions,
    pub checkpoints: Arc<Checkpoints>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Cut a segment this long after its first write.
    pub cut_interval: Duration,
    /// ... or when it holds this many bytes.
    pub segment_max_bytes: usize,
    pub schedule: Option<BaseSchedule>,
    pub retention: Retention,
    pub metrics: Arc<SourceMetrics>,
}

enum End {
    Shutdown,
    NewBase,
    SpoolFull(String),
    Lost(String),
}

/// Runs sessions for one source until `shutdown` turns true; then waits briefly
/// for the spool to drain and leaves a checkpoint for the next start.
pub async fn run_source(
    s: SourceSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let spool = Spool::open(&s.spool_dir, s.spool_max_bytes, s.metrics.clone())
        .map_err(|e| e.to_string())?;
    let (dtx, mut durable) = watch::channel((String::new(), 0u64));
    let uploader = tokio::spawn(
        spool
            .clone()
            .upload_forever(s.store.clone(), s.name.clone(), dtx),
    );
    let mut force_full = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let r = session(&s, &spool, &mut durable, force_full, &mut shutdown).await;
        s.metrics.connected.store(false, Relaxed);
        match r {
            Ok(End::Shutdown) => break,
            Ok(End::NewBase) => {
                force_full = true;
                backoff = Duration::from_secs(1);
            }
            Ok(End::SpoolFull(why)) => {
                s.metrics.spool_full.store(true, Relaxed);
                s.metrics.gaps.fetch_add(1, Relaxed);
                tracing::error!(source = %s.name, "{why}; the link is dropped until storage catches up, then a new generation starts (a gap in point-in-time coverage)");
                while !spool.is_empty() && !*shutdown.borrow() {
                    apply_durable(&s, &mut durable);
                    let _ = tokio::time::timeout(Duration::from_secs(1), shutdown.changed()).await;
                }
                s.metrics.spool_full.store(false, Relaxed);
                force_full = true;
            }
            Ok(End::Lost(e)) | Err(e) => {
                s.metrics.errors.fetch_add(1, Relaxed);
                tracing::error!(source = %s.name, "replication session ended: {e}; retrying in {backoff:?}");
                let _ = tokio::time::timeout(backoff, shutdown.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Give storage a moment to take what is spooled; the rest is uploaded on the
    // next start (the spool is on disk, sealed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spool.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        apply_durable(&s, &mut durable);
    }
    apply_durable(&s, &mut durable);
    uploader.abort();
    tracing::info!(source = %s.name, spooled_segments_left = !spool.is_empty(), "stopped");
    Ok(())
}

/// Records what storage acknowledged in the checkpoint; returns the durable
/// offset of the current generation if it moved.
fn apply_durable(s: &SourceSettings, durable: &mut watch::Receiver<(String, u64)>) -> Option<u64> {
    if !durable.has_changed().unwrap_or(false) {
        return None;
    }
    let (generation, to) = durable.borrow_and_update().clone();
    let mut cp = s.checkpoints.get(&s.name).ok().flatten()?;
    if cp.generation != generation || to <= cp.durable {
        return None;
    }
    cp.durable = to;
    if let Err(e) = s.checkpoints.put(&s.name, &cp) {
        tracing::error!(source = %s.name, "{e}");
    }
    s.metrics.durable_offset.store(to, Relaxed);
    Some(to)
}

/// A new generation: a full sync whose RDB becomes the base, then the link.
async fn new_base(s: &SourceSettings) -> Result<(Checkpoint, Conn), String> {
    let req = ExportRequest {
        redis: s.redis.clone(),
        link: s.link.clone(),
        store: s.store.clone(),
        source: s.name.clone(),
        kek: Some(s.kek.clone()),
        seal: s.seal.clone(),
    };
    let (summary, conn) = export_and_follow(req, &|_, _| {})
        .await
        .map_err(|e| e.to_string())?;
    let offset = summary.manifest.redis.offset;
    let cp = Checkpoint {
        replid: summary.manifest.redis.replid.clone(),
        generation: summary.generation.clone(),
        durable: offset,
        spooled: offset,
    };
    s.checkpoints.put(&s.name, &cp).map_err(|e| e.to_string())?;
    s.metrics.bases.fetch_add(1, Relaxed);
    s.metrics.last_base_time.store(unix_now(), Relaxed);
    s.metrics.durable_offset.store(offset, Relaxed);
    s.metrics
        .uploaded_bytes
        .fetch_add(summary.stored_bytes, Relaxed);
    tracing::info!(source = %s.name, generation = %summary.generation, offset, rdb_bytes = summary.rdb_bytes, stored_bytes = summary.stored_bytes, seconds = summary.seconds, "base snapshot stored");
    if s.retention.is_set() {
        match prune(&s.store, Some(&s.name), &s.retention, false).await {
            Ok(p) if !p.is_empty() => {
                tracing::info!(source = %s.name, generations = p.len(), "retention pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(source = %s.name, "retention: {e}"),
        }
    }
    Ok((cp, conn))
}

/// The open segment being filled.
struct Segmenter {
    generation: String,
    dek: DataKey,
    ring: Keyring,
    buf: Vec<u8>,
    from: u64,
    to: u64,
    first_at: Option<Instant>,
    has_writes: bool,
}

impl Segmenter {
    fn add(&mut self, cmd: &ReplCommand, time_ms: u64) {
        encode_record(&mut self.buf, cmd.offset, time_ms, &cmd.args);
        self.to = cmd.offset;
        self.first_at.get_or_insert_with(Instant::now);
        let name = cmd.args.first().map(|a| a.as_slice()).unwrap_or_default();
        if !(name.eq_ignore_ascii_case(b"PING") || name.eq_ignore_ascii_case(b"REPLCONF")) {
            self.has_writes = true;
        }
    }

    /// Due: writes waiting for the cut interval, or only keepalives for a minute.
    fn due(&self, interval: Duration, max_bytes: usize) -> bool {
        let age = self.first_at.map(|t| t.elapsed()).unwrap_or_default();
        self.buf.len() >= max_bytes
            || (self.has_writes && age >= interval)
            || (!self.buf.is_empty() && age >= Duration::from_secs(60))
    }

    /// Seals what is buffered into the spool and records it in the checkpoint.
    async fn cut(&mut self, s: &SourceSettings, spool: &Spool) -> Result<(), End> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let name = segment_name(self.from, self.to);
        let sealed = seal_segment(
            &self.buf,
            &self.generation,
            &name,
            &self.dek,
            &self.ring,
            &s.seal,
        )
        .await
        .map_err(|e| End::Lost(format!("sealing segment {name}: {e}")))?;
        match spool.push(&self.generation, &name, self.to, &sealed) {
            Ok(()) => {}
            Err(e @ SpoolError::Full { .. }) => return Err(End::SpoolFull(e.to_string())),
            Err(e) => return Err(End::Lost(e.to_string())),
        }
        if let Ok(Some(mut cp)) = s.checkpoints.get(&s.name) {
            if cp.generation == self.generation {
                cp.spooled = self.to;
                s.checkpoints
                    .put(&s.name, &cp)
                    .map_err(|e| End::Lost(e.to_string()))?;
            }
        }
        self.buf.clear();
        self.from = self.to;
        self.first_at = None;
        self.has_writes = false;
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn session(
    s: &SourceSettings,
    spool: &Arc<Spool>,
    durable: &mut watch::Receiver<(String, u64)>,
    force_full: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<End, String> {
    // This session's data key for its segments, wrapped before anything else:
    // with no usable KEK nothing is written.
    let dek = DataKey::generate();
    let ring = Keyring::wrap(&dek, s.kek.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let checkpoint = if force_full {
        None
    } else {
        s.checkpoints.get(&s.name).map_err(|e| e.to_string())?
    };
    let (mut cp, conn) = match checkpoint {
        Some(mut cp) => {
            let link = ReplicaLink::connect(&s.redis, &s.link)
                .await
                .map_err(|e| e.to_string())?;
            match link
                .resume(&cp.replid, cp.spooled + 1)
                .await
                .map_err(|e| e.to_string())?
            {
                Sync::Continue { replid, conn } => {
                    tracing::info!(source = %s.name, generation = %cp.generation, offset = cp.spooled, "continuing the stream (PSYNC CONTINUE)");
                    if replid != cp.replid {
                        cp.replid = replid;
                        s.checkpoints.put(&s.name, &cp).map_err(|e| e.to_string())?;
                    }
                    (cp, conn)
                }
                Sync::Full(info, _) => {
                    s.metrics.gaps.fetch_add(1, Relaxed);
                    tracing::warn!(source = %s.name, old_generation = %cp.generation, closed_at = cp.spooled, new_replid = %info.replid, "the primary cannot continue from offset {} (failover, restart or backlog too small): generation {} ends there; a new generation starts (gap)", cp.spooled, cp.generation);
                    new_base(s).await?
                }
            }
        }
        None => new_base(s).await?,
    };
    s.metrics.connected.store(true, Relaxed);
    s.metrics.received_offset.store(cp.spooled, Relaxed);
    s.metrics.durable_offset.store(cp.durable, Relaxed);
    super::notify::notify(&format!(
        "STATUS={}: following generation {}",
        s.name, cp.generation
    ));

    let (mut reader, mut acker) = CommandStream::new(conn, cp.spooled).split();
    let (tx, mut rx) = mpsc::channel::<Result<(ReplCommand, u64), String>>(8192);
    let reader_task = tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Some(cmd)) => Ok((cmd, now_ms())),
                Ok(None) => Err("the primary closed the replication link".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    let result = follow(
        s, spool, durable, shutdown, &mut cp, dek, ring, &mut rx, &mut acker,
    )
    .await;
    reader_task.abort();
    result
}

async fn ack(acker: &mut AckSender, offset: u64) -> Result<(), End> {
    acker
        .ack(offset)
        .await
        .map_err(|e| End::Lost(format!("sending ACK: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    s: &SourceSettings,
    spool: &Arc<Spool>,
    durable: &mut watch::Receiver<(String, u64)>,
    shutdown: &mut watch::Receiver<bool>,
    cp: &mut Checkpoint,
    dek: DataKey,
    ring: Keyring,
    rx: &mut mpsc::Receiver<Result<(ReplCommand, u64), String>>,
    acker: &mut AckSender,
) -> Result<End, String> {
    let mut seg = Segmenter {
        generation: cp.generation.clone(),
        dek,
        ring,
        buf: Vec::with_capacity(64 << 10),
        from: cp.spooled,
        to: cp.spooled,
        first_at: None,
        has_writes: false,
    };
    let mut durable_offset = cp.durable;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ack_tick = tokio::time::interval(Duration::from_secs(1));
    let next_base = s
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
    let outcome: Result<End, End> = async {
        // A diskless primary starts the stream only after the first ACK.
        ack(acker, durable_offset).await?;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Ok((cmd, t))) => {
                        if cmd.is_getack() {
                            ack(acker, durable_offset).await?;
                        }
                        seg.add(&cmd, t);
                        s.metrics.received_offset.store(cmd.offset, Relaxed);
                        if seg.buf.len() >= s.segment_max_bytes {
                            seg.cut(s, spool).await?;
                        }
                    }
                    Some(Err(e)) => {
                        seg.cut(s, spool).await?;
                        return Err(End::Lost(e));
                    }
                    None => {
                        seg.cut(s, spool).await?;
                        return Err(End::Lost("the stream reader stopped".into()));
                    }
                },
                _ = tick.tick() => {
                    if seg.due(s.cut_interval, s.segment_max_bytes) {
                        seg.cut(s, spool).await?;
                    }
                }
                _ = ack_tick.tick() => ack(acker, durable_offset).await?,
                changed = durable.changed() => {
                    if changed.is_ok() {
                        let (generation, to) = durable.borrow_and_update().clone();
                        if generation == seg.generation && to > durable_offset {
                            durable_offset = to;
                            if let Ok(Some(mut c)) = s.checkpoints.get(&s.name) {
                                if c.generation == generation && to > c.durable {
                                    c.durable = to;
                                    s.checkpoints.put(&s.name, &c).map_err(|e| End::Lost(e.to_string()))?;
                                }
                            }
                            s.metrics.durable_offset.store(to, Relaxed);
                            // WAIT on the primary returns now: the write is stored.
                            ack(acker, durable_offset).await?;
                        }
                    }
                }
                _ = &mut base_due => {
                    seg.cut(s, spool).await?;
                    tracing::info!(source = %s.name, "scheduled base snapshot due");
                    return Err(End::NewBase);
                }
                _ = shutdown.changed() => {
                    seg.cut(s, spool).await?;
                    return Err(End::Shutdown);
                }
            }
        }
    }
    .await;
    if let Ok(Some(c)) = s.checkpoints.get(&s.name) {
        *cp = c;
    }
    match outcome {
        Ok(end) | Err(end) => Ok(end),
    }
}
