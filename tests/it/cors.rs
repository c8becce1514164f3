//! `cors` in a real Envoy: preflights answered at the gateway (never reaching the upstream),
//! grants on actual requests, `Vary`, origin-matching edge cases, upstream CORS headers owned
//! by the gateway, local replies of later filters, refused configurations; and in a real
//! browser (headless Chromium driven by playwright-core, tests/browser/cors.mjs): a page on one
//! loopback origin calling the API behind Envoy on another.

use palisade_tests::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

const ACAO: &str = "access-control-allow-origin";
const ACAC: &str = "access-control-allow-credentials";
const ACEH: &str = "access-control-expose-headers";

fn gateway(upstream: &Upstream, config: Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .wasm("cors", config.to_string())
        .start()
}

/// The example configuration (the Flex shape), with `GET` allowed too.
fn shop() -> Value {
    json!({
        "publicResource": false, "supportCredentials": true,
        "originGroups": [{"origins": ["https://shop.example.com", "https://*.example.com"],
                          "accessControlMaxAge": 600,
                          "allowedMethods": [{"methodName": "PUT", "isAllowed": true},
                                             {"methodName": "GET", "isAllowed": true}],
                          "headers": ["x-request-id", "content-type"],
                          "exposedHeaders": ["x-ratelimit-remaining"]}]
    })
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request {
    let mut r = Request::new("OPTIONS", "/orders/7")
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        r = r.header("access-control-request-headers", h);
    }
    r
}

fn from(origin: &str) -> Request {
    Request::get("/orders/7").header("origin", origin)
}

fn assert_no_grant(resp: &Response) {
    for h in [
        ACAO,
        ACAC,
        ACEH,
        "access-control-allow-methods",
        "access-control-allow-headers",
    ] {
        assert!(
            resp.header(h).is_none(),
            "unexpected {h}: {:?}",
            resp.headers
        );
    }
}

fn vary_has_origin(resp: &Response) -> bool {
    resp.headers
        .iter()
        .filter(|(n, _)| n == "vary")
        .flat_map(|(_, v)| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin"))
}

#[test]
fn preflights_are_answered_by_the_gateway_over_http1_and_http2() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, shop());
    for send in [Gateway::send, Gateway::send_h2] {
        let ok = send(
            &gw,
            &preflight(
                "https://app.example.com",
                "PUT",
                Some("x-request-id,Content-Type"),
            ),
        );
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.header(ACAO), Some("https://app.example.com"));
        assert_eq!(ok.header(ACAC), Some("true"));
        assert_eq!(ok.header("access-control-allow-methods"), Some("PUT, GET"));
        assert_eq!(
            ok.header("access-control-allow-headers"),
            Some("x-request-id, content-type")
        );
        assert_eq!(ok.header("access-control-max-age"), Some("600"));
        assert!(vary_has_origin(&ok));

        for refused in [
            preflight("https://evil.test", "PUT", None),
            preflight("https://shop.example.com", "DELETE", None),
            preflight(
                "https://shop.example.com",
                "PUT",
                Some("x-request-id, authorization"),
            ),
        ] {
            let no = send(&gw, &refused);
            assert_eq!(no.status, 403, "{}", no.text());
            assert_eq!(no.header("content-type"), Some("application/json"));
            assert_eq!(no.json()["error"], "cors_preflight_denied");
            assert_no_grant(&no);
            assert!(vary_has_origin(&no));
        }
    }
    assert_eq!(upstream.hits(), 0, "no preflight may reach the upstream");
    assert_eq!(gw.metric("palisade_cors_preflight_allowed"), Some(2.0));
    assert_eq!(gw.metric("palisade_cors_preflight_denied"), Some(6.0));

    // An OPTIONS that is not a preflight (no Access-Control-Request-Method) is a request like
    // any other: it reaches the upstream (and OPTIONS is not an allowed method here).
    let plain = gw.send(&Request::new("OPTIONS", "/").header("origin", "https://shop.example.com"));
    assert_eq!(plain.header("x-upstream"), Some("echo"));
    assert_no_grant(&plain);
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn actual_requests_get_grants_and_vary_and_always_reach_the_upstream() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, shop());
    for send in [Gateway::send, Gateway::send_h2] {
        let ok = send(&gw, &from("https://shop.example.com"));
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("x-upstream"), Some("echo"));
        assert_eq!(ok.header(ACAO), Some("https://shop.example.com"));
        assert_eq!(ok.header(ACAC), Some("true"));
        assert_eq!(ok.header(ACEH), Some("x-ratelimit-remaining"));
        assert!(vary_has_origin(&ok));
        // The upstream saw the origin as sent.
        assert_eq!(
            ok.upstream_header("origin").as_deref(),
            Some("https://shop.example.com")
        );

        // A refused origin is not blocked (CORS is enforced by browsers): the request goes
        // through, but nothing grants the page access to the answer.
        let refused = send(&gw, &from("https://evil-example.com"));
        assert_eq!(refused.status, 200);
        assert_eq!(refused.header("x-upstream"), Some("echo"));
        assert_no_grant(&refused);
        assert!(vary_has_origin(&refused));

        // A method outside the group: no grant.
        let post = send(
            &gw,
            &Request::new("POST", "/")
                .header("origin", "https://shop.example.com")
                .body("{}"),
        );
        assert_eq!(post.header("x-upstream"), Some("echo"));
        assert_no_grant(&post);

        // No Origin: not a CORS request, but the answer still varies with Origin.
        let plain = send(&gw, &Request::get("/"));
        assert_eq!(plain.status, 200);
        assert!(plain.header(ACAO).is_none());
        assert!(vary_has_origin(&plain));
    }
    assert_eq!(upstream.hits(), 8);
    assert_eq!(gw.metric("palisade_cors_allowed"), Some(2.0));
    assert_eq!(gw.metric("palisade_cors_denied"), Some(4.0));
}

