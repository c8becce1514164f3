//! The proxy-wasm side: [`WasmHost`] implements [`Host`] over the raw proxy-wasm ABI, and
//! [`start_header_policy`] turns a [`HeaderPolicy`] into root and HTTP contexts.
//!
//! The SDK's own `hostcalls` wrappers `panic!` on any host status they do not expect, and a
//! panic aborts the VM and fails every request on it. So the host calls policies make are
//! declared here again (the same `env` imports) and every status becomes a [`HostError`].

use crate::host::{Host, HostError, LogLevel, SharedValue};
use crate::policy::{HeaderPolicy, Verdict};
use crate::wire::{deserialize_pairs, serialize_pairs};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::ptr::{null, null_mut};
use std::rc::Rc;

mod abi {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        pub fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer: u32,
            start: usize,
            max: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
        pub fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path: *const u8,
            path_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            out_data: *mut *mut u8,
            out_size: *mut usize,
            out_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_register_shared_queue(name: *const u8, size: usize, out_id: *mut u32) -> u32;
        pub fn proxy_enqueue_shared_queue(id: u32, data: *const u8, size: usize) -> u32;
        pub fn proxy_dequeue_shared_queue(
            id: u32,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_define_metric(
            kind: u32,
            name: *const u8,
            size: usize,
            out_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(id: u32, delta: i64) -> u32;
        pub fn proxy_get_header_map_pairs(
            map: u32,
            out_data: *mut *mut u8,
            out_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_continue_stream(stream: u32) -> u32;
    }
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const EMPTY: u32 = 7;
const CAS_MISMATCH: u32 = 8;

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const COUNTER: u32 = 0;

fn status(code: u32) -> Result<(), HostError> {
    match code {
        OK => Ok(()),
        NOT_FOUND => Err(HostError::NotFound),
        BAD_ARGUMENT => Err(HostError::BadArgument),
        CAS_MISMATCH => Err(HostError::CasMismatch),
        other => Err(HostError::Other(other)),
    }
}

/// Takes ownership of a buffer the host allocated through the SDK's
/// `proxy_on_memory_allocate` (a boxed byte slice of exactly `size` bytes).
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

fn header_value(map: u32, name: &str) -> Option<String> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
    let code = unsafe {
        abi::proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    if code != OK {
        return None;
    }
    let bytes = unsafe { owned(data, size) }.unwrap_or_default();
    String::from_utf8(bytes).ok()
}

fn replace_header(map: u32, name: &str, value: &str) {
    // SAFETY: plain reads of our own buffers.
    unsafe {
        abi::proxy_replace_header_map_value(
            map,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        );
    }
}

/// The host as seen from the context Envoy is currently calling into.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        header_value(REQUEST_HEADERS, name)
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        replace_header(REQUEST_HEADERS, name, value);
    }

    fn remove_request_header(&mut self, name: &str) {
        // SAFETY: plain read of our own buffer.
        unsafe {
            abi::proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len());
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        header_value(RESPONSE_HEADERS, name)
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        replace_header(RESPONSE_HEADERS, name, value);
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let path = path.join("\0");
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
        let code =
            unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
        if code != OK {
            return None;
        }
        unsafe { owned(data, size) }
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let path = path.join("\0");
        // SAFETY: plain reads of our own buffers.
        status(unsafe {
            abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
        })
    }

    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        let mut cas = 0;
        // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
        let code = unsafe {
            abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match status(code) {
            Ok(()) => {
                let value = unsafe { owned(data, size) }.filter(|v| !v.is_empty());
                Ok((value, (cas != 0).then_some(cas)))
            }
            Err(HostError::NotFound) => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        // SAFETY: plain reads of our own buffers.
        status(unsafe {
            abi::proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        })
    }

    fn register_queue(&mut self, name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: plain read of our own buffer; the host writes one u32.
        status(unsafe { abi::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }

    fn enqueue(&self, queue_id: u32, data: &[u8]) -> Result<(), HostError> {
        // SAFETY: plain read of our own buffer.
        status(unsafe { abi::proxy_enqueue_shared_queue(queue_id, data.as_ptr(), data.len()) })
    }

    fn dequeue(&self, queue_id: u32) -> Result<Option<Vec<u8>>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
        match unsafe { abi::proxy_dequeue_shared_queue(queue_id, &mut data, &mut size) } {
            OK => Ok(Some(unsafe { owned(data, size) }.unwrap_or_default())),
            EMPTY => Ok(None),
            code => status(code).map(|()| None),
        }
    }

    fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { abi::proxy_set_tick_period_milliseconds(period_ms) })
    }

    fn now_ms(&self) -> u64 {
        let mut nanos = 0u64;
        // SAFETY: the host writes one u64.
        unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) };
        nanos / 1_000_000
    }

    fn send_response(
        &mut self,
        status_code: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let headers = serialize_pairs(headers);
        // SAFETY: plain reads of our own buffers.
        status(unsafe {
            abi::proxy_send_local_response(
                u32::from(status_code),
                null(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }

    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        // Through the SDK on purpose: its dispatcher must record the token to route the answer
        // to `on_http_call_response` (it aborts on a token it does not know). It panics only on
        // statuses Envoy's `httpCall` does not return (Ok, BadArgument, InternalFailure).
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            Vec::new(),
            std::time::Duration::from_millis(u64::from(timeout_ms)),
        )
        .map_err(|status| match status {
            proxy_wasm::types::Status::BadArgument => HostError::BadArgument,
            other => HostError::Other(other as u32),
        })
    }

    fn define_counter(&mut self, name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: plain read of our own buffer; the host writes one u32.
        status(unsafe { abi::proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }

    fn increment_counter(&self, id: u32, delta: i64) {
        // SAFETY: no pointers. A failed increment only loses a metric sample.
        unsafe { abi::proxy_increment_metric(id, delta) };
    }

    fn log(&self, level: LogLevel, message: &str) {
        // SAFETY: plain read of our own buffer.
        unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
    }
}

/// The plugin configuration bytes (empty when none was given).
pub fn plugin_configuration() -> Vec<u8> {
    buffer_bytes(Buffer::PluginConfiguration, 0, usize::MAX)
}

/// Proxy-wasm buffer types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Buffer {
    /// The request body (in body callbacks: the chunk(s) buffered so far).
    RequestBody = 0,
    /// The response body.
    ResponseBody = 1,
    /// The body of an HTTP call's response (in `on_http_call_response`).
    HttpCallResponseBody = 4,
    /// The plugin configuration.
    PluginConfiguration = 7,
}

/// Proxy-wasm header maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HeaderMap {
    /// Request headers.
    RequestHeaders = 0,
    /// Request trailers.
    RequestTrailers = 1,
    /// Response headers.
    ResponseHeaders = 2,
    /// Response trailers.
    ResponseTrailers = 3,
    /// Headers of an HTTP call's response (in `on_http_call_response`).
    HttpCallResponseHeaders = 6,
}

/// Bytes `start..start+max` of a buffer (empty when absent).
pub fn buffer_bytes(buffer: Buffer, start: usize, max: usize) -> Vec<u8> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
    let code =
        unsafe { abi::proxy_get_buffer_bytes(buffer as u32, start, max, &mut data, &mut size) };
    if code != OK {
        return Vec::new();
    }
    unsafe { owned(data, size) }.unwrap_or_default()
}

