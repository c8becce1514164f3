//! `client-id-enforcement` in a real Envoy (2 workers): every outcome, header/query/Basic
//! modes, the identity hand-off, and a remote registry that changes, fails and returns garbage.

use palisade_tests::{
    assert_denied, assert_refused_on_both_protocols, Gateway, GatewayBuilder, MockServer, Request,
    Upstream,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn sha256_hex(s: &str) -> String {
    // The test computes hashes with coreutils, independently of the policy's own code.
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(s.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

fn client(id: &str, secret: &str, contracts: Value) -> Value {
    json!({"clientId": id, "name": format!("{id} app"), "secretSha256": sha256_hex(secret), "contracts": contracts})
}

fn inline_clients() -> Value {
    json!([
        client("shop", "shop-secret-7f3a", json!({"orders": "gold"})),
        client("catalog-only", "cat-secret-19bd", json!({"catalog": "silver"})),
        {"clientId": "retired", "secretSha256": sha256_hex("old-secret"), "enabled": false, "contracts": {"orders": "gold"}},
    ])
}

const IDENTITY: &str = "%FILTER_STATE(wasm.palisade.identity:PLAIN)%";

fn gateway(upstream: &Upstream, config: Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .wasm("client-id-enforcement", config.to_string())
        // Shows the upstream what the policy handed to later filters (Envoy filter state).
        .route_header("x-seen-identity", IDENTITY)
        .start()
}

fn creds(id: &str, secret: &str) -> Request {
    Request::get("/orders/1")
        .header("client_id", id)
        .header("client_secret", secret)
}

#[test]
fn every_outcome_with_inline_clients() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(), "hideCredentials": true}),
    );

    let ok = gw.send(&creds("shop", "shop-secret-7f3a"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.upstream_header("client_id").as_deref(), Some("shop"));
    assert_eq!(
        ok.upstream_header("client_secret"),
        None,
        "hideCredentials removes the secret"
    );
    let identity: Value =
        serde_json::from_str(&ok.upstream_header("x-seen-identity").expect("identity")).unwrap();
    assert_eq!(identity["clientId"], "shop");
    assert_eq!(identity["clientName"], "shop app");
    assert_eq!(identity["tier"], "gold");

    let unauthorized = [
        Request::get("/orders/1").header("client_secret", "shop-secret-7f3a"),
        creds("nobody", "shop-secret-7f3a"),
        Request::get("/orders/1").header("client_id", "shop"),
        creds("shop", "shop-secret-7f3b"),
        creds("retired", "old-secret"),
    ];
    let mut bodies = Vec::new();
    for req in &unauthorized {
        let resp = gw.send(req);
        assert_denied(&resp, 401, "invalid_client");
        assert_eq!(
            resp.header("www-authenticate"),
            Some("Client-ID-Enforcement")
        );
        bodies.push(resp.text());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one generic message for every 401"
    );
    assert_denied(
        &gw.send(&creds("catalog-only", "cat-secret-19bd")),
        403,
        "no_contract",
    );
    assert_eq!(upstream.hits(), 1);

    for (metric, n) in [
        ("allowed", 1.0),
        ("missing_client_id", 1.0),
        ("unknown_client", 1.0),
        ("missing_secret", 1.0),
        ("invalid_secret", 1.0),
        ("disabled_client", 1.0),
        ("no_contract", 1.0),
    ] {
        assert_eq!(
            gw.metric(&format!("palisade_client_id_enforcement_{metric}")),
            Some(n),
            "{metric}"
        );
    }
    // No secret (nor its hash) is ever logged.
    let log = gw.log();
    assert!(!log.contains("shop-secret") && !log.contains(&sha256_hex("shop-secret-7f3a")));
}

