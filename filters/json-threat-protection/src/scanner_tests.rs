use super::*;
use palisade_kit::body::testing::{scan_chunked, scan_random_chunks, Rng};
use palisade_kit::body::ViolationKind;
use std::path::PathBuf;

fn unlimited() -> Limits {
    Limits::default()
}

/// Whole, 1-byte and random chunking must agree exactly (verdict, offset, message).
fn verdict(limits: Limits, doc: &[u8]) -> Result<(), Violation> {
    let whole = scan(limits, doc);
    assert_eq!(
        scan_chunked(JsonScanner::new(limits), doc, 1),
        whole,
        "1-byte chunks: {doc:?}"
    );
    assert_eq!(
        scan_chunked(JsonScanner::new(limits), doc, 7),
        whole,
        "7-byte chunks"
    );
    let mut rng = Rng(doc.len() as u64 * 7919 + 1);
    assert_eq!(
        scan_random_chunks(JsonScanner::new(limits), doc, 64, &mut rng),
        whole,
        "random chunks"
    );
    whole
}

fn ok(doc: &str) {
    assert_eq!(verdict(unlimited(), doc.as_bytes()), Ok(()), "{doc}");
}

fn malformed(doc: &str) -> Violation {
    match verdict(unlimited(), doc.as_bytes()) {
        Ok(()) => panic!("accepted {doc:?}"),
        Err(v) => {
            assert_eq!(v.kind, ViolationKind::Malformed, "{doc}: {v}");
            v
        }
    }
}

fn over(limits: Limits, doc: &str) -> Violation {
    match verdict(limits, doc.as_bytes()) {
        Ok(()) => panic!("accepted {doc:?}"),
        Err(v) => {
            assert_eq!(v.kind, ViolationKind::Limit, "{doc}: {v}");
            v
        }
    }
}

#[test]
fn accepts_json_text() {
    for doc in [
        "{}",
        "[]",
        " \t\r\n{ \"a\" : [ 1 , -0.5e+3 , true , false , null , \"x\" ] } \n",
        "0",
        "-0",
        "12.5E-7",
        "\"\"",
        "\"\\u00e9\\ud83d\\ude00\\\\\\/\\b\\f\\n\\r\\t\\\"\"",
        "\"é😀\"",
        "[[[[]]],{}]",
        "{\"a\":{\"b\":{\"c\":[1,{}]}}}",
        "\"\\ud800\"",
        "null",
    ] {
        ok(doc);
    }
}

#[test]
fn rejects_malformed_json_with_offsets() {
    assert_eq!(malformed("").message, "empty document");
    assert_eq!(malformed("   ").offset, 3);
    let v = malformed("{\"a\":1,}");
    assert_eq!(
        (v.offset, v.message.as_str()),
        (7, "unexpected character '}'")
    );
    assert_eq!(malformed("[1,]").offset, 3);
    assert_eq!(malformed("[1 2]").offset, 3);
    assert_eq!(malformed("{\"a\" 1}").offset, 5);
    assert_eq!(malformed("{1:2}").offset, 1);
    assert_eq!(malformed("[1}").offset, 2);
    assert_eq!(malformed("{]").offset, 1);
    assert_eq!(malformed("[").message, "unexpected end of document");
    assert_eq!(malformed("\"abc").offset, 4);
    assert_eq!(malformed("01").offset, 1);
    assert_eq!(malformed("-").offset, 1);
    assert_eq!(malformed("1.").offset, 2);
    assert_eq!(malformed("1e").offset, 2);
    assert_eq!(malformed("1.e3").offset, 2);
    assert_eq!(malformed("+1").offset, 0);
    assert_eq!(malformed(".5").offset, 0);
    assert_eq!(malformed("tru").offset, 3);
    assert_eq!(malformed("trUe").offset, 2);
    assert_eq!(malformed("nulll").offset, 4);
    assert_eq!(malformed("NaN").offset, 0);
    assert_eq!(malformed("{} {}").offset, 3);
    assert_eq!(malformed("\"a\tb\"").offset, 2);
    assert_eq!(malformed("\"\\x\"").offset, 2);
    assert_eq!(malformed("\"\\u12g4\"").offset, 5);
    assert_eq!(malformed("[1] // c").offset, 4);
    assert_eq!(malformed("\u{feff}{}").offset, 0);
    assert_eq!(malformed("{'a':1}").offset, 1);
}

