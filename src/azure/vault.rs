//! One key in Azure Key Vault, reached under the Azure identity layer: the
//! URL parsing, the 401 challenge that names the token's resource, and errors
//! that name the identity and the permission it lacks. The KEK (wrapkey,
//! unwrapkey) and the vault signer (sign) are its two users.

use super::{Identity, VAULT_SCOPE};
use base64::Engine;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use url::Url;

const API_VERSION: &str = "7.4";

/// How to reach the vault: the identity for tokens, and TLS roots.
#[derive(Clone)]
pub struct KeyVaultOptions {
    pub identity: Arc<Identity>,
    /// Extra trusted root (PEM), for a test vault on loopback.
    pub ca_pem: Option<Vec<u8>>,
    /// Refuse a 401 challenge naming a resource outside the vault's domain.
    pub verify_challenge_resource: bool,
}

/// What went wrong talking to the vault, in one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VaultError(pub String, pub Transient);

/// Whether the same request may succeed later (throttled, a server error,
/// unreachable): an operation without side effects may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    Yes,
    No,
}

fn fatal(message: String) -> VaultError {
    VaultError(message, Transient::No)
}

/// Whether a key spec names a Key Vault key.
pub fn is_key_vault_spec(spec: &str) -> bool {
    (spec.starts_with("https://") || spec.starts_with("http://")) && spec.contains("/keys/")
}

