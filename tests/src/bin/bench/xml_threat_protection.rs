//! xml-threat-protection on 1 MB and 10 KB XML bodies.
//!
//! Envoy has no XML validation filter. As for json-threat-protection, every row ends with
//! Envoy's native `buffer` filter so the direct-response route answers only after the whole
//! body arrived: the bare row is that alone (receiving and holding the body), the native row
//! adds a Lua filter that takes the whole body (`request_handle:body()`) without validating it,
//! and the policy row checks every byte against all limits.

use super::{row, Group, Kind};
use palisade_tests::Filter;
use serde_json::json;

fn buffer() -> Filter {
    Filter::Native(json!({
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 4 * 1024 * 1024,
        },
    }))
}

fn lua() -> Filter {
    Filter::Native(json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string":
                "function envoy_on_request(h)\n  local b = h:body()\n  if b == nil or b:length() == 0 then\n    h:respond({[\":status\"] = \"400\"}, \"empty\")\n  end\nend\n"},
        },
    }))
}

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
    let dir = palisade_tests::root().join("target/bench-bodies");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{label}.xml"));
    let _ = std::fs::write(&file, document(size));
    let policy = json!({
        "maxNodeDepth": 10,
        "maxAttributeCountPerElement": 10,
        "maxNamespaceCountPerElement": 5,
        "maxChildCount": 100_000,
        "maxTextLength": 1000,
        "maxAttributeLength": 100,
        "maxCommentLength": 100,
        "maxNameLength": 50,
        "maxBodyBytes": 4 * 1024 * 1024,
    });
    Group {
        name: "xml-threat-protection",
        about,
        headers: vec![
            (":method", "POST".into()),
            (":body-file", file.display().to_string()),
            ("content-type", "application/xml".into()),
        ],
        rows: vec![
            row(
                "bare Envoy + buffer (no validation)",
                Kind::Bare,
                vec![buffer()],
            ),
            row(
                "xml-threat-protection (wasm) + buffer",
                Kind::Palisade,
                vec![
                    Filter::wasm("xml-threat-protection", policy.to_string()),
                    buffer(),
                ],
            ),
            row(
                "lua body() (native, no validation) + buffer",
                Kind::Native,
                vec![lua(), buffer()],
            ),
        ],
    }
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
