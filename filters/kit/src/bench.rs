//! For a policy's micro-benchmarks (`benches/`), which also run as wasm32-wasip1 binaries in
//! Node's V8 (`scripts/wasi-bench.mjs`), where [`crate::testing`] is not built: a [`BenchHost`]
//! that answers from memory at almost no cost, so what is measured is the policy's own work
//! (allocation, hashing, copies), not host calls; and [`micros_per_call`].

use crate::host::{
    BodyBuffer, Direction, GrpcCall, HeaderMap, Host, HostError, LogLevel, SharedValue,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One request's view of Envoy, in memory: its request headers, properties (by `.`-joined
/// path; written ones kept), shared data (with CAS stamps), a fixed clock and whether the
/// policy answered. Calls a header policy does not make (bodies, queues, outbound calls) fail.
#[derive(Debug, Default)]
pub struct BenchHost {
    /// The request headers, in order.
    pub request: Vec<(String, String)>,
    /// Properties by `.`-joined path.
    pub properties: HashMap<String, Vec<u8>>,
    /// Shared data: value and CAS stamp per key.
    pub shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    /// What `now_ms` answers.
    pub now_ms: u64,
    /// The status of the local reply the policy sent, if it sent one.
    pub responded: Option<u16>,
}

impl BenchHost {
    /// A host whose request carries `headers`, at `now_ms`.
    pub fn request(now_ms: u64, headers: &[(&str, &str)]) -> Self {
        BenchHost {
            request: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            now_ms,
            ..BenchHost::default()
        }
    }
}

impl Host for BenchHost {
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        let found = self.request.iter().find(|(n, _)| n == name);
        (map == HeaderMap::Request).then_some(found?.1.clone())
    }
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        // The ABI copies the whole map into the VM: so does this.
        match map {
            HeaderMap::Request => self.request.clone(),
            _ => Vec::new(),
        }
    }
    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.remove_header(map, name);
        self.add_header(map, name, value);
    }
    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        if map == HeaderMap::Request {
            self.request.push((name.into(), value.into()));
        }
    }
    fn remove_header(&mut self, map: HeaderMap, name: &str) {
        if map == HeaderMap::Request {
            self.request.retain(|(n, _)| n != name);
        }
    }
    fn body(&self, _: BodyBuffer, _: usize, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn set_body(&mut self, _: BodyBuffer, _: usize, _: usize, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::NotFound)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.properties.insert(path.join("."), value.to_vec());
        Ok(())
    }
    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
        Ok(match self.shared.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let mut shared = self.shared.borrow_mut();
        let current = shared.get(key).map(|(_, stamp)| *stamp);
        // Envoy's rule: a stamp other than 0 must match the key's, when the key exists.
        if let (Some(cas), Some(current)) = (cas, current) {
            if cas != 0 && cas != current {
                return Err(HostError::CasMismatch);
            }
        }
        let stamp = current.map_or(1, |stamp| stamp.wrapping_add(1));
        shared.insert(key.to_owned(), (value.to_vec(), stamp));
        Ok(())
    }
    fn register_queue(&mut self, _: &str) -> Result<u32, HostError> {
        Err(HostError::NotFound)
    }
    fn enqueue(&self, _: u32, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::NotFound)
    }
    fn dequeue(&self, _: u32) -> Result<Option<Vec<u8>>, HostError> {
        Err(HostError::NotFound)
    }
    fn set_tick_period_ms(&mut self, _: u32) -> Result<(), HostError> {
        Ok(())
    }
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError> {
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        Ok(())
    }
    fn send_response(
        &mut self,
        status: u16,
        _: &[(&str, &str)],
        _: &[u8],
    ) -> Result<(), HostError> {
        self.responded = Some(status);
        Ok(())
    }
    fn resume(&mut self, _: Direction) -> Result<(), HostError> {
        Err(HostError::NotFound)
    }
    fn set_effective_context(&mut self, _: u32) -> Result<(), HostError> {
        Err(HostError::NotFound)
    }
    fn dispatch_http_call(
        &mut self,
        _: &str,
        _: &[(&str, &str)],
        _: Option<&[u8]>,
        _: u32,
    ) -> Result<u32, HostError> {
        Err(HostError::NotFound)
    }
    fn dispatch_grpc_call(&mut self, _: &GrpcCall<'_>) -> Result<u32, HostError> {
        Err(HostError::NotFound)
    }
    fn define_counter(&mut self, _: &str) -> Result<u32, HostError> {
        Ok(0)
    }
    fn increment_counter(&self, _: u32, _: i64) {}
    fn log(&self, _: LogLevel, _: &str) {}
}

/// Microseconds per call of `f`: the best of 5 runs of at least 300 ms each, after 300 ms of
/// warm-up (V8 tiers code up while it runs).
pub fn micros_per_call(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u32;
        while start.elapsed() < Duration::from_millis(300) {
            f();
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
    }
    best
}
