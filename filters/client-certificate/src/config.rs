//! The `client-certificate` configuration: the JSON contract and its compilation.

use palisade_kit::{config, ConfigError, Denial, DenialOverride};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// The configuration as written (camelCase JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    allowed_sans: Vec<String>,
    #[serde(default)]
    allowed_subjects: Vec<String>,
    #[serde(default)]
    allowed_fingerprints: Vec<String>,
    #[serde(default = "yes")]
    require_certificate: bool,
    #[serde(default = "palisade_kit::cors::allow_preflight_default")]
    allow_cors_preflight: bool,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

fn yes() -> bool {
    true
}

/// A SHA-256 certificate fingerprint.
pub type Fingerprint = [u8; 32];

/// The denial responses, built once.
#[derive(Debug, Clone)]
pub struct Denials {
    /// No client certificate (or no TLS at all).
    pub required: Denial,
    /// A certificate that matches no allowlist entry.
    pub denied: Denial,
}

/// The compiled configuration. SAN and subject entries map to their index in `principals`.
#[derive(Debug)]
pub struct Config {
    /// URI SANs, exact.
    pub uris: HashMap<String, usize>,
    /// DNS SANs, lowercase (DNS names are case-insensitive).
    pub dns: HashMap<String, usize>,
    /// Subjects in RFC 2253 form, exact.
    pub subjects: HashMap<String, usize>,
    /// SHA-256 fingerprints of certificates' DER.
    pub fingerprints: HashSet<Fingerprint>,
    /// The principal handed to later policies for each SAN or subject entry: the entry as
    /// configured (DNS names lowercase).
    pub principals: Vec<String>,
    /// Whether a request without a certificate is denied (else it passes unauthenticated).
    pub require_certificate: bool,
    /// Whether CORS preflights without a certificate pass.
    pub allow_cors_preflight: bool,
    /// The denial responses.
    pub denials: Denials,
}

impl Config {
    /// Parses and validates the JSON configuration.
    pub fn compile(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        if raw.allowed_sans.is_empty()
            && raw.allowed_subjects.is_empty()
            && raw.allowed_fingerprints.is_empty()
        {
            return Err(ConfigError::at(
                ".",
                "list at least one entry in allowedSans, allowedSubjects or allowedFingerprints",
            ));
        }
        let mut principals = Vec::new();
        let mut add = |map: &mut HashMap<String, usize>, key: String| {
            if !map.contains_key(&key) {
                map.insert(key.clone(), principals.len());
                principals.push(key);
            }
        };
        let (mut uris, mut dns, mut subjects) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (i, entry) in raw.allowed_sans.iter().enumerate() {
            let at = |msg: String| ConfigError::at(format!("allowedSans[{i}]"), msg);
            match san_kind(entry).map_err(at)? {
                SanKind::Uri => add(&mut uris, entry.clone()),
                SanKind::Dns => add(&mut dns, entry.to_ascii_lowercase()),
            }
        }
        for (i, entry) in raw.allowed_subjects.iter().enumerate() {
            check_subject(entry)
                .map_err(|msg| ConfigError::at(format!("allowedSubjects[{i}]"), msg))?;
            add(&mut subjects, entry.clone());
        }
        let mut fingerprints = HashSet::new();
        for (i, entry) in raw.allowed_fingerprints.iter().enumerate() {
            let fingerprint = parse_fingerprint(entry).ok_or_else(|| {
                ConfigError::at(
                    format!("allowedFingerprints[{i}]"),
                    format!(
                        "{entry:?} is not a SHA-256 fingerprint: expected 64 hex digits, colons \
                         allowed (`openssl x509 -noout -fingerprint -sha256 -in client.crt`)"
                    ),
                )
            })?;
            fingerprints.insert(fingerprint);
        }
        let denial = |status, code, message: &str| {
            Denial::new(status, code, message).overridden(raw.denial.as_ref(), "denial")
        };
        let denials = Denials {
            required: denial(
                403,
                "client_certificate_required",
                "A valid client certificate is required to access this API.",
            )?,
            denied: denial(
                403,
                "client_certificate_denied",
                "Your client certificate is not allowed to access this API.",
            )?,
        };
        Ok(Config {
            uris,
            dns,
            subjects,
            fingerprints,
            principals,
            require_certificate: raw.require_certificate,
            allow_cors_preflight: raw.allow_cors_preflight,
            denials,
        })
    }
}

/// Which kind of SAN an `allowedSans` entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SanKind {
    Uri,
    Dns,
}

