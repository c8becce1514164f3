//! `jwt-validation`: validates signed JWT access tokens (OpenID Connect / OAuth 2.0) locally,
//! with keys from a JWKS fetched in the background once per Envoy, and authorizes them by scope
//! and claims.
//!
//! [`config`] compiles the configuration, [`keys`] turns a JWKS into typed verifiers,
//! [`verify`] validates and authorizes one token, [`jwks`] schedules the shared fetch, and
//! [`JwtValidation`] is the per-request decision with its per-VM verification cache. The
//! proxy-wasm glue at the bottom only moves bytes between Envoy and these.

pub mod config;
pub mod jwks;
pub mod keys;
pub mod verify;

use config::Config;
use jwks::{FetchKind, JwksSource, MAX_DOCUMENT_BYTES};
use keys::KeySet;
use palisade_kit::address::AddressSource;
use palisade_kit::background::CachedDocument;
use palisade_kit::identity::{Identity, PROPERTY_PATH};
use palisade_kit::metrics::Counter;
use palisade_kit::selector::Selector;
use palisade_kit::{ConfigError, Host, HostError, LogLevel, Verdict};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use verify::{Forbidden, Invalid};

/// The policy name.
pub const NAME: &str = "jwt-validation";

/// How often every VM looks at the shared fetch schedule.
pub const TICK_MS: u32 = 250;

/// At most this many requests per VM wait for a JWKS refresh at a time; more get 401 at once.
const MAX_WAITERS: usize = 1024;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Continue,
    /// It was answered (a denial).
    Respond,
    /// Its token has an unknown `kid` and a JWKS refresh is on its way: keep it paused until
    /// [`JwtValidation::wake`] decides it again.
    Wait,
}

/// A request paused until the keys change (or the refresh ends or times out).
#[derive(Debug, Clone, Copy)]
struct Waiter {
    context_id: u32,
    until_ms: u64,
    version: u64,
}

/// A token without `exp` (when allowed) stays in the verification cache at most this long.
const NO_EXP_CACHE_MS: u64 = 300_000;

/// The request waits for keys.
struct Wait;

/// What was decided about a valid token; cached per VM.
#[derive(Debug)]
enum Outcome {
    Allowed(Grant),
    Forbidden(Forbidden),
}

/// What an allowed request carries upstream.
#[derive(Debug)]
struct Grant {
    /// The serialized [`Identity`] for later policies.
    identity: Vec<u8>,
    /// `claimsToHeaders` values present in the token.
    headers: Vec<(String, String)>,
}

struct CacheEntry {
    expires_ms: u64,
    outcome: Rc<Outcome>,
}

/// Verified tokens of this VM, keyed by SHA-256 of the token, bounded, each entry living until
/// the token's `exp` at the latest, dropped whenever the key set changes.
#[derive(Default)]
struct VerifyCache {
    entries: HashMap<[u8; 32], CacheEntry>,
    fingerprint: [u8; 32],
}

impl VerifyCache {
    fn get(&mut self, key: &[u8; 32], now_ms: u64, fingerprint: &[u8; 32]) -> Option<Rc<Outcome>> {
        if &self.fingerprint != fingerprint {
            self.entries.clear();
            self.fingerprint = *fingerprint;
            return None;
        }
        let entry = self.entries.get(key)?;
        if entry.expires_ms > now_ms {
            return Some(entry.outcome.clone());
        }
        self.entries.remove(key);
        None
    }

