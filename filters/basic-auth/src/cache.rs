//! The verification cache: what a password check concluded, remembered for a while, so a client
//! that repeats its credentials costs microseconds instead of a bcrypt computation.
//!
//! * Keyed by HMAC-SHA256 of the presented username and password under a key drawn at random
//!   when the cache is created: the password is never stored, and the tag is useless outside
//!   this VM (an attacker who could read memory cannot test guesses against it offline without
//!   the key, and cannot choose credentials that collide).
//! * Bounded: a fixed table of `2 x sets` slots allocated up front, two-way set-associative
//!   (a tag may live in one of two slots). Inserting into a full set replaces an expired
//!   entry first, then a failure, then the entry closest to expiry. No allocation per request.
//! * TTL: every entry expires `ttl_ms` after it was written.
//! * Failures are remembered as failures (never as successes): the answer for the same
//!   credentials under the same configuration cannot change, and remembering it spares the
//!   hash computation when a misconfigured client retries the same wrong password.
//! * One cache per policy instance, created with the configuration: a new configuration never
//!   sees the old one's entries.

use hmac::{Hmac, Mac};
use palisade_kit::secret::ct_eq;
use sha2::Sha256;

/// A 256-bit keyed hash of presented credentials.
pub type Tag = [u8; 32];

/// What a verification concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The credentials are those of the configured user with this index.
    Valid(u32),
    /// The credentials are not valid.
    Invalid,
}

