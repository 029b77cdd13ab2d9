//! Commands of a newer server's stream, for an older target: what the older
//! one parses differently is rewritten to the same effect (SET ... PXAT before
//! 6.2; the 7.0 stream counters' options), and what it has no way to hold is
//! left out and counted (function libraries before 7.0, hash field TTLs before
//! 7.4), as for the values of the base (`rdb::convert`).

use crate::rdb::{LOST_FIELD_TTLS, LOST_FUNCTIONS};

/// What to send for one command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Adapted {
    /// As it is.
    Same,
    Rewritten(Vec<Vec<u8>>),
    /// Nothing: the target cannot hold what it does.
    Left(&'static str),
}

fn is(a: &[u8], name: &str) -> bool {
    a.eq_ignore_ascii_case(name.as_bytes())
}

fn number(a: &[u8]) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

/// Removes each option named in `names` with its one value.
fn without_options(args: &[Vec<u8>], from: usize, names: &[&str]) -> Option<Vec<Vec<u8>>> {
    let mut out = args[..from.min(args.len())].to_vec();
    let mut i = from;
    let mut removed = false;
    while i < args.len() {
        if names.iter().any(|n| is(&args[i], n)) && i + 1 < args.len() {
            i += 2;
            removed = true;
        } else {
            out.push(args[i].clone());
            i += 1;
        }
    }
    removed.then_some(out)
}

/// Adapts `args` for a target of version `(major, minor)` at `now_ms`.
pub(super) fn adapt(args: &[Vec<u8>], target: (u32, u32), now_ms: i64) -> Adapted {
    let Some(name) = args.first() else {
        return Adapted::Same;
    };
    if target >= (7, 4) {
        return Adapted::Same;
    }
    let field_ttl = ["HEXPIRE", "HPEXPIRE", "HEXPIREAT", "HPEXPIREAT", "HPERSIST"];
    if field_ttl.iter().any(|n| is(name, n)) {
        return Adapted::Left(LOST_FIELD_TTLS);
    }
    if target >= (7, 0) {
        return Adapted::Same;
    }
    if is(name, "FUNCTION") {
        return Adapted::Left(LOST_FUNCTIONS);
    }
    if is(name, "XGROUP") {
        // XGROUP CREATE|SETID key group id [MKSTREAM] [ENTRIESREAD n]
        return match without_options(args, 5, &["ENTRIESREAD"]) {
            Some(a) => Adapted::Rewritten(a),
            None => Adapted::Same,
        };
    }
    if is(name, "XSETID") {
        return match without_options(args, 3, &["ENTRIESADDED", "MAXDELETEDID"]) {
            Some(a) => Adapted::Rewritten(a),
            None => Adapted::Same,
        };
    }
    if target >= (6, 2) || !is(name, "SET") {
        return Adapted::Same;
    }
    // SET key value ... PXAT|EXAT t: as PX, what is left of it now (at
    // least 1 ms: a key already past its time expires at once, as it did).
    let mut out = args.to_vec();
    for i in 3..out.len().saturating_sub(1) {
        let unit = if is(&out[i], "PXAT") {
            1
        } else if is(&out[i], "EXAT") {
            1000
        } else {
            continue;
        };
        let Some(at) = number(&out[i + 1]) else {
            return Adapted::Same; // the target will say what is wrong
        };
        let left = at.saturating_mul(unit).saturating_sub(now_ms).max(1);
        out[i] = b"PX".to_vec();
        out[i + 1] = left.to_string().into_bytes();
        return Adapted::Rewritten(out);
    }
    Adapted::Same
}

/// `(major, minor)` of a version string such as "6.2.14".
pub(super) fn major_minor(version: &str) -> (u32, u32) {
    let mut it = version.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn set_pxat_becomes_px_before_6_2() {
        let set = args(&["SET", "k", "v", "PXAT", "10500"]);
        assert_eq!(
            adapt(&set, (6, 0), 10_000),
            Adapted::Rewritten(args(&["SET", "k", "v", "PX", "500"]))
        );
        assert_eq!(adapt(&set, (6, 2), 10_000), Adapted::Same);
        let exat = args(&["set", "k", "v", "exat", "5"]);
        assert_eq!(
            adapt(&exat, (5, 0), 10_000),
            Adapted::Rewritten(args(&["set", "k", "v", "PX", "1"]))
        );
    }

    #[test]
    fn newer_stream_options_are_dropped_before_7_0() {
        let g = args(&["XGROUP", "SETID", "s", "g", "5-0", "ENTRIESREAD", "3"]);
        assert_eq!(
            adapt(&g, (6, 2), 0),
            Adapted::Rewritten(args(&["XGROUP", "SETID", "s", "g", "5-0"]))
        );
        let x = args(&[
            "XSETID",
            "s",
            "9-0",
            "ENTRIESADDED",
            "9",
            "MAXDELETEDID",
            "2-0",
        ]);
        assert_eq!(
            adapt(&x, (6, 0), 0),
            Adapted::Rewritten(args(&["XSETID", "s", "9-0"]))
        );
        assert_eq!(adapt(&x, (7, 0), 0), Adapted::Same);
    }

    #[test]
    fn what_the_target_lacks_is_left_out_and_named() {
        let f = args(&["FUNCTION", "LOAD", "code"]);
        assert_eq!(adapt(&f, (6, 2), 0), Adapted::Left(LOST_FUNCTIONS));
        assert_eq!(adapt(&f, (7, 0), 0), Adapted::Same);
        let h = args(&["HPEXPIREAT", "h", "99", "FIELDS", "1", "f"]);
        assert_eq!(adapt(&h, (7, 2), 0), Adapted::Left(LOST_FIELD_TTLS));
        assert_eq!(adapt(&h, (8, 0), 0), Adapted::Same);
    }
}
