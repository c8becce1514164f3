//! A per-VM cache whose entries expire: what a policy remembers between requests of one worker
//! (verified tokens, introspection answers) without a shared-data read per request.
//!
//! Bounded: when full, expired entries go first, then an arbitrary live one (cheap, and an
//! attacker filling the cache only costs the victims a recomputation, never a wrong answer).

use std::collections::HashMap;
use std::hash::Hash;

/// A bounded map whose entries live until their own expiry time.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (u64, V)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries (0: caches nothing).
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The value under `key`, if it has not expired at `now_ms`.
    pub fn get(&mut self, key: &K, now_ms: u64) -> Option<V> {
        let (expires_ms, value) = self.entries.get(key)?;
        if *expires_ms > now_ms {
            return Some(value.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Keeps `value` under `key` until `expires_ms` (nothing if that is not after `now_ms`).
    pub fn put(&mut self, key: K, value: V, expires_ms: u64, now_ms: u64) {
        if self.capacity == 0 || expires_ms <= now_ms {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (e, _)| *e > now_ms);
            if self.entries.len() >= self.capacity {
                if let Some(victim) = self.entries.keys().next().cloned() {
                    self.entries.remove(&victim);
                }
            }
        }
        self.entries.insert(key, (expires_ms, value));
    }

    /// Forgets everything (e.g. when the keys that verified the entries changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of entries, expired ones included until they are looked up or evicted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let mut c = TtlCache::new(2);
        c.put("a", 1, 100, 0);
        c.put("b", 2, 200, 0);
        assert_eq!(c.get(&"a", 99), Some(1));
        assert_eq!(c.get(&"a", 100), None, "expired at its time");
        c.put("a", 1, 100, 50);
        c.put("c", 3, 300, 150); // "a" is expired by now: it goes first
        assert_eq!((c.get(&"b", 150), c.get(&"c", 150)), (Some(2), Some(3)));
        c.put("d", 4, 400, 150); // full of live entries: one goes
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"d", 150), Some(4));
        c.put("e", 5, 10, 150);
        assert_eq!(c.get(&"e", 150), None, "already expired: not kept");
        let mut none = TtlCache::new(0);
        none.put("a", 1, 100, 0);
        assert!(none.is_empty());
    }
}
