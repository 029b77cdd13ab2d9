//! Writing RDB encodings (the loader's FUNCTION RESTORE payloads today; the
//! re-encoder for older targets and the SCAN source's RDB later).

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

#[cfg(test)]
mod tests {
    use super::put_rdb_len;

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
