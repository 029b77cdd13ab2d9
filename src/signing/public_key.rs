//! A trusted signer's public key: Ed25519 (keys in files) or ECDSA P-256
//! (ES256, keys in Key Vault). Both give 64-byte signatures and a 16-byte id,
//! so the format carries either without knowing which.

use super::SIGNER_ID_LEN;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

#[derive(Debug)]
pub enum VerifyError {
    Malformed(String),
    Invalid,
}

impl PublicKey {
    /// An SPKI PEM public key of either kind.
    pub fn from_pem(text: &str) -> Option<Self> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            return Some(PublicKey::Ed25519(k));
        }
        p256::ecdsa::VerifyingKey::from_public_key_pem(text)
            .ok()
            .map(PublicKey::P256)
    }

    /// SPKI PEM, to copy to the hosts that restore.
    pub fn to_pem(&self) -> String {
        let lf = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
        match self {
            PublicKey::Ed25519(k) => k.to_public_key_pem(lf),
            PublicKey::P256(k) => k.to_public_key_pem(lf),
        }
        .expect("a valid public key encodes")
    }

    /// The first 16 bytes of SHA-256 of the key's public bytes: the 32-byte
    /// Ed25519 key, or the 65-byte uncompressed SEC1 point of a P-256 key.
    pub fn id_bytes(&self) -> [u8; SIGNER_ID_LEN] {
        let d = match self {
            PublicKey::Ed25519(k) => Sha256::digest(k.as_bytes()),
            PublicKey::P256(k) => Sha256::digest(k.to_encoded_point(false).as_bytes()),
        };
        d[..SIGNER_ID_LEN].try_into().unwrap()
    }

    /// `ed25519:<32 hex>` or `es256:<32 hex>`.
    pub fn id(&self) -> String {
        let kind = match self {
            PublicKey::Ed25519(_) => "ed25519",
            PublicKey::P256(_) => "es256",
        };
        format!("{kind}:{}", hex::encode(self.id_bytes()))
    }

    /// Verifies a 64-byte signature over `msg`: Ed25519 strictly; ES256 (r||s,
    /// SHA-256 of `msg`) with s in the lower half, so no second valid
    /// encoding of one signature exists.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        match self {
            PublicKey::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| VerifyError::Malformed(format!("{} bytes", sig.len())))?;
                k.verify_strict(msg, &sig).map_err(|_| VerifyError::Invalid)
            }
            PublicKey::P256(k) => {
                use p256::ecdsa::signature::Verifier;
                let sig = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| VerifyError::Malformed(format!("{} bytes", sig.len())))?;
                if sig.normalize_s().is_some() {
                    return Err(VerifyError::Malformed(
                        "an ES256 signature with a high s".into(),
                    ));
                }
                k.verify(msg, &sig).map_err(|_| VerifyError::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    /// ES256: the low-s form verifies, its high-s twin (also valid ECDSA) is
    /// refused, as are another message and another key; the id is typed.
    #[test]
    fn es256_has_one_encoding_per_signature() {
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let key = PublicKey::P256(*sk.verifying_key());
        assert!(key.id().starts_with("es256:"));
        let sig: p256::ecdsa::Signature = sk.sign(b"msg");
        let low = sig.normalize_s().unwrap_or(sig);
        let (r, s) = low.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        key.verify(b"msg", &low.to_bytes()).unwrap();
        assert!(matches!(
            key.verify(b"msg", &high.to_bytes()),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            key.verify(b"other", &low.to_bytes()),
            Err(VerifyError::Invalid)
        ));
        let other = PublicKey::P256(
            *p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng).verifying_key(),
        );
        assert!(other.verify(b"msg", &low.to_bytes()).is_err());
        assert_ne!(other.id_bytes(), key.id_bytes());
        let pem = key.to_pem();
        assert_eq!(PublicKey::from_pem(&pem), Some(key));
    }
}
