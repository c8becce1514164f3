//! `rate-limiting`: reject requests over per-key or per-SLA-tier limits.
//!
//! [`config`] reads the configuration, [`window`] is the arithmetic of fixed and sliding windows,
//! and [`RateLimiter`] decides: it finds the key's windows in a bounded table of shared-data
//! slots ([`palisade_kit::slots`]) and counts the request with compare-and-swap, so the number
//! of allowed requests is exact across Envoy's workers. The proxy-wasm glue at the bottom only
//! carries the response headers from the request phase to the response phase.

pub mod config;
pub mod window;

use config::Config;
use palisade_kit::quota::{self, Quota};
use palisade_kit::shared::Update;
use palisade_kit::slots::{SlotTable, Slotted};
use palisade_kit::{ConfigError, Host};
use window::Decision;

/// The policy name (artifact and metric prefix).
pub const NAME: &str = "rate-limiting";

pub use palisade_kit::quota::RateHeaders;

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let it through; with `exposeHeaders`, add these headers to its response.
    Allowed(Option<RateHeaders>),
    /// A local response was sent.
    Denied,
}

/// The compiled policy.
pub struct RateLimiter {
    config: Config,
    table: SlotTable,
    quota: Quota,
}

impl RateLimiter {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let quota = Quota::define(
            host,
            NAME,
            "This API's rate limits are per client application: authenticate the client.",
        )?;
        Ok(RateLimiter {
            table: SlotTable::new(&config.prefix, config.max_keys),
            config,
            quota,
        })
    }

    /// Decides on a request whose headers have arrived.
    pub fn on_request(&self, host: &mut impl Host) -> Outcome {
        let config = &self.config;
        let Some((key, limits)) =
            self.quota
                .bucket(host, &config.limits, config.key.as_ref(), &config.source)
        else {
            return Outcome::Denied;
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
                self.quota.counters.allowed.inc(host);
                Outcome::Allowed(self.config.expose_headers.then_some(RateHeaders {
                    limit: decision.limit,
                    remaining: decision.remaining,
                    reset_ms: decision.reset_ms,
                }))
            }
            Ok(Slotted::Done(decision)) => {
                self.quota.counters.rejected.inc(host);
                self.reject(host, &decision)
            }
            Ok(Slotted::Full { free_at_ms }) => {
                // Every slot this key may use holds another client's live window: rejecting is
                // the only answer that neither resets nor shares someone else's quota.
                self.quota.counters.key_table_full.inc(host);
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
                if self
                    .quota
                    .store_error(host, NAME, &e, config.block_on_unknown_quota)
                {
                    Outcome::Denied
                } else {
                    Outcome::Allowed(None)
                }
            }
        }
    }

    fn reject(&self, host: &mut impl Host, decision: &Decision) -> Outcome {
        let headers = self.config.expose_headers.then_some(RateHeaders {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
        });
        quota::send_limited(host, &self.config.denial, decision.retry_after_ms, headers);
        Outcome::Denied
    }

    /// Adds the `X-Ratelimit-*` headers to an allowed request's response.
    pub fn add_headers(host: &mut impl Host, headers: &RateHeaders) {
        headers.add_to_response(host);
    }
}

#[cfg(target_arch = "wasm32")]
mod glue {
    use super::{Outcome, RateHeaders, RateLimiter, NAME};
    use palisade_kit::wasm::{configure_policy, WasmHost};
    use palisade_kit::Denial;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};
    use std::rc::Rc;

    pub struct Root {
        pub policy: Option<Rc<RateLimiter>>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            self.policy = configure_policy(NAME, RateLimiter::configure).map(Rc::new);
            self.policy.is_some()
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
