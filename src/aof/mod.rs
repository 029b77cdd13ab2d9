//! AOF segments: the replication command stream after a generation's base
//! snapshot, cut into sealed objects `aof/<from>-<to>.aof.rv` (offsets zero-padded
//! to 20 digits, so names sort in stream order). `from` is the replication offset
//! before the segment's first command, `to` the offset after its last.
//!
//! Plaintext: records of `offset after (u64 LE) | receive time, Unix ms (u64 LE)
//! | length (u32 LE) | the command as RESP`. Each segment carries its own keyring
//! in the header (a daemon session's data key wrapped by the KEK), so a daemon
//! that restarts with only the public KEK can go on writing segments.

use crate::format::{FormatError, ObjectKind};
use crate::kek::Kek;
use crate::keyring::{DataKey, Keyring};
use crate::opener::{Opener, RawHeader};
use crate::sealer::{ObjectSpec, SealOptions, Sealer};
use std::collections::HashMap;

pub const AOF_DIR: &str = "aof";

#[derive(Debug, thiserror::Error)]
pub enum AofError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{0}")]
    Invalid(String),
}

/// `00000000000000001234-00000000000000005678.aof.rv`
pub fn segment_name(from: u64, to: u64) -> String {
    format!("{from:020}-{to:020}.aof.rv")
}

/// The offsets in a segment's name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".aof.rv")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// One command of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The replication offset just after this command.
    pub offset: u64,
    /// When redvault received it (Unix ms).
    pub time_ms: u64,
    pub args: Vec<Vec<u8>>,
}

impl Record {
    /// PING and REPLCONF keep the link alive; they are stored (offsets stay
    /// contiguous) but not replayed.
    pub fn is_replayable(&self) -> bool {
        let Some(name) = self.args.first() else {
            return false;
        };
        !(name.eq_ignore_ascii_case(b"PING") || name.eq_ignore_ascii_case(b"REPLCONF"))
    }
}

/// Appends one record to a segment's plaintext.
pub fn encode_record(buf: &mut Vec<u8>, offset: u64, time_ms: u64, args: &[Vec<u8>]) {
    let resp = crate::resp::encode_command(args);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(&(resp.len() as u32).to_le_bytes());
    buf.extend_from_slice(&resp);
}

/// The records of a segment's plaintext.
pub fn decode_records(plain: &[u8], label: &str) -> Result<Vec<Record>, AofError> {
    let bad = |why: &str| AofError::Invalid(format!("segment {label}: {why}"));
    let mut out = vec![];
    let mut p = plain;
    while !p.is_empty() {
        if p.len() < 20 {
            return Err(bad("a record is cut short"));
        }
        let offset = u64::from_le_bytes(p[..8].try_into().unwrap());
        let time_ms = u64::from_le_bytes(p[8..16].try_into().unwrap());
        let len = u32::from_le_bytes(p[16..20].try_into().unwrap()) as usize;
        if p.len() < 20 + len {
            return Err(bad("a record is cut short"));
        }
        let args = parse_resp_array(&p[20..20 + len])
            .ok_or_else(|| bad("a record is not a RESP command"))?;
        out.push(Record {
            offset,
            time_ms,
            args,
        });
        p = &p[20 + len..];
    }
    Ok(out)
}

fn parse_resp_array(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn line<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let i = memchr::memchr(b'\n', b)?;
        let l = b.get(..i)?.strip_suffix(b"\r")?;
        *b = &b[i + 1..];
        Some(l)
    }
    let n: usize = std::str::from_utf8(line(&mut b)?.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let len: usize = std::str::from_utf8(line(&mut b)?.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if b.len() < len + 2 || &b[len..len + 2] != b"\r\n" {
            return None;
        }
        args.push(b[..len].to_vec());
        b = &b[len + 2..];
    }
    b.is_empty().then_some(args)
}

/// Seals a segment's plaintext, carrying `keyring` (the session's) in its header.
pub async fn seal_segment(
    plain: &[u8],
    generation: &str,
    name: &str,
    dek: &DataKey,
    keyring: &Keyring,
    opts: &SealOptions,
) -> Result<Vec<u8>, AofError> {
    let spec = ObjectSpec {
        kind: ObjectKind::Aof,
        generation: generation.into(),
        name: name.into(),
        embedded_keyring: keyring.to_json(),
    };
    let mut sealer =
        Sealer::new(Vec::with_capacity(plain.len() / 2 + 1024), spec, dek, opts).await?;
    sealer.write(plain).await?;
    let (_, out) = sealer.finish().await?;
    Ok(out)
}

/// Unwrapped session keys by data key id, so each is unwrapped once.
pub type KeyCache = HashMap<String, DataKey>;

/// Opens a sealed segment: its own keyring unwrapped by `kek`, the header
/// checked to name this generation and object, every chunk authenticated.
pub async fn open_segment(
    sealed: &[u8],
    generation: &str,
    name: &str,
    kek: &dyn Kek,
    keys: &mut KeyCache,
    label: &str,
) -> Result<Vec<u8>, AofError> {
    let mut input = sealed;
    let raw = RawHeader::read(&mut input, label).await?;
    let h = &raw.header;
    if h.kind != ObjectKind::Aof || h.generation != generation || h.object_name != name {
        return Err(AofError::Invalid(format!(
            "segment {label}: its header names {:?} {}/{}, not this place",
            h.kind, h.generation, h.object_name
        )));
    }
    let id = hex::encode(h.data_key_id);
    if !keys.contains_key(&id) {
        let ring =
            Keyring::from_json(&h.keyring, label).map_err(|e| AofError::Invalid(e.to_string()))?;
        let dek = ring
            .unwrap(kek, label)
            .await
            .map_err(|e| AofError::Invalid(e.to_string()))?;
        keys.insert(id.clone(), dek);
    }
    let dek = &keys[&id];
    let mut opener = Opener::new(input, &raw, dek, label, 2)?;
    let mut out = Vec::with_capacity(sealed.len() * 2);
    while let Some(chunk) = opener.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_names_sort() {
        let mut buf = vec![];
        let cmds = [
            vec![b"SELECT".to_vec(), b"0".to_vec()],
            vec![b"SET".to_vec(), b"k\r\n".to_vec(), vec![0, 255, 10]],
        ];
        encode_record(&mut buf, 100, 5, &cmds[0]);
        encode_record(&mut buf, 140, 6, &cmds[1]);
        let r = decode_records(&buf, "t").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].args, cmds[1]);
        assert_eq!((r[1].offset, r[1].time_ms), (140, 6));
        assert!(decode_records(&buf[..buf.len() - 1], "t").is_err());
        assert!(segment_name(9, 10) < segment_name(10, 11));
        assert_eq!(parse_segment_name(&segment_name(7, 99)), Some((7, 99)));
    }
}
