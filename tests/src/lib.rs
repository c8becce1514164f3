//! The real-Envoy test harness every policy's integration tests use.
//!
//! * [`Upstream`]: an echo server on loopback that answers every request with what it received
//!   (method, path, headers, body) as JSON, and remembers how many requests reached it.
//! * [`Gateway`]: renders an Envoy configuration (listener, connection manager, the filters under
//!   test, a route to the upstream), starts stock Envoy with `--concurrency 2` on free loopback
//!   ports (IPv4 or IPv6), waits until it is ready, and kills it when dropped. If the test is
//!   failing, Envoy's log is printed.
//! * [`http1`] / [`http2`]: clients that can send from any 127.0.0.0/8 source address, so peer
//!   address policies are tested with real connections; [`Connection`]: an HTTP/1.1
//!   keep-alive connection for load (the soak, `src/bin/soak.rs`).
//! * [`GatewayBuilder::dynamic_listener`] / [`Gateway::reload_listener`]: a listener served by
//!   LDS from a watched file, replaced while Envoy runs.
//! * [`MockServer`] answers can be slow ([`Answer::delayed`]) or cut short
//!   ([`Answer::cut_after`]), for the fault tests (`it/faults.rs`).
//! * [`jwt`]: HS256 and RS256 test tokens (and the RSA key's JWKS) without an identity
//!   provider.
//! * [`tls`]: a test PKI generated with `openssl` (CA, server certificate for 127.0.0.1, client
//!   certificates), TLS listeners ([`GatewayBuilder::tls`]) and an HTTPS client with client
//!   certificates ([`Gateway::https`], [`Gateway::https_h2`]).
//!
//! Artifacts come from `PALISADE_DIST` (set by `make test`) or `dist/`, built on first use when
//! missing; Envoy from `ENVOY_BIN` or `.tools/bin/envoy` (installed by `make tools`).

pub mod body;
pub mod client;
pub mod envoy;
pub mod jwt;
pub mod quota;
pub mod tls;
pub mod upstream;

pub use client::{http1, http2, Connection, Request, Response};
pub use envoy::{Filter, Gateway, GatewayBuilder, Route};
pub use tls::{ClientCert, ClientTls, Pki, ServerTls};
pub use upstream::{Answer, MockServer, Received, Upstream};

use std::path::{Path, PathBuf};
use std::sync::Once;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// The Envoy binary: `ENVOY_BIN`, else the one `make tools` installed.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let local = root().join(".tools/bin/envoy");
    assert!(
        local.exists(),
        "Envoy not found: run `make tools` (or set ENVOY_BIN)"
    );
    local
}

/// The built artifact of `policy`, building all artifacts once if it is missing.
pub fn wasm(policy: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let dist = std::env::var_os("PALISADE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("dist"));
    let path = dist.join(format!("{policy}.wasm"));
    if !path.exists() {
        BUILD.call_once(|| {
            let status = std::process::Command::new("bash")
                .arg(root().join("scripts/build.sh"))
                .status()
                .expect("run scripts/build.sh");
            assert!(status.success(), "scripts/build.sh failed");
        });
    }
    assert!(path.exists(), "no artifact {}", path.display());
    path
}

/// A fresh scratch directory for one test's files.
pub fn scratch_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = root().join("target/palisade-it").join(format!(
        "{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A response is the kit's denial with `status` and error `code`, and came from the gateway
/// (the echo upstream marks its answers with `x-upstream`).
pub fn assert_denied(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.json()["error"], code, "{}", resp.text());
    assert!(
        resp.header("x-upstream").is_none(),
        "a denied request reached the upstream"
    );
}

/// Sends `req` over HTTP/1.1 and HTTP/2 and checks both are refused with `status`/`code`
/// before reaching the upstream.
pub fn assert_refused_on_both_protocols(
    gw: &Gateway,
    upstream: &Upstream,
    req: &Request,
    status: u16,
    code: &str,
) {
    let hits = upstream.hits();
    assert_denied(&gw.send(req), status, code);
    assert_denied(&gw.send_h2(req), status, code);
    assert_eq!(upstream.hits(), hits, "{req:?} reached the upstream");
}
