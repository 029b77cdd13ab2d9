//! A value too large for one RESTORE (over the target's proto-max-bulk-len)
//! sent as commands instead: decoded (`rdb::value`), built under a temporary
//! key in bounded commands (SET/APPEND, RPUSH, SADD, ZADD, HSET, then field
//! TTLs and the key's expiry), then renamed onto its key, so nobody sees it
//! half built and the conflict policy holds (RENAMENX fails on an existing
//! key, RENAME replaces it). Streams and module values are not split.

use super::cluster::{hash_tag, key_slot};
use crate::rdb::value::Value;
use std::borrow::Cow;
use std::ops::Range;

/// Elements per command, and bytes of arguments per command at most.
const MAX_ELEMENTS: usize = 1024;
const MAX_BYTES: usize = 1 << 20;

/// One command that builds the value under its temporary key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    /// SET (the first) or APPEND: these bytes of a string.
    Chunk(Range<usize>, bool),
    /// RPUSH, SADD, ZADD or HSET of these elements.
    Elements(Range<usize>),
    /// HPEXPIREAT of one hash field (Redis 7.4 on).
    FieldTtl(usize),
    /// PEXPIREAT of the key.
    Expire(i64),
    /// A day's PEXPIRE right after the first write: a run stopped half-way
    /// leaves nothing that lasts.
    SafetyTtl,
    /// PERSIST: the key has no expiry (the safety TTL is taken off).
    Persist,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SplitError {
    #[error("{0} values are not split into commands")]
    Kind(&'static str),
    #[error("one of its elements is {size} bytes, over the target's proto-max-bulk-len of {max}")]
    Element { size: usize, max: u64 },
    #[error("a string of {size} bytes is over the target's proto-max-bulk-len of {max}, the longest string it holds")]
    String { size: usize, max: u64 },
}

fn element_size(v: &Value, i: usize) -> usize {
    match v {
        Value::List(x) | Value::Set(x) => x[i].len(),
        Value::ZSet(m) => m[i].0.len() + 24,
        Value::Hash(h) => h[i].0.len() + h[i].1.len(),
        _ => 0,
    }
}

fn element_count(v: &Value) -> usize {
    match v {
        Value::List(x) | Value::Set(x) => x.len(),
        Value::ZSet(m) => m.len(),
        Value::Hash(h) => h.len(),
        _ => 0,
    }
}

/// The commands that build `v`: elements in runs bounded by count and
/// bytes; strings in chunks of under `max_bulk`; field TTLs when the target
/// has them (`field_ttls`); a safety TTL after the first. The final expiry
/// is `final_expiry`, sent once every part landed.
pub(super) fn plan(v: &Value, max_bulk: u64, field_ttls: bool) -> Result<Vec<Part>, SplitError> {
    let mut parts = vec![];
    match v {
        Value::String(s) => {
            if s.len() as u64 > max_bulk {
                return Err(SplitError::String {
                    size: s.len(),
                    max: max_bulk,
                });
            }
            let chunk = (max_bulk as usize / 2).clamp(1, MAX_BYTES);
            let mut at = 0;
            loop {
                let end = (at + chunk).min(s.len());
                parts.push(Part::Chunk(at..end, at == 0));
                at = end;
                if at >= s.len() {
                    break;
                }
            }
        }
        Value::Stream(_) => return Err(SplitError::Kind("stream")),
        _ => {
            let n = element_count(v);
            let mut start = 0;
            let mut bytes = 0;
            for i in 0..n {
                let size = element_size(v, i);
                let biggest = match v {
                    Value::Hash(h) => h[i].0.len().max(h[i].1.len()),
                    _ => size,
                };
                if biggest as u64 > max_bulk {
                    return Err(SplitError::Element {
                        size: biggest,
                        max: max_bulk,
                    });
                }
                if i > start && (i - start >= MAX_ELEMENTS || bytes + size > MAX_BYTES) {
                    parts.push(Part::Elements(start..i));
                    start = i;
                    bytes = 0;
                }
                bytes += size;
            }
            if n > start {
                parts.push(Part::Elements(start..n));
            }
            if let (Value::Hash(h), true) = (v, field_ttls) {
                parts.extend(
                    (0..h.len())
                        .filter(|&i| h[i].2.is_some())
                        .map(Part::FieldTtl),
                );
            }
        }
    }
    parts.insert(1, Part::SafetyTtl);
    Ok(parts)
}

/// The expiry the value ends with (the safety TTL replaced): sent only once
/// every part landed, just before the rename, so a value left half built
/// keeps its safety TTL.
pub(super) fn final_expiry(expire_ms: Option<i64>) -> Part {
    match expire_ms {
        Some(ms) => Part::Expire(ms),
        None => Part::Persist,
    }
}

/// The arguments of one part, for the key `tmp`.
pub(super) fn args<'a>(tmp: &'a [u8], v: &'a Value, part: &Part) -> Vec<Cow<'a, [u8]>> {
    let b = |s: &'static [u8]| Cow::Borrowed(s);
    let mut a: Vec<Cow<[u8]>> = vec![];
    match (part, v) {
        (Part::Chunk(r, first), Value::String(s)) => {
            a.push(b(if *first { b"SET" } else { b"APPEND" }));
            a.push(Cow::Borrowed(tmp));
            a.push(Cow::Borrowed(&s[r.clone()]));
        }
        (Part::Elements(r), _) => {
            a.push(b(match v {
                Value::List(_) => b"RPUSH",
                Value::Set(_) => b"SADD",
                Value::ZSet(_) => b"ZADD",
                _ => b"HSET",
            }));
            a.push(Cow::Borrowed(tmp));
            match v {
                Value::List(x) | Value::Set(x) => {
                    a.extend(x[r.clone()].iter().map(|s| Cow::Borrowed(s.as_slice())))
                }
                Value::ZSet(m) => {
                    for (member, score) in &m[r.clone()] {
                        a.push(Cow::Owned(score_text(*score).into_bytes()));
                        a.push(Cow::Borrowed(member.as_slice()));
                    }
                }
                Value::Hash(h) => {
                    for (f, val, _) in &h[r.clone()] {
                        a.push(Cow::Borrowed(f.as_slice()));
                        a.push(Cow::Borrowed(val.as_slice()));
                    }
                }
                _ => {}
            }
        }
        (Part::FieldTtl(i), Value::Hash(h)) => {
            let (f, _, at) = &h[*i];
            a.push(b(b"HPEXPIREAT"));
            a.push(Cow::Borrowed(tmp));
            a.push(Cow::Owned(at.unwrap_or(0).to_string().into_bytes()));
            a.extend([b(b"FIELDS"), b(b"1"), Cow::Borrowed(f.as_slice())]);
        }
        (Part::Expire(ms), _) => {
            a.push(b(b"PEXPIREAT"));
            a.push(Cow::Borrowed(tmp));
            a.push(Cow::Owned(ms.to_string().into_bytes()));
        }
        (Part::SafetyTtl, _) => {
            a.extend([b(b"PEXPIRE"), Cow::Borrowed(tmp), b(b"86400000")]);
        }
        (Part::Persist, _) => {
            a.extend([b(b"PERSIST"), Cow::Borrowed(tmp)]);
        }
        _ => unreachable!("a part planned for another kind of value"),
    }
    a
}

/// A score as ZADD reads it back exactly (shortest round-trip form).
fn score_text(s: f64) -> String {
    if s == f64::INFINITY {
        "+inf".into()
    } else if s == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{s:?}")
    }
}

