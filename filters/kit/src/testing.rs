//! An in-memory Envoy for native unit tests of policy logic.
//!
//! It reproduces the host semantics that bite (ANCHORS.md §1-2): one shared-data store for all
//! workers, with a process-wide CAS counter, writes to absent keys that succeed whatever CAS they
//! carry, and keys that are never deleted; timers per worker; shared queues whose last registrant
//! wins; HTTP calls that need a known cluster and the `:method`, `:path` and `:authority`
//! pseudo-headers; one process-wide value per metric name; context ids, the effective context
//! and resuming paused requests. Time is virtual and only moves when the test says so.
//!
//! [`TestEnvoy::deploy`] runs a whole [`Policy`] the way Envoy does (one [`Vm`] per worker, its
//! timer, requests through every phase, answers to its calls routed to the context that made
//! them, paused requests woken and resumed), so a policy's runtime behaviour is unit-tested
//! without Envoy.

use crate::host::{
    BodyBuffer, Direction, GrpcCall, HeaderMap, Host, HostError, LogLevel, SharedValue,
};
use crate::runtime::{CallResponse, Policy, Stream, Verdict, Vm};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

type Interference = Box<dyn FnMut(&TestRequest)>;

/// Where every `TestEnvoy`'s entropy source starts ([`TestEnvoy::seed_random`] changes it).
const DEFAULT_RANDOM_SEED: u64 = 0x5eed;

#[derive(Default)]
struct State {
    workers: usize,
    now_ms: u64,
    shared: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    metrics: Vec<(String, i64)>,
    logs: Vec<(LogLevel, String)>,
    clusters: Vec<String>,
    http_calls: Vec<HttpCall>,
    next_token: u32,
    queues: Vec<Queue>,
    queue_ready: Vec<(usize, u32)>,
    tick_period_ms: Vec<u32>,
    next_tick_ms: Vec<u64>,
    interference: Option<(u32, String, Interference)>,
    next_context: u32,
    exchanges: HashMap<u32, Rc<RefCell<Exchange>>>,
    /// The state of the deterministic entropy source (`None`: it fails).
    random: Option<u64>,
    /// Flushes each deployed VM's kept counts (see [`TestEnvoy::counter`]).
    flushers: Vec<(usize, Flusher)>,
}

type Flusher = Rc<dyn Fn(&TestRequest)>;

/// What Envoy holds for one context (a request, or a VM's root context).
#[derive(Default)]
struct Exchange {
    maps: HashMap<HeaderMap, Vec<(String, String)>>,
    bodies: HashMap<BodyBuffer, Vec<u8>>,
    properties: BTreeMap<String, Vec<u8>>,
    response: Option<LocalResponse>,
    resumed: Vec<Direction>,
    /// Body bytes passed on (upstream for the request, downstream for the response).
    forwarded: HashMap<Direction, Vec<u8>>,
    /// Whether the policy holds the body buffered (its last body callback paused).
    holding: HashMap<Direction, bool>,
    /// Whether the policy paused at the headers: Envoy then buffers body data without calling
    /// the policy until it resumes.
    stopped_at_headers: HashMap<Direction, bool>,
    gone: bool,
    /// Host calls that acted on this context, by [`Host`] method name.
    calls: BTreeMap<&'static str, usize>,
}

impl Exchange {
    /// The body held in `direction` goes on (upstream for the request).
    fn pass_on(&mut self, direction: Direction) {
        self.holding.insert(direction, false);
        let passed = self
            .bodies
            .remove(&body_buffer(direction))
            .unwrap_or_default();
        self.forwarded.entry(direction).or_default().extend(passed);
    }
}

/// Adds a header line where Envoy's header list puts it: a pseudo-header after the last
/// pseudo-header, any other at the end.
fn insert_line(headers: &mut Vec<(String, String)>, name: String, value: &str) {
    let at = if name.starts_with(':') {
        headers
            .iter()
            .position(|(n, _)| !n.starts_with(':'))
            .unwrap_or(headers.len())
    } else {
        headers.len()
    };
    headers.insert(at, (name, value.to_owned()));
}

/// The body buffer of a direction.
fn body_buffer(direction: Direction) -> BodyBuffer {
    match direction {
        Direction::Request => BodyBuffer::Request,
        Direction::Response => BodyBuffer::Response,
    }
}

struct Queue {
    name: String,
    owner: usize,
    items: VecDeque<Vec<u8>>,
}

/// An HTTP (or gRPC) call a policy dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The worker that dispatched it.
    pub worker: usize,
    /// The context that dispatched it (its answer goes there).
    pub context_id: u32,
    /// The token returned to the policy.
    pub token: u32,
    /// The target cluster.
    pub cluster: String,
    /// The request headers, pseudo-headers included (gRPC: the initial metadata).
    pub headers: Vec<(String, String)>,
    /// The request body (gRPC: the message).
    pub body: Option<Vec<u8>>,
    /// The timeout in milliseconds.
    pub timeout_ms: u32,
    /// For a gRPC call, its service and method.
    pub grpc: Option<(String, String)>,
}

