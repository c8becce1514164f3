//! ip-filter vs Envoy's native `rbac` with the same CIDRs.

use super::{bare, row, Group, Kind};
use palisade_tests::Filter;
use serde_json::json;

pub fn group() -> Group {
    // 1,000 ranges that do not match plus the loopback range that does: every request is
    // allowed after a full lookup.
    let mut cidrs: Vec<(String, u32)> = (0..1000)
        .map(|i| (format!("10.{}.{}.0", i / 256, i % 256), 24))
        .collect();
    cidrs.push(("127.0.0.0".into(), 8));
    let ips: Vec<String> = cidrs.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    let principals: Vec<_> = cidrs
        .iter()
        .map(|(a, l)| json!({"remote_ip": {"address_prefix": a, "prefix_len": l}}))
        .collect();
    let rbac = json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"allowlist": {
                "permissions": [{"any": true}],
                "principals": principals,
            }}},
        },
    });
    Group {
        refused_body: None,
        name: "ip-filter",
        about: "allowlist of 1,001 CIDRs, client allowed",
        headers: vec![],
        rows: vec![
            bare(),
            row(
                "ip-filter (wasm)",
                Kind::Palisade,
                vec![Filter::wasm("ip-filter", json!({"ips": ips}).to_string())],
            ),
            row("rbac (native)", Kind::Native, vec![Filter::Native(rbac)]),
        ],
    }
}
