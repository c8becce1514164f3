//! Unit tests of the decision, natively, against the kit's in-memory Envoy.

use super::*;
use palisade_kit::secret::sha256;
use palisade_kit::testing::{TestEnvoy, TestRequest};
use palisade_kit::Verdict;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn clients_json() -> String {
    let h = |s: &str| hex(&sha256(s.as_bytes()));
    format!(
        r#"[{{"clientId": "app-1", "name": "Shop", "secretSha256": "{}", "contracts": {{"orders": "gold"}}}},
            {{"clientId": "app-2", "secretSha256": "{}", "contracts": {{"catalog": "silver"}}}},
            {{"clientId": "app-3", "secretSha256": "{}", "enabled": false, "contracts": {{"orders": "gold"}}}}]"#,
        h("s1"),
        h("s2"),
        h("s3")
    )
}

fn policy(envoy: &TestEnvoy, extra: &str) -> ClientIdEnforcement {
    let json = format!(
        r#"{{"api": "orders", "clients": {} {extra}}}"#,
        clients_json()
    );
    ClientIdEnforcement::configure(json.as_bytes(), &mut envoy.request(0)).unwrap()
}

fn request(envoy: &TestEnvoy, headers: &[(&str, &str)]) -> TestRequest {
    let mut r = envoy.request(0);
    r.add_header(":method", "GET")
        .add_header(":path", "/orders");
    for (n, v) in headers {
        r.add_header(n, v);
    }
    r
}

#[test]
fn every_outcome() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, "");
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<Reason>);
    let cases: [Case; 7] = [
        (&[("client_id", "app-1"), ("client_secret", "s1")], None),
        (&[("client_secret", "s1")], Some(Reason::MissingClientId)),
        (
            &[("client_id", "nobody"), ("client_secret", "s1")],
            Some(Reason::UnknownClient),
        ),
        (&[("client_id", "app-1")], Some(Reason::MissingSecret)),
        (
            &[("client_id", "app-1"), ("client_secret", "s2")],
            Some(Reason::InvalidSecret),
        ),
        (
            &[("client_id", "app-3"), ("client_secret", "s3")],
            Some(Reason::DisabledClient),
        ),
        (
            &[("client_id", "app-2"), ("client_secret", "s2")],
            Some(Reason::NoContract),
        ),
    ];
    for (headers, expected) in cases {
        let req = request(&envoy, headers);
        match (p.decide(&req, true, None), expected) {
            (Outcome::Allowed(client, tier), None) => {
                assert_eq!((client.id.as_str(), tier.as_str()), ("app-1", "gold"));
            }
            (Outcome::Denied(reason), Some(expected)) => {
                assert_eq!(reason, expected, "{headers:?}")
            }
            (other, expected) => panic!("{headers:?}: {other:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn denials_have_the_flex_challenge_and_one_generic_message() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, "");
    let mut bodies = Vec::new();
    for headers in [
        &[("client_id", "nobody"), ("client_secret", "x")][..],
        &[("client_id", "app-1"), ("client_secret", "wrong")][..],
        &[("client_id", "app-3"), ("client_secret", "s3")][..],
    ] {
        let mut req = request(&envoy, headers);
        let outcome = p.decide(&req, true, None);
        assert_eq!(p.apply(&mut req, outcome), Verdict::Respond);
        let resp = req.response().unwrap();
        assert_eq!(resp.status, 401);
        assert_eq!(
            resp.header("www-authenticate"),
            Some("Client-ID-Enforcement")
        );
        bodies.push(resp.body.clone());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the reason must not leak to the client"
    );
    let mut req = request(&envoy, &[("client_id", "app-2"), ("client_secret", "s2")]);
    let outcome = p.decide(&req, true, None);
    p.apply(&mut req, outcome);
    assert_eq!(req.response().unwrap().status, 403);
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.unknown_client"),
        1
    );
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.invalid_secret"),
        1
    );
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.disabled_client"),
        1
    );
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.no_contract"),
        1
    );
}

