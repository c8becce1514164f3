//! The checks behind Palisade's fuzz targets, one function per target.
//!
//! Each function takes the fuzzer's bytes, runs a parser or a whole policy on them, and panics
//! only when a property is broken (a panic inside a policy is itself a finding: in Envoy it traps
//! the VM). `fuzz/libfuzzer` wraps each one in a `cargo fuzz` target (`make fuzz`); the tests
//! below replay the seed corpora (`fuzz/corpus/<target>/`) and every input that ever broke a
//! check (`fuzz/regressions/<target>/`) in `cargo test`, so a fixed crash stays fixed.
//!
//! Properties checked besides "never panics":
//! * body scanners: chunking never changes the verdict;
//! * whole policies on any request: a client-sent copy of a header the gateway sets is never
//!   forwarded as if the gateway had set it;
//! * parsers: what they accept satisfies their contract (see each function).
#![cfg(not(target_arch = "wasm32"))]
// A fuzz check reports a broken property by panicking: that is what the fuzzer catches.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use palisade_kit::body::testing::scan_alternating;
use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
use palisade_kit::{Policy, Verdict};

/// What a fuzz target checks: any bytes in, a panic when a property breaks.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (the libFuzzer target, corpus and regression directory names).
pub const TARGETS: &[(&str, Check)] = &[
    ("json_scanner", json_scanner),
    ("xml_scanner", xml_scanner),
    ("xml_parser_agreement", xml_parser_agreement),
    ("kit_parsers", kit_parsers),
    ("x509", x509),
    ("jwt_token", jwt_token),
    ("peer_answers", peer_answers),
    ("configs", configs),
    ("requests", requests),
];

/// The JSON scanner on any document, limits and chunking: never panics, and chunking never
/// changes the verdict. The first 3 bytes choose the limits and chunk sizes.
pub fn json_scanner(data: &[u8]) {
    use json_threat_protection::scanner::{scan, JsonScanner, Limits};
    let Some((&[l, c1, c2], doc)) = data.split_first_chunk::<3>() else {
        return;
    };
    let pick = |bits: u8| (bits & 3 != 0).then_some(u64::from(bits & 7));
    let limits = Limits {
        max_depth: pick(l),
        max_string: pick(l >> 1),
        max_name: pick(l >> 2),
        max_entries: pick(l >> 3),
        max_elements: pick(l >> 4),
        reject_duplicate_keys: l & 0x80 != 0,
    };
    let whole = scan(limits, doc);
    let sizes = [usize::from(c1 % 17) + 1, usize::from(c2 % 5) + 1];
    let chunked = scan_alternating(JsonScanner::new(limits), doc, sizes);
    assert_eq!(whole, chunked, "chunking changed the verdict");
}

/// The XML scanner on any document, limits and chunking: never panics, and chunking never
/// changes the verdict. The first 4 bytes choose the limits and chunk sizes.
pub fn xml_scanner(data: &[u8]) {
    use xml_threat_protection::scanner::{scan, Limits, XmlScanner};
    let Some((&[l, m, c1, c2], doc)) = data.split_first_chunk::<4>() else {
        return;
    };
    let pick = |bits: u8| (bits & 3 != 0).then_some(u64::from(bits & 7));
    let limits = Limits {
        max_depth: pick(l),
        max_attributes: pick(l >> 2),
        max_namespaces: pick(l >> 4),
        max_children: pick(l >> 5),
        max_text: pick(m),
        max_attribute_length: pick(m >> 2),
        max_comment: pick(m >> 4),
        max_name: pick(m >> 5).map(|n| n + 1),
        allow_dtd: l & 0x80 != 0,
        max_entity_expansion: u64::from(c1) * 4,
    };
    let whole = scan(limits, doc);
    let sizes = [usize::from(c1 % 17) + 1, usize::from(c2 % 5) + 1];
    let chunked = scan_alternating(XmlScanner::new(limits), doc, sizes);
    assert_eq!(whole, chunked, "chunking changed the verdict");
}

