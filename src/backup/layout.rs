//! Every object path of a backup, in one place:
//!
//! ```text
//! <prefix>/<source>/<generation>/keyring.json
//! <prefix>/<source>/<generation>/base.rdb.rv        (base.rdb for --plain)
//! <prefix>/<source>/<generation>/aof/<from>-<to>.aof.rv
//! <prefix>/<source>/<generation>/aof/head-<to>.json   signed chain heads
//! <prefix>/<source>/<generation>/manifest.json      written last
//! ```
//!
//! A cluster generation holds `shard-<first>-<last>.rdb.rv` per primary in
//! place of the base, and each shard's command stream in its own folder,
//! `<generation>/shard-<first>-<last>/aof/...`. A stream is named
//! `<generation>` (a single server) or `<generation>/shard-<first>-<last>`:
//! that name is what segment statements, chain heads and checkpoints carry.
//!
//! Generation ids sort by time. Nothing outside this file joins path parts.

use super::BackupError;
use crate::store::Store;
use object_store::path::Path;
use std::time::SystemTime;

pub const KEYRING: &str = "keyring.json";
pub const MANIFEST: &str = "manifest.json";
pub const BASE_SEALED: &str = "base.rdb.rv";
pub const BASE_PLAIN: &str = "base.rdb";
pub const AOF_DIR: &str = "aof";

/// The snapshot object of one cluster shard: `shard-<first>-<last>.rdb[.rv]`,
/// by the first and last slot its primary serves.
pub fn shard_object(first: u16, last: u16, sealed: bool) -> String {
    format!(
        "shard-{first}-{last}.{}",
        if sealed { BASE_SEALED } else { BASE_PLAIN }.trim_start_matches("base.")
    )
}

/// `20261123T055012.345Z-<first 8 of replid>-<8 random hex>`: milliseconds and
/// a random part make two exports of one primary in the same second distinct,
/// and ids still sort by time. (Before, ids were `20261123T055012Z-<replid8>`;
/// both forms are read.)
pub fn generation_id(t: SystemTime, replid: &str) -> String {
    let stamp: String = humantime::format_rfc3339_millis(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let rid: String = replid.chars().take(8).collect();
    format!("{stamp}-{rid}-{:08x}", rand::random::<u32>())
}

/// A generation id's time (`20261123T055012Z-...` or
/// `20261123T055012.345Z-...`), for keep-within.
pub fn generation_time(id: &str) -> Option<SystemTime> {
    let stamp = id.split('-').next()?;
    // Names come from storage: anything but the exact ASCII shapes is no time.
    if !stamp.is_ascii() || !stamp.ends_with('Z') {
        return None;
    }
    let (secs, millis) = match stamp.len() {
        16 => (stamp, ""),
        20 if stamp.as_bytes()[15] == b'.' => (&stamp[..15], &stamp[16..19]),
        _ => return None,
    };
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}{}{}Z",
        &secs[0..4],
        &secs[4..6],
        &secs[6..8],
        &secs[9..11],
        &secs[11..13],
        &secs[13..15],
        if millis.is_empty() { "" } else { "." },
        millis
    );
    humantime::parse_rfc3339(&rfc).ok()
}

/// A source name must be one safe path segment.
pub fn check_source_name(name: &str) -> Result<(), BackupError> {
    if name.is_empty()
        || name.len() > 100
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(BackupError::Invalid(format!(
            "source name {name:?} must be 1-100 characters of A-Z a-z 0-9 - _ . and not start with a dot"
        )));
    }
    Ok(())
}

/// `00000000000000001234-00000000000000005678.aof.rv`: offsets zero-padded to
/// 20 digits, so names sort in stream order.
pub fn segment_name(from: u64, to: u64) -> String {
    format!("{from:020}-{to:020}.aof.rv")
}

/// The offsets in a segment's name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".aof.rv")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `head-00000000000000005678.json`: the signed chain head written when the
/// segments reach `to`.
pub fn head_name(to: u64) -> String {
    format!("head-{to:020}.json")
}

/// The offset in a chain head's name.
pub fn parse_head_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("head-")?.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The folder of a source's writer leases (`<source>/.lease/`): a name no
/// generation id can take, and that listings pass over.
pub fn lease_dir(store: &Store, source: &str) -> Path {
    store.path(&[source, ".lease"])
}

/// `shard-<first>-<last>`: a cluster shard's stream folder in a generation.
pub fn shard_stream(first: u16, last: u16) -> String {
    format!("shard-{first}-{last}")
}

/// One generation's folder (and one of its streams): the paths of its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationDir {
    pub source: String,
    pub generation: String,
    /// A cluster shard's stream (`shard-<first>-<last>`); None for a single server.
    pub shard: Option<String>,
    /// The stream's name: `generation`, or `generation/shard`.
    pub stream: String,
}

impl GenerationDir {
    /// `id` is a generation id, or a stream name `<generation>/<shard>`.
    pub fn new(source: &str, id: &str) -> Self {
        let (generation, shard) = match id.split_once('/') {
            Some((g, s)) => (g, Some(s.to_string())),
            None => (id, None),
        };
        GenerationDir {
            source: source.into(),
            generation: generation.into(),
            shard,
            stream: id.into(),
        }
    }

    /// The stream of one shard of this generation.
    pub fn shard(&self, shard: &str) -> Self {
        GenerationDir::new(&self.source, &format!("{}/{shard}", self.generation))
    }

    pub fn dir(&self, store: &Store) -> Path {
        store.path(&[&self.source, &self.generation])
    }

    /// An object directly in the folder (keyring, manifest, base).
    pub fn object(&self, store: &Store, name: &str) -> Path {
        store.path(&[&self.source, &self.generation, name])
    }

