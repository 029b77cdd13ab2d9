//! Least privilege: the Redis commands each role of redvault sends, and the
//! `ACL SETUSER` line that allows exactly those (`redvault acl print`).

/// What a Redis user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `export`: a replica's handshake and one full sync.
    Backup,
    /// `daemon`: the same, then the command stream.
    Daemon,
    /// `export --method scan`: every key read with SCAN, DUMP and its expiry.
    Scan,
    /// `import`: entries written with RESTORE (functions with FUNCTION RESTORE).
    Import,
    /// `restore`: what import needs, then the replayed data writes.
    Restore,
    /// `import`/`restore --via replication`: what restore needs, and making
    /// the target a replica of the feed for the base (REPLICAOF, and its
    /// one-time `masterauth` by CONFIG SET). A full sync replaces every key,
    /// so the key pattern is all keys.
    Feed,
    /// `drill --target`: what the feed needs (a drill restores by the
    /// fastest path, the RESTORE loader when REPLICAOF is refused), and
    /// INFO keyspace for the counts it checks. A scratch drill needs no user.
    Drill,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &[
        "backup", "daemon", "scan", "import", "restore", "feed", "drill",
    ];

    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "backup" => Role::Backup,
            "daemon" => Role::Daemon,
            "scan" => Role::Scan,
            "import" => Role::Import,
            "restore" => Role::Restore,
            "feed" => Role::Feed,
            "drill" => Role::Drill,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Backup => "backup",
            Role::Daemon => "daemon",
            Role::Scan => "scan",
            Role::Import => "import",
            Role::Restore => "restore",
            Role::Feed => "feed",
            Role::Drill => "drill",
        }
    }

    /// Whether the role touches keys (a key pattern applies): it writes them,
    /// or (scan) reads them.
    pub fn writes_keys(self) -> bool {
        matches!(
            self,
            Role::Import | Role::Restore | Role::Scan | Role::Feed | Role::Drill
        )
    }

    /// The commands (lower case, `command|subcommand` where only one
    /// subcommand is needed). PING and INFO are asked for but not required
    /// (the version is then not recorded).
    pub fn commands(self, with_flush: bool) -> Vec<String> {
        let mut c: Vec<String> = match self {
            // CLUSTER SLOTS and NODES: a cluster's primaries, and whether a
            // slot is being migrated (no snapshot then).
            Role::Backup | Role::Daemon => {
                let mut c = [
                    "ping",
                    "info",
                    "replconf",
                    "psync",
                    "cluster|slots",
                    "cluster|nodes",
                ]
                .map(String::from)
                .to_vec();
                if self == Role::Daemon {
                    // The key counts drills compare: INFO in one transaction.
                    c.extend(["multi", "exec"].map(String::from));
                }
                c
            }
            // PEXPIRETIME (7.0) or PTTL (older), FUNCTION DUMP from 7.0.
            Role::Scan => [
                "ping",
                "info",
                "select",
                "scan",
                "dump",
                "pexpiretime",
                "pttl",
                "function|dump",
                "cluster|slots",
                "cluster|nodes",
            ]
            .map(String::from)
            .to_vec(),
            // CLUSTER SLOTS and ASKING: into a cluster (routing, a slot
            // migrating). DEL to RENAMENX: a value over the target's
            // proto-max-bulk-len, built under a temporary key (HPEXPIREAT,
            // for its field TTLs, exists from 7.4 and is left to the user).
            Role::Import | Role::Restore | Role::Feed | Role::Drill => [
                "ping",
                "info",
                "config|get",
                "select",
                "restore",
                "function|restore",
                "cluster|slots",
                "asking",
                "del",
                "set",
                "append",
                "rpush",
                "sadd",
                "zadd",
                "hset",
                "pexpire",
                "pexpireat",
                "persist",
                "rename",
                "renamenx",
            ]
            .map(String::from)
            .to_vec(),
        };
        if matches!(self, Role::Restore | Role::Feed | Role::Drill) {
            // Only what Redis propagates for data (command::Replay::Apply).
            for w in crate::command::data_writes() {
                let w = w.to_ascii_lowercase();
                if !c.contains(&w) {
                    c.push(w);
                }
            }
            for f in ["function|load", "function|delete", "function|flush"] {
                c.push(f.into());
            }
            // A cluster shard's FLUSHALL is replayed as UNLINK of its
            // slots' keys, found by SCAN (Target::delete_slots).
            c.push("scan".into());
        }
        if matches!(self, Role::Feed | Role::Drill) {
            // FUNCTION LIST: the libraries the target holds after the load.
            for f in ["replicaof", "config|set", "function|list"] {
                c.push(f.into());
            }
        }
        if with_flush {
            // --flush empties keys and function libraries.
            for f in ["flushall", "function|flush"] {
                if !c.iter().any(|x| x == f) {
                    c.push(f.into());
                }
            }
        }
        c
    }

    /// `ACL SETUSER <user> on >PASSWORD resetkeys ~<keys> resetchannels -@all +...`:
    /// `nopass` for a user that signs in with Entra ID tokens.
    /// With `known` (the top-level commands a server knows), the others are
    /// left out.
    pub fn setuser(
        self,
        user: &str,
        keys: &str,
        nopass: bool,
        with_flush: bool,
        known: Option<&[String]>,
    ) -> String {
        let mut parts = vec![
            "ACL".to_string(),
            "SETUSER".into(),
            user.into(),
            "on".into(),
            if nopass {
                "nopass".into()
            } else {
                ">PASSWORD".into()
            },
            "resetkeys".into(),
        ];
        // A full sync replaces every key, whatever the pattern says.
        let keys = if matches!(self, Role::Feed | Role::Drill) {
            "*"
        } else {
            keys
        };
        if self.writes_keys() {
            parts.push(format!("~{keys}"));
            if keys != "*" && !matches!(self, Role::Scan | Role::Feed | Role::Drill) {
                // The temporary keys of values built by commands (split.rs).
                parts.push("~*:redvault-part:*".into());
            }
        }
        parts.push("resetchannels".into());
        if matches!(self, Role::Restore | Role::Feed | Role::Drill) {
            // Replayed PUBLISH/SPUBLISH need their channels.
            parts.push("&*".into());
        }
        parts.push("-@all".into());
        parts.extend(
            self.commands(with_flush)
                .into_iter()
                .filter(|c| {
                    let top = c.split('|').next().unwrap_or(c);
                    known.is_none_or(|k| k.iter().any(|n| n == top))
                })
                .map(|c| format!("+{c}")),
        );
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_name_exactly_their_commands() {
        let b = Role::Backup.setuser("rv", "*", false, false, None);
        assert_eq!(
            b,
            "ACL SETUSER rv on >PASSWORD resetkeys resetchannels -@all +ping +info +replconf +psync +cluster|slots +cluster|nodes"
        );
        let i = Role::Import.setuser("rv", "app:*", true, true, None);
        assert!(
            i.contains(" nopass ")
                && i.contains(" ~app:* ")
                && i.ends_with("+flushall +function|flush")
        );
        let r = Role::Restore.commands(false);
        assert!(r.contains(&"hset".to_string()) && !r.contains(&"config|set".to_string()));
        assert!(!r
            .iter()
            .any(|c| c == "eval" || c == "replicaof" || c == "acl"));
        assert!(Role::NAMES.iter().all(|n| Role::parse(n).is_some()));
    }
}

