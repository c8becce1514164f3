//! `token-introspection`: asks an OAuth 2.0 authorization server whether an access token is
//! active (RFC 7662) and caches the answer in shared data for every worker.
//!
//! [`config`] compiles the configuration; [`TokenIntrospection`] decides: a cached answer (keyed
//! by SHA-256 of the token, never the token) is applied at once, otherwise the request pauses
//! while the server is asked. The proxy-wasm glue at the bottom moves bytes only.

pub mod config;

use config::{Config, Criteria};
use palisade_kit::cache::TtlCache;
use palisade_kit::credentials::{bearer, Credential, CredentialReader};
use palisade_kit::identity::{Identity, PROPERTY_PATH};
use palisade_kit::shared::{HashKey, SlotCache};
use palisade_kit::{
    CallResponse, ConfigError, HeaderMap, Host, LogLevel, Policy, Request, Verdict,
};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The policy name.
pub const NAME: &str = "token-introspection";

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

/// Where a waiting request finds the answer its leader got.
pub type AnswerSlot = Rc<RefCell<Option<Answer>>>;

/// Whether a request leads the introspection of its token or waits for another one.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// No call for this token is in flight in this VM: make it.
    Leader,
    /// A call for this token is in flight in this VM: wait; the answer lands in the slot.
    Waiter(AnswerSlot),
}

/// One introspection in flight: the requests waiting for it and where their answer goes.
#[derive(Debug, Default)]
struct Flight {
    waiters: Vec<u32>,
    answer: AnswerSlot,
}

/// The introspections in flight in this VM and the requests waiting for each, so concurrent
/// requests with the same uncached token make one call per VM instead of one each.
#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<String, Flight>,
}

impl InFlight {
    /// Registers request `context_id` for the token cached under `key`.
    pub fn join(&mut self, key: &str, context_id: u32) -> Role {
        match self.pending.get_mut(key) {
            Some(flight) => {
                flight.waiters.push(context_id);
                Role::Waiter(flight.answer.clone())
            }
            None => {
                self.pending.insert(key.to_owned(), Flight::default());
                Role::Leader
            }
        }
    }

