use super::*;
use palisade_kit::identity::Identity;
use palisade_kit::quota::testing::{rate_headers, response_rate_headers as response};
use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
use std::rc::Rc;

fn limiter(envoy: &TestEnvoy, config: &str) -> TestPolicy<RateLimiter> {
    envoy.deploy::<RateLimiter>(config).unwrap()
}

fn from(envoy: &TestEnvoy, worker: usize, peer: &str) -> TestRequest {
    let mut req = envoy.request(worker);
    req.set_peer(&format!("{peer}:4000"));
    req
}

fn status(req: &TestRequest) -> u16 {
    req.response().map_or(200, |r| r.status)
}

const PER_IP_3: &str = r#"{"rateLimits": [{"maximumRequests": 3, "timePeriodInMilliseconds": 60000}],
    "keySelector": "ip", "exposeHeaders": true}"#;

#[test]
fn exact_across_workers_per_key() {
    let envoy = TestEnvoy::new(2);
    let rl = limiter(&envoy, PER_IP_3);
    let mut allowed = 0;
    for i in 0..10 {
        let mut req = from(&envoy, i % 2, "10.0.0.1");
        if rl.send(&mut req) == Verdict::Continue {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    // Another client has its own quota.
    let mut other = from(&envoy, 1, "10.0.0.2");
    assert_eq!(rl.send(&mut other), Verdict::Continue);
    assert_eq!(envoy.counter("palisade.rate_limiting.allowed"), 4);
    assert_eq!(envoy.counter("palisade.rate_limiting.rejected"), 7);
}

#[test]
fn exact_when_every_write_races_another_worker() {
    let envoy = TestEnvoy::new(2);
    let config = r#"{"id": "race", "maxKeys": 1,
        "rateLimits": [{"maximumRequests": 50, "timePeriodInMilliseconds": 60000}]}"#;
    let rl = Rc::new(limiter(&envoy, config));
    let rl2 = rl.clone();
    let other_allowed = Rc::new(std::cell::Cell::new(0));
    let seen = other_allowed.clone();
    // Between 30 of worker 0's reads and writes, worker 1 counts a request of its own.
    envoy.interfere_on_next_sets(30, "palisade:rl:race:0", move |_| {
        if rl2.send(&mut rl2.request(1)) == Verdict::Continue {
            seen.set(seen.get() + 1);
        }
    });
    let mut allowed = 0;
    for _ in 0..100 {
        if rl.send(&mut rl.request(0)) == Verdict::Continue {
            allowed += 1;
        }
    }
    assert!(other_allowed.get() > 0);
    assert_eq!(allowed + other_allowed.get(), 50);
}

#[test]
fn retry_after_and_headers() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(&envoy, PER_IP_3);
    let expected = [(2, 60_000), (1, 59_000), (0, 58_000)];
    for (remaining, reset) in expected {
        let mut req = from(&envoy, 0, "10.0.0.1");
        assert_eq!(rl.send(&mut req), Verdict::Continue);
        assert_eq!(
            response(&rl, &mut req, &[]),
            rate_headers(3, remaining, reset)
        );
        envoy.advance_ms(1000);
    }
    envoy.advance_ms(500);
    let mut req = from(&envoy, 0, "10.0.0.1");
    assert_eq!(rl.send(&mut req), Verdict::Respond);
    let resp = req.response().unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.json()["error"], "rate_limited");
    assert_eq!(resp.header("retry-after"), Some("57"));
    assert_eq!(resp.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(resp.header("x-ratelimit-reset"), Some("56500"));
    // The window boundary resets the count.
    envoy.advance_ms(56_500);
    let mut req = from(&envoy, 0, "10.0.0.1");
    assert_eq!(rl.send(&mut req), Verdict::Continue);
}

#[test]
fn retry_after_is_at_least_one_second_and_headers_are_optional() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(
        &envoy,
        r#"{"rateLimits": [{"maximumRequests": 1, "timePeriodInMilliseconds": 100}]}"#,
    );
    let mut req = envoy.request(0);
    assert_eq!(rl.send(&mut req), Verdict::Continue);
    assert_eq!(response(&rl, &mut req, &[]), []);
    let mut req = envoy.request(0);
    assert_eq!(rl.send(&mut req), Verdict::Respond);
    let resp = req.response().unwrap();
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.header("x-ratelimit-limit"), None);
}

