//! A set of IP ranges prepared for fast lookup.
//!
//! Entries (single addresses, CIDRs, Flex-style octet prefixes) become inclusive numeric ranges,
//! sorted and merged at configure time; a lookup is one binary search, whatever the list size.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// Sorted, non-overlapping, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Whether `ip` is in one of the ranges. IPv4-mapped IPv6 addresses match IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match palisade_kit::address::normalize(ip) {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }

    /// Number of merged ranges (for tests and diagnostics).
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x is the only one that can hold it.
    let after = ranges.partition_point(|&(start, _)| start <= x);
    after > 0 && ranges[after - 1].1 >= x
}

/// Collects entries, then [`IpSetBuilder::build`]s the set.
#[derive(Debug, Default)]
pub struct IpSetBuilder {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSetBuilder {
    /// Adds one entry: `203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`, `::1`, or an octet prefix
    /// such as `192.168` (= `192.168.0.0/16`). A CIDR with host bits set (`192.168.3.1/30`)
    /// means its network. An IPv4-mapped entry (`::ffff:127.0.0.1`, `::ffff:127.0.0.0/104`)
    /// is the IPv4 range it carries, since client addresses are read the same way. The error
    /// message quotes the entry.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let text = entry.trim();
        let net = if let Ok(net) = text.parse::<IpNet>() {
            unmap(net)
                .map_err(|why| format!("{entry:?}: {why}"))?
                .trunc()
        } else if let Ok(ip) = text.parse::<IpAddr>() {
            IpNet::from(palisade_kit::address::normalize(ip))
        } else if let Some(net) = octet_prefix(text) {
            net
        } else {
            return Err(format!(
                "{entry:?} is not an IP address, a CIDR or an octet prefix such as \"192.168\""
            ));
        };
        match net {
            IpNet::V4(n) => self
                .v4
                .push((u32::from(n.network()), u32::from(n.broadcast()))),
            IpNet::V6(n) => self
                .v6
                .push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
        Ok(())
    }

    /// Sorts and merges the ranges.
    pub fn build(self) -> IpSet {
        IpSet {
            v4: merge(self.v4),
            v6: merge(self.v6),
        }
    }
}

/// An IPv4-mapped CIDR (`::ffff:a.b.c.d/96+n`) as the IPv4 CIDR `a.b.c.d/n`; other CIDRs
/// unchanged. A mapped address with a prefix under 96 would also cover IPv6 addresses outside
/// the mapped block (`::ffff:0:0/96`), which no IPv4 client can be: refused as ambiguous. (A
/// plain IPv6 range such as `::/0` stays IPv6-only: IPv4 clients match IPv4 entries.)
fn unmap(net: IpNet) -> Result<IpNet, String> {
    let IpNet::V6(v6) = net else {
        return Ok(net);
    };
    let Some(v4) = v6.addr().to_ipv4_mapped() else {
        return Ok(net);
    };
    match v6.prefix_len().checked_sub(96) {
        Some(prefix) => IpNet::new(IpAddr::V4(v4), prefix).map_err(|e| e.to_string()),
        None => Err(format!(
            "an IPv4-mapped address needs a prefix of at least /96 (/96 is all of IPv4, \
             /{} would also cover addresses that are not IPv4-mapped): write an IPv4 range \
             (\"0.0.0.0/0\" is every IPv4 address)",
            v6.prefix_len()
        )),
    }
}

/// `10` / `192.168` / `10.1.2`: one to three decimal octets, meaning a /8, /16 or /24.
fn octet_prefix(text: &str) -> Option<IpNet> {
    let mut octets = [0u8; 4];
    let mut count = 0;
    for part in text.split('.') {
        if count == 3
            || part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        octets[count] = part.parse().ok()?;
        count += 1;
    }
    let prefix = u8::try_from(count * 8).ok()?;
    IpNet::new(IpAddr::V4(Ipv4Addr::from(octets)), prefix).ok()
}

fn merge<T: Ord + Copy + Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| start <= next) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out
}

trait Successor: Sized {
    fn successor(self) -> Option<Self>;
}