    fn put(&mut self, key: [u8; 32], entry: CacheEntry, capacity: usize, now_ms: u64) {
        if capacity == 0 {
            return;
        }
        if self.entries.len() >= capacity {
            self.entries.retain(|_, e| e.expires_ms > now_ms);
        }
        if self.entries.len() >= capacity {
            // Still full of live entries: drop an arbitrary one (a cheap random eviction).
            if let Some(victim) = self.entries.keys().next().copied() {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(key, entry);
    }
}

/// The policy's counters (`palisade_jwt_validation_<outcome>`).
struct Metrics {
    allowed: Counter,
    missing_token: Counter,
    invalid_token: Counter,
    forbidden: Counter,
    unavailable: Counter,
    cache_hit: Counter,
    preflight: Counter,
    jwks_fetched: Counter,
    jwks_fetch_failed: Counter,
    jwks_refresh_requested: Counter,
    kid_waits: Counter,
}

/// The compiled policy of one VM.
pub struct JwtValidation {
    config: Config,
    local: Option<Rc<KeySet>>,
    remote: Option<(JwksSource, CachedDocument<KeySet>)>,
    cache: RefCell<VerifyCache>,
    waiters: RefCell<Vec<Waiter>>,
    metrics: Metrics,
}

/// A fetch this VM has in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// The HTTP call's token.
    pub token: u32,
    /// What it fetches.
    pub kind: FetchKind,
    /// When it was started (ms).
    pub started_ms: u64,
}

impl JwtValidation {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let counter = |host: &mut _, outcome| Counter::define(host, NAME, outcome);
        let metrics = Metrics {
            allowed: counter(host, "allowed")?,
            missing_token: counter(host, "missing_token")?,
            invalid_token: counter(host, "invalid_token")?,
            forbidden: counter(host, "forbidden")?,
            unavailable: counter(host, "unavailable")?,
            cache_hit: counter(host, "cache_hit")?,
            preflight: counter(host, "preflight")?,
            jwks_fetched: counter(host, "jwks_fetched")?,
            jwks_fetch_failed: counter(host, "jwks_fetch_failed")?,
            jwks_refresh_requested: counter(host, "jwks_refresh_requested")?,
            kid_waits: counter(host, "kid_waits")?,
        };
        let remote = config.remote.clone().map(|r| {
            let source = JwksSource::new(r);
            let cached = CachedDocument::new(source.doc.clone());
            (source, cached)
        });
        let local = remote.is_none().then(|| Rc::new(config.local.clone()));
        Ok(JwtValidation {
            config,
            local,
            remote,
            cache: RefCell::new(VerifyCache::default()),
            waiters: RefCell::new(Vec::new()),
            metrics,
        })
    }

    /// Whether keys are fetched (the root context must tick).
    pub fn fetches(&self) -> bool {
        self.remote.is_some()
    }

    /// The keys to verify with now: configured ones, or the shared JWKS while it is not staler
    /// than allowed.
    fn keys(&self, host: &impl Host) -> Option<Rc<KeySet>> {
        if let Some(local) = &self.local {
            return Some(local.clone());
        }
        let (source, cached) = self.remote.as_ref()?;
        let algorithms = &self.config.algorithms;
        let hmac = &self.config.local;
        let (set, published) = cached
            .get(host, |bytes| {
                let mut set = KeySet::parse_fetched(bytes, algorithms).ok()?;
                set.extend(hmac);
                Some(set)
            })
            .ok()??;
        source.usable(published, host.now_ms()).then_some(set)
    }

    /// Reads the token; `None` when the request carries none (or another scheme).
    fn token(&self, host: &impl Host) -> Option<String> {
        let raw = self.config.source.evaluate(host, &AddressSource::Peer)?;
        bearer(&self.config.source, raw)
    }

    /// Decides on a request whose headers have arrived, without waiting for keys.
    pub fn on_request_headers(&self, host: &mut impl Host) -> Verdict {
        match self.on_request(host, None) {
            Decision::Continue => Verdict::Continue,
            Decision::Respond | Decision::Wait => Verdict::Respond,
        }
    }

    /// Decides on a request whose headers have arrived. With `context_id`, a token with an
    /// unknown `kid` may wait for a JWKS refresh that is on its way ([`Decision::Wait`]).
    pub fn on_request(&self, host: &mut impl Host, context_id: Option<u32>) -> Decision {
        match self.decide_request(host, context_id) {
            Ok(Verdict::Continue) => Decision::Continue,
            Ok(Verdict::Respond) => Decision::Respond,
            Err(Wait) => Decision::Wait,
        }
    }

