//! Reading a generation back: which one (the named one, or the newest
//! complete), its manifest authenticated with the data key, its base snapshot
//! opened chunk by chunk with the object's header checked to belong here and
//! its plaintext digest compared with the manifest. Also the dispatch of
//! `--from` values to backups, blobs and files.

use super::layout::{GenerationDir, KEYRING, MANIFEST};
use super::list::list;
use super::manifest::Manifest;
use super::BackupError;
use crate::data_key::DataKey;
use crate::inputs::{
    is_rdb_name, is_store_url, open_blob, open_file, pump_bytes, Input, InputError,
};
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::opener::{Opener, RawHeader};
use crate::rdb::ChannelReader;
use crate::sealer::default_parallelism;
use crate::signing::Trust;
use crate::store::{Store, StoreContext, StoreError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The generation to restore: the named one, or the newest complete one.
/// Returns (source, generation).
///
/// Only generations signed by a trusted signer count. With `skip_plain` (a
/// KEK is given), plain generations are passed over and named: a planted
/// plain one must not be what a default import picks.
pub async fn pick_generation(
    store: &Store,
    source: Option<&str>,
    generation: Option<&str>,
    skip_plain: bool,
    trust: &Trust,
) -> Result<(String, String), BackupError> {
    trust.require_for_reading()?;
    let mut gens = list(store, source, trust).await?;
    mark_plain_skipped(&mut gens, skip_plain && generation.is_none());
    let complete: Vec<_> = gens.iter().filter(|g| g.complete).collect();
    if let Some(g) = generation {
        let found: Vec<_> = gens.iter().filter(|x| x.generation == g).collect();
        return match found.as_slice() {
            [] => Err(BackupError::NotFound(format!(
                "generation {g} not found in {}",
                store.url
            ))),
            [one] if !one.complete => Err(BackupError::NotFound(format!(
                "generation {g} cannot be restored: {}",
                one.problem
                    .as_deref()
                    .unwrap_or("it is incomplete (no manifest)")
            ))),
            [one] => Ok((one.source.clone(), one.generation.clone())),
            _ => Err(BackupError::Invalid(format!(
                "generation {g} exists under several sources; pass --source"
            ))),
        };
    }
    let mut sources: Vec<&str> = complete.iter().map(|g| g.source.as_str()).collect();
    sources.dedup();
    match sources.as_slice() {
        [] => Err(BackupError::NotFound(format!(
            "no complete backup in {}{}{}",
            store.url,
            source
                .map(|s| format!(" for source {s}"))
                .unwrap_or_default(),
            passed_over(&gens)
        ))),
        [_] => {
            let g = complete
                .iter()
                .max_by(|a, b| a.generation.cmp(&b.generation))
                .expect("one complete generation");
            warn_skipped_newer(&gens, &g.source, &g.generation);
            Ok((g.source.clone(), g.generation.clone()))
        }
        many => Err(BackupError::Invalid(format!(
            "several sources in {}: {}; pass --source",
            store.url,
            many.join(", ")
        ))),
    }
}

/// The newest folder passed over, and why (unsigned, untrusted, planted), as
/// a clause for "no complete backup": that alone would hide a refusal.
pub fn passed_over(gens: &[super::list::GenerationInfo]) -> String {
    gens.iter()
        .filter(|g| g.problem.is_some())
        .max_by(|a, b| a.generation.cmp(&b.generation))
        .map(|g| {
            format!(
                "; the newest passed over, {}/{}: {}",
                g.source,
                g.generation,
                g.problem.as_deref().unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// A generation's keyring, parsed (not unwrapped).
pub async fn read_keyring(store: &Store, dir: &GenerationDir) -> Result<Keyring, BackupError> {
    let bytes = store.read(&dir.keyring(store)).await?;
    Ok(Keyring::from_json(&bytes, &dir.label(KEYRING))?)
}

/// A generation's manifest: it must name the folder it is in and be signed
/// by a trusted signer; authenticated with the data key when sealed (the key
/// is returned with it). A plain one is refused when a KEK is given (a
/// planted plain generation must not pass for a sealed backup), unless
/// `allow_plain`; else taken with a warning.
pub async fn open_manifest(
    store: &Store,
    dir: &GenerationDir,
    kek: Option<&dyn Kek>,
    allow_plain: bool,
    trust: &Trust,
) -> Result<(Manifest, Option<DataKey>), BackupError> {
    trust.require_for_reading()?;
    let bytes = store.read(&dir.manifest(store)).await?;
    let label_m = dir.label(MANIFEST);
    let unverified = Manifest::parse(&bytes, &label_m)?;
    check_place(&unverified, dir)?;
    if !unverified.redis.point_in_time() {
        tracing::warn!(
            "{}/{} was read key by key with SCAN: not point-in-time (keys changed during the scan may be from different moments)",
            dir.source,
            dir.generation
        );
    }
    if unverified.check_signature(trust, &label_m)?.is_none() {
        tracing::warn!(
            "{}/{} is unsigned (written by an older redvault): read since --allow-unsigned is given; its origin is not authenticated",
            dir.source,
            dir.generation
        );
    }
    if !unverified.sealed {
        if kek.is_some() && !allow_plain {
            return Err(BackupError::Invalid(format!(
                "{}/{} is a plain (unencrypted) generation, and a KEK was given: refused, since anyone who can write to the store can plant one; pass --allow-plain to read it anyway",
                dir.source, dir.generation
            )));
        }
        tracing::warn!(
            "{}/{} is a plain (unencrypted) export",
            dir.source,
            dir.generation
        );
        return Ok((unverified, None));
    }
    let kek = kek.ok_or_else(|| {
        BackupError::Invalid("the backup is sealed: pass --kek with the private key".into())
    })?;
    let ring = read_keyring(store, dir).await?;
    // The signed manifest names the data key: a keyring wrapping any other
    // (anyone can wrap one with the public KEK) is refused before its key
    // opens anything.
    if unverified.data_key_id.as_deref() != Some(ring.data_key_id.as_str()) {
        return Err(BackupError::Corrupt {
            label: dir.label(KEYRING),
            why: format!(
                "it holds data key {}, the signed manifest names {}",
                ring.data_key_id,
                unverified.data_key_id.as_deref().unwrap_or("none")
            ),
        });
    }
    let dek = ring.unwrap(kek, &dir.label(KEYRING)).await?;
    Ok((Manifest::open(&bytes, &dek, &label_m)?, Some(dek)))
}

/// A manifest must name the source and generation of the folder it is in: a
/// generation copied in from another source or name is not this one.
pub fn check_place(m: &Manifest, dir: &GenerationDir) -> Result<(), BackupError> {
    if m.source != dir.source || m.generation != dir.generation {
        return Err(BackupError::Corrupt {
            label: dir.label(MANIFEST),
            why: format!(
                "it names {}/{}, not the folder it is in",
                m.source, m.generation
            ),
        });
    }
    // The name's time is when the sync started: a name far from the manifest's
    // own `created` is not how redvault names a generation.
    if let (Some(named), Some(created)) = (
        super::layout::generation_time(&dir.generation),
        humantime::parse_rfc3339_weak(&m.created).ok(),
    ) {
        let apart = named
            .duration_since(created)
            .or_else(|_| created.duration_since(named))
            .unwrap_or_default();
        if apart > std::time::Duration::from_secs(5) {
            return Err(BackupError::Corrupt {
                label: dir.label(MANIFEST),
                why: format!(
                    "its generation name says {} but it was created {}",
                    crate::text::rfc3339(named),
                    m.created
                ),
            });
        }
    }
    Ok(())
}

/// Marks plain generations as not to be chosen (with the reason shown by
/// `warn_skipped_newer`), when a KEK is given and plain ones are not allowed.
pub fn mark_plain_skipped(gens: &mut [super::GenerationInfo], skip: bool) {
    if !skip {
        return;
    }
    for g in gens.iter_mut() {
        if g.manifest.as_ref().is_some_and(|m| !m.sealed) {
            g.complete = false;
            g.problem = Some(
                "a plain (unencrypted) generation, passed over since a KEK is given (--allow-plain reads it)".into(),
            );
        }
    }
}

/// Names the generations newer than `chosen` that were passed over, and why
/// (an interrupted run, a planted or damaged folder): a rollback is never silent.
pub fn warn_skipped_newer(gens: &[super::GenerationInfo], source: &str, chosen: &str) {
    for g in gens
        .iter()
        .filter(|g| g.source == source && g.generation.as_str() > chosen && !g.complete)
    {
        tracing::warn!(
            "skipped {}/{}, newer than the generation restored: {}",
            g.source,
            g.generation,
            g.problem
                .as_deref()
                .unwrap_or("incomplete (no manifest): an interrupted or running backup")
        );
    }
}

/// Opens a generation's base snapshot as inputs (one; or one per shard, for
/// a cluster generation): keyring unwrapped with the KEK, manifest
/// authenticated, each object's header checked to belong to this generation,
/// its chunks opened, and its plaintext digest compared with the manifest at
/// the end of its stream.
pub async fn open_base(
    store: &Store,
    source: &str,
    generation: &str,
    kek: Option<&dyn Kek>,
    allow_plain: bool,
    trust: &Trust,
) -> Result<Vec<Input>, BackupError> {
    let dir = GenerationDir::new(source, generation);
    let (manifest, dek) = open_manifest(store, &dir, kek, allow_plain, trust).await?;
    let objects: Vec<_> = manifest
        .objects
        .iter()
        .filter(|o| o.kind == "rdb")
        .cloned()
        .collect();
    if objects.is_empty() {
        return Err(BackupError::Corrupt {
            label: dir.label(MANIFEST),
            why: "it lists no RDB object".into(),
        });
    }
    // The first object now; a cluster's other sealed shards once the reader
    // reaches them, so memory stays that of one open object whatever the
    // shard count. Their headers are checked now all the same, so an object
    // moved in from elsewhere is refused before anything is loaded (a plain
    // one's digest pass is done now, as ever).
    let mut inputs = vec![];
    for (i, object) in objects.iter().enumerate() {
        if i == 0 || dek.is_none() {
            inputs.push(open_object(store, &dir, generation, object, dek.as_ref()).await?);
        } else {
            let label = dir.label(&object.name);
            let stream = store.read_stream(&dir.object(store, &object.name)).await?;
            let mut body = tokio_util::io::StreamReader::new(stream);
            belongs(
                &RawHeader::read(&mut body, &label).await?,
                generation,
                object,
                &label,
            )?;
            inputs.push(deferred(
                store.clone(),
                dir.clone(),
                generation.to_string(),
                object.clone(),
                dek.clone(),
            ));
        }
    }
    Ok(inputs)
}

/// A sealed object moved in from another generation or name is refused.
fn belongs(
    raw: &RawHeader,
    generation: &str,
    object: &super::manifest::ObjectEntry,
    label: &str,
) -> Result<(), BackupError> {
    if raw.header.generation != generation || raw.header.object_name != object.name {
        return Err(BackupError::Corrupt {
            label: label.into(),
            why: format!(
                "the object belongs to {}/{}, not to this generation",
                raw.header.generation, raw.header.object_name
            ),
        });
    }
    Ok(())
}

/// An object opened on its first read. The reader runs on a blocking
/// thread (every consumer's does), where it may wait for the opening.
fn deferred(
    store: Store,
    dir: GenerationDir,
    generation: String,
    object: super::manifest::ObjectEntry,
    dek: Option<crate::data_key::DataKey>,
) -> Input {
    let label = dir.label(&object.name);
    let (opened, pump_of) =
        tokio::sync::oneshot::channel::<tokio::task::JoinHandle<Result<(), InputError>>>();
    let pump_label = label.clone();
    let pump = tokio::spawn(async move {
        match pump_of.await {
            Ok(real) => real.await.map_err(|e| InputError::Read {
                label: pump_label,
                message: e.to_string(),
            })?,
            // Never opened (the reader stopped first, or the opening
            // failed: the reader says why).
            Err(_) => Ok(()),
        }
    });
    let open =
        Box::pin(
            async move { open_object(&store, &dir, &generation, &object, dek.as_ref()).await },
        );
    Input {
        label,
        reader: Box::new(Deferred {
            open: Some(open),
            inner: None,
            opened: Some(opened),
            runtime: tokio::runtime::Handle::current(),
        }),
        pump: Some(pump),
    }
}

type Opening =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Input, BackupError>> + Send>>;

struct Deferred {
    open: Option<Opening>,
    inner: Option<Box<dyn std::io::Read + Send>>,
    opened: Option<tokio::sync::oneshot::Sender<tokio::task::JoinHandle<Result<(), InputError>>>>,
    runtime: tokio::runtime::Handle,
}

impl std::io::Read for Deferred {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.is_none() {
            let Some(open) = self.open.take() else {
                return Err(std::io::Error::other("the object could not be opened"));
            };
            let input = self
                .runtime
                .block_on(open)
                .map_err(|e| std::io::Error::other(crate::text::one_line(&e)))?;
            if let (Some(tx), Some(pump)) = (self.opened.take(), input.pump) {
                let _ = tx.send(pump);
            }
            self.inner = Some(input.reader);
        }
        self.inner.as_mut().expect("opened").read(buf)
    }
}

/// One RDB object of a generation, opened (sealed) or read (plain).
async fn open_object(
    store: &Store,
    dir: &GenerationDir,
    generation: &str,
    object: &super::manifest::ObjectEntry,
    dek: Option<&crate::data_key::DataKey>,
) -> Result<Input, BackupError> {
    let label = dir.label(&object.name);
    if dek.is_none() {
        // A plain base has no authenticated chunks: its digest (signed in the
        // manifest) is checked in a first pass, so nothing of a swapped object
        // reaches a target (the second pass checks it again).
        use futures::TryStreamExt;
        let mut first = store.read_stream(&dir.object(store, &object.name)).await?;
        let mut sha = Sha256::new();
        while let Some(piece) = first.try_next().await.map_err(|e| InputError::Read {
            label: label.clone(),
            message: crate::text::one_line(&e),
        })? {
            sha.update(&piece);
        }
        check_digest(&label, &object.plaintext_sha256, sha)?;
    }
    let stream = store.read_stream(&dir.object(store, &object.name)).await?;
    let mut body = tokio_util::io::StreamReader::new(stream);
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
    let expected_sha = object.plaintext_sha256.clone();
    let pump_label = label.clone();
    let pump = match dek {
        Some(dek) => {
            let raw = RawHeader::read(&mut body, &label).await?;
            belongs(&raw, generation, object, &label)?;
            let mut opener = Opener::new(body, &raw, dek, &label, default_parallelism())?;
            tokio::spawn(async move {
                let mut sha = Sha256::new();
                while let Some(chunk) = opener.next_chunk().await? {
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
    Ok(Input {
        label,
        reader: Box::new(ChannelReader::new(rx)),
        pump: Some(pump),
    })
}

fn check_digest(label: &str, expected: &str, sha: Sha256) -> Result<(), InputError> {
    let got = hex::encode(sha.finalize());
    if got != expected {
        return Err(InputError::Digest {
            label: label.into(),
            got,
            expected: expected.into(),
        });
    }
    Ok(())
}

/// How `--from` values are opened.
pub struct InputOptions<'a> {
    pub prefix: Option<&'a str>,
    pub source: Option<&'a str>,
    pub generation: Option<&'a str>,
    /// The KEK, for sealed backups (a plain one needs none).
    pub kek: Option<Arc<dyn Kek>>,
    /// Read a plain generation even though a KEK is given.
    pub allow_plain: bool,
    /// The signers whose backups count.
    pub trust: Trust,
    /// How to open the store of a URL (Azure settings and identity).
    pub context: &'a (dyn Fn(&str) -> Result<StoreContext, StoreError> + Sync),
}

/// Opens every `--from`: a store URL is a backup (its newest complete
/// generation unless `generation`), a store URL ending `.rdb[.gz|.zst]` a
/// plain blob, anything else a local file.
pub async fn open_inputs(
    from: &[String],
    opts: &InputOptions<'_>,
) -> Result<Vec<Input>, BackupError> {
    let mut out = vec![];
    for spec in from {
        if is_store_url(spec) && is_rdb_name(spec) {
            out.push(open_blob(spec, &(opts.context)(spec)?).await?);
        } else if is_store_url(spec) {
            let store = Store::open_with(spec, opts.prefix, &(opts.context)(spec)?)?;
            let skip_plain = opts.kek.is_some() && !opts.allow_plain;
            let (source, generation) = pick_generation(
                &store,
                opts.source,
                opts.generation,
                skip_plain,
                &opts.trust,
            )
            .await?;
            out.extend(
                open_base(
                    &store,
                    &source,
                    &generation,
                    opts.kek.as_deref(),
                    opts.allow_plain,
                    &opts.trust,
                )
                .await?,
            );
        } else {
            out.push(open_file(std::path::Path::new(spec))?);
        }
    }
    Ok(out)
}
