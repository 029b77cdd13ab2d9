//! Azure: one identity layer (managed identity, workload identity, the Azure CLI,
//! a client secret) for every Azure call — Blob storage, Key Vault, Entra ID
//! authentication to Redis. Every endpoint can be set in the config, so tests run
//! against loopback servers only.

pub mod blob;
pub mod claims;
pub mod identity;
pub mod redis_auth;
mod transport;
pub mod vault;

pub use identity::{Identity, IdentityError};

use serde::Deserialize;
use std::path::PathBuf;

/// Token scopes of the services redvault calls.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
pub const REDIS_SCOPE: &str = "https://redis.azure.com/.default";

/// The `[azure]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    /// How to get tokens: `managed-identity` (the default), `workload-identity`,
    /// `azure-cli` or `client-secret`.
    pub credential: Option<String>,
    /// A user-assigned managed identity by client id (also the application id for
    /// workload identity and client secret).
    pub client_id: Option<String>,
    /// A user-assigned managed identity by object (principal) id.
    pub object_id: Option<String>,
    /// A user-assigned managed identity by Azure resource id.
    pub resource_id: Option<String>,
    /// When no identity is pinned: user-assigned identities to fall back on, in
    /// order, if the host has no system-assigned one. Each is `client_id=...`,
    /// `object_id=...` or `resource_id=...`.
    #[serde(default)]
    pub user_assigned: Vec<String>,
    /// Tenant for workload identity and client secret.
    pub tenant_id: Option<String>,
    /// The client secret (credential `client-secret`) from a file, e.g. a
    /// systemd credential; else AZURE_CLIENT_SECRET. Never the secret itself
    /// in the config.
    pub client_secret_file: Option<PathBuf>,
    /// Federated token file for workload identity (else AZURE_FEDERATED_TOKEN_FILE).
    pub token_file: Option<PathBuf>,
    /// Replaces the managed-identity endpoint (http://169.254.169.254): every
    /// token request goes here, and nothing is sent to a non-loopback address.
    pub token_endpoint: Option<String>,
    /// Replaces the Entra ID authority (https://login.microsoftonline.com), with
    /// the same loopback-only rule.
    pub authority_host: Option<String>,
    /// An extra trusted root certificate (PEM) for Storage and Key Vault.
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub key_vault: KeyVaultSettings,
    #[serde(default)]
    pub redis: RedisAuthSettings,
}

/// The `[azure.storage]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `identity` (the default), `key` (AZURE_STORAGE_ACCOUNT_KEY) or `sas`
    /// (AZURE_STORAGE_SAS_TOKEN).
    pub auth: Option<String>,
    /// For `auth = "key"`: the account key from a file (else the environment).
    pub account_key_file: Option<PathBuf>,
    /// For `auth = "sas"`: the SAS token from a file (else the environment).
    pub sas_token_file: Option<PathBuf>,
    /// Storage account name (else AZURE_STORAGE_ACCOUNT_NAME).
    pub account: Option<String>,
    /// Blob endpoint including the account, e.g. `https://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
}

/// The `[azure.key_vault]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVaultSettings {
    /// Check that a 401 challenge names a resource of the vault's own domain
    /// before sending a token there (default true; tests on loopback turn it off).
    pub verify_challenge_resource: Option<bool>,
}

/// The `[azure.redis]` table: Entra ID authentication to Redis.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisAuthSettings {
    /// AUTH to Redis with an Entra ID token of the identity.
    #[serde(default)]
    pub entra_id: bool,
    /// The user name for AUTH; by default the token's object id (`oid`).
    pub user: Option<String>,
}
