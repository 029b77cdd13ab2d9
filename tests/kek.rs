//! The local RSA KEK and the keyring: wrap, unwrap, and every way to get it wrong.

mod common;

use common::*;
use redvault::kek::{Kek, LocalRsaKek};
use redvault::keyring::{DataKey, Keyring};
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn wrap_unwrap_round_trip_through_the_keyring_json() {
    let kek = test_kek();
    let dek = DataKey::generate();
    let ring = Keyring::wrap(&dek, &kek).await.unwrap();
    let json = ring.to_json();
    // The keyring names the KEK and the data key id, never the data key.
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(text.contains(kek.id()));
    assert!(!text.contains(&hex::encode(dek.expose())));
    let back = Keyring::from_json(&json, "keyring.json")
        .unwrap()
        .unwrap(&kek, "keyring.json")
        .await
        .unwrap();
    assert_eq!(back.expose(), dek.expose());
}

#[tokio::test]
async fn key_id_derives_from_the_public_key() {
    let private = test_kek();
    let public = LocalRsaKek::from_pem(&test_key_pems().1, "pub").unwrap();
    assert_eq!(private.id(), public.id());
    assert!(private.id().starts_with("local-rsa:"));
    assert!(private.can_unwrap());
    assert!(!public.can_unwrap());
    // PKCS#1 form of the same key: same id.
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let k = rsa::RsaPrivateKey::from_pkcs8_pem(&test_key_pems().0).unwrap();
    let pkcs1 = k.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    assert_eq!(
        LocalRsaKek::from_pem(&pkcs1, "p1").unwrap().id(),
        private.id()
    );
}

#[tokio::test]
async fn public_only_key_wraps_but_cannot_unwrap() {
    let public = LocalRsaKek::from_pem(&test_key_pems().1, "kek.pub.pem").unwrap();
    let dek = DataKey::generate();
    let ring = Keyring::wrap(&dek, &public).await.unwrap();
    let e = ring
        .unwrap(&public, "keyring.json")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds only a public key") && e.contains("kek.pub.pem"),
        "{e}"
    );
    // The private half opens it.
    assert_eq!(
        ring.unwrap(&test_kek(), "k").await.unwrap().expose(),
        dek.expose()
    );
}

#[tokio::test]
async fn wrong_kek_names_both_keys() {
    let dek = DataKey::generate();
    let ring = Keyring::wrap(&dek, &test_kek()).await.unwrap();
    let other_pem = {
        use rsa::pkcs8::EncodePrivateKey;
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .unwrap()
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let other = LocalRsaKek::from_pem(&other_pem, "other").unwrap();
    let e = ring
        .unwrap(&other, "keyring.json")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("was wrapped by") && e.contains(test_kek().id()) && e.contains(other.id()),
        "{e}"
    );
}

#[tokio::test]
async fn tampered_wrapped_key_fails_to_unwrap() {
    let dek = DataKey::generate();
    let mut ring = Keyring::wrap(&dek, &test_kek()).await.unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut w = b64.decode(&ring.wrapped[0].key).unwrap();
    w[10] ^= 1;
    ring.wrapped[0].key = b64.encode(&w);
    let e = ring
        .unwrap(&test_kek(), "keyring.json")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unwrapping the data key") && e.contains("keyring.json"),
        "{e}"
    );
}

#[test]
fn loose_permissions_small_keys_and_non_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = write_test_keys(dir.path());
    assert!(LocalRsaKek::from_file(&private).is_ok());
    // A public key may be world-readable.
    assert!(LocalRsaKek::from_file(&public).is_ok());
    for mode in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = LocalRsaKek::from_file(&private).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{mode:o}: {e}");
    }
    let small = {
        use rsa::pkcs8::EncodePublicKey;
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024)
            .unwrap()
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let e = LocalRsaKek::from_pem(&small, "small.pem")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("1024 bits") && e.contains("2048"), "{e}");
    let e = LocalRsaKek::from_pem("hello", "junk.pem")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("junk.pem holds no RSA key"), "{e}");
    let e = LocalRsaKek::from_file(&dir.path().join("missing.pem"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot read key file") && e.contains("missing.pem"),
        "{e}"
    );
}
