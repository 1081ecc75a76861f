//! The floor under every loop of the service: a minimum spacing between
//! the things a loop starts (passes, election steps), so that no state bug
//! can make one spin.
//!
//! A loop decides when to act from its own state (a due retry, a pending
//! trigger, a keep-alive deadline); when that state is wrong, "due" can be
//! true after every iteration and the loop runs as fast as the CPU allows
//! (issue 15: a backoff of a target that a reload took away made an env
//! pass ~2,000 times a second, each pass publishing a record to etcd). The
//! floor does not fix such a bug; it bounds what it can cost, and the pass
//! rate it leaves shows on `/readyz`, the status page and `/metrics`.
//!
//! Decisions:
//! - **A token bucket** ([`Floor`], the GCRA form: one instant to keep):
//!   a burst goes at once, a sustained rate is held to one start per
//!   `spacing`. A watch change that comes after a quiet period is never
//!   delayed, a long burst of changes is, a little.
//! - **Passes: twice what the interval and debounce allow.**
//!   [`pass_allowance`] is the most passes a correct worker runs in a
//!   [`WINDOW`] of 10 s: the interval's, two per debounce for the etcd
//!   watch (a leading-edge pass and the coalesced one behind it; a debounce
//!   under 50 ms, or none, counts as 50 ms), one a second for target
//!   retries and one for source retries (1 s is the shortest backoff), and
//!   a few for starts, reloads and elections. The floor lets through twice
//!   that, so it never holds back a correct worker for long, and a worker
//!   that spins runs at the floor, visibly above the allowance: the
//!   readiness rule calls the env `spinning` then, within about 5 s. With
//!   the defaults (1 min, 200 ms) that is 132 passes per 10 s allowed, the
//!   floor at one pass per 38 ms after a burst of 20.
//! - **Timed wakes are what is floored.** Triggers from outside (a watch
//!   event, a reload) only add to what is pending; a loop acts on them
//!   when its timer fires, and the floor delays that timer.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window a pass rate is counted over: short, so that a loop running
/// at the floor shows within seconds.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The shortest gap between watch passes the allowance counts with.
const WATCH_GAP_MIN: Duration = Duration::from_millis(50);

/// Passes at once before the floor's spacing applies.
const PASS_BURST: u32 = 20;

/// The most passes of one env a correct worker runs in a [`WINDOW`], with
/// this interval and debounce.
pub fn pass_allowance(interval: Duration, debounce: Duration) -> u32 {
    let per_window = |gap: Duration| -> u64 {
        let gap = gap.as_nanos().max(1);
        u64::try_from(WINDOW.as_nanos().div_ceil(gap)).unwrap_or(u64::MAX)
    };
    let interval_passes = per_window(interval.mul_f64(0.9)) + 1;
    let watch_passes = 2 * per_window(debounce.max(WATCH_GAP_MIN));
    let retries = 2 * per_window(Duration::from_secs(1));
    // Starts, reloads, elections, watch lost and back.
    let others = 10;
    u32::try_from(interval_passes.saturating_add(watch_passes).saturating_add(retries).saturating_add(others))
        .unwrap_or(u32::MAX)
}

/// A token bucket: `burst` starts at once, then one per `spacing`.
#[derive(Debug, Clone)]
pub struct Floor {
    spacing: Duration,
    burst: u32,
    /// When the bucket is full again (GCRA's theoretical arrival time).
    full_at: Instant,
}

impl Floor {
    pub fn new(spacing: Duration, burst: u32) -> Self {
        Self { spacing, burst: burst.max(1), full_at: Instant::now() }
    }

    /// The floor of a worker's passes: twice [`pass_allowance`].
    pub fn for_passes(interval: Duration, debounce: Duration) -> Self {
        Self::new(pass_spacing(interval, debounce), PASS_BURST)
    }

    /// Follows a reload's interval and debounce.
    pub fn retune_passes(&mut self, interval: Duration, debounce: Duration) {
        self.spacing = pass_spacing(interval, debounce);
    }

