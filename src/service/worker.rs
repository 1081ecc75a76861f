//! One worker per env: decides when to run a pass, runs it, and learns from
//! its report.
//!
//! A pass runs on the interval timer (±10 % jitter, redrawn every time, so
//! replicas and envs drift apart instead of hitting the backends in
//! lockstep), on etcd watch events (debounced, leading edge: a change that
//! comes after `debounce` without any goes at once; the changes that follow
//! it within `debounce` are coalesced into one pass, once no new one came
//! for `debounce`, at most 5 × `debounce` after the first), and at once when the
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
//!   and is retried on its own backoff (1 s, doubling, capped at the
//!   interval), so the env recovers within seconds of the source;
//! - when the election reaches etcd again after failing, a led env passes
//!   at once instead of waiting for the interval;
//! - a backoff is keyed by target id (`<env>/<output>/<index>`), which a
//!   reload may give to another target or to none: a new config starts
//!   every backoff afresh, and a due backoff whose target a full pass did
//!   not reach (gone from the env, its output not rendered) is forgotten,
//!   or, while the sources fail, waits for their retry. A retry that stays
//!   due would run a pass after every pass (issue 15: 5,628 passes in 66 s);
//! - drift (a target changed by someone else after cfgsync wrote it) is
//!   recognised by remembering a hash of what was last written for each
//!   target, counted, logged and reverted by the same pass.
//!
//! After each pass the worker makes the env's [`EnvRecord`] (states and
//! codes, see [`super::published`]) and, with an election, publishes it to
//! etcd for every replica's readiness and status page; without one it goes
//! straight to the board. The report itself is read in one place,
//! [`PassSummary::of`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Generation;
use super::election::Leadership;
use super::floor::Floor;
use super::published::{EnvRecord, OutputRecord, PublishError, Publisher, TargetRecord, TargetState};
use super::status::{Board, unix_ms};
use super::summary::PassSummary;
use crate::metrics::Metrics;
use crate::reconcile::{self, PassOptions};

/// First backoff of a failed target or source.
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
    SourceRetry,
    EtcdRecovered,
    /// `cfgsync rotate verify` or `rollback` asked for a pass.
    Asked,
    /// A target watch saw an owned object changed or deleted outside cfgsync.
    Drift,
    /// A secret marker: `set-secret` or `import` wrote a secret's new version.
    SecretMarked,
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
            Reason::SourceRetry => "source backoff over",
            Reason::EtcdRecovered => "etcd reachable again",
            Reason::Asked => "asked for (rotate verify, refresh, rollback)",
            Reason::Drift => "owned object changed outside cfgsync",
            Reason::SecretMarked => "secret written through cfgsync",
        }
    }

    /// The `reason` label of `cfgsync_passes_total`.
    fn label(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Interval => "interval",
            Reason::Watch => "watch",
            Reason::WatchLost => "watch_lost",
            Reason::WatchResumed => "watch_resumed",
            Reason::Resync => "resync",
            Reason::SourceFile => "source_file",
            Reason::ConfigReloaded => "config_reloaded",
            Reason::Elected => "elected",
            Reason::Retry => "retry",
            Reason::SourceRetry => "source_retry",
            Reason::EtcdRecovered => "etcd_recovered",
            Reason::Asked => "asked",
            Reason::Drift => "drift",
            Reason::SecretMarked => "secret_marker",
        }
    }
}

/// A request for a pass.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub reason: Reason,
    pub debounced: bool,
    /// The etcd revision that caused it, for the log.
    pub revision: Option<i64>,
    /// The keys a watch event changed (names below the env's prefix); empty
    /// for every other reason.
    pub keys: Vec<String>,
    /// The outputs whose targets drifted (a target watch's trigger): a pass
    /// of just these, with the kept keys.
    pub outputs: Vec<String>,
    /// A pass asked for from outside: the etcd revision of the request
    /// (the `pass` key's put), published with the pass that answers it.
    pub asked: Option<i64>,
    /// Secret paths written through cfgsync (their markers): a pass of the
    /// outputs that read them, with the kept keys.
    pub secrets: Vec<String>,
}

impl Trigger {
    pub fn now(reason: Reason) -> Self {
        Self {
            reason,
            debounced: false,
            revision: None,
            keys: Vec::new(),
            outputs: Vec::new(),
            asked: None,
            secrets: Vec::new(),
        }
    }

    /// A pass asked for from outside by the request put at `revision`:
    /// at once, reading every secret; its record names the request.
    pub fn asked(revision: i64) -> Self {
        Self { asked: Some(revision), ..Self::now(Reason::Asked) }
    }

    pub fn debounced(reason: Reason, revision: i64, keys: Vec<String>) -> Self {
        Self { debounced: true, revision: Some(revision), keys, ..Self::now(reason) }
    }

    /// A pass of `outputs`, whose targets changed outside cfgsync
    /// (debounced like a key change: the first goes at once).
    pub fn drift(outputs: Vec<String>) -> Self {
        Self { debounced: true, outputs, ..Self::now(Reason::Drift) }
    }

    /// A pass of the outputs that read secret `path`, written through
    /// cfgsync (its marker), debounced like a key change (the first goes at
    /// once). Which outputs read it is known from the last full pass; an
    /// output whose reads are not known is passed too, and without a full
    /// pass of the current config the pass is a full one.
    pub fn secret_marked(path: String) -> Self {
        Self { debounced: true, secrets: vec![path], ..Self::now(Reason::SecretMarked) }
    }
}

