//! `token-introspection` in a real Envoy against a real OpenID Provider (npm `oidc-provider`):
//! active, revoked and unknown opaque tokens, scopes, Flex-style `x-agw-*` headers, cache hits
//! proven by the provider's request count, one call per worker for concurrent requests, the
//! server down, timing out, rejecting our credentials or answering garbage (503, fail closed),
//! and refused configurations.

#[path = "../oidc/harness.rs"]
mod oidc;

use oidc::{basic, Provider};
use palisade_tests::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};

const ORDERS: (&str, &str) = ("orders-client", "orders-secret");

fn config(port: u16, extra: Value) -> String {
    let mut c = json!({
        "introspectionUrl": format!("http://127.0.0.1:{port}/token/introspection"),
        "cluster": "idp",
        "authorizationValue": basic("introspector", "introspector-secret"),
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn gateway(upstream: &Upstream, port: u16, extra: Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .cluster("idp", port)
        .wasm("token-introspection", config(port, extra))
        .start()
}

fn bearer(token: &str) -> Request {
    Request::get("/orders").header("authorization", &format!("Bearer {token}"))
}

fn assert_denied(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.json()["error"], code, "{}", resp.text());
    assert!(
        resp.header("x-upstream").is_none(),
        "a denied request reached the upstream"
    );
}

#[test]
fn active_revoked_and_unknown_tokens_with_cache_hits_counted_at_the_provider() {
    let op = Provider::start();
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        op.0.port(),
        json!({"scopes": "orders:read", "exposeHeaders": true}),
    );
    let active = op.token(ORDERS, "orders:read orders:write", None);
    let ok = gw.send(
        &bearer(&active)
            .header("x-agw-client_id", "spoofed")
            .header("x-agw-role", "admin"),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.upstream_header("x-agw-role"),
        None,
        "the gateway's header namespace is the gateway's"
    );
    assert_eq!(
        ok.upstream_header("x-agw-client_id").as_deref(),
        Some("orders-client")
    );
    assert_eq!(ok.upstream_header("x-agw-active").as_deref(), Some("true"));
    for _ in 0..3 {
        assert_eq!(gw.send(&bearer(&active)).status, 200);
        assert_eq!(gw.send_h2(&bearer(&active)).status, 200);
    }
    assert_eq!(
        op.hits("/token/introspection"),
        1,
        "cache hits do not call the server"
    );
    let revoked = op.token(ORDERS, "orders:read", None);
    op.revoke(&revoked);
    let resp = gw.send(&bearer(&revoked));
    assert_denied(&resp, 401, "invalid_token");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );
    assert_denied(
        &gw.send_h2(&bearer("not-a-token-the-provider-issued")),
        401,
        "invalid_token",
    );
    let write_only = op.token(ORDERS, "orders:write", None);
    assert_denied(&gw.send(&bearer(&write_only)), 403, "insufficient_scope");
    assert_denied(&gw.send(&Request::get("/")), 401, "missing_token");
    assert_eq!(
        upstream.hits(),
        7,
        "denied requests never reach the upstream"
    );
    assert_eq!(op.hits("/token/introspection"), 4);
    assert_eq!(gw.metric("palisade_token_introspection_allowed"), Some(7.0));
    assert!(
        gw.metric("palisade_token_introspection_cache_hit")
            .unwrap_or(0.0)
            >= 5.0
    );
    assert_eq!(
        gw.metric("palisade_token_introspection_invalid_token"),
        Some(2.0)
    );
    assert_eq!(
        gw.metric("palisade_token_introspection_forbidden"),
        Some(1.0)
    );

    // A CORS preflight passes unauthenticated, without any client-sent `x-agw-*` header.
    let forged_preflight = Request::new("OPTIONS", "/orders")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("x-agw-client_id", "orders-client")
        .header("x-agw-scope", "orders:admin");
    let pre = gw.send(&forged_preflight);
    assert_eq!(pre.status, 200, "{}", pre.text());
    for name in ["x-agw-client_id", "x-agw-scope"] {
        assert_eq!(
            pre.upstream_header(name),
            None,
            "{name} forged on a preflight"
        );
    }
}

