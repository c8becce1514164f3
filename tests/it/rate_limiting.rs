//! `rate-limiting` in a real Envoy with 2 workers: exact counts under concurrent connections,
//! window boundaries, combined limits, `Retry-After` and `X-Ratelimit-*` over HTTP/1.1 and
//! HTTP/2, per-client keys, bounded key space (a flood of new keys neither locks newcomers out
//! nor resets a limited client), instance separation, refused configurations.

use palisade_tests::quota::{
    as_client, assert_rate_limited, assert_refused, behind_client_tiers, builder,
    flood_of_new_clients, num, retry_after,
};
use palisade_tests::{Gateway, Request, Response, Upstream};
use serde_json::json;
use std::time::{Duration, Instant};

fn gateway(upstream: &Upstream, config: serde_json::Value) -> Gateway {
    palisade_tests::quota::gateway(upstream, "rate-limiting", config)
}

fn assert_limited(resp: &Response) {
    assert_rate_limited(resp);
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

#[test]
fn exactly_the_limit_passes_under_32_concurrent_connections_on_2_workers() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"rateLimits": [{"maximumRequests": 1000, "timePeriodInMilliseconds": 60000}]}),
    );
    let addr = gw.addr();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            std::thread::spawn(move || {
                // 1,500 requests in all, each on its own connection, so both workers serve.
                let n = 1500 / 32 + usize::from(t < 1500 % 32);
                let mut counts = (0u32, 0u32);
                for _ in 0..n {
                    match palisade_tests::http1(addr, &Request::get("/")).status {
                        200 => counts.0 += 1,
                        429 => counts.1 += 1,
                        other => panic!("unexpected status {other}"),
                    }
                }
                counts
            })
        })
        .collect();
    let (ok, limited) = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!((ok, limited), (1000, 500));
    assert_eq!(upstream.hits(), 1000);
    assert_eq!(gw.metric("palisade_rate_limiting_allowed"), Some(1000.0));
    assert_eq!(gw.metric("palisade_rate_limiting_rejected"), Some(500.0));
    // Both workers really took part.
    let stats = gw.admin_get("/stats?filter=worker_.*downstream_cx_total");
    let busy = stats
        .lines()
        .filter(|l| l.rsplit_once(": ").and_then(|(_, v)| v.parse::<u64>().ok()) > Some(0))
        .count();
    assert_eq!(busy, 2, "{stats}");
}

#[test]
fn headers_retry_after_and_window_boundary_over_http1_and_http2() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"rateLimits": [{"maximumRequests": 2, "timePeriodInMilliseconds": 2000}],
               "exposeHeaders": true}),
    );
    let started = Instant::now();
    let first = gw.send(&Request::get("/a"));
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["path"], "/a");
    assert_eq!(num(&first, "x-ratelimit-limit"), 2);
    assert_eq!(num(&first, "x-ratelimit-remaining"), 1);
    let reset = num(&first, "x-ratelimit-reset");
    assert!((1..=2000).contains(&reset), "{reset}");
    assert!(first.header("retry-after").is_none());

    let second = gw.send_h2(&Request::get("/b"));
    assert_eq!(second.status, 200);
    assert_eq!(num(&second, "x-ratelimit-remaining"), 0);

    for send in [Gateway::send, Gateway::send_h2] {
        let third = send(&gw, &Request::get("/c"));
        assert_limited(&third);
        let wait = retry_after(&third);
        assert!((1..=2).contains(&wait), "Retry-After {wait}");
        assert_eq!(num(&third, "x-ratelimit-limit"), 2);
        assert_eq!(num(&third, "x-ratelimit-remaining"), 0);
        let reset = num(&third, "x-ratelimit-reset");
        assert!((1..=2000).contains(&reset), "{reset}");
    }
    assert_eq!(upstream.hits(), 2);

    // After the window: a fresh one.
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(elapsed));
    let again = gw.send_h2(&Request::get("/d"));
    assert_eq!(again.status, 200);
    assert_eq!(num(&again, "x-ratelimit-remaining"), 1);
    assert_eq!(upstream.hits(), 3);
}

