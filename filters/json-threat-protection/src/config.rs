//! The `json-threat-protection` configuration: the JSON contract and its compilation.

use crate::scanner::Limits;
use palisade_kit::body::{limit, BodySettings};
use palisade_kit::{config, ConfigError, DenialOverride};
use serde::Deserialize;

/// The configuration as written (camelCase JSON). Limits are -1 or absent for unlimited.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    max_container_depth: Option<i64>,
    max_string_value_length: Option<i64>,
    max_object_entry_name_length: Option<i64>,
    max_object_entry_count: Option<i64>,
    max_array_element_count: Option<i64>,
    max_body_bytes: Option<i64>,
    #[serde(default = "yes")]
    allow_duplicate_keys: bool,
    #[serde(default)]
    check_all_bodies: bool,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

fn yes() -> bool {
    true
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// The structural limits.
    pub limits: Limits,
    /// `maxBodyBytes`, `checkAllBodies` and `denial`.
    pub body: BodySettings,
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let body = BodySettings::compile(raw.max_body_bytes, raw.check_all_bodies, raw.denial)?;
        Ok(Config {
            limits: Limits {
                max_depth: limit(raw.max_container_depth, "maxContainerDepth")?,
                max_string: limit(raw.max_string_value_length, "maxStringValueLength")?,
                max_name: limit(raw.max_object_entry_name_length, "maxObjectEntryNameLength")?,
                max_entries: limit(raw.max_object_entry_count, "maxObjectEntryCount")?,
                max_elements: limit(raw.max_array_element_count, "maxArrayElementCount")?,
                reject_duplicate_keys: !raw.allow_duplicate_keys,
            },
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        match Config::compile(json.as_bytes()) {
            Ok(c) => panic!("accepted {json}: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_configuration_is_unlimited_and_allows_duplicates() {
        let c = Config::compile(b"").unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.body.max_body_bytes, None);
        assert!(!c.body.check_all_bodies);
        let c = Config::compile(
            br#"{"maxContainerDepth": -1, "maxArrayElementCount": 0, "allowDuplicateKeys": false}"#,
        )
        .unwrap();
        assert_eq!(c.limits.max_depth, None);
        assert_eq!(c.limits.max_elements, Some(0));
        assert!(c.limits.reject_duplicate_keys);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(r#"{"maxContainerDepth": -2}"#).path,
            "maxContainerDepth"
        );
        assert_eq!(
            err(r#"{"maxStringValueLength": "10"}"#).path,
            "maxStringValueLength"
        );
        assert_eq!(
            err(r#"{"maxObjectEntryNameLength": 1.5}"#).path,
            "maxObjectEntryNameLength"
        );
        assert_eq!(
            err(r#"{"maxObjectEntryCount": -7}"#).path,
            "maxObjectEntryCount"
        );
        assert_eq!(
            err(r#"{"maxArrayElementCount": -3}"#).path,
            "maxArrayElementCount"
        );
        assert_eq!(err(r#"{"maxBodyBytes": 0}"#).path, "maxBodyBytes");
        assert_eq!(
            err(r#"{"allowDuplicateKeys": "no"}"#).path,
            "allowDuplicateKeys"
        );
        assert_eq!(err(r#"{"maxDepth": 3}"#).path, "maxDepth");
    }
}
