//! The `spike-control` configuration: Flex's keys and defaults, plus keys, SLA tiers and bounds.

use crate::log::Limit;
use palisade_kit::address::AddressSource;
use palisade_kit::quota;
use palisade_kit::selector::Selector;
use palisade_kit::{config, ConfigError, Denial, DenialOverride};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest `maximumRequests`: the window is an exact log of request times (one entry per
/// millisecond with requests), copied on every check, so it is meant for spike-sized limits.
pub const MAX_REQUESTS: u64 = 10_000;
/// Longest window (one day).
pub const MAX_PERIOD_MS: u64 = 24 * 3600 * 1000;
/// Longest delay between attempts (10 minutes).
pub const MAX_DELAY_MS: u64 = 600_000;
/// Most attempts.
pub const MAX_ATTEMPTS: u32 = 100;
/// Largest `queuingLimit`.
pub const MAX_QUEUE: u32 = 10_000;
pub use palisade_kit::quota::MAX_KEYS;
/// Timer resolution while requests wait: delays are honoured within this much.
pub const TICK_MS: u64 = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTier {
    maximum_requests: u64,
    time_period_in_milliseconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default = "one")]
    maximum_requests: u64,
    #[serde(default = "second")]
    time_period_in_milliseconds: u64,
    #[serde(default = "second")]
    delay_time_in_millis: u64,
    #[serde(default = "one_u32")]
    delay_attempts: u32,
    #[serde(default)]
    queuing_limit: u32,
    #[serde(default)]
    expose_headers: bool,
    #[serde(default)]
    key_selector: Option<Selector>,
    #[serde(default = "quota::default_ip_source")]
    ip_source: String,
    #[serde(default)]
    trusted_hops: Option<u32>,
    #[serde(default)]
    tiers: Option<BTreeMap<String, RawTier>>,
    #[serde(default = "default_max_keys")]
    max_keys: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default = "quota::default_block_on_unknown_quota")]
    block_on_unknown_quota: bool,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn second() -> u64 {
    1000
}
fn default_max_keys() -> u32 {
    quota::DEFAULT_MAX_KEYS
}

/// Where the limit comes from: one limit for every key, or (SLA mode) the limit of the
/// authenticated client's tier, keyed by the client id.
pub type Limits = quota::Limits<Limit>;

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// The limit(s).
    pub limits: Limits,
    /// Time between attempts of a waiting request.
    pub delay_ms: u64,
    /// How many times a waiting request is re-evaluated before it is rejected.
    pub attempts: u32,
    /// How many requests may wait at once per key.
    pub queuing_limit: u32,
    /// Whether `X-Ratelimit-*` headers are sent.
    pub expose_headers: bool,
    /// What a window is keyed by (`None`: one window for the whole API).
    pub key: Option<Selector>,
    /// How `ip` is resolved.
    pub source: AddressSource,
    /// Bound on the keys tracked at once.
    pub max_keys: u32,
    /// Shared-data prefix of this instance.
    pub prefix: String,
    /// Whether a shared-data failure rejects (true) or lets the request through.
    pub block_on_unknown_quota: bool,
    /// The 429.
    pub denial: Denial,
}