impl HttpCall {
    /// A request header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response a policy sent instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Host calls by [`Host`] method name ([`TestRequest::host_calls`]): what a request costs in
/// host crossings (about 1 µs each in Envoy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCalls(pub BTreeMap<&'static str, usize>);

impl HostCalls {
    /// The columns of the published table (`BENCHMARKS.md`, "Host calls per request"); any
    /// other kind is listed by name, with its count, in a last column, `other`.
    pub const TABLE_KINDS: &'static [&'static str] = &[
        "header",
        "headers",
        "set_header",
        "remove_header",
        "property",
        "set_property",
        "shared_get",
        "shared_set",
        "now_ms",
        "increment_counter",
        "send_response",
        "log",
    ];

    /// Every host call.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Calls of one kind (a [`Host`] method name).
    pub fn get(&self, kind: &str) -> usize {
        self.0.get(kind).copied().unwrap_or(0)
    }

    /// One table line: `policy`, `scenario`, the calls per kind, `other` (named), the total.
    pub fn markdown_row(&self, policy: &str, scenario: &str) -> String {
        let mut cells: Vec<String> = Self::TABLE_KINDS
            .iter()
            .map(|kind| match self.get(kind) {
                0 => "·".to_owned(),
                n => n.to_string(),
            })
            .collect();
        let other: Vec<String> = self
            .0
            .iter()
            .filter(|(kind, _)| !Self::TABLE_KINDS.contains(kind))
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        cells.push(if other.is_empty() {
            "·".to_owned()
        } else {
            other.join(", ")
        });
        format!(
            "| {policy} | {scenario} | {} | **{}** |",
            cells.join(" | "),
            self.total()
        )
    }
}

/// One simulated Envoy process with several worker threads.
#[derive(Clone)]
pub struct TestEnvoy {
    state: Rc<RefCell<State>>,
}

