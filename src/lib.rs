//! redvault: encrypted, point-in-time backups of Redis in object storage.
//!
//! The flow (docs/ARCHITECTURE.md): the `sealer` cuts bytes into chunks, compresses
//! and encrypts them under a data key from the `keyring`, wrapped by a `kek`; the
//! `opener` reverses it. `format` holds the byte format (docs/FORMAT.md).

pub mod aof;
pub mod azure;
pub mod backup;
pub mod cli;
pub mod daemon;
pub mod format;
pub mod kek;
pub mod keyring;
pub mod loader;
pub mod opener;
pub mod rdb;
pub mod replication;
pub mod resp;
pub mod sealer;
pub mod store;
