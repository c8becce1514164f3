use super::*;
use palisade_kit::body::testing::{scan_chunked, scan_random_chunks, Rng};
use palisade_kit::body::ViolationKind;

fn unlimited() -> Limits {
    Limits::default()
}

fn dtd() -> Limits {
    Limits {
        allow_dtd: true,
        ..Limits::default()
    }
}

/// Whole, 1-byte, 7-byte and random chunking must agree exactly.
fn verdict(limits: Limits, doc: &[u8]) -> Result<(), Violation> {
    let whole = scan(limits, doc);
    assert_eq!(
        scan_chunked(XmlScanner::new(limits), doc, 1),
        whole,
        "1-byte chunks of {:?}",
        String::from_utf8_lossy(doc)
    );
    assert_eq!(
        scan_chunked(XmlScanner::new(limits), doc, 7),
        whole,
        "7-byte chunks"
    );
    let mut rng = Rng(doc.len() as u64 * 31 + 7);
    assert_eq!(
        scan_random_chunks(XmlScanner::new(limits), doc, 40, &mut rng),
        whole,
        "random chunks"
    );
    whole
}

#[track_caller]
fn ok_with(limits: Limits, doc: &str) {
    assert_eq!(verdict(limits, doc.as_bytes()), Ok(()), "{doc}");
}

#[track_caller]
fn ok(doc: &str) {
    ok_with(unlimited(), doc);
}

#[track_caller]
fn malformed(doc: &str) -> Violation {
    let v = verdict(unlimited(), doc.as_bytes()).expect_err(doc);
    assert_eq!(v.kind, ViolationKind::Malformed, "{doc}: {v}");
    v
}

#[track_caller]
fn refused(limits: Limits, doc: &str) -> Violation {
    let v = verdict(limits, doc.as_bytes()).expect_err(doc);
    assert_eq!(v.kind, ViolationKind::Limit, "{doc}: {v}");
    v
}

#[test]
fn accepts_well_formed_documents() {
    for doc in [
        "<a/>",
        "<a></a>",
        "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c --><a x='1' y=\"2\">t&amp;&lt;&gt;&quot;&apos;&#65;&#x1F600;<b/><![CDATA[<not markup> ]] ]]><?pi data?></a>\n<!-- after --><?after?>\n",
        "<p:a xmlns:p=\"urn:x\" xmlns=\"urn:y\" p:b=\"1\"><p:c>é😀</p:c></p:a>",
        "<a\n  x = \"1\"\n>text</a >",
        "<a>]]</a>",
        "<a>]></a>",
        "<_a-b.c:d/>",
        "<a><![CDATA[]]]]><![CDATA[>]]></a>",
    ] {
        ok(doc);
    }
}

