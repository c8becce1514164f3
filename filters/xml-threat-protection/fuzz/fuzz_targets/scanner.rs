//! `cargo +nightly fuzz run scanner` (from filters/xml-threat-protection): any input, any
//! limits and any chunking must never panic, and chunking must never change the verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_kit::body::testing::scan_alternating;
use xml_threat_protection::scanner::{scan, Limits, XmlScanner};

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the limits and the chunk sizes; the rest is the document.
    let Some((&[l, m, c1, c2], doc)) = data.split_first_chunk::<4>().map(|(h, d)| (h, d)) else {
        return;
    };
    let pick = |bits: u8| (bits & 3 != 0).then_some(u64::from(bits & 7));
    let limits = Limits {
        max_depth: pick(l),
        max_attributes: pick(l >> 2),
        max_namespaces: pick(l >> 4),
        max_children: pick(l >> 5),
        max_text: pick(m),
        max_attribute_length: pick(m >> 2),
        max_comment: pick(m >> 4),
        max_name: pick(m >> 5).map(|n| n + 1),
        allow_dtd: l & 0x80 != 0,
        max_entity_expansion: u64::from(c1) * 4,
    };
    let whole = scan(limits, doc);
    let sizes = [usize::from(c1 % 17) + 1, usize::from(c2 % 5) + 1];
    let chunked = scan_alternating(XmlScanner::new(limits), doc, sizes);
    assert_eq!(whole, chunked);
});
