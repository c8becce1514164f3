//! The `xml-threat-protection` configuration: the JSON contract and its compilation.

use crate::scanner::Limits;
use palisade_kit::body::{limit, BodySettings};
use palisade_kit::{config, ConfigError, DenialOverride};
use serde::Deserialize;

/// The configuration as written (camelCase JSON). Limits are -1 or absent for unlimited.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    max_node_depth: Option<i64>,
    max_attribute_count_per_element: Option<i64>,
    max_namespace_count_per_element: Option<i64>,
    max_child_count: Option<i64>,
    max_text_length: Option<i64>,
    max_attribute_length: Option<i64>,
    max_comment_length: Option<i64>,
    max_name_length: Option<i64>,
    max_body_bytes: Option<i64>,
    #[serde(default)]
    allow_dtd: bool,
    max_entity_expansion: Option<i64>,
    #[serde(default)]
    check_all_bodies: bool,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// The structural limits and DTD rules.
    pub limits: Limits,
    /// `maxBodyBytes`, `checkAllBodies` and `denial`.
    pub body: BodySettings,
}

/// The default bound on entity expansion (characters).
pub const DEFAULT_MAX_ENTITY_EXPANSION: u64 = 65_536;

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let body = BodySettings::compile(raw.max_body_bytes, raw.check_all_bodies, raw.denial)?;
        let max_entity_expansion = match raw.max_entity_expansion {
            None => DEFAULT_MAX_ENTITY_EXPANSION,
            Some(v) if v >= 0 => v as u64,
            Some(v) => {
                return Err(ConfigError::at(
                    "maxEntityExpansion",
                    format!(
                    "must be a non-negative number of characters (it cannot be unlimited), got {v}"
                ),
                ))
            }
        };
        if raw.max_entity_expansion.is_some() && !raw.allow_dtd {
            return Err(ConfigError::at(
                "maxEntityExpansion",
                "only applies with allowDtd: true (without a DTD there are no entities)",
            ));
        }
        Ok(Config {
            limits: Limits {
                max_depth: limit(raw.max_node_depth, "maxNodeDepth")?,
                max_attributes: limit(
                    raw.max_attribute_count_per_element,
                    "maxAttributeCountPerElement",
                )?,
                max_namespaces: limit(
                    raw.max_namespace_count_per_element,
                    "maxNamespaceCountPerElement",
                )?,
                max_children: limit(raw.max_child_count, "maxChildCount")?,
                max_text: limit(raw.max_text_length, "maxTextLength")?,
                max_attribute_length: limit(raw.max_attribute_length, "maxAttributeLength")?,
                max_comment: limit(raw.max_comment_length, "maxCommentLength")?,
                max_name: limit(raw.max_name_length, "maxNameLength")?,
                allow_dtd: raw.allow_dtd,
                max_entity_expansion,
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
    fn empty_configuration_is_unlimited_without_dtd() {
        let c = Config::compile(b"").unwrap();
        assert_eq!(c.limits, Limits::default());
        assert!(!c.limits.allow_dtd);
        assert_eq!(c.limits.max_entity_expansion, DEFAULT_MAX_ENTITY_EXPANSION);
        let c = Config::compile(
            br#"{"maxNodeDepth": 5, "maxChildCount": -1, "allowDtd": true, "maxEntityExpansion": 100}"#,
        )
        .unwrap();
        assert_eq!(c.limits.max_depth, Some(5));
        assert_eq!(c.limits.max_children, None);
        assert_eq!(c.limits.max_entity_expansion, 100);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(r#"{"maxNodeDepth": -2}"#).path, "maxNodeDepth");
        assert_eq!(
            err(r#"{"maxAttributeCountPerElement": "1"}"#).path,
            "maxAttributeCountPerElement"
        );
        assert_eq!(
            err(r#"{"maxNamespaceCountPerElement": -5}"#).path,
            "maxNamespaceCountPerElement"
        );
        assert_eq!(err(r#"{"maxChildCount": 1.5}"#).path, "maxChildCount");
        assert_eq!(err(r#"{"maxTextLength": -9}"#).path, "maxTextLength");
        assert_eq!(
            err(r#"{"maxAttributeLength": -9}"#).path,
            "maxAttributeLength"
        );
        assert_eq!(err(r#"{"maxCommentLength": -9}"#).path, "maxCommentLength");
        assert_eq!(err(r#"{"maxNameLength": -9}"#).path, "maxNameLength");
        assert_eq!(err(r#"{"maxBodyBytes": 0}"#).path, "maxBodyBytes");
        assert_eq!(err(r#"{"allowDtd": "yes"}"#).path, "allowDtd");
        assert_eq!(
            err(r#"{"allowDtd": true, "maxEntityExpansion": -1}"#).path,
            "maxEntityExpansion"
        );
        assert_eq!(
            err(r#"{"maxEntityExpansion": 10}"#).path,
            "maxEntityExpansion"
        );
        assert_eq!(err(r#"{"maxDepth": 3}"#).path, "maxDepth");
    }
}
