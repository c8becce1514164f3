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
    use palisade_kit::runs::{run_until_with, stops_at, Block, Portable};

    fn check<C: Class>(definition: fn(u8) -> bool) {
        for c in 0..=255u8 {
            assert_eq!(stops_at::<C>(c), definition(c), "byte {c:#04x}");
        }
    }

    #[test]
    fn classes_match_their_definitions() {
        check::<PlainString>(|c| c < 0x20 || c == b'"' || c == b'\\' || c >= 0x80);
        check::<Whitespace>(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
        check::<Digits>(|c| !c.is_ascii_digit());
    }

    /// Every run length across the scalar head, whole blocks and the tail, ended by every
    /// byte value, against the byte-at-a-time definition.
    fn check_runs<C: Class>(fill: u8) {
        for len in 0..60 {
            for end in 0..=255u8 {
                let mut bytes = vec![fill; len];
                bytes.push(end);
                bytes.extend_from_slice(&[fill; 20]);
                let expected = bytes
                    .iter()
                    .position(|&c| stops_at::<C>(c))
                    .unwrap_or(bytes.len());
                assert_eq!(
                    run_until_with::<C, Portable>(&bytes),
                    expected,
                    "{len} {end:#04x}"
                );
                assert_eq!(
                    run_until_with::<C, Portable>(&bytes[..len]),
                    len.min(expected)
                );
            }
        }
    }

    #[test]
    fn runs_end_at_the_first_byte_of_their_class() {
        check_runs::<PlainString>(b'a');
        check_runs::<Whitespace>(b' ');
        check_runs::<Whitespace>(b'\n');
        check_runs::<Digits>(b'7');
    }

    /// The block's lanes are the scalar operations, lane by lane (what `Vector` does with
    /// one instruction each).
    #[test]
    fn block_lanes_match_scalar_lanes() {
        let mut bytes = [0u8; 16];
        for first in (0..=255u8).step_by(16) {
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = first.wrapping_add(j as u8);
            }
            let block = Portable::load(&bytes);
            let mask = PlainString::stops(block).bitmask();
            for (j, &b) in bytes.iter().enumerate() {
                assert_eq!(mask >> j & 1 == 1, stops_at::<PlainString>(b));
            }
        }
    }
}
