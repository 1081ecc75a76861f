//! Kubernetes watches on what an env's passes write: a hand edit or a
//! deletion of an owned Secret or ConfigMap is reverted within moments
//! instead of at the next interval. The same task runs the env's file
//! watches ([`super::file_watch`]) under the same rules (leader only,
//! restarted with the config).
//!
//! Decisions:
//! - **One watch per (context, namespace, kind)** the env's targets write
//!   to, selected as the pass's LIST selects: `app.kubernetes.io/managed-by
//!   =cfgsync`, `cfgsync.io/env=<env>`. Unlabelled objects and another
//!   env's are not selected. Another instance's objects of the env are
//!   (the pass must see them to refuse writing over them), but only this
//!   instance's (`cfgsync.io/instance`) are judged for drift: the watch
//!   path never acts on anything else. The owning output is the object's
//!   `cfgsync.io/output` label; objects of outputs the config no longer
//!   has for the env are ignored.
//! - **The watch's state is the pass's cache**: everything a watch lists
//!   and sees goes into the scope's store
//!   ([`crate::targets::kubernetes::cache`]) before it is judged, and while
//!   the watch is synced (listed and streaming) the passes read the store
//!   instead of LISTing; a watch that fails, or whose version expired,
//!   says so, and the passes LIST until it is back. So a leader's passes
//!   (interval, key change, drift) make no LIST at all.
//! - **List, then watch from the list's resourceVersion**, with
//!   `allowWatchBookmarks` and `timeoutSeconds=290`; a stream that ends
//!   (the server's timeout, an apiserver restart) is watched again from
//!   the last version seen (an event's or a bookmark's), without a LIST. A
//!   `410 Gone` ("too old resource version") lists again, and what changed
//!   while unwatched (edited or gone) is judged like an event: nothing is
//!   missed. LISTs happen only at start, on 410, and after a connection
//!   failure that forgot the version (none does today).
//! - **Ours or drift**: an object whose `cfgsync.io/fingerprint` is a plain
//!   `sha256:` is ours when its data hashes to it (the same fingerprint the
//!   pass writes). A keyed (`hmac-sha256:`) fingerprint cannot be checked
//!   without the env's key, which stays with the pass; for those the watch
//!   remembers, per object and fingerprint, a per-process keyed hash
//!   ([`RunFingerprinter`]) of the data it last saw with that fingerprint:
//!   a new fingerprint is a write of ours (cfgsync changes it whenever it
//!   writes new content), the same fingerprint with other data is drift.
//!   So cfgsync's own writes never trigger a pass (no loop), and the watch
//!   keeps no value, only fingerprints. A hand edit that also rewrites the
//!   fingerprint annotation consistently is not recognised here; the
//!   interval pass (the safety net) still reverts it.
//! - **Drift or deletion → a pass of the outputs that own the object**
//!   ([`Trigger::drift`]), debounced like a key change (the first goes at
//!   once); the pass reverts it, counts it (`cfgsync_drift_total`) and logs
//!   it as every pass does.
//! - **Only the leader acts**: the watches run only while this replica
//!   leads the env, and are dropped when it stops leading; the worker checks
//!   the fence again before any write.
//! - **Bounded**: a watch that fails is retried after 200 ms, doubling to
//!   5 s; meanwhile the env falls back to the interval, and `/readyz`, the
//!   status page and `cfgsync_watch_up{kind="kubernetes"}` say the watch is
//!   down. A trigger that cannot be queued is dropped: the worker already
//!   has a pass pending.
//!
//! Cost: one long-lived HTTP/1.1 connection per (context, namespace, kind)
//! watched, i.e. per cluster as many as namespaces × kinds the env writes
//! there, all on the context's one watch client (one TLS configuration and
//! pool, see [`crate::targets::kubernetes::client`]); per watched object of
//! ours a name, an output name and two fingerprints (~200 bytes), and per
//! object the LIST returns the object in the store (what the pass held
//! during a pass before).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Generation;
use super::election::Leadership;
use super::status::Board;
use super::worker::Trigger;
use crate::fingerprint::{EnvFingerprinter, Fingerprint, RunFingerprinter};
use crate::targets::TargetKind;
use crate::targets::kubernetes::cache::Filler;
use crate::targets::kubernetes::client::{api, list_selector, to_live};
use crate::targets::kubernetes::{
    ANNOTATION_FINGERPRINT, LABEL_INSTANCE, LABEL_OUTPUT, LiveObject, ObjectKind, ScopeKey,
};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// What a watch asks the server for; below the client's read timeout.
const WATCH_SECONDS: u32 = 290;

