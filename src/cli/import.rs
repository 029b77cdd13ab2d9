//! `redvault import` and `redvault inspect`.

use super::config::Config;
use super::export::redis_url;
use super::output::Output;
use super::progress::human_bytes;
use super::seal::KekArg;
use crate::loader::sources::{
    is_rdb_name, open_backup, open_blob, open_file, pick_generation, OpenedSource,
};
use crate::loader::{
    import, show_key, type_name, Conflict, Filter, LoadOptions, LoadStats, TYPE_NAMES,
};
use crate::rdb::{Item, RdbScanner, ScanOptions};
use crate::replication::LinkOptions;
use crate::store::Store;
use anyhow::{bail, Context};
use clap::Args;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Where to read from: backups in storage, or plain RDB files.
#[derive(Debug, Args)]
pub struct FromArgs {
    /// A backup store URL (file:///dir, az://container, s3://, gs://), or a plain
    /// RDB file or blob (path or URL ending .rdb, .rdb.gz, .rdb.zst). Repeatable.
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
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The target Redis: redis://[user[:password]@]host:port (password also from
    /// REDVAULT_REDIS_PASSWORD).
    #[arg(long, env = "REDVAULT_REDIS")]
    pub redis: Option<String>,
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
    /// Seconds without a reply from Redis before giving up.
    #[arg(long, env = "REDVAULT_REDIS_TIMEOUT")]
    pub redis_timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub from: FromArgs,
    /// How many of the biggest keys to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

fn is_store_url(s: &str) -> bool {
    [
        "file://",
        "memory://",
        "az://",
        "azure://",
        "abfs://",
        "abfss://",
        "s3://",
        "s3a://",
        "gs://",
        "https://",
        "http://",
    ]
    .iter()
    .any(|p| s.starts_with(p))
}

/// Opens every --from: backups (newest complete generation unless --generation)
/// and plain files.
async fn open_sources(args: &FromArgs, config: &Config) -> anyhow::Result<Vec<OpenedSource>> {
    let mut out = vec![];
    for from in &args.from {
        if is_store_url(from) && is_rdb_name(from) {
            out.push(open_blob(from, &config.store_context(from)?).await?);
        } else if is_store_url(from) {
            let store = Store::open_with(
                from,
                args.prefix.as_deref().or(config.prefix.as_deref()),
                &config.store_context(from)?,
            )?;
            let (source, generation) = pick_generation(
                &store,
                args.source.as_deref().or(config.source.as_deref()),
                args.generation.as_deref(),
            )
            .await?;
            let kek = match args.kek.kek.as_deref().or(config.kek.as_deref()) {
                Some(_) => Some(args.kek.open(config)?),
                None => None,
            };
            out.push(open_backup(&store, &source, &generation, kek.as_deref()).await?);
        } else {
            out.push(open_file(std::path::Path::new(from))?);
        }
    }
    Ok(out)
}

pub async fn run_import(args: ImportArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let url = redis_url(args.redis.as_deref(), config)?;
    for t in &args.types {
        if !TYPE_NAMES.contains(&t.as_str()) {
            bail!("unknown --type {t}; one of {}", TYPE_NAMES.join(", "));
        }
    }
    let mut link = LinkOptions {
        auth: config.redis_auth()?,
        ..Default::default()
    };
    if let Some(t) = args.redis_timeout.or(config.redis_timeout) {
        link.read_timeout = Duration::from_secs(t.max(1));
    }
    let sources = open_sources(&args.from, config).await?;
    if args.flush && !args.dry_run {
        confirm_flush(&args, &url)?;
        let mut conn = crate::resp::connect(&url, &link).await?;
        if let crate::resp::Reply::Error(e) = conn.command(&[b"FLUSHALL"]).await? {
            bail!("the target refused FLUSHALL: {e}");
        }
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
            "{verb} {} keys ({}) and {} function librar(y/ies) from {} into {:?} in {secs:.1}s: {} skipped (existing), {} expired, {} filtered out, 0 failed",
            stats.loaded,
            human_bytes(stats.bytes),
            stats.functions,
            labels.join(", "),
            url,
            stats.skipped_existing,
            stats.expired,
            stats.filtered
        ),
        serde_json::json!({
            "command": "import",
            "dry_run": args.dry_run,
            "sources": labels,
            "loaded": stats.loaded,
            "functions": stats.functions,
            "skipped_existing": stats.skipped_existing,
            "expired": stats.expired,
            "filtered": stats.filtered,
            "failed": 0,
            "bytes": stats.bytes,
            "seconds": secs,
        }),
    );
    Ok(())
}

fn confirm_flush(args: &ImportArgs, url: &crate::resp::RedisUrl) -> anyhow::Result<()> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("--flush deletes every key in {url:?}; add --yes to confirm");
    }
    eprint!("--flush deletes every key in {url:?}. Type yes to go on: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    if line.trim() != "yes" {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

#[derive(Default, serde::Serialize)]
struct Inspection {
    source: String,
    rdb_version: u32,
    aux: BTreeMap<String, String>,
    keys: u64,
    keys_per_db: BTreeMap<u64, u64>,
    keys_per_type: BTreeMap<String, u64>,
    functions: u64,
    biggest: Vec<(String, u64, String, u64)>,
}

pub async fn run_inspect(args: InspectArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let top = args.top;
    let mut reports = vec![];
    for src in open_sources(&args.from, config).await? {
        let OpenedSource {
            label,
            reader,
            pump,
            ..
        } = src;
        let lbl = label.clone();
        let scan =
            tokio::task::spawn_blocking(move || -> Result<Inspection, crate::rdb::RdbError> {
                let mut s = RdbScanner::new(reader, ScanOptions::default())?;
                let mut r = Inspection {
                    source: lbl,
                    rdb_version: s.version(),
                    ..Default::default()
                };
                let mut sizes: Vec<(u64, u64, Vec<u8>, u8)> = vec![];
                while let Some(item) = s.next()? {
                    match item {
                        Item::Aux { key, value } => {
                            r.aux.insert(
                                String::from_utf8_lossy(&key).into(),
                                String::from_utf8_lossy(&value).into(),
                            );
                        }
                        Item::Function(_) => r.functions += 1,
                        Item::Entry(e) => {
                            r.keys += 1;
                            *r.keys_per_db.entry(e.db).or_default() += 1;
                            *r.keys_per_type
                                .entry(type_name(e.type_byte).into())
                                .or_default() += 1;
                            sizes.push((e.value_len, e.db, e.key, e.type_byte));
                            if sizes.len() > top * 4 + 64 {
                                sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
                                sizes.truncate(top);
                            }
                        }
                        _ => {}
                    }
                }
                sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
                sizes.truncate(top);
                r.biggest = sizes
                    .into_iter()
                    .map(|(n, db, k, t)| (show_key(&k), db, type_name(t).to_string(), n))
                    .collect();
                Ok(r)
            });
        let scanned = scan.await?;
        if let Some(p) = pump {
            p.await??;
        }
        reports.push(scanned.with_context(|| label.clone())?);
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
