//! What quota policies (`rate-limiting`, `spike-control`) share: where a request's bucket comes
//! from (a `keySelector`, or the SLA tier of the client an auth policy identified), the metrics
//! and prepared denials around it, and the configuration pieces both accept (`ipSource` /
//! `trustedHops`, `tiers`, `maxKeys`, `id`, `denial`).
//!
//! A policy keeps its own limit type `L` (a set of windows, one sliding log, ...): [`Limits`]
//! and [`Quota::bucket`] are generic over it.

use crate::address::AddressSource;
use crate::identity::Identity;
use crate::metrics::Counter;
use crate::selector::Selector;
use crate::shared::{stable_hash, SharedError};
use crate::{ConfigError, Denial, DenialOverride, Host, LogLevel};
use std::collections::BTreeMap;

/// The key of the single bucket when no `keySelector` is configured.
pub const WHOLE_API_KEY: &str = "*";
/// The key of the bucket shared by requests whose key cannot be read.
pub const MISSING_KEY: &str = "-";
/// Largest `maxKeys`.
pub const MAX_KEYS: u32 = 10_000_000;
/// Default `maxKeys`.
pub const DEFAULT_MAX_KEYS: u32 = 100_000;

/// Where the limits come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limits<L> {
    /// The same limits for every key.
    Fixed(L),
    /// SLA mode: the limits of the authenticated client's tier; the key is the client id.
    Tiers(BTreeMap<String, L>),
}

/// The counters every quota policy defines.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    /// Requests let through at once.
    pub allowed: Counter,
    /// Requests rejected at once.
    pub rejected: Counter,
    /// Requests whose key could not be read (they share one bucket).
    pub missing_key: Counter,
    /// Requests rejected because every slot their key may use holds a key at its limit.
    pub key_table_full: Counter,
    /// New keys that took the slot of another key's live state (not at its limit), which then
    /// starts afresh: a steady rate means `maxKeys` is too small, or a flood of new keys.
    pub key_evicted: Counter,
    /// Shared-data failures.
    pub store_error: Counter,
    /// SLA mode without an identified client.
    pub unauthenticated: Counter,
    /// SLA mode with a client whose tier has no limits here.
    pub unknown_tier: Counter,
}

/// Defines `palisade.<policy>.<outcome>`, failing the configuration if the host refuses.
pub fn counter(host: &mut impl Host, policy: &str, outcome: &str) -> Result<Counter, ConfigError> {
    Counter::define(host, policy, outcome)
}

/// The `X-Ratelimit-*` values of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// `X-Ratelimit-Limit`.
    pub limit: u64,
    /// `X-Ratelimit-Remaining`.
    pub remaining: u64,
    /// `X-Ratelimit-Reset`, milliseconds.
    pub reset_ms: u64,
}

impl RateHeaders {
    /// Adds them to an allowed request's response.
    pub fn add_to_response(&self, host: &mut impl Host) {
        host.set_response_header("x-ratelimit-limit", &self.limit.to_string());
        host.set_response_header("x-ratelimit-remaining", &self.remaining.to_string());
        host.set_response_header("x-ratelimit-reset", &self.reset_ms.to_string());
    }
}

/// `Retry-After` in whole seconds (at least 1) for a wait of `ms`.
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// Sends `denial` (the 429) with `Retry-After` for a wait of `retry_after_ms` and, when given
/// (`exposeHeaders`), the `X-Ratelimit-*` values.
pub fn send_limited(
    host: &mut impl Host,
    denial: &Denial,
    retry_after_ms: u64,
    headers: Option<RateHeaders>,
) {
    let retry_after = retry_after_secs(retry_after_ms).to_string();
    let result = match headers {
        Some(h) => {
            let (limit, remaining, reset) = (
                h.limit.to_string(),
                h.remaining.to_string(),
                h.reset_ms.to_string(),
            );
            denial.send_with(
                host,
                &[
                    ("retry-after", &retry_after),
                    ("x-ratelimit-limit", &limit),
                    ("x-ratelimit-remaining", &remaining),
                    ("x-ratelimit-reset", &reset),
                ],
            )
        }
        None => denial.send_with(host, &[("retry-after", &retry_after)]),
    };
    // If even the local reply fails there is nothing better to do than to stop the request.
    let _ = result;
}

/// The shared metrics and prepared denials of a quota policy.
pub struct Quota {
    /// The shared counters.
    pub counters: Counters,
    unavailable: Denial,
    unidentified: Denial,
    unknown_tier: Denial,
}

