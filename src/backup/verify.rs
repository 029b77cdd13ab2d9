//! `verify`: reads every object of the chosen generations — the base (every
//! chunk authenticated, its digest against the manifest) and every AOF segment
//! (every chunk, every record, offsets following on) — and reports holes. No
//! Redis needed.

use super::list::list;
use super::plan::read_segment;
use super::read::open_base;
use super::timeline::timeline;
use super::BackupError;
use crate::aof::KeyCache;
use crate::inputs::drain;
use crate::kek::Kek;
use crate::store::Store;

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationReport {
    pub source: String,
    pub generation: String,
    pub complete: bool,
    pub base_bytes: u64,
    pub segments: usize,
    pub commands: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub holes: Vec<(u64, u64)>,
    pub problems: Vec<String>,
}

impl GenerationReport {
    pub fn ok(&self) -> bool {
        self.complete && self.holes.is_empty() && self.problems.is_empty()
    }
}

pub async fn verify(
    store: &Store,
    source: Option<&str>,
    generation: Option<&str>,
    kek: &dyn Kek,
    mut progress: impl FnMut(&GenerationReport),
) -> Result<Vec<GenerationReport>, BackupError> {
    let gens = list(store, source).await?;
    let mut out = vec![];
    // One key cache for the run: its unwrap-failure budget spans generations.
    let mut keys = KeyCache::new();
    for g in gens
        .iter()
        .filter(|g| generation.is_none_or(|want| want == g.generation))
    {
        let mut r = GenerationReport {
            source: g.source.clone(),
            generation: g.generation.clone(),
            complete: g.complete,
            base_bytes: 0,
            segments: 0,
            commands: 0,
            first_offset: 0,
            last_offset: 0,
            holes: vec![],
            problems: vec![],
        };
        let Some(m) = g.manifest.as_ref() else {
            r.problems.push(g.problem.clone().unwrap_or_else(|| {
                "incomplete: no manifest (an interrupted base snapshot)".into()
            }));
            progress(&r);
            out.push(r);
            continue;
        };
        r.first_offset = m.redis.offset;
        r.last_offset = m.redis.offset;
        // A plain generation is named as a problem: a KEK is given.
        match open_base(store, &g.source, &g.generation, Some(kek), false).await {
            Ok(input) => match drain(input).await {
                Ok(n) => r.base_bytes = n,
                Err(e) => r.problems.push(format!("base: {e}")),
            },
            Err(e) => r.problems.push(format!("base: {e}")),
        }
        let dir = g.dir();
        match timeline(store, &dir, m.redis.offset).await {
            Ok(t) => {
                r.holes = t.holes.clone();
                for seg in &t.segments {
                    match read_segment(store, &dir, &seg.name, kek, &mut keys).await {
                        Ok(records) => {
                            r.segments += 1;
                            r.commands += records.len() as u64;
                            if let Some(bad) = records
                                .iter()
                                .find(|c| c.replay() == crate::command::Replay::Refuse)
                            {
                                r.problems.push(format!(
                                    "segment {}: the command at offset {} is {}, which replay never runs",
                                    seg.name,
                                    bad.offset,
                                    String::from_utf8_lossy(bad.name()).to_uppercase()
                                ));
                            }
                            let mut at = seg.from;
                            for rec in &records {
                                if rec.offset <= at {
                                    r.problems.push(format!(
                                        "segment {}: offsets go backwards at {}",
                                        seg.name, rec.offset
                                    ));
                                    break;
                                }
                                at = rec.offset;
                            }
                            if at != seg.to {
                                r.problems.push(format!(
                                    "segment {}: its records end at offset {at}, its name says {}",
                                    seg.name, seg.to
                                ));
                            }
                            r.last_offset = r.last_offset.max(seg.to);
                        }
                        Err(e) => r.problems.push(e.to_string()),
                    }
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
        progress(&r);
        out.push(r);
    }
    Ok(out)
}
