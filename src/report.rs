//! Presentation of a pass: text for people, JSON for scripts.
//!
//! Text goes to stdout (changes, diffs) and stderr (`error:` lines, one per
//! failure). Values of outputs that read a secret never appear: the plan
//! carries no diff or values for them, only the names of the entries that
//! change. Every kind of target is shown the same way:
//! `<sign> <output> → <kind> <address> (<what happens>)`.

use std::io::{self, Write};

use crate::plan::{Action, Change};
use crate::reconcile::{Report, TargetReport};

/// The one style every command prints with: colours on stdout when
/// anstream would colour it (the convention clap's own help follows): never
/// with `NO_COLOR` set (non-empty) or `CLICOLOR=0`, always with
/// `CLICOLOR_FORCE`, else when stdout is a terminal that supports colour
/// (not `TERM=dumb`).
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn detect() -> Self {
        Self { color: colors(&io::stdout()) }
    }

    pub fn plain() -> Self {
        Self { color: false }
    }

    fn paint(&self, style: anstyle::Style, text: &str) -> String {
        if self.color && !text.is_empty() { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }

    pub fn red(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Red.on_default(), t)
    }

    pub fn green(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Green.on_default(), t)
    }

    pub fn yellow(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Yellow.on_default(), t)
    }

    pub fn magenta(&self, t: &str) -> String {
        self.paint(anstyle::AnsiColor::Magenta.on_default(), t)
    }

    pub fn bold(&self, t: &str) -> String {
        self.paint(anstyle::Style::new().bold(), t)
    }

    /// A unified diff with `-`/`+` lines coloured, each line indented.
    pub fn diff_lines(&self, diff: &str, indent: &str, out: &mut dyn Write) -> io::Result<()> {
        for line in diff.lines() {
            let painted = match line.chars().next() {
                Some('+') if !line.starts_with("+++") => self.green(line),
                Some('-') if !line.starts_with("---") => self.red(line),
                _ => line.to_owned(),
            };
            writeln!(out, "{indent}{painted}")?;
        }
        Ok(())
    }
}

/// Whether text written to `stream` may carry colours (see [`Style`]); the
/// log on stderr follows the same rule.
pub fn colors(stream: &impl anstream::stream::RawStream) -> bool {
    anstream::AutoStream::choice(stream) != anstream::ColorChoice::Never
}

/// Whether the report shows what would happen or what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Applied,
}

/// The report and, under `summary`, the counts of the text's last line.
pub fn print_json(report: &Report, mode: Mode, out: &mut dyn Write) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct WithSummary<'a> {
        #[serde(flatten)]
        report: &'a Report,
        /// Whether the counts are of what happened (`reconcile`) or of
        /// what would happen (`plan`, `--dry-run`).
        applied: bool,
        summary: Summary,
    }
    let with = WithSummary { report, applied: mode == Mode::Applied, summary: Summary::of(report, mode) };
    serde_json::to_writer_pretty(&mut *out, &with)?;
    writeln!(out)
}

/// The counts of a pass, as `--output json` carries them: every key always
/// present, so a script can read `summary.failed` without a default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    /// Edited by someone else; restored (or to restore).
    pub drift: usize,
    pub unchanged: usize,
    /// Changes of targets that failed: not written.
    pub not_written: usize,
    /// Sources, outputs and targets that failed (the text's `N failed`).
    pub failed: usize,
}

impl Summary {
    pub fn of(report: &Report, mode: Mode) -> Self {
        let counts = report.counts(mode == Mode::Applied);
        let n = |k: &str| counts.get(k).copied().unwrap_or(0);
        Summary {
            create: n("create"),
            update: n("update"),
            delete: n("delete"),
            drift: n("drift"),
            unchanged: n("unchanged"),
            not_written: n("failed"),
            failed: failures(report),
        }
    }
}