/// The key a value is built under: in the same hash slot as `key`, so a
/// cluster node can rename it into place. Its hash tag is the key's own tag
/// if it has one, else a short tag found with the same slot.
pub(super) fn temp_key(key: &[u8], n: u64) -> Vec<u8> {
    let own = hash_tag(key);
    let found;
    let tag = if own.len() < key.len() {
        own
    } else {
        let slot = key_slot(key);
        // About 16384 tries on average: slots are uniform.
        found = (0u32..10_000_000)
            .map(|i| format!("rv{i}").into_bytes())
            .find(|t| key_slot(t) == slot)
            .unwrap_or_else(|| key.to_vec());
        &found
    };
    let mut t = Vec::with_capacity(tag.len() + 40);
    t.push(b'{');
    t.extend_from_slice(tag);
    t.extend_from_slice(format!("}}:redvault-part:{}:{n}", std::process::id()).as_bytes());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_list_goes_in_bounded_runs() {
        let v = Value::List((0..2500).map(|i| i.to_string().into_bytes()).collect());
        let parts = plan(&v, 1 << 20, false).unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Elements(0..1024),
                Part::SafetyTtl,
                Part::Elements(1024..2048),
                Part::Elements(2048..2500),
            ]
        );
        let a = args(b"t", &v, &parts[3]);
        assert_eq!(a.len(), 2 + 452);
        assert_eq!(&*a[0], b"RPUSH");
    }

    #[test]
    fn a_string_goes_in_chunks_under_the_limit() {
        let v = Value::String(vec![b'x'; 2_500_000]);
        assert!(plan(&v, 1 << 20, false).is_err());
        let parts = plan(&v, 4 << 20, false).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], Part::Chunk(0..1 << 20, true));
        assert_eq!(parts[1], Part::SafetyTtl);
        assert!(parts[2..]
            .iter()
            .all(|p| matches!(p, Part::Chunk(_, false))));
        assert_eq!(final_expiry(None), Part::Persist);
        assert_eq!(&*args(b"t", &v, &parts[2])[0], b"APPEND");
    }

    #[test]
    fn what_cannot_be_split_is_named() {
        let v = Value::List(vec![vec![0; 2 << 20]]);
        let e = plan(&v, 1 << 20, false).unwrap_err();
        assert!(e.to_string().contains("2097152 bytes"), "{e}");
    }

    #[test]
    fn scores_read_back_exactly() {
        for s in [1.25, 0.1, -3.0, 1e300, f64::INFINITY, f64::NEG_INFINITY] {
            let t = score_text(s);
            let back: f64 = t.trim_start_matches('+').parse().unwrap();
            assert_eq!(back, s, "{t}");
        }
    }

    #[test]
    fn temporary_keys_share_the_slot_of_their_key() {
        assert!(temp_key(b"user:{42}:cart", 1).starts_with(b"{42}:redvault-part:"));
        for key in [&b"plain"[..], b"a{}b", b"x}y", b""] {
            assert_eq!(key_slot(&temp_key(key, 1)), key_slot(key));
        }
    }
}
