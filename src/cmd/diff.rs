//! `cfgsync diff A B`: how two envs differ, key by key, from the source of truth.
//!
//! Everything the caller can read in both envs is compared: every etcd key
//! under `<prefix>/<env>/` and every field of every Vault secret listed
//! under `<mount>/<env>/` (or the file source's keys and secrets). Each name
//! is *changed*, *only in A*, *only in B* or *same* (same is listed with
//! `--all`). `--rendered` also renders every output for both envs and
//! compares them entry by entry.
//!
//! Either side may be an env at a past point, `<env>@<when>` (`prod@-1h`,
//! `prod@rev:1234`, see [`crate::when`]): read from etcd at the point's
//! revision and Vault at each secret's recorded version ([`super::at`]),
//! and named so in the header with what it resolved to.
//!
//! Decisions:
//! - **Secrets are compared, never shown.** Field values are compared in
//!   memory and printed as `(secret, differs)` / `(secret, same)`; JSON
//!   carries the status only. Rendered entries of a tainted output are
//!   compared by keyed fingerprint ([`crate::fingerprint`]). `--show-secrets`
//!   prints values only when stdout is a terminal and the output is text,
//!   and refuses otherwise (exit 2) rather than silently masking: a pipe or
//!   file is exactly where a value must not go. Values shown are what the
//!   caller's role could read — nothing else was fetched.
//! - **Denied is not absent.** A read the role may not do is listed under
//!   `no access` with the env, path, role and the source's reason, and the
//!   diff is *partial*: exit 2 (diff(1)'s "trouble"), unless
//!   `--allow-partial`, which keeps 0/1 for what could be compared.
//! - **Exit codes as diff(1):** 0 same, 1 different, 2 error.
//! - The text form is diff-like: `---`/`+++` name the envs, `~` changed,
//!   `-` only in A, `+` only in B, `=` same, `!` could not compare. It is
//!   stable (sorted by name) so it can be pinned in tests; `--output json`
//!   is the form for scripts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::at;
use super::inventory::{Clients, EnvInventory, Keys, SecretScope, SecretState, read_env};
use super::terminal::Style;
use super::{CmdError, Context, check_env};
use crate::cli::{DiffArgs, OutputFormat};
use crate::fingerprint::RunFingerprinter;
use crate::history::point::Point;
use crate::render::Templates;
use crate::secret::SecretString;
use crate::source::SourceKind;
use crate::when::EnvAt;

/// How one name compares between A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Changed,
    OnlyInA,
    OnlyInB,
    Same,
}

#[derive(Debug, Serialize)]
pub struct KeyDiff {
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
}

/// One secret field. The values are kept only for `--show-secrets` on a
/// terminal and are never serialized.
#[derive(Debug, Serialize)]
pub struct SecretDiff {
    pub path: String,
    pub field: String,
    pub status: Status,
    #[serde(skip)]
    pub a: Option<SecretString>,
    #[serde(skip)]
    pub b: Option<SecretString>,
}

/// A read the caller's role does not allow.
#[derive(Debug, Serialize)]
pub struct NoAccess {
    pub env: String,
    pub source: String,
    pub path: String,
    pub role: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct OutputDiff {
    pub output: String,
    pub status: OutputStatus,
    pub tainted: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryDiff>,
    /// Why the output could not be rendered in one env.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_rendered: Option<NotRendered>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStatus {
    Compared,
    OnlyInA,
    OnlyInB,
    NotRendered,
}

#[derive(Debug, Serialize)]
pub struct NotRendered {
    pub env: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct EntryDiff {
    pub entry: String,
    pub status: Status,
    /// A line diff, only for outputs that read no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub changed: usize,
    pub only_in_a: usize,
    pub only_in_b: usize,
    pub same: usize,
    pub no_access: usize,
    pub not_rendered: usize,
}

/// The whole comparison.
#[derive(Debug, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    /// True when something could not be read or rendered.
    pub partial: bool,
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisions: Option<BTreeMap<String, i64>>,
    /// What each side named at a point (`prod@-1h`) resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<BTreeMap<String, String>>,
    pub keys: Vec<KeyDiff>,
    pub secrets: Vec<SecretDiff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendered: Option<Vec<OutputDiff>>,
    pub no_access: Vec<NoAccess>,
}

impl DiffReport {
    pub fn differs(&self) -> bool {
        let s = &self.summary;
        s.changed + s.only_in_a + s.only_in_b > 0
            || self.rendered.iter().flatten().any(|o| matches!(o.status, OutputStatus::OnlyInA | OutputStatus::OnlyInB))
    }

