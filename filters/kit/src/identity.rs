//! The authenticated-identity hand-off between policies of one request.
//!
//! An auth policy (client-ID enforcement, Basic auth, JWT...) records who the caller is; later
//! policies (SLA rate limiting, masking...) read it. It travels in Envoy filter state
//! (`set_property`), which lives only for the request, is shared by every filter of the chain,
//! and cannot be written by a client: a request header of any name is never consulted.

use crate::host::{Host, HostError};
use serde::{Deserialize, Serialize};

/// The property path the identity is stored under (filter state `wasm.palisade.identity`).
pub const PROPERTY_PATH: &[&str] = &["palisade.identity"];

/// Who the caller is, as established by an auth policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The policy that authenticated the caller (e.g. `client-id-enforcement`).
    pub authenticated_by: String,
    /// The client application id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The client application's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The caller (user name, token subject...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The SLA tier of the client for this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Claims of a validated token.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// An identity serialized once, to hand on for many requests: build it where the identity is
/// known ahead of the request (per user at configure time, per registry client, per cached
/// token), and [`Handoff::publish`] costs one host call and no serialization per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff(Vec<u8>);

impl Handoff {
    /// Records the identity for later policies of the current request.
    pub fn publish(&self, host: &mut impl Host) -> Result<(), HostError> {
        host.set_property(PROPERTY_PATH, &self.0)
    }

    /// The serialized identity, as later policies read it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Identity {
    /// Serializes this identity once, for [`Handoff::publish`] on many requests.
    pub fn handoff(&self) -> Result<Handoff, serde_json::Error> {
        serde_json::to_vec(self).map(Handoff)
    }

    /// Records this identity for later policies of the current request (serializing it: for
    /// an identity handed on more than once, keep its [`Identity::handoff`]).
    pub fn publish(&self, host: &mut impl Host) -> Result<(), HostError> {
        let handoff = self.handoff().map_err(|_| HostError::Other(0))?;
        handoff.publish(host)
    }

    /// The identity an earlier policy of this request recorded, if any.
    pub fn current(host: &impl Host) -> Option<Identity> {
        let bytes = host.property(PROPERTY_PATH)?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A claim as text: strings as they are, other JSON values in their JSON form.
    pub fn claim(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn published_identity_is_read_back_and_headers_are_not_trusted() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.add_header(
            "palisade.identity",
            r#"{"authenticatedBy":"me","clientId":"forged"}"#,
        );
        req.add_header(
            "x-palisade-identity",
            r#"{"authenticatedBy":"me","clientId":"forged"}"#,
        );
        assert_eq!(Identity::current(&req), None);

        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        claims.insert("level".into(), 3.into());
        let id = Identity {
            authenticated_by: "jwt-validation".into(),
            client_id: Some("app-1".into()),
            tier: Some("gold".into()),
            claims,
            ..Default::default()
        };
        id.publish(&mut req).unwrap();
        let read = Identity::current(&req).unwrap();
        assert_eq!(read, id);
        assert_eq!(read.claim("sub").as_deref(), Some("alice"));
        assert_eq!(read.claim("level").as_deref(), Some("3"));
        assert_eq!(read.claim("nope"), None);

        // A different request does not see it.
        assert_eq!(Identity::current(&envoy.request(0)), None);
    }

    #[test]
    fn a_handoff_publishes_the_same_identity_with_one_host_call() {
        let envoy = TestEnvoy::new(1);
        let id = Identity {
            authenticated_by: "client-id-enforcement".into(),
            client_id: Some("app-1".into()),
            tier: Some("gold".into()),
            ..Default::default()
        };
        let handoff = id.handoff().unwrap();
        for _ in 0..2 {
            let mut req = envoy.request(0);
            handoff.publish(&mut req).unwrap();
            assert_eq!(req.host_calls().total(), 1);
            assert_eq!(req.host_calls().get("set_property"), 1);
            assert_eq!(Identity::current(&req), Some(id.clone()));
        }
        assert_eq!(handoff.as_bytes(), serde_json::to_vec(&id).unwrap());
    }
}
