//! The opener: a sealed object in, plaintext out in order, chunks authenticated and
//! decompressed on every core. Nothing unauthenticated is ever returned.

use crate::data_key::DataKey;
use crate::format::chunk_frame::{ChunkOpenError, LAST_FLAG};
use crate::format::{
    open_chunk, Compression, FormatError, Header, CHUNK_OVERHEAD, FOOTER_MAGIC, HEADER_MAC_LEN,
    PREFIX_LEN,
};
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// A header read from the start of an object, not yet authenticated.
#[derive(Debug, Clone)]
pub struct RawHeader {
    pub bytes: Vec<u8>,
    pub header: Header,
}

impl RawHeader {
    /// Reads and parses the header. `label` names the object in every error.
    pub async fn read<R: AsyncRead + Unpin>(
        input: &mut R,
        label: &str,
    ) -> Result<Self, FormatError> {
        let mut prefix = [0u8; PREFIX_LEN];
        read_exact_or(
            input,
            &mut prefix,
            || FormatError::MalformedHeader(label.into(), "object is shorter than a header".into()),
            label,
        )
        .await?;
        let len = Header::parse_prefix(&prefix, label)? as usize;
        let mut bytes = vec![0u8; len];
        bytes[..PREFIX_LEN].copy_from_slice(&prefix);
        read_exact_or(
            input,
            &mut bytes[PREFIX_LEN..],
            || FormatError::MalformedHeader(label.into(), "object ends inside its header".into()),
            label,
        )
        .await?;
        let (header, _) = Header::parse(&bytes, label)?;
        Ok(RawHeader { bytes, header })
    }
}

type Pending = (u64, JoinHandle<Result<Bytes, ChunkOpenError>>);

pub struct Opener<R> {
    input: R,
    label: Arc<str>,
    cipher: Arc<Aes256Gcm>,
    aad: [u8; HEADER_MAC_LEN],
    chunk_size: u32,
    zstd_allowed: bool,
    parallelism: usize,
    next_read: u64,
    seen_last: bool,
    inflight: VecDeque<Pending>,
    frame_lens: Vec<u32>,
    footer_error: Option<FormatError>,
    plaintext_bytes: u64,
}

impl<R: AsyncRead + Unpin> Opener<R> {
    /// Authenticates the header with the data key and prepares to open chunks.
    pub fn new(
        input: R,
        raw: &RawHeader,
        dek: &DataKey,
        label: &str,
        parallelism: usize,
    ) -> Result<Self, FormatError> {
        let h = &raw.header;
        if h.data_key_id != dek.id() {
            // Another key's object, or a flipped bit in the id: refused either
            // way (the header must name the very key it is opened with).
            return Err(FormatError::WrongDataKey {
                label: label.into(),
                object_key: hex::encode(h.data_key_id),
                keyring_key: hex::encode(dek.id()),
            });
        }
        Header::verify(&raw.bytes, &h.salt, dek, label)?;
        let key = dek.chunk_key(&h.salt);
        let cipher = Arc::new(Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key"));
        Ok(Opener {
            input,
            label: label.into(),
            cipher,
            aad: raw.bytes[raw.bytes.len() - HEADER_MAC_LEN..]
                .try_into()
                .unwrap(),
            chunk_size: h.chunk_size,
            zstd_allowed: h.compression == Compression::Zstd,
            parallelism: parallelism.max(1),
            next_read: 0,
            seen_last: false,
            inflight: VecDeque::new(),
            frame_lens: Vec::new(),
            footer_error: None,
            plaintext_bytes: 0,
        })
    }

    /// The next chunk of plaintext, in order; None once the final chunk was
    /// delivered and the footer checked.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FormatError> {
        while !self.seen_last && self.inflight.len() < self.parallelism {
            self.read_frame().await?;
        }
        let Some((index, handle)) = self.inflight.pop_front() else {
            return match self.footer_error.take() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        };
        let plain = crate::format::joined(handle.await, &self.label)?.map_err(|e| match e {
            ChunkOpenError::Auth => FormatError::ChunkAuth {
                label: self.label.to_string(),
                index,
            },
            ChunkOpenError::Invalid(reason) => FormatError::BadChunk {
                label: self.label.to_string(),
                index,
                reason,
            },
        })?;
        self.plaintext_bytes += plain.len() as u64;
        Ok(Some(plain))
    }

