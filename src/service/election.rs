//! Leader election per env through etcd leases, with a fair share.
//!
//! Each replica holds one lease (TTL `[service.election] ttl`, default 15 s)
//! and, attached to it, a membership key `<prefix>/_service/members/<id>`.
//! Leading env E means owning `<prefix>/_service/envs/E/leader`, created
//! with a transaction that succeeds only if the key does not exist (lease +
//! txn, as etcd's own election recipe). One key per env, so N replicas share
//! the envs: a replica takes unled envs only while it leads fewer than its
//! fair share, `ceil(envs / members)`, and hands back the surplus when a
//! replica joins. Replicas start at different envs (rotated by their rank),
//! so two starting together do not race for the same one. The key layout
//! (one prefix per env, see [`super::published`]) lets an etcd role grant a
//! reconciler its own envs' election keys and nothing of the others.
//!
//! Keys die with the lease: a replica that is SIGKILLed or cut off from etcd
//! loses all its envs at once when the lease expires (at most one TTL after
//! its last keep-alive). The others watch `members/` and each env's prefix
//! and take the envs over as soon as the keys are deleted, so failover takes
//! at most one TTL.
//!
//! Fencing is by time, because the targets (files, Kubernetes) are not in
//! etcd and cannot compare a revision: a keep-alive sent at `t` keeps the
//! lease alive on the server until at least `t + ttl`; this replica treats
//! itself as leader only until `t + ttl * 2/3`, and reconcile asks the
//! [`Leadership`] fence before every write batch. A replica that cannot
//! renew therefore stops writing a third of a TTL (5 s by default) before
//! anyone else can be elected; a write batch that starts inside the window
//! must finish within that margin. Keep-alives go out every `ttl / 3`.
//! Handing an env over (surplus, env removed, shutdown) closes the fence
//! first, waits for the env's in-flight pass, and only then deletes the key.
//!
//! A failed step is retried after 500 ms, and steps are floored at one
//! per 100 ms after a burst of 5 (see [`super::floor`]): whatever wakes
//! the loop, it never spins against etcd.
//!
//! Every successful read of the election keys (at least every `ttl / 3`,
//! and on every change) goes to the status board with the time it was
//! sent: who leads each env and its published pass record. That contact
//! is what readiness ages (see [`super::status`]); when etcd answers again
//! after failing, the board tells the workers to pass at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Generation;
use super::floor::Floor;
use super::status::{Board, Role, Seen};
use crate::metrics::Metrics;
use crate::reconcile::Fence;
use crate::source::etcd::EtcdSource;
use crate::source::etcd::keyspace::ServiceKeys;

/// How long a failed step waits before the next try.
const RETRY: Duration = Duration::from_millis(500);

/// The floor under the election's steps: every status record published,
/// by any replica, wakes the election (it watches the env prefixes), so
/// steps are held to one per 100 ms after a burst of 5; the keep-alive
/// margin (a third of the TTL) is seconds.
const STEP_SPACING: Duration = Duration::from_millis(100);
const STEP_BURST: u32 = 5;

/// Which envs this replica may write, and until when.
pub struct Leadership {
    /// False when keys come from files: no etcd, no election, one writer.
    enabled: bool,
    replica: String,
    leads: Mutex<BTreeMap<String, Instant>>,
    /// The election lease while this replica has one: leader keys and the
    /// published status are written under it.
    lease: Mutex<Option<i64>>,
    pass_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    led: watch::Sender<BTreeSet<String>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").field("enabled", &self.enabled).field("replica", &self.replica).finish()
    }
}

