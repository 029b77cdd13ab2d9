//! Every way a sealed object can be damaged is a clear error naming the object and
//! the chunk, never wrong data.

mod common;

use common::*;
use redvault::keyring::DataKey;

const CS: u32 = 4096;

/// A 5-chunk object (the last one partial) and its plaintext.
async fn sample(dek: &DataKey) -> (Vec<u8>, Vec<u8>) {
    let plain = compressible(4 * CS as usize + 1000);
    let sealed = seal_bytes(&plain, dek, "base.rdb.rv", &opts(CS, Some(1))).await;
    assert_eq!(frames(&sealed).len(), 5);
    (plain, sealed)
}

async fn open_err(sealed: &[u8], dek: &DataKey) -> String {
    let e = open_bytes(sealed, dek, "gen/base.rdb.rv")
        .await
        .expect_err("damaged object must not open");
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(e.contains("gen/base.rdb.rv"), "names the object: {e}");
    e
}

#[tokio::test]
async fn round_trips_at_every_size_around_chunk_boundaries() {
    let dek = DataKey::generate();
    for n in [
        0,
        1,
        CS as usize - 1,
        CS as usize,
        CS as usize + 1,
        3 * CS as usize,
        3 * CS as usize + 7,
    ] {
        for level in [None, Some(1), Some(3)] {
            for data in [compressible(n), random(n)] {
                let sealed = seal_bytes(&data, &dek, "x", &opts(CS, level)).await;
                let back = open_bytes(&sealed, &dek, "x").await.unwrap();
                assert_eq!(back, data, "size {n} level {level:?}");
            }
        }
    }
}

#[tokio::test]
async fn empty_input_seals_to_a_valid_empty_object() {
    let dek = DataKey::generate();
    let sealed = seal_bytes(&[], &dek, "empty", &opts(CS, Some(1))).await;
    assert_eq!(frames(&sealed).len(), 1, "one empty final chunk");
    assert_eq!(
        open_bytes(&sealed, &dek, "empty").await.unwrap(),
        Vec::<u8>::new()
    );
}

#[tokio::test]
async fn compressible_data_is_stored_smaller_and_random_data_barely_grows() {
    let dek = DataKey::generate();
    let c = compressible(1 << 20);
    let sc = seal_bytes(&c, &dek, "c", &opts(1 << 18, Some(1))).await;
    assert!(
        sc.len() < c.len() / 3,
        "compressible: {} -> {}",
        c.len(),
        sc.len()
    );
    let r = random(1 << 20);
    let sr = seal_bytes(&r, &dek, "r", &opts(1 << 18, Some(1))).await;
    // Raw chunks: header + 17 bytes a chunk + footer, nothing more.
    assert!(
        sr.len() < r.len() + 400,
        "random: {} -> {}",
        r.len(),
        sr.len()
    );
}

#[tokio::test]
async fn flipped_bit_in_header_fields() {
    let dek = DataKey::generate();
    let (_, sealed) = sample(&dek).await;
    // Offsets: magic 0, version 8, chunk size 16, key id 20, salt 36, generation text 70.
    let mut s = sealed.clone();
    s[0] ^= 1;
    assert!(open_err(&s, &dek)
        .await
        .contains("not a redvault sealed object"));
    let mut s = sealed.clone();
    s[9] ^= 2;
    assert!(open_err(&s, &dek)
        .await
        .contains("format version 3 is not supported"));
    for at in [17, 40, 72] {
        let mut s = sealed.clone();
        s[at] ^= 0x10;
        let e = open_err(&s, &dek).await;
        assert!(
            e.contains("header failed authentication") || e.contains("malformed header"),
            "{at}: {e}"
        );
    }
    let mut s = sealed.clone();
    s[25] ^= 1;
    let e = open_err(&s, &dek).await;
    assert!(e.contains("wrong keyring"), "{e}");
}

