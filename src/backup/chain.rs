//! Walking a generation's segments on their signed chain: each must name as
//! its previous link the segment that ends where it starts (the base for the
//! first), and the newest signed chain head must be reached. What does not
//! fit is a named error: a segment missing, replaced, reordered or moved in.

use super::head::Head;
use super::BackupError;
use crate::aof::chain::{Attested, GENESIS};
use std::collections::HashMap;

pub struct ChainWalk {
    /// The links of the verified segments ending at each offset (two when a
    /// restart cut the stream differently).
    links: HashMap<u64, Vec<[u8; 32]>>,
    /// The offset the verified segments reach.
    pub reached: u64,
    /// The receive time of the newest record seen (Unix ms).
    pub last_time_ms: u64,
}

impl ChainWalk {
    pub fn new(base_offset: u64) -> Self {
        ChainWalk {
            links: HashMap::from([(base_offset, vec![GENESIS])]),
            reached: base_offset,
            last_time_ms: 0,
        }
    }

    /// Admits a segment read in timeline order (`attested` is None only for
    /// an unsigned segment read with --allow-unsigned).
    pub fn admit(
        &mut self,
        label: &str,
        to: u64,
        attested: Option<&Attested>,
    ) -> Result<(), BackupError> {
        if let Some(a) = attested {
            let st = &a.statement;
            // After a hole (named as such by the timeline, and never replayed
            // across) there is nothing to link to.
            let after_hole = st.from > self.reached;
            if !after_hole && !self.has_link(st.from, &st.prev) {
                return Err(BackupError::Corrupt {
                    label: label.into(),
                    why: format!(
                        "it does not follow on: the segment it names as the one before it (ending at offset {}) is not here; a segment is missing, replaced, or from another generation",
                        st.from
                    ),
                });
            }
            self.links.entry(st.to).or_default().push(a.link);
            self.last_time_ms = self.last_time_ms.max(st.last_time_ms);
        }
        self.reached = self.reached.max(to);
        Ok(())
    }

    fn has_link(&self, at: u64, link: &[u8; 32]) -> bool {
        self.links.get(&at).is_some_and(|v| v.contains(link))
    }

    /// From names alone (this walk's `reached` is where the stored segments
    /// end): the head's offset must be reached.
    pub fn reached_names(&self, head: &Head, generation: &str) -> Result<(), BackupError> {
        if head.to > self.reached {
            return Err(missing_end(head, generation, self.reached));
        }
        Ok(())
    }

    /// After every segment was admitted: the newest signed head must be reached,
    /// by the very segment it names.
    pub fn check_end(&self, head: Option<&Head>, generation: &str) -> Result<(), BackupError> {
        let Some(h) = head else { return Ok(()) };
        if h.to > self.reached {
            return Err(missing_end(h, generation, self.reached));
        }
        if !h.link_bytes().is_some_and(|l| self.has_link(h.to, &l)) {
            return Err(BackupError::Corrupt {
                label: format!("{}/{generation}", h.source),
                why: format!(
                    "its signed chain head at offset {} names another segment than the one stored there",
                    h.to
                ),
            });
        }
        Ok(())
    }
}

fn missing_end(h: &Head, generation: &str, reached: u64) -> BackupError {
    BackupError::Corrupt {
        label: format!("{}/{generation}", h.source),
        why: format!(
            "segments are missing at the end: its signed chain head (written {}) says they reach offset {}, the segments here end at {reached}",
            h.written, h.to
        ),
    }
}
