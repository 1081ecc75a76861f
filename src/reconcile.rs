//! One pass: fetch → render → observe → plan → apply, the same for every
//! command and every target kind.
//!
//! [`plan_env`] builds one env's [`EnvPlan`]: it renders the env's outputs
//! (in the template sandbox), hands every configured target to its kind
//! ([`crate::targets::Target`]), observes each destination once and plans
//! it, purely. [`apply_env`] only executes that plan. `plan` and
//! `--dry-run` show the plan; `reconcile`, `pull` (files only) and the
//! service apply it.
//!
//! Failure isolation follows confd and the promises in DESIGN.md:
//! - a source failure for an env stops *every* target of that env (fail
//!   closed: nothing written or removed from a partial snapshot);
//! - a rendering failure (missing key, template error, a sandbox limit)
//!   stops that output only; the others of the env still converge, and its
//!   targets keep what they own (nothing of theirs is pruned);
//! - a destination that cannot be observed fails its targets only; a target
//!   failure stops that target only.
//!
//! Pruning happens only when every env of the pass was read and every
//! target of the env was considered (not in a pass limited to some
//! outputs). The service drives passes through [`PassOptions`]: a [`Fence`]
//! asked before each destination's write batch, target ids to skip (backing
//! off), and the outputs a watch event concerns.
//!
//! Envs are fetched concurrently first, so "was any source down in this
//! pass?" is known before anything is pruned; then they are planned and
//! applied concurrently, each destination of a kind concurrently with the
//! others. Destinations a kind can observe from the config alone
//! ([`Target::OBSERVE_BEFORE_RENDER`]: a cluster's LISTs) are read while
//! the sources are, so a pass costs about as long as its slowest reads; a
//! source that then fails leaves them read and unwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde::Serialize;
use tracing::{debug, trace, warn};

use crate::config::Config;
use crate::plan::{Change, DestPlan, Slot};
use crate::render::{RenderError, Rendered, Templates, Use};
use crate::source::{KeysAt, Patch, Request, Snapshot, SourceError, Sources};
use crate::targets::file::FileKind;
use crate::targets::github::GithubKind;
use crate::targets::gitlab::GitlabKind;
use crate::targets::kubernetes::{Fingerprinter, KubeClients, KubeKind};
use crate::targets::{Applied, Claim, Ctx, Target, TargetError};

pub use crate::targets::Fence;

/// How many destinations of one kind are observed or applied at once.
const CONCURRENCY: usize = 16;

/// What a pass should do.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// Only this env; every env when `None`.
    pub env: Option<String>,
    /// Plan only: observe and decide, write nothing.
    pub dry_run: bool,
    /// Only file targets (`pull`: a laptop never writes to clusters or CI).
    pub files_only: bool,
    /// Allow a prune deleting more than `max_prune_share` at one destination.
    pub allow_mass_prune: bool,
    /// Asked before each write batch; a closed fence fails the batch's
    /// targets with [`TargetError::Fenced`] and nothing is written.
    pub fence: Option<Arc<dyn Fence>>,
    /// Target ids ([`TargetReport::id`]) not to touch in this pass; they are
    /// left out of the report (and what they own is kept).
    pub skip: BTreeSet<String>,
    /// Only these outputs (config indices): a pass for a change that
    /// concerns no other. Nothing is pruned in such a pass.
    pub only_outputs: Option<BTreeSet<usize>>,
    /// Read only the keys that changed since a kept snapshot (the
    /// service's watch passes; for [`PassOptions::env`] only).
    pub patch: Option<Patch>,
    /// Return the keys read in [`EnvReport::keys`] (the service keeps them
    /// for its next watch pass).
    pub keep_keys: bool,
    /// Do not run `reload_cmd` (`pull` without `--reload`).
    pub no_reload: bool,
    /// Show keyed per-run fingerprints of the secret entries that change.
    pub show_fingerprints: bool,
}

/// The stable id of an output's `index`-th target for `env`:
/// `<env>/<output>/<index>`.
pub fn target_id(env: &str, output: &str, index: usize) -> String {
    format!("{env}/{output}/{index}")
}

/// Every target kind, built once per config.
pub struct Targets {
    pub files: FileKind,
    pub kube: KubeKind,
    pub gitlab: GitlabKind,
    pub github: GithubKind,
}

