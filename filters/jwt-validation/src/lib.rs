//! `jwt-validation`: validates signed JWT access tokens (OpenID Connect / OAuth 2.0) locally,
//! with keys from a JWKS fetched in the background once per Envoy, and authorizes them by scope
//! and claims.
//!
//! [`config`] compiles the configuration, [`keys`] turns a JWKS into typed verifiers,
//! [`verify`] validates and authorizes one token, [`jwks`] says how the kit's fetcher judges and
//! parses the JWKS (and follows discovery), [`cache`] remembers verified tokens per VM, and
//! [`JwtValidation`] is the per-request decision. A token signed with an unknown key brings a
//! JWKS refresh forward and waits for it (the fetcher wakes it).

pub mod cache;
pub mod config;
pub mod ecdsa;
pub mod jwks;
pub mod keys;
pub mod rsa;
pub mod verify;

use cache::VerifyCache;
use config::Config;
use jwks::JwksSource;
use keys::KeySet;
use palisade_kit::credentials::{bearer, Credential, CredentialReader};
use palisade_kit::fetch::{FetchCounters, Fetcher};
use palisade_kit::identity::{Identity, PROPERTY_PATH};
use palisade_kit::shared::HashKey;
use palisade_kit::{CallResponse, ConfigError, Host, LogLevel, Policy, Request, Verdict, Wakes};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use verify::{Forbidden, Invalid};

/// The policy name.
pub const NAME: &str = "jwt-validation";

palisade_kit::counters! {
    /// The policy's counters (`palisade_jwt_validation_<outcome>`).
    pub struct Metrics {
        allowed, missing_token, ambiguous_token, invalid_token, forbidden, unavailable, cache_hit,
        preflight, jwks_fetched, jwks_fetch_failed, jwks_invalid, jwks_refresh_requested,
        kid_waits,
    }
}

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

/// The compiled policy of one VM.
pub struct JwtValidation {
    config: Config,
    local: Option<Rc<KeySet>>,
    remote: Option<Fetcher<JwksSource>>,
    cache: RefCell<VerifyCache<Outcome>>,
    metrics: Metrics,
}