#[test]
fn origin_matching_is_exact_and_wildcards_cover_subdomains_only() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"originGroups": [{"origins": [
            "https://shop.example.com", "https://*.example.com", "http://127.0.0.1:8080", "null"
        ]}, {"origins": ["https://partner.test:8443"], "allowedMethods": ["GET"]}]}),
    );
    for (origin, granted) in [
        ("https://shop.example.com", true),
        ("https://a.b.example.com", true),
        ("https://example.com", false),
        ("https://evil-example.com", false),
        ("https://example.com.evil.net", false),
        ("https://shop.example.com.evil.net", false),
        ("http://shop.example.com", false),
        ("https://shop.example.com:444", false),
        ("http://127.0.0.1:8080", true),
        ("http://127.0.0.1:8081", false),
        ("http://localhost:8080", false),
        ("https://partner.test:8443", true),
        ("https://partner.test", false),
        ("null", true),
        ("https://shop.example.com/", false),
        ("https://shop.example.com, https://evil.test", false),
    ] {
        let resp = gw.send(&preflight(origin, "GET", None));
        assert_eq!(resp.status == 200, granted, "preflight from {origin}");
        let resp = gw.send(&from(origin));
        assert_eq!(
            resp.header(ACAO),
            granted.then_some(origin),
            "GET from {origin}"
        );
    }

    // Without a `null` entry, no wildcard ever matches the `null` origin.
    let star = gateway(
        &upstream,
        json!({"publicResource": false, "originGroups": [{"origins": ["*", "https://*.example.com"]}]}),
    );
    assert!(star.send(&from("null")).header(ACAO).is_none());
    assert_eq!(star.send(&preflight("null", "GET", None)).status, 403);
    assert_eq!(
        star.send(&from("https://anything.test")).header(ACAO),
        Some("https://anything.test")
    );
}

