//! Presentation of a pass: text for people, JSON for scripts.
//!
//! Text goes to stdout (changes, diffs) and stderr (`error:` lines, one per
//! failure). Values of outputs that read a secret never appear: the plan
//! carries no diff for them, only the names of the entries that changed.

use std::io::{self, Write};

use crate::plan::{Action, FileChange};
use crate::reconcile::{Change, Report, TargetReport};
use crate::target::kubernetes::{ObjectAction, ObjectChange};

/// Colours on a terminal, unless `NO_COLOR` is set.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn detect() -> Self {
        let color = io::IsTerminal::is_terminal(&io::stdout()) && std::env::var_os("NO_COLOR").is_none();
        Self { color }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }
}

/// Whether the report shows what would happen or what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Applied,
}

pub fn print_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

pub fn print_text(
    report: &Report,
    mode: Mode,
    style: Style,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let mut failed = 0;
    for env in &report.envs {
        let rev = env.revision.map(|r| format!(" (etcd revision {r})")).unwrap_or_default();
        writeln!(out, "env {}{rev}", env.env)?;
        if let Some(e) = &env.source_error {
            failed += 1;
            writeln!(out, "  {} source failed; no target of env {} touched", style.paint("31", "!"), env.env)?;
            writeln!(err, "error: env {}: {e}", env.env)?;
            continue;
        }
        for output in &env.outputs {
            if let Some(e) = &output.error {
                failed += 1;
                writeln!(
                    out,
                    "  {} {}: not rendered; its targets are untouched",
                    style.paint("31", "!"),
                    output.output
                )?;
                writeln!(err, "error: {e}")?;
                continue;
            }
            for target in &output.targets {
                print_target(&output.output, output.tainted, target, mode, style, out)?;
                if target.changes.is_empty() && target.error.is_some() {
                    writeln!(
                        out,
                        "  {} {} → {} {}: failed",
                        style.paint("31", "!"),
                        output.output,
                        target.kind,
                        target.address
                    )?;
                }
                if let Some(e) = &target.error {
                    failed += 1;
                    writeln!(err, "error: output {:?}, env {:?}: {e}", output.output, env.env)?;
                }
            }
        }
        for p in &env.pruned {
            print_object("(pruned)", false, p, mode, style, out)?;
        }
        for e in &env.prune_errors {
            failed += 1;
            writeln!(err, "error: env {}: {e}", env.env)?;
        }
    }
    let counts = report.counts();
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    let (create, update) = match mode {
        Mode::Plan => ("to create", "to update"),
        Mode::Applied => ("created", "updated"),
    };
    let mut line = format!("{} {create}, {} {update}, {} unchanged", n("create"), n("update"), n("unchanged"));
    if n("drift") > 0 {
        let drift = if mode == Mode::Plan { "drifted, to restore" } else { "drifted, restored" };
        line.push_str(&format!(", {} {drift}", n("drift")));
    }
    if n("delete") > 0 {
        let delete = if mode == Mode::Plan { "to delete" } else { "deleted" };
        line.push_str(&format!(", {} {delete}", n("delete")));
    }
    writeln!(out, "{line}, {failed} failed")
}

fn print_target(
    output: &str,
    tainted: bool,
    target: &TargetReport,
    mode: Mode,
    style: Style,
    out: &mut dyn Write,
) -> io::Result<()> {
    for change in &target.changes {
        let change = match change {
            Change::File(c) => c,
            Change::Object(c) => {
                print_object(output, tainted, c, mode, style, out)?;
                continue;
            }
        };
        let (sign, verb) = match (change.action, mode) {
            (Action::Create, Mode::Plan) => (style.paint("32", "+"), "create"),
            (Action::Create, Mode::Applied) => (style.paint("32", "+"), "created"),
            (Action::Update, Mode::Plan) => (style.paint("33", "~"), "update"),
            (Action::Update, Mode::Applied) => (style.paint("33", "~"), "updated"),
            (Action::Unchanged, _) => ("=".to_owned(), "unchanged"),
        };
        let not_written = mode == Mode::Applied && !target.applied && change.action != Action::Unchanged;
        let verb = if not_written { "not written" } else { verb };
        writeln!(
            out,
            "  {sign} {output} → {} {} ({verb}{})",
            target.kind,
            change.path.display(),
            details(change, tainted)
        )?;
        if let Some(diff) = &change.diff
            && mode == Mode::Plan
        {
            for line in diff.lines() {
                let painted = match line.chars().next() {
                    Some('+') if !line.starts_with("+++") => style.paint("32", line),
                    Some('-') if !line.starts_with("---") => style.paint("31", line),
                    _ => line.to_owned(),
                };
                writeln!(out, "      {painted}")?;
            }
        }
    }
    if target.reloaded {
        writeln!(out, "      reload_cmd ran")?;
    }
    Ok(())
}

fn details(change: &FileChange, tainted: bool) -> String {
    let mut parts = Vec::new();
    if let Some((old, new)) = change.mode_change {
        parts.push(match old {
            Some(o) => format!("mode {o:04o} → {new:04o}"),
            None => format!("mode {new:04o}"),
        });
    }
    if change.content_changed && tainted {
        if change.changed_entries.is_empty() {
            parts.push("secret content masked".to_owned());
        } else {
            parts.push(format!("secret content masked; entries changed: {}", change.changed_entries.join(", ")));
        }
    }
    if parts.is_empty() { String::new() } else { format!(": {}", parts.join("; ")) }
}

fn print_object(
    output: &str,
    tainted: bool,
    c: &ObjectChange,
    mode: Mode,
    style: Style,
    out: &mut dyn Write,
) -> io::Result<()> {
    let plan = mode == Mode::Plan;
    let (sign, verb) = match c.action {
        ObjectAction::Create => (style.paint("32", "+"), if plan { "create" } else { "created" }),
        ObjectAction::Update => (style.paint("33", "~"), if plan { "update" } else { "updated" }),
        ObjectAction::Drift => {
            (style.paint("35", "!"), if plan { "drift: edited in the cluster, to restore" } else { "drift: restored" })
        }
        ObjectAction::Delete => (style.paint("31", "-"), if plan { "delete" } else { "deleted" }),
        ObjectAction::Unchanged => ("=".to_owned(), "unchanged"),
    };
    let mut detail = String::new();
    if !c.keys.is_empty() && c.action != ObjectAction::Create {
        detail.push_str(&format!("; keys: {}", c.keys.join(", ")));
    }
    if c.action == ObjectAction::Create {
        let n = c.keys.len();
        detail.push_str(&format!("; {n} {}", if n == 1 { "key" } else { "keys" }));
    }
    if c.metadata_only {
        detail.push_str("; labels/annotations");
    }
    if tainted
        && matches!(c.action, ObjectAction::Create | ObjectAction::Update | ObjectAction::Drift)
        && !c.metadata_only
    {
        detail.push_str("; values masked");
    }
    if !c.restarts.is_empty() {
        let verb = if plan { "restart" } else { "restarted" };
        detail.push_str(&format!("; {verb} {}", c.restarts.join(", ")));
    }
    let context = if c.context.is_empty() { "current context".to_owned() } else { format!("context {}", c.context) };
    writeln!(out, "  {sign} {output} → {} {}/{} in {context} ({verb}{detail})", c.kind, c.namespace, c.name)?;
    if plan {
        for v in &c.values {
            writeln!(out, "      {v}")?;
        }
    }
    Ok(())
}
