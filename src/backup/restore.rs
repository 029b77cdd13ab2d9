//! Restore: a plan's base snapshot loaded into a target, then its segments
//! replayed up to the point, in order, through the same target (SELECTs in
//! the stream keep the database right). Only what Redis propagates for data is
//! replayed: any other command (CONFIG, ACL, EVAL, REPLICAOF, ...) stops the
//! restore, naming the segment and the offset.

use super::ahead::SegmentsAhead;
use super::chain::ChainWalk;
use super::layout::GenerationDir;
use super::plan::{Plan, Point};
use super::read::open_base;
use super::BackupError;
use crate::aof::KeyCache;
use crate::command::Replay;
use crate::kek::Kek;
use crate::signing::Trust;
use crate::store::Store;
use crate::target::{load, LoadStats, Target};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReplayStats {
    pub segments: usize,
    pub commands: u64,
    /// The replication offset of the last command applied.
    pub offset: u64,
    /// Receive time of the last command applied (Unix ms).
    pub time_ms: u64,
    /// Receive time of the newest record read (keepalives included).
    pub newest_ms: u64,
    /// The point fell inside a transaction (MULTI ... EXEC): it was left
    /// out whole, and the restore stopped before the MULTI at this offset.
    pub cut_transaction: Option<u64>,
    /// A shard's stream: writes to keys of slots it did not serve at the
    /// generation's start (migrated in), left for the second pass.
    #[serde(skip)]
    pub foreign: u64,
    /// A cluster generation: how far apart the shards' newest records
    /// restored are (ms). Each shard stops at its own last record at or
    /// before the point, stamped by this host's clock on arrival, so the
    /// skew is the shards' replication delays (and an idle shard's
    /// keepalive interval, 10 s by default).
    pub shard_skew_ms: Option<u64>,
}

/// Which of a shard stream's commands a pass applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Everything (a single server's stream).
    All,
    /// Writes to the shard's own slots, and keyless commands.
    Own,
    /// Writes to keys of other slots (migrated in during the generation).
    Foreign,
}

/// Whether `part` of a stream whose shard served `slots` takes `c`.
fn takes(part: Part, slots: &[[u16; 2]], c: &crate::command::Command) -> bool {
    use crate::command::Keys;
    if part == Part::All {
        return true;
    }
    let own = match c.keys() {
        Keys::Listed { at, .. } if !at.is_empty() => {
            let slot = crate::target::key_slot(&c.args[at[0]]) as u16;
            slots.iter().any(|r| r[0] <= slot && slot <= r[1])
        }
        // Keyless (and a module's, which cannot be told): the shard's own.
        _ => true,
    };
    own == (part == Part::Own)
}

/// A stop on the way, for a check of the target's state at one offset of a
/// single server's stream: once every command up to `at` is applied and
/// the target has them all ([`Target::barrier`]), `reached` is sent and the
/// replay waits for `resume`; an error there ends the restore. A replay
/// that never stops at `at` (a point before it) drops `reached` unsent.
pub struct Pause {
    pub at: u64,
    pub reached: tokio::sync::oneshot::Sender<()>,
    pub resume: tokio::sync::oneshot::Receiver<Result<(), String>>,
}

impl Pause {
    async fn wait(self, target: &mut dyn Target) -> Result<(), BackupError> {
        target.barrier().await?;
        if self.reached.send(()).is_err() {
            return Ok(()); // nobody checks
        }
        match self.resume.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(why)) => Err(BackupError::Invalid(why)),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub base: LoadStats,
    pub replayed: ReplayStats,
}

/// Loads the plan's base into `target`, replays its segments up to the point,
/// and waits for every reply. A plain generation is refused unless
/// `allow_plain`.
pub async fn restore(
    store: &Store,
    plan: &Plan,
    kek: &dyn Kek,
    allow_plain: bool,
    trust: &Trust,
    target: &mut dyn Target,
) -> Result<RestoreSummary, BackupError> {
    let base = open_base(
        store,
        &plan.source,
        &plan.generation,
        Some(kek),
        allow_plain,
        trust,
    )
    .await?;
    restore_inputs(store, plan, kek, trust, target, base).await
}

