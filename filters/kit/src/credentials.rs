//! Credentials carried in requests: reading exactly one ([`CredentialReader`]), RFC 7617 Basic
//! credentials, bearer tokens.

use crate::address::AddressSource;
use crate::host::{HeaderMap, Host};
use crate::selector::{cookies, query_params, Selector};
use base64::Engine;
use std::cell::OnceCell;

/// A credential as the request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<T = String> {
    /// The request does not carry it (or it is malformed: an undecodable query value, an
    /// `Authorization` header that is not Basic for `basic:*`).
    Missing,
    /// Exactly one value.
    One(T),
    /// Several values: repeated header lines, query parameters or cookies, or several
    /// credentials joined in one `Authorization` value. A policy refuses the request: the
    /// upstream might read another value than the one the policy checked.
    Ambiguous,
}

impl<T> Credential<T> {
    /// Transforms the value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Credential<U> {
        self.and_then(|value| Some(f(value)))
    }

    /// Transforms the value; `None` makes it [`Credential::Missing`].
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Option<U>) -> Credential<U> {
        match self {
            Credential::One(value) => f(value).map_or(Credential::Missing, Credential::One),
            Credential::Missing => Credential::Missing,
            Credential::Ambiguous => Credential::Ambiguous,
        }
    }

    /// The occurrences of a credential (each `None` when malformed) read as one: `Missing`
    /// without any (or with one malformed), `Ambiguous` with more than one.
    fn from_values(mut values: impl Iterator<Item = Option<T>>) -> Credential<T> {
        match (values.next(), values.next()) {
            (None, _) => Credential::Missing,
            (Some(Some(value)), None) => Credential::One(value),
            (Some(None), None) => Credential::Missing,
            (Some(_), Some(_)) => Credential::Ambiguous,
        }
    }
}

/// Reads the credentials of one request, each as exactly one value: the request's header map
/// is fetched from the host on the first read of a header, cookie or `basic:*` credential (one
/// host call) and shared by the others; a query parameter needs only `:path`.
///
/// The whole map, because the proxy-wasm ABI's single-header read returns only the first line
/// of a repeated header, and a repeated credential must be seen to be refused.
pub struct CredentialReader<'h, H: Host> {
    host: &'h H,
    headers: OnceCell<Vec<(String, String)>>,
}

impl<'h, H: Host> CredentialReader<'h, H> {
    /// A reader of the current request's credentials.
    pub fn new(host: &'h H) -> Self {
        CredentialReader {
            host,
            headers: OnceCell::new(),
        }
    }

    /// A reader over the request header map the caller already read
    /// (`host.headers(HeaderMap::Request)`), so a policy that needs the map for something else
    /// too reads it once.
    pub fn with_headers(host: &'h H, headers: Vec<(String, String)>) -> Self {
        CredentialReader {
            host,
            headers: OnceCell::from(headers),
        }
    }

    /// The request header map (read from the host on first use, once).
    pub fn headers(&self) -> &[(String, String)] {
        self.headers
            .get_or_init(|| self.host.headers(HeaderMap::Request))
    }

    /// The credential `selector` selects. Derived values (`ip`, `method`, `path`, `client-id`,
    /// `claim:*`) cannot be repeated by a client and are read as [`Selector::evaluate`] does
    /// (`ip` from Envoy's peer address).
    pub fn read(&self, selector: &Selector) -> Credential {
        match selector {
            Selector::Header(name) => self.header(name).map(str::to_owned),
            Selector::BasicUsername => self
                .header("authorization")
                .and_then(|v| parse_basic(v).ok().map(|c| c.username)),
            Selector::BasicPassword => self
                .header("authorization")
                .and_then(|v| parse_basic(v).ok().map(|c| c.password)),
            Selector::Query(name) => {
                // A pseudo-header comes once: read it alone unless the map is already here.
                let fetched;
                let path = match self.headers.get() {
                    Some(headers) => headers
                        .iter()
                        .find(|(n, _)| n == ":path")
                        .map(|(_, v)| v.as_str()),
                    None => {
                        fetched = self.host.request_header(":path");
                        fetched.as_deref()
                    }
                };
                path.map_or(Credential::Missing, |path| {
                    Credential::from_values(query_params(path, name))
                })
            }
            Selector::Cookie(name) => Credential::from_values(
                self.lines("cookie")
                    .flat_map(|line| cookies(line, name))
                    .map(|v| Some(v.to_owned())),
            ),
            derived => derived
                .evaluate(self.host, &AddressSource::Peer)
                .map_or(Credential::Missing, Credential::One),
        }
    }

