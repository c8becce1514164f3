//! Keys: the JWS algorithms, a JWKS parsed into typed verification keys, and signature checks.
//!
//! A key only ever verifies with algorithms of its own type: an RSA JWK becomes RSA verifiers, an
//! EC JWK an ECDSA verifier for its curve, the configured HMAC secret the HMAC verifiers. So an
//! RSA public key can never be used as an HMAC secret, whatever a token's header says. The
//! cryptography is pure Rust: [`crate::rsa`] for RSA (PKCS#1 v1.5 and PSS, with each key's
//! Montgomery context kept from the JWKS parse), `p256` / `p384` for ECDSA (each key parsed
//! once), `jwt-simple` for Ed25519 and HMAC.

use crate::ecdsa::{P256Key, P384Key};
use crate::rsa::{Hash, RsaKey, Scheme};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384};
use std::sync::Arc;

/// A JWS signature algorithm Palisade verifies. `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC SHA-256 (configured secret only).
    HS256,
    /// HMAC SHA-384 (configured secret only).
    HS384,
    /// HMAC SHA-512 (configured secret only).
    HS512,
}

impl Algorithm {
    /// The default: every public-key algorithm.
    pub const ASYMMETRIC: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The algorithm named `name` in a JWS header or configuration.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            _ => return None,
        })
    }

    /// Whether it is an HMAC algorithm.
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    }
}

/// One typed verification key.
#[derive(Clone)]
enum Verifier {
    /// RS256 to PS512: the key (shared by its algorithms) and the algorithm's scheme.
    Rsa(Arc<RsaKey>, Scheme),
    Es256(P256Key),
    Es384(P384Key),
    EdDsa(Ed25519PublicKey),
    Hs256(HS256Key),
    Hs384(HS384Key),
    Hs512(HS512Key),
}

/// A key usable with one algorithm.
#[derive(Clone)]
pub struct Key {
    /// The JWK's `kid`, if any.
    pub kid: Option<String>,
    /// The one algorithm this verifier checks.
    pub alg: Algorithm,
    verifier: Verifier,
}

/// Why a signature check failed (for debug logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError(pub String);

