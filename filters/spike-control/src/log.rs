//! The sliding-window log of one key: the times of the requests admitted in the last period and
//! the deadlines of the requests waiting for quota. Plain data and an explicit clock, so the
//! arithmetic is unit tested without a host.

use palisade_kit::slots::Standing;

/// At most `max` requests in any `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per window.
    pub max: u64,
    /// Window length in milliseconds.
    pub period_ms: u64,
}

/// Requests of one millisecond: `(time in ms since the epoch, how many)`.
pub type Run = (u64, u16);

/// One key's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLog {
    /// When the admitted requests of the current window arrived, run-length encoded by
    /// millisecond: a burst (what spike control is for) costs one entry per millisecond, not one
    /// per request. Exact, unlike a sliding-window estimate.
    pub times: Vec<Run>,
    /// One entry per waiting request: the time by which it will have left the queue for sure.
    /// Entries past their deadline are ignored, so a waiter whose worker never came back (a VM
    /// that died) cannot hold a queue place forever.
    pub waiters: Vec<u64>,
}

/// What admitting one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Whether the request fits (and was logged).
    pub allowed: bool,
    /// `X-Ratelimit-Limit`.
    pub limit: u64,
    /// `X-Ratelimit-Remaining`: requests left in the window after this one.
    pub remaining: u64,
    /// `X-Ratelimit-Reset` (Flex): 0 while quota remains, else milliseconds until the oldest
    /// logged request leaves the window (when the next one fits).
    pub reset_ms: u64,
}

impl KeyLog {
    /// Forgets requests that left the window and waiters past their deadline.
    pub fn prune(&mut self, limit: Limit, now: u64) {
        self.times
            .retain(|(t, n)| *n > 0 && t.saturating_add(limit.period_ms) > now);
        self.waiters.retain(|d| *d > now);
    }

    /// Milliseconds until the oldest logged request leaves the window.
    fn oldest_exit_ms(&self, limit: Limit, now: u64) -> u64 {
        self.times
            .iter()
            .map(|(t, _)| *t)
            .min()
            .map_or(0, |t| t.saturating_add(limit.period_ms).saturating_sub(now))
    }

    /// Requests logged (call [`KeyLog::prune`] first to count the current window only).
    pub fn count(&self) -> u64 {
        self.times.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// Logs a request at `now` if it fits (call [`KeyLog::prune`] first).
    pub fn admit(&mut self, limit: Limit, now: u64) -> Admission {
        let count = self.count();
        let fits = count < limit.max;
        if fits {
            match self.times.last_mut() {
                Some((t, n)) if *t == now && *n < u16::MAX => *n += 1,
                _ => self.times.push((now, 1)),
            }
        }
        let remaining = limit.max.saturating_sub(count + u64::from(fits));
        Admission {
            allowed: fits,
            limit: limit.max,
            remaining,
            reset_ms: if remaining > 0 {
                0
            } else {
                self.oldest_exit_ms(limit, now).max(1)
            },
        }
    }

    /// Removes one waiter with this deadline, if present.
    pub fn leave_queue(&mut self, deadline: u64) {
        if let Some(i) = self.waiters.iter().position(|d| *d == deadline) {
            self.waiters.swap_remove(i);
        }
    }

    /// Until when this state matters (afterwards its slot may be reused).
    pub fn live_until(&self, limit: Limit) -> u64 {
        let last = self
            .times
            .iter()
            .map(|(t, _)| *t)
            .max()
            .map_or(0, |t| t.saturating_add(limit.period_ms));
        last.max(self.waiters.iter().copied().max().unwrap_or(0))
    }

    /// How much this state (pruned at `now`) is worth keeping in the slot table: at its limit
    /// while the window is full or requests wait in its queue (evicting it would forget them),
    /// loaded by the share of the window used.
    pub fn standing(&self, limit: Limit, now: u64) -> Standing {
        let count = self.count();
        let full_until = if count >= limit.max {
            now.saturating_add(self.oldest_exit_ms(limit, now))
        } else {
            0
        };
        let queue_until = self.waiters.iter().copied().max().unwrap_or(0);
        Standing {
            live_until: self.live_until(limit),
            limited_until: full_until.max(queue_until),
            load: Standing::load_of(count, limit.max),
        }
    }

    /// `runs count (u32) | runs | waiters count (u32) | waiters`, little endian, 8 bytes per run
    /// (`time << 16 | count`: times fit 48 bits until the year 10889) and per waiter.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * (self.times.len() + self.waiters.len()));
        let runs = self.times.iter().map(|(t, n)| (t << 16) | u64::from(*n));
        push_list(&mut out, self.times.len(), runs);
        push_list(&mut out, self.waiters.len(), self.waiters.iter().copied());
        out
    }

