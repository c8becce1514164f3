//! The six-policy chain of `make soak` (ip-filter, cors, jwt-validation, client-id-enforcement,
//! rate-limiting, json-threat-protection, each its own filter, then Envoy's `buffer` filter)
//! against the native stack doing what Envoy can of the same (rbac, cors, jwt_authn with its
//! JWT cache, api_key_auth, local_ratelimit, buffer), bare Envoy with `buffer`, the floor (six
//! do-nothing wasm filters and `buffer`), and, when `dist/palisade.wasm` exists, the bundle
//! (the same six policies in one filter, configured per filters/palisade/README.md).
//!
//! The request: a cross-origin POST of a small JSON order with an RS256 token (the same one
//! every request: both stacks answer from their caches) and a client id, routed to a loopback
//! upstream (Envoy's native `cors` filter does nothing on a `direct_response` route).

use super::jwt_validation::oidc;
use super::{row, selected, Group, Kind, Row};
use palisade_tests::Filter;
use serde_json::{json, Value};

const ISS: &str = "https://issuer.bench";
const ORIGIN: &str = "https://app.example.com";
const CLIENT: &str = "client-00042";
/// Allowed client addresses (the load comes from 127.0.0.1).
const ALLOWED: [(&str, u32); 2] = [("127.0.0.0", 8), ("10.0.0.0", 8)];
/// A per-second limit no benchmark reaches.
const HUGE: u64 = 1_000_000_000;

fn buffer() -> Filter {
    Filter::Native(json!({
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 1 << 20,
        },
    }))
}

/// The six policies and their configurations, in chain order.
fn policies(jwks: &str, clients: &[String]) -> Vec<(&'static str, Value)> {
    let ips: Vec<String> = ALLOWED.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    let registry: Vec<Value> = clients
        .iter()
        .map(|id| json!({"clientId": id, "contracts": {"orders": "gold"}}))
        .collect();
    vec![
        ("ip-filter", json!({"ips": ips})),
        (
            "cors",
            json!({"originGroups": [{"origins": [ORIGIN],
                   "allowedMethods": ["GET", "POST"],
                   "headers": ["authorization", "content-type", "client_id"]}]}),
        ),
        (
            "jwt-validation",
            json!({"issuer": ISS, "audiences": ["orders"], "localJwks": jwks,
                   "algorithms": ["RS256"]}),
        ),
        (
            "client-id-enforcement",
            json!({"api": "orders", "clientSecretSource": null, "clients": registry}),
        ),
        (
            "rate-limiting",
            json!({"keySelector": "ip",
                   "rateLimits": [{"maximumRequests": HUGE, "timePeriodInMilliseconds": 1000}]}),
        ),
        (
            "json-threat-protection",
            json!({"maxBodyBytes": 64 * 1024, "maxContainerDepth": 32}),
        ),
    ]
}

fn native_stack(jwks: &str, clients: &[String]) -> Row {
    let principals: Vec<Value> = ALLOWED
        .iter()
        .map(|(a, l)| json!({"remote_ip": {"address_prefix": a, "prefix_len": l}}))
        .collect();
    let bucket = json!({"max_tokens": HUGE, "tokens_per_fill": HUGE, "fill_interval": "1s"});
    let filters = vec![
        Filter::Native(json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": "ALLOW", "policies": {"allowlist": {
                    "permissions": [{"any": true}], "principals": principals}}},
            },
        })),
        Filter::Native(json!({
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        })),
        Filter::Native(json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"bench": {
                    "issuer": ISS, "audiences": ["orders"],
                    "local_jwks": {"inline_string": jwks}, "forward": true,
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
            },
        })),
        Filter::Native(json!({
            "name": "envoy.filters.http.api_key_auth",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": clients.iter().map(|id| json!({"key": id, "client": id})).collect::<Vec<_>>(),
                "key_sources": [{"header": "client_id"}],
            },
        })),
        Filter::Native(json!({
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "rl",
                "token_bucket": bucket,
                "filter_enabled": {"runtime_key": "rl_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                "filter_enforced": {"runtime_key": "rl_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                "descriptors": [{"entries": [{"key": "remote_address"}], "token_bucket": bucket}],
                "rate_limits": [{"actions": [{"remote_address": {}}]}],
            },
        })),
        buffer(),
    ];
    let mut native = row(
        "native stack: rbac + cors + jwt_authn (cache) + api_key_auth + local_ratelimit + buffer",
        Kind::Native,
        filters,
    )
    .routed();
    native.gateway = native.gateway.route_field(
        "typed_per_filter_config",
        json!({"envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": ORIGIN}],
            "allow_methods": "GET, POST",
            "allow_headers": "authorization, content-type, client_id",
        }}),
    );
    native
}

