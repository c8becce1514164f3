//! `json-threat-protection` in a real Envoy: every limit just under and just over, malformed
//! bodies, multi-megabyte bodies arriving in many chunks, 100,000-deep nesting, content-type
//! evasion, HTTP/2 with and without trailers, and refused configurations. The echo upstream
//! proves that rejected bodies never reach it.

use palisade_tests::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const POLICY: &str = "json-threat-protection";

/// A gateway whose stream buffer limit (Envoy's default is 1 MiB, answered with 413 when a
/// paused body outgrows it) admits bodies of up to 32 MiB.
fn gateway(upstream: &Upstream, config: Value) -> Gateway {
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
        .wasm(POLICY, config.to_string())
        .start()
}

fn post(body: impl Into<Vec<u8>>) -> Request {
    Request::new("POST", "/api")
        .header("content-type", "application/json")
        .body(body)
}

/// The start of a response body, for assertion messages (bodies here may be megabytes).
fn head(resp: &Response) -> String {
    resp.text().chars().take(300).collect()
}

#[track_caller]
fn assert_passed(resp: &Response, body: &[u8]) {
    assert_eq!(resp.status, 200, "{}", head(resp));
    assert_eq!(resp.header("x-upstream"), Some("echo"));
    assert_eq!(
        resp.json()["body"].as_str().map(str::len),
        Some(body.len()),
        "the upstream received another body"
    );
}

#[track_caller]
fn assert_rejected(resp: &Response, message: &str) {
    assert_eq!(resp.status, 400, "{}", head(resp));
    assert!(resp.header("x-upstream").is_none(), "reached the upstream");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["error"], "json_threat");
    let text = body["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(message),
        "{text:?} does not mention {message:?}"
    );
}

#[test]
fn each_limit_just_under_and_just_over() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({
            "maxContainerDepth": 3,
            "maxStringValueLength": 8,
            "maxObjectEntryNameLength": 4,
            "maxObjectEntryCount": 2,
            "maxArrayElementCount": 3,
            "maxBodyBytes": 120,
            "allowDuplicateKeys": false,
        }),
    );
    let cases = [
        (
            r#"{"a":[[1]]}"#,
            r#"{"a":[[[1]]]}"#,
            "maxContainerDepth (3) exceeded at byte 7",
        ),
        (
            r#"["12345678"]"#,
            r#"["123456789"]"#,
            "maxStringValueLength (8) exceeded at byte 10",
        ),
        (
            r#"{"abcd":1}"#,
            r#"{"abcde":1}"#,
            "maxObjectEntryNameLength (4) exceeded at byte 6",
        ),
        (
            r#"{"a":1,"b":2}"#,
            r#"{"a":1,"b":2,"c":3}"#,
            "maxObjectEntryCount (2) exceeded at byte 13",
        ),
        (
            "[1,2,3]",
            "[1,2,3,4]",
            "maxArrayElementCount (3) exceeded at byte 7",
        ),
        (
            r#"{"a":1,"b":1}"#,
            r#"{"a":1,"a":1}"#,
            "duplicate object entry name",
        ),
    ];
    for (under, over, message) in cases {
        assert_passed(&gw.send(&post(under)), under.as_bytes());
        assert_rejected(&gw.send(&post(over)), message);
    }
    let at_size = format!("[1{}]", " ".repeat(117));
    assert_eq!(at_size.len(), 120);
    assert_passed(&gw.send(&post(at_size.clone())), at_size.as_bytes());
    let over_size = format!("[1{}]", " ".repeat(118));
    assert_rejected(&gw.send(&post(over_size)), "maxBodyBytes (120) exceeded");
    assert_eq!(upstream.hits(), cases.len() + 1);
    assert_eq!(
        gw.metric("palisade_json_threat_protection_allowed"),
        Some(7.0)
    );
    assert_eq!(
        gw.metric("palisade_json_threat_protection_denied_limit"),
        Some(7.0)
    );
}

