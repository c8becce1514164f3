//! The one shape every policy denies with.
//!
//! A denial is a status, a JSON body `{"error": "<stable_code>", "message": "<human text>"}`
//! with `content-type: application/json`, and extra headers (e.g. `WWW-Authenticate`). Policies
//! build their denials at configure time, so sending one costs no formatting per request. Users
//! may override the status and body per policy with [`DenialOverride`].

use crate::config::ConfigError;
use crate::host::{Host, LogLevel};
use crate::runtime::Verdict;
use serde::Deserialize;

/// A user's replacement for a policy's denial response (`"denial": {...}` in every policy).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DenialOverride {
    /// Status code to answer with instead of the policy's (400-599).
    pub status: Option<u16>,
    /// Body to answer with instead of the JSON error document, sent verbatim.
    pub body: Option<String>,
    /// Content type of `body` (default `application/json`).
    pub content_type: Option<String>,
}

/// A prepared local response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    status: u16,
    code: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Denial {
    /// A denial with the standard JSON body.
    pub fn new(status: u16, code: &'static str, message: &str) -> Self {
        Denial {
            status,
            code,
            headers: vec![("content-type".into(), "application/json".into())],
            body: error_body(code, message),
        }
    }

    /// Adds a response header (e.g. `WWW-Authenticate`).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Applies a user's override, validated; `path` names the override in error messages.
    pub fn overridden(
        mut self,
        with: Option<&DenialOverride>,
        path: &str,
    ) -> Result<Self, ConfigError> {
        let Some(with) = with else { return Ok(self) };
        if let Some(status) = with.status {
            if !(400..=599).contains(&status) {
                return Err(ConfigError::at(
                    format!("{path}.status"),
                    format!("a denial status must be 400-599, got {status}"),
                ));
            }
            self.status = status;
        }
        if let Some(body) = &with.body {
            self.body = body.clone().into_bytes();
        }
        if let Some(content_type) = &with.content_type {
            if with.body.is_none() {
                return Err(ConfigError::at(
                    format!("{path}.contentType"),
                    "contentType only applies with a custom body",
                ));
            }
            if let Some(header) = self.headers.iter_mut().find(|(n, _)| n == "content-type") {
                header.1 = content_type.clone();
            }
        }
        Ok(self)
    }

    /// The status code sent.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stable machine code in the default body (also used to name the denial in metrics).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The body sent.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The headers sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Answers the current request with this denial: [`Verdict::Respond`], what the callback
    /// returns.
    pub fn send(&self, host: &mut impl Host) -> Verdict {
        self.send_with(host, &[])
    }

    /// Answers with this denial plus per-request headers (e.g. `Retry-After`).
    pub fn send_with(&self, host: &mut impl Host, extra: &[(&str, &str)]) -> Verdict {
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(self.headers.len() + extra.len());
        headers.extend(self.headers());
        headers.extend_from_slice(extra);
        // If even the local reply fails, the request stays stopped: it never reaches the
        // upstream either way.
        if let Err(e) = host.send_response(self.status, &headers, &self.body) {
            host.log(
                LogLevel::Debug,
                &format!("{}: local reply not sent: {e}", self.code),
            );
        }
        Verdict::Respond
    }
}

/// The standard body, `{"error":"<code>","message":"<message>"}`: the bytes
/// `serde_json::json!` would give, written without `serde_json::Value`, whose code (a map,
/// serializers, float formatting) would otherwise be in every policy's module and cost Envoy
/// memory when V8 compiles it.
pub(crate) fn error_body(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() + message.len() + 24);
    out.extend_from_slice(b"{\"error\":");
    push_json_string(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    push_json_string(&mut out, message);
    out.push(b'}');
    out
}

/// Appends `s` as a JSON string as serde_json writes it: `"` and `\` escaped, control
/// characters as `\n`-style or `\u00xx` escapes, everything else (non-ASCII too) verbatim.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_body_is_what_serde_json_writes() {
        let mut every_control: String = (0u8..0x20).map(char::from).collect();
        every_control.push_str("\u{7f} \"quoted\" back\\slash / é ✓ 😀");
        for message in [
            "",
            "plain",
            "Your \"IP\" is not allowed",
            every_control.as_str(),
        ] {
            let expected =
                serde_json::json!({"error": "some_code", "message": message}).to_string();
            assert_eq!(
                String::from_utf8(error_body("some_code", message)).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn standard_body_is_json_with_code_and_message() {
        let d = Denial::new(403, "ip_denied", "Your \"IP\" is not allowed");
        let v: serde_json::Value = serde_json::from_slice(d.body()).unwrap();
        assert_eq!(v["error"], "ip_denied");
        assert_eq!(v["message"], "Your \"IP\" is not allowed");
        assert_eq!(d.status(), 403);
        assert!(d
            .headers()
            .any(|(n, v)| n == "content-type" && v == "application/json"));
    }

    #[test]
    fn override_replaces_status_body_and_type() {
        let o = DenialOverride {
            status: Some(404),
            body: Some("nope".into()),
            content_type: Some("text/plain".into()),
        };
        let d = Denial::new(403, "ip_denied", "x")
            .with_header("X-Extra", "1")
            .overridden(Some(&o), "denial")
            .unwrap();
        assert_eq!(d.status(), 404);
        assert_eq!(d.body(), b"nope");
        let headers: Vec<_> = d.headers().collect();
        assert_eq!(
            headers,
            vec![("content-type", "text/plain"), ("x-extra", "1")]
        );
    }

    #[test]
    fn override_validates_status_and_names_the_field() {
        let o = DenialOverride {
            status: Some(200),
            ..Default::default()
        };
        let err = Denial::new(403, "c", "m")
            .overridden(Some(&o), "denial")
            .unwrap_err();
        assert_eq!(err.path, "denial.status");
        let o = DenialOverride {
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        let err = Denial::new(403, "c", "m")
            .overridden(Some(&o), "denial")
            .unwrap_err();
        assert_eq!(err.path, "denial.contentType");
    }
}
