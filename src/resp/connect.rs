//! Connecting to Redis: one set of options for every link (timeouts, fetched
//! credentials), AUTH, and the few server facts callers ask for.

use super::{Conn, RedisError, RedisUrl, Reply};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// How every Redis link connects: export, daemon, import, restore and replay
/// all take these, built once from flags and config.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// How long to wait for any byte before giving up (keepalives count).
    pub read_timeout: Duration,
    /// AUTH with fetched credentials (Entra ID) instead of the URL's password.
    pub auth: Option<Arc<dyn RedisAuth>>,
    /// The TLS client for `rediss://` links (None: the system's roots).
    pub tls: Option<Arc<super::TlsClient>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            auth: None,
            tls: None,
        }
    }
}

/// A user name and a short-lived password (a token) for AUTH.
pub struct RedisCredentials {
    pub user: String,
    pub password: Zeroizing<String>,
    /// Unix seconds after which the password no longer works, if it expires.
    pub expires_on: Option<i64>,
}

/// Why credentials could not be had (the message names the identity).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// Credentials that are fetched per connection (Entra ID tokens) rather than
/// written in the URL. Implementations cache and refresh; callers ask again
/// before `expires_on`.
#[async_trait]
pub trait RedisAuth: Send + Sync + std::fmt::Debug {
    async fn credentials(&self) -> Result<RedisCredentials, CredentialError>;
}

/// Sends AUTH with credentials from `auth`; used at connect and again before a
/// token expires on a long-lived connection.
pub async fn authenticate(
    conn: &mut Conn,
    addr: &str,
    auth: &dyn RedisAuth,
) -> Result<RedisCredentials, RedisError> {
    let creds = auth.credentials().await.map_err(|e| RedisError::Auth {
        addr: addr.to_string(),
        user: None,
        message: e.0,
    })?;
    let reply = conn
        .command(&[b"AUTH", creds.user.as_bytes(), creds.password.as_bytes()])
        .await?;
    if let Reply::Error(message) = reply {
        return Err(RedisError::Auth {
            addr: addr.to_string(),
            user: Some(creds.user.clone()),
            message,
        });
    }
    Ok(creds)
}

