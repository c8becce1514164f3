//! The `cors` configuration: MuleSoft Flex's `cors-flex` JSON contract, compiled.

use crate::origin::{OriginSet, Pattern};
use palisade_kit::config::{self, is_token};
use palisade_kit::{ConfigError, Denial, DenialOverride};
use serde::Deserialize;

/// Flex's default for `allowedMethods`.
const DEFAULT_METHODS: [&str; 8] = [
    "CONNECT", "DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];
/// Flex's default for `accessControlMaxAge`, in seconds; also the public mode's.
const DEFAULT_MAX_AGE: u32 = 30;
/// Browsers cap preflight caching at 2 hours (Chromium) or 24 hours (Firefox).
const MAX_MAX_AGE: u32 = 86_400;

/// The configuration as written (camelCase JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    public_resource: Option<bool>,
    #[serde(default)]
    support_credentials: bool,
    #[serde(default)]
    origin_groups: Vec<RawGroup>,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGroup {
    /// Flex's UI names groups; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    origin_group_name: Option<String>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    access_control_max_age: Option<i64>,
    #[serde(default)]
    allowed_methods: Option<Vec<RawMethod>>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    exposed_headers: Vec<String>,
}

/// A method, either Flex's `{"methodName": "PUT", "isAllowed": true}` or a plain `"PUT"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMethod {
    Name(String),
    Flex(FlexMethod),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FlexMethod {
    method_name: String,
    #[serde(default = "yes")]
    is_allowed: bool,
}

fn yes() -> bool {
    true
}

/// Who may call, with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Allowed methods, uppercase.
    pub methods: Vec<String>,
    /// Allowed request headers, lowercase (empty when `any_header`).
    pub headers: Vec<String>,
    /// `*` was listed in `headers`: any requested header is allowed (and echoed back, since
    /// browsers read `*` literally on credentialed requests).
    pub any_header: bool,
    /// Response headers the page may read.
    pub exposed: Vec<String>,
    /// Preflight cache lifetime, seconds.
    pub max_age: u32,
    /// `Access-Control-Allow-Methods` of a granted preflight.
    pub allow_methods: String,
    /// `Access-Control-Allow-Headers` of a granted preflight (when not `any_header`).
    pub allow_headers: String,
    /// `Access-Control-Expose-Headers` of a granted actual request (empty: none).
    pub expose_headers: String,
    /// `Access-Control-Max-Age` of a granted preflight.
    pub max_age_text: String,
}

impl Group {
    /// The public mode's group: every method and header the browser asks for.
    fn public() -> Group {
        Group {
            methods: Vec::new(),
            headers: Vec::new(),
            any_header: true,
            exposed: Vec::new(),
            max_age: DEFAULT_MAX_AGE,
            allow_methods: String::new(),
            allow_headers: String::new(),
            expose_headers: String::new(),
            max_age_text: DEFAULT_MAX_AGE.to_string(),
        }
    }

    /// Whether `method` may be used (an actual request or a preflight's requested method). In
    /// the public mode (no list) every method may; HEAD may whenever GET may.
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty()
            || self.methods.iter().any(|m| m == method)
            || (method == "HEAD" && self.methods.iter().any(|m| m == "GET"))
    }

    /// Whether every header of an `Access-Control-Request-Headers` list is allowed.
    pub fn allows_headers(&self, requested: &str) -> bool {
        split_list(requested).all(|name| {
            is_token(name)
                && (self.any_header || self.headers.iter().any(|h| h.eq_ignore_ascii_case(name)))
        })
    }
}

