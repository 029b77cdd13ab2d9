//! One chunk: compress (zstd, or raw where that does not pay), then AES-256-GCM
//! with the STREAM nonce (chunk counter + last-chunk flag) and the header tag as
//! associated data.
//!
//! Frame: u32 BE (bit 31 = last-chunk flag, bits 0..31 = sealed length), then the
//! sealed bytes: ciphertext of (encoding byte || body), then the 16-byte tag.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use std::cell::RefCell;

pub const TAG_LEN: usize = 16;
pub const FRAME_LEN_BYTES: usize = 4;
pub const LAST_FLAG: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
}

/// 12-byte nonce: 7 zero bytes, the chunk index (u32 BE), and 1 for the last chunk.
/// Zero prefix is safe: every object has its own key (salted HKDF).
pub fn nonce(index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

thread_local! {
    // zstd contexts are costly to build; each worker thread keeps one per level.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Seals one chunk into a complete frame (length prefix included).
/// `level` None stores the chunk raw.
pub fn seal_chunk(
    cipher: &Aes256Gcm,
    aad: &[u8],
    index: u32,
    last: bool,
    plaintext: &[u8],
    level: Option<i32>,
) -> Vec<u8> {
    let mut out = Vec::new();
    seal_chunk_into(cipher, aad, index, last, plaintext, level, &mut out);
    out
}

/// As `seal_chunk`, into `out` (cleared first), so callers can reuse buffers.
pub fn seal_chunk_into(
    cipher: &Aes256Gcm,
    aad: &[u8],
    index: u32,
    last: bool,
    plaintext: &[u8],
    level: Option<i32>,
    out: &mut Vec<u8>,
) {
    const BODY: usize = FRAME_LEN_BYTES + 1;
    let bound = match level {
        Some(_) => zstd::zstd_safe::compress_bound(plaintext.len()),
        None => plaintext.len(),
    };
    out.clear();
    out.reserve(BODY + bound.max(plaintext.len()) + TAG_LEN);
    out.resize(BODY, 0);
    let mut encoding = Encoding::Raw;
    if let (Some(level), false) = (level, plaintext.is_empty()) {
        out.resize(BODY + bound, 0);
        let n = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((
                    level,
                    zstd::bulk::Compressor::new(level).expect("zstd context"),
                ));
            }
            let comp = &mut c.as_mut().unwrap().1;
            comp.compress_to_buffer(plaintext, &mut out[BODY..]).ok()
        });
        match n {
            Some(n) if n < plaintext.len() => {
                out.truncate(BODY + n);
                encoding = Encoding::Zstd;
            }
            _ => out.truncate(BODY),
        }
    }
    if encoding == Encoding::Raw {
        out.extend_from_slice(plaintext);
    }
    out[FRAME_LEN_BYTES] = encoding as u8;
    let n = nonce(index, last);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&n), aad, &mut out[FRAME_LEN_BYTES..])
        .expect("AES-GCM accepts chunks up to 64 MiB");
    out.extend_from_slice(&tag);
    let sealed_len = (out.len() - FRAME_LEN_BYTES) as u32;
    let field = sealed_len | if last { LAST_FLAG } else { 0 };
    out[..FRAME_LEN_BYTES].copy_from_slice(&field.to_be_bytes());
}

/// Why a chunk did not open; the caller adds the object and chunk index.
#[derive(Debug)]
pub enum ChunkOpenError {
    Auth,
    Invalid(String),
}

/// Opens the sealed bytes of one chunk (without the length prefix), in place.
/// Returns the plaintext; checks it against the chunk size rules.
pub fn open_chunk(
    cipher: &Aes256Gcm,
    aad: &[u8],
    index: u32,
    last: bool,
    mut sealed: Vec<u8>,
    chunk_size: u32,
    zstd_allowed: bool,
) -> Result<bytes::Bytes, ChunkOpenError> {
    if sealed.len() < 1 + TAG_LEN {
        return Err(ChunkOpenError::Invalid(
            "shorter than a sealed chunk".into(),
        ));
    }
    let tag_at = sealed.len() - TAG_LEN;
    let tag = Tag::clone_from_slice(&sealed[tag_at..]);
    sealed.truncate(tag_at);
    let n = nonce(index, last);
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&n), aad, &mut sealed, &tag)
        .map_err(|_| ChunkOpenError::Auth)?;
    let plain: bytes::Bytes = match sealed[0] {
        0 => bytes::Bytes::from(sealed).slice(1..),
        1 if zstd_allowed => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                let d =
                    d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
                d.decompress(&sealed[1..], chunk_size as usize)
            })
            .map_err(|e| ChunkOpenError::Invalid(format!("zstd: {e}")))?
            .into(),
        e => {
            return Err(ChunkOpenError::Invalid(format!(
                "unknown chunk encoding {e}"
            )))
        }
    };
    // Every chunk but the last holds exactly chunk_size bytes, so plaintext offsets
    // are computable (ranged reads).
    if plain.len() > chunk_size as usize || (!last && plain.len() != chunk_size as usize) {
        return Err(ChunkOpenError::Invalid(format!(
            "holds {} plaintext bytes, chunk size is {chunk_size}",
            plain.len()
        )));
    }
    Ok(plain)
}
