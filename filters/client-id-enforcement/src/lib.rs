//! `client-id-enforcement`: client applications present an id (and a secret); the policy
//! checks them against a registry of clients and their contracts, and hands the caller's
//! identity (client id, name, SLA tier for this API) to later policies.
//!
//! [`config`] compiles the configuration, [`registry`] holds clients in a hash map, and
//! [`ClientIdEnforcement::decide`] is the decision, over plain types. A remote registry is
//! fetched once per period per Envoy by the kit's [`Fetcher`] and published in shared data,
//! where every worker reads (and parses once per version) it.

pub mod config;
pub mod registry;

use config::Config;
use palisade_kit::credentials::{Credential, CredentialReader};
use palisade_kit::fetch::{Endpoint, FetchCounters, FetchSettings, Fetched, Fetcher, Source};
use palisade_kit::identity::Identity;
use palisade_kit::secret::matches_sha256;
use palisade_kit::{
    CallResponse, ConfigError, Host, HostError, LogLevel, Policy, Request, Verdict, Wakes,
};
use registry::{Client, Registry};
use std::rc::Rc;

/// The policy name.
pub const NAME: &str = "client-id-enforcement";

/// Why a request was refused. Only metrics and debug logs see the precise reason; the client
/// gets one generic message per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No client id in the request.
    MissingClientId,
    /// The client id or secret is in the request more than once (repeated header lines,
    /// query parameters or cookies): the upstream might read another client than the one
    /// authenticated.
    AmbiguousCredentials,
    /// No client with that id.
    UnknownClient,
    /// A secret is required and none was sent.
    MissingSecret,
    /// The secret does not match (or the client has no secret to check against).
    InvalidSecret,
    /// The client is disabled.
    DisabledClient,
    /// The client has no contract for this API.
    NoContract,
    /// The remote registry never loaded, so an unknown id cannot be judged.
    RegistryUnavailable,
}

impl Reason {
    /// Whether a newer registry could decide otherwise (a client added, re-enabled, given a
    /// contract or a new secret).
    pub fn depends_on_registry(self) -> bool {
        matches!(
            self,
            Reason::UnknownClient
                | Reason::InvalidSecret
                | Reason::DisabledClient
                | Reason::NoContract
                | Reason::RegistryUnavailable
        )
    }

    /// The metric outcome name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingClientId => "missing_client_id",
            Reason::AmbiguousCredentials => "ambiguous_credentials",
            Reason::UnknownClient => "unknown_client",
            Reason::MissingSecret => "missing_secret",
            Reason::InvalidSecret => "invalid_secret",
            Reason::DisabledClient => "disabled_client",
            Reason::NoContract => "no_contract",
            Reason::RegistryUnavailable => "registry_unavailable",
        }
    }
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client is known, enabled, authenticated and has a contract for the API: its tier.
    Allowed(Rc<Client>, String),
    /// The request is refused.
    Denied(Reason),
    /// A CORS preflight let through unauthenticated.
    Preflight,
}

palisade_kit::counters! {
    /// The policy's counters (`palisade_client_id_enforcement_<outcome>`).
    pub struct Metrics {
        allowed, preflight_allowed, missing_client_id, ambiguous_credentials, unknown_client,
        missing_secret, invalid_secret, disabled_client, no_contract, registry_unavailable,
        registry_fetched, registry_fetch_failed, registry_invalid,
    }
}

/// The largest registry document accepted (a 50,000-client registry is about 4.5 MB).
pub const MAX_REGISTRY_BYTES: usize = 64 * 1024 * 1024;

/// How a fetched registry is judged and parsed.
pub struct RegistrySource;

impl Source for RegistrySource {
    type Document = Registry;

    fn accept(&self, body: &[u8], _followed: bool) -> Fetched {
        match Registry::parse_document(body) {
            Ok(registry) => Fetched::Publish(format!("{} clients", registry.len())),
            Err(e) => Fetched::Invalid(e),
        }
    }

    fn parse(&self, bytes: &[u8]) -> Option<Registry> {
        Registry::parse_document(bytes).ok()
    }
}

