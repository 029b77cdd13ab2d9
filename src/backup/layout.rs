//! Where things go: `<prefix>/<source>/<generation>/{keyring.json, base.rdb.rv,
//! manifest.json}`; generation ids sort by time.

use std::time::SystemTime;

pub const KEYRING: &str = "keyring.json";
pub const MANIFEST: &str = "manifest.json";
pub const BASE_SEALED: &str = "base.rdb.rv";
pub const BASE_PLAIN: &str = "base.rdb";

/// RFC 3339 UTC with seconds, e.g. `2026-11-23T05:50:12Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `20261123T055012Z-<first 8 of replid>`.
pub fn generation_id(t: SystemTime, replid: &str) -> String {
    let stamp: String = rfc3339(t)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let rid: String = replid.chars().take(8).collect();
    format!("{stamp}-{rid}")
}

/// A source name must be one safe path segment.
pub fn check_source_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 100
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "source name {name:?} must be 1-100 characters of A-Z a-z 0-9 - _ . and not start with a dot"
        ));
    }
    Ok(())
}
