//! Writing RDB encodings: the loader's FUNCTION RESTORE payloads, and whole
//! RDB files from DUMP payloads (the SCAN source). A DUMP payload is a value
//! exactly as an RDB holds it (type byte, then its encoding) followed by the
//! RDB version (u16 LE) and a CRC64 of all before it (u64 LE).

use crate::crc64::{checksum, Crc64};

/// Appends an RDB length (6, 14, 32 or 64 bits).
pub fn put_rdb_len(buf: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        buf.push(n as u8);
    } else if n < 1 << 14 {
        buf.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u32::MAX as u64 {
        buf.push(0x80);
        buf.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        buf.push(0x81);
        buf.extend_from_slice(&n.to_be_bytes());
    }
}

/// Appends an RDB string (length, then bytes; no integer or LZF forms).
pub fn put_rdb_string(buf: &mut Vec<u8>, s: &[u8]) {
    put_rdb_len(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

/// A DUMP payload that does not check out.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("a DUMP payload of {0} bytes is too short")]
    Short(usize),
    #[error("a DUMP payload's CRC64 does not match: it was damaged")]
    Crc,
    #[error("a DUMP payload is RDB version {0}, newer than the file's {1}")]
    Version(u16, u32),
}

/// Checks a DUMP payload and returns the value (type byte and encoding;
/// empty for a `FUNCTION DUMP` of no libraries) and its RDB version.
pub fn dump_value(payload: &[u8]) -> Result<(&[u8], u16), DumpError> {
    let n = payload.len();
    if n < 10 {
        return Err(DumpError::Short(n));
    }
    let (body, crc) = payload.split_at(n - 8);
    if checksum(body).to_le_bytes() != crc {
        return Err(DumpError::Crc);
    }
    let version = u16::from_le_bytes([body[n - 10], body[n - 9]]);
    Ok((&body[..n - 10], version))
}

/// An RDB file written piece by piece: the header and aux fields, the
/// function libraries, per database its SELECTDB and entries (encoded by
/// `EntryEncoder`s, possibly in parallel), then the EOF opcode and the
/// checksum. The checksum is over the bytes in the order they leave: each
/// piece is passed to `account` before it is sent.
pub struct RdbWriter {
    version: u32,
    crc: Box<Crc64>,
}

impl RdbWriter {
    /// The header (`REDIS` and the version) and the aux fields.
    pub fn new(version: u32, aux: &[(&str, &str)]) -> (Self, Vec<u8>) {
        let mut out = format!("REDIS{version:04}").into_bytes();
        for (k, v) in aux {
            out.push(0xFA);
            put_rdb_string(&mut out, k.as_bytes());
            put_rdb_string(&mut out, v.as_bytes());
        }
        let w = RdbWriter {
            version,
            crc: Box::new(Crc64::new()),
        };
        (w, out)
    }

    /// What writes entries for this file.
    pub fn encoder(&self) -> EntryEncoder {
        EntryEncoder {
            version: self.version,
        }
    }

    pub fn select_db(out: &mut Vec<u8>, db: u64) {
        out.push(0xFE);
        put_rdb_len(out, db);
    }

    /// The function libraries of a `FUNCTION DUMP` payload (a run of
    /// FUNCTION2 opcodes), before the databases.
    pub fn functions(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), DumpError> {
        let (body, _) = dump_value(payload)?;
        out.extend_from_slice(body);
        Ok(())
    }

    /// Counts bytes about to leave into the checksum.
    pub fn account(&mut self, piece: &[u8]) {
        self.crc.update(piece);
    }

    /// The EOF opcode and the checksum, after the rest of `out` (which is
    /// not yet accounted).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        out.push(0xFF);
        self.crc.update(out);
        out.extend_from_slice(&self.crc.value().to_le_bytes());
    }
}

/// Encodes keys from their DUMP payloads for one RDB file.
#[derive(Debug, Clone, Copy)]
pub struct EntryEncoder {
    version: u32,
}

impl EntryEncoder {
    /// One key, with its absolute expiry (ms).
    pub fn entry(
        &self,
        out: &mut Vec<u8>,
        key: &[u8],
        expire_ms: Option<i64>,
        payload: &[u8],
    ) -> Result<(), DumpError> {
        let (value, version) = dump_value(payload)?;
        if u32::from(version) > self.version {
            return Err(DumpError::Version(version, self.version));
        }
        if value.is_empty() {
            return Err(DumpError::Short(payload.len()));
        }
        if let Some(ms) = expire_ms {
            out.push(0xFC);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        out.push(value[0]);
        put_rdb_string(out, key);
        out.extend_from_slice(&value[1..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RDB written from DUMP payloads reads back: header, a database,
    /// a key with an expiry, the checksum; a damaged payload is refused.
    #[test]
    fn an_rdb_from_dump_payloads_scans_back() {
        // A string value "v" (type 0, then its RDB string), as DUMP gives it.
        let payload = crate::rdb::restore_payload(&[0, 1, b'v'], 10);
        let (mut w, mut out) = RdbWriter::new(10, &[("redis-ver", "7.0.15")]);
        RdbWriter::functions(&mut out, &crate::rdb::restore_payload(&[], 10)).unwrap();
        RdbWriter::select_db(&mut out, 3);
        let mut part = vec![];
        w.encoder()
            .entry(&mut part, b"k", Some(4_102_444_800_000), &payload)
            .unwrap();
        w.account(&out);
        let mut file = std::mem::take(&mut out);
        out = part;
        w.finish(&mut out);
        file.extend_from_slice(&out);
        let mut s = crate::rdb::RdbScanner::new(&file[..], Default::default()).unwrap();
        let mut keys = vec![];
        while let Some(item) = s.next().unwrap() {
            if let crate::rdb::Item::Entry(e) = item {
                keys.push((e.db, e.key.clone(), e.expire_ms));
            }
        }
        assert_eq!(keys, vec![(3, b"k".to_vec(), Some(4_102_444_800_000))]);
        let mut bad = payload.clone();
        bad[1] ^= 1;
        assert!(matches!(
            w_encoder().entry(&mut vec![], b"k", None, &bad),
            Err(DumpError::Crc)
        ));
        assert!(matches!(
            w_encoder().entry(
                &mut vec![],
                b"k",
                None,
                &crate::rdb::restore_payload(&[0, 1, b'v'], 11)
            ),
            Err(DumpError::Version(11, 10))
        ));
    }

    fn w_encoder() -> EntryEncoder {
        RdbWriter::new(10, &[]).0.encoder()
    }

    #[test]
    fn lengths_take_their_smallest_form() {
        let enc = |n| {
            let mut b = vec![];
            put_rdb_len(&mut b, n);
            b
        };
        assert_eq!(enc(63), [63]);
        assert_eq!(enc(64), [0x40, 64]);
        assert_eq!(enc(1 << 14), [0x80, 0, 0, 0x40, 0]);
        assert_eq!(enc(1 << 40).len(), 9);
    }
}