struct Pending {
    reason: Reason,
    debounced: bool,
    /// Leading edge: the first change after a quiet period is applied at
    /// once; what follows within the debounce is coalesced behind it.
    leading: bool,
    first: Instant,
    last: Instant,
    /// `Some`: only these keys changed (a watch pass may render just the
    /// outputs that read them); `None`: a full pass.
    keys: Option<BTreeSet<String>>,
    /// The newest revision among the changes in `keys`.
    revision: Option<i64>,
    /// Outputs to pass besides those `keys` concern (drift seen by a target watch).
    outputs: BTreeSet<String>,
    /// The newest request from outside this pass answers (its revision):
    /// kept whatever trigger joins it later, so the pass stays an asked
    /// one (every secret read) and its record names the request.
    asked: Option<i64>,
    /// Secret paths written through cfgsync: their readers are passed too.
    secrets: BTreeSet<String>,
}

impl Pending {
    fn due(&self, debounce: Duration) -> Instant {
        if self.debounced && !self.leading { (self.last + debounce).min(self.first + debounce * 5) } else { self.first }
    }

    fn at_once(reason: Reason) -> Self {
        let now = Instant::now();
        Self {
            reason,
            debounced: false,
            leading: false,
            first: now,
            last: now,
            keys: None,
            revision: None,
            outputs: BTreeSet::new(),
            asked: None,
            secrets: BTreeSet::new(),
        }
    }

    /// Adds a trigger to what is pending.
    fn merge(&mut self, t: Trigger, now: Instant) {
        self.last = now;
        self.asked = self.asked.max(t.asked);
        if t.debounced {
            if let Some(keys) = &mut self.keys {
                keys.extend(t.keys);
            }
            self.outputs.extend(t.outputs);
            self.secrets.extend(t.secrets);
            self.revision = self.revision.max(t.revision);
        } else {
            self.debounced = false;
            self.reason = t.reason;
            self.keys = None;
        }
    }
}

/// Whether a change seen `now` starts a quiet period's burst (and goes at
/// once): the previous change was seen `debounce` ago or more, or never.
fn quiet(previous_change: Option<Instant>, now: Instant, debounce: Duration) -> bool {
    previous_change.is_none_or(|p| now.duration_since(p) >= debounce)
}

/// A failed target (or the env's sources), waiting for its next try.
struct Backoff {
    failures: u32,
    until: Instant,
    code: String,
    output: String,
    kind: String,
    address: String,
}

impl Backoff {
    /// Counts one more failure and schedules the next try.
    fn fail(&mut self, interval: Duration) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = BACKOFF_MIN.saturating_mul(1 << (self.failures - 1).min(20)).min(interval);
        self.until = Instant::now() + delay;
        delay
    }
}

/// What a worker remembers between passes; forgotten when it stops leading.
#[derive(Default)]
struct Memory {
    /// What each output (by name) read in the last full pass of the
    /// current config: a watch event then re-renders only the outputs that
    /// read a changed key. Outputs that did not render are not in it.
    uses: Option<(u64, Reads)>,
    /// When the last change was seen: the next one goes at once when it
    /// comes `debounce` later or more (the leading edge of the debounce).
    last_change_seen: Option<Instant>,
    backoff: BTreeMap<String, Backoff>,
    /// The sources failed: when to try again.
    source_retry: Option<Backoff>,
    /// Hash of what was last written per target, to recognise drift.
    written: BTreeMap<String, u64>,
    /// When cfgsync last wrote each target (Unix ms).
    last_change: BTreeMap<String, u64>,
    /// When a pass first found each target as it should be (Unix ms): with
    /// no write known, "last change" is "not since then".
    unchanged_since: BTreeMap<String, u64>,
    /// The env's keys as the last pass read them (config generation, keys):
    /// a watch pass reads only what changed since and applies it to these.
    keys: Option<(u64, Arc<crate::source::KeysAt>)>,
    /// Changes no pass has read since `keys` (no output read them): the
    /// next watch pass reads them too, so that its keys are all at its
    /// revision, and the revision of the newest.
    unread: (BTreeSet<String>, Option<i64>),
    /// The config generation that `backoff`, `written` and `last_change`
    /// (keyed by target id) were learnt under.
    generation: Option<u64>,
}

impl Memory {
    /// Follows a new config generation. Target ids are
    /// `<env>/<output>/<index>`: after a reload the same id may name
    /// another target, or none. Backoffs start afresh (the new config gets
    /// a fresh try at every target, and a backoff of a target that is gone
    /// would stay due forever), and what is remembered of ids the env no
    /// longer has is forgotten.
    fn adopt(&mut self, generation: &Generation, env: &str) {
        if self.generation == Some(generation.id) {
            return;
        }
        let first = self.generation.is_none();
        self.generation = Some(generation.id);
        if first {
            return;
        }
        let ids: BTreeSet<String> = generation
            .config
            .outputs
            .iter()
            .filter(|o| o.envs.iter().any(|e| e == env))
            .flat_map(|o| (0..o.targets.len()).map(|i| reconcile::target_id(env, &o.name, i)))
            .collect();
        if !self.backoff.is_empty() {
            debug!(env, targets = self.backoff.len(), "config reloaded: backing-off targets get a fresh try");
            self.backoff.clear();
        }
        self.written.retain(|id, _| ids.contains(id));
        self.last_change.retain(|id, _| ids.contains(id));
        self.unchanged_since.retain(|id, _| ids.contains(id));
    }