#[test]
fn malformed_bodies_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, json!({}));
    for (body, message) in [
        (&b"{\"a\":1,}"[..], "unexpected character '}' at byte 7"),
        (b"[1,2", "unexpected end of document at byte 4"),
        (b"{\"a\":01}", "unexpected character '1' at byte 6"),
        (b"[\"\xff\"]", "invalid UTF-8 in string at byte 2"),
        (b"{} {}", "after the document at byte 3"),
        (b"   ", "empty document at byte 3"),
        (b"[NaN]", "unexpected character 'N' at byte 1"),
    ] {
        assert_rejected(&gw.send(&post(body)), message);
    }
    assert_eq!(upstream.hits(), 0);
    // A request without a body is not inspected.
    assert_eq!(
        gw.send(&Request::get("/api").header("content-type", "application/json"))
            .status,
        200
    );
    assert_eq!(
        gw.metric("palisade_json_threat_protection_denied_malformed"),
        Some(7.0)
    );
}

/// A JSON document of about `size` bytes: an array of records.
fn big_document(size: usize) -> String {
    let record =
        r#"{"id":12345,"name":"Ada Lovelace","tags":["a","b","c"],"score":-12.5e3,"ok":true},"#;
    let mut doc = String::with_capacity(size + record.len());
    doc.push('[');
    while doc.len() < size {
        doc.push_str(record);
    }
    doc.push_str("null]");
    doc
}