impl JwtValidation {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let metrics = Metrics::define(host, NAME)?;
        let remote = config.remote.as_ref().map(|r| {
            let source = JwksSource {
                discovery: r.discovery,
                issuer: config.issuer.clone(),
                cluster: r.endpoint.cluster.clone(),
                algorithms: config.algorithms.clone(),
                hmac: config.local.clone(),
            };
            let counters = FetchCounters {
                fetched: metrics.jwks_fetched,
                failed: metrics.jwks_fetch_failed,
                invalid: metrics.jwks_invalid,
            };
            let name = format!("jwt-jwks:{}", r.name);
            Fetcher::new(&name, JwksSource::settings(r), source, counters)
        });
        let local = remote.is_none().then(|| Rc::new(config.local.clone()));
        Ok(JwtValidation {
            cache: RefCell::new(VerifyCache::new(
                config.cache_entries,
                HashKey::configured(host)?,
            )),
            config,
            local,
            remote,
            metrics,
        })
    }

    /// The keys to verify with now: configured ones, or the shared JWKS while it is not staler
    /// than allowed.
    fn keys(&self, host: &impl Host, now_ms: u64) -> Option<Rc<KeySet>> {
        if let Some(local) = &self.local {
            return Some(local.clone());
        }
        let fetcher = self.remote.as_ref()?;
        // This worker's copy as of its last tick: no shared-data read per request. A decision
        // that newer keys could change is taken again on them (`newer_keys`).
        let (set, published_ms) = fetcher.recent(host)?;
        self.usable(set, published_ms, now_ms)
    }

    /// Keys published since this worker's copy (`None` when there are none, or keys are local).
    fn newer_keys(&self, host: &impl Host, now_ms: u64) -> Option<Rc<KeySet>> {
        let (set, published_ms) = self.remote.as_ref()?.newer(host)?;
        self.usable(set, published_ms, now_ms)
    }

    /// `set`, unless it is staler than allowed.
    fn usable(&self, set: Rc<KeySet>, published_ms: u64, now_ms: u64) -> Option<Rc<KeySet>> {
        let remote = self.config.remote.as_ref()?;
        let usable_until = published_ms
            .saturating_add(remote.cache_ms)
            .saturating_add(remote.max_stale_ms);
        (now_ms < usable_until).then_some(set)
    }

    /// Decides on a request without a body, without waiting for keys.
    pub fn check(&self, host: &mut impl Host) -> Verdict {
        self.on_headers(host, true, None)
    }

    /// The request-headers decision: a CORS preflight (`end_of_stream`: no body follows) passes
    /// when allowed, any other request is [decided](Self::decide).
    pub fn on_headers(
        &self,
        host: &mut impl Host,
        end_of_stream: bool,
        waiter: Option<u32>,
    ) -> Verdict {
        // One read of the request header map for both the preflight test and the token.
        let credential = {
            let reader = CredentialReader::new(&*host);
            let preflight = self.config.allow_preflight
                && palisade_kit::cors::is_preflight_in(reader.headers(), end_of_stream);
            (!preflight).then(|| reader.read(&self.config.source))
        };
        let Some(credential) = credential else {
            self.metrics.preflight.inc(host);
            return Verdict::Continue;
        };
        self.decide_on(host, waiter, credential)
    }

    /// Decides on a request by its token. With `waiter` (its context id), a token with an
    /// unknown `kid` may wait for the JWKS refresh it brings forward ([`Verdict::Pause`]).
    pub fn decide(&self, host: &mut impl Host, waiter: Option<u32>) -> Verdict {
        let credential = self.config.source.read_credential(host);
        self.decide_on(host, waiter, credential)
    }

    /// [`Self::decide`] with the credential already read.
    fn decide_on(
        &self,
        host: &mut impl Host,
        waiter: Option<u32>,
        credential: Credential,
    ) -> Verdict {
        let d = &self.config.denials;
        let source = &self.config.source;
        let token = match credential.and_then(|raw| bearer(source, &raw)) {
            Credential::One(token) => token,
            Credential::Missing => {
                self.metrics.missing_token.inc(host);
                return d.missing.send(host);
            }
            Credential::Ambiguous => {
                self.metrics.ambiguous_token.inc(host);
                return d.ambiguous.send(host);
            }
        };
        let now_ms = host.now_ms();
        let keys = self
            .keys(host, now_ms)
            .or_else(|| self.newer_keys(host, now_ms));
        let Some(keys) = keys else {
            self.metrics.unavailable.inc(host);
            // Per request, so not above debug: fetch failures are logged when they happen.
            host.log(
                LogLevel::Debug,
                "jwt-validation: no usable keys (JWKS never loaded or too stale)",
            );
            return d.unavailable.send(host);
        };
        let cached = self
            .cache
            .borrow_mut()
            .get(&token, now_ms, &keys.fingerprint);
        let outcome = match cached {
            Some(outcome) => {
                self.metrics.cache_hit.inc(host);
                outcome
            }
            None => match self.validate(host, &token, keys, now_ms) {
                Err(reason) => return self.reject(host, reason, waiter),
                Ok(valid) => {
                    let outcome = Rc::new(self.judge(valid.claims));
                    let mut cache = self.cache.borrow_mut();
                    cache.put(&token, outcome.clone(), valid.exp, now_ms);
                    outcome
                }
            },
        };
        match &*outcome {
            Outcome::Forbidden(why) => {
                self.metrics.forbidden.inc(host);
                match why {
                    Forbidden::Scope => d.scope.send(host),
                    Forbidden::Claims => d.claims.send(host),
                }
            }
            Outcome::Allowed(grant) => {
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
        }
    }

    /// Verifies `token` with `keys`; when the failure is one newer keys could fix (an unknown
    /// `kid`, a signature that does not verify) and keys were published since, again with them.
    fn validate(
        &self,
        host: &impl Host,
        token: &str,
        keys: Rc<KeySet>,
        now_ms: u64,
    ) -> Result<verify::Valid, Invalid> {
        let first = verify::validate(token, &keys, &self.config, now_ms / 1000);
        if let Err(Invalid::UnknownKid | Invalid::NoKey | Invalid::Signature(_)) = first {
            if let Some(newer) = self.newer_keys(host, now_ms) {
                return verify::validate(token, &newer, &self.config, now_ms / 1000);
            }
        }
        first
    }

    fn reject(&self, host: &mut impl Host, reason: Invalid, waiter: Option<u32>) -> Verdict {
        if let (Invalid::UnknownKid, Some(fetcher)) = (&reason, &self.remote) {
            if fetcher.request_refresh(host) {
                self.metrics.jwks_refresh_requested.inc(host);
            }
            // A refresh is due or in flight: the new key may be in it.
            if let Some(context_id) = waiter {
                if fetcher.wait(host, context_id) {
                    self.metrics.kid_waits.inc(host);
                    return Verdict::Pause;
                }
            }
        }
        self.metrics.invalid_token.inc(host);
        host.log(
            LogLevel::Debug,
            &format!("jwt-validation: invalid token: {reason:?}"),
        );
        self.config.denials.invalid.send(host)
    }

    /// Requests of this VM waiting for keys.
    pub fn waiting(&self) -> usize {
        self.remote.as_ref().map_or(0, Fetcher::waiting)
    }

    fn judge(&self, claims: serde_json::Map<String, Value>) -> Outcome {
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

    /// Removes client-sent copies of the headers this policy sets, whatever the outcome, so a
    /// forged value never reaches the upstream.
    fn strip_forged_headers(&self, host: &mut impl Host) {
        for (_, header) in &self.config.claims_to_headers {
            host.remove_request_header(header);
        }
    }
}

impl Policy for JwtValidation {
    const NAME: &'static str = NAME;
    type State = ();

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        JwtValidation::configure(config, host)
    }

    fn tick_period_ms(&self) -> u32 {
        if self.remote.is_some() {
            palisade_kit::fetch::TICK_MS
        } else {
            0
        }
    }

    fn on_tick(&self, host: &mut impl Host, wakes: &mut Wakes) {
        if let Some(fetcher) = &self.remote {
            fetcher.tick(host, wakes);
        }
    }

    fn on_background_response(
        &self,
        host: &mut impl Host,
        answer: &CallResponse,
        wakes: &mut Wakes,
    ) {
        if let Some(fetcher) = &self.remote {
            fetcher.on_response(host, answer, wakes);
        }
    }

    fn on_request_headers(
        &self,
        request: &mut Request<'_, ()>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        self.strip_forged_headers(host);
        self.on_headers(host, end_of_stream, Some(request.id))
    }

    fn on_wake(&self, _: &mut Request<'_, ()>, host: &mut impl Host) -> Verdict {
        self.decide(host, None)
    }

    fn on_done(&self, request: &mut Request<'_, ()>, _: &mut impl Host) {
        if let Some(fetcher) = &self.remote {
            fetcher.forget(request.id);
        }
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<JwtValidation>(); }}

#[cfg(test)]
mod tests;
