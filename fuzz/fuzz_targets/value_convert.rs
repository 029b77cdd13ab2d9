//! One RDB value (type byte and encoding) from a backup: decoding, converting
//! for older servers and encoding again never panic, and what redvault
//! encodes always decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvault::rdb::value::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode(data) {
        for to in 9..=12 {
            decode(&encode(&v, to)).expect("an encoded value decodes");
        }
    }
    for to in 9..=11 {
        if let Ok(Some(c)) = redvault::rdb::convert(data, to, 0) {
            if let Some(raw) = c.raw {
                decode(&raw).expect("a converted value decodes");
            }
        }
    }
});
