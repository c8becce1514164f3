//! The token path: between tokens, the scanner takes whole tokens at a time (a string, a
//! number, a literal, a punctuation byte) instead of a state-machine step per byte.
//!
//! Most JSON is small tokens, so the per-byte machine spends its time dispatching on its state
//! (a hard-to-predict branch per byte) rather than on the bytes. Here a token is measured by a
//! pure function that only accepts the common, valid case lying wholly in the chunk: an ASCII
//! string (escapes decoded) within its length limit, a complete number with the byte after it
//! in the chunk, a whole literal. Anything else (a non-ASCII byte, a token cut by the chunk's
//! end, a length over its limit, any malformed byte) hands over to the per-byte machine at the
//! token's first byte with the state unchanged, so every malformed byte and every length
//! over its limit is reported by that one machine, and chunking cannot change a verdict. A
//! token the path takes makes exactly the transitions the machine would, through the same
//! helpers (counts, depth, duplicate names and closing brackets, with their violations).

use super::runs::{run_until, PlainString, Whitespace};
use super::{is_ws, short_escape, JsonScanner, State};
use palisade_kit::body::Violation;
use std::hash::{DefaultHasher, Hasher as _};

impl JsonScanner {
    /// Whole tokens from `chunk[i..]` while the state is between tokens; returns where the
    /// per-byte machine takes over (`chunk.len()` when the chunk is done).
    pub(super) fn tokens(&mut self, chunk: &[u8], mut i: usize) -> Result<usize, Box<Violation>> {
        while let Some(&b) = chunk.get(i) {
            let state = self.state;
            if !state.between_tokens() {
                break;
            }
            if is_ws(b) {
                i += run_until::<Whitespace>(chunk.get(i..).unwrap_or_default());
                continue;
            }
            let at = self.base + i as u64;
            let rest = chunk.get(i..).unwrap_or_default();
            match (state, b) {
                (State::Colon, b':') => {
                    self.state = State::Value;
                    i += 1;
                }
                (State::AfterValue, b',') => {
                    self.state = self.after_comma();
                    i += 1;
                }
                (State::AfterValue | State::ArrayFirst, b']')
                | (State::AfterValue | State::ObjectFirst, b'}') => {
                    self.close(b, at)?;
                    i += 1;
                }
                (State::ObjectFirst | State::Key, b'"') => {
                    let mut hash = self.limits.reject_duplicate_keys.then(DefaultHasher::new);
                    let Some(len) = string(rest, self.limits.max_name, hash.as_mut()) else {
                        break;
                    };
                    self.begin_key(at)?;
                    if let Some(hash) = hash {
                        self.key_hash = hash;
                    }
                    self.end_string(true, at + len as u64 - 1)?;
                    i += len;
                    // The usual next byte, taken here rather than in a turn of the loop.
                    if chunk.get(i) == Some(&b':') {
                        self.state = State::Value;
                        i += 1;
                    }
                }
                (State::Start | State::Value | State::ArrayFirst, b'{' | b'[') => {
                    self.begin_value(b, at)?;
                    i += 1;
                }
                (State::Start | State::Value | State::ArrayFirst, _) => {
                    let len = match b {
                        b'"' => string(rest, self.limits.max_string, None),
                        b'-' | b'0'..=b'9' => number(rest),
                        b't' => literal(rest, b"true"),
                        b'f' => literal(rest, b"false"),
                        b'n' => literal(rest, b"null"),
                        _ => None,
                    };
                    let Some(len) = len else {
                        break;
                    };
                    self.count_element(at)?;
                    self.state = self.after_value();
                    i += len;
                    if chunk.get(i) == Some(&b',') && self.state == State::AfterValue {
                        self.state = self.after_comma();
                        i += 1;
                    }
                }
                _ => break,
            }
        }
        Ok(i)
    }
}

/// The string opening `s` (`s[0]` is its quote) when it lies wholly in `s`, is ASCII and
/// has at most `max` characters: its length in bytes with both quotes. Escapes are decoded
/// as the per-byte machine decodes them, each character going to `hash` when given (the same
/// sequence the machine hashes, so names compare the same whichever path read them).
#[inline(always)]
fn string(s: &[u8], max: Option<u64>, mut hash: Option<&mut DefaultHasher>) -> Option<usize> {
    let mut chars = 0u64;
    // A `\uD8xx` high-surrogate escape waiting for its low half.
    let mut high: Option<u32> = None;
    let char_done = |c: u32, chars: &mut u64, hash: &mut Option<&mut DefaultHasher>| {
        *chars += 1;
        if let Some(h) = hash {
            h.write_u32(c);
        }
    };
    let mut i = 1;
    loop {
        let run = s.get(i..)?;
        let n = plain_run(run);
        if n > 0 {
            if let Some(h) = high.take() {
                char_done(h, &mut chars, &mut hash);
            }
            if let Some(h) = &mut hash {
                for &c in run.get(..n)? {
                    h.write_u32(u32::from(c));
                }
            }
            chars += n as u64;
            i += n;
        }
        let decoded = match *s.get(i)? {
            b'"' => break,
            b'\\' => match *s.get(i + 1)? {
                b'u' => {
                    let cp = hex4(s.get(i + 2..i + 6)?)?;
                    i += 6;
                    match (high, cp) {
                        (Some(h), 0xdc00..=0xdfff) => {
                            high = None;
                            let c = 0x10000 + ((h - 0xd800) << 10) + (cp - 0xdc00);
                            char_done(c, &mut chars, &mut hash);
                        }
                        (_, 0xd800..=0xdbff) => {
                            if let Some(h) = high.replace(cp) {
                                char_done(h, &mut chars, &mut hash);
                            }
                        }
                        _ => {
                            if let Some(h) = high.take() {
                                char_done(h, &mut chars, &mut hash);
                            }
                            char_done(cp, &mut chars, &mut hash);
                        }
                    }
                    continue;
                }
                escape => short_escape(escape)?,
            },
            // Non-ASCII (UTF-8 is checked by the per-byte machine) or a control character.
            _ => return None,
        };
        if let Some(h) = high.take() {
            char_done(h, &mut chars, &mut hash);
        }
        char_done(u32::from(decoded), &mut chars, &mut hash);
        i += 2;
    }
    if let Some(h) = high.take() {
        char_done(h, &mut chars, &mut hash);
    }
    match max {
        Some(max) if chars > max => None,
        _ => Some(i + 1),
    }
}

