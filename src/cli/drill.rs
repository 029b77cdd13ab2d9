//! `redvault drill`: restores a backup into a scratch Redis (or a given
//! one), checks it, and reports how long recovery took (RTO, by stage) and
//! how much would be lost (RPO). A failed check exits 1 naming its cause.

use super::args::{KekArg, StoreArgs, TrustArgs};
use super::drill_report::{self, FingerprintChecked, Report, Stage};
use super::feed::ViaArgs;
use super::output::Output;
use super::restore::{restore_plan, RestoreJob};
use crate::backup::{plan, Point};
use crate::resp::{ConnectOptions, RedisUrl, Reply};
use crate::settings::Config;
use crate::target::LoadOptions;
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Source name in the layout.
    #[arg(long, env = "REDVAULT_SOURCE")]
    pub source: Option<String>,
    #[command(flatten)]
    pub kek: KekArg,
    /// Drill the state at this time (RFC 3339).
    #[arg(long, conflicts_with = "generation")]
    pub at: Option<String>,
    /// Drill this generation (to its end).
    #[arg(long)]
    pub generation: Option<String>,
    /// Drill into this Redis instead of a scratch one (it must be empty);
    /// `acl print --role drill` prints the user it needs.
    #[arg(long, conflicts_with = "scratch")]
    pub target: Option<String>,
    /// A file holding the --target's password (else REDVAULT_REDIS_PASSWORD).
    #[arg(long, env = "REDVAULT_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// TLS for a rediss:// --target.
    #[command(flatten)]
    pub tls: super::args::TlsArgs,
    /// Start a scratch redis-server on loopback, restore into it, stop it
    /// (the default).
    #[arg(long)]
    pub scratch: bool,
    /// The redis-server binary for the scratch server (default: on PATH).
    #[arg(long, env = "REDVAULT_REDIS_SERVER")]
    pub redis_server: Option<PathBuf>,
    /// Write a Markdown report here, with an SVG chart beside it (.svg).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the drill's metrics here in Prometheus text format (for
    /// node_exporter's textfile collector): redvault_drill_ok,
    /// _last_success_timestamp_seconds, _rto_seconds, _rpo_seconds.
    #[arg(long, env = "REDVAULT_DRILL_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Drill a plain (unencrypted) generation even though a KEK is given.
    #[arg(long)]
    pub allow_plain: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub via: ViaArgs,
}

