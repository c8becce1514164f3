//! `spike-control`: smooth traffic spikes. Requests over a sliding-window limit are held (their
//! stream paused, no thread or busy wait) and re-evaluated every `delayTimeInMillis`, up to
//! `delayAttempts` times, before being rejected with 429; at most `queuingLimit` requests wait at
//! once per key.
//!
//! [`config`] reads the configuration and [`log`] is the sliding-window arithmetic.
//! [`SpikeControl`] decides over `impl Host`: a key's log lives in a bounded table of shared-data
//! slots ([`palisade_kit::slots`]), updated with compare-and-swap, so the limit and the queue
//! bound hold across all workers. A waiting request is a [`Waiting`] entry in its worker's
//! [`Queue`]; the worker's timer calls [`SpikeControl::retry`] for each one that is due, in that
//! request's context (`set_effective_context`), and the proxy-wasm glue at the bottom resumes it
//! or lets the local 429 stand.

pub mod config;
pub mod log;

use config::Config;
use log::{Admission, KeyLog, Limit};
use palisade_kit::metrics::Counter;
use palisade_kit::quota::{self, Quota};
use palisade_kit::shared::{SharedError, Update};
use palisade_kit::slots::{SlotTable, Slotted};
use palisade_kit::{ConfigError, Host, LogLevel};

/// The policy name (artifact and metric prefix).
pub const NAME: &str = "spike-control";

/// How long after its last planned attempt a queue place is kept at most (see
/// [`KeyLog::waiters`]): generous scheduling slack.
const DEADLINE_SLACK_MS: u64 = 5_000;

pub use palisade_kit::quota::RateHeaders;

impl From<Admission> for RateHeaders {
    fn from(a: Admission) -> Self {
        RateHeaders {
            limit: a.limit,
            remaining: a.remaining,
            reset_ms: a.reset_ms,
        }
    }
}

/// A request waiting for quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The proxy-wasm context of the paused request.
    pub context_id: u32,
    /// Its bucket key.
    pub key: String,
    /// Its limit.
    pub limit: Limit,
    /// When it is next re-evaluated.
    pub next_at_ms: u64,
    /// Attempts left.
    pub attempts_left: u32,
    /// Its place in the shared queue (see [`KeyLog::waiters`]).
    pub deadline_ms: u64,
}

/// One worker's waiting requests, and the headers of those admitted after waiting (for their
/// response phase).
#[derive(Debug, Default)]
pub struct Queue {
    /// Requests waiting for their next attempt.
    pub waiting: Vec<Waiting>,
    /// `X-Ratelimit-*` values of requests resumed by the timer, by context id.
    pub admitted_headers: Vec<(u32, RateHeaders)>,
}

impl Queue {
    /// Takes the entries due at `now`.
    pub fn take_due(&mut self, now: u64) -> Vec<Waiting> {
        let (due, later) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.next_at_ms <= now);
        self.waiting = later;
        due
    }

    /// Takes the entry of a context (whose request went away).
    pub fn take(&mut self, context_id: u32) -> Option<Waiting> {
        let i = self
            .waiting
            .iter()
            .position(|w| w.context_id == context_id)?;
        Some(self.waiting.swap_remove(i))
    }

    /// Takes the headers recorded for a resumed context.
    pub fn take_headers(&mut self, context_id: u32) -> Option<RateHeaders> {
        let i = self
            .admitted_headers
            .iter()
            .position(|(id, _)| *id == context_id)?;
        Some(self.admitted_headers.swap_remove(i).1)
    }
}

/// What happened to a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let it through; with `exposeHeaders`, add these headers to its response.
    Allowed(Option<RateHeaders>),
    /// Over the limit with room in the queue: pause it and retry it at `next_at_ms`.
    Wait(Waiting),
    /// A local response was sent.
    Denied,
}

/// What a retry of a waiting request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It fits now: resume it (with these response headers when exposed).
    Admitted(Option<RateHeaders>),
    /// Still no quota, attempts left: it was rescheduled (put it back in the queue).
    Again,
    /// No quota and no attempts left: the 429 was sent.
    Rejected,
}

/// The counters only spike control has (the shared ones are in [`Quota`]).
struct Counters {
    allowed_after_delay: Counter,
    delayed: Counter,
    rejected_after_delay: Counter,
    queue_full: Counter,
    client_gone: Counter,
}

/// The compiled policy.
pub struct SpikeControl {
    config: Config,
    table: SlotTable,
    quota: Quota,
    counters: Counters,
}

/// What the shared-state update of a new request decided.
enum First {
    Admitted(Admission),
    Queued,
    Rejected { reset_ms: u64, queue_full: bool },
}

impl SpikeControl {
    /// Compiles the configuration and defines the metrics.
    pub fn configure(json: &[u8], host: &mut impl Host) -> Result<Self, ConfigError> {
        let config = Config::compile(json)?;
        let quota = Quota::define(
            host,
            NAME,
            "This API's limits are per client application: authenticate the client.",
        )?;
        let counters = Counters {
            allowed_after_delay: quota::counter(host, NAME, "allowed_after_delay")?,
            delayed: quota::counter(host, NAME, "delayed")?,
            rejected_after_delay: quota::counter(host, NAME, "rejected_after_delay")?,
            queue_full: quota::counter(host, NAME, "queue_full")?,
            client_gone: quota::counter(host, NAME, "client_gone")?,
        };
        Ok(SpikeControl {
            table: SlotTable::new(&config.prefix, config.max_keys),
            config,
            quota,
            counters,
        })
    }