/// The value of four hex digits.
#[inline(always)]
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |cp, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(cp << 4 | u32::from(digit))
    })
}

impl JsonScanner {
    /// The state after a `,` that follows a value in a container: an entry name or an element.
    #[inline(always)]
    pub(super) fn after_comma(&self) -> State {
        if self.stack.top() == Some(true) {
            State::Key
        } else {
            State::Value
        }
    }
}

/// The length of the number that starts `s` when it is well-formed and the byte after it is
/// in `s` (the longest prefix the per-byte machine would take as a number, and complete).
#[inline(always)]
fn number(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        from + s
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    i = match s.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i + 1),
        _ => return None,
    };
    if s.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    // The byte that ends the number must be here: without it the number may go on.
    (i < s.len()).then_some(i)
}

/// The length of `word` when `s` starts with it.
#[inline(always)]
fn literal(s: &[u8], word: &[u8]) -> Option<usize> {
    s.starts_with(word).then_some(word.len())
}

/// Bytes a word holds: the first bytes of a string are examined a word at a time.
const WORD: usize = 8;
const ONES: u64 = u64::from_ne_bytes([0x01; WORD]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; WORD]);

/// [`run_until`]`::<PlainString>`, the first two words of 8 bytes in plain 64-bit integer
/// arithmetic (most keys and short values end there, and a word needs no call into the
/// `simd128` block walk), the rest in 16-byte blocks.
#[inline(always)]
fn plain_run(s: &[u8]) -> usize {
    let mut done = 0;
    for _ in 0..2 {
        let Some(word) = s
            .get(done..done + WORD)
            .and_then(|w| <[u8; WORD]>::try_from(w).ok())
        else {
            break;
        };
        let stops = plain_stops(u64::from_le_bytes(word));
        if stops != 0 {
            return done + (stops.trailing_zeros() / 8) as usize;
        }
        done += WORD;
    }
    done + run_until::<PlainString>(s.get(done..).unwrap_or_default())
}

/// The high bit of each byte of `w` that is of class [`PlainString`] (a control character,
/// `"`, `\` or non-ASCII), exact up to the first such byte: the borrows of the subtractions
/// only carry into bytes after one that is set, so the lowest set bit is always exact.
#[inline(always)]
fn plain_stops(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let is_quote = quote.wrapping_sub(ONES) & !quote;
    let is_backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | is_quote | is_backslash | w) & HIGHS
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::body::testing::Rng;
    use palisade_kit::runs::stops_at;

    fn expected(s: &[u8]) -> usize {
        s.iter()
            .position(|&c| stops_at::<PlainString>(c))
            .unwrap_or(s.len())
    }

    #[test]
    fn plain_run_ends_at_the_first_byte_of_its_class() {
        // Every stop byte value at every position of the words and the blocks after them,
        // with any bytes after it (borrows must not move the first stop).
        let mut rng = Rng(17);
        for len in 0..40 {
            for end in 0..=255u8 {
                let mut s = vec![b'k'; len];
                s.push(end);
                s.extend((0..20).map(|_| rng.below(256) as u8));
                assert_eq!(plain_run(&s), expected(&s), "{len} {end:#04x}");
                assert_eq!(plain_run(&s[..len]), len);
            }
        }
        for _ in 0..100_000 {
            let s: Vec<u8> = (0..rng.below(40))
                .map(|_| match rng.below(4) {
                    0 => rng.below(256) as u8,
                    _ => 0x20 + rng.below(0x60) as u8,
                })
                .collect();
            assert_eq!(plain_run(&s), expected(&s), "{s:?}");
        }
    }

    #[test]
    fn numbers_are_taken_whole_only_when_complete() {
        for (s, len) in [
            ("0,", Some(1)),
            ("-0]", Some(2)),
            ("01", Some(1)),
            ("12345,", Some(5)),
            ("-12.5e3}", Some(7)),
            ("1E+10 ", Some(5)),
            ("1.5.", Some(3)),
            ("1e5e", Some(3)),
            ("12345", None),
            ("-", None),
            ("-,", None),
            ("-a", None),
            ("1.,", None),
            ("1e,", None),
            ("1e+,", None),
            ("1.5e", None),
            (".5,", None),
        ] {
            assert_eq!(number(s.as_bytes()), len, "{s}");
        }
    }
}
