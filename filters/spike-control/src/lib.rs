//! `spike-control`: smooth traffic spikes. Requests over a sliding-window limit are held (their
//! stream paused, no thread or busy wait) and re-evaluated every `delayTimeInMillis`, up to
//! `delayAttempts` times, before being rejected with 429; at most `queuingLimit` requests wait at
//! once per key.
//!
//! [`config`] reads the configuration and [`log`] is the sliding-window arithmetic.
//! [`SpikeControl`] decides over `impl Host`: a key's log lives in a bounded table of shared-data
//! slots ([`palisade_kit::slots`]), updated with compare-and-swap, so the limit and the queue
//! bound hold across all workers. A held request keeps its queue place ([`Waiting`]) in its
//! [`RequestState`] and answers [`Verdict::Pause`]; its worker's timer wakes it when it is due,
//! and [`Policy::on_wake`] decides again in that request's context: resume it, hold it again, or
//! answer 429. A client that goes away while held frees its place in [`Policy::on_done`].

pub mod config;
pub mod log;

use config::Config;
use log::{Admission, KeyLog, Limit};
use palisade_kit::quota::{self, Quota, RateHeaders};
use palisade_kit::shared::{HashKey, SharedError};
use palisade_kit::slots::{Change, SlotTable, Slotted};
use palisade_kit::{ConfigError, Host, LogLevel, Policy, Request, Verdict, Wakes};
use std::cell::RefCell;

/// How long after its last planned attempt a queue place is kept at most (see
/// [`KeyLog::waiters`]): generous scheduling slack.
const DEADLINE_SLACK_MS: u64 = 5_000;

impl From<Admission> for RateHeaders {
    fn from(a: Admission) -> Self {
        RateHeaders {
            limit: a.limit,
            remaining: a.remaining,
            reset_ms: a.reset_ms,
        }
    }
}

/// A held request's place in its key's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Its bucket key.
    pub key: String,
    /// Its limit.
    pub limit: Limit,
    /// Attempts left.
    pub attempts_left: u32,
    /// Its place in the shared queue (see [`KeyLog::waiters`]).
    pub deadline_ms: u64,
}

/// What the policy keeps per request.
#[derive(Debug, Default)]
pub struct RequestState {
    /// While the request is held: its queue place.
    pub waiting: Option<Waiting>,
    /// With `exposeHeaders`, once admitted: the `X-Ratelimit-*` values for its response.
    pub headers: Option<RateHeaders>,
}

palisade_kit::counters! {
    /// The counters only spike control has (the shared ones are in [`Quota`]).
    pub struct Counters {
        allowed_after_delay,
        delayed,
        rejected_after_delay,
        queue_full,
        client_gone,
    }
}

/// The compiled policy (one per worker).
pub struct SpikeControl {
    config: Config,
    table: SlotTable,
    quota: Quota,
    counters: Counters,
    /// This worker's held requests: context id and when it is next re-evaluated.
    held: RefCell<Vec<(u32, u64)>>,
}

/// A key's log update: done, or not run because every slot the key may use holds another key
/// at its limit (the first may be evicted at `free_at_ms`).
enum Logged<T> {
    Done(T),
    TableFull { free_at_ms: u64 },
}

/// What the shared-state update of a new request decided.
enum First {
    Admitted(Admission),
    Queued,
    Rejected { reset_ms: u64, queue_full: bool },
}

impl SpikeControl {
    /// Runs `f` on `key`'s log in the slot table and stores it when `f` says so. A key that
    /// took another key's slot is counted, then treated like any other.
    fn update<T>(
        &self,
        host: &impl Host,
        key: &str,
        limit: Limit,
        now: u64,
        mut f: impl FnMut(&mut KeyLog) -> (bool, T),
    ) -> Result<Logged<T>, SharedError> {
        let result = self.table.update(host, key, now, |state| {
            let mut log = state.and_then(KeyLog::decode).unwrap_or_default();
            log.prune(limit, now);
            let (write, result) = f(&mut log);
            if write {
                Change::Write(log.encode(), log.standing(limit, now), result)
            } else {
                Change::Keep(result)
            }
        });
        Ok(match result? {
            Slotted::Done(result) => Logged::Done(result),
            Slotted::Evicted(result) => {
                self.quota.counters.key_evicted.inc(host);
                Logged::Done(result)
            }
            Slotted::Full { free_at_ms } => Logged::TableFull { free_at_ms },
        })
    }

