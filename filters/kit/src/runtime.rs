//! The policy runtime: the one shape every policy has, and the host-agnostic driver that runs it.
//!
//! A policy implements [`Policy`]: it compiles its configuration once per VM, keeps per-request
//! [`Policy::State`], and answers the callbacks it cares about (request headers, body and
//! trailers; response headers and body; answers to its outbound calls; background ticks; wake-ups
//! of paused requests). Every callback returns a [`Verdict`]. [`Vm`] turns those callbacks into
//! what Envoy needs: the unconfigured-policy 503, paused requests remembered until something
//! wakes them, resuming them, and switching the effective context back and forth. `wasm` binds
//! a [`Vm`] to proxy-wasm's contexts (`palisade_kit::wasm::start::<P>()` is a policy's whole
//! `main`); `testing::TestPolicy` drives the same [`Vm`] natively, so everything but the ABI
//! is unit-tested without Envoy.

use crate::config::ConfigError;
use crate::denial::Denial;
use crate::host::{BodyBuffer, Direction, HeaderMap, Host, LogLevel};
use crate::metrics::{PendingCounts, FLUSH_PERIOD_MS};
use crate::view::HostView;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// What a policy decided in a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request (or response) go on. From an asynchronous callback ([`Policy::on_wake`],
    /// [`Policy::on_call_response`]) this resumes a paused request.
    Continue,
    /// Hold it: a header callback waits for a wake-up or a call's answer; a body callback keeps
    /// buffering until a later chunk decides.
    Pause,
    /// The policy answered the request itself (a denial); it stops here.
    Respond,
}

/// The answer to an outbound HTTP or gRPC call, handed to the context that made the call.
/// Headers and body are read through the host only if the policy asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallResponse {
    /// The call's token, as returned by `dispatch_http_call` / `dispatch_grpc_call`.
    pub token: u32,
    /// The HTTP `:status` (Envoy reports connection failures and timeouts as 503/504), or the
    /// gRPC status code (0 is OK); `None` when there is none.
    pub status: Option<u16>,
    /// The response body's size in bytes.
    pub body_size: usize,
    /// Whether this answers a gRPC call (then the body is the response message).
    pub grpc: bool,
}

impl CallResponse {
    /// The whole body, or `None` when it is larger than `max` bytes (a peer cannot make the
    /// policy copy an unbounded answer).
    pub fn body(&self, host: &impl Host, max: usize) -> Option<Vec<u8>> {
        if self.body_size > max {
            return None;
        }
        let buffer = if self.grpc {
            BodyBuffer::GrpcResponse
        } else {
            BodyBuffer::CallResponse
        };
        let body = host.body(buffer, 0, self.body_size);
        (body.len() == self.body_size).then_some(body)
    }

    /// A response header (HTTP calls only).
    pub fn header(&self, host: &impl Host, name: &str) -> Option<String> {
        host.header(HeaderMap::CallResponse, name)
    }

    /// Whether the call succeeded: HTTP 200 (or gRPC status 0).
    pub fn ok(&self) -> bool {
        self.status == Some(if self.grpc { 0 } else { 200 })
    }
}

/// Paused requests to wake after the current callback: [`Vm`] then calls [`Policy::on_wake`]
/// for each one that is still paused, in order, with its own state and as its effective context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wakes(Vec<u32>);

impl Wakes {
    /// Wakes request `context_id` (if it is paused) after the current callback.
    pub fn wake(&mut self, context_id: u32) {
        self.0.push(context_id);
    }

    /// Wakes each of `context_ids`.
    pub fn wake_all(&mut self, context_ids: impl IntoIterator<Item = u32>) {
        self.0.extend(context_ids);
    }

    /// Whether nothing is to be woken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One request as a policy callback sees it.
pub struct Request<'a, S> {
    /// Envoy's context id of this request: the id to remember for waking it later.
    pub id: u32,
    /// The policy's state for this request.
    pub state: &'a mut S,
    /// Other paused requests to wake after this callback.
    pub wakes: &'a mut Wakes,
}

