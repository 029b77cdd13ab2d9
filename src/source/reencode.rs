//! A source whose snapshots are rewritten for servers that read an older RDB
//! version (`export --rdb-version N`): the inner source's RDB bytes go to a
//! blocking thread that walks and rewrites them (`rdb::rewrite`), and the
//! rewritten pieces come out in order. Memory stays bounded: two small
//! channels and one entry at a time. Snapshot only: a command stream of a
//! newer server could hold commands the older one lacks.

use super::Resumed;
use super::{CommandFeed, Snapshot, SnapshotInfo, Source, SourceError};
use crate::rdb::{rewrite, ChannelReader, Rewritten};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Pieces in flight on each side.
const PIECES: usize = 8;
/// About this many bytes per rewritten piece.
const PIECE_BYTES: usize = 256 << 10;

pub struct Reencoded {
    inner: Arc<dyn Source>,
    to: u32,
    /// What the last snapshot's rewrite did, once it ended.
    done: Arc<Mutex<Option<Rewritten>>>,
}

impl Reencoded {
    pub fn new(inner: Arc<dyn Source>, to: u32) -> Self {
        Reencoded {
            inner,
            to,
            done: Arc::default(),
        }
    }

    /// What the last snapshot's rewrite did (converted values, what was
    /// left out), once its last piece was given.
    pub fn rewritten(&self) -> Option<Rewritten> {
        self.done.lock().ok()?.clone()
    }
}

#[async_trait]
impl Source for Reencoded {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn snapshot(&self, then_stream: bool) -> Result<Box<dyn Snapshot>, SourceError> {
        if then_stream {
            return Err(SourceError::Unsupported(format!(
                "a snapshot rewritten for RDB {} is taken without its command stream",
                self.to
            )));
        }
        let mut inner = self.inner.snapshot(false).await?;
        let info = SnapshotInfo {
            // The rewritten RDB's checksum is redvault's own: the reader checks it.
            rdb_checked: false,
            ..inner.info().clone()
        };
        let describe = self.inner.describe();
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(PIECES);
        let (out_tx, out_rx) = mpsc::channel(PIECES);
        let errors = out_tx.clone();
        // The inner snapshot's pieces, to the rewriting thread; an error of
        // the source goes out ahead of anything the thread says after it.
        tokio::spawn(async move {
            loop {
                match inner.next_piece().await {
                    Ok(Some(p)) => {
                        if in_tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = errors.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        let to = self.to;
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let r = rewrite(ChannelReader::new(in_rx), to, PIECE_BYTES, |p| {
                out_tx.blocking_send(Ok(Bytes::from(p))).is_ok()
            });
            match r {
                Ok(report) => {
                    if let Ok(mut d) = done.lock() {
                        *d = Some(report);
                    }
                    // The end: the channel closes with the sender.
                }
                Err(e) => {
                    let _ = out_tx.blocking_send(Err(SourceError::Rewrite(format!(
                        "rewriting the snapshot of {describe} for RDB {to}: {e}"
                    ))));
                }
            }
        });
        Ok(Box::new(ReencodedSnapshot {
            info,
            rx: out_rx,
            received: 0,
            rdb_version: None,
        }))
    }

    async fn resume(&self, _replid: &str, _held: u64) -> Result<Resumed, SourceError> {
        Err(SourceError::Unsupported(format!(
            "a source rewritten for RDB {} has no command stream",
            self.to
        )))
    }
}

struct ReencodedSnapshot {
    info: SnapshotInfo,
    rx: mpsc::Receiver<Result<Bytes, SourceError>>,
    received: u64,
    rdb_version: Option<u32>,
}

#[async_trait]
impl Snapshot for ReencodedSnapshot {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, SourceError> {
        match self.rx.recv().await {
            Some(Ok(p)) => {
                if self.rdb_version.is_none() {
                    // The header leaves in the first piece: "REDIS" and 4 digits.
                    self.rdb_version = p
                        .get(5..9)
                        .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok());
                }
                self.received += p.len() as u64;
                Ok(Some(p))
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    fn received(&self) -> u64 {
        self.received
    }

    fn announced_size(&self) -> Option<u64> {
        None
    }

    fn rdb_version(&self) -> Option<u32> {
        self.rdb_version
    }

    fn into_stream(self: Box<Self>) -> CommandFeed {
        unreachable!("a rewritten snapshot is taken without a stream")
    }
}
