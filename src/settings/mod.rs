//! Settings: the TOML config schema, its defaults, and the builders every
//! command and the daemon's reload share (store, KEK, Redis connection, seal
//! options, retention). Flags and REDVAULT_* environment variables (handled by
//! clap in cli/) take precedence over the file; the file over the defaults here.

use crate::azure::{AzureSettings, Identity, IdentityError};
use crate::backup::{BackupError, Retention};
use crate::kek::{open_kek, Kek, KekError, KeyVaultOptions};
use crate::resp::{ConnectOptions, RedisUrl, TlsClient, TlsError, TlsOptions, UrlError};
use crate::sealer::SealOptions;
use crate::signing::{SignError, Signer, Trust, SIGNING_KEY_FILE, SIGNING_PUB_FILE};
use crate::store::{Store, StoreContext, StoreError};
use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// The daemon's defaults, stated once (the config example repeats them in prose).
pub mod defaults {
    /// /healthz and /metrics address.
    pub const LISTEN: &str = "127.0.0.1:9187";
    /// Local spool bound, bytes.
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    /// Cut a segment at this size, bytes.
    pub const SEGMENT_MAX_BYTES: usize = 8 << 20;
    /// Cuts asked for by WAIT, at most this many a second.
    pub const MAX_SEGMENTS_PER_SEC: u32 = 20;
    /// Cut a segment this long after its first write, ms.
    pub const SEGMENT_INTERVAL_MS: u64 = 1000;
    /// Read the source's key counts for drills this often, ms.
    pub const FINGERPRINT_INTERVAL_MS: u64 = 30_000;
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// A setting that is missing, or out of range; the message says which flag,
    /// variable or key sets it.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// How to seal, as flags give it (each falls back to `[seal]`).
#[derive(Debug, Clone, Default)]
pub struct SealTuning {
    pub chunk_size: Option<u32>,
    pub zstd_level: Option<i32>,
    pub no_compress: bool,
}

/// How log lines look (`--log-format`, `log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text each, coloured only on a terminal (and not under NO_COLOR).
    Text,
    /// One JSON object per line (level, target, message and fields such as
    /// source and generation), for log shippers.
    Json,
    /// Plain text without time stamps (the journal adds its own), never
    /// coloured: what the systemd units use.
    Journal,
}

/// The `log_format` of the config file at `path`, read on its own before
/// logging starts (None when absent, or when the file does not parse:
/// loading it in full then names the error).
pub fn log_format_of(path: &Path) -> Option<LogFormat> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get("log_format")?.clone().try_into().ok()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// KEK: a path to a PEM key file.
    pub kek: Option<String>,
    /// The writer's Ed25519 signing key (PKCS#8 PEM); defaults to
    /// signing.pem beside the KEK file.
    pub signing_key: Option<String>,
    /// Whose backups readers trust.
    #[serde(default)]
    pub trust: TrustConfig,
    /// Append one JSON record per command (and daemon start/stop) here.
    pub audit_log: Option<std::path::PathBuf>,
    /// How log lines look: "text", "json" or "journal" (`--log-format`
    /// wins; read before the rest, so logging starts with it).
    pub log_format: Option<LogFormat>,
    /// The Redis to back up: redis://[user[:password]@]host:port.
    pub redis: Option<String>,
    /// A file holding the Redis password (e.g. a systemd credential), so it
    /// is in no URL, config or process list.
    pub redis_password_file: Option<std::path::PathBuf>,
    /// Storage URL (file://, az://, s3://, gs://).
    pub store: Option<String>,
    /// Path prefix inside the store.
    pub prefix: Option<String>,
    /// Source name (defaults to host-port).
    pub source: Option<String>,
    /// Seconds without a byte from Redis before giving up.
    pub redis_timeout: Option<u64>,
    /// TLS for rediss:// links.
    #[serde(default)]
    pub redis_tls: RedisTlsConfig,
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
    /// Allow a non-loopback `listen` (the endpoints carry no authentication).
    pub listen_public: Option<bool>,
    /// New base snapshot: 15m, 30m, 1h, 6h, 12h, 24h or a cron expression.
    pub base_every: Option<String>,
    pub keep_last: Option<usize>,
    /// e.g. "7d".
    pub keep_within: Option<String>,
    /// Cut a segment this long after its first write (default 1000 ms).
    pub segment_interval_ms: Option<u64>,
    /// ... or at this size (default 8 MiB).
    pub segment_max_bytes: Option<usize>,
    /// Read the source's keys per database (one MULTI with two INFOs) this
    /// often, for drills to compare (default 30000 ms; 0: never).
    pub fingerprint_interval_ms: Option<u64>,
    /// Run `redvault drill` on this schedule (as `base_every`) for every
    /// source, as a child process into a scratch redis-server.
    pub drill_every: Option<String>,
    /// The KEK drills unwrap with (a private key file, or a Key Vault key
    /// this host may unwrap with): needed with `drill_every`.
    pub drill_kek: Option<String>,
    /// The redis-server drills start (else the one on PATH).
    pub drill_redis_server: Option<std::path::PathBuf>,
    /// A Redis Cluster's shards are followed on a replica of each primary.
    pub from_replica: Option<bool>,
    /// A client waiting in `WAIT` has the open segment cut at once; at most
    /// this many such cuts a second (default 20): each is a storage write.
    pub max_segments_per_sec: Option<u32>,
    /// Local spool bound (default 1 GiB).
    pub spool_max_bytes: Option<u64>,
    /// `psync` (default: a base, then the command stream) or `scan` (for
    /// servers that refuse PSYNC: a SCAN base on every `base_every`, no stream).
    pub method: Option<String>,
    #[serde(default)]
    pub sources: Vec<DaemonSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSource {
    pub name: String,
    pub redis: String,
    /// As `[daemon] method`, for this source.
    pub method: Option<String>,
    /// As `[daemon] drill_every`, for this source.
    pub drill_every: Option<String>,
    /// As `[daemon] from_replica`, for this source.
    pub from_replica: Option<bool>,
}

