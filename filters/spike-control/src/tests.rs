use super::*;
use palisade_kit::identity::Identity;
use palisade_kit::testing::{TestEnvoy, TestRequest};
use std::collections::HashMap;

/// One simulated worker: the policy, its queue, and its paused requests by context id.
struct Worker {
    policy: SpikeControl,
    queue: Queue,
    paused: HashMap<u32, TestRequest>,
    worker: usize,
}

/// What became of a request.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Passed,
    Waiting,
    Status(u16),
}

impl Worker {
    fn new(envoy: &TestEnvoy, worker: usize, config: &str) -> Worker {
        let policy =
            SpikeControl::configure(config.as_bytes(), &mut envoy.request(worker)).unwrap();
        Worker {
            policy,
            queue: Queue::default(),
            paused: HashMap::new(),
            worker,
        }
    }

    fn send(&mut self, envoy: &TestEnvoy, id: u32) -> Fate {
        let mut req = envoy.request(self.worker);
        match self.policy.on_request(&mut req, id) {
            Outcome::Allowed(_) => Fate::Passed,
            Outcome::Wait(w) => {
                self.queue.waiting.push(w);
                self.paused.insert(id, req);
                Fate::Waiting
            }
            Outcome::Denied => Fate::Status(req.response().unwrap().status),
        }
    }

    /// Runs this worker's timer once at the current time; returns what each due request became.
    fn tick(&mut self, envoy: &TestEnvoy) -> Vec<(u32, Fate, Option<RateHeaders>)> {
        let mut out = Vec::new();
        for mut w in self.queue.take_due(envoy.now_ms()) {
            let Some(mut req) = self.paused.remove(&w.context_id) else {
                self.policy.abandon(&envoy.request(self.worker), &w);
                continue;
            };
            match self.policy.retry(&mut req, &mut w) {
                Retry::Admitted(h) => out.push((w.context_id, Fate::Passed, h)),
                Retry::Again => {
                    self.paused.insert(w.context_id, req);
                    self.queue.waiting.push(w);
                }
                Retry::Rejected => {
                    let resp = req.response().unwrap();
                    assert!(resp.header("retry-after").is_some());
                    out.push((w.context_id, Fate::Status(resp.status), None));
                }
            }
        }
        out
    }
}

const FLEX_EXAMPLE: &str = r#"{"maximumRequests": 2, "timePeriodInMilliseconds": 1000,
    "delayTimeInMillis": 500, "delayAttempts": 1, "queuingLimit": 5, "exposeHeaders": true}"#;

#[test]
fn flex_worked_example() {
    let envoy = TestEnvoy::new(1);
    let mut w = Worker::new(&envoy, 0, FLEX_EXAMPLE);
    assert_eq!(w.send(&envoy, 1), Fate::Passed);
    envoy.advance_ms(600);
    assert_eq!(w.send(&envoy, 2), Fate::Passed);
    envoy.advance_ms(50);
    assert_eq!(w.send(&envoy, 3), Fate::Waiting);
    envoy.advance_ms(50);
    assert_eq!(w.send(&envoy, 4), Fate::Waiting);
    // Nothing is due before its delay.
    envoy.advance_ms(449);
    assert!(w.tick(&envoy).is_empty());
    // #3 is retried at 1150: #1 (at 0) has left the window.
    envoy.advance_ms(1);
    let fates = w.tick(&envoy);
    assert_eq!(fates.len(), 1);
    assert_eq!(fates[0].0, 3);
    assert_eq!(fates[0].1, Fate::Passed);
    // Flex: reset is the time until the oldest request (#2, at 600) leaves: 1600 - 1150.
    assert_eq!(
        fates[0].2,
        Some(RateHeaders {
            limit: 2,
            remaining: 0,
            reset_ms: 450
        })
    );
    // #4 at 1200: #2 and #3 are in the window; no attempts left: 429.
    envoy.advance_ms(50);
    let fates = w.tick(&envoy);
    assert_eq!(fates, vec![(4, Fate::Status(429), None)]);
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
    let mut w0 = Worker::new(&envoy, 0, FLEX_EXAMPLE);
    let mut w1 = Worker::new(&envoy, 1, FLEX_EXAMPLE);
    assert_eq!(w0.send(&envoy, 1), Fate::Passed);
    assert_eq!(w1.send(&envoy, 2), Fate::Passed);
    for id in 3..8 {
        let w = if id % 2 == 0 { &mut w0 } else { &mut w1 };
        assert_eq!(w.send(&envoy, id), Fate::Waiting, "{id}");
    }
    // Five wait (on both workers together): the sixth is rejected at once.
    assert_eq!(w0.send(&envoy, 8), Fate::Status(429));
    assert_eq!(envoy.counter("palisade.spike_control.queue_full"), 1);
    // A waiting client disconnects: its place is free for the next one.
    let gone = w0.queue.take(4).unwrap();
    w0.policy.abandon(&envoy.request(0), &gone);
    assert_eq!(envoy.counter("palisade.spike_control.client_gone"), 1);
    assert_eq!(w1.send(&envoy, 9), Fate::Waiting);
    assert_eq!(w1.send(&envoy, 10), Fate::Status(429));
    // When the queue drains, its places are free again.
    envoy.advance_ms(1000);
    let mut fates = w0.tick(&envoy);
    fates.extend(w1.tick(&envoy));
    let passed = fates.iter().filter(|f| f.1 == Fate::Passed).count();
    assert_eq!(passed, 2, "{fates:?}");
    assert_eq!(fates.len(), 5);
    envoy.advance_ms(1000);
    assert_eq!(w0.send(&envoy, 11), Fate::Passed);
}

