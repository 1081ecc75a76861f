//! `cfgsync pull --env E`: make local files look like env E, with your own credentials.
//!
//! Renders every output of env E that has a `file` target and writes it
//! (atomically; 0600 when the output read a secret — [`crate::target::file`]).
//! Before writing, every file's change is shown: a unified diff for outputs
//! that read no secret, keyed fingerprints ([`crate::fingerprint`]) per
//! changed entry for the others. `--dry-run` stops there.
//!
//! Decisions:
//! - **Reads are per secret path**, so a denial names exactly the path and
//!   the source's reason, and says which outputs need it
//!   ([`super::inventory`]).
//! - **Denied means nothing is written** unless `--allow-partial`: a laptop
//!   with half its files from prod and half stale is worse than an error.
//!   With `--allow-partial`, outputs that need no denied read are written
//!   and the others are skipped by name (exit 0: that is what was asked).
//!   An output is never written half-rendered: an output that needs a
//!   denied secret is not rendered at all, and when the env's keys are
//!   denied no output is (`key_or`/`exists` would silently render defaults).
//! - **Other failures are isolated per output**, as in a reconcile pass: a
//!   missing key fails its output (exit 1); the others are still written.
//! - The same pure plan as `reconcile` ([`crate::plan::plan_file`]) decides
//!   create/update/unchanged, and `check_cmd`/`reload_cmd` behave as there,
//!   so `pull` and the service never disagree about a file.
//! - Progress on stderr only on a terminal and only when slow
//!   ([`super::terminal::Progress`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::inventory::{Clients, Denial, SecretScope, read_env};
use super::terminal::{Progress, Style};
use super::{CmdError, Context, as_file, check_env, display_path, outputs_for};
use crate::cli::{OutputFormat, PullArgs};
use crate::config::FileTarget;
use crate::fingerprint::Fingerprinter;
use crate::format::Format;
use crate::plan::{self, Action, DesiredFile, EntryNames, FileChange, ObservedFile};
use crate::reconcile::{decode_entries, desired_files};
use crate::render::Rendered;
use crate::target::{TargetError, file};

/// What `pull` did, for text and JSON.
#[derive(Debug, Serialize)]
pub struct PullReport {
    pub env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub dry_run: bool,
    pub outputs: Vec<OutputPull>,
    /// Every read the caller's role does not allow, with the outputs needing it.
    pub denied: Vec<DeniedRead>,
}

