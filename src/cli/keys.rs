//! `redvault keys ...`

use super::output::Output;
use crate::kek::generate_key_files;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a local RSA KEK: the private key (mode 0600) and its public half
    /// beside it (NAME.pub.pem). Hosts that only back up need only the public half.
    Generate {
        /// Where to write the private key (PEM, PKCS#8); never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Key size in bits (at least 2048).
        #[arg(long, default_value_t = crate::kek::DEFAULT_BITS)]
        bits: usize,
    },
}

pub fn run(cmd: KeysCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate { out: path, bits } => {
            let g = generate_key_files(&path, bits)?;
            out.summary(
                &format!(
                    "wrote private key {} (keep it secret, mode 0600) and public key {}; key id {}",
                    g.private_path.display(),
                    g.public_path.display(),
                    g.id
                ),
                serde_json::json!({
                    "command": "keys generate",
                    "private_key": g.private_path,
                    "public_key": g.public_path,
                    "key_id": g.id,
                    "bits": bits,
                }),
            );
            Ok(())
        }
    }
}
