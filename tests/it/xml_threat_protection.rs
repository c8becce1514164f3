//! `xml-threat-protection` in a real Envoy: every limit just under and just over, malformed
//! documents, XXE, billion laughs and quadratic blow-up (refused without a DTD, bounded with
//! one), 100,000-deep nesting, multi-megabyte bodies in many chunks, content-type evasion,
//! HTTP/2 with and without trailers, and refused configurations. The echo upstream proves that
//! rejected bodies never reach it.

use palisade_tests::{Gateway, GatewayBuilder, Request, Response, Upstream};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const POLICY: &str = "xml-threat-protection";

/// A gateway whose stream buffer limit admits bodies of up to 32 MiB (Envoy's default, 1 MiB,
/// is answered with 413 when a held body outgrows it).
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
        .header("content-type", "application/xml")
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
    assert_eq!(body["error"], "xml_threat");
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
            "maxNodeDepth": 3,
            "maxAttributeCountPerElement": 2,
            "maxNamespaceCountPerElement": 1,
            "maxChildCount": 3,
            "maxTextLength": 5,
            "maxAttributeLength": 4,
            "maxCommentLength": 6,
            "maxNameLength": 8,
            "maxBodyBytes": 200,
        }),
    );
    let cases = [
        (
            "<a><b><c/></b></a>",
            "<a><b><c><d/></c></b></a>",
            "maxNodeDepth (3) exceeded at byte 10",
        ),
        (
            "<a x='1' y='2' xmlns='u'/>",
            "<a x='1' y='2' z='3'/>",
            "maxAttributeCountPerElement (2) exceeded at byte 16",
        ),
        (
            "<a xmlns:p='u'><p:b xmlns:q='v'/></a>",
            "<a xmlns='u' xmlns:p='v'/>",
            "maxNamespaceCountPerElement (1) exceeded at byte 20",
        ),
        (
            "<a><b/>text<c/></a>",
            "<a><b/><c/><d/><e/></a>",
            "maxChildCount (3) exceeded at byte 16",
        ),
        (
            "<a>abcde</a>",
            "<a>abc<![CDATA[def]]></a>",
            "maxTextLength (5) exceeded at byte 17",
        ),
        (
            "<a x='abcd'/>",
            "<a x='abcde'/>",
            "maxAttributeLength (4) exceeded at byte 10",
        ),
        (
            "<a><!--abcdef--></a>",
            "<a><!--abcdefg--></a>",
            "maxCommentLength (6) exceeded at byte 13",
        ),
        (
            "<abcdefgh/>",
            "<abcdefghi/>",
            "maxNameLength (8) exceeded at byte 9",
        ),
    ];
    for (under, over, message) in cases {
        assert_passed(&gw.send(&post(under)), under.as_bytes());
        assert_rejected(&gw.send(&post(over)), message);
    }
    // (Whitespace inside a tag: text would count against maxTextLength.)
    let at_size = format!("<a{}/>", " ".repeat(196));
    assert_eq!(at_size.len(), 200);
    assert_passed(&gw.send(&post(at_size.clone())), at_size.as_bytes());
    let over_size = format!("<a{}/>", " ".repeat(197));
    assert_rejected(&gw.send(&post(over_size)), "maxBodyBytes (200) exceeded");
    assert_eq!(upstream.hits(), cases.len() + 1);
    assert_eq!(
        gw.metric("palisade_xml_threat_protection_allowed"),
        Some(9.0)
    );
    assert_eq!(
        gw.metric("palisade_xml_threat_protection_denied_limit"),
        Some(9.0)
    );
}