/// Where one watch looks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub context: String,
    pub namespace: String,
    pub kind: ObjectKind,
}

/// The (context, namespace, kind) scopes the targets of `env` write to.
pub fn scopes(generation: &Generation, env: &str) -> BTreeSet<Scope> {
    let outputs = generation.config.outputs.iter().filter(|o| o.envs.iter().any(|e| e == env));
    outputs
        .flat_map(|o| &o.targets)
        .filter_map(|t| match &t.kind {
            TargetKind::Kubernetes(k) => k.addresses.get(env).map(|a| Scope {
                context: a.context.clone(),
                namespace: a.namespace.clone(),
                kind: k.object,
            }),
            _ => None,
        })
        .collect()
}

/// The Kubernetes watches of one env, for as long as this replica leads it.
pub struct TargetWatches {
    pub env: String,
    pub generation: watch::Receiver<Arc<Generation>>,
    pub leadership: Arc<Leadership>,
    pub trigger: mpsc::Sender<Trigger>,
    pub status: Arc<Board>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl TargetWatches {
    /// Runs until `cancel`: (re)starts the watches whenever leadership or
    /// the config changes.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut led = self.leadership.subscribe();
        loop {
            let generation = self.generation.borrow_and_update().clone();
            let scopes = scopes(&generation, &self.env);
            let leading = self.leadership.leads(&self.env);
            let mut set = JoinSet::new();
            let health = Arc::new(Health::new(&self.env, &self.status, &self.metrics, scopes.len()));
            if leading && !scopes.is_empty() {
                debug!(env = %self.env, watches = scopes.len(), "starting the Kubernetes watches");
                for w in object_watches(&generation, &self.env, scopes, &self.trigger, &health) {
                    set.spawn(w.run());
                }
            }
            let files = super::file_watch::paths(&generation, &self.env);
            if leading && !files.is_empty() {
                let f = super::file_watch::FileWatch {
                    env: self.env.clone(),
                    generation: generation.clone(),
                    leadership: self.leadership.clone(),
                    trigger: self.trigger.clone(),
                    status: self.status.clone(),
                    up: self.metrics.watch_up(&self.env, "file"),
                };
                set.spawn(f.run());
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = self.generation.changed() => if r.is_err() { return },
                r = led.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if self.leadership.leads(&self.env) == leading {
                        // Another env's leadership changed: keep the watches.
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            r = self.generation.changed() => if r.is_err() { return },
                            r = wait_lead_change(&mut led, &self.leadership, &self.env, leading) => if !r { return },
                        }
                    }
                }
            }
            set.abort_all();
            health.clear();
            self.status.set_target_watch(&self.env, "file", None);
        }
    }
}

/// Waits until this replica's leadership of `env` is no longer `leading`;
/// false when the election is gone.
async fn wait_lead_change(
    led: &mut watch::Receiver<BTreeSet<String>>,
    leadership: &Leadership,
    env: &str,
    leading: bool,
) -> bool {
    loop {
        if led.changed().await.is_err() {
            return false;
        }
        if leadership.leads(env) != leading {
            return true;
        }
    }
}

