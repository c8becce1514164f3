//! RSA signature verification (RFC 8017: RSASSA-PKCS1-v1_5 and RSASSA-PSS) with the key's
//! Montgomery context computed once, when the JWKS is parsed.
//!
//! Written by hand because no crate does this well on wasm32: `ring` has no API to keep a parsed
//! public key, so it re-derives the context (R² mod n, the costliest step) on every
//! verification, and the pure-Rust `rsa` crate keeps it but verified RS256 in V8 in about twice
//! ring's time (BENCHMARKS.md, "Compiling crypto for speed"). Everything here handles public
//! data only (the key, the signature, the signed bytes), so variable time is fine.
//!
//! Limbs are 32 bits with 64-bit products: wasm32 multiplies i64 natively, while u128 is
//! emulated.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The SHA-2 function of an RS* or PS* algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The hash of the concatenated `parts` in the first `len()` bytes.
    fn digest(self, parts: &[&[u8]]) -> [u8; 64] {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8]) {
            let mut d = D::new();
            for part in parts {
                d.update(part);
            }
            out.copy_from_slice(&d.finalize());
        }
        let mut out = [0u8; 64];
        match self {
            Hash::Sha256 => run::<Sha256>(parts, &mut out[..32]),
            Hash::Sha384 => run::<Sha384>(parts, &mut out[..48]),
            Hash::Sha512 => run::<Sha512>(parts, &mut out),
        }
        out
    }

    /// The DER `DigestInfo` prefix of EMSA-PKCS1-v1_5 (RFC 8017 section 9.2, note 1).
    fn digest_info(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// The signature scheme of an RS* (PKCS#1 v1.5) or PS* (PSS) algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Pkcs1(Hash),
    /// PSS with MGF1 over the same hash and a salt as long as the hash, as JWA requires (RFC
    /// 7518 section 3.5).
    Pss(Hash),
}

/// An RSA public key with its Montgomery context.
#[derive(Debug)]
pub struct RsaKey {
    /// The modulus, little-endian 32-bit limbs.
    n: Box<[u32]>,
    /// R² mod n, R = 2^(32 · limbs): turns a number into Montgomery form in one product.
    rr: Box<[u32]>,
    /// -n⁻¹ mod 2^32.
    n0_inv: u32,
    e: u64,
    /// The modulus length in bits and in bytes (signatures are exactly this many bytes).
    bits: usize,
    bytes: usize,
}

impl RsaKey {
    /// The largest public exponent accepted (`ring`'s limit, and the `rsa` crate's: a huge
    /// exponent makes every verification expensive).
    const MAX_EXPONENT: u64 = (1 << 33) - 1;

