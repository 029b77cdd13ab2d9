//! `redvault daemon`: continuous persistence. Per job (one Redis), a replication
//! session writes a base snapshot generation, then rolls the command stream into
//! sealed AOF segments in that generation, acknowledging to the primary only what
//! storage holds. A checkpoint (sled) lets a restart continue the same
//! generation with `PSYNC <replid> <offset>`; when the primary cannot continue,
//! a new generation starts and the gap is logged and counted. The supervisor
//! (`supervisor.rs`) runs every job, reloads on SIGHUP, and talks to systemd.

pub mod checkpoint;
mod cluster;
mod drills;
mod lease;
pub mod metrics;
pub mod notify;
pub mod schedule;
mod segmenter;
mod session;
pub mod spool;
mod supervisor;

pub use session::{run_job, Job};
pub use supervisor::{run, DaemonOverrides};

use crate::backup::BackupError;
use crate::kek::KekError;
use crate::settings::SettingsError;
use crate::source::SourceError;
use checkpoint::CheckpointError;
use metrics::Registry;
use schedule::ScheduleError;
use spool::SpoolError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Spool(SpoolError),
    /// The spool is full: storage is not keeping up (the job drops the link
    /// until it drains, then starts a new generation).
    #[error(transparent)]
    SpoolFull(SpoolError),
    /// The session lost its link or stream (the job retries with backoff).
    #[error("{0}")]
    Lost(String),
    /// Another daemon writes this source: its lease is fresh.
    #[error("source {source_name} is written by another daemon ({holder}) whose lease holds until {until}: refused, so two writers never share a source; stop the other one, or wait for its lease to expire")]
    Held {
        source_name: String,
        holder: String,
        until: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A cluster shard's stream cannot go on (a failover, its checkpoint
    /// gone, a base due): the cluster job takes a new cluster base.
    #[error("{0}")]
    NeedClusterBase(String),
    /// Asked to stop while waiting on the server.
    #[error("stopped")]
    Stopped,
}

/// Serves /metrics and /healthz on `addr` (loopback by default) for the jobs
/// in `registry`.
pub async fn start_http(addr: &str, registry: Registry) -> Result<(), DaemonError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: addr.into(),
            source,
        })?;
    tokio::spawn(metrics::serve(listener, registry));
    Ok(())
}
