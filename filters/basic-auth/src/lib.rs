//! `basic-auth`: HTTP Basic authentication (RFC 7617) against bcrypt, SHA-crypt and `{SHA}`
//! password hashes, with a verification cache so repeated requests cost microseconds.
//!
//! [`config`] reads and compiles the configuration, [`hash`] parses and verifies stored hashes,
//! [`cache`] remembers verification outcomes (per worker, keyed by a keyed hash of the presented
//! credentials), and [`BasicAuth`] decides in the request-headers phase. The kit's runtime does
//! the rest (`palisade_kit::wasm::start`).

pub mod cache;
pub mod config;
pub mod hash;

use cache::{Outcome, Tagger, VerificationCache};
use config::{Config, Denials, User};
use palisade_kit::credentials::{parse_basic, BasicError, Credential};
use palisade_kit::identity::{self, Identity};
use palisade_kit::metrics::Counter;
use palisade_kit::selector::Selector;
use palisade_kit::{cors, ConfigError, Denial, Host, LogLevel, Policy, Request, Verdict};
use std::cell::RefCell;
use std::collections::HashMap;

/// Longer passwords are refused without hashing them.
pub const MAX_PASSWORD_BYTES: usize = 1024;

palisade_kit::counters! {
    /// The policy's counters (`palisade_basic_auth_<outcome>`).
    pub struct Metrics {
        allowed,
        denied_missing,
        denied_ambiguous,
        denied_malformed,
        denied_invalid,
        preflight,
        cache_hit,
        verified,
    }
}

/// The compiled policy. One instance per configuration and worker, so its cache is per worker
/// and a new configuration starts with an empty one.
pub struct BasicAuth {
    users: Vec<User>,
    index: HashMap<String, u32>,
    /// The identity hand-off of each user, serialised once.
    identities: Vec<Vec<u8>>,
    /// The user whose hash unknown usernames are verified against (result discarded), so that
    /// "no such user" takes as long as "wrong password" and does not reveal which users exist.
    decoy: usize,
    forward_username_header: Option<String>,
    hide_credentials: bool,
    allow_cors_preflight: bool,
    /// `header:authorization`, read through the kit so that several credentials are refused.
    authorization: Selector,
    denials: Denials,
    tagger: Tagger,
    cache: RefCell<VerificationCache>,
    metrics: Metrics,
}