    /// The timer period the worker needs (0: requests never wait, no timer).
    pub fn tick_period_ms(&self) -> u32 {
        if self.config.queues() {
            config::TICK_MS.min(self.config.delay_ms) as u32
        } else {
            0
        }
    }

    fn update<T>(
        &self,
        host: &impl Host,
        key: &str,
        limit: Limit,
        now: u64,
        mut f: impl FnMut(&mut KeyLog) -> (bool, T),
    ) -> Result<Slotted<T>, SharedError> {
        self.table
            .update(host, key, now, log::stored_live_until, |state| {
                let mut log = state.and_then(KeyLog::decode).unwrap_or_default();
                log.prune(limit, now);
                let (write, result) = f(&mut log);
                if write {
                    Update::Write(log.encode(limit), result)
                } else {
                    Update::Keep(result)
                }
            })
    }

    /// Decides on a request whose headers have arrived. `context_id` identifies it if it must
    /// wait.
    pub fn on_request(&self, host: &mut impl Host, context_id: u32) -> Outcome {
        let config = &self.config;
        let Some((key, &limit)) =
            self.quota
                .bucket(host, &config.limits, config.key.as_ref(), &config.source)
        else {
            return Outcome::Denied;
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
            Ok(Slotted::Done(First::Admitted(admission))) => {
                self.quota.counters.allowed.inc(host);
                Outcome::Allowed(self.config.expose_headers.then(|| admission.into()))
            }
            Ok(Slotted::Done(First::Queued)) => {
                self.counters.delayed.inc(host);
                Outcome::Wait(Waiting {
                    context_id,
                    key,
                    limit,
                    next_at_ms: now.saturating_add(delay),
                    attempts_left: attempts,
                    deadline_ms: deadline,
                })
            }
            Ok(Slotted::Done(First::Rejected {
                reset_ms,
                queue_full,
            })) => {
                self.quota.counters.rejected.inc(host);
                if queue_full {
                    self.counters.queue_full.inc(host);
                }
                self.reject(host, limit.max, reset_ms);
                Outcome::Denied
            }
            Ok(Slotted::Full { free_at_ms }) => {
                self.quota.counters.key_table_full.inc(host);
                self.reject(host, limit.max, free_at_ms.saturating_sub(now));
                Outcome::Denied
            }
            Err(e) => {
                if self
                    .quota
                    .store_error(host, NAME, &e, config.block_on_unknown_quota)
                {
                    Outcome::Denied
                } else {
                    Outcome::Allowed(None)
                }
            }
        }
    }

    /// Re-evaluates a waiting request whose time has come; `host` acts on that request's context.
    /// On [`Retry::Again`] `waiting` has been rescheduled.
    pub fn retry(&self, host: &mut impl Host, waiting: &mut Waiting) -> Retry {
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
            Ok(Slotted::Done(admission)) if admission.allowed => {
                self.counters.allowed_after_delay.inc(host);
                Retry::Admitted(self.config.expose_headers.then(|| admission.into()))
            }
            Ok(Slotted::Done(_)) if !last => {
                waiting.attempts_left -= 1;
                waiting.next_at_ms = now.saturating_add(self.config.delay_ms);
                Retry::Again
            }
            Ok(Slotted::Done(admission)) => {
                self.counters.rejected_after_delay.inc(host);
                self.reject(host, limit.max, admission.reset_ms);
                Retry::Rejected
            }
            Ok(Slotted::Full { free_at_ms }) => {
                // The key's slot was taken over after its state expired (only possible when the
                // request waited past its deadline): reject like a full table.
                self.quota.counters.key_table_full.inc(host);
                self.reject(host, limit.max, free_at_ms.saturating_sub(now));
                Retry::Rejected
            }
            Err(e) => {
                if self
                    .quota
                    .store_error(host, NAME, &e, self.config.block_on_unknown_quota)
                {
                    Retry::Rejected
                } else {
                    Retry::Admitted(None)
                }
            }
        }
    }

    /// Frees the queue place of a waiting request whose client went away.
    pub fn abandon(&self, host: &impl Host, waiting: &Waiting) {
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
                &format!("{NAME}: could not free a queue place: {e:?}"),
            );
        }
    }

    fn reject(&self, host: &mut impl Host, limit: u64, reset_ms: u64) {
        let headers = self.config.expose_headers.then_some(RateHeaders {
            limit,
            remaining: 0,
            reset_ms: reset_ms.max(1),
        });
        quota::send_limited(host, &self.config.denial, reset_ms, headers);
    }

    /// Adds the `X-Ratelimit-*` headers to an allowed request's response.
    pub fn add_headers(host: &mut impl Host, headers: &RateHeaders) {
        headers.add_to_response(host);
    }
}

#[cfg(target_arch = "wasm32")]
mod glue;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(glue::Root::default()));
}}

#[cfg(test)]
mod tests;
