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
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::join_all;
use serde::Serialize;
use tracing::{debug, trace, warn};

use crate::config::Config;
use crate::fingerprint::EnvFingerprinter;
use crate::plan::{Change, Slot};
use crate::render::{RenderError, Rendered, Templates, Use};
use crate::source::{KeysAt, Patch, Request, Snapshot, SourceError, Sources};
use crate::targets::{Applied, Claim, Ctx, DestPlan, Registered, Target, TargetError, TargetKind};

pub use crate::targets::{Fence, Targets};

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
    /// state that could not be saved. In JSON, `errors` (the texts) and
    /// `error_codes` (their codes, in the same order).
    #[serde(flatten, serialize_with = "ser_failures")]
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
    /// In JSON, `error` (the text) and `error_code` (its stable code, as
    /// on `/readyz`).
    #[serde(flatten, serialize_with = "ser_failure")]
    pub error: Option<TargetError>,
}

impl TargetReport {
    /// A target in the pass, before anything is planned.
    fn new(id: String, kind: &TargetKind, env: &str) -> Self {
        TargetReport {
            id,
            kind: kind.name(),
            address: kind.address(env),
            changes: Vec::new(),
            applied: false,
            reloaded: false,
            error: None,
        }
    }
}

/// A target's failure as `error` and `error_code`, or nothing.
fn ser_failure<S: serde::Serializer>(e: &Option<TargetError>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    if let Some(e) = e {
        map.serialize_entry("error", &e.to_string())?;
        map.serialize_entry("error_code", e.code())?;
    }
    map.end()
}

/// An env's failures as `errors` and `error_codes`, or nothing.
fn ser_failures<S: serde::Serializer>(errors: &[TargetError], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    if !errors.is_empty() {
        map.serialize_entry("errors", &errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        map.serialize_entry("error_codes", &errors.iter().map(TargetError::code).collect::<Vec<_>>())?;
    }
    map.end()
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

    fn empty(env: &str, revision: Option<i64>) -> Self {
        EnvReport {
            env: env.to_owned(),
            revision,
            source_error: None,
            outputs: Vec::new(),
            pruned: Vec::new(),
            errors: Vec::new(),
            keys: None,
            secret_versions: BTreeMap::new(),
        }
    }

    fn source_failed(env: &str, e: SourceError) -> Self {
        EnvReport { source_error: Some(e), ..EnvReport::empty(env, None) }
    }

    fn target(&mut self, slot: Slot) -> Option<&mut TargetReport> {
        match slot {
            Slot::Target { output, target } => self.outputs.get_mut(output)?.targets.get_mut(target),
            Slot::Prune => None,
        }
    }

    /// Records an error at `slot` (the first one of a target wins).
    /// Records a failure at its target, or at the env when it belongs to
    /// none (a refused prune: logged here with its code, as the service
    /// logs a target's).
    fn fail(&mut self, slot: Slot, e: TargetError) {
        match self.target(slot) {
            Some(t) => {
                t.error.get_or_insert(e);
            }
            None => {
                if !matches!(e, TargetError::Fenced { .. }) {
                    warn!(env = %self.env, code = e.code(), error = %e, "not pruned or not recorded");
                }
                self.errors.push(e);
            }
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
    let not_rendered = BTreeMap::new();
    let input = &PlanInput { config, templates, targets, options, prune_allowed, not_rendered: &not_rendered };
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
                        let plan = plan_env_observed(input, snapshot, early).await;
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
/// only), and the fingerprint key when one of them has targets of a
/// [keyed](crate::targets::Kind::KEYED) kind.
pub fn request(config: &Config, templates: &Templates, env: &str, only: Option<&BTreeSet<usize>>) -> Request {
    let wanted = |i: &usize| config.outputs[*i].envs.iter().any(|e| e == env) && only.is_none_or(|o| o.contains(i));
    let outputs: Vec<usize> = (0..config.outputs.len()).filter(wanted).collect();
    let mut secret_paths: BTreeSet<String> =
        outputs.iter().flat_map(|i| templates.analysis(*i).secret_paths.iter().cloned()).collect();
    let needs_key = outputs.iter().flat_map(|i| &config.outputs[*i].targets).any(|t| t.kind.keyed());
    if let Some((path, _)) = &config.fingerprint_key
        && needs_key
    {
        secret_paths.insert(path.clone());
    }
    Request { env: env.to_owned(), secret_paths, patch: None }
}

/// The env's fingerprinter: keyed with `[fingerprint] key` as read in
/// `snapshot` (`rotate verify` fingerprints what targets hold with it).
pub fn fingerprinter(config: &Config, snapshot: &Snapshot) -> EnvFingerprinter {
    let key = config
        .fingerprint_key
        .as_ref()
        .and_then(|(path, field)| snapshot.secrets.get(path)?.fields.get(field).cloned());
    EnvFingerprinter::new(key)
}

/// One env's plan: the report as it will be if applied, and what apply
/// executes.
pub struct EnvPlan<'a> {
    pub report: EnvReport,
    pass: EnvPass<'a>,
    kinds: KindPlans<'a>,
}

/// What one env's pass knows, owned; [`EnvPass::ctx`] lends it to the kinds.
struct EnvPass<'a> {
    config: &'a Config,
    env: String,
    revision: Option<i64>,
    keyed: EnvFingerprinter,
    shown: Option<crate::fingerprint::RunFingerprinter>,
    prune: bool,
    allow_mass_prune: bool,
    run_reload: bool,
}

impl EnvPass<'_> {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            revision: self.revision,
            shown: self.shown.as_ref(),
            prune: self.prune,
            allow_mass_prune: self.allow_mass_prune,
            run_reload: self.run_reload,
            ..Ctx::new(self.config, &self.env, &self.keyed)
        }
    }
}

