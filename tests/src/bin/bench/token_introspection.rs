//! token-introspection with a warm cache vs no policy: the token was introspected once (by the
//! probe request), every measured request is answered from shared data. Envoy has no native
//! introspection filter (`ext_authz` to a service would measure that service), so there is no
//! native row. The provider is tests/oidc/provider.mjs.

use super::jwt_validation::oidc;
use super::{bare, row, Group, Kind};
use palisade_tests::Filter;
use serde_json::json;

pub fn group() -> Group {
    let name = "token-introspection";
    let about = "opaque token, warm shared cache";
    if !super::selected(name) {
        // Building the group starts the provider: not for groups that will not run.
        return Group {
            refused_body: None,
            name,
            about,
            headers: vec![],
            rows: vec![],
        };
    }
    let op = oidc::Provider::start();
    let port = op.0.port();
    let token = op.token(("orders-client", "orders-secret"), "orders:read", None);
    // The provider lives as long as the benchmark process (it dies with it).
    std::mem::forget(op);
    let config = json!({
        "introspectionUrl": format!("http://127.0.0.1:{port}/token/introspection"),
        "cluster": "idp",
        "authorizationValue": oidc::basic("introspector", "introspector-secret"),
        "scopes": "orders:read",
    });
    let mut ours = row(
        "token-introspection, warm cache (wasm)",
        Kind::Palisade,
        vec![Filter::wasm("token-introspection", config.to_string())],
    );
    ours.gateway = ours.gateway.cluster("idp", port);
    Group {
        refused_body: None,
        name,
        about,
        headers: vec![("authorization", format!("Bearer {token}"))],
        rows: vec![bare(), ours],
    }
}