impl Leadership {
    pub fn new(enabled: bool, replica: String, metrics: Arc<Metrics>) -> Self {
        let (led, _) = watch::channel(BTreeSet::new());
        Self {
            enabled,
            replica,
            leads: Mutex::new(BTreeMap::new()),
            lease: Mutex::new(None),
            pass_locks: Mutex::new(BTreeMap::new()),
            led,
            metrics,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether this replica may write `env` now.
    pub fn leads(&self, env: &str) -> bool {
        !self.enabled
            || self.leads.lock().unwrap_or_else(|p| p.into_inner()).get(env).is_some_and(|u| Instant::now() < *u)
    }

    /// The lease this replica's leader keys are attached to.
    pub fn lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_lease(&self, lease: Option<i64>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    /// The set of envs led changes; workers run a pass when they gain one.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.led.subscribe()
    }

    /// Held by a worker for the whole of a pass, and by a hand-over before
    /// it deletes the leader key.
    pub fn pass_lock(&self, env: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.pass_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(env.to_owned()).or_default().clone()
    }

    fn publish(&self, leads: &BTreeMap<String, Instant>) {
        let set: BTreeSet<String> = leads.keys().cloned().collect();
        self.led.send_if_modified(|old| {
            if *old == set {
                return false;
            }
            *old = set;
            true
        });
    }

    /// Leads `env` until `until`, or not at all.
    fn set(&self, env: &str, until: Option<Instant>) {
        let mut leads = self.leads.lock().unwrap_or_else(|p| p.into_inner());
        let was = leads.contains_key(env);
        match until {
            Some(u) => {
                leads.insert(env.to_owned(), u);
            }
            None => {
                leads.remove(env);
            }
        }
        let now = until.is_some();
        if was != now {
            if now {
                info!(env, replica = %self.replica, "elected: this replica now writes the env");
            } else {
                info!(env, replica = %self.replica, "no longer leading the env");
            }
            self.metrics.set_leader(env, now);
        }
        self.publish(&leads);
    }

    fn led(&self) -> BTreeSet<String> {
        self.leads.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    fn clear(&self) {
        for env in self.led() {
            self.set(&env, None);
        }
    }
}

impl Fence for Leadership {
    fn check(&self, env: &str) -> Result<(), String> {
        if self.leads(env) {
            Ok(())
        } else {
            Err(format!("replica {} does not lead env {env} (lease lost, expired or handed over)", self.replica))
        }
    }
}

/// A failed step of the election; the coordinator retries.
#[derive(Debug, thiserror::Error)]
enum ElectionError {
    #[error("{0}")]
    Connect(#[from] crate::source::SourceError),
    #[error("etcd {op}: {source}")]
    Etcd { op: &'static str, source: etcd_client::Error },
    #[error("etcd {op} timed out")]
    Timeout { op: &'static str },
    #[error("lease {0:x} expired: every env of this replica was lost")]
    LeaseLost(i64),
}

impl ElectionError {
    /// What the status board shows while etcd cannot be used.
    fn code(&self) -> &'static str {
        use crate::source::SourceError;
        let status_code = |s: &tonic::Status| match s.code() {
            tonic::Code::PermissionDenied => "etcd_denied",
            tonic::Code::Unauthenticated => "etcd_auth_failed",
            _ => "etcd_unreachable",
        };
        match self {
            ElectionError::Connect(SourceError::Auth { .. }) => "etcd_auth_failed",
            ElectionError::Connect(SourceError::Denied { .. }) => "etcd_denied",
            ElectionError::Connect(_) => "etcd_unreachable",
            ElectionError::Etcd { source: etcd_client::Error::GRpcStatus(s), .. } => status_code(s),
            ElectionError::Etcd { .. } | ElectionError::Timeout { .. } => "etcd_unreachable",
            ElectionError::LeaseLost(_) => "lease_lost",
        }
    }
}

struct Lease {
    id: i64,
    /// When the last successful keep-alive (or the grant) was sent.
    renewed: Instant,
}

/// The coordinator: one task per replica that keeps the lease alive and
/// runs every env's election.
pub struct Election {
    pub etcd: Arc<EtcdSource>,
    pub keys: ServiceKeys,
    pub ttl: Duration,
    pub replica: String,
    pub leadership: Arc<Leadership>,
    pub status: Arc<Board>,
    pub generation: watch::Receiver<Arc<Generation>>,
}

impl Election {
    fn envs(&self) -> Vec<String> {
        self.generation.borrow().config.envs.clone()
    }

    /// How long after a keep-alive sent at `t` this replica still writes.
    fn validity(&self) -> Duration {
        self.ttl * 2 / 3
    }

    async fn call<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ElectionError> {
        match tokio::time::timeout(self.ttl / 3, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ElectionError::Etcd { op, source }),
            Err(_) => Err(ElectionError::Timeout { op }),
        }
    }

    /// Runs until `cancel`, then hands every env over by revoking the lease.
    pub async fn run(self, cancel: CancellationToken) {
        let mut lease: Option<Lease> = None;
        let mut stale: Vec<i64> = Vec::new();
        let mut watch: Option<etcd_client::WatchStream> = None;
        let mut gen_rx = self.generation.clone();
        let mut failing_since: Option<Instant> = None;
        let mut floor = Floor::new(STEP_SPACING, STEP_BURST);
        loop {
            floor.take(Instant::now());
            let mut retry = None;
            match self.step(&mut lease, &mut stale, &mut watch).await {
                Ok(()) => {
                    if failing_since.take().is_some() {
                        info!("election: etcd reachable again");
                        self.status.etcd_recovered();
                    }
                }
                Err(e) => {
                    self.status.contact_failed(e.code());
                    if failing_since.is_none() {
                        warn!(error = %e, "election step failed; retrying");
                        failing_since = Some(Instant::now());
                    } else {
                        debug!(error = %e, "election step failed again");
                    }
                    if let ElectionError::Etcd { source, .. } = &e {
                        self.etcd.refresh_token_if_invalid(source).await;
                    }
                    if let ElectionError::LeaseLost(id) = e {
                        stale.push(id);
                        lease = None;
                    }
                    watch = None;
                    retry = Some(Instant::now() + RETRY);
                }
            }
            // Validity is enforced by the fence on its own; dropping the
            // entries keeps metrics and the status board truthful.
            if let Some(l) = &lease
                && l.renewed.elapsed() >= self.validity()
            {
                if !self.leadership.led().is_empty() {
                    warn!("election: no keep-alive for 2/3 of the TTL; stopped writing every env");
                }
                self.lose_all();
            }
            // After a failure, the retry: a keep-alive that is overdue
            // (or a lease still to be granted) is what failed, and waking
            // for it at once made the loop spin while etcd was away.
            let next_keepalive = lease.as_ref().map_or_else(Instant::now, |l| l.renewed + self.ttl / 3);
            let wake = retry.unwrap_or(next_keepalive);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
                // The env set may have changed: watch the new one.
                r = gen_rx.changed() => if r.is_err() { break } else { watch = None },
                changed = next_event(&mut watch) => if !changed { watch = None },
            }
            // The floor, whatever woke the loop (a watch that breaks at once
            // on every try, a flood of events).
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(floor.ready_at()) => {}
            }
        }
        self.hand_over_all(lease).await;
    }

    /// Stops leading every env (fence, metrics, status board).
    fn lose_all(&self) {
        for env in self.leadership.led() {
            self.leadership.set(&env, None);
            self.status.set_role(&env, Role::Follower);
        }
    }

    /// On shutdown: close every fence, wait for in-flight passes, revoke
    /// the lease so the other replicas take over at once.
    async fn hand_over_all(&self, lease: Option<Lease>) {
        let envs = self.leadership.led();
        self.leadership.clear();
        self.leadership.set_lease(None);
        for env in &envs {
            let lock = self.leadership.pass_lock(env);
            let _guard = lock.lock().await;
        }
        if let Some(l) = lease
            && let Ok(client) = self.etcd.connect().await
        {
            let mut leases = client.lease_client();
            match self.call("lease revoke", leases.revoke(l.id)).await {
                Ok(_) => info!(envs = envs.len(), "election: lease revoked; envs handed over"),
                Err(e) => warn!(error = %e, "election: cannot revoke the lease; the others take over when it expires"),
            }
        }
    }

    async fn step(
        &self,
        lease: &mut Option<Lease>,
        stale: &mut Vec<i64>,
        watch: &mut Option<etcd_client::WatchStream>,
    ) -> Result<(), ElectionError> {
        let client = self.etcd.connect().await?;
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(15);
        // Leases from before a loss: revoke them so their keys go at once.
        while let Some(id) = stale.last().copied() {
            let mut leases = client.lease_client();
            match self.call("lease revoke", leases.revoke(id)).await {
                Ok(_) | Err(ElectionError::Etcd { .. }) => {
                    stale.pop();
                }
                Err(e) => return Err(e),
            }
        }
        match lease {
            None => {
                let sent = Instant::now();
                let mut leases = client.lease_client();
                let granted = self.call("lease grant", leases.grant(ttl_secs, None)).await?;
                let id = granted.id();
                let mut kv = client.kv_client();
                let member = self.keys.member(&self.replica);
                self.call(
                    "register member",
                    kv.put(member, self.replica.clone(), Some(PutOptions::new().with_lease(id))),
                )
                .await?;
                info!(replica = %self.replica, lease = format!("{id:x}"), ttl_s = ttl_secs, "election: joined");
                self.leadership.set_lease(Some(id));
                *lease = Some(Lease { id, renewed: sent });
            }
            Some(l) if l.renewed.elapsed() >= self.ttl / 3 => {
                let sent = Instant::now();
                let mut leases = client.lease_client();
                match self.call("lease keep-alive", leases.keep_alive(l.id)).await {
                    Ok(_) => l.renewed = sent,
                    Err(ElectionError::Etcd { source: etcd_client::Error::LeaseKeepAliveError(_), .. }) => {
                        self.lose_all();
                        self.leadership.set_lease(None);
                        return Err(ElectionError::LeaseLost(l.id));
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {}
        }
        let Some(l) = lease.as_ref() else { return Ok(()) };
        let (lease_id, valid_until) = (l.id, l.renewed + self.validity());
        if watch.is_none() {
            // One stream: `members/` and each env's prefix (a role may
            // allow only its own envs, so no watch spans them all).
            let mut w = client.watch_client();
            let prefix = || Some(WatchOptions::new().with_prefix());
            let mut stream = self.call("watch election keys", w.watch(self.keys.members(), prefix())).await?;
            for env in self.envs() {
                self.call("watch election keys", stream.watch(self.keys.env_prefix(&env), prefix())).await?;
            }
            *watch = Some(stream);
        }
        self.balance(&client, lease_id, valid_until).await
    }

    /// Reads members, leaders and published records in one transaction
    /// (one revision), reports them to the board, then takes or hands over
    /// envs so this replica leads its fair share.
    async fn balance(&self, client: &Client, lease: i64, valid_until: Instant) -> Result<(), ElectionError> {
        let envs = self.envs();
        let mut round = self.read_round(client, &envs).await?;
        round.mine = round.leaders.iter().filter(|(_, (_, l))| *l == lease).map(|(e, _)| e.clone()).collect();
        let share = envs.len().div_ceil(round.members.len().max(1));
        for env in &surplus(&round.mine, &envs, share) {
            self.hand_over(client, env, lease).await?;
            round.mine.remove(env);
            round.leaders.remove(env);
            if let Some(s) = round.seen.get_mut(env) {
                s.leader = None;
            }
        }
        if round.mine.len() < share {
            self.campaign(client, lease, &envs, share, &mut round).await?;
        }
        for env in &envs {
            let leads = round.mine.contains(env);
            self.leadership.set(env, leads.then_some(valid_until));
            self.status.set_role(env, if leads { Role::Leader } else { Role::Follower });
        }
        self.status.observed(round.sent, round.read_revision, &round.seen);
        for env in self.leadership.led() {
            if !envs.contains(&env) {
                self.leadership.set(&env, None);
            }
        }
        debug!(members = round.members.len(), share, leading = ?round.mine, "election balanced");
        Ok(())
    }

    /// The election keys in one transaction: members, and the prefix of
    /// each configured env and of any env this replica still leads that
    /// the config no longer has (to hand it over).
    async fn read_round(&self, client: &Client, envs: &[String]) -> Result<Round, ElectionError> {
        let mut read: Vec<String> = envs.to_vec();
        read.extend(self.leadership.led().into_iter().filter(|e| !envs.contains(e)));
        let prefix = || Some(GetOptions::new().with_prefix());
        let mut reads = vec![TxnOp::get(self.keys.members(), prefix())];
        reads.extend(read.iter().map(|env| TxnOp::get(self.keys.env_prefix(env), prefix())));
        let sent = Instant::now();
        let resp = self.call("read election keys", client.kv_client().txn(Txn::new().and_then(reads))).await?;
        let mut round = Round {
            members: BTreeSet::from([self.replica.clone()]),
            leaders: BTreeMap::new(),
            seen: BTreeMap::new(),
            mine: BTreeSet::new(),
            sent,
            read_revision: resp.header().map_or(0, |h| h.revision()),
        };
        let members_prefix = self.keys.members();
        let mut ranges = resp.op_responses().into_iter();
        if let Some(TxnOpResponse::Get(g)) = ranges.next() {
            let names = g.kvs().iter().filter_map(|item| item.key_str().ok()?.strip_prefix(&members_prefix));
            round.members.extend(names.map(str::to_owned));
        }
        for (env, range) in read.iter().zip(ranges) {
            let TxnOpResponse::Get(g) = range else { continue };
            let mut s = Seen::default();
            for item in g.kvs() {
                let key = item.key();
                if key == self.keys.leader(env).as_bytes() {
                    let holder = item.value_str().unwrap_or_default().to_owned();
                    round.leaders.insert(env.clone(), (holder.clone(), item.lease()));
                    s.leader = Some(holder);
                } else if key == self.keys.status(env).as_bytes() {
                    s.status = Some((item.value().to_vec(), item.mod_revision()));
                }
            }
            round.seen.insert(env.clone(), s);
        }
        Ok(round)
    }

    /// Takes unled envs while below the fair share, starting at this
    /// replica's rank among the members, so that replicas starting together
    /// do not race for the same env.
    async fn campaign(
        &self,
        client: &Client,
        lease: i64,
        envs: &[String],
        share: usize,
        round: &mut Round,
    ) -> Result<(), ElectionError> {
        let rank = round.members.iter().position(|m| *m == self.replica).unwrap_or(0);
        let unled: Vec<&String> = envs.iter().filter(|e| !round.leaders.contains_key(*e)).collect();
        for i in 0..unled.len() {
            if round.mine.len() >= share {
                break;
            }
            let env = unled[(i + rank) % unled.len()];
            match self.try_lead(client, env, lease).await? {
                Campaign::Won => {
                    round.mine.insert(env.clone());
                    round.led_by(env, self.replica.clone(), lease);
                }
                Campaign::HeldBy(holder, their_lease) => round.led_by(env, holder, their_lease),
                Campaign::Lost => {}
            }
        }
        Ok(())
    }

    /// Creates `env`'s leader key on `lease` unless it exists (lease + txn,
    /// as etcd's election recipe).
    async fn try_lead(&self, client: &Client, env: &str, lease: i64) -> Result<Campaign, ElectionError> {
        let key = self.keys.leader(env);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), self.replica.clone(), Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.call("campaign", client.kv_client().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(Campaign::Won);
        }
        let mut outcome = Campaign::Lost;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op
                && let Some(item) = g.kvs().first()
            {
                outcome = Campaign::HeldBy(item.value_str().unwrap_or_default().to_owned(), item.lease());
            }
        }
        Ok(outcome)
    }

    /// Closes the fence, waits for the env's pass, deletes the key if it is
    /// still ours.
    async fn hand_over(&self, client: &Client, env: &str, lease: i64) -> Result<(), ElectionError> {
        self.leadership.set(env, None);
        {
            let lock = self.leadership.pass_lock(env);
            let _guard = lock.lock().await;
        }
        let key = self.keys.leader(env);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key, None)]);
        let mut kv = client.kv_client();
        self.call("hand over", kv.txn(txn)).await?;
        info!(env, "election: handed the env over (fair share)");
        Ok(())
    }
}

