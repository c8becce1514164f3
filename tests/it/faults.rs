//! Faults in a real Envoy: the peers the policies call (a JWKS endpoint, a client registry, an
//! introspection server) refusing connections, closing them, answering too late or answering
//! garbage; an upstream that resets; clients that go away while their request is held or waits
//! for a fetch; the listener replaced while requests are in flight; a filter that traps, under
//! each of Envoy's `failure_policy` values. Every test asserts that a denied request never
//! reached the upstream, that Envoy keeps serving, and that the policy recovers with its peer.
//! Timings are small (1 s refreshes, 300 ms timeouts) and bounded.

use palisade_tests::jwt::{hs256, now, RsaKey};
use palisade_tests::{
    http1, Answer, Connection, Filter, Gateway, GatewayBuilder, MockServer, Request, Response,
    Upstream,
};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it holds; false after `secs`.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// A port nothing listens on (yet): a peer that refuses connections.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a port")
        .port()
}

#[track_caller]
fn assert_denied(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.json()["error"], code, "{}", resp.text());
    assert!(
        resp.header("x-upstream").is_none(),
        "a denied request reached the upstream"
    );
}

/// Envoy still serves (admin and listener), and no policy VM failed.
#[track_caller]
fn assert_serving(gw: &Gateway) {
    assert_eq!(gw.admin_get("/ready").trim(), "LIVE");
    let log = gw.log();
    assert!(
        !log.contains("RuntimeError") && !log.contains("[critical]"),
        "a VM failed or Envoy logged a critical error:\n{log}"
    );
}

fn metric(gw: &Gateway, name: &str) -> f64 {
    gw.metric(name).unwrap_or(0.0)
}

