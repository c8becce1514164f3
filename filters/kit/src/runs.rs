//! Bulk byte classification for body scanners: how many bytes at the start of a slice belong
//! to a run (string contents, whitespace, digits, character data...), examined 16 bytes at a
//! time so a per-byte state machine only sees the byte that ends the run.
//!
//! A scanner writes each byte class once, generically over [`Lanes`] (see [`Class`]); the kit
//! applies it to one byte (the first bytes of a run and the tail of a chunk) or to a 16-byte
//! [`Block`], which is a wasm `simd128` vector in Envoy (compares, then one bitmask per block)
//! and a plain array ([`Portable`]) natively. Test a class against its plain definition with
//! [`stops_at`] and the block walk with [`run_until_with`]`::<C, Portable>`; the vector applies
//! the same lane operations, one instruction each.

/// Lane-wise byte operations; a mask lane is all ones (true) or all zeros (false).
pub trait Lanes: Copy {
    fn eq(self, b: u8) -> Self;
    /// Unsigned `<`.
    fn lt(self, b: u8) -> Self;
    /// Unsigned `>`.
    fn gt(self, b: u8) -> Self;
    fn or(self, other: Self) -> Self;
    fn not(self) -> Self;
    /// `self & !other`.
    fn and_not(self, other: Self) -> Self;
}

impl Lanes for u8 {
    #[inline(always)]
    fn eq(self, b: u8) -> u8 {
        if self == b {
            0xff
        } else {
            0
        }
    }
    #[inline(always)]
    fn lt(self, b: u8) -> u8 {
        if self < b {
            0xff
        } else {
            0
        }
    }
    #[inline(always)]
    fn gt(self, b: u8) -> u8 {
        if self > b {
            0xff
        } else {
            0
        }
    }
    #[inline(always)]
    fn or(self, other: u8) -> u8 {
        self | other
    }
    #[inline(always)]
    fn not(self) -> u8 {
        !self
    }
    #[inline(always)]
    fn and_not(self, other: u8) -> u8 {
        self & !other
    }
}

/// A set of bytes that ends a run.
pub trait Class {
    /// All ones in the lanes whose byte ends the run.
    fn stops<L: Lanes>(v: L) -> L;
}

/// Whether byte `c` is of class `C` (ends a run).
#[inline(always)]
pub fn stops_at<C: Class>(c: u8) -> bool {
    C::stops(c) != 0
}

/// Sixteen lanes, loaded from a block of bytes.
pub trait Block: Lanes {
    fn load(bytes: &[u8; 16]) -> Self;
    /// Bit `j` set when lane `j` is true.
    fn bitmask(self) -> u32;
}

/// Blocks are wasm `simd128` vectors in Envoy, plain arrays natively (where LLVM vectorizes
/// them for the host).
#[cfg(target_arch = "wasm32")]
type Native = Vector;
#[cfg(not(target_arch = "wasm32"))]
type Native = Portable;

/// Most runs in structured documents (keys, short values, numbers) end within a few bytes:
/// those are cheaper byte by byte than as a block.
const SCALAR_HEAD: usize = 8;

/// The length of the longest prefix of `bytes` with no byte of class `C`.
#[inline(always)]
pub fn run_until<C: Class>(bytes: &[u8]) -> usize {
    run_until_with::<C, Native>(bytes)
}

/// [`run_until`] with the block type `B`: the first bytes one at a time, inline in the
/// scanner's loop; longer runs in [`run_blocks`].
#[inline(always)]
pub fn run_until_with<C: Class, B: Block>(bytes: &[u8]) -> usize {
    let head = bytes.get(..SCALAR_HEAD).unwrap_or(bytes);
    match head.iter().position(|&c| stops_at::<C>(c)) {
        Some(n) => n,
        None if head.len() == bytes.len() => head.len(),
        None => head.len() + run_blocks::<C, B>(bytes.get(head.len()..).unwrap_or_default()),
    }
}

/// Whole 16-byte blocks, then the tail one byte at a time. Out of line and the only code
/// compiled with `simd128` in wasm: enabling it for the scanner's whole loop made V8's code
/// for the per-byte machine slower (measured in the README). Safe to call on wasm, which
/// validates a module as a whole: an engine without SIMD refuses to load it.
#[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
#[inline(never)]
fn run_blocks<C: Class, B: Block>(bytes: &[u8]) -> usize {
    let mut skipped = 0;
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if let Ok(block) = <&[u8; 16]>::try_from(block) {
            let mask = C::stops(B::load(block)).bitmask();
            if mask != 0 {
                return skipped + mask.trailing_zeros() as usize;
            }
        }
        skipped += 16;
    }
    let tail = blocks.remainder();
    skipped
        + tail
            .iter()
            .position(|&c| stops_at::<C>(c))
            .unwrap_or(tail.len())
}

/// A block as an array, lane by lane (natively, where LLVM vectorizes it for the host).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Copy)]
pub struct Portable([u8; 16]);

