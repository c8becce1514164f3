//! What one host call costs in Envoy, by kind: `examples/host-call-cost` making 20 calls of one
//! kind per request, against the floor (`examples/noop`, which makes none). Envoy's CPU per
//! request over the floor, divided by 20, is one call's cost (BENCHMARKS.md, "What one host
//! call costs"). Run only when named (`bench.sh host-calls`): it needs
//! `dist/host-call-cost.wasm`, which `scripts/build.sh` builds with the policies.

use super::{bare, row, Group, Kind};
use palisade_tests::Filter;

/// Calls per request: enough that their cost stands well above the run-to-run noise.
pub const CALLS: u32 = 20;

/// Every kind the instrument knows (examples/host-call-cost/src/lib.rs).
const KINDS: [&str; 11] = [
    "header",
    "header_absent",
    "headers",
    "property",
    "set_header",
    "remove_header",
    "set_property",
    "shared_get",
    "shared_set",
    "now",
    "counter",
];

pub fn group() -> Group {
    let name = "host-calls";
    let mut group = Group {
        refused_body: None,
        name,
        about: "20 host calls of one kind per request (examples/host-call-cost), direct response",
        headers: vec![],
        rows: vec![],
    };
    if !super::wanted().iter().any(|w| w == name) {
        return group;
    }
    group.rows.push(bare());
    for kind in KINDS {
        group.rows.push(row(
            &format!("{CALLS} × {kind}"),
            Kind::Palisade,
            vec![Filter::wasm("host-call-cost", format!("{kind}:{CALLS}"))],
        ));
    }
    group
}