    pub fn keyring(&self, store: &Store) -> Path {
        self.object(store, KEYRING)
    }

    pub fn manifest(&self, store: &Store) -> Path {
        self.object(store, MANIFEST)
    }

    pub fn aof_dir(&self, store: &Store) -> Path {
        match &self.shard {
            Some(s) => store.path(&[&self.source, &self.generation, s, AOF_DIR]),
            None => store.path(&[&self.source, &self.generation, AOF_DIR]),
        }
    }

    pub fn segment(&self, store: &Store, name: &str) -> Path {
        match &self.shard {
            Some(s) => store.path(&[&self.source, &self.generation, s, AOF_DIR, name]),
            None => store.path(&[&self.source, &self.generation, AOF_DIR, name]),
        }
    }

    /// `source/generation/name`, for messages.
    pub fn label(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.source, self.generation)
    }

    /// `source/generation[/shard]/aof/name`, for messages.
    pub fn segment_label(&self, name: &str) -> String {
        format!("{}/{}/{AOF_DIR}/{name}", self.source, self.stream)
    }
}

/// What an object below the prefix is, by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    Keyring,
    Manifest,
    /// Any other object directly in the folder (the base snapshot).
    Data(String),
    Segment {
        name: String,
        from: u64,
        to: u64,
    },
    /// A signed chain head (`aof/head-<to>.json`).
    Head {
        to: u64,
    },
    /// Something else below a generation (not ours).
    Other,
}

/// One object found by `listing`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub dir: GenerationDir,
    pub kind: ObjectKind,
    pub size: u64,
}

/// Every object of every generation under the prefix (or one source).
pub async fn listing(store: &Store, source: Option<&str>) -> Result<Vec<Listed>, BackupError> {
    let root = match source {
        Some(s) => store.path(&[s]),
        None => store.prefix.clone(),
    };
    let depth = store.prefix.parts().count();
    let mut out = vec![];
    for o in store.list(&root).await? {
        let mut parts: Vec<String> = o
            .location
            .parts()
            .skip(depth)
            .map(|p| p.as_ref().to_string())
            .collect();
        // Fewer parts is not a generation's object; a dot folder (the
        // writer leases) is none either.
        if parts.len() < 3 || parts[1].starts_with('.') {
            continue;
        }
        // A shard's stream: <source>/<generation>/shard-*/aof/<name>.
        let shard = (parts.len() == 5 && parts[2].starts_with("shard-") && parts[3] == AOF_DIR)
            .then(|| parts.remove(2));
        let kind = match (parts.len(), parts[2].as_str()) {
            (3, KEYRING) => ObjectKind::Keyring,
            (3, MANIFEST) => ObjectKind::Manifest,
            (3, name) => ObjectKind::Data(name.to_string()),
            (4, AOF_DIR) => match parse_segment_name(&parts[3]) {
                Some((from, to)) => ObjectKind::Segment {
                    name: parts[3].clone(),
                    from,
                    to,
                },
                None => match parse_head_name(&parts[3]) {
                    Some(to) => ObjectKind::Head { to },
                    None => ObjectKind::Other,
                },
            },
            _ => ObjectKind::Other,
        };
        let id = match &shard {
            Some(s) => format!("{}/{s}", parts[1]),
            None => parts[1].clone(),
        };
        out.push(Listed {
            dir: GenerationDir::new(&parts[0], &id),
            kind,
            size: o.size,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        assert!(segment_name(9, 10) < segment_name(10, 11));
        assert_eq!(parse_segment_name(&segment_name(7, 99)), Some((7, 99)));
        assert_eq!(parse_segment_name("x.aof.rv"), None);
        assert_eq!(parse_head_name(&head_name(42)), Some(42));
        assert_eq!(parse_head_name("head-1.json"), None);
        let t = humantime::parse_rfc3339("2026-11-23T05:50:12.345Z").unwrap();
        let id = generation_id(t, "abcdef0123456789");
        assert!(id.starts_with("20261123T055012.345Z-abcdef01-"), "{id}");
        assert_eq!(id.len(), "20261123T055012.345Z-abcdef01-".len() + 8);
        assert_eq!(generation_time(&id), Some(t));
        assert_ne!(
            generation_id(t, "abcdef0123456789"),
            id,
            "distinct in one millisecond"
        );
        let old = humantime::parse_rfc3339("2026-11-23T05:50:12Z").unwrap();
        assert_eq!(generation_time("20261123T055012Z-abcdef01"), Some(old));
        assert_eq!(generation_time("20261123T055012.3€-x"), None);
        assert_eq!(generation_time("2026112€T055012Z-x"), None);
        assert!(generation_id(t, "x").as_str() > "20261123T055011Z-abcdef01");
        assert!(check_source_name("cache-1.prod").is_ok());
        assert!(check_source_name("../x").is_err() && check_source_name("").is_err());
    }

    #[test]
    fn paths_come_from_one_place() {
        let store = Store::open("memory://", Some("p")).unwrap();
        let g = GenerationDir::new("s", "g");
        assert_eq!(g.manifest(&store).as_ref(), "p/s/g/manifest.json");
        assert_eq!(g.segment(&store, "a").as_ref(), "p/s/g/aof/a");
        assert_eq!(g.segment_label("a"), "s/g/aof/a");
        let s = g.shard("shard-0-99");
        assert_eq!(s.stream, "g/shard-0-99");
        assert_eq!(s.generation, "g");
        assert_eq!(s.manifest(&store).as_ref(), "p/s/g/manifest.json");
        assert_eq!(s.segment(&store, "a").as_ref(), "p/s/g/shard-0-99/aof/a");
        assert_eq!(GenerationDir::new("s", "g/shard-0-99"), s);
    }
}
