//! Point-in-time planning: which generation covers the point, and which of its
//! segments lead up to it. Replay itself is `restore.rs` into a `Target`.

use super::head::{newest_head, Head};
use super::layout::GenerationDir;
use super::list::{list, GenerationInfo};
use super::timeline::{timeline, Timeline};
use super::BackupError;
use crate::aof::chain::Attested;
use crate::aof::{decode_records, open_segment, KeyCache, SegmentPlace};
use crate::command::Command;
use crate::kek::Kek;
use crate::signing::Trust;
use crate::store::Store;
use crate::text::{parse_rfc3339_ms as parse_ms, rfc3339_ms};

/// Where to stop.
#[derive(Debug, Clone, Copy)]
pub enum Point {
    /// Everything storage holds.
    Latest,
    /// The state at this wall-clock time (Unix ms): commands received up to it.
    At(u64),
    /// The state at this replication offset.
    Offset(u64),
}

/// What a restore will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: String,
    pub generation: String,
    pub base_offset: u64,
    pub timeline: Timeline,
    pub point: Point,
    /// The newest signed chain head that verified: where the segments must reach.
    pub head: Option<Head>,
    /// The manifest is signed (so every segment must be too).
    pub signed: bool,
    /// A cluster generation: one plan per shard's stream (`generation` is
    /// the stream's name, `<generation>/shard-<first>-<last>`); this plan's
    /// own timeline is then empty.
    pub shards: Vec<Plan>,
    /// A shard's plan: the slots its primary served at the generation's
    /// start (its stream may also carry keys migrated in from other shards).
    pub slots: Vec<[u16; 2]>,
}

impl Plan {
    /// The plans of its streams: each shard's, else this one.
    pub fn streams(&self) -> Vec<&Plan> {
        if self.shards.is_empty() {
            vec![self]
        } else {
            self.shards.iter().collect()
        }
    }
}

/// One command stream of a generation: the generation's own, or a shard's.
struct Stream {
    dir: GenerationDir,
    base_offset: u64,
    timeline: Timeline,
    slots: Vec<[u16; 2]>,
}

/// The time range a generation covers: its base's creation to its last record.
#[derive(Debug, Clone)]
pub struct Coverage {
    pub generation: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub base_offset: u64,
    pub end_offset: u64,
}

/// One segment read: its records and its verified statement.
pub struct SegmentRead {
    pub records: Vec<Command>,
    pub attested: Option<Attested>,
}

/// Where a segment of the stream in `dir` must say it is.
fn place<'a>(dir: &'a GenerationDir, seg: &'a super::timeline::Segment) -> SegmentPlace<'a> {
    SegmentPlace {
        source: &dir.source,
        generation: &dir.stream,
        name: &seg.name,
        from: seg.from,
        to: seg.to,
    }
}

/// Reads one segment: signature and place checked, then its records.
pub async fn read_segment(
    store: &Store,
    dir: &GenerationDir,
    seg: &super::timeline::Segment,
    kek: &dyn Kek,
    keys: &mut KeyCache,
    trust: &Trust,
) -> Result<SegmentRead, BackupError> {
    let sealed = store.read(&dir.segment(store, &seg.name)).await?;
    open_fetched(&sealed, dir, seg, kek, keys, trust).await
}

/// Opens a fetched segment: signature and place checked, then its records.
pub async fn open_fetched(
    sealed: &[u8],
    dir: &GenerationDir,
    seg: &super::timeline::Segment,
    kek: &dyn Kek,
    keys: &mut KeyCache,
    trust: &Trust,
) -> Result<SegmentRead, BackupError> {
    let label = dir.segment_label(&seg.name);
    let opened = open_segment(sealed, &place(dir, seg), kek, keys, trust, &label).await?;
    Ok(SegmentRead {
        records: decode_records(&opened.plain, &label)?,
        attested: opened.attested,
    })
}