/// Replaces bytes `start..start+size` of a buffer with `data` (e.g. rewrites a body chunk).
pub fn set_buffer_bytes(
    buffer: Buffer,
    start: usize,
    size: usize,
    data: &[u8],
) -> Result<(), HostError> {
    // SAFETY: plain read of our own buffer.
    status(unsafe {
        abi::proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len())
    })
}

/// One header of any map (e.g. an HTTP call's response `:status`).
pub fn map_value(map: HeaderMap, name: &str) -> Option<String> {
    header_value(map as u32, name)
}

/// All headers of a map, in order. Names and values that are not UTF-8 are skipped.
pub fn map_pairs(map: HeaderMap) -> Vec<(String, String)> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
    let code = unsafe { abi::proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    if code != OK {
        return Vec::new();
    }
    let bytes = unsafe { owned(data, size) }.unwrap_or_default();
    deserialize_pairs(&bytes)
}

/// Makes `context_id` the context later host calls act on (from a root context's timer or
/// queue callback). Fails with [`HostError::BadArgument`] when that request is gone.
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    status(unsafe { abi::proxy_set_effective_context(context_id) })
}

/// Resumes the (effective) paused request.
pub fn resume_http_request() -> Result<(), HostError> {
    // SAFETY: no pointers. Stream type 0 is the HTTP request.
    status(unsafe { abi::proxy_continue_stream(0) })
}

