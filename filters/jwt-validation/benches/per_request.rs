//! Micro-benchmark: the policy's own work per request, with the configuration of the Envoy
//! benchmark (`tests/src/bin/bench/jwt_validation.rs`: local JWKS, `algorithms: [alg]`,
//! `cacheEntries: 1000`): the same token every request (a verification-cache hit) and a new
//! token every request (a signature check, with `cacheEntries: 0`), for RS256 and ES256, then
//! where a new token's time goes. Host calls cost nothing here (the kit's in-memory
//! `BenchHost`), so this is the policy's work alone, in µs per request.
//!
//! Natively: `cargo bench -p jwt-validation`. In V8, which is what Envoy runs: build it for wasm
//! (`cargo build --release --target wasm32-wasip1 -p jwt-validation --bench per_request`) and run, from
//! the repository root, `node --no-liftoff scripts/wasi-bench.mjs target/wasm32-wasip1/release/deps/per_request-*.wasm`.

// A benchmark binary, never deployed: a setup failure stops it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_simple::prelude::*;
use jwt_validation::JwtValidation;
use palisade_kit::bench::{micros_per_call, BenchHost};
use palisade_kit::identity::PROPERTY_PATH;
use palisade_kit::{Policy, Request, Verdict, Wakes};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

const ISS: &str = "https://issuer.bench";

fn request(now_ms: u64, token: &str) -> BenchHost {
    let authorization = format!("Bearer {token}");
    BenchHost::request(
        now_ms,
        &[
            (":authority", "127.0.0.1:10000"),
            (":path", "/"),
            (":method", "GET"),
            (":scheme", "http"),
            ("authorization", &authorization),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "6b1d3a3e-2a2f-4a43-9c1e-0d1f6f9c7b11"),
        ],
    )
}

fn admit(policy: &JwtValidation, host: &mut BenchHost) -> bool {
    let (mut state, mut wakes) = ((), Wakes::default());
    let mut req = Request {
        id: 7,
        state: &mut state,
        wakes: &mut wakes,
    };
    let verdict = policy.on_request_headers(&mut req, host, true);
    verdict == Verdict::Continue
        && host.responded.is_none()
        && host.properties.contains_key(&PROPERTY_PATH.join("."))
}

