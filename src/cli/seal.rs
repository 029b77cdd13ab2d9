//! `redvault seal` and `redvault unseal`: standalone sealed files.

use super::args::{KekArg, SealArgs};
use super::files::{open_input, PendingOutput};
use super::output::Output;
use super::progress::{bytes_bar, human_bytes};
use crate::sealed_file::{keyring_path, seal_stream, unseal_stream};
use crate::settings::Config;
use clap::Args;
use std::path::Path;
use std::time::Instant;

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
    let (input, label, size) = open_input(&args.input).await?;
    let mut pending = PendingOutput::create(&args.output).await?;
    let name = Path::new(&args.output)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stdout".into());
    let started = Instant::now();
    let bar = bytes_bar(size, out.progress());
    let (summary, _) = seal_stream(
        input,
        &label,
        pending.take_stream(),
        &name,
        kek.as_ref(),
        &opts,
        |n| bar.inc(n),
    )
    .await?;
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
    let (input, label, size) = open_input(&args.input).await?;
    let keyring = keyring_path(
        (args.input != "-").then(|| Path::new(&args.input)),
        args.keyring.as_deref().map(Path::new),
    );
    let mut pending = PendingOutput::create(&args.output).await?;
    let started = Instant::now();
    let bar = bytes_bar(size, out.progress());
    let n = unseal_stream(
        input,
        &label,
        pending.take_stream(),
        &args.output,
        kek.as_ref(),
        keyring.as_deref(),
        |stored| bar.set_position(stored.min(size.unwrap_or(u64::MAX))),
    )
    .await?;
    bar.finish_and_clear();
    let stdout_busy = pending.is_stdout();
    pending.commit()?;
    let secs = started.elapsed().as_secs_f64();
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