impl Key {
    /// Checks the token's signature (for EdDSA and HMAC through `jwt-simple`, also its
    /// structural and time checks with `options`; the caller checks the header and claims
    /// itself for every algorithm).
    pub fn verify(&self, token: &str, options: VerificationOptions) -> Result<(), VerifyError> {
        let o = Some(options);
        let result = match &self.verifier {
            Verifier::Rsa(k, scheme) => {
                let (signed, signature) = split_signature(token)?;
                return verified(k.verify(*scheme, signed.as_bytes(), &signature), "RSA");
            }
            // ECDSA without jwt-simple, which decoded the token and its claims a second time;
            // the same key parse and signature checks (crate::ecdsa).
            Verifier::Es256(k) => {
                let (signed, signature) = split_signature(token)?;
                let digest = Sha256::digest(signed.as_bytes());
                return verified(k.verify_prehash(&digest, &signature), "ECDSA");
            }
            Verifier::Es384(k) => {
                let (signed, signature) = split_signature(token)?;
                let digest = Sha384::digest(signed.as_bytes());
                return verified(k.verify_prehash(&digest, &signature), "ECDSA");
            }
            Verifier::EdDsa(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Verifier::Hs256(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Verifier::Hs384(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
            Verifier::Hs512(k) => k.verify_token::<NoCustomClaims>(token, o).map(drop),
        };
        result.map_err(|e| VerifyError(e.to_string()))
    }
}

/// A signature check's outcome as `verify` reports it.
fn verified(ok: bool, family: &str) -> Result<(), VerifyError> {
    ok.then_some(())
        .ok_or_else(|| VerifyError(format!("{family} signature did not verify")))
}

/// A compact JWS's signed part (`header.payload`) and its decoded signature.
fn split_signature(token: &str) -> Result<(&str, Vec<u8>), VerifyError> {
    let (signed, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| VerifyError("not a compact JWS".into()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VerifyError("signature is not base64url".into()))?;
    Ok((signed, signature))
}

/// The keys a token may be verified with.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// SHA-256 of the JWKS document the keys came from (to tell a changed set from a re-fetch).
    pub fingerprint: [u8; 32],
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(field: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = field
        .as_deref()
        .ok_or_else(|| format!("missing member `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("member `{name}` is not base64url"))
}

impl KeySet {
    /// Parses a configured JWKS (`{"keys": [...]}`), keeping the keys usable with
    /// `algorithms`. Keys of unknown types, curves, or with `use` other than `sig` are skipped;
    /// a document that is not a JWKS, or a known key with broken material, is an error (a
    /// configuration is fixed: fail closed). At least one key must remain.
    pub fn parse(json: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        Self::parse_with(json, algorithms, true)
    }

    /// Parses a fetched JWKS like [`KeySet::parse`], except that a key with broken or
    /// unsupported material (e.g. only an `x5c` chain) is skipped rather than failing the whole
    /// document: one odd key at the provider must not take every other key down.
    pub fn parse_fetched(json: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        Self::parse_with(json, algorithms, false)
    }

    fn parse_with(json: &[u8], algorithms: &[Algorithm], strict: bool) -> Result<KeySet, String> {
        let raw: RawJwks =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for (i, value) in raw.keys.into_iter().enumerate() {
            let added = serde_json::from_value::<RawJwk>(value)
                .map_err(|e| format!("keys[{i}]: not a JWK: {e}"))
                .and_then(|jwk| {
                    add_jwk(&mut keys, &jwk, algorithms).map_err(|e| format!("keys[{i}]: {e}"))
                });
            if let Err(e) = added {
                if strict {
                    return Err(e);
                }
            }
        }
        if keys.is_empty() {
            return Err("no key usable with the configured algorithms".into());
        }
        Ok(KeySet {
            keys,
            fingerprint: palisade_kit::secret::sha256(json),
        })
    }

    /// Adds HMAC verifiers for the configured HS algorithms.
    pub fn add_hmac(&mut self, secret: &[u8], algorithms: &[Algorithm]) {
        for &alg in algorithms {
            let verifier = match alg {
                Algorithm::HS256 => Verifier::Hs256(HS256Key::from_bytes(secret)),
                Algorithm::HS384 => Verifier::Hs384(HS384Key::from_bytes(secret)),
                Algorithm::HS512 => Verifier::Hs512(HS512Key::from_bytes(secret)),
                _ => continue,
            };
            self.keys.push(Key {
                kid: None,
                alg,
                verifier,
            });
        }
    }

    /// Adds every verifier of `other` (the configured HMAC keys to a fetched set).
    pub fn extend(&mut self, other: &KeySet) {
        self.keys.extend(other.keys.iter().cloned());
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of verifiers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys that may verify a token with this `alg` and `kid`: HMAC keys ignore `kid` (there
    /// is one configured secret); other keys carry the token's `kid` (tried first) or no `kid`
    /// at all (as Envoy's `jwt_authn` does; some providers publish keys without one).
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        let of_alg = move |k: &&Key| k.alg == alg;
        let exact = self
            .keys
            .iter()
            .filter(of_alg)
            .filter(move |k| alg.is_hmac() || kid.is_none() || k.kid.as_deref() == kid);
        let kidless = self
            .keys
            .iter()
            .filter(of_alg)
            .filter(move |k| !alg.is_hmac() && kid.is_some() && k.kid.is_none());
        exact.chain(kidless)
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn add_jwk(keys: &mut Vec<Key>, jwk: &RawJwk, algorithms: &[Algorithm]) -> Result<(), String> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(());
    }
    // A JWK's `alg`, when present, pins the key to that algorithm.
    let pinned = match &jwk.alg {
        Some(name) => match Algorithm::from_name(name) {
            Some(a) if !a.is_hmac() => Some(a),
            _ => return Ok(()),
        },
        None => None,
    };
    let allowed = |a: Algorithm| algorithms.contains(&a) && pinned.is_none_or(|p| p == a);
    let kid = jwk.kid.clone();
    let mut push = |alg: Algorithm, verifier: Verifier| {
        keys.push(Key {
            kid: kid.clone(),
            alg,
            verifier,
        })
    };
    let bad = |e: jwt_simple::Error| format!("invalid key material: {e}");
    match jwk.kty.as_str() {
        "RSA" => {
            let wanted: Vec<Algorithm> = Algorithm::ASYMMETRIC
                .into_iter()
                .filter(|a| a.is_rsa() && allowed(*a))
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            let public = Arc::new(RsaKey::new(&b64(&jwk.n, "n")?, &b64(&jwk.e, "e")?)?);
            for alg in wanted {
                let scheme = match alg {
                    Algorithm::RS256 => Scheme::Pkcs1(Hash::Sha256),
                    Algorithm::RS384 => Scheme::Pkcs1(Hash::Sha384),
                    Algorithm::RS512 => Scheme::Pkcs1(Hash::Sha512),
                    Algorithm::PS256 => Scheme::Pss(Hash::Sha256),
                    Algorithm::PS384 => Scheme::Pss(Hash::Sha384),
                    _ => Scheme::Pss(Hash::Sha512),
                };
                push(alg, Verifier::Rsa(public.clone(), scheme));
            }
        }
        "EC" => {
            let alg = match jwk.crv.as_deref() {
                Some("P-256") => Algorithm::ES256,
                Some("P-384") => Algorithm::ES384,
                _ => return Ok(()),
            };
            if !allowed(alg) {
                return Ok(());
            }
            let (x, y) = (b64(&jwk.x, "x")?, b64(&jwk.y, "y")?);
            let size = if alg == Algorithm::ES256 { 32 } else { 48 };
            if x.len() != size || y.len() != size {
                return Err("EC coordinates have the wrong length for the curve".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let v = if alg == Algorithm::ES256 {
                Verifier::Es256(P256Key::from_sec1_bytes(&point)?)
            } else {
                Verifier::Es384(P384Key::from_sec1_bytes(&point)?)
            };
            push(alg, v);
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") || !allowed(Algorithm::EdDSA) {
                return Ok(());
            }
            let x = b64(&jwk.x, "x")?;
            push(
                Algorithm::EdDSA,
                Verifier::EdDsa(Ed25519PublicKey::from_bytes(&x).map_err(bad)?),
            );
        }
        _ => {}
    }
    Ok(())
}