    fn decide_request(
        &self,
        host: &mut impl Host,
        context_id: Option<u32>,
    ) -> Result<Verdict, Wait> {
        let d = &self.config.denials;
        if self.config.allow_preflight && palisade_kit::cors::is_preflight(host) {
            self.metrics.preflight.inc(host);
            return Ok(Verdict::Continue);
        }
        let Some(token) = self.token(host) else {
            self.metrics.missing_token.inc(host);
            return Ok(deny(host, &d.missing));
        };
        let Some(keys) = self.keys(host) else {
            self.metrics.unavailable.inc(host);
            // Per request, so not above debug: fetch failures are logged when they happen.
            host.log(
                LogLevel::Debug,
                "jwt-validation: no usable keys (JWKS never loaded or too stale)",
            );
            return Ok(deny(host, &d.unavailable));
        };
        let now_ms = host.now_ms();
        let digest = palisade_kit::secret::sha256(token.as_bytes());
        let cached = self
            .cache
            .borrow_mut()
            .get(&digest, now_ms, &keys.fingerprint);
        let outcome = match cached {
            Some(outcome) => {
                self.metrics.cache_hit.inc(host);
                outcome
            }
            None => match verify::validate(&token, &keys, &self.config, now_ms / 1000) {
                Err(reason) => return self.reject(host, reason, context_id),
                Ok(valid) => {
                    let outcome = Rc::new(self.decide(valid.claims));
                    let expires_ms = valid
                        .exp
                        .map_or(now_ms + NO_EXP_CACHE_MS, |e| e.saturating_mul(1000));
                    let entry = CacheEntry {
                        expires_ms,
                        outcome: outcome.clone(),
                    };
                    self.cache
                        .borrow_mut()
                        .put(digest, entry, self.config.cache_entries, now_ms);
                    outcome
                }
            },
        };
        Ok(match &*outcome {
            Outcome::Forbidden(why) => {
                self.metrics.forbidden.inc(host);
                let denial = match why {
                    Forbidden::Scope => &d.scope,
                    Forbidden::Claims => &d.claims,
                };
                deny(host, denial)
            }
            Outcome::Allowed(grant) => {
                for (_, header) in &self.config.claims_to_headers {
                    host.remove_request_header(header);
                }
                for (header, value) in &grant.headers {
                    host.set_request_header(header, value);
                }
                if let Err(e) = host.set_property(PROPERTY_PATH, &grant.identity) {
                    host.log(
                        LogLevel::Warn,
                        &format!("jwt-validation: identity not recorded: {e}"),
                    );
                }
                if !self.config.forward_token {
                    self.config.source.remove_from(host);
                }
                self.metrics.allowed.inc(host);
                Verdict::Continue
            }
        })
    }

    fn reject(
        &self,
        host: &mut impl Host,
        reason: Invalid,
        context_id: Option<u32>,
    ) -> Result<Verdict, Wait> {
        if reason == Invalid::UnknownKid {
            if let Some((source, _)) = &self.remote {
                if matches!(source.request_refresh(host), Ok(true)) {
                    self.metrics.jwks_refresh_requested.inc(host);
                }
                // A refresh is due or in flight: the new key may be in it.
                if let Some(context_id) = context_id {
                    let mut waiters = self.waiters.borrow_mut();
                    if waiters.len() < MAX_WAITERS && source.fetch_pending(host) {
                        waiters.push(Waiter {
                            context_id,
                            until_ms: host.now_ms()
                                + u64::from(source.remote.timeout_ms)
                                + jwks::LEASE_SLACK_MS,
                            version: source.doc.version(host).unwrap_or(0),
                        });
                        self.metrics.kid_waits.inc(host);
                        return Err(Wait);
                    }
                }
            }
        }
        self.metrics.invalid_token.inc(host);
        host.log(
            LogLevel::Debug,
            &format!("jwt-validation: invalid token: {reason:?}"),
        );
        Ok(deny(host, &self.config.denials.invalid))
    }

    /// Decides again on the requests waiting for keys, once new keys were published, the
    /// refresh ended without them, or it took too long. `activate` makes a waiting request the
    /// current one (false if it is gone); `resume` lets the current one continue.
    pub fn wake(
        &self,
        host: &mut impl Host,
        mut activate: impl FnMut(u32) -> bool,
        mut resume: impl FnMut(),
    ) {
        let Some((source, _)) = &self.remote else {
            return;
        };
        if self.waiters.borrow().is_empty() {
            return;
        }
        let version = source.doc.version(host).unwrap_or(0);
        let pending = source.fetch_pending(host);
        let now = host.now_ms();
        let ready: Vec<Waiter> = {
            let mut waiters = self.waiters.borrow_mut();
            let (ready, still): (Vec<Waiter>, Vec<Waiter>) = waiters
                .iter()
                .partition(|w| w.version != version || !pending || now >= w.until_ms);
            *waiters = still;
            ready
        };
        for waiter in ready {
            if activate(waiter.context_id) && self.on_request_headers(host) == Verdict::Continue {
                resume();
            }
        }
    }