/// What was observed at each destination, and for which scope.
type Observations<K> =
    BTreeMap<<K as Target>::Dest, (<K as Target>::Scope, Result<<K as Target>::Observed, TargetError>)>;

/// What goes over every kind in a pass, one field or one future per kind
/// of the registry ([`crate::targets::registry`]).
macro_rules! per_kind {
    ($( $Variant:ident($field:ident: $Kind:path) { $($tags:tt)* } ),+ $(,)?) => {
        /// Observations made before rendering, per kind that allows it
        /// ([`Target::OBSERVE_BEFORE_RENDER`]).
        #[derive(Default)]
        pub struct Early {
            $( $field: Observations<$Kind>, )+
        }

        impl Early {
            async fn observe(targets: &Targets, specs: &[&TargetKind], ctx: &Ctx<'_>) -> Self {
                let ( $( $field, )+ ) = tokio::join!( $( observe_before_render(&targets.$field, specs, ctx), )+ );
                Early { $( $field, )+ }
            }
        }

        /// One env's plan, per kind.
        struct KindPlans<'a> {
            $( $field: KindPlan<'a, $Kind>, )+
        }

        impl<'a> KindPlans<'a> {
            /// Observes and plans every kind at once.
            async fn plan(targets: &'a Targets, jobs: &[Job<'_>], ctx: &Ctx<'_>, early: Early, files_only: bool) -> Self {
                let ( $( $field, )+ ) =
                    tokio::join!( $( plan_kind(&targets.$field, jobs, ctx, early.$field, files_only), )+ );
                KindPlans { $( $field, )+ }
            }

            fn report_into(&mut self, report: &mut EnvReport) {
                $( self.$field.report_into(report); )+
            }

            /// Executes every kind's plan at once; the outcomes in registry order.
            async fn apply(self, ctx: &Ctx<'_>, fence: Option<&dyn Fence>) -> Vec<Outcome> {
                let ( $( $field, )+ ) = tokio::join!( $( self.$field.apply(ctx, fence), )+ );
                let mut outcomes = Vec::new();
                $( outcomes.extend($field); )+
                outcomes
            }
        }
    };
}
crate::targets::registry::kinds!(per_kind);

