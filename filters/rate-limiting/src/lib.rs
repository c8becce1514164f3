//! `rate-limiting`: reject requests over per-key or per-SLA-tier limits.
//!
//! [`config`] reads the configuration, [`window`] is the arithmetic of fixed and sliding windows,
//! and [`RateLimiter`] decides: it finds the key's windows in a bounded table of shared-data
//! slots ([`palisade_kit::slots`]) and counts the request with compare-and-swap, so the number
//! of allowed requests is exact across Envoy's workers. The proxy-wasm glue at the bottom only
//! carries the response headers from the request phase to the response phase.

pub mod config;
pub mod window;

use config::{Config, Limits};
use palisade_kit::identity::Identity;
use palisade_kit::metrics::Counter;
use palisade_kit::shared::Update;
use palisade_kit::slots::{SlotTable, Slotted};
use palisade_kit::{ConfigError, Denial, Host, LogLevel};
use window::{Decision, Limit};

/// The policy name (artifact and metric prefix).
pub const NAME: &str = "rate-limiting";

/// The key of the single bucket when no `keySelector` is configured.
const WHOLE_API_KEY: &str = "*";
/// The key of the bucket shared by requests whose key cannot be read.
const MISSING_KEY: &str = "-";

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

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let it through; with `exposeHeaders`, add these headers to its response.
    Allowed(Option<RateHeaders>),
    /// A local response was sent.
    Denied,
}

struct Counters {
    allowed: Counter,
    rejected: Counter,
    missing_key: Counter,
    key_table_full: Counter,
    store_error: Counter,
    unauthenticated: Counter,
    unknown_tier: Counter,
}

/// The compiled policy.
pub struct RateLimiter {
    config: Config,
    table: SlotTable,
    unavailable: Denial,
    unidentified: Denial,
    unknown_tier: Denial,
    counters: Counters,
}