    /// Drops `same` items from the listing (shown only with `--all`).
    fn hide_same(&mut self) {
        self.keys.retain(|k| k.status != Status::Same);
        self.secrets.retain(|s| s.status != Status::Same);
        for o in self.rendered.iter_mut().flatten() {
            o.entries.retain(|e| e.status != Status::Same);
        }
    }

    fn count(&mut self) {
        let mut s = Summary::default();
        let statuses = self
            .keys
            .iter()
            .map(|k| k.status)
            .chain(self.secrets.iter().map(|k| k.status))
            .chain(self.rendered.iter().flatten().flat_map(|o| o.entries.iter().map(|e| e.status)));
        for status in statuses {
            match status {
                Status::Changed => s.changed += 1,
                Status::OnlyInA => s.only_in_a += 1,
                Status::OnlyInB => s.only_in_b += 1,
                Status::Same => s.same += 1,
            }
        }
        s.no_access = self.no_access.len();
        s.not_rendered = self.rendered.iter().flatten().filter(|o| o.status == OutputStatus::NotRendered).count();
        self.partial = s.no_access + s.not_rendered > 0;
        self.summary = s;
    }
}

fn source_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::File => "file",
        SourceKind::Etcd => "etcd",
        SourceKind::Vault => "vault",
    }
}

/// Compares keys and secret fields of two inventories. Pure.
pub fn compare(a: &EnvInventory, b: &EnvInventory) -> DiffReport {
    let mut keys = Vec::new();
    if let (Keys::Read { keys: ka, .. }, Keys::Read { keys: kb, .. }) = (&a.keys, &b.keys) {
        let names: BTreeSet<&String> = ka.keys().chain(kb.keys()).collect();
        for name in names {
            let (va, vb) = (ka.get(name).map(|v| &v.data), kb.get(name).map(|v| &v.data));
            let status = match (va, vb) {
                (Some(x), Some(y)) if x == y => Status::Same,
                (Some(_), Some(_)) => Status::Changed,
                (Some(_), None) => Status::OnlyInA,
                (None, _) => Status::OnlyInB,
            };
            keys.push(KeyDiff { name: name.clone(), status, a: va.map(|v| v.shown()), b: vb.map(|v| v.shown()) });
        }
    }

    let mut secrets = Vec::new();
    let paths: BTreeSet<&String> = a.secrets.keys().chain(b.secrets.keys()).collect();
    for path in paths {
        let side = |inv: &EnvInventory| -> Option<Option<BTreeMap<String, SecretString>>> {
            match inv.secrets.get(path) {
                Some(SecretState::Read(s)) => Some(Some(s.fields.clone())),
                Some(SecretState::Absent) => Some(None),
                Some(SecretState::Denied(_)) => None,
                // Not listed: absent, unless listing was denied (unknown).
                None if inv.listing_denied.is_some() => None,
                None => Some(None),
            }
        };
        let (Some(fa), Some(fb)) = (side(a), side(b)) else { continue };
        let (fa, fb) = (fa.unwrap_or_default(), fb.unwrap_or_default());
        let fields: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        for field in fields {
            let (va, vb) = (fa.get(field), fb.get(field));
            let status = match (va, vb) {
                (Some(x), Some(y)) if x.expose() == y.expose() => Status::Same,
                (Some(_), Some(_)) => Status::Changed,
                (Some(_), None) => Status::OnlyInA,
                (None, _) => Status::OnlyInB,
            };
            secrets.push(SecretDiff {
                path: path.clone(),
                field: field.clone(),
                status,
                a: va.cloned(),
                b: vb.cloned(),
            });
        }
    }

    let no_access = a
        .denials()
        .into_iter()
        .chain(b.denials())
        .map(|d| NoAccess {
            env: d.env.clone(),
            source: source_name(d.kind).to_owned(),
            path: d.path.clone(),
            role: d.role.clone(),
            reason: d.reason(),
        })
        .collect();
    let revisions: BTreeMap<String, i64> =
        [(a, a.revision()), (b, b.revision())].into_iter().filter_map(|(i, r)| Some((i.env.clone(), r?))).collect();
    let mut report = DiffReport {
        a: a.env.clone(),
        b: b.env.clone(),
        partial: false,
        summary: Summary::default(),
        revisions: (!revisions.is_empty()).then_some(revisions),
        points: None,
        keys,
        secrets,
        rendered: None,
        no_access,
    };
    report.count();
    report
}

