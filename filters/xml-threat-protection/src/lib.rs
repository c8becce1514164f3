//! `xml-threat-protection`: rejects request bodies that are not well-formed XML, carry a DTD,
//! or exceed structural limits, before any upstream parser sees them.
//!
//! [`config`] reads the configuration, [`scanner`] is the streaming checker (its DTD states in
//! `scanner/dtd.rs`), and [`XmlThreatProtection`] is a [`BodyPolicy`]: its rules and an
//! [`XmlScanner`] per body; the kit's [`palisade_kit::body`] makes it a policy (decides which
//! bodies are inspected, feeds the scanner, holds the body until the verdict and answers the
//! denial).

pub mod config;
pub mod scanner;

use config::Config;
use palisade_kit::body::{BodyPolicy, BodyRules};
use palisade_kit::{ConfigError, Host};
use scanner::{Limits, XmlScanner};

/// The compiled policy.
pub struct XmlThreatProtection {
    limits: Limits,
    rules: BodyRules,
}

impl BodyPolicy for XmlThreatProtection {
    const NAME: &'static str = "xml-threat-protection";
    type Scanner = XmlScanner;

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(config)?;
        let rules = BodyRules::configure(
            Self::NAME,
            "xml_threat",
            &["application/xml", "text/xml"],
            "+xml",
            &config.body,
            host,
        )?;
        Ok(XmlThreatProtection {
            limits: config.limits,
            rules,
        })
    }

    fn rules(&self) -> &BodyRules {
        &self.rules
    }

    fn scanner(&self) -> XmlScanner {
        XmlScanner::new(self.limits)
    }

    /// The `content-type` charset must be one the scanner reads (see `scanner/prolog.rs`).
    fn scanner_for(&self, content_type: Option<&str>) -> XmlScanner {
        XmlScanner::for_content_type(self.limits, content_type)
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{
    palisade_kit::wasm::start::<XmlThreatProtection>();
}}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::body::testing::send;
    use palisade_kit::testing::{TestEnvoy, TestPolicy};
    use palisade_kit::Direction;
    use palisade_kit::Verdict;

    fn policy(envoy: &TestEnvoy, config: &str) -> TestPolicy<XmlThreatProtection> {
        envoy.deploy::<XmlThreatProtection>(config).unwrap()
    }

    #[test]
    fn denial_names_the_violation_and_offset() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxChildCount": 1}"#);
        let (verdict, resp) = send(&p, "application/xml", "<a><b/></a>", 3, false);
        assert_eq!((verdict, resp), (Verdict::Continue, None));
        let (verdict, resp) = send(&p, "text/xml; charset=utf-8", "<a><b/><c/></a>", 3, false);
        assert_eq!(verdict, Verdict::Respond);
        let resp = resp.unwrap();
        assert_eq!(resp.status, 400);
        assert_eq!(resp.json()["error"], "xml_threat");
        assert_eq!(
            resp.json()["message"],
            "maxChildCount (1) exceeded at byte 8"
        );
        let (_, resp) = send(&p, "application/soap+xml", "<a>", 1, true);
        assert_eq!(
            resp.unwrap().json()["message"],
            "unexpected end of document at byte 3"
        );
        let (_, resp) = send(&p, "application/xml", "<!DOCTYPE a><a/>", 4, false);
        assert_eq!(
            resp.unwrap().json()["message"],
            "DOCTYPE not allowed (allowDtd is false) at byte 8"
        );
        assert_eq!(envoy.counter("palisade.xml_threat_protection.allowed"), 1);
        assert_eq!(
            envoy.counter("palisade.xml_threat_protection.denied_limit"),
            2
        );
        assert_eq!(
            envoy.counter("palisade.xml_threat_protection.denied_malformed"),
            1
        );
    }

    #[test]
    fn content_type_gating_and_check_all_bodies() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, "{}");
        assert_eq!(
            send(&p, "application/json", "<a>", 1, false).0,
            Verdict::Continue
        );
        assert_eq!(
            send(&p, "application/atom+xml", "<a>", 1, false).0,
            Verdict::Respond
        );
        let all = policy(&envoy, r#"{"checkAllBodies": true}"#);
        assert_eq!(
            send(&all, "text/plain", "<a>", 1, false).0,
            Verdict::Respond
        );
    }

    #[test]
    fn the_body_goes_upstream_only_once_accepted() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxNodeDepth": 2}"#);
        let mut req = p.request(0);
        req.add_header("content-type", "application/xml");
        assert_eq!(p.request_headers(&mut req, false), Verdict::Continue);
        assert_eq!(p.request_body(&mut req, b"<a><b>", false), Verdict::Pause);
        assert_eq!(p.request_body(&mut req, b"</b>", false), Verdict::Pause);
        assert!(req.forwarded_body(Direction::Request).is_empty());
        assert_eq!(p.request_body(&mut req, b"</a>", true), Verdict::Continue);
        assert_eq!(req.forwarded_body(Direction::Request), b"<a><b></b></a>");
        p.done(&mut req);

        let mut req = p.request(0);
        assert_eq!(
            p.send_body(&mut req, b"<a><b><c/></b></a>", 3),
            Verdict::Respond
        );
        assert!(req.forwarded_body(Direction::Request).is_empty());
        assert_eq!(req.response().unwrap().status, 400);
        p.done(&mut req);
    }

    #[test]
    fn the_content_type_charset_reaches_the_scanner() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, "{}");
        let (verdict, resp) = send(&p, "text/xml; charset=utf-16", "<a/>", 2, false);
        assert_eq!(verdict, Verdict::Respond);
        assert_eq!(
            resp.unwrap().json()["message"],
            "content-type charset other than UTF-8 or US-ASCII (only those are read) at byte 0"
        );
        let (verdict, resp) = send(&p, "text/xml; charset=us-ascii", "<a>\u{e9}</a>", 2, true);
        assert_eq!(verdict, Verdict::Respond);
        assert_eq!(
            resp.unwrap().json()["message"],
            "non-ASCII byte in a document declared US-ASCII at byte 3"
        );
        let (verdict, resp) = send(&p, "text/xml; charset=UTF-8", "<a>\u{e9}</a>", 2, true);
        assert_eq!((verdict, resp), (Verdict::Continue, None));
        // A repeated content-type, as Envoy joins it: inspected, and its charset refused.
        let joined = "application/xml,text/xml; charset=utf-7";
        let (verdict, resp) = send(&p, joined, "<a/>", 2, true);
        assert_eq!(verdict, Verdict::Respond);
        assert!(resp.unwrap().json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("content-type charset")));
        assert_eq!(
            envoy.counter("palisade.xml_threat_protection.denied_limit"),
            3
        );
    }

    #[test]
    fn an_invalid_configuration_is_refused_naming_the_field() {
        let envoy = TestEnvoy::new(1);
        let refused = envoy.deploy::<XmlThreatProtection>(r#"{"maxNodeDepth": -2}"#);
        let logged = refused.err().unwrap();
        assert!(logged.starts_with("xml-threat-protection: "), "{logged}");
        assert!(logged.contains("maxNodeDepth"), "{logged}");
    }

    /// Host calls per request (headers, then the body in two chunks), pinned so a regression
    /// shows; prints the rows of `BENCHMARKS.md` ("Host calls per request") with
    /// `-- --nocapture`.
    #[test]
    fn host_calls_per_request() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxChildCount": 1}"#);
        let through = |body: &str, expected: Verdict| {
            let mut req = p.request(0);
            req.add_header("content-type", "application/xml");
            assert_eq!(p.request_headers(&mut req, false), Verdict::Continue);
            let (head, tail) = body.as_bytes().split_at(body.len() / 2);
            assert_eq!(p.request_body(&mut req, head, false), Verdict::Pause);
            assert_eq!(p.request_body(&mut req, tail, true), expected);
            req.host_calls()
        };
        let allowed = through(r#"<a><b/></a>"#, Verdict::Continue);
        let denied = through(r#"<a><b/><c/></a>"#, Verdict::Respond);
        println!(
            "{}",
            allowed.markdown_row("xml-threat-protection", "allowed (2 body chunks)")
        );
        println!(
            "{}",
            denied.markdown_row("xml-threat-protection", "denied (limit)")
        );
        assert!(allowed.total() <= 4, "{allowed:?}");
    }
}