/// The receive time of a segment's last record, from its signed statement;
/// None for an unsigned segment.
async fn last_record_time(
    store: &Store,
    dir: &GenerationDir,
    seg: &super::timeline::Segment,
    trust: &Trust,
) -> Result<Option<u64>, BackupError> {
    let label = dir.segment_label(&seg.name);
    let place = place(dir, seg);
    let stream = store.read_stream(&dir.segment(store, &seg.name)).await?;
    let mut body = tokio_util::io::StreamReader::new(stream);
    let st = crate::aof::segment_statement(&mut body, &place, trust, &label).await?;
    Ok(st.map(|a| a.statement.last_time_ms))
}

async fn coverage(
    store: &Store,
    g: &GenerationInfo,
    kek: &dyn Kek,
    keys: &mut KeyCache,
    trust: &Trust,
) -> Result<(Coverage, Vec<Stream>), BackupError> {
    let m = g
        .manifest
        .as_ref()
        .ok_or_else(|| BackupError::NotFound(format!("{}: no manifest", g.generation)))?;
    let base_offset = m.redis.offset;
    let trust = &trust.for_generation(g.verified);

    let created = parse_ms(&m.created).unwrap_or(0);
    let completed = parse_ms(&m.completed).unwrap_or(created);
    // A cluster's shards were snapshotted one after another: a time before
    // the last of them is not a state every shard has.
    let from_ms = if m.cluster.is_some() {
        completed
    } else {
        created
    };
    let mut to_ms: Option<u64> = None;
    let mut streams = vec![];
    // A cluster generation: each shard's stream from its own snapshot.
    for st in m.streams(&g.dir()) {
        let (dir, base, slots) = (st.dir, st.base_offset, st.slots);
        let t = timeline(store, &dir, base).await?;
        let mut last_ms = completed;
        if let Some(last) = t.segments.last() {
            // The time index: each segment's signed statement (in its header)
            // names the receive time of its last record, so nothing is
            // decrypted to learn the coverage. An unsigned segment is read.
            match last_record_time(store, &dir, last, trust).await? {
                Some(ms) => last_ms = last_ms.max(ms),
                None => {
                    let read = read_segment(store, &dir, last, kek, keys, trust).await?;
                    if let Some(r) = read.records.last() {
                        last_ms = last_ms.max(r.time_ms);
                    }
                }
            }
        }
        // Covered is what every stream reaches (a shard whose stream lags
        // would otherwise give its older state beside the others' newer).
        // Idle streams still move: keepalives are cut once a minute.
        to_ms = Some(to_ms.map_or(last_ms, |t| t.min(last_ms)));
        streams.push(Stream {
            dir,
            base_offset: base,
            timeline: t,
            slots,
        });
    }
    let end_offset = match (&m.cluster, streams.first()) {
        (None, Some(s)) => s.timeline.end(base_offset),
        _ => base_offset,
    };
    Ok((
        Coverage {
            generation: g.generation.clone(),
            from_ms,
            to_ms: to_ms.unwrap_or(completed),
            base_offset,
            end_offset,
        },
        streams,
    ))
}

/// One stream's plan: no hole before the point, and for the latest state the
/// newest signed chain head reached (by names here; replay checks the links).
async fn stream_plan(
    store: &Store,
    source: &str,
    st: Stream,
    point: Point,
    signed: bool,
    trust: &Trust,
) -> Result<Plan, BackupError> {
    let Stream {
        dir,
        base_offset,
        timeline: t,
        slots,
    } = st;
    if let Some((a, b)) = t.holes.first() {
        let needed = match point {
            Point::Offset(o) => o > *a,
            _ => true,
        };
        if needed {
            return Err(BackupError::Invalid(format!(
                "generation {} has a hole from offset {a} to {b} (segments missing); restore up to --offset {a} or an earlier point",
                dir.stream
            )));
        }
    }
    let head = newest_head(store, &dir, &t.heads, &trust.for_generation(signed)).await;
    if let (Some(h), Point::Latest) = (&head, point) {
        // Named before anything is loaded (replay checks the links too).
        super::chain::ChainWalk::new(t.end(base_offset).max(base_offset))
            .reached_names(h, &dir.stream)?;
    }
    Ok(Plan {
        source: source.into(),
        generation: dir.stream.clone(),
        base_offset,
        timeline: t,
        point,
        head,
        signed,
        shards: vec![],
        slots,
    })
}

