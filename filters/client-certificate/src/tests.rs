//! The policy on the kit's in-memory Envoy, with connection attributes exactly as Envoy 1.40
//! reports them (measured: `mtls` is one byte 1/0 and is 0 on plain HTTP; the SAN attributes
//! carry the first URI / DNS SAN only; the subject is RFC 2253; the digest is lowercase hex;
//! `peer_certificate` is the PEM; every certificate attribute is absent without a certificate).

use super::*;
use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
use serde_json::{json, Value};

const MULTI_SAN_PEM: &str = include_str!("testdata/multi-san.pem");
const NO_SAN_PEM: &str = include_str!("testdata/no-san.pem");

/// A client certificate as Envoy's attributes describe it.
struct Cert {
    uri: Option<&'static str>,
    dns: Option<&'static str>,
    subject: &'static str,
    sha256: &'static str,
    pem: &'static str,
}

/// `testdata/multi-san.pem`: URI, DNS, URI, DNS, email and IP SANs, in that order.
const PARTNER: Cert = Cert {
    uri: Some("spiffe://retail.example/ns/orders/sa/fulfillment"),
    dns: Some("gw.partner.example"),
    subject: "CN=partner-gateway,O=Partner Co",
    sha256: "ec58edd22f669f9e59cc0538174e03302c3048d7817d815c4edb856dc43a292f",
    pem: MULTI_SAN_PEM,
};
const PARTNER_FINGERPRINT: &str =
    "EC:58:ED:D2:2F:66:9F:9E:59:CC:05:38:17:4E:03:30:2C:30:48:D7:81:7D:81:5C:4E:DB:85:6D:C4:3A:29:2F";

/// `testdata/no-san.pem`: no subjectAltName extension, a subject with escapes.
const LEGACY: Cert = Cert {
    uri: None,
    dns: None,
    subject: r"CN=legacy-client,O=M\C3\BCller\, S\C3\B6hne,C=DE",
    sha256: "bfe2c9767ea9269113e75add7da36792fd1a9c3a5da8207f10451cc31fb99a4d",
    pem: NO_SAN_PEM,
};

fn deploy(envoy: &TestEnvoy, config: Value) -> TestPolicy<ClientCertificate> {
    envoy
        .deploy::<ClientCertificate>(&config.to_string())
        .unwrap()
}

fn request(envoy: &TestEnvoy) -> TestRequest {
    let mut req = envoy.request(0);
    req.add_header(":method", "GET")
        .add_header(":path", "/orders");
    req
}

/// Envoy's attributes of a TLS connection where the client presented `cert` (an absent or
/// empty value is not reported at all, as Envoy does).
fn set_cert(req: &mut TestRequest, cert: &Cert) {
    req.set_attribute(attributes::MTLS, &[1])
        .set_attribute(attributes::SHA256, cert.sha256.as_bytes())
        .set_attribute(attributes::CERTIFICATE, cert.pem.as_bytes());
    if !cert.subject.is_empty() {
        req.set_attribute(attributes::SUBJECT, cert.subject.as_bytes());
    }
    if let Some(uri) = cert.uri {
        req.set_attribute(attributes::URI_SAN, uri.as_bytes());
    }
    if let Some(dns) = cert.dns {
        req.set_attribute(attributes::DNS_SAN, dns.as_bytes());
    }
}

/// A GET on a TLS connection where the client presented `cert`.
fn with_cert(envoy: &TestEnvoy, cert: &Cert) -> TestRequest {
    let mut req = request(envoy);
    set_cert(&mut req, cert);
    req
}

/// A request on a TLS connection without a client certificate, or on plain HTTP: Envoy reports
/// `mtls` false and no certificate attribute either way.
fn without_cert(envoy: &TestEnvoy) -> TestRequest {
    let mut req = request(envoy);
    req.set_attribute(attributes::MTLS, &[0]);
    req
}

fn identity(req: &TestRequest) -> Option<Value> {
    Identity::current(req).map(|id| serde_json::to_value(id).unwrap())
}

fn assert_admitted(f: &TestPolicy<ClientCertificate>, req: &mut TestRequest, principal: &str) {
    assert_eq!(f.send(req), Verdict::Continue, "{:?}", req.response());
    assert!(req.response().is_none());
    assert_eq!(
        identity(req),
        Some(json!({
            "authenticatedBy": "client-certificate",
            "clientId": principal,
            "principal": principal,
        }))
    );
}

