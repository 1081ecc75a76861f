//! One pass: fetch → render → observe → plan → apply, env by env.
//!
//! Failure isolation follows confd and the promises in DESIGN.md:
//! - a source failure for an env stops *every* target of that env (fail
//!   closed: nothing written or removed from a partial snapshot);
//! - a rendering failure (missing key, template error) stops that output
//!   only; the others of the env still converge;
//! - a target failure stops that target only.
//!
//! - Kubernetes objects of one cluster are observed with one LIST per
//!   (namespace, kind) and applied together; clusters run concurrently and
//!   one unreachable cluster fails only its own targets. Pruning happens only
//!   when every env of the pass was read successfully.
//!
//! `cfgsync run` drives passes from the outside through two optional
//! [`PassOptions`] fields: a [`Fence`] asked before each write batch (a
//! file target, a cluster's objects) so that a replica that lost its lease
//! writes nothing more, and a set of target ids to skip (targets backing off
//! after a failure). Each [`TargetReport`] carries a stable
//! [`TargetReport::id`] for that.
//!
//! All envs are fetched first, concurrently, so that "was any source down in
//! this pass?" is known before anything is pruned.
//!
//! The [`Report`] records all of it; `main` turns it into text or JSON and
//! an exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use tracing::{debug, info, trace, warn};

use futures_util::future::join_all;

use crate::config::{Config, FileTarget, KubeTarget, ObjectAddress, ObjectKind, TargetKind};
use crate::format::{self, Format};
use crate::plan::{self, Action, DesiredFile, EntryNames, FileChange};
use crate::render::{RenderError, Rendered, Templates, Use};
use crate::secret::Content;
use crate::source::{Request, Snapshot, SourceError, Sources};
use crate::target::kubernetes::{
    self as kube_target, DesiredObject, Fingerprinter, KubeClients, KubeError, ObjectAction, ObjectChange,
};
use crate::target::{TargetError, file};

/// What a pass should do.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// Only this env; every env when `None`.
    pub env: Option<String>,
    /// Plan only: observe and decide, write nothing.
    pub dry_run: bool,
    /// Only file targets (`pull`: a laptop never writes to clusters).
    pub files_only: bool,
    /// Allow a prune deleting more than `max_prune_share` of a cluster's objects.
    pub allow_mass_prune: bool,
    /// Asked before each write batch; a closed fence fails the target with
    /// [`TargetError::Fenced`] and nothing is written.
    pub fence: Option<Arc<dyn Fence>>,
    /// Target ids ([`TargetReport::id`]) not to touch in this pass; they are
    /// left out of the report.
    pub skip: BTreeSet<String>,
}

/// Whether this process may still write an env's targets (the service's
/// leader election). Must be cheap: it is asked before every write batch.
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// `Err(reason)` when the env's targets must not be written now.
    fn check(&self, env: &str) -> Result<(), String>;
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
    /// Objects deleted (or to delete) because no target claims them any more.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<ObjectChange>,
    /// Prune refusals and failures (mass-prune guard, delete errors).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_display_vec")]
    pub prune_errors: Vec<KubeError>,
}

#[derive(Debug, Serialize)]
pub struct OutputReport {
    pub output: String,
    pub tainted: bool,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_display_opt")]
    pub error: Option<RenderError>,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// See [`target_id`].
    pub id: String,
    pub kind: &'static str,
    /// The file or directory, or the object as `context/namespace/name`.
    pub address: String,
    pub changes: Vec<Change>,
    /// True when the changes were written (not a dry run, no failure).
    pub applied: bool,
    pub reloaded: bool,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_display_opt")]
    pub error: Option<TargetError>,
}

/// One planned change, of a file or of a Kubernetes object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Change {
    File(FileChange),
    Object(Box<ObjectChange>),
}

impl Change {
    /// The action's name, for counting.
    pub fn action_name(&self) -> &'static str {
        match self {
            Change::File(c) => match c.action {
                Action::Create => "create",
                Action::Update => "update",
                Action::Unchanged => "unchanged",
            },
            Change::Object(c) => object_action_name(c.action),
        }
    }
}

