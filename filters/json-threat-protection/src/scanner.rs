//! A streaming, resumable JSON validator with structural limits.
//!
//! Written by hand because no parser crate does what a threat check needs: `serde_json` and
//! friends want the whole document (or a blocking reader) and recurse on nesting, while this
//! scanner is fed chunks as Envoy delivers them, examines each byte at most twice (whole
//! tokens at a time in [`tokens`], which hands a token it cannot take whole to the resumable
//! per-byte machine below, that reads it again from its first byte), keeps no recursion and
//! O(depth / 8) bytes of nesting state (a bit per level, plus a count per level only when a
//! count limit is set), and stops at the first byte that breaks a limit.
//!
//! It accepts exactly RFC 8259 JSON text (any value at top level, surrounded by whitespace),
//! in UTF-8: control characters in strings, invalid escapes, invalid UTF-8, leading zeros,
//! `NaN`, trailing commas, comments and trailing garbage are all rejected. Escaped lone
//! surrogates (`"\ud800"`) are accepted, as most parsers do (RFC 8259 §8.2 leaves them
//! undefined).
//!
//! Counting semantics (Flex/Apigee/Kong): depth counts nested containers (`{"a":[1]}` is 2);
//! string and entry-name lengths count Unicode characters after unescaping (a surrogate pair
//! escape is one); entry counts are per object, element counts per array.

mod runs;
mod tokens;

use palisade_kit::body::{BodyScanner, Latch, Violation};
use runs::{run_until, Digits, PlainString, Whitespace};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};

/// The limits, `None` meaning unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `maxContainerDepth`.
    pub max_depth: Option<u64>,
    /// `maxStringValueLength`.
    pub max_string: Option<u64>,
    /// `maxObjectEntryNameLength`.
    pub max_name: Option<u64>,
    /// `maxObjectEntryCount`.
    pub max_entries: Option<u64>,
    /// `maxArrayElementCount`.
    pub max_elements: Option<u64>,
    /// `allowDuplicateKeys`: false rejects an object with the same entry name twice.
    pub reject_duplicate_keys: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value.
    Start,
    /// A value must follow (after `:` or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// Inside a string (`key`: an entry name).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// In `\uXXXX`, `left` hex digits to go.
    Unicode { key: bool, left: u8 },
    /// Inside a number.
    Num(Num),
    /// Inside `true`, `false` or `null`: the literal and the next byte's index.
    Literal(&'static [u8], u8),
    /// The top-level value is complete: only whitespace may follow.
    End,
}

