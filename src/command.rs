//! One command as it travels from a source to a target: its arguments, the
//! replication offset just after it, and when redvault received it. The
//! replication stream yields it, AOF segments store it, replay applies it.
//! Key positions and the hash slot (for a cluster target) belong here too,
//! computed from `args`, so every stage sees the same answer.

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
    fn keepalives_are_not_replayed() {
        assert!(cmd(&["replconf", "GETACK", "*"]).is_getack());
        assert!(!cmd(&["SET", "k", "v"]).is_getack());
        assert!(!cmd(&["ping"]).is_replayable());
        assert!(!cmd(&[]).is_replayable());
        assert!(cmd(&["SET", "k", "v"]).is_replayable());
    }
}
