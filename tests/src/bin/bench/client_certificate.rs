//! client-certificate vs Envoy's native `rbac` with `authenticated` principals, on the same mTLS
//! listener (test CA, P-256 certificates generated with openssl). Both allowlists hold 100
//! URI SANs, the client's last. Rows: bare Envoy on the TLS listener; the policy matching the
//! client's first URI SAN (one attribute read); the policy matching its second URI SAN (the
//! certificate is read and parsed, Envoy's attribute carrying only the first); `rbac` with the
//! 100 principals (the comparison) and with only the client's (how its cost grows with the list).
//! wrk cannot present a client certificate: the load goes through a client-side Envoy
//! (`Row::over_tls`), so absolute requests/s are lower than in the cleartext groups; Envoy CPU
//! µs/request is the gateway's alone.

use super::{bare, row, Group, Kind, Row};
use palisade_tests::{Filter, Pki};
use serde_json::json;

const NAME: &str = "client-certificate";
const ABOUT: &str = "mTLS listener, 100 allowed URI SANs, the client's certificate allowed";

fn san(i: usize) -> String {
    format!("spiffe://bench.example/ns/bench/sa/client-{i}")
}

pub fn group() -> Group {
    // Building the group generates a PKI: not for groups that will not run.
    if !super::selected(NAME) {
        return Group {
            refused_body: None,
            name: NAME,
            about: ABOUT,
            headers: vec![],
            rows: vec![],
        };
    }
    let pki = Pki::new("bench");
    let second = "spiffe://bench.example/ns/bench/sa/second-name";
    let cert = pki.client(
        "bench-client",
        "/O=Bench/CN=bench-client",
        &[&format!("URI:{}", san(99)), &format!("URI:{second}")],
    );
    let client = pki.trust().with_cert(&cert);
    let mtls = |row: Row| row.over_tls(pki.server(), client.clone());

    let mut first_listed: Vec<String> = (0..99).map(san).collect();
    first_listed.push(san(99));
    let mut second_listed: Vec<String> = (0..99).map(san).collect();
    second_listed.push(second.to_owned());
    let ours = |sans: &[String]| Filter::wasm(NAME, json!({ "allowedSans": sans }).to_string());
    let rbac = |uris: &[String]| {
        let principals: Vec<_> = uris
            .iter()
            .map(|uri| json!({"authenticated": {"principal_name": {"exact": uri}}}))
            .collect();
        Filter::Native(json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": "ALLOW", "policies": {"clients": {
                    "permissions": [{"any": true}],
                    "principals": principals,
                }}},
            },
        }))
    };
    Group {
        refused_body: None,
        name: NAME,
        about: ABOUT,
        headers: vec![],
        rows: vec![
            mtls(bare()),
            mtls(row(
                "client-certificate (wasm), first URI SAN",
                Kind::Palisade,
                vec![ours(&first_listed)],
            )),
            mtls(row(
                "client-certificate (wasm), second URI SAN (certificate parsed)",
                Kind::Palisade,
                vec![ours(&second_listed)],
            )),
            mtls(row(
                "rbac (native), 100 authenticated principals",
                Kind::Native,
                vec![rbac(&first_listed)],
            )),
            mtls(row(
                "rbac (native), 1 authenticated principal",
                Kind::Native,
                vec![rbac(&first_listed[99..])],
            )),
        ],
    }
}
