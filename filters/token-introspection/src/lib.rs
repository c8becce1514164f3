//! `token-introspection`: asks an OAuth 2.0 authorization server whether an access token is
//! active (RFC 7662) and caches the answer in shared data for every worker.
//!
//! [`config`] compiles the configuration; [`TokenIntrospection`] decides: a cached answer (keyed
//! by SHA-256 of the token, never the token) is applied at once, otherwise the request pauses
//! while the server is asked. The proxy-wasm glue at the bottom moves bytes only.

pub mod config;

use config::{Config, Criteria};
use palisade_kit::address::AddressSource;
use palisade_kit::identity::{Identity, PROPERTY_PATH};
use palisade_kit::metrics::Counter;
use palisade_kit::selector::Selector;
use palisade_kit::shared::SlotCache;
use palisade_kit::{ConfigError, Denial, Host, LogLevel, Verdict};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The policy name.
pub const NAME: &str = "token-introspection";

/// The `x-agw-*` headers of the response members RFC 7662 defines (section 2.2).
const STANDARD_HEADERS: [&str; 12] = [
    "x-agw-active",
    "x-agw-scope",
    "x-agw-client_id",
    "x-agw-username",
    "x-agw-token_type",
    "x-agw-exp",
    "x-agw-iat",
    "x-agw-nbf",
    "x-agw-sub",
    "x-agw-aud",
    "x-agw-iss",
    "x-agw-jti",
];

/// The largest introspection response accepted.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What to do with a request whose headers arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Decided (let through, or answered with a denial).
    Done(Verdict),
    /// Ask the server: send `body` with the headers of [`TokenIntrospection::call_headers`],
    /// then pass the answer to [`TokenIntrospection::complete`] with `key`.
    Introspect {
        /// The cache key (hex SHA-256 of the token).
        key: String,
        /// The form body.
        body: Vec<u8>,
    },
}

/// What the server said about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// No usable answer (unreachable, timeout, non-200, garbage): fail closed.
    Unavailable,
    /// Not active (revoked, unknown, expired at the server).
    Inactive,
    /// Active, with the response's fields and `exp` in ms.
    Active(Map<String, Value>, Option<u64>),
}

/// An answer turned into what to do with a request, prepared once per VM and reused for every
/// request with the same token while it is cached.
#[derive(Debug, Clone, PartialEq)]
enum Prepared {
    Unavailable,
    Invalid,
    Forbidden,
    Allowed {
        /// `x-agw-*` headers to set (with `exposeHeaders`).
        headers: Vec<(String, String)>,
        /// The serialized identity for later policies.
        identity: Vec<u8>,
    },
}

/// This VM's copy of recent answers, in front of the shared cache: a hit costs no shared-data
/// read and no JSON parsing. Entries expire with the shared ones; the map is bounded.
#[derive(Default)]
struct LocalCache {
    entries: HashMap<String, (u64, Rc<Prepared>)>,
}

impl LocalCache {
    fn get(&mut self, key: &str, now: u64) -> Option<Rc<Prepared>> {
        let (expires, prepared) = self.entries.get(key)?;
        if *expires > now {
            return Some(prepared.clone());
        }
        self.entries.remove(key);
        None
    }

    fn put(&mut self, key: &str, expires: u64, prepared: Rc<Prepared>, capacity: usize, now: u64) {
        if capacity == 0 || expires <= now {
            return;
        }
        if self.entries.len() >= capacity {
            self.entries.retain(|_, (e, _)| *e > now);
        }
        if self.entries.len() >= capacity {
            if let Some(victim) = self.entries.keys().next().cloned() {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(key.to_owned(), (expires, prepared));
    }
}

/// Whether a request leads the introspection of its token or waits for another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No call for this token is in flight in this VM: make it.
    Leader,
    /// A call for this token is in flight in this VM: wait for its answer.
    Waiter,
}

/// The introspections in flight in this VM and the requests waiting for each, so concurrent
/// requests with the same uncached token make one call per VM instead of one each.
#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<String, Vec<u32>>,
}

