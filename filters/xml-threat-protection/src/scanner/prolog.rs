//! Which encoding the document is in: the scanner reads UTF-8 only, so it refuses every
//! document an upstream parser could decode otherwise, since what the scanner judges must be
//! what the upstream parses (a UTF-7 document is valid ASCII to the scanner, but its `+ADw-`
//! is a `<` to a parser that honours the declaration). An encoding is named in three places:
//!
//! - a byte-order mark: UTF-8's is skipped, UTF-16's and UTF-32's are refused (in
//!   `XmlScanner::step`, where those bytes are invalid UTF-8 or NUL anyway);
//! - the XML declaration's `encoding` pseudo-attribute, read here: the declaration is checked
//!   against its exact grammar (XML 1.0 §2.8, §4.3.3), so no variant of quoting, spacing, case
//!   or order can slip an encoding past it;
//! - the request's `content-type` `charset` parameter, which some upstreams honour over the
//!   declaration ([`header_charset`]).
//!
//! (A text declaration can only start an external entity, and those are refused: `dtd.rs`.)
//! UTF-8 and US-ASCII are accepted, their names compared case-insensitively, with the alias
//! each is commonly written as (`utf8`, `ascii`); every other name, even another alias, is
//! refused. A document declared US-ASCII must be ASCII: decoders differ on other bytes (some
//! replace them with `?`, which could close a processing instruction the scanner sees open).

use super::{describe, is_ws, State, XmlScanner, R};

/// An encoding the scanner reads exactly as the upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (`utf-8`, `utf8`).
    Utf8,
    /// US-ASCII (`us-ascii`, `ascii`): bytes over 0x7F are refused.
    Ascii,
}

impl Charset {
    /// The encoding an encoding name (declaration or `charset`) stands for, if accepted.
    pub fn named(name: &str) -> Option<Charset> {
        let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if is(&["utf-8", "utf8"]) {
            Some(Charset::Utf8)
        } else if is(&["us-ascii", "ascii"]) {
            Some(Charset::Ascii)
        } else {
            None
        }
    }
}

/// What a `content-type` header says of the encoding: `Ok(None)` when it names none,
/// `Err(reason)` when it names one the scanner does not read.
///
/// Split by hand rather than with the `mime` crate: a strict parser stops at the first
/// malformed parameter or keeps one value per name, while here every parameter any upstream
/// could take for a charset must be seen. Splitting at every `;` (quoted strings included)
/// sees a superset of the real parameters, and each must name an accepted encoding, so the
/// approximation only ever refuses more. Envoy joins a repeated `content-type` with `,`, which
/// makes the charset value unrecognisable, and so refused.
pub fn header_charset(content_type: Option<&str>) -> Result<Option<Charset>, String> {
    let mut found = None;
    for parameter in content_type.unwrap_or_default().split(';').skip(1) {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        // `charset*` (RFC 2231 extended notation) counts too.
        let name = name.trim().as_bytes();
        if !name
            .get(..7)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"charset"))
        {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        match Charset::named(value) {
            Some(charset) if found != Some(Charset::Ascii) => found = Some(charset),
            Some(_) => {}
            None => {
                return Err(
                    "content-type charset other than UTF-8 or US-ASCII (only those are read)"
                        .into(),
                )
            }
        }
    }
    Ok(found)
}

/// Where the scanner is inside the XML declaration (`<?xml` matched at the very start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeclState {
    /// After the target or a value: whitespace, then a pseudo-attribute or `?>` (`space`:
    /// whitespace followed).
    Between { space: bool },
    /// Reading a pseudo-attribute's name.
    Name,
    /// After the name: whitespace, `=` (`eq`: read), whitespace, the opening quote.
    Eq { eq: bool },
    /// Inside a value.
    Value,
    /// After `?`: `>`.
    Close,
}

/// The pseudo-attributes, in the only order allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
enum Pseudo {
    #[default]
    None,
    Version,
    Encoding,
    Standalone,
}

/// The longest name or value kept: `standalone`, and encoding names (the longest IANA name
/// is 45 characters; anything that long is refused anyway).
const MAX_TOKEN: usize = 48;

/// The XML declaration being read.
#[derive(Debug)]
pub(super) struct Decl {
    /// The last pseudo-attribute read (or being read).
    last: Pseudo,
    quote: u8,
    token: [u8; MAX_TOKEN],
    token_len: usize,
}

impl Default for Decl {
    fn default() -> Self {
        Decl {
            last: Pseudo::None,
            quote: 0,
            token: [0; MAX_TOKEN],
            token_len: 0,
        }
    }
}

impl Decl {
    fn token(&self) -> &[u8] {
        self.token.get(..self.token_len).unwrap_or_default()
    }
}

