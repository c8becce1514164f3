//! The bundle (`dist/palisade.wasm`) in a real Envoy (2 workers): the six-policy chain of the
//! soak (ip-filter, cors, jwt-validation, client-id-enforcement, rate-limiting,
//! json-threat-protection) as ONE wasm filter, then Envoy's buffer filter: a valid request over
//! HTTP/1.1 and HTTP/2, each policy's denial, the identity handed from one policy to a later
//! one within the filter, per-policy metrics, the VM count, and a refused member configuration.

use palisade_tests::jwt::{hs256, now};
use palisade_tests::{Filter, Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};

const ISSUER: &str = "https://bundle.palisade.test";
const SECRET: &str = "bundle-hmac-secret-0123456789abcdef-0123456";
const APP_ORIGIN: &str = "https://app.example";
const IDENTITY: &str = "%FILTER_STATE(wasm.palisade.identity:PLAIN)%";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The six policies, in order, as the bundle's configuration.
fn six_policies() -> Value {
    let client = |id: &str, secret: &str, tier: &str| json!({"clientId": id, "secretSha256": sha256_hex(secret), "contracts": {"orders": tier}});
    json!({"policies": [
        {"policy": "ip-filter", "config": {"mode": "blocklist", "ips": ["203.0.113.0/24"]}},
        {"policy": "cors", "config": {"originGroups": [{"origins": [APP_ORIGIN],
            "allowedMethods": ["GET", "POST"],
            "headers": ["authorization", "content-type", "client_id", "client_secret"]}]}},
        {"policy": "jwt-validation", "config": {"issuer": ISSUER, "audiences": ["orders"],
            "hmacSecret": SECRET, "algorithms": ["HS256"], "claimsToHeaders": {"sub": "x-user"}}},
        {"policy": "client-id-enforcement", "config": {"api": "orders", "clients": [
            client("shop", "shop-secret", "gold"), client("hog", "hog-secret", "bronze")]}},
        {"policy": "rate-limiting", "config": {"tiers": {
            "gold": [{"maximumRequests": 1_000_000_000u64, "timePeriodInMilliseconds": 1000}],
            "bronze": [{"maximumRequests": 1, "timePeriodInMilliseconds": 3_600_000}]}}},
        {"policy": "json-threat-protection", "config": {"maxBodyBytes": 4096, "maxContainerDepth": 8}},
    ]})
}

fn buffer_filter() -> Filter {
    Filter::Native(json!({
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 1 << 20,
        },
    }))
}

fn builder(upstream: &Upstream, config: &Value) -> GatewayBuilder {
    GatewayBuilder::new()
        .upstream(upstream)
        // One trusted proxy in front appends the client's address to X-Forwarded-For.
        .hcm("xff_num_trusted_hops", json!(1))
        .route_header("x-gateway-identity", IDENTITY)
        .wasm("palisade", config.to_string())
        .filter(buffer_filter())
}

fn gateway(upstream: &Upstream) -> Gateway {
    builder(upstream, &six_policies()).start()
}

fn token() -> String {
    hs256(
        SECRET.as_bytes(),
        &json!({"iss": ISSUER, "sub": "alice", "aud": "orders", "exp": now() + 3600}),
    )
}

fn get(client: &str, secret: &str) -> Request {
    Request::get("/orders")
        .header("authorization", &format!("Bearer {}", token()))
        .header("client_id", client)
        .header("client_secret", secret)
}

fn post_json(body: &[u8]) -> Request {
    let mut req = get("shop", "shop-secret")
        .header("content-type", "application/json")
        .body(body.to_vec());
    req.method = "POST".into();
    req
}

fn identity(resp: &Response) -> Value {
    resp.upstream_header("x-gateway-identity")
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or(Value::Null)
}

fn assert_passed_as_shop(resp: &Response) {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["headers"]["x-user"], "alice");
    assert_eq!(identity(resp)["clientId"], "shop");
    assert_eq!(identity(resp)["authenticatedBy"], "client-id-enforcement");
}

fn assert_denied(gw: &Gateway, upstream: &Upstream, req: &Request, status: u16, code: &str) {
    let before = upstream.hits();
    for (protocol, resp) in [("HTTP/1.1", gw.send(req)), ("HTTP/2", gw.send_h2(req))] {
        assert_eq!(resp.status, status, "{protocol} {code}: {}", resp.text());
        if !code.is_empty() {
            assert_eq!(resp.json()["error"], code, "{protocol}");
        }
    }
    assert_eq!(
        upstream.hits(),
        before,
        "a denied request ({code}) reached the upstream"
    );
}

