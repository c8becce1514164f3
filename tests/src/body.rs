//! What the integration tests of the body-inspection policies (`json-threat-protection`,
//! `xml-threat-protection`) share: the recommended chain (the policy, then Envoy's `buffer`
//! filter, then the router) admitting large bodies, requests of the policy's media type, the
//! verdict assertions, the raw senders (chunked HTTP/1.1, a partial body, HTTP/2 with
//! trailers), and a [`Witness`] upstream that records every byte that reaches it.

use crate::{Filter, Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest body the test gateways hold (Envoy's stream buffer limit and the `buffer`
/// filter's `max_request_bytes`).
pub const MAX_HELD_BODY: u64 = 32 * 1024 * 1024;

/// Envoy's `buffer` filter holding requests of up to `max_request_bytes`: placed after a body
/// policy, it keeps the request headers from the router until the whole body has passed the
/// policy, so a rejected body's request never reaches the upstream at all.
pub fn buffer_filter(max_request_bytes: u64) -> Filter {
    Filter::Native(json!({
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": max_request_bytes,
        },
    }))
}

/// A loopback "upstream" that answers nothing and records every connection and every byte
/// sent to it: proof that not even the request headers of a rejected body reached it (the
/// echo [`Upstream`] only counts requests it read whole).
pub struct Witness {
    port: u16,
    received: Arc<Mutex<(usize, Vec<u8>)>>,
    stop: Arc<AtomicBool>,
}

impl Witness {
    /// Starts listening on 127.0.0.1 and a free port.
    pub fn start() -> Witness {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind witness");
        let port = listener.local_addr().expect("witness address").port();
        let received = Arc::new(Mutex::new((0, Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                log.lock().expect("witness log").0 += 1;
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        log.lock()
                            .expect("witness log")
                            .1
                            .extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Witness {
            port,
            received,
            stop,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far and every byte received on them.
    pub fn received(&self) -> (usize, Vec<u8>) {
        self.received.lock().expect("witness log").clone()
    }

    /// Waits up to `within` for at least `bytes` bytes; returns what arrived.
    pub fn wait_for(&self, bytes: usize, within: Duration) -> (usize, Vec<u8>) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.1.len() >= bytes || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A body-inspection policy under test.
#[derive(Debug, Clone, Copy)]
pub struct BodyPolicy {
    /// The policy (artifact) name.
    pub name: &'static str,
    /// The media type its requests carry.
    pub content_type: &'static str,
    /// The `error` code of its denials.
    pub error: &'static str,
}

/// The start of a response body, for assertion messages (bodies here may be megabytes).
pub fn head(resp: &Response) -> String {
    resp.text().chars().take(300).collect()
}

/// A POST to `/api` with `content_type`.
pub fn post_as(content_type: &str, body: impl Into<Vec<u8>>) -> Request {
    Request::new("POST", "/api")
        .header("content-type", content_type)
        .body(body)
}

/// The echo upstream's answer (JSON) at the start of a response body printed by
/// [`BodyPolicy::nghttp_with_trailers`].
pub fn echoed(body: &str) -> Value {
    serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no echo JSON in {body}"))
}

impl BodyPolicy {
    /// The recommended chain (the policy, Envoy's `buffer` filter, the router to `upstream`),
    /// with a stream buffer limit (Envoy's default is 1 MiB, answered with 413 when a held
    /// body outgrows it) admitting bodies of up to [`MAX_HELD_BODY`].
    pub fn gateway(&self, upstream: &Upstream, config: Value) -> Gateway {
        self.builder(upstream.port(), config, true).start()
    }

    /// The policy routing to 127.0.0.1:`port`, followed by the `buffer` filter or not (the
    /// chain without it forwards the request headers before the verdict).
    pub fn builder(&self, port: u16, config: Value, buffered: bool) -> GatewayBuilder {
        let mut builder = GatewayBuilder::new()
            .upstream_port(port)
            .hcm(
                "route_config",
                json!({"virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}],
                    "request_body_buffer_limit": MAX_HELD_BODY,
                }]}),
            )
            .wasm(self.name, config.to_string());
        if buffered {
            builder = builder.filter(buffer_filter(MAX_HELD_BODY));
        }
        builder
    }

    /// A POST to `/api` with the policy's media type.
    pub fn post(&self, body: impl Into<Vec<u8>>) -> Request {
        post_as(self.content_type, body)
    }

    /// Envoy refuses `config`, logging a message that names `field`.
    #[track_caller]
    pub fn assert_refused(&self, config: &Value, field: &str) {
        let log = GatewayBuilder::new()
            .wasm(self.name, config.to_string())
            .start_err();
        assert!(
            log.contains(&format!("{}: invalid configuration", self.name)) && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }

    /// The echo upstream received exactly `body`'s length.
    #[track_caller]
    pub fn assert_passed(&self, resp: &Response, body: &[u8]) {
        assert_eq!(resp.status, 200, "{}", head(resp));
        assert_eq!(resp.header("x-upstream"), Some("echo"));
        assert_eq!(
            resp.json()["body"].as_str().map(str::len),
            Some(body.len()),
            "the upstream received another body"
        );
    }

    /// The policy's denial, whose message mentions `message`, and nothing reached the upstream.
    #[track_caller]
    pub fn assert_rejected(&self, resp: &Response, message: &str) {
        assert_eq!(resp.status, 400, "{}", head(resp));
        assert!(resp.header("x-upstream").is_none(), "reached the upstream");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let body = resp.json();
        assert_eq!(body["error"], self.error);
        let text = body["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{text:?} does not mention {message:?}"
        );
    }

    /// POSTs `body` over HTTP/1.1 with chunked transfer encoding, `chunk` bytes per chunk,
    /// pausing briefly between chunks so Envoy sees them as separate reads.
    pub fn send_chunked(&self, gw: &Gateway, body: &[u8], chunk: usize) -> Response {
        let mut stream = TcpStream::connect(gw.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let head = format!("POST /api HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\n\r\n", self.content_type);
        stream.write_all(head.as_bytes()).expect("send head");
        for (i, piece) in body.chunks(chunk).enumerate() {
            let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
            frame.extend_from_slice(piece);
            frame.extend_from_slice(b"\r\n");
            if stream.write_all(&frame).is_err() {
                break; // Envoy answered and closed early: read the answer.
            }
            if i % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        crate::client::parse_http1(&raw)
    }

    /// Starts a chunked POST, sends one chunk of its body and, without ending the body, reads
    /// the answer.
    pub fn send_first_chunk(&self, gw: &Gateway, piece: &[u8]) -> Response {
        let mut stream = TcpStream::connect(gw.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!("POST /api HTTP/1.1\r\nhost: gateway.test\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\n\r\n", self.content_type);
        let mut frame = format!("{head}{:x}\r\n", piece.len()).into_bytes();
        frame.extend_from_slice(piece);
        frame.extend_from_slice(b"\r\n");
        stream.write_all(&frame).expect("send first chunk");
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        crate::client::parse_http1(&raw)
    }

    /// POSTs `body` over HTTP/2 followed by a trailer (nghttp: DATA frames without END_STREAM,
    /// then a HEADERS frame with it). Returns the status and the response body.
    pub fn nghttp_with_trailers(&self, gw: &Gateway, body: &[u8]) -> (u16, String) {
        let dir = crate::scratch_dir("nghttp");
        let input = dir.join("body.json");
        std::fs::write(&input, body).expect("write body");
        let out = Command::new("nghttp")
            .current_dir(&dir)
            .args(["-v", "-t", "15", "--trailer", "x-checksum: 1"])
            .args(["-H", &format!("content-type: {}", self.content_type)])
            .arg("-d")
            .arg(&input)
            .arg(format!("http://{}/trailers", gw.addr()))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "run nghttp (scripts/install.d/{}.sh installs it): {e:?}",
                    self.name
                )
            });
        let verbose = String::from_utf8_lossy(&out.stdout);
        assert!(
            verbose.contains("x-checksum: 1"),
            "nghttp sent no trailer:\n{verbose}"
        );
        let status = verbose
            .lines()
            .find_map(|l| l.split_once(":status: ").map(|(_, s)| s.trim().to_owned()))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no :status in nghttp output:\n{verbose}"));
        // (`-O` is not implemented in nghttp: the response body is printed among the frames.)
        let body = verbose
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }
}

/// A body in two parts: a valid start, then an end that completes it as a valid or an invalid
/// document (see [`BodyPolicy::assert_rejected_requests_never_reach_the_upstream`]).
#[derive(Debug, Clone)]
pub struct SplitBody {
    /// The start, valid so far (large enough to arrive in several reads).
    pub start: Vec<u8>,
    /// An end that makes the body a valid document.
    pub good_end: Vec<u8>,
    /// An end that makes the policy reject the body.
    pub bad_end: Vec<u8>,
}

impl SplitBody {
    fn whole(&self, end: &[u8]) -> Vec<u8> {
        [self.start.as_slice(), end].concat()
    }
}

impl BodyPolicy {
    /// POSTs `start` + `end` over HTTP/1.1 with a content-length, sending `start`, then running
    /// `between` while the body is incomplete, then `end`; returns what `between` returned and
    /// the response.
    pub fn send_in_two_parts<T>(
        &self,
        gw: &Gateway,
        start: &[u8],
        end: &[u8],
        between: impl FnOnce() -> T,
    ) -> (T, Response) {
        let mut stream = TcpStream::connect(gw.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let head = format!(
            "POST /api HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
            self.content_type,
            start.len() + end.len()
        );
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(start).expect("send the start of the body");
        let seen = between();
        let _ = stream.write_all(end);
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        (seen, crate::client::parse_http1(&raw))
    }

    /// Item 11 of issue 13, for any body policy: with the policy, then Envoy's `buffer`
    /// filter, then the router, a request whose body is rejected never reaches the upstream,
    /// not even its headers, over HTTP/1.1 and HTTP/2, while an accepted body arrives intact.
    /// The same chain without the `buffer` filter is the control: there the upstream receives
    /// the request headers while the body is still being inspected.
    #[track_caller]
    pub fn assert_rejected_requests_never_reach_the_upstream(
        &self,
        config: &Value,
        body: &SplitBody,
    ) {
        let settle = Duration::from_millis(500);
        // Control: without `buffer`, the headers are at the upstream before the verdict.
        let witness = Witness::start();
        let gw = self.builder(witness.port(), config.clone(), false).start();
        let (seen, resp) = self.send_in_two_parts(&gw, &body.start, &body.bad_end, || {
            witness.wait_for(1, Duration::from_secs(10))
        });
        self.assert_rejected(&resp, "");
        assert!(
            seen.1.starts_with(b"POST /api HTTP/1.1"),
            "without the buffer filter the upstream should have seen the request headers, got {:?}",
            String::from_utf8_lossy(&seen.1)
        );
        drop(gw);

        // The recommended chain: nothing at all reaches the upstream, during or after.
        let witness = Witness::start();
        let gw = self.builder(witness.port(), config.clone(), true).start();
        let (during, resp) = self.send_in_two_parts(&gw, &body.start, &body.bad_end, || {
            std::thread::sleep(settle);
            witness.received()
        });
        self.assert_rejected(&resp, "");
        assert_eq!(
            during,
            (0, Vec::new()),
            "the upstream saw the request while its body was inspected"
        );
        let bad = body.whole(&body.bad_end);
        self.assert_rejected(&gw.send(&self.post(bad.clone())), "");
        self.assert_rejected(&gw.send_h2(&self.post(bad)), "");
        std::thread::sleep(settle);
        let (connections, bytes) = witness.received();
        assert_eq!(
            (connections, bytes.len()),
            (0, 0),
            "a rejected request reached the upstream: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        drop(gw);

        // Accepted bodies arrive whole and unchanged, over both protocols.
        let upstream = Upstream::start();
        let gw = self.builder(upstream.port(), config.clone(), true).start();
        let good = body.whole(&body.good_end);
        let (_, resp) = self.send_in_two_parts(&gw, &body.start, &body.good_end, || {
            std::thread::sleep(Duration::from_millis(100))
        });
        self.assert_intact(&resp, &good);
        self.assert_intact(&gw.send(&self.post(good.clone())), &good);
        self.assert_intact(&gw.send_h2(&self.post(good.clone())), &good);
        self.assert_rejected(&gw.send_h2(&self.post(body.whole(&body.bad_end))), "");
        assert_eq!(upstream.hits(), 3);
    }

    /// The echo upstream received exactly `body`.
    #[track_caller]
    pub fn assert_intact(&self, resp: &Response, body: &[u8]) {
        self.assert_passed(resp, body);
        assert!(
            resp.json()["body"].as_str().map(str::as_bytes) == Some(body),
            "the upstream received another body"
        );
    }
}
