//! Scheduled drills (`drill_every`): `redvault drill` run by the daemon as
//! a child process, at low CPU priority, into a scratch redis-server of its
//! own. A drill that fails, hangs or runs out of memory so never touches
//! the backups; its result goes to /metrics (`redvault_drill_*`), the log,
//! the audit log, and `<state>/drill/<source>.json` (read back at start, so
//! the last success survives a restart), with the Markdown report beside it.

use super::metrics::{unix_now, DrillResult};
use super::schedule::BaseSchedule;
use super::session::Job;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// What a source's drills run with.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    pub schedule: BaseSchedule,
    /// The arguments after `redvault --json drill` (store, source, KEK,
    /// trusted signers, config), never a secret itself.
    pub args: Vec<OsString>,
    /// The last result (JSON) and the last report (Markdown, SVG beside it).
    pub last: PathBuf,
    pub report: PathBuf,
    /// The drill's TMPDIR (its scratch server's directory goes there),
    /// emptied after each drill, however it ended.
    pub tmp: PathBuf,
}

/// A drill that runs longer than this is stopped and counts as failed.
const DRILL_FOR: Duration = Duration::from_secs(12 * 3600);
/// A stopping daemon gives a running drill this long to clean up (its
/// scratch server, a target it fed) after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Runs `plan`'s drills for `j` on schedule until `stop`.
pub(super) async fn run_drills(j: Arc<Job>, plan: DrillPlan, mut stop: watch::Receiver<bool>) {
    // What a drill cut short by a crash left (its scratch data).
    let _ = std::fs::remove_dir_all(&plan.tmp);
    let kept = std::fs::read(&plan.last)
        .ok()
        .and_then(|b| serde_json::from_slice::<DrillResult>(&b).ok());
    // A drill that was due while the daemon was down, or that a reload or
    // a stop cut short, runs now rather than a whole schedule later.
    let mut missed = kept
        .as_ref()
        .is_some_and(|r| plan.schedule.last_due().is_some_and(|due| r.at < due));
    if let Some(r) = kept {
        *j.metrics.drill.lock().expect("metrics lock") = Some(r);
    }
    loop {
        let wait = if std::mem::take(&mut missed) {
            Duration::ZERO
        } else {
            plan.schedule.until_next()
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let started = unix_now();
        let clock = std::time::Instant::now();
        let outcome = drill_once(&plan, &mut stop).await;
        // Whatever the drill left there (a scratch directory of a drill
        // that was killed).
        let _ = std::fs::remove_dir_all(&plan.tmp);
        if *stop.borrow() && outcome.is_err() {
            return; // cut short by the stop: not a result
        }
        record(&j, &plan, started, clock.elapsed(), outcome);
    }
}

/// The drill's summary (its `--json` object), or why it failed.
async fn drill_once(
    plan: &DrillPlan,
    stop: &mut watch::Receiver<bool>,
) -> Result<serde_json::Value, String> {
    std::fs::create_dir_all(&plan.tmp)
        .map_err(|e| format!("cannot make {}: {e}", plan.tmp.display()))?;
    // This very binary, even once a package upgrade replaced the file.
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0("redvault")
        .env("TMPDIR", &plan.tmp)
        .args(["--json", "drill"])
        .args(&plan.args)
        .arg("--report")
        .arg(&plan.report)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setpriority and prctl in the child before exec take plain
    // integers and touch no memory. The drill yields the CPU to the cache
    // host's Redis, and dies with the daemon.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the drill: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let read_out = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b).await;
        b
    });
    let read_err = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b).await;
        b
    });
    let status = tokio::select! {
        s = tokio::time::timeout(DRILL_FOR, child.wait()) => match s {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("waiting for the drill: {e}")),
            Err(_) => return Err(format!("the drill ran longer than {} h and was stopped", DRILL_FOR.as_secs() / 3600)),
        },
        _ = stop.changed() => {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) with the child's pid and a signal number.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
            let _ = tokio::time::timeout(STOP_GRACE, child.wait()).await;
            return Err("the daemon stopped during the drill".into());
        }
    };
    let out = read_out.await.unwrap_or_default();
    let err = read_err.await.unwrap_or_default();
    let summary = String::from_utf8_lossy(&out)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match summary {
        Some(v) if status.success() && v["ok"] == true => Ok(v),
        _ => {
            let text = String::from_utf8_lossy(&err);
            let why = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("redvault: error: "))
                .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("no error was printed");
            Err(format!("the drill failed ({status}): {why}"))
        }
    }
}

/// The result into the metrics, the log, the audit log and the last-result file.
fn record(
    j: &Job,
    plan: &DrillPlan,
    started: u64,
    took: Duration,
    outcome: Result<serde_json::Value, String>,
) {
    let mut slot = j.metrics.drill.lock().expect("metrics lock");
    let before = slot.clone().unwrap_or_default();
    let result = match &outcome {
        Ok(v) => DrillResult {
            ok: true,
            at: started,
            last_success: unix_now(),
            rto_seconds: v["rto_seconds"].as_f64(),
            rpo_seconds: v["rpo_seconds"].as_f64(),
            generation: v["generation"].as_str().map(String::from),
            error: None,
        },
        // This run's figures, as a drill's --metrics-file has them: how
        // long it took to fail, and no RPO.
        Err(why) => DrillResult {
            ok: false,
            at: started,
            rto_seconds: Some(took.as_secs_f64()),
            rpo_seconds: None,
            error: Some(why.clone()),
            ..before
        },
    };
    *slot = Some(result.clone());
    drop(slot);
    match &outcome {
        Ok(_) => tracing::info!(
            source = %j.name,
            generation = result.generation.as_deref().unwrap_or("?"),
            rto_seconds = result.rto_seconds.unwrap_or(0.0),
            "scheduled drill passed; report {}",
            plan.report.display()
        ),
        Err(why) => tracing::error!(source = %j.name, "scheduled drill: {why}"),
    }
    j.audit(
        "drill",
        serde_json::json!({
            "ok": result.ok,
            "generation": result.generation,
            "rto_seconds": result.rto_seconds,
            "rpo_seconds": result.rpo_seconds,
            "report": plan.report.display().to_string(),
        }),
        outcome.as_ref().err().map(String::as_str),
    );
    let tmp = plan.last.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&result)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, &plan.last));
    if let Err(e) = written {
        tracing::error!(source = %j.name, "cannot keep the drill's result in {}: {e}", plan.last.display());
    }
}
