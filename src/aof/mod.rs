//! AOF segments: the replication command stream after a generation's base
//! snapshot, cut into sealed objects (named by `backup::layout::segment_name`:
//! `from` is the replication offset before the segment's first command, `to` the
//! offset after its last).
//!
//! Plaintext: records of `offset after (u64 LE) | receive time, Unix ms (u64 LE)
//! | length (u32 LE) | the command as RESP`. Each segment carries its own keyring
//! in the header (a daemon session's data key wrapped by the KEK), so a daemon
//! that restarts with only the public KEK can go on writing segments.

pub mod chain;

use crate::command::Command;
use crate::data_key::DataKey;
use crate::format::{FormatError, ObjectKind};
use crate::kek::Kek;
use crate::keyring::Keyring;
use crate::opener::{Opener, RawHeader};
use crate::sealer::{ObjectSpec, SealOptions, Sealer};
use crate::signing::{Signer, Trust};
use chain::{Attested, Statement};
use sha2::{Digest, Sha256};
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

/// Where a segment belongs and what it follows: what its signed statement
/// says besides its own digest.
#[derive(Debug, Clone)]
pub struct SegmentPlace<'a> {
    pub source: &'a str,
    pub generation: &'a str,
    /// The object name (`backup::layout::segment_name(from, to)`).
    pub name: &'a str,
    pub from: u64,
    pub to: u64,
}

/// What a writing session seals and signs its segments with.
pub struct SessionKeys<'a> {
    pub dek: &'a DataKey,
    /// The session's data key wrapped by the KEK, carried in each header.
    pub keyring: &'a Keyring,
    pub signer: &'a Signer,
}

/// Seals a segment's plaintext, carrying the session's keyring and the
/// signed statement in its header. Returns the object and its link (which
/// the next segment names).
pub async fn seal_segment(
    plain: &[u8],
    place: &SegmentPlace<'_>,
    prev: [u8; 32],
    last_time_ms: u64,
    keys: &SessionKeys<'_>,
    opts: &SealOptions,
) -> Result<(Vec<u8>, [u8; 32]), AofError> {
    let SessionKeys {
        dek,
        keyring,
        signer,
    } = *keys;
    let statement = Statement {
        source: place.source.into(),
        generation: place.generation.into(),
        from: place.from,
        to: place.to,
        prev,
        plaintext_sha256: Sha256::digest(plain).into(),
        plaintext_bytes: plain.len() as u64,
        data_key_id: dek.id(),
        last_time_ms,
        signer: signer.id_bytes(),
    };
    let attestation = statement
        .sign(signer)
        .await
        .map_err(|e| AofError::Invalid(e.to_string()))?;
    let link = chain::link_of(&attestation);
    let spec = ObjectSpec {
        kind: ObjectKind::Aof,
        generation: place.generation.into(),
        name: place.name.into(),
        embedded_keyring: keyring.to_json(),
        attestation,
    };
    let mut sealer = Sealer::new(Vec::with_capacity(plain.len() / 2 + 1024), spec, dek, opts)
        .await?
        .with_known_digest(statement.plaintext_sha256);
    sealer.write(plain).await?;
    let (_, out) = sealer.finish().await?;
    Ok((out, link))
}

