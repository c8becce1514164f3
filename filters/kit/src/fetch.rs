//! The background fetcher: a document (a client registry, a JWKS, an OpenID discovery document,
//! a token) fetched once per Envoy and shared by every worker.
//!
//! Every VM's timer calls [`Fetcher::tick`], but one shared schedule record decides: the VM that
//! claims a due fetch (compare-and-swap) holds it until its call ends or its lease runs out, so
//! one call is made per period per Envoy, and another VM takes over if the fetching one
//! vanishes. The answer is validated by the policy's [`Source`] and published in shared data as a
//! new version ([`SharedDocument`]); each worker parses a version once ([`CachedDocument`]). A
//! failed fetch keeps the last good copy and is retried with exponential backoff. A request that
//! needs something newer (a token signed with an unknown key) can bring the next fetch forward
//! ([`Fetcher::request_refresh`], at most once per `min_refresh_ms`) and wait for it
//! ([`Fetcher::wait`]): it is woken when a new version is published, when the fetch ends without
//! one, or when its wait times out.

use crate::background::{CachedDocument, SharedDocument};
use crate::host::{Host, LogLevel};
use crate::metrics::Counter;
use crate::runtime::{CallResponse, Wakes};
use crate::shared::{cas_update, read_u64, SharedError, Update};
use std::cell::RefCell;
use std::rc::Rc;

/// The timer period of a policy that fetches (its [`crate::Policy::tick_period_ms`]): how soon
/// a due fetch starts and a timed-out waiter is answered.
pub const TICK_MS: u32 = 250;

/// A claimed fetch holds the schedule this long beyond its timeout (if the fetching VM vanishes,
/// another one fetches after that).
pub const LEASE_SLACK_MS: u64 = 2_000;

/// At most this many requests per VM wait for a fetch at a time; more are decided at once.
pub const MAX_WAITERS: usize = 1024;

/// The longest retry delay after failed fetches.
const MAX_BACKOFF_MS: u64 = 60_000;

/// Where a document is fetched from: an Envoy cluster and the request's `:authority` and `:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The Envoy cluster the request goes to.
    pub cluster: String,
    /// `:authority` (host and port of the URI).
    pub authority: String,
    /// `:path` (with the query).
    pub path: String,
}

/// How a document is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// The first request of every fetch.
    pub endpoint: Endpoint,
    /// After a successful fetch, the next one is due this much later.
    pub refresh_ms: u64,
    /// Timeout of one call.
    pub timeout_ms: u32,
    /// [`Fetcher::request_refresh`] brings a fetch forward at most this often.
    pub min_refresh_ms: u64,
    /// Larger answers are failures (a peer cannot make every worker copy an unbounded body).
    pub max_bytes: usize,
}

/// What a fetched body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A valid document: publish it. The text describes it in the log (`"12 clients"`).
    Publish(String),
    /// A pointer to the document (an OpenID discovery document naming its `jwks_uri`): fetch
    /// this next, within the same claim.
    Follow(Endpoint),
    /// Not acceptable (the last good copy stays); the text says why.
    Invalid(String),
}

/// What a policy fetches: how to judge an answer and how to parse a published document.
pub trait Source {
    /// The parsed document each worker keeps.
    type Document;
    /// Judges a 200 answer's body; `followed` is true for the answer to a [`Fetched::Follow`].
    fn accept(&self, body: &[u8], followed: bool) -> Fetched;
    /// Parses a published document (once per worker per version); `None` keeps the previous copy.
    fn parse(&self, bytes: &[u8]) -> Option<Self::Document>;
}

/// The counters a fetcher updates (the policy defines them, with its own names).
#[derive(Debug, Clone, Copy)]
pub struct FetchCounters {
    /// A document was published.
    pub fetched: Counter,
    /// A fetch failed (unreachable, timeout, non-200, too large, or invalid).
    pub failed: Counter,
    /// A fetch returned an invalid document (also counted in `failed`).
    pub invalid: Counter,
}