/// One watch per scope of `env`. They share one set of the env's output
/// names: a copy per watch costs scopes × outputs strings, which grows
/// with the square of the fleet (1,800 watches × 7,000 names, ~700 MiB
/// at fleet-3000).
fn object_watches(
    generation: &Arc<Generation>,
    env: &str,
    scopes: BTreeSet<Scope>,
    trigger: &mpsc::Sender<Trigger>,
    health: &Arc<Health>,
) -> Vec<ObjectWatch> {
    let outputs = outputs_of(generation, env);
    let instance: Arc<str> = generation.config.instance.as_str().into();
    scopes
        .into_iter()
        .map(|scope| ObjectWatch {
            env: env.to_owned(),
            instance: instance.clone(),
            outputs: outputs.clone(),
            scope,
            generation: generation.clone(),
            trigger: trigger.clone(),
            health: health.clone(),
        })
        .collect()
}

/// The names of the outputs of `env`.
fn outputs_of(generation: &Generation, env: &str) -> Arc<BTreeSet<String>> {
    let outputs = generation.config.outputs.iter().filter(|o| o.envs.iter().any(|e| e == env));
    Arc::new(outputs.map(|o| o.name.clone()).collect())
}

/// Which of an env's watches are up: the env's
/// `cfgsync_watch_up{kind="kubernetes"}` is 1 when all are, and the board
/// says "down" otherwise.
struct Health {
    env: String,
    status: Arc<Board>,
    up: crate::metrics::WatchUp,
    total: usize,
    down: std::sync::Mutex<BTreeSet<Scope>>,
}

impl Health {
    fn new(env: &str, status: &Arc<Board>, metrics: &crate::metrics::Metrics, total: usize) -> Self {
        Self {
            env: env.to_owned(),
            status: status.clone(),
            up: metrics.watch_up(env, "kubernetes"),
            total,
            down: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    fn set(&self, scope: &Scope, up: bool) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if up {
            down.remove(scope);
        } else {
            down.insert(scope.clone());
        }
        self.status.set_target_watch(&self.env, "kubernetes", Some(down.is_empty()));
        self.up.set(down.is_empty() && self.total > 0);
    }

    /// The watches stopped (not leading, new config).
    fn clear(&self) {
        self.status.set_target_watch(&self.env, "kubernetes", None);
    }
}

/// What the watch knows of one owned object: the output that owns it.
struct Seen {
    output: Option<String>,
}

/// One watch on a (context, namespace, kind).
struct ObjectWatch {
    env: String,
    instance: Arc<str>,
    outputs: Arc<BTreeSet<String>>,
    scope: Scope,
    generation: Arc<Generation>,
    trigger: mpsc::Sender<Trigger>,
    health: Arc<Health>,
}

/// Why a watch stopped streaming.
enum Ended {
    /// The server ended the stream (timeout, restart): watch again from the version.
    Closed,
    /// 410: the version is too old; list again.
    Gone,
    /// A connection or API error.
    Failed(String),
}

/// The objects one watch knows, and how it judges a change.
struct Known {
    objects: HashMap<String, Seen>,
    /// (name, fingerprint) → the content last seen with it, for keyed fingerprints.
    trusted: HashMap<(String, String), Fingerprint>,
    hasher: RunFingerprinter,
}

impl Known {
    fn content(&self, live: &LiveObject) -> Fingerprint {
        let mut canonical = Vec::new();
        for (k, v) in &live.data {
            canonical.extend_from_slice(&(k.len() as u64).to_be_bytes());
            canonical.extend_from_slice(k.as_bytes());
            canonical.extend_from_slice(&(v.len() as u64).to_be_bytes());
            canonical.extend_from_slice(v.expose());
        }
        self.hasher.of(&canonical)
    }

    /// Takes in the object's new state; returns whether it drifted from
    /// what cfgsync wrote.
    fn observe(&mut self, live: &LiveObject) -> bool {
        let fingerprint = live.annotations.get(ANNOTATION_FINGERPRINT).cloned();
        let content = self.content(live);
        let drifted = match &fingerprint {
            Some(f) if f.starts_with("sha256:") => {
                let plain = EnvFingerprinter::new(None);
                plain.fingerprint(live.data.iter().map(|(k, v)| (k, v.expose())), false).as_ref() != Some(f)
            }
            Some(f) => {
                let key = (live.name.clone(), f.clone());
                match self.trusted.get(&key) {
                    Some(c) => *c != content,
                    None => {
                        // A fingerprint not seen before: cfgsync wrote new content.
                        self.trusted.retain(|(n, _), _| n != &live.name);
                        self.trusted.insert(key, content);
                        false
                    }
                }
            }
            None => false,
        };
        let output = live.labels.get(LABEL_OUTPUT).cloned();
        self.objects.insert(live.name.clone(), Seen { output });
        drifted
    }
}

impl ObjectWatch {
    /// What the pass's LIST selects, other instances' objects included:
    /// the store stands in for that LIST ([`crate::targets::kubernetes::cache`]).
    fn selector(&self) -> String {
        list_selector(&self.env)
    }

