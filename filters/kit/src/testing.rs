//! An in-memory Envoy for native unit tests of policy logic.
//!
//! It reproduces the host semantics that bite (ANCHORS.md §1-2): one shared-data store for all
//! workers, with a process-wide CAS counter, writes to absent keys that succeed whatever CAS they
//! carry, and keys that are never deleted; timers per worker; shared queues whose last registrant
//! wins; HTTP calls that need a known cluster and the `:method`, `:path` and `:authority`
//! pseudo-headers; one process-wide value per metric name. Time is virtual and only moves when
//! the test says so.

use crate::host::{Host, HostError, LogLevel, SharedValue};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

type Interference = Box<dyn FnMut(&TestRequest)>;

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
}

struct Queue {
    name: String,
    owner: usize,
    items: VecDeque<Vec<u8>>,
}

/// An HTTP call a policy dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The worker that dispatched it.
    pub worker: usize,
    /// The token returned to the policy.
    pub token: u32,
    /// The target cluster.
    pub cluster: String,
    /// The request headers, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Option<Vec<u8>>,
    /// The timeout in milliseconds.
    pub timeout_ms: u32,
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
                tick_period_ms: vec![0; workers],
                next_tick_ms: vec![0; workers],
                ..State::default()
            })),
        }
    }

    /// A new request (or background context) on `worker`.
    pub fn request(&self, worker: usize) -> TestRequest {
        TestRequest {
            envoy: self.clone(),
            worker: worker % self.workers(),
            headers: Vec::new(),
            response_headers: Vec::new(),
            properties: BTreeMap::new(),
            response: None,
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

    /// A counter's value (0 if never defined).
    pub fn counter(&self, name: &str) -> i64 {
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
            for worker in 0..self.workers() {
                let due = {
                    let mut s = self.state.borrow_mut();
                    let period = s.tick_period_ms[worker];
                    if period > 0 && s.next_tick_ms[worker] <= s.now_ms {
                        s.next_tick_ms[worker] = s.now_ms + u64::from(period);
                        true
                    } else {
                        false
                    }
                };
                if due {
                    let mut host = self.request(worker);
                    on_tick(worker, &mut host);
                }
            }
        }
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
}

/// A request context (or a worker's root context) on one simulated worker. Implements [`Host`].
pub struct TestRequest {
    envoy: TestEnvoy,
    worker: usize,
    headers: Vec<(String, String)>,
    response_headers: Vec<(String, String)>,
    properties: BTreeMap<String, Vec<u8>>,
    response: Option<LocalResponse>,
}

impl TestRequest {
    /// Adds a request header (name lowercased), keeping earlier ones of the same name.
    pub fn add_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the downstream address Envoy reports (`source.address`), e.g. `10.0.0.1:5000`.
    pub fn set_peer(&mut self, address: &str) -> &mut Self {
        self.properties
            .insert("source\0address".into(), address.as_bytes().to_vec());
        self
    }

    /// The request headers as the upstream would see them.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The local response sent, if the policy answered the request itself.
    pub fn response(&self) -> Option<&LocalResponse> {
        self.response.as_ref()
    }

    /// The worker this context runs on.
    pub fn worker(&self) -> usize {
        self.worker
    }

    fn other_worker(&self) -> usize {
        (self.worker + 1) % self.envoy.workers()
    }
}

impl Host for TestRequest {
    fn request_header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        self.remove_request_header(name);
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn remove_request_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| n != name);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn set_response_header(&mut self, name: &str, value: &str) {
        self.response_headers.retain(|(n, _)| n != name);
        self.response_headers
            .push((name.to_owned(), value.to_owned()));
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join("\0")).cloned()
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.properties.insert(path.join("\0"), value.to_vec());
        Ok(())
    }

    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
        let state = self.envoy.state.borrow();
        Ok(match state.shared.get(key) {
            Some((value, cas)) => ((!value.is_empty()).then(|| value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
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
        let mut state = self.envoy.state.borrow_mut();
        let index = (queue_id as usize)
            .checked_sub(1)
            .ok_or(HostError::NotFound)?;
        let queue = state.queues.get_mut(index).ok_or(HostError::NotFound)?;
        Ok(queue.items.pop_front())
    }

    fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError> {
        let mut state = self.envoy.state.borrow_mut();
        state.tick_period_ms[self.worker] = period_ms;
        state.next_tick_ms[self.worker] = state.now_ms + u64::from(period_ms);
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.envoy.now_ms()
    }

    fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        if self.response.is_some() {
            return Err(HostError::BadArgument);
        }
        self.response = Some(LocalResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        let mut state = self.envoy.state.borrow_mut();
        let has = |name: &str| headers.iter().any(|(n, _)| *n == name);
        if !state.clusters.iter().any(|c| c == cluster)
            || !has(":method")
            || !has(":path")
            || !has(":authority")
        {
            return Err(HostError::BadArgument);
        }
        let token = state.next_token;
        state.next_token += 1;
        state.http_calls.push(HttpCall {
            worker: self.worker,
            token,
            cluster: cluster.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.map(<[u8]>::to_vec),
            timeout_ms,
        });
        Ok(token)
    }

    fn define_counter(&mut self, name: &str) -> Result<u32, HostError> {
        let mut state = self.envoy.state.borrow_mut();
        if let Some(i) = state.metrics.iter().position(|(n, _)| n == name) {
            return Ok(i as u32);
        }
        state.metrics.push((name.to_owned(), 0));
        Ok(state.metrics.len() as u32 - 1)
    }

    fn increment_counter(&self, id: u32, delta: i64) {
        if let Some(m) = self.envoy.state.borrow_mut().metrics.get_mut(id as usize) {
            m.1 += delta;
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.envoy
            .state
            .borrow_mut()
            .logs
            .push((level, message.to_owned()));
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
}
