//! The test vector of docs/FORMAT.md: fixed data key and salt, raw chunks, so the
//! sealed bytes are exact. A second vector (zstd) is checked by opening it.
//! Regenerate with REDVAULT_WRITE_VECTORS=1 only when the format version changes.

mod common;

use redvault::format::ObjectKind;
use redvault::keyring::DataKey;
use redvault::sealer::{ObjectSpec, SealOptions, Sealer};

const RAW_VECTOR: &str = "tests/vectors/format-v1-raw.hex";
const ZSTD_VECTOR: &str = "tests/vectors/format-v1-zstd.hex";

fn dek() -> DataKey {
    DataKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap()
}

fn salt() -> [u8; 32] {
    std::array::from_fn(|i| 0x20 + i as u8)
}

const RAW_PLAINTEXT: &[u8] = b"redvault format v1 test vector, 50 bytes long....";

fn zstd_plaintext() -> Vec<u8> {
    b"abcabcabc".repeat(100)
}

async fn seal_vector(plain: &[u8], chunk_size: u32, level: Option<i32>) -> Vec<u8> {
    let spec = ObjectSpec {
        kind: ObjectKind::Rdb,
        generation: "20261123T000000Z-vector".into(),
        name: "base.rdb.rv".into(),
        embedded_keyring: vec![],
        attestation: vec![],
    };
    let o = SealOptions {
        chunk_size,
        zstd_level: level,
        parallelism: 1,
    };
    let mut s = Sealer::with_salt(Vec::new(), spec, &dek(), &o, salt())
        .await
        .unwrap();
    s.write(plain).await.unwrap();
    s.finish().await.unwrap().1
}

fn read_hex(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(hex).unwrap()
}

fn write_hex(path: &str, comment: &str, bytes: &[u8]) {
    let mut s = format!("# {comment}\n");
    for line in bytes.chunks(32) {
        s.push_str(&hex::encode(line));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

#[tokio::test]
async fn raw_vector_is_byte_exact_and_opens() {
    let sealed = seal_vector(RAW_PLAINTEXT, 16, None).await;
    if std::env::var_os("REDVAULT_WRITE_VECTORS").is_some() {
        write_hex(
            RAW_VECTOR,
            "format v1, raw chunks; see docs/FORMAT.md 'Test vectors'",
            &sealed,
        );
    }
    let expected = read_hex(RAW_VECTOR);
    assert_eq!(
        hex::encode(&sealed),
        hex::encode(&expected),
        "sealing no longer produces the v1 vector"
    );
    let plain = common::open_bytes(&expected, &dek(), "vector")
        .await
        .unwrap();
    assert_eq!(plain, RAW_PLAINTEXT);
    // 50 bytes at 16 per chunk: 16 + 16 + 16 + 2, the last flagged.
    assert_eq!(common::frames(&expected).len(), 4);
}

#[tokio::test]
async fn zstd_vector_opens() {
    if std::env::var_os("REDVAULT_WRITE_VECTORS").is_some() {
        let sealed = seal_vector(&zstd_plaintext(), 256, Some(3)).await;
        write_hex(
            ZSTD_VECTOR,
            "format v1, zstd chunks; see docs/FORMAT.md 'Test vectors'",
            &sealed,
        );
    }
    let sealed = read_hex(ZSTD_VECTOR);
    let plain = common::open_bytes(&sealed, &dek(), "vector").await.unwrap();
    assert_eq!(plain, zstd_plaintext());
    // The stored vector really holds compressed chunks: smaller than the plaintext.
    assert!(sealed.len() < zstd_plaintext().len());
}

/// Rebuilds chunk 0 of the raw vector by hand, from the primitives FORMAT.md
/// names, so the specification and the code cannot drift apart.
#[test]
fn raw_vector_chunk0_matches_the_specification() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use hkdf::Hkdf;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    let sealed = read_hex(RAW_VECTOR);
    let hlen = u32::from_be_bytes(sealed[10..14].try_into().unwrap()) as usize;
    let ikm: Vec<u8> = (0u8..32).collect();
    let hk = Hkdf::<Sha256>::new(Some(&salt()), &ikm);
    let mut mac_key = [0u8; 32];
    hk.expand(b"redvault/1 header mac", &mut mac_key).unwrap();
    let mut chunk_key = [0u8; 32];
    hk.expand(b"redvault/1 chunk key", &mut chunk_key).unwrap();
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key).unwrap();
    m.update(&sealed[..hlen - 32]);
    let tag = m.finalize().into_bytes();
    assert_eq!(&sealed[hlen - 32..hlen], tag.as_slice(), "header MAC");

    let mut nonce = [0u8; 12];
    nonce[7..11].copy_from_slice(&0u32.to_be_bytes());
    let mut plain = vec![0u8]; // encoding: raw
    plain.extend_from_slice(&RAW_PLAINTEXT[..16]);
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&chunk_key).unwrap();
    let ct = cipher
        .encrypt(
            aes_gcm::Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &tag,
            },
        )
        .unwrap();
    let field = u32::from_be_bytes(sealed[hlen..hlen + 4].try_into().unwrap());
    assert_eq!(
        field as usize,
        ct.len(),
        "chunk 0 frame length, last flag clear"
    );
    assert_eq!(&sealed[hlen + 4..hlen + 4 + ct.len()], ct.as_slice());

    // The data key id in the header.
    let hk0 = Hkdf::<Sha256>::new(Some(&[]), &ikm);
    let mut id = [0u8; 16];
    hk0.expand(b"redvault/1 data key id", &mut id).unwrap();
    assert_eq!(&sealed[20..36], &id);
}

