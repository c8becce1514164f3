//! Value selectors: the one small syntax every policy uses to say where a value comes from.
//!
//! | selector | value |
//! |---|---|
//! | `header:<name>` | the request header (first value) |
//! | `query:<name>` | the query parameter, percent-decoded |
//! | `cookie:<name>` | the cookie |
//! | `basic:username`, `basic:password` | a part of the `Authorization: Basic` credentials |
//! | `ip` | the client address (see [`crate::address`]) |
//! | `method`, `path` | the request method; the path without the query |
//! | `client-id` | the client authenticated by an earlier policy |
//! | `claim:<name>` | a claim of a token validated by an earlier policy |
//!
//! Selectors are parsed at configure time and evaluated per request. [`Selector::evaluate`]
//! reads one value (the first of several); a policy reading a credential uses
//! [`Selector::read_credential`] (or a [`CredentialReader`] for several), which tells a request
//! carrying it more than once apart.

use crate::address::AddressSource;
use crate::config::is_token;
use crate::credentials::{parse_basic, Credential, CredentialReader};
use crate::host::{HeaderMap, Host};
use crate::identity::Identity;
use std::fmt;
use std::str::FromStr;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `header:<name>` (stored lowercase).
    Header(String),
    /// `query:<name>`.
    Query(String),
    /// `cookie:<name>`.
    Cookie(String),
    /// `basic:username`.
    BasicUsername,
    /// `basic:password`.
    BasicPassword,
    /// `ip`.
    Ip,
    /// `method`.
    Method,
    /// `path`.
    Path,
    /// `client-id`.
    ClientId,
    /// `claim:<name>`.
    Claim(String),
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let named = |prefix: &str| -> Option<&str> { s.strip_prefix(prefix) };
        let sel = match s {
            "basic:username" => Selector::BasicUsername,
            "basic:password" => Selector::BasicPassword,
            "ip" => Selector::Ip,
            "method" => Selector::Method,
            "path" => Selector::Path,
            "client-id" => Selector::ClientId,
            _ => {
                if let Some(name) = named("header:") {
                    if !is_token(name) {
                        return Err(format!("{s:?}: not a valid header name"));
                    }
                    Selector::Header(name.to_ascii_lowercase())
                } else if let Some(name) = named("query:").filter(|n| !n.is_empty()) {
                    Selector::Query(name.to_owned())
                } else if let Some(name) = named("cookie:").filter(|n| is_token(n)) {
                    Selector::Cookie(name.to_owned())
                } else if let Some(name) = named("claim:").filter(|n| !n.is_empty()) {
                    Selector::Claim(name.to_owned())
                } else {
                    return Err(format!(
                        "unknown selector {s:?}: expected header:<name>, query:<name>, \
                         cookie:<name>, basic:username, basic:password, ip, method, path, \
                         client-id or claim:<name>"
                    ));
                }
            }
        };
        Ok(sel)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Header(n) => write!(f, "header:{n}"),
            Selector::Query(n) => write!(f, "query:{n}"),
            Selector::Cookie(n) => write!(f, "cookie:{n}"),
            Selector::BasicUsername => f.write_str("basic:username"),
            Selector::BasicPassword => f.write_str("basic:password"),
            Selector::Ip => f.write_str("ip"),
            Selector::Method => f.write_str("method"),
            Selector::Path => f.write_str("path"),
            Selector::ClientId => f.write_str("client-id"),
            Selector::Claim(n) => write!(f, "claim:{n}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Selector {
    /// The selected value of the current request, or `None` when the request does not carry it.
    /// `address` says how `ip` is resolved.
    pub fn evaluate(&self, host: &impl Host, address: &AddressSource) -> Option<String> {
        match self {
            Selector::Header(name) => host.request_header(name),
            Selector::Query(name) => query_param(&host.request_header(":path")?, name),
            Selector::Cookie(name) => cookie(&host.request_header("cookie")?, name),
            Selector::BasicUsername => Some(
                parse_basic(&host.request_header("authorization")?)
                    .ok()?
                    .username,
            ),
            Selector::BasicPassword => Some(
                parse_basic(&host.request_header("authorization")?)
                    .ok()?
                    .password,
            ),
            Selector::Ip => address.resolve(host).map(|ip| ip.to_string()),
            Selector::Method => host.request_header(":method"),
            Selector::Path => {
                let path = host.request_header(":path")?;
                Some(match path.split_once('?') {
                    Some((p, _)) => p.to_owned(),
                    None => path,
                })
            }
            Selector::ClientId => Identity::current(host)?.client_id,
            Selector::Claim(name) => Identity::current(host)?.claim(name),
        }
    }

    /// The selected credential of the current request: [`Credential::Ambiguous`] when the
    /// request carries it more than once, so the upstream might read another value than the
    /// one checked. One host call; to read several credentials of a request, share a
    /// [`CredentialReader`].
    pub fn read_credential(&self, host: &impl Host) -> Credential {
        CredentialReader::new(host).read(self)
    }
}