/// Renders every output for both envs (in the template sandbox) and
/// compares entry by entry.
pub async fn compare_rendered(
    ctx: &Context<'_>,
    a: &EnvInventory,
    b: &EnvInventory,
    fingerprints: &RunFingerprinter,
) -> Vec<OutputDiff> {
    let templates: &Templates = ctx.templates;
    let renderable = |inv: &EnvInventory| -> Vec<usize> {
        (0..ctx.config.outputs.len())
            .filter(|i| ctx.config.outputs[*i].envs.contains(&a.env) && ctx.config.outputs[*i].envs.contains(&b.env))
            .filter(|i| inv.blockers(templates.analysis(*i)).is_empty())
            .collect()
    };
    let batch = |inv: &EnvInventory| {
        let indices = renderable(inv);
        let snapshot = Arc::new(inv.snapshot());
        async move {
            let results = crate::render::sandbox::Sandbox::global().render(templates, &snapshot, &indices).await;
            indices.into_iter().zip(results).collect::<std::collections::BTreeMap<_, _>>()
        }
    };
    let mut rendered_a = batch(a).await;
    let mut rendered_b = batch(b).await;
    let mut out = Vec::new();
    for (index, output) in ctx.config.outputs.iter().enumerate() {
        let (in_a, in_b) = (output.envs.contains(&a.env), output.envs.contains(&b.env));
        let tainted_static = templates.analysis(index).reads_secrets();
        let status = match (in_a, in_b) {
            (true, true) => OutputStatus::Compared,
            (true, false) => OutputStatus::OnlyInA,
            (false, true) => OutputStatus::OnlyInB,
            (false, false) => continue,
        };
        let mut diff = OutputDiff {
            output: output.name.clone(),
            status,
            tainted: tainted_static,
            entries: Vec::new(),
            not_rendered: None,
        };
        if status != OutputStatus::Compared {
            out.push(diff);
            continue;
        }
        let render = |inv: &EnvInventory, rendered: &mut Renders| take_rendered(templates, inv, index, rendered);
        let (ra, rb) = match (render(a, &mut rendered_a), render(b, &mut rendered_b)) {
            (Ok(ra), Ok(rb)) => (ra, rb),
            (Err(e), _) | (_, Err(e)) => {
                diff.status = OutputStatus::NotRendered;
                diff.not_rendered = Some(e);
                out.push(diff);
                continue;
            }
        };
        let tainted = ra.tainted || rb.tainted || tainted_static;
        diff.tainted = tainted;
        let header =
            |name: &str| (format!("{}/{}/{name}", a.env, output.name), format!("{}/{}/{name}", b.env, output.name));
        diff.entries = compare_entries(&ra, &rb, tainted, fingerprints, header);
        out.push(diff);
    }
    out
}