const SEGMENT_VECTOR: &str = "tests/vectors/format-v2-segment.hex";

fn vector_signer() -> redvault::signing::Signer {
    redvault::signing::Signer::from_seed(&std::array::from_fn(|i| 0x40 + i as u8))
}

fn vector_record() -> Vec<u8> {
    let mut plain = vec![];
    redvault::aof::encode_record(
        &mut plain,
        &redvault::command::Command {
            args: vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()],
            offset: 131,
            time_ms: 1_764_547_200_000,
        },
    );
    plain
}

/// A version 2 object: an AOF segment whose header carries the signed
/// statement. Ed25519 is deterministic, so the bytes are exact; the
/// signature and the link are checked again from the primitives FORMAT.md
/// names.
#[tokio::test]
async fn segment_vector_is_byte_exact_and_its_signature_checks_by_hand() {
    use ed25519_dalek::Verifier;
    use redvault::aof::chain::{link_of, Statement, GENESIS};
    use sha2::Digest;
    let signer = vector_signer();
    let plain = vector_record();
    let statement = Statement {
        source: "cache1".into(),
        generation: "20261201T000000.000Z-vector00-00000000".into(),
        from: 100,
        to: 131,
        prev: GENESIS,
        plaintext_sha256: sha2::Sha256::digest(&plain).into(),
        plaintext_bytes: plain.len() as u64,
        data_key_id: dek().id(),
        last_time_ms: 1_764_547_200_000,
        signer: signer.id_bytes(),
    };
    let attestation = statement.sign(&signer).await.unwrap();
    let spec = ObjectSpec {
        kind: ObjectKind::Aof,
        generation: statement.generation.clone(),
        name: "00000000000000000100-00000000000000000131.aof.rv".into(),
        embedded_keyring: vec![],
        attestation: attestation.clone(),
    };
    let o = SealOptions {
        chunk_size: 16,
        zstd_level: None,
        parallelism: 1,
    };
    let mut s = Sealer::with_salt(Vec::new(), spec, &dek(), &o, salt())
        .await
        .unwrap();
    s.write(&plain).await.unwrap();
    let sealed = s.finish().await.unwrap().1;
    if std::env::var_os("REDVAULT_WRITE_VECTORS").is_some() {
        write_hex(
            SEGMENT_VECTOR,
            "format v2, an AOF segment with its attestation; see docs/FORMAT.md 'Test vectors'",
            &sealed,
        );
    }
    assert_eq!(
        hex::encode(&sealed),
        hex::encode(read_hex(SEGMENT_VECTOR)),
        "sealing no longer produces the v2 vector"
    );
    assert_eq!(&sealed[8..10], &2u16.to_be_bytes(), "version 2");
    // The attestation is the last field before the header MAC.
    let hlen = u32::from_be_bytes(sealed[10..14].try_into().unwrap()) as usize;
    let a_end = hlen - 32;
    let a_start = a_end - attestation.len();
    let alen = u32::from_be_bytes(sealed[a_start - 4..a_start].try_into().unwrap()) as usize;
    assert_eq!(alen, attestation.len());
    let att = &sealed[a_start..a_end];
    let (body, sig) = att.split_at(att.len() - 64);
    let mut msg = b"redvault/2 segment\0".to_vec();
    msg.extend_from_slice(body);
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        &ed25519_dalek::SigningKey::from_bytes(&std::array::from_fn(|i| 0x40 + i as u8))
            .verifying_key()
            .to_bytes(),
    )
    .unwrap();
    key.verify(&msg, &ed25519_dalek::Signature::from_slice(sig).unwrap())
        .expect("the signature FORMAT.md describes");
    let mut l = sha2::Sha256::new();
    l.update(b"redvault/2 link\0");
    l.update(att);
    assert_eq!(<[u8; 32]>::from(l.finalize()), link_of(att));
    // And the object opens (the v2 header parses and authenticates).
    let opened = common::open_bytes(&sealed, &dek(), "vector").await.unwrap();
    assert_eq!(opened, plain);
}