#[test]
fn success_hands_the_identity_on_and_hides_credentials() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, r#", "hideCredentials": true, "hideClientId": true"#);
    let mut req = request(
        &envoy,
        &[
            ("client_id", "app-1"),
            ("client_secret", "s1"),
            ("x-other", "1"),
        ],
    );
    let outcome = p.decide(&req, true, None);
    assert_eq!(p.apply(&mut req, outcome), Verdict::Continue);
    let id = Identity::current(&req).unwrap();
    assert_eq!(id.client_id.as_deref(), Some("app-1"));
    assert_eq!(id.client_name.as_deref(), Some("Shop"));
    assert_eq!(id.tier.as_deref(), Some("gold"));
    assert!(req
        .headers()
        .iter()
        .all(|(n, _)| n != "client_secret" && n != "client_id"));
    assert!(req.headers().iter().any(|(n, _)| n == "x-other"));
    assert_eq!(envoy.counter("palisade.client_id_enforcement.allowed"), 1);
}

#[test]
fn query_and_basic_modes() {
    use base64::Engine;
    let envoy = TestEnvoy::new(1);
    let q = policy(
        &envoy,
        r#", "clientIdSource": "query:client_id", "clientSecretSource": "query:client_secret", "hideCredentials": true"#,
    );
    let mut req = envoy.request(0);
    req.add_header(":path", "/orders?client_id=app-1&client_secret=s1&page=2");
    let outcome = q.decide(&req, true, None);
    assert!(matches!(outcome, Outcome::Allowed(..)));
    q.apply(&mut req, outcome);
    assert_eq!(req.headers()[0].1, "/orders?client_id=app-1&page=2");

    let b = policy(
        &envoy,
        r#", "clientIdSource": "basic:username", "clientSecretSource": "basic:password""#,
    );
    let creds = base64::engine::general_purpose::STANDARD.encode("app-1:s1");
    let req = request(&envoy, &[("authorization", &format!("Basic {creds}"))]);
    assert!(matches!(b.decide(&req, true, None), Outcome::Allowed(..)));
    let mut bad = request(&envoy, &[("authorization", "Basic !!")]);
    let outcome = b.decide(&bad, true, None);
    assert_eq!(outcome, Outcome::Denied(Reason::MissingClientId));
    b.apply(&mut bad, outcome);
    assert_eq!(
        bad.response().unwrap().header("www-authenticate"),
        Some("Basic realm=\"orders\"")
    );
}

