//! json-threat-protection on 1 MB and 10 KB JSON bodies.
//!
//! Envoy has no JSON validation filter. Every row ends with Envoy's native `buffer` filter,
//! which reads the whole request body before the direct-response route answers (without it the
//! route would answer at the headers and the body would never be processed): the bare row is
//! that alone, the cost of receiving and holding the body. The native row adds a Lua filter
//! that takes the whole body (`request_handle:body()`) and checks it is not empty: the
//! cheapest native way for a script to look at a body, without validating it. The policy row
//! validates every byte against all five structural limits.

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
    let dir = palisade_tests::root().join("target/bench-bodies");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{label}.json"));
    let _ = std::fs::write(&file, document(size));
    let policy = json!({
        "maxContainerDepth": 10,
        "maxStringValueLength": 1000,
        "maxObjectEntryNameLength": 100,
        "maxObjectEntryCount": 100,
        "maxArrayElementCount": 100_000,
        "maxBodyBytes": 4 * 1024 * 1024,
    });
    Group {
        name: "json-threat-protection",
        about,
        headers: vec![
            (":method", "POST".into()),
            (":body-file", file.display().to_string()),
            ("content-type", "application/json".into()),
        ],
        rows: vec![
            row(
                "bare Envoy + buffer (no validation)",
                Kind::Bare,
                vec![buffer()],
            ),
            row(
                "json-threat-protection (wasm) + buffer",
                Kind::Palisade,
                vec![
                    Filter::wasm("json-threat-protection", policy.to_string()),
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