/// [`restore`] with the base already opened (`read::open_base`), e.g. given
/// back by a replication feed that could not take it.
pub async fn restore_inputs(
    store: &Store,
    plan: &Plan,
    kek: &dyn Kek,
    trust: &Trust,
    target: &mut dyn Target,
    base: Vec<crate::inputs::Input>,
) -> Result<RestoreSummary, BackupError> {
    load(target, base, &|_| {}).await?;
    let base_stats = target.stats().clone();
    let replayed = replay(store, plan, kek, trust, target, None).await?;
    let done = target.finish().await?;
    Ok(RestoreSummary {
        base: base_stats.settled(done),
        replayed,
    })
}

/// Applies the plan's segments to `target` (after its base is loaded), each
/// checked on the signed chain before any of it is applied; for the latest
/// state, the newest signed chain head must be reached. A cluster
/// generation's shard streams are applied one after the other, each shard's
/// own slots first (their keys are apart), then the keys migrated in.
pub async fn replay(
    store: &Store,
    plan: &Plan,
    kek: &dyn Kek,
    trust: &Trust,
    target: &mut dyn Target,
    pause: Option<Pause>,
) -> Result<ReplayStats, BackupError> {
    if plan.shards.is_empty() {
        return replay_stream(store, plan, kek, trust, target, Part::All, pause).await;
    }
    // A key migrated during the generation is in two streams: deleted from
    // its old shard's (MIGRATE propagates a DEL), restored into and written
    // in its new shard's. Every shard's own slots first, then the keys
    // migrated in, so the new shard's writes come after the old shard's DEL.
    let mut all = ReplayStats::default();
    let mut newest = vec![];
    for shard in &plan.shards {
        let s = replay_stream(store, shard, kek, trust, target, Part::Own, None).await?;
        newest.push(s.newest_ms);
        all.segments += s.segments;
        all.commands += s.commands;
        all.offset = all.offset.max(s.offset);
        all.time_ms = all.time_ms.max(s.time_ms);
        all.newest_ms = all.newest_ms.max(s.newest_ms);
        all.cut_transaction = all.cut_transaction.or(s.cut_transaction);
        all.foreign += s.foreign;
    }
    // Over the shards that had a record up to the point (every shard's
    // stream has its primary's keepalives, once the generation is a minute old).
    let seen: Vec<u64> = newest.into_iter().filter(|&t| t > 0).collect();
    if let (true, Some(lo), Some(hi)) = (seen.len() >= 2, seen.iter().min(), seen.iter().max()) {
        all.shard_skew_ms = Some(hi - lo);
    }
    if all.foreign > 0 {
        for shard in &plan.shards {
            let s = replay_stream(store, shard, kek, trust, target, Part::Foreign, None).await?;
            all.commands += s.commands;
        }
    }
    Ok(all)
}

/// A cluster's libraries are loaded on every primary, so each shard's stream
/// carries the same FUNCTION LOAD: replayed with REPLACE, the second one
/// into the same target is no conflict.
fn for_shard(c: crate::command::Command) -> crate::command::Command {
    let is_load = c.args.len() >= 3
        && c.name().eq_ignore_ascii_case(b"FUNCTION")
        && c.args[1].eq_ignore_ascii_case(b"LOAD")
        && !c.args[2].eq_ignore_ascii_case(b"REPLACE");
    if !is_load {
        return c;
    }
    let mut args = c.args;
    args.insert(2, b"REPLACE".to_vec());
    crate::command::Command { args, ..c }
}

/// A FLUSHALL or FLUSHDB: in one shard's stream it emptied that shard's
/// slots only, so it is replayed as [`Target::delete_slots`] of them.
fn is_flush(c: &crate::command::Command) -> bool {
    let n = c.name();
    n.eq_ignore_ascii_case(b"FLUSHALL") || n.eq_ignore_ascii_case(b"FLUSHDB")
}

