//! cors vs Envoy's native `cors` filter (its policy as route-level `typed_per_filter_config`),
//! with the same grant: 20 exact origins and one subdomain pattern, the request's origin matching
//! the pattern. Two groups: an actual cross-origin GET, and a preflight.
//!
//! Envoy's native filter finds its policy only on a route to a cluster (it does nothing on a
//! `direct_response` route), so these rows route to an echo upstream in this process instead of
//! the runner's direct response: actual requests are proxied (the same cost in every row, which
//! the Envoy CPU per request includes), preflights are answered by the filters and never reach
//! it. The preflight group's bare row answers the `OPTIONS` with Envoy's direct response.

use super::{bare, row, Group, Kind, Row};
use palisade_tests::{Filter, Upstream};
use serde_json::{json, Value};
use std::sync::OnceLock;

const ORIGIN: &str = "https://app.example.com";

fn exact_origins() -> Vec<String> {
    (0..20)
        .map(|i| format!("https://site{i}.partner.test"))
        .collect()
}

/// One echo upstream for the whole run.
fn routed(mut r: Row) -> Row {
    static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
    r.gateway = r.gateway.upstream(UPSTREAM.get_or_init(Upstream::start));
    r
}

fn palisade() -> Row {
    let mut origins = exact_origins();
    origins.push("https://*.example.com".into());
    let config = json!({"publicResource": false, "supportCredentials": true, "originGroups": [{
        "origins": origins, "accessControlMaxAge": 600,
        "allowedMethods": ["GET", "PUT", "POST", "DELETE"],
        "headers": ["x-request-id", "content-type"],
        "exposedHeaders": ["x-ratelimit-remaining"]}]});
    routed(row(
        "cors (wasm)",
        Kind::Palisade,
        vec![Filter::wasm("cors", config.to_string())],
    ))
}

fn native() -> Row {
    let mut matchers: Vec<Value> = exact_origins()
        .into_iter()
        .map(|o| json!({"exact": o}))
        .collect();
    matchers.push(
        json!({"safe_regex": {"regex": r"^https://[a-z0-9-]+(\.[a-z0-9-]+)*\.example\.com$"}}),
    );
    let filter = json!({
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
    });
    let mut r = routed(row(
        "cors (native)",
        Kind::Native,
        vec![Filter::Native(filter)],
    ));
    r.gateway = r.gateway.route_field(
        "typed_per_filter_config",
        json!({"envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": matchers,
            "allow_methods": "GET, PUT, POST, DELETE",
            "allow_headers": "x-request-id, content-type",
            "expose_headers": "x-ratelimit-remaining",
            "max_age": "600",
            "allow_credentials": true,
        }}),
    );
    r
}

/// The actual-request group.
pub fn group() -> Group {
    Group {
        refused_body: None,
        name: "cors",
        about:
            "actual cross-origin GET proxied to an echo upstream, origin matched by a subdomain pattern after 20 exact origins",
        headers: vec![("origin", ORIGIN.into())],
        rows: vec![routed(bare()), palisade(), native()],
    }
}

/// The preflight group.
pub fn preflight_group() -> Group {
    Group {
        refused_body: None,
        name: "cors",
        about: "preflight (OPTIONS, PUT with two request headers) answered by the filter (bare: Envoy direct response)",
        headers: vec![
            (":method", "OPTIONS".into()),
            ("origin", ORIGIN.into()),
            ("access-control-request-method", "PUT".into()),
            (
                "access-control-request-headers",
                "content-type,x-request-id".into(),
            ),
        ],
        rows: vec![bare(), palisade(), native()],
    }
}
