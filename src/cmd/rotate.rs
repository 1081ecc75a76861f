//! `cfgsync rotate verify --env E --secret PATH#FIELD [--wait 2m]`: after a
//! rotation (or a leak), is the old value gone from every place it was
//! copied to?
//!
//! ```text
//! $ cfgsync rotate verify --env prod --secret api/db#password
//! secret/prod/api/db#password: version 4 (written 2026-12-01T14:05:10Z)
//! pass: asked the service (leader r1); its pass of 2026-12-01T14:05:11Z answered
//!   ✓ prod/api/0  kubernetes-secret  Secret api/api in context prod: version 4
//!   ✗ prod/api/1  file  out/prod/api.env: version 3: failed (write_failed)
//!   - prod/dev/0  file  out/prod/dev.env: not verifiable here (a laptop's `cfgsync pull` writes it; never pulled on this machine)
//! 1 of 2 verifiable targets hold version 4
//! ```
//!
//! Steps:
//! 1. **A pass now**: through the running service when one leads the env
//!    (the `pass` key its [`crate::service`] watches; then the env's
//!    published status is awaited, up to `--wait`), else here, with the
//!    caller's credentials, like `reconcile --once --env E`.
//! 2. **Every target of every output that reads the secret** reports the
//!    fingerprint it holds ([`crate::targets::Target::held`]): Kubernetes
//!    objects and files are read back, GitLab variables read back (a
//!    hidden one by its record), GitHub variables read back and GitHub
//!    secrets by the record of what was written — GitHub secrets cannot be
//!    read back, and the line says so.
//! 3. Each is compared with the outputs rendered from the current version,
//!    and, when it differs, from the last versions before it (down to three
//!    back), so a target still on an old one is named with the version it
//!    holds, and why: failing (its code), fenced, not yet reached by a pass
//!    (from the env's published status and its history).
//!
//! Exit 0 only when every verifiable target holds the current version; 1
//! otherwise. A file target whose file is not on this machine is a
//! laptop's (`cfgsync pull`): not verifiable, shown with when it was last
//! written here, if ever, and not counted.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::inventory::Clients;
use super::{CmdError, Context, check_env, outputs_for, split_field};
use crate::config::{Config, KeysSource};
use crate::history::{HistoryStore, TargetResult};
use crate::reconcile::{self, PassOptions, Targets};
use crate::render::Rendered;
use crate::service::published::{EnvRecord, TargetState};
use crate::source::etcd::EtcdSource;
use crate::source::etcd::keyspace::ServiceKeys;
use crate::source::{SourceError, Sources, at};
use crate::targets::TargetKind;
use crate::targets::{Ctx, Held, HeldItem};
use crate::text::escape_controls;
use crate::when::{format_ms, now_ms};

/// How many versions before the current one a target is compared with.
const VERSIONS_BACK: u64 = 3;

/// The command line of `rotate verify`.
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    pub env: String,
    pub secret: String,
    pub wait: Duration,
}

/// Where one target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Holds the current version.
    Current,
    /// Holds an older version (named).
    Old,
    /// Holds neither the current version nor any of the last ones.
    Other,
    /// Nothing there.
    Absent,
    /// Could not be read.
    Unknown,
    /// A laptop's file: not on this machine.
    NotVerifiable,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub id: String,
    pub kind: &'static str,
    pub address: String,
    pub standing: Standing,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `read` (read back) or `record` (GitHub secrets, hidden GitLab variables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    pub env: String,
    pub secret: String,
    pub version: u64,
    pub pass: String,
    pub targets: Vec<TargetCheck>,
    pub verified: usize,
    pub verifiable: usize,
}

/// A pass asked of the running service: the leader and the etcd revision of the request (the answering pass's record names it:
/// [`EnvRecord::answers`]).
pub struct Asked {
    pub leader: String,
    pub revision: i64,
}

/// Asks the service that leads `env` for a pass now; `Ok(None)` when none
/// leads it (or there is no etcd).
pub async fn ask_service(config: &Config, env: &str) -> Result<Option<Asked>, String> {
    let KeysSource::Etcd(settings) = &config.keys else { return Ok(None) };
    let etcd = EtcdSource::new(settings.clone());
    let client = etcd.connect().await.map_err(|e| e.to_string())?;
    let keys = ServiceKeys::new(&settings.prefix);
    let leader = client.kv_client().get(keys.leader(env), None).await.map_err(|e| e.to_string())?;
    let Some(leader) = leader.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()) else {
        return Ok(None);
    };
    let at_ms = now_ms();
    let who = settings.user.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    let value = serde_json::json!({ "by": who, "at_ms": at_ms }).to_string();
    let put = client.kv_client().put(keys.asked(env), value, None).await.map_err(|e| match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => {
            format!("permission denied writing {} ({})", keys.asked(env), s.message())
        }
        other => format!("writing {}: {other}", keys.asked(env)),
    })?;
    let revision = put.header().map_or(i64::MAX, |h| h.revision());
    Ok(Some(Asked { leader: escape_controls(&leader, false).into_owned(), revision }))
}

