//! Per-key state in a bounded table of shared-data slots, for rate limiters.
//!
//! A rate limiter keeps state per client key (an address, a client id...). Envoy never deletes a
//! shared-data key, so one key per client would grow Envoy's memory without bound. A
//! [`SlotTable`] keeps every client's state in one of `slots` shared-data keys
//! (`<prefix>:<n>`):
//!
//! * a client key hashes to [`PROBES`] candidate slots (double hashing);
//! * a slot records the full client key next to its state, so two clients never share a state;
//! * a slot whose state is no longer live (the caller says until when a state matters, e.g. the
//!   end of its window) is reused by the next client that needs it;
//! * when every candidate slot holds another client's live state, the table is full for that
//!   client: [`Slotted::Full`] says when the first of them frees up, and the caller decides what
//!   to do (rate limiters reject). A flood of new keys can therefore neither reset nor use up a
//!   tracked client's quota, and memory stays at `slots` keys whatever the traffic.
//!
//! Updates are compare-and-swap on the slot, so they are exact across workers. Unlike
//! [`crate::shared::SlotCache`] (a TTL cache that evicts), nothing live is ever overwritten.

use crate::host::{Host, HostError};
use crate::shared::{stable_hash, SharedError, Update, CREATE_CAS, MAX_CAS_RETRIES};
use std::borrow::Cow;

/// How many candidate slots a key may live in.
pub const PROBES: usize = 4;

/// Client keys longer than this are stored as their SHA-256 (a client choosing a huge header
/// value must not make every read of its slot copy it).
pub const MAX_STORED_KEY: usize = 96;

/// A bounded table of per-key states on shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    prefix: String,
    slots: u32,
}

/// The result of [`SlotTable::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slotted<T> {
    /// The update function ran on the key's state (and its write, if any, happened).
    Done(T),
    /// Every candidate slot holds another key's live state; the first frees up at `free_at_ms`.
    Full {
        /// When the earliest of the occupying states stops being live.
        free_at_ms: u64,
    },
}

impl SlotTable {
    /// A table of `slots` slots (at least 1) under `prefix`.
    pub fn new(prefix: &str, slots: u32) -> Self {
        SlotTable {
            prefix: prefix.to_owned(),
            slots: slots.max(1),
        }
    }

    /// The number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The shared-data key of slot `n`.
    pub fn slot_key(&self, n: u64) -> String {
        format!("{}:{n}", self.prefix)
    }

    /// The distinct candidate slots of a stored key, in probe order.
    fn candidates(&self, key: &[u8]) -> ([u64; PROBES], usize) {
        let slots = u64::from(self.slots);
        let h = stable_hash(key);
        // A second, odd step makes the probe sequence depend on the key, not just its first slot.
        let step = (stable_hash(&h.to_le_bytes()) | 1) % slots;
        let mut out = [0u64; PROBES];
        let mut len = 0;
        for i in 0..PROBES as u64 {
            let n = (h % slots + i * step.max(1)) % slots;
            if !out[..len].contains(&n) {
                out[len] = n;
                len += 1;
            }
        }
        (out, len)
    }

