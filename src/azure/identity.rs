//! The identity: which credential gets tokens, chosen once per process. Tokens are
//! cached by azure_identity and refreshed five minutes before they expire.

use super::claims::Claims;
use super::transport::{is_loopback, EndpointOverride};
use super::AzureSettings;
use crate::text::one_line;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport, Url};
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use std::sync::Arc;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("azure config: {0}")]
    Config(String),
    #[error("{identity}: cannot get a token for {scope}: {message}")]
    Token {
        identity: String,
        scope: String,
        message: String,
    },
    #[error("managed identity: this host has no system-assigned identity and no user-assigned one is configured (set azure.client_id, or list azure.user_assigned)")]
    NoManagedIdentity,
}

/// An access token. The secret is zeroized on drop and never printed.
#[derive(Clone)]
pub struct Token {
    pub secret: Zeroizing<String>,
    /// Unix seconds.
    pub expires_on: i64,
    pub claims: Claims,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_on", &self.expires_on)
            .field("oid", &self.claims.oid)
            .finish_non_exhaustive()
    }
}

/// One candidate credential and how to name it in logs and messages (ids only).
struct Candidate {
    credential: Arc<dyn TokenCredential>,
    name: String,
    /// A managed identity that may simply not exist on this host: if it answers
    /// "not assigned", the next candidate is tried.
    may_be_absent: bool,
}

pub struct Identity {
    candidates: Vec<Candidate>,
    chosen: OnceCell<usize>,
    /// The object id of the last token, to name the principal in messages.
    principal: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Identity {
    /// Builds the credential(s) the settings ask for. Nothing is requested yet.
    pub fn new(s: &AzureSettings) -> Result<Self, IdentityError> {
        let client_options = client_options(s)?;
        let kind = s.credential.as_deref().unwrap_or("managed-identity");
        let azure = |e: azure_core::Error| IdentityError::Config(one_line(&e));
        let candidates = match kind {
            "managed-identity" => {
                let pinned = pinned_user_assigned(s)?;
                let mut ids: Vec<Option<UserAssignedId>> = Vec::new();
                match pinned {
                    Some(id) => ids.push(Some(id)),
                    None => {
                        // The managed services' rule: system-assigned if the host
                        // has one, else the first configured user-assigned one.
                        ids.push(None);
                        for spec in &s.user_assigned {
                            ids.push(Some(parse_user_assigned(spec)?));
                        }
                    }
                }
                ids.into_iter()
                    .map(|id| {
                        let name = match &id {
                            None => "managed identity (system-assigned)".to_string(),
                            Some(id) => format!("managed identity (user-assigned, {})", show_id(id)),
                        };
                        let credential = ManagedIdentityCredential::new(Some(
                            ManagedIdentityCredentialOptions {
                                user_assigned_id: id.clone(),
                                client_options: client_options.clone(),
                            },
                        ))
                        .map_err(azure)?;
                        Ok(Candidate {
                            credential,
                            name,
                            may_be_absent: id.is_none(),
                        })
                    })
                    .collect::<Result<Vec<_>, IdentityError>>()?
            }
            "workload-identity" => {
                let credential = WorkloadIdentityCredential::new(Some(
                    WorkloadIdentityCredentialOptions {
                        credential_options: ClientAssertionCredentialOptions {
                            client_options: client_options.clone(),
                        },
                        client_id: s.client_id.clone(),
                        tenant_id: s.tenant_id.clone(),
                        token_file_path: s.token_file.clone(),
                    },
                ))
                .map_err(azure)?;
                vec![Candidate {
                    credential,
                    name: format!(
                        "workload identity (client id {})",
                        s.client_id.as_deref().unwrap_or("from AZURE_CLIENT_ID")
                    ),
                    may_be_absent: false,
                }]
            }
            "azure-cli" => vec![Candidate {
                credential: AzureCliCredential::new(None).map_err(azure)?,
                name: "Azure CLI login".into(),
                may_be_absent: false,
            }],
            "client-secret" => {
                let tenant = s
                    .tenant_id
                    .clone()
                    .or_else(|| std::env::var("AZURE_TENANT_ID").ok())
                    .ok_or_else(|| IdentityError::Config("client-secret needs azure.tenant_id or AZURE_TENANT_ID".into()))?;
                let client_id = s
                    .client_id
                    .clone()
                    .or_else(|| std::env::var("AZURE_CLIENT_ID").ok())
                    .ok_or_else(|| IdentityError::Config("client-secret needs azure.client_id or AZURE_CLIENT_ID".into()))?;
                // The secret from a file or the environment: never in a config file.
                let secret = match &s.client_secret_file {
                    Some(p) => crate::text::read_secret_file(p)
                        .map_err(|e| IdentityError::Config(format!("cannot read azure.client_secret_file {}: {e}", p.display())))?
                        .to_string(),
                    None => std::env::var("AZURE_CLIENT_SECRET").map_err(|_| {
                        IdentityError::Config("client-secret needs azure.client_secret_file (a file holding it, e.g. a systemd credential) or AZURE_CLIENT_SECRET in the environment".into())
                    })?,
                };
                tracing::warn!("using a client secret: a managed or workload identity keeps no secret on the host");
                let name = format!("service principal (client id {client_id})");
                let credential = ClientSecretCredential::new(
                    &tenant,
                    client_id,
                    Secret::new(secret),
                    Some(ClientSecretCredentialOptions {
                        client_options: client_options.clone(),
                    }),
                )
                .map_err(azure)?;
                vec![Candidate {
                    credential,
                    name,
                    may_be_absent: false,
                }]
            }
            other => {
                return Err(IdentityError::Config(format!(
                    "unknown credential {other:?}: use managed-identity, workload-identity, azure-cli or client-secret"
                )))
            }
        };
        Ok(Identity {
            candidates,
            chosen: OnceCell::new(),
            principal: std::sync::Mutex::new(None),
        })
    }

    /// The chosen identity's name, or what is configured before the first token.
    pub fn name(&self) -> String {
        match self.chosen.get() {
            Some(&i) => self.candidates[i].name.clone(),
            None => self
                .candidates
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", or "),
        }
    }