#[test]
fn without_a_queue_over_limit_is_rejected_at_once_with_retry_after() {
    let envoy = TestEnvoy::new(1);
    let policy = SpikeControl::configure(
        br#"{"maximumRequests": 1, "timePeriodInMilliseconds": 3000}"#,
        &mut envoy.request(0),
    )
    .unwrap();
    assert_eq!(policy.tick_period_ms(), 0);
    assert_eq!(
        policy.on_request(&mut envoy.request(0), 1),
        Outcome::Allowed(None)
    );
    envoy.advance_ms(500);
    let mut req = envoy.request(0);
    assert_eq!(policy.on_request(&mut req, 2), Outcome::Denied);
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
    let mut w = Worker::new(
        &envoy,
        0,
        r#"{"maximumRequests": 1, "timePeriodInMilliseconds": 10000,
            "delayTimeInMillis": 100, "delayAttempts": 3, "queuingLimit": 1}"#,
    );
    assert_eq!(w.policy.tick_period_ms(), 10);
    let start = envoy.now_ms();
    assert_eq!(w.send(&envoy, 1), Fate::Passed);
    assert_eq!(w.send(&envoy, 2), Fate::Waiting);
    let mut decided = None;
    for _ in 0..400 {
        envoy.advance_ms(1);
        if let Some(f) = w.tick(&envoy).pop() {
            decided = Some((f, envoy.now_ms() - start));
            break;
        }
    }
    let ((id, fate, _), waited) = decided.unwrap();
    assert_eq!((id, fate), (2, Fate::Status(429)));
    assert_eq!(waited, 300);
    // Its place was given back when it was rejected.
    assert_eq!(w.send(&envoy, 3), Fate::Waiting);
}

#[test]
fn flex_headers_report_zero_reset_while_quota_remains() {
    let envoy = TestEnvoy::new(1);
    let policy = SpikeControl::configure(
        br#"{"maximumRequests": 3, "timePeriodInMilliseconds": 1000, "exposeHeaders": true}"#,
        &mut envoy.request(0),
    )
    .unwrap();
    let expect = [(2, 0), (1, 0), (0, 1000)];
    for (remaining, reset_ms) in expect {
        assert_eq!(
            policy.on_request(&mut envoy.request(0), 1),
            Outcome::Allowed(Some(RateHeaders {
                limit: 3,
                remaining,
                reset_ms
            }))
        );
    }
    envoy.advance_ms(250);
    let mut req = envoy.request(0);
    policy.on_request(&mut req, 2);
    let resp = req.response().unwrap();
    assert_eq!(resp.header("x-ratelimit-reset"), Some("750"));
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(resp.header("retry-after"), Some("1"));
}

#[test]
fn keys_tiers_and_bounded_state() {
    let envoy = TestEnvoy::new(1);
    let policy = SpikeControl::configure(
        br#"{"id": "k", "maximumRequests": 1, "keySelector": "ip", "maxKeys": 16,
             "timePeriodInMilliseconds": 60000}"#,
        &mut envoy.request(0),
    )
    .unwrap();
    let from = |ip: &str| {
        let mut req = envoy.request(0);
        req.set_peer(&format!("{ip}:1"));
        let out = policy.on_request(&mut req, 1);
        (out, req.response().map(|r| r.status))
    };
    assert_eq!(from("10.0.0.1").0, Outcome::Allowed(None));
    assert_eq!(from("10.0.0.2").0, Outcome::Allowed(None));
    assert_eq!(from("10.0.0.1").1, Some(429));
    for i in 0..1000 {
        from(&format!("10.1.{}.{}", i / 256, i % 256));
    }
    assert!(envoy.shared_keys_with_prefix("palisade:sc:k:") <= 16);
    assert!(envoy.counter("palisade.spike_control.key_table_full") > 900);

    let sla = SpikeControl::configure(
        br#"{"tiers": {"gold": {"maximumRequests": 3, "timePeriodInMilliseconds": 60000},
                       "silver": {"maximumRequests": 1, "timePeriodInMilliseconds": 60000}}}"#,
        &mut envoy.request(0),
    )
    .unwrap();
    let call = |client: Option<&str>, tier: &str| {
        let mut req = envoy.request(0);
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
        sla.on_request(&mut req, 1);
        req.response().map_or(200, |r| r.status)
    };
    let passed = |client, tier| (0..5).filter(|_| call(Some(client), tier) == 200).count();
    assert_eq!(passed("a", "gold"), 3);
    assert_eq!(passed("b", "silver"), 1);
    assert_eq!(call(None, "gold"), 401);
    assert_eq!(call(Some("c"), "bronze"), 403);
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
    let mut w = Worker::new(
        &envoy,
        0,
        r#"{"id": "g", "maxKeys": 1, "maximumRequests": 2, "queuingLimit": 2,
            "delayTimeInMillis": 10}"#,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
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
        let fate = w.send(&envoy, id);
        assert!(
            !matches!(fate, Fate::Status(s) if s >= 500),
            "{id}: {fate:?}"
        );
        envoy.advance_ms(3);
        for (_, fate, _) in w.tick(&envoy) {
            assert!(!matches!(fate, Fate::Status(s) if s >= 500));
        }
    }
}
