//! Which entries to load: databases, key patterns (Redis glob, as in ACL
//! `~pattern`) and types.

use crate::rdb::Entry;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Source databases to load; empty = all.
    pub dbs: Vec<u64>,
    /// Key patterns; empty = all.
    pub patterns: Vec<Vec<u8>>,
    /// Type names (string, list, set, zset, hash, stream, module); empty = all.
    pub types: Vec<String>,
}

impl Filter {
    pub fn accepts(&self, e: &Entry) -> bool {
        (self.dbs.is_empty() || self.dbs.contains(&e.db))
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, &e.key)))
            && (self.types.is_empty() || self.types.iter().any(|t| t == type_name(e.type_byte)))
    }

    pub fn is_empty(&self) -> bool {
        self.dbs.is_empty() && self.patterns.is_empty() && self.types.is_empty()
    }
}

/// The Redis type of an RDB type byte, as TYPE names it.
pub fn type_name(t: u8) -> &'static str {
    match t {
        0 => "string",
        1 | 10 | 14 | 18 => "list",
        2 | 11 | 20 => "set",
        3 | 5 | 12 | 17 => "zset",
        4 | 9 | 13 | 16 | 22..=25 => "hash",
        15 | 19 | 21 => "stream",
        6 | 7 => "module",
        _ => "unknown",
    }
}

pub const TYPE_NAMES: [&str; 7] = ["string", "list", "set", "zset", "hash", "stream", "module"];

/// Redis glob matching (stringmatchlen): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Backtracking point for the last `*`.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at pattern[p] == '['; returns
/// (matched, index after the class).
fn class_match(pattern: &[u8], mut p: usize, c: u8) -> Option<(bool, usize)> {
    p += 1;
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    loop {
        let x = *pattern.get(p)?;
        if x == b']' {
            break;
        }
        if x == b'\\' && p + 1 < pattern.len() {
            matched |= pattern[p + 1] == c;
            p += 2;
        } else if pattern.get(p + 1) == Some(&b'-')
            && p + 2 < pattern.len()
            && pattern[p + 2] != b']'
        {
            let (lo, hi) = (x.min(pattern[p + 2]), x.max(pattern[p + 2]));
            matched |= (lo..=hi).contains(&c);
            p += 3;
        } else {
            matched |= x == c;
            p += 1;
        }
    }
    Some((matched != negate, p + 1))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_glob_semantics() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:42"));
        assert!(!m("user:*", "session:1"));
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hello") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*:*:end", "a:b:c:end") && !m("*:*:end", "a:end"));
        assert!(m("", "") && !m("", "x"));
    }
}
