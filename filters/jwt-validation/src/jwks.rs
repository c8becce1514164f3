//! Fetching the JWKS once per Envoy and sharing it with every worker.
//!
//! Every VM's root context ticks, but a fetch happens only when the shared schedule says it is
//! due, and the VM that claims it (compare-and-swap on the schedule) is the only one fetching.
//! The fetched document is published with [`SharedDocument`]; each VM parses it again only when
//! its version changes. A failed fetch keeps the last good document (stale keys stay in use for
//! `maxStaleSeconds`) and is retried with exponential backoff. A token with an unknown `kid`
//! brings the next fetch forward, at most once per `minRefreshSeconds`.

use crate::config::{parse_uri, Endpoint, Remote};
use palisade_kit::background::SharedDocument;
use palisade_kit::shared::{cas_update, SharedError, Update};
use palisade_kit::Host;

/// The largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// A claimed fetch holds the schedule this long beyond its timeout (if the fetching VM vanishes,
/// another one fetches after that).
pub const LEASE_SLACK_MS: u64 = 2_000;

/// The shared fetch schedule of one JWKS:
/// `next_due_ms | lease_until_ms | last_kid_refresh_ms | failures` (u64 LE each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    /// When the next fetch is due (0: at once).
    pub next_due_ms: u64,
    /// A fetch is in flight until then.
    pub lease_until_ms: u64,
    /// The last refresh brought forward by an unknown `kid`.
    pub last_kid_refresh_ms: u64,
    /// Consecutive failed fetches.
    pub failures: u64,
}

impl Schedule {
    fn decode(bytes: Option<&[u8]>) -> Schedule {
        let at = |i: usize| {
            bytes
                .and_then(|b| b.get(i * 8..i * 8 + 8))
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        Schedule {
            next_due_ms: at(0),
            lease_until_ms: at(1),
            last_kid_refresh_ms: at(2),
            failures: at(3),
        }
    }

    fn encode(&self) -> Vec<u8> {
        [
            self.next_due_ms,
            self.lease_until_ms,
            self.last_kid_refresh_ms,
            self.failures,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
    }
}

/// What a fetch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchKind {
    /// The OpenID discovery document.
    Discovery,
    /// The JWKS at this endpoint.
    Jwks(Endpoint),
}

/// The shared state of one remote JWKS.
pub struct JwksSource {
    /// The settings.
    pub remote: Remote,
    /// Where the document is published.
    pub doc: SharedDocument,
    schedule_key: String,
}

impl JwksSource {
    /// The shared state for `remote`.
    pub fn new(remote: Remote) -> Self {
        JwksSource {
            doc: SharedDocument::new(&format!("jwt-jwks:{}", remote.name)),
            schedule_key: format!("palisade:jwt-validation:{}:schedule", remote.name),
            remote,
        }
    }

    /// The shared schedule as it is now.
    pub fn schedule(&self, host: &impl Host) -> Schedule {
        Schedule::decode(
            host.shared_get(&self.schedule_key)
                .ok()
                .and_then(|v| v.0)
                .as_deref(),
        )
    }

