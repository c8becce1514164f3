//! `spike-control` in a real Envoy with 2 workers: requests over the limit are held and retried
//! from the worker's timer, the queue bound holds across workers, a disconnected client frees
//! its place, HTTP/2 streams are held and resumed, and invalid configurations are refused.
//! Timings are asserted with generous bounds.

use palisade_tests::quota::{
    as_client, assert_rate_limited, assert_refused, behind_client_tiers, flood_of_new_clients,
    retry_after,
};
use palisade_tests::{http1, Gateway, Request, Response, Upstream};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A gateway that closes connections as soon as a local reply is written (see
/// `palisade_tests::quota::builder`: the harness's HTTP/1.1 client reads to the end of the
/// connection).
fn gateway(upstream: &Upstream, config: serde_json::Value) -> Gateway {
    palisade_tests::quota::gateway(upstream, "spike-control", config)
}

fn timed(f: impl FnOnce() -> Response) -> (Response, Duration) {
    let start = Instant::now();
    let resp = f();
    (resp, start.elapsed())
}

fn assert_limited(resp: &Response) {
    assert_rate_limited(resp);
    assert!(retry_after(resp) >= 1);
}

#[test]
fn held_requests_succeed_when_quota_frees_and_the_queue_is_bounded() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maximumRequests": 2, "timePeriodInMilliseconds": 1000,
               "delayTimeInMillis": 500, "delayAttempts": 1, "queuingLimit": 5}),
    );
    let addr = gw.addr();
    let start = Instant::now();
    assert_eq!(gw.send(&Request::get("/1")).status, 200);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gw.send(&Request::get("/2")).status, 200);
    // Five more at once: all wait (the queue holds five, across both workers).
    let held: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || timed(|| http1(addr, &Request::get(&format!("/h{i}")))))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // One beyond the queue: rejected at once.
    let (beyond, took) = timed(|| gw.send(&Request::get("/beyond")));
    assert_limited(&beyond);
    assert!(took < Duration::from_millis(300), "{took:?}");
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "the machine is too slow for this timing test: {:?}",
        start.elapsed()
    );

    let results: Vec<(Response, Duration)> = held.into_iter().map(|t| t.join().unwrap()).collect();
    // After about 500 ms the first request (at 0 ms) has left the window: exactly one of the
    // five fits; the others have used their one attempt and are rejected after waiting.
    let passed: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
    assert_eq!(
        passed.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.0.status).collect::<Vec<_>>()
    );
    for (resp, took) in &results {
        assert!(
            *took >= Duration::from_millis(400) && *took < Duration::from_millis(1500),
            "held for {took:?}"
        );
        if resp.status != 200 {
            assert_limited(resp);
        }
    }
    assert_eq!(upstream.hits(), 3);
    assert_eq!(gw.metric("palisade_spike_control_allowed"), Some(2.0));
    assert_eq!(gw.metric("palisade_spike_control_delayed"), Some(5.0));
    assert_eq!(gw.metric("palisade_spike_control_queue_full"), Some(1.0));
    assert_eq!(
        gw.metric("palisade_spike_control_allowed_after_delay"),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("palisade_spike_control_rejected_after_delay"),
        Some(4.0)
    );
}

