//! Exact, bounded state on proxy-wasm shared data.
//!
//! Shared data is one key-value store per `vm_id`, shared by every worker thread and every
//! policy module with that `vm_id`. Two facts of Envoy's implementation shape these helpers:
//!
//! * Writes carry a CAS stamp, but a write to a key that does not exist yet succeeds whatever
//!   stamp it carries. [`cas_update`] therefore creates keys with [`CREATE_CAS`], a stamp the
//!   host's global counter practically never holds, so of two workers racing to create a key one
//!   wins and the other gets a mismatch and retries.
//! * Keys are never deleted (removing only empties the value), so a key per client would grow
//!   Envoy's memory without bound. [`SlotCache`] maps any number of keys onto a fixed number of
//!   slots and stores the full key in the slot, so a collision evicts instead of sharing.
//!
//! Which slot a client-chosen key lands in is decided by a keyed hash ([`HashKey`]: SipHash
//! under a secret drawn once per Envoy), so nobody can compute offline which keys collide with
//! a victim's.

use crate::config::ConfigError;
use crate::host::{Host, HostError};
use siphasher::sip128::SipHasher24;
use std::fmt;

/// The CAS stamp used to create a key: the host's counter starts at 1 and would need four billion
/// writes to reach it.
pub const CREATE_CAS: u32 = u32::MAX;

/// How many times [`cas_update`] retries a lost race before giving up. Measured contention with 2
/// workers is a few retries at most; hitting this means something else is wrong.
pub const MAX_CAS_RETRIES: u32 = 100;

/// What an update function decides for the value it was shown.
pub enum Update<T> {
    /// Write these bytes (if the value has not changed meanwhile) and return `T`.
    Write(Vec<u8>, T),
    /// Leave the value as it is and return `T`.
    Keep(T),
}

/// Why a shared-data update did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedError {
    /// The host refused a call.
    Host(HostError),
    /// Every attempt lost a CAS race.
    Contended,
}

impl From<HostError> for SharedError {
    fn from(e: HostError) -> Self {
        SharedError::Host(e)
    }
}

