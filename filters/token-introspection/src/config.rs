//! The JSON configuration of `token-introspection` (Flex names) and its compiled form.

use palisade_kit::config::parse;
use palisade_kit::selector::Selector;
use palisade_kit::{ConfigError, Denial, DenialOverride};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    introspection_url: String,
    cluster: String,
    authorization_value: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    scope_validation_criteria: Criteria,
    #[serde(default = "default_ttl", rename = "validatedTokenTTL")]
    validated_token_ttl: u64,
    #[serde(default = "default_inactive_ttl")]
    inactive_token_ttl: u64,
    #[serde(default = "default_entries")]
    max_cache_entries: u32,
    #[serde(default = "default_timeout")]
    authentication_timeout: u32,
    #[serde(default)]
    expose_headers: bool,
    #[serde(default = "default_source")]
    token_source: Selector,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "palisade_kit::cors::allow_preflight_default")]
    allow_cors_preflight: bool,
    denial: Option<DenialOverride>,
}

/// How several required scopes combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Criteria {
    /// Every scope.
    #[default]
    AND,
    /// One of them.
    OR,
}

fn default_ttl() -> u64 {
    600
}
fn default_inactive_ttl() -> u64 {
    10
}
fn default_entries() -> u32 {
    1000
}
fn default_timeout() -> u32 {
    10_000
}
fn default_source() -> Selector {
    Selector::Header("authorization".into())
}
fn default_realm() -> String {
    "api".into()
}

/// The prepared denials.
#[derive(Debug, Clone)]
pub struct Denials {
    /// No token: 401.
    pub missing: Denial,
    /// Several tokens (repeated header lines, query parameters or cookies, or several
    /// credentials in one `Authorization` value): 400 `invalid_request` (RFC 6750 §3.1).
    pub ambiguous: Denial,
    /// Inactive or expired token: 401 `invalid_token`.
    pub invalid: Denial,
    /// Scopes not granted: 403 `insufficient_scope`.
    pub scope: Denial,
    /// The server could not say: 503 `introspection_unavailable`.
    pub unavailable: Denial,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Envoy cluster of the authorization server.
    pub cluster: String,
    /// `:authority` of the introspection request.
    pub authority: String,
    /// `:path` of the introspection request.
    pub path: String,
    /// The `Authorization` header value sent to the server (a secret: never logged).
    pub authorization: String,
    /// Required scopes.
    pub scopes: Vec<String>,
    /// How they combine.
    pub criteria: Criteria,
    /// Active results are cached at most this long (ms).
    pub ttl_ms: u64,
    /// Inactive results are cached this long (ms).
    pub inactive_ttl_ms: u64,
    /// Cache slots in shared data (0: no cache).
    pub max_entries: u32,
    /// Timeout of one introspection call (ms).
    pub timeout_ms: u32,
    /// Whether scalar response fields go upstream as `x-agw-<field>`.
    pub expose_headers: bool,
    /// Where the token is read from.
    pub source: Selector,
    /// Whether CORS preflights pass.
    pub allow_preflight: bool,
    /// The denials.
    pub denials: Denials,
}

fn split_url(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let ok = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
        && path.chars().all(|c| c.is_ascii_graphic());
    ok.then(|| (authority.to_owned(), path.to_owned()))
}

