//! Rewriting a whole RDB stream for servers that read an older RDB version
//! (`export --rdb-version N`): the scanner walks it, each value is converted
//! where that version lacks its type (`convert.rs`), and `RdbWriter` writes
//! the header, aux fields, databases, expiries and a new checksum. One entry
//! in memory at a time; the output leaves in pieces.

use super::convert::{add_lost, convert, ConvertError, Lost, LOST_FUNCTIONS, OLDEST_CONVERSION};
use super::writer::{put_rdb_len, put_rdb_string};
use super::{Item, RdbError, RdbScanner, RdbWriter, ScanOptions};
use std::io::Read;

/// What a rewrite did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The version read and the version written.
    pub from: u32,
    pub to: u32,
    pub keys: u64,
    /// Entries a selection left out.
    pub left_out: u64,
    /// Values that were converted (the rest were copied as they were).
    pub converted: u64,
    pub lost: Lost,
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error(transparent)]
    Rdb(#[from] RdbError),
    #[error("key {key} (db {db}): {why}")]
    Convert {
        key: String,
        db: u64,
        why: ConvertError,
    },
    #[error("the RDB holds module aux data, which cannot be rewritten for another RDB version")]
    ModuleAux,
    #[error("RDB version {0} cannot be written: redvault converts for RDB 9 (Redis 5.0) to 12")]
    Version(u32),
    #[error("the reader of the rewritten RDB went away")]
    Stopped,
}

/// Reads an RDB from `input` and writes it for RDB `to` (a file already at
/// or below `to` keeps its version and values), passing pieces of about
/// `piece` bytes to `emit`, which returns false to stop.
pub fn rewrite(
    input: impl Read,
    to: u32,
    piece: usize,
    emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<Rewritten, RewriteError> {
    rewrite_selected(input, to, piece, |_| true, emit)
}

/// [`rewrite`] of only the entries `keep` accepts (the others are left
/// out; `keys` counts those written): a filtered snapshot, with its own
/// checksum, for a target that loads it whole.
pub fn rewrite_selected(
    input: impl Read,
    to: u32,
    piece: usize,
    mut keep: impl FnMut(&super::Entry) -> bool,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<Rewritten, RewriteError> {
    if !(OLDEST_CONVERSION..=super::MAX_RDB_VERSION).contains(&to) {
        return Err(RewriteError::Version(to));
    }
    let opts = ScanOptions {
        keep_values: true,
        verify_checksum: true,
    };
    let mut scan = RdbScanner::new(input, opts)?;
    let from = scan.version();
    let version = from.min(to);
    let (mut w, mut out) = RdbWriter::new(version, &[]);
    let mut done = Rewritten {
        from,
        to: version,
        ..Rewritten::default()
    };
    let mut db = None;
    let now = crate::text::now_ms() as i64;
    let mut select = |out: &mut Vec<u8>, d: u64| {
        if db != Some(d) {
            RdbWriter::select_db(out, d);
            db = Some(d);
        }
    };
    while let Some(item) = scan.next()? {
        match item {
            Item::Aux { key, value } => {
                out.push(0xFA);
                put_rdb_string(&mut out, &key);
                put_rdb_string(&mut out, &value);
            }
            Item::ResizeDb {
                db: d,
                size,
                expires,
            } => {
                select(&mut out, d);
                out.push(0xFB);
                put_rdb_len(&mut out, size);
                put_rdb_len(&mut out, expires);
            }
            Item::Function(code) if version >= 10 => {
                out.push(0xF5);
                put_rdb_string(&mut out, &code);
            }
            Item::Function(_) => *done.lost.entry(LOST_FUNCTIONS).or_insert(0) += 1,
            // A module's aux data is its own format: kept as it is in an
            // RDB of the same version (a filtered snapshot), never converted.
            Item::ModuleAux { raw, .. } if version == from => out.extend_from_slice(&raw),
            Item::ModuleAux { .. } => return Err(RewriteError::ModuleAux),
            Item::Entry(e) if !keep(&e) => done.left_out += 1,
            Item::Entry(e) => {
                let value = match convert(&e.raw, version, now) {
                    Ok(None) => e.raw,
                    Ok(Some(c)) => {
                        done.converted += 1;
                        add_lost(&mut done.lost, &c.lost);
                        match c.raw {
                            Some(raw) => raw,
                            None => continue, // every field had expired
                        }
                    }
                    Err(why) => {
                        return Err(RewriteError::Convert {
                            key: e.key.escape_ascii().to_string(),
                            db: e.db,
                            why,
                        })
                    }
                };
                select(&mut out, e.db);
                if let Some(ms) = e.expire_ms {
                    out.push(0xFC);
                    out.extend_from_slice(&ms.to_le_bytes());
                }
                if let Some(idle) = e.idle {
                    out.push(0xF8);
                    put_rdb_len(&mut out, idle);
                }
                if let Some(freq) = e.freq {
                    out.extend_from_slice(&[0xF9, freq]);
                }
                out.push(value[0]);
                put_rdb_string(&mut out, &e.key);
                out.extend_from_slice(&value[1..]);
                done.keys += 1;
            }
        }
        if out.len() >= piece {
            w.account(&out);
            if !emit(std::mem::take(&mut out)) {
                return Err(RewriteError::Stopped);
            }
        }
    }
    w.finish(&mut out);
    if !emit(out) {
        return Err(RewriteError::Stopped);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_outside_the_conversions_are_refused() {
        let e = rewrite(&b"REDIS0010"[..], 8, 1 << 16, |_| true).unwrap_err();
        assert!(matches!(e, RewriteError::Version(8)), "{e}");
    }
}
