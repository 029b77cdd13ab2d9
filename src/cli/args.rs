//! Flags shared by several commands, declared once: where the backups are,
//! which KEK, how to reach Redis, how to seal. Each turns into the library's
//! settings (`crate::settings`), which fall back to the config file.

use crate::kek::Kek;
use crate::resp::{ConnectOptions, RedisUrl};
use crate::settings::{Config, SealTuning};
use crate::signing::Trust;
use crate::store::Store;
use clap::Args;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Storage URL: file:///dir, az://container, https://ACCOUNT.blob.core.windows.net/CONTAINER, s3://bucket, gs://bucket.
    #[arg(long = "to", visible_alias = "from", env = "REDVAULT_STORE")]
    pub store: Option<String>,
    /// Path prefix inside the store.
    #[arg(long, env = "REDVAULT_PREFIX")]
    pub prefix: Option<String>,
}

impl StoreArgs {
    pub fn open(&self, config: &Config) -> anyhow::Result<Store> {
        Ok(config.open_store(self.store.as_deref(), "--to", self.prefix.as_deref())?)
    }
}

#[derive(Debug, Args)]
pub struct KekArg {
    /// Key-encryption key: path to an RSA key in PEM (public to seal, private to
    /// unseal), or a Key Vault key https://<vault>.vault.azure.net/keys/<name>[/<version>].
    #[arg(long, env = "REDVAULT_KEK")]
    pub kek: Option<String>,
}

impl KekArg {
    /// The KEK from the flag, the environment or the config; none is an error.
    pub fn open(&self, config: &Config) -> anyhow::Result<Arc<dyn Kek>> {
        Ok(config.open_kek(self.kek.as_deref())?)
    }
}

/// Whose backups count when reading them.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// A trusted signer's public key (signing.pub.pem of a backup host);
    /// repeatable. The one beside the KEK file is trusted too.
    #[arg(long = "trust", env = "REDVAULT_TRUST", value_delimiter = ',')]
    pub trust: Vec<String>,
    /// Also read backups written before signing (format 1), whose origin
    /// cannot be authenticated; said on every use.
    #[arg(long)]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    pub fn trust(&self, config: &Config, kek: Option<&str>) -> anyhow::Result<Trust> {
        Ok(config.trust(&self.trust, kek, self.allow_unsigned)?)
    }
}

/// How to reach one Redis: the URL and the read timeout.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// The Redis: redis[s]://[user[:password]@]host:port. Better, the password
    /// from --redis-password-file or REDVAULT_REDIS_PASSWORD (kept out of the
    /// process list).
    #[arg(long, env = "REDVAULT_REDIS")]
    pub redis: Option<String>,
    /// Seconds without a byte from Redis before giving up.
    #[arg(long, env = "REDVAULT_REDIS_TIMEOUT")]
    pub redis_timeout: Option<u64>,
    /// A file holding the Redis password (e.g. a systemd credential).
    #[arg(long, env = "REDVAULT_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS for rediss:// links (each also in `[redis_tls]`).
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// CA certificates (PEM) to verify the server with; else the system's roots.
    #[arg(long, env = "REDVAULT_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM), for servers that require mutual TLS.
    #[arg(long, env = "REDVAULT_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "REDVAULT_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (e.g. when connecting by IP).
    #[arg(long, env = "REDVAULT_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    pub fn options(&self) -> crate::resp::TlsOptions {
        crate::resp::TlsOptions {
            ca_file: self.tls_ca.clone(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }
}

impl RedisArgs {
    pub fn url(&self, config: &Config) -> anyhow::Result<RedisUrl> {
        Ok(config.redis_url(self.redis.as_deref(), self.redis_password_file.as_deref())?)
    }

    /// The one set of connection options every Redis link of a command uses.
    pub fn connect_options(&self, config: &Config) -> anyhow::Result<ConnectOptions> {
        Ok(config.connect_options(self.redis_timeout, &self.tls.options())?)
    }
}

/// How to seal: the KEK, chunk size and compression.
#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub kek: KekArg,
    /// Plaintext bytes per chunk.
    #[arg(long, env = "REDVAULT_CHUNK_SIZE")]
    pub chunk_size: Option<u32>,
    /// zstd level (1 is fast and is the default; 3 packs tighter).
    #[arg(long, env = "REDVAULT_ZSTD_LEVEL", allow_hyphen_values = true)]
    pub zstd_level: Option<i32>,
    /// Store chunks uncompressed.
    #[arg(long)]
    pub no_compress: bool,
    /// Ed25519 signing key (PKCS#8 PEM) that signs what is written; by
    /// default signing.pem beside the KEK file.
    #[arg(long, env = "REDVAULT_SIGNING_KEY")]
    pub signing_key: Option<String>,
}

impl SealArgs {
    pub fn tuning(&self) -> SealTuning {
        SealTuning {
            chunk_size: self.chunk_size,
            zstd_level: self.zstd_level,
            no_compress: self.no_compress,
        }
    }
}

/// Confirms a FLUSHALL of `url` (`--flush`): `--yes`, or "yes" typed at a
/// terminal; refused without a terminal. Shared by import and restore.
pub fn confirm_flush(yes: bool, url: &RedisUrl) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--flush deletes every key and function library in {url:?}; add --yes to confirm"
        );
    }
    eprint!("--flush deletes every key and function library in {url:?}. Type yes to go on: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?;
    if line.trim() != "yes" {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// Empties the target, every primary of a cluster (after `confirm_flush`).
pub async fn flush_all(url: &RedisUrl, link: &ConnectOptions) -> anyhow::Result<()> {
    Ok(crate::target::flush_all(url, link).await?)
}