    /// Checks a verification key (2048 to 8192 bits, odd modulus, odd exponent from 3 to
    /// 2^33 - 1, the limits `ring` sets), so a broken key is refused with the JWKS rather than
    /// failing every token, and derives its Montgomery context.
    pub fn new(n: &[u8], e: &[u8]) -> Result<RsaKey, String> {
        let minimal = |b: &[u8]| -> Vec<u8> {
            let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[start..].to_vec()
        };
        let (n, e) = (minimal(n), minimal(e));
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if bits < 2048 {
            return Err("RSA keys shorter than 2048 bits are not accepted".into());
        }
        if bits > 8192 {
            return Err("invalid RSA key: the modulus is longer than 8192 bits".into());
        }
        if n.last().is_some_and(|b| b % 2 == 0) {
            return Err("invalid RSA key: the modulus is even".into());
        }
        let exponent = (e.len() <= 8)
            .then(|| e.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)))
            .filter(|&v| v % 2 == 1 && (3..=Self::MAX_EXPONENT).contains(&v));
        let Some(e) = exponent else {
            return Err("invalid RSA key: the exponent must be odd, from 3 to 2^33 - 1".into());
        };
        let limbs = from_be_bytes(&n, n.len().div_ceil(4));
        // Newton's iteration doubles the correct low bits each step: n is odd, so it is its own
        // inverse mod 8 (3 bits), and four steps reach 48 >= 32.
        let n0 = limbs[0];
        let mut inv = n0;
        for _ in 0..4 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        // R² mod n by doubling 1 modulo n, 2 · 32 · limbs times: a few thousand limb passes,
        // once per key.
        let mut rr = vec![0u32; limbs.len()];
        rr[0] = 1;
        for _ in 0..64 * limbs.len() {
            let top = shl1(&mut rr);
            if top != 0 || !less(&rr, &limbs) {
                sub_assign(&mut rr, &limbs);
            }
        }
        Ok(RsaKey {
            bytes: n.len(),
            n: limbs.into(),
            rr: rr.into(),
            n0_inv: inv.wrapping_neg(),
            e,
            bits,
        })
    }

    /// Whether `signature` is a valid signature of `message` under `scheme`.
    pub fn verify(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        match scheme {
            Scheme::Pkcs1(hash) => self.pkcs1_matches(&em, hash, message),
            Scheme::Pss(hash) => self.pss_matches(&em, hash, message),
        }
    }

    /// RSAVP1 (RFC 8017 section 5.2.2): s^e mod n as `bytes` big-endian bytes, or `None` when
    /// the signature is not `bytes` long, is zero, or is not below n.
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.bytes {
            return None;
        }
        let l = self.n.len();
        let s = from_be_bytes(signature, l);
        if s.iter().all(|&x| x == 0) || !less(&s, &self.n) {
            return None;
        }
        let mut t = vec![0u32; l + 1];
        let mut base = vec![0u32; l];
        self.mont_mul(&mut base, &s, &self.rr, &mut t);
        let mut x = base.clone();
        let mut tmp = vec![0u32; l];
        // Left to right over the exponent's bits below the top one.
        let top = 63 - self.e.leading_zeros();
        for i in (0..top).rev() {
            self.mont_mul(&mut tmp, &x, &x, &mut t);
            if self.e >> i & 1 == 1 {
                self.mont_mul(&mut x, &tmp, &base, &mut t);
            } else {
                std::mem::swap(&mut x, &mut tmp);
            }
        }
        // Out of Montgomery form: x · 1 · R⁻¹.
        let mut one = vec![0u32; l];
        one[0] = 1;
        self.mont_mul(&mut tmp, &x, &one, &mut t);
        let mut out = vec![0u8; self.bytes];
        for (i, byte) in out.iter_mut().rev().enumerate() {
            *byte = (tmp[i / 4] >> (8 * (i % 4))) as u8;
        }
        Some(out)
    }

    /// out = a · b · R⁻¹ mod n, for a, b < n (the FIOS form of Montgomery multiplication: one
    /// pass per limb of `a` multiplies and reduces together). `t` is scratch of limbs + 1.
    /// Written with iterators rather than indices so that no bounds check is left in the inner
    /// loop at the workspace's size-optimizing `opt-level`.
    fn mont_mul(&self, out: &mut [u32], a: &[u32], b: &[u32], t: &mut [u32]) {
        let n = &*self.n;
        let (Some((&n0, n_rest)), Some((&b0, b_rest))) = (n.split_first(), b.split_first()) else {
            return;
        };
        let Some((t_top, t)) = t.split_last_mut() else {
            return;
        };
        t.fill(0);
        *t_top = 0;
        for &ai in a {
            let ai = u64::from(ai);
            let mut limbs = t.iter_mut();
            let Some(mut prev) = limbs.next() else {
                return;
            };
            let s = u64::from(*prev) + ai * u64::from(b0);
            let m = u64::from((s as u32).wrapping_mul(self.n0_inv));
            // The low 32 bits of r are zero by the choice of m: the division by 2^32.
            let r = u64::from(s as u32) + m * u64::from(n0);
            let (mut c1, mut c2) = (s >> 32, r >> 32);
            for ((tj, &bj), &nj) in limbs.zip(b_rest).zip(n_rest) {
                // Each sum is at most (2^32 - 1)² + 2 (2^32 - 1) = 2^64 - 1: no overflow.
                let s = u64::from(*tj) + ai * u64::from(bj) + c1;
                c1 = s >> 32;
                let r = u64::from(s as u32) + m * u64::from(nj) + c2;
                c2 = r >> 32;
                *prev = r as u32;
                prev = tj;
            }
            let s = u64::from(*t_top) + c1 + c2;
            *prev = s as u32;
            *t_top = (s >> 32) as u32;
        }
        // t < 2n: one subtraction at most.
        if *t_top != 0 || !less(t, n) {
            sub_assign(t, n);
        }
        out.copy_from_slice(t);
    }

    /// EMSA-PKCS1-v1_5 (RFC 8017 section 9.2): `em` must equal the one encoding of the
    /// message's hash, 00 01 FF..FF 00 DigestInfo H.
    fn pkcs1_matches(&self, em: &[u8], hash: Hash, message: &[u8]) -> bool {
        let h = hash.digest(&[message]);
        let h = &h[..hash.len()];
        let info = hash.digest_info();
        let t_len = info.len() + h.len();
        // At least 8 bytes of padding.
        if em.len() < t_len + 11 {
            return false;
        }
        let ps_end = em.len() - t_len - 1;
        em[0] == 0
            && em[1] == 1
            && em[2..ps_end].iter().all(|&b| b == 0xff)
            && em[ps_end] == 0
            && &em[ps_end + 1..ps_end + 1 + info.len()] == info
            && &em[ps_end + 1 + info.len()..] == h
    }

    /// EMSA-PSS-VERIFY (RFC 8017 section 9.1.2) with MGF1 and a salt as long as the hash.
    fn pss_matches(&self, em: &[u8], hash: Hash, message: &[u8]) -> bool {
        let h_len = hash.len();
        let s_len = h_len;
        // emBits = modBits - 1: when that is a whole number of bytes, EM is one byte shorter
        // than the modulus and the byte before it must be zero.
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        let em = match em.len() - em_len {
            0 => em,
            _ if em[0] == 0 => &em[1..],
            _ => return false,
        };
        if em_len < h_len + s_len + 2 || em[em_len - 1] != 0xbc {
            return false;
        }
        let db_len = em_len - h_len - 1;
        let (masked_db, rest) = em.split_at(db_len);
        let h = &rest[..h_len];
        // The bits above emBits must be zero.
        let top_mask = 0xffu8 >> (8 * em_len - em_bits);
        if masked_db[0] & !top_mask != 0 {
            return false;
        }
        let mut db = masked_db.to_vec();
        // MGF1: block i of the mask is Hash(H || i as 4 bytes).
        for (counter, chunk) in (0u32..).zip(db.chunks_mut(h_len)) {
            let mask = hash.digest(&[h, &counter.to_be_bytes()]);
            for (d, m) in chunk.iter_mut().zip(mask) {
                *d ^= m;
            }
        }
        db[0] &= top_mask;
        let ps_len = db_len - s_len - 1;
        if db[..ps_len].iter().any(|&b| b != 0) || db[ps_len] != 1 {
            return false;
        }
        let m_hash = hash.digest(&[message]);
        let expected = hash.digest(&[&[0u8; 8], &m_hash[..h_len], &db[ps_len + 1..]]);
        &expected[..h_len] == h
    }
}

