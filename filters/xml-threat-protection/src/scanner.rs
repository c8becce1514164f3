//! A streaming, resumable XML well-formedness checker with structural limits.
//!
//! Written by hand rather than on `quick-xml`: quick-xml's readers pull from a blocking
//! `BufRead` and hand out whole events (a whole start tag with all its attributes, a whole text
//! node), so a 10 MB attribute or text node is buffered before any limit can be applied, and a
//! reader cannot be suspended in the middle of a token when an Envoy body chunk ends. This
//! scanner is fed chunks as they arrive, examines each byte once, and keeps only bounded state:
//! per open element a 64-bit name hash and a child count, per start tag the hashes of its
//! attribute names, and (with a DTD) one length per declared entity and per element name with
//! attribute defaults. It never expands an entity (it only adds up how long expansions would
//! be) and refuses anything external rather than resolve it.
//!
//! It checks XML 1.0 well-formedness as far as a threat check needs it: one root element,
//! matching end tags, attribute syntax and uniqueness, references, comments (no `--`), CDATA
//! and processing instructions, the XML declaration only at the start (and its grammar),
//! `]]>` outside CDATA, valid UTF-8 and XML characters. Names are compared by their 64-bit FNV-1a hash, so two
//! different names crafted to collide would be taken as equal (a mismatched end tag accepted):
//! that can only let one malformed document through, never amplify work. Names are checked as
//! ASCII name characters plus any non-ASCII character (the finer Unicode name classes are not
//! enforced).
//!
//! This module reads the document itself; the encoding (byte-order marks, the XML declaration,
//! the `content-type` charset) is checked by the `prolog` submodule (`scanner/prolog.rs`), and
//! the DOCTYPE (its states, the entities and attribute defaults it declares and what they
//! expand to) is read by the `dtd` submodule (`scanner/dtd.rs`).

mod dtd;
mod prolog;
mod runs;

use dtd::{Dtd, DtdState};
use palisade_kit::body::{BodyScanner, Latch, Violation};
use prolog::{Decl, DeclState};
use runs::run_until;
use std::collections::{HashMap, HashSet};

/// The attribute-name hashes of one start tag: the first few in an array searched linearly
/// (most tags have a handful of attributes; hashing each name with std's keyed hasher cost more
/// than the compares), the rest in a set. The set keeps std's randomly keyed hasher: with a
/// fixed one, crafted names could collide in the table and make a start tag with many
/// attributes quadratic.
#[derive(Debug, Default)]
struct AttributeNames {
    few: [u64; AttributeNames::FEW],
    len: usize,
    more: HashSet<u64>,
}

impl AttributeNames {
    const FEW: usize = 8;

    /// Adds `hash`; false when it was already there.
    #[inline(always)]
    fn insert(&mut self, hash: u64) -> bool {
        let few = self.few.get(..self.len).unwrap_or_default();
        if few.contains(&hash) {
            return false;
        }
        match self.few.get_mut(self.len) {
            Some(slot) => {
                *slot = hash;
                self.len += 1;
                true
            }
            None => self.more.insert(hash),
        }
    }

    #[inline(always)]
    fn clear(&mut self) {
        self.len = 0;
        if !self.more.is_empty() {
            self.more.clear();
        }
    }
}

/// Internal results carry the violation boxed: one pointer, returned in a register, where a
/// whole `Violation` would be written to memory on every character.
type R<T = ()> = Result<T, Box<Violation>>;
type NameMap<V> = HashMap<u64, V>;

/// The limits, `None` meaning unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `maxNodeDepth`: element nesting (the root is 1).
    pub max_depth: Option<u64>,
    /// `maxAttributeCountPerElement` (namespace declarations not counted).
    pub max_attributes: Option<u64>,
    /// `maxNamespaceCountPerElement`: `xmlns` / `xmlns:p` declarations per element.
    pub max_namespaces: Option<u64>,
    /// `maxChildCount`: child elements, comments, PIs and non-blank text nodes per element.
    pub max_children: Option<u64>,
    /// `maxTextLength`: characters of a text node (character data and CDATA combined).
    pub max_text: Option<u64>,
    /// `maxAttributeLength`: characters of an attribute value.
    pub max_attribute_length: Option<u64>,
    /// `maxCommentLength`: characters of a comment.
    pub max_comment: Option<u64>,
    /// `maxNameLength`: characters of an element, attribute, PI target or entity name.
    pub max_name: Option<u64>,
    /// `allowDtd`: false rejects any DOCTYPE.
    pub allow_dtd: bool,
    /// `maxEntityExpansion`: characters one entity may expand to, and all entity references
    /// of the document together.
    pub max_entity_expansion: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: None,
            max_attributes: None,
            max_namespaces: None,
            max_children: None,
            max_text: None,
            max_attribute_length: None,
            max_comment: None,
            max_name: None,
            allow_dtd: false,
            max_entity_expansion: 65_536,
        }
    }
}

/// Where a reference (`&...;`) appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefIn {
    Text,
    Attribute,
    EntityValue,
    /// An attribute default value in an `ATTLIST` declaration.
    Default,
}

/// What a name being read names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameOf {
    Element,
    EndTag,
    Attribute,
    PiTarget {
        in_dtd: bool,
    },
    Entity,
    DoctypeRoot,
    /// The element an `ATTLIST` declaration is for.
    AttlistElement,
    Ref(RefIn),
}

