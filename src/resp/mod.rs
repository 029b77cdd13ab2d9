//! A plain Redis connection: the URL, RESP framing with timeouts, AUTH. Shared by
//! the replication client and the loader.

mod conn;
mod url;

pub use conn::{Conn, Reply, Transport};
pub use url::RedisUrl;

use crate::replication::{LinkOptions, ReplError};

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
    let mut conn = Conn::new(Box::new(tcp), addr, opts.read_timeout);
    if let Some(pass) = &url.password {
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
