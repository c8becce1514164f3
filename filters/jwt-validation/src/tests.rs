//! The decision logic in the in-memory Envoy, with tokens signed by keys the test controls.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
use palisade_kit::Direction;
use serde_json::{json, Map};

const ISS: &str = "http://127.0.0.1:4000";

struct Signer {
    es: ES256KeyPair,
    ed: Ed25519KeyPair,
}

impl Signer {
    fn new() -> Self {
        Signer {
            es: ES256KeyPair::generate().with_key_id("es-1"),
            ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
        }
    }

    fn jwks(&self) -> String {
        let es: serde_json::Value = serde_json::from_str(&self.es.public_key().to_jwk()).unwrap();
        let ed: serde_json::Value = serde_json::from_str(&self.ed.public_key().to_jwk()).unwrap();
        json!({"keys": [es, ed]}).to_string()
    }

    fn claims(now_s: u64, extra: serde_json::Value) -> JWTClaims<Map<String, serde_json::Value>> {
        let mut c = JWTClaims::<Map<String, serde_json::Value>>::new();
        c.issued_at = Some(UnixTimeStamp::from_secs(now_s));
        c.expires_at = Some(UnixTimeStamp::from_secs(now_s + 600));
        c.issuer = Some(ISS.into());
        c.subject = Some("alice".into());
        c.audiences = Some(Audiences::AsString("orders".into()));
        let Value::Object(extra) = extra else {
            panic!()
        };
        for (k, v) in extra {
            match k.as_str() {
                "exp" => c.expires_at = v.as_u64().map(UnixTimeStamp::from_secs),
                "nbf" => c.invalid_before = v.as_u64().map(UnixTimeStamp::from_secs),
                "iss" => c.issuer = v.as_str().map(str::to_owned),
                "aud" => c.audiences = v.as_str().map(|a| Audiences::AsString(a.into())),
                _ => {
                    c.custom.insert(k, v);
                }
            }
        }
        c
    }

    fn es256(&self, now_s: u64, extra: serde_json::Value) -> String {
        self.es.sign(Self::claims(now_s, extra)).unwrap()
    }

    fn eddsa(&self, now_s: u64, extra: serde_json::Value) -> String {
        self.ed.sign(Self::claims(now_s, extra)).unwrap()
    }
}

fn local(signer: &Signer, extra: serde_json::Value) -> Vec<u8> {
    let mut c = json!({"issuer": ISS, "audiences": ["orders"], "localJwks": signer.jwks()});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string().into_bytes()
}

fn policy(envoy: &TestEnvoy, config: &[u8]) -> JwtValidation {
    JwtValidation::configure(config, &mut envoy.request(0)).unwrap()
}

fn send(envoy: &TestEnvoy, p: &JwtValidation, auth: Option<&str>) -> (Verdict, TestRequest) {
    let mut req = envoy.request(0);
    req.add_header(":method", "GET")
        .add_header(":path", "/orders");
    if let Some(a) = auth {
        req.add_header("authorization", a);
    }
    let verdict = p.check(&mut req);
    (verdict, req)
}

fn bearer_req(envoy: &TestEnvoy, p: &JwtValidation, token: &str) -> (Verdict, TestRequest) {
    send(envoy, p, Some(&format!("Bearer {token}")))
}

fn assert_status(r: &(Verdict, TestRequest), status: u16, code: &str) {
    assert_eq!(r.0, Verdict::Respond);
    let resp = r.1.response().expect("a local response");
    assert_eq!(resp.status, status);
    assert_eq!(resp.json()["error"], code);
}

fn now_s(envoy: &TestEnvoy) -> u64 {
    envoy.now_ms() / 1000
}

#[test]
fn valid_tokens_pass_with_identity_headers_and_cache() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let p = policy(
        &envoy,
        &local(
            &s,
            json!({"claimsToHeaders": {"sub": "x-user", "azp": "x-client"}}),
        ),
    );
    let token = s.es256(now_s(&envoy), json!({"azp": "web"}));
    let mut req = envoy.request(0);
    req.add_header("authorization", &format!("Bearer {token}"))
        .add_header("x-user", "mallory");
    assert_eq!(p.check(&mut req), Verdict::Continue);
    let h = |n: &str| {
        req.headers()
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        h("x-user").as_deref(),
        Some("alice"),
        "spoofed header replaced"
    );
    assert_eq!(h("x-client").as_deref(), Some("web"));
    assert!(h("authorization").is_some(), "forwarded by default");
    let id = Identity::current(&req).unwrap();
    assert_eq!(id.authenticated_by, "jwt-validation");
    assert_eq!(id.principal.as_deref(), Some("alice"));
    assert_eq!(id.client_id.as_deref(), Some("web"));
    assert_eq!(id.claim("iss").as_deref(), Some(ISS));

    assert_eq!(bearer_req(&envoy, &p, &token).0, Verdict::Continue);
    assert_eq!(envoy.counter("palisade.jwt_validation.allowed"), 2);
    assert_eq!(envoy.counter("palisade.jwt_validation.cache_hit"), 1);
    // EdDSA too.
    assert_eq!(
        bearer_req(&envoy, &p, &s.eddsa(now_s(&envoy), json!({}))).0,
        Verdict::Continue
    );
}