impl Targets {
    /// `kubeconfig`: `--kubeconfig`, else `[kubernetes] kubeconfig`.
    pub fn new(config: &Config, kubeconfig: Option<PathBuf>) -> Self {
        let state = Arc::new(crate::targets::state::StateStore::new(config));
        let retry = crate::targets::ci::Retry::default();
        let ci =
            || crate::targets::ci::Client::new(retry).with_trust(crate::targets::ci_tls::Trust::from_config(config));
        Self {
            files: FileKind::new(config.state_dir.clone()),
            kube: KubeKind::new(KubeClients::new(kubeconfig.or_else(|| config.kubernetes.kubeconfig.clone()))),
            gitlab: GitlabKind::new(ci(), state.clone()),
            github: GithubKind::new(ci(), state),
        }
    }
}

impl Targets {
    /// What `target` holds for each rendering of its output (current
    /// first): see [`crate::targets::held_of`].
    pub async fn held(
        &self,
        target: &crate::config::TargetKind,
        rendered: &[&Rendered],
        ctx: &Ctx<'_>,
    ) -> Result<Vec<Vec<crate::targets::HeldItem>>, TargetError> {
        use crate::targets::held_of;
        if let Some(spec) = FileKind::spec(target) {
            return held_of(&self.files, spec, rendered, ctx).await;
        }
        if let Some(spec) = KubeKind::spec(target) {
            return held_of(&self.kube, spec, rendered, ctx).await;
        }
        if let Some(spec) = GitlabKind::spec(target) {
            return held_of(&self.gitlab, spec, rendered, ctx).await;
        }
        match GithubKind::spec(target) {
            Some(spec) => held_of(&self.github, spec, rendered, ctx).await,
            None => Ok(Vec::new()),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub envs: Vec<EnvReport>,
}

#[derive(Debug, Serialize)]
pub struct EnvReport {
    pub env: String,
    /// The etcd revision the snapshot was read at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Set when a source failed: no target of this env was touched.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_display_opt")]
    pub source_error: Option<SourceError>,
    pub outputs: Vec<OutputReport>,
    /// What was deleted (or is to be) because no target claims it any more,
    /// and leftovers of interrupted writes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<Change>,
    /// Failures that belong to no single target: refused or failed prunes,
    /// state that could not be saved.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_display_vec")]
    pub errors: Vec<TargetError>,
    /// The keys the pass read, when [`PassOptions::keep_keys`] asked for them.
    #[serde(skip)]
    pub keys: Option<Arc<KeysAt>>,
    /// The version of every secret the snapshot read (for the history).
    #[serde(skip)]
    pub secret_versions: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct OutputReport {
    pub output: String,
    pub tainted: bool,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_display_opt")]
    pub error: Option<RenderError>,
    /// Why the output was not rendered when that is not an error (`pull`:
    /// it needs a read the caller's role does not allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What the rendering read (for the service: which changes concern it).
    #[serde(skip)]
    pub used: BTreeSet<Use>,
    /// The rendered output's fingerprint (keyed for secret content, as a
    /// Kubernetes object's `cfgsync.io/fingerprint`), for the history.
    #[serde(skip)]
    pub fingerprint: Option<String>,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// See [`target_id`].
    pub id: String,
    pub kind: &'static str,
    /// The file, the object (`Secret ns/name in context c`), the project.
    pub address: String,
    pub changes: Vec<Change>,
    /// True when the changes were written (not a dry run, no failure).
    pub applied: bool,
    pub reloaded: bool,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_display_opt")]
    pub error: Option<TargetError>,
}

fn ser_display_vec<T: std::fmt::Display, S: serde::Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|e| e.to_string()))
}

fn ser_display_opt<T: std::fmt::Display, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

impl Report {
    /// True when anything failed: a source, an output or a target.
    pub fn failed(&self) -> bool {
        self.envs.iter().any(EnvReport::failed)
    }

    /// Counts of changes by action, for the summary line. A change of a
    /// target that failed counts as failed, not as what it would have done.
    pub fn counts(&self, applied: bool) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for t in self.envs.iter().flat_map(|e| &e.outputs).flat_map(|o| &o.targets) {
            for c in &t.changes {
                let name = if applied && t.error.is_some() && c.action.writes() { "failed" } else { c.action.name() };
                *counts.entry(name).or_default() += 1;
            }
        }
        for p in self.envs.iter().flat_map(|e| &e.pruned) {
            *counts.entry(p.action.name()).or_default() += 1;
        }
        counts
    }
}

