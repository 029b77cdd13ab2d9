//! Settings from the TOML config file. Flags and REDVAULT_* environment variables
//! (handled by clap) take precedence over the file; the file over defaults.

use anyhow::Context;
use serde::Deserialize;
use std::path::Path;

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    pub chunk_size: Option<u32>,
    pub zstd_level: Option<i32>,
    pub compress: Option<bool>,
}

impl Config {
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