#[test]
fn the_cache_never_outlives_the_token() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let p = policy(&envoy, &local(&s, json!({"clockSkewSeconds": 0})));
    let token = s.es256(now_s(&envoy), json!({"exp": now_s(&envoy) + 5}));
    assert_eq!(bearer_req(&envoy, &p, &token).0, Verdict::Continue);
    assert_eq!(bearer_req(&envoy, &p, &token).0, Verdict::Continue);
    envoy.advance_ms(6_000);
    assert_status(&bearer_req(&envoy, &p, &token), 401, "invalid_token");
}

#[test]
fn invalid_tokens_are_401_invalid_token() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let p = policy(&envoy, &local(&s, json!({})));
    let now = now_s(&envoy);
    let good = s.es256(now, json!({}));
    let (h, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let forged_payload = URL_SAFE_NO_PAD
        .encode(json!({"iss": ISS, "aud": "orders", "sub": "root", "exp": now + 600}).to_string());
    let mut bad_sig = sig.to_owned().into_bytes();
    bad_sig[5] = if bad_sig[5] == b'A' { b'B' } else { b'A' };
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let cases = [
        ("expired", s.es256(now - 1000, json!({"exp": now - 61}))),
        ("not yet valid", s.es256(now, json!({"nbf": now + 61}))),
        ("wrong issuer", s.es256(now, json!({"iss": "http://evil"}))),
        ("wrong audience", s.es256(now, json!({"aud": "billing"}))),
        ("no exp", s.es256(now, json!({"exp": null}))),
        ("tampered payload", format!("{h}.{forged_payload}.{sig}")),
        (
            "tampered signature",
            format!("{h}.{payload}.{}", String::from_utf8(bad_sig).unwrap()),
        ),
        ("alg none", format!("{none_header}.{payload}.")),
        ("garbage", "abc".into()),
    ];
    for (what, token) in cases {
        let r = bearer_req(&envoy, &p, &token);
        assert_status(&r, 401, "invalid_token");
        let resp = r.1.response().unwrap();
        assert_eq!(
            resp.header("www-authenticate"),
            Some(r#"Bearer realm="api", error="invalid_token""#),
            "{what}"
        );
    }
    assert_eq!(envoy.counter("palisade.jwt_validation.invalid_token"), 9);
    // Within the skew, expired and future tokens pass.
    assert_eq!(
        bearer_req(&envoy, &p, &s.es256(now - 1000, json!({"exp": now - 30}))).0,
        Verdict::Continue
    );
    assert_eq!(
        bearer_req(&envoy, &p, &s.es256(now, json!({"nbf": now + 30}))).0,
        Verdict::Continue
    );
    // Unless configured otherwise, a token without exp passes.
    let lax = policy(&envoy, &local(&s, json!({"requireExpiration": false})));
    assert_eq!(
        bearer_req(&envoy, &lax, &s.es256(now, json!({"exp": null}))).0,
        Verdict::Continue
    );
}

#[test]
fn missing_tokens_are_401_with_a_bare_challenge() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let p = policy(&envoy, &local(&s, json!({"realm": "orders"})));
    for auth in [None, Some("Basic YTpi"), Some("Bearer "), Some("Bearer")] {
        let r = send(&envoy, &p, auth);
        assert_status(&r, 401, "missing_token");
        assert_eq!(
            r.1.response().unwrap().header("www-authenticate"),
            Some(r#"Bearer realm="orders""#)
        );
    }
    // The token may come from elsewhere, e.g. a query parameter, and be hidden from the upstream.
    let q = policy(
        &envoy,
        &local(
            &s,
            json!({"tokenSource": "query:access_token", "forwardToken": false}),
        ),
    );
    let mut req = envoy.request(0);
    let token = s.es256(now_s(&envoy), json!({}));
    req.add_header(":path", &format!("/x?access_token={token}&a=1"));
    assert_eq!(q.check(&mut req), Verdict::Continue);
    let path = req
        .headers()
        .iter()
        .find(|(k, _)| k == ":path")
        .unwrap()
        .1
        .clone();
    assert_eq!(path, "/x?a=1");
}

#[test]
fn cors_preflights_pass_unless_disabled() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let preflight = |p: &JwtValidation| {
        let mut r = envoy.request(0);
        r.add_header(":method", "OPTIONS")
            .add_header("origin", "https://a.example")
            .add_header("access-control-request-method", "GET");
        p.check(&mut r)
    };
    assert_eq!(
        preflight(&policy(&envoy, &local(&s, json!({})))),
        Verdict::Continue
    );
    assert_eq!(
        preflight(&policy(
            &envoy,
            &local(&s, json!({"allowCorsPreflight": false}))
        )),
        Verdict::Respond
    );
}

