//! What the body-inspection groups (json- and xml-threat-protection) share.
//!
//! Envoy has no JSON or XML validation filter. Every row ends with Envoy's native `buffer`
//! filter, which reads the whole request body before the direct-response route answers (without
//! it the route would answer at the headers and the body would never be processed): the bare
//! row is that alone, the cost of receiving and holding the body. The native row adds a Lua
//! filter that takes the whole body (`request_handle:body()`) and checks it is not empty: the
//! cheapest native way for a script to look at a body, without validating it. The policy row
//! validates every byte against all limits.

use super::{row, Group, Kind};
use palisade_tests::Filter;
use serde_json::{json, Value};

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

/// A body-inspection policy's benchmark subject.
pub struct BodyBench {
    /// The policy name.
    pub policy: &'static str,
    /// The media type of the request (and, after `/`, the body file's extension).
    pub content_type: &'static str,
    /// The policy configuration (all limits set).
    pub config: Value,
}

impl BodyBench {
    /// The group POSTing `document` (written to `target/bench-bodies/<label>.<ext>`).
    pub fn group(&self, label: &'static str, about: &'static str, document: String) -> Group {
        let dir = palisade_tests::root().join("target/bench-bodies");
        let _ = std::fs::create_dir_all(&dir);
        let ext = self.content_type.rsplit('/').next().unwrap_or("body");
        let file = dir.join(format!("{label}.{ext}"));
        let _ = std::fs::write(&file, document);
        Group {
            name: self.policy,
            about,
            headers: vec![
                (":method", "POST".into()),
                (":body-file", file.display().to_string()),
                ("content-type", self.content_type.into()),
            ],
            rows: vec![
                row(
                    "bare Envoy + buffer (no validation)",
                    Kind::Bare,
                    vec![buffer()],
                ),
                row(
                    &format!("{} (wasm) + buffer", self.policy),
                    Kind::Palisade,
                    vec![Filter::wasm(self.policy, self.config.to_string()), buffer()],
                ),
                row(
                    "lua body() (native, no validation) + buffer",
                    Kind::Native,
                    vec![lua(), buffer()],
                ),
            ],
        }
    }
}