#[test]
fn missing_keys_share_one_bucket_and_are_counted() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(
        &envoy,
        r#"{"rateLimits": [{"maximumRequests": 2, "timePeriodInMilliseconds": 1000}],
            "keySelector": "header:x-tenant"}"#,
    );
    let tenant = |t: Option<&str>| {
        let mut req = envoy.request(0);
        if let Some(t) = t {
            req.add_header("x-tenant", t);
        }
        status_of(&rl, req)
    };
    assert_eq!(tenant(None), 200);
    assert_eq!(tenant(None), 200);
    assert_eq!(tenant(None), 429);
    // A tenant literally named like the internal missing-key bucket has its own.
    assert_eq!(tenant(Some("-")), 200);
    assert_eq!(tenant(Some("a")), 200);
    assert_eq!(envoy.counter("palisade.rate_limiting.missing_key"), 3);
}

fn status_of(rl: &TestPolicy<RateLimiter>, mut req: TestRequest) -> u16 {
    rl.send(&mut req);
    rl.done(&mut req);
    status(&req)
}

#[test]
fn a_flood_of_addresses_stays_in_max_keys_admits_newcomers_and_keeps_limited_clients_limited() {
    let envoy = TestEnvoy::new(2);
    let rl = limiter(
        &envoy,
        r#"{"id": "flood", "maxKeys": 64, "keySelector": "ip",
            "rateLimits": [{"maximumRequests": 2, "timePeriodInMilliseconds": 60000}]}"#,
    );
    // One client at its limit, one halfway.
    assert_eq!(status_of(&rl, from(&envoy, 0, "192.0.2.1")), 200);
    assert_eq!(status_of(&rl, from(&envoy, 1, "192.0.2.1")), 200);
    assert_eq!(status_of(&rl, from(&envoy, 0, "192.0.2.1")), 429);
    assert_eq!(status_of(&rl, from(&envoy, 0, "192.0.2.2")), 200);
    // A flood of one-off addresses, each far from its limit: none is turned away.
    for i in 0..20_000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        assert_eq!(
            status_of(&rl, from(&envoy, (i % 2) as usize, &ip)),
            200,
            "{ip}"
        );
    }
    assert_eq!(envoy.counter("palisade.rate_limiting.key_table_full"), 0);
    let evicted = envoy.counter("palisade.rate_limiting.key_evicted");
    assert!(evicted >= 20_000 - 64, "{evicted}");
    assert!(envoy.shared_keys_with_prefix("palisade:rl:flood:") <= 64);
    // The client at its limit is still limited: the flood did not reset it.
    assert_eq!(status_of(&rl, from(&envoy, 1, "192.0.2.1")), 429);
    // The halfway client may have been evicted (then it starts afresh): never fewer requests.
    assert_eq!(status_of(&rl, from(&envoy, 1, "192.0.2.2")), 200);
    // A newcomer gets in.
    assert_eq!(status_of(&rl, from(&envoy, 0, "203.0.113.5")), 200);
    // When the window ends, the limited client gets its next one.
    envoy.advance_ms(60_000);
    assert_eq!(status_of(&rl, from(&envoy, 0, "192.0.2.1")), 200);
}

#[test]
fn a_newcomer_whose_every_slot_holds_a_limited_client_waits_for_the_first() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(
        &envoy,
        r#"{"id": "tiny", "maxKeys": 1, "keySelector": "header:x-client", "exposeHeaders": true,
            "rateLimits": [{"maximumRequests": 1, "timePeriodInMilliseconds": 60000}]}"#,
    );
    let client = |name: &str| {
        let mut req = envoy.request(0);
        req.add_header("x-client", name);
        rl.send(&mut req);
        rl.done(&mut req);
        req.response()
    };
    assert!(client("a").is_none());
    envoy.advance_ms(20_000);
    // "a" is at its limit in the only slot: "b" is refused until "a"'s window ends.
    let resp = client("b").unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("40"));
    assert_eq!(resp.header("x-ratelimit-reset"), Some("40000"));
    assert_eq!(envoy.counter("palisade.rate_limiting.key_table_full"), 1);
    assert_eq!(client("a").unwrap().status, 429);
    envoy.advance_ms(40_000);
    assert!(client("b").is_none());
}

fn client(envoy: &TestEnvoy, id: Option<&str>, tier: Option<&str>) -> TestRequest {
    let mut req = envoy.request(0);
    if id.is_some() || tier.is_some() {
        Identity {
            authenticated_by: "client-id-enforcement".into(),
            client_id: id.map(str::to_owned),
            tier: tier.map(str::to_owned),
            ..Default::default()
        }
        .publish(&mut req)
        .unwrap();
    }
    req
}

