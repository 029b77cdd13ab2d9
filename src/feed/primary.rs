//! The primary's side of the replication protocol, for one replica: its
//! handshake answered (AUTH with the one-time password required before a
//! sync), `+FULLRESYNC`, the RDB in the EOF-marked form (no length needed
//! ahead), and the replica's first ACK, which it sends once it has loaded
//! the snapshot.

use super::FeedError;
use crate::crc64::Crc64;
use crate::inputs::{Input, InputError};
use crate::resp::{Conn, RedisError, Reply, TlsServer, Transport};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// A replica that authenticated and asked for a sync.
pub struct Replica {
    pub(super) conn: Conn,
}

/// Handshakes run side by side: one silent connection holds up nobody.
/// A handshake's end: the peer, and the replica, a refusal, or a timeout.
type Shaken = (SocketAddr, Result<Result<Replica, String>, ()>);
type Handshakes = tokio::task::JoinSet<Shaken>;

fn shake(
    set: &mut Handshakes,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    token: &Arc<Zeroizing<String>>,
    tls: Option<&TlsServer>,
) {
    let _ = sock.set_nodelay(true);
    let token = token.clone();
    let tls = tls.cloned();
    set.spawn(async move {
        let r = tokio::time::timeout(HANDSHAKE_FOR, async {
            let io: Box<dyn Transport> = match tls {
                Some(t) => Box::new(
                    t.accept(sock)
                        .await
                        .map_err(|e| format!("its TLS handshake failed: {e}"))?,
                ),
                None => Box::new(sock),
            };
            handshake(io, peer, &token).await
        })
        .await;
        (peer, r.map_err(|_| ()))
    });
}

const HANDSHAKE_FOR: Duration = Duration::from_secs(10);

/// Logs a connection refused by the handshake; the replica, if it was one.
fn judged(done: Result<Shaken, tokio::task::JoinError>) -> Option<Replica> {
    match done {
        Ok((_, Ok(Ok(r)))) => return Some(r),
        Ok((peer, Ok(Err(why)))) => {
            tracing::warn!("a connection to the replication feed from {peer} was refused: {why}")
        }
        Ok((peer, Err(()))) => tracing::warn!(
            "a connection to the replication feed from {peer} did not finish its handshake in time"
        ),
        Err(_) => {}
    }
    None
}

/// Waits until `deadline` for a connection that completes the handshake
/// with `token`; others are refused and logged. None: nobody did.
pub async fn accept(
    listener: &TcpListener,
    token: &Zeroizing<String>,
    tls: Option<&TlsServer>,
    deadline: Instant,
) -> Result<Option<Replica>, FeedError> {
    let token = Arc::new(token.clone());
    let mut shaking = Handshakes::new();
    let until = tokio::time::Instant::from_std(deadline);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return Ok(None),
            a = listener.accept() => match a {
                Ok((sock, peer)) => shake(&mut shaking, sock, peer, &token, tls),
                Err(e) => tracing::warn!("accepting a connection to the replication feed: {e}"),
            },
            Some(done) = shaking.join_next(), if !shaking.is_empty() => {
                if let Some(r) = judged(done) {
                    return Ok(Some(r));
                }
            }
        }
    }
}