/// A policy. Only [`Policy::NAME`] and [`Policy::configure`] are required; every callback
/// defaults to letting the request go on untouched.
///
/// The policy value is shared by every request of a VM (one VM per Envoy worker), so state that
/// changes lives in [`Policy::State`] (per request), in interior-mutable fields (per VM), or in
/// shared data (per Envoy).
pub trait Policy: Sized + 'static {
    /// The policy's name, kebab-case: also its artifact (`<name>.wasm`) and metric prefix
    /// (`palisade_<name>_*`, with `_` for `-`).
    const NAME: &'static str;

    /// What the policy keeps per request (`()` when nothing).
    type State: Default + 'static;

    /// Compiles the JSON configuration (empty when none was given) once per VM. An error stops
    /// the filter: Envoy refuses the configuration, and the log names the field.
    fn configure(config: &[u8], host: &mut impl Host) -> Result<Self, ConfigError>;

    /// The background timer period per VM (0: no timer, the default).
    fn tick_period_ms(&self) -> u32 {
        0
    }

    /// The background timer fired (on every worker's VM: see `fetch::Fetcher` for work done
    /// once per Envoy).
    fn on_tick(&self, host: &mut impl Host, wakes: &mut Wakes) {
        let _ = (host, wakes);
    }

    /// A call made from a background callback was answered.
    fn on_background_response(
        &self,
        host: &mut impl Host,
        response: &CallResponse,
        wakes: &mut Wakes,
    ) {
        let _ = (host, response, wakes);
    }

    /// The request headers arrived (`end_of_stream`: the request has no body).
    fn on_request_headers(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let _ = (request, host, end_of_stream);
        Verdict::Continue
    }

    /// A request body chunk arrived; `buffered` bytes are readable with
    /// `host.body(BodyBuffer::Request, ..)` (everything held since the last [`Verdict::Continue`]).
    fn on_request_body(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let _ = (request, host, buffered, end_of_stream);
        Verdict::Continue
    }

    /// The request trailers arrived (the request body is complete).
    fn on_request_trailers(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
    ) -> Verdict {
        let _ = (request, host);
        Verdict::Continue
    }

    /// The response headers arrived (also for local replies, denials included).
    fn on_response_headers(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let _ = (request, host, end_of_stream);
        Verdict::Continue
    }

    /// A response body chunk arrived (see [`Policy::on_request_body`]).
    fn on_response_body(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let _ = (request, host, buffered, end_of_stream);
        Verdict::Continue
    }

    /// A call this request made was answered. The verdict says what becomes of the request
    /// if it is paused: [`Verdict::Continue`] resumes it.
    fn on_call_response(
        &self,
        request: &mut Request<'_, Self::State>,
        host: &mut impl Host,
        response: &CallResponse,
    ) -> Verdict {
        let _ = (request, host, response);
        Verdict::Continue
    }

    /// A paused request was woken (see [`Wakes`]); decide again. [`Verdict::Pause`] keeps it
    /// waiting. Make no outbound call here: the proxy-wasm SDK routes a call's answer to the
    /// context Envoy called into (the one that woke this request), not to this request.
    fn on_wake(&self, request: &mut Request<'_, Self::State>, host: &mut impl Host) -> Verdict {
        let _ = (request, host);
        Verdict::Continue
    }

    /// The request is over (answered, reset, or the client went away), paused or not.
    fn on_done(&self, request: &mut Request<'_, Self::State>, host: &mut impl Host) {
        let _ = (request, host);
    }
}

/// The response for a request whose policy is not configured. Unreachable in practice (Envoy
/// does not run a filter whose configure failed), but if it happens, deny rather than let
/// traffic through unchecked.
pub fn unavailable() -> Denial {
    Denial::new(503, "policy_unavailable", "The policy is not configured.")
}

/// One request's state as the runtime keeps it.
pub struct Stream<P: Policy> {
    id: u32,
    state: Rc<RefCell<P::State>>,
}

/// A paused request: its state, and the direction to resume.
type Paused<S> = (Rc<RefCell<S>>, Direction);

/// A policy in one VM (one per Envoy worker): its compiled configuration and the requests it
/// holds paused.
pub struct Vm<P: Policy> {
    root_id: u32,
    policy: RefCell<Option<Rc<P>>>,
    paused: RefCell<HashMap<u32, Paused<P::State>>>,
    /// The policy's counts not yet added to Envoy's counters (flushed on the timer).
    counts: RefCell<PendingCounts>,
    /// The timer runs at the shorter of the flush period and the policy's own period; the
    /// policy's `on_tick` runs every `policy_every`-th tick (0: never), counted in `ticks`.
    policy_every: Cell<u32>,
    ticks: Cell<u32>,
}

impl<P: Policy> Vm<P> {
    /// A VM whose background callbacks run in context `root_id`.
    pub fn new(root_id: u32) -> Self {
        Vm {
            root_id,
            policy: RefCell::new(None),
            paused: RefCell::new(HashMap::new()),
            counts: RefCell::new(PendingCounts::default()),
            policy_every: Cell::new(0),
            ticks: Cell::new(0),
        }
    }

