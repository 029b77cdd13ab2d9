//! The replication feed: redvault acts as the target's primary. The target is
//! told `REPLICAOF` this process, which answers its handshake with a full
//! sync and serves the opened RDB, so the target loads it at its own native
//! speed (one RESTORE per key costs every key a parse, a CRC and a reply on
//! the one Redis core); then `REPLICAOF NO ONE` makes it a primary again.
//!
//! Three steps, so a caller can fall back to the RESTORE loader while
//! nothing has changed: [`prepare`] (checks only: empty, a primary, not a
//! cluster node, reads the RDB version, may run REPLICAOF and CONFIG),
//! [`Prepared::attach`] (REPLICAOF, and the target's connection back, within
//! a few seconds), [`Attached::serve`] (the bytes, the load, the release).
//!
//! Only the target may have the bytes: for the feed's duration its
//! `masterauth` is a fresh random password, and a connection that does not
//! AUTH with it gets nothing. Whatever ends the feed after `REPLICAOF` (an
//! error, a timeout, Ctrl-C or SIGTERM), the target is told `REPLICAOF NO
//! ONE` and its settings are put back; if even that fails, the error says
//! the target may still replicate from the feed's address.

mod primary;

use crate::command::Command;
use crate::inputs::{Input, InputError};
use crate::rdb::Entry;
use crate::resp::{Conn, ConnectOptions, RedisError, RedisUrl, Reply};
use crate::target::{LoadStats, Target, TargetError};
use primary::Replica;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The target cannot take a feed; nothing on it has changed.
    #[error("{0}")]
    Unfit(String),
    /// The target did not connect back; it is a primary again.
    #[error("the target did not connect back to {addr} within {secs} s (a firewall, or an address it cannot reach: --feed-listen)")]
    NoConnectBack { addr: String, secs: u64 },
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("cannot listen on {addr} for the replication feed: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// The feed failed after REPLICAOF; the target is a primary again.
    #[error("{0}")]
    Failed(String),
    #[error("interrupted: the feed stopped and the target was made a primary again")]
    Interrupted,
    /// The target could not be released: it may still replicate from the feed.
    #[error("{cause}; and the target could not be made a primary again ({release}): it may still replicate from {feed}: run REPLICAOF NO ONE on it")]
    NotReleased {
        cause: String,
        release: String,
        feed: String,
    },
}

/// Where the feed listens and how long the target has to connect back.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// `--feed-listen`: default an ephemeral port on the address this host
    /// uses to reach the target.
    pub listen: Option<String>,
    pub connect_back: Duration,
    /// `--feed-tls-cert`/`--feed-tls-key`: for a target reached over TLS or
    /// replicating over TLS only; the feed then serves TLS.
    pub tls: Option<crate::resp::TlsServer>,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            listen: None,
            connect_back: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// What the target holds after a feed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FeedStats {
    /// RDB bytes served.
    pub bytes: u64,
    /// Keys per database of the snapshot, from the target's INFO keyspace
    /// once it loaded it (before any command followed).
    pub keys_per_db: Vec<(u64, u64)>,
    /// Function libraries on the target after the load (None: it cannot say).
    pub functions: Option<u64>,
    pub transfer_seconds: f64,
    pub load_seconds: f64,
    /// Keys a filter left out of the snapshot served.
    pub filtered: u64,
}

impl FeedStats {
    pub fn keys(&self) -> u64 {
        self.keys_per_db.iter().map(|(_, n)| n).sum()
    }
}

