//! jwt-validation vs Envoy's native `jwt_authn`, both with the same local JWKS, RS256 and ES256.
//! Tokens and keys come from the tests' key server (tests/oidc/testkeys.mjs).
//!
//! * Repeated token: our policy with its per-VM verification cache (a repeated token skips the
//!   signature check), `jwt_authn` without a JWT cache (it verifies every request) and with
//!   `jwt_cache_config` (its verified-token cache).
//! * Unique tokens: `BENCH_TOKENS` (default 10,000) tokens signed before the run, a different
//!   one every request (wrk walks the list), ten times more than the policy's cache holds: every
//!   request verifies a signature, in our policy (cache on, as deployed) and in `jwt_authn`.

#[path = "../../../oidc/harness.rs"]
pub mod oidc;

use super::{bare, row, selected, Group, Kind};
use palisade_tests::Filter;
use serde_json::{json, Value};

const ISS: &str = "https://issuer.bench";

/// The policy's verification cache (its default size).
const CACHE_ENTRIES: u64 = 1000;

fn claims(jti: usize) -> Value {
    json!({"iss": ISS, "aud": "orders", "sub": "bench", "jti": jti.to_string(),
           "exp": oidc::now() + 86_400})
}

fn ours(jwks: &str, alg: &str) -> Filter {
    Filter::wasm(
        "jwt-validation",
        json!({"issuer": ISS, "audiences": ["orders"], "localJwks": jwks,
               "algorithms": [alg], "cacheEntries": CACHE_ENTRIES})
        .to_string(),
    )
}

fn jwt_authn(jwks: &str, cached: bool) -> Filter {
    let mut provider = json!({
        "issuer": ISS,
        "audiences": ["orders"],
        "local_jwks": {"inline_string": jwks},
        "forward": true,
    });
    if cached {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": CACHE_ENTRIES});
    }
    Filter::Native(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }))
}

/// The key server's JWKS (the key server lives for the whole run).
fn start_keys() -> (&'static oidc::TestKeys, String) {
    let keys: &'static oidc::TestKeys = Box::leak(Box::new(oidc::TestKeys::start()));
    let jwks = palisade_tests::http1(
        std::net::SocketAddr::from(([127, 0, 0, 1], keys.0.port())),
        &palisade_tests::Request::get("/jwks"),
    )
    .text();
    (keys, jwks)
}

fn empty(name: &'static str, about: &'static str) -> Group {
    Group {
        name,
        about,
        headers: vec![],
        rows: vec![],
        refused_body: None,
    }
}

fn repeated(name: &'static str, about: &'static str, alg: &str, kid: &str) -> Group {
    if !selected(name) {
        return empty(name, about);
    }
    let (keys, jwks) = start_keys();
    let token = keys.sign(alg, kid, claims(0));
    Group {
        name,
        about,
        refused_body: None,
        headers: vec![("authorization", format!("Bearer {token}"))],
        rows: vec![
            bare(),
            row(
                "jwt-validation, cache (wasm)",
                Kind::Palisade,
                vec![ours(&jwks, alg)],
            ),
            row(
                "jwt_authn, no cache (native)",
                Kind::Native,
                vec![jwt_authn(&jwks, false)],
            ),
            row(
                "jwt_authn, jwt_cache_config (native)",
                Kind::Native,
                vec![jwt_authn(&jwks, true)],
            ),
        ],
    }
}

/// Signs `count` distinct tokens (4 clients at once) into `target/bench-tokens/<alg>.txt`.
fn token_file(keys: &oidc::TestKeys, alg: &str, kid: &str, count: usize) -> String {
    let dir = palisade_tests::root().join("target/bench-tokens");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{alg}.txt"));
    eprintln!("   signing {count} {alg} tokens");
    let clients = 4;
    let parts: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || {
                    (c..count)
                        .step_by(clients)
                        .map(|i| keys.sign(alg, kid, claims(i + 1)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a signing thread"))
            .collect()
    });
    let tokens: Vec<String> = parts.concat();
    std::fs::write(&file, tokens.join("\n") + "\n").expect("write the benchmark tokens");
    file.display().to_string()
}

fn unique(name: &'static str, about: &'static str, alg: &str, kid: &str) -> Group {
    // Only when named: signing the tokens takes a while (and the memory pass needs one group).
    if !super::wanted().iter().any(|w| w == name) && !super::wanted().is_empty() {
        return empty(name, about);
    }
    let (keys, jwks) = start_keys();
    let count = super::env_num("BENCH_TOKENS", 10 * CACHE_ENTRIES) as usize;
    let tokens = token_file(keys, alg, kid, count);
    Group {
        name,
        about,
        refused_body: None,
        headers: vec![(":tokens-file", tokens)],
        rows: vec![
            bare(),
            row(
                "jwt-validation, unique tokens (wasm)",
                Kind::Palisade,
                vec![ours(&jwks, alg)],
            ),
            row(
                "jwt_authn, unique tokens, no cache (native)",
                Kind::Native,
                vec![jwt_authn(&jwks, false)],
            ),
        ],
    }
}

pub fn group() -> Group {
    repeated(
        "jwt-validation",
        "RS256, the same token every request, local JWKS",
        "RS256",
        "rsa-a",
    )
}

pub fn unique_group() -> Group {
    unique(
        "jwt-validation",
        "RS256, a new token every request (no cache helps), local JWKS",
        "RS256",
        "rsa-a",
    )
}

pub fn es256_group() -> Group {
    repeated(
        "jwt-validation-es256",
        "ES256, the same token every request, local JWKS",
        "ES256",
        "ec-a",
    )
}

pub fn es256_unique_group() -> Group {
    unique(
        "jwt-validation-es256",
        "ES256, a new token every request (no cache helps), local JWKS",
        "ES256",
        "ec-a",
    )
}
