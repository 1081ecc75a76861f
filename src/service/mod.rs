//! `cfgsync run`: the long-running control-plane service.
//!
//! ```toml
//! interval = "1m"           # a pass per env every interval, ±10 % jitter
//!
//! [service]
//! debounce = "200ms"        # quiet time after an etcd/file change ("0s": none)
//! grace = "20s"             # SIGTERM/SIGINT: time in-flight writes get
//! [service.election]
//! ttl = "15s"               # etcd lease behind per-env leader election
//! ```
//!
//! The pieces, each in its own module and each one task:
//! - [`worker`]: one per env; decides when to pass (interval, watch
//!   events, reloads, election) and runs [`crate::reconcile::run_pass`] for
//!   that env, with per-target backoff, drift counting and metrics;
//! - [`watch`]: one etcd watch per env prefix (`[etcd]` only), and
//!   [`asked`]: one on the env's `pass` key, for passes asked for from
//!   outside (`rotate verify`);
//! - [`target_watch`]: Kubernetes watches on what the env's targets write,
//!   while this replica leads the env: drift and deletions are reverted by
//!   a pass of the owning outputs at once;
//! - [`election`]: one per replica; an etcd lease, one election per env and a
//!   fair share of the envs; the [`election::Leadership`] it maintains is the
//!   fence reconcile asks before every write batch;
//! - [`reload`]: `notify` watches on `cfgsync.toml`, `templates/` and the
//!   file source; a bad config is rejected and the last good one kept;
//! - Vault credentials: per config generation,
//!   [`crate::source::Sources::maintain_credentials`] renews or logs in again;
//! - [`status`]: the board every task reports to, and the one readiness
//!   rule: a replica is ready only when every env it serves has a leader
//!   (etcd answered within the last `2/3 × ttl`) whose last pass, published
//!   in etcd by [`published`], succeeded within two intervals;
//! - [`crate::http`]: `/` (the status page, [`page`]), `/metrics`,
//!   `/healthz`, `/readyz`, all read from the board.
//!
//! No loop can spin, whatever its state says is due ([`floor`]): worker
//! passes are floored at twice what the interval and debounce allow (and
//! counted: above what they and the changes that came allow, the env is
//! `spinning` on `/readyz`),
//! election steps at one per 100 ms after a burst (a failed step is
//! retried after 500 ms), watch reconnects wait at least 200 ms, config
//! reloads at least 100 ms of quiet; the reload and the watch hand their
//! triggers to the worker, whose floor applies; status records are
//! published once per pass; the HTTP server only answers requests (axum
//! waits 1 s after a failed accept).
//!
//! What the service keeps in etcd (under `<prefix>/_service/`) and what the
//! reconciler's etcd role must allow is listed in [`published`];
//! `policies/reconciler.toml` grants exactly that.
//!
//! Without `[etcd]` (keys from the file source) there is no watch on a
//! server and no election: the file source is watched with `notify`, and the
//! replica writes every env; run one such replica per set of targets.
//!
//! Shutdown, on SIGTERM or SIGINT: stop starting passes, let the passes in
//! flight finish within `grace` less a reserve for the hand-over (a
//! quarter, at most 2 s; file writes are atomic, so a target is never
//! half-written either way), then hand the envs over by revoking the
//! election lease, then stop serving HTTP, all within `grace`: the process
//! exits by then. A pass still running at the end keeps its env's lease
//! unrevoked (a hand-over waits for the env's pass, so that no two replicas
//! write), and the others take over when it expires. Exit code 0 when
//! everything stopped within the grace period, 1 when it had to give up. Every task is
//! spawned on a [`TaskTracker`] and stops on a [`CancellationToken`]: nothing
//! is fire-and-forget.

mod asked;
mod election;
mod file_watch;
mod floor;
mod page;
pub mod published;
mod reload;
mod status;
pub(crate) mod summary;
mod target_watch;
mod watch;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{self, Config, ConfigError, KeysSource, ProcessEnv, SecretsSource};
use crate::http::{HttpError, Server};
use crate::metrics::Metrics;
use crate::reconcile::Targets;
use crate::render::Templates;
use crate::source::etcd::EtcdSource;
use crate::source::{SourceKind, Sources};

