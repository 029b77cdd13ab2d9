//! Loading inputs into a target: each input's bytes scanned on a blocking
//! thread, entries and function libraries handed to the target, and the first
//! error (fetching, opening, scanning, loading) reported with its real cause.

use super::{LoadOptions, LoadStats, Target, TargetError};
use crate::inputs::{Input, InputError};
use crate::rdb::{Entry, Item, RdbError, RdbScanner, ScanOptions};
use crate::resp::{ConnectOptions, RedisUrl};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum LoadInputError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{label}: {source}")]
    Rdb { label: String, source: RdbError },
    #[error(transparent)]
    Input(#[from] InputError),
}

enum Msg {
    Version(u32),
    Entry(Entry),
    Function(Vec<u8>),
}

/// Loads every input in order into `target` (without finishing it: the
/// caller may apply commands next); `progress` sees the counts.
pub async fn load(
    target: &mut dyn Target,
    inputs: Vec<Input>,
    progress: &(dyn Fn(&LoadStats) + Sync),
) -> Result<(), LoadInputError> {
    for input in inputs {
        let Input {
            label,
            reader,
            pump,
        } = input;
        let (tx, mut rx) = mpsc::channel::<Msg>(1024);
        let scanner = tokio::task::spawn_blocking(move || -> Result<(), RdbError> {
            let mut s = RdbScanner::new(
                reader,
                ScanOptions {
                    keep_values: true,
                    ..ScanOptions::default()
                },
            )?;
            if tx.blocking_send(Msg::Version(s.version())).is_err() {
                return Ok(());
            }
            while let Some(item) = s.next()? {
                let msg = match item {
                    Item::Entry(e) => Msg::Entry(e),
                    Item::Function(code) => Msg::Function(code),
                    _ => continue,
                };
                if tx.blocking_send(msg).is_err() {
                    break; // the target stopped; it reports why
                }
            }
            Ok(())
        });
        let mut n = 0u64;
        let loaded = async {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Version(v) => target.begin(v)?,
                    Msg::Function(code) => target.push_function(code).await?,
                    Msg::Entry(e) => {
                        target.push(e).await?;
                        n += 1;
                        if n.is_multiple_of(1024) {
                            progress(target.stats());
                        }
                    }
                }
            }
            Ok::<_, TargetError>(())
        }
        .await;
        drop(rx);
        let scanned = scanner.await.map_err(|e| LoadInputError::Rdb {
            label: label.clone(),
            source: RdbError::Io(e.to_string()),
        })?;
        let pumped = match pump {
            Some(p) => p.await.map_err(|e| InputError::Read {
                label: label.clone(),
                message: e.to_string(),
            })?,
            None => Ok(()),
        };
        // The fetch/open error is the cause of a scanner that saw the stream end.
        pumped?;
        loaded?;
        scanned.map_err(|source| LoadInputError::Rdb {
            label: label.clone(),
            source,
        })?;
    }
    progress(target.stats());
    Ok(())
}

/// An import: connects to the Redis at `url`, loads every input in order and
/// waits for every reply; the final counts.
pub async fn import(
    url: &RedisUrl,
    link: &ConnectOptions,
    opts: LoadOptions,
    inputs: Vec<Input>,
    progress: &(dyn Fn(&LoadStats) + Sync),
) -> Result<LoadStats, LoadInputError> {
    let mut target = super::connect(url, link, opts).await?;
    load(target.as_mut(), inputs, progress).await?;
    Ok(target.finish().await?)
}
