//! `client-certificate`: client-certificate (mTLS) authorization.
//!
//! Envoy terminates TLS and validates the client certificate against the listener's trusted CA;
//! this policy decides which of those valid certificates may call the API: by URI or DNS SAN,
//! by subject (RFC 2253, as Envoy reports it) or by SHA-256 fingerprint. It reads only Envoy's
//! connection attributes, never a header, and hands the matched identity to later policies.
//!
//! [`config`] reads and compiles the configuration, [`x509`] lists a certificate's SANs when the
//! first ones (all Envoy's attributes carry) do not match, and [`ClientCertificate`] decides in
//! the request-headers phase. The kit's runtime does the rest (`palisade_kit::wasm::start`).

pub mod config;
pub mod x509;

use config::{Config, Fingerprint};
use palisade_kit::identity::{self, Identity};
use palisade_kit::{cors, ConfigError, Host, LogLevel, Policy, Request, Verdict};

/// Envoy's connection attributes the policy reads.
pub mod attributes {
    /// Whether the client presented a certificate (one byte, 1 or 0; 0 on plain HTTP).
    pub const MTLS: &[&str] = &["connection", "mtls"];
    /// The first URI SAN.
    pub const URI_SAN: &[&str] = &["connection", "uri_san_peer_certificate"];
    /// The first DNS SAN.
    pub const DNS_SAN: &[&str] = &["connection", "dns_san_peer_certificate"];
    /// The subject, RFC 2253.
    pub const SUBJECT: &[&str] = &["connection", "subject_peer_certificate"];
    /// SHA-256 of the certificate's DER, 64 lowercase hex digits.
    pub const SHA256: &[&str] = &["connection", "sha256_peer_certificate_digest"];
    /// The certificate, PEM.
    pub const CERTIFICATE: &[&str] = &["connection", "peer_certificate"];
}

palisade_kit::counters! {
    /// The policy's counters (`palisade_client_certificate_<outcome>`).
    pub struct Metrics {
        allowed,
        denied_no_certificate,
        denied_unlisted,
        allowed_without_certificate,
        preflight,
        certificate_parsed,
        certificate_unreadable,
    }
}

/// What admitted a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matched {
    /// A SAN or subject entry: the index of its principal.
    Entry(usize),
    /// A fingerprint: the principal comes from the certificate.
    Fingerprint,
}

/// The compiled policy.
pub struct ClientCertificate {
    config: Config,
    /// The identity hand-off of each SAN or subject entry, serialised once.
    identities: Vec<Vec<u8>>,
    metrics: Metrics,
}

