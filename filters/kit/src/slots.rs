//! Per-key state in a bounded table of shared-data slots, for rate limiters.
//!
//! A rate limiter keeps state per client key (an address, a client id...). Envoy never deletes a
//! shared-data key, so one key per client would grow Envoy's memory without bound. A
//! [`SlotTable`] keeps every client's state in one of `slots` shared-data keys
//! (`<prefix>:<n>`):
//!
//! * a client key hashes to [`PROBES`] candidate slots (double hashing) under the Envoy's secret
//!   [`HashKey`]: nobody can compute which keys share a victim's candidates, so a victim cannot
//!   be aimed at with a few chosen keys;
//! * a slot records the full client key next to its state, so two clients never share a state;
//! * next to the state, the slot records its [`Standing`], which the writer computes each time
//!   it writes: until when the state matters at all (`live_until`), until when the key is at
//!   its limit (`limited_until`: a request now would be refused or queued), and how much of its
//!   limit it has used (`load`).
//!
//! A key that has no slot yet takes, among its candidates:
//!
//! 1. a free slot (empty, unreadable, or whose state is past `live_until`), else
//! 2. the slot of the **least valuable** live state that is *not* at its limit: the lowest
//!    `load`, and among equals the one that stops mattering first (the oldest window). That
//!    state is evicted: its key starts afresh on its next request ([`Slotted::Evicted`]).
//! 3. If every candidate holds a key at its limit, nothing is evicted: [`Slotted::Full`] says
//!    when the first of them stops being at its limit, and the caller refuses the newcomer
//!    (rate limiters answer 429 with that `Retry-After`).
//!
//! What this gives against a client flooding the table with new keys:
//!
//! * a flood of one-off keys (each far from its limit) cannot lock newcomers out: a newcomer
//!   evicts one of them (the lightest, the oldest);
//! * a key at its limit is never evicted, so a client at its limit cannot get a fresh quota by
//!   flooding new keys, however many;
//! * an honest client's state can be evicted only while it is not at its limit: it then starts
//!   afresh, which lets it through more, never less;
//! * refusing newcomers (rule 3) needs every candidate of theirs at its limit: with the slots
//!   placed by a secret, an attacker must hold about the whole table at its limit, roughly
//!   `slots` × the limit requests per window (a fraction *f* of the table at its limit refuses a
//!   newcomer with probability about *f*^4). Refusing is the fail-closed answer there: the
//!   alternatives are resetting a limited client (a bypass) or an untracked newcomer (no limit
//!   at all for whoever lands there). Size `maxKeys` above the number of clients that can be at
//!   their limit at once.
//!
//! The standing is judged at write time (a request that is refused writes nothing), so `load`
//! is the highest the key reached; it only orders evictable states. `limited_until` is exact:
//! the writer says when the next request would fit.
//!
//! Updates are compare-and-swap on the slot (evictions included), so they are exact across
//! workers. Unlike [`crate::shared::SlotCache`] (a cache, where any entry may go), a state is
//! evicted only by these rules.

use crate::host::{Host, HostError};
use crate::shared::{HashKey, SharedError, CREATE_CAS, MAX_CAS_RETRIES};
use std::borrow::Cow;

/// How many candidate slots a key may live in.
pub const PROBES: usize = 4;

/// Client keys longer than this are stored as their SHA-256 (a client choosing a huge header
/// value must not make every read of its slot copy it).
pub const MAX_STORED_KEY: usize = 96;

/// A bounded table of per-key states on shared data.
#[derive(Debug, Clone)]
pub struct SlotTable {
    prefix: String,
    slots: u32,
    hash_key: HashKey,
}

/// How much a stored state is worth keeping, as its writer judged it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Until when (ms since the epoch) the state matters; afterwards its slot is free.
    pub live_until: u64,
    /// Until when the key is at its limit (a request would be refused or queued); until then
    /// its state is never evicted. 0 (or any past time) when it is not.
    pub limited_until: u64,
    /// How much of its limit the key has used, 0 to [`Standing::FULL_LOAD`]: among evictable
    /// states the lowest goes first.
    pub load: u16,
}

impl Standing {
    /// The `load` of a key that used its whole limit.
    pub const FULL_LOAD: u16 = 10_000;

    /// The `load` of a key that used `used` of `max`.
    pub fn load_of(used: u64, max: u64) -> u16 {
        let full = u128::from(Standing::FULL_LOAD);
        let load = (u128::from(used) * full / u128::from(max.max(1))).min(full);
        load as u16
    }

