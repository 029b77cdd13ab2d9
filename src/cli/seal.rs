//! `redvault seal` and `redvault unseal`: standalone sealed files.

use super::args::{KekArg, SealArgs};
use super::files::{open_input, PendingOutput};
use super::output::Output;
use super::progress::{bytes_bar, human_bytes};
use crate::data_key::DataKey;
use crate::format::ObjectKind;
use crate::keyring::Keyring;
use crate::opener::{Opener, RawHeader};
use crate::sealer::{default_parallelism, ObjectSpec, Sealer};
use crate::settings::Config;
use anyhow::{bail, Context};
use clap::Args;
use std::path::Path;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Args)]
pub struct SealFileArgs {
    #[command(flatten)]
    pub tuning: SealArgs,
    /// File to seal, or `-` for stdin.
    pub input: String,
    /// Sealed file to write, or `-` for stdout.
    pub output: String,
}

#[derive(Debug, Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    pub kek: KekArg,
    /// The keyring of a backup object; defaults to keyring.json beside IN.
    #[arg(long)]
    pub keyring: Option<String>,
    /// Sealed file, or `-` for stdin.
    pub input: String,
    /// Where to write the plaintext, or `-` for stdout.
    pub output: String,
}

pub async fn seal(args: SealFileArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let opts = config.seal_options(&args.tuning.tuning())?;
    let kek = args.tuning.kek.open(config)?;
    let dek = DataKey::generate();
    let keyring = Keyring::wrap(&dek, kek.as_ref()).await?;
    let (mut input, label, size) = open_input(&args.input).await?;
    let mut pending = PendingOutput::create(&args.output).await?;
    let name = Path::new(&args.output)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stdout".into());
    let spec = ObjectSpec {
        kind: ObjectKind::File,
        generation: String::new(),
        name,
        embedded_keyring: keyring.to_json(),
    };
    let started = Instant::now();
    let mut sealer = Sealer::new(pending.take_stream(), spec, &dek, &opts).await?;
    let bar = bytes_bar(size, out.progress());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {label}"))?;
        if n == 0 {
            break;
        }
        sealer.write(&buf[..n]).await?;
        bar.inc(n as u64);
    }
    let (summary, _) = sealer.finish().await?;
    bar.finish_and_clear();
    let stdout_busy = pending.is_stdout();
    pending.commit()?;
    let secs = started.elapsed().as_secs_f64();
    out.summary_to(
        &format!(
            "sealed {label} -> {}: {} in, {} stored, {} chunk(s), {secs:.2}s ({}/s), key {}",
            args.output,
            human_bytes(summary.plaintext_bytes),
            human_bytes(summary.stored_bytes),
            summary.chunks,
            human_bytes((summary.plaintext_bytes as f64 / secs.max(1e-9)) as u64),
            kek.id(),
        ),
        serde_json::json!({
            "command": "seal",
            "input": label,
            "output": args.output,
            "plaintext_bytes": summary.plaintext_bytes,
            "stored_bytes": summary.stored_bytes,
            "chunks": summary.chunks,
            "plaintext_sha256": hex::encode(summary.plaintext_sha256),
            "kek": kek.id(),
            "seconds": secs,
        }),
        stdout_busy,
    );
    Ok(())
}

pub async fn unseal(args: UnsealArgs, config: &Config, out: &Output) -> anyhow::Result<()> {
    let kek = args.kek.open(config)?;
    let (mut input, label, size) = open_input(&args.input).await?;
    let raw = RawHeader::read(&mut input, &label).await?;
    let dek = if raw.header.keyring.is_empty() {
        let path = match &args.keyring {
            Some(p) => p.clone(),
            None if args.input == "-" => {
                bail!("{label}: the object carries no keyring; pass --keyring PATH")
            }
            None => Path::new(&args.input)
                .with_file_name("keyring.json")
                .display()
                .to_string(),
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{label}: cannot read its keyring {path}"))?;
        Keyring::from_json(&bytes, &path)?
            .unwrap(kek.as_ref(), &path)
            .await?
    } else {
        Keyring::from_json(&raw.header.keyring, &label)?
            .unwrap(kek.as_ref(), &label)
            .await?
    };
    let mut pending = PendingOutput::create(&args.output).await?;
    let mut stream = pending.take_stream();
    let started = Instant::now();
    let mut opener = Opener::new(input, &raw, &dek, &label, default_parallelism())?;
    drop(dek);
    let bar = bytes_bar(size, out.progress());
    let mut stored = raw.bytes.len() as u64;
    while let Some(chunk) = opener.next_chunk().await? {
        stream
            .write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", args.output))?;
        stored += chunk.len() as u64;
        bar.set_position(stored.min(size.unwrap_or(u64::MAX)));
    }
    stream
        .shutdown()
        .await
        .with_context(|| format!("writing {}", args.output))?;
    drop(stream);
    bar.finish_and_clear();
    let stdout_busy = pending.is_stdout();
    pending.commit()?;
    let secs = started.elapsed().as_secs_f64();
    let n = opener.plaintext_bytes();
    out.summary_to(
        &format!(
            "unsealed {label} -> {}: {} in {secs:.2}s ({}/s)",
            args.output,
            human_bytes(n),
            human_bytes((n as f64 / secs.max(1e-9)) as u64)
        ),
        serde_json::json!({
            "command": "unseal",
            "input": label,
            "output": args.output,
            "plaintext_bytes": n,
            "seconds": secs,
        }),
        stdout_busy,
    );
    Ok(())
}