    /// Runs `f` on `key`'s current state (`None` for a key without live state) and writes the
    /// state it returns, atomically across workers. `live_until(state)` says until when (ms since
    /// the epoch) a stored state still matters: at `now`, a slot whose state is past it may be
    /// taken by another key. `f` may run more than once and must have no side effects.
    pub fn update<T>(
        &self,
        host: &impl Host,
        key: &str,
        now: u64,
        live_until: impl Fn(&[u8]) -> u64,
        mut f: impl FnMut(Option<&[u8]>) -> Update<T>,
    ) -> Result<Slotted<T>, SharedError> {
        let stored = stored_key(key);
        let (candidates, len) = self.candidates(&stored);
        for _ in 0..MAX_CAS_RETRIES {
            // Find the key's own slot; else the first free one (still looking for its own).
            let mut own = None;
            let mut free = None;
            let mut free_at_ms = u64::MAX;
            for &n in &candidates[..len] {
                let slot = self.slot_key(n);
                let (value, cas) = host.shared_get(&slot)?;
                match value.as_deref().and_then(decode) {
                    Some((k, state)) if k == stored.as_ref() => {
                        own = Some((slot, state.to_vec(), cas));
                        break;
                    }
                    Some((_, state)) => {
                        let until = live_until(state);
                        if until > now {
                            free_at_ms = free_at_ms.min(until);
                        } else if free.is_none() {
                            free = Some((slot, cas));
                        }
                    }
                    None => {
                        if free.is_none() {
                            free = Some((slot, cas));
                        }
                    }
                }
            }
            let (slot, update, cas) = match (own, free) {
                (Some((slot, state, cas)), _) => {
                    let update = f(Some(&state));
                    (slot, update, cas)
                }
                (None, Some((slot, cas))) => (slot, f(None), cas),
                (None, None) => return Ok(Slotted::Full { free_at_ms }),
            };
            match update {
                Update::Keep(result) => return Ok(Slotted::Done(result)),
                Update::Write(state, result) => {
                    let bytes = encode(&stored, &state);
                    match host.shared_set(&slot, &bytes, Some(cas.unwrap_or(CREATE_CAS))) {
                        Ok(()) => return Ok(Slotted::Done(result)),
                        // Another worker changed the slot: look again from the start.
                        Err(HostError::CasMismatch) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(SharedError::Contended)
    }
}

/// The key as stored in a slot: itself, or `#` + its SHA-256 when long.
fn stored_key(key: &str) -> Cow<'_, [u8]> {
    if key.len() <= MAX_STORED_KEY {
        Cow::Borrowed(key.as_bytes())
    } else {
        let mut out = Vec::with_capacity(33);
        out.push(b'#');
        out.extend_from_slice(&crate::secret::sha256(key.as_bytes()));
        Cow::Owned(out)
    }
}

/// A slot's content: `key length (u16 LE) | key | state`.
fn encode(key: &[u8], state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len() + state.len());
    // Stored keys are at most MAX_STORED_KEY bytes.
    out.extend_from_slice(&(key.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(state);
    out
}

fn decode(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?));
    let key = bytes.get(2..2 + len)?;
    Some((key, bytes.get(2 + len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    /// A test state: `expires_ms (u64 LE) | count (u64 LE)`.
    fn live(state: &[u8]) -> u64 {
        u64::from_le_bytes(state[..8].try_into().unwrap())
    }

    fn count(state: &[u8]) -> u64 {
        u64::from_le_bytes(state[8..16].try_into().unwrap())
    }

    fn hit(table: &SlotTable, host: &impl Host, key: &str, ttl: u64) -> Slotted<u64> {
        let now = host.now_ms();
        table
            .update(host, key, now, live, |state| {
                let n = state
                    .filter(|s| live(s) > now)
                    .map_or(0, count)
                    .saturating_add(1);
                let expires = state.filter(|s| live(s) > now).map_or(now + ttl, live);
                let mut out = expires.to_le_bytes().to_vec();
                out.extend_from_slice(&n.to_le_bytes());
                Update::Write(out, n)
            })
            .unwrap()
    }

    #[test]
    fn keys_keep_their_own_state() {
        let envoy = TestEnvoy::new(2);
        let table = SlotTable::new("rl:t", 64);
        for i in 1..=3 {
            assert_eq!(hit(&table, &envoy.request(0), "a", 1000), Slotted::Done(i));
            assert_eq!(hit(&table, &envoy.request(1), "b", 1000), Slotted::Done(i));
        }
        let long = "x".repeat(10_000);
        assert_eq!(
            hit(&table, &envoy.request(0), &long, 1000),
            Slotted::Done(1)
        );
        assert_eq!(
            hit(&table, &envoy.request(1), &long, 1000),
            Slotted::Done(2)
        );
        // The long key is stored as a digest, not copied into its slot.
        let biggest = (0..64)
            .filter_map(|n| envoy.request(0).shared_get(&table.slot_key(n)).unwrap().0)
            .map(|v| v.len())
            .max()
            .unwrap();
        assert!(biggest < 100, "{biggest}");
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_never_touches_live_state() {
        let envoy = TestEnvoy::new(1);
        let host = envoy.request(0);
        let table = SlotTable::new("rl:flood", 16);
        assert_eq!(hit(&table, &host, "victim", 60_000), Slotted::Done(1));
        let mut full = 0;
        for i in 0..10_000 {
            match hit(&table, &host, &format!("attacker-{i}"), 60_000) {
                Slotted::Full { free_at_ms } => {
                    assert_eq!(free_at_ms, envoy.now_ms() + 60_000);
                    full += 1;
                }
                Slotted::Done(n) => assert_eq!(n, 1),
            }
        }
        assert!(full > 9_900, "{full}");
        assert!(envoy.shared_keys_with_prefix("rl:flood:") <= 16);
        // The victim's count was neither reset nor shared.
        assert_eq!(hit(&table, &host, "victim", 60_000), Slotted::Done(2));
        // Once the states expire, their slots are reused.
        envoy.advance_ms(60_000);
        assert_eq!(hit(&table, &host, "newcomer", 1000), Slotted::Done(1));
        assert!(envoy.shared_keys_with_prefix("rl:flood:") <= 16);
    }

    #[test]
    fn racing_workers_claiming_a_slot_do_not_lose_an_update() {
        let envoy = TestEnvoy::new(2);
        let table = SlotTable::new("rl:race", 1);
        let t2 = table.clone();
        // Worker 1 claims the only slot for the same key between worker 0's read and write.
        envoy.interfere_on_next_sets(1, "rl:race:0", move |host| {
            assert_eq!(hit(&t2, host, "k", 1000), Slotted::Done(1));
        });
        assert_eq!(hit(&table, &envoy.request(0), "k", 1000), Slotted::Done(2));

        // Another key racing for the same single slot finds it taken and gets Full.
        let t3 = table.clone();
        envoy.advance_ms(1000);
        envoy.interfere_on_next_sets(1, "rl:race:0", move |host| {
            assert_eq!(hit(&t3, host, "other", 1000), Slotted::Done(1));
        });
        assert!(matches!(
            hit(&table, &envoy.request(0), "k", 1000),
            Slotted::Full { .. }
        ));
    }

    #[test]
    fn probes_are_distinct_and_in_range() {
        for slots in [1, 2, 3, 7, 100_000] {
            let table = SlotTable::new("p", slots);
            for key in ["a", "b", "client-42"] {
                let (c, len) = table.candidates(key.as_bytes());
                assert!(len >= 1 && len <= PROBES.min(slots as usize));
                for (i, n) in c[..len].iter().enumerate() {
                    assert!(*n < u64::from(slots));
                    assert!(!c[..i].contains(n));
                }
            }
        }
        assert_eq!(SlotTable::new("p", 100_000).candidates(b"k").1, PROBES);
    }
}
