//! Running the (blocking) scanner beside async code: pieces of RDB bytes are sent
//! over a bounded channel and read on a blocking thread.

use super::{Item, RdbError, RdbScanner, ScanOptions};
use bytes::{Buf, Bytes};
use std::collections::BTreeMap;
use std::io::Read;
use tokio::sync::mpsc;

/// A `Read` over pieces received from a channel; end of stream when the sender
/// is dropped.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Keys per database, counted by walking the RDB; its checksum too when
/// `verify_checksum` (a caller that has not verified it already).
pub fn count_keys(input: impl Read, verify_checksum: bool) -> Result<BTreeMap<u64, u64>, RdbError> {
    let opts = ScanOptions {
        verify_checksum,
        ..ScanOptions::default()
    };
    let mut s = RdbScanner::new(input, opts)?;
    let mut counts = BTreeMap::new();
    while let Some(item) = s.next()? {
        if let Item::Entry(e) = item {
            *counts.entry(e.db).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// A key counter running on its own thread; feed it with `send`, then `finish`.
pub struct KeyCounter {
    tx: Option<mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<Result<BTreeMap<u64, u64>, RdbError>>,
}

impl KeyCounter {
    /// With `verify_checksum`, the RDB's CRC64 is checked too (the PSYNC
    /// transfer checks it on its own; an RDB redvault wrote from a SCAN does
    /// not get that).
    pub fn start(verify_checksum: bool) -> Self {
        let (tx, rx) = mpsc::channel(32);
        let task = tokio::task::spawn_blocking(move || {
            count_keys(ChannelReader::new(rx), verify_checksum)
        });
        KeyCounter { tx: Some(tx), task }
    }

    /// Passes a piece on; if the scanner stopped (an error it will report), the
    /// rest is dropped.
    pub async fn send(&mut self, piece: Bytes) {
        if let Some(tx) = &self.tx {
            if tx.send(piece).await.is_err() {
                self.tx = None;
            }
        }
    }

    pub async fn finish(mut self) -> Result<BTreeMap<u64, u64>, RdbError> {
        self.tx = None;
        self.task.await.map_err(|e| RdbError::Io(e.to_string()))?
    }
}
