//! Background work done once per Envoy, not once per worker.
//!
//! Timers run in every worker's root context (and the main thread's), so a naive periodic fetch
//! runs N+1 times per period. [`Lease`] elects one VM through shared data: whoever holds an
//! unexpired lease does the work and renews it; the others skip. If the holder stops renewing
//! (its worker is gone or stuck), another VM takes over when the lease expires.
//!
//! What the elected VM fetches is published with [`SharedDocument`] for every worker and policy
//! to read. Readers poll a small version key per request and re-parse the document only when
//! the version changed ([`CachedDocument`]), so a 50,000-entry registry is not copied per request.

use crate::host::{Host, HostError};
use crate::shared::{add_to_counter, cas_update, SharedError, Update};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    static VM_ID: Cell<u64> = const { Cell::new(0) };
}

/// A number unique to this VM within the Envoy process (allocated from a shared counter on first
/// use; each worker thread runs its own VM).
pub fn vm_id(host: &impl Host) -> Result<u64, SharedError> {
    let current = VM_ID.with(Cell::get);
    if current != 0 {
        return Ok(current);
    }
    let id = add_to_counter(host, "palisade:vm-ids", 1)?;
    VM_ID.with(|c| c.set(id));
    Ok(id)
}

/// A lease on shared data: at most one VM holds it at a time.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    ttl_ms: u64,
}

impl Lease {
    /// A lease named `name`, held for `ttl_ms` after each acquisition or renewal.
    pub fn new(name: &str, ttl_ms: u64) -> Self {
        Lease {
            key: format!("palisade:lease:{name}"),
            ttl_ms,
        }
    }

    /// Acquires or renews the lease for this VM; `true` if this VM holds it now.
    pub fn try_acquire(&self, host: &impl Host) -> Result<bool, SharedError> {
        let me = vm_id(host)?;
        let now = host.now_ms();
        let ttl = self.ttl_ms;
        cas_update(host, &self.key, |current| {
            let (holder, expires) = current.map_or((0, 0), |v| (read_u64(v, 0), read_u64(v, 8)));
            if holder == me || expires <= now || holder == 0 {
                let mut value = me.to_le_bytes().to_vec();
                value.extend_from_slice(&now.saturating_add(ttl).to_le_bytes());
                Update::Write(value, true)
            } else {
                Update::Keep(false)
            }
        })
    }

    /// Gives the lease up if this VM holds it, so another VM may take it at once.
    pub fn release(&self, host: &impl Host) -> Result<(), SharedError> {
        let me = vm_id(host)?;
        cas_update(host, &self.key, |current| match current {
            Some(v) if read_u64(v, 0) == me => Update::Write(vec![0; 16], ()),
            _ => Update::Keep(()),
        })
    }
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// A periodic job run by one VM per period: every VM's timer calls [`Schedule::claim`], and the
/// first to find the job due moves the due time forward with compare-and-swap and runs it.
/// Unlike a [`Lease`] no VM is preferred; a VM that dies mid-run only delays the next run.
#[derive(Debug, Clone)]
pub struct Schedule {
    key: String,
}

impl Schedule {
    /// The job called `name` (due at once if it never ran in this Envoy).
    pub fn new(name: &str) -> Self {
        Schedule {
            key: format!("palisade:schedule:{name}"),
        }
    }

    /// `true` for exactly one caller when the job is due; it is then next due in `next_in_ms`.
    pub fn claim(&self, host: &impl Host, next_in_ms: u64) -> Result<bool, SharedError> {
        let now = host.now_ms();
        cas_update(host, &self.key, |current| {
            let due = current.map_or(0, |v| read_u64(v, 0));
            if due <= now {
                Update::Write(now.saturating_add(next_in_ms).to_le_bytes().to_vec(), true)
            } else {
                Update::Keep(false)
            }
        })
    }