    /// Every line of request header `name` (lowercase).
    fn lines<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header `name` (lowercase) if it has exactly one line. Envoy joins repeated
    /// `Authorization` lines into one value with `,` (it is one of its inline headers), and
    /// neither Basic credentials nor a bearer token (RFC 6750 `b64token`) contain a comma: a
    /// comma there means several credentials.
    fn header<'a>(&'a self, name: &'a str) -> Credential<&'a str> {
        match Credential::from_values(self.lines(name).map(Some)) {
            Credential::One(v) if name == "authorization" && v.contains(',') => {
                Credential::Ambiguous
            }
            other => other,
        }
    }
}

/// The bearer token in a value read with `source`. From `Authorization` only the `Bearer`
/// scheme (RFC 6750, case-insensitive) counts; from any other place an optional `Bearer ` prefix
/// is removed. `None` when there is no token.
pub fn bearer(source: &crate::selector::Selector, raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let has_scheme = trimmed
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("bearer "));
    let token = match source {
        _ if has_scheme => trimmed[7..].trim_start(),
        crate::selector::Selector::Header(name) if name == "authorization" => return None,
        _ => trimmed,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

/// Why an `Authorization` header holds no usable Basic credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicError {
    /// The scheme is not `Basic`.
    WrongScheme,
    /// The credentials are not valid base64.
    BadBase64,
    /// The decoded credentials are not UTF-8.
    NotUtf8,
    /// The decoded credentials have no `:` between user-id and password.
    MissingColon,
}

/// Basic credentials (RFC 7617).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user-id: everything before the first colon.
    pub username: String,
    /// The password: everything after the first colon (it may contain colons).
    pub password: String,
}