impl EnvReport {
    pub fn failed(&self) -> bool {
        self.source_error.is_some()
            || !self.errors.is_empty()
            || self.outputs.iter().any(|o| o.error.is_some() || o.targets.iter().any(|t| t.error.is_some()))
    }

    fn source_failed(env: &str, e: SourceError) -> Self {
        EnvReport {
            env: env.to_owned(),
            revision: None,
            source_error: Some(e),
            outputs: Vec::new(),
            pruned: Vec::new(),
            errors: Vec::new(),
            keys: None,
            secret_versions: BTreeMap::new(),
        }
    }

    fn target(&mut self, slot: Slot) -> Option<&mut TargetReport> {
        match slot {
            Slot::Target { output, target } => self.outputs.get_mut(output)?.targets.get_mut(target),
            Slot::Prune => None,
        }
    }

    /// Records an error at `slot` (the first one of a target wins).
    fn fail(&mut self, slot: Slot, e: TargetError) {
        match self.target(slot) {
            Some(t) => {
                t.error.get_or_insert(e);
            }
            None => self.errors.push(e),
        }
    }
}

/// Runs one pass over the selected envs.
pub async fn run_pass(
    config: &Config,
    templates: &Templates,
    sources: &Sources,
    targets: &Targets,
    options: &PassOptions,
) -> Report {
    let envs: Vec<&String> = config.envs.iter().filter(|env| options.env.as_ref().is_none_or(|e| e == *env)).collect();
    let requests: Vec<Request> = envs
        .iter()
        .map(|env| Request {
            patch: options.patch.as_ref().filter(|_| options.env.as_ref() == Some(*env)).cloned(),
            ..request(config, templates, env, options.only_outputs.as_ref())
        })
        .collect();
    // Destinations known from the config alone are read while the sources are.
    let early = join_all(envs.iter().map(|env| early_observations(config, targets, env, options)));
    let (fetched, early) = tokio::join!(join_all(requests.iter().map(|r| sources.fetch(r))), early);
    let prune_allowed = fetched.iter().all(Result::is_ok) && options.only_outputs.is_none();
    // Boxed: rustc cannot yet prove such futures `Send` for every lifetime
    // when they come from closures (rust-lang/rust#102211).
    let passes: Vec<BoxFuture<'_, EnvReport>> = envs
        .into_iter()
        .zip(fetched)
        .zip(early)
        .map(|((env, snapshot), early)| -> BoxFuture<'_, EnvReport> {
            Box::pin(async move {
                match snapshot {
                    Ok(s) => {
                        let snapshot = Arc::new(s);
                        let kept = options.keep_keys.then(|| snapshot.clone());
                        let plan = plan_env_observed(
                            config,
                            templates,
                            targets,
                            snapshot,
                            (prune_allowed, options),
                            &BTreeMap::new(),
                            early,
                        )
                        .await;
                        let mut report =
                            if options.dry_run { plan.report } else { apply_env(plan, options.fence.as_deref()).await };
                        // After the writes: off the path of a watch change.
                        report.keys = kept.and_then(keys_of);
                        report
                    }
                    Err(e) => {
                        warn!(env, source = %e.kind(), error = %e, "source failed; no target of this env is touched");
                        EnvReport::source_failed(env, e)
                    }
                }
            })
        })
        .collect();
    Report { envs: join_all(passes).await }
}

