//! rate-limiting vs Envoy's native `local_ratelimit` with an equivalent per-client descriptor,
//! limits high enough that nothing is rejected; and the cost of contention, two workers counting
//! into one key.

use super::{bare, row, Group, Kind, Row};
use palisade_tests::Filter;
use serde_json::json;

/// A per-second limit no benchmark reaches.
const HUGE: u64 = 1_000_000_000;

fn policy(key_selector: Option<&str>) -> Filter {
    let mut config = json!({
        "rateLimits": [{"maximumRequests": HUGE, "timePeriodInMilliseconds": 1000}],
        "exposeHeaders": true,
    });
    if let Some(key) = key_selector {
        config["keySelector"] = json!(key);
    }
    Filter::wasm("rate-limiting", config.to_string())
}

/// `local_ratelimit` with a per-remote-address descriptor (each address its own bucket) or,
/// without descriptors, one bucket for everything; buckets so large nothing is limited.
fn native(per_address: bool) -> Filter {
    let bucket = json!({"max_tokens": HUGE, "tokens_per_fill": HUGE, "fill_interval": "1s"});
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "rl",
        "token_bucket": bucket,
        "filter_enabled": {"runtime_key": "rl_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"runtime_key": "rl_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
    });
    if per_address {
        config["descriptors"] =
            json!([{"entries": [{"key": "remote_address"}], "token_bucket": bucket}]);
        config["rate_limits"] = json!([{"actions": [{"remote_address": {}}]}]);
    }
    Filter::Native(json!({"name": "envoy.filters.http.local_ratelimit", "typed_config": config}))
}

pub fn group() -> Group {
    Group {
        refused_body: None,
        name: "rate-limiting",
        about: "per-client-IP limit with headers, nothing rejected",
        headers: vec![],
        rows: vec![
            bare(),
            row(
                "rate-limiting, key ip (wasm)",
                Kind::Palisade,
                vec![policy(Some("ip"))],
            ),
            row(
                "local_ratelimit, remote_address descriptor (native)",
                Kind::Native,
                vec![native(true)],
            ),
        ],
    }
}

fn two_workers(mut r: Row) -> Row {
    r.gateway = r.gateway.concurrency(2);
    r
}

/// Both workers count every request into the same key (compare-and-swap on one shared-data
/// entry). The runner pins Envoy to one core, so this measures the two workers interleaving on
/// it, not parallel contention on two cores.
pub fn contention_group() -> Group {
    Group {
        refused_body: None,
        name: "rate-limiting",
        about: "2 workers, one key for the whole API",
        headers: vec![],
        rows: vec![
            two_workers(row("bare Envoy, 2 workers", Kind::Bare, vec![])),
            two_workers(row(
                "rate-limiting, one key, 2 workers (wasm)",
                Kind::Palisade,
                vec![policy(None)],
            )),
            two_workers(row(
                "local_ratelimit, one bucket, 2 workers (native)",
                Kind::Native,
                vec![native(false)],
            )),
        ],
    }
}
