//! What `cfgsync import` shows: the plan as text (plain values escaped,
//! secrets as their state only) and the JSON document for scripts. Both
//! take values through [`Content::shown`](crate::secret::Content::shown),
//! which has nothing to give for a secret.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{Dest, Item, Outcome, Plan, Request, State};
use crate::cmd::terminal::Style;
use crate::text::{escape_controls, shorten};

/// Where the destinations are, for messages.
pub(super) struct Places {
    /// `secret/prod/api/imported`, when secrets are imported.
    pub secret: Option<String>,
    /// Where adopted variables are recorded.
    pub record: Option<String>,
    pub instance: String,
    /// What adopted items are called (`GitLab variable(s)`).
    pub adopted_noun: &'static str,
}

/// A plain value for one line of text.
fn show(value: &str) -> String {
    shorten(&escape_controls(value, false), 200).into_owned()
}

/// A name or a note from the origin (a server's variable key, a scope):
/// terminal controls escaped too.
fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, false)
}

fn describe_dest(item: &Item, places: &Places) -> String {
    match &item.dest {
        Dest::Key { path, .. } => format!("etcd {path}"),
        Dest::Field { field } => format!("vault {}#{field}", places.secret.as_deref().unwrap_or("?")),
    }
}

pub(super) fn print_plan(
    request: &Request,
    plan: &Plan,
    places: &Places,
    style: Style,
    out: &mut dyn Write,
) -> io::Result<()> {
    let scope = request.gitlab.as_ref().map(|g| format!(" (environment scope {})", g.scope)).unwrap_or_default();
    writeln!(out, "import into env {} from {}{scope}", request.env, request.origin.describe())?;
    for item in &plan.items {
        let (sign, how) = match item.outcome {
            Outcome::Import => (style.green("+"), "new".to_owned()),
            Outcome::Unchanged => ("=".to_owned(), "same".to_owned()),
            Outcome::Replace => (style.yellow("~"), "differs: replace".to_owned()),
            Outcome::Keep => (style.red("!"), "differs: keep, --overwrite replaces it".to_owned()),
        };
        let how = if item.value.is_secret() { format!("secret, {how}") } else { how };
        writeln!(out, "  {sign} {} → {} ({how})", safe(&item.name), safe(&describe_dest(item, places)))?;
        if let Some(shown) = item.value.shown() {
            if let Some(current) = &item.current {
                writeln!(out, "      {}", style.red(&format!("- {}", show(current))))?;
            }
            if item.state != State::Same {
                writeln!(out, "      {}", style.green(&format!("+ {}", show(&shown))))?;
            }
        }
        for note in &item.notes {
            writeln!(out, "      note: {}", safe(note))?;
        }
    }
    for u in &plan.unimportable {
        writeln!(out, "  {} {}: not importable: {}", style.red("x"), safe(&u.name), safe(&u.reason))?;
    }
    for note in &plan.notes {
        writeln!(out, "note: {}", safe(note))?;
    }
    if !plan.adopt.is_empty() {
        let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for a in &plan.adopt {
            by_group.entry(a.group.as_str()).or_default().push(&a.name);
        }
        let list: Vec<String> =
            by_group.iter().map(|(group, names)| format!("{} ({group})", names.join(", "))).collect();
        writeln!(
            out,
            "adopt: {} as instance {:?}'s, recorded in {}",
            safe(&list.join("; ")),
            places.instance,
            places.record.as_deref().unwrap_or("?")
        )?;
    }
    let c = plan.counts();
    let differs = match (c.differs, c.kept) {
        (0, _) => String::new(),
        (_, 0) => " (replace)".to_owned(),
        (d, k) if d == k => " (kept)".to_owned(),
        (_, k) => format!(" ({k} kept)"),
    };
    writeln!(out, "{} new, {} same, {} differ{differs}, {} not importable", c.new, c.same, c.differs, c.not_importable)
}

/// What was written, for the last line and the JSON document.
#[derive(Debug, Default, Serialize)]
pub(super) struct Written {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_version: Option<u64>,
    pub fields: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_revision: Option<i64>,
    pub keys: usize,
    pub adopted: usize,
}

impl Written {
    pub fn line(&self, places: &Places) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.vault_version {
            parts.push(format!(
                "vault {} version {v} ({} field{})",
                places.secret.as_deref().unwrap_or("?"),
                self.fields,
                if self.fields == 1 { "" } else { "s" }
            ));
        }
        if let Some(r) = self.etcd_revision {
            parts.push(format!("etcd revision {r} ({} key{})", self.keys, if self.keys == 1 { "" } else { "s" }));
        }
        if self.adopted > 0 {
            parts.push(format!("{} {} adopted", self.adopted, places.adopted_noun));
        }
        if parts.is_empty() { "nothing written".to_owned() } else { format!("written: {}", parts.join(", ")) }
    }
}

/// One value in the JSON document: names and destinations; the value and
/// the current one only for plain values.
#[derive(Serialize)]
struct JsonItem<'a> {
    name: &'a str,
    secret: bool,
    state: State,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vault_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    adopt_scope: Option<&'a str>,
}

pub(super) fn json_document(
    request: &Request,
    plan: &Plan,
    places: &Places,
    written: Option<&Written>,
    errors: &[String],
) -> serde_json::Value {
    let items: Vec<JsonItem<'_>> = plan
        .items
        .iter()
        .map(|i| JsonItem {
            name: &i.name,
            secret: i.value.is_secret(),
            state: i.state,
            outcome: i.outcome,
            etcd_key: match &i.dest {
                Dest::Key { path, .. } => Some(path),
                Dest::Field { .. } => None,
            },
            vault_path: matches!(i.dest, Dest::Field { .. }).then_some(places.secret.as_deref()).flatten(),
            field: match &i.dest {
                Dest::Field { field } => Some(field),
                Dest::Key { .. } => None,
            },
            value: i.value.shown().map(|v| v.into_owned()),
            current: i.current.as_deref().filter(|_| !i.value.is_secret()),
            notes: &i.notes,
            adopt_scope: i.adopt_scope.as_deref(),
        })
        .collect();
    let adopt: Vec<&str> = plan.adopt.iter().map(|a| a.id.as_str()).collect();
    serde_json::json!({
        "env": request.env,
        "from": request.origin.to_string(),
        "source": request.origin.describe(),
        "environment_scope": request.gitlab.as_ref().map(|g| g.scope.as_str()),
        "dry_run": request.dry_run,
        "values": items,
        "not_importable": plan.unimportable,
        "notes": plan.notes,
        "adopt": adopt,
        "counts": plan.counts(),
        "written": written,
        "errors": errors,
    })
}

/// The `error:` lines that explain exit code 1 after a complete write.
pub(super) fn report_incomplete(plan: &Plan) {
    let c = plan.counts();
    if c.kept > 0 {
        eprintln!(
            "error: {} value(s) differ from what etcd or Vault hold and were kept: pass --overwrite to replace them with the imported ones",
            c.kept
        );
    }
    if c.not_importable > 0 {
        eprintln!("error: {} value(s) could not be imported (named above)", c.not_importable);
    }
}