/// The keys of a snapshot the pass is done with, without its secrets:
/// moved out when nothing else holds it, else copied.
fn keys_of(snapshot: Arc<Snapshot>) -> Option<Arc<KeysAt>> {
    let revision = snapshot.revision?;
    let keys = match Arc::try_unwrap(snapshot) {
        Ok(s) => s.keys,
        Err(shared) => {
            debug!(env = shared.env, "the snapshot is still shared; copying its keys");
            shared.keys.clone()
        }
    };
    Some(Arc::new(KeysAt { keys, revision }))
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the sources must provide for `env`: every secret path its
/// templates name (only those of `only`, when a pass renders some outputs
/// only), and the fingerprint key when one of them has Kubernetes or CI
/// targets.
pub fn request(config: &Config, templates: &Templates, env: &str, only: Option<&BTreeSet<usize>>) -> Request {
    let wanted = |i: &usize| config.outputs[*i].envs.iter().any(|e| e == env) && only.is_none_or(|o| o.contains(i));
    let outputs: Vec<usize> = (0..config.outputs.len()).filter(wanted).collect();
    let mut secret_paths: BTreeSet<String> =
        outputs.iter().flat_map(|i| templates.analysis(*i).secret_paths.iter().cloned()).collect();
    let needs_key = outputs.iter().flat_map(|i| &config.outputs[*i].targets).any(|t| {
        KubeKind::spec(&t.kind).is_some() || GitlabKind::spec(&t.kind).is_some() || GithubKind::spec(&t.kind).is_some()
    });
    if let Some((path, _)) = &config.kubernetes.fingerprint_key
        && needs_key
    {
        secret_paths.insert(path.clone());
    }
    Request { env: env.to_owned(), secret_paths, patch: None }
}

fn fingerprinter(config: &Config, snapshot: &Snapshot) -> Fingerprinter {
    let key = config
        .kubernetes
        .fingerprint_key
        .as_ref()
        .and_then(|(path, field)| snapshot.secrets.get(path)?.fields.get(field).cloned());
    Fingerprinter::new(key)
}

/// One env's plan: the report as it will be if applied, and what apply
/// executes.
pub struct EnvPlan<'a> {
    pub report: EnvReport,
    config: &'a Config,
    keyed: Fingerprinter,
    shown: Option<crate::fingerprint::Fingerprinter>,
    prune: bool,
    allow_mass_prune: bool,
    run_reload: bool,
    files: KindPlan<'a, FileKind>,
    kube: KindPlan<'a, KubeKind>,
    gitlab: KindPlan<'a, GitlabKind>,
    github: KindPlan<'a, GithubKind>,
}

impl<'a> EnvPlan<'a> {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: self.config,
            env: &self.report.env,
            revision: self.report.revision,
            instance: &self.config.instance,
            keyed: &self.keyed,
            shown: self.shown.as_ref(),
            prune: self.prune,
            allow_mass_prune: self.allow_mass_prune,
            run_reload: self.run_reload,
        }
    }
}

/// Observations made before rendering, per kind that allows it
/// ([`Target::OBSERVE_BEFORE_RENDER`]).
#[derive(Default)]
pub struct Early {
    kube: Observations<KubeKind>,
}

/// What was observed at each destination, and for which scope.
type Observations<K> =
    BTreeMap<<K as Target>::Dest, (<K as Target>::Scope, Result<<K as Target>::Observed, TargetError>)>;

/// Reads, for `env`, the destinations whose kind can be observed before
/// anything is rendered: those of every target of the outputs in the pass.
async fn early_observations(config: &Config, targets: &Targets, env: &str, options: &PassOptions) -> Early {
    if options.files_only {
        return Early::default();
    }
    let keyed = Fingerprinter::new(None);
    let ctx = Ctx {
        config,
        env,
        revision: None,
        instance: &config.instance,
        keyed: &keyed,
        shown: None,
        prune: false,
        allow_mass_prune: false,
        run_reload: false,
    };
    let specs = config
        .outputs
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            o.envs.iter().any(|e| e == env) && options.only_outputs.as_ref().is_none_or(|only| only.contains(i))
        })
        .flat_map(|(_, o)| &o.targets)
        .map(|t| &t.kind);
    let started = std::time::Instant::now();
    let kube = observe_before_render(&targets.kube, specs, &ctx).await;
    debug!(env, took_us = started.elapsed().as_micros() as u64, "observed before rendering");
    Early { kube }
}

async fn observe_before_render<'t, K: Target>(
    kind: &K,
    specs: impl Iterator<Item = &'t crate::config::TargetKind>,
    ctx: &Ctx<'_>,
) -> Observations<K>
where
    K::Spec: 't,
{
    if !K::OBSERVE_BEFORE_RENDER {
        return BTreeMap::new();
    }
    let mut scopes: BTreeMap<K::Dest, K::Scope> = BTreeMap::new();
    for spec in specs.filter_map(K::spec) {
        let mut scope = K::Scope::default();
        let dest = kind.locate(spec, None, ctx, &mut scope);
        match scopes.get_mut(&dest) {
            Some(existing) => crate::targets::Merge::merge(existing, scope),
            None => {
                scopes.insert(dest, scope);
            }
        }
    }
    type Observation<K> = (<K as Target>::Dest, <K as Target>::Scope, Result<<K as Target>::Observed, TargetError>);
    let observations: Vec<BoxFuture<'_, Observation<K>>> = scopes
        .into_iter()
        .map(|(dest, scope)| -> BoxFuture<'_, Observation<K>> {
            Box::pin(async move {
                let observed = kind.observe(&dest, &scope, ctx).await;
                (dest, scope, observed)
            })
        })
        .collect();
    let observed: Vec<Observation<K>> =
        futures_util::stream::iter(observations).buffer_unordered(CONCURRENCY).collect().await;
    observed.into_iter().map(|(dest, scope, o)| (dest, (scope, o))).collect()
}