#[test]
fn several_tokens_are_refused_whatever_the_source() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let good = s.es256(now_s(&envoy), json!({}));
    let other = s.es256(now_s(&envoy), json!({"sub": "someone-else"}));
    let (bearer_good, bearer_other) = (format!("Bearer {good}"), format!("Bearer {other}"));
    let joined = format!("{bearer_good}, {bearer_other}");
    let in_header = local(&s, json!({"realm": "orders"}));
    let custom = local(
        &s,
        json!({"realm": "orders", "tokenSource": "header:x-token"}),
    );
    let query = local(
        &s,
        json!({"realm": "orders", "tokenSource": "query:access_token"}),
    );
    let cookie = local(&s, json!({"realm": "orders", "tokenSource": "cookie:at"}));
    let query_path = format!("/orders?access_token={good}&access_token={other}");
    let cookie_one = format!("at={good}");
    let cookie_two = format!("at={other}");
    type Case<'a> = (&'a [u8], &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            &in_header,
            "/orders",
            vec![
                ("authorization", &bearer_good),
                ("authorization", &bearer_other),
            ],
        ),
        // The same token twice is refused too: the rule is one value, not one identity.
        (
            &in_header,
            "/orders",
            vec![
                ("authorization", &bearer_good),
                ("authorization", &bearer_good),
            ],
        ),
        // How Envoy hands over two `Authorization` lines.
        (&in_header, "/orders", vec![("authorization", &joined)]),
        (
            &custom,
            "/orders",
            vec![("x-token", &good), ("x-token", &other)],
        ),
        (&query, &query_path, vec![]),
        (
            &cookie,
            "/orders",
            vec![("cookie", &cookie_one), ("cookie", &cookie_two)],
        ),
    ];
    for (config, path, headers) in &cases {
        let p = policy(&envoy, config);
        let mut req = envoy.request(0);
        req.add_header(":method", "GET").add_header(":path", path);
        for (n, v) in headers {
            req.add_header(n, v);
        }
        let r = (p.check(&mut req), req);
        assert_status(&r, 400, "invalid_request");
        assert_eq!(
            r.1.response().unwrap().header("www-authenticate"),
            Some(r#"Bearer realm="orders", error="invalid_request""#),
            "{path} {headers:?}"
        );
    }
    assert_eq!(
        envoy.counter("palisade.jwt_validation.ambiguous_token"),
        cases.len() as i64
    );
    assert_eq!(envoy.counter("palisade.jwt_validation.allowed"), 0);
    // One of them alone passes.
    let p = policy(&envoy, &custom);
    let mut req = envoy.request(0);
    req.add_header("x-token", &good);
    assert_eq!(p.check(&mut req), Verdict::Continue);
}

#[test]
fn an_options_request_with_a_body_needs_a_token() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let config = String::from_utf8(local(&s, json!({}))).unwrap();
    let deployed = envoy.deploy::<JwtValidation>(&config).unwrap();
    let preflight_like = || {
        let mut r = deployed.request(0);
        r.add_header(":method", "OPTIONS")
            .add_header(":path", "/orders")
            .add_header("origin", "https://a.example")
            .add_header("access-control-request-method", "POST");
        r
    };
    let mut with_body = preflight_like();
    with_body.add_header("transfer-encoding", "chunked");
    assert_eq!(
        deployed.request_headers(&mut with_body, false),
        Verdict::Respond
    );
    assert_eq!(with_body.response().unwrap().status, 401);
    assert_eq!(envoy.counter("palisade.jwt_validation.missing_token"), 1);
    let mut preflight = preflight_like();
    assert_eq!(
        deployed.request_headers(&mut preflight, true),
        Verdict::Continue
    );
    assert_eq!(envoy.counter("palisade.jwt_validation.preflight"), 1);
}

#[test]
fn scopes_and_or_with_scope_and_scp() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let now = now_s(&envoy);
    let and = policy(
        &envoy,
        &local(
            &s,
            json!({"requiredScopes": ["orders:read", "orders:write"]}),
        ),
    );
    let or = policy(
        &envoy,
        &local(
            &s,
            json!({"requiredScopes": ["orders:read", "orders:write"], "scopeCriteria": "OR"}),
        ),
    );
    let both = s.es256(now, json!({"scope": "openid orders:read orders:write"}));
    let both_scp = s.es256(now, json!({"scp": ["orders:write", "orders:read"]}));
    let one = s.es256(now, json!({"scope": "orders:read"}));
    let one_scp = s.es256(now, json!({"scp": ["orders:write"]}));
    let none = s.es256(now, json!({"scope": "profile"}));
    for t in [&both, &both_scp] {
        assert_eq!(bearer_req(&envoy, &and, t).0, Verdict::Continue);
    }
    for t in [&one, &one_scp, &none] {
        let r = bearer_req(&envoy, &and, t);
        assert_status(&r, 403, "insufficient_scope");
        assert_eq!(
            r.1.response().unwrap().header("www-authenticate"),
            Some(
                r#"Bearer realm="api", error="insufficient_scope", scope="orders:read orders:write""#
            )
        );
    }
    for t in [&both, &both_scp, &one, &one_scp] {
        assert_eq!(bearer_req(&envoy, &or, t).0, Verdict::Continue);
    }
    assert_status(&bearer_req(&envoy, &or, &none), 403, "insufficient_scope");
    // A cached forbidden token stays forbidden.
    assert_status(&bearer_req(&envoy, &or, &none), 403, "insufficient_scope");
}

