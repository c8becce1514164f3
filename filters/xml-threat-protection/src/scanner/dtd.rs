//! The document type declaration: refused outright unless `allowDtd` is true; otherwise the
//! states of `<!DOCTYPE ...>` and its internal subset, the general entities it declares, and what
//! references to them would expand to. Nothing is ever expanded or fetched: an entity is kept as
//! the length of its replacement text, an external one (`SYSTEM` / `PUBLIC`) only as a mark that
//! refuses any reference to it, and the external DTD subset's identifiers are skipped. Parameter
//! entities and markup inside entity values are refused.

use super::{describe, hash_ascii, is_ws, After, NameMap, NameOf, RefIn, State, XmlScanner, R};

/// Where the scanner is inside the DOCTYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DtdState {
    /// After `<!DOCTYPE`: whitespace, then the root element name.
    DoctypeSpace { seen_ws: bool },
    /// After the DOCTYPE name: an external ID (skipped, never resolved), `[` or `>`.
    DoctypeTail { quote: u8 },
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
    /// After an entity name: a value literal or an external ID.
    EntityDef { quote: u8, external: bool },
    /// Inside an entity value literal.
    EntityValue,
    /// Skipping the rest of a declaration to its `>`, quoted strings respected.
    DeclSkip { quote: u8 },
}

/// One declared general entity.
#[derive(Debug, Clone, Copy)]
struct Entity {
    /// Characters its replacement text expands to.
    len: u64,
    /// Declared with SYSTEM/PUBLIC: never resolved, any reference is refused.
    external: bool,
}

/// What the scanner keeps of the DTD: declared entities (name hash → entity), the declaration
/// being read, and the total expansion of the document's entity references.
#[derive(Debug, Default)]
pub(super) struct Dtd {
    entities: NameMap<Entity>,
    /// The name hash of the entity being declared.
    entity_name: u64,
    entity_quote: u8,
    /// Characters the entity value being read expands to.
    entity_len: u64,
    /// Characters all entity references of the document expand to.
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
        self.state = State::Dtd(DtdState::EntityDef {
            quote: 0,
            external: false,
        });
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
        let Some(entity) = self.dtd.entities.get(&self.name_hash).copied() else {
            return Err(self.bad("reference to an undeclared entity"));
        };
        if entity.external {
            return Err(self.refuse("reference to an external entity (never resolved)"));
        }
        if within != RefIn::EntityValue {
            self.dtd.expanded = self.dtd.expanded.saturating_add(entity.len);
            let max = self.limits.max_entity_expansion;
            if self.dtd.expanded > max {
                return Err(self.over("maxEntityExpansion", max));
            }
        }
        self.referenced(within, entity.len, false)
    }

    fn declare(&mut self, entity: Entity) {
        // The first declaration of a name binds (XML 1.0 §4.2).
        self.dtd
            .entities
            .entry(self.dtd.entity_name)
            .or_insert(entity);
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
            DtdState::DoctypeTail { quote } => {
                if quote != 0 {
                    if c == u32::from(quote) {
                        self.state = State::Dtd(DtdState::DoctypeTail { quote: 0 });
                    }
                } else {
                    match c {
                        0x22 | 0x27 => {
                            self.state = State::Dtd(DtdState::DoctypeTail { quote: c as u8 })
                        }
                        0x5b => self.state = State::Dtd(DtdState::Subset),
                        0x3e => self.state = State::Misc,
                        0x3c => return Err(self.bad(describe(c))),
                        _ => {}
                    }
                }
            }
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
                        Some(b"ELEMENT" | b"ATTLIST" | b"NOTATION") => {
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
            DtdState::EntityDef { quote, external } => {
                if quote != 0 {
                    if c == u32::from(quote) {
                        self.state = State::Dtd(DtdState::EntityDef { quote: 0, external });
                    }
                } else {
                    match c {
                        0x22 | 0x27 if !external => {
                            self.dtd.entity_len = 0;
                            self.dtd.entity_quote = c as u8;
                            self.state = State::Dtd(DtdState::EntityValue);
                        }
                        0x22 | 0x27 => {
                            self.state = State::Dtd(DtdState::EntityDef {
                                quote: c as u8,
                                external,
                            })
                        }
                        0x3e if external => {
                            self.declare(Entity {
                                len: 0,
                                external: true,
                            });
                            self.state = State::Dtd(DtdState::Subset);
                        }
                        // SYSTEM or PUBLIC: an external entity; its identifiers are skipped.
                        0x53 | 0x50 if !external => {
                            self.state = State::Dtd(DtdState::EntityDef {
                                quote: 0,
                                external: true,
                            })
                        }
                        _ if is_ws(c) || external => {}
                        _ => return Err(self.bad(describe(c))),
                    }
                }
            }
            DtdState::EntityValue => match c {
                _ if c == u32::from(self.dtd.entity_quote) => {
                    self.declare(Entity {
                        len: self.dtd.entity_len,
                        external: false,
                    });
                    self.state = State::Dtd(DtdState::DeclSkip { quote: 0 });
                }
                0x26 => self.state = State::Ref(RefIn::EntityValue),
                0x25 => return Err(self.refuse("parameter entities are not supported")),
                0x3c => return Err(self.refuse("markup in entity values is not supported")),
                _ => self.add_entity(1)?,
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
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}
