//! The shape of a policy that decides on request headers alone.
//!
//! The policy crate implements [`HeaderPolicy`] over plain types; [`crate::wasm`] turns it into
//! proxy-wasm root and HTTP contexts. Configuration is compiled once per VM; per request the
//! policy only evaluates.

use crate::config::ConfigError;
use crate::host::Host;

/// What the policy decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through to the next filter.
    Continue,
    /// The policy has answered the request itself (a denial); stop it here.
    Respond,
}

/// A policy that decides in the request-headers phase.
pub trait HeaderPolicy: Sized + 'static {
    /// The policy's name (kebab-case; also its artifact and metric name).
    const NAME: &'static str;

    /// Compiles the JSON configuration; `host` is available to define metrics.
    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError>;

    /// Decides on a request whose headers have arrived.
    fn on_request_headers(&self, host: &mut impl Host) -> Verdict;
}
