//! Documents published once per Envoy for every worker.
//!
//! What a background fetch brings (a registry, a JWKS) is published with [`SharedDocument`] for
//! every worker and policy to read; `fetch::Fetcher` decides which VM fetches and when. Readers
//! poll a small version key and re-parse the document only when the version changed
//! ([`CachedDocument`]), so a 50,000-entry registry is not copied per request.

use crate::host::{Host, HostError};
use crate::shared::{add_to_counter, SharedError};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The `u64` at `at`, 0 when absent.
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    crate::shared::read_u64(bytes, at).unwrap_or(0)
}

/// A document (a client registry, a JWKS...) published once per Envoy for every worker.
///
/// The body lives under `<name>:data` as `version | published_ms | bytes`; `<name>:version`
/// holds the version alone, so readers learn of a change by reading 8 bytes.
#[derive(Debug, Clone)]
pub struct SharedDocument {
    data_key: String,
    version_key: String,
}

/// A published document as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Increases with every publication.
    pub version: u64,
    /// When it was published (ms since the epoch), to judge staleness.
    pub published_ms: u64,
    /// The document.
    pub bytes: Vec<u8>,
}

impl SharedDocument {
    /// The document called `name`.
    pub fn new(name: &str) -> Self {
        SharedDocument {
            data_key: format!("palisade:doc:{name}:data"),
            version_key: format!("palisade:doc:{name}:version"),
        }
    }

    /// Publishes a new version. The body is written before the version is announced, so a
    /// reader that sees the new version finds a body at least that new.
    pub fn publish(&self, host: &impl Host, bytes: &[u8]) -> Result<u64, SharedError> {
        let version = add_to_counter(host, &format!("{}:seq", self.version_key), 1)?;
        let mut body = Vec::with_capacity(16 + bytes.len());
        body.extend_from_slice(&version.to_le_bytes());
        body.extend_from_slice(&host.now_ms().to_le_bytes());
        body.extend_from_slice(bytes);
        host.shared_set(&self.data_key, &body, None)?;
        host.shared_set(&self.version_key, &version.to_le_bytes(), None)?;
        Ok(version)
    }

    /// The latest announced version (0 if nothing was ever published).
    pub fn version(&self, host: &impl Host) -> Result<u64, HostError> {
        Ok(host
            .shared_get(&self.version_key)?
            .0
            .map_or(0, |v| read_u64(&v, 0)))
    }

    /// The latest published document.
    pub fn load(&self, host: &impl Host) -> Result<Option<Published>, HostError> {
        let Some(body) = host.shared_get(&self.data_key)?.0 else {
            return Ok(None);
        };
        if body.len() < 16 {
            return Ok(None);
        }
        Ok(Some(Published {
            version: read_u64(&body, 0),
            published_ms: read_u64(&body, 8),
            bytes: body[16..].to_vec(),
        }))
    }
}

/// This VM's parsed copy of a [`SharedDocument`], refreshed when the version changes.
pub struct CachedDocument<T> {
    doc: SharedDocument,
    version: Cell<u64>,
    value: RefCell<Option<(Rc<T>, u64)>>,
}

impl<T> CachedDocument<T> {
    /// A cache of `doc`, empty until first read.
    pub fn new(doc: SharedDocument) -> Self {
        CachedDocument {
            doc,
            version: Cell::new(0),
            value: RefCell::new(None),
        }
    }

    /// The parsed document and when it was published as last read, without a host call.
    pub fn cached(&self) -> Option<(Rc<T>, u64)> {
        self.value.borrow().clone()
    }

    /// The version of the copy last read (0: none).
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// The parsed document and when it was published; parses again only when a newer version
    /// was announced. A document `parse` rejects is skipped (the previous copy stays).
    pub fn get(
        &self,
        host: &impl Host,
        parse: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<Option<(Rc<T>, u64)>, HostError> {
        let announced = self.doc.version(host)?;
        if announced != 0 && announced != self.version.get() {
            if let Some(published) = self.doc.load(host)? {
                self.version.set(announced.max(published.version));
                if let Some(parsed) = parse(&published.bytes) {
                    *self.value.borrow_mut() = Some((Rc::new(parsed), published.published_ms));
                }
            }
        }
        Ok(self.value.borrow().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn documents_are_published_and_reparsed_only_on_change() {
        let envoy = TestEnvoy::new(2);
        let doc = SharedDocument::new("clients");
        let cache: CachedDocument<String> = CachedDocument::new(doc.clone());
        let reader = envoy.request(1);
        let parses = Cell::new(0);
        let parse = |b: &[u8]| {
            parses.set(parses.get() + 1);
            String::from_utf8(b.to_vec()).ok()
        };
        assert_eq!(cache.get(&reader, parse).unwrap(), None);
        doc.publish(&envoy.request(0), b"v1").unwrap();
        let (v, _) = cache.get(&reader, parse).unwrap().unwrap();
        assert_eq!(v.as_str(), "v1");
        cache.get(&reader, parse).unwrap();
        assert_eq!(parses.get(), 1);
        doc.publish(&envoy.request(0), &[0xff]).unwrap();
        let (v, _) = cache.get(&reader, parse).unwrap().unwrap();
        assert_eq!(
            v.as_str(),
            "v1",
            "an unparseable document keeps the last good copy"
        );
        assert_eq!(doc.version(&reader).unwrap(), 2);
    }
}