#[test]
fn malformed_documents_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, json!({}));
    for (body, message) in [
        (
            &b"<a><b></a>"[..],
            "end tag does not match the open element at byte 9",
        ),
        (b"<a>", "unexpected end of document at byte 3"),
        (b"<a x=1/>", "unexpected character '1' at byte 5"),
        (b"<a x='1' x='2'/>", "duplicate attribute at byte 10"),
        (b"<a>\x01</a>", "invalid XML character U+0001 at byte 3"),
        (b"<a>\xff</a>", "invalid UTF-8 at byte 3"),
        (b"<a/><b/>", "a second root element at byte 5"),
        (b"<a>&bogus;</a>", "reference to an undeclared entity"),
        (b"plain text", "text before the root element at byte 0"),
    ] {
        assert_rejected(&gw.send(&post(body)), message);
    }
    assert_eq!(upstream.hits(), 0);
    assert_eq!(
        gw.metric("palisade_xml_threat_protection_denied_malformed"),
        Some(9.0)
    );
}

const XXE: &str = "<?xml version=\"1.0\"?>\n<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n<foo>&xxe;</foo>";

fn billion_laughs() -> String {
    let mut doc =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    doc.push_str("]>\n<lolz>&lol9;</lolz>");
    doc
}

fn quadratic_blowup() -> String {
    format!(
        "<!DOCTYPE r [<!ENTITY a \"{}\">]><r>{}</r>",
        "x".repeat(50_000),
        "&a;".repeat(20_000)
    )
}

