//! Signed chain heads, `aof/head-<to>.json`: the writer's signed word that a
//! generation's segments reach offset `to` (with the link of the segment that
//! ends there). Written create-only by the daemon from time to time and at a
//! clean stop, so `restore` and `verify` name trailing segments that are
//! missing instead of succeeding with less. A head that does not verify is
//! passed over with a warning (it cannot make a restore fail either).

use super::layout::{head_name, GenerationDir};
use super::BackupError;
use crate::signing::{Domain, SignError, Signer, Trust};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

pub const HEAD_FORMAT: &str = "redvault-head";
pub const HEAD_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub format: String,
    pub version: u32,
    pub source: String,
    pub generation: String,
    /// The offset the segments reach.
    pub to: u64,
    /// Hex of the link of the segment that ends at `to`.
    pub link: String,
    /// Receive time of that segment's last record, Unix ms.
    pub last_time_ms: u64,
    /// When the head was written (RFC 3339).
    pub written: String,
    /// The source's keys per database at an offset at or before `to`
    /// (`fingerprint.rs`), when the daemon could read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<crate::fingerprint::Fingerprint>,
    pub signer: String,
    /// The signature (hex, Ed25519 or ES256) over the document without `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Head {
    pub fn new(
        dir: &GenerationDir,
        to: u64,
        link: [u8; 32],
        last_time_ms: u64,
        signer: &Signer,
    ) -> Self {
        Head {
            format: HEAD_FORMAT.into(),
            version: HEAD_VERSION,
            source: dir.source.clone(),
            generation: dir.stream.clone(),
            to,
            link: hex::encode(link),
            last_time_ms,
            written: crate::text::rfc3339(std::time::SystemTime::now()),
            fingerprint: None,
            signer: signer.id(),
            signature: None,
        }
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut h = self.clone();
        h.signature = None;
        serde_json::to_vec(&h).expect("head serialises")
    }

    pub async fn to_json(&mut self, signer: &Signer) -> Result<Vec<u8>, SignError> {
        self.signature = Some(hex::encode(
            signer.sign(Domain::Head, &self.unsigned_bytes()).await?,
        ));
        let mut v = serde_json::to_vec_pretty(self).expect("head serialises");
        v.push(b'\n');
        Ok(v)
    }

    /// Parses, checks the signature and that the head names its place.
    pub fn open(
        bytes: &[u8],
        dir: &GenerationDir,
        to: u64,
        trust: &Trust,
        label: &str,
    ) -> Result<Head, String> {
        let h: Head = serde_json::from_slice(bytes).map_err(|e| format!("{label}: {e}"))?;
        if h.format != HEAD_FORMAT || h.version != HEAD_VERSION {
            return Err(format!(
                "{label}: format {} version {}",
                h.format, h.version
            ));
        }
        let sig = h
            .signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| format!("{label}: {}", SignError::Malformed("no signature".into())))?;
        trust
            .verify(Domain::Head, &h.unsigned_bytes(), &h.signer, &sig)
            .map_err(|e| format!("{label}: {e}"))?;
        if h.source != dir.source || h.generation != dir.stream || h.to != to {
            return Err(format!(
                "{label}: it names {}/{} offset {}, not its place",
                h.source, h.generation, h.to
            ));
        }
        Ok(h)
    }

    pub fn link_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&self.link).ok()?.try_into().ok()
    }
}

/// Stores a head, create-only (one already there at this offset is fine:
/// false).
pub async fn write_head(
    store: &Store,
    dir: &GenerationDir,
    mut head: Head,
    signer: &Signer,
) -> Result<bool, BackupError> {
    let path = dir.segment(store, &head_name(head.to));
    let json = head
        .to_json(signer)
        .await
        .map_err(|e| BackupError::Invalid(format!("chain head: {e}")))?;
    match store.create(&path, json).await {
        Ok(()) => Ok(true),
        Err(StoreError::Exists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The newest head of a generation that verifies, among the offsets `heads`
/// (from the listing); heads that do not verify are named and passed over.
pub async fn newest_head(
    store: &Store,
    dir: &GenerationDir,
    heads: &[u64],
    trust: &Trust,
) -> Option<Head> {
    let mut sorted = heads.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    for to in sorted {
        let name = head_name(to);
        let label = dir.segment_label(&name);
        match store.read(&dir.segment(store, &name)).await {
            Ok(bytes) => match Head::open(&bytes, dir, to, trust, &label) {
                Ok(h) => return Some(h),
                Err(e) => tracing::warn!("chain head passed over: {e}"),
            },
            Err(e) => tracing::warn!("chain head {label} cannot be read: {e}"),
        }
    }
    None
}