/// A URI SAN has a scheme (`spiffe:`, `urn:`, `https:`); a DNS name never contains `:`.
fn san_kind(entry: &str) -> Result<SanKind, String> {
    if entry.is_empty() {
        return Err("an empty SAN matches no certificate".into());
    }
    if !entry.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{entry:?}: SANs are ASCII without spaces or control characters; this entry would \
             never match"
        ));
    }
    if let Some((scheme, rest)) = entry.split_once(':') {
        let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme || rest.is_empty() {
            return Err(format!(
                "{entry:?} is neither a URI SAN (scheme:..., e.g. spiffe://trust.domain/path) nor \
                 a DNS SAN"
            ));
        }
        return Ok(SanKind::Uri);
    }
    if entry.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "{entry:?} is an IP address: IP SANs are not matched; list the certificate's URI or \
             DNS SAN, its subject or its fingerprint"
        ));
    }
    if entry.contains('*') {
        return Err(format!(
            "{entry:?}: wildcards are not supported; list each DNS name (a SAN is matched \
             exactly, case-insensitively)"
        ));
    }
    let valid_dns = entry.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    });
    if !valid_dns || entry.len() > 253 {
        return Err(format!(
            "{entry:?} is neither a URI SAN (scheme:..., e.g. spiffe://trust.domain/path) nor a \
             DNS name"
        ));
    }
    Ok(SanKind::Dns)
}

/// An `allowedSubjects` entry must be able to equal what Envoy reports: RFC 2253, most specific
/// attribute first, `,` between attributes with no space (`CN=partner-gateway,O=Partner Co`).
fn check_subject(entry: &str) -> Result<(), String> {
    const HINT: &str = "write the subject as `openssl x509 -noout -subject -nameopt RFC2253` \
                        prints it, without `subject=`, e.g. CN=partner-gateway,O=Partner Co";
    if entry.is_empty() {
        return Err(format!("an empty subject matches no certificate; {HINT}"));
    }
    if entry.starts_with('/') {
        return Err(format!(
            "{entry:?} is in OpenSSL's one-line form, which Envoy never reports; {HINT}"
        ));
    }
    if entry.starts_with("subject=") || entry.starts_with("subject =") {
        return Err(format!("{entry:?} includes the `subject=` label; {HINT}"));
    }
    if entry.starts_with(' ') || entry.ends_with(' ') {
        return Err(format!("{entry:?} has surrounding spaces; {HINT}"));
    }
    let attribute_type = entry.split('=').next().unwrap_or_default();
    let valid_type = !attribute_type.is_empty()
        && entry.contains('=')
        && attribute_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if !valid_type {
        return Err(format!(
            "{entry:?} does not start with an attribute (CN=, O=, ...); {HINT}"
        ));
    }
    // A `, ` whose comma is not escaped separates attributes with a space, which RFC 2253 output
    // never does (a value's leading space is escaped as `\ `).
    let mut escaped = false;
    let mut previous_separator = false;
    for c in entry.chars() {
        if previous_separator && c == ' ' {
            return Err(format!(
                "{entry:?} has a space after a comma between attributes, which Envoy never \
                 reports; {HINT}"
            ));
        }
        previous_separator = !escaped && (c == ',' || c == '+');
        escaped = !escaped && c == '\\';
    }
    Ok(())
}

