//! Azure Blob storage through object_store, authenticated by the identity layer
//! (bearer tokens from a credential-provider adapter), or by an account key or SAS
//! for hosts without an identity. Errors that usually mean a missing role
//! assignment, a firewall rule or a missing container are explained in one line.

use super::identity::Identity;
use super::{AzureSettings, STORAGE_SCOPE};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::azure::{AzureCredential, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::{
    CopyOptions, CredentialProvider, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use std::sync::Arc;

/// Hands the identity's storage tokens to object_store, which asks before every request.
#[derive(Debug)]
struct TokenProvider {
    identity: Arc<Identity>,
}

#[async_trait]
impl CredentialProvider for TokenProvider {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let token =
            self.identity
                .token(STORAGE_SCOPE)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "MicrosoftAzure",
                    source: Box::new(e),
                })?;
        Ok(Arc::new(AzureCredential::BearerToken(
            token.secret.as_str().to_string(),
        )))
    }
}

/// Why the Blob client could not be built (a setting, a file, the environment).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BlobConfigError(String);

impl From<&str> for BlobConfigError {
    fn from(s: &str) -> Self {
        BlobConfigError(s.into())
    }
}

impl From<String> for BlobConfigError {
    fn from(s: String) -> Self {
        BlobConfigError(s)
    }
}

/// Builds the store for an `az://container/...` URL from the `[azure]` settings.
pub fn build(
    url: &str,
    settings: &AzureSettings,
    identity: Option<Arc<Identity>>,
) -> Result<Arc<dyn ObjectStore>, BlobConfigError> {
    let mut b = MicrosoftAzureBuilder::from_env().with_url(url);
    let account = settings
        .storage
        .account
        .clone()
        .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT_NAME").ok());
    if let Some(a) = &account {
        b = b.with_account(a);
    }
    if let Some(e) = &settings.storage.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if let Some(ca) = &settings.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
        let cert = object_store::Certificate::from_pem(&pem)
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        b = b.with_client_options(object_store::ClientOptions::new().with_root_certificate(cert));
    }
    let auth = settings.storage.auth.as_deref().unwrap_or("identity");
    let who = match auth {
        "identity" => {
            let identity =
                identity.ok_or("azure.storage.auth is identity but no identity is set up")?;
            b = b.with_credentials(Arc::new(TokenProvider {
                identity: identity.clone(),
            }));
            Who::Identity(identity)
        }
        "key" => {
            if let Some(p) = &settings.storage.account_key_file {
                let key = crate::text::read_secret_file(p).map_err(|e| {
                    format!(
                        "cannot read azure.storage.account_key_file {}: {e}",
                        p.display()
                    )
                })?;
                b = b.with_access_key(key.as_str());
            } else if std::env::var("AZURE_STORAGE_ACCOUNT_KEY").is_err() {
                return Err(
                    "azure.storage.auth is key but neither azure.storage.account_key_file nor AZURE_STORAGE_ACCOUNT_KEY is set".into(),
                );
            }
            tracing::warn!("authenticating to storage with the account key: a managed identity is the stronger choice");
            Who::Named("the account key".into())
        }
        "sas" => {
            let sas = match &settings.storage.sas_token_file {
                Some(p) => crate::text::read_secret_file(p).map_err(|e| {
                    format!("cannot read azure.storage.sas_token_file {}: {e}", p.display())
                })?,
                None => zeroize::Zeroizing::new(std::env::var("AZURE_STORAGE_SAS_TOKEN").map_err(
                    |_| "azure.storage.auth is sas but neither azure.storage.sas_token_file nor AZURE_STORAGE_SAS_TOKEN is set",
                )?),
            };
            let pairs = url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect::<Vec<_>>();
            b = b.with_sas_authorization(pairs);
            tracing::warn!("authenticating to storage with a SAS token: a managed identity is the stronger choice");
            Who::Named("the SAS token".into())
        }
        other => {
            return Err(format!("azure.storage.auth {other:?}: use identity, key or sas").into())
        }
    };
    let inner: MicrosoftAzure = b.build().map_err(|e| crate::text::one_line(&e))?;
    Ok(Arc::new(ExplainingStore {
        inner: Arc::new(inner),
        explain: Arc::new(Explainer {
            who,
            account: account.unwrap_or_else(|| "?".into()),
            url: url.to_string(),
        }),
    }))
}

