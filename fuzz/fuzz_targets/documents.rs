//! The JSON documents of a backup (keyring, manifest, chain head) and the
//! Key Vault answers: parsed strictly or refused; a manifest's MAC and
//! signature never pass for input this target did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvault::backup::head::Head;
use redvault::backup::layout::GenerationDir;
use redvault::backup::manifest::Manifest;
use redvault::data_key::DataKey;
use redvault::keyring::Keyring;
use redvault::signing::{Signer, Trust};

fuzz_target!(|data: &[u8]| {
    let dek = DataKey::from_bytes(&[7u8; 32]).unwrap();
    let signer = Signer::from_seed(&[9u8; 32]);
    let mut trust = Trust::new(false);
    trust.add_signer(&signer);
    let _ = Keyring::from_json(data, "fuzz");
    let _ = Manifest::open(data, &dek, "fuzz");
    if let Ok(m) = Manifest::parse(data, "fuzz") {
        let _ = m.check_signature(&trust, "fuzz");
    }
    let dir = GenerationDir::new("cache1", "20261201T000000.000Z-00000000-00000000");
    let _ = Head::open(data, &dir, 0, &trust, "fuzz");
    let _ = serde_json::from_slice::<redvault::azure::vault::KeyBundle>(data);
    let _ = serde_json::from_slice::<redvault::azure::vault::OperationResult>(data);
});