    /// After a full pass that started at `started`: a backoff that was due
    /// (so not skipped) but whose target the pass did not report (gone from
    /// the env, or its output did not render) would stay due and run a pass
    /// after every pass. While the env's sources fail it waits for their
    /// retry (that pass retries it); otherwise it is forgotten, and the
    /// target gets a fresh try whenever a pass reaches it again. Returns how
    /// many were settled.
    fn settle_unreported(&mut self, summary: &PassSummary, started: Instant) -> usize {
        let reported: BTreeSet<&str> = summary.targets.iter().map(|t| t.id.as_str()).collect();
        let source_retry = summary.source.as_ref().and(self.source_retry.as_ref()).map(|b| b.until);
        let mut settled = 0;
        self.backoff.retain(|id, b| {
            if b.until > started || reported.contains(id.as_str()) {
                return true;
            }
            settled += 1;
            match source_retry {
                Some(at) => {
                    b.until = b.until.max(at);
                    true
                }
                None => false,
            }
        });
        settled
    }
}

pub struct Worker {
    pub env: String,
    pub replica: String,
    pub generation: watch::Receiver<Arc<Generation>>,
    pub leadership: Arc<Leadership>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Board>,
    /// With an election: where the env's record goes after each pass.
    pub publisher: Option<Arc<Publisher>>,
    /// Shared with the env's watch: the newest revision reflected.
    pub revision: Arc<AtomicI64>,
    /// Shared with the env's watch: a watch trigger was dropped.
    pub overflow: Arc<std::sync::atomic::AtomicBool>,
    pub triggers: mpsc::Receiver<Trigger>,
    /// Records the env's passes in its history (see [`crate::history`]).
    pub journal: Arc<crate::history::Journal>,
}

/// What the outputs of one env read in a full pass, indexed for the
/// question a watch event asks: which outputs does a change of these keys
/// concern? Built once per full pass; a lookup costs per changed key, not
/// per output.
#[derive(Debug, Default)]
struct Reads {
    /// Key → outputs (config indices) that read it.
    by_key: std::collections::HashMap<String, Vec<usize>>,
    /// `keys(prefix=…)` reads: (prefix, output).
    prefixes: Vec<(String, usize)>,
    /// Secret path → outputs that read it.
    by_secret: std::collections::HashMap<String, Vec<usize>>,
    /// Outputs of the env whose reads are not known (they did not render).
    unknown: Vec<usize>,
}

impl Reads {
    /// `used`: output name → what its rendering read, for the outputs that rendered.
    fn new(config: &crate::config::Config, env: &str, used: &BTreeMap<&str, &BTreeSet<crate::render::Use>>) -> Self {
        let mut reads = Reads::default();
        for (i, o) in config.outputs.iter().enumerate().filter(|(_, o)| o.envs.iter().any(|e| e == env)) {
            let Some(uses) = used.get(o.name.as_str()) else {
                reads.unknown.push(i);
                continue;
            };
            for u in uses.iter() {
                match u {
                    crate::render::Use::Key(k) => reads.by_key.entry(k.clone()).or_default().push(i),
                    crate::render::Use::KeyPrefix(p) => reads.prefixes.push((p.clone(), i)),
                    crate::render::Use::Secret(p) => reads.by_secret.entry(p.clone()).or_default().push(i),
                }
            }
        }
        reads
    }
}

/// The outputs (config indices) of `env` a change of `keys` concerns: those
/// whose last full rendering read one of them, and those whose reads are
/// not known (they did not render, or no full pass of this config ran yet:
/// then `None`, a full pass).
fn affected(generation: &Generation, memory: &Memory, keys: Option<&BTreeSet<String>>) -> Option<BTreeSet<usize>> {
    let keys = keys?;
    let (id, reads) = memory.uses.as_ref()?;
    if *id != generation.id {
        return None;
    }
    let mut out: BTreeSet<usize> = reads.unknown.iter().copied().collect();
    for k in keys {
        out.extend(reads.by_key.get(k).into_iter().flatten());
        out.extend(reads.prefixes.iter().filter(|(p, _)| k.starts_with(p.as_str())).map(|(_, i)| *i));
    }
    Some(out)
}

/// The outputs (config indices) whose last full rendering read one of
/// `secrets` (called only when [`affected`] knew the reads of this config).
fn secret_readers<'a>(memory: &'a Memory, secrets: &'a BTreeSet<String>) -> impl Iterator<Item = usize> + 'a {
    let reads = memory.uses.as_ref().map(|(_, r)| r);
    secrets.iter().filter_map(move |p| reads?.by_secret.get(p)).flatten().copied()
}

/// The config indices of `names` among the outputs of `env`.
fn output_indices(generation: &Generation, env: &str, names: &BTreeSet<String>) -> Vec<usize> {
    let outputs = generation.config.outputs.iter().enumerate();
    outputs.filter(|(_, o)| names.contains(&o.name) && o.envs.iter().any(|e| e == env)).map(|(i, _)| i).collect()
}

