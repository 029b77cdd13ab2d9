//! `redvault import` and `redvault inspect`.

use super::args::{confirm_flush, flush_all, KekArg, RedisArgs, TrustArgs};
use super::feed::{release, try_feed, Fed, ViaArgs};
use super::output::Output;
use super::progress::human_bytes;
use crate::backup::{open_inputs, InputOptions};
use crate::inputs::Input;
use crate::inspect::inspect;
use crate::settings::Config;
use crate::store::StoreError;
use crate::target::{import, Conflict, Filter, LoadOptions, LoadStats, TYPE_NAMES};
use anyhow::bail;
use clap::Args;
use std::io::IsTerminal;
use std::time::Instant;

/// Where to read from: backups in storage, or plain RDB files.
#[derive(Debug, Args)]
pub struct FromArgs {
    /// A backup store URL (file:///dir, az://container, s3://, gs://), or a plain
    /// RDB file or blob (path or URL ending .rdb, .rdb.gz, .rdb.zst). Repeat
    /// --from for several.
    #[arg(long = "from", required = true)]
    pub from: Vec<String>,
    /// Path prefix inside the store.
    #[arg(long, env = "REDVAULT_PREFIX")]
    pub prefix: Option<String>,
    /// Source name in the store (needed when it holds several).
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    /// Generation to read; default the newest complete one.
    #[arg(long)]
    pub generation: Option<String>,
    #[command(flatten)]
    pub kek: KekArg,
    /// Read a plain (unencrypted) generation even though a KEK is given.
    #[arg(long)]
    pub allow_plain: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The target Redis.
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub from: FromArgs,
    /// Load only these source databases (repeatable).
    #[arg(long = "db")]
    pub dbs: Vec<u64>,
    /// Load everything into this target database.
    #[arg(long)]
    pub target_db: Option<u64>,
    /// Load only keys matching this Redis glob (repeatable), as ACL ~pattern.
    #[arg(long = "match")]
    pub patterns: Vec<String>,
    /// Load only this type (repeatable): string, list, set, zset, hash, stream, module.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Overwrite keys that exist in the target.
    #[arg(long, conflicts_with_all = ["skip_existing", "flush"])]
    pub replace: bool,
    /// Leave keys that exist in the target, and count them.
    #[arg(long, conflicts_with = "flush")]
    pub skip_existing: bool,
    /// FLUSHALL the target first (asks unless --yes).
    #[arg(long)]
    pub flush: bool,
    /// Confirm --flush without asking.
    #[arg(long)]
    pub yes: bool,
    /// Commands per batch on one connection.
    #[arg(long, default_value_t = 512)]
    pub pipeline: usize,
    /// Connections to the target.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Count what would load; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub via: ViaArgs,
}

