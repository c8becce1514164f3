//! What the integration tests of the quota policies (`rate-limiting`, `spike-control`) share:
//! gateways that close connections after local replies, SLA tiers handed over by
//! `client-id-enforcement`, 429 and header checks, refused configurations.

use crate::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};

/// A gateway that closes a connection as soon as a local reply is written. The harness's
/// HTTP/1.1 client reads responses to the end of the connection, and Envoy otherwise waits
/// `delayed_close_timeout` (1 s) before closing after a local reply: hundreds of 429s would
/// take minutes.
pub fn builder() -> GatewayBuilder {
    GatewayBuilder::new().hcm("delayed_close_timeout", json!("0s"))
}

/// [`builder`] with `policy` configured with `config` in front of `upstream`.
pub fn gateway(upstream: &Upstream, policy: &str, config: Value) -> Gateway {
    builder()
        .upstream(upstream)
        .wasm(policy, config.to_string())
        .start()
}

/// [`builder`] with `client-id-enforcement` for the API `orders` (no secrets; each client id has
/// the given SLA tier), then `policy` configured with `config`, in front of `upstream`.
pub fn behind_client_tiers(
    upstream: &Upstream,
    clients: &[(&str, &str)],
    policy: &str,
    config: Value,
) -> Gateway {
    let clients: Vec<Value> = clients
        .iter()
        .map(|(id, tier)| json!({"clientId": id, "contracts": {"orders": tier}}))
        .collect();
    builder()
        .upstream(upstream)
        .wasm(
            "client-id-enforcement",
            json!({"api": "orders", "clientSecretSource": null, "clients": clients}).to_string(),
        )
        .wasm(policy, config.to_string())
        .start()
}

/// A request keyed by `x-client: <client>` (for a `keySelector` of `header:x-client`).
pub fn as_client(client: &str) -> Request {
    Request::get("/").header("x-client", client)
}

/// Sends one HTTP/1.1 request from each of `count` new clients (`x-client: flood-<i>`), as a
/// flood of one-off keys would, and returns how many were not answered 200.
pub fn flood_of_new_clients(gw: &Gateway, count: usize) -> usize {
    (0..count)
        .filter(|i| gw.send(&as_client(&format!("flood-{i}"))).status != 200)
        .count()
}

/// Asserts a `429 rate_limited` that did not reach the upstream.
pub fn assert_rate_limited(resp: &Response) {
    assert_eq!(resp.status, 429, "{}", resp.text());
    assert_eq!(resp.json()["error"], "rate_limited");
    assert!(
        resp.header("x-upstream").is_none(),
        "a rejected request reached the upstream"
    );
}

/// The `Retry-After` seconds of a response.
pub fn retry_after(resp: &Response) -> u64 {
    resp.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", resp.headers))
}

/// A numeric response header.
pub fn num(resp: &Response, name: &str) -> u64 {
    resp.header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {:?}", resp.headers))
}

/// Asserts that Envoy refuses each configuration of `policy` with a log line naming its field.
pub fn assert_refused<'a>(policy: &str, cases: impl IntoIterator<Item = (Value, &'a str)>) {
    for (config, field) in cases {
        let log = GatewayBuilder::new()
            .wasm(policy, config.to_string())
            .start_err();
        assert!(
            log.contains(&format!("{policy}: invalid configuration")) && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }
}
