//! manifest.json: written last, so a generation without one is incomplete. It is
//! signed by the writer's signing key (version 2), so only a trusted signer's
//! manifest counts; a sealed one is also authenticated with an HMAC under a
//! key derived from the data key. The signed `data_key_id` vouches for the
//! keyring (the unwrapped key must match it) and `plaintext_sha256` for the
//! base.

use crate::data_key::DataKey;
use crate::signing::{Domain, SignError, Signer, Trust};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;

pub const MANIFEST_FORMAT: &str = "redvault-manifest";
/// Version 2 is signed; version 1 (unsigned) is read only with --allow-unsigned.
pub const MANIFEST_VERSION: u32 = 2;
pub const MANIFEST_V1: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub generation: String,
    pub source: String,
    /// RFC 3339, UTC: when the sync started and when the last object was stored.
    pub created: String,
    pub completed: String,
    /// False for `--plain` exports (no keyring, no MAC).
    pub sealed: bool,
    pub redis: RedisInfo,
    /// The KEK ids that wrapped the data key when the generation was written.
    pub keks: Vec<String>,
    pub data_key_id: Option<String>,
    pub objects: Vec<ObjectEntry>,
    /// Keys per database, when known (for a cluster, of every shard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<BTreeMap<String, u64>>,
    /// A cluster generation: one snapshot object per primary. `redis` then
    /// describes the first shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<ShardEntry>>,
    /// The signer's id (`ed25519:<32 hex>` or `es256:<32 hex>`), version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// HMAC-SHA256 (hex) of this document serialised without `mac` and `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The signature (hex, Ed25519 or ES256) over the same bytes as `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisInfo {
    pub version: Option<String>,
    pub rdb_version: Option<u32>,
    pub replid: String,
    pub offset: u64,
    /// `scan` for a snapshot read key by key with SCAN and DUMP (not
    /// point-in-time); absent for the server's own RDB (PSYNC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl RedisInfo {
    /// Whether the snapshot is of one moment (false for a SCAN snapshot).
    pub fn point_in_time(&self) -> bool {
        self.method.as_deref() != Some("scan")
    }
}

/// One shard of a cluster generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// The object that holds its snapshot (one of `objects`).
    pub object: String,
    /// The slot ranges its primary served, first and last slot of each.
    pub slots: Vec<[u16; 2]>,
    /// The primary: its cluster node id and address.
    pub node: String,
    pub addr: String,
    pub replid: String,
    pub offset: u64,
    pub rdb_version: Option<u32>,
    pub keys: BTreeMap<String, u64>,
}

impl ShardEntry {
    /// Its command stream's folder in the generation (`shard-<first>-<last>`,
    /// by its first and last slot, as its snapshot object is named).
    pub fn stream(&self) -> String {
        let first = self.slots.iter().map(|r| r[0]).min().unwrap_or(0);
        let last = self.slots.iter().map(|r| r[1]).max().unwrap_or(0);
        super::layout::shard_stream(first, last)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    pub name: String,
    pub kind: String,
    pub stored_bytes: u64,
    pub plaintext_bytes: u64,
    pub plaintext_sha256: String,
    pub chunks: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {0} is not a valid redvault manifest: {1}")]
    Parse(String, String),
    #[error("manifest {0} failed authentication: it was edited, or belongs to another keyring")]
    Auth(String),
    #[error("manifest {0} carries no MAC but claims a sealed generation")]
    MissingMac(String),
    #[error("manifest {0} is unsigned (written by an older redvault, format 1): refused, since anyone who can write to the store and holds the public KEK can write one; --allow-unsigned reads it")]
    Unsigned(String),
    #[error("manifest {label}: {source}")]
    Signature { label: String, source: SignError },
}

/// One command stream of a generation: its folder, the offset it starts at
/// (its snapshot's), and the slots its shard served (none: a single server).
pub struct StreamOf {
    pub dir: super::layout::GenerationDir,
    pub base_offset: u64,
    pub slots: Vec<[u16; 2]>,
}

impl Manifest {
    /// The generation's command streams (it is in `dir`): each shard's of a
    /// cluster generation, else the generation's own.
    pub fn streams(&self, dir: &super::layout::GenerationDir) -> Vec<StreamOf> {
        match &self.cluster {
            Some(shards) => shards
                .iter()
                .map(|s| StreamOf {
                    dir: dir.shard(&s.stream()),
                    base_offset: s.offset,
                    slots: s.slots.clone(),
                })
                .collect(),
            None => vec![StreamOf {
                dir: dir.clone(),
                base_offset: self.redis.offset,
                slots: vec![],
            }],
        }
    }