/// Connects and authenticates (fetched credentials, else the URL's password or
/// ACL user and password).
pub async fn connect(url: &RedisUrl, opts: &ConnectOptions) -> Result<Conn, RedisError> {
    let addr = url.addr();
    let tcp = tokio::time::timeout(
        opts.connect_timeout,
        tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| RedisError::Connect {
        addr: addr.clone(),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
    })?
    .map_err(|source| RedisError::Connect {
        addr: addr.clone(),
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn super::Transport> = if url.tls {
        let client = match &opts.tls {
            Some(c) => c.clone(),
            None => super::TlsClient::system().map_err(|e| RedisError::Tls {
                addr: addr.clone(),
                message: e.to_string(),
            })?,
        };
        let stream = tokio::time::timeout(opts.connect_timeout, client.handshake(tcp, &url.host))
            .await
            .map_err(|_| RedisError::Tls {
                addr: addr.clone(),
                message: "no answer to the TLS handshake: a plain (non-TLS) port? use redis://"
                    .into(),
            })?
            .map_err(|e| RedisError::Tls {
                addr: addr.clone(),
                message: tls_hint(&e),
            })?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut conn = Conn::new(io, addr.clone(), opts.read_timeout);
    // One PING first, so a link of the wrong kind fails here, saying so: a
    // TLS port closes a plain connection; a server wanting a client
    // certificate says it only after the handshake (TLS 1.3).
    if !url.tls && opts.tls.is_some() {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("TLS options are set, but {url:?} is redis://: that link is not encrypted (rediss:// is)");
        }
    }
    match conn.command(&[b"PING"]).await {
        // NOAUTH and NOPERM are for the AUTH that follows to settle; any
        // other refusal (too many clients, protected mode) is the answer.
        Ok(Reply::Error(message))
            if !message.starts_with("NOAUTH") && !message.starts_with("NOPERM") =>
        {
            return Err(RedisError::Refused {
                addr,
                command: "PING".into(),
                message,
            })
        }
        Ok(_) => {}
        // The cause as seen, with what it most likely means.
        Err(RedisError::Closed { .. }) if !url.tls => {
            return Err(RedisError::Closed {
                addr,
                during: "the reply to the first PING (a TLS port? use rediss://)".into(),
            })
        }
        Err(RedisError::Io { source, .. }) if !url.tls => {
            return Err(RedisError::Io {
                addr,
                source: std::io::Error::new(
                    source.kind(),
                    format!("{source} (a TLS port? use rediss://)"),
                ),
            })
        }
        Err(RedisError::Io { source, .. })
            if source.to_string().contains("CertificateRequired") =>
        {
            return Err(RedisError::Tls {
                addr,
                message: "the server requires a client certificate: pass --tls-cert and --tls-key"
                    .into(),
            })
        }
        Err(e) => return Err(e),
    }
    if let Some(auth) = &opts.auth {
        authenticate(&mut conn, &addr, auth.as_ref()).await?;
    } else if let Some(pass) = &url.password {
        let reply = match &url.user {
            Some(u) => {
                conn.command(&[b"AUTH", u.as_bytes(), pass.as_bytes()])
                    .await?
            }
            None => conn.command(&[b"AUTH", pass.as_bytes()]).await?,
        };
        if let Reply::Error(message) = reply {
            return Err(RedisError::Auth {
                addr: url.addr(),
                user: url.user.clone(),
                message,
            });
        }
    }
    Ok(conn)
}

/// A handshake error, with what it most likely means.
fn tls_hint(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("InvalidContentType")
        || text.contains("corrupt message")
        || e.kind() == std::io::ErrorKind::UnexpectedEof
    {
        format!("{text}: the server does not speak TLS there (a plain port? use redis://)")
    } else if text.contains("ProtocolVersion") || text.contains("PeerIncompatible") {
        // Redis's `tls-protocols` allows only versions below 1.2 there.
        format!("{text}: the server offers no TLS version redvault accepts; TLS 1.2 or newer is required (the server's tls-protocols)")
    } else {
        text
    }
}

/// What a server says it is: its Redis-compatible version (Valkey reports
/// one too), which decides the RDB versions it reads, and its own name and
/// version, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub redis: String,
    /// `Redis 7.0.15`, `Valkey 8.1.8`.
    pub label: String,
}

impl ServerVersion {
    /// From the text of `INFO server`.
    pub fn from_info(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let redis = field("redis_version:")?;
        let label = match field("valkey_version:") {
            Some(v) => format!("Valkey {v}"),
            None => format!("Redis {redis}"),
        };
        Some(ServerVersion { redis, label })
    }
}

/// The server's version from INFO; None if the user may not run INFO.
pub async fn server_version(conn: &mut Conn) -> Option<ServerVersion> {
    match conn.command(&[b"INFO", b"server"]).await.ok()? {
        Reply::Bulk(Some(text)) => ServerVersion::from_info(&String::from_utf8_lossy(&text)),
        _ => None,
    }
}

/// The server's Redis-compatible version from INFO.
pub async fn redis_version(conn: &mut Conn) -> Option<String> {
    server_version(conn).await.map(|v| v.redis)
}

/// Whether the server is a Redis Cluster node: INFO `cluster_enabled:1`,
/// else (INFO refused) whether `CLUSTER MYID` answers; None when the user
/// may run neither, so nobody can tell.
pub async fn cluster_mode(conn: &mut Conn) -> Option<bool> {
    if let Ok(Reply::Bulk(Some(text))) = conn.command(&[b"INFO", b"cluster"]).await {
        return Some(
            String::from_utf8_lossy(&text)
                .lines()
                .any(|l| l.trim() == "cluster_enabled:1"),
        );
    }
    match conn.command(&[b"CLUSTER", b"MYID"]).await {
        Ok(Reply::Bulk(Some(_))) => Some(true),
        Ok(Reply::Error(m)) if m.starts_with("NOPERM") || m.contains("no permissions") => None,
        // "cluster support disabled", or no CLUSTER command at all.
        _ => Some(false),
    }
}

/// Whether the server is a Redis Cluster node (false when it cannot be told).
pub async fn is_cluster_node(conn: &mut Conn) -> bool {
    cluster_mode(conn).await.unwrap_or(false)
}

/// One setting by `CONFIG GET`; None if CONFIG is not allowed or unknown.
pub async fn config_get(conn: &mut Conn, name: &str) -> Option<String> {
    match conn
        .command(&[b"CONFIG", b"GET", name.as_bytes()])
        .await
        .ok()?
    {
        Reply::Array(items) => {
            let value = items.get(1)?.as_bytes()?;
            Some(String::from_utf8_lossy(value).into_owned())
        }
        _ => None,
    }
}
