//! xml-threat-protection on 1 MB and 10 KB XML bodies. Envoy has no XML validation filter;
//! the rows (buffer alone, the policy, a Lua filter reading the body, all on a real route) are
//! described in [`super::body`].

use super::body::BodyBench;
use super::Group;
use serde_json::json;

/// An XML document of `size` bytes or a few more: a list of small records.
pub fn document(size: usize) -> String {
    let record = "<order id=\"12345\" xmlns:x=\"urn:example:x\"><x:item sku=\"A-1\" qty=\"2\">Widget &amp; co</x:item><note><![CDATA[<raw> text]]></note><!-- checked --></order>\n";
    let mut doc = String::with_capacity(size + record.len());
    doc.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<orders>\n");
    while doc.len() + record.len() + 10 < size {
        doc.push_str(record);
    }
    doc.push_str("</orders>\n");
    doc
}

fn body_group(label: &'static str, about: &'static str, size: usize) -> Group {
    BodyBench {
        policy: "xml-threat-protection",
        content_type: "application/xml",
        config: json!({
            "maxNodeDepth": 10,
            "maxAttributeCountPerElement": 10,
            "maxNamespaceCountPerElement": 5,
            "maxChildCount": 100_000,
            "maxTextLength": 1000,
            "maxAttributeLength": 100,
            "maxCommentLength": 100,
            "maxNameLength": 50,
            "maxBodyBytes": 4 * 1024 * 1024,
        }),
        // One level deeper than maxContainerDepth / maxNodeDepth.
        refused: format!("{}{}", "<a>".repeat(11), "</a>".repeat(11)),
    }
    .group(label, about, document(size))
}

pub fn group() -> Group {
    body_group(
        "xml-1mb",
        "POST of a 1 MB XML document (1,000,000 bytes), all limits set",
        1_000_000,
    )
}

pub fn small_group() -> Group {
    body_group(
        "xml-10kb",
        "POST of a 10 KB XML document (10,000 bytes), all limits set",
        10_000,
    )
}