/// µs per call of `f`: best of 5 runs of at least 300 ms, after 300 ms of warm-up.
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
    let configure = |entries: usize| {
        let config = json!({"issuer": ISS, "audiences": ["orders"], "localJwks": {"keys": [serde_json::from_str::<Value>(&jwk).unwrap()]},
                            "algorithms": [alg], "cacheEntries": entries})
        .to_string();
        JwtValidation::configure(config.as_bytes(), &mut request(now_ms, ""))
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"))
    };
    let policy = configure(1000);
    // The same token every request: a cache hit after the first.
    let token = sign(0);
    assert!(admit(&policy, &mut request(now_ms, &token)));
    let cached = micros_per_call(|| {
        let mut host = request(now_ms, &token);
        assert!(admit(&policy, black_box(&mut host)));
    });
    // A new token every request: the cache off, so that every token is verified (walking
    // more tokens than the cache holds is not enough: the cache evicts an arbitrary entry, so
    // many of them would still be hits).
    let uncached = configure(0);
    let tokens: Vec<String> = (1..=200).map(&sign).collect();
    let mut next = 0;
    let unique = micros_per_call(|| {
        let mut host = request(now_ms, &tokens[next % tokens.len()]);
        next += 1;
        assert!(admit(&uncached, black_box(&mut host)));
    });
    // What the loops above spend outside the policy (building the request), and what a cache
    // lookup spends on the token: the SHA-256 it used to take, or the keyed hash and the
    // constant-time comparison with the stored token it takes now.
    let setup = micros_per_call(|| {
        black_box(request(now_ms, &token));
    });
    let sha256 = micros_per_call(|| {
        black_box(palisade_kit::secret::sha256(black_box(token.as_bytes())));
    });
    let hash_key = palisade_kit::shared::HashKey::configured(&request(now_ms, "")).unwrap();
    let stored = token.clone();
    let keyed = micros_per_call(|| {
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

/// Where a new token's time goes: decoding (base64 and JSON of header and claims, as `validate`
/// does), hashing the signed part, and the signature math alone; for ES256 also the `p256`
/// crate's own verification of the same signature (what jwt-simple called), for comparison.
fn split(alg: &str, jwk: &str, token: &str) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use sha2::Digest;
    let jwk: Value = serde_json::from_str(jwk).unwrap();
    let field = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let (header, payload) = signed.split_once('.').unwrap();
    let decode = micros_per_call(|| {
        for part in [header, payload] {
            let bytes = URL_SAFE_NO_PAD.decode(black_box(part)).unwrap();
            black_box(serde_json::from_slice::<Map<String, Value>>(&bytes).unwrap());
        }
        black_box(
            URL_SAFE_NO_PAD
                .decode(black_box(token.rsplit_once('.').unwrap().1))
                .unwrap(),
        );
    });
    let hash = micros_per_call(|| {
        black_box(sha2::Sha256::digest(black_box(signed.as_bytes())));
    });
    let digest = sha2::Sha256::digest(signed.as_bytes());
    let (math, reference) = if alg == "RS256" {
        let (n, e) = (field("n"), field("e"));
        let key = jwt_validation::rsa::RsaKey::new(&n, &e).unwrap();
        let scheme = jwt_validation::rsa::Scheme::Pkcs1(jwt_validation::rsa::Hash::Sha256);
        assert!(key.verify(scheme, signed.as_bytes(), &signature));
        let ours = micros_per_call(|| {
            assert!(key.verify(scheme, black_box(signed.as_bytes()), &signature));
        });
        // ring, which this replaced, measured 2.6x this in V8 (README, "Performance").
        let theirs = None;
        let parse = micros_per_call(|| {
            black_box(jwt_validation::rsa::RsaKey::new(&n, &e).unwrap());
        });
        println!("| RS256 key parse (once per key) | {parse:.1} |");
        (ours, theirs)
    } else {
        let mut point = vec![4u8];
        point.extend(field("x"));
        point.extend(field("y"));
        let key = jwt_validation::ecdsa::P256Key::from_sec1_bytes(&point).unwrap();
        assert!(key.verify_prehash(&digest, &signature));
        let ours = micros_per_call(|| {
            assert!(key.verify_prehash(black_box(&digest), &signature));
        });
        let reference = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&signature).unwrap();
        let theirs = Some(micros_per_call(|| {
            reference.verify_prehash(black_box(&digest), &sig).unwrap();
        }));
        let parse = micros_per_call(|| {
            black_box(jwt_validation::ecdsa::P256Key::from_sec1_bytes(&point).unwrap());
        });
        println!("| ES256 key parse and table (once per key) | {parse:.1} |");
        (ours, theirs)
    };
    let reference = reference.map_or("–".to_string(), |r| format!("{r:.1}"));
    println!("| {alg} | {decode:.1} | {hash:.2} | {math:.1} | {reference} |");
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
        rsa_jwk.clone(),
        |i| rsa.sign(claims(now_s, i)).unwrap_or_else(|e| panic!("{e}")),
        now_ms,
    );
    let ec = ES256KeyPair::generate().with_key_id("ec-a");
    let ec_jwk = ec.public_key().to_jwk();
    bench(
        "ES256",
        ec_jwk.clone(),
        |i| ec.sign(claims(now_s, i)).unwrap_or_else(|e| panic!("{e}")),
        now_ms,
    );
    println!();
    println!(
        "| algorithm | base64 + JSON µs | SHA-256 µs | signature math µs | `p256` crate's verification µs |"
    );
    println!("|---|---:|---:|---:|---:|");
    split("RS256", &rsa_jwk, &rsa.sign(claims(now_s, 1)).unwrap());
    split("ES256", &ec_jwk, &ec.sign(claims(now_s, 1)).unwrap());
}