#[test]
fn one_filter_runs_the_six_policies_over_http1_and_http2() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream);
    assert_passed_as_shop(&gw.send(&get("shop", "shop-secret")));
    assert_passed_as_shop(&gw.send_h2(&get("shop", "shop-secret")));
    // A client cannot forge what the gateway adds.
    let forged = get("shop", "shop-secret")
        .header("x-user", "admin")
        .header("x-gateway-identity", r#"{"clientId":"vip"}"#);
    assert_passed_as_shop(&gw.send(&forged));

    let body = br#"{"order": {"sku": "A-1", "qty": [1, 2, 3]}}"#;
    for resp in [gw.send(&post_json(body)), gw.send_h2(&post_json(body))] {
        assert_passed_as_shop(&resp);
        assert_eq!(resp.json()["body"], String::from_utf8_lossy(body).as_ref());
    }

    let preflight = Request::new("OPTIONS", "/orders")
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "POST");
    let resp = gw.send(&preflight);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("access-control-allow-origin"), Some(APP_ORIGIN));
    assert_eq!(upstream.hits(), 5);

    // Each policy keeps its own metric names, so dashboards do not change.
    for metric in [
        "palisade_ip_filter_allowed",
        "palisade_jwt_validation_allowed",
        "palisade_client_id_enforcement_allowed",
        "palisade_rate_limiting_allowed",
        "palisade_json_threat_protection_allowed",
        "palisade_cors_preflight_allowed",
    ] {
        assert!(gw.metric(metric).is_some_and(|v| v >= 1.0), "{metric}");
    }
}

#[test]
fn each_policy_denies_within_the_one_filter() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream);
    let blocked = get("shop", "shop-secret").header("x-forwarded-for", "203.0.113.9");
    assert_denied(&gw, &upstream, &blocked, 403, "ip_denied");
    let evil = Request::new("OPTIONS", "/orders")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST");
    assert_denied(&gw, &upstream, &evil, 403, "");
    let no_token = Request::get("/orders")
        .header("client_id", "shop")
        .header("client_secret", "shop-secret");
    assert_denied(&gw, &upstream, &no_token, 401, "missing_token");
    assert_denied(&gw, &upstream, &get("nobody", "x"), 401, "");
    assert_denied(&gw, &upstream, &post_json(b"{\"a\": [1,}"), 400, "");
    let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
    assert_denied(&gw, &upstream, &post_json(deep.as_bytes()), 400, "");
    // The policies after the one that denied did not run.
    assert_eq!(gw.metric("palisade_ip_filter_denied"), Some(2.0));
    assert_eq!(
        gw.metric("palisade_jwt_validation_missing_token"),
        Some(2.0)
    );
    assert_eq!(
        gw.metric("palisade_client_id_enforcement_missing_client_id"),
        Some(0.0)
    );
    assert_eq!(
        gw.metric("palisade_client_id_enforcement_unknown_client"),
        Some(2.0)
    );
    assert_eq!(gw.metric("palisade_rate_limiting_allowed"), Some(4.0));
}

#[test]
fn a_later_policy_limits_by_the_identity_an_earlier_one_published() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream);
    // `hog` is bronze (one request an hour): its tier comes from client-id-enforcement's
    // identity, read by rate-limiting within the same filter.
    let first = gw.send(&get("hog", "hog-secret"));
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(identity(&first)["tier"], "bronze");
    let second = gw.send_h2(&get("hog", "hog-secret"));
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(upstream.hits(), 1);
    assert_passed_as_shop(&gw.send(&get("shop", "shop-secret")));
}

fn wasm_vms(gw: &Gateway) -> u64 {
    let stats = gw.admin_get("/stats?filter=wasm.envoy.wasm.runtime.v8.active");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("wasm.envoy.wasm.runtime.v8.active: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VM count in {stats}"))
}

#[test]
fn the_bundle_runs_the_vms_of_one_filter_where_six_filters_run_six_times_as_many() {
    let upstream = Upstream::start();
    let bundle = gateway(&upstream);
    let mut separate = GatewayBuilder::new()
        .upstream(&upstream)
        .hcm("xff_num_trusted_hops", json!(1));
    for member in six_policies()["policies"].as_array().into_iter().flatten() {
        let policy = member["policy"].as_str().unwrap_or_default();
        separate = separate.wasm(policy, member["config"].to_string());
    }
    let separate = separate.filter(buffer_filter()).start();
    let single = GatewayBuilder::new()
        .upstream(&upstream)
        .wasm("ip-filter", json!({"ips": ["0.0.0.0/0"]}).to_string())
        .start();
    let (bundle_vms, separate_vms, single_vms) =
        (wasm_vms(&bundle), wasm_vms(&separate), wasm_vms(&single));
    println!("wasm VMs: bundle {bundle_vms}, six filters {separate_vms}, one policy {single_vms}");
    assert_eq!(bundle_vms, single_vms);
    assert_eq!(separate_vms, 6 * single_vms);
}

#[test]
fn envoy_refuses_a_bad_member_configuration_naming_the_field() {
    let upstream = Upstream::start();
    let mut config = six_policies();
    config["policies"][2]["config"]["issuer"] = json!(7);
    let log = builder(&upstream, &config).start_err();
    assert!(
        log.contains("palisade: invalid configuration at `policies[2].config.issuer`"),
        "{log}"
    );
    let mut config = six_policies();
    config["policies"][1]["policy"] = json!("kors");
    let log = builder(&upstream, &config).start_err();
    assert!(log.contains("`policies[1].policy`"), "{log}");
}
