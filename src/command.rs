//! One command as it travels from a source to a target: its arguments, the
//! replication offset just after it, and when redvault received it. The
//! replication stream yields it, AOF segments store it, replay applies it.
//! Key positions and the hash slot (for a cluster target) belong here too,
//! computed from `args`, so every stage sees the same answer.

/// What replay does with a command of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A data write (or SELECT, MULTI/EXEC, FLUSH*, FUNCTION LOAD, PUBLISH...):
    /// what Redis propagates to replicas for the data.
    Apply,
    /// A keepalive (PING, REPLCONF): stored, never sent.
    Skip,
    /// Anything else (CONFIG, ACL, MODULE, DEBUG, SHUTDOWN, REPLICAOF, SAVE,
    /// EVAL, ...): Redis never propagates it for data (scripts' effects are
    /// replicated as commands), so a segment holding it is not a record of
    /// writes. Replay stops on it.
    Refuse,
}

/// The data writes replay applies (upper case, sorted), for the restore
/// role of `acl print`.
pub fn data_writes() -> &'static [&'static str] {
    DATA_WRITES
}

/// The commands Redis propagates for data, upper case and sorted (binary
/// search). Blocking and read-or-write forms are listed as Redis may propagate
/// them; FUNCTION is checked by subcommand.
const DATA_WRITES: &[&str] = &[
    "APPEND",
    "BITFIELD",
    "BITOP",
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "COPY",
    "DECR",
    "DECRBY",
    "DEL",
    "EXEC",
    "EXPIRE",
    "EXPIREAT",
    "FLUSHALL",
    "FLUSHDB",
    "GEOADD",
    "GEORADIUS",
    "GEORADIUSBYMEMBER",
    "GEOSEARCHSTORE",
    "GETDEL",
    "GETEX",
    "GETSET",
    "HDEL",
    "HEXPIRE",
    "HEXPIREAT",
    "HGETDEL",
    "HGETEX",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HMSET",
    "HPERSIST",
    "HPEXPIRE",
    "HPEXPIREAT",
    "HSET",
    "HSETEX",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINSERT",
    "LMOVE",
    "LMPOP",
    "LPOP",
    "LPUSH",
    "LPUSHX",
    "LREM",
    "LSET",
    "LTRIM",
    "MOVE",
    "MSET",
    "MSETNX",
    "MULTI",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PFADD",
    "PFCOUNT",
    "PFMERGE",
    "PSETEX",
    "PUBLISH",
    "RENAME",
    "RENAMENX",
    "RESTORE",
    "RESTORE-ASKING",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SDIFFSTORE",
    "SELECT",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SINTERSTORE",
    "SMOVE",
    "SORT",
    "SPOP",
    "SPUBLISH",
    "SREM",
    "SUNIONSTORE",
    "SWAPDB",
    "UNLINK",
    "XACK",
    "XACKDEL",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XDELEX",
    "XGROUP",
    "XSETID",
    "XTRIM",
    "ZADD",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTERSTORE",
    "ZMPOP",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANGESTORE",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZUNIONSTORE",
];

/// FUNCTION subcommands that change the data (as propagated).
const FUNCTION_WRITES: &[&str] = &["DELETE", "FLUSH", "LOAD", "RESTORE"];

/// A command of the command stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command name and its arguments, as sent (binary-safe).
    pub args: Vec<Vec<u8>>,
    /// The replication offset just after this command.
    pub offset: u64,
    /// When redvault received it (Unix ms); 0 when unknown.
    pub time_ms: u64,
}