/// A segment opened: its plaintext, and its verified statement (None for a
/// segment of the older, unsigned format read with `allow_unsigned`).
#[derive(Debug)]
pub struct OpenedSegment {
    pub plain: Vec<u8>,
    pub attested: Option<Attested>,
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

/// A segment's signed statement, from its header alone (nothing is
/// decrypted; the rest of the object need not be fetched): the header
/// checked to name this place and the statement verified against the
/// trusted signers. None for an unsigned (format 1) segment.
pub async fn segment_statement<R: tokio::io::AsyncRead + Unpin>(
    input: &mut R,
    place: &SegmentPlace<'_>,
    trust: &Trust,
    label: &str,
) -> Result<Option<chain::Attested>, AofError> {
    let raw = RawHeader::read(input, label).await?;
    placed_statement(&raw, place, trust, label)
}

/// The header's place and its signed statement, checked: both must name
/// `place`, and the statement must verify against the trusted signers.
fn placed_statement(
    raw: &RawHeader,
    place: &SegmentPlace<'_>,
    trust: &Trust,
    label: &str,
) -> Result<Option<chain::Attested>, AofError> {
    let bad = |why: String| AofError::Invalid(format!("segment {label}: {why}"));
    let h = &raw.header;
    if h.kind != ObjectKind::Aof || h.generation != place.generation || h.object_name != place.name
    {
        return Err(bad(format!(
            "its header names {:?} {}/{}, not this place",
            h.kind, h.generation, h.object_name
        )));
    }
    if h.attestation.is_empty() {
        return Ok(None);
    }
    let a = chain::verify(&h.attestation, trust, label)?;
    let st = &a.statement;
    if st.source != place.source
        || st.generation != place.generation
        || st.from != place.from
        || st.to != place.to
        || st.data_key_id != h.data_key_id
    {
        return Err(bad(format!(
            "its signed statement is for {}/{} offsets {}..{}, not this place",
            st.source, st.generation, st.from, st.to
        )));
    }
    Ok(Some(a))
}

/// Opens a sealed segment: the header checked to name this place, its
/// signed statement verified against the trusted signers and checked to name
/// this place too (before the private key is used at all), its own keyring
/// unwrapped by `kek`, every chunk authenticated, and the plaintext's digest
/// compared with the statement.
pub async fn open_segment(
    sealed: &[u8],
    place: &SegmentPlace<'_>,
    kek: &dyn Kek,
    keys: &mut KeyCache,
    trust: &Trust,
    label: &str,
) -> Result<OpenedSegment, AofError> {
    let bad = |why: String| AofError::Invalid(format!("segment {label}: {why}"));
    let mut input = sealed;
    let raw = RawHeader::read(&mut input, label).await?;
    let h = &raw.header;
    let attested = placed_statement(&raw, place, trust, label)?;
    if attested.is_none() {
        if !trust.allow_unsigned {
            return Err(bad(
                "it is unsigned (written by an older redvault, format 1): refused, since anyone holding the public KEK can write one; --allow-unsigned reads it".into(),
            ));
        }
        tracing::warn!(
            "segment {label} is unsigned (format 1), read since --allow-unsigned is given"
        );
    }
    let id = hex::encode(h.data_key_id);
    if !keys.keys.contains_key(&id) {
        if keys.failures >= MAX_UNWRAP_FAILURES {
            return Err(bad(format!(
                "its key is not unwrapped: {MAX_UNWRAP_FAILURES} unwraps failed already in this run (the private key is not tried on what storage offers without end)"
            )));
        }
        let ring =
            Keyring::from_json(&h.keyring, label).map_err(|e| AofError::Invalid(e.to_string()))?;
        // The keyring must be for the key the header (and its signed
        // statement) names: the private key is never used on a keyring
        // swapped in beside a genuine statement.
        if ring.data_key_id != id {
            return Err(bad(format!(
                "its keyring holds data key {}, its header names {id}",
                ring.data_key_id
            )));
        }
        let dek = match ring.unwrap(kek, label).await {
            Ok(dek) => dek,
            Err(e) => {
                // Only a use of the private key counts (not a keyring that
                // names another KEK, which is refused without one).
                if matches!(
                    e,
                    crate::keyring::KeyringError::Kek { .. }
                        | crate::keyring::KeyringError::IdMismatch(_)
                ) {
                    keys.failures += 1;
                }
                return Err(AofError::Invalid(e.to_string()));
            }
        };
        keys.keys.insert(id.clone(), dek);
    }
    let dek = &keys.keys[&id];
    let mut opener = Opener::new(input, &raw, dek, label, 2)?;
    let mut plain = Vec::with_capacity(sealed.len() * 2);
    while let Some(chunk) = opener.next_chunk().await? {
        plain.extend_from_slice(&chunk);
    }
    if let Some(a) = &attested {
        let sha: [u8; 32] = Sha256::digest(&plain).into();
        if sha != a.statement.plaintext_sha256 || plain.len() as u64 != a.statement.plaintext_bytes
        {
            return Err(bad(
                "its content is not what its signed statement says (digest differs)".into(),
            ));
        }
    }
    Ok(OpenedSegment { plain, attested })
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