#[test]
fn two_limits_combined_each_must_have_quota() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"rateLimits": [
                  {"maximumRequests": 3, "timePeriodInMilliseconds": 1000},
                  {"maximumRequests": 5, "timePeriodInMilliseconds": 60000}],
               "exposeHeaders": true}),
    );
    let statuses = |n| {
        (0..n)
            .map(|_| gw.send(&Request::get("/")).status)
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(4), vec![200, 200, 200, 429]);
    std::thread::sleep(Duration::from_millis(1100));
    // The second has quota again, but the minute has only 2 left.
    let ok = gw.send(&Request::get("/"));
    assert_eq!(ok.status, 200);
    assert_eq!(num(&ok, "x-ratelimit-limit"), 5);
    assert_eq!(num(&ok, "x-ratelimit-remaining"), 1);
    assert_eq!(statuses(1), vec![200]);
    let limited = gw.send(&Request::get("/"));
    assert_limited(&limited);
    // Rejected by the minute: Retry-After points at its end, not at the next second.
    let wait = retry_after(&limited);
    assert!((55..=59).contains(&wait), "Retry-After {wait}");
    assert_eq!(num(&limited, "x-ratelimit-limit"), 5);
    assert_eq!(upstream.hits(), 5);
}

#[test]
fn each_client_address_has_its_own_quota_and_missing_keys_are_counted() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"rateLimits": [{"maximumRequests": 2, "timePeriodInMilliseconds": 60000}],
               "keySelector": "ip", "algorithm": "slidingWindow"}),
    );
    for ip in ["127.0.0.2", "127.0.0.3"] {
        for expected in [200, 200, 429] {
            assert_eq!(
                gw.send(&Request::get("/").from(ip)).status,
                expected,
                "{ip}"
            );
        }
    }
    assert_eq!(upstream.hits(), 4);

    let by_header = gateway(
        &upstream,
        json!({"rateLimits": [{"maximumRequests": 1, "timePeriodInMilliseconds": 60000}],
               "keySelector": "header:x-tenant"}),
    );
    let tenant = |t: Option<&str>| {
        let mut req = Request::get("/");
        if let Some(t) = t {
            req = req.header("x-tenant", t);
        }
        by_header.send_h2(&req).status
    };
    assert_eq!(tenant(Some("a")), 200);
    assert_eq!(tenant(Some("a")), 429);
    assert_eq!(tenant(Some("b")), 200);
    // No header: one shared bucket.
    assert_eq!(tenant(None), 200);
    assert_eq!(tenant(None), 429);
    assert_eq!(
        by_header.metric("palisade_rate_limiting_missing_key"),
        Some(2.0)
    );
}

#[test]
fn many_distinct_clients_stay_within_max_keys() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"rateLimits": [{"maximumRequests": 1, "timePeriodInMilliseconds": 60000}],
               "keySelector": "ip", "maxKeys": 8}),
    );
    // A tracked client.
    assert_eq!(gw.send(&Request::get("/").from("127.0.9.9")).status, 200);
    let mut table_full = 0;
    for i in 0..200 {
        let resp = gw.send(&Request::get("/").from(&format!("127.1.{}.{}", i / 200, i % 200 + 1)));
        match resp.status {
            200 => {}
            429 => {
                assert!(retry_after(&resp) >= 1);
                table_full += 1;
            }
            other => panic!("{other}"),
        }
    }
    // With a limit of 1, each of these clients is at its limit after its one request, and a
    // key at its limit is never evicted: at most 8 are tracked at once (the tracked one
    // included), the others are turned away instead of sharing or resetting anyone's window.
    assert!(table_full >= 200 - 7, "{table_full}");
    assert_eq!(
        gw.metric("palisade_rate_limiting_key_table_full"),
        Some(table_full as f64)
    );
    assert_eq!(gw.send(&Request::get("/").from("127.0.9.9")).status, 429);
    assert_eq!(gw.metric("palisade_rate_limiting_rejected"), Some(1.0));
}

