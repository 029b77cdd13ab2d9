//! KEKs and the keyring: the KEK suite (one contract, run against every KEK:
//! the local RSA key and Key Vault, the latter a loopback server speaking its
//! wire protocol with real RSA keys), then what is particular to local keys.
//! A new KEK gets the whole suite by adding one line to `keks`.

mod common;

use common::key_vault::KeyVault;
use common::tls::TestCa;
use common::token_endpoint::TokenEndpoint;
use common::*;
use redvault::azure::{AzureSettings, Identity};
use redvault::kek::{open_kek, Kek, KeyVaultOptions, LocalRsaKek};
use redvault::keyring::{DataKey, Keyring};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

const OID: &str = "22222222-0000-0000-0000-000000000002";

/// Servers a KEK needs, kept alive while it is used.
#[allow(dead_code)]
enum Fixture {
    None,
    Vault(Box<(TestCa, TokenEndpoint, KeyVault)>),
}

/// One implementation under test: a KEK and another key of the same kind.
type UnderTest = (&'static str, Arc<dyn Kek>, Arc<dyn Kek>, Fixture);

/// Every KEK implementation, each twice (two different keys), with what keeps
/// it running.
fn keks() -> Vec<UnderTest> {
    let other_pem = {
        use rsa::pkcs8::EncodePrivateKey;
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .unwrap()
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let local: Arc<dyn Kek> = Arc::new(test_kek());
    let local_other: Arc<dyn Kek> = Arc::new(LocalRsaKek::from_pem(&other_pem, "other").unwrap());

    let ca = TestCa::new();
    let tokens = TokenEndpoint::start(Some(OID), vec![], 3600);
    let vault = KeyVault::start(&ca);
    vault.add_rsa_version("suite-a");
    vault.add_rsa_version("suite-b");
    vault.permit(OID, &["get", "wrapKey", "unwrapKey"]);
    let identity = Arc::new(
        Identity::new(&AzureSettings {
            token_endpoint: Some(tokens.url()),
            ..Default::default()
        })
        .unwrap(),
    );
    let opts = || KeyVaultOptions {
        identity: identity.clone(),
        ca_pem: Some(std::fs::read(&ca.ca).unwrap()),
        verify_challenge_resource: false,
    };
    let kv_a = open_kek(&format!("{}/keys/suite-a", vault.base()), Some(opts())).unwrap();
    let kv_b = open_kek(&format!("{}/keys/suite-b", vault.base()), Some(opts())).unwrap();
    vec![
        ("local-rsa", local, local_other, Fixture::None),
        (
            "key-vault",
            kv_a,
            kv_b,
            Fixture::Vault(Box::new((ca, tokens, vault))),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn suite_wrap_unwrap_round_trip_names_the_key_never_the_data_key() {
    for (name, kek, _, _fixture) in keks() {
        let dek = DataKey::generate();
        let ring = Keyring::wrap(&dek, kek.as_ref()).await.unwrap();
        let json = ring.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(kek.matches(&ring.wrapped[0].kek), "{name}: {text}");
        assert!(!text.contains(&hex::encode(dek.expose())), "{name}");
        let back = Keyring::from_json(&json, "keyring.json")
            .unwrap()
            .unwrap(kek.as_ref(), "keyring.json")
            .await
            .unwrap();
        assert_eq!(back.expose(), dek.expose(), "{name}");
        // Wrapping is randomised: a second wrap differs and opens the same key.
        let again = kek.wrap(&dek).await.unwrap();
        use base64::Engine;
        let first = base64::engine::general_purpose::STANDARD
            .decode(&ring.wrapped[0].key)
            .unwrap();
        assert_ne!(again.bytes, first, "{name}");
        assert_eq!(
            kek.unwrap(&again).await.unwrap().expose(),
            dek.expose(),
            "{name}"
        );
        assert!(kek.can_unwrap(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn suite_another_keys_keyring_is_refused_naming_both() {
    for (name, kek, other, _fixture) in keks() {
        let dek = DataKey::generate();
        let ring = Keyring::wrap(&dek, kek.as_ref()).await.unwrap();
        assert!(!other.matches(&ring.wrapped[0].kek), "{name}");
        let e = ring
            .unwrap(other.as_ref(), "keyring.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("was wrapped by")
                && e.contains(&ring.wrapped[0].kek)
                && e.contains(other.id()),
            "{name}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn suite_a_tampered_wrapped_key_fails_and_names_the_keyring() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (name, kek, _, _fixture) in keks() {
        let dek = DataKey::generate();
        let mut ring = Keyring::wrap(&dek, kek.as_ref()).await.unwrap();
        let mut w = b64.decode(&ring.wrapped[0].key).unwrap();
        w[10] ^= 1;
        ring.wrapped[0].key = b64.encode(&w);
        let e = ring
            .unwrap(kek.as_ref(), "keyring.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyring.json"), "{name}: {e}");
    }
}

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
