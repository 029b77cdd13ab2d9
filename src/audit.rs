//! The audit log: one JSON line per command run (what, by whom, on what, the
//! outcome and how long), and per daemon event (a generation started or
//! ended, a gap, a full spool, retention deleting, a reload, a source
//! restarted), appended to `--audit-log` / `audit_log` (created 0600,
//! fsynced per record) and logged at info (the journal, under systemd). A
//! record holds the command's own summary or the event's facts, which name
//! sources, generations, KEK ids and targets, never a secret.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Names the Azure identity in use when a record is written (None until a
/// token was fetched): the daemon's records follow its identity as it is used.
pub type IdentityName = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub struct Audit {
    path: Option<PathBuf>,
    action: &'static str,
    started: Instant,
    /// The Azure identity the command got tokens with (ids, never a token).
    identity: Option<String>,
    identity_now: Option<IdentityName>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("path", &self.path)
            .field("action", &self.action)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Who runs this process: the login name, else the uid.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and touches no memory.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// No log file (records go to the journal only), for the daemon's action.
impl Default for Audit {
    fn default() -> Self {
        Audit::new(None, "daemon")
    }
}

impl Audit {
    pub fn new(path: Option<PathBuf>, action: &'static str) -> Self {
        Audit {
            path,
            action,
            started: Instant::now(),
            identity: None,
            identity_now: None,
        }
    }

    /// The same log, naming the identity `now` tells at each record.
    pub fn with_identity(&self, now: IdentityName) -> Self {
        Audit {
            identity_now: Some(now),
            ..self.clone()
        }
    }

    /// Names the Azure identity used, for the records that follow.
    pub fn set_identity(&mut self, who: Option<String>) {
        self.identity = who;
    }

    /// Appends one record; `details` is the command's summary, `error` its
    /// one-line failure. A log that cannot be written is an error of the
    /// command (an audited action must not go unrecorded silently).
    pub fn record(
        &self,
        event: &str,
        details: Option<serde_json::Value>,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let mut rec = serde_json::json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "action": self.action,
            "event": event,
            "outcome": if error.is_some() { "error" } else { "ok" },
            "error": error,
            "user": os_user(),
            "pid": std::process::id(),
            "seconds": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "details": details,
        });
        let who = self
            .identity
            .clone()
            .or_else(|| self.identity_now.as_ref().and_then(|now| now()));
        if let Some(who) = who {
            rec["azure_identity"] = who.into();
        }
        // Into the log too (the journal, under systemd, at REDVAULT_LOG=info).
        tracing::info!(target: "redvault::audit", "{rec}");
        let Some(path) = &self.path else {
            return Ok(());
        };
        append(path, &rec).map_err(|source| AuditError {
            path: path.display().to_string(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit log {path}: {source}")]
pub struct AuditError {
    path: String,
    source: std::io::Error,
}

fn append(path: &Path, rec: &serde_json::Value) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    let mut line = serde_json::to_vec(rec).expect("json");
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()
}
