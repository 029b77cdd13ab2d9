//! The RDB scanner: walks an RDB stream of versions 1 to 12 (Redis 1.x to 8.4)
//! and yields its entries (database, key, expiry, type, raw value bytes) and aux
//! fields, without decoding values it only needs to copy. One entry in memory at
//! a time. Values are decoded only to convert them for a server that reads an
//! older RDB version (`convert.rs`, `rewrite.rs`).

mod channel;
mod convert;
mod packed;
mod reader;
mod rewrite;
mod scanner;
pub mod value;
mod versions;
mod writer;

pub use channel::{count_keys, ChannelReader, KeyCounter};
pub use convert::{
    add_lost, convert, describe_lost, needs_conversion, ConvertError, Converted, Lost,
    LOST_FIELD_TTLS, LOST_FUNCTIONS, OLDEST_CONVERSION,
};
pub use rewrite::{rewrite, rewrite_selected, RewriteError, Rewritten};
pub use scanner::{restore_payload, Entry, Item, RdbScanner, ScanOptions};
pub use versions::{max_rdb_for, min_server_for};
pub use writer::{dump_value, put_rdb_len, put_rdb_string, DumpError, EntryEncoder, RdbWriter};

/// The newest RDB version the scanner reads.
pub const MAX_RDB_VERSION: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdbError {
    #[error("not an RDB file (bad magic)")]
    BadMagic,
    #[error(
        "this is a Valkey RDB ({0}); redvault reads Redis RDB versions 1 to {MAX_RDB_VERSION}"
    )]
    Valkey(String),
    #[error("RDB version {0} is newer than this redvault reads (1 to {MAX_RDB_VERSION})")]
    UnsupportedVersion(u32),
    #[error("RDB truncated at byte offset {offset}")]
    Truncated { offset: u64 },
    #[error("RDB corrupt at byte offset {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("RDB has unknown {what} {byte} (0x{byte:02x}) at byte offset {offset}")]
    Unknown {
        what: &'static str,
        byte: u8,
        offset: u64,
    },
    #[error("RDB at byte offset {offset}: {what} cannot be walked without its module")]
    Opaque { offset: u64, what: String },
    #[error("RDB checksum mismatch: the file says {expected:016x}, its bytes give {actual:016x}")]
    BadChecksum { expected: u64, actual: u64 },
    #[error("reading the RDB: {0}")]
    Io(String),
}
