//! An RSA key in Azure Key Vault as the KEK: the data key is wrapped and unwrapped
//! by the vault (`wrapkey` / `unwrapkey`, RSA-OAEP-256), so the KEK never leaves it.
//! The keyring records the full versioned key id; unwrapping uses exactly that
//! version, so rotating the key keeps older backups readable.

use super::{Kek, KekError, WrappedKey, ALG_RSA_OAEP_256};
use crate::azure::vault::{
    b64url, b64url_decode, KeyVaultOptions, OperationResult, VaultError, VaultKey,
};
use crate::data_key::DataKey;
use async_trait::async_trait;
use zeroize::Zeroizing;

pub struct KeyVaultKek {
    key: VaultKey,
}

impl From<VaultError> for KekError {
    fn from(e: VaultError) -> Self {
        KekError::Other(e.0)
    }
}

impl KeyVaultKek {
    /// Parses `https://<vault>/keys/<name>[/<version>]`. Nothing is requested yet.
    pub fn new(spec: &str, opts: KeyVaultOptions) -> Result<Self, KekError> {
        Ok(KeyVaultKek {
            key: VaultKey::new(
                spec,
                opts,
                "'Key Vault Crypto Service Encryption User', or get/wrapKey/unwrapKey",
            )?,
        })
    }
}

#[async_trait]
impl Kek for KeyVaultKek {
    fn id(&self) -> &str {
        self.key.id()
    }

    fn can_unwrap(&self) -> bool {
        // Only the vault knows whether this identity may unwrap; a refusal names it.
        true
    }

    fn matches(&self, kek_id: &str) -> bool {
        match (self.key.versioned(kek_id), self.key.version()) {
            (Some(v), Some(pinned)) => v == pinned,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KekError> {
        // Get first: which version is newest, and whether the key can wrap at all.
        let bundle = self.key.get().await?;
        if !matches!(bundle.key.kty.as_str(), "RSA" | "RSA-HSM") {
            return Err(KekError::Other(format!(
                "Key Vault key {} is of type {}; redvault wraps with RSA-OAEP-256 and needs an RSA key",
                self.key.id(),
                bundle.key.kty
            )));
        }
        let body = serde_json::json!({
            "alg": ALG_RSA_OAEP_256,
            "value": b64url(dek.expose()),
        });
        let answer = self
            .key
            .call(
                reqwest::Method::POST,
                &format!("{}/wrapkey", bundle.key.kid),
                Some(body),
                "wrapKey",
            )
            .await?;
        let result: OperationResult = serde_json::from_slice(&answer)
            .map_err(|e| KekError::WrapFailed(format!("unreadable wrapkey answer: {e}")))?;
        let bytes = b64url_decode(&result.value)
            .ok_or_else(|| KekError::WrapFailed("wrapkey answer is not base64url".into()))?;
        let kid = if self.key.versioned(&result.kid).is_some() {
            result.kid
        } else {
            bundle.key.kid
        };
        Ok(WrappedKey {
            kek_id: kid,
            alg: ALG_RSA_OAEP_256.into(),
            bytes,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KekError> {
        if wrapped.alg != ALG_RSA_OAEP_256 {
            return Err(KekError::UnsupportedAlg(wrapped.alg.clone()));
        }
        if !self.matches(&wrapped.kek_id) {
            return Err(KekError::Other(format!(
                "the data key was wrapped by {}, not by {}",
                wrapped.kek_id,
                self.key.id()
            )));
        }
        let body = serde_json::json!({
            "alg": ALG_RSA_OAEP_256,
            "value": b64url(&wrapped.bytes),
        });
        let answer = self
            .key
            .call(
                reqwest::Method::POST,
                &format!("{}/unwrapkey", wrapped.kek_id),
                Some(body),
                "unwrapKey",
            )
            .await?;
        let result: OperationResult =
            serde_json::from_slice(&answer).map_err(|_| KekError::UnwrapFailed {
                kek_id: wrapped.kek_id.clone(),
            })?;
        let bytes =
            Zeroizing::new(
                b64url_decode(&result.value).ok_or_else(|| KekError::UnwrapFailed {
                    kek_id: wrapped.kek_id.clone(),
                })?,
            );
        DataKey::from_bytes(&bytes).ok_or_else(|| KekError::UnwrapFailed {
            kek_id: wrapped.kek_id.clone(),
        })
    }
}
