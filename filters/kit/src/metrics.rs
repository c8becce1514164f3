//! Policy counters, named `palisade.<policy>.<outcome>` (the policy name with `_` for `-`), so
//! they show in Envoy's `/stats/prometheus` as `palisade_<policy>_<outcome>`.
//!
//! Counters are defined once, at configure time: looking a stat up by name per request contends
//! on Envoy's symbol table. Envoy keeps one value per name for the whole process, so every
//! worker adds to the same count.
//!
//! Adding to Envoy's counter is a host call (about 1 µs), so a counter defined while a policy is
//! configured ([`crate::runtime::Vm::configure`]) only adds to a count kept in its VM; the kit
//! hands the counts to Envoy on the VM's timer, every [`FLUSH_PERIOD_MS`] (or the policy's own
//! shorter period), and when the VM shuts down. Nothing is lost: a count leaves the VM only by
//! being added to Envoy's counter (a VM that traps loses what it counted since its last tick,
//! along with everything else it held). A counter defined outside a configuring VM (a test
//! host) adds to Envoy's counter at once.

use crate::config::ConfigError;
use crate::host::Host;
use std::cell::{Cell, RefCell};

/// How often, at the latest, a VM adds its counts to Envoy's counters.
pub const FLUSH_PERIOD_MS: u32 = 1_000;

thread_local! {
    /// The counts not yet added to Envoy, one slot per counter defined in a configuring VM.
    /// A wasm VM is one instance on one thread, so this is per VM in Envoy (several root
    /// contexts of one module share it, each with its own slots). Slots of a dropped VM are
    /// reused, so reconfiguring does not grow it.
    static COUNTS: RefCell<Slots> = RefCell::new(Slots::default());
    /// The counters defined by the VM configuring right now (see [`PendingCounts::collect`]).
    static COLLECTING: RefCell<Option<Vec<(u32, usize)>>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Slots {
    counts: Vec<Cell<i64>>,
    free: Vec<usize>,
}

impl Slots {
    fn take(&mut self) -> usize {
        match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.counts.push(Cell::new(0));
                self.counts.len() - 1
            }
        }
    }
}

/// A defined counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    id: u32,
    /// Where its VM keeps the count not yet added to Envoy's (`None`: added at once).
    slot: Option<usize>,
}

impl Counter {
    /// Defines `palisade.<policy>.<outcome>`. Counters are defined while configuring, so a
    /// failure is a configuration error (the policy refuses to start).
    pub fn define(host: &mut impl Host, policy: &str, outcome: &str) -> Result<Self, ConfigError> {
        let id = host
            .define_counter(&metric_name(policy, outcome))
            .map_err(|e| ConfigError::at(".", format!("cannot define metric {outcome}: {e}")))?;
        let slot = COLLECTING.with(|collecting| {
            let mut collecting = collecting.try_borrow_mut().ok()?;
            let defined = collecting.as_mut()?;
            let slot = COUNTS.with(|counts| counts.try_borrow_mut().ok().map(|mut c| c.take()))?;
            defined.push((id, slot));
            Some(slot)
        });
        Ok(Counter { id, slot })
    }

    /// Adds one: to the VM's count (no host call), or to Envoy's counter when there is none.
    pub fn inc(self, host: &impl Host) {
        let kept = self.slot.is_some_and(|slot| {
            COUNTS
                .try_with(|counts| {
                    counts.try_borrow().ok().is_some_and(|counts| {
                        counts.counts.get(slot).is_some_and(|count| {
                            count.set(count.get().saturating_add(1));
                            true
                        })
                    })
                })
                .unwrap_or(false)
        });
        if !kept {
            host.increment_counter(self.id, 1);
        }
    }
}

/// The counts a VM keeps for its counters until [`PendingCounts::flush`] adds them to Envoy's.
/// Dropping it frees the slots (counts not flushed by then are lost: flush first).
#[derive(Debug, Default)]
pub struct PendingCounts {
    counters: Vec<(u32, usize)>,
}