/// XML 1.0 `EncName`: `[A-Za-z] ([A-Za-z0-9._] | '-')*`.
fn is_enc_name(name: &[u8]) -> bool {
    name.first().is_some_and(u8::is_ascii_alphabetic)
        && name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

impl XmlScanner {
    /// `<?xml` at the very start: the XML declaration follows.
    pub(super) fn xml_declaration(&mut self) {
        self.decl = Decl::default();
        self.state = State::XmlDecl(DeclState::Between { space: false });
    }

    fn bad_decl(&self, c: u32) -> Box<palisade_kit::body::Violation> {
        self.bad(format!("malformed XML declaration: {}", describe(c)))
    }

    /// Character `c` of the XML declaration, in `state`. Out of line, like `dtd_char`: only a
    /// document's first bytes need it.
    #[inline(never)]
    pub(super) fn decl_char(&mut self, state: DeclState, c: u32) -> R {
        match state {
            DeclState::Between { space } => match c {
                _ if is_ws(c) => self.state = State::XmlDecl(DeclState::Between { space: true }),
                0x3f if self.decl.last >= Pseudo::Version => {
                    self.state = State::XmlDecl(DeclState::Close)
                }
                0x3f => return Err(self.bad("XML declaration without a version")),
                0x61..=0x7a if space => {
                    self.decl.token_len = 0;
                    self.push_token(c)?;
                    self.state = State::XmlDecl(DeclState::Name);
                }
                _ => return Err(self.bad_decl(c)),
            },
            DeclState::Name => match c {
                0x61..=0x7a => self.push_token(c)?,
                0x3d => self.pseudo_named(true)?,
                _ if is_ws(c) => self.pseudo_named(false)?,
                _ => return Err(self.bad_decl(c)),
            },
            DeclState::Eq { eq } => match c {
                _ if is_ws(c) => {}
                0x3d if !eq => self.state = State::XmlDecl(DeclState::Eq { eq: true }),
                0x22 | 0x27 if eq => {
                    self.decl.quote = c as u8;
                    self.decl.token_len = 0;
                    self.state = State::XmlDecl(DeclState::Value);
                }
                _ => return Err(self.bad_decl(c)),
            },
            DeclState::Value => {
                if c == u32::from(self.decl.quote) {
                    self.pseudo_value()?;
                    self.state = State::XmlDecl(DeclState::Between { space: false });
                } else {
                    self.push_token(c)?;
                }
            }
            DeclState::Close => {
                if c != 0x3e {
                    return Err(self.bad_decl(c));
                }
                self.after_markup(false);
            }
        }
        Ok(())
    }

    fn push_token(&mut self, c: u32) -> R {
        let slot = self.decl.token.get_mut(self.decl.token_len);
        match (slot, u8::try_from(c)) {
            (Some(slot), Ok(b)) if b.is_ascii() => {
                *slot = b;
                self.decl.token_len += 1;
                Ok(())
            }
            _ => Err(self.bad_decl(c)),
        }
    }

    /// A pseudo-attribute's name ended (`eq`: at its `=`): it must be the next one allowed.
    fn pseudo_named(&mut self, eq: bool) -> R {
        let last = self.decl.last;
        let next = match self.decl.token() {
            b"version" if last == Pseudo::None => Pseudo::Version,
            b"encoding" if last == Pseudo::Version => Pseudo::Encoding,
            b"standalone" if last >= Pseudo::Version && last < Pseudo::Standalone => {
                Pseudo::Standalone
            }
            _ => {
                return Err(self.bad(
                    "malformed XML declaration: expected version, then optionally encoding and standalone",
                ))
            }
        };
        self.decl.last = next;
        self.state = State::XmlDecl(DeclState::Eq { eq });
        Ok(())
    }

    /// A pseudo-attribute's value ended.
    fn pseudo_value(&mut self) -> R {
        let value = self.decl.token();
        let valid = match self.decl.last {
            // `1.` followed by digits (XML 1.0 fifth edition `VersionNum`).
            Pseudo::Version => value
                .strip_prefix(b"1.")
                .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit)),
            Pseudo::Encoding => is_enc_name(value),
            Pseudo::Standalone => matches!(value, b"yes" | b"no"),
            Pseudo::None => false,
        };
        if !valid {
            return Err(self.bad("malformed XML declaration: invalid value"));
        }
        if self.decl.last == Pseudo::Encoding {
            // An `EncName` is ASCII.
            let name = String::from_utf8_lossy(value);
            match Charset::named(&name) {
                Some(Charset::Utf8) => {}
                Some(Charset::Ascii) => self.ascii_only = true,
                None => {
                    return Err(self.refuse(format!(
                        "encoding \"{name}\" declared: only UTF-8 and US-ASCII documents are read"
                    )))
                }
            }
        }
        Ok(())
    }
}