fn assert_denied(f: &TestPolicy<ClientCertificate>, req: &mut TestRequest, code: &str) {
    assert_eq!(f.send(req), Verdict::Respond);
    let resp = req.response().expect("a denial");
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], code);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(identity(req), None);
}

fn counter(envoy: &TestEnvoy, outcome: &str) -> i64 {
    envoy.counter(&format!("palisade.client_certificate.{outcome}"))
}

#[test]
fn admits_by_first_uri_san_without_reading_the_certificate_and_hands_off_the_identity() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({"allowedSans": ["spiffe://retail.example/ns/orders/sa/fulfillment"]}),
    );
    let mut req = with_cert(&envoy, &PARTNER);
    assert_admitted(
        &f,
        &mut req,
        "spiffe://retail.example/ns/orders/sa/fulfillment",
    );
    assert_eq!(counter(&envoy, "allowed"), 1);
    assert_eq!(counter(&envoy, "certificate_parsed"), 0);
}

#[test]
fn admits_by_dns_san_case_insensitively() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(&envoy, json!({"allowedSans": ["GW.Partner.EXAMPLE"]}));
    let mut req = with_cert(&envoy, &PARTNER);
    assert_admitted(&f, &mut req, "gw.partner.example");
    assert_eq!(counter(&envoy, "certificate_parsed"), 0);
}

#[test]
fn admits_by_a_later_san_by_reading_the_certificate() {
    let envoy = TestEnvoy::new(1);
    // Envoy's attributes carry the first URI and DNS SAN only; these are the second ones.
    for (entry, principal) in [
        (
            "spiffe://retail.example/ns/orders/sa/billing",
            "spiffe://retail.example/ns/orders/sa/billing",
        ),
        ("second.partner.example", "second.partner.example"),
    ] {
        let f = deploy(&envoy, json!({ "allowedSans": [entry] }));
        let mut req = with_cert(&envoy, &PARTNER);
        assert_admitted(&f, &mut req, principal);
    }
    assert_eq!(counter(&envoy, "certificate_parsed"), 2);
    // Email and IP SANs are not URI or DNS SANs.
    let f = deploy(&envoy, json!({"allowedSans": ["ops.partner.example"]}));
    assert_denied(
        &f,
        &mut with_cert(&envoy, &PARTNER),
        "client_certificate_denied",
    );
}

#[test]
fn admits_by_exact_rfc2253_subject() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({"allowedSubjects": ["CN=partner-gateway,O=Partner Co", LEGACY.subject]}),
    );
    assert_admitted(
        &f,
        &mut with_cert(&envoy, &PARTNER),
        "CN=partner-gateway,O=Partner Co",
    );
    assert_admitted(&f, &mut with_cert(&envoy, &LEGACY), LEGACY.subject);
    // Subjects are compared exactly: another case is another subject.
    let f = deploy(
        &envoy,
        json!({"allowedSubjects": ["CN=Partner-Gateway,O=Partner Co"]}),
    );
    assert_denied(
        &f,
        &mut with_cert(&envoy, &PARTNER),
        "client_certificate_denied",
    );
    // Subject entries never make the policy read the whole certificate.
    assert_eq!(counter(&envoy, "certificate_parsed"), 0);
}

#[test]
fn admits_by_fingerprint_and_names_the_client_from_the_certificate() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({"allowedFingerprints": [PARTNER_FINGERPRINT, LEGACY.sha256.to_ascii_uppercase()]}),
    );
    // The first URI SAN, else the first DNS SAN, else the subject.
    assert_admitted(
        &f,
        &mut with_cert(&envoy, &PARTNER),
        "spiffe://retail.example/ns/orders/sa/fulfillment",
    );
    let dns_only = Cert {
        uri: None,
        ..PARTNER
    };
    assert_admitted(&f, &mut with_cert(&envoy, &dns_only), "gw.partner.example");
    assert_admitted(&f, &mut with_cert(&envoy, &LEGACY), LEGACY.subject);
    let anonymous = Cert {
        subject: "",
        ..LEGACY
    };
    assert_admitted(
        &f,
        &mut with_cert(&envoy, &anonymous),
        &format!("sha256:{}", LEGACY.sha256),
    );
    assert_eq!(counter(&envoy, "allowed"), 4);
}