/// Renders, observes and plans one env. `not_rendered`: outputs (config
/// index) not to render, with the reason (`pull`'s denied reads).
pub async fn plan_env<'a>(
    config: &'a Config,
    templates: &Templates,
    targets: &'a Targets,
    snapshot: Arc<Snapshot>,
    prune_allowed: bool,
    options: &PassOptions,
    not_rendered: &BTreeMap<usize, String>,
) -> EnvPlan<'a> {
    plan_env_observed(config, templates, targets, snapshot, (prune_allowed, options), not_rendered, Early::default())
        .await
}

/// [`plan_env`], using what was observed before rendering where it covers
/// what the plan needs.
async fn plan_env_observed<'a>(
    config: &'a Config,
    templates: &Templates,
    targets: &'a Targets,
    snapshot: Arc<Snapshot>,
    (prune_allowed, options): (bool, &PassOptions),
    not_rendered: &BTreeMap<usize, String>,
    early: Early,
) -> EnvPlan<'a> {
    let env = snapshot.env.clone();
    let revision = snapshot.revision;
    debug!(env, revision, keys = snapshot.keys.len(), secrets = snapshot.secrets.len(), "snapshot read");
    let keyed = fingerprinter(config, &snapshot);
    let wanted = |i: &usize| {
        config.outputs[*i].envs.contains(&env)
            && options.only_outputs.as_ref().is_none_or(|only| only.contains(i))
            && (!options.files_only || config.outputs[*i].targets.iter().any(|t| FileKind::spec(&t.kind).is_some()))
    };
    let indices: Vec<usize> = (0..config.outputs.len()).filter(wanted).collect();
    let to_render: Vec<usize> = indices.iter().copied().filter(|i| !not_rendered.contains_key(i)).collect();
    let in_pass_set: BTreeSet<usize> = indices.iter().copied().collect();
    let started = std::time::Instant::now();
    let results = crate::render::sandbox::Sandbox::global().render(templates, &snapshot, &to_render).await;
    debug!(env, outputs = to_render.len(), took_ms = started.elapsed().as_millis() as u64, "rendered");
    let mut rendered: BTreeMap<usize, Result<Rendered, RenderError>> = to_render.into_iter().zip(results).collect();

    let mut report = EnvReport {
        env: env.clone(),
        revision,
        source_error: None,
        outputs: Vec::new(),
        pruned: Vec::new(),
        errors: Vec::new(),
        keys: None,
        secret_versions: snapshot.secrets.iter().filter_map(|(p, s)| Some((p.clone(), s.version?))).collect(),
    };
    // Every target of the env takes part in planning, rendered or not: what
    // it owns is then known to be claimed.
    let mut jobs: Vec<(Slot, usize, usize)> = Vec::new();
    let mut outputs: Vec<Option<Rendered>> = Vec::new();
    for (index, output) in config.outputs.iter().enumerate() {
        if !output.envs.contains(&env) {
            continue;
        }
        let in_pass = in_pass_set.contains(&index);
        let result = rendered.remove(&index);
        let mut out = OutputReport {
            output: output.name.clone(),
            tainted: templates.analysis(index).reads_secrets(),
            error: None,
            skipped: not_rendered.get(&index).filter(|_| in_pass).cloned(),
            used: BTreeSet::new(),
            fingerprint: None,
            targets: Vec::new(),
        };
        let ok = match result {
            Some(Ok(r)) => {
                trace!(output = %output.name, env, tainted = r.tainted, reads = r.used.len(), "output rendered");
                out.tainted = r.tainted;
                out.used = r.used.clone();
                out.fingerprint = keyed.fingerprint(r.entries.iter().map(|(k, v)| (k, v.expose())), r.tainted);
                Some(r)
            }
            Some(Err(e)) => {
                warn!(output = %output.name, env, error = %e, "rendering failed; this output's targets are not touched");
                out.error = Some(e);
                None
            }
            None => None,
        };
        let position = report.outputs.len();
        for (t, target) in output.targets.iter().enumerate() {
            if options.files_only && FileKind::spec(&target.kind).is_none() {
                continue;
            }
            let id = target_id(&env, &output.name, t);
            let reported = in_pass && out.error.is_none() && out.skipped.is_none() && !options.skip.contains(&id);
            let slot = if reported {
                out.targets.push(TargetReport {
                    id,
                    kind: kind_name(&target.kind),
                    address: address(&target.kind, &env),
                    changes: Vec::new(),
                    applied: false,
                    reloaded: false,
                    error: None,
                });
                Slot::Target { output: position, target: out.targets.len() - 1 }
            } else {
                Slot::Prune
            };
            jobs.push((slot, index, t));
        }
        report.outputs.push(out);
        outputs.push(ok);
    }
    let rendered_of = |slot: Slot| match slot {
        Slot::Target { output, .. } => outputs[output].as_ref(),
        Slot::Prune => None,
    };
    let jobs: Vec<Job<'_>> = jobs
        .iter()
        .map(|(slot, o, t)| Job {
            slot: *slot,
            target: &config.outputs[*o].targets[*t].kind,
            rendered: rendered_of(*slot),
        })
        .collect();
    let shown = if options.show_fingerprints { crate::fingerprint::Fingerprinter::new().ok() } else { None };
    let mut plan = EnvPlan {
        report,
        config,
        keyed,
        shown,
        // A pass that saw only some outputs cannot know what is unclaimed.
        prune: prune_allowed && options.only_outputs.is_none(),
        allow_mass_prune: options.allow_mass_prune,
        run_reload: !options.no_reload,
        files: KindPlan::empty(&targets.files),
        kube: KindPlan::empty(&targets.kube),
        gitlab: KindPlan::empty(&targets.gitlab),
        github: KindPlan::empty(&targets.github),
    };
    let started = std::time::Instant::now();
    let (files, kube, gitlab, github) = {
        let ctx = plan.ctx();
        let kube_jobs: &[Job<'_>] = if options.files_only { &[] } else { &jobs };
        // `pull` writes files only: the CI kinds do not even read their records.
        let ci = !options.files_only;
        tokio::join!(
            plan_kind(&targets.files, &jobs, &ctx, BTreeMap::new()),
            plan_kind(&targets.kube, kube_jobs, &ctx, early.kube),
            async {
                if ci {
                    plan_kind(&targets.gitlab, &jobs, &ctx, BTreeMap::new()).await
                } else {
                    KindPlan::empty(&targets.gitlab)
                }
            },
            async {
                if ci {
                    plan_kind(&targets.github, &jobs, &ctx, BTreeMap::new()).await
                } else {
                    KindPlan::empty(&targets.github)
                }
            },
        )
    };
    debug!(env, took_ms = started.elapsed().as_millis() as u64, "observed and planned");
    let (mut files, mut kube, mut gitlab, mut github) = (files, kube, gitlab, github);
    files.report_into(&mut plan.report);
    kube.report_into(&mut plan.report);
    gitlab.report_into(&mut plan.report);
    github.report_into(&mut plan.report);
    plan.files = files;
    plan.kube = kube;
    plan.gitlab = gitlab;
    plan.github = github;
    plan
}

