//! The decision logic in the in-memory Envoy.

use super::*;
use palisade_kit::testing::{TestEnvoy, TestRequest};
use serde_json::json;

fn policy(envoy: &TestEnvoy, extra: Value) -> TokenIntrospection {
    let mut c = json!({"introspectionUrl": "http://127.0.0.1:4000/token/introspection",
                       "cluster": "idp", "authorizationValue": "Basic aW50cm86c2VjcmV0"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    TokenIntrospection::configure(c.to_string().as_bytes(), &mut envoy.request(0)).unwrap()
}

fn request(envoy: &TestEnvoy, worker: usize, token: Option<&str>) -> TestRequest {
    let mut r = envoy.request(worker);
    r.add_header(":method", "GET").add_header(":path", "/");
    if let Some(t) = token {
        r.add_header("authorization", &format!("Bearer {t}"));
    }
    r
}

/// Runs a request; when the policy asks the server, answers with `answer`.
fn run(
    p: &TokenIntrospection,
    req: &mut TestRequest,
    answer: Option<(u16, Value)>,
) -> (Verdict, bool) {
    let headers = p.strip_gateway_headers(req);
    match p.start_with(req, true, headers) {
        Start::Done(v) => (v, false),
        Start::Introspect { key, body } => {
            let text = String::from_utf8(body).unwrap();
            assert!(text.starts_with("token=") && !text.contains(' '), "{text}");
            let (status, doc) = answer.expect("an introspection call");
            (
                p.complete(req, &key, Some(status), doc.to_string().as_bytes()),
                true,
            )
        }
    }
}

fn status(req: &TestRequest) -> (u16, String) {
    let r = req.response().expect("a local response");
    (
        r.status,
        r.json()["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn active_tokens_are_cached_for_every_worker_and_never_by_raw_token() {
    let envoy = TestEnvoy::new(2);
    let p = policy(&envoy, json!({"exposeHeaders": true}));
    let exp = envoy.now_ms() / 1000 + 60;
    let doc = json!({"active": true, "client_id": "app", "sub": "alice", "scope": "a b", "exp": exp, "aud": ["x"]});
    let mut r = request(&envoy, 0, Some("tok/en+1"));
    r.add_header("x-agw-username", "spoofed");
    assert_eq!(run(&p, &mut r, Some((200, doc))), (Verdict::Continue, true));
    let h = |r: &TestRequest, n: &str| {
        r.headers()
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h(&r, "x-agw-client_id").as_deref(), Some("app"));
    assert_eq!(h(&r, "x-agw-aud"), None, "arrays are not exposed");
    assert_eq!(
        h(&r, "x-agw-username"),
        None,
        "client-sent copies are removed"
    );
    assert_eq!(
        Identity::current(&r).unwrap().principal.as_deref(),
        Some("alice")
    );
    // The other worker (its own VM and policy instance) is answered from shared data.
    let p1 = policy(&envoy, json!({"exposeHeaders": true}));
    let mut again = request(&envoy, 1, Some("tok/en+1"));
    assert_eq!(run(&p1, &mut again, None), (Verdict::Continue, false));
    assert_eq!(h(&again, "x-agw-sub").as_deref(), Some("alice"));
    assert_eq!(envoy.counter("palisade.token_introspection.cache_hit"), 1);
    // Until exp, not longer.
    envoy.advance_ms(61_000);
    let mut late = request(&envoy, 1, Some("tok/en+1"));
    assert_eq!(
        run(&p, &mut late, Some((200, json!({"active": false})))),
        (Verdict::Respond, true)
    );
    assert_eq!(status(&late), (401, "invalid_token".into()));
}

#[test]
fn inactive_expired_and_missing_tokens_are_401() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let mut r = request(&envoy, 0, Some("revoked"));
    assert_eq!(
        run(&p, &mut r, Some((200, json!({"active": false})))).0,
        Verdict::Respond
    );
    assert_eq!(status(&r), (401, "invalid_token".into()));
    assert_eq!(
        r.response().unwrap().header("www-authenticate"),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );
    // Inactive answers are cached briefly.
    let mut again = request(&envoy, 0, Some("revoked"));
    assert_eq!(run(&p, &mut again, None), (Verdict::Respond, false));
    envoy.advance_ms(10_001);
    let mut later = request(&envoy, 0, Some("revoked"));
    assert!(run(&p, &mut later, Some((200, json!({"active": false})))).1);

    let past = envoy.now_ms() / 1000 - 5;
    let mut expired = request(&envoy, 0, Some("old"));
    assert_eq!(
        run(
            &p,
            &mut expired,
            Some((200, json!({"active": true, "exp": past})))
        )
        .0,
        Verdict::Respond
    );
    assert_eq!(status(&expired), (401, "invalid_token".into()));

    let mut none = request(&envoy, 0, None);
    assert_eq!(run(&p, &mut none, None).0, Verdict::Respond);
    assert_eq!(status(&none), (401, "missing_token".into()));
}

#[test]
fn server_failures_fail_closed_with_503_and_are_not_cached() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    for (code, body) in [
        (503, json!("upstream connect error")),
        (200, json!({"no": "active"})),
        (401, json!({"active": true})),
        (504, json!(null)),
    ] {
        let mut r = request(&envoy, 0, Some("t"));
        assert_eq!(
            run(&p, &mut r, Some((code, body))),
            (Verdict::Respond, true)
        );
        assert_eq!(status(&r), (503, "introspection_unavailable".into()));
    }
    let mut r = request(&envoy, 0, Some("t"));
    let Start::Introspect { .. } = p.start(&mut r, true) else {
        panic!("failures must not be cached")
    };
    assert_eq!(envoy.counter("palisade.token_introspection.unavailable"), 4);
}

#[test]
fn scopes_and_or() {
    let envoy = TestEnvoy::new(1);
    let and = policy(
        &envoy,
        json!({"scopes": "read write", "maxCacheEntries": 0}),
    );
    let or = policy(
        &envoy,
        json!({"scopes": "read write", "scopeValidationCriteria": "OR", "maxCacheEntries": 0}),
    );
    let one = json!({"active": true, "scope": "read"});
    let mut r = request(&envoy, 0, Some("t"));
    assert_eq!(
        run(&and, &mut r, Some((200, one.clone()))).0,
        Verdict::Respond
    );
    assert_eq!(status(&r), (403, "insufficient_scope".into()));
    assert_eq!(
        r.response().unwrap().header("www-authenticate"),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="read write""#)
    );
    let mut r = request(&envoy, 0, Some("t"));
    assert_eq!(run(&or, &mut r, Some((200, one))).0, Verdict::Continue);
    let mut r = request(&envoy, 0, Some("t"));
    assert_eq!(
        run(
            &and,
            &mut r,
            Some((200, json!({"active": true, "scope": "write read"})))
        )
        .0,
        Verdict::Continue
    );
}

#[test]
fn the_cache_is_bounded() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({"maxCacheEntries": 16}));
    for i in 0..500 {
        let mut r = request(&envoy, 0, Some(&format!("token-{i}")));
        run(&p, &mut r, Some((200, json!({"active": true}))));
    }
    assert!(envoy.shared_keys_with_prefix("palisade:token-introspection:") <= 16);
}

