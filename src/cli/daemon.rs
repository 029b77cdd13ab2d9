//! `redvault daemon`: runs every configured source until SIGTERM; SIGHUP
//! re-reads the config and restarts the sessions with it (each continues its
//! generation from the checkpoint).

use super::config::{Config, DaemonConfig};
use super::export::{redis_url, StoreArgs};
use super::seal::{seal_options, SealTuning};
use crate::backup::retention::Retention;
use crate::daemon::checkpoint::Checkpoints;
use crate::daemon::metrics::SourceMetrics;
use crate::daemon::notify::{notify, watchdog_interval};
use crate::daemon::schedule::BaseSchedule;
use crate::daemon::{run_source, start_http, SourceSettings};
use crate::replication::LinkOptions;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One source's Redis (else the config's [[daemon.sources]]).
    #[arg(long, env = "REDVAULT_REDIS")]
    pub redis: Option<String>,
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
    #[command(flatten)]
    pub seal: SealTuning,
}

fn retention(args: &DaemonArgs, d: &DaemonConfig) -> anyhow::Result<Retention> {
    let within = args.keep_within.clone().or(d.keep_within.clone());
    Ok(Retention {
        keep_last: args.keep_last.or(d.keep_last),
        keep_within: within
            .map(|w| humantime::parse_duration(&w).with_context(|| format!("keep_within {w:?}")))
            .transpose()?,
    })
}

/// Builds every source's settings from flags and config.
fn sources(
    args: &DaemonArgs,
    config: &Config,
    checkpoints: &Arc<Checkpoints>,
    state: &std::path::Path,
) -> anyhow::Result<Vec<SourceSettings>> {
    let d = config.daemon.clone().unwrap_or_default();
    let mut wanted: Vec<(String, Option<String>)> = vec![];
    if args.redis.is_some() || d.sources.is_empty() {
        let url = redis_url(args.redis.as_deref(), config)?;
        let name = args
            .source
            .clone()
            .or(config.source.clone())
            .unwrap_or_else(|| url.source_name());
        wanted.push((name, args.redis.clone().or(config.redis.clone())));
    } else {
        for s in &d.sources {
            wanted.push((s.name.clone(), Some(s.redis.clone())));
        }
    }
    let kek = args.seal.kek.open(config)?;
    let store = args.store.open(config)?;
    let seal = seal_options(&args.seal, config)?;
    let schedule = args
        .base_every
        .clone()
        .or(d.base_every.clone())
        .map(|s| BaseSchedule::parse(&s).map_err(anyhow::Error::msg))
        .transpose()?;
    let retention = retention(args, &d)?;
    let mut out = vec![];
    for (name, redis) in wanted {
        crate::backup::layout::check_source_name(&name).map_err(anyhow::Error::msg)?;
        let mut link = LinkOptions {
            auth: config.redis_auth()?,
            ..Default::default()
        };
        if let Some(t) = config.redis_timeout {
            link.read_timeout = Duration::from_secs(t.max(1));
        }
        out.push(SourceSettings {
            redis: redis_url(redis.as_deref(), config)?,
            link,
            store: store.clone(),
            kek: kek.clone(),
            seal: seal.clone(),
            checkpoints: checkpoints.clone(),
            spool_dir: state.join("spool").join(&name),
            spool_max_bytes: d.spool_max_bytes.unwrap_or(1 << 30),
            cut_interval: Duration::from_millis(
                args.segment_interval_ms
                    .or(d.segment_interval_ms)
                    .unwrap_or(1000)
                    .max(10),
            ),
            segment_max_bytes: d.segment_max_bytes.unwrap_or(8 << 20).max(4096),
            schedule: schedule
                .as_ref()
                .map(|s| BaseSchedule::parse(&s.text).expect("parsed once")),
            retention: retention.clone(),
            metrics: SourceMetrics::new(&name),
            name,
        });
    }
    Ok(out)
}

pub async fn run_daemon(
    args: DaemonArgs,
    config_path: Option<PathBuf>,
    mut config: Config,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let registry: crate::daemon::metrics::Registry = Default::default();
    let mut http_started = false;
    loop {
        let d = config.daemon.clone().unwrap_or_default();
        let state = args
            .state_dir
            .clone()
            .or(d.state_dir.clone())
            .ok_or_else(|| anyhow::anyhow!("no state directory: pass --state-dir, set daemon.state_dir, or run under systemd with StateDirectory="))?;
        std::fs::create_dir_all(&state)
            .with_context(|| format!("cannot create state directory {}", state.display()))?;
        let checkpoints = Arc::new(Checkpoints::open(&state)?);
        let mut sources = sources(&args, &config, &checkpoints, &state)?;
        {
            // Counters carry on across a reload for sources that stay.
            let mut reg = registry.write().expect("metrics registry");
            for s in sources.iter_mut() {
                if let Some(old) = reg.iter().find(|m| m.name == s.name) {
                    s.metrics = old.clone();
                }
            }
            *reg = sources.iter().map(|s| s.metrics.clone()).collect();
        }
        if !http_started {
            let listen = args
                .listen
                .clone()
                .or(d.listen.clone())
                .unwrap_or_else(|| "127.0.0.1:9187".into());
            start_http(&listen, registry.clone())
                .await
                .map_err(anyhow::Error::msg)?;
            http_started = true;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        let mut tasks = vec![];
        for s in sources {
            tasks.push(tokio::spawn(run_source(s, stop_rx.clone())));
        }
        tracing::info!(sources = ?names, "daemon running");
        notify("READY=1");
        notify(&format!("STATUS=following {}", names.join(", ")));
        let mut watchdog =
            tokio::time::interval(watchdog_interval().unwrap_or(Duration::from_secs(3600)));
        let reload = loop {
            tokio::select! {
                _ = term.recv() => break false,
                _ = int.recv() => break false,
                _ = hup.recv() => match Config::load(config_path.as_deref()) {
                    Ok(c) => {
                        tracing::info!("SIGHUP: config re-read; restarting the sessions with it");
                        notify("RELOADING=1");
                        config = c;
                        break true;
                    }
                    Err(e) => tracing::error!("SIGHUP: the config is not valid, keeping the running one: {e}"),
                },
                _ = watchdog.tick() => notify("WATCHDOG=1"),
            }
        };
        if !reload {
            notify("STOPPING=1");
            tracing::info!("stopping: flushing open segments and checkpointing");
        }
        let _ = stop_tx.send(true);
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("{e}"),
                Err(e) => tracing::error!("source task: {e}"),
            }
        }
        drop(checkpoints);
        if !reload {
            return Ok(());
        }
    }
}