/// The non-empty items of a comma-separated header list, trimmed.
pub fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// Any origin is granted (originGroups unused).
    pub public: bool,
    /// Credentialed requests (cookies, `Authorization`) are allowed.
    pub credentials: bool,
    /// The groups (in public mode, the one public group).
    pub groups: Vec<Group>,
    /// Which origin belongs to which group.
    pub origins: OriginSet,
    /// The answer to a refused preflight.
    pub denial: Denial,
    /// Configuration choices worth a warning in Envoy's log.
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let mut warnings = Vec::new();
        // Flex's default is public; but listing origin groups while leaving `publicResource`
        // out means "these origins": Flex would silently ignore the groups and admit everyone.
        let public = match raw.public_resource {
            Some(true) if !raw.origin_groups.is_empty() => {
                return Err(ConfigError::at(
                    "publicResource",
                    "a public resource admits every origin, so originGroups would be ignored: set publicResource to false to use them, or remove them",
                ));
            }
            Some(public) => public,
            None => raw.origin_groups.is_empty(),
        };
        if !public && raw.origin_groups.is_empty() {
            return Err(ConfigError::at(
                "originGroups",
                "list at least one origin group when publicResource is false",
            ));
        }
        if public && raw.support_credentials {
            warnings.push(
                "publicResource with supportCredentials echoes any requesting origin with credentials allowed: any web site can make credentialed calls on behalf of your users"
                    .to_owned(),
            );
        }
        let mut groups = Vec::new();
        let mut origins = OriginSet::default();
        if public {
            groups.push(Group::public());
        }
        for (g, raw_group) in raw.origin_groups.iter().enumerate() {
            let at = |field: &str| format!("originGroups[{g}].{field}");
            if raw_group.origins.is_empty() {
                return Err(ConfigError::at(at("origins"), "list at least one origin"));
            }
            for (i, text) in raw_group.origins.iter().enumerate() {
                let pattern = Pattern::parse(text.trim())
                    .map_err(|msg| ConfigError::at(at(&format!("origins[{i}]")), msg))?;
                if pattern == Pattern::Any && raw.support_credentials {
                    warnings.push(format!(
                        "{}: `*` with supportCredentials echoes any requesting origin with credentials allowed",
                        at(&format!("origins[{i}]"))
                    ));
                }
                origins.add(pattern, g);
            }
            groups.push(compile_group(raw_group, &at)?);
        }
        let denial = Denial::new(
            403,
            "cors_preflight_denied",
            "This cross-origin request is not allowed from this origin, with this method or these headers.",
        )
        .overridden(raw.denial.as_ref(), "denial")?;
        Ok(Config {
            public,
            credentials: raw.support_credentials,
            groups,
            origins,
            denial,
            warnings,
        })
    }
}