    /// Number of requests waiting for keys.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn decide(&self, claims: serde_json::Map<String, Value>) -> Outcome {
        if let Err(why) = verify::authorize(&claims, &self.config) {
            return Outcome::Forbidden(why);
        }
        let headers = self
            .config
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| {
                let value = verify::header_value(claims.get(claim)?)?;
                Some((header.clone(), value))
            })
            .collect();
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let identity = Identity {
            authenticated_by: NAME.into(),
            client_id: text("azp").or_else(|| text("client_id")),
            principal: text("sub"),
            claims,
            ..Identity::default()
        };
        Outcome::Allowed(Grant {
            identity: serde_json::to_vec(&identity).unwrap_or_default(),
            headers,
        })
    }

    /// Runs on every VM's timer: starts a fetch if one is due and this VM claims it.
    /// `dispatch` starts the HTTP call (cluster, headers, timeout) and returns its token.
    pub fn tick(
        &self,
        host: &impl Host,
        in_flight: &mut Option<InFlight>,
        dispatch: impl FnOnce(&str, &[(&str, &str)], u32) -> Result<u32, HostError>,
    ) {
        let Some((source, _)) = &self.remote else {
            return;
        };
        if let Some(call) = in_flight {
            // Envoy always answers a call (at the latest with a timeout); a call this old was
            // lost: forget it, so this VM can fetch again (others may already have).
            let lost_after = u64::from(source.remote.timeout_ms) + 2 * jwks::LEASE_SLACK_MS;
            if host.now_ms() < call.started_ms.saturating_add(lost_after) {
                return;
            }
            *in_flight = None;
        }
        if !matches!(source.try_claim(host), Ok(true)) {
            return;
        }
        self.start_fetch(host, source, source.first_fetch(), in_flight, dispatch);
    }

    fn start_fetch(
        &self,
        host: &impl Host,
        source: &JwksSource,
        kind: FetchKind,
        in_flight: &mut Option<InFlight>,
        dispatch: impl FnOnce(&str, &[(&str, &str)], u32) -> Result<u32, HostError>,
    ) {
        let (cluster, headers) = source.request(&kind);
        match dispatch(cluster, &headers, source.remote.timeout_ms) {
            Ok(token) => {
                *in_flight = Some(InFlight {
                    token,
                    kind,
                    started_ms: host.now_ms(),
                })
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("jwt-validation: cannot call cluster {cluster:?}: {e}"),
                );
                self.metrics.jwks_fetch_failed.inc(host);
                let _ = source.complete(host, false);
            }
        }
    }

    /// Handles the answer to this VM's fetch: publishes a good JWKS, follows a discovery
    /// document to its JWKS, or records a failure (the last good keys stay).
    pub fn on_fetch_response(
        &self,
        host: &impl Host,
        in_flight: &mut Option<InFlight>,
        token: u32,
        status: Option<u16>,
        body: &[u8],
        dispatch: impl FnOnce(&str, &[(&str, &str)], u32) -> Result<u32, HostError>,
    ) {
        let Some((source, _)) = &self.remote else {
            return;
        };
        let Some(call) = in_flight.take_if(|c| c.token == token) else {
            return;
        };
        let failure = |why: String| {
            host.log(
                LogLevel::Warn,
                &format!("jwt-validation: JWKS fetch failed: {why}"),
            );
            self.metrics.jwks_fetch_failed.inc(host);
            let _ = source.complete(host, false);
        };
        if status != Some(200) {
            return failure(format!(
                "status {}",
                status.map_or("none".into(), |s| s.to_string())
            ));
        }
        if body.len() > MAX_DOCUMENT_BYTES {
            return failure(format!("document larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        match call.kind {
            FetchKind::Discovery => match source.jwks_endpoint(body, &self.config.issuer) {
                Ok(endpoint) => {
                    let _ = source.extend_claim(host);
                    self.start_fetch(host, source, FetchKind::Jwks(endpoint), in_flight, dispatch);
                }
                Err(why) => failure(why),
            },
            FetchKind::Jwks(_) => match KeySet::parse_fetched(body, &self.config.algorithms) {
                Ok(set) => match source.doc.publish(host, body) {
                    Ok(_) => {
                        host.log(
                            LogLevel::Info,
                            &format!("jwt-validation: JWKS loaded ({} verifiers)", set.len()),
                        );
                        self.metrics.jwks_fetched.inc(host);
                        let _ = source.complete(host, true);
                    }
                    Err(e) => failure(format!("cannot publish: {e:?}")),
                },
                Err(why) => failure(why),
            },
        }
    }
}

/// The bearer token in a selected value. From `Authorization` only the `Bearer` scheme counts;
/// from other headers an optional `Bearer ` prefix is removed.
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

fn deny(host: &mut impl Host, denial: &palisade_kit::Denial) -> Verdict {
    // If even the local reply fails there is nothing better to do than to stop the request.
    let _ = denial.send(host);
    Verdict::Respond
}

#[cfg(target_arch = "wasm32")]
mod glue {
    //! The proxy-wasm contexts: configure once per VM, tick for the shared fetch, decide per
    //! request.
    use super::*;
    use palisade_kit::wasm::{
        buffer_bytes, configure_policy, map_value, resume_http_request, set_effective_context,
        Buffer, HeaderMap, WasmHost,
    };
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    /// Starts an HTTP call (through the kit, whose call the SDK routes back to this root
    /// context).
    fn dispatch(
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        WasmHost.dispatch_http_call(cluster, headers, None, timeout_ms)
    }

    struct Root {
        context_id: u32,
        policy: Option<Rc<JwtValidation>>,
        in_flight: Option<InFlight>,
    }

    impl Root {
        /// Decides again on requests waiting for keys, then makes the root current again.
        fn wake_waiters(&self, policy: &JwtValidation) {
            if policy.waiting() == 0 {
                return;
            }
            policy.wake(
                &mut WasmHost,
                |id| set_effective_context(id).is_ok(),
                || {
                    let _ = resume_http_request();
                },
            );
            let _ = set_effective_context(self.context_id);
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
            let Some(policy) = self.policy.clone() else {
                return;
            };
            let status = map_value(HeaderMap::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.parse().ok());
            let body = buffer_bytes(
                Buffer::HttpCallResponseBody,
                0,
                body_size.min(MAX_DOCUMENT_BYTES + 1),
            );
            policy.on_fetch_response(
                &WasmHost,
                &mut self.in_flight,
                token,
                status,
                &body,
                dispatch,
            );
            self.wake_waiters(&policy);
        }
    }

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let Some(policy) = configure_policy(NAME, JwtValidation::configure) else {
                return false;
            };
            if policy.fetches() {
                let mut host = WasmHost;
                if let Err(e) = host.set_tick_period_ms(TICK_MS) {
                    host.log(
                        LogLevel::Error,
                        &format!("{NAME}: cannot start the JWKS timer: {e}"),
                    );
                    return false;
                }
            }
            self.policy = Some(Rc::new(policy));
            true
        }

        fn on_tick(&mut self) {
            if let Some(policy) = self.policy.clone() {
                policy.tick(&WasmHost, &mut self.in_flight, dispatch);
                self.wake_waiters(&policy);
            }
        }

        fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Stream {
                policy: self.policy.clone(),
                context_id,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Stream {
        policy: Option<Rc<JwtValidation>>,
        context_id: u32,
    }

    impl Context for Stream {}

    impl HttpContext for Stream {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            let mut host = WasmHost;
            let Some(policy) = &self.policy else {
                let denial = palisade_kit::Denial::new(
                    503,
                    "policy_unavailable",
                    "The policy is not configured.",
                );
                let _ = denial.send(&mut host);
                return Action::Pause;
            };
            match policy.on_request(&mut host, Some(self.context_id)) {
                Decision::Continue => Action::Continue,
                Decision::Respond | Decision::Wait => Action::Pause,
            }
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|context_id| Box::new(Root { context_id, policy: None, in_flight: None }));
    }}
}

#[cfg(test)]
mod tests;
