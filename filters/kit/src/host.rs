//! The host seam: what a policy may ask of Envoy, as a plain trait.
//!
//! [`crate::wasm::WasmHost`] implements it over the proxy-wasm ABI (never panicking on a host
//! status); [`crate::testing`] implements it in memory with Envoy's real semantics, so policy
//! logic is unit-testable natively.

use std::fmt;

/// A host call that did not succeed. Mirrors the proxy-wasm status codes policies act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// The key, header, property or context does not exist.
    NotFound,
    /// The host refused the arguments (unknown cluster, missing pseudo-header, gone context).
    BadArgument,
    /// A shared-data write lost a compare-and-swap race.
    CasMismatch,
    /// Any other status, with its raw code.
    Other(u32),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NotFound => f.write_str("not found"),
            HostError::BadArgument => f.write_str("bad argument"),
            HostError::CasMismatch => f.write_str("cas mismatch"),
            HostError::Other(code) => write!(f, "host status {code}"),
        }
    }
}

/// Log severity, as the proxy-wasm ABI numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very verbose.
    Trace = 0,
    /// Debugging detail: the precise reason of a denial goes here.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something is off but the policy keeps working.
    Warn = 3,
    /// The policy cannot do its job (e.g. a rejected configuration).
    Error = 4,
}

/// A value read from shared data: the bytes (absent for a missing or emptied key) and the CAS
/// stamp to write it back with (absent for a missing key).
pub type SharedValue = (Option<Vec<u8>>, Option<u32>);

/// Everything a policy may ask of the host while deciding on a request or running in the
/// background. Header names are lowercase.
pub trait Host {
    /// A request header's value (the first one when repeated), or `None`.
    fn request_header(&self, name: &str) -> Option<String>;
    /// Replaces (or adds) a request header.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Removes a request header.
    fn remove_request_header(&mut self, name: &str);
    /// A response header's value, or `None` (only meaningful in the response phase).
    fn response_header(&self, name: &str) -> Option<String>;
    /// Replaces (or adds) a response header.
    fn set_response_header(&mut self, name: &str, value: &str);

    /// An Envoy attribute such as `["source", "address"]`, or a value set by
    /// [`Host::set_property`] earlier in the same request.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Stores a per-request value that later filters read with [`Host::property`] and clients
    /// cannot set (Envoy filter state).
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError>;

    /// Reads a shared-data key (one store per `vm_id`, shared by every worker and policy).
    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError>;
    /// Writes a shared-data key. With `cas`, the write fails with [`HostError::CasMismatch`]
    /// if the key changed since it was read; a key that does not exist yet is written
    /// whatever `cas` says (Envoy's semantics). Keys are never deleted.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;

    /// Registers a shared queue owned by this worker. Registering a name again moves the
    /// queue to the new registrant (Envoy: last registrant wins), so give each worker its own
    /// name when each worker must be woken.
    fn register_queue(&mut self, name: &str) -> Result<u32, HostError>;
    /// Appends to a queue; its owner's `on_queue_ready` runs on the owner's thread.
    fn enqueue(&self, queue_id: u32, data: &[u8]) -> Result<(), HostError>;
    /// Takes the oldest item of a queue, if any.
    fn dequeue(&self, queue_id: u32) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets this worker's timer period (0 stops it). Timers run per worker, not per Envoy.
    fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError>;

    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Answers the request locally; it never reaches the upstream.
    fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;

    /// Starts an HTTP call to an Envoy cluster; the answer arrives in the context's callback.
    /// Returns the call's token.
    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError>;

    /// Defines (or finds) a counter by name. Call once, at configure time.
    fn define_counter(&mut self, name: &str) -> Result<u32, HostError>;
    /// Adds to a counter defined with [`Host::define_counter`].
    fn increment_counter(&self, id: u32, delta: i64);

    /// Writes a line to Envoy's log. Never pass secrets.
    fn log(&self, level: LogLevel, message: &str);
}
