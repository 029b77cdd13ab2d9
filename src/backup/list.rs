//! Listing the generations under a prefix: complete (manifest present,
//! readable, in its own folder, and signed by a trusted signer) or not, and
//! why, with sizes, key counts, the KEKs that wrap each
//! data key now (from keyring.json, so a rewrap shows), and AOF segments with
//! any holes. Needs no key.

use super::layout::{listing, ObjectKind};
use super::manifest::Manifest;
use super::BackupError;
use crate::keyring::Keyring;
use crate::signing::Trust;
use crate::store::Store;
use std::collections::BTreeMap;

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationInfo {
    pub source: String,
    pub generation: String,
    pub complete: bool,
    pub stored_bytes: u64,
    pub objects: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// The KEK ids the data key is wrapped under now (keyring.json; the
    /// manifest's `keks` are those at write time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keks: Vec<String>,
    /// The signer of the manifest: verified when `verified`, else only what
    /// the manifest claims (no trusted signer was given to check it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    pub verified: bool,
    /// Why a manifest that exists could not be read or is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// AOF segments (the daemon's): how many, the offset they reach, and any
    /// ranges missing between the base and the last one.
    pub segments: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aof_end: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<(u64, u64)>,
    /// A cluster generation: each shard's stream (its holes are in `holes`
    /// too, so a hole anywhere shows there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<StreamInfo>,
    /// Segment offsets per stream (`None`: the generation's own).
    #[serde(skip)]
    ranges: BTreeMap<Option<String>, Vec<(u64, u64)>>,
    #[serde(skip)]
    has_keyring: bool,
}

impl GenerationInfo {
    pub fn new(source: &str, generation: &str) -> Self {
        GenerationInfo {
            source: source.into(),
            generation: generation.into(),
            complete: false,
            stored_bytes: 0,
            objects: 0,
            manifest: None,
            keks: vec![],
            signer: None,
            verified: false,
            problem: None,
            segments: 0,
            aof_end: None,
            holes: vec![],
            shards: vec![],
            ranges: BTreeMap::new(),
            has_keyring: false,
        }
    }

    pub fn dir(&self) -> super::layout::GenerationDir {
        super::layout::GenerationDir::new(&self.source, &self.generation)
    }
}

/// One cluster shard's command stream in a generation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    /// `shard-<first>-<last>`.
    pub stream: String,
    pub segments: usize,
    pub aof_end: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<(u64, u64)>,
}

/// Every generation under the prefix (or of one source), in name order.
/// Manifests are checked against `trust` when it can check anything (a
/// trusted signer given, or unsigned ones allowed); otherwise (a bare `list`)
/// the signer each claims is shown, unverified.
pub async fn list(
    store: &Store,
    source: Option<&str>,
    trust: &Trust,
) -> Result<Vec<GenerationInfo>, BackupError> {
    let mut gens: BTreeMap<(String, String), GenerationInfo> = BTreeMap::new();
    for o in listing(store, source).await? {
        let g = gens
            .entry((o.dir.source.clone(), o.dir.generation.clone()))
            .or_insert_with(|| GenerationInfo::new(&o.dir.source, &o.dir.generation));
        g.stored_bytes += o.size;
        g.objects += 1;
        match o.kind {
            ObjectKind::Manifest => g.complete = true,
            ObjectKind::Keyring => g.has_keyring = true,
            ObjectKind::Segment { from, to, .. } => g
                .ranges
                .entry(o.dir.shard.clone())
                .or_default()
                .push((from, to)),
            ObjectKind::Data(_) | ObjectKind::Head { .. } | ObjectKind::Other => {}
        }
    }
    for g in gens.values_mut() {
        let dir = g.dir();
        if g.complete {
            let label = dir.manifest(store);
            match store.read(&label).await {
                Ok(bytes) => match Manifest::parse(&bytes, label.as_ref()) {
                    Ok(m) => match super::read::check_place(&m, &dir) {
                        Ok(()) if !trust.checks() => {
                            g.signer = m.signer.clone();
                            g.manifest = Some(m);
                        }
                        Ok(()) => match m.check_signature(trust, label.as_ref()) {
                            Ok(signer) => {
                                g.verified = signer.is_some();
                                g.signer = signer;
                                g.manifest = Some(m);
                            }
                            Err(e) => {
                                g.complete = false;
                                g.signer = m.signer.clone();
                                g.problem = Some(e.to_string());
                            }
                        },
                        Err(e) => {
                            g.complete = false;
                            g.problem = Some(e.to_string());
                        }
                    },
                    Err(e) => {
                        g.complete = false;
                        g.problem = Some(e.to_string());
                    }
                },
                Err(e) => {
                    g.complete = false;
                    g.problem = Some(e.to_string());
                }
            }
        }
        if g.has_keyring {
            let path = dir.keyring(store);
            if let Ok(bytes) = store.read(&path).await {
                if let Ok(ring) = Keyring::from_json(&bytes, path.as_ref()) {
                    g.keks = ring.wrapped.iter().map(|w| w.kek.clone()).collect();
                }
            }
        }
        let streams = g
            .manifest
            .as_ref()
            .map(|m| m.streams(&g.dir()))
            .unwrap_or_default();
        for (stream, ranges) in g.ranges.iter_mut() {
            ranges.sort();
            ranges.dedup_by_key(|r| r.0);
            g.segments += ranges.len();
            let from = streams
                .iter()
                .find(|st| st.dir.shard == *stream)
                .map(|st| st.base_offset);
            let mut holes = vec![];
            if let Some(mut at) = from {
                for &(a, b) in ranges.iter() {
                    if a > at {
                        holes.push((at, a));
                    }
                    at = at.max(b);
                }
            }
            g.holes.extend(holes.iter().copied());
            match stream {
                None => g.aof_end = ranges.last().map(|r| r.1),
                Some(s) => g.shards.push(StreamInfo {
                    stream: s.clone(),
                    segments: ranges.len(),
                    aof_end: ranges.last().map(|r| r.1),
                    holes,
                }),
            }
        }
    }
    let mut out: Vec<GenerationInfo> = gens.into_values().collect();
    if trust.allow_unsigned {
        pass_over_unsigned_after_signed(&mut out);
    }
    Ok(out)
}

/// Unsigned (format 1) generations are read with --allow-unsigned only as
/// what they are: backups from before signing. One newer than the source's
/// oldest signed generation was written after signing began, which no
/// redvault does: planted. It is neither chosen nor counted by retention.
fn pass_over_unsigned_after_signed(gens: &mut [GenerationInfo]) {
    let oldest_signed: BTreeMap<String, String> = gens
        .iter()
        .filter(|g| g.complete && g.verified)
        .fold(BTreeMap::new(), |mut m, g| {
            m.entry(g.source.clone())
                .or_insert_with(|| g.generation.clone());
            m
        });
    for g in gens.iter_mut() {
        let newer = oldest_signed
            .get(&g.source)
            .is_some_and(|first| g.generation.as_str() > first.as_str());
        if g.complete && !g.verified && newer {
            g.complete = false;
            g.problem = Some(
                "unsigned (format 1), yet newer than this source's oldest signed generation: written after signing began, so planted; refused".into(),
            );
        }
    }
}
