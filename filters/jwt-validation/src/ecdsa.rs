//! ECDSA verification (ES256 with P-256, ES384 with P-384) with a table of multiples of each
//! public key, computed once when the JWKS is parsed.
//!
//! Verification computes u1·G + u2·Q. The `p256` / `p384` crates do it as one interleaved
//! variable-base multiplication (`lincomb_vartime`: a full chain of point doublings, plus a
//! table of each point built per call) and use their precomputed generator table only for
//! signing. No crate keeps a table for a verification key, so this module builds one, spaced as
//! the crates' generator table is (one `LookupTable` of 1Q..8Q per two radix-16 digits), builds
//! the generator's the same way, and multiplies both points by table lookups and additions
//! alone. The field and point arithmetic,
//! the signature and key parsing are the crates'; the checks are theirs (0 < r, s < n; high S
//! accepted, as `p256` and `p384` do and as jwt-simple did). Public data only: variable time.

use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use primeorder::{LookupTable, Radix16Decomposition, Radix16Digits};
use std::sync::{Arc, OnceLock};

macro_rules! curve {
    ($(#[$doc:meta])* $name:ident, $curve:ident, $curve_type:ident, $point_bytes:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            /// Table i holds 1, ..., 8 times 256^i · Q (its last one 256^bytes · Q, for the carry
            /// digit).
            tables: Arc<[LookupTable<$curve::ProjectivePoint>; $point_bytes + 1]>,
        }

        impl $name {
            /// Parses an uncompressed SEC1 point (`04 || x || y`), which must be on the curve,
            /// and builds its table.
            pub fn from_sec1_bytes(point: &[u8]) -> Result<Self, String> {
                let key = $curve::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|_| "invalid key material: Invalid public key".to_string())?;
                Ok(Self::table_of($curve::ProjectivePoint::from(*key.as_affine())))
            }

            fn table_of(mut base: $curve::ProjectivePoint) -> Self {
                let tables = std::array::from_fn(|_| {
                    let table = LookupTable::new(base);
                    for _ in 0..8 {
                        base = base.double();
                    }
                    table
                });
                $name {
                    tables: Arc::new(tables),
                }
            }

            /// The generator's table, built once per VM on first use. Ours rather than the
            /// crate's `BasepointTable`: the same spacing and speed, but the crate builds its
            /// table in one 53 KB function, and V8 keeps memory in proportion to a function's
            /// size when it compiles it at load (BENCHMARKS.md, "Memory").
            fn generator() -> &'static Self {
                static TABLE: OnceLock<$name> = OnceLock::new();
                TABLE.get_or_init(|| Self::table_of(<$curve::ProjectivePoint as Group>::generator()))
            }

            /// k · Q: two radix-16 digits per table, the odd ones summed apart and shifted by
            /// four doublings at the end.
            fn mul(&self, k: &$curve::Scalar) -> $curve::ProjectivePoint {
                let digits = Radix16Decomposition::<Radix16Digits<$curve::$curve_type>>::new(k);
                let tables = &*self.tables;
                let mut even = tables[$point_bytes].select_vartime(digits[2 * $point_bytes]);
                let mut odd = $curve::ProjectivePoint::IDENTITY;
                for (i, table) in tables[..$point_bytes].iter().enumerate().rev() {
                    odd += &table.select_vartime(digits[2 * i + 1]);
                    even += &table.select_vartime(digits[2 * i]);
                }
                for _ in 0..4 {
                    odd = odd.double();
                }
                even + odd
            }

            /// Whether `signature` (r || s, fixed length) signs the message with this hash
            /// (`prehash`, as long as the curve's scalars).
            pub fn verify_prehash(&self, prehash: &[u8], signature: &[u8]) -> bool {
                let Ok(signature) = $curve::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                let Ok(z) = $curve::FieldBytes::try_from(prehash) else {
                    return false;
                };
                let z = <$curve::Scalar as Reduce<$curve::FieldBytes>>::reduce(&z);
                let (r, s) = signature.split_scalars();
                let s_inv = *s.invert_vartime();
                let u1 = z * s_inv;
                let u2 = *r * s_inv;
                let point = Self::generator().mul(&u1) + self.mul(&u2);
                let x = point.to_affine().x();
                *r == <$curve::Scalar as Reduce<$curve::FieldBytes>>::reduce(&x)
            }
        }
    };
}

