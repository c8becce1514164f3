//! The proxy-wasm glue: a root context per worker owning that worker's [`Queue`] and timer, and
//! an HTTP context per request.
//!
//! Resuming a request or sending its 429 from the timer can run that request's own callbacks
//! synchronously (e.g. its response headers on a direct-response route), so the queue is never
//! borrowed across such a call.

use crate::{Outcome, Queue, RateHeaders, Retry, SpikeControl, NAME};
use palisade_kit::wasm::{configure_policy, resume_http_request, set_effective_context, WasmHost};
use palisade_kit::{Denial, Host, LogLevel};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
pub struct Root {
    policy: Option<Rc<SpikeControl>>,
    queue: Rc<RefCell<Queue>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(policy) = configure_policy(NAME, SpikeControl::configure) else {
            return false;
        };
        let period = policy.tick_period_ms();
        if period > 0 {
            let mut host = WasmHost;
            if let Err(e) = host.set_tick_period_ms(period) {
                host.log(
                    LogLevel::Error,
                    &format!("{NAME}: cannot start the timer: {e}"),
                );
                return false;
            }
        }
        self.policy = Some(Rc::new(policy));
        true
    }

    fn on_tick(&mut self) {
        let Some(policy) = &self.policy else { return };
        let mut host = WasmHost;
        let due = match self.queue.try_borrow_mut() {
            // Nothing held (the usual case): no host call at all.
            Ok(queue) if queue.waiting.is_empty() => return,
            Ok(mut queue) => queue.take_due(host.now_ms()),
            Err(_) => return,
        };
        for mut waiting in due {
            if set_effective_context(waiting.context_id).is_err() {
                // The request is gone without on_done having run: free its place.
                policy.abandon(&host, &waiting);
                continue;
            }
            match policy.retry(&mut host, &mut waiting) {
                Retry::Admitted(headers) => {
                    if let Some(headers) = headers {
                        if let Ok(mut queue) = self.queue.try_borrow_mut() {
                            queue.admitted_headers.push((waiting.context_id, headers));
                        }
                    }
                    if resume_http_request().is_err() {
                        host.log(
                            LogLevel::Debug,
                            &format!("{NAME}: a request went away while being resumed"),
                        );
                    }
                }
                Retry::Again => {
                    if let Ok(mut queue) = self.queue.try_borrow_mut() {
                        queue.waiting.push(waiting);
                    }
                }
                Retry::Rejected => {}
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            policy: self.policy.clone(),
            queue: self.queue.clone(),
            headers: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    policy: Option<Rc<SpikeControl>>,
    queue: Rc<RefCell<Queue>>,
    headers: Option<RateHeaders>,
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        // A request still waiting here has lost its client: free its queue place now.
        let gone = self.queue.try_borrow_mut().ok().and_then(|mut queue| {
            let _ = queue.take_headers(self.id);
            queue.take(self.id)
        });
        if let (Some(waiting), Some(policy)) = (gone, &self.policy) {
            policy.abandon(&WasmHost, &waiting);
        }
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let mut host = WasmHost;
        let Some(policy) = &self.policy else {
            let denial = Denial::new(503, "policy_unavailable", "The policy is not configured.");
            let _ = denial.send(&mut host);
            return Action::Pause;
        };
        match policy.on_request(&mut host, self.id) {
            Outcome::Allowed(headers) => {
                self.headers = headers;
                Action::Continue
            }
            Outcome::Wait(waiting) => match self.queue.try_borrow_mut() {
                Ok(mut queue) => {
                    queue.waiting.push(waiting);
                    Action::Pause
                }
                Err(_) => {
                    // Unreachable (one thread, no borrow held across calls), but never leave a
                    // request paused with nobody to resume it.
                    policy.abandon(&host, &waiting);
                    Action::Continue
                }
            },
            Outcome::Denied => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let headers = self.headers.take().or_else(|| {
            self.queue
                .try_borrow_mut()
                .ok()
                .and_then(|mut q| q.take_headers(self.id))
        });
        if let Some(headers) = headers {
            SpikeControl::add_headers(&mut WasmHost, &headers);
        }
        Action::Continue
    }
}
