//! The daemon's supervisor: builds every job from flags and config, runs them
//! until SIGTERM/SIGINT, re-reads the config on SIGHUP and restarts the jobs
//! with it (each continues its generation from the checkpoint; metrics carry
//! over for jobs that stay), and reports to systemd (READY, STATUS, WATCHDOG,
//! RELOADING, STOPPING).

use super::checkpoint::Checkpoints;
use super::metrics::{Registry, SourceMetrics};
use super::notify::{notify, watchdog_interval};
use super::schedule::BaseSchedule;
use super::{run_job, start_http, DaemonError, Job};
use crate::backup::layout::check_source_name;
use crate::settings::{defaults, Config, SealTuning};
use crate::source::PsyncSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// What flags set for the daemon; each falls back to the config's `[daemon]`.
#[derive(Debug, Clone, Default)]
pub struct DaemonOverrides {
    /// Where the daemon's events are recorded: the command's audit log, fixed
    /// at start (a reload does not move it).
    pub audit: crate::audit::Audit,
    /// One job's Redis (else the config's `[[daemon.sources]]`).
    pub redis: Option<String>,
    pub redis_timeout: Option<u64>,
    pub tls: crate::resp::TlsOptions,
    pub redis_password_file: Option<PathBuf>,
    pub source: Option<String>,
    pub store: Option<String>,
    pub prefix: Option<String>,
    pub kek: Option<String>,
    /// The signing key (else the config's, else signing.pem beside the KEK).
    pub signing_key: Option<String>,
    /// More signers retention trusts besides this daemon's own.
    pub trust: Vec<String>,
    pub seal: SealTuning,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    /// Serve /metrics and /healthz on a non-loopback address (they carry no
    /// authentication).
    pub listen_public: bool,
    pub base_every: Option<String>,
    pub keep_last: Option<usize>,
    pub keep_within: Option<String>,
    pub segment_interval_ms: Option<u64>,
    pub fingerprint_interval_ms: Option<u64>,
    /// Scheduled drills (else the config's), and the KEK they unwrap with.
    pub drill_every: Option<String>,
    pub drill_kek: Option<String>,
    /// The config file, handed to scheduled drills too.
    pub config_path: Option<PathBuf>,
    /// Follow a cluster's replicas (else the config's).
    pub from_replica: bool,
    /// `psync` or `scan`, for every source (else the config's).
    pub method: Option<String>,
}

