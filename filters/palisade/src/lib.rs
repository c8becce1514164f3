//! The Palisade bundle (`dist/palisade.wasm`): every Palisade policy in one filter. Its
//! configuration lists the policies to run, in order, each with its own configuration; they run
//! in one VM per worker and one HTTP context per request (see `palisade_kit::bundle`), built from
//! the same crates as the one-policy artifacts.

palisade_kit::bundle_members! {
    /// A policy of the bundle, configured.
    pub enum Member, state MemberState {
        IpFilter(ip_filter::IpFilter),
        Cors(cors::Cors),
        BasicAuth(basic_auth::BasicAuth),
        ClientCertificate(client_certificate::ClientCertificate),
        ClientIdEnforcement(client_id_enforcement::ClientIdEnforcement),
        JwtValidation(jwt_validation::JwtValidation),
        TokenIntrospection(token_introspection::TokenIntrospection),
        RateLimiting(rate_limiting::RateLimiter),
        SpikeControl(spike_control::SpikeControl),
        JsonThreatProtection(json_threat_protection::JsonThreatProtection),
        XmlThreatProtection(xml_threat_protection::XmlThreatProtection),
    }
}

/// The bundle policy: `{"policies": [{"policy": "<name>", "config": {...}}, ...]}`.
pub type Palisade = palisade_kit::bundle::Bundle<Member>;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{ palisade_kit::wasm::start::<Palisade>(); }}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::{HS256Key, JWTClaims, MACLike, NoCustomClaims, UnixTimeStamp};
    use palisade_kit::identity::Identity;
    use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
    use palisade_kit::{Direction, HeaderMap, Policy, Verdict};
    use serde_json::json;
    use sha2::{Digest, Sha256};

    const ISSUER: &str = "https://issuer.test";
    const SECRET: &str = "bundle-hmac-secret-0123456789abcdef-012345";
    const ORIGIN: &str = "https://app.example";

    fn sha256_hex(secret: &str) -> String {
        Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The soak runner's six-policy chain, as one bundle configuration.
    fn six_policies() -> serde_json::Value {
        let client = |id: &str, secret: &str, tier: &str| json!({"clientId": id, "secretSha256": sha256_hex(secret), "contracts": {"orders": tier}});
        json!({"policies": [
            {"policy": "ip-filter", "config": {"mode": "blocklist", "ips": ["203.0.113.0/24"]}},
            {"policy": "cors", "config": {"originGroups": [{"origins": [ORIGIN],
                "allowedMethods": ["GET", "POST"],
                "headers": ["authorization", "content-type", "client_id", "client_secret"]}]}},
            {"policy": "jwt-validation", "config": {"issuer": ISSUER, "audiences": ["orders"],
                "hmacSecret": SECRET, "algorithms": ["HS256"], "claimsToHeaders": {"sub": "x-user"}}},
            {"policy": "client-id-enforcement", "config": {"api": "orders", "clients": [
                client("shop", "shop-secret", "gold"), client("hog", "hog-secret", "bronze")]}},
            {"policy": "rate-limiting", "config": {"tiers": {
                "gold": [{"maximumRequests": 1_000_000, "timePeriodInMilliseconds": 1000}],
                "bronze": [{"maximumRequests": 1, "timePeriodInMilliseconds": 3_600_000}]}}},
            {"policy": "json-threat-protection", "config": {"maxBodyBytes": 1024, "maxContainerDepth": 4}},
        ]})
    }

    fn deploy(envoy: &TestEnvoy) -> TestPolicy<Palisade> {
        envoy
            .deploy::<Palisade>(&six_policies().to_string())
            .unwrap()
    }

    fn token(envoy: &TestEnvoy) -> String {
        let now = envoy.now_ms() / 1000;
        let claims = JWTClaims::<NoCustomClaims> {
            issued_at: Some(UnixTimeStamp::from_secs(now)),
            expires_at: Some(UnixTimeStamp::from_secs(now + 3600)),
            invalid_before: None,
            issuer: Some(ISSUER.into()),
            subject: Some("alice".into()),
            audiences: Some("orders".to_string().into()),
            jwt_id: None,
            nonce: None,
            custom: NoCustomClaims {},
        };
        HS256Key::from_bytes(SECRET.as_bytes())
            .authenticate(claims)
            .unwrap()
    }

    fn request(bundle: &TestPolicy<Palisade>, envoy: &TestEnvoy, client: &str) -> TestRequest {
        let mut req = bundle.request(0);
        req.set_peer("198.51.100.7:40000")
            .add_header(":method", "GET")
            .add_header(":path", "/orders")
            .add_header(":authority", "api.example")
            .add_header("authorization", &format!("Bearer {}", token(envoy)))
            .add_header("client_id", client)
            .add_header("client_secret", &format!("{client}-secret"));
        req
    }

    fn error_code(req: &TestRequest) -> (u16, String) {
        let response = req.response().unwrap();
        let code = response.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (response.status, code)
    }

    #[test]
    fn the_six_policy_chain_admits_a_valid_request_and_hands_the_identity_on() {
        let envoy = TestEnvoy::new(2);
        let bundle = deploy(&envoy);
        let names: Vec<_> = bundle.policy(0).names().collect();
        assert_eq!(names[2], "jwt-validation");
        let mut req = request(&bundle, &envoy, "shop");
        assert_eq!(bundle.send(&mut req), Verdict::Continue);
        assert!(req.headers().contains(&("x-user".into(), "alice".into())));
        // Published by client-id-enforcement, read back within the same filter.
        let identity = Identity::current(&req).unwrap();
        assert_eq!(identity.client_id.as_deref(), Some("shop"));
        assert_eq!(identity.tier.as_deref(), Some("gold"));
        for counter in [
            "palisade.ip_filter.allowed",
            "palisade.jwt_validation.allowed",
            "palisade.client_id_enforcement.allowed",
            "palisade.rate_limiting.allowed",
        ] {
            assert_eq!(envoy.counter(counter), 1, "{counter}");
        }
    }

    #[test]
    fn the_tier_a_later_policy_enforces_comes_from_the_identity_an_earlier_one_published() {
        let envoy = TestEnvoy::new(1);
        let bundle = deploy(&envoy);
        let mut first = request(&bundle, &envoy, "hog");
        assert_eq!(bundle.send(&mut first), Verdict::Continue);
        let mut second = request(&bundle, &envoy, "hog");
        assert_eq!(bundle.send(&mut second), Verdict::Respond);
        assert_eq!(second.response().unwrap().status, 429);
        // A gold client is not limited by bronze's budget.
        let mut shop = request(&bundle, &envoy, "shop");
        assert_eq!(bundle.send(&mut shop), Verdict::Continue);
    }

    #[test]
    fn each_policy_denies_and_the_ones_after_it_do_not_run() {
        let envoy = TestEnvoy::new(1);
        let bundle = deploy(&envoy);

        let mut blocked = request(&bundle, &envoy, "shop");
        blocked.set_peer("203.0.113.9:1234");
        assert_eq!(bundle.send(&mut blocked), Verdict::Respond);
        assert_eq!(error_code(&blocked).0, 403);
        assert_eq!(envoy.counter("palisade.ip_filter.denied"), 1);
        assert_eq!(envoy.counter("palisade.jwt_validation.allowed"), 0);

        let mut foreign = bundle.request(0);
        foreign
            .set_peer("198.51.100.7:40000")
            .add_header(":method", "OPTIONS")
            .add_header(":path", "/orders")
            .add_header("origin", "https://evil.example")
            .add_header("access-control-request-method", "POST");
        assert_eq!(bundle.send(&mut foreign), Verdict::Respond);
        assert_eq!(error_code(&foreign).0, 403);
        assert_eq!(envoy.counter("palisade.cors.preflight_denied"), 1);
        assert_eq!(envoy.counter("palisade.jwt_validation.preflight"), 0);

        let mut no_token = bundle.request(0);
        no_token
            .set_peer("198.51.100.7:40000")
            .add_header(":path", "/orders");
        assert_eq!(bundle.send(&mut no_token), Verdict::Respond);
        assert_eq!(error_code(&no_token).0, 401);
        assert_eq!(envoy.counter("palisade.jwt_validation.missing_token"), 1);
        assert_eq!(
            envoy.counter("palisade.client_id_enforcement.missing_client_id"),
            0
        );

        let mut stranger = request(&bundle, &envoy, "stranger");
        assert_eq!(bundle.send(&mut stranger), Verdict::Respond);
        assert_eq!(error_code(&stranger).0, 401);
        assert_eq!(
            envoy.counter("palisade.client_id_enforcement.unknown_client"),
            1
        );
        assert_eq!(envoy.counter("palisade.rate_limiting.allowed"), 0);
    }

    #[test]
    fn a_body_policy_holds_the_body_after_the_others_continued_at_the_headers() {
        let envoy = TestEnvoy::new(1);
        let bundle = deploy(&envoy);

        let mut valid = request(&bundle, &envoy, "shop");
        valid.add_header("content-type", "application/json");
        assert_eq!(bundle.request_headers(&mut valid, false), Verdict::Continue);
        assert_eq!(
            bundle.request_body(&mut valid, br#"{"a": ["#, false),
            Verdict::Pause
        );
        assert!(valid.forwarded_body(Direction::Request).is_empty());
        assert_eq!(
            bundle.request_body(&mut valid, br#"1, 2]}"#, true),
            Verdict::Continue
        );
        assert_eq!(
            valid.forwarded_body(Direction::Request),
            br#"{"a": [1, 2]}"#
        );

        let mut deep = request(&bundle, &envoy, "shop");
        deep.add_header("content-type", "application/json");
        assert_eq!(bundle.request_headers(&mut deep, false), Verdict::Continue);
        assert_eq!(
            bundle.request_body(&mut deep, b"[[[[", false),
            Verdict::Pause
        );
        assert_eq!(
            bundle.request_body(&mut deep, b"[1]]]]]", true),
            Verdict::Respond
        );
        assert_eq!(error_code(&deep).0, 400);
        assert!(deep.forwarded_body(Direction::Request).is_empty());
        assert_eq!(
            envoy.counter("palisade.json_threat_protection.denied_limit"),
            1
        );
    }

    #[test]
    fn a_bad_member_configuration_is_refused_naming_its_place() {
        let envoy = TestEnvoy::new(1);
        let mut config = six_policies();
        config["policies"][2]["config"]["issuer"] = json!(5);
        let err = envoy.deploy::<Palisade>(&config.to_string()).unwrap_err();
        assert!(
            err.contains("invalid configuration at `policies[2].config.issuer`"),
            "{err}"
        );

        let mut config = six_policies();
        config["policies"][0]["config"]["ips"][0] = json!("not an address");
        let err = envoy.deploy::<Palisade>(&config.to_string()).unwrap_err();
        assert!(err.contains("`policies[0].config.ips[0]`"), "{err}");

        let mut config = six_policies();
        config["policies"][5]["policy"] = json!("json-threat");
        let err = envoy.deploy::<Palisade>(&config.to_string()).unwrap_err();
        assert!(err.contains("`policies[5].policy`"), "{err}");
        assert!(err.contains("xml-threat-protection"), "{err}");
    }

    /// Host calls of the six-policy chain in one filter, for a cross-origin POST of a small JSON
    /// document (the `chain` benchmark's request): every member reads the headers, the clock
    /// and the client address from one copy per callback. Pinned so a regression shows; prints
    /// the row of `BENCHMARKS.md` ("Host calls per request") with `-- --nocapture`.
    #[test]
    fn host_calls_per_request() {
        let envoy = TestEnvoy::new(1);
        let bundle = deploy(&envoy);
        let send = || {
            let mut req = bundle.request(0);
            req.set_peer("198.51.100.7:40000")
                .add_header(":method", "POST")
                .add_header(":path", "/orders")
                .add_header(":authority", "api.example")
                .add_header("origin", ORIGIN)
                .add_header("content-type", "application/json")
                .add_header("authorization", &format!("Bearer {}", token(&envoy)))
                .add_header("client_id", "shop")
                .add_header("client_secret", "shop-secret");
            assert_eq!(bundle.request_headers(&mut req, false), Verdict::Continue);
            let body = br#"{"order": {"sku": "A-1", "qty": 2}}"#;
            assert_eq!(bundle.request_body(&mut req, body, true), Verdict::Continue);
            assert_eq!(bundle.response_headers(&mut req, false), Verdict::Continue);
            bundle.done(&mut req);
            req
        };
        let _first = send();
        let allowed = send();
        assert_eq!(
            allowed
                .map(HeaderMap::Response)
                .iter()
                .find(|(n, _)| n == "access-control-allow-origin")
                .map(|(_, v)| v.as_str()),
            Some(ORIGIN)
        );
        let calls = allowed.host_calls();
        println!(
            "{}",
            calls.markdown_row("palisade (bundle)", "six-policy chain, allowed")
        );
        assert!(calls.total() <= 12, "{calls:?}");
    }

    #[test]
    fn every_policy_is_a_member() {
        let names = <Member as palisade_kit::bundle::Members>::NAMES;
        for name in [
            <ip_filter::IpFilter as Policy>::NAME,
            "basic-auth",
            "client-certificate",
            "client-id-enforcement",
            "cors",
            "json-threat-protection",
            "jwt-validation",
            "rate-limiting",
            "spike-control",
            "token-introspection",
            "xml-threat-protection",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }
}
