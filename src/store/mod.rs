//! Storage from a URL, through object_store: `file:///dir`, `memory://`,
//! `az://container` (or `azure://`, `https://ACCOUNT.blob.core.windows.net/CONTAINER`,
//! or a path-style `https://HOST:PORT/ACCOUNT/CONTAINER` endpoint such as Azurite),
//! `s3://bucket`, `gs://bucket`. Credentials and endpoints come from the standard
//! environment variables of each backend (AZURE_*, AWS_*, GOOGLE_*) or, for Azure,
//! the `[azure]` settings, so tests can point every endpoint at loopback.
//!
//! `Store` is the only door to object_store: the verbs backups need (write,
//! read, list, delete, a streaming upload) and nothing else, so rules such as
//! "create-only" have one place to live. Paths come from `backup::layout`.

use crate::azure::{AzureSettings, Identity};
use crate::text::one_line;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// The URL schemes `Store::open_with` takes: the one list (a `--from` that is
/// none of these is a local path).
pub const SCHEMES: [&str; 11] = [
    "file", "memory", "az", "azure", "abfs", "abfss", "s3", "s3a", "gs", "https", "http",
];

/// The schemes that are Azure Blob (every https:// store is).
pub const AZURE_SCHEMES: [&str; 6] = ["az", "azure", "abfs", "abfss", "https", "http"];

fn scheme_of(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

/// Whether `s` is a store URL (else a local path).
pub fn is_store_url(s: &str) -> bool {
    scheme_of(s).is_some_and(|scheme| SCHEMES.contains(&scheme))
}

/// Whether `url` names Azure Blob (so the `[azure]` settings apply).
pub fn is_azure_url(url: &str) -> bool {
    scheme_of(url).is_some_and(|scheme| AZURE_SCHEMES.contains(&scheme))
}

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
    /// A create-only write found the object there already.
    #[error("storage {url}: {path} exists already; backups never overwrite an object")]
    Exists { url: String, path: String },
    /// A conditional replace found the object changed since it was read.
    #[error("storage {url}: {path} changed since it was read (another writer); it was not replaced: run again")]
    Changed { url: String, path: String },
    /// The object is not there (a missing manifest, a deleted segment).
    #[error("storage {url}: {path} does not exist")]
    NotFound { url: String, path: String },
    /// Any other failure of one operation on one object.
    #[error("storage {url}: cannot {op} {path}: {message}")]
    Op {
        url: String,
        op: &'static str,
        path: String,
        message: String,
    },
}

