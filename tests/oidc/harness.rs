//! Node.js peers of the jwt-validation and token-introspection integration tests: a real OpenID
//! Provider (`provider.mjs`, npm `oidc-provider`) and a key server the tests control
//! (`testkeys.mjs`, npm `jose`). Both listen on loopback and die with the test process.
//! Included by the integration tests with `#[path]`.
#![allow(dead_code)]

use palisade_tests::{http1, Request};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;

fn dir() -> PathBuf {
    palisade_tests::root().join("tests/oidc")
}

/// Installs the pinned npm packages once (scripts/install.d/jwt-validation.sh does the same).
fn ensure_npm() {
    static NPM: Once = Once::new();
    NPM.call_once(|| {
        if dir().join("node_modules/oidc-provider").exists()
            && dir().join("node_modules/jose").exists()
        {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir())
            .status()
            .expect("run npm (install Node.js: scripts/install-toolchain.sh)");
        assert!(status.success(), "npm ci in tests/oidc failed");
    });
}

/// A Node.js process serving on loopback; killed when dropped.
pub struct Node {
    child: Child,
    port: u16,
}

/// Drains a child's output so that it never writes into a closed pipe (Node.js dies of EPIPE).
fn drain(mut out: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
}

impl Node {
    fn start(script: &str, args: &[String]) -> Node {
        ensure_npm();
        let mut cmd = Command::new("node");
        cmd.arg(dir().join(script))
            .args(args)
            .current_dir(dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the peer dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start node");
        let stdout = child.stdout.take().expect("node stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).expect("read node output");
        drain(reader);
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
        Node { child, port }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn post(
        &self,
        path: &str,
        body: String,
        content_type: &str,
        auth: Option<&str>,
    ) -> palisade_tests::Response {
        let mut req = Request::new("POST", path)
            .header("content-type", content_type)
            .body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        http1(self.addr(), &req)
    }

    fn get_json(&self, path: &str) -> Value {
        http1(self.addr(), &Request::get(path)).json()
    }

    /// Stops it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real OpenID Provider.
pub struct Provider(pub Node);

/// Base64 of `user:password` (RFC 7617), for client authentication.
pub fn basic(user: &str, password: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

impl Provider {
    /// Starts on a free port with key generation 1.
    pub fn start() -> Provider {
        Provider(Node::start("provider.mjs", &["0".into(), "1".into()]))
    }

    /// Starts on `port` with keys of generation `generation` (kids `rsa-<g>`, `ec-<g>`).
    pub fn start_on(port: u16, generation: u32) -> Provider {
        Provider(Node::start(
            "provider.mjs",
            &[port.to_string(), generation.to_string()],
        ))
    }

    /// Starts on a free port; introspection answers only after `delay_ms`.
    pub fn start_slow_introspection(delay_ms: u64) -> Provider {
        Provider(Node::start(
            "provider.mjs",
            &["0".into(), "1".into(), delay_ms.to_string()],
        ))
    }

    /// Its issuer identifier.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }

    /// A client-credentials access token: a JWT when `resource` is given (`urn:orders:rs`,
    /// `urn:orders:es`, `urn:billing`), else an opaque one.
    pub fn token(&self, client: (&str, &str), scope: &str, resource: Option<&str>) -> String {
        let mut form = format!(
            "grant_type=client_credentials&scope={}",
            scope.replace(' ', "+")
        );
        if let Some(r) = resource {
            form.push_str(&format!("&resource={r}"));
        }
        let resp = self.0.post(
            "/token",
            form,
            "application/x-www-form-urlencoded",
            Some(&basic(client.0, client.1)),
        );
        assert_eq!(resp.status, 200, "token request failed: {}", resp.text());
        resp.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Revokes a token.
    pub fn revoke(&self, token: &str) {
        let resp = self.0.post(
            "/token/revocation",
            format!("token={token}"),
            "application/x-www-form-urlencoded",
            Some(&basic("orders-client", "orders-secret")),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> u64 {
        self.0.get_json("/__stats")[path].as_u64().unwrap_or(0)
    }
}

/// The key server the tests control.
pub struct TestKeys(pub Node);

impl TestKeys {
    /// Starts on a free port with keys `rsa-a`, `ec-a`, `ec384-a`, `ed-a`.
    pub fn start() -> TestKeys {
        TestKeys(Node::start("testkeys.mjs", &[]))
    }

    /// Signs `claims` with `alg` and the key `kid` (or with `secret` for HS*).
    pub fn sign(&self, alg: &str, kid: &str, claims: Value) -> String {
        self.sign_with(json!({"alg": alg, "kid": kid, "claims": claims}))
    }

    /// Signs with a full request (`{"alg", "kid", "claims", "secret"?}`).
    pub fn sign_with(&self, request: Value) -> String {
        let resp = self
            .0
            .post("/sign", request.to_string(), "application/json", None);
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.text()
    }

    /// A public key as PEM.
    pub fn pem(&self, kid: &str) -> String {
        http1(self.0.addr(), &Request::get(&format!("/pem?kid={kid}"))).text()
    }

    /// Makes the JWKS endpoint fail (503) or serve again.
    pub fn set_down(&self, down: bool) {
        let resp = self.0.post(
            "/control",
            json!({"down": down}).to_string(),
            "application/json",
            None,
        );
        assert_eq!(resp.status, 200);
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> u64 {
        self.0.get_json("/__stats")["jwks"].as_u64().unwrap_or(0)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