/// What a partial pass reads: the kept keys with the changes applied.
/// Every change since the kept keys' revision is in `changed_keys` (watch
/// events come in revision order into one queue; an overflow or a lost
/// watch makes the pass a full one), plus those no pass has read yet.
///
/// Not for a pass that reads a secret announced by its marker: the pass's
/// revision orders it in the env's history (`prod@rev:N` takes the secret
/// versions of the newest pass recorded at or before N, see
/// [`crate::history::point`]), and a pass at the kept keys' revision would
/// put the new version before its marker's put, where `rev:N` of the pass
/// before it would find it. The marker comes from another watch than the
/// env's keys, so the keys are not known to be unchanged up to the
/// marker's revision: they are read again (one range read of the env).
fn patch_of(
    memory: &Memory,
    generation: &Generation,
    changed_keys: Option<&BTreeSet<String>>,
    changed_at: Option<i64>,
) -> Option<crate::source::Patch> {
    let (id, base) = memory.keys.as_ref()?;
    // A drift pass changes no key: it reads at the kept keys' revision.
    let (changed, at) = (changed_keys?, changed_at.unwrap_or(0));
    if *id != generation.id {
        return None;
    }
    let (unread, unread_at) = &memory.unread;
    Some(crate::source::Patch {
        base: base.clone(),
        changed: changed.union(unread).cloned().collect(),
        at: at.max(base.revision).max(unread_at.unwrap_or(0)),
    })
}

/// Sleeps until `wake`; returns at once when it has come (tokio's timer
/// would fire a past deadline only at its next millisecond tick: a leading
/// watch change would wait for it).
async fn sleep_until(wake: Instant) {
    if wake > Instant::now() {
        tokio::time::sleep_until(wake).await;
    }
}

/// The interval with ±10 % jitter.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// What the run loop carries from one wake to the next.
struct Schedule {
    /// The pass asked for by triggers, not run yet.
    pending: Option<Pending>,
    /// The next interval pass.
    next_tick: Instant,
    memory: Memory,
    /// However the state came to be, a timed wake (and so a pass) comes at
    /// most at the floor's rate.
    floor: Floor,
    /// The env passed more often than its allowance at the last wake.
    over_allowance: bool,
    /// This replica led the env at the last leadership change.
    was_leading: bool,
}

/// A pass that is due: why, and for a watch pass the changes that asked
/// for it.
struct Due {
    reason: Reason,
    changed_keys: Option<BTreeSet<String>>,
    changed_at: Option<i64>,
    /// Outputs whose targets drifted (a target watch).
    outputs: BTreeSet<String>,
    /// The request from outside this pass answers (its revision).
    asked: Option<i64>,
    /// Secret paths written through cfgsync.
    secrets: BTreeSet<String>,
}

impl Schedule {
    fn new(config: &crate::config::Config, leading: bool) -> Self {
        Self {
            pending: Some(Pending::at_once(Reason::Start)),
            next_tick: Instant::now() + jittered(config.interval),
            memory: Memory::default(),
            floor: Floor::for_passes(config.interval, config.service.debounce),
            over_allowance: false,
            was_leading: leading,
        }
    }

    /// When a target's or the sources' backoff ends, the soonest first.
    fn retries(&self) -> (Option<Instant>, Option<Instant>) {
        let target = self.memory.backoff.values().map(|b| b.until).min();
        (target, self.memory.source_retry.as_ref().map(|b| b.until))
    }

    /// When to wake: the interval tick, the pending pass or a retry,
    /// whichever comes first, but not before the floor allows.
    fn wake_at(&self, debounce: Duration) -> Instant {
        let (retry_at, source_retry_at) = self.retries();
        let pending = self.pending.as_ref().map(|p| p.due(debounce));
        let soonest = [pending, retry_at, source_retry_at].into_iter().flatten().fold(self.next_tick, Instant::min);
        soonest.max(self.floor.ready_at())
    }

    /// A trigger came: it joins the pending pass, or starts one.
    fn on_trigger(&mut self, t: Trigger, debounce: Duration) {
        let now = Instant::now();
        let seen_before = if t.debounced { self.memory.last_change_seen.replace(now) } else { None };
        match &mut self.pending {
            Some(p) => p.merge(t, now),
            None => {
                let quiet = quiet(seen_before, now, debounce);
                self.pending = Some(Pending {
                    reason: t.reason,
                    debounced: t.debounced,
                    leading: t.debounced && quiet,
                    first: now,
                    last: now,
                    keys: t.debounced.then(|| t.keys.into_iter().collect()),
                    revision: t.revision.filter(|_| t.debounced),
                    outputs: t.outputs.into_iter().collect(),
                    asked: t.asked,
                    secrets: t.secrets.into_iter().collect(),
                });
            }
        }
    }

    /// The pass due at `now`, if one is: the pending one, the interval's,
    /// the sources' retry or a target's, in that order.
    fn due(&mut self, now: Instant, debounce: Duration) -> Option<Due> {
        let (retry_at, source_retry_at) = self.retries();
        if self.pending.as_ref().is_some_and(|p| p.due(debounce) <= now) {
            let p = self.pending.take().expect("checked above");
            return Some(Due {
                reason: p.reason,
                changed_keys: p.keys,
                changed_at: p.revision,
                outputs: p.outputs,
                asked: p.asked,
                secrets: p.secrets,
            });
        }
        let reason = if self.next_tick <= now {
            Reason::Interval
        } else if source_retry_at.is_some_and(|r| r <= now) {
            Reason::SourceRetry
        } else if retry_at.is_some_and(|r| r <= now) {
            Reason::Retry
        } else {
            return None;
        };
        Some(Due {
            reason,
            changed_keys: None,
            changed_at: None,
            outputs: BTreeSet::new(),
            asked: None,
            secrets: BTreeSet::new(),
        })
    }
}

