//! redvault: encrypted, point-in-time backups of Redis in object storage.
//!
//! The layers, bottom up (docs/ARCHITECTURE.md; `tests/layers.rs` enforces
//! that a module imports only from its own layer or below):
//! `text, data_key, command` -> `resp, format, acl` -> `kek, keyring, signing, sealer,
//! opener, rdb, azure, store, aof` -> `replication` -> `source, inputs, target, feed, inspect, sealed_file`
//! -> `backup` -> `settings` -> `daemon` -> `cli`.

pub mod acl;
pub mod aof;
pub mod audit;
pub mod azure;
pub mod backup;
pub mod cli;
pub mod command;
pub mod crc64;
pub mod daemon;
pub mod data_key;
pub mod feed;
pub mod fingerprint;
pub mod format;
pub mod inputs;
pub mod inspect;
pub mod kek;
pub mod keyring;
pub mod opener;
pub mod rdb;
pub mod replication;
pub mod resp;
pub mod sealed_file;
pub mod sealer;
pub mod settings;
pub mod signing;
pub mod source;
pub mod store;
pub mod target;
pub mod text;
