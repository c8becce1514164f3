//! spike-control vs Envoy's native `local_ratelimit` (the closest native filter: a token bucket
//! that rejects, with no holding of requests), limits high enough that nothing is delayed.

use super::{bare, row, Group, Kind};
use palisade_tests::Filter;
use serde_json::json;

pub fn group() -> Group {
    // The sliding log keeps one entry per millisecond with requests: a 100 ms window holds about
    // 100 entries, which every check reads and writes back. 10,000 per 100 ms is above what the
    // benchmark reaches, so nothing is delayed.
    let policy = Filter::wasm(
        "spike-control",
        json!({"maximumRequests": 10_000, "timePeriodInMilliseconds": 100,
               "delayTimeInMillis": 100, "delayAttempts": 1, "queuingLimit": 10})
        .to_string(),
    );
    let huge = 1_000_000_000u64;
    let native = json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": huge, "tokens_per_fill": huge, "fill_interval": "1s"},
            "filter_enabled": {"runtime_key": "rl_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "rl_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        },
    });
    Group {
        refused_body: None,
        name: "spike-control",
        about: "10,000 per 100 ms sliding window for the whole API, nothing delayed",
        headers: vec![],
        rows: vec![
            bare(),
            row("spike-control (wasm)", Kind::Palisade, vec![policy]),
            row(
                "local_ratelimit (native)",
                Kind::Native,
                vec![Filter::Native(native)],
            ),
        ],
    }
}
