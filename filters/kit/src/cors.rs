//! What auth policies need to know about CORS.
//!
//! A browser sends a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! without credentials before a cross-origin request. If an auth policy runs before the `cors`
//! policy and denies the preflight, the browser never sends the real request. `cors` belongs
//! first in the chain; as a safety net every auth policy lets preflights pass unauthenticated
//! unless configured otherwise (`"allowCorsPreflight": false`). A preflight carries no request
//! body and, when it reaches an upstream, no credentials; an `OPTIONS` with a body is never
//! taken for one.

use crate::host::Host;

/// The default of every auth policy's `allowCorsPreflight` option.
pub const fn allow_preflight_default() -> bool {
    true
}

/// Whether the current request is a CORS preflight. `end_of_stream` is the flag of the
/// request-headers callback: a preflight never has a body, so an `OPTIONS` followed by one
/// (HTTP/1.1 `Content-Length` > 0 or chunked, HTTP/2 DATA frames) is a normal request, to be
/// authenticated. Envoy derives the flag from all of those, so no header needs reading.
pub fn is_preflight(host: &impl Host, end_of_stream: bool) -> bool {
    end_of_stream
        && host.request_header(":method").as_deref() == Some("OPTIONS")
        && host.request_header("origin").is_some()
        && host
            .request_header("access-control-request-method")
            .is_some()
}

/// [`is_preflight`] over a request header map already read (e.g. a
/// [`crate::credentials::CredentialReader`]'s), without a host call.
pub fn is_preflight_in(headers: &[(String, String)], end_of_stream: bool) -> bool {
    let has = |name: &str| headers.iter().any(|(n, _)| n == name);
    end_of_stream
        && headers
            .iter()
            .find(|(n, _)| n == ":method")
            .is_some_and(|(_, method)| method == "OPTIONS")
        && has("origin")
        && has("access-control-request-method")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnvoy;

    #[test]
    fn recognises_preflights_only() {
        let envoy = TestEnvoy::new(1);
        let mut r = envoy.request(0);
        r.add_header(":method", "OPTIONS")
            .add_header("origin", "https://a.example");
        assert!(!is_preflight(&r, true));
        r.add_header("access-control-request-method", "PUT");
        assert!(is_preflight(&r, true));
        let mut get = envoy.request(0);
        get.add_header(":method", "GET")
            .add_header("origin", "https://a.example")
            .add_header("access-control-request-method", "PUT");
        assert!(!is_preflight(&get, true));
        for (req, end_of_stream) in [(&r, true), (&r, false), (&get, true)] {
            assert_eq!(
                is_preflight_in(&req.headers(), end_of_stream),
                is_preflight(req, end_of_stream)
            );
        }
    }

    #[test]
    fn a_request_with_a_body_is_not_a_preflight() {
        let envoy = TestEnvoy::new(1);
        let mut r = envoy.request(0);
        r.add_header(":method", "OPTIONS")
            .add_header("origin", "https://a.example")
            .add_header("access-control-request-method", "POST")
            .add_header("content-length", "5");
        assert!(!is_preflight(&r, false), "a body follows the headers");
        // HTTP/2 DATA frames without a content-length: the flag alone tells.
        let mut h2 = envoy.request(0);
        h2.add_header(":method", "OPTIONS")
            .add_header("origin", "https://a.example")
            .add_header("access-control-request-method", "POST");
        assert!(!is_preflight(&h2, false));
        assert!(is_preflight(&h2, true));
    }
}
