//! `jwt-validation` in a real Envoy against a real OpenID Provider (npm `oidc-provider`) and a
//! key server the tests control: RSA and EC tokens from the provider over HTTP/1.1 and HTTP/2,
//! OpenID discovery, every algorithm, scopes AND/OR from `scope` and `scp`, expired /
//! not-yet-valid / wrong issuer / wrong audience / tampered / `alg: none` /
//! HS256-signed-with-the-RSA-public-key tokens, key rotation at the provider picked up through
//! an unknown `kid` (the request waits for the refresh), one JWKS fetch per period per Envoy,
//! stale keys while the provider is down, 503 without keys, and refused configurations.

#[path = "../oidc/harness.rs"]
mod oidc;

use oidc::{now, Provider, TestKeys};
use palisade_tests::{
    assert_denied, assert_refused_on_both_protocols, Gateway, GatewayBuilder, Request, Response,
    Upstream,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn gateway(upstream: &Upstream, idp_port: u16, config: Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .cluster("idp", idp_port)
        .wasm("jwt-validation", config.to_string())
        .start()
}

fn bearer(token: &str) -> Request {
    Request::get("/orders").header("authorization", &format!("Bearer {token}"))
}

/// Sends until the answer is not 503 (the first JWKS fetch happens in the background).
fn wait_for_keys(gw: &Gateway, req: &Request) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = gw.send(req);
        if resp.status != 503 || Instant::now() > deadline {
            return resp;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_invalid(resp: &Response, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.text());
    assert_eq!(resp.json()["error"], "invalid_token", "{what}");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="invalid_token""#),
        "{what}"
    );
}

const ORDERS: (&str, &str) = ("orders-client", "orders-secret");