/// Equal without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn handshake(
    io: Box<dyn Transport>,
    peer: SocketAddr,
    token: &str,
) -> Result<Replica, String> {
    let mut conn = Conn::new(io, peer.to_string(), Duration::from_secs(10));
    let mut authed = false;
    let mut eof = false;
    loop {
        let reply = conn
            .read_reply("the replica's handshake")
            .await
            .map_err(|e| e.to_string())?;
        let Reply::Array(items) = reply else {
            return Err("it sent something other than a command".into());
        };
        let args: Vec<&[u8]> = items.iter().filter_map(Reply::as_bytes).collect();
        let Some(name) = args.first().map(|n| n.to_ascii_uppercase()) else {
            return Err("it sent an empty command".into());
        };
        let answer: &[u8] = match name.as_slice() {
            b"PING" => b"+PONG\r\n",
            b"AUTH" if args.len() == 2 || args.len() == 3 => {
                if !same(args[args.len() - 1], token.as_bytes()) {
                    let _ = conn
                        .write_raw(b"-WRONGPASS invalid username-password pair\r\n")
                        .await;
                    return Err("wrong password".into());
                }
                authed = true;
                b"+OK\r\n"
            }
            b"REPLCONF" => {
                eof |= args.windows(2).any(|w| {
                    w[0].eq_ignore_ascii_case(b"capa") && w[1].eq_ignore_ascii_case(b"eof")
                });
                b"+OK\r\n"
            }
            b"PSYNC" | b"SYNC" => {
                if !authed {
                    let _ = conn
                        .write_raw(b"-NOAUTH Authentication required.\r\n")
                        .await;
                    return Err("it asked for a sync without the password".into());
                }
                if !eof {
                    let _ = conn
                        .write_raw(b"-ERR the feed sends the EOF-marked RDB form only\r\n")
                        .await;
                    return Err("it does not take the EOF-marked RDB form (capa eof)".into());
                }
                return Ok(Replica { conn });
            }
            _ => b"-ERR unknown command\r\n",
        };
        conn.write_raw(answer).await.map_err(|e| e.to_string())?;
    }
}