impl Selector {
    /// Removes the selected value from the request before it goes upstream (to hide a
    /// credential), every copy of it: the header (every line), the whole `Authorization`
    /// header for `basic:*`, the query parameter (every occurrence), or the cookie (in every
    /// `Cookie` line). Selectors of derived values (`ip`, `client-id`, ...) have nothing to
    /// remove.
    pub fn remove_from(&self, host: &mut impl Host) {
        match self {
            Selector::Header(name) => host.remove_request_header(name),
            Selector::BasicUsername | Selector::BasicPassword => {
                host.remove_request_header("authorization")
            }
            Selector::Query(name) => {
                if let Some(path) = host.request_header(":path") {
                    if let Some(stripped) = without_query_param(&path, name) {
                        host.set_request_header(":path", &stripped);
                    }
                }
            }
            Selector::Cookie(name) => {
                // Every `Cookie` line (HTTP/1.1 clients may send several): a copy left in
                // another line would still reach the upstream.
                let lines: Vec<String> = host
                    .headers(HeaderMap::Request)
                    .into_iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
                    .map(|(_, v)| v)
                    .collect();
                let pairs = lines.iter().flat_map(|line| line.split(';')).map(str::trim);
                let is_named = |pair: &str| pair.split('=').next().map(str::trim) == Some(name);
                if !pairs.clone().any(is_named) {
                    return;
                }
                let kept: Vec<&str> = pairs
                    .filter(|pair| !pair.is_empty() && !is_named(pair))
                    .collect();
                if kept.is_empty() {
                    host.remove_request_header("cookie");
                } else {
                    // One line, as RFC 6265 has user agents send it.
                    host.set_request_header("cookie", &kept.join("; "));
                }
            }
            _ => {}
        }
    }
}

/// `path` without any `name=...` query parameter, or `None` if it had none.
pub fn without_query_param(path: &str, name: &str) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let matches = percent_decode(key).as_deref() == Some(name);
            removed |= matches;
            !matches
        })
        .collect();
    if !removed {
        return None;
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// The first value of query parameter `name` in a request path, percent-decoded (`+` is a space).
pub fn query_param(path: &str, name: &str) -> Option<String> {
    query_params(path, name).flatten().next()
}

/// Every occurrence of query parameter `name` (its key percent-decoded) in a request path, in
/// order: the value percent-decoded, or `None` when it has a malformed escape.
pub fn query_params<'a>(
    path: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Option<String>> + Clone + 'a {
    let query = path
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default());
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v))
        })
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie(header: &str, name: &str) -> Option<String> {
    cookies(header, name).next().map(str::to_owned)
}

