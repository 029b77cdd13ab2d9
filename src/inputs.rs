//! What an import reads: an RDB byte stream for the scanner, from a plain RDB
//! file or blob (`.rdb`, `.rdb.gz`, `.rdb.zst`) here, or from a backup
//! generation (`backup::read`). Either way an [`Input`]: a blocking `Read` and,
//! for remote bytes, the task that fetches them, whose error is the real cause
//! when the stream ends early.

use crate::format::FormatError;
use crate::rdb::ChannelReader;
use crate::store::{Store, StoreContext, StoreError};
use std::io::Read;
use std::path::Path;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("cannot open {label}: {source}")]
    Open {
        label: String,
        source: std::io::Error,
    },
    #[error("{label}: {message}")]
    Read { label: String, message: String },
    #[error("{label}: plaintext SHA-256 {got} differs from the manifest's {expected}")]
    Digest {
        label: String,
        got: String,
        expected: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// An RDB byte stream, and the task that fetches and opens it (if remote).
pub struct Input {
    pub label: String,
    pub reader: Box<dyn Read + Send>,
    pub pump: Option<JoinHandle<Result<(), InputError>>>,
}

pub use crate::store::is_store_url;

/// Names of plain RDB files and blobs: `.rdb`, `.rdb.gz`, `.rdb.zst`.
pub fn is_rdb_name(name: &str) -> bool {
    [".rdb", ".rdb.gz", ".rdb.zst"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Decompresses by name: `.gz` and `.zst`; anything else is read as it is. The
/// decoder is made on the first read, on the scanner's blocking thread: gzip
/// reads its header when made, and that read must not block async code.
fn decompressed(name: &str, input: impl Read + Send + 'static) -> Box<dyn Read + Send> {
    Box::new(Lazy::Pending(
        name.to_string(),
        Box::new(std::io::BufReader::with_capacity(1 << 20, input)),
    ))
}

enum Lazy {
    Pending(String, Box<dyn Read + Send>),
    Ready(Box<dyn Read + Send>),
    /// The decoder could not be made: every read says why (never a clean end).
    Failed(std::io::ErrorKind, String),
}

impl Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Lazy::Pending(..) = self {
            let placeholder = Lazy::Failed(std::io::ErrorKind::Other, String::new());
            let Lazy::Pending(name, raw) = std::mem::replace(self, placeholder) else {
                unreachable!("checked to be pending")
            };
            *self = if name.ends_with(".gz") {
                Lazy::Ready(Box::new(std::io::BufReader::new(
                    flate2::read::GzDecoder::new(raw),
                )))
            } else if name.ends_with(".zst") {
                match zstd::stream::read::Decoder::with_buffer(std::io::BufReader::new(raw)) {
                    Ok(d) => Lazy::Ready(Box::new(std::io::BufReader::new(d))),
                    Err(e) => Lazy::Failed(e.kind(), format!("zstd decoder: {e}")),
                }
            } else {
                Lazy::Ready(raw)
            };
        }
        match self {
            Lazy::Ready(r) => r.read(buf),
            Lazy::Failed(kind, why) => Err(std::io::Error::new(*kind, why.clone())),
            Lazy::Pending(..) => unreachable!("made above"),
        }
    }
}

/// A plain RDB blob in storage (`az://container/dumps/x.rdb.gz`, `file:///d/x.rdb`).
pub async fn open_blob(url: &str, ctx: &StoreContext) -> Result<Input, InputError> {
    let (dir, name) = url
        .rsplit_once('/')
        .ok_or_else(|| InputError::Invalid(format!("{url}: no object name")))?;
    let store = Store::open_with(dir, None, ctx)?;
    let mut body =
        tokio_util::io::StreamReader::new(store.read_stream(&store.path(&[name])).await?);
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
    let label = url.to_string();
    let pump_label = label.clone();
    let pump = tokio::spawn(async move {
        pump_bytes(&mut body, &tx, &pump_label, |_| {}).await?;
        Ok(())
    });
    Ok(Input {
        reader: decompressed(name, ChannelReader::new(rx)),
        label,
        pump: Some(pump),
    })
}

/// A plain RDB file; `.gz` and `.zst` are decompressed.
pub fn open_file(path: &Path) -> Result<Input, InputError> {
    let label = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| InputError::Open {
        label: label.clone(),
        source,
    })?;
    Ok(Input {
        reader: decompressed(&label, f),
        label,
        pump: None,
    })
}

/// Copies a byte stream into the scanner's channel, showing each piece to
/// `seen`. Returns false if the scanner stopped reading first.
pub async fn pump_bytes<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    tx: &mpsc::Sender<bytes::Bytes>,
    label: &str,
    mut seen: impl FnMut(&[u8]),
) -> Result<bool, InputError> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).await.map_err(|e| InputError::Read {
            label: label.into(),
            message: e.to_string(),
        })?;
        if n == 0 {
            return Ok(true);
        }
        seen(&buf[..n]);
        if tx
            .send(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .is_err()
        {
            return Ok(false);
        }
    }
}

/// Drains an input (verify: every byte fetched, opened and checked); the
/// number of RDB bytes.
pub async fn drain(input: Input) -> Result<u64, InputError> {
    let Input {
        label,
        mut reader,
        pump,
    } = input;
    let read_label = label.clone();
    let drained =
        tokio::task::spawn_blocking(move || std::io::copy(&mut reader, &mut std::io::sink()))
            .await
            .map_err(|e| InputError::Read {
                label: label.clone(),
                message: e.to_string(),
            })
            .and_then(|r| {
                r.map_err(|e| InputError::Read {
                    label: read_label,
                    message: e.to_string(),
                })
            });
    if let Some(p) = pump {
        p.await.map_err(|e| InputError::Read {
            label: label.clone(),
            message: e.to_string(),
        })??;
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scheme_list_tells_stores_from_paths() {
        assert!(is_store_url("file:///tmp/x") && is_store_url("https://a/b/c"));
        assert!(!is_store_url("/tmp/dump.rdb") && !is_store_url("dump.rdb"));
        assert!(is_rdb_name("x.rdb.gz") && !is_rdb_name("x.tar"));
    }
}
