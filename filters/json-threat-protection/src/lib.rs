//! `json-threat-protection`: rejects request bodies that are not well-formed JSON or exceed
//! structural limits, before any upstream parser sees them.
//!
//! [`config`] reads the configuration, [`scanner`] is the streaming validator, and
//! [`JsonThreatProtection`] is a [`BodyPolicy`]: its rules and a [`JsonScanner`] per body; the kit's
//! [`palisade_kit::body`] makes it a policy (decides which bodies are inspected, feeds the
//! scanner, holds the body until the verdict and answers the denial).

pub mod config;
pub mod scanner;

use config::Config;
use palisade_kit::body::{BodyPolicy, BodyRules};
use palisade_kit::{ConfigError, Host};
use scanner::{JsonScanner, Limits};

/// The media types (besides [`JSON_SUFFIX`]) whose bodies some widely used framework parses as
/// JSON by default, so a gateway that skipped them would let a payload through to a parser:
/// `application/json` (RFC 8259, every framework), `text/json` (ASP.NET Core's JSON input
/// formatters), `text/x-json` and `application/jsonrequest` (Rails registers both as its
/// `:json` type and parses them as JSON params), `application/x-json` (Symfony's `json`
/// request format). Newline-delimited streams (`application/x-ndjson`, `application/jsonl`,
/// `application/json-seq`) are not single documents, so a strict JSON scan would refuse
/// valid ones: they are left out on purpose.
pub const JSON_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "text/json",
    "text/x-json",
    "application/x-json",
    "application/jsonrequest",
];

/// The structured-syntax suffix (RFC 6839) of JSON media types, any type:
/// `application/problem+json`, `application/vnd.api+json`, `application/merge-patch+json`,
/// `application/json-patch+json` (ASP.NET Core, Spring, Flask and Jersey parse `*/*+json`).
pub const JSON_SUFFIX: &str = "+json";

/// The compiled policy.
pub struct JsonThreatProtection {
    limits: Limits,
    rules: BodyRules,
}

