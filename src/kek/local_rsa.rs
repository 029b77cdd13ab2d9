//! A local RSA key file as the KEK: RSA-OAEP with SHA-256 (Key Vault's RSA-OAEP-256).

use super::{Kek, KekError, WrappedKey, ALG_RSA_OAEP_256};
use crate::data_key::DataKey;
use async_trait::async_trait;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const MIN_BITS: usize = 2048;
pub const DEFAULT_BITS: usize = 3072;

pub struct LocalRsaKek {
    id: String,
    path: String,
    public: RsaPublicKey,
    // RsaPrivateKey zeroizes its secret parts on drop.
    private: Option<RsaPrivateKey>,
}

impl LocalRsaKek {
    /// Loads a private or public key in PEM form. A private key file must not be
    /// readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        let shown = path.display().to_string();
        let pem = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            KekError::Read {
                path: shown.clone(),
                source,
            }
        })?);
        if pem.contains("PRIVATE KEY-----") {
            check_private_permissions(path)?;
        }
        Self::from_pem(&pem, &shown)
    }

    /// Parses a PEM key; `label` names it in errors.
    pub fn from_pem(pem: &str, label: &str) -> Result<Self, KekError> {
        let not_rsa = || KekError::NotAnRsaKey {
            path: label.to_string(),
        };
        let (public, private) = if pem.contains("-----BEGIN PRIVATE KEY-----") {
            let k = RsaPrivateKey::from_pkcs8_pem(pem).map_err(|_| not_rsa())?;
            (k.to_public_key(), Some(k))
        } else if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            let k = RsaPrivateKey::from_pkcs1_pem(pem).map_err(|_| not_rsa())?;
            (k.to_public_key(), Some(k))
        } else if pem.contains("-----BEGIN PUBLIC KEY-----") {
            (
                RsaPublicKey::from_public_key_pem(pem).map_err(|_| not_rsa())?,
                None,
            )
        } else if pem.contains("-----BEGIN RSA PUBLIC KEY-----") {
            (
                RsaPublicKey::from_pkcs1_pem(pem).map_err(|_| not_rsa())?,
                None,
            )
        } else {
            return Err(not_rsa());
        };
        let bits = public.n().bits();
        if bits < MIN_BITS {
            return Err(KekError::TooSmall {
                path: label.to_string(),
                bits,
                min: MIN_BITS,
            });
        }
        Ok(LocalRsaKek {
            id: key_id(&public),
            path: label.to_string(),
            public,
            private,
        })
    }
}

/// `local-rsa:` and the first 16 bytes (hex) of the SHA-256 of the public key's
/// SubjectPublicKeyInfo DER: names the key a backup needs, and reveals nothing.
fn key_id(public: &RsaPublicKey) -> String {
    let der = public
        .to_public_key_der()
        .expect("an RSA public key always encodes");
    let digest = Sha256::digest(der.as_bytes());
    format!("local-rsa:{}", hex::encode(&digest[..16]))
}

#[cfg(unix)]
fn check_private_permissions(path: &Path) -> Result<(), KekError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KekError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KekError::LoosePermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_permissions(_path: &Path) -> Result<(), KekError> {
    Ok(())
}

#[async_trait]
impl Kek for LocalRsaKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn can_unwrap(&self) -> bool {
        self.private.is_some()
    }

    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KekError> {
        let mut rng = rand::rngs::OsRng;
        let bytes = self
            .public
            .encrypt(&mut rng, Oaep::new::<Sha256>(), dek.expose())
            .map_err(|e| KekError::WrapFailed(e.to_string()))?;
        Ok(WrappedKey {
            kek_id: self.id.clone(),
            alg: ALG_RSA_OAEP_256.to_string(),
            bytes,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KekError> {
        if wrapped.alg != ALG_RSA_OAEP_256 {
            return Err(KekError::UnsupportedAlg(wrapped.alg.clone()));
        }
        let private = self.private.as_ref().ok_or_else(|| KekError::PublicOnly {
            path: self.path.clone(),
        })?;
        let plain = zeroize::Zeroizing::new(
            // Blinded: the ciphertext comes from storage, which others may write.
            private
                .decrypt_blinded(
                    &mut rand::rngs::OsRng,
                    Oaep::new::<Sha256>(),
                    &wrapped.bytes,
                )
                .map_err(|_| KekError::UnwrapFailed {
                    kek_id: self.id.clone(),
                })?,
        );
        DataKey::from_bytes(&plain).ok_or_else(|| KekError::UnwrapFailed {
            kek_id: self.id.clone(),
        })
    }
}

/// The files `keys generate` wrote.
pub struct GeneratedKey {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    pub id: String,
}

/// Writes a new private key (PKCS#8 PEM, mode 0600, never overwriting) and its
/// public half beside it (`NAME.pub.pem`).
pub fn generate_key_files(out: &Path, bits: usize) -> Result<GeneratedKey, KekError> {
    if bits < MIN_BITS {
        return Err(KekError::TooSmall {
            path: out.display().to_string(),
            bits,
            min: MIN_BITS,
        });
    }
    let public_path = public_path_for(out);
    let mut rng = rand::rngs::OsRng;
    let private = RsaPrivateKey::new(&mut rng, bits).map_err(|e| KekError::Other(e.to_string()))?;
    let public = private.to_public_key();
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KekError::Other(e.to_string()))?;
    let public_pem = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KekError::Other(e.to_string()))?;
    write_new(out, private_pem.as_bytes(), 0o600)?;
    write_new(&public_path, public_pem.as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private_path: out.to_path_buf(),
        public_path,
        id: key_id(&public),
    })
}

/// `kek.pem` -> `kek.pub.pem`; `kek` -> `kek.pub.pem`.
fn public_path_for(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kek".into());
    let stem = name.strip_suffix(".pem").unwrap_or(&name);
    out.with_file_name(format!("{stem}.pub.pem"))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KekError> {
    crate::text::write_new_file(path, bytes, mode).map_err(|source| KekError::Write {
        path: path.display().to_string(),
        source,
    })
}
