//! The one pipelined writer to Redis: commands are encoded into a batch per
//! connection, each batch sent whole and its replies read and checked by that
//! connection's worker task. At most two batches wait per connection, so memory
//! is bounded by connections x 2 x batch bytes. Long-lived connections AUTH
//! again before a fetched token expires.

use super::{show_key, Conflict, TargetError};
use crate::resp::{encode_into, Conn, RedisAuth, RedisError, Reply};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What one queued command's reply must be.
pub(super) enum Expect {
    /// A re-AUTH with a fresh token on a long-lived connection.
    Auth {
        user: String,
    },
    Select(u64),
    Function {
        library: String,
    },
    Restore {
        key: Vec<u8>,
        db: u64,
    },
    /// A replayed command: anything but an error.
    Command {
        offset: u64,
    },
    /// A command building a split value under its temporary key: anything
    /// but an error.
    Part {
        key: Vec<u8>,
        db: u64,
    },
    /// RENAME (+OK) or RENAMENX (1, or 0 when the key exists) of a split
    /// value onto its key; "no such key" once its expiry passed while it was
    /// built (counted as expired).
    Placed {
        key: Vec<u8>,
        db: u64,
        expire_ms: Option<i64>,
    },
}

#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    expect: Vec<Expect>,
    /// Where each command's bytes are in `buf` (to send one again elsewhere).
    spans: Vec<(usize, usize)>,
}

/// A RESTORE a cluster node answered with MOVED or ASK: to send again to
/// `addr` (after ASKING, for ASK).
#[derive(Debug)]
pub(super) struct Redirect {
    pub ask: bool,
    pub addr: String,
    pub command: Vec<u8>,
    pub key: Vec<u8>,
    pub db: u64,
}

/// Where the workers of a cluster node's pipeline leave their redirects.
pub(super) type Redirects = Arc<Mutex<Vec<Redirect>>>;

/// `MOVED <slot> <addr>` or `ASK <slot> <addr>`: (is ASK, addr).
pub(super) fn redirect_of(message: &str) -> Option<(bool, String)> {
    let mut it = message.split_whitespace();
    let ask = match it.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let _slot = it.next()?;
    Some((ask, it.next()?.to_string()))
}

enum Job {
    Batch(Batch),
    /// Answered once every batch sent before it has its replies.
    Barrier(oneshot::Sender<()>),
}

/// What the workers counted from the replies.
#[derive(Default)]
pub(super) struct Replies {
    pub loaded: u64,
    pub skipped: u64,
    pub functions: u64,
    pub commands: u64,
    /// Split values whose expiry passed while they were built.
    pub expired: u64,
}

/// Re-AUTH this long before a token expires (the token cache refreshes it 300 s
/// before; this leaves a minute of margin after that).
const REAUTH_MARGIN_SECS: i64 = 240;

fn reauth_due(expires_on: Option<i64>) -> i64 {
    expires_on.map_or(i64::MAX, |t| t - REAUTH_MARGIN_SECS)
}

fn unix_now() -> i64 {
    crate::text::unix_now() as i64
}

pub(super) struct Pipeline {
    senders: Vec<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<Result<Replies, TargetError>>>,
    batches: Vec<Batch>,
    /// The database each connection has selected.
    conn_db: Vec<u64>,
    max_commands: usize,
    max_bytes: usize,
    auth: Option<Arc<dyn RedisAuth>>,
    reauth_due: Vec<i64>,
    /// Connections inside a replayed MULTI: no AUTH may be queued there (it
    /// would only be queued, and answer +QUEUED).
    in_transaction: Vec<bool>,
}

impl Pipeline {
    /// One worker per connection; `first_expiry` is when the connections'
    /// fetched credentials expire (Unix s), if they do.
    pub fn new(
        conns: Vec<Conn>,
        conflict: Conflict,
        max_commands: usize,
        max_bytes: usize,
        auth: Option<Arc<dyn RedisAuth>>,
        first_expiry: Option<i64>,
        redirects: Option<Redirects>,
    ) -> Self {
        let n = conns.len();
        let mut senders = vec![];
        let mut workers = vec![];
        for conn in conns {
            let (tx, rx) = mpsc::channel(2);
            senders.push(tx);
            workers.push(tokio::spawn(worker(conn, rx, conflict, redirects.clone())));
        }
        Pipeline {
            senders,
            workers,
            batches: (0..n).map(|_| Batch::default()).collect(),
            conn_db: vec![0; n],
            max_commands: max_commands.max(1),
            max_bytes,
            auth,
            reauth_due: vec![reauth_due(first_expiry); n],
            in_transaction: vec![false; n],
        }
    }

    /// Whether connection `c` is inside a MULTI of the replayed stream.
    pub fn set_in_transaction(&mut self, c: usize, inside: bool) {
        self.in_transaction[c] = inside;
    }

