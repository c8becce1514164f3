//! Policy counters, named `palisade.<policy>.<outcome>` (the policy name with `_` for `-`), so
//! they show in Envoy's `/stats/prometheus` as `palisade_<policy>_<outcome>`.
//!
//! Counters are defined once, at configure time: looking a stat up by name per request contends
//! on Envoy's symbol table. Envoy keeps one value per name for the whole process, so every
//! worker adds to the same count.

use crate::config::ConfigError;
use crate::host::Host;

/// A defined counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

impl Counter {
    /// Defines `palisade.<policy>.<outcome>`. Counters are defined while configuring, so a
    /// failure is a configuration error (the policy refuses to start).
    pub fn define(host: &mut impl Host, policy: &str, outcome: &str) -> Result<Self, ConfigError> {
        host.define_counter(&metric_name(policy, outcome))
            .map(Counter)
            .map_err(|e| ConfigError::at(".", format!("cannot define metric {outcome}: {e}")))
    }

    /// Adds one.
    pub fn inc(self, host: &impl Host) {
        host.increment_counter(self.0, 1);
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
    }
}
