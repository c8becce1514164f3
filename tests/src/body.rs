//! What the integration tests of the body-inspection policies (`json-threat-protection`,
//! `xml-threat-protection`) share: a gateway that buffers large bodies, requests of the
//! policy's media type, the verdict assertions, and the raw senders (chunked HTTP/1.1, a
//! partial body, HTTP/2 with trailers).

use crate::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

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
    /// A gateway whose stream buffer limit (Envoy's default is 1 MiB, answered with 413 when a
    /// paused body outgrows it) admits bodies of up to 32 MiB.
    pub fn gateway(&self, upstream: &Upstream, config: Value) -> Gateway {
        GatewayBuilder::new()
            .upstream(upstream)
            .hcm(
                "route_config",
                json!({"virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}],
                    "request_body_buffer_limit": 32 * 1024 * 1024,
                }]}),
            )
            .wasm(self.name, config.to_string())
            .start()
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
