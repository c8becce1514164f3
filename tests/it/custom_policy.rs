//! `custom-policy` (the example under `examples/custom-policy`) in a real Envoy: accepted values
//! reach the upstream and are echoed in the response, other requests get the kit's denial and
//! never reach it, over HTTP/1.1 and HTTP/2; repeated headers, CORS preflights, the denial
//! override, metrics and refused configurations.

use palisade_tests::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::json;

fn gateway(upstream: &Upstream, config: serde_json::Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .wasm("custom-policy", config.to_string())
        .start()
}

fn versions() -> serde_json::Value {
    json!({"header": "X-Api-Version", "values": ["2024-01-01", "2024-06-01"],
           "echoHeader": "x-api-version-served"})
}

fn assert_denied(resp: &Response, code: &str) {
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["error"], code);
    assert!(
        resp.header("x-upstream").is_none(),
        "denied request reached the upstream"
    );
    assert!(
        resp.header("x-api-version-served").is_none(),
        "a denial echoes nothing"
    );
}

#[test]
fn accepted_values_pass_and_others_are_denied_over_http1_and_http2() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, versions());
    for send in [Gateway::send, Gateway::send_h2] {
        let ok = send(
            &gw,
            &Request::new("POST", "/orders")
                .header("x-api-version", "2024-06-01")
                .body("hello"),
        );
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.header("x-upstream"), Some("echo"));
        assert_eq!(ok.json()["body"], "hello");
        assert_eq!(
            ok.upstream_header("x-api-version").as_deref(),
            Some("2024-06-01")
        );
        assert_eq!(ok.header("x-api-version-served"), Some("2024-06-01"));

        assert_denied(&send(&gw, &Request::get("/orders")), "header_missing");
        let old = Request::get("/orders").header("x-api-version", "2023-01-01");
        let denied = send(&gw, &old);
        assert_denied(&denied, "header_value_not_allowed");
        assert_eq!(
            denied.json()["message"],
            "The value of the x-api-version header is not accepted."
        );
    }
    assert_eq!(
        upstream.hits(),
        2,
        "denied requests must never reach the upstream"
    );
    assert_eq!(gw.metric("palisade_custom_policy_allowed"), Some(2.0));
    assert_eq!(gw.metric("palisade_custom_policy_missing"), Some(2.0));
    assert_eq!(gw.metric("palisade_custom_policy_not_allowed"), Some(2.0));
}

#[test]
fn the_upstream_sees_only_the_value_checked() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, versions());
    // Envoy hands a filter the first of repeated headers; the policy replaces them all.
    let repeated = Request::get("/")
        .header("x-api-version", "2024-01-01")
        .header("x-api-version", "2999-12-31");
    let ok = gw.send(&repeated);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.upstream_header("x-api-version").as_deref(),
        Some("2024-01-01")
    );
    let reversed = Request::get("/")
        .header("x-api-version", "2999-12-31")
        .header("x-api-version", "2024-01-01");
    assert_denied(&gw.send(&reversed), "header_value_not_allowed");
    // One line with two values is one value, not an accepted one.
    let joined = Request::get("/").header("x-api-version", "2024-01-01, 2999-12-31");
    assert_denied(&gw.send(&joined), "header_value_not_allowed");
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn cors_preflights_pass_unless_configured_otherwise() {
    let upstream = Upstream::start();
    let preflight = Request::new("OPTIONS", "/orders")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST");
    let gw = gateway(&upstream, versions());
    assert_eq!(gw.send(&preflight).status, 200);
    assert_eq!(gw.metric("palisade_custom_policy_preflight"), Some(1.0));

    let mut strict = versions();
    strict["allowCorsPreflight"] = json!(false);
    assert_denied(
        &gateway(&upstream, strict).send(&preflight),
        "header_missing",
    );
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn the_denial_can_be_overridden() {
    let upstream = Upstream::start();
    let mut config = versions();
    config["denial"] = json!({"status": 404, "body": "no such API", "contentType": "text/plain"});
    let gw = gateway(&upstream, config);
    for send in [Gateway::send, Gateway::send_h2] {
        let resp = send(&gw, &Request::get("/"));
        assert_eq!(resp.status, 404);
        assert_eq!(resp.text(), "no such API");
        assert_eq!(resp.header("content-type"), Some("text/plain"));
    }
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn invalid_configurations_are_refused_by_envoy_naming_the_field() {
    for (config, field) in [
        (json!({}), "missing field `header`"),
        (json!({"header": "x api"}), "`header`"),
        (
            json!({"header": "x", "values": ["ok", " padded"]}),
            "`values[1]`",
        ),
        (
            json!({"header": "x", "echoHeader": ":status"}),
            "`echoHeader`",
        ),
        (json!({"header": "x", "vaules": ["1"]}), "`vaules`"),
        (
            json!({"header": "x", "denial": {"status": 302}}),
            "`denial.status`",
        ),
    ] {
        let log = GatewayBuilder::new()
            .wasm("custom-policy", config.to_string())
            .start_err();
        assert!(
            log.contains("custom-policy: invalid configuration") && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }
}
