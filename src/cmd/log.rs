//! `cfgsync log --env E [KEY|OUTPUT]`: who changed what, when, why, and
//! which passes carried it to which targets — one line per change.
//!
//! ```text
//! 2026-12-01T14:02:04Z  rev 57   key api/db_host  db1.prod.internal → db2.prod.internal  by team-db: moved to the new cluster  → pass 14:02:04Z by r1: prod/api/0
//! 2026-12-01T14:05:10Z  v3       secret api/db    (secret, new version)  by team-db: rotated after INC-42  → pass 14:05:11Z by r1: prod/api/0
//! ```
//!
//! Where each part comes from:
//! - **keys**: etcd's own MVCC history of `<prefix>/<env>/`, replayed with
//!   a watch from the starting revision to now (old and new values: plain
//!   configuration, shown as `diff` shows it); the owner and reason are the
//!   `<prefix>/_meta/<env>/<name>` sibling as it was at the change's
//!   revision (`cfgsync set` writes both in one transaction);
//! - **secrets**: Vault KV v2 metadata (each version and when it was
//!   written); Vault keeps one owner/reason per secret, shown with its
//!   newest version only; values are never read;
//! - **passes**: the env's history ([`crate::history`]): the first pass
//!   that read the change (a revision at or after it, a secret version at
//!   or after it), and the targets it wrote whose output reads the name
//!   (by the templates' static analysis; every target that pass wrote when
//!   the analysis cannot tell).
//!
//! Decisions:
//! - **When** is exact for secrets (Vault records it) and, for keys, the
//!   time of the first pass that read the change (etcd keeps no times; the
//!   service passes within its debounce of a change, so this is close). A
//!   change no pass has read yet is shown with its revision only.
//! - The default start is what the oldest recorded pass read: the changes
//!   after it (everything etcd still has when no pass is recorded);
//!   `--since` moves it.
//! - A filter names a key (`api/db_host`), a secret (`api/db` or
//!   `api/db#password`) or an output (every name it reads).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::process::ExitCode;

use etcd_client::WatchOptions;
use serde::Serialize;

use super::inventory::{Clients, KeyClient};
use super::{CmdError, Context, check_env, outputs_for};
use crate::history::{HistoryStore, PassRecord, RecordKey, TargetResult};
use crate::source::at;
use crate::source::etcd_admin::Meta;
use crate::source::{SourceError, vault_admin};
use crate::text::{escape_controls, shorten};
use crate::when::{When, format_ms};