/// What keeps an import off the replication feed, which serves the whole
/// snapshot and replaces everything the target holds.
fn feed_ruled_out(args: &ImportArgs) -> Option<String> {
    if args.target_db.is_some() {
        // Keys of several databases merged into one could collide, and a
        // replica loading an RDB with a key twice stops.
        return Some(
            "--target-db merges databases key by key (the feed serves one snapshot)".into(),
        );
    }
    if args.replace || args.skip_existing {
        return Some(
            "--replace and --skip-existing keep the target's other keys; a full sync replaces them all"
                .into(),
        );
    }
    None
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub from: FromArgs,
    /// How many of the biggest keys to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// Opens every --from through the library's one dispatch.
async fn open_from(args: &FromArgs, config: &Config) -> anyhow::Result<Vec<Input>> {
    let kek = config.maybe_kek(args.kek.kek.as_deref())?;
    let context = |url: &str| {
        config.store_context(url).map_err(|e| StoreError::Unusable {
            url: url.into(),
            reason: e.to_string(),
        })
    };
    let opts = InputOptions {
        prefix: args.prefix.as_deref().or(config.prefix.as_deref()),
        source: args.source.as_deref().or(config.source.as_deref()),
        generation: args.generation.as_deref(),
        kek,
        allow_plain: args.allow_plain,
        trust: args.trust.trust(config, args.kek.kek.as_deref())?,
        context: &context,
    };
    Ok(open_inputs(&args.from, &opts).await?)
}

pub async fn run_import(args: ImportArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let url = args.redis.url(config)?;
    for t in &args.types {
        if !TYPE_NAMES.contains(&t.as_str()) {
            bail!("unknown --type {t}; one of {}", TYPE_NAMES.join(", "));
        }
    }
    let link = args.redis.connect_options(config)?;
    let mut sources = open_from(&args.from, config).await?;
    if args.flush && !args.dry_run {
        confirm_flush(args.yes, &url)?;
        flush_all(&url, &link).await?;
    }
    let opts = LoadOptions {
        connections: args.connections.max(1),
        pipeline: args.pipeline.max(1),
        conflict: if args.replace {
            Conflict::Replace
        } else if args.skip_existing {
            Conflict::Skip
        } else {
            Conflict::Fail
        },
        filter: Filter {
            dbs: args.dbs.clone(),
            patterns: args
                .patterns
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            types: args.types.clone(),
        },
        target_db: args.target_db,
        dry_run: args.dry_run,
        ..LoadOptions::default()
    };
    let labels: Vec<String> = sources.iter().map(|s| s.label.clone()).collect();
    let started = Instant::now();
    let bar = if out.progress() && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .expect("static template"),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    if !args.dry_run {
        let fed = try_feed(
            &args.via,
            feed_ruled_out(&args),
            (!opts.filter.is_empty()).then(|| opts.filter.clone()),
            &url,
            &link,
            sources,
            &|sent| {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{} served to the target by replication ({}/s)",
                    human_bytes(sent),
                    human_bytes((sent as f64 / secs) as u64)
                ));
                bar.tick();
            },
        )
        .await
        .inspect_err(|_| bar.finish_and_clear());
        match fed? {
            Fed::Loaded(feeding) => {
                let stats = release(feeding).await;
                bar.finish_and_clear();
                let stats = stats?;
                fed_summary(out, &labels, &url, &stats, started);
                return Ok(());
            }
            Fed::Restore(s) => sources = s,
        }
    }
    let progress = |s: &LoadStats| {
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{} keys sent, {} ({:.0} keys/s)",
            s.seen - s.filtered - s.expired,
            human_bytes(s.bytes),
            s.seen as f64 / secs
        ));
        bar.tick();
    };
    let result = import(&url, &link, opts, sources, &progress).await;
    bar.finish_and_clear();
    let stats = result?;
    let secs = started.elapsed().as_secs_f64();
    let verb = if args.dry_run { "would load" } else { "loaded" };
    out.summary(
        &format!(
            "{verb} {} keys ({}) and {} function librar(y/ies) from {} into {:?} in {secs:.1}s: {} skipped (existing), {} expired, {} filtered out, 0 failed{}",
            stats.loaded,
            human_bytes(stats.bytes),
            stats.functions,
            labels.join(", "),
            url,
            stats.skipped_existing,
            stats.expired,
            stats.filtered,
            stats.notes()
        ),
        serde_json::json!({
            "command": "import",
            "via": "restore",
            "dry_run": args.dry_run,
            "sources": labels,
            "loaded": stats.loaded,
            "functions": stats.functions,
            "skipped_existing": stats.skipped_existing,
            "expired": stats.expired,
            "filtered": stats.filtered,
            "failed": 0,
            "converted_to": stats.converted_to,
            "converted": stats.converted,
            "split": stats.split,
            "lost": stats.lost,
            "bytes": stats.bytes,
            "seconds": secs,
        }),
    );
    Ok(())
}

/// The summary of an import the target loaded through the feed: its own
/// counts after the load.
fn fed_summary(
    out: &Output,
    labels: &[String],
    url: &crate::resp::RedisUrl,
    stats: &crate::feed::FeedStats,
    started: Instant,
) {
    let secs = started.elapsed().as_secs_f64();
    let functions = stats
        .functions
        .map_or("an unknown number of".into(), |n| n.to_string());
    out.summary(
        &format!(
            "loaded {} keys ({}) and {functions} function librar(y/ies) from {} into {:?} by replication in {secs:.1}s ({:.1}s transfer, {:.1}s load by the target): {} filtered out; the target is a primary again",
            stats.keys(),
            human_bytes(stats.bytes),
            labels.join(", "),
            url,
            stats.transfer_seconds,
            stats.load_seconds,
            stats.filtered,
        ),
        serde_json::json!({
            "command": "import",
            "via": "replication",
            "dry_run": false,
            "sources": labels,
            "loaded": stats.keys(),
            "keys_per_db": stats.keys_per_db,
            "functions": stats.functions,
            "skipped_existing": 0,
            "filtered": stats.filtered,
            "failed": 0,
            "bytes": stats.bytes,
            "transfer_seconds": stats.transfer_seconds,
            "load_seconds": stats.load_seconds,
            "seconds": secs,
        }),
    );
}

pub async fn run_inspect(args: InspectArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let mut reports = vec![];
    for input in open_from(&args.from, config).await? {
        reports.push(inspect(input, args.top).await?);
    }
    if out.json {
        println!("{}", serde_json::to_string(&reports)?);
        return Ok(());
    }
    for r in &reports {
        println!(
            "{}: RDB version {}, {} keys, {} function librar(y/ies)",
            r.source, r.rdb_version, r.keys, r.functions
        );
        for (k, v) in &r.aux {
            println!("  aux {k} = {v}");
        }
        for (db, n) in &r.keys_per_db {
            println!("  db{db}: {n} keys");
        }
        for (t, n) in &r.keys_per_type {
            println!("  {t}: {n}");
        }
        println!("  biggest keys:");
        for (k, db, t, n) in &r.biggest {
            println!("    {} db{db} {t} {k}", human_bytes(*n));
        }
    }
    Ok(())
}