/// The XML scanner against a real XML parser (`roxmltree`, XML 1.0 + namespaces) on documents
/// without a DTD: what the scanner accepts must be well-formed, so an upstream parses exactly
/// the tree the scanner judged. (Not the converse: roxmltree accepts some malformed documents the
/// scanner rightly refuses, e.g. a processing-instruction target followed by `)`.)
pub fn xml_parser_agreement(data: &[u8]) {
    use xml_threat_protection::scanner::{scan, Limits};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("<!DOCTYPE") {
        return; // refused without `allowDtd`; roxmltree expands internal subsets
    }
    let ours = scan(Limits::default(), data);
    let theirs = roxmltree::Document::parse(text);
    if let (Ok(()), Err(e)) = (&ours, &theirs) {
        // Names with a colon are XML 1.0 names whatever the colon's place (`r:`, `:a`, `a:b:c`)
        // but not namespace-qualified names: if the document parses with every colon made a
        // plain name character, the refusal was about namespaces only.
        let without_colons = text.replace(':', "_");
        if !namespace_only(e) && roxmltree::Document::parse(&without_colons).is_err() {
            panic!("the scanner accepts what a parser refuses ({e}): {text:?}")
        }
    }
}

/// Namespace binding is not XML 1.0 well-formedness: a namespace-unaware upstream parses such a
/// document, a namespace-aware one refuses it; neither reads a tree the scanner did not judge.
fn namespace_only(e: &roxmltree::Error) -> bool {
    use roxmltree::Error as E;
    matches!(
        e,
        E::UnknownNamespace(..)
            | E::UnexpectedXmlUri(..)
            | E::UnexpectedXmlnsUri(..)
            | E::InvalidXmlPrefixUri(..)
            | E::DuplicatedAttribute(..)
    )
}

/// The kit's parsers of client input and configuration strings. The first byte picks the parser;
/// each accepted value is checked against the parser's contract.
pub fn kit_parsers(data: &[u8]) {
    use palisade_kit::address::{nth_from_right, parse_address, AddressSource};
    use palisade_kit::credentials::parse_basic;
    use palisade_kit::selector::{cookie, query_param, without_query_param};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    match which % 10 {
        0 => {
            if let Ok(creds) = parse_basic(&text) {
                // RFC 7617: the user-id cannot contain a colon.
                assert!(!creds.username.contains(':'), "user-id with a colon");
            }
        }
        1 => {
            if let Some(ip) = parse_address(&text) {
                // Whatever form the address had, it is one Envoy and the policies agree on.
                assert_eq!(palisade_kit::address::normalize(ip), ip, "not normalized");
            }
        }
        2 => {
            let n = u32::from(rest.first().copied().unwrap_or(0) % 4);
            if let Some(item) = nth_from_right(&text, n) {
                assert!(!item.contains(','), "an item of a list holds a comma");
            }
        }
        3 => {
            let _ = AddressSource::parse(a, b.parse().ok());
        }
        4 => {
            if let Some(value) = query_param(a, b) {
                // A separator in a value can only come from its percent-encoded form.
                let encoded = a.to_ascii_lowercase().contains("%26");
                assert!(
                    !value.contains('&') || encoded,
                    "a value holds a raw separator"
                );
            }
        }
        5 => {
            if let Some(stripped) = without_query_param(a, b) {
                assert!(
                    stripped.len() <= a.len(),
                    "removing a parameter grew the path"
                );
            }
        }
        6 => {
            if let Some(value) = cookie(a, b) {
                assert!(!value.contains(';'), "a cookie value holds a separator");
            }
        }
        7 => {
            let _ = serde_json::from_str::<palisade_kit::selector::Selector>(&format!("{text:?}"));
        }
        8 => {
            if let Some(digest) = palisade_kit::secret::parse_sha256_hex(&text) {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(hex, text.to_ascii_lowercase(), "hex round trip");
            }
        }
        _ => {
            if palisade_kit::config::is_token(&text) {
                assert!(!text.is_empty() && text.bytes().all(|c| c.is_ascii_graphic()));
            }
        }
    }
}

/// client-certificate's certificate readers on any PEM text or DER bytes.
pub fn x509(data: &[u8]) {
    use client_certificate::x509::{alt_names, pem_to_der};
    if let Some(der) = pem_to_der(data) {
        let _ = alt_names(&der);
    }
    let _ = alt_names(data);
}

/// The HMAC secret of the JWT fuzz configuration; the seed corpus holds tokens signed with it,
/// so the fuzzer starts from valid tokens and mutates their segments.
pub const JWT_SECRET: &str = "fuzz-hmac-secret-0123456789abcdef0123";

