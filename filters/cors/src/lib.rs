//! `cors`: Cross-Origin Resource Sharing at the gateway, so browser apps on other origins can call
//! the APIs behind it.
//!
//! [`config`] compiles the Flex `cors-flex` contract, [`origin`] matches `Origin` headers against
//! the configured origins. In the request-headers phase [`Cors`] answers preflights itself (they
//! never reach the upstream) and classifies actual requests into the request's [`Stream`]; in the
//! response-headers phase it then writes (or strips) the `Access-Control-*` response headers and
//! `Vary: Origin`. The kit's runtime carries the [`Stream`] from one phase to the other.

pub mod config;
pub mod origin;

use config::Config;
use palisade_kit::config::is_token;
use palisade_kit::{ConfigError, Host, LogLevel, Policy, Request, Verdict};

const ACAO: &str = "access-control-allow-origin";
const ACAC: &str = "access-control-allow-credentials";
const ACEH: &str = "access-control-expose-headers";
/// What a preflight answer depends on.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// What the request phase learned, for the response phase (the policy's per-request state).
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

palisade_kit::counters! {
    /// The policy's counters (`palisade_cors_<outcome>`).
    pub struct Metrics { preflight_allowed, preflight_denied, allowed, denied }
}

/// The compiled policy.
pub struct Cors {
    config: Config,
    metrics: Metrics,
}

impl Cors {
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
                self.metrics.allowed.inc(host);
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
                self.metrics.denied.inc(host);
                Stream::Refused
            }
        }
    }

    /// Answers a preflight: a grant, or the denial with no CORS grant headers.
    fn preflight(&self, host: &mut impl Host, origin: &str, method: &str) -> Verdict {
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
            self.metrics.preflight_denied.inc(host);
            return self
                .config
                .denial
                .send_with(host, &[("vary", PREFLIGHT_VARY)]);
        };
        self.metrics.preflight_allowed.inc(host);
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
        // If even the local reply fails there is nothing better to do than to stop here.
        let _ = host.send_response(200, &answer, b"");
        Verdict::Respond
    }
}

impl Policy for Cors {
    const NAME: &'static str = "cors";
    type State = Stream;

    /// Compiles the JSON configuration, defines the metrics and logs risky choices.
    fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        for warning in &config.warnings {
            host.log(LogLevel::Warn, &format!("{}: {warning}", Self::NAME));
        }
        Ok(Cors {
            metrics: Metrics::define(host, Self::NAME)?,
            config,
        })
    }

    /// Answers preflights; classifies actual requests for the response phase.
    fn on_request_headers(
        &self,
        request: &mut Request<'_, Stream>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        let Some(origin) = host.request_header("origin") else {
            *request.state = Stream::NoOrigin;
            return Verdict::Continue;
        };
        let method = host.request_header(":method").unwrap_or_default();
        if method == "OPTIONS" {
            if let Some(requested) = host.request_header("access-control-request-method") {
                *request.state = Stream::Answered;
                return self.preflight(host, &origin, &requested);
            }
        }
        *request.state = self.actual(host, origin, &method);
        Verdict::Continue
    }

    /// Writes the CORS response headers of an actual request (also on local replies of later
    /// filters, so a browser can read a 401 or 429). Upstream `Access-Control-*` headers are
    /// replaced or, for refused origins, removed: the gateway alone decides who may read.
    fn on_response_headers(
        &self,
        request: &mut Request<'_, Stream>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        match &*request.state {
            Stream::Untouched | Stream::Answered => {}
            Stream::NoOrigin => add_vary_origin(host),
            Stream::Granted {
                allow_origin,
                group,
            } => {
                add_vary_origin(host);
                host.set_response_header(ACAO, allow_origin);
                if self.config.credentials {
                    host.set_response_header(ACAC, "true");
                } else {
                    host.remove_response_header(ACAC);
                }
                match self.config.groups.get(*group) {
                    Some(g) if !g.expose_headers.is_empty() => {
                        host.set_response_header(ACEH, &g.expose_headers)
                    }
                    _ => host.remove_response_header(ACEH),
                }
            }
            Stream::Refused => {
                add_vary_origin(host);
                host.remove_response_header(ACAO);
                host.remove_response_header(ACAC);
                host.remove_response_header(ACEH);
            }
        }
        Verdict::Continue
    }
}

