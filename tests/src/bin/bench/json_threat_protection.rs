//! json-threat-protection on 1 MB and 10 KB JSON bodies. Envoy has no JSON validation filter;
//! the rows (buffer alone, the policy, a Lua filter reading the body, all on a real route) are
//! described in [`super::body`].

use super::body::BodyBench;
use super::Group;
use serde_json::json;

/// A JSON document of `size` bytes or a few more: an array of small records.
pub fn document(size: usize) -> String {
    let record = r#"{"id":12345,"name":"Ada Lovelace","tags":["math","engines"],"score":-12.5e3,"active":true,"note":"caf\u00e9 \"quoted\""},"#;
    let mut doc = String::with_capacity(size + record.len());
    doc.push('[');
    while doc.len() + record.len() < size {
        doc.push_str(record);
    }
    doc.push_str("null]");
    doc
}

fn body_group(label: &'static str, about: &'static str, size: usize) -> Group {
    BodyBench {
        policy: "json-threat-protection",
        content_type: "application/json",
        config: json!({
            "maxContainerDepth": 10,
            "maxStringValueLength": 1000,
            "maxObjectEntryNameLength": 100,
            "maxObjectEntryCount": 100,
            "maxArrayElementCount": 100_000,
            "maxBodyBytes": 4 * 1024 * 1024,
        }),
        // One level deeper than maxContainerDepth / maxNodeDepth.
        refused: format!("{}1{}", "[".repeat(11), "]".repeat(11)),
    }
    .group(label, about, document(size))
}

pub fn group() -> Group {
    body_group(
        "json-1mb",
        "POST of a 1 MB JSON document (1,000,000 bytes), all limits set",
        1_000_000,
    )
}

pub fn small_group() -> Group {
    body_group(
        "json-10kb",
        "POST of a 10 KB JSON document (10,000 bytes), all limits set",
        10_000,
    )
}
