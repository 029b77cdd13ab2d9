//! The keyring: the data key of a backup generation (or a sealed file), wrapped by
//! one or more KEKs. Re-wrapping under a new KEK rewrites only the keyring.

pub use crate::data_key::{DataKey, KEY_ID_LEN, KEY_LEN};

use crate::kek::{Kek, KekError, WrappedKey};
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const KEYRING_FORMAT: &str = "redvault-keyring";
pub const KEYRING_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring {0} is not valid JSON of a redvault keyring: {1}")]
    Parse(String, String),
    #[error("keyring {0} has version {1}; this redvault reads version {KEYRING_VERSION}")]
    Version(String, u32),
    #[error("keyring {label} was wrapped by {wrapped_by}; the KEK given is {given}")]
    WrongKek {
        label: String,
        wrapped_by: String,
        given: String,
    },
    #[error("keyring {label}: {source}")]
    Kek { label: String, source: KekError },
    #[error("keyring {0}: the unwrapped data key does not match the keyring's data key id")]
    IdMismatch(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    pub format: String,
    pub version: u32,
    /// Hex of the data key's public id (see DataKey::id).
    pub data_key_id: String,
    pub wrapped: Vec<WrappedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WrappedEntry {
    pub kek: String,
    pub alg: String,
    /// Base64 (standard, padded) of the wrapped key.
    pub key: String,
}

impl Keyring {
    /// Wraps `dek` under `kek` into a new keyring.
    pub async fn wrap(dek: &DataKey, kek: &dyn Kek) -> Result<Self, KekError> {
        let w = kek.wrap(dek).await?;
        Ok(Keyring {
            format: KEYRING_FORMAT.into(),
            version: KEYRING_VERSION,
            data_key_id: hex::encode(dek.id()),
            wrapped: vec![WrappedEntry {
                kek: w.kek_id,
                alg: w.alg,
                key: base64::engine::general_purpose::STANDARD.encode(&w.bytes),
            }],
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("keyring serialises");
        v.push(b'\n');
        v
    }

    pub fn from_json(bytes: &[u8], label: &str) -> Result<Self, KeyringError> {
        let k: Keyring = serde_json::from_slice(bytes)
            .map_err(|e| KeyringError::Parse(label.into(), e.to_string()))?;
        if k.format != KEYRING_FORMAT {
            return Err(KeyringError::Parse(
                label.into(),
                format!("format is {:?}", k.format),
            ));
        }
        if k.version != KEYRING_VERSION {
            return Err(KeyringError::Version(label.into(), k.version));
        }
        Ok(k)
    }

    /// Unwraps the data key with `kek`, which must be one of the keyring's KEKs.
    pub async fn unwrap(&self, kek: &dyn Kek, label: &str) -> Result<DataKey, KeyringError> {
        let entry = self
            .wrapped
            .iter()
            .find(|e| kek.matches(&e.kek))
            .ok_or_else(|| KeyringError::WrongKek {
                label: label.into(),
                wrapped_by: self
                    .wrapped
                    .iter()
                    .map(|e| e.kek.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                given: kek.id().into(),
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&entry.key)
            .map_err(|e| KeyringError::Parse(label.into(), format!("wrapped key: {e}")))?;
        let dek = kek
            .unwrap(&WrappedKey {
                kek_id: entry.kek.clone(),
                alg: entry.alg.clone(),
                bytes,
            })
            .await
            .map_err(|source| KeyringError::Kek {
                label: label.into(),
                source,
            })?;
        if hex::encode(dek.id()) != self.data_key_id {
            return Err(KeyringError::IdMismatch(label.into()));
        }
        Ok(dek)
    }
}