/// At most this many changes are read (the newest are kept).
const MAX_CHANGES: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// When: exact for secrets; for keys, the first pass that read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip)]
    at_ms: Option<i64>,
    /// False when `at` is the time of the pass that read the change.
    pub exact: bool,
    pub kind: &'static str,
    pub name: String,
    /// `set`, `delete` (keys), `version` (secrets).
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_by: Option<Carried>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Carried {
    pub at: String,
    pub replica: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub ok: bool,
    /// Targets written by that pass that the change concerns.
    pub targets: Vec<String>,
    /// Targets that failed in that pass (and are concerned).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// What a filter selects.
struct Filter {
    keys: Option<BTreeSet<String>>,
    secrets: Option<BTreeSet<String>>,
}

impl Filter {
    fn key(&self, name: &str) -> bool {
        self.keys.as_ref().is_none_or(|k| k.contains(name))
    }
}

/// `cfgsync log --env E [NAME]`.
pub async fn run(ctx: &Context<'_>, env: &str, name: Option<&str>, since: Option<&str>) -> Result<ExitCode, CmdError> {
    check_env(ctx.config, env)?;
    let filter = filter(ctx, env, name);
    let clients = Clients::new(ctx.config);
    let KeyClient::Etcd { source, settings } = &clients.keys else {
        return Err(CmdError::NoPast { env: env.to_owned() });
    };
    let store = HistoryStore::for_config(ctx.config, None);
    let records = store
        .newest(env, None, usize::MAX)
        .await
        .map_err(|e| CmdError::Point(Box::new(crate::history::point::PointError::History(e))))?;
    let mut records: Vec<(RecordKey, PassRecord)> = records.into_iter().rev().collect();
    fill_versions(&mut records);
    let since_point = match since {
        Some(s) => Some(super::at::resolve_when(ctx.config, env, &When::parse(s)?).await?),
        None => None,
    };
    let source_err = |source: SourceError| CmdError::Source { env: env.to_owned(), source };
    let oldest = at::oldest_revision(source, &settings.env_prefix(env)).await.map_err(source_err)?;
    // Changes after what the starting point saw.
    let from = since_point
        .as_ref()
        .and_then(|p| p.revision)
        .or_else(|| records.first().and_then(|(k, _)| (k.revision > 0).then_some(k.revision)))
        .map_or(oldest, |r| r + 1)
        .max(oldest);
    let since_ms = since_point.as_ref().and_then(|p| p.at_ms).or_else(|| records.first().map(|(k, _)| k.at_ms));

    let mut changes = key_changes(source, settings, env, from, &filter).await.map_err(source_err)?;
    if let Some(vault) = &clients.vault {
        let client = vault.source.client().await.map_err(source_err)?;
        let paths = match &filter.secrets {
            Some(p) => p.clone(),
            None => match vault_admin::list_env(&client, &vault.mount, env).await {
                Ok(listed) => listed.into_iter().collect(),
                Err(SourceError::Denied { .. }) => ctx.templates.secret_paths(env),
                Err(e) => return Err(source_err(e)),
            },
        };
        for path in paths {
            let Some(info) = at::versions(&client, &vault.mount, env, &path).await.map_err(source_err)? else {
                continue;
            };
            for (version, v) in &info.versions {
                if since_ms.is_some_and(|s| v.created_ms.is_some_and(|c| c < s)) {
                    continue;
                }
                let newest = *version == info.current;
                changes.push(Change {
                    at: v.created_ms.map(format_ms),
                    at_ms: v.created_ms,
                    exact: true,
                    kind: "secret",
                    name: path.clone(),
                    action: if v.destroyed {
                        "version (destroyed)"
                    } else if v.deleted {
                        "version (deleted)"
                    } else {
                        "version"
                    },
                    revision: None,
                    version: Some(*version),
                    old: None,
                    new: None,
                    owner: info.custom_metadata.get("owner").filter(|_| newest).cloned(),
                    reason: info.custom_metadata.get("reason").filter(|_| newest).cloned(),
                    carried_by: None,
                });
            }
        }
    }
    for c in &mut changes {
        c.carried_by = carried(ctx, env, c, &records);
        if !c.exact
            && let Some(by) = &c.carried_by
        {
            c.at = Some(by.at.clone());
        }
        if c.at_ms.is_none() {
            c.at_ms = records.iter().find(|(k, _)| c.revision.is_some_and(|r| k.revision >= r)).map(|(k, _)| k.at_ms);
        }
    }
    changes.sort_by_key(|c| (c.at_ms.unwrap_or(i64::MAX), c.revision.unwrap_or(0)));
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match ctx.output {
        crate::cli::OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &changes).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        crate::cli::OutputFormat::Text => {
            for c in &changes {
                writeln!(out, "{}", line(c))?;
            }
            if changes.is_empty() {
                writeln!(out, "no change of env {env} since revision {from}")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The names a filter argument selects.
fn filter(ctx: &Context<'_>, env: &str, name: Option<&str>) -> Filter {
    let Some(name) = name else { return Filter { keys: None, secrets: None } };
    if let Some((index, _)) = outputs_for(ctx.config, env).find(|(_, o)| o.name == name) {
        let analysis = ctx.templates.analysis(index);
        return Filter {
            keys: Some(analysis.literal_names.iter().cloned().collect()),
            secrets: Some(analysis.secret_paths.clone()),
        };
    }
    let path = name.split_once('#').map_or(name, |(p, _)| p);
    Filter { keys: Some([name.to_owned()].into()), secrets: Some([path.to_owned()].into()) }
}

/// Every change of the env's keys from revision `from` to now, with the
/// owner and reason recorded at that revision.
async fn key_changes(
    etcd: &crate::source::etcd::EtcdSource,
    settings: &crate::config::EtcdSettings,
    env: &str,
    from: i64,
    filter: &Filter,
) -> Result<Vec<Change>, SourceError> {
    let prefix = settings.env_prefix(env);
    let meta_prefix = crate::source::etcd::keyspace::meta_prefix(&settings.prefix, env);
    let events = replay(etcd, &prefix, from).await?;
    let metas = replay(etcd, &meta_prefix, from).await.unwrap_or_default();
    // (name, revision) → the sibling written with the change.
    let meta_at: BTreeMap<(String, i64), Meta> = metas
        .into_iter()
        .filter_map(|e| {
            let meta = Meta::parse(&String::from_utf8_lossy(e.value.as_deref()?)).ok()?;
            Some(((e.name, e.revision), meta))
        })
        .collect();
    let mut out = Vec::new();
    for e in events.into_iter().filter(|e| filter.key(&e.name)) {
        let shown = |v: &Option<Vec<u8>>| {
            v.as_ref().map(|b| {
                shorten(&escape_controls(&crate::source::KeyData::from_bytes(b.clone()).shown(), false), 80)
                    .into_owned()
            })
        };
        let meta = match meta_at.get(&(e.name.clone(), e.revision)) {
            Some(m) => Some(m.clone()),
            // Written without one: the sibling as it was then.
            None => at::key_at(etcd, env, &format!("{meta_prefix}{}", e.name), e.revision)
                .await
                .ok()
                .flatten()
                .and_then(|(b, ..)| Meta::parse(&String::from_utf8_lossy(&b)).ok()),
        };
        out.push(Change {
            at: None,
            at_ms: None,
            exact: false,
            kind: "key",
            name: e.name,
            action: if e.value.is_some() { "set" } else { "delete" },
            revision: Some(e.revision),
            version: None,
            old: shown(&e.previous),
            new: shown(&e.value),
            owner: meta.as_ref().and_then(|m| m.owner.clone()),
            reason: meta.and_then(|m| m.reason),
            carried_by: None,
        });
    }
    Ok(out)
}

struct Event {
    name: String,
    revision: i64,
    /// `None`: deleted.
    value: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
}

/// Replays every event under `prefix` from revision `from` up to the
/// revision current when called: a watch from `from`, with previous values.
///
/// A watch does not say when it has caught up. It ends at an event at
/// the current revision; else after a progress notification (the current
/// revision, no events) followed by a quiet [`QUIET`]: etcd 3.5 sends that
/// notification only once the watch has caught up, etcd 3.4 at once, and
/// then the events of the past within its ~100 ms sync loop.
async fn replay(etcd: &crate::source::etcd::EtcdSource, prefix: &str, from: i64) -> Result<Vec<Event>, SourceError> {
    const QUIET: std::time::Duration = std::time::Duration::from_millis(500);
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
    let now = at::current_revision(etcd, prefix).await?;
    if from > now {
        return Ok(Vec::new());
    }
    let client = etcd.connect().await?;
    let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from.max(1));
    let read_err = |e: etcd_client::Error| SourceError::Read {
        source_kind: crate::source::SourceKind::Etcd,
        path: prefix.to_owned(),
        cause: e.to_string(),
    };
    let mut stream = client.watch_client().watch(prefix, Some(options)).await.map_err(read_err)?;
    stream.request_progress().await.map_err(read_err)?;
    let mut out = Vec::new();
    let started = tokio::time::Instant::now();
    let mut progressed = false;
    loop {
        let wait = if progressed { QUIET } else { LIMIT.saturating_sub(started.elapsed()) };
        let message = tokio::time::timeout(wait, stream.message()).await;
        let Ok(Ok(Some(resp))) = message else { break };
        if resp.canceled() {
            break;
        }
        if resp.events().is_empty() && !resp.created() && resp.header().is_some_and(|h| h.revision() >= now) {
            progressed = true;
        }
        let mut done = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            if kv.mod_revision() > now {
                done = true;
                break;
            }
            let name = String::from_utf8_lossy(kv.key());
            let deleted = ev.event_type() == etcd_client::EventType::Delete;
            out.push(Event {
                name: name.strip_prefix(prefix).unwrap_or(&name).to_owned(),
                revision: kv.mod_revision(),
                value: (!deleted).then(|| kv.value().to_vec()),
                previous: ev.prev_kv().map(|p| p.value().to_vec()),
            });
            done |= kv.mod_revision() >= now;
        }
        if out.len() > MAX_CHANGES {
            out.drain(..out.len() - MAX_CHANGES);
        }
        if done || started.elapsed() >= LIMIT {
            break;
        }
    }
    Ok(out)
}

/// Gives every record its effective secret versions (a record without
/// them has those of the record before).
fn fill_versions(records: &mut [(RecordKey, PassRecord)]) {
    let mut last: Option<BTreeMap<String, u64>> = None;
    for (_, r) in records.iter_mut() {
        match &r.secrets {
            Some(v) => last = Some(v.clone()),
            None => r.secrets.clone_from(&last),
        }
    }
}

/// The first recorded pass that read `change`, and the targets it wrote
/// (or failed) that the change concerns.
fn carried(ctx: &Context<'_>, env: &str, change: &Change, records: &[(RecordKey, PassRecord)]) -> Option<Carried> {
    let (_, record) = records.iter().find(|(_, r)| match (change.revision, change.version) {
        (Some(rev), _) => r.revision.is_some_and(|x| x >= rev),
        (None, Some(v)) => r.secrets.as_ref().and_then(|s| s.get(&change.name)).is_some_and(|x| *x >= v),
        (None, None) => false,
    })?;
    // Outputs whose templates name it (statically).
    let concerned: BTreeSet<String> = outputs_for(ctx.config, env)
        .filter(|(i, _)| {
            let a = ctx.templates.analysis(*i);
            match change.kind {
                "key" => a.literal_names.contains(&change.name),
                _ => a.secret_paths.contains(&change.name),
            }
        })
        .map(|(_, o)| o.name.clone())
        .collect();
    let output_of = |id: &str| {
        let rest = id.split_once('/').map_or(id, |(_, r)| r);
        rest.rsplit_once('/').map_or(rest, |(o, _)| o).to_owned()
    };
    let pick = |result: TargetResult| -> Vec<String> {
        let of: Vec<&crate::history::TargetEntry> = record.targets.iter().filter(|t| t.result == result).collect();
        let theirs: Vec<String> =
            of.iter().filter(|t| concerned.contains(&output_of(&t.id))).map(|t| t.id.clone()).collect();
        if concerned.is_empty() { of.iter().map(|t| t.id.clone()).collect() } else { theirs }
    };
    Some(Carried {
        at: format_ms(record.at_ms),
        replica: record.replica.clone(),
        revision: record.revision,
        ok: record.ok,
        targets: pick(TargetResult::Written),
        failed: pick(TargetResult::Failed),
    })
}

/// One change as one line.
fn line(c: &Change) -> String {
    let when = match (&c.at, c.exact) {
        (Some(t), true) => t.clone(),
        (Some(t), false) => format!("{t}~"),
        (None, _) => "(not read by a pass yet)".to_owned(),
    };
    let point = match (c.revision, c.version) {
        (Some(r), _) => format!("rev {r}"),
        (None, Some(v)) => format!("v{v}"),
        (None, None) => String::new(),
    };
    let what = match (c.kind, c.action) {
        ("key", "delete") => format!("key {} deleted (was {})", c.name, c.old.as_deref().unwrap_or("?")),
        ("key", _) => match &c.old {
            Some(old) => format!("key {} {old} → {}", c.name, c.new.as_deref().unwrap_or("")),
            None => format!("key {} = {}", c.name, c.new.as_deref().unwrap_or("")),
        },
        (_, action) => format!("secret {} (secret, {action})", c.name),
    };
    let who = match (&c.owner, &c.reason) {
        (None, None) => "(no owner or reason recorded)".to_owned(),
        (o, r) => format!(
            "by {}: {}",
            o.as_deref().map_or("(no owner)".into(), |o| escape_controls(o, false).into_owned()),
            r.as_deref().map_or("(no reason)".into(), |r| escape_controls(r, false).into_owned())
        ),
    };
    let passes = match &c.carried_by {
        None => "→ no pass yet".to_owned(),
        Some(p) => {
            let mut s = format!("→ pass {} by {}", p.at, escape_controls(&p.replica, false));
            if p.targets.is_empty() {
                s.push_str(": no target written");
            } else {
                s.push_str(&format!(": {}", p.targets.join(", ")));
            }
            if !p.failed.is_empty() {
                s.push_str(&format!(" (failed: {})", p.failed.join(", ")));
            }
            s
        }
    };
    format!("{when}  {point:<8} {what}  {who}  {passes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_what_who_and_where() {
        let c = Change {
            at: Some("2026-12-01T14:02:04Z".into()),
            at_ms: Some(0),
            exact: false,
            kind: "key",
            name: "api/db_host".into(),
            action: "set",
            revision: Some(57),
            version: None,
            old: Some("db1".into()),
            new: Some("db2".into()),
            owner: Some("team-db".into()),
            reason: Some("moved\x1b[2J".into()),
            carried_by: Some(Carried {
                at: "2026-12-01T14:02:04Z".into(),
                replica: "r1".into(),
                revision: Some(57),
                ok: true,
                targets: vec!["prod/api/0".into()],
                failed: Vec::new(),
            }),
        };
        assert_eq!(
            line(&c),
            "2026-12-01T14:02:04Z~  rev 57   key api/db_host db1 → db2  by team-db: moved\\e[2J  → pass 2026-12-01T14:02:04Z by r1: prod/api/0"
        );
    }
}