impl BodyPolicy for JsonThreatProtection {
    const NAME: &'static str = "json-threat-protection";
    type Scanner = JsonScanner;

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(config)?;
        let rules = BodyRules::configure(
            Self::NAME,
            "json_threat",
            JSON_MEDIA_TYPES,
            JSON_SUFFIX,
            &config.body,
            host,
        )?;
        Ok(JsonThreatProtection {
            limits: config.limits,
            rules,
        })
    }

    fn rules(&self) -> &BodyRules {
        &self.rules
    }

    fn scanner(&self) -> JsonScanner {
        JsonScanner::new(self.limits)
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{
    palisade_kit::wasm::start::<JsonThreatProtection>();
}}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::body::testing::send;
    use palisade_kit::testing::{TestEnvoy, TestPolicy};
    use palisade_kit::Direction;
    use palisade_kit::Verdict;

    fn policy(envoy: &TestEnvoy, config: &str) -> TestPolicy<JsonThreatProtection> {
        envoy.deploy::<JsonThreatProtection>(config).unwrap()
    }

    #[test]
    fn denial_names_the_limit_and_offset() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxArrayElementCount": 2}"#);
        let (verdict, resp) = send(&p, "application/json", "[1,2]", 2, false);
        assert_eq!((verdict, resp), (Verdict::Continue, None));
        let (verdict, resp) = send(&p, "application/json", "[1,2,3]", 2, false);
        assert_eq!(verdict, Verdict::Respond);
        let resp = resp.unwrap();
        assert_eq!(resp.status, 400);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json()["error"], "json_threat");
        assert_eq!(
            resp.json()["message"],
            "maxArrayElementCount (2) exceeded at byte 5"
        );
        let (_, resp) = send(&p, "application/json", "[1,", 1, true);
        assert_eq!(
            resp.unwrap().json()["message"],
            "unexpected end of document at byte 3"
        );
        assert_eq!(envoy.counter("palisade.json_threat_protection.allowed"), 1);
        assert_eq!(
            envoy.counter("palisade.json_threat_protection.denied_limit"),
            1
        );
        assert_eq!(
            envoy.counter("palisade.json_threat_protection.denied_malformed"),
            1
        );
    }

    #[test]
    fn content_type_gating_and_check_all_bodies() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, "{}");
        assert_eq!(send(&p, "text/plain", "{{{", 1, false).0, Verdict::Continue);
        assert_eq!(
            send(&p, "application/vnd.api+json", "{{{", 1, false).0,
            Verdict::Respond
        );
        let all = policy(&envoy, r#"{"checkAllBodies": true}"#);
        assert_eq!(
            send(&all, "text/plain", "{{{", 1, false).0,
            Verdict::Respond
        );
        assert_eq!(send(&all, "text/plain", "{}", 1, true).0, Verdict::Continue);
    }

    #[test]
    fn every_json_media_type_is_inspected_whatever_its_case_and_parameters() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxContainerDepth": 1}"#);
        for media in [
            "application/json",
            "text/json",
            "text/x-json",
            "application/x-json",
            "application/jsonrequest",
            "application/problem+json",
            "application/vnd.api+json",
            "application/merge-patch+json",
            "application/json-patch+json",
            "Text/JSON",
            "text/json; charset=utf-8",
            "APPLICATION/JSON;CHARSET=UTF-8",
            " application/vnd.api+json ; ext=bulk",
        ] {
            let (verdict, resp) = send(&p, media, "[[1]]", 2, false);
            assert_eq!(verdict, Verdict::Respond, "{media}");
            assert_eq!(
                resp.unwrap().json()["message"],
                "maxContainerDepth (1) exceeded at byte 1",
                "{media}"
            );
            assert_eq!(send(&p, media, "[1]", 2, false).0, Verdict::Continue);
        }
        assert_eq!(envoy.counter("palisade.json_threat_protection.skipped"), 0);
    }

    #[test]
    fn streams_of_documents_and_other_types_pass_uninspected_and_are_counted() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxContainerDepth": 1}"#);
        let stream = "[[1]]\n[[2]]\n";
        for media in [
            "application/x-ndjson",
            "application/jsonl",
            "application/json-seq",
            "application/jsonx",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json+xml",
        ] {
            assert_eq!(send(&p, media, stream, 3, false), (Verdict::Continue, None));
        }
        assert_eq!(envoy.counter("palisade.json_threat_protection.skipped"), 7);
        // No content type: inspected (an upstream may read the body as JSON anyway).
        let mut req = p.request(0);
        assert_eq!(p.send_body(&mut req, b"[[1]]", 2), Verdict::Respond);
    }

    #[test]
    fn the_body_goes_upstream_only_once_accepted() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxContainerDepth": 2}"#);
        let mut req = p.request(0);
        req.add_header("content-type", "application/json");
        assert_eq!(p.request_headers(&mut req, false), Verdict::Continue);
        assert_eq!(p.request_body(&mut req, b"[[1],", false), Verdict::Pause);
        assert_eq!(p.request_body(&mut req, b"[2]", false), Verdict::Pause);
        assert!(req.forwarded_body(Direction::Request).is_empty());
        assert_eq!(p.request_body(&mut req, b"]", true), Verdict::Continue);
        assert_eq!(req.forwarded_body(Direction::Request), b"[[1],[2]]");
        p.done(&mut req);

        let mut req = p.request(0);
        assert_eq!(p.send_body(&mut req, b"[[[1]]]", 2), Verdict::Respond);
        assert!(req.forwarded_body(Direction::Request).is_empty());
        assert_eq!(req.response().unwrap().status, 400);
        p.done(&mut req);
    }

    #[test]
    fn body_size_limit_and_denial_override() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxBodyBytes": 8, "denial": {"status": 422}}"#);
        let (verdict, resp) = send(&p, "application/json", "[1,2,3,4,5]", 4, false);
        assert_eq!(verdict, Verdict::Respond);
        let resp = resp.unwrap();
        assert_eq!(resp.status, 422);
        assert_eq!(
            resp.json()["message"],
            "maxBodyBytes (8) exceeded at byte 8"
        );
        let err = JsonThreatProtection::configure(
            br#"{"denial": {"status": 200}}"#,
            &mut envoy.request(0),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "denial.status");
        let refused = envoy.deploy::<JsonThreatProtection>(r#"{"maxDepth": 3}"#);
        let logged = refused.err().unwrap();
        assert!(logged.starts_with("json-threat-protection: "), "{logged}");
        assert!(logged.contains("maxDepth"), "{logged}");
    }

    /// Host calls per request (headers, then the body in two chunks), pinned so a regression
    /// shows; prints the rows of `BENCHMARKS.md` ("Host calls per request") with
    /// `-- --nocapture`.
    #[test]
    fn host_calls_per_request() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxArrayElementCount": 2}"#);
        let through = |body: &str, expected: Verdict| {
            let mut req = p.request(0);
            req.add_header("content-type", "application/json");
            assert_eq!(p.request_headers(&mut req, false), Verdict::Continue);
            let (head, tail) = body.as_bytes().split_at(body.len() / 2);
            assert_eq!(p.request_body(&mut req, head, false), Verdict::Pause);
            assert_eq!(p.request_body(&mut req, tail, true), expected);
            req.host_calls()
        };
        let allowed = through(r#"{"a": [1, 2], "b": "c"}"#, Verdict::Continue);
        let denied = through(r#"[1,2,3]"#, Verdict::Respond);
        println!(
            "{}",
            allowed.markdown_row("json-threat-protection", "allowed (2 body chunks)")
        );
        println!(
            "{}",
            denied.markdown_row("json-threat-protection", "denied (limit)")
        );
        assert!(allowed.total() <= 4, "{allowed:?}");
    }
}
