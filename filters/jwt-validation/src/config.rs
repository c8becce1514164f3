//! The JSON configuration of `jwt-validation` and its compiled form.

use crate::keys::{Algorithm, KeySet};
use palisade_kit::config::parse;
use palisade_kit::selector::Selector;
use palisade_kit::{ConfigError, Denial, DenialOverride};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    jwks: Option<RawJwks>,
    #[serde(default)]
    discovery: bool,
    local_jwks: Option<Value>,
    hmac_secret: Option<String>,
    algorithms: Option<Vec<String>>,
    #[serde(default = "default_skew")]
    clock_skew_seconds: u64,
    #[serde(default = "yes")]
    require_expiration: bool,
    required_type: Option<String>,
    #[serde(default = "default_source")]
    token_source: Selector,
    #[serde(default)]
    required_scopes: Vec<String>,
    #[serde(default)]
    scope_criteria: Criteria,
    #[serde(default)]
    required_claims: Map<String, Value>,
    #[serde(default)]
    claims_to_headers: Map<String, Value>,
    #[serde(default = "yes")]
    forward_token: bool,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "default_cache_entries")]
    cache_entries: usize,
    #[serde(default = "palisade_kit::cors::allow_preflight_default")]
    allow_cors_preflight: bool,
    denial: Option<DenialOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawJwks {
    cluster: String,
    uri: Option<String>,
    #[serde(default = "default_cache_seconds")]
    cache_seconds: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
    #[serde(default = "default_max_stale")]
    max_stale_seconds: u64,
    #[serde(default = "default_min_refresh")]
    min_refresh_seconds: u64,
}

/// How several required scopes combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Criteria {
    /// Every required scope must be granted.
    #[default]
    AND,
    /// One of the required scopes is enough.
    OR,
}

fn yes() -> bool {
    true
}
fn default_skew() -> u64 {
    60
}
fn default_source() -> Selector {
    Selector::Header("authorization".into())
}
fn default_realm() -> String {
    "api".into()
}
fn default_cache_entries() -> usize {
    1000
}
fn default_cache_seconds() -> u64 {
    600
}
fn default_timeout_ms() -> u32 {
    5000
}
fn default_max_stale() -> u64 {
    86_400
}
fn default_min_refresh() -> u64 {
    30
}

/// Where a document is fetched (the kit's fetch endpoint).
pub use palisade_kit::fetch::Endpoint;

/// Remote key settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The JWKS endpoint; with discovery, the discovery document's endpoint.
    pub endpoint: Endpoint,
    /// Whether `endpoint` is the OpenID discovery document rather than the JWKS.
    pub discovery: bool,
    /// Keys are fresh this long after a fetch; a refresh starts at 80 % of it.
    pub cache_ms: u64,
    /// Timeout of one fetch.
    pub timeout_ms: u32,
    /// Keys stay usable this long after they stopped being fresh, while fetches fail.
    pub max_stale_ms: u64,
    /// A token with an unknown `kid` triggers a refresh at most this often.
    pub min_refresh_ms: u64,
    /// The name shared data keys of this JWKS are derived from.
    pub name: String,
}

/// A rule on one claim: the claim (or one of its elements) must equal one of `any_of`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    /// The claim name.
    pub name: String,
    /// Accepted values.
    pub any_of: Vec<Value>,
}

/// The prepared denials.
#[derive(Debug, Clone)]
pub struct Denials {
    /// No token: 401 with `WWW-Authenticate: Bearer realm=...`.
    pub missing: Denial,
    /// Several tokens (repeated header lines, query parameters or cookies, or several
    /// credentials in one `Authorization` value): 400 with `error="invalid_request"`
    /// (RFC 6750 §3.1).
    pub ambiguous: Denial,
    /// Invalid token: 401 with `error="invalid_token"`.
    pub invalid: Denial,
    /// Scopes not granted: 403 with `error="insufficient_scope"`.
    pub scope: Denial,
    /// A required claim rule failed: 403 with `error="insufficient_scope"`.
    pub claims: Denial,
    /// No keys were ever loaded (or they are staler than allowed): 503.
    pub unavailable: Denial,
}

/// The compiled configuration.
pub struct Config {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values (empty: not checked).
    pub audiences: Vec<String>,
    /// Remote JWKS, if configured.
    pub remote: Option<Remote>,
    /// Keys given in the configuration (JWKS and/or HMAC secret).
    pub local: KeySet,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Tolerance on `exp`, `nbf` and `iat`, in seconds.
    pub skew_s: u64,
    /// Whether a token without `exp` is rejected.
    pub require_exp: bool,
    /// The JOSE header `typ` a token must have (compared case-insensitively), e.g. `at+jwt`
    /// (RFC 9068 access tokens).
    pub required_type: Option<String>,
    /// Where the token is read from.
    pub source: Selector,
    /// Required scopes.
    pub scopes: Vec<String>,
    /// How they combine.
    pub criteria: Criteria,
    /// Required claims.
    pub claims: Vec<ClaimRule>,
    /// Claim name to request header name.
    pub claims_to_headers: Vec<(String, String)>,
    /// Whether the token goes upstream.
    pub forward_token: bool,
    /// Entries of the per-VM verification cache (0 disables it).
    pub cache_entries: usize,
    /// Whether CORS preflights pass unauthenticated.
    pub allow_preflight: bool,
    /// The denials.
    pub denials: Denials,
}

