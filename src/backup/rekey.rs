//! Key rotation: re-wrap each generation's data key under another KEK (or a newer
//! version of the same Key Vault key). Only keyring.json objects change; sealed
//! data and manifests are untouched.

use super::layout::KEYRING;
use crate::kek::Kek;
use crate::keyring::{Keyring, WrappedEntry};
use crate::store::{one_line, Store};
use base64::Engine;
use object_store::PutPayload;

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
async fn keyring_paths(
    store: &Store,
    source: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = super::list::objects_below(store, source)
        .await?
        .into_iter()
        .filter(|(parts, _)| parts.len() == 3 && parts[2] == KEYRING)
        .map(|(parts, _)| (parts[0].clone(), parts[1].clone()))
        .collect();
    out.sort();
    Ok(out)
}

async fn read_keyring(store: &Store, source: &str, generation: &str) -> Result<Keyring, String> {
    let path = store.path(&[source, generation, KEYRING]);
    let bytes = async { store.inner.get(&path).await?.bytes().await }
        .await
        .map_err(|e| format!("cannot read {path}: {}", one_line(&e)))?;
    Keyring::from_json(&bytes, path.as_ref()).map_err(|e| e.to_string())
}

/// Which KEKs wrap each generation's data key. Needs no key.
pub async fn status(store: &Store, source: Option<&str>) -> Result<Vec<KeyringInfo>, String> {
    let mut out = vec![];
    for (source, generation) in keyring_paths(store, source).await? {
        let (keks, problem) = match read_keyring(store, &source, &generation).await {
            Ok(ring) => (ring.wrapped.iter().map(|w| w.kek.clone()).collect(), None),
            Err(e) => (vec![], Some(e)),
        };
        out.push(KeyringInfo {
            source,
            generation,
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
) -> Result<Vec<Rewrapped>, String> {
    let mut done = vec![];
    for (source, generation) in keyring_paths(store, source).await? {
        let label = format!("{source}/{generation}/{KEYRING}");
        let ring = read_keyring(store, &source, &generation).await?;
        let before: Vec<String> = ring.wrapped.iter().map(|w| w.kek.clone()).collect();
        let dek = ring.unwrap(from, &label).await.map_err(|e| e.to_string())?;
        let wrapped = to.wrap(&dek).await.map_err(|e| format!("{label}: {e}"))?;
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
                    .map_err(|e| format!("{label}: the new wrapping does not open: {e}"))?;
                if back.id() != dek.id() {
                    return Err(format!("{label}: the new wrapping gives another data key"));
                }
            }
            let path = store.path(&[&source, &generation, KEYRING]);
            store
                .inner
                .put(&path, PutPayload::from(new_ring.to_json()))
                .await
                .map_err(|e| format!("cannot write {path}: {}", one_line(&e)))?;
        }
        let r = Rewrapped {
            source,
            generation,
            before,
            after: new_ring.wrapped.iter().map(|w| w.kek.clone()).collect(),
            changed,
        };
        progress(&r);
        done.push(r);
    }
    Ok(done)
}