#[test]
fn no_secret_mode_and_preflights() {
    let envoy = TestEnvoy::new(1);
    let p = policy(&envoy, r#", "clientSecretSource": null"#);
    let req = request(&envoy, &[("client_id", "app-1")]);
    assert!(matches!(p.decide(&req, true, None), Outcome::Allowed(..)));
    let mut pre = envoy.request(0);
    pre.add_header(":method", "OPTIONS")
        .add_header("origin", "https://shop.example")
        .add_header("access-control-request-method", "PUT");
    assert_eq!(p.decide(&pre, true, None), Outcome::Preflight);
    let strict = policy(
        &envoy,
        r#", "clientSecretSource": null, "allowCorsPreflight": false"#,
    );
    assert_eq!(
        strict.decide(&pre, true, None),
        Outcome::Denied(Reason::MissingClientId)
    );
}

#[test]
fn repeated_credentials_are_refused_in_every_mode() {
    use base64::Engine;
    let envoy = TestEnvoy::new(1);
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let header = policy(&envoy, "");
    let query = policy(
        &envoy,
        r#", "clientIdSource": "query:client_id", "clientSecretSource": "query:client_secret""#,
    );
    let cookie = policy(
        &envoy,
        r#", "clientIdSource": "cookie:cid", "clientSecretSource": "cookie:cs""#,
    );
    let basic_mode = policy(
        &envoy,
        r#", "clientIdSource": "basic:username", "clientSecretSource": "basic:password""#,
    );
    let (good, other) = (basic("app-1:s1"), basic("app-2:s2"));
    let joined = format!("{good},{other}");
    type Case<'a> = (&'a ClientIdEnforcement, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        // Valid credentials, then another client's id: the upstream may read the last one.
        (
            &header,
            "/orders",
            vec![
                ("client_id", "app-1"),
                ("client_secret", "s1"),
                ("client_id", "app-2"),
            ],
        ),
        (
            &header,
            "/orders",
            vec![
                ("client_id", "app-1"),
                ("client_secret", "s1"),
                ("client_secret", "s1"),
            ],
        ),
        (
            &query,
            "/orders?client_id=app-1&client_secret=s1&client_id=app-2",
            vec![],
        ),
        (
            &query,
            "/orders?client_id=app-1&client_secret=s1&client%5Fsecret=x",
            vec![],
        ),
        (
            &cookie,
            "/orders",
            vec![("cookie", "cid=app-1; cs=s1"), ("cookie", "cid=app-2")],
        ),
        (
            &cookie,
            "/orders",
            vec![("cookie", "cid=app-1; cs=s1; cid=app-2")],
        ),
        (
            &basic_mode,
            "/orders",
            vec![("authorization", &good), ("authorization", &other)],
        ),
        // Envoy's form of two `Authorization` lines.
        (&basic_mode, "/orders", vec![("authorization", &joined)]),
    ];
    for (p, path, headers) in cases {
        let mut req = envoy.request(0);
        req.add_header(":method", "GET").add_header(":path", path);
        for (n, v) in &headers {
            req.add_header(n, v);
        }
        let outcome = p.decide(&req, true, None);
        assert_eq!(
            outcome,
            Outcome::Denied(Reason::AmbiguousCredentials),
            "{path} {headers:?}"
        );
        assert_eq!(p.apply(&mut req, outcome), Verdict::Respond);
        let response = req.response().unwrap();
        assert_eq!(response.status, 401);
        assert_eq!(response.json()["error"], "invalid_client");
    }
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.ambiguous_credentials"),
        8
    );
    // The same credentials once each pass.
    let req = request(&envoy, &[("client_id", "app-1"), ("client_secret", "s1")]);
    assert!(matches!(
        header.decide(&req, true, None),
        Outcome::Allowed(..)
    ));
}

#[test]
fn an_options_request_with_a_body_is_authenticated() {
    let envoy = TestEnvoy::new(1);
    let policy = envoy
        .deploy::<ClientIdEnforcement>(&format!(
            r#"{{"api": "orders", "clients": {}}}"#,
            clients_json()
        ))
        .unwrap();
    let preflight_like = || {
        let mut req = policy.request(0);
        req.add_header(":method", "OPTIONS")
            .add_header(":path", "/orders")
            .add_header("origin", "https://shop.example")
            .add_header("access-control-request-method", "POST");
        req
    };
    let mut req = preflight_like();
    req.add_header("content-length", "13");
    assert_eq!(policy.request_headers(&mut req, false), Verdict::Respond);
    assert_eq!(req.response().unwrap().status, 401);
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.missing_client_id"),
        1
    );
    // Without the body it is a preflight.
    let mut req = preflight_like();
    assert_eq!(policy.request_headers(&mut req, true), Verdict::Continue);
    assert_eq!(
        envoy.counter("palisade.client_id_enforcement.preflight_allowed"),
        1
    );
}

#[test]
fn remote_registry_lookup_and_unavailability() {
    let envoy = TestEnvoy::new(1);
    let json = String::from(
        r#"{"api": "orders", "clients": [{"clientId": "inline", "contracts": {"orders": "bronze"}}],
            "clientSecretSource": null, "registry": {"cluster": "reg"}}"#,
    );
    let p = ClientIdEnforcement::configure(json.as_bytes(), &mut envoy.request(0)).unwrap();
    let remote = Registry::parse_document(clients_json().as_bytes()).unwrap();
    let ask = |id: &str, remote: Option<&Registry>| {
        p.decide(&request(&envoy, &[("client_id", id)]), true, remote)
    };
    // Before the registry ever loaded: inline clients work, others cannot be judged.
    assert!(matches!(ask("inline", None), Outcome::Allowed(..)));
    assert_eq!(
        ask("app-1", None),
        Outcome::Denied(Reason::RegistryUnavailable)
    );
    assert!(matches!(ask("app-1", Some(&remote)), Outcome::Allowed(..)));
    assert_eq!(
        ask("nobody", Some(&remote)),
        Outcome::Denied(Reason::UnknownClient)
    );
}