/// An env's rendered outputs, by config index.
type Renders = std::collections::BTreeMap<usize, Result<crate::render::Rendered, crate::render::RenderError>>;

/// Output `index` as rendered for `inv`'s env, or why it was not: a read
/// the caller may not do, or a failed render.
fn take_rendered(
    templates: &Templates,
    inv: &EnvInventory,
    index: usize,
    rendered: &mut Renders,
) -> Result<crate::render::Rendered, NotRendered> {
    let blockers = inv.blockers(templates.analysis(index));
    if !blockers.is_empty() {
        let paths: Vec<&str> = blockers.iter().map(|d| d.path.as_str()).collect();
        return Err(NotRendered { env: inv.env.clone(), reason: format!("needs {} (no access)", paths.join(", ")) });
    }
    let result = rendered.remove(&index).expect("rendered above");
    result.map_err(|e| NotRendered { env: inv.env.clone(), reason: e.to_string() })
}

/// One output's entries compared: secret content by keyed fingerprint and
/// never shown; plain content with a unified diff headed `header(name)`.
fn compare_entries(
    ra: &crate::render::Rendered,
    rb: &crate::render::Rendered,
    tainted: bool,
    fingerprints: &RunFingerprinter,
    header: impl Fn(&str) -> (String, String),
) -> Vec<EntryDiff> {
    let names: BTreeSet<&String> = ra.entries.keys().chain(rb.entries.keys()).collect();
    let mut entries = Vec::new();
    for name in names {
        let (ta, tb) = (ra.entries.get(name), rb.entries.get(name));
        let status = match (ta, tb) {
            (Some(x), Some(y)) => {
                let same = if tainted {
                    fingerprints.of(x.expose()) == fingerprints.of(y.expose())
                } else {
                    x.expose() == y.expose()
                };
                if same { Status::Same } else { Status::Changed }
            }
            (Some(_), None) => Status::OnlyInA,
            (None, _) => Status::OnlyInB,
        };
        let text_diff = (!tainted && status != Status::Same).then(|| {
            let shown = |c: Option<&crate::secret::Content>| {
                c.and_then(|c| c.shown())
                    .map(|t| crate::text::escape_controls(&t, true).into_owned())
                    .unwrap_or_default()
            };
            let (from, to) = header(name);
            similar::TextDiff::from_lines(shown(ta), shown(tb))
                .unified_diff()
                .context_radius(2)
                .header(&from, &to)
                .to_string()
        });
        entries.push(EntryDiff { entry: name.clone(), status, diff: text_diff });
    }
    entries
}

/// `cfgsync diff A B` (either may be `<env>@<when>`, see [`crate::when`]).
pub async fn run(ctx: &Context<'_>, args: &DiffArgs) -> Result<ExitCode, CmdError> {
    let (side_a, side_b) = (EnvAt::parse(&args.a)?, EnvAt::parse(&args.b)?);
    check_env(ctx.config, &side_a.env)?;
    check_env(ctx.config, &side_b.env)?;
    let (point_a, point_b) = tokio::try_join!(at::resolve(ctx.config, &side_a), at::resolve(ctx.config, &side_b))?;
    let show_secrets = args.show_secrets;
    if show_secrets && (ctx.output == OutputFormat::Json || !io::stdout().is_terminal()) {
        return Err(CmdError::ShowSecretsNotTerminal);
    }
    let fingerprints = RunFingerprinter::new()?;
    let clients = Clients::new(ctx.config);
    let read = |env: String, point: Option<Point>| {
        let paths = ctx.templates.secret_paths(&env);
        let clients = &clients;
        async move {
            match point {
                Some(p) => at::read_env_at(clients, &p, &SecretScope::All, &paths).await,
                None => read_env(clients, &env, &SecretScope::All, &paths, &|| {})
                    .await
                    .map_err(|source| CmdError::Source { env, source }),
            }
        }
    };
    let (a, b) = tokio::join!(read(side_a.env.clone(), point_a.clone()), read(side_b.env.clone(), point_b.clone()));
    let (a, b) = (a?, b?);
    let mut report = compare(&a, &b);
    name_points(&mut report, (&side_a, point_a.as_ref(), &a), (&side_b, point_b.as_ref(), &b));
    if args.rendered {
        report.rendered = Some(compare_rendered(ctx, &a, &b, &fingerprints).await);
        report.count();
    }
    // The summary keeps counting what is the same; only the listing hides it.
    if !args.all {
        report.hide_same();
    }

    let stdout = io::stdout();
    // Buffered: two envs of thousands of keys are thousands of lines, which
    // a locked stdout writes one by one (nothing goes to stderr meanwhile).
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    match ctx.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Text => print_text(&report, Style::detect(), show_secrets, &mut out)?,
    }
    out.flush()?;
    Ok(ExitCode::from(exit_code(&report, args.allow_partial)))
}

