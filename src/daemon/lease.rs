//! One writer per source: a lease object per daemon under
//! `<prefix>/<source>/.lease/`, renewed every few seconds. A daemon that finds
//! another holder's lease still fresh refuses the source, naming the holder,
//! until that lease expires. The holder is the host, the state directory and
//! a random id kept in it, so the same daemon restarted (even after kill -9)
//! takes its own lease back at once, while a second host configured alike (a
//! clone included) is refused. Storage that cannot be reached at start does
//! not stop a daemon that holds its checkpoint: it spools, and takes the lease
//! once storage answers. Known limits: the check and the write are not one
//! atomic step, and freshness trusts the hosts' clocks to within 30 s.

use super::DaemonError;
use crate::backup::layout::lease_dir;
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// How often a lease is renewed, and how long one stays fresh.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
pub const FRESH_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseDoc {
    holder: String,
    pid: u32,
    renewed_ms: u64,
}

/// This daemon's lease on one source.
pub struct Lease {
    store: Store,
    source: String,
    holder: String,
    path: object_store::path::Path,
}

impl Lease {
    /// Takes the lease for `source`, or says who holds it.
    pub async fn acquire(
        store: &Store,
        source: &str,
        state_dir: &Path,
    ) -> Result<Self, DaemonError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".into());
        let holder = format!("{host}:{}:{}", state_dir.display(), holder_id(state_dir)?);
        let file = format!(
            "{}.json",
            &hex::encode(Sha256::digest(holder.as_bytes()))[..16]
        );
        let lease = Lease {
            store: store.clone(),
            source: source.into(),
            path: lease_dir(store, source).join(file),
            holder,
        };
        match lease.check().await {
            Err(e @ DaemonError::Held { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(source = %source, "cannot check the writer lease now ({e}); going on, it is taken once storage answers");
                return Ok(lease);
            }
            Ok(()) => {}
        }
        if let Err(e) = lease.renew().await {
            tracing::warn!(source = %source, "cannot write the writer lease now ({e}); going on, it is taken once storage answers");
        }
        Ok(lease)
    }

    /// Writes this holder's lease with the time now.
    pub async fn renew(&self) -> Result<(), DaemonError> {
        let doc = LeaseDoc {
            holder: self.holder.clone(),
            pid: std::process::id(),
            renewed_ms: crate::text::now_ms(),
        };
        let bytes = serde_json::to_vec(&doc).expect("lease serialises");
        // Not a backup object: a lease is this holder's own, rewritten.
        Ok(self
            .store
            .write(&self.path, bytes)
            .await
            .map_err(crate::backup::BackupError::from)?)
    }

    /// Refuses if another holder's lease is fresh.
    async fn check(&self) -> Result<(), DaemonError> {
        let now = crate::text::now_ms();
        let dir = lease_dir(&self.store, &self.source);
        for o in self
            .store
            .list(&dir)
            .await
            .map_err(crate::backup::BackupError::from)?
        {
            if o.location == self.path {
                continue;
            }
            let Ok(bytes) = self.store.read(&o.location).await else {
                continue;
            };
            let Ok(doc) = serde_json::from_slice::<LeaseDoc>(&bytes) else {
                continue;
            };
            let until = doc.renewed_ms + FRESH_FOR.as_millis() as u64;
            if doc.holder != self.holder && until > now {
                return Err(DaemonError::Held {
                    source_name: self.source.clone(),
                    holder: doc.holder,
                    until: crate::text::rfc3339_ms(until),
                });
            }
        }
        Ok(())
    }

    /// Gives the lease up (a clean stop), so another holder may start at once.
    pub async fn release(self) {
        let _ = self.store.delete(&self.path).await;
    }
}

/// A random id kept in the state directory: two hosts cloned alike (same
/// hostname, same path) still differ.
fn holder_id(state_dir: &Path) -> Result<String, DaemonError> {
    let path = state_dir.join("holder-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    std::fs::write(&path, &id)
        .map_err(|e| DaemonError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(id)
}