/// The RDB version of an input, read from its first nine bytes (`REDIS0011`);
/// the input is given back whole.
pub async fn peek_version(input: Input) -> Result<(u32, Input), InputError> {
    let Input {
        label,
        mut reader,
        pump,
    } = input;
    let read_label = label.clone();
    let peeked = tokio::task::spawn_blocking(move || {
        let mut head = [0u8; 9];
        reader.read_exact(&mut head).map(|_| (head, reader))
    })
    .await
    .map_err(|e| InputError::Read {
        label: label.clone(),
        message: e.to_string(),
    })?;
    let (head, reader) = match peeked {
        Ok(p) => p,
        Err(e) => {
            // The fetch/open error is the cause of a read that saw the end.
            if let Some(p) = pump {
                if let Ok(Err(cause)) = p.await {
                    return Err(cause);
                }
            }
            return Err(InputError::Read {
                label: read_label,
                message: format!("reading the RDB header: {e}"),
            });
        }
    };
    let version = std::str::from_utf8(&head[5..])
        .ok()
        .filter(|_| &head[..5] == b"REDIS")
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| InputError::Read {
            label: label.clone(),
            message: "not an RDB file (no REDIS header)".into(),
        })?;
    let reader: Box<dyn std::io::Read + Send> =
        Box::new(std::io::Cursor::new(head.to_vec()).chain(reader));
    Ok((
        version,
        Input {
            label,
            reader,
            pump,
        },
    ))
}

use std::io::Read as _;

/// `input` with only the entries `filter` accepts: re-emitted as an RDB of
/// its own version (a new CRC64) on a blocking thread, streamed, never on
/// disk. The original's fetch or open error is the cause of a stream that
/// ends early.
pub fn filtered(
    input: Input,
    filter: crate::target::Filter,
    left_out: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Input {
    let Input {
        label,
        reader,
        pump,
    } = input;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let rewriting = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let done = crate::rdb::rewrite_selected(
            &mut reader,
            crate::rdb::MAX_RDB_VERSION,
            1 << 20,
            |e| filter.accepts(e),
            |piece| tx.blocking_send(bytes::Bytes::from(piece)).is_ok(),
        )?;
        // Read to the end: the original's digest is checked only there, and
        // bytes after the RDB's end are not a snapshot's.
        let after = std::io::copy(&mut reader, &mut std::io::sink())
            .map_err(|e| crate::rdb::RewriteError::Rdb(crate::rdb::RdbError::Io(e.to_string())))?;
        if after > 0 {
            return Err(crate::rdb::RewriteError::Rdb(crate::rdb::RdbError::Io(
                format!("{after} bytes follow the RDB's end"),
            )));
        }
        Ok(done)
    });
    let pump_label = label.clone();
    let pump = tokio::spawn(async move {
        let rewritten = rewriting.await.map_err(|e| InputError::Read {
            label: pump_label.clone(),
            message: e.to_string(),
        })?;
        if let Some(p) = pump {
            p.await.map_err(|e| InputError::Read {
                label: pump_label.clone(),
                message: e.to_string(),
            })??;
        }
        let done = rewritten.map_err(|e| InputError::Read {
            label: pump_label,
            message: format!("filtering the snapshot: {e}"),
        })?;
        left_out.store(done.left_out, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    Input {
        label,
        reader: Box::new(crate::rdb::ChannelReader::new(rx)),
        pump: Some(pump),
    }
}

/// The target's settings the feed changes, as they were.
struct Saved {
    masterauth: Zeroizing<String>,
    masteruser: String,
    /// `repl-diskless-load` as it was, when the feed changes it.
    diskless_load: Option<String>,
    /// `tls-replication` as it was, when the feed turns it on.
    tls_replication: Option<String>,
}

/// A target checked fit for a feed; nothing on it has changed yet.
pub struct Prepared {
    ctl: Conn,
    url: RedisUrl,
    link: ConnectOptions,
    saved: Saved,
    label: String,
    /// The feed serves TLS: the target is reached over TLS (its data never
    /// crosses in plaintext on the way back), or replicates over TLS only.
    tls: bool,
}

fn info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

async fn info(ctl: &mut Conn, section: &str) -> Result<Option<String>, RedisError> {
    Ok(match ctl.command(&[b"INFO", section.as_bytes()]).await? {
        Reply::Bulk(Some(t)) => Some(String::from_utf8_lossy(&t).into_owned()),
        _ => None,
    })
}

/// `db0:keys=3,expires=0,avg_ttl=0` lines (INFO keyspace) into (db, keys).
pub fn keyspace(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (db, rest) = l.strip_prefix("db")?.split_once(':')?;
            let keys = rest.split(',').find_map(|kv| kv.strip_prefix("keys="))?;
            Some((db.parse().ok()?, keys.trim().parse().ok()?))
        })
        .collect()
}

