//! The document type declaration: refused outright unless `allowDtd` is true; otherwise the
//! states of `<!DOCTYPE ...>` and its internal subset, the general entities and attribute
//! defaults it declares, and what they would expand to. Nothing is ever expanded or fetched: an
//! entity is kept as the length of its replacement text, an `ATTLIST` as the length of its
//! default values per element name.
//!
//! Anything an upstream parser could fetch is refused where it is declared, used or not (the
//! gateway never fetches it, the upstream's parser may: SSRF, out-of-band XXE): an external DTD
//! subset (`<!DOCTYPE r SYSTEM|PUBLIC ...>`) and external entities (`<!ENTITY e SYSTEM|PUBLIC
//! ...>`, with or without `NDATA`). Parameter entities (whose expansions rewrite the DTD
//! itself), markup in entity values, and `&#38;` / `&#60;` in entity values (a `&` or `<`
//! parsed again on expansion) are refused too.
//!
//! What counts toward `maxEntityExpansion`: each reference to a declared entity in the document
//! (text or attribute value) adds its replacement length, which includes the entities its value
//! references; each start tag adds the length of every default value declared for its element
//! name, whether or not the tag gives the attribute (a bound: parsers apply a default to every
//! element of that name that lacks the attribute). One entity value or default value may not
//! exceed the bound either.

use super::{describe, hash_ascii, is_ws, After, NameMap, NameOf, RefIn, State, XmlScanner, R};

const EXTERNAL_SUBSET: &str =
    "external DTD subset (SYSTEM/PUBLIC) not allowed: the upstream's parser could fetch it";
const EXTERNAL_ENTITY: &str =
    "external entity (SYSTEM/PUBLIC) not allowed: the upstream's parser could fetch it";

/// Where the scanner is inside the DOCTYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DtdState {
    /// After `<!DOCTYPE`: whitespace, then the root element name.
    DoctypeSpace { seen_ws: bool },
    /// After the DOCTYPE name: `[` or `>` (an external ID is refused).
    DoctypeTail,
    /// Inside the internal subset.
    Subset,
    /// After the internal subset's `]`: `>`.
    SubsetEnd,
    /// After `<` in the internal subset.
    SubsetLt,
    /// After `<!` in the internal subset.
    SubsetBang,
    /// Reading a declaration keyword (`ENTITY`, `ELEMENT`, ...).
    DeclKeyword,
    /// After `<!ENTITY`: whitespace, then the name.
    EntitySpace,
    /// After an entity name: a value literal (an external ID is refused).
    EntityDef,
    /// Inside an entity value literal.
    EntityValue,
    /// After `<!ATTLIST`: whitespace, then the element name.
    AttlistSpace,
    /// After an `ATTLIST`'s element name: attribute definitions up to `>`; every quoted
    /// literal there is a default value (nothing else in the grammar is quoted).
    Attlist,
    /// Inside an attribute default value.
    AttDefault,
    /// Skipping the rest of a declaration to its `>`, quoted strings respected.
    DeclSkip { quote: u8 },
}

/// What the scanner keeps of the DTD: declared entities (name hash → characters its
/// replacement text expands to), attribute defaults (element name hash → characters of all its
/// default values), the declaration being read, and the total expansion of the document.
#[derive(Debug, Default)]
pub(super) struct Dtd {
    entities: NameMap<u64>,
    defaults: NameMap<u64>,
    /// The name hash of the element the `ATTLIST` being read is for.
    attlist_element: u64,
    /// Characters the default value being read expands to.
    default_len: u64,
    /// The name hash of the entity being declared.
    entity_name: u64,
    entity_quote: u8,
    /// Characters the entity value being read expands to.
    entity_len: u64,
    /// Characters all entity references and applied attribute defaults of the document expand
    /// to.
    expanded: u64,
    keyword: [u8; 8],
    keyword_len: usize,
}

impl XmlScanner {
    /// `<!DOCTYPE` matched.
    pub(super) fn doctype(&mut self) -> R {
        if !self.limits.allow_dtd {
            return Err(self.refuse("DOCTYPE not allowed (allowDtd is false)"));
        }
        self.seen_doctype = true;
        self.state = State::Dtd(DtdState::DoctypeSpace { seen_ws: false });
        Ok(())
    }

    /// The name of the entity being declared was read (its hash is `name`).
    pub(super) fn entity_named(&mut self, name: u64) {
        self.dtd.entity_name = name;
        self.state = State::Dtd(DtdState::EntityDef);
    }

