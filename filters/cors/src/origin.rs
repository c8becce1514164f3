//! Origins: parsing the configured ones, and matching a request's `Origin` header against them.
//!
//! An origin is `scheme://host[:port]` (RFC 6454). Both sides are brought to one canonical form
//! (scheme and host lowercase, the scheme's default port dropped), so matching is exact on
//! scheme, host and port. A configured `scheme://*.suffix[:port]` matches hosts strictly below
//! `suffix` with the same scheme and port. `null` (sandboxed documents, `file:` pages, some
//! redirects) is only ever matched by a configured `null`, never by a wildcard.
//!
//! Written by hand: URL crates parse whole URLs (paths, IDNA, percent-encoding) and would accept
//! configured values that are not origins; this needs the narrow origin grammar, strictly.

use std::borrow::Cow;
use std::collections::HashMap;

/// A configured origin pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Any origin except `null` (`*`).
    Any,
    /// Exactly this canonical origin (`https://shop.example.com`, `http://127.0.0.1:8080`, `null`).
    Exact(String),
    /// Hosts strictly below `suffix` (which starts with a dot), with this scheme and port.
    Subdomains {
        /// Lowercase scheme.
        scheme: String,
        /// `.example.com`.
        suffix: String,
        /// Explicit non-default port, if any.
        port: Option<u16>,
    },
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A host name (dot-separated labels; IPv4 addresses are names of this shape) or a bracketed
/// IPv6 address.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty() && host.len() <= 253 && host.split('.').all(is_label)
}

/// Splits `host[:port]` (the host may be a bracketed IPv6 address).
fn split_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or("unclosed `[` in IPv6 host")?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => rest
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or("unexpected characters after the IPv6 host"),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// The parts of an origin, canonicalised: lowercase scheme and host, default port dropped.
struct Parts {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Parts {
    fn parse(text: &str, allow_wildcard: bool) -> Result<Parts, String> {
        let (scheme, authority) = text
            .split_once("://")
            .ok_or("expected `scheme://host[:port]`, `*` or `null`")?;
        let scheme = scheme.to_ascii_lowercase();
        if !is_scheme(&scheme) {
            return Err(format!("`{scheme}` is not a URL scheme"));
        }
        if authority.ends_with('/') {
            return Err("an origin has no path: remove the trailing `/`".into());
        }
        if let Some(c) = authority
            .chars()
            .find(|c| matches!(c, '/' | '?' | '#' | '@' | ' ' | ','))
        {
            return Err(format!(
                "an origin is only `scheme://host[:port]`; unexpected `{c}`"
            ));
        }
        let (host, port) = split_port(authority)?;
        let port = match port {
            None => None,
            Some(p) => {
                let n = p
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0 && p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))?;
                (Some(n) != default_port(&scheme)).then_some(n)
            }
        };
        let host = host.to_ascii_lowercase();
        let bare = match host.strip_prefix("*.") {
            Some(rest) if allow_wildcard => rest,
            _ => &host,
        };
        if !is_host(bare) {
            return Err(if host.contains('*') {
                "`*` may only stand for subdomains, as the first label: `https://*.example.com`"
                    .into()
            } else {
                format!("`{host}` is not a host name or address")
            });
        }
        Ok(Parts { scheme, host, port })
    }

    fn canonical(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

impl Pattern {
    /// Parses one configured origin.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        match text {
            "*" => return Ok(Pattern::Any),
            "null" => return Ok(Pattern::Exact("null".into())),
            _ => {}
        }
        let parts = Parts::parse(text, true)?;
        match parts.host.strip_prefix('*') {
            Some(suffix) => {
                if suffix.matches('.').count() < 2 {
                    return Err(format!(
                        "`*{suffix}` would match every host under a top-level domain; name the domain (`https://*.example.com`)"
                    ));
                }
                Ok(Pattern::Subdomains {
                    scheme: parts.scheme,
                    suffix: suffix.to_owned(),
                    port: parts.port,
                })
            }
            None => Ok(Pattern::Exact(parts.canonical())),
        }
    }
}

/// A request's `Origin` in canonical form: borrowed when the browser already sent it that way
/// (the usual case: no allocation), owned when it had to be rewritten. `None` for anything
/// that is not a single serialised origin.
pub fn canonical(origin: &str) -> Option<Cow<'_, str>> {
    if origin == "null" || is_canonical(origin) {
        return Some(Cow::Borrowed(origin));
    }
    let parts = Parts::parse(origin, false).ok()?;
    let canon = parts.canonical();
    Some(if canon == origin {
        Cow::Borrowed(origin)
    } else {
        Cow::Owned(canon)
    })
}