#[test]
fn public_resource_default_grants_any_origin_without_credentials() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, json!({}));
    let pre = gw.send_h2(&preflight(
        "http://localhost:4200",
        "PATCH",
        Some("x-anything"),
    ));
    assert_eq!(pre.status, 200);
    assert_eq!(pre.header(ACAO), Some("*"));
    assert!(pre.header(ACAC).is_none());
    assert_eq!(pre.header("access-control-allow-methods"), Some("PATCH"));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("x-anything")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("30"));
    let get = gw.send_h2(&from("https://any.test"));
    assert_eq!(get.header(ACAO), Some("*"));
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn the_gateway_owns_cors_response_headers() {
    let upstream = Upstream::start();
    // A permissive upstream (headers added on its responses by the route).
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .route_field(
            "response_headers_to_add",
            json!([
                {"header": {"key": ACAO, "value": "*"}},
                {"header": {"key": ACAC, "value": "true"}},
                {"header": {"key": ACEH, "value": "x-internal"}},
                {"header": {"key": "vary", "value": "Accept-Encoding"}},
            ]),
        )
        .wasm(
            "cors",
            json!({"originGroups": [{"origins": ["https://a.test"]}]}).to_string(),
        )
        .start();
    let refused = gw.send(&from("https://evil.test"));
    assert_eq!(refused.header("x-upstream"), Some("echo"));
    assert_no_grant(&refused);
    let granted = gw.send(&from("https://a.test"));
    assert_eq!(granted.header(ACAO), Some("https://a.test"));
    assert!(
        granted.header(ACAC).is_none(),
        "supportCredentials is false"
    );
    assert!(granted.header(ACEH).is_none(), "nothing is exposed");
    assert_eq!(granted.header("vary"), Some("Accept-Encoding, Origin"));
}

#[test]
fn cors_first_lets_browsers_read_denials_of_later_filters() {
    let upstream = Upstream::start();
    // A native filter after cors that denies everything: its 403 still carries the grant, so
    // a browser app can read it, and preflights never get to it.
    let deny_all = json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {}},
        },
    });
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .wasm("cors", shop().to_string())
        .filter(palisade_tests::Filter::Native(deny_all))
        .start();
    let denied = gw.send(&from("https://shop.example.com"));
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header(ACAO), Some("https://shop.example.com"));
    assert_eq!(denied.header(ACAC), Some("true"));
    let pre = gw.send(&preflight("https://shop.example.com", "PUT", None));
    assert_eq!(pre.status, 200);
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn with_an_auth_policy_preflights_work_in_either_order() {
    let upstream = Upstream::start();
    // alice / "open sesame", as an htpasswd {SHA} hash.
    let auth = json!({"users": [{"username": "alice", "passwordHash": "{SHA}W8r/fyL/UzygmbNAjq2HbA67qac="}]});
    let alice = "Basic YWxpY2U6b3BlbiBzZXNhbWU=";
    let origin = "https://shop.example.com";

    // cors first (the documented order): preflights never reach the auth policy, and its 401
    // carries the grant so the browser app can read it.
    let first = GatewayBuilder::new()
        .upstream(&upstream)
        .wasm("cors", shop().to_string())
        .wasm("basic-auth", auth.to_string())
        .start();
    let pre = first.send(&preflight(origin, "PUT", Some("content-type")));
    assert_eq!(pre.status, 200);
    assert_eq!(pre.header(ACAO), Some(origin));
    assert_eq!(
        first.metric("palisade_basic_auth_preflight").unwrap_or(0.0),
        0.0
    );
    let anonymous = first.send(&from(origin));
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header(ACAO), Some(origin));
    assert_eq!(anonymous.header(ACAC), Some("true"));
    let signed_in = first.send(&from(origin).header("authorization", alice));
    assert_eq!(signed_in.status, 200);
    assert_eq!(signed_in.header(ACAO), Some(origin));
    assert_eq!(upstream.hits(), 1);

    // Misordered: the auth policy lets the credential-less preflight through (its
    // `allowCorsPreflight` default), and cors still answers it before the upstream.
    let misordered = GatewayBuilder::new()
        .upstream(&upstream)
        .wasm("basic-auth", auth.to_string())
        .wasm("cors", shop().to_string())
        .start();
    let pre = misordered.send_h2(&preflight(origin, "PUT", Some("content-type")));
    assert_eq!(pre.status, 200);
    assert_eq!(pre.header(ACAO), Some(origin));
    assert_eq!(
        misordered.metric("palisade_basic_auth_preflight"),
        Some(1.0)
    );
    assert_eq!(upstream.hits(), 1, "no preflight reached the upstream");
    // But the auth policy's 401 to a request without credentials never reaches cors (Envoy
    // runs no part of a filter that comes after the one answering): the browser app sees a
    // CORS failure instead of the 401. Hence: cors first.
    let anonymous = misordered.send(&from(origin));
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header(ACAO).is_none());
}

