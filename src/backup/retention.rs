//! Retention: keep the last N complete generations and/or those newer than a
//! duration; the newest complete generation is never deleted. Incomplete
//! generations older than the newest complete one are failed runs and go too.

use super::layout::{generation_time, MANIFEST};
use super::list::{list, GenerationInfo};
use super::BackupError;
use crate::signing::Trust;
use crate::store::Store;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub keep_last: Option<usize>,
    pub keep_within: Option<Duration>,
}

impl Retention {
    /// The policy from its two settings as the user writes them (`keep_within`
    /// as a duration such as `7d` or `36h`): the one parser for flags and config.
    pub fn parse(keep_last: Option<usize>, keep_within: Option<&str>) -> Result<Self, BackupError> {
        Ok(Retention {
            keep_last,
            keep_within: keep_within
                .map(|w| {
                    humantime::parse_duration(w)
                        .map_err(|e| BackupError::Invalid(format!("keep_within {w:?}: {e}")))
                })
                .transpose()?,
        })
    }

    pub fn is_set(&self) -> bool {
        self.keep_last.is_some() || self.keep_within.is_some()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Pruned {
    pub source: String,
    pub generation: String,
    pub complete: bool,
    pub objects: usize,
}

/// Which generations the policy deletes, per source.
pub fn select(
    gens: &[GenerationInfo],
    policy: &Retention,
    now: std::time::SystemTime,
) -> Vec<GenerationInfo> {
    let mut doomed = vec![];
    let mut sources: Vec<&str> = gens.iter().map(|g| g.source.as_str()).collect();
    sources.dedup();
    for source in sources {
        let mut mine: Vec<&GenerationInfo> = gens.iter().filter(|g| g.source == source).collect();
        mine.sort_by(|a, b| b.generation.cmp(&a.generation)); // newest first
        let Some(newest_complete) = mine.iter().position(|g| g.complete) else {
            continue; // nothing complete: keep everything
        };
        let mut complete_seen = 0;
        for (i, g) in mine.iter().enumerate() {
            if !g.complete {
                // Only a folder with no manifest at all is a failed run; one
                // whose manifest is there but unreadable or not its own is
                // never deleted on the strength of that.
                if i > newest_complete && g.problem.is_none() {
                    doomed.push((*g).clone());
                }
                continue;
            }
            complete_seen += 1;
            if i == newest_complete {
                continue;
            }
            let by_count = policy.keep_last.is_some_and(|n| complete_seen > n.max(1));
            let by_age = policy.keep_within.is_some_and(|d| {
                generation_time(&g.generation)
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > d)
            });
            let keep = match (policy.keep_last, policy.keep_within) {
                (Some(_), Some(_)) => !(by_count && by_age),
                (Some(_), None) => !by_count,
                (None, Some(_)) => !by_age,
                (None, None) => true,
            };
            if !keep {
                doomed.push((*g).clone());
            }
        }
    }
    doomed
}

/// Applies the policy (or only reports, with `dry_run`). Only manifests
/// signed by a trusted signer count as complete, so planted ones never make
/// a real generation old enough to go.
pub async fn prune(
    store: &Store,
    source: Option<&str>,
    policy: &Retention,
    dry_run: bool,
    trust: &Trust,
) -> Result<Vec<Pruned>, BackupError> {
    trust.require_for_reading()?;
    let gens = list(store, source, trust).await?;
    let doomed = select(&gens, policy, std::time::SystemTime::now());
    let mut out = vec![];
    for g in doomed {
        let dir = g.dir().dir(store);
        let mut objects = 0;
        if !dry_run {
            let mut paths: Vec<_> = store
                .list(&dir)
                .await?
                .into_iter()
                .map(|m| m.location)
                .collect();
            // The manifest first: a half-deleted generation must not look complete.
            paths.sort_by_key(|p| p.filename() != Some(MANIFEST));
            for p in paths {
                store.delete(&p).await?;
                objects += 1;
            }
            tracing::info!(source = %g.source, generation = %g.generation, objects, "pruned generation");
        }
        out.push(Pruned {
            source: g.source.clone(),
            generation: g.generation.clone(),
            complete: g.complete,
            objects: if dry_run { g.objects } else { objects },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: &str, complete: bool) -> GenerationInfo {
        let mut g = GenerationInfo::new("s", id);
        g.complete = complete;
        g
    }

    #[test]
    fn keeps_the_newest_complete_and_the_policy() {
        let gens = vec![
            g("20261120T000000Z-a", true),
            g("20261121T000000Z-b", false),
            g("20261122T000000Z-c", true),
            g("20261123T000000Z-d", true),
            g("20261123T010000Z-e", false), // in progress: newer than every complete one
        ];
        let now = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let last2 = Retention {
            keep_last: Some(2),
            keep_within: None,
        };
        let d: Vec<_> = select(&gens, &last2, now)
            .into_iter()
            .map(|g| g.generation)
            .collect();
        assert_eq!(d, ["20261121T000000Z-b", "20261120T000000Z-a"]);
        let within = Retention {
            keep_last: None,
            keep_within: Some(Duration::from_secs(3600)),
        };
        let d: Vec<_> = select(&gens, &within, now)
            .into_iter()
            .map(|g| g.generation)
            .collect();
        assert_eq!(
            d,
            [
                "20261122T000000Z-c",
                "20261121T000000Z-b",
                "20261120T000000Z-a"
            ],
            "the newest complete stays"
        );
        // A manifest that is there but unreadable (or not its folder's) is
        // never grounds to delete.
        let mut odd = g("20261119T000000Z-z", false);
        odd.problem = Some("manifest ... not the folder it is in".into());
        let with_odd: Vec<_> = gens.iter().cloned().chain([odd]).collect();
        assert!(select(&with_odd, &last2, now)
            .iter()
            .all(|g| g.generation != "20261119T000000Z-z"));
        let keep1 = Retention {
            keep_last: Some(0),
            keep_within: None,
        };
        assert!(select(&gens, &keep1, now)
            .iter()
            .all(|g| g.generation != "20261123T000000Z-d"));
    }
}