    const ENCODED: usize = 18;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.live_until.to_le_bytes());
        out.extend_from_slice(&self.limited_until.to_le_bytes());
        out.extend_from_slice(&self.load.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Standing> {
        Some(Standing {
            live_until: crate::shared::read_u64(bytes, 0)?,
            limited_until: crate::shared::read_u64(bytes, 8)?,
            load: u16::from_le_bytes(bytes.get(16..18)?.try_into().ok()?),
        })
    }
}

/// What an update function decides for the state it was shown.
pub enum Change<T> {
    /// Store this state with its standing (if the slot has not changed meanwhile), return `T`.
    Write(Vec<u8>, Standing, T),
    /// Leave the slot as it is and return `T`.
    Keep(T),
}

/// The result of [`SlotTable::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slotted<T> {
    /// The update function ran on the key's state (and its write, if any, happened).
    Done(T),
    /// The key had no slot and took one from another key's live state, which is gone; the
    /// update function ran on a fresh state and its write happened.
    Evicted(T),
    /// Every candidate slot holds another key at its limit: nothing was evicted. The first of
    /// them stops being at its limit at `free_at_ms`.
    Full {
        /// When the earliest of the occupying keys can be evicted.
        free_at_ms: u64,
    },
}

/// Where a key without a slot of its own may go, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Vacancy {
    /// Empty, unreadable or no longer live.
    Free,
    /// A live state not at its limit: evicted lightest first, then the one ending first.
    Evictable { load: u16, live_until: u64 },
}

