//! Native micro-benchmark: the streaming scanner (whole document and 16 KiB chunks, all limits
//! set) versus `serde_json` parsing the same document to `IgnoredAny`, in MB/s.
//! Run with `cargo bench -p json-threat-protection`.

use json_threat_protection::scanner::{JsonScanner, Limits};
use palisade_kit::body::testing::{mb_per_s, scan_chunked};
use palisade_kit::body::BodyScanner;
use serde::de::IgnoredAny;
use std::hint::black_box;

fn document(size: usize) -> String {
    let record = r#"{"id":12345,"name":"Ada Lovelace","tags":["math","engines"],"score":-12.5e3,"active":true,"note":"caf\u00e9 \"quoted\""},"#;
    let mut doc = String::from("[");
    while doc.len() + record.len() < size {
        doc.push_str(record);
    }
    doc.push_str("null]");
    doc
}

fn main() {
    let limits = Limits {
        max_depth: Some(10),
        max_string: Some(1000),
        max_name: Some(100),
        max_entries: Some(100),
        max_elements: Some(100_000),
        reject_duplicate_keys: false,
    };
    println!("| document | scanner (whole) MB/s | scanner (16 KiB chunks) MB/s | serde_json IgnoredAny MB/s | scanner / serde_json |");
    println!("|---|---:|---:|---:|---:|");
    for size in [10_000, 1_000_000] {
        let doc = document(size);
        let bytes = doc.as_bytes();
        let whole = mb_per_s(bytes.len(), || {
            let mut s = JsonScanner::new(limits);
            black_box(s.feed(black_box(bytes)).and_then(|()| s.finish())).ok();
        });
        let chunked = mb_per_s(bytes.len(), || {
            black_box(scan_chunked(
                JsonScanner::new(limits),
                black_box(bytes),
                16 * 1024,
            ))
            .ok();
        });
        let serde = mb_per_s(bytes.len(), || {
            black_box(serde_json::from_slice::<IgnoredAny>(black_box(bytes))).ok();
        });
        println!(
            "| {} bytes | {whole:.0} | {chunked:.0} | {serde:.0} | {:.2}× |",
            bytes.len(),
            whole / serde
        );
    }
}
