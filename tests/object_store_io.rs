//! Sealing straight into an object_store multipart upload and opening from a GET
//! stream, with the local-folder store (a real filesystem backend).

mod common;

use common::*;
use futures::TryStreamExt;
use object_store::{path::Path, ObjectStore, ObjectStoreExt};
use redvault::keyring::DataKey;
use redvault::opener::{Opener, RawHeader};
use redvault::sealer::Sealer;
use std::sync::Arc;

#[tokio::test]
async fn seal_into_a_multipart_upload_and_open_from_a_get_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let path = Path::from("backups/src/gen/base.rdb.rv");
    let dek = DataKey::generate();
    let data = compressible(6 << 20);
    let upload =
        object_store::buffered::BufWriter::with_capacity(store.clone(), path.clone(), 5 << 20);
    let mut s = Sealer::new(upload, spec("base.rdb.rv"), &dek, &opts(1 << 20, Some(1)))
        .await
        .unwrap();
    for piece in data.chunks(100_000) {
        s.write(piece).await.unwrap();
    }
    let (summary, _) = s.finish().await.unwrap();
    let meta = store.head(&path).await.unwrap();
    assert_eq!(meta.size as u64, summary.stored_bytes);

    let stream = store
        .get(&path)
        .await
        .unwrap()
        .into_stream()
        .map_err(std::io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let raw = RawHeader::read(&mut reader, path.as_ref()).await.unwrap();
    let mut o = Opener::new(reader, &raw, &dek, path.as_ref(), 2).unwrap();
    let mut back = Vec::new();
    while let Some(c) = o.next_chunk().await.unwrap() {
        back.extend_from_slice(&c);
    }
    assert!(back == data);
    use sha2::Digest;
    assert_eq!(
        summary.plaintext_sha256,
        <[u8; 32]>::from(sha2::Sha256::digest(&data))
    );
}