#[test]
fn a_client_without_a_secret_fails_when_a_secret_is_required() {
    let envoy = TestEnvoy::new(1);
    let p = ClientIdEnforcement::configure(
        br#"{"api": "orders", "registry": {"cluster": "reg"}}"#,
        &mut envoy.request(0),
    )
    .unwrap();
    let remote =
        Registry::parse_document(br#"[{"clientId": "open", "contracts": {"orders": "gold"}}]"#)
            .unwrap();
    let req = request(&envoy, &[("client_id", "open"), ("client_secret", "")]);
    assert_eq!(
        p.decide(&req, true, Some(&remote)),
        Outcome::Denied(Reason::InvalidSecret)
    );
}

/// The remote registry, fetched by the kit's fetcher in a deployed policy.
mod remote {
    use super::*;
    use palisade_kit::testing::TestPolicy;

    fn deploy(envoy: &TestEnvoy) -> TestPolicy<ClientIdEnforcement> {
        envoy.add_cluster("registry");
        let json = r#"{"api": "orders", "clientSecretSource": null,
            "registry": {"cluster": "registry", "path": "/clients", "authority": "registry",
                         "refreshSeconds": 30}}"#;
        envoy.deploy::<ClientIdEnforcement>(json).unwrap()
    }

    fn ask(p: &TestPolicy<ClientIdEnforcement>, worker: usize, id: &str) -> TestRequest {
        let mut req = p.request(worker);
        req.add_header("client_id", id);
        p.send(&mut req);
        req
    }

    #[test]
    fn fetched_once_per_period_served_by_every_worker_last_good_kept() {
        let envoy = TestEnvoy::new(2);
        let p = deploy(&envoy);
        assert_eq!(
            ask(&p, 0, "app-1").response().unwrap().status,
            503,
            "not loaded yet"
        );
        p.tick(250);
        let calls = envoy.http_calls();
        assert_eq!(calls.len(), 1, "one fetch for two workers");
        assert_eq!(calls[0].header(":path"), Some("/clients"));
        let registry = r#"[{"clientId": "app-1", "contracts": {"orders": "gold"}}]"#;
        p.respond(calls[0].token, 200, &[], registry.as_bytes());
        for worker in 0..2 {
            assert!(
                ask(&p, worker, "app-1").response().is_none(),
                "worker {worker}"
            );
        }
        assert_eq!(ask(&p, 1, "nobody").response().unwrap().status, 401);
        assert_eq!(
            envoy.counter("palisade.client_id_enforcement.registry_fetched"),
            1
        );
        // A broken registry is refused and the last good copy stays.
        p.tick(30_000);
        let calls = envoy.http_calls();
        assert_eq!(calls.len(), 2);
        p.respond(calls[1].token, 200, &[], b"{not json");
        assert_eq!(
            envoy.counter("palisade.client_id_enforcement.registry_invalid"),
            1
        );
        assert_eq!(
            envoy.counter("palisade.client_id_enforcement.registry_fetch_failed"),
            1
        );
        assert!(ask(&p, 0, "app-1").response().is_none());
        // Retried soon (backoff), not a whole period later.
        p.tick(1_250);
        assert_eq!(envoy.http_calls().len(), 3);
    }

    #[test]
    fn requests_use_the_worker_copy_and_a_denial_rechecks_a_newer_registry() {
        let envoy = TestEnvoy::new(2);
        let p = deploy(&envoy);
        p.tick(250);
        let calls = envoy.http_calls();
        let v1 = r#"[{"clientId": "app-1", "contracts": {"orders": "gold"}}]"#;
        p.respond(calls[0].token, 200, &[], v1.as_bytes());
        for worker in 0..2 {
            assert!(ask(&p, worker, "app-1").response().is_none());
        }
        // With a copy in hand, an allowed request reads nothing from shared data.
        let allowed = ask(&p, 1, "app-1");
        assert!(allowed.response().is_none());
        assert_eq!(
            allowed.host_calls().0.get("shared_get"),
            None,
            "{:?}",
            allowed.host_calls()
        );
        // A new registry is published by whichever worker fetches it; before any other tick,
        // a client it adds is admitted on every worker (the denial re-checks), and a client it
        // removes is refused once that worker has seen it.
        p.tick(30_000);
        let calls = envoy.http_calls();
        assert_eq!(calls.len(), 2);
        let v2 = r#"[{"clientId": "app-2", "contracts": {"orders": "gold"}}]"#;
        p.respond(calls[1].token, 200, &[], v2.as_bytes());
        for worker in 0..2 {
            assert!(
                ask(&p, worker, "app-2").response().is_none(),
                "worker {worker}"
            );
            assert_eq!(ask(&p, worker, "app-1").response().unwrap().status, 401);
        }
        assert_eq!(ask(&p, 0, "nobody").response().unwrap().status, 401);
    }
}

