//! The `basic-auth` configuration: the JSON contract and its compilation.

use crate::hash::PasswordHash;
use palisade_kit::{config, ConfigError, Denial, DenialOverride};
use serde::Deserialize;
use std::collections::HashMap;

/// One user as written in `users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawUser {
    username: String,
    password_hash: String,
}

/// The configuration as written (camelCase JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    htpasswd: Option<String>,
    #[serde(default)]
    forward_username_header: Option<String>,
    #[serde(default = "yes")]
    hide_credentials: bool,
    #[serde(default = "palisade_kit::cors::allow_preflight_default")]
    allow_cors_preflight: bool,
    #[serde(default = "default_ttl")]
    cache_ttl_seconds: u32,
    #[serde(default = "default_max_entries")]
    cache_max_entries: u32,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

fn default_realm() -> String {
    "palisade".into()
}

fn yes() -> bool {
    true
}

fn default_ttl() -> u32 {
    300
}

fn default_max_entries() -> u32 {
    1024
}

/// The largest `cacheTtlSeconds`: one day.
pub const MAX_TTL_SECONDS: u32 = 86_400;
/// The largest `cacheMaxEntries` (about 5 MB per worker).
pub const MAX_ENTRIES: u32 = 100_000;

/// A configured user.
#[derive(Debug)]
pub struct User {
    /// The user-id, exactly as clients must send it.
    pub username: String,
    /// The stored hash.
    pub hash: PasswordHash,
}

/// The denial responses, built once.
#[derive(Debug)]
pub struct Denials {
    /// No `Authorization` header.
    pub missing: Denial,
    /// Several `Authorization` lines, or several credentials in one value.
    pub ambiguous: Denial,
    /// An `Authorization` header with another scheme than Basic.
    pub wrong_scheme: Denial,
    /// Basic credentials that cannot be decoded (base64, UTF-8, colon).
    pub malformed: Denial,
    /// Unknown user or wrong password (deliberately indistinguishable).
    pub invalid: Denial,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// The users, in configuration order (`users` first, then `htpasswd`).
    pub users: Vec<User>,
    /// Username to index in `users`.
    pub index: HashMap<String, u32>,
    /// Lowercase header name the username is forwarded in, if any.
    pub forward_username_header: Option<String>,
    /// Whether the `Authorization` header is removed before the request goes upstream.
    pub hide_credentials: bool,
    /// Whether CORS preflights pass unauthenticated.
    pub allow_cors_preflight: bool,
    /// How long a verification outcome is remembered (0: not at all).
    pub cache_ttl_ms: u64,
    /// How many outcomes are remembered per worker.
    pub cache_max_entries: usize,
    /// The responses for denied requests.
    pub denials: Denials,
    /// Users whose hash is an unsalted `{SHA}` (for a configure-time warning).
    pub weak_users: Vec<String>,
}

impl Config {
    /// Parses and validates the JSON configuration. Errors name the field (and the user) but
    /// never repeat a hash.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        validate_realm(&raw.realm)?;

        let mut users = Vec::new();
        let mut index = HashMap::new();
        let mut add = |username: &str, stored: &str, path: String| -> Result<(), ConfigError> {
            validate_username(username).map_err(|m| ConfigError::at(path.clone(), m))?;
            let hash = PasswordHash::parse(stored)
                .map_err(|m| ConfigError::at(path.clone(), format!("user `{username}`: {m}")))?;
            let id = u32::try_from(users.len())
                .map_err(|_| ConfigError::at(path.clone(), "too many users"))?;
            if index.insert(username.to_owned(), id).is_some() {
                return Err(ConfigError::at(
                    path,
                    format!("user `{username}` is configured more than once"),
                ));
            }
            users.push(User {
                username: username.to_owned(),
                hash,
            });
            Ok(())
        };
        for (i, u) in raw.users.iter().enumerate() {
            add(&u.username, &u.password_hash, format!("users[{i}]"))?;
        }
        if let Some(file) = &raw.htpasswd {
            for (line_no, line) in file.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let path = format!("htpasswd (line {})", line_no + 1);
                let Some((username, stored)) = line.split_once(':') else {
                    return Err(ConfigError::at(
                        path,
                        "expected `username:hash` (as written by htpasswd)",
                    ));
                };
                add(username, stored, path)?;
            }
        }
        if users.is_empty() {
            return Err(ConfigError::at(
                "users",
                "configure at least one user in `users` or `htpasswd`",
            ));
        }

        let forward_username_header = raw
            .forward_username_header
            .as_deref()
            .map(validate_header_name)
            .transpose()?;
        if raw.cache_ttl_seconds > MAX_TTL_SECONDS {
            return Err(ConfigError::at(
                "cacheTtlSeconds",
                format!("must be 0-{MAX_TTL_SECONDS} (0 disables the cache)"),
            ));
        }
        if raw.cache_max_entries == 0 || raw.cache_max_entries > MAX_ENTRIES {
            return Err(ConfigError::at(
                "cacheMaxEntries",
                format!("must be 1-{MAX_ENTRIES} (set cacheTtlSeconds to 0 to disable the cache)"),
            ));
        }

        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", raw.realm);
        let denial = |code, message: &str| {
            Denial::new(401, code, message)
                .with_header("www-authenticate", &challenge)
                .overridden(raw.denial.as_ref(), "denial")
        };
        let denials = Denials {
            missing: denial(
                "missing_credentials",
                "This API requires HTTP Basic authentication.",
            )?,
            ambiguous: denial(
                "ambiguous_credentials",
                "Send exactly one Authorization header with one set of Basic credentials.",
            )?,
            wrong_scheme: denial(
                "malformed_credentials",
                "Expected credentials in the Basic authentication scheme.",
            )?,
            malformed: denial(
                "malformed_credentials",
                "The Basic credentials are malformed: expected base64 of UTF-8 `username:password`.",
            )?,
            invalid: denial("invalid_credentials", "Invalid username or password.")?,
        };
        let weak_users = users
            .iter()
            .filter(|u| matches!(u.hash, PasswordHash::Sha1(_)))
            .map(|u| u.username.clone())
            .collect();
        Ok(Config {
            users,
            index,
            forward_username_header,
            hide_credentials: raw.hide_credentials,
            allow_cors_preflight: raw.allow_cors_preflight,
            cache_ttl_ms: u64::from(raw.cache_ttl_seconds) * 1_000,
            cache_max_entries: raw.cache_max_entries as usize,
            denials,
            weak_users,
        })
    }
}