/// The compiled policy.
pub struct ClientIdEnforcement {
    config: Config,
    metrics: Metrics,
    remote: Option<Fetcher<RegistrySource>>,
}

impl ClientIdEnforcement {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let metrics = Metrics::define(host, NAME)?;
        let remote = config.remote.as_ref().map(|r| {
            let settings = FetchSettings {
                endpoint: Endpoint {
                    cluster: r.cluster.clone(),
                    authority: r.authority.clone(),
                    path: r.path.clone(),
                },
                refresh_ms: r.refresh_ms,
                timeout_ms: r.timeout_ms,
                min_refresh_ms: r.refresh_ms,
                max_bytes: MAX_REGISTRY_BYTES,
            };
            let counters = FetchCounters {
                fetched: metrics.registry_fetched,
                failed: metrics.registry_fetch_failed,
                invalid: metrics.registry_invalid,
            };
            Fetcher::new(&r.shared_name(), settings, RegistrySource, counters)
        });
        Ok(ClientIdEnforcement {
            config,
            metrics,
            remote,
        })
    }

    /// The remote registry's fetcher, when one is configured.
    pub fn remote(&self) -> Option<&Fetcher<RegistrySource>> {
        self.remote.as_ref()
    }

    /// The compiled configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides on a request. `end_of_stream` is the request-headers flag (no body follows);
    /// `remote` is this VM's copy of the remote registry, `None` if none was ever loaded (or
    /// none is configured).
    pub fn decide(
        &self,
        host: &impl Host,
        end_of_stream: bool,
        remote: Option<&Registry>,
    ) -> Outcome {
        let c = &self.config;
        // One read of the request header map for both the preflight test and the credentials.
        let credentials = CredentialReader::new(host);
        if c.allow_cors_preflight
            && palisade_kit::cors::is_preflight_in(credentials.headers(), end_of_stream)
        {
            return Outcome::Preflight;
        }
        let id = match credentials.read(&c.id_source) {
            Credential::One(id) => id,
            Credential::Missing => return Outcome::Denied(Reason::MissingClientId),
            Credential::Ambiguous => return Outcome::Denied(Reason::AmbiguousCredentials),
        };
        // Read before the lookup, so a repeated secret is refused whoever the client is.
        let secret = match c.secret_source.as_ref().map(|s| credentials.read(s)) {
            Some(Credential::Ambiguous) => return Outcome::Denied(Reason::AmbiguousCredentials),
            Some(Credential::One(secret)) => Some(secret),
            Some(Credential::Missing) | None => None,
        };
        // Inline clients take precedence over the remote registry.
        let client = match (c.inline.get(&id), remote) {
            (Some(client), _) => client,
            (None, Some(remote)) => match remote.get(&id) {
                Some(client) => client,
                None => return Outcome::Denied(Reason::UnknownClient),
            },
            (None, None) if c.remote.is_some() => {
                return Outcome::Denied(Reason::RegistryUnavailable)
            }
            (None, None) => return Outcome::Denied(Reason::UnknownClient),
        };
        if c.secret_source.is_some() {
            let Some(secret) = secret else {
                return Outcome::Denied(Reason::MissingSecret);
            };
            match &client.secret_sha256 {
                Some(expected) if matches_sha256(secret.as_bytes(), expected) => {}
                _ => return Outcome::Denied(Reason::InvalidSecret),
            }
        }
        if !client.enabled {
            return Outcome::Denied(Reason::DisabledClient);
        }
        match client.contracts.get(&c.api) {
            Some(tier) => Outcome::Allowed(client.clone(), tier.clone()),
            None => Outcome::Denied(Reason::NoContract),
        }
    }

    /// Acts on a decision: hands the identity on and hides credentials, or answers the denial.
    pub fn apply(&self, host: &mut impl Host, outcome: Outcome) -> Verdict {
        let c = &self.config;
        match outcome {
            Outcome::Preflight => {
                self.metrics.preflight_allowed.inc(host);
                Verdict::Continue
            }
            Outcome::Allowed(client, tier) => {
                if publish_identity(&client, tier, host).is_err() {
                    // Later policies could not see who the caller is: refuse rather than let a
                    // tier-less request through.
                    host.log(
                        LogLevel::Error,
                        "client-id-enforcement: cannot record the identity",
                    );
                    return c.unavailable.send(host);
                }
                if c.hide_credentials {
                    if let Some(source) = &c.secret_source {
                        source.remove_from(host);
                    }
                }
                if c.hide_client_id {
                    c.id_source.remove_from(host);
                }
                self.metrics.allowed.inc(host);
                Verdict::Continue
            }
            Outcome::Denied(reason) => {
                let m = &self.metrics;
                let counter = match reason {
                    Reason::MissingClientId => m.missing_client_id,
                    Reason::AmbiguousCredentials => m.ambiguous_credentials,
                    Reason::UnknownClient => m.unknown_client,
                    Reason::MissingSecret => m.missing_secret,
                    Reason::InvalidSecret => m.invalid_secret,
                    Reason::DisabledClient => m.disabled_client,
                    Reason::NoContract => m.no_contract,
                    Reason::RegistryUnavailable => m.registry_unavailable,
                };
                counter.inc(host);
                host.log(
                    LogLevel::Debug,
                    &format!("{NAME}: denied: {}", reason.as_str()),
                );
                let denial = match reason {
                    Reason::NoContract => &c.forbidden,
                    Reason::RegistryUnavailable => &c.unavailable,
                    _ => &c.unauthorized,
                };
                denial.send(host)
            }
        }
    }
}