fn compile_group(raw: &RawGroup, at: &dyn Fn(&str) -> String) -> Result<Group, ConfigError> {
    let max_age = match raw.access_control_max_age {
        None => DEFAULT_MAX_AGE,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_MAX_AGE)
            .ok_or_else(|| {
                ConfigError::at(
                    at("accessControlMaxAge"),
                    format!("{n} is not a number of seconds between 0 and {MAX_MAX_AGE}"),
                )
            })?,
    };
    let mut methods: Vec<String> = Vec::new();
    match &raw.allowed_methods {
        None => methods.extend(DEFAULT_METHODS.iter().map(|m| (*m).to_owned())),
        Some(list) => {
            for (i, m) in list.iter().enumerate() {
                let (name, allowed) = match m {
                    RawMethod::Name(name) => (name, true),
                    RawMethod::Flex(f) => (&f.method_name, f.is_allowed),
                };
                if !is_token(name) {
                    return Err(ConfigError::at(
                        at(&format!("allowedMethods[{i}]")),
                        format!("`{name}` is not an HTTP method name"),
                    ));
                }
                let name = name.to_ascii_uppercase();
                if allowed && !methods.contains(&name) {
                    methods.push(name);
                }
            }
            if methods.is_empty() {
                return Err(ConfigError::at(
                    at("allowedMethods"),
                    "no method is allowed: list at least one with isAllowed true, or leave allowedMethods out for all",
                ));
            }
        }
    }
    let mut headers: Vec<String> = Vec::new();
    let mut any_header = false;
    for (i, h) in raw.headers.iter().enumerate() {
        let h = h.trim();
        if h == "*" {
            any_header = true;
        } else if is_token(h) {
            headers.push(h.to_ascii_lowercase());
        } else {
            return Err(ConfigError::at(
                at(&format!("headers[{i}]")),
                format!("`{h}` is not a header name"),
            ));
        }
    }
    if any_header {
        headers.clear();
    }
    let mut exposed: Vec<String> = Vec::new();
    for (i, h) in raw.exposed_headers.iter().enumerate() {
        let h = h.trim();
        if !is_token(h) {
            return Err(ConfigError::at(
                at(&format!("exposedHeaders[{i}]")),
                format!("`{h}` is not a header name"),
            ));
        }
        exposed.push(h.to_ascii_lowercase());
    }
    Ok(Group {
        allow_methods: methods.join(", "),
        allow_headers: headers.join(", "),
        expose_headers: exposed.join(", "),
        max_age_text: max_age.to_string(),
        methods,
        headers,
        any_header,
        exposed,
        max_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(json: serde_json::Value) -> Config {
        Config::compile(json.to_string().as_bytes()).unwrap()
    }

    fn err(json: serde_json::Value) -> ConfigError {
        match Config::compile(json.to_string().as_bytes()) {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_configuration_is_flex_public_default() {
        let c = Config::compile(b"").unwrap();
        assert!(c.public && !c.credentials);
        assert_eq!(c.groups.len(), 1);
        assert_eq!(c.groups[0].max_age, 30);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn the_issue_example_compiles() {
        let c = compile(serde_json::json!({
            "publicResource": false, "supportCredentials": true,
            "originGroups": [{"origins": ["https://shop.example.com", "https://*.example.com"],
                "accessControlMaxAge": 600,
                "allowedMethods": [{"methodName": "PUT", "isAllowed": true}, {"methodName": "delete", "isAllowed": false}],
                "headers": ["X-Request-Id", "content-type"], "exposedHeaders": ["x-ratelimit-remaining"]}]
        }));
        assert!(!c.public && c.credentials);
        let g = &c.groups[0];
        assert_eq!(g.methods, ["PUT"]);
        assert_eq!(g.allow_headers, "x-request-id, content-type");
        assert_eq!(g.expose_headers, "x-ratelimit-remaining");
        assert_eq!(g.max_age_text, "600");
        assert_eq!(c.origins.find("https://a.example.com"), Some(0));
    }

    #[test]
    fn defaults_of_a_group_are_flex_defaults() {
        let c = compile(serde_json::json!({"originGroups": [{"origins": ["https://a.test"]}]}));
        assert!(
            !c.public,
            "groups without publicResource mean those origins"
        );
        let g = &c.groups[0];
        assert_eq!(g.methods, DEFAULT_METHODS);
        assert_eq!(g.max_age, 30);
        assert!(g.headers.is_empty() && !g.any_header && g.exposed.is_empty());
    }

    #[test]
    fn methods_as_plain_names_and_header_wildcard() {
        let c = compile(serde_json::json!({"originGroups": [{
            "origins": ["https://a.test"], "allowedMethods": ["get", "PUT", "PUT"], "headers": ["x-a", "*"]}]}));
        let g = &c.groups[0];
        assert_eq!(g.allow_methods, "GET, PUT");
        assert!(g.any_header && g.headers.is_empty());
        assert!(g.allows_method("HEAD"));
        assert!(!g.allows_method("DELETE"));
    }

    #[test]
    fn risky_configurations_warn() {
        let c = compile(serde_json::json!({"supportCredentials": true}));
        assert_eq!(c.warnings.len(), 1);
        let c = compile(serde_json::json!({"supportCredentials": true,
            "originGroups": [{"origins": ["https://a.test", "*"]}]}));
        assert!(c.warnings[0].contains("originGroups[0].origins[1]"));
    }

    #[test]
    fn errors_name_the_field() {
        use serde_json::json;
        for (config, path, hint) in [
            (
                json!({"publicResource": true, "originGroups": [{"origins": ["https://a.test"]}]}),
                "publicResource",
                "ignored",
            ),
            (
                json!({"publicResource": false}),
                "originGroups",
                "at least one",
            ),
            (
                json!({"originGroups": [{"origins": []}]}),
                "originGroups[0].origins",
                "at least one",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"]}, {"origins": ["https://b.test/"]}]}),
                "originGroups[1].origins[0]",
                "trailing",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "accessControlMaxAge": -1}]}),
                "originGroups[0].accessControlMaxAge",
                "-1",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "accessControlMaxAge": 90000}]}),
                "originGroups[0].accessControlMaxAge",
                "86400",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "allowedMethods": ["GET", "BAD METHOD"]}]}),
                "originGroups[0].allowedMethods[1]",
                "method",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "allowedMethods": [{"methodName": "GET", "isAllowed": false}]}]}),
                "originGroups[0].allowedMethods",
                "no method",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "headers": ["x a"]}]}),
                "originGroups[0].headers[0]",
                "header name",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "exposedHeaders": ["ok", ""]}]}),
                "originGroups[0].exposedHeaders[1]",
                "header name",
            ),
            (
                json!({"originGroups": [{"origins": ["https://a.test"], "maxAge": 3}]}),
                "originGroups[0].maxAge",
                "unknown field",
            ),
            (
                json!({"supportsCredentials": true}),
                "supportsCredentials",
                "unknown field",
            ),
            (json!({"denial": {"status": 200}}), "denial.status", ""),
        ] {
            let e = err(config.clone());
            assert_eq!(e.path, path, "{config}: {e}");
            assert!(e.message.contains(hint), "{config}: {e}");
        }
    }
}