/// A fingerprint as hex, case-insensitive, colons allowed.
pub fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    palisade_kit::secret::parse_sha256_hex(&text.replace(':', ""))
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

    const FINGERPRINT: &str =
        "EC:58:ED:D2:2F:66:9F:9E:59:CC:05:38:17:4E:03:30:2C:30:48:D7:81:7D:81:5C:4E:DB:85:6D:C4:3A:29:2F";

    #[test]
    fn compiles_the_issue_example() {
        let c = Config::compile(
            format!(
                r#"{{"allowedSans": ["spiffe://retail.example/ns/orders/sa/fulfillment", "GW.Partner.Example"],
                    "allowedSubjects": ["CN=partner-gateway,O=Partner Co"],
                    "allowedFingerprints": ["{FINGERPRINT}"], "requireCertificate": true}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.uris
                .get("spiffe://retail.example/ns/orders/sa/fulfillment"),
            Some(&0)
        );
        assert_eq!(c.dns.get("gw.partner.example"), Some(&1));
        assert_eq!(c.subjects.get("CN=partner-gateway,O=Partner Co"), Some(&2));
        assert_eq!(c.principals[1], "gw.partner.example");
        assert!(c
            .fingerprints
            .contains(&parse_fingerprint(FINGERPRINT).unwrap()));
        assert!(c.require_certificate && c.allow_cors_preflight);
        assert_eq!(c.denials.required.status(), 403);
        assert_eq!(c.denials.required.code(), "client_certificate_required");
        assert_eq!(c.denials.denied.code(), "client_certificate_denied");
    }

    #[test]
    fn fingerprints_are_hex_in_any_case_with_or_without_colons() {
        let plain = FINGERPRINT.replace(':', "");
        let a = parse_fingerprint(FINGERPRINT).unwrap();
        assert_eq!(parse_fingerprint(&plain), Some(a));
        assert_eq!(parse_fingerprint(&plain.to_ascii_lowercase()), Some(a));
        assert_eq!(a[0], 0xec);
        assert_eq!(parse_fingerprint(&plain[2..]), None);
        assert_eq!(parse_fingerprint(&format!("{plain}00")), None);
        assert_eq!(parse_fingerprint(&plain.replace('E', "G")), None);
        // SHA-1 fingerprints are refused.
        assert_eq!(
            parse_fingerprint("A1:B2:C3:D4:E5:F6:A7:B8:C9:D0:E1:F2:A3:B4:C5:D6:E7:F8:A9:B0"),
            None
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("{}").message.contains("at least one entry"));
        assert!(err(r#"{"allowedSans": []}"#)
            .message
            .contains("at least one entry"));
        assert_eq!(
            err(r#"{"allowedSans": ["a.example"], "allowedFingerprint": []}"#).path,
            "allowedFingerprint"
        );
        let e = err(r#"{"allowedFingerprints": ["ab:cd"]}"#);
        assert_eq!(e.path, "allowedFingerprints[0]");
        assert!(e.message.contains("64 hex digits"), "{e}");
        assert_eq!(
            err(r#"{"allowedSans": ["ok.example", ""]}"#).path,
            "allowedSans[1]"
        );
        assert_eq!(
            err(r#"{"allowedSans": ["a.example"], "requireCertificate": "yes"}"#).path,
            "requireCertificate"
        );
        assert_eq!(
            err(r#"{"allowedSans": ["a.example"], "denial": {"status": 200}}"#).path,
            "denial.status"
        );
    }

    #[test]
    fn sans_that_could_never_match_are_refused() {
        for bad in [
            "has space.example",
            "*.partner.example",
            "10.1.2.3",
            "-:x",
            "spiffe:",
            "a..example",
            "ünïcode.example",
            "tab\t.example",
        ] {
            let json = serde_json::json!({ "allowedSans": [bad] }).to_string();
            assert_eq!(err(&json).path, "allowedSans[0]", "{bad}");
        }
        for good in [
            "spiffe://retail.example/ns/orders/sa/fulfillment",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "localhost",
            "api-1.partner_gw.example",
        ] {
            let json = serde_json::json!({ "allowedSans": [good] }).to_string();
            assert!(Config::compile(json.as_bytes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn subjects_that_envoy_never_reports_are_refused_with_a_hint() {
        for bad in [
            "/O=Partner Co/CN=partner-gateway",
            "subject=CN=partner-gateway,O=Partner Co",
            "CN=partner-gateway, O=Partner Co",
            " CN=x",
            "partner-gateway",
            "=x",
        ] {
            let json = serde_json::json!({ "allowedSubjects": [bad] }).to_string();
            let e = err(&json);
            assert_eq!(e.path, "allowedSubjects[0]", "{bad}");
            assert!(e.message.contains("RFC2253"), "{e}");
        }
        for good in [
            "CN=partner-gateway,O=Partner Co",
            r"CN=legacy-client,O=M\C3\BCller\, S\C3\B6hne,C=DE",
            r"CN=a\, b,O=x",
            "CN=a+UID=b,O=x",
            "1.2.840.113549.1.9.1=#160e6d65406578616d706c652e636f6d,CN=x",
        ] {
            let json = serde_json::json!({ "allowedSubjects": [good] }).to_string();
            assert!(Config::compile(json.as_bytes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn duplicates_share_one_entry_and_the_denial_override_applies_to_both() {
        let c = Config::compile(
            br#"{"allowedSans": ["a.example", "A.EXAMPLE"], "requireCertificate": false,
                 "allowCorsPreflight": false,
                 "denial": {"status": 404, "body": "no", "contentType": "text/plain"}}"#,
        )
        .unwrap();
        assert_eq!(c.principals, vec!["a.example".to_owned()]);
        assert!(!c.require_certificate && !c.allow_cors_preflight);
        assert_eq!(c.denials.required.status(), 404);
        assert_eq!(c.denials.denied.body(), b"no");
    }
}
