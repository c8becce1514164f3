//! `json-threat-protection` in a real Envoy: every limit just under and just over, malformed
//! bodies, multi-megabyte bodies arriving in many chunks, 100,000-deep nesting, content-type
//! evasion, every JSON media type, HTTP/2 with and without trailers, the policy + `buffer`
//! chain keeping rejected requests entirely from the upstream, and refused configurations. The
//! echo upstream proves that rejected bodies never reach it.

use palisade_tests::body::{echoed, post_as, BodyPolicy, SplitBody};
use palisade_tests::{Request, Upstream};
use serde_json::json;

const POLICY: &str = "json-threat-protection";

const P: BodyPolicy = BodyPolicy {
    name: POLICY,
    content_type: "application/json",
    error: "json_threat",
};

#[test]
fn each_limit_just_under_and_just_over() {
    let upstream = Upstream::start();
    let gw = P.gateway(
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
        P.assert_passed(&gw.send(&P.post(under)), under.as_bytes());
        P.assert_rejected(&gw.send(&P.post(over)), message);
    }
    let at_size = format!("[1{}]", " ".repeat(117));
    assert_eq!(at_size.len(), 120);
    P.assert_passed(&gw.send(&P.post(at_size.clone())), at_size.as_bytes());
    let over_size = format!("[1{}]", " ".repeat(118));
    P.assert_rejected(&gw.send(&P.post(over_size)), "maxBodyBytes (120) exceeded");
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
    let gw = P.gateway(&upstream, json!({}));
    for (body, message) in [
        (&b"{\"a\":1,}"[..], "unexpected character '}' at byte 7"),
        (b"[1,2", "unexpected end of document at byte 4"),
        (b"{\"a\":01}", "unexpected character '1' at byte 6"),
        (b"[\"\xff\"]", "invalid UTF-8 in string at byte 2"),
        (b"{} {}", "after the document at byte 3"),
        (b"   ", "empty document at byte 3"),
        (b"[NaN]", "unexpected character 'N' at byte 1"),
    ] {
        P.assert_rejected(&gw.send(&P.post(body)), message);
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
    let gw = P.gateway(
        &upstream,
        json!({"maxContainerDepth": 8, "maxArrayElementCount": 100000}),
    );
    let doc = big_document(5 * 1024 * 1024);
    P.assert_passed(&gw.send(&P.post(doc.clone())), doc.as_bytes());
    // The same body over HTTP/1.1 chunked transfer encoding, in 64 KiB chunks.
    let resp = P.send_chunked(&gw, doc.as_bytes(), 64 * 1024);
    P.assert_passed(&resp, doc.as_bytes());

    // A violation in the last bytes of 5 MB is still found, at its exact offset.
    let bad = format!("{doc}]");
    let at = doc.len();
    P.assert_rejected(
        &gw.send(&P.post(bad.clone())),
        &format!("unexpected character ']' after the document at byte {at}"),
    );
    P.assert_rejected(
        &P.send_chunked(&gw, bad.as_bytes(), 10_000),
        &format!("byte {at}"),
    );
    // A violation early in a large body is answered as soon as its chunk arrives: the client
    // sends only the first 64 KiB of 5 MB and gets the answer without sending the rest.
    let early = format!("[[[[[[[[[1]]]]]]]]]{}", &doc[1..]);
    P.assert_rejected(
        &P.send_first_chunk(&gw, &early.as_bytes()[..64 * 1024]),
        "maxContainerDepth (8) exceeded at byte 8",
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn streamed_body_over_max_body_bytes_is_cut_off() {
    let upstream = Upstream::start();
    let gw = P.gateway(&upstream, json!({"maxBodyBytes": 100000}));
    let doc = big_document(300_000);
    // No content-length: the limit is found while the chunks stream in.
    P.assert_rejected(
        &P.send_chunked(&gw, doc.as_bytes(), 8192),
        "maxBodyBytes (100000) exceeded at byte 100000",
    );
    let small = big_document(90_000);
    P.assert_passed(
        &P.send_chunked(&gw, small.as_bytes(), 8192),
        small.as_bytes(),
    );
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn hundred_thousand_deep_nesting() {
    let upstream = Upstream::start();
    let limited = P.gateway(&upstream, json!({"maxContainerDepth": 100}));
    let deep = "[".repeat(100_000);
    P.assert_rejected(
        &limited.send(&P.post(deep.clone())),
        "maxContainerDepth (100) exceeded at byte 100",
    );

    // No depth limit: the whole body is scanned without recursion, Envoy survives, and a
    // balanced 100,000-deep document is legal JSON that passes.
    let unlimited = P.gateway(&upstream, json!({}));
    P.assert_rejected(
        &unlimited.send(&P.post(deep)),
        "unexpected end of document at byte 100000",
    );
    let balanced = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    P.assert_passed(
        &unlimited.send(&P.post(balanced.clone())),
        balanced.as_bytes(),
    );
    P.assert_passed(
        &unlimited.send_h2(&P.post(balanced.clone())),
        balanced.as_bytes(),
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn content_type_evasion_is_closed_by_check_all_bodies() {
    let upstream = Upstream::start();
    let default = P.gateway(&upstream, json!({"maxContainerDepth": 2}));
    let attack = "[[[[[[1]]]]]]";
    let as_type = |t: &str| post_as(t, attack);
    // JSON media types and bodies without a content type are inspected...
    for t in [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        P.assert_rejected(&default.send(&as_type(t)), "maxContainerDepth");
    }
    P.assert_rejected(
        &default.send(&Request::new("POST", "/api").body(attack)),
        "maxContainerDepth",
    );
    // ...other media types are not, so a client can lie about the content type...
    P.assert_passed(&default.send(&as_type("text/plain")), attack.as_bytes());
    assert_eq!(
        default.metric("palisade_json_threat_protection_skipped"),
        Some(1.0)
    );
    // ...unless every body is inspected.
    let strict = P.gateway(
        &upstream,
        json!({"maxContainerDepth": 2, "checkAllBodies": true}),
    );
    for t in [
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
    ] {
        P.assert_rejected(&strict.send(&as_type(t)), "maxContainerDepth");
    }
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn every_json_media_type_is_inspected() {
    let upstream = Upstream::start();
    let gw = P.gateway(
        &upstream,
        json!({"maxContainerDepth": 2, "maxBodyBytes": 64}),
    );
    // ASP.NET Core clients send `text/json`; Rails and Symfony parse the legacy types.
    let over_size = format!("[{}1]", " ".repeat(63));
    P.assert_rejected(
        &gw.send(&post_as("text/json", over_size)),
        "maxBodyBytes (64) exceeded",
    );
    // Over HTTP/2 a small document that breaks a limit: Envoy answers an over-size body while
    // curl may still be sending it, which curl reports as a stream error instead of the answer.
    P.assert_rejected(
        &gw.send_h2(&post_as("text/json; charset=utf-8", "[[[1]]]")),
        "maxContainerDepth (2) exceeded",
    );
    for media in [
        "text/json",
        "Text/JSON; charset=UTF-8",
        "text/x-json",
        "application/x-json",
        "application/jsonrequest",
        "application/problem+json",
        "application/merge-patch+json",
        "application/json-patch+json",
    ] {
        P.assert_rejected(
            &gw.send(&post_as(media, "[[[1]]]")),
            "maxContainerDepth (2) exceeded",
        );
        P.assert_passed(&gw.send(&post_as(media, "[[1]]")), b"[[1]]");
    }
    // A stream of documents is not one document: passed uninspected, and counted.
    let ndjson = "[[[1]]]\n[[[2]]]\n";
    P.assert_passed(
        &gw.send(&post_as("application/x-ndjson", ndjson)),
        ndjson.as_bytes(),
    );
    assert_eq!(upstream.hits(), 9);
    assert_eq!(
        gw.metric("palisade_json_threat_protection_skipped"),
        Some(1.0)
    );
}

#[test]
fn with_the_buffer_filter_a_rejected_request_never_reaches_the_upstream() {
    let mut start = b"[".to_vec();
    while start.len() < 256 * 1024 {
        start.extend_from_slice(br#"{"id":1,"tags":["a","b"],"ok":true},"#);
    }
    P.assert_rejected_requests_never_reach_the_upstream(
        &json!({"maxContainerDepth": 4}),
        &SplitBody {
            start,
            good_end: b"null]".to_vec(),
            bad_end: b"[[[[1]]]]]".to_vec(),
        },
    );
}

#[test]
fn http2_bodies_with_and_without_trailers() {
    let upstream = Upstream::start();
    let gw = P.gateway(&upstream, json!({"maxArrayElementCount": 3}));
    P.assert_passed(&gw.send_h2(&P.post("[1,2,3]")), b"[1,2,3]");
    P.assert_rejected(
        &gw.send_h2(&P.post("[1,2,3,4]")),
        "maxArrayElementCount (3) exceeded at byte 7",
    );
    P.assert_rejected(
        &gw.send_h2(&P.post("[1,2")),
        "unexpected end of document at byte 4",
    );

    // With trailers no data frame carries end-of-stream: the verdict completes in the trailers.
    let (status, body) = P.nghttp_with_trailers(&gw, b"[1,2,3]");
    assert_eq!(status, 200, "{body}");
    let echoed = echoed(&body);
    assert_eq!(echoed["body"], "[1,2,3]");
    let (status, body) = P.nghttp_with_trailers(&gw, b"[1,2");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unexpected end of document at byte 4"),
        "{body}"
    );
    let (status, body) = P.nghttp_with_trailers(&gw, b"[1,2,3,4]");
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
        P.assert_refused(&config, field);
    }
}