/// Whether `origin` is already a valid origin in canonical form, checked without allocating
/// (the per-request fast path; anything else goes through [`Parts::parse`]).
fn is_canonical(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let lower = |s: &str| !s.bytes().any(|b| b.is_ascii_uppercase());
    if !is_scheme(scheme) || !lower(scheme) || !lower(authority) {
        return false;
    }
    let Ok((host, port)) = split_port(authority) else {
        return false;
    };
    if !is_host(host) {
        return false;
    }
    match port {
        None => true,
        Some(p) => {
            !p.starts_with('0')
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>()
                    .is_ok_and(|n| Some(n) != default_port(scheme))
        }
    }
}

/// Compiled origin patterns, each pointing at the group that listed it.
#[derive(Debug, Default)]
pub struct OriginSet {
    exact: HashMap<String, usize>,
    /// Subdomain patterns, longest suffix first (the most specific wins).
    subdomains: Vec<(String, String, Option<u16>, usize)>,
    any: Option<usize>,
}

impl OriginSet {
    /// Adds a pattern for `group`. The first group to list an exact origin, or `*`, keeps it.
    pub fn add(&mut self, pattern: Pattern, group: usize) {
        match pattern {
            Pattern::Any => {
                self.any.get_or_insert(group);
            }
            Pattern::Exact(origin) => {
                self.exact.entry(origin).or_insert(group);
            }
            Pattern::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                self.subdomains.push((scheme, suffix, port, group));
                // Stable: among equally long suffixes the earlier group stays first.
                self.subdomains
                    .sort_by_key(|(_, suffix, _, _)| std::cmp::Reverse(suffix.len()));
            }
        }
    }

    /// The group granting a canonical origin: an exact entry first, then the most specific
    /// subdomain pattern, then `*`. `null` matches only an exact `null` entry.
    pub fn find(&self, origin: &str) -> Option<usize> {
        if let Some(group) = self.exact.get(origin) {
            return Some(*group);
        }
        if origin == "null" {
            return None;
        }
        let (scheme, rest) = origin.split_once("://")?;
        let (host, port) = split_port(rest).ok()?;
        let port = port.and_then(|p| p.parse::<u16>().ok());
        self.subdomains
            .iter()
            .find(|(s, suffix, p, _)| {
                s == scheme
                    && *p == port
                    && host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
            })
            .map(|(_, _, _, group)| *group)
            .or(self.any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> OriginSet {
        let mut s = OriginSet::default();
        for (i, p) in patterns.iter().enumerate() {
            s.add(Pattern::parse(p).unwrap(), i);
        }
        s
    }

    fn find(s: &OriginSet, origin: &str) -> Option<usize> {
        canonical(origin).and_then(|c| s.find(&c))
    }

    #[test]
    fn exact_on_scheme_host_and_port() {
        let s = set(&["https://shop.example.com", "http://127.0.0.1:8080"]);
        assert_eq!(find(&s, "https://shop.example.com"), Some(0));
        assert_eq!(find(&s, "https://shop.example.com:443"), Some(0));
        assert_eq!(find(&s, "HTTPS://Shop.Example.COM"), Some(0));
        assert_eq!(find(&s, "http://shop.example.com"), None);
        assert_eq!(find(&s, "https://shop.example.com:8443"), None);
        assert_eq!(find(&s, "https://shop.example.com.evil.net"), None);
        assert_eq!(find(&s, "https://evilshop.example.com"), None);
        assert_eq!(find(&s, "http://127.0.0.1:8080"), Some(1));
        assert_eq!(find(&s, "http://127.0.0.1"), None);
        assert_eq!(find(&s, "http://localhost:8080"), None);
        assert_eq!(find(&s, "https://127.0.0.1:8080"), None);
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let s = set(&["https://*.example.com"]);
        assert_eq!(find(&s, "https://a.example.com"), Some(0));
        assert_eq!(find(&s, "https://a.b.example.com"), Some(0));
        assert_eq!(find(&s, "https://example.com"), None);
        assert_eq!(find(&s, "https://evil-example.com"), None);
        assert_eq!(find(&s, "https://evilexample.com"), None);
        assert_eq!(find(&s, "https://example.com.evil.net"), None);
        assert_eq!(find(&s, "https://a.example.com.evil.net"), None);
        assert_eq!(find(&s, "http://a.example.com"), None);
        assert_eq!(find(&s, "https://a.example.com:8443"), None);
        assert_eq!(find(&s, "null"), None);

        let p = set(&["http://*.example.com:3000"]);
        assert_eq!(find(&p, "http://app.example.com:3000"), Some(0));
        assert_eq!(find(&p, "http://app.example.com"), None);
    }

    #[test]
    fn null_is_never_a_wildcard_match() {
        let s = set(&["*", "https://*.example.com"]);
        assert_eq!(find(&s, "null"), None);
        assert_eq!(find(&s, "https://anything.test"), Some(0));
        let n = set(&["null"]);
        assert_eq!(find(&n, "null"), Some(0));
        assert_eq!(find(&n, "https://x.test"), None);
    }

    #[test]
    fn exact_beats_subdomain_beats_any_and_longer_suffix_wins() {
        let s = set(&[
            "*",
            "https://*.example.com",
            "https://*.api.example.com",
            "https://vip.api.example.com",
        ]);
        assert_eq!(find(&s, "https://vip.api.example.com"), Some(3));
        assert_eq!(find(&s, "https://x.api.example.com"), Some(2));
        assert_eq!(find(&s, "https://x.example.com"), Some(1));
        assert_eq!(find(&s, "https://other.test"), Some(0));
    }

    #[test]
    fn ipv6_and_custom_schemes() {
        let s = set(&["http://[::1]:5173", "capacitor://localhost"]);
        assert_eq!(find(&s, "http://[::1]:5173"), Some(0));
        assert_eq!(find(&s, "http://[0:0::1]:5173"), None);
        assert_eq!(find(&s, "capacitor://localhost"), Some(1));
    }

    #[test]
    fn garbage_origins_match_nothing() {
        let s = set(&["*"]);
        for bad in [
            "",
            "https://",
            "https://a.test/",
            "https://a.test/path",
            "https://a.test https://b.test",
            "https://a.test, https://b.test",
            "https://user@a.test",
            "a.test",
            "https://a.test:0",
            "https://a.test:99999",
            "https://a.test:+80",
            "https://*.a.test",
            "https://a..test",
            "https://[::1",
        ] {
            assert_eq!(find(&s, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn canonical_borrows_canonical_origins() {
        assert!(matches!(
            canonical("https://a.example.com"),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(
            canonical("https://A.example.com:443").as_deref(),
            Some("https://a.example.com")
        );
        assert_eq!(
            canonical("http://a.test:80").as_deref(),
            Some("http://a.test")
        );
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_parse() {
        for origin in [
            "https://a.example.com",
            "https://a.example.com:443",
            "https://a.example.com:0443",
            "https://a.example.com:8443",
            "http://a.test:80",
            "http://127.0.0.1:8080",
            "http://[::1]:5173",
            "http://[::1]:80",
            "https://A.example.com",
            "Https://a.example.com",
            "https://a.example.com:",
            "https://a.example.com:0",
            "https://a.example.com:65536",
            "https://a.example.com/",
            "https://a b.test",
            "https://user@a.test",
            "capacitor://localhost",
            "https://*.example.com",
            "https://",
            "null",
        ] {
            let full = Parts::parse(origin, false).ok().map(|p| p.canonical());
            let fast = is_canonical(origin);
            if fast {
                assert_eq!(full.as_deref(), Some(origin), "{origin}");
            } else {
                assert_ne!(full.as_deref(), Some(origin), "{origin}");
            }
            assert_eq!(
                canonical(origin).map(Cow::into_owned),
                full.or((origin == "null").then(|| origin.to_owned())),
                "{origin}"
            );
        }
    }

    #[test]
    fn configured_origins_are_validated() {
        for (bad, hint) in [
            ("shop.example.com", "scheme://host"),
            ("https://shop.example.com/", "trailing `/`"),
            ("https://shop.example.com/app", "unexpected `/`"),
            ("https://*.com", "top-level domain"),
            ("https://a.*.example.com", "first label"),
            ("https://*example.com", "first label"),
            ("https://shop.example.com:70000", "port"),
            ("https://exa mple.com", "unexpected ` `"),
            ("1http://x.test", "scheme"),
            ("https://[::zz]", "host"),
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(err.contains(hint), "{bad}: {err}");
        }
        assert_eq!(
            Pattern::parse("HTTPS://Shop.Example.com:443").unwrap(),
            Pattern::Exact("https://shop.example.com".into())
        );
    }
}
