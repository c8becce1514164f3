//! The decision logic in the in-memory Envoy, with tokens signed by keys the test controls.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use palisade_kit::testing::{TestEnvoy, TestRequest};
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
    let verdict = p.on_request_headers(&mut req);
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
    assert_eq!(p.on_request_headers(&mut req), Verdict::Continue);
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
    assert_eq!(q.on_request_headers(&mut req), Verdict::Continue);
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
        p.on_request_headers(&mut r)
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

fn remote_config() -> Vec<u8> {
    json!({"issuer": ISS, "jwks": {"cluster": "idp", "uri": "http://127.0.0.1:4000/jwks",
           "cacheSeconds": 10, "maxStaleSeconds": 20, "minRefreshSeconds": 30}})
    .to_string()
    .into_bytes()
}

/// Runs one tick on `worker` and answers its fetch, if any, with `answer`.
fn tick(envoy: &TestEnvoy, p: &JwtValidation, worker: usize, answer: Option<(u16, &str)>) -> bool {
    let host = envoy.request(worker);
    let mut in_flight = None;
    p.tick(&host, &mut in_flight, |c, h, t| {
        envoy.request(worker).dispatch_http_call(c, h, None, t)
    });
    let Some(call) = in_flight.clone() else {
        return false;
    };
    if let Some((status, body)) = answer {
        p.on_fetch_response(
            &host,
            &mut in_flight,
            call.token,
            Some(status),
            body.as_bytes(),
            |_, _, _| Err(HostError::BadArgument),
        );
    }
    true
}

#[test]
fn remote_keys_are_fetched_once_shared_kept_stale_then_dropped() {
    let envoy = TestEnvoy::new(2);
    envoy.add_cluster("idp");
    let s = Signer::new();
    let p0 = policy(&envoy, &remote_config());
    let p1 = policy(&envoy, &remote_config());
    let token = s.es256(now_s(&envoy), json!({"exp": now_s(&envoy) + 3600}));
    assert_status(&bearer_req(&envoy, &p0, &token), 503, "jwks_unavailable");

    let jwks = s.jwks();
    assert!(tick(&envoy, &p0, 0, Some((200, &jwks))));
    let calls = envoy.http_calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].headers.contains(&(":path".into(), "/jwks".into())));
    assert!(
        !tick(&envoy, &p1, 1, None),
        "the other worker does not fetch"
    );
    // Both workers' policies use the published keys.
    assert_eq!(bearer_req(&envoy, &p0, &token).0, Verdict::Continue);
    assert_eq!(bearer_req(&envoy, &p1, &token).0, Verdict::Continue);

    // At 80 % of cacheSeconds one refresh; it fails, the keys stay in use while stale.
    envoy.advance_ms(8_000);
    assert!(tick(&envoy, &p1, 1, Some((503, "down"))));
    assert!(!tick(&envoy, &p0, 0, None), "backing off");
    envoy.advance_ms(21_000);
    assert_eq!(
        bearer_req(&envoy, &p1, &s.es256(now_s(&envoy), json!({}))).0,
        Verdict::Continue
    );
    assert!(tick(&envoy, &p0, 0, Some((200, "not json"))));
    envoy.advance_ms(1_000);
    // 30 s after the last good fetch (cache 10 + stale 20): no usable keys.
    assert_status(
        &bearer_req(&envoy, &p1, &s.es256(now_s(&envoy), json!({}))),
        503,
        "jwks_unavailable",
    );
    assert_eq!(envoy.counter("palisade.jwt_validation.jwks_fetched"), 1);
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_fetch_failed"),
        2
    );
}

#[test]
fn an_unknown_kid_brings_a_rate_limited_refresh() {
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("idp");
    let old = Signer::new();
    let p = policy(&envoy, &remote_config());
    assert!(tick(&envoy, &p, 0, Some((200, &old.jwks()))));
    let rotated = Signer {
        es: ES256KeyPair::generate().with_key_id("es-2"),
        ed: Ed25519KeyPair::generate().with_key_id("ed-2"),
    };
    let token = rotated.es256(now_s(&envoy), json!({}));
    assert_status(&bearer_req(&envoy, &p, &token), 401, "invalid_token");
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_refresh_requested"),
        1
    );
    assert!(
        tick(&envoy, &p, 0, Some((200, &rotated.jwks()))),
        "fetched at once"
    );
    assert_eq!(bearer_req(&envoy, &p, &token).0, Verdict::Continue);
    // Another unknown kid within minRefreshSeconds does not fetch again.
    let third = Signer::new();
    let t3 = third.es256(now_s(&envoy), json!({}));
    let t3 = t3.replacen(
        &t3[..t3.find('.').unwrap()],
        &URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"nope"}"#),
        1,
    );
    assert_status(&bearer_req(&envoy, &p, &t3), 401, "invalid_token");
    assert!(!tick(&envoy, &p, 0, None));
    assert_eq!(
        envoy.counter("palisade.jwt_validation.jwks_refresh_requested"),
        1
    );
}

