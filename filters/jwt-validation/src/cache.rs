//! The verification cache: what was decided about a valid token, per VM, each entry living until
//! the token's `exp` at the latest, all dropped whenever the key set changes.
//!
//! It is looked up on every request, so the lookup must cost little next to the request: entries
//! are placed by a keyed 128-bit SipHash of the token (the kit's [`HashKey`], a secret drawn once
//! per Envoy) instead of a SHA-256 of it, several times slower in wasm on a token of several
//! hundred bytes. A hash only places an entry: each entry keeps the token it was verified for,
//! and a hit needs the presented token to equal it, compared in constant time, so a collision
//! (which without the key can only happen by chance) costs one verification and can never admit
//! a different token. The price is that a cached token stays in the VM's memory until it expires
//! or is evicted, as long as the identity built from its claims does.

use palisade_kit::cache::TtlCache;
use palisade_kit::secret::ct_eq;
use palisade_kit::shared::HashKey;
use std::rc::Rc;

/// A token without `exp` (when allowed) stays in the cache at most this long.
pub const NO_EXP_CACHE_MS: u64 = 300_000;

/// What was decided about one token, with the token itself.
struct Entry<T> {
    token: Box<[u8]>,
    outcome: Rc<T>,
}

/// Verified tokens of this VM.
pub struct VerifyCache<T> {
    entries: TtlCache<(u64, u64), Rc<Entry<T>>>,
    hash_key: HashKey,
    fingerprint: [u8; 32],
}

impl<T> VerifyCache<T> {
    /// A cache of at most `capacity` tokens, placed under `hash_key`.
    pub fn new(capacity: usize, hash_key: HashKey) -> Self {
        VerifyCache {
            entries: TtlCache::new(capacity),
            hash_key,
            fingerprint: [0; 32],
        }
    }

    /// The cached outcome for `token`, if it is still valid under the key set with this
    /// fingerprint (a new key set empties the cache).
    pub fn get(&mut self, token: &str, now_ms: u64, fingerprint: &[u8; 32]) -> Option<Rc<T>> {
        if &self.fingerprint != fingerprint {
            self.entries.clear();
            self.fingerprint = *fingerprint;
            return None;
        }
        let entry = self
            .entries
            .get(&self.hash_key.hash128(token.as_bytes()), now_ms)?;
        ct_eq(&entry.token, token.as_bytes()).then(|| entry.outcome.clone())
    }

    /// Caches the outcome for `token`, which expires at `exp_s` (seconds; `None`: no `exp`).
    pub fn put(&mut self, token: &str, outcome: Rc<T>, exp_s: Option<u64>, now_ms: u64) {
        let expires_ms = exp_s.map_or(now_ms + NO_EXP_CACHE_MS, |e| e.saturating_mul(1000));
        let entry = Rc::new(Entry {
            token: token.as_bytes().into(),
            outcome,
        });
        let place = self.hash_key.hash128(token.as_bytes());
        self.entries.put(place, entry, expires_ms, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::testing::TestEnvoy;

    #[test]
    fn a_hit_needs_the_very_token_even_when_hashes_collide() {
        let envoy = TestEnvoy::new(1);
        let mut cache = VerifyCache::new(10, HashKey::configured(&envoy.request(0)).unwrap());
        let keys = [1; 32];
        assert_eq!(cache.get("a.b.c", 0, &keys), None);
        cache.put("a.b.c", Rc::new("alice"), Some(100), 0);
        assert_eq!(cache.get("a.b.c", 1, &keys).as_deref(), Some(&"alice"));
        assert_eq!(cache.get("a.b.d", 1, &keys), None);
        // A collision: another token's entry where "a.b.d" is placed is not a hit for it.
        let place = cache.hash_key.hash128(b"a.b.d");
        let other = Entry {
            token: b"a.b.c".as_slice().into(),
            outcome: Rc::new("alice"),
        };
        cache.entries.put(place, Rc::new(other), 100_000, 1);
        assert_eq!(cache.get("a.b.d", 1, &keys), None);
        assert_eq!(cache.get("a.b.c", 1, &keys).as_deref(), Some(&"alice"));
        // Not past its `exp`, and not under another key set.
        assert_eq!(cache.get("a.b.c", 100_000, &keys), None);
        cache.put("a.b.c", Rc::new("alice"), Some(200), 0);
        assert_eq!(cache.get("a.b.c", 1, &[2; 32]), None);
        assert_eq!(cache.get("a.b.c", 1, &[2; 32]), None);
    }
}
