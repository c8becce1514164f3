//! The JWKS as a background document: fetched once per Envoy by the kit's
//! [`palisade_kit::fetch::Fetcher`] (optionally through the OpenID discovery document, which
//! names the JWKS URI), validated before it is published, parsed once per worker per version.

use crate::config::{parse_uri, Endpoint, Remote};
use crate::keys::{Algorithm, KeySet};
use palisade_kit::fetch::{FetchSettings, Fetched, Source};

/// The largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// How fetched documents are judged and parsed.
pub struct JwksSource {
    /// Whether the configured endpoint serves the discovery document rather than the JWKS.
    pub discovery: bool,
    /// The issuer a discovery document must name.
    pub issuer: String,
    /// The cluster the JWKS is fetched from (the discovery document's host is not trusted).
    pub cluster: String,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Configured HMAC keys, added to every fetched set.
    pub hmac: KeySet,
}

impl JwksSource {
    /// The fetch settings of `remote`: refreshed at 80 % of the cache time.
    pub fn settings(remote: &Remote) -> FetchSettings {
        FetchSettings {
            endpoint: remote.endpoint.clone(),
            refresh_ms: (remote.cache_ms / 5 * 4).max(1_000),
            timeout_ms: remote.timeout_ms,
            min_refresh_ms: remote.min_refresh_ms,
            max_bytes: MAX_DOCUMENT_BYTES,
        }
    }

    /// Reads the JWKS endpoint from a discovery document; its `issuer` must be the configured
    /// one.
    pub fn jwks_endpoint(&self, document: &[u8]) -> Result<Endpoint, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let d: Discovery = serde_json::from_slice(document)
            .map_err(|e| format!("not an OpenID discovery document: {e}"))?;
        if d.issuer != self.issuer {
            return Err(format!(
                "the discovery document names issuer {:?}, not the configured one",
                d.issuer
            ));
        }
        let (authority, path) = parse_uri(&d.jwks_uri)
            .ok_or_else(|| format!("jwks_uri {:?} is not an http(s) URI", d.jwks_uri))?;
        Ok(Endpoint {
            cluster: self.cluster.clone(),
            authority,
            path,
        })
    }
}

impl Source for JwksSource {
    type Document = KeySet;

    fn accept(&self, body: &[u8], followed: bool) -> Fetched {
        if self.discovery && !followed {
            return match self.jwks_endpoint(body) {
                Ok(endpoint) => Fetched::Follow(endpoint),
                Err(why) => Fetched::Invalid(why),
            };
        }
        match KeySet::parse_fetched(body, &self.algorithms) {
            Ok(set) => Fetched::Publish(format!("{} verifiers", set.len())),
            Err(why) => Fetched::Invalid(why),
        }
    }

    fn parse(&self, bytes: &[u8]) -> Option<KeySet> {
        let mut set = KeySet::parse_fetched(bytes, &self.algorithms).ok()?;
        set.extend(&self.hmac);
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> JwksSource {
        JwksSource {
            discovery: true,
            issuer: "http://i".into(),
            cluster: "idp".into(),
            algorithms: Algorithm::ASYMMETRIC.to_vec(),
            hmac: KeySet::default(),
        }
    }

    #[test]
    fn discovery_documents_must_name_the_issuer() {
        let s = source();
        let ok = br#"{"issuer": "http://i", "jwks_uri": "http://127.0.0.1:5/keys"}"#;
        let e = s.jwks_endpoint(ok).unwrap();
        assert_eq!(
            (e.cluster.as_str(), e.authority.as_str(), e.path.as_str()),
            ("idp", "127.0.0.1:5", "/keys")
        );
        assert!(matches!(s.accept(ok, false), Fetched::Follow(_)));
        assert!(
            matches!(s.accept(ok, true), Fetched::Invalid(_)),
            "not a JWKS"
        );
        let other = br#"{"issuer": "http://other", "jwks_uri": "http://127.0.0.1:5/keys"}"#;
        assert!(s.jwks_endpoint(other).is_err());
        assert!(s.jwks_endpoint(b"[]").is_err());
    }

    #[test]
    fn refreshes_at_80_percent_of_the_cache_time() {
        let remote = Remote {
            endpoint: Endpoint {
                cluster: "idp".into(),
                authority: "idp:80".into(),
                path: "/jwks".into(),
            },
            discovery: false,
            cache_ms: 10_000,
            timeout_ms: 1_000,
            max_stale_ms: 10_000,
            min_refresh_ms: 30_000,
            name: "t".into(),
        };
        let settings = JwksSource::settings(&remote);
        assert_eq!(
            (settings.refresh_ms, settings.min_refresh_ms),
            (8_000, 30_000)
        );
    }
}
