//! Stored password hashes: recognising the formats at configure time and verifying a presented
//! password against one in constant time.
//!
//! The hashing itself is done by well-kept crates (`bcrypt`, RustCrypto's `sha-crypt` and
//! `sha1`); this module only parses the stored strings, so that a malformed hash fails the
//! configuration instead of a request, and compares results with `palisade_kit::secret::ct_eq`.
//! The strings are parsed here rather than by the crates' `*_check` helpers because those panic
//! on some malformed inputs (`sha-crypt` 0.5 `decode_sha256`) or accept more than we want (the
//! `bcrypt` crate accepts `$2x$` and empty `$`-separated parts).

use base64::Engine;
use palisade_kit::secret::ct_eq;
use sha1::{Digest, Sha1};
use sha_crypt::{sha256_crypt_b64, sha512_crypt_b64, Sha256Params, Sha512Params};

/// The alphabet of bcrypt's and crypt(3)'s base64 variants (in different orders, same set).
fn is_crypt_b64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// A stored password hash, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`): the whole string, verified by the `bcrypt` crate (which
    /// compares in constant time). Only the first 72 bytes of a password count, as in every
    /// bcrypt implementation.
    Bcrypt {
        /// The hash string as configured.
        encoded: String,
        /// The cost parameter (4-31).
        cost: u32,
    },
    /// SHA-256-crypt (`$5$`) or SHA-512-crypt (`$6$`).
    ShaCrypt {
        /// 256 or 512.
        bits: u16,
        /// Rounds (1,000-999,999,999; 5,000 when the string does not say).
        rounds: usize,
        /// The salt (at most 16 bytes).
        salt: String,
        /// The crypt-base64 digest (43 or 86 characters).
        digest: String,
    },
    /// `{SHA}`: base64 of the unsalted SHA-1 of the password (Apache `htpasswd -s`, the only
    /// format Envoy's native filter knows). Accepted for compatibility, with a warning.
    Sha1([u8; 20]),
}

// Never print a hash, not even in debug output.
impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.format_name())
    }
}

impl PasswordHash {
    /// Parses a stored hash. The error says what is wrong without repeating the hash.
    pub fn parse(stored: &str) -> Result<Self, String> {
        if let Some(rest) = stored.strip_prefix("{SHA}") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "the {SHA} hash is not valid base64".to_owned())?;
            let digest: [u8; 20] = bytes
                .try_into()
                .map_err(|_| "the {SHA} hash does not hold a 20-byte SHA-1 digest".to_owned())?;
            return Ok(PasswordHash::Sha1(digest));
        }
        if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
            .iter()
            .find_map(|prefix| stored.strip_prefix(prefix))
        {
            return parse_bcrypt(stored, rest);
        }
        if let Some(rest) = stored.strip_prefix("$5$") {
            return parse_sha_crypt(256, rest);
        }
        if let Some(rest) = stored.strip_prefix("$6$") {
            return parse_sha_crypt(512, rest);
        }
        Err(format!(
            "unsupported password hash format ({}); use bcrypt (`htpasswd -B`), SHA-512-crypt \
             (`htpasswd -5`, `openssl passwd -6`), SHA-256-crypt (`htpasswd -2`, `openssl passwd \
             -5`) or {{SHA}}",
            describe_unsupported(stored)
        ))
    }

    /// The format's name, for logs and errors.
    pub fn format_name(&self) -> &'static str {
        match self {
            PasswordHash::Bcrypt { .. } => "bcrypt",
            PasswordHash::ShaCrypt { bits: 256, .. } => "SHA-256-crypt",
            PasswordHash::ShaCrypt { .. } => "SHA-512-crypt",
            PasswordHash::Sha1(_) => "{SHA}",
        }
    }

    /// A rough cost of one verification in nanoseconds (measured natively on x86-64 with this
    /// crate's release profile; wasm is slower but in about the same proportions). Used to
    /// pick a representative hash for timing equalisation, so only the order matters.
    pub fn work(&self) -> u64 {
        match self {
            PasswordHash::Bcrypt { cost, .. } => (1u64 << (*cost).min(40)).saturating_mul(86_000),
            PasswordHash::ShaCrypt { rounds, bits, .. } => {
                let per_round = if *bits == 256 { 370 } else { 420 };
                (*rounds as u64).saturating_mul(per_round)
            }
            PasswordHash::Sha1(_) => 1_000,
        }
    }

    /// Whether `password` matches. Results are compared in constant time; an error inside a
    /// hashing crate counts as a mismatch.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt { encoded, .. } => {
                bcrypt::verify(password, encoded).unwrap_or(false)
            }
            PasswordHash::ShaCrypt {
                bits: 256,
                rounds,
                salt,
                digest,
            } => Sha256Params::new(*rounds)
                .ok()
                .and_then(|p| sha256_crypt_b64(password, salt.as_bytes(), &p).ok())
                .is_some_and(|computed| ct_eq(computed.as_bytes(), digest.as_bytes())),
            PasswordHash::ShaCrypt {
                rounds,
                salt,
                digest,
                ..
            } => Sha512Params::new(*rounds)
                .ok()
                .and_then(|p| sha512_crypt_b64(password, salt.as_bytes(), &p).ok())
                .is_some_and(|computed| ct_eq(computed.as_bytes(), digest.as_bytes())),
            PasswordHash::Sha1(expected) => ct_eq(&Sha1::digest(password), expected),
        }
    }
}

