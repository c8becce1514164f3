//! Handling secrets: constant-time comparison and digests, so a timing difference never tells a
//! client how much of a secret it guessed. Never log a secret or its hash.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Parses a 64-character hex SHA-256 (either case).
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    // `from_str_radix` alone would also take a sign (`+f`).
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `presented` hashes to `expected` (compared in constant time).
pub fn matches_sha256(presented: &[u8], expected: &[u8; 32]) -> bool {
    ct_eq(&sha256(presented), expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_hashes() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        let h =
            parse_sha256_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD")
                .unwrap();
        assert_eq!(h, sha256(b"abc"));
        assert!(matches_sha256(b"abc", &h));
        assert!(!matches_sha256(b"abd", &h));
        assert_eq!(parse_sha256_hex("zz"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
        assert_eq!(parse_sha256_hex(&"+a".repeat(32)), None, "no signs");
    }
}
