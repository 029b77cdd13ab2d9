//! `redvault restore` (a point in time), `redvault verify`, `redvault prune`.

use super::args::{confirm_flush, flush_all, KekArg, RedisArgs, StoreArgs, TrustArgs};
use super::feed::{release, try_feed, Fed, Via, ViaArgs};
use super::output::Output;
use crate::backup::{open_base, plan, prune, replay, verify, GenerationReport, Point};
use crate::settings::Config;
use crate::target::{load, LoadStats, Target};
use crate::target::{Conflict, LoadOptions};
use anyhow::{bail, Context};
use clap::Args;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The Redis to restore into.
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Source name in the layout.
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    #[command(flatten)]
    pub kek: KekArg,
    /// Restore the state at this time (RFC 3339, e.g. 2026-11-23T10:15:00Z).
    #[arg(long, conflicts_with = "offset")]
    pub at: Option<String>,
    /// Restore the state at this replication offset.
    #[arg(long)]
    pub offset: Option<u64>,
    /// Only this generation (to its end, or to --at / --offset within it).
    #[arg(long)]
    pub generation: Option<String>,
    /// Delete every key of the target first (FLUSHALL; asks unless --yes).
    #[arg(long)]
    pub flush: bool,
    /// Confirm --flush without asking.
    #[arg(long)]
    pub yes: bool,
    /// Overwrite keys that exist in the target.
    #[arg(long)]
    pub replace: bool,
    /// Restore a plain (unencrypted) generation even though a KEK is given.
    #[arg(long)]
    pub allow_plain: bool,
    /// Parallel connections for the base snapshot.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub via: ViaArgs,
}

/// What a restore of a plan needs besides its target.
pub struct RestoreJob<'a> {
    pub store: &'a crate::store::Store,
    pub plan: &'a crate::backup::Plan,
    pub kek: &'a dyn crate::kek::Kek,
    pub allow_plain: bool,
    pub trust: &'a crate::signing::Trust,
    pub url: &'a crate::resp::RedisUrl,
    pub link: &'a crate::resp::ConnectOptions,
    pub via: &'a ViaArgs,
    /// Why the feed may not be used, if the caller knows a reason.
    pub ruled_out: Option<String>,
}

/// What a restore did, and how long each part took.
pub struct Restored {
    pub stats: LoadStats,
    pub replayed: crate::backup::ReplayStats,
    /// `replication` or `restore`: how the base went in.
    pub via: &'static str,
    /// From the start to the base loaded (fetch, open, load).
    pub base_seconds: f64,
    /// The segments' replay, up to a usable target.
    pub replay_seconds: f64,
}

/// The base of `job.plan` into the target (through the feed when `--via`
/// allows it, else into `target` by RESTORE), then its segments replayed up
/// to the point; a target fed by replication is released whatever happened.
pub async fn restore_plan(
    job: &RestoreJob<'_>,
    target: &mut dyn Target,
    pause: Option<crate::backup::restore::Pause>,
) -> anyhow::Result<Restored> {
    let started = Instant::now();
    let base = open_base(
        job.store,
        &job.plan.source,
        &job.plan.generation,
        Some(job.kek),
        job.allow_plain,
        job.trust,
    )
    .await?;
    let fed = if job.via.via == Via::Restore {
        Fed::Restore(base)
    } else {
        try_feed(
            job.via,
            job.ruled_out.clone(),
            None,
            job.url,
            job.link,
            base,
            &|_| {},
        )
        .await?
    };
    match fed {
        Fed::Restore(base) => {
            load(target, base, &|_| {}).await?;
            let base_stats = target.stats().clone();
            let base_seconds = started.elapsed().as_secs_f64();
            let replayed = replay(job.store, job.plan, job.kek, job.trust, target, pause).await?;
            let done = target.finish().await?;
            Ok(Restored {
                stats: base_stats.settled(done),
                replayed,
                via: "restore",
                base_seconds,
                replay_seconds: started.elapsed().as_secs_f64() - base_seconds,
            })
        }
        Fed::Loaded(mut feeding) => {
            let base_seconds = started.elapsed().as_secs_f64();
            // The segments go down the same replication stream (applied as
            // a replica applies its primary's writes). The target is
            // released whatever the replay did.
            let replayed = replay(
                job.store,
                job.plan,
                job.kek,
                job.trust,
                feeding.as_mut(),
                pause,
            )
            .await;
            let (replayed, fed) = match (replayed, release(feeding).await) {
                (Ok(r), Ok(f)) => (r, f),
                (Err(e), Ok(_)) => return Err(e.into()),
                (Ok(_), Err(e)) => return Err(e),
                // Both: the release's failure says what the target is left in.
                (Err(r), Err(f)) => bail!("{}; then {f:#}", crate::text::one_line(&r)),
            };
            Ok(Restored {
                stats: LoadStats {
                    loaded: fed.keys(),
                    functions: fed.functions.unwrap_or(0),
                    bytes: fed.bytes,
                    commands: replayed.commands,
                    ..Default::default()
                },
                replayed,
                via: "replication",
                base_seconds,
                replay_seconds: started.elapsed().as_secs_f64() - base_seconds,
            })
        }
    }
}

