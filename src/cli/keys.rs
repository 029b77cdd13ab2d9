//! `redvault keys ...`

use super::args::KekArg;
use super::output::Output;
use crate::backup::{rewrap, status};
use crate::kek::generate_key_files;
use crate::settings::Config;
use crate::signing::{write_signer_files, SIGNING_KEY_FILE};
use crate::store::Store;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Where the backups are (`--from`, since `--to` names the new key here).
#[derive(Debug, Args)]
pub struct KeysStoreArgs {
    /// Storage URL: file:///dir, az://container, s3://bucket, gs://bucket.
    #[arg(long = "from", env = "REDVAULT_STORE")]
    pub store: Option<String>,
    /// Path prefix inside the store.
    #[arg(long, env = "REDVAULT_PREFIX")]
    pub prefix: Option<String>,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
}

impl KeysStoreArgs {
    fn open(&self, config: &Config) -> anyhow::Result<Store> {
        Ok(config.open_store(self.store.as_deref(), "--from", self.prefix.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a local RSA KEK: the private key (mode 0600) and its public half
    /// beside it (NAME.pub.pem), and the signing pair beside them
    /// (signing.pem, 0600, and signing.pub.pem) unless the folder has one.
    /// Backup hosts need the public KEK and the private signing key; restore
    /// hosts the private KEK and the public signing key.
    Generate {
        /// Where to write the private key (PEM, PKCS#8); never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Key size in bits (at least 2048).
        #[arg(long, default_value_t = crate::kek::DEFAULT_BITS)]
        bits: usize,
    },
    /// Generate a signing pair in DIR (signing.pem, mode 0600, and
    /// signing.pub.pem), e.g. beside an existing KEK.
    Signer {
        /// The folder to write into; existing files are never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the public half of a signing key, to copy to the hosts that
    /// restore (`--trust FILE`): for a key held in Key Vault
    /// (https://<vault>/keys/<name>[/<version>], an EC P-256 key), the only
    /// way to get it.
    SignerPublic {
        /// The signing key: a signing.pem file, or a Key Vault key URL.
        #[arg(long, env = "REDVAULT_SIGNING_KEY")]
        signing_key: String,
        /// Where to write the public key (SPKI PEM); never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-wrap every backup's data key under another KEK or key version
    /// (rotation). Only keyring.json objects are rewritten; data is not touched.
    Rewrap {
        #[command(flatten)]
        store: KeysStoreArgs,
        /// The KEK that opens the keyrings now (private key, or the Key Vault key).
        #[command(flatten)]
        kek: KekArg,
        /// The new KEK: a public or private key file, or a Key Vault key (its
        /// newest version unless the URL pins one).
        #[arg(long = "to")]
        to: String,
        /// Keep the old wrappings too (by default only the new one is kept).
        #[arg(long)]
        keep_old: bool,
    },
    /// Show which KEK (and Key Vault key version) wraps each generation's data key.
    Status {
        #[command(flatten)]
        store: KeysStoreArgs,
    },
}

pub async fn run(cmd: KeysCommand, config: &Config, out: &Output) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { out: path, bits } => {
            let g = generate_key_files(&path, bits)?;
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let signer = if dir.join(SIGNING_KEY_FILE).exists() {
                None
            } else {
                Some(write_signer_files(&dir)?)
            };
            out.summary(
                &format!(
                    "wrote private key {} (keep it secret, mode 0600) and public key {}; key id {}; {}",
                    g.private_path.display(),
                    g.public_path.display(),
                    g.id,
                    match &signer {
                        Some(s) => format!(
                            "signing key {} (0600; backup hosts) and {} (restore hosts); signer {}",
                            s.private_path.display(),
                            s.public_path.display(),
                            s.id
                        ),
                        None => format!(
                            "the signing key already in {} is kept",
                            dir.display()
                        ),
                    }
                ),
                serde_json::json!({
                    "command": "keys generate",
                    "private_key": g.private_path,
                    "public_key": g.public_path,
                    "key_id": g.id,
                    "bits": bits,
                    "signing_key": signer.as_ref().map(|s| &s.private_path),
                    "signing_public_key": signer.as_ref().map(|s| &s.public_path),
                    "signer": signer.as_ref().map(|s| &s.id),
                }),
            );
            Ok(())
        }
        KeysCommand::Signer { out: dir } => {
            let s = write_signer_files(&dir)?;
            out.summary(
                &format!(
                    "wrote signing key {} (keep it secret, mode 0600; backup hosts) and {} (copy to restore hosts); signer {}",
                    s.private_path.display(),
                    s.public_path.display(),
                    s.id
                ),
                serde_json::json!({
                    "command": "keys signer",
                    "signing_key": s.private_path,
                    "signing_public_key": s.public_path,
                    "signer": s.id,
                }),
            );
            Ok(())
        }
        KeysCommand::SignerPublic {
            signing_key,
            out: path,
        } => {
            let key = config.signer_public(&signing_key).await?;
            crate::text::write_new_file(&path, key.to_pem().as_bytes(), 0o644)
                .with_context(|| format!("cannot write {}", path.display()))?;
            out.summary(
                &format!(
                    "wrote the public key of {signing_key} to {} (copy it to the hosts that restore and pass --trust {}); signer {}",
                    path.display(),
                    path.display(),
                    key.id()
                ),
                serde_json::json!({
                    "command": "keys signer-public",
                    "signing_public_key": path,
                    "signer": key.id(),
                }),
            );
            Ok(())
        }
        KeysCommand::Rewrap {
            store,
            kek,
            to,
            keep_old,
        } => {
            let st = store.open(config)?;
            let from = kek.open(config)?;
            let to_kek = KekArg { kek: Some(to) }.open(config)?;
            let done = rewrap(
                &st,
                store.source.as_deref(),
                from.as_ref(),
                to_kek.as_ref(),
                keep_old,
                |r| {
                    if !out.json {
                        eprintln!(
                            "{}/{}: {}",
                            r.source,
                            r.generation,
                            if r.changed {
                                r.after.join(", ")
                            } else {
                                "already wrapped".into()
                            }
                        );
                    }
                },
            )
            .await
            .context("keys rewrap")?;
            let changed = done.iter().filter(|r| r.changed).count();
            out.summary(
                &format!(
                    "re-wrapped {changed} of {} keyrings under {}",
                    done.len(),
                    to_kek.id()
                ),
                serde_json::json!({
                    "command": "keys rewrap",
                    "to": to_kek.id(),
                    "keyrings": done,
                    "changed": changed,
                }),
            );
            Ok(())
        }
        KeysCommand::Status { store } => {
            let st = store.open(config)?;
            let rings = status(&st, store.source.as_deref())
                .await
                .context("keys status")?;
            if out.json {
                println!("{}", serde_json::to_string(&rings)?);
                return Ok(());
            }
            println!("{:<24} {:<38} KEK", "SOURCE", "GENERATION");
            for r in &rings {
                let keks = match &r.problem {
                    Some(p) => format!("unreadable: {p}"),
                    None => r.keks.join(", "),
                };
                println!("{:<24} {:<38} {}", r.source, r.generation, keks);
            }
            Ok(())
        }
    }
}