fn kind_name(t: &crate::config::TargetKind) -> &'static str {
    if let Some(s) = FileKind::spec(t) {
        return FileKind::kind_name(s);
    }
    if let Some(s) = GitlabKind::spec(t) {
        return GitlabKind::kind_name(s);
    }
    if let Some(s) = GithubKind::spec(t) {
        return GithubKind::kind_name(s);
    }
    KubeKind::spec(t).map_or("unknown", KubeKind::kind_name)
}

pub fn address(t: &crate::config::TargetKind, env: &str) -> String {
    if let Some(s) = FileKind::spec(t) {
        return FileKind::address(s, env);
    }
    if let Some(s) = GitlabKind::spec(t) {
        return GitlabKind::address(s, env);
    }
    if let Some(s) = GithubKind::spec(t) {
        return GithubKind::address(s, env);
    }
    KubeKind::spec(t).map_or_else(String::new, |s| KubeKind::address(s, env))
}

/// Executes a plan; returns the report of what happened.
pub async fn apply_env(mut plan: EnvPlan<'_>, fence: Option<&dyn Fence>) -> EnvReport {
    let (file_kind, kube_kind) = (plan.files.kind, plan.kube.kind);
    let (gitlab_kind, github_kind) = (plan.gitlab.kind, plan.github.kind);
    let files = std::mem::replace(&mut plan.files, KindPlan::empty(file_kind));
    let kube = std::mem::replace(&mut plan.kube, KindPlan::empty(kube_kind));
    let gitlab = std::mem::replace(&mut plan.gitlab, KindPlan::empty(gitlab_kind));
    let github = std::mem::replace(&mut plan.github, KindPlan::empty(github_kind));
    plan.report.pruned.clear();
    let (file_results, kube_results, gitlab_results, github_results) = {
        let ctx = plan.ctx();
        tokio::join!(
            files.apply(&ctx, fence),
            kube.apply(&ctx, fence),
            gitlab.apply(&ctx, fence),
            github.apply(&ctx, fence)
        )
    };
    for results in [file_results, kube_results, gitlab_results, github_results] {
        record_applied(&mut plan.report, results);
    }
    for t in plan.report.outputs.iter_mut().flat_map(|o| &mut o.targets) {
        t.applied = t.error.is_none();
    }
    plan.report
}

