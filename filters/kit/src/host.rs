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

/// The header maps of a request, as the proxy-wasm ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    /// The request headers.
    Request = 0,
    /// The request trailers.
    RequestTrailers = 1,
    /// The response headers.
    Response = 2,
    /// The response trailers.
    ResponseTrailers = 3,
    /// The headers of an outbound HTTP call's response (only while handling that response),
    /// `:status` included.
    CallResponse = 6,
}

/// The byte buffers a policy may read, as the proxy-wasm ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyBuffer {
    /// The request body received so far (in request-body callbacks).
    Request = 0,
    /// The response body received so far (in response-body callbacks).
    Response = 1,
    /// The body of an outbound HTTP call's response.
    CallResponse = 4,
    /// The message of a gRPC call's response.
    GrpcResponse = 5,
}

/// A direction of a request's stream, for [`Host::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to upstream.
    Request = 0,
    /// Upstream to client.
    Response = 1,
}

/// A gRPC call to an Envoy cluster ([`Host::dispatch_grpc_call`]).
#[derive(Debug, Clone, Copy)]
pub struct GrpcCall<'a> {
    /// The Envoy cluster (HTTP/2) to call.
    pub cluster: &'a str,
    /// The fully qualified service, e.g. `envoy.service.ratelimit.v3.RateLimitService`.
    pub service: &'a str,
    /// The method, e.g. `ShouldRateLimit`.
    pub method: &'a str,
    /// Initial metadata (request headers).
    pub metadata: &'a [(&'a str, &'a [u8])],
    /// The serialized request message.
    pub message: &'a [u8],
    /// The timeout in milliseconds.
    pub timeout_ms: u32,
}

/// Everything a policy may ask of the host while deciding on a request or running in the
/// background. Header names are lowercase. A policy never calls the proxy-wasm ABI itself: this
/// trait is the whole seam, implemented over the ABI by `wasm::WasmHost` and in memory by
/// `testing::TestRequest`.
pub trait Host {
    /// A header's value (the first one when repeated), or `None`.
    fn header(&self, map: HeaderMap, name: &str) -> Option<String>;
    /// Every header of a map, in order, repeated names included. Costs one host call that
    /// copies the whole map (in a policy callback the kit reads each map once per callback
    /// and answers every read from that copy, so reading several headers costs no more).
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)>;
    /// Every header of a map as the host hands it over in one call (the proxy-wasm wire
    /// format: count, sizes, then each name and value NUL-terminated), or `None` when the map
    /// does not exist in this callback. What the kit's per-callback copy of a map is made of;
    /// policies read headers with [`Host::header`] / [`Host::headers`].
    fn header_map_bytes(&self, map: HeaderMap) -> Option<Vec<u8>> {
        let pairs = self.headers(map);
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        Some(crate::wire::serialize_pairs(&pairs))
    }
    /// Replaces every value of a header with `value` (adds it when absent).
    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str);
    /// Adds a value to a header, keeping the values it has.
    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str);
    /// Removes every value of a header.
    fn remove_header(&mut self, map: HeaderMap, name: &str);

    /// Bytes `start..start + max` of a buffer (fewer at its end; empty when absent).
    fn body(&self, buffer: BodyBuffer, start: usize, max: usize) -> Vec<u8>;
    /// Replaces bytes `start..start + size` of a buffer with `data` (rewrites a body chunk).
    fn set_body(
        &mut self,
        buffer: BodyBuffer,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError>;

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
    /// Appends to a queue. (The runtime has no queue callback yet: a policy polls its queue
    /// with [`Host::dequeue`] from its timer.)
    fn enqueue(&self, queue_id: u32, data: &[u8]) -> Result<(), HostError>;
    /// Takes the oldest item of a queue, if any.
    fn dequeue(&self, queue_id: u32) -> Result<Option<Vec<u8>>, HostError>;
    /// Sets this worker's timer period (0 stops it). Timers run per worker, not per Envoy.
    fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError>;

    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Fills `buf` from the host's entropy source (WASI `random_get`), for secrets. Fails
    /// rather than handing out predictable bytes.
    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError>;

    /// Answers the request locally; it never reaches the upstream.
    fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;

    /// Lets a paused request (or response) go on. Acts on the effective context.
    fn resume(&mut self, direction: Direction) -> Result<(), HostError>;
    /// Makes request `context_id` the one later host calls act on (from a background callback
    /// or another request's). Fails with [`HostError::BadArgument`] when that request is gone.
    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError>;

    /// Starts an HTTP call to an Envoy cluster (`:method`, `:path` and `:authority` are
    /// required). Returns the call's token; the answer reaches the policy callback of the
    /// context that made the call, as a [`crate::runtime::CallResponse`].
    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError>;
    /// Starts a gRPC call (unary) to an Envoy cluster; answered like an HTTP call, with the
    /// gRPC status as the response status and the response message as its body.
    fn dispatch_grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError>;

    /// Defines (or finds) a counter by name. Call once, at configure time.
    fn define_counter(&mut self, name: &str) -> Result<u32, HostError>;
    /// Adds to a counter defined with [`Host::define_counter`].
    fn increment_counter(&self, id: u32, delta: i64);

    /// Writes a line to Envoy's log. Never pass secrets.
    fn log(&self, level: LogLevel, message: &str);

    /// A request header's value (the first one when repeated), or `None`.
    fn request_header(&self, name: &str) -> Option<String> {
        self.header(HeaderMap::Request, name)
    }
    /// Every value of a request header, in order (one per header line).
    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.headers(HeaderMap::Request)
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
    /// Replaces (or adds) a request header.
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.set_header(HeaderMap::Request, name, value);
    }
    /// Removes a request header.
    fn remove_request_header(&mut self, name: &str) {
        self.remove_header(HeaderMap::Request, name);
    }
    /// A response header's value, or `None` (only meaningful in the response phase).
    fn response_header(&self, name: &str) -> Option<String> {
        self.header(HeaderMap::Response, name)
    }
    /// Replaces (or adds) a response header.
    fn set_response_header(&mut self, name: &str, value: &str) {
        self.set_header(HeaderMap::Response, name, value);
    }
    /// Removes a response header.
    fn remove_response_header(&mut self, name: &str) {
        self.remove_header(HeaderMap::Response, name);
    }
}
