//! Local inputs and outputs of the file commands: a path or `-` for stdio.
//! Outputs are written to a temporary name and renamed when complete, so a failed
//! run never leaves a file that looks whole.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWrite};

pub type Input = Box<dyn AsyncRead + Unpin + Send>;
pub type OutputStream = Box<dyn AsyncWrite + Unpin + Send>;

/// Opens IN; returns the reader, a label for messages and the size if known.
pub async fn open_input(spec: &str) -> anyhow::Result<(Input, String, Option<u64>)> {
    if spec == "-" {
        return Ok((Box::new(tokio::io::stdin()), "stdin".into(), None));
    }
    let f = tokio::fs::File::open(spec)
        .await
        .with_context(|| format!("cannot open {spec}"))?;
    let size = f.metadata().await.ok().map(|m| m.len());
    Ok((Box::new(f), spec.to_string(), size))
}

/// An output that becomes visible under its name only on `commit`.
pub struct PendingOutput {
    pub stream: Option<OutputStream>,
    stdout: bool,
    target: Option<(PathBuf, PathBuf)>,
}

impl PendingOutput {
    pub async fn create(spec: &str) -> anyhow::Result<Self> {
        if spec == "-" {
            return Ok(PendingOutput {
                stream: Some(Box::new(tokio::io::stdout())),
                stdout: true,
                target: None,
            });
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            anyhow::bail!("{spec} is a directory; give a file name");
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            if !meta.is_file() {
                // A device or a pipe (/dev/null, a FIFO): written in place.
                let f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .await
                    .with_context(|| format!("cannot open {spec}"))?;
                return Ok(PendingOutput {
                    stream: Some(Box::new(f)),
                    stdout: false,
                    target: None,
                });
            }
        }
        let tmp = temp_name(&path);
        // 0600 whatever the umask: the output may be plaintext.
        let f = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(PendingOutput {
            stream: Some(Box::new(f)),
            stdout: false,
            target: Some((tmp, path)),
        })
    }

    /// True when the data goes to stdout (where JSON summaries must not go).
    pub fn is_stdout(&self) -> bool {
        self.stdout
    }

    pub fn take_stream(&mut self) -> OutputStream {
        self.stream.take().expect("stream taken once")
    }

    /// Moves the finished file into place, on disk (file and folder synced)
    /// before it is called done.
    pub fn commit(mut self) -> anyhow::Result<()> {
        if let Some((tmp, path)) = self.target.take() {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), path.display())
            })?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        if let Some((tmp, _)) = &self.target {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.redvault-tmp-{}", std::process::id()))
}
