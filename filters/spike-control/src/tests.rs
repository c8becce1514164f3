use super::*;
use palisade_kit::identity::Identity;
use palisade_kit::quota::testing::{rate_headers, response_rate_headers};
use palisade_kit::testing::{TestEnvoy, TestPolicy, TestRequest};
use palisade_kit::Direction;

fn spike(envoy: &TestEnvoy, config: &str) -> TestPolicy<SpikeControl> {
    envoy.deploy::<SpikeControl>(config).unwrap()
}

/// What became of a request so far.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Let through (at once, or resumed after being held).
    Passed,
    /// Held.
    Waiting,
    /// Answered locally.
    Status(u16),
}

fn fate_of(req: &TestRequest) -> Fate {
    match req.response() {
        Some(resp) => {
            assert!(resp.header("retry-after").is_some() || resp.status != 429);
            Fate::Status(resp.status)
        }
        None if req.resumed(Direction::Request) > 0 => Fate::Passed,
        None => Fate::Waiting,
    }
}

/// Sends a new request on `worker`; returns it and what became of it at once.
fn send(sc: &TestPolicy<SpikeControl>, worker: usize) -> (TestRequest, Fate) {
    let mut req = sc.request(worker);
    let verdict = sc.send(&mut req);
    let fate = match verdict {
        Verdict::Continue => Fate::Passed,
        Verdict::Pause => Fate::Waiting,
        Verdict::Respond => fate_of(&req),
    };
    assert_eq!(
        fate == Fate::Waiting,
        req.response().is_none() && verdict == Verdict::Pause
    );
    (req, fate)
}

const FLEX_EXAMPLE: &str = r#"{"maximumRequests": 2, "timePeriodInMilliseconds": 1000,
    "delayTimeInMillis": 500, "delayAttempts": 1, "queuingLimit": 5, "exposeHeaders": true}"#;

#[test]
fn flex_worked_example() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(&envoy, FLEX_EXAMPLE);
    let (_r1, fate1) = send(&sc, 0);
    assert_eq!(fate1, Fate::Passed);
    sc.tick(600);
    assert_eq!(send(&sc, 0).1, Fate::Passed);
    sc.tick(50);
    let (mut r3, fate3) = send(&sc, 0);
    assert_eq!(fate3, Fate::Waiting);
    sc.tick(50);
    let (r4, fate4) = send(&sc, 0);
    assert_eq!(fate4, Fate::Waiting);
    assert_eq!(sc.paused(0), 2);
    // Nothing is due before its delay.
    sc.tick(449);
    assert_eq!((fate_of(&r3), fate_of(&r4)), (Fate::Waiting, Fate::Waiting));
    // #3 is retried at 1150: #1 (at 0) has left the window.
    sc.tick(1);
    assert_eq!((fate_of(&r3), fate_of(&r4)), (Fate::Passed, Fate::Waiting));
    assert_eq!(r3.resumed(Direction::Request), 1);
    // Flex: reset is the time until the oldest request (#2, at 600) leaves: 1600 - 1150.
    assert_eq!(
        response_rate_headers(&sc, &mut r3, &[]),
        rate_headers(2, 0, 450)
    );
    // #4 at 1200: #2 and #3 are in the window; no attempts left: 429.
    sc.tick(50);
    assert_eq!(fate_of(&r4), Fate::Status(429));
    assert_eq!(r4.resumed(Direction::Request), 0);
    assert_eq!(sc.paused(0), 0);
    assert_eq!(envoy.counter("palisade.spike_control.allowed"), 2);
    assert_eq!(envoy.counter("palisade.spike_control.delayed"), 2);
    assert_eq!(
        envoy.counter("palisade.spike_control.allowed_after_delay"),
        1
    );
    assert_eq!(
        envoy.counter("palisade.spike_control.rejected_after_delay"),
        1
    );
}