/// jwt-validation on any bearer token (segments, base64, JSON, claims), with a forged copy of
/// the claim header it sets: the forged value never reaches the upstream.
pub fn jwt_token(data: &[u8]) {
    let envoy = TestEnvoy::new(1);
    let config = serde_json::json!({
        "issuer": "https://issuer.example", "audiences": ["orders"],
        "hmacSecret": JWT_SECRET, "algorithms": ["HS256"],
        "requiredClaims": {"tier": "gold"},
        "claimsToHeaders": {"sub": "x-user"},
    });
    let p = deploy::<jwt_validation::JwtValidation>(&envoy, &config.to_string());
    let token = String::from_utf8_lossy(data);
    if token.contains(['\r', '\n', '\0']) {
        return; // Envoy never delivers such a header value
    }
    let mut req = p.request(0);
    req.add_header(":method", "GET")
        .add_header(":path", "/")
        .add_header("authorization", &format!("Bearer {token}"))
        .add_header("x-user", "mallory");
    let verdict = p.send(&mut req);
    assert_forged_header_gone(&req, verdict, "x-user", "mallory");
}

/// What policies do with any answer from a peer (OpenID discovery, a JWKS, a client registry, an
/// introspection server): never panics, and a request decided on it is decided fail-closed
/// (garbage never admits a request). The first byte picks the peer and the status.
pub fn peer_answers(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let status = [200u16, 200, 200, 404, 500, 301][usize::from(which >> 3) % 6];
    let envoy = TestEnvoy::new(1);
    envoy.add_cluster("peer");
    match which % 4 {
        0 | 1 => {
            let discovery = which % 4 == 0;
            let mut config = serde_json::json!({
                "issuer": "https://issuer.example", "audiences": ["orders"],
                "discovery": discovery, "jwks": {"cluster": "peer"},
            });
            if !discovery {
                config["jwks"]["uri"] = "https://issuer.example/jwks".into();
            }
            let p = deploy::<jwt_validation::JwtValidation>(&envoy, &config.to_string());
            answer_background_calls(&envoy, &p, status, body);
            // An unsigned token must be refused whatever the peer said.
            let mut req = p.request(0);
            req.add_header(":method", "GET")
                .add_header(":path", "/")
                .add_header(
                    "authorization",
                    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
                );
            let verdict = p.send(&mut req);
            assert_ne!(verdict, Verdict::Continue, "an unsigned token was admitted");
        }
        2 => {
            let config = serde_json::json!({
                "api": "orders",
                "registry": {"cluster": "peer", "path": "/clients", "refreshSeconds": 30},
            });
            let p =
                deploy::<client_id_enforcement::ClientIdEnforcement>(&envoy, &config.to_string());
            answer_background_calls(&envoy, &p, status, body);
            let mut req = p.request(0);
            req.add_header(":method", "GET")
                .add_header(":path", "/")
                .add_header("client_id", "fuzz-client")
                .add_header("client_secret", "wrong");
            let _ = p.send(&mut req);
        }
        _ => {
            let config = serde_json::json!({
                "introspectionUrl": "https://issuer.example/introspect", "cluster": "peer",
                "authorizationValue": "Basic aW50cm86c2VjcmV0", "exposeHeaders": true,
            });
            let p = deploy::<token_introspection::TokenIntrospection>(&envoy, &config.to_string());
            let mut req = p.request(0);
            req.add_header(":method", "GET")
                .add_header(":path", "/")
                .add_header("authorization", "Bearer opaque-token")
                .add_header("x-agw-client_id", "forged");
            let verdict = p.send(&mut req);
            assert_forged_header_gone(&req, verdict, "x-agw-client_id", "forged");
            if verdict == Verdict::Pause {
                for call in envoy.http_calls() {
                    p.respond(call.token, status, &[], body);
                }
                assert_forged_header_gone(&req, Verdict::Continue, "x-agw-client_id", "forged");
                if status != 200 {
                    assert!(
                        req.response().is_some(),
                        "a failed introspection admitted a token"
                    );
                }
            }
        }
    }
}