    /// The call for `key` is over with `answer`: the requests that waited for it (their slot
    /// now holds the answer).
    pub fn finish(&mut self, key: &str, answer: &Answer) -> Vec<u32> {
        let Some(flight) = self.pending.remove(key) else {
            return Vec::new();
        };
        *flight.answer.borrow_mut() = Some(answer.clone());
        flight.waiters
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

palisade_kit::counters! {
    /// The policy's counters (`palisade_token_introspection_<outcome>`).
    pub struct Metrics {
        coalesced, allowed, missing_token, ambiguous_token, invalid_token, forbidden,
        unavailable, cache_hit, introspected, preflight,
    }
}

/// A request's part in an introspection.
#[derive(Debug, Default)]
pub enum Flow {
    /// Decided, or not started.
    #[default]
    Idle,
    /// It made the call for the token cached under this key; others may wait for it.
    Leading(String),
    /// It waits for another request's call.
    Waiting(AnswerSlot),
}

/// The compiled policy of one VM.
pub struct TokenIntrospection {
    config: Config,
    cache: Option<SlotCache>,
    /// This VM's prepared answers in front of the shared cache: a hit costs no shared-data read
    /// and no JSON parsing.
    local: RefCell<TtlCache<String, Rc<Prepared>>>,
    flights: RefCell<InFlight>,
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

impl TokenIntrospection {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let metrics = Metrics::define(host, NAME)?;
        // The cache keys are the clients' tokens: place them by the Envoy's secret.
        let hash_key = (config.max_entries > 0)
            .then(|| HashKey::configured(host))
            .transpose()?;
        let cache = hash_key.map(|hash_key| {
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
                hash_key,
            )
        });
        Ok(TokenIntrospection {
            local: RefCell::new(TtlCache::new(config.max_entries as usize)),
            config,
            cache,
            flights: RefCell::new(InFlight::default()),
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

    /// Decides from the cache, or says to ask the server. `end_of_stream` is the
    /// request-headers flag (no body follows: the request may be a CORS preflight).
    pub fn start(&self, host: &mut impl Host, end_of_stream: bool) -> Start {
        let headers = host.headers(HeaderMap::Request);
        self.start_with(host, end_of_stream, headers)
    }

    /// [`Self::start`] over the request header map already read (`headers`), so the request
    /// costs one read of it.
    pub fn start_with(
        &self,
        host: &mut impl Host,
        end_of_stream: bool,
        headers: Vec<(String, String)>,
    ) -> Start {
        let source = &self.config.source;
        let credential = {
            let reader = CredentialReader::with_headers(&*host, headers);
            let preflight = self.config.allow_preflight
                && palisade_kit::cors::is_preflight_in(reader.headers(), end_of_stream);
            (!preflight).then(|| reader.read(source))
        };
        let Some(credential) = credential else {
            self.metrics.preflight.inc(host);
            return Start::Done(Verdict::Continue);
        };
        let token = match credential.and_then(|raw| bearer(source, &raw)) {
            Credential::One(token) => token,
            Credential::Missing => {
                self.metrics.missing_token.inc(host);
                return Start::Done(self.config.denials.missing.send(host));
            }
            Credential::Ambiguous => {
                self.metrics.ambiguous_token.inc(host);
                return Start::Done(self.config.denials.ambiguous.send(host));
            }
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
        self.config.denials.unavailable.send(host)
    }

    /// Handles the server's answer for the token cached under `key`: caches it and decides.
    pub fn complete(
        &self,
        host: &mut impl Host,
        key: &str,
        status: Option<u16>,
        body: &[u8],
    ) -> Verdict {
        let (_, prepared) = self.answer_prepared(host, key, status, body);
        self.apply_prepared(host, &prepared)
    }

    /// Reads the server's answer for the token cached under `key` and caches it (failures are
    /// not cached).
    pub fn answer(&self, host: &impl Host, key: &str, status: Option<u16>, body: &[u8]) -> Answer {
        self.answer_prepared(host, key, status, body).0
    }

    /// [`Self::answer`], with what to do with the requests carrying the token (prepared once,
    /// for the leading request and the cache).
    fn answer_prepared(
        &self,
        host: &impl Host,
        key: &str,
        status: Option<u16>,
        body: &[u8],
    ) -> (Answer, Rc<Prepared>) {
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
            return (Answer::Unavailable, Rc::new(Prepared::Unavailable));
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
        self.remember(key, expires, prepared.clone(), now);
        (answer, prepared)
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
        self.local
            .borrow_mut()
            .put(key.to_owned(), prepared, expires, now);
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
                self.config.denials.unavailable.send(host)
            }
            Prepared::Invalid => {
                self.metrics.invalid_token.inc(host);
                self.config.denials.invalid.send(host)
            }
            Prepared::Forbidden => {
                self.metrics.forbidden.inc(host);
                self.config.denials.scope.send(host)
            }
            Prepared::Allowed { headers, identity } => {
                if self.config.expose_headers {
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

impl TokenIntrospection {
    /// Removes every client-sent header in the gateway's `x-agw-*` namespace, on every path,
    /// so only the authorization server's answer can set them.
    /// Returns the request header map as it is then (read once: [`Self::start_with`] reads
    /// the credential from it).
    fn strip_gateway_headers(&self, host: &mut impl Host) -> Vec<(String, String)> {
        let is_forged = |name: &str| {
            name.as_bytes()
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"x-agw-"))
        };
        let mut headers = host.headers(HeaderMap::Request);
        if headers.iter().any(|(name, _)| is_forged(name)) {
            let mut removed: Vec<&str> = Vec::new();
            for (name, _) in headers.iter().filter(|(name, _)| is_forged(name)) {
                if !removed.contains(&name.as_str()) {
                    host.remove_request_header(name);
                    removed.push(name);
                }
            }
            headers.retain(|(name, _)| !is_forged(name));
        }
        headers
    }

    /// The call for `key` ended with `answer`: wakes the requests that waited for it.
    fn release(&self, key: &str, answer: &Answer, wakes: &mut palisade_kit::Wakes) {
        let waiters = self.flights.borrow_mut().finish(key, answer);
        wakes.wake_all(waiters);
    }
}

impl Policy for TokenIntrospection {
    const NAME: &'static str = NAME;
    type State = Flow;

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        TokenIntrospection::configure(config, host)
    }

    fn on_request_headers(
        &self,
        request: &mut Request<'_, Flow>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let headers = self.strip_gateway_headers(host);
        let (key, body) = match self.start_with(host, end_of_stream, headers) {
            Start::Done(verdict) => return verdict,
            Start::Introspect { key, body } => (key, body),
        };
        if let Role::Waiter(slot) = self.flights.borrow_mut().join(&key, request.id) {
            *request.state = Flow::Waiting(slot);
            return Verdict::Pause;
        }
        let (cluster, headers, timeout_ms) = self.call_headers();
        match host.dispatch_http_call(cluster, &headers, Some(&body), timeout_ms) {
            Ok(_) => {
                *request.state = Flow::Leading(key);
                Verdict::Pause
            }
            Err(e) => {
                self.release(&key, &Answer::Unavailable, request.wakes);
                self.call_failed(host, &e.to_string())
            }
        }
    }

    fn on_call_response(
        &self,
        request: &mut Request<'_, Flow>,
        host: &mut impl Host,
        response: &CallResponse,
    ) -> Verdict {
        let Flow::Leading(key) = std::mem::take(request.state) else {
            return Verdict::Pause;
        };
        let body = response.body(host, MAX_RESPONSE_BYTES);
        let status = body.as_ref().and(response.status);
        let (answer, prepared) =
            self.answer_prepared(host, &key, status, body.as_deref().unwrap_or_default());
        self.release(&key, &answer, request.wakes);
        self.apply_prepared(host, &prepared)
    }

    fn on_wake(&self, request: &mut Request<'_, Flow>, host: &mut impl Host) -> Verdict {
        let Flow::Waiting(slot) = std::mem::take(request.state) else {
            return Verdict::Pause;
        };
        self.coalesced(host);
        let answer = slot.borrow().clone().unwrap_or(Answer::Unavailable);
        self.apply_answer(host, &answer)
    }

    fn on_done(&self, request: &mut Request<'_, Flow>, _: &mut impl Host) {
        // The leading request went away before the answer: its waiters cannot get one, so they
        // fail closed (503) rather than hang.
        if let Flow::Leading(key) = std::mem::take(request.state) {
            self.release(&key, &Answer::Unavailable, request.wakes);
        }
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<TokenIntrospection>(); }}

#[cfg(test)]
mod tests;