    /// Plaintext bytes delivered so far.
    pub fn plaintext_bytes(&self) -> u64 {
        self.plaintext_bytes
    }

    /// The plaintext as a stream of chunks, for `tokio_util::io::StreamReader`.
    pub fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send
    where
        R: Send + 'static,
    {
        futures::stream::try_unfold(self, |mut o| async move {
            match o.next_chunk().await {
                Ok(Some(b)) => Ok(Some((b, o))),
                Ok(None) => Ok(None),
                Err(e) => Err(std::io::Error::other(e)),
            }
        })
    }

    async fn read_frame(&mut self) -> Result<(), FormatError> {
        let index = self.next_read;
        let label = self.label.to_string();
        let mut len = [0u8; 4];
        let got = read_full(&mut self.input, &mut len, &label).await?;
        if got == 0 {
            return Err(FormatError::Truncated {
                label,
                chunks: index,
            });
        }
        if got < 4 {
            return Err(FormatError::TruncatedChunk { label, index });
        }
        let field = u32::from_be_bytes(len);
        let last = field & LAST_FLAG != 0;
        let sealed_len = field & !LAST_FLAG;
        if sealed_len < CHUNK_OVERHEAD || sealed_len > self.chunk_size + CHUNK_OVERHEAD {
            return Err(FormatError::BadChunk {
                label,
                index,
                reason: format!("frame length {sealed_len} out of range"),
            });
        }
        let idx32 = u32::try_from(index).map_err(|_| FormatError::TooManyChunks(label.clone()))?;
        let mut sealed = vec![0u8; sealed_len as usize];
        if read_full(&mut self.input, &mut sealed, &label).await? < sealed.len() {
            return Err(FormatError::TruncatedChunk { label, index });
        }
        self.frame_lens.push(field);
        self.next_read += 1;
        let (cipher, aad, cs, z) = (
            self.cipher.clone(),
            self.aad,
            self.chunk_size,
            self.zstd_allowed,
        );
        self.inflight.push_back((
            index,
            tokio::task::spawn_blocking(move || {
                open_chunk(&cipher, &aad, idx32, last, sealed, cs, z)
            }),
        ));
        if last {
            self.seen_last = true;
            // Reported after the chunks, which are authenticated on their own.
            self.footer_error = self.check_footer().await.err();
        }
        Ok(())
    }

    /// The footer must repeat the frame lengths exactly, and nothing may follow it.
    async fn check_footer(&mut self) -> Result<(), FormatError> {
        let chunks = self.next_read;
        let label = self.label.to_string();
        let bad = |reason: &str| FormatError::BadFooter {
            label: label.clone(),
            chunks,
            reason: reason.into(),
        };
        let mut footer = vec![0u8; self.frame_lens.len() * 4 + 16];
        if read_full(&mut self.input, &mut footer, &label).await? < footer.len() {
            return Err(bad("object ends inside its footer"));
        }
        let (lens, tail) = footer.split_at(footer.len() - 16);
        let expect: Vec<u8> = self
            .frame_lens
            .iter()
            .flat_map(|l| l.to_be_bytes())
            .collect();
        if lens != expect.as_slice()
            || tail[..8] != (self.frame_lens.len() as u64).to_be_bytes()
            || tail[8..] != FOOTER_MAGIC
        {
            return Err(bad("it does not match the chunks"));
        }
        let mut extra = [0u8; 1];
        if read_full(&mut self.input, &mut extra, &label).await? != 0 {
            return Err(bad("bytes follow the footer"));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
async fn read_full<R: AsyncRead + Unpin>(
    input: &mut R,
    buf: &mut [u8],
    label: &str,
) -> Result<usize, FormatError> {
    let mut got = 0;
    while got < buf.len() {
        let n = input
            .read(&mut buf[got..])
            .await
            .map_err(|source| FormatError::Io {
                label: label.into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

async fn read_exact_or<R: AsyncRead + Unpin>(
    input: &mut R,
    buf: &mut [u8],
    short: impl FnOnce() -> FormatError,
    label: &str,
) -> Result<(), FormatError> {
    if read_full(input, buf, label).await? < buf.len() {
        return Err(short());
    }
    Ok(())
}