    /// The element name of an `ATTLIST` declaration was read (its hash is `name`).
    pub(super) fn attlist_named(&mut self, name: u64) {
        self.dtd.attlist_element = name;
        self.state = State::Dtd(DtdState::Attlist);
    }

    /// Adds `n` characters to the default value being read, which is both an attribute value
    /// and an expansion.
    pub(super) fn add_default(&mut self, n: u64) -> R {
        self.dtd.default_len = self.dtd.default_len.saturating_add(n);
        let max = self.limits.max_entity_expansion;
        if self.dtd.default_len > max {
            return Err(self.over("maxEntityExpansion", max));
        }
        self.check(
            self.dtd.default_len,
            self.limits.max_attribute_length,
            "maxAttributeLength",
        )
    }

    /// Whether no attribute default was declared (nothing to add per start tag).
    #[inline(always)]
    pub(super) fn no_defaults_declared(&self) -> bool {
        self.dtd.defaults.is_empty()
    }

    /// A start tag of the element whose name hash is `element`: its declared defaults expand.
    pub(super) fn defaults_applied(&mut self, element: u64) -> R {
        match self.dtd.defaults.get(&element).copied() {
            Some(n) => self.expand(n),
            None => Ok(()),
        }
    }

    /// `n` more characters of expansion in the document.
    fn expand(&mut self, n: u64) -> R {
        self.dtd.expanded = self.dtd.expanded.saturating_add(n);
        let max = self.limits.max_entity_expansion;
        if self.dtd.expanded > max {
            return Err(self.over("maxEntityExpansion", max));
        }
        Ok(())
    }

    /// Adds `n` characters to the entity value being read.
    pub(super) fn add_entity(&mut self, n: u64) -> R {
        self.dtd.entity_len = self.dtd.entity_len.saturating_add(n);
        let max = self.limits.max_entity_expansion;
        if self.dtd.entity_len > max {
            return Err(self.over("maxEntityExpansion", max));
        }
        Ok(())
    }

    /// `&name;` completed.
    pub(super) fn entity_reference(&mut self, within: RefIn) -> R {
        let predefined = [&b"lt"[..], b"gt", b"amp", b"apos", b"quot"]
            .iter()
            .any(|p| self.name_len == p.len() as u64 && self.name_hash == hash_ascii(p));
        if predefined {
            return self.referenced(within, 1, false);
        }
        let Some(len) = self.dtd.entities.get(&self.name_hash).copied() else {
            return Err(self.bad("reference to an undeclared entity"));
        };
        // In a declaration the length goes into what is declared, counted where that is used.
        if matches!(within, RefIn::Text | RefIn::Attribute) {
            self.expand(len)?;
        }
        self.referenced(within, len, false)
    }

    fn declare(&mut self, len: u64) {
        // The first declaration of a name binds (XML 1.0 §4.2).
        self.dtd.entities.entry(self.dtd.entity_name).or_insert(len);
    }

