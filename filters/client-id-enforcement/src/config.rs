//! The `client-id-enforcement` configuration: the JSON contract and its compilation.

use crate::registry::{RawClient, Registry};
use palisade_kit::cors::allow_preflight_default;
use palisade_kit::selector::Selector;
use palisade_kit::{config, ConfigError, Denial, DenialOverride};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    api: String,
    #[serde(default = "default_id_source")]
    client_id_source: Selector,
    #[serde(default = "default_secret_source")]
    client_secret_source: Option<Selector>,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    registry: Option<RawRegistry>,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default)]
    hide_client_id: bool,
    #[serde(default = "allow_preflight_default")]
    allow_cors_preflight: bool,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

fn default_id_source() -> Selector {
    Selector::Header("client_id".into())
}

fn default_secret_source() -> Option<Selector> {
    Some(Selector::Header("client_secret".into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRegistry {
    cluster: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_refresh")]
    refresh_seconds: u32,
    #[serde(default = "default_timeout")]
    timeout_ms: u32,
}

fn default_path() -> String {
    "/clients".into()
}

fn default_refresh() -> u32 {
    30
}

fn default_timeout() -> u32 {
    5_000
}

/// Where and how often the remote registry is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRegistry {
    /// Envoy cluster serving the registry.
    pub cluster: String,
    /// Request path.
    pub path: String,
    /// `:authority` of the request.
    pub authority: String,
    /// Time between fetches.
    pub refresh_ms: u64,
    /// Time a fetch may take.
    pub timeout_ms: u32,
}

impl RemoteRegistry {
    /// The name of the shared document and schedule: policies fetching the same registry share
    /// one copy and one fetch per period.
    pub fn shared_name(&self) -> String {
        format!("client-registry:{}:{}", self.cluster, self.path)
    }
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// The API whose contracts are checked.
    pub api: String,
    /// Where the client id comes from.
    pub id_source: Selector,
    /// Where the secret comes from; `None` when no secret is required.
    pub secret_source: Option<Selector>,
    /// Clients written in the configuration (they take precedence over the remote registry).
    pub inline: Registry,
    /// The remote registry, if any.
    pub remote: Option<RemoteRegistry>,
    /// Remove the secret before the upstream sees the request.
    pub hide_credentials: bool,
    /// Remove the client id too.
    pub hide_client_id: bool,
    /// Let CORS preflights through unauthenticated.
    pub allow_cors_preflight: bool,
    /// 401: missing/unknown id, wrong/missing secret, disabled client.
    pub unauthorized: Denial,
    /// 403: a known client without a contract for this API.
    pub forbidden: Denial,
    /// 503: a remote registry that never loaded.
    pub unavailable: Denial,
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        if raw.api.trim().is_empty() {
            return Err(ConfigError::at(
                "api",
                "name the API whose contracts are enforced",
            ));
        }
        if raw.clients.is_empty() && raw.registry.is_none() {
            return Err(ConfigError::at(
                ".",
                "configure `clients`, a `registry`, or both",
            ));
        }
        if let Some(secret) = &raw.client_secret_source {
            if *secret == raw.client_id_source {
                return Err(ConfigError::at(
                    "clientSecretSource",
                    "the secret cannot come from the same place as the client id",
                ));
            }
            for (i, client) in raw.clients.iter().enumerate() {
                if client.secret_sha256.is_none() {
                    return Err(ConfigError::at(
                        format!("clients[{i}].secretSha256"),
                        "required while clientSecretSource is set",
                    ));
                }
            }
        }
        let inline = Registry::from_raw(raw.clients, "clients")
            .map_err(|(path, msg)| ConfigError::at(path, msg))?;
        let remote = raw.registry.map(compile_registry).transpose()?;

        let basic = matches!(raw.client_id_source, Selector::BasicUsername);
        let realm = raw.realm.unwrap_or_else(|| raw.api.clone());
        if realm.contains('"') || realm.contains('\\') {
            return Err(ConfigError::at(
                "realm",
                "must not contain quotes or backslashes",
            ));
        }
        let challenge = if basic {
            format!("Basic realm=\"{realm}\"")
        } else {
            // Flex Gateway's challenge, so existing clients keep working.
            "Client-ID-Enforcement".to_owned()
        };
        let o = raw.denial.as_ref();
        Ok(Config {
            api: raw.api,
            id_source: raw.client_id_source,
            secret_source: raw.client_secret_source,
            inline,
            remote,
            hide_credentials: raw.hide_credentials,
            hide_client_id: raw.hide_client_id,
            allow_cors_preflight: raw.allow_cors_preflight,
            unauthorized: Denial::new(401, "invalid_client", "Invalid client credentials.")
                .with_header("www-authenticate", &challenge)
                .overridden(o, "denial")?,
            forbidden: Denial::new(
                403,
                "no_contract",
                "The client application has no contract for this API.",
            )
            .overridden(o, "denial")?,
            unavailable: Denial::new(
                503,
                "registry_unavailable",
                "Client credentials cannot be checked yet. Retry shortly.",
            )
            .with_header("retry-after", "1")
            .overridden(o, "denial")?,
        })
    }
}

fn compile_registry(raw: RawRegistry) -> Result<RemoteRegistry, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::at(
            "registry.cluster",
            "name the Envoy cluster serving the registry",
        ));
    }
    if !raw.path.starts_with('/') {
        return Err(ConfigError::at("registry.path", "must start with '/'"));
    }
    if raw.refresh_seconds == 0 {
        return Err(ConfigError::at(
            "registry.refreshSeconds",
            "must be at least 1",
        ));
    }
    if raw.timeout_ms == 0 || raw.timeout_ms > 60_000 {
        return Err(ConfigError::at("registry.timeoutMs", "must be 1-60000"));
    }
    Ok(RemoteRegistry {
        authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
        cluster: raw.cluster,
        path: raw.path,
        refresh_ms: u64::from(raw.refresh_seconds) * 1_000,
        timeout_ms: raw.timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn err(json: &str) -> ConfigError {
        match Config::compile(json.as_bytes()) {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn flex_defaults() {
        let c = Config::compile(
            format!(
                r#"{{"api": "orders", "clients": [{{"clientId": "a", "secretSha256": "{HASH}"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.id_source.to_string(), "header:client_id");
        assert_eq!(c.secret_source.unwrap().to_string(), "header:client_secret");
        assert!(!c.hide_credentials);
        assert!(c.allow_cors_preflight);
        assert_eq!(
            c.unauthorized
                .headers()
                .find(|(n, _)| *n == "www-authenticate"),
            Some(("www-authenticate", "Client-ID-Enforcement"))
        );
    }

    #[test]
    fn null_secret_source_means_no_secret_and_basic_mode_challenges_basic() {
        let c = Config::compile(
            br#"{"api": "orders", "clientIdSource": "basic:username", "clientSecretSource": null,
                 "clients": [{"clientId": "a"}], "realm": "shop"}"#,
        )
        .unwrap();
        assert!(c.secret_source.is_none());
        assert_eq!(
            c.unauthorized
                .headers()
                .find(|(n, _)| *n == "www-authenticate"),
            Some(("www-authenticate", "Basic realm=\"shop\""))
        );
    }

    #[test]
    fn registry_defaults_and_validation() {
        let c = Config::compile(br#"{"api": "orders", "registry": {"cluster": "reg"}}"#).unwrap();
        let r = c.remote.unwrap();
        assert_eq!(
            (
                r.path.as_str(),
                r.authority.as_str(),
                r.refresh_ms,
                r.timeout_ms
            ),
            ("/clients", "reg", 30_000, 5_000)
        );
        assert_eq!(
            err(r#"{"api": "orders", "registry": {"cluster": "reg", "refreshSeconds": 0}}"#).path,
            "registry.refreshSeconds"
        );
        assert_eq!(
            err(r#"{"api": "orders", "registry": {"cluster": "reg", "path": "x"}}"#).path,
            "registry.path"
        );
        assert_eq!(
            err(r#"{"api": "orders", "registry": {"clustr": "reg"}}"#).path,
            "registry.clustr"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(r#"{"api": "", "registry": {"cluster": "r"}}"#).path,
            "api"
        );
        assert_eq!(err(r#"{"api": "o"}"#).path, ".");
        assert_eq!(
            err(r#"{"api": "o", "clients": [{"clientId": "a"}]}"#).path,
            "clients[0].secretSha256"
        );
        assert_eq!(
            err(&format!(r#"{{"api": "o", "clients": [{{"clientId": "a", "secretSha256": "{HASH}"}}, {{"clientId": "a", "secretSha256": "{HASH}"}}]}}"#)).path,
            "clients[1].clientId"
        );
        assert_eq!(
            err(r#"{"api": "o", "clients": [{"clientId": "a", "secretSha256": "zz"}]}"#).path,
            "clients[0].secretSha256"
        );
        assert_eq!(
            err(r#"{"api": "o", "clientIdSource": "headr:x", "registry": {"cluster": "r"}}"#).path,
            "clientIdSource"
        );
        assert_eq!(err(r#"{"api": "o", "clientSecretSource": "header:client_id", "registry": {"cluster": "r"}}"#).path, "clientSecretSource");
        assert!(
            !err(r#"{"api": "o", "clients": [{"clientId": "a", "secretSha256": "zz"}]}"#)
                .message
                .contains("zz")
        );
    }
}