impl Outcome {
    /// The authenticated user's index, if the credentials are valid.
    pub fn user(self) -> Option<u32> {
        match self {
            Outcome::Valid(user) => Some(user),
            Outcome::Invalid => None,
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    tag: Tag,
    expires_at_ms: u64,
    outcome: Outcome,
}

/// Computes tags: HMAC-SHA256 keyed once, cloned per use (the keyed state is precomputed).
#[derive(Clone)]
pub struct Tagger {
    keyed: Hmac<Sha256>,
}

impl Tagger {
    /// A tagger with this secret key (32 random bytes in production). `None` cannot happen
    /// (HMAC takes keys of any length) but is not unwrapped.
    pub fn new(key: &[u8; 32]) -> Option<Self> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        Some(Tagger { keyed })
    }

    /// The tag of a username and password (length-prefixed, so `ab`+`c` and `a`+`bc` differ).
    pub fn tag(&self, username: &str, password: &str) -> Tag {
        let mut mac = self.keyed.clone();
        mac.update(&(username.len() as u64).to_le_bytes());
        mac.update(username.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The bounded TTL cache of verification outcomes.
pub struct VerificationCache {
    sets: Vec<[Option<Entry>; 2]>,
    ttl_ms: u64,
}

impl VerificationCache {
    /// A cache of at least `max_entries` slots (rounded up to even); `ttl_ms == 0` or
    /// `max_entries == 0` disables it.
    pub fn new(max_entries: usize, ttl_ms: u64) -> Self {
        let sets = if ttl_ms == 0 {
            0
        } else {
            max_entries.div_ceil(2)
        };
        VerificationCache {
            sets: vec![[None, None]; sets],
            ttl_ms,
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.sets.len() * 2
    }

    fn set_index(&self, tag: &Tag) -> Option<usize> {
        if self.sets.is_empty() {
            return None;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&tag[..8]);
        // The tag is uniformly distributed (a keyed hash), so its bits make a fair index.
        Some((u64::from_le_bytes(word) % self.sets.len() as u64) as usize)
    }

    /// The remembered outcome for `tag`, if any and not expired.
    pub fn get(&self, tag: &Tag, now_ms: u64) -> Option<Outcome> {
        let set = self.sets.get(self.set_index(tag)?)?;
        set.iter()
            .flatten()
            .find(|e| e.expires_at_ms > now_ms && ct_eq(&e.tag, tag))
            .map(|e| e.outcome)
    }

    /// Remembers an outcome for `tag` until `now_ms + ttl`.
    pub fn insert(&mut self, tag: Tag, outcome: Outcome, now_ms: u64) {
        let Some(index) = self.set_index(&tag) else {
            return;
        };
        let entry = Entry {
            tag,
            expires_at_ms: now_ms.saturating_add(self.ttl_ms),
            outcome,
        };
        let Some(set) = self.sets.get_mut(index) else {
            return;
        };
        let live_success = |slot: &Option<Entry>| matches!(slot, Some(e) if e.outcome != Outcome::Invalid && e.expires_at_ms > now_ms && e.tag != tag);
        if outcome == Outcome::Invalid && set.iter().all(live_success) {
            // A failure never pushes out a success: a flood of wrong passwords cannot make
            // legitimate clients pay for a verification again.
            return;
        }
        // Preference for the slot to (re)use: same tag, empty, expired, a failure, then the
        // entry that expires first.
        let rank = |slot: &Option<Entry>| match slot {
            Some(e) if e.tag == tag => (0, 0),
            None => (1, 0),
            Some(e) if e.expires_at_ms <= now_ms => (2, 0),
            Some(Entry {
                outcome: Outcome::Invalid,
                expires_at_ms,
                ..
            }) => (3, *expires_at_ms),
            Some(e) => (4, e.expires_at_ms),
        };
        let victim = if rank(&set[1]) < rank(&set[0]) { 1 } else { 0 };
        set[victim] = Some(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagger() -> Tagger {
        Tagger::new(&[9u8; 32]).unwrap()
    }

    #[test]
    fn tags_are_keyed_and_unambiguous() {
        let t = tagger();
        assert_eq!(t.tag("alice", "pw"), t.tag("alice", "pw"));
        assert_ne!(t.tag("alice", "pw"), t.tag("alice", "pW"));
        assert_ne!(t.tag("ab", "c"), t.tag("a", "bc"));
        assert_ne!(
            t.tag("alice", "pw"),
            Tagger::new(&[8u8; 32]).unwrap().tag("alice", "pw")
        );
        // The tag is not the password or any plain hash of it.
        let tag = t.tag("alice", "pw");
        assert_ne!(&tag[..], &palisade_kit::secret::sha256(b"alice:pw")[..]);
    }

    #[test]
    fn remembers_outcomes_until_they_expire() {
        let t = tagger();
        let mut c = VerificationCache::new(16, 1_000);
        let ok = t.tag("alice", "right");
        let bad = t.tag("alice", "wrong");
        assert_eq!(c.get(&ok, 0), None);
        c.insert(ok, Outcome::Valid(3), 0);
        c.insert(bad, Outcome::Invalid, 0);
        assert_eq!(c.get(&ok, 999), Some(Outcome::Valid(3)));
        assert_eq!(c.get(&bad, 999), Some(Outcome::Invalid));
        assert_eq!(c.get(&ok, 1_000), None);
        assert_eq!(c.get(&bad, 1_000), None);
        // Re-inserting refreshes in place.
        c.insert(ok, Outcome::Valid(3), 1_000);
        assert_eq!(c.get(&ok, 1_999), Some(Outcome::Valid(3)));
    }

    #[test]
    fn stays_bounded_and_keeps_successes_over_failures() {
        let t = tagger();
        let mut c = VerificationCache::new(8, 60_000);
        assert_eq!(c.capacity(), 8);
        let good: Vec<Tag> = (0..4).map(|i| t.tag(&format!("u{i}"), "pw")).collect();
        for (i, g) in good.iter().enumerate() {
            c.insert(*g, Outcome::Valid(i as u32), 0);
        }
        // A flood of failures never holds more than the table and evicts failures first.
        for i in 0..10_000 {
            c.insert(t.tag("attacker", &i.to_string()), Outcome::Invalid, 1);
        }
        assert_eq!(c.sets.len(), 4);
        for (i, g) in good.iter().enumerate() {
            assert_eq!(
                c.get(g, 2),
                Some(Outcome::Valid(i as u32)),
                "success {i} evicted"
            );
        }
        // Failures are remembered in the slots successes do not use.
        let remembered = (0..10_000)
            .filter(|i| c.get(&t.tag("attacker", &i.to_string()), 2).is_some())
            .count();
        assert!((1..=4).contains(&remembered), "{remembered}");
        // Successes do replace each other (the table stays bounded).
        for i in 4..1_000 {
            c.insert(t.tag(&format!("u{i}"), "pw"), Outcome::Valid(i), 3);
        }
        let live = (0..1_000)
            .filter(|i| c.get(&t.tag(&format!("u{i}"), "pw"), 4).is_some())
            .count();
        assert_eq!(live, 8);
    }

    #[test]
    fn a_disabled_cache_remembers_nothing() {
        let t = tagger();
        for mut c in [
            VerificationCache::new(0, 1_000),
            VerificationCache::new(64, 0),
        ] {
            c.insert(t.tag("a", "b"), Outcome::Valid(0), 0);
            assert_eq!(c.get(&t.tag("a", "b"), 0), None);
            assert_eq!(c.capacity(), 0);
        }
    }
}