/// How many sources, outputs and targets failed, and failures of an env
/// that belong to no target.
fn failures(report: &Report) -> usize {
    report
        .envs
        .iter()
        .map(|env| {
            let outputs = env
                .outputs
                .iter()
                .map(|o| usize::from(o.error.is_some()) + o.targets.iter().filter(|t| t.error.is_some()).count());
            usize::from(env.source_error.is_some()) + outputs.sum::<usize>() + env.errors.len()
        })
        .sum()
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
            writeln!(out, "  {} source failed; no target of env {} touched", style.red("!"), env.env)?;
            writeln!(err, "error: env {}: {}", env.env, one_line(&e.to_string()))?;
            continue;
        }
        for output in &env.outputs {
            if let Some(e) = &output.error {
                failed += 1;
                writeln!(out, "  {} {}: not rendered; its targets are untouched", style.red("!"), output.output)?;
                writeln!(err, "error: {}", one_line(&e.to_string()))?;
                continue;
            }
            if let Some(why) = &output.skipped {
                writeln!(out, "  {} {}: skipped: {why}", style.red("!"), output.output)?;
                continue;
            }
            for target in &output.targets {
                if !print_grouped(&output.output, target, mode, style, out)? {
                    for change in &target.changes {
                        print_change(&output.output, change, target, mode, style, out)?;
                    }
                }
                if target.reloaded {
                    writeln!(out, "      reload_cmd ran")?;
                }
                if let Some(e) = &target.error {
                    failed += 1;
                    if target.changes.is_empty() {
                        writeln!(
                            out,
                            "  {} {} → {} {}: failed",
                            style.red("!"),
                            output.output,
                            target.kind,
                            target.address
                        )?;
                    }
                    writeln!(
                        err,
                        "error: output {:?}, env {:?}: {}",
                        output.output,
                        env.env,
                        one_line(&e.to_string())
                    )?;
                }
            }
        }
        for p in &env.pruned {
            print_change("(pruned)", p, &PRUNE, mode, style, out)?;
        }
        for e in &env.errors {
            failed += 1;
            writeln!(err, "error: env {}: {}", env.env, one_line(&e.to_string()))?;
        }
    }
    let counts = report.counts(mode == Mode::Applied);
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

/// A stand-in target for pruned changes (always applied when listed).
static PRUNE: TargetReport = TargetReport {
    id: String::new(),
    kind: "",
    address: String::new(),
    changes: Vec::new(),
    applied: true,
    reloaded: false,
    error: None,
};

fn is_object(kind: &str) -> bool {
    kind.starts_with("kubernetes-")
}

fn print_change(
    output: &str,
    c: &Change,
    target: &TargetReport,
    mode: Mode,
    style: Style,
    out: &mut dyn Write,
) -> io::Result<()> {
    let (sign, what) = describe_change(c, target, mode, style);
    // Objects and CI variables name their kind in the address already.
    let shown_kind = if c.kind == "file" { "file " } else { "" };
    writeln!(out, "  {sign} {output} → {shown_kind}{} {what}", c.address)?;
    print_change_body(c, mode, style, "      ", out)
}

