//! The status board: what this replica knows about every env it serves,
//! and the one readiness rule that `/readyz`, the status page and the
//! metrics all read from it.
//!
//! **Readiness.** A replica is ready when, for every env it serves:
//! 1. with an election: etcd answered the election within the last
//!    `2/3 × ttl` (else `no_leader`, code `etcd_unreachable`,
//!    `etcd_denied`, `etcd_auth_failed` or `starting`);
//! 2. with an election: some replica holds the env's leader key (else
//!    `no_leader`, code `unled`);
//! 3. this replica did not pass the env more often in the last 10 s than
//!    its interval, its debounce and the changes that came allow (else
//!    `spinning`, code
//!    `pass_rate_high`: a bug in the service's bookkeeping, held to twice
//!    that rate by the [`super::floor`]; the log says which trigger);
//! 4. the env's last pass, by whoever led it, is known (else `pending`,
//!    `no_pass_yet`), succeeded (else `failing` with the pass's first
//!    failure code, e.g. `vault_denied`, `check_rejected`) and ended within
//!    two intervals (else `stale`, `no_recent_pass`).
//!
//! Followers learn the last pass from the record the leader publishes in
//! etcd ([`super::published`]); the leader's own view is the same record,
//! taken only once it is written, so every replica gives the same answer.
//! Without an election (keys from files) the replica's own passes count.
//!
//! Decisions:
//! - **Judged when asked**, from times, not from events: a replica whose
//!   etcd hangs (SIGSTOP, partition) has no event to react to, but its last
//!   contact ages, so it turns not-ready within one TTL however the
//!   election task is stuck.
//! - **States and codes only** leave this module (`/readyz`, the page,
//!   etcd); error text goes to the log where it happens.
//! - A record's age is judged by its wall-clock time: replicas are assumed
//!   to agree on the time to well within an interval (NTP).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::election::Leadership;
use super::floor::{Rate, WINDOW};
use super::published::{EnvRecord, TargetState};
use crate::http::Views;
use crate::metrics::Metrics;

/// How this replica relates to an env.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No election (keys come from files): this replica writes every env.
    Standalone,
    Leader,
    /// Another replica leads, or nobody does.
    Follower,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// What paces an env's passes: the config's interval and debounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub interval: Duration,
    pub debounce: Duration,
}

impl Pacing {
    pub fn of(config: &crate::config::Config) -> Self {
        Self { interval: config.interval, debounce: config.service.debounce }
    }
}

/// This replica's passes of an env in the last [`WINDOW`], and how many
/// the interval and debounce allow, with the changes that came in it
/// (see [`super::floor`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassRate {
    pub recent: u32,
    pub allowed: u32,
}

impl PassRate {
    pub fn too_high(&self) -> bool {
        self.recent > self.allowed
    }

    /// Passes per second over the window.
    pub fn per_second(&self) -> f64 {
        f64::from(self.recent) / WINDOW.as_secs_f64()
    }

    pub fn allowed_per_second(&self) -> f64 {
        f64::from(self.allowed) / WINDOW.as_secs_f64()
    }
}

/// What the election read for one env.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The replica holding the leader key.
    pub leader: Option<String>,
    /// The published status: its bytes and etcd `mod_revision`.
    pub status: Option<(Vec<u8>, i64)>,
}

/// One env as this replica knows it.
#[derive(Debug, Clone)]
pub struct EnvView {
    pub role: Role,
    /// Holder of the leader key at the last read (election only).
    pub leader: Option<String>,
    pub record: Option<EnvRecord>,
    /// etcd `mod_revision` of `record` (0: a local record).
    record_revision: i64,
    /// The published status could not be parsed.
    pub record_invalid: bool,
    /// This replica's etcd watch on the env is down.
    pub watch_lost: bool,
    /// This replica's target watches of the env, by kind (`kubernetes`,
    /// `file`): whether all of that kind are up (while one is down, drift
    /// waits for the interval). Empty when not watching (not leading).
    pub target_watches: BTreeMap<&'static str, bool>,
    /// When a target watch last saw a change of what the env writes (Unix ms).
    pub last_watch_event_ms: Option<u64>,
    /// Drift (a hand edit, a deletion) the target watches saw and asked a
    /// pass for, and the last object (its name, never its content) and when.
    pub drift_seen: u64,
    pub last_drift: Option<(u64, String)>,
    /// This replica's passes of the env; filled in by [`Board::snapshot`].
    pub passes: PassRate,
    /// The secret reads this replica sent to Vault for the env in the last
    /// minute (None: no Vault); filled in by [`Board::snapshot`] from
    /// [`Metrics::secret_reads_last_minute`].
    pub secret_reads_last_minute: Option<u64>,
}

