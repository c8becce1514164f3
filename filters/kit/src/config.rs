//! Strict configuration parsing: unknown fields are rejected and every error names the field.
//!
//! A policy reads its configuration once, in `on_configure`; any error makes `on_configure`
//! return false so Envoy refuses the filter (fail closed: never run a half-understood config).

use serde::de::DeserializeOwned;
use std::fmt;

/// A configuration that cannot be used, with the path of the offending field (`ips[2]`,
/// `registry.cluster`, or `.` for the document itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the JSON document the problem is.
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration at `{}`: {}",
            self.path, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Parses a policy configuration. An empty configuration is read as `{}`, so a policy whose
/// fields all have defaults may be configured with nothing, and one with required fields
/// reports the missing field by name.
pub fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, ConfigError> {
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        json
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        ConfigError::at(path, err.into_inner().to_string())
    })?;
    de.end()
        .map_err(|err| ConfigError::at(".", err.to_string()))?;
    Ok(value)
}

/// An RFC 9110 token (`tchar`s): what header names and methods are made of.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        #[allow(dead_code)]
        cluster: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Sample {
        #[allow(dead_code)]
        ips: Vec<String>,
        #[allow(dead_code)]
        registry: Option<Inner>,
    }

    #[test]
    fn names_the_field_of_a_type_error() {
        let err = parse::<Sample>(br#"{"ips": ["a", 3]}"#).unwrap_err();
        assert_eq!(err.path, "ips[1]");
        assert!(err.message.contains("expected a string"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_with_their_name() {
        let err = parse::<Sample>(br#"{"ips": [], "registry": {"cluster": "c", "clustr": 1}}"#)
            .unwrap_err();
        assert_eq!(err.path, "registry.clustr");
        assert!(err.message.contains("unknown field `clustr`"), "{err}");
    }

    #[test]
    fn names_a_missing_field() {
        let err = parse::<Sample>(b"").unwrap_err();
        assert!(err.message.contains("missing field `ips`"), "{err}");
    }

    #[test]
    fn rejects_trailing_garbage_and_bad_json() {
        assert!(parse::<Sample>(br#"{"ips": []} x"#).is_err());
        assert!(parse::<Sample>(br#"{"ips": [}"#).is_err());
    }

    #[test]
    fn display_is_one_line_with_path() {
        let err = ConfigError::at("ips[0]", "bad");
        assert_eq!(err.to_string(), "invalid configuration at `ips[0]`: bad");
    }
}
