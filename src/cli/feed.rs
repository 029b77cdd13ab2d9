//! `--via`: whether `import` and `restore` load the base through the
//! replication feed (the target loads the RDB itself) or the RESTORE loader,
//! and the one line that says why when `auto` cannot take the feed.

use crate::feed::{self, FeedError, FeedOptions, FeedStats, Feeding};
use crate::inputs::Input;
use crate::resp::{ConnectOptions, RedisUrl};
use clap::Args;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// The feed when the target can take it, else the RESTORE loader, saying why.
    Auto,
    /// The feed, or a one-line error saying why it cannot be used.
    Replication,
    /// The RESTORE loader: one RESTORE per key over pipelined connections.
    Restore,
}

#[derive(Debug, Args)]
pub struct ViaArgs {
    /// How the base reaches the target: `replication` (redvault serves it as
    /// the target's primary, and the target loads it at its own speed; the
    /// target must be empty and the user may run REPLICAOF: `acl print --role
    /// feed`), `restore` (RESTORE per key), or `auto`.
    #[arg(long, value_enum, default_value = "auto")]
    pub via: Via,
    /// Where the replication feed listens (HOST:PORT); default an ephemeral
    /// port on the address this host uses to reach the target.
    #[arg(long, env = "REDVAULT_FEED_LISTEN")]
    pub feed_listen: Option<String>,
    /// Seconds the target has to connect back to the feed.
    #[arg(long, default_value_t = 5)]
    pub feed_connect_timeout: u64,
    /// The feed's TLS certificate chain (PEM), for a target reached over
    /// TLS or with `tls-replication yes`: it must be one the target's
    /// `tls-ca-cert-file` trusts.
    #[arg(long, env = "REDVAULT_FEED_TLS_CERT", requires = "feed_tls_key")]
    pub feed_tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `--feed-tls-cert`.
    #[arg(long, env = "REDVAULT_FEED_TLS_KEY", requires = "feed_tls_cert")]
    pub feed_tls_key: Option<std::path::PathBuf>,
}

/// What became of the base.
pub enum Fed {
    /// The target loaded it through the feed and is still its replica:
    /// commands may follow down the stream; [`release`] must end it.
    Loaded(Box<Feeding>),
    /// It goes through the RESTORE loader.
    Restore(Vec<Input>),
}

/// Feeds `inputs` to the target when `--via` allows it and nothing rules it
/// out (`ruled_out`: a reason found by the caller, e.g. a conflict option),
/// only the entries `filter` accepts when one is given; else gives
/// the inputs back for the RESTORE loader, with one line on stderr saying
/// why under `auto`.
pub async fn try_feed(
    via: &ViaArgs,
    ruled_out: Option<String>,
    filter: Option<crate::target::Filter>,
    url: &RedisUrl,
    link: &ConnectOptions,
    mut inputs: Vec<Input>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Fed> {
    let fall_back = |why: String, inputs: Vec<Input>| -> anyhow::Result<Fed> {
        if via.via == Via::Replication {
            anyhow::bail!("--via replication: {why}");
        }
        eprintln!("redvault: note: loading with RESTORE, not replication: {why}");
        Ok(Fed::Restore(inputs))
    };
    if via.via == Via::Restore {
        return Ok(Fed::Restore(inputs));
    }
    if let Some(why) = ruled_out {
        return fall_back(why, inputs);
    }
    if inputs.len() != 1 {
        let why = format!(
            "the base is {} RDB streams (the feed serves one)",
            inputs.len()
        );
        return fall_back(why, inputs);
    }
    let input = inputs.pop().expect("one input");
    let (version, input) = feed::peek_version(input).await?;
    let tls = match (&via.feed_tls_cert, &via.feed_tls_key) {
        (Some(c), Some(k)) => Some(crate::resp::TlsServer::new(c, k)?),
        _ => None,
    };
    let prepared = match feed::prepare(url, link, version, tls.is_some()).await {
        Ok(p) => p,
        Err(FeedError::Unfit(why)) => return fall_back(why, vec![input]),
        Err(e) => return Err(e.into()),
    };
    let opts = FeedOptions {
        listen: via.feed_listen.clone(),
        connect_back: Duration::from_secs(via.feed_connect_timeout.max(1)),
        tls,
    };
    let attached = prepared.attach(&opts).await;
    let left_out = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fed = match attached {
        Ok(a) => {
            let input = match filter {
                Some(f) => feed::filtered(input, f, left_out.clone()),
                None => input,
            };
            a.load(input, progress).await.map(|mut f| {
                f.set_filtered(left_out.load(std::sync::atomic::Ordering::Relaxed));
                f
            })
        }
        Err(e @ FeedError::NoConnectBack { .. }) => {
            default_signals();
            return fall_back(e.to_string(), vec![input]);
        }
        Err(e) => Err(e),
    };
    match fed {
        Ok(f) => Ok(Fed::Loaded(Box::new(f))),
        Err(e) => {
            // The target was released on the way out.
            default_signals();
            Err(e.into())
        }
    }
}

/// Waits until the target applied what was streamed, and makes it a
/// primary again; the target's counts.
pub async fn release(f: Box<Feeding>) -> anyhow::Result<FeedStats> {
    let r = f.release().await;
    default_signals();
    Ok(r?)
}

/// The feed listened for Ctrl-C and SIGTERM (to release the target first);
/// from here on they end the process as they did before.
fn default_signals() {
    tokio::spawn(async {
        feed::interrupted().await;
        eprintln!("redvault: error: interrupted");
        std::process::exit(130);
    });
}
