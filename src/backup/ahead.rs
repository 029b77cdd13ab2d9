//! Segments fetched ahead of their reader: a remote store's round trips,
//! one or two a segment, would otherwise add up to more than the opening
//! and applying (thousands of segments in a day-long generation).

use super::layout::GenerationDir;
use super::plan::{open_fetched, SegmentRead};
use super::timeline::Segment;
use super::BackupError;
use crate::aof::KeyCache;
use crate::kek::Kek;
use crate::signing::Trust;
use crate::store::Store;
use std::collections::VecDeque;

/// Segments fetched ahead, in order, each by a task of its own (so a fetch
/// goes on while the reader opens and hands over the one before): at most
/// SEGMENTS_AHEAD of them, or BYTES_AHEAD of sealed bytes, in flight at once
/// (one at least, however large), so memory stays bounded whatever the
/// segments' size. Fetches still in flight when it is dropped are aborted.
pub struct SegmentsAhead<'a> {
    store: &'a Store,
    dir: &'a GenerationDir,
    rest: std::slice::Iter<'a, Segment>,
    in_flight: VecDeque<(&'a Segment, Fetch)>,
    in_flight_bytes: u64,
}

/// A fetch's task, aborted when dropped (the reader stopped, or its own
/// future was dropped while it waited on this one).
struct Fetch(tokio::task::JoinHandle<Result<bytes::Bytes, crate::store::StoreError>>);

impl Drop for Fetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const SEGMENTS_AHEAD: usize = 8;
const BYTES_AHEAD: u64 = 32 << 20;

impl<'a> SegmentsAhead<'a> {
    pub fn new(store: &'a Store, dir: &'a GenerationDir, segments: &'a [Segment]) -> Self {
        Self {
            store,
            dir,
            rest: segments.iter(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    async fn next(&mut self) -> Option<(&'a Segment, Result<bytes::Bytes, BackupError>)> {
        while self.in_flight.len() < SEGMENTS_AHEAD {
            let fits = |seg: &Segment| {
                self.in_flight.is_empty() || self.in_flight_bytes + seg.stored_bytes <= BYTES_AHEAD
            };
            match self.rest.as_slice().first() {
                Some(seg) if fits(seg) => {
                    let seg = self.rest.next().expect("peeked");
                    self.in_flight_bytes += seg.stored_bytes;
                    let store = self.store.clone();
                    let path = self.dir.segment(self.store, &seg.name);
                    let fetch = Fetch(tokio::spawn(async move { store.read(&path).await }));
                    self.in_flight.push_back((seg, fetch));
                }
                _ => break,
            }
        }
        let (seg, mut fetch) = self.in_flight.pop_front()?;
        self.in_flight_bytes -= seg.stored_bytes;
        let sealed = match (&mut fetch.0).await {
            Ok(read) => read.map_err(BackupError::from),
            // A panic in the fetch is a bug, not a damaged segment.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(BackupError::Invalid(format!(
                "{}: its fetch ended: {e}",
                self.dir.segment_label(&seg.name)
            ))),
        };
        Some((seg, sealed))
    }

    /// The next segment, fetched and then opened (its signature, place and
    /// records checked); opening is the caller's turn, one at a time, since
    /// `keys` caches the unwrapped data keys.
    pub async fn open_next(
        &mut self,
        kek: &dyn Kek,
        keys: &mut KeyCache,
        trust: &Trust,
    ) -> Option<(&'a Segment, Result<SegmentRead, BackupError>)> {
        let (seg, sealed) = self.next().await?;
        let read = match sealed {
            Ok(sealed) => open_fetched(&sealed, self.dir, seg, kek, keys, trust).await,
            Err(e) => Err(e),
        };
        Some((seg, read))
    }
}