/// Hands on the identity of `client` admitted at `tier`, serialized on the client's first
/// admitted request and kept in its registry entry.
fn publish_identity(client: &Client, tier: String, host: &mut impl Host) -> Result<(), HostError> {
    if let Some((kept_tier, handoff)) = client.handoff.get() {
        if *kept_tier == tier {
            return handoff.publish(host);
        }
    }
    let handoff = Identity {
        authenticated_by: NAME.into(),
        client_id: Some(client.id.clone()),
        client_name: Some(client.name.clone()).filter(|n| !n.is_empty()),
        tier: Some(tier.clone()),
        ..Identity::default()
    }
    .handoff()
    .map_err(|_| HostError::Other(0))?;
    let published = handoff.publish(host);
    // Kept unless another tier was kept first (one policy has one API, so one tier).
    let _ = client.handoff.set((tier, handoff));
    published
}

impl Policy for ClientIdEnforcement {
    const NAME: &'static str = NAME;
    type State = ();

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        ClientIdEnforcement::configure(config, host)
    }

    fn tick_period_ms(&self) -> u32 {
        if self.remote.is_some() {
            palisade_kit::fetch::TICK_MS
        } else {
            0
        }
    }

    fn on_tick(&self, host: &mut impl Host, wakes: &mut Wakes) {
        if let Some(remote) = &self.remote {
            remote.tick(host, wakes);
        }
    }

    fn on_background_response(
        &self,
        host: &mut impl Host,
        answer: &CallResponse,
        wakes: &mut Wakes,
    ) {
        if let Some(remote) = &self.remote {
            remote.on_response(host, answer, wakes);
        }
    }

    fn on_request_headers(
        &self,
        _: &mut Request<'_, ()>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let Some(remote) = &self.remote else {
            let outcome = self.decide(host, end_of_stream, None);
            return self.apply(host, outcome);
        };
        // This worker's copy as of its last tick (no host call); a denial that a registry
        // published since then could change is decided again on the newer one.
        let registry = remote.recent(host);
        let mut outcome = self.decide(host, end_of_stream, registry.as_ref().map(|(r, _)| &**r));
        if matches!(&outcome, Outcome::Denied(reason) if reason.depends_on_registry()) {
            if let Some((newer, _)) = remote.newer(host) {
                outcome = self.decide(host, end_of_stream, Some(&newer));
            }
        }
        self.apply(host, outcome)
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<ClientIdEnforcement>(); }}

#[cfg(test)]
mod tests;
