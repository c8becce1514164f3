//! The client's address.
//!
//! By default the downstream peer as Envoy reports it (`source.address`, which already honours
//! the connection manager's `use_remote_address` / `xff_num_trusted_hops`). Behind trusted
//! proxies, a policy may read `X-Forwarded-For` (or another header) instead, with a number of
//! trusted hops: each trusted proxy appended the address it saw, so the client is the entry that
//! many places from the right. The leftmost entries are whatever the client sent and are never
//! used. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are read as IPv4.
//!
//! A header sent as several lines is one list: the lines in order, as if joined with commas
//! (RFC 9110 §5.3; Envoy itself joins `X-Forwarded-For` lines that way). So a proxy that adds
//! its own line after the client's (rather than appending to the client's line) still supplies
//! the rightmost entry, and trusted hops are counted across lines. Reading only the first line
//! would take the client's line and hide the address the proxy added.

use crate::config::is_token;
use crate::host::Host;
use std::net::{IpAddr, SocketAddr};

/// Where the client address comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddressSource {
    /// The downstream connection's address as Envoy reports it.
    #[default]
    Peer,
    /// A comma-separated list header (`x-forwarded-for`, or a custom one), all its lines in
    /// order: the entry `trusted_hops` places from the right.
    Header {
        /// Lowercase header name.
        name: String,
        /// How many proxies in front of Envoy appended to the header (at least 1).
        trusted_hops: u32,
    },
}

impl AddressSource {
    /// Parses `peer`, `xff` or `header:<name>`; `trusted_hops` defaults to 1 and only applies
    /// to the header forms.
    pub fn parse(source: &str, trusted_hops: Option<u32>) -> Result<Self, String> {
        let hops = trusted_hops.unwrap_or(1);
        let header = |name: &str| -> Result<Self, String> {
            if hops == 0 {
                return Err("trustedHops must be at least 1: 0 would trust the address the client wrote itself".into());
            }
            Ok(AddressSource::Header {
                name: name.to_ascii_lowercase(),
                trusted_hops: hops,
            })
        };
        match source {
            "peer" => {
                if trusted_hops.is_some() {
                    return Err(
                        "trustedHops only applies to `xff` or `header:<name>` sources".into(),
                    );
                }
                Ok(AddressSource::Peer)
            }
            "xff" => header("x-forwarded-for"),
            _ => match source.strip_prefix("header:") {
                Some(name) if is_token(name) => header(name),
                _ => Err(format!(
                    "unknown address source {source:?}: expected `peer`, `xff` or `header:<name>`"
                )),
            },
        }
    }

    /// Compiles a policy's `ipSource` / `trustedHops` keys, the error naming whichever is wrong.
    pub fn from_config(
        ip_source: &str,
        trusted_hops: Option<u32>,
    ) -> Result<Self, crate::ConfigError> {
        AddressSource::parse(ip_source, trusted_hops).map_err(|msg| {
            let field = if msg.starts_with("trustedHops") {
                "trustedHops"
            } else {
                "ipSource"
            };
            crate::ConfigError::at(field, msg)
        })
    }

    /// The client address of the current request, if the source yields a parseable one. With
    /// a header source, every line of the header counts (one host call reading the header
    /// map: the single-value read returns only the first line); `None` when the lines hold
    /// fewer than `trusted_hops` entries or the entry is not an address, which every caller
    /// treats as "no address" (an allowlist denies, a quota key falls in the missing-key bucket).
    pub fn resolve(&self, host: &impl Host) -> Option<IpAddr> {
        match self {
            AddressSource::Peer => {
                let raw = host.property(&["source", "address"])?;
                parse_address(std::str::from_utf8(&raw).ok()?)
            }
            AddressSource::Header { name, trusted_hops } => {
                let lines = host.request_header_values(name);
                parse_address(nth_from_right_of_lines(&lines, *trusted_hops)?)
            }
        }
    }
}

/// The entry `n` places from the right (1 = rightmost) of a list sent as several header lines,
/// read as the lines joined with commas in order (without joining them), or `None` when the
/// lines hold fewer entries.
pub fn nth_from_right_of_lines<S: AsRef<str>>(lines: &[S], n: u32) -> Option<&str> {
    let n = usize::try_from(n).ok()?.checked_sub(1)?;
    lines
        .iter()
        .rev()
        .flat_map(|line| line.as_ref().rsplit(','))
        .nth(n)
        .map(str::trim)
}

/// The entry `n` places from the right (1 = rightmost) of a comma-separated list, or `None` when
/// the list is shorter than that: a request that did not pass through all trusted hops.
pub fn nth_from_right(list: &str, n: u32) -> Option<&str> {
    let n = usize::try_from(n).ok()?.checked_sub(1)?;
    list.rsplit(',').nth(n).map(str::trim)
}

/// Reads an address as Envoy or a proxy writes it: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`,
/// `[::1]`; IPv4-mapped IPv6 comes back as IPv4.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else if let Ok(sock) = text.parse::<SocketAddr>() {
        sock.ip()
    } else {
        text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?
    };
    Some(normalize(ip))
}