/// Adds `Origin` to the response's `Vary`, keeping what the upstream put there.
fn add_vary_origin(host: &mut impl Host) {
    match host.response_header("vary") {
        None => host.set_response_header("vary", "Origin"),
        Some(vary) => {
            let covered =
                config::split_list(&vary).any(|v| v == "*" || v.eq_ignore_ascii_case("origin"));
            if !covered {
                host.set_response_header("vary", &format!("{vary}, Origin"));
            }
        }
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<Cors>(); }}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
    use palisade_kit::HeaderMap;
    use serde_json::json;

    /// Response headers as the client gets them (what the upstream sent, then what the policy
    /// did).
    #[derive(Default, Debug)]
    struct Headers(Vec<(String, String)>);

    impl Headers {
        fn h(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    fn policy(envoy: &TestEnvoy, config: serde_json::Value) -> TestPolicy<Cors> {
        envoy.deploy::<Cors>(&config.to_string()).unwrap()
    }

    fn request(cors: &TestPolicy<Cors>, method: &str, headers: &[(&str, &str)]) -> TestRequest {
        let mut r = cors.request(0);
        r.add_header(":method", method);
        for (n, v) in headers {
            r.add_header(n, v);
        }
        r
    }

    /// The response phase of `r` with `upstream` response headers; returns what the client gets.
    fn respond(cors: &TestPolicy<Cors>, r: &mut TestRequest, upstream: &[(&str, &str)]) -> Headers {
        for (n, v) in upstream {
            r.add_to(HeaderMap::Response, n, v);
        }
        assert_eq!(cors.response_headers(r, false), Verdict::Continue);
        cors.done(r);
        Headers(r.map(HeaderMap::Response))
    }

    /// Runs both phases for an actual request; returns the response headers.
    fn actual(
        cors: &TestPolicy<Cors>,
        method: &str,
        headers: &[(&str, &str)],
        upstream: &[(&str, &str)],
    ) -> Headers {
        let mut r = request(cors, method, headers);
        assert_eq!(cors.request_headers(&mut r, true), Verdict::Continue);
        assert!(r.response().is_none());
        respond(cors, &mut r, upstream)
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
            &cors,
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
        assert_eq!(cors.send(&mut r), Verdict::Respond);
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
        let headers = respond(&cors, &mut r, &[(":status", "200")]);
        assert_eq!(headers.0, [(":status".to_owned(), "200".to_owned())]);
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
            let mut r = request(&cors, "OPTIONS", headers);
            assert_eq!(cors.send(&mut r), Verdict::Respond);
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
        let resp = actual(
            &cors,
            "GET",
            &[("origin", "https://shop.example.com")],
            &[("vary", "Accept-Encoding"), (ACAO, "*"), (ACEH, "x-secret")],
        );
        assert_eq!(resp.h(ACAO), Some("https://shop.example.com"));
        assert_eq!(resp.h(ACAC), Some("true"));
        assert_eq!(resp.h(ACEH), Some("x-ratelimit-remaining"));
        assert_eq!(resp.h("vary"), Some("Accept-Encoding, Origin"));
        // HEAD rides on GET.
        let resp = actual(
            &cors,
            "HEAD",
            &[("origin", "https://shop.example.com")],
            &[],
        );
        assert_eq!(resp.h(ACAO), Some("https://shop.example.com"));
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
            let resp = actual(
                &cors,
                method,
                &[("origin", origin)],
                &[
                    (ACAO, "*"),
                    (ACAC, "true"),
                    (ACEH, "x-a"),
                    ("vary", "origin"),
                ],
            );
            assert_eq!(resp.h(ACAO), None, "{method} {origin}");
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
        let resp = actual(&cors, "GET", &[], &[(ACAO, "https://x.test")]);
        assert_eq!(resp.h("vary"), Some("Origin"));
        assert_eq!(resp.h(ACAO), Some("https://x.test"), "not a CORS request");
        let resp = actual(&cors, "GET", &[], &[("vary", "*")]);
        assert_eq!(resp.h("vary"), Some("*"));
        assert_eq!(envoy.counter("palisade.cors.allowed"), 0);
        assert_eq!(envoy.counter("palisade.cors.denied"), 0);
        // An OPTIONS without Access-Control-Request-Method is an actual request.
        let resp = actual(
            &cors,
            "OPTIONS",
            &[("origin", "https://shop.example.com")],
            &[(ACAO, "*")],
        );
        assert_eq!(resp.h(ACAO), None, "OPTIONS is not in the group");
        assert_eq!(envoy.counter("palisade.cors.denied"), 1);
        // Nothing happens for a response whose request this policy never saw.
        let mut r = cors.request(0);
        let untouched = respond(&cors, &mut r, &[(ACAO, "*")]);
        assert_eq!(untouched.0.len(), 1);
    }

    #[test]
    fn the_refused_preflight_answer_can_be_overridden() {
        let envoy = TestEnvoy::new(1);
        let mut config = shop();
        config["denial"] = json!({"status": 400, "body": "no", "contentType": "text/plain"});
        let cors = policy(&envoy, config);
        let mut r = request(
            &cors,
            "OPTIONS",
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "GET"),
            ],
        );
        cors.send(&mut r);
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
            &cors,
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
        cors.send(&mut r);
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

        let resp = actual(&cors, "DELETE", &[("origin", "null")], &[]);
        assert_eq!(resp.h(ACAO), Some("*"));
        assert_eq!(resp.h(ACEH), None);

        // A header list that is not a list of names is not echoed.
        let mut bad = request(
            &cors,
            "OPTIONS",
            &[
                ("origin", "http://localhost:4200"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-a, <script>"),
            ],
        );
        cors.send(&mut bad);
        assert_eq!(bad.response().unwrap().status, 403);
        let mut bad = request(
            &cors,
            "OPTIONS",
            &[
                ("origin", "http://localhost:4200"),
                ("access-control-request-method", "GET POST"),
            ],
        );
        cors.send(&mut bad);
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
        let resp = actual(&cors, "GET", &[("origin", "https://any.test")], &[]);
        assert_eq!(resp.h(ACAO), Some("https://any.test"));
        assert_eq!(resp.h(ACAC), Some("true"));
        let resp = actual(&cors, "GET", &[("origin", "null")], &[]);
        assert_eq!((resp.h(ACAO), resp.h(ACAC)), (None, None));
        assert_eq!(envoy.counter("palisade.cors.denied"), 1);

        let star = policy(
            &envoy,
            json!({"supportCredentials": true, "originGroups": [{"origins": ["*"], "headers": ["*"]}]}),
        );
        let mut r = request(
            &star,
            "OPTIONS",
            &[
                ("origin", "https://b.test"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-custom"),
            ],
        );
        star.send(&mut r);
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
        let a = actual(&cors, "GET", &[("origin", "https://a.test")], &[]);
        assert_eq!(a.h(ACEH), Some("x-a"));
        assert_eq!(a.h(ACAC), None);
        let b = actual(&cors, "GET", &[("origin", "https://b.test")], &[]);
        assert_eq!(b.h(ACAO), None, "GET is not allowed for b.test");
        let mut r = request(
            &cors,
            "OPTIONS",
            &[
                ("origin", "https://b.test"),
                ("access-control-request-method", "POST"),
            ],
        );
        cors.send(&mut r);
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
                                cors,
                                method,
                                &[
                                    ("origin", &origin),
                                    ("access-control-request-method", &origin),
                                    ("access-control-request-headers", &origin),
                                ],
                            );
                            cors.send(&mut r);
                            respond(cors, &mut r, &[("vary", &origin)]);
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, pieces.len().pow(3) * 4);
    }

    #[test]
    fn each_request_keeps_its_own_classification_until_its_response() {
        let envoy = TestEnvoy::new(2);
        let cors = policy(&envoy, shop());
        let upstream = [(ACAO, "*"), (ACAC, "true"), (ACEH, "x-internal")];
        // Interleaved on one worker, and one more on the other worker.
        let mut granted = request(&cors, "PUT", &[("origin", "https://shop.example.com")]);
        let mut refused = request(&cors, "PUT", &[("origin", "https://evil.test")]);
        let mut plain = cors.request(1);
        plain.add_header(":method", "GET");
        for r in [&mut granted, &mut refused, &mut plain] {
            assert_eq!(cors.request_headers(r, false), Verdict::Continue);
        }
        let plain = respond(&cors, &mut plain, &upstream);
        let refused = respond(&cors, &mut refused, &upstream);
        let granted = respond(&cors, &mut granted, &upstream);
        assert_eq!(granted.h(ACAO), Some("https://shop.example.com"));
        assert_eq!(granted.h(ACAC), Some("true"));
        assert_eq!(granted.h(ACEH), Some("x-ratelimit-remaining"));
        assert_eq!(granted.h("vary"), Some("Origin"));
        for name in [ACAO, ACAC, ACEH] {
            assert_eq!(refused.h(name), None, "{name}");
        }
        assert_eq!(refused.h("vary"), Some("Origin"));
        assert_eq!(plain.h(ACAO), Some("*"), "not a CORS request");
        assert_eq!(plain.h(ACEH), Some("x-internal"));
        assert_eq!(cors.paused(0) + cors.paused(1), 0);
    }

    #[test]
    fn a_later_filters_local_reply_gets_the_grant_and_keeps_its_vary() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(
            &envoy,
            json!({"originGroups": [{"origins": ["https://a.test"], "allowedMethods": ["GET"]}]}),
        );
        // A 401 from an auth policy after this one: Envoy runs the response phase on it.
        let resp = actual(
            &cors,
            "GET",
            &[("origin", "https://a.test")],
            &[(":status", "401"), ("vary", "accept")],
        );
        assert_eq!(resp.h(":status"), Some("401"));
        assert_eq!(resp.h(ACAO), Some("https://a.test"));
        assert_eq!(resp.h(ACEH), None, "the group exposes nothing");
        assert_eq!(resp.h("vary"), Some("accept, Origin"));
    }

    #[test]
    fn configure_errors_name_the_field() {
        let envoy = TestEnvoy::new(1);
        let err = envoy
            .deploy::<Cors>(r#"{"originGroups": [{"origins": ["https://*.com"]}]}"#)
            .unwrap_err();
        assert!(
            err.starts_with("cors: invalid configuration at `originGroups[0].origins[0]`"),
            "{err}"
        );
    }

    /// Host calls per request (both phases), pinned so a regression shows; prints the rows of
    /// `BENCHMARKS.md` ("Host calls per request") with `-- --nocapture`.
    #[test]
    fn host_calls_per_request() {
        let envoy = TestEnvoy::new(1);
        let cors = policy(&envoy, shop());
        let mut granted = request(&cors, "GET", &[("origin", "https://shop.example.com")]);
        assert_eq!(cors.request_headers(&mut granted, true), Verdict::Continue);
        respond(&cors, &mut granted, &[]);
        let mut refused = request(&cors, "GET", &[("origin", "https://evil.example")]);
        assert_eq!(cors.request_headers(&mut refused, true), Verdict::Continue);
        respond(&cors, &mut refused, &[]);
        let preflight = |method: &str| {
            let mut r = request(
                &cors,
                "OPTIONS",
                &[
                    ("origin", "https://shop.example.com"),
                    ("access-control-request-method", method),
                ],
            );
            assert_eq!(cors.request_headers(&mut r, true), Verdict::Respond);
            r.host_calls()
        };
        let (allowed_preflight, denied_preflight) = (preflight("PUT"), preflight("DELETE"));
        let (granted, refused) = (granted.host_calls(), refused.host_calls());
        println!(
            "{}",
            granted.markdown_row("cors", "allowed (actual request)")
        );
        println!(
            "{}",
            allowed_preflight.markdown_row("cors", "allowed (preflight)")
        );
        println!(
            "{}",
            refused.markdown_row("cors", "denied (actual request)")
        );
        println!(
            "{}",
            denied_preflight.markdown_row("cors", "denied (preflight)")
        );
        assert!(granted.total() <= 7, "{granted:?}");
        assert!(allowed_preflight.total() <= 5, "{allowed_preflight:?}");
    }
}