#[test]
fn rejects_invalid_utf8() {
    for (doc, at) in [
        (&b"\"\xff\""[..], 1),
        (b"\"\xc3\"", 2),
        (b"\"\xc0\xaf\"", 1),         // overlong
        (b"\"\xe0\x80\xaf\"", 2),     // overlong
        (b"\"\xed\xa0\x80\"", 2),     // encoded surrogate
        (b"\"\xf4\x90\x80\x80\"", 2), // beyond U+10FFFF
        (b"\"\x80\"", 1),
        (b"\xc3\xa9", 0), // outside a string
    ] {
        let v = verdict(unlimited(), doc).unwrap_err();
        assert_eq!(
            (v.kind, v.offset),
            (ViolationKind::Malformed, at),
            "{doc:?}"
        );
    }
}

/// Flex's worked example: `{"Players":[{…}×4]}` has depth 3, longest string 28, longest entry
/// name 7 ("Players"), at most 2 entries per object and 4 array elements.
#[test]
fn flex_worked_example_counts() {
    let player = |name: &str| format!("{{\"name\":\"{name}\",\"team\":\"Blue\"}}");
    let long = "Maximilian Alexander Johnson"; // 28 characters
    assert_eq!(long.chars().count(), 28);
    let doc = format!(
        "{{\"Players\":[{},{},{},{}]}}",
        player(long),
        player("Ann"),
        player("Bo"),
        player("Cy")
    );
    let exact = Limits {
        max_depth: Some(3),
        max_string: Some(28),
        max_name: Some(7),
        max_entries: Some(2),
        max_elements: Some(4),
        reject_duplicate_keys: true,
    };
    assert_eq!(verdict(exact, doc.as_bytes()), Ok(()));
    let cases = [
        (
            Limits {
                max_depth: Some(2),
                ..exact
            },
            "maxContainerDepth (2) exceeded",
        ),
        (
            Limits {
                max_string: Some(27),
                ..exact
            },
            "maxStringValueLength (27) exceeded",
        ),
        (
            Limits {
                max_name: Some(6),
                ..exact
            },
            "maxObjectEntryNameLength (6) exceeded",
        ),
        (
            Limits {
                max_entries: Some(1),
                ..exact
            },
            "maxObjectEntryCount (1) exceeded",
        ),
        (
            Limits {
                max_elements: Some(3),
                ..exact
            },
            "maxArrayElementCount (3) exceeded",
        ),
    ];
    for (limits, message) in cases {
        assert_eq!(over(limits, &doc).message, message);
    }
}

#[test]
fn limits_report_the_offending_byte() {
    let depth = Limits {
        max_depth: Some(2),
        ..unlimited()
    };
    ok_with(depth, "[[1],{\"a\":1},[]]");
    assert_eq!(over(depth, "[[[1]]]").offset, 2);
    assert_eq!(over(depth, "{\"a\":{\"b\":{}}}").offset, 10);

    let string = Limits {
        max_string: Some(3),
        ..unlimited()
    };
    ok_with(
        string,
        "[\"abc\",\"\\u00e9\\u00e9\\u00e9\",\"😀😀😀\",\"\\ud83d\\ude00ab\"]",
    );
    // The 4th character is at byte 5 of `["abcd"]`.
    assert_eq!(over(string, "[\"abcd\"]").offset, 5);
    assert_eq!(over(string, "\"ééé é\"").offset, 7);
    assert_eq!(over(string, "\"\\n\\n\\n\\n\"").offset, 8);
    // Names are not values.
    ok_with(string, "{\"abcdef\":1}");

    let name = Limits {
        max_name: Some(2),
        ..unlimited()
    };
    ok_with(name, "{\"ab\":\"abcdef\"}");
    assert_eq!(over(name, "{\"ab\":1,\"abc\":2}").offset, 11);

    let entries = Limits {
        max_entries: Some(2),
        ..unlimited()
    };
    ok_with(
        entries,
        "{\"a\":{\"x\":1,\"y\":2},\"b\":[{\"c\":1,\"d\":2}]}",
    );
    assert_eq!(over(entries, "{\"a\":1,\"b\":2,\"c\":3}").offset, 13);
    // The count resumes for the outer object after a nested one closes.
    assert_eq!(
        over(entries, "{\"a\":{\"x\":1},\"b\":2,\"c\":3}").offset,
        19
    );

    let elements = Limits {
        max_elements: Some(2),
        ..unlimited()
    };
    ok_with(elements, "[[1,2],[3,[4,5]]]");
    assert_eq!(over(elements, "[1,2,3]").offset, 5);
    assert_eq!(over(elements, "[[1,2],[3],4]").offset, 11);
    assert_eq!(
        over(
            Limits {
                max_elements: Some(0),
                ..unlimited()
            },
            "[ 1]"
        )
        .offset,
        2
    );
}

fn ok_with(limits: Limits, doc: &str) {
    assert_eq!(verdict(limits, doc.as_bytes()), Ok(()), "{doc}");
}