#[test]
fn rejects_malformed_documents_with_offsets() {
    let cases: &[(&str, u64, &str)] = &[
        ("", 0, "no root element"),
        ("  ", 2, "no root element"),
        ("text", 0, "text before the root element"),
        ("<a>", 3, "unexpected end of document"),
        ("<a></b>", 6, "end tag does not match the open element"),
        ("<a><b></a></b>", 9, "end tag does not match"),
        ("<a/><b/>", 5, "a second root element"),
        ("<a/>x", 4, "content after the root element"),
        ("<a x=1/>", 5, "unexpected character '1'"),
        ("<a x='1' x='2'/>", 10, "duplicate attribute"),
        ("<a x='1'y='2'/>", 8, "unexpected character 'y'"),
        ("<a x='<'/>", 6, "'<' in an attribute value"),
        ("<a>&nbsp;</a>", 8, "reference to an undeclared entity"),
        ("<a>&amp</a>", 7, "invalid reference"),
        ("<a>&#0;</a>", 6, "invalid character reference"),
        ("<a>&#xZ;</a>", 6, "invalid character reference"),
        ("<a><!-- a -- b --></a>", 12, "'--' inside a comment"),
        ("<a>]]></a>", 5, "']]>' in character data"),
        ("<a>\u{1}</a>", 3, "invalid XML character U+0001"),
        (
            "<a/><?xml version='1.0'?>",
            9,
            "XML declaration not at the start",
        ),
        (
            " <?xml version='1.0'?><a/>",
            6,
            "XML declaration not at the start",
        ),
        ("<![CDATA[x]]><a/>", 2, "unexpected character '['"),
        ("<1a/>", 1, "unexpected character '1'"),
        ("</a>", 1, "end tag without a start tag"),
        ("<a><b></a>", 9, "end tag does not match"),
        ("<a", 2, "unexpected end of document"),
        ("<a>text", 7, "unexpected end of document"),
        ("<a></a\t>x", 8, "content after the root element"),
        ("<a></a x>", 7, "unexpected character 'x'"),
        ("<a></-a>", 5, "unexpected character '-'"),
        ("<a></a", 6, "unexpected end of document"),
    ];
    for (doc, offset, message) in cases {
        let v = malformed(doc);
        assert_eq!(v.offset, *offset, "{doc}: {v}");
        assert!(v.message.contains(message), "{doc}: {v}");
    }
    for (doc, at) in [
        (&b"<a>\xff</a>"[..], 3),
        (b"<a>\xc3</a>", 4),
        (b"<a>\xed\xa0\x80</a>", 4),
        (b"<a>\xef\xbf\xbe</a>", 3),
    ] {
        let v = verdict(unlimited(), doc).unwrap_err();
        assert_eq!(
            (v.kind, v.offset),
            (ViolationKind::Malformed, at),
            "{doc:?}: {v}"
        );
    }
}

#[test]
fn each_limit_at_and_over() {
    let l = |f: fn(&mut Limits)| {
        let mut limits = unlimited();
        f(&mut limits);
        limits
    };
    let depth = l(|l| l.max_depth = Some(2));
    ok_with(depth, "<a><b/><b></b></a>");
    assert_eq!(
        refused(depth, "<a><b><c/></b></a>").message,
        "maxNodeDepth (2) exceeded"
    );
    assert_eq!(refused(depth, "<a><b><c/></b></a>").offset, 7);

    let attrs = l(|l| l.max_attributes = Some(2));
    ok_with(attrs, "<a x='1' y='2' xmlns='u' xmlns:p='v'/>");
    assert_eq!(refused(attrs, "<a x='1' y='2' z='3'/>").offset, 16);

    let ns = l(|l| l.max_namespaces = Some(1));
    ok_with(ns, "<a xmlns='u' xmlnsx='1' x='2'><b xmlns:p='v'/></a>");
    let v = refused(ns, "<a xmlns='u' xmlns:p='v'/>");
    assert_eq!(
        (v.offset, v.message.as_str()),
        (20, "maxNamespaceCountPerElement (1) exceeded")
    );

    let children = l(|l| l.max_children = Some(3));
    ok_with(children, "<a>\n  <b/>\n  <c/>\n  <!--x-->\n</a>");
    ok_with(children, "<a>t<b/>u<![CDATA[v]]>w</a>");
    assert_eq!(refused(children, "<a><b/><c/><d/><e/></a>").offset, 16);
    assert_eq!(refused(children, "<a>t<b/>u<c/>v</a>").offset, 10);
    assert_eq!(refused(children, "<a><b/><?p?><!--c--><e/></a>").offset, 21);
    assert_eq!(refused(children, "<a><b/><c/><d/><!--x--></a>").offset, 18);

    let text = l(|l| l.max_text = Some(4));
    ok_with(text, "<a>abcd<b>&amp;&#65;é😀</b>ab<![CDATA[cd]]></a>");
    assert_eq!(refused(text, "<a>abcde</a>").offset, 7);
    assert_eq!(refused(text, "<a>ab<![CDATA[cde]]></a>").offset, 16);
    assert_eq!(refused(text, "<a>abcd&amp;</a>").offset, 11);

    let attr_len = l(|l| l.max_attribute_length = Some(3));
    ok_with(attr_len, "<a x='abc' y=\"&amp;bc\"/>");
    assert_eq!(refused(attr_len, "<a x='abcd'/>").offset, 9);

    let comment = l(|l| l.max_comment = Some(3));
    ok_with(comment, "<!--abc--><a><!--a-c--></a>");
    assert_eq!(refused(comment, "<a><!--abcd--></a>").offset, 10);

    let name = l(|l| l.max_name = Some(3));
    ok_with(name, "<abc def='1'><?pqr?></abc>");
    assert_eq!(refused(name, "<abcd/>").offset, 4);
    assert_eq!(refused(name, "<a defg='1'/>").offset, 6);
    assert_eq!(refused(name, "<abc></abcd>").offset, 10);
}