fn object_action_name(a: ObjectAction) -> &'static str {
    match a {
        ObjectAction::Create => "create",
        ObjectAction::Update => "update",
        ObjectAction::Drift => "drift",
        ObjectAction::Delete => "delete",
        ObjectAction::Unchanged => "unchanged",
    }
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
        self.envs.iter().any(|e| {
            e.source_error.is_some()
                || !e.prune_errors.is_empty()
                || e.outputs.iter().any(|o| o.error.is_some() || o.targets.iter().any(|t| t.error.is_some()))
        })
    }

    /// Counts of changes by action, for the summary line.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for t in self.envs.iter().flat_map(|e| &e.outputs).flat_map(|o| &o.targets) {
            for c in &t.changes {
                *counts.entry(c.action_name()).or_default() += 1;
            }
        }
        for p in self.envs.iter().flat_map(|e| &e.pruned) {
            *counts.entry(object_action_name(p.action)).or_default() += 1;
        }
        counts
    }
}

/// Runs one pass over the selected envs.
pub async fn run_pass(
    config: &Config,
    templates: &Templates,
    sources: &Sources,
    kube: &KubeClients,
    options: &PassOptions,
) -> Report {
    let envs: Vec<&String> = config.envs.iter().filter(|env| options.env.as_ref().is_none_or(|e| e == *env)).collect();
    let requests: Vec<Request> = envs.iter().map(|env| request(config, templates, env)).collect();
    let fetched = join_all(requests.iter().map(|r| sources.fetch(r))).await;
    let prune_allowed = fetched.iter().all(Result::is_ok);
    let mut report = Report::default();
    for (env, snapshot) in envs.into_iter().zip(fetched) {
        let env_report = match snapshot {
            Ok(s) => run_env(config, templates, kube, Arc::new(s), prune_allowed, options).await,
            Err(e) => {
                warn!(env, source = %e.kind(), error = %e, "source failed; no target of this env is touched");
                EnvReport {
                    env: env.clone(),
                    revision: None,
                    source_error: Some(e),
                    outputs: Vec::new(),
                    pruned: Vec::new(),
                    prune_errors: Vec::new(),
                }
            }
        };
        report.envs.push(env_report);
    }
    report
}

/// What the sources must provide for `env`: every secret path its
/// templates name, and the fingerprint key when it has Kubernetes targets.
fn request(config: &Config, templates: &Templates, env: &str) -> Request {
    let mut secret_paths = templates.secret_paths(env);
    if let Some((path, _)) = &config.kubernetes.fingerprint_key
        && kube_targets(config, env).next().is_some()
    {
        secret_paths.insert(path.clone());
    }
    Request { env: env.to_owned(), secret_paths }
}

/// Every Kubernetes target of the outputs rendered for `env`.
fn kube_targets<'a>(config: &'a Config, env: &'a str) -> impl Iterator<Item = (&'a str, &'a KubeTarget)> {
    config.outputs.iter().filter(move |o| o.envs.iter().any(|e| e == env)).flat_map(|o| {
        o.targets.iter().filter_map(move |t| match &t.kind {
            TargetKind::Kubernetes(k) => Some((o.name.as_str(), k)),
            TargetKind::File(_) => None,
        })
    })
}

fn fingerprinter(config: &Config, snapshot: &Snapshot) -> Fingerprinter {
    let key = config
        .kubernetes
        .fingerprint_key
        .as_ref()
        .and_then(|(path, field)| snapshot.secrets.get(path)?.fields.get(field).cloned());
    Fingerprinter::new(key)
}

/// A Kubernetes object waiting for its cluster's turn: where its report goes.
struct PendingObject {
    output: usize,
    target: usize,
    desired: DesiredObject,
}