/// Reads IPv4-mapped IPv6 addresses as the IPv4 address they carry.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn parses_every_written_form() {
        assert_eq!(parse_address("1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(
            parse_address(" 1.2.3.4:8080 "),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_address("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(
            parse_address("[2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_address("2001:db8::1"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_address("::ffff:10.0.0.1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_address("[::ffff:10.0.0.1]:1"),
            Some("10.0.0.1".parse().unwrap())
        );
        for bad in [
            "",
            "unknown",
            "1.2.3",
            "300.1.1.1",
            "[::1",
            "1.2.3.4:x",
            "::1]",
        ] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_hops_from_the_right() {
        let xff = "6.6.6.6, 1.1.1.1 ,2.2.2.2";
        assert_eq!(nth_from_right(xff, 1), Some("2.2.2.2"));
        assert_eq!(nth_from_right(xff, 2), Some("1.1.1.1"));
        assert_eq!(nth_from_right(xff, 3), Some("6.6.6.6"));
        assert_eq!(nth_from_right(xff, 4), None);
        assert_eq!(nth_from_right(xff, 0), None);
    }

    #[test]
    fn counts_hops_across_header_lines_as_one_list() {
        let lines = ["6.6.6.6, 1.1.1.1", "2.2.2.2", "3.3.3.3 ,4.4.4.4"];
        let joined = lines.join(",");
        for n in 0..=6 {
            assert_eq!(
                nth_from_right_of_lines(&lines, n),
                nth_from_right(&joined, n),
                "{n}"
            );
        }
        assert_eq!(nth_from_right_of_lines(&lines, 3), Some("2.2.2.2"));
        assert_eq!(nth_from_right_of_lines(&lines, 5), Some("6.6.6.6"));
        assert_eq!(nth_from_right_of_lines(&[] as &[&str], 1), None);
        // An empty line is an empty entry, which is no address.
        assert_eq!(nth_from_right_of_lines(&["", "2.2.2.2"], 2), Some(""));
    }

    #[test]
    fn a_proxy_line_after_the_client_line_is_the_client_address() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.set_peer("127.0.0.1:5555");
        // The client wrote one line; the trusted proxy added its own after it.
        req.add_header("x-real-ip", "10.0.0.1");
        req.add_header("x-real-ip", "203.0.113.7");
        let real_ip = AddressSource::parse("header:x-real-ip", None).unwrap();
        assert_eq!(real_ip.resolve(&req), Some("203.0.113.7".parse().unwrap()));
        let two_hops = AddressSource::parse("header:x-real-ip", Some(2)).unwrap();
        assert_eq!(two_hops.resolve(&req), Some("10.0.0.1".parse().unwrap()));
        let three_hops = AddressSource::parse("header:x-real-ip", Some(3)).unwrap();
        assert_eq!(three_hops.resolve(&req), None);
    }

    #[test]
    fn forwarded_for_split_over_lines_counts_trusted_hops_across_them() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.set_peer("127.0.0.1:5555");
        // Client-written entries, then two trusted proxies: the first appended the client's
        // address to the client's line, the second added a line with the first proxy's.
        req.add_header("x-forwarded-for", "10.9.9.9, 198.51.100.4");
        req.add_header("x-forwarded-for", "192.0.2.10");
        let two_hops = AddressSource::parse("xff", Some(2)).unwrap();
        assert_eq!(
            two_hops.resolve(&req),
            Some("198.51.100.4".parse().unwrap())
        );
        let one_hop = AddressSource::parse("xff", Some(1)).unwrap();
        assert_eq!(one_hop.resolve(&req), Some("192.0.2.10".parse().unwrap()));
        // A junk line where the trusted entry should be is no address, not the next one.
        let mut junk = envoy.request(0);
        junk.add_header("x-forwarded-for", "198.51.100.4");
        junk.add_header("x-forwarded-for", "unknown");
        assert_eq!(one_hop.resolve(&junk), None);
    }

    #[test]
    fn parses_sources() {
        assert_eq!(AddressSource::parse("peer", None), Ok(AddressSource::Peer));
        assert_eq!(
            AddressSource::parse("xff", Some(2)),
            Ok(AddressSource::Header {
                name: "x-forwarded-for".into(),
                trusted_hops: 2
            })
        );
        assert_eq!(
            AddressSource::parse("header:X-Real-IP", None),
            Ok(AddressSource::Header {
                name: "x-real-ip".into(),
                trusted_hops: 1
            })
        );
        assert!(AddressSource::parse("xff", Some(0)).is_err());
        assert!(AddressSource::parse("peer", Some(1)).is_err());
        assert!(AddressSource::parse("header:", None).is_err());
        assert!(AddressSource::parse("header:a b", None).is_err());
        assert!(AddressSource::parse("remote", None).is_err());
        assert_eq!(
            AddressSource::from_config("xff", Some(0)).unwrap_err().path,
            "trustedHops"
        );
        assert_eq!(
            AddressSource::from_config("peer", Some(2))
                .unwrap_err()
                .path,
            "trustedHops"
        );
        assert_eq!(
            AddressSource::from_config("body", None).unwrap_err().path,
            "ipSource"
        );
    }

    #[test]
    fn resolves_peer_and_header_and_ignores_the_spoofed_left() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.set_peer("[::ffff:192.168.1.9]:5555");
        req.add_header("x-forwarded-for", "10.9.9.9, 203.0.113.7");
        assert_eq!(
            AddressSource::Peer.resolve(&req),
            Some("192.168.1.9".parse().unwrap())
        );
        let one_hop = AddressSource::parse("xff", Some(1)).unwrap();
        assert_eq!(one_hop.resolve(&req), Some("203.0.113.7".parse().unwrap()));
        let three_hops = AddressSource::parse("xff", Some(3)).unwrap();
        assert_eq!(three_hops.resolve(&req), None);
        let missing = AddressSource::parse("header:x-real-ip", None).unwrap();
        assert_eq!(missing.resolve(&req), None);
    }
}
