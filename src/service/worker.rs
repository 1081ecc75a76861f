//! One worker per env: decides when to run a pass, runs it, and learns from
//! its report.
//!
//! A pass runs on the interval timer (±10 % jitter, redrawn every time, so
//! replicas and envs drift apart instead of hitting the backends in
//! lockstep), on etcd watch events (debounced: once no new event came for
//! `debounce`, at most 5 × `debounce` after the first), and at once when the
//! config was reloaded, a file of the file source changed, this replica was
//! elected for the env, or the watch broke or came back. A worker only runs
//! passes while this replica leads its env.
//!
//! Failure handling, on top of reconcile's isolation:
//! - a target that failed is skipped by the following passes until its
//!   backoff is over (1 s, doubling, capped at the interval), and retried
//!   then on its own timer, so a broken target neither delays nor hides the
//!   others;
//! - a source failure writes nothing for the env (reconcile fails closed)
//!   and is retried on the next tick (or when the watch comes back);
//! - drift (a target changed by someone else after cfgsync wrote it) is
//!   recognised by remembering a hash of what was last written for each
//!   target, counted, logged and reverted by the same pass.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Generation;
use super::election::Leadership;
use super::status::Status;
use crate::metrics::Metrics;
use crate::reconcile::{self, Change, PassOptions, Report};
use crate::target::TargetError;

/// First backoff of a failed target.
const BACKOFF_MIN: Duration = Duration::from_secs(1);

/// Why a pass runs; shown in the pass's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Start,
    Interval,
    Watch,
    WatchLost,
    WatchResumed,
    Resync,
    SourceFile,
    ConfigReloaded,
    Elected,
    Retry,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Interval => "interval",
            Reason::Watch => "etcd watch",
            Reason::WatchLost => "etcd watch lost",
            Reason::WatchResumed => "etcd watch re-established",
            Reason::Resync => "resync after compaction",
            Reason::SourceFile => "file source changed",
            Reason::ConfigReloaded => "config reloaded",
            Reason::Elected => "elected",
            Reason::Retry => "target backoff over",
        }
    }
}

/// A request for a pass.
#[derive(Debug, Clone, Copy)]
pub struct Trigger {
    pub reason: Reason,
    pub debounced: bool,
    /// The etcd revision that caused it, for the log.
    pub revision: Option<i64>,
}

impl Trigger {
    pub fn now(reason: Reason) -> Self {
        Self { reason, debounced: false, revision: None }
    }

    pub fn debounced(reason: Reason, revision: i64) -> Self {
        Self { reason, debounced: true, revision: Some(revision) }
    }
}

struct Pending {
    reason: Reason,
    debounced: bool,
    first: Instant,
    last: Instant,
}

impl Pending {
    fn due(&self, debounce: Duration) -> Instant {
        if self.debounced { (self.last + debounce).min(self.first + debounce * 5) } else { self.first }
    }
}

struct Backoff {
    failures: u32,
    until: Instant,
    error: String,
}

pub struct Worker {
    pub env: String,
    pub generation: watch::Receiver<Arc<Generation>>,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    /// Shared with the env's watch: the newest revision reflected.
    pub revision: Arc<AtomicI64>,
    pub triggers: mpsc::Receiver<Trigger>,
}

/// The interval with ±10 % jitter.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