#[test]
fn the_queue_is_bounded_per_key_across_workers_and_frees_places() {
    let envoy = TestEnvoy::new(2);
    let sc = spike(&envoy, FLEX_EXAMPLE);
    assert_eq!(send(&sc, 0).1, Fate::Passed);
    assert_eq!(send(&sc, 1).1, Fate::Passed);
    let mut held = Vec::new();
    for id in 3..8 {
        let (req, fate) = send(&sc, id % 2);
        assert_eq!(fate, Fate::Waiting, "{id}");
        held.push(req);
    }
    assert_eq!((sc.paused(0), sc.paused(1)), (2, 3));
    // Five wait (on both workers together): the sixth is rejected at once.
    assert_eq!(send(&sc, 0).1, Fate::Status(429));
    assert_eq!(envoy.counter("palisade.spike_control.queue_full"), 1);
    // A waiting client disconnects: its place is free for the next one.
    let mut gone = held.remove(0);
    sc.done(&mut gone);
    assert_eq!(envoy.counter("palisade.spike_control.client_gone"), 1);
    let (req, fate) = send(&sc, 1);
    assert_eq!(fate, Fate::Waiting);
    held.push(req);
    assert_eq!(send(&sc, 1).1, Fate::Status(429));
    // When the queue drains (here the timers fire once, long after the requests' delay), its
    // places are free again.
    envoy.advance_ms(999);
    sc.tick(1);
    let fates: Vec<Fate> = held.iter().map(fate_of).collect();
    let passed = fates.iter().filter(|f| **f == Fate::Passed).count();
    assert_eq!(passed, 2, "{fates:?}");
    assert!(!fates.contains(&Fate::Waiting), "{fates:?}");
    assert_eq!(fates.len(), 5);
    assert_eq!(fate_of(&gone), Fate::Waiting, "never resumed nor answered");
    assert_eq!(gone.resumed(Direction::Request), 0);
    assert_eq!((sc.paused(0), sc.paused(1)), (0, 0));
    envoy.advance_ms(1000);
    assert_eq!(send(&sc, 0).1, Fate::Passed);
}

#[test]
fn without_a_queue_over_limit_is_rejected_at_once_with_retry_after() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(
        &envoy,
        r#"{"maximumRequests": 1, "timePeriodInMilliseconds": 3000}"#,
    );
    assert_eq!(sc.policy(0).tick_period_ms(), 0);
    let (mut req, fate) = send(&sc, 0);
    assert_eq!(fate, Fate::Passed);
    assert_eq!(response_rate_headers(&sc, &mut req, &[]), []);
    envoy.advance_ms(500);
    let mut req = sc.request(0);
    assert_eq!(sc.send(&mut req), Verdict::Respond);
    let resp = req.response().unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.json()["error"], "rate_limited");
    assert_eq!(resp.header("retry-after"), Some("3"));
    assert_eq!(resp.header("x-ratelimit-limit"), None);
    assert_eq!(envoy.counter("palisade.spike_control.queue_full"), 0);
}

#[test]
fn several_attempts_wait_at_most_attempts_times_delay() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(
        &envoy,
        r#"{"maximumRequests": 1, "timePeriodInMilliseconds": 10000,
            "delayTimeInMillis": 100, "delayAttempts": 3, "queuingLimit": 1}"#,
    );
    assert_eq!(sc.policy(0).tick_period_ms(), 10);
    let start = envoy.now_ms();
    assert_eq!(send(&sc, 0).1, Fate::Passed);
    let (req, fate2) = send(&sc, 0);
    assert_eq!(fate2, Fate::Waiting);
    let mut decided = None;
    for _ in 0..400 {
        sc.tick(1);
        if fate_of(&req) != Fate::Waiting {
            decided = Some((fate_of(&req), envoy.now_ms() - start));
            break;
        }
    }
    assert_eq!(decided, Some((Fate::Status(429), 300)));
    // Its place was given back when it was rejected.
    assert_eq!(send(&sc, 0).1, Fate::Waiting);
}

#[test]
fn flex_headers_report_zero_reset_while_quota_remains() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(
        &envoy,
        r#"{"maximumRequests": 3, "timePeriodInMilliseconds": 1000, "exposeHeaders": true}"#,
    );
    let expect = [(2, 0), (1, 0), (0, 1000)];
    for (remaining, reset_ms) in expect {
        let (mut req, fate) = send(&sc, 0);
        assert_eq!(fate, Fate::Passed);
        assert_eq!(
            response_rate_headers(&sc, &mut req, &[]),
            rate_headers(3, remaining, reset_ms)
        );
    }
    envoy.advance_ms(250);
    let mut req = sc.request(0);
    sc.send(&mut req);
    let resp = req.response().unwrap();
    assert_eq!(resp.header("x-ratelimit-reset"), Some("750"));
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(resp.header("retry-after"), Some("1"));
}