curve!(
    /// A P-256 public key (ES256).
    P256Key,
    p256,
    NistP256,
    32
);
curve!(
    /// A P-384 public key (ES384).
    P384Key,
    p384,
    NistP384,
    48
);

// The reference implementations are native dev-dependencies.
#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    //! Differential tests against the crates' own verification (`VerifyingKey::verify_prehash`,
    //! what jwt-simple called): random keys and messages, valid, high-S and tampered signatures.

    use super::*;
    use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
    use rand::{Rng, RngCore};
    use sha2::Digest;

    macro_rules! differential {
        ($test:ident, $curve:ident, $key:ident, $hash:ty, $bytes:literal, $keys:literal) => {
            #[test]
            fn $test() {
                let mut rng = rand::thread_rng();
                let mut previous: Option<$curve::ecdsa::Signature> = None;
                for _ in 0..$keys {
                    let mut secret = [0u8; $bytes];
                    rng.fill_bytes(&mut secret);
                    let Ok(signer) = $curve::ecdsa::SigningKey::from_slice(&secret) else {
                        continue;
                    };
                    let point = signer.verifying_key().to_sec1_point(false);
                    let reference =
                        $curve::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes()).unwrap();
                    let ours = $key::from_sec1_bytes(point.as_bytes()).unwrap();
                    let agree = |digest: &[u8], sig: &[u8]| {
                        let expected = $curve::ecdsa::Signature::from_slice(sig)
                            .is_ok_and(|s| reference.verify_prehash(digest, &s).is_ok());
                        assert_eq!(ours.verify_prehash(digest, sig), expected);
                        expected
                    };
                    let mut msg = vec![0u8; rng.gen_range(0..300)];
                    rng.fill_bytes(&mut msg);
                    let digest = <$hash>::digest(&msg);
                    let sig: $curve::ecdsa::Signature = signer.sign_prehash(&digest).unwrap();
                    assert!(agree(&digest, &sig.to_bytes()));
                    // High S verifies too (neither the crates nor jwt-simple normalize).
                    let (r, s) = sig.split_scalars();
                    let high = $curve::ecdsa::Signature::from_scalars(*r, -*s).unwrap();
                    assert!(agree(&digest, &high.to_bytes()));
                    // Tampered: bit flips, another message, another key's signature.
                    let bytes = sig.to_bytes();
                    for _ in 0..8 {
                        let mut bad = bytes.to_vec();
                        let bit = rng.gen_range(0..bad.len() * 8);
                        bad[bit / 8] ^= 1 << (bit % 8);
                        assert!(!agree(&digest, &bad));
                    }
                    let mut other = digest.clone();
                    other[0] ^= 1;
                    assert!(!agree(&other, &bytes));
                    if let Some(previous) = previous {
                        assert!(!agree(&digest, &previous.to_bytes()));
                    }
                    previous = Some(sig);
                    // r or s zero or not below n, a wrong length, a short digest.
                    let half = bytes.len() / 2;
                    let mut zero_r = bytes.to_vec();
                    zero_r[..half].fill(0);
                    let mut big_s = bytes.to_vec();
                    big_s[half..].fill(0xff);
                    for bad in [
                        zero_r,
                        big_s,
                        bytes[1..].to_vec(),
                        [&bytes[..], &[0]].concat(),
                    ] {
                        assert!(!agree(&digest, &bad));
                    }
                    assert!(!ours.verify_prehash(&digest[1..], &bytes));
                }
            }
        };
    }

    differential!(p256_matches_the_crate, p256, P256Key, sha2::Sha256, 32, 40);
    differential!(p384_matches_the_crate, p384, P384Key, sha2::Sha384, 48, 20);

    #[test]
    fn points_off_the_curve_are_refused() {
        let mut point = [4u8; 65];
        point[64] = 5;
        assert!(P256Key::from_sec1_bytes(&point).is_err());
        assert!(P384Key::from_sec1_bytes(&[4u8; 97]).is_err());
        assert!(P256Key::from_sec1_bytes(&[4u8; 64]).is_err());
    }
}