use crate::source::etcd::keyspace::ServiceKeys;
use election::{Election, Leadership};
use published::Publisher;
use reload::{ConfigWatch, ReloadEvent, WatchSetupError};
use status::Board;
use worker::{Reason, Trigger, Worker};

/// How the service was started (the command line).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where to serve `/`, `/metrics`, `/healthz`, `/readyz`; none when `None`.
    pub listen: Option<SocketAddr>,
    /// This replica's name in the election; default `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// `--kubeconfig` (beats `[kubernetes] kubeconfig`, as for every command).
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Watch(#[from] WatchSetupError),
    #[error("cannot handle {signal}: {source}")]
    Signal { signal: &'static str, source: std::io::Error },
}

/// How the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every task stopped within the grace period.
    Clean,
    /// The grace period ran out with tasks still running.
    GraceExceeded,
}

/// One loaded configuration and what was built from it. Replaced as a
/// whole on reload; a pass uses the one current when it starts.
pub struct Generation {
    pub config: Config,
    pub templates: Templates,
    pub sources: Arc<Sources>,
    /// Kubernetes clients per context (`[kubernetes] kubeconfig`, else
    /// KUBECONFIG, ~/.kube/config, in-cluster) and the other target kinds.
    pub targets: Targets,
    /// Stops this generation's credential maintenance when replaced.
    cancel: CancellationToken,
    /// Tells generations apart (what a worker learnt about the outputs of
    /// one config does not hold for the next).
    pub id: u64,
}

fn source_kinds(config: &Config) -> Vec<SourceKind> {
    let mut kinds = vec![match config.keys {
        KeysSource::Files(_) => SourceKind::File,
        KeysSource::Etcd(_) => SourceKind::Etcd,
    }];
    if let Some(SecretsSource::Vault(_)) = config.secrets {
        kinds.push(SourceKind::Vault);
    }
    kinds
}

fn target_kinds(config: &Config) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = config.outputs.iter().flat_map(|o| &o.targets).map(|t| t.kind.name()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// `<hostname>-<pid>`: unique per host and process; in Kubernetes the
/// hostname is the pod name.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "cfgsync".to_owned());
    format!("{host}-{}", std::process::id())
}

struct EnvHandle {
    trigger: mpsc::Sender<Trigger>,
    cancel: CancellationToken,
}

/// The parts every env task gets.
struct Shared {
    replica: String,
    kubeconfig: Option<std::path::PathBuf>,
    generation: tokio::sync::watch::Receiver<Arc<Generation>>,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    status: Arc<Board>,
    coordination: Option<Arc<EtcdSource>>,
    publisher: Option<Arc<Publisher>>,
    journal: Arc<crate::history::Journal>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    fn new_generation(&self, config: Config, templates: Templates) -> Arc<Generation> {
        new_generation(config, templates, self.kubeconfig.clone(), &self.metrics, &self.stop, &self.tasks)
    }