async fn run_env(
    config: &Config,
    templates: &Templates,
    kube: &KubeClients,
    snapshot: Arc<Snapshot>,
    prune_allowed: bool,
    options: &PassOptions,
) -> EnvReport {
    let env = snapshot.env.clone();
    let revision = snapshot.revision;
    debug!(env, revision, keys = snapshot.keys.len(), secrets = snapshot.secrets.len(), "snapshot read");
    let fp = fingerprinter(config, &snapshot);
    let indices: Vec<usize> = (0..config.outputs.len()).filter(|i| config.outputs[*i].envs.contains(&env)).collect();
    let results = crate::render::sandbox::Sandbox::global().render(templates, &snapshot, &indices).await;
    let mut outputs = Vec::new();
    let mut pending = Vec::new();
    for (index, result) in indices.into_iter().zip(results) {
        let output = &config.outputs[index];
        let rendered = match result {
            Ok(r) => {
                trace!(output = %output.name, env, tainted = r.tainted, reads = r.used.len(), "output rendered");
                r
            }
            Err(e) => {
                warn!(output = %output.name, env, error = %e, "rendering failed; this output's targets are not touched");
                outputs.push(OutputReport {
                    output: output.name.clone(),
                    tainted: false,
                    error: Some(e),
                    targets: Vec::new(),
                });
                continue;
            }
        };
        let mut targets = Vec::new();
        for (index, target) in output.targets.iter().enumerate() {
            let id = target_id(&env, &output.name, index);
            if options.skip.contains(&id) {
                continue;
            }
            match &target.kind {
                TargetKind::File(f) => {
                    let mut report = file_target(f, &rendered, options.dry_run, options.fence.as_deref()).await;
                    report.id = id;
                    targets.push(report);
                }
                TargetKind::Kubernetes(_) if options.files_only => {}
                TargetKind::Kubernetes(k) => {
                    let address = &k.addresses[&env];
                    let mut report = TargetReport {
                        id,
                        kind: k.object.kind_name(),
                        address: format!("{}/{}/{}", address.context, address.namespace, address.name),
                        changes: Vec::new(),
                        applied: false,
                        reloaded: false,
                        error: None,
                    };
                    match desired_object(k, address, &rendered, revision, &fp) {
                        Ok(desired) => {
                            pending.push(PendingObject { output: outputs.len(), target: targets.len(), desired })
                        }
                        Err(e) => report.error = Some(e.into()),
                    }
                    targets.push(report);
                }
            }
        }
        outputs.push(OutputReport { output: output.name.clone(), tainted: rendered.tainted, error: None, targets });
    }
    let mut report = EnvReport {
        env: env.clone(),
        revision,
        source_error: None,
        outputs,
        pruned: Vec::new(),
        prune_errors: Vec::new(),
    };
    if !options.files_only && kube_targets(config, &env).next().is_some() {
        kube_phase(config, kube, &env, pending, prune_allowed, options, &fp, &mut report).await;
    }
    report
}

