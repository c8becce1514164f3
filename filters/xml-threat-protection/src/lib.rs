//! `xml-threat-protection`: rejects request bodies that are not well-formed XML, carry a DTD,
//! or exceed structural limits, before any upstream parser sees them.
//!
//! [`config`] reads the configuration, [`scanner`] is the streaming checker, and
//! [`XmlThreatProtection`] ties them to the kit's body-inspection logic
//! ([`palisade_kit::body`]), whose proxy-wasm glue runs it in Envoy.

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
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    palisade_kit::body::wasm::start::<XmlThreatProtection>();
}}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::body::testing::send;
    use palisade_kit::body::Step;
    use palisade_kit::testing::TestEnvoy;

    fn policy(envoy: &TestEnvoy, config: &str) -> XmlThreatProtection {
        XmlThreatProtection::configure(config.as_bytes(), &mut envoy.request(0)).unwrap()
    }

    #[test]
    fn denial_names_the_violation_and_offset() {
        let envoy = TestEnvoy::new(1);
        let p = policy(&envoy, r#"{"maxChildCount": 1}"#);
        let (step, resp) = send(&envoy, &p, "application/xml", "<a><b/></a>", 3, false);
        assert_eq!((step, resp), (Step::Continue, None));
        let (step, resp) = send(
            &envoy,
            &p,
            "text/xml; charset=utf-8",
            "<a><b/><c/></a>",
            3,
            false,
        );
        assert_eq!(step, Step::Denied);
        let resp = resp.unwrap();
        assert_eq!(resp.status, 400);
        assert_eq!(resp.json()["error"], "xml_threat");
        assert_eq!(
            resp.json()["message"],
            "maxChildCount (1) exceeded at byte 8"
        );
        let (_, resp) = send(&envoy, &p, "application/soap+xml", "<a>", 1, true);
        assert_eq!(
            resp.unwrap().json()["message"],
            "unexpected end of document at byte 3"
        );
        let (_, resp) = send(&envoy, &p, "application/xml", "<!DOCTYPE a><a/>", 4, false);
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
            send(&envoy, &p, "application/json", "<a>", 1, false).0,
            Step::Continue
        );
        assert_eq!(
            send(&envoy, &p, "application/atom+xml", "<a>", 1, false).0,
            Step::Denied
        );
        let all = policy(&envoy, r#"{"checkAllBodies": true}"#);
        assert_eq!(
            send(&envoy, &all, "text/plain", "<a>", 1, false).0,
            Step::Denied
        );
    }
}