/// Checks that the target at `url` can take a feed of an RDB of
/// `rdb_version`: `FeedError::Unfit` says why not (nothing changed).
pub async fn prepare(
    url: &RedisUrl,
    link: &ConnectOptions,
    rdb_version: u32,
    feed_tls: bool,
) -> Result<Prepared, FeedError> {
    let unfit = |why: String| Err(FeedError::Unfit(why));
    let mut ctl = crate::resp::connect(url, link).await?;
    let Some(server) = info(&mut ctl, "server").await? else {
        return unfit("the target refuses INFO, so nothing can tell its version".into());
    };
    let version = crate::resp::ServerVersion::from_info(&server)
        .ok_or_else(|| FeedError::Unfit("INFO names no redis_version".into()))?;
    let reads = crate::rdb::max_rdb_for(&version.redis);
    if rdb_version > reads {
        return unfit(format!(
            "the snapshot is RDB version {rdb_version} and {} reads up to RDB {reads}: the RESTORE loader converts it",
            version.label
        ));
    }
    if crate::resp::is_cluster_node(&mut ctl).await {
        return unfit("the target is a Redis Cluster node (keys go by slot)".into());
    }
    // A target reached over TLS gets its data back over TLS too.
    let tls_replication = crate::resp::config_get(&mut ctl, "tls-replication").await;
    let replicates_tls = tls_replication.as_deref() == Some("yes");
    let tls = url.tls || replicates_tls;
    if tls && !feed_tls {
        let why = if url.tls {
            "the target is reached over TLS"
        } else {
            "the target replicates over TLS only (tls-replication yes)"
        };
        return unfit(format!(
            "{why}: the feed serves TLS with --feed-tls-cert and --feed-tls-key (a certificate the target's tls-ca-cert-file trusts)"
        ));
    }
    if tls && tls_replication.is_none() {
        return unfit("the target has no tls-replication setting (built without TLS, or the user may not CONFIG GET it)".into());
    }
    let repl = info(&mut ctl, "replication").await?.unwrap_or_default();
    if info_field(&repl, "role") != Some("master") {
        return unfit(format!(
            "the target is a replica (of {}:{})",
            info_field(&repl, "master_host").unwrap_or("?"),
            info_field(&repl, "master_port").unwrap_or("?")
        ));
    }
    let space = keyspace(&info(&mut ctl, "keyspace").await?.unwrap_or_default());
    if !space.is_empty() {
        let held: Vec<String> = space.iter().map(|(d, n)| format!("db{d} {n}")).collect();
        return unfit(format!(
            "the target holds keys ({}): a full sync would replace them all (--flush empties it first)",
            held.join(", ")
        ));
    }
    // A primary answers REPLICAOF NO ONE with +OK and changes nothing: the
    // permission (and a renamed command) is told before anything changes.
    match ctl.command(&[b"REPLICAOF", b"NO", b"ONE"]).await? {
        Reply::Status(_) => {}
        Reply::Error(m) if m.starts_with("NOPERM") => {
            return unfit(format!(
                "the user may not run REPLICAOF ({m}); `redvault acl print --role feed` prints one that may"
            ))
        }
        Reply::Error(m) => {
            return unfit(format!("the target refuses REPLICAOF ({m}): renamed or disabled"))
        }
        other => return unfit(format!("the target answered REPLICAOF with {other:?}")),
    }
    // A replica loads past maxmemory (and may evict once a primary again);
    // the RESTORE loader stops at the first key refused.
    if let Some(max) = crate::resp::config_get(&mut ctl, "maxmemory").await {
        if max.trim() != "0" {
            return unfit(format!(
                "the target has maxmemory {max}: a replica loads past it, while RESTORE stops at the first key refused"
            ));
        }
    }
    let (Some(masterauth), Some(masteruser)) = (
        crate::resp::config_get(&mut ctl, "masterauth").await,
        crate::resp::config_get(&mut ctl, "masteruser").await,
    ) else {
        return unfit(
            "the user may not run CONFIG GET masterauth (the feed sets a one-time password there); `redvault acl print --role feed` prints one that may".into(),
        );
    };
    // The target loads while the bytes arrive (not after a copy on its
    // disk): an empty target has nothing to lose on a failure.
    let diskless_load = crate::resp::config_get(&mut ctl, "repl-diskless-load")
        .await
        .filter(|v| v == "disabled");
    Ok(Prepared {
        ctl,
        label: version.label,
        url: url.clone(),
        link: link.clone(),
        saved: Saved {
            masterauth: Zeroizing::new(masterauth),
            masteruser,
            diskless_load,
            tls_replication: tls_replication.filter(|v| tls && v != "yes"),
        },
        tls,
    })
}