#[test]
fn real_provider_tokens_rsa_and_ec_with_discovery_scopes_and_claims() {
    let op = Provider::start();
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        op.0.port(),
        json!({
            "issuer": op.issuer(),
            "audiences": ["orders"],
            "discovery": true,
            "jwks": {"cluster": "idp"},
            // oidc-provider issues RFC 9068 access tokens.
            "requiredType": "at+jwt",
            "requiredScopes": ["orders:read"],
            "requiredClaims": {"client_id": ["orders-client", "reader-client"]},
            "claimsToHeaders": {"sub": "x-client-sub", "client_id": "x-client-id"},
        }),
    );
    let rs = op.token(ORDERS, "orders:read", Some("urn:orders:rs"));
    let es = op.token(ORDERS, "orders:read orders:write", Some("urn:orders:es"));

    let ok = wait_for_keys(&gw, &bearer(&rs).header("x-client-sub", "spoofed"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.upstream_header("x-client-sub").as_deref(),
        Some("orders-client")
    );
    assert_eq!(
        ok.upstream_header("x-client-id").as_deref(),
        Some("orders-client")
    );
    assert!(
        ok.upstream_header("authorization").is_some(),
        "the token is forwarded"
    );
    let h2 = gw.send_h2(&bearer(&es));
    assert_eq!(h2.status, 200, "{}", h2.text());
    // Repeated tokens skip signature verification.
    for _ in 0..3 {
        assert_eq!(gw.send(&bearer(&rs)).status, 200);
        assert_eq!(gw.send_h2(&bearer(&es)).status, 200);
    }
    let hits = upstream.hits();
    assert_eq!(hits, 8);

    // A CORS preflight passes without a token, but never with a client's copy of a header the
    // policy sets from claims.
    let forged_preflight = Request::new("OPTIONS", "/orders")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("x-client-sub", "admin");
    for resp in [gw.send(&forged_preflight), gw.send_h2(&forged_preflight)] {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(
            resp.upstream_header("x-client-sub"),
            None,
            "forged header stripped"
        );
    }
    let hits = upstream.hits();

    // Missing token, another scheme, wrong audience, opaque token, missing scope.
    let missing = gw.send(&Request::get("/orders"));
    assert_denied(&missing, 401, "missing_token");
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    assert_denied(
        &gw.send(&Request::get("/").header("authorization", "Basic YTpi")),
        401,
        "missing_token",
    );
    assert_invalid(
        &gw.send(&bearer(&op.token(
            ORDERS,
            "orders:read",
            Some("urn:billing"),
        ))),
        "wrong audience",
    );
    assert_invalid(
        &gw.send_h2(&bearer(&op.token(ORDERS, "orders:read", None))),
        "opaque token",
    );
    let write_only = op.token(ORDERS, "orders:write", Some("urn:orders:rs"));
    let forbidden = gw.send(&bearer(&write_only));
    assert_denied(&forbidden, 403, "insufficient_scope");
    assert_eq!(
        forbidden.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="orders:read""#)
    );
    assert_eq!(
        upstream.hits(),
        hits,
        "denied requests never reach the upstream"
    );

    // One discovery and one JWKS fetch for the whole Envoy (main thread + 2 workers).
    assert_eq!(op.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(op.hits("/jwks"), 1);
    assert_eq!(gw.metric("palisade_jwt_validation_allowed"), Some(8.0));
    assert!(
        gw.metric("palisade_jwt_validation_cache_hit")
            .unwrap_or(0.0)
            >= 4.0
    );
    assert_eq!(
        gw.metric("palisade_jwt_validation_missing_token"),
        Some(2.0)
    );
    assert_eq!(
        gw.metric("palisade_jwt_validation_invalid_token"),
        Some(2.0)
    );
    assert_eq!(gw.metric("palisade_jwt_validation_forbidden"), Some(1.0));
    assert_eq!(gw.metric("palisade_jwt_validation_jwks_fetched"), Some(1.0));
}

#[test]
fn every_algorithm_and_every_forgery() {
    let keys = TestKeys::start();
    let upstream = Upstream::start();
    let iss = "https://issuer.test";
    let gw = gateway(
        &upstream,
        keys.0.port(),
        json!({
            "issuer": iss,
            "audiences": ["orders", "admin"],
            "jwks": {"cluster": "idp", "uri": format!("http://127.0.0.1:{}/jwks", keys.0.port())},
            "forwardToken": false,
        }),
    );
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"iss": iss, "aud": ["other", "orders"], "sub": "alice", "iat": t, "exp": t + 300});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let valid = [
        ("RS256", "rsa-a"),
        ("RS384", "rsa-a"),
        ("RS512", "rsa-a"),
        ("PS256", "rsa-a"),
        ("PS384", "rsa-a"),
        ("PS512", "rsa-a"),
        ("ES256", "ec-a"),
        ("ES384", "ec384-a"),
        ("EdDSA", "ed-a"),
    ];
    let first = keys.sign("ES256", "ec-a", claims(json!({})));
    let ok = wait_for_keys(&gw, &bearer(&first));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.upstream_header("authorization"),
        None,
        "forwardToken: false"
    );
    // CORS preflights pass without a token.
    let preflight = gw.send(
        &Request::new("OPTIONS", "/orders")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET"),
    );
    assert_eq!(preflight.status, 200, "{}", preflight.text());
    for (alg, kid) in valid {
        let resp = gw.send_h2(&bearer(&keys.sign(alg, kid, claims(json!({})))));
        assert_eq!(resp.status, 200, "{alg}: {}", resp.text());
    }
    let hits = upstream.hits();

    let good = keys.sign("RS256", "rsa-a", claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = keys
        .sign("RS256", "rsa-a", claims(json!({"sub": "root"})))
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let mut sig = parts[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let rsa_pem = keys.pem("rsa-a");
    let cases = [
        ("expired", keys.sign("ES256", "ec-a", claims(json!({"iat": t - 900, "exp": t - 600})))),
        ("not yet valid", keys.sign("ES256", "ec-a", claims(json!({"nbf": t + 600})))),
        ("wrong issuer", keys.sign("ES256", "ec-a", claims(json!({"iss": "https://evil.test"})))),
        ("wrong audience", keys.sign("EdDSA", "ed-a", claims(json!({"aud": "billing"})))),
        ("no exp", keys.sign("EdDSA", "ed-a", json!({"iss": iss, "aud": "orders", "sub": "alice"}))),
        ("tampered payload", format!("{}.{forged_payload}.{}", parts[0], parts[2])),
        ("tampered signature", format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap())),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "HS256 with the RSA public key as secret",
            keys.sign_with(json!({"alg": "HS256", "kid": "rsa-a", "secret": rsa_pem, "claims": claims(json!({}))})),
        ),
        (
            "EC signature under the RSA key's kid",
            keys.sign_with(json!({"alg": "ES256", "kid": "rsa-a", "signWith": "ec-a", "claims": claims(json!({}))})),
        ),
        ("not a JWT", "definitely-not-a-jwt".into()),
    ];
    for (what, token) in &cases {
        assert_invalid(&gw.send(&bearer(token)), what);
    }
    assert_eq!(
        upstream.hits(),
        hits,
        "no forged token reached the upstream"
    );
    assert_eq!(
        gw.metric("palisade_jwt_validation_invalid_token"),
        Some(cases.len() as f64)
    );
}

