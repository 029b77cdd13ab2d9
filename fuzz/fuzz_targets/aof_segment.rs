//! An AOF segment's parts: its signed attestation (checked against a fixed
//! trusted signer) and its plaintext records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvault::signing::{Signer, Trust};

fuzz_target!(|data: &[u8]| {
    let signer = Signer::from_seed(&[9u8; 32]);
    let mut trust = Trust::new(false);
    trust.add_signer(&signer);
    let _ = redvault::aof::chain::verify(data, &trust, "fuzz");
    let _ = redvault::aof::decode_records(data, "fuzz");
});
