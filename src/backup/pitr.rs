//! Point-in-time restore: pick the generation that covers the point, then (after
//! its base is loaded) replay its AOF segments up to the point, in order, on one
//! pipelined connection (SELECTs in the stream keep the database right).

use super::list::{list, GenerationInfo};
use super::timeline::{timeline, Timeline};
use crate::aof::{decode_records, open_segment, KeyCache, Record, AOF_DIR};
use crate::kek::Kek;
use crate::replication::{LinkOptions, RedisUrl, Reply};
use crate::store::{one_line, Store};

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

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn parse_ms(rfc: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(rfc)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// Reads one segment's records.
pub async fn read_segment(
    store: &Store,
    source: &str,
    generation: &str,
    name: &str,
    kek: &dyn Kek,
    keys: &mut KeyCache,
) -> Result<Vec<Record>, String> {
    let path = store.path(&[source, generation, AOF_DIR, name]);
    let label = format!("{source}/{generation}/{AOF_DIR}/{name}");
    let bytes = async { store.inner.get(&path).await?.bytes().await }
        .await
        .map_err(|e| format!("cannot read {label}: {}", one_line(&e)))?;
    let plain = open_segment(&bytes, generation, name, kek, keys, &label)
        .await
        .map_err(|e| e.to_string())?;
    decode_records(&plain, &label).map_err(|e| e.to_string())
}

async fn coverage(
    store: &Store,
    g: &GenerationInfo,
    kek: &dyn Kek,
    keys: &mut KeyCache,
) -> Result<(Coverage, Timeline), String> {
    let m = g.manifest.as_ref().ok_or("no manifest")?;
    let base_offset = m.redis.offset;
    let t = timeline(store, &g.source, &g.generation, base_offset).await?;
    let from_ms = parse_ms(&m.created).unwrap_or(0);
    let mut to_ms = parse_ms(&m.completed).unwrap_or(from_ms);
    if let Some(last) = t.segments.last() {
        let recs = read_segment(store, &g.source, &g.generation, &last.name, kek, keys).await?;
        if let Some(r) = recs.last() {
            to_ms = to_ms.max(r.time_ms);
        }
    }
    Ok((
        Coverage {
            generation: g.generation.clone(),
            from_ms,
            to_ms,
            base_offset,
            end_offset: t.end(base_offset),
        },
        t,
    ))
}

/// Chooses the generation for `point`; a point no generation covers is refused,
/// naming what is covered.
pub async fn plan(
    store: &Store,
    source: &str,
    generation: Option<&str>,
    point: Point,
    kek: &dyn Kek,
) -> Result<Plan, String> {
    let mut gens: Vec<GenerationInfo> = list(store, Some(source))
        .await?
        .into_iter()
        .filter(|g| g.complete && generation.is_none_or(|want| want == g.generation))
        .collect();
    gens.sort_by(|a, b| b.generation.cmp(&a.generation)); // newest first
    if gens.is_empty() {
        return Err(match generation {
            Some(g) => format!(
                "no complete generation {g} of source {source} in {}",
                store.url
            ),
            None => format!("no complete backup of source {source} in {}", store.url),
        });
    }
    let mut keys = KeyCache::new();
    let mut seen: Vec<Coverage> = vec![];
    for g in &gens {
        let (c, t) = coverage(store, g, kek, &mut keys).await?;
        let fits = match point {
            Point::Latest => true,
            Point::At(ms) => ms >= c.from_ms && ms <= c.to_ms,
            Point::Offset(o) => o >= c.base_offset && o <= c.end_offset,
        };
        if fits {
            if let Some((a, b)) = t.holes.first() {
                let needed = match point {
                    Point::Offset(o) => o > *a,
                    _ => true,
                };
                if needed {
                    return Err(format!(
                        "generation {} has a hole from offset {a} to {b} (segments missing); restore up to --offset {a} or an earlier point",
                        g.generation
                    ));
                }
            }
            return Ok(Plan {
                source: source.into(),
                generation: g.generation.clone(),
                base_offset: c.base_offset,
                timeline: t,
                point,
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
    Err(format!(
        "{asked} is outside what the backups of {source} cover ({ranges})"
    ))
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReplayStats {
    pub segments: usize,
    pub commands: u64,
    /// The replication offset of the last command applied.
    pub offset: u64,
    /// Receive time of the last command applied (Unix ms).
    pub time_ms: u64,
}

/// Replays the plan's segments into the target (after the base is loaded).
pub async fn replay(
    store: &Store,
    plan: &Plan,
    kek: &dyn Kek,
    url: &RedisUrl,
    link: &LinkOptions,
) -> Result<ReplayStats, String> {
    let mut conn = crate::resp::connect(url, link)
        .await
        .map_err(|e| e.to_string())?;
    let mut keys = KeyCache::new();
    let mut stats = ReplayStats {
        offset: plan.base_offset,
        ..Default::default()
    };
    let mut batch: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut pending: Vec<u64> = vec![];
    'segments: for seg in &plan.timeline.segments {
        let records = read_segment(
            store,
            &plan.source,
            &plan.generation,
            &seg.name,
            kek,
            &mut keys,
        )
        .await?;
        stats.segments += 1;
        for r in records {
            if r.offset <= stats.offset {
                continue; // already applied (an overlapping segment)
            }
            let past = match plan.point {
                Point::Latest => false,
                Point::At(ms) => r.time_ms > ms,
                Point::Offset(o) => r.offset > o,
            };
            if past {
                break 'segments;
            }
            stats.offset = r.offset;
            stats.time_ms = r.time_ms;
            if !r.is_replayable() {
                continue;
            }
            batch.extend_from_slice(&crate::resp::encode_command(&r.args));
            pending.push(r.offset);
            stats.commands += 1;
            if pending.len() >= 512 || batch.len() >= 4 << 20 {
                flush(&mut conn, &mut batch, &mut pending).await?;
            }
        }
    }
    flush(&mut conn, &mut batch, &mut pending).await?;
    Ok(stats)
}

async fn flush(
    conn: &mut crate::resp::Conn,
    batch: &mut Vec<u8>,
    pending: &mut Vec<u64>,
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    conn.write_raw(batch).await.map_err(|e| e.to_string())?;
    for offset in pending.drain(..) {
        let reply = conn
            .read_any("the reply to a replayed command")
            .await
            .map_err(|e| e.to_string())?;
        if let Reply::Error(m) = reply {
            return Err(format!(
                "the target refused the command at offset {offset}: {m}"
            ));
        }
    }
    batch.clear();
    Ok(())
}
