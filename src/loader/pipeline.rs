//! One import: each source's bytes scanned on a blocking thread, entries handed
//! to the loader, and the first error (fetching, opening, scanning, loading)
//! reported with its real cause.

use super::sources::{OpenedSource, SourceError};
use super::{LoadError, LoadOptions, LoadStats, Loader};
use crate::rdb::{Entry, Item, RdbError, RdbScanner, ScanOptions};
use crate::replication::LinkOptions;
use crate::resp::RedisUrl;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{label}: {source}")]
    Rdb { label: String, source: RdbError },
    #[error(transparent)]
    Source(#[from] SourceError),
}

enum Msg {
    Version(u32),
    Entry(Entry),
    Function(Vec<u8>),
}

/// Loads every source in order into the target; `progress` sees the counts.
pub async fn import(
    url: &RedisUrl,
    link: &LinkOptions,
    opts: LoadOptions,
    sources: Vec<OpenedSource>,
    progress: &(dyn Fn(&LoadStats) + Sync),
) -> Result<LoadStats, ImportError> {
    let mut loader = Loader::start(url, link, opts).await?;
    for src in sources {
        let OpenedSource {
            label,
            reader,
            pump,
            ..
        } = src;
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
                    break; // the loader stopped; it reports why
                }
            }
            Ok(())
        });
        let mut n = 0u64;
        let loaded = async {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Version(v) => loader.begin_source(v)?,
                    Msg::Function(code) => loader.push_function(code).await?,
                    Msg::Entry(e) => {
                        loader.push(e).await?;
                        n += 1;
                        if n.is_multiple_of(1024) {
                            progress(loader.stats());
                        }
                    }
                }
            }
            Ok::<_, LoadError>(())
        }
        .await;
        drop(rx);
        let scanned = scanner.await.map_err(|e| ImportError::Rdb {
            label: label.clone(),
            source: RdbError::Io(e.to_string()),
        })?;
        let pumped = match pump {
            Some(p) => p.await.map_err(|e| SourceError(e.to_string()))?,
            None => Ok(()),
        };
        // The fetch/open error is the cause of a scanner that saw the stream end.
        pumped?;
        loaded?;
        scanned.map_err(|source| ImportError::Rdb {
            label: label.clone(),
            source,
        })?;
    }
    let stats = loader.finish().await?;
    progress(&stats);
    Ok(stats)
}