    /// Reads a stored state (`None` for garbage).
    pub fn decode(bytes: &[u8]) -> Option<KeyLog> {
        let mut at = 0;
        let mut list = |bytes: &[u8]| -> Option<Vec<u64>> {
            let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4;
            let body = bytes.get(at..at.checked_add(n.checked_mul(8)?)?)?;
            at += body.len();
            Some(
                body.chunks_exact(8)
                    .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
                    .collect(),
            )
        };
        let times = list(bytes)?
            .into_iter()
            .map(|v| (v >> 16, (v & 0xffff) as u16))
            .collect();
        let waiters = list(bytes)?;
        Some(KeyLog { times, waiters })
    }
}

fn push_list(out: &mut Vec<u8>, len: usize, values: impl Iterator<Item = u64>) {
    out.extend_from_slice(&(len.min(u32::MAX as usize) as u32).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub use palisade_kit::quota::retry_after_secs;

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const TWO_PER_SECOND: Limit = Limit {
        max: 2,
        period_ms: 1000,
    };

    #[test]
    fn sliding_log_admits_max_per_any_period() {
        let mut log = KeyLog::default();
        let l = TWO_PER_SECOND;
        let a = log.admit(l, T0);
        assert_eq!((a.allowed, a.remaining, a.reset_ms), (true, 1, 0));
        log.prune(l, T0 + 600);
        let a = log.admit(l, T0 + 600);
        assert_eq!((a.allowed, a.remaining, a.reset_ms), (true, 0, 400));
        log.prune(l, T0 + 700);
        let a = log.admit(l, T0 + 700);
        assert_eq!((a.allowed, a.remaining, a.reset_ms), (false, 0, 300));
        // The first request leaves the window at T0 + 1000 exactly.
        log.prune(l, T0 + 999);
        assert!(!log.admit(l, T0 + 999).allowed);
        log.prune(l, T0 + 1000);
        let a = log.admit(l, T0 + 1000);
        assert_eq!((a.allowed, a.reset_ms), (true, 600));
        assert_eq!(log.times, vec![(T0 + 600, 1), (T0 + 1000, 1)]);
    }

    #[test]
    fn bursts_in_one_millisecond_are_one_entry_and_leave_together() {
        let mut log = KeyLog::default();
        let l = Limit {
            max: 5,
            period_ms: 1000,
        };
        for _ in 0..3 {
            assert!(log.admit(l, T0).allowed);
        }
        assert!(log.admit(l, T0 + 1).allowed);
        assert!(log.admit(l, T0 + 1).allowed);
        assert_eq!(log.times, vec![(T0, 3), (T0 + 1, 2)]);
        let a = log.admit(l, T0 + 2);
        assert_eq!((a.allowed, a.reset_ms), (false, 998));
        // The first millisecond's three leave at once: three fit again.
        log.prune(l, T0 + 1000);
        assert_eq!(log.count(), 2);
        for _ in 0..3 {
            assert!(log.admit(l, T0 + 1000).allowed);
        }
        assert!(!log.admit(l, T0 + 1000).allowed);
        let bytes = log.encode();
        assert_eq!(bytes.len(), 4 + 2 * 8 + 4);
        assert_eq!(KeyLog::decode(&bytes), Some(log));
    }

    #[test]
    fn waiters_expire_and_leave() {
        let mut log = KeyLog {
            times: vec![],
            waiters: vec![T0 + 10, T0 + 20, T0 + 20],
        };
        log.leave_queue(T0 + 20);
        assert_eq!(log.waiters.len(), 2);
        log.leave_queue(T0 + 99);
        assert_eq!(log.waiters.len(), 2);
        log.prune(TWO_PER_SECOND, T0 + 10);
        assert_eq!(log.waiters, vec![T0 + 20]);
        assert_eq!(log.live_until(TWO_PER_SECOND), T0 + 20);
        log.times.push((T0, 1));
        assert_eq!(log.live_until(TWO_PER_SECOND), T0 + 1000);
    }

    #[test]
    fn standing_is_limited_while_full_or_queued() {
        let l = TWO_PER_SECOND;
        let mut log = KeyLog::default();
        log.admit(l, T0);
        let s = log.standing(l, T0);
        assert_eq!(
            (s.load, s.limited_until, s.live_until),
            (5000, 0, T0 + 1000)
        );
        log.admit(l, T0 + 100);
        let s = log.standing(l, T0 + 100);
        // Full until the first request leaves the window.
        assert_eq!((s.load, s.limited_until), (Standing::FULL_LOAD, T0 + 1000));
        // A queued request keeps it protected until its deadline.
        log.waiters.push(T0 + 3000);
        assert_eq!(log.standing(l, T0 + 100).limited_until, T0 + 3000);
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let log = KeyLog {
            times: vec![(1, 1), (2, 7), (3, 1)],
            waiters: vec![9],
        };
        let bytes = log.encode();
        assert_eq!(KeyLog::decode(&bytes), Some(log));
        assert_eq!(KeyLog::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(KeyLog::decode(b""), None);
        assert_eq!(KeyLog::decode(&u32::MAX.to_le_bytes()), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(300), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }
}
