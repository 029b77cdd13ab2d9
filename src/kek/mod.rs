//! Key-encryption keys (KEKs): wrap and unwrap data keys.
//!
//! Providers sit behind one small async interface, since some (Key Vault) are remote.

mod key_vault;
mod local_rsa;

pub use crate::azure::vault::{is_key_vault_spec, KeyVaultOptions};
pub use key_vault::KeyVaultKek;
pub use local_rsa::{generate_key_files, LocalRsaKek, DEFAULT_BITS, MIN_BITS};

use crate::data_key::DataKey;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// The one wrapping algorithm of format version 1 (Key Vault's name for it).
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";

/// A data key wrapped by a KEK, as stored in a keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Identifies the KEK and its version, e.g. `local-rsa:3f2a...`.
    pub kek_id: String,
    pub alg: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    LoosePermissions { path: String, mode: u32 },
    #[error("key file {path} holds no RSA key in PEM (PKCS#8 or PKCS#1) form")]
    NotAnRsaKey { path: String },
    #[error("RSA key in {path} has {bits} bits; at least {min} are required")]
    TooSmall {
        path: String,
        bits: usize,
        min: usize,
    },
    #[error("key file {path} holds only a public key: it can wrap (back up) but not unwrap (restore); give the private key")]
    PublicOnly { path: String },
    #[error("unwrapping the data key with {kek_id} failed: the wrapped key is corrupt or was wrapped by another key")]
    UnwrapFailed { kek_id: String },
    #[error("unsupported wrapping algorithm {0}")]
    UnsupportedAlg(String),
    #[error("wrapping the data key failed: {0}")]
    WrapFailed(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A key-encryption key.
///
/// Contract (checked for every implementation by the suite in tests/kek.rs):
/// wrapping is randomised (RSA-OAEP-256), so two wraps of one key differ and
/// both unwrap to it; `unwrap` of bytes wrapped by another key, or tampered
/// with, is an error, never another key. Remote implementations make one
/// request per call and do not retry; the caller decides.
#[async_trait]
pub trait Kek: Send + Sync {
    /// The id recorded in keyrings, naming the key and its version.
    fn id(&self) -> &str;
    /// Whether this KEK holds what unwrapping needs (a private key, a permission).
    fn can_unwrap(&self) -> bool;
    /// Whether a keyring entry wrapped under `kek_id` is this KEK's to unwrap (a
    /// Key Vault key without a pinned version unwraps any of its versions).
    fn matches(&self, kek_id: &str) -> bool {
        kek_id == self.id()
    }
    /// Wraps `dek`; the result names this KEK and its exact version.
    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KekError>;
    /// Unwraps a key this KEK `matches`; fails closed on anything else.
    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KekError>;
}

/// Opens the KEK named on the command line: a Key Vault key URL
/// (`https://<vault>/keys/<name>[/<version>]`, which needs `vault`), else a path
/// to a PEM file.
pub fn open_kek(spec: &str, vault: Option<KeyVaultOptions>) -> Result<Arc<dyn Kek>, KekError> {
    if is_key_vault_spec(spec) {
        let opts = vault.ok_or_else(|| {
            KekError::Other(format!("{spec}: a Key Vault KEK needs an Azure identity"))
        })?;
        return Ok(Arc::new(KeyVaultKek::new(spec, opts)?));
    }
    Ok(Arc::new(LocalRsaKek::from_file(Path::new(spec))?))
}