#[test]
fn xxe_billion_laughs_and_quadratic_blowup() {
    let upstream = Upstream::start();
    // Default: any DOCTYPE is refused, at the DOCTYPE.
    let strict = gateway(&upstream, json!({}));
    for doc in [XXE.to_string(), billion_laughs(), quadratic_blowup()] {
        assert_rejected(
            &strict.send(&post(doc)),
            "DOCTYPE not allowed (allowDtd is false)",
        );
    }
    // With a DTD allowed: external entities are never resolved, expansion stays bounded.
    let dtd = gateway(
        &upstream,
        json!({"allowDtd": true, "maxEntityExpansion": 10000}),
    );
    assert_rejected(
        &dtd.send(&post(XXE)),
        "reference to an external entity (never resolved)",
    );
    assert_rejected(
        &dtd.send(&post(billion_laughs())),
        "maxEntityExpansion (10000) exceeded",
    );
    assert_rejected(
        &dtd.send(&post(quadratic_blowup())),
        "maxEntityExpansion (10000) exceeded",
    );
    let modest = "<!DOCTYPE r [<!ENTITY co \"Example Corp.\">]><r>&co; &co;</r>";
    assert_passed(&dtd.send(&post(modest)), modest.as_bytes());
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn hundred_thousand_deep_nesting() {
    let upstream = Upstream::start();
    let limited = gateway(&upstream, json!({"maxNodeDepth": 100}));
    let deep = "<a>".repeat(100_000);
    assert_rejected(
        &limited.send(&post(deep.clone())),
        "maxNodeDepth (100) exceeded at byte 301",
    );
    let unlimited = gateway(&upstream, json!({}));
    assert_rejected(
        &unlimited.send(&post(deep)),
        "unexpected end of document at byte 300000",
    );
    let balanced = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    assert_passed(
        &unlimited.send(&post(balanced.clone())),
        balanced.as_bytes(),
    );
    assert_eq!(upstream.hits(), 1);
}

/// An XML document of about `size` bytes.
fn big_document(size: usize) -> String {
    let record = "<order id=\"12345\" xmlns:x=\"urn:x\"><x:item sku=\"A-1\">Widget &amp; co</x:item><note><![CDATA[<raw>]]></note><!-- ok --></order>\n";
    let mut doc = String::with_capacity(size + record.len());
    doc.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<orders>\n");
    while doc.len() < size {
        doc.push_str(record);
    }
    doc.push_str("</orders>\n");
    doc
}

#[test]
fn multi_megabyte_bodies_in_many_chunks() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maxNodeDepth": 5, "maxChildCount": 100000}),
    );
    let doc = big_document(5 * 1024 * 1024);
    assert_passed(&gw.send(&post(doc.clone())), doc.as_bytes());
    assert_passed(
        &send_chunked(&gw, doc.as_bytes(), 64 * 1024),
        doc.as_bytes(),
    );
    let bad = format!("{doc}<extra/>");
    let at = doc.len() + 1;
    assert_rejected(
        &send_chunked(&gw, bad.as_bytes(), 10_000),
        &format!("a second root element at byte {at}"),
    );
    // Answered after the first 64 KiB, without the rest of the body.
    let early = doc.replacen("<orders>", "<orders><a><b><c><d><e/></d></c></b></a>", 1);
    assert_rejected(
        &send_first_chunk(&gw, &early.as_bytes()[..64 * 1024]),
        "maxNodeDepth (5) exceeded",
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn content_type_evasion_is_closed_by_check_all_bodies() {
    let upstream = Upstream::start();
    let attack = XXE;
    let as_type = |t: &str| {
        Request::new("POST", "/api")
            .header("content-type", t)
            .body(attack)
    };
    let default = gateway(&upstream, json!({}));
    for t in [
        "application/xml",
        "text/xml; charset=utf-8",
        "application/soap+xml",
    ] {
        assert_rejected(&default.send(&as_type(t)), "DOCTYPE");
    }
    assert_rejected(
        &default.send(&Request::new("POST", "/api").body(attack)),
        "DOCTYPE",
    );
    assert_passed(&default.send(&as_type("text/plain")), attack.as_bytes());
    assert_eq!(
        default.metric("palisade_xml_threat_protection_skipped"),
        Some(1.0)
    );
    let strict = gateway(&upstream, json!({"checkAllBodies": true}));
    for t in ["text/plain", "application/octet-stream", "application/json"] {
        assert_rejected(&strict.send(&as_type(t)), "DOCTYPE");
    }
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn http2_bodies_with_and_without_trailers() {
    let upstream = Upstream::start();
    let gw = gateway(&upstream, json!({"maxChildCount": 2}));
    assert_passed(&gw.send_h2(&post("<a><b/><c/></a>")), b"<a><b/><c/></a>");
    assert_rejected(
        &gw.send_h2(&post("<a><b/><c/><d/></a>")),
        "maxChildCount (2) exceeded at byte 12",
    );
    assert_rejected(
        &gw.send_h2(&post("<a><b/>")),
        "unexpected end of document at byte 7",
    );
    assert_rejected(&gw.send_h2(&post(XXE)), "DOCTYPE");

    let (status, body) = nghttp_with_trailers(&gw, b"<a><b/></a>");
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::Deserializer::from_str(&body)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no echo JSON in {body}"));
    assert_eq!(echoed["body"], "<a><b/></a>");
    // Incomplete: only the trailers tell the policy the body is over.
    let (status, body) = nghttp_with_trailers(&gw, b"<a><b/>");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unexpected end of document at byte 7"),
        "{body}"
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn invalid_configurations_are_refused_naming_the_field() {
    for (config, field) in [
        (json!({"maxNodeDepth": -2}), "maxNodeDepth"),
        (json!({"maxChildCount": "10"}), "maxChildCount"),
        (json!({"maxBodyBytes": 0}), "maxBodyBytes"),
        (json!({"maxEntityExpansion": 100}), "maxEntityExpansion"),
        (json!({"allowDTD": true}), "allowDTD"),
        (json!({"denial": {"status": 200}}), "denial.status"),
    ] {
        let log = GatewayBuilder::new()
            .wasm(POLICY, config.to_string())
            .start_err();
        assert!(
            log.contains("xml-threat-protection: invalid configuration") && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }
}

/// POSTs `body` over HTTP/1.1 with chunked transfer encoding, `chunk` bytes per chunk.
fn send_chunked(gw: &Gateway, body: &[u8], chunk: usize) -> Response {
    let mut stream = TcpStream::connect(gw.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = "POST /api HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\ncontent-type: application/xml\r\ntransfer-encoding: chunked\r\n\r\n";
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
    let head = "POST /api HTTP/1.1\r\nhost: gateway.test\r\ncontent-type: application/xml\r\ntransfer-encoding: chunked\r\n\r\n";
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
        .args(["-H", "content-type: application/xml"])
        .arg("-d")
        .arg(&input)
        .arg(format!("http://{}/trailers", gw.addr()))
        .output()
        .expect("run nghttp (scripts/install.d/xml-threat-protection.sh installs it)");
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
