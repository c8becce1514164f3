//! basic-auth with a bcrypt (cost 10) user, repeated requests (served from the verification
//! cache), vs Envoy's native `basic_auth`, which only knows unsalted `{SHA}` hashes.

use super::{bare, row, Group, Kind};
use palisade_tests::Filter;
use serde_json::json;

// `htpasswd -nbB -C 10 alice bench-password` and `htpasswd -nbs alice bench-password`.
const BCRYPT_10: &str = "$2y$10$FxfoZgh6ow46K6ZOYN4U4OOBAi.LyJKbjyQdYkSoHzqxdsThuwnEa";
const SHA1: &str = "{SHA}o3cOkwHD7Gf2y1wTOReNwr96zYY=";
// base64("alice:bench-password")
const CREDENTIALS: &str = "Basic YWxpY2U6YmVuY2gtcGFzc3dvcmQ=";

fn palisade(hash: &str) -> Filter {
    // The same work as the native filter: check, forward the username, keep the header.
    Filter::wasm(
        "basic-auth",
        json!({
            "realm": "bench",
            "users": [{"username": "alice", "passwordHash": hash}],
            "forwardUsernameHeader": "x-user",
            "hideCredentials": false,
        })
        .to_string(),
    )
}

pub fn group() -> Group {
    let native = json!({
        "name": "envoy.filters.http.basic_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
            "users": {"inline_string": format!("alice:{SHA1}\n")},
            "forward_username_header": "x-user",
        },
    });
    Group {
        refused_body: None,
        name: "basic-auth",
        about: "valid Basic credentials, the same client repeating them",
        headers: vec![("authorization", CREDENTIALS.to_owned())],
        rows: vec![
            bare(),
            row(
                "basic-auth (wasm), bcrypt cost 10, cached",
                Kind::Palisade,
                vec![palisade(BCRYPT_10)],
            ),
            row(
                "basic-auth (wasm), {SHA}",
                Kind::Palisade,
                vec![palisade(SHA1)],
            ),
            row(
                "basic_auth (native), {SHA}",
                Kind::Native,
                vec![Filter::Native(native)],
            ),
        ],
    }
}
