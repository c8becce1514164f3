//! `ip-filter`: allow or block requests by client IP address.
//!
//! [`config`] reads and compiles the configuration, [`ipset`] matches addresses against
//! thousands of ranges in logarithmic time, and [`IpFilter`] decides in the request-headers
//! phase. The kit's runtime does the rest (`palisade_kit::wasm::start`).

pub mod config;
pub mod ipset;

use config::{Config, Mode};
use palisade_kit::address::AddressSource;
use palisade_kit::{ConfigError, Denial, Host, Policy, Request, Verdict};

palisade_kit::counters! {
    /// The policy's counters (`palisade_ip_filter_*`).
    pub struct Metrics { allowed, denied, no_address }
}

/// The compiled policy.
pub struct IpFilter {
    mode: Mode,
    ips: ipset::IpSet,
    source: AddressSource,
    denial: Denial,
    metrics: Metrics,
}

impl Policy for IpFilter {
    const NAME: &'static str = "ip-filter";
    type State = ();

    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let Config {
            mode,
            ips,
            source,
            denial,
        } = Config::compile(config)?;
        Ok(IpFilter {
            mode,
            ips,
            source,
            denial,
            metrics: Metrics::define(host, Self::NAME)?,
        })
    }

    fn on_request_headers(
        &self,
        _: &mut Request<'_, ()>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        let address = self.source.resolve(host);
        if address.is_none() {
            self.metrics.no_address.inc(host);
        }
        let listed = address.is_some_and(|ip| self.ips.contains(ip));
        let allow = match self.mode {
            Mode::Allowlist => listed,
            // An unreadable address cannot be on a blocklist; it is counted in `no_address`.
            Mode::Blocklist => !listed,
        };
        if allow {
            self.metrics.allowed.inc(host);
            return Verdict::Continue;
        }
        self.metrics.denied.inc(host);
        self.denial.send(host)
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<IpFilter>(); }}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};

    fn filter(envoy: &TestEnvoy, config: &str) -> TestPolicy<IpFilter> {
        envoy.deploy::<IpFilter>(config).unwrap()
    }

    fn from(envoy: &TestEnvoy, peer: &str, xff: Option<&str>) -> TestRequest {
        let mut req = envoy.request(0);
        req.set_peer(peer);
        if let Some(xff) = xff {
            req.add_header("x-forwarded-for", xff);
        }
        req
    }

    #[test]
    fn allowlist_admits_listed_addresses_only() {
        let envoy = TestEnvoy::new(1);
        let f = filter(
            &envoy,
            r#"{"ips": ["10.0.0.0/8", "192.168", "2001:db8::/32"]}"#,
        );
        for peer in [
            "10.1.2.3:1",
            "192.168.77.1:2",
            "[2001:db8::5]:3",
            "[::ffff:10.0.0.1]:4",
        ] {
            let mut req = from(&envoy, peer, None);
            assert_eq!(f.send(&mut req), Verdict::Continue, "{peer}");
            assert!(req.response().is_none());
        }
        let mut req = from(&envoy, "11.0.0.1:1", None);
        assert_eq!(f.send(&mut req), Verdict::Respond);
        let resp = req.response().unwrap();
        assert_eq!(resp.status, 403);
        assert_eq!(resp.json()["error"], "ip_denied");
        assert_eq!(envoy.counter("palisade.ip_filter.allowed"), 4);
        assert_eq!(envoy.counter("palisade.ip_filter.denied"), 1);
    }

    #[test]
    fn blocklist_denies_listed_addresses_only() {
        let envoy = TestEnvoy::new(1);
        let f = filter(&envoy, r#"{"mode": "blocklist", "ips": ["203.0.113.7"]}"#);
        let mut blocked = from(&envoy, "203.0.113.7:9", None);
        assert_eq!(f.send(&mut blocked), Verdict::Respond);
        let mut other = from(&envoy, "203.0.113.8:9", None);
        assert_eq!(f.send(&mut other), Verdict::Continue);
    }

    #[test]
    fn no_address_is_denied_by_an_allowlist_and_counted() {
        let envoy = TestEnvoy::new(1);
        let f = filter(
            &envoy,
            r#"{"ips": ["0.0.0.0/0", "::/0"], "ipSource": "xff"}"#,
        );
        let mut req = from(&envoy, "10.0.0.1:1", Some("garbage"));
        assert_eq!(f.send(&mut req), Verdict::Respond);
        let mut req = from(&envoy, "10.0.0.1:1", None);
        assert_eq!(f.send(&mut req), Verdict::Respond);
        assert_eq!(envoy.counter("palisade.ip_filter.no_address"), 2);

        let b = filter(
            &envoy,
            r#"{"mode": "blocklist", "ips": ["1.1.1.1"], "ipSource": "xff"}"#,
        );
        let mut req = from(&envoy, "10.0.0.1:1", None);
        assert_eq!(b.send(&mut req), Verdict::Continue);
    }

    #[test]
    fn xff_spoofing_is_defeated_by_trusted_hops() {
        let envoy = TestEnvoy::new(1);
        let f = filter(
            &envoy,
            r#"{"ips": ["10.0.0.0/8"], "ipSource": "xff", "trustedHops": 1}"#,
        );
        // The client claims to be 10.0.0.1; the trusted proxy appended its real address.
        let mut spoofed = from(&envoy, "127.0.0.1:1", Some("10.0.0.1, 198.51.100.4"));
        assert_eq!(f.send(&mut spoofed), Verdict::Respond);
        let mut real = from(&envoy, "127.0.0.1:1", Some("198.51.100.4, 10.3.3.3"));
        assert_eq!(f.send(&mut real), Verdict::Continue);
    }

    #[test]
    fn every_header_line_counts_so_a_client_line_cannot_hide_the_proxy_line() {
        let envoy = TestEnvoy::new(1);
        let with_lines = |lines: &[&str]| {
            let mut req = from(&envoy, "127.0.0.1:1", None);
            for line in lines {
                req.add_header("x-real-ip", line);
            }
            req
        };
        // The client claims an allowed address on its own line; the trusted proxy's line
        // after it carries the real one.
        let allow = filter(
            &envoy,
            r#"{"ips": ["10.0.0.0/8"], "ipSource": "header:x-real-ip"}"#,
        );
        let mut spoofed = with_lines(&["10.0.0.1", "198.51.100.4"]);
        assert_eq!(allow.send(&mut spoofed), Verdict::Respond);
        let mut real = with_lines(&["198.51.100.4", "10.3.3.3"]);
        assert_eq!(allow.send(&mut real), Verdict::Continue);
        // A blocked client cannot slip past a blocklist by writing a line first.
        let block = filter(
            &envoy,
            r#"{"mode": "blocklist", "ips": ["203.0.113.0/24"], "ipSource": "header:x-real-ip"}"#,
        );
        let mut evading = with_lines(&["192.0.2.1", "203.0.113.7"]);
        assert_eq!(block.send(&mut evading), Verdict::Respond);
        let mut other = with_lines(&["203.0.113.7", "192.0.2.1"]);
        assert_eq!(block.send(&mut other), Verdict::Continue);
    }

    #[test]
    fn forwarded_for_lines_are_one_list_for_trusted_hops() {
        let envoy = TestEnvoy::new(1);
        let f = filter(
            &envoy,
            r#"{"ips": ["10.0.0.0/8"], "ipSource": "xff", "trustedHops": 2}"#,
        );
        // Two trusted proxies, the second adding its entry as a new line.
        let mut req = from(&envoy, "127.0.0.1:1", Some("198.51.100.4, 10.1.1.1"));
        req.add_header("x-forwarded-for", "192.0.2.50");
        assert_eq!(f.send(&mut req), Verdict::Continue);
        let mut spoofed = from(&envoy, "127.0.0.1:1", Some("10.1.1.1, 198.51.100.4"));
        spoofed.add_header("x-forwarded-for", "192.0.2.50");
        assert_eq!(f.send(&mut spoofed), Verdict::Respond);
    }

    #[test]
    fn ipv4_mapped_entries_match_ipv4_clients() {
        let envoy = TestEnvoy::new(1);
        let allow = filter(&envoy, r#"{"ips": ["::ffff:127.0.0.0/104"]}"#);
        for peer in ["127.0.0.9:1", "[::ffff:127.1.2.3]:1"] {
            let mut req = from(&envoy, peer, None);
            assert_eq!(allow.send(&mut req), Verdict::Continue, "{peer}");
        }
        let mut outside = from(&envoy, "128.0.0.1:1", None);
        assert_eq!(allow.send(&mut outside), Verdict::Respond);
        let block = filter(
            &envoy,
            r#"{"mode": "blocklist", "ips": ["::ffff:127.0.0.2"]}"#,
        );
        let mut blocked = from(&envoy, "127.0.0.2:1", None);
        assert_eq!(block.send(&mut blocked), Verdict::Respond);
        let mut other = from(&envoy, "127.0.0.3:1", None);
        assert_eq!(block.send(&mut other), Verdict::Continue);
        let err = envoy
            .deploy::<IpFilter>(r#"{"ips": ["10.0.0.1", "::ffff:127.0.0.0/90"]}"#)
            .unwrap_err();
        assert!(err.contains("invalid configuration at `ips[1]`"), "{err}");
        assert!(err.contains("at least /96"), "{err}");
    }

    #[test]
    fn denial_can_be_overridden() {
        let envoy = TestEnvoy::new(1);
        let f = filter(
            &envoy,
            r#"{"ips": ["10.0.0.0/8"], "denial": {"status": 404, "body": "not here", "contentType": "text/plain"}}"#,
        );
        let mut req = from(&envoy, "8.8.8.8:1", None);
        f.send(&mut req);
        let resp = req.response().unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (404, &b"not here"[..]));
        assert_eq!(resp.header("content-type"), Some("text/plain"));
    }

    #[test]
    fn a_bad_configuration_is_refused_naming_the_field() {
        let envoy = TestEnvoy::new(2);
        let err = envoy
            .deploy::<IpFilter>(r#"{"ips": ["10.0.0.1", "10.0.0.300"]}"#)
            .unwrap_err();
        assert!(
            err.starts_with("ip-filter: invalid configuration at `ips[1]`"),
            "{err}"
        );
    }

    #[test]
    fn every_worker_runs_the_policy_and_shares_the_counters() {
        let envoy = TestEnvoy::new(2);
        let f = filter(&envoy, r#"{"ips": ["10.0.0.0/8"]}"#);
        for worker in 0..2 {
            let mut req = f.request(worker);
            req.set_peer("10.0.0.1:1");
            assert_eq!(f.send(&mut req), Verdict::Continue);
            let mut req = f.request(worker);
            req.set_peer("11.0.0.1:1");
            assert_eq!(f.send(&mut req), Verdict::Respond);
            f.done(&mut req);
        }
        assert_eq!(envoy.counter("palisade.ip_filter.allowed"), 2);
        assert_eq!(envoy.counter("palisade.ip_filter.denied"), 2);
        assert_eq!(f.paused(0) + f.paused(1), 0);
    }

    /// Host calls per request, pinned so a regression shows; prints the rows of
    /// `BENCHMARKS.md` ("Host calls per request") with `-- --nocapture`.
    #[test]
    fn host_calls_per_request() {
        let envoy = TestEnvoy::new(1);
        let f = filter(&envoy, r#"{"ips": ["10.0.0.0/8"]}"#);
        let mut allowed = from(&envoy, "10.0.0.1:1", None);
        assert_eq!(f.send(&mut allowed), Verdict::Continue);
        let mut denied = from(&envoy, "11.0.0.1:1", None);
        assert_eq!(f.send(&mut denied), Verdict::Respond);
        let xff = filter(&envoy, r#"{"ips": ["10.0.0.0/8"], "ipSource": "xff"}"#);
        let mut via_xff = from(&envoy, "127.0.0.1:1", Some("10.0.0.1"));
        assert_eq!(xff.send(&mut via_xff), Verdict::Continue);
        let (allowed, denied, via_xff) = (
            allowed.host_calls(),
            denied.host_calls(),
            via_xff.host_calls(),
        );
        println!("{}", allowed.markdown_row("ip-filter", "allowed (peer)"));
        println!("{}", via_xff.markdown_row("ip-filter", "allowed (xff)"));
        println!("{}", denied.markdown_row("ip-filter", "denied"));
        assert_eq!(allowed.total(), 1, "{allowed:?}");
        assert_eq!(via_xff.total(), 1, "{via_xff:?}");
        assert_eq!(denied.total(), 2, "{denied:?}");
    }
}