#[test]
fn the_form_body_encodes_the_token() {
    assert_eq!(form_encode("a+b/c=d e"), "a%2Bb%2Fc%3Dd%20e");
}

#[test]
fn one_call_per_token_per_vm() {
    let mut f = InFlight::default();
    assert_eq!(f.join("k", 10), Role::Leader);
    let Role::Waiter(slot) = f.join("k", 11) else {
        panic!("joins the call in flight")
    };
    assert!(matches!(f.join("k", 12), Role::Waiter(_)));
    assert_eq!(f.join("other", 13), Role::Leader);
    assert_eq!(f.finish("k", &Answer::Inactive), vec![11, 12]);
    assert_eq!(
        *slot.borrow(),
        Some(Answer::Inactive),
        "the waiters' answer"
    );
    assert_eq!(f.len(), 1);
    assert_eq!(
        f.join("k", 14),
        Role::Leader,
        "a finished call is not joined"
    );
    assert!(f.finish("nope", &Answer::Inactive).is_empty());
}

/// The policy as Envoy runs it: the leader's call, its waiters, the client-sent gateway headers.
mod deployed {
    use super::*;
    use palisade_kit::testing::TestPolicy;
    use palisade_kit::Direction;

    fn deploy(envoy: &TestEnvoy) -> TestPolicy<TokenIntrospection> {
        envoy.add_cluster("idp");
        let config = json!({"introspectionUrl": "http://127.0.0.1:4000/introspect",
            "cluster": "idp", "authorizationValue": "Basic aW50cm86c2VjcmV0",
            "exposeHeaders": true});
        envoy
            .deploy::<TokenIntrospection>(&config.to_string())
            .unwrap()
    }