#[test]
fn any_doctype_is_refused_by_default() {
    for doc in [
        "<!DOCTYPE a><a/>",
        "<?xml version='1.0'?><!DOCTYPE a SYSTEM \"http://evil/x.dtd\"><a/>",
        "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><foo>&xxe;</foo>",
    ] {
        let v = refused(unlimited(), doc);
        assert_eq!(
            v.message, "DOCTYPE not allowed (allowDtd is false)",
            "{doc}"
        );
    }
}

#[test]
fn external_subsets_and_entities_are_refused_even_with_a_dtd() {
    let subset = "external DTD subset (SYSTEM/PUBLIC) not allowed";
    let entity = "external entity (SYSTEM/PUBLIC) not allowed";
    for (doc, message) in [
        // Never fetched here, but the upstream's parser may: refused used or not.
        ("<!DOCTYPE foo SYSTEM \"http://evil/x.dtd\"><foo/>", subset),
        ("<!DOCTYPE foo\n PUBLIC \"-//x\" \"http://evil/x.dtd\" [<!ENTITY e 'x'>]><foo/>", subset),
        ("<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><foo>&xxe;</foo>", entity),
        ("<!DOCTYPE foo [<!ENTITY e SYSTEM 'x'>]><foo/>", entity),
        ("<!DOCTYPE foo [<!ENTITY e PUBLIC \"-//x\" \"http://evil/\">]><foo a='&e;'/>", entity),
        // An unparsed entity, and one an ATTLIST default would reference.
        ("<!DOCTYPE foo [<!NOTATION gif SYSTEM 'image/gif'><!ENTITY i SYSTEM 'http://evil/i' NDATA gif>]><foo/>", entity),
        ("<!DOCTYPE foo [<!ENTITY x SYSTEM 'file:///etc/passwd'><!ATTLIST foo a CDATA '&x;'>]><foo/>", entity),
    ] {
        let v = refused(dtd(), doc);
        assert!(v.message.starts_with(message), "{doc}: {v}");
        // At the keyword (the last one: a NOTATION may name a system identifier).
        let at = doc.rfind(" SYSTEM").or(doc.rfind(" PUBLIC")).unwrap() + 1;
        assert_eq!(v.offset as usize, at, "{doc}: {v}");
    }
    let pe = "<!DOCTYPE foo [<!ENTITY % p SYSTEM \"http://evil/\"> %p;]><foo/>";
    assert!(refused(dtd(), pe).message.contains("parameter entities"));
    for pe in [
        "<!DOCTYPE foo [<!ENTITY % p 'x'>]><foo/>",
        "<!DOCTYPE foo [<!ELEMENT foo (%p;)>]><foo/>",
        "<!DOCTYPE foo [<!ENTITY e 'x' %p;>]><foo/>",
    ] {
        assert!(
            refused(dtd(), pe).message.contains("parameter entities"),
            "{pe}"
        );
    }
    // A notation is only a name for a format: parsers fetch nothing.
    ok_with(
        dtd(),
        "<!DOCTYPE foo [<!NOTATION gif SYSTEM 'image/gif'><!ELEMENT foo ANY>]><foo/>",
    );
}