    /// Starts workers (and watches) for new envs, stops those of removed ones.
    fn sync_envs(&self, envs: &mut BTreeMap<String, EnvHandle>) {
        let generation = self.generation.borrow().clone();
        let wanted = &generation.config.envs;
        envs.retain(|env, handle| {
            let keep = wanted.contains(env);
            if !keep {
                info!(env, "env removed from the config; its worker stops");
                handle.cancel.cancel();
            }
            keep
        });
        for env in wanted {
            if envs.contains_key(env) {
                continue;
            }
            let (tx, rx) = mpsc::channel(16);
            let cancel = self.stop.child_token();
            let revision = Arc::new(AtomicI64::new(0));
            let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
            if let (Some(etcd), KeysSource::Etcd(settings)) = (&self.coordination, &generation.config.keys) {
                let w = watch::EnvWatch {
                    etcd: etcd.clone(),
                    env: env.clone(),
                    prefix: settings.env_prefix(env),
                    revision: revision.clone(),
                    overflow: overflow.clone(),
                    trigger: tx.clone(),
                    status: self.status.clone(),
                    timeout: settings.timeout,
                    up: self.metrics.watch_up(env, "etcd"),
                };
                self.tasks.spawn(w.run(cancel.clone()));
                let asked = asked::AskedWatch {
                    etcd: etcd.clone(),
                    env: env.clone(),
                    key: ServiceKeys::new(&settings.prefix).asked(env),
                    prefix: false,
                    on_put: asked::asked_pass(env.clone()),
                    trigger: tx.clone(),
                    timeout: settings.timeout,
                };
                self.tasks.spawn(asked.run(cancel.clone()));
                let markers = crate::source::etcd::keyspace::secret_markers(&settings.prefix, env);
                let marked = asked::AskedWatch {
                    etcd: etcd.clone(),
                    env: env.clone(),
                    key: markers.clone(),
                    prefix: true,
                    on_put: asked::secret_marker(env.clone(), markers, self.generation.clone()),
                    trigger: tx.clone(),
                    timeout: settings.timeout,
                };
                self.tasks.spawn(marked.run(cancel.clone()));
            }
            let kube_watches = target_watch::TargetWatches {
                env: env.clone(),
                generation: self.generation.clone(),
                leadership: self.leadership.clone(),
                trigger: tx.clone(),
                status: self.status.clone(),
                metrics: self.metrics.clone(),
            };
            self.tasks.spawn(kube_watches.run(cancel.clone()));
            let worker = Worker {
                env: env.clone(),
                replica: self.replica.clone(),
                generation: self.generation.clone(),
                leadership: self.leadership.clone(),
                metrics: self.metrics.clone(),
                status: self.status.clone(),
                publisher: self.publisher.clone(),
                revision,
                overflow,
                triggers: rx,
                journal: self.journal.clone(),
            };
            self.tasks.spawn(worker.run(cancel.clone()));
            envs.insert(env.clone(), EnvHandle { trigger: tx, cancel });
        }
    }
}

