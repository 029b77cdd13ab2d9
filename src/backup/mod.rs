//! Backups in storage: the layout of a generation (every path, `layout.rs`),
//! its manifest, export, listing, reading a generation back (`read.rs`),
//! point-in-time planning (`plan.rs`) and restore into a target
//! (`restore.rs`), verify, retention, and re-wrapping keyrings (`rewrap.rs`).

mod ahead;
pub mod chain;
pub mod export;
pub mod head;
pub mod layout;
pub mod list;
pub mod manifest;
pub mod plan;
pub mod read;
pub mod restore;
pub mod retention;
pub mod rewrap;
pub mod timeline;
pub mod verify;

pub use export::{
    cluster_shards, export, export_and_follow, export_cluster, export_cluster_and_follow,
    ClusterExportRequest, ExportRequest, ExportSummary, Shard,
};
pub use list::{list, GenerationInfo};
pub use plan::{plan, Plan, Point};
pub use read::{open_base, open_inputs, pick_generation, InputOptions};
pub use restore::{replay, restore, restore_inputs, ReplayStats, RestoreSummary};
pub use retention::{prune, Pruned, Retention};
pub use rewrap::{rewrap, status, KeyringInfo, Rewrapped};
pub use verify::{verify, GenerationReport};

use crate::aof::AofError;
use crate::format::FormatError;
use crate::inputs::InputError;
use crate::kek::KekError;
use crate::keyring::KeyringError;
use crate::signing::SignError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::target::{LoadInputError, TargetError};
use manifest::ManifestError;

/// Every error of the backup layer; each message names the object (or the
/// source and generation) it is about.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Aof(#[from] AofError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Load(#[from] LoadInputError),
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Nothing (complete) to read where one was asked for.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out as asked (a bad name, a point no
    /// generation covers, several sources where one is needed).
    #[error("{0}")]
    Invalid(String),
    /// A segment holds a command replay never runs (Redis does not propagate
    /// it for data): the segment was not written from a replication stream.
    #[error("{label}: the command at offset {offset} is {command}, which replay never runs (only what Redis propagates for data is replayed); the restore stopped there, with the target at offset {before}: restore up to --offset {before}, or check where this segment came from")]
    UnsafeCommand {
        label: String,
        offset: u64,
        command: String,
        before: u64,
    },
    /// An object that is not what the manifest or its place says.
    #[error("{label}: {why}")]
    Corrupt { label: String, why: String },
}
