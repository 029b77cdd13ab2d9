//! The local spool: sealed segments wait here (on disk, encrypted) until storage
//! has them, so reading the replication link never waits on storage. Bounded in
//! bytes; an uploader drains it in order, retrying with backoff.

use super::metrics::{unix_now, SourceMetrics};
use crate::backup::head::{write_head, Head};
use crate::backup::layout::{parse_segment_name, GenerationDir};
use crate::fingerprint::Fingerprint;
use crate::signing::Signer;
use crate::store::{Store, StoreError};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A signed chain head is written at most this often while segments flow
/// (and at a clean stop).
pub const HEAD_EVERY: Duration = Duration::from_secs(60);

/// What the newest stored segment says, for its chain head.
#[derive(Debug, Clone)]
struct StoredEnd {
    generation: String,
    to: u64,
    link: [u8; 32],
    last_time_ms: u64,
}
use tokio::sync::{watch, Notify};

/// One sealed segment in the spool.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub generation: String,
    pub name: String,
    pub to: u64,
    pub bytes: u64,
    path: PathBuf,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    queue: Mutex<VecDeque<Spooled>>,
    wake: Notify,
    metrics: Arc<SourceMetrics>,
    /// The newest stored segment, and the (generation, offset) its head was
    /// last written for, with when.
    stored_end: Mutex<Option<StoredEnd>>,
    head_written: Mutex<Option<(String, u64, Instant)>>,
    /// A fingerprint of the source waiting for a head that reaches its
    /// offset (with the stream's name it belongs to), and the last one a
    /// head carried: later heads of that stream carry it on, so the newest
    /// head, the one readers take, has one.
    fingerprint: Mutex<Option<(String, Fingerprint)>>,
    last_fingerprint: Mutex<Option<(String, Fingerprint)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("spool {dir} is full ({used} of {max} bytes): storage is not keeping up")]
    Full { dir: String, used: u64, max: u64 },
    #[error(transparent)]
    Store(StoreError),
}