    /// Holds a request: its worker's timer wakes it at `due_ms`.
    fn hold(
        &self,
        request: &mut Request<'_, RequestState>,
        host: &impl Host,
        waiting: Waiting,
        due_ms: u64,
    ) -> Verdict {
        match self.held.try_borrow_mut() {
            Ok(mut held) => {
                held.push((request.id, due_ms));
                request.state.waiting = Some(waiting);
                Verdict::Pause
            }
            Err(_) => {
                // Unreachable (one thread, no borrow held across calls), but never leave a
                // request paused with nobody to wake it.
                self.abandon(host, &waiting);
                Verdict::Continue
            }
        }
    }

    /// Frees the queue place of a held request whose client went away.
    fn abandon(&self, host: &impl Host, waiting: &Waiting) {
        self.counters.client_gone.inc(host);
        let now = host.now_ms();
        let deadline = waiting.deadline_ms;
        let result = self.update(host, &waiting.key, waiting.limit, now, |log| {
            log.leave_queue(deadline);
            (true, ())
        });
        if let Err(e) = result {
            // The place frees itself at its deadline anyway.
            host.log(
                LogLevel::Warn,
                &format!("{}: could not free a queue place: {e:?}", Self::NAME),
            );
        }
    }

    /// The `X-Ratelimit-*` values of an admission, with `exposeHeaders`.
    fn headers(&self, admission: Admission) -> Option<RateHeaders> {
        self.config.expose_headers.then(|| admission.into())
    }

    /// The verdict on a shared-data failure: 503 with `blockOnUnknownQuota`, else let it pass.
    fn store_error(&self, host: &mut impl Host, error: &SharedError) -> Verdict {
        let block = self.config.block_on_unknown_quota;
        if self.quota.store_error(host, Self::NAME, error, block) {
            Verdict::Respond
        } else {
            Verdict::Continue
        }
    }

    fn reject(&self, host: &mut impl Host, limit: u64, reset_ms: u64) -> Verdict {
        let headers = self.config.expose_headers.then_some(RateHeaders {
            limit,
            remaining: 0,
            reset_ms: reset_ms.max(1),
        });
        quota::send_limited(host, &self.config.denial, reset_ms, headers);
        Verdict::Respond
    }
}

impl Policy for SpikeControl {
    const NAME: &'static str = "spike-control";
    type State = RequestState;

    fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let quota = Quota::define(
            host,
            Self::NAME,
            "This API's limits are per client application: authenticate the client.",
        )?;
        Ok(SpikeControl {
            table: SlotTable::new(&config.prefix, config.max_keys, HashKey::configured(host)?),
            counters: Counters::define(host, Self::NAME)?,
            config,
            quota,
            held: RefCell::new(Vec::new()),
        })
    }

    /// The timer period the worker needs (0: requests never wait, no timer).
    fn tick_period_ms(&self) -> u32 {
        if self.config.queues() {
            config::TICK_MS.min(self.config.delay_ms) as u32
        } else {
            0
        }
    }

    /// Wakes this worker's held requests that are due.
    fn on_tick(&self, host: &mut impl Host, wakes: &mut Wakes) {
        let Ok(mut held) = self.held.try_borrow_mut() else {
            return;
        };
        if held.is_empty() {
            return; // Nothing held (the usual case): no host call at all.
        }
        let now = host.now_ms();
        held.retain(|&(id, due_ms)| {
            if due_ms <= now {
                wakes.wake(id);
            }
            due_ms > now
        });
    }

    /// Decides on a new request: admit it, hold it, or answer 429.
    fn on_request_headers(
        &self,
        request: &mut Request<'_, RequestState>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        let config = &self.config;
        let Some((key, &limit)) =
            self.quota
                .bucket(host, &config.limits, config.key.as_ref(), &config.source)
        else {
            return Verdict::Respond;
        };
        let now = host.now_ms();
        let attempts = self.config.attempts;
        let delay = self.config.delay_ms;
        let deadline = now
            .saturating_add(delay.saturating_mul(u64::from(attempts)))
            .saturating_add(DEADLINE_SLACK_MS);
        let queues = self.config.queues();
        let queuing_limit = self.config.queuing_limit as usize;
        let result = self.update(host, &key, limit, now, |log| {
            let admission = log.admit(limit, now);
            if admission.allowed {
                (true, First::Admitted(admission))
            } else if queues && log.waiters.len() < queuing_limit {
                log.waiters.push(deadline);
                (true, First::Queued)
            } else {
                let first = First::Rejected {
                    reset_ms: admission.reset_ms,
                    queue_full: queues,
                };
                (false, first)
            }
        });
        match result {
            Ok(Logged::Done(First::Admitted(admission))) => {
                self.quota.counters.allowed.inc(host);
                request.state.headers = self.headers(admission);
                Verdict::Continue
            }
            Ok(Logged::Done(First::Queued)) => {
                self.counters.delayed.inc(host);
                let waiting = Waiting {
                    key,
                    limit,
                    attempts_left: attempts,
                    deadline_ms: deadline,
                };
                self.hold(request, host, waiting, now.saturating_add(delay))
            }
            Ok(Logged::Done(First::Rejected {
                reset_ms,
                queue_full,
            })) => {
                self.quota.counters.rejected.inc(host);
                if queue_full {
                    self.counters.queue_full.inc(host);
                }
                self.reject(host, limit.max, reset_ms)
            }
            Ok(Logged::TableFull { free_at_ms }) => {
                // Every slot this key may use holds a key at its limit (evicting one would hand
                // it a fresh quota): the newcomer waits until the first of them may go.
                self.quota.counters.key_table_full.inc(host);
                self.reject(host, limit.max, free_at_ms.saturating_sub(now))
            }
            Err(e) => self.store_error(host, &e),
        }
    }

    /// Re-evaluates a held request whose time has come (in its own context): resume it, hold it
    /// until its next attempt, or answer 429 after its last.
    fn on_wake(&self, request: &mut Request<'_, RequestState>, host: &mut impl Host) -> Verdict {
        let Some(mut waiting) = request.state.waiting.take() else {
            return Verdict::Continue; // not held (unreachable): nothing to decide
        };
        let now = host.now_ms();
        let last = waiting.attempts_left <= 1;
        let deadline = waiting.deadline_ms;
        let limit = waiting.limit;
        let result = self.update(host, &waiting.key, limit, now, |log| {
            let admission = log.admit(limit, now);
            if admission.allowed || last {
                log.leave_queue(deadline);
                (true, admission)
            } else {
                (false, admission)
            }
        });
        match result {
            Ok(Logged::Done(admission)) if admission.allowed => {
                self.counters.allowed_after_delay.inc(host);
                request.state.headers = self.headers(admission);
                Verdict::Continue
            }
            Ok(Logged::Done(_)) if !last => {
                waiting.attempts_left -= 1;
                let due_ms = now.saturating_add(self.config.delay_ms);
                self.hold(request, host, waiting, due_ms)
            }
            Ok(Logged::Done(admission)) => {
                self.counters.rejected_after_delay.inc(host);
                self.reject(host, limit.max, admission.reset_ms)
            }
            Ok(Logged::TableFull { free_at_ms }) => {
                // The key's slot was taken over after its state expired (only possible when the
                // request waited past its deadline): reject like a full table.
                self.quota.counters.key_table_full.inc(host);
                self.reject(host, limit.max, free_at_ms.saturating_sub(now))
            }
            Err(e) => self.store_error(host, &e),
        }
    }

    /// Adds the `X-Ratelimit-*` headers to an admitted request's response.
    fn on_response_headers(
        &self,
        request: &mut Request<'_, RequestState>,
        host: &mut impl Host,
        _: bool,
    ) -> Verdict {
        if let Some(headers) = request.state.headers.take() {
            headers.add_to_response(host);
        }
        Verdict::Continue
    }

    /// A request still held here has lost its client: free its queue place now.
    fn on_done(&self, request: &mut Request<'_, RequestState>, host: &mut impl Host) {
        let Some(waiting) = request.state.waiting.take() else {
            return;
        };
        if let Ok(mut held) = self.held.try_borrow_mut() {
            held.retain(|&(id, _)| id != request.id);
        }
        self.abandon(host, &waiting);
    }
}

// Left out when linked into the bundle (`dist/palisade.wasm`), which has its own entry point.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{ palisade_kit::wasm::start::<SpikeControl>(); }}

#[cfg(test)]
mod tests;
