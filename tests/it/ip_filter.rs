//! `ip-filter` in a real Envoy: allow and block lists, IPv4 and IPv6, octet prefixes,
//! IPv4-mapped entries, HTTP/1.1 and HTTP/2, X-Forwarded-For with trusted hops, address
//! headers sent as several lines, and refused configurations.

use palisade_tests::{Gateway, GatewayBuilder, Request, Upstream};
use serde_json::json;

fn gateway(upstream: &Upstream, config: serde_json::Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .wasm("ip-filter", config.to_string())
        .start()
}

fn assert_denied(resp: &palisade_tests::Response) {
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["error"], "ip_denied");
    assert!(
        resp.header("x-upstream").is_none(),
        "denied request reached the upstream"
    );
}

#[test]
fn allowlist_admits_listed_peers_only() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"mode": "allowlist", "ips": ["127.0.0.2", "127.0.1"]}),
    );

    let ok = gw.send(&Request::get("/orders?x=1").from("127.0.0.2"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["path"], "/orders?x=1");
    // Octet prefix 127.0.1 = 127.0.1.0/24.
    assert_eq!(gw.send(&Request::get("/").from("127.0.1.77")).status, 200);

    assert_denied(&gw.send(&Request::get("/").from("127.0.0.3")));
    assert_denied(&gw.send(&Request::get("/").from("127.0.2.1")));
    assert_eq!(
        upstream.hits(),
        2,
        "denied requests must never reach the upstream"
    );

    assert_eq!(gw.metric("palisade_ip_filter_allowed"), Some(2.0));
    assert_eq!(gw.metric("palisade_ip_filter_denied"), Some(2.0));
}

#[test]
fn blocklist_denies_listed_peers_over_http1_and_http2() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"mode": "blocklist", "ips": ["127.0.0.0/30"]}),
    );

    for send in [Gateway::send, Gateway::send_h2] {
        assert_denied(&send(&gw, &Request::get("/").from("127.0.0.2")));
        let ok = send(
            &gw,
            &Request::new("POST", "/items")
                .from("127.0.0.9")
                .body("hello"),
        );
        assert_eq!(ok.status, 200);
        assert_eq!(ok.json()["body"], "hello");
    }
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn ipv6_listener_and_lists() {
    let upstream = Upstream::start();
    let allow_loopback = GatewayBuilder::new()
        .ipv6()
        .upstream(&upstream)
        .wasm(
            "ip-filter",
            json!({"ips": ["::1", "10.0.0.0/8"]}).to_string(),
        )
        .start();
    assert!(allow_loopback.addr().is_ipv6());
    assert_eq!(allow_loopback.send(&Request::get("/")).status, 200);
    assert_eq!(allow_loopback.send_h2(&Request::get("/")).status, 200);

    let allow_other = GatewayBuilder::new()
        .ipv6()
        .upstream(&upstream)
        .wasm("ip-filter", json!({"ips": ["2001:db8::/32"]}).to_string())
        .start();
    assert_denied(&allow_other.send(&Request::get("/")));

    let block_loopback = GatewayBuilder::new()
        .ipv6()
        .upstream(&upstream)
        .wasm(
            "ip-filter",
            json!({"mode": "blocklist", "ips": ["::1/128"]}).to_string(),
        )
        .start();
    assert_denied(&block_loopback.send_h2(&Request::get("/")));
    assert_eq!(upstream.hits(), 2);
}

/// A gateway behind trusted proxies: Envoy itself does not append to X-Forwarded-For.
fn behind_proxies(upstream: &Upstream, config: serde_json::Value) -> Gateway {
    GatewayBuilder::new()
        .upstream(upstream)
        .hcm("use_remote_address", json!(false))
        .wasm("ip-filter", config.to_string())
        .start()
}