fn new_generation(
    config: Config,
    templates: Templates,
    kubeconfig: Option<std::path::PathBuf>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Arc<Generation> {
    // The render workers start with the new templates before the first pass needs them.
    crate::render::sandbox::Sandbox::global().prewarm(&templates);
    let mut sources = Sources::new(&config);
    if let Some(crate::config::SecretsSource::Vault(v)) = &config.secrets {
        sources.cache_secrets(v.refresh);
    }
    sources.observe_credentials(metrics.clone());
    let sources = Arc::new(sources);
    let cancel = stop.child_token();
    let maintained = sources.clone();
    let token = cancel.clone();
    tasks.spawn(async move { maintained.maintain_credentials(token).await });
    let targets = Targets::new(&config, kubeconfig);
    Arc::new(Generation { config, templates, sources, targets, cancel, id: fastrand::u64(..) })
}

/// The part of the shutdown grace kept for handing the envs over (revoking
/// the election lease) and stopping HTTP once the passes are done: a
/// quarter, at most 2 s. Passes get the rest, so the process exits within
/// the grace.
fn handover_reserve(grace: Duration) -> Duration {
    (grace / 4).min(Duration::from_secs(2))
}

/// Runs the service until SIGTERM or SIGINT: starts what every env
/// shares, then a worker (and an etcd watch) per env, serves reloads until
/// a signal, and shuts down within the grace.
pub async fn run(config_path: &Path, options: RunOptions) -> Result<Shutdown, ServiceError> {
    let config = config::load(config_path, &ProcessEnv)?;
    let templates = Templates::compile(&config)?;
    let replica = options.replica_id.clone().unwrap_or_else(default_replica_id);
    let settings = config.service.clone();
    let election = matches!(config.keys, KeysSource::Etcd(_));
    let metrics = Arc::new(Metrics::new());
    init_metrics(&metrics, &config, election);
    let leadership = Arc::new(Leadership::new(election, replica.clone(), metrics.clone()));
    let status = Arc::new(Board::new(
        replica.clone(),
        &config.envs,
        status::Pacing::of(&config),
        election,
        settings.election_ttl,
        leadership.clone(),
        metrics.clone(),
    ));
    // Bind and watch before starting anything, so these fail the start.
    let server = match options.listen {
        Some(addr) => Some(Server::bind(addr).await?),
        None => None,
    };
    let config_watch = ConfigWatch::new(&config)?;
    let signals = Signals::new()?;
    let coordination = Coordination::of(&config);
    info!(
        replica = %replica,
        envs = %config.envs.join(","),
        interval_s = config.interval.as_secs_f64(),
        election,
        "cfgsync run starting"
    );
    let lifetimes = Lifetimes::default();
    let first =
        new_generation(config, templates, options.kubeconfig.clone(), &metrics, &lifetimes.stop, &lifetimes.tasks);
    let (gen_tx, gen_rx) = tokio::sync::watch::channel(first);
    let journal = Arc::new(crate::history::Journal::new(
        replica.clone(),
        coordination.as_ref().map(|c| c.etcd.clone()),
        crate::history::Policy::Service,
    ));
    let shared = Shared {
        kubeconfig: options.kubeconfig,
        replica,
        generation: gen_rx.clone(),
        leadership,
        metrics,
        status,
        publisher: coordination.as_ref().map(|c| c.publisher(settings.election_ttl)),
        coordination: coordination.as_ref().map(|c| c.etcd.clone()),
        journal,
        stop: lifetimes.stop.clone(),
        tasks: lifetimes.tasks.clone(),
    };
    shared.spawn_infra(server, coordination, settings.election_ttl, &lifetimes);
    let (reload_tx, reload_rx) = mpsc::channel(16);
    let watched = config_watch.run(gen_rx, reload_tx, shared.metrics.clone(), lifetimes.stop.clone());
    lifetimes.tasks.spawn(watched);
    let mut envs = BTreeMap::new();
    shared.sync_envs(&mut envs);
    let signal = shared.serve(gen_tx, &mut envs, signals, reload_rx).await;
    info!(
        signal,
        grace_s = settings.grace.as_secs_f64(),
        "shutting down: no new passes; waiting for the ones in flight"
    );
    let shutdown = lifetimes.shut_down(settings.grace).await;
    drop(envs);
    Ok(shutdown)
}

/// The metric series of `config`'s envs and kinds; without an election,
/// this replica leads every env.
fn init_metrics(metrics: &Metrics, config: &Config, election: bool) {
    metrics.init_series(&config.envs, &source_kinds(config), &target_kinds(config));
    if !election {
        for env in &config.envs {
            metrics.set_leader(env, true);
        }
    }
}

/// SIGTERM and SIGINT, handled from the start.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, ServiceError> {
        let term =
            signal(SignalKind::terminate()).map_err(|source| ServiceError::Signal { signal: "SIGTERM", source })?;
        let int =
            signal(SignalKind::interrupt()).map_err(|source| ServiceError::Signal { signal: "SIGINT", source })?;
        Ok(Self { term, int })
    }
}

/// The etcd the replicas coordinate through (`[etcd]` configured), and
/// where the service's own keys are.
struct Coordination {
    etcd: Arc<EtcdSource>,
    keys: ServiceKeys,
}

impl Coordination {
    fn of(config: &Config) -> Option<Self> {
        match &config.keys {
            KeysSource::Etcd(s) => {
                Some(Self { etcd: Arc::new(EtcdSource::new(s.clone())), keys: ServiceKeys::new(&s.prefix) })
            }
            KeysSource::Files(_) => None,
        }
    }

    /// The writer of each env's status record; every call a third of the
    /// election TTL at most, like every election call.
    fn publisher(&self, election_ttl: Duration) -> Arc<Publisher> {
        Arc::new(Publisher { etcd: self.etcd.clone(), keys: self.keys.clone(), timeout: election_ttl / 3 })
    }
}

/// What stops when. Workers, watches, reloads and credentials stop first
/// (`stop`, `tasks`); the election and HTTP after them (`infra`), so envs
/// are handed over only once no pass runs, and probes answer until the end.
#[derive(Default)]
struct Lifetimes {
    stop: CancellationToken,
    tasks: TaskTracker,
    infra: CancellationToken,
    infra_tasks: TaskTracker,
}

