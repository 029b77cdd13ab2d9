//! The sealed object byte format, versions 1 and 2 (2 adds the attestation). docs/FORMAT.md is the specification;
//! this module is its one implementation of the bytes (header, chunk, footer).

pub(crate) mod chunk_frame;
mod header;

pub use chunk_frame::{nonce, open_chunk, seal_chunk, seal_chunk_into, Encoding, TAG_LEN};
pub use header::{Compression, Header, ObjectKind, HEADER_MAC_LEN, PREFIX_LEN};

pub const MAGIC: [u8; 8] = *b"REDVAULT";
/// The newest version: a header with an attestation (a signed statement).
pub const FORMAT_VERSION: u16 = 2;
/// Objects without an attestation are still written as version 1.
pub const FORMAT_V1: u16 = 1;
pub const FOOTER_MAGIC: [u8; 8] = *b"RVINDEX1";
pub const SALT_LEN: usize = 32;
/// Largest header accepted (it may embed a keyring).
pub const MAX_HEADER_LEN: u32 = 1 << 20;
/// Bounds on the plaintext chunk size.
pub const MIN_CHUNK_SIZE: u32 = 1;
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Sealed chunk overhead: encoding byte + GCM tag.
pub const CHUNK_OVERHEAD: u32 = 1 + TAG_LEN as u32;

/// What can be wrong with the bytes of a sealed object. Every variant names the
/// object (by the label its reader was given) and, where one is involved, the chunk.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{0}: not a redvault sealed object (bad magic)")]
    BadMagic(String),
    #[error(
        "{0}: format version {1} is not supported (this redvault reads versions {FORMAT_V1} and {FORMAT_VERSION})"
    )]
    UnsupportedVersion(String, u16),
    #[error("{0}: malformed header: {1}")]
    MalformedHeader(String, String),
    #[error("{0}: header failed authentication (corrupted or tampered)")]
    HeaderAuth(String),
    #[error("{label}: wrong keyring: the object was sealed with data key {object_key}, the keyring holds {keyring_key}")]
    WrongDataKey {
        label: String,
        object_key: String,
        keyring_key: String,
    },
    #[error("{label}: chunk {index}: authentication failed (tampered, reordered, or from another object)")]
    ChunkAuth { label: String, index: u64 },
    #[error("{label}: chunk {index}: {reason}")]
    BadChunk {
        label: String,
        index: u64,
        reason: String,
    },
    #[error("{label}: truncated: the object ends after {chunks} chunk(s) without its final chunk")]
    Truncated { label: String, chunks: u64 },
    #[error("{label}: truncated inside chunk {index}")]
    TruncatedChunk { label: String, index: u64 },
    #[error("{label}: bad footer after chunk {chunks}: {reason}")]
    BadFooter {
        label: String,
        chunks: u64,
        reason: String,
    },
    #[error("{0}: more than 2^32 chunks")]
    TooManyChunks(String),
    #[error("{label}: {source}")]
    Io {
        label: String,
        source: std::io::Error,
    },
    /// A chunk task was cancelled: the runtime is shutting down.
    #[error("{0}: stopped before the chunk was done (the process is ending)")]
    Stopped(String),
}

/// The result of a chunk task (sealing or opening on the blocking pool): its
/// panic goes on as a panic; a cancellation (the runtime shutting down, as
/// when a command fails and exits) is an error, never a second panic.
pub fn joined<T>(r: Result<T, tokio::task::JoinError>, label: &str) -> Result<T, FormatError> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(FormatError::Stopped(label.to_string())),
    }
}