/// The address this host uses to reach `url` (no packet is sent: a UDP
/// socket's connect only picks the route).
async fn local_addr_towards(url: &RedisUrl) -> Result<std::net::IpAddr, FeedError> {
    let listen_err = |source| FeedError::Listen {
        addr: url.addr(),
        source,
    };
    let peer = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(listen_err)?
        .next()
        .ok_or_else(|| {
            listen_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the target's name resolves to no address",
            ))
        })?;
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let udp = tokio::net::UdpSocket::bind(any).await.map_err(listen_err)?;
    udp.connect(peer).await.map_err(listen_err)?;
    Ok(udp.local_addr().map_err(listen_err)?.ip())
}

/// Ctrl-C, SIGTERM and SIGHUP, listened for from before the first change
/// on the target until it is released: none of them can end the process
/// between two steps, and one that arrives between two waits is kept.
struct Stop {
    streams: Vec<tokio::signal::unix::Signal>,
}

impl Stop {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .filter_map(|k| signal(k).ok())
        .collect();
        Stop { streams }
    }

    async fn asked(&mut self) {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.streams.iter_mut().map(|s| Box::pin(s.recv()));
        futures::future::select_all(waits).await;
    }
}

/// Resolves when the user asks the process to stop (Ctrl-C, SIGTERM). Once
/// listened for, these signals no longer end the process by themselves.
pub async fn interrupted() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Prepared {
    /// The target's name and version, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Listens, sets the one-time password, sends REPLICAOF, and waits for
    /// the target to connect back and ask for a sync. On any failure the
    /// target is released first.
    pub async fn attach(self, opts: &FeedOptions) -> Result<Attached, FeedError> {
        let tls = match (self.tls, &opts.tls) {
            (true, Some(t)) => Some(t.clone()),
            (true, None) => {
                return Err(FeedError::Unfit(
                    "the target needs a TLS feed: --feed-tls-cert and --feed-tls-key".into(),
                ))
            }
            (false, _) => None,
        };
        let listen = match &opts.listen {
            Some(a) => a.clone(),
            None => SocketAddr::new(local_addr_towards(&self.url).await?, 0).to_string(),
        };
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| FeedError::Listen {
                addr: listen.clone(),
                source,
            })?;
        let feed_addr = listener.local_addr().map_err(|source| FeedError::Listen {
            addr: listen.clone(),
            source,
        })?;
        let token = Zeroizing::new(hex::encode(rand::random::<[u8; 24]>()));
        let mut stop = Stop::new();
        let mut ctl = Released::new(self, feed_addr);
        let r = async {
            ctl.set_auth(&token).await?;
            if ctl.prepared.saved.tls_replication.is_some() {
                if let Err(e) = ctl.config_set("tls-replication", "yes").await {
                    // Nothing to put back.
                    ctl.prepared.saved.tls_replication = None;
                    return Err(e);
                }
            }
            if ctl.prepared.saved.diskless_load.is_some()
                && ctl.config_set("repl-diskless-load", "on-empty-db").await.is_err()
            {
                // Loading from a copy on the target's disk works too.
                ctl.prepared.saved.diskless_load = None;
            }
            let host = feed_addr.ip().to_string();
            let port = feed_addr.port().to_string();
            match ctl
                .conn()
                .command(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()])
                .await?
            {
                Reply::Status(_) => {}
                other => {
                    return Err(FeedError::Failed(format!(
                        "the target refused REPLICAOF {host} {port}: {other:?}"
                    )))
                }
            }
            let deadline = Instant::now() + opts.connect_back;
            tokio::select! {
                r = primary::accept(&listener, &token, tls.as_ref(), deadline) => r?.ok_or(FeedError::NoConnectBack {
                    addr: feed_addr.to_string(),
                    secs: opts.connect_back.as_secs().max(1),
                }),
                _ = stop.asked() => Err(FeedError::Interrupted),
            }
        }
        .await;
        match r {
            Ok(replica) => Ok(Attached {
                ctl,
                replica,
                listener,
                token,
                tls,
                stop,
            }),
            Err(e) => Err(ctl.release_after(e).await),
        }
    }
}

