//! The RDB scanner over any bytes (a hostile primary's snapshot): it ends in
//! items and an error or the end, never a panic, a hang or an allocation
//! sized by an unchecked length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvault::rdb::{RdbScanner, ScanOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ScanOptions {
        keep_values: true,
        ..Default::default()
    };
    let Ok(mut s) = RdbScanner::new(data, opts) else {
        return;
    };
    // An item consumes at least one byte: more items than bytes is a loop.
    for _ in 0..=data.len() {
        match s.next() {
            Ok(Some(_)) => {}
            _ => return,
        }
    }
    panic!("more items than input bytes");
});
