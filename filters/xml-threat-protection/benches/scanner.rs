//! Micro-benchmark: the streaming scanner (whole document and 16 KiB chunks, all limits set)
//! versus `quick-xml` reading every event of the same document (well-formedness checks on: end
//! names checked), in MB/s, on two documents: `records` (short elements and attributes:
//! markup-heavy) and `text` (long text nodes: what bulk classification skips).
//!
//! Natively: `cargo bench -p xml-threat-protection`. In V8, which is what Envoy runs: build it
//! for wasm (`cargo build --release --target wasm32-wasip1 -p xml-threat-protection --bench
//! scanner`: `--benches` would build the unit tests for wasm too) and run, from the repository
//! root, `node --no-liftoff scripts/wasi-bench.mjs target/wasm32-wasip1/release/deps/scanner-*.wasm`.
//! The timing loop is here rather than the kit's `body::testing::mb_per_s` because that module
//! is native-only and this benchmark also runs in wasm.

use palisade_kit::body::BodyScanner;
use quick_xml::events::Event;
use quick_xml::Reader;
use std::hint::black_box;
use std::time::{Duration, Instant};
use xml_threat_protection::scanner::{Limits, XmlScanner};

fn records(size: usize) -> String {
    let record = "<order id=\"12345\" xmlns:x=\"urn:example:x\"><x:item sku=\"A-1\" qty=\"2\">Widget &amp; co</x:item><note><![CDATA[<raw> text]]></note><!-- checked --></order>\n";
    let mut doc = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<orders>\n");
    while doc.len() + record.len() + 10 < size {
        doc.push_str(record);
    }
    doc.push_str("</orders>\n");
    doc
}

fn text(size: usize) -> String {
    let record = "<note lang=\"en\"><title>Notes on the Analytical Engine</title><body>The Analytical Engine has no pretensions whatever to originate anything. It can do whatever we know how to order it to perform. It can follow analysis; but it has no power of anticipating any analytical relations or truths. Its province is to assist us in making available what we are already acquainted with.</body></note>\n";
    let mut doc = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<notes>\n");
    while doc.len() + record.len() + 10 < size {
        doc.push_str(record);
    }
    doc.push_str("</notes>\n");
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
    let mut scanner = XmlScanner::new(limits);
    doc.chunks(step).all(|chunk| scanner.feed(chunk).is_ok()) && scanner.finish().is_ok()
}

/// quick-xml reading all events, checking end names and unescaping texts and attributes
/// (roughly the work of a well-formedness check).
fn quick(doc: &[u8]) -> usize {
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().check_end_names = true;
    let mut n = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => return n,
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                for a in e.attributes() {
                    if let Ok(a) = a {
                        n += a.unescape_value().map_or(0, |v| v.len());
                    } else {
                        return 0;
                    }
                }
            }
            Ok(Event::Text(t)) => n += t.unescape().map_or(0, |v| v.len()),
            Ok(_) => n += 1,
            Err(_) => return 0,
        }
    }
}

fn main() {
    let limits = Limits {
        max_depth: Some(10),
        max_attributes: Some(10),
        max_namespaces: Some(5),
        max_children: Some(100_000),
        max_text: Some(1000),
        max_attribute_length: Some(100),
        max_comment: Some(100),
        max_name: Some(50),
        ..Limits::default()
    };
    println!("| document | scanner (whole) MB/s | scanner (16 KiB chunks) MB/s | quick-xml events MB/s | scanner / quick-xml |");
    println!("|---|---:|---:|---:|---:|");
    for (name, make) in [("records", records as fn(usize) -> String), ("text", text)] {
        for size in [10_000, 1_000_000] {
            let doc = make(size);
            let bytes = doc.as_bytes();
            let valid = xml_threat_protection::scanner::scan(limits, bytes);
            assert!(valid.is_ok(), "{name}: {valid:?}");
            assert!(scan_chunked(limits, bytes, 16 * 1024));
            assert!(quick(bytes) > 0);
            let whole = mb_per_s(bytes.len(), || {
                let mut s = XmlScanner::new(limits);
                black_box(s.feed(black_box(bytes)).and_then(|()| s.finish())).ok();
            });
            let chunked = mb_per_s(bytes.len(), || {
                black_box(scan_chunked(limits, black_box(bytes), 16 * 1024));
            });
            let qx = mb_per_s(bytes.len(), || {
                black_box(quick(black_box(bytes)));
            });
            println!(
                "| {name}, {} bytes | {whole:.0} | {chunked:.0} | {qx:.0} | {:.2}× |",
                bytes.len(),
                whole / qx
            );
        }
    }
}