/// A store and the path prefix every object of this run goes under.
/// A remote store's object is read in ranges of this many bytes...
const READ_PIECE: u64 = 1 << 20;
/// ... this many in flight at once (memory: their product).
const READ_AHEAD: usize = 4;
/// A local file is read this many bytes at a time.
const LOCAL_READ: usize = 256 << 10;

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// A file:// store, read directly (see `read_stream`).
    local: Option<Arc<object_store::local::LocalFileSystem>>,
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

    /// Opens STORE with an optional extra prefix and the given context. Every
    /// URL form of one backend goes through the same builder.
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
        let mut local = None;
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
                let fs = Arc::new(fs);
                local = Some(fs.clone());
                (fs, Path::default())
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                Path::default(),
            ),
            "az" | "azure" | "abfs" | "abfss" | "https" | "http" => {
                let blob = AzureUrl::parse(&parsed).map_err(|r| bad(r.into()))?;
                let store = match &ctx.azure {
                    Some((settings, identity)) => {
                        // What the URL names wins over the config's defaults.
                        let mut settings = settings.clone();
                        if let Some(a) = &blob.account {
                            settings.storage.account = Some(a.clone());
                        }
                        if let Some(e) = &blob.endpoint {
                            settings.storage.endpoint = Some(e.clone());
                        }
                        crate::azure::blob::build(&blob.builder_url, &settings, identity.clone())
                            .map_err(|e| bad(e.to_string()))?
                    }
                    None => {
                        let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_url(&blob.builder_url);
                        if let Some(a) = &blob.account {
                            b = b.with_account(a);
                        }
                        if let Some(e) = &blob.endpoint {
                            b = b.with_endpoint(e.clone());
                        }
                        Arc::new(b.build().map_err(|e| bad(one_line(&e)))?)
                    }
                };
                (store, blob.prefix)
            }
            "s3" | "s3a" => {
                let b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(one_line(&e)))?;
                (Arc::new(b), url_path(&parsed, 0))
            }
            "gs" => {
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(one_line(&e)))?;
                (Arc::new(b), url_path(&parsed, 0))
            }
            other => return Err(bad(format!("unknown scheme {other}"))),
        };
        let mut parts: Vec<String> = base.parts().map(|p| p.as_ref().to_string()).collect();
        if let Some(p) = prefix {
            parts.extend(p.split('/').filter(|s| !s.is_empty()).map(String::from));
        }
        Ok(Store {
            inner,
            local,
            url: url.into(),
            prefix: Path::from_iter(parts),
        })
    }

    /// `prefix/a/b/...`; callers take their parts from `backup::layout`.
    pub fn path(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }

    fn op_err(&self, op: &'static str, path: &Path, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                url: self.url.clone(),
                path: path.to_string(),
            },
            e => StoreError::Op {
                url: self.url.clone(),
                op,
                path: path.to_string(),
                message: one_line(&e),
            },
        }
    }

    /// Writes a whole object only if none is there (create-only: if-none-match
    /// on Azure and S3, an exclusive link on a local folder). Every object of
    /// a backup is written this way; `StoreError::Exists` if it was there.
    pub async fn create(
        &self,
        path: &Path,
        bytes: impl Into<PutPayload>,
    ) -> Result<(), StoreError> {
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self.inner.put_opts(path, bytes.into(), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::Exists {
                url: self.url.clone(),
                path: path.to_string(),
            }),
            Err(e) => Err(self.op_err("create", path, e)),
        }
    }

    /// Reads a whole object with its version, for a later `replace`.
    pub async fn read_versioned(&self, path: &Path) -> Result<Versioned, StoreError> {
        let got = self
            .inner
            .get(path)
            .await
            .map_err(|e| self.op_err("read", path, e))?;
        let version = object_store::UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.op_err("read", path, e))?;
        Ok(Versioned { bytes, version })
    }

    /// Replaces an object only if it is still the version `read` was
    /// (if-match on Azure and S3). `StoreError::Changed` otherwise, and
    /// nothing is replaced. A local folder has no conditional write: there
    /// the version is compared just before the write, which closes the
    /// window to the time between two system calls on one host.
    pub async fn replace(
        &self,
        path: &Path,
        bytes: impl Into<PutPayload>,
        read: &Versioned,
    ) -> Result<(), StoreError> {
        let changed = || StoreError::Changed {
            url: self.url.clone(),
            path: path.to_string(),
        };
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Update(read.version.clone()),
            ..Default::default()
        };
        let payload = bytes.into();
        match self.inner.put_opts(path, payload.clone(), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => Err(changed()),
            Err(object_store::Error::NotImplemented { .. }) if self.url.starts_with("file://") => {
                let now = self
                    .inner
                    .head(path)
                    .await
                    .map_err(|e| self.op_err("read", path, e))?;
                if now.e_tag != read.version.e_tag || now.version != read.version.version {
                    return Err(changed());
                }
                self.write(path, payload).await
            }
            Err(object_store::Error::NotImplemented { .. }) => Err(StoreError::Op {
                url: self.url.clone(),
                op: "replace",
                path: path.to_string(),
                message: "this store has no conditional write (on S3: AWS_CONDITIONAL_PUT=etag), so it is not replaced unchecked".into(),
            }),
            Err(e) => Err(self.op_err("replace", path, e)),
        }
    }

    /// Writes a whole object, replacing any there: never a backup write
    /// (`keys rewrap` uses `replace`).
    pub async fn write(&self, path: &Path, bytes: impl Into<PutPayload>) -> Result<(), StoreError> {
        self.inner
            .put(path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.op_err("write", path, e))
    }

    /// Reads a whole object (small ones: manifests, keyrings, segments).
    pub async fn read(&self, path: &Path) -> Result<Bytes, StoreError> {
        let got = self
            .inner
            .get(path)
            .await
            .map_err(|e| self.op_err("read", path, e))?;
        got.bytes().await.map_err(|e| self.op_err("read", path, e))
    }

    /// Streams an object (a base snapshot): memory stays at one piece.
    pub async fn read_stream(
        &self,
        path: &Path,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, StoreError> {
        // A local file directly, LOCAL_READ at a time (object_store's own
        // stream reads 8 KiB at a time, each on a blocking thread).
        if let Some(fs) = &self.local {
            let file = fs
                .path_to_filesystem(path)
                .map_err(|e| self.op_err("read", path, e))?;
            let file = tokio::fs::File::open(&file).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::NotFound {
                        url: self.url.clone(),
                        path: path.to_string(),
                    }
                } else {
                    StoreError::Op {
                        url: self.url.clone(),
                        op: "read",
                        path: path.to_string(),
                        message: one_line(&e),
                    }
                }
            })?;
            return Ok(tokio_util::io::ReaderStream::with_capacity(file, LOCAL_READ).boxed());
        }
        // A remote one in ranges of READ_PIECE, READ_AHEAD of them in
        // flight: the store serves them side by side (one GET streams at
        // one connection's speed). Objects are never overwritten; the first
        // answer's ETag is asked of every range all the same, so a replaced
        // one is an error, never a mix.
        let meta = self
            .inner
            .head(path)
            .await
            .map_err(|e| self.op_err("read", path, e))?;
        let size = meta.size;
        let inner = self.inner.clone();
        let etag = meta.e_tag.clone();
        let owned = path.clone();
        let label = format!("{}/{}", self.url.trim_end_matches('/'), path);
        let fetch = move |r: std::ops::Range<u64>| {
            let inner = inner.clone();
            let path = owned.clone();
            let opts = object_store::GetOptions {
                if_match: etag.clone(),
                range: Some(object_store::GetRange::Bounded(r.clone())),
                ..Default::default()
            };
            let label = label.clone();
            async move {
                let failed = |e: object_store::Error| {
                    let why = match e {
                        object_store::Error::Precondition { .. } => {
                            "the object changed while it was read".to_string()
                        }
                        e => one_line(&e),
                    };
                    std::io::Error::other(format!("{label}: {why}"))
                };
                let got = inner.get_opts(&path, opts).await.map_err(failed)?;
                let bytes = got.bytes().await.map_err(failed)?;
                if bytes.len() as u64 != r.end - r.start {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "{label}: bytes {}-{} came back {} long",
                            r.start,
                            r.end,
                            bytes.len()
                        ),
                    ));
                }
                Ok(bytes)
            }
        };
        let mut ranges = (0..size.div_ceil(READ_PIECE))
            .map(move |i| i * READ_PIECE..((i + 1) * READ_PIECE).min(size));
        // The first piece alone: a reader that wants only the header (a
        // segment's statement) starts no read-ahead.
        let first = ranges.next();
        let fetch_rest = fetch.clone();
        let stream = futures::stream::iter(first).then(fetch).chain(
            futures::stream::iter(ranges)
                .map(fetch_rest)
                .buffered(READ_AHEAD),
        );
        Ok(stream.boxed())
    }

    /// Every object below `dir`, in no particular order.
    pub async fn list(&self, dir: &Path) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| self.op_err("list", dir, e))
    }

    /// Checks that the store answers and the container exists (one listing).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let mut first = self.inner.list(Some(&self.prefix));
        match first.next().await {
            Some(Err(e)) => Err(self.op_err("list", &self.prefix, e)),
            _ => Ok(()),
        }
    }

    /// Deletes one object; deleting what is not there is not an error.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.op_err("delete", path, e)),
        }
    }

    /// A streaming multipart upload to `path` holding at most `capacity` bytes
    /// in memory; visible only once shut down, gone if aborted.
    pub fn upload(&self, path: &Path, capacity: usize) -> BufWriter {
        BufWriter::with_capacity(self.inner.clone(), path.clone(), capacity)
    }
}