/// What a failing peer does besides refusing connections (which needs no server): each is a
/// reason to fail closed, never to let a request in.
fn failing_peer() -> Vec<(&'static str, Answer)> {
    vec![
        ("closes the connection", Answer::json(0, "")),
        (
            "answers after the timeout",
            Answer::json(200, "{}").delayed(Duration::from_millis(1200)),
        ),
        ("answers a 500", Answer::json(500, r#"{"error":"oops"}"#)),
        (
            "resets mid-response",
            Answer::json(200, r#"{"keys":[],"clients":[]}"#).cut_after(40),
        ),
    ]
}

/// What a peer answering garbage sends with a 200.
fn garbage() -> Vec<(&'static str, Answer)> {
    // 8 MiB of valid JSON, but an array where every peer's document is an object.
    let entry = r#"{"kty":"oct","kid":"junk","clientId":"junk","active":true},"#;
    let huge = format!("[{}{{}}]", entry.repeat((8 << 20) / entry.len()));
    vec![
        (
            "answers HTML",
            Answer::json(200, "<html>maintenance</html>").header("content-type", "text/html"),
        ),
        (
            "answers truncated JSON",
            Answer::json(200, r#"{"keys":[{"kty":"RSA","kid":"#),
        ),
        ("answers an 8 MiB JSON array", Answer::json(200, huge)),
    ]
}

const ISSUER: &str = "https://faults.test";

#[test]
fn jwks_endpoint_down_or_failing_fails_closed_and_the_policy_recovers() {
    jwks_faults(failing_peer());
}

#[test]
fn jwks_endpoint_answering_garbage_fails_closed_and_the_policy_recovers() {
    jwks_faults(garbage());
}

/// jwt-validation whose JWKS endpoint refuses connections at startup, then shows each of
/// `faults` in turn, recovering in between.
fn jwks_faults(faults: Vec<(&str, Answer)>) {
    let key = RsaKey::generate("k1");
    let jwks = RsaKey::jwks(&[&key]);
    let token = key.rs256(&json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600}));
    let upstream = Upstream::start();
    let port = closed_port();
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("idp", port)
        .wasm(
            "jwt-validation",
            // Keys stop being usable 1 s after the last good fetch (no stale grace), so every
            // fault shows at once as 503.
            json!({"issuer": ISSUER, "algorithms": ["RS256"],
                   "jwks": {"cluster": "idp", "uri": format!("http://127.0.0.1:{port}/jwks"),
                            "cacheSeconds": 1, "timeoutMs": 300, "maxStaleSeconds": 0}})
            .to_string(),
        )
        .start();
    let req = Request::get("/orders").header("authorization", &format!("Bearer {token}"));
    let mut passed = 0;
    let mut send = |gw: &Gateway| {
        let resp = gw.send(&req);
        if resp.status == 200 {
            passed += 1;
        }
        resp
    };

    // Down at startup: connection refused, no keys ever loaded.
    assert_denied(&send(&gw), 503, "jwks_unavailable");
    let idp = MockServer::start_on(port);
    idp.respond("/jwks", 200, jwks.clone());
    assert!(eventually(10, || send(&gw).status == 200), "never loaded");

    for (fault, answer) in faults {
        let failed = metric(&gw, "palisade_jwt_validation_jwks_fetch_failed");
        idp.respond_with("/jwks", answer);
        let mut last = None;
        assert!(
            eventually(10, || {
                let resp = send(&gw);
                let denied = resp.status == 503;
                last = Some(resp);
                denied
            }),
            "{fault}: still served without fresh keys"
        );
        assert_denied(&last.expect("a response"), 503, "jwks_unavailable");
        assert!(
            eventually(10, || metric(
                &gw,
                "palisade_jwt_validation_jwks_fetch_failed"
            ) > failed),
            "{fault}: no failed fetch counted"
        );
        idp.respond("/jwks", 200, jwks.clone());
        assert!(
            eventually(15, || send(&gw).status == 200),
            "{fault}: did not recover"
        );
    }
    assert_eq!(upstream.hits(), passed, "only allowed requests reached it");
    assert_serving(&gw);
}

#[test]
fn client_registry_down_or_failing_fails_closed_and_the_policy_recovers() {
    registry_faults(failing_peer());
}

#[test]
fn client_registry_answering_garbage_fails_closed_and_the_policy_recovers() {
    registry_faults(garbage());
}

/// client-id-enforcement whose registry refuses connections at startup, then shows each of
/// `faults` in turn, recovering in between.
fn registry_faults(faults: Vec<(&str, Answer)>) {
    let doc = |ids: &[&str]| {
        let clients: Vec<Value> = ids
            .iter()
            .map(|id| json!({"clientId": id, "contracts": {"orders": "gold"}}))
            .collect();
        json!({ "clients": clients }).to_string()
    };
    let upstream = Upstream::start();
    let port = closed_port();
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("registry", port)
        .wasm(
            "client-id-enforcement",
            json!({"api": "orders", "clientSecretSource": null,
                   "registry": {"cluster": "registry", "path": "/clients",
                                "refreshSeconds": 1, "timeoutMs": 300}})
            .to_string(),
        )
        .start();
    let as_client = |id: &str| Request::get("/orders").header("client_id", id);

    // Down at startup: nobody is known, so everybody is refused (503, retry later).
    assert_denied(&gw.send(&as_client("app-0")), 503, "registry_unavailable");
    let registry = MockServer::start_on(port);
    registry.respond("/clients", 200, doc(&["app-0"]));
    assert!(eventually(10, || gw.send(&as_client("app-0")).status == 200));
    let mut known = vec!["app-0".to_owned()];

    for (round, (fault, answer)) in faults.into_iter().enumerate() {
        let failures = || {
            metric(&gw, "palisade_client_id_enforcement_registry_fetch_failed")
                + metric(&gw, "palisade_client_id_enforcement_registry_invalid")
        };
        let before = failures();
        registry.respond_with("/clients", answer);
        assert!(
            eventually(10, || failures() > before),
            "{fault}: no failed fetch counted"
        );
        // The last good copy stays in force: known clients pass, others are refused.
        let newcomer = format!("app-{}", round + 1);
        assert_eq!(gw.send(&as_client(&known[0])).status, 200, "{fault}");
        assert_denied(&gw.send(&as_client(&newcomer)), 401, "invalid_client");
        // Recovery: the next good document (with a new client) is taken.
        known.push(newcomer.clone());
        let ids: Vec<&str> = known.iter().map(String::as_str).collect();
        registry.respond("/clients", 200, doc(&ids));
        assert!(
            eventually(15, || gw.send(&as_client(&newcomer)).status == 200),
            "{fault}: did not recover"
        );
    }
    // Every request that passed was a known client; none of the denied ones got through.
    let passed = metric(&gw, "palisade_client_id_enforcement_allowed") as usize;
    assert_eq!(upstream.hits(), passed);
    assert_serving(&gw);
}

#[test]
fn introspection_server_faults_are_503_and_the_policy_recovers() {
    let upstream = Upstream::start();
    let port = closed_port();
    let gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("idp", port)
        .wasm(
            "token-introspection",
            json!({"introspectionUrl": format!("http://127.0.0.1:{port}/introspect"),
                   "cluster": "idp", "authorizationValue": "Basic Z3c6cw==",
                   "authenticationTimeout": 300})
            .to_string(),
        )
        .start();
    let bearer = |t: &str| Request::get("/orders").header("authorization", &format!("Bearer {t}"));
    let active = json!({"active": true, "client_id": "app", "exp": now() + 3600}).to_string();

    assert_denied(
        &gw.send(&bearer("token-0")),
        503,
        "introspection_unavailable",
    );
    let server = MockServer::start_on(port);
    server.respond("/introspect", 200, active.clone());
    assert_eq!(gw.send(&bearer("token-0")).status, 200);

    let faults = failing_peer().into_iter().chain(garbage());
    for (round, (fault, answer)) in faults.enumerate() {
        // A new token each round: the answers of earlier rounds are cached.
        let token = format!("token-{}", round + 1);
        server.respond_with("/introspect", answer);
        let started = Instant::now();
        let resp = gw.send(&bearer(&token));
        assert_denied(&resp, 503, "introspection_unavailable");
        assert!(
            started.elapsed() < Duration::from_millis(1100),
            "{fault}: the timeout did not apply ({:?})",
            started.elapsed()
        );
        // Failures are not cached: the same token passes once the server answers again.
        server.respond("/introspect", 200, active.clone());
        assert_eq!(gw.send(&bearer(&token)).status, 200, "{fault}");
    }
    assert_eq!(upstream.hits(), 8);
    assert_eq!(metric(&gw, "palisade_token_introspection_unavailable"), 8.0);
    assert_serving(&gw);
}

const SECRET: &str = "faults-hmac-secret-of-at-least-32-bytes";

/// A gateway whose policies act on the request and on the response (CORS headers, rate-limit
/// headers) in front of `upstream_port`.
fn response_phase_chain() -> GatewayBuilder {
    GatewayBuilder::new()
        .wasm("cors", json!({"publicResource": true}).to_string())
        .wasm(
            "jwt-validation",
            json!({"issuer": ISSUER, "hmacSecret": SECRET, "algorithms": ["HS256"]}).to_string(),
        )
        .wasm(
            "rate-limiting",
            json!({"rateLimits": [{"maximumRequests": 100000, "timePeriodInMilliseconds": 60000}],
                   "exposeHeaders": true})
            .to_string(),
        )
}

#[test]
fn upstream_resets_are_503_and_the_next_requests_are_fine() {
    let token = hs256(
        SECRET.as_bytes(),
        &json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600}),
    );
    let req = |path: &str| {
        Request::get(path)
            .header("authorization", &format!("Bearer {token}"))
            .header("origin", "https://app.example")
    };
    let upstream = MockServer::start();
    upstream.respond("/ok", 200, r#"{"ok":true}"#);
    upstream.respond_with("/close", Answer::json(0, ""));
    upstream.respond_with("/cut-head", Answer::json(200, "{}").cut_after(12));
    upstream.respond_with(
        "/cut-body",
        Answer::json(200, vec![b' '; 4096]).cut_after(200),
    );
    let gw = response_phase_chain()
        .upstream_port(upstream.port())
        .start();
    let refusing = response_phase_chain().upstream_port(closed_port()).start();

    let ok = |gw: &Gateway| {
        let resp = gw.send(&req("/ok"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert!(resp.header("x-ratelimit-remaining").is_some());
    };
    ok(&gw);
    // Closed before any answer: 503; closed in the middle of the response head: 502 (Envoy
    // calls it a protocol error).
    for (path, status) in [("/close", 503), ("/cut-head", 502)] {
        let resp = gw.send(&req(path));
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
        // The local reply passed the response phase of the policies too.
        assert!(resp.header("x-ratelimit-remaining").is_some(), "{path}");
        ok(&gw);
    }
    // Headers already went to the client: Envoy can only cut the client's response short.
    let mut conn = Connection::new(gw.addr());
    assert!(
        conn.send(&req("/cut-body")).is_err(),
        "a truncated body was delivered as complete"
    );
    ok(&gw);
    let resp = refusing.send(&req("/ok"));
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.text().contains("connection refused") || resp.text().contains("connect"));
    // Over HTTP/2 as well, and Envoy still serves everything after.
    assert_eq!(gw.send_h2(&req("/close")).status, 503);
    assert_eq!(gw.send_h2(&req("/ok")).status, 200);
    assert_eq!(upstream.hits("/ok"), 5);
    assert_serving(&gw);
    assert_serving(&refusing);
}

/// Opens a connection, sends `head` and closes it after `hold`, before any answer.
fn send_and_leave(addr: std::net::SocketAddr, head: String, hold: Duration) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("send");
    std::thread::sleep(hold);
}

#[test]
fn clients_leaving_held_requests_free_spike_control_queue_places() {
    let upstream = Upstream::start();
    let gw = palisade_tests::quota::gateway(
        &upstream,
        "spike-control",
        // Held long enough to outlast the metric reads below (each waits for the policy's
        // counter flush, about a second).
        json!({"maximumRequests": 1, "timePeriodInMilliseconds": 20000,
               "delayTimeInMillis": 6000, "delayAttempts": 1, "queuingLimit": 4}),
    );
    assert_eq!(gw.send(&Request::get("/first")).status, 200);
    let addr = gw.addr();
    // Four held requests, whose clients all leave while they are held.
    let quitters: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let head = format!("GET /quit{i} HTTP/1.1\r\nhost: gateway.test\r\n\r\n");
                send_and_leave(addr, head, Duration::from_millis(250));
            })
        })
        .collect();
    for q in quitters {
        q.join().expect("quitter");
    }
    assert!(
        eventually(5, || metric(&gw, "palisade_spike_control_client_gone")
            == 4.0),
        "held requests were not cleaned up"
    );
    // All four places are free again: four new requests are held (none refused at once) and a
    // fifth finds the queue full.
    let held: Vec<_> = (0..4)
        .map(|i| std::thread::spawn(move || http1(addr, &Request::get(&format!("/held{i}")))))
        .collect();
    assert!(eventually(5, || metric(
        &gw,
        "palisade_spike_control_delayed"
    ) == 8.0));
    assert_eq!(metric(&gw, "palisade_spike_control_queue_full"), 0.0);
    assert_eq!(gw.send(&Request::get("/beyond")).status, 429);
    assert_eq!(metric(&gw, "palisade_spike_control_queue_full"), 1.0);
    for h in held {
        assert_eq!(h.join().expect("held").status, 429);
    }
    assert_eq!(upstream.hits(), 1);
    assert_serving(&gw);
}