impl Command {
    /// The command name, as sent (any case); empty for an empty command.
    pub fn name(&self) -> &[u8] {
        self.args.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// `REPLCONF GETACK *`: the primary asks for an ACK.
    pub fn is_getack(&self) -> bool {
        self.args.len() >= 2
            && self.args[0].eq_ignore_ascii_case(b"REPLCONF")
            && self.args[1].eq_ignore_ascii_case(b"GETACK")
    }

    /// PING and REPLCONF keep the link alive: they are stored (offsets stay
    /// contiguous) but never replayed, and a segment of only these holds no write.
    pub fn is_keepalive(&self) -> bool {
        let name = self.name();
        name.eq_ignore_ascii_case(b"PING") || name.eq_ignore_ascii_case(b"REPLCONF")
    }

    /// Whether replay sends it to the target (not a keepalive, not empty).
    pub fn is_replayable(&self) -> bool {
        !self.args.is_empty() && !self.is_keepalive()
    }

    /// What replay does with it: only what Redis propagates for data is
    /// applied (see [`Replay`]).
    pub fn replay(&self) -> Replay {
        if self.args.is_empty() {
            return Replay::Refuse;
        }
        if self.is_keepalive() {
            return Replay::Skip;
        }
        // Upper-cased on the stack: replay asks this of every command, twice.
        let (mut name_buf, mut sub_buf) = ([0u8; UPPER_MAX], [0u8; UPPER_MAX]);
        let name = self.name();
        let sub = self.args.get(1).map(Vec::as_slice).unwrap_or_default();
        // Module commands (JSON.SET, TS.ADD, BF.ADD...) are propagated for
        // their data, verbatim; they are namespaced with a dot.
        if name.contains(&b'.') {
            return Replay::Apply;
        }
        let Some(name) = upper(name, &mut name_buf) else {
            return Replay::Refuse; // longer than any data write, or not UTF-8
        };
        // SCRIPT LOAD / FLUSH reach replicas of Redis before 7.0; scripts'
        // effects are replicated as commands, so there is nothing to apply.
        if name == "SCRIPT" {
            return if matches!(upper(sub, &mut sub_buf), Some("LOAD" | "FLUSH")) {
                Replay::Skip
            } else {
                Replay::Refuse
            };
        }
        if name == "FUNCTION" {
            return if upper(sub, &mut sub_buf).is_some_and(|s| FUNCTION_WRITES.contains(&s)) {
                Replay::Apply
            } else {
                Replay::Refuse
            };
        }
        if DATA_WRITES.binary_search(&name).is_ok() {
            Replay::Apply
        } else {
            Replay::Refuse
        }
    }
}

/// Longer than any command or subcommand name replay applies.
const UPPER_MAX: usize = 32;

/// `b` upper-cased into `buf`, if it fits and is UTF-8.
fn upper<'a>(b: &[u8], buf: &'a mut [u8; UPPER_MAX]) -> Option<&'a str> {
    let out = buf.get_mut(..b.len())?;
    out.copy_from_slice(b);
    out.make_ascii_uppercase();
    std::str::from_utf8(out).ok()
}

/// Where a command's keys are, for sending it to the cluster node that owns
/// them (see [`Command::keys`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Keys {
    /// No key: SELECT, MULTI/EXEC, FLUSHALL, FUNCTION, PUBLISH, SWAPDB...
    None,
    /// The keys are these arguments (indices into `args`, in order);
    /// `split` says whether each key's part may be sent on its own.
    Listed { at: Vec<usize>, split: Split },
    /// Not a command of the table (a module's): ask the server.
    Unknown,
}

/// How a command over keys of several hash slots may be cut per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One command: its keys must share a slot (RENAME, SUNIONSTORE...).
    Whole,
    /// `NAME k1 k2 ...`, each key alone (DEL, UNLINK, PFCOUNT).
    Each,
    /// `NAME k1 v1 k2 v2 ...`, each pair alone (MSET; MSETNX, which Redis
    /// propagates only when it set every key).
    Pairs,
}

/// The keys after a `numkeys` argument at `at`.
fn counted(args: &[Vec<u8>], at: usize) -> Option<std::ops::Range<usize>> {
    let n: usize = std::str::from_utf8(args.get(at)?).ok()?.parse().ok()?;
    let end = at + 1 + n;
    (end <= args.len()).then_some(at + 1..end)
}

/// The argument after the option `name` (case-insensitive), at or after `from`.
fn option_value(args: &[Vec<u8>], from: usize, names: &[&[u8]]) -> Vec<usize> {
    (from..args.len().saturating_sub(1))
        .filter(|&i| names.iter().any(|n| args[i].eq_ignore_ascii_case(n)))
        .map(|i| i + 1)
        .collect()
}