#[test]
fn required_claims_match_exact_values_or_any_of() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let now = now_s(&envoy);
    let p = policy(
        &envoy,
        &local(
            &s,
            json!({"requiredClaims": {"azp": ["web", "mobile"], "tier": 2, "groups": "admins"}}),
        ),
    );
    let ok = s.es256(
        now,
        json!({"azp": "mobile", "tier": 2, "groups": ["staff", "admins"]}),
    );
    assert_eq!(bearer_req(&envoy, &p, &ok).0, Verdict::Continue);
    for bad in [
        json!({"azp": "cli", "tier": 2, "groups": "admins"}),
        json!({"azp": "web", "tier": "2", "groups": "admins"}),
        json!({"azp": "web", "tier": 2}),
    ] {
        let r = bearer_req(&envoy, &p, &s.es256(now, bad));
        assert_status(&r, 403, "claims_not_satisfied");
    }
}

#[test]
fn hmac_needs_a_configured_secret_and_rsa_keys_never_act_as_one() {
    let envoy = TestEnvoy::new(1);
    let secret = "0123456789abcdef0123456789abcdef";
    let p = policy(
        &envoy,
        json!({"issuer": ISS, "hmacSecret": secret, "algorithms": ["HS256"]})
            .to_string()
            .as_bytes(),
    );
    let key = HS256Key::from_bytes(secret.as_bytes());
    let token = key
        .authenticate(Signer::claims(now_s(&envoy), json!({})))
        .unwrap();
    assert_eq!(bearer_req(&envoy, &p, &token).0, Verdict::Continue);
    let other = HS256Key::from_bytes(b"another secret of at least 32 bytes!!");
    let forged = other
        .authenticate(Signer::claims(now_s(&envoy), json!({})))
        .unwrap();
    assert_status(&bearer_req(&envoy, &p, &forged), 401, "invalid_token");
    // A policy with public keys only refuses HS256, whatever the key material.
    let s = Signer::new();
    let asym = policy(&envoy, &local(&s, json!({})));
    assert_status(&bearer_req(&envoy, &asym, &token), 401, "invalid_token");
}

fn remote_config() -> String {
    json!({"issuer": ISS, "jwks": {"cluster": "idp", "uri": "http://127.0.0.1:4000/jwks",
           "cacheSeconds": 10, "maxStaleSeconds": 20, "minRefreshSeconds": 30}})
    .to_string()
}

/// The policy deployed on `workers` workers with remote keys.
fn deploy(workers: usize, config: &str) -> (TestEnvoy, TestPolicy<JwtValidation>) {
    let envoy = TestEnvoy::new(workers);
    envoy.add_cluster("idp");
    let p = envoy.deploy::<JwtValidation>(config).unwrap();
    (envoy, p)
}

/// Runs the timers until a fetch is dispatched (at most `ms`), answers it with `answer` if
/// given, and returns whether there was one.
fn fetch(
    envoy: &TestEnvoy,
    p: &TestPolicy<JwtValidation>,
    ms: u64,
    answer: Option<(u16, &str)>,
) -> bool {
    let before = envoy.http_calls().len();
    for _ in 0..ms {
        p.tick(1);
        if envoy.http_calls().len() > before {
            break;
        }
    }
    let calls = envoy.http_calls();
    let Some(call) = calls.get(before) else {
        return false;
    };
    if let Some((status, body)) = answer {
        p.respond(call.token, status, &[], body.as_bytes());
    }
    true
}

/// A request with `token` through the deployed policy on `worker`.
fn ask(p: &TestPolicy<JwtValidation>, worker: usize, token: &str) -> (Verdict, TestRequest) {
    let mut req = p.request(worker);
    req.add_header("authorization", &format!("Bearer {token}"));
    let verdict = p.send(&mut req);
    (verdict, req)
}

fn rotated(id: &str) -> Signer {
    Signer {
        es: ES256KeyPair::generate().with_key_id(&format!("es-{id}")),
        ed: Ed25519KeyPair::generate().with_key_id(&format!("ed-{id}")),
    }
}

