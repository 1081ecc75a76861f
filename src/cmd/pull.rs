//! `cfgsync pull --env E`: make local files look like env E, with your own credentials.
//!
//! Renders every output of env E that has a `file` target and writes it
//! (atomically; 0600 when the output read a secret — [`crate::targets::file`]).
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
//! - **One pipeline**: `pull` is a pass of [`crate::reconcile`] with only
//!   file targets, over a snapshot read with the caller's credentials: the
//!   same plan decides create/update/drift/prune and `check_cmd` behaves as
//!   there, so `pull` and the service never disagree about a file.
//! - **No `reload_cmd` on a laptop** unless `--reload`: a developer pulling
//!   prod's config must not restart services by surprise.
//! - Progress on stderr only on a terminal and only when slow
//!   ([`super::terminal::Progress`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::inventory::{Clients, Denial, SecretScope, read_env};
use super::terminal::{Progress, Style};
use super::{CmdError, Context, as_file, check_env, outputs_for};
use crate::cli::{OutputFormat, PullArgs};
use crate::plan::{Action, Change, EntryFingerprint};
use crate::reconcile::{self, EnvReport, PassOptions, Targets};

/// What `pull` did, for text and JSON.
#[derive(Debug, Serialize)]
pub struct PullReport {
    pub env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub dry_run: bool,
    pub outputs: Vec<OutputPull>,
    /// Files this instance wrote that no target wants any more (removed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<FilePull>,
    /// Every read the caller's role does not allow, with the outputs needing it.
    pub denied: Vec<DeniedRead>,
    /// Failures of no single output (a refused prune, state not saved).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
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
    /// Rendering, encoding or writing failed.
    Failed,
}

#[derive(Debug, Serialize)]
pub struct FilePull {
    pub path: String,
    pub action: Action,
    /// Mode, mode change, "secret content masked", …
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Unified diff, only for outputs that read no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Changed entries of a secret output, by keyed fingerprint (valid for
    /// this run only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<EntryFingerprint>,
    pub written: bool,
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

fn file_pull(c: Change, written: bool) -> FilePull {
    FilePull {
        path: c.address,
        action: c.action,
        notes: c.notes,
        diff: c.diff,
        fingerprints: c.fingerprints,
        written: written && c.action.writes(),
    }
}

/// `cfgsync pull --env E`: the same pass as `reconcile`, for file targets
/// only, with the caller's own credentials.
pub async fn run(ctx: &Context<'_>, args: &PullArgs) -> Result<ExitCode, CmdError> {
    let env = args.env.as_str();
    check_env(ctx.config, env)?;
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
            eprintln!("error: env {env}: {}", crate::report::one_line(&e.to_string()));
            return Ok(ExitCode::from(1));
        }
    };
    progress.set_message(&format!("pull {env}: rendering"));

    // Outputs that need a denied read are not rendered (an output is never
    // written half-rendered); their files are kept as they are.
    let mut denied: Vec<(&Denial, Vec<String>)> = Vec::new();
    let mut not_rendered: BTreeMap<usize, String> = BTreeMap::new();
    let mut needs: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, output) in &outputs {
        let blockers = inventory.blockers(ctx.templates.analysis(*index));
        if blockers.is_empty() {
            continue;
        }
        let paths: Vec<String> = blockers.iter().map(|d| d.path.clone()).collect();
        not_rendered.insert(*index, format!("needs {} (no access)", paths.join(", ")));
        needs.insert(*index, paths);
        for d in blockers {
            match denied.iter_mut().find(|(x, _)| std::ptr::eq(*x, d)) {
                Some((_, by)) => by.push(output.name.clone()),
                None => denied.push((d, vec![output.name.clone()])),
            }
        }
    }
    let blocked = !denied.is_empty() && !args.allow_partial;
    let options = PassOptions {
        env: Some(env.to_owned()),
        dry_run: args.dry_run || blocked,
        files_only: true,
        no_reload: !args.reload,
        show_fingerprints: true,
        ..Default::default()
    };
    let targets = Targets::new(ctx.config, None);
    // Nothing is pruned from a view the caller's role cut short.
    let prune = denied.is_empty();
    let snapshot = Arc::new(inventory.snapshot());
    let plan = reconcile::plan_env(ctx.config, ctx.templates, &targets, snapshot, prune, &options, &not_rendered).await;
    let env_report = if options.dry_run { plan.report } else { reconcile::apply_env(plan, None).await };
    drop(progress);

    let mut report = pull_report(env_report, &outputs, &needs, options.dry_run);
    report.dry_run = args.dry_run;
    report.denied = denied
        .iter()
        .map(|(d, by)| DeniedRead {
            source: d.kind.to_string(),
            path: d.path.clone(),
            role: d.role.clone(),
            reason: d.reason(),
            needed_by: by.clone(),
            message: crate::report::one_line(&d.error.to_string()),
        })
        .collect();
    let failed = !report.errors.is_empty() || report.outputs.iter().any(|o| o.status == OutputStatus::Failed);

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