/// Applies one command of a stream; `shard_slots` are the slots of a
/// cluster shard's stream, whose flushes empty only those.
async fn apply_one(
    target: &mut dyn Target,
    c: &crate::command::Command,
    shard_slots: Option<&[[u16; 2]]>,
) -> Result<(), BackupError> {
    match shard_slots {
        Some(slots) if is_flush(c) => {
            let all_dbs = c.name().eq_ignore_ascii_case(b"FLUSHALL");
            let n = target.delete_slots(slots, all_dbs, c.offset).await?;
            tracing::debug!(
                "the flush at offset {}: {n} keys of the shard's slots deleted",
                c.offset
            );
        }
        _ => target.apply(c).await?,
    }
    Ok(())
}

async fn replay_stream(
    store: &Store,
    plan: &Plan,
    kek: &dyn Kek,
    trust: &Trust,
    target: &mut dyn Target,
    part: Part,
    mut pause: Option<Pause>,
) -> Result<ReplayStats, BackupError> {
    let dir = GenerationDir::new(&plan.source, &plan.generation);
    let shard = dir.shard.is_some();
    let shard_slots = shard.then_some(plan.slots.as_slice());
    // The Own pass has passed over a write to a key migrated in.
    let mut foreign_seen = false;
    let trust = &trust.for_generation(plan.signed);
    let mut keys = KeyCache::new();
    let mut chain = ChainWalk::new(plan.base_offset);
    let mut stopped = false;
    let mut stats = ReplayStats {
        offset: plan.base_offset,
        ..Default::default()
    };
    // The last record consumed, and a transaction not yet closed by EXEC.
    let mut seen = plan.base_offset;
    let mut open: Option<Vec<crate::command::Command>> = None;
    let past = |r: &crate::command::Command| match plan.point {
        Point::Latest => false,
        Point::At(ms) => r.time_ms > ms,
        Point::Offset(o) => r.offset > o,
    };
    // Segments are opened one ahead of the one being applied (the target
    // applies a segment while the next is decrypted and decoded), and fetched
    // further ahead, several at once: a remote store's round trips, one per
    // segment, would otherwise add up to more than the applying.
    let (reads_tx, reads) = tokio::sync::mpsc::channel(1);
    let reader = async {
        let mut fetched = SegmentsAhead::new(store, &dir, &plan.timeline.segments);
        while let Some((seg, read)) = fetched.open_next(kek, &mut keys, trust).await {
            // Past the point (by its signed statement): nothing after this
            // segment is needed, so no more is opened (the few fetched ahead
            // are dropped).
            let last = match &read {
                Ok(r) => r.attested.as_ref().is_some_and(|a| match plan.point {
                    Point::Latest => false,
                    Point::At(ms) => a.statement.last_time_ms > ms,
                    Point::Offset(o) => seg.to >= o,
                }),
                Err(_) => true,
            };
            if reads_tx.send(read).await.is_err() || last {
                break;
            }
        }
        drop(reads_tx);
    };
    let applier = async {
        // Owned here: when the applier ends, the reader's next send fails.
        let mut reads = reads;
        if pause.as_ref().is_some_and(|p| p.at == seen) {
            pause.take().expect("checked").wait(target).await?;
        }
        'segments: for seg in &plan.timeline.segments {
            let read = match reads.recv().await {
                Some(read) => read?,
                // The reader stopped after the segment holding the point.
                None => {
                    stopped = true;
                    break 'segments;
                }
            };
            if let Err(e) = chain.admit(
                &dir.segment_label(&seg.name),
                seg.to,
                read.attested.as_ref(),
            ) {
                target.finish().await?;
                return Err(e);
            }
            let records = read.records;
            // A segment is checked whole before any of it is applied: one that
            // holds a command replay never runs is refused as a whole.
            if let Some(bad) = records
                .iter()
                .filter(|r| r.offset > seen && !past(r))
                .find(|r| r.replay() == Replay::Refuse)
            {
                // What came before it lands, so the target is at `before`.
                target.finish().await?;
                return Err(BackupError::UnsafeCommand {
                    label: dir.segment_label(&seg.name),
                    offset: bad.offset,
                    command: String::from_utf8_lossy(bad.name()).to_uppercase(),
                    before: stats.offset,
                });
            }
            stats.segments += 1;
            for r in records {
                let r = if shard { for_shard(r) } else { r };
                if r.offset <= seen {
                    continue; // already applied (an overlapping segment)
                }
                // Everything up to the pause is applied (a transaction is
                // never open there: the source's state at one offset is
                // never inside one).
                if open.is_none()
                    && pause
                        .as_ref()
                        .is_some_and(|p| p.at < r.offset && p.at >= seen)
                {
                    pause.take().expect("checked").wait(target).await?;
                }
                if past(&r) {
                    stopped = true;
                    break 'segments;
                }
                seen = r.offset;
                stats.newest_ms = stats.newest_ms.max(r.time_ms);
                // A shard's flush after keys migrated into it: which of
                // those slots' keys it held then is not known (a slot may
                // have been moving key by key), so it cannot be replayed
                // exactly. Found in the first pass, before the second
                // applies any of them.
                if part == Part::Own && foreign_seen && is_flush(&r) {
                    target.finish().await?;
                    return Err(BackupError::Invalid(format!(
                        "{}: the {} at offset {} came after keys were migrated into this shard during the generation, and which of them it emptied cannot be told; restore --at a time before it",
                        dir.segment_label(&seg.name),
                        String::from_utf8_lossy(r.name()).to_uppercase(),
                        r.offset
                    )));
                }
                if !takes(part, &plan.slots, &r) {
                    if part == Part::Own {
                        stats.foreign += 1;
                        foreign_seen |= r.replay() == Replay::Apply;
                    }
                    if open.is_none() {
                        stats.offset = r.offset;
                    }
                    continue;
                }
                if r.replay() != Replay::Apply {
                    if open.is_none() {
                        stats.offset = r.offset;
                    }
                    continue;
                }
                // A transaction is applied when its EXEC is reached, whole, or
                // not at all (the point may fall inside it).
                if let Some(tx) = open.as_mut() {
                    tx.push(r);
                    if tx
                        .last()
                        .is_some_and(|c| c.name().eq_ignore_ascii_case(b"EXEC"))
                    {
                        let tx = open.take().expect("open");
                        // A flush replayed as deletes runs on a connection of
                        // its own, outside the transaction: the commands
                        // around it go without MULTI/EXEC, in their order
                        // (nobody reads the target during a restore).
                        let unwrap = shard_slots.is_some() && tx.iter().any(is_flush);
                        for c in &tx {
                            let edge = c.name().eq_ignore_ascii_case(b"MULTI")
                                || c.name().eq_ignore_ascii_case(b"EXEC");
                            if !(unwrap && edge) {
                                apply_one(target, c, shard_slots).await?;
                            }
                        }
                        stats.commands += tx.len() as u64;
                        let last = tx.last().expect("EXEC");
                        stats.offset = last.offset;
                        stats.time_ms = last.time_ms;
                    }
                    continue;
                }
                if r.name().eq_ignore_ascii_case(b"MULTI") {
                    open = Some(vec![r]);
                    continue;
                }
                apply_one(target, &r, shard_slots).await?;
                stats.commands += 1;
                stats.offset = r.offset;
                stats.time_ms = r.time_ms;
            }
        }
        if open.is_some() {
            // The point (or the end of what is stored) is inside a transaction.
            stats.cut_transaction = Some(stats.offset);
        }
        if open.is_none() && pause.as_ref().is_some_and(|p| p.at == seen) {
            pause.take().expect("checked").wait(target).await?;
        }
        if !stopped {
            // Everything stored was asked for: the end must be the signed one.
            if let Err(e) = chain.check_end(plan.head.as_ref(), &plan.generation) {
                target.finish().await?;
                return Err(e);
            }
        }
        Ok(stats)
    };
    let ((), r) = tokio::join!(reader, applier);
    r
}