/// Names the sides as asked (`prod@-1h`), with what each point resolved
/// to, and keys the revisions by those names (both sides may be one env).
fn name_points(
    report: &mut DiffReport,
    a: (&EnvAt, Option<&Point>, &EnvInventory),
    b: (&EnvAt, Option<&Point>, &EnvInventory),
) {
    report.a = a.0.to_string();
    report.b = b.0.to_string();
    if report.a == report.b {
        return;
    }
    let revisions: BTreeMap<String, i64> =
        [a, b].iter().filter_map(|(name, _, inv)| Some((name.to_string(), inv.revision()?))).collect();
    report.revisions = (!revisions.is_empty()).then_some(revisions);
    let points: BTreeMap<String, String> =
        [a, b].iter().filter_map(|(name, p, _)| Some((name.to_string(), p.as_ref()?.describe()))).collect();
    report.points = (!points.is_empty()).then_some(points);
}

/// diff(1): 0 same, 1 different, 2 trouble (here: a partial comparison,
/// unless allowed).
pub fn exit_code(report: &DiffReport, allow_partial: bool) -> u8 {
    if report.partial && !allow_partial {
        2
    } else if report.differs() {
        1
    } else {
        0
    }
}

fn value_lines(sign: &str, value: &str, paint: impl Fn(&str) -> String, out: &mut dyn Write) -> io::Result<()> {
    if value.is_empty() {
        return writeln!(out, "      {}", paint(&format!("{sign} (empty)")));
    }
    // Values come from many writers: control characters are escaped so a
    // value cannot rewrite the reviewer's terminal, and a long line is cut.
    for line in value.lines() {
        let line = crate::text::escape_controls(line, false);
        let line = crate::text::shorten(&line, MAX_SHOWN_CHARS);
        writeln!(out, "      {}", paint(&format!("{sign} {line}")))?;
    }
    Ok(())
}

/// Characters of one value line `diff` shows before cutting it.
const MAX_SHOWN_CHARS: usize = 200;