#[test]
fn concurrent_requests_with_one_new_token_wait_for_one_call_per_worker() {
    // The provider takes 400 ms to introspect: every request arrives while the first call of
    // its worker is in flight.
    let op = Provider::start_slow_introspection(400);
    let upstream = Upstream::start();
    let gw = gateway(&upstream, op.0.port(), json!({"exposeHeaders": true}));
    let token = op.token(ORDERS, "orders:read", None);
    std::thread::scope(|s| {
        for i in 0..8 {
            let (gw, token) = (&gw, &token);
            s.spawn(move || {
                let req = bearer(token);
                let resp = if i % 2 == 0 {
                    gw.send(&req)
                } else {
                    gw.send_h2(&req)
                };
                assert_eq!(resp.status, 200, "{}", resp.text());
                assert_eq!(
                    resp.upstream_header("x-agw-client_id").as_deref(),
                    Some("orders-client")
                );
            });
        }
    });
    let calls = op.hits("/token/introspection");
    assert!(
        (1..=2).contains(&calls),
        "{calls} calls for 8 concurrent requests (2 workers)"
    );
    assert_eq!(upstream.hits(), 8);
    let coalesced = gw
        .metric("palisade_token_introspection_coalesced")
        .unwrap_or(0.0);
    let cached = gw
        .metric("palisade_token_introspection_cache_hit")
        .unwrap_or(0.0);
    assert_eq!(coalesced + cached + calls as f64, 8.0);
    assert!(coalesced >= 1.0, "no request waited for another one's call");
}

#[test]
fn server_down_or_rejecting_our_credentials_is_503() {
    let mut op = Provider::start();
    let port = op.0.port();
    let upstream = Upstream::start();
    let token = op.token(ORDERS, "orders:read", None);
    // Wrong client credentials: the provider answers 401, never a reason to let traffic in.
    let wrong = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("idp", port)
        .wasm(
            "token-introspection",
            config(
                port,
                json!({"authorizationValue": basic("introspector", "wrong")}),
            ),
        )
        .start();
    assert_denied(
        &wrong.send(&bearer(&token)),
        503,
        "introspection_unavailable",
    );
    let gw = gateway(&upstream, port, json!({}));
    op.0.kill();
    assert_denied(&gw.send(&bearer(&token)), 503, "introspection_unavailable");
    assert_denied(
        &gw.send_h2(&bearer(&token)),
        503,
        "introspection_unavailable",
    );
    assert_eq!(upstream.hits(), 0);
    assert_eq!(
        gw.metric("palisade_token_introspection_unavailable"),
        Some(2.0)
    );
}

#[test]
fn a_server_timing_out_or_answering_garbage_is_503() {
    let op = Provider::start_slow_introspection(1_500);
    let upstream = Upstream::start();
    let token = op.token(ORDERS, "orders:read", None);
    let slow = gateway(
        &upstream,
        op.0.port(),
        json!({"authenticationTimeout": 200}),
    );
    let started = std::time::Instant::now();
    assert_denied(
        &slow.send(&bearer(&token)),
        503,
        "introspection_unavailable",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_400),
        "the timeout applies"
    );
    // A JSON document that is not an introspection response (the provider's JWKS).
    let garbage = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("idp", op.0.port())
        .wasm(
            "token-introspection",
            config(
                op.0.port(),
                json!({"introspectionUrl": format!("http://127.0.0.1:{}/jwks", op.0.port())}),
            ),
        )
        .start();
    assert_denied(
        &garbage.send_h2(&bearer(&token)),
        503,
        "introspection_unavailable",
    );
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn several_tokens_are_refused_without_asking_the_server() {
    let op = Provider::start();
    let upstream = Upstream::start();
    let gw = gateway(&upstream, op.0.port(), json!({}));
    let active = op.token(ORDERS, "orders:read", None);
    let ok = gw.send(&bearer(&active));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let calls = op.hits("/token/introspection");
    // An active token, then another: the upstream might read the second line.
    let two_lines = bearer(&active).header("authorization", "Bearer someone-elses");
    for resp in [gw.send(&two_lines), gw.send_h2(&two_lines)] {
        assert_denied(&resp, 400, "invalid_request");
        assert_eq!(
            resp.header("www-authenticate"),
            Some(r#"Bearer realm="api", error="invalid_request""#)
        );
    }
    assert_eq!(upstream.hits(), 1);
    assert_eq!(op.hits("/token/introspection"), calls);
    assert_eq!(
        gw.metric("palisade_token_introspection_ambiguous_token"),
        Some(2.0)
    );
}

#[test]
fn envoy_refuses_invalid_configurations_naming_the_field() {
    for (config, field) in [
        (
            json!({"cluster": "idp", "authorizationValue": "Basic x"}),
            "introspectionUrl",
        ),
        (
            json!({"introspectionUrl": "http://a/i", "cluster": "idp", "authorizationValue": "Basic x", "validatedTokenTTL": 0}),
            "`validatedTokenTTL`",
        ),
        (
            json!({"introspectionUrl": "http://a/i", "cluster": "idp", "authorizationValue": "Basic x", "scopeValidationCriteria": "XOR"}),
            "`scopeValidationCriteria`",
        ),
    ] {
        let log = GatewayBuilder::new()
            .cluster("idp", 9)
            .wasm("token-introspection", config.to_string())
            .start_err();
        assert!(log.contains(field), "{field} not named in:\n{log}");
    }
}
