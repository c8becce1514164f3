//! Validating one token: header, key choice, signature, then the registered claims; and
//! authorizing it: scopes and claim rules.

use crate::config::{ClaimRule, Config, Criteria};
use crate::keys::{Algorithm, KeySet};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::{Duration, UnixTimeStamp, VerificationOptions};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Tokens longer than this are rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// At most this many keys are tried for a token without `kid`.
const MAX_KEYS_WITHOUT_KID: usize = 4;

/// Why a token is not valid. Every variant is a 401 `invalid_token`; the variant is logged at
/// debug level (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url parts with a JSON header.
    Malformed,
    /// `alg` is not one of the configured algorithms (`none` never is).
    Algorithm(String),
    /// No key carries the token's `kid` (a JWKS refresh may help).
    UnknownKid,
    /// No key of the token's algorithm.
    NoKey,
    /// The signature (or `jwt-simple`'s structural checks) failed.
    Signature(String),
    /// The payload is not a JSON object.
    Payload,
    /// `iss` is not the configured issuer.
    Issuer,
    /// No `aud` value is accepted.
    Audience,
    /// `exp` is in the past (beyond the skew).
    Expired,
    /// `exp` is missing and required.
    NoExpiry,
    /// `nbf` is in the future (beyond the skew).
    NotYetValid,
    /// `iat` is in the future (beyond the skew).
    IssuedInFuture,
    /// The header has critical extensions (none is understood) or a `typ` that is not a JWT
    /// (or not `requiredType`).
    Header,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<Vec<Value>>,
}

/// A token that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    /// Its claims.
    pub claims: Map<String, Value>,
    /// `exp` in seconds, if present.
    pub exp: Option<u64>,
}

/// Validates `token` at `now_s` (seconds since the epoch) with `keys`.
pub fn validate(token: &str, keys: &KeySet, config: &Config, now_s: u64) -> Result<Valid, Invalid> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Invalid::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Invalid::Malformed)?;
    // The same header checks for every algorithm (jwt-simple makes them too for the ones it
    // verifies): no critical extension is understood, and `typ` must say JWT.
    if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Invalid::Header);
    }
    let typ_ok = match (&config.required_type, &header.typ) {
        (Some(required), Some(typ)) => typ.eq_ignore_ascii_case(required),
        (Some(_), None) => false,
        (None, Some(typ)) => {
            let upper = typ.to_ascii_uppercase();
            upper == "JWT" || upper.ends_with("+JWT")
        }
        (None, None) => true,
    };
    if !typ_ok {
        return Err(Invalid::Header);
    }
    let alg = Algorithm::from_name(&header.alg)
        .filter(|a| config.algorithms.contains(a))
        .ok_or_else(|| Invalid::Algorithm(header.alg.clone()))?;
    let kid = header.kid.as_deref();
    // A `kid` no key carries may be a key the provider added since the last fetch.
    let unknown_kid = kid.is_some_and(|k| !alg.is_hmac() && !keys.has_kid(k));
    let options = || VerificationOptions {
        time_tolerance: Some(Duration::from_secs(config.skew_s)),
        artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        required_signature_type: config.required_type.clone(),
        ..VerificationOptions::default()
    };
    let mut last = Invalid::NoKey;
    let mut verified = false;
    for key in keys.candidates(alg, kid).take(MAX_KEYS_WITHOUT_KID) {
        match key.verify(token, options()) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(e) => last = Invalid::Signature(e.0),
        }
    }
    if !verified {
        return Err(if unknown_kid {
            Invalid::UnknownKid
        } else {
            last
        });
    }
    // The signature covers the payload: decode it once more as a plain map, for every claim.
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Invalid::Payload)?;
    check_registered(&claims, config, now_s)
}

fn check_registered(
    claims: &Map<String, Value>,
    config: &Config,
    now_s: u64,
) -> Result<Valid, Invalid> {
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(Invalid::Issuer);
    }
    if !config.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => config.audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| config.audiences.iter().any(|c| c == a)),
            _ => false,
        };
        if !ok {
            return Err(Invalid::Audience);
        }
    }
    let time = |name: &str| -> Result<Option<u64>, Invalid> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Some(t as u64))
                .ok_or(Invalid::Payload),
        }
    };
    let exp = time("exp")?;
    match exp {
        Some(exp) if now_s > exp.saturating_add(config.skew_s) => return Err(Invalid::Expired),
        None if config.require_exp => return Err(Invalid::NoExpiry),
        _ => {}
    }
    if let Some(nbf) = time("nbf")? {
        if now_s.saturating_add(config.skew_s) < nbf {
            return Err(Invalid::NotYetValid);
        }
    }
    if let Some(iat) = time("iat")? {
        if now_s.saturating_add(config.skew_s) < iat {
            return Err(Invalid::IssuedInFuture);
        }
    }
    Ok(Valid {
        claims: claims.clone(),
        exp,
    })
}

/// Why a valid token is not authorized (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// The required scopes are not granted.
    Scope,
    /// A claim rule failed.
    Claims,
}

/// The scopes a token grants: `scope` (space-separated) and `scp` (array or string).
pub fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
            Some(Value::Array(list)) => out.extend(list.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// Checks scopes and claim rules.
pub fn authorize(claims: &Map<String, Value>, config: &Config) -> Result<(), Forbidden> {
    if !config.scopes.is_empty() {
        let granted = granted_scopes(claims);
        let has = |s: &String| granted.contains(&s.as_str());
        let ok = match config.criteria {
            Criteria::AND => config.scopes.iter().all(has),
            Criteria::OR => config.scopes.iter().any(has),
        };
        if !ok {
            return Err(Forbidden::Scope);
        }
    }
    if !config.claims.iter().all(|rule| claim_matches(claims, rule)) {
        return Err(Forbidden::Claims);
    }
    Ok(())
}

fn claim_matches(claims: &Map<String, Value>, rule: &ClaimRule) -> bool {
    match claims.get(&rule.name) {
        Some(Value::Array(values)) => values.iter().any(|v| rule.any_of.contains(v)),
        Some(v) => rule.any_of.contains(v),
        None => false,
    }
}

/// A claim as a header value: strings as they are, numbers and booleans in JSON form; other
/// values (objects, arrays, null) are not forwarded.
pub fn header_value(claim: &Value) -> Option<String> {
    match claim {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
    .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
}