/// The control connection, and what putting the target back takes.
struct Released {
    prepared: Prepared,
    feed: SocketAddr,
}

impl Released {
    fn new(prepared: Prepared, feed: SocketAddr) -> Self {
        Released { prepared, feed }
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.prepared.ctl
    }

    async fn config_set(&mut self, name: &str, value: &str) -> Result<(), FeedError> {
        match self
            .conn()
            .command(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()])
            .await?
        {
            Reply::Status(_) => Ok(()),
            Reply::Error(m) => Err(FeedError::Failed(format!(
                "the target refused CONFIG SET {name}: {m}; `redvault acl print --role feed` prints a user that may"
            ))),
            other => Err(FeedError::Failed(format!(
                "the target answered CONFIG SET {name} with {other:?}"
            ))),
        }
    }

    async fn set_auth(&mut self, token: &str) -> Result<(), FeedError> {
        if !self.prepared.saved.masteruser.is_empty() {
            self.config_set("masteruser", "").await?;
        }
        self.config_set("masterauth", token).await
    }

    /// REPLICAOF NO ONE and the settings as they were. A target still
    /// loading answers -LOADING until it is done, and a lost control
    /// connection is made again: both are retried for up to RELEASE_FOR.
    async fn release(&mut self) -> Result<(), FeedError> {
        const RELEASE_FOR: Duration = Duration::from_secs(30 * 60);
        let deadline = Instant::now() + RELEASE_FOR;
        let mut last = None;
        let mut reconnect = false;
        let mut refused = 0;
        let mut pause = Duration::from_millis(100);
        // A target that stays unreachable is given up on sooner.
        while Instant::now() < deadline && refused < 10 {
            if last.is_some() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            if reconnect {
                match crate::resp::connect(&self.prepared.url, &self.prepared.link).await {
                    Ok(c) => {
                        self.prepared.ctl = c;
                        reconnect = false;
                        refused = 0;
                    }
                    Err(e) => {
                        refused += 1;
                        last = Some(FeedError::Redis(e));
                        continue;
                    }
                }
            }
            let r = async {
                match self.conn().command(&[b"REPLICAOF", b"NO", b"ONE"]).await? {
                    Reply::Status(_) => {}
                    other => {
                        return Err(FeedError::Failed(format!(
                            "REPLICAOF NO ONE answered {other:?}"
                        )))
                    }
                }
                // Every setting is put back even if one fails (the
                // one-time password above all); the first failure is told.
                let mut first: Option<FeedError> = None;
                // (Zeroizing: the first is the target's own masterauth.)
                let mut settings: Vec<(&str, Zeroizing<String>)> =
                    vec![("masterauth", self.prepared.saved.masterauth.clone())];
                let user = self.prepared.saved.masteruser.clone();
                if !user.is_empty() {
                    settings.push(("masteruser", Zeroizing::new(user)));
                }
                if let Some(v) = self.prepared.saved.diskless_load.clone() {
                    settings.push(("repl-diskless-load", Zeroizing::new(v)));
                }
                if let Some(v) = self.prepared.saved.tls_replication.clone() {
                    settings.push(("tls-replication", Zeroizing::new(v)));
                }
                for (name, value) in settings {
                    if let Err(e) = self.config_set(name, &value).await {
                        // A broken link fails them all: retried whole.
                        if matches!(e, FeedError::Redis(_)) {
                            return Err(e);
                        }
                        first.get_or_insert(e);
                    }
                }
                first.map_or(Ok(()), Err)
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(FeedError::Redis(e)) => {
                    // The link broke (or timed out while the target loads).
                    reconnect = true;
                    last = Some(FeedError::Redis(e));
                }
                Err(FeedError::Failed(m)) if m.contains("LOADING") => {
                    last = Some(FeedError::Failed(m));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| FeedError::Failed("no attempt made".into())))
    }

    /// Releases the target after `cause` ended the feed: `cause` itself if
    /// that worked, else both.
    async fn release_after(&mut self, cause: FeedError) -> FeedError {
        match self.release().await {
            Ok(()) => cause,
            Err(e) => FeedError::NotReleased {
                cause: crate::text::one_line(&cause),
                release: crate::text::one_line(&e),
                feed: self.feed.to_string(),
            },
        }
    }
}

