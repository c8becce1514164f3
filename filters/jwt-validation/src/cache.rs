//! The verification cache: what was decided about a valid token, per VM, keyed by SHA-256 of the
//! token (never the token), each entry living until the token's `exp` at the latest, all dropped
//! whenever the key set changes.

use palisade_kit::cache::TtlCache;
use std::rc::Rc;

/// A token without `exp` (when allowed) stays in the cache at most this long.
pub const NO_EXP_CACHE_MS: u64 = 300_000;

/// Verified tokens of this VM.
pub struct VerifyCache<T> {
    entries: TtlCache<[u8; 32], Rc<T>>,
    fingerprint: [u8; 32],
}

impl<T> VerifyCache<T> {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        VerifyCache {
            entries: TtlCache::new(capacity),
            fingerprint: [0; 32],
        }
    }

    /// The cached outcome for a token digest, if it is still valid under the key set with this
    /// fingerprint (a new key set empties the cache).
    pub fn get(&mut self, digest: &[u8; 32], now_ms: u64, fingerprint: &[u8; 32]) -> Option<Rc<T>> {
        if &self.fingerprint != fingerprint {
            self.entries.clear();
            self.fingerprint = *fingerprint;
            return None;
        }
        self.entries.get(digest, now_ms)
    }

    /// Caches the outcome for a token that expires at `exp_s` (seconds; `None`: no `exp`).
    pub fn put(&mut self, digest: [u8; 32], outcome: Rc<T>, exp_s: Option<u64>, now_ms: u64) {
        let expires_ms = exp_s.map_or(now_ms + NO_EXP_CACHE_MS, |e| e.saturating_mul(1000));
        self.entries.put(digest, outcome, expires_ms, now_ms);
    }
}