#[test]
fn sla_tiers_give_each_client_its_tier_limits() {
    let envoy = TestEnvoy::new(2);
    let rl = limiter(
        &envoy,
        r#"{"tiers": {
              "gold": [{"maximumRequests": 5, "timePeriodInMilliseconds": 60000}],
              "silver": [{"maximumRequests": 2, "timePeriodInMilliseconds": 60000}]},
            "exposeHeaders": true}"#,
    );
    let count = |id: &str, tier: &str| {
        (0..10)
            .filter(|_| status_of(&rl, client(&envoy, Some(id), Some(tier))) == 200)
            .count()
    };
    assert_eq!(count("app-gold", "gold"), 5);
    assert_eq!(count("app-silver", "silver"), 2);
    assert_eq!(count("app-silver-2", "silver"), 2);

    let mut req = client(&envoy, None, None);
    assert_eq!(rl.send(&mut req), Verdict::Respond);
    assert_eq!(req.response().unwrap().status, 401);
    assert_eq!(
        req.response().unwrap().json()["error"],
        "client_unidentified"
    );
    let mut req = client(&envoy, Some("app"), Some("bronze"));
    rl.send(&mut req);
    assert_eq!(req.response().unwrap().status, 403);
    assert_eq!(req.response().unwrap().json()["error"], "sla_tier_unknown");
    let mut req = client(&envoy, Some("app"), None);
    rl.send(&mut req);
    assert_eq!(req.response().unwrap().status, 403);
    assert_eq!(envoy.counter("palisade.rate_limiting.unauthenticated"), 1);
    assert_eq!(envoy.counter("palisade.rate_limiting.unknown_tier"), 2);
}

#[test]
fn store_failures_block_by_default_or_pass_when_configured() {
    for (config, expected) in [
        (
            r#"{"id": "s", "maxKeys": 1, "rateLimits": [{"maximumRequests": 9, "timePeriodInMilliseconds": 60000}]}"#,
            503,
        ),
        (
            r#"{"id": "s", "maxKeys": 1, "blockOnUnknownQuota": false, "rateLimits": [{"maximumRequests": 9, "timePeriodInMilliseconds": 60000}]}"#,
            200,
        ),
    ] {
        let envoy = TestEnvoy::new(2);
        let rl = limiter(&envoy, config);
        assert_eq!(status_of(&rl, envoy.request(0)), 200);
        // Endless contention: another worker rewrites the slot before every write.
        envoy.interfere_on_next_sets(u32::MAX, "palisade:rl:s:0", |host| {
            let (value, _) = host.shared_get("palisade:rl:s:0").unwrap();
            host.shared_set("palisade:rl:s:0", &value.unwrap(), None)
                .unwrap();
        });
        assert_eq!(status_of(&rl, envoy.request(0)), expected);
        assert_eq!(envoy.counter("palisade.rate_limiting.store_error"), 1);
    }
}

#[test]
fn readme_examples_compile() {
    for json in [
        r#"{"rateLimits": [{"maximumRequests": 100, "timePeriodInMilliseconds": 1000},
                {"maximumRequests": 1000, "timePeriodInMilliseconds": 60000}],
 "keySelector": "ip", "exposeHeaders": true, "algorithm": "fixedWindow", "maxKeys": 100000}"#,
        r#"{"id": "orders", "keySelector": "ip", "exposeHeaders": true,
 "rateLimits": [{"maximumRequests": 100, "timePeriodInMilliseconds": 1000},
                {"maximumRequests": 1000, "timePeriodInMilliseconds": 60000}]}"#,
        r#"{"tiers": {"gold":   [{"maximumRequests": 100, "timePeriodInMilliseconds": 1000}],
           "silver": [{"maximumRequests": 10,  "timePeriodInMilliseconds": 1000},
                      {"maximumRequests": 1000, "timePeriodInMilliseconds": 86400000}]},
 "exposeHeaders": true}"#,
    ] {
        config::Config::compile(json.as_bytes()).unwrap();
    }
}

/// A small deterministic generator (xorshift) for garbage inputs.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn garbage_in_a_slot_is_treated_as_free_and_never_panics() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(
        &envoy,
        r#"{"id": "g", "maxKeys": 1, "algorithm": "slidingWindow",
            "rateLimits": [{"maximumRequests": 2, "timePeriodInMilliseconds": 1000}]}"#,
    );
    for seed in 0..500u64 {
        let bytes = garbage(seed, (seed % 80) as usize);
        let _ = window::decode(&bytes);
        envoy
            .request(0)
            .shared_set("palisade:rl:g:0", &bytes, None)
            .unwrap();
        let mut req = envoy.request(0);
        // Whatever the slot holds, the request gets an answer, and it is never a 5xx.
        rl.send(&mut req);
        assert!(status(&req) < 500, "seed {seed}");
    }
}

