//! One value decoded from its RDB encoding (any type of versions 1 to 12) into
//! its elements, and encoded again in the plain forms every server reads. This
//! is what converting for an older server stands on; values are held one at a
//! time.

use super::packed::{self, PackedError};
use super::writer::{put_rdb_len, put_rdb_string};

/// A stream entry id (ms, seq).
pub type StreamId = (u64, u64);

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    /// Fields, values, and each field's absolute expiry (ms) if it has one.
    Hash(Vec<(Vec<u8>, Vec<u8>, Option<i64>)>),
    Stream(Box<Stream>),
}

/// A stream as the RDB holds it: its entries stay in their listpacks (the
/// same in every version); the metadata around them is what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Per node: its master id (16 bytes) and its listpack.
    pub nodes: Vec<(Vec<u8>, Vec<u8>)>,
    pub length: u64,
    pub last_id: StreamId,
    /// RDB 10 on: first id, max deleted id, entries added.
    pub meta: Option<(StreamId, StreamId, u64)>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    /// RDB 10 on.
    pub entries_read: Option<u64>,
    /// Pending entries: id (16 bytes), delivery time (ms), delivery count.
    pub pel: Vec<([u8; 16], i64, u64)>,
    pub consumers: Vec<Consumer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub name: Vec<u8>,
    pub seen_ms: i64,
    /// RDB 11 on.
    pub active_ms: Option<i64>,
    pub pel: Vec<[u8; 16]>,
}

/// Why a value does not decode or encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value truncated at byte {0}")]
    Truncated(usize),
    #[error("value corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Packed(#[from] PackedError),
    #[error("{0} values cannot be converted")]
    Unsupported(&'static str),
}