#[test]
fn entity_values_cannot_smuggle_references_or_markup() {
    // `&#38;` is a `&` in the replacement text: `&l1;` would be an uncounted reference (a
    // billion laughs the bound would not see), `&#60;` a `<` (markup the limits would not see).
    for doc in [
        "<!DOCTYPE r [<!ENTITY a 'aaaa'><!ENTITY b '&#38;a;&#38;a;'>]><r>&b;</r>",
        "<!DOCTYPE r [<!ENTITY b '&#x26;a;'>]><r/>",
        "<!DOCTYPE r [<!ENTITY b '&#60;x/>'>]><r>&b;</r>",
        "<!DOCTYPE r [<!ENTITY b '&#x3C;x/>'>]><r/>",
    ] {
        let v = refused(dtd(), doc);
        assert!(v.message.contains("in an entity value"), "{doc}: {v}");
    }
    // Elsewhere those are plain characters.
    ok_with(
        dtd(),
        "<!DOCTYPE r [<!ATTLIST r a CDATA '&#38;&#60;'><!ENTITY e '&#62;&amp;'>]><r b='&#38;'>&#60;&e;</r>",
    );
}
fn billion_laughs(levels: usize) -> String {
    let mut doc =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..=levels {
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
    doc.push_str(&format!("]>\n<lolz>&lol{levels};</lolz>"));
    doc
}

#[test]
fn billion_laughs_is_bounded() {
    let v = refused(dtd(), &billion_laughs(9));
    assert_eq!(v.message, "maxEntityExpansion (65536) exceeded");
    // 3 × 10^4 characters fit under the default bound.
    ok_with(dtd(), &billion_laughs(3));
    let tight = Limits {
        max_entity_expansion: 1000,
        ..dtd()
    };
    assert!(refused(tight, &billion_laughs(3))
        .message
        .contains("maxEntityExpansion"));
}

#[test]
fn quadratic_blowup_is_bounded() {
    let big = "x".repeat(50_000);
    let refs = "&a;".repeat(1000);
    let doc = format!("<!DOCTYPE r [<!ENTITY a \"{big}\">]><r>{refs}</r>");
    let v = refused(dtd(), &doc);
    assert_eq!(v.message, "maxEntityExpansion (65536) exceeded");
    // The second reference crosses the total bound (detected at its `;`).
    assert_eq!(v.offset as usize, doc.find("&a;&a;").unwrap() + 5);
    // In attributes too.
    let doc = format!("<!DOCTYPE r [<!ENTITY a \"{big}\">]><r x='&a;&a;'/>");
    assert!(refused(dtd(), &doc).message.contains("maxEntityExpansion"));
}

#[test]
fn declared_entities_expand_in_lengths() {
    let limits = Limits {
        max_text: Some(10),
        ..dtd()
    };
    let doc = "<!DOCTYPE r [<!ELEMENT r ANY><!ATTLIST r x CDATA 'd>'><!-- c --><?pi x?><!ENTITY e \"12345&amp;\">]><r>&e;&e;</r>";
    assert_eq!(refused(limits, doc).message, "maxTextLength (10) exceeded");
    ok_with(dtd(), doc);
    assert!(
        refused(dtd(), "<!DOCTYPE r [<!ENTITY e \"<b/>\">]><r>&e;</r>")
            .message
            .contains("markup")
    );
    // Self-reference is impossible: an entity is only known after its declaration.
    let v = verdict(dtd(), b"<!DOCTYPE r [<!ENTITY e \"&e;\">]><r>&e;</r>").unwrap_err();
    assert_eq!(v.kind, ViolationKind::Malformed);
    let v = verdict(dtd(), b"<!DOCTYPE r [<!BOGUS x>]><r/>").unwrap_err();
    assert_eq!(v.message, "unknown markup declaration");
}

#[test]
fn deep_nesting_is_bounded_without_recursion() {
    let deep = "<a>".repeat(100_000);
    let limited = Limits {
        max_depth: Some(100),
        ..unlimited()
    };
    // Detected at the name of the 101st element.
    assert_eq!(refused(limited, &deep).offset, 301);
    let v = scan(unlimited(), deep.as_bytes()).unwrap_err();
    assert_eq!(v.message, "unexpected end of document");
    let balanced = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    assert_eq!(scan(unlimited(), balanced.as_bytes()), Ok(()));
}

/// Random mutations of valid and hostile documents: no panic, and chunking never changes the
/// verdict.
#[test]
fn random_mutations_agree_with_chunking() {
    let seeds = [
        "<?xml version=\"1.0\"?><!-- c --><a x='1' xmlns:p='u'><p:b>t&amp;&#65;</p:b><![CDATA[x]]><?p d?></a>".to_string(),
        billion_laughs(2),
        "<!DOCTYPE f [<!ENTITY x SYSTEM 'file:///etc/passwd'><!ENTITY y 'yy'>]><f a='&y;'>&y;&x;</f>".to_string(),
        "<?xml version='1.0' encoding='us-ascii' standalone='no'?><!DOCTYPE f [<!ENTITY y 'yy'><!ATTLIST f a CDATA '&y;&#38;' b (x|y) #FIXED \"x\">]><f>&y;<f/></f>".to_string(),
        "<a><b><c>é😀</c></b></a>".to_string(),
    ];
    let alphabet = b"<>/!?-[]&#;='\" abxCDATASYML\xc3\xa9\xed\x80\x00\xfe\xff";
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..20_000 {
        let mut doc = seeds[rng.below(seeds.len())].clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(doc.len() + 1);
            match rng.below(4) {
                0 if pos < doc.len() => doc[pos] = alphabet[rng.below(alphabet.len())],
                1 if pos < doc.len() => {
                    doc.remove(pos);
                }
                2 => doc.insert(pos, alphabet[rng.below(alphabet.len())]),
                _ => doc.truncate(pos),
            }
        }
        let limits = if round % 2 == 0 {
            dtd()
        } else {
            Limits {
                max_depth: Some(rng.below(4) as u64),
                max_attributes: Some(rng.below(3) as u64),
                max_namespaces: Some(rng.below(2) as u64),
                max_children: Some(rng.below(4) as u64),
                max_text: Some(rng.below(6) as u64),
                max_attribute_length: Some(rng.below(4) as u64),
                max_comment: Some(rng.below(4) as u64),
                max_name: Some(1 + rng.below(3) as u64),
                allow_dtd: rng.below(2) == 0,
                max_entity_expansion: rng.below(100) as u64,
            }
        };
        let _ = verdict(limits, &doc);
    }
}