impl PendingCounts {
    /// Runs `configure`; the counters it defines keep their counts in the VM, in the returned
    /// `PendingCounts`.
    pub fn collect<T>(configure: impl FnOnce() -> T) -> (T, PendingCounts) {
        let previous =
            COLLECTING.with(|c| c.try_borrow_mut().ok().map(|mut c| c.replace(Vec::new())));
        let result = configure();
        let counters = COLLECTING.with(|c| {
            c.try_borrow_mut()
                .ok()
                .and_then(|mut c| std::mem::replace(&mut *c, previous.flatten()))
        });
        (
            result,
            PendingCounts {
                counters: counters.unwrap_or_default(),
            },
        )
    }

    /// Adds every count kept since the last flush to Envoy's counters: one host call per
    /// counter that moved.
    pub fn flush(&self, host: &impl Host) {
        let _ = COUNTS.try_with(|counts| {
            let Ok(counts) = counts.try_borrow() else {
                return;
            };
            for &(id, slot) in &self.counters {
                if let Some(count) = counts.counts.get(slot) {
                    let delta = count.replace(0);
                    if delta != 0 {
                        host.increment_counter(id, delta);
                    }
                }
            }
        });
    }
}

impl Drop for PendingCounts {
    fn drop(&mut self) {
        // `try_with`: this may run while the thread's locals are being torn down.
        let _ = COUNTS.try_with(|counts| {
            if let Ok(mut counts) = counts.try_borrow_mut() {
                for &(_, slot) in &self.counters {
                    if let Some(count) = counts.counts.get(slot) {
                        count.set(0);
                    }
                    counts.free.push(slot);
                }
            }
        });
    }
}

/// Declares a policy's counters as one list: a struct with a [`Counter`] field per outcome and a
/// `define(host, policy)` that defines them all at configure time (metric
/// `palisade.<policy>.<field>`).
///
/// ```ignore
/// palisade_kit::counters! {
///     /// The policy's counters.
///     pub struct Metrics { allowed, denied }
/// }
/// let metrics = Metrics::define(host, NAME)?;
/// metrics.allowed.inc(host);
/// ```
#[macro_export]
macro_rules! counters {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name {
            $(
                #[doc = concat!("`palisade.<policy>.", stringify!($field), "`")]
                pub $field: $crate::metrics::Counter,
            )+
        }

        impl $name {
            /// Defines every counter of `policy`.
            pub fn define(
                host: &mut impl $crate::Host,
                policy: &str,
            ) -> ::std::result::Result<Self, $crate::ConfigError> {
                Ok($name {
                    $($field: $crate::metrics::Counter::define(host, policy, stringify!($field))?,)+
                })
            }
        }
    };
}