#[test]
fn a_spoofed_identity_is_ignored() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients()}),
    );
    let forged =
        r#"{"authenticatedBy":"client-id-enforcement","clientId":"vip","tier":"platinum"}"#;
    // Without credentials, imitating the hand-off gets nowhere...
    let resp = gw.send(
        &Request::get("/")
            .header("x-seen-identity", forged)
            .header("palisade.identity", forged),
    );
    assert_denied(&resp, 401, "invalid_client");
    // ...and with valid credentials the real identity wins over anything the client wrote.
    let resp = gw.send(&creds("shop", "shop-secret-7f3a").header("x-seen-identity", forged));
    let identity: Value =
        serde_json::from_str(&resp.upstream_header("x-seen-identity").unwrap()).unwrap();
    assert_eq!(
        (identity["clientId"].as_str(), identity["tier"].as_str()),
        (Some("shop"), Some("gold"))
    );
}

#[test]
fn query_and_basic_modes_over_http1_and_http2() {
    let upstream = Upstream::start();
    let query = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(), "hideCredentials": true,
               "clientIdSource": "query:client_id", "clientSecretSource": "query:client_secret"}),
    );
    let ok = query.send_h2(&Request::get(
        "/orders?client_id=shop&client_secret=shop-secret-7f3a&page=2",
    ));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["path"], "/orders?client_id=shop&page=2");
    assert_denied(
        &query.send(&Request::get("/orders?client_id=shop&client_secret=nope")),
        401,
        "invalid_client",
    );

    let basic = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(), "hideCredentials": true,
               "clientIdSource": "basic:username", "clientSecretSource": "basic:password", "realm": "shop-api"}),
    );
    // "shop:shop-secret-7f3a" in base64.
    let auth = "Basic c2hvcDpzaG9wLXNlY3JldC03ZjNh";
    for send in [Gateway::send, Gateway::send_h2] {
        let ok = send(
            &basic,
            &Request::get("/orders").header("authorization", auth),
        );
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.upstream_header("authorization"), None);
        let denied = send(
            &basic,
            &Request::get("/orders").header("authorization", "Basic c2hvcDp4"),
        );
        assert_denied(&denied, 401, "invalid_client");
        assert_eq!(
            denied.header("www-authenticate"),
            Some("Basic realm=\"shop-api\"")
        );
    }

    let no_secret = gateway(
        &upstream,
        json!({"api": "orders", "clients": [{"clientId": "open", "contracts": {"orders": "free"}}], "clientSecretSource": null}),
    );
    assert_eq!(
        no_secret
            .send(&Request::get("/").header("client_id", "open"))
            .status,
        200
    );
}

fn registry_doc(clients: &[Value]) -> String {
    json!({ "clients": clients }).to_string()
}

/// Polls until `check` holds or `secs` pass.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