/// Builds the object a Kubernetes target wants, refusing what must never
/// be written: secret content in a ConfigMap, an unkeyed fingerprint of
/// secret content, an object over the size limit.
fn desired_object(
    k: &KubeTarget,
    address: &ObjectAddress,
    rendered: &Rendered,
    revision: Option<i64>,
    fp: &Fingerprinter,
) -> Result<DesiredObject, KubeError> {
    if k.object == ObjectKind::ConfigMap && rendered.tainted {
        let secret = rendered
            .used
            .iter()
            .find_map(|u| match u {
                Use::Secret(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap_or_default();
        return Err(KubeError::TaintedConfigMap {
            output: rendered.output.clone(),
            secret,
            context: address.context.clone(),
            namespace: address.namespace.clone(),
            name: address.name.clone(),
        });
    }
    let fingerprint = fp
        .fingerprint(rendered.entries.iter().map(|(k, v)| (k, v.expose())), rendered.tainted)
        .ok_or_else(|| KubeError::NoFingerprintKey { output: rendered.output.clone(), detail: String::new() })?;
    let desired = DesiredObject {
        kind: k.object,
        address: address.clone(),
        output: rendered.output.clone(),
        env: rendered.env.clone(),
        data: rendered.entries.clone(),
        tainted: rendered.tainted,
        labels: k.labels.clone(),
        annotations: k.annotations.clone(),
        secret_type: k.secret_type.clone(),
        restart: k.restart.clone(),
        revision: revision.map_or_else(|| "file".to_owned(), |r| r.to_string()),
        fingerprint,
    };
    kube_target::check_size(&desired)?;
    Ok(desired)
}

/// What one cluster's turn produced.
struct ClusterOutcome {
    /// (output, target) → change or error.
    results: Vec<((usize, usize), Result<ObjectChange, KubeError>)>,
    pruned: Vec<ObjectChange>,
    prune_errors: Vec<KubeError>,
}

/// Observes, plans and applies every cluster of one env, concurrently.
#[allow(clippy::too_many_arguments)]
async fn kube_phase(
    config: &Config,
    kube: &KubeClients,
    env: &str,
    pending: Vec<PendingObject>,
    prune_allowed: bool,
    options: &PassOptions,
    fp: &Fingerprinter,
    report: &mut EnvReport,
) {
    // Every (context → namespaces/kinds) the config targets for this env,
    // whether or not its output rendered: those are the places we own.
    let mut scope: BTreeMap<&str, std::collections::BTreeSet<(String, ObjectKind)>> = BTreeMap::new();
    for (_, k) in kube_targets(config, env) {
        let a = &k.addresses[env];
        scope.entry(a.context.as_str()).or_default().insert((a.namespace.clone(), k.object));
    }
    let mut by_context: BTreeMap<&str, Vec<PendingObject>> = BTreeMap::new();
    for p in pending {
        let context: &str = scope.keys().find(|c| **c == p.desired.address.context).copied().unwrap_or_default();
        by_context.entry(context).or_default().push(p);
    }
    let claimed = |o: &kube_target::LiveObject, context: &str| {
        kube_targets(config, env).any(|(_, k)| {
            let a = &k.addresses[env];
            k.object == o.kind && a.context == context && a.namespace == o.namespace && a.name == o.name
        })
    };
    let clusters = scope.iter().map(|(context, places)| {
        let objects = by_context.remove(context).unwrap_or_default();
        cluster_pass(
            kube,
            context,
            places,
            objects,
            env,
            prune_allowed,
            options,
            config.kubernetes.max_prune_share,
            &claimed,
            fp,
        )
    });
    let outcomes = join_all(clusters.collect::<Vec<_>>()).await;
    for outcome in outcomes {
        for ((o, t), result) in outcome.results {
            let target = &mut report.outputs[o].targets[t];
            match result {
                Ok(change) => {
                    target.applied = !options.dry_run;
                    target.changes.push(Change::Object(Box::new(change)));
                }
                Err(e) => target.error = Some(e.into()),
            }
        }
        report.pruned.extend(outcome.pruned);
        report.prune_errors.extend(outcome.prune_errors);
    }
}

#[allow(clippy::too_many_arguments)]
async fn cluster_pass(
    kube: &KubeClients,
    context: &str,
    places: &std::collections::BTreeSet<(String, ObjectKind)>,
    objects: Vec<PendingObject>,
    env: &str,
    prune_allowed: bool,
    options: &PassOptions,
    max_prune_share: f64,
    claimed: &(dyn Fn(&kube_target::LiveObject, &str) -> bool + Sync),
    fp: &Fingerprinter,
) -> ClusterOutcome {
    let mut outcome = ClusterOutcome { results: Vec::new(), pruned: Vec::new(), prune_errors: Vec::new() };
    let fail_all = |outcome: &mut ClusterOutcome, objects: Vec<PendingObject>, e: KubeError| {
        warn!(context, env, error = %e, "cluster failed; its targets are not touched");
        for p in objects {
            outcome.results.push(((p.output, p.target), Err(e.clone())));
        }
    };
    let client = match kube.client(context).await {
        Ok(c) => c,
        Err(e) => {
            fail_all(&mut outcome, objects, e);
            return outcome;
        }
    };
    let mut live = Vec::new();
    for (namespace, kind) in places {
        match kube_target::list(&client, context, namespace, *kind, env).await {
            Ok(items) => live.extend(items),
            Err(e) => {
                fail_all(&mut outcome, objects, e);
                return outcome;
            }
        }
    }
    let mut changes = Vec::new();
    for p in objects {
        let current = live.iter().find(|l| {
            l.kind == p.desired.kind && l.namespace == p.desired.address.namespace && l.name == p.desired.address.name
        });
        changes.push(((p.output, p.target), kube_target::plan_object(&p.desired, current, fp)));
    }
    let mut prunes =
        if prune_allowed { kube_target::plan_prune(&live, &|o| claimed(o, context), context) } else { Vec::new() };
    if !prunes.is_empty() && !options.allow_mass_prune {
        let share = prunes.len() as f64 / live.len().max(1) as f64;
        if share > max_prune_share {
            outcome.prune_errors.push(KubeError::MassPrune {
                context: context.to_owned(),
                deletes: prunes.len(),
                total: live.len(),
                share: share * 100.0,
                max: max_prune_share * 100.0,
            });
            prunes.clear();
        }
    }
    if options.dry_run {
        outcome.results = changes.into_iter().map(|(k, c)| (k, Ok(c))).collect();
        outcome.pruned = prunes;
        return outcome;
    }
    let needs_write = !prunes.is_empty() || changes.iter().any(|(_, c)| c.action != ObjectAction::Unchanged);
    if needs_write && let Some(Err(reason)) = options.fence.as_ref().map(|f| f.check(env)) {
        warn!(context, env, reason, "not written: fenced");
        let fenced = KubeError::Fenced { env: env.to_owned(), reason };
        outcome.results = changes.into_iter().map(|(k, _)| (k, Err(fenced.clone()))).collect();
        return outcome;
    }
    // Apply: writes first, then restarts of what really changed, then deletes.
    for (key, change) in changes {
        let result = apply_object(&client, change).await;
        outcome.results.push((key, result));
    }
    for p in prunes {
        match kube_target::delete(&client, &p).await {
            Ok(()) => {
                info!(context, env, kind = %p.kind, namespace = %p.namespace, name = %p.name, "pruned");
                outcome.pruned.push(p);
            }
            Err(e) => outcome.prune_errors.push(e),
        }
    }
    outcome
}

/// Applies one planned change (and rolls its workloads when the content changed).
async fn apply_object(client: &kube::Client, change: ObjectChange) -> Result<ObjectChange, KubeError> {
    let Some(desired) = change.desired.as_ref() else { return Ok(change) };
    match change.action {
        ObjectAction::Unchanged | ObjectAction::Delete => return Ok(change),
        ObjectAction::Drift => warn!(
            context = %change.context, kind = %change.kind, namespace = %change.namespace, name = %change.name,
            keys = %change.keys.join(","), "drift: object edited in the cluster; restoring"
        ),
        ObjectAction::Create | ObjectAction::Update => {}
    }
    kube_target::apply(client, desired).await?;
    info!(context = %change.context, kind = %change.kind, namespace = %change.namespace, name = %change.name, action = ?change.action, "object applied");
    if !change.metadata_only {
        for r in &desired.restart {
            kube_target::restart(client, desired, r).await?;
            info!(context = %change.context, namespace = %change.namespace, workload = %r.kind, name = %r.name, "workload restarted");
        }
    }
    Ok(change)
}

/// The mode a file gets: explicit, else 0600 when it holds secrets.
fn file_mode(target: &FileTarget, tainted: bool) -> u32 {
    target.mode.unwrap_or(if tainted { 0o600 } else { 0o644 })
}

/// The files a file target needs for a rendered output (several for `dir`).
pub fn desired_files(
    target: &FileTarget,
    path: &std::path::Path,
    rendered: &Rendered,
) -> Result<Vec<DesiredFile>, TargetError> {
    let mode = file_mode(target, rendered.tainted);
    let encode_err = |source| TargetError::Encode { path: path.display().to_string(), source };
    Ok(match target.format {
        Format::Dir => {
            let mut files = Vec::new();
            for (name, content) in &rendered.entries {
                format::check_file_name(name)
                    .map_err(|reason| encode_err(format::FormatError::UnsafeFileName { name: name.clone(), reason }))?;
                files.push(DesiredFile { path: path.join(name), content: content.clone(), mode });
            }
            files
        }
        Format::Raw => match rendered.entries.values().next() {
            Some(content) if rendered.entries.len() == 1 => {
                vec![DesiredFile { path: path.to_path_buf(), content: content.clone(), mode }]
            }
            _ => return Err(encode_err(format::FormatError::RawNeedsOneEntry { count: rendered.entries.len() })),
        },
        other => {
            // The text formats need text; templates always produce it.
            let mut text = BTreeMap::new();
            for (name, content) in &rendered.entries {
                let value = content
                    .expose_str()
                    .ok_or_else(|| encode_err(format::FormatError::NotText { name: name.clone() }))?;
                text.insert(name.clone(), value.to_owned());
            }
            let encoded = format::encode(other, target.dialect, &text).map_err(encode_err)?;
            vec![DesiredFile { path: path.to_path_buf(), content: Content::new(encoded, rendered.tainted), mode }]
        }
    })
}

/// Decodes an observed file back into entries, where the format allows, so
/// a plan can name the entries that changed without showing values.
pub fn decode_entries(format: Format, content: &[u8]) -> Option<BTreeMap<String, String>> {
    let text = std::str::from_utf8(content).ok()?;
    match format {
        Format::Dotenv => format::decode_dotenv(text).ok(),
        Format::Json => serde_json::from_str(text).ok(),
        Format::Yaml | Format::Raw | Format::Dir => None,
    }
}

async fn file_target(
    target: &FileTarget,
    rendered: &Rendered,
    dry_run: bool,
    fence: Option<&dyn Fence>,
) -> TargetReport {
    let path = target.paths[&rendered.env].clone();
    let mut report = TargetReport {
        id: String::new(),
        kind: "file",
        address: path.display().to_string(),
        changes: Vec::new(),
        applied: false,
        reloaded: false,
        error: None,
    };
    let desired = match desired_files(target, &path, rendered) {
        Ok(d) => d,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let mut changes = Vec::new();
    for d in desired {
        let observed = match file::observe(&d.path) {
            Ok(o) => o,
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        };
        let entries = match target.format {
            Format::Dir => None,
            f => Some(EntryNames {
                new: &rendered.entries,
                old: observed.as_ref().and_then(|o| decode_entries(f, &o.content)),
            }),
        };
        changes.push(plan::plan_file(d, observed.as_ref(), rendered.tainted, entries));
    }
    let needs_write = changes.iter().any(|c| c.action != Action::Unchanged);
    let fenced = match fence {
        Some(f) if !dry_run && needs_write => f.check(&rendered.env).err(),
        _ => None,
    };
    if let Some(reason) = fenced {
        warn!(output = %rendered.output, env = %rendered.env, path = %path.display(), reason, "not written: fenced");
        report.error = Some(TargetError::Fenced { env: rendered.env.clone(), reason });
    } else if !dry_run {
        let mut changed = false;
        for change in &changes {
            let result = match (change.action, change.content_changed) {
                (Action::Unchanged, _) => continue,
                (_, true) => file::write(&change.desired, target.check_cmd.as_deref(), rendered.tainted).await,
                (_, false) => file::chmod(&change.desired.path, change.desired.mode),
            };
            if let Err(e) = result {
                warn!(output = %rendered.output, env = %rendered.env, path = %change.path.display(), error = %e, "write failed");
                report.error = Some(e);
                break;
            }
            info!(output = %rendered.output, env = %rendered.env, path = %change.path.display(), action = ?change.action, "file written");
            changed |= change.content_changed;
        }
        if report.error.is_none() {
            report.applied = true;
            if changed && let Some(cmd) = &target.reload_cmd {
                match file::reload(cmd, &path, rendered.tainted).await {
                    Ok(()) => report.reloaded = true,
                    Err(e) => report.error = Some(e),
                }
            }
        }
    }
    report.changes = changes.into_iter().map(Change::File).collect();
    report
}