impl EnvView {
    pub(super) fn new(role: Role) -> Self {
        Self {
            role,
            leader: None,
            record: None,
            record_revision: 0,
            record_invalid: false,
            watch_lost: false,
            target_watches: BTreeMap::new(),
            last_watch_event_ms: None,
            drift_seen: 0,
            last_drift: None,
            passes: PassRate::default(),
            secret_reads_last_minute: None,
        }
    }
}

/// The readiness of one env: a state and, unless ok, a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: &'static str,
    pub code: Option<String>,
}

impl Verdict {
    pub fn ready(&self) -> bool {
        self.state == "ok"
    }

    fn not(state: &'static str, code: impl Into<String>) -> Self {
        Self { state, code: Some(code.into()) }
    }
}

/// The election's contact with etcd.
#[derive(Debug, Clone, Default)]
struct Contact {
    /// When the last successful read of the election keys was sent.
    ok_at: Option<Instant>,
    /// Why the last attempt failed, as a code.
    error: Option<&'static str>,
}

/// What [`judge`] needs besides the env.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub now_ms: u64,
}

impl Clock {
    pub fn now() -> Self {
        Self { now: Instant::now(), now_ms: unix_ms(SystemTime::now()) }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Inner {
    pacing: Pacing,
    envs: BTreeMap<String, EnvView>,
    /// When this replica's passes of each env started.
    passes: BTreeMap<String, Rate>,
    contact: Contact,
}

/// The status board every task writes and the HTTP endpoints read.
pub struct Board {
    replica: String,
    election: bool,
    /// How long an etcd contact counts: the fence's validity, `2/3 × ttl`.
    contact_valid: Duration,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    recovered: watch::Sender<u64>,
    inner: Mutex<Inner>,
}

/// The readiness of one env, from what is known at `clock`.
fn judge(
    view: &EnvView,
    election: bool,
    contact: &Contact,
    contact_valid: Duration,
    interval: Duration,
    clock: Clock,
) -> Verdict {
    if election {
        let fresh = contact.ok_at.is_some_and(|t| clock.now.saturating_duration_since(t) <= contact_valid);
        if !fresh {
            let code = match (contact.error, contact.ok_at) {
                (Some(code), _) => code,
                (None, None) => "starting",
                (None, Some(_)) => "etcd_unreachable",
            };
            return Verdict::not("no_leader", code);
        }
        if view.leader.is_none() {
            return Verdict::not("no_leader", "unled");
        }
    }
    if view.passes.too_high() {
        return Verdict::not("spinning", "pass_rate_high");
    }
    if view.record_invalid {
        return Verdict::not("failing", "invalid_record");
    }
    let Some(record) = &view.record else { return Verdict::not("pending", "no_pass_yet") };
    if !record.ok {
        return Verdict::not("failing", record.code.clone().unwrap_or_else(|| "failed".to_owned()));
    }
    let limit = u64::try_from((interval * 2).as_millis()).unwrap_or(u64::MAX);
    if clock.now_ms.saturating_sub(record.at_ms) > limit {
        return Verdict::not("stale", "no_recent_pass");
    }
    Verdict { state: "ok", code: None }
}

/// Everything the page shows, read at one moment.
pub struct Snapshot {
    pub replica: String,
    pub election: bool,
    pub clock: Clock,
    pub envs: Vec<(String, EnvView, Verdict)>,
}

impl Board {
    pub fn new(
        replica: String,
        envs: &[String],
        pacing: Pacing,
        election: bool,
        election_ttl: Duration,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let role = if election { Role::Follower } else { Role::Standalone };
        let envs = envs.iter().map(|e| (e.clone(), EnvView::new(role))).collect();
        let (recovered, _) = watch::channel(0);
        Self {
            replica,
            election,
            contact_valid: election_ttl * 2 / 3,
            leadership,
            metrics,
            recovered,
            inner: Mutex::new(Inner { pacing, envs, passes: BTreeMap::new(), contact: Contact::default() }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Follows a config reload: the env set, the interval and debounce.
    pub fn set_envs(&self, envs: &[String], pacing: Pacing) {
        let role = if self.election { Role::Follower } else { Role::Standalone };
        self.with(|inner| {
            inner.pacing = pacing;
            inner.envs.retain(|e, _| envs.contains(e));
            inner.passes.retain(|e, _| envs.contains(e));
            for e in envs {
                inner.envs.entry(e.clone()).or_insert_with(|| EnvView::new(role));
            }
        });
    }

    pub fn set_role(&self, env: &str, role: Role) {
        self.with(|inner| {
            if let Some(v) = inner.envs.get_mut(env) {
                v.role = role;
            }
        });
    }

    pub fn set_watch_lost(&self, env: &str, lost: bool) {
        self.with(|inner| {
            if let Some(v) = inner.envs.get_mut(env) {
                v.watch_lost = lost;
            }
        });
    }

    /// The target watches of `kind` of `env` are up (`Some(true)`), one is
    /// down (`Some(false)`), or there are none (`None`: not leading).
    pub fn set_target_watch(&self, env: &str, kind: &'static str, up: Option<bool>) {
        self.with(|inner| {
            if let Some(v) = inner.envs.get_mut(env) {
                match up {
                    Some(up) => v.target_watches.insert(kind, up),
                    None => v.target_watches.remove(kind),
                };
            }
        });
    }

    /// A target watch of `env` saw a change; `drift`: of an owned object
    /// (described by name), which a pass now reverts.
    pub fn watch_event(&self, env: &str, drift: Option<String>) {
        let now = unix_ms(SystemTime::now());
        self.with(|inner| {
            if let Some(v) = inner.envs.get_mut(env) {
                v.last_watch_event_ms = Some(now);
                if let Some(object) = drift {
                    v.drift_seen += 1;
                    v.last_drift = Some((now, object));
                }
            }
        });
    }

    /// The election read its keys; the read was sent at `sent` and saw
    /// etcd at `read_revision`.
    pub fn observed(&self, sent: Instant, read_revision: i64, seen: &BTreeMap<String, Seen>) {
        self.with(|inner| {
            inner.contact = Contact { ok_at: Some(sent), error: None };
            for (env, v) in inner.envs.iter_mut() {
                let Some(s) = seen.get(env) else { continue };
                v.leader = s.leader.clone();
                // A read from before this replica's own publish is older news.
                if read_revision < v.record_revision {
                    continue;
                }
                match &s.status {
                    None => {
                        v.record = None;
                        v.record_revision = 0;
                        v.record_invalid = false;
                    }
                    Some((bytes, rev)) => {
                        v.record = EnvRecord::parse(bytes);
                        v.record_invalid = v.record.is_none();
                        v.record_revision = *rev;
                    }
                }
            }
        });
    }

    /// The election could not talk to etcd (`code`, e.g. `etcd_unreachable`).
    pub fn contact_failed(&self, code: &'static str) {
        self.with(|inner| inner.contact.error = Some(code));
    }

    /// etcd answers again after failing: workers pass at once.
    pub fn etcd_recovered(&self) {
        self.recovered.send_modify(|n| *n += 1);
    }

    pub fn subscribe_recovered(&self) -> watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// The record of a pass: this replica's own (no election), or one it
    /// has just published at etcd revision `revision`.
    pub fn record(&self, env: &str, record: EnvRecord, revision: i64) {
        self.with(|inner| {
            if let Some(v) = inner.envs.get_mut(env)
                && revision >= v.record_revision
            {
                v.record = Some(record);
                v.record_revision = revision;
                v.record_invalid = false;
            }
        });
    }

    /// This replica starts a pass of `env`; `for_change`: an etcd or file
    /// change asked for it.
    pub fn pass_started(&self, env: &str, at: Instant, for_change: bool) {
        self.with(|inner| inner.passes.entry(env.to_owned()).or_default().record(at, for_change));
    }

    /// This replica's passes of `env` in the last [`WINDOW`], and the allowance.
    pub fn pass_rate(&self, env: &str) -> PassRate {
        let now = Instant::now();
        self.with(|inner| rate_of(inner, env, now))
    }

    /// The env's last known record (for carrying "last change" over).
    pub fn record_of(&self, env: &str) -> Option<EnvRecord> {
        self.with(|inner| inner.envs.get(env).and_then(|v| v.record.clone()))
    }

    pub fn snapshot(&self) -> Snapshot {
        let clock = Clock::now();
        self.with(|inner| Snapshot {
            replica: self.replica.clone(),
            election: self.election,
            clock,
            envs: inner
                .envs
                .iter()
                .map(|(name, v)| {
                    let mut v = v.clone();
                    v.passes = rate_of(inner, name, clock.now);
                    v.secret_reads_last_minute = self.metrics.secret_reads_last_minute(name);
                    let interval = inner.pacing.interval;
                    let verdict = judge(&v, self.election, &inner.contact, self.contact_valid, interval, clock);
                    (name.clone(), v, verdict)
                })
                .collect(),
        })
    }
}

fn rate_of(inner: &Inner, env: &str, now: Instant) -> PassRate {
    let Pacing { interval, debounce } = inner.pacing;
    match inner.passes.get(env) {
        Some(r) => PassRate { recent: r.count(now).0, allowed: r.allowed(now, interval, debounce) },
        None => PassRate { recent: 0, allowed: Rate::default().allowed(now, interval, debounce) },
    }
}

impl Views for Board {
    fn readiness(&self) -> (bool, Value) {
        let snap = self.snapshot();
        let mut envs = Map::new();
        let mut all = true;
        for (name, v, verdict) in &snap.envs {
            all &= verdict.ready();
            let mut e = json!({ "state": verdict.state, "role": v.role.as_str() });
            if let Some(code) = &verdict.code {
                e["code"] = json!(code);
            }
            if let Some(l) = &v.leader {
                e["leader"] = json!(l);
            }
            if v.watch_lost {
                e["watch"] = json!("lost");
            }
            let down: Vec<&str> = v.target_watches.iter().filter(|(_, up)| !**up).map(|(k, _)| *k).collect();
            if !down.is_empty() {
                // Drift is reverted at the interval until they are back.
                e["watches_down"] = json!(down);
            }
            if v.drift_seen > 0 {
                e["drift_seen"] = json!(v.drift_seen);
            }
            if let Some(reads) = v.secret_reads_last_minute {
                e["secret_reads_last_minute"] = json!(reads);
            }
            e["passes_per_second"] = json!({
                "last_10s": v.passes.per_second(),
                "allowed": v.passes.allowed_per_second(),
            });
            if let Some(r) = &v.record {
                let outputs: Map<String, Value> = r.outputs.iter().map(|o| (o.name.clone(), json!(o.code))).collect();
                if !outputs.is_empty() {
                    e["outputs"] = Value::Object(outputs);
                }
                let targets: Map<String, Value> = r
                    .targets
                    .iter()
                    .filter(|t| matches!(t.state, TargetState::Failing | TargetState::BackingOff))
                    .map(|t| {
                        let target = json!({
                            "state": t.state.as_str(),
                            "code": t.code,
                            "output": t.output_name(),
                            "kind": t.kind,
                            "address": t.address,
                        });
                        (t.id.clone(), target)
                    })
                    .collect();
                if !targets.is_empty() {
                    e["targets"] = Value::Object(targets);
                }
            }
            envs.insert(name.clone(), e);
        }
        (all, json!({ "ready": all, "replica": snap.replica, "envs": envs }))
    }

    fn status_page(&self) -> String {
        super::page::render(&self.snapshot())
    }

    /// Gauges that depend on time are set when scraped: `cfgsync_leader`
    /// from the fence itself, `cfgsync_env_led` and `cfgsync_env_ready`
    /// from the same judgement as `/readyz`, the pass rate from the same
    /// count.
    fn refresh_metrics(&self) {
        for (env, view, verdict) in self.snapshot().envs {
            let led = !self.election || verdict.state != "no_leader";
            self.metrics.set_env_state(&env, led, verdict.ready());
            self.metrics.set_pass_rate(&env, view.passes.per_second(), view.passes.allowed_per_second());
            self.metrics.set_leader(&env, self.leadership.leads(&env));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::floor::WINDOW;
    use crate::service::published::TargetRecord;

    fn record(ok: bool, at_ms: u64) -> EnvRecord {
        EnvRecord {
            leader: "r2".into(),
            at_ms,
            revision: Some(9),
            asked_revision: None,
            ok,
            code: (!ok).then(|| "vault_denied".to_owned()),
            outputs: Vec::new(),
            targets: vec![TargetRecord {
                id: "prod/api/0".into(),
                output: "api".into(),
                kind: "file".into(),
                address: "out/prod/api.env".into(),
                state: if ok { TargetState::Ok } else { TargetState::BackingOff },
                code: (!ok).then(|| "check_rejected".to_owned()),
                last_change_ms: None,
                unchanged_since_ms: None,
            }],
        }
    }

    fn board(election: bool) -> Board {
        let metrics = Arc::new(Metrics::new());
        let leadership = Arc::new(Leadership::new(election, "r1".into(), metrics.clone()));
        Board::new(
            "r1".into(),
            &["prod".to_owned()],
            Pacing { interval: Duration::from_secs(60), debounce: Duration::from_millis(200) },
            election,
            Duration::from_secs(15),
            leadership,
            metrics,
        )
    }

    fn seen(leader: Option<&str>, record: Option<&EnvRecord>, rev: i64) -> BTreeMap<String, Seen> {
        let status = record.map(|r| (r.to_json().into_bytes(), rev));
        BTreeMap::from([("prod".to_owned(), Seen { leader: leader.map(str::to_owned), status })])
    }

    /// A read at revision `rev` that saw `leader` and `record` (written at `rev`).
    fn observe(b: &Board, leader: Option<&str>, record: Option<&EnvRecord>, rev: i64) {
        b.observed(Instant::now(), rev, &seen(leader, record, rev));
    }

    fn state(b: &Board) -> (bool, String, Option<String>) {
        let (ready, body) = b.readiness();
        let e = &body["envs"]["prod"];
        (ready, e["state"].as_str().unwrap().to_owned(), e["code"].as_str().map(str::to_owned))
    }

    #[tokio::test(start_paused = true)]
    async fn an_env_is_ready_only_with_a_leader_a_fresh_contact_and_a_good_recent_pass() {
        let b = board(true);
        assert_eq!(state(&b), (false, "no_leader".into(), Some("starting".into())));
        b.contact_failed("etcd_denied");
        assert_eq!(state(&b), (false, "no_leader".into(), Some("etcd_denied".into())));

        let now_ms = unix_ms(SystemTime::now());
        observe(&b, None, None, 0);
        assert_eq!(state(&b), (false, "no_leader".into(), Some("unled".into())));
        observe(&b, Some("r2"), None, 0);
        assert_eq!(state(&b), (false, "pending".into(), Some("no_pass_yet".into())));
        observe(&b, Some("r2"), Some(&record(false, now_ms)), 5);
        assert_eq!(state(&b), (false, "failing".into(), Some("vault_denied".into())));
        let body = b.readiness().1;
        assert_eq!(
            body["envs"]["prod"]["targets"]["prod/api/0"],
            json!({"state": "backing_off", "code": "check_rejected", "output": "api", "kind": "file", "address": "out/prod/api.env"})
        );
        observe(&b, Some("r2"), Some(&record(true, now_ms)), 6);
        assert_eq!(state(&b), (true, "ok".into(), None));
        assert_eq!(b.readiness().1["envs"]["prod"]["leader"], "r2");

        // etcd stops answering: not ready once the contact is 2/3 TTL old,
        // whatever the election task is doing.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.readiness().0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(state(&b), (false, "no_leader".into(), Some("etcd_unreachable".into())));
        b.contact_failed("etcd_unreachable");
        observe(&b, Some("r2"), Some(&record(true, now_ms)), 6);
        assert!(b.readiness().0, "ready again as soon as etcd answers");

        // A pass older than two intervals is stale.
        let old = now_ms - 121_000;
        observe(&b, Some("r2"), Some(&record(true, old)), 7);
        assert_eq!(state(&b), (false, "stale".into(), Some("no_recent_pass".into())));

        // Garbage in the status key: failing, and nothing of it shown.
        let mut s = seen(Some("r2"), None, 8);
        s.get_mut("prod").unwrap().status = Some((b"password=hunter2".to_vec(), 8));
        b.observed(Instant::now(), 8, &s);
        assert_eq!(state(&b), (false, "failing".into(), Some("invalid_record".into())));
        assert!(!b.readiness().1.to_string().contains("hunter2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_published_record_is_not_replaced_by_an_older_read() {
        let b = board(true);
        let now_ms = unix_ms(SystemTime::now());
        b.record("prod", record(true, now_ms), 10);
        observe(&b, Some("r1"), Some(&record(false, now_ms)), 9);
        assert!(b.readiness().0, "the read was sent before the publish landed");
        observe(&b, Some("r1"), Some(&record(false, now_ms)), 11);
        assert!(!b.readiness().0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_env_passed_more_often_than_interval_and_debounce_allow_is_not_ready() {
        let b = board(false);
        b.record("prod", record(true, unix_ms(SystemTime::now())), 0);
        // 32 passes per 10 s nothing asked for, and 100 more for changes
        // (two per 200 ms debounce): a window at the most a correct worker
        // runs is ready.
        for i in 0..132 {
            b.pass_started("prod", Instant::now(), i < 100);
            tokio::time::advance(WINDOW / 133).await;
        }
        assert_eq!(state(&b), (true, "ok".into(), None));
        assert_eq!(b.readiness().1["envs"]["prod"]["passes_per_second"], json!({ "last_10s": 13.2, "allowed": 13.2 }));
        // One more for a change (above two per debounce): spinning.
        b.pass_started("prod", Instant::now(), true);
        assert_eq!(state(&b), (false, "spinning".into(), Some("pass_rate_high".into())));
        b.refresh_metrics();
        let text = b.metrics.encode();
        assert!(text.contains("cfgsync_pass_rate{env=\"prod\"} 13.3\n"), "{text}");
        assert!(text.contains("cfgsync_pass_rate_allowed{env=\"prod\"} 13.2\n"), "{text}");
        assert!(text.contains("cfgsync_env_ready{env=\"prod\"} 0\n"), "{text}");
        assert!(super::super::page::render(&b.snapshot()).contains("pass_rate_high"));
        // A quiet window later: ready again.
        tokio::time::advance(WINDOW).await;
        b.record("prod", record(true, unix_ms(SystemTime::now())), 0);
        assert_eq!(state(&b), (true, "ok".into(), None));
    }

    #[test]
    fn without_an_election_the_own_passes_count() {
        let b = board(false);
        assert_eq!(state(&b), (false, "pending".into(), Some("no_pass_yet".into())));
        b.record("prod", record(true, unix_ms(SystemTime::now())), 0);
        assert_eq!(state(&b), (true, "ok".into(), None));
        assert_eq!(b.readiness().1["envs"]["prod"]["role"], "standalone");
        b.refresh_metrics();
        let text = b.metrics.encode();
        assert!(text.contains("cfgsync_env_led{env=\"prod\"} 1\n"), "{text}");
        assert!(text.contains("cfgsync_env_ready{env=\"prod\"} 1\n"), "{text}");
    }

    #[test]
    fn the_secret_reads_of_the_last_minute_are_shown_per_env_with_vault_only() {
        use crate::source::vault::CredentialObserver;
        let b = board(false);
        assert!(b.readiness().1["envs"]["prod"].get("secret_reads_last_minute").is_none(), "no Vault");
        b.metrics.init_series(&["prod".to_owned()], &[crate::source::SourceKind::Vault], &[]);
        assert_eq!(b.readiness().1["envs"]["prod"]["secret_reads_last_minute"], 0);
        b.metrics.secret_read("prod");
        b.metrics.secret_read("prod");
        assert_eq!(b.readiness().1["envs"]["prod"]["secret_reads_last_minute"], 2);
        assert!(b.status_page().contains("<tr><th>secret reads</th><td>2 in the last minute"));
    }
}
