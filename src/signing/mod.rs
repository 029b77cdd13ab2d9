//! Who wrote a backup. Each writer (an export host, a daemon) holds an Ed25519
//! signing key and signs every manifest, AOF segment and chain head it stores;
//! readers take the public keys of the signers they trust and refuse (and never
//! count) anything else. The public KEK lets anyone *seal* a backup; only a
//! trusted signing key lets one pass for this owner's.
//!
//! Files: `signing.pem` (PKCS#8, mode 0600) and `signing.pub.pem` (SPKI), made
//! by `keys generate` beside the KEK pair; a reader given a KEK file also
//! trusts the `signing.pub.pem` beside it. Or the key is an EC P-256 key in
//! Azure Key Vault (`vault`), which signs ES256: the host keeps no secret.

mod public_key;
mod vault;

pub use public_key::PublicKey;
pub use vault::VaultSigner;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey};
use std::path::{Path, PathBuf};

pub const SIGNING_KEY_FILE: &str = "signing.pem";
pub const SIGNING_PUB_FILE: &str = "signing.pub.pem";
pub const SIGNATURE_LEN: usize = 64;
pub const SIGNER_ID_LEN: usize = 16;

/// What a signature is over: each kind of record signs under its own name, so
/// a signature over one can never be taken for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Manifest,
    Segment,
    Head,
    /// A signature made only to learn that the key signs (a Key Vault
    /// permission check at start); no reader accepts one.
    Probe,
}

impl Domain {
    fn tag(self) -> &'static [u8] {
        match self {
            Domain::Manifest => b"redvault/2 manifest\0",
            Domain::Segment => b"redvault/2 segment\0",
            Domain::Head => b"redvault/2 head\0",
            Domain::Probe => b"redvault/2 probe\0",
        }
    }
}

/// The bytes a signature is over: the domain's tag, then the body.
fn message(domain: Domain, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.tag().len() + body.len());
    m.extend_from_slice(domain.tag());
    m.extend_from_slice(body);
    m
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "signing key {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    LoosePermissions { path: String, mode: u32 },
    #[error("{path} holds no signing key in PEM form (an Ed25519 PKCS#8 private key, or an Ed25519 or P-256 SPKI public key)")]
    NotAKey { path: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NoSigningKey(String),
    #[error("{0}")]
    NoTrust(String),
    #[error("signed by {signer}, which is not a trusted signer (trusted: {trusted})")]
    Untrusted { signer: String, trusted: String },
    #[error("its signature by {signer} does not verify: it was changed after signing, or forged")]
    BadSignature { signer: String },
    #[error("its signature is malformed: {0}")]
    Malformed(String),
    /// The vault holding the signing key refused or could not be reached.
    #[error("signing with {0}")]
    Vault(String),
}

/// A key file's text, wiped from memory when dropped.
fn read_pem(path: &Path) -> Result<zeroize::Zeroizing<String>, SignError> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|source| SignError::Read {
            path: path.display().to_string(),
            source,
        })
}

/// A writer's signing key: an Ed25519 key in a file (zeroized on drop by
/// dalek), or a P-256 key that stays in Key Vault.
pub struct Signer {
    key: SignerKey,
    public: PublicKey,
}

enum SignerKey {
    Local(SigningKey),
    Vault(VaultSigner),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.id())
    }
}

impl Signer {
    pub fn generate() -> Self {
        Self::from_key(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key from its 32-byte seed. Only for test vectors: a real key comes
    /// from `generate`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_key(SigningKey::from_bytes(seed))
    }

    fn from_key(key: SigningKey) -> Self {
        let public = PublicKey::Ed25519(key.verifying_key());
        Signer {
            key: SignerKey::Local(key),
            public,
        }
    }

    /// A signer whose key is held by Key Vault (opened by `VaultSigner::open`).
    pub fn vault(v: VaultSigner) -> Self {
        let public = PublicKey::P256(*v.public());
        Signer {
            key: SignerKey::Vault(v),
            public,
        }
    }

    /// Loads a private signing key (PKCS#8 PEM); like the KEK, refused when
    /// group or others can read it.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let shown = path.display().to_string();
        let text = read_pem(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| SignError::Read {
                    path: shown.clone(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SignError::LoosePermissions {
                    path: shown,
                    mode: mode & 0o777,
                });
            }
        }
        let key =
            SigningKey::from_pkcs8_pem(&text).map_err(|_| SignError::NotAKey { path: shown })?;
        Ok(Self::from_key(key))
    }