/// A target that connected back and asked for a full sync.
pub struct Attached {
    ctl: Released,
    replica: Replica,
    listener: tokio::net::TcpListener,
    token: Zeroizing<String>,
    tls: Option<crate::resp::TlsServer>,
    stop: Stop,
}

impl Attached {
    /// Serves `input` to the target, waits until it has loaded it, and makes
    /// it a primary again.
    pub async fn serve(
        self,
        input: Input,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<FeedStats, FeedError> {
        self.load(input, progress).await?.release().await
    }

    /// Serves `input` to the target and waits until it has loaded it; the
    /// target stays the feed's replica, for commands ([`Feeding`] is a
    /// `Target` that replays into the replication stream) until
    /// [`Feeding::release`]. The input's end is held back until it is
    /// checked whole (authenticated, its digest equal to the manifest's, its
    /// own CRC64 right), so a backup that fails its checks never completes
    /// a transfer: the target drops what it received.
    pub async fn load(
        self,
        input: Input,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Feeding, FeedError> {
        let started = Instant::now();
        let Attached {
            mut ctl,
            mut replica,
            listener,
            token,
            tls,
            mut stop,
        } = self;
        let r = async {
            let mut stats = FeedStats::default();
            tokio::select! {
                r = replica.send_rdb(input, progress) => stats.bytes = r?,
                _ = stop.asked() => return Err(FeedError::Interrupted),
            }
            stats.transfer_seconds = started.elapsed().as_secs_f64();
            let loading = Instant::now();
            tokio::select! {
                r = replica.loaded(&listener, &token, tls.as_ref()) => r?,
                _ = stop.asked() => return Err(FeedError::Interrupted),
            }
            stats.load_seconds = loading.elapsed().as_secs_f64();
            // What the snapshot held (a replica answers INFO and FUNCTION
            // LIST), before any command follows; best effort.
            let c = ctl.conn();
            stats.keys_per_db =
                keyspace(&info(c, "keyspace").await.ok().flatten().unwrap_or_default());
            stats.functions = match c.command(&[b"FUNCTION", b"LIST"]).await {
                Ok(Reply::Array(libs)) => Some(libs.len() as u64),
                _ => None,
            };
            Ok(stats)
        }
        .await;
        drop(listener);
        match r {
            Ok(stats) => Ok(Feeding {
                ctl,
                replica,
                stop,
                stats,
                buf: Vec::with_capacity(STREAM_BATCH + (64 << 10)),
                sent: 0,
                load: LoadStats::default(),
            }),
            Err(e) => {
                // The feed's link closes first: a target loading from it stops
                // waiting for bytes (and drops a half load) before it is released.
                drop(replica);
                Err(ctl.release_after(e).await)
            }
        }
    }
}

/// Commands are written to the stream in batches of about this many bytes.
const STREAM_BATCH: usize = 1 << 20;

/// A target that loaded the base from the feed and is still its replica:
/// replayed commands go down the replication stream (applied by the target
/// as a replica applies its primary's writes: no reply per command).
/// [`Feeding::release`] must end it, whatever happened.
pub struct Feeding {
    ctl: Released,
    replica: Replica,
    stop: Stop,
    stats: FeedStats,
    buf: Vec<u8>,
    /// Stream bytes sent since the sync: the offset the target's ACKs count.
    sent: u64,
    load: LoadStats,
}

impl Feeding {
    async fn flush(&mut self) -> Result<(), FeedError> {
        if !self.buf.is_empty() {
            self.replica.conn.write_raw(&self.buf).await?;
            self.sent += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Counts keys a filter left out of the snapshot served.
    pub fn set_filtered(&mut self, n: u64) {
        self.stats.filtered = n;
    }

    /// Everything sent is applied by the target.
    async fn caught_up(&mut self) -> Result<(), FeedError> {
        self.flush().await?;
        if self.sent > 0 {
            let to = self.sent;
            tokio::select! {
                r = self.replica.caught_up(to) => self.sent += r?,
                _ = self.stop.asked() => return Err(FeedError::Interrupted),
            }
        }
        Ok(())
    }

    /// Waits until the target has applied every command sent, then makes it
    /// a primary again with its settings as before; the target's counts.
    pub async fn release(mut self) -> Result<FeedStats, FeedError> {
        let applied = self.caught_up().await;
        let Feeding {
            mut ctl,
            replica,
            stats,
            ..
        } = self;
        // The feed's link closes first: a target still reading from it
        // stops waiting for bytes before it is released.
        drop(replica);
        if let Err(e) = applied {
            return Err(ctl.release_after(e).await);
        }
        ctl.release().await.map_err(|e| FeedError::NotReleased {
            cause: "the target loaded the snapshot".into(),
            release: crate::text::one_line(&e),
            feed: ctl.feed.to_string(),
        })?;
        Ok(stats)
    }
}

fn feed_error(e: FeedError) -> TargetError {
    TargetError::Feed(crate::text::one_line(&e))
}

/// Only commands: the base came as the RDB.
#[async_trait::async_trait]
impl Target for Feeding {
    /// The target acknowledged (REPLCONF ACK) every command sent.
    async fn barrier(&mut self) -> Result<(), TargetError> {
        self.caught_up().await.map_err(feed_error)
    }

    async fn delete_slots(
        &mut self,
        _slots: &[[u16; 2]],
        _all_dbs: bool,
        offset: u64,
    ) -> Result<u64, TargetError> {
        // The feed serves one RDB stream, never a cluster generation's shards.
        Err(TargetError::Feed(format!(
            "the flush at offset {offset} empties one cluster shard's slots, which the feed cannot do: restore with --via restore"
        )))
    }

    fn begin(&mut self, _rdb_version: u32) -> Result<(), TargetError> {
        Err(TargetError::Feed(
            "the feed's target takes commands only (its snapshot came as the RDB)".into(),
        ))
    }

    async fn push(&mut self, _e: Entry) -> Result<(), TargetError> {
        Err(TargetError::Feed(
            "the feed's target takes commands only (its snapshot came as the RDB)".into(),
        ))
    }

    async fn push_function(&mut self, _code: Vec<u8>) -> Result<(), TargetError> {
        Err(TargetError::Feed(
            "the feed's target takes commands only (its snapshot came as the RDB)".into(),
        ))
    }

    async fn apply(&mut self, cmd: &Command) -> Result<(), TargetError> {
        crate::resp::encode_into(&mut self.buf, &cmd.args);
        self.load.commands += 1;
        if self.buf.len() >= STREAM_BATCH {
            self.flush().await.map_err(feed_error)?;
            // Ctrl-C or SIGTERM between batches stops the replay (the
            // caller releases the target).
            if futures::FutureExt::now_or_never(self.stop.asked()).is_some() {
                return Err(feed_error(FeedError::Interrupted));
            }
        }
        Ok(())
    }

    fn stats(&self) -> &LoadStats {
        &self.load
    }

    async fn finish(&mut self) -> Result<LoadStats, TargetError> {
        self.caught_up().await.map_err(feed_error)?;
        Ok(self.load.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines_are_read() {
        let t =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5\r\ndb12:keys=40,expires=0,avg_ttl=0\r\n";
        assert_eq!(keyspace(t), vec![(0, 3), (12, 40)]);
        assert!(keyspace("# Keyspace\r\n").is_empty());
        assert_eq!(
            info_field("role:master\r\nconnected_slaves:0", "role"),
            Some("master")
        );
    }
}