/// What follows a fixed keyword once it is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Comment,
    DtdComment,
    CData,
    Doctype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the very start: a byte-order mark or the document.
    Start,
    /// Outside the root element, before it: whitespace and markup only.
    Misc,
    /// Character data inside the root element.
    Content,
    /// After `<`.
    Lt,
    /// After `<!`.
    Bang,
    /// Matching the rest of a keyword (`-`, `CDATA[`, `OCTYPE`).
    Keyword(&'static [u8], u8, After),
    /// Reading a name (possibly still empty).
    Name(NameOf),
    /// In a start tag after the name or an attribute value (`space`: whitespace followed).
    Tag { space: bool },
    /// After `/` in a start tag.
    EmptyTag,
    /// After an attribute name: `=`.
    Eq,
    /// After `=`: the opening quote.
    Quote,
    /// Inside an attribute value.
    AttrValue,
    /// After an end tag's name: whitespace then `>`.
    EndTag,
    /// Inside a comment; `dashes` consecutive `-` just seen.
    Comment { dashes: u8, in_dtd: bool },
    /// After a PI target: whitespace or `?>`.
    PiAfterTarget { in_dtd: bool },
    /// Inside PI data; `q` when the last character was `?`.
    PiData { q: bool, in_dtd: bool },
    /// Inside CDATA; `brackets` consecutive `]` just seen.
    CData { brackets: u8 },
    /// After `&`.
    Ref(RefIn),
    /// After `&#` / `&#x`.
    CharRef {
        within: RefIn,
        hex: bool,
        value: u32,
        digits: u32,
    },
    /// Inside the XML declaration: see [`DeclState`].
    XmlDecl(DeclState),
    /// Inside the DOCTYPE: see [`DtdState`].
    Dtd(DtdState),
    /// The root element is closed: whitespace, comments and PIs may follow.
    Done,
}

/// An open element.
#[derive(Debug, Clone, Copy)]
struct Open {
    name: u64,
    children: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Names are compared by 64-bit FNV-1a hash of their characters.
#[inline(always)]
fn fnv(hash: u64, c: u32) -> u64 {
    if c < 0x80 {
        return (hash ^ u64::from(c)).wrapping_mul(FNV_PRIME);
    }
    let mut h = hash;
    for b in c.to_le_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    h
}

fn hash_ascii(s: &[u8]) -> u64 {
    s.iter().fold(FNV_OFFSET, |h, &b| fnv(h, u32::from(b)))
}

/// What `XmlScanner::xmlns` is after the attribute name `name`: 6 when it starts with
/// `xmlns:`, its length while it is a prefix of `xmlns:`, otherwise 0xff (no match).
fn xmlns_matched(name: &[u8]) -> u8 {
    let prefix = b"xmlns:";
    let m = name.iter().zip(prefix).take_while(|(a, b)| a == b).count();
    if m == prefix.len() {
        6
    } else if m == name.len() {
        m as u8
    } else {
        0xff
    }
}

/// A byte that goes on with an attribute value quoted by `quote` with no per-character work.
#[inline(always)]
fn in_value(c: u8, quote: u8) -> bool {
    plain(c) && !matches!(c, b'<' | b'&') && c != quote
}

/// Whether every byte of a run of plain ASCII is whitespace.
#[inline(always)]
fn blank(run: &[u8]) -> bool {
    run.iter().all(|&c| is_ws(u32::from(c)))
}

/// How many bytes at the start of `rest` satisfy `f`.
#[inline(always)]
fn run_len(rest: &[u8], f: impl Fn(u8) -> bool) -> usize {
    rest.iter().position(|&c| !f(c)).unwrap_or(rest.len())
}

/// A byte that is a whole character needing no checks beyond the state's delimiters:
/// printable ASCII, tab, line feed or carriage return.
#[inline(always)]
fn plain(c: u8) -> bool {
    (0x20..0x80).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r')
}

#[inline(always)]
fn is_ws(c: u32) -> bool {
    matches!(c, 0x20 | 0x09 | 0x0a | 0x0d)
}

#[inline(always)]
fn is_name_start(c: u32) -> bool {
    matches!(c, 0x41..=0x5a | 0x61..=0x7a | 0x5f | 0x3a) || c >= 0x80
}

#[inline(always)]
fn is_name_char(c: u32) -> bool {
    is_name_start(c) || matches!(c, 0x30..=0x39 | 0x2d | 0x2e)
}

/// XML 1.0 `Char`.
#[inline(always)]
fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xa | 0xd | 0x20..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
}

const UTF16_OR_32: &str = "UTF-16 or UTF-32 document: only UTF-8 and US-ASCII are read";

fn describe(c: u32) -> String {
    match char::from_u32(c) {
        Some(ch) if !ch.is_control() && !ch.is_whitespace() => {
            format!("unexpected character '{ch}'")
        }
        _ => format!("unexpected character U+{c:04X}"),
    }
}

/// The scanner for one document.
#[derive(Debug)]
pub struct XmlScanner {
    limits: Limits,
    state: State,
    /// Absolute offset of the current chunk's first byte.
    base: u64,
    /// Offset of the first byte of the character being handled.
    char_at: u64,
    utf8_left: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    code_point: u32,
    /// Something other than a BOM was seen.
    started: bool,
    /// The `<` being handled is the first character of the document.
    lt_first: bool,
    seen_root: bool,
    seen_doctype: bool,
    stack: Vec<Open>,
    /// The name being read.
    name_hash: u64,
    name_len: u64,
    /// How much of `xmlns` an attribute name matched (6: `xmlns:`; 0xff: no match).
    xmlns: u8,
    /// The first characters of a PI target (to recognise `xml`; 0 for non-ASCII).
    pi_target: [u8; 3],
    /// The XML declaration being read.
    decl: Decl,
    /// The document is declared US-ASCII (declaration or charset): only ASCII bytes.
    ascii_only: bool,
    /// The current start tag's attribute and namespace counts and attribute names.
    attributes: u64,
    namespaces: u64,
    attribute_names: AttributeNames,
    attr_quote: u8,
    value_len: u64,
    comment_len: u64,
    /// Characters of the current text run, whether it is more than whitespace, and the `]`
    /// just seen (`]]>` is not allowed in character data).
    text_len: u64,
    text_nonblank: bool,
    text_brackets: u8,
    /// Declared entities, the declaration being read, total expansion.
    dtd: Dtd,
    failed: Latch,
}

