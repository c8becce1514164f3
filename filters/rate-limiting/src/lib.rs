//! `rate-limiting`: reject requests over per-key or per-SLA-tier limits.
//!
//! [`config`] reads the configuration, [`window`] is the arithmetic of fixed and sliding windows,
//! and [`RateLimiter`] decides: it finds the key's windows in a bounded table of shared-data
//! slots ([`palisade_kit::slots`]) and counts the request with compare-and-swap, so the number
//! of allowed requests is exact across Envoy's workers. With `exposeHeaders`, an allowed
//! request's `X-Ratelimit-*` values are its per-request state, added in the response phase.

pub mod config;
pub mod window;

use config::Config;
use palisade_kit::quota::{self, Quota, RateHeaders};
use palisade_kit::shared::HashKey;
use palisade_kit::slots::{Change, SlotTable, Slotted};
use palisade_kit::{ConfigError, Host, Policy, Request, Verdict};
use window::Decision;

/// The compiled policy.
pub struct RateLimiter {
    config: Config,
    table: SlotTable,
    quota: Quota,
}

impl RateLimiter {
    /// The `X-Ratelimit-*` values of a decision, with `exposeHeaders`.
    fn headers(&self, decision: &Decision) -> Option<RateHeaders> {
        self.config.expose_headers.then_some(RateHeaders {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
        })
    }

    fn reject(&self, host: &mut impl Host, decision: &Decision) -> Verdict {
        let headers = self.headers(decision);
        quota::send_limited(host, &self.config.denial, decision.retry_after_ms, headers);
        Verdict::Respond
    }
}

impl Policy for RateLimiter {
    const NAME: &'static str = "rate-limiting";
    /// The `X-Ratelimit-*` headers to add to an allowed request's response.
    type State = Option<RateHeaders>;

    fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let quota = Quota::define(
            host,
            Self::NAME,
            "This API's rate limits are per client application: authenticate the client.",
        )?;
        Ok(RateLimiter {
            table: SlotTable::new(&config.prefix, config.max_keys, HashKey::configured(host)?),
            config,
            quota,
        })
    }

    fn on_request_headers(
        &self,
        request: &mut Request<'_, Option<RateHeaders>>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        let config = &self.config;
        let Some((key, limits)) =
            self.quota
                .bucket(host, &config.limits, config.key.as_ref(), &config.source)
        else {
            return Verdict::Respond;
        };
        let now = host.now_ms();
        let algorithm = self.config.algorithm;
        let result = self.table.update(host, &key, now, |state| {
            let stored = state.and_then(window::decode);
            let (decision, windows) = window::decide(limits, algorithm, stored.as_deref(), now);
            if decision.allowed {
                let standing = window::standing(limits, algorithm, &windows, now);
                Change::Write(window::encode(&windows), standing, decision)
            } else {
                Change::Keep(decision)
            }
        });
        let decision = match result {
            Ok(Slotted::Done(decision)) => decision,
            Ok(Slotted::Evicted(decision)) => {
                // Another key's state (not at its limit) made room: it starts afresh.
                self.quota.counters.key_evicted.inc(host);
                decision
            }
            Ok(Slotted::Full { free_at_ms }) => {
                // Every slot this key may use holds a key at its limit: evicting one would hand
                // it a fresh quota, so the newcomer waits until the first of them may go.
                self.quota.counters.key_table_full.inc(host);
                let wait = free_at_ms.saturating_sub(now);
                let decision = Decision {
                    allowed: false,
                    limit: limits.first().map_or(0, |l| l.max),
                    remaining: 0,
                    reset_ms: wait,
                    retry_after_ms: wait,
                };
                return self.reject(host, &decision);
            }
            Err(e) => {
                let block = config.block_on_unknown_quota;
                return if self.quota.store_error(host, Self::NAME, &e, block) {
                    Verdict::Respond
                } else {
                    Verdict::Continue
                };
            }
        };
        if decision.allowed {
            self.quota.counters.allowed.inc(host);
            *request.state = self.headers(&decision);
            Verdict::Continue
        } else {
            self.quota.counters.rejected.inc(host);
            self.reject(host, &decision)
        }
    }

    fn on_response_headers(
        &self,
        request: &mut Request<'_, Option<RateHeaders>>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        if let Some(headers) = request.state.take() {
            headers.add_to_response(host);
        }
        Verdict::Continue
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<RateLimiter>(); }}

#[cfg(test)]
mod tests;
