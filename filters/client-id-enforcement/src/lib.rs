//! `client-id-enforcement`: client applications present an id (and a secret); the policy
//! checks them against a registry of clients and their contracts, and hands the caller's
//! identity (client id, name, SLA tier for this API) to later policies.
//!
//! [`config`] compiles the configuration, [`registry`] holds clients in a hash map, and
//! [`ClientIdEnforcement::decide`] is the decision, over plain types. The proxy-wasm glue (in
//! `glue`, wasm only) fetches the remote registry once per period per Envoy and publishes it in
//! shared data, where every worker reads it.

pub mod config;
#[cfg(target_arch = "wasm32")]
mod glue;
pub mod registry;

use config::Config;
use palisade_kit::identity::Identity;
use palisade_kit::metrics::Counter;
use palisade_kit::secret::matches_sha256;
use palisade_kit::{ConfigError, Host, LogLevel};
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
    const ALL: [Reason; 7] = [
        Reason::MissingClientId,
        Reason::UnknownClient,
        Reason::MissingSecret,
        Reason::InvalidSecret,
        Reason::DisabledClient,
        Reason::NoContract,
        Reason::RegistryUnavailable,
    ];

    /// The metric outcome name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingClientId => "missing_client_id",
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

/// Counters, defined once at configure time.
struct Metrics {
    allowed: Counter,
    preflight: Counter,
    /// One per [`Reason`], in [`Reason::ALL`] order.
    denied: Vec<Counter>,
}

/// The compiled policy.
pub struct ClientIdEnforcement {
    config: Config,
    metrics: Metrics,
}

impl ClientIdEnforcement {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let mut define = |outcome: &str| Counter::define(host, NAME, outcome);
        let mut denied = Vec::with_capacity(Reason::ALL.len());
        for reason in Reason::ALL {
            denied.push(define(reason.as_str())?);
        }
        let metrics = Metrics {
            allowed: define("allowed")?,
            preflight: define("preflight_allowed")?,
            denied,
        };
        Ok(ClientIdEnforcement { config, metrics })
    }

    /// The compiled configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides on a request. `remote` is this VM's copy of the remote registry, `None` if none
    /// was ever loaded (or none is configured).
    pub fn decide(&self, host: &impl Host, remote: Option<&Registry>) -> Outcome {
        let c = &self.config;
        if c.allow_cors_preflight && palisade_kit::cors::is_preflight(host) {
            return Outcome::Preflight;
        }
        let Some(id) = c.id_source.evaluate(host, &Default::default()) else {
            return Outcome::Denied(Reason::MissingClientId);
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
        if let Some(source) = &c.secret_source {
            let Some(secret) = source.evaluate(host, &Default::default()) else {
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
    /// Returns whether the request may continue.
    pub fn apply(&self, host: &mut impl Host, outcome: Outcome) -> bool {
        let c = &self.config;
        match outcome {
            Outcome::Preflight => {
                self.metrics.preflight.inc(host);
                true
            }
            Outcome::Allowed(client, tier) => {
                let identity = Identity {
                    authenticated_by: NAME.into(),
                    client_id: Some(client.id.clone()),
                    client_name: Some(client.name.clone()).filter(|n| !n.is_empty()),
                    tier: Some(tier),
                    ..Identity::default()
                };
                if identity.publish(host).is_err() {
                    // Later policies could not see who the caller is: refuse rather than let a
                    // tier-less request through.
                    host.log(
                        LogLevel::Error,
                        "client-id-enforcement: cannot record the identity",
                    );
                    let _ = c.unavailable.send(host);
                    return false;
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
                true
            }
            Outcome::Denied(reason) => {
                if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
                    self.metrics.denied[i].inc(host);
                }
                host.log(
                    LogLevel::Debug,
                    &format!("{NAME}: denied: {}", reason.as_str()),
                );
                let denial = match reason {
                    Reason::NoContract => &c.forbidden,
                    Reason::RegistryUnavailable => &c.unavailable,
                    _ => &c.unauthorized,
                };
                let _ = denial.send(host);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
