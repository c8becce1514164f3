//! The Palisade policy kit: everything two policies need, written once.
//!
//! * [`config`]: strict JSON configuration parsing whose errors name the failing field.
//! * [`denial`]: the one response shape every policy denies with.
//! * [`selector`]: the `header:x`, `query:x`, `ip`, `client-id`, ... syntax that says where a value
//!   comes from.
//! * [`address`]: the client address, from the peer or from trusted `X-Forwarded-For` hops.
//! * [`credentials`]: RFC 7617 Basic credentials.
//! * [`shared`]: compare-and-swap counters and a bounded cache on proxy-wasm shared data.
//! * [`slots`]: per-key state (rate-limit windows) in a bounded table of shared-data slots.
//! * [`identity`]: the authenticated caller, handed from an auth policy to later ones.
//! * [`quota`]: what quota policies share: bucket keys and SLA tiers, counters, denials, config.
//! * [`body`]: request-body inspection: media types, streaming scanners, verdict at end of
//!   stream or trailers.
//! * [`background`]: one fetcher per Envoy (a lease) and documents shared by every worker.
//! * [`secret`]: constant-time comparison and digests.
//! * [`cors`]: recognising CORS preflights, so auth policies can let them pass.
//! * [`metrics`]: `palisade.<policy>.<outcome>` counters.
//! * [`runtime`]: the [`Policy`] trait every policy implements, the one [`Verdict`]
//!   vocabulary, and the host-agnostic driver (paused requests, wake-ups, the unconfigured 503);
//!   each callback sees the host through `view` (each header map, the clock and each property
//!   read once per callback).
//! * [`fetch`]: one background fetcher per Envoy (registries, JWKS, discovery), with backoff,
//!   last-good copies and waiting requests.
//! * [`cache`]: a bounded per-VM cache whose entries expire.
//! * [`bundle`]: several policies run in order as one filter (one VM, one HTTP context).
//! * [`host`]: the trait every policy talks to the host through; `wasm` implements it over the
//!   proxy-wasm ABI and binds a [`Policy`] to Envoy (`wasm::start::<P>()`), `testing` implements
//!   it in memory and runs whole policies natively (`TestEnvoy::deploy`).
//!
//! Policy logic takes `&impl Host` / `&mut impl Host`, so it runs unchanged in Envoy and in
//! `cargo test`.

pub mod address;
pub mod background;
pub mod bench;
pub mod body;
pub mod bundle;
pub mod cache;
pub mod config;
pub mod cors;
pub mod credentials;
pub mod denial;
pub mod fetch;
#[cfg(test)]
mod fuzz_tests;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod quota;
pub mod runs;
pub mod runtime;
pub mod secret;
pub mod selector;
pub mod shared;
pub mod slots;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod view;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod wire;

pub use config::ConfigError;
pub use denial::{Denial, DenialOverride};
pub use host::{BodyBuffer, Direction, HeaderMap, Host, HostError, LogLevel};
pub use runtime::{CallResponse, Policy, Request, Verdict, Wakes};