#[test]
fn forwarded_for_uses_trusted_hops_and_ignores_spoofed_entries() {
    let upstream = Upstream::start();
    // One trusted proxy in front of Envoy appends the address it saw; the client wrote the rest.
    let gw = behind_proxies(
        &upstream,
        json!({"ips": ["10.0.0.0/8", "2001:db8::/32"], "ipSource": "xff", "trustedHops": 1}),
    );
    let xff = |v: &str| Request::get("/").header("x-forwarded-for", v);

    // The client claims an allowed address; the trusted proxy recorded the real one.
    assert_denied(&gw.send(&xff("10.0.0.1, 203.0.113.9")));
    assert_eq!(gw.send(&xff("203.0.113.9, 10.1.2.3")).status, 200);
    assert_eq!(gw.send(&xff("2001:db8::7")).status, 200);
    // No header, or garbage where the trusted proxy's entry should be: no address, denied.
    assert_denied(&gw.send(&Request::get("/")));
    assert_denied(&gw.send(&xff("10.0.0.1, not-an-ip")));
    assert_eq!(gw.metric("palisade_ip_filter_no_address"), Some(2.0));

    let two_hops = behind_proxies(
        &upstream,
        json!({"ips": ["10.0.0.0/8"], "ipSource": "xff", "trustedHops": 2}),
    );
    assert_eq!(
        two_hops.send(&xff("6.6.6.6, 10.1.1.1, 192.0.2.1")).status,
        200
    );
    assert_denied(&two_hops.send(&xff("10.1.1.1, 6.6.6.6, 192.0.2.1")));
    // Fewer entries than trusted hops: the request did not come through the proxies.
    assert_denied(&two_hops.send(&xff("10.1.1.1")));

    // An edge Envoy (`use_remote_address: true`) appends the peer itself: it counts as a hop.
    let edge = gateway(
        &upstream,
        json!({"ips": ["10.0.0.0/8"], "ipSource": "xff", "trustedHops": 2}),
    );
    assert_eq!(edge.send(&xff("6.6.6.6, 10.1.2.3")).status, 200);
    assert_denied(&edge.send(&xff("10.1.2.3, 6.6.6.6")));
    assert_eq!(upstream.hits(), 4);
}

#[test]
fn every_line_of_an_address_header_counts() {
    let upstream = Upstream::start();
    let lines = |first: &str, second: &str| {
        Request::get("/")
            .header("x-real-ip", first)
            .header("x-real-ip", second)
    };
    // The client writes its own line; the trusted proxy adds the real address after it.
    let allow = behind_proxies(
        &upstream,
        json!({"ips": ["10.0.0.0/8"], "ipSource": "header:x-real-ip"}),
    );
    let block = behind_proxies(
        &upstream,
        json!({"mode": "blocklist", "ips": ["203.0.113.0/24"], "ipSource": "header:x-real-ip"}),
    );
    for send in [Gateway::send, Gateway::send_h2] {
        assert_denied(&send(&allow, &lines("10.0.0.1", "203.0.113.9")));
        let ok = send(&allow, &lines("203.0.113.9", "10.1.2.3"));
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_denied(&send(&block, &lines("192.0.2.1", "203.0.113.9")));
        assert_eq!(send(&block, &lines("203.0.113.9", "192.0.2.1")).status, 200);
    }

    // X-Forwarded-For split over lines is one list: trusted hops count across the lines.
    let two_hops = behind_proxies(
        &upstream,
        json!({"ips": ["10.0.0.0/8"], "ipSource": "xff", "trustedHops": 2}),
    );
    let split = |first: &str, second: &str| {
        Request::get("/")
            .header("x-forwarded-for", first)
            .header("x-forwarded-for", second)
    };
    for send in [Gateway::send, Gateway::send_h2] {
        let ok = send(&two_hops, &split("6.6.6.6, 10.1.1.1", "192.0.2.1"));
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_denied(&send(&two_hops, &split("10.1.1.1, 6.6.6.6", "192.0.2.1")));
        let ok = send(&two_hops, &split("6.6.6.6", "10.1.1.1, 192.0.2.1"));
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_denied(&send(&two_hops, &split("10.1.1.1", "6.6.6.6, 192.0.2.1")));
    }
    assert_eq!(upstream.hits(), 8);
}

