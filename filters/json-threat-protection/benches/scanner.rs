//! Micro-benchmark: the streaming scanner (whole document and 16 KiB chunks, all limits set)
//! versus `serde_json` parsing the same document to `IgnoredAny`, in MB/s, on two documents:
//! `records` (short keys, numbers, literals: structure-heavy) and `text` (long string values:
//! what bulk classification skips).
//!
//! Natively: `cargo bench -p json-threat-protection [-- records|text]` (the argument keeps only
//! that document). In V8, which is what Envoy runs: build it for wasm (`cargo build --release
//! --target wasm32-wasip1 -p json-threat-protection --bench scanner`) and run, from the
//! repository root, `node --no-liftoff scripts/wasi-bench.mjs target/wasm32-wasip1/release/deps/scanner-*.wasm`
//! (every document).
//! The timing loop is here rather than the kit's `body::testing::mb_per_s` because that module
//! is native-only and this benchmark also runs in wasm.

use json_threat_protection::scanner::{JsonScanner, Limits};
use palisade_kit::body::BodyScanner;
use serde::de::IgnoredAny;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn records(size: usize) -> String {
    let record = r#"{"id":12345,"name":"Ada Lovelace","tags":["math","engines"],"score":-12.5e3,"active":true,"note":"caf\u00e9 \"quoted\""},"#;
    repeat(record, size)
}

fn text(size: usize) -> String {
    let record = r#"{"title":"Notes on the Analytical Engine","body":"The Analytical Engine has no pretensions whatever to originate anything. It can do whatever we know how to order it to perform. It can follow analysis; but it has no power of anticipating any analytical relations or truths. Its province is to assist us in making available what we are already acquainted with.","lang":"en"},"#;
    repeat(record, size)
}

fn repeat(record: &str, size: usize) -> String {
    let mut doc = String::from("[\n");
    while doc.len() + record.len() + 8 < size {
        doc.push_str(record);
        doc.push_str("\n  ");
    }
    doc.push_str("null]");
    doc
}

/// MB/s of `f` over `bytes`-sized inputs: best of 5 runs of at least 300 ms.
fn mb_per_s(bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            f();
            n += 1;
        }
        best = best.max(bytes as f64 * n as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    best
}

fn scan_chunked(limits: Limits, doc: &[u8], step: usize) -> bool {
    let mut scanner = JsonScanner::new(limits);
    doc.chunks(step).all(|chunk| scanner.feed(chunk).is_ok()) && scanner.finish().is_ok()
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
    // An optional argument keeps only the documents whose name contains it (`records`,
    // `text`), for quicker before/after comparisons; `cargo bench` adds a `--bench` flag.
    let only = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    println!("| document | scanner (whole) MB/s | scanner (16 KiB chunks) MB/s | serde_json IgnoredAny MB/s | scanner / serde_json |");
    println!("|---|---:|---:|---:|---:|");
    for (name, make) in [("records", records as fn(usize) -> String), ("text", text)] {
        if !name.contains(only.as_str()) {
            continue;
        }
        for size in [10_000, 1_000_000] {
            let doc = make(size);
            let bytes = doc.as_bytes();
            let mut whole_scanner = JsonScanner::new(limits);
            let valid = whole_scanner
                .feed(bytes)
                .and_then(|()| whole_scanner.finish());
            assert!(valid.is_ok(), "{name}: {valid:?}");
            assert!(scan_chunked(limits, bytes, 16 * 1024));
            let whole = mb_per_s(bytes.len(), || {
                let mut s = JsonScanner::new(limits);
                black_box(s.feed(black_box(bytes)).and_then(|()| s.finish())).ok();
            });
            let chunked = mb_per_s(bytes.len(), || {
                black_box(scan_chunked(limits, black_box(bytes), 16 * 1024));
            });
            let serde = mb_per_s(bytes.len(), || {
                black_box(serde_json::from_slice::<IgnoredAny>(black_box(bytes))).ok();
            });
            println!(
                "| {name}, {} bytes | {whole:.0} | {chunked:.0} | {serde:.0} | {:.2}× |",
                bytes.len(),
                whole / serde
            );
        }
    }
}
