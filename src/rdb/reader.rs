//! The byte reader under the scanner: counts the offset (for error messages),
//! keeps the running CRC64, and can capture the bytes of one value.

use super::RdbError;
use crate::crc64::Crc64;
use std::io::Read;

pub struct RdbReader<R> {
    inner: R,
    pub offset: u64,
    crc: Option<Box<Crc64>>,
    pub capture: Option<Vec<u8>>,
    scratch: Vec<u8>,
}

impl<R: Read> RdbReader<R> {
    pub fn new(inner: R, checksum: bool) -> Self {
        RdbReader {
            inner,
            offset: 0,
            crc: checksum.then(|| Box::new(Crc64::new())),
            capture: None,
            scratch: vec![0; 64 << 10],
        }
    }

    fn account(&mut self, bytes: &[u8]) {
        if let Some(c) = &mut self.crc {
            c.update(bytes);
        }
        self.offset += bytes.len() as u64;
        if let Some(c) = &mut self.capture {
            c.extend_from_slice(bytes);
        }
    }

    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        let at = self.offset;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                RdbError::Truncated { offset: at }
            } else {
                RdbError::Io(e.to_string())
            }
        })?;
        self.account(buf);
        Ok(())
    }

    pub fn u8(&mut self) -> Result<u8, RdbError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    pub fn bytes<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut b = [0u8; N];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    pub fn vec(&mut self, n: u64) -> Result<Vec<u8>, RdbError> {
        if n > 1 << 32 {
            return Err(RdbError::Corrupt {
                offset: self.offset,
                what: format!("string length {n} is implausible"),
            });
        }
        // A length read from the input allocates at most 8 MiB before the
        // bytes it claims arrive; longer values grow as they do.
        const AHEAD: usize = 8 << 20;
        if n as usize <= AHEAD {
            let mut v = vec![0u8; n as usize];
            self.read_exact(&mut v)?;
            return Ok(v);
        }
        let mut v = Vec::with_capacity(AHEAD);
        let mut left = n as usize;
        while left > 0 {
            let start = v.len();
            let k = left.min(AHEAD);
            v.resize(start + k, 0);
            self.read_exact(&mut v[start..])?;
            left -= k;
        }
        Ok(v)
    }

    /// Passes over n bytes (still captured and checksummed).
    pub fn skip(&mut self, mut n: u64) -> Result<(), RdbError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = (|| {
            while n > 0 {
                let k = n.min(scratch.len() as u64) as usize;
                self.read_exact(&mut scratch[..k])?;
                n -= k as u64;
            }
            Ok(())
        })();
        self.scratch = scratch;
        r
    }

    /// The CRC64 of everything read so far (0 when not computed).
    pub fn crc(&self) -> u64 {
        self.crc.as_ref().map(|c| c.value()).unwrap_or(0)
    }
}