impl Quota {
    /// Defines the shared counters of `policy` and prepares the denials; `unidentified` is the
    /// message of the 401 sent in SLA mode when no client was identified.
    pub fn define(
        host: &mut impl Host,
        policy: &str,
        unidentified: &str,
    ) -> Result<Self, ConfigError> {
        let counters = Counters {
            allowed: counter(host, policy, "allowed")?,
            rejected: counter(host, policy, "rejected")?,
            missing_key: counter(host, policy, "missing_key")?,
            key_table_full: counter(host, policy, "key_table_full")?,
            key_evicted: counter(host, policy, "key_evicted")?,
            store_error: counter(host, policy, "store_error")?,
            unauthenticated: counter(host, policy, "unauthenticated")?,
            unknown_tier: counter(host, policy, "unknown_tier")?,
        };
        Ok(Quota {
            counters,
            unavailable: Denial::new(
                503,
                "quota_unavailable",
                "The rate limit state could not be read. Retry later.",
            ),
            unidentified: Denial::new(401, "client_unidentified", unidentified),
            unknown_tier: Denial::new(
                403,
                "sla_tier_unknown",
                "The client application has no SLA tier with limits for this API.",
            ),
        })
    }

    /// The bucket key and limits of the current request. With fixed limits the key comes from
    /// `key` (none: one bucket for the whole API; unreadable: the shared missing-key bucket); in
    /// SLA mode it is the identified client's id under its tier. When there is no bucket (no
    /// client, or a tier without limits), the denial is counted and sent and `None` returned.
    pub fn bucket<'l, L>(
        &self,
        host: &mut impl Host,
        limits: &'l Limits<L>,
        key: Option<&Selector>,
        source: &AddressSource,
    ) -> Option<(String, &'l L)> {
        let (denial, counter) = match limits {
            Limits::Fixed(limits) => {
                let key = match key {
                    None => WHOLE_API_KEY.to_owned(),
                    Some(selector) => match selector.evaluate(host, source) {
                        Some(value) => format!("k:{value}"),
                        None => {
                            self.counters.missing_key.inc(host);
                            MISSING_KEY.to_owned()
                        }
                    },
                };
                return Some((key, limits));
            }
            Limits::Tiers(tiers) => {
                let identity = Identity::current(host);
                match identity.and_then(|id| Some((id.client_id?, id.tier))) {
                    None => (&self.unidentified, self.counters.unauthenticated),
                    Some((client, tier)) => match tier.and_then(|t| tiers.get_key_value(&t)) {
                        // A client whose tier changes starts counting afresh under its new
                        // limits.
                        Some((name, limits)) => {
                            return Some((format!("t:{name}\n{client}"), limits))
                        }
                        None => (&self.unknown_tier, self.counters.unknown_tier),
                    },
                }
            }
        };
        counter.inc(host);
        denial.send(host);
        None
    }

    /// Handles a shared-data failure of `policy`: counts and logs it, then with
    /// `blockOnUnknownQuota` sends the 503 and returns true (denied), else returns false (let
    /// the request through).
    pub fn store_error(
        &self,
        host: &mut impl Host,
        policy: &str,
        error: &SharedError,
        block: bool,
    ) -> bool {
        self.counters.store_error.inc(host);
        host.log(
            LogLevel::Warn,
            &format!("{policy}: shared data unavailable: {error:?}"),
        );
        if block {
            self.unavailable.send(host);
        }
        block
    }
}

/// The `ipSource` default.
pub fn default_ip_source() -> String {
    "peer".into()
}

/// The `blockOnUnknownQuota` default.
pub fn default_block_on_unknown_quota() -> bool {
    true
}

/// Checks `maxKeys`.
pub fn check_max_keys(max_keys: u32) -> Result<u32, ConfigError> {
    if (1..=MAX_KEYS).contains(&max_keys) {
        Ok(max_keys)
    } else {
        Err(ConfigError::at(
            "maxKeys",
            format!("must be 1 to {MAX_KEYS}"),
        ))
    }
}

/// Checks an instance `id` (it becomes part of shared-data keys).
pub fn check_id(id: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(
            "id",
            "1-64 characters among letters, digits, `-`, `_` and `.`",
        ))
    }
}

/// The shared-data key prefix of an instance, `palisade:<tag>:<instance>`. Instances must not
/// share counters by accident: the instance is the explicit `id`, or the configuration's hash
/// (two identical configurations on two routes do share; give them ids to separate them).
pub fn instance_prefix(tag: &str, id: Option<&str>, json: &[u8]) -> Result<String, ConfigError> {
    let instance = match id {
        Some(id) => {
            check_id(id)?;
            id.to_owned()
        }
        None => format!("{:016x}", stable_hash(json)),
    };
    Ok(format!("palisade:{tag}:{instance}"))
}