/// Big-endian bytes as `limbs` little-endian 32-bit limbs (the bytes fit).
fn from_be_bytes(bytes: &[u8], limbs: usize) -> Vec<u32> {
    let mut out = vec![0u32; limbs];
    for (i, &b) in bytes.iter().rev().enumerate() {
        out[i / 4] |= u32::from(b) << (8 * (i % 4));
    }
    out
}

/// Whether a < b (same length).
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a -= b (same length), wrapping.
fn sub_assign(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = d >> 63;
    }
}

/// a <<= 1, returning the bit shifted out.
fn shl1(a: &mut [u32]) -> u32 {
    let mut carry = 0;
    for x in a.iter_mut() {
        let next = *x >> 31;
        *x = *x << 1 | carry;
        carry = next;
    }
    carry
}

// The reference implementations are native dev-dependencies.
#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    //! Differential tests: the public operation against a reference bignum, and whole
    //! verifications against `ring` (the implementation this one replaced) on keys and
    //! signatures made by the `rsa` crate, valid and tampered.

    use super::*;
    use rand::{Rng, RngCore};
    use rsa::pkcs1v15::SigningKey as Pkcs1Signer;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::pss::SigningKey as PssSigner;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    use rsa::{BigUint, RsaPrivateKey};
    use std::sync::OnceLock;

    const SCHEMES: [Scheme; 6] = [
        Scheme::Pkcs1(Hash::Sha256),
        Scheme::Pkcs1(Hash::Sha384),
        Scheme::Pkcs1(Hash::Sha512),
        Scheme::Pss(Hash::Sha256),
        Scheme::Pss(Hash::Sha384),
        Scheme::Pss(Hash::Sha512),
    ];

    /// A test key: the `rsa` crate's (reference signer for any PSS salt length and e = 3),
    /// `ring`'s when it takes the key (fast signer), and ours.
    struct TestKey {
        private: RsaPrivateKey,
        ring: Option<ring::signature::RsaKeyPair>,
        ours: RsaKey,
    }

    /// Keys generated with `openssl genpkey` (key generation takes minutes in a debug build):
    /// 2048 bits (two, and one with e = 3), 3072 and 4096 bits, and sizes that are not a whole
    /// number of bytes (2049 bits: the PSS encoding is one byte shorter than the modulus;
    /// 2055). Signatures, messages and tampering are random on every run.
    fn keys() -> &'static [TestKey] {
        static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
        KEYS.get_or_init(|| {
            [
                (2048, &include_bytes!("testdata/rsa-2048-65537-a.pk8")[..]),
                (2048, include_bytes!("testdata/rsa-2048-65537-b.pk8")),
                (2048, include_bytes!("testdata/rsa-2048-3-e3.pk8")),
                (2049, include_bytes!("testdata/rsa-2049-65537-a.pk8")),
                (2055, include_bytes!("testdata/rsa-2055-65537-a.pk8")),
                (3072, include_bytes!("testdata/rsa-3072-65537-a.pk8")),
                (4096, include_bytes!("testdata/rsa-4096-65537-a.pk8")),
            ]
            .into_iter()
            .map(|(bits, der)| {
                let private = RsaPrivateKey::from_pkcs8_der(der).unwrap();
                let ours =
                    RsaKey::new(&private.n().to_bytes_be(), &private.e().to_bytes_be()).unwrap();
                assert_eq!(ours.bits, bits);
                let ring = ring::signature::RsaKeyPair::from_pkcs8(der).ok();
                TestKey {
                    private,
                    ring,
                    ours,
                }
            })
            .collect()
        })
    }

    fn ring_accepts(key: &TestKey, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
        use ring::signature as r;
        let params: &r::RsaParameters = match scheme {
            Scheme::Pkcs1(Hash::Sha256) => &r::RSA_PKCS1_2048_8192_SHA256,
            Scheme::Pkcs1(Hash::Sha384) => &r::RSA_PKCS1_2048_8192_SHA384,
            Scheme::Pkcs1(Hash::Sha512) => &r::RSA_PKCS1_2048_8192_SHA512,
            Scheme::Pss(Hash::Sha256) => &r::RSA_PSS_2048_8192_SHA256,
            Scheme::Pss(Hash::Sha384) => &r::RSA_PSS_2048_8192_SHA384,
            Scheme::Pss(Hash::Sha512) => &r::RSA_PSS_2048_8192_SHA512,
        };
        let (n, e) = (key.private.n().to_bytes_be(), key.private.e().to_bytes_be());
        r::RsaPublicKeyComponents { n: &n, e: &e }
            .verify(params, msg, sig)
            .is_ok()
    }

    /// A signature of `msg`; `salt`: the PSS salt length (ignored for PKCS#1 v1.5).
    fn sign(key: &TestKey, scheme: Scheme, msg: &[u8], salt: usize) -> Vec<u8> {
        use ring::signature as r;
        if let (Some(pair), true) = (&key.ring, salt == hash_of(scheme).len()) {
            let encoding: &dyn r::RsaEncoding = match scheme {
                Scheme::Pkcs1(Hash::Sha256) => &r::RSA_PKCS1_SHA256,
                Scheme::Pkcs1(Hash::Sha384) => &r::RSA_PKCS1_SHA384,
                Scheme::Pkcs1(Hash::Sha512) => &r::RSA_PKCS1_SHA512,
                Scheme::Pss(Hash::Sha256) => &r::RSA_PSS_SHA256,
                Scheme::Pss(Hash::Sha384) => &r::RSA_PSS_SHA384,
                Scheme::Pss(Hash::Sha512) => &r::RSA_PSS_SHA512,
            };
            let mut sig = vec![0u8; pair.public().modulus_len()];
            pair.sign(encoding, &ring::rand::SystemRandom::new(), msg, &mut sig)
                .unwrap();
            return sig;
        }
        let mut rng = rand::thread_rng();
        let k = key.private.clone();
        match scheme {
            Scheme::Pkcs1(Hash::Sha256) => Pkcs1Signer::<sha2::Sha256>::new(k).sign(msg).to_vec(),
            Scheme::Pkcs1(Hash::Sha384) => Pkcs1Signer::<sha2::Sha384>::new(k).sign(msg).to_vec(),
            Scheme::Pkcs1(Hash::Sha512) => Pkcs1Signer::<sha2::Sha512>::new(k).sign(msg).to_vec(),
            Scheme::Pss(Hash::Sha256) => PssSigner::<sha2::Sha256>::new_with_salt_len(k, salt)
                .sign_with_rng(&mut rng, msg)
                .to_vec(),
            Scheme::Pss(Hash::Sha384) => PssSigner::<sha2::Sha384>::new_with_salt_len(k, salt)
                .sign_with_rng(&mut rng, msg)
                .to_vec(),
            Scheme::Pss(Hash::Sha512) => PssSigner::<sha2::Sha512>::new_with_salt_len(k, salt)
                .sign_with_rng(&mut rng, msg)
                .to_vec(),
        }
    }

    fn hash_of(scheme: Scheme) -> Hash {
        match scheme {
            Scheme::Pkcs1(h) | Scheme::Pss(h) => h,
        }
    }

    #[test]
    fn public_operation_matches_a_reference_bignum() {
        let mut rng = rand::thread_rng();
        for bits in [2048usize, 2049, 2055, 2080, 3072, 4096, 8192] {
            for round in 0..6 {
                // A random odd modulus of exactly `bits` bits (RSAVP1 does not need primes).
                let mut n = vec![0u8; bits.div_ceil(8)];
                rng.fill_bytes(&mut n);
                let excess = n.len() * 8 - bits;
                n[0] &= 0xff >> excess;
                n[0] |= 0x80 >> excess;
                *n.last_mut().unwrap() |= 1;
                let e: u64 = match round {
                    0 => 3,
                    1 => 65537,
                    2 => RsaKey::MAX_EXPONENT,
                    _ => rng.gen_range(1u64..1 << 32) * 2 + 1,
                };
                let key = RsaKey::new(&n, &e.to_be_bytes()).unwrap();
                let big_n = BigUint::from_bytes_be(&n);
                for _ in 0..4 {
                    let mut s = vec![0u8; n.len()];
                    rng.fill_bytes(&mut s);
                    let big_s = BigUint::from_bytes_be(&s);
                    let expected = (big_s < big_n && big_s != BigUint::from(0u8))
                        .then(|| big_s.modpow(&BigUint::from(e), &big_n));
                    let got = key.public_op(&s).map(|m| BigUint::from_bytes_be(&m));
                    assert_eq!(got, expected, "{bits} bits, e = {e}");
                }
                // Edge values: 1, n - 1, n (refused), 0 (refused).
                let one = BigUint::from(1u8);
                for s in [
                    one.clone(),
                    &big_n - &one,
                    big_n.clone(),
                    BigUint::from(0u8),
                ] {
                    let mut bytes = s.to_bytes_be();
                    while bytes.len() < n.len() {
                        bytes.insert(0, 0);
                    }
                    let expected = (s < big_n && s != BigUint::from(0u8))
                        .then(|| s.modpow(&BigUint::from(e), &big_n));
                    let got = key.public_op(&bytes).map(|m| BigUint::from_bytes_be(&m));
                    assert_eq!(got, expected);
                }
            }
        }
    }

    #[test]
    fn valid_signatures_verify_like_ring() {
        let mut rng = rand::thread_rng();
        for key in keys() {
            for scheme in SCHEMES {
                for len in [0usize, 1, 64, 700] {
                    let mut msg = vec![0u8; len];
                    rng.fill_bytes(&mut msg);
                    let sig = sign(key, scheme, &msg, hash_of(scheme).len());
                    assert!(ring_accepts(key, scheme, &msg, &sig));
                    assert!(key.ours.verify(scheme, &msg, &sig), "{scheme:?}");
                    // The same signature under every other scheme (another hash, the other
                    // padding) fails, as in ring.
                    for other in SCHEMES.into_iter().filter(|&o| o != scheme) {
                        assert!(
                            !key.ours.verify(other, &msg, &sig),
                            "{scheme:?} as {other:?}"
                        );
                        assert!(!ring_accepts(key, other, &msg, &sig));
                    }
                }
            }
        }
    }

    #[test]
    fn tampered_signatures_fail_like_ring() {
        let mut rng = rand::thread_rng();
        for key in keys() {
            let n = key.private.n().to_bytes_be();
            for scheme in SCHEMES {
                let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9".to_vec();
                let sig = sign(key, scheme, &msg, hash_of(scheme).len());
                let mut cases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                // Bit flips anywhere in the signature.
                for _ in 0..24 {
                    let mut bad = sig.clone();
                    let bit = rng.gen_range(0..bad.len() * 8);
                    bad[bit / 8] ^= 1 << (bit % 8);
                    cases.push((msg.clone(), bad));
                }
                // Another message, one bit of the message flipped.
                let mut other = msg.clone();
                other[3] ^= 4;
                cases.push((other, sig.clone()));
                // s = n, s = n + 1, s = 0, all ones: not below n or zero.
                let n_plus_1 = (BigUint::from_bytes_be(&n) + 1u8).to_bytes_be();
                cases.push((msg.clone(), n.clone()));
                cases.push((msg.clone(), n_plus_1));
                cases.push((msg.clone(), vec![0; n.len()]));
                cases.push((msg.clone(), vec![0xff; n.len()]));
                // s + n (one byte longer), a leading zero, one byte short, empty.
                let mut longer = vec![0u8];
                longer.extend(&sig);
                cases.push((msg.clone(), longer));
                cases.push((msg.clone(), sig[1..].to_vec()));
                cases.push((msg.clone(), Vec::new()));
                let sum = BigUint::from_bytes_be(&sig) + BigUint::from_bytes_be(&n);
                cases.push((msg.clone(), sum.to_bytes_be()));
                for (m, s) in cases {
                    let ours = key.ours.verify(scheme, &m, &s);
                    assert_eq!(ours, ring_accepts(key, scheme, &m, &s), "{scheme:?}");
                    assert!(!ours, "{scheme:?}: a tampered signature verified");
                }
            }
        }
    }

    #[test]
    fn pss_salt_lengths_other_than_the_hash_length_fail_like_ring() {
        let msg = b"header.payload";
        // 2048 bits and 2049 bits (the shorter encoding).
        for key in [&keys()[0], &keys()[3]] {
            for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                let scheme = Scheme::Pss(hash);
                for salt in [0, 20, hash.len() - 1, hash.len(), hash.len() + 1] {
                    let sig = sign(key, scheme, msg, salt);
                    let ours = key.ours.verify(scheme, msg, &sig);
                    assert_eq!(ours, ring_accepts(key, scheme, msg, &sig), "salt {salt}");
                    assert_eq!(ours, salt == hash.len(), "{hash:?} salt {salt}");
                }
            }
        }
    }

    #[test]
    fn key_checks_are_kept() {
        let mut n = vec![0xc5u8; 256];
        n[255] = 0x01;
        let e = [1u8, 0, 1];
        assert!(RsaKey::new(&n, &e).is_ok());
        // Leading zeros do not count.
        let mut padded = vec![0u8; 3];
        padded.extend(&n);
        assert_eq!(RsaKey::new(&padded, &[0, 0, 1, 0, 1]).unwrap().bits, 2048);
        let short = &n[1..];
        assert!(RsaKey::new(short, &e)
            .unwrap_err()
            .contains("shorter than 2048"));
        assert!(RsaKey::new(&vec![0xc5; 1025], &e)
            .unwrap_err()
            .contains("longer than 8192"));
        let mut even = n.clone();
        even[255] = 2;
        assert!(RsaKey::new(&even, &e).unwrap_err().contains("even"));
        for bad in [&[1u8][..], &[2], &[1, 0, 0], &[2, 0, 0, 0, 1], &[1; 9]] {
            assert!(
                RsaKey::new(&n, bad).unwrap_err().contains("exponent"),
                "{bad:?}"
            );
        }
        assert!(RsaKey::new(&n, &[3]).is_ok());
        assert!(RsaKey::new(&n, &[1, 0xff, 0xff, 0xff, 0xff]).is_ok());
    }
}