/// A DOCTYPE with an external entity, hidden in UTF-7 inside what a UTF-8 reader sees as a
/// comment (`+ACY-` is `&`): what a libxml2-based upstream reads is
/// `<!----><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><!-- --><r>&x;</r>`.
const UTF7_XXE: &str = "<?xml version=\"1.0\" encoding=\"UTF-7\"?><!--+AC0ALQA+ADwAIQBEAE8AQwBUAFkAUABFACAAcgAgAFsAPAAhAEUATgBUAEkAVABZACAAeAAgAFMAWQBTAFQARQBNACAAIgBmAGkAbABlADoALwAvAC8AZQB0AGMALwBwAGEAcwBzAHcAZAAiAD4AXQA+ADwAIQAtAC0- --><r>+ACY-x;</r>";

#[test]
fn declared_encodings_other_than_utf8_and_ascii_are_refused() {
    let v = refused(unlimited(), UTF7_XXE);
    assert_eq!(
        (v.offset, v.message.as_str()),
        (
            35,
            "encoding \"UTF-7\" declared: only UTF-8 and US-ASCII documents are read"
        )
    );
    for (doc, name) in [
        ("<?xml version='1.0' encoding='utf-7'?><a/>", "utf-7"),
        (
            "<?xml version=\"1.0\"\n\tencoding = 'UTF-16' ?><a/>",
            "UTF-16",
        ),
        (
            "<?xml version='1.1' encoding='ISO-8859-1' standalone='yes'?><a/>",
            "ISO-8859-1",
        ),
        (
            "\u{feff}<?xml version='1.0' encoding='EBCDIC-CP-US'?><a/>",
            "EBCDIC-CP-US",
        ),
        (
            "<?xml version='1.0' encoding='Shift_JIS'?><a/>",
            "Shift_JIS",
        ),
        ("<?xml version='1.0' encoding='utf-8.'?><a/>", "utf-8."),
    ] {
        let v = refused(unlimited(), doc);
        assert_eq!(
            v.message,
            format!("encoding \"{name}\" declared: only UTF-8 and US-ASCII documents are read"),
            "{doc}"
        );
    }
    // The declaration's exact grammar: no spelling slips an encoding past the check.
    for doc in [
        "<?xml version='1.0' ENCODING='utf-7'?><a/>",
        "<?xml version='1.0' Encoding='utf-7'?><a/>",
        "<?xml encoding='utf-7' version='1.0'?><a/>",
        "<?xml version='1.0' standalone='no' encoding='utf-7'?><a/>",
        "<?xml version='1.0' encoding='utf-8' encoding='utf-7'?><a/>",
        "<?xml version='1.0' encoding=utf-7?><a/>",
        "<?xml version='1.0' encoding='utf-8 '?><a/>",
        "<?xml version='1.0' encoding=' utf-8'?><a/>",
        "<?xml version='1.0' encoding='+utf-8'?><a/>",
        "<?xml version='1.0'encoding='utf-8'?><a/>",
        "<?xml version='1.0' foo='bar' encoding='utf-7'?><a/>",
        "<?xml version='1.0' encoding='utf-8'?  ><a/>",
        "<?xml version='2.0'?><a/>",
        "<?xml version='1.'?><a/>",
        "<?xml version='1.0' standalone='maybe'?><a/>",
        "<?xml encoding='utf-8'?><a/>",
        "<?xml?><a/>",
        "<?xml version='1.0' encoding='ü'?><a/>",
        "<?XML version='1.0' encoding='utf-7'?><a/>",
        "<?xMl version='1.0'?><a/>",
        "<a><?XML x?></a>",
    ] {
        let v = malformed(doc);
        assert!(
            v.message.contains("XML declaration") || v.message.contains("reserved for XML"),
            "{doc}: {v}"
        );
    }
    let long = format!("<?xml version='1.0' encoding='{}'?><a/>", "x".repeat(60));
    malformed(&long);
    // Mismatched quotes: the value runs to the end.
    malformed("<?xml version='1.0' encoding=\"utf-7'?><a/>");
    for doc in [
        "<?xml version='1.0' encoding='UTF-8'?><a>é</a>",
        "<?xml version = \"1.0\"  encoding = \"utf8\"\n standalone = 'no' ?><a/>",
        "<?xml version='1.0' encoding='Utf-8' standalone=\"yes\"?><a/>",
        "<?xml version='1.0' encoding='US-ASCII'?><a/>",
        "<?xml version='1.0' encoding='ascii'?><a/>",
        "<?xml version='1.0' standalone='yes'?><a/>",
        "\u{feff}<?xml version='1.0'?><a/>",
        "<?xml-stylesheet href='s.xsl'?><a/>",
    ] {
        ok(doc);
    }
}