impl Replica {
    /// `+FULLRESYNC`, then the input's bytes between two EOF marks; the
    /// last piece goes only after the input ended clean (every chunk
    /// authenticated, the digest equal). Returns the RDB bytes sent.
    pub async fn send_rdb(
        &mut self,
        input: Input,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, FeedError> {
        let replid = hex::encode(rand::random::<[u8; 20]>());
        let mark = hex::encode(rand::random::<[u8; 20]>());
        self.conn
            .write_raw(format!("+FULLRESYNC {replid} 0\r\n$EOF:{mark}\r\n").as_bytes())
            .await?;
        let Input {
            label,
            mut reader,
            pump,
        } = input;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        // The RDB's own CRC64 (over all but its last 8 bytes, which hold it)
        // is checked too: a plain file has no other check, and a target
        // that loads a corrupt RDB from its primary may exit.
        let reading = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, [u8; 8])> {
            let mut crc = Crc64::new();
            let mut tail: Vec<u8> = Vec::with_capacity(8);
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0;
                // Whole pieces: fewer, larger writes.
                while n < buf.len() {
                    let got = reader.read(&mut buf[n..])?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                if n == 0 {
                    let mut trailer = [0u8; 8];
                    if tail.len() == 8 {
                        trailer.copy_from_slice(&tail);
                    }
                    return Ok((crc.value(), trailer));
                }
                buf.truncate(n);
                // Everything but the last 8 bytes seen so far goes into the CRC.
                let mut feed = (tail.len() + n).saturating_sub(8);
                let from_tail = feed.min(tail.len());
                crc.update(&tail[..from_tail]);
                tail.drain(..from_tail);
                feed -= from_tail;
                crc.update(&buf[..feed]);
                tail.extend_from_slice(&buf[feed..]);
                if tx.blocking_send(buf).is_err() {
                    return Ok((0, [0; 8])); // the feed stopped; it says why
                }
            }
        });
        let mut held: Option<Vec<u8>> = None;
        let mut sent = 0u64;
        while let Some(piece) = rx.recv().await {
            if let Some(h) = held.replace(piece) {
                self.conn.write_raw(&h).await?;
                sent += h.len() as u64;
                progress(sent);
            }
        }
        let read = reading.await.map_err(|e| InputError::Read {
            label: label.clone(),
            message: e.to_string(),
        })?;
        if let Some(p) = pump {
            // The fetch/open error is the cause of a read that saw the end.
            p.await.map_err(|e| InputError::Read {
                label: label.clone(),
                message: e.to_string(),
            })??;
        }
        let (crc, trailer) = read.map_err(|e| InputError::Read {
            label: label.clone(),
            message: e.to_string(),
        })?;
        let stored = u64::from_le_bytes(trailer);
        // 0: written with rdbchecksum no.
        if stored != 0 && stored != crc {
            return Err(InputError::Read {
                label,
                message: format!(
                    "the RDB's CRC64 is {crc:016x}, its trailer says {stored:016x}: the RDB is corrupt (nothing of it was loaded)"
                ),
            }
            .into());
        }
        if let Some(h) = held {
            self.conn.write_raw(&h).await?;
            sent += h.len() as u64;
            progress(sent);
        }
        self.conn.write_raw(mark.as_bytes()).await?;
        Ok(sent)
    }

    /// Asks for an ACK (`REPLCONF GETACK *`) and waits until the replica
    /// says it has applied the stream up to `offset` (its ACKs count the
    /// stream's bytes since the sync; it also sends one a second). Returns
    /// the bytes the GETACK added to the stream: the replica's answer to it
    /// does not count them, every later ACK does.
    pub async fn caught_up(&mut self, offset: u64) -> Result<u64, FeedError> {
        const GETACK: &[u8] = b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n";
        self.conn.write_raw(GETACK).await?;
        // A replica that applies sends an ACK at least once a second.
        self.conn.read_timeout = Duration::from_secs(60);
        loop {
            match self.conn.read_reply("the target's ACK of the replayed stream").await {
                Ok(Reply::Array(items))
                    if items.get(1).and_then(Reply::as_bytes).is_some_and(|n| n.eq_ignore_ascii_case(b"ACK")) =>
                {
                    let acked = items
                        .get(2)
                        .and_then(Reply::as_bytes)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(0);
                    if acked >= offset {
                        return Ok(GETACK.len() as u64);
                    }
                }
                Ok(_) => {}
                Err(RedisError::Closed { .. }) | Err(RedisError::Io { .. }) => {
                    return Err(FeedError::Failed(format!(
                        "the target closed the feed while applying the replayed commands (stream offset {offset} sent): its log says why"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the replica's first ACK: it has loaded the snapshot. A
    /// replica that closes the link, or connects again (with the password),
    /// could not; other connections are refused and logged.
    pub async fn loaded(
        &mut self,
        listener: &TcpListener,
        token: &Zeroizing<String>,
        tls: Option<&TlsServer>,
    ) -> Result<(), FeedError> {
        let could_not = |how: &str| {
            FeedError::Failed(format!(
                "the target {how} instead of loading the snapshot: it could not load it (its log says why)"
            ))
        };
        let token = Arc::new(token.clone());
        let mut shaking = Handshakes::new();
        // Loading takes as long as the data set needs; the link stays quiet.
        self.conn.read_timeout = Duration::from_secs(24 * 3600);
        let ack = self
            .conn
            .read_reply("the target's ACK after loading the snapshot");
        tokio::pin!(ack);
        loop {
            tokio::select! {
                r = &mut ack => return match r {
                    Ok(Reply::Array(items))
                        if items.first().and_then(Reply::as_bytes).is_some_and(|n| n.eq_ignore_ascii_case(b"REPLCONF"))
                            && items.get(1).and_then(Reply::as_bytes).is_some_and(|n| n.eq_ignore_ascii_case(b"ACK")) =>
                    {
                        Ok(())
                    }
                    Ok(other) => Err(FeedError::Failed(format!(
                        "the target sent {other:?} where its ACK after loading was due"
                    ))),
                    Err(RedisError::Closed { .. }) | Err(RedisError::Io { .. }) => {
                        Err(could_not("closed the feed"))
                    }
                    Err(e) => Err(e.into()),
                },
                a = listener.accept() => match a {
                    Ok((sock, peer)) => shake(&mut shaking, sock, peer, &token, tls),
                    Err(e) => tracing::warn!("accepting a connection to the replication feed: {e}"),
                },
                Some(done) = shaking.join_next(), if !shaking.is_empty() => {
                    if judged(done).is_some() {
                        return Err(could_not("connected to the feed again"));
                    }
                }
            }
        }
    }
}