#[test]
fn multi_megabyte_bodies_in_many_chunks() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maxContainerDepth": 8, "maxArrayElementCount": 100000}),
    );
    let doc = big_document(5 * 1024 * 1024);
    assert_passed(&gw.send(&post(doc.clone())), doc.as_bytes());
    // The same body over HTTP/1.1 chunked transfer encoding, in 64 KiB chunks.
    let resp = send_chunked(&gw, doc.as_bytes(), 64 * 1024);
    assert_passed(&resp, doc.as_bytes());

    // A violation in the last bytes of 5 MB is still found, at its exact offset.
    let bad = format!("{doc}]");
    let at = doc.len();
    assert_rejected(
        &gw.send(&post(bad.clone())),
        &format!("unexpected character ']' after the document at byte {at}"),
    );
    assert_rejected(
        &send_chunked(&gw, bad.as_bytes(), 10_000),
        &format!("byte {at}"),
    );
    // A violation early in a large body is answered as soon as its chunk arrives: the client
    // sends only the first 64 KiB of 5 MB and gets the answer without sending the rest.
    let early = format!("[[[[[[[[[1]]]]]]]]]{}", &doc[1..]);
    assert_rejected(
        &send_first_chunk(&gw, &early.as_bytes()[..64 * 1024]),
        "maxContainerDepth (8) exceeded at byte 8",
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn streamed_body_over_max_body_bytes_is_cut_off() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, json!({"maxBodyBytes": 100000}));
    let doc = big_document(300_000);
    // No content-length: the limit is found while the chunks stream in.
    assert_rejected(
        &send_chunked(&gw, doc.as_bytes(), 8192),
        "maxBodyBytes (100000) exceeded at byte 100000",
    );
    let small = big_document(90_000);
    assert_passed(&send_chunked(&gw, small.as_bytes(), 8192), small.as_bytes());
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn hundred_thousand_deep_nesting() {
    let upstream = Upstream::start();
    let limited = gateway(&upstream, json!({"maxContainerDepth": 100}));
    let deep = "[".repeat(100_000);
    assert_rejected(
        &limited.send(&post(deep.clone())),
        "maxContainerDepth (100) exceeded at byte 100",
    );

    // No depth limit: the whole body is scanned without recursion, Envoy survives, and a
    // balanced 100,000-deep document is legal JSON that passes.
    let unlimited = gateway(&upstream, json!({}));
    assert_rejected(
        &unlimited.send(&post(deep)),
        "unexpected end of document at byte 100000",
    );
    let balanced = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_passed(
        &unlimited.send(&post(balanced.clone())),
        balanced.as_bytes(),
    );
    assert_passed(
        &unlimited.send_h2(&post(balanced.clone())),
        balanced.as_bytes(),
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn content_type_evasion_is_closed_by_check_all_bodies() {
    let upstream = Upstream::start();
    let default = gateway(&upstream, json!({"maxContainerDepth": 2}));
    let attack = "[[[[[[1]]]]]]";
    let as_type = |t: &str| {
        Request::new("POST", "/api")
            .header("content-type", t)
            .body(attack)
    };
    // JSON media types and bodies without a content type are inspected...
    for t in [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        assert_rejected(&default.send(&as_type(t)), "maxContainerDepth");
    }
    assert_rejected(
        &default.send(&Request::new("POST", "/api").body(attack)),
        "maxContainerDepth",
    );
    // ...other media types are not, so a client can lie about the content type...
    assert_passed(&default.send(&as_type("text/plain")), attack.as_bytes());
    assert_eq!(
        default.metric("palisade_json_threat_protection_skipped"),
        Some(1.0)
    );
    // ...unless every body is inspected.
    let strict = gateway(
        &upstream,
        json!({"maxContainerDepth": 2, "checkAllBodies": true}),
    );
    for t in [
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
    ] {
        assert_rejected(&strict.send(&as_type(t)), "maxContainerDepth");
    }
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn http2_bodies_with_and_without_trailers() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, json!({"maxArrayElementCount": 3}));
    assert_passed(&gw.send_h2(&post("[1,2,3]")), b"[1,2,3]");
    assert_rejected(
        &gw.send_h2(&post("[1,2,3,4]")),
        "maxArrayElementCount (3) exceeded at byte 7",
    );
    assert_rejected(
        &gw.send_h2(&post("[1,2")),
        "unexpected end of document at byte 4",
    );

    // With trailers no data frame carries end-of-stream: the verdict completes in the trailers.
    let (status, body) = nghttp_with_trailers(&gw, b"[1,2,3]");
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::Deserializer::from_str(&body)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no echo JSON in {body}"));
    assert_eq!(echoed["body"], "[1,2,3]");
    let (status, body) = nghttp_with_trailers(&gw, b"[1,2");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unexpected end of document at byte 4"),
        "{body}"
    );
    let (status, body) = nghttp_with_trailers(&gw, b"[1,2,3,4]");
    assert_eq!(status, 400, "{body}");
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn invalid_configurations_are_refused_naming_the_field() {
    for (config, field) in [
        (json!({"maxContainerDepth": -2}), "maxContainerDepth"),
        (
            json!({"maxStringValueLength": "10"}),
            "maxStringValueLength",
        ),
        (json!({"maxBodyBytes": 0}), "maxBodyBytes"),
        (json!({"maxDepth": 3}), "maxDepth"),
        (json!({"denial": {"status": 302}}), "denial.status"),
    ] {
        let log = GatewayBuilder::new()
            .wasm(POLICY, config.to_string())
            .start_err();
        assert!(
            log.contains("json-threat-protection: invalid configuration") && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }
}

/// POSTs `body` over HTTP/1.1 with chunked transfer encoding, `chunk` bytes per chunk, pausing
/// briefly between chunks so Envoy sees them as separate reads.
fn send_chunked(gw: &Gateway, body: &[u8], chunk: usize) -> Response {
    let mut stream = TcpStream::connect(gw.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = "POST /api HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
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
    parse_response(&raw)
}

/// Starts a chunked POST, sends one chunk of its body and, without ending the body, reads the
/// answer.
fn send_first_chunk(gw: &Gateway, piece: &[u8]) -> Response {
    let mut stream = TcpStream::connect(gw.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = "POST /api HTTP/1.1\r\nhost: gateway.test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut frame = format!("{head}{:x}\r\n", piece.len()).into_bytes();
    frame.extend_from_slice(piece);
    frame.extend_from_slice(b"\r\n");
    stream.write_all(&frame).expect("send first chunk");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        let mut out = Vec::new();
        let mut data = body.as_slice();
        while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16)
                .unwrap_or(0);
            if n == 0 || data.len() < eol + 2 + n {
                break;
            }
            out.extend_from_slice(&data[eol + 2..eol + 2 + n]);
            data = &data[(eol + 4 + n).min(data.len())..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

/// POSTs `body` over HTTP/2 followed by a trailer (nghttp: DATA frames without END_STREAM,
/// then a HEADERS frame with it). Returns the status and the response body.
fn nghttp_with_trailers(gw: &Gateway, body: &[u8]) -> (u16, String) {
    let dir = palisade_tests::scratch_dir("nghttp");
    let input = dir.join("body.json");
    std::fs::write(&input, body).expect("write body");
    let out = Command::new("nghttp")
        .current_dir(&dir)
        .args(["-v", "-t", "15", "--trailer", "x-checksum: 1"])
        .args(["-H", "content-type: application/json"])
        .arg("-d")
        .arg(&input)
        .arg(format!("http://{}/trailers", gw.addr()))
        .output()
        .expect("run nghttp (scripts/install.d/json-threat-protection.sh installs it)");
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
