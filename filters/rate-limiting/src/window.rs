//! Window arithmetic: plain functions over plain numbers and an explicit clock, so every edge
//! (window ends, weighted sliding estimates, `Retry-After`) is unit tested without a host.

use palisade_kit::shared::read_u64;
use palisade_kit::slots::Standing;

/// One limit: at most `max` requests per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per window.
    pub max: u64,
    /// Window length in milliseconds.
    pub period_ms: u64,
}

/// How requests are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// A window opens with the first request after the previous one ended (Flex's behaviour) and
    /// counts up to `max`.
    #[default]
    FixedWindow,
    /// Consecutive windows; the count is the current window's plus the previous window's weighted
    /// by how much of it still overlaps the last `period_ms` (the sliding-window-counter estimate:
    /// no burst of 2 × max across a window boundary, constant memory).
    SlidingWindow,
}

/// One limit's counters for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// When the current window started (ms since the epoch).
    pub start: u64,
    /// Requests counted in the previous window (sliding only).
    pub prev: u64,
    /// Requests counted in the current window.
    pub cur: u64,
}

impl Window {
    /// This window as of `now`: rolled forward when its period has passed.
    pub fn at(self, limit: Limit, algorithm: Algorithm, now: u64) -> Window {
        let end = self.start.saturating_add(limit.period_ms);
        if now < end {
            return self;
        }
        match algorithm {
            Algorithm::FixedWindow => Window {
                start: now,
                prev: 0,
                cur: 0,
            },
            Algorithm::SlidingWindow => {
                let k = ((now - self.start) / limit.period_ms.max(1)).max(1);
                Window {
                    start: self.start.saturating_add(k.saturating_mul(limit.period_ms)),
                    prev: if k == 1 { self.cur } else { 0 },
                    cur: 0,
                }
            }
        }
    }

    /// Requests that count against the limit at `now` (the window must be rolled to `now`).
    pub fn used(self, limit: Limit, algorithm: Algorithm, now: u64) -> u64 {
        match algorithm {
            Algorithm::FixedWindow => self.cur,
            Algorithm::SlidingWindow => {
                let period = u128::from(limit.period_ms.max(1));
                let elapsed = u128::from(now.saturating_sub(self.start)).min(period);
                let weighted = u128::from(self.prev) * (period - elapsed) / period;
                self.cur.saturating_add(weighted as u64)
            }
        }
    }

    /// Milliseconds from `now` to the end of the current window.
    pub fn reset_ms(self, limit: Limit, now: u64) -> u64 {
        self.start
            .saturating_add(limit.period_ms)
            .saturating_sub(now)
    }

    /// Milliseconds from `now` until one more request fits (0 when it fits now).
    pub fn wait_ms(self, limit: Limit, algorithm: Algorithm, now: u64) -> u64 {
        if self.used(limit, algorithm, now) < limit.max {
            return 0;
        }
        let end = self.start.saturating_add(limit.period_ms);
        match algorithm {
            Algorithm::FixedWindow => end.saturating_sub(now),
            Algorithm::SlidingWindow => {
                let p = u128::from(limit.period_ms.max(1));
                let max = u128::from(limit.max);
                let (cur, prev) = (u128::from(self.cur), u128::from(self.prev));
                let at = if cur >= max {
                    // In the next window only the weighted current count remains:
                    // cur * (p - d) / p < max  <=>  d > p * (cur - max) / cur.
                    let d = p * (cur - max) / cur + 1;
                    u128::from(end) + d
                } else {
                    // Later in this window: prev * (p - e) / p < max - cur.
                    let e = p * (prev - (max - cur)) / prev.max(1) + 1;
                    u128::from(self.start) + e
                };
                u64::try_from(at)
                    .unwrap_or(u64::MAX)
                    .saturating_sub(now)
                    .max(1)
            }
        }
    }

