//! Backups in storage: the layout of a generation, its manifest, export, listing.

pub mod export;
pub mod layout;
pub mod list;
pub mod manifest;
pub mod pitr;
pub mod rekey;
pub mod retention;
pub mod timeline;
pub mod verify;
