//! Walking the RDB structure. Type and opcode numbers are Redis's (rdb.h).

use super::reader::RdbReader;
use super::{RdbError, MAX_RDB_VERSION};
use std::io::Read;

// Opcodes.
const OP_SLOT_INFO: u8 = 0xF4;
const OP_FUNCTION2: u8 = 0xF5;
const OP_FUNCTION_PRE_GA: u8 = 0xF6;
const OP_MODULE_AUX: u8 = 0xF7;
const OP_IDLE: u8 = 0xF8;
const OP_FREQ: u8 = 0xF9;
const OP_AUX: u8 = 0xFA;
const OP_RESIZEDB: u8 = 0xFB;
const OP_EXPIRETIME_MS: u8 = 0xFC;
const OP_EXPIRETIME: u8 = 0xFD;
const OP_SELECTDB: u8 = 0xFE;
const OP_EOF: u8 = 0xFF;

// Module value opcodes.
const MOD_EOF: u64 = 0;
const MOD_SINT: u64 = 1;
const MOD_UINT: u64 = 2;
const MOD_FLOAT: u64 = 3;
const MOD_DOUBLE: u64 = 4;
const MOD_STRING: u64 = 5;

/// One key and its value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub db: u64,
    pub key: Vec<u8>,
    /// Absolute expiry in Unix milliseconds.
    pub expire_ms: Option<i64>,
    pub idle: Option<u64>,
    pub freq: Option<u8>,
    /// RDB type byte.
    pub type_byte: u8,
    /// Bytes the value takes in the RDB.
    pub value_len: u64,
    /// The type byte and the value's bytes exactly as in the RDB (empty unless
    /// values are kept): with the RDB version and a CRC64 they make a RESTORE payload.
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Aux {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    ResizeDb {
        db: u64,
        size: u64,
        expires: u64,
    },
    Entry(Entry),
    Function(Vec<u8>),
    /// A module's aux data; `raw` is its bytes exactly as in the RDB, from
    /// the opcode on (empty unless values are kept), to copy into an RDB of
    /// the same version.
    ModuleAux {
        module_id: u64,
        raw: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Keep each value's raw bytes (for RESTORE); off to only count and list.
    pub keep_values: bool,
    /// Check the CRC64 trailer. Off only where the bytes were already checked
    /// (the replication transfer checks it as they arrive).
    pub verify_checksum: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            keep_values: false,
            verify_checksum: true,
        }
    }
}

pub struct RdbScanner<R> {
    src: RdbReader<R>,
    version: u32,
    db: u64,
    opts: ScanOptions,
    finished: bool,
}