    /// Sets the next run to `in_ms` from now (e.g. retry sooner after a failed fetch).
    pub fn reschedule(&self, host: &impl Host, in_ms: u64) -> Result<(), SharedError> {
        let due = host.now_ms().saturating_add(in_ms);
        cas_update(host, &self.key, |_| {
            Update::Write(due.to_le_bytes().to_vec(), ())
        })
    }
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

    /// Runs `f` as the VM with id `id` (in the test host all workers share this thread).
    fn as_vm<T>(id: u64, f: impl FnOnce() -> T) -> T {
        VM_ID.with(|c| c.set(id));
        f()
    }

    #[test]
    fn one_vm_holds_the_lease_until_it_expires() {
        let envoy = TestEnvoy::new(2);
        let lease = Lease::new("registry", 1_000);
        let (w0, w1) = (envoy.request(0), envoy.request(1));
        assert!(as_vm(1, || lease.try_acquire(&w0)).unwrap());
        assert!(
            as_vm(1, || lease.try_acquire(&w0)).unwrap(),
            "the holder renews"
        );
        assert!(
            !as_vm(2, || lease.try_acquire(&w1)).unwrap(),
            "refused while held"
        );
        envoy.advance_ms(1_001);
        assert!(
            as_vm(2, || lease.try_acquire(&w1)).unwrap(),
            "taken over after expiry"
        );
        assert!(!as_vm(1, || lease.try_acquire(&w0)).unwrap());
        as_vm(1, || lease.release(&w0)).unwrap();
        assert!(
            !as_vm(1, || lease.try_acquire(&w0)).unwrap(),
            "only the holder releases"
        );
        as_vm(2, || lease.release(&w1)).unwrap();
        assert!(
            as_vm(1, || lease.try_acquire(&w0)).unwrap(),
            "released leases are free at once"
        );
    }

    #[test]
    fn vm_ids_are_unique() {
        let envoy = TestEnvoy::new(1);
        VM_ID.with(|c| c.set(0));
        let a = vm_id(&envoy.request(0)).unwrap();
        assert_eq!(vm_id(&envoy.request(0)).unwrap(), a, "stable within a VM");
        VM_ID.with(|c| c.set(0));
        assert_ne!(vm_id(&envoy.request(0)).unwrap(), a);
    }

    #[test]
    fn timers_on_every_worker_elect_one_fetcher_per_period() {
        let envoy = TestEnvoy::new(3);
        let lease = Lease::new("jwks", 250);
        let ids: Vec<u64> = (1..=3).collect();
        for w in 0..3 {
            envoy.request(w).set_tick_period_ms(100).unwrap();
        }
        let mut fetches = Vec::new();
        envoy.run_timers(1_000, |worker, host| {
            VM_ID.with(|c| c.set(ids[worker]));
            if lease.try_acquire(host).unwrap() {
                fetches.push((worker, host.now_ms()));
            }
        });
        // Every period one worker fetches, and it is always the same one while it lives.
        assert_eq!(fetches.len(), 10);
        assert!(fetches.iter().all(|(w, _)| *w == fetches[0].0));
    }

    #[test]
    fn a_schedule_runs_once_per_period_whichever_worker_ticks() {
        let envoy = TestEnvoy::new(2);
        let job = Schedule::new("registry");
        for w in 0..2 {
            envoy.request(w).set_tick_period_ms(10).unwrap();
        }
        let mut runs = Vec::new();
        envoy.run_timers(1_000, |worker, host| {
            if job.claim(host, 100).unwrap() {
                runs.push((worker, host.now_ms()));
            }
        });
        assert_eq!(runs.len(), 10, "{runs:?}");
        let start = envoy.now_ms() - 1_000;
        job.reschedule(&envoy.request(0), 5).unwrap();
        envoy.advance_ms(5);
        assert!(job.claim(&envoy.request(1), 100).unwrap());
        assert!(!job.claim(&envoy.request(0), 100).unwrap());
        assert!(runs[0].1 > start);
    }

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