    /// The bytes the MAC and the signature are over: the document without both.
    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.mac = None;
        m.signature = None;
        serde_json::to_vec(&m).expect("manifest serialises")
    }

    fn tag(&self, dek: &DataKey) -> Vec<u8> {
        let key = dek.manifest_mac_key();
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length");
        h.update(&self.unsigned_bytes());
        h.finalize().into_bytes().to_vec()
    }

    /// Sets the signer, the MAC (sealed generations) and the signature, and
    /// returns the JSON to store.
    pub async fn to_json(
        &mut self,
        dek: Option<&DataKey>,
        signer: &Signer,
    ) -> Result<Vec<u8>, SignError> {
        self.version = MANIFEST_VERSION;
        self.signer = Some(signer.id());
        self.mac = dek.map(|k| hex::encode(self.tag(k)));
        self.signature = Some(hex::encode(
            signer
                .sign(Domain::Manifest, &self.unsigned_bytes())
                .await?,
        ));
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        Ok(v)
    }

    /// Parses without authenticating (for `list`, which needs no key).
    pub fn parse(bytes: &[u8], label: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Parse(label.into(), e.to_string()))?;
        let signed = m.signer.is_some() && m.signature.is_some();
        let shape_ok = match m.version {
            MANIFEST_VERSION => signed,
            MANIFEST_V1 => m.signer.is_none() && m.signature.is_none(),
            _ => false,
        };
        if m.format != MANIFEST_FORMAT || !shape_ok {
            return Err(ManifestError::Parse(
                label.into(),
                format!(
                    "format {} version {}{}",
                    m.format,
                    m.version,
                    if m.version == MANIFEST_VERSION && !signed {
                        " without its signature"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(m)
    }

    /// Checks the signature against the trusted signers: Ok(Some(signer)) for
    /// a trusted signature, Ok(None) for an unsigned version 1 manifest when
    /// `trust.allow_unsigned`; an error otherwise.
    pub fn check_signature(
        &self,
        trust: &Trust,
        label: &str,
    ) -> Result<Option<String>, ManifestError> {
        let (Some(signer), Some(sig)) = (&self.signer, &self.signature) else {
            if trust.allow_unsigned {
                return Ok(None);
            }
            return Err(ManifestError::Unsigned(label.into()));
        };
        let sig = hex::decode(sig).map_err(|_| ManifestError::Signature {
            label: label.into(),
            source: SignError::Malformed("not hex".into()),
        })?;
        trust
            .verify(Domain::Manifest, &self.unsigned_bytes(), signer, &sig)
            .map_err(|source| ManifestError::Signature {
                label: label.into(),
                source,
            })?;
        Ok(Some(signer.clone()))
    }

    /// Parses and authenticates with the generation's data key.
    pub fn open(bytes: &[u8], dek: &DataKey, label: &str) -> Result<Self, ManifestError> {
        let m = Self::parse(bytes, label)?;
        let mac = m
            .mac
            .as_deref()
            .ok_or_else(|| ManifestError::MissingMac(label.into()))?;
        let given = hex::decode(mac).map_err(|_| ManifestError::Auth(label.into()))?;
        let key = dek.manifest_mac_key();
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length");
        h.update(&m.unsigned_bytes());
        h.verify_slice(&given)
            .map_err(|_| ManifestError::Auth(label.into()))?;
        Ok(m)
    }
}
