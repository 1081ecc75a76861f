//! `cfgsync explain E NAME`: where a value comes from and what uses it.
//!
//! `NAME` is a key (`api/db_host`) or a secret field (`api/db#password`); a
//! name without `#` that is no key but is a secret path explains the whole
//! secret. Shown: the source and full path; for etcd the create/mod
//! revision and version, for Vault the current version and when it was
//! written; `owner` and `reason` (Vault KV v2 `custom_metadata`, or the
//! etcd sibling key `<prefix>/_meta/<env>/<name>`); and every output, entry
//! and target that uses it. A secret's value is never shown; a key's value
//! is (it is plain configuration).
//!
//! Decisions:
//! - **What uses it is found by rendering, not guessing.** Templates may
//!   read keys through `keys(prefix)` or computed names, so a text search
//!   would miss uses. Each output of the env is rendered from the real
//!   snapshot and its record of reads says whether it read the name. To
//!   name the *entries*, the output is rendered a second time with only
//!   this value replaced by a probe that cannot occur in real data; the
//!   entries whose text changes are the ones that use it. Both renders stay
//!   in memory and only equality is looked at. An output that reads the name
//!   only through `exists()` is listed as checking for it.
//! - An output the caller cannot render (a denied read) is listed with
//!   "cannot tell", never silently left out.
//! - Metadata the caller may not read is reported as such; the rest of the
//!   explanation still prints (exit 0). A name that exists nowhere, or that
//!   the caller may not read at all, exits 1.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::inventory::{Clients, EnvInventory, KeyClient, SecretScope, read_env};
use super::{CmdError, Context, as_file, check_env, check_relative_name, outputs_for, split_field};
use crate::cli::{ExplainArgs, OutputFormat};
use crate::history::point::Point;
use crate::render::{Rendered, Use};
use crate::secret::SecretString;
use crate::source::vault_admin::{self, one_line};
use crate::source::{KeyValue, Snapshot, SourceError};
use crate::source::{at, etcd_admin};
use crate::text::display_path;

/// A value that cannot occur in real data: NUL bytes around a marker.
const PROBE: &str = "\u{0}cfgsync-explain-probe\u{0}";