/// Waits for the next batch of changes on the election keys. Never returns
/// when there is no watch; `false` when the stream broke.
async fn next_event(watch: &mut Option<etcd_client::WatchStream>) -> bool {
    let Some(w) = watch.as_mut() else { return std::future::pending().await };
    loop {
        match w.message().await {
            Ok(Some(resp)) if resp.canceled() => return false,
            Ok(Some(resp)) => {
                if resp.events().iter().any(|e| matches!(e.event_type(), EventType::Put | EventType::Delete)) {
                    return true;
                }
            }
            Ok(None) | Err(_) => return false,
        }
    }
}

/// What one [`Election::balance`] read and decided.
struct Round {
    /// Every member, this replica included.
    members: BTreeSet<String>,
    /// Env → the holder of its leader key and the holder's lease.
    leaders: BTreeMap<String, (String, i64)>,
    /// What goes to the board: each env's leader and published record.
    seen: BTreeMap<String, Seen>,
    /// The envs this replica leads.
    mine: BTreeSet<String>,
    /// When the read was sent, and the etcd revision it saw.
    sent: Instant,
    read_revision: i64,
}

impl Round {
    /// `holder` owns `env`'s leader key on `lease`.
    fn led_by(&mut self, env: &str, holder: String, lease: i64) {
        self.seen.entry(env.to_owned()).or_default().leader = Some(holder.clone());
        self.leaders.insert(env.to_owned(), (holder, lease));
    }
}