/// The text form. `show_secrets` is honoured only because `run` checked
/// that stdout is a terminal.
pub fn print_text(report: &DiffReport, style: Style, show_secrets: bool, out: &mut dyn Write) -> io::Result<()> {
    let (a, b) = (&report.a, &report.b);
    let point = |name: &str| match report.points.as_ref().and_then(|p| p.get(name)) {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    };
    writeln!(out, "{}", style.bold(&format!("--- {a}{}", point(a))))?;
    writeln!(out, "{}", style.bold(&format!("+++ {b}{}", point(b))))?;
    if !report.keys.is_empty() {
        writeln!(out, "keys:")?;
        for k in &report.keys {
            writeln!(out, "  {} {}", marker(&style, k.status), k.name)?;
            if k.status != Status::Same {
                if let Some(v) = &k.a {
                    value_lines("-", v, |t| style.red(t), out)?;
                }
                if let Some(v) = &k.b {
                    value_lines("+", v, |t| style.green(t), out)?;
                }
            }
        }
    }
    print_secrets(report, &style, show_secrets, out)?;
    if let Some(rendered) = &report.rendered
        && !rendered.is_empty()
    {
        print_rendered(rendered, (a, b), &style, out)?;
    }
    if !report.no_access.is_empty() {
        writeln!(out, "no access:")?;
        for n in &report.no_access {
            writeln!(out, "  {} {}: {} {} as {}: {}", style.red("!"), n.env, n.source, n.path, n.role, n.reason)?;
        }
    }
    let s = &report.summary;
    let mut line = format!(
        "{} changed, {} only in {a}, {} only in {b}, {} same, {} no access",
        s.changed, s.only_in_a, s.only_in_b, s.same, s.no_access
    );
    if s.not_rendered > 0 {
        line.push_str(&format!(", {} not rendered", s.not_rendered));
    }
    if report.partial {
        line.push_str(" (partial)");
    }
    writeln!(out, "{line}")
}

/// The mark of a line: changed, only in A, only in B, same.
fn marker(style: &Style, s: Status) -> String {
    match s {
        Status::Changed => style.yellow("~"),
        Status::OnlyInA => style.red("-"),
        Status::OnlyInB => style.green("+"),
        Status::Same => "=".to_owned(),
    }
}

/// The `secrets:` section: names and whether they differ; the values only
/// with `--show-secrets`.
fn print_secrets(report: &DiffReport, style: &Style, show_secrets: bool, out: &mut dyn Write) -> io::Result<()> {
    if report.secrets.is_empty() {
        return Ok(());
    }
    let (a, b) = (&report.a, &report.b);
    writeln!(out, "secrets:")?;
    for s in &report.secrets {
        let what = match s.status {
            Status::Changed => "(secret, differs)".to_owned(),
            Status::Same => "(secret, same)".to_owned(),
            Status::OnlyInA => format!("(secret, only in {a})"),
            Status::OnlyInB => format!("(secret, only in {b})"),
        };
        writeln!(out, "  {} {}#{} {what}", marker(style, s.status), s.path, s.field)?;
        if show_secrets && s.status != Status::Same {
            if let Some(v) = &s.a {
                value_lines("-", v.expose(), |t| style.red(t), out)?;
            }
            if let Some(v) = &s.b {
                value_lines("+", v.expose(), |t| style.green(t), out)?;
            }
        }
    }
    Ok(())
}

