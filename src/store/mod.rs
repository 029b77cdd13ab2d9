//! Storage from a URL, through object_store: `file:///dir`, `memory://`,
//! `az://container` (or `azure://`, `https://ACCOUNT.blob.core.windows.net/CONTAINER`),
//! `s3://bucket`, `gs://bucket`. Credentials and endpoints come from the standard
//! environment variables of each backend (AZURE_*, AWS_*, GOOGLE_*), so tests can
//! point every endpoint at loopback.

use crate::azure::{AzureSettings, Identity};
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;

/// How to authenticate to the stores that need more than the environment: with an
/// `[azure]` config, Azure Blob uses its settings (identity, endpoint, CA).
#[derive(Clone, Default)]
pub struct StoreContext {
    /// The settings, and the identity when storage authenticates with it.
    pub azure: Option<(AzureSettings, Option<Arc<Identity>>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("storage {url}: {reason}")]
    Unusable { url: String, reason: String },
}

/// A store and the path prefix every object of this run goes under.
#[derive(Clone)]
pub struct Store {
    pub inner: Arc<dyn ObjectStore>,
    /// Shown in messages; never holds a secret (URLs with credentials are refused).
    pub url: String,
    pub prefix: Path,
}

impl Store {
    /// Opens STORE with an optional extra prefix (`--prefix`), credentials from
    /// the environment.
    pub fn open(url: &str, prefix: Option<&str>) -> Result<Self, StoreError> {
        Self::open_with(url, prefix, &StoreContext::default())
    }

    /// Opens STORE with an optional extra prefix and the given context.
    pub fn open_with(
        url: &str,
        prefix: Option<&str>,
        ctx: &StoreContext,
    ) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.into(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if parsed.password().is_some() || parsed.query().is_some_and(|q| q.contains("sig=")) {
            return Err(bad(
                "credentials belong in the environment or config, not in the URL".into(),
            ));
        }
        let (inner, base): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("not a local path".into()))?;
                if !dir.is_dir() {
                    return Err(StoreError::Unusable {
                        url: url.into(),
                        reason: format!("directory {} does not exist", dir.display()),
                    });
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(fs), Path::default())
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                Path::default(),
            ),
            "az" | "azure" | "abfs" | "abfss" if ctx.azure.is_some() => {
                let (settings, identity) = ctx.azure.as_ref().expect("checked");
                let store =
                    crate::azure::blob::build(url, settings, identity.clone()).map_err(bad)?;
                (store, url_path(&parsed, false))
            }
            "az" | "azure" | "abfs" | "abfss" | "https" | "http" => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(one_line(&e)))?;
                (
                    Arc::new(b),
                    url_path(&parsed, parsed.scheme().starts_with("http")),
                )
            }
            "s3" | "s3a" => {
                let b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(one_line(&e)))?;
                (Arc::new(b), url_path(&parsed, false))
            }
            "gs" => {
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(one_line(&e)))?;
                (Arc::new(b), url_path(&parsed, false))
            }
            other => return Err(bad(format!("unknown scheme {other}"))),
        };
        let mut parts: Vec<String> = base.parts().map(|p| p.as_ref().to_string()).collect();
        if let Some(p) = prefix {
            parts.extend(p.split('/').filter(|s| !s.is_empty()).map(String::from));
        }
        Ok(Store {
            inner,
            url: url.into(),
            prefix: Path::from_iter(parts),
        })
    }

    /// `prefix/a/b/...`
    pub fn path(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.child(*part);
        }
        p
    }
}

/// The part of the URL path below the container or bucket. For `https://` Azure
/// URLs the first path segment is the container.
fn url_path(u: &url::Url, container_in_path: bool) -> Path {
    let segs: Vec<&str> = u
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let skip = usize::from(container_in_path);
    Path::from_iter(segs.into_iter().skip(skip))
}

/// object_store errors can span lines; keep messages to one.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}
