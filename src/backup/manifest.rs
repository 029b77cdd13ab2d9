//! manifest.json: written last, so a generation without one is incomplete. It is
//! authenticated with an HMAC under a key derived from the data key, so an edited
//! manifest is rejected when opened with the KEK.

use crate::data_key::DataKey;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;

pub const MANIFEST_FORMAT: &str = "redvault-manifest";
pub const MANIFEST_VERSION: u32 = 1;

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
    /// Keys per database, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<BTreeMap<String, u64>>,
    /// HMAC-SHA256 (hex) of this document serialised without `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisInfo {
    pub version: Option<String>,
    pub rdb_version: Option<u32>,
    pub replid: String,
    pub offset: u64,
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
}

impl Manifest {
    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.mac = None;
        serde_json::to_vec(&m).expect("manifest serialises")
    }

    fn tag(&self, dek: &DataKey) -> Vec<u8> {
        let key = dek.manifest_mac_key();
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length");
        h.update(&self.unsigned_bytes());
        h.finalize().into_bytes().to_vec()
    }

    /// Sets the MAC (sealed generations) and returns the JSON to store.
    pub fn to_json(&mut self, dek: Option<&DataKey>) -> Vec<u8> {
        self.mac = dek.map(|k| hex::encode(self.tag(k)));
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        v
    }

    /// Parses without authenticating (for `list`, which needs no key).
    pub fn parse(bytes: &[u8], label: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Parse(label.into(), e.to_string()))?;
        if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
            return Err(ManifestError::Parse(
                label.into(),
                format!("format {} version {}", m.format, m.version),
            ));
        }
        Ok(m)
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