/// Parses an `Authorization` header value as RFC 7617 Basic credentials: case-insensitive
/// scheme, base64 (padding optional), UTF-8, user-id up to the first colon.
pub fn parse_basic(header: &str) -> Result<BasicCredentials, BasicError> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').ok_or(BasicError::WrongScheme)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::WrongScheme);
    }
    let encoded = rest.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .map_err(|_| BasicError::BadBase64)?;
    let decoded = String::from_utf8(decoded).map_err(|_| BasicError::NotUtf8)?;
    let (username, password) = decoded.split_once(':').ok_or(BasicError::MissingColon)?;
    Ok(BasicCredentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestEnvoy, TestRequest};

    fn read(req: &TestRequest, selector: &str) -> Credential {
        selector.parse::<Selector>().unwrap().read_credential(req)
    }

    #[test]
    fn reads_exactly_one_credential() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.add_header(":method", "GET")
            .add_header(":path", "/a?key=k1&token=t1&token=t2&enc=%zz")
            .add_header("x-key", "one")
            .add_header("x-token", "a")
            .add_header("X-Token", "b")
            .add_header("cookie", "sid=s1; dup=1")
            .add_header("cookie", "dup=2; other=x");
        let one = |v: &str| Credential::One(v.to_owned());
        assert_eq!(read(&req, "header:x-key"), one("one"));
        assert_eq!(read(&req, "header:x-token"), Credential::Ambiguous);
        assert_eq!(read(&req, "header:x-none"), Credential::Missing);
        assert_eq!(read(&req, "query:key"), one("k1"));
        assert_eq!(read(&req, "query:token"), Credential::Ambiguous);
        assert_eq!(read(&req, "query:enc"), Credential::Missing, "malformed");
        assert_eq!(read(&req, "query:none"), Credential::Missing);
        assert_eq!(read(&req, "cookie:sid"), one("s1"));
        assert_eq!(read(&req, "cookie:other"), one("x"));
        assert_eq!(read(&req, "cookie:dup"), Credential::Ambiguous, "two lines");
        assert_eq!(read(&req, "method"), one("GET"));
        assert_eq!(read(&req, "client-id"), Credential::Missing);
        assert_eq!(read(&req, "basic:username"), Credential::Missing);

        // The same name twice in one line, and a good value beside a malformed one.
        let mut req = envoy.request(0);
        req.add_header(":path", "/a?k=1&k=%zz")
            .add_header("cookie", "c=1; c=2");
        assert_eq!(read(&req, "query:k"), Credential::Ambiguous);
        assert_eq!(read(&req, "cookie:c"), Credential::Ambiguous);
        // A percent-encoded name is the same parameter to the upstream.
        req.set_header(HeaderMap::Request, ":path", "/a?client_id=a&client%5Fid=b");
        assert_eq!(read(&req, "query:client_id"), Credential::Ambiguous);
    }

    #[test]
    fn several_authorization_credentials_are_ambiguous() {
        let envoy = TestEnvoy::new(1);
        let basic = format!("Basic {}", b64("bob:pw"));
        let other = format!("Basic {}", b64("eve:pw"));
        let cases = [
            (vec![basic.clone()], true),
            (vec![basic.clone(), other.clone()], false),
            // Envoy joins repeated lines of this header into one value.
            (vec![format!("{basic},{other}")], false),
            (vec![format!("{basic}, {other}")], false),
        ];
        for (lines, single) in cases {
            let mut req = envoy.request(0);
            for line in &lines {
                req.add_header("authorization", line);
            }
            for selector in ["basic:username", "basic:password", "header:authorization"] {
                let got = read(&req, selector);
                assert_eq!(
                    matches!(got, Credential::One(_)),
                    single,
                    "{lines:?} {selector}: {got:?}"
                );
                assert_eq!(
                    got == Credential::Ambiguous,
                    !single,
                    "{lines:?} {selector}"
                );
            }
        }
        let mut req = envoy.request(0);
        req.add_header("authorization", &basic);
        assert_eq!(read(&req, "basic:username"), Credential::One("bob".into()));
        // A comma elsewhere is part of the value.
        req.add_header("x-key", "a,b");
        assert_eq!(read(&req, "header:x-key"), Credential::One("a,b".into()));
    }

    #[test]
    fn one_reader_serves_several_credentials() {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        req.add_header(":path", "/a?k=1&k=2&q=3")
            .add_header("client_id", "shop")
            .add_header("client_secret", "s")
            .add_header("client_secret", "t");
        let reader = CredentialReader::new(&req);
        let id: Selector = "header:client_id".parse().unwrap();
        let secret: Selector = "header:client_secret".parse().unwrap();
        assert_eq!(reader.read(&id), Credential::One("shop".into()));
        assert_eq!(reader.read(&secret), Credential::Ambiguous);
        // The query from the map already read.
        let query = |name: &str| reader.read(&Selector::Query(name.into()));
        assert_eq!(query("k"), Credential::Ambiguous);
        assert_eq!(query("q"), Credential::One("3".into()));
        assert_eq!(query("x"), Credential::Missing);
        assert_eq!(
            Credential::One(" Bearer x ").and_then(|v| bearer(&secret, v)),
            Credential::One("x".to_owned())
        );
        assert_eq!(Credential::One("x").map(str::len), Credential::One(1));
        // From `Authorization`, another scheme than Bearer carries no token.
        let authorization = Selector::Header("authorization".into());
        assert_eq!(
            Credential::One("Basic eDp5").and_then(|v| bearer(&authorization, v)),
            Credential::Missing
        );
        assert_eq!(
            Credential::<&str>::Ambiguous.and_then(|v| bearer(&id, v)),
            Credential::Ambiguous
        );
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_rfc7617_credentials() {
        let c = parse_basic(&format!("Basic {}", b64("Aladdin:open sesame"))).unwrap();
        assert_eq!(c.username, "Aladdin");
        assert_eq!(c.password, "open sesame");
        let c = parse_basic(&format!("bAsIc   {}", b64("u:pa:ss:"))).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "pa:ss:"));
        let c = parse_basic(&format!("Basic {}", b64("jürgen:pässwörd"))).unwrap();
        assert_eq!(c.username, "jürgen");
        let unpadded = b64("a:b").trim_end_matches('=').to_owned();
        assert!(parse_basic(&format!("Basic {unpadded}")).is_ok());
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(parse_basic("Bearer abc"), Err(BasicError::WrongScheme));
        assert_eq!(parse_basic("Basic"), Err(BasicError::WrongScheme));
        assert_eq!(parse_basic("Basic !!!"), Err(BasicError::BadBase64));
        assert_eq!(
            parse_basic(&format!("Basic {}", b64("nocolon"))),
            Err(BasicError::MissingColon)
        );
        let latin1 = base64::engine::general_purpose::STANDARD.encode([0xff, b':', b'x']);
        assert_eq!(
            parse_basic(&format!("Basic {latin1}")),
            Err(BasicError::NotUtf8)
        );
    }
}
