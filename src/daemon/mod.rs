//! `redvault daemon`: continuous persistence. Per source, a replication session
//! writes a base snapshot generation, then rolls the command stream into sealed
//! AOF segments in that generation, acknowledging to the primary only what
//! storage holds. A checkpoint (sled) lets a restart continue the same
//! generation with `PSYNC <replid> <offset>`; when the primary cannot continue,
//! a new generation starts and the gap is logged and counted.

pub mod checkpoint;
pub mod metrics;
pub mod notify;
pub mod schedule;
mod session;
pub mod spool;

pub use session::{run_source, SourceSettings};

use metrics::Registry;

/// Serves /metrics and /healthz on `addr` (loopback by default) for the sources
/// in `registry`.
pub async fn start_http(addr: &str, registry: Registry) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tokio::spawn(metrics::serve(listener, registry));
    Ok(())
}
