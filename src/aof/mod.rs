//! AOF segments: the replication command stream after a generation's base
//! snapshot, cut into sealed objects (named by `backup::layout::segment_name`:
//! `from` is the replication offset before the segment's first command, `to` the
//! offset after its last).
//!
//! Plaintext: records of `offset after (u64 LE) | receive time, Unix ms (u64 LE)
//! | length (u32 LE) | the command as RESP`. Each segment carries its own keyring
//! in the header (a daemon session's data key wrapped by the KEK), so a daemon
//! that restarts with only the public KEK can go on writing segments.

use crate::command::Command;
use crate::data_key::DataKey;
use crate::format::{FormatError, ObjectKind};
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::opener::{Opener, RawHeader};
use crate::sealer::{ObjectSpec, SealOptions, Sealer};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum AofError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{0}")]
    Invalid(String),
}

/// Appends one command as a record to a segment's plaintext.
pub fn encode_record(buf: &mut Vec<u8>, cmd: &Command) {
    let resp = crate::resp::encode_command(&cmd.args);
    buf.extend_from_slice(&cmd.offset.to_le_bytes());
    buf.extend_from_slice(&cmd.time_ms.to_le_bytes());
    buf.extend_from_slice(&(resp.len() as u32).to_le_bytes());
    buf.extend_from_slice(&resp);
}

/// The commands of a segment's plaintext.
pub fn decode_records(plain: &[u8], label: &str) -> Result<Vec<Command>, AofError> {
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
        let args = crate::resp::decode_command(&p[20..20 + len])
            .ok_or_else(|| bad("a record is not a RESP command"))?;
        out.push(Command {
            offset,
            time_ms,
            args,
        });
        p = &p[20 + len..];
    }
    Ok(out)
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

/// How many unwraps may fail in one run before no more are tried: storage
/// chooses the keyrings in segment headers, and must not get to use the
/// private key as an oracle.
pub const MAX_UNWRAP_FAILURES: u32 = 3;

/// Unwrapped session keys by data key id (each unwrapped once), and the
/// unwraps that failed in this run.
#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<String, DataKey>,
    failures: u32,
}

impl KeyCache {
    pub fn new() -> Self {
        Self::default()
    }
}

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
    if !keys.keys.contains_key(&id) {
        if keys.failures >= MAX_UNWRAP_FAILURES {
            return Err(AofError::Invalid(format!(
                "segment {label}: its key is not unwrapped: {MAX_UNWRAP_FAILURES} unwraps failed already in this run (the private key is not tried on what storage offers without end)"
            )));
        }
        let ring =
            Keyring::from_json(&h.keyring, label).map_err(|e| AofError::Invalid(e.to_string()))?;
        let dek = match ring.unwrap(kek, label).await {
            Ok(dek) => dek,
            Err(e) => {
                // Only a use of the private key counts (not a keyring that
                // names another KEK, which is refused without one).
                if matches!(e, crate::keyring::KeyringError::Kek { .. }) {
                    keys.failures += 1;
                }
                return Err(AofError::Invalid(e.to_string()));
            }
        };
        keys.keys.insert(id.clone(), dek);
    }
    let dek = &keys.keys[&id];
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
    fn records_round_trip() {
        let mut buf = vec![];
        let cmds = [
            Command {
                args: vec![b"SELECT".to_vec(), b"0".to_vec()],
                offset: 100,
                time_ms: 5,
            },
            Command {
                args: vec![b"SET".to_vec(), b"k\r\n".to_vec(), vec![0, 255, 10]],
                offset: 140,
                time_ms: 6,
            },
        ];
        encode_record(&mut buf, &cmds[0]);
        encode_record(&mut buf, &cmds[1]);
        let r = decode_records(&buf, "t").unwrap();
        assert_eq!(r, cmds);
        assert!(decode_records(&buf[..buf.len() - 1], "t").is_err());
    }
}
