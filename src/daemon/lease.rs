//! One writer per source: a lease object per daemon under
//! `<prefix>/<source>/.lease/`, renewed every few seconds. A daemon that finds
//! another holder's lease still fresh refuses the source, naming the holder,
//! until that lease expires. The holder is the host and the state directory,
//! so the same daemon restarted (even after kill -9) takes its own lease back
//! at once, while a second host configured alike is refused.

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
        let holder = format!("{host}:{}", state_dir.display());
        let file = format!(
            "{}.json",
            &hex::encode(Sha256::digest(holder.as_bytes()))[..16]
        );
        let lease = Lease {
            store: store.clone(),
            source: source.into(),
            path: lease_dir(store, source).child(file),
            holder,
        };
        lease.check().await?;
        lease.renew().await?;
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
