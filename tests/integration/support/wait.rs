//! The one polling helper of the suite: wait for a condition with a
//! deadline, never a fixed sleep.

use std::time::{Duration, Instant};

/// How often [`wait_until`] asks.
pub const POLL: Duration = Duration::from_millis(10);

/// Asks `f` every `every` until it returns `Some`, or gives `None` once
/// `deadline` has passed (after a last ask).
pub fn poll_until<T>(deadline: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Asks `f` every [`POLL`] until it returns `Some`, or panics after
/// `deadline` naming `what`.
pub fn wait_until<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(deadline, POLL, f).unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}
