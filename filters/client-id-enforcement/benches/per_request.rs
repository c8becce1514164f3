//! Micro-benchmark: the guest-side cost of one allowed request with the benchmark's
//! configuration (`tests/src/bin/bench/client_id_enforcement.rs`: a 50,000-client remote
//! registry, id only), over a host that answers from memory at almost no cost, so what is
//! measured is the policy's own work (allocation, hashing, copies), not host calls.
//!
//! Natively: `cargo bench -p client-id-enforcement`. In V8, which is what Envoy runs: build it
//! for wasm (`cargo build --release --target wasm32-wasip1 -p client-id-enforcement --bench per_request`: `--benches` would build the unit tests for wasm too)
//! and run, from the repository root,
//! `node --no-liftoff scripts/wasi-bench.mjs target/wasm32-wasip1/release/deps/per_request-*.wasm`.

use client_id_enforcement::ClientIdEnforcement;
use palisade_kit::background::SharedDocument;
use palisade_kit::host::{GrpcCall, SharedValue};
use palisade_kit::{
    BodyBuffer, Direction, HeaderMap, Host, HostError, LogLevel, Policy, Request, Verdict, Wakes,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One request's headers, properties and the shared store, in memory.
#[derive(Default)]
struct BenchHost {
    request: Vec<(String, String)>,
    properties: HashMap<String, Vec<u8>>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl Host for BenchHost {
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        (map == HeaderMap::Request)
            .then(|| self.request.iter().find(|(n, _)| n == name))
            .flatten()
            .map(|(_, v)| v.clone())
    }
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        if map == HeaderMap::Request {
            self.request.clone()
        } else {
            Vec::new()
        }
    }
    fn set_header(&mut self, _: HeaderMap, _: &str, _: &str) {}
    fn add_header(&mut self, _: HeaderMap, _: &str, _: &str) {}
    fn remove_header(&mut self, _: HeaderMap, _: &str) {}
    fn body(&self, _: BodyBuffer, _: usize, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn set_body(&mut self, _: BodyBuffer, _: usize, _: usize, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        black_box(path);
        black_box(value);
        Ok(())
    }
    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
        Ok(match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn shared_set(&self, key: &str, value: &[u8], _: Option<u32>) -> Result<(), HostError> {
        let mut shared = self.shared.borrow_mut();
        let cas = shared.get(key).map_or(1, |(_, cas)| cas + 1);
        shared.insert(key.to_owned(), (value.to_vec(), cas));
        Ok(())
    }
    fn register_queue(&mut self, _: &str) -> Result<u32, HostError> {
        Ok(1)
    }
    fn enqueue(&self, _: u32, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn dequeue(&self, _: u32) -> Result<Option<Vec<u8>>, HostError> {
        Ok(None)
    }
    fn set_tick_period_ms(&mut self, _: u32) -> Result<(), HostError> {
        Ok(())
    }
    fn now_ms(&self) -> u64 {
        1_800_000_000_000
    }
    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError> {
        buf.fill(7);
        Ok(())
    }
    fn send_response(&mut self, _: u16, _: &[(&str, &str)], _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn resume(&mut self, _: Direction) -> Result<(), HostError> {
        Ok(())
    }
    fn set_effective_context(&mut self, _: u32) -> Result<(), HostError> {
        Ok(())
    }
    fn dispatch_http_call(
        &mut self,
        _: &str,
        _: &[(&str, &str)],
        _: Option<&[u8]>,
        _: u32,
    ) -> Result<u32, HostError> {
        Ok(1)
    }
    fn dispatch_grpc_call(&mut self, _: &GrpcCall<'_>) -> Result<u32, HostError> {
        Ok(1)
    }
    fn define_counter(&mut self, _: &str) -> Result<u32, HostError> {
        Ok(1)
    }
    fn increment_counter(&self, _: u32, _: i64) {}
    fn log(&self, _: LogLevel, _: &str) {}
}

/// ns per call of `f`: best of 5 runs of at least 200 ms.
fn ns_per_call(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(200) {
            for _ in 0..100 {
                f();
            }
            n += 100;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    const CLIENTS: usize = 50_000;
    let ids: Vec<String> = (0..CLIENTS)
        .map(|i| format!("client-{i:05}-{:08x}", i * 2_654_435_761 % (1 << 31)))
        .collect();
    let mut registry = String::from(r#"{"clients": ["#);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            registry.push(',');
        }
        registry.push_str(&format!(
            r#"{{"clientId":"{id}","contracts":{{"orders":"gold"}}}}"#
        ));
    }
    registry.push_str("]}");

    let mut host = BenchHost::default();
    let config = br#"{"api": "orders", "clientSecretSource": null,
        "registry": {"cluster": "registry", "refreshSeconds": 300}}"#;
    let Ok(policy) = ClientIdEnforcement::configure(config, &mut host) else {
        return eprintln!("configuration refused");
    };
    let Some(remote) = policy.config().remote.as_ref() else {
        return eprintln!("no remote registry");
    };
    let start = Instant::now();
    if SharedDocument::new(&remote.shared_name())
        .publish(&host, registry.as_bytes())
        .is_err()
    {
        return eprintln!("cannot publish");
    }
    let parse = Instant::now();
    if policy.remote().and_then(|f| f.current(&host)).is_none() {
        return eprintln!("registry not parsed");
    }
    println!(
        "registry of {CLIENTS} clients ({} bytes): published in {:?}, parsed in {:?}",
        registry.len(),
        parse - start,
        parse.elapsed()
    );

    host.request = [
        (":authority", "localhost:10000"),
        (":path", "/"),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "wrk"),
        ("client_id", ids[CLIENTS / 2].as_str()),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b1f5a8e-3c9d-4f6a-9e2b-7d4c1a0f8e6b"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();

    let headers = ns_per_call(|| {
        black_box(host.headers(HeaderMap::Request));
    });
    let poll = ns_per_call(|| {
        black_box(policy.remote().and_then(|f| f.current(&host)));
    });
    let whole = ns_per_call(|| {
        let mut wakes = Wakes::default();
        let mut request = Request {
            id: 2,
            state: &mut (),
            wakes: &mut wakes,
        };
        let verdict = policy.on_request_headers(&mut request, &mut host, true);
        assert_eq!(verdict, Verdict::Continue);
    });
    println!("one copy of the request header map (the host's part): {headers:.0} ns");
    println!("registry version poll: {poll:.0} ns");
    println!("allowed request, whole callback: {whole:.0} ns");
}
