//! The per-generation data key (DEK) and the keys derived from it.

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of a data key and of every derived key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a data-key id, in bytes.
pub const KEY_ID_LEN: usize = 16;

const INFO_KEY_ID: &[u8] = b"redvault/1 data key id";
const INFO_CHUNK_KEY: &[u8] = b"redvault/1 chunk key";
const INFO_HEADER_MAC: &[u8] = b"redvault/1 header mac";
const INFO_MANIFEST_MAC: &[u8] = b"redvault/1 manifest mac";

/// A 256-bit data key. Zeroized on drop; never printed (Debug shows only its id).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        let key = DataKey(k);
        k.zeroize();
        key
    }

    /// Wraps raw key bytes (after unwrapping). The caller's copy should be zeroized.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(DataKey(arr))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A public, non-secret identifier of this key, so an opener can say
    /// "wrong keyring" instead of a bare authentication failure.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        let mut out = [0u8; KEY_ID_LEN];
        expand(&self.0, &[], INFO_KEY_ID, &mut out);
        out
    }

    /// The AES-256-GCM key for the chunks of one object (salted per object).
    pub fn chunk_key(&self, salt: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        expand(&self.0, salt, INFO_CHUNK_KEY, out.as_mut());
        out
    }

    /// The HMAC-SHA256 key that authenticates one object's header.
    pub fn header_mac_key(&self, salt: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        expand(&self.0, salt, INFO_HEADER_MAC, out.as_mut());
        out
    }

    /// The HMAC-SHA256 key that authenticates a generation's manifest.
    pub fn manifest_mac_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        expand(&self.0, &[], INFO_MANIFEST_MAC, out.as_mut());
        out
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey(id={})", hex::encode(self.id()))
    }
}

fn expand(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand(info, out)
        .expect("HKDF-SHA256 output of 32 bytes or less is always valid");
}