/// The bundle artifact, when it was built (by another crate's build, not required here).
fn bundle_built() -> bool {
    let dist = std::env::var_os("PALISADE_DIST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| palisade_tests::root().join("dist"));
    dist.join("palisade.wasm").exists()
}

/// What both chain groups send and configure: the six policies' configurations, the JWKS and
/// client list they were made with, and the request's headers.
struct Setup {
    policies: Vec<(&'static str, Value)>,
    jwks: String,
    clients: Vec<String>,
    headers: Vec<(&'static str, String)>,
}

fn setup() -> Setup {
    let keys: &'static oidc::TestKeys = Box::leak(Box::new(oidc::TestKeys::start()));
    let jwks = palisade_tests::http1(
        std::net::SocketAddr::from(([127, 0, 0, 1], keys.0.port())),
        &palisade_tests::Request::get("/jwks"),
    )
    .text();
    let token = keys.sign(
        "RS256",
        "rsa-a",
        json!({"iss": ISS, "aud": "orders", "sub": "bench", "exp": oidc::now() + 86_400}),
    );
    let clients: Vec<String> = (0..1000).map(|i| format!("client-{i:05}")).collect();
    let policies = policies(&jwks, &clients);
    let dir = palisade_tests::root().join("target/bench-bodies");
    let _ = std::fs::create_dir_all(&dir);
    let body = dir.join("chain-order.json");
    let _ = std::fs::write(
        &body,
        r#"{"order":{"id":"o-1234","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"leave at the door"}}"#,
    );
    let headers = vec![
        (":method", "POST".into()),
        (":body-file", body.display().to_string()),
        ("content-type", "application/json".into()),
        ("origin", ORIGIN.into()),
        ("authorization", format!("Bearer {token}")),
        ("client_id", CLIENT.into()),
    ];
    Setup {
        policies,
        jwks,
        clients,
        headers,
    }
}

/// The bundle's configuration for these members, in order.
fn bundle_config(members: &[(&'static str, Value)]) -> String {
    json!({"policies": members
        .iter()
        .map(|(policy, config)| json!({"policy": policy, "config": config}))
        .collect::<Vec<_>>()})
    .to_string()
}

pub fn group() -> Group {
    let name = "chain";
    let about = "six policies (ip-filter, cors, jwt-validation RS256 cached, client-id-enforcement, rate-limiting, json-threat-protection) + buffer, cross-origin POST of a small JSON order";
    if !selected(name) {
        return Group {
            name,
            about,
            headers: vec![],
            rows: vec![],
            refused_body: None,
        };
    }
    let Setup {
        policies,
        jwks,
        clients,
        headers,
    } = setup();

    let mut separate: Vec<Filter> = policies
        .iter()
        .map(|(policy, config)| Filter::wasm(policy, config.to_string()))
        .collect();
    separate.push(buffer());
    let mut rows = vec![
        row("bare Envoy + buffer", Kind::Bare, vec![buffer()]).routed(),
        row(
            "six policies, one filter each (wasm) + buffer",
            Kind::Palisade,
            separate,
        )
        .routed(),
    ];
    if bundle_built() {
        rows.push(
            row(
                "bundle: dist/palisade.wasm, the six in one filter + buffer",
                Kind::Palisade,
                vec![Filter::wasm("palisade", bundle_config(&policies)), buffer()],
            )
            .routed()
            .optional(),
        );
    } else {
        eprintln!("   chain: no dist/palisade.wasm, the bundle row is left out");
    }
    rows.push(native_stack(&jwks, &clients));
    Group {
        name,
        about,
        headers,
        rows,
        refused_body: None,
    }
}

/// Where the bundle's time goes: the bundle with the chain's first member, the first two, ...
/// all six (one filter each row), so each row's CPU over the previous one is that member's
/// cost inside the bundle. Run only when named (`bench.sh chain-members`).
pub fn members_group() -> Group {
    let name = "chain-members";
    let about =
        "the bundle with the chain's first 1, 2, ... 6 members + buffer, the chain's request";
    let mut group = Group {
        name,
        about,
        headers: vec![],
        rows: vec![],
        refused_body: None,
    };
    if !super::wanted().iter().any(|w| w == name) || !bundle_built() {
        return group;
    }
    let Setup {
        policies, headers, ..
    } = setup();
    group.headers = headers;
    group
        .rows
        .push(row("bare Envoy + buffer", Kind::Bare, vec![buffer()]).routed());
    for k in 1..=policies.len() {
        let members = &policies[..k];
        let label = members
            .iter()
            .map(|(policy, _)| *policy)
            .collect::<Vec<_>>()
            .join(" + ");
        group.rows.push(
            row(
                &format!("bundle: {label} + buffer"),
                Kind::Palisade,
                vec![Filter::wasm("palisade", bundle_config(members)), buffer()],
            )
            .routed(),
        );
    }
    group
}