/// What `acl check` found for one user and role.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub user: String,
    pub role: String,
    pub allowed: Vec<String>,
    /// Commands the role sends that the user may not run, with Redis's reason.
    pub missing: Vec<(String, String)>,
    /// Commands outside the role (admin, scripting, replication control) the
    /// user may run anyway.
    pub excess: Vec<String>,
    /// Commands of the role this server does not know (newer servers' writes).
    pub unknown: Vec<String>,
    /// Commands DRYRUN could not judge with sample arguments, with its
    /// answer (a container such as XGROUP is judged by its subcommands).
    pub unchecked: Vec<(String, String)>,
}

/// One DRYRUN's verdict.
enum Verdict {
    Unknown,
    Allowed,
    Denied(String),
    Unchecked(String),
}

/// Commands no role sends that are worth knowing a user may run.
const WATCHED: &[&str] = &[
    "acl|setuser",
    "config|set",
    "debug",
    "eval",
    "flushall",
    "keys",
    "module|load",
    "replicaof",
    "script|load",
    "shutdown",
];

/// Checks `user` against `role` with `ACL DRYRUN` on `conn` (a connection
/// that may run ACL: an admin). Each command is tried with arguments of its
/// arity (COMMAND INFO); keys are a sample matching `keys`.
/// From `COMMAND INFO`: a command's arity and its subcommands (name such as
/// `xgroup|create`, and arity); None for a command this server lacks.
fn command_shape(info: &crate::resp::Reply) -> Option<(i64, Vec<(String, i64)>)> {
    use crate::resp::Reply;
    let Reply::Array(items) = info else {
        return None;
    };
    let Some(Reply::Array(entry)) = items.first() else {
        return None;
    };
    let Some(Reply::Integer(arity)) = entry.get(1) else {
        return None;
    };
    // Redis 7 lists subcommands as the tenth member, each an entry itself.
    let subs = match entry.get(9) {
        Some(Reply::Array(subs)) => subs
            .iter()
            .filter_map(|s| match s {
                Reply::Array(e) => match (e.first(), e.get(1)) {
                    (Some(Reply::Bulk(Some(n))), Some(Reply::Integer(a))) => {
                        Some((String::from_utf8_lossy(n).into_owned(), *a))
                    }
                    _ => None,
                },
                _ => None,
            })
            .filter(|(n, _)| !n.ends_with("|help"))
            .collect(),
        _ => vec![],
    };
    Some((*arity, subs))
}