#[derive(Debug)]
enum Who {
    Identity(Arc<Identity>),
    Named(String),
}

#[derive(Debug)]
struct Explainer {
    who: Who,
    account: String,
    url: String,
}

impl Explainer {
    fn who(&self) -> String {
        match &self.who {
            Who::Identity(i) => i.name_with_principal(),
            Who::Named(n) => n.clone(),
        }
    }

    /// Rewrites the errors whose cause is usually configuration; keeps the rest
    /// (NotFound among them) as they are.
    fn map(&self, e: object_store::Error) -> object_store::Error {
        if matches!(e, object_store::Error::NotFound { .. }) {
            return e;
        }
        let text = e.to_string();
        let why = if text.contains("AuthorizationPermissionMismatch") {
            format!(
                "{} lacks 'Storage Blob Data Contributor' on account {}",
                self.who(),
                self.account
            )
        } else if text.contains("AuthorizationFailure") {
            format!(
                "account {} refused the request (AuthorizationFailure): its firewall or network rules deny this host, or {} has no access",
                self.account,
                self.who()
            )
        } else if text.contains("ContainerNotFound") {
            format!(
                "the container of {} does not exist in account {}",
                self.url, self.account
            )
        } else if text.contains("InvalidAuthenticationInfo")
            || text.contains("AuthenticationFailed")
        {
            format!(
                "account {} rejected the credentials of {}",
                self.account,
                self.who()
            )
        } else {
            return e;
        };
        object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: why.into(),
        }
    }
}

/// object_store's Azure client with errors explained.
#[derive(Debug)]
struct ExplainingStore {
    inner: Arc<dyn ObjectStore>,
    explain: Arc<Explainer>,
}

impl std::fmt::Display for ExplainingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for ExplainingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await;
        r.map_err(|e| self.explain.map(e))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self
            .inner
            .put_multipart_opts(location, opts)
            .await
            .map_err(|e| self.explain.map(e))?;
        Ok(Box::new(ExplainingUpload {
            inner: upload,
            explain: self.explain.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let r = self.inner.get_opts(location, options).await;
        r.map_err(|e| self.explain.map(e))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let explain = self.explain.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| r.map_err(|e| explain.map(e)))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let explain = self.explain.clone();
        self.inner
            .list(prefix)
            .map(move |r| r.map_err(|e| explain.map(e)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let r = self.inner.list_with_delimiter(prefix).await;
        r.map_err(|e| self.explain.map(e))
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let r = self.inner.copy_opts(from, to, options).await;
        r.map_err(|e| self.explain.map(e))
    }
}

#[derive(Debug)]
struct ExplainingUpload {
    inner: Box<dyn MultipartUpload>,
    explain: Arc<Explainer>,
}

#[async_trait]
impl MultipartUpload for ExplainingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let explain = self.explain.clone();
        self.inner
            .put_part(data)
            .map(move |r| r.map_err(|e| explain.map(e)))
            .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let r = self.inner.complete().await;
        r.map_err(|e| self.explain.map(e))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let r = self.inner.abort().await;
        r.map_err(|e| self.explain.map(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explainer() -> Explainer {
        Explainer {
            who: Who::Named("managed identity (system-assigned)".into()),
            account: "prodbackups".into(),
            url: "az://backups".into(),
        }
    }

    fn generic(body: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: format!("Client error with status 403 Forbidden: {body}").into(),
        }
    }

    /// Azurite grants every valid token, so the role and firewall answers of the
    /// real service (their error codes) are checked here.
    #[test]
    fn storage_refusals_name_the_cause() {
        let e = explainer();
        let role = e.map(generic("<Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized to perform this operation using this permission.</Message></Error>"));
        assert!(role.to_string().contains(
            "managed identity (system-assigned) lacks 'Storage Blob Data Contributor' on account prodbackups"
        ), "{role}");
        let fw = e.map(generic("<Error><Code>AuthorizationFailure</Code></Error>"));
        assert!(
            fw.to_string()
                .contains("firewall or network rules deny this host"),
            "{fw}"
        );
        let nf = e.map(object_store::Error::NotFound {
            path: "x".into(),
            source: "ContainerNotFound".into(),
        });
        assert!(
            matches!(nf, object_store::Error::NotFound { .. }),
            "NotFound must stay NotFound"
        );
    }
}
