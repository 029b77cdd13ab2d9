//! Replay: commands of the stream applied in order on the target's first
//! connection, through the same pipelined writer as the entries (batches of
//! `LoadOptions::pipeline` commands / `batch_bytes`). Before the first one,
//! every entry queued so far must have landed, and the connection is back on
//! db 0 as a fresh one would be (the stream SELECTs its own databases).

use super::pipeline::Expect;
use super::{RedisTarget, TargetError};
use crate::command::Command;

impl RedisTarget {
    pub(super) async fn apply_command(&mut self, cmd: &Command) -> Result<(), TargetError> {
        if !cmd.is_replayable() || self.opts.dry_run {
            return Ok(());
        }
        if !self.replaying {
            self.pipe.barrier().await?;
            self.pipe.select(0, 0);
            self.replaying = true;
        }
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
        let args: Vec<&[u8]> = cmd.args.iter().map(Vec::as_slice).collect();
        let full = self
            .pipe
            .queue(0, &args, Expect::Command { offset: cmd.offset });
        if full {
            self.pipe.flush(0).await?;
        }
        Ok(())
    }
}