/// The shared schedule of one document:
/// `next_due_ms | lease_until_ms | last_refresh_request_ms | failures` (u64 LE each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedule {
    /// When the next fetch is due (0: at once).
    pub next_due_ms: u64,
    /// A fetch is in flight until then.
    pub lease_until_ms: u64,
    /// The last fetch brought forward by [`Fetcher::request_refresh`].
    pub last_refresh_request_ms: u64,
    /// Consecutive failed fetches.
    pub failures: u64,
}

impl Schedule {
    fn decode(bytes: Option<&[u8]>) -> Schedule {
        let at = |i: usize| bytes.and_then(|b| read_u64(b, i * 8)).unwrap_or(0);
        Schedule {
            next_due_ms: at(0),
            lease_until_ms: at(1),
            last_refresh_request_ms: at(2),
            failures: at(3),
        }
    }

    fn encode(&self) -> Vec<u8> {
        [
            self.next_due_ms,
            self.lease_until_ms,
            self.last_refresh_request_ms,
            self.failures,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
    }
}

/// This VM's call in flight.
#[derive(Debug, Clone)]
struct InFlight {
    token: u32,
    followed: bool,
    started_ms: u64,
}

/// A request waiting for a fetch.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    context_id: u32,
    until_ms: u64,
    version: u64,
}

/// One document fetched once per Envoy and parsed once per worker per version.
pub struct Fetcher<S: Source> {
    name: String,
    settings: FetchSettings,
    source: S,
    doc: SharedDocument,
    cache: CachedDocument<S::Document>,
    schedule_key: String,
    counters: FetchCounters,
    in_flight: RefCell<Option<InFlight>>,
    waiters: RefCell<Vec<Waiter>>,
}

