//! The `ip-filter` configuration: the JSON contract and its compilation.

use crate::ipset::{IpSet, IpSetBuilder};
use palisade_kit::address::AddressSource;
use palisade_kit::{config, ConfigError, Denial, DenialOverride};
use serde::Deserialize;

/// Whether listed addresses are the only ones admitted or the ones turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only listed addresses pass (the default: fail closed).
    #[default]
    Allowlist,
    /// Listed addresses are denied; everyone else passes.
    Blocklist,
}

/// The configuration as written (camelCase JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    mode: Mode,
    ips: Vec<String>,
    #[serde(default = "default_source")]
    ip_source: String,
    #[serde(default)]
    trusted_hops: Option<u32>,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

fn default_source() -> String {
    "peer".into()
}

/// The compiled configuration.
pub struct Config {
    /// Allowlist or blocklist.
    pub mode: Mode,
    /// The listed ranges.
    pub ips: IpSet,
    /// Where the client address comes from.
    pub source: AddressSource,
    /// The response for denied requests.
    pub denial: Denial,
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        if raw.ips.is_empty() {
            return Err(ConfigError::at(
                "ips",
                "list at least one address, CIDR or octet prefix",
            ));
        }
        let mut builder = IpSetBuilder::default();
        for (i, entry) in raw.ips.iter().enumerate() {
            builder
                .add(entry)
                .map_err(|msg| ConfigError::at(format!("ips[{i}]"), msg))?;
        }
        let source = AddressSource::from_config(&raw.ip_source, raw.trusted_hops)?;
        let denial = Denial::new(
            403,
            "ip_denied",
            "Your IP address is not allowed to access this API.",
        )
        .overridden(raw.denial.as_ref(), "denial")?;
        Ok(Config {
            mode: raw.mode,
            ips: builder.build(),
            source,
            denial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        match Config::compile(json.as_bytes()) {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_to_a_peer_allowlist() {
        let c = Config::compile(br#"{"ips": ["10.0.0.1"]}"#).unwrap();
        assert_eq!(c.mode, Mode::Allowlist);
        assert_eq!(c.source, AddressSource::Peer);
        assert_eq!(c.denial.status(), 403);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(r#"{"ips": ["10.0.0.1", "10.0.0.300"]}"#).path, "ips[1]");
        assert!(err(r#"{"ips": ["10.0.0.1", "10.0.0.300"]}"#)
            .message
            .contains("10.0.0.300"));
        assert_eq!(err(r#"{"ips": []}"#).path, "ips");
        assert!(err("{}").message.contains("missing field `ips`"));
        assert_eq!(
            err(r#"{"ips": ["1.1.1.1"], "mode": "denylist"}"#).path,
            "mode"
        );
        assert_eq!(
            err(r#"{"ips": ["1.1.1.1"], "ipSource": "body"}"#).path,
            "ipSource"
        );
        assert_eq!(
            err(r#"{"ips": ["1.1.1.1"], "ipSource": "xff", "trustedHops": 0}"#).path,
            "trustedHops"
        );
        assert_eq!(
            err(r#"{"ips": ["1.1.1.1"], "trustedHops": 2}"#).path,
            "trustedHops"
        );
        assert_eq!(
            err(r#"{"ips": ["1.1.1.1"], "ipsource": "xff"}"#).path,
            "ipsource"
        );
        assert_eq!(
            err(r#"{"ips": ["1.1.1.1"], "denial": {"status": 99}}"#).path,
            "denial.status"
        );
    }
}