#[test]
fn byte_order_marks_other_than_utf8_are_refused() {
    let doc = "<?xml version=\"1.0\"?><a>é</a>";
    let utf16 = |bom: &[u8], units: fn(u16) -> [u8; 2]| {
        let mut out = bom.to_vec();
        doc.encode_utf16().for_each(|u| out.extend(units(u)));
        out
    };
    let utf32 = |bom: &[u8], units: fn(u32) -> [u8; 4]| {
        let mut out = bom.to_vec();
        doc.chars().for_each(|c| out.extend(units(c as u32)));
        out
    };
    for (name, bytes, at) in [
        ("UTF-16LE", utf16(&[0xff, 0xfe], u16::to_le_bytes), 0),
        ("UTF-16BE", utf16(&[0xfe, 0xff], u16::to_be_bytes), 0),
        ("UTF-32LE", utf32(&[0xff, 0xfe, 0, 0], u32::to_le_bytes), 0),
        ("UTF-32BE", utf32(&[0, 0, 0xfe, 0xff], u32::to_be_bytes), 0),
        ("UTF-16LE without BOM", utf16(&[], u16::to_le_bytes), 1),
        ("UTF-16BE without BOM", utf16(&[], u16::to_be_bytes), 0),
    ] {
        let v = verdict(unlimited(), &bytes).unwrap_err();
        assert_eq!(v.kind, ViolationKind::Limit, "{name}: {v}");
        assert_eq!(
            (v.offset, v.message.as_str()),
            (
                at,
                "UTF-16 or UTF-32 document: only UTF-8 and US-ASCII are read"
            ),
            "{name}"
        );
    }
    // Bytes that are not UTF-8 at all stay malformed: overlong, out of range, truncated.
    for (bytes, at) in [
        (&b"<a>\xc0\xaf</a>"[..], 3),
        (b"<a>\xf5\x80\x80\x80</a>", 3),
        (b"<a>\xe0\x80\xaf</a>", 4),
        (b"<a>\xfe</a>", 3),
        (b"<a>\0</a>", 3),
    ] {
        let v = verdict(unlimited(), bytes).unwrap_err();
        assert_eq!((v.kind, v.offset), (ViolationKind::Malformed, at), "{v}");
    }
}