#[test]
fn scopes_and_or_from_scope_strings_and_scp_arrays() {
    let keys = TestKeys::start();
    let upstream = Upstream::start();
    let iss = "https://issuer.test";
    let uri = format!("http://127.0.0.1:{}/jwks", keys.0.port());
    let config = |criteria: &str| {
        json!({"issuer": iss, "jwks": {"cluster": "idp", "uri": uri},
               "requiredScopes": ["orders:read", "orders:write"], "scopeCriteria": criteria})
    };
    let and = gateway(&upstream, keys.0.port(), config("AND"));
    let or = gateway(&upstream, keys.0.port(), config("OR"));
    let t = now();
    let token = |scopes: Value| {
        let mut c = json!({"iss": iss, "exp": t + 300});
        for (k, v) in scopes.as_object().unwrap() {
            c[k] = v.clone();
        }
        keys.sign("ES256", "ec-a", c)
    };
    let both_scope = token(json!({"scope": "orders:read orders:write"}));
    let both_scp = token(json!({"scp": ["orders:write", "orders:read"]}));
    let read_scope = token(json!({"scope": "orders:read"}));
    let write_scp = token(json!({"scp": ["orders:write"]}));
    let neither = token(json!({"scp": ["profile"], "scope": "email"}));
    assert_eq!(wait_for_keys(&and, &bearer(&both_scope)).status, 200);
    assert_eq!(wait_for_keys(&or, &bearer(&both_scope)).status, 200);
    assert_eq!(and.send_h2(&bearer(&both_scp)).status, 200);
    for t in [&read_scope, &write_scp, &neither] {
        assert_denied(&and.send(&bearer(t)), 403, "insufficient_scope");
    }
    for t in [&both_scp, &read_scope, &write_scp] {
        assert_eq!(or.send_h2(&bearer(t)).status, 200);
    }
    assert_denied(&or.send(&bearer(&neither)), 403, "insufficient_scope");
    assert_eq!(upstream.hits(), 6);
}