    pub fn connections(&self) -> usize {
        self.batches.len()
    }

    /// Queues `SELECT db` on connection `c` unless it has that db selected.
    pub fn select(&mut self, c: usize, db: u64) {
        if self.conn_db[c] != db {
            let b = &mut self.batches[c];
            let start = b.buf.len();
            encode_into(
                &mut b.buf,
                &[b"SELECT".as_slice(), db.to_string().as_bytes()],
            );
            b.spans.push((start, b.buf.len()));
            b.expect.push(Expect::Select(db));
            self.conn_db[c] = db;
        }
    }

    /// Queues one command on connection `c`; true when its batch is full and
    /// should be flushed.
    pub fn queue(&mut self, c: usize, args: &[&[u8]], expect: Expect) -> bool {
        let b = &mut self.batches[c];
        let start = b.buf.len();
        encode_into(&mut b.buf, args);
        b.spans.push((start, b.buf.len()));
        b.expect.push(expect);
        b.expect.len() >= self.max_commands || b.buf.len() >= self.max_bytes
    }

    /// The database connection `c` has selected.
    pub fn db(&self, c: usize) -> u64 {
        self.conn_db[c]
    }

    /// Forgets the database a replayed SELECT chose (the stream selects its own).
    pub fn assume_db(&mut self, c: usize, db: u64) {
        self.conn_db[c] = db;
    }

    /// Sends connection `c`'s batch (waiting while two are in flight).
    pub async fn flush(&mut self, c: usize) -> Result<(), TargetError> {
        if self.senders.is_empty() {
            return Err(TargetError::Worker(
                "the target stopped after an earlier error".into(),
            ));
        }
        let mut batch = std::mem::take(&mut self.batches[c]);
        if batch.expect.is_empty() {
            return Ok(());
        }
        if let Some(auth) = self
            .auth
            .as_ref()
            .filter(|_| !self.in_transaction[c] && unix_now() >= self.reauth_due[c])
        {
            // The token is about to expire: AUTH again ahead of this batch.
            let creds = auth
                .credentials()
                .await
                .map_err(|e| TargetError::Worker(e.0))?;
            let mut buf = Vec::with_capacity(batch.buf.len() + 64);
            encode_into(
                &mut buf,
                &[
                    b"AUTH".as_slice(),
                    creds.user.as_bytes(),
                    creds.password.as_bytes(),
                ],
            );
            let shift = buf.len();
            buf.extend_from_slice(&batch.buf);
            batch.buf = buf;
            for s in &mut batch.spans {
                *s = (s.0 + shift, s.1 + shift);
            }
            batch.spans.insert(0, (0, shift));
            batch.expect.insert(
                0,
                Expect::Auth {
                    user: creds.user.clone(),
                },
            );
            self.reauth_due[c] = reauth_due(creds.expires_on).max(unix_now() + 30);
        }
        if self.senders[c].send(Job::Batch(batch)).await.is_err() {
            // The worker stopped on an error: collect it.
            return Err(self.fail().await);
        }
        Ok(())
    }

    /// Flushes every connection and waits until all their replies are read:
    /// what was queued before has landed.
    pub async fn barrier(&mut self) -> Result<(), TargetError> {
        for c in 0..self.batches.len() {
            self.flush(c).await?;
        }
        let mut waits = vec![];
        for s in &self.senders {
            let (tx, rx) = oneshot::channel();
            if s.send(Job::Barrier(tx)).await.is_err() {
                return Err(self.fail().await);
            }
            waits.push(rx);
        }
        for w in waits {
            if w.await.is_err() {
                return Err(self.fail().await);
            }
        }
        Ok(())
    }

    /// The first worker error, after stopping all of them.
    async fn fail(&mut self) -> TargetError {
        self.senders.clear();
        let mut first = None;
        for w in self.workers.drain(..) {
            if let Ok(Err(e)) = w.await {
                first.get_or_insert(e);
            }
        }
        first.unwrap_or_else(|| TargetError::Worker("no error was reported".into()))
    }