impl Lifetimes {
    /// Stops everything within `grace`: the passes in flight get all of it
    /// but the [handover reserve](handover_reserve).
    async fn shut_down(self, grace: Duration) -> Shutdown {
        let deadline = tokio::time::Instant::now() + grace;
        self.stop.cancel();
        self.tasks.close();
        let clean = tokio::time::timeout_at(deadline - handover_reserve(grace), self.tasks.wait()).await.is_ok();
        self.infra.cancel();
        self.infra_tasks.close();
        if tokio::time::timeout_at(deadline, self.infra_tasks.wait()).await.is_err() {
            warn!(
                "grace period over before the envs were handed over (a pass still holds one): the lease is not revoked; the other replicas take over when it expires"
            );
        }
        if clean {
            info!("stopped cleanly");
            Shutdown::Clean
        } else {
            error!(
                grace_s = grace.as_secs_f64(),
                tasks = self.tasks.len(),
                "grace period over with passes still running; exiting anyway (file writes are atomic)"
            );
            Shutdown::GraceExceeded
        }
    }
}

impl Shared {
    /// Starts the HTTP server and, with etcd, the election: they stop last.
    fn spawn_infra(
        &self,
        server: Option<Server>,
        coordination: Option<Coordination>,
        election_ttl: Duration,
        lifetimes: &Lifetimes,
    ) {
        if let Some(server) = server {
            info!(addr = %server.addr, "listening");
            let (m, s, c) =
                (self.metrics.clone(), self.status.clone() as Arc<dyn crate::http::Views>, lifetimes.infra.clone());
            lifetimes.infra_tasks.spawn(async move {
                if let Err(e) = server.serve(m, s, c).await {
                    error!(error = %e, "HTTP server stopped");
                }
            });
        }
        if let Some(Coordination { etcd, keys }) = coordination {
            let e = Election {
                etcd,
                keys,
                ttl: election_ttl,
                replica: self.replica.clone(),
                leadership: self.leadership.clone(),
                status: self.status.clone(),
                generation: self.generation.clone(),
            };
            lifetimes.infra_tasks.spawn(e.run(lifetimes.infra.clone()));
        }
    }

    /// Serves reloads until a signal; returns its name.
    async fn serve(
        &self,
        generations: tokio::sync::watch::Sender<Arc<Generation>>,
        envs: &mut BTreeMap<String, EnvHandle>,
        mut signals: Signals,
        mut reloads: mpsc::Receiver<ReloadEvent>,
    ) -> &'static str {
        loop {
            tokio::select! {
                _ = signals.term.recv() => return "SIGTERM",
                _ = signals.int.recv() => return "SIGINT",
                Some(event) = reloads.recv() => match event {
                    ReloadEvent::Config(loaded) => self.reload(*loaded, &generations, envs),
                    ReloadEvent::SourceFile(env) => {
                        if let Some(handle) = envs.get(&env) {
                            let _ = handle.trigger.try_send(Trigger::now(Reason::SourceFile));
                        }
                    }
                },
            }
        }
    }

    /// Puts a new config in place: a new generation, workers for new envs
    /// (removed ones stop), and a pass of every env.
    fn reload(
        &self,
        (config, templates): (Config, Templates),
        generations: &tokio::sync::watch::Sender<Arc<Generation>>,
        envs: &mut BTreeMap<String, EnvHandle>,
    ) {
        self.status.set_envs(&config.envs, status::Pacing::of(&config));
        init_metrics(&self.metrics, &config, self.leadership.enabled());
        let old = generations.send_replace(self.new_generation(config, templates));
        old.cancel.cancel();
        self.sync_envs(envs);
        for handle in envs.values() {
            let _ = handle.trigger.try_send(Trigger::now(Reason::ConfigReloaded));
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every task of the service is spawned on a [`super::TaskTracker`]
    /// and stops on a cancellation token; nothing detached (a bare
    /// `tokio::spawn`, a thread) can outlive the shutdown.
    #[test]
    fn no_task_of_the_service_is_spawned_detached() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("service"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.extend(["http.rs", "metrics.rs", "telemetry.rs"].map(|f| root.join(f)));
        assert!(files.len() > 10, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                // Spelt in two halves so that this test does not find itself.
                for (a, b) in
                    [("tokio::", "spawn("), ("task::", "spawn("), ("thread::", "spawn("), ("spawn_", "blocking(")]
                {
                    let detached = format!("{a}{b}");
                    assert!(!code.contains(&detached), "{}:{}: a detached spawn: {line}", file.display(), n + 1);
                }
            }
        }
    }
}