/// A cursor over one value's bytes.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(ValueError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ValueError> {
        Ok(self.bytes(1)?[0])
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], ValueError> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn ms(&mut self) -> Result<i64, ValueError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }

    /// (length, is a special string encoding)
    fn len_or_special(&mut self) -> Result<(u64, bool), ValueError> {
        let b = self.u8()?;
        Ok(match b >> 6 {
            0 => (u64::from(b & 0x3F), false),
            1 => ((u64::from(b & 0x3F) << 8) | u64::from(self.u8()?), false),
            2 => match b {
                0x80 => (u64::from(u32::from_be_bytes(self.arr()?)), false),
                0x81 => (u64::from_be_bytes(self.arr()?), false),
                _ => return Err(ValueError::Corrupt(format!("bad length byte 0x{b:02x}"))),
            },
            _ => (u64::from(b & 0x3F), true),
        })
    }

    fn len(&mut self) -> Result<u64, ValueError> {
        match self.len_or_special()? {
            (n, false) => Ok(n),
            _ => Err(ValueError::Corrupt(
                "a string encoding where a length belongs".into(),
            )),
        }
    }

    /// A count of things that each take at least one byte: bounded by what
    /// is left. Reservations take `cap(n)`, so a forged count reserves little.
    fn count(&mut self) -> Result<usize, ValueError> {
        let n = self.len()?;
        let left = (self.b.len() - self.at) as u64;
        if n > left {
            return Err(ValueError::Corrupt(format!("{n} elements in {left} bytes")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<Vec<u8>, ValueError> {
        Ok(match self.len_or_special()? {
            (n, false) => self
                .bytes(usize::try_from(n).unwrap_or(usize::MAX))?
                .to_vec(),
            (0, true) => (self.u8()? as i8).to_string().into_bytes(),
            (1, true) => i16::from_le_bytes(self.arr()?).to_string().into_bytes(),
            (2, true) => i32::from_le_bytes(self.arr()?).to_string().into_bytes(),
            (3, true) => {
                let clen = self.len()?;
                let ulen = self.len()?;
                let c = self.bytes(usize::try_from(clen).unwrap_or(usize::MAX))?;
                super::scanner::lzf_decompress(c, ulen as usize)
                    .ok_or_else(|| ValueError::Corrupt("bad LZF data".into()))?
            }
            (e, true) => return Err(ValueError::Corrupt(format!("string encoding {e}"))),
        })
    }

    /// A zset score of type 3: length byte, text; 253/254/255 = nan/+inf/-inf.
    fn text_double(&mut self) -> Result<f64, ValueError> {
        match self.u8()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => score(self.bytes(usize::from(n))?),
        }
    }

    fn id(&mut self) -> Result<StreamId, ValueError> {
        Ok((self.len()?, self.len()?))
    }
}

/// What to reserve for `n` elements read from untrusted bytes: the vector
/// grows past it as elements really arrive.
fn cap(n: usize) -> usize {
    n.min(4096)
}

fn score(text: &[u8]) -> Result<f64, ValueError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ValueError::Corrupt(format!("score {:?}", text.escape_ascii().to_string())))
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn pairs(elems: Vec<Vec<u8>>) -> Result<Pairs, ValueError> {
    if !elems.len().is_multiple_of(2) {
        return Err(ValueError::Corrupt("an odd number of elements".into()));
    }
    let mut it = elems.into_iter();
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

fn zset(elems: Vec<Vec<u8>>) -> Result<Value, ValueError> {
    let members = pairs(elems)?
        .into_iter()
        .map(|(m, s)| Ok((m, score(&s)?)))
        .collect::<Result<_, ValueError>>()?;
    Ok(Value::ZSet(members))
}

fn hash(elems: Vec<Vec<u8>>) -> Result<Value, ValueError> {
    Ok(Value::Hash(
        pairs(elems)?
            .into_iter()
            .map(|(f, v)| (f, v, None))
            .collect(),
    ))
}

/// Decodes a value: `raw` is its type byte and encoding, as the scanner keeps it.
pub fn decode(raw: &[u8]) -> Result<Value, ValueError> {
    let (&t, rest) = raw.split_first().ok_or(ValueError::Truncated(0))?;
    let mut c = Cur { b: rest, at: 0 };
    let v = match t {
        0 => Value::String(c.string()?),
        1 | 2 => {
            let n = c.count()?;
            let items = (0..n).map(|_| c.string()).collect::<Result<_, _>>()?;
            if t == 1 {
                Value::List(items)
            } else {
                Value::Set(items)
            }
        }
        3 | 5 => {
            let n = c.count()?;
            let mut m = Vec::with_capacity(cap(n));
            for _ in 0..n {
                let member = c.string()?;
                let s = if t == 3 {
                    c.text_double()?
                } else {
                    f64::from_le_bytes(c.arr()?)
                };
                m.push((member, s));
            }
            Value::ZSet(m)
        }
        4 => {
            let n = c.count()?;
            let mut h = Vec::with_capacity(cap(n));
            for _ in 0..n {
                h.push((c.string()?, c.string()?, None));
            }
            Value::Hash(h)
        }
        6 | 7 => return Err(ValueError::Unsupported("module")),
        9 => return Err(ValueError::Unsupported("zipmap (Redis 2.x)")),
        10 => Value::List(packed::ziplist(&c.string()?)?),
        11 => Value::Set(packed::intset(&c.string()?)?),
        12 => zset(packed::ziplist(&c.string()?)?)?,
        13 => hash(packed::ziplist(&c.string()?)?)?,
        14 => {
            let n = c.count()?;
            let mut items = vec![];
            for _ in 0..n {
                items.extend(packed::ziplist(&c.string()?)?);
            }
            Value::List(items)
        }
        15 | 19 | 21 => Value::Stream(Box::new(stream(&mut c, t)?)),
        16 => hash(packed::listpack(&c.string()?)?)?,
        17 => zset(packed::listpack(&c.string()?)?)?,
        18 => {
            let n = c.count()?;
            let mut items = vec![];
            for _ in 0..n {
                match c.len()? {
                    1 => items.push(c.string()?),
                    2 => items.extend(packed::listpack(&c.string()?)?),
                    k => return Err(ValueError::Corrupt(format!("quicklist container {k}"))),
                }
            }
            Value::List(items)
        }
        20 => Value::Set(packed::listpack(&c.string()?)?),
        24 => {
            let min = c.ms()?;
            let n = c.count()?;
            let mut h = Vec::with_capacity(cap(n));
            for _ in 0..n {
                // 0: no TTL; else relative to the minimum, plus one.
                let ttl = c.len()?;
                let at = match ttl {
                    0 => None,
                    t => Some(
                        i64::try_from(t - 1)
                            .ok()
                            .and_then(|d| min.checked_add(d))
                            .ok_or_else(|| ValueError::Corrupt(format!("field TTL {t}")))?,
                    ),
                };
                h.push((c.string()?, c.string()?, at));
            }
            Value::Hash(h)
        }
        25 => {
            c.ms()?;
            let elems = packed::listpack(&c.string()?)?;
            if !elems.len().is_multiple_of(3) {
                return Err(ValueError::Corrupt("hash triplets do not add up".into()));
            }
            let mut h = Vec::with_capacity(elems.len() / 3);
            let mut it = elems.into_iter();
            while let (Some(f), Some(v), Some(ttl)) = (it.next(), it.next(), it.next()) {
                let at: i64 = std::str::from_utf8(&ttl)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ValueError::Corrupt("a field TTL that is no number".into()))?;
                h.push((f, v, (at != 0).then_some(at)));
            }
            Value::Hash(h)
        }
        t => return Err(ValueError::Corrupt(format!("unknown type {t}"))),
    };
    if c.at != c.b.len() {
        return Err(ValueError::Corrupt(format!(
            "{} bytes after the value",
            c.b.len() - c.at
        )));
    }
    Ok(v)
}

fn stream(c: &mut Cur, t: u8) -> Result<Stream, ValueError> {
    let n = c.count()?;
    let mut nodes = Vec::with_capacity(cap(n));
    for _ in 0..n {
        nodes.push((c.string()?, c.string()?));
    }
    let length = c.len()?;
    let last_id = c.id()?;
    let meta = if t >= 19 {
        Some((c.id()?, c.id()?, c.len()?))
    } else {
        None
    };
    let n = c.count()?;
    let mut groups = Vec::with_capacity(cap(n));
    for _ in 0..n {
        let name = c.string()?;
        let last_id = c.id()?;
        let entries_read = if t >= 19 { Some(c.len()?) } else { None };
        let n = c.count()?;
        let mut pel = Vec::with_capacity(cap(n));
        for _ in 0..n {
            pel.push((c.arr()?, c.ms()?, c.len()?));
        }
        let n = c.count()?;
        let mut consumers = Vec::with_capacity(cap(n));
        for _ in 0..n {
            let name = c.string()?;
            let seen_ms = c.ms()?;
            let active_ms = if t >= 21 { Some(c.ms()?) } else { None };
            let n = c.count()?;
            let mut cpel = Vec::with_capacity(cap(n));
            for _ in 0..n {
                cpel.push(c.arr()?);
            }
            consumers.push(Consumer {
                name,
                seen_ms,
                active_ms,
                pel: cpel,
            });
        }
        groups.push(Group {
            name,
            last_id,
            entries_read,
            pel,
            consumers,
        });
    }
    Ok(Stream {
        nodes,
        length,
        last_id,
        meta,
        groups,
    })
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    put_rdb_len(out, id.0);
    put_rdb_len(out, id.1);
}

/// Encodes a value for a server that reads RDB `version` (at least 9), in the
/// plain forms (list, set, hash, zset with binary scores) that every server
/// reads and packs again on load; a stream takes the newest of its forms
/// that `version` has. Hash field TTLs are not written (no plain form holds them).
pub fn encode(v: &Value, version: u32) -> Vec<u8> {
    let mut out = vec![];
    let strings = |out: &mut Vec<u8>, t: u8, items: &[Vec<u8>]| {
        out.push(t);
        put_rdb_len(out, items.len() as u64);
        for s in items {
            put_rdb_string(out, s);
        }
    };
    match v {
        Value::String(s) => {
            out.push(0);
            put_rdb_string(&mut out, s);
        }
        Value::List(items) => strings(&mut out, 1, items),
        Value::Set(items) => strings(&mut out, 2, items),
        Value::ZSet(m) => {
            out.push(5);
            put_rdb_len(&mut out, m.len() as u64);
            for (member, s) in m {
                put_rdb_string(&mut out, member);
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        Value::Hash(h) => {
            out.push(4);
            put_rdb_len(&mut out, h.len() as u64);
            for (f, val, _) in h {
                put_rdb_string(&mut out, f);
                put_rdb_string(&mut out, val);
            }
        }
        Value::Stream(s) => encode_stream(&mut out, s, version),
    }
    out
}

fn encode_stream(out: &mut Vec<u8>, s: &Stream, version: u32) {
    let t: u8 = match version {
        11.. => 21,
        10 => 19,
        _ => 15,
    };
    out.push(t);
    put_rdb_len(out, s.nodes.len() as u64);
    for (id, lp) in &s.nodes {
        put_rdb_string(out, id);
        put_rdb_string(out, lp);
    }
    put_rdb_len(out, s.length);
    put_id(out, s.last_id);
    if t >= 19 {
        // A stream from RDB 9 has no such fields: what Redis assumes for it.
        let (first, max_deleted, added) = s.meta.unwrap_or(((0, 0), (0, 0), s.length));
        put_id(out, first);
        put_id(out, max_deleted);
        put_rdb_len(out, added);
    }
    put_rdb_len(out, s.groups.len() as u64);
    for g in &s.groups {
        put_rdb_string(out, &g.name);
        put_id(out, g.last_id);
        if t >= 19 {
            put_rdb_len(out, g.entries_read.unwrap_or(0));
        }
        put_rdb_len(out, g.pel.len() as u64);
        for (id, time, count) in &g.pel {
            out.extend_from_slice(id);
            out.extend_from_slice(&time.to_le_bytes());
            put_rdb_len(out, *count);
        }
        put_rdb_len(out, g.consumers.len() as u64);
        for c in &g.consumers {
            put_rdb_string(out, &c.name);
            out.extend_from_slice(&c.seen_ms.to_le_bytes());
            if t >= 21 {
                out.extend_from_slice(&c.active_ms.unwrap_or(c.seen_ms).to_le_bytes());
            }
            put_rdb_len(out, c.pel.len() as u64);
            for id in &c.pel {
                out.extend_from_slice(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain values decode, encode and decode again to the same elements.
    #[test]
    fn plain_values_survive_a_round_trip() {
        for v in [
            Value::String(b"v".to_vec()),
            Value::List(vec![b"a".to_vec(), b"12".to_vec()]),
            Value::Set(vec![b"x".to_vec()]),
            Value::ZSet(vec![(b"m".to_vec(), 1.25), (b"n".to_vec(), f64::INFINITY)]),
            Value::Hash(vec![(b"f".to_vec(), b"v".to_vec(), None)]),
        ] {
            assert_eq!(decode(&encode(&v, 9)).unwrap(), v);
        }
    }

    #[test]
    fn a_truncated_or_padded_value_is_refused() {
        let raw = encode(&Value::List(vec![b"abc".to_vec()]), 9);
        assert!(decode(&raw[..raw.len() - 1]).is_err());
        let mut long = raw.clone();
        long.push(0);
        assert!(decode(&long).unwrap_err().to_string().contains("after"));
        // A forged count does not reserve memory.
        assert!(decode(&[1, 0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn hash_field_ttls_are_absolute_after_decoding() {
        let mut raw = vec![24];
        raw.extend_from_slice(&1_000i64.to_le_bytes());
        put_rdb_len(&mut raw, 2);
        put_rdb_len(&mut raw, 0);
        put_rdb_string(&mut raw, b"keep");
        put_rdb_string(&mut raw, b"1");
        put_rdb_len(&mut raw, 6); // 1000 + 6 - 1
        put_rdb_string(&mut raw, b"ttl");
        put_rdb_string(&mut raw, b"2");
        assert_eq!(
            decode(&raw).unwrap(),
            Value::Hash(vec![
                (b"keep".to_vec(), b"1".to_vec(), None),
                (b"ttl".to_vec(), b"2".to_vec(), Some(1_005)),
            ])
        );
    }
}
