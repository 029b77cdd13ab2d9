//! Replay: commands of the stream applied in order on the target's first
//! connection, through the same pipelined writer as the entries (batches of
//! `LoadOptions::pipeline` commands / `batch_bytes`). Before the first one,
//! every entry queued so far must have landed, and the connection is back on
//! db 0 as a fresh one would be (the stream SELECTs its own databases).
//! Into an older server, commands are adapted first (`older.rs`).

use super::older::{adapt, major_minor, Adapted};
use super::pipeline::Expect;
use super::{RedisTarget, TargetError};
use crate::command::Command;

impl RedisTarget {
    /// Before the first command: every entry landed, connection 0 on db 0.
    pub(super) async fn start_replay(&mut self) -> Result<(), TargetError> {
        if !self.replaying {
            self.pipe.barrier().await?;
            self.pipe.select(0, 0);
            self.replaying = true;
        }
        Ok(())
    }

    pub(super) async fn apply_command(&mut self, cmd: &Command) -> Result<(), TargetError> {
        if !cmd.is_replayable() || self.opts.dry_run {
            return Ok(());
        }
        self.start_replay().await?;
        let name = cmd.name();
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.pipe.set_in_transaction(0, true);
        } else if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
            self.pipe.set_in_transaction(0, false);
        }
        if name.eq_ignore_ascii_case(b"SELECT") {
            if let Some(db) = cmd
                .args
                .get(1)
                .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
            {
                self.pipe.assume_db(0, db);
            }
        }
        let adapted = match &self.target {
            Some(v) => adapt(
                &cmd.args,
                major_minor(&v.redis),
                crate::text::now_ms() as i64,
            ),
            None => Adapted::Same,
        };
        let args: Vec<&[u8]> = match &adapted {
            Adapted::Same => cmd.args.iter().map(Vec::as_slice).collect(),
            Adapted::Rewritten(a) => a.iter().map(Vec::as_slice).collect(),
            Adapted::Left(what) => {
                *self.stats.lost.entry(what).or_insert(0) += 1;
                return Ok(());
            }
        };
        let full = self
            .pipe
            .queue(0, &args, Expect::Command { offset: cmd.offset });
        if full {
            self.pipe.flush(0).await?;
        }
        Ok(())
    }
}