impl Spool {
    /// Opens `dir` and queues what an earlier run left there, oldest first.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Arc<Self>, SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut left: Vec<Spooled> = vec![];
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let file = e.file_name().to_string_lossy().to_string();
            if file.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let Some((generation, name)) = file.split_once('~') else {
                continue;
            };
            let Some((_, to)) = parse_segment_name(name) else {
                continue;
            };
            left.push(Spooled {
                generation: generation.replace('@', "/"),
                name: name.into(),
                to,
                bytes: e.metadata().map_err(io)?.len(),
                path: e.path(),
            });
        }
        left.sort_by(|a, b| (&a.generation, &a.name).cmp(&(&b.generation, &b.name)));
        let used: u64 = left.iter().map(|s| s.bytes).sum();
        metrics.spool_bytes.store(used, Relaxed);
        if !left.is_empty() {
            tracing::info!(source = %metrics.name, segments = left.len(), bytes = used, "spool holds segments from an earlier run; uploading them first");
        }
        Ok(Arc::new(Spool {
            dir: dir.into(),
            max_bytes,
            queue: Mutex::new(left.into()),
            wake: Notify::new(),
            metrics,
            stored_end: Mutex::new(None),
            head_written: Mutex::new(None),
            fingerprint: Mutex::new(None),
            last_fingerprint: Mutex::new(None),
        }))
    }

    pub fn used(&self) -> u64 {
        self.metrics.spool_bytes.load(Relaxed)
    }

    /// Writes a sealed segment to disk (synced) and queues it for upload.
    pub fn push(
        &self,
        generation: &str,
        name: &str,
        to: u64,
        sealed: &[u8],
    ) -> Result<(), SpoolError> {
        let used = self.used();
        // An empty spool takes any one segment, so a segment bigger than the
        // bound cannot stall the stream for ever.
        if used > 0 && used + sealed.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                used,
                max: self.max_bytes,
            });
        }
        let io = |source| SpoolError::Io {
            dir: self.dir.display().to_string(),
            source,
        };
        // A shard's stream name has a '/': '@' in the file name.
        let path = self
            .dir
            .join(format!("{}~{name}", generation.replace('/', "@")));
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(sealed).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.metrics
            .spool_bytes
            .fetch_add(sealed.len() as u64, Relaxed);
        self.queue.lock().expect("spool lock").push_back(Spooled {
            generation: generation.into(),
            name: name.into(),
            to,
            bytes: sealed.len() as u64,
            path,
        });
        self.wake.notify_one();
        Ok(())
    }

    /// Uploads queued segments in order, forever, retrying each with backoff
    /// until storage takes it. Each stored segment's generation and end offset
    /// is published on `durable`.
    pub async fn upload_forever(
        self: Arc<Self>,
        store: Store,
        source: String,
        signer: Arc<Signer>,
        durable: watch::Sender<(String, u64)>,
    ) {
        loop {
            let next = self.queue.lock().expect("spool lock").front().cloned();
            let Some(item) = next else {
                self.wake.notified().await;
                continue;
            };
            let mut delay = Duration::from_millis(200);
            loop {
                match self.upload_one(&store, &source, &item).await {
                    Ok(end) => {
                        if let Some(end) = end {
                            // The first segment of the next generation: the
                            // last one's end is signed first (a scheduled
                            // base ended it, and nothing else would).
                            let ended = self
                                .stored_end
                                .lock()
                                .expect("spool lock")
                                .as_ref()
                                .is_some_and(|e| e.generation != end.generation);
                            if ended {
                                self.write_head(&store, &source, &signer).await;
                            }
                            *self.stored_end.lock().expect("spool lock") = Some(end);
                        }
                        break;
                    }
                    Err(e) => {
                        self.metrics.errors.fetch_add(1, Relaxed);
                        tracing::error!(source = %source, segment = %item.name, "cannot store segment, retrying in {:?}: {e}", delay);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
            let _ = std::fs::remove_file(&item.path);
            self.queue.lock().expect("spool lock").pop_front();
            self.metrics.spool_bytes.fetch_sub(item.bytes, Relaxed);
            self.metrics.uploaded_bytes.fetch_add(item.bytes, Relaxed);
            self.metrics.segments.fetch_add(1, Relaxed);
            self.metrics.last_segment_time.store(unix_now(), Relaxed);
            let _ = durable.send((item.generation.clone(), item.to));
            let due = self
                .head_written
                .lock()
                .expect("spool lock")
                .as_ref()
                .is_none_or(|(g, _, at)| *g != item.generation || at.elapsed() >= HEAD_EVERY);
            if due && self.is_empty() {
                self.write_head(&store, &source, &signer).await;
            }
        }
    }

    /// Waits (at most `within`, calling `each` every 100 ms) until storage
    /// took everything queued, with an uploader running; then signs the end
    /// of what is stored, so a reader can tell segments deleted from the
    /// end. True when drained.
    pub async fn drain_and_sign(
        &self,
        store: &Store,
        source: &str,
        signer: &Signer,
        within: Duration,
        mut each: impl FnMut(),
    ) -> bool {
        let deadline = Instant::now() + within;
        while !self.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            each();
        }
        each();
        let drained = self.is_empty();
        if drained {
            self.write_head(store, source, signer).await;
        }
        drained
    }

    /// Keeps a fingerprint of the source (taken in `stream`) for the next
    /// head that reaches its offset, unless one of that stream is waiting
    /// already: one that waits for a busy stream to catch up is not
    /// replaced by newer ones (one of an earlier stream is).
    pub fn offer_fingerprint(&self, stream: &str, f: Fingerprint) {
        let mut slot = self.fingerprint.lock().expect("spool lock");
        if slot.as_ref().is_none_or(|(g, _)| g != stream) {
            *slot = Some((stream.to_string(), f));
        }
    }

    /// Whether a fingerprint of `stream` waits for a head.
    pub fn has_fingerprint(&self, stream: &str) -> bool {
        self.fingerprint
            .lock()
            .expect("spool lock")
            .as_ref()
            .is_some_and(|(g, _)| g == stream)
    }

    /// Writes the signed chain head of the newest stored segment, unless it
    /// was written already (best effort: a head only tells readers where
    /// the end is; a failure is logged).
    pub async fn write_head(&self, store: &Store, source: &str, signer: &Signer) {
        let Some(end) = self.stored_end.lock().expect("spool lock").clone() else {
            return;
        };
        let already = self
            .head_written
            .lock()
            .expect("spool lock")
            .as_ref()
            .is_some_and(|(g, to, _)| *g == end.generation && *to == end.to);
        if already {
            return;
        }
        let dir = GenerationDir::new(source, &end.generation);
        let mut head = Head::new(&dir, end.to, end.link, end.last_time_ms, signer);
        let of_stream = |slot: &Mutex<Option<(String, Fingerprint)>>| {
            slot.lock()
                .expect("spool lock")
                .clone()
                .filter(|(g, f)| *g == end.generation && f.offset <= end.to)
                .map(|(_, f)| f)
        };
        let pending = of_stream(&self.fingerprint);
        head.fingerprint = pending
            .clone()
            .or_else(|| of_stream(&self.last_fingerprint));
        match write_head(store, &dir, head, signer).await {
            Ok(stored) => {
                *self.head_written.lock().expect("spool lock") =
                    Some((end.generation.clone(), end.to, Instant::now()));
                // A head already there (written before a restart) carries
                // what it carries: the fingerprint waits for the next one.
                if let (true, Some(f)) = (stored, pending) {
                    // Unless another stream's was offered meanwhile.
                    let mut slot = self.fingerprint.lock().expect("spool lock");
                    if slot
                        .as_ref()
                        .is_some_and(|(g, p)| *g == end.generation && *p == f)
                    {
                        *slot = None;
                    }
                    drop(slot);
                    *self.last_fingerprint.lock().expect("spool lock") = Some((end.generation, f));
                }
            }
            Err(e) => {
                self.metrics.errors.fetch_add(1, Relaxed);
                tracing::error!(source = %source, "cannot store the chain head: {e}");
            }
        }
    }

    async fn upload_one(
        &self,
        store: &Store,
        source: &str,
        item: &Spooled,
    ) -> Result<Option<StoredEnd>, SpoolError> {
        let bytes =
            bytes::Bytes::from(std::fs::read(&item.path).map_err(|source| SpoolError::Io {
                dir: item.path.display().to_string(),
                source,
            })?);
        let path = GenerationDir::new(source, &item.generation).segment(store, &item.name);
        let put = tokio::time::timeout(
            Duration::from_secs(30),
            store.create(&path, bytes.clone()), // Bytes: a cheap clone
        )
        .await;
        let end = || stored_end(&bytes);
        match put {
            Ok(Ok(())) => Ok(end().await),
            // Stored by an earlier attempt whose answer was lost: the same
            // bytes are there. Other bytes are another writer's: never replaced.
            Ok(Err(StoreError::Exists { .. })) => match store.read(&path).await {
                Ok(there) if there[..] == bytes[..] => Ok(end().await),
                Ok(_) => Err(SpoolError::Store(StoreError::Exists {
                    url: store.url.clone(),
                    path: path.to_string(),
                })),
                Err(e) => Err(SpoolError::Store(e)),
            },
            Ok(Err(e)) => Err(SpoolError::Store(e)),
            Err(_) => Err(SpoolError::Store(StoreError::Op {
                url: store.url.clone(),
                op: "write",
                path: path.to_string(),
                message: "no answer from storage within 30 s".into(),
            })),
        }
    }

    /// The sealed bytes of a queued segment of `generation` starting at `from`.
    pub fn queued_from(&self, generation: &str, from: u64) -> Option<Vec<u8>> {
        let item = self
            .queue
            .lock()
            .expect("spool lock")
            .iter()
            .find(|s| {
                s.generation == generation
                    && parse_segment_name(&s.name).is_some_and(|(f, _)| f == from)
            })
            .cloned()?;
        std::fs::read(&item.path).ok()
    }

    /// Whether everything queued has been stored.
    pub fn is_empty(&self) -> bool {
        self.queue.lock().expect("spool lock").is_empty()
    }
}

/// The chain end a sealed segment of ours states (None for an unsigned one
/// an older redvault left in the spool).
async fn stored_end(sealed: &[u8]) -> Option<StoredEnd> {
    let mut input = sealed;
    let raw = crate::opener::RawHeader::read(&mut input, "spooled segment")
        .await
        .ok()?;
    let (st, link) = crate::aof::chain::own_statement(&raw.header.attestation)?;
    Some(StoredEnd {
        generation: st.generation,
        to: st.to,
        link,
        last_time_ms: st.last_time_ms,
    })
}