    /// Claims the fetch if one is due and none is in flight; `true` if this VM must fetch now.
    pub fn try_claim(&self, host: &impl Host) -> Result<bool, SharedError> {
        let now = host.now_ms();
        let lease = now + u64::from(self.remote.timeout_ms) + LEASE_SLACK_MS;
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            if now < s.next_due_ms || now < s.lease_until_ms {
                return Update::Keep(false);
            }
            s.lease_until_ms = lease;
            Update::Write(s.encode(), true)
        })
    }

    /// Extends the claim for a second request (the JWKS after the discovery document).
    pub fn extend_claim(&self, host: &impl Host) -> Result<(), SharedError> {
        let lease = host.now_ms() + u64::from(self.remote.timeout_ms) + LEASE_SLACK_MS;
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            s.lease_until_ms = lease;
            Update::Write(s.encode(), ())
        })
    }

    /// Records the end of a fetch: after a success the next one is due at 80 % of the cache
    /// time; after a failure it is retried with exponential backoff (1 s, 2 s, 4 s... at most a
    /// minute, and never later than a regular refresh).
    pub fn complete(&self, host: &impl Host, ok: bool) -> Result<(), SharedError> {
        let now = host.now_ms();
        let refresh = (self.remote.cache_ms / 5 * 4).max(1_000);
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            s.lease_until_ms = 0;
            if ok {
                s.failures = 0;
                s.next_due_ms = now + refresh;
            } else {
                let backoff = 1_000u64 << s.failures.min(6);
                s.failures = s.failures.saturating_add(1);
                s.next_due_ms = now + backoff.min(60_000).min(refresh);
            }
            Update::Write(s.encode(), ())
        })
    }

    /// A token carried an unknown `kid`: makes the next fetch due now, unless that happened less
    /// than `minRefreshSeconds` ago. `true` if a refresh was requested.
    pub fn request_refresh(&self, host: &impl Host) -> Result<bool, SharedError> {
        let now = host.now_ms();
        let min = self.remote.min_refresh_ms;
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            if s.last_kid_refresh_ms != 0 && now < s.last_kid_refresh_ms.saturating_add(min) {
                return Update::Keep(false);
            }
            s.last_kid_refresh_ms = now;
            s.next_due_ms = now;
            Update::Write(s.encode(), true)
        })
    }

    /// Whether a fetch is due or in flight (a refresh is on its way).
    pub fn fetch_pending(&self, host: &impl Host) -> bool {
        let s = self.schedule(host);
        let now = host.now_ms();
        now >= s.next_due_ms || now < s.lease_until_ms
    }

    /// The request headers of a fetch.
    pub fn request<'a>(&'a self, kind: &'a FetchKind) -> (&'a str, Vec<(&'a str, &'a str)>) {
        let endpoint = match kind {
            FetchKind::Discovery => &self.remote.endpoint,
            FetchKind::Jwks(e) => e,
        };
        (
            &endpoint.cluster,
            vec![
                (":method", "GET"),
                (":path", &endpoint.path),
                (":authority", &endpoint.authority),
                (":scheme", "http"),
                ("accept", "application/json"),
            ],
        )
    }

    /// The first fetch of a cycle.
    pub fn first_fetch(&self) -> FetchKind {
        if self.remote.discovery {
            FetchKind::Discovery
        } else {
            FetchKind::Jwks(self.remote.endpoint.clone())
        }
    }

    /// Reads the JWKS endpoint from a discovery document; its `issuer` must be `issuer`.
    pub fn jwks_endpoint(&self, document: &[u8], issuer: &str) -> Result<Endpoint, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let d: Discovery = serde_json::from_slice(document)
            .map_err(|e| format!("not an OpenID discovery document: {e}"))?;
        if d.issuer != issuer {
            return Err(format!(
                "the discovery document names issuer {:?}, not the configured one",
                d.issuer
            ));
        }
        let (authority, path) = parse_uri(&d.jwks_uri)
            .ok_or_else(|| format!("jwks_uri {:?} is not an http(s) URI", d.jwks_uri))?;
        Ok(Endpoint {
            cluster: self.remote.endpoint.cluster.clone(),
            authority,
            path,
        })
    }

    /// Whether keys published at `published_ms` may still be used at `now_ms`.
    pub fn usable(&self, published_ms: u64, now_ms: u64) -> bool {
        now_ms
            < published_ms
                .saturating_add(self.remote.cache_ms)
                .saturating_add(self.remote.max_stale_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::testing::TestEnvoy;

    fn source(cache_ms: u64) -> JwksSource {
        JwksSource::new(Remote {
            endpoint: Endpoint {
                cluster: "idp".into(),
                authority: "idp:80".into(),
                path: "/jwks".into(),
            },
            discovery: false,
            cache_ms,
            timeout_ms: 1_000,
            max_stale_ms: 10_000,
            min_refresh_ms: 30_000,
            name: "t".into(),
        })
    }

    #[test]
    fn one_vm_claims_a_due_fetch_until_it_completes() {
        let envoy = TestEnvoy::new(3);
        let s = source(10_000);
        let (a, b) = (envoy.request(0), envoy.request(1));
        assert!(s.try_claim(&a).unwrap(), "nothing fetched yet: due");
        assert!(!s.try_claim(&b).unwrap(), "in flight");
        s.complete(&a, true).unwrap();
        assert!(!s.try_claim(&b).unwrap(), "fresh");
        envoy.advance_ms(7_999);
        assert!(!s.try_claim(&b).unwrap());
        envoy.advance_ms(1);
        assert!(
            s.try_claim(&b).unwrap(),
            "refreshed at 80 % of the cache time"
        );
    }

    #[test]
    fn a_vanished_fetcher_loses_its_claim() {
        let envoy = TestEnvoy::new(2);
        let s = source(10_000);
        assert!(s.try_claim(&envoy.request(0)).unwrap());
        envoy.advance_ms(1_000 + LEASE_SLACK_MS);
        assert!(s.try_claim(&envoy.request(1)).unwrap());
    }

    #[test]
    fn failures_back_off_exponentially() {
        let envoy = TestEnvoy::new(1);
        let h = envoy.request(0);
        let s = source(600_000);
        let mut delays = Vec::new();
        for _ in 0..9 {
            assert!(s.try_claim(&h).unwrap());
            s.complete(&h, false).unwrap();
            let due = s.schedule(&h).next_due_ms - envoy.now_ms();
            delays.push(due);
            envoy.advance_ms(due);
        }
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
    }

    #[test]
    fn unknown_kid_refreshes_are_rate_limited() {
        let envoy = TestEnvoy::new(2);
        let s = source(600_000);
        let h = envoy.request(0);
        assert!(s.try_claim(&h).unwrap());
        s.complete(&h, true).unwrap();
        assert!(s.request_refresh(&envoy.request(1)).unwrap());
        assert!(s.try_claim(&h).unwrap(), "brought forward");
        s.complete(&h, true).unwrap();
        envoy.advance_ms(29_000);
        assert!(!s.request_refresh(&h).unwrap(), "too soon");
        assert!(!s.try_claim(&h).unwrap());
        envoy.advance_ms(1_000);
        assert!(s.request_refresh(&h).unwrap());
    }

    #[test]
    fn discovery_documents_must_name_the_issuer() {
        let s = source(1_000);
        let ok = br#"{"issuer": "http://i", "jwks_uri": "http://127.0.0.1:5/keys"}"#;
        let e = s.jwks_endpoint(ok, "http://i").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("127.0.0.1:5", "/keys")
        );
        assert!(s.jwks_endpoint(ok, "http://other").is_err());
        assert!(s.jwks_endpoint(b"[]", "http://i").is_err());
    }

    #[test]
    fn stale_keys_are_usable_for_max_stale_after_expiry() {
        let s = source(1_000);
        assert!(s.usable(0, 10_999));
        assert!(!s.usable(0, 11_000));
    }
}