/// The `[redis_tls]` table (each key also a flag: --tls-ca, --tls-cert,
/// --tls-key, --tls-server-name).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsConfig {
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub server_name: Option<String>,
}

/// The `[trust]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Public signing keys (signing.pub.pem of each backup host).
    #[serde(default)]
    pub signers: Vec<String>,
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
    /// The Azure identity this run got tokens with (ids only), if any: for
    /// the audit record.
    pub fn used_identity(&self) -> Option<String> {
        self.identity
            .get()
            .filter(|i| i.used())
            .map(|i| i.name_with_principal())
    }

    /// For a long-running command's audit records (the daemon): the
    /// identity built so far, named once it has fetched a token.
    pub fn identity_name(&self) -> Option<crate::audit::IdentityName> {
        let id = self.identity.get()?.clone();
        Some(Arc::new(move || {
            id.used().then(|| id.name_with_principal())
        }))
    }

    pub fn identity(&self) -> Result<Arc<Identity>, SettingsError> {
        if let Some(i) = self.identity.get() {
            return Ok(i.clone());
        }
        let settings = self.azure.clone().unwrap_or_default();
        let made = Arc::new(Identity::new(&settings)?);
        Ok(self.identity.get_or_init(|| made).clone())
    }

    /// How to open the store at `url`: Azure Blob by the `[azure]` settings when
    /// there are any (the identity is made only for an Azure URL).
    pub fn store_context(&self, url: &str) -> Result<StoreContext, SettingsError> {
        let is_azure = crate::store::is_azure_url(url);
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
    pub fn vault_options(&self) -> Result<KeyVaultOptions, SettingsError> {
        let settings = self.azure.clone().unwrap_or_default();
        let ca_pem = match &settings.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                SettingsError::Invalid(format!("cannot read ca_file {}: {e}", p.display()))
            })?),
            None => None,
        };
        Ok(KeyVaultOptions {
            identity: self.identity()?,
            ca_pem,
            verify_challenge_resource: settings.key_vault.verify_challenge_resource.unwrap_or(true),
        })
    }

    /// Entra ID authentication to Redis, when `[azure.redis] entra_id = true`.
    pub fn redis_auth(&self) -> Result<Option<Arc<dyn crate::resp::RedisAuth>>, SettingsError> {
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

    pub fn load(path: Option<&Path>) -> Result<Self, SettingsError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: shown.clone(),
            source,
        })?;
        // toml's messages span several lines; keep the error to one.
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: shown,
            message: e.message().to_string(),
        })
    }

    /// The Redis URL from a flag, else the config. The password may come from
    /// a file (`--redis-password-file`, `redis_password_file`) or
    /// REDVAULT_REDIS_PASSWORD, both kept out of the process list; one in the
    /// URL itself is taken with a warning naming those.
    pub fn redis_url(
        &self,
        arg: Option<&str>,
        password_file: Option<&Path>,
    ) -> Result<RedisUrl, SettingsError> {
        let s = arg.or(self.redis.as_deref()).ok_or_else(|| {
            SettingsError::Invalid(
                "no Redis given: pass --redis URL, set REDVAULT_REDIS, or set redis in the config file"
                    .into(),
            )
        })?;
        let mut url = RedisUrl::parse(s)?;
        let file = password_file.or(self.redis_password_file.as_deref());
        if let Some(path) = file {
            url.password = Some(crate::text::read_secret_file(path).map_err(|e| {
                SettingsError::Invalid(format!(
                    "cannot read the Redis password file {}: {e}",
                    path.display()
                ))
            })?);
        } else if let Ok(p) = std::env::var("REDVAULT_REDIS_PASSWORD") {
            url.password = Some(Zeroizing::new(p));
        } else if url.password.is_some() {
            tracing::warn!(
                "a password in the Redis URL can show in the process list, shell history and config backups: use --redis-password-file FILE (or REDVAULT_REDIS_PASSWORD)"
            );
        }
        Ok(url)
    }

    /// The one set of connection options for every Redis link: the timeout
    /// from a flag or `redis_timeout`, Entra ID credentials from `[azure.redis]`,
    /// TLS from flags or `[redis_tls]` (used by rediss:// URLs).
    pub fn connect_options(
        &self,
        timeout_arg: Option<u64>,
        tls_args: &TlsOptions,
    ) -> Result<ConnectOptions, SettingsError> {
        let c = &self.redis_tls;
        let tls = TlsOptions {
            ca_file: tls_args.ca_file.clone().or(c.ca_file.clone()),
            cert_file: tls_args.cert_file.clone().or(c.cert_file.clone()),
            key_file: tls_args.key_file.clone().or(c.key_file.clone()),
            server_name: tls_args.server_name.clone().or(c.server_name.clone()),
        };
        let mut o = ConnectOptions {
            auth: self.redis_auth()?,
            tls: if tls.is_default() {
                None
            } else {
                Some(Arc::new(TlsClient::new(&tls)?))
            },
            ..Default::default()
        };
        if let Some(t) = timeout_arg.or(self.redis_timeout) {
            o.read_timeout = Duration::from_secs(t.max(1));
        }
        Ok(o)
    }

    /// The store from a flag (`flag` names it in the error), else the config;
    /// the prefix likewise.
    pub fn open_store(
        &self,
        url: Option<&str>,
        flag: &str,
        prefix: Option<&str>,
    ) -> Result<Store, SettingsError> {
        let url = url.or(self.store.as_deref()).ok_or_else(|| {
            SettingsError::Invalid(format!(
                "no storage given: pass {flag} URL, set REDVAULT_STORE, or set store in the config file"
            ))
        })?;
        Ok(Store::open_with(
            url,
            prefix.or(self.prefix.as_deref()),
            &self.store_context(url)?,
        )?)
    }

    /// The KEK from a flag, else the config; none is an error (fail closed:
    /// nothing is written without a key).
    pub fn open_kek(&self, arg: Option<&str>) -> Result<Arc<dyn Kek>, SettingsError> {
        let spec = arg.or(self.kek.as_deref()).ok_or_else(|| {
            SettingsError::Invalid(
                "no KEK given: pass --kek, set REDVAULT_KEK, or set kek in the config file".into(),
            )
        })?;
        let vault = if crate::kek::is_key_vault_spec(spec) {
            Some(self.vault_options()?)
        } else {
            None
        };
        Ok(open_kek(spec, vault)?)
    }

    /// The KEK if one is given at all (a plain backup needs none).
    pub fn maybe_kek(&self, arg: Option<&str>) -> Result<Option<Arc<dyn Kek>>, SettingsError> {
        match arg.or(self.kek.as_deref()) {
            Some(_) => Ok(Some(self.open_kek(arg)?)),
            None => Ok(None),
        }
    }

    /// The folder of the KEK file, if the KEK is a file: where its signing
    /// pair is kept.
    fn kek_dir(&self, kek_arg: Option<&str>) -> Option<std::path::PathBuf> {
        let spec = kek_arg.or(self.kek.as_deref())?;
        if crate::kek::is_key_vault_spec(spec) {
            return None;
        }
        let parent = Path::new(spec).parent()?;
        Some(if parent.as_os_str().is_empty() {
            Path::new(".").to_path_buf()
        } else {
            parent.to_path_buf()
        })
    }

    /// The writer's signing key: a flag, else `signing_key`, else signing.pem
    /// beside the KEK file. None is an error: nothing is written unsigned. A
    /// Key Vault key URL is a P-256 key the vault signs with, under the
    /// Azure identity; it is read once here (get).
    pub async fn open_signer(
        &self,
        arg: Option<&str>,
        kek_arg: Option<&str>,
    ) -> Result<Arc<Signer>, SettingsError> {
        let beside = self.kek_dir(kek_arg).map(|d| d.join(SIGNING_KEY_FILE));
        let path = match arg.or(self.signing_key.as_deref()) {
            Some(p) => Path::new(p).to_path_buf(),
            None => match beside {
                Some(p) if p.exists() => p,
                _ => {
                    return Err(SettingsError::Invalid(format!(
                        "no signing key: redvault signs every backup it writes, so that only backups of yours are ever restored. Make one with `redvault keys signer --out DIR`{} and pass --signing-key DIR/{SIGNING_KEY_FILE} (or REDVAULT_SIGNING_KEY, or signing_key in the config); copy DIR/{SIGNING_PUB_FILE} to the hosts that restore",
                        beside
                            .as_ref()
                            .and_then(|p| p.parent())
                            .map(|d| format!(" (with DIR = {}, beside the KEK, it is found on its own)", d.display()))
                            .unwrap_or_default()
                    )))
                }
            },
        };
        let spec = path.to_string_lossy();
        if crate::kek::is_key_vault_spec(&spec) {
            let v = crate::signing::VaultSigner::open(&spec, self.vault_options()?, true).await?;
            return Ok(Arc::new(Signer::vault(v)));
        }
        Ok(Arc::new(Signer::load(&path)?))
    }

    /// The public half of a signing key (a file, or a Key Vault key read
    /// with `get` only: no signature is made).
    pub async fn signer_public(
        &self,
        spec: &str,
    ) -> Result<crate::signing::PublicKey, SettingsError> {
        if crate::kek::is_key_vault_spec(spec) {
            let v = crate::signing::VaultSigner::open(spec, self.vault_options()?, false).await?;
            return Ok(Signer::vault(v).public_key().clone());
        }
        Ok(Signer::load(Path::new(spec))?.public_key().clone())
    }

    /// The signers a reader trusts: `--trust` files (and REDVAULT_TRUST),
    /// `[trust] signers`, and the signing key kept beside the KEK file.
    pub fn trust(
        &self,
        files: &[String],
        kek_arg: Option<&str>,
        allow_unsigned: bool,
    ) -> Result<Trust, SettingsError> {
        let mut t = Trust::new(allow_unsigned);
        for f in files.iter().chain(&self.trust.signers) {
            t.add_file(Path::new(f))?;
        }
        if let Some(dir) = self.kek_dir(kek_arg) {
            let public = dir.join(SIGNING_PUB_FILE);
            let private = dir.join(SIGNING_KEY_FILE);
            if public.exists() {
                t.add_file(&public)?;
            } else if private.exists() {
                t.add_file(&private)?;
            }
            t.set_hint(format!(
                "no trusted signer is given: copy {SIGNING_PUB_FILE} from the backup host (it is beside its KEK) to {}, or pass --trust FILE (or REDVAULT_TRUST, or [trust] signers in the config)",
                public.display()
            ));
        }
        if allow_unsigned {
            tracing::warn!("--allow-unsigned: backups written before signing are read, and their origin is not authenticated");
        }
        Ok(t)
    }

    /// Seal options from flags, else `[seal]`, else the defaults.
    pub fn seal_options(&self, t: &SealTuning) -> Result<SealOptions, SettingsError> {
        let mut o = SealOptions::default();
        if let Some(cs) = t.chunk_size.or(self.seal.chunk_size) {
            if !(1024..=crate::format::MAX_CHUNK_SIZE).contains(&cs) {
                return Err(SettingsError::Invalid(format!(
                    "chunk size {cs} out of range (1 KiB to 64 MiB)"
                )));
            }
            o.chunk_size = cs;
        }
        if let Some(l) = t.zstd_level.or(self.seal.zstd_level) {
            if !zstd::compression_level_range().contains(&l) {
                return Err(SettingsError::Invalid(format!(
                    "zstd level {l} out of range"
                )));
            }
            o.zstd_level = Some(l);
        }
        if t.no_compress || self.seal.compress == Some(false) {
            o.zstd_level = None;
        }
        Ok(o)
    }

    /// Retention from flags, else `[daemon]` (the one place it is parsed).
    pub fn retention(
        &self,
        keep_last: Option<usize>,
        keep_within: Option<&str>,
    ) -> Result<Retention, SettingsError> {
        let d = self.daemon.clone().unwrap_or_default();
        Ok(Retention::parse(
            keep_last.or(d.keep_last),
            keep_within.or(d.keep_within.as_deref()),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented examples in config/ are what users copy: they must parse.
    #[test]
    fn the_example_configs_parse() {
        for (name, text) in [
            ("redvault.toml", include_str!("../../config/redvault.toml")),
            ("daemon.toml", include_str!("../../config/daemon.toml")),
        ] {
            let c: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(c.kek.is_some(), "{name}");
        }
    }
}
