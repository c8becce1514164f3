//! `cargo +nightly fuzz run scanner` (from filters/json-threat-protection): any input, any
//! limits and any chunking must never panic, and chunking must never change the verdict.
#![no_main]

use json_threat_protection::scanner::{scan, JsonScanner, Limits};
use libfuzzer_sys::fuzz_target;
use palisade_kit::body::testing::scan_alternating;

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the limits and the chunk sizes; the rest is the document.
    let Some((&[l, c1, c2], doc)) = data.split_first_chunk::<3>().map(|(h, d)| (h, d)) else {
        return;
    };
    let pick = |bits: u8| (bits & 3 != 0).then_some(u64::from(bits & 7));
    let limits = Limits {
        max_depth: pick(l),
        max_string: pick(l >> 1),
        max_name: pick(l >> 2),
        max_entries: pick(l >> 3),
        max_elements: pick(l >> 4),
        reject_duplicate_keys: l & 0x80 != 0,
    };
    let whole = scan(limits, doc);
    let sizes = [usize::from(c1 % 17) + 1, usize::from(c2 % 5) + 1];
    let chunked = scan_alternating(JsonScanner::new(limits), doc, sizes);
    assert_eq!(whole, chunked);
});
