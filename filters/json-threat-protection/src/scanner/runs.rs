//! Bulk classification: how many bytes at the start of a slice belong to a run (string
//! contents, whitespace, digits), examined 16 bytes at a time so the per-byte state machine
//! only sees the byte that ends the run.
//!
//! The classes, over the kit's [`palisade_kit::runs`] (one byte, or 16 at a time: a wasm
//! `simd128` vector in Envoy); the tests check them against their plain definitions and the
//! block walk with the kit's portable block.

pub(super) use palisade_kit::runs::run_until;
use palisade_kit::runs::{Class, Lanes};

/// A byte that ends the plain part of a string: a control character, `"`, `\` or a
/// non-ASCII byte (UTF-8 is checked byte by byte).
pub(super) struct PlainString;
impl Class for PlainString {
    #[inline(always)]
    fn stops<L: Lanes>(v: L) -> L {
        v.lt(0x20).or(v.eq(b'"')).or(v.eq(b'\\')).or(v.gt(0x7f))
    }
}

/// A byte that is not JSON whitespace.
pub(super) struct Whitespace;
impl Class for Whitespace {
    #[inline(always)]
    fn stops<L: Lanes>(v: L) -> L {
        v.eq(b' ')
            .or(v.eq(b'\t'))
            .or(v.eq(b'\n'))
            .or(v.eq(b'\r'))
            .not()
    }
}

/// A byte that is not an ASCII digit.
pub(super) struct Digits;
impl Class for Digits {
    #[inline(always)]
    fn stops<L: Lanes>(v: L) -> L {
        v.lt(b'0').or(v.gt(b'9'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::runs::testing::{assert_block_lanes, assert_class, assert_runs};

    #[test]
    fn classes_match_their_definitions() {
        assert_class::<PlainString>(|c| c < 0x20 || c == b'"' || c == b'\\' || c >= 0x80);
        assert_class::<Whitespace>(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
        assert_class::<Digits>(|c| !c.is_ascii_digit());
    }

    #[test]
    fn runs_end_at_the_first_byte_of_their_class() {
        assert_runs::<PlainString>(b'a');
        assert_runs::<Whitespace>(b' ');
        assert_runs::<Whitespace>(b'\n');
        assert_runs::<Digits>(b'7');
        assert_block_lanes::<PlainString>();
        assert_block_lanes::<Whitespace>();
        assert_block_lanes::<Digits>();
    }
}