/// `$2y$10$<22 salt chars><31 digest chars>`.
fn parse_bcrypt(stored: &str, rest: &str) -> Result<PasswordHash, String> {
    let (cost, body) = rest
        .split_once('$')
        .ok_or_else(|| "the bcrypt hash has no cost".to_owned())?;
    if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the bcrypt cost must be two digits".into());
    }
    let cost: u32 = cost
        .parse()
        .map_err(|_| "the bcrypt cost must be two digits".to_owned())?;
    if !(4..=31).contains(&cost) {
        return Err(format!("the bcrypt cost must be 4-31, got {cost}"));
    }
    if body.len() != 53 || !is_crypt_b64(body) {
        return Err(
            "the bcrypt salt and digest must be 53 characters of bcrypt's base64 alphabet".into(),
        );
    }
    // The salt must decode to 16 bytes and the digest to 23: the same checks the crate makes
    // when verifying, done once here so a request never meets them.
    let (salt, digest) = body.split_at(22);
    let salt_ok = bcrypt::BASE_64.decode(salt).is_ok_and(|s| s.len() == 16);
    let digest_ok = bcrypt::BASE_64.decode(digest).is_ok_and(|d| d.len() == 23);
    if !salt_ok || !digest_ok {
        return Err("the bcrypt salt or digest is not valid bcrypt base64".into());
    }
    Ok(PasswordHash::Bcrypt {
        encoded: stored.to_owned(),
        cost,
    })
}

/// `[rounds=<n>$]<salt>$<digest>` after `$5$` / `$6$`.
fn parse_sha_crypt(bits: u16, rest: &str) -> Result<PasswordHash, String> {
    let name = if bits == 256 {
        "SHA-256-crypt"
    } else {
        "SHA-512-crypt"
    };
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(after) => {
            let (n, rest) = after
                .split_once('$')
                .ok_or_else(|| format!("the {name} hash has no salt"))?;
            let rounds: usize = n
                .parse()
                .map_err(|_| format!("the {name} rounds must be a number"))?;
            if !(1_000..=999_999_999).contains(&rounds) {
                return Err(format!(
                    "the {name} rounds must be 1000-999999999, got {rounds}"
                ));
            }
            (rounds, rest)
        }
        None => (5_000, rest),
    };
    let (salt, digest) = rest
        .split_once('$')
        .ok_or_else(|| format!("the {name} hash has no digest"))?;
    if salt.len() > 16 {
        return Err(format!("the {name} salt is longer than 16 characters"));
    }
    if salt.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("the {name} salt contains control characters"));
    }
    let expected_len = if bits == 256 { 43 } else { 86 };
    if digest.len() != expected_len || !is_crypt_b64(digest) {
        return Err(format!(
            "the {name} digest must be {expected_len} characters of crypt's base64 alphabet"
        ));
    }
    Ok(PasswordHash::ShaCrypt {
        bits,
        rounds,
        salt: salt.to_owned(),
        digest: digest.to_owned(),
    })
}