    /// `ed25519:<32 hex>` or `es256:<32 hex>`.
    pub fn id(&self) -> String {
        self.public.id()
    }

    pub fn id_bytes(&self) -> [u8; SIGNER_ID_LEN] {
        self.public.id_bytes()
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `body` under `domain`. A vault signer makes one request, and
    /// checks the answer against its public key before using it.
    pub async fn sign(
        &self,
        domain: Domain,
        body: &[u8],
    ) -> Result<[u8; SIGNATURE_LEN], SignError> {
        let msg = message(domain, body);
        match &self.key {
            SignerKey::Local(k) => Ok(k.sign(&msg).to_bytes()),
            SignerKey::Vault(v) => v.sign(&msg).await,
        }
    }
}

/// What `write_signer_files` made.
#[derive(Debug)]
pub struct GeneratedSigner {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    pub id: String,
}

/// Writes a new signing pair into `dir` (`signing.pem` 0600, `signing.pub.pem`);
/// never overwrites either.
pub fn write_signer_files(dir: &Path) -> Result<GeneratedSigner, SignError> {
    let s = Signer::generate();
    let private_path = dir.join(SIGNING_KEY_FILE);
    let public_path = dir.join(SIGNING_PUB_FILE);
    let other = |path: &Path, e: &dyn std::fmt::Display| SignError::Write {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    let SignerKey::Local(key) = &s.key else {
        unreachable!("a generated signer is local")
    };
    let private_pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| other(&private_path, &e))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| other(&public_path, &e))?;
    if public_path.exists() {
        return Err(SignError::Write {
            path: public_path.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    crate::text::write_new_file(&private_path, private_pem.as_bytes(), 0o600).map_err(
        |source| SignError::Write {
            path: private_path.display().to_string(),
            source,
        },
    )?;
    crate::text::write_new_file(&public_path, public_pem.as_bytes(), 0o644).map_err(|source| {
        SignError::Write {
            path: public_path.display().to_string(),
            source,
        }
    })?;
    Ok(GeneratedSigner {
        private_path,
        public_path,
        id: s.id(),
    })
}

/// The signers a reader trusts, and whether records of the older, unsigned
/// format are read at all.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(String, PublicKey)>,
    /// Read generations and segments written before signing (format 1),
    /// with a warning each time.
    pub allow_unsigned: bool,
    /// What to tell a user who gave no trusted signer.
    hint: Option<String>,
}

impl Trust {
    pub fn new(allow_unsigned: bool) -> Self {
        Trust {
            allow_unsigned,
            ..Default::default()
        }
    }

    /// Trusts the key in `path`: a public key (SPKI PEM, Ed25519 or P-256),
    /// or an Ed25519 private one (its public half).
    pub fn add_file(&mut self, path: &Path) -> Result<(), SignError> {
        let shown = path.display().to_string();
        let text = read_pem(path)?;
        let key = match PublicKey::from_pem(&text) {
            Some(k) => k,
            None => PublicKey::Ed25519(
                SigningKey::from_pkcs8_pem(&text)
                    .map_err(|_| SignError::NotAKey { path: shown })?
                    .verifying_key(),
            ),
        };
        self.add_key(key);
        Ok(())
    }

    pub fn add_key(&mut self, key: PublicKey) {
        let id = key.id();
        if !self.keys.iter().any(|(k, _)| *k == id) {
            self.keys.push((id, key));
        }
    }

    /// Trusts `signer`'s own public key (a daemon reading what it wrote).
    pub fn add_signer(&mut self, signer: &Signer) {
        self.add_key(signer.public_key().clone());
    }

    /// Where the user should get a trusted key from, when none is given.
    pub fn set_hint(&mut self, hint: String) {
        self.hint = Some(hint);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether listing can tell trusted from untrusted at all: a signer is
    /// trusted, or unsigned records are allowed.
    pub fn checks(&self) -> bool {
        !self.keys.is_empty() || self.allow_unsigned
    }

    /// For commands that act on what they read (import, restore, verify,
    /// prune): some signer must be trusted, unless only unsigned (older)
    /// backups are read.
    pub fn require_for_reading(&self) -> Result<(), SignError> {
        if self.allow_unsigned {
            return Ok(());
        }
        self.require()
    }

    /// The trust for the parts of one generation: a signed generation never
    /// has unsigned segments (an older writer's checkpoint starts a new
    /// base), so for it unsigned ones are refused whatever `allow_unsigned`.
    pub fn for_generation(&self, signed: bool) -> Trust {
        let mut t = self.clone();
        if signed {
            t.allow_unsigned = false;
        }
        t
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Fails when no signer is trusted, naming what to copy where.
    pub fn require(&self) -> Result<(), SignError> {
        if self.keys.is_empty() {
            return Err(SignError::NoTrust(self.hint.clone().unwrap_or_else(|| {
                format!("no trusted signer is given: copy {SIGNING_PUB_FILE} from the backup host (it is beside its KEK) and pass --trust FILE, set REDVAULT_TRUST, or put it beside the KEK given here")
            })));
        }
        Ok(())
    }

    /// Verifies `signature` by `signer` (an id string) over `body`.
    pub fn verify(
        &self,
        domain: Domain,
        body: &[u8],
        signer: &str,
        signature: &[u8],
    ) -> Result<(), SignError> {
        self.require()?;
        let Some((_, key)) = self.keys.iter().find(|(k, _)| k == signer) else {
            return Err(SignError::Untrusted {
                signer: signer.into(),
                trusted: self.ids().join(", "),
            });
        };
        key.verify(&message(domain, body), signature)
            .map_err(|e| match e {
                public_key::VerifyError::Malformed(why) => SignError::Malformed(why),
                public_key::VerifyError::Invalid => SignError::BadSignature {
                    signer: signer.into(),
                },
            })
    }

    /// Like `verify`, for a signer named by its 16 id bytes (as a segment's
    /// attestation names it); returns the signer's id.
    pub fn verify_by_id(
        &self,
        domain: Domain,
        body: &[u8],
        id: &[u8; SIGNER_ID_LEN],
        signature: &[u8],
    ) -> Result<String, SignError> {
        self.require()?;
        let Some((name, _)) = self.keys.iter().find(|(_, k)| k.id_bytes() == *id) else {
            return Err(SignError::Untrusted {
                signer: format!("key id {}", hex::encode(id)),
                trusted: self.ids().join(", "),
            });
        };
        let name = name.clone();
        self.verify(domain, body, &name, signature)?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(s: &Signer, d: Domain, body: &[u8]) -> [u8; SIGNATURE_LEN] {
        futures::executor::block_on(s.sign(d, body)).unwrap()
    }

    #[test]
    fn signatures_bind_signer_domain_and_body() {
        let a = Signer::generate();
        let b = Signer::generate();
        let mut trust = Trust::new(false);
        assert!(matches!(trust.require(), Err(SignError::NoTrust(_))));
        trust.add_signer(&a);
        let sig = sign(&a, Domain::Segment, b"body");
        trust
            .verify(Domain::Segment, b"body", &a.id(), &sig)
            .unwrap();
        assert!(matches!(
            trust.verify(Domain::Segment, b"bodY", &a.id(), &sig),
            Err(SignError::BadSignature { .. })
        ));
        assert!(matches!(
            trust.verify(Domain::Head, b"body", &a.id(), &sig),
            Err(SignError::BadSignature { .. })
        ));
        let forged = sign(&b, Domain::Segment, b"body");
        let e = trust
            .verify(Domain::Segment, b"body", &b.id(), &forged)
            .unwrap_err();
        assert!(e.to_string().contains(&b.id()), "{e}");
        assert!(matches!(
            trust.verify(Domain::Segment, b"body", &a.id(), &forged),
            Err(SignError::BadSignature { .. })
        ));
    }

    #[test]
    fn key_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let g = write_signer_files(dir.path()).unwrap();
        let s = Signer::load(&g.private_path).unwrap();
        assert_eq!(s.id(), g.id);
        let mut t = Trust::new(false);
        t.add_file(&g.public_path).unwrap();
        assert_eq!(t.ids(), vec![g.id.clone()]);
        assert!(write_signer_files(dir.path()).is_err(), "never overwritten");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&g.private_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