impl BasicAuth {
    /// Builds the policy from a compiled configuration and a secret key for the cache tags.
    pub fn new(
        config: Config,
        cache_key: &[u8; 32],
        host: &mut impl Host,
    ) -> Result<Self, ConfigError> {
        let Config {
            users,
            index,
            forward_username_header,
            hide_credentials,
            allow_cors_preflight,
            cache_ttl_ms,
            cache_max_entries,
            denials,
            weak_users,
        } = config;
        for name in &weak_users {
            host.log(
                LogLevel::Warn,
                &format!(
                    "{}: user `{name}` has an unsalted {{SHA}} (SHA-1) password hash; it is accepted \
                     for compatibility, but prefer bcrypt (`htpasswd -B`)",
                    Self::NAME
                ),
            );
        }
        let identities = users
            .iter()
            .map(|u| {
                serde_json::to_vec(&Identity {
                    authenticated_by: Self::NAME.into(),
                    principal: Some(u.username.clone()),
                    ..Identity::default()
                })
                .map_err(|e| ConfigError::at(".", format!("cannot prepare the identity: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_work: Vec<usize> = (0..users.len()).collect();
        by_work.sort_by_key(|&i| users.get(i).map_or(0, |u| u.hash.work()));
        let decoy = by_work.get(by_work.len() / 2).copied().unwrap_or(0);
        let tagger = Tagger::new(cache_key)
            .ok_or_else(|| ConfigError::at(".", "cannot key the verification cache"))?;
        let metrics = Metrics::define(host, Self::NAME)?;
        Ok(BasicAuth {
            users,
            index,
            identities,
            decoy,
            forward_username_header,
            hide_credentials,
            allow_cors_preflight,
            authorization: Selector::Header("authorization".into()),
            denials,
            tagger,
            cache: RefCell::new(VerificationCache::new(cache_max_entries, cache_ttl_ms)),
            metrics,
        })
    }

    /// Checks presented credentials: from the cache when they were checked recently, else by
    /// hashing the password. Returns the index of the authenticated user.
    fn authenticate(&self, username: &str, password: &str, host: &impl Host) -> Option<u32> {
        let enabled = self.cache.try_borrow().is_ok_and(|c| c.capacity() > 0);
        let key = enabled.then(|| (self.tagger.tag(username, password), host.now_ms()));
        if let Some((tag, now_ms)) = &key {
            let hit = self
                .cache
                .try_borrow()
                .ok()
                .and_then(|c| c.get(tag, *now_ms));
            if let Some(outcome) = hit {
                self.metrics.cache_hit.inc(host);
                return outcome.user();
            }
        }
        self.metrics.verified.inc(host);
        let outcome = self.verify(username, password.as_bytes());
        if let (Some((tag, now_ms)), Ok(mut cache)) = (key, self.cache.try_borrow_mut()) {
            cache.insert(tag, outcome, now_ms);
        }
        outcome.user()
    }

    /// The uncached check.
    fn verify(&self, username: &str, password: &[u8]) -> Outcome {
        match self.index.get(username) {
            Some(&id) => match self.users.get(id as usize) {
                Some(user) if user.hash.verify(password) => Outcome::Valid(id),
                _ => Outcome::Invalid,
            },
            None => {
                if let Some(decoy) = self.users.get(self.decoy) {
                    // Spend the same effort as for a known user; the result is meaningless.
                    std::hint::black_box(decoy.hash.verify(std::hint::black_box(password)));
                }
                Outcome::Invalid
            }
        }
    }

    fn admit(&self, host: &mut impl Host, user: u32) -> Verdict {
        if let Some(identity) = self.identities.get(user as usize) {
            // A failed hand-off only means later policies see no identity (and deny if they
            // need one); it does not make this request less authenticated.
            let _ = host.set_property(identity::PROPERTY_PATH, identity);
        }
        if let (Some(header), Some(u)) =
            (&self.forward_username_header, self.users.get(user as usize))
        {
            host.set_request_header(header, &u.username);
        }
        if self.hide_credentials {
            host.remove_request_header("authorization");
        }
        self.metrics.allowed.inc(host);
        Verdict::Continue
    }

    /// A request without an `Authorization` header: a CORS preflight passes when allowed
    /// (browsers send them without credentials; `end_of_stream`: no body follows), any other
    /// request is denied.
    fn without_credentials(&self, host: &mut impl Host, end_of_stream: bool) -> Verdict {
        if self.allow_cors_preflight && cors::is_preflight(host, end_of_stream) {
            if let Some(name) = &self.forward_username_header {
                // Nobody is authenticated: the upstream must not trust a client's value.
                host.remove_request_header(name);
            }
            self.metrics.preflight.inc(host);
            return Verdict::Continue;
        }
        self.deny(host, &self.denials.missing, self.metrics.denied_missing)
    }

    fn deny(&self, host: &mut impl Host, denial: &Denial, counter: Counter) -> Verdict {
        counter.inc(host);
        denial.send(host)
    }
}

impl Policy for BasicAuth {
    const NAME: &'static str = "basic-auth";
    type State = ();

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(config)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            ConfigError::at(
                ".",
                format!("no randomness for the verification cache key: {e}"),
            )
        })?;
        BasicAuth::new(config, &key, host)
    }

    fn on_request_headers(
        &self,
        _: &mut Request<'_, ()>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let header = match self.authorization.read_credential(host) {
            Credential::One(header) => header,
            // Several `Authorization` lines, or several credentials in one: the upstream might
            // read other credentials than the ones checked.
            Credential::Ambiguous => {
                return self.deny(host, &self.denials.ambiguous, self.metrics.denied_ambiguous)
            }
            Credential::Missing => return self.without_credentials(host, end_of_stream),
        };
        let credentials = match parse_basic(&header) {
            Ok(c) => c,
            // `Basic` with nothing after it is the right scheme with malformed credentials.
            Err(BasicError::WrongScheme) if !is_basic_scheme(&header) => {
                return self.deny(
                    host,
                    &self.denials.wrong_scheme,
                    self.metrics.denied_malformed,
                )
            }
            Err(_) => {
                return self.deny(host, &self.denials.malformed, self.metrics.denied_malformed)
            }
        };
        if credentials.password.len() > MAX_PASSWORD_BYTES {
            // Never hashed: SHA-crypt's cost grows with the password's length times the rounds,
            // so a 60 KB password would stall the worker for about a second.
            return self.deny(host, &self.denials.invalid, self.metrics.denied_invalid);
        }
        match self.authenticate(&credentials.username, &credentials.password, host) {
            Some(user) => self.admit(host, user),
            None => self.deny(host, &self.denials.invalid, self.metrics.denied_invalid),
        }
    }
}

/// Whether an `Authorization` value's scheme token is `Basic` (any case).
fn is_basic_scheme(header: &str) -> bool {
    header
        .split_whitespace()
        .next()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("basic"))
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<BasicAuth>(); }}

#[cfg(test)]
mod tests;