/// Every policy's configuration parser on any text: never panics (a refused configuration is
/// fine). The first byte picks the policy.
pub fn configs(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let envoy = TestEnvoy::new(1);
    let outcome = match which % 11 {
        0 => envoy.deploy::<ip_filter::IpFilter>(text).map(drop),
        1 => envoy
            .deploy::<client_id_enforcement::ClientIdEnforcement>(text)
            .map(drop),
        2 => envoy.deploy::<rate_limiting::RateLimiter>(text).map(drop),
        3 => envoy.deploy::<spike_control::SpikeControl>(text).map(drop),
        4 => envoy.deploy::<basic_auth::BasicAuth>(text).map(drop),
        5 => envoy
            .deploy::<json_threat_protection::JsonThreatProtection>(text)
            .map(drop),
        6 => envoy
            .deploy::<xml_threat_protection::XmlThreatProtection>(text)
            .map(drop),
        7 => envoy
            .deploy::<jwt_validation::JwtValidation>(text)
            .map(drop),
        8 => envoy
            .deploy::<token_introspection::TokenIntrospection>(text)
            .map(drop),
        9 => envoy.deploy::<cors::Cors>(text).map(drop),
        _ => envoy
            .deploy::<client_certificate::ClientCertificate>(text)
            .map(drop),
    };
    if let Err(message) = outcome {
        assert!(!message.is_empty(), "a refused configuration says why");
    }
}

/// A whole policy on any request. The first byte picks the policy (with a fixed, realistic
/// configuration); the rest is `METHOD\nPATH\nname: value\n...\n\nBODY`.
pub fn requests(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let method = lines.next().unwrap_or("GET");
    let path = lines.next().unwrap_or("/");
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name.starts_with(':') || value.contains(['\r', '\0']) {
            continue; // Envoy refuses such headers before any filter runs
        }
        headers.push((name, value.trim().to_owned()));
    }
    if method.is_empty() || method.contains(['\r', '\0']) || path.contains(['\r', '\0']) {
        return;
    }
    let build = |req: &mut TestRequest| {
        req.add_header(":method", method)
            .add_header(":path", path)
            .add_header(":authority", "api.example");
        for (name, value) in &headers {
            req.add_header(name, value);
        }
        let peers = [
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::ffff:10.1.2.3]:80",
            "10.0.0.9:1",
        ];
        req.set_peer(peers[usize::from(which >> 4) % peers.len()]);
    };
    let envoy = TestEnvoy::new(1);
    macro_rules! run {
        ($policy:ty, $config:expr) => {{
            exchange(
                &deploy::<$policy>(&envoy, &$config.to_string()),
                build,
                body,
            );
        }};
    }
    match which % 10 {
        0 => run!(
            ip_filter::IpFilter,
            serde_json::json!({"mode": "allowlist", "ips": ["127.0.0.0/8", "::1"],
                               "ipSource": "xff", "trustedHops": 1})
        ),
        1 => run!(
            client_id_enforcement::ClientIdEnforcement,
            serde_json::json!({"api": "orders", "hideCredentials": true, "clients": [{"clientId": "app",
                "secretSha256": "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"}]})
        ),
        2 => run!(
            rate_limiting::RateLimiter,
            serde_json::json!({"id": "fuzz", "keySelector": "header:x-client", "maxKeys": 4,
                "exposeHeaders": true,
                "rateLimits": [{"maximumRequests": 2, "timePeriodInMilliseconds": 1000}]})
        ),
        3 => run!(
            spike_control::SpikeControl,
            serde_json::json!({"maximumRequests": 1, "timePeriodInMilliseconds": 1000,
                "delayTimeInMillis": 10, "delayAttempts": 1, "keySelector": "ip"})
        ),
        4 => run!(
            basic_auth::BasicAuth,
            serde_json::json!({"realm": "fuzz",
                "users": [{"username": "alice", "passwordHash": "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="}]})
        ),
        5 => run!(
            json_threat_protection::JsonThreatProtection,
            serde_json::json!({"maxContainerDepth": 4, "maxStringValueLength": 64,
                "maxObjectEntryCount": 8, "maxArrayElementCount": 8, "allowDuplicateKeys": false})
        ),
        6 => run!(
            xml_threat_protection::XmlThreatProtection,
            serde_json::json!({"maxNodeDepth": 4, "maxAttributeCountPerElement": 4,
                               "maxTextLength": 64})
        ),
        7 => run!(
            cors::Cors,
            serde_json::json!({"publicResource": false, "supportCredentials": true,
                "originGroups": [{"origins": ["https://shop.example.com", "https://*.example.com"],
                                  "allowedMethods": ["GET", "PUT"], "headers": ["x-a"]}]})
        ),
        8 => {
            let config = serde_json::json!({
                "issuer": "https://issuer.example", "audiences": ["orders"],
                "hmacSecret": JWT_SECRET, "algorithms": ["HS256"],
                "claimsToHeaders": {"sub": "x-user"},
            });
            let p = deploy::<jwt_validation::JwtValidation>(&envoy, &config.to_string());
            let (req, verdict) = exchange(&p, build, body);
            if headers.iter().any(|(n, v)| n == "x-user" && v == "mallory") {
                assert_forged_header_gone(&req, verdict, "x-user", "mallory");
            }
        }
        _ => {
            envoy.add_cluster("idp");
            let config = serde_json::json!({
                "introspectionUrl": "https://issuer.example/introspect", "cluster": "idp",
                "authorizationValue": "Basic aW50cm86c2VjcmV0", "exposeHeaders": true,
            });
            let p = deploy::<token_introspection::TokenIntrospection>(&envoy, &config.to_string());
            let (req, verdict) = exchange(&p, build, body);
            if verdict == Verdict::Pause {
                for call in envoy.http_calls() {
                    p.respond(call.token, 200, &[], br#"{"active": true, "sub": "alice"}"#);
                }
            }
            // The gateway's namespace belongs to the gateway: nothing the client sent in it
            // survives, whatever the path through the policy.
            for (name, value) in &headers {
                if name.starts_with("x-agw-") {
                    assert_forged_header_gone(&req, Verdict::Continue, name, value);
                }
            }
        }
    }
}