    /// Whether a token was asked for (the identity was used, not only set up).
    pub fn used(&self) -> bool {
        self.chosen.get().is_some()
    }

    /// The name, with the principal's object id once a token has shown it.
    pub fn name_with_principal(&self) -> String {
        match self.principal.lock().ok().and_then(|p| p.clone()) {
            Some(oid) => format!("{} [object id {oid}]", self.name()),
            None => self.name(),
        }
    }

    /// A token for `scope` (e.g. STORAGE_SCOPE). The first call chooses the identity.
    pub async fn token(&self, scope: &str) -> Result<Token, IdentityError> {
        let index = *self.chosen.get_or_try_init(|| self.choose(scope)).await?;
        self.fetch(index, scope).await
    }

    async fn choose(&self, scope: &str) -> Result<usize, IdentityError> {
        for (i, c) in self.candidates.iter().enumerate() {
            match c.credential.get_token(&[scope], None).await {
                Ok(_) => {
                    tracing::info!(identity = %c.name, "azure identity chosen");
                    return Ok(i);
                }
                Err(e) if c.may_be_absent && not_assigned(&e) => {
                    tracing::info!(identity = %c.name, "not on this host; trying the next identity");
                }
                Err(e) => return Err(token_error(&c.name, scope, &e)),
            }
        }
        Err(IdentityError::NoManagedIdentity)
    }

    async fn fetch(&self, index: usize, scope: &str) -> Result<Token, IdentityError> {
        let c = &self.candidates[index];
        let t = c
            .credential
            .get_token(&[scope], None)
            .await
            .map_err(|e| token_error(&c.name, scope, &e))?;
        let secret = Zeroizing::new(t.token.secret().to_string());
        let claims = Claims::of(&secret);
        if let (Some(oid), Ok(mut p)) = (&claims.oid, self.principal.lock()) {
            *p = Some(oid.clone());
        }
        Ok(Token {
            secret,
            expires_on: t.expires_on.unix_timestamp(),
            claims,
        })
    }
}

fn token_error(name: &str, scope: &str, e: &azure_core::Error) -> IdentityError {
    IdentityError::Token {
        identity: name.to_string(),
        scope: scope.to_string(),
        message: one_line(e),
    }
}

/// IMDS answers 400 "Identity not found" for an identity the host does not have.
fn not_assigned(e: &azure_core::Error) -> bool {
    let text = e.to_string();
    e.http_status().map(u16::from) == Some(400)
        || text.contains("has not been assigned")
        || text.contains("Identity not found")
}

fn pinned_user_assigned(s: &AzureSettings) -> Result<Option<UserAssignedId>, IdentityError> {
    let given: Vec<UserAssignedId> = [
        s.client_id.clone().map(UserAssignedId::ClientId),
        s.object_id.clone().map(UserAssignedId::ObjectId),
        s.resource_id.clone().map(UserAssignedId::ResourceId),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(IdentityError::Config(
            "set only one of client_id, object_id, resource_id".into(),
        ));
    }
    Ok(given.into_iter().next())
}

fn parse_user_assigned(spec: &str) -> Result<UserAssignedId, IdentityError> {
    match spec.split_once('=') {
        Some(("client_id", v)) => Ok(UserAssignedId::ClientId(v.into())),
        Some(("object_id", v)) => Ok(UserAssignedId::ObjectId(v.into())),
        Some(("resource_id", v)) => Ok(UserAssignedId::ResourceId(v.into())),
        _ => Err(IdentityError::Config(format!(
            "user_assigned entry {spec:?}: write client_id=..., object_id=... or resource_id=..."
        ))),
    }
}

fn show_id(id: &UserAssignedId) -> String {
    match id {
        UserAssignedId::ClientId(v) => format!("client id {v}"),
        UserAssignedId::ObjectId(v) => format!("object id {v}"),
        UserAssignedId::ResourceId(v) => format!("resource id {v}"),
        _ => "other id".into(),
    }
}

fn client_options(s: &AzureSettings) -> Result<ClientOptions, IdentityError> {
    let parse = |what: &str, v: &Option<String>| -> Result<Option<Url>, IdentityError> {
        v.as_deref()
            .map(|u| {
                let url = Url::parse(u)
                    .map_err(|e| IdentityError::Config(format!("{what} {u:?}: {e}")))?;
                if !is_loopback(&url) && url.scheme() != "https" {
                    return Err(IdentityError::Config(format!(
                        "{what} {u:?}: only https, or http on loopback"
                    )));
                }
                Ok(url)
            })
            .transpose()
    };
    let token_endpoint = parse("token_endpoint", &s.token_endpoint)?;
    let authority = parse("authority_host", &s.authority_host)?;
    let mut options = ClientOptions::default();
    if token_endpoint.is_some() || authority.is_some() {
        options.transport = Some(Transport::new(Arc::new(EndpointOverride::new(
            token_endpoint,
            authority,
        ))));
    }
    Ok(options)
}