/// Compiles `tiers` (SLA mode): at least one, named, and no `keySelector` beside them (the key
/// is the authenticated client id); `limit` compiles one tier's limits.
pub fn compile_tiers<R, L>(
    tiers: &BTreeMap<String, R>,
    has_key_selector: bool,
    mut limit: impl FnMut(&str, &R) -> Result<L, ConfigError>,
) -> Result<BTreeMap<String, L>, ConfigError> {
    if tiers.is_empty() {
        return Err(ConfigError::at("tiers", "name at least one tier"));
    }
    if has_key_selector {
        return Err(ConfigError::at(
            "keySelector",
            "with `tiers` the key is the authenticated client id",
        ));
    }
    let mut out = BTreeMap::new();
    for (name, raw) in tiers {
        if name.is_empty() {
            return Err(ConfigError::at("tiers", "a tier name cannot be empty"));
        }
        out.insert(name.clone(), limit(name, raw)?);
    }
    Ok(out)
}

/// The 429 with `message`, overridden by the configuration's `denial`.
pub fn rate_limited(message: &str, denial: Option<&DenialOverride>) -> Result<Denial, ConfigError> {
    Denial::new(429, "rate_limited", message).overridden(denial, "denial")
}

/// Test helpers for quota policies' `X-Ratelimit-*` headers.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use crate::host::HeaderMap;
    use crate::runtime::{Policy, Verdict};
    use crate::testing::{TestPolicy, TestRequest};

    /// The `X-Ratelimit-*` headers [`super::RateHeaders`] writes, to compare with.
    pub fn rate_headers(limit: u64, remaining: u64, reset_ms: u64) -> Vec<(String, String)> {
        [
            ("limit", limit),
            ("remaining", remaining),
            ("reset", reset_ms),
        ]
        .iter()
        .map(|(n, v)| (format!("x-ratelimit-{n}"), v.to_string()))
        .collect()
    }

    /// Runs the response phase of `req` (the upstream answered 200 with `upstream` headers),
    /// ends the request, and returns the `X-Ratelimit-*` headers the client gets.
    pub fn response_rate_headers<P: Policy>(
        policy: &TestPolicy<P>,
        req: &mut TestRequest,
        upstream: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        req.add_to(HeaderMap::Response, ":status", "200");
        for (name, value) in upstream {
            req.add_to(HeaderMap::Response, name, value);
        }
        assert_eq!(policy.response_headers(req, true), Verdict::Continue);
        policy.done(req);
        req.map(HeaderMap::Response)
            .into_iter()
            .filter(|(n, _)| n.starts_with("x-ratelimit-"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn config_pieces_name_their_field() {
        assert_eq!(
            AddressSource::from_config("x", None).unwrap_err().path,
            "ipSource"
        );
        assert_eq!(check_max_keys(0).unwrap_err().path, "maxKeys");
        assert_eq!(check_max_keys(MAX_KEYS + 1).unwrap_err().path, "maxKeys");
        assert_eq!(check_max_keys(1).unwrap(), 1);
        assert_eq!(check_id("a b").unwrap_err().path, "id");
        assert_eq!(
            instance_prefix("rl", Some("orders"), b"{}").unwrap(),
            "palisade:rl:orders"
        );
        assert_ne!(
            instance_prefix("rl", None, b"{}").unwrap(),
            instance_prefix("rl", None, b"{ }").unwrap()
        );
        let none: BTreeMap<String, u32> = BTreeMap::new();
        assert_eq!(
            compile_tiers(&none, false, |_, l| Ok(*l)).unwrap_err().path,
            "tiers"
        );
        let one = BTreeMap::from([("gold".to_owned(), 1u32)]);
        assert_eq!(
            compile_tiers(&one, true, |_, l| Ok(*l)).unwrap_err().path,
            "keySelector"
        );
        assert_eq!(compile_tiers(&one, false, |_, l| Ok(*l)).unwrap(), one);
        assert_eq!(rate_limited("slow down", None).unwrap().status(), 429);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }

    #[test]
    fn buckets_by_key_and_missing_key() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        let quota = Quota::define(&mut req, "q", "who?").unwrap();
        let limits = Limits::Fixed(7u32);
        let source = AddressSource::from_config("peer", None).unwrap();
        assert_eq!(
            quota.bucket(&mut req, &limits, None, &source),
            Some((WHOLE_API_KEY.to_owned(), &7))
        );
        let header: Selector = serde_json::from_str(r#""header:x-tenant""#).unwrap();
        assert_eq!(
            quota.bucket(&mut req, &limits, Some(&header), &source),
            Some((MISSING_KEY.to_owned(), &7))
        );
        assert_eq!(envoy.counter("palisade.q.missing_key"), 1);
        req.add_header("x-tenant", "a");
        assert_eq!(
            quota.bucket(&mut req, &limits, Some(&header), &source),
            Some(("k:a".to_owned(), &7))
        );
        let tiers = Limits::Tiers(BTreeMap::from([("gold".to_owned(), 1u32)]));
        assert_eq!(quota.bucket(&mut req, &tiers, None, &source), None);
        assert_eq!(req.response().map(|r| r.status), Some(401));
        assert_eq!(envoy.counter("palisade.q.unauthenticated"), 1);
    }
}
