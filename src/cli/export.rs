//! `redvault export` and `redvault list`.

use super::args::{RedisArgs, SealArgs, StoreArgs, TrustArgs};
use super::output::Output;
use super::progress::{bytes_bar, human_bytes};
use crate::backup::{export, export_cluster, list, ClusterExportRequest, ExportRequest, Shard};
use crate::settings::Config;
use crate::source::{AutoSource, PsyncSource, Reencoded, ScanSource, Source};
use clap::{Args, ValueEnum};
use std::sync::Arc;

/// How the snapshot is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// As a replica (PSYNC): the server's own RDB, of one moment.
    Psync,
    /// Key by key (SCAN, DUMP, the expiry) for servers that refuse PSYNC;
    /// not point-in-time.
    Scan,
    /// PSYNC, else SCAN if the server refuses replication (said when it does).
    Auto,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Source name in the layout (defaults to host-port).
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    /// Write the RDB unencrypted (base.rdb), for tools that import plain RDB files.
    #[arg(long)]
    pub plain: bool,
    /// How to read the snapshot: psync (a replica's full sync), scan (SCAN
    /// and DUMP, for managed servers that refuse PSYNC), or auto.
    #[arg(long, value_enum, default_value_t = Method::Psync)]
    pub method: Method,
    /// SCAN only: keys read per second at most, to spare a production primary.
    #[arg(long)]
    pub max_keys_per_sec: Option<u32>,
    /// SCAN only: connections that DUMP in parallel.
    #[arg(long, default_value_t = 4)]
    pub scan_connections: usize,
    /// Write the base as RDB version N (9 to 12), converting the values of
    /// types older servers lack, so e.g. a Redis 6 or Azure's import (RDB 9)
    /// can load it. What version N cannot hold is named in the summary.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(9..=12))]
    pub rdb_version: Option<u32>,
    /// A cluster: read each shard from a replica of its primary (sparing
    /// the primaries' fork); a primary without a replica is refused.
    #[arg(long)]
    pub from_replica: bool,
    #[command(flatten)]
    pub seal: SealArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Checks signatures against these signers (and the one beside --kek).
    #[command(flatten)]
    pub trust: TrustArgs,
    /// A KEK file whose folder holds the trusted signing key (nothing is unwrapped).
    #[arg(long, env = "REDVAULT_KEK")]
    pub kek: Option<String>,
}

pub async fn run_export(args: ExportArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let redis = args.redis.url(config)?;
    let kek = if args.plain {
        if args.seal.kek.kek.is_some() {
            anyhow::bail!("--plain and --kek exclude each other");
        }
        eprintln!("redvault: warning: --plain writes the snapshot UNENCRYPTED to storage");
        None
    } else {
        Some(args.seal.kek.open(config)?)
    };
    // Fail closed: nothing is written unsigned.
    let signer = config
        .open_signer(
            args.seal.signing_key.as_deref(),
            args.seal.kek.kek.as_deref(),
        )
        .await?;
    let store = args.store.open(config)?;
    let source = args
        .source
        .clone()
        .or(config.source.clone())
        .unwrap_or_else(|| redis.source_name());
    let link = args.redis.connect_options(config)?;
    if args.from_replica && args.method == Method::Scan {
        anyhow::bail!(
            "--from-replica reads each shard by PSYNC from a replica; --method scan reads the primaries"
        );
    }
    if args.from_replica {
        let mut conn = crate::resp::connect(&redis, &link).await?;
        if !crate::resp::is_cluster_node(&mut conn).await {
            anyhow::bail!(
                "--from-replica reads each shard of a Redis Cluster from a replica, and {} is no cluster node: give a replica's URL as --redis instead",
                redis.addr()
            );
        }
    }
    let scan = || {
        ScanSource::new(
            redis.clone(),
            link.clone(),
            args.scan_connections,
            args.max_keys_per_sec,
        )
    };
    let mut from: Arc<dyn Source> = match args.method {
        Method::Psync => Arc::new(PsyncSource::new(redis.clone(), link.clone())),
        Method::Scan => Arc::new(scan()),
        Method::Auto => Arc::new(AutoSource::new(
            Box::new(PsyncSource::new(redis.clone(), link.clone())),
            scan(),
        )),
    };
    let reencoded = args
        .rdb_version
        .map(|n| Arc::new(Reencoded::new(from.clone(), n)));
    if let Some(r) = &reencoded {
        from = r.clone();
    }
    if args.method == Method::Scan {
        eprintln!("redvault: warning: a SCAN snapshot is not point-in-time: keys changed during the scan may be from different moments");
    }
    let req = ExportRequest {
        from,
        store: store.clone(),
        source: source.clone(),
        kek: kek.clone(),
        signer: signer.clone(),
        seal: config.seal_options(&args.seal.tuning())?,
    };
    let bar = bytes_bar(None, out.progress());
    let progress = |got: u64, total: Option<u64>| {
        if let (Some(t), None) = (total, bar.length()) {
            bar.set_length(t);
        }
        bar.set_position(got);
    };
    let s = match export(req, &progress).await {
        // A cluster node (found before anything was written or forked):
        // every primary, into one generation.
        Err(crate::backup::BackupError::Source(crate::source::SourceError::ClusterNode(_))) => {
            bar.finish_and_clear();
            if args.method == Method::Scan {
                eprintln!(
                    "redvault: note: {} is a Redis Cluster node: every primary is read with SCAN",
                    redis.addr()
                );
            }
            let (shards, topology) = cluster_shards(&redis, &link, &args).await?;
            let req = ClusterExportRequest {
                shards,
                seed: redis.clone(),
                link: link.clone(),
                topology,
                store,
                source,
                kek,
                signer,
                seal: config.seal_options(&args.seal.tuning())?,
            };
            return export_cluster_cli(req, out).await;
        }
        other => other?,
    };
    bar.finish_and_clear();
    let rewritten = reencoded.as_ref().and_then(|r| r.rewritten());
    let rewrite_note = rewritten
        .as_ref()
        .map(|r| {
            let mut note = format!(
                "; RDB {} written as RDB {}, {} values converted",
                r.from, r.to, r.converted
            );
            if !r.lost.is_empty() {
                note += &format!(
                    "; left out, as RDB {} cannot hold them: {}",
                    r.to,
                    crate::rdb::describe_lost(&r.lost)
                );
            }
            note
        })
        .unwrap_or_default();
    out.summary(
        &format!(
            "exported {} generation {} -> {}: {} RDB, {} stored, {:.1}s{}{rewrite_note}",
            s.source,
            s.generation,
            s.location,
            human_bytes(s.rdb_bytes),
            human_bytes(s.stored_bytes),
            s.seconds,
            if s.manifest.redis.point_in_time() {
                ""
            } else {
                " (by SCAN: not point-in-time)"
            }
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
            "method": s.manifest.redis.method.as_deref().unwrap_or("psync"),
            "point_in_time": s.manifest.redis.point_in_time(),
            "rdb_version": s.manifest.redis.rdb_version,
            "converted": rewritten.as_ref().map(|r| r.converted),
            "lost": rewritten.as_ref().map(|r| &r.lost),
        }),
    );
    Ok(())
}

