//! A fingerprint of a source at one replication offset: its keys and keys
//! with a TTL per database, read in one transaction (`MULTI`, `INFO
//! replication`, `INFO keyspace`, `EXEC`), so the counts are those of the
//! state right after the command stream's byte `offset`. The daemon records
//! one in its signed chain heads; a drill replays to that offset and
//! compares. O(1) on the source (no DEBUG DIGEST, which blocks it).
//!
//! Why the counts can be compared exactly: a key that has expired but is
//! not yet reclaimed is counted on the source, and a replica (a target fed
//! by replication) never reclaims keys itself, so it counts it too. A
//! target loaded by RESTORE reclaims such keys as a primary does, and a
//! later write to one (INCR on an expired counter) then makes a key the
//! source never held: there the counts are not compared at all.

use crate::resp::{Conn, Reply};
use serde::{Deserialize, Serialize};

/// Keys per database at `offset` of the stream of `replid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// The replication offset (of the server's replication id at the time).
    pub offset: u64,
    /// Databases holding keys, in order.
    pub dbs: Vec<DbCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCount {
    pub db: u32,
    pub keys: u64,
    /// Keys with a TTL.
    pub expires: u64,
}

/// The `db<n>:keys=..,expires=..` lines of `INFO keyspace`.
pub fn parse_keyspace(text: &str) -> Vec<DbCount> {
    let mut dbs: Vec<DbCount> = text
        .lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().strip_prefix("db")?.split_once(':')?;
            let field = |name: &str| -> Option<u64> {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                    .trim()
                    .parse()
                    .ok()
            };
            Some(DbCount {
                db: db.parse().ok()?,
                keys: field("keys")?,
                expires: field("expires").unwrap_or(0),
            })
        })
        .filter(|d| d.keys > 0)
        .collect();
    dbs.sort_by_key(|d| d.db);
    dbs
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Why a fingerprint could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The user may not run MULTI, EXEC or INFO (or a command is renamed):
    /// asking again will not help.
    #[error("the server refused {0}")]
    Refused(String),
    /// Anything else (the link, a busy server): worth another try.
    #[error("{0}")]
    Link(String),
}

/// Takes a fingerprint: the offset and counts of one moment, and the
/// replication id the offset counts in.
pub async fn probe(conn: &mut Conn) -> Result<(String, Fingerprint), ProbeError> {
    let link = |e: &dyn std::fmt::Display| ProbeError::Link(e.to_string());
    for args in [
        &[b"MULTI".as_slice()][..],
        &[b"INFO", b"replication"],
        &[b"INFO", b"keyspace"],
    ] {
        conn.send(args).await.map_err(|e| link(&e))?;
    }
    conn.send(&[b"EXEC"]).await.map_err(|e| link(&e))?;
    // NOPERM, or a command unknown (renamed away) is for good; -BUSY (a
    // long script) and the like pass.
    let judge = |what: &str, m: &str| {
        let why = format!("{what} ({m})");
        if m.starts_with("NOPERM") || m.to_ascii_lowercase().contains("unknown command") {
            ProbeError::Refused(why)
        } else {
            ProbeError::Link(why)
        }
    };
    let mut refused = None;
    for what in ["MULTI", "INFO replication", "INFO keyspace"] {
        if let Reply::Error(m) = conn.read_reply(what).await.map_err(|e| link(&e))? {
            refused.get_or_insert(judge(what, &m));
        }
    }
    let exec = conn.read_reply("EXEC").await.map_err(|e| link(&e))?;
    if let Some(r) = refused {
        return Err(r);
    }
    let items = match exec {
        Reply::Array(items) if items.len() == 2 => items,
        Reply::Error(m) => return Err(judge("EXEC", &m)),
        other => return Err(ProbeError::Link(format!("EXEC answered {other:?}"))),
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Reply::Error(m) => Err(judge("INFO", m)),
        other => Err(ProbeError::Link(format!("INFO answered {other:?}"))),
    };
    let repl = text(&items[0])?;
    let space = text(&items[1])?;
    let offset = field(&repl, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProbeError::Link("INFO replication names no master_repl_offset".into()))?;
    let replid = field(&repl, "master_replid")
        .ok_or_else(|| ProbeError::Link("INFO replication names no master_replid".into()))?
        .to_string();
    Ok((
        replid,
        Fingerprint {
            offset,
            dbs: parse_keyspace(&space),
        },
    ))
}

/// Compares what a replica target holds (`seen`, its `INFO keyspace` right
/// after applying the stream up to the fingerprint's offset) with the
/// fingerprint: every count must be equal. The error names the first
/// database that differs.
pub fn compare(recorded: &Fingerprint, seen: &[DbCount]) -> Result<(), String> {
    let dbs: std::collections::BTreeSet<u32> =
        recorded.dbs.iter().chain(seen).map(|d| d.db).collect();
    let of = |list: &[DbCount], db: u32| {
        list.iter()
            .find(|d| d.db == db)
            .copied()
            .unwrap_or(DbCount {
                db,
                keys: 0,
                expires: 0,
            })
    };
    for db in dbs {
        let (r, s) = (of(&recorded.dbs, db), of(seen, db));
        if (r.keys, r.expires) != (s.keys, s.expires) {
            return Err(format!(
                "db{db} at offset {}: the source held {} keys ({} with a TTL), the restore holds {} ({} with a TTL)",
                recorded.offset, r.keys, r.expires, s.keys, s.expires
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(dbs: &[(u32, u64, u64)]) -> Fingerprint {
        Fingerprint {
            offset: 42,
            dbs: dbs
                .iter()
                .map(|&(db, keys, expires)| DbCount { db, keys, expires })
                .collect(),
        }
    }

    #[test]
    fn keyspace_lines_parse_in_db_order() {
        let text =
            "# Keyspace\r\ndb9:keys=3,expires=1,avg_ttl=5\r\ndb0:keys=10,expires=0,avg_ttl=0\r\n";
        assert_eq!(parse_keyspace(text), fp(&[(0, 10, 0), (9, 3, 1)]).dbs);
    }

    #[test]
    fn a_count_that_differs_is_named() {
        let r = fp(&[(0, 10, 2), (3, 5, 0)]);
        assert!(compare(&r, &r.dbs).is_ok());
        let e = compare(&r, &fp(&[(0, 10, 2), (3, 4, 0)]).dbs).unwrap_err();
        assert!(e.contains("db3") && e.contains("offset 42"), "{e}");
        // A database missing on the target is a difference too.
        let e = compare(&r, &fp(&[(0, 10, 2)]).dbs).unwrap_err();
        assert!(e.contains("db3"), "{e}");
        // An extra database as well.
        let e = compare(&r, &fp(&[(0, 10, 2), (3, 5, 0), (7, 1, 0)]).dbs).unwrap_err();
        assert!(e.contains("db7"), "{e}");
        // Keys with a TTL count too (a replica reclaims none).
        assert!(compare(&r, &fp(&[(0, 10, 1), (3, 5, 0)]).dbs).is_err());
    }
}