#[test]
fn remote_keys_are_fetched_once_shared_kept_stale_then_dropped() {
    let (envoy, p) = deploy(2, &remote_config());
    let s = Signer::new();
    let token = s.es256(now_s(&envoy), json!({"exp": now_s(&envoy) + 3600}));
    assert_status(&ask(&p, 0, &token), 503, "jwks_unavailable");

    assert!(fetch(&envoy, &p, 250, Some((200, &s.jwks()))));
    let calls = envoy.http_calls();
    assert_eq!(calls.len(), 1, "one fetch for both workers");
    assert_eq!(calls[0].header(":path"), Some("/jwks"));
    // Both workers use the published keys.
    assert_eq!(ask(&p, 0, &token).0, Verdict::Continue);
    assert_eq!(ask(&p, 1, &token).0, Verdict::Continue);

    // At 80 % of cacheSeconds one refresh; it fails, the keys stay in use while stale.
    assert!(!fetch(&envoy, &p, 7_500, None), "fresh");
    assert!(fetch(&envoy, &p, 500, Some((503, "down"))));
    envoy.advance_ms(20_000);
    assert_eq!(
        ask(&p, 1, &s.es256(now_s(&envoy), json!({}))).0,
        Verdict::Continue
    );
    assert!(fetch(&envoy, &p, 2_000, Some((200, "not json"))));
    envoy.advance_ms(2_000);
    // 30 s after the last good fetch (cache 10 + stale 20): no usable keys.
    assert_status(
        &ask(&p, 1, &s.es256(now_s(&envoy), json!({}))),
        503,
        "jwks_unavailable",
    );
    assert_eq!(envoy.counter("palisade.jwt_validation.jwks_fetched"), 1);
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_fetch_failed"),
        2
    );
    assert_eq!(envoy.counter("palisade.jwt_validation.jwks_invalid"), 1);
}

#[test]
fn an_unknown_kid_brings_a_rate_limited_refresh() {
    let (envoy, p) = deploy(1, &remote_config());
    let old = Signer::new();
    assert!(fetch(&envoy, &p, 250, Some((200, &old.jwks()))));
    let new = rotated("2");
    let token = new.es256(now_s(&envoy), json!({}));
    // Checked without waiting: 401, but the refresh is brought forward.
    let mut req = p.request(0);
    req.add_header("authorization", &format!("Bearer {token}"));
    assert_eq!(p.policy(0).check(&mut req), Verdict::Respond);
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_refresh_requested"),
        1
    );
    assert!(
        fetch(&envoy, &p, 250, Some((200, &new.jwks()))),
        "fetched at once"
    );
    assert_eq!(ask(&p, 0, &token).0, Verdict::Continue);
    // Another unknown kid within minRefreshSeconds does not fetch again, nor wait.
    let third = Signer::new();
    let t3 = third.es256(now_s(&envoy), json!({}));
    let t3 = t3.replacen(
        &t3[..t3.find('.').unwrap()],
        &URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"nope"}"#),
        1,
    );
    assert_status(&ask(&p, 0, &t3), 401, "invalid_token");
    assert!(!fetch(&envoy, &p, 1_000, None));
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_refresh_requested"),
        1
    );
}

#[test]
fn requests_use_the_worker_keys_and_keys_published_since_are_used_at_once() {
    let (envoy, p) = deploy(2, &remote_config());
    let old = Signer::new();
    assert!(fetch(&envoy, &p, 250, Some((200, &old.jwks()))));
    let token = old.es256(now_s(&envoy), json!({"exp": now_s(&envoy) + 3600}));
    for worker in 0..2 {
        assert_eq!(ask(&p, worker, &token).0, Verdict::Continue);
    }
    // With keys in hand (and the token cached), no shared-data read per request.
    let (verdict, req) = ask(&p, 1, &token);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        req.host_calls().0.get("shared_get"),
        None,
        "{:?}",
        req.host_calls()
    );
    // Keys rotate: the refresh at 80 % of cacheSeconds publishes the new set through one
    // worker. Before either worker's next tick, a token signed with the new key passes on both
    // at once (no wait, no 401).
    let new = rotated("2");
    assert!(fetch(&envoy, &p, 8_500, Some((200, &new.jwks()))));
    let new_token = new.es256(now_s(&envoy), json!({"exp": now_s(&envoy) + 3600}));
    for worker in 0..2 {
        assert_eq!(
            ask(&p, worker, &new_token).0,
            Verdict::Continue,
            "worker {worker}"
        );
    }
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_refresh_requested"),
        0
    );
}

#[test]
fn discovery_is_followed_to_the_jwks() {
    let config = json!({"issuer": ISS, "discovery": true, "jwks": {"cluster": "idp"}}).to_string();
    let (envoy, p) = deploy(1, &config);
    let s = Signer::new();
    let doc = json!({"issuer": ISS, "jwks_uri": "http://127.0.0.1:4000/keys"}).to_string();
    assert!(fetch(&envoy, &p, 250, Some((200, &doc))));
    let calls = envoy.http_calls();
    assert_eq!(
        calls.len(),
        2,
        "the JWKS is fetched right after the discovery document"
    );
    assert_eq!(
        calls[0].header(":path"),
        Some("/.well-known/openid-configuration")
    );
    assert_eq!(calls[1].header(":path"), Some("/keys"));
    p.respond(calls[1].token, 200, &[], s.jwks().as_bytes());
    assert_eq!(
        ask(&p, 0, &s.es256(now_s(&envoy), json!({}))).0,
        Verdict::Continue
    );
}