#[test]
fn ipv4_mapped_entries_match_ipv4_clients() {
    let upstream = Upstream::start();
    let allow = gateway(
        &upstream,
        json!({"ips": ["::ffff:127.0.0.2", "::ffff:127.0.1.0/120"]}),
    );
    for send in [Gateway::send, Gateway::send_h2] {
        assert_eq!(
            send(&allow, &Request::get("/").from("127.0.0.2")).status,
            200
        );
        assert_eq!(
            send(&allow, &Request::get("/").from("127.0.1.9")).status,
            200
        );
        assert_denied(&send(&allow, &Request::get("/").from("127.0.0.3")));
    }
    let block = gateway(
        &upstream,
        json!({"mode": "blocklist", "ips": ["::ffff:127.0.0.0/126"]}),
    );
    assert_denied(&block.send(&Request::get("/").from("127.0.0.3")));
    assert_eq!(block.send(&Request::get("/").from("127.0.0.4")).status, 200);
    assert_eq!(upstream.hits(), 5);
}

#[test]
fn peer_mode_is_not_fooled_by_forwarded_for_at_the_edge() {
    let upstream = Upstream::start();
    // Edge Envoy (`use_remote_address: true`, the harness default): a client-written
    // X-Forwarded-For does not change the peer address the policy sees.
    let gw = gateway(&upstream, json!({"ips": ["127.0.0.2"]}));
    let spoof = Request::get("/")
        .from("127.0.0.5")
        .header("x-forwarded-for", "127.0.0.2");
    assert_denied(&gw.send(&spoof));
    assert_eq!(gw.send(&Request::get("/").from("127.0.0.2")).status, 200);

    // Behind one trusted proxy, Envoy's own xff_num_trusted_hops feeds the peer address.
    let behind_proxy = GatewayBuilder::new()
        .upstream(&upstream)
        .hcm("xff_num_trusted_hops", json!(1))
        .wasm("ip-filter", json!({"ips": ["192.0.2.0/24"]}).to_string())
        .start();
    let via_proxy = |xff: &str| Request::get("/").header("x-forwarded-for", xff);
    assert_eq!(
        behind_proxy.send(&via_proxy("6.6.6.6, 192.0.2.10")).status,
        200
    );
    assert_denied(&behind_proxy.send(&via_proxy("192.0.2.10, 6.6.6.6")));
}

#[test]
fn invalid_configurations_are_refused_by_envoy_naming_the_field() {
    for (config, field) in [
        (json!({"ips": ["10.0.0.1", "10.0.0.256"]}), "`ips[1]`"),
        (json!({"ips": ["10.0.0.0/33"]}), "`ips[0]`"),
        (json!({"ips": ["::ffff:127.0.0.0/95"]}), "`ips[0]`"),
        (json!({"mode": "denylist", "ips": ["10.0.0.1"]}), "`mode`"),
        (
            json!({"ips": ["10.0.0.1"], "ipSource": "xff", "trustedHops": 0}),
            "`trustedHops`",
        ),
        (json!({"ips": ["10.0.0.1"], "ipSorce": "xff"}), "`ipSorce`"),
        (json!({}), "missing field `ips`"),
    ] {
        let log = GatewayBuilder::new()
            .wasm("ip-filter", config.to_string())
            .start_err();
        assert!(
            log.contains("ip-filter: invalid configuration") && log.contains(field),
            "expected a message naming {field} for {config}, got:\n{log}"
        );
    }
}

#[test]
fn a_policy_can_be_enabled_per_route() {
    // Envoy's wasm filter has no per-route configuration; the README's recipe is to declare the
    // filter `disabled: true` and enable it on the routes that need it.
    let upstream = Upstream::start();
    let disabled_filter = || {
        palisade_tests::Filter::Native(json!({
            "name": "palisade.ip-filter",
            "disabled": true,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "ip-filter",
                    "root_id": "ip-filter",
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": json!({"ips": ["127.0.0.2"]}).to_string(),
                    },
                    "vm_config": {
                        "vm_id": "palisade",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": palisade_tests::wasm("ip-filter")}},
                    },
                },
            },
        }))
    };
    let off = GatewayBuilder::new()
        .upstream(&upstream)
        .filter(disabled_filter())
        .start();
    assert_eq!(off.send(&Request::get("/").from("127.0.0.9")).status, 200);

    let on = GatewayBuilder::new()
        .upstream(&upstream)
        .filter(disabled_filter())
        .route_field(
            "typed_per_filter_config",
            json!({"palisade.ip-filter": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "config": {},
            }}),
        )
        .start();
    assert_denied(&on.send(&Request::get("/").from("127.0.0.9")));
    assert_eq!(on.send(&Request::get("/").from("127.0.0.2")).status, 200);
}