/// The full metric name for a policy outcome.
pub fn metric_name(policy: &str, outcome: &str) -> String {
    format!("palisade.{}.{}", policy.replace('-', "_"), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn counters_are_named_and_shared_by_workers() {
        assert_eq!(
            metric_name("ip-filter", "denied"),
            "palisade.ip_filter.denied"
        );
        let envoy = TestEnvoy::new(2);
        let mut w0 = envoy.request(0);
        let mut w1 = envoy.request(1);
        let a = Counter::define(&mut w0, "ip-filter", "denied").unwrap();
        let b = Counter::define(&mut w1, "ip-filter", "denied").unwrap();
        a.inc(&w0);
        b.inc(&w1);
        b.inc(&w1);
        assert_eq!(envoy.counter("palisade.ip_filter.denied"), 3);
        assert_eq!(envoy.reported_counter("palisade.ip_filter.denied"), 3);
    }

    crate::counters! {
        struct Outcomes { seen, ticked }
    }

    /// Counts every request, and its own ticks (every `period` ms).
    struct Counting {
        outcomes: Outcomes,
        period: u32,
    }

    impl crate::Policy for Counting {
        const NAME: &'static str = "counting";
        type State = ();
        fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
            Ok(Counting {
                outcomes: Outcomes::define(host, Self::NAME)?,
                period: std::str::from_utf8(json)
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
            })
        }
        fn tick_period_ms(&self) -> u32 {
            self.period
        }
        fn on_tick(&self, host: &mut impl Host, _: &mut crate::Wakes) {
            self.outcomes.ticked.inc(host);
        }
        fn on_request_headers(
            &self,
            _: &mut crate::Request<'_, ()>,
            host: &mut impl Host,
            _: bool,
        ) -> crate::Verdict {
            self.outcomes.seen.inc(host);
            crate::Verdict::Continue
        }
    }

    #[test]
    fn kept_counts_reach_envoy_on_the_tick_and_none_is_lost() {
        let envoy = TestEnvoy::new(2);
        let policy = envoy.deploy::<Counting>("").unwrap();
        let mut sent = 0;
        for round in 0..5u64 {
            for i in 0..(3 + round) {
                let mut req = policy.request(i as usize);
                policy.send(&mut req);
                assert_eq!(
                    req.host_calls().get("increment_counter"),
                    0,
                    "kept in the VM"
                );
                sent += 1;
            }
            assert!(envoy.reported_counter("palisade.counting.seen") < sent);
            // Ticks of both workers within one flush period hand every count to Envoy.
            policy.tick(u64::from(FLUSH_PERIOD_MS));
            assert_eq!(envoy.reported_counter("palisade.counting.seen"), sent);
            policy.tick(u64::from(FLUSH_PERIOD_MS) / 3);
            assert_eq!(
                envoy.reported_counter("palisade.counting.seen"),
                sent,
                "no double count"
            );
        }
        let mut req = policy.request(1);
        policy.send(&mut req);
        assert_eq!(
            envoy.counter("palisade.counting.seen"),
            sent + 1,
            "flushed when read"
        );
        assert_eq!(envoy.reported_counter("palisade.counting.seen"), sent + 1);
    }

    #[test]
    fn the_flush_timer_merges_with_the_policy_period() {
        // No period of its own: flushed every FLUSH_PERIOD_MS, never ticked.
        let envoy = TestEnvoy::new(1);
        let policy = envoy.deploy::<Counting>("").unwrap();
        policy.send(&mut policy.request(0));
        policy.tick(u64::from(FLUSH_PERIOD_MS) - 1);
        assert_eq!(envoy.reported_counter("palisade.counting.seen"), 0);
        policy.tick(1);
        assert_eq!(envoy.reported_counter("palisade.counting.seen"), 1);
        assert_eq!(envoy.counter("palisade.counting.ticked"), 0);

        // A shorter period: ticked (and flushed) at it.
        let envoy = TestEnvoy::new(1);
        let policy = envoy.deploy::<Counting>("100").unwrap();
        policy.send(&mut policy.request(0));
        policy.tick(100);
        assert_eq!(envoy.reported_counter("palisade.counting.seen"), 1);
        policy.tick(900);
        assert_eq!(envoy.counter("palisade.counting.ticked"), 10);

        // A longer one: flushed every FLUSH_PERIOD_MS, ticked every 3rd flush for 2500 ms.
        let envoy = TestEnvoy::new(1);
        let policy = envoy.deploy::<Counting>("2500").unwrap();
        policy.send(&mut policy.request(0));
        policy.tick(u64::from(FLUSH_PERIOD_MS));
        assert_eq!(envoy.reported_counter("palisade.counting.seen"), 1);
        policy.tick(u64::from(FLUSH_PERIOD_MS) * 6);
        assert_eq!(envoy.counter("palisade.counting.ticked"), 2);
    }

    #[test]
    fn a_vm_flushes_when_it_shuts_down_and_its_slots_are_reused() {
        let envoy = TestEnvoy::new(1);
        let policy = envoy.deploy::<Counting>("").unwrap();
        policy.send(&mut policy.request(0));
        assert_eq!(envoy.reported_counter("palisade.counting.seen"), 0);
        let used = COUNTS.with(|c| c.borrow().counts.len());
        drop(policy);
        assert_eq!(
            envoy.reported_counter("palisade.counting.seen"),
            1,
            "flushed"
        );
        let policy = envoy.deploy::<Counting>("").unwrap();
        assert_eq!(
            COUNTS.with(|c| c.borrow().counts.len()),
            used,
            "slots reused"
        );
        policy.send(&mut policy.request(0));
        assert_eq!(
            envoy.counter("palisade.counting.seen"),
            2,
            "reused slots start at zero"
        );
    }
}
