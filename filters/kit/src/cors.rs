//! What auth policies need to know about CORS.
//!
//! A browser sends a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! without credentials before a cross-origin request. If an auth policy runs before the `cors`
//! policy and denies the preflight, the browser never sends the real request. `cors` belongs
//! first in the chain; as a safety net every auth policy lets preflights pass unauthenticated
//! unless configured otherwise (`"allowCorsPreflight": false`). A preflight carries no request
//! body and, when it reaches an upstream, no credentials.

use crate::host::Host;

/// The default of every auth policy's `allowCorsPreflight` option.
pub const fn allow_preflight_default() -> bool {
    true
}

/// Whether the current request is a CORS preflight.
pub fn is_preflight(host: &impl Host) -> bool {
    host.request_header(":method").as_deref() == Some("OPTIONS")
        && host.request_header("origin").is_some()
        && host
            .request_header("access-control-request-method")
            .is_some()
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
        assert!(!is_preflight(&r));
        r.add_header("access-control-request-method", "PUT");
        assert!(is_preflight(&r));
        let mut get = envoy.request(0);
        get.add_header(":method", "GET")
            .add_header("origin", "https://a.example")
            .add_header("access-control-request-method", "PUT");
        assert!(!is_preflight(&get));
    }
}