    fn ask(p: &TestPolicy<TokenIntrospection>, token: &str) -> (Verdict, TestRequest) {
        let mut req = p.request(0);
        req.add_header("authorization", &format!("Bearer {token}"))
            .add_header("x-agw-role", "admin")
            .add_header("x-agw-active", "true");
        (p.send(&mut req), req)
    }

    #[test]
    fn one_call_answers_the_leader_and_its_waiters() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy);
        let (v1, leader) = ask(&p, "t");
        let (v2, waiter) = ask(&p, "t");
        assert_eq!((v1, v2), (Verdict::Pause, Verdict::Pause));
        let calls = envoy.http_calls();
        assert_eq!(calls.len(), 1, "one call for both");
        let body = br#"{"active": true, "sub": "alice"}"#;
        p.respond(calls[0].token, 200, &[], body);
        for r in [&leader, &waiter] {
            assert_eq!(r.resumed(Direction::Request), 1);
            let headers = r.headers();
            assert!(
                headers.iter().all(|(n, _)| n != "x-agw-role"),
                "forged header removed"
            );
            assert!(headers.contains(&("x-agw-sub".into(), "alice".into())));
            assert!(headers.contains(&("x-agw-active".into(), "true".into())));
        }
        assert_eq!(envoy.counter("palisade.token_introspection.coalesced"), 1);
    }

    #[test]
    fn waiters_fail_closed_when_their_leader_goes_away() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy);
        let (_, mut leader) = ask(&p, "t");
        let (_, waiter) = ask(&p, "t");
        p.done(&mut leader);
        assert_eq!(waiter.response().unwrap().status, 503);
        assert_eq!(p.paused(0), 0);
    }

    #[test]
    fn an_oversized_or_failed_answer_is_503() {
        let envoy = TestEnvoy::new(1);
        let p = deploy(&envoy);
        let (_, r) = ask(&p, "big");
        let calls = envoy.http_calls();
        p.respond(
            calls[0].token,
            200,
            &[],
            &vec![b' '; MAX_RESPONSE_BYTES + 1],
        );
        assert_eq!(r.response().unwrap().status, 503);
        let (_, r) = ask(&p, "down");
        let calls = envoy.http_calls();
        p.respond(calls[1].token, 503, &[], b"");
        assert_eq!(r.response().unwrap().status, 503);
    }
}

#[test]
fn an_answer_decides_every_waiting_request_alike() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({"scopes": "read"}));
    let mut leader = request(&envoy, 0, Some("t"));
    let Start::Introspect { key, .. } = p.start(&mut leader, true) else {
        panic!()
    };
    let answer = p.answer(
        &leader,
        &key,
        Some(200),
        br#"{"active": true, "scope": "read"}"#,
    );
    assert_eq!(p.apply_answer(&mut leader, &answer), Verdict::Continue);
    let mut waiter = request(&envoy, 0, Some("t"));
    assert_eq!(p.apply_answer(&mut waiter, &answer), Verdict::Continue);
    let mut failed = request(&envoy, 0, Some("t"));
    assert_eq!(
        p.apply_answer(&mut failed, &Answer::Unavailable),
        Verdict::Respond
    );
    assert_eq!(status(&failed), (503, "introspection_unavailable".into()));
    assert_eq!(
        envoy.counter("palisade.token_introspection.introspected"),
        1
    );
}

