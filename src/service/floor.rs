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
//!   a few for starts, reloads and elections. The floor lets a window's
//!   allowance through at once, then twice the allowance's rate, so it
//!   never holds back a correct worker (a burst of changes with `debounce
//!   = "0s"`, one pass each, included). With the defaults (1 min, 200 ms)
//!   that is 132 passes at once, then one per 38 ms.
//! - **Spinning is judged on what nothing outside asked for.** A pass for
//!   a change (an etcd watch event, a file of the file source) needs that
//!   change; a debounce of 0 s passes once per change, as fast as they
//!   come. [`Rate::allowed`] is therefore [`timed_allowance`] (interval,
//!   retries, the rest: 32 per 10 s with a 1 min interval) plus the passes
//!   for changes in the window, at most two per debounce. A worker that
//!   spins on its own state runs at the floor, far above that: the
//!   readiness rule calls the env `spinning` within about 2 s.
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

/// How many gaps of `gap` start in a [`WINDOW`].
fn per_window(gap: Duration) -> u32 {
    let gap = gap.as_nanos().max(1);
    u32::try_from(WINDOW.as_nanos().div_ceil(gap)).unwrap_or(u32::MAX)
}

/// The most passes of one env in a [`WINDOW`] that nothing outside asked
/// for: the interval's (it is jittered down to 0.9 ×), target and source
/// retries (1 s is the shortest backoff), and starts, reloads, elections,
/// a watch lost and back.
pub fn timed_allowance(interval: Duration) -> u32 {
    let interval_passes = per_window(interval.mul_f64(0.9)).saturating_add(1);
    let retries = per_window(Duration::from_secs(1)).saturating_mul(2);
    let others = 10;
    interval_passes.saturating_add(retries).saturating_add(others)
}

/// The most passes for changes in a [`WINDOW`]: a leading-edge pass and a
/// coalesced one per debounce; `None` (no bound) without a debounce.
pub fn change_allowance(debounce: Duration) -> Option<u32> {
    (!debounce.is_zero()).then(|| per_window(debounce).saturating_mul(2))
}

/// The most passes of one env a correct worker runs in a [`WINDOW`], with
/// this interval and debounce (a debounce under 50 ms counting as 50 ms).
pub fn pass_allowance(interval: Duration, debounce: Duration) -> u32 {
    let changes = change_allowance(debounce.max(WATCH_GAP_MIN)).unwrap_or(u32::MAX);
    timed_allowance(interval).saturating_add(changes)
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

    /// The floor of a worker's passes: a [`pass_allowance`] at once, then
    /// twice its rate.
    pub fn for_passes(interval: Duration, debounce: Duration) -> Self {
        let mut floor = Self::new(Duration::ZERO, 1);
        floor.retune_passes(interval, debounce);
        floor
    }

    /// Follows a reload's interval and debounce.
    pub fn retune_passes(&mut self, interval: Duration, debounce: Duration) {
        let allowance = pass_allowance(interval, debounce).max(1);
        self.spacing = WINDOW / allowance.saturating_mul(2);
        self.burst = allowance;
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

/// When the passes of the last [`WINDOW`] started, and whether each was
/// for a change; bounded, since the floor bounds how many fit in a window.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    starts: VecDeque<(Instant, bool)>,
}

/// More than any floor lets through in a window; a bound on memory only.
const RATE_MAX_KEPT: usize = 100_000;

impl Rate {
    /// A pass starts at `at`; `for_change`: an etcd or file change asked for it.
    pub fn record(&mut self, at: Instant, for_change: bool) {
        self.trim(at);
        if self.starts.len() >= RATE_MAX_KEPT {
            self.starts.pop_front();
        }
        self.starts.push_back((at, for_change));
    }

    /// Starts within the [`WINDOW`] before `now`: (all, for a change).
    pub fn count(&self, now: Instant) -> (u32, u32) {
        let since = now.checked_sub(WINDOW);
        let recent = self.starts.iter().rev().take_while(|(t, _)| since.is_none_or(|s| *t > s));
        let (mut all, mut changes) = (0u32, 0u32);
        for (_, for_change) in recent {
            all = all.saturating_add(1);
            changes = changes.saturating_add(u32::from(*for_change));
        }
        (all, changes)
    }

    /// How many passes the window may hold now: [`timed_allowance`] and
    /// the passes for changes it holds, up to [`change_allowance`].
    pub fn allowed(&self, now: Instant, interval: Duration, debounce: Duration) -> u32 {
        let (_, changes) = self.count(now);
        let changes = change_allowance(debounce).map_or(changes, |most| changes.min(most));
        timed_allowance(interval).saturating_add(changes)
    }

    fn trim(&mut self, now: Instant) {
        if let Some(since) = now.checked_sub(WINDOW) {
            while self.starts.front().is_some_and(|(t, _)| *t <= since) {
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
        // debounce: 1 + 1 interval, 20 retries, 10 others; 100 for changes.
        assert_eq!(timed_allowance(Duration::from_secs(60)), 32);
        assert_eq!(change_allowance(MS(200)), Some(100));
        assert_eq!(change_allowance(Duration::ZERO), None, "one pass per change, however many");
        assert_eq!(pass_allowance(Duration::from_secs(60), MS(200)), 132);
        // For the floor, no debounce counts as 50 ms.
        assert_eq!(pass_allowance(Duration::from_secs(3600), Duration::ZERO), 1 + 1 + 20 + 10 + 400);
        assert!(pass_allowance(MS(100), MS(200)) > pass_allowance(Duration::from_secs(60), MS(200)));
        // The floor lets through twice the allowance.
        let f = Floor::for_passes(Duration::from_secs(60), MS(200));
        assert_eq!(
            (f.spacing(), f.burst),
            (WINDOW / (2 * 132), 132),
            "a window's allowance at once, then twice its rate"
        );
        // Without a debounce, a burst of changes (one pass each) goes at once.
        assert_eq!(Floor::for_passes(Duration::from_secs(3600), Duration::ZERO).burst, 432);
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
            r.record(t0 + MS(i * 10), i % 2 == 0);
        }
        assert_eq!(r.count(t0 + MS(100)), (10, 5));
        assert_eq!(r.count(t0 + WINDOW + MS(45)), (5, 2), "the first five are older than the window");
        r.record(t0 + WINDOW * 2, false);
        assert_eq!(r.count(t0 + WINDOW * 2), (1, 0));
        assert_eq!(r.starts.len(), 1, "old starts are dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn passes_for_changes_raise_the_allowance_up_to_two_per_debounce() {
        let (interval, t0) = (Duration::from_secs(60), Instant::now());
        let mut r = Rate::default();
        for i in 0..500 {
            r.record(t0 + MS(i), true);
        }
        let now = t0 + MS(500);
        assert_eq!(r.allowed(now, interval, Duration::ZERO), 32 + 500, "no debounce: every change");
        assert_eq!(r.allowed(now, interval, MS(200)), 32 + 100, "at most two per debounce");
        assert_eq!(Rate::default().allowed(now, interval, MS(200)), 32, "no change: the timed passes only");
    }
}
