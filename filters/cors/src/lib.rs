//! `cors`: Cross-Origin Resource Sharing at the gateway, so browser apps on other origins can call
//! the APIs behind it.
//!
//! [`config`] compiles the Flex `cors-flex` contract, [`origin`] matches `Origin` headers against
//! the configured origins. [`Cors::on_request_headers`] answers preflights itself (they never
//! reach the upstream) and classifies actual requests; [`Cors::on_response_headers`] then writes
//! (or strips) the `Access-Control-*` response headers and `Vary: Origin`. The proxy-wasm glue at
//! the bottom only carries the per-request [`Stream`] from one phase to the other.

pub mod config;
pub mod origin;

use config::{is_token, Config};
use palisade_kit::metrics::Counter;
use palisade_kit::{ConfigError, Denial, Host, LogLevel, Verdict};

/// The policy name (artifact, root id and metric prefix).
pub const NAME: &str = "cors";

const ACAO: &str = "access-control-allow-origin";
const ACAC: &str = "access-control-allow-credentials";
const ACEH: &str = "access-control-expose-headers";
/// What a preflight answer depends on.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// What the request phase learned, for the response phase.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Stream {
    /// The request phase did not run: leave the response alone. (Envoy does not call a wasm
    /// filter's response phase for a local reply of an earlier filter either.)
    #[default]
    Untouched,
    /// No `Origin`: not a CORS request, but its answer still varies with `Origin`.
    NoOrigin,
    /// A preflight this policy answered itself (granted or refused).
    Answered,
    /// An actual cross-origin request that is granted, with the `Access-Control-Allow-Origin`
    /// value (the origin itself, or `*` for a public resource without credentials).
    Granted {
        /// The value of `Access-Control-Allow-Origin`.
        allow_origin: String,
        /// The granting group.
        group: usize,
    },
    /// An actual cross-origin request from an origin (or with a method) that is not allowed.
    Refused,
}

/// Response headers, as the response phase needs them.
pub trait ResponseHeaders {
    /// A response header's value (the first one), or `None`.
    fn get(&self, name: &str) -> Option<String>;
    /// Replaces (or adds) a response header.
    fn set(&mut self, name: &str, value: &str);
    /// Removes a response header.
    fn remove(&mut self, name: &str);
}

/// The compiled policy.
pub struct Cors {
    config: Config,
    preflight_allowed: Counter,
    preflight_denied: Counter,
    allowed: Counter,
    denied: Counter,
}