impl<S: Source> Fetcher<S> {
    /// A fetcher for the document called `name` (the shared-data keys derive from it: give
    /// different documents different names, and the same document the same name in every
    /// VM), fetched with `settings` and judged by `source`.
    pub fn new(name: &str, settings: FetchSettings, source: S, counters: FetchCounters) -> Self {
        let doc = SharedDocument::new(name);
        Fetcher {
            name: name.to_owned(),
            cache: CachedDocument::new(doc.clone()),
            doc,
            schedule_key: format!("palisade:fetch:{name}:schedule"),
            settings,
            source,
            counters,
            in_flight: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// The shared schedule as it is now.
    pub fn schedule(&self, host: &impl Host) -> Schedule {
        let current = host.shared_get(&self.schedule_key).ok().and_then(|v| v.0);
        Schedule::decode(current.as_deref())
    }

    /// This worker's copy of the latest published document and when it was published (ms),
    /// parsed again only when a new version was announced.
    pub fn current(&self, host: &impl Host) -> Option<(Rc<S::Document>, u64)> {
        self.cache
            .get(host, |bytes| self.source.parse(bytes))
            .ok()
            .flatten()
    }

    /// This worker's copy as of its last timer tick (every [`TICK_MS`]) or [`Fetcher::current`]
    /// call, without asking the host: reading the version from shared data per request is a
    /// host call that copies into the VM (about 1-2 µs). Only while this worker has no copy yet
    /// does it read shared data. A policy that denies on what this copy says (an unknown client,
    /// an unknown key id) re-checks with [`Fetcher::newer`] first, so a version published
    /// since the last tick is never the reason for a denial; an allowed decision may rest on a
    /// copy at most one tick older than the latest publication.
    pub fn recent(&self, host: &impl Host) -> Option<(Rc<S::Document>, u64)> {
        match self.cache.cached() {
            Some(copy) => Some(copy),
            None => self.current(host),
        }
    }

    /// The latest published document if it is newer than this worker's copy (which it then
    /// replaces); `None` when nothing newer was published.
    pub fn newer(&self, host: &impl Host) -> Option<(Rc<S::Document>, u64)> {
        let before = self.cache.version();
        let latest = self.current(host)?;
        (self.cache.version() != before).then_some(latest)
    }

    /// The latest published version (0: none yet).
    pub fn version(&self, host: &impl Host) -> u64 {
        self.doc.version(host).unwrap_or(0)
    }

    /// Runs on every VM's timer: forgets a lost call, starts a fetch if one is due and this VM
    /// claims it, parses a newly published version off the request path, and wakes waiters whose
    /// wait is over.
    pub fn tick(&self, host: &mut impl Host, wakes: &mut Wakes) {
        let now = host.now_ms();
        let lost = self.in_flight.borrow().as_ref().is_some_and(|call| {
            // Envoy always answers a call (at the latest with a timeout): one this old was lost.
            let lost_after = u64::from(self.settings.timeout_ms) + 2 * LEASE_SLACK_MS;
            now >= call.started_ms.saturating_add(lost_after)
        });
        if lost {
            *self.in_flight.borrow_mut() = None;
        }
        if self.in_flight.borrow().is_none() && matches!(self.try_claim(host), Ok(true)) {
            let endpoint = self.settings.endpoint.clone();
            self.dispatch(host, &endpoint, false);
        }
        let _ = self.current(host);
        self.wake_ready(host, wakes);
    }

    /// Handles an answer to a background call; answers to other calls are ignored.
    pub fn on_response(&self, host: &mut impl Host, response: &CallResponse, wakes: &mut Wakes) {
        let call = {
            let mut in_flight = self.in_flight.borrow_mut();
            match in_flight.take() {
                Some(call) if call.token == response.token => call,
                other => {
                    *in_flight = other;
                    return;
                }
            }
        };
        if !response.ok() {
            let status = response.status.map_or("none".into(), |s| s.to_string());
            self.failed(host, &format!("status {status}"));
        } else if let Some(body) = response.body(host, self.settings.max_bytes) {
            match self.source.accept(&body, call.followed) {
                Fetched::Publish(summary) => match self.doc.publish(host, &body) {
                    Ok(version) => {
                        self.counters.fetched.inc(host);
                        host.log(
                            LogLevel::Info,
                            &format!("{}: version {version} loaded: {summary}", self.name),
                        );
                        let _ = self.complete(host, true);
                    }
                    Err(e) => self.failed(host, &format!("cannot publish: {e:?}")),
                },
                Fetched::Follow(endpoint) => {
                    let _ = self.extend_claim(host);
                    self.dispatch(host, &endpoint, true);
                }
                Fetched::Invalid(why) => {
                    self.counters.invalid.inc(host);
                    self.failed(host, &format!("invalid document: {why}"));
                }
            }
        } else {
            let max = self.settings.max_bytes;
            self.failed(host, &format!("answer larger than {max} bytes"));
        }
        self.wake_ready(host, wakes);
    }

    /// Brings the next fetch forward (something newer is needed), unless that happened less
    /// than `min_refresh_ms` ago. `true` if a refresh was requested.
    pub fn request_refresh(&self, host: &impl Host) -> bool {
        let now = host.now_ms();
        let min = self.settings.min_refresh_ms;
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            if s.last_refresh_request_ms != 0 && now < s.last_refresh_request_ms.saturating_add(min)
            {
                return Update::Keep(false);
            }
            s.last_refresh_request_ms = now;
            s.next_due_ms = now;
            Update::Write(s.encode(), true)
        })
        .unwrap_or(false)
    }

    /// Whether a fetch is due or in flight somewhere in this Envoy.
    pub fn pending(&self, host: &impl Host) -> bool {
        let s = self.schedule(host);
        let now = host.now_ms();
        now >= s.next_due_ms || now < s.lease_until_ms
    }