    /// Character `c` inside the DOCTYPE, in `state`. Kept out of line: inlined into `on_char`,
    /// it costs the per-character loop of every document (DTD or not) about 1% more
    /// instructions.
    #[inline(never)]
    pub(super) fn dtd_char(&mut self, state: DtdState, c: u32) -> R {
        match state {
            DtdState::DoctypeSpace { seen_ws } => {
                if is_ws(c) {
                    self.state = State::Dtd(DtdState::DoctypeSpace { seen_ws: true });
                } else if !seen_ws {
                    return Err(self.bad(describe(c)));
                } else {
                    self.name(NameOf::DoctypeRoot);
                    self.name_char(NameOf::DoctypeRoot, c)?;
                    if self.name_len == 0 {
                        return Err(self.bad(describe(c)));
                    }
                }
            }
            DtdState::DoctypeTail => match c {
                0x5b => self.state = State::Dtd(DtdState::Subset),
                0x3e => self.state = State::Misc,
                // `SYSTEM` / `PUBLIC`.
                0x53 | 0x50 => return Err(self.refuse(EXTERNAL_SUBSET)),
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            DtdState::Subset => match c {
                0x3c => self.state = State::Dtd(DtdState::SubsetLt),
                0x5d => self.state = State::Dtd(DtdState::SubsetEnd),
                0x25 => return Err(self.refuse("parameter entities are not supported")),
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            DtdState::SubsetEnd => match c {
                0x3e => self.state = State::Misc,
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            DtdState::SubsetLt => match c {
                0x21 => self.state = State::Dtd(DtdState::SubsetBang),
                0x3f => {
                    self.pi_target = [0; 3];
                    self.name(NameOf::PiTarget { in_dtd: true });
                }
                _ => return Err(self.bad(describe(c))),
            },
            DtdState::SubsetBang => match c {
                0x2d => self.state = State::Keyword(b"-", 0, After::DtdComment),
                0x41..=0x5a => {
                    self.dtd.keyword[0] = c as u8;
                    self.dtd.keyword_len = 1;
                    self.state = State::Dtd(DtdState::DeclKeyword);
                }
                _ => return Err(self.bad(describe(c))),
            },
            DtdState::DeclKeyword => {
                if (0x41..=0x5a).contains(&c) && self.dtd.keyword_len < self.dtd.keyword.len() {
                    if let Some(slot) = self.dtd.keyword.get_mut(self.dtd.keyword_len) {
                        *slot = c as u8;
                    }
                    self.dtd.keyword_len += 1;
                } else if is_ws(c) {
                    self.state = match self.dtd.keyword.get(..self.dtd.keyword_len) {
                        Some(b"ENTITY") => State::Dtd(DtdState::EntitySpace),
                        Some(b"ATTLIST") => State::Dtd(DtdState::AttlistSpace),
                        Some(b"ELEMENT" | b"NOTATION") => {
                            State::Dtd(DtdState::DeclSkip { quote: 0 })
                        }
                        _ => return Err(self.bad("unknown markup declaration")),
                    };
                } else {
                    return Err(self.bad(describe(c)));
                }
            }
            DtdState::EntitySpace => match c {
                0x25 => return Err(self.refuse("parameter entities are not supported")),
                _ if is_ws(c) => {}
                _ => {
                    self.name(NameOf::Entity);
                    self.name_char(NameOf::Entity, c)?;
                    if self.name_len == 0 {
                        return Err(self.bad(describe(c)));
                    }
                }
            },
            DtdState::EntityDef => match c {
                0x22 | 0x27 => {
                    self.dtd.entity_len = 0;
                    self.dtd.entity_quote = c as u8;
                    self.state = State::Dtd(DtdState::EntityValue);
                }
                // `SYSTEM` / `PUBLIC` (an `NDATA` unparsed entity starts the same way).
                0x53 | 0x50 => return Err(self.refuse(EXTERNAL_ENTITY)),
                _ if is_ws(c) => {}
                _ => return Err(self.bad(describe(c))),
            },
            DtdState::EntityValue => match c {
                _ if c == u32::from(self.dtd.entity_quote) => {
                    self.declare(self.dtd.entity_len);
                    self.state = State::Dtd(DtdState::DeclSkip { quote: 0 });
                }
                0x26 => self.state = State::Ref(RefIn::EntityValue),
                0x25 => return Err(self.refuse("parameter entities are not supported")),
                0x3c => return Err(self.refuse("markup in entity values is not supported")),
                _ => self.add_entity(1)?,
            },
            DtdState::AttlistSpace => match c {
                _ if is_ws(c) => {}
                _ => {
                    self.name(NameOf::AttlistElement);
                    self.name_char(NameOf::AttlistElement, c)?;
                    if self.name_len == 0 {
                        return Err(self.bad(describe(c)));
                    }
                }
            },
            DtdState::Attlist => match c {
                0x22 | 0x27 => {
                    self.dtd.default_len = 0;
                    self.dtd.entity_quote = c as u8;
                    self.state = State::Dtd(DtdState::AttDefault);
                }
                0x3e => self.state = State::Dtd(DtdState::Subset),
                0x25 => return Err(self.refuse("parameter entities are not supported")),
                _ => {}
            },
            DtdState::AttDefault => match c {
                _ if c == u32::from(self.dtd.entity_quote) => {
                    let total = self
                        .dtd
                        .defaults
                        .entry(self.dtd.attlist_element)
                        .or_insert(0);
                    *total = total.saturating_add(self.dtd.default_len);
                    self.state = State::Dtd(DtdState::Attlist);
                }
                0x26 => self.state = State::Ref(RefIn::Default),
                0x3c => return Err(self.bad("'<' in an attribute value")),
                _ => self.add_default(1)?,
            },
            DtdState::DeclSkip { quote } => {
                if quote != 0 {
                    if c == u32::from(quote) {
                        self.state = State::Dtd(DtdState::DeclSkip { quote: 0 });
                    }
                } else {
                    match c {
                        0x22 | 0x27 => {
                            self.state = State::Dtd(DtdState::DeclSkip { quote: c as u8 })
                        }
                        0x3e => self.state = State::Dtd(DtdState::Subset),
                        0x25 => return Err(self.refuse("parameter entities are not supported")),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}