pub struct VaultKey {
    /// `https://vault.example/keys/name`, no version.
    key_url: String,
    version: Option<String>,
    id: String,
    opts: KeyVaultOptions,
    http: reqwest::Client,
    /// The token scope the vault's challenge named; learnt on the first request.
    scope: Mutex<Option<String>>,
    /// The role to grant, named when the vault answers 403.
    grant: &'static str,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

impl VaultKey {
    /// Parses `https://<vault>/keys/<name>[/<version>]`. Nothing is requested
    /// yet. `grant` names what to grant when the vault refuses (403).
    pub fn new(spec: &str, opts: KeyVaultOptions, grant: &'static str) -> Result<Self, VaultError> {
        let bad = |why: &str| fatal(format!("Key Vault key {spec}: {why}"));
        let url = Url::parse(spec).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("Key Vault is reached over https only"));
        }
        let segs: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let (name, version) = match segs.as_slice() {
            ["keys", name] => (*name, None),
            ["keys", name, version] => (*name, Some(version.to_string())),
            _ => return Err(bad("expected https://<vault>/keys/<name>[/<version>]")),
        };
        let origin = url.origin().ascii_serialization();
        let key_url = format!("{origin}/keys/{name}");
        let id = match &version {
            Some(v) => format!("{key_url}/{v}"),
            None => key_url.clone(),
        };
        let mut b = reqwest::Client::builder()
            .https_only(true)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = &opts.ca_pem {
            let cert =
                reqwest::Certificate::from_pem(pem).map_err(|e| bad(&format!("ca_file: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| bad(&e.to_string()))?;
        Ok(VaultKey {
            key_url,
            version,
            id,
            opts,
            http,
            scope: Mutex::new(None),
            grant,
        })
    }

    /// The key as given: versioned when a version was given.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pinned version, if one was given.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// One call to the vault: sends without a token first (the vault answers 401
    /// with a challenge naming the token's resource), then with one.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
        permission: &str,
    ) -> Result<bytes::Bytes, VaultError> {
        let url = format!("{url}?api-version={API_VERSION}");
        for _ in 0..2 {
            let scope = self.scope.lock().map(|s| s.clone()).unwrap_or(None);
            let mut req = self.http.request(method.clone(), &url);
            // The first, unauthenticated attempt carries no body: only the
            // challenge is wanted from it.
            if let (Some(b), Some(_)) = (&body, &scope) {
                req = req.json(b);
            }
            if let Some(scope) = &scope {
                let token = self
                    .opts
                    .identity
                    .token(scope)
                    .await
                    .map_err(|e| VaultError(e.to_string(), Transient::Yes))?;
                req = req.bearer_auth(token.secret.as_str());
            }
            let rsp = req.send().await.map_err(|e| {
                VaultError(
                    format!(
                        "cannot reach Key Vault for {}: {}",
                        self.id,
                        error_chain(&e)
                    ),
                    Transient::Yes,
                )
            })?;
            let status = rsp.status().as_u16();
            if status == 401 && scope.is_none() {
                let challenge = rsp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let learnt = self.scope_from_challenge(&challenge)?;
                if let Ok(mut s) = self.scope.lock() {
                    *s = Some(learnt);
                }
                continue;
            }
            let bytes = rsp.bytes().await.map_err(|e| {
                VaultError(
                    format!("Key Vault answer for {}: {}", self.id, error_chain(&e)),
                    Transient::Yes,
                )
            })?;
            if (200..300).contains(&status) {
                return Ok(bytes);
            }
            let detail = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .map(|b| {
                    format!(
                        "{}: {}",
                        b.error.code.unwrap_or_default(),
                        b.error.message.unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            let who = self.opts.identity.name_with_principal();
            let transient = if status == 429 || status >= 500 {
                Transient::Yes
            } else {
                Transient::No
            };
            return Err(VaultError(
                match status {
                    401 => format!("Key Vault rejected the token of {who} for {}: {detail}", self.id),
                    403 => format!(
                        "{who} lacks the '{permission}' permission on Key Vault key {} (grant {}): {detail}",
                        self.id, self.grant
                    ),
                    404 => format!("Key Vault key {} does not exist: {detail}", self.id),
                    _ => format!("Key Vault answered {status} for {}: {detail}", self.id),
                },
                transient,
            ));
        }
        Err(fatal(format!(
            "Key Vault kept asking for authentication for {}",
            self.id
        )))
    }

    /// The token scope from `Bearer authorization="...", resource="..."` (or `scope=`).
    fn scope_from_challenge(&self, challenge: &str) -> Result<String, VaultError> {
        let param = |name: &str| {
            challenge.split([',', ' ']).find_map(|p| {
                p.trim()
                    .strip_prefix(name)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        let scope = match (param("scope"), param("resource")) {
            (Some(s), _) => s,
            (None, Some(r)) => format!("{}/.default", r.trim_end_matches('/')),
            (None, None) if challenge.is_empty() => VAULT_SCOPE.to_string(),
            (None, None) => {
                return Err(fatal(format!(
                    "Key Vault challenge for {} names no resource: {challenge}",
                    self.id
                )))
            }
        };
        if self.opts.verify_challenge_resource {
            let vault_host = Url::parse(&self.key_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let resource_host = Url::parse(&scope)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            if resource_host.is_empty() || !vault_host.ends_with(&format!(".{resource_host}")) {
                return Err(fatal(format!(
                    "Key Vault at {vault_host} asked for a token for {scope}, outside its own domain: refused (set azure.key_vault.verify_challenge_resource = false only for a test vault)"
                )));
            }
        }
        Ok(scope)
    }

    pub fn versioned(&self, kid: &str) -> Option<String> {
        kid.strip_prefix(&format!("{}/", self.key_url))
            .filter(|v| !v.is_empty() && !v.contains('/'))
            .map(str::to_string)
    }

    /// The key bundle (`GET`), checked to be enabled and to name a version of
    /// this key.
    pub async fn get(&self) -> Result<KeyBundle, VaultError> {
        let bundle = self
            .call(reqwest::Method::GET, &self.id, None, "get")
            .await?;
        let bundle: KeyBundle = serde_json::from_slice(&bundle)
            .map_err(|e| fatal(format!("Key Vault key {}: unreadable answer: {e}", self.id)))?;
        if bundle.attributes.as_ref().and_then(|a| a.enabled) == Some(false) {
            return Err(fatal(format!(
                "Key Vault key {} is disabled",
                bundle.key.kid
            )));
        }
        if self.versioned(&bundle.key.kid).is_none() {
            return Err(fatal(format!(
                "Key Vault returned key id {} for {}",
                bundle.key.kid, self.id
            )));
        }
        Ok(bundle)
    }
}

/// A key operation's answer (wrapkey, unwrapkey, sign).
#[derive(Deserialize)]
pub struct OperationResult {
    pub kid: String,
    pub value: String,
}

#[derive(Deserialize)]
pub struct KeyBundle {
    pub key: JsonWebKey,
    #[serde(default)]
    attributes: Option<Attributes>,
}

/// The members of a JSON Web Key redvault reads: RSA keys are used by the
/// vault only; for EC keys the public point is read, to verify signatures.
#[derive(Deserialize)]
pub struct JsonWebKey {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Deserialize)]
struct Attributes {
    enabled: Option<bool>,
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// reqwest's Display hides the cause (connection refused, certificate); show it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Decodes a base64url member of an answer (padding tolerated).
pub fn b64url_decode(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .ok()
}