#[test]
fn keys_tiers_and_bounded_state() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(
        &envoy,
        r#"{"id": "k", "maximumRequests": 1, "keySelector": "ip", "maxKeys": 16,
             "timePeriodInMilliseconds": 60000}"#,
    );
    let from = |ip: &str| {
        let mut req = sc.request(0);
        req.set_peer(&format!("{ip}:1"));
        let verdict = sc.send(&mut req);
        sc.done(&mut req);
        (verdict, req.response().map(|r| r.status))
    };
    assert_eq!(from("10.0.0.1").0, Verdict::Continue);
    assert_eq!(from("10.0.0.2").0, Verdict::Continue);
    assert_eq!(from("10.0.0.1").1, Some(429));
    for i in 0..1000 {
        from(&format!("10.1.{}.{}", i / 256, i % 256));
    }
    assert!(envoy.shared_keys_with_prefix("palisade:sc:k:") <= 16);
    // With a limit of 1, every one-off key is at its limit and keeps its slot for its window:
    // once the table holds 16 of them, newcomers wait (see the README on `maxKeys`).
    assert!(envoy.counter("palisade.spike_control.key_table_full") > 900);

    let sla = spike(
        &envoy,
        r#"{"tiers": {"gold": {"maximumRequests": 3, "timePeriodInMilliseconds": 60000},
                       "silver": {"maximumRequests": 1, "timePeriodInMilliseconds": 60000}}}"#,
    );
    let call = |client: Option<&str>, tier: &str| {
        let mut req = sla.request(0);
        if let Some(client) = client {
            Identity {
                authenticated_by: "client-id-enforcement".into(),
                client_id: Some(client.into()),
                tier: Some(tier.into()),
                ..Default::default()
            }
            .publish(&mut req)
            .unwrap();
        }
        sla.send(&mut req);
        sla.done(&mut req);
        req.response().map_or(200, |r| r.status)
    };
    let passed = |client, tier| (0..5).filter(|_| call(Some(client), tier) == 200).count();
    assert_eq!(passed("a", "gold"), 3);
    assert_eq!(passed("b", "silver"), 1);
    assert_eq!(call(None, "gold"), 401);
    assert_eq!(call(Some("c"), "bronze"), 403);
}

#[test]
fn a_flood_of_one_off_keys_admits_newcomers_and_keeps_limited_keys_and_queues() {
    let envoy = TestEnvoy::new(2);
    let sc = spike(
        &envoy,
        r#"{"id": "flood", "maximumRequests": 2, "timePeriodInMilliseconds": 60000,
            "keySelector": "header:x-client", "maxKeys": 16,
            "delayTimeInMillis": 1000, "delayAttempts": 3, "queuingLimit": 1}"#,
    );
    let from = |client: &str, worker: usize| {
        let mut req = sc.request(worker);
        req.add_header("x-client", client);
        let verdict = sc.send(&mut req);
        (req, verdict)
    };
    // "limited" uses its two requests and queues a third.
    for _ in 0..2 {
        assert_eq!(from("limited", 0).1, Verdict::Continue);
    }
    let (mut held, verdict) = from("limited", 1);
    assert_eq!(verdict, Verdict::Pause);
    // A flood of one-off clients (each far from its limit): every one gets in.
    for i in 0..2_000 {
        let (mut req, verdict) = from(&format!("flood-{i}"), i % 2);
        assert_eq!(verdict, Verdict::Continue, "flood-{i}");
        sc.done(&mut req);
    }
    assert_eq!(envoy.counter("palisade.spike_control.key_table_full"), 0);
    assert!(envoy.counter("palisade.spike_control.key_evicted") >= 2_000 - 16);
    assert!(envoy.shared_keys_with_prefix("palisade:sc:flood:") <= 16);
    // "limited" kept its log and its queue: a fourth request finds the queue full.
    let (req, verdict) = from("limited", 0);
    assert_eq!(verdict, Verdict::Respond);
    assert_eq!(req.response().unwrap().status, 429);
    assert_eq!(envoy.counter("palisade.spike_control.queue_full"), 1);
    // A newcomer gets in.
    assert_eq!(from("newcomer", 1).1, Verdict::Continue);
    sc.done(&mut held);
}

#[test]
fn readme_examples_compile() {
    for json in [
        r#"{"maximumRequests": 2, "timePeriodInMilliseconds": 1000,
 "delayTimeInMillis": 500, "delayAttempts": 1, "queuingLimit": 5, "exposeHeaders": false}"#,
        r#"{"maximumRequests": 20, "timePeriodInMilliseconds": 1000,
 "delayTimeInMillis": 250, "delayAttempts": 4, "queuingLimit": 50,
 "keySelector": "ip", "exposeHeaders": true}"#,
    ] {
        config::Config::compile(json.as_bytes()).unwrap();
    }
}

#[test]
fn garbage_in_a_slot_never_panics() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(
        &envoy,
        r#"{"id": "g", "maxKeys": 1, "maximumRequests": 2, "queuingLimit": 2,
            "delayTimeInMillis": 10}"#,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut requests = Vec::new();
    for id in 0..500u32 {
        let bytes: Vec<u8> = (0..(id % 90))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = log::KeyLog::decode(&bytes);
        envoy
            .request(0)
            .shared_set("palisade:sc:g:0", &bytes, None)
            .unwrap();
        let (req, fate) = send(&sc, 0);
        assert!(
            !matches!(fate, Fate::Status(s) if s >= 500),
            "{id}: {fate:?}"
        );
        requests.push(req);
        sc.tick(3);
        for req in &requests {
            let fate = fate_of(req);
            assert!(!matches!(fate, Fate::Status(s) if s >= 500), "{fate:?}");
        }
    }
}