impl XmlScanner {
    /// A scanner enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        XmlScanner {
            limits,
            state: State::Start,
            base: 0,
            char_at: 0,
            utf8_left: 0,
            utf8_lo: 0,
            utf8_hi: 0,
            code_point: 0,
            started: false,
            lt_first: false,
            seen_root: false,
            seen_doctype: false,
            stack: Vec::new(),
            name_hash: FNV_OFFSET,
            name_len: 0,
            xmlns: 0,
            pi_target: [0; 3],
            decl: Decl::default(),
            ascii_only: false,
            attributes: 0,
            namespaces: 0,
            attribute_names: AttributeNames::default(),
            attr_quote: 0,
            value_len: 0,
            comment_len: 0,
            text_len: 0,
            text_nonblank: false,
            text_brackets: 0,
            dtd: Dtd::default(),
            failed: Latch::default(),
        }
    }

    /// A scanner enforcing `limits` on a body sent with this `content-type`: a charset other
    /// than UTF-8 or US-ASCII refuses the body at its first byte.
    pub fn for_content_type(limits: Limits, content_type: Option<&str>) -> Self {
        let mut scanner = XmlScanner::new(limits);
        match prolog::header_charset(content_type) {
            Ok(charset) => scanner.ascii_only = charset == Some(prolog::Charset::Ascii),
            Err(reason) => {
                let _ = scanner.failed.record(Err(Violation::limit(0, reason)));
            }
        }
        scanner
    }

    fn bad(&self, message: impl Into<String>) -> Box<Violation> {
        Box::new(Violation::malformed(self.char_at, message))
    }

    fn refuse(&self, message: impl Into<String>) -> Box<Violation> {
        Box::new(Violation::limit(self.char_at, message))
    }

    fn over(&self, limit: &str, max: u64) -> Box<Violation> {
        Box::new(Violation::limit(
            self.char_at,
            format!("{limit} ({max}) exceeded"),
        ))
    }

    #[inline(always)]
    fn check(&self, value: u64, max: Option<u64>, limit: &str) -> R {
        match max {
            Some(max) if value > max => Err(self.over(limit, max)),
            _ => Ok(()),
        }
    }

    fn name(&mut self, of: NameOf) {
        self.name_hash = FNV_OFFSET;
        self.name_len = 0;
        self.state = State::Name(of);
    }

    /// A child node of the innermost element starts.
    fn child(&mut self) -> R {
        let max = self.limits.max_children;
        if let Some(open) = self.stack.last_mut() {
            open.children += 1;
            if let Some(max) = max {
                if open.children > max {
                    return Err(self.over("maxChildCount", max));
                }
            }
        }
        Ok(())
    }

    /// Markup other than CDATA starts: the text run before it ends.
    fn end_text(&mut self) -> R {
        let was_child = self.text_nonblank;
        self.text_nonblank = false;
        self.text_len = 0;
        self.text_brackets = 0;
        if was_child {
            self.child()?;
        }
        Ok(())
    }

    fn add_text(&mut self, n: u64, blank: bool) -> R {
        self.text_len += n;
        if !blank {
            self.text_nonblank = true;
        }
        self.check(self.text_len, self.limits.max_text, "maxTextLength")
    }

    fn add_attr(&mut self, n: u64) -> R {
        self.value_len += n;
        self.check(
            self.value_len,
            self.limits.max_attribute_length,
            "maxAttributeLength",
        )
    }

    /// A reference that expands to `n` characters ends; back to where it appeared.
    fn referenced(&mut self, within: RefIn, n: u64, blank: bool) -> R {
        match within {
            RefIn::Text => {
                self.state = State::Content;
                self.add_text(n, blank)
            }
            RefIn::Attribute => {
                self.state = State::AttrValue;
                self.add_attr(n)
            }
            RefIn::EntityValue => {
                self.state = State::Dtd(DtdState::EntityValue);
                self.add_entity(n)
            }
            RefIn::Default => {
                self.state = State::Dtd(DtdState::AttDefault);
                self.add_default(n)
            }
        }
    }

    /// The state after a comment or PI closes.
    fn after_markup(&mut self, in_dtd: bool) {
        self.state = if in_dtd {
            State::Dtd(DtdState::Subset)
        } else if !self.seen_root {
            State::Misc
        } else if self.stack.is_empty() {
            State::Done
        } else {
            State::Content
        };
    }

    fn after_element(&mut self) {
        self.state = if self.stack.is_empty() {
            State::Done
        } else {
            State::Content
        };
    }

    /// A name ended at `c` (not a name character).
    fn name_end(&mut self, of: NameOf, c: u32) -> R {
        if self.name_ended(of, c)? {
            self.on_char(c)
        } else {
            Ok(())
        }
    }

    /// What the end of a name at `c` (not a name character) does, but for `c` itself: true
    /// when `c` belongs to what follows (the new state), false when it closed the name (`;`).
    fn name_ended(&mut self, of: NameOf, c: u32) -> R<bool> {
        if self.name_len == 0 {
            return Err(self.bad(describe(c)));
        }
        let hash = self.name_hash;
        match of {
            NameOf::Element => {
                self.stack.push(Open {
                    name: hash,
                    children: 0,
                });
                if !self.no_defaults_declared() {
                    self.defaults_applied(hash)?;
                }
                self.state = State::Tag { space: false };
            }
            NameOf::EndTag => {
                if self.stack.pop().map(|o| o.name) != Some(hash) {
                    return Err(self.bad("end tag does not match the open element"));
                }
                self.state = State::EndTag;
            }
            NameOf::Attribute => {
                self.attribute_named()?;
                self.state = State::Eq;
            }
            NameOf::PiTarget { in_dtd } => {
                let xml = self.name_len == 3 && self.pi_target.eq_ignore_ascii_case(b"xml");
                if !xml {
                    self.state = State::PiAfterTarget { in_dtd };
                } else if &self.pi_target != b"xml" {
                    // Reserved (XML 1.0 §2.6), and a fatal error to libxml2.
                    return Err(self.bad("processing-instruction target reserved for XML"));
                } else if in_dtd || !self.lt_first {
                    return Err(self.bad("XML declaration not at the start of the document"));
                } else {
                    self.xml_declaration();
                }
            }
            NameOf::Entity => self.entity_named(hash),
            NameOf::DoctypeRoot => self.state = State::Dtd(DtdState::DoctypeTail),
            NameOf::AttlistElement => self.attlist_named(hash),
            NameOf::Ref(within) => {
                if c != u32::from(b';') {
                    return Err(self.bad("invalid reference"));
                }
                self.entity_reference(within)?;
                return Ok(false);
            }
        }
        // The character that ended the name belongs to what follows.
        Ok(true)
    }

    /// An attribute name (`name_hash`, `name_len`, `xmlns`) ends: unique in its tag, counted
    /// as an attribute or a namespace declaration.
    fn attribute_named(&mut self) -> R {
        if !self.attribute_names.insert(self.name_hash) {
            return Err(self.bad("duplicate attribute"));
        }
        if (self.xmlns == 5 && self.name_len == 5) || self.xmlns == 6 {
            self.namespaces += 1;
            self.check(
                self.namespaces,
                self.limits.max_namespaces,
                "maxNamespaceCountPerElement",
            )
        } else {
            self.attributes += 1;
            self.check(
                self.attributes,
                self.limits.max_attributes,
                "maxAttributeCountPerElement",
            )
        }
    }

    fn name_char(&mut self, of: NameOf, c: u32) -> R {
        let valid = if self.name_len == 0 {
            is_name_start(c)
        } else {
            is_name_char(c)
        };
        if !valid {
            return self.name_end(of, c);
        }
        if of == NameOf::Attribute {
            let n = self.name_len as usize;
            self.xmlns = match (self.xmlns, b"xmlns:".get(n)) {
                (m, Some(&want)) if m as usize == n && c == u32::from(want) => m + 1,
                (6, _) => 6,
                _ => 0xff,
            };
        }
        if let NameOf::PiTarget { .. } = of {
            if let Some(slot) = self.pi_target.get_mut(self.name_len as usize) {
                *slot = u8::try_from(c).unwrap_or(0);
            }
        }
        self.name_hash = fnv(self.name_hash, c);
        self.name_len += 1;
        self.check(self.name_len, self.limits.max_name, "maxNameLength")
    }

    /// A start tag begins (after `<`, at its name's first character): the checks before its
    /// name is read.
    fn start_element(&mut self) -> R {
        if self.stack.is_empty() && self.seen_root {
            return Err(self.bad("a second root element"));
        }
        if !self.stack.is_empty() {
            self.end_text()?;
            self.child()?;
        }
        let depth = self.stack.len() as u64 + 1;
        self.check(depth, self.limits.max_depth, "maxNodeDepth")?;
        self.seen_root = true;
        self.attributes = 0;
        self.namespaces = 0;
        self.attribute_names.clear();
        self.name(NameOf::Element);
        Ok(())
    }

    fn keyword_done(&mut self, after: After) -> R {
        match after {
            After::Comment => {
                if !self.stack.is_empty() {
                    self.end_text()?;
                    self.child()?;
                }
                self.comment_len = 0;
                self.state = State::Comment {
                    dashes: 0,
                    in_dtd: false,
                };
            }
            After::DtdComment => {
                self.comment_len = 0;
                self.state = State::Comment {
                    dashes: 0,
                    in_dtd: true,
                };
            }
            After::CData => self.state = State::CData { brackets: 0 },
            After::Doctype => self.doctype()?,
        }
        Ok(())
    }

    fn on_char(&mut self, c: u32) -> R {
        match self.state {
            State::Start => {
                self.state = State::Misc;
                self.on_char(c)?;
            }
            State::Misc | State::Done => {
                if c == u32::from(b'<') {
                    self.lt_first = !self.started;
                    self.state = State::Lt;
                } else if !is_ws(c) {
                    return Err(self.bad(if matches!(self.state, State::Done) {
                        "content after the root element"
                    } else {
                        "text before the root element"
                    }));
                }
            }
            State::Content => match c {
                0x3c => self.state = State::Lt,
                0x26 => {
                    self.text_brackets = 0;
                    self.state = State::Ref(RefIn::Text);
                }
                _ => {
                    if c == 0x3e && self.text_brackets >= 2 {
                        return Err(self.bad("']]>' in character data"));
                    }
                    self.text_brackets = if c == 0x5d {
                        (self.text_brackets + 1).min(2)
                    } else {
                        0
                    };
                    self.add_text(1, is_ws(c))?;
                }
            },
            State::Lt => match c {
                0x21 => self.state = State::Bang,
                0x3f => {
                    if !self.stack.is_empty() {
                        self.end_text()?;
                        self.child()?;
                    }
                    self.pi_target = [0; 3];
                    self.name(NameOf::PiTarget { in_dtd: false });
                }
                0x2f => {
                    if self.stack.is_empty() {
                        return Err(self.bad("end tag without a start tag"));
                    }
                    self.end_text()?;
                    self.name(NameOf::EndTag);
                }
                _ => {
                    self.start_element()?;
                    self.name_char(NameOf::Element, c)?;
                    if self.name_len == 0 {
                        return Err(self.bad(describe(c)));
                    }
                }
            },
            State::Bang => match c {
                0x2d => self.state = State::Keyword(b"-", 0, After::Comment),
                0x5b if !self.stack.is_empty() => {
                    self.state = State::Keyword(b"CDATA[", 0, After::CData)
                }
                0x44 if !self.seen_root && !self.seen_doctype => {
                    self.state = State::Keyword(b"OCTYPE", 0, After::Doctype)
                }
                _ => return Err(self.bad(describe(c))),
            },
            State::Keyword(word, at, after) => {
                if word.get(usize::from(at)).map(|&b| u32::from(b)) != Some(c) {
                    return Err(self.bad(describe(c)));
                }
                if usize::from(at) + 1 == word.len() {
                    self.keyword_done(after)?;
                } else {
                    self.state = State::Keyword(word, at + 1, after);
                }
            }
            State::Name(of) => self.name_char(of, c)?,
            State::Tag { space } => match c {
                0x3e => self.state = State::Content,
                0x2f => self.state = State::EmptyTag,
                _ if is_ws(c) => self.state = State::Tag { space: true },
                _ if space => {
                    self.xmlns = 0;
                    self.name(NameOf::Attribute);
                    self.name_char(NameOf::Attribute, c)?;
                    if self.name_len == 0 {
                        return Err(self.bad(describe(c)));
                    }
                }
                _ => return Err(self.bad(describe(c))),
            },
            State::EmptyTag => {
                if c != 0x3e {
                    return Err(self.bad(describe(c)));
                }
                self.stack.pop();
                self.after_element();
            }
            State::Eq => match c {
                0x3d => self.state = State::Quote,
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            State::Quote => match c {
                0x22 | 0x27 => {
                    self.value_len = 0;
                    self.attr_quote = c as u8;
                    self.state = State::AttrValue;
                }
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            State::AttrValue => match c {
                _ if c == u32::from(self.attr_quote) => self.state = State::Tag { space: false },
                0x3c => return Err(self.bad("'<' in an attribute value")),
                0x26 => self.state = State::Ref(RefIn::Attribute),
                _ => self.add_attr(1)?,
            },
            State::EndTag => match c {
                0x3e => self.after_element(),
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            State::Comment { dashes, in_dtd } => {
                if dashes >= 2 {
                    if c != 0x3e {
                        return Err(self.bad("'--' inside a comment"));
                    }
                    self.after_markup(in_dtd);
                } else if c == 0x2d {
                    self.state = State::Comment {
                        dashes: dashes + 1,
                        in_dtd,
                    };
                } else {
                    self.comment_len += u64::from(dashes) + 1;
                    self.check(
                        self.comment_len,
                        self.limits.max_comment,
                        "maxCommentLength",
                    )?;
                    self.state = State::Comment { dashes: 0, in_dtd };
                }
            }
            State::PiAfterTarget { in_dtd } => match c {
                0x3f => self.state = State::PiData { q: true, in_dtd },
                _ if is_ws(c) => self.state = State::PiData { q: false, in_dtd },
                _ => return Err(self.bad(describe(c))),
            },
            State::PiData { q, in_dtd } => {
                if q && c == 0x3e {
                    self.after_markup(in_dtd);
                } else {
                    self.state = State::PiData {
                        q: c == 0x3f,
                        in_dtd,
                    };
                }
            }
            State::CData { brackets } => {
                if c == 0x5d {
                    if brackets == 2 {
                        // `]]]`: the first bracket was text.
                        self.add_text(1, false)?;
                    } else {
                        self.state = State::CData {
                            brackets: brackets + 1,
                        };
                    }
                } else if c == 0x3e && brackets == 2 {
                    // The text run goes on after the section.
                    self.state = State::Content;
                } else {
                    self.add_text(u64::from(brackets) + 1, brackets == 0 && is_ws(c))?;
                    self.state = State::CData { brackets: 0 };
                }
            }
            State::Ref(within) => {
                if c == 0x23 {
                    self.state = State::CharRef {
                        within,
                        hex: false,
                        value: 0,
                        digits: 0,
                    };
                } else {
                    self.name(NameOf::Ref(within));
                    self.name_char(NameOf::Ref(within), c)?;
                    if self.name_len == 0 {
                        return Err(self.bad("invalid reference"));
                    }
                }
            }
            State::CharRef {
                within,
                hex,
                value,
                digits,
            } => {
                if c == 0x78 && digits == 0 && !hex {
                    self.state = State::CharRef {
                        within,
                        hex: true,
                        value,
                        digits,
                    };
                } else if c == 0x3b {
                    if digits == 0 || !is_xml_char(value) {
                        return Err(self.bad("invalid character reference"));
                    }
                    if within == RefIn::EntityValue && matches!(value, 0x26 | 0x3c) {
                        // `&#38;` / `&#60;` become a real `&` / `<` in the replacement text,
                        // parsed again where the entity is referenced: a reference or markup
                        // the expansion bound would not see.
                        return Err(self.refuse(
                            "character reference to '&' or '<' in an entity value (parsed again when the entity expands)",
                        ));
                    }
                    self.referenced(within, 1, is_ws(value))?;
                } else {
                    let digit = match (c, hex) {
                        (0x30..=0x39, _) => c - 0x30,
                        (0x61..=0x66, true) => c - 0x61 + 10,
                        (0x41..=0x46, true) => c - 0x41 + 10,
                        _ => return Err(self.bad("invalid character reference")),
                    };
                    let value = value
                        .saturating_mul(if hex { 16 } else { 10 })
                        .saturating_add(digit)
                        .min(0x11_0000);
                    self.state = State::CharRef {
                        within,
                        hex,
                        value,
                        digits: digits + 1,
                    };
                }
            }
            State::XmlDecl(state) => self.decl_char(state, c)?,
            State::Dtd(state) => self.dtd_char(state, c)?,
        }
        Ok(())
    }

    /// A limit on a value that grows by a run of `n` characters starting at `at`, reported at
    /// the exact character that crosses it.
    #[inline(always)]
    fn run_limit(&self, before: u64, n: usize, max: Option<u64>, limit: &str, at: u64) -> R {
        match max {
            Some(max) if before + n as u64 > max => Err(Box::new(Violation::limit(
                at + max.saturating_sub(before),
                format!("{limit} ({max}) exceeded"),
            ))),
            _ => Ok(()),
        }
    }

    /// The rest of a start tag from `chunk[start..]`, in state `Tag { space }`: whitespace,
    /// then attributes written in plain ASCII (`name="value"`), read one after the other
    /// rather than a state per byte, up to `>`. Stops, with the state of where it stopped,
    /// at the end of the chunk and at whatever else (`/`, a reference, a non-ASCII byte, a
    /// syntax error), which `on_char` then handles as before; returns the bytes consumed.
    /// Each step is exactly what `on_char` would do, limits reported at the same byte.
    fn tag(&mut self, chunk: &[u8], start: usize, mut space: bool) -> R<usize> {
        let ws = |c: u8| is_ws(u32::from(c));
        let mut i = start;
        loop {
            let blanks = run_len(chunk.get(i..).unwrap_or_default(), ws);
            i += blanks;
            space |= blanks > 0;
            self.state = State::Tag { space };
            let Some(&b) = chunk.get(i) else {
                return Ok(i - start);
            };
            if b == b'>' {
                self.state = State::Content;
                return Ok(i + 1 - start);
            }
            if !space || b >= 0x80 || !is_name_start(u32::from(b)) {
                return Ok(i - start);
            }
            // The attribute's name: its ASCII name characters.
            let name_at = i;
            let mut hash = FNV_OFFSET;
            while let Some(&c) = chunk.get(i) {
                if c >= 0x80 || !is_name_char(u32::from(c)) {
                    break;
                }
                hash = fnv(hash, u32::from(c));
                i += 1;
            }
            let name = chunk.get(name_at..i).unwrap_or_default();
            let at = self.base + name_at as u64;
            self.run_limit(0, name.len(), self.limits.max_name, "maxNameLength", at)?;
            self.name_hash = hash;
            self.name_len = name.len() as u64;
            self.xmlns = xmlns_matched(name);
            self.state = State::Name(NameOf::Attribute);
            match chunk.get(i) {
                // The name ends at a plain byte; a non-ASCII one may go on with the name, a
                // control character is refused before it ends anything: `step` reads those.
                Some(&c) if plain(c) => {}
                _ => return Ok(i - start),
            }
            self.char_at = self.base + i as u64;
            self.attribute_named()?;
            self.state = State::Eq;
            i += run_len(chunk.get(i..).unwrap_or_default(), ws);
            if chunk.get(i) != Some(&b'=') {
                return Ok(i - start);
            }
            i += 1;
            self.state = State::Quote;
            i += run_len(chunk.get(i..).unwrap_or_default(), ws);
            let quote = match chunk.get(i) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => return Ok(i - start),
            };
            i += 1;
            self.value_len = 0;
            self.attr_quote = quote;
            self.state = State::AttrValue;
            let value = chunk.get(i..).unwrap_or_default();
            let n = run_len(value, |c| in_value(c, quote));
            let max = self.limits.max_attribute_length;
            self.run_limit(0, n, max, "maxAttributeLength", self.base + i as u64)?;
            self.value_len = n as u64;
            i += n;
            if chunk.get(i) != Some(&quote) {
                return Ok(i - start);
            }
            i += 1;
            space = false;
        }
    }

    /// The ASCII name characters of `chunk[start..]` added to the name being read (`name_hash`,
    /// `name_len`), `maxNameLength` reported at the exact character; returns how many.
    #[inline(always)]
    fn name_run(&mut self, chunk: &[u8], start: usize) -> R<usize> {
        let mut hash = self.name_hash;
        let mut i = start;
        while let Some(&c) = chunk.get(i) {
            if c >= 0x80 || !is_name_char(u32::from(c)) {
                break;
            }
            hash = fnv(hash, u32::from(c));
            i += 1;
        }
        let n = i - start;
        let (before, at) = (self.name_len, self.base + start as u64);
        self.run_limit(before, n, self.limits.max_name, "maxNameLength", at)?;
        self.name_hash = hash;
        self.name_len += n as u64;
        Ok(n)
    }

    /// A start tag from `chunk[start..]`, in state `Lt`, at the ASCII name-start character
    /// that begins its name: the name in one go, then its attributes through [`Self::tag`].
    /// Stops, in the state reached, where the chunk ends or the name meets a byte that is not
    /// plain ASCII; returns the bytes consumed (at least one).
    fn element(&mut self, chunk: &[u8], start: usize) -> R<usize> {
        self.char_at = self.base + start as u64;
        self.start_element()?;
        let mut i = start + self.name_run(chunk, start)?;
        match chunk.get(i) {
            Some(&c) if plain(c) => {
                self.char_at = self.base + i as u64;
                self.name_ended(NameOf::Element, u32::from(c))?;
                i += self.tag(chunk, i, false)?;
            }
            _ => {}
        }
        Ok(i - start)
    }

    /// An end tag from `chunk[start..]`, in state `Lt`, at its `/`: the name in one go,
    /// compared with the innermost open element, then whitespace and `>`. Stops, in the state
    /// reached, where the chunk ends or at anything else (a name that does not start with an
    /// ASCII name-start character, a byte that is not plain ASCII, a syntax error), which
    /// `on_char` then handles; returns the bytes consumed (at least one).
    fn end_tag(&mut self, chunk: &[u8], start: usize) -> R<usize> {
        self.char_at = self.base + start as u64;
        if self.stack.is_empty() {
            return Err(self.bad("end tag without a start tag"));
        }
        self.end_text()?;
        self.name(NameOf::EndTag);
        let mut i = start + 1;
        match chunk.get(i) {
            Some(&c) if c < 0x80 && is_name_start(u32::from(c)) => {}
            _ => return Ok(i - start),
        }
        i += self.name_run(chunk, i)?;
        match chunk.get(i) {
            Some(&c) if plain(c) => self.char_at = self.base + i as u64,
            _ => return Ok(i - start),
        }
        if self.stack.pop().map(|o| o.name) != Some(self.name_hash) {
            return Err(self.bad("end tag does not match the open element"));
        }
        self.state = State::EndTag;
        i += run_len(chunk.get(i..).unwrap_or_default(), |c| is_ws(u32::from(c)));
        if chunk.get(i) == Some(&b'>') {
            self.after_element();
            i += 1;
        }
        Ok(i - start)
    }

    /// Consumes plain ASCII bytes from `chunk[start..]`, the first of which is plain, and
    /// returns how many (at least one). What the general loop in `step` does for such bytes,
    /// without its UTF-8 and character-class work: runs (character data, CDATA, comment text,
    /// attribute values, the rest of a name) in bulk, start and end tags through
    /// [`Self::element`] and [`Self::end_tag`], `<!--` and `<![CDATA[` whole, the common
    /// one-byte steps of tags and text (`<`, whitespace, `=`, quotes, `>`) here, every other
    /// byte to [`Self::on_char`].
    /// Each step here is exactly what `on_char` would do with that byte; states reached here
    /// all follow a `<`, so `started` is already set.
    fn ascii(&mut self, chunk: &[u8], start: usize) -> R<usize> {
        let mut i = start;
        while let Some(&b) = chunk.get(i) {
            if !plain(b) {
                break;
            }
            let rest = chunk.get(i..).unwrap_or_default();
            let at = self.base + i as u64;
            match self.state {
                State::Content => {
                    let n = run_until::<runs::Text>(rest);
                    if n > 0 {
                        let before = self.text_len;
                        self.run_limit(before, n, self.limits.max_text, "maxTextLength", at)?;
                        self.text_len += n as u64;
                        self.text_brackets = 0;
                        if !self.text_nonblank && !blank(&rest[..n]) {
                            self.text_nonblank = true;
                        }
                        i += n;
                        continue;
                    }
                    if b == b'<' {
                        self.state = State::Lt;
                        i += 1;
                        continue;
                    }
                }
                State::CData { brackets: 0 } => {
                    let n = run_until::<runs::CData>(rest);
                    if n > 0 {
                        let before = self.text_len;
                        self.run_limit(before, n, self.limits.max_text, "maxTextLength", at)?;
                        self.text_len += n as u64;
                        if !self.text_nonblank && !blank(&rest[..n]) {
                            self.text_nonblank = true;
                        }
                        i += n;
                        continue;
                    }
                }
                State::Comment { dashes: 0, .. } => {
                    let n = run_until::<runs::Comment>(rest);
                    if n > 0 {
                        let before = self.comment_len;
                        let max = self.limits.max_comment;
                        self.run_limit(before, n, max, "maxCommentLength", at)?;
                        self.comment_len += n as u64;
                        i += n;
                        continue;
                    }
                }
                State::AttrValue => {
                    let quote = self.attr_quote;
                    let n = run_len(rest, |c| in_value(c, quote));
                    if n > 0 {
                        let before = self.value_len;
                        let max = self.limits.max_attribute_length;
                        self.run_limit(before, n, max, "maxAttributeLength", at)?;
                        self.value_len += n as u64;
                        i += n;
                        continue;
                    }
                    if b == quote {
                        self.state = State::Tag { space: false };
                        i += 1;
                        continue;
                    }
                }
                State::Name(
                    of @ (NameOf::Element | NameOf::EndTag | NameOf::Attribute | NameOf::Ref(_)),
                ) if self.name_len > 0
                    && (of != NameOf::Attribute || self.xmlns == 0xff || self.xmlns == 6) =>
                {
                    let mut hash = self.name_hash;
                    let mut n = 0;
                    for &c in rest {
                        if c >= 0x80 || !is_name_char(u32::from(c)) {
                            break;
                        }
                        hash = fnv(hash, u32::from(c));
                        n += 1;
                    }
                    if n > 0 {
                        let before = self.name_len;
                        self.run_limit(before, n, self.limits.max_name, "maxNameLength", at)?;
                        self.name_hash = hash;
                        self.name_len += n as u64;
                        i += n;
                        continue;
                    }
                    // `b` ends the name (what `name_char` finds for a non-name character);
                    // unless it closed the name, the next turn reads it in the new state.
                    self.char_at = at;
                    if !self.name_ended(of, u32::from(b))? {
                        i += 1;
                    }
                    continue;
                }
                State::Lt if b == b'/' => {
                    i += self.end_tag(chunk, i)?;
                    continue;
                }
                // `<!--` and `<![CDATA[` whole (otherwise `on_char` reads them, and
                // refuses a CDATA section outside the root element).
                State::Lt if rest.starts_with(b"!--") => {
                    self.char_at = at + 2;
                    self.keyword_done(After::Comment)?;
                    i += 3;
                    continue;
                }
                State::Lt if rest.starts_with(b"![CDATA[") && !self.stack.is_empty() => {
                    self.state = State::CData { brackets: 0 };
                    i += 8;
                    continue;
                }
                State::Lt if is_name_start(u32::from(b)) => {
                    i += self.element(chunk, i)?;
                    continue;
                }
                State::Tag { space } => {
                    let n = self.tag(chunk, i, space)?;
                    if n > 0 {
                        i += n;
                        continue;
                    }
                }
                State::Eq | State::Quote | State::EndTag if is_ws(u32::from(b)) => {
                    i += 1;
                    continue;
                }
                State::Eq if b == b'=' => {
                    self.state = State::Quote;
                    i += 1;
                    continue;
                }
                State::Quote if matches!(b, b'"' | b'\'') => {
                    self.value_len = 0;
                    self.attr_quote = b;
                    self.state = State::AttrValue;
                    i += 1;
                    continue;
                }
                State::EndTag if b == b'>' => {
                    self.after_element();
                    i += 1;
                    continue;
                }
                _ => {}
            }
            self.char_at = at;
            self.on_char(u32::from(b))?;
            self.started = true;
            i += 1;
        }
        Ok(i - start)
    }

    fn step(&mut self, chunk: &[u8]) -> R {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if self.utf8_left == 0 && plain(b) {
                i += self.ascii(chunk, i)?;
                continue;
            }
            let at = self.base + i as u64;
            i += 1;
            if self.utf8_left > 0 {
                if b < self.utf8_lo || b > self.utf8_hi {
                    return Err(Box::new(Violation::malformed(at, "invalid UTF-8")));
                }
                self.code_point = (self.code_point << 6) | u32::from(b & 0x3f);
                self.utf8_left -= 1;
                (self.utf8_lo, self.utf8_hi) = (0x80, 0xbf);
                if self.utf8_left > 0 {
                    continue;
                }
            } else {
                self.char_at = at;
                let (n, lo, hi) = match b {
                    0x00..=0x7f => (0, 0, 0),
                    0xc2..=0xdf => (1, 0x80, 0xbf),
                    0xe0 => (2, 0xa0, 0xbf),
                    0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
                    0xed => (2, 0x80, 0x9f),
                    0xf0 => (3, 0x90, 0xbf),
                    0xf1..=0xf3 => (3, 0x80, 0xbf),
                    0xf4 => (3, 0x80, 0x8f),
                    // Never UTF-8; at the start, the byte-order mark of UTF-16 or UTF-32.
                    0xfe | 0xff if at == 0 => return Err(self.refuse(UTF16_OR_32)),
                    _ => return Err(Box::new(Violation::malformed(at, "invalid UTF-8"))),
                };
                if n > 0 {
                    if self.ascii_only {
                        return Err(self.refuse("non-ASCII byte in a document declared US-ASCII"));
                    }
                    self.utf8_left = n;
                    (self.utf8_lo, self.utf8_hi) = (lo, hi);
                    self.code_point = u32::from(b & (0x7f >> (n + 1)));
                    continue;
                }
                self.code_point = u32::from(b);
            }
            let c = self.code_point;
            if !is_xml_char(c) {
                if c == 0 && self.char_at < 2 {
                    // `00 3C`, `3C 00`, `00 00 FE FF`, ...: UTF-16 or UTF-32 (XML 1.0 App. F).
                    return Err(self.refuse(UTF16_OR_32));
                }
                return Err(self.bad(format!("invalid XML character U+{c:04X}")));
            }
            if c == 0xfeff && matches!(self.state, State::Start) {
                // A byte-order mark before the document.
                self.state = State::Misc;
                continue;
            }
            self.on_char(c)?;
            self.started = true;
        }
        Ok(())
    }
}

impl BodyScanner for XmlScanner {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Violation> {
        self.failed.check()?;
        let result = self.step(chunk).map_err(|v| *v);
        self.base += chunk.len() as u64;
        self.failed.record(result)
    }

    fn finish(&mut self) -> Result<(), Violation> {
        self.failed.check()?;
        let at = self.base;
        if matches!(self.state, State::Done) && self.utf8_left == 0 {
            Ok(())
        } else if !self.seen_root {
            Err(Violation::malformed(at, "no root element"))
        } else {
            Err(Violation::malformed(at, "unexpected end of document"))
        }
    }
}

/// Scans a whole document (tests, benchmarks).
pub fn scan(limits: Limits, doc: &[u8]) -> Result<(), Violation> {
    let mut s = XmlScanner::new(limits);
    s.feed(doc)?;
    s.finish()
}

#[cfg(test)]
#[path = "scanner_tests.rs"]
mod tests;