#[test]
fn a_document_declared_us_ascii_must_be_ascii() {
    ok("<?xml version='1.0' encoding='us-ascii'?><a>&#233;</a>");
    let v = refused(
        unlimited(),
        "<?xml version='1.0' encoding='us-ascii'?><a>é</a>",
    );
    assert_eq!(
        (v.offset, v.message.as_str()),
        (44, "non-ASCII byte in a document declared US-ASCII")
    );
}

/// The verdict on `doc` sent with `content_type`, the same whole and in 1-byte chunks.
fn with_content_type(content_type: &str, doc: &str) -> Result<(), Violation> {
    let scanner = || XmlScanner::for_content_type(unlimited(), Some(content_type));
    let whole = scan_chunked(scanner(), doc.as_bytes(), doc.len().max(1));
    assert_eq!(scan_chunked(scanner(), doc.as_bytes(), 1), whole);
    whole
}

#[test]
fn a_content_type_charset_other_than_utf8_or_ascii_is_refused() {
    for content_type in [
        "text/xml; charset=utf-7",
        "application/xml;charset=\"UTF-16\"",
        "text/xml; CHARSET = iso-8859-1",
        "text/xml; charset*=utf-8''utf-7",
        "text/xml; charset=",
        // Envoy joins a repeated header with ','.
        "application/xml; charset=utf-8,text/xml; charset=utf-8",
        "application/xml,text/xml; charset=utf-7",
        "text/xml; charset=utf-8; charset=utf-16",
    ] {
        let v = with_content_type(content_type, "<a/>").unwrap_err();
        assert_eq!(
            (v.kind, v.offset, v.message.as_str()),
            (
                ViolationKind::Limit,
                0,
                "content-type charset other than UTF-8 or US-ASCII (only those are read)"
            ),
            "{content_type}"
        );
        // Even with no body bytes.
        assert!(with_content_type(content_type, "").is_err());
    }
    for content_type in [
        "text/xml",
        "text/xml; charset=UTF-8",
        "application/xml; charset=\"utf-8\"",
        "application/soap+xml; action=\"urn:x\"; Charset=utf8",
        "text/xml;charset=us-ascii",
    ] {
        assert_eq!(
            with_content_type(content_type, "<a>x</a>"),
            Ok(()),
            "{content_type}"
        );
    }
    // A US-ASCII charset holds the document to ASCII, whatever it declares.
    let v = with_content_type(
        "text/xml; charset=us-ascii",
        "<?xml version='1.0' encoding='utf-8'?><a>é</a>",
    )
    .unwrap_err();
    assert_eq!(v.message, "non-ASCII byte in a document declared US-ASCII");
}