impl Config {
    /// Parses and validates a configuration.
    pub fn compile(json: &[u8]) -> Result<Config, ConfigError> {
        let raw: Raw = parse(json)?;
        let (authority, path) = split_url(&raw.introspection_url).ok_or_else(|| {
            ConfigError::at(
                "introspectionUrl",
                "expected an http(s)://host[:port]/path URL",
            )
        })?;
        if raw.cluster.is_empty() {
            return Err(ConfigError::at("cluster", "must not be empty"));
        }
        if raw.authorization_value.is_empty()
            || !raw
                .authorization_value
                .bytes()
                .all(|b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(ConfigError::at(
                "authorizationValue",
                "expected a header value such as `Basic <base64 client:secret>`",
            ));
        }
        if !(1..=86_400).contains(&raw.validated_token_ttl) {
            return Err(ConfigError::at(
                "validatedTokenTTL",
                "must be 1-86400 seconds",
            ));
        }
        if raw.inactive_token_ttl > 3600 {
            return Err(ConfigError::at(
                "inactiveTokenTTL",
                "must be at most 3600 seconds",
            ));
        }
        if raw.max_cache_entries > 1_000_000 {
            return Err(ConfigError::at(
                "maxCacheEntries",
                "must be at most 1000000",
            ));
        }
        if !(1..=60_000).contains(&raw.authentication_timeout) {
            return Err(ConfigError::at(
                "authenticationTimeout",
                "must be 1-60000 ms",
            ));
        }
        let scopes: Vec<String> = raw.scopes.split_whitespace().map(str::to_owned).collect();
        if raw.scope_validation_criteria == Criteria::OR && scopes.is_empty() {
            return Err(ConfigError::at(
                "scopeValidationCriteria",
                "OR needs at least one scope in `scopes`",
            ));
        }
        if !raw
            .realm
            .chars()
            .all(|c| (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\')
        {
            return Err(ConfigError::at("realm", "printable ASCII without quotes"));
        }
        let realm = &raw.realm;
        let with = raw.denial.as_ref();
        let d = |denial: Denial| denial.overridden(with, "denial");
        let scope_challenge = if scopes.is_empty() {
            format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\"")
        } else {
            format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                scopes.join(" ")
            )
        };
        let denials = Denials {
            missing: d(
                Denial::new(401, "missing_token", "An access token is required.")
                    .with_header("www-authenticate", &format!("Bearer realm=\"{realm}\"")),
            )?,
            ambiguous: d(
                Denial::new(400, "invalid_request", "Send exactly one access token.").with_header(
                    "www-authenticate",
                    &format!("Bearer realm=\"{realm}\", error=\"invalid_request\""),
                ),
            )?,
            invalid: d(
                Denial::new(401, "invalid_token", "The access token is not active.").with_header(
                    "www-authenticate",
                    &format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
                ),
            )?,
            scope: d(Denial::new(
                403,
                "insufficient_scope",
                "The access token does not grant the required scopes.",
            )
            .with_header("www-authenticate", &scope_challenge))?,
            unavailable: d(Denial::new(
                503,
                "introspection_unavailable",
                "The authorization server could not validate the access token.",
            ))?,
        };
        Ok(Config {
            cluster: raw.cluster,
            authority,
            path,
            authorization: raw.authorization_value,
            scopes,
            criteria: raw.scope_validation_criteria,
            ttl_ms: raw.validated_token_ttl * 1000,
            inactive_ttl_ms: raw.inactive_token_ttl * 1000,
            max_entries: raw.max_cache_entries,
            timeout_ms: raw.authentication_timeout,
            expose_headers: raw.expose_headers,
            source: raw.token_source,
            allow_preflight: raw.allow_cors_preflight,
            denials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""introspectionUrl": "http://127.0.0.1:4000/token/introspection", "cluster": "idp", "authorizationValue": "Basic YTpi""#;

    #[test]
    fn defaults_follow_flex() {
        let c = Config::compile(format!("{{{BASE}}}").as_bytes()).unwrap();
        assert_eq!(c.authority, "127.0.0.1:4000");
        assert_eq!(c.path, "/token/introspection");
        assert_eq!(
            (c.ttl_ms, c.max_entries, c.timeout_ms),
            (600_000, 1000, 10_000)
        );
        assert!(!c.expose_headers && c.scopes.is_empty());
        assert_eq!(c.criteria, Criteria::AND);
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let err = |json: String| Config::compile(json.as_bytes()).unwrap_err().path;
        assert!(Config::compile(b"{}")
            .unwrap_err()
            .message
            .contains("introspectionUrl"));
        assert_eq!(
            err(
                r#"{"introspectionUrl": "ftp://x", "cluster": "c", "authorizationValue": "v"}"#
                    .into()
            ),
            "introspectionUrl"
        );
        assert_eq!(
            err(format!("{{{BASE}, \"validatedTokenTTL\": 0}}")),
            "validatedTokenTTL"
        );
        assert_eq!(
            err(format!("{{{BASE}, \"authenticationTimeout\": 0}}")),
            "authenticationTimeout"
        );
        assert_eq!(
            err(format!("{{{BASE}, \"scopeValidationCriteria\": \"OR\"}}")),
            "scopeValidationCriteria"
        );
        assert_eq!(err(format!("{{{BASE}, \"scopes\": 3}}")), "scopes");
        assert_eq!(err(format!("{{{BASE}, \"nope\": 3}}")), "nope");
    }
}