impl TestEnvoy {
    /// An Envoy with `workers` workers (at least 1), clock at 1,700,000,000,000 ms.
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        TestEnvoy {
            state: Rc::new(RefCell::new(State {
                workers,
                now_ms: 1_700_000_000_000,
                next_cas: 1,
                next_token: 1,
                next_context: 1,
                tick_period_ms: vec![0; workers],
                next_tick_ms: vec![0; workers],
                random: Some(DEFAULT_RANDOM_SEED),
                ..State::default()
            })),
        }
    }

    /// A new request (or background context) on `worker`, with a fresh context id.
    pub fn request(&self, worker: usize) -> TestRequest {
        let id = {
            let mut s = self.state.borrow_mut();
            let id = s.next_context;
            s.next_context += 1;
            s.exchanges.insert(id, Rc::default());
            id
        };
        TestRequest {
            envoy: self.clone(),
            worker: worker % self.workers(),
            id,
            effective: Cell::new(id),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.state.borrow().workers
    }

    /// Makes `name` a known cluster for HTTP calls.
    pub fn add_cluster(&self, name: &str) {
        self.state.borrow_mut().clusters.push(name.to_owned());
    }

    /// The HTTP calls dispatched so far.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.state.borrow().http_calls.clone()
    }

    /// A counter's value as Envoy reports it once every deployed VM has flushed the counts it
    /// keeps (it flushes them first, as their next tick would); 0 if never defined.
    /// [`TestEnvoy::reported_counter`] reads it without flushing.
    pub fn counter(&self, name: &str) -> i64 {
        let flushers = self.state.borrow().flushers.clone();
        for (worker, flush) in flushers {
            flush(&self.request(worker));
        }
        self.reported_counter(name)
    }

    /// A counter's value as Envoy holds it now: counts the VMs keep until their next tick
    /// (`metrics::FLUSH_PERIOD_MS`) are not in it yet. 0 if never defined.
    pub fn reported_counter(&self, name: &str) -> i64 {
        let state = self.state.borrow();
        state
            .metrics
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Everything logged so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state.borrow().logs.clone()
    }

    /// The number of shared-data keys starting with `prefix` (keys are never deleted).
    pub fn shared_keys_with_prefix(&self, prefix: &str) -> usize {
        let state = self.state.borrow();
        state
            .shared
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }

    /// Reseeds the deterministic entropy source behind `random_bytes` (every `TestEnvoy`
    /// starts from the same seed, so tests are reproducible; two seeds give two secrets).
    pub fn seed_random(&self, seed: u64) {
        self.state.borrow_mut().random = Some(seed);
    }

    /// Makes `random_bytes` fail from now on, as a host without entropy would.
    pub fn break_random(&self) {
        self.state.borrow_mut().random = None;
    }

    /// The current virtual time.
    pub fn now_ms(&self) -> u64 {
        self.state.borrow().now_ms
    }

    /// Moves the clock forward without running timers.
    pub fn advance_ms(&self, ms: u64) {
        self.state.borrow_mut().now_ms += ms;
    }

    /// Moves the clock forward millisecond by millisecond, calling `on_tick(worker, host)` each
    /// time a worker's timer is due, as each worker's root context would be.
    pub fn run_timers(&self, ms: u64, mut on_tick: impl FnMut(usize, &mut TestRequest)) {
        for _ in 0..ms {
            self.advance_ms(1);
            for worker in self.due_workers() {
                let mut host = self.request(worker);
                on_tick(worker, &mut host);
            }
        }
    }

    /// The workers whose timer is due now (their next tick is then scheduled).
    fn due_workers(&self) -> Vec<usize> {
        let mut s = self.state.borrow_mut();
        let now = s.now_ms;
        (0..s.workers)
            .filter(|&w| {
                let period = s.tick_period_ms[w];
                if period > 0 && s.next_tick_ms[w] <= now {
                    s.next_tick_ms[w] = now + u64::from(period);
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    /// The `(worker, queue_id)` wake-ups posted since the last call, in order.
    pub fn take_queue_ready(&self) -> Vec<(usize, u32)> {
        std::mem::take(&mut self.state.borrow_mut().queue_ready)
    }

    /// Simulates a race: the next `times` shared-data writes to `key` by any request first run
    /// `other_worker` (as another worker that read and wrote in between), so the writer's CAS
    /// is stale.
    pub fn interfere_on_next_sets(
        &self,
        times: u32,
        key: &str,
        other_worker: impl FnMut(&TestRequest) + 'static,
    ) {
        self.state.borrow_mut().interference =
            Some((times, key.to_owned(), Box::new(other_worker)));
    }

    /// Deploys policy `P` with `config` on every worker, as Envoy does: one [`Vm`] per worker,
    /// configured (and its timer started) in its own root context. `Err` carries the logged
    /// configuration error when Envoy would refuse the filter.
    pub fn deploy<P: Policy>(&self, config: &str) -> Result<TestPolicy<P>, String> {
        let mut vms = Vec::new();
        for worker in 0..self.workers() {
            let mut root = self.request(worker);
            let vm = Vm::new(root.id);
            if !vm.configure(config.as_bytes(), &mut root) {
                let error = self
                    .logs()
                    .into_iter()
                    .rev()
                    .find(|(level, _)| *level == LogLevel::Error)
                    .map(|(_, message)| message)
                    .unwrap_or_default();
                return Err(error);
            }
            let vm = Rc::new(vm);
            let weak = Rc::downgrade(&vm);
            let flush: Flusher = Rc::new(move |host: &TestRequest| {
                if let Some(vm) = weak.upgrade() {
                    vm.flush(host);
                }
            });
            self.state.borrow_mut().flushers.push((worker, flush));
            vms.push((vm, root));
        }
        Ok(TestPolicy {
            envoy: self.clone(),
            vms,
            streams: RefCell::new(HashMap::new()),
        })
    }

    fn exchange(&self, id: u32) -> Rc<RefCell<Exchange>> {
        self.state
            .borrow()
            .exchanges
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }
}

/// A request context (or a worker's root context) on one simulated worker. Implements [`Host`],
/// acting on its effective context (itself unless [`Host::set_effective_context`] switched it).
pub struct TestRequest {
    envoy: TestEnvoy,
    worker: usize,
    id: u32,
    effective: Cell<u32>,
}

impl TestRequest {
    /// Adds a request header (name lowercased), keeping earlier ones of the same name.
    pub fn add_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.add_to(HeaderMap::Request, name, value)
    }

    /// Adds a header to any map of this request (e.g. upstream response headers).
    pub fn add_to(&mut self, map: HeaderMap, name: &str, value: &str) -> &mut Self {
        self.own()
            .borrow_mut()
            .maps
            .entry(map)
            .or_default()
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets an Envoy attribute, e.g. `["connection", "mtls"]`.
    pub fn set_attribute(&mut self, path: &[&str], value: &[u8]) -> &mut Self {
        self.own()
            .borrow_mut()
            .properties
            .insert(path.join("\0"), value.to_vec());
        self
    }

    /// Sets the downstream address Envoy reports (`source.address`), e.g. `10.0.0.1:5000`.
    pub fn set_peer(&mut self, address: &str) -> &mut Self {
        self.set_attribute(&["source", "address"], address.as_bytes())
    }

    /// The request headers as the upstream would see them.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.map(HeaderMap::Request)
    }

    /// Any header map of this request.
    pub fn map(&self, map: HeaderMap) -> Vec<(String, String)> {
        self.own()
            .borrow()
            .maps
            .get(&map)
            .cloned()
            .unwrap_or_default()
    }

    /// The local response sent, if the policy answered the request itself.
    pub fn response(&self) -> Option<LocalResponse> {
        self.own().borrow().response.clone()
    }

    /// How often the request (or response) was resumed after a pause.
    pub fn resumed(&self, direction: Direction) -> usize {
        self.own()
            .borrow()
            .resumed
            .iter()
            .filter(|d| **d == direction)
            .count()
    }

    /// Body bytes passed on so far (upstream for [`Direction::Request`]).
    pub fn forwarded_body(&self, direction: Direction) -> Vec<u8> {
        self.own()
            .borrow()
            .forwarded
            .get(&direction)
            .cloned()
            .unwrap_or_default()
    }

    /// The host calls that acted on this context so far, by [`Host`] method name (a call made
    /// while another context was effective counts for that one). Calls a helper makes through
    /// a trait default (`request_header`) count as the method it calls (`header`).
    pub fn host_calls(&self) -> HostCalls {
        HostCalls(self.own().borrow().calls.clone())
    }

    /// Forgets the host calls counted so far (e.g. after a request that filled a cache).
    pub fn reset_host_calls(&self) {
        self.own().borrow_mut().calls.clear();
    }

    /// Counts one host call of `kind` against the effective context.
    fn count(&self, kind: &'static str) {
        *self.current().borrow_mut().calls.entry(kind).or_default() += 1;
    }

    /// The worker this context runs on.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// This context's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Records whether a headers callback paused (Envoy then buffers the body unseen).
    fn stop_at_headers(&self, direction: Direction, verdict: Verdict) {
        self.own()
            .borrow_mut()
            .stopped_at_headers
            .insert(direction, verdict == Verdict::Pause);
    }

    fn own(&self) -> Rc<RefCell<Exchange>> {
        self.envoy.exchange(self.id)
    }

    fn current(&self) -> Rc<RefCell<Exchange>> {
        self.envoy.exchange(self.effective.get())
    }

    fn other_worker(&self) -> usize {
        (self.worker + 1) % self.envoy.workers()
    }
}

impl Host for TestRequest {
    // Header names as Envoy treats them: the name asked for is lowercased, names are stored
    // lowercase, and a pseudo-header goes after the last pseudo-header (Envoy's header list).
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        self.count("header");
        let name = name.to_ascii_lowercase();
        self.current()
            .borrow()
            .maps
            .get(&map)?
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        self.count("headers");
        self.current()
            .borrow()
            .maps
            .get(&map)
            .cloned()
            .unwrap_or_default()
    }

    /// One host call, counted as `headers` (the same `proxy_get_header_map_pairs`).
    fn header_map_bytes(&self, map: HeaderMap) -> Option<Vec<u8>> {
        self.count("headers");
        let exchange = self.current();
        let exchange = exchange.borrow();
        let pairs: Vec<(&str, &str)> = exchange
            .maps
            .get(&map)
            .map(|m| m.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
            .unwrap_or_default();
        Some(crate::wire::serialize_pairs(&pairs))
    }

    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.count("set_header");
        let name = name.to_ascii_lowercase();
        let exchange = self.current();
        let mut exchange = exchange.borrow_mut();
        let headers = exchange.maps.entry(map).or_default();
        headers.retain(|(n, _)| *n != name);
        insert_line(headers, name, value);
    }

    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.count("add_header");
        let exchange = self.current();
        let mut exchange = exchange.borrow_mut();
        let headers = exchange.maps.entry(map).or_default();
        insert_line(headers, name.to_ascii_lowercase(), value);
    }

    fn remove_header(&mut self, map: HeaderMap, name: &str) {
        self.count("remove_header");
        let name = name.to_ascii_lowercase();
        if let Some(headers) = self.current().borrow_mut().maps.get_mut(&map) {
            headers.retain(|(n, _)| *n != name);
        }
    }

    fn body(&self, buffer: BodyBuffer, start: usize, max: usize) -> Vec<u8> {
        self.count("body");
        let exchange = self.current();
        let exchange = exchange.borrow();
        let Some(bytes) = exchange.bodies.get(&buffer) else {
            return Vec::new();
        };
        let start = start.min(bytes.len());
        let end = start.saturating_add(max).min(bytes.len());
        bytes[start..end].to_vec()
    }

    fn set_body(
        &mut self,
        buffer: BodyBuffer,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        self.count("set_body");
        let exchange = self.current();
        let mut exchange = exchange.borrow_mut();
        let bytes = exchange.bodies.entry(buffer).or_default();
        let start = start.min(bytes.len());
        let end = start.saturating_add(size).min(bytes.len());
        bytes.splice(start..end, data.iter().copied());
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.count("property");
        self.current()
            .borrow()
            .properties
            .get(&path.join("\0"))
            .cloned()
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.count("set_property");
        self.current()
            .borrow_mut()
            .properties
            .insert(path.join("\0"), value.to_vec());
        Ok(())
    }
    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
        self.count("shared_get");
        let state = self.envoy.state.borrow();
        Ok(match state.shared.get(key) {
            Some((value, cas)) => ((!value.is_empty()).then(|| value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        self.count("shared_set");
        let interference = {
            let mut state = self.envoy.state.borrow_mut();
            match state.interference.take() {
                Some((times, k, f)) if k == key && times > 0 => Some((times, k, f)),
                other => {
                    state.interference = other;
                    None
                }
            }
        };
        if let Some((times, k, mut f)) = interference {
            let other = self.envoy.request(self.other_worker());
            f(&other);
            self.envoy.state.borrow_mut().interference = Some((times - 1, k, f));
        }
        let mut state = self.envoy.state.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, state.shared.get(key)) {
            if cas != 0 && cas != *current {
                return Err(HostError::CasMismatch);
            }
        }
        let stamp = state.next_cas;
        state.next_cas = state.next_cas.checked_add(1).unwrap_or(1);
        state.shared.insert(key.to_owned(), (value.to_vec(), stamp));
        Ok(())
    }

    fn register_queue(&mut self, name: &str) -> Result<u32, HostError> {
        self.count("register_queue");
        let mut state = self.envoy.state.borrow_mut();
        if let Some(i) = state.queues.iter().position(|q| q.name == name) {
            state.queues[i].owner = self.worker;
            return Ok(i as u32 + 1);
        }
        state.queues.push(Queue {
            name: name.to_owned(),
            owner: self.worker,
            items: VecDeque::new(),
        });
        Ok(state.queues.len() as u32)
    }

    fn enqueue(&self, queue_id: u32, data: &[u8]) -> Result<(), HostError> {
        self.count("enqueue");
        let mut state = self.envoy.state.borrow_mut();
        let index = (queue_id as usize)
            .checked_sub(1)
            .ok_or(HostError::NotFound)?;
        let queue = state.queues.get_mut(index).ok_or(HostError::NotFound)?;
        queue.items.push_back(data.to_vec());
        let owner = queue.owner;
        state.queue_ready.push((owner, queue_id));
        Ok(())
    }

    fn dequeue(&self, queue_id: u32) -> Result<Option<Vec<u8>>, HostError> {
        self.count("dequeue");
        let mut state = self.envoy.state.borrow_mut();
        let index = (queue_id as usize)
            .checked_sub(1)
            .ok_or(HostError::NotFound)?;
        let queue = state.queues.get_mut(index).ok_or(HostError::NotFound)?;
        Ok(queue.items.pop_front())
    }

    fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError> {
        self.count("set_tick_period_ms");
        let mut state = self.envoy.state.borrow_mut();
        state.tick_period_ms[self.worker] = period_ms;
        state.next_tick_ms[self.worker] = state.now_ms + u64::from(period_ms);
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.count("now_ms");
        self.envoy.now_ms()
    }

    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError> {
        self.count("random_bytes");
        let mut state = self.envoy.state.borrow_mut();
        // 52: WASI's ENOSYS, what a host without `random_get` answers.
        let seed = state.random.as_mut().ok_or(HostError::Other(52))?;
        for chunk in buf.chunks_mut(8) {
            // SplitMix64: deterministic, and distinct seeds give unrelated streams.
            *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }

    fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.count("send_response");
        let exchange = self.current();
        let mut exchange = exchange.borrow_mut();
        if exchange.response.is_some() || exchange.gone {
            return Err(HostError::BadArgument);
        }
        exchange.response = Some(LocalResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn resume(&mut self, direction: Direction) -> Result<(), HostError> {
        self.count("resume");
        let exchange = self.current();
        let mut exchange = exchange.borrow_mut();
        if exchange.gone {
            return Err(HostError::BadArgument);
        }
        exchange.resumed.push(direction);
        exchange.stopped_at_headers.insert(direction, false);
        if exchange.holding.get(&direction) == Some(&true) {
            exchange.pass_on(direction);
        }
        Ok(())
    }

    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError> {
        self.count("set_effective_context");
        let live = self
            .envoy
            .state
            .borrow()
            .exchanges
            .get(&context_id)
            .is_some_and(|e| !e.borrow().gone);
        if !live {
            return Err(HostError::BadArgument);
        }
        self.effective.set(context_id);
        Ok(())
    }

    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        self.count("dispatch_http_call");
        let has = |name: &str| headers.iter().any(|(n, _)| *n == name);
        if !has(":method") || !has(":path") || !has(":authority") {
            return Err(HostError::BadArgument);
        }
        self.record_call(
            cluster,
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body.map(<[u8]>::to_vec),
            timeout_ms,
            None,
        )
    }

    fn dispatch_grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        self.count("dispatch_grpc_call");
        self.record_call(
            call.cluster,
            call.metadata
                .iter()
                .map(|(n, v)| ((*n).to_owned(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            Some(call.message.to_vec()),
            call.timeout_ms,
            Some((call.service.to_owned(), call.method.to_owned())),
        )
    }

    fn define_counter(&mut self, name: &str) -> Result<u32, HostError> {
        self.count("define_counter");
        let mut state = self.envoy.state.borrow_mut();
        if let Some(i) = state.metrics.iter().position(|(n, _)| n == name) {
            return Ok(i as u32);
        }
        state.metrics.push((name.to_owned(), 0));
        Ok(state.metrics.len() as u32 - 1)
    }

    fn increment_counter(&self, id: u32, delta: i64) {
        self.count("increment_counter");
        if let Some(m) = self.envoy.state.borrow_mut().metrics.get_mut(id as usize) {
            m.1 += delta;
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.count("log");
        self.envoy
            .state
            .borrow_mut()
            .logs
            .push((level, message.to_owned()));
    }
}

impl TestRequest {
    fn record_call(
        &self,
        cluster: &str,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        timeout_ms: u32,
        grpc: Option<(String, String)>,
    ) -> Result<u32, HostError> {
        let mut state = self.envoy.state.borrow_mut();
        if !state.clusters.iter().any(|c| c == cluster) {
            return Err(HostError::BadArgument);
        }
        let token = state.next_token;
        state.next_token += 1;
        state.http_calls.push(HttpCall {
            worker: self.worker,
            context_id: self.effective.get(),
            token,
            cluster: cluster.to_owned(),
            headers,
            body,
            timeout_ms,
            grpc,
        });
        Ok(token)
    }
}

/// Undeploying hands Envoy the counts each VM kept, as Envoy's shutdown of a VM does (the
/// root context's `on_done`).
impl<P: Policy> Drop for TestPolicy<P> {
    fn drop(&mut self) {
        for (vm, root) in &self.vms {
            vm.flush(root);
        }
    }
}

impl<P: Policy> std::fmt::Debug for TestPolicy<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestPolicy<{}>", P::NAME)
    }
}

/// A policy deployed on every worker of a [`TestEnvoy`] ([`TestEnvoy::deploy`]): requests go
/// through its phases as in Envoy, its timers run, its calls are answered by the test.
pub struct TestPolicy<P: Policy> {
    envoy: TestEnvoy,
    vms: Vec<(Rc<Vm<P>>, TestRequest)>,
    streams: RefCell<HashMap<u32, Rc<Stream<P>>>>,
}

impl<P: Policy> TestPolicy<P> {
    /// The compiled policy of `worker`'s VM.
    pub fn policy(&self, worker: usize) -> Rc<P> {
        match self.vms[worker % self.vms.len()].0.policy() {
            Some(policy) => policy,
            None => unreachable!("deployed VMs are configured"),
        }
    }

    /// A new request on `worker`.
    pub fn request(&self, worker: usize) -> TestRequest {
        self.envoy.request(worker)
    }

    /// The root context (background host) of `worker`'s VM.
    pub fn root(&self, worker: usize) -> &TestRequest {
        &self.vms[worker % self.vms.len()].1
    }

    /// Requests `worker`'s VM holds paused.
    pub fn paused(&self, worker: usize) -> usize {
        self.vms[worker % self.vms.len()].0.paused()
    }

    fn vm(&self, req: &TestRequest) -> Rc<Vm<P>> {
        self.vms[req.worker % self.vms.len()].0.clone()
    }

    fn stream(&self, req: &TestRequest) -> Rc<Stream<P>> {
        let vm = self.vm(req);
        self.streams
            .borrow_mut()
            .entry(req.id)
            .or_insert_with(|| Rc::new(vm.stream(req.id)))
            .clone()
    }

    /// Runs the request-headers phase (`end_of_stream`: no body follows).
    pub fn request_headers(&self, req: &mut TestRequest, end_of_stream: bool) -> Verdict {
        let stream = self.stream(req);
        req.effective.set(req.id);
        let verdict = self.vm(req).on_request_headers(&stream, req, end_of_stream);
        req.stop_at_headers(Direction::Request, verdict);
        verdict
    }

    /// A request without a body: its headers phase.
    pub fn send(&self, req: &mut TestRequest) -> Verdict {
        self.request_headers(req, true)
    }

    /// A request with a body: headers, then `body` in `chunk`-byte pieces (the last with end
    /// of stream), stopping at the first verdict that is not [`Verdict::Pause`] or
    /// [`Verdict::Continue`]. Returns the last verdict.
    pub fn send_body(&self, req: &mut TestRequest, body: &[u8], chunk: usize) -> Verdict {
        let mut verdict = self.request_headers(req, body.is_empty());
        if body.is_empty() || verdict == Verdict::Respond {
            return verdict;
        }
        let pieces: Vec<&[u8]> = body.chunks(chunk.max(1)).collect();
        for (i, piece) in pieces.iter().enumerate() {
            verdict = self.request_body(req, piece, i + 1 == pieces.len());
            if verdict == Verdict::Respond {
                break;
            }
        }
        verdict
    }

    /// A request body chunk arrives: Envoy hands the policy everything it holds buffered (its
    /// last body callback paused) plus `chunk`. While the request is paused at its headers,
    /// Envoy only buffers the chunk (the policy is not called: [`Verdict::Pause`]); the next
    /// chunk after it resumes brings all of it.
    pub fn request_body(
        &self,
        req: &mut TestRequest,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Verdict {
        self.body(req, Direction::Request, chunk, end_of_stream)
    }

    /// Request trailers arrive.
    pub fn request_trailers(&self, req: &mut TestRequest) -> Verdict {
        let stream = self.stream(req);
        req.effective.set(req.id);
        let verdict = self.vm(req).on_request_trailers(&stream, req);
        if verdict == Verdict::Continue {
            req.own().borrow_mut().pass_on(Direction::Request);
        }
        verdict
    }

    /// The response headers arrive (add upstream headers first with [`TestRequest::add_to`]).
    pub fn response_headers(&self, req: &mut TestRequest, end_of_stream: bool) -> Verdict {
        let stream = self.stream(req);
        req.effective.set(req.id);
        let verdict = self
            .vm(req)
            .on_response_headers(&stream, req, end_of_stream);
        req.stop_at_headers(Direction::Response, verdict);
        verdict
    }

    /// A response body chunk arrives.
    pub fn response_body(
        &self,
        req: &mut TestRequest,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Verdict {
        self.body(req, Direction::Response, chunk, end_of_stream)
    }

    fn body(
        &self,
        req: &mut TestRequest,
        direction: Direction,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Verdict {
        let buffered = {
            let exchange = req.own();
            let mut exchange = exchange.borrow_mut();
            let bytes = exchange.bodies.entry(body_buffer(direction)).or_default();
            bytes.extend_from_slice(chunk);
            let buffered = bytes.len();
            if exchange.stopped_at_headers.get(&direction) == Some(&true) {
                return Verdict::Pause;
            }
            buffered
        };
        let stream = self.stream(req);
        req.effective.set(req.id);
        let vm = self.vm(req);
        let verdict = match direction {
            Direction::Request => vm.on_request_body(&stream, req, buffered, end_of_stream),
            Direction::Response => vm.on_response_body(&stream, req, buffered, end_of_stream),
        };
        let exchange = req.own();
        let mut exchange = exchange.borrow_mut();
        match verdict {
            Verdict::Pause => {
                exchange.holding.insert(direction, true);
            }
            Verdict::Continue => exchange.pass_on(direction),
            Verdict::Respond => {}
        }
        verdict
    }

    /// The request is over (answered, or the client went away): runs the policy's `on_done`,
    /// after which the context is gone.
    pub fn done(&self, req: &mut TestRequest) {
        let Some(stream) = self.streams.borrow_mut().remove(&req.id) else {
            return;
        };
        req.effective.set(req.id);
        self.vm(req).on_done(&stream, req);
        req.own().borrow_mut().gone = true;
    }

    /// Runs every worker's timer for `ms` milliseconds of virtual time.
    pub fn tick(&self, ms: u64) {
        for _ in 0..ms {
            self.envoy.advance_ms(1);
            for worker in self.envoy.due_workers() {
                let (vm, root) = &self.vms[worker];
                let mut host = TestRequest {
                    envoy: self.envoy.clone(),
                    worker,
                    id: root.id,
                    effective: Cell::new(root.id),
                };
                vm.on_tick(&mut host);
            }
        }
    }

    /// Answers HTTP call `token` with `status`, `headers` and `body`, in the context that made it.
    pub fn respond(&self, token: u32, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut all = vec![(":status".to_owned(), status.to_string())];
        all.extend(
            headers
                .iter()
                .map(|(n, v)| ((*n).to_ascii_lowercase(), (*v).to_owned())),
        );
        self.answer(token, all, body, Some(status), false);
    }

    /// Answers gRPC call `token` with gRPC status `status` and the response `message`.
    pub fn respond_grpc(&self, token: u32, status: u16, message: &[u8]) {
        self.answer(token, Vec::new(), message, Some(status), true);
    }

    fn answer(
        &self,
        token: u32,
        headers: Vec<(String, String)>,
        body: &[u8],
        status: Option<u16>,
        grpc: bool,
    ) {
        let Some(call) = self
            .envoy
            .http_calls()
            .into_iter()
            .find(|c| c.token == token)
        else {
            return;
        };
        let exchange = self.envoy.exchange(call.context_id);
        {
            let mut exchange = exchange.borrow_mut();
            if exchange.gone {
                return; // Envoy cancels the calls of a request that went away.
            }
            exchange.maps.insert(HeaderMap::CallResponse, headers);
            let buffer = if grpc {
                BodyBuffer::GrpcResponse
            } else {
                BodyBuffer::CallResponse
            };
            exchange.bodies.insert(buffer, body.to_vec());
        }
        let response = CallResponse {
            token,
            status,
            body_size: body.len(),
            grpc,
        };
        let (vm, root) = &self.vms[call.worker % self.vms.len()];
        let mut host = TestRequest {
            envoy: self.envoy.clone(),
            worker: call.worker,
            id: call.context_id,
            effective: Cell::new(call.context_id),
        };
        if call.context_id == root.id {
            vm.on_background_response(&mut host, &response);
        } else {
            let stream = self.streams.borrow().get(&call.context_id).cloned();
            if let Some(stream) = stream {
                vm.on_call_response(&stream, &mut host, &response);
            }
        }
        let mut exchange = exchange.borrow_mut();
        exchange.maps.remove(&HeaderMap::CallResponse);
        exchange.bodies.remove(&BodyBuffer::CallResponse);
        exchange.bodies.remove(&BodyBuffer::GrpcResponse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_are_created_whatever_the_cas_and_never_deleted() {
        let envoy = TestEnvoy::new(2);
        let w = envoy.request(0);
        w.shared_set("k", b"v", Some(12345)).unwrap();
        let (v, cas) = w.shared_get("k").unwrap();
        assert_eq!(v.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            w.shared_set("k", b"x", Some(12345)),
            Err(HostError::CasMismatch)
        );
        w.shared_set("k", b"", cas).unwrap();
        let (v, cas) = w.shared_get("k").unwrap();
        assert_eq!((v, cas.is_some()), (None, true));
        assert_eq!(envoy.shared_keys_with_prefix("k"), 1);
        w.shared_set("k", b"y", None).unwrap();
    }

    #[test]
    fn timers_run_per_worker() {
        let envoy = TestEnvoy::new(2);
        envoy.request(0).set_tick_period_ms(10).unwrap();
        envoy.request(1).set_tick_period_ms(10).unwrap();
        let mut ticks = vec![0, 0];
        envoy.run_timers(100, |w, _| ticks[w] += 1);
        assert_eq!(ticks, vec![10, 10]);
    }

    #[test]
    fn the_last_queue_registrant_wins() {
        let envoy = TestEnvoy::new(2);
        let q = envoy.request(0).register_queue("wake").unwrap();
        assert_eq!(envoy.request(1).register_queue("wake").unwrap(), q);
        envoy.request(0).enqueue(q, b"x").unwrap();
        assert_eq!(envoy.take_queue_ready(), vec![(1, q)]);
        assert_eq!(
            envoy.request(1).dequeue(q).unwrap().as_deref(),
            Some(&b"x"[..])
        );
        assert_eq!(envoy.request(1).dequeue(q).unwrap(), None);
    }

    #[test]
    fn http_calls_need_a_cluster_and_pseudo_headers() {
        let envoy = TestEnvoy::new(1);
        envoy.add_cluster("idp");
        let mut r = envoy.request(0);
        let full = [
            (":method", "GET"),
            (":path", "/jwks"),
            (":authority", "idp"),
        ];
        assert_eq!(
            r.dispatch_http_call("nope", &full, None, 100),
            Err(HostError::BadArgument)
        );
        assert_eq!(
            r.dispatch_http_call("idp", &full[..2], None, 100),
            Err(HostError::BadArgument)
        );
        let token = r.dispatch_http_call("idp", &full, None, 100).unwrap();
        assert_eq!(envoy.http_calls()[0].token, token);
    }

    /// Holds every request at its headers until woken by a tick.
    struct Hold(std::cell::RefCell<Vec<u32>>);

    impl Policy for Hold {
        const NAME: &'static str = "hold";
        type State = ();
        fn configure(_: &[u8], _: &mut impl Host) -> Result<Self, crate::ConfigError> {
            Ok(Hold(Default::default()))
        }
        fn tick_period_ms(&self) -> u32 {
            10
        }
        fn on_tick(&self, _: &mut impl Host, wakes: &mut crate::Wakes) {
            wakes.wake_all(self.0.borrow_mut().drain(..));
        }
        fn on_request_headers(
            &self,
            r: &mut crate::Request<'_, ()>,
            _: &mut impl Host,
            _: bool,
        ) -> Verdict {
            self.0.borrow_mut().push(r.id);
            Verdict::Pause
        }
        fn on_request_body(
            &self,
            _: &mut crate::Request<'_, ()>,
            _: &mut impl Host,
            _: usize,
            _: bool,
        ) -> Verdict {
            Verdict::Continue
        }
    }

    #[test]
    fn a_request_paused_at_its_headers_gets_no_body_until_resumed() {
        let envoy = TestEnvoy::new(1);
        let p = envoy.deploy::<Hold>("").unwrap();
        let mut req = p.request(0);
        assert_eq!(p.request_headers(&mut req, false), Verdict::Pause);
        assert_eq!(
            p.request_body(&mut req, b"ab", false),
            Verdict::Pause,
            "buffered unseen"
        );
        assert!(req.forwarded_body(Direction::Request).is_empty());
        p.tick(10);
        assert_eq!(req.resumed(Direction::Request), 1);
        assert_eq!(p.request_body(&mut req, b"cd", true), Verdict::Continue);
        assert_eq!(req.forwarded_body(Direction::Request), b"abcd");
    }
}