#[test]
fn discovery_is_followed_to_the_jwks() {
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("idp");
    let s = Signer::new();
    let p = policy(
        &envoy,
        json!({"issuer": ISS, "discovery": true, "jwks": {"cluster": "idp"}})
            .to_string()
            .as_bytes(),
    );
    let host = envoy.request(0);
    let mut in_flight = None;
    p.tick(&host, &mut in_flight, |c, h, t| {
        envoy.request(0).dispatch_http_call(c, h, None, t)
    });
    let first = in_flight.clone().unwrap();
    let doc = json!({"issuer": ISS, "jwks_uri": "http://127.0.0.1:4000/keys"}).to_string();
    p.on_fetch_response(
        &host,
        &mut in_flight,
        first.token,
        Some(200),
        doc.as_bytes(),
        |c, h, t| envoy.request(0).dispatch_http_call(c, h, None, t),
    );
    let second = in_flight.clone().unwrap();
    assert_ne!(first.token, second.token);
    let calls = envoy.http_calls();
    assert!(calls[0]
        .headers
        .contains(&(":path".into(), "/.well-known/openid-configuration".into())));
    assert!(calls[1].headers.contains(&(":path".into(), "/keys".into())));
    p.on_fetch_response(
        &host,
        &mut in_flight,
        second.token,
        Some(200),
        s.jwks().as_bytes(),
        |_, _, _| Err(HostError::BadArgument),
    );
    assert_eq!(
        bearer_req(&envoy, &p, &s.es256(now_s(&envoy), json!({}))).0,
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
fn a_lost_fetch_does_not_stop_this_vm_fetching() {
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("idp");
    let p = policy(&envoy, &remote_config());
    let host = envoy.request(0);
    let mut in_flight = None;
    let dispatch =
        |c: &str, h: &[(&str, &str)], t| envoy.request(0).dispatch_http_call(c, h, None, t);
    p.tick(&host, &mut in_flight, dispatch);
    assert!(in_flight.is_some());
    // timeoutMs 5000 + 2 × 2 s of slack.
    envoy.advance_ms(8_999);
    p.tick(&host, &mut in_flight, dispatch);
    assert_eq!(envoy.http_calls().len(), 1, "still waiting for the answer");
    envoy.advance_ms(2);
    p.tick(&host, &mut in_flight, dispatch);
    assert_eq!(
        envoy.http_calls().len(),
        2,
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
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("idp");
    let old = Signer::new();
    let p = policy(&envoy, &remote_config());
    assert!(tick(&envoy, &p, 0, Some((200, &old.jwks()))));
    let rotated = Signer {
        es: ES256KeyPair::generate().with_key_id("es-2"),
        ed: Ed25519KeyPair::generate().with_key_id("ed-2"),
    };
    let token = rotated.es256(now_s(&envoy), json!({}));
    let mut waiting = envoy.request(0);
    waiting.add_header("authorization", &format!("Bearer {token}"));
    assert_eq!(p.on_request(&mut waiting, Some(7)), Decision::Wait);
    assert!(waiting.response().is_none());
    assert_eq!(p.waiting(), 1);
    // Nothing changed yet: it keeps waiting.
    p.wake(&mut waiting, |_| panic!("woken too early"), || panic!());
    assert!(tick(&envoy, &p, 0, Some((200, &rotated.jwks()))));
    let mut resumed = false;
    p.wake(
        &mut waiting,
        |id| {
            assert_eq!(id, 7);
            true
        },
        || resumed = true,
    );
    assert!(
        resumed && waiting.response().is_none(),
        "let through with the new key"
    );
    assert_eq!(p.waiting(), 0);

    // Another unknown kid right after: no refresh is on its way, so 401 at once.
    let stray = Signer::new().es256(now_s(&envoy), json!({}));
    let mut r = envoy.request(0);
    r.add_header("authorization", &format!("Bearer {stray}"));
    assert_eq!(p.on_request(&mut r, Some(8)), Decision::Respond);
    assert_eq!(r.response().unwrap().status, 401);
}

#[test]
fn a_failed_refresh_answers_its_waiters_with_401() {
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("idp");
    let old = Signer::new();
    let p = policy(&envoy, &remote_config());
    assert!(tick(&envoy, &p, 0, Some((200, &old.jwks()))));
    let token = Signer {
        es: ES256KeyPair::generate().with_key_id("es-9"),
        ed: Ed25519KeyPair::generate().with_key_id("ed-9"),
    }
    .es256(now_s(&envoy), json!({}));
    let mut waiting = envoy.request(0);
    waiting.add_header("authorization", &format!("Bearer {token}"));
    assert_eq!(p.on_request(&mut waiting, Some(3)), Decision::Wait);
    assert!(tick(&envoy, &p, 0, Some((500, "oops"))));
    p.wake(&mut waiting, |_| true, || panic!("must not pass"));
    assert_eq!(waiting.response().unwrap().status, 401);
    assert_eq!(envoy.counter("palisade.jwt_validation.kid_waits"), 1);
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