/// Builds every job's settings from flags and config.
async fn jobs(
    o: &DaemonOverrides,
    config: &Config,
    checkpoints: &Arc<Checkpoints>,
    state: &Path,
) -> Result<Vec<Job>, DaemonError> {
    let d = config.daemon.clone().unwrap_or_default();
    // Name, Redis, method, drill schedule, from_replica.
    type Wanted = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<bool>,
    );
    let mut wanted: Vec<Wanted> = vec![];
    if o.redis.is_some() || d.sources.is_empty() {
        let url = config.redis_url(o.redis.as_deref(), o.redis_password_file.as_deref())?;
        let name = o
            .source
            .clone()
            .or(config.source.clone())
            .unwrap_or_else(|| url.source_name());
        wanted.push((
            name,
            o.redis.clone().or(config.redis.clone()),
            None,
            None,
            None,
        ));
    } else {
        for s in &d.sources {
            wanted.push((
                s.name.clone(),
                Some(s.redis.clone()),
                s.method.clone(),
                s.drill_every.clone(),
                s.from_replica,
            ));
        }
    }
    let kek = config.open_kek(o.kek.as_deref())?;
    // Fail closed: without a signing key nothing is written.
    let signer = config
        .open_signer(o.signing_key.as_deref(), o.kek.as_deref())
        .await?;
    let mut trust = config.trust(&o.trust, o.kek.as_deref(), false)?;
    trust.add_signer(&signer);
    let store = config.open_store(o.store.as_deref(), "--to", o.prefix.as_deref())?;
    let seal = config.seal_options(&o.seal)?;
    let schedule_text = o.base_every.clone().or(d.base_every.clone());
    if let Some(t) = &schedule_text {
        BaseSchedule::parse(t)?;
    }
    let retention = config.retention(o.keep_last, o.keep_within.as_deref())?;
    let link = config.connect_options(o.redis_timeout, &o.tls)?;
    // The store, KEK and signer are built: their Azure identity, if any.
    let audit = match config.identity_name() {
        Some(now) => o.audit.with_identity(now),
        None => o.audit.clone(),
    };
    let mut out = vec![];
    for (name, redis, method, drill_every, from_replica) in wanted {
        let from_replica = o.from_replica || from_replica.or(d.from_replica).unwrap_or(false);
        check_source_name(&name)?;
        let drill = drill_plan(
            o,
            &d,
            &name,
            o.drill_every
                .clone()
                .or(drill_every)
                .or(d.drill_every.clone()),
            &signer,
            state,
        )?;
        let url = config.redis_url(redis.as_deref(), o.redis_password_file.as_deref())?;
        let method = o
            .method
            .clone()
            .or(method)
            .or(d.method.clone())
            .unwrap_or_else(|| "psync".into());
        let bases_only = match method.as_str() {
            "psync" => false,
            "scan" => true,
            other => {
                return Err(DaemonError::Invalid(format!(
                    "source {name}: method {other:?} is not psync or scan"
                )))
            }
        };
        if bases_only && schedule_text.is_none() {
            return Err(DaemonError::Invalid(format!(
                "source {name}: a SCAN source has no command stream to follow, so it needs base_every (--base-every) for its bases"
            )));
        }
        if bases_only && from_replica {
            return Err(DaemonError::Invalid(format!(
                "source {name}: from_replica follows replicas by PSYNC; a SCAN source reads the primaries"
            )));
        }
        let seed = Some((url.clone(), link.clone()));
        let from: Arc<dyn crate::source::Source> = if bases_only {
            Arc::new(crate::source::ScanSource::new(url, link.clone(), 4, None))
        } else {
            Arc::new(PsyncSource::new(url, link.clone()))
        };
        out.push(Job {
            bases_only,
            state_dir: state.to_path_buf(),
            from,
            store: store.clone(),
            kek: kek.clone(),
            signer: signer.clone(),
            trust: trust.clone(),
            seal: seal.clone(),
            checkpoints: checkpoints.clone(),
            spool_dir: state.join("spool").join(&name),
            spool_max_bytes: d.spool_max_bytes.unwrap_or(defaults::SPOOL_MAX_BYTES),
            cut_interval: Duration::from_millis(
                o.segment_interval_ms
                    .or(d.segment_interval_ms)
                    .unwrap_or(defaults::SEGMENT_INTERVAL_MS)
                    .max(10),
            ),
            segment_max_bytes: d
                .segment_max_bytes
                .unwrap_or(defaults::SEGMENT_MAX_BYTES)
                .max(4096),
            fingerprint_every: match o
                .fingerprint_interval_ms
                .or(d.fingerprint_interval_ms)
                .unwrap_or(defaults::FINGERPRINT_INTERVAL_MS)
            {
                0 => None,
                ms => Some(Duration::from_millis(ms.max(100))),
            },
            max_segments_per_sec: d
                .max_segments_per_sec
                .unwrap_or(defaults::MAX_SEGMENTS_PER_SEC)
                .max(1),
            schedule: schedule_text
                .as_deref()
                .map(BaseSchedule::parse)
                .transpose()?,
            retention: retention.clone(),
            audit: audit.clone(),
            metrics: SourceMetrics::new(&name),
            seed,
            stream: None,
            drill,
            from_replica,
            name,
        });
    }
    Ok(out)
}

