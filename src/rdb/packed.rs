//! Reading Redis's packed encodings (listpack.c, ziplist.c, intset.c) into
//! their elements, for converting a value to an older RDB version or into
//! commands. Integers become their decimal text, as Redis returns them.

/// Why a packed blob does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {kind}: {what}")]
pub struct PackedError {
    pub kind: &'static str,
    pub what: String,
}

fn bad(kind: &'static str, what: impl Into<String>) -> PackedError {
    PackedError {
        kind,
        what: what.into(),
    }
}

fn take<'a>(b: &'a [u8], at: usize, n: usize, kind: &'static str) -> Result<&'a [u8], PackedError> {
    at.checked_add(n)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| bad(kind, format!("{n} bytes at {at} run past its end")))
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Sign-extends the low `bits` of `v`.
fn signed(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// The elements of a listpack: 6-byte header (total bytes, count), entries
/// (encoding, data, back-length), 0xFF.
pub fn listpack(b: &[u8]) -> Result<Vec<Vec<u8>>, PackedError> {
    const K: &str = "listpack";
    let total = le(take(b, 0, 4, K)?) as usize;
    if total != b.len() {
        return Err(bad(K, format!("says {total} bytes, has {}", b.len())));
    }
    let count = le(take(b, 4, 2, K)?) as usize;
    let mut out = Vec::with_capacity(count.min(b.len()));
    let mut at = 6;
    loop {
        let e = take(b, at, 1, K)?[0];
        if e == 0xFF {
            break;
        }
        let (head, data_len, elem): (usize, usize, Option<i64>) = match e {
            0x00..=0x7F => (1, 0, Some(i64::from(e))),
            0x80..=0xBF => (1, usize::from(e & 0x3F), None),
            0xC0..=0xDF => {
                let v = (u64::from(e & 0x1F) << 8) | u64::from(take(b, at + 1, 1, K)?[0]);
                (2, 0, Some(signed(v, 13)))
            }
            0xE0..=0xEF => {
                let n = (usize::from(e & 0x0F) << 8) | usize::from(take(b, at + 1, 1, K)?[0]);
                (2, n, None)
            }
            0xF0 => (5, le(take(b, at + 1, 4, K)?) as usize, None),
            0xF1..=0xF4 => {
                let n = [2, 3, 4, 8][usize::from(e - 0xF1)];
                let v = le(take(b, at + 1, n, K)?);
                (1 + n, 0, Some(signed(v, 8 * n as u32)))
            }
            _ => return Err(bad(K, format!("unknown encoding 0x{e:02x} at {at}"))),
        };
        let len = head + data_len;
        match elem {
            Some(i) => {
                take(b, at, len, K)?;
                out.push(i.to_string().into_bytes());
            }
            None => out.push(take(b, at + head, data_len, K)?.to_vec()),
        }
        at += len + backlen_size(len);
    }
    if at + 1 != b.len() {
        return Err(bad(K, "bytes after its end mark"));
    }
    if count != 0xFFFF && count != out.len() {
        return Err(bad(K, format!("says {count} entries, has {}", out.len())));
    }
    Ok(out)
}

/// Bytes of a listpack back-length for an entry of `len` bytes.
fn backlen_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// The elements of a ziplist: 10-byte header (bytes, tail offset, count),
/// entries (previous length, encoding, data), 0xFF.
pub fn ziplist(b: &[u8]) -> Result<Vec<Vec<u8>>, PackedError> {
    const K: &str = "ziplist";
    let total = le(take(b, 0, 4, K)?) as usize;
    if total != b.len() {
        return Err(bad(K, format!("says {total} bytes, has {}", b.len())));
    }
    let count = le(take(b, 8, 2, K)?) as usize;
    let mut out = Vec::with_capacity(count.min(b.len()));
    let mut at = 10;
    loop {
        let p = take(b, at, 1, K)?[0];
        if p == 0xFF {
            break;
        }
        at += if p == 0xFE { 5 } else { 1 };
        let e = take(b, at, 1, K)?[0];
        let (head, data) = match e >> 6 {
            0 => (1, usize::from(e & 0x3F)),
            1 => (
                2,
                (usize::from(e & 0x3F) << 8) | usize::from(take(b, at + 1, 1, K)?[0]),
            ),
            2 => {
                let n = take(b, at + 1, 4, K)?;
                (5, u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
            }
            _ => (1, 0),
        };
        if e >> 6 != 3 {
            out.push(take(b, at + head, data, K)?.to_vec());
            at += head + data;
            continue;
        }
        let (n, v) = match e {
            0xC0 => (2, signed(le(take(b, at + 1, 2, K)?), 16)),
            0xD0 => (4, signed(le(take(b, at + 1, 4, K)?), 32)),
            0xE0 => (8, signed(le(take(b, at + 1, 8, K)?), 64)),
            0xF0 => (3, signed(le(take(b, at + 1, 3, K)?), 24)),
            0xFE => (1, signed(le(take(b, at + 1, 1, K)?), 8)),
            0xF1..=0xFD => (0, i64::from(e & 0x0F) - 1),
            _ => return Err(bad(K, format!("unknown encoding 0x{e:02x} at {at}"))),
        };
        out.push(v.to_string().into_bytes());
        at += 1 + n;
    }
    if at + 1 != b.len() {
        return Err(bad(K, "bytes after its end mark"));
    }
    if count != 0xFFFF && count != out.len() {
        return Err(bad(K, format!("says {count} entries, has {}", out.len())));
    }
    Ok(out)
}

/// The members of an intset: encoding (2, 4 or 8 bytes), count, values.
pub fn intset(b: &[u8]) -> Result<Vec<Vec<u8>>, PackedError> {
    const K: &str = "intset";
    let width = le(take(b, 0, 4, K)?) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(bad(K, format!("unknown width {width}")));
    }
    let count = le(take(b, 4, 4, K)?) as usize;
    let body = &b[8..];
    if Some(body.len()) != count.checked_mul(width) {
        return Err(bad(
            K,
            format!("{count} members of {width} bytes do not fit"),
        ));
    }
    Ok(body
        .chunks_exact(width)
        .map(|c| signed(le(c), 8 * width as u32).to_string().into_bytes())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listpack as Redis 7 writes it: "a", 5, -300, a 13-byte string,
    /// 70000 (24-bit), i64::MIN.
    fn sample_listpack() -> Vec<u8> {
        let mut body = vec![];
        let mut entry = |enc: &[u8]| {
            body.extend_from_slice(enc);
            body.push(enc.len() as u8); // every entry here is < 128 bytes
        };
        entry(&[0x81, b'a']);
        entry(&[5]);
        let v = (-300i64 as u64) & 0x1FFF;
        entry(&[0xC0 | (v >> 8) as u8, v as u8]);
        let mut s = vec![0x80 | 13];
        s.extend_from_slice(b"thirteen-char");
        entry(&s);
        entry(&[0xF2, 0x70, 0x11, 0x01]);
        let mut m = vec![0xF4];
        m.extend_from_slice(&i64::MIN.to_le_bytes());
        entry(&m);
        let mut lp = ((6 + body.len() + 1) as u32).to_le_bytes().to_vec();
        lp.extend_from_slice(&6u16.to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xFF);
        lp
    }

    #[test]
    fn listpack_entries_of_every_width_read_back() {
        let got = listpack(&sample_listpack()).unwrap();
        let want: Vec<&[u8]> = vec![
            b"a",
            b"5",
            b"-300",
            b"thirteen-char",
            b"70000",
            b"-9223372036854775808",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_damaged_listpack_is_refused() {
        let mut lp = sample_listpack();
        lp[4] = 7; // count
        assert!(listpack(&lp).unwrap_err().what.contains("7 entries"));
        let lp = sample_listpack();
        assert!(listpack(&lp[..lp.len() - 3]).is_err());
    }

    #[test]
    fn ziplist_entries_read_back() {
        // "ab", 12 (immediate), -2 (int8), 1000 (int16), then the end mark.
        let body: Vec<u8> = vec![
            0, 0x02, b'a', b'b', 4, 0xFD, 2, 0xFE, 0xFE, 3, 0xC0, 0xE8, 0x03,
        ];
        let mut zl = ((10 + body.len() + 1) as u32).to_le_bytes().to_vec();
        zl.extend_from_slice(&0u32.to_le_bytes());
        zl.extend_from_slice(&4u16.to_le_bytes());
        zl.extend_from_slice(&body);
        zl.push(0xFF);
        let want: Vec<&[u8]> = vec![b"ab", b"12", b"-2", b"1000"];
        assert_eq!(ziplist(&zl).unwrap(), want);
    }

    #[test]
    fn intset_members_read_back() {
        let mut is = 2u32.to_le_bytes().to_vec();
        is.extend_from_slice(&2u32.to_le_bytes());
        is.extend_from_slice(&(-5i16).to_le_bytes());
        is.extend_from_slice(&300i16.to_le_bytes());
        let want: Vec<&[u8]> = vec![b"-5", b"300"];
        assert_eq!(intset(&is).unwrap(), want);
        assert!(intset(&is[..11]).is_err());
    }
}
