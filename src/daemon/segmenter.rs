//! The open AOF segment being filled: commands appended as records, cut (sealed
//! and spooled) when due, and the cut recorded in the checkpoint.

use super::checkpoint::Checkpoints;
use super::spool::{Spool, SpoolError};
use super::DaemonError;
use crate::aof::{encode_record, seal_segment, SegmentPlace};
use crate::backup::layout::segment_name;
use crate::command::Command;
use crate::data_key::DataKey;
use crate::keyring::Keyring;
use crate::sealer::SealOptions;
use crate::signing::Signer;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Segmenter {
    pub generation: String,
    source: String,
    dek: DataKey,
    ring: Keyring,
    signer: Arc<Signer>,
    /// The link of the last segment cut (the next one names it).
    prev: [u8; 32],
    last_time_ms: u64,
    pub buf: Vec<u8>,
    from: u64,
    to: u64,
    first_at: Option<Instant>,
    has_writes: bool,
}

impl Segmenter {
    /// A segment starting after `offset` (following the segment whose link is
    /// `prev`), sealed with the session's key and signed by `signer`.
    pub fn new(
        source: &str,
        generation: &str,
        offset: u64,
        prev: [u8; 32],
        dek: DataKey,
        ring: Keyring,
        signer: Arc<Signer>,
    ) -> Self {
        Segmenter {
            generation: generation.into(),
            source: source.into(),
            dek,
            ring,
            signer,
            prev,
            last_time_ms: 0,
            buf: Vec::with_capacity(64 << 10),
            from: offset,
            to: offset,
            first_at: None,
            has_writes: false,
        }
    }

    pub fn add(&mut self, cmd: &Command) {
        encode_record(&mut self.buf, cmd);
        self.to = cmd.offset;
        self.last_time_ms = cmd.time_ms;
        self.first_at.get_or_insert_with(Instant::now);
        if !cmd.is_keepalive() {
            self.has_writes = true;
        }
    }

    /// Whether anything but keepalives waits to be cut.
    pub fn has_writes(&self) -> bool {
        self.has_writes
    }

    /// Due: writes waiting for the cut interval, or only keepalives for a minute.
    pub fn due(&self, interval: Duration, max_bytes: usize) -> bool {
        let age = self.first_at.map(|t| t.elapsed()).unwrap_or_default();
        self.buf.len() >= max_bytes
            || (self.has_writes && age >= interval)
            || (!self.buf.is_empty() && age >= Duration::from_secs(60))
    }

    /// Seals what is buffered into the spool and records it in the checkpoint.
    pub async fn cut(
        &mut self,
        name: &str,
        seal: &SealOptions,
        spool: &Spool,
        checkpoints: &Checkpoints,
    ) -> Result<(), DaemonError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let segment = segment_name(self.from, self.to);
        let place = SegmentPlace {
            source: &self.source,
            generation: &self.generation,
            name: &segment,
            from: self.from,
            to: self.to,
        };
        let (sealed, link) = seal_segment(
            &self.buf,
            &place,
            self.prev,
            self.last_time_ms,
            &crate::aof::SessionKeys {
                dek: &self.dek,
                keyring: &self.ring,
                signer: &self.signer,
            },
            seal,
        )
        .await
        .map_err(|e| DaemonError::Lost(format!("sealing segment {segment}: {e}")))?;
        match spool.push(&self.generation, &segment, self.to, &sealed) {
            Ok(()) => {}
            Err(e @ SpoolError::Full { .. }) => return Err(DaemonError::SpoolFull(e)),
            Err(e) => return Err(DaemonError::Spool(e)),
        }
        let to = self.to;
        checkpoints.update(name, &self.generation, |cp| {
            cp.spooled = to;
            cp.link = Some(hex::encode(link));
        })?;
        self.prev = link;
        self.buf.clear();
        self.from = self.to;
        self.first_at = None;
        self.has_writes = false;
        Ok(())
    }
}