#[test]
fn jwks_parsing_skips_foreign_keys_and_rejects_broken_ones() {
    let algs = keys::Algorithm::ASYMMETRIC;
    let s = Signer::new();
    let mut doc: serde_json::Value = serde_json::from_str(&s.jwks()).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "k": "c2VjcmV0"}));
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "EC", "crv": "P-256", "use": "enc", "x": "", "y": ""}));
    let set = KeySet::parse(doc.to_string().as_bytes(), &algs).unwrap();
    assert_eq!(set.len(), 2);
    assert!(KeySet::parse(br#"{"keys": []}"#, &algs).is_err());
    assert!(KeySet::parse(
        br#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
        &algs
    )
    .is_err());
    assert!(KeySet::parse(
        br#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#,
        &algs
    )
    .is_err());
    assert!(KeySet::parse(b"[]", &algs).is_err());
}

#[test]
fn a_lost_fetch_does_not_stop_fetching() {
    let (envoy, p) = deploy(1, &remote_config());
    assert!(fetch(&envoy, &p, 250, None));
    // Never answered: this VM gives the call up after timeoutMs 5000 + 2 × 2 s of slack.
    assert!(
        !fetch(&envoy, &p, 8_500, None),
        "still waiting for the answer"
    );
    assert!(
        fetch(&envoy, &p, 1_000, None),
        "the lost call is given up and the fetch retried"
    );
}

#[test]
fn keys_without_kid_verify_tokens_with_one() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let mut jwks: serde_json::Value = serde_json::from_str(&s.jwks()).unwrap();
    for k in jwks["keys"].as_array_mut().unwrap() {
        k.as_object_mut().unwrap().remove("kid");
    }
    let p = policy(
        &envoy,
        json!({"issuer": ISS, "localJwks": jwks.to_string()})
            .to_string()
            .as_bytes(),
    );
    // The token says kid "es-1"; the only ES256 key has no kid.
    assert_eq!(
        bearer_req(&envoy, &p, &s.es256(now_s(&envoy), json!({}))).0,
        Verdict::Continue
    );
    let other = Signer::new();
    assert_status(
        &bearer_req(&envoy, &p, &other.es256(now_s(&envoy), json!({}))),
        401,
        "invalid_token",
    );
}

#[test]
fn an_unknown_kid_waits_for_the_refresh_it_brought_forward() {
    let (envoy, p) = deploy(1, &remote_config());
    let old = Signer::new();
    assert!(fetch(&envoy, &p, 250, Some((200, &old.jwks()))));
    let new = rotated("2");
    let token = new.es256(now_s(&envoy), json!({}));
    let (verdict, mut waiting) = ask(&p, 0, &token);
    assert_eq!(verdict, Verdict::Pause);
    assert!(waiting.response().is_none());
    assert_eq!((p.paused(0), p.policy(0).waiting()), (1, 1));
    assert!(fetch(&envoy, &p, 250, Some((200, &new.jwks()))));
    assert_eq!(
        waiting.resumed(Direction::Request),
        1,
        "let through with the new key"
    );
    assert!(waiting.response().is_none());
    assert_eq!(p.paused(0), 0);
    p.done(&mut waiting);

    // Another unknown kid right after: no refresh is on its way, so 401 at once.
    let stray = Signer::new().es256(now_s(&envoy), json!({}));
    assert_status(&ask(&p, 0, &stray), 401, "invalid_token");
}

#[test]
fn a_failed_refresh_answers_its_waiters_with_401() {
    let (envoy, p) = deploy(1, &remote_config());
    let old = Signer::new();
    assert!(fetch(&envoy, &p, 250, Some((200, &old.jwks()))));
    let token = rotated("9").es256(now_s(&envoy), json!({}));
    let (verdict, waiting) = ask(&p, 0, &token);
    assert_eq!(verdict, Verdict::Pause);
    assert!(fetch(&envoy, &p, 250, Some((500, "oops"))));
    assert_eq!(waiting.response().unwrap().status, 401);
    assert_eq!(waiting.resumed(Direction::Request), 0);
    assert_eq!(envoy.counter("palisade.jwt_validation.kid_waits"), 1);
}

#[test]
fn forged_claim_headers_are_removed_on_every_path() {
    let s = Signer::new();
    let config =
        String::from_utf8(local(&s, json!({"claimsToHeaders": {"sub": "x-user"}}))).unwrap();
    let envoy = TestEnvoy::new(1);
    let p = envoy.deploy::<JwtValidation>(&config).unwrap();
    // A CORS preflight passes unauthenticated, but not with a forged identity header.
    let mut pre = p.request(0);
    pre.add_header(":method", "OPTIONS")
        .add_header("origin", "https://app.example")
        .add_header("access-control-request-method", "GET")
        .add_header("x-user", "admin");
    assert_eq!(p.send(&mut pre), Verdict::Continue);
    assert!(pre.headers().iter().all(|(n, _)| n != "x-user"));
}