    /// Only this instance's objects are judged for drift; the others are
    /// in the store (the pass refuses them by name) and nothing more.
    fn ours(&self, live: &LiveObject) -> bool {
        live.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(&*self.instance)
    }

    fn describe(&self, name: &str) -> String {
        crate::targets::kubernetes::describe(self.scope.kind, &self.scope.context, &self.scope.namespace, name)
    }

    async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        let mut known = match RunFingerprinter::new() {
            Ok(hasher) => Known { objects: HashMap::new(), trusted: HashMap::new(), hasher },
            Err(e) => {
                warn!(env = %self.env, error = %e, "no Kubernetes watch: the interval reverts drift");
                self.health.set(&self.scope, false);
                return;
            }
        };
        let key = ScopeKey {
            env: self.env.clone(),
            context: self.scope.context.clone(),
            namespace: self.scope.namespace.clone(),
            kind: self.scope.kind,
        };
        // Dropped with this task: the store goes with the watch.
        let store = self.generation.targets.kube.cache.fill(key);
        let mut version: Option<String> = None;
        let mut first_list = true;
        let mut lost = false;
        loop {
            let ended = self.stream(&mut known, &store, &mut version, &mut first_list, &mut backoff).await;
            if !matches!(ended, Ended::Closed) {
                // Changes may be missed until the next LIST (410) or the
                // watch is back: the passes LIST meanwhile.
                store.synced(false);
            }
            match ended {
                Ended::Closed => {
                    // Resumed from the version seen: nothing is missed, and a
                    // server that closes at once cannot make this spin.
                    debug!(env = %self.env, scope = ?self.scope, "watch closed by the server; watching again");
                    tokio::time::sleep(BACKOFF_MIN).await;
                    continue;
                }
                Ended::Gone => {
                    info!(env = %self.env, scope = ?self.scope, "watch version too old (410 Gone); listing again");
                    version = None;
                    continue;
                }
                Ended::Failed(error) => {
                    self.health.set(&self.scope, false);
                    if !lost {
                        warn!(env = %self.env, context = %self.scope.context, namespace = %self.scope.namespace, kind = %self.scope.kind, error = %error, "Kubernetes watch down; drift is reverted at the interval until it is back");
                    }
                    lost = true;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if lost {
                // Logged once per outage; `stream` says when it is back.
                debug!(env = %self.env, scope = ?self.scope, "retrying the Kubernetes watch");
            }
        }
    }

    /// Lists when no version is known, then watches until the stream ends.
    async fn stream(
        &self,
        known: &mut Known,
        store: &Filler,
        version: &mut Option<String>,
        first_list: &mut bool,
        backoff: &mut Duration,
    ) -> Ended {
        let targets = &self.generation.targets;
        let client = match targets.kube.clients.watch_client(&self.scope.context).await {
            Ok(c) => c,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        let api = api(&client, self.scope.kind, &self.scope.namespace);
        if version.is_none() {
            let list = match api.list(&ListParams::default().labels(&self.selector())).await {
                Ok(l) => l,
                Err(e) => return Ended::Failed(crate::targets::kubernetes::client::cause(&e)),
            };
            let items: Vec<LiveObject> = list.items.into_iter().map(|o| to_live(self.scope.kind, o)).collect();
            store.listed(&items, list.metadata.resource_version.as_deref());
            // As fresh as a LIST of the pass's own, and in use before the
            // drift found below asks for a pass; a watch that then cannot
            // start takes it out of use again.
            store.synced(true);
            let mut drifted = BTreeSet::new();
            let mut names = BTreeSet::new();
            for live in items.iter().filter(|l| self.ours(l)) {
                names.insert(live.name.clone());
                if known.observe(live) && !*first_list {
                    drifted.insert(live.name.clone());
                }
            }
            // Gone while unwatched.
            let gone: Vec<String> = known.objects.keys().filter(|n| !names.contains(*n)).cloned().collect();
            for name in gone {
                drifted.insert(name);
            }
            for name in &drifted {
                self.drift(known, name, "changed while the watch was re-listing");
            }
            known.objects.retain(|n, _| names.contains(n));
            *first_list = false;
            *version = list.metadata.resource_version;
        }
        let from = version.clone().unwrap_or_default();
        let params = WatchParams::default().labels(&self.selector()).timeout(WATCH_SECONDS);
        let stream = match api.watch(&params, &from).await {
            Ok(s) => s,
            Err(e) => return Ended::Failed(crate::targets::kubernetes::client::cause(&e)),
        };
        store.synced(true);
        self.health.set(&self.scope, true);
        *backoff = BACKOFF_MIN;
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match stream.next().await {
                None => return Ended::Closed,
                Some(Err(e)) => return Ended::Failed(e.to_string()),
                Some(Ok(event)) => event,
            };
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    *version = o.metadata.resource_version.clone().or(version.take());
                    // The store first: the pass a drift asks for plans from it.
                    let live = to_live(self.scope.kind, o);
                    store.changed(&live);
                    self.changed(known, live);
                }
                WatchEvent::Deleted(o) => {
                    *version = o.metadata.resource_version.clone().or(version.take());
                    let live = to_live(self.scope.kind, o);
                    store.deleted(&live);
                    let name = live.name;
                    if known.objects.contains_key(&name) {
                        self.drift(known, &name, "deleted");
                        known.objects.remove(&name);
                    }
                }
                WatchEvent::Bookmark(b) => {
                    store.bookmark(&b.metadata.resource_version);
                    *version = Some(b.metadata.resource_version);
                }
                WatchEvent::Error(e) if e.code == 410 => return Ended::Gone,
                WatchEvent::Error(e) => return Ended::Failed(format!("{} ({} {})", e.message, e.code, e.reason)),
            }
        }
    }

