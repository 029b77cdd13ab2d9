//! The object header: what the object is, how it is cut, which data key sealed it.
//! It is authenticated by an HMAC, and that tag is every chunk's associated data.

use super::{
    FormatError, FORMAT_V1, FORMAT_VERSION, MAGIC, MAX_CHUNK_SIZE, MAX_HEADER_LEN, MIN_CHUNK_SIZE,
    SALT_LEN,
};
use crate::data_key::{DataKey, KEY_ID_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes before the variable part: magic, version, header length.
pub const PREFIX_LEN: usize = 8 + 2 + 4;
pub const HEADER_MAC_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A standalone sealed file (`redvault seal`).
    File = 1,
    /// An RDB snapshot of a backup generation.
    Rdb = 2,
    /// A segment of the replication command stream (AOF).
    Aof = 3,
}

impl ObjectKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::File),
            2 => Some(Self::Rdb),
            3 => Some(Self::Aof),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: ObjectKind,
    pub compression: Compression,
    pub chunk_size: u32,
    pub data_key_id: [u8; KEY_ID_LEN],
    pub salt: [u8; SALT_LEN],
    pub generation: String,
    pub object_name: String,
    /// A keyring carried inside the header (standalone files); empty when the
    /// keyring is stored beside the object (backups).
    pub keyring: Vec<u8>,
    /// The writer's signed statement about the object (AOF segments: see
    /// `aof::chain`); empty for objects a signed manifest vouches for. Only a
    /// version 2 header has the field, so an object without one is written
    /// as version 1, byte for byte as before.
    pub attestation: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

