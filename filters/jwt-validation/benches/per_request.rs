//! Micro-benchmark: the policy's own work per request, with the configuration of the Envoy
//! benchmark (`tests/src/bin/bench/jwt_validation.rs`: local JWKS, `algorithms: [alg]`,
//! `cacheEntries: 1000`): the same token every request (a verification-cache hit) and a new
//! token every request (a signature check), for RS256 and ES256. Host calls cost nothing here
//! (an in-memory host), so this is the policy's work alone, in µs per request.
//!
//! Natively: `cargo bench -p jwt-validation`. In V8, which is what Envoy runs: build it for wasm
//! (`cargo build --release --target wasm32-wasip1 -p jwt-validation --benches`) and run, from
//! the repository root, `node --no-liftoff scripts/wasi-bench.mjs target/wasm32-wasip1/release/deps/per_request-*.wasm`.
//! The kit's `TestEnvoy` is native-only, hence the small host below.

// A benchmark binary, never deployed: a setup failure stops it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_simple::prelude::*;
use jwt_validation::JwtValidation;
use palisade_kit::host::{GrpcCall, SharedValue};
use palisade_kit::identity::PROPERTY_PATH;
use palisade_kit::{BodyBuffer, Direction, HeaderMap, Host, HostError, LogLevel};
use palisade_kit::{Policy, Request, Verdict, Wakes};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISS: &str = "https://issuer.bench";

/// One request's view of Envoy, in memory: its header map, the property the policy sets, a
/// fixed clock. Everything a cached or verified request does not use fails.
struct BenchHost {
    now_ms: u64,
    headers: Vec<(String, String)>,
    identity: Vec<u8>,
    responded: bool,
}

impl Host for BenchHost {
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        (map == HeaderMap::Request).then_some(found?.1.clone())
    }
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        // The ABI copies the whole map into the VM: so does this.
        if map == HeaderMap::Request {
            self.headers.clone()
        } else {
            Vec::new()
        }
    }
    fn set_header(&mut self, _: HeaderMap, name: &str, value: &str) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.into(), value.into()));
    }
    fn add_header(&mut self, _: HeaderMap, name: &str, value: &str) {
        self.headers.push((name.into(), value.into()));
    }
    fn remove_header(&mut self, _: HeaderMap, name: &str) {
        self.headers.retain(|(n, _)| n != name);
    }
    fn body(&self, _: BodyBuffer, _: usize, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn set_body(&mut self, _: BodyBuffer, _: usize, _: usize, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::NotFound)
    }
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        assert_eq!(path, PROPERTY_PATH);
        self.identity.clear();
        self.identity.extend_from_slice(value);
        Ok(())
    }
    fn shared_get(&self, _: &str) -> Result<SharedValue, HostError> {
        Ok((None, None))
    }
    fn shared_set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), HostError> {
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
        // Only keys the cache: any bytes measure the same.
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        Ok(())
    }
    fn send_response(&mut self, _: u16, _: &[(&str, &str)], _: &[u8]) -> Result<(), HostError> {
        self.responded = true;
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

/// The headers of the Envoy benchmark's request (wrk's), with this token.
fn request(now_ms: u64, token: &str) -> BenchHost {
    let headers = [
        (":authority", "127.0.0.1:10000"),
        (":path", "/"),
        (":method", "GET"),
        (":scheme", "http"),
        ("authorization", &format!("Bearer {token}")),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "6b1d3a3e-2a2f-4a43-9c1e-0d1f6f9c7b11"),
    ];
    BenchHost {
        now_ms,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        identity: Vec::new(),
        responded: false,
    }
}

/// One request through the policy's request-headers callback; whether it was admitted.
fn admit(policy: &JwtValidation, host: &mut BenchHost) -> bool {
    let (mut state, mut wakes) = ((), Wakes::default());
    let mut req = Request {
        id: 7,
        state: &mut state,
        wakes: &mut wakes,
    };
    let verdict = policy.on_request_headers(&mut req, host, true);
    verdict == Verdict::Continue && !host.responded && !host.identity.is_empty()
}

/// µs per call of `f`: best of 5 runs of at least 300 ms, after 300 ms of warm-up.
fn us_per(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(300) {
            f();
            n += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    best
}

fn claims(now_s: u64, jti: usize) -> JWTClaims<Map<String, Value>> {
    let mut c = JWTClaims::<Map<String, Value>>::new();
    c.issuer = Some(ISS.into());
    c.subject = Some("bench".into());
    c.audiences = Some(Audiences::AsString("orders".into()));
    c.expires_at = Some(UnixTimeStamp::from_secs(now_s + 86_400));
    c.custom.insert("jti".into(), jti.to_string().into());
    c
}

fn bench(alg: &str, jwk: String, sign: impl Fn(usize) -> String, now_ms: u64) {
    let config = json!({"issuer": ISS, "audiences": ["orders"], "localJwks": {"keys": [serde_json::from_str::<Value>(&jwk).unwrap()]},
                        "algorithms": [alg], "cacheEntries": 1000})
    .to_string();
    let policy = JwtValidation::configure(config.as_bytes(), &mut request(now_ms, ""))
        .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
    // The same token every request: a cache hit after the first.
    let token = sign(0);
    assert!(admit(&policy, &mut request(now_ms, &token)));
    let cached = us_per(|| {
        let mut host = request(now_ms, &token);
        assert!(admit(&policy, black_box(&mut host)));
    });
    // A new token every request: 2,000 tokens, twice the cache, walked in turn.
    let tokens: Vec<String> = (1..=2000).map(&sign).collect();
    let mut next = 0;
    let unique = us_per(|| {
        let mut host = request(now_ms, &tokens[next % tokens.len()]);
        next += 1;
        assert!(admit(&policy, black_box(&mut host)));
    });
    // What the loops above spend outside the policy (building the request), and what a cache
    // lookup spends on the token: the SHA-256 it used to take, or the keyed hash and the
    // constant-time comparison with the stored token it takes now.
    let setup = us_per(|| {
        black_box(request(now_ms, &token));
    });
    let sha256 = us_per(|| {
        black_box(palisade_kit::secret::sha256(black_box(token.as_bytes())));
    });
    let hash_key = palisade_kit::shared::HashKey::configured(&request(now_ms, "")).unwrap();
    let stored = token.clone();
    let keyed = us_per(|| {
        black_box(hash_key.hash128(black_box(token.as_bytes())));
        black_box(palisade_kit::secret::ct_eq(
            black_box(stored.as_bytes()),
            token.as_bytes(),
        ));
    });
    println!(
        "| {alg} | {} | {cached:.2} | {unique:.1} | {setup:.2} | {sha256:.2} | {keyed:.2} |",
        token.len()
    );
}

fn main() {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let now_s = now_ms / 1000;
    println!(
        "| algorithm | token bytes | same token (cache hit) µs/request | new token (verified) \
         µs/request | request setup µs (in both) | SHA-256 of the token µs | keyed hash + \
         constant-time comparison µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rsa = RS256KeyPair::generate(2048)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_key_id("rsa-a");
    let rsa_jwk = rsa.public_key().to_jwk();
    bench(
        "RS256",
        rsa_jwk,
        |i| rsa.sign(claims(now_s, i)).unwrap_or_else(|e| panic!("{e}")),
        now_ms,
    );
    let ec = ES256KeyPair::generate().with_key_id("ec-a");
    let ec_jwk = ec.public_key().to_jwk();
    bench(
        "ES256",
        ec_jwk,
        |i| ec.sign(claims(now_s, i)).unwrap_or_else(|e| panic!("{e}")),
        now_ms,
    );
}
