//! Proxy-wasm glue: configuration per VM, the registry fetch on a timer (one fetch per period
//! per Envoy, whichever worker's timer claims it), and the per-request decision.

use crate::registry::Registry;
use crate::{ClientIdEnforcement, NAME};
use palisade_kit::background::{CachedDocument, Schedule, SharedDocument};
use palisade_kit::metrics::Counter;
use palisade_kit::wasm::{
    buffer_bytes, map_value, plugin_configuration, Buffer, HeaderMap, WasmHost,
};
use palisade_kit::{Denial, Host, LogLevel};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

/// Until a copy is loaded, ticks come fast so the first fetch happens at once.
const STARTUP_TICK_MS: u32 = 100;
const STEADY_TICK_MS: u32 = 1_000;
/// After a failed fetch, try again this soon (or at the refresh period, if shorter).
const RETRY_MS: u64 = 5_000;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root { shared: None, pending: None, steady: false }));
}}

/// What the root and HTTP contexts of one VM share.
struct Shared {
    policy: ClientIdEnforcement,
    remote: Option<Remote>,
}

/// The remote registry as this VM sees it.
struct Remote {
    doc: SharedDocument,
    cache: CachedDocument<Registry>,
    schedule: Schedule,
    fetched: Counter,
    fetch_failed: Counter,
    invalid: Counter,
}

impl Remote {
    /// This VM's parsed copy, re-parsed only when a new version was published.
    fn current(&self, host: &WasmHost) -> Option<Rc<Registry>> {
        let parse = |bytes: &[u8]| Registry::parse_document(bytes).ok();
        self.cache
            .get(host, parse)
            .ok()
            .flatten()
            .map(|(registry, _)| registry)
    }
}

struct Root {
    shared: Option<Rc<Shared>>,
    /// The token of the fetch this VM has in flight.
    pending: Option<u32>,
    steady: bool,
}

impl Root {
    fn configure(&mut self, host: &mut WasmHost) -> Result<(), String> {
        let policy = ClientIdEnforcement::configure(&plugin_configuration(), host)
            .map_err(|e| e.to_string())?;
        let remote = match &policy.config().remote {
            None => None,
            Some(r) => {
                let name = r.shared_name();
                let mut counter =
                    |outcome: &str| Counter::define(host, NAME, outcome).map_err(|e| e.to_string());
                let remote = Remote {
                    doc: SharedDocument::new(&name),
                    cache: CachedDocument::new(SharedDocument::new(&name)),
                    schedule: Schedule::new(&name),
                    fetched: counter("registry_fetched")?,
                    fetch_failed: counter("registry_fetch_failed")?,
                    invalid: counter("registry_invalid")?,
                };
                host.set_tick_period_ms(STARTUP_TICK_MS)
                    .map_err(|e| format!("cannot start the registry timer: {e}"))?;
                Some(remote)
            }
        };
        self.shared = Some(Rc::new(Shared { policy, remote }));
        Ok(())
    }

    fn fetch_failed(&self, remote: &Remote, host: &WasmHost, why: &str) {
        let refresh = self
            .shared
            .as_ref()
            .and_then(|s| s.policy.config().remote.as_ref())
            .map_or(RETRY_MS, |r| r.refresh_ms);
        remote.fetch_failed.inc(host);
        host.log(
            LogLevel::Warn,
            &format!("{NAME}: registry fetch failed ({why}); keeping the last good copy"),
        );
        let _ = remote.schedule.reschedule(host, refresh.min(RETRY_MS));
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.pending != Some(token) {
            return;
        }
        self.pending = None;
        let host = WasmHost;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(remote) = &shared.remote else { return };
        // Envoy reports connection failures and timeouts as synthetic 503/504 responses.
        let status = map_value(HeaderMap::HttpCallResponseHeaders, ":status").unwrap_or_default();
        if status != "200" {
            self.fetch_failed(remote, &host, &format!("status {status}"));
            return;
        }
        let body = buffer_bytes(Buffer::HttpCallResponseBody, 0, body_size);
        match Registry::parse_document(&body) {
            Ok(registry) => match remote.doc.publish(&host, &body) {
                Ok(version) => {
                    remote.fetched.inc(&host);
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "{NAME}: registry version {version} loaded: {} clients",
                            registry.len()
                        ),
                    );
                }
                Err(e) => self.fetch_failed(remote, &host, &format!("cannot publish: {e:?}")),
            },
            Err(e) => {
                remote.invalid.inc(&host);
                self.fetch_failed(remote, &host, &format!("invalid document: {e}"));
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut host = WasmHost;
        match self.configure(&mut host) {
            Ok(()) => true,
            Err(e) => {
                host.log(LogLevel::Error, &format!("{NAME}: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let mut host = WasmHost;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let (Some(remote), Some(conf)) = (&shared.remote, &shared.policy.config().remote) else {
            return;
        };
        // Parse a newly published version here rather than on a request's time.
        if remote.current(&host).is_some() && !self.steady {
            self.steady = host.set_tick_period_ms(STEADY_TICK_MS).is_ok();
        }
        if self.pending.is_some()
            || !matches!(remote.schedule.claim(&host, conf.refresh_ms), Ok(true))
        {
            return;
        }
        let headers = [
            (":method", "GET"),
            (":path", conf.path.as_str()),
            (":authority", conf.authority.as_str()),
            ("accept", "application/json"),
        ];
        match host.dispatch_http_call(&conf.cluster, &headers, None, conf.timeout_ms) {
            Ok(token) => self.pending = Some(token),
            Err(e) => self.fetch_failed(
                remote,
                &host,
                &format!("cannot call cluster {:?}: {e}", conf.cluster),
            ),
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    shared: Option<Rc<Shared>>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let mut host = WasmHost;
        let Some(shared) = &self.shared else {
            let _ = Denial::new(503, "policy_unavailable", "The policy is not configured.")
                .send(&mut host);
            return Action::Pause;
        };
        let remote = shared.remote.as_ref().and_then(|r| r.current(&host));
        let outcome = shared.policy.decide(&host, remote.as_deref());
        if shared.policy.apply(&mut host, outcome) {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}