/// `pull`'s view of the env's pass.
fn pull_report(
    env: EnvReport,
    outputs: &[(usize, &crate::config::Output)],
    needs: &BTreeMap<usize, Vec<String>>,
    dry_run: bool,
) -> PullReport {
    let mut report = PullReport {
        env: env.env,
        revision: env.revision,
        dry_run,
        outputs: Vec::new(),
        pruned: env.pruned.into_iter().map(|c| file_pull(c, !dry_run)).collect(),
        denied: Vec::new(),
        errors: env.errors.iter().map(|e| e.to_string()).collect(),
    };
    for o in env.outputs {
        let index = outputs.iter().find(|(_, out)| out.name == o.output).map(|(i, _)| *i);
        let mut errors: Vec<String> = o.error.iter().map(|e| e.to_string()).collect();
        let mut files = Vec::new();
        for t in o.targets {
            let written = !dry_run && t.applied;
            if let Some(e) = &t.error {
                errors.push(format!("output {:?}, env {:?}: {e}", o.output, report.env));
            }
            files.extend(t.changes.into_iter().map(|c| file_pull(c, written)));
        }
        let status = if o.skipped.is_some() {
            OutputStatus::Skipped
        } else if errors.is_empty() {
            OutputStatus::Rendered
        } else {
            OutputStatus::Failed
        };
        report.outputs.push(OutputPull {
            output: o.output,
            status,
            tainted: o.tainted,
            needs: index.and_then(|i| needs.get(&i)).cloned().unwrap_or_default(),
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            files,
        });
    }
    report
}

fn print_text(report: &PullReport, blocked: bool, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let rev = report.revision.map(|r| format!(" (etcd revision {r})")).unwrap_or_default();
    writeln!(out, "pull {}{rev}", report.env)?;
    let applied = !report.dry_run && !blocked;
    let (mut created, mut updated, mut unchanged, mut deleted, mut skipped, mut failed) = (0, 0, 0, 0, 0, 0);
    let mut file_line = |output: &str, f: &FilePull, out: &mut dyn Write| -> io::Result<()> {
        let (sign, verb) = match (f.action, applied && f.written, applied) {
            (Action::Unchanged, _, _) => ("=".to_owned(), "unchanged"),
            (_, false, true) => (style.red("!"), "not written"),
            (Action::Create, true, _) => (style.green("+"), "created"),
            (Action::Update, true, _) => (style.yellow("~"), "updated"),
            (Action::Drift, true, _) => (style.yellow("~"), "restored (edited by hand)"),
            (Action::Delete, true, _) => (style.red("-"), "deleted"),
            (Action::Create, false, false) => (style.green("+"), "create"),
            (Action::Update, false, false) => (style.yellow("~"), "update"),
            (Action::Drift, false, false) => (style.yellow("~"), "restore (edited by hand)"),
            (Action::Delete, false, false) => (style.red("-"), "delete"),
        };
        match f.action {
            Action::Create => created += 1,
            Action::Update | Action::Drift => updated += 1,
            Action::Delete => deleted += 1,
            Action::Unchanged => unchanged += 1,
        }
        let details: Vec<String> =
            f.notes
                .iter()
                .map(|n| {
                    if n.starts_with("secret content masked") {
                        "secret: values not shown".to_owned()
                    } else {
                        n.clone()
                    }
                })
                .collect();
        let details = if details.is_empty() { String::new() } else { format!("; {}", details.join("; ")) };
        writeln!(out, "  {sign} {output} → {} ({verb}{details})", f.path)?;
        if let Some(d) = &f.diff {
            style.diff_lines(d, "      ", out)?;
        }
        crate::report::print_fingerprints(&f.fingerprints, out)
    };
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
            file_line(&o.output, f, out)?;
        }
    }
    for f in &report.pruned {
        file_line("(pruned)", f, out)?;
    }
    let (c, u, d) = if applied { ("created", "updated", "deleted") } else { ("to create", "to update", "to delete") };
    let mut line = format!("{created} {c}, {updated} {u}, {unchanged} unchanged");
    if deleted > 0 {
        line.push_str(&format!(", {deleted} {d}"));
    }
    line.push_str(&format!(", {skipped} skipped, {failed} failed"));
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
            writeln!(err, "error: {}", crate::report::one_line(e))?;
        }
    }
    for e in &report.errors {
        writeln!(err, "error: env {}: {}", report.env, crate::report::one_line(e))?;
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
