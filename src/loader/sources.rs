//! What an import reads: the newest (or a chosen) complete generation of a backup
//! in storage, authenticated end to end; or plain RDB files, optionally .gz / .zst.
//! Either way the result is a blocking `Read` of RDB bytes for the scanner.

use crate::backup::layout::{KEYRING, MANIFEST};
use crate::backup::list::list;
use crate::backup::manifest::Manifest;
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::opener::{Opener, RawHeader};
use crate::rdb::ChannelReader;
use crate::sealer::default_parallelism;
use crate::store::{one_line, Store, StoreContext};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

fn err(e: impl std::fmt::Display) -> SourceError {
    SourceError(one_line(&e))
}

/// An RDB byte stream, and (for backups) the task that fetches and opens it,
/// whose error is the real cause when the stream ends early.
pub struct OpenedSource {
    pub label: String,
    pub reader: Box<dyn Read + Send>,
    pub pump: Option<JoinHandle<Result<(), SourceError>>>,
}

/// Names of plain RDB files and blobs: `.rdb`, `.rdb.gz`, `.rdb.zst`.
pub fn is_rdb_name(name: &str) -> bool {
    [".rdb", ".rdb.gz", ".rdb.zst"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Decompresses by name: `.gz` and `.zst`; anything else is read as it is.
fn decompressed(
    name: &str,
    input: impl Read + Send + 'static,
) -> Result<Box<dyn Read + Send>, SourceError> {
    let buffered = std::io::BufReader::with_capacity(1 << 20, input);
    Ok(if name.ends_with(".gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(
            buffered,
        )))
    } else if name.ends_with(".zst") {
        Box::new(std::io::BufReader::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(err)?,
        ))
    } else {
        Box::new(buffered)
    })
}

/// A plain RDB blob in storage (`az://container/dumps/x.rdb.gz`, `file:///d/x.rdb`).
pub async fn open_blob(url: &str, ctx: &StoreContext) -> Result<OpenedSource, SourceError> {
    let (dir, name) = url
        .rsplit_once('/')
        .ok_or_else(|| SourceError(format!("{url}: no object name")))?;
    let store = Store::open_with(dir, None, ctx).map_err(err)?;
    let path = store.path(&[name]);
    let got = store
        .inner
        .get(&path)
        .await
        .map_err(|e| SourceError(format!("cannot read {url}: {}", one_line(&e))))?;
    let mut body =
        tokio_util::io::StreamReader::new(got.into_stream().map_err(std::io::Error::other));
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
    let label = url.to_string();
    let pump_label = label.clone();
    let pump = tokio::spawn(async move {
        pump_bytes(&mut body, &tx, &pump_label, |_| {}).await?;
        Ok(())
    });
    Ok(OpenedSource {
        reader: decompressed(name, ChannelReader::new(rx))?,
        label,
        pump: Some(pump),
    })
}

/// A plain RDB file; `.gz` and `.zst` are decompressed.
pub fn open_file(path: &Path) -> Result<OpenedSource, SourceError> {
    let label = path.display().to_string();
    let f =
        std::fs::File::open(path).map_err(|e| SourceError(format!("cannot open {label}: {e}")))?;
    let reader = decompressed(&label, f)?;
    Ok(OpenedSource {
        label,
        reader,
        pump: None,
    })
}

/// The generation to restore: the named one, or the newest complete one.
pub async fn pick_generation(
    store: &Store,
    source: Option<&str>,
    generation: Option<&str>,
) -> Result<(String, String), SourceError> {
    let gens = list(store, source).await.map_err(SourceError)?;
    let complete: Vec<_> = gens.iter().filter(|g| g.complete).collect();
    if let Some(g) = generation {
        let found: Vec<_> = gens.iter().filter(|x| x.generation == g).collect();
        return match found.as_slice() {
            [] => Err(SourceError(format!(
                "generation {g} not found in {}",
                store.url
            ))),
            [one] if !one.complete => Err(SourceError(format!(
                "generation {g} is incomplete (no manifest): it cannot be restored"
            ))),
            [one] => Ok((one.source.clone(), one.generation.clone())),
            _ => Err(SourceError(format!(
                "generation {g} exists under several sources; pass --source"
            ))),
        };
    }
    let mut sources: Vec<&str> = complete.iter().map(|g| g.source.as_str()).collect();
    sources.dedup();
    match sources.as_slice() {
        [] => Err(SourceError(format!(
            "no complete backup in {}{}",
            store.url,
            source
                .map(|s| format!(" for source {s}"))
                .unwrap_or_default()
        ))),
        [_] => {
            let g = complete
                .iter()
                .max_by(|a, b| a.generation.cmp(&b.generation))
                .unwrap();
            Ok((g.source.clone(), g.generation.clone()))
        }
        many => Err(SourceError(format!(
            "several sources in {}: {}; pass --source",
            store.url,
            many.join(", ")
        ))),
    }
}