/// Reads, for `env`, the destinations whose kind can be observed before
/// anything is rendered: those of every target of the outputs in the pass.
async fn early_observations(config: &Config, targets: &Targets, env: &str, options: &PassOptions) -> Early {
    if options.files_only {
        return Early::default();
    }
    let keyed = EnvFingerprinter::new(None);
    let ctx = Ctx::new(config, env, &keyed);
    let specs: Vec<&TargetKind> = config
        .outputs
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            o.envs.iter().any(|e| e == env) && options.only_outputs.as_ref().is_none_or(|only| only.contains(i))
        })
        .flat_map(|(_, o)| &o.targets)
        .map(|t| &t.kind)
        .collect();
    let started = std::time::Instant::now();
    let early = Early::observe(targets, &specs, &ctx).await;
    debug!(env, took_us = started.elapsed().as_micros() as u64, "observed before rendering");
    early
}

async fn observe_before_render<K: Registered>(kind: &K, specs: &[&TargetKind], ctx: &Ctx<'_>) -> Observations<K> {
    if !K::OBSERVE_BEFORE_RENDER {
        return BTreeMap::new();
    }
    let mut scopes: BTreeMap<K::Dest, K::Scope> = BTreeMap::new();
    for spec in specs.iter().filter_map(|t| K::spec(t)) {
        let mut scope = K::Scope::default();
        let dest = kind.locate(spec, None, ctx, &mut scope);
        merge_scope::<K>(&mut scopes, dest, scope);
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

/// Adds what `scope` asks to observe at `dest`.
fn merge_scope<K: Target>(scopes: &mut BTreeMap<K::Dest, K::Scope>, dest: K::Dest, scope: K::Scope) {
    match scopes.get_mut(&dest) {
        Some(existing) => crate::targets::Merge::merge(existing, scope),
        None => {
            scopes.insert(dest, scope);
        }
    }
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
    let input = PlanInput { config, templates, targets, options, prune_allowed, not_rendered };
    plan_env_observed(&input, snapshot, Early::default()).await
}

/// What planning one env needs besides its snapshot.
struct PlanInput<'a, 'p> {
    config: &'a Config,
    templates: &'p Templates,
    targets: &'a Targets,
    options: &'p PassOptions,
    /// Every env of the pass was read.
    prune_allowed: bool,
    /// Outputs (config index) not to render, with the reason.
    not_rendered: &'p BTreeMap<usize, String>,
}

/// [`plan_env`], using what was observed before rendering where it covers
/// what the plan needs: render, put every target of the env in the report
/// (or, when not in this pass, among those that only claim what they
/// own), then observe and plan every kind.
async fn plan_env_observed<'a>(input: &PlanInput<'a, '_>, snapshot: Arc<Snapshot>, early: Early) -> EnvPlan<'a> {
    let (config, options) = (input.config, input.options);
    let env = snapshot.env.clone();
    debug!(
        env,
        revision = snapshot.revision,
        keys = snapshot.keys.len(),
        secrets = snapshot.secrets.len(),
        "snapshot read"
    );
    let pass = EnvPass {
        config,
        env: env.clone(),
        revision: snapshot.revision,
        keyed: fingerprinter(config, &snapshot),
        shown: if options.show_fingerprints { crate::fingerprint::RunFingerprinter::new().ok() } else { None },
        // A pass that saw only some outputs cannot know what is unclaimed.
        prune: input.prune_allowed && options.only_outputs.is_none(),
        allow_mass_prune: options.allow_mass_prune,
        run_reload: !options.no_reload,
    };
    let in_pass = outputs_in_pass(input, &env);
    let mut rendered = render(input, &snapshot, &in_pass).await;
    let mut report = EnvReport::empty(&env, snapshot.revision);
    report.secret_versions = snapshot.secrets.iter().filter_map(|(p, s)| Some((p.clone(), s.version?))).collect();
    // Every target of the env takes part in planning, rendered or not: what
    // it owns is then known to be claimed.
    let mut slots: Vec<(Slot, usize, usize)> = Vec::new();
    let mut outputs: Vec<Option<Rendered>> = Vec::new();
    for (index, output) in config.outputs.iter().enumerate().filter(|(_, o)| o.envs.contains(&env)) {
        let in_pass = in_pass.contains(&index);
        let (mut out, ok) = output_report(input, index, rendered.remove(&index), in_pass, &env);
        let reports = in_pass && out.error.is_none() && out.skipped.is_none();
        let position = report.outputs.len();
        for (t, target) in output.targets.iter().enumerate() {
            if options.files_only && !target.kind.local() {
                continue;
            }
            let id = target_id(&env, &output.name, t);
            let slot = if reports && !options.skip.contains(&id) {
                out.targets.push(TargetReport::new(id, &target.kind, &env));
                Slot::Target { output: position, target: out.targets.len() - 1 }
            } else {
                Slot::Prune
            };
            slots.push((slot, index, t));
        }
        report.outputs.push(out);
        outputs.push(ok);
    }
    // The outputs' fingerprints (for the history) are computed beside the
    // planning, on another thread: hashing every rendered byte once more
    // is as long as planning a pass over unchanged files, and the bytes are
    // shared, not copied.
    let to_fingerprint: Vec<(usize, BTreeMap<String, crate::secret::Content>, bool)> = outputs
        .iter()
        .enumerate()
        .filter_map(|(position, r)| Some((position, r.as_ref()?.entries.clone(), r.as_ref()?.tainted)))
        .collect();
    let keyed = pass.keyed.clone();
    let fingerprints = tokio::task::spawn_blocking(move || {
        to_fingerprint
            .into_iter()
            .map(|(position, entries, tainted)| {
                (position, keyed.fingerprint(entries.iter().map(|(k, v)| (k, v.expose())), tainted))
            })
            .collect::<Vec<_>>()
    });
    let selected = selected_entries(config, &slots, &outputs);
    let jobs: Vec<Job<'_>> = slots
        .iter()
        .zip(&selected)
        .map(|((slot, o, t), selected)| Job {
            slot: *slot,
            target: &config.outputs[*o].targets[*t].kind,
            rendered: match slot {
                Slot::Target { output, .. } => selected.as_ref().or(outputs[*output].as_ref()),
                Slot::Prune => None,
            },
        })
        .collect();
    let started = std::time::Instant::now();
    let mut kinds = KindPlans::plan(input.targets, &jobs, &pass.ctx(), early, options.files_only).await;
    debug!(env, took_ms = started.elapsed().as_millis() as u64, "observed and planned");
    kinds.report_into(&mut report);
    match fingerprints.await {
        Ok(fingerprints) => {
            for (position, fingerprint) in fingerprints {
                report.outputs[position].fingerprint = fingerprint;
            }
        }
        Err(e) => warn!(env, error = %e, "cannot fingerprint the rendered outputs; the history records none"),
    }
    EnvPlan { report, pass, kinds }
}

/// For each slot whose target takes only some entries of its output
/// (`entries`/`exclude`), the rendering with only those; `None` where the
/// target takes the whole rendering (or there is none).
fn selected_entries(
    config: &Config,
    slots: &[(Slot, usize, usize)],
    outputs: &[Option<Rendered>],
) -> Vec<Option<Rendered>> {
    slots
        .iter()
        .map(|(slot, o, t)| {
            let names = config.outputs[*o].targets[*t].selected.as_ref()?;
            let Slot::Target { output, .. } = slot else { return None };
            Some(outputs[*output].as_ref()?.select(names))
        })
        .collect()
}

/// The outputs of `env` this pass renders or plans (config indices).
fn outputs_in_pass(input: &PlanInput<'_, '_>, env: &str) -> BTreeSet<usize> {
    let (config, options) = (input.config, input.options);
    let wanted = |i: &usize| {
        let output = &config.outputs[*i];
        output.envs.iter().any(|e| e == env)
            && options.only_outputs.as_ref().is_none_or(|only| only.contains(i))
            && (!options.files_only || output.targets.iter().any(|t| t.kind.local()))
    };
    (0..config.outputs.len()).filter(wanted).collect()
}

/// Renders the outputs of the pass that may be rendered, in the sandbox.
async fn render(
    input: &PlanInput<'_, '_>,
    snapshot: &Arc<Snapshot>,
    in_pass: &BTreeSet<usize>,
) -> BTreeMap<usize, Result<Rendered, RenderError>> {
    let to_render: Vec<usize> = in_pass.iter().copied().filter(|i| !input.not_rendered.contains_key(i)).collect();
    let started = std::time::Instant::now();
    let results = crate::render::sandbox::Sandbox::global().render(input.templates, snapshot, &to_render).await;
    debug!(env = snapshot.env, outputs = to_render.len(), took_ms = started.elapsed().as_millis() as u64, "rendered");
    to_render.into_iter().zip(results).collect()
}

/// One output's report, and its rendering when it rendered.
fn output_report(
    input: &PlanInput<'_, '_>,
    index: usize,
    result: Option<Result<Rendered, RenderError>>,
    in_pass: bool,
    env: &str,
) -> (OutputReport, Option<Rendered>) {
    let output = &input.config.outputs[index];
    let mut out = OutputReport {
        output: output.name.clone(),
        tainted: input.templates.analysis(index).reads_secrets(),
        error: None,
        skipped: input.not_rendered.get(&index).filter(|_| in_pass).cloned(),
        used: BTreeSet::new(),
        fingerprint: None,
        targets: Vec::new(),
    };
    let ok = match result {
        Some(Ok(r)) => {
            trace!(output = %output.name, env, tainted = r.tainted, reads = r.used.len(), "output rendered");
            out.tainted = r.tainted;
            out.used = r.used.clone();
            Some(r)
        }
        Some(Err(e)) => {
            warn!(output = %output.name, env, error = %e, "rendering failed; this output's targets are not touched");
            out.error = Some(e);
            None
        }
        None => None,
    };
    (out, ok)
}

/// Executes a plan; returns the report of what happened.
pub async fn apply_env(plan: EnvPlan<'_>, fence: Option<&dyn Fence>) -> EnvReport {
    let EnvPlan { mut report, pass, kinds } = plan;
    report.pruned.clear();
    let outcomes = kinds.apply(&pass.ctx(), fence).await;
    record_applied(&mut report, outcomes);
    for t in report.outputs.iter_mut().flat_map(|o| &mut o.targets) {
        t.applied = t.error.is_none();
    }
    report
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
    pub target: &'a TargetKind,
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
/// needed now). A `files_only` pass (`pull`) plans only the
/// [local](crate::targets::Kind::LOCAL) kinds: the others do not even read
/// their records.
async fn plan_kind<'a, K: Registered>(
    kind: &'a K,
    jobs: &[Job<'_>],
    ctx: &Ctx<'_>,
    mut early: Observations<K>,
    files_only: bool,
) -> KindPlan<'a, K> {
    if files_only && !K::LOCAL {
        return KindPlan::empty(kind);
    }
    let Claimed { mut scopes, mut claims, errors } = claim(kind, jobs, ctx);
    if ctx.prune {
        kind.recorded(ctx, &mut scopes);
        for (dest, scope) in kind.recall(ctx).await {
            merge_scope::<K>(&mut scopes, dest, scope);
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

/// What the targets of one kind claim at its destinations.
struct Claimed<'s, K: Target> {
    /// What to observe at each destination.
    scopes: BTreeMap<K::Dest, K::Scope>,
    claims: Claims<'s, K>,
    /// Targets whose items could not be built.
    errors: Vec<(Slot, TargetError)>,
}

/// The items each target of kind `K` wants, and where.
fn claim<'s, K: Registered>(kind: &K, jobs: &[Job<'s>], ctx: &Ctx<'_>) -> Claimed<'s, K> {
    let mut claimed = Claimed { scopes: BTreeMap::new(), claims: BTreeMap::new(), errors: Vec::new() };
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
                    claimed.errors.push((job.slot, e));
                    None
                }
            },
            None => None,
        };
        let mut scope = K::Scope::default();
        let dest = kind.locate(spec, items.as_deref(), ctx, &mut scope);
        merge_scope::<K>(&mut claimed.scopes, dest.clone(), scope);
        claimed.claims.entry(dest).or_default().push(Claim { slot: job.slot, spec, items });
    }
    claimed
}

#[cfg(test)]
mod tests;
