//! The sealing writer: plaintext in, a sealed object out, chunks compressed and
//! encrypted on every core while the output stays in order. Memory is bounded by
//! `parallelism + 1` chunks, whatever the object's size.

use crate::data_key::DataKey;
use crate::format::{
    seal_chunk_into, Compression, FormatError, Header, ObjectKind, CHUNK_OVERHEAD,
    DEFAULT_CHUNK_SIZE, FOOTER_MAGIC, HEADER_MAC_LEN, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, SALT_LEN,
};
use aes_gcm::{Aes256Gcm, KeyInit};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How objects are cut and compressed.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// zstd level; None stores chunks uncompressed.
    pub zstd_level: Option<i32>,
    /// Chunks sealed at once (defaults to the number of cores).
    pub parallelism: usize,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: Some(1),
            parallelism: default_parallelism(),
        }
    }
}

pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// What an object is, for its header.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    pub kind: ObjectKind,
    pub generation: String,
    pub name: String,
    /// A keyring to carry in the header (standalone files); empty for backups.
    pub embedded_keyring: Vec<u8>,
    /// The writer's signed statement for the header (segments); empty otherwise.
    pub attestation: Vec<u8>,
}

/// What a finished object holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub plaintext_sha256: [u8; 32],
}

pub struct Sealer<W> {
    out: W,
    label: String,
    cipher: Arc<Aes256Gcm>,
    aad: [u8; HEADER_MAC_LEN],
    chunk_size: usize,
    level: Option<i32>,
    parallelism: usize,
    buf: Vec<u8>,
    next_index: u64,
    inflight: VecDeque<JoinHandle<(Vec<u8>, Vec<u8>)>>,
    /// Spent buffers (plaintext chunks, sealed frames) for reuse: the allocator
    /// sees no churn, and memory stays at a few chunks however long the stream.
    spare: Vec<Vec<u8>>,
    frame_lens: Vec<u32>,
    /// The plaintext digest as it goes, or the one the caller computed.
    sha: Result<Sha256, [u8; 32]>,
    plaintext_bytes: u64,
    stored_bytes: u64,
}

impl<W: AsyncWrite + Unpin> Sealer<W> {
    /// Writes the header and returns a sealer ready for plaintext.
    pub async fn new(
        out: W,
        spec: ObjectSpec,
        dek: &DataKey,
        opts: &SealOptions,
    ) -> Result<Self, FormatError> {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::with_salt(out, spec, dek, opts, salt).await
    }

    /// As `new`, with a caller-chosen salt. Only for test vectors: a salt must
    /// never repeat under one data key.
    pub async fn with_salt(
        mut out: W,
        spec: ObjectSpec,
        dek: &DataKey,
        opts: &SealOptions,
        salt: [u8; SALT_LEN],
    ) -> Result<Self, FormatError> {
        let label = spec.name.clone();
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&opts.chunk_size) {
            return Err(FormatError::MalformedHeader(
                label,
                format!("chunk size {} out of range", opts.chunk_size),
            ));
        }
        let header = Header {
            kind: spec.kind,
            compression: if opts.zstd_level.is_some() {
                Compression::Zstd
            } else {
                Compression::None
            },
            chunk_size: opts.chunk_size,
            data_key_id: dek.id(),
            salt,
            generation: spec.generation,
            object_name: spec.name,
            keyring: spec.embedded_keyring,
            attestation: spec.attestation,
        };
        let bytes = header.encode(dek);
        let aad: [u8; HEADER_MAC_LEN] = bytes[bytes.len() - HEADER_MAC_LEN..].try_into().unwrap();
        let io = |source| FormatError::Io {
            label: label.clone(),
            source,
        };
        out.write_all(&bytes).await.map_err(io)?;
        let key = dek.chunk_key(&salt);
        let cipher = Arc::new(Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key"));
        Ok(Sealer {
            out,
            stored_bytes: bytes.len() as u64,
            label,
            cipher,
            aad,
            chunk_size: opts.chunk_size as usize,
            level: opts.zstd_level,
            parallelism: opts.parallelism.max(1),
            buf: Vec::with_capacity(opts.chunk_size as usize),
            next_index: 0,
            inflight: VecDeque::new(),
            spare: Vec::new(),
            frame_lens: Vec::new(),
            sha: Ok(Sha256::new()),
            plaintext_bytes: 0,
        })
    }