#[test]
fn clients_leaving_while_waiting_for_a_fetch_leave_envoy_serving() {
    // jwt-validation: a token with an unknown kid waits for the JWKS refresh it triggered.
    let old = RsaKey::generate("old");
    let new = RsaKey::generate("new");
    let idp = MockServer::start();
    idp.respond("/jwks", 200, RsaKey::jwks(&[&old]));
    let upstream = Upstream::start();
    let jwt_gw = GatewayBuilder::new()
        .upstream(&upstream)
        .cluster("idp", idp.port())
        .wasm(
            "jwt-validation",
            json!({"issuer": ISSUER, "algorithms": ["RS256"],
                   "jwks": {"cluster": "idp", "uri": format!("http://127.0.0.1:{}/jwks", idp.port()),
                            "timeoutMs": 3000, "minRefreshSeconds": 0}})
            .to_string(),
        )
        .start();
    let claims = json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600});
    let (old_token, new_token) = (old.rs256(&claims), new.rs256(&claims));
    let bearer = |t: &str| Request::get("/orders").header("authorization", &format!("Bearer {t}"));
    assert!(eventually(10, || jwt_gw.send(&bearer(&old_token)).status == 200));
    // The refresh will take 1 s and bring the new key.
    idp.respond_with(
        "/jwks",
        Answer::json(200, RsaKey::jwks(&[&old, &new])).delayed(Duration::from_millis(1000)),
    );
    let head = format!(
        "GET /gone HTTP/1.1\r\nhost: gateway.test\r\nauthorization: Bearer {new_token}\r\n\r\n"
    );
    send_and_leave(jwt_gw.addr(), head, Duration::from_millis(300));
    assert!(eventually(5, || metric(
        &jwt_gw,
        "palisade_jwt_validation_kid_waits"
    ) >= 1.0));
    // Envoy serves meanwhile, and once the refresh lands the new key works.
    assert_eq!(jwt_gw.send(&bearer(&old_token)).status, 200);
    assert!(eventually(10, || jwt_gw.send(&bearer(&new_token)).status == 200));
    assert_eq!(
        upstream.hits(),
        metric(&jwt_gw, "palisade_jwt_validation_allowed") as usize
    );
    assert!(
        upstream.hits() >= 3,
        "the request whose client left never reached the upstream"
    );
    assert_serving(&jwt_gw);

    // token-introspection: the request that made the call leaves; one waiting for the same
    // call (one worker, so it coalesces) is answered 503, never left hanging or let through.
    let server = MockServer::start();
    server.respond_with(
        "/introspect",
        Answer::json(
            200,
            json!({"active": true, "exp": now() + 3600}).to_string(),
        )
        .delayed(Duration::from_millis(800)),
    );
    let intro_upstream = Upstream::start();
    let intro_gw = GatewayBuilder::new()
        .concurrency(1)
        .upstream(&intro_upstream)
        .cluster("idp", server.port())
        .wasm(
            "token-introspection",
            json!({"introspectionUrl": format!("http://127.0.0.1:{}/introspect", server.port()),
                   "cluster": "idp", "authorizationValue": "Basic Z3c6cw==",
                   "authenticationTimeout": 3000})
            .to_string(),
        )
        .start();
    let addr = intro_gw.addr();
    let leaver = std::thread::spawn(move || {
        let head =
            "GET /gone HTTP/1.1\r\nhost: gateway.test\r\nauthorization: Bearer shared\r\n\r\n";
        send_and_leave(addr, head.into(), Duration::from_millis(300));
    });
    std::thread::sleep(Duration::from_millis(100));
    let waiter = intro_gw.send(&bearer("shared"));
    leaver.join().expect("leaver");
    assert_denied(&waiter, 503, "introspection_unavailable");
    assert!(metric(&intro_gw, "palisade_token_introspection_coalesced") >= 1.0);
    // Later requests are answered correctly.
    assert_eq!(intro_gw.send(&bearer("shared")).status, 200);
    assert_eq!(intro_gw.send(&bearer("other")).status, 200);
    assert_eq!(intro_upstream.hits(), 2);
    assert_serving(&intro_gw);
}

