//! Native micro-benchmark: the streaming scanner (whole document and 16 KiB chunks, all limits
//! set) versus `quick-xml` reading every event of the same document (well-formedness checks
//! on: end names checked), in MB/s. Run with `cargo bench -p xml-threat-protection`.

use palisade_kit::body::testing::{mb_per_s, scan_chunked};
use palisade_kit::body::BodyScanner;
use quick_xml::events::Event;
use quick_xml::Reader;
use std::hint::black_box;
use xml_threat_protection::scanner::{Limits, XmlScanner};

fn document(size: usize) -> String {
    let record = "<order id=\"12345\" xmlns:x=\"urn:example:x\"><x:item sku=\"A-1\" qty=\"2\">Widget &amp; co</x:item><note><![CDATA[<raw> text]]></note><!-- checked --></order>\n";
    let mut doc = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<orders>\n");
    while doc.len() + record.len() + 10 < size {
        doc.push_str(record);
    }
    doc.push_str("</orders>\n");
    doc
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
    for size in [10_000, 1_000_000] {
        let doc = document(size);
        let bytes = doc.as_bytes();
        assert!(xml_threat_protection::scanner::scan(limits, bytes).is_ok());
        assert!(quick(bytes) > 0);
        let whole = mb_per_s(bytes.len(), || {
            let mut s = XmlScanner::new(limits);
            black_box(s.feed(black_box(bytes)).and_then(|()| s.finish())).ok();
        });
        let chunked = mb_per_s(bytes.len(), || {
            black_box(scan_chunked(
                XmlScanner::new(limits),
                black_box(bytes),
                16 * 1024,
            ))
            .ok();
        });
        let qx = mb_per_s(bytes.len(), || {
            black_box(quick(black_box(bytes)));
        });
        println!(
            "| {} bytes | {whole:.0} | {chunked:.0} | {qx:.0} | {:.2}× |",
            bytes.len(),
            whole / qx
        );
    }
}