    /// For a caller that already hashed the whole plaintext (a segment's
    /// signed statement names its digest): not hashed twice; the summary
    /// reports `digest`.
    pub fn with_known_digest(mut self, digest: [u8; 32]) -> Self {
        self.sha = Err(digest);
        self
    }

    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), FormatError> {
        if let Ok(sha) = &mut self.sha {
            sha.update(data);
        }
        self.plaintext_bytes += data.len() as u64;
        while !data.is_empty() {
            if self.buf.len() == self.chunk_size {
                // More data follows, so this full chunk is not the last one.
                let fresh = self.spare_buf();
                let chunk = std::mem::replace(&mut self.buf, fresh);
                self.dispatch(chunk, false).await?;
            }
            let take = (self.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the last chunk, writes the footer and flushes. The object is complete
    /// only after this returns.
    pub async fn finish(mut self) -> Result<(SealSummary, W), FormatError> {
        let last = std::mem::take(&mut self.buf);
        self.dispatch(last, true).await?;
        while let Some(h) = self.inflight.pop_front() {
            let done = crate::format::joined(h.await, &self.label)?;
            self.emit(done).await?;
        }
        let mut footer = Vec::with_capacity(self.frame_lens.len() * 4 + 16);
        for l in &self.frame_lens {
            footer.extend_from_slice(&l.to_be_bytes());
        }
        footer.extend_from_slice(&(self.frame_lens.len() as u64).to_be_bytes());
        footer.extend_from_slice(&FOOTER_MAGIC);
        let label = self.label.clone();
        let io = |source| FormatError::Io { label, source };
        self.out.write_all(&footer).await.map_err(io.clone())?;
        self.out.shutdown().await.map_err(io)?;
        self.stored_bytes += footer.len() as u64;
        let summary = SealSummary {
            plaintext_bytes: self.plaintext_bytes,
            stored_bytes: self.stored_bytes,
            chunks: self.next_index,
            plaintext_sha256: match self.sha {
                Ok(sha) => sha.finalize().into(),
                Err(known) => known,
            },
        };
        Ok((summary, self.out))
    }

    async fn dispatch(&mut self, chunk: Vec<u8>, last: bool) -> Result<(), FormatError> {
        if self.inflight.len() >= self.parallelism {
            let done = self.inflight.pop_front().unwrap();
            let done = crate::format::joined(done.await, &self.label)?;
            self.emit(done).await?;
        }
        let index = u32::try_from(self.next_index)
            .map_err(|_| FormatError::TooManyChunks(self.label.clone()))?;
        self.next_index += 1;
        let cipher = self.cipher.clone();
        let aad = self.aad;
        let level = self.level;
        let mut frame = self.spare_buf();
        self.inflight
            .push_back(tokio::task::spawn_blocking(move || {
                seal_chunk_into(&cipher, &aad, index, last, &chunk, level, &mut frame);
                (frame, chunk)
            }));
        Ok(())
    }

    fn spare_buf(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.chunk_size))
    }

    /// Writes a sealed frame and keeps both buffers for reuse.
    async fn emit(&mut self, (frame, mut chunk): (Vec<u8>, Vec<u8>)) -> Result<(), FormatError> {
        chunk.clear();
        self.spare.push(chunk);
        debug_assert!(frame.len() as u32 >= 4 + CHUNK_OVERHEAD);
        let field = u32::from_be_bytes(frame[..4].try_into().unwrap());
        self.frame_lens.push(field);
        self.stored_bytes += frame.len() as u64;
        let r = self
            .out
            .write_all(&frame)
            .await
            .map_err(|source| FormatError::Io {
                label: self.label.clone(),
                source,
            });
        self.spare.push(frame);
        r
    }
}

impl<W> Sealer<W> {
    /// The output, unfinished (to abort an upload after a failure).
    pub fn into_inner(self) -> W {
        self.out
    }
}