#[test]
fn a_listener_reload_lets_requests_in_flight_finish_and_applies_to_new_ones() {
    let upstream = MockServer::start();
    upstream.respond_with(
        "/slow",
        Answer::json(200, r#"{"done":true}"#).delayed(Duration::from_millis(1500)),
    );
    upstream.respond("/fast", 200, r#"{"done":true}"#);
    let with_blocklist = |ips: &[&str]| {
        GatewayBuilder::new()
            .dynamic_listener()
            .upstream_port(upstream.port())
            .wasm(
                "ip-filter",
                json!({"mode": "blocklist", "ips": ips}).to_string(),
            )
    };
    let gw = with_blocklist(&["192.0.2.0/24"]).start();
    assert_eq!(gw.send(&Request::get("/fast")).status, 200);

    let addr = gw.addr();
    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let req = Request::get("/slow");
                if i % 2 == 0 {
                    http1(addr, &req)
                } else {
                    palisade_tests::http2(addr, &req)
                }
            })
        })
        .collect();
    assert!(eventually(5, || upstream.hits("/slow") == 4));
    // The new configuration blocks loopback: new requests are refused by it...
    gw.reload_listener(&with_blocklist(&["127.0.0.0/8"]));
    let resp = gw.send(&Request::get("/fast"));
    assert_denied(&resp, 403, "ip_denied");
    assert_eq!(gw.send_h2(&Request::get("/fast")).status, 403);
    // ... while the requests admitted by the old one complete.
    for t in in_flight {
        let resp = t.join().expect("in-flight request");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["done"], true);
    }
    assert_eq!(upstream.hits("/fast"), 1);
    assert_serving(&gw);
}