impl Successor for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Successor for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> IpSet {
        let mut b = IpSetBuilder::default();
        for e in entries {
            b.add(e).unwrap();
        }
        b.build()
    }

    fn has(s: &IpSet, ip: &str) -> bool {
        s.contains(ip.parse().unwrap())
    }

    #[test]
    fn matches_every_entry_form() {
        let s = set(&[
            "10.0.0.0/8",
            "192.168",
            "172.16.5",
            "2001:db8::/32",
            "203.0.113.7",
            "::1",
            "192.168.3.1/30",
        ]);
        assert!(has(&s, "10.255.255.255"));
        assert!(has(&s, "192.168.200.1"));
        assert!(has(&s, "172.16.5.99"));
        assert!(!has(&s, "172.16.6.1"));
        assert!(has(&s, "2001:db8:ffff::1"));
        assert!(!has(&s, "2001:db9::1"));
        assert!(has(&s, "203.0.113.7"));
        assert!(!has(&s, "203.0.113.8"));
        assert!(has(&s, "::1"));
        assert!(has(&s, "::ffff:10.1.1.1"));
        assert!(!has(&s, "11.0.0.0"));
        assert!(!has(&s, "9.255.255.255"));
    }

    #[test]
    fn ipv4_mapped_entries_are_their_ipv4_ranges() {
        let s = set(&[
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.0/104",
            "::FFFF:7f00:2/127",
        ]);
        assert_eq!(
            s,
            set(&["127.0.0.1", "10.0.0.0/8", "127.0.0.2/31"]),
            "mapped entries land in the IPv4 ranges"
        );
        assert!(has(&s, "127.0.0.1"));
        assert!(has(&s, "::ffff:127.0.0.1"));
        assert!(has(&s, "10.200.0.1"));
        assert!(has(&s, "127.0.0.3"));
        assert!(!has(&s, "127.0.0.4"));
        assert!(!has(&s, "11.0.0.1"));
        // Host bits below the mapped prefix are ignored like any CIDR's.
        assert_eq!(set(&["::ffff:10.1.2.3/104"]), set(&["10.0.0.0/8"]));
        // /96 is every IPv4 address.
        assert!(has(&set(&["::ffff:0.0.0.0/96"]), "203.0.113.9"));
        // Plain IPv6 ranges stay IPv6, even those that contain the mapped block.
        assert!(!has(&set(&["::/0"]), "10.0.0.1"));
        assert!(has(&set(&["::/0"]), "2001:db8::1"));
    }

    #[test]
    fn mapped_prefixes_under_96_are_refused() {
        let mut b = IpSetBuilder::default();
        for bad in ["::ffff:127.0.0.0/95", "::ffff:0:0/80", "::ffff:10.0.0.1/0"] {
            let msg = b.add(bad).unwrap_err();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("at least /96"), "{msg}");
        }
    }

    #[test]
    fn octet_prefixes() {
        assert_eq!(octet_prefix("192.168"), "192.168.0.0/16".parse().ok());
        assert_eq!(octet_prefix("10"), "10.0.0.0/8".parse().ok());
        assert_eq!(octet_prefix("10.1.2"), "10.1.2.0/24".parse().ok());
        for bad in [
            "",
            "192.",
            ".1",
            "256",
            "1.2.3.4.5",
            "1.2.3.4",
            "01x",
            "1..2",
            "+1",
        ] {
            assert_eq!(octet_prefix(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejects_invalid_entries_quoting_them() {
        let mut b = IpSetBuilder::default();
        for bad in [
            "10.0.0.256",
            "10.0.0.0/33",
            "2001:db8::/129",
            "example.com",
            "",
            "1.2.3.4/",
        ] {
            let msg = b.add(bad).unwrap_err();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let s = set(&[
            "10.0.0.0/25",
            "10.0.0.128/25",
            "10.0.0.5",
            "10.0.1.0/24",
            "0.0.0.0/0",
            "255.255.255.255",
        ]);
        assert_eq!(s.v4, vec![(0, u32::MAX)]);
        let s = set(&["::/0", "::1"]);
        assert_eq!(s.v6, vec![(0, u128::MAX)]);
    }

    #[test]
    fn large_lists_agree_with_a_linear_scan() {
        // 5,000 pseudo-random /24../32 ranges; compare binary search with the naive answer.
        let mut seed: u32 = 12345;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut entries = Vec::new();
        for _ in 0..5_000 {
            let prefix = 24 + next() % 9;
            entries.push(format!("{}/{}", Ipv4Addr::from(next()), prefix));
        }
        let nets: Vec<IpNet> = entries
            .iter()
            .map(|e| e.parse::<IpNet>().unwrap().trunc())
            .collect();
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        let s = set(&refs);
        for i in 0..4_000 {
            // Probe both random addresses and addresses inside listed ranges.
            let ip = if i % 2 == 0 {
                Ipv4Addr::from(next())
            } else {
                match nets[i % nets.len()] {
                    IpNet::V4(n) => Ipv4Addr::from(u32::from(n.network()) + next() % 256),
                    IpNet::V6(_) => unreachable!(),
                }
            };
            let naive = nets.iter().any(|n| n.contains(&IpAddr::V4(ip)));
            assert_eq!(s.contains(IpAddr::V4(ip)), naive, "{ip}");
        }
    }
}
