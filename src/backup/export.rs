//! Export: one consistent snapshot from a `Source`, streamed straight into
//! storage (sealed, or plain with `--plain`),
//! keyring first and manifest last. Nothing of the snapshot touches local disk and
//! memory stays at a few chunks.

use super::layout::{self, GenerationDir, BASE_PLAIN, BASE_SEALED};
use super::manifest::{Manifest, ObjectEntry, RedisInfo, MANIFEST_FORMAT, MANIFEST_VERSION};
use super::BackupError;
use crate::data_key::DataKey;
use crate::format::ObjectKind;
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::rdb::KeyCounter;
use crate::sealer::{ObjectSpec, SealOptions, Sealer};
use crate::signing::Signer;
use crate::source::{CommandFeed, Source};
use crate::store::{Store, StoreError};
use crate::text::{one_line, rfc3339};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sha2::{Digest, Sha256};
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
    let upload_err = |op: &'static str, path: &Path, e: &dyn std::fmt::Display| {
        BackupError::Store(StoreError::Op {
            url: store.url.clone(),
            op,
            path: path.to_string(),
            message: one_line(e),
        })
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
    let base_path = dir.object(store, base_name);
    let upload = store.upload(&base_path, 10 << 20);

    let result = async {
        let mut sink = match &keys {
            Some((dek, _)) => {
                let spec = ObjectSpec {
                    kind: ObjectKind::Rdb,
                    generation: generation.clone(),
                    name: base_name.into(),
                    embedded_keyring: vec![],
                    attestation: vec![],
                };
                Sink::Sealed(Box::new(Sealer::new(upload, spec, dek, &req.seal).await?))
            }
            None => Sink::Plain {
                out: Box::new(upload),
                sha: Sha256::new(),
                bytes: 0,
            },
        };
        let mut counter = KeyCounter::start(!info.rdb_checked);
        let step = async {
            while let Some(piece) = transfer.next_piece().await? {
                sink.write(&piece)
                    .await
                    .map_err(|e| upload_err("upload", &base_path, &e))?;
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
        // The RDB's own CRC checked out (the transfer's, or the counter's for
        // a SCAN); it must also walk to its end, or the
        // backup could never be restored: no manifest for a snapshot that
        // does not parse.
        let counts: std::collections::BTreeMap<String, u64> = match counter.finish().await {
            Ok(c) => c.into_iter().map(|(db, n)| (db.to_string(), n)).collect(),
            Err(e) => {
                sink.abort().await;
                return Err(BackupError::Corrupt {
                    label: dir.label(base_name),
                    why: format!(
                        "the snapshot from {} does not parse: {e}",
                        req.from.describe()
                    ),
                });
            }
        };
        let counts = Some(counts);
        let entry = sink
            .finish()
            .await
            .map_err(|e| upload_err("complete the upload of", &base_path, &e))?;
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
            let _ = store.delete(&dir.keyring(store)).await;
            let _ = store.delete(&base_path).await;
            return Err(e);
        }
    };

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        generation: generation.clone(),
        source: req.source.clone(),
        created: rfc3339(created),
        completed: rfc3339(SystemTime::now()),
        sealed: keys.is_some(),
        redis: RedisInfo {
            version,
            rdb_version: transfer.rdb_version(),
            replid: info.replid.clone(),
            offset: info.offset,
            method: (info.method == crate::source::Method::Scan).then(|| "scan".into()),
        },
        keks: keys
            .as_ref()
            .map(|(_, r)| r.wrapped.iter().map(|w| w.kek.clone()).collect())
            .unwrap_or_default(),
        data_key_id: keys.as_ref().map(|(_, r)| r.data_key_id.clone()),
        objects: vec![entry.clone()],
        keys: key_counts,
        signer: None,
        mac: None,
        signature: None,
    };
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