/// Names a format we do not accept, without echoing the hash.
fn describe_unsupported(stored: &str) -> String {
    if stored.starts_with("$apr1$") {
        "Apache MD5 `$apr1$`, htpasswd's old default".into()
    } else if stored.starts_with("$1$") {
        "MD5-crypt `$1$`".into()
    } else if stored.starts_with("$2x$") || stored.starts_with("$2$") {
        "a legacy bcrypt variant".into()
    } else if stored.starts_with("$argon2") {
        "Argon2".into()
    } else if stored.is_empty() {
        "empty".into()
    } else if stored.starts_with('$') {
        "an unknown `$...$` scheme".into()
    } else {
        "plain text or DES crypt".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with Apache htpasswd 2.4 and OpenSSL 3.0 (see tests/it/basic_auth.rs for the
    // real-Envoy tests, which generate fresh hashes with the same tools).
    const BCRYPT: &str = "$2y$10$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nlu"; // pa:ss
    const SHA256: &str = "$5$JqV.gQp1xVn3/3hJ$afKt2v8DDzmfs071UTFEhVrNEUvIxiIDDySuxnRYrX3"; // secret
    const SHA512_ROUNDS: &str = "$6$rounds=10000$hMiwNZqifJS2UyrA$EYIhIaPlD/2Gik/genz1UcsMiPQSP1fyInN6qBK8wzz/8PRb3HEqaWwMQezNgWc5Oj8U/f.tltdlmqHbHTdsY."; // secret
    const SHA512: &str = "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"; // secret
    const SHA1: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="; // secret
    const BCRYPT_UTF8: &str = "$2y$04$ywA7T2ioj6opfU5tLslDiOuVRLjn3aru86.kAoznWJcyo0K5KspNm"; // pässwörd

    #[test]
    fn verifies_every_supported_format() {
        for (stored, password, name) in [
            (BCRYPT, "pa:ss", "bcrypt"),
            (SHA256, "secret", "SHA-256-crypt"),
            (SHA512_ROUNDS, "secret", "SHA-512-crypt"),
            (SHA512, "secret", "SHA-512-crypt"),
            (SHA1, "secret", "{SHA}"),
            (BCRYPT_UTF8, "pässwörd", "bcrypt"),
        ] {
            let h = PasswordHash::parse(stored).unwrap();
            assert_eq!(h.format_name(), name);
            assert!(h.verify(password.as_bytes()), "{name}");
            assert!(!h.verify(b"wrong"), "{name}");
            assert!(!h.verify(b""), "{name}");
            assert!(!h.verify(format!("{password}x").as_bytes()), "{name}");
        }
    }

    #[test]
    fn bcrypt_prefixes_are_equivalent_and_legacy_ones_refused() {
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let h = PasswordHash::parse(&BCRYPT.replacen("$2y$", prefix, 1)).unwrap();
            assert!(h.verify(b"pa:ss"), "{prefix}");
        }
        let err = PasswordHash::parse(&BCRYPT.replacen("$2y$", "$2x$", 1)).unwrap_err();
        assert!(err.contains("legacy bcrypt"), "{err}");
    }

    #[test]
    fn rejects_malformed_hashes_without_echoing_them() {
        let cases = [
            "$apr1$abc$def",
            "$1$abc$def",
            "plaintext",
            "",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "$2y$10$short",
            "$2y$1$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nlu",
            "$2y$03$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nlu",
            "$2y$32$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nlu",
            "$2y$10$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nl!",
            "$2y$$10$DZuF.YbB7aQtN29MploS7e5arToM7GaDQ08a.MCj3rvSet0Mq5nlu",
            "$5$JqV.gQp1xVn3/3hJ$afKt2v8DDzmfs071UTFEhVrNEUvIxiIDDySuxnRYrX",
            "$5$JqV.gQp1xVn3/3hJ",
            "$6$rounds=999$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1",
            "$6$rounds=x$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1",
            "$6$abcdefghijklmnopq$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1",
            "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1$",
            "{SHA}not base64!",
            "{SHA}c2hvcnQ=",
            "{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        ];
        for stored in cases {
            let err = PasswordHash::parse(stored).unwrap_err();
            if stored.len() > 12 {
                assert!(!err.contains(&stored[8..]), "{err} echoes {stored}");
            }
        }
        assert!(PasswordHash::parse("$apr1$x$y")
            .unwrap_err()
            .contains("$apr1$"));
        assert!(PasswordHash::parse("hunter2")
            .unwrap_err()
            .contains("plain text"));
    }

    #[test]
    fn bcrypt_counts_only_72_bytes_like_every_implementation() {
        let long = "a".repeat(72);
        let stored = bcrypt::hash_with_salt(&long, 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let h = PasswordHash::parse(&stored).unwrap();
        assert!(h.verify(long.as_bytes()));
        assert!(h.verify(format!("{long}ignored").as_bytes()));
        assert!(!h.verify(&long.as_bytes()[..71]));
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let h = PasswordHash::parse(SHA512).unwrap();
        assert_eq!(format!("{h:?}"), "SHA-512-crypt");
    }

    #[test]
    fn work_orders_formats_by_cost() {
        let b = PasswordHash::parse(BCRYPT).unwrap();
        let s = PasswordHash::parse(SHA512).unwrap();
        let one = PasswordHash::parse(SHA1).unwrap();
        assert!(b.work() > s.work() && s.work() > one.work());
    }
}