impl Config {
    /// Whether requests over the limit may wait at all.
    pub fn queues(&self) -> bool {
        self.queuing_limit > 0 && self.attempts > 0
    }

    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let limit = |max: u64, period: u64, path: &str| -> Result<Limit, ConfigError> {
            if !(1..=MAX_REQUESTS).contains(&max) {
                return Err(ConfigError::at(
                    format!("{path}maximumRequests"),
                    format!("must be 1 to {MAX_REQUESTS}"),
                ));
            }
            if !(1..=MAX_PERIOD_MS).contains(&period) {
                return Err(ConfigError::at(
                    format!("{path}timePeriodInMilliseconds"),
                    format!("must be 1 to {MAX_PERIOD_MS} (one day)"),
                ));
            }
            Ok(Limit {
                max,
                period_ms: period,
            })
        };
        let base = limit(raw.maximum_requests, raw.time_period_in_milliseconds, "")?;
        let limits = match &raw.tiers {
            None => Limits::Fixed(base),
            Some(tiers) => Limits::Tiers(quota::compile_tiers(
                tiers,
                raw.key_selector.is_some(),
                |name, t| {
                    limit(
                        t.maximum_requests,
                        t.time_period_in_milliseconds,
                        &format!("tiers.{name}."),
                    )
                },
            )?),
        };
        if !(1..=MAX_DELAY_MS).contains(&raw.delay_time_in_millis) {
            return Err(ConfigError::at(
                "delayTimeInMillis",
                format!("must be 1 to {MAX_DELAY_MS}"),
            ));
        }
        if raw.delay_attempts > MAX_ATTEMPTS {
            return Err(ConfigError::at(
                "delayAttempts",
                format!("must be 0 to {MAX_ATTEMPTS}"),
            ));
        }
        if raw.queuing_limit > MAX_QUEUE {
            return Err(ConfigError::at(
                "queuingLimit",
                format!("must be 0 to {MAX_QUEUE}"),
            ));
        }
        let max_keys = quota::check_max_keys(raw.max_keys)?;
        let source = AddressSource::from_config(&raw.ip_source, raw.trusted_hops)?;
        let prefix = quota::instance_prefix("sc", raw.id.as_deref(), json)?;
        let denial = quota::rate_limited(
            "Too many requests: the spike limit of this API was reached. Retry later.",
            raw.denial.as_ref(),
        )?;
        Ok(Config {
            limits,
            delay_ms: raw.delay_time_in_millis,
            attempts: raw.delay_attempts,
            queuing_limit: raw.queuing_limit,
            expose_headers: raw.expose_headers,
            key: raw.key_selector,
            source,
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
    fn flex_defaults() {
        let c = Config::compile(b"").unwrap();
        assert_eq!(
            c.limits,
            Limits::Fixed(Limit {
                max: 1,
                period_ms: 1000
            })
        );
        assert_eq!((c.delay_ms, c.attempts, c.queuing_limit), (1000, 1, 0));
        assert!(!c.expose_headers && !c.queues());
        assert_eq!(c.key, None);
        assert!(c.prefix.starts_with("palisade:sc:"));
    }

    #[test]
    fn errors_name_the_field() {
        for (json, path) in [
            (r#"{"maximumRequests": 0}"#, "maximumRequests"),
            (r#"{"maximumRequests": 10001}"#, "maximumRequests"),
            (
                r#"{"timePeriodInMilliseconds": 0}"#,
                "timePeriodInMilliseconds",
            ),
            (r#"{"delayTimeInMillis": 0}"#, "delayTimeInMillis"),
            (r#"{"delayAttempts": 101}"#, "delayAttempts"),
            (r#"{"delayAttempts": -1}"#, "delayAttempts"),
            (r#"{"queuingLimit": 10001}"#, "queuingLimit"),
            (r#"{"maxKeys": 0}"#, "maxKeys"),
            (r#"{"keySelector": "nope"}"#, "keySelector"),
            (r#"{"id": ""}"#, "id"),
            (r#"{"tiers": {}}"#, "tiers"),
            (
                r#"{"tiers": {"gold": {"maximumRequests": 0, "timePeriodInMilliseconds": 1}}}"#,
                "tiers.gold.maximumRequests",
            ),
            (
                r#"{"tiers": {"gold": {"maximumRequests": 1}}}"#,
                "tiers.gold",
            ),
            (
                r#"{"tiers": {"gold": {"maximumRequests": 1, "timePeriodInMilliseconds": 1}}, "keySelector": "ip"}"#,
                "keySelector",
            ),
            (r#"{"queueingLimit": 1}"#, "queueingLimit"),
            (r#"{"denial": {"status": 302}}"#, "denial.status"),
        ] {
            assert_eq!(err(json).path, path, "{json}");
        }
    }
}