impl State {
    /// Between two tokens, where whitespace may come and the token path ([`tokens`]) works.
    #[inline(always)]
    fn between_tokens(self) -> bool {
        matches!(
            self,
            State::Start
                | State::Value
                | State::ArrayFirst
                | State::ObjectFirst
                | State::Key
                | State::Colon
                | State::AfterValue
                | State::End
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// After `-`: a digit must follow.
    Minus,
    /// A leading `0`: no more integer digits.
    Zero,
    /// Integer digits.
    Int,
    /// After `.`: a digit must follow.
    Dot,
    /// Fraction digits.
    Frac,
    /// After `e`: a sign or digit.
    Exp,
    /// After the exponent sign: a digit.
    ExpSign,
    /// Exponent digits.
    ExpDigits,
}

impl Num {
    #[inline(always)]
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

/// Kind of each open container, one bit per level (1 = object).
#[derive(Debug, Default)]
struct BitStack {
    words: Vec<u64>,
    len: u64,
    /// The innermost level's kind, kept beside the bits: every `,` and array element asks
    /// for it, and a field read is cheaper than indexing the words each time.
    innermost: Option<bool>,
}

impl BitStack {
    fn push(&mut self, object: bool) {
        let (word, bit) = ((self.len / 64) as usize, self.len % 64);
        if word == self.words.len() {
            self.words.push(0);
        }
        if let Some(w) = self.words.get_mut(word) {
            if object {
                *w |= 1 << bit;
            } else {
                *w &= !(1 << bit);
            }
        }
        self.len += 1;
        self.innermost = Some(object);
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
        self.innermost = self.read_top();
    }

    /// Whether the innermost open container is an object (`None` at top level).
    #[inline(always)]
    fn top(&self) -> Option<bool> {
        self.innermost
    }

    fn read_top(&self) -> Option<bool> {
        let i = self.len.checked_sub(1)?;
        let w = self.words.get((i / 64) as usize)?;
        Some(w & (1 << (i % 64)) != 0)
    }
}

/// The scanner for one document.
#[derive(Debug)]
pub struct JsonScanner {
    limits: Limits,
    state: State,
    /// Absolute offset of the first byte of the current chunk.
    base: u64,
    stack: BitStack,
    /// Entries or elements of the innermost container so far (counted only with a limit).
    count: u64,
    /// Counts of the enclosing containers.
    saved_counts: Vec<u64>,
    /// Characters of the current string.
    chars: u64,
    /// UTF-8 continuation bytes still expected, the accepted range of the next one, and the
    /// code point decoded so far.
    utf8_left: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    code_point: u32,
    /// A `\uD8xx` high-surrogate escape waiting for its low half.
    high_surrogate: Option<u32>,
    /// Entry names seen in each open object (hashes; only with duplicate-key rejection).
    keys: Vec<HashSet<u64>>,
    key_hash: DefaultHasher,
    /// Set after the first violation: the scanner refuses to go on.
    failed: Latch,
}

/// Internal results carry the violation boxed: one pointer instead of a whole violation
/// moved through every helper's return value.
type R = Result<(), Box<Violation>>;

fn malformed(at: u64, message: impl Into<String>) -> Box<Violation> {
    Box::new(Violation::malformed(at, message))
}

fn limit(at: u64, message: impl Into<String>) -> Box<Violation> {
    Box::new(Violation::limit(at, message))
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("unexpected character '{}'", b as char)
    } else {
        format!("unexpected byte 0x{b:02x}")
    }
}

#[inline(always)]
/// The byte a one-character escape (`\n`, `\"`, ...) stands for; `None` for `u` (four hex
/// digits follow) and for anything that is not an escape. Shared by both scanning paths.
fn short_escape(b: u8) -> Option<u8> {
    Some(match b {
        b'"' | b'\\' | b'/' => b,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonScanner {
    /// A scanner enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        JsonScanner {
            limits,
            state: State::Start,
            base: 0,
            stack: BitStack::default(),
            count: 0,
            saved_counts: Vec::new(),
            chars: 0,
            utf8_left: 0,
            utf8_lo: 0,
            utf8_hi: 0,
            code_point: 0,
            high_surrogate: None,
            keys: Vec::new(),
            key_hash: DefaultHasher::new(),
            failed: Latch::default(),
        }
    }

    #[inline(always)]
    fn counting(&self) -> bool {
        self.limits.max_entries.is_some() || self.limits.max_elements.is_some()
    }

    /// The state after a value completes.
    #[inline(always)]
    fn after_value(&self) -> State {
        if self.stack.len == 0 {
            State::End
        } else {
            State::AfterValue
        }
    }

    /// A value starts at `at`: inside an array, a new element.
    #[inline(always)]
    fn count_element(&mut self, at: u64) -> R {
        if self.stack.top() == Some(false) {
            if let Some(max) = self.limits.max_elements {
                self.count += 1;
                if self.count > max {
                    return Err(limit(at, format!("maxArrayElementCount ({max}) exceeded")));
                }
            }
        }
        Ok(())
    }

    /// A value starts at `at` with `b`.
    #[inline(always)]
    fn begin_value(&mut self, b: u8, at: u64) -> R {
        self.count_element(at)?;
        self.state = match b {
            b'{' | b'[' => {
                let depth = self.stack.len + 1;
                if let Some(max) = self.limits.max_depth {
                    if depth > max {
                        return Err(limit(at, format!("maxContainerDepth ({max}) exceeded")));
                    }
                }
                let object = b == b'{';
                self.stack.push(object);
                if self.counting() {
                    self.saved_counts.push(self.count);
                    self.count = 0;
                }
                if object {
                    if self.limits.reject_duplicate_keys {
                        self.keys.push(HashSet::new());
                    }
                    State::ObjectFirst
                } else {
                    State::ArrayFirst
                }
            }
            b'"' => {
                self.chars = 0;
                State::Str { key: false }
            }
            b'-' => State::Num(Num::Minus),
            b'0' => State::Num(Num::Zero),
            b'1'..=b'9' => State::Num(Num::Int),
            b't' => State::Literal(b"true", 1),
            b'f' => State::Literal(b"false", 1),
            b'n' => State::Literal(b"null", 1),
            _ => return Err(malformed(at, describe(b))),
        };
        Ok(())
    }

    /// An entry name starts at `at`.
    #[inline(always)]
    fn begin_key(&mut self, at: u64) -> R {
        if let Some(max) = self.limits.max_entries {
            self.count += 1;
            if self.count > max {
                return Err(limit(at, format!("maxObjectEntryCount ({max}) exceeded")));
            }
        }
        self.chars = 0;
        if self.limits.reject_duplicate_keys {
            self.key_hash = DefaultHasher::new();
        }
        self.state = State::Str { key: true };
        Ok(())
    }

    /// The closing bracket `b` at `at`.
    #[inline(always)]
    fn close(&mut self, b: u8, at: u64) -> R {
        let object = self.stack.top();
        if object != Some(b == b'}') {
            return Err(malformed(at, describe(b)));
        }
        self.stack.pop();
        if object == Some(true) && self.limits.reject_duplicate_keys {
            self.keys.pop();
        }
        if self.counting() {
            self.count = self.saved_counts.pop().unwrap_or(0);
        }
        self.state = self.after_value();
        Ok(())
    }

    /// `n` more characters of the current string, the last ending at `at`.
    #[inline(always)]
    fn add_chars(&mut self, key: bool, n: u64, at: u64) -> R {
        self.chars += n;
        let (max, name) = if key {
            (self.limits.max_name, "maxObjectEntryNameLength")
        } else {
            (self.limits.max_string, "maxStringValueLength")
        };
        match max {
            Some(max) if self.chars > max => Err(limit(at, format!("{name} ({max}) exceeded"))),
            _ => Ok(()),
        }
    }

    /// One character decoded (for duplicate-key hashing and length).
    #[inline(always)]
    fn char_done(&mut self, key: bool, cp: u32, at: u64) -> R {
        if key && self.limits.reject_duplicate_keys {
            self.key_hash.write_u32(cp);
        }
        self.add_chars(key, 1, at)
    }

    /// A pending high surrogate not followed by its low half stands alone.
    #[inline(always)]
    fn flush_surrogate(&mut self, key: bool, at: u64) -> R {
        match self.high_surrogate.take() {
            Some(high) => self.char_done(key, high, at),
            None => Ok(()),
        }
    }

    /// The closing quote of a string at `at`.
    #[inline(always)]
    fn end_string(&mut self, key: bool, at: u64) -> R {
        self.flush_surrogate(key, at)?;
        if key {
            if self.limits.reject_duplicate_keys {
                let hash = self.key_hash.finish();
                if let Some(seen) = self.keys.last_mut() {
                    if !seen.insert(hash) {
                        return Err(limit(
                            at,
                            "duplicate object entry name (allowDuplicateKeys is false)",
                        ));
                    }
                }
            }
            self.state = State::Colon;
        } else {
            self.state = self.after_value();
        }
        Ok(())
    }

    fn step(&mut self, chunk: &[u8]) -> R {
        let mut i = 0;
        while i < chunk.len() {
            if self.state.between_tokens() {
                i = self.tokens(chunk, i)?;
                if i == chunk.len() {
                    break;
                }
            }
            let b = chunk[i];
            let at = self.base + i as u64;
            match self.state {
                State::Str { key } => {
                    if self.utf8_left > 0 {
                        if b < self.utf8_lo || b > self.utf8_hi {
                            return Err(malformed(at, "invalid UTF-8 in string"));
                        }
                        self.code_point = (self.code_point << 6) | u32::from(b & 0x3f);
                        self.utf8_left -= 1;
                        (self.utf8_lo, self.utf8_hi) = (0x80, 0xbf);
                        if self.utf8_left == 0 {
                            self.char_done(key, self.code_point, at)?;
                        }
                        i += 1;
                        continue;
                    }
                    // Fast path: a run of plain ASCII.
                    let run = run_until::<PlainString>(&chunk[i..]);
                    if run > 0 {
                        self.flush_surrogate(key, at)?;
                        if key && self.limits.reject_duplicate_keys {
                            for &c in &chunk[i..i + run] {
                                self.key_hash.write_u32(u32::from(c));
                            }
                        }
                        let last = at + run as u64 - 1;
                        // Report the exact byte where the limit is crossed.
                        if let Err(mut v) = self.add_chars(key, run as u64, last) {
                            let over = self.chars - run as u64;
                            let max = if key {
                                self.limits.max_name
                            } else {
                                self.limits.max_string
                            };
                            v.offset = at + max.unwrap_or(0).saturating_sub(over);
                            return Err(v);
                        }
                        i += run;
                        continue;
                    }
                    match b {
                        b'"' => self.end_string(key, at)?,
                        b'\\' => self.state = State::Escape { key },
                        0xc2..=0xdf => self.utf8_start(b, 1, 0x80, 0xbf, at, key)?,
                        0xe0 => self.utf8_start(b, 2, 0xa0, 0xbf, at, key)?,
                        0xe1..=0xec | 0xee..=0xef => self.utf8_start(b, 2, 0x80, 0xbf, at, key)?,
                        0xed => self.utf8_start(b, 2, 0x80, 0x9f, at, key)?,
                        0xf0 => self.utf8_start(b, 3, 0x90, 0xbf, at, key)?,
                        0xf1..=0xf3 => self.utf8_start(b, 3, 0x80, 0xbf, at, key)?,
                        0xf4 => self.utf8_start(b, 3, 0x80, 0x8f, at, key)?,
                        0x80.. => return Err(malformed(at, "invalid UTF-8 in string")),
                        _ => return Err(malformed(at, "unescaped control character in string")),
                    }
                }
                State::Escape { key } => {
                    let decoded = match b {
                        b'u' => {
                            self.code_point = 0;
                            self.state = State::Unicode { key, left: 4 };
                            i += 1;
                            continue;
                        }
                        _ => match short_escape(b) {
                            Some(decoded) => decoded,
                            None => return Err(malformed(at, "invalid escape in string")),
                        },
                    };
                    self.flush_surrogate(key, at)?;
                    self.char_done(key, u32::from(decoded), at)?;
                    self.state = State::Str { key };
                }
                State::Unicode { key, left } => {
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        _ => return Err(malformed(at, "invalid \\u escape in string")),
                    };
                    self.code_point = (self.code_point << 4) | u32::from(digit);
                    if left > 1 {
                        self.state = State::Unicode {
                            key,
                            left: left - 1,
                        };
                    } else {
                        let cp = self.code_point;
                        match (self.high_surrogate, cp) {
                            (Some(high), 0xdc00..=0xdfff) => {
                                self.high_surrogate = None;
                                let c = 0x10000 + ((high - 0xd800) << 10) + (cp - 0xdc00);
                                self.char_done(key, c, at)?;
                            }
                            (_, 0xd800..=0xdbff) => {
                                self.flush_surrogate(key, at)?;
                                self.high_surrogate = Some(cp);
                            }
                            _ => {
                                self.flush_surrogate(key, at)?;
                                self.char_done(key, cp, at)?;
                            }
                        }
                        self.state = State::Str { key };
                    }
                }
                State::Num(Num::Int | Num::Frac | Num::ExpDigits) if b.is_ascii_digit() => {
                    // Fast path: a run of digits.
                    let run = run_until::<Digits>(&chunk[i..]);
                    i += run;
                    continue;
                }
                State::Num(n) => {
                    let next = match (n, b) {
                        (Num::Minus, b'0') => Some(Num::Zero),
                        (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                        (Num::Int, b'0'..=b'9') => Some(Num::Int),
                        (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
                        (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                        (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
                        (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => {
                            Some(Num::ExpDigits)
                        }
                        _ => None,
                    };
                    match next {
                        Some(n) => self.state = State::Num(n),
                        None if n.complete() => {
                            // The byte ends the number: look at it again as what follows.
                            self.state = self.after_value();
                            continue;
                        }
                        None => return Err(malformed(at, describe(b))),
                    }
                }
                State::Literal(word, next) => {
                    if word.get(usize::from(next)) != Some(&b) {
                        return Err(malformed(at, describe(b)));
                    }
                    self.state = if usize::from(next) + 1 == word.len() {
                        self.after_value()
                    } else {
                        State::Literal(word, next + 1)
                    };
                }
                _ if is_ws(b) => {
                    // Fast path: a run of whitespace between tokens.
                    let run = run_until::<Whitespace>(&chunk[i..]);
                    i += run;
                    continue;
                }
                State::Start | State::Value => self.begin_value(b, at)?,
                State::ArrayFirst => {
                    if b == b']' {
                        self.close(b, at)?;
                    } else {
                        self.begin_value(b, at)?;
                    }
                }
                State::ObjectFirst | State::Key => match b {
                    b'"' => self.begin_key(at)?,
                    b'}' if self.state == State::ObjectFirst => self.close(b, at)?,
                    _ => return Err(malformed(at, describe(b))),
                },
                State::Colon => {
                    if b != b':' {
                        return Err(malformed(at, describe(b)));
                    }
                    self.state = State::Value;
                }
                State::AfterValue => match b {
                    b',' => self.state = self.after_comma(),
                    b']' | b'}' => self.close(b, at)?,
                    _ => return Err(malformed(at, describe(b))),
                },
                State::End => {
                    return Err(malformed(at, format!("{} after the document", describe(b))))
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn utf8_start(&mut self, b: u8, continuation: u8, lo: u8, hi: u8, at: u64, key: bool) -> R {
        self.flush_surrogate(key, at)?;
        self.utf8_left = continuation;
        (self.utf8_lo, self.utf8_hi) = (lo, hi);
        self.code_point = u32::from(b & (0x7f >> (continuation + 1)));
        Ok(())
    }
}

impl BodyScanner for JsonScanner {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Violation> {
        self.failed.check()?;
        let result = self.step(chunk).map_err(|v| *v);
        self.base += chunk.len() as u64;
        self.failed.record(result)
    }

    fn finish(&mut self) -> Result<(), Violation> {
        self.failed.check()?;
        match self.state {
            State::End => Ok(()),
            State::Num(n) if n.complete() && self.stack.len == 0 => Ok(()),
            State::Start => Err(Violation::malformed(self.base, "empty document")),
            _ => Err(Violation::malformed(
                self.base,
                "unexpected end of document",
            )),
        }
    }
}

/// Scans a whole document (tests, benchmarks).
pub fn scan(limits: Limits, doc: &[u8]) -> Result<(), Violation> {
    let mut s = JsonScanner::new(limits);
    s.feed(doc)?;
    s.finish()
}

#[cfg(test)]
#[path = "scanner_tests.rs"]
mod tests;