/// The primaries of the cluster `redis` is a node of, one source each.
async fn cluster_shards(
    redis: &crate::resp::RedisUrl,
    link: &crate::resp::ConnectOptions,
    args: &ExportArgs,
) -> anyhow::Result<(Vec<Shard>, Vec<crate::resp::cluster::SlotRange>)> {
    let make = |url: crate::resp::RedisUrl| -> Arc<dyn Source> {
        let scan = || {
            ScanSource::new(
                url.clone(),
                link.clone(),
                args.scan_connections,
                args.max_keys_per_sec,
            )
            .shard()
        };
        let psync = || PsyncSource::shard(url.clone(), link.clone());
        let from: Arc<dyn Source> = match args.method {
            Method::Psync => Arc::new(psync()),
            Method::Scan => Arc::new(scan()),
            Method::Auto => Arc::new(AutoSource::new(Box::new(psync()), scan())),
        };
        match args.rdb_version {
            Some(n) => Arc::new(Reencoded::new(from, n)),
            None => from,
        }
    };
    Ok(crate::backup::cluster_shards(redis, link, &make, args.from_replica).await?)
}

async fn export_cluster_cli(req: ClusterExportRequest, out: &Output) -> anyhow::Result<()> {
    let n = req.shards.len();
    let bar = bytes_bar(None, out.progress());
    let progress = |got: u64, _: Option<u64>| bar.set_position(got);
    let s = export_cluster(req, &progress).await?;
    bar.finish_and_clear();
    out.summary(
        &format!(
            "exported cluster {} generation {} -> {}: {n} shards, {} RDB, {} stored, {:.1}s",
            s.source,
            s.generation,
            s.location,
            human_bytes(s.rdb_bytes),
            human_bytes(s.stored_bytes),
            s.seconds,
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
            "shards": s.manifest.cluster,
            "rdb_version": s.manifest.redis.rdb_version,
        }),
    );
    Ok(())
}

pub async fn run_list(args: ListArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let store = args.store.open(config)?;
    let trust = args.trust.trust(config, args.kek.as_deref())?;
    let gens = list(&store, args.source.as_deref(), &trust).await?;
    if out.json {
        println!("{}", serde_json::to_string(&gens)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<38} {:<21} {:>12} {:<10} keys",
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
        let keys = match &g.manifest {
            Some(m) if !m.redis.point_in_time() => format!("{keys}; by SCAN, not point-in-time"),
            _ => keys,
        };
        // Trusted: signed by a trusted signer; unverified: no trusted signer
        // was given to check it (--trust); refused: a manifest that is there
        // but does not count (why is printed below).
        let state = match (g.complete, g.verified, &g.problem) {
            (true, true, _) => "trusted",
            (true, false, _) if trust.checks() => "unsigned",
            (true, false, _) => "unverified",
            (false, _, Some(_)) => "refused",
            (false, _, None) => "incomplete",
        };
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
            "{:<24} {:<38} {:<21} {:>12} {:<10} {}",
            g.source,
            g.generation,
            created,
            human_bytes(g.stored_bytes),
            state,
            keys
        );
    }
    for g in gens.iter().filter(|g| g.problem.is_some()) {
        eprintln!(
            "{}/{}: {}",
            g.source,
            g.generation,
            g.problem.as_deref().unwrap_or_default()
        );
    }
    if !trust.checks() {
        eprintln!("signatures not checked: pass --trust FILE (a backup host's signing.pub.pem) or --kek beside one");
    }
    eprintln!("{} generation(s)", gens.len());
    Ok(())
}