#[test]
fn invalid_configurations_are_refused_by_envoy_naming_the_field() {
    for (config, field) in [
        (
            json!({"originGroups": [{"origins": ["https://*.com"]}]}),
            "`originGroups[0].origins[0]`",
        ),
        (
            json!({"originGroups": [{"origins": ["https://a.test/"]}]}),
            "`originGroups[0].origins[0]`",
        ),
        (
            json!({"publicResource": true, "originGroups": [{"origins": ["https://a.test"]}]}),
            "`publicResource`",
        ),
        (json!({"publicResource": false}), "`originGroups`"),
        (
            json!({"originGroups": [{"origins": ["https://a.test"], "accessControlMaxAge": -5}]}),
            "`originGroups[0].accessControlMaxAge`",
        ),
        (
            json!({"originGroups": [{"origins": ["https://a.test"], "headers": ["bad header"]}]}),
            "`originGroups[0].headers[0]`",
        ),
        (json!({"supportCredential": true}), "`supportCredential`"),
    ] {
        let log = GatewayBuilder::new()
            .wasm("cors", config.to_string())
            .start_err();
        assert!(
            log.contains("cors: invalid configuration") && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Real browser.

/// Serves a blank HTML page for any path on 127.0.0.1 (one app origin per listener).
struct PageServer {
    port: u16,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind page server");
        let port = listener.local_addr().expect("page address").port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        line.clear();
                    }
                    let body = "<!doctype html><title>app</title><p>app";
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        PageServer { port }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Node: `NODE_BIN`, else the one scripts/install.d/cors.sh put in .tools (when the machine's
/// is too old), else `node`.
fn node() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("NODE_BIN") {
        return bin.into();
    }
    let local = palisade_tests::root().join(".tools/node/bin/node");
    if local.exists() {
        local
    } else {
        "node".into()
    }
}

/// Runs the scenarios in headless Chromium; returns each one's result by name.
fn browse(scenarios: Value) -> Value {
    let dir = palisade_tests::root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run scripts/install-toolchain.sh (scripts/install.d/cors.sh installs Chromium and playwright-core)"
    );
    let mut child = Command::new(node())
        .current_dir(&dir)
        .arg("cors.mjs")
        .arg(json!({ "scenarios": scenarios }).to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser run took over 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("browser results are JSON")
}

fn console_mentions(result: &Value, needle: &str) -> bool {
    result["console"].as_array().is_some_and(|msgs| {
        msgs.iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains(needle)))
    })
}

#[test]
fn a_real_browser_honours_the_policy() {
    let app = PageServer::start();
    let other = PageServer::start();
    let upstream = Upstream::start();
    let group = |credentials: bool, exposed: Value| {
        json!({"publicResource": false, "supportCredentials": credentials, "originGroups": [{
            "origins": [app.origin()], "accessControlMaxAge": 0,
            "allowedMethods": [{"methodName": "GET", "isAllowed": true},
                               {"methodName": "PUT", "isAllowed": true}],
            "headers": ["x-client-version", "content-type"], "exposedHeaders": exposed}]})
    };
    let with_credentials = gateway(&upstream, group(true, json!(["x-upstream"])));
    let without_credentials = gateway(&upstream, group(false, json!([])));
    let api = |gw: &Gateway, path: &str| format!("http://{}{path}", gw.addr());
    let page = |server: &PageServer| format!("{}/index.html", server.origin());

    let results = browse(json!([
        {"name": "allowed", "page": page(&app), "url": api(&with_credentials, "/allowed"),
         "read": ["x-upstream"]},
        {"name": "disallowed", "page": page(&other), "url": api(&with_credentials, "/disallowed")},
        {"name": "put", "page": page(&app), "url": api(&with_credentials, "/put"),
         "init": {"method": "PUT", "body": "{\"n\": 1}",
                  "headers": {"x-client-version": "1.2.3", "content-type": "application/json"}},
         "read": ["x-upstream"]},
        {"name": "put_forbidden_header", "page": page(&app),
         "url": api(&with_credentials, "/put-forbidden"),
         "init": {"method": "PUT", "headers": {"x-secret": "1"}}},
        {"name": "credentialed", "page": page(&app), "url": api(&with_credentials, "/credentialed"),
         "init": {"credentials": "include"}, "cookie": "session=s3cret"},
        {"name": "credentialed_unsupported", "page": page(&app),
         "url": api(&without_credentials, "/credentialed-unsupported"),
         "init": {"credentials": "include"}, "cookie": "session=s3cret"},
        {"name": "not_exposed", "page": page(&app), "url": api(&without_credentials, "/not-exposed"),
         "read": ["x-upstream"]},
    ]));
    let r = |name: &str| results[name].clone();

    // An allowed origin reads the response and the exposed header.
    let allowed = r("allowed");
    assert_eq!(allowed["ok"], true, "{allowed}");
    assert_eq!(allowed["status"], 200);
    let body: Value = serde_json::from_str(allowed["body"].as_str().unwrap_or("")).expect("echo");
    assert_eq!(body["path"], "/allowed");
    assert_eq!(body["headers"]["origin"], app.origin().as_str());
    assert_eq!(allowed["headers"]["x-upstream"], "echo");

    // A disallowed origin's fetch fails in the browser (the request itself reached the API:
    // a simple GET is not preflighted, the browser just withholds the answer).
    let disallowed = r("disallowed");
    assert_eq!(disallowed["ok"], false, "{disallowed}");
    assert!(disallowed["error"]
        .as_str()
        .unwrap_or("")
        .contains("Failed to fetch"));
    assert!(
        console_mentions(
            &disallowed,
            "No 'Access-Control-Allow-Origin' header is present"
        ),
        "{disallowed}"
    );

    // A PUT with a custom header is preflighted; the browser accepts the grant and sends the PUT.
    let put = r("put");
    assert_eq!(put["ok"], true, "{put}");
    let body: Value = serde_json::from_str(put["body"].as_str().unwrap_or("")).expect("echo");
    assert_eq!(body["method"], "PUT");
    // (Envoy at the edge replaces `x-request-id`, so the test uses its own header.)
    assert_eq!(body["headers"]["x-client-version"], "1.2.3");
    assert_eq!(body["body"], "{\"n\": 1}");

    // A header outside the group: the preflight is refused and the PUT is never sent.
    let forbidden = r("put_forbidden_header");
    assert_eq!(forbidden["ok"], false, "{forbidden}");
    assert!(
        console_mentions(&forbidden, "Response to preflight request doesn't pass"),
        "{forbidden}"
    );

    // Credentials (a cookie) go through only with supportCredentials.
    let credentialed = r("credentialed");
    assert_eq!(credentialed["ok"], true, "{credentialed}");
    let body: Value =
        serde_json::from_str(credentialed["body"].as_str().unwrap_or("")).expect("echo");
    assert_eq!(body["headers"]["cookie"], "session=s3cret");
    let unsupported = r("credentialed_unsupported");
    assert_eq!(unsupported["ok"], false, "{unsupported}");
    assert!(
        console_mentions(
            &unsupported,
            "'Access-Control-Allow-Credentials' header in the response is ''"
        ),
        "{unsupported}"
    );

    // Without exposedHeaders the page cannot read the upstream's custom header.
    let not_exposed = r("not_exposed");
    assert_eq!(not_exposed["ok"], true, "{not_exposed}");
    assert_eq!(not_exposed["headers"]["x-upstream"], Value::Null);

    // What reached the upstream: every actual request except the refused PUT; no OPTIONS.
    // (allowed, disallowed, put, credentialed, credentialed_unsupported, not_exposed)
    assert_eq!(upstream.hits(), 6);
    assert_eq!(
        with_credentials.metric("palisade_cors_preflight_allowed"),
        Some(1.0)
    );
    assert_eq!(
        with_credentials.metric("palisade_cors_preflight_denied"),
        Some(1.0)
    );
    assert_eq!(with_credentials.metric("palisade_cors_denied"), Some(1.0));
}
