//! `cfgsync plan --env E --at WHEN [--config-at]`: what every target of E
//! would become if the snapshot of that point were rendered now.
//!
//! The snapshot is read as the point names it (etcd at its revision, each
//! secret at its recorded version; see [`super::at`]) and goes through the
//! one pipeline ([`crate::reconcile::plan_env`]) like any pass: observed,
//! planned, nothing written. It is what `rollback --to` would make the
//! targets (before any change made since to the config).
//!
//! Decisions:
//! - **Today's config by default.** `--config-at` renders with the config
//!   and templates of the point's pass instead: taken from the git commit
//!   the pass recorded (the config directory must be a git repository then,
//!   and `git` on the PATH); the recorded config hash is checked against
//!   the commit's, and a mismatch (uncommitted changes at the time) is said.
//!   Paths in the old config still resolve against today's config directory.
//! - The fingerprint key is read at its current version: fingerprints are
//!   compared with what the targets hold now.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::at::{resolve_when, version_of};
use super::{CmdError, Context};
use crate::config::{Config, KeysSource};
use crate::history::point::Point;
use crate::reconcile::{self, PassOptions, Report, Targets};
use crate::render::Templates;
use crate::report::{self, Mode, Style};
use crate::source::at::{self, AtError};
use crate::source::etcd::EtcdSource;
use crate::source::{Snapshot, SourceError};
use crate::when::When;

/// The snapshot of `point` for the secret paths `config`'s templates need.
pub async fn snapshot_at(config: &Config, templates: &Templates, point: &Point) -> Result<Snapshot, CmdError> {
    let env = point.env.as_str();
    let at_error = |e: AtError| CmdError::At { env: env.to_owned(), source: Box::new(e) };
    let (KeysSource::Etcd(settings), Some(revision)) = (&config.keys, point.revision) else {
        return Err(CmdError::NoPast { env: env.to_owned() });
    };
    let etcd = EtcdSource::new(settings.clone());
    let keys = at::keys_at(&etcd, env, &settings.env_prefix(env), revision).await.map_err(at_error)?;
    let mut snapshot = Snapshot { env: env.to_owned(), keys, secrets: BTreeMap::new(), revision: Some(revision) };
    let request = reconcile::request(config, templates, env, None);
    let clients = super::inventory::Clients::new(config);
    let Some(vault) = &clients.vault else {
        if !request.secret_paths.is_empty() {
            return Err(CmdError::NoPast { env: env.to_owned() });
        }
        return Ok(snapshot);
    };
    let source_error = |source: SourceError| CmdError::Source { env: env.to_owned(), source };
    let client = vault.source.client().await.map_err(source_error)?;
    let fingerprint_key = config.fingerprint_key.as_ref().map(|(p, _)| p.as_str());
    for path in &request.secret_paths {
        let version = if Some(path.as_str()) == fingerprint_key {
            at::versions(&client, &vault.mount, env, path).await.map_err(source_error)?.map(|v| v.current)
        } else {
            version_of(&client, &vault.mount, point, path).await.map_err(source_error)?
        };
        if let Some(version) = version {
            let secret = at::secret_at(&client, &vault.mount, env, path, version).await.map_err(at_error)?;
            snapshot.secrets.insert(path.clone(), secret);
        }
    }
    Ok(snapshot)
}

