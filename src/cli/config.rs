//! Settings from the TOML config file. Flags and REDVAULT_* environment variables
//! (handled by clap) take precedence over the file; the file over defaults.

use crate::azure::{AzureSettings, Identity};
use crate::kek::KeyVaultOptions;
use crate::store::StoreContext;
use anyhow::Context;
use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// KEK: a path to a PEM key file.
    pub kek: Option<String>,
    /// The Redis to back up: redis://[user[:password]@]host:port.
    pub redis: Option<String>,
    /// Storage URL (file://, az://, s3://, gs://).
    pub store: Option<String>,
    /// Path prefix inside the store.
    pub prefix: Option<String>,
    /// Source name (defaults to host-port).
    pub source: Option<String>,
    /// Seconds without a byte from Redis before giving up.
    pub redis_timeout: Option<u64>,
    #[serde(default)]
    pub seal: SealConfig,
    /// The daemon: state, schedules, retention, sources.
    pub daemon: Option<DaemonConfig>,
    /// Azure identity, storage, Key Vault and Redis authentication.
    pub azure: Option<AzureSettings>,
    /// The one identity of this process, made on first use.
    #[serde(skip)]
    identity: OnceLock<Arc<Identity>>,
}

/// The `[daemon]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Checkpoint and spool directory.
    pub state_dir: Option<std::path::PathBuf>,
    /// /healthz and /metrics address (default 127.0.0.1:9187).
    pub listen: Option<String>,
    /// New base snapshot: 15m, 30m, 1h, 6h, 12h, 24h or a cron expression.
    pub base_every: Option<String>,
    pub keep_last: Option<usize>,
    /// e.g. "7d".
    pub keep_within: Option<String>,
    /// Cut a segment this long after its first write (default 1000 ms).
    pub segment_interval_ms: Option<u64>,
    /// ... or at this size (default 8 MiB).
    pub segment_max_bytes: Option<usize>,
    /// Local spool bound (default 1 GiB).
    pub spool_max_bytes: Option<u64>,
    #[serde(default)]
    pub sources: Vec<DaemonSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSource {
    pub name: String,
    pub redis: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    pub chunk_size: Option<u32>,
    pub zstd_level: Option<i32>,
    pub compress: Option<bool>,
}

impl Config {
    /// The Azure identity (managed identity by default), made once.
    pub fn identity(&self) -> anyhow::Result<Arc<Identity>> {
        if let Some(i) = self.identity.get() {
            return Ok(i.clone());
        }
        let settings = self.azure.clone().unwrap_or_default();
        let made = Arc::new(Identity::new(&settings)?);
        Ok(self.identity.get_or_init(|| made).clone())
    }

    /// How to open the store at `url`: Azure Blob by the `[azure]` settings when
    /// there are any (the identity is made only for an Azure URL).
    pub fn store_context(&self, url: &str) -> anyhow::Result<StoreContext> {
        let is_azure = ["az://", "azure://", "abfs://", "abfss://"]
            .iter()
            .any(|p| url.starts_with(p));
        Ok(match &self.azure {
            Some(s) if is_azure => {
                let by_identity = s.storage.auth.as_deref().unwrap_or("identity") == "identity";
                StoreContext {
                    azure: Some((s.clone(), by_identity.then(|| self.identity()).transpose()?)),
                }
            }
            _ => StoreContext::default(),
        })
    }

    /// How to reach Key Vault, for a KEK given as a Key Vault key URL.
    pub fn vault_options(&self) -> anyhow::Result<KeyVaultOptions> {
        let settings = self.azure.clone().unwrap_or_default();
        let ca_pem = match &settings.ca_file {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("cannot read ca_file {}", p.display()))?,
            ),
            None => None,
        };
        Ok(KeyVaultOptions {
            identity: self.identity()?,
            ca_pem,
            verify_challenge_resource: settings.key_vault.verify_challenge_resource.unwrap_or(true),
        })
    }

    /// Entra ID authentication to Redis, when `[azure.redis] entra_id = true`.
    pub fn redis_auth(&self) -> anyhow::Result<Option<Arc<dyn crate::resp::RedisAuth>>> {
        match &self.azure {
            Some(s) if s.redis.entra_id => Ok(Some(Arc::new(
                crate::azure::redis_auth::EntraRedisAuth::new(
                    self.identity()?,
                    s.redis.user.clone(),
                ),
            ))),
            _ => Ok(None),
        }
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's messages span several lines; keep the error to one.
            let msg = e.message().to_string();
            anyhow::anyhow!("config file {}: {msg}", path.display())
        })
    }
}
