//! The durable checkpoint, in sled under the state directory: per source, the
//! replication id and generation being followed, the offset storage has
//! acknowledged, and the offset the local spool holds. After a restart the
//! daemon asks `PSYNC <replid> <spooled + 1>` and uploads what the spool holds.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub replid: String,
    pub generation: String,
    /// Everything up to this replication offset is in storage.
    pub durable: u64,
    /// Everything up to this offset is in storage or in the local spool.
    pub spooled: u64,
    /// Hex of the link of the segment ending at `spooled` (the chain's
    /// genesis right after a base); the next segment names it. Absent in a
    /// checkpoint of an older redvault, whose generation cannot go on signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint store {path}: {message}")]
pub struct CheckpointError {
    path: String,
    message: String,
}

pub struct Checkpoints {
    db: sled::Db,
    path: String,
}

impl Checkpoints {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let path = dir.join("checkpoint.sled");
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| CheckpointError {
            path: shown.clone(),
            message: e.to_string(),
        };
        // A lock still held (sled releases it a moment after a drop, as on a
        // SIGHUP reload) is waited for, never taken for damage.
        let mut opened = sled::open(&path);
        for _ in 0..50 {
            match &opened {
                Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    opened = sled::open(&path);
                }
                _ => break,
            }
        }
        let db = match opened {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(err(&format!(
                    "{e}: another process holds it (a second daemon on this state directory?)"
                )));
            }
            Err(first) => {
                // A checkpoint that cannot be opened (damaged by an abrupt stop)
                // is kept aside for inspection; every source starts a new
                // generation (a gap, named) instead of the daemon failing at
                // every start.
                let aside = dir.join(format!(
                    "checkpoint.sled.broken-{}",
                    crate::text::unix_now()
                ));
                std::fs::rename(&path, &aside).map_err(|e| err(&e))?;
                tracing::error!(
                    "checkpoint {shown} cannot be opened ({first}); moved to {}: every source starts a new generation (a gap in point-in-time coverage)",
                    aside.display()
                );
                sled::open(&path).map_err(|e| err(&e))?
            }
        };
        Ok(Checkpoints { db, path: shown })
    }

    fn err(&self, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn get(&self, source: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        match self.db.get(source.as_bytes()).map_err(|e| self.err(e))? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.err(e)),
            None => Ok(None),
        }
    }

    /// Writes and flushes to disk before returning: a checkpoint is only worth
    /// something if it survives a crash.
    pub fn put(&self, source: &str, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let v = serde_json::to_vec(cp).expect("checkpoint serialises");
        self.db
            .insert(source.as_bytes(), v)
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Read-modify-write of `source`'s checkpoint, only while it still follows
    /// `generation` (a newer base may have replaced it); returns the updated one.
    pub fn update(
        &self,
        source: &str,
        generation: &str,
        change: impl FnOnce(&mut Checkpoint),
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let Some(mut cp) = self.get(source)? else {
            return Ok(None);
        };
        if cp.generation != generation {
            return Ok(None);
        }
        let before = cp.clone();
        change(&mut cp);
        if cp != before {
            self.put(source, &cp)?;
        }
        Ok(Some(cp))
    }

    pub fn remove(&self, source: &str) -> Result<(), CheckpointError> {
        self.db.remove(source.as_bytes()).map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
}