impl Cors {
    /// Compiles the JSON configuration, defines the metrics and logs risky choices.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        for warning in &config.warnings {
            host.log(LogLevel::Warn, &format!("{NAME}: {warning}"));
        }
        let mut counter = |outcome| Counter::define(host, NAME, outcome);
        Ok(Cors {
            preflight_allowed: counter("preflight_allowed")?,
            preflight_denied: counter("preflight_denied")?,
            allowed: counter("allowed")?,
            denied: counter("denied")?,
            config,
        })
    }

    /// The group granting `origin`, if any. A public resource grants every well-formed origin,
    /// except that it never grants credentials to `null`.
    fn group_for(&self, origin: &str) -> Option<usize> {
        let canonical = origin::canonical(origin)?;
        if self.config.public {
            return (!(self.config.credentials && canonical == "null")).then_some(0);
        }
        self.config.origins.find(&canonical)
    }

    fn allow_origin<'a>(&self, origin: &'a str) -> &'a str {
        if self.config.public && !self.config.credentials {
            "*"
        } else {
            origin
        }
    }

    /// Decides on a request whose headers have arrived. Preflights are answered here.
    pub fn on_request_headers(&self, host: &mut impl Host) -> (Verdict, Stream) {
        let Some(origin) = host.request_header("origin") else {
            return (Verdict::Continue, Stream::NoOrigin);
        };
        let method = host.request_header(":method").unwrap_or_default();
        if method == "OPTIONS" {
            if let Some(requested) = host.request_header("access-control-request-method") {
                self.preflight(host, &origin, &requested);
                return (Verdict::Respond, Stream::Answered);
            }
        }
        (Verdict::Continue, self.actual(host, origin, &method))
    }

    /// Grants or refuses an actual (non-preflight) cross-origin request.
    fn actual(&self, host: &impl Host, origin: String, method: &str) -> Stream {
        let group = self.group_for(&origin).filter(|g| {
            self.config
                .groups
                .get(*g)
                .is_some_and(|g| g.allows_method(method))
        });
        match group {
            Some(group) => {
                self.allowed.inc(host);
                let allow_origin = match self.allow_origin(&origin) {
                    "*" => "*".to_owned(),
                    _ => origin,
                };
                Stream::Granted {
                    allow_origin,
                    group,
                }
            }
            None => {
                self.denied.inc(host);
                Stream::Refused
            }
        }
    }

    /// Answers a preflight: a grant, or the denial with no CORS grant headers.
    fn preflight(&self, host: &mut impl Host, origin: &str, method: &str) {
        let headers = host.request_header("access-control-request-headers");
        let granted = self
            .group_for(origin)
            .and_then(|g| self.config.groups.get(g))
            .filter(|g| {
                is_token(method)
                    && g.allows_method(method)
                    && headers.as_deref().is_none_or(|h| g.allows_headers(h))
            });
        let Some(group) = granted else {
            self.preflight_denied.inc(host);
            // If even the local reply fails there is nothing better to do than to stop here.
            let _ = self
                .config
                .denial
                .send_with(host, &[("vary", PREFLIGHT_VARY)]);
            return;
        };
        self.preflight_allowed.inc(host);
        let mut answer: Vec<(&str, &str)> = Vec::with_capacity(6);
        answer.push((ACAO, self.allow_origin(origin)));
        if self.config.credentials {
            answer.push((ACAC, "true"));
        }
        answer.push((
            "access-control-allow-methods",
            if group.methods.is_empty() {
                method
            } else {
                &group.allow_methods
            },
        ));
        let allow_headers = if group.any_header {
            headers.as_deref().unwrap_or_default()
        } else {
            &group.allow_headers
        };
        if !allow_headers.is_empty() {
            answer.push(("access-control-allow-headers", allow_headers));
        }
        answer.push(("access-control-max-age", &group.max_age_text));
        answer.push(("vary", PREFLIGHT_VARY));
        let _ = host.send_response(200, &answer, b"");
    }

    /// Writes the CORS response headers of an actual request (also on local replies of later
    /// filters, so a browser can read a 401 or 429). Upstream `Access-Control-*` headers are
    /// replaced or, for refused origins, removed: the gateway alone decides who may read.
    pub fn on_response_headers(&self, stream: &Stream, headers: &mut impl ResponseHeaders) {
        match stream {
            Stream::Untouched | Stream::Answered => {}
            Stream::NoOrigin => add_vary_origin(headers),
            Stream::Granted {
                allow_origin,
                group,
            } => {
                add_vary_origin(headers);
                headers.set(ACAO, allow_origin);
                if self.config.credentials {
                    headers.set(ACAC, "true");
                } else {
                    headers.remove(ACAC);
                }
                match self.config.groups.get(*group) {
                    Some(g) if !g.expose_headers.is_empty() => headers.set(ACEH, &g.expose_headers),
                    _ => headers.remove(ACEH),
                }
            }
            Stream::Refused => {
                add_vary_origin(headers);
                headers.remove(ACAO);
                headers.remove(ACAC);
                headers.remove(ACEH);
            }
        }
    }

    /// The response to send when the policy could not be configured (never in practice).
    pub fn unavailable() -> Denial {
        Denial::new(503, "policy_unavailable", "The policy is not configured.")
    }
}

