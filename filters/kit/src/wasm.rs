//! The proxy-wasm side: [`WasmHost`] implements [`Host`] over the raw proxy-wasm ABI, and
//! [`start`] binds a [`Policy`] (through the host-agnostic [`Vm`]) to proxy-wasm's root and HTTP
//! contexts. This is the only module that names the ABI: a policy's whole `main` is
//! `proxy_wasm::main! {{ palisade_kit::wasm::start::<MyPolicy>(); }}`.
//!
//! The SDK's own `hostcalls` wrappers `panic!` on any host status they do not expect, and a
//! panic aborts the VM and fails every request on it. So the host calls policies make are
//! declared here again (the same `env` imports) and every status becomes a [`HostError`].

use crate::host::{
    BodyBuffer, Direction, GrpcCall, HeaderMap, Host, HostError, LogLevel, SharedValue,
};
use crate::runtime::{CallResponse, Policy, Stream, Verdict, Vm};
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
        pub fn proxy_add_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_continue_stream(stream: u32) -> u32;
    }
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const EMPTY: u32 = 7;
const CAS_MISMATCH: u32 = 8;

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

/// Bytes `start..start + max` of a proxy-wasm buffer (empty when absent).
fn buffer(buffer: u32, start: usize, max: usize) -> Vec<u8> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
    let code = unsafe { abi::proxy_get_buffer_bytes(buffer, start, max, &mut data, &mut size) };
    if code != OK {
        return Vec::new();
    }
    unsafe { owned(data, size) }.unwrap_or_default()
}

/// The plugin configuration's buffer type.
const PLUGIN_CONFIGURATION: u32 = 7;

/// The host as seen from the context Envoy is currently calling into.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

impl Host for WasmHost {
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        header_value(map as u32, name)
    }

    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        self.header_map_bytes(map)
            .map(|bytes| deserialize_pairs(&bytes))
            .unwrap_or_default()
    }

    fn header_map_bytes(&self, map: HeaderMap) -> Option<Vec<u8>> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the host writes a buffer it allocated with our allocator, or nothing.
        let code = unsafe { abi::proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
        if code != OK {
            return None;
        }
        Some(unsafe { owned(data, size) }.unwrap_or_default())
    }

    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        // SAFETY: plain reads of our own buffers.
        unsafe {
            abi::proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            );
        }
    }

    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        // SAFETY: plain reads of our own buffers.
        unsafe {
            abi::proxy_add_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            );
        }
    }

    fn remove_header(&mut self, map: HeaderMap, name: &str) {
        // SAFETY: plain read of our own buffer.
        unsafe {
            abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len());
        }
    }

    fn body(&self, which: BodyBuffer, start: usize, max: usize) -> Vec<u8> {
        buffer(which as u32, start, max)
    }

    fn set_body(
        &mut self,
        buffer: BodyBuffer,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        // SAFETY: plain read of our own buffer.
        status(unsafe {
            abi::proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len())
        })
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

    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError> {
        // `getrandom` calls WASI `random_get` on wasm32-wasip1, which Envoy serves from its own
        // entropy source.
        getrandom::fill(buf).map_err(|e| HostError::Other(e.raw_os_error().unwrap_or(0) as u32))
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

    fn resume(&mut self, direction: Direction) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { abi::proxy_continue_stream(direction as u32) })
    }

    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError> {
        // SAFETY: no pointers.
        status(unsafe { abi::proxy_set_effective_context(context_id) })
    }

    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        // Through the SDK on purpose: its dispatcher must record the token to route the answer
        // to the calling context (it aborts on a token it does not know). It panics only on
        // statuses Envoy's `httpCall` does not return (Ok, BadArgument, InternalFailure).
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            Vec::new(),
            std::time::Duration::from_millis(u64::from(timeout_ms)),
        )
        .map_err(sdk_error)
    }

    fn dispatch_grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        // Through the SDK for the same reason as HTTP calls; Envoy's `grpcCall` returns only
        // Ok, ParseFailure (bad service definition) and InternalFailure (unknown cluster).
        proxy_wasm::hostcalls::dispatch_grpc_call(
            call.cluster,
            call.service,
            call.method,
            call.metadata.to_vec(),
            Some(call.message),
            std::time::Duration::from_millis(u64::from(call.timeout_ms)),
        )
        .map_err(sdk_error)
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

fn sdk_error(status: proxy_wasm::types::Status) -> HostError {
    match status {
        proxy_wasm::types::Status::BadArgument => HostError::BadArgument,
        proxy_wasm::types::Status::NotFound => HostError::NotFound,
        other => HostError::Other(other as u32),
    }
}

/// Registers `P` as this module's policy. Call from `proxy_wasm::main!`.
pub fn start<P: Policy>() {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| {
        Box::new(Root::<P> {
            vm: Rc::new(Vm::new(context_id)),
        })
    });
}

/// A VM's root context: configuration, the timer and background calls.
struct Root<P: Policy> {
    vm: Rc<Vm<P>>,
}

impl<P: Policy> Context for Root<P> {
    /// The VM is shutting down: hand Envoy the counts kept since the last tick.
    fn on_done(&mut self) -> bool {
        self.vm.flush(&WasmHost);
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let response = http_call_response(token, body_size);
        self.vm.on_background_response(&mut WasmHost, &response);
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let response = grpc_call_response(token, status_code, response_size);
        self.vm.on_background_response(&mut WasmHost, &response);
    }
}

impl<P: Policy> RootContext for Root<P> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = buffer(PLUGIN_CONFIGURATION, 0, usize::MAX);
        self.vm.configure(&config, &mut WasmHost)
    }

    fn on_tick(&mut self) {
        self.vm.on_tick(&mut WasmHost);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            stream: self.vm.stream(context_id),
            vm: self.vm.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn http_call_response(token: u32, body_size: usize) -> CallResponse {
    CallResponse {
        token,
        status: WasmHost
            .header(HeaderMap::CallResponse, ":status")
            .and_then(|s| s.parse().ok()),
        body_size,
        grpc: false,
    }
}

fn grpc_call_response(token: u32, status_code: u32, body_size: usize) -> CallResponse {
    CallResponse {
        token,
        status: u16::try_from(status_code).ok(),
        body_size,
        grpc: true,
    }
}

fn action(verdict: Verdict) -> Action {
    match verdict {
        Verdict::Continue => Action::Continue,
        Verdict::Pause | Verdict::Respond => Action::Pause,
    }
}

/// A request's HTTP context.
struct Http<P: Policy> {
    vm: Rc<Vm<P>>,
    stream: Stream<P>,
}

impl<P: Policy> Context for Http<P> {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let response = http_call_response(token, body_size);
        self.vm
            .on_call_response(&self.stream, &mut WasmHost, &response);
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let response = grpc_call_response(token, status_code, response_size);
        self.vm
            .on_call_response(&self.stream, &mut WasmHost, &response);
    }

    fn on_done(&mut self) -> bool {
        self.vm.on_done(&self.stream, &mut WasmHost);
        true
    }
}

impl<P: Policy> HttpContext for Http<P> {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(
            self.vm
                .on_request_headers(&self.stream, &mut WasmHost, end_of_stream),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.vm
                .on_request_body(&self.stream, &mut WasmHost, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        action(self.vm.on_request_trailers(&self.stream, &mut WasmHost))
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(
            self.vm
                .on_response_headers(&self.stream, &mut WasmHost, end_of_stream),
        )
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.vm
                .on_response_body(&self.stream, &mut WasmHost, body_size, end_of_stream),
        )
    }
}