impl InFlight {
    /// Registers request `context_id` for the token cached under `key`.
    pub fn join(&mut self, key: &str, context_id: u32) -> Role {
        match self.pending.get_mut(key) {
            Some(waiters) => {
                waiters.push(context_id);
                Role::Waiter
            }
            None => {
                self.pending.insert(key.to_owned(), Vec::new());
                Role::Leader
            }
        }
    }

    /// The call for `key` is over: the requests that waited for it.
    pub fn finish(&mut self, key: &str) -> Vec<u32> {
        self.pending.remove(key).unwrap_or_default()
    }

    /// Number of calls in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

struct Metrics {
    coalesced: Counter,
    allowed: Counter,
    missing_token: Counter,
    invalid_token: Counter,
    forbidden: Counter,
    unavailable: Counter,
    cache_hit: Counter,
    introspected: Counter,
    preflight: Counter,
}

/// The compiled policy of one VM.
pub struct TokenIntrospection {
    config: Config,
    cache: Option<SlotCache>,
    local: RefCell<LocalCache>,
    metrics: Metrics,
}

/// Percent-encodes a form value (RFC 3986 unreserved characters stay).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bearer token of a selected value (only the `Bearer` scheme from `Authorization`).
fn bearer(source: &Selector, raw: String) -> Option<String> {
    let trimmed = raw.trim();
    let scheme = trimmed
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("bearer "));
    let token = match (source, scheme) {
        (_, Some(_)) => trimmed[7..].trim_start(),
        (Selector::Header(name), None) if name == "authorization" => return None,
        (_, None) => trimmed,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

fn deny(host: &mut impl Host, denial: &Denial) -> Verdict {
    // If even the local reply fails there is nothing better to do than to stop the request.
    let _ = denial.send(host);
    Verdict::Respond
}

impl TokenIntrospection {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let counter = |host: &mut _, outcome| Counter::define(host, NAME, outcome);
        let metrics = Metrics {
            coalesced: counter(host, "coalesced")?,
            allowed: counter(host, "allowed")?,
            missing_token: counter(host, "missing_token")?,
            invalid_token: counter(host, "invalid_token")?,
            forbidden: counter(host, "forbidden")?,
            unavailable: counter(host, "unavailable")?,
            cache_hit: counter(host, "cache_hit")?,
            introspected: counter(host, "introspected")?,
            preflight: counter(host, "preflight")?,
        };
        let cache = (config.max_entries > 0).then(|| {
            // One cache per server and credentials: another client may see other answers.
            let scope = palisade_kit::shared::stable_hash(
                format!(
                    "{}\n{}\n{}",
                    config.cluster, config.path, config.authorization
                )
                .as_bytes(),
            );
            SlotCache::new(
                &format!("palisade:token-introspection:{scope:016x}"),
                config.max_entries,
                config.ttl_ms.max(config.inactive_ttl_ms),
            )
        });
        Ok(TokenIntrospection {
            config,
            cache,
            local: RefCell::new(LocalCache::default()),
            metrics,
        })
    }

    /// The cluster, headers and timeout of an introspection call.
    pub fn call_headers(&self) -> (&str, Vec<(&str, &str)>, u32) {
        let c = &self.config;
        (
            &c.cluster,
            vec![
                (":method", "POST"),
                (":path", &c.path),
                (":authority", &c.authority),
                (":scheme", "http"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/json"),
                ("authorization", &c.authorization),
            ],
            c.timeout_ms,
        )
    }

    /// Decides from the cache, or says to ask the server.
    pub fn start(&self, host: &mut impl Host) -> Start {
        if self.config.allow_preflight && palisade_kit::cors::is_preflight(host) {
            self.metrics.preflight.inc(host);
            return Start::Done(Verdict::Continue);
        }
        let token = self
            .config
            .source
            .evaluate(host, &AddressSource::Peer)
            .and_then(|raw| bearer(&self.config.source, raw));
        let Some(token) = token else {
            self.metrics.missing_token.inc(host);
            return Start::Done(deny(host, &self.config.denials.missing));
        };
        let key = hex(&palisade_kit::secret::sha256(token.as_bytes()));
        let now = host.now_ms();
        let local = self.local.borrow_mut().get(&key, now);
        if let Some(prepared) = local {
            self.metrics.cache_hit.inc(host);
            return Start::Done(self.apply_prepared(host, &prepared));
        }
        if let Some(cache) = &self.cache {
            if let Ok(Some(entry)) = cache.get(host, &key) {
                if let Some(verdict) = self.apply_cached(host, &key, &entry) {
                    self.metrics.cache_hit.inc(host);
                    return Start::Done(verdict);
                }
            }
        }
        let body = format!("token={}&token_type_hint=access_token", form_encode(&token));
        Start::Introspect {
            key,
            body: body.into_bytes(),
        }
    }

    /// The call could not be started: fail closed.
    pub fn call_failed(&self, host: &mut impl Host, why: &str) -> Verdict {
        host.log(
            LogLevel::Warn,
            &format!(
                "token-introspection: cannot call cluster {:?}: {why}",
                self.config.cluster
            ),
        );
        self.metrics.unavailable.inc(host);
        deny(host, &self.config.denials.unavailable)
    }

    /// Handles the server's answer for the token cached under `key`: caches it and decides.
    pub fn complete(
        &self,
        host: &mut impl Host,
        key: &str,
        status: Option<u16>,
        body: &[u8],
    ) -> Verdict {
        let answer = self.answer(host, key, status, body);
        self.apply_answer(host, &answer)
    }

    /// Reads the server's answer for the token cached under `key` and caches it (failures are
    /// not cached).
    pub fn answer(&self, host: &impl Host, key: &str, status: Option<u16>, body: &[u8]) -> Answer {
        self.metrics.introspected.inc(host);
        let parsed = (status == Some(200) && body.len() <= MAX_RESPONSE_BYTES)
            .then(|| serde_json::from_slice::<Map<String, Value>>(body).ok())
            .flatten()
            .filter(|m| m.get("active").is_some_and(Value::is_boolean));
        let Some(fields) = parsed else {
            // Per request, so not above debug (counted in `unavailable`).
            host.log(
                LogLevel::Debug,
                &format!(
                    "token-introspection: unusable answer (status {})",
                    status.map_or("none".into(), |s| s.to_string())
                ),
            );
            return Answer::Unavailable;
        };
        let now = host.now_ms();
        let active = fields.get("active") == Some(&Value::Bool(true));
        let exp_ms = fields
            .get("exp")
            .and_then(Value::as_u64)
            .map(|e| e.saturating_mul(1000));
        let expires = if active {
            let cap = now + self.config.ttl_ms;
            exp_ms.map_or(cap, |e| e.min(cap))
        } else {
            now + self.config.inactive_ttl_ms
        };
        let mut entry = expires.to_le_bytes().to_vec();
        if active {
            entry.extend_from_slice(body);
        }
        if let Some(cache) = &self.cache {
            if expires > now {
                let _ = cache.put(host, key, &entry);
            }
        }
        let answer = if active {
            Answer::Active(fields, exp_ms)
        } else {
            Answer::Inactive
        };
        let prepared = Rc::new(self.prepare(&answer, now));
        self.remember(key, expires, prepared, now);
        answer
    }

    /// Decides on the current request from an answer.
    pub fn apply_answer(&self, host: &mut impl Host, answer: &Answer) -> Verdict {
        let prepared = self.prepare(answer, host.now_ms());
        self.apply_prepared(host, &prepared)
    }

    /// Counts a request that waited for another request's call.
    pub fn coalesced(&self, host: &impl Host) {
        self.metrics.coalesced.inc(host);
    }

    fn remember(&self, key: &str, expires: u64, prepared: Rc<Prepared>, now: u64) {
        let capacity = self.config.max_entries as usize;
        self.local
            .borrow_mut()
            .put(key, expires, prepared, capacity, now);
    }

    /// Applies a shared cache entry (`expires_ms | answer body`, empty body: inactive) and keeps
    /// it in this VM; `None` if it expired (ask again).
    fn apply_cached(&self, host: &mut impl Host, key: &str, entry: &[u8]) -> Option<Verdict> {
        let expires = u64::from_le_bytes(entry.get(..8)?.try_into().ok()?);
        let now = host.now_ms();
        if expires <= now {
            return None;
        }
        let body = &entry[8..];
        let answer = if body.is_empty() {
            Answer::Inactive
        } else {
            Answer::Active(serde_json::from_slice(body).ok()?, None)
        };
        let prepared = Rc::new(self.prepare(&answer, now));
        self.remember(key, expires, prepared.clone(), now);
        Some(self.apply_prepared(host, &prepared))
    }

    /// Turns an answer into what to do with requests carrying the token.
    fn prepare(&self, answer: &Answer, now: u64) -> Prepared {
        let (fields, exp_ms) = match answer {
            Answer::Unavailable => return Prepared::Unavailable,
            Answer::Inactive => return Prepared::Invalid,
            Answer::Active(fields, exp_ms) => (fields, exp_ms),
        };
        if exp_ms.is_some_and(|e| e <= now) {
            return Prepared::Invalid;
        }
        if !self.config.scopes.is_empty() {
            let granted: Vec<&str> = fields
                .get("scope")
                .and_then(Value::as_str)
                .map(|s| s.split_whitespace().collect())
                .unwrap_or_default();
            let has = |s: &String| granted.contains(&s.as_str());
            let ok = match self.config.criteria {
                Criteria::AND => self.config.scopes.iter().all(has),
                Criteria::OR => self.config.scopes.iter().any(has),
            };
            if !ok {
                return Prepared::Forbidden;
            }
        }
        let mut headers = Vec::new();
        if self.config.expose_headers {
            for (name, value) in fields {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => continue,
                };
                let name_ok = name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                let value_ok = value.bytes().all(|b| (b' '..=b'~').contains(&b));
                if name_ok && value_ok && !name.is_empty() {
                    headers.push((format!("x-agw-{}", name.to_ascii_lowercase()), value));
                }
            }
        }
        let text = |n: &str| fields.get(n).and_then(Value::as_str).map(str::to_owned);
        let identity = Identity {
            authenticated_by: NAME.into(),
            client_id: text("client_id"),
            principal: text("sub").or_else(|| text("username")),
            claims: fields.clone(),
            ..Identity::default()
        };
        Prepared::Allowed {
            headers,
            identity: serde_json::to_vec(&identity).unwrap_or_default(),
        }
    }

    fn apply_prepared(&self, host: &mut impl Host, prepared: &Prepared) -> Verdict {
        match prepared {
            Prepared::Unavailable => {
                self.metrics.unavailable.inc(host);
                deny(host, &self.config.denials.unavailable)
            }
            Prepared::Invalid => {
                self.metrics.invalid_token.inc(host);
                deny(host, &self.config.denials.invalid)
            }
            Prepared::Forbidden => {
                self.metrics.forbidden.inc(host);
                deny(host, &self.config.denials.scope)
            }
            Prepared::Allowed { headers, identity } => {
                if self.config.expose_headers {
                    // A client must not pass off its own `x-agw-*` headers as the server's:
                    // the RFC 7662 fields are removed whether or not this answer has them
                    // (other fields are replaced when the answer has them).
                    for header in STANDARD_HEADERS {
                        host.remove_request_header(header);
                    }
                    for (name, value) in headers {
                        host.set_request_header(name, value);
                    }
                }
                if host.set_property(PROPERTY_PATH, identity).is_err() {
                    host.log(LogLevel::Warn, "token-introspection: identity not recorded");
                }
                self.metrics.allowed.inc(host);
                Verdict::Continue
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod glue {
    //! The proxy-wasm contexts: configure once per VM; per request, decide from the cache or
    //! pause and call the server (one call per token per VM: later requests with the same token
    //! wait for it), and resume or deny every waiting request when it answers.
    use super::*;
    use palisade_kit::wasm::{
        buffer_bytes, configure_policy, map_value, resume_http_request, set_effective_context,
        Buffer, HeaderMap, WasmHost,
    };
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};
    use std::cell::RefCell;
    use std::rc::Rc;

    struct Root {
        policy: Option<Rc<TokenIntrospection>>,
        flights: Rc<RefCell<InFlight>>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            self.policy = configure_policy(NAME, TokenIntrospection::configure).map(Rc::new);
            self.policy.is_some()
        }

        fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Stream {
                policy: self.policy.clone(),
                flights: self.flights.clone(),
                context_id,
                leading: None,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Stream {
        policy: Option<Rc<TokenIntrospection>>,
        flights: Rc<RefCell<InFlight>>,
        context_id: u32,
        /// The cache key of the token this request is introspecting for itself and waiters.
        leading: Option<String>,
    }

    impl Stream {
        /// Answers the requests that waited for `key`, then makes this request current again.
        fn release_waiters(&self, policy: &TokenIntrospection, key: &str, answer: &Answer) {
            let waiters = self.flights.borrow_mut().finish(key);
            if waiters.is_empty() {
                return;
            }
            let mut host = WasmHost;
            for waiter in waiters {
                // A waiter whose client went away is gone: nothing to answer.
                if set_effective_context(waiter).is_ok() {
                    policy.coalesced(&host);
                    if policy.apply_answer(&mut host, answer) == Verdict::Continue {
                        let _ = resume_http_request();
                    }
                }
            }
            let _ = set_effective_context(self.context_id);
        }
    }

    impl Drop for Stream {
        fn drop(&mut self) {
            // The leading request went away before the answer: its waiters cannot get one, so
            // they fail closed (503) rather than hang.
            if let (Some(policy), Some(key)) = (self.policy.clone(), self.leading.take()) {
                self.release_waiters(&policy, &key, &Answer::Unavailable);
            }
        }
    }

    impl Context for Stream {
        fn on_http_call_response(
            &mut self,
            _token: u32,
            _headers: usize,
            body_size: usize,
            _trailers: usize,
        ) {
            let (Some(policy), Some(key)) = (self.policy.clone(), self.leading.take()) else {
                return;
            };
            let mut host = WasmHost;
            let status = map_value(HeaderMap::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.parse().ok());
            let body = buffer_bytes(
                Buffer::HttpCallResponseBody,
                0,
                body_size.min(MAX_RESPONSE_BYTES + 1),
            );
            let answer = policy.answer(&host, &key, status, &body);
            if policy.apply_answer(&mut host, &answer) == Verdict::Continue {
                let _ = resume_http_request();
            }
            self.release_waiters(&policy, &key, &answer);
        }
    }

    impl HttpContext for Stream {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            let mut host = WasmHost;
            let Some(policy) = self.policy.clone() else {
                let denial =
                    Denial::new(503, "policy_unavailable", "The policy is not configured.");
                let _ = denial.send(&mut host);
                return Action::Pause;
            };
            match policy.start(&mut host) {
                Start::Done(Verdict::Continue) => Action::Continue,
                Start::Done(Verdict::Respond) => Action::Pause,
                Start::Introspect { key, body } => {
                    if self.flights.borrow_mut().join(&key, self.context_id) == Role::Waiter {
                        return Action::Pause;
                    }
                    let (cluster, headers, timeout_ms) = policy.call_headers();
                    // The kit dispatches through the SDK, which routes the answer back to this
                    // context.
                    match host.dispatch_http_call(cluster, &headers, Some(&body), timeout_ms) {
                        Ok(_) => {
                            self.leading = Some(key);
                            Action::Pause
                        }
                        Err(e) => {
                            policy.call_failed(&mut host, &e.to_string());
                            self.release_waiters(&policy, &key, &Answer::Unavailable);
                            Action::Pause
                        }
                    }
                }
            }
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| {
            Box::new(Root {
                policy: None,
                flights: Rc::new(RefCell::new(InFlight::default())),
            })
        });
    }}
}

#[cfg(test)]
mod tests;