#[test]
fn a_valid_but_unlisted_certificate_is_denied() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({
            "allowedSans": ["spiffe://retail.example/ns/payments/sa/api"],
            "allowedSubjects": ["CN=someone-else"],
            "allowedFingerprints": [LEGACY.sha256],
        }),
    );
    let mut req = with_cert(&envoy, &PARTNER);
    assert_denied(&f, &mut req, "client_certificate_denied");
    assert_eq!(
        req.response().unwrap().json()["message"],
        "Your client certificate is not allowed to access this API."
    );
    assert_eq!(counter(&envoy, "denied_unlisted"), 1);
    assert_eq!(counter(&envoy, "certificate_parsed"), 1);
    // A certificate without a URI or DNS SAN has no second one: it is not read whole.
    let no_san = Cert {
        uri: None,
        dns: None,
        ..PARTNER
    };
    assert_denied(
        &f,
        &mut with_cert(&envoy, &no_san),
        "client_certificate_denied",
    );
    assert_eq!(counter(&envoy, "denied_unlisted"), 2);
    assert_eq!(counter(&envoy, "certificate_parsed"), 1);
    assert!(envoy
        .logs()
        .iter()
        .any(|(_, line)| line.contains("CN=partner-gateway,O=Partner Co")));
}

#[test]
fn no_certificate_or_plain_http_is_denied_and_headers_never_count() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({
            "allowedSans": ["spiffe://retail.example/ns/orders/sa/fulfillment"],
            "allowedSubjects": ["CN=partner-gateway,O=Partner Co"],
            "allowedFingerprints": [PARTNER_FINGERPRINT],
        }),
    );
    let mut req = without_cert(&envoy);
    assert_denied(&f, &mut req, "client_certificate_required");
    // Everything a client could write to claim a certificate.
    let mut forged = without_cert(&envoy);
    forged
        .add_header(
            "x-forwarded-client-cert",
            &format!(
                "Hash={};URI={};Subject=\"{}\"",
                PARTNER.sha256,
                PARTNER.uri.unwrap_or_default(),
                PARTNER.subject
            ),
        )
        .add_header("x-ssl-client-cert", &PARTNER.pem.replace('\n', "%0A"))
        .add_header("x-ssl-client-s-dn", PARTNER.subject)
        .add_header("x-client-cert-fingerprint", PARTNER_FINGERPRINT)
        .add_header("ssl-client-verify", "SUCCESS");
    assert_denied(&f, &mut forged, "client_certificate_required");
    // A request with no attribute at all (no `mtls` either) is no different.
    assert_denied(&f, &mut request(&envoy), "client_certificate_required");
    assert_eq!(counter(&envoy, "denied_no_certificate"), 3);
    assert_eq!(counter(&envoy, "allowed"), 0);
}

#[test]
fn optional_certificates_pass_unauthenticated_but_a_wrong_one_is_still_denied() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({"allowedSans": ["allowed.example"], "requireCertificate": false}),
    );
    let mut req = without_cert(&envoy);
    assert_eq!(f.send(&mut req), Verdict::Continue);
    assert_eq!(identity(&req), None);
    assert_eq!(counter(&envoy, "allowed_without_certificate"), 1);
    assert_denied(
        &f,
        &mut with_cert(&envoy, &PARTNER),
        "client_certificate_denied",
    );
}

#[test]
fn cors_preflights_without_a_certificate_pass_unless_disabled() {
    let envoy = TestEnvoy::new(1);
    let preflight = |cert: Option<&Cert>| {
        let mut req = envoy.request(0);
        req.add_header(":method", "OPTIONS")
            .add_header(":path", "/orders")
            .add_header("origin", "https://shop.example")
            .add_header("access-control-request-method", "POST")
            .set_attribute(attributes::MTLS, &[0]);
        if let Some(cert) = cert {
            set_cert(&mut req, cert);
        }
        req
    };
    let f = deploy(&envoy, json!({"allowedSans": ["allowed.example"]}));
    let mut req = preflight(None);
    assert_eq!(f.send(&mut req), Verdict::Continue);
    assert_eq!(identity(&req), None);
    assert_eq!(counter(&envoy, "preflight"), 1);
    // A preflight on a connection with an unlisted certificate is not unauthenticated.
    assert_denied(
        &f,
        &mut preflight(Some(&PARTNER)),
        "client_certificate_denied",
    );

    let strict = deploy(
        &envoy,
        json!({"allowedSans": ["allowed.example"], "allowCorsPreflight": false}),
    );
    assert_denied(&strict, &mut preflight(None), "client_certificate_required");
    // An OPTIONS that is not a preflight needs a certificate.
    let mut options = without_cert(&envoy);
    options.add_header(":method", "OPTIONS");
    assert_denied(&f, &mut options, "client_certificate_required");
}