/// Sends a request (headers, then the body if any, then a response) through a policy.
fn exchange<P: Policy>(
    p: &TestPolicy<P>,
    build: impl Fn(&mut TestRequest),
    body: &[u8],
) -> (TestRequest, Verdict) {
    let mut req = p.request(0);
    build(&mut req);
    let mut verdict = p.request_headers(&mut req, body.is_empty());
    if verdict == Verdict::Continue && !body.is_empty() {
        let half = body.len() / 2;
        verdict = p.request_body(&mut req, &body[..half], false);
        if verdict != Verdict::Respond {
            verdict = p.request_body(&mut req, &body[half..], true);
        }
    }
    if verdict == Verdict::Continue {
        req.add_to(palisade_kit::HeaderMap::Response, ":status", "200");
        let _ = p.response_headers(&mut req, true);
    }
    p.done(&mut req);
    (req, verdict)
}

/// Answers every outbound call made by a policy's background work (after a tick), with the
/// fuzzer's answer, twice (a discovery document points at a JWKS).
fn answer_background_calls<P: Policy>(
    envoy: &TestEnvoy,
    p: &TestPolicy<P>,
    status: u16,
    body: &[u8],
) {
    let mut answered = 0;
    for _ in 0..2 {
        p.tick(1_000);
        let calls = envoy.http_calls();
        for call in &calls[answered..] {
            p.respond(
                call.token,
                status,
                &[("content-type", "application/json")],
                body,
            );
        }
        answered = calls.len();
    }
}

/// A forged copy of a gateway-set header never reaches the upstream on a forwarded request.
fn assert_forged_header_gone(req: &TestRequest, verdict: Verdict, name: &str, forged: &str) {
    if verdict == Verdict::Respond {
        return; // denied: nothing reaches the upstream
    }
    let leaked = req
        .headers()
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == forged);
    assert!(!leaked, "client-forged `{name}: {forged}` forwarded");
}

fn deploy<P: Policy>(envoy: &TestEnvoy, config: &str) -> TestPolicy<P> {
    match envoy.deploy::<P>(config) {
        Ok(p) => p,
        Err(e) => panic!("the fuzz configuration of {} is refused: {e}", P::NAME),
    }
}

#[cfg(test)]
mod replay {
    use super::TARGETS;
    use std::path::Path;

    /// Every seed and every past crash, through its check: a fixed crash stays fixed.
    #[test]
    fn corpora_and_regressions_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for (target, check) in TARGETS {
            let mut inputs = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    let caught = std::panic::catch_unwind(|| check(&data));
                    assert!(caught.is_ok(), "{target}: {} fails", entry.path().display());
                    inputs += 1;
                }
            }
            assert!(inputs > 0, "{target} has no seed corpus");
            seen += inputs;
        }
        assert!(seen >= TARGETS.len());
    }
}
