//! A plain Redis connection, shared by every link (replication, loader, replay):
//! the URL, RESP frames with timeouts (`conn.rs`), connecting with the one set of
//! connection options and AUTH (`connect.rs`), and the connection errors.

pub mod cluster;
mod conn;
mod connect;
mod tls;
mod url;

pub use conn::{decode_command, encode_command, encode_into, Conn, ConnWriter, Reply, Transport};
pub use connect::{
    authenticate, cluster_mode, config_get, connect, is_cluster_node, redis_version,
    server_version, ConnectOptions, CredentialError, RedisAuth, RedisCredentials, ServerVersion,
};
pub use tls::{TlsClient, TlsError, TlsOptions, TlsServer};
pub use url::{RedisUrl, UrlError};

/// What can go wrong on a Redis link; every message names the address.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("Redis at {addr}: no answer within {secs} s while waiting for {waiting_for}")]
    Timeout {
        addr: String,
        secs: u64,
        waiting_for: String,
    },
    #[error("Redis at {addr}: connection error: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("Redis at {addr} closed the connection during {during}")]
    Closed { addr: String, during: String },
    /// The TLS handshake failed; the message says whether the port looks plain.
    #[error("Redis at {addr}: TLS handshake failed: {message}")]
    Tls { addr: String, message: String },
    #[error("Redis at {addr} refused authentication{}: {message}", user.as_ref().map(|u| format!(" for user {u}")).unwrap_or_default())]
    Auth {
        addr: String,
        user: Option<String>,
        message: String,
    },
    #[error("Redis at {addr}: {user} lacks the permission to run '{command}', which a replica needs ({message}); `redvault acl print --role backup` prints a user that has it")]
    NoPermission {
        addr: String,
        user: String,
        command: String,
        message: String,
    },
    #[error("Redis at {addr} refused {command}: {message}")]
    Refused {
        addr: String,
        command: String,
        message: String,
    },
    #[error("Redis at {addr}: the snapshot's CRC64 is {actual:016x}, its trailer says {expected:016x}: the RDB is corrupt")]
    BadCrc {
        addr: String,
        expected: u64,
        actual: u64,
    },
    #[error("{0}")]
    Protocol(String),
}