#[test]
fn duplicate_keys_are_decoded_before_comparison() {
    let strict = Limits {
        reject_duplicate_keys: true,
        ..unlimited()
    };
    ok("{\"a\":1,\"a\":2}");
    ok_with(
        strict,
        "{\"a\":{\"a\":1},\"b\":[{\"a\":1}],\"ab\":1,\"\":1}",
    );
    let v = over(strict, "{\"a\":1,\"b\":2,\"a\":3}");
    assert_eq!((v.offset, v.message.contains("duplicate")), (15, true));
    // The same name written with an escape.
    assert_eq!(over(strict, "{\"é\":1,\"\\u00e9\":2}").offset, 15);
    assert_eq!(over(strict, "{\"😀\":1,\"\\ud83d\\ude00\":2}").offset, 23);
}

#[test]
fn deep_nesting_is_bounded_without_recursion() {
    let deep = "[".repeat(100_000);
    let limited = Limits {
        max_depth: Some(64),
        ..unlimited()
    };
    assert_eq!(over(limited, &deep).offset, 64);
    // Unlimited: scanned to the end (no stack overflow), then rejected as incomplete.
    let v = scan(unlimited(), deep.as_bytes()).unwrap_err();
    assert_eq!((v.kind, v.offset), (ViolationKind::Malformed, 100_000));
    let balanced = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(scan(unlimited(), balanced.as_bytes()), Ok(()));
    let objects = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let counted = Limits {
        max_entries: Some(1),
        max_elements: Some(1),
        ..unlimited()
    };
    assert_eq!(scan(counted, objects.as_bytes()), Ok(()));
}

#[test]
fn a_failed_scanner_stays_failed() {
    let mut s = JsonScanner::new(unlimited());
    let first = s.feed(b"[1,,").unwrap_err();
    assert_eq!(s.feed(b"2]"), Err(first.clone()));
    assert_eq!(s.finish(), Err(first));
}

/// JSONTestSuite's parsing corpus, kept in the repository (`tests/json-test-suite`).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/json-test-suite/test_parsing");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("JSONTestSuite corpus at {}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 318, "corpus incomplete in {}", dir.display());
    files
}

/// JSONTestSuite: every y_ accepted, every n_ rejected (as malformed), every i_ decided
/// without panic, each whole and in 1-byte, 7-byte and random chunks with identical verdicts.
#[test]
fn json_test_suite() {
    let (mut y, mut n, mut i) = (0, 0, 0);
    for (name, doc) in corpus() {
        let result = verdict(unlimited(), &doc);
        if name.starts_with("y_") {
            assert_eq!(result, Ok(()), "{name} must be accepted");
            y += 1;
        } else if name.starts_with("n_") {
            let v = result.expect_err(&format!("{name} must be rejected"));
            assert_eq!(v.kind, ViolationKind::Malformed, "{name}");
            n += 1;
        } else {
            i += 1;
        }
    }
    assert_eq!((y, n, i), (95, 188, 35), "y_, n_, i_ files");
}

/// Random mutations of the corpus: never a panic, chunking never changes the verdict, and the
/// verdict agrees with serde_json wherever serde_json's own choices do not differ (it rejects
/// escaped lone surrogates and nesting over 128).
#[test]
fn random_mutations_agree_with_chunking_and_serde_json() {
    let docs = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"{}[]\",:0123456789-+.eE \\utrfalsn\x00\x1f\x7f\xc3\xa9\xed\xf0\x80";
    for round in 0..20_000 {
        let (_, base) = &docs[rng.below(docs.len())];
        let mut doc = base.clone();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(doc.len() + 1);
            match rng.below(4) {
                0 if pos < doc.len() => {
                    doc[pos] = alphabet[rng.below(alphabet.len())];
                }
                1 if pos < doc.len() => {
                    doc.remove(pos);
                }
                2 => doc.insert(pos, alphabet[rng.below(alphabet.len())]),
                _ => doc.truncate(pos),
            }
        }
        let limits = if round % 3 == 0 {
            Limits {
                max_depth: Some(rng.below(4) as u64),
                max_string: Some(rng.below(8) as u64),
                max_name: Some(rng.below(8) as u64),
                max_entries: Some(rng.below(4) as u64),
                max_elements: Some(rng.below(4) as u64),
                reject_duplicate_keys: rng.below(2) == 0,
            }
        } else {
            unlimited()
        };
        let ours = verdict(limits, &doc);
        if limits == unlimited() && !doc.windows(2).any(|w| w == b"\\u") {
            let theirs = serde_json::from_slice::<serde_json::Value>(&doc);
            let deep = matches!(&theirs, Err(e) if e.to_string().contains("recursion limit")
                || e.to_string().contains("number out of range"));
            if !deep {
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "{:?}: {ours:?} vs {theirs:?}",
                    String::from_utf8_lossy(&doc)
                );
            }
        }
    }
}