impl RateLimiter {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let mut counter = |outcome| {
            Counter::define(host, NAME, outcome)
                .map_err(|e| ConfigError::at(".", format!("cannot define metric {outcome}: {e}")))
        };
        let counters = Counters {
            allowed: counter("allowed")?,
            rejected: counter("rejected")?,
            missing_key: counter("missing_key")?,
            key_table_full: counter("key_table_full")?,
            store_error: counter("store_error")?,
            unauthenticated: counter("unauthenticated")?,
            unknown_tier: counter("unknown_tier")?,
        };
        Ok(RateLimiter {
            table: SlotTable::new(&config.prefix, config.max_keys),
            config,
            unavailable: Denial::new(
                503,
                "quota_unavailable",
                "The rate limit state could not be read. Retry later.",
            ),
            unidentified: Denial::new(
                401,
                "client_unidentified",
                "This API's rate limits are per client application: authenticate the client.",
            ),
            unknown_tier: Denial::new(
                403,
                "sla_tier_unknown",
                "The client application has no SLA tier with limits for this API.",
            ),
            counters,
        })
    }

    /// The limits and bucket key of the current request, or the denial to send.
    fn bucket(&self, host: &impl Host) -> Result<(String, &[Limit]), (&Denial, Counter)> {
        match &self.config.limits {
            Limits::Fixed(limits) => {
                let key = match &self.config.key {
                    None => WHOLE_API_KEY.to_owned(),
                    Some(selector) => match selector.evaluate(host, &self.config.source) {
                        Some(value) => format!("k:{value}"),
                        None => {
                            self.counters.missing_key.inc(host);
                            MISSING_KEY.to_owned()
                        }
                    },
                };
                Ok((key, limits))
            }
            Limits::Tiers(tiers) => {
                let identity = Identity::current(host);
                let Some((client, tier)) = identity.and_then(|id| Some((id.client_id?, id.tier)))
                else {
                    return Err((&self.unidentified, self.counters.unauthenticated));
                };
                let Some((name, limits)) = tier.and_then(|t| tiers.get_key_value(&t)) else {
                    return Err((&self.unknown_tier, self.counters.unknown_tier));
                };
                // A client whose tier changes starts counting afresh under its new limits.
                Ok((format!("t:{name}\n{client}"), limits))
            }
        }
    }

    /// Decides on a request whose headers have arrived.
    pub fn on_request(&self, host: &mut impl Host) -> Outcome {
        let (key, limits) = match self.bucket(host) {
            Ok(bucket) => bucket,
            Err((denial, counter)) => {
                counter.inc(host);
                let _ = denial.send(host);
                return Outcome::Denied;
            }
        };
        let now = host.now_ms();
        let algorithm = self.config.algorithm;
        let result = self
            .table
            .update(host, &key, now, window::stored_live_until, |state| {
                let stored = state.and_then(window::decode);
                let (decision, windows) = window::decide(limits, algorithm, stored.as_deref(), now);
                if decision.allowed {
                    let live = limits
                        .iter()
                        .zip(&windows)
                        .map(|(l, w)| w.live_until(*l, algorithm))
                        .max()
                        .unwrap_or(now);
                    Update::Write(window::encode(&windows, live), decision)
                } else {
                    Update::Keep(decision)
                }
            });
        match result {
            Ok(Slotted::Done(decision)) if decision.allowed => {
                self.counters.allowed.inc(host);
                Outcome::Allowed(self.config.expose_headers.then_some(RateHeaders {
                    limit: decision.limit,
                    remaining: decision.remaining,
                    reset_ms: decision.reset_ms,
                }))
            }
            Ok(Slotted::Done(decision)) => {
                self.counters.rejected.inc(host);
                self.reject(host, &decision)
            }
            Ok(Slotted::Full { free_at_ms }) => {
                // Every slot this key may use holds another client's live window: rejecting is
                // the only answer that neither resets nor shares someone else's quota.
                self.counters.key_table_full.inc(host);
                let wait = free_at_ms.saturating_sub(now);
                let decision = Decision {
                    allowed: false,
                    limit: limits.first().map_or(0, |l| l.max),
                    remaining: 0,
                    reset_ms: wait,
                    retry_after_ms: wait,
                };
                self.reject(host, &decision)
            }
            Err(e) => {
                self.counters.store_error.inc(host);
                host.log(
                    LogLevel::Warn,
                    &format!("{NAME}: shared data unavailable: {e:?}"),
                );
                if self.config.block_on_unknown_quota {
                    let _ = self.unavailable.send(host);
                    Outcome::Denied
                } else {
                    Outcome::Allowed(None)
                }
            }
        }
    }

    fn reject(&self, host: &mut impl Host, decision: &Decision) -> Outcome {
        let retry_after = window::retry_after_secs(decision.retry_after_ms).to_string();
        let result = if self.config.expose_headers {
            let (limit, remaining, reset) = (
                decision.limit.to_string(),
                decision.remaining.to_string(),
                decision.reset_ms.to_string(),
            );
            self.config.denial.send_with(
                host,
                &[
                    ("retry-after", &retry_after),
                    ("x-ratelimit-limit", &limit),
                    ("x-ratelimit-remaining", &remaining),
                    ("x-ratelimit-reset", &reset),
                ],
            )
        } else {
            self.config
                .denial
                .send_with(host, &[("retry-after", &retry_after)])
        };
        // If even the local reply fails there is nothing better to do than to stop the request.
        let _ = result;
        Outcome::Denied
    }

    /// Adds the `X-Ratelimit-*` headers to an allowed request's response.
    pub fn add_headers(host: &mut impl Host, headers: &RateHeaders) {
        host.set_response_header("x-ratelimit-limit", &headers.limit.to_string());
        host.set_response_header("x-ratelimit-remaining", &headers.remaining.to_string());
        host.set_response_header("x-ratelimit-reset", &headers.reset_ms.to_string());
    }
}

#[cfg(target_arch = "wasm32")]
mod glue {
    use super::{Outcome, RateHeaders, RateLimiter, NAME};
    use palisade_kit::wasm::{plugin_configuration, WasmHost};
    use palisade_kit::{Denial, Host, LogLevel};
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};
    use std::rc::Rc;

    pub struct Root {
        pub policy: Option<Rc<RateLimiter>>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let mut host = WasmHost;
            match RateLimiter::configure(&plugin_configuration(), &mut host) {
                Ok(policy) => {
                    self.policy = Some(Rc::new(policy));
                    true
                }
                Err(err) => {
                    // Returning false makes Envoy refuse the filter: fail closed.
                    host.log(LogLevel::Error, &format!("{NAME}: {err}"));
                    false
                }
            }
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Stream {
                policy: self.policy.clone(),
                headers: None,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Stream {
        policy: Option<Rc<RateLimiter>>,
        headers: Option<RateHeaders>,
    }

    impl Context for Stream {}

    impl HttpContext for Stream {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            let mut host = WasmHost;
            let Some(policy) = &self.policy else {
                let denial =
                    Denial::new(503, "policy_unavailable", "The policy is not configured.");
                let _ = denial.send(&mut host);
                return Action::Pause;
            };
            match policy.on_request(&mut host) {
                Outcome::Allowed(headers) => {
                    self.headers = headers;
                    Action::Continue
                }
                Outcome::Denied => Action::Pause,
            }
        }

        fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            if let Some(headers) = self.headers.take() {
                RateLimiter::add_headers(&mut WasmHost, &headers);
            }
            Action::Continue
        }
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(glue::Root { policy: None }));
}}

#[cfg(test)]
mod tests;