/// The trap fixture (`tests/fixtures/trap.wat`) assembled by binaryen's `wasm-opt`.
fn trap_module() -> std::path::PathBuf {
    let out = palisade_tests::scratch_dir("trap").join("trap.wasm");
    let status = std::process::Command::new("wasm-opt")
        .arg(palisade_tests::root().join("tests/fixtures/trap.wat"))
        .arg("-o")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run wasm-opt (binaryen: `make tools`)");
    assert!(
        status.success(),
        "wasm-opt could not assemble the trap fixture"
    );
    out
}

/// One worker (one filter VM serves every request) with the trap fixture under
/// `failure_policy` (`None`: left unset).
fn trapping_gateway(upstream: &Upstream, failure_policy: Option<&str>) -> Gateway {
    let mut config = json!({
        "name": "trap",
        "root_id": "trap",
        "vm_config": {"vm_id": "trap", "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": trap_module()}}},
    });
    if let Some(policy) = failure_policy {
        config["failure_policy"] = json!(policy);
    }
    GatewayBuilder::new()
        .concurrency(1)
        .upstream(upstream)
        .filter(Filter::Native(json!({
            "name": "trap",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": config,
            },
        })))
        .start()
}

fn statuses(gw: &Gateway, requests: &[bool]) -> Vec<u16> {
    requests
        .iter()
        .map(|&trap| {
            let req = Request::get("/");
            let req = if trap { req.header("x-trap", "1") } else { req };
            gw.send(&req).status
        })
        .collect()
}

