//! The sealed object opener (header, frames, footer) under a fixed data key:
//! any input is refused or opens; no panic. A mutant that opens is a tag
//! forgery, which libFuzzer cannot find by chance: what this finds is
//! crashes and unbounded allocations in the framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvault::data_key::DataKey;
use redvault::opener::{Opener, RawHeader};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let dek = DataKey::from_bytes(&std::array::from_fn::<u8, 32, _>(|i| i as u8)).unwrap();
    rt().block_on(async {
        let mut input = data;
        let Ok(raw) = RawHeader::read(&mut input, "fuzz").await else {
            return;
        };
        let Ok(mut o) = Opener::new(input, &raw, &dek, "fuzz", 1) else {
            return;
        };
        while let Ok(Some(_)) = o.next_chunk().await {}
    });
});