#[test]
fn a_fetched_jwks_skips_broken_keys_a_configured_one_is_refused() {
    let algs = keys::Algorithm::ASYMMETRIC;
    let s = Signer::new();
    let mut doc: serde_json::Value = serde_json::from_str(&s.jwks()).unwrap();
    // An x5c-only RSA key (no n/e) and a key with broken coordinates.
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "kid": "x5c-only", "x5c": ["MIIB"]}));
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}));
    let text = doc.to_string();
    assert_eq!(
        KeySet::parse_fetched(text.as_bytes(), &algs).unwrap().len(),
        2
    );
    assert!(KeySet::parse(text.as_bytes(), &algs).is_err());
}

#[test]
fn a_required_typ_is_enforced() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let p = policy(&envoy, &local(&s, json!({"requiredType": "at+jwt"})));
    // jwt-simple signs with `typ: JWT`.
    assert_status(
        &bearer_req(&envoy, &p, &s.es256(now_s(&envoy), json!({}))),
        401,
        "invalid_token",
    );
    let lax = policy(&envoy, &local(&s, json!({"requiredType": "JWT"})));
    assert_eq!(
        bearer_req(&envoy, &lax, &s.es256(now_s(&envoy), json!({}))).0,
        Verdict::Continue
    );
}

#[test]
fn critical_extensions_foreign_types_and_future_iat_are_refused() {
    let envoy = TestEnvoy::new(1);
    let s = Signer::new();
    let p = policy(&envoy, &local(&s, json!({})));
    let now = now_s(&envoy);
    let mut c = Signer::claims(now, json!({}));
    c.issued_at = Some(UnixTimeStamp::from_secs(now + 600));
    assert_status(
        &bearer_req(&envoy, &p, &s.es.sign(c).unwrap()),
        401,
        "invalid_token",
    );
    let typed = |typ: &str| {
        let opts = HeaderOptions {
            signature_type: Some(typ.into()),
            ..HeaderOptions::default()
        };
        s.es.sign_with_options(Signer::claims(now, json!({})), &opts)
            .unwrap()
    };
    assert_eq!(
        bearer_req(&envoy, &p, &typed("at+jwt")).0,
        Verdict::Continue
    );
    assert_status(
        &bearer_req(&envoy, &p, &typed("dpop+jwk")),
        401,
        "invalid_token",
    );
}

/// A fixed 2048-bit RSA test key (generating one is slow in a debug build).
const RSA_TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDJKDC9Akhd/P4T\nHvowDQKx/odIEjdDvjG/O4ZnV/pzbE4ea+V7iC9C8XmHRMVfqiBoPv5La5+2tWmF\ntigCPH7O8oGzBG9xA0BeAJn4p4/MIlcib78VQYHxzBiHKxCRjtGHJ2DXoe31TN1D\nTwCdFkJLXcIs/TVc9FXGULa4PESy2VMWf3ETOelGpr4mqmsAtDsGjP4kXbJ/UfzK\nXX4r6YZPICzosHQzfcwzWvSt/Rzu7ZsZFIEL6gkdVfRmu5Ixswv9RNN4qPKZhiht\nlk6i2G/IAeduU/9HrbWpbh4b2/JOSghRN4kp9MBpiRXxf/biLbvqpkDyuP89tZCd\nyCw5zFTJAgMBAAECgf8anUp8IRfKcBG55Kb1dpqU8UBTWY+LpHA2o6HqWKnTAD7d\n2M9Rtw7vUxsJ0kTbPEos3jT4yqyqzZPIkn94o6PUQLyeJzOBFjGdOkdl52wv59Mc\ndretZf7vbDGDW3DQKseHCYKOQhfb1BQ3Z2ep0s+6xnaSmK7Z0/X9MEwZDQjvceWo\nDTTFMWzFcCojsCAZqQI8zgebTmEhSmrjZEad5kk4fIXllxdKH/jBtG8KRVGo839t\nH2Ng3NI4o7rx42/eocWrj9Y6qNZt9h1rimKGvjt9eqXjsAk3ORBo9WlabdKGM6wZ\nraWCg/Ylhc4ObfbbFMvro0Ggoms3v/N474zwZuECgYEA8SHvyS93JTp3V3xGg5Jt\nap/hNO2SDJcIVPQdAKd8alfIfpCDPpYM4A0PrI/F+IoG7UN5nQRRCEY5Qnpz468c\ndkGSxeuN2+xt4hHqqhWWQr0sG3No6d/Wh4u/ckJBNr50wOuRmWuYHqZbOfv0WRJe\nnNL8ake0DjRTSSukk3jyJWkCgYEA1Y9GW7h+bDMheXwKmEbh82kVxNCAj/heHFrC\nrTseaLFlSQrx9izaTjw0N9NO5XQmYB7tKuTvgfvVonvEMCqFBG5qPkdi1fB2Vv/+\nRsE6V4xVX/tSGfXJhKjD3DHoWG5A76KVFvnyb4AGl0tGsBhRCWUmi46lor+tg3nF\n2NVd6GECgYEAgOyEKC0Ypu77n+rySKahmcChyIq8675U1hcu6oqiGrmUmRbrFStk\n9uYE216Dmr8xtOm+vBTyvlnNg521GKcnsJKexvOKhWuD1Lt/nDCuhkBetM6f6Wuk\naBRv58dE1uA9zGgnEMBWNQz8+aOcoYMQ0wh7rNdpja6sWRLci3y++wECgYEAqxzs\nlAtEiK+DT9K6rn6FBsKZZaRmjnTD+1YhjCnFWL9i117EtqoDlRIaCOzv11v0b6n4\nABmFapH8//7JGIrJH97Uk+gg4iiUuWrOM6UZeRKBSbGWfCR6/ic3H9SBRXG56AhO\nCyXkQcDEBy+SiQBC1hNNCh8Wykto3OKSSwXTA6ECgYEAsVehlruAB+7ub1KwmDFU\nCMtO1ooQ7W9E8REhmCnX0UT+hqW2Rv9ufdZSS7sC8F4oG7ymTi5hV+s6DLfNfuB+\nCiU5Znii7sCXFHhn9S/H9nkF+5/nzl+nmM6qSs254KDpJAShR2LmZevfGBjon/uT\njAARm7EqXpy0PysNeo+Yjbo=\n-----END PRIVATE KEY-----";