/// A redis-server of our own: loopback, a private directory, no
/// persistence; stopped and its directory removed when dropped (and killed
/// by the kernel if this process dies first).
struct Scratch {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
    label: String,
    /// `requirepass` of the scratch server (random, never printed).
    password: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Redis server v=7.0.15 sha=...` -> `7.0.15`.
fn server_version(bin: &Path) -> anyhow::Result<(String, String)> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
            "cannot run {} for the scratch Redis: install redis-server or pass --redis-server PATH",
            bin.display()
        )
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .split("v=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{}: no version in its --version output", bin.display()))?;
    let name = if text.to_ascii_lowercase().contains("valkey") {
        "Valkey"
    } else {
        "Redis"
    };
    Ok((version.clone(), format!("{name} {version}")))
}

impl Scratch {
    async fn start(bin: &Path, rdb_version: Option<u32>) -> anyhow::Result<Scratch> {
        let (version, label) = server_version(bin)?;
        if let Some(v) = rdb_version {
            let reads = crate::rdb::max_rdb_for(&version);
            if v > reads {
                bail!(
                    "the backup is RDB version {v} and {} ({label}) reads up to RDB {reads}: pass --redis-server with {} or newer",
                    bin.display(),
                    crate::rdb::min_server_for(v)
                );
            }
        }
        let dir =
            std::env::temp_dir().join(format!("redvault-drill-{:016x}", rand::random::<u64>()));
        {
            use std::os::unix::fs::DirBuilderExt;
            // The server may write the decrypted data there: ours alone.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        // Only this process may read the restored data: a password no one
        // else knows (protected mode keeps other hosts out already).
        let password = hex::encode(rand::random::<[u8; 24]>());
        // In a file of the private directory, not on the command line (which
        // every process may read).
        let conf = dir.join("scratch.conf");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&conf)
                .with_context(|| format!("creating {}", conf.display()))?;
            writeln!(f, "requirepass {password}")
                .with_context(|| format!("writing {}", conf.display()))?;
        }
        let conf = std::fs::canonicalize(&conf).unwrap_or(conf);
        // The port: one the kernel picks free now (bounded retries if taken
        // between choosing and binding).
        let mut last = String::new();
        for _ in 0..4 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut cmd = std::process::Command::new(bin);
            cmd.arg(&conf)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args([
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                    "--daemonize",
                    "no",
                ])
                .arg("--dir")
                .arg(&dir)
                .args(["--logfile", "redis.log"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: prctl(PR_SET_PDEATHSIG) in the child before exec takes
            // plain integers and touches no memory: the scratch server dies
            // with this process, even on kill -9.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    Ok(())
                });
            }
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    bail!(
                        "cannot start {} for the scratch Redis ({e}): install redis-server or pass --redis-server PATH",
                        bin.display()
                    );
                }
            };
            let mut s = Scratch {
                child,
                dir: dir.clone(),
                port,
                label: label.clone(),
                password: password.clone(),
            };
            match s.wait_ready().await {
                Ok(()) => return Ok(s),
                Err(why) => {
                    last = why;
                    // Dropping `s` would remove the directory: keep it for the next try.
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    std::mem::forget(s);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        bail!("the scratch Redis ({label}) did not start: {last}")
    }

    /// PING answered within 10 s, or why not (the log's last line).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = self.url();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!(
                    "it exited ({status}): {}",
                    log.lines().last().unwrap_or("no log")
                ));
            }
            if let Ok(mut c) = crate::resp::connect(&url, &ConnectOptions::default()).await {
                if matches!(c.command(&[b"PING"]).await, Ok(Reply::Status(_))) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("no answer to PING within 10 s".into())
    }

    fn url(&self) -> RedisUrl {
        RedisUrl::parse(&format!(
            "redis://:{}@127.0.0.1:{}",
            self.password, self.port
        ))
        .expect("a loopback URL")
    }
}

pub async fn run_drill(args: DrillArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let source = args
        .source
        .clone()
        .or(config.source.clone())
        .unwrap_or_default();
    let mut report = Report {
        command: "drill",
        source: source.clone(),
        started_ms: crate::text::now_ms(),
        ..Report::default()
    };
    // Whatever fails (settings, store, KEK, the restore, a check), the
    // metrics and the report say so.
    let r = async {
        if source.is_empty() {
            bail!("no source given: pass --source NAME");
        }
        let store = args.store.open(config)?;
        let kek = args.kek.open(config)?;
        let trust = args.trust.trust(config, args.kek.kek.as_deref())?;
        let point = match &args.at {
            Some(at) => Point::At(
                crate::text::parse_rfc3339_ms(at)
                    .with_context(|| format!("--at {at:?}: not an RFC 3339 time"))?,
            ),
            None => Point::Latest,
        };
        drill(
            &args,
            config,
            &store,
            &source,
            kek.as_ref(),
            &trust,
            point,
            &mut report,
            started,
        )
        .await
    }
    .await;
    report.rto_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = &r {
        report.ok = false;
        report.failures.push(format!("{e:#}"));
    }
    // The metrics first: an alert must not miss a failure the report hit.
    let metrics = args.metrics_file.as_ref().map(|path| {
        drill_report::write_metrics(path, &report)
            .with_context(|| format!("writing the drill metrics {}", path.display()))
    });
    if let Some(path) = &args.report {
        drill_report::write(path, &report)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    metrics.transpose()?;
    r?;
    out.summary(
        &format!(
            "drill of {source} generation {} ok ({} by {}): {} keys, RTO {:.1}s ({}), RPO {}; every object opened and authenticated, base key counts equal to the manifest's{}",
            report.generation,
            report.target,
            report.via,
            report.keys,
            report.rto_seconds,
            report
                .stages
                .iter()
                .map(|s| format!("{} {:.1}s", s.name, s.seconds))
                .collect::<Vec<_>>()
                .join(", "),
            report
                .rpo_seconds
                .map_or("unknown".into(), |s| format!("{s:.1}s")),
            report
                .fingerprint
                .as_ref()
                .filter(|f| f.compared)
                .map_or(String::new(), |f| format!(
                    ", key counts equal to the source's at offset {}",
                    f.offset
                )),
        ),
        serde_json::to_value(&report)?,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drill(
    args: &DrillArgs,
    config: &Config,
    store: &crate::store::Store,
    source: &str,
    kek: &dyn crate::kek::Kek,
    trust: &crate::signing::Trust,
    point: Point,
    report: &mut Report,
    started: Instant,
) -> anyhow::Result<()> {
    let plan = plan(
        store,
        source,
        args.generation.as_deref(),
        point,
        kek,
        args.allow_plain,
        trust,
    )
    .await?;
    report.generation = plan.generation.clone();
    report.base_offset = plan.base_offset;
    // A cluster generation: every shard's stream (the chart shows the first).
    let streams = plan.streams();
    report.segments_total = streams.iter().map(|p| p.timeline.segments.len()).sum();
    report.segments = streams[0]
        .timeline
        .segments
        .iter()
        .map(|s| (s.from, s.to))
        .collect();
    report.holes = streams
        .iter()
        .flat_map(|p| p.timeline.holes.iter().copied())
        .collect();
    let dir = crate::backup::layout::GenerationDir::new(source, &plan.generation);
    let (manifest, _) =
        crate::backup::read::open_manifest(store, &dir, Some(kek), args.allow_plain, trust).await?;
    report.stages.push(Stage {
        name: "plan".into(),
        seconds: started.elapsed().as_secs_f64(),
    });
    // The target: scratch unless one is given.
    let scratch;
    let (url, link) = match &args.target {
        Some(t) => {
            let url = config.redis_url(Some(t), args.redis_password_file.as_deref())?;
            let link = config.connect_options(None, &args.tls.options())?;
            report.target = url.addr();
            (url, link)
        }
        None => {
            let bin = args
                .redis_server
                .clone()
                .unwrap_or_else(|| PathBuf::from("redis-server"));
            let t = Instant::now();
            scratch = Scratch::start(&bin, manifest.redis.rdb_version).await?;
            report.target = format!("a scratch {} on 127.0.0.1:{}", scratch.label, scratch.port);
            report.scratch_dir = Some(scratch.dir.display().to_string());
            report.stages.push(Stage {
                name: "start".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
            (scratch.url(), ConnectOptions::default())
        }
    };
    let mut ctl = crate::resp::connect(&url, &link).await?;
    if let Ok(Reply::Bulk(Some(t))) = ctl.command(&[b"INFO", b"keyspace"]).await {
        let held = crate::feed::keyspace(&String::from_utf8_lossy(&t));
        if !held.is_empty() {
            bail!(
                "the drill target {} holds keys ({}): a drill needs an empty Redis",
                url.addr(),
                held.iter()
                    .map(|(d, n)| format!("db{d} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut target = crate::target::connect(&url, &link, LoadOptions::default()).await?;
    // The source's key counts the daemon recorded in the newest head (a
    // single server's stream): the replay stops at their offset, the
    // target's counts are compared, and the replay goes on.
    let recorded = plan
        .head
        .as_ref()
        .filter(|_| plan.shards.is_empty())
        .and_then(|h| Some((h.to, h.fingerprint.clone()?)))
        .filter(|(_, f)| f.offset >= plan.base_offset);
    let (pause, check) = match recorded {
        Some((head_to, f)) => {
            let (reached, reached_rx) = tokio::sync::oneshot::channel();
            let (resume_tx, resume) = tokio::sync::oneshot::channel();
            let pause = crate::backup::restore::Pause {
                at: f.offset,
                reached,
                resume,
            };
            (Some(pause), Some((head_to, f, reached_rx, resume_tx)))
        }
        None => (None, None),
    };
    let checking = async {
        let (head_to, f, reached, resume) = check?;
        reached.await.ok()?;
        let label = dir.segment_label(&crate::backup::layout::head_name(head_to));
        let r = match fingerprint_seen(&mut ctl).await {
            Ok((seen, true)) => crate::fingerprint::compare(&f, &seen)
                .map(|()| FingerprintChecked {
                    offset: f.offset,
                    compared: true,
                    dbs: f.dbs.clone(),
                    note: None,
                })
                .map_err(|why| format!("the key counts recorded in {label} differ: {why}")),
            Ok((_, false)) => Ok(FingerprintChecked {
                offset: f.offset,
                compared: false,
                dbs: f.dbs.clone(),
                note: Some(NOT_COMPARED.into()),
            }),
            Err(e) => Err(format!("reading the target's key counts: {e}")),
        };
        let _ = resume.send(r.as_ref().map(|_| ()).map_err(Clone::clone));
        r.ok()
    };
    let job = RestoreJob {
        store,
        plan: &plan,
        kek,
        allow_plain: args.allow_plain,
        trust,
        url: &url,
        link: &link,
        via: &args.via,
        ruled_out: None,
    };
    let (done, checked) = tokio::join!(restore_plan(&job, target.as_mut(), pause), checking);
    let done = done?;
    report.fingerprint = checked;
    report.via = done.via.into();
    report.stages.push(Stage {
        name: "load".into(),
        seconds: done.base_seconds,
    });
    report.stages.push(Stage {
        name: "replay".into(),
        seconds: done.replay_seconds,
    });
    report.commands = done.replayed.commands;
    report.segments_applied = done.replayed.segments;
    report.bytes = done.stats.bytes.max(
        manifest
            .objects
            .iter()
            .filter(|o| o.kind == "rdb")
            .map(|o| o.plaintext_bytes)
            .sum(),
    );
    report.objects = manifest.objects.len() + done.replayed.segments;
    let load_secs = done.base_seconds.max(1e-3);
    // Checks. The keys the base held, by the target's own count when no
    // segment changed them since, against the manifest's.
    let held = match ctl.command(&[b"INFO", b"keyspace"]).await? {
        Reply::Bulk(Some(t)) => crate::feed::keyspace(&String::from_utf8_lossy(&t)),
        _ => vec![],
    };
    report.keys_per_db = held.clone();
    report.keys = held.iter().map(|(_, n)| n).sum();
    let expected: u64 = manifest.keys.as_ref().map_or(0, |k| k.values().sum());
    let base_keys = if done.via == "replication" {
        done.stats.loaded
    } else {
        done.stats.loaded + done.stats.expired + done.stats.skipped_existing
    };
    report.keys_per_sec = base_keys as f64 / load_secs;
    report.mb_per_sec = report.bytes as f64 / 1e6 / load_secs;
    if manifest.keys.is_some() && base_keys != expected {
        bail!(
            "{}: the base loaded {base_keys} keys and its manifest counts {expected}",
            dir.label(crate::backup::layout::MANIFEST)
        );
    }
    report.functions = done.stats.functions;
    // RPO: how old the newest durable record is.
    // The newest record stored (keepalives count: an idle source is as
    // fresh as its last segment), or the base's completion.
    let newest_ms = if done.replayed.newest_ms > 0 {
        done.replayed.newest_ms
    } else {
        crate::text::parse_rfc3339_ms(&manifest.completed).unwrap_or(0)
    };
    if newest_ms > 0 {
        // At the drill's start (not counting its own duration), or at --at.
        let at = match point {
            Point::At(ms) => ms,
            _ => report.started_ms,
        };
        report.rpo_seconds = Some(at.saturating_sub(newest_ms) as f64 / 1000.0);
    }
    report.cut_transaction = done.replayed.cut_transaction;
    report.ok = true;
    Ok(())
}

/// Why a target loaded by RESTORE is not held to the source's counts.
const NOT_COMPARED: &str = "the base went in by RESTORE: the target reclaims keys as they expire, and a later write to an expired key can make one the source never held, so key counts are compared only through the replication feed";

/// The target's keys per database, and whether it is still a replica (fed
/// by replication: it reclaims no expired key, so every count compares).
async fn fingerprint_seen(
    ctl: &mut crate::resp::Conn,
) -> anyhow::Result<(Vec<crate::fingerprint::DbCount>, bool)> {
    let text = |r: Reply| match r {
        Reply::Bulk(Some(t)) => Ok(String::from_utf8_lossy(&t).into_owned()),
        other => Err(anyhow::anyhow!("INFO answered {other:?}")),
    };
    let repl = text(ctl.command(&[b"INFO", b"replication"]).await?)?;
    let replica = repl.lines().any(|l| l.trim() == "role:slave");
    let space = text(ctl.command(&[b"INFO", b"keyspace"]).await?)?;
    Ok((crate::fingerprint::parse_keyspace(&space), replica))
}