/// Opens a generation's base snapshot: keyring unwrapped with the KEK, manifest
/// authenticated, the object's header checked to belong to this generation, its
/// chunks opened, and its plaintext digest compared with the manifest.
pub async fn open_backup(
    store: &Store,
    source: &str,
    generation: &str,
    kek: Option<&dyn Kek>,
) -> Result<OpenedSource, SourceError> {
    let get = |name: &str| {
        let p = store.path(&[source, generation, name]);
        async move {
            let r = store
                .inner
                .get(&p)
                .await
                .map_err(|e| SourceError(format!("cannot read {p}: {}", one_line(&e))))?;
            r.bytes()
                .await
                .map_err(|e| SourceError(format!("cannot read {p}: {}", one_line(&e))))
        }
    };
    let manifest_bytes = get(MANIFEST).await?;
    let label_m = format!("{source}/{generation}/{MANIFEST}");
    let unverified = Manifest::parse(&manifest_bytes, &label_m).map_err(err)?;
    let (manifest, dek) = if unverified.sealed {
        let kek = kek.ok_or_else(|| {
            SourceError("the backup is sealed: pass --kek with the private key".into())
        })?;
        let label_k = format!("{source}/{generation}/{KEYRING}");
        let ring = Keyring::from_json(&get(KEYRING).await?, &label_k).map_err(err)?;
        let dek = ring.unwrap(kek, &label_k).await.map_err(err)?;
        (
            Manifest::open(&manifest_bytes, &dek, &label_m).map_err(err)?,
            Some(dek),
        )
    } else {
        tracing::warn!("{source}/{generation} is a plain (unencrypted) export");
        (unverified, None)
    };
    let object = manifest
        .objects
        .iter()
        .find(|o| o.kind == "rdb")
        .ok_or_else(|| SourceError(format!("{label_m} lists no RDB object")))?
        .clone();
    let path = store.path(&[source, generation, &object.name]);
    let label = format!("{source}/{generation}/{}", object.name);
    let stream = store
        .inner
        .get(&path)
        .await
        .map_err(|e| SourceError(format!("cannot read {path}: {}", one_line(&e))))?
        .into_stream()
        .map_err(std::io::Error::other);
    let mut body = tokio_util::io::StreamReader::new(stream);
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
    let expected_sha = object.plaintext_sha256.clone();
    let pump_label = label.clone();
    let pump = match dek {
        Some(dek) => {
            let raw = RawHeader::read(&mut body, &label).await.map_err(err)?;
            // A sealed object moved in from another generation or name is refused.
            if raw.header.generation != generation || raw.header.object_name != object.name {
                return Err(SourceError(format!(
                    "{label}: the object belongs to {}/{}, not to this generation",
                    raw.header.generation, raw.header.object_name
                )));
            }
            let mut opener =
                Opener::new(body, &raw, &dek, &label, default_parallelism()).map_err(err)?;
            drop(dek);
            tokio::spawn(async move {
                let mut sha = Sha256::new();
                while let Some(chunk) = opener.next_chunk().await.map_err(err)? {
                    sha.update(&chunk);
                    if tx.send(chunk).await.is_err() {
                        return Ok(()); // the scanner stopped; it reports why
                    }
                }
                check_digest(&pump_label, &expected_sha, sha)
            })
        }
        None => tokio::spawn(async move {
            let mut sha = Sha256::new();
            if !pump_bytes(&mut body, &tx, &pump_label, |b| sha.update(b)).await? {
                return Ok(()); // the scanner stopped; it reports why
            }
            check_digest(&pump_label, &expected_sha, sha)
        }),
    };
    Ok(OpenedSource {
        label,
        reader: Box::new(ChannelReader::new(rx)),
        pump: Some(pump),
    })
}

/// Copies a byte stream into the scanner's channel, showing each piece to
/// `seen`. Returns false if the scanner stopped reading first.
async fn pump_bytes<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    tx: &mpsc::Sender<bytes::Bytes>,
    label: &str,
    mut seen: impl FnMut(&[u8]),
) -> Result<bool, SourceError> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|e| SourceError(format!("{label}: {e}")))?;
        if n == 0 {
            return Ok(true);
        }
        seen(&buf[..n]);
        if tx
            .send(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
}

fn check_digest(label: &str, expected: &str, sha: Sha256) -> Result<(), SourceError> {
    let got = hex::encode(sha.finalize());
    if got != expected {
        return Err(SourceError(format!(
            "{label}: plaintext SHA-256 {got} differs from the manifest's {expected}"
        )));
    }
    Ok(())
}
