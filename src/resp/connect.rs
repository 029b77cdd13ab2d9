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
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            auth: None,
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
    let mut conn = Conn::new(Box::new(tcp), addr.clone(), opts.read_timeout);
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

/// The server's version from INFO; None if the user may not run INFO.
pub async fn redis_version(conn: &mut Conn) -> Option<String> {
    match conn.command(&[b"INFO", b"server"]).await.ok()? {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.strip_prefix("redis_version:")
                .map(|v| v.trim().to_string())
        }),
        _ => None,
    }
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
