//! Least privilege: the Redis commands each role of redvault sends, and the
//! `ACL SETUSER` line that allows exactly those (`redvault acl print`).

/// What a Redis user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `export`: a replica's handshake and one full sync.
    Backup,
    /// `daemon`: the same, then the command stream.
    Daemon,
    /// `import`: entries written with RESTORE (functions with FUNCTION RESTORE).
    Import,
    /// `restore`: what import needs, then the replayed data writes.
    Restore,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["backup", "daemon", "import", "restore"];

    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "backup" => Role::Backup,
            "daemon" => Role::Daemon,
            "import" => Role::Import,
            "restore" => Role::Restore,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Backup => "backup",
            Role::Daemon => "daemon",
            Role::Import => "import",
            Role::Restore => "restore",
        }
    }

    /// Whether the role touches keys (a key pattern applies).
    pub fn writes_keys(self) -> bool {
        matches!(self, Role::Import | Role::Restore)
    }

    /// The commands (lower case, `command|subcommand` where only one
    /// subcommand is needed). PING and INFO are asked for but not required
    /// (the version is then not recorded).
    pub fn commands(self, with_flush: bool) -> Vec<String> {
        let mut c: Vec<String> = match self {
            Role::Backup | Role::Daemon => ["ping", "info", "replconf", "psync"]
                .map(String::from)
                .to_vec(),
            Role::Import | Role::Restore => [
                "ping",
                "info",
                "config|get",
                "select",
                "restore",
                "function|restore",
            ]
            .map(String::from)
            .to_vec(),
        };
        if self == Role::Restore {
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
        }
        if with_flush && !c.iter().any(|x| x == "flushall") {
            c.push("flushall".into());
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
        if self.writes_keys() {
            parts.push(format!("~{keys}"));
        }
        parts.push("resetchannels".into());
        if self == Role::Restore {
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
            "ACL SETUSER rv on >PASSWORD resetkeys resetchannels -@all +ping +info +replconf +psync"
        );
        let i = Role::Import.setuser("rv", "app:*", true, true, None);
        assert!(i.contains(" nopass ") && i.contains(" ~app:* ") && i.ends_with("+flushall"));
        let r = Role::Restore.commands(false);
        assert!(r.contains(&"hset".to_string()) && !r.contains(&"config|set".to_string()));
        assert!(!r
            .iter()
            .any(|c| c == "eval" || c == "replicaof" || c == "acl"));
        assert!(Role::NAMES.iter().all(|n| Role::parse(n).is_some()));
    }
}
