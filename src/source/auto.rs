//! PSYNC where the server allows it, else SCAN: managed services refuse
//! replication to clients, and a backup of them is still wanted. The
//! fallback is said, since a SCAN snapshot is not point-in-time.

use super::{Resumed, ScanSource, Snapshot, Source, SourceError};
use crate::resp::RedisError;
use async_trait::async_trait;

pub struct AutoSource {
    psync: Box<dyn Source>,
    scan: ScanSource,
}

impl AutoSource {
    pub fn new(psync: Box<dyn Source>, scan: ScanSource) -> Self {
        AutoSource { psync, scan }
    }
}

/// Whether the server refused replication itself: the user may not
/// (NOPERM), or the server does not offer it (unknown, renamed, disabled or
/// not allowed, as managed services answer). Not an authentication,
/// loading, busy or replica-link error, which SCAN would meet too or which
/// would give a stale copy.
fn replication_refused(e: &SourceError) -> bool {
    match e {
        SourceError::Redis(RedisError::NoPermission { command, .. }) => is_replication(command),
        SourceError::Redis(RedisError::Refused {
            command, message, ..
        }) => {
            let m = message.to_ascii_lowercase();
            is_replication(command)
                && [
                    "unknown command",
                    "not allowed",
                    "disabled",
                    "not supported",
                ]
                .iter()
                .any(|w| m.contains(w))
        }
        _ => false,
    }
}

fn is_replication(command: &str) -> bool {
    let c = command.to_ascii_lowercase();
    matches!(c.split_whitespace().next(), Some("psync" | "replconf"))
}

#[async_trait]
impl Source for AutoSource {
    fn describe(&self) -> String {
        self.psync.describe()
    }

    async fn snapshot(&self, then_stream: bool) -> Result<Box<dyn Snapshot>, SourceError> {
        match self.psync.snapshot(then_stream).await {
            Err(e) if !then_stream && replication_refused(&e) => {
                tracing::warn!(
                    "{e}; taking the snapshot with SCAN and DUMP instead (not point-in-time: keys changed during the scan may be from different moments)"
                );
                self.scan.snapshot(false).await
            }
            other => other,
        }
    }

    async fn resume(&self, replid: &str, held: u64) -> Result<Resumed, SourceError> {
        self.psync.resume(replid, held).await
    }
}
