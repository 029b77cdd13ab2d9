//! An RSA key in Azure Key Vault as the KEK: the data key is wrapped and unwrapped
//! by the vault (`wrapkey` / `unwrapkey`, RSA-OAEP-256), so the KEK never leaves it.
//! The keyring records the full versioned key id; unwrapping uses exactly that
//! version, so rotating the key keeps older backups readable.

use super::{Kek, KekError, WrappedKey, ALG_RSA_OAEP_256};
use crate::azure::{Identity, VAULT_SCOPE};
use crate::data_key::DataKey;
use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use url::Url;
use zeroize::Zeroizing;

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

pub struct KeyVaultKek {
    /// `https://vault.example/keys/name`, no version.
    key_url: String,
    version: Option<String>,
    id: String,
    opts: KeyVaultOptions,
    http: reqwest::Client,
    /// The token scope the vault's challenge named; learnt on the first request.
    scope: Mutex<Option<String>>,
}

/// Whether a KEK spec names a Key Vault key.
pub fn is_key_vault_spec(spec: &str) -> bool {
    (spec.starts_with("https://") || spec.starts_with("http://")) && spec.contains("/keys/")
}

#[derive(Deserialize)]
struct KeyBundle {
    key: JsonWebKey,
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kid: String,
    kty: String,
}

#[derive(Deserialize)]
struct Attributes {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct OperationResult {
    kid: String,
    value: String,
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

impl KeyVaultKek {
    /// Parses `https://<vault>/keys/<name>[/<version>]`. Nothing is requested yet.
    pub fn new(spec: &str, opts: KeyVaultOptions) -> Result<Self, KekError> {
        let bad = |why: &str| KekError::Other(format!("Key Vault key {spec}: {why}"));
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
        Ok(KeyVaultKek {
            key_url,
            version,
            id,
            opts,
            http,
            scope: Mutex::new(None),
        })
    }

    /// One call to the vault: sends without a token first (the vault answers 401
    /// with a challenge naming the token's resource), then with one.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
        permission: &str,
    ) -> Result<bytes::Bytes, KekError> {
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
                    .map_err(|e| KekError::Other(e.to_string()))?;
                req = req.bearer_auth(token.secret.as_str());
            }
            let rsp = req.send().await.map_err(|e| {
                KekError::Other(format!(
                    "cannot reach Key Vault for {}: {}",
                    self.id,
                    error_chain(&e)
                ))
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
                KekError::Other(format!(
                    "Key Vault answer for {}: {}",
                    self.id,
                    error_chain(&e)
                ))
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
            return Err(KekError::Other(match status {
                401 => format!("Key Vault rejected the token of {who} for {}: {detail}", self.id),
                403 => format!(
                    "{who} lacks the '{permission}' permission on Key Vault key {} (grant 'Key Vault Crypto Service Encryption User', or get/wrapKey/unwrapKey): {detail}",
                    self.id
                ),
                404 => format!("Key Vault key {} does not exist: {detail}", self.id),
                _ => format!("Key Vault answered {status} for {}: {detail}", self.id),
            }));
        }
        Err(KekError::Other(format!(
            "Key Vault kept asking for authentication for {}",
            self.id
        )))
    }

    /// The token scope from `Bearer authorization="...", resource="..."` (or `scope=`).
    fn scope_from_challenge(&self, challenge: &str) -> Result<String, KekError> {
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
                return Err(KekError::Other(format!(
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
                return Err(KekError::Other(format!(
                    "Key Vault at {vault_host} asked for a token for {scope}, outside its own domain: refused (set azure.key_vault.verify_challenge_resource = false only for a test vault)"
                )));
            }
        }
        Ok(scope)
    }

    fn versioned(&self, kid: &str) -> Option<String> {
        kid.strip_prefix(&format!("{}/", self.key_url))
            .filter(|v| !v.is_empty() && !v.contains('/'))
            .map(str::to_string)
    }
}

#[async_trait]
impl Kek for KeyVaultKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn can_unwrap(&self) -> bool {
        // Only the vault knows whether this identity may unwrap; a refusal names it.
        true
    }

    fn matches(&self, kek_id: &str) -> bool {
        match (self.versioned(kek_id), &self.version) {
            (Some(v), Some(pinned)) => &v == pinned,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    async fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KekError> {
        // Get first: which version is newest, and whether the key can wrap at all.
        let bundle = self
            .call(reqwest::Method::GET, &self.id, None, "get")
            .await?;
        let bundle: KeyBundle = serde_json::from_slice(&bundle).map_err(|e| {
            KekError::Other(format!("Key Vault key {}: unreadable answer: {e}", self.id))
        })?;
        if !matches!(bundle.key.kty.as_str(), "RSA" | "RSA-HSM") {
            return Err(KekError::Other(format!(
                "Key Vault key {} is of type {}; redvault wraps with RSA-OAEP-256 and needs an RSA key",
                self.id, bundle.key.kty
            )));
        }
        if bundle.attributes.and_then(|a| a.enabled) == Some(false) {
            return Err(KekError::Other(format!(
                "Key Vault key {} is disabled",
                bundle.key.kid
            )));
        }
        if self.versioned(&bundle.key.kid).is_none() {
            return Err(KekError::Other(format!(
                "Key Vault returned key id {} for {}",
                bundle.key.kid, self.id
            )));
        }
        let body = serde_json::json!({
            "alg": ALG_RSA_OAEP_256,
            "value": b64url(dek.expose()),
        });
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("{}/wrapkey", bundle.key.kid),
                Some(body),
                "wrapKey",
            )
            .await?;
        let result: OperationResult = serde_json::from_slice(&answer)
            .map_err(|e| KekError::WrapFailed(format!("unreadable wrapkey answer: {e}")))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(result.value.trim_end_matches('='))
            .map_err(|e| KekError::WrapFailed(format!("wrapkey answer: {e}")))?;
        let kid = if self.versioned(&result.kid).is_some() {
            result.kid
        } else {
            bundle.key.kid
        };
        Ok(WrappedKey {
            kek_id: kid,
            alg: ALG_RSA_OAEP_256.into(),
            bytes,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, KekError> {
        if wrapped.alg != ALG_RSA_OAEP_256 {
            return Err(KekError::UnsupportedAlg(wrapped.alg.clone()));
        }
        if !self.matches(&wrapped.kek_id) {
            return Err(KekError::Other(format!(
                "the data key was wrapped by {}, not by {}",
                wrapped.kek_id, self.id
            )));
        }
        let body = serde_json::json!({
            "alg": ALG_RSA_OAEP_256,
            "value": b64url(&wrapped.bytes),
        });
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("{}/unwrapkey", wrapped.kek_id),
                Some(body),
                "unwrapKey",
            )
            .await?;
        let result: OperationResult =
            serde_json::from_slice(&answer).map_err(|_| KekError::UnwrapFailed {
                kek_id: wrapped.kek_id.clone(),
            })?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(result.value.trim_end_matches('='))
                .map_err(|_| KekError::UnwrapFailed {
                    kek_id: wrapped.kek_id.clone(),
                })?,
        );
        DataKey::from_bytes(&bytes).ok_or_else(|| KekError::UnwrapFailed {
            kek_id: wrapped.kek_id.clone(),
        })
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// reqwest's Display hides the cause (connection refused, certificate); show it.
fn error_chain(e: &dyn std::error::Error) -> String {
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