#[test]
fn held_requests_wake_in_their_own_context_on_their_own_worker() {
    let envoy = TestEnvoy::new(2);
    let sc = spike(
        &envoy,
        r#"{"maximumRequests": 1, "timePeriodInMilliseconds": 100, "delayTimeInMillis": 40,
            "delayAttempts": 5, "queuingLimit": 3, "exposeHeaders": true}"#,
    );
    assert_eq!(send(&sc, 0).1, Fate::Passed);
    let (mut a, fate_a) = send(&sc, 0);
    let (mut b, fate_b) = send(&sc, 1);
    let (mut c, fate_c) = send(&sc, 1);
    assert_eq!(
        (fate_a, fate_b, fate_c),
        (Fate::Waiting, Fate::Waiting, Fate::Waiting)
    );
    assert_eq!((sc.paused(0), sc.paused(1)), (1, 2));
    // Attempts at 40 and 80 find no room (the first request holds the window until 100): held
    // again, not resumed, not answered.
    sc.tick(99);
    for req in [&a, &b, &c] {
        assert_eq!(
            (fate_of(req), req.resumed(Direction::Request)),
            (Fate::Waiting, 0)
        );
    }
    // c's client goes away: its place is freed at once, and nothing is resumed for it later.
    sc.done(&mut c);
    assert_eq!(envoy.counter("palisade.spike_control.client_gone"), 1);
    assert_eq!((sc.paused(0), sc.paused(1)), (1, 1));
    // Its place is free at once: one more request may wait, then the queue is full again.
    let (mut d, fate_d) = send(&sc, 1);
    assert_eq!(fate_d, Fate::Waiting);
    assert_eq!(send(&sc, 0).1, Fate::Status(429));
    // At 120, a (worker 0's timer runs first) gets the room; b and d wait for the next window.
    sc.tick(21);
    assert_eq!(
        (fate_of(&a), fate_of(&b), fate_of(&d)),
        (Fate::Passed, Fate::Waiting, Fate::Waiting)
    );
    assert_eq!(a.resumed(Direction::Request), 1);
    assert_eq!(
        response_rate_headers(&sc, &mut a, &[]),
        rate_headers(1, 0, 100)
    );
    // b's fifth and last attempt, at 200, still finds a (admitted at 120) in the window: 429
    // after waiting. d, held since 99, gets the room when a leaves it.
    sc.tick(200);
    assert_eq!(fate_of(&b), Fate::Status(429));
    assert_eq!(b.resumed(Direction::Request), 0);
    assert_eq!(
        response_rate_headers(&sc, &mut b, &[]),
        [],
        "the 429 carries its own headers"
    );
    assert_eq!(
        fate_of(&c),
        Fate::Waiting,
        "a request that went away is never woken"
    );
    assert_eq!(c.resumed(Direction::Request), 0);
    assert_eq!(fate_of(&d), Fate::Passed);
    assert_eq!(
        response_rate_headers(&sc, &mut d, &[]),
        rate_headers(1, 0, 100)
    );
    assert_eq!((sc.paused(0), sc.paused(1)), (0, 0));
    // A request that completes normally frees nothing on its way out.
    assert_eq!(envoy.counter("palisade.spike_control.client_gone"), 1);
}

#[test]
fn a_refused_configuration_names_the_field() {
    let envoy = TestEnvoy::new(1);
    let err = envoy
        .deploy::<SpikeControl>(r#"{"maximumRequests": 0}"#)
        .unwrap_err();
    assert!(
        err.starts_with("spike-control: invalid configuration at `maximumRequests`"),
        "{err}"
    );
}

/// Host calls per request (both phases), pinned so a regression shows; prints the rows of
/// `BENCHMARKS.md` ("Host calls per request") with `-- --nocapture`.
#[test]
fn host_calls_per_request() {
    let envoy = TestEnvoy::new(1);
    let sc = spike(
        &envoy,
        r#"{"maximumRequests": 2, "timePeriodInMilliseconds": 1000, "exposeHeaders": true}"#,
    );
    let through = |expected: Fate| {
        let (mut req, fate) = send(&sc, 0);
        assert_eq!(fate, expected);
        sc.response_headers(&mut req, true);
        req.host_calls()
    };
    let first = through(Fate::Passed);
    let allowed = through(Fate::Passed);
    let denied = through(Fate::Status(429));
    println!("{}", first.markdown_row("spike-control", "allowed (first)"));
    println!("{}", allowed.markdown_row("spike-control", "allowed"));
    println!(
        "{}",
        denied.markdown_row("spike-control", "denied (no delay)")
    );
    assert!(allowed.total() <= 6, "{allowed:?}");
}