/// Why a name could not be explained (exit 1). Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{name:?} is neither a key nor a secret in env {env}{hint}")]
    NotFound { name: String, env: String, hint: &'static str },
    #[error("no secret {path:?} in env {env}")]
    NoSecret { path: String, env: String },
    #[error("secret {path} has no field {field:?}; its fields: {fields}")]
    NoField { path: String, field: String, fields: String },
    #[error("{}", one_line(&.0.to_string()))]
    Source(#[from] SourceError),
    /// A past point that cannot be read (compacted, destroyed): exit 2.
    #[error("{0}")]
    At(Box<crate::source::at::AtError>),
}

impl From<crate::source::at::AtError> for ExplainError {
    fn from(e: crate::source::at::AtError) -> Self {
        match e {
            crate::source::at::AtError::Source(s) => ExplainError::Source(s),
            other => ExplainError::At(Box::new(other)),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub env: String,
    /// `prod@rev:1234` and what it resolved to, for an env named at a past point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<PointShown>,
    pub name: String,
    pub kind: &'static str,
    pub source: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Only for keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VaultVersion>,
    /// Field names of a whole-secret explanation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    pub owner: Option<String>,
    pub reason: Option<String>,
    /// Where owner and reason are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_path: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub used_by: Vec<Usage>,
}

#[derive(Debug, Serialize)]
pub struct PointShown {
    pub point: String,
    pub resolved: String,
}

#[derive(Debug, Serialize)]
pub struct Revision {
    pub create: i64,
    #[serde(rename = "mod")]
    pub modified: i64,
    pub version: i64,
}

#[derive(Debug, Serialize)]
pub struct VaultVersion {
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    pub created: String,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub output: String,
    pub entries: Vec<String>,
    pub targets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What is being explained.
#[derive(Debug, Clone)]
enum Subject {
    Key(String),
    Field { path: String, field: String },
    Secret(String),
}

impl Subject {
    /// Whether a rendering read this subject (from its record of reads).
    fn read_by(&self, rendered: &Rendered) -> bool {
        rendered.used.iter().any(|u| match (self, u) {
            (Subject::Key(k), Use::Key(n)) => k == n,
            (Subject::Key(k), Use::KeyPrefix(p)) => k.starts_with(p.as_str()),
            (Subject::Field { path, .. } | Subject::Secret(path), Use::Secret(p)) => path == p,
            _ => false,
        })
    }

    /// The snapshot with this subject's value replaced by [`PROBE`].
    fn probed(&self, snapshot: &Snapshot) -> Snapshot {
        let mut s = snapshot.clone();
        match self {
            Subject::Key(k) => {
                if let Some(v) = s.keys.get_mut(k) {
                    *v = KeyValue { data: crate::source::KeyData::Text(PROBE.to_owned()), origin: v.origin };
                }
            }
            Subject::Field { path, field } => {
                if let Some(f) = s.secrets.get_mut(path).and_then(|sec| sec.fields.get_mut(field)) {
                    *f = SecretString::new(PROBE);
                }
            }
            Subject::Secret(path) => {
                if let Some(sec) = s.secrets.get_mut(path) {
                    for f in sec.fields.values_mut() {
                        *f = SecretString::new(PROBE);
                    }
                }
            }
        }
        s
    }
}

/// `cfgsync explain E NAME` (`E` may be `<env>@<when>`).
pub async fn run(ctx: &Context<'_>, args: &ExplainArgs) -> Result<ExitCode, CmdError> {
    let env_at = crate::when::EnvAt::parse(&args.env)?;
    let env = env_at.env.as_str();
    check_env(ctx.config, env)?;
    let point = super::at::resolve(ctx.config, &env_at).await?;
    let clients = Clients::new(ctx.config);
    let subject = match split_field(&args.name) {
        Some((path, field)) => {
            check_relative_name("secret path", path)?;
            Subject::Field { path: path.to_owned(), field: field.to_owned() }
        }
        None => {
            check_relative_name("key name", &args.name)?;
            Subject::Key(args.name.clone())
        }
    };
    let mut ex = Explanation {
        env: env.to_owned(),
        at: point.as_ref().map(|p| PointShown { point: p.shown(), resolved: p.describe() }),
        name: args.name.clone(),
        kind: "key",
        source: String::new(),
        path: String::new(),
        field: None,
        value: None,
        revision: None,
        version: None,
        fields: Vec::new(),
        owner: None,
        reason: None,
        metadata_path: None,
        notes: Vec::new(),
        used_by: Vec::new(),
    };
    let subject = match find(&clients, env, point.as_ref(), subject, &mut ex).await {
        Ok(s) => s,
        Err(ExplainError::At(e)) => return Err(CmdError::At { env: env.to_owned(), source: e }),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    find_uses(ctx, &clients, env, point.as_ref(), &subject, &mut ex).await;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &ex).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Text => print_text(&ex, &mut out)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Fills in what `subject` is; a name without `#` that is no key may be a
/// whole secret.
async fn find(
    clients: &Clients,
    env: &str,
    point: Option<&Point>,
    subject: Subject,
    ex: &mut Explanation,
) -> Result<Subject, ExplainError> {
    match &subject {
        Subject::Key(name) => {
            let found = match point {
                Some(p) => explain_key_at(clients, p, name, ex).await?,
                None => explain_key(clients, env, name, ex).await?,
            };
            if found {
                return Ok(subject);
            }
            if explain_secret(clients, env, point, name, None, ex).await? {
                return Ok(Subject::Secret(name.clone()));
            }
            let hint = if clients.vault.is_some() { "" } else { " (no [vault] configured)" };
            Err(ExplainError::NotFound { name: name.clone(), env: env.to_owned(), hint })
        }
        Subject::Field { path, field } => {
            if explain_secret(clients, env, point, path, Some(field), ex).await? {
                return Ok(subject);
            }
            Err(ExplainError::NoSecret { path: path.clone(), env: env.to_owned() })
        }
        Subject::Secret(_) => unreachable!("only built from a found key"),
    }
}

/// Fills in a key; false when there is no such key.
async fn explain_key(clients: &Clients, env: &str, name: &str, ex: &mut Explanation) -> Result<bool, ExplainError> {
    match &clients.keys {
        KeyClient::Files { source, dir } => {
            use crate::source::Source;
            let request = crate::source::Request { env: env.to_owned(), ..Default::default() };
            let snapshot = source.fetch(&request).await?;
            let Some(kv) = snapshot.keys.get(name) else { return Ok(false) };
            ex.source = "file".to_owned();
            ex.path = format!("{} [keys] {name:?}", display_path(&dir.join(format!("{env}.toml"))));
            ex.value = Some(kv.data.shown());
            ex.notes.push("the file source records no revision, owner or reason".to_owned());
            Ok(true)
        }
        KeyClient::Etcd { source, settings } => {
            let client = source.connect().await?;
            let key = etcd_admin::key_path(settings, env, name);
            let Some(record) = etcd_admin::get(&client, settings, &key).await? else { return Ok(false) };
            ex.source = "etcd".to_owned();
            ex.path = key;
            ex.value = Some(record.value);
            ex.revision = Some(Revision {
                create: record.create_revision,
                modified: record.mod_revision,
                version: record.version,
            });
            let meta_key = etcd_admin::meta_path(settings, env, name);
            match etcd_admin::get_meta(&client, settings, env, name).await {
                Ok(Some((meta, _))) => set_owner(ex, &meta.owner, &meta.reason),
                Ok(None) => {}
                Err(e) => ex.notes.push(format!("owner and reason unknown: {}", one_line(&e.to_string()))),
            }
            ex.metadata_path = Some(meta_key);
            Ok(true)
        }
    }
}

/// Fills in a key as it was at `point` (etcd at the point's revision, and
/// its owner/reason sibling at the same revision); false when there was
/// no such key then.
async fn explain_key_at(
    clients: &Clients,
    point: &Point,
    name: &str,
    ex: &mut Explanation,
) -> Result<bool, ExplainError> {
    let (KeyClient::Etcd { source, settings }, Some(revision)) = (&clients.keys, point.revision) else {
        return Ok(false);
    };
    let env = point.env.as_str();
    let key = etcd_admin::key_path(settings, env, name);
    let Some((value, create, modified, version)) = at::key_at(source, env, &key, revision).await? else {
        return Ok(false);
    };
    ex.source = "etcd".to_owned();
    ex.path = key;
    ex.value = Some(crate::source::KeyData::from_bytes(value).shown());
    ex.revision = Some(Revision { create, modified, version });
    let meta_key = etcd_admin::meta_path(settings, env, name);
    match at::key_at(source, env, &meta_key, revision).await {
        Ok(Some((bytes, ..))) => match etcd_admin::Meta::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(meta) => set_owner(ex, &meta.owner, &meta.reason),
            Err(e) => ex.notes.push(format!("owner and reason unknown: {meta_key}: {e}")),
        },
        Ok(None) => {}
        Err(e) => ex.notes.push(format!("owner and reason unknown: {}", one_line(&e.to_string()))),
    }
    ex.metadata_path = Some(format!("{meta_key} (at revision {revision})"));
    Ok(true)
}

fn set_owner(ex: &mut Explanation, owner: &Option<String>, reason: &Option<String>) {
    ex.owner = owner.clone();
    ex.reason = reason.clone();
}

/// Fills in a secret (one field, or all of it); false when there is no
/// such secret.
async fn explain_secret(
    clients: &Clients,
    env: &str,
    point: Option<&Point>,
    path: &str,
    field: Option<&String>,
    ex: &mut Explanation,
) -> Result<bool, ExplainError> {
    let Some(vault) = &clients.vault else {
        if point.is_some() {
            return Ok(false);
        }
        return explain_file_secret(clients, env, path, field, ex).await;
    };
    let client = vault.source.client().await?;
    let mount = &vault.mount;
    let mut metadata = vault_admin::read_metadata(&client, mount, env, path).await;
    let data = match point {
        None => vault_admin::read_secret(&client, mount, env, path).await,
        Some(p) => match super::at::version_of(&client, mount, p, path).await? {
            None => return Ok(false),
            Some(version) => {
                let secret = at::secret_at(&client, mount, env, path, version).await?;
                // The version of the point, written when it was; owner and
                // reason: Vault keeps one pair per secret, the current one.
                if let Ok(Some(info)) = &mut metadata {
                    info.version_time = at::versions(&client, mount, env, path)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| v.versions.get(&version)?.created_ms.map(crate::when::format_ms));
                    info.current_version = version;
                    ex.notes.push(
                        "owner and reason are the secret's current ones (Vault keeps one pair per secret)".to_owned(),
                    );
                }
                Ok(Some(secret))
            }
        },
    };
    let data = match (&metadata, data) {
        (Err(_), Err(e)) => return Err(e.into()),
        (_, d) => d,
    };
    // The metadata knows a secret whose latest version is deleted; the data
    // decides when the metadata may not be read.
    let exists = match &metadata {
        Ok(m) => m.is_some(),
        Err(_) => matches!(data, Ok(Some(_))),
    };
    if !exists {
        return Ok(false);
    }
    ex.kind = "secret";
    ex.source = "vault".to_owned();
    ex.path = vault_admin::shown_path(mount, env, path);
    ex.field = field.cloned();
    ex.metadata_path = Some(format!("{mount}/metadata/{env}/{path} (custom_metadata)"));
    match metadata {
        Ok(Some(info)) => {
            ex.version = Some(VaultVersion {
                version: info.current_version,
                written: info.version_time.clone(),
                created: info.created_time.clone(),
            });
            set_owner(ex, &info.custom_metadata.get("owner").cloned(), &info.custom_metadata.get("reason").cloned());
        }
        Ok(None) => {}
        Err(e) => ex.notes.push(format!("version, owner and reason unknown: {}", one_line(&e.to_string()))),
    }
    match data {
        Ok(Some(secret)) => match field {
            Some(f) if !secret.fields.contains_key(f) => {
                let names: Vec<&str> = secret.fields.keys().map(String::as_str).collect();
                return Err(ExplainError::NoField {
                    path: ex.path.clone(),
                    field: f.clone(),
                    fields: if names.is_empty() { "(none)".to_owned() } else { names.join(", ") },
                });
            }
            Some(_) => {}
            None => ex.fields = secret.fields.keys().cloned().collect(),
        },
        Ok(None) => {}
        Err(e) => ex.notes.push(format!("fields not verified: {}", one_line(&e.to_string()))),
    }
    Ok(true)
}

async fn explain_file_secret(
    clients: &Clients,
    env: &str,
    path: &str,
    field: Option<&String>,
    ex: &mut Explanation,
) -> Result<bool, ExplainError> {
    let KeyClient::Files { source, dir } = &clients.keys else { return Ok(false) };
    use crate::source::Source;
    let request = crate::source::Request { env: env.to_owned(), ..Default::default() };
    let snapshot = source.fetch(&request).await?;
    let Some(secret) = snapshot.secrets.get(path) else { return Ok(false) };
    if let Some(f) = field
        && !secret.fields.contains_key(f)
    {
        let fields = secret.fields.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(ExplainError::NoField { path: path.to_owned(), field: f.clone(), fields });
    }
    ex.kind = "secret";
    ex.source = "file".to_owned();
    ex.path = format!("{} [secrets.{path:?}]", display_path(&dir.join(format!("{env}.toml"))));
    ex.field = field.cloned();
    if field.is_none() {
        ex.fields = secret.fields.keys().cloned().collect();
    }
    ex.notes.push("the file source records no version, owner or reason".to_owned());
    Ok(true)
}

/// Lists every output of the env that reads the subject, with entries and targets.
async fn find_uses(
    ctx: &Context<'_>,
    clients: &Clients,
    env: &str,
    point: Option<&Point>,
    subject: &Subject,
    ex: &mut Explanation,
) {
    let paths = ctx.templates.secret_paths(env);
    let scope = SecretScope::Paths(paths.clone());
    let read = match point {
        Some(p) => super::at::read_env_at(clients, p, &scope, &paths).await.map_err(|e| e.to_string()),
        None => read_env(clients, env, &scope, &paths, &|| {}).await.map_err(|e| e.to_string()),
    };
    let inventory: EnvInventory = match read {
        Ok(i) => i,
        Err(e) => {
            ex.notes.push(format!("uses unknown: {}", one_line(&e)));
            return;
        }
    };
    let snapshot = inventory.snapshot();
    // Every output the caller may render, rendered in the template sandbox
    // twice: as is, and with the subject's value replaced by a probe.
    let indices: Vec<usize> = outputs_for(ctx.config, env)
        .map(|(i, _)| i)
        .filter(|i| inventory.blockers(ctx.templates.analysis(*i)).is_empty())
        .collect();
    let sandbox = crate::render::sandbox::Sandbox::global();
    let plain = sandbox.render(ctx.templates, &Arc::new(snapshot.clone()), &indices).await;
    let probed = sandbox.render(ctx.templates, &Arc::new(subject.probed(&snapshot)), &indices).await;
    let mut rendered_all: BTreeMap<usize, _> = indices.iter().copied().zip(plain).collect();
    let mut probed_all: BTreeMap<usize, _> = indices.iter().copied().zip(probed).collect();
    for (index, output) in outputs_for(ctx.config, env) {
        let targets = targets_of(output, env, &[]);
        let analysis = ctx.templates.analysis(index);
        let statically_reads_secret = match subject {
            Subject::Field { path, .. } | Subject::Secret(path) => analysis.secret_paths.contains(path),
            Subject::Key(_) => false,
        };
        let blockers = inventory.blockers(analysis);
        if !blockers.is_empty() {
            if matches!(subject, Subject::Key(_)) || statically_reads_secret {
                let denied: Vec<&str> = blockers.iter().map(|d| d.path.as_str()).collect();
                ex.used_by.push(Usage {
                    output: output.name.clone(),
                    entries: Vec::new(),
                    targets,
                    note: Some(format!("cannot tell: not rendered, needs {} (no access)", denied.join(", "))),
                });
            }
            continue;
        }
        let rendered = match rendered_all.remove(&index).expect("rendered above") {
            Ok(r) => r,
            Err(e) => {
                ex.used_by.push(Usage {
                    output: output.name.clone(),
                    entries: Vec::new(),
                    targets,
                    note: Some(format!("cannot tell: not rendered: {e}")),
                });
                continue;
            }
        };
        if !subject.read_by(&rendered) {
            continue;
        }
        let (entries, note) = match probed_all.remove(&index).expect("rendered above") {
            Ok(p) => {
                let names: BTreeSet<&String> = rendered.entries.keys().chain(p.entries.keys()).collect();
                let entries: Vec<String> =
                    names.into_iter().filter(|n| rendered.entries.get(*n) != p.entries.get(*n)).cloned().collect();
                let note = entries.is_empty().then(|| match subject {
                    Subject::Key(_) => "checks whether it exists".to_owned(),
                    _ => "reads the secret, but not this field".to_owned(),
                });
                (entries, note)
            }
            Err(_) => (Vec::new(), Some("reads it; entries unknown (a template rejects other values)".to_owned())),
        };
        if matches!(subject, Subject::Field { .. }) && entries.is_empty() && note.is_some() {
            // Reads another field of the same secret only.
            continue;
        }
        let targets = targets_of(output, env, &entries);
        ex.used_by.push(Usage { output: output.name.clone(), entries, targets, note });
    }
}

/// Each target of `output` that takes one of `entries` (any, when empty),
/// by what it writes for `env` (the file, the object, the CI variables),
/// and where the config defines it.
fn targets_of(output: &crate::config::Output, env: &str, entries: &[String]) -> Vec<String> {
    output
        .targets
        .iter()
        .filter(|t| entries.is_empty() || entries.iter().any(|e| t.selects(e)))
        .map(|t| match as_file(&t.kind) {
            Some(f) => format!("file {}", display_path(&f.paths[env])),
            None => format!("{} (defined at {})", t.kind.address(env), t.location),
        })
        .collect()
}

fn print_text(ex: &Explanation, out: &mut dyn Write) -> io::Result<()> {
    let row = |out: &mut dyn Write, label: &str, value: &str| writeln!(out, "  {label:<9} {value}");
    match &ex.at {
        Some(at) => {
            writeln!(out, "{} {}", at.point, ex.name)?;
            row(out, "point:", &at.resolved)?;
        }
        None => writeln!(out, "{} {}", ex.env, ex.name)?,
    }
    let mut source = format!("{} {}", ex.source, ex.path);
    if let Some(f) = &ex.field {
        source.push_str(&format!(", field {f:?}"));
    }
    row(out, "source:", &source)?;
    if let Some(v) = &ex.value {
        row(out, "value:", &crate::text::escape_controls(v, false))?;
    }
    if ex.kind == "secret" {
        row(out, "value:", "(secret, not shown)")?;
    }
    if !ex.fields.is_empty() {
        row(out, "fields:", &ex.fields.join(", "))?;
    }
    if let Some(r) = &ex.revision {
        row(out, "revision:", &format!("created {}, modified {} (version {})", r.create, r.modified, r.version))?;
    }
    if let Some(v) = &ex.version {
        let written = v.written.as_ref().map(|w| format!(", written {w}")).unwrap_or_default();
        row(out, "version:", &format!("{}{written} (secret created {})", v.version, v.created))?;
    }
    if ex.source != "file" {
        let none = "(none recorded)".to_owned();
        row(out, "owner:", ex.owner.as_ref().unwrap_or(&none))?;
        row(out, "reason:", ex.reason.as_ref().unwrap_or(&none))?;
        if let Some(m) = &ex.metadata_path {
            row(out, "recorded:", m)?;
        }
    }
    for n in &ex.notes {
        row(out, "note:", n)?;
    }
    if ex.used_by.is_empty() {
        row(out, "used by:", "(no output of this env)")?;
    }
    for (i, u) in ex.used_by.iter().enumerate() {
        let label = if i == 0 { "used by:" } else { "" };
        let mut line = format!("output {}", u.output);
        if !u.entries.is_empty() {
            line.push_str(&format!(", entries {}", u.entries.join(", ")));
        }
        if let Some(n) = &u.note {
            line.push_str(&format!(" ({n})"));
        }
        row(out, label, &line)?;
        for t in &u.targets {
            row(out, "", &format!("  → {t}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{KeyOrigin, Secret};

    #[test]
    fn probe_replaces_only_the_subject() {
        let mut s = Snapshot::default();
        s.keys.insert("a".into(), KeyValue::new(b"1".to_vec(), KeyOrigin::File));
        s.keys.insert("b".into(), KeyValue::new(b"2".to_vec(), KeyOrigin::File));
        let fields = [("p".to_owned(), SecretString::new("x")), ("q".to_owned(), SecretString::new("y"))].into();
        s.secrets.insert("db".into(), Secret { fields, version: None });
        let p = Subject::Key("a".into()).probed(&s);
        assert_eq!((p.keys["a"].text(), p.keys["b"].text()), (Some(PROBE), Some("2")));
        let p = Subject::Field { path: "db".into(), field: "q".into() }.probed(&s);
        assert_eq!((p.secrets["db"].fields["p"].expose(), p.secrets["db"].fields["q"].expose()), ("x", PROBE));
    }
}