/// `cfgsync plan --env E --at WHEN`.
pub async fn run(
    ctx: &Context<'_>,
    env: &str,
    when: &str,
    config_at: bool,
    kubeconfig: Option<PathBuf>,
) -> Result<ExitCode, CmdError> {
    let when = When::parse(when)?;
    let point = resolve_when(ctx.config, env, &when).await?;
    let old;
    let (config, templates) = if config_at {
        old = recorded_config(ctx.config, &point)?;
        (&old.0, &old.1)
    } else {
        (ctx.config, ctx.templates)
    };
    let snapshot = snapshot_at(config, templates, &point).await?;
    let targets = Targets::new(config, kubeconfig);
    let options = PassOptions { env: Some(env.to_owned()), dry_run: true, ..Default::default() };
    let plan =
        reconcile::plan_env(config, templates, &targets, Arc::new(snapshot), true, &options, &BTreeMap::new()).await;
    let report = Report { envs: vec![plan.report] };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        crate::cli::OutputFormat::Json => report::print_json(&report, report::Mode::Plan, &mut out)?,
        crate::cli::OutputFormat::Text => {
            let config_used = if config_at { "the config of that pass" } else { "today's config" };
            writeln!(out, "{} ({}), rendered with {config_used}:", point.shown(), point.describe())?;
            report::print_text(
                &report,
                Mode::Plan,
                Style::detect(),
                &mut out,
                &mut crate::telemetry::OneLine(io::stderr()),
            )?
        }
    }
    out.flush()?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Why the recorded config cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigAtError {
    #[error(
        "{point}: the pass recorded no git commit (the config directory was not a git repository): --config-at needs one"
    )]
    NoCommit { point: String },
    #[error("git {args}: {cause}")]
    Git { args: String, cause: String },
    #[error("the config of commit {commit}: {cause}")]
    Invalid { commit: String, cause: String },
}

/// Runs git in `dir`; stdout.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, ConfigAtError> {
    let shown = args.join(" ");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ConfigAtError::Git { args: shown.clone(), cause: e.to_string() })?;
    if !out.status.success() {
        let cause = crate::text::one_line(String::from_utf8_lossy(&out.stderr).trim());
        return Err(ConfigAtError::Git { args: shown, cause });
    }
    Ok(out.stdout)
}

/// The config and templates of the commit `point`'s pass recorded, parsed
/// as if they were today's file (paths resolve against today's directory).
fn recorded_config(config: &Config, point: &Point) -> Result<(Config, Templates), CmdError> {
    let err = |e: ConfigAtError| CmdError::ConfigAt(Box::new(e));
    let record = point.record.as_ref().map(|(_, r)| r);
    let commit =
        record.and_then(|r| r.git.clone()).ok_or_else(|| err(ConfigAtError::NoCommit { point: point.shown() }))?;
    let file = config.path.file_name().and_then(|f| f.to_str()).unwrap_or("cfgsync.toml");
    let text = git(&config.dir, &["show", &format!("{commit}:./{file}")]).map_err(err)?;
    let text = String::from_utf8(text)
        .map_err(|_| err(ConfigAtError::Invalid { commit: commit.clone(), cause: "not UTF-8".into() }))?;
    let mut old = crate::config::parse(&config.path, &text, &crate::config::ProcessEnv)?;
    let io = |e: std::io::Error| err(ConfigAtError::Invalid { commit: commit.clone(), cause: e.to_string() });
    let dir = tempfile::tempdir().map_err(io)?;
    let listed = git(&config.dir, &["ls-tree", "-r", "--name-only", &commit, "--", "templates/"]).map_err(err)?;
    for name in String::from_utf8_lossy(&listed).lines() {
        if name.split('/').any(|s| s == ".." || s.is_empty()) {
            continue;
        }
        let bytes = git(&config.dir, &["show", &format!("{commit}:./{name}")]).map_err(err)?;
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap_or(dir.path())).map_err(io)?;
        std::fs::write(&path, bytes).map_err(io)?;
    }
    old.templates_dir = dir.path().join("templates");
    let templates = Templates::compile(&old)?;
    let stamp = crate::history::ConfigStamp::of_parts(text.as_bytes(), &templates, None);
    if let Some(r) = record
        && r.config != stamp.hash
    {
        eprintln!(
            "warning: the pass recorded config {} but commit {commit} has {}: the config had uncommitted changes then",
            r.config, stamp.hash
        );
    }
    Ok((old, templates))
}