#[test]
fn key_rotation_at_the_provider_is_picked_up_through_an_unknown_kid() {
    let op = Provider::start();
    let port = op.0.port();
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        port,
        json!({
            "issuer": op.issuer(),
            "jwks": {"cluster": "idp", "uri": format!("{}/jwks", op.issuer()), "minRefreshSeconds": 60},
        }),
    );
    let old = op.token(ORDERS, "orders:read", Some("urn:orders:rs"));
    assert_eq!(wait_for_keys(&gw, &bearer(&old)).status, 200);

    // The provider restarts with new keys (kids rsa-2, ec-2).
    drop(op);
    let op = Provider::start_on(port, 2);
    let new = op.token(ORDERS, "orders:read", Some("urn:orders:es"));
    assert!(new.starts_with("eyJ"));
    // The first request with the new kid brings the refresh forward and waits for it.
    let started = Instant::now();
    let first = gw.send(&bearer(&new));
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(gw.send_h2(&bearer(&new)).status, 200);
    assert_eq!(op.hits("/jwks"), 1, "one refresh for the whole Envoy");
    // The old key is gone from the set: at once on the worker that fetched it, and on every
    // other worker from its next check for a new version (every 250 ms, README "Keys"), until
    // which that worker still verifies with the copy it has (its verification cache included).
    std::thread::sleep(Duration::from_millis(600));
    assert_invalid(&gw.send(&bearer(&old)), "token of a retired key");
    // Further unknown kids within minRefreshSeconds do not fetch again.
    for _ in 0..5 {
        assert_invalid(&gw.send(&bearer(&old)), "retired key");
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        op.hits("/jwks"),
        1,
        "unknown-kid refreshes are rate limited"
    );
    assert_eq!(
        gw.metric("palisade_jwt_validation_jwks_refresh_requested"),
        Some(1.0)
    );
    assert_eq!(gw.metric("palisade_jwt_validation_kid_waits"), Some(1.0));
}

