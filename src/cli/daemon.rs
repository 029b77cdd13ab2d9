//! `redvault daemon`: flags into the library's daemon overrides; the
//! supervisor (`crate::daemon::run`) does the rest.

use super::args::{RedisArgs, SealArgs, StoreArgs};
use crate::daemon::DaemonOverrides;
use crate::settings::Config;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One source's Redis (else the config's [[daemon.sources]]).
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The source name for --redis (defaults to host-port).
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    /// Checkpoint and spool directory (systemd's StateDirectory).
    #[arg(long, env = "STATE_DIRECTORY")]
    pub state_dir: Option<PathBuf>,
    /// Address for /healthz and /metrics.
    #[arg(long)]
    pub listen: Option<String>,
    /// Allow a --listen address that is not loopback (no authentication there).
    #[arg(long)]
    pub listen_public: bool,
    /// When to take a new base: 15m, 30m, 1h, 6h, 12h, 24h or a cron expression.
    #[arg(long)]
    pub base_every: Option<String>,
    /// Keep this many complete generations (and every newer one).
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Keep generations younger than this (e.g. 7d, 36h).
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Cut a segment this many milliseconds after its first write.
    #[arg(long)]
    pub segment_interval_ms: Option<u64>,
    /// Read the source's keys per database this often (milliseconds; 0:
    /// never), recorded in the signed chain heads for drills to compare.
    #[arg(long)]
    pub fingerprint_interval_ms: Option<u64>,
    /// Run a drill of each source on this schedule (as --base-every): a
    /// child `redvault drill` into a scratch redis-server; its result in
    /// /metrics (redvault_drill_*), the log and the audit log.
    #[arg(long)]
    pub drill_every: Option<String>,
    /// The KEK scheduled drills unwrap with (the private key file, or a Key
    /// Vault key this host may unwrap with).
    #[arg(long, env = "REDVAULT_DRILL_KEK")]
    pub drill_kek: Option<String>,
    /// A Redis Cluster: read and follow each shard on a replica of its
    /// primary (the primaries never fork for a base). WAIT on a primary
    /// then no longer counts the daemon.
    #[arg(long)]
    pub from_replica: bool,
    /// psync (a base, then the command stream, point-in-time) or scan (for
    /// managed servers that refuse PSYNC: a SCAN base on every --base-every,
    /// no stream).
    #[arg(long, value_parser = ["psync", "scan"])]
    pub method: Option<String>,
    #[command(flatten)]
    pub seal: SealArgs,
    /// More signers whose generations retention counts (this daemon's own is
    /// always trusted).
    #[arg(long = "trust", env = "REDVAULT_TRUST", value_delimiter = ',')]
    pub trust: Vec<String>,
}

pub async fn run_daemon(
    args: DaemonArgs,
    config_path: Option<PathBuf>,
    config: Config,
    audit: crate::audit::Audit,
) -> anyhow::Result<()> {
    let o = DaemonOverrides {
        audit,
        redis: args.redis.redis.clone(),
        redis_timeout: args.redis.redis_timeout,
        tls: args.redis.tls.options(),
        redis_password_file: args.redis.redis_password_file.clone(),
        source: args.source,
        store: args.store.store,
        prefix: args.store.prefix,
        kek: args.seal.kek.kek.clone(),
        signing_key: args.seal.signing_key.clone(),
        trust: args.trust,
        seal: args.seal.tuning(),
        state_dir: args.state_dir,
        listen: args.listen,
        listen_public: args.listen_public,
        base_every: args.base_every,
        keep_last: args.keep_last,
        keep_within: args.keep_within,
        segment_interval_ms: args.segment_interval_ms,
        fingerprint_interval_ms: args.fingerprint_interval_ms,
        drill_every: args.drill_every,
        drill_kek: args.drill_kek,
        config_path: config_path.clone(),
        from_replica: args.from_replica,
        method: args.method,
    };
    Ok(crate::daemon::run(o, config_path, config).await?)
}
