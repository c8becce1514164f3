//! Bulk classification: how many bytes at the start of a slice belong to a run (character
//! data, CDATA, comment text), examined 16 bytes at a time so the per-character state machine
//! only sees the byte that ends the run.
//!
//! The classes, over the kit's [`palisade_kit::runs`] (one byte, or 16 at a time: a wasm
//! `simd128` vector in Envoy); the tests check them against their plain definitions and the
//! block walk with the kit's portable block.

pub(super) use palisade_kit::runs::run_until;
use palisade_kit::runs::{Class, Lanes};

/// A byte that is not a whole, plain character: not printable ASCII (0x7f included), tab,
/// line feed or carriage return (what `scanner::plain` accepts).
#[inline(always)]
fn not_plain<L: Lanes>(v: L) -> L {
    let allowed_control = v.eq(b'\t').or(v.eq(b'\n')).or(v.eq(b'\r'));
    v.lt(0x20).and_not(allowed_control).or(v.gt(0x7f))
}

/// A byte that ends a run of character data: markup, a reference, `]` and `>` (`]]>` is
/// checked character by character), or anything not plain.
pub(super) struct Text;
impl Class for Text {
    #[inline(always)]
    fn stops<L: Lanes>(v: L) -> L {
        not_plain(v)
            .or(v.eq(b'<'))
            .or(v.eq(b'&'))
            .or(v.eq(b']'))
            .or(v.eq(b'>'))
    }
}

/// A byte that ends a run of CDATA: `]`, or anything not plain.
pub(super) struct CData;
impl Class for CData {
    #[inline(always)]
    fn stops<L: Lanes>(v: L) -> L {
        not_plain(v).or(v.eq(b']'))
    }
}

/// A byte that ends a run of comment text: `-`, or anything not plain.
pub(super) struct Comment;
impl Class for Comment {
    #[inline(always)]
    fn stops<L: Lanes>(v: L) -> L {
        not_plain(v).or(v.eq(b'-'))
    }
}

#[cfg(test)]
mod tests {
    use super::super::plain;
    use super::*;
    use palisade_kit::runs::testing::{assert_block_lanes, assert_class, assert_runs};

    #[test]
    fn classes_match_their_definitions() {
        assert_class::<Text>(|c| !plain(c) || matches!(c, b'<' | b'&' | b']' | b'>'));
        assert_class::<CData>(|c| !plain(c) || c == b']');
        assert_class::<Comment>(|c| !plain(c) || c == b'-');
    }

    #[test]
    fn runs_end_at_the_first_byte_of_their_class() {
        assert_runs::<Text>(b'a');
        assert_runs::<Text>(b'\n');
        assert_runs::<CData>(b'<');
        assert_runs::<Comment>(b'>');
        assert_block_lanes::<Text>();
        assert_block_lanes::<CData>();
        assert_block_lanes::<Comment>();
    }
}