    /// The compiled policy, once configured.
    pub fn policy(&self) -> Option<Rc<P>> {
        self.policy.borrow().clone()
    }

    /// Number of requests held paused.
    pub fn paused(&self) -> usize {
        self.paused.borrow().len()
    }

    /// Compiles the configuration and starts the policy's timer. On error it logs the error
    /// naming the policy and the field, and returns false: Envoy refuses the filter.
    pub fn configure(&self, config: &[u8], host: &mut impl Host) -> bool {
        let (configured, counts) = PendingCounts::collect(|| P::configure(config, host));
        let policy = match configured {
            Ok(policy) => policy,
            Err(err) => {
                host.log(LogLevel::Error, &format!("{}: {err}", P::NAME));
                *self.policy.borrow_mut() = None;
                return false;
            }
        };
        // One timer for both: a policy period longer than the flush period is rounded up to
        // a whole number of flush periods.
        let policy_period = policy.tick_period_ms();
        let period = match policy_period {
            0 => FLUSH_PERIOD_MS,
            p => p.min(FLUSH_PERIOD_MS),
        };
        if let Err(e) = host.set_tick_period_ms(period) {
            host.log(
                LogLevel::Error,
                &format!("{}: cannot start the timer: {e}", P::NAME),
            );
            return false;
        }
        self.policy_every.set(policy_period.div_ceil(period));
        self.ticks.set(0);
        self.flush(host);
        if let Ok(mut kept) = self.counts.try_borrow_mut() {
            *kept = counts;
        }
        *self.policy.borrow_mut() = Some(Rc::new(policy));
        true
    }

    /// Adds the counts kept in this VM to Envoy's counters (on every tick, and when the VM
    /// shuts down).
    pub fn flush(&self, host: &impl Host) {
        if let Ok(counts) = self.counts.try_borrow() {
            counts.flush(host);
        }
    }

    /// A new request with context id `id`.
    pub fn stream(&self, id: u32) -> Stream<P> {
        Stream {
            id,
            state: Rc::new(RefCell::new(P::State::default())),
        }
    }

    /// The background timer fired.
    pub fn on_tick(&self, host: &mut impl Host) {
        self.flush(host);
        let Some(policy) = self.policy() else { return };
        let every = self.policy_every.get();
        if every == 0 {
            return;
        }
        let tick = self.ticks.get() + 1;
        if tick < every {
            self.ticks.set(tick);
            return;
        }
        self.ticks.set(0);
        let mut wakes = Wakes::default();
        policy.on_tick(&mut HostView::new(host), &mut wakes);
        self.wake(&policy, host, wakes, self.root_id);
    }

    /// A background call was answered.
    pub fn on_background_response(&self, host: &mut impl Host, response: &CallResponse) {
        let Some(policy) = self.policy() else { return };
        let mut wakes = Wakes::default();
        policy.on_background_response(&mut HostView::new(host), response, &mut wakes);
        self.wake(&policy, host, wakes, self.root_id);
    }

    /// Request headers.
    pub fn on_request_headers(
        &self,
        stream: &Stream<P>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let Some(policy) = self.policy() else {
            unavailable().send(host);
            return Verdict::Respond;
        };
        self.run(&policy, stream, host, Direction::Request, |p, r, h| {
            p.on_request_headers(r, h, end_of_stream)
        })
    }

    /// A request body chunk.
    pub fn on_request_body(
        &self,
        stream: &Stream<P>,
        host: &mut impl Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let Some(policy) = self.policy() else {
            return Verdict::Pause;
        };
        self.run(&policy, stream, host, Direction::Request, |p, r, h| {
            p.on_request_body(r, h, buffered, end_of_stream)
        })
    }

    /// Request trailers.
    pub fn on_request_trailers(&self, stream: &Stream<P>, host: &mut impl Host) -> Verdict {
        let Some(policy) = self.policy() else {
            return Verdict::Pause;
        };
        self.run(&policy, stream, host, Direction::Request, |p, r, h| {
            p.on_request_trailers(r, h)
        })
    }