#[tokio::test]
async fn flipped_bit_in_a_chunk_or_its_tag_names_the_chunk_and_delivers_nothing_from_it() {
    let dek = DataKey::generate();
    let (plain, sealed) = sample(&dek).await;
    let f = frames(&sealed);
    for (chunk, at) in [
        (0, f[0].0 + 10),
        (2, f[2].0 + 6),
        (3, f[3].1 - 1),
        (4, f[4].1 - 16),
    ] {
        let mut s = sealed.clone();
        s[at] ^= 0x80;
        let e = open_err(&s, &dek).await;
        assert!(
            e.contains(&format!("chunk {chunk}: authentication failed")),
            "{e}"
        );
    }
    // What was delivered before the error is exactly the untouched prefix.
    let mut s = sealed.clone();
    s[f[2].0 + 6] ^= 1;
    let mut input = s.as_slice();
    let raw = redvault::opener::RawHeader::read(&mut input, "o")
        .await
        .unwrap();
    let mut o = redvault::opener::Opener::new(input, &raw, &dek, "o", 2).unwrap();
    let mut got = Vec::new();
    let err = loop {
        match o.next_chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => panic!("tampered object opened"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(err.contains("chunk 2"), "{err}");
    assert_eq!(got, plain[..2 * CS as usize]);
}

#[tokio::test]
async fn flipped_last_chunk_flag_is_rejected() {
    let dek = DataKey::generate();
    let (_, sealed) = sample(&dek).await;
    let f = frames(&sealed);
    let mut s = sealed.clone();
    s[f[1].0] ^= 0x80; // chunk 1 claims to be the last
    let e = open_err(&s, &dek).await;
    assert!(e.contains("chunk 1: authentication failed"), "{e}");
}

#[tokio::test]
async fn truncation_is_named() {
    let dek = DataKey::generate();
    let (_, sealed) = sample(&dek).await;
    let f = frames(&sealed);
    // The final chunk and the footer gone.
    let e = open_err(&sealed[..f[4].0], &dek).await;
    assert!(
        e.contains("truncated") && e.contains("after 4 chunk(s) without its final chunk"),
        "{e}"
    );
    // Half a chunk.
    let e = open_err(&sealed[..(f[2].0 + f[2].1) / 2], &dek).await;
    assert!(e.contains("truncated inside chunk 2"), "{e}");
    // The footer cut.
    let e = open_err(&sealed[..sealed.len() - 3], &dek).await;
    assert!(e.contains("footer"), "{e}");
    // Only the header.
    let e = open_err(&sealed[..f[0].0], &dek).await;
    assert!(e.contains("after 0 chunk(s)"), "{e}");
    // Less than a header.
    let e = open_err(&sealed[..20], &dek).await;
    assert!(e.contains("header"), "{e}");
}

#[tokio::test]
async fn reordered_duplicated_and_extended_chunks_are_rejected() {
    let dek = DataKey::generate();
    let (_, sealed) = sample(&dek).await;
    let f = frames(&sealed);
    let splice = |parts: &[(usize, usize)]| -> Vec<u8> {
        let mut v = sealed[..f[0].0].to_vec();
        for &(a, b) in parts {
            v.extend_from_slice(&sealed[a..b]);
        }
        v.extend_from_slice(&sealed[f[4].1..]);
        v
    };
    let e = open_err(&splice(&[f[0], f[2], f[1], f[3], f[4]]), &dek).await;
    assert!(e.contains("chunk 1: authentication failed"), "swap: {e}");
    let e = open_err(&splice(&[f[0], f[1], f[1], f[3], f[4]]), &dek).await;
    assert!(
        e.contains("chunk 2: authentication failed"),
        "duplicate: {e}"
    );
    let e = open_err(&splice(&[f[0], f[1], f[2], f[3], f[3], f[4]]), &dek).await;
    assert!(
        e.contains("chunk 4: authentication failed"),
        "inserted: {e}"
    );
    // Bytes appended after the footer.
    let mut s = sealed.clone();
    s.extend_from_slice(b"more");
    let e = open_err(&s, &dek).await;
    assert!(e.contains("bytes follow the footer"), "{e}");
}

#[tokio::test]
async fn chunks_from_another_object_or_another_backup_are_rejected() {
    let dek = DataKey::generate();
    let (plain, sealed) = sample(&dek).await;
    // Same data, same data key, another object (its own salt).
    let other = seal_bytes(&plain, &dek, "base.rdb.rv", &opts(CS, Some(1))).await;
    let g = frames(&other);
    let f = frames(&sealed);
    let mut s = sealed[..f[1].0].to_vec();
    s.extend_from_slice(&other[g[1].0..g[1].1]);
    s.extend_from_slice(&sealed[f[2].0..]);
    let e = open_err(&s, &dek).await;
    assert!(e.contains("chunk 1: authentication failed"), "{e}");
    // Another backup: another data key.
    let dek2 = DataKey::generate();
    let foreign = seal_bytes(&plain, &dek2, "base.rdb.rv", &opts(CS, Some(1))).await;
    let h = frames(&foreign);
    let mut s = sealed[..f[3].0].to_vec();
    s.extend_from_slice(&foreign[h[3].0..h[3].1]);
    s.extend_from_slice(&sealed[f[4].0..]);
    let e = open_err(&s, &dek).await;
    assert!(e.contains("chunk 3: authentication failed"), "{e}");
}

#[tokio::test]
async fn wrong_data_key_says_wrong_keyring() {
    let dek = DataKey::generate();
    let (_, sealed) = sample(&dek).await;
    let e = open_err(&sealed, &DataKey::generate()).await;
    assert!(e.contains("wrong keyring"), "{e}");
    assert!(
        e.contains(&hex::encode(dek.id())),
        "names the key the object needs: {e}"
    );
}