impl SlotTable {
    /// A table of `slots` slots (at least 1) under `prefix`, its keys placed with `hash_key`
    /// (the Envoy's, from [`HashKey::configured`]).
    pub fn new(prefix: &str, slots: u32, hash_key: HashKey) -> Self {
        SlotTable {
            prefix: prefix.to_owned(),
            slots: slots.max(1),
            hash_key,
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
        let (h, h2) = self.hash_key.hash128(key);
        // A second, odd step makes the probe sequence depend on the key, not just its first slot.
        let step = ((h2 | 1) % slots).max(1);
        let mut out = [0u64; PROBES];
        let mut len = 0;
        for i in 0..PROBES as u64 {
            let n = (h % slots + i * step) % slots;
            if !out[..len].contains(&n) {
                out[len] = n;
                len += 1;
            }
        }
        (out, len)
    }

    /// Runs `f` on `key`'s current state (`None` for a key without a slot) and stores the state
    /// and [`Standing`] it returns, atomically across workers. A key without a slot takes a
    /// free one or evicts the least valuable evictable state (see the module docs). `now` is
    /// the time standings are judged at. `f` may run more than once and must have no side
    /// effects.
    pub fn update<T>(
        &self,
        host: &impl Host,
        key: &str,
        now: u64,
        mut f: impl FnMut(Option<&[u8]>) -> Change<T>,
    ) -> Result<Slotted<T>, SharedError> {
        let stored = stored_key(key);
        let (candidates, len) = self.candidates(&stored);
        for _ in 0..MAX_CAS_RETRIES {
            // Find the key's own slot; else the best vacancy (still looking for its own).
            let mut own = None;
            let mut best: Option<(Vacancy, String, Option<u32>)> = None;
            let mut free_at_ms = u64::MAX;
            for &n in &candidates[..len] {
                let slot = self.slot_key(n);
                let (value, cas) = host.shared_get(&slot)?;
                let vacancy = match value.as_deref().and_then(decode) {
                    Some((k, _, state)) if k == stored.as_ref() => {
                        own = Some((slot, state.to_vec(), cas));
                        break;
                    }
                    Some((_, standing, _)) if standing.live_until > now => {
                        if standing.limited_until > now {
                            free_at_ms = free_at_ms.min(standing.limited_until);
                            continue;
                        }
                        Vacancy::Evictable {
                            load: standing.load,
                            live_until: standing.live_until,
                        }
                    }
                    _ => Vacancy::Free,
                };
                if best.as_ref().is_none_or(|(b, _, _)| vacancy < *b) {
                    best = Some((vacancy, slot, cas));
                }
            }
            let (slot, change, cas, evicted) = match (own, best) {
                (Some((slot, state, cas)), _) => (slot, f(Some(&state)), cas, false),
                (None, Some((vacancy, slot, cas))) => {
                    let evicted = matches!(vacancy, Vacancy::Evictable { .. });
                    (slot, f(None), cas, evicted)
                }
                (None, None) => return Ok(Slotted::Full { free_at_ms }),
            };
            let done = |result| {
                if evicted {
                    Slotted::Evicted(result)
                } else {
                    Slotted::Done(result)
                }
            };
            match change {
                // Nothing written: whatever occupied the slot is still there.
                Change::Keep(result) => return Ok(Slotted::Done(result)),
                Change::Write(state, standing, result) => {
                    let bytes = encode(&stored, &standing, &state);
                    match host.shared_set(&slot, &bytes, Some(cas.unwrap_or(CREATE_CAS))) {
                        Ok(()) => return Ok(done(result)),
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

/// A slot's content: `key length (u16 LE) | key | standing (live_until, limited_until: u64 LE;
/// load: u16 LE) | state`.
fn encode(key: &[u8], standing: &Standing, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len() + Standing::ENCODED + state.len());
    // Stored keys are at most MAX_STORED_KEY bytes.
    out.extend_from_slice(&(key.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    out.extend_from_slice(key);
    standing.encode(&mut out);
    out.extend_from_slice(state);
    out
}

fn decode(bytes: &[u8]) -> Option<(&[u8], Standing, &[u8])> {
    let len = usize::from(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?));
    let key = bytes.get(2..2 + len)?;
    let rest = bytes.get(2 + len..)?;
    let standing = Standing::decode(rest)?;
    Some((key, standing, rest.get(Standing::ENCODED..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{stable_hash, HASH_KEY_KEY};
    use crate::testing::TestEnvoy;
    use crate::{ConfigError, Policy};

    fn new_table(envoy: &TestEnvoy, prefix: &str, slots: u32) -> SlotTable {
        let hash_key = HashKey::load_or_create(&envoy.request(0)).unwrap();
        SlotTable::new(prefix, slots, hash_key)
    }

    /// A test state: `expires_ms (u64 LE) | count (u64 LE)`.
    fn expires(state: &[u8]) -> u64 {
        u64::from_le_bytes(state[..8].try_into().unwrap())
    }

    fn count(state: &[u8]) -> u64 {
        u64::from_le_bytes(state[8..16].try_into().unwrap())
    }

    /// A fixed-window limiter of `max` per `ttl` ms: `Some(n)` for the n-th admitted request,
    /// `None` when refused. Its state stays live one more window after it ends (like a sliding
    /// window), so a limited key can become evictable while still live.
    fn hit(
        table: &SlotTable,
        host: &impl Host,
        key: &str,
        ttl: u64,
        max: u64,
    ) -> Slotted<Option<u64>> {
        let now = host.now_ms();
        table
            .update(host, key, now, |state| {
                let current = state.filter(|s| expires(s) > now);
                let used = current.map_or(0, count);
                if used >= max {
                    return Change::Keep(None);
                }
                let n = used + 1;
                let ends = current.map_or(now + ttl, expires);
                let mut out = ends.to_le_bytes().to_vec();
                out.extend_from_slice(&n.to_le_bytes());
                let standing = Standing {
                    live_until: ends + ttl,
                    limited_until: if n >= max { ends } else { 0 },
                    load: Standing::load_of(n, max),
                };
                Change::Write(out, standing, Some(n))
            })
            .unwrap()
    }

    #[test]
    fn keys_keep_their_own_state() {
        let envoy = TestEnvoy::new(2);
        let table = new_table(&envoy, "rl:t", 64);
        for i in 1..=3 {
            assert_eq!(
                hit(&table, &envoy.request(0), "a", 1000, 9),
                Slotted::Done(Some(i))
            );
            assert_eq!(
                hit(&table, &envoy.request(1), "b", 1000, 9),
                Slotted::Done(Some(i))
            );
        }
        let long = "x".repeat(10_000);
        assert_eq!(
            hit(&table, &envoy.request(0), &long, 1000, 9),
            Slotted::Done(Some(1))
        );
        assert_eq!(
            hit(&table, &envoy.request(1), &long, 1000, 9),
            Slotted::Done(Some(2))
        );
        // The long key is stored as a digest, not copied into its slot.
        let biggest = (0..64)
            .filter_map(|n| envoy.request(0).shared_get(&table.slot_key(n)).unwrap().0)
            .map(|v| v.len())
            .max()
            .unwrap();
        assert!(biggest < 100, "{biggest}");
    }

    /// Where the unkeyed FNV scheme this table used before put a key: what an attacker could
    /// compute offline.
    fn unkeyed_candidates(key: &[u8], slots: u64) -> Vec<u64> {
        let h = stable_hash(key);
        let step = ((stable_hash(&h.to_le_bytes()) | 1) % slots).max(1);
        let mut out: Vec<u64> = (0..PROBES as u64)
            .map(|i| (h % slots + i * step) % slots)
            .collect();
        out.sort_unstable();
        out
    }

    fn sorted_candidates(table: &SlotTable, key: &str) -> Vec<u64> {
        let (c, len) = table.candidates(key.as_bytes());
        let mut out = c[..len].to_vec();
        out.sort_unstable();
        out
    }

    #[test]
    fn keys_aimed_with_the_unkeyed_hash_miss_the_victim() {
        const SLOTS: u32 = 64;
        // Offline: four keys whose unkeyed candidates are exactly the victim's.
        let target = unkeyed_candidates(b"victim", u64::from(SLOTS));
        let aimed: Vec<String> = (0..)
            .map(|i| format!("attacker-{i}"))
            .filter(|k| unkeyed_candidates(k.as_bytes(), u64::from(SLOTS)) == target)
            .take(4)
            .collect();

        let envoy = TestEnvoy::new(2);
        let table = new_table(&envoy, "rl:aim", SLOTS);
        // Under the secret they are scattered: none shares the victim's candidate set.
        let victim = sorted_candidates(&table, "victim");
        assert!(aimed.iter().all(|k| sorted_candidates(&table, k) != victim));
        // Each spends its one request of the window (at its limit, never evicted)...
        for (i, k) in aimed.iter().enumerate() {
            assert!(matches!(
                hit(&table, &envoy.request(i % 2), k, 60_000, 1),
                Slotted::Done(Some(1))
            ));
        }
        // ... and the victim, which the unkeyed table would have refused, gets its quota.
        assert_eq!(
            hit(&table, &envoy.request(0), "victim", 60_000, 1),
            Slotted::Done(Some(1))
        );
    }

    #[test]
    fn placement_depends_on_the_envoys_secret() {
        let place = |seed: Option<u64>| {
            let envoy = TestEnvoy::new(1);
            if let Some(seed) = seed {
                envoy.seed_random(seed);
            }
            let table = new_table(&envoy, "p", 100_000);
            (0..100)
                .map(|i| table.candidates(format!("client-{i}").as_bytes()))
                .collect::<Vec<_>>()
        };
        // The same secret places every key the same way (reproducible tests)...
        assert_eq!(place(None), place(None));
        // ... two secrets place (almost) every key differently.
        let (a, b) = (place(Some(1)), place(Some(2)));
        let moved = a.iter().zip(&b).filter(|(x, y)| x.0[0] != y.0[0]).count();
        assert!(moved >= 95, "{moved}");
    }

    /// Two policies that place keys in a slot table, as rate-limiting and spike-control do.
    struct FirstPolicy(SlotTable);
    struct SecondPolicy(SlotTable);

    impl Policy for FirstPolicy {
        const NAME: &'static str = "first";
        type State = ();
        fn configure(_: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
            Ok(FirstPolicy(SlotTable::new(
                "a",
                100_000,
                HashKey::configured(host)?,
            )))
        }
    }

    impl Policy for SecondPolicy {
        const NAME: &'static str = "second";
        type State = ();
        fn configure(_: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
            Ok(SecondPolicy(SlotTable::new(
                "b",
                100_000,
                HashKey::configured(host)?,
            )))
        }
    }

    #[test]
    fn the_secret_is_created_once_and_shared_by_every_worker_and_policy() {
        let envoy = TestEnvoy::new(3);
        let first = envoy.deploy::<FirstPolicy>("").unwrap();
        let second = envoy.deploy::<SecondPolicy>("").unwrap();
        assert_eq!(envoy.shared_keys_with_prefix(HASH_KEY_KEY), 1);
        let key = b"client-42";
        let expected = first.policy(0).0.candidates(key);
        for w in 0..3 {
            assert_eq!(first.policy(w).0.candidates(key), expected);
            assert_eq!(second.policy(w).0.candidates(key), expected);
        }
        // The secret never shows in debug output.
        assert_eq!(format!("{:?}", first.policy(0).0.hash_key), "HashKey(..)");
    }

    #[test]
    fn racing_creators_agree_on_one_secret() {
        let envoy = TestEnvoy::new(2);
        // Worker 1 publishes its key between worker 0's read (absent) and write.
        let theirs = std::rc::Rc::new(std::cell::RefCell::new(None));
        let seen = theirs.clone();
        envoy.interfere_on_next_sets(1, HASH_KEY_KEY, move |host| {
            *seen.borrow_mut() = Some(HashKey::load_or_create(host).unwrap());
        });
        let ours = HashKey::load_or_create(&envoy.request(0)).unwrap();
        let theirs = theirs.borrow().clone().unwrap();
        assert_eq!(ours.hash128(b"k"), theirs.hash128(b"k"));
        assert_eq!(
            HashKey::load_or_create(&envoy.request(1))
                .unwrap()
                .hash128(b"k"),
            ours.hash128(b"k")
        );
    }

    #[test]
    fn without_entropy_the_policy_is_refused() {
        let envoy = TestEnvoy::new(1);
        envoy.break_random();
        let err = envoy.deploy::<FirstPolicy>("").unwrap_err();
        assert!(err.contains("hash key"), "{err}");
        assert_eq!(envoy.shared_keys_with_prefix(HASH_KEY_KEY), 0);
    }

    #[test]
    fn a_flood_of_one_off_keys_never_refuses_a_newcomer() {
        let envoy = TestEnvoy::new(2);
        let table = new_table(&envoy, "rl:flood", 16);
        let mut evicted = 0;
        for i in 0..10_000 {
            match hit(
                &table,
                &envoy.request(i % 2),
                &format!("flood-{i}"),
                60_000,
                3,
            ) {
                Slotted::Done(Some(1)) => {}
                Slotted::Evicted(Some(1)) => evicted += 1,
                other => panic!("flood-{i}: {other:?}"),
            }
        }
        assert!(evicted >= 10_000 - 16, "{evicted}");
        assert!(envoy.shared_keys_with_prefix("rl:flood:") <= 16);
        assert!(matches!(
            hit(&table, &envoy.request(0), "newcomer", 60_000, 3),
            Slotted::Evicted(Some(1))
        ));
        // The newcomer now counts like anyone else.
        assert_eq!(
            hit(&table, &envoy.request(1), "newcomer", 60_000, 3),
            Slotted::Done(Some(2))
        );
    }

    #[test]
    fn a_key_at_its_limit_is_never_reset_by_a_flood() {
        let envoy = TestEnvoy::new(2);
        let table = new_table(&envoy, "rl:limited", 16);
        // One key at its limit, one close to it, then a flood of light keys.
        for n in 1..=2 {
            assert_eq!(
                hit(&table, &envoy.request(0), "limited", 60_000, 2),
                Slotted::Done(Some(n))
            );
            assert_eq!(
                hit(&table, &envoy.request(0), "heavy", 60_000, 3),
                Slotted::Done(Some(n))
            );
        }
        for i in 0..10_000 {
            envoy.advance_ms(1);
            assert!(matches!(
                hit(
                    &table,
                    &envoy.request(i % 2),
                    &format!("flood-{i}"),
                    60_000,
                    3
                ),
                Slotted::Done(Some(1)) | Slotted::Evicted(Some(1))
            ));
        }
        // Still limited, with its count (a reset would admit it).
        assert_eq!(
            hit(&table, &envoy.request(1), "limited", 60_000, 2),
            Slotted::Done(None)
        );
        // The heavier key outweighed every flood key sharing its candidates: kept too.
        assert_eq!(
            hit(&table, &envoy.request(1), "heavy", 60_000, 3),
            Slotted::Done(Some(3))
        );
        // Its window over, it starts a new one.
        envoy.advance_ms(60_000);
        assert_eq!(
            hit(&table, &envoy.request(0), "limited", 60_000, 2),
            Slotted::Done(Some(1))
        );
    }

    #[test]
    fn when_every_candidate_is_at_its_limit_the_newcomer_waits_for_the_first() {
        let envoy = TestEnvoy::new(1);
        let host = envoy.request(0);
        let table = new_table(&envoy, "rl:full", 1);
        assert_eq!(hit(&table, &host, "a", 1000, 1), Slotted::Done(Some(1)));
        let limited_until = envoy.now_ms() + 1000;
        assert_eq!(
            hit(&table, &host, "b", 1000, 1),
            Slotted::Full {
                free_at_ms: limited_until
            }
        );
        // Still live, no longer at its limit: evicted for the newcomer.
        envoy.advance_ms(1000);
        assert_eq!(hit(&table, &host, "b", 1000, 1), Slotted::Evicted(Some(1)));
        envoy.advance_ms(2000);
        // Past `live_until` a slot is simply free.
        assert_eq!(hit(&table, &host, "c", 1000, 5), Slotted::Done(Some(1)));
    }

    #[test]
    fn the_lightest_then_the_oldest_state_is_evicted() {
        let envoy = TestEnvoy::new(1);
        let host = envoy.request(0);
        // Two slots: every key's candidates are both.
        let table = new_table(&envoy, "rl:order", 2);
        for _ in 0..2 {
            hit(&table, &host, "heavy", 60_000, 3);
        }
        hit(&table, &host, "light", 60_000, 3);
        assert!(matches!(
            hit(&table, &host, "new-1", 60_000, 3),
            Slotted::Evicted(_)
        ));
        assert_eq!(
            hit(&table, &host, "heavy", 60_000, 3),
            Slotted::Done(Some(3))
        );
        assert_eq!(
            hit(&table, &host, "light", 60_000, 3),
            Slotted::Evicted(Some(1))
        );
        // "heavy" is at its limit now: newcomers only ever take the other slot.
        assert!(matches!(
            hit(&table, &host, "new-2", 60_000, 3),
            Slotted::Evicted(_)
        ));
        assert_eq!(
            hit(&table, &host, "light", 60_000, 3),
            Slotted::Evicted(Some(1))
        );
        // Equal loads: the older state goes.
        let table = new_table(&envoy, "rl:age", 2);
        hit(&table, &host, "old", 60_000, 3);
        envoy.advance_ms(10);
        hit(&table, &host, "young", 60_000, 3);
        hit(&table, &host, "new", 60_000, 3);
        assert_eq!(
            hit(&table, &host, "young", 60_000, 3),
            Slotted::Done(Some(2))
        );
        assert!(matches!(
            hit(&table, &host, "old", 60_000, 3),
            Slotted::Evicted(Some(1))
        ));
    }

    #[test]
    fn racing_workers_claiming_a_slot_do_not_lose_an_update() {
        let envoy = TestEnvoy::new(2);
        let table = new_table(&envoy, "rl:race", 1);
        let t2 = table.clone();
        // Worker 1 claims the only slot for the same key between worker 0's read and write.
        envoy.interfere_on_next_sets(1, "rl:race:0", move |host| {
            assert_eq!(hit(&t2, host, "k", 1000, 9), Slotted::Done(Some(1)));
        });
        assert_eq!(
            hit(&table, &envoy.request(0), "k", 1000, 9),
            Slotted::Done(Some(2))
        );

        // Another key, at its limit, takes the single slot between worker 0's read (an
        // expired state: free) and write: worker 0 looks again and finds it protected.
        let t3 = table.clone();
        envoy.advance_ms(2000);
        envoy.interfere_on_next_sets(1, "rl:race:0", move |host| {
            assert_eq!(hit(&t3, host, "other", 1000, 1), Slotted::Done(Some(1)));
        });
        assert!(matches!(
            hit(&table, &envoy.request(0), "k", 1000, 9),
            Slotted::Full { .. }
        ));
    }

    #[test]
    fn probes_are_distinct_and_in_range() {
        let envoy = TestEnvoy::new(1);
        for slots in [1, 2, 3, 7, 100_000] {
            let table = new_table(&envoy, "p", slots);
            for key in ["a", "b", "client-42"] {
                let (c, len) = table.candidates(key.as_bytes());
                assert!(len >= 1 && len <= PROBES.min(slots as usize));
                for (i, n) in c[..len].iter().enumerate() {
                    assert!(*n < u64::from(slots));
                    assert!(!c[..i].contains(n));
                }
            }
        }
        assert_eq!(new_table(&envoy, "p", 100_000).candidates(b"k").1, PROBES);
    }

    #[test]
    fn standings_round_trip_and_garbage_is_free() {
        let standing = Standing {
            live_until: 7,
            limited_until: 5,
            load: 42,
        };
        let bytes = encode(b"key", &standing, b"state");
        assert_eq!(decode(&bytes), Some((&b"key"[..], standing, &b"state"[..])));
        assert_eq!(decode(&bytes[..bytes.len() - 6]), None);
        assert_eq!(Standing::load_of(0, 0), 0);
        assert_eq!(Standing::load_of(1, 3), 3333);
        assert_eq!(Standing::load_of(u64::MAX, 1), Standing::FULL_LOAD);
    }
}
