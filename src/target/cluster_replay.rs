//! Replay into a cluster: each command of the stream goes to the primary that
//! owns its keys' hash slot, through that node's own writer (so the order of
//! the commands on each key is kept). A command over keys of several slots
//! is cut per slot where each key's part stands alone (DEL, UNLINK, MSET);
//! any other is refused, naming it and its offset, since a cluster runs a
//! command over one slot only. FLUSHALL, FLUSHDB and FUNCTION go to every
//! primary. MULTI/EXEC are dropped: a cluster has no transaction across
//! nodes, and the restore applies a transaction whole (`backup::replay`
//! never stops inside one), with nobody reading the target meanwhile.
//! A cluster has only db 0: a write after SELECT of another db is refused
//! unless `--target-db 0`.

use super::cluster::{key_slot, ClusterTarget};
use super::{Target, TargetError};
use crate::command::{Command, Keys, Split};
use crate::resp::Reply;
use std::collections::BTreeMap;

impl ClusterTarget {
    pub(super) async fn replay(&mut self, cmd: &Command) -> Result<(), TargetError> {
        if !cmd.is_replayable() {
            return Ok(());
        }
        if !self.replaying {
            // A key of the snapshot held back by ASK lands before any
            // command on it.
            self.settle().await?;
            self.replaying = true;
        }
        let name = String::from_utf8_lossy(cmd.name()).to_ascii_uppercase();
        match name.as_str() {
            "MULTI" | "EXEC" | "DISCARD" => return Ok(()),
            "SELECT" => {
                self.replay_db = cmd
                    .args
                    .get(1)
                    .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
                    .unwrap_or(0);
                return Ok(());
            }
            "SWAPDB" | "MOVE" => {
                return Err(self.refuse(
                    cmd,
                    "moves data between databases, and a cluster has only db 0",
                ))
            }
            _ => {}
        }
        let db = self.target_db.unwrap_or(self.replay_db);
        if db != 0 {
            return Err(self.refuse(cmd, &format!("writes db {db}, and a cluster has only db 0")));
        }
        let keys: Vec<Vec<u8>> = match cmd.keys() {
            Keys::None => {
                if name == "PUBLISH" || name == "SPUBLISH" {
                    // A cluster delivers a message to every node's
                    // subscribers; a shard channel belongs to its slot.
                    let n = match (name.as_str(), cmd.args.get(1)) {
                        ("SPUBLISH", Some(ch)) => self.owner_of(ch),
                        _ => 0,
                    };
                    return self.node(n).apply(cmd).await;
                }
                for n in 0..self.primaries() {
                    self.node(n).apply(cmd).await?;
                }
                return Ok(());
            }
            Keys::Listed { at, split } => {
                let slots: BTreeMap<usize, Vec<usize>> =
                    at.iter().fold(BTreeMap::new(), |mut m, &i| {
                        m.entry(key_slot(&cmd.args[i]))
                            .or_insert_with(Vec::new)
                            .push(i);
                        m
                    });
                match slots.keys().next() {
                    Some(&slot) if slots.len() == 1 => {
                        let n = self.owner[slot];
                        return self.node(n).apply(cmd).await;
                    }
                    Some(_) => return self.apply_cut(cmd, &name, slots, split).await,
                    None => vec![],
                }
            }
            Keys::Unknown => self.keys_from_server(cmd).await?,
        };
        let slots: std::collections::BTreeSet<usize> = keys.iter().map(|k| key_slot(k)).collect();
        match slots.len() {
            0 => Err(self.refuse(cmd, "names no key, so no node of the cluster owns it")),
            1 => {
                let n = self.owner_of(&keys[0]);
                self.node(n).apply(cmd).await
            }
            k => Err(self.cross_slot(cmd, k)),
        }
    }

    fn cross_slot(&self, cmd: &Command, slots: usize) -> TargetError {
        self.refuse(
            cmd,
            &format!("writes keys of {slots} hash slots, and a cluster runs a command over one slot only"),
        )
    }

    /// A command over several slots, cut into one per slot (each key's part
    /// alone), or refused when its parts do not stand alone.
    async fn apply_cut(
        &mut self,
        cmd: &Command,
        name: &str,
        slots: BTreeMap<usize, Vec<usize>>,
        split: Split,
    ) -> Result<(), TargetError> {
        let width = match split {
            Split::Whole => return Err(self.cross_slot(cmd, slots.len())),
            Split::Each => 1,
            Split::Pairs => 2,
        };
        for (slot, at) in slots {
            let mut args = vec![name.as_bytes().to_vec()];
            for i in at {
                args.extend(cmd.args[i..(i + width).min(cmd.args.len())].iter().cloned());
            }
            let part = Command {
                args,
                offset: cmd.offset,
                time_ms: cmd.time_ms,
            };
            let n = self.owner[slot];
            self.node(n).apply(&part).await?;
        }
        Ok(())
    }

    /// The keys of a command not in redvault's table (a module's), by
    /// COMMAND GETKEYS on the cluster itself.
    async fn keys_from_server(&mut self, cmd: &Command) -> Result<Vec<Vec<u8>>, TargetError> {
        if self.control.is_none() {
            self.control = Some(crate::resp::connect(&self.seed, &self.link).await?);
        }
        let conn = self.control.as_mut().expect("connected above");
        let mut ask: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
        ask.extend(cmd.args.iter().map(Vec::as_slice));
        match conn.command(&ask).await? {
            Reply::Array(items) => Ok(items
                .into_iter()
                .filter_map(|r| match r {
                    Reply::Bulk(Some(k)) => Some(k),
                    _ => None,
                })
                .collect()),
            Reply::Error(m) => Err(self.refuse(
                cmd,
                &format!("has keys the cluster would not name (COMMAND GETKEYS: {m})"),
            )),
            other => Err(self.refuse(cmd, &format!("COMMAND GETKEYS answered {other:?}"))),
        }
    }

    fn refuse(&self, cmd: &Command, why: &str) -> TargetError {
        TargetError::Cluster(format!(
            "the command {} at offset {} {why}: restore into a single Redis",
            String::from_utf8_lossy(cmd.name()).to_ascii_uppercase(),
            cmd.offset
        ))
    }
}