/// Reads `key`, lets `f` compute the new value from the current one (`None` when absent or
/// empty), and writes it back with compare-and-swap, retrying on a lost race. `f` may run more
/// than once and must have no side effects.
pub fn cas_update<T>(
    host: &impl Host,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> Update<T>,
) -> Result<T, SharedError> {
    for _ in 0..MAX_CAS_RETRIES {
        let (value, cas) = host.shared_get(key)?;
        let current = value.as_deref().filter(|v| !v.is_empty());
        match f(current) {
            Update::Keep(result) => return Ok(result),
            Update::Write(bytes, result) => {
                match host.shared_set(key, &bytes, Some(cas.unwrap_or(CREATE_CAS))) {
                    Ok(()) => return Ok(result),
                    Err(HostError::CasMismatch) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(SharedError::Contended)
}

/// Adds `delta` to a `u64` counter and returns the new value, exactly across workers.
pub fn add_to_counter(host: &impl Host, key: &str, delta: u64) -> Result<u64, SharedError> {
    cas_update(host, key, |current| {
        let n = current
            .and_then(|v| read_u64(v, 0))
            .unwrap_or(0)
            .saturating_add(delta);
        Update::Write(n.to_le_bytes().to_vec(), n)
    })
}

/// Reads a counter written by [`add_to_counter`].
pub fn read_counter(host: &impl Host, key: &str) -> Result<u64, HostError> {
    Ok(host
        .shared_get(key)?
        .0
        .as_deref()
        .and_then(|v| read_u64(v, 0))
        .unwrap_or(0))
}

/// The little-endian `u64` at byte `at` of a shared-data value, if it is that long (the layout
/// every shared record of the kit uses).
pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A stable 64-bit FNV-1a hash. It must be the same in every worker VM (no random seed), which
/// is why std's `DefaultHasher` cannot be used. It is unkeyed, so anyone can compute it: use it
/// to name things from the configuration, never to place client-chosen keys (use [`HashKey`]).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shared-data key holding the Envoy's [`HashKey`].
pub const HASH_KEY_KEY: &str = "palisade:kit:hash-key";

/// A secret, one per Envoy, that places client-chosen keys in bounded tables ([`SlotCache`],
/// [`crate::slots::SlotTable`]).
///
/// With an unkeyed hash anyone can compute offline which keys share a victim's slots, and aim a
/// handful of requests at them. Under keyed SipHash-2-4 (a PRF: without the key its output is
/// unpredictable) collisions can only be found by chance. The key is 16 bytes from the host's
/// entropy source, drawn by the first VM that needs it and published in shared data with
/// create-if-absent compare-and-swap, so every worker and every policy of the Envoy agrees on
/// where a key lives; each VM reads it once (at configure time) and keeps it. It dies with the
/// Envoy process (shared data is in memory). It never leaves this type: no accessor, and
/// `Debug` prints nothing of it.
#[derive(Clone)]
pub struct HashKey {
    hasher: SipHasher24,
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// Reads the Envoy's key from shared data, creating it if absent. Call once per VM and keep
    /// it: every VM of the Envoy gets the same key.
    pub fn load_or_create(host: &impl Host) -> Result<Self, SharedError> {
        for _ in 0..MAX_CAS_RETRIES {
            let (value, cas) = host.shared_get(HASH_KEY_KEY)?;
            if let Some(key) = value.as_deref().and_then(|v| <&[u8; 16]>::try_from(v).ok()) {
                return Ok(HashKey::from_bytes(key));
            }
            // Absent (or not a key): draw one and publish it unless another VM was first.
            let mut key = [0u8; 16];
            host.random_bytes(&mut key)?;
            match host.shared_set(HASH_KEY_KEY, &key, Some(cas.unwrap_or(CREATE_CAS))) {
                Ok(()) => return Ok(HashKey::from_bytes(&key)),
                // Another VM published its key first: read and use that one.
                Err(HostError::CasMismatch) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SharedError::Contended)
    }

    /// [`HashKey::load_or_create`] for `configure`: without a key the policy cannot place keys
    /// safely, so the filter is refused.
    pub fn configured(host: &impl Host) -> Result<Self, ConfigError> {
        HashKey::load_or_create(host)
            .map_err(|e| ConfigError::at(".", format!("cannot read or create the hash key: {e:?}")))
    }

    fn from_bytes(key: &[u8; 16]) -> Self {
        HashKey {
            hasher: SipHasher24::new_with_key(key),
        }
    }

    /// Two independent 64-bit keyed hashes of `bytes` (one SipHash-2-4-128 run).
    pub fn hash128(&self, bytes: &[u8]) -> (u64, u64) {
        self.hasher.hash(bytes).as_u64()
    }

    /// A 64-bit keyed hash of `bytes`.
    pub fn hash(&self, bytes: &[u8]) -> u64 {
        self.hash128(bytes).0
    }
}

/// A cache of at most `slots` entries with a time to live, on shared data. Each key hashes (keyed:
/// [`HashKey`]) to one slot, `<prefix>:<n>`; the slot records the full key and its expiry, so a
/// lookup never returns another key's value, and a new key that lands on a live entry's slot
/// evicts it.
#[derive(Debug, Clone)]
pub struct SlotCache {
    prefix: String,
    slots: u32,
    ttl_ms: u64,
    hash_key: HashKey,
}

/// What [`SlotCache::put`] did to the slot's previous content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The slot was empty, expired or held the same key.
    Stored,
    /// The slot held another live key, which is now gone.
    Evicted,
}

impl SlotCache {
    /// A cache under `prefix` with `slots` slots (at least 1) and entries living `ttl_ms`, its
    /// keys placed with `hash_key` (the Envoy's, from [`HashKey::configured`]).
    pub fn new(prefix: &str, slots: u32, ttl_ms: u64, hash_key: HashKey) -> Self {
        SlotCache {
            prefix: prefix.to_owned(),
            slots: slots.max(1),
            ttl_ms,
            hash_key,
        }
    }

    /// The shared-data key of the slot `key` lives in.
    pub fn slot_key(&self, key: &str) -> String {
        let slot = self.hash_key.hash(key.as_bytes()) % u64::from(self.slots);
        format!("{}:{slot}", self.prefix)
    }

    /// The live value stored for `key`.
    pub fn get(&self, host: &impl Host, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        let (value, _) = host.shared_get(&self.slot_key(key))?;
        let now = host.now_ms();
        Ok(value.and_then(|v| {
            let entry = Entry::decode(&v)?;
            (entry.key == key.as_bytes() && entry.expires_ms > now).then(|| entry.value.to_vec())
        }))
    }

    /// Stores `value` for `key`, evicting whatever else held its slot.
    pub fn put(
        &self,
        host: &impl Host,
        key: &str,
        value: &[u8],
    ) -> Result<PutOutcome, SharedError> {
        let now = host.now_ms();
        let encoded = Entry {
            expires_ms: now.saturating_add(self.ttl_ms),
            key: key.as_bytes(),
            value,
        }
        .encode();
        cas_update(host, &self.slot_key(key), |current| {
            let evicted = current
                .and_then(Entry::decode)
                .is_some_and(|old| old.key != key.as_bytes() && old.expires_ms > now);
            let outcome = if evicted {
                PutOutcome::Evicted
            } else {
                PutOutcome::Stored
            };
            Update::Write(encoded.clone(), outcome)
        })
    }
}

/// One slot's content: `expires_ms (u64 LE) | key length (u32 LE) | key | value`.
struct Entry<'a> {
    expires_ms: u64,
    key: &'a [u8],
    value: &'a [u8],
}

impl<'a> Entry<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.key.len() + self.value.len());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
        out
    }

    fn decode(bytes: &'a [u8]) -> Option<Self> {
        let expires_ms = read_u64(bytes, 0)?;
        let key_len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
        let key = bytes.get(12..12usize.checked_add(key_len)?)?;
        let value = bytes.get(12 + key_len..)?;
        Some(Entry {
            expires_ms,
            key,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn counters_are_exact_when_workers_interleave() {
        let envoy = TestEnvoy::new(2);
        let w0 = envoy.request(0);
        let w1 = envoy.request(1);
        // Every read of worker 0 is followed by a write of worker 1 before worker 0 writes.
        envoy.interfere_on_next_sets(5, "hits", |host| {
            add_to_counter(host, "hits", 1).unwrap();
        });
        assert_eq!(add_to_counter(&w0, "hits", 1).unwrap(), 6);
        for _ in 0..100 {
            add_to_counter(&w0, "hits", 1).unwrap();
            add_to_counter(&w1, "hits", 2).unwrap();
        }
        assert_eq!(read_counter(&w1, "hits").unwrap(), 306);
    }

    #[test]
    fn racing_creators_do_not_lose_an_update() {
        let envoy = TestEnvoy::new(2);
        let w0 = envoy.request(0);
        // Worker 1 creates the key between worker 0's read (absent) and write.
        envoy.interfere_on_next_sets(1, "fresh", |host| {
            add_to_counter(host, "fresh", 1).unwrap();
        });
        add_to_counter(&w0, "fresh", 1).unwrap();
        assert_eq!(read_counter(&w0, "fresh").unwrap(), 2);
    }

    #[test]
    fn gives_up_under_endless_contention() {
        let envoy = TestEnvoy::new(2);
        let w0 = envoy.request(0);
        envoy.interfere_on_next_sets(u32::MAX, "hot", |host| {
            add_to_counter(host, "hot", 1).unwrap();
        });
        assert_eq!(add_to_counter(&w0, "hot", 1), Err(SharedError::Contended));
    }

    fn hash_key(envoy: &TestEnvoy) -> HashKey {
        HashKey::load_or_create(&envoy.request(0)).unwrap()
    }

    #[test]
    fn slot_cache_is_bounded_expires_and_never_mixes_keys() {
        let envoy = TestEnvoy::new(1);
        let host = envoy.request(0);
        let cache = SlotCache::new("t", 8, 1_000, hash_key(&envoy));
        for i in 0..10_000 {
            cache.put(&host, &format!("client-{i}"), b"v").unwrap();
        }
        assert!(envoy.shared_keys_with_prefix("t:") <= 8);
        // The last key is present; keys sharing its slot are not reported as present.
        assert_eq!(
            cache.get(&host, "client-9999").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let present = (0..10_000)
            .filter(|i| cache.get(&host, &format!("client-{i}")).unwrap().is_some())
            .count();
        assert!(present <= 8, "{present}");
        envoy.advance_ms(1_001);
        assert_eq!(cache.get(&host, "client-9999").unwrap(), None);
    }

    #[test]
    fn slot_cache_reports_evictions_of_live_entries_only() {
        let envoy = TestEnvoy::new(1);
        let host = envoy.request(0);
        let cache = SlotCache::new("e", 1, 100, hash_key(&envoy));
        assert_eq!(cache.put(&host, "a", b"1").unwrap(), PutOutcome::Stored);
        assert_eq!(cache.put(&host, "a", b"2").unwrap(), PutOutcome::Stored);
        assert_eq!(cache.put(&host, "b", b"1").unwrap(), PutOutcome::Evicted);
        assert_eq!(cache.get(&host, "a").unwrap(), None);
        envoy.advance_ms(200);
        assert_eq!(cache.put(&host, "c", b"1").unwrap(), PutOutcome::Stored);
    }

    #[test]
    fn slot_cache_places_keys_by_the_envoys_secret() {
        const SLOTS: u32 = 64;
        let unkeyed = |key: &str| stable_hash(key.as_bytes()) % u64::from(SLOTS);
        // Offline, with the unkeyed hash: tokens that would evict the victim's cached answer.
        let aimed: Vec<String> = (0..)
            .map(|i| format!("token-{i}"))
            .filter(|t| unkeyed(t) == unkeyed("victim"))
            .take(20)
            .collect();
        let placement = |seed: u64| {
            let envoy = TestEnvoy::new(1);
            envoy.seed_random(seed);
            let cache = SlotCache::new("c", SLOTS, 1_000, hash_key(&envoy));
            let victim = cache.slot_key("victim");
            let sharing = aimed.iter().filter(|t| cache.slot_key(t) == victim).count();
            let slots: Vec<String> = aimed.iter().map(|t| cache.slot_key(t)).collect();
            (sharing, slots)
        };
        // All twenty would share the victim's slot unkeyed; under the secret about 20/64 do.
        let (sharing, first) = placement(1);
        assert!(sharing <= 3, "{sharing}");
        // Another Envoy (another secret) places them elsewhere.
        let (sharing, second) = placement(2);
        assert!(sharing <= 3, "{sharing}");
        assert_ne!(first, second);
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