/// SORT's STORE destination: the options read in turn, so a BY or GET
/// pattern (or a LIMIT number) that reads "store" is not taken for it.
fn sort_store(args: &[Vec<u8>]) -> Option<usize> {
    let mut i = 2;
    while i < args.len() {
        let o = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match o.as_str() {
            "BY" | "GET" => i += 2,
            "LIMIT" => i += 3,
            "STORE" => return (i + 1 < args.len()).then_some(i + 1),
            _ => i += 1,
        }
    }
    None
}

impl Command {
    /// The keys of a data write (the commands [`Replay::Apply`] takes), by
    /// the key positions of Redis's command table.
    pub fn keys(&self) -> Keys {
        let a = &self.args;
        let upper = String::from_utf8_lossy(self.name()).to_ascii_uppercase();
        let n = a.len();
        let at = |idx: Vec<usize>, split: Split| Keys::Listed {
            at: idx.into_iter().filter(|&i| i < n).collect(),
            split,
        };
        let range = |r: std::ops::Range<usize>, split: Split| at(r.collect(), split);
        match upper.as_str() {
            "SELECT" | "MULTI" | "EXEC" | "DISCARD" | "FLUSHALL" | "FLUSHDB" | "SWAPDB"
            | "FUNCTION" | "PUBLISH" | "SCRIPT" => Keys::None,
            "DEL" | "UNLINK" | "PFCOUNT" => range(1..n, Split::Each),
            "MSET" | "MSETNX" => at((1..n).step_by(2).collect(), Split::Pairs),
            "RENAME" | "RENAMENX" | "LMOVE" | "BLMOVE" | "RPOPLPUSH" | "BRPOPLPUSH" | "SMOVE"
            | "COPY" | "GEOSEARCHSTORE" | "ZRANGESTORE" => range(1..3.min(n), Split::Whole),
            "SDIFFSTORE" | "SINTERSTORE" | "SUNIONSTORE" | "PFMERGE" => range(1..n, Split::Whole),
            "BLPOP" | "BRPOP" | "BZPOPMAX" | "BZPOPMIN" => {
                range(1..n.saturating_sub(1).max(1), Split::Whole)
            }
            "BITOP" => range(2.min(n)..n, Split::Whole),
            "ZUNIONSTORE" | "ZINTERSTORE" | "ZDIFFSTORE" => {
                let mut k = vec![1];
                k.extend(counted(a, 2).unwrap_or(0..0));
                at(k, Split::Whole)
            }
            "LMPOP" | "ZMPOP" => range(counted(a, 1).unwrap_or(0..0), Split::Whole),
            "BLMPOP" | "BZMPOP" => range(counted(a, 2).unwrap_or(0..0), Split::Whole),
            "XGROUP" => at(vec![2], Split::Whole),
            // Options after `key lon lat radius unit` / `key member radius unit`.
            "GEORADIUS" | "GEORADIUSBYMEMBER" => {
                let first = if upper == "GEORADIUS" { 6 } else { 5 };
                let mut k = vec![1];
                k.extend(option_value(a, first, &[b"STORE", b"STOREDIST"]));
                at(k, Split::Whole)
            }
            "SORT" => {
                let mut k = vec![1];
                k.extend(sort_store(a));
                at(k, Split::Whole)
            }
            "SPUBLISH" => Keys::None,
            name if name.contains('.') => Keys::Unknown,
            name if DATA_WRITES.binary_search(&name).is_ok() => at(vec![1], Split::Whole),
            _ => Keys::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    fn cmd(args: &[&str]) -> Command {
        Command {
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            offset: 0,
            time_ms: 0,
        }
    }

    #[test]
    fn only_what_redis_propagates_for_data_is_replayed() {
        use super::{Replay, DATA_WRITES};
        let mut sorted = DATA_WRITES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, DATA_WRITES, "DATA_WRITES must stay sorted");
        for ok in [
            &["set", "k", "v"][..],
            &["SELECT", "3"],
            &["multi"],
            &["EXEC"],
            &["function", "load", "#!lua name=x"],
            &["FLUSHALL"],
            &["pexpireat", "k", "1"],
            &["XGROUP", "CREATE", "s", "g", "$"],
            &["JSON.SET", "doc", "$", "{}"],
        ] {
            assert_eq!(cmd(ok).replay(), Replay::Apply, "{ok:?}");
        }
        for bad in [
            &["CONFIG", "SET", "dir", "/tmp"][..],
            &["acl", "setuser", "x"],
            &["MODULE", "LOAD", "/x.so"],
            &["DEBUG", "SLEEP", "1"],
            &["SHUTDOWN"],
            &["REPLICAOF", "10.0.0.1", "6379"],
            &["SLAVEOF", "no", "one"],
            &["SAVE"],
            &["BGSAVE"],
            &["SCRIPT", "KILL"],
            &["EVAL", "return 1", "0"],
            &["EVALSHA", "abc", "0"],
            &["FUNCTION", "KILL"],
            &["CLIENT", "KILL", "ID", "1"],
            &[],
        ] {
            assert_eq!(cmd(bad).replay(), Replay::Refuse, "{bad:?}");
        }
        assert_eq!(cmd(&["PING"]).replay(), Replay::Skip);
        assert_eq!(cmd(&["script", "load", "return 1"]).replay(), Replay::Skip);
        assert_eq!(cmd(&["REPLCONF", "GETACK", "*"]).replay(), Replay::Skip);
    }

    /// Key positions as `COMMAND GETKEYS` gives them on Redis 7.
    #[test]
    fn keys_are_found_where_the_command_table_puts_them() {
        use super::{Keys, Split};
        let keys = |args: &[&str]| match cmd(args).keys() {
            Keys::Listed { at, split } => (
                at.iter()
                    .map(|&i| args[i].to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                split,
            ),
            other => panic!("{args:?}: {other:?}"),
        };
        for (args, want, split) in [
            (&["SET", "k", "v", "PX", "5"][..], "k", Split::Whole),
            (&["del", "a", "b", "c"], "a b c", Split::Each),
            (&["MSET", "a", "1", "b", "2"], "a b", Split::Pairs),
            (&["RENAME", "a", "b"], "a b", Split::Whole),
            (&["BLPOP", "a", "b", "0"], "a b", Split::Whole),
            (&["BITOP", "AND", "d", "a", "b"], "d a b", Split::Whole),
            (
                &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
                "d a b",
                Split::Whole,
            ),
            (&["LMPOP", "2", "a", "b", "LEFT"], "a b", Split::Whole),
            (&["BZMPOP", "0", "1", "z", "MIN"], "z", Split::Whole),
            (&["XGROUP", "CREATE", "s", "g", "$"], "s", Split::Whole),
            (
                &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "d"],
                "g d",
                Split::Whole,
            ),
            (&["SORT", "l", "ALPHA", "STORE", "d"], "l d", Split::Whole),
            (
                &["SORT", "l", "BY", "store", "STORE", "d"],
                "l d",
                Split::Whole,
            ),
            (
                &["SORT", "l", "GET", "#", "LIMIT", "0", "5"],
                "l",
                Split::Whole,
            ),
            (
                &["GEORADIUSBYMEMBER", "g", "store", "1", "km", "STORE", "d"],
                "g d",
                Split::Whole,
            ),
            (&["SUNIONSTORE", "d", "a", "b"], "d a b", Split::Whole),
            (&["XADD", "s", "*", "f", "v"], "s", Split::Whole),
        ] {
            assert_eq!(keys(args), (want.to_string(), split), "{args:?}");
        }
        for none in [
            &["SELECT", "1"][..],
            &["FLUSHALL"],
            &["MULTI"],
            &["FUNCTION", "LOAD", "x"],
        ] {
            assert_eq!(cmd(none).keys(), Keys::None, "{none:?}");
        }
        assert_eq!(cmd(&["JSON.SET", "d", "$", "{}"]).keys(), Keys::Unknown);
    }

    #[test]
    fn keepalives_are_not_replayed() {
        assert!(cmd(&["replconf", "GETACK", "*"]).is_getack());
        assert!(!cmd(&["SET", "k", "v"]).is_getack());
        assert!(!cmd(&["ping"]).is_replayable());
        assert!(!cmd(&[]).is_replayable());
        assert!(cmd(&["SET", "k", "v"]).is_replayable());
    }
}