#[test]
fn a_client_that_disconnects_while_held_frees_its_place() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maximumRequests": 1, "timePeriodInMilliseconds": 10000,
               "delayTimeInMillis": 1000, "delayAttempts": 1, "queuingLimit": 1}),
    );
    assert_eq!(gw.send(&Request::get("/")).status, 200);
    // A client is held, then gives up.
    let mut quitter = TcpStream::connect(gw.addr()).unwrap();
    quitter
        .write_all(b"GET /quit HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(quitter);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        gw.metric("palisade_spike_control_client_gone"),
        Some(1.0),
        "the held request was not cleaned up"
    );
    // Its place is free: the next request waits (and is rejected after its attempt) ...
    let addr = gw.addr();
    let next = std::thread::spawn(move || timed(|| http1(addr, &Request::get("/next"))));
    std::thread::sleep(Duration::from_millis(200));
    // ... and fills the queue again.
    let (full, took) = timed(|| gw.send(&Request::get("/full")));
    assert_limited(&full);
    assert!(took < Duration::from_millis(500), "{took:?}");
    let (next, took) = next.join().unwrap();
    assert_limited(&next);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn http2_streams_are_held_and_resumed_with_headers() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maximumRequests": 1, "timePeriodInMilliseconds": 700,
               "delayTimeInMillis": 800, "delayAttempts": 2, "queuingLimit": 2,
               "exposeHeaders": true}),
    );
    let first = gw.send_h2(&Request::get("/first"));
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("0"));
    let (held, took) = timed(|| gw.send_h2(&Request::new("POST", "/held").body("payload")));
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(held.json()["path"], "/held");
    assert_eq!(held.json()["body"], "payload");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1600),
        "{took:?}"
    );
    assert_eq!(held.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(held.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = held.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=700).contains(&reset), "{reset}");
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn without_a_queue_requests_over_the_limit_are_rejected_at_once() {
    let upstream = Upstream::start();
    // Flex's defaults: 1 request per second, no queue.
    let gw = gateway(&upstream, json!({"keySelector": "ip"}));
    assert_eq!(gw.send(&Request::get("/").from("127.0.0.2")).status, 200);
    let (resp, took) = timed(|| gw.send(&Request::get("/").from("127.0.0.2")));
    assert_limited(&resp);
    assert!(took < Duration::from_millis(500));
    assert_eq!(resp.header("retry-after"), Some("1"));
    // Another client has its own window.
    assert_eq!(gw.send(&Request::get("/").from("127.0.0.3")).status, 200);
}

#[test]
fn a_flood_of_new_keys_admits_newcomers_and_a_limited_client_stays_limited() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maximumRequests": 2, "timePeriodInMilliseconds": 60000,
               "keySelector": "header:x-client", "maxKeys": 8}),
    );
    for _ in 0..2 {
        assert_eq!(gw.send(&as_client("limited")).status, 200);
    }
    assert_limited(&gw.send(&as_client("limited")));
    assert_eq!(flood_of_new_clients(&gw, 200), 0);
    assert_limited(&gw.send_h2(&as_client("limited")));
    assert_eq!(gw.send(&as_client("newcomer")).status, 200);
    assert_eq!(upstream.hits(), 2 + 200 + 1);
}

#[test]
fn invalid_configurations_are_refused_by_envoy_naming_the_field() {
    assert_refused(
        "spike-control",
        [
            (json!({"maximumRequests": 0}), "`maximumRequests`"),
            (json!({"delayTimeInMillis": 0}), "`delayTimeInMillis`"),
            (json!({"queuingLimit": -1}), "`queuingLimit`"),
            (json!({"keySelector": "body"}), "`keySelector`"),
            (json!({"queueLimit": 3}), "`queueLimit`"),
        ],
    );
}

#[test]
fn sla_tiers_from_client_id_enforcement() {
    let upstream = Upstream::start();
    let gw = behind_client_tiers(
        &upstream,
        &[("gold-app", "gold"), ("silver-app", "silver")],
        "spike-control",
        json!({"tiers": {
                  "gold": {"maximumRequests": 3, "timePeriodInMilliseconds": 60000},
                  "silver": {"maximumRequests": 1, "timePeriodInMilliseconds": 60000}}}),
    );
    let allowed = |client: &str| {
        (0..4)
            .filter(|_| {
                gw.send(&Request::get("/").header("client_id", client))
                    .status
                    == 200
            })
            .count()
    };
    assert_eq!(allowed("gold-app"), 3);
    assert_eq!(allowed("silver-app"), 1);
    assert_eq!(upstream.hits(), 4);
}

#[test]
fn the_sliding_limit_is_exact_under_32_concurrent_connections() {
    let upstream = Upstream::start();
    let gw = gateway(
        &upstream,
        json!({"maximumRequests": 50, "timePeriodInMilliseconds": 60000}),
    );
    let addr = gw.addr();
    let threads: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| http1(addr, &Request::get("/")).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 270);
    assert_eq!(upstream.hits(), 50);
    assert_eq!(gw.metric("palisade_spike_control_rejected"), Some(270.0));
}
