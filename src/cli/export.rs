//! `redvault export` and `redvault list`.

use super::config::Config;
use super::output::Output;
use super::progress::{bytes_bar, human_bytes};
use super::seal::{seal_options, SealTuning};
use crate::backup::export::{export, ExportRequest};
use crate::backup::list::list;
use crate::replication::{LinkOptions, RedisUrl};
use crate::store::Store;
use anyhow::Context;
use clap::Args;
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Storage URL: file:///dir, az://container, s3://bucket, gs://bucket.
    #[arg(long = "to", visible_alias = "from", env = "REDVAULT_STORE")]
    pub store: Option<String>,
    /// Path prefix inside the store.
    #[arg(long, env = "REDVAULT_PREFIX")]
    pub prefix: Option<String>,
}

impl StoreArgs {
    pub fn open(&self, config: &Config) -> anyhow::Result<Store> {
        open_store(
            self.store.as_deref(),
            "--to",
            self.prefix.as_deref(),
            config,
        )
    }
}

/// The store from a flag (`flag` names it in the error), else the config; the
/// prefix likewise.
pub fn open_store(
    url: Option<&str>,
    flag: &str,
    prefix: Option<&str>,
    config: &Config,
) -> anyhow::Result<Store> {
    let url = url.or(config.store.as_deref()).ok_or_else(|| {
        anyhow::anyhow!("no storage given: pass {flag} URL, set REDVAULT_STORE, or set store in the config file")
    })?;
    Ok(Store::open_with(
        url,
        prefix.or(config.prefix.as_deref()),
        &config.store_context(url)?,
    )?)
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The Redis to export: redis://[user[:password]@]host:port. The password can
    /// also come from REDVAULT_REDIS_PASSWORD (kept out of the process list).
    #[arg(long, env = "REDVAULT_REDIS")]
    pub redis: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Source name in the layout (defaults to host-port).
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    /// Write the RDB unencrypted (base.rdb), for tools that import plain RDB files.
    #[arg(long)]
    pub plain: bool,
    /// Seconds without a byte from Redis before giving up.
    #[arg(long, env = "REDVAULT_REDIS_TIMEOUT")]
    pub redis_timeout: Option<u64>,
    #[command(flatten)]
    pub seal: SealTuning,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
}

pub fn redis_url(arg: Option<&str>, config: &Config) -> anyhow::Result<RedisUrl> {
    let s = arg.or(config.redis.as_deref()).ok_or_else(|| {
        anyhow::anyhow!(
            "no Redis given: pass --redis URL, set REDVAULT_REDIS, or set redis in the config file"
        )
    })?;
    let mut url = RedisUrl::parse(s).map_err(anyhow::Error::msg)?;
    if let Ok(p) = std::env::var("REDVAULT_REDIS_PASSWORD") {
        url.password = Some(Zeroizing::new(p));
    }
    Ok(url)
}

pub async fn run_export(args: ExportArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let redis = redis_url(args.redis.as_deref(), config)?;
    let kek = if args.plain {
        if args.seal.kek.kek.is_some() {
            anyhow::bail!("--plain and --kek exclude each other");
        }
        eprintln!("redvault: warning: --plain writes the snapshot UNENCRYPTED to storage");
        None
    } else {
        Some(args.seal.kek.open(config)?)
    };
    let store = args.store.open(config)?;
    let source = args
        .source
        .clone()
        .or(config.source.clone())
        .unwrap_or_else(|| redis.source_name());
    let mut link = LinkOptions {
        auth: config.redis_auth()?,
        ..Default::default()
    };
    if let Some(t) = args.redis_timeout.or(config.redis_timeout) {
        link.read_timeout = Duration::from_secs(t.max(1));
    }
    let req = ExportRequest {
        redis,
        link,
        store,
        source,
        kek,
        seal: seal_options(&args.seal, config)?,
    };
    let bar = bytes_bar(None, out.progress());
    let progress = |got: u64, total: Option<u64>| {
        if let (Some(t), None) = (total, bar.length()) {
            bar.set_length(t);
        }
        bar.set_position(got);
    };
    let s = export(req, &progress).await?;
    bar.finish_and_clear();
    out.summary(
        &format!(
            "exported {} generation {} -> {}: {} RDB, {} stored, {:.1}s",
            s.source,
            s.generation,
            s.location,
            human_bytes(s.rdb_bytes),
            human_bytes(s.stored_bytes),
            s.seconds
        ),
        serde_json::json!({
            "command": "export",
            "source": s.source,
            "generation": s.generation,
            "location": s.location,
            "rdb_bytes": s.rdb_bytes,
            "stored_bytes": s.stored_bytes,
            "seconds": s.seconds,
            "sealed": s.manifest.sealed,
            "replid": s.manifest.redis.replid,
            "offset": s.manifest.redis.offset,
        }),
    );
    Ok(())
}

pub async fn run_list(args: ListArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let store = args.store.open(config)?;
    let gens = list(&store, args.source.as_deref())
        .await
        .map_err(anyhow::Error::msg)
        .context("list")?;
    if out.json {
        println!("{}", serde_json::to_string(&gens)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<34} {:<21} {:>12} {:<10} keys",
        "SOURCE", "GENERATION", "CREATED", "STORED", "STATE"
    );
    for g in &gens {
        let created = g
            .manifest
            .as_ref()
            .map(|m| m.created.as_str())
            .unwrap_or("-");
        let keys = g
            .manifest
            .as_ref()
            .and_then(|m| m.keys.as_ref())
            .map(|k| {
                k.iter()
                    .map(|(db, n)| format!("db{db}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "-".into());
        let state = if g.complete { "complete" } else { "incomplete" };
        let keys = if g.segments > 0 {
            format!(
                "{keys}; {} segments to offset {}{}",
                g.segments,
                g.aof_end.unwrap_or(0),
                if g.holes.is_empty() {
                    String::new()
                } else {
                    format!("; HOLES {:?}", g.holes)
                }
            )
        } else {
            keys
        };
        println!(
            "{:<24} {:<34} {:<21} {:>12} {:<10} {}",
            g.source,
            g.generation,
            created,
            human_bytes(g.stored_bytes),
            state,
            keys
        );
    }
    eprintln!("{} generation(s)", gens.len());
    Ok(())
}
