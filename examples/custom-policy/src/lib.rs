//! `custom-policy`: the example to copy when writing your own Palisade policy.
//!
//! Requests must carry a configured header (say `x-api-version`) whose value is one of a
//! configured list; the others get the kit's denial and never reach the upstream. The accepted
//! value can be echoed back to the client in a response header. Everything a policy has is here,
//! in reading order:
//!
//! 1. `RawConfig`: the JSON contract, strict (`deny_unknown_fields`) and camelCase, with defaults;
//! 2. [`CustomPolicy`]'s `configure`: validation whose errors name the field, compiled once per
//!    VM into the policy value (lowercased names, prepared denials, counters);
//! 3. [`CustomPolicy::decide`]: the decision, a plain function over `impl Host`;
//! 4. `impl Policy`: the callbacks it needs (request headers, response headers) and what it keeps
//!    per request ([`Exchange`]);
//! 5. the one line of proxy-wasm glue;
//! 6. unit tests on the kit's in-memory Envoy (`TestEnvoy::deploy`).

use palisade_kit::config::{self, is_token};
use palisade_kit::{
    cors, ConfigError, Denial, DenialOverride, Host, LogLevel, Policy, Request, Verdict,
};
use serde::Deserialize;

/// The configuration as written. Unknown keys are refused, so a typo (`"vaules"`) stops the
/// filter instead of being ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// Required (no default): `{}` is refused with "missing field `header`".
    header: String,
    /// Empty: any non-empty value is accepted.
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    echo_header: Option<String>,
    /// The kit's convention for policies a browser preflight cannot satisfy: true by default.
    #[serde(default = "cors::allow_preflight_default")]
    allow_cors_preflight: bool,
    #[serde(default)]
    denial: Option<DenialOverride>,
}

palisade_kit::counters! {
    /// The policy's counters: `palisade_custom_policy_<field>` in `/stats/prometheus`.
    pub struct Metrics { allowed, missing, not_allowed, preflight }
}

/// The compiled policy: prepared once per VM (one per Envoy worker), shared by its requests.
pub struct CustomPolicy {
    header: String,
    values: Vec<String>,
    echo_header: Option<String>,
    allow_cors_preflight: bool,
    missing: Denial,
    not_allowed: Denial,
    metrics: Metrics,
}

/// What the policy decides about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The header carries an accepted value.
    Allow(String),
    /// A CORS preflight without the header (browsers cannot add it): let through.
    Preflight,
    /// The header is absent or empty.
    Missing,
    /// The header carries a value that is not accepted.
    NotAllowed(String),
}

/// What the policy keeps about one request between its phases (`Policy::State`).
#[derive(Debug, Default)]
pub struct Exchange {
    /// The value the request was admitted with, for the response phase.
    accepted: Option<String>,
}

impl CustomPolicy {
    /// The decision, from the request as the host shows it: one host call for a request that
    /// carries the header. A plain function, so it runs the same in Envoy and in `cargo test`.
    /// `end_of_stream`: no body follows the headers (a preflight never has one).
    pub fn decide(&self, host: &impl Host, end_of_stream: bool) -> Decision {
        match host.request_header(&self.header).filter(|v| !v.is_empty()) {
            // A handful of values: a linear scan is cheaper than hashing.
            Some(value) if self.values.is_empty() || self.values.contains(&value) => {
                Decision::Allow(value)
            }
            Some(value) => Decision::NotAllowed(value),
            None if self.allow_cors_preflight && cors::is_preflight(host, end_of_stream) => {
                Decision::Preflight
            }
            None => Decision::Missing,
        }
    }
}

impl Policy for CustomPolicy {
    const NAME: &'static str = "custom-policy";
    type State = Exchange;

    fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::parse(json)?;
        let header = header_name(&raw.header).map_err(|e| ConfigError::at("header", e))?;
        for (i, value) in raw.values.iter().enumerate() {
            check_value(value).map_err(|e| ConfigError::at(format!("values[{i}]"), e))?;
        }
        let echo_header = match &raw.echo_header {
            Some(name) => Some(header_name(name).map_err(|e| ConfigError::at("echoHeader", e))?),
            None => None,
        };
        // Denials are built here, so sending one per request formats nothing.
        let denial = raw.denial.as_ref();
        let missing = format!("The request must carry the {header} header.");
        let not_allowed = format!("The value of the {header} header is not accepted.");
        Ok(CustomPolicy {
            missing: Denial::new(400, "header_missing", &missing).overridden(denial, "denial")?,
            not_allowed: Denial::new(400, "header_value_not_allowed", &not_allowed)
                .overridden(denial, "denial")?,
            metrics: Metrics::define(host, Self::NAME)?,
            header,
            values: raw.values,
            echo_header,
            allow_cors_preflight: raw.allow_cors_preflight,
        })
    }

    fn on_request_headers(
        &self,
        request: &mut Request<'_, Exchange>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        match self.decide(host, end_of_stream) {
            Decision::Allow(value) => {
                // The ABI reads only the first of repeated headers: replace them all with the
                // value checked, so the upstream never acts on an unchecked one.
                host.set_request_header(&self.header, &value);
                self.metrics.allowed.inc(host);
                request.state.accepted = Some(value);
                Verdict::Continue
            }
            Decision::Preflight => {
                self.metrics.preflight.inc(host);
                Verdict::Continue
            }
            Decision::Missing => {
                self.metrics.missing.inc(host);
                self.missing.send(host)
            }
            Decision::NotAllowed(value) => {
                self.metrics.not_allowed.inc(host);
                // The precise reason goes to the debug log, never to the client.
                let why = format!(
                    "{}: {value:?} is not an accepted {}",
                    Self::NAME,
                    self.header
                );
                host.log(LogLevel::Debug, &why);
                self.not_allowed.send(host)
            }
        }
    }

    fn on_response_headers(
        &self,
        request: &mut Request<'_, Exchange>,
        host: &mut impl Host,
        _end_of_stream: bool,
    ) -> Verdict {
        // Runs for local replies too (this policy's denials included); only an admitted
        // request has an accepted value.
        if let (Some(name), Some(value)) = (&self.echo_header, &request.state.accepted) {
            host.set_response_header(name, value);
        }
        Verdict::Continue
    }
}

/// A header name from the configuration, lowercased (the host's header names are).
fn header_name(name: &str) -> Result<String, String> {
    if is_token(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("{name:?} is not a header name"))
    }
}

