//! Credentials carried in requests.

use base64::Engine;

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
