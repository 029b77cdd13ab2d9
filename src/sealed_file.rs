//! Standalone sealed files (`redvault seal` / `unseal`): a byte stream sealed
//! under a fresh data key whose keyring travels in the object's header, and
//! opened back. An object of a backup carries no keyring: its keyring is the
//! generation's `keyring.json`, by default the one beside the file.

use crate::data_key::DataKey;
use crate::format::{FormatError, ObjectKind};
use crate::kek::{Kek, KekError};
use crate::keyring::{Keyring, KeyringError};
use crate::opener::{Opener, RawHeader};
use crate::sealer::{default_parallelism, ObjectSpec, SealOptions, SealSummary, Sealer};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum SealedFileError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error("reading {label}: {source}")]
    Read {
        label: String,
        source: std::io::Error,
    },
    #[error("writing {label}: {source}")]
    Write {
        label: String,
        source: std::io::Error,
    },
    #[error("{label}: the object carries no keyring; pass --keyring PATH")]
    NoKeyring { label: String },
    #[error("{label}: cannot read its keyring {path}: {source}")]
    KeyringFile {
        label: String,
        path: String,
        source: std::io::Error,
    },
}

/// Seals `input` into `output` as an object named `name`; `progress` sees
/// each piece's plaintext size. Returns the sealer's summary and the writer.
pub async fn seal_stream<R, W>(
    mut input: R,
    label: &str,
    output: W,
    name: &str,
    kek: &dyn Kek,
    opts: &SealOptions,
    mut progress: impl FnMut(u64),
) -> Result<(SealSummary, W), SealedFileError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let dek = DataKey::generate();
    let keyring = Keyring::wrap(&dek, kek).await?;
    let spec = ObjectSpec {
        kind: ObjectKind::File,
        generation: String::new(),
        name: name.into(),
        embedded_keyring: keyring.to_json(),
        attestation: vec![],
    };
    let mut sealer = Sealer::new(output, spec, &dek, opts).await?;
    drop(dek);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|source| SealedFileError::Read {
                label: label.into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        sealer.write(&buf[..n]).await?;
        progress(n as u64);
    }
    Ok(sealer.finish().await?)
}

/// Where an object's keyring is: its own header, else `keyring` if given, else
/// `keyring.json` beside `input_path` (None for stdin: then `--keyring` is needed).
pub fn keyring_path(input_path: Option<&Path>, keyring: Option<&Path>) -> Option<PathBuf> {
    keyring
        .map(Path::to_path_buf)
        .or_else(|| input_path.map(|p| p.with_file_name("keyring.json")))
}

/// Opens a sealed stream into `output`: the data key from the header's keyring
/// or from the keyring file, every chunk authenticated; `progress` sees the
/// stored bytes read so far. Returns the plaintext size.
pub async fn unseal_stream<R, W>(
    mut input: R,
    label: &str,
    mut output: W,
    output_label: &str,
    kek: &dyn Kek,
    keyring_file: Option<&Path>,
    mut progress: impl FnMut(u64),
) -> Result<u64, SealedFileError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let raw = RawHeader::read(&mut input, label).await?;
    let dek = if raw.header.keyring.is_empty() {
        let path = keyring_file.ok_or_else(|| SealedFileError::NoKeyring {
            label: label.into(),
        })?;
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SealedFileError::KeyringFile {
            label: label.into(),
            path: shown.clone(),
            source,
        })?;
        Keyring::from_json(&bytes, &shown)?
            .unwrap(kek, &shown)
            .await?
    } else {
        Keyring::from_json(&raw.header.keyring, label)?
            .unwrap(kek, label)
            .await?
    };
    let mut opener = Opener::new(input, &raw, &dek, label, default_parallelism())?;
    drop(dek);
    let write_err = |source| SealedFileError::Write {
        label: output_label.into(),
        source,
    };
    let mut stored = raw.bytes.len() as u64;
    while let Some(chunk) = opener.next_chunk().await? {
        output.write_all(&chunk).await.map_err(write_err)?;
        stored += chunk.len() as u64;
        progress(stored);
    }
    output.shutdown().await.map_err(write_err)?;
    Ok(opener.plaintext_bytes())
}