    pub fn spacing(&self) -> Duration {
        self.spacing
    }

    /// The earliest instant the next start may happen.
    pub fn ready_at(&self) -> Instant {
        let allowance = self.spacing.saturating_mul(self.burst - 1);
        self.full_at.checked_sub(allowance).unwrap_or(self.full_at.min(Instant::now()))
    }

    /// Records a start at `now` (which should be at or after [`Self::ready_at`]).
    pub fn take(&mut self, now: Instant) {
        self.full_at = self.full_at.max(now) + self.spacing;
    }
}

fn pass_spacing(interval: Duration, debounce: Duration) -> Duration {
    WINDOW / pass_allowance(interval, debounce).saturating_mul(2).max(1)
}

/// When the passes of the last [`WINDOW`] started; bounded, since the floor
/// bounds how many fit in a window.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    starts: VecDeque<Instant>,
}

/// More than any floor lets through in a window; a bound on memory only.
const RATE_MAX_KEPT: usize = 100_000;

impl Rate {
    pub fn record(&mut self, at: Instant) {
        self.trim(at);
        if self.starts.len() >= RATE_MAX_KEPT {
            self.starts.pop_front();
        }
        self.starts.push_back(at);
    }

    /// Starts within the [`WINDOW`] before `now`.
    pub fn count(&self, now: Instant) -> u32 {
        let since = now.checked_sub(WINDOW);
        let n = self.starts.iter().rev().take_while(|t| since.is_none_or(|s| **t > s)).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn trim(&mut self, now: Instant) {
        if let Some(since) = now.checked_sub(WINDOW) {
            while self.starts.front().is_some_and(|t| *t <= since) {
                self.starts.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_allowance_follows_interval_and_debounce() {
        // Per 10 s, 1 min interval (54 s at the shortest jitter), 200 ms
        // debounce: 1 + 1 interval, 100 watch, 20 retries, 10 others.
        assert_eq!(pass_allowance(Duration::from_secs(60), MS(200)), 132);
        // No debounce counts as 50 ms.
        assert_eq!(pass_allowance(Duration::from_secs(3600), Duration::ZERO), 1 + 1 + 400 + 20 + 10);
        assert!(pass_allowance(MS(100), MS(200)) > pass_allowance(Duration::from_secs(60), MS(200)));
        // The floor lets through twice the allowance.
        let f = Floor::for_passes(Duration::from_secs(60), MS(200));
        assert_eq!(f.spacing(), WINDOW / (2 * 132));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_one_start_per_spacing() {
        let mut f = Floor::new(MS(100), 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(f.ready_at() <= t0, "the burst");
            f.take(t0);
        }
        assert_eq!(f.ready_at(), t0 + MS(100), "then the spacing");

        // A loop that is always due, under the floor: 3 + 10 starts in a second.
        let mut f = Floor::new(MS(100), 3);
        let mut starts = 0;
        let end = t0 + Duration::from_secs(1);
        loop {
            let at = f.ready_at().max(Instant::now());
            if at > end {
                break;
            }
            tokio::time::sleep_until(at).await;
            f.take(Instant::now());
            starts += 1;
        }
        assert_eq!(starts, 3 + 10, "the burst, then one per 100 ms");

        // A quiet period refills the bucket.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(f.ready_at() <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_counts_the_last_window_only() {
        let mut r = Rate::default();
        let t0 = Instant::now();
        for i in 0..10 {
            r.record(t0 + MS(i * 10));
        }
        assert_eq!(r.count(t0 + MS(100)), 10);
        assert_eq!(r.count(t0 + WINDOW + MS(45)), 5, "the first five are older than the window");
        r.record(t0 + WINDOW * 2);
        assert_eq!(r.count(t0 + WINDOW * 2), 1);
        assert_eq!(r.starts.len(), 1, "old starts are dropped");
    }
}