impl Header {
    /// The header bytes, ending with the HMAC under the data key.
    pub fn encode(&self, dek: &DataKey) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + self.keyring.len());
        b.extend_from_slice(&MAGIC);
        let version = if self.attestation.is_empty() {
            FORMAT_V1
        } else {
            FORMAT_VERSION
        };
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&[0; 4]); // header length, patched below
        b.push(self.kind as u8);
        b.push(self.compression as u8);
        b.extend_from_slice(&self.chunk_size.to_be_bytes());
        b.extend_from_slice(&self.data_key_id);
        b.extend_from_slice(&self.salt);
        put_str16(&mut b, &self.generation);
        put_str16(&mut b, &self.object_name);
        b.extend_from_slice(&(self.keyring.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.keyring);
        if !self.attestation.is_empty() {
            b.extend_from_slice(&(self.attestation.len() as u32).to_be_bytes());
            b.extend_from_slice(&self.attestation);
        }
        let total = (b.len() + HEADER_MAC_LEN) as u32;
        b[10..14].copy_from_slice(&total.to_be_bytes());
        let tag = mac(dek, &self.salt, &b);
        b.extend_from_slice(&tag);
        b
    }

    /// Checks magic and version of the fixed prefix; returns the whole header length.
    pub fn parse_prefix(prefix: &[u8; PREFIX_LEN], label: &str) -> Result<u32, FormatError> {
        Self::parse_prefix_version(prefix, label).map(|(len, _)| len)
    }

    /// As `parse_prefix`, with the version (1 or 2).
    pub fn parse_prefix_version(
        prefix: &[u8; PREFIX_LEN],
        label: &str,
    ) -> Result<(u32, u16), FormatError> {
        if prefix[..8] != MAGIC {
            return Err(FormatError::BadMagic(label.into()));
        }
        let version = u16::from_be_bytes([prefix[8], prefix[9]]);
        if version != FORMAT_VERSION && version != FORMAT_V1 {
            return Err(FormatError::UnsupportedVersion(label.into(), version));
        }
        let len = u32::from_be_bytes(prefix[10..14].try_into().unwrap());
        let min = (PREFIX_LEN + 2 + 4 + KEY_ID_LEN + SALT_LEN + 2 + 2 + 4 + HEADER_MAC_LEN) as u32;
        if !(min..=MAX_HEADER_LEN).contains(&len) {
            return Err(FormatError::MalformedHeader(
                label.into(),
                format!("header length {len} out of range"),
            ));
        }
        Ok((len, version))
    }

    /// Parses a whole header (prefix included). Not yet authenticated: call
    /// `verify` with the data key before trusting any field.
    pub fn parse(bytes: &[u8], label: &str) -> Result<(Header, [u8; HEADER_MAC_LEN]), FormatError> {
        let bad = |why: &str| FormatError::MalformedHeader(label.into(), why.into());
        let prefix: &[u8; PREFIX_LEN] = bytes
            .get(..PREFIX_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| bad("shorter than its prefix"))?;
        let (len, version) = Self::parse_prefix_version(prefix, label)?;
        let len = len as usize;
        if bytes.len() != len {
            return Err(bad("length does not match its length field"));
        }
        let body_end = len - HEADER_MAC_LEN;
        let mut r = Reader {
            b: &bytes[..body_end],
            pos: PREFIX_LEN,
        };
        let kind = ObjectKind::from_u8(r.u8().ok_or_else(|| bad("short"))?)
            .ok_or_else(|| bad("unknown object kind"))?;
        let compression = match r.u8().ok_or_else(|| bad("short"))? {
            0 => Compression::None,
            1 => Compression::Zstd,
            _ => return Err(bad("unknown compression")),
        };
        let chunk_size = r.u32().ok_or_else(|| bad("short"))?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(bad("chunk size out of range"));
        }
        let data_key_id = r.array::<KEY_ID_LEN>().ok_or_else(|| bad("short"))?;
        let salt = r.array::<SALT_LEN>().ok_or_else(|| bad("short"))?;
        let generation = r.str16().ok_or_else(|| bad("bad generation field"))?;
        let object_name = r.str16().ok_or_else(|| bad("bad object name field"))?;
        let klen = r.u32().ok_or_else(|| bad("short"))? as usize;
        let keyring = r
            .take(klen)
            .ok_or_else(|| bad("bad keyring field"))?
            .to_vec();
        let attestation = if version == FORMAT_VERSION {
            let alen = r.u32().ok_or_else(|| bad("short"))? as usize;
            let a = r
                .take(alen)
                .ok_or_else(|| bad("bad attestation field"))?
                .to_vec();
            if a.is_empty() {
                return Err(bad("a version 2 header with an empty attestation"));
            }
            a
        } else {
            vec![]
        };
        if r.pos != body_end {
            return Err(bad("trailing bytes before the header MAC"));
        }
        let tag: [u8; HEADER_MAC_LEN] = bytes[body_end..].try_into().unwrap();
        Ok((
            Header {
                kind,
                compression,
                chunk_size,
                data_key_id,
                salt,
                generation,
                object_name,
                keyring,
                attestation,
            },
            tag,
        ))
    }

    /// Authenticates the header bytes with the data key.
    pub fn verify(
        bytes: &[u8],
        salt: &[u8],
        dek: &DataKey,
        label: &str,
    ) -> Result<(), FormatError> {
        let body = &bytes[..bytes.len() - HEADER_MAC_LEN];
        let tag = &bytes[bytes.len() - HEADER_MAC_LEN..];
        let key = dek.header_mac_key(salt);
        let mut m = <HmacSha256 as Mac>::new_from_slice(key.as_ref()).expect("any key length");
        m.update(body);
        m.verify_slice(tag)
            .map_err(|_| FormatError::HeaderAuth(label.into()))
    }
}

fn mac(dek: &DataKey, salt: &[u8], body: &[u8]) -> [u8; HEADER_MAC_LEN] {
    let key = dek.header_mac_key(salt);
    let mut m = <HmacSha256 as Mac>::new_from_slice(key.as_ref()).expect("any key length");
    m.update(body);
    m.finalize().into_bytes().into()
}

fn put_str16(b: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let n = u16::try_from(bytes.len()).expect("header strings are short");
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(bytes);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|s| s.try_into().unwrap())
    }
    fn str16(&mut self) -> Option<String> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}
