//! One pass: fetch → render → observe → plan → apply, env by env.
//!
//! Failure isolation follows confd and the promises in DESIGN.md:
//! - a source failure for an env stops *every* target of that env (fail
//!   closed: nothing written or removed from a partial snapshot);
//! - a rendering failure (missing key, template error) stops that output
//!   only; the others of the env still converge;
//! - a target failure stops that target only.
//!
//! The [`Report`] records all of it; `main` turns it into text or JSON and
//! an exit code.
//!
//! `cfgsync run` drives passes from the outside through two optional
//! [`PassOptions`] fields: a [`Fence`] asked before each target's write
//! batch (leadership: a replica that lost its lease writes nothing more), and
//! a set of target ids to skip (targets backing off after a failure). Each
//! [`TargetReport`] carries a stable [`TargetReport::id`] for that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tracing::{debug, info, trace, warn};

use crate::config::{Config, FileTarget, TargetKind};
use crate::format::{self, Format};
use crate::plan::{self, Action, DesiredFile, EntryNames, FileChange};
use crate::render::{RenderError, Rendered, Templates};
use crate::source::{Request, SourceError, Sources};
use crate::target::{TargetError, file};

/// What a pass should do.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// Only this env; every env when `None`.
    pub env: Option<String>,
    /// Plan only: observe and decide, write nothing.
    pub dry_run: bool,
    /// Asked before each target's write batch; a closed fence fails the
    /// target with [`TargetError::Fenced`] and nothing is written.
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
    /// The file or directory written.
    pub path: PathBuf,
    pub changes: Vec<FileChange>,
    /// True when the changes were written (not a dry run, no failure).
    pub applied: bool,
    pub reloaded: bool,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_display_opt")]
    pub error: Option<TargetError>,
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
                || e.outputs.iter().any(|o| o.error.is_some() || o.targets.iter().any(|t| t.error.is_some()))
        })
    }

    /// Counts of changes by action, for the summary line.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for t in self.envs.iter().flat_map(|e| &e.outputs).flat_map(|o| &o.targets) {
            for c in &t.changes {
                let name = match c.action {
                    Action::Create => "create",
                    Action::Update => "update",
                    Action::Unchanged => "unchanged",
                };
                *counts.entry(name).or_default() += 1;
            }
        }
        counts
    }
}

/// Runs one pass over the selected envs.
pub async fn run_pass(config: &Config, templates: &Templates, sources: &Sources, options: &PassOptions) -> Report {
    let mut report = Report::default();
    for env in &config.envs {
        if options.env.as_ref().is_some_and(|e| e != env) {
            continue;
        }
        report.envs.push(run_env(config, templates, sources, env, options).await);
    }
    report
}

async fn run_env(
    config: &Config,
    templates: &Templates,
    sources: &Sources,
    env: &str,
    options: &PassOptions,
) -> EnvReport {
    let request = Request { env: env.to_owned(), secret_paths: templates.secret_paths(env) };
    let snapshot = match sources.fetch(&request).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(env, source = %e.kind(), error = %e, "source failed; no target of this env is touched");
            return EnvReport { env: env.to_owned(), revision: None, source_error: Some(e), outputs: Vec::new() };
        }
    };
    let revision = snapshot.revision;
    debug!(env, revision, keys = snapshot.keys.len(), secrets = snapshot.secrets.len(), "snapshot read");
    let renderer = templates.for_snapshot(snapshot);
    let mut outputs = Vec::new();
    for (index, output) in config.outputs.iter().enumerate() {
        if !output.envs.iter().any(|e| e == env) {
            continue;
        }
        let rendered = match renderer.render(index) {
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
            let id = target_id(env, &output.name, index);
            if options.skip.contains(&id) {
                continue;
            }
            let mut report = match &target.kind {
                TargetKind::File(f) => file_target(f, &rendered, options.dry_run, options.fence.as_deref()).await,
            };
            report.id = id;
            targets.push(report);
        }
        outputs.push(OutputReport { output: output.name.clone(), tainted: rendered.tainted, error: None, targets });
    }
    EnvReport { env: env.to_owned(), revision, source_error: None, outputs }
}

/// The mode a file gets: explicit, else 0600 when it holds secrets.
fn file_mode(target: &FileTarget, tainted: bool) -> u32 {
    target.mode.unwrap_or(if tainted { 0o600 } else { 0o644 })
}

fn desired_files(
    target: &FileTarget,
    path: &std::path::Path,
    rendered: &Rendered,
) -> Result<Vec<DesiredFile>, TargetError> {
    let mode = file_mode(target, rendered.tainted);
    let encode_err = |source| TargetError::Encode { path: path.display().to_string(), source };
    Ok(match target.format {
        Format::Dir => format::encode_dir(&rendered.entries)
            .map_err(encode_err)?
            .into_iter()
            .map(|(name, content)| DesiredFile { path: path.join(name), content, mode })
            .collect(),
        other => {
            let content = format::encode(other, &rendered.entries).map_err(encode_err)?;
            vec![DesiredFile { path: path.to_path_buf(), content, mode }]
        }
    })
}

/// Decodes an observed file back into entries, where the format allows, so
/// a plan can name the entries that changed without showing values.
fn decode_entries(format: Format, content: &[u8]) -> Option<BTreeMap<String, String>> {
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
        path: path.clone(),
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
        report.changes.push(plan::plan_file(d, observed.as_ref(), rendered.tainted, entries));
    }
    if dry_run {
        return report;
    }
    if report.changes.iter().any(|c| c.action != Action::Unchanged)
        && let Some(Err(reason)) = fence.map(|f| f.check(&rendered.env))
    {
        warn!(output = %rendered.output, env = %rendered.env, path = %path.display(), reason, "not written: fenced");
        report.error = Some(TargetError::Fenced { env: rendered.env.clone(), reason });
        return report;
    }
    let mut changed = false;
    for change in &report.changes {
        let result = match (change.action, change.content_changed) {
            (Action::Unchanged, _) => continue,
            (_, true) => file::write(&change.desired, target.check_cmd.as_deref(), rendered.tainted).await,
            (_, false) => file::chmod(&change.desired.path, change.desired.mode),
        };
        if let Err(e) = result {
            warn!(output = %rendered.output, env = %rendered.env, path = %change.path.display(), error = %e, "write failed");
            report.error = Some(e);
            return report;
        }
        info!(output = %rendered.output, env = %rendered.env, path = %change.path.display(), action = ?change.action, "file written");
        changed |= change.content_changed;
    }
    report.applied = true;
    if changed && let Some(cmd) = &target.reload_cmd {
        match file::reload(cmd, &path, rendered.tainted).await {
            Ok(()) => report.reloaded = true,
            Err(e) => report.error = Some(e),
        }
    }
    report
}
