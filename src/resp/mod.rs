//! A plain Redis connection: the URL, RESP framing with timeouts, AUTH. Shared by
//! the replication client and the loader.

mod conn;
mod url;

pub use conn::{encode_command, Conn, ConnWriter, Reply, Transport};
pub use url::RedisUrl;

use crate::replication::{LinkOptions, ReplError};
use async_trait::async_trait;
use zeroize::Zeroizing;

/// A user name and a short-lived password (a token) for AUTH.
pub struct RedisCredentials {
    pub user: String,
    pub password: Zeroizing<String>,
    /// Unix seconds after which the password no longer works, if it expires.
    pub expires_on: Option<i64>,
}

/// Credentials that are fetched per connection (Entra ID tokens) rather than
/// written in the URL.
#[async_trait]
pub trait RedisAuth: Send + Sync + std::fmt::Debug {
    async fn credentials(&self) -> Result<RedisCredentials, String>;
}

/// Sends AUTH with credentials from `auth`; used at connect and again before a
/// token expires on a long-lived connection.
pub async fn authenticate(
    conn: &mut Conn,
    addr: &str,
    auth: &dyn RedisAuth,
) -> Result<RedisCredentials, ReplError> {
    let creds = auth
        .credentials()
        .await
        .map_err(|message| ReplError::Auth {
            addr: addr.to_string(),
            user: None,
            message,
        })?;
    let reply = conn
        .command(&[b"AUTH", creds.user.as_bytes(), creds.password.as_bytes()])
        .await?;
    if let Reply::Error(message) = reply {
        return Err(ReplError::Auth {
            addr: addr.to_string(),
            user: Some(creds.user.clone()),
            message,
        });
    }
    Ok(creds)
}

/// Connects and authenticates (password, or ACL user and password, from the URL).
pub async fn connect(url: &RedisUrl, opts: &LinkOptions) -> Result<Conn, ReplError> {
    let addr = url.addr();
    let tcp = tokio::time::timeout(
        opts.connect_timeout,
        tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| ReplError::Connect {
        addr: addr.clone(),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
    })?
    .map_err(|source| ReplError::Connect {
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
            return Err(ReplError::Auth {
                addr: url.addr(),
                user: url.user.clone(),
                message,
            });
        }
    }
    Ok(conn)
}

/// The server's version from INFO, if the user may run INFO.
pub async fn redis_version(conn: &mut Conn) -> Option<String> {
    match conn.command(&[b"INFO", b"server"]).await.ok()? {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.strip_prefix("redis_version:")
                .map(|v| v.trim().to_string())
        }),
        _ => None,
    }
}