/// Host calls per request, pinned so a regression shows; prints the rows of `BENCHMARKS.md`
/// ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    let envoy = TestEnvoy::new(1);
    let json = format!(r#"{{"api": "orders", "clients": {}}}"#, clients_json());
    let p = envoy.deploy::<ClientIdEnforcement>(&json).unwrap();
    let send = |headers: &[(&str, &str)]| {
        let mut r = request(&envoy, headers);
        p.send(&mut r);
        r
    };
    let credentials = [("client_id", "app-1"), ("client_secret", "s1")];
    let first = send(&credentials);
    assert!(first.response().is_none());
    let allowed = send(&credentials);
    assert!(allowed.response().is_none());
    let denied = send(&[("client_id", "app-1"), ("client_secret", "s2")]);
    assert_eq!(denied.response().map(|r| r.status), Some(401));
    let (allowed, denied) = (allowed.host_calls(), denied.host_calls());
    println!(
        "{}",
        allowed.markdown_row("client-id-enforcement", "allowed")
    );
    println!(
        "{}",
        denied.markdown_row("client-id-enforcement", "denied (wrong secret)")
    );
    assert!(allowed.total() <= 2, "{allowed:?}");
}

#[test]
fn the_identity_is_serialized_once_per_client_and_handed_on_unchanged() {
    let envoy = TestEnvoy::new(1);
    let json = format!(r#"{{"api": "orders", "clients": {}}}"#, clients_json());
    let p = envoy.deploy::<ClientIdEnforcement>(&json).unwrap();
    let policy = p.policy(0);
    let kept = || {
        policy
            .config()
            .inline
            .get("app-1")
            .unwrap()
            .handoff
            .get()
            .cloned()
    };
    assert_eq!(
        kept(),
        None,
        "nothing serialized before the client is admitted"
    );
    let mut identities = Vec::new();
    for _ in 0..3 {
        let mut r = request(&envoy, &[("client_id", "app-1"), ("client_secret", "s1")]);
        assert_eq!(p.send(&mut r), Verdict::Continue);
        identities.push(Identity::current(&r).unwrap());
    }
    let (tier, handoff) = kept().expect("kept after the first admission");
    assert_eq!(tier, "gold");
    assert_eq!(
        serde_json::from_slice::<Identity>(handoff.as_bytes()).unwrap(),
        identities[0]
    );
    assert!(identities.iter().all(|id| *id == identities[0]));
    assert_eq!(identities[0].client_id.as_deref(), Some("app-1"));
    assert_eq!(identities[0].client_name.as_deref(), Some("Shop"));
    assert_eq!(identities[0].tier.as_deref(), Some("gold"));
    // Another client gets its own.
    let mut other = request(&envoy, &[("client_id", "app-2"), ("client_secret", "s2")]);
    p.send(&mut other);
    assert!(
        policy
            .config()
            .inline
            .get("app-2")
            .unwrap()
            .handoff
            .get()
            .is_none(),
        "no contract: denied"
    );
}