    /// Until when this window's counts can still matter.
    pub fn live_until(self, limit: Limit, algorithm: Algorithm) -> u64 {
        let periods = match algorithm {
            Algorithm::FixedWindow => 1,
            Algorithm::SlidingWindow => 2,
        };
        self.start
            .saturating_add(limit.period_ms.saturating_mul(periods))
    }
}

/// What the limits decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether every limit had quota (and the request was counted).
    pub allowed: bool,
    /// The limit closest to exhaustion (the longest wait when rejected), for the headers.
    pub limit: u64,
    /// Requests left in that limit after this one.
    pub remaining: u64,
    /// Milliseconds until that limit's window ends (until a request fits, when rejected).
    pub reset_ms: u64,
    /// When rejected: milliseconds until a request fits under every limit.
    pub retry_after_ms: u64,
}

/// Applies one request to a key's windows (`None` for a key seen for the first time or whose
/// stored windows do not match the limits): every limit must have quota; if so the request is
/// counted in all of them. Returns the decision and the windows to store.
pub fn decide(
    limits: &[Limit],
    algorithm: Algorithm,
    stored: Option<&[Window]>,
    now: u64,
) -> (Decision, Vec<Window>) {
    let stored = stored.filter(|w| w.len() == limits.len());
    let mut windows: Vec<Window> = limits
        .iter()
        .enumerate()
        .map(|(i, limit)| {
            stored
                .and_then(|w| w.get(i))
                .map_or(
                    Window {
                        start: now,
                        prev: 0,
                        cur: 0,
                    },
                    |w| *w,
                )
                .at(*limit, algorithm, now)
        })
        .collect();
    let waits: Vec<u64> = limits
        .iter()
        .zip(&windows)
        .map(|(l, w)| w.wait_ms(*l, algorithm, now))
        .collect();
    let retry_after_ms = waits.iter().copied().max().unwrap_or(0);
    let allowed = retry_after_ms == 0;
    let mut best: Option<(u64, u64, u64)> = None; // (remaining, limit, reset)
    for ((limit, window), wait) in limits.iter().zip(windows.iter_mut()).zip(&waits) {
        let (remaining, reset) = if allowed {
            let used = window.used(*limit, algorithm, now);
            window.cur = window.cur.saturating_add(1);
            (
                limit.max.saturating_sub(used).saturating_sub(1),
                window.reset_ms(*limit, now),
            )
        } else {
            (0, *wait)
        };
        // Closest to exhaustion: least remaining; among equals, the longest reset.
        let better = best.is_none_or(|(r, _, t)| remaining < r || (remaining == r && reset > t));
        if better {
            best = Some((remaining, limit.max, reset));
        }
    }
    let (remaining, limit, reset_ms) = best.unwrap_or((0, 0, 0));
    (
        Decision {
            allowed,
            limit,
            remaining,
            reset_ms,
            retry_after_ms,
        },
        windows,
    )
}

pub use palisade_kit::quota::retry_after_secs;

/// How much a key's windows (as [`decide`] returned them for an allowed request) are worth
/// keeping in the slot table: live while any window still counts, at its limit while the next
/// request would be refused, loaded by its most used limit.
pub fn standing(limits: &[Limit], algorithm: Algorithm, windows: &[Window], now: u64) -> Standing {
    let mut standing = Standing {
        live_until: now,
        limited_until: 0,
        load: 0,
    };
    for (limit, window) in limits.iter().zip(windows) {
        standing.live_until = standing
            .live_until
            .max(window.live_until(*limit, algorithm));
        let wait = window.wait_ms(*limit, algorithm, now);
        if wait > 0 {
            standing.limited_until = standing.limited_until.max(now.saturating_add(wait));
        }
        let used = window.used(*limit, algorithm, now);
        standing.load = standing.load.max(Standing::load_of(used, limit.max));
    }
    standing
}