#[cfg(not(target_arch = "wasm32"))]
impl Portable {
    #[inline(always)]
    fn map(self, f: impl Fn(u8) -> u8) -> Self {
        Portable(self.0.map(f))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Lanes for Portable {
    #[inline(always)]
    fn eq(self, b: u8) -> Self {
        self.map(|c| c.eq(b))
    }
    #[inline(always)]
    fn lt(self, b: u8) -> Self {
        self.map(|c| c.lt(b))
    }
    #[inline(always)]
    fn gt(self, b: u8) -> Self {
        self.map(|c| c.gt(b))
    }
    #[inline(always)]
    fn or(self, other: Self) -> Self {
        let mut out = self.0;
        for (o, c) in out.iter_mut().zip(other.0) {
            *o |= c;
        }
        Portable(out)
    }
    #[inline(always)]
    fn not(self) -> Self {
        self.map(|c| !c)
    }
    #[inline(always)]
    fn and_not(self, other: Self) -> Self {
        let mut out = self.0;
        for (o, c) in out.iter_mut().zip(other.0) {
            *o &= !c;
        }
        Portable(out)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Block for Portable {
    #[inline(always)]
    fn load(bytes: &[u8; 16]) -> Self {
        Portable(*bytes)
    }
    #[inline(always)]
    fn bitmask(self) -> u32 {
        let mut mask = 0;
        for (j, c) in self.0.iter().enumerate() {
            mask |= u32::from(c >> 7) << j;
        }
        mask
    }
}

/// A block as a wasm `simd128` vector: the same lane operations, sixteen at once.
#[cfg(target_arch = "wasm32")]
#[derive(Clone, Copy)]
pub struct Vector(core::arch::wasm32::v128);

#[cfg(target_arch = "wasm32")]
impl Lanes for Vector {
    #[inline(always)]
    fn eq(self, b: u8) -> Self {
        use core::arch::wasm32::{u8x16_eq, u8x16_splat};
        Vector(u8x16_eq(self.0, u8x16_splat(b)))
    }
    #[inline(always)]
    fn lt(self, b: u8) -> Self {
        use core::arch::wasm32::{u8x16_lt, u8x16_splat};
        Vector(u8x16_lt(self.0, u8x16_splat(b)))
    }
    #[inline(always)]
    fn gt(self, b: u8) -> Self {
        use core::arch::wasm32::{u8x16_gt, u8x16_splat};
        Vector(u8x16_gt(self.0, u8x16_splat(b)))
    }
    #[inline(always)]
    fn or(self, other: Self) -> Self {
        Vector(core::arch::wasm32::v128_or(self.0, other.0))
    }
    #[inline(always)]
    fn not(self) -> Self {
        Vector(core::arch::wasm32::v128_not(self.0))
    }
    #[inline(always)]
    fn and_not(self, other: Self) -> Self {
        Vector(core::arch::wasm32::v128_andnot(self.0, other.0))
    }
}

#[cfg(target_arch = "wasm32")]
impl Block for Vector {
    #[inline(always)]
    fn load(bytes: &[u8; 16]) -> Self {
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15] = *bytes;
        // Sixteen lanes from sixteen adjacent bytes: LLVM emits one `v128.load`.
        Vector(core::arch::wasm32::u8x16(
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15,
        ))
    }
    #[inline(always)]
    fn bitmask(self) -> u32 {
        u32::from(core::arch::wasm32::u8x16_bitmask(self.0))
    }
}

/// Checks for a scanner's classes, used by its unit tests.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::panic)] // test helpers: a failed check is a panic
pub mod testing {
    use super::{run_until_with, stops_at, Block, Class, Portable};

    /// Class `C` stops exactly at the bytes `definition` says, for all 256 byte values.
    pub fn assert_class<C: Class>(definition: fn(u8) -> bool) {
        for c in 0..=255u8 {
            assert_eq!(stops_at::<C>(c), definition(c), "byte {c:#04x}");
        }
    }

    /// Every run of `fill` of length 0 to 59 (across the scalar head, whole blocks and the
    /// tail), ended by every byte value, with and without bytes after it, ends where the
    /// byte-at-a-time definition says.
    pub fn assert_runs<C: Class>(fill: u8) {
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

    /// A block's mask has bit `j` set exactly when byte `j` is of class `C`, for every byte
    /// value in every lane (what the wasm vector does with one instruction per operation).
    pub fn assert_block_lanes<C: Class>() {
        let mut bytes = [0u8; 16];
        for first in (0..=255u8).step_by(16) {
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = first.wrapping_add(j as u8);
            }
            let mask = C::stops(Portable::load(&bytes)).bitmask();
            for (j, &b) in bytes.iter().enumerate() {
                assert_eq!(
                    mask >> j & 1 == 1,
                    stops_at::<C>(b),
                    "lane {j} byte {b:#04x}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_block_lanes, assert_class, assert_runs};
    use super::*;

    /// A class using every lane operation: ASCII letters except `x`.
    struct NotLetter;
    impl Class for NotLetter {
        fn stops<L: Lanes>(v: L) -> L {
            let lower = v.gt(b'a' - 1).and_not(v.gt(b'z'));
            let upper = v.gt(b'A' - 1).and_not(v.gt(b'Z'));
            lower.or(upper).and_not(v.eq(b'x')).not()
        }
    }

    #[test]
    fn lane_operations_match_their_definitions() {
        assert_class::<NotLetter>(|c| !(c.is_ascii_alphabetic() && c != b'x'));
        for c in 0..=255u8 {
            assert_eq!(c.lt(0x20) != 0, c < 0x20);
        }
    }

    #[test]
    fn runs_end_at_the_first_stop_across_head_blocks_and_tail() {
        assert_runs::<NotLetter>(b'k');
        assert_block_lanes::<NotLetter>();
    }
}
