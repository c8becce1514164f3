//! `xml-threat-protection` in a real Envoy: every limit just under and just over, malformed
//! documents, XXE, billion laughs and quadratic blow-up (refused without a DTD, bounded with
//! one), 100,000-deep nesting, multi-megabyte bodies in many chunks, content-type evasion,
//! HTTP/2 with and without trailers, refused configurations, encodings the policy does not read
//! (UTF-7 XXE, UTF-16, charsets), external DTD subsets and entities with `allowDtd`, and
//! attribute-default amplification. The echo upstream proves that
//! rejected bodies never reach it.

use palisade_tests::body::{echoed, post_as, BodyPolicy};
use palisade_tests::{Request, Upstream};
use serde_json::json;

const POLICY: &str = "xml-threat-protection";

const P: BodyPolicy = BodyPolicy {
    name: POLICY,
    content_type: "application/xml",
    error: "xml_threat",
};

#[test]
fn each_limit_just_under_and_just_over() {
    let upstream = Upstream::start();
    let gw = P.gateway(
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
        P.assert_passed(&gw.send(&P.post(under)), under.as_bytes());
        P.assert_rejected(&gw.send(&P.post(over)), message);
    }
    // (Whitespace inside a tag: text would count against maxTextLength.)
    let at_size = format!("<a{}/>", " ".repeat(196));
    assert_eq!(at_size.len(), 200);
    P.assert_passed(&gw.send(&P.post(at_size.clone())), at_size.as_bytes());
    let over_size = format!("<a{}/>", " ".repeat(197));
    P.assert_rejected(&gw.send(&P.post(over_size)), "maxBodyBytes (200) exceeded");
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
    let gw = P.gateway(&upstream, json!({}));
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
        P.assert_rejected(&gw.send(&P.post(body)), message);
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
    let strict = P.gateway(&upstream, json!({}));
    for doc in [XXE.to_string(), billion_laughs(), quadratic_blowup()] {
        P.assert_rejected(
            &strict.send(&P.post(doc)),
            "DOCTYPE not allowed (allowDtd is false)",
        );
    }
    // With a DTD allowed: external entities are refused, expansion stays bounded.
    let dtd = P.gateway(
        &upstream,
        json!({"allowDtd": true, "maxEntityExpansion": 10000}),
    );
    P.assert_rejected(
        &dtd.send(&P.post(XXE)),
        "external entity (SYSTEM/PUBLIC) not allowed",
    );
    P.assert_rejected(
        &dtd.send(&P.post(billion_laughs())),
        "maxEntityExpansion (10000) exceeded",
    );
    P.assert_rejected(
        &dtd.send(&P.post(quadratic_blowup())),
        "maxEntityExpansion (10000) exceeded",
    );
    let modest = "<!DOCTYPE r [<!ENTITY co \"Example Corp.\">]><r>&co; &co;</r>";
    P.assert_passed(&dtd.send(&P.post(modest)), modest.as_bytes());
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn hundred_thousand_deep_nesting() {
    let upstream = Upstream::start();
    let limited = P.gateway(&upstream, json!({"maxNodeDepth": 100}));
    let deep = "<a>".repeat(100_000);
    P.assert_rejected(
        &limited.send(&P.post(deep.clone())),
        "maxNodeDepth (100) exceeded at byte 301",
    );
    let unlimited = P.gateway(&upstream, json!({}));
    P.assert_rejected(
        &unlimited.send(&P.post(deep)),
        "unexpected end of document at byte 300000",
    );
    let balanced = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    P.assert_passed(
        &unlimited.send(&P.post(balanced.clone())),
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
    let gw = P.gateway(
        &upstream,
        json!({"maxNodeDepth": 5, "maxChildCount": 100000}),
    );
    let doc = big_document(5 * 1024 * 1024);
    P.assert_passed(&gw.send(&P.post(doc.clone())), doc.as_bytes());
    P.assert_passed(
        &P.send_chunked(&gw, doc.as_bytes(), 64 * 1024),
        doc.as_bytes(),
    );
    let bad = format!("{doc}<extra/>");
    let at = doc.len() + 1;
    P.assert_rejected(
        &P.send_chunked(&gw, bad.as_bytes(), 10_000),
        &format!("a second root element at byte {at}"),
    );
    // Answered after the first 64 KiB, without the rest of the body.
    let early = doc.replacen("<orders>", "<orders><a><b><c><d><e/></d></c></b></a>", 1);
    P.assert_rejected(
        &P.send_first_chunk(&gw, &early.as_bytes()[..64 * 1024]),
        "maxNodeDepth (5) exceeded",
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn content_type_evasion_is_closed_by_check_all_bodies() {
    let upstream = Upstream::start();
    let attack = XXE;
    let as_type = |t: &str| post_as(t, attack);
    let default = P.gateway(&upstream, json!({}));
    for t in [
        "application/xml",
        "text/xml; charset=utf-8",
        "application/soap+xml",
    ] {
        P.assert_rejected(&default.send(&as_type(t)), "DOCTYPE");
    }
    P.assert_rejected(
        &default.send(&Request::new("POST", "/api").body(attack)),
        "DOCTYPE",
    );
    P.assert_passed(&default.send(&as_type("text/plain")), attack.as_bytes());
    assert_eq!(
        default.metric("palisade_xml_threat_protection_skipped"),
        Some(1.0)
    );
    let strict = P.gateway(&upstream, json!({"checkAllBodies": true}));
    for t in ["text/plain", "application/octet-stream", "application/json"] {
        P.assert_rejected(&strict.send(&as_type(t)), "DOCTYPE");
    }
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn http2_bodies_with_and_without_trailers() {
    let upstream = Upstream::start();
    let gw = P.gateway(&upstream, json!({"maxChildCount": 2}));
    P.assert_passed(&gw.send_h2(&P.post("<a><b/><c/></a>")), b"<a><b/><c/></a>");
    P.assert_rejected(
        &gw.send_h2(&P.post("<a><b/><c/><d/></a>")),
        "maxChildCount (2) exceeded at byte 12",
    );
    P.assert_rejected(
        &gw.send_h2(&P.post("<a><b/>")),
        "unexpected end of document at byte 7",
    );
    P.assert_rejected(&gw.send_h2(&P.post(XXE)), "DOCTYPE");

    let (status, body) = P.nghttp_with_trailers(&gw, b"<a><b/></a>");
    assert_eq!(status, 200, "{body}");
    let echoed = echoed(&body);
    assert_eq!(echoed["body"], "<a><b/></a>");
    // Incomplete: only the trailers tell the policy the body is over.
    let (status, body) = P.nghttp_with_trailers(&gw, b"<a><b/>");
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
        P.assert_refused(&config, field);
    }
}

/// A DOCTYPE with an external entity hidden in UTF-7 inside what a UTF-8 reader takes for a
/// comment (`+ACY-` is `&`). A parser honouring the declaration reads
/// `<!----><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><!-- --><r>&x;</r>`.
const UTF7_XXE: &str = "<?xml version=\"1.0\" encoding=\"UTF-7\"?><!--+AC0ALQA+ADwAIQBEAE8AQwBUAFkAUABFACAAcgAgAFsAPAAhAEUATgBUAEkAVABZACAAeAAgAFMAWQBTAFQARQBNACAAIgBmAGkAbABlADoALwAvAC8AZQB0AGMALwBwAGEAcwBzAHcAZAAiAD4AXQA+ADwAIQAtAC0- --><r>+ACY-x;</r>";

#[test]
fn encodings_the_policy_does_not_read_are_refused() {
    let upstream = Upstream::start();
    let gw = P.gateway(&upstream, json!({}));
    let declared =
        "encoding \"UTF-7\" declared: only UTF-8 and US-ASCII documents are read at byte 35";
    P.assert_rejected(&gw.send(&P.post(UTF7_XXE)), declared);
    P.assert_rejected(&gw.send_h2(&P.post(UTF7_XXE)), declared);
    let mut utf16 = vec![0xff, 0xfe];
    "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a/>"
        .encode_utf16()
        .for_each(|unit| utf16.extend(unit.to_le_bytes()));
    let bom = "UTF-16 or UTF-32 document: only UTF-8 and US-ASCII are read at byte 0";
    P.assert_rejected(&gw.send(&P.post(utf16.clone())), bom);
    P.assert_rejected(&gw.send_h2(&P.post(utf16)), bom);
    let charset =
        "content-type charset other than UTF-8 or US-ASCII (only those are read) at byte 0";
    for content_type in [
        "text/xml; charset=utf-7",
        "application/xml; Charset=\"UTF-16\"",
    ] {
        P.assert_rejected(&gw.send(&post_as(content_type, "<a/>")), charset);
        P.assert_rejected(&gw.send_h2(&post_as(content_type, "<a/>")), charset);
    }
    // A second content-type with another charset: Envoy joins them, and the policy, which
    // cannot know which one the upstream honours, inspects the body and refuses the charset.
    let twice = P
        .post("<a/>")
        .header("content-type", "text/xml; charset=utf-7");
    P.assert_rejected(&gw.send(&twice), charset);
    P.assert_rejected(&gw.send_h2(&twice), charset);
    let ascii = "non-ASCII byte in a document declared US-ASCII at byte 3";
    P.assert_rejected(
        &gw.send(&post_as("text/xml; charset=us-ascii", "<a>é</a>")),
        ascii,
    );
    // UTF-8 and US-ASCII, declared either way, pass.
    let utf8 = "<?xml version='1.0' encoding='utf-8'?><a>é</a>";
    P.assert_passed(
        &gw.send(&post_as("text/xml; charset=UTF-8", utf8)),
        utf8.as_bytes(),
    );
    P.assert_passed(&gw.send_h2(&P.post(utf8)), utf8.as_bytes());
    let ascii_doc = "<?xml version='1.0' encoding='US-ASCII'?><a>&#233;</a>";
    P.assert_passed(
        &gw.send(&post_as("application/xml; charset=us-ascii", ascii_doc)),
        ascii_doc.as_bytes(),
    );
    assert_eq!(upstream.hits(), 3);
    assert_eq!(
        gw.metric("palisade_xml_threat_protection_denied_limit"),
        Some(11.0)
    );
}

#[test]
fn external_dtd_subsets_and_entities_are_refused_with_allow_dtd() {
    let upstream = Upstream::start();
    let gw = P.gateway(&upstream, json!({"allowDtd": true}));
    // Identifiers point at the upstream itself: nothing may fetch them.
    let url = format!("http://127.0.0.1:{}/leak", upstream.port());
    let subset = "external DTD subset (SYSTEM/PUBLIC) not allowed";
    let entity = "external entity (SYSTEM/PUBLIC) not allowed";
    let cases = [
        (format!("<!DOCTYPE r SYSTEM \"{url}\"><r/>"), subset),
        (
            format!("<!DOCTYPE r PUBLIC \"-//x//EN\" \"{url}\" []><r/>"),
            subset,
        ),
        // Declared, never referenced.
        (
            format!("<!DOCTYPE r [<!ENTITY e SYSTEM \"{url}\">]><r/>"),
            entity,
        ),
        (
            format!("<!DOCTYPE r [<!ENTITY e PUBLIC \"-//x//EN\" \"{url}\">]><r>&e;</r>"),
            entity,
        ),
        (
            format!(
                "<!DOCTYPE r [<!NOTATION n SYSTEM \"x\"><!ENTITY e SYSTEM \"{url}\" NDATA n>]><r/>"
            ),
            entity,
        ),
        (
            format!("<!DOCTYPE r [<!ENTITY % p SYSTEM \"{url}\"> %p;]><r/>"),
            "parameter entities are not supported",
        ),
    ];
    for (doc, message) in &cases {
        P.assert_rejected(&gw.send(&P.post(doc.as_str())), message);
        P.assert_rejected(&gw.send_h2(&P.post(doc.as_str())), message);
    }
    let internal =
        "<!DOCTYPE r [<!ENTITY co \"Example Corp.\"><!ATTLIST r lang CDATA 'en'>]><r>&co;</r>";
    P.assert_passed(&gw.send(&P.post(internal)), internal.as_bytes());
    assert_eq!(upstream.hits(), 1);
    assert_eq!(
        gw.metric("palisade_xml_threat_protection_denied_limit"),
        Some(2.0 * cases.len() as f64)
    );
}

#[test]
fn attribute_defaults_count_toward_entity_expansion() {
    let upstream = Upstream::start();
    let gw = P.gateway(&upstream, json!({"allowDtd": true}));
    // A 60 KB body that a parser would turn into 15,000 elements of 50,000 characters each:
    // the second `<b/>` already crosses the bound.
    let doc = format!(
        "<!DOCTYPE r [<!ENTITY e \"{}\"><!ATTLIST b a CDATA \"{}\">]><r>{}</r>",
        "x".repeat(1000),
        "&e;".repeat(50),
        "<b/>".repeat(15_000)
    );
    let second = doc.find("<b/>").unwrap_or_default() + 4;
    let message = format!("maxEntityExpansion (65536) exceeded at byte {}", second + 2);
    P.assert_rejected(&gw.send(&P.post(doc.clone())), &message);
    P.assert_rejected(&gw.send_h2(&P.post(doc.clone())), &message);
    P.assert_rejected(&P.send_chunked(&gw, doc.as_bytes(), 1000), &message);
    // Small defaults on a modest document pass.
    let fine = format!(
        "<!DOCTYPE r [<!ATTLIST item currency CDATA \"EUR\">]><r>{}</r>",
        "<item/>".repeat(1000)
    );
    P.assert_passed(&gw.send(&P.post(fine.clone())), fine.as_bytes());
    P.assert_passed(&gw.send_h2(&P.post(fine.clone())), fine.as_bytes());
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn with_the_buffer_filter_a_rejected_request_never_reaches_the_upstream() {
    let mut start = b"<orders>".to_vec();
    while start.len() < 256 * 1024 {
        start.extend_from_slice(br#"<order id="1"><item>book</item></order>"#);
    }
    P.assert_rejected_requests_never_reach_the_upstream(
        &json!({"maxNodeDepth": 8}),
        &palisade_tests::body::SplitBody {
            start,
            good_end: b"</orders>".to_vec(),
            bad_end: b"</order></orders>".to_vec(),
        },
    );
}
