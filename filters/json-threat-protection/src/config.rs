//! The `json-threat-protection` configuration: the JSON contract and its compilation.

use crate::scanner::Limits;
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
    /// `maxBodyBytes`.
    pub max_body_bytes: Option<u64>,
    /// `checkAllBodies`.
    pub check_all_bodies: bool,
    /// `denial`.
    pub denial: Option<DenialOverride>,
}

/// -1 or absent: unlimited; otherwise a non-negative limit.
fn limit(value: Option<i64>, field: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None | Some(-1) => Ok(None),
        Some(v) if v >= 0 => Ok(Some(v as u64)),
        Some(v) => Err(ConfigError::at(
            field,
            format!("must be -1 (unlimited) or a non-negative number, got {v}"),
        )),
    }
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let max_body_bytes = limit(raw.max_body_bytes, "maxBodyBytes")?;
        if max_body_bytes == Some(0) {
            return Err(ConfigError::at(
                "maxBodyBytes",
                "must be -1 (unlimited) or at least 1",
            ));
        }
        Ok(Config {
            limits: Limits {
                max_depth: limit(raw.max_container_depth, "maxContainerDepth")?,
                max_string: limit(raw.max_string_value_length, "maxStringValueLength")?,
                max_name: limit(raw.max_object_entry_name_length, "maxObjectEntryNameLength")?,
                max_entries: limit(raw.max_object_entry_count, "maxObjectEntryCount")?,
                max_elements: limit(raw.max_array_element_count, "maxArrayElementCount")?,
                reject_duplicate_keys: !raw.allow_duplicate_keys,
            },
            max_body_bytes,
            check_all_bodies: raw.check_all_bodies,
            denial: raw.denial,
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
        assert_eq!(c.max_body_bytes, None);
        assert!(!c.check_all_bodies);
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
