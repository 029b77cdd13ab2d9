//! Converting one value for a server that reads an older RDB version: types
//! that version has pass unchanged; others are decoded and written in the
//! plain forms it reads (`value.rs`). What no form of that version holds is
//! counted by name (`Lost`), so a summary can say what the target lacks.

use super::value::{decode, encode, Value, ValueError};
use std::collections::BTreeMap;

/// The oldest RDB version a conversion writes (Redis 5.0: the first with streams).
pub const OLDEST_CONVERSION: u32 = 9;

/// What a target of an older version cannot hold.
pub const LOST_FIELD_TTLS: &str = "hash field TTLs (Redis 7.4+; the fields are kept without them)";
pub const LOST_STREAM_COUNTERS: &str =
    "stream counters entries-added, max-deleted-id and entries-read (Redis 7.0+)";
pub const LOST_ACTIVE_TIMES: &str = "stream consumers' active-time (Redis 7.2+)";
pub const LOST_FUNCTIONS: &str = "function libraries (Redis 7.0+)";

/// Counts of what was left out, by what it is.
pub type Lost = BTreeMap<&'static str, u64>;

/// The oldest RDB version that has a value type.
pub fn type_since(t: u8) -> u32 {
    match t {
        0..=4 | 9..=13 => 1,
        5..=7 => 8,
        14 => 7,
        15 => 9,
        16..=19 => 10,
        20 | 21 => 11,
        _ => 12,
    }
}

/// Whether a value of type `t` must be converted for RDB `to`.
pub fn needs_conversion(t: u8, to: u32) -> bool {
    type_since(t) > to
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a value of RDB type {type_byte} cannot be converted to RDB {to}: {why}")]
pub struct ConvertError {
    pub type_byte: u8,
    pub to: u32,
    pub why: ValueError,
}

/// A value converted for an older version.
#[derive(Debug)]
pub struct Converted {
    /// Type byte and encoding; None when nothing is left (every field of a
    /// hash had expired).
    pub raw: Option<Vec<u8>>,
    pub lost: Lost,
}

/// Converts `raw` (type byte and encoding) for a server reading RDB `to`, or
/// None when that server reads it as it is. Hash fields already expired at
/// `now_ms` are dropped; live ones keep their values, not their TTLs.
pub fn convert(raw: &[u8], to: u32, now_ms: i64) -> Result<Option<Converted>, ConvertError> {
    let t = raw.first().copied().unwrap_or(0);
    if !needs_conversion(t, to) {
        return Ok(None);
    }
    let err = |why| ConvertError {
        type_byte: t,
        to,
        why,
    };
    if to < OLDEST_CONVERSION {
        return Err(err(ValueError::Unsupported(
            "for servers older than Redis 5.0 (RDB 9),",
        )));
    }
    let mut value = decode(raw).map_err(err)?;
    let mut lost = Lost::new();
    match &mut value {
        Value::Hash(fields) => {
            fields.retain(|(_, _, at)| at.is_none_or(|at| at > now_ms));
            let ttls = fields.iter().filter(|f| f.2.is_some()).count() as u64;
            if ttls > 0 {
                lost.insert(LOST_FIELD_TTLS, ttls);
            }
            if fields.is_empty() {
                return Ok(Some(Converted { raw: None, lost }));
            }
        }
        Value::Stream(s) => {
            if to < 10 && s.meta.is_some() {
                lost.insert(LOST_STREAM_COUNTERS, 1);
            }
            let active = s
                .groups
                .iter()
                .any(|g| g.consumers.iter().any(|c| c.active_ms.is_some()));
            if to < 11 && active {
                lost.insert(LOST_ACTIVE_TIMES, 1);
            }
        }
        _ => {}
    }
    Ok(Some(Converted {
        raw: Some(encode(&value, to)),
        lost,
    }))
}

/// For a summary: "2 hash field TTLs (...), 1 function libraries (...)".
pub fn describe_lost(lost: &Lost) -> String {
    let what: Vec<String> = lost.iter().map(|(k, n)| format!("{n} {k}")).collect();
    what.join(", ")
}

/// Adds the counts of `more` to `into`.
pub fn add_lost(into: &mut Lost, more: &Lost) {
    for (k, n) in more {
        *into.entry(k).or_insert(0) += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::{put_rdb_len, put_rdb_string};

    fn listpack(items: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![];
        for s in items {
            assert!(s.len() < 64);
            body.push(0x80 | s.len() as u8);
            body.extend_from_slice(s);
            body.push(1 + s.len() as u8);
        }
        let mut lp = ((6 + body.len() + 1) as u32).to_le_bytes().to_vec();
        lp.extend_from_slice(&(items.len() as u16).to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xFF);
        lp
    }

    #[test]
    fn a_listpack_hash_becomes_a_plain_hash_for_redis_6() {
        let mut raw = vec![16];
        put_rdb_string(&mut raw, &listpack(&[b"f", b"v", b"g", b"w"]));
        assert!(convert(&raw, 10, 0).unwrap().is_none());
        let c = convert(&raw, 9, 0).unwrap().unwrap();
        assert!(c.lost.is_empty());
        let mut want = vec![4];
        put_rdb_len(&mut want, 2);
        for s in [b"f", b"v", b"g", b"w"] {
            put_rdb_string(&mut want, s);
        }
        assert_eq!(c.raw.unwrap(), want);
    }

    #[test]
    fn hash_field_ttls_are_named_and_expired_fields_dropped() {
        let mut raw = vec![25];
        raw.extend_from_slice(&100i64.to_le_bytes());
        put_rdb_string(
            &mut raw,
            &listpack(&[
                b"old", b"1", b"100", b"live", b"2", b"900", b"plain", b"3", b"0",
            ]),
        );
        let c = convert(&raw, 11, 500).unwrap().unwrap();
        assert_eq!(c.lost.get(LOST_FIELD_TTLS), Some(&1));
        let v = crate::rdb::value::decode(&c.raw.unwrap()).unwrap();
        assert_eq!(
            v,
            Value::Hash(vec![
                (b"live".to_vec(), b"2".to_vec(), None),
                (b"plain".to_vec(), b"3".to_vec(), None),
            ])
        );
        // Every field expired: nothing left to restore.
        let mut raw = vec![25];
        raw.extend_from_slice(&100i64.to_le_bytes());
        put_rdb_string(
            &mut raw,
            &listpack(&[b"old", b"1", b"100", b"live", b"2", b"900"]),
        );
        assert!(convert(&raw, 11, 1_000).unwrap().unwrap().raw.is_none());
    }

    #[test]
    fn below_redis_5_nothing_is_converted() {
        let mut raw = vec![20];
        put_rdb_string(&mut raw, &listpack(&[b"m"]));
        let e = convert(&raw, 8, 0).unwrap_err();
        assert!(e.to_string().contains("Redis 5.0"), "{e}");
    }
}