/// Stored form: per limit, `start, prev, cur` (u64 LE each).
pub fn encode(windows: &[Window]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 * windows.len());
    for w in windows {
        out.extend_from_slice(&w.start.to_le_bytes());
        out.extend_from_slice(&w.prev.to_le_bytes());
        out.extend_from_slice(&w.cur.to_le_bytes());
    }
    out
}

/// The windows of a stored state (`None` for garbage).
pub fn decode(state: &[u8]) -> Option<Vec<Window>> {
    let body = state;
    if body.len() % 24 != 0 {
        return None;
    }
    (0..body.len() / 24)
        .map(|i| {
            Some(Window {
                start: read_u64(body, 24 * i)?,
                prev: read_u64(body, 24 * i + 8)?,
                cur: read_u64(body, 24 * i + 16)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::{FixedWindow, SlidingWindow};

    const T0: u64 = 1_700_000_000_000;

    fn limit(max: u64, period_ms: u64) -> Limit {
        Limit { max, period_ms }
    }

    /// Runs `n` requests at `now` through `limits`, returning how many were allowed.
    fn run(
        limits: &[Limit],
        algo: Algorithm,
        state: &mut Option<Vec<Window>>,
        now: u64,
        n: u64,
    ) -> u64 {
        let mut allowed = 0;
        for _ in 0..n {
            let (d, w) = decide(limits, algo, state.as_deref(), now);
            if d.allowed {
                allowed += 1;
                *state = Some(w);
            }
        }
        allowed
    }

    #[test]
    fn fixed_window_counts_to_the_limit_and_opens_with_the_next_request() {
        let l = [limit(3, 1000)];
        let mut s = None;
        assert_eq!(run(&l, FixedWindow, &mut s, T0, 5), 3);
        let (d, _) = decide(&l, FixedWindow, s.as_deref(), T0 + 400);
        assert!(!d.allowed);
        assert_eq!((d.retry_after_ms, d.reset_ms, d.remaining), (600, 600, 0));
        assert_eq!(retry_after_secs(d.retry_after_ms), 1);
        // Just before the end: still rejected; at the end: a new window starting now.
        assert_eq!(run(&l, FixedWindow, &mut s, T0 + 999, 1), 0);
        assert_eq!(run(&l, FixedWindow, &mut s, T0 + 1500, 1), 1);
        let (d, _) = decide(&l, FixedWindow, s.as_deref(), T0 + 1600);
        assert_eq!((d.remaining, d.reset_ms, d.limit), (1, 900, 3));
        assert_eq!(s.as_ref().unwrap()[0].start, T0 + 1500);
    }

    #[test]
    fn every_limit_must_have_quota_and_headers_follow_the_tightest() {
        let l = [limit(10, 1000), limit(15, 60_000)];
        let mut s = None;
        // 10 in the first second; then the per-second limit resets but the minute has 5 left.
        assert_eq!(run(&l, FixedWindow, &mut s, T0, 12), 10);
        let (d, _) = decide(&l, FixedWindow, s.as_deref(), T0 + 1000);
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.reset_ms), (15, 4, 59_000));
        assert_eq!(run(&l, FixedWindow, &mut s, T0 + 1000, 10), 5);
        let (d, _) = decide(&l, FixedWindow, s.as_deref(), T0 + 2000);
        assert!(!d.allowed);
        // Rejected by the minute: wait for it, whatever the second says.
        assert_eq!((d.limit, d.retry_after_ms), (15, 58_000));
        assert_eq!(retry_after_secs(d.retry_after_ms), 58);
        // A rejected request is not counted.
        assert_eq!(s.as_ref().unwrap()[1].cur, 15);
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let l = [limit(10, 1000)];
        let mut s = None;
        assert_eq!(run(&l, SlidingWindow, &mut s, T0, 10), 10);
        // A quarter into the next window 75% of the previous 10 still count: 3 more fit.
        assert_eq!(run(&l, SlidingWindow, &mut s, T0 + 1250, 5), 3);
        let w = s.as_ref().unwrap()[0];
        assert_eq!((w.start, w.prev, w.cur), (T0 + 1000, 10, 3));
        // 3 + floor(10 * (1000 - e) / 1000) < 10 once e > 300: 51 ms from now.
        let (d, _) = decide(&l, SlidingWindow, s.as_deref(), T0 + 1250);
        assert_eq!(d.retry_after_ms, 51);
        assert_eq!(run(&l, SlidingWindow, &mut s, T0 + 1301, 1), 1);
        // Two periods later nothing remains.
        assert_eq!(run(&l, SlidingWindow, &mut s, T0 + 3000, 20), 10);
    }

    #[test]
    fn sliding_wait_when_the_current_window_is_full() {
        let l = [limit(4, 1000)];
        let w = [Window {
            start: T0,
            prev: 0,
            cur: 4,
        }];
        let (d, _) = decide(&l, SlidingWindow, Some(&w), T0 + 500);
        // Next window: 4 * (1000 - d) / 1000 < 4 once d >= 1: at T0 + 1001.
        assert_eq!(d.retry_after_ms, 501);
        let (d, _) = decide(&l, SlidingWindow, Some(&w), T0 + 1001);
        assert!(d.allowed);
        // No burst of 2 x max across the boundary: right after it, only 1 fits... then none.
        let mut s = Some(w.to_vec());
        assert_eq!(run(&l, SlidingWindow, &mut s, T0 + 1001, 8), 1);
    }

    #[test]
    fn stored_state_round_trips_and_mismatches_start_fresh() {
        let w = vec![
            Window {
                start: 1,
                prev: 2,
                cur: 3,
            },
            Window {
                start: 4,
                prev: 5,
                cur: 6,
            },
        ];
        let bytes = encode(&w);
        assert_eq!(decode(&bytes), Some(w.clone()));
        assert_eq!(decode(&bytes[..20]), None);
        // Stored for two limits, now configured with one: a fresh window.
        let (d, out) = decide(&[limit(1, 10)], FixedWindow, Some(&w), T0);
        assert!(d.allowed);
        assert_eq!(out[0].start, T0);
    }

    #[test]
    fn live_until_covers_what_still_counts() {
        let w = Window {
            start: T0,
            prev: 0,
            cur: 1,
        };
        assert_eq!(w.live_until(limit(1, 100), FixedWindow), T0 + 100);
        assert_eq!(w.live_until(limit(1, 100), SlidingWindow), T0 + 200);
    }

    #[test]
    fn standing_follows_the_tightest_limit() {
        let l = [limit(2, 1000), limit(10, 60_000)];
        let mut s = None;
        assert_eq!(run(&l, FixedWindow, &mut s, T0, 1), 1);
        let w = s.clone().unwrap();
        let st = standing(&l, FixedWindow, &w, T0);
        // Half the per-second limit used, not limited, live until the minute ends.
        assert_eq!(
            (st.load, st.limited_until, st.live_until),
            (5000, 0, T0 + 60_000)
        );
        assert_eq!(run(&l, FixedWindow, &mut s, T0 + 10, 1), 1);
        let st = standing(&l, FixedWindow, s.as_deref().unwrap(), T0 + 10);
        // At the per-second limit until that second ends.
        assert_eq!(
            (st.load, st.limited_until),
            (Standing::FULL_LOAD, T0 + 1000)
        );
        // Sliding: limited until the weighted count lets one more in.
        let l = [limit(4, 1000)];
        let w = [Window {
            start: T0,
            prev: 0,
            cur: 4,
        }];
        let st = standing(&l, SlidingWindow, &w, T0 + 500);
        assert_eq!(st.limited_until, T0 + 1001);
        assert_eq!(st.live_until, T0 + 2000);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let l = [limit(u64::MAX, u64::MAX)];
        let (d, w) = decide(&l, SlidingWindow, None, u64::MAX - 1);
        assert!(d.allowed);
        let (_, _) = decide(&l, SlidingWindow, Some(&w), u64::MAX);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }
}
