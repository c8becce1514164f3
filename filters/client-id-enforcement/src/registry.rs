//! The registry of client applications and their contracts.

use palisade_kit::identity::Handoff;
use palisade_kit::secret::parse_sha256_hex;
use serde::Deserialize;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A client application as written in configuration or served by a registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawClient {
    /// The id the client presents.
    pub client_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Hex SHA-256 of the client secret (secrets are generated, high-entropy values, so a fast
    /// hash is enough; a password-style slow hash would only slow the gateway down).
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// A disabled client is refused.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// API name to SLA tier name.
    #[serde(default)]
    pub contracts: HashMap<String, String>,
}

fn yes() -> bool {
    true
}

/// A client, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret, if the client has one.
    pub secret_sha256: Option<[u8; 32]>,
    /// Whether the client may call at all.
    pub enabled: bool,
    /// API name to SLA tier name.
    pub contracts: HashMap<String, String>,
    /// The identity hand-off of this client with the tier it was admitted at, serialized on its
    /// first admitted request and reused after (a registry belongs to one policy, so one API).
    pub handoff: OnceCell<(String, Handoff)>,
}

impl RawClient {
    /// Validates one entry; the error names the field and never quotes a secret.
    pub fn validate(self) -> Result<Client, (&'static str, String)> {
        if self.client_id.is_empty() {
            return Err(("clientId", "must not be empty".into()));
        }
        let secret_sha256 = match self.secret_sha256 {
            None => None,
            Some(hex) => Some(parse_sha256_hex(&hex).ok_or((
                "secretSha256",
                "must be 64 hexadecimal characters (a SHA-256)".to_owned(),
            ))?),
        };
        Ok(Client {
            id: self.client_id,
            name: self.name,
            secret_sha256,
            enabled: self.enabled,
            contracts: self.contracts,
            handoff: OnceCell::new(),
        })
    }
}

/// Clients by id: one hash lookup per request, whatever the registry size.
#[derive(Debug, Default)]
pub struct Registry {
    clients: HashMap<String, Rc<Client>>,
}

impl Registry {
    /// Builds a registry; `path` names the list in error messages. Duplicate ids are refused.
    pub fn from_raw(raw: Vec<RawClient>, path: &str) -> Result<Registry, (String, String)> {
        let mut clients = HashMap::with_capacity(raw.len());
        for (i, entry) in raw.into_iter().enumerate() {
            let client = entry
                .validate()
                .map_err(|(field, msg)| (format!("{path}[{i}].{field}"), msg))?;
            let id = client.id.clone();
            if clients.insert(id.clone(), Rc::new(client)).is_some() {
                return Err((
                    format!("{path}[{i}].clientId"),
                    format!("duplicate client id {id:?}"),
                ));
            }
        }
        Ok(Registry { clients })
    }

    /// Parses a registry document: `{"clients": [...]}` or a bare `[...]`. The shape is told by
    /// the first byte rather than by an untagged enum, which would first copy the whole
    /// document (50,000 clients: several MB, once per worker per version) into serde's
    /// buffered form and then deserialize it again.
    pub fn parse_document(bytes: &[u8]) -> Result<Registry, String> {
        #[derive(Deserialize)]
        struct Wrapped {
            clients: Vec<RawClient>,
        }
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let raw = if first == Some(&b'[') {
            serde_json::from_slice::<Vec<RawClient>>(bytes)
        } else {
            serde_json::from_slice::<Wrapped>(bytes).map(|w| w.clients)
        }
        // Where and what kind, never serde's text: it can quote a value of the document.
        .map_err(|e| {
            format!(
                "not a client registry document ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        Registry::from_raw(raw, "clients").map_err(|(path, msg)| format!("{path}: {msg}"))
    }

    /// The client with this id.
    pub fn get(&self, id: &str) -> Option<&Rc<Client>> {
        self.clients.get(id)
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are no clients.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn parses_both_document_shapes_and_defaults() {
        let doc = format!(r#"{{"clients": [{{"clientId": "a", "secretSha256": "{HASH}"}}]}}"#);
        let r = Registry::parse_document(doc.as_bytes()).unwrap();
        let a = r.get("a").unwrap();
        assert!(a.enabled);
        assert!(a.contracts.is_empty());
        assert!(a.secret_sha256.is_some());
        let r =
            Registry::parse_document(br#"[{"clientId": "b", "contracts": {"orders": "gold"}}]"#)
                .unwrap();
        assert_eq!(r.get("b").unwrap().contracts["orders"], "gold");
        assert!(r.get("a").is_none());
    }

    #[test]
    fn rejects_bad_documents_without_quoting_secrets() {
        for bad in [
            &b"garbage"[..],
            br#"{"clients": [{"clientId": ""}]}"#,
            br#"{"clients": [{"clientId": "a", "secretSha256": "c2VjcmV0"}]}"#,
            br#"[{"clientId": "a"}, {"clientId": "a"}]"#,
            br#"[{"clientId": "a", "secret": "x"}]"#,
            br#"[{"clientId": "a", "enabled": "c2VjcmV0"}]"#,
            br#"{"clients": [{"clientId": "a", "name": ["c2VjcmV0"]}]}"#,
            br#"[[{"clientId": "a"}]]"#,
        ] {
            let err = Registry::parse_document(bad).unwrap_err();
            assert!(!err.contains("c2VjcmV0"), "{err}");
        }
    }

    #[test]
    fn a_large_registry_is_a_hash_lookup() {
        let raw: Vec<RawClient> = (0..50_000)
            .map(|i| RawClient {
                client_id: format!("client-{i}"),
                name: String::new(),
                secret_sha256: None,
                enabled: true,
                contracts: HashMap::new(),
            })
            .collect();
        let r = Registry::from_raw(raw, "clients").unwrap();
        assert_eq!(r.len(), 50_000);
        assert!(r.get("client-49999").is_some());
        assert!(r.get("client-50000").is_none());
    }
}