#[test]
fn an_unreadable_certificate_matches_nothing_further() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(&envoy, json!({"allowedSans": ["allowed.example"]}));
    let mut req = with_cert(&envoy, &PARTNER);
    req.set_attribute(
        attributes::CERTIFICATE,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    assert_denied(&f, &mut req, "client_certificate_denied");
    assert_eq!(counter(&envoy, "certificate_unreadable"), 1);
}

#[test]
fn the_denial_can_be_overridden() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({"allowedSans": ["allowed.example"],
               "denial": {"status": 401, "body": "certificate please", "contentType": "text/plain"}}),
    );
    for mut req in [without_cert(&envoy), with_cert(&envoy, &PARTNER)] {
        assert_eq!(f.send(&mut req), Verdict::Respond);
        let resp = req.response().unwrap();
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (401, &b"certificate please"[..])
        );
        assert_eq!(resp.header("content-type"), Some("text/plain"));
    }
}

#[test]
fn a_bad_configuration_is_refused_naming_the_field() {
    let envoy = TestEnvoy::new(2);
    let err = envoy
        .deploy::<ClientCertificate>(r#"{"allowedFingerprints": ["AB:CD"]}"#)
        .unwrap_err();
    assert!(
        err.starts_with("client-certificate: invalid configuration at `allowedFingerprints[0]`"),
        "{err}"
    );
    let err = envoy
        .deploy::<ClientCertificate>(r#"{"allowedSans": ["a.example"], "allowedSan": []}"#)
        .unwrap_err();
    assert!(err.contains("unknown field `allowedSan`"), "{err}");
    let err = envoy.deploy::<ClientCertificate>("").unwrap_err();
    assert!(err.contains("at least one entry"), "{err}");
}

#[test]
fn every_worker_runs_the_policy_and_shares_the_counters() {
    let envoy = TestEnvoy::new(2);
    let f = deploy(&envoy, json!({"allowedSubjects": [PARTNER.subject]}));
    for worker in 0..2 {
        let mut req = f.request(worker);
        req.set_attribute(attributes::MTLS, &[1])
            .set_attribute(attributes::SUBJECT, PARTNER.subject.as_bytes());
        assert_eq!(f.send(&mut req), Verdict::Continue);
        f.done(&mut req);
        let mut req = f.request(worker);
        req.set_attribute(attributes::MTLS, &[0]);
        assert_eq!(f.send(&mut req), Verdict::Respond);
        f.done(&mut req);
    }
    assert_eq!(counter(&envoy, "allowed"), 2);
    assert_eq!(counter(&envoy, "denied_no_certificate"), 2);
    assert_eq!(f.paused(0) + f.paused(1), 0);
}

/// Host calls per request, pinned so a regression shows; prints the rows of `BENCHMARKS.md`
/// ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    let envoy = TestEnvoy::new(1);
    let f = deploy(
        &envoy,
        json!({"allowedSans": ["spiffe://retail.example/ns/orders/sa/fulfillment"]}),
    );
    let mut allowed = with_cert(&envoy, &PARTNER);
    assert_eq!(f.send(&mut allowed), Verdict::Continue);
    let mut unlisted = with_cert(&envoy, &LEGACY);
    assert_eq!(f.send(&mut unlisted), Verdict::Respond);
    let mut none = without_cert(&envoy);
    assert_eq!(f.send(&mut none), Verdict::Respond);
    let (allowed, unlisted, none) = (
        allowed.host_calls(),
        unlisted.host_calls(),
        none.host_calls(),
    );
    println!(
        "{}",
        allowed.markdown_row("client-certificate", "allowed (first URI SAN)")
    );
    println!(
        "{}",
        unlisted.markdown_row("client-certificate", "denied (unlisted)")
    );
    println!(
        "{}",
        none.markdown_row("client-certificate", "denied (no certificate)")
    );
    assert!(allowed.total() <= 2, "{allowed:?}");
}