impl<R: Read> RdbScanner<R> {
    /// Reads the header (`REDIS` and four version digits).
    pub fn new(input: R, opts: ScanOptions) -> Result<Self, RdbError> {
        let mut src = RdbReader::new(input, opts.verify_checksum);
        let head: [u8; 9] = src.bytes().map_err(|e| match e {
            RdbError::Truncated { .. } => RdbError::BadMagic,
            e => e,
        })?;
        if &head[..6] == b"VALKEY" {
            return Err(RdbError::Valkey(
                String::from_utf8_lossy(&head).into_owned(),
            ));
        }
        if &head[..5] != b"REDIS" {
            return Err(RdbError::BadMagic);
        }
        let version: u32 = std::str::from_utf8(&head[5..])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(RdbError::BadMagic)?;
        if version == 0 || version > MAX_RDB_VERSION {
            return Err(RdbError::UnsupportedVersion(version));
        }
        Ok(RdbScanner {
            src,
            version,
            db: 0,
            opts,
            finished: false,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn offset(&self) -> u64 {
        self.src.offset
    }

    /// The next item; None after the EOF opcode and a good checksum.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item>, RdbError> {
        if self.finished {
            return Ok(None);
        }
        let mut expire_ms = None;
        let mut idle = None;
        let mut freq = None;
        loop {
            let at = self.src.offset;
            let op = self.src.u8()?;
            match op {
                OP_EOF => {
                    self.finished = true;
                    if self.version >= 5 && self.opts.verify_checksum {
                        let actual = self.src.crc();
                        let expected = u64::from_le_bytes(self.src.bytes()?);
                        // Zero: written with rdbchecksum no.
                        if expected != 0 && expected != actual {
                            return Err(RdbError::BadChecksum { expected, actual });
                        }
                    }
                    return Ok(None);
                }
                OP_SELECTDB => self.db = self.len()?,
                OP_RESIZEDB => {
                    let size = self.len()?;
                    let expires = self.len()?;
                    return Ok(Some(Item::ResizeDb {
                        db: self.db,
                        size,
                        expires,
                    }));
                }
                OP_EXPIRETIME_MS => expire_ms = Some(i64::from_le_bytes(self.src.bytes()?)),
                OP_EXPIRETIME => {
                    expire_ms = Some(i32::from_le_bytes(self.src.bytes()?) as i64 * 1000)
                }
                OP_IDLE => idle = Some(self.len()?),
                OP_FREQ => freq = Some(self.src.u8()?),
                OP_AUX => {
                    let key = self.string()?;
                    let value = self.string()?;
                    return Ok(Some(Item::Aux { key, value }));
                }
                OP_MODULE_AUX => {
                    if self.opts.keep_values {
                        self.src.capture = Some(vec![OP_MODULE_AUX]);
                    }
                    let walked = self.module_aux();
                    let raw = self.src.capture.take().unwrap_or_default();
                    let module_id = walked?;
                    return Ok(Some(Item::ModuleAux { module_id, raw }));
                }
                OP_FUNCTION2 => return Ok(Some(Item::Function(self.string()?))),
                OP_FUNCTION_PRE_GA => {
                    // 7.0 release candidates: name, engine, has-description flag,
                    // [description], code. Yielded as its code.
                    self.skip_string()?;
                    self.skip_string()?;
                    if self.len()? != 0 {
                        self.skip_string()?;
                    }
                    return Ok(Some(Item::Function(self.string()?)));
                }
                OP_SLOT_INFO => {
                    self.len()?;
                    self.len()?;
                    self.len()?;
                }
                t => {
                    // A value: type byte, key, value.
                    let keep = self.opts.keep_values;
                    let key = self.string()?;
                    if keep {
                        self.src.capture = Some(vec![t]);
                    }
                    let value_at = self.src.offset;
                    let walked = self.skip_value(t, at);
                    let raw = self.src.capture.take().unwrap_or_default();
                    walked?;
                    return Ok(Some(Item::Entry(Entry {
                        db: self.db,
                        key,
                        expire_ms,
                        idle,
                        freq,
                        type_byte: t,
                        value_len: self.src.offset - value_at,
                        raw,
                    })));
                }
            }
        }
    }

    /// A length; special encodings are an error here.
    fn len(&mut self) -> Result<u64, RdbError> {
        match self.len_or_special()? {
            (n, false) => Ok(n),
            (_, true) => Err(self.corrupt("encoded value where a length belongs")),
        }
    }

    /// (value, is_special_encoding)
    fn len_or_special(&mut self) -> Result<(u64, bool), RdbError> {
        let at = self.src.offset;
        let b = self.src.u8()?;
        Ok(match b >> 6 {
            0 => ((b & 0x3f) as u64, false),
            1 => ((((b & 0x3f) as u64) << 8) | self.src.u8()? as u64, false),
            2 => match b {
                0x80 => (u32::from_be_bytes(self.src.bytes()?) as u64, false),
                0x81 => (u64::from_be_bytes(self.src.bytes()?), false),
                _ => {
                    return Err(RdbError::Corrupt {
                        offset: at,
                        what: format!("bad length byte 0x{b:02x}"),
                    })
                }
            },
            _ => ((b & 0x3f) as u64, true),
        })
    }

    /// Reads a string (raw, integer-encoded or LZF) as stored; integer strings
    /// become their decimal text, LZF strings are decompressed.
    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.len_or_special()? {
            (n, false) => self.src.vec(n),
            (0, true) => Ok((self.src.u8()? as i8).to_string().into_bytes()),
            (1, true) => Ok(i16::from_le_bytes(self.src.bytes()?)
                .to_string()
                .into_bytes()),
            (2, true) => Ok(i32::from_le_bytes(self.src.bytes()?)
                .to_string()
                .into_bytes()),
            (3, true) => {
                let clen = self.len()?;
                let ulen = self.len()?;
                let c = self.src.vec(clen)?;
                lzf_decompress(&c, ulen as usize).ok_or_else(|| self.corrupt("bad LZF data"))
            }
            (e, true) => Err(self.corrupt(&format!("unknown string encoding {e}"))),
        }
    }

    fn skip_string(&mut self) -> Result<(), RdbError> {
        match self.len_or_special()? {
            (n, false) => self.src.skip(n),
            (0, true) => self.src.skip(1),
            (1, true) => self.src.skip(2),
            (2, true) => self.src.skip(4),
            (3, true) => {
                let clen = self.len()?;
                let _ulen = self.len()?;
                self.src.skip(clen)
            }
            (e, true) => Err(self.corrupt(&format!("unknown string encoding {e}"))),
        }
    }

    fn skip_strings(&mut self, n: u64) -> Result<(), RdbError> {
        for _ in 0..n {
            self.skip_string()?;
        }
        Ok(())
    }

    /// A zset score stored as text: one length byte, 253/254/255 = nan/+inf/-inf.
    fn skip_text_double(&mut self) -> Result<(), RdbError> {
        let n = self.src.u8()?;
        if n < 253 {
            self.src.skip(n as u64)?;
        }
        Ok(())
    }

    fn skip_value(&mut self, t: u8, at: u64) -> Result<(), RdbError> {
        match t {
            // string; ziplist/intset/listpack blobs of every kind
            0 | 9..=13 | 16 | 17 | 20 => self.skip_string(),
            // list, set
            1 | 2 => {
                let n = self.len()?;
                self.skip_strings(n)
            }
            // zset with text scores
            3 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.skip_text_double()?;
                }
                Ok(())
            }
            // hash
            4 => {
                let n = self.len()?;
                self.skip_strings(n.saturating_mul(2))
            }
            // zset2: binary double scores
            5 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.src.skip(8)?;
                }
                Ok(())
            }
            6 => Err(RdbError::Opaque {
                offset: at,
                what: "a module value of the pre-release 4.0 format (type 6)".into(),
            }),
            7 => {
                let _module_id = self.len()?;
                self.skip_module_opcodes()
            }
            // quicklist of ziplists
            14 => {
                let n = self.len()?;
                self.skip_strings(n)
            }
            // streams, versions 1 to 3
            15 | 19 | 21 => self.skip_stream(t),
            // quicklist 2: container kind + node blob
            18 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.len()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            // hash with field TTLs (7.4+): min expire, then fields with TTLs
            24 => {
                self.src.skip(8)?;
                let n = self.len()?;
                for _ in 0..n {
                    self.len()?; // TTL relative to the min expire, 0 = none
                    self.skip_string()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            // listpack hash with field TTLs (7.4+): min expire, then the listpack
            25 => {
                self.src.skip(8)?;
                self.skip_string()
            }
            _ => Err(RdbError::Unknown {
                what: "type",
                byte: t,
                offset: at,
            }),
        }
    }

    /// A module aux field after its opcode: the module id, when (opcode
    /// and value), then the module's own opcodes up to their EOF.
    fn module_aux(&mut self) -> Result<u64, RdbError> {
        let module_id = self.len()?;
        let _when_opcode = self.len()?;
        let _when = self.len()?;
        self.skip_module_opcodes()?;
        Ok(module_id)
    }

    fn skip_module_opcodes(&mut self) -> Result<(), RdbError> {
        loop {
            match self.len()? {
                MOD_EOF => return Ok(()),
                MOD_SINT | MOD_UINT => {
                    self.len()?;
                }
                MOD_FLOAT => self.src.skip(4)?,
                MOD_DOUBLE => self.src.skip(8)?,
                MOD_STRING => self.skip_string()?,
                op => return Err(self.corrupt(&format!("unknown module opcode {op}"))),
            }
        }
    }

    fn skip_stream(&mut self, t: u8) -> Result<(), RdbError> {
        let nodes = self.len()?;
        self.skip_strings(nodes.saturating_mul(2))?; // master ID and listpack per node
        self.len()?; // length
        self.len()?; // last id ms
        self.len()?; // last id seq
        if t >= 19 {
            for _ in 0..5 {
                self.len()?; // first id, max deleted id, entries added
            }
        }
        let groups = self.len()?;
        for _ in 0..groups {
            self.skip_string()?; // name
            self.len()?; // last delivered id
            self.len()?;
            if t >= 19 {
                self.len()?; // entries read
            }
            let pel = self.len()?;
            for _ in 0..pel {
                self.src.skip(16 + 8)?; // id, delivery time
                self.len()?; // delivery count
            }
            let consumers = self.len()?;
            for _ in 0..consumers {
                self.skip_string()?; // name
                self.src.skip(8)?; // seen time
                if t >= 21 {
                    self.src.skip(8)?; // active time
                }
                let cpel = self.len()?;
                self.src.skip(cpel.saturating_mul(16))?;
            }
        }
        Ok(())
    }

    fn corrupt(&self, what: &str) -> RdbError {
        RdbError::Corrupt {
            offset: self.src.offset,
            what: what.into(),
        }
    }
}

/// LZF (liblzf) decompression into exactly `ulen` bytes; None if malformed.
pub(super) fn lzf_decompress(input: &[u8], ulen: usize) -> Option<Vec<u8>> {
    // `ulen` comes from the input: reserve only what the input can give.
    let mut out = Vec::with_capacity(ulen.min(input.len().saturating_mul(4)).min(1 << 24));
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(input.get(i..i + n)?);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(i)? as usize + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > ulen {
            return None;
        }
    }
    (out.len() == ulen).then_some(out)
}

/// The DUMP/RESTORE payload for an entry's raw bytes: value, 2-byte RDB version
/// (little-endian), CRC64 of both (little-endian).
pub fn restore_payload(raw: &[u8], rdb_version: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(raw.len() + 10);
    p.extend_from_slice(raw);
    p.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = crate::crc64::checksum(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}