#[test]
fn attribute_defaults_count_toward_the_expansion_bound() {
    // The review's case: a default full of references, applied to every element that lacks
    // the attribute (each `<b/>` gains 10 × 1,000 characters).
    let entity = "x".repeat(1000);
    let doc = format!(
        "<!DOCTYPE r [<!ENTITY e \"{entity}\"><!ATTLIST b a CDATA \"{}\">]><r>{}</r>",
        "&e;".repeat(10),
        "<b/>".repeat(100)
    );
    let v = refused(dtd(), &doc);
    assert_eq!(v.message, "maxEntityExpansion (65536) exceeded");
    // Detected at the name of the seventh `<b/>` (6 × 10,000 fit).
    let first_b = doc.find("<b/>").unwrap();
    assert_eq!(v.offset as usize, first_b + 6 * 4 + 2);
    // Plain text amplifies the same way, and every default of the element adds up.
    let doc = format!(
        "<!DOCTYPE r [<!ATTLIST b a CDATA '{}' c CDATA #FIXED 'yy'><!ATTLIST b d CDATA 'z'>]><r>{}</r>",
        "x".repeat(997),
        "<b/>".repeat(70)
    );
    let tight = Limits {
        max_entity_expansion: 65_000,
        ..dtd()
    };
    // 65 × 1,000 fit, the 66th crosses.
    let v = refused(tight, &doc);
    let first_b = doc.find("<b/>").unwrap();
    assert_eq!(v.offset as usize, first_b + 65 * 4 + 2);
    let roomy = Limits {
        max_entity_expansion: 70_000,
        ..dtd()
    };
    ok_with(roomy, &doc);
    // Only the element named in the ATTLIST gains the defaults (a prefix is part of the name).
    let doc = format!(
        "<!DOCTYPE r [<!ATTLIST p:b a CDATA '{}'>]><r>{}<p:b/></r>",
        "x".repeat(60_000),
        "<b/><bb/><c b='1'/>".repeat(1000)
    );
    ok_with(dtd(), &doc);
    // One default value may not exceed the bound, nor the attribute length limit.
    let one = format!(
        "<!DOCTYPE r [<!ATTLIST b a CDATA '{}'>]><r/>",
        "x".repeat(65_537)
    );
    assert_eq!(
        refused(dtd(), &one).message,
        "maxEntityExpansion (65536) exceeded"
    );
    let short = Limits {
        max_attribute_length: Some(3),
        ..dtd()
    };
    let v = refused(short, "<!DOCTYPE r [<!ATTLIST b a CDATA 'abcd'>]><r/>");
    assert_eq!(
        (v.offset, v.message.as_str()),
        (37, "maxAttributeLength (3) exceeded")
    );
    // Default values follow attribute-value rules.
    let v = verdict(dtd(), b"<!DOCTYPE r [<!ATTLIST r a CDATA '<'>]><r/>").unwrap_err();
    assert_eq!(
        (v.kind, v.message.as_str()),
        (ViolationKind::Malformed, "'<' in an attribute value")
    );
    let v = verdict(dtd(), b"<!DOCTYPE r [<!ATTLIST r a CDATA '&u;'>]><r/>").unwrap_err();
    assert_eq!(v.message, "reference to an undeclared entity");
    assert!(refused(dtd(), "<!DOCTYPE r [<!ATTLIST r %p;>]><r/>")
        .message
        .contains("parameter entities"));
    ok_with(
        dtd(),
        "<!DOCTYPE r [<!ATTLIST r a (x|y) 'x' b NOTATION (n) #IMPLIED c CDATA #REQUIRED>]><r c=''/>",
    );
}