/// A change's sign and `(<what happens>)`.
fn describe_change(c: &Change, target: &TargetReport, mode: Mode, style: Style) -> (String, String) {
    let plan = mode == Mode::Plan;
    let object = is_object(c.kind);
    let (sign, verb) = match c.action {
        Action::Create => (style.green("+"), if plan { "create" } else { "created" }),
        Action::Update => (style.yellow("~"), if plan { "update" } else { "updated" }),
        Action::Drift => {
            let verb = match (object, plan) {
                (true, true) => "drift: edited in the cluster, to restore",
                (false, true) => "drift: edited by hand, to restore",
                (_, false) => "drift: restored",
            };
            (style.magenta("!"), verb)
        }
        Action::Delete => (style.red("-"), if plan { "delete" } else { "deleted" }),
        Action::Unchanged => ("=".to_owned(), "unchanged"),
    };
    let not_written = mode == Mode::Applied && !target.applied && c.action.writes();
    let (sign, verb) = if not_written { (style.red("!"), "not written") } else { (sign, verb) };
    let mut details: Vec<String> = Vec::new();
    let restarts: Vec<&String> = c.notes.iter().filter(|n| n.starts_with("restart ")).collect();
    let notes = c.notes.iter().filter(|n| !n.starts_with("restart "));
    if object {
        match c.action {
            Action::Create => {
                let n = c.entries.len();
                details.push(format!("{n} {}", if n == 1 { "key" } else { "keys" }));
            }
            _ if !c.entries.is_empty() => details.push(format!("keys: {}", c.entries.join(", "))),
            _ => {}
        }
        details.extend(notes.cloned());
        let content = matches!(c.action, Action::Create | Action::Update | Action::Drift) && !c.entries.is_empty();
        if c.secret && content {
            details.push("values masked".to_owned());
        }
        if !restarts.is_empty() && c.action.writes() {
            let verb = if plan { "restart" } else { "restarted" };
            let names: Vec<&str> = restarts.iter().map(|r| r.trim_start_matches("restart ")).collect();
            details.push(format!("{verb} {}", names.join(", ")));
        }
    } else {
        details.extend(notes.cloned());
    }
    let separator = if object { "; " } else { ": " };
    let details = if details.is_empty() { String::new() } else { format!("{separator}{}", details.join("; ")) };
    (sign, format!("({verb}{details})"))
}

/// What a plan shows under a change's line: values, a diff, fingerprints.
fn print_change_body(c: &Change, mode: Mode, style: Style, indent: &str, out: &mut dyn Write) -> io::Result<()> {
    if mode == Mode::Plan {
        for v in &c.values {
            writeln!(out, "{indent}{v}")?;
        }
        if let Some(diff) = &c.diff {
            style.diff_lines(diff, indent, out)?;
        }
    }
    print_fingerprints(&c.fingerprints, out)
}

/// The changes of a target that writes several items at one destination
/// (CI variables: `<destination>: <item>`), under one line naming the
/// destination, so that its URL is not repeated on every item's line.
/// `false` when the changes are not of that shape (then each is printed
/// on its own line).
fn print_grouped(
    output: &str,
    target: &TargetReport,
    mode: Mode,
    style: Style,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let items: Option<Vec<&str>> = target.changes.iter().map(|c| grouped_item(&target.address, &c.address)).collect();
    let Some(items) = items.filter(|i| i.len() > 1 && target.kind != "file") else { return Ok(false) };
    writeln!(out, "  {output} → {}:", target.address)?;
    for (c, item) in target.changes.iter().zip(items) {
        let (sign, what) = describe_change(c, target, mode, style);
        writeln!(out, "    {sign} {item} {what}")?;
        print_change_body(c, mode, style, "        ", out)?;
    }
    Ok(true)
}

/// `APP_HOST` of `GitLab project g/app at URL: APP_HOST (environment scope
/// prod)` under `GitLab project g/app at URL (environment scope prod)`:
/// what the change's address adds to its target's.
fn grouped_item<'a>(target: &str, change: &'a str) -> Option<&'a str> {
    let (dest, item) = change.rsplit_once(": ")?;
    let suffix = target.strip_prefix(dest)?;
    Some(if suffix.is_empty() { item } else { item.strip_suffix(suffix)? })
}

/// `--show-fingerprints`: one line per secret entry that changes, aligned.
pub fn print_fingerprints(fingerprints: &[crate::plan::EntryFingerprint], out: &mut dyn Write) -> io::Result<()> {
    let width = fingerprints.iter().map(|e| e.entry.len()).max().unwrap_or(0);
    for e in fingerprints {
        let none = "(none)".to_owned();
        writeln!(
            out,
            "      {:width$}  fingerprint {} → {}",
            e.entry,
            e.old.as_ref().unwrap_or(&none),
            e.new.as_ref().unwrap_or(&none)
        )?;
    }
    Ok(())
}

pub use crate::text::one_line;