    /// Sends what is batched, waits for every reply, and returns the counts.
    pub async fn finish(&mut self) -> Result<Replies, TargetError> {
        for c in 0..self.senders.len() {
            self.flush(c).await?;
        }
        self.senders.clear();
        let mut total = Replies::default();
        let mut first_err = None;
        for w in self.workers.drain(..) {
            match w.await {
                Ok(Ok(s)) => {
                    total.loaded += s.loaded;
                    total.skipped += s.skipped;
                    total.functions += s.functions;
                    total.commands += s.commands;
                    total.expired += s.expired;
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(TargetError::Worker(e.to_string()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// One connection: writes a batch, then reads and checks its replies.
async fn worker(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Job>,
    conflict: Conflict,
    redirects: Option<Redirects>,
) -> Result<Replies, TargetError> {
    let mut stats = Replies::default();
    while let Some(job) = rx.recv().await {
        let batch = match job {
            Job::Batch(b) => b,
            Job::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        conn.write_raw(&batch.buf).await?;
        for (exp, span) in batch.expect.into_iter().zip(batch.spans) {
            let waiting_for = match &exp {
                Expect::Command { .. } => "the reply to a replayed command",
                _ => "the reply to RESTORE",
            };
            let reply = conn.read_reply(waiting_for).await?;
            // A cluster node's key moved away (a slot migrating): kept, to
            // send again to the node named.
            if let (Some(r), Expect::Restore { key, db }, Reply::Error(m)) =
                (&redirects, &exp, &reply)
            {
                if let Some((ask, addr)) = redirect_of(m) {
                    if let Ok(mut r) = r.lock() {
                        r.push(Redirect {
                            ask,
                            addr,
                            command: batch.buf[span.0..span.1].to_vec(),
                            key: key.clone(),
                            db: *db,
                        });
                        continue;
                    }
                }
            }
            check(exp, reply, conflict, &mut stats, &conn.addr)?;
        }
    }
    Ok(stats)
}

fn check(
    exp: Expect,
    reply: Reply,
    conflict: Conflict,
    stats: &mut Replies,
    addr: &str,
) -> Result<(), TargetError> {
    let unexpected = || "unexpected reply".to_string();
    match (exp, reply) {
        (Expect::Auth { .. }, Reply::Status(_)) => {}
        (Expect::Auth { user }, reply) => {
            return Err(TargetError::Connect(RedisError::Auth {
                addr: addr.to_string(),
                user: Some(user),
                message: match reply {
                    Reply::Error(m) => m,
                    _ => unexpected(),
                },
            }))
        }
        (Expect::Select(_), Reply::Status(_)) => {}
        (Expect::Select(db), Reply::Error(message)) => {
            return Err(TargetError::Select { db, message })
        }
        (Expect::Select(db), _) => {
            return Err(TargetError::Select {
                db,
                message: unexpected(),
            })
        }
        (Expect::Function { .. }, Reply::Status(_)) => stats.functions += 1,
        (Expect::Function { .. }, Reply::Error(m))
            if conflict == Conflict::Skip && m.contains("already exists") =>
        {
            stats.skipped += 1
        }
        (Expect::Function { library }, Reply::Error(message)) => {
            return Err(TargetError::Function { library, message })
        }
        (Expect::Function { library }, _) => {
            return Err(TargetError::Function {
                library,
                message: unexpected(),
            })
        }
        (Expect::Restore { .. }, Reply::Status(_)) => stats.loaded += 1,
        (Expect::Restore { key, db }, Reply::Error(m)) if m.starts_with("BUSYKEY") => {
            if conflict == Conflict::Skip {
                stats.skipped += 1;
            } else {
                return Err(TargetError::KeyExists {
                    key: show_key(&key),
                    db,
                });
            }
        }
        (Expect::Restore { key, db }, Reply::Error(message)) => {
            return Err(TargetError::Refused {
                key: show_key(&key),
                db,
                message,
            })
        }
        (Expect::Restore { key, db }, _) => {
            return Err(TargetError::Refused {
                key: show_key(&key),
                db,
                message: unexpected(),
            })
        }
        // Only a top-level error fails a replayed command (EXEC's array may
        // hold errors of its own, as on the primary).
        (Expect::Command { offset }, Reply::Error(message)) => {
            return Err(TargetError::Command { offset, message })
        }
        (Expect::Command { .. }, _) => stats.commands += 1,
        (Expect::Placed { expire_ms, .. }, Reply::Error(m))
            if m.contains("no such key")
                && expire_ms.is_some_and(|t| t <= crate::text::now_ms() as i64) =>
        {
            stats.expired += 1
        }
        (Expect::Part { key, db } | Expect::Placed { key, db, .. }, Reply::Error(message)) => {
            return Err(TargetError::Refused {
                key: show_key(&key),
                db,
                message,
            })
        }
        (Expect::Part { .. }, _) => {}
        (Expect::Placed { .. }, Reply::Status(_) | Reply::Integer(1)) => stats.loaded += 1,
        (Expect::Placed { key, db, .. }, Reply::Integer(0)) => {
            if conflict == Conflict::Skip {
                stats.skipped += 1;
            } else {
                return Err(TargetError::KeyExists {
                    key: show_key(&key),
                    db,
                });
            }
        }
        (Expect::Placed { key, db, .. }, _) => {
            return Err(TargetError::Refused {
                key: show_key(&key),
                db,
                message: unexpected(),
            })
        }
    }
    Ok(())
}