impl Worker {
    /// Runs until `cancel`. A pass in flight is finished first: cancellation
    /// only stops new passes from starting.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut led = self.leadership.subscribe();
        let mut was_leading = self.leadership.leads(&self.env);
        let now = Instant::now();
        let mut pending = Some(Pending { reason: Reason::Start, debounced: false, first: now, last: now });
        let mut next_tick = now + jittered(self.generation.borrow().config.interval);
        let mut backoff: BTreeMap<String, Backoff> = BTreeMap::new();
        let mut written: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            let debounce = self.generation.borrow().config.service.debounce;
            let retry_at = backoff.values().map(|b| b.until).min();
            let mut wake = next_tick;
            if let Some(p) = &pending {
                wake = wake.min(p.due(debounce));
            }
            if let Some(r) = retry_at {
                wake = wake.min(r);
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                t = self.triggers.recv() => {
                    let Some(t) = t else { return };
                    let now = Instant::now();
                    if let Some(rev) = t.revision {
                        debug!(env = %self.env, revision = rev, reason = t.reason.as_str(), "change seen");
                    }
                    match &mut pending {
                        Some(p) => {
                            p.last = now;
                            if !t.debounced {
                                p.debounced = false;
                                p.reason = t.reason;
                            }
                        }
                        None => pending = Some(Pending { reason: t.reason, debounced: t.debounced, first: now, last: now }),
                    }
                    continue;
                }
                r = led.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let leading = self.leadership.leads(&self.env);
                    if leading && !was_leading {
                        let now = Instant::now();
                        pending = Some(Pending { reason: Reason::Elected, debounced: false, first: now, last: now });
                    }
                    was_leading = leading;
                    continue;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            let reason = if pending.as_ref().is_some_and(|p| p.due(debounce) <= now) {
                pending.take().map_or(Reason::Interval, |p| p.reason)
            } else if next_tick <= now {
                Reason::Interval
            } else if retry_at.is_some_and(|r| r <= now) {
                Reason::Retry
            } else {
                continue;
            };
            let generation = self.generation.borrow().clone();
            if next_tick <= now || reason != Reason::Retry {
                next_tick = now + jittered(generation.config.interval);
            }
            pending = None;
            if !self.leadership.leads(&self.env) {
                // Not this replica's env (now): the leader owns its targets'
                // backoff; start afresh if elected later.
                debug!(env = %self.env, reason = reason.as_str(), "not leading this env; no pass");
                backoff.clear();
                written.clear();
                continue;
            }
            self.pass(&generation, reason, &mut backoff, &mut written).await;
        }
    }

    async fn pass(
        &self,
        generation: &Generation,
        reason: Reason,
        backoff: &mut BTreeMap<String, Backoff>,
        written: &mut BTreeMap<String, u64>,
    ) {
        let lock = self.leadership.pass_lock(&self.env);
        let _guard = lock.lock().await;
        if !self.leadership.leads(&self.env) {
            return;
        }
        let now = Instant::now();
        let skip: BTreeSet<String> = backoff.iter().filter(|(_, b)| b.until > now).map(|(id, _)| id.clone()).collect();
        let options = PassOptions {
            env: Some(self.env.clone()),
            fence: Some(self.leadership.clone()),
            skip: skip.clone(),
            ..Default::default()
        };
        let started = Instant::now();
        let report = reconcile::run_pass(
            &generation.config,
            &generation.templates,
            &generation.sources,
            &generation.kube,
            &options,
        )
        .await;
        let took = started.elapsed();
        if let Some(rev) = report.envs.first().and_then(|e| e.revision) {
            self.revision.fetch_max(rev, Ordering::SeqCst);
        }
        let interval = generation.config.interval;
        let drifted = self.learn(&report, backoff, written, interval);
        self.metrics.record_pass(&self.env, &report, took, drifted);
        let backing_off: Vec<(String, String)> =
            skip.iter().filter_map(|id| backoff.get(id).map(|b| (id.clone(), b.error.clone()))).collect();
        self.status.record_pass(&self.env, &report, &backing_off);
        let counts = report.counts();
        let changed = counts.get("create").copied().unwrap_or(0) + counts.get("update").copied().unwrap_or(0);
        let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        if report.failed() {
            warn!(env = %self.env, reason = reason.as_str(), took_ms, changed, "pass failed (details above); other envs and targets unaffected");
        } else if changed > 0 || reason != Reason::Interval {
            info!(env = %self.env, reason = reason.as_str(), took_ms, changed, skipped = skip.len(), "pass done");
        } else {
            debug!(env = %self.env, reason = reason.as_str(), took_ms, "pass done, nothing changed");
        }
    }

    /// Updates backoff and the written-content memory from a report;
    /// returns how many targets had drifted.
    fn learn(
        &self,
        report: &Report,
        backoff: &mut BTreeMap<String, Backoff>,
        written: &mut BTreeMap<String, u64>,
        interval: Duration,
    ) -> u64 {
        let mut drifted = 0;
        let now = Instant::now();
        for t in report.envs.iter().flat_map(|e| &e.outputs).flat_map(|o| &o.targets) {
            let mut hasher = DefaultHasher::new();
            for c in &t.changes {
                match c {
                    Change::File(c) => {
                        c.desired.path.hash(&mut hasher);
                        c.desired.content.expose().hash(&mut hasher);
                        c.desired.mode.hash(&mut hasher);
                    }
                    Change::Object(c) => {
                        if let Some(d) = &c.desired {
                            d.fingerprint.hash(&mut hasher);
                        }
                    }
                }
            }
            let desired = hasher.finish();
            let needs_write = t.changes.iter().any(|c| c.action_name() != "unchanged");
            match &t.error {
                Some(TargetError::Fenced { .. }) => {}
                Some(e) => {
                    let entry = backoff.entry(t.id.clone()).or_insert(Backoff {
                        failures: 0,
                        until: now,
                        error: String::new(),
                    });
                    entry.failures = entry.failures.saturating_add(1);
                    let delay = BACKOFF_MIN.saturating_mul(1 << (entry.failures - 1).min(20)).min(interval);
                    entry.until = now + delay;
                    entry.error = e.to_string();
                    warn!(env = %self.env, target = %t.id, failures = entry.failures, retry_in_ms = delay.as_millis() as u64, "target failed; backing off");
                }
                None => {
                    if backoff.remove(&t.id).is_some() {
                        info!(env = %self.env, target = %t.id, "target recovered");
                    }
                    if needs_write && written.get(&t.id) == Some(&desired) {
                        drifted += 1;
                        warn!(env = %self.env, target = %t.id, "drift: the target was changed outside cfgsync; reverted");
                    }
                    written.insert(t.id.clone(), desired);
                }
            }
        }
        drifted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pending { reason: Reason::Watch, debounced: true, first: t0, last: t0 };
        assert_eq!(p.due(ms(200)), t0 + ms(200));
        p.last = t0 + ms(150);
        assert_eq!(p.due(ms(200)), t0 + ms(350));
        p.last = t0 + ms(990);
        assert_eq!(p.due(ms(200)), t0 + ms(1000), "at most 5 x debounce after the first event");
        p.debounced = false;
        assert_eq!(p.due(ms(200)), t0, "an undebounced trigger is due at once");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(60);
        let draws: Vec<Duration> = (0..1000).map(|_| jittered(interval)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_secs(54) && *d <= Duration::from_secs(66)));
        assert!(
            draws.iter().any(|d| *d < Duration::from_secs(58)) && draws.iter().any(|d| *d > Duration::from_secs(62))
        );
    }
}
