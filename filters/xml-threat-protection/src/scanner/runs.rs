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
    use palisade_kit::runs::{run_until_with, stops_at, Block, Portable};

    fn check<C: Class>(definition: fn(u8) -> bool) {
        for c in 0..=255u8 {
            assert_eq!(stops_at::<C>(c), definition(c), "byte {c:#04x}");
        }
    }

    #[test]
    fn classes_match_their_definitions() {
        check::<Text>(|c| !plain(c) || matches!(c, b'<' | b'&' | b']' | b'>'));
        check::<CData>(|c| !plain(c) || c == b']');
        check::<Comment>(|c| !plain(c) || c == b'-');
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
        check_runs::<Text>(b'a');
        check_runs::<Text>(b'\n');
        check_runs::<CData>(b'<');
        check_runs::<Comment>(b'>');
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
            let mask = Text::stops(block).bitmask();
            for (j, &b) in bytes.iter().enumerate() {
                assert_eq!(mask >> j & 1 == 1, stops_at::<Text>(b));
            }
        }
    }
}
