//! What the body-inspection groups (json- and xml-threat-protection) share.
//!
//! Envoy has no JSON or XML validation filter. Every row routes to a loopback upstream that
//! reads the whole request and answers `200 ok` (a real route: on a `direct_response` route
//! Envoy answers at the request headers), and ends with Envoy's native `buffer` filter, placed
//! after the policy: it holds the request until the whole body has passed the policy (before
//! the policy, it would hand the headers on first and the policy would judge a body already
//! on its way upstream). The bare row is `buffer` alone, the cost of receiving, holding and
//! forwarding the body. The native row adds a Lua filter that takes the whole body
//! (`request_handle:body()`) and checks it is not empty: the cheapest native way for a script
//! to look at a body, without validating it. The policy row validates every byte against all
//! limits; before measuring, the runner checks that it refuses a document over a limit (so it
//! does see the body).

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
    /// A document the configuration refuses (over the depth limit).
    pub refused: String,
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
                )
                .routed(),
                row(
                    &format!("{} (wasm) + buffer", self.policy),
                    Kind::Palisade,
                    vec![Filter::wasm(self.policy, self.config.to_string()), buffer()],
                )
                .routed(),
                row(
                    "lua body() (native, no validation) + buffer",
                    Kind::Native,
                    vec![lua(), buffer()],
                )
                .routed(),
            ],
            refused_body: Some(self.refused.clone().into_bytes()),
        }
    }
}