#[derive(Debug, Serialize)]
pub struct OutputPull {
    pub output: String,
    pub status: OutputStatus,
    pub tainted: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub files: Vec<FilePull>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStatus {
    /// Rendered; its files were (or, in a dry run, would be) written.
    Rendered,
    /// Needs a read the role does not allow: not rendered, not written.
    Skipped,
    /// Rendering or encoding failed: not written.
    Failed,
}

#[derive(Debug, Serialize)]
pub struct FilePull {
    pub path: PathBuf,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Unified diff, only for outputs that read no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Changed entries of a secret output, by keyed fingerprint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<EntryFingerprint>,
    pub written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    change: Option<FileChange>,
    /// Which of the output's targets this file belongs to.
    #[serde(skip)]
    target: usize,
}

/// `entry`: fingerprint before → after (`None`: absent). Valid for this run only.
#[derive(Debug, Serialize)]
pub struct EntryFingerprint {
    pub entry: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeniedRead {
    pub source: String,
    pub path: String,
    pub role: String,
    pub reason: String,
    pub needed_by: Vec<String>,
    #[serde(skip)]
    message: String,
}

/// Fingerprints of what changes in a secret file: per entry when the old
/// file can be decoded, else of the whole content (named after the file).
fn fingerprint_changes(
    fp: &Fingerprinter,
    format: Format,
    desired: &DesiredFile,
    observed: Option<&ObservedFile>,
    rendered: &Rendered,
) -> Vec<EntryFingerprint> {
    let show = |v: Option<&[u8]>| v.map(|b| fp.of(b).to_string());
    if format != Format::Dir
        && format != Format::Raw
        && format != Format::Yaml
        && let Some(old) = match observed {
            None => Some(BTreeMap::new()),
            Some(o) => decode_entries(format, &o.content),
        }
    {
        let names: BTreeSet<&String> = rendered.entries.keys().chain(old.keys()).collect();
        return names
            .into_iter()
            .filter(|n| old.get(*n).map(String::as_bytes) != rendered.entries.get(*n).map(|c| c.expose()))
            .map(|n| EntryFingerprint {
                entry: n.clone(),
                old: show(old.get(n).map(|s| s.as_bytes())),
                new: show(rendered.entries.get(n).map(|c| c.expose())),
            })
            .collect();
    }
    let name = desired.path.file_name().map_or_else(|| "content".to_owned(), |n| n.to_string_lossy().into_owned());
    let old = observed.map(|o| o.content.as_slice());
    if old == Some(desired.content.expose()) {
        return Vec::new();
    }
    vec![EntryFingerprint { entry: name, old: show(old), new: show(Some(desired.content.expose())) }]
}

fn unified(old: &[u8], new: &str, path: &str) -> String {
    let old = String::from_utf8_lossy(old);
    similar::TextDiff::from_lines(old.as_ref(), new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// Plans one file target of a rendered output.
fn plan_target(
    target: &FileTarget,
    target_index: usize,
    rendered: &Rendered,
    fp: &Fingerprinter,
) -> Result<Vec<FilePull>, TargetError> {
    let path = &target.paths[&rendered.env];
    let mut files = Vec::new();
    for desired in desired_files(target, path, rendered)? {
        let observed = file::observe(&desired.path)?;
        let entries = match target.format {
            Format::Dir => None,
            f => Some(EntryNames {
                new: &rendered.entries,
                old: observed.as_ref().and_then(|o| decode_entries(f, &o.content)),
            }),
        };
        let fingerprints = if rendered.tainted {
            fingerprint_changes(fp, target.format, &desired, observed.as_ref(), rendered)
        } else {
            Vec::new()
        };
        let change = plan::plan_file(desired, observed.as_ref(), rendered.tainted, entries);
        let shown_path = display_path(&change.path);
        let diff = (!rendered.tainted && change.content_changed)
            .then(|| {
                let new = change.desired.content.shown()?;
                Some(unified(observed.as_ref().map_or(&[][..], |o| o.content.as_slice()), &new, &shown_path))
            })
            .flatten();
        let mode = change.mode_change.map(|(old, new)| match old {
            Some(o) => format!("{o:04o} → {new:04o}"),
            None => format!("{new:04o}"),
        });
        files.push(FilePull {
            path: change.path.clone(),
            action: change.action,
            mode,
            diff,
            fingerprints,
            written: false,
            error: None,
            change: Some(change),
            target: target_index,
        });
    }
    Ok(files)
}

/// `cfgsync pull --env E`.
pub async fn run(ctx: &Context<'_>, args: &PullArgs) -> Result<ExitCode, CmdError> {
    let env = args.env.as_str();
    check_env(ctx.config, env)?;
    let fp = Fingerprinter::new()?;
    let clients = Clients::new(ctx.config);
    let outputs: Vec<_> =
        outputs_for(ctx.config, env).filter(|(_, o)| o.targets.iter().any(|t| as_file(&t.kind).is_some())).collect();
    let paths: BTreeSet<String> =
        outputs.iter().flat_map(|(i, _)| ctx.templates.analysis(*i).secret_paths.iter().cloned()).collect();

    let progress = Progress::start((paths.len() + outputs.len()) as u64, &format!("pull {env}: reading"));
    let inventory = match read_env(&clients, env, &SecretScope::Paths(paths.clone()), &paths, &|| progress.inc()).await
    {
        Ok(i) => i,
        Err(e) => {
            drop(progress);
            eprintln!("error: env {env}: {}", crate::source::vault_admin::one_line(&e.to_string()));
            return Ok(ExitCode::from(1));
        }
    };
    progress.set_message(&format!("pull {env}: rendering"));
    let renderer = ctx.templates.for_snapshot(Arc::new(inventory.snapshot()));

    let mut report = PullReport {
        env: env.to_owned(),
        revision: inventory.revision(),
        dry_run: args.dry_run,
        outputs: Vec::new(),
        denied: Vec::new(),
    };
    let mut denied: Vec<(&Denial, Vec<String>)> = Vec::new();
    // What will be written, once every output is planned.
    let mut writable: Vec<Writable<'_>> = Vec::new();
    for (index, output) in &outputs {
        progress.inc();
        let blockers = inventory.blockers(ctx.templates.analysis(*index));
        let mut pull = OutputPull {
            output: output.name.clone(),
            status: OutputStatus::Rendered,
            tainted: ctx.templates.analysis(*index).reads_secrets(),
            needs: Vec::new(),
            error: None,
            files: Vec::new(),
        };
        if !blockers.is_empty() {
            pull.status = OutputStatus::Skipped;
            for d in blockers {
                pull.needs.push(d.path.clone());
                match denied.iter_mut().find(|(x, _)| std::ptr::eq(*x, d)) {
                    Some((_, by)) => by.push(output.name.clone()),
                    None => denied.push((d, vec![output.name.clone()])),
                }
            }
            report.outputs.push(pull);
            continue;
        }
        let rendered = match renderer.render(*index) {
            Ok(r) => r,
            Err(e) => {
                pull.status = OutputStatus::Failed;
                pull.error = Some(e.to_string());
                report.outputs.push(pull);
                continue;
            }
        };
        pull.tainted = rendered.tainted;
        for (t, target) in output.targets.iter().enumerate() {
            let Some(f) = as_file(&target.kind) else { continue };
            match plan_target(f, t, &rendered, &fp) {
                Ok(files) => pull.files.extend(files),
                Err(e) => {
                    pull.status = OutputStatus::Failed;
                    pull.error = Some(e.to_string());
                    pull.files.clear();
                    break;
                }
            }
        }
        if pull.status == OutputStatus::Rendered {
            for (t, target) in output.targets.iter().enumerate() {
                if let Some(f) = as_file(&target.kind) {
                    writable.push(Writable {
                        at: report.outputs.len(),
                        target: t,
                        file: f,
                        rendered: rendered.clone(),
                    });
                }
            }
        }
        report.outputs.push(pull);
    }
    report.denied = denied
        .iter()
        .map(|(d, by)| DeniedRead {
            source: d.kind.to_string(),
            path: d.path.clone(),
            role: d.role.clone(),
            reason: d.reason(),
            needed_by: by.clone(),
            message: crate::source::vault_admin::one_line(&d.error.to_string()),
        })
        .collect();
    drop(progress);

    let blocked = !report.denied.is_empty() && !args.allow_partial;
    let mut failed = report.outputs.iter().any(|o| o.status == OutputStatus::Failed);
    if !args.dry_run && !blocked {
        failed |= write_all(&mut report, &writable).await;
    }

    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Text => print_text(&report, blocked, Style::detect(), &mut out)?,
    }
    out.flush()?;
    print_errors(&report, blocked, args.allow_partial, &mut io::stderr())?;
    Ok(if blocked || failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// One file target of a rendered output, to be written.
struct Writable<'a> {
    /// Index of the output in the report.
    at: usize,
    /// Index of the target in the output's targets.
    target: usize,
    file: &'a FileTarget,
    rendered: Rendered,
}

/// Writes every planned change; true when something failed.
async fn write_all(report: &mut PullReport, writable: &[Writable<'_>]) -> bool {
    let mut failed = false;
    for w in writable {
        let (target, rendered) = (w.file, &w.rendered);
        let path = &target.paths[&rendered.env];
        let output = &mut report.outputs[w.at];
        let mut changed = false;
        let mut target_failed = false;
        for f in output.files.iter_mut().filter(|f| f.target == w.target) {
            let Some(change) = &f.change else { continue };
            let result = match (change.action, change.content_changed) {
                (Action::Unchanged, _) => continue,
                (_, true) => file::write(&change.desired, target.check_cmd.as_deref(), rendered.tainted).await,
                (_, false) => file::chmod(&change.desired.path, change.desired.mode),
            };
            match result {
                Ok(()) => {
                    f.written = true;
                    changed |= change.content_changed;
                }
                Err(e) => {
                    f.error = Some(e.to_string());
                    target_failed = true;
                    break;
                }
            }
        }
        if changed
            && !target_failed
            && let Some(cmd) = &target.reload_cmd
            && let Err(e) = file::reload(cmd, path, rendered.tainted).await
        {
            output.error = Some(e.to_string());
            target_failed = true;
        }
        if target_failed {
            output.status = OutputStatus::Failed;
            failed = true;
        }
    }
    failed
}

fn print_text(report: &PullReport, blocked: bool, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let rev = report.revision.map(|r| format!(" (etcd revision {r})")).unwrap_or_default();
    writeln!(out, "pull {}{rev}", report.env)?;
    let applied = !report.dry_run && !blocked;
    let (mut created, mut updated, mut unchanged, mut skipped, mut failed) = (0, 0, 0, 0, 0);
    for o in &report.outputs {
        match o.status {
            OutputStatus::Skipped => {
                skipped += 1;
                writeln!(out, "  {} {}: skipped: needs {} (no access)", style.red("!"), o.output, o.needs.join(", "))?;
                continue;
            }
            OutputStatus::Failed if o.files.is_empty() => {
                failed += 1;
                writeln!(out, "  {} {}: not rendered; nothing written", style.red("!"), o.output)?;
                continue;
            }
            OutputStatus::Failed => failed += 1,
            OutputStatus::Rendered => {}
        }
        for f in &o.files {
            let (sign, verb) = match (f.action, applied && f.written, applied) {
                (Action::Create, true, _) => (style.green("+"), "created"),
                (Action::Update, true, _) => (style.yellow("~"), "updated"),
                (Action::Create, false, false) => (style.green("+"), "create"),
                (Action::Update, false, false) => (style.yellow("~"), "update"),
                (Action::Create | Action::Update, false, true) => (style.red("!"), "not written"),
                (Action::Unchanged, _, _) => ("=".to_owned(), "unchanged"),
            };
            match f.action {
                Action::Create => created += 1,
                Action::Update => updated += 1,
                Action::Unchanged => unchanged += 1,
            }
            let mut details = Vec::new();
            if let Some(m) = &f.mode {
                details.push(format!("mode {m}"));
            }
            if o.tainted && f.action != Action::Unchanged && f.change.as_ref().is_some_and(|c| c.content_changed) {
                details.push("secret: values not shown".to_owned());
            }
            let details = if details.is_empty() { String::new() } else { format!("; {}", details.join("; ")) };
            writeln!(out, "  {sign} {} → {} ({verb}{details})", o.output, display_path(&f.path))?;
            if let Some(d) = &f.diff {
                style.diff_lines(d, "      ", out)?;
            }
            let width = f.fingerprints.iter().map(|e| e.entry.len()).max().unwrap_or(0);
            for e in &f.fingerprints {
                let none = "(none)".to_owned();
                writeln!(
                    out,
                    "      {:width$}  fingerprint {} → {}",
                    e.entry,
                    e.old.as_ref().unwrap_or(&none),
                    e.new.as_ref().unwrap_or(&none)
                )?;
            }
        }
    }
    let (c, u) = if applied { ("created", "updated") } else { ("to create", "to update") };
    let mut line = format!("{created} {c}, {updated} {u}, {unchanged} unchanged, {skipped} skipped, {failed} failed");
    if report.dry_run {
        line.push_str(" (dry run: nothing written)");
    } else if blocked {
        line.push_str(" (nothing written)");
    }
    writeln!(out, "{line}")
}

fn print_errors(report: &PullReport, blocked: bool, allow_partial: bool, err: &mut dyn Write) -> io::Result<()> {
    for d in &report.denied {
        let by: Vec<String> = d.needed_by.iter().map(|o| format!("{o:?}")).collect();
        let label = if allow_partial { "warning" } else { "error" };
        writeln!(err, "{label}: env {}: {}; needed by output {}", report.env, d.message, by.join(", "))?;
    }
    for o in &report.outputs {
        if let Some(e) = &o.error {
            writeln!(err, "error: {e}")?;
        }
        for f in &o.files {
            if let Some(e) = &f.error {
                writeln!(err, "error: output {:?}, env {:?}: {e}", o.output, report.env)?;
            }
        }
    }
    if blocked {
        let n = report.outputs.iter().filter(|o| o.status == OutputStatus::Skipped).count();
        writeln!(
            err,
            "error: nothing written: {n} output(s) need reads your role does not allow; --allow-partial writes the others"
        )?;
    }
    Ok(())
}
