//! Micro-benchmark: the guest-side cost of one allowed request with the benchmark's
//! configuration (`tests/src/bin/bench/client_id_enforcement.rs`: a 50,000-client remote
//! registry, id only), over the kit's `BenchHost`, which answers from memory at almost no cost,
//! so what is measured is the policy's own work (allocation, hashing, copies), not host calls.
//!
//! Natively: `cargo bench -p client-id-enforcement`. In V8, which is what Envoy runs: build it
//! for wasm (`cargo build --release --target wasm32-wasip1 -p client-id-enforcement --bench
//! per_request`: `--benches` would build the unit tests for wasm too) and run, from the repository root,
//! `node --no-liftoff scripts/wasi-bench.mjs target/wasm32-wasip1/release/deps/per_request-*.wasm`.

use client_id_enforcement::ClientIdEnforcement;
use palisade_kit::background::SharedDocument;
use palisade_kit::bench::{micros_per_call, BenchHost};
use palisade_kit::{HeaderMap, Host, Policy, Request, Verdict, Wakes};
use std::hint::black_box;
use std::time::Instant;

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

    let mut host = BenchHost {
        now_ms: 1_800_000_000_000,
        ..BenchHost::default()
    };
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

    let headers = micros_per_call(|| {
        black_box(host.headers(HeaderMap::Request));
    });
    let poll = micros_per_call(|| {
        black_box(policy.remote().and_then(|f| f.current(&host)));
    });
    let whole = micros_per_call(|| {
        let mut wakes = Wakes::default();
        let mut request = Request {
            id: 2,
            state: &mut (),
            wakes: &mut wakes,
        };
        let verdict = policy.on_request_headers(&mut request, &mut host, true);
        assert_eq!(verdict, Verdict::Continue);
    });
    let ns = |micros: f64| micros * 1000.0;
    println!(
        "one copy of the request header map (the host's part): {:.0} ns",
        ns(headers)
    );
    println!("registry version poll: {:.0} ns", ns(poll));
    println!("allowed request, whole callback: {:.0} ns", ns(whole));
}
