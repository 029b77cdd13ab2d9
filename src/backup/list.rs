//! Listing the generations under a prefix: complete (manifest present and
//! readable) or incomplete, with sizes and key counts. Needs no key.

use super::layout::MANIFEST;
use super::manifest::Manifest;
use crate::store::{one_line, Store};
use futures::TryStreamExt;
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
            problem: None,
            segments: 0,
            aof_end: None,
            holes: vec![],
            ranges: vec![],
        }
    }
}

/// Every object under the prefix (or one source), with its path parts below
/// the prefix: `[source, generation, name...]`.
pub(super) async fn objects_below(
    store: &Store,
    source: Option<&str>,
) -> Result<Vec<(Vec<String>, object_store::ObjectMeta)>, String> {
    let root = match source {
        Some(s) => store.path(&[s]),
        None => store.prefix.clone(),
    };
    let depth = store.prefix.parts().count();
    let objects: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&root))
        .try_collect()
        .await
        .map_err(|e| format!("storage {}: cannot list: {}", store.url, one_line(&e)))?;
    Ok(objects
        .into_iter()
        .map(|o| {
            let parts = o
                .location
                .parts()
                .skip(depth)
                .map(|p| p.as_ref().to_string())
                .collect();
            (parts, o)
        })
        .collect())
}

pub async fn list(store: &Store, source: Option<&str>) -> Result<Vec<GenerationInfo>, String> {
    let mut gens: BTreeMap<(String, String), GenerationInfo> = BTreeMap::new();
    for (parts, o) in objects_below(store, source).await? {
        if parts.len() < 3 {
            continue;
        }
        let g = gens
            .entry((parts[0].clone(), parts[1].clone()))
            .or_insert_with(|| GenerationInfo::new(&parts[0], &parts[1]));
        g.stored_bytes += o.size;
        g.objects += 1;
        if parts.len() == 3 && parts[2] == MANIFEST {
            g.complete = true;
        }
        if parts.len() == 4 && parts[2] == crate::aof::AOF_DIR {
            if let Some(r) = crate::aof::parse_segment_name(&parts[3]) {
                g.ranges.push(r);
            }
        }
    }
    for g in gens.values_mut().filter(|g| g.complete) {
        let path = store.path(&[&g.source, &g.generation, MANIFEST]);
        let read = async {
            let bytes = store.inner.get(&path).await?.bytes().await?;
            Ok::<_, object_store::Error>(bytes)
        }
        .await;
        match read {
            Ok(bytes) => match Manifest::parse(&bytes, path.as_ref()) {
                Ok(m) => g.manifest = Some(m),
                Err(e) => {
                    g.complete = false;
                    g.problem = Some(e.to_string());
                }
            },
            Err(e) => {
                g.complete = false;
                g.problem = Some(one_line(&e));
            }
        }
    }
    for g in gens.values_mut() {
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
