//! jwt-validation vs Envoy's native `jwt_authn`, both with the same local JWKS, RS256 and ES256:
//! our policy with its per-VM verification cache (a repeated token skips the signature check),
//! our policy with the cache off (`cacheEntries: 0`: every request verifies the signature, as
//! with unique tokens), and `jwt_authn` (no JWT cache configured: it verifies every request).
//! Tokens and keys come from the tests' key server (tests/oidc/testkeys.mjs).

#[path = "../../../oidc/harness.rs"]
pub mod oidc;

use super::{bare, row, Group, Kind};
use palisade_tests::Filter;
use serde_json::json;

const ISS: &str = "https://issuer.bench";

/// Whether the command line selects this group (building it starts a Node.js key server, so
/// groups that will not run are left empty).
fn selected(name: &str) -> bool {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    wanted.is_empty() || wanted.iter().any(|w| w == name)
}

fn group_for(name: &'static str, about: &'static str, alg: &str, kid: &str) -> Group {
    if !selected(name) {
        return Group {
            name,
            about,
            headers: vec![],
            rows: vec![],
        };
    }
    let keys = oidc::TestKeys::start();
    let jwks = palisade_tests::http1(
        std::net::SocketAddr::from(([127, 0, 0, 1], keys.0.port())),
        &palisade_tests::Request::get("/jwks"),
    )
    .text();
    let token = keys.sign(
        alg,
        kid,
        json!({"iss": ISS, "aud": "orders", "sub": "bench", "exp": oidc::now() + 86_400}),
    );
    let ours = |cache: usize| {
        Filter::wasm(
            "jwt-validation",
            json!({"issuer": ISS, "audiences": ["orders"], "localJwks": jwks,
                   "algorithms": [alg], "cacheEntries": cache})
            .to_string(),
        )
    };
    let native = json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": {
                "issuer": ISS,
                "audiences": ["orders"],
                "local_jwks": {"inline_string": jwks},
                "forward": true,
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    });
    Group {
        name,
        about,
        headers: vec![("authorization", format!("Bearer {token}"))],
        rows: vec![
            bare(),
            row(
                "jwt-validation, cache (wasm)",
                Kind::Palisade,
                vec![ours(1000)],
            ),
            row(
                "jwt-validation, no cache (wasm)",
                Kind::Palisade,
                vec![ours(0)],
            ),
            row(
                "jwt_authn (native)",
                Kind::Native,
                vec![Filter::Native(native)],
            ),
        ],
    }
}

pub fn group() -> Group {
    group_for(
        "jwt-validation",
        "RS256 token, local JWKS",
        "RS256",
        "rsa-a",
    )
}

pub fn es256_group() -> Group {
    group_for(
        "jwt-validation-es256",
        "ES256 token, local JWKS",
        "ES256",
        "ec-a",
    )
}
