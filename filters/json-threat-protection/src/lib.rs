//! `json-threat-protection`: rejects request bodies that are not well-formed JSON or exceed
//! structural limits, before any upstream parser sees them.
//!
//! [`config`] reads the configuration, [`scanner`] is the streaming validator, and
//! [`JsonThreatProtection`] ties them to the kit's body-inspection logic
//! ([`palisade_kit::body`]), whose proxy-wasm glue runs it in Envoy.

pub mod config;
pub mod scanner;

use config::Config;
use palisade_kit::body::{BodyPolicy, BodyRules};
use palisade_kit::{ConfigError, Host};
use scanner::{JsonScanner, Limits};

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
            &["application/json"],
            "+json",
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

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    palisade_kit::body::wasm::start::<JsonThreatProtection>();
}}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::body::testing::send;
    use palisade_kit::body::Step;
    use palisade_kit::testing::TestEnvoy;

    fn policy(envoy: &TestEnvoy, config: &str) -> JsonThreatProtection {
        JsonThreatProtection::configure(config.as_bytes(), &mut envoy.request(0)).unwrap()
    }

    #[test]
    fn denial_names_the_limit_and_offset() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxArrayElementCount": 2}"#);
        let (step, resp) = send(&envoy, &p, "application/json", "[1,2]", 2, false);
        assert_eq!((step, resp), (Step::Continue, None));
        let (step, resp) = send(&envoy, &p, "application/json", "[1,2,3]", 2, false);
        assert_eq!(step, Step::Denied);
        let resp = resp.unwrap();
        assert_eq!(resp.status, 400);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json()["error"], "json_threat");
        assert_eq!(
            resp.json()["message"],
            "maxArrayElementCount (2) exceeded at byte 5"
        );
        let (_, resp) = send(&envoy, &p, "application/json", "[1,", 1, true);
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
        assert_eq!(
            send(&envoy, &p, "text/plain", "{{{", 1, false).0,
            Step::Continue
        );
        assert_eq!(
            send(&envoy, &p, "application/vnd.api+json", "{{{", 1, false).0,
            Step::Denied
        );
        let all = policy(&envoy, r#"{"checkAllBodies": true}"#);
        assert_eq!(
            send(&envoy, &all, "text/plain", "{{{", 1, false).0,
            Step::Denied
        );
        assert_eq!(
            send(&envoy, &all, "text/plain", "{}", 1, true).0,
            Step::Continue
        );
    }

    #[test]
    fn body_size_limit_and_denial_override() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxBodyBytes": 8, "denial": {"status": 422}}"#);
        let (step, resp) = send(&envoy, &p, "application/json", "[1,2,3,4,5]", 4, false);
        assert_eq!(step, Step::Denied);
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
    }
}
