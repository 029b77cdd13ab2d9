//! TLS for Redis links (`rediss://`): rustls, TLS 1.2 at least, the server's
//! certificate verified against the CA given or the system's roots, a client
//! certificate for mutual TLS, and the name to verify when connecting by an
//! address the certificate does not name. There is no way to turn
//! verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// TLS settings as flags and config give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Roots to verify the server with (PEM); else the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (SNI too); else the URL's host.
    pub server_name: Option<String>,
}

impl TlsOptions {
    pub fn is_default(&self) -> bool {
        *self == TlsOptions::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Invalid(String),
}

/// A TLS client built once from `TlsOptions`, shared by every link.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient(server_name: {:?})", self.server_name)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The PEM private key in `path` (its bytes zeroized once parsed).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = zeroize::Zeroizing::new(read(path)?);
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?
        .ok_or_else(|| TlsError::Invalid(format!("{} holds no PEM private key", path.display())))
}

impl TlsClient {
    pub fn new(opts: &TlsOptions) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &opts.ca_file {
            Some(ca) => {
                for c in certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(TlsError::Invalid(
                        "no system root certificates found; pass --tls-ca FILE".into(),
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_root_certificates(roots);
        let config = match (&opts.cert_file, &opts.key_file) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert)?;
                let key_der = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError::Invalid(format!("client certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Invalid(
                    "a client certificate needs both --tls-cert and --tls-key".into(),
                ))
            }
        };
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: opts.server_name.clone(),
        })
    }

    /// The client with the system's roots and no client certificate, made once.
    pub fn system() -> Result<Arc<TlsClient>, TlsError> {
        static SYSTEM: OnceLock<Arc<TlsClient>> = OnceLock::new();
        if let Some(c) = SYSTEM.get() {
            return Ok(c.clone());
        }
        let made = Arc::new(TlsClient::new(&TlsOptions::default())?);
        Ok(SYSTEM.get_or_init(|| made).clone())
    }

    /// The TLS handshake over `tcp`; `host` is the URL's host.
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        host: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid TLS server name"),
            )
        })?;
        self.connector.connect(server_name, tcp).await
    }
}

/// The server side, for the replication feed: a target that replicates
/// over TLS (`tls-replication yes`) connects to the feed as to a primary.
/// The target verifies this certificate against its own `tls-ca-cert-file`.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// From a PEM certificate chain and its private key.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = certs(cert)?;
        let key_der = private_key(key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert.display())))?;
        Ok(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS handshake of a connection accepted on `tcp`.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        self.acceptor.accept(tcp).await
    }
}
