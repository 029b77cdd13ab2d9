//! Key rotation: re-wrap each generation's data key under another KEK (or a newer
//! version of the same Key Vault key). Only keyring.json objects change; sealed
//! data and manifests are untouched.

use super::layout::{listing, GenerationDir, ObjectKind, KEYRING};
use super::read::read_keyring;
use super::BackupError;
use crate::kek::Kek;
use crate::keyring::{Keyring, WrappedEntry};
use crate::store::Store;
use base64::Engine;

/// One keyring found under the prefix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyringInfo {
    pub source: String,
    pub generation: String,
    /// The KEK ids (with versions) the data key is wrapped under.
    pub keks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What `rewrap` did to one keyring.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rewrapped {
    pub source: String,
    pub generation: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// False when the keyring already held the new wrapping.
    pub changed: bool,
}

/// Every `<source>/<generation>/keyring.json` under the store's prefix.
async fn keyring_dirs(
    store: &Store,
    source: Option<&str>,
) -> Result<Vec<GenerationDir>, BackupError> {
    let mut out: Vec<GenerationDir> = listing(store, source)
        .await?
        .into_iter()
        .filter(|o| o.kind == ObjectKind::Keyring)
        .map(|o| o.dir)
        .collect();
    out.sort_by(|a, b| (&a.source, &a.generation).cmp(&(&b.source, &b.generation)));
    Ok(out)
}

/// Which KEKs wrap each generation's data key. Needs no key.
pub async fn status(store: &Store, source: Option<&str>) -> Result<Vec<KeyringInfo>, BackupError> {
    let mut out = vec![];
    for dir in keyring_dirs(store, source).await? {
        let (keks, problem) = match read_keyring(store, &dir).await {
            Ok(ring) => (ring.wrapped.iter().map(|w| w.kek.clone()).collect(), None),
            Err(e) => (vec![], Some(e.to_string())),
        };
        out.push(KeyringInfo {
            source: dir.source,
            generation: dir.generation,
            keks,
            problem,
        });
    }
    Ok(out)
}

/// Re-wraps every keyring under `to`. `from` must unwrap the current data key.
/// Unless `keep_old`, the other wrappings are dropped, so a retired key no
/// longer opens the backups. When `to` can unwrap, the new wrapping is checked
/// before it replaces anything.
pub async fn rewrap(
    store: &Store,
    source: Option<&str>,
    from: &dyn Kek,
    to: &dyn Kek,
    keep_old: bool,
    mut progress: impl FnMut(&Rewrapped),
) -> Result<Vec<Rewrapped>, BackupError> {
    let mut done = vec![];
    for dir in keyring_dirs(store, source).await? {
        let label = dir.label(KEYRING);
        // Read with its version: the keyring is replaced only if nobody
        // changed it meanwhile (a second rewrap, a retention run).
        let read = store.read_versioned(&dir.keyring(store)).await?;
        let ring = Keyring::from_json(&read.bytes, &label)?;
        let before: Vec<String> = ring.wrapped.iter().map(|w| w.kek.clone()).collect();
        let dek = ring.unwrap(from, &label).await?;
        let wrapped = to.wrap(&dek).await.map_err(|e| BackupError::Corrupt {
            label: label.clone(),
            why: e.to_string(),
        })?;
        let already = before.contains(&wrapped.kek_id);
        let mut new_ring = ring.clone();
        if !already {
            new_ring.wrapped.push(WrappedEntry {
                kek: wrapped.kek_id.clone(),
                alg: wrapped.alg.clone(),
                key: base64::engine::general_purpose::STANDARD.encode(&wrapped.bytes),
            });
        }
        if !keep_old {
            new_ring.wrapped.retain(|w| w.kek == wrapped.kek_id);
        }
        let changed = new_ring != ring;
        if changed {
            if to.can_unwrap() {
                let back = new_ring
                    .unwrap(to, &label)
                    .await
                    .map_err(|e| BackupError::Corrupt {
                        label: label.clone(),
                        why: format!("the new wrapping does not open: {e}"),
                    })?;
                if back.id() != dek.id() {
                    return Err(BackupError::Corrupt {
                        label,
                        why: "the new wrapping gives another data key".into(),
                    });
                }
            }
            store
                .replace(&dir.keyring(store), new_ring.to_json(), &read)
                .await?;
        }
        let r = Rewrapped {
            source: dir.source,
            generation: dir.generation,
            before,
            after: new_ring.wrapped.iter().map(|w| w.kek.clone()).collect(),
            changed,
        };
        progress(&r);
        done.push(r);
    }
    Ok(done)
}
