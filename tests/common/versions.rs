//! The server versions of the matrix: Debian's redis-server (7.0) and the
//! binaries scripts/setup unpacks from PyPI wheels into .tools/versions. A
//! missing one is a loud failure naming scripts/setup.
#![allow(dead_code)]

use std::path::PathBuf;

pub struct Version {
    pub label: &'static str,
    pub bin: PathBuf,
    /// The RDB version it writes (and the newest it reads).
    pub rdb: u32,
}

/// Every version, oldest RDB first.
pub fn all() -> Vec<Version> {
    let tools = |label: &'static str, rdb: u32| {
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".tools/versions")
            .join(label)
            .join("redis-server");
        assert!(
            bin.exists(),
            "{label} is missing at {}: run scripts/setup",
            bin.display()
        );
        Version { label, bin, rdb }
    };
    vec![
        tools("redis-6.0", 9),
        tools("redis-6.2", 9),
        Version {
            label: "redis-7.0",
            bin: "redis-server".into(),
            rdb: 10,
        },
        tools("valkey-8.1", 11),
        tools("redis-7.4", 12),
        tools("redis-8.2", 12),
    ]
}
