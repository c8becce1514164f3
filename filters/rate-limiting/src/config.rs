//! The `rate-limiting` configuration: the JSON contract and its compilation.

use crate::window::{Algorithm, Limit};
use palisade_kit::address::AddressSource;
use palisade_kit::quota;
use palisade_kit::selector::Selector;
use palisade_kit::{config, ConfigError, Denial, DenialOverride};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Most limits one set may have.
pub const MAX_LIMITS: usize = 16;
/// Longest window: one year.
pub const MAX_PERIOD_MS: u64 = 366 * 24 * 3600 * 1000;
pub use palisade_kit::quota::{check_id, DEFAULT_MAX_KEYS, MAX_KEYS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLimit {
    maximum_requests: u64,
    time_period_in_milliseconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum RawAlgorithm {
    FixedWindow,
    SlidingWindow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    rate_limits: Option<Vec<RawLimit>>,
    #[serde(default)]
    tiers: Option<BTreeMap<String, Vec<RawLimit>>>,
    #[serde(default)]
    key_selector: Option<Selector>,
    #[serde(default = "quota::default_ip_source")]
    ip_source: String,
    #[serde(default)]
    trusted_hops: Option<u32>,
    #[serde(default)]
    expose_headers: bool,
    #[serde(default)]
    algorithm: Option<RawAlgorithm>,
    #[serde(default)]
    max_keys: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default = "quota::default_block_on_unknown_quota")]
    block_on_unknown_quota: bool,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

/// Where the limits come from: the same set for every key, or (SLA mode) the set of the
/// authenticated client's tier, keyed by the client id.
pub type Limits = quota::Limits<Vec<Limit>>;

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// The limits.
    pub limits: Limits,
    /// What a bucket is keyed by (`None`: one bucket for the whole API).
    pub key: Option<Selector>,
    /// How `ip` is resolved.
    pub source: AddressSource,
    /// Whether `X-Ratelimit-*` headers are sent.
    pub expose_headers: bool,
    /// How requests are counted.
    pub algorithm: Algorithm,
    /// Bound on the keys tracked at once (shared-data slots).
    pub max_keys: u32,
    /// Shared-data key prefix of this instance.
    pub prefix: String,
    /// Whether a shared-data failure rejects (true) or lets the request through.
    pub block_on_unknown_quota: bool,
    /// The 429.
    pub denial: Denial,
}