/// The scheduled drills of source `name`, if it has a schedule: the drill's
/// arguments (the daemon's store, this source, the drill KEK, the daemon's
/// own signer and the trusted ones, the config file), fixed at start.
fn drill_plan(
    o: &DaemonOverrides,
    d: &crate::settings::DaemonConfig,
    name: &str,
    every: Option<String>,
    signer: &crate::signing::Signer,
    state: &Path,
) -> Result<Option<super::drills::DrillPlan>, DaemonError> {
    let Some(every) = every else {
        return Ok(None);
    };
    let schedule = BaseSchedule::parse(&every)?;
    let Some(kek) = o.drill_kek.clone().or(d.drill_kek.clone()) else {
        return Err(DaemonError::Invalid(format!(
            "source {name}: drill_every needs drill_kek (--drill-kek), a KEK that unwraps: the private key file, or a Key Vault key this host may unwrap with (the daemon's own kek need only wrap)"
        )));
    };
    let dir = state.join("drill");
    let io =
        |e: std::io::Error| DaemonError::Invalid(format!("drill directory {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    // The drill trusts what this daemon signs: its public half, a file.
    let signer_pub = dir.join("signer.pub.pem");
    std::fs::write(&signer_pub, signer.public_key().to_pem()).map_err(io)?;
    let mut args: Vec<std::ffi::OsString> = vec!["--source".into(), name.into()];
    args.extend(["--kek".into(), kek.into()]);
    args.extend(["--trust".into(), signer_pub.into_os_string()]);
    for t in &o.trust {
        args.extend(["--trust".into(), t.into()]);
    }
    if let Some(s) = &o.store {
        args.extend(["--from".into(), s.into()]);
    }
    if let Some(p) = &o.prefix {
        args.extend(["--prefix".into(), p.into()]);
    }
    if let Some(c) = &o.config_path {
        args.extend(["--config".into(), c.clone().into_os_string()]);
    }
    if let Some(bin) = &d.drill_redis_server {
        args.extend(["--redis-server".into(), bin.clone().into_os_string()]);
    }
    Ok(Some(super::drills::DrillPlan {
        schedule,
        args,
        last: dir.join(format!("{name}.json")),
        report: dir.join(format!("{name}.md")),
        tmp: dir.join(format!("{name}.tmp")),
    }))
}

/// Runs one job until `stop`, restarting it with backoff when it fails or
/// panics (counted in `redvault_errors_total`; /healthz names it while it is
/// down), so one bad source never takes the others or itself down for good.
async fn supervise(job: Arc<Job>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let run = tokio::spawn(run_job(job.clone(), stop.clone()));
        let why = match run.await {
            Ok(Ok(())) => return, // stopped on purpose
            Ok(Err(e)) => e.to_string(),
            Err(e) if e.is_panic() => format!("the source task panicked: {e}"),
            Err(e) => format!("the source task ended: {e}"),
        };
        if *stop.borrow() {
            return;
        }
        job.metrics
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        job.metrics
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(source = %job.name, "{why}; restarting it in {backoff:?}");
        job.audit(
            "source restart",
            serde_json::json!({"backoff_seconds": backoff.as_secs()}),
            Some(&why),
        );
        let _ = tokio::time::timeout(backoff, stop.changed()).await;
        if *stop.borrow() {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The config re-read on SIGHUP, and every job built from it (KEK, signing
/// key, trust, TLS files, store): the jobs that then start are these, so a
/// reload that cannot start leaves the running configuration in place
/// instead of ending the daemon. Bounded in time (a Key Vault signer is
/// opened), so the watchdog and the signals are served meanwhile.
async fn reread(
    path: Option<&Path>,
    o: &DaemonOverrides,
    checkpoints: &Arc<Checkpoints>,
    state: &Path,
) -> Result<(Config, Vec<Job>), String> {
    let c = Config::load(path).map_err(|e| format!("the config is not valid: {e}"))?;
    let wanted = state_dir(o, &c).map_err(|e| e.to_string())?;
    if wanted != state {
        return Err(format!(
            "the state directory changes to {} (from {}): that takes a restart",
            wanted.display(),
            state.display()
        ));
    }
    let built = tokio::time::timeout(RELOAD_TIMEOUT, jobs(o, &c, checkpoints, state))
        .await
        .map_err(|_| {
            format!(
                "the new configuration did not open within {} s",
                RELOAD_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("the new configuration cannot start: {e}"))?;
    Ok((c, built))
}

/// Under the unit's 30 s watchdog (pinged every 15 s).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

fn state_dir(o: &DaemonOverrides, config: &Config) -> Result<PathBuf, DaemonError> {
    let d = config.daemon.clone().unwrap_or_default();
    o.state_dir.clone().or(d.state_dir).ok_or_else(|| {
        DaemonError::Invalid("no state directory: pass --state-dir, set daemon.state_dir, or run under systemd with StateDirectory=".into())
    })
}

/// A daemon-wide audit record; a log that cannot be written is logged.
fn record(audit: &crate::audit::Audit, event: &str, error: Option<&str>) {
    if let Err(e) = audit.record(event, None, error) {
        tracing::error!("{e}");
    }
}

/// Runs the daemon until SIGTERM or SIGINT; `config_path` is re-read on SIGHUP.
pub async fn run(
    o: DaemonOverrides,
    config_path: Option<PathBuf>,
    mut config: Config,
) -> Result<(), DaemonError> {
    let sig = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| DaemonError::Invalid(format!("{name} handler: {e}")))
    };
    let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;
    let registry: Registry = Default::default();
    let mut http_started = false;
    let state = state_dir(&o, &config)?;
    std::fs::create_dir_all(&state).map_err(|e| {
        DaemonError::Invalid(format!(
            "cannot create state directory {}: {e}",
            state.display()
        ))
    })?;
    let checkpoints = Arc::new(Checkpoints::open(&state)?);
    // The jobs a reload built and checked.
    let mut prepared: Option<Vec<Job>> = None;
    loop {
        let d = config.daemon.clone().unwrap_or_default();
        let mut jobs = match prepared.take() {
            Some(j) => j,
            None => jobs(&o, &config, &checkpoints, &state).await?,
        };
        {
            // Counters carry on across a reload for jobs that stay.
            let mut reg = registry.write().expect("metrics registry");
            for j in jobs.iter_mut() {
                if let Some(old) = reg.iter().find(|m| m.name == j.name) {
                    j.metrics = old.clone();
                }
            }
            *reg = jobs.iter().map(|j| j.metrics.clone()).collect();
        }
        if !http_started {
            let listen = o
                .listen
                .clone()
                .or(d.listen.clone())
                .unwrap_or_else(|| defaults::LISTEN.into());
            check_listen(&listen, o.listen_public || d.listen_public.unwrap_or(false))?;
            start_http(&listen, registry.clone()).await?;
            http_started = true;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
        let mut tasks = vec![];
        for j in jobs {
            let j = Arc::new(j);
            if let Some(plan) = j.drill.clone() {
                // Beside the job, never inside it: a drill does not touch
                // the backups, and a job's restart does not cut a drill short.
                tasks.push(tokio::spawn(super::drills::run_drills(
                    j.clone(),
                    plan,
                    stop_rx.clone(),
                )));
            }
            tasks.push(tokio::spawn(supervise(j, stop_rx.clone())));
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
                _ = hup.recv() => match reread(config_path.as_deref(), &o, &checkpoints, &state).await {
                    Ok((c, built)) => {
                        tracing::info!("SIGHUP: config re-read; restarting the sessions with it");
                        record(&o.audit, "reload", None);
                        notify("RELOADING=1");
                        config = c;
                        prepared = Some(built);
                        break true;
                    }
                    Err(e) => {
                        tracing::error!("SIGHUP: {e}; keeping the running configuration");
                        record(&o.audit, "reload", Some(&e));
                    }
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
            if let Err(e) = t.await {
                tracing::error!("source supervisor: {e}");
            }
        }
        if !reload {
            return Ok(());
        }
    }
}

/// /metrics and /healthz have no authentication: a non-loopback address is
/// refused unless asked for on purpose, and then said on every start.
fn check_listen(addr: &str, public: bool) -> Result<(), DaemonError> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    if !public {
        return Err(DaemonError::Invalid(format!(
            "listen address {addr} is not loopback, and /metrics and /healthz carry no authentication: refused; set daemon.listen_public = true (or --listen-public) to serve them there"
        )));
    }
    tracing::warn!("serving /metrics and /healthz without authentication on {addr}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_listen;

    #[test]
    fn metrics_stay_on_loopback_unless_asked() {
        for ok in [
            "127.0.0.1:9187",
            "[::1]:9187",
            "localhost:9187",
            "127.0.0.2:1",
        ] {
            assert!(check_listen(ok, false).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:9187", "[::]:9187", "10.0.0.5:9187", "cache1:9187"] {
            let e = check_listen(bad, false).unwrap_err().to_string();
            assert!(e.contains("listen_public"), "{bad}: {e}");
            assert!(check_listen(bad, true).is_ok(), "{bad}");
        }
    }
}