#[test]
fn preflights_pass_and_other_schemes_are_missing_tokens() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let mut pre = envoy.request(0);
    pre.add_header(":method", "OPTIONS")
        .add_header("origin", "https://a.example")
        .add_header("access-control-request-method", "GET");
    assert_eq!(p.start(&mut pre, true), Start::Done(Verdict::Continue));
    let strict = policy(&envoy, json!({"allowCorsPreflight": false}));
    assert_eq!(strict.start(&mut pre, true), Start::Done(Verdict::Respond));
    let mut basic = envoy.request(0);
    basic.add_header("authorization", "Basic YTpi");
    assert_eq!(p.start(&mut basic, true), Start::Done(Verdict::Respond));
    assert_eq!(status(&basic), (401, "missing_token".into()));
    // Another source, with the token in a query parameter.
    let q = policy(&envoy, json!({"tokenSource": "query:access_token"}));
    let mut r = envoy.request(0);
    r.add_header(":path", "/x?access_token=abc");
    let Start::Introspect { body, .. } = q.start(&mut r, true) else {
        panic!("expected a call")
    };
    assert_eq!(body, b"token=abc&token_type_hint=access_token");
}

#[test]
fn several_tokens_are_refused_before_any_call() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({"realm": "orders"}));
    let cookie = policy(
        &envoy,
        json!({"realm": "orders", "tokenSource": "cookie:at"}),
    );
    let two_lines = {
        let mut r = request(&envoy, 0, Some("good"));
        r.add_header("authorization", "Bearer other");
        r
    };
    let joined = request(&envoy, 0, Some("good,Bearer other"));
    let mut two_cookies = envoy.request(0);
    two_cookies
        .add_header("cookie", "at=good")
        .add_header("cookie", "at=other");
    for (policy, mut req) in [(&p, two_lines), (&p, joined), (&cookie, two_cookies)] {
        assert_eq!(policy.start(&mut req, true), Start::Done(Verdict::Respond));
        assert_eq!(status(&req), (400, "invalid_request".into()));
        assert_eq!(
            req.response().unwrap().header("www-authenticate"),
            Some(r#"Bearer realm="orders", error="invalid_request""#)
        );
    }
    assert_eq!(
        envoy.counter("palisade.token_introspection.ambiguous_token"),
        3
    );
    assert!(envoy.http_calls().is_empty(), "the server is never asked");
}

#[test]
fn an_options_request_with_a_body_needs_a_token() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, json!({}));
    let mut req = envoy.request(0);
    req.add_header(":method", "OPTIONS")
        .add_header("origin", "https://a.example")
        .add_header("access-control-request-method", "POST")
        .add_header("content-length", "4");
    assert_eq!(p.start(&mut req, false), Start::Done(Verdict::Respond));
    assert_eq!(status(&req), (401, "missing_token".into()));
    assert_eq!(envoy.counter("palisade.token_introspection.preflight"), 0);
}

/// Host calls per request, pinned so a regression shows; prints the rows of `BENCHMARKS.md`
/// ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    use palisade_kit::testing::TestPolicy;
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("idp");
    let config = json!({"introspectionUrl": "http://127.0.0.1:4000/introspect",
        "cluster": "idp", "authorizationValue": "Basic aW50cm86c2VjcmV0"});
    let p: TestPolicy<TokenIntrospection> = envoy.deploy(&config.to_string()).unwrap();
    let ask = |token: &str| {
        let mut req = request(&envoy, 0, Some(token));
        let verdict = p.send(&mut req);
        (verdict, req)
    };
    let (verdict, first) = ask("good");
    assert_eq!(verdict, Verdict::Pause);
    let calls = envoy.http_calls();
    p.respond(
        calls[0].token,
        200,
        &[],
        br#"{"active": true, "sub": "alice"}"#,
    );
    assert!(first.response().is_none());
    let (verdict, cached) = ask("good");
    assert_eq!(verdict, Verdict::Continue);
    let (_, inactive) = ask("bad");
    let calls = envoy.http_calls();
    p.respond(calls[1].token, 200, &[], br#"{"active": false}"#);
    assert_eq!(status(&inactive).0, 401);
    let (verdict, denied) = ask("bad");
    assert_eq!(verdict, Verdict::Respond);
    let (first, cached, denied) = (first.host_calls(), cached.host_calls(), denied.host_calls());
    println!(
        "{}",
        first.markdown_row("token-introspection", "allowed (first: introspected)")
    );
    println!(
        "{}",
        cached.markdown_row("token-introspection", "allowed (cached)")
    );
    println!(
        "{}",
        denied.markdown_row("token-introspection", "denied (cached inactive)")
    );
    assert!(cached.total() <= 3, "{cached:?}");
}