/// How [`Election::try_lead`] ended.
enum Campaign {
    /// This replica leads the env now.
    Won,
    /// The key exists: its holder and the holder's lease, read in the same
    /// transaction.
    HeldBy(String, i64),
    /// The key exists, but the read in the same transaction returned
    /// nothing (not expected; nothing is learnt).
    Lost,
}

/// The envs to hand over: those no longer configured, then those beyond
/// the fair share (the last ones).
fn surplus(mine: &BTreeSet<String>, envs: &[String], share: usize) -> Vec<String> {
    let mut release: Vec<String> = mine.iter().filter(|e| !envs.contains(e)).cloned().collect();
    let kept: Vec<String> = mine.iter().filter(|e| envs.contains(e)).cloned().collect();
    if kept.len() > share {
        release.extend(kept[share..].iter().cloned());
    }
    release
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_when_the_validity_runs_out() {
        let metrics = Arc::new(Metrics::new());
        let l = Leadership::new(true, "r1".to_owned(), metrics.clone());
        assert!(l.check("prod").is_err(), "nothing led at first");
        l.set("prod", Some(Instant::now() + Duration::from_secs(10)));
        assert!(l.check("prod").is_ok());
        assert!(l.check("staging").is_err());
        assert!(metrics.encode().contains("cfgsync_leader{env=\"prod\"} 1\n"));
        tokio::time::advance(Duration::from_secs(11)).await;
        let err = l.check("prod").unwrap_err();
        assert!(err.contains("replica r1 does not lead env prod"), "{err}");
        assert!(!l.leads("prod"));

        let standalone = Leadership::new(false, "r1".to_owned(), metrics);
        assert!(standalone.check("anything").is_ok(), "no election: one writer");
    }
}
