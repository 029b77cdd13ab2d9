//! `verify`: reads every object of the chosen generations — the base (every
//! chunk authenticated, its digest against the manifest) and every AOF segment
//! (every chunk, every record, offsets following on) — and reports holes. No
//! Redis needed.

use super::ahead::SegmentsAhead;
use super::chain::ChainWalk;
use super::head::newest_head;
use super::list::list;
use super::read::open_base;
use super::timeline::timeline;
use super::BackupError;
use crate::aof::KeyCache;
use crate::inputs::drain;
use crate::kek::Kek;
use crate::signing::Trust;
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
    /// The verified signer of the manifest (None: unsigned, read with --allow-unsigned).
    pub signer: Option<String>,
    /// Receive time of the newest record (Unix ms; the base's time without segments).
    pub newest_ms: u64,
    pub problems: Vec<String>,
}

impl GenerationReport {
    pub fn ok(&self) -> bool {
        self.complete && self.holes.is_empty() && self.problems.is_empty()
    }
}

/// Every input read to its end (each checked as it goes); bytes in all.
async fn drain_all(inputs: Vec<crate::inputs::Input>) -> Result<u64, crate::inputs::InputError> {
    let mut n = 0;
    for i in inputs {
        n += drain(i).await?;
    }
    Ok(n)
}

pub async fn verify(
    store: &Store,
    source: Option<&str>,
    generation: Option<&str>,
    kek: &dyn Kek,
    trust: &Trust,
    mut progress: impl FnMut(&GenerationReport),
) -> Result<Vec<GenerationReport>, BackupError> {
    trust.require_for_reading()?;
    let gens = list(store, source, trust).await?;
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
            // Only a signer that was checked is reported.
            signer: g.signer.clone().filter(|_| g.verified),
            newest_ms: 0,
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
        r.newest_ms = crate::text::parse_rfc3339_ms(&m.completed).unwrap_or(0);
        // A plain generation is named as a problem: a KEK is given.
        match open_base(store, &g.source, &g.generation, Some(kek), false, trust).await {
            Ok(inputs) => match drain_all(inputs).await {
                Ok(n) => {
                    r.base_bytes = n;
                    // The digest matched; the manifest's counts must too.
                    let listed: u64 = m
                        .objects
                        .iter()
                        .filter(|o| o.kind == "rdb")
                        .map(|o| o.plaintext_bytes)
                        .sum();
                    if listed != n {
                        r.problems
                            .push(format!("base: {n} bytes, the manifest says {listed}"));
                    }
                }
                Err(e) => r.problems.push(format!("base: {e}")),
            },
            Err(e) => r.problems.push(format!("base: {e}")),
        }
        let trust = &trust.for_generation(g.verified);
        // A cluster generation: each shard's stream from its own snapshot.
        for st in m.streams(&g.dir()) {
            verify_stream(
                store,
                &st.dir,
                st.base_offset,
                kek,
                &mut keys,
                trust,
                &mut r,
            )
            .await;
        }
        progress(&r);
        out.push(r);
    }
    Ok(out)
}

/// One stream's segments: each read whole and checked on the chain, its
/// records' offsets following on, the signed end reached; what fails is
/// added to `r.problems`.
async fn verify_stream(
    store: &Store,
    dir: &super::layout::GenerationDir,
    base: u64,
    kek: &dyn Kek,
    keys: &mut KeyCache,
    trust: &Trust,
    r: &mut GenerationReport,
) {
    match timeline(store, dir, base).await {
        Ok(t) => {
            r.holes.extend(t.holes.iter().copied());
            let mut chain = ChainWalk::new(base);
            let mut chain_ok = true;
            let mut fetched = SegmentsAhead::new(store, dir, &t.segments);
            while let Some((seg, read)) = fetched.open_next(kek, keys, trust).await {
                match read {
                    Ok(read) => {
                        if let Err(e) = chain.admit(
                            &dir.segment_label(&seg.name),
                            seg.to,
                            read.attested.as_ref(),
                        ) {
                            // Not counted: it is not part of this backup.
                            r.problems.push(e.to_string());
                            chain_ok = false;
                            continue;
                        }
                        let records = read.records;
                        if let Some(last) = records.last() {
                            r.newest_ms = r.newest_ms.max(last.time_ms);
                        }
                        r.segments += 1;
                        r.commands += records.len() as u64;
                        if let Some(bad) = records
                            .iter()
                            .find(|c| c.replay() == crate::command::Replay::Refuse)
                        {
                            r.problems.push(format!(
                                "segment {}: the command at offset {} is {}, which replay never runs",
                                dir.segment_label(&seg.name),
                                bad.offset,
                                String::from_utf8_lossy(bad.name()).to_uppercase()
                            ));
                        }
                        let mut at = seg.from;
                        for rec in &records {
                            if rec.offset <= at {
                                r.problems.push(format!(
                                    "segment {}: offsets go backwards at {}",
                                    dir.segment_label(&seg.name),
                                    rec.offset
                                ));
                                break;
                            }
                            at = rec.offset;
                        }
                        if at != seg.to {
                            r.problems.push(format!(
                                "segment {}: its records end at offset {at}, its name says {}",
                                dir.segment_label(&seg.name),
                                seg.to
                            ));
                        }
                        r.last_offset = r.last_offset.max(seg.to);
                    }
                    Err(e) => {
                        r.problems.push(e.to_string());
                        chain_ok = false;
                    }
                }
            }
            let head = newest_head(store, dir, &t.heads, trust).await;
            if chain_ok {
                if let Err(e) = chain.check_end(head.as_ref(), &dir.stream) {
                    r.problems.push(e.to_string());
                }
            } else if let Some(h) = head.filter(|h| h.to > chain.reached) {
                r.problems.push(format!(
                    "its signed chain head says the segments reach offset {}",
                    h.to
                ));
            }
        }
        Err(e) => r.problems.push(e.to_string()),
    }
}