/// "2026-12-01T10:00:00.000Z, 3m 2s ago": how old the newest restored record is.
fn age(ms: u64) -> String {
    let now = crate::text::now_ms();
    let ago = std::time::Duration::from_secs(now.saturating_sub(ms) / 1000);
    format!(
        "{}, {} ago",
        crate::text::rfc3339_ms(ms),
        humantime::format_duration(ago)
    )
}

pub async fn run_restore(args: RestoreArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let url = args.redis.url(config)?;
    let store = args.store.open(config)?;
    let source = args
        .source
        .clone()
        .or(config.source.clone())
        .ok_or_else(|| anyhow::anyhow!("no source given: pass --source NAME"))?;
    let kek = args.kek.open(config)?;
    let trust = args.trust.trust(config, args.kek.kek.as_deref())?;
    let point = match (&args.at, args.offset) {
        (Some(at), _) => Point::At(
            crate::text::parse_rfc3339_ms(at)
                .with_context(|| format!("--at {at:?}: not an RFC 3339 time"))?,
        ),
        (None, Some(o)) => Point::Offset(o),
        (None, None) => Point::Latest,
    };
    let started = Instant::now();
    let plan = plan(
        &store,
        &source,
        args.generation.as_deref(),
        point,
        kek.as_ref(),
        args.allow_plain,
        &trust,
    )
    .await?;
    let link = args.redis.connect_options(config)?;
    let opts = LoadOptions {
        connections: args.connections.max(1),
        conflict: if args.replace {
            Conflict::Replace
        } else {
            Conflict::Fail
        },
        ..LoadOptions::default()
    };
    let mut target = crate::target::connect(&url, &link, opts).await?;
    if args.flush {
        confirm_flush(args.yes, &url)?;
        flush_all(&url, &link).await?;
    }
    let ruled_out = args.replace.then(|| {
        "--replace keeps the target's other keys; a full sync replaces them all".to_string()
    });
    let done = restore_plan(
        &RestoreJob {
            store: &store,
            plan: &plan,
            kek: kek.as_ref(),
            allow_plain: args.allow_plain,
            trust: &trust,
            url: &url,
            link: &link,
            via: &args.via,
            ruled_out,
        },
        target.as_mut(),
        None,
    )
    .await?;
    let (stats, replayed, via) = (done.stats, done.replayed, done.via);
    let secs = started.elapsed().as_secs_f64();
    let newest = if replayed.time_ms > 0 {
        format!("newest record {}", age(replayed.time_ms))
    } else {
        "no segments after the base".into()
    };
    out.summary(
        &format!(
            "restored {source} generation {} (base by {via}): {} keys from the base, then {} commands from {} segments, up to offset {}; {newest}; {secs:.1}s{}",
            plan.generation, stats.loaded, replayed.commands, replayed.segments, replayed.offset,
            stats.notes() + &replayed.cut_transaction.map_or(String::new(), |o| format!(
                "; the point falls inside a transaction (MULTI ... EXEC): it was left out whole, so the restore stops at offset {o}, before its MULTI"
            )) + &replayed.shard_skew_ms.map_or(String::new(), |ms| format!(
                "; each shard at its last record at or before the point, the shards' newest within {:.1}s of each other",
                ms as f64 / 1000.0
            ))
        ),
        serde_json::json!({
            "command": "restore",
            "via": via,
            "source": source,
            "generation": plan.generation,
            "base_keys": stats.loaded,
            "commands": replayed.commands,
            "segments": replayed.segments,
            "offset": replayed.offset,
            "last_write_ms": replayed.time_ms,
            "cut_transaction": replayed.cut_transaction,
            "shard_skew_seconds": replayed.shard_skew_ms.map(|ms| ms as f64 / 1000.0),
            "converted_to": stats.converted_to,
            "converted": stats.converted,
            "split": stats.split,
            "lost": stats.lost,
            "seconds": secs,
        }),
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    #[arg(long)]
    pub generation: Option<String>,
    #[command(flatten)]
    pub kek: KekArg,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub async fn run_verify(args: VerifyArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let store = args.store.open(config)?;
    let kek = args.kek.open(config)?;
    let trust = args.trust.trust(config, args.kek.kek.as_deref())?;
    let json = out.json;
    let reports = verify(
        &store,
        args.source.as_deref(),
        args.generation.as_deref(),
        kek.as_ref(),
        &trust,
        |r| {
            if !json {
                let state = if r.ok() { "ok" } else { "BAD" };
                eprintln!(
                    "{state:<4} {}/{}: base {} bytes, {} segments, {} commands, offsets {}..{}, signed by {}, newest record {}{}{}",
                    r.source,
                    r.generation,
                    r.base_bytes,
                    r.segments,
                    r.commands,
                    r.first_offset,
                    r.last_offset,
                    r.signer.as_deref().unwrap_or("nobody (unsigned)"),
                    if r.newest_ms > 0 { age(r.newest_ms) } else { "-".into() },
                    if r.holes.is_empty() {
                        String::new()
                    } else {
                        format!(", holes {:?}", r.holes)
                    },
                    if r.problems.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.problems.join("; "))
                    },
                );
            }
        },
    )
    .await?;
    if reports.is_empty() {
        bail!("nothing to verify in {}", store.url);
    }
    let bad: Vec<&GenerationReport> = reports.iter().filter(|r| !r.ok()).collect();
    if json {
        println!("{}", serde_json::to_string(&reports)?);
    }
    if let Some(first) = bad.first() {
        let why = first
            .problems
            .first()
            .cloned()
            .or_else(|| {
                first
                    .holes
                    .first()
                    .map(|(a, b)| format!("a hole from offset {a} to {b}"))
            })
            .unwrap_or_else(|| "incomplete".into());
        bail!(
            "{} of {} generations failed verification; first: {}/{}: {why}",
            bad.len(),
            reports.len(),
            first.source,
            first.generation
        );
    }
    if !json {
        out.summary(
            &format!(
                "verified {} generations: every chunk, digest and offset checks out",
                reports.len()
            ),
            serde_json::json!({}),
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    /// Keep this many complete generations.
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Keep generations younger than this (e.g. 7d).
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Show what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Only generations signed by these signers count (and the one beside --kek).
    #[command(flatten)]
    pub trust: TrustArgs,
    /// A KEK file whose folder holds the trusted signing key (nothing is unwrapped).
    #[arg(long, env = "REDVAULT_KEK")]
    pub kek: Option<String>,
}

pub async fn run_prune(args: PruneArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let store = args.store.open(config)?;
    let policy = config.retention(args.keep_last, args.keep_within.as_deref())?;
    if !policy.is_set() {
        bail!("no retention policy: pass --keep-last N and/or --keep-within D, or set them in [daemon]");
    }
    let trust = args.trust.trust(config, args.kek.as_deref())?;
    let pruned = prune(
        &store,
        args.source.as_deref(),
        &policy,
        args.dry_run,
        &trust,
    )
    .await?;
    if !out.json {
        for p in &pruned {
            eprintln!(
                "{} {}/{} ({} objects{})",
                if args.dry_run {
                    "would delete"
                } else {
                    "deleted"
                },
                p.source,
                p.generation,
                p.objects,
                if p.complete { "" } else { ", incomplete" }
            );
        }
    }
    out.summary(
        &format!(
            "{} {} generation(s)",
            if args.dry_run {
                "would prune"
            } else {
                "pruned"
            },
            pruned.len()
        ),
        serde_json::json!({"command": "prune", "dry_run": args.dry_run, "generations": pruned}),
    );
    Ok(())
}