/// A value a request can carry: visible ASCII, inner spaces allowed (clients' leading and
/// trailing whitespace never reaches a filter).
fn check_value(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let visible = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    if visible(bytes.first())
        && visible(bytes.last())
        && bytes.iter().all(|&b| b.is_ascii_graphic() || b == b' ')
    {
        Ok(())
    } else {
        Err(format!(
            "{value:?} can never be received: use visible ASCII without leading or trailing spaces"
        ))
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{ palisade_kit::wasm::start::<CustomPolicy>(); }}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
    use palisade_kit::HeaderMap;

    const CONFIG: &str = r#"{"header": "X-Api-Version", "values": ["2024-01-01", "2024-06-01"],
                             "echoHeader": "x-api-version-served"}"#;

    fn deploy(envoy: &TestEnvoy, config: &str) -> TestPolicy<CustomPolicy> {
        envoy.deploy::<CustomPolicy>(config).unwrap()
    }

    /// A request on `worker` with `headers`.
    fn request(
        policy: &TestPolicy<CustomPolicy>,
        worker: usize,
        headers: &[(&str, &str)],
    ) -> TestRequest {
        let mut req = policy.request(worker);
        req.add_header(":method", "GET")
            .add_header(":path", "/orders");
        for (name, value) in headers {
            req.add_header(name, value);
        }
        req
    }

    fn values(req: &TestRequest, map: HeaderMap, name: &str) -> Vec<String> {
        req.map(map)
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn an_accepted_value_goes_on_and_is_echoed_in_the_response() {
        let envoy = TestEnvoy::new(2);
        let policy = deploy(&envoy, CONFIG);
        for worker in 0..2 {
            let mut req = request(&policy, worker, &[("x-api-version", "2024-06-01")]);
            assert_eq!(policy.send(&mut req), Verdict::Continue);
            assert!(req.response().is_none());
            // The upstream answers; the response phase sees the request's state.
            req.add_to(HeaderMap::Response, ":status", "200");
            assert_eq!(policy.response_headers(&mut req, true), Verdict::Continue);
            let echoed = values(&req, HeaderMap::Response, "x-api-version-served");
            assert_eq!(echoed, ["2024-06-01"]);
            policy.done(&mut req);
        }
        // Envoy keeps one value per counter name: every worker adds to it.
        assert_eq!(envoy.counter("palisade.custom_policy.allowed"), 2);
    }

    #[test]
    fn missing_and_other_values_are_denied_and_never_echoed() {
        let envoy = TestEnvoy::new(1);
        let policy = deploy(&envoy, CONFIG);
        for (headers, code) in [
            (&[][..], "header_missing"),
            (&[("x-api-version", "")][..], "header_missing"),
            (
                &[("x-api-version", "2023-01-01")][..],
                "header_value_not_allowed",
            ),
            (
                &[("x-api-version", "2024-06-01 ")][..],
                "header_value_not_allowed",
            ),
        ] {
            let mut req = request(&policy, 0, headers);
            assert_eq!(policy.send(&mut req), Verdict::Respond, "{headers:?}");
            let resp = req.response().unwrap();
            assert_eq!(resp.status, 400);
            assert_eq!(resp.header("content-type"), Some("application/json"));
            assert_eq!(resp.json()["error"], code);
            assert!(resp.json()["message"]
                .as_str()
                .unwrap()
                .contains("x-api-version"));
            // The local reply goes through the response phase: nothing is echoed.
            assert_eq!(policy.response_headers(&mut req, false), Verdict::Continue);
            assert!(values(&req, HeaderMap::Response, "x-api-version-served").is_empty());
        }
        assert_eq!(envoy.counter("palisade.custom_policy.missing"), 2);
        assert_eq!(envoy.counter("palisade.custom_policy.not_allowed"), 2);
        assert_eq!(envoy.counter("palisade.custom_policy.allowed"), 0);
    }

    #[test]
    fn the_upstream_sees_only_the_value_checked() {
        let envoy = TestEnvoy::new(1);
        let policy = deploy(&envoy, CONFIG);
        let sent = [
            ("x-api-version", "2024-01-01"),
            ("x-api-version", "2999-01-01"),
        ];
        let mut req = request(&policy, 0, &sent);
        assert_eq!(policy.send(&mut req), Verdict::Continue);
        assert_eq!(
            values(&req, HeaderMap::Request, "x-api-version"),
            ["2024-01-01"]
        );
        // The first value decides.
        let mut req = request(&policy, 0, &[sent[1], sent[0]]);
        assert_eq!(policy.send(&mut req), Verdict::Respond);
    }

    #[test]
    fn without_values_any_non_empty_value_is_accepted() {
        let envoy = TestEnvoy::new(1);
        let policy = deploy(&envoy, r#"{"header": "x-tenant"}"#);
        let mut req = request(&policy, 0, &[("x-tenant", "acme")]);
        assert_eq!(
            policy.policy(0).decide(&req, true),
            Decision::Allow("acme".into())
        );
        assert_eq!(policy.send(&mut req), Verdict::Continue);
        let req = request(&policy, 0, &[("x-tenant", "")]);
        assert_eq!(policy.policy(0).decide(&req, true), Decision::Missing);
    }

    #[test]
    fn cors_preflights_pass_unless_configured_otherwise() {
        let envoy = TestEnvoy::new(1);
        let preflight = |policy: &TestPolicy<CustomPolicy>| {
            let mut req = policy.request(0);
            req.add_header(":method", "OPTIONS")
                .add_header(":path", "/orders")
                .add_header("origin", "https://app.example")
                .add_header("access-control-request-method", "POST");
            policy.send(&mut req)
        };
        assert_eq!(preflight(&deploy(&envoy, CONFIG)), Verdict::Continue);
        assert_eq!(envoy.counter("palisade.custom_policy.preflight"), 1);
        let strict = deploy(
            &envoy,
            r#"{"header": "x-api-version", "allowCorsPreflight": false}"#,
        );
        assert_eq!(preflight(&strict), Verdict::Respond);
    }

    #[test]
    fn the_denial_can_be_overridden() {
        let envoy = TestEnvoy::new(1);
        let policy = deploy(
            &envoy,
            r#"{"header": "x-api-version", "values": ["1"],
                "denial": {"status": 404, "body": "not here", "contentType": "text/plain"}}"#,
        );
        for headers in [&[][..], &[("x-api-version", "2")][..]] {
            let mut req = request(&policy, 0, headers);
            assert_eq!(policy.send(&mut req), Verdict::Respond);
            let resp = req.response().unwrap();
            assert_eq!((resp.status, resp.body.as_slice()), (404, &b"not here"[..]));
            assert_eq!(resp.header("content-type"), Some("text/plain"));
        }
    }

    #[test]
    fn a_bad_configuration_is_refused_naming_the_field() {
        let envoy = TestEnvoy::new(1);
        for (config, field) in [
            ("{}", "missing field `header`"),
            ("", "missing field `header`"),
            (r#"{"header": "x api"}"#, "`header`"),
            (
                r#"{"header": "x", "values": ["ok", " padded"]}"#,
                "`values[1]`",
            ),
            (r#"{"header": "x", "values": [""]}"#, "`values[0]`"),
            (r#"{"header": "x", "values": "ok"}"#, "`values`"),
            (
                r#"{"header": "x", "echoHeader": ":status"}"#,
                "`echoHeader`",
            ),
            (
                r#"{"header": "x", "vaules": ["1"]}"#,
                "unknown field `vaules`",
            ),
            (
                r#"{"header": "x", "allowCorsPreflight": "no"}"#,
                "`allowCorsPreflight`",
            ),
            (
                r#"{"header": "x", "denial": {"status": 200}}"#,
                "`denial.status`",
            ),
        ] {
            let err = envoy.deploy::<CustomPolicy>(config).unwrap_err();
            assert!(
                err.starts_with("custom-policy: invalid configuration at") && err.contains(field),
                "{config}: expected {field}, got {err}"
            );
        }
    }
}
