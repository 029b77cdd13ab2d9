//! Export: one consistent snapshot of a live Redis, streamed through the
//! replication link straight into storage (sealed, or plain with `--plain`),
//! keyring first and manifest last. Nothing of the snapshot touches local disk and
//! memory stays at a few chunks.

use super::layout::{self, BASE_PLAIN, BASE_SEALED, KEYRING, MANIFEST};
use super::manifest::{Manifest, ObjectEntry, RedisInfo, MANIFEST_FORMAT, MANIFEST_VERSION};
use crate::format::{FormatError, ObjectKind};
use crate::kek::{Kek, KekError};
use crate::keyring::{DataKey, Keyring};
use crate::rdb::KeyCounter;
use crate::replication::{Conn, LinkOptions, RedisUrl, ReplError, ReplicaLink};
use crate::sealer::{ObjectSpec, SealOptions, Sealer};
use crate::store::{one_line, Store};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::PutPayload;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Replication(#[from] ReplError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("storage {url}: {what}: {message}")]
    Store {
        url: String,
        what: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub struct ExportRequest {
    pub redis: RedisUrl,
    pub link: LinkOptions,
    pub store: Store,
    pub source: String,
    /// None exports plain (unencrypted) RDB.
    pub kek: Option<Arc<dyn Kek>>,
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

pub async fn export(
    req: ExportRequest,
    progress: Progress<'_>,
) -> Result<ExportSummary, ExportError> {
    Ok(export_inner(req, progress, false).await?.0)
}

/// A base snapshot for the daemon: a full sync with the command stream kept
/// (no `rdb-only`), the base written as `export` writes it, then the link handed
/// back to follow the stream from the snapshot's offset.
pub async fn export_and_follow(
    req: ExportRequest,
    progress: Progress<'_>,
) -> Result<(ExportSummary, Conn), ExportError> {
    let (summary, conn) = export_inner(req, progress, true).await?;
    Ok((summary, conn.expect("follow keeps the link")))
}

async fn export_inner(
    req: ExportRequest,
    progress: Progress<'_>,
    follow: bool,
) -> Result<(ExportSummary, Option<Conn>), ExportError> {
    layout::check_source_name(&req.source).map_err(ExportError::Invalid)?;
    let started = Instant::now();
    let store = &req.store;
    let store_err = |what: &str, e: &dyn std::fmt::Display| ExportError::Store {
        url: store.url.clone(),
        what: what.into(),
        message: one_line(e),
    };

    // Keys first: with no usable KEK, nothing is written and Redis is not asked
    // to fork.
    let keys = match &req.kek {
        Some(kek) => {
            let dek = DataKey::generate();
            let ring = Keyring::wrap(&dek, kek.as_ref()).await?;
            Some((dek, ring))
        }
        None => None,
    };
    // Storage reachable and the container there, before the primary forks.
    {
        use futures::StreamExt;
        let mut probe = store.inner.list(Some(&store.prefix));
        if let Some(Err(e)) = probe.next().await {
            return Err(store_err("cannot list", &e));
        }
    }

    let created = SystemTime::now();
    let mut link = ReplicaLink::connect(&req.redis, &req.link).await?;
    let version = link.server_version().await;
    let (info, mut transfer) = link.full_sync(!follow).await?;
    let generation = layout::generation_id(created, &info.replid);
    let gen_path = store.path(&[&req.source, &generation]);
    tracing::info!(generation, replid = %info.replid, offset = info.offset, rdb_only = info.rdb_only, "full sync started");

    if let Some((_, ring)) = &keys {
        store
            .inner
            .put(&gen_path.child(KEYRING), PutPayload::from(ring.to_json()))
            .await
            .map_err(|e| store_err("cannot write keyring.json", &e))?;
    }
    let base_name = if keys.is_some() {
        BASE_SEALED
    } else {
        BASE_PLAIN
    };
    let base_path = gen_path.child(base_name);
    let upload = BufWriter::with_capacity(store.inner.clone(), base_path.clone(), 10 << 20);

    let result = async {
        let mut sink = match &keys {
            Some((dek, _)) => {
                let spec = ObjectSpec {
                    kind: ObjectKind::Rdb,
                    generation: generation.clone(),
                    name: base_name.into(),
                    embedded_keyring: vec![],
                };
                Sink::Sealed(Box::new(Sealer::new(upload, spec, dek, &req.seal).await?))
            }
            None => Sink::Plain {
                out: Box::new(upload),
                sha: Sha256::new(),
                bytes: 0,
            },
        };
        let mut counter = KeyCounter::start();
        let step = async {
            while let Some(piece) = transfer.next().await? {
                sink.write(&piece)
                    .await
                    .map_err(|e| store_err("cannot upload base", &e))?;
                counter.send(piece).await;
                progress(transfer.received(), transfer.announced_size());
            }
            Ok::<_, ExportError>(())
        }
        .await;
        if let Err(e) = step {
            sink.abort().await;
            return Err(e);
        }
        // The RDB's own CRC already checked out; a scanner that cannot walk it (a
        // newer format) only leaves the key counts unknown.
        let counts = match counter.finish().await {
            Ok(c) => Some(c.into_iter().map(|(db, n)| (db.to_string(), n)).collect()),
            Err(e) => {
                tracing::warn!("key counts unknown: {e}");
                None
            }
        };
        let entry = sink
            .finish()
            .await
            .map_err(|e| store_err("cannot complete the base upload", &e))?;
        Ok((entry, counts))
    }
    .await;
    let (entry, key_counts) = match result {
        Ok((mut entry, counts)) => {
            entry.name = base_name.into();
            (entry, counts)
        }
        Err(e) => {
            // Leave nothing that looks like a backup: the manifest was never
            // written; also remove what was (best effort).
            let _ = store.inner.delete(&gen_path.child(KEYRING)).await;
            let _ = store.inner.delete(&base_path).await;
            return Err(e);
        }
    };

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        generation: generation.clone(),
        source: req.source.clone(),
        created: layout::rfc3339(created),
        completed: layout::rfc3339(SystemTime::now()),
        sealed: keys.is_some(),
        redis: RedisInfo {
            version,
            rdb_version: transfer.rdb_version(),
            replid: info.replid.clone(),
            offset: info.offset,
        },
        keks: keys
            .as_ref()
            .map(|(_, r)| r.wrapped.iter().map(|w| w.kek.clone()).collect())
            .unwrap_or_default(),
        data_key_id: keys.as_ref().map(|(_, r)| r.data_key_id.clone()),
        objects: vec![entry.clone()],
        keys: key_counts,
        mac: None,
    };
    let json = manifest.to_json(keys.as_ref().map(|(d, _)| d));
    store
        .inner
        .put(&gen_path.child(MANIFEST), PutPayload::from(json))
        .await
        .map_err(|e| store_err("cannot write manifest.json", &e))?;
    let summary = ExportSummary {
        generation,
        source: req.source.clone(),
        location: display_path(store, &gen_path),
        rdb_bytes: transfer.received(),
        stored_bytes: entry.stored_bytes,
        seconds: started.elapsed().as_secs_f64(),
        manifest,
    };
    Ok((summary, follow.then(|| transfer.into_conn())))
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