/// The realm is quoted in `WWW-Authenticate`: printable ASCII without `"` or `\`.
fn validate_realm(realm: &str) -> Result<(), ConfigError> {
    if realm.is_empty()
        || realm.len() > 200
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(ConfigError::at(
            "realm",
            "must be 1-200 printable ASCII characters without `\"` or `\\`",
        ));
    }
    Ok(())
}

/// RFC 7617: the user-id cannot contain a colon; control characters could not travel in a
/// forwarded header.
fn validate_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("a username cannot be empty".into());
    }
    if username.contains(':') {
        return Err(format!(
            "user `{username}`: a username cannot contain `:` (RFC 7617)"
        ));
    }
    if username.chars().any(char::is_control) {
        return Err("a username cannot contain control characters".into());
    }
    Ok(())
}

/// An HTTP header name (RFC 9110 token), not a pseudo-header, and not one that carries the
/// credentials or routing.
fn validate_header_name(name: &str) -> Result<String, ConfigError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(token) {
        return Err(ConfigError::at(
            "forwardUsernameHeader",
            format!("`{name}` is not a valid header name"),
        ));
    }
    if matches!(
        lower.as_str(),
        "authorization" | "proxy-authorization" | "host" | "content-length" | "transfer-encoding"
    ) {
        return Err(ConfigError::at(
            "forwardUsernameHeader",
            format!("`{name}` cannot carry the username"),
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2y$04$ywA7T2ioj6opfU5tLslDiOuVRLjn3aru86.kAoznWJcyo0K5KspNm";
    const SHA1: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

    fn compile(json: serde_json::Value) -> Result<Config, ConfigError> {
        Config::compile(json.to_string().as_bytes())
    }

    fn err(json: serde_json::Value) -> ConfigError {
        match compile(json.clone()) {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults() {
        let c = compile(serde_json::json!({"users": [{"username": "a", "passwordHash": BCRYPT}]}))
            .unwrap();
        assert!(c.hide_credentials);
        assert!(c.allow_cors_preflight);
        assert_eq!(c.forward_username_header, None);
        assert_eq!((c.cache_ttl_ms, c.cache_max_entries), (300_000, 1024));
        assert_eq!(c.denials.invalid.status(), 401);
        assert!(c
            .denials
            .invalid
            .headers()
            .any(|(n, v)| n == "www-authenticate"
                && v == "Basic realm=\"palisade\", charset=\"UTF-8\""));
        assert!(c.weak_users.is_empty());
    }

    #[test]
    fn combines_users_and_htpasswd() {
        let htpasswd = format!("# team\n\ncarol:{SHA1}\r\n  dave:{BCRYPT}  \n");
        let c = compile(serde_json::json!({
            "realm": "orders-api",
            "users": [{"username": "alice", "passwordHash": BCRYPT}],
            "htpasswd": htpasswd,
            "forwardUsernameHeader": "X-User",
        }))
        .unwrap();
        let names: Vec<_> = c.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["alice", "carol", "dave"]);
        assert_eq!(c.index["dave"], 2);
        assert_eq!(c.forward_username_header.as_deref(), Some("x-user"));
        assert_eq!(c.weak_users, ["carol"]);
    }

    #[test]
    fn errors_name_the_field_and_user_but_never_the_hash() {
        let e = err(serde_json::json!({"users": [
            {"username": "alice", "passwordHash": BCRYPT},
            {"username": "bob", "passwordHash": "$apr1$salt$c2VjcmV0aGFzaA"},
        ]}));
        assert_eq!(e.path, "users[1]");
        assert!(e.message.contains("user `bob`"), "{e}");
        assert!(!e.to_string().contains("c2VjcmV0aGFzaA"), "{e}");

        let e = err(serde_json::json!({"htpasswd": format!("a:{BCRYPT}\n\nmallory:plaintext\n")}));
        assert_eq!(e.path, "htpasswd (line 3)");
        assert!(e.message.contains("user `mallory`"), "{e}");
        assert!(!e.to_string().contains("plaintext"), "{e}");

        let e = err(serde_json::json!({"htpasswd": "no-colon-here"}));
        assert_eq!(e.path, "htpasswd (line 1)");
    }

    #[test]
    fn duplicate_usernames_fail() {
        let e = err(serde_json::json!({
            "users": [{"username": "alice", "passwordHash": BCRYPT}],
            "htpasswd": format!("alice:{SHA1}"),
        }));
        assert_eq!(e.path, "htpasswd (line 1)");
        assert!(e.message.contains("more than once"), "{e}");
        let e = err(serde_json::json!({"users": [
            {"username": "x", "passwordHash": BCRYPT},
            {"username": "x", "passwordHash": BCRYPT},
        ]}));
        assert_eq!(e.path, "users[1]");
    }

    #[test]
    fn validates_every_field() {
        let user = serde_json::json!([{"username": "a", "passwordHash": BCRYPT}]);
        for (json, path) in [
            (serde_json::json!({}), "users"),
            (serde_json::json!({"users": []}), "users"),
            (
                serde_json::json!({"htpasswd": "# only comments\n"}),
                "users",
            ),
            (
                serde_json::json!({"users": [{"username": "", "passwordHash": BCRYPT}]}),
                "users[0]",
            ),
            (
                serde_json::json!({"users": [{"username": "a:b", "passwordHash": BCRYPT}]}),
                "users[0]",
            ),
            (
                serde_json::json!({"users": [{"username": "a\u{7}", "passwordHash": BCRYPT}]}),
                "users[0]",
            ),
            (
                serde_json::json!({"users": [{"username": "a"}]}),
                "users[0]",
            ),
            (
                serde_json::json!({"users": [{"username": "a", "passwordHash": BCRYPT, "x": 1}]}),
                "users[0].x",
            ),
            (serde_json::json!({"users": user, "realm": "a\"b"}), "realm"),
            (serde_json::json!({"users": user, "realm": ""}), "realm"),
            (serde_json::json!({"users": user, "realm": "é"}), "realm"),
            (
                serde_json::json!({"users": user, "forwardUsernameHeader": "x user"}),
                "forwardUsernameHeader",
            ),
            (
                serde_json::json!({"users": user, "forwardUsernameHeader": ":path"}),
                "forwardUsernameHeader",
            ),
            (
                serde_json::json!({"users": user, "forwardUsernameHeader": "Authorization"}),
                "forwardUsernameHeader",
            ),
            (
                serde_json::json!({"users": user, "cacheTtlSeconds": 86_401}),
                "cacheTtlSeconds",
            ),
            (
                serde_json::json!({"users": user, "cacheTtlSeconds": -1}),
                "cacheTtlSeconds",
            ),
            (
                serde_json::json!({"users": user, "cacheMaxEntries": 0}),
                "cacheMaxEntries",
            ),
            (
                serde_json::json!({"users": user, "cacheMaxEntries": 100_001}),
                "cacheMaxEntries",
            ),
            (
                serde_json::json!({"users": user, "hideCredentials": "yes"}),
                "hideCredentials",
            ),
            (
                serde_json::json!({"users": user, "denial": {"status": 200}}),
                "denial.status",
            ),
            (
                serde_json::json!({"users": user, "hidecredentials": true}),
                "hidecredentials",
            ),
        ] {
            assert_eq!(err(json.clone()).path, path, "{json}");
        }
    }

    #[test]
    fn denial_override_keeps_the_challenge() {
        let c = compile(serde_json::json!({
            "users": [{"username": "a", "passwordHash": BCRYPT}],
            "denial": {"status": 403, "body": "go away", "contentType": "text/plain"},
        }))
        .unwrap();
        for d in [&c.denials.missing, &c.denials.invalid] {
            assert_eq!((d.status(), d.body()), (403, &b"go away"[..]));
            assert!(d.headers().any(|(n, _)| n == "www-authenticate"));
        }
    }
}