/// The `rendered outputs:` section (`--rendered`) of envs `a` and `b`.
fn print_rendered(rendered: &[OutputDiff], (a, b): (&str, &str), style: &Style, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "rendered outputs:")?;
    for o in rendered {
        match o.status {
            OutputStatus::OnlyInA => writeln!(out, "  {} {} (output only in {a})", style.red("-"), o.output)?,
            OutputStatus::OnlyInB => writeln!(out, "  {} {} (output only in {b})", style.green("+"), o.output)?,
            OutputStatus::NotRendered => {
                let n = o.not_rendered.as_ref().expect("set with NotRendered");
                writeln!(out, "  {} {}: not rendered in {}: {}", style.red("!"), o.output, n.env, n.reason)?;
            }
            OutputStatus::Compared => {
                for e in &o.entries {
                    let what = match (o.tainted, e.status) {
                        (true, Status::Changed) => " (secret, differs)".to_owned(),
                        (true, Status::Same) => " (secret, same)".to_owned(),
                        (_, Status::OnlyInA) => format!(" (only in {a})"),
                        (_, Status::OnlyInB) => format!(" (only in {b})"),
                        _ => String::new(),
                    };
                    writeln!(out, "  {} {}: {}{what}", marker(style, e.status), o.output, e.entry)?;
                    if let Some(d) = &e.diff {
                        style.diff_lines(d, "      ", out)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::inventory::Denial;
    use crate::source::{KeyOrigin, KeyValue, Secret, SourceError};

    fn inv(env: &str, keys: &[(&str, &str)], secrets: &[(&str, &[(&str, &str)])]) -> EnvInventory {
        EnvInventory {
            env: env.to_owned(),
            keys: Keys::Read {
                keys: keys
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), KeyValue::new((*v).to_owned().into(), KeyOrigin::File)))
                    .collect(),
                revision: None,
            },
            secrets: secrets
                .iter()
                .map(|(p, fields)| {
                    let fields = fields.iter().map(|(f, v)| ((*f).to_owned(), SecretString::new(*v))).collect();
                    ((*p).to_owned(), SecretState::Read(Secret { fields, version: Some(1) }))
                })
                .collect(),
            listing_denied: None,
        }
    }

    fn denial(env: &str, path: &str) -> Denial {
        Denial {
            env: env.to_owned(),
            kind: SourceKind::Vault,
            path: path.to_owned(),
            role: "vault token (policies dev)".to_owned(),
            error: SourceError::Denied {
                source_kind: SourceKind::Vault,
                path: path.to_owned(),
                who: String::new(),
                detail: " (HTTP 403: permission denied)".to_owned(),
            },
        }
    }

    fn text(report: &DiffReport, show: bool) -> String {
        let mut out = Vec::new();
        print_text(report, Style::plain(), show, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn statuses_text_and_exit_codes() {
        let a = inv(
            "staging",
            &[("host", "db.staging"), ("same", "1"), ("gone", "x\ny")],
            &[("api/db", &[("password", "CANARY-a"), ("user", "api")])],
        );
        let b = inv(
            "prod",
            &[("host", "db.prod"), ("same", "1"), ("new", "")],
            &[("api/db", &[("password", "CANARY-b"), ("user", "api")])],
        );
        let mut report = compare(&a, &b);
        assert_eq!(exit_code(&report, false), 1);
        report.hide_same();
        assert_eq!(
            text(&report, false),
            "--- staging\n+++ prod\nkeys:\n  - gone\n      - x\n      - y\n  ~ host\n      - db.staging\n      + db.prod\n  + new\n      + (empty)\nsecrets:\n  ~ api/db#password (secret, differs)\n2 changed, 1 only in staging, 1 only in prod, 2 same, 0 no access\n"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("CANARY"), "{json}");
        assert!(text(&report, true).contains("      - CANARY-a\n      + CANARY-b\n"));

        let same = compare(&a, &a);
        assert_eq!(exit_code(&same, false), 0);
    }

    #[test]
    fn denied_secrets_are_no_access_not_only_in_a() {
        let a = inv("staging", &[("k", "v")], &[("api/db", &[("password", "CANARY-a")])]);
        let mut b = inv("prod", &[("k", "w")], &[]);
        b.secrets.insert("api/db".into(), SecretState::Denied(denial("prod", "secret/prod/api/db")));
        let report = compare(&a, &b);
        assert!(report.partial);
        assert!(report.secrets.is_empty(), "{:?}", report.secrets);
        assert_eq!(exit_code(&report, false), 2);
        assert_eq!(exit_code(&report, true), 1);
        assert!(
            text(&report, false).contains(
                "no access:\n  ! prod: vault secret/prod/api/db as vault token (policies dev): HTTP 403: permission denied\n"
            ),
            "{}",
            text(&report, false)
        );

        // A secret B did not list because listing was denied is unknown, not "only in A".
        let mut b = inv("prod", &[("k", "v")], &[]);
        b.listing_denied = Some(denial("prod", "secret/metadata/prod/"));
        let report = compare(&a, &b);
        assert!(report.secrets.is_empty());
        assert_eq!(report.summary.no_access, 1);
    }
}