#[test]
fn a_denial_override_keeps_retry_after() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(
        &envoy,
        r#"{"rateLimits": [{"maximumRequests": 1, "timePeriodInMilliseconds": 5000}],
            "denial": {"status": 503, "body": "slow down", "contentType": "text/plain"}}"#,
    );
    assert_eq!(status_of(&rl, envoy.request(0)), 200);
    let mut req = envoy.request(0);
    rl.send(&mut req);
    let resp = req.response().unwrap();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (503, &b"slow down"[..])
    );
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("retry-after"), Some("5"));
}

#[test]
fn allowed_responses_get_their_own_headers_in_the_response_phase() {
    let envoy = TestEnvoy::new(2);
    let rl = limiter(&envoy, PER_IP_3);
    // Two requests of one client in flight at once, on both workers; their responses come back
    // in the other order, each with its own numbers, replacing what the upstream sent.
    let mut first = from(&envoy, 0, "10.0.0.1");
    let mut second = from(&envoy, 1, "10.0.0.1");
    assert_eq!(rl.send(&mut first), Verdict::Continue);
    envoy.advance_ms(1000);
    assert_eq!(rl.send(&mut second), Verdict::Continue);
    assert_eq!(
        response(&rl, &mut second, &[("x-ratelimit-limit", "999")]),
        rate_headers(3, 1, 59_000)
    );
    assert_eq!(response(&rl, &mut first, &[]), rate_headers(3, 2, 60_000));

    // A rejected request's 429 carries the headers itself; its response phase adds nothing.
    let mut third = from(&envoy, 0, "10.0.0.1");
    assert_eq!(rl.send(&mut third), Verdict::Continue);
    let mut rejected = from(&envoy, 1, "10.0.0.1");
    assert_eq!(rl.send(&mut rejected), Verdict::Respond);
    let resp = rejected.response().unwrap();
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(response(&rl, &mut rejected, &[]), []);
    assert_eq!(response(&rl, &mut third, &[]), rate_headers(3, 0, 59_000));
    assert_eq!(rl.paused(0) + rl.paused(1), 0);

    // Without exposeHeaders, the upstream's own headers pass untouched.
    let quiet = limiter(
        &envoy,
        r#"{"id": "quiet", "rateLimits": [{"maximumRequests": 3, "timePeriodInMilliseconds": 60000}]}"#,
    );
    let mut req = from(&envoy, 0, "10.0.0.1");
    assert_eq!(quiet.send(&mut req), Verdict::Continue);
    assert_eq!(
        response(&quiet, &mut req, &[("x-ratelimit-limit", "7")]),
        [("x-ratelimit-limit".to_owned(), "7".to_owned())]
    );
}

#[test]
fn a_refused_configuration_names_the_field() {
    let envoy = TestEnvoy::new(1);
    let err = envoy
        .deploy::<RateLimiter>(
            r#"{"rateLimits": [{"maximumRequests": 0, "timePeriodInMilliseconds": 1000}]}"#,
        )
        .unwrap_err();
    assert!(
        err.starts_with("rate-limiting: invalid configuration at `rateLimits[0]"),
        "{err}"
    );
}

/// Host calls per request (both phases), pinned so a regression shows; prints the rows of
/// `BENCHMARKS.md` ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    let envoy = TestEnvoy::new(1);
    let rl = limiter(&envoy, PER_IP_3);
    let through = |expected: Verdict| {
        let mut req = from(&envoy, 0, "10.0.0.1");
        assert_eq!(rl.send(&mut req), expected);
        assert_eq!(rl.response_headers(&mut req, true), Verdict::Continue);
        req.host_calls()
    };
    let first = through(Verdict::Continue);
    let allowed = through(Verdict::Continue);
    through(Verdict::Continue);
    let denied = through(Verdict::Respond);
    println!(
        "{}",
        first.markdown_row("rate-limiting", "allowed (new key)")
    );
    println!("{}", allowed.markdown_row("rate-limiting", "allowed"));
    println!(
        "{}",
        denied.markdown_row("rate-limiting", "denied (over the limit)")
    );
    assert!(allowed.total() <= 7, "{allowed:?}");
}
