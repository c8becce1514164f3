//! client-id-enforcement with a remote registry (1,000 clients: issue 14's workload; 50,000: a
//! large registry) vs Envoy's native `api_key_auth` with the same keys.

use super::{bare, row, Group, Kind};
use palisade_tests::{Filter, MockServer};
use serde_json::json;

/// The registry sizes measured, one group each.
pub const SIZES: [(usize, &str); 2] = [
    (
        1_000,
        "1,000-client registry, a known client id in a header",
    ),
    (
        50_000,
        "50,000-client registry, a known client id in a header",
    ),
];

pub fn group((clients, about): (usize, &'static str)) -> Group {
    let ids: Vec<String> = (0..clients)
        .map(|i| format!("client-{i:05}-{:08x}", i * 2_654_435_761 % (1 << 31)))
        .collect();
    // Keys only, like api_key_auth: the policy runs with `clientSecretSource: null`.
    let registry: Vec<_> = ids
        .iter()
        .map(|id| json!({"clientId": id, "contracts": {"orders": "gold"}}))
        .collect();
    // The registry server lives for the whole benchmark run.
    let server: &'static MockServer = Box::leak(Box::new(MockServer::start()));
    server.respond("/clients", 200, json!({ "clients": registry }).to_string());

    let policy = Filter::wasm(
        "client-id-enforcement",
        json!({"api": "orders", "clientSecretSource": null,
               "registry": {"cluster": "registry", "refreshSeconds": 300}})
        .to_string(),
    );
    let credentials: Vec<_> = ids
        .iter()
        .map(|id| json!({"key": id, "client": id}))
        .collect();
    let native = json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": credentials,
            "key_sources": [{"header": "client_id"}],
        },
    });
    let mut id_only = row(
        "client-id-enforcement, id only (wasm)",
        Kind::Palisade,
        vec![policy],
    );
    id_only.gateway = id_only.gateway.cluster("registry", server.port());
    Group {
        refused_body: None,
        name: "client-id-enforcement",
        about,
        headers: vec![("client_id", ids[clients / 2].clone())],
        rows: vec![
            bare(),
            id_only,
            row(
                "api_key_auth (native)",
                Kind::Native,
                vec![Filter::Native(native)],
            ),
        ],
    }
}