    /// Response headers.
    pub fn on_response_headers(
        &self,
        stream: &Stream<P>,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> Verdict {
        let Some(policy) = self.policy() else {
            return Verdict::Continue;
        };
        self.run(&policy, stream, host, Direction::Response, |p, r, h| {
            p.on_response_headers(r, h, end_of_stream)
        })
    }

    /// A response body chunk.
    pub fn on_response_body(
        &self,
        stream: &Stream<P>,
        host: &mut impl Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> Verdict {
        let Some(policy) = self.policy() else {
            return Verdict::Continue;
        };
        self.run(&policy, stream, host, Direction::Response, |p, r, h| {
            p.on_response_body(r, h, buffered, end_of_stream)
        })
    }

    /// A call made by this request was answered. Resumes the request if it was paused and the
    /// policy says [`Verdict::Continue`].
    pub fn on_call_response(
        &self,
        stream: &Stream<P>,
        host: &mut impl Host,
        response: &CallResponse,
    ) {
        let Some(policy) = self.policy() else { return };
        let was_paused = self.paused.borrow_mut().remove(&stream.id);
        let direction = was_paused.as_ref().map_or(Direction::Request, |p| p.1);
        let verdict = self.run(&policy, stream, host, direction, |p, r, h| {
            p.on_call_response(r, h, response)
        });
        match verdict {
            Verdict::Continue if was_paused.is_some() => {
                let _ = host.resume(direction);
            }
            // Envoy is not holding a request that was not paused: nothing to wake later.
            Verdict::Pause if was_paused.is_none() => {
                self.paused.borrow_mut().remove(&stream.id);
            }
            _ => {}
        }
    }

    /// The request is over.
    pub fn on_done(&self, stream: &Stream<P>, host: &mut impl Host) {
        self.paused.borrow_mut().remove(&stream.id);
        let Some(policy) = self.policy() else { return };
        let mut wakes = Wakes::default();
        {
            let Ok(mut state) = stream.state.try_borrow_mut() else {
                return;
            };
            let mut request = Request {
                id: stream.id,
                state: &mut *state,
                wakes: &mut wakes,
            };
            policy.on_done(&mut request, &mut HostView::new(host));
        }
        self.wake(&policy, host, wakes, stream.id);
    }

    /// Runs one callback of `stream`, remembers it if it pauses, then wakes what it asked to.
    fn run<H: Host>(
        &self,
        policy: &Rc<P>,
        stream: &Stream<P>,
        host: &mut H,
        direction: Direction,
        callback: impl FnOnce(&P, &mut Request<'_, P::State>, &mut HostView<'_, H>) -> Verdict,
    ) -> Verdict {
        let mut wakes = Wakes::default();
        let verdict = {
            // Never borrowed across a host call that can re-enter this request (the borrow ends
            // before any wake-up or resume).
            let Ok(mut state) = stream.state.try_borrow_mut() else {
                return Verdict::Pause;
            };
            let mut request = Request {
                id: stream.id,
                state: &mut *state,
                wakes: &mut wakes,
            };
            // One view per callback: the policy's reads share one copy of each header map.
            callback(policy, &mut request, &mut HostView::new(host))
        };
        if verdict == Verdict::Pause {
            self.paused
                .borrow_mut()
                .insert(stream.id, (stream.state.clone(), direction));
        } else if !self.paused.borrow().is_empty() {
            // A request that gets a synchronous callback is not paused (any more).
            self.paused.borrow_mut().remove(&stream.id);
        }
        self.wake(policy, host, wakes, stream.id);
        verdict
    }

    /// Wakes paused requests (and those their wake-ups wake), then makes `current` the
    /// effective context again.
    fn wake(&self, policy: &Rc<P>, host: &mut impl Host, wakes: Wakes, current: u32) {
        if wakes.is_empty() {
            return;
        }
        let mut queue = std::collections::VecDeque::from(wakes.0);
        while let Some(id) = queue.pop_front() {
            let Some((state, direction)) = self.paused.borrow_mut().remove(&id) else {
                continue; // not paused (any more): already decided, or gone
            };
            if host.set_effective_context(id).is_err() {
                continue; // the request went away without its on_done yet
            }
            let mut more = Wakes::default();
            let verdict = {
                let Ok(mut borrowed) = state.try_borrow_mut() else {
                    continue;
                };
                let mut request = Request {
                    id,
                    state: &mut *borrowed,
                    wakes: &mut more,
                };
                policy.on_wake(&mut request, &mut HostView::new(host))
            };
            match verdict {
                Verdict::Continue => {
                    // May run this request's next callbacks at once: nothing is borrowed here.
                    if host.resume(direction).is_err() {
                        host.log(
                            LogLevel::Debug,
                            &format!("{}: a request went away while resumed", P::NAME),
                        );
                    }
                }
                Verdict::Pause => {
                    self.paused.borrow_mut().insert(id, (state, direction));
                }
                Verdict::Respond => {}
            }
            queue.extend(more.0);
        }
        let _ = host.set_effective_context(current);
    }
}
