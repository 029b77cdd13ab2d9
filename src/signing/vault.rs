//! A signing key that never leaves Azure Key Vault: an EC P-256 key (`EC` or
//! `EC-HSM`) that signs ES256 through the vault's `sign` operation under the
//! Azure identity. The key's version is pinned when opened, so a rotation in
//! the vault never changes the signer of a running writer.

use super::{SignError, SIGNATURE_LEN};
use crate::azure::vault::{
    b64url, b64url_decode, KeyVaultOptions, OperationResult, Transient, VaultError, VaultKey,
};
use sha2::{Digest, Sha256};

const GRANT: &str = "'Key Vault Crypto User', or get/sign";
/// Requests per signature at most, 0.25 s then 0.5 s apart.
const SIGN_TRIES: u32 = 3;

pub struct VaultSigner {
    key: VaultKey,
    public: p256::ecdsa::VerifyingKey,
}

impl From<VaultError> for SignError {
    fn from(e: VaultError) -> Self {
        SignError::Vault(e.0)
    }
}

fn member(v: &Option<String>) -> Option<[u8; 32]> {
    b64url_decode(v.as_deref()?)?.try_into().ok()
}

impl VaultSigner {
    /// Reads the key (`get`): it must be an enabled P-256 EC key. Its public
    /// point becomes the signer's id. With `probe`, signs once.
    pub async fn open(spec: &str, opts: KeyVaultOptions, probe: bool) -> Result<Self, SignError> {
        let key = VaultKey::new(spec, opts.clone(), GRANT)?;
        let bundle = key.get().await?;
        let k = &bundle.key;
        if !matches!(k.kty.as_str(), "EC" | "EC-HSM") || k.crv.as_deref() != Some("P-256") {
            return Err(SignError::Vault(format!(
                "Key Vault key {}: it is {} {}; a signing key must be an EC key on P-256 (ES256)",
                key.id(),
                k.kty,
                k.crv.as_deref().unwrap_or("")
            )));
        }
        let point = match (member(&k.x), member(&k.y)) {
            (Some(x), Some(y)) => {
                p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false)
            }
            _ => {
                return Err(SignError::Vault(format!(
                    "Key Vault key {}: its public point (x, y) is missing or malformed",
                    key.id()
                )))
            }
        };
        let public = p256::ecdsa::VerifyingKey::from_encoded_point(&point).map_err(|_| {
            SignError::Vault(format!(
                "Key Vault key {}: its public point is not on P-256",
                key.id()
            ))
        })?;
        // Sign with exactly the version read.
        let key = VaultKey::new(&k.kid, opts, GRANT)?;
        let signer = VaultSigner { key, public };
        if probe {
            // One signature now, so that a missing 'sign' permission fails
            // the run before anything is written rather than at its manifest.
            let mut nonce = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
            signer
                .sign(&super::message(super::Domain::Probe, &nonce))
                .await?;
        }
        Ok(signer)
    }

    pub fn public(&self) -> &p256::ecdsa::VerifyingKey {
        &self.public
    }

    /// ES256 over `msg`: the vault signs its SHA-256. The answer is brought to
    /// low s and checked against the public key: a wrong answer is refused,
    /// never stored. Signing has no side effect, so a throttled, failing or
    /// unreachable vault is asked again, a bounded number of times.
    pub async fn sign(&self, msg: &[u8]) -> Result<[u8; SIGNATURE_LEN], SignError> {
        let digest = Sha256::digest(msg);
        let body = serde_json::json!({"alg": "ES256", "value": b64url(&digest)});
        let mut wait = std::time::Duration::from_millis(250);
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            match self
                .key
                .call(
                    reqwest::Method::POST,
                    &format!("{}/sign", self.key.id()),
                    Some(body.clone()),
                    "sign",
                )
                .await
            {
                Ok(a) => break a,
                Err(VaultError(why, Transient::Yes)) if tries < SIGN_TRIES => {
                    tracing::warn!("Key Vault sign failed ({why}); asking again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let bad = |why: &str| SignError::Vault(format!("Key Vault key {}: {why}", self.key.id()));
        let result: OperationResult = serde_json::from_slice(&answer)
            .map_err(|e| bad(&format!("unreadable sign answer: {e}")))?;
        let bytes =
            b64url_decode(&result.value).ok_or_else(|| bad("sign answer is not base64url"))?;
        let sig = p256::ecdsa::Signature::from_slice(&bytes).map_err(|_| {
            bad(&format!(
                "sign answer is {} bytes, not an ES256 signature",
                bytes.len()
            ))
        })?;
        let sig = sig.normalize_s().unwrap_or(sig);
        {
            use p256::ecdsa::signature::Verifier;
            self.public.verify(msg, &sig).map_err(|_| {
                bad("the vault's signature does not verify with the key's public point")
            })?;
        }
        Ok(sig.to_bytes().into())
    }
}