impl Worker {
    /// Runs until `cancel`. A pass in flight is finished first: cancellation
    /// only stops new passes from starting.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut led = self.leadership.subscribe();
        let mut recovered = self.status.subscribe_recovered();
        let mut schedule = Schedule::new(&self.generation.borrow().config, self.leadership.leads(&self.env));
        loop {
            let (debounce, interval) = {
                let g = self.generation.borrow();
                (g.config.service.debounce, g.config.interval)
            };
            schedule.floor.retune_passes(interval, debounce);
            let wake = schedule.wake_at(debounce);
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                t = self.triggers.recv() => {
                    let Some(t) = t else { return };
                    if let Some(rev) = t.revision {
                        debug!(env = %self.env, revision = rev, reason = t.reason.as_str(), "change seen");
                    }
                    schedule.on_trigger(t, debounce);
                    continue;
                }
                r = led.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let leading = self.leadership.leads(&self.env);
                    if leading && !schedule.was_leading {
                        schedule.pending = Some(Pending::at_once(Reason::Elected));
                    }
                    schedule.was_leading = leading;
                    continue;
                }
                r = recovered.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if self.leadership.leads(&self.env) {
                        schedule.pending = Some(Pending::at_once(Reason::EtcdRecovered));
                    }
                    continue;
                }
                () = sleep_until(wake) => {}
            }
            let now = Instant::now();
            schedule.floor.take(now);
            schedule.over_allowance = self.warn_over_allowance(schedule.over_allowance, schedule.floor.spacing());
            if let Some(due) = schedule.due(now, debounce) {
                self.run_due(&mut schedule, due, now).await;
            }
        }
    }

    /// Runs the pass that is due: a full one, or one of the outputs that
    /// read the changed keys (none when no output reads them), on this
    /// replica only while it leads the env.
    async fn run_due(&self, schedule: &mut Schedule, due: Due, now: Instant) {
        let Due { reason, changed_keys, changed_at, outputs, asked, secrets } = due;
        let generation = self.generation.borrow().clone();
        let memory = &mut schedule.memory;
        memory.adopt(&generation, &self.env);
        let dropped = self.overflow.swap(false, Ordering::SeqCst);
        let full = changed_keys.is_none() || schedule.next_tick <= now || dropped;
        if full && (schedule.next_tick <= now || reason != Reason::Retry) {
            schedule.next_tick = now + jittered(generation.config.interval);
        }
        schedule.pending = None;
        if !self.leadership.leads(&self.env) {
            // Not this replica's env (now): the leader owns its targets'
            // backoff; start afresh if elected later.
            debug!(env = %self.env, reason = reason.as_str(), "not leading this env; no pass");
            *memory = Memory::default();
            self.journal.forget(&self.env);
            return;
        }
        // The fingerprint key is read for every keyed target, not by a
        // template: a new version of it concerns the whole env.
        let fingerprint_key = generation.config.fingerprint_key.as_ref().map(|(path, _)| path);
        let full = full || fingerprint_key.is_some_and(|k| secrets.contains(k));
        let mut only = if full { None } else { affected(&generation, memory, changed_keys.as_ref()) };
        if let Some(only) = &mut only {
            only.extend(output_indices(&generation, &self.env, &outputs));
            only.extend(secret_readers(memory, &secrets));
            debug!(env = %self.env, outputs = only.len(), reason = reason.as_str(), "a pass of some outputs");
        }
        if only.as_ref().is_some_and(BTreeSet::is_empty) {
            debug!(env = %self.env, "no output reads the changed keys; no pass");
            memory.unread.0.extend(changed_keys.into_iter().flatten());
            memory.unread.1 = memory.unread.1.max(changed_at);
            return;
        }
        let partial = only.is_some();
        // A secret's marker is an etcd write: a pass that reads the new
        // version reads the env's keys afresh, so it stands at a revision
        // after the marker's (see [`patch_of`]).
        let patch = if partial && secrets.is_empty() {
            patch_of(memory, &generation, changed_keys.as_ref(), changed_at)
        } else {
            None
        };
        if reason == Reason::Asked || asked.is_some() {
            // Someone waits on this pass (`rotate verify`): every target
            // gets a fresh try, as after a config reload, and every
            // secret is read from Vault, not the versions held.
            memory.backoff.clear();
            generation.sources.forget_secrets(&self.env);
        }
        let ok = self.pass(&generation, reason, memory, only, patch, asked).await;
        if partial && !ok {
            // The env is failing now: a full pass says so everywhere
            // (record, /readyz), and later watch passes are full ones
            // until a full pass succeeds again.
            schedule.pending = Some(Pending::at_once(Reason::Resync));
        }
    }

    /// Runs one pass; returns whether it succeeded.
    async fn pass(
        &self,
        generation: &Generation,
        reason: Reason,
        memory: &mut Memory,
        only: Option<BTreeSet<usize>>,
        patch: Option<crate::source::Patch>,
        asked: Option<i64>,
    ) -> bool {
        let lock = self.leadership.pass_lock(&self.env);
        let _guard = lock.lock().await;
        if !self.leadership.leads(&self.env) {
            // The changes of this pass are not read: forget the kept keys.
            memory.keys = None;
            return true;
        }
        let now = Instant::now();
        self.status.pass_started(
            &self.env,
            now,
            matches!(reason, Reason::Watch | Reason::SourceFile | Reason::Asked | Reason::Drift | Reason::SecretMarked),
        );
        self.metrics.pass_started(&self.env, reason.label());
        let skip: BTreeSet<String> =
            memory.backoff.iter().filter(|(_, b)| b.until > now).map(|(id, _)| id.clone()).collect();
        let partial = only.is_some();
        let options = PassOptions {
            env: Some(self.env.clone()),
            fence: Some(self.leadership.clone()),
            skip: skip.clone(),
            only_outputs: only,
            patch,
            keep_keys: true,
            ..Default::default()
        };
        let started = Instant::now();
        let summary = self.reconcile(generation, memory, &options).await;
        let took = started.elapsed();
        if let Some(rev) = summary.revision {
            self.revision.fetch_max(rev, Ordering::SeqCst);
        }
        let drifted = self.learn(&summary, memory, generation.config.interval);
        let fenced = summary.targets.iter().any(|t| t.fenced);
        if !partial && !fenced {
            let settled = memory.settle_unreported(&summary, now);
            if settled > 0 {
                debug!(env = %self.env, settled, "backoffs of targets this pass did not reach settled");
            }
        }
        let backing_off: Vec<&String> = skip.iter().filter(|id| memory.backoff.contains_key(*id)).collect();
        let ok = !summary.failed() && backing_off.is_empty();
        self.count(&summary, took, drifted.len(), ok);
        self.log_pass(&summary, reason, took, skip.len());
        if fenced || partial {
            // Cut short by losing the lead: the next leader's pass tells.
            // A pass for some outputs only leaves the env's record (a
            // full pass's) as it was.
            return ok;
        }
        let record = self.record(&summary, memory, &drifted, &backing_off, ok, asked);
        self.publish(record).await;
        ok
    }

    /// Runs the reconcile pass and keeps from its report what the next
    /// passes need: the keys read (for the next watch pass; none after a
    /// failed read) and, from a full pass that succeeded, what each output
    /// read (partial passes happen only while the env is healthy).
    async fn reconcile(&self, generation: &Generation, memory: &mut Memory, options: &PassOptions) -> PassSummary {
        let partial = options.only_outputs.is_some();
        let report = reconcile::run_pass(
            &generation.config,
            &generation.templates,
            &generation.sources,
            &generation.targets,
            options,
        )
        .await;
        memory.keys =
            report.envs.iter().find(|e| e.env == self.env).and_then(|e| e.keys.clone()).map(|k| (generation.id, k));
        memory.unread = Default::default();
        if !partial {
            memory.uses = None;
        }
        if !partial && !report.failed() {
            let used: BTreeMap<&str, &BTreeSet<crate::render::Use>> = report
                .envs
                .iter()
                .flat_map(|e| &e.outputs)
                .filter(|o| o.error.is_none())
                .map(|o| (o.output.as_str(), &o.used))
                .collect();
            memory.uses = Some((generation.id, Reads::new(&generation.config, &self.env, &used)));
        }
        let summary = PassSummary::of(&report);
        if !summary.targets.iter().any(|t| t.fenced) {
            self.record_history(generation, &report, partial).await;
        }
        summary
    }

    /// The pass's metrics: duration, drift, source failure, each write.
    fn count(&self, summary: &PassSummary, took: Duration, drifted: usize, ok: bool) {
        let writes = summary.targets.iter().filter_map(|t| {
            let result = if t.fenced {
                "fenced"
            } else if t.error.is_some() {
                "error"
            } else if t.wrote {
                "ok"
            } else {
                return None;
            };
            Some((t.kind, result))
        });
        let source = summary.source.as_ref().map(|(s, _)| *s);
        self.metrics.record_pass(&self.env, took, drifted as u64, source, writes, ok);
    }

    /// The pass's log line: a warning when it failed, info when it changed
    /// something or was asked for, else debug.
    fn log_pass(&self, summary: &PassSummary, reason: Reason, took: Duration, skipped: usize) {
        let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let changed = summary.changed;
        if summary.failed() {
            let code = summary.first_code().unwrap_or_default();
            warn!(env = %self.env, reason = reason.as_str(), took_ms, changed, code, "pass failed (details above); other envs and targets unaffected");
        } else if changed > 0 || reason != Reason::Interval {
            info!(env = %self.env, reason = reason.as_str(), took_ms, changed, skipped, "pass done");
        } else {
            debug!(env = %self.env, reason = reason.as_str(), took_ms, "pass done, nothing changed");
        }
    }

    /// Records the pass in the env's history, fenced by the election lease.
    async fn record_history(&self, generation: &Generation, report: &reconcile::Report, partial: bool) {
        let Some(env_report) = report.envs.iter().find(|e| e.env == self.env) else { return };
        let guard = match (&self.publisher, self.leadership.lease()) {
            (Some(p), Some(lease)) => Some(crate::history::Guard { leader_key: p.keys.leader(&self.env), lease }),
            // An election without a lease: not leading any more.
            (Some(_), None) => return,
            (None, _) => None,
        };
        self.journal.pass(&generation.config, &generation.templates, env_report, partial, guard.as_ref()).await;
    }

    /// Logs when this env's passes go above what its interval and debounce
    /// allow, and when they are back under; returns whether they are above.
    fn warn_over_allowance(&self, was_over: bool, spacing: Duration) -> bool {
        let rate = self.status.pass_rate(&self.env);
        let over = rate.too_high();
        if over && !was_over {
            error!(
                env = %self.env,
                passes_per_s = rate.per_second(),
                allowed_per_s = rate.allowed_per_second(),
                floor_ms = spacing.as_secs_f64() * 1000.0,
                "the env passes more often than its interval and debounce allow: a bug in cfgsync (please report it with this log; cfgsync_passes_total says which trigger); held to one pass per floor_ms, and /readyz says spinning"
            );
        } else if was_over && !over {
            info!(env = %self.env, passes_per_s = rate.per_second(), allowed_per_s = rate.allowed_per_second(), "the env's pass rate is back within its allowance");
        }
        over
    }

    /// Updates backoffs, drift and change memory from a pass; returns the
    /// targets whose drift it reverted.
    fn learn(&self, summary: &PassSummary, memory: &mut Memory, interval: Duration) -> BTreeSet<String> {
        match &summary.source {
            Some((_, failure)) => {
                let b = memory.source_retry.get_or_insert_with(|| Backoff {
                    failures: 0,
                    until: Instant::now(),
                    code: String::new(),
                    output: String::new(),
                    kind: String::new(),
                    address: String::new(),
                });
                let delay = b.fail(interval);
                b.code.clone_from(&failure.code);
                warn!(env = %self.env, code = %failure.code, failures = b.failures, retry_in_ms = delay.as_millis() as u64, "sources failed; retrying");
            }
            None => {
                if memory.source_retry.take().is_some() {
                    info!(env = %self.env, "sources recovered");
                }
            }
        }
        let mut drifted = BTreeSet::new();
        let now_ms = unix_ms(SystemTime::now());
        for t in &summary.targets {
            if t.fenced {
                continue;
            }
            match &t.error {
                Some(failure) => {
                    let entry = memory.backoff.entry(t.id.clone()).or_insert(Backoff {
                        failures: 0,
                        until: Instant::now(),
                        code: String::new(),
                        output: t.output.clone(),
                        kind: t.kind.to_owned(),
                        address: t.address.clone(),
                    });
                    let delay = entry.fail(interval);
                    entry.code.clone_from(&failure.code);
                    warn!(env = %self.env, target = %t.id, code = %failure.code, failures = entry.failures, retry_in_ms = delay.as_millis() as u64, "target failed; backing off");
                }
                None => {
                    if memory.backoff.remove(&t.id).is_some() {
                        info!(env = %self.env, target = %t.id, "target recovered");
                    }
                    if t.drift_seen || (t.needs_write && memory.written.get(&t.id) == Some(&t.desired_hash)) {
                        drifted.insert(t.id.clone());
                        warn!(env = %self.env, target = %t.id, "drift: the target was changed outside cfgsync; reverted");
                    }
                    if t.wrote {
                        memory.last_change.insert(t.id.clone(), now_ms);
                    }
                    memory.unchanged_since.entry(t.id.clone()).or_insert(now_ms);
                    memory.written.insert(t.id.clone(), t.desired_hash);
                }
            }
        }
        drifted
    }

    /// The env's record of this pass: states and codes only.
    fn record(
        &self,
        summary: &PassSummary,
        memory: &Memory,
        drifted: &BTreeSet<String>,
        backing_off: &[&String],
        ok: bool,
        asked: Option<i64>,
    ) -> EnvRecord {
        let previous = self.status.record_of(&self.env);
        // What the previous record (maybe another leader's, from before a
        // restart) knew of the same target: same id, kind and address.
        let before = |id: &str, kind: &str, address: &str| {
            previous.as_ref()?.targets.iter().find(|t| t.id == id && t.kind == kind && t.address == address).cloned()
        };
        // (last change, unchanged since): a known write, else since when
        // passes found it as it should be (the earliest anyone knows).
        let times = |id: &str, kind: &str, address: &str| {
            let before = before(id, kind, address);
            let last = memory.last_change.get(id).copied().or_else(|| before.as_ref()?.last_change_ms);
            if last.is_some() {
                return (last, None);
            }
            let since = [memory.unchanged_since.get(id).copied(), before.and_then(|b| b.unchanged_since_ms)];
            (None, since.into_iter().flatten().min())
        };
        let mut targets: Vec<TargetRecord> = summary
            .targets
            .iter()
            .map(|t| {
                let state = match (&t.error, drifted.contains(&t.id)) {
                    (Some(_), _) => TargetState::Failing,
                    (None, true) => TargetState::DriftReverted,
                    (None, false) => TargetState::Ok,
                };
                let (last_change_ms, unchanged_since_ms) = times(&t.id, t.kind, &t.address);
                TargetRecord {
                    id: t.id.clone(),
                    output: t.output.clone(),
                    kind: t.kind.to_owned(),
                    address: t.address.clone(),
                    state,
                    code: t.error.as_ref().map(|f| f.code.clone()),
                    last_change_ms,
                    unchanged_since_ms,
                }
            })
            .collect();
        for id in backing_off {
            if let Some(b) = memory.backoff.get(*id) {
                let (last_change_ms, unchanged_since_ms) = times(id, &b.kind, &b.address);
                targets.push(TargetRecord {
                    id: (*id).clone(),
                    output: b.output.clone(),
                    kind: b.kind.clone(),
                    address: b.address.clone(),
                    state: TargetState::BackingOff,
                    code: Some(b.code.clone()),
                    last_change_ms,
                    unchanged_since_ms,
                });
            }
        }
        if summary.source.is_some()
            && let Some(p) = &previous
        {
            // Nothing was touched: the targets are as the last pass left them.
            targets.clone_from(&p.targets);
        }
        targets.sort_by(|a, b| a.id.cmp(&b.id));
        let code = summary
            .first_code()
            .or_else(|| backing_off.first().and_then(|id| memory.backoff.get(*id)).map(|b| b.code.clone()));
        EnvRecord {
            leader: self.replica.clone(),
            at_ms: unix_ms(SystemTime::now()),
            revision: summary.revision,
            ok,
            code: if ok { None } else { code },
            outputs: summary
                .outputs
                .iter()
                .map(|(name, f)| OutputRecord { name: name.clone(), code: f.code.clone() })
                .collect(),
            targets,
            asked_revision: asked,
        }
    }

    /// Publishes the record (election) or keeps it on the board (standalone).
    async fn publish(&self, record: EnvRecord) {
        let Some(publisher) = &self.publisher else {
            self.status.record(&self.env, record, 0);
            return;
        };
        let Some(lease) = self.leadership.lease() else { return };
        match publisher.publish(&self.env, lease, &record).await {
            Ok(revision) => self.status.record(&self.env, record, revision),
            Err(PublishError::NotLeader { .. }) => {
                debug!(env = %self.env, "pass record not published: no longer the leader");
            }
            Err(e) => {
                warn!(env = %self.env, error = %e, "cannot publish the pass record; readiness waits for the next pass")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asked_pass_stays_asked_whatever_joins_it() {
        let now = Instant::now();
        let mut p = Pending::at_once(Reason::Start);
        p.merge(Trigger::asked(5), now);
        p.merge(Trigger::now(Reason::ConfigReloaded), now);
        p.merge(Trigger::debounced(Reason::Watch, 7, vec!["a".into()]), now);
        assert_eq!((p.reason, p.asked), (Reason::ConfigReloaded, Some(5)), "a reload after the request keeps it");
        p.merge(Trigger::asked(9), now);
        p.merge(Trigger::asked(8), now);
        assert_eq!(p.asked, Some(9), "the newest request is the one answered");
    }

    #[test]
    fn debounce_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pending {
            reason: Reason::Watch,
            debounced: true,
            leading: false,
            first: t0,
            last: t0,
            keys: None,
            revision: None,
            outputs: BTreeSet::new(),
            asked: None,
            secrets: BTreeSet::new(),
        };
        assert_eq!(p.due(ms(200)), t0 + ms(200));
        p.last = t0 + ms(150);
        assert_eq!(p.due(ms(200)), t0 + ms(350));
        p.last = t0 + ms(990);
        assert_eq!(p.due(ms(200)), t0 + ms(1000), "at most 5 x debounce after the first event");
        p.debounced = false;
        assert_eq!(p.due(ms(200)), t0, "an undebounced trigger is due at once");
        let leading = Pending {
            reason: Reason::Watch,
            debounced: true,
            leading: true,
            first: t0,
            last: t0,
            keys: None,
            revision: None,
            outputs: BTreeSet::new(),
            asked: None,
            secrets: BTreeSet::new(),
        };
        assert_eq!(leading.due(ms(200)), t0, "the first change after a quiet period goes at once");
    }

    #[test]
    fn a_change_is_leading_when_none_came_for_the_debounce() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert!(quiet(None, t0, ms(200)), "the first change ever");
        assert!(quiet(Some(t0), t0 + ms(215), ms(200)), "a change every 215 ms: each goes at once");
        assert!(!quiet(Some(t0), t0 + ms(50), ms(200)), "a burst: coalesced behind the first");
    }

    #[test]
    fn watch_triggers_keep_their_keys_until_a_full_pass_is_asked_for() {
        let t0 = Instant::now();
        let mut p = Pending {
            reason: Reason::Watch,
            debounced: true,
            leading: true,
            first: t0,
            last: t0,
            keys: Some(["a".to_owned()].into()),
            revision: Some(1),
            outputs: BTreeSet::new(),
            asked: None,
            secrets: BTreeSet::new(),
        };
        p.merge(Trigger::debounced(Reason::Watch, 2, vec!["b".into()]), t0);
        assert_eq!(p.keys.as_ref().map(|k| k.len()), Some(2));
        assert_eq!(p.revision, Some(2), "the newest revision of the changes");
        p.merge(Trigger::now(Reason::ConfigReloaded), t0);
        assert!(p.keys.is_none(), "anything but a watch event needs a full pass");
        p.merge(Trigger::debounced(Reason::Watch, 3, vec!["c".into()]), t0);
        assert!(p.keys.is_none(), "and stays full");
    }

    fn backoff(until: Instant) -> Backoff {
        Backoff {
            failures: 1,
            until,
            code: "check_rejected".into(),
            output: "api".into(),
            kind: "file".into(),
            address: "out".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_backoff_whose_target_the_pass_did_not_reach_is_settled() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut memory = Memory::default();
        memory.backoff.insert("prod/gone/0".into(), backoff(t0));
        memory.backoff.insert("prod/waiting/0".into(), backoff(later));
        let summary = PassSummary::default();
        assert_eq!(memory.settle_unreported(&summary, t0), 1);
        assert!(!memory.backoff.contains_key("prod/gone/0"), "due and not reached: forgotten");
        assert!(memory.backoff.contains_key("prod/waiting/0"), "skipped by the pass: kept");

        // While the sources fail, a due backoff waits for their retry.
        memory.backoff.insert("prod/gone/0".into(), backoff(t0));
        memory.source_retry = Some(backoff(t0 + Duration::from_secs(2)));
        let failed = PassSummary {
            source: Some(("file", super::super::summary::Failure { code: "file_invalid".into() })),
            ..Default::default()
        };
        assert_eq!(memory.settle_unreported(&failed, t0), 1);
        assert_eq!(memory.backoff["prod/gone/0"].until, t0 + Duration::from_secs(2));
        assert_eq!(
            memory.backoff.values().map(|b| b.until).min(),
            Some(t0 + Duration::from_secs(2)),
            "nothing due now"
        );
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