#[test]
fn remote_registry_refreshes_and_survives_outages_and_garbage() {
    let upstream = Upstream::start();
    let registry = MockServer::start();
    registry.respond(
        "/clients",
        200,
        registry_doc(&[client("shop", "s-1", json!({"orders": "gold"}))]),
    );
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("registry", registry.port())
        .wasm(
            "client-id-enforcement",
            json!({"api": "orders", "registry": {"cluster": "registry", "path": "/clients", "refreshSeconds": 1}})
                .to_string(),
        )
        .start();
    let started = Instant::now();
    assert!(
        eventually(10, || gw.send(&creds("shop", "s-1")).status == 200),
        "registry never loaded"
    );

    // A client added at the registry is accepted after a refresh, without restarting Envoy.
    assert_denied(&gw.send(&creds("new-app", "s-2")), 401, "invalid_client");
    registry.respond(
        "/clients",
        200,
        registry_doc(&[
            client("shop", "s-1", json!({"orders": "gold"})),
            client("new-app", "s-2", json!({"orders": "silver"})),
        ]),
    );
    assert!(
        eventually(10, || gw.send(&creds("new-app", "s-2")).status == 200),
        "refresh not applied"
    );

    // Both workers see the same registry: many connections, every one accepted, and Envoy's
    // per-worker connection counters show both workers served some.
    for _ in 0..40 {
        assert_eq!(gw.send(&creds("new-app", "s-2")).status, 200);
    }
    let stats = gw.admin_get("/stats?filter=worker_.*downstream_cx_total");
    let per_worker: Vec<u64> = stats
        .lines()
        .filter(|l| l.starts_with("listener.") && l.contains("downstream_cx_total"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .collect();
    assert_eq!(per_worker.len(), 2, "{stats}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "a worker served nothing: {stats}"
    );

    // One fetch per period per Envoy, not one per worker (3 VMs tick: main thread + 2 workers).
    let secs = started.elapsed().as_secs_f64();
    let fetches = registry.hits("/clients") as f64;
    assert!(fetches <= secs + 2.0, "{fetches} fetches in {secs:.1} s");

    // Outage: the last good copy stays in force, and the failure is counted.
    registry.set_down(true);
    assert!(eventually(10, || gw
        .metric("palisade_client_id_enforcement_registry_fetch_failed")
        .unwrap_or(0.0)
        >= 1.0));
    assert_eq!(gw.send(&creds("new-app", "s-2")).status, 200);
    // Garbage: the same.
    registry.set_down(false);
    registry.respond("/clients", 200, "<html>oops</html>");
    assert!(eventually(15, || gw
        .metric("palisade_client_id_enforcement_registry_invalid")
        .unwrap_or(0.0)
        >= 1.0));
    assert_eq!(gw.send(&creds("new-app", "s-2")).status, 200);
    assert_eq!(gw.send_h2(&creds("shop", "s-1")).status, 200);
    assert!(gw.log().contains("keeping the last good copy"));
}

#[test]
fn an_unreachable_registry_fails_closed_but_inline_clients_work() {
    let upstream = Upstream::start();
    let registry = MockServer::start();
    registry.set_down(true);
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("registry", registry.port())
        .wasm(
            "client-id-enforcement",
            json!({"api": "orders", "clients": [client("local", "l-1", json!({"orders": "gold"}))],
                   "registry": {"cluster": "registry", "refreshSeconds": 1}})
            .to_string(),
        )
        .start();
    let resp = gw.send(&creds("remote-app", "x"));
    assert_denied(&resp, 503, "registry_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(gw.send(&creds("local", "l-1")).status, 200);
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn invalid_configurations_are_refused_naming_the_field() {
    for (config, field) in [
        (json!({"clients": inline_clients()}), "missing field `api`"),
        (
            json!({"api": "orders"}),
            "configure `clients`, a `registry`, or both",
        ),
        (
            json!({"api": "orders", "clients": [{"clientId": "a", "secretSha256": "abc"}]}),
            "`clients[0].secretSha256`",
        ),
        (
            json!({"api": "orders", "clients": [{"clientId": "a"}]}),
            "`clients[0].secretSha256`",
        ),
        (
            json!({"api": "orders", "registry": {"cluster": "r", "refreshSeconds": 0}}),
            "`registry.refreshSeconds`",
        ),
        (
            json!({"api": "orders", "clientIdSource": "headers:x", "registry": {"cluster": "r"}}),
            "`clientIdSource`",
        ),
        (
            json!({"api": "orders", "registry": {"cluster": "r"}, "hideCredential": true}),
            "`hideCredential`",
        ),
    ] {
        let log = GatewayBuilder::new()
            .wasm("client-id-enforcement", config.to_string())
            .start_err();
        assert!(
            log.contains("client-id-enforcement: invalid configuration") && log.contains(field),
            "expected {field} for {config}:\n{log}"
        );
    }
}

#[test]
fn a_registry_of_50000_clients_loads_and_serves() {
    let upstream = Upstream::start();
    let registry = MockServer::start();
    let secret_hash = sha256_hex("bulk-secret");
    let clients: Vec<Value> = (0..50_000)
        .map(|i| json!({"clientId": format!("bulk-{i:05}"), "secretSha256": secret_hash, "contracts": {"orders": "bronze"}}))
        .collect();
    let doc = registry_doc(&clients);
    assert!(
        doc.len() > 4_000_000,
        "a realistic document: {} bytes",
        doc.len()
    );
    registry.respond("/clients", 200, doc);
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("registry", registry.port())
        .wasm(
            "client-id-enforcement",
            json!({"api": "orders", "registry": {"cluster": "registry", "refreshSeconds": 60}})
                .to_string(),
        )
        .start();
    assert!(
        eventually(30, || gw.send(&creds("bulk-49999", "bulk-secret")).status
            == 200),
        "the 50,000-client registry never served"
    );
    for id in ["bulk-00000", "bulk-25000", "bulk-49998"] {
        assert_eq!(gw.send_h2(&creds(id, "bulk-secret")).status, 200, "{id}");
    }
    assert_denied(
        &gw.send(&creds("bulk-50000", "bulk-secret")),
        401,
        "invalid_client",
    );
    assert_eq!(
        registry.hits("/clients"),
        1,
        "fetched once for the whole Envoy"
    );
}

#[test]
fn repeated_client_ids_secrets_and_authorization_lines_are_refused() {
    let upstream = Upstream::start();
    let headers = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(), "hideCredentials": true}),
    );
    let ok = headers.send(&creds("shop", "shop-secret-7f3a"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Valid credentials, then a second `client_id` line naming another client (the upstream
    // framework might read the last one); then a second secret line.
    for extra in [("client_id", "catalog-only"), ("client_secret", "x")] {
        let req = creds("shop", "shop-secret-7f3a").header(extra.0, extra.1);
        assert_refused_on_both_protocols(&headers, &upstream, &req, 401, "invalid_client");
    }
    assert_eq!(
        headers.metric("palisade_client_id_enforcement_ambiguous_credentials"),
        Some(4.0)
    );

    let query = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(),
               "clientIdSource": "query:client_id", "clientSecretSource": "query:client_secret"}),
    );
    let req = Request::get(
        "/orders?client_id=shop&client_secret=shop-secret-7f3a&client%5Fid=catalog-only",
    );
    assert_refused_on_both_protocols(&query, &upstream, &req, 401, "invalid_client");

    let basic = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(),
               "clientIdSource": "basic:username", "clientSecretSource": "basic:password"}),
    );
    let shop = "Basic c2hvcDpzaG9wLXNlY3JldC03ZjNh"; // shop:shop-secret-7f3a
    assert_eq!(
        basic
            .send(&Request::get("/orders").header("authorization", shop))
            .status,
        200
    );
    let twice = Request::get("/orders")
        .header("authorization", shop)
        .header("authorization", "Basic Y2F0YWxvZy1vbmx5Og=="); // catalog-only:
    assert_refused_on_both_protocols(&basic, &upstream, &twice, 401, "invalid_client");

    let cookie = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients(), "hideCredentials": true,
               "clientIdSource": "cookie:cid", "clientSecretSource": "cookie:cs"}),
    );
    let twice = Request::get("/orders")
        .header("cookie", "cid=shop; cs=shop-secret-7f3a")
        .header("cookie", "cid=catalog-only");
    assert_refused_on_both_protocols(&cookie, &upstream, &twice, 401, "invalid_client");
    // A secret cookie hidden from the upstream goes from every line, the others stay.
    let ok = cookie.send(
        &Request::get("/orders")
            .header("cookie", "cid=shop; theme=dark")
            .header("cookie", "cs=shop-secret-7f3a; lang=en"),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.upstream_header("cookie").as_deref(),
        Some("cid=shop; theme=dark; lang=en")
    );
}

#[test]
fn an_options_request_with_a_body_is_no_preflight() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"api": "orders", "clients": inline_clients()}),
    );
    let preflight = Request::new("OPTIONS", "/orders")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST");
    let with_body = preflight.clone().body(r#"{"order": 1}"#);
    assert_denied(&gw.send(&with_body), 401, "invalid_client");
    assert_eq!(gw.send_h2_without_length(&with_body), 401);
    assert_eq!(
        upstream.hits(),
        0,
        "an OPTIONS with a body reached the upstream"
    );
    assert_eq!(
        gw.metric("palisade_client_id_enforcement_missing_client_id"),
        Some(2.0)
    );
    // Without the body it is a preflight, and passes unauthenticated.
    for resp in [gw.send(&preflight), gw.send_h2(&preflight)] {
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-upstream"), Some("echo"));
    }
}