/// Resumes the (effective) paused response.
pub fn resume_http_response() -> Result<(), HostError> {
    // SAFETY: no pointers. Stream type 1 is the HTTP response.
    status(unsafe { abi::proxy_continue_stream(1) })
}

/// Answers a request whose policy is not configured: unreachable in practice (Envoy does not
/// run a filter whose configure failed), but if it happens, deny (503) rather than let traffic
/// through unchecked.
pub(crate) fn deny_unconfigured() -> Action {
    let denial = crate::Denial::new(503, "policy_unavailable", "The policy is not configured.");
    let _ = denial.send(&mut WasmHost);
    Action::Pause
}

/// Compiles a policy's configuration in a root context's `on_configure`. On error it logs the
/// error naming the policy and returns `None`; the caller then returns false and Envoy refuses
/// the filter (or does not start): fail closed.
pub fn configure_policy<P>(
    name: &str,
    configure: impl FnOnce(&[u8], &mut WasmHost) -> Result<P, crate::ConfigError>,
) -> Option<P> {
    let mut host = WasmHost;
    match configure(&plugin_configuration(), &mut host) {
        Ok(policy) => Some(policy),
        Err(err) => {
            host.log(LogLevel::Error, &format!("{name}: {err}"));
            None
        }
    }
}

/// The root context of a policy (header or body): compiles the configuration once per VM and
/// hands it to each request's HTTP context.
pub(crate) struct PolicyRoot<P> {
    /// The policy name, for the configuration error.
    pub(crate) name: &'static str,
    /// Compiles the configuration.
    pub(crate) configure: fn(&[u8], &mut WasmHost) -> Result<P, crate::ConfigError>,
    /// A request's HTTP context.
    pub(crate) stream: fn(Option<Rc<P>>) -> Box<dyn HttpContext>,
    /// The compiled policy, once configured.
    pub(crate) policy: Option<Rc<P>>,
}

impl<P> Context for PolicyRoot<P> {}

impl<P> RootContext for PolicyRoot<P> {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.policy = configure_policy(self.name, self.configure).map(Rc::new);
        self.policy.is_some()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some((self.stream)(self.policy.clone()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Registers `P` as this module's policy. Call from `proxy_wasm::main!`.
pub fn start_header_policy<P: HeaderPolicy>() {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| {
        Box::new(PolicyRoot::<P> {
            name: P::NAME,
            configure: |config, host| P::configure(config, host),
            stream: |policy| Box::new(HeaderPolicyStream { policy }),
            policy: None,
        })
    });
}

struct HeaderPolicyStream<P> {
    policy: Option<Rc<P>>,
}

impl<P: HeaderPolicy> Context for HeaderPolicyStream<P> {}

impl<P: HeaderPolicy> HttpContext for HeaderPolicyStream<P> {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = &self.policy else {
            return deny_unconfigured();
        };
        match policy.on_request_headers(&mut WasmHost) {
            Verdict::Continue => Action::Continue,
            Verdict::Respond => Action::Pause,
        }
    }
}