#[test]
fn rsa_tokens_verify_and_broken_rsa_keys_are_refused() {
    let envoy = TestEnvoy::new(1);
    let rs = RS256KeyPair::from_pem(RSA_TEST_KEY)
        .unwrap()
        .with_key_id("rsa-1");
    let ps = PS512KeyPair::from_pem(RSA_TEST_KEY)
        .unwrap()
        .with_key_id("rsa-1");
    let mut jwk: serde_json::Value = serde_json::from_str(&rs.public_key().to_jwk()).unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    let config = |jwk: &serde_json::Value| {
        json!({"issuer": ISS, "audiences": ["orders"], "localJwks": {"keys": [jwk]}}).to_string()
    };
    let p = policy(&envoy, config(&jwk).as_bytes());
    let claims = || Signer::claims(now_s(&envoy), json!({}));
    for token in [rs.sign(claims()).unwrap(), ps.sign(claims()).unwrap()] {
        assert_eq!(bearer_req(&envoy, &p, &token).0, Verdict::Continue);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        signature[7] ^= 1;
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&signature));
        assert_status(&bearer_req(&envoy, &p, &forged), 401, "invalid_token");
    }
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let accepted = |n: &[u8], e: &[u8]| {
        let mut k = jwk.clone();
        k["n"] = URL_SAFE_NO_PAD.encode(n).into();
        k["e"] = URL_SAFE_NO_PAD.encode(e).into();
        JwtValidation::configure(config(&k).as_bytes(), &mut envoy.request(0)).is_ok()
    };
    assert!(accepted(&n, &[1, 0, 1]) && accepted(&n, &[3]));
    assert!(
        accepted(&[&[0, 0][..], &n].concat(), &[0, 1, 0, 1]),
        "leading zeros"
    );
    assert!(!accepted(&n[1..], &[1, 0, 1]), "2040 bits");
    let mut even = n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    assert!(!accepted(&even, &[1, 0, 1]), "even modulus");
    for e in [&[1][..], &[1, 0, 0], &[2, 0, 0, 0, 1]] {
        assert!(!accepted(&n, e), "exponent {e:?}");
    }
    assert!(
        !accepted(&[&[1][..], &n, &n, &n, &n].concat(), &[1, 0, 1]),
        "8193 bits"
    );
}

/// Host calls per request, pinned so a regression shows; prints the rows of `BENCHMARKS.md`
/// ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    let s = Signer::new();
    let local_keys = String::from_utf8(local(&s, json!({}))).unwrap();
    let rows = |scenario: &str, config: &str, fetched: bool| {
        let (envoy, p) = deploy(1, config);
        if fetched {
            assert!(fetch(&envoy, &p, 250, Some((200, &s.jwks()))));
        }
        let token = s.es256(now_s(&envoy), json!({}));
        let (verdict, first) = ask(&p, 0, &token);
        assert_eq!(verdict, Verdict::Continue);
        let (verdict, cached) = ask(&p, 0, &token);
        assert_eq!(verdict, Verdict::Continue);
        let (verdict, denied) = ask(&p, 0, &s.es256(now_s(&envoy), json!({"iss": "other"})));
        assert_eq!(verdict, Verdict::Respond);
        let (first, cached, denied) =
            (first.host_calls(), cached.host_calls(), denied.host_calls());
        println!(
            "{}",
            first.markdown_row("jwt-validation", &format!("allowed ({scenario}, first)"))
        );
        println!(
            "{}",
            cached.markdown_row("jwt-validation", &format!("allowed ({scenario}, cached)"))
        );
        println!(
            "{}",
            denied.markdown_row(
                "jwt-validation",
                &format!("denied ({scenario}, wrong issuer)")
            )
        );
        cached
    };
    let local = rows("local JWKS", &local_keys, false);
    let remote = rows("remote JWKS", &remote_config(), true);
    assert!(local.total() <= 3, "{local:?}");
    assert!(remote.total() <= 4, "{remote:?}");
}