#[test]
fn a_flood_of_new_keys_admits_newcomers_and_a_limited_client_stays_limited() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"rateLimits": [{"maximumRequests": 3, "timePeriodInMilliseconds": 60000}],
               "keySelector": "header:x-client", "maxKeys": 8}),
    );
    for _ in 0..3 {
        assert_eq!(gw.send(&as_client("limited")).status, 200);
    }
    assert_limited(&gw.send(&as_client("limited")));
    // 300 one-off clients through 8 slots: each far from its limit, none is turned away.
    assert_eq!(flood_of_new_clients(&gw, 300), 0);
    assert_eq!(
        gw.metric("palisade_rate_limiting_key_table_full")
            .unwrap_or(0.0),
        0.0
    );
    let evicted = gw
        .metric("palisade_rate_limiting_key_evicted")
        .unwrap_or(0.0);
    assert!(evicted >= (300 - 8) as f64, "{evicted}");
    // The client at its limit was not reset by the flood, over either protocol...
    assert_limited(&gw.send(&as_client("limited")));
    assert_limited(&gw.send_h2(&as_client("limited")));
    // ... and a newcomer gets in.
    assert_eq!(gw.send_h2(&as_client("newcomer")).status, 200);
    assert_eq!(upstream.hits(), 3 + 300 + 1);
}

#[test]
fn two_instances_in_one_envoy_keep_separate_counters() {
    let upstream = Upstream::start();
    let gw = builder()
        .upstream(&upstream)
        .wasm(
            "rate-limiting",
            json!({"rateLimits": [{"maximumRequests": 5, "timePeriodInMilliseconds": 60000}]})
                .to_string(),
        )
        .wasm(
            "rate-limiting",
            json!({"rateLimits": [{"maximumRequests": 3, "timePeriodInMilliseconds": 60000}]})
                .to_string(),
        )
        .start();
    let statuses: Vec<u16> = (0..4).map(|_| gw.send(&Request::get("/")).status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429]);
}

#[test]
fn invalid_configurations_are_refused_by_envoy_naming_the_field() {
    let one = json!([{"maximumRequests": 1, "timePeriodInMilliseconds": 1000}]);
    assert_refused(
        "rate-limiting",
        [
            (json!({}), "`rateLimits`"),
            (
                json!({"rateLimits": [{"maximumRequests": 0, "timePeriodInMilliseconds": 1000}]}),
                "`rateLimits[0].maximumRequests`",
            ),
            (
                json!({"rateLimits": one, "keySelector": "body"}),
                "`keySelector`",
            ),
            (
                json!({"rateLimits": one, "algorithm": "tokenBucket"}),
                "`algorithm`",
            ),
            (json!({"rateLimits": one, "maxKeys": 0}), "`maxKeys`"),
            (
                json!({"rateLimits": one, "tiers": {"gold": one}}),
                "`tiers`",
            ),
            (
                json!({"rateLimits": one, "exposeHeader": true}),
                "`exposeHeader`",
            ),
        ],
    );
}

#[test]
fn sla_tiers_from_client_id_enforcement_give_gold_and_silver_their_own_limits() {
    let upstream = Upstream::start();
    let gw = behind_client_tiers(
        &upstream,
        &[
            ("gold-app", "gold"),
            ("silver-app", "silver"),
            ("bronze-app", "bronze"),
        ],
        "rate-limiting",
        json!({"tiers": {
                  "gold": [{"maximumRequests": 4, "timePeriodInMilliseconds": 60000}],
                  "silver": [{"maximumRequests": 2, "timePeriodInMilliseconds": 60000}]},
               "exposeHeaders": true}),
    );
    let call = |client: &str| gw.send(&Request::get("/").header("client_id", client));
    let allowed = |client: &str| (0..6).filter(|_| call(client).status == 200).count();
    assert_eq!(allowed("gold-app"), 4);
    assert_eq!(allowed("silver-app"), 2);
    let limited = call("silver-app");
    assert_limited(&limited);
    assert_eq!(num(&limited, "x-ratelimit-limit"), 2);
    // A client whose tier has no limits here is refused, not let through unlimited.
    let bronze = call("bronze-app");
    assert_eq!(bronze.status, 403);
    assert_eq!(bronze.json()["error"], "sla_tier_unknown");
    assert_eq!(upstream.hits(), 6);
    assert_eq!(gw.metric("palisade_rate_limiting_unknown_tier"), Some(1.0));

    // Without client-id enforcement in front, SLA mode cannot know the client: 401.
    let alone = gateway(
        &upstream,
        json!({"tiers": {"gold": [{"maximumRequests": 4, "timePeriodInMilliseconds": 60000}]}}),
    );
    let resp = alone.send(&Request::get("/").header("client_id", "gold-app"));
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "client_unidentified");
}