/// The env's published status record, if any.
async fn status_record(config: &Config, env: &str) -> Option<EnvRecord> {
    let KeysSource::Etcd(settings) = &config.keys else { return None };
    let client = EtcdSource::new(settings.clone()).connect().await.ok()?;
    let resp = client.kv_client().get(ServiceKeys::new(&settings.prefix).status(env), None).await.ok()?;
    EnvRecord::parse(resp.kvs().first()?.value())
}

/// For `rollback`: asks the running service for a pass, and says what
/// happened (nothing is waited for).
pub async fn request_pass(config: &Config, env: &str, out: &mut dyn Write) {
    let line = match ask_service(config, env).await {
        Ok(Some(a)) => format!("asked the service (leader {}) for a pass now", a.leader),
        Ok(None) => format!("no service leads env {env}: `cfgsync reconcile --once --env {env}` writes the targets"),
        Err(e) => format!("could not ask the service for a pass ({e}): its next interval pass writes the targets"),
    };
    let _ = writeln!(out, "{line}");
}

/// `cfgsync rotate verify`.
pub async fn verify(
    ctx: &Context<'_>,
    args: &VerifyArgs,
    kubeconfig: Option<std::path::PathBuf>,
) -> Result<ExitCode, CmdError> {
    let env = args.env.as_str();
    check_env(ctx.config, env)?;
    let (path, field) = split_field(&args.secret).ok_or_else(|| CmdError::InvalidName {
        what: "secret",
        name: args.secret.clone(),
        why: "use PATH#FIELD, like api/db#password",
    })?;
    super::check_relative_name("secret path", path)?;
    let source_err = |source: SourceError| CmdError::Source { env: env.to_owned(), source };
    let clients = Clients::new(ctx.config);
    let Some(vault) = &clients.vault else {
        return Err(CmdError::NeedsSource {
            command: "rotate verify",
            what: "a [vault] section",
            hint: "the file source has no versions to verify",
        });
    };
    let client = vault.source.client().await.map_err(source_err)?;
    let versions = at::versions(&client, &vault.mount, env, path).await.map_err(source_err)?;
    let shown = format!("{}/{env}/{path}#{field}", vault.mount);
    let Some(versions) = versions else {
        eprintln!("error: no secret {}/{env}/{path}", vault.mount);
        return Ok(ExitCode::from(1));
    };
    let current = versions.current;

    // 1. A pass now.
    let targets = Targets::new(ctx.config, kubeconfig);
    let (pass, own_report) = pass_now(ctx, env, &targets, args.wait).await;

    // 2. What every target of every output reading the secret holds.
    let indices: Vec<usize> = outputs_for(ctx.config, env)
        .filter(|(i, _)| ctx.templates.analysis(*i).secret_paths.contains(path))
        .map(|(i, _)| i)
        .collect();
    let request = reconcile::request(ctx.config, ctx.templates, env, Some(&indices.iter().copied().collect()));
    let snapshot = Sources::new(ctx.config).fetch(&request).await.map_err(source_err)?;
    let secret = SecretAt { client: &client, mount: &vault.mount, env, path, current };
    let renders = render_versions(ctx, &secret, &snapshot, &indices).await;
    let keyed = crate::reconcile::fingerprinter(ctx.config, &snapshot);
    let tctx = Ctx { revision: snapshot.revision, ..Ctx::new(ctx.config, env, &keyed) };
    let why = Why::read(ctx.config, env, path, current, own_report.as_ref()).await;
    let mut checks = Vec::new();
    for (n, index) in indices.iter().enumerate() {
        let output = &ctx.config.outputs[*index];
        let rendered: Vec<(u64, &Rendered)> =
            renders.iter().filter_map(|(v, r)| Some((*v, r.get(n)?.as_ref().ok()?))).collect();
        for (t, target) in output.targets.iter().enumerate() {
            let id = reconcile::target_id(env, &output.name, t);
            let address = target.kind.address(env);
            let kind = target.kind.name();
            let mut check = TargetCheck {
                id: id.clone(),
                kind,
                address,
                standing: Standing::Unknown,
                version: None,
                by: None,
                why: None,
            };
            if rendered.first().is_none_or(|(v, _)| *v != current) {
                check.why = Some("the output does not render from the current version".to_owned());
                checks.push(check);
                continue;
            }
            let only: Vec<&Rendered> = rendered.iter().map(|(_, r)| *r).collect();
            match targets.held(&target.kind, &only, &tctx).await {
                Err(e) => check.why = Some(crate::text::one_line(&e.to_string())),
                Ok(items) => {
                    let by_version: Vec<(u64, Vec<HeldItem>)> = rendered.iter().map(|(v, _)| *v).zip(items).collect();
                    judge(&mut check, &by_version, &target.kind);
                }
            }
            if matches!(check.standing, Standing::Old | Standing::Other | Standing::Absent) && check.why.is_none() {
                check.why = Some(why.of(&id));
            }
            checks.push(check);
        }
    }
    let verifiable = checks.iter().filter(|c| c.standing != Standing::NotVerifiable).count();
    let verified = checks.iter().filter(|c| c.standing == Standing::Current).count();
    let written = versions.versions.get(&current).and_then(|v| v.created_ms).map(format_ms);
    let report = Verification {
        env: env.to_owned(),
        secret: shown.clone(),
        version: current,
        pass,
        targets: checks,
        verified,
        verifiable,
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        crate::cli::OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        crate::cli::OutputFormat::Text => print_text(&mut out, &report, written, path)?,
    }
    out.flush()?;
    Ok(if verified == verifiable { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The secret whose versions are verified.
struct SecretAt<'a> {
    client: &'a vaultrs::client::VaultClient,
    mount: &'a str,
    env: &'a str,
    path: &'a str,
    current: u64,
}

/// The outputs `indices` rendered from `snapshot` with each version of the
/// secret: the current one first, then the older ones still readable (at
/// most [`VERSIONS_BACK`] of them).
async fn render_versions(
    ctx: &Context<'_>,
    secret: &SecretAt<'_>,
    snapshot: &crate::source::Snapshot,
    indices: &[usize],
) -> Vec<(u64, Vec<Result<Rendered, crate::render::RenderError>>)> {
    let mut renders = Vec::new();
    let sandbox = crate::render::sandbox::Sandbox::global();
    let mut version = secret.current;
    while renders.len() <= VERSIONS_BACK as usize && version > 0 {
        let mut s = snapshot.clone();
        if version != secret.current {
            match at::secret_at(secret.client, secret.mount, secret.env, secret.path, version).await {
                Ok(old) => {
                    s.secrets.insert(secret.path.to_owned(), old);
                }
                Err(_) => {
                    version -= 1;
                    continue;
                }
            }
        }
        renders.push((version, sandbox.render(ctx.templates, &Arc::new(s), indices).await));
        version -= 1;
    }
    renders
}

/// The verification as text: the secret, the pass, one line per target.
fn print_text(out: &mut impl Write, report: &Verification, written: Option<String>, path: &str) -> io::Result<()> {
    let (current, env) = (report.version, &report.env);
    let written = written.map(|w| format!(" (written {w})")).unwrap_or_default();
    writeln!(out, "{}: version {current}{written}", report.secret)?;
    writeln!(out, "pass: {}", report.pass)?;
    for c in &report.targets {
        writeln!(out, "{}", text_line(c))?;
    }
    if report.targets.is_empty() {
        writeln!(out, "  (no output of env {env} reads {path})")?;
    }
    writeln!(out, "{} of {} verifiable targets hold version {current}", report.verified, report.verifiable)
}

fn text_line(c: &TargetCheck) -> String {
    let mark = match c.standing {
        Standing::Current => "✓",
        Standing::NotVerifiable => "-",
        _ => "✗",
    };
    let what = match (c.standing, c.version) {
        (Standing::Current | Standing::Old, Some(v)) => format!("version {v}"),
        (Standing::Other, _) => "holds neither the current version nor the last ones".to_owned(),
        (Standing::Absent, _) => "not there".to_owned(),
        (Standing::Unknown, _) => "cannot tell".to_owned(),
        (Standing::NotVerifiable, _) => "not verifiable here".to_owned(),
        _ => String::new(),
    };
    let by = match c.by {
        Some("record") => " (by the record of what was written)".to_owned(),
        _ => String::new(),
    };
    let why = c.why.as_ref().map(|w| format!(": {w}")).unwrap_or_default();
    format!("  {mark} {}  {}  {}: {what}{by}{why}", c.id, c.kind, c.address)
}

/// Classifies a target from what it holds against each version's items.
fn judge(check: &mut TargetCheck, by_version: &[(u64, Vec<HeldItem>)], kind: &TargetKind) {
    let Some((current, items)) = by_version.first() else { return };
    let recorded = items.iter().find_map(|i| match &i.held {
        Held::Recorded { why, .. } => Some(*why),
        _ => None,
    });
    check.by = Some(if recorded.is_some() { "record" } else { "read" });
    if let Some(why) = recorded {
        check.why = Some(why.to_owned());
    }
    if !items.is_empty() && items.iter().all(HeldItem::matches) {
        check.standing = Standing::Current;
        check.version = Some(*current);
        return;
    }
    if let Some(reason) = items.iter().find_map(|i| match &i.held {
        Held::Unknown(r) => Some(r.clone()),
        _ => None,
    }) {
        check.standing = Standing::Unknown;
        check.why = Some(reason);
        return;
    }
    if items.iter().all(|i| i.held == Held::Absent) {
        if matches!(kind, TargetKind::File(_)) {
            check.standing = Standing::NotVerifiable;
            check.why = Some("a laptop's `cfgsync pull` writes it; never written on this machine".to_owned());
        } else {
            check.standing = Standing::Absent;
        }
        check.by = None;
        return;
    }
    match by_version[1..].iter().find(|(_, items)| !items.is_empty() && items.iter().all(HeldItem::matches)) {
        Some((v, _)) => {
            check.standing = Standing::Old;
            check.version = Some(*v);
        }
        None => check.standing = Standing::Other,
    }
}

/// Runs or asks for a pass; says what happened, and the report when it ran here.
async fn pass_now(
    ctx: &Context<'_>,
    env: &str,
    targets: &Targets,
    wait: Duration,
) -> (String, Option<reconcile::EnvReport>) {
    match ask_service(ctx.config, env).await {
        Ok(Some(asked)) => {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if let Some(r) = status_record(ctx.config, env).await
                    && r.answers(asked.revision)
                {
                    let line = format!(
                        "asked the service (leader {}); its pass of {} answered",
                        asked.leader,
                        format_ms(r.at_ms as i64)
                    );
                    return (line, None);
                }
                if tokio::time::Instant::now() >= deadline {
                    let line = format!(
                        "asked the service (leader {}); no pass of it was published within {}",
                        asked.leader,
                        crate::when::When::Ago(wait).to_string().trim_start_matches('-')
                    );
                    return (line, None);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(None) => {
            let sources = Sources::new(ctx.config);
            let options = PassOptions { env: Some(env.to_owned()), ..Default::default() };
            let report = reconcile::run_pass(ctx.config, ctx.templates, &sources, targets, &options).await;
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let etcd = match &ctx.config.keys {
                KeysSource::Etcd(s) => Some(Arc::new(EtcdSource::new(s.clone()))),
                KeysSource::Files(_) => None,
            };
            let journal = crate::history::Journal::new(
                format!("rotate-verify@{}", host.trim()),
                etcd,
                crate::history::Policy::Writes,
            );
            let Some(env_report) = report.envs.into_iter().next() else { return ("no pass".to_owned(), None) };
            journal.pass(ctx.config, ctx.templates, &env_report, false, None).await;
            let counts = {
                let all = reconcile::Report { envs: vec![env_report] };
                let c = all.counts(true);
                let failed = all.failed();
                (c, failed, all.envs.into_iter().next())
            };
            let (c, failed, env_report) = counts;
            let mut parts: Vec<String> =
                c.iter().filter(|(k, _)| **k != "unchanged").map(|(k, n)| format!("{n} {k}")).collect();
            if parts.is_empty() {
                parts.push("nothing to write".to_owned());
            }
            if failed && !c.contains_key("failed") {
                parts.push("a failure".to_owned());
            }
            let line = format!("no service leads env {env}: ran a pass here ({})", parts.join(", "));
            (line, env_report)
        }
        Err(e) => (format!("could not ask the service for a pass ({e}); verifying what is there"), None),
    }
}

/// Why a target is not on the current version, from what is known.
struct Why {
    own: BTreeMap<String, String>,
    status: BTreeMap<String, String>,
    /// The version the newest recorded pass read, when older than current.
    not_reached: Option<u64>,
    fenced: Vec<String>,
}

impl Why {
    async fn read(config: &Config, env: &str, path: &str, current: u64, own: Option<&reconcile::EnvReport>) -> Self {
        let mut why = Why { own: BTreeMap::new(), status: BTreeMap::new(), not_reached: None, fenced: Vec::new() };
        if let Some(report) = own {
            let summary = crate::service::summary::PassSummary::of_env(report);
            for t in summary.targets {
                if t.fenced {
                    why.own.insert(t.id, "fenced: this replica may not write the env".to_owned());
                } else if let Some(f) = t.error {
                    why.own.insert(t.id, format!("failed ({}) in the pass just run", f.code));
                }
            }
        }
        if let Some(record) = status_record(config, env).await {
            for t in record.targets {
                let text = match t.state {
                    TargetState::Failing => format!("failing ({})", t.code.unwrap_or_default()),
                    TargetState::BackingOff => format!("backing off after failing ({})", t.code.unwrap_or_default()),
                    _ => continue,
                };
                why.status.insert(t.id, text);
            }
        }
        let store = HistoryStore::for_config(config, None);
        if let Ok(newest) = store.newest(env, None, 64).await {
            if let Some(v) = newest.iter().find_map(|(_, r)| r.secrets.as_ref()?.get(path).copied())
                && v < current
            {
                why.not_reached = Some(v);
            }
            if let Some((_, r)) = newest.first() {
                why.fenced =
                    r.targets.iter().filter(|t| t.result == TargetResult::Fenced).map(|t| t.id.clone()).collect();
            }
        }
        why
    }

    fn of(&self, id: &str) -> String {
        if let Some(w) = self.own.get(id).or_else(|| self.status.get(id)) {
            return w.clone();
        }
        if self.fenced.iter().any(|f| f == id) {
            return "fenced: its last pass lost the env's lead before writing".to_owned();
        }
        if let Some(v) = self.not_reached {
            return format!("not yet reached: the last recorded pass read version {v}");
        }
        "it differs from what cfgsync wrote (changed by hand?), or no pass has written it since".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(wanted: &str, held: Held) -> HeldItem {
        HeldItem { item: "x".into(), wanted: wanted.into(), held }
    }

    fn check() -> TargetCheck {
        TargetCheck {
            id: "prod/api/0".into(),
            kind: "kubernetes-secret",
            address: "a".into(),
            standing: Standing::Unknown,
            version: None,
            by: None,
            why: None,
        }
    }

    /// The targets of a config with one Kubernetes and one file target.
    fn targets() -> crate::config::Config {
        let text = "instance = \"t\"\n[files]\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nA = \"x\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"prod\"\nnamespace = \"api\"\nname = \"api\"\n[[output.target]]\nkind = \"file\"\npath = \"out/a.env\"\n";
        crate::config::parse(std::path::Path::new("/c/cfgsync.toml"), text, &BTreeMap::<String, String>::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_target_is_current_old_other_absent_or_not_verifiable() {
        let config = targets();
        let (kube, file) = (&config.outputs[0].targets[0].kind, &config.outputs[0].targets[1].kind);
        let versions = |held: &str| {
            vec![(3, vec![item("v3", Held::Read(held.into()))]), (2, vec![item("v2", Held::Read(held.into()))])]
        };
        let mut c = check();
        judge(&mut c, &versions("v3"), kube);
        assert_eq!((c.standing, c.version, c.by), (Standing::Current, Some(3), Some("read")));
        let mut c = check();
        judge(&mut c, &versions("v2"), kube);
        assert_eq!((c.standing, c.version), (Standing::Old, Some(2)));
        let mut c = check();
        judge(&mut c, &versions("by-hand"), kube);
        assert_eq!((c.standing, c.version), (Standing::Other, None));
        let mut c = check();
        judge(&mut c, &[(3, vec![item("v3", Held::Absent)])], kube);
        assert_eq!(c.standing, Standing::Absent);
        // A file nowhere on this machine: a laptop's.
        let mut c = check();
        judge(&mut c, &[(3, vec![item("v3", Held::Absent)])], file);
        assert_eq!(c.standing, Standing::NotVerifiable);
        assert!(
            text_line(&c).contains("not verifiable here: a laptop's `cfgsync pull` writes it"),
            "{}",
            text_line(&c)
        );
        // By record: said so.
        let mut c = check();
        let recorded = Held::Recorded { fingerprint: "v3".into(), why: "GitHub secrets cannot be read back" };
        judge(&mut c, &[(3, vec![item("v3", recorded)])], kube);
        assert_eq!((c.standing, c.by), (Standing::Current, Some("record")));
        assert!(
            text_line(&c)
                .ends_with("version 3 (by the record of what was written): GitHub secrets cannot be read back")
        );
    }
}