/// Every value of cookie `name` in a `Cookie` header, in order (quotes removed).
pub fn cookies<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + Clone + 'a {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Decodes `%XX` escapes and `+`; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn parses_and_prints_every_form() {
        for s in [
            "header:client_id",
            "query:key",
            "cookie:session",
            "basic:username",
            "basic:password",
            "ip",
            "method",
            "path",
            "client-id",
            "claim:sub",
        ] {
            let sel: Selector = s.parse().unwrap();
            assert_eq!(sel.to_string(), s);
        }
        assert_eq!("header:X-Key".parse(), Ok(Selector::Header("x-key".into())));
        for bad in [
            "",
            "header:",
            "header:a b",
            "query:",
            "basic:other",
            "ips",
            "claim:",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_query_parameters() {
        let p = "/a?x=1&key=a%20b+c&key=second&empty&bad=%zz";
        assert_eq!(query_param(p, "key").as_deref(), Some("a b c"));
        assert_eq!(query_param(p, "x").as_deref(), Some("1"));
        assert_eq!(query_param(p, "empty").as_deref(), Some(""));
        assert_eq!(query_param(p, "bad"), None);
        assert_eq!(query_param(p, "missing"), None);
        assert_eq!(query_param("/no-query", "x"), None);
        assert_eq!(
            query_param("/a?%E2%82%AC=euro", "€").as_deref(),
            Some("euro")
        );
        assert_eq!(query_param("/a?k=%", "k"), None);
    }

    #[test]
    fn removes_credentials() {
        assert_eq!(
            without_query_param("/a?k=1&x=2&k=3", "k").as_deref(),
            Some("/a?x=2")
        );
        assert_eq!(without_query_param("/a?k=1", "k").as_deref(), Some("/a"));
        assert_eq!(without_query_param("/a?x=1", "k"), None);
        assert_eq!(
            without_query_param("/a?c%5Fid=1&y", "c_id").as_deref(),
            Some("/a?y")
        );

        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.add_header(":path", "/p?client_secret=s&a=b");
        req.add_header("cookie", "sid=1; secret=2");
        req.add_header("x-secret", "3");
        req.add_header("authorization", "Basic eDp5");
        // Second lines: every copy goes.
        req.add_header("cookie", "secret=4;other=5");
        req.add_header("x-secret", "6");
        for s in [
            "query:client_secret",
            "cookie:secret",
            "header:x-secret",
            "basic:password",
        ] {
            s.parse::<Selector>().unwrap().remove_from(&mut req);
        }
        let headers: Vec<(String, String)> = req.headers().to_vec();
        assert_eq!(
            headers,
            vec![
                (":path".into(), "/p?a=b".into()),
                ("cookie".into(), "sid=1; other=5".into())
            ]
        );

        // A cookie that is not there leaves the lines as they are.
        let mut req = envoy.request(0);
        req.add_header("cookie", "a=1").add_header("cookie", "b=2");
        "cookie:secret"
            .parse::<Selector>()
            .unwrap()
            .remove_from(&mut req);
        assert_eq!(req.headers().len(), 2);
        "cookie:a"
            .parse::<Selector>()
            .unwrap()
            .remove_from(&mut req);
        assert_eq!(req.headers(), [("cookie".to_owned(), "b=2".to_owned())]);
    }

    #[test]
    fn lists_every_occurrence() {
        let p = "/a?k=1&x=2&k%3D=3&k=%zz&%6B=4#k=5";
        let all: Vec<Option<String>> = query_params(p, "k").collect();
        assert_eq!(all, [Some("1".into()), None, Some("4".into())]);
        assert_eq!(query_params("/a", "k").count(), 0);
        assert_eq!(query_params("/a?", "k").count(), 0);
        let c: Vec<&str> = cookies("k=1; x=2;k=\"3\"", "k").collect();
        assert_eq!(c, ["1", "3"]);
    }

    #[test]
    fn reads_cookies() {
        let h = "a=1; session=\"abc\" ;other=x=y";
        assert_eq!(cookie(h, "session").as_deref(), Some("abc"));
        assert_eq!(cookie(h, "other").as_deref(), Some("x=y"));
        assert_eq!(cookie(h, "nope"), None);
    }

    #[test]
    fn evaluates_against_a_request() {
        use base64::Engine;
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.add_header(":method", "POST");
        req.add_header(":path", "/orders/1?client_id=abc");
        req.add_header("x-key", "k1");
        req.add_header("cookie", "sid=s1");
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:pw:x");
        req.add_header("authorization", &format!("Basic {basic}"));
        req.set_peer("10.1.2.3:4000");
        let addr = AddressSource::Peer;
        let eval = |s: &str| s.parse::<Selector>().unwrap().evaluate(&req, &addr);
        assert_eq!(eval("method").as_deref(), Some("POST"));
        assert_eq!(eval("path").as_deref(), Some("/orders/1"));
        assert_eq!(eval("query:client_id").as_deref(), Some("abc"));
        assert_eq!(eval("header:X-Key").as_deref(), Some("k1"));
        assert_eq!(eval("cookie:sid").as_deref(), Some("s1"));
        assert_eq!(eval("basic:username").as_deref(), Some("bob"));
        assert_eq!(eval("basic:password").as_deref(), Some("pw:x"));
        assert_eq!(eval("ip").as_deref(), Some("10.1.2.3"));
        assert_eq!(eval("client-id"), None);
        assert_eq!(eval("claim:sub"), None);
    }
}