/// Splits `http://host:port/path?q` into authority and path. Only `http` and `https` are accepted
/// (TLS is the cluster's business in Envoy).
pub fn parse_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let valid = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
        && path.chars().all(|c| c.is_ascii_graphic());
    valid.then(|| (authority.to_owned(), path.to_owned()))
}

impl Config {
    /// Parses and validates a configuration.
    pub fn compile(json: &[u8]) -> Result<Config, ConfigError> {
        let raw: Raw = parse(json)?;
        if raw.issuer.is_empty() {
            return Err(ConfigError::at("issuer", "must not be empty"));
        }
        if raw.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::at("audiences", "audiences must not be empty"));
        }
        if raw.clock_skew_seconds > 3600 {
            return Err(ConfigError::at("clockSkewSeconds", "must be at most 3600"));
        }
        if raw
            .required_type
            .as_deref()
            .is_some_and(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::at(
                "requiredType",
                "expected a media type such as at+jwt",
            ));
        }
        if raw.cache_entries > 100_000 {
            return Err(ConfigError::at("cacheEntries", "must be at most 100000"));
        }
        let algorithms = match &raw.algorithms {
            None => Algorithm::ASYMMETRIC.to_vec(),
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::at("algorithms", "must not be empty"));
                }
                let mut out = Vec::new();
                for (i, name) in list.iter().enumerate() {
                    let alg = Algorithm::from_name(name).ok_or_else(|| {
                        ConfigError::at(
                            format!("algorithms[{i}]"),
                            format!(
                                "unsupported algorithm {name:?} (`none` is never accepted); \
                                 expected one of RS256, RS384, RS512, PS256, PS384, PS512, \
                                 ES256, ES384, EdDSA, HS256, HS384, HS512"
                            ),
                        )
                    })?;
                    if alg.is_hmac() && raw.hmac_secret.is_none() {
                        return Err(ConfigError::at(
                            format!("algorithms[{i}]"),
                            format!("{name} needs `hmacSecret`"),
                        ));
                    }
                    if !out.contains(&alg) {
                        out.push(alg);
                    }
                }
                out
            }
        };
        let mut local = KeySet::default();
        if let Some(jwks) = &raw.local_jwks {
            let text = match jwks {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            local = KeySet::parse(text.as_bytes(), &algorithms)
                .map_err(|e| ConfigError::at("localJwks", e))?;
        }
        if let Some(secret) = &raw.hmac_secret {
            if secret.len() < 32 {
                return Err(ConfigError::at(
                    "hmacSecret",
                    "an HMAC secret must be at least 32 bytes long",
                ));
            }
            if !algorithms.iter().any(|a| a.is_hmac()) {
                return Err(ConfigError::at(
                    "hmacSecret",
                    "list HS256, HS384 or HS512 in `algorithms` to use an HMAC secret",
                ));
            }
            local.add_hmac(secret.as_bytes(), &algorithms);
        }
        let remote = match raw.jwks {
            None => {
                if raw.discovery {
                    return Err(ConfigError::at(
                        "jwks",
                        "`discovery: true` needs `jwks.cluster`",
                    ));
                }
                if raw.local_jwks.is_none() && raw.hmac_secret.is_none() {
                    return Err(ConfigError::at(
                        "jwks",
                        "configure one key source: `jwks`, `localJwks` or `hmacSecret`",
                    ));
                }
                None
            }
            Some(j) => {
                if raw.local_jwks.is_some() {
                    return Err(ConfigError::at(
                        "localJwks",
                        "use either `jwks` (fetched) or `localJwks`, not both",
                    ));
                }
                if j.cluster.is_empty() {
                    return Err(ConfigError::at("jwks.cluster", "must not be empty"));
                }
                let uri = if raw.discovery {
                    if j.uri.is_some() {
                        return Err(ConfigError::at(
                            "jwks.uri",
                            "with `discovery: true` the JWKS URI comes from the discovery document",
                        ));
                    }
                    format!(
                        "{}/.well-known/openid-configuration",
                        raw.issuer.trim_end_matches('/')
                    )
                } else {
                    j.uri.clone().ok_or_else(|| {
                        ConfigError::at("jwks.uri", "missing (or set `discovery: true`)")
                    })?
                };
                let path = if raw.discovery { "issuer" } else { "jwks.uri" };
                let (authority, req_path) = parse_uri(&uri)
                    .ok_or_else(|| ConfigError::at(path, format!("not an http(s) URI: {uri:?}")))?;
                if !(1..=31_536_000).contains(&j.cache_seconds) {
                    return Err(ConfigError::at("jwks.cacheSeconds", "must be 1-31536000"));
                }
                if !(1..=60_000).contains(&j.timeout_ms) {
                    return Err(ConfigError::at("jwks.timeoutMs", "must be 1-60000"));
                }
                if j.max_stale_seconds > 31_536_000 {
                    return Err(ConfigError::at(
                        "jwks.maxStaleSeconds",
                        "must be at most 31536000",
                    ));
                }
                let name = format!(
                    "{:016x}",
                    palisade_kit::shared::stable_hash(format!("{}\n{uri}", j.cluster).as_bytes())
                );
                Some(Remote {
                    endpoint: Endpoint {
                        cluster: j.cluster,
                        authority,
                        path: req_path,
                    },
                    discovery: raw.discovery,
                    cache_ms: j.cache_seconds * 1000,
                    timeout_ms: j.timeout_ms,
                    max_stale_ms: j.max_stale_seconds * 1000,
                    min_refresh_ms: j.min_refresh_seconds * 1000,
                    name,
                })
            }
        };
        if raw.scope_criteria == Criteria::OR && raw.required_scopes.is_empty() {
            return Err(ConfigError::at(
                "scopeCriteria",
                "OR needs at least one of `requiredScopes`",
            ));
        }
        for (i, s) in raw.required_scopes.iter().enumerate() {
            if s.is_empty() || s.contains(' ') {
                return Err(ConfigError::at(
                    format!("requiredScopes[{i}]"),
                    "a scope is one non-empty word",
                ));
            }
        }
        let mut claims = Vec::new();
        for (name, expected) in &raw.required_claims {
            let any_of = match expected {
                Value::Array(values) if !values.is_empty() => values.clone(),
                Value::Array(_) => Vec::new(),
                other => vec![other.clone()],
            };
            if any_of.is_empty() || any_of.iter().any(|v| v.is_object() || v.is_array()) {
                return Err(ConfigError::at(
                    format!("requiredClaims.{name}"),
                    "expected a string, number or boolean, or a non-empty list of them",
                ));
            }
            claims.push(ClaimRule {
                name: name.clone(),
                any_of,
            });
        }
        let mut claims_to_headers = Vec::new();
        for (claim, header) in &raw.claims_to_headers {
            let header = header
                .as_str()
                .filter(|h| is_header_name(h))
                .ok_or_else(|| {
                    ConfigError::at(format!("claimsToHeaders.{claim}"), "expected a header name")
                })?;
            claims_to_headers.push((claim.clone(), header.to_ascii_lowercase()));
        }
        if !raw
            .realm
            .chars()
            .all(|c| (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\')
        {
            return Err(ConfigError::at(
                "realm",
                "printable ASCII without quotes or backslashes",
            ));
        }
        let denials = denials(&raw.realm, &raw.required_scopes, raw.denial.as_ref())?;
        Ok(Config {
            issuer: raw.issuer,
            audiences: raw.audiences,
            remote,
            local,
            algorithms,
            skew_s: raw.clock_skew_seconds,
            require_exp: raw.require_expiration,
            required_type: raw.required_type,
            source: raw.token_source,
            scopes: raw.required_scopes,
            criteria: raw.scope_criteria,
            claims,
            claims_to_headers,
            forward_token: raw.forward_token,
            cache_entries: raw.cache_entries,
            allow_preflight: raw.allow_cors_preflight,
            denials,
        })
    }
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && !h.starts_with(':')
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn denials(
    realm: &str,
    scopes: &[String],
    with: Option<&DenialOverride>,
) -> Result<Denials, ConfigError> {
    let challenge = |error: Option<&str>| match error {
        None => format!("Bearer realm=\"{realm}\""),
        Some("insufficient_scope") if !scopes.is_empty() => format!(
            "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
            scopes.join(" ")
        ),
        Some(e) => format!("Bearer realm=\"{realm}\", error=\"{e}\""),
    };
    let d = |denial: Denial| denial.overridden(with, "denial");
    Ok(Denials {
        missing: d(
            Denial::new(401, "missing_token", "An access token is required.")
                .with_header("www-authenticate", &challenge(None)),
        )?,
        ambiguous: d(
            Denial::new(400, "invalid_request", "Send exactly one access token.")
                .with_header("www-authenticate", &challenge(Some("invalid_request"))),
        )?,
        invalid: d(Denial::new(
            401,
            "invalid_token",
            "The access token is invalid or expired.",
        )
        .with_header("www-authenticate", &challenge(Some("invalid_token"))))?,
        scope: d(Denial::new(
            403,
            "insufficient_scope",
            "The access token does not grant the required scopes.",
        )
        .with_header("www-authenticate", &challenge(Some("insufficient_scope"))))?,
        claims: d(Denial::new(
            403,
            "claims_not_satisfied",
            "The access token does not satisfy the required claims.",
        )
        .with_header("www-authenticate", &challenge(Some("insufficient_scope"))))?,
        unavailable: d(Denial::new(
            503,
            "jwks_unavailable",
            "The keys to validate access tokens are not available.",
        )
        .with_header("retry-after", "5"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        match Config::compile(json.as_bytes()) {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e,
        }
    }

    const JWKS: &str = r#""jwks": {"cluster": "idp", "uri": "http://127.0.0.1:4000/jwks"}"#;

    #[test]
    fn minimal_remote_config_has_the_documented_defaults() {
        let c = Config::compile(format!(r#"{{"issuer": "http://i", {JWKS}}}"#).as_bytes()).unwrap();
        let r = c.remote.unwrap();
        assert_eq!(r.endpoint.cluster, "idp");
        assert_eq!(r.endpoint.authority, "127.0.0.1:4000");
        assert_eq!(r.endpoint.path, "/jwks");
        assert_eq!(
            (r.cache_ms, r.timeout_ms, r.max_stale_ms),
            (600_000, 5000, 86_400_000)
        );
        assert_eq!(c.skew_s, 60);
        assert!(c.require_exp && c.forward_token && c.allow_preflight);
        assert_eq!(c.source, Selector::Header("authorization".into()));
        assert_eq!(c.algorithms, Algorithm::ASYMMETRIC.to_vec());
        assert_eq!(c.denials.invalid.status(), 401);
        let h: Vec<_> = c.denials.invalid.headers().collect();
        assert!(h.contains(&(
            "www-authenticate",
            "Bearer realm=\"api\", error=\"invalid_token\""
        )));
    }

    #[test]
    fn discovery_derives_the_well_known_uri() {
        let c = Config::compile(
            br#"{"issuer": "http://127.0.0.1:9/", "discovery": true, "jwks": {"cluster": "idp"}}"#,
        )
        .unwrap();
        let r = c.remote.unwrap();
        assert!(r.discovery);
        assert_eq!(r.endpoint.path, "/.well-known/openid-configuration");
    }

    #[test]
    fn bad_configurations_name_the_field() {
        assert!(err("{}").message.contains("issuer"));
        assert_eq!(err(r#"{"issuer": "x"}"#).path, "jwks");
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "algorithms": ["RS256", "none"]}}"#
            ))
            .path,
            "algorithms[1]"
        );
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "algorithms": ["HS256"]}}"#
            ))
            .path,
            "algorithms[0]"
        );
        assert_eq!(
            err(r#"{"issuer": "x", "jwks": {"cluster": "idp", "uri": "ftp://a/b"}}"#).path,
            "jwks.uri"
        );
        assert_eq!(
            err(r#"{"issuer": "x", "jwks": {"cluster": "idp"}}"#).path,
            "jwks.uri"
        );
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "requiredClaims": {{"azp": []}}}}"#
            ))
            .path,
            "requiredClaims.azp"
        );
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "claimsToHeaders": {{"sub": "a b"}}}}"#
            ))
            .path,
            "claimsToHeaders.sub"
        );
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "tokenSource": "nope"}}"#
            ))
            .path,
            "tokenSource"
        );
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "scopeCriteria": "XOR"}}"#
            ))
            .path,
            "scopeCriteria"
        );
        assert_eq!(
            err(&format!(
                r#"{{"issuer": "x", {JWKS}, "denial": {{"status": 200}}}}"#
            ))
            .path,
            "denial.status"
        );
        assert_eq!(
            err(r#"{"issuer": "x", "hmacSecret": "short", "algorithms": ["HS256"]}"#).path,
            "hmacSecret"
        );
        assert_eq!(
            err(r#"{"issuer": "x", "localJwks": "{\"keys\": 3}"}"#).path,
            "localJwks"
        );
        assert_eq!(
            err(&format!(r#"{{"issuer": "x", {JWKS}, "jwks2": 1}}"#)).path,
            "jwks2"
        );
    }

    #[test]
    fn uris_are_split_into_authority_and_path() {
        assert_eq!(
            parse_uri("https://idp.example.com/oauth/jwks?x=1"),
            Some(("idp.example.com".into(), "/oauth/jwks?x=1".into()))
        );
        assert_eq!(
            parse_uri("http://[::1]:80"),
            Some(("[::1]:80".into(), "/".into()))
        );
        assert_eq!(parse_uri("http://user@host/"), None);
        assert_eq!(parse_uri("http:///x"), None);
    }
}