fn record_applied(report: &mut EnvReport, results: Vec<Outcome>) {
    for outcome in results {
        match outcome {
            Outcome::Applied(a) => {
                let Applied { slot, change, result, reloaded } = a;
                match (slot, result) {
                    (Slot::Prune, Ok(())) => report.pruned.push(change),
                    (slot, Err(e)) => report.fail(slot, e),
                    (slot, Ok(())) => {
                        if let Some(t) = report.target(slot) {
                            t.reloaded |= reloaded;
                        }
                    }
                }
            }
            Outcome::Error(slot, e) => report.fail(slot, e),
        }
    }
}

/// One target of an env, as a pass sees it.
pub struct Job<'a> {
    /// Where its outcome goes; `Slot::Prune` for a target not in this pass
    /// (not rendered, skipped): it takes part only to claim what it owns.
    pub slot: Slot,
    pub target: &'a crate::config::TargetKind,
    pub rendered: Option<&'a Rendered>,
}

/// One kind's plan for one env.
pub struct KindPlan<'a, K: Target> {
    kind: &'a K,
    dests: Vec<DestEntry<K>>,
    /// Targets whose items could not be built.
    errors: Vec<(Slot, TargetError)>,
}

/// A destination, its plan (or why it could not be observed), and the
/// targets that write there.
type DestEntry<K> = (<K as Target>::Dest, Result<DestPlan<<K as Target>::Op>, TargetError>, Vec<Slot>);

/// What each target of a destination claims there.
type Claims<'s, K> = BTreeMap<<K as Target>::Dest, Vec<Claim<'s, <K as Target>::Spec, <K as Target>::Item>>>;

enum Outcome {
    Applied(Applied),
    Error(Slot, TargetError),
}

impl<'a, K: Target> KindPlan<'a, K> {
    fn empty(kind: &'a K) -> Self {
        Self { kind, dests: Vec::new(), errors: Vec::new() }
    }

    /// Puts the planned changes and refusals into the report (the
    /// refusals move there: apply does not see them again).
    fn report_into(&mut self, report: &mut EnvReport) {
        for (slot, e) in std::mem::take(&mut self.errors) {
            report.fail(slot, e);
        }
        for (dest, plan, slots) in &mut self.dests {
            match plan {
                Err(e) => {
                    warn!(env = %report.env, dest = %dest, error = %e, "destination cannot be observed; its targets are not touched");
                    for slot in slots.iter().filter(|s| matches!(s, Slot::Target { .. })) {
                        report.fail(*slot, e.duplicate());
                    }
                }
                Ok(plan) => {
                    for p in &plan.changes {
                        match report.target(p.slot) {
                            Some(t) => t.changes.push(p.change.clone()),
                            None if p.slot == Slot::Prune => report.pruned.push(p.change.clone()),
                            None => {}
                        }
                    }
                    for (slot, e) in std::mem::take(&mut plan.errors) {
                        report.fail(slot, e);
                    }
                }
            }
        }
    }

    /// Executes every destination's plan, each after asking the fence.
    async fn apply(self, ctx: &Ctx<'_>, fence: Option<&dyn Fence>) -> Vec<Outcome> {
        let kind = self.kind;
        let mut outcomes: Vec<Outcome> = Vec::new();
        let batches: Vec<BoxFuture<'_, Vec<Outcome>>> = self
            .dests
            .into_iter()
            .map(|(dest, plan, _)| -> BoxFuture<'_, Vec<Outcome>> {
                Box::pin(apply_dest(kind, dest, plan, ctx, fence))
            })
            .collect();
        let results: Vec<Vec<Outcome>> =
            futures_util::stream::iter(batches).buffer_unordered(CONCURRENCY).collect().await;
        outcomes.extend(results.into_iter().flatten());
        if let Err(e) = kind.commit(ctx) {
            warn!(env = ctx.env, error = %e, "cannot save what was written");
            outcomes.push(Outcome::Error(Slot::Prune, e));
        }
        outcomes
    }
}