impl ClientCertificate {
    /// Builds the policy from a compiled configuration.
    pub fn new(config: Config, host: &mut impl Host) -> Result<Self, ConfigError> {
        let identities = config
            .principals
            .iter()
            .map(|principal| identity_bytes(principal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientCertificate {
            config,
            identities,
            metrics: Metrics::define(host, Self::NAME)?,
        })
    }

    /// Matches the client certificate against the allowlists, cheapest reads first: the first
    /// URI SAN, DNS SAN, subject and fingerprint are one attribute read each; only when none of
    /// them matches and the certificate has a SAN of a listed kind is the certificate itself
    /// read for its other SANs.
    /// Attributes exist only when the client presented a certificate that Envoy accepted.
    /// Returns the match, and whether a certificate was seen on the way.
    fn authenticate(&self, host: &impl Host) -> (Option<Matched>, bool) {
        let c = &self.config;
        let mut seen = false;
        // Whether the certificate has a SAN of a listed kind (only then can it have a second).
        let mut has_san = false;
        if !c.uris.is_empty() {
            if let Some(uri) = read(host, attributes::URI_SAN, &mut seen) {
                has_san = true;
                if let Some(&i) = std::str::from_utf8(&uri).ok().and_then(|u| c.uris.get(u)) {
                    return (Some(Matched::Entry(i)), true);
                }
            }
        }
        if !c.dns.is_empty() {
            if let Some(name) = read(host, attributes::DNS_SAN, &mut seen) {
                has_san = true;
                if let Some(&i) = c
                    .dns
                    .get(&String::from_utf8_lossy(&name).to_ascii_lowercase())
                {
                    return (Some(Matched::Entry(i)), true);
                }
            }
        }
        if !c.subjects.is_empty() {
            if let Some(subject) = read(host, attributes::SUBJECT, &mut seen) {
                if let Some(&i) = std::str::from_utf8(&subject)
                    .ok()
                    .and_then(|s| c.subjects.get(s))
                {
                    return (Some(Matched::Entry(i)), true);
                }
            }
        }
        if !c.fingerprints.is_empty() {
            if let Some(digest) = read(host, attributes::SHA256, &mut seen) {
                if digest_of(&digest).is_some_and(|d| c.fingerprints.contains(&d)) {
                    return (Some(Matched::Fingerprint), true);
                }
            }
        }
        if !has_san {
            return (None, seen);
        }
        // Envoy's SAN attributes carry only the first URI and DNS SAN: look at the others.
        let Some(pem) = read(host, attributes::CERTIFICATE, &mut seen) else {
            return (None, seen);
        };
        self.metrics.certificate_parsed.inc(host);
        let Some(names) = x509::pem_to_der(&pem).and_then(|der| x509::alt_names(&der)) else {
            self.metrics.certificate_unreadable.inc(host);
            host.log(
                LogLevel::Warn,
                &format!("{}: the client certificate could not be read", Self::NAME),
            );
            return (None, true);
        };
        let by_uri = names.uris.iter().find_map(|uri| c.uris.get(uri));
        let by_dns = || {
            names
                .dns
                .iter()
                .find_map(|name| c.dns.get(&name.to_ascii_lowercase()))
        };
        (by_uri.or_else(by_dns).copied().map(Matched::Entry), true)
    }

    fn admit(&self, host: &mut impl Host, matched: Matched) -> Verdict {
        // A failed hand-off only means later policies see no identity (and deny if they need
        // one); it does not make this request less authenticated.
        let _ = match matched {
            Matched::Entry(i) => match self.identities.get(i) {
                Some(identity) => host.set_property(identity::PROPERTY_PATH, identity),
                None => Ok(()),
            },
            Matched::Fingerprint => match identity_bytes(&certificate_principal(host)) {
                Ok(identity) => host.set_property(identity::PROPERTY_PATH, &identity),
                Err(_) => Ok(()),
            },
        };
        self.metrics.allowed.inc(host);
        Verdict::Continue
    }

    fn deny_unlisted(&self, host: &mut impl Host) -> Verdict {
        self.metrics.denied_unlisted.inc(host);
        let subject = host
            .property(attributes::SUBJECT)
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default();
        host.log(
            LogLevel::Debug,
            &format!(
                "{}: client certificate `{subject}` matches no allowlist entry",
                Self::NAME
            ),
        );
        self.config.denials.denied.send(host)
    }
}

/// The identity hand-off for `principal`. The certificate's identity is both the principal and
/// the client id, so later policies can key on it (`keySelector: "client-id"`).
fn identity_bytes(principal: &str) -> Result<Vec<u8>, ConfigError> {
    serde_json::to_vec(&Identity {
        authenticated_by: ClientCertificate::NAME.into(),
        client_id: Some(principal.to_owned()),
        principal: Some(principal.to_owned()),
        ..Identity::default()
    })
    .map_err(|e| ConfigError::at(".", format!("cannot prepare the identity: {e}")))
}

/// Who a certificate admitted by its fingerprint is: its first URI SAN, else its first DNS SAN,
/// else its subject, else `sha256:<fingerprint>`.
fn certificate_principal(host: &impl Host) -> String {
    [
        attributes::URI_SAN,
        attributes::DNS_SAN,
        attributes::SUBJECT,
    ]
    .iter()
    .find_map(|path| {
        host.property(path)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    })
    .or_else(|| {
        host.property(attributes::SHA256)
            .map(|d| format!("sha256:{}", String::from_utf8_lossy(&d)))
    })
    .unwrap_or_default()
}

/// A certificate attribute, non-empty; notes in `seen` that a certificate was presented.
fn read(host: &impl Host, path: &[&str], seen: &mut bool) -> Option<Vec<u8>> {
    let value = host.property(path).filter(|v| !v.is_empty())?;
    *seen = true;
    Some(value)
}

/// Envoy's hex digest as bytes.
fn digest_of(hex: &[u8]) -> Option<Fingerprint> {
    config::parse_fingerprint(std::str::from_utf8(hex).ok()?)
}

impl Policy for ClientCertificate {
    const NAME: &'static str = "client-certificate";
    type State = ();

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        ClientCertificate::new(Config::compile(config)?, host)
    }

    fn on_request_headers(
        &self,
        _: &mut Request<'_, ()>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let (matched, seen) = self.authenticate(host);
        if let Some(matched) = matched {
            return self.admit(host, matched);
        }
        // Nothing matched: was there a certificate at all? (`mtls` is false on plain HTTP and
        // on TLS connections without a client certificate.)
        if seen || host.property(attributes::MTLS).as_deref() == Some(&[1]) {
            return self.deny_unlisted(host);
        }
        // Browsers send CORS preflights without credentials, client certificates included.
        if self.config.allow_cors_preflight && cors::is_preflight(host, end_of_stream) {
            self.metrics.preflight.inc(host);
            return Verdict::Continue;
        }
        if !self.config.require_certificate {
            self.metrics.allowed_without_certificate.inc(host);
            return Verdict::Continue;
        }
        self.metrics.denied_no_certificate.inc(host);
        self.config.denials.required.send(host)
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<ClientCertificate>(); }}

#[cfg(test)]
mod tests;