const TRAP: bool = true;
const PLAIN: bool = false;

#[test]
fn a_trapping_filter_fails_closed_by_default() {
    for policy in [None, Some("FAIL_CLOSED")] {
        let upstream = Upstream::start();
        let gw = trapping_gateway(&upstream, policy);
        // The trapping request gets 503, and so does every later one: the VM is dead and
        // nothing passes the filter unchecked until Envoy gets a new configuration.
        assert_eq!(
            statuses(&gw, &[PLAIN, TRAP, PLAIN, PLAIN, TRAP, PLAIN]),
            [200, 503, 503, 503, 503, 503],
            "{policy:?}"
        );
        assert_eq!(upstream.hits(), 1, "{policy:?}");
        assert!(gw.log().contains("Uncaught RuntimeError: unreachable"));
        assert_eq!(gw.admin_get("/ready").trim(), "LIVE", "Envoy itself serves");
    }
}

#[test]
fn a_trapping_filter_under_fail_open_is_skipped_from_then_on() {
    let upstream = Upstream::start();
    let gw = trapping_gateway(&upstream, Some("FAIL_OPEN"));
    // The trapping request itself is refused; afterwards the filter no longer runs, so even
    // a request that would trap it reaches the upstream: the policy is bypassed.
    assert_eq!(
        statuses(&gw, &[PLAIN, TRAP, PLAIN, TRAP, PLAIN]),
        [200, 503, 200, 200, 200]
    );
    assert_eq!(upstream.hits(), 4);
}

#[test]
fn a_trapping_filter_under_fail_reload_gets_a_new_vm() {
    let upstream = Upstream::start();
    let gw = trapping_gateway(&upstream, Some("FAIL_RELOAD"));
    let mut passed = 0;
    let mut send = |requests: &[bool]| {
        let got = statuses(&gw, requests);
        passed += got.iter().filter(|&&s| s == 200).count();
        got
    };
    assert_eq!(send(&[PLAIN, TRAP]), [200, 503]);
    // Requests right after the trap may still meet the dead VM (503); the reload comes with
    // the next requests, and from then on they pass the filter again.
    assert!(
        eventually(5, || send(&[PLAIN]) == [200]),
        "the VM was not reloaded"
    );
    assert_eq!(metric(&gw, "envoy_wasm_trap_vm_reload_success"), 1.0);
    assert_eq!(send(&[PLAIN]), [200]);
    // The reloaded VM is the same code: a request that traps it is still refused.
    assert_eq!(send(&[TRAP]), [503]);
    assert_eq!(
        upstream.hits(),
        passed,
        "every request the filter refused stayed away from the upstream"
    );
}