    /// Makes request `context_id` wait for the pending fetch: it is woken (its policy's
    /// `on_wake` runs) when a new version is published, the fetch ends without one, or after
    /// the call's timeout. `false` (decide now) when no fetch is pending or too many wait.
    pub fn wait(&self, host: &impl Host, context_id: u32) -> bool {
        if self.waiters.borrow().len() >= MAX_WAITERS || !self.pending(host) {
            return false;
        }
        let waiter = Waiter {
            context_id,
            until_ms: host.now_ms() + u64::from(self.settings.timeout_ms) + LEASE_SLACK_MS,
            version: self.version(host),
        };
        self.waiters.borrow_mut().push(waiter);
        true
    }

    /// Forgets a waiting request that went away.
    pub fn forget(&self, context_id: u32) {
        self.waiters
            .borrow_mut()
            .retain(|w| w.context_id != context_id);
    }

    /// Number of requests of this VM waiting.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn wake_ready(&self, host: &impl Host, wakes: &mut Wakes) {
        if self.waiters.borrow().is_empty() {
            return;
        }
        // The woken requests decide on this worker's copy: bring it up to date first.
        let _ = self.current(host);
        let version = self.version(host);
        let pending = self.pending(host);
        let now = host.now_ms();
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| {
            let ready = w.version != version || !pending || now >= w.until_ms;
            if ready {
                wakes.wake(w.context_id);
            }
            !ready
        });
    }

    fn dispatch(&self, host: &mut impl Host, endpoint: &Endpoint, followed: bool) {
        let headers = [
            (":method", "GET"),
            (":path", endpoint.path.as_str()),
            (":authority", endpoint.authority.as_str()),
            (":scheme", "http"),
            ("accept", "application/json"),
        ];
        let timeout = self.settings.timeout_ms;
        match host.dispatch_http_call(&endpoint.cluster, &headers, None, timeout) {
            Ok(token) => {
                *self.in_flight.borrow_mut() = Some(InFlight {
                    token,
                    followed,
                    started_ms: host.now_ms(),
                });
            }
            Err(e) => {
                let why = format!("cannot call cluster {:?}: {e}", endpoint.cluster);
                self.failed(host, &why);
            }
        }
    }

    fn failed(&self, host: &impl Host, why: &str) {
        self.counters.failed.inc(host);
        host.log(
            LogLevel::Warn,
            &format!(
                "{}: fetch failed ({why}); keeping the last good copy",
                self.name
            ),
        );
        let _ = self.complete(host, false);
    }

    /// Claims the fetch if one is due and none is in flight; `true` if this VM must fetch now.
    fn try_claim(&self, host: &impl Host) -> Result<bool, SharedError> {
        let now = host.now_ms();
        let lease = now + u64::from(self.settings.timeout_ms) + LEASE_SLACK_MS;
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            if now < s.next_due_ms || now < s.lease_until_ms {
                return Update::Keep(false);
            }
            s.lease_until_ms = lease;
            Update::Write(s.encode(), true)
        })
    }

    /// Extends the claim for a followed request.
    fn extend_claim(&self, host: &impl Host) -> Result<(), SharedError> {
        let lease = host.now_ms() + u64::from(self.settings.timeout_ms) + LEASE_SLACK_MS;
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            s.lease_until_ms = lease;
            Update::Write(s.encode(), ())
        })
    }

    /// Records the end of a fetch: after a success the next one is due `refresh_ms` later;
    /// after a failure it is retried with exponential backoff (1 s, 2 s, 4 s... at most a
    /// minute, and never later than a regular refresh).
    fn complete(&self, host: &impl Host, ok: bool) -> Result<(), SharedError> {
        let now = host.now_ms();
        let refresh = self.settings.refresh_ms.max(1_000);
        cas_update(host, &self.schedule_key, |current| {
            let mut s = Schedule::decode(current);
            s.lease_until_ms = 0;
            if ok {
                s.failures = 0;
                s.next_due_ms = now + refresh;
            } else {
                let backoff = 1_000u64 << s.failures.min(6);
                s.failures = s.failures.saturating_add(1);
                s.next_due_ms = now + backoff.min(MAX_BACKOFF_MS).min(refresh);
            }
            Update::Write(s.encode(), ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use crate::host::Direction;
    use crate::runtime::{Policy, Request, Verdict};
    use crate::testing::{TestEnvoy, TestPolicy};
    use crate::Denial;

    /// Documents are comma-separated item lists; `@<path>` points to another path.
    struct Items;

    impl Source for Items {
        type Document = Vec<String>;
        fn accept(&self, body: &[u8], followed: bool) -> Fetched {
            match std::str::from_utf8(body) {
                Ok(text) if text.starts_with('@') && !followed => Fetched::Follow(Endpoint {
                    cluster: "docs".into(),
                    authority: "docs".into(),
                    path: text[1..].into(),
                }),
                Ok(text) if !text.starts_with('@') => {
                    Fetched::Publish(format!("{} items", text.split(',').count()))
                }
                _ => Fetched::Invalid("not an item list".into()),
            }
        }
        fn parse(&self, bytes: &[u8]) -> Option<Vec<String>> {
            let text = std::str::from_utf8(bytes).ok()?;
            Some(text.split(',').map(str::to_owned).collect())
        }
    }

    /// Lets a request through when the document lists its `x-item`; an unknown item brings a
    /// fetch forward and waits for it once.
    struct Gate {
        fetcher: Fetcher<Items>,
    }

    crate::counters! {
        struct Metrics { fetched, fetch_failed, invalid }
    }

    impl Gate {
        fn decide(
            &self,
            request: &mut Request<'_, ()>,
            host: &mut impl Host,
            wait: bool,
        ) -> Verdict {
            let item = host.request_header("x-item").unwrap_or_default();
            let known = self
                .fetcher
                .current(host)
                .is_some_and(|(items, _)| items.contains(&item));
            if known {
                return Verdict::Continue;
            }
            if wait {
                self.fetcher.request_refresh(host);
            }
            if wait && self.fetcher.wait(host, request.id) {
                return Verdict::Pause;
            }
            Denial::new(403, "unknown_item", "Unknown item.").send(host)
        }
    }

    impl Policy for Gate {
        const NAME: &'static str = "gate";
        type State = ();
        fn configure(_: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
            let m = Metrics::define(host, Self::NAME)?;
            let settings = FetchSettings {
                endpoint: Endpoint {
                    cluster: "docs".into(),
                    authority: "docs".into(),
                    path: "/items".into(),
                },
                refresh_ms: 10_000,
                timeout_ms: 1_000,
                min_refresh_ms: 5_000,
                max_bytes: 64,
            };
            let counters = FetchCounters {
                fetched: m.fetched,
                failed: m.fetch_failed,
                invalid: m.invalid,
            };
            Ok(Gate {
                fetcher: Fetcher::new("items", settings, Items, counters),
            })
        }
        fn tick_period_ms(&self) -> u32 {
            TICK_MS
        }
        fn on_tick(&self, host: &mut impl Host, wakes: &mut Wakes) {
            self.fetcher.tick(host, wakes);
        }
        fn on_background_response(
            &self,
            host: &mut impl Host,
            response: &CallResponse,
            wakes: &mut Wakes,
        ) {
            self.fetcher.on_response(host, response, wakes);
        }
        fn on_request_headers(
            &self,
            request: &mut Request<'_, ()>,
            host: &mut impl Host,
            _: bool,
        ) -> Verdict {
            self.decide(request, host, true)
        }
        fn on_wake(&self, request: &mut Request<'_, ()>, host: &mut impl Host) -> Verdict {
            self.decide(request, host, false)
        }
        fn on_done(&self, request: &mut Request<'_, ()>, _: &mut impl Host) {
            self.fetcher.forget(request.id);
        }
    }

    fn gateway(workers: usize) -> (TestEnvoy, TestPolicy<Gate>) {
        let envoy = TestEnvoy::new(workers);
        envoy.add_cluster("docs");
        let gate = envoy.deploy::<Gate>("").unwrap();
        (envoy, gate)
    }

    /// The calls not answered yet, answered in order by the test.
    fn calls_since(envoy: &TestEnvoy, seen: &mut usize) -> Vec<crate::testing::HttpCall> {
        let calls = envoy.http_calls();
        let new = calls[*seen..].to_vec();
        *seen = calls.len();
        new
    }

    fn ask(
        gate: &TestPolicy<Gate>,
        worker: usize,
        item: &str,
    ) -> (Verdict, crate::testing::TestRequest) {
        let mut req = gate.request(worker);
        req.add_header("x-item", item);
        (gate.send(&mut req), req)
    }

    #[test]
    fn one_fetch_per_period_per_envoy_whichever_worker_ticks() {
        let (envoy, gate) = gateway(3);
        let mut seen = 0;
        gate.tick(1_000);
        let calls = calls_since(&envoy, &mut seen);
        assert_eq!(calls.len(), 1, "one claim for three workers");
        assert_eq!(calls[0].header(":path"), Some("/items"));
        gate.respond(calls[0].token, 200, &[], b"a,b");
        assert_eq!(envoy.counter("palisade.gate.fetched"), 1);
        for worker in 0..3 {
            assert_eq!(
                ask(&gate, worker, "b").0,
                Verdict::Continue,
                "worker {worker}"
            );
        }
        gate.tick(9_000);
        assert!(
            calls_since(&envoy, &mut seen).is_empty(),
            "fresh for refresh_ms"
        );
        gate.tick(1_000);
        assert_eq!(calls_since(&envoy, &mut seen).len(), 1);
    }

    #[test]
    fn failures_keep_the_last_good_copy_and_back_off() {
        let (envoy, gate) = gateway(2);
        let mut seen = 0;
        gate.tick(TICK_MS.into());
        let first = calls_since(&envoy, &mut seen);
        gate.respond(first[0].token, 200, &[], b"a");
        gate.tick(10_000);
        let mut delays = Vec::new();
        let mut failed_at = 0;
        for failure in ["status", "oversize", "invalid"] {
            let calls = calls_since(&envoy, &mut seen);
            assert_eq!(calls.len(), 1, "{failure}");
            if failed_at > 0 {
                delays.push((envoy.now_ms() - failed_at) / 1_000);
            }
            match failure {
                "status" => gate.respond(calls[0].token, 503, &[], b""),
                "oversize" => gate.respond(calls[0].token, 200, &[], &[b'x'; 65]),
                _ => {
                    // A pointer to a pointer: followed once, then invalid.
                    gate.respond(calls[0].token, 200, &[], b"@/next");
                    let followed = calls_since(&envoy, &mut seen);
                    gate.respond(followed[0].token, 200, &[], b"@/again");
                }
            }
            failed_at = envoy.now_ms();
            while envoy.http_calls().len() == seen {
                gate.tick(50);
            }
        }
        delays.push((envoy.now_ms() - failed_at) / 1_000);
        assert_eq!(delays, [1, 2, 4], "exponential backoff");
        assert_eq!(envoy.counter("palisade.gate.fetch_failed"), 3);
        assert_eq!(envoy.counter("palisade.gate.invalid"), 1);
        assert_eq!(gate.policy(1).fetcher.schedule(gate.root(1)).failures, 3);
        assert_eq!(
            ask(&gate, 1, "a").0,
            Verdict::Continue,
            "the last good copy stays"
        );
        // A success resets the backoff.
        let calls = calls_since(&envoy, &mut seen);
        gate.respond(calls[0].token, 200, &[], b"b");
        assert_eq!(gate.policy(0).fetcher.schedule(gate.root(0)).failures, 0);
        assert_eq!(ask(&gate, 0, "b").0, Verdict::Continue);
    }

    #[test]
    fn a_pointer_is_followed_within_one_claim() {
        let (envoy, gate) = gateway(1);
        let mut seen = 0;
        gate.tick(TICK_MS.into());
        let calls = calls_since(&envoy, &mut seen);
        gate.respond(calls[0].token, 200, &[], b"@/real");
        let calls = calls_since(&envoy, &mut seen);
        assert_eq!(calls[0].header(":path"), Some("/real"));
        gate.respond(calls[0].token, 200, &[], b"z");
        assert_eq!(ask(&gate, 0, "z").0, Verdict::Continue);
        assert_eq!(envoy.counter("palisade.gate.fetched"), 1);
    }

    #[test]
    fn a_vanished_fetcher_loses_its_claim() {
        let (envoy, gate) = gateway(2);
        let mut seen = 0;
        gate.tick(TICK_MS.into());
        assert_eq!(calls_since(&envoy, &mut seen).len(), 1);
        // Never answered: the lease runs out after timeout + slack and someone fetches again.
        gate.tick(1_000 + LEASE_SLACK_MS - u64::from(TICK_MS));
        assert!(calls_since(&envoy, &mut seen).is_empty());
        gate.tick(LEASE_SLACK_MS);
        assert_eq!(calls_since(&envoy, &mut seen).len(), 1);
    }

    #[test]
    fn waiting_requests_are_woken_by_a_new_version_a_failure_or_their_timeout() {
        let (envoy, gate) = gateway(2);
        let mut seen = 0;
        gate.tick(TICK_MS.into());
        let calls = calls_since(&envoy, &mut seen);
        gate.respond(calls[0].token, 200, &[], b"a");
        envoy.advance_ms(6_000);

        // An unknown item brings a fetch forward and waits for it, on both workers.
        let (v0, mut r0) = ask(&gate, 0, "new");
        let (v1, r1) = ask(&gate, 1, "new");
        assert_eq!((v0, v1), (Verdict::Pause, Verdict::Pause));
        assert_eq!((gate.paused(0), gate.paused(1)), (1, 1));
        gate.tick(TICK_MS.into());
        let calls = calls_since(&envoy, &mut seen);
        assert_eq!(calls.len(), 1, "one fetch for both waiters");
        gate.respond(calls[0].token, 200, &[], b"a,new");
        // The fetching worker's waiter is woken by the answer, the other by its next tick.
        gate.tick(TICK_MS.into());
        for r in [&r0, &r1] {
            assert_eq!(r.resumed(Direction::Request), 1);
            assert!(r.response().is_none());
        }
        gate.done(&mut r0);

        // Refresh requests are rate-limited: within min_refresh_ms nothing is due, so a waiter
        // is decided at once.
        let (v, r) = ask(&gate, 0, "other");
        assert_eq!(v, Verdict::Respond);
        assert_eq!(r.response().unwrap().status, 403);

        // A fetch that fails wakes its waiters, who are then denied.
        envoy.advance_ms(5_000);
        let (v, r) = ask(&gate, 0, "other");
        assert_eq!(v, Verdict::Pause);
        gate.tick(TICK_MS.into());
        let calls = calls_since(&envoy, &mut seen);
        gate.respond(calls[0].token, 500, &[], b"");
        assert_eq!(r.response().unwrap().status, 403);
        assert_eq!(gate.paused(0), 0);

        // A call never answered: the waiter is answered after the timeout.
        envoy.advance_ms(5_000);
        let (v, r) = ask(&gate, 1, "late");
        assert_eq!(v, Verdict::Pause);
        gate.tick(1_000 + LEASE_SLACK_MS + u64::from(TICK_MS));
        assert_eq!(r.response().unwrap().status, 403);

        // A waiter that goes away is forgotten.
        envoy.advance_ms(5_000);
        let (v, mut gone) = ask(&gate, 0, "gone");
        assert_eq!(v, Verdict::Pause);
        gate.done(&mut gone);
        assert_eq!((gate.paused(0), gate.policy(0).fetcher.waiting()), (0, 0));
    }
}
