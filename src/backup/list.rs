//! Listing the generations under a prefix: complete (manifest present and
//! readable) or incomplete, with sizes, key counts, the KEKs that wrap each
//! data key now (from keyring.json, so a rewrap shows), and AOF segments with
//! any holes. Needs no key.

use super::layout::{listing, ObjectKind};
use super::manifest::Manifest;
use super::BackupError;
use crate::keyring::Keyring;
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
    /// Why a manifest that exists could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// AOF segments (the daemon's): how many, the offset they reach, and any
    /// ranges missing between the base and the last one.
    pub segments: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aof_end: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<(u64, u64)>,
    #[serde(skip)]
    ranges: Vec<(u64, u64)>,
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
            problem: None,
            segments: 0,
            aof_end: None,
            holes: vec![],
            ranges: vec![],
            has_keyring: false,
        }
    }

    pub fn dir(&self) -> super::layout::GenerationDir {
        super::layout::GenerationDir::new(&self.source, &self.generation)
    }
}

/// Every generation under the prefix (or of one source), in name order.
pub async fn list(store: &Store, source: Option<&str>) -> Result<Vec<GenerationInfo>, BackupError> {
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
            ObjectKind::Segment { from, to, .. } => g.ranges.push((from, to)),
            ObjectKind::Data(_) | ObjectKind::Other => {}
        }
    }
    for g in gens.values_mut() {
        let dir = g.dir();
        if g.complete {
            let label = dir.manifest(store);
            match store.read(&label).await {
                Ok(bytes) => match Manifest::parse(&bytes, label.as_ref()) {
                    Ok(m) => match super::read::check_place(&m, &dir) {
                        Ok(()) => g.manifest = Some(m),
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
        g.ranges.sort();
        g.ranges.dedup_by_key(|r| r.0);
        g.segments = g.ranges.len();
        g.aof_end = g.ranges.last().map(|r| r.1);
        if let Some(m) = &g.manifest {
            let mut at = m.redis.offset;
            for &(from, to) in &g.ranges {
                if from > at {
                    g.holes.push((at, from));
                }
                at = at.max(to);
            }
        }
    }
    Ok(gens.into_values().collect())
}