    fn changed(&self, known: &mut Known, live: LiveObject) {
        self.health.status.watch_event(&self.env, None);
        if live.deleting || !self.ours(&live) {
            return;
        }
        if known.observe(&live) {
            self.drift(known, &live.name, "changed outside cfgsync");
        }
    }

    /// Asks the worker for a pass of the output owning `name`.
    fn drift(&self, known: &Known, name: &str, what: &str) {
        let Some(output) = known.objects.get(name).and_then(|s| s.output.clone()) else { return };
        if !self.outputs.contains(&output) {
            return;
        }
        let object = self.describe(name);
        info!(env = %self.env, output = %output, object = %object, "{what}: a pass of its output reverts it");
        self.health.status.watch_event(&self.env, Some(object));
        let _ = self.trigger.try_send(Trigger::drift(vec![output]));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::secret::Content;

    fn live(name: &str, value: &str, fingerprint: Option<&str>) -> LiveObject {
        let mut annotations = BTreeMap::new();
        if let Some(f) = fingerprint {
            annotations.insert(ANNOTATION_FINGERPRINT.to_owned(), f.to_owned());
        }
        LiveObject {
            kind: ObjectKind::Secret,
            namespace: "api".into(),
            name: name.into(),
            data: BTreeMap::from([("K".to_owned(), Content::secret(value.as_bytes().to_vec()))]),
            labels: BTreeMap::from([(LABEL_OUTPUT.to_owned(), "api".to_owned())]),
            annotations,
            type_: Some("Opaque".into()),
            uid: "u".into(),
            resource_version: "1".into(),
            deleting: false,
            finalizers: Vec::new(),
            legacy_manager: false,
        }
    }

    /// An env whose outputs write to several namespaces: one watch per
    /// (namespace, kind), all sharing one set of the env's output names
    /// (a set per watch was quadratic in the fleet: ~700 MiB at fleet-3000).
    #[test]
    fn the_watches_of_an_env_share_its_output_names() {
        let mut text = String::from("instance = \"t\"\n[files]\n[envs.prod]\n");
        for app in 0..6 {
            for kind in ["kubernetes-configmap", "kubernetes-secret"] {
                text.push_str(&format!(
                    "[[output]]\nname = \"app{app}-{kind}\"\n[output.entries]\nA = \"a\"\n[[output.target]]\nkind = \"{kind}\"\nnamespace = \"ns{}\"\nname = \"app{app}\"\n",
                    app % 3
                ));
            }
        }
        let env: BTreeMap<String, String> = BTreeMap::new();
        let config =
            crate::config::parse(std::path::Path::new("c.toml"), &text, &env).unwrap_or_else(|e| panic!("{e}"));
        let templates = crate::render::Templates::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        let sources = Arc::new(crate::source::Sources::new(&config));
        let targets = crate::reconcile::Targets::new(&config, None);
        let generation =
            Arc::new(Generation { config, templates, sources, targets, cancel: CancellationToken::new(), id: 1 });
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let leadership = Arc::new(Leadership::new(false, "r1".into(), metrics.clone()));
        let board = Arc::new(Board::new(
            "r1".into(),
            &["prod".to_owned()],
            super::super::status::Pacing { interval: Duration::from_secs(60), debounce: Duration::from_millis(200) },
            false,
            Duration::from_secs(15),
            leadership,
            metrics.clone(),
        ));
        let scopes = scopes(&generation, "prod");
        assert_eq!(scopes.len(), 6, "3 namespaces x 2 kinds: {scopes:?}");
        let health = Arc::new(Health::new("prod", &board, &metrics, scopes.len()));
        let (trigger, _rx) = mpsc::channel(1);
        let watches = object_watches(&generation, "prod", scopes, &trigger, &health);
        assert_eq!(watches.len(), 6);
        assert_eq!(watches[0].outputs.len(), 12, "every output of the env");
        for w in &watches[1..] {
            assert!(Arc::ptr_eq(&w.outputs, &watches[0].outputs), "one set, not a copy per watch");
            assert!(Arc::ptr_eq(&w.instance, &watches[0].instance));
        }
    }

    fn known() -> Known {
        Known { objects: HashMap::new(), trusted: HashMap::new(), hasher: RunFingerprinter::new().unwrap() }
    }

    #[test]
    fn a_plain_fingerprint_is_checked_against_the_data() {
        let plain = EnvFingerprinter::new(None);
        let key = "K".to_owned();
        let fp = plain.fingerprint([(&key, &b"v1"[..])], false).unwrap();
        let mut k = known();
        assert!(!k.observe(&live("a", "v1", Some(&fp))), "what cfgsync wrote");
        assert!(k.observe(&live("a", "hand", Some(&fp))), "edited under the same fingerprint");
        assert!(!k.observe(&live("a", "v1", Some(&fp))), "reverted: ours again");
        assert_eq!(k.objects["a"].output.as_deref(), Some("api"));
    }

    #[test]
    fn a_keyed_fingerprint_trusts_what_came_with_it_first() {
        let mut k = known();
        assert!(!k.observe(&live("s", "v1", Some("hmac-sha256:one"))), "listed, or written by cfgsync");
        assert!(k.observe(&live("s", "hand", Some("hmac-sha256:one"))), "same fingerprint, other data: drift");
        assert!(!k.observe(&live("s", "v1", Some("hmac-sha256:one"))), "reverted");
        assert!(!k.observe(&live("s", "v2", Some("hmac-sha256:two"))), "a new fingerprint: cfgsync wrote new content");
        assert!(k.observe(&live("s", "v1", Some("hmac-sha256:two"))), "the old content under the new fingerprint");
        assert!(!k.observe(&live("other", "x", Some("hmac-sha256:two"))), "per object");
        assert!(!k.observe(&live("n", "x", None)), "no fingerprint: nothing to judge by");
    }
}