fn compile_limits(raw: &[RawLimit], path: &str) -> Result<Vec<Limit>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::at(path, "list at least one limit"));
    }
    if raw.len() > MAX_LIMITS {
        return Err(ConfigError::at(
            path,
            format!("at most {MAX_LIMITS} limits, got {}", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, l)| {
            if l.maximum_requests == 0 {
                return Err(ConfigError::at(
                    format!("{path}[{i}].maximumRequests"),
                    "must be at least 1",
                ));
            }
            if l.time_period_in_milliseconds == 0 || l.time_period_in_milliseconds > MAX_PERIOD_MS {
                return Err(ConfigError::at(
                    format!("{path}[{i}].timePeriodInMilliseconds"),
                    format!("must be 1 to {MAX_PERIOD_MS} (one year)"),
                ));
            }
            Ok(Limit {
                max: l.maximum_requests,
                period_ms: l.time_period_in_milliseconds,
            })
        })
        .collect()
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let limits = match (&raw.rate_limits, &raw.tiers) {
            (Some(limits), None) => Limits::Fixed(compile_limits(limits, "rateLimits")?),
            (None, Some(tiers)) => Limits::Tiers(quota::compile_tiers(
                tiers,
                raw.key_selector.is_some(),
                |name, limits| compile_limits(limits, &format!("tiers.{name}")),
            )?),
            (Some(_), Some(_)) => return Err(ConfigError::at(
                "tiers",
                "give either `rateLimits` (one set for every key) or `tiers` (SLA mode), not both",
            )),
            (None, None) => {
                return Err(ConfigError::at(
                    "rateLimits",
                    "missing field `rateLimits` (or `tiers` for SLA mode)",
                ))
            }
        };
        let source = AddressSource::from_config(&raw.ip_source, raw.trusted_hops)?;
        let max_keys = quota::check_max_keys(raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS))?;
        let prefix = quota::instance_prefix("rl", raw.id.as_deref(), json)?;
        let denial = quota::rate_limited(
            "Too many requests: the rate limit of this API was reached. Retry later.",
            raw.denial.as_ref(),
        )?;
        Ok(Config {
            limits,
            key: raw.key_selector,
            source,
            expose_headers: raw.expose_headers,
            algorithm: match raw.algorithm {
                None | Some(RawAlgorithm::FixedWindow) => Algorithm::FixedWindow,
                Some(RawAlgorithm::SlidingWindow) => Algorithm::SlidingWindow,
            },
            max_keys,
            prefix,
            block_on_unknown_quota: raw.block_on_unknown_quota,
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
    fn defaults() {
        let c = Config::compile(
            br#"{"rateLimits": [{"maximumRequests": 5, "timePeriodInMilliseconds": 1000}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.limits,
            Limits::Fixed(vec![Limit {
                max: 5,
                period_ms: 1000
            }])
        );
        assert_eq!(c.key, None);
        assert!(!c.expose_headers);
        assert!(c.block_on_unknown_quota);
        assert_eq!(c.algorithm, Algorithm::FixedWindow);
        assert_eq!(c.max_keys, DEFAULT_MAX_KEYS);
        assert_eq!(c.denial.status(), 429);
        assert!(c.prefix.starts_with("palisade:rl:"));
    }

    #[test]
    fn instances_get_distinct_prefixes_unless_they_share_an_id() {
        let a = Config::compile(
            br#"{"rateLimits": [{"maximumRequests": 5, "timePeriodInMilliseconds": 1000}]}"#,
        )
        .unwrap();
        let b = Config::compile(
            br#"{"rateLimits": [{"maximumRequests": 6, "timePeriodInMilliseconds": 1000}]}"#,
        )
        .unwrap();
        assert_ne!(a.prefix, b.prefix);
        let c = Config::compile(br#"{"id": "orders", "rateLimits": [{"maximumRequests": 6, "timePeriodInMilliseconds": 1000}]}"#).unwrap();
        assert_eq!(c.prefix, "palisade:rl:orders");
    }

    #[test]
    fn errors_name_the_field() {
        let l = r#"[{"maximumRequests": 1, "timePeriodInMilliseconds": 1000}]"#;
        for (json, path) in [
            ("{}".to_string(), "rateLimits"),
            (r#"{"rateLimits": []}"#.to_string(), "rateLimits"),
            (
                r#"{"rateLimits": [{"maximumRequests": 0, "timePeriodInMilliseconds": 1}]}"#
                    .to_string(),
                "rateLimits[0].maximumRequests",
            ),
            (
                r#"{"rateLimits": [{"maximumRequests": 1, "timePeriodInMilliseconds": 1}, {"maximumRequests": 1, "timePeriodInMilliseconds": 0}]}"#.to_string(),
                "rateLimits[1].timePeriodInMilliseconds",
            ),
            (
                r#"{"rateLimits": [{"maximumRequests": -1, "timePeriodInMilliseconds": 1}]}"#
                    .to_string(),
                "rateLimits[0].maximumRequests",
            ),
            (
                r#"{"rateLimits": [{"maximumRequests": 1}]}"#.to_string(),
                "rateLimits[0]",
            ),
            (format!(r#"{{"rateLimits": {l}, "keySelector": "nope"}}"#), "keySelector"),
            (format!(r#"{{"rateLimits": {l}, "algorithm": "leaky"}}"#), "algorithm"),
            (format!(r#"{{"rateLimits": {l}, "maxKeys": 0}}"#), "maxKeys"),
            (format!(r#"{{"rateLimits": {l}, "id": "a b"}}"#), "id"),
            (format!(r#"{{"rateLimits": {l}, "ipSource": "x"}}"#), "ipSource"),
            (format!(r#"{{"rateLimits": {l}, "exposeHeader": true}}"#), "exposeHeader"),
            (format!(r#"{{"rateLimits": {l}, "tiers": {{"gold": {l}}}}}"#), "tiers"),
            (r#"{"tiers": {}}"#.to_string(), "tiers"),
            (format!(r#"{{"tiers": {{"gold": {l}}}, "keySelector": "ip"}}"#), "keySelector"),
            (r#"{"tiers": {"gold": []}}"#.to_string(), "tiers.gold"),
            (format!(r#"{{"rateLimits": {l}, "denial": {{"status": 200}}}}"#), "denial.status"),
        ] {
            let e = err(&json);
            assert_eq!(e.path, path, "{json}: {e}");
        }
    }

    #[test]
    fn tiers_compile() {
        let c = Config::compile(
            br#"{"tiers": {"gold": [{"maximumRequests": 10, "timePeriodInMilliseconds": 1000}],
                           "silver": [{"maximumRequests": 2, "timePeriodInMilliseconds": 1000}]},
                 "algorithm": "slidingWindow"}"#,
        )
        .unwrap();
        let Limits::Tiers(t) = c.limits else {
            panic!("not tiers")
        };
        assert_eq!(t["silver"][0].max, 2);
        assert_eq!(c.algorithm, Algorithm::SlidingWindow);
    }
}