/// Executes one destination's plan, after asking the fence.
async fn apply_dest<K: Target>(
    kind: &K,
    dest: K::Dest,
    plan: Result<DestPlan<K::Op>, TargetError>,
    ctx: &Ctx<'_>,
    fence: Option<&dyn Fence>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let Ok(plan) = plan else {
        // Reported by `report_into` already.
        return out;
    };
    if plan.needs_write()
        && let Some(Err(reason)) = fence.map(|f| f.check(ctx.env))
    {
        warn!(env = ctx.env, dest = %dest, reason, "not written: fenced");
        let slots: BTreeSet<Slot> = plan.changes.iter().map(|c| c.slot).collect();
        for slot in slots {
            out.push(Outcome::Error(slot, TargetError::Fenced { env: ctx.env.to_owned(), reason: reason.clone() }));
        }
        return out;
    }
    out.extend(kind.apply(&dest, plan.changes, ctx).await.into_iter().map(Outcome::Applied));
    out
}

/// Observes and plans every destination of kind `K` for one env; `early`:
/// what was observed before rendering (used where its scope covers what is
/// needed now).
async fn plan_kind<'a, K: Target>(
    kind: &'a K,
    jobs: &[Job<'_>],
    ctx: &Ctx<'_>,
    mut early: Observations<K>,
) -> KindPlan<'a, K> {
    let mut scopes: BTreeMap<K::Dest, K::Scope> = BTreeMap::new();
    let mut claims: Claims<'_, K> = BTreeMap::new();
    let mut errors = Vec::new();
    for job in jobs {
        let Some(spec) = K::spec(job.target) else { continue };
        // A target that did not render only claims what it owns, which
        // matters only to prune: without prune (a pass for some outputs),
        // its destination need not even be read.
        if job.rendered.is_none() && !ctx.prune {
            continue;
        }
        let items = match job.rendered {
            Some(r) => match kind.desired(spec, r, ctx) {
                Ok(items) => Some(items),
                Err(e) => {
                    errors.push((job.slot, e));
                    None
                }
            },
            None => None,
        };
        let mut scope = K::Scope::default();
        let dest = kind.locate(spec, items.as_deref(), ctx, &mut scope);
        match scopes.get_mut(&dest) {
            Some(existing) => crate::targets::Merge::merge(existing, scope),
            None => {
                scopes.insert(dest.clone(), scope);
            }
        }
        claims.entry(dest).or_default().push(Claim { slot: job.slot, spec, items });
    }
    if ctx.prune {
        kind.recorded(ctx, &mut scopes);
        for (dest, scope) in kind.recall(ctx).await {
            match scopes.get_mut(&dest) {
                Some(existing) => crate::targets::Merge::merge(existing, scope),
                None => {
                    scopes.insert(dest, scope);
                }
            }
        }
    }
    type Observation<K> = (<K as Target>::Dest, Result<<K as Target>::Observed, TargetError>);
    let observations: Vec<BoxFuture<'_, Observation<K>>> = scopes
        .iter()
        .map(|(dest, scope)| -> BoxFuture<'_, Observation<K>> {
            let seen = early.remove(dest).filter(|(covered, _)| crate::targets::Merge::covers(covered, scope));
            Box::pin(async move {
                match seen {
                    Some((_, observed)) => (dest.clone(), observed),
                    None => (dest.clone(), kind.observe(dest, scope, ctx).await),
                }
            })
        })
        .collect();
    let observed: Vec<Observation<K>> = futures_util::stream::iter(observations).buffered(CONCURRENCY).collect().await;
    let mut dests = Vec::new();
    for (dest, observed) in observed {
        let claims = claims.remove(&dest).unwrap_or_default();
        let slots: Vec<Slot> = claims.iter().map(|c| c.slot).collect();
        let plan = observed.map(|o| kind.plan(&dest, claims, &o, ctx));
        dests.push((dest, plan, slots));
    }
    KindPlan { kind, dests, errors }
}