#[test]
fn one_fetch_per_period_per_envoy_stale_keys_while_down_then_503() {
    let keys = TestKeys::start();
    let upstream = Upstream::start();
    let iss = "https://issuer.test";
    let gw = gateway(
        &upstream,
        keys.0.port(),
        json!({
            "issuer": iss,
            "jwks": {"cluster": "idp", "uri": format!("http://127.0.0.1:{}/jwks", keys.0.port()),
                     "cacheSeconds": 1, "maxStaleSeconds": 3},
        }),
    );
    let token = keys.sign("EdDSA", "ed-a", json!({"iss": iss, "exp": now() + 600}));
    assert_eq!(wait_for_keys(&gw, &bearer(&token)).status, 200);
    let start = (Instant::now(), keys.fetches());
    std::thread::sleep(Duration::from_millis(3_000));
    let fetched = keys.fetches() - start.1;
    // A refresh every second: 2-4 fetches in 3 s for the whole Envoy (one per VM would be 9).
    assert!((2..=4).contains(&fetched), "{fetched} fetches in 3 s");

    keys.set_down(true);
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    let stale = gw.send(&bearer(&token));
    assert_eq!(
        stale.status,
        200,
        "stale keys are still served: {}",
        stale.text()
    );
    // 1 s fresh + 3 s stale after the last good fetch: then no keys at all.
    let deadline = down_at + Duration::from_secs(8);
    loop {
        let resp = gw.send(&bearer(&token));
        if resp.status == 503 {
            assert_eq!(resp.json()["error"], "jwks_unavailable");
            assert_eq!(resp.header("retry-after"), Some("5"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stale keys outlived maxStaleSeconds"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        down_at.elapsed() >= Duration::from_millis(2_500),
        "keys dropped too early"
    );
    assert!(
        gw.metric("palisade_jwt_validation_jwks_fetch_failed")
            .unwrap_or(0.0)
            >= 1.0
    );
    // The provider is back: keys again.
    keys.set_down(false);
    assert_eq!(wait_for_keys(&gw, &bearer(&token)).status, 200);
}

#[test]
fn several_tokens_and_options_requests_with_a_body_never_reach_the_upstream() {
    let keys = TestKeys::start();
    let upstream = Upstream::start();
    let iss = "https://issuer.test";
    let config = |extra: Value| {
        let mut c = json!({"issuer": iss, "audiences": ["orders"],
            "jwks": {"cluster": "idp", "uri": format!("http://127.0.0.1:{}/jwks", keys.0.port())}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let t = now();
    let token = |sub: &str| {
        keys.sign(
            "ES256",
            "ec-a",
            json!({"iss": iss, "aud": "orders", "sub": sub, "iat": t, "exp": t + 300}),
        )
    };
    let (alice, mallory) = (token("alice"), token("mallory"));

    let gw = gateway(&upstream, keys.0.port(), config(json!({})));
    assert_eq!(wait_for_keys(&gw, &bearer(&alice)).status, 200);
    let two_lines = bearer(&alice).header("authorization", &format!("Bearer {mallory}"));
    assert_refused_on_both_protocols(&gw, &upstream, &two_lines, 400, "invalid_request");
    let resp = gw.send(&two_lines);
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="invalid_request""#)
    );
    assert_eq!(
        gw.metric("palisade_jwt_validation_ambiguous_token"),
        Some(3.0)
    );

    // A preflight-looking OPTIONS with a body and no token is a request like any other.
    let preflight = Request::new("OPTIONS", "/orders")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST");
    let with_body = preflight.clone().body("{}");
    let hits = upstream.hits();
    assert_denied(&gw.send(&with_body), 401, "missing_token");
    assert_eq!(gw.send_h2_without_length(&with_body), 401);
    assert_eq!(
        upstream.hits(),
        hits,
        "an OPTIONS with a body reached the upstream"
    );
    assert_eq!(
        gw.metric("palisade_jwt_validation_missing_token"),
        Some(2.0)
    );
    for resp in [gw.send(&preflight), gw.send_h2(&preflight)] {
        assert_eq!(
            resp.status,
            200,
            "the preflight itself passes: {}",
            resp.text()
        );
    }

    // A custom header token source.
    let custom = gateway(
        &upstream,
        keys.0.port(),
        config(json!({"tokenSource": "header:x-token", "forwardToken": false})),
    );
    let ok = wait_for_keys(&custom, &Request::get("/orders").header("x-token", &alice));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.upstream_header("x-token"), None, "forwardToken: false");
    let twice = Request::get("/orders")
        .header("x-token", &alice)
        .header("x-token", &mallory);
    assert_refused_on_both_protocols(&custom, &upstream, &twice, 400, "invalid_request");
}

#[test]
fn no_keys_ever_loaded_is_503() {
    let upstream = Upstream::start();
    // Nothing listens on the IdP cluster's port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let gw = gateway(
        &upstream,
        port,
        json!({"issuer": "https://i", "jwks": {"cluster": "idp", "uri": format!("http://127.0.0.1:{port}/jwks")}}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let resp = gw.send(&bearer("eyJhbGciOiJFUzI1NiJ9.e30.c2ln"));
    assert_denied(&resp, 503, "jwks_unavailable");
    assert_eq!(upstream.hits(), 0);
    assert_eq!(gw.metric("palisade_jwt_validation_unavailable"), Some(1.0));
}

#[test]
fn envoy_refuses_invalid_configurations_naming_the_field() {
    for (config, field) in [
        (
            json!({"jwks": {"cluster": "idp", "uri": "http://a/jwks"}}),
            "missing field `issuer`",
        ),
        (
            json!({"issuer": "i", "jwks": {"cluster": "idp", "uri": "http://a/jwks"}, "algorithms": ["none"]}),
            "`algorithms[0]`",
        ),
        (
            json!({"issuer": "i", "algorithms": ["HS256"], "hmacSecret": "short"}),
            "`hmacSecret`",
        ),
        (json!({"issuer": "i"}), "`jwks`"),
        (
            json!({"issuer": "i", "jwks": {"cluster": "idp", "uri": "http://a/jwks", "timeoutMs": 0}}),
            "`jwks.timeoutMs`",
        ),
    ] {
        let log = GatewayBuilder::new()
            .cluster("idp", 9)
            .wasm("jwt-validation", config.to_string())
            .start_err();
        assert!(log.contains(field), "{field} not named in:\n{log}");
    }
}
