//! What a generation covers: its base snapshot's offset, then its AOF segments in
//! offset order, and any holes between them (a hole is never silent: `list`,
//! `verify` and `restore` name it).

use super::layout::{parse_head_name, parse_segment_name, GenerationDir};
use super::BackupError;
use crate::store::Store;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    pub name: String,
    pub from: u64,
    pub to: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timeline {
    pub segments: Vec<Segment>,
    /// `(from, to)` offset ranges with no segment.
    pub holes: Vec<(u64, u64)>,
    /// The offsets of the chain heads stored (not yet verified).
    #[serde(skip)]
    pub heads: Vec<u64>,
}

impl Timeline {
    /// The furthest offset a segment reaches, or `base` when there is none
    /// (segments from one offset are sorted longest first, so the last one
    /// listed need not reach furthest).
    pub fn end(&self, base: u64) -> u64 {
        self.segments.iter().map(|s| s.to).max().unwrap_or(base)
    }
}

/// Lists the generation's segments and checks the offsets follow on from `base`.
pub async fn timeline(
    store: &Store,
    dir: &GenerationDir,
    base: u64,
) -> Result<Timeline, BackupError> {
    let objects = store.list(&dir.aof_dir(store)).await?;
    let heads = objects
        .iter()
        .filter_map(|o| parse_head_name(o.location.filename()?))
        .collect();
    let mut segments: Vec<Segment> = objects
        .into_iter()
        .filter_map(|o| {
            let name = o.location.filename()?.to_string();
            let (from, to) = parse_segment_name(&name)?;
            Some(Segment {
                name,
                from,
                to,
                stored_bytes: o.size,
            })
        })
        .collect();
    // Two segments from one offset (a restart that cut differently) are both
    // kept, the longer first: each is checked on the chain, and replay skips
    // any record it already applied, so overlaps are safe.
    segments.sort_by_key(|s| (s.from, std::cmp::Reverse(s.to)));
    let mut holes = vec![];
    let mut at = base;
    for s in &segments {
        if s.from > at {
            holes.push((at, s.from));
        }
        at = at.max(s.to);
    }
    Ok(Timeline {
        segments,
        holes,
        heads,
    })
}