/// `ACL DRYRUN user cmd [sub] args...` with sample arguments to the arity
/// (which counts the command name and the subcommand; negative is a minimum).
async fn dryrun(
    conn: &mut crate::resp::Conn,
    user: &str,
    parts: &[&str],
    arity: i64,
    sample_key: &str,
) -> Result<Verdict, crate::resp::RedisError> {
    use crate::resp::Reply;
    let needed = (arity.unsigned_abs() as usize).saturating_sub(parts.len());
    let mut args: Vec<Vec<u8>> = vec![b"ACL".to_vec(), b"DRYRUN".to_vec(), user.into()];
    args.extend(parts.iter().map(|p| p.as_bytes().to_vec()));
    args.extend((0..needed).map(|_| sample_key.as_bytes().to_vec()));
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    Ok(match conn.command(&refs).await? {
        Reply::Status(s) if s == "OK" => Verdict::Allowed,
        Reply::Bulk(Some(why)) => Verdict::Denied(String::from_utf8_lossy(&why).into_owned()),
        Reply::Error(e) => Verdict::Unchecked(e),
        other => Verdict::Unchecked(format!("{other:?}")),
    })
}

pub async fn check(
    conn: &mut crate::resp::Conn,
    user: &str,
    role: Role,
    keys: &str,
    with_flush: bool,
) -> Result<CheckReport, crate::resp::RedisError> {
    let sample_key = keys.replace(['*', '?'], "x");
    let mut report = CheckReport {
        user: user.into(),
        role: role.name().into(),
        ..Default::default()
    };
    let mut try_one = async |cmd: &str| -> Result<Verdict, crate::resp::RedisError> {
        let info = conn.command(&[b"COMMAND", b"INFO", cmd.as_bytes()]).await?;
        let Some((arity, subcommands)) = command_shape(&info) else {
            return Ok(Verdict::Unknown);
        };
        let parts: Vec<&str> = cmd.split('|').collect();
        if parts.len() > 1 || subcommands.is_empty() {
            return dryrun(conn, user, &parts, arity, &sample_key).await;
        }
        // A container (XGROUP): DRYRUN judges its subcommands, each of which
        // the role may send; allowed when all are.
        let mut unchecked = None;
        for (name, arity) in subcommands {
            let sub: Vec<&str> = name.split('|').collect();
            match dryrun(conn, user, &sub, arity, &sample_key).await? {
                Verdict::Allowed => {}
                Verdict::Denied(why) => return Ok(Verdict::Denied(format!("{name}: {why}"))),
                Verdict::Unchecked(why) => unchecked = Some(format!("{name}: {why}")),
                Verdict::Unknown => {}
            }
        }
        Ok(unchecked.map_or(Verdict::Allowed, Verdict::Unchecked))
    };
    for cmd in role.commands(with_flush) {
        match try_one(&cmd).await? {
            Verdict::Unknown => report.unknown.push(cmd),
            Verdict::Allowed => report.allowed.push(cmd),
            Verdict::Denied(why) => report.missing.push((cmd, why)),
            Verdict::Unchecked(why) => report.unchecked.push((cmd, why)),
        }
    }
    let role_cmds = role.commands(with_flush);
    for cmd in WATCHED
        .iter()
        .filter(|c| !role_cmds.iter().any(|r| r == *c))
    {
        if let Verdict::Allowed = try_one(cmd).await? {
            report.excess.push(cmd.to_string());
        }
    }
    Ok(report)
}