/// An object's bytes and the version they were read at.
pub struct Versioned {
    pub bytes: Bytes,
    version: object_store::UpdateVersion,
}

/// An Azure Blob URL in any of its forms, as object_store's builder takes it.
struct AzureUrl {
    /// `az://container` (or the URL as given for the az family).
    builder_url: String,
    account: Option<String>,
    endpoint: Option<String>,
    /// The path below the container.
    prefix: Path,
}

impl AzureUrl {
    /// The forms of an Azure Blob URL; the error is the reason it is not one.
    fn parse(u: &url::Url) -> Result<Self, &'static str> {
        if !u.scheme().starts_with("http") {
            return Ok(AzureUrl {
                builder_url: u.to_string(),
                account: None,
                endpoint: None,
                prefix: url_path(u, 0),
            });
        }
        let host = u.host_str().ok_or("no host")?;
        let segs: Vec<&str> = u
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if host.ends_with(".blob.core.windows.net") || host.ends_with(".dfs.core.windows.net") {
            // https://ACCOUNT[.privatelink].blob.core.windows.net/CONTAINER/prefix
            let account = host.split('.').next().unwrap_or_default();
            let container = segs.first().ok_or("no container in the URL path")?;
            return Ok(AzureUrl {
                builder_url: format!("az://{container}"),
                account: Some(account.to_string()),
                endpoint: None,
                prefix: url_path(u, 1),
            });
        }
        let is_local = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok();
        if !is_local {
            // Other hosts (sovereign clouds, OneLake): object_store's own reading
            // of the URL, the container first in the path.
            return Ok(AzureUrl {
                builder_url: u.to_string(),
                account: None,
                endpoint: None,
                prefix: url_path(u, 1),
            });
        }
        // Path style, as Azurite and endpoints by address serve it:
        // https://HOST:PORT/ACCOUNT/CONTAINER/prefix
        let (Some(account), Some(container)) = (segs.first(), segs.get(1)) else {
            return Err(
                "an https:// store is Azure Blob: https://ACCOUNT.blob.core.windows.net/CONTAINER or https://HOST:PORT/ACCOUNT/CONTAINER",
            );
        };
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        Ok(AzureUrl {
            builder_url: format!("az://{container}"),
            account: Some(account.to_string()),
            endpoint: Some(format!("{}://{host}{port}/{account}", u.scheme())),
            prefix: url_path(u, 2),
        })
    }
}

/// The part of the URL path after its first `skip` segments (the container or
/// bucket is the host, or is in the path).
fn url_path(u: &url::Url, skip: usize) -> Path {
    let segs: Vec<&str> = u
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    Path::from_iter(segs.into_iter().skip(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_url_forms_name_account_container_and_prefix() {
        let p = |s: &str| AzureUrl::parse(&url::Url::parse(s).unwrap()).unwrap();
        let a = p("https://acct.blob.core.windows.net/backups/prod/x");
        assert_eq!(a.builder_url, "az://backups");
        assert_eq!(a.account.as_deref(), Some("acct"));
        assert_eq!(a.endpoint, None);
        assert_eq!(a.prefix.as_ref(), "prod/x");
        let b = p("https://127.0.0.1:10000/devstoreaccount1/backups/prod");
        assert_eq!(b.builder_url, "az://backups");
        assert_eq!(b.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(
            b.endpoint.as_deref(),
            Some("https://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(b.prefix.as_ref(), "prod");
        let c = p("az://backups/prod");
        assert_eq!(c.prefix.as_ref(), "prod");
        assert!(
            AzureUrl::parse(&url::Url::parse("https://127.0.0.1:10000/only").unwrap()).is_err()
        );
    }
}