/// Chooses the generation for `point`; a point no generation covers is refused,
/// naming what is covered.
pub async fn plan(
    store: &Store,
    source: &str,
    generation: Option<&str>,
    point: Point,
    kek: &dyn Kek,
    allow_plain: bool,
    trust: &Trust,
) -> Result<Plan, BackupError> {
    trust.require_for_reading()?;
    let mut all = list(store, Some(source), trust).await?;
    super::read::mark_plain_skipped(&mut all, !allow_plain && generation.is_none());
    let mut gens: Vec<GenerationInfo> = all
        .iter()
        .filter(|g| g.complete && generation.is_none_or(|want| want == g.generation))
        .cloned()
        .collect();
    gens.sort_by(|a, b| b.generation.cmp(&a.generation)); // newest first
    if gens.is_empty() {
        return Err(BackupError::NotFound(match generation {
            Some(g) => format!(
                "no complete generation {g} of source {source} in {}",
                store.url
            ),
            None => format!(
                "no complete backup of source {source} in {}{}",
                store.url,
                super::read::passed_over(&all)
            ),
        }));
    }
    let mut keys = KeyCache::new();
    let mut seen: Vec<Coverage> = vec![];
    for g in &gens {
        let (c, streams) = coverage(store, g, kek, &mut keys, trust).await?;
        let cluster = g.manifest.as_ref().is_some_and(|m| m.cluster.is_some());
        if cluster && matches!(point, Point::Offset(_)) {
            // Its shards each have their own offsets: not a point of it.
            if generation.is_some() {
                return Err(BackupError::Invalid(format!(
                    "generation {} is of a cluster, whose shards each have their own offsets: restore it --at a time instead of --offset",
                    g.generation
                )));
            }
            continue;
        }
        let fits = match point {
            Point::Latest => true,
            Point::At(ms) => ms >= c.from_ms && ms <= c.to_ms,
            Point::Offset(o) => o >= c.base_offset && o <= c.end_offset,
        };
        if fits {
            if generation.is_none() && matches!(point, Point::Latest) {
                super::read::warn_skipped_newer(&all, source, &g.generation);
            }
            let mut plans = vec![];
            for st in streams {
                plans.push(stream_plan(store, source, st, point, g.verified, trust).await?);
            }
            if !cluster {
                return Ok(plans.pop().expect("one stream"));
            }
            return Ok(Plan {
                source: source.into(),
                generation: g.generation.clone(),
                base_offset: c.base_offset,
                timeline: Timeline::default(),
                point,
                head: None,
                signed: g.verified,
                shards: plans,
                slots: vec![],
            });
        }
        seen.push(c);
    }
    seen.reverse();
    let ranges = seen
        .iter()
        .map(|c| match point {
            Point::Offset(_) => format!(
                "{}: offsets {}..{}",
                c.generation, c.base_offset, c.end_offset
            ),
            _ => format!(
                "{}: {} to {}",
                c.generation,
                rfc3339_ms(c.from_ms),
                rfc3339_ms(c.to_ms)
            ),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let asked = match point {
        Point::At(ms) => rfc3339_ms(ms),
        Point::Offset(o) => format!("offset {o}"),
        Point::Latest => "the latest state".into(),
    };
    Err(BackupError::Invalid(format!(
        "{asked} is outside what the backups of {source} cover ({ranges})"
    )))
}
