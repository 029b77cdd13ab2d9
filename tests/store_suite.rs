//! The Store suite: one contract run against every backend that runs here
//! (memory, a local folder, Azure Blob on Azurite). Objects read back as
//! written, listings hold exactly what is below a folder, deletes are final and
//! idempotent, streaming uploads of several parts read back whole, an aborted
//! upload leaves nothing, and a missing object is named as missing. A new
//! backend gets the whole suite by adding one line to `stores`.

mod common;

use common::azurite::Azurite;
use common::*;
use futures::TryStreamExt;
use redvault::store::{Store, StoreError};
use tokio::io::AsyncWriteExt;

/// Every backend, each with a fresh prefix, and what keeps it alive.
fn stores(dir: &std::path::Path, az: &Azurite) -> Vec<(&'static str, Store)> {
    // object_store's Azure builder reads the emulator settings from the environment.
    for (k, v) in az.env() {
        std::env::set_var(k, v);
    }
    vec![
        ("memory", Store::open("memory://", Some("suite")).unwrap()),
        (
            "file",
            Store::open(&format!("file://{}", dir.display()), Some("suite")).unwrap(),
        ),
        ("azurite", Store::open("az://suite", Some("p")).unwrap()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start();
    az.create_container("suite");
    for (name, store) in stores(dir.path(), &az) {
        store
            .probe()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        // Whole objects read back as written.
        let a = store.path(&["src", "gen", "keyring.json"]);
        let b = store.path(&["src", "gen", "aof", "1-2.aof.rv"]);
        let elsewhere = store.path(&["other", "gen", "manifest.json"]);
        store.write(&a, b"{\"ring\":1}".to_vec()).await.unwrap();
        store.write(&b, random(70_000)).await.unwrap();
        store.write(&elsewhere, b"x".to_vec()).await.unwrap();
        assert_eq!(
            &store.read(&a).await.unwrap()[..],
            b"{\"ring\":1}",
            "{name}"
        );

        // A conditional replace succeeds on the version read, and refuses
        // (replacing nothing) once another writer changed the object.
        let seen = store.read_versioned(&a).await.unwrap();
        store
            .replace(&a, b"{\"ring\":2}".to_vec(), &seen)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let seen = store.read_versioned(&a).await.unwrap();
        assert_eq!(&seen.bytes[..], b"{\"ring\":2}", "{name}");
        // Another writer, later (a local folder's version includes the
        // modification time, in nanoseconds where the file system has them).
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.write(&a, b"{\"ring\":3}".to_vec()).await.unwrap();
        let e = store
            .replace(&a, b"{\"ring\":4}".to_vec(), &seen)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Changed { .. }), "{name}: {e}");
        assert_eq!(
            &store.read(&a).await.unwrap()[..],
            b"{\"ring\":3}",
            "{name}"
        );

        // A listing holds exactly what is below the folder, with sizes.
        let mut listed: Vec<(String, u64)> = store
            .list(&store.path(&["src"]))
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            vec![(b.to_string(), 70_000), (a.to_string(), 10)],
            "{name}"
        );

        // A missing object is named as missing.
        let missing = store.path(&["src", "gen", "manifest.json"]);
        match store.read(&missing).await {
            Err(StoreError::NotFound { path, .. }) => {
                assert_eq!(path, missing.to_string(), "{name}")
            }
            other => panic!("{name}: {:?}", other.map(|b| b.len())),
        }

        // Deletes are final, and deleting what is gone is no error.
        store.delete(&a).await.unwrap();
        store.delete(&a).await.unwrap();
        assert!(
            matches!(store.read(&a).await, Err(StoreError::NotFound { .. })),
            "{name}"
        );

        // A streaming upload of several parts reads back whole.
        let big = compressible(12 << 20);
        let up = store.path(&["src", "gen", "base.rdb.rv"]);
        let mut w = store.upload(&up, 5 << 20);
        for piece in big.chunks(1 << 20) {
            w.write_all(piece).await.unwrap();
        }
        w.shutdown().await.unwrap();
        let got: Vec<u8> = store
            .read_stream(&up)
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, piece| async move {
                acc.extend_from_slice(&piece);
                Ok(acc)
            })
            .await
            .unwrap();
        assert!(got == big, "{name}: the upload reads back whole");

        // An aborted upload leaves nothing that looks stored.
        let gone = store.path(&["src", "gen2", "base.rdb.rv"]);
        let mut w = store.upload(&gone, 5 << 20);
        w.write_all(&big[..7 << 20]).await.unwrap();
        w.abort().await.unwrap();
        assert!(
            matches!(store.read(&gone).await, Err(StoreError::NotFound { .. })),
            "{name}: an aborted upload is not visible"
        );
    }
}