/// Adds `Origin` to `Vary`, keeping what the upstream put there.
fn add_vary_origin(headers: &mut impl ResponseHeaders) {
    match headers.get("vary") {
        None => headers.set("vary", "Origin"),
        Some(vary) => {
            let covered =
                config::split_list(&vary).any(|v| v == "*" || v.eq_ignore_ascii_case("origin"));
            if !covered {
                headers.set("vary", &format!("{vary}, Origin"));
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod glue {
    //! The proxy-wasm contexts: compile once per VM, then per request carry the [`Stream`].
    use super::{Cors, ResponseHeaders, Stream, NAME};
    use palisade_kit::wasm::{configure_policy, WasmHost};
    use palisade_kit::{Host, Verdict};
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};
    use std::rc::Rc;

    mod abi {
        // The kit's host seam has no response-header removal; declared here, non-panicking.
        #[link(wasm_import_module = "env")]
        extern "C" {
            pub fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
        }
    }
    const RESPONSE_HEADERS: u32 = 2;

    struct Response(WasmHost);

    impl ResponseHeaders for Response {
        fn get(&self, name: &str) -> Option<String> {
            self.0.response_header(name)
        }
        fn set(&mut self, name: &str, value: &str) {
            self.0.set_response_header(name, value);
        }
        fn remove(&mut self, name: &str) {
            // SAFETY: plain read of our own buffer. A failed removal leaves a header that the
            // upstream sent; nothing better can be done.
            unsafe {
                abi::proxy_remove_header_map_value(RESPONSE_HEADERS, name.as_ptr(), name.len());
            }
        }
    }

    pub fn start() {
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| Box::new(Root { policy: None }));
    }

    struct Root {
        policy: Option<Rc<Cors>>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            self.policy = configure_policy(NAME, Cors::configure).map(Rc::new);
            self.policy.is_some()
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http {
                policy: self.policy.clone(),
                stream: Stream::Untouched,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http {
        policy: Option<Rc<Cors>>,
        stream: Stream,
    }

    impl Context for Http {}

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            let mut host = WasmHost;
            let Some(policy) = &self.policy else {
                let _ = Cors::unavailable().send(&mut host);
                return Action::Pause;
            };
            let (verdict, stream) = policy.on_request_headers(&mut host);
            self.stream = stream;
            match verdict {
                Verdict::Continue => Action::Continue,
                Verdict::Respond => Action::Pause,
            }
        }

        fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            if let Some(policy) = &self.policy {
                policy.on_response_headers(&self.stream, &mut Response(WasmHost));
            }
            Action::Continue
        }
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    glue::start();
}}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::testing::{TestEnvoy, TestRequest};
    use serde_json::json;

    /// Response headers as a plain list (what the upstream sent, then what the policy did).
    #[derive(Default, Debug)]
    struct Headers(Vec<(String, String)>);

    impl ResponseHeaders for Headers {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
        fn set(&mut self, name: &str, value: &str) {
            self.remove(name);
            self.0.push((name.into(), value.into()));
        }
        fn remove(&mut self, name: &str) {
            self.0.retain(|(n, _)| n != name);
        }
    }

    impl Headers {
        fn with(pairs: &[(&str, &str)]) -> Self {
            Headers(
                pairs
                    .iter()
                    .map(|(n, v)| ((*n).into(), (*v).into()))
                    .collect(),
            )
        }
        fn h(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    fn policy(envoy: &TestEnvoy, config: serde_json::Value) -> Cors {
        Cors::configure(config.to_string().as_bytes(), &mut envoy.request(0)).unwrap()
    }

    fn request(envoy: &TestEnvoy, method: &str, headers: &[(&str, &str)]) -> TestRequest {
        let mut r = envoy.request(0);
        r.add_header(":method", method);
        for (n, v) in headers {
            r.add_header(n, v);
        }
        r
    }

    /// Runs both phases for an actual request; returns the stream and the response headers.
    fn actual(
        cors: &Cors,
        envoy: &TestEnvoy,
        method: &str,
        headers: &[(&str, &str)],
        upstream: &[(&str, &str)],
    ) -> (Stream, Headers) {
        let mut r = request(envoy, method, headers);
        let (verdict, stream) = cors.on_request_headers(&mut r);
        assert_eq!(verdict, Verdict::Continue);
        assert!(r.response().is_none());
        let mut resp = Headers::with(upstream);
        cors.on_response_headers(&stream, &mut resp);
        (stream, resp)
    }

    fn shop() -> serde_json::Value {
        json!({
            "publicResource": false, "supportCredentials": true,
            "originGroups": [{"origins": ["https://shop.example.com", "https://*.example.com"],
                              "accessControlMaxAge": 600,
                              "allowedMethods": [{"methodName": "PUT", "isAllowed": true},
                                                 {"methodName": "GET", "isAllowed": true},
                                                 {"methodName": "DELETE", "isAllowed": false}],
                              "headers": ["x-request-id", "content-type"],
                              "exposedHeaders": ["x-ratelimit-remaining"]}]
        })
    }

    #[test]
    fn granted_preflight_is_answered_with_the_group_grant() {
        let envoy = TestEnvoy::new(2);
        let cors = policy(&envoy, shop());
        let mut r = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "X-Request-Id,content-type",
                ),
            ],
        );
        assert_eq!(
            cors.on_request_headers(&mut r),
            (Verdict::Respond, Stream::Answered)
        );
        let resp = r.response().unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
        assert_eq!(resp.header(ACAO), Some("https://app.example.com"));
        assert_eq!(resp.header(ACAC), Some("true"));
        assert_eq!(
            resp.header("access-control-allow-methods"),
            Some("PUT, GET")
        );
        assert_eq!(
            resp.header("access-control-allow-headers"),
            Some("x-request-id, content-type")
        );
        assert_eq!(resp.header("access-control-max-age"), Some("600"));
        assert!(resp.header("vary").unwrap().starts_with("Origin"));
        assert_eq!(envoy.counter("palisade.cors.preflight_allowed"), 1);

        // The response phase leaves the local reply alone.
        let mut headers = Headers::default();
        cors.on_response_headers(&Stream::Answered, &mut headers);
        assert!(headers.0.is_empty());
    }

    #[test]
    fn refused_preflights_get_the_denial_without_grant_headers() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, shop());
        for headers in [
            // Origin not listed, or lookalikes.
            &[
                ("origin", "https://evil-example.com"),
                ("access-control-request-method", "PUT"),
            ][..],
            &[
                ("origin", "https://example.com.evil.net"),
                ("access-control-request-method", "PUT"),
            ],
            &[
                ("origin", "https://example.com"),
                ("access-control-request-method", "PUT"),
            ],
            &[("origin", "null"), ("access-control-request-method", "PUT")],
            &[
                ("origin", "http://shop.example.com"),
                ("access-control-request-method", "PUT"),
            ],
            // Method not allowed (DELETE is listed with isAllowed false).
            &[
                ("origin", "https://shop.example.com"),
                ("access-control-request-method", "DELETE"),
            ],
            // A header not allowed.
            &[
                ("origin", "https://shop.example.com"),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "x-request-id, authorization",
                ),
            ],
        ] {
            let mut r = request(&envoy, "OPTIONS", headers);
            assert_eq!(
                cors.on_request_headers(&mut r),
                (Verdict::Respond, Stream::Answered)
            );
            let resp = r.response().unwrap();
            assert_eq!(resp.status, 403, "{headers:?}");
            assert_eq!(resp.json()["error"], "cors_preflight_denied");
            assert!(resp.header(ACAO).is_none() && resp.header(ACAC).is_none());
            assert!(resp.header("access-control-allow-methods").is_none());
            assert!(resp.header("vary").unwrap().contains("Origin"));
        }
        assert_eq!(envoy.counter("palisade.cors.preflight_denied"), 7);
        assert_eq!(envoy.counter("palisade.cors.preflight_allowed"), 0);
    }

    #[test]
    fn granted_actual_request_gets_origin_credentials_exposed_and_vary() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, shop());
        let (stream, resp) = actual(
            &cors,
            &envoy,
            "GET",
            &[("origin", "https://shop.example.com")],
            &[("vary", "Accept-Encoding"), (ACAO, "*"), (ACEH, "x-secret")],
        );
        assert!(matches!(stream, Stream::Granted { .. }));
        assert_eq!(resp.h(ACAO), Some("https://shop.example.com"));
        assert_eq!(resp.h(ACAC), Some("true"));
        assert_eq!(resp.h(ACEH), Some("x-ratelimit-remaining"));
        assert_eq!(resp.h("vary"), Some("Accept-Encoding, Origin"));
        // HEAD rides on GET.
        let (stream, _) = actual(
            &cors,
            &envoy,
            "HEAD",
            &[("origin", "https://shop.example.com")],
            &[],
        );
        assert!(matches!(stream, Stream::Granted { .. }));
        assert_eq!(envoy.counter("palisade.cors.allowed"), 2);
    }

    #[test]
    fn refused_actual_request_passes_without_grant_and_upstream_grants_are_stripped() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, shop());
        for (method, origin) in [
            ("GET", "https://evil.test"),
            ("GET", "null"),
            ("POST", "https://shop.example.com"), // POST is not an allowed method
            ("GET", "https://shop.example.com/"),
        ] {
            let (stream, resp) = actual(
                &cors,
                &envoy,
                method,
                &[("origin", origin)],
                &[
                    (ACAO, "*"),
                    (ACAC, "true"),
                    (ACEH, "x-a"),
                    ("vary", "origin"),
                ],
            );
            assert_eq!(stream, Stream::Refused, "{method} {origin}");
            assert_eq!(resp.h(ACAO), None);
            assert_eq!(resp.h(ACAC), None);
            assert_eq!(resp.h(ACEH), None);
            assert_eq!(resp.h("vary"), Some("origin"));
        }
        assert_eq!(envoy.counter("palisade.cors.denied"), 4);
    }

    #[test]
    fn requests_without_origin_only_get_vary() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, shop());
        let (stream, resp) = actual(&cors, &envoy, "GET", &[], &[(ACAO, "https://x.test")]);
        assert_eq!(stream, Stream::NoOrigin);
        assert_eq!(resp.h("vary"), Some("Origin"));
        assert_eq!(resp.h(ACAO), Some("https://x.test"), "not a CORS request");
        let (_, resp) = actual(&cors, &envoy, "GET", &[], &[("vary", "*")]);
        assert_eq!(resp.h("vary"), Some("*"));
        // An OPTIONS without Access-Control-Request-Method is an actual request.
        let (stream, _) = actual(
            &cors,
            &envoy,
            "OPTIONS",
            &[("origin", "https://shop.example.com")],
            &[],
        );
        assert_eq!(stream, Stream::Refused, "OPTIONS is not in the group");
        // Nothing happens for a response whose request this policy never saw.
        let mut untouched = Headers::with(&[(ACAO, "*")]);
        cors.on_response_headers(&Stream::Untouched, &mut untouched);
        assert_eq!(untouched.0.len(), 1);
    }

    #[test]
    fn the_refused_preflight_answer_can_be_overridden() {
        let envoy = TestEnvoy::new(1);
        let mut config = shop();
        config["denial"] = json!({"status": 400, "body": "no", "contentType": "text/plain"});
        let cors = policy(&envoy, config);
        let mut r = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "GET"),
            ],
        );
        cors.on_request_headers(&mut r);
        let resp = r.response().unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (400, &b"no"[..]));
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert!(resp.header(ACAO).is_none());
    }

    #[test]
    fn public_resource_mirrors_the_preflight_and_grants_star() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, json!({}));
        let mut r = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "http://localhost:4200"),
                ("access-control-request-method", "PATCH"),
                (
                    "access-control-request-headers",
                    "x-anything, authorization",
                ),
            ],
        );
        cors.on_request_headers(&mut r);
        let resp = r.response().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header(ACAO), Some("*"));
        assert_eq!(resp.header(ACAC), None);
        assert_eq!(resp.header("access-control-allow-methods"), Some("PATCH"));
        assert_eq!(
            resp.header("access-control-allow-headers"),
            Some("x-anything, authorization")
        );
        assert_eq!(resp.header("access-control-max-age"), Some("30"));

        let (stream, resp) = actual(&cors, &envoy, "DELETE", &[("origin", "null")], &[]);
        assert!(matches!(stream, Stream::Granted { .. }));
        assert_eq!(resp.h(ACAO), Some("*"));
        assert_eq!(resp.h(ACEH), None);

        // A header list that is not a list of names is not echoed.
        let mut bad = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "http://localhost:4200"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-a, <script>"),
            ],
        );
        cors.on_request_headers(&mut bad);
        assert_eq!(bad.response().unwrap().status, 403);
        let mut bad = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "http://localhost:4200"),
                ("access-control-request-method", "GET POST"),
            ],
        );
        cors.on_request_headers(&mut bad);
        assert_eq!(bad.response().unwrap().status, 403);
    }

    #[test]
    fn credentials_never_go_with_star_and_never_to_null() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, json!({"supportCredentials": true}));
        assert!(envoy
            .logs()
            .iter()
            .any(|(l, m)| *l == LogLevel::Warn && m.contains("supportCredentials")));
        let (_, resp) = actual(&cors, &envoy, "GET", &[("origin", "https://any.test")], &[]);
        assert_eq!(resp.h(ACAO), Some("https://any.test"));
        assert_eq!(resp.h(ACAC), Some("true"));
        let (stream, _) = actual(&cors, &envoy, "GET", &[("origin", "null")], &[]);
        assert_eq!(stream, Stream::Refused);

        let star = policy(
            &envoy,
            json!({"supportCredentials": true, "originGroups": [{"origins": ["*"], "headers": ["*"]}]}),
        );
        let mut r = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "https://b.test"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-custom"),
            ],
        );
        star.on_request_headers(&mut r);
        let resp = r.response().unwrap();
        assert_eq!(resp.header(ACAO), Some("https://b.test"));
        assert_eq!(
            resp.header("access-control-allow-headers"),
            Some("x-custom")
        );
    }

    #[test]
    fn groups_carry_their_own_settings() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(
            &envoy,
            json!({"originGroups": [
                {"origins": ["https://a.test"], "allowedMethods": ["GET"], "exposedHeaders": ["x-a"]},
                {"origins": ["https://b.test"], "allowedMethods": ["POST"], "accessControlMaxAge": 5}
            ]}),
        );
        let (_, a) = actual(&cors, &envoy, "GET", &[("origin", "https://a.test")], &[]);
        assert_eq!(a.h(ACEH), Some("x-a"));
        assert_eq!(a.h(ACAC), None);
        let (b, _) = actual(&cors, &envoy, "GET", &[("origin", "https://b.test")], &[]);
        assert_eq!(b, Stream::Refused);
        let mut r = request(
            &envoy,
            "OPTIONS",
            &[
                ("origin", "https://b.test"),
                ("access-control-request-method", "POST"),
            ],
        );
        cors.on_request_headers(&mut r);
        let resp = r.response().unwrap();
        assert_eq!(resp.header("access-control-allow-methods"), Some("POST"));
        assert_eq!(resp.header("access-control-max-age"), Some("5"));
        assert_eq!(resp.header("access-control-allow-headers"), None);
    }

    #[test]
    fn arbitrary_header_values_never_panic() {
        let envoy = TestEnvoy::new(1);
        let pieces = [
            "",
            "https",
            "://",
            "null",
            "*",
            ".",
            "*.",
            "example.com",
            ":",
            "443",
            "0",
            "99999",
            "[",
            "]",
            "::1",
            "/",
            " ",
            ",",
            "\u{e9}",
            "\u{1F600}",
            "A",
            "%2F",
            "@",
            "\t",
        ];
        let public = policy(&envoy, json!({"supportCredentials": true}));
        let groups = policy(&envoy, shop());
        let mut n = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let origin = format!("{a}{b}{c}");
                    for cors in [&public, &groups] {
                        for method in ["GET", "OPTIONS"] {
                            let mut r = request(
                                &envoy,
                                method,
                                &[
                                    ("origin", &origin),
                                    ("access-control-request-method", &origin),
                                    ("access-control-request-headers", &origin),
                                ],
                            );
                            let (_, stream) = cors.on_request_headers(&mut r);
                            let mut headers = Headers::with(&[("vary", &origin)]);
                            cors.on_response_headers(&stream, &mut headers);
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, pieces.len().pow(3) * 4);
    }

    #[test]
    fn configure_errors_name_the_field() {
        let envoy = TestEnvoy::new(1);
        let err = Cors::configure(
            br#"{"originGroups": [{"origins": ["https://*.com"]}]}"#,
            &mut envoy.request(0),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "originGroups[0].origins[0]");
    }
}
