//! `cfgsync rollback --env E --to WHEN [--only GLOB]…`: put an env back
//! the way it was, through the source of truth.
//!
//! ```text
//! $ cfgsync rollback --env prod --to -1h --reason "INC-42: bad db host"
//! rollback prod to prod@-1h (etcd revision 1234, pass of 2026-12-01T14:02:04Z by r1)
//!   ~ key api/db_host
//!       - db2.prod.internal      (now)
//!       + db1.prod.internal      (then)
//!   ~ secret api/db#password (secret, differs): version 3 written again as a new version
//! targets that will follow (by the next pass):
//!   api: file out/prod/api.env, Secret api/api in context prod
//! Write this? [y/N]
//! ```
//!
//! Decisions:
//! - **Plan first** (key by key; secrets masked; the targets that will
//!   follow, found by rendering the env now and after the rollback and
//!   comparing), then confirm (`--yes` for scripts; no terminal and no
//!   `--yes`: nothing written, exit 2).
//! - **New revisions, never a rewind.** The old values are written into
//!   etcd and Vault as new revisions/versions, each key's owner/reason
//!   sibling saying `rollback to <point> by <who>` (Vault: the secret's
//!   custom_metadata), so rolling back a rollback is one more rollback, and
//!   `cfgsync log` shows it like any change.
//! - **One etcd transaction guarded by what was read**: every touched key
//!   and its sibling must still have the `mod_revision` the plan saw, and
//!   no key of the env may have changed since the plan's read (a compare
//!   over the env's prefix). A concurrent change aborts it with a message;
//!   nothing is written. etcd allows 128 operations per transaction (two
//!   per key): a larger rollback is refused, to be narrowed with `--only`.
//! - **Vault after etcd**, each secret with check-and-set against the
//!   version the plan saw (checked again right before the etcd write). A
//!   secret changed in between is not written, and said so.
//! - A secret that did not exist at the point is left as it is (named in
//!   the plan): deleting a secret is not something a rollback guesses.
//!   The fingerprint key is never rolled back.
//! - **Only the sources are written.** Every target follows through the
//!   ordinary loop: the service's watch sees the etcd change; each secret
//!   written back announces its new version with its marker
//!   (`<prefix>/_secret-versions/<env>/<path>`, the same one `set-secret`
//!   writes: [`crate::source::secret_cache::announce`]), so the running
//!   service reads that path at once instead of within `[vault] refresh`,
//!   and nothing else. Only when a marker cannot be written is the
//!   service asked for a pass that reads every secret
//!   ([`super::rotate::request_pass`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::at::{resolve_when, version_of};
use super::import::glob_match;
use super::inventory::{Clients, KeyClient};
use super::terminal::{Style, confirm};
use super::{CmdError, Context, outputs_for};
use crate::fingerprint::RunFingerprinter;
use crate::secret::SecretString;
use crate::source::at::{self, AtError};
use crate::source::etcd::prefix_end;
use crate::source::etcd_admin::{self, MAX_TXN_OPS, Meta};
use crate::source::{KeyValue, Secret, Snapshot, SourceError, vault_admin};
use crate::text::{escape_controls, one_line, shorten};
use crate::when::When;

/// The command line of `rollback`.
#[derive(Debug, Clone)]
pub struct RollbackArgs {
    pub env: String,
    pub to: String,
    pub only: Vec<String>,
    pub owner: Option<String>,
    pub reason: Option<String>,
    pub yes: bool,
    pub dry_run: bool,
}

/// One key to write back.
#[derive(Debug, Clone)]
struct KeyStep {
    name: String,
    /// The value then (`None`: it did not exist: delete it).
    then: Option<Vec<u8>>,
    /// The value now (`None`: it does not exist now).
    now: Option<Vec<u8>>,
    /// Its `mod_revision` when read (0: absent).
    seen: i64,
}

/// One secret to write back.
struct SecretStep {
    path: String,
    /// The fields to write as the new version.
    fields: BTreeMap<String, SecretString>,
    /// Fields that differ (names only).
    changed: Vec<String>,
    /// The version of the point.
    then_version: u64,
    /// The current version (check-and-set), 0 when it does not exist.
    seen: u64,
}

/// What the plan leaves alone, and why.
struct Left {
    name: String,
    why: String,
}

/// `cfgsync rollback`.
pub async fn run(ctx: &Context<'_>, args: &RollbackArgs) -> Result<ExitCode, CmdError> {
    let when = When::parse(&args.to)?;
    let point = resolve_when(ctx.config, &args.env, &when).await?;
    let env = args.env.as_str();
    let clients = Clients::new(ctx.config);
    let KeyClient::Etcd { source, settings } = &clients.keys else {
        return Err(CmdError::NoPast { env: env.to_owned() });
    };
    let source_err = |source: SourceError| CmdError::Source { env: env.to_owned(), source };
    let revision = point.revision.ok_or_else(|| CmdError::NoPast { env: env.to_owned() })?;
    let keys = key_steps(source, &settings.env_prefix(env), env, revision, args).await?;
    let secrets = match &clients.vault {
        Some(vault) => secret_steps(ctx, vault, env, &point, args).await?,
        None => SecretPlan::default(),
    };

    let style = Style::detect();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "rollback {env} to {} ({})", point.shown(), point.describe())?;
    if keys.steps.is_empty() && secrets.steps.is_empty() {
        for l in &secrets.left {
            writeln!(out, "  = {}: {}", l.name, l.why)?;
        }
        writeln!(out, "nothing to roll back: {env} already holds what it held then")?;
        return Ok(ExitCode::SUCCESS);
    }
    print_plan(&keys.steps, &secrets.steps, &secrets.left, style, &mut out)?;
    let followers = followers(ctx, env, &keys.now, &keys.steps, secrets.now, secrets.after, keys.read_at).await;
    writeln!(out, "targets that will follow (by the next pass):")?;
    if followers.is_empty() {
        writeln!(out, "  (none: no output renders differently)")?;
    }
    for f in &followers {
        writeln!(out, "  {f}")?;
    }
    out.flush()?;
    let (read_now, keys, secrets) = (keys.read_at, keys.steps, secrets.steps);
    if keys.len() * 2 > MAX_TXN_OPS {
        eprintln!(
            "error: the rollback changes {} keys: one etcd transaction holds {} (two operations per key, value and owner/reason); narrow it with --only",
            keys.len(),
            MAX_TXN_OPS / 2
        );
        eprintln!("error: nothing written");
        return Ok(ExitCode::from(2));
    }
    if args.dry_run {
        writeln!(out, "dry run: nothing written")?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes && !confirm("Write this?")? {
        writeln!(out, "nothing written")?;
        return Ok(ExitCode::from(1));
    }

    let audit = Audit::of(args, settings.user.as_deref(), &point.shown(), revision);
    // Vault's versions checked again right before the etcd write.
    if let Some(vault) = &clients.vault
        && let Some(changed) = vault_changed(vault, env, &secrets).await.map_err(source_err)?
    {
        eprintln!("error: {changed}; nothing was written: run the command again");
        return Ok(ExitCode::from(1));
    }
    if !keys.is_empty() {
        match write_keys(source, settings, env, &keys, &audit.meta(), read_now).await {
            Ok(rev) => writeln!(out, "etcd: {} keys written back at revision {rev}", keys.len())?,
            Err(message) => {
                eprintln!("error: {}", one_line(&message));
                eprintln!("error: nothing written");
                return Ok(ExitCode::from(1));
            }
        }
    }
    let written = match &clients.vault {
        Some(vault) => write_secrets(vault, env, &secrets, &audit, &mut out).await?,
        None => Written::default(),
    };
    if !announce(ctx.config, env, &written.versions).await {
        super::rotate::request_pass(ctx.config, env, &mut out).await;
    } else if !written.versions.is_empty() {
        writeln!(out, "{}", announced(ctx.config, env).await)?;
    }
    let failed = written.failed;
    writeln!(out, "the targets follow by the ordinary loop (`cfgsync plan --env {env}` shows what is left)")?;
    out.flush()?;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
/// The keys to write back, and the env's keys as they are now.
struct KeyPlan {
    steps: Vec<KeyStep>,
    now: BTreeMap<String, KeyValue>,
    /// The revision `now` was read at (the transaction's guard).
    read_at: i64,
}

/// Reads the env's keys then and now; the ones `--only` names that differ.
async fn key_steps(
    source: &crate::source::etcd::EtcdSource,
    prefix: &str,
    env: &str,
    revision: i64,
    args: &RollbackArgs,
) -> Result<KeyPlan, CmdError> {
    let source_err = |source: SourceError| CmdError::Source { env: env.to_owned(), source };
    let at_err = |e: AtError| CmdError::At { env: env.to_owned(), source: Box::new(e) };
    let then_keys = at::keys_at(source, env, prefix, revision).await.map_err(at_err)?;
    let read_at = at::current_revision(source, prefix).await.map_err(source_err)?;
    let now = at::keys_at(source, env, prefix, read_at).await.map_err(at_err)?;
    let mut steps = Vec::new();
    let names: BTreeSet<&String> = then_keys.keys().chain(now.keys()).collect();
    for name in names {
        let (then, current) = (then_keys.get(name), now.get(name));
        if then.map(|v| v.data.as_bytes()) == current.map(|v| v.data.as_bytes()) || !args.names(name) {
            continue;
        }
        steps.push(KeyStep {
            name: name.clone(),
            then: then.map(|v| v.data.as_bytes().to_vec()),
            now: current.map(|v| v.data.as_bytes().to_vec()),
            seen: current.map_or(0, mod_revision),
        });
    }
    Ok(KeyPlan { steps, now, read_at })
}

/// The secrets to write back, what is left as it is, and the env's
/// secrets now and after the rollback (to find the targets that follow).
#[derive(Default)]
struct SecretPlan {
    steps: Vec<SecretStep>,
    left: Vec<Left>,
    now: BTreeMap<String, Secret>,
    after: BTreeMap<String, Secret>,
}

/// Reads every secret of the env at the point's version and now (the
/// fingerprint key aside); the ones `--only` names that differ.
async fn secret_steps(
    ctx: &Context<'_>,
    vault: &super::inventory::VaultClientSide,
    env: &str,
    point: &crate::history::point::Point,
    args: &RollbackArgs,
) -> Result<SecretPlan, CmdError> {
    let source_err = |source: SourceError| CmdError::Source { env: env.to_owned(), source };
    let at_err = |e: AtError| CmdError::At { env: env.to_owned(), source: Box::new(e) };
    let mut plan = SecretPlan::default();
    let client = vault.source.client().await.map_err(source_err)?;
    let mount = vault.mount.as_str();
    let fingerprint_key = ctx.config.fingerprint_key.as_ref().map(|(p, _)| p.clone());
    let mut paths: BTreeSet<String> = ctx.templates.secret_paths(env);
    paths.extend(point.versions.iter().flat_map(|v| v.keys().cloned()));
    if let Ok(listed) = vault_admin::list_env(&client, mount, env).await {
        paths.extend(listed);
    }
    let fields_only: Vec<&String> = args.only.iter().filter(|g| g.contains('#')).collect();
    for path in paths {
        if Some(&path) == fingerprint_key.as_ref() {
            continue;
        }
        let current = at::versions(&client, mount, env, &path).await.map_err(source_err)?;
        let now = vault_admin::read_secret(&client, mount, env, &path).await.map_err(source_err)?;
        if let Some(s) = &now {
            plan.now.insert(path.clone(), s.clone());
        }
        let whole = args.names(&path);
        let Some(then_version) = version_of(&client, mount, point, &path).await.map_err(source_err)? else {
            if now.is_some() && whole {
                let why = format!("did not exist at {}: left as it is", point.shown());
                plan.left.push(Left { name: format!("secret {path}"), why });
            }
            continue;
        };
        let then = at::secret_at(&client, mount, env, &path, then_version).await.map_err(at_err)?;
        let now_fields = now.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
        let mut fields = if whole { then.fields.clone() } else { now_fields.clone() };
        if !whole {
            for (f, v) in &then.fields {
                if fields_only.iter().any(|g| glob_match(g, &format!("{path}#{f}"))) {
                    fields.insert(f.clone(), v.clone());
                }
            }
        }
        let names: BTreeSet<&String> = fields.keys().chain(now_fields.keys()).collect();
        let changed: Vec<String> = names
            .into_iter()
            .filter(|f| fields.get(*f).map(SecretString::expose) != now_fields.get(*f).map(SecretString::expose))
            .cloned()
            .collect();
        if changed.is_empty() {
            if let Some(s) = now {
                plan.after.insert(path.clone(), s);
            }
            continue;
        }
        plan.after.insert(path.clone(), Secret { fields: fields.clone(), version: None });
        plan.steps.push(SecretStep { path, fields, changed, then_version, seen: current.map_or(0, |c| c.current) });
    }
    Ok(plan)
}

impl RollbackArgs {
    /// `--only` names `name` (no `--only`: everything).
    fn names(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| glob_match(g, name))
    }
}

/// Who rolls back, and the reason written with every value.
struct Audit {
    who: String,
    reason: String,
}

impl Audit {
    /// `--owner`, else the etcd user, else `$USER`; the reason names the point.
    fn of(args: &RollbackArgs, etcd_user: Option<&str>, point: &str, revision: i64) -> Self {
        let who = args
            .owner
            .clone()
            .or_else(|| etcd_user.map(str::to_owned))
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let mut reason = format!("rollback to {point} (etcd revision {revision}) by {who}");
        if let Some(r) = &args.reason {
            reason.push_str(&format!(": {r}"));
        }
        Audit { who, reason }
    }

    fn meta(&self) -> Meta {
        Meta { owner: Some(self.who.clone()), reason: Some(self.reason.clone()), other: BTreeMap::new() }
    }
}

/// The first secret whose version moved since the plan read it, in words.
async fn vault_changed(
    vault: &super::inventory::VaultClientSide,
    env: &str,
    secrets: &[SecretStep],
) -> Result<Option<String>, SourceError> {
    if secrets.is_empty() {
        return Ok(None);
    }
    let client = vault.source.client().await?;
    for s in secrets {
        let current = at::versions(&client, &vault.mount, env, &s.path).await?;
        if current.map_or(0, |c| c.current) != s.seen {
            let shown = vault_admin::shown_path(&vault.mount, env, &s.path);
            return Ok(Some(format!("{shown} changed since it was shown (it is no longer version {})", s.seen)));
        }
    }
    Ok(None)
}

/// What [`write_secrets`] did.
#[derive(Default)]
struct Written {
    /// The paths written, with the version each was written as.
    versions: Vec<(String, u64)>,
    /// A secret, or its owner and reason, could not be written.
    failed: bool,
}

/// Puts the marker of every secret written back, so the env's running
/// service reads those paths now; says so on stderr for each that could
/// not be written. Returns whether every marker was written (nothing to
/// announce counts as done).
async fn announce(config: &crate::config::Config, env: &str, versions: &[(String, u64)]) -> bool {
    let mut all = true;
    for (path, version) in versions {
        match crate::source::secret_cache::announce(config, env, path, *version).await {
            Ok(true) => {}
            Ok(false) => all = false,
            Err(e) => {
                eprintln!(
                    "warning: {path:?} was written back, but its marker was not ({}): asking the service of env {env} for a pass instead",
                    crate::text::escape_controls(&e, false)
                );
                all = false;
            }
        }
    }
    all
}

/// What the markers reached, in words: the env's leader (which reads the
/// secrets now), or nobody.
async fn announced(config: &crate::config::Config, env: &str) -> String {
    let crate::config::KeysSource::Etcd(settings) = &config.keys else { return String::new() };
    let keys = crate::source::etcd::keyspace::ServiceKeys::new(&settings.prefix);
    let leader = match crate::source::etcd::EtcdSource::new(settings.clone()).connect().await {
        Ok(client) => client.kv_client().get(keys.leader(env), None).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match leader.map(|r| r.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())) {
        Ok(Some(leader)) => format!(
            "told the service (leader {}) through the secrets' markers: it reads them now",
            escape_controls(&leader, false)
        ),
        Ok(None) => format!("no service leads env {env}: `cfgsync reconcile --once --env {env}` writes the targets"),
        Err(e) => format!("the secrets' markers are written; who leads env {env} is unknown ({})", one_line(&e)),
    }
}

/// Writes each secret back (check-and-set on the version the plan read),
/// then its owner and reason.
async fn write_secrets(
    vault: &super::inventory::VaultClientSide,
    env: &str,
    secrets: &[SecretStep],
    audit: &Audit,
    out: &mut impl Write,
) -> Result<Written, CmdError> {
    let mut written = Written::default();
    if secrets.is_empty() {
        return Ok(written);
    }
    let client = vault.source.client().await.map_err(|source| CmdError::Source { env: env.to_owned(), source })?;
    let failed = &mut written.failed;
    for s in secrets {
        let shown = vault_admin::shown_path(&vault.mount, env, &s.path);
        let version = match vault_admin::write_secret(&client, &vault.mount, env, &s.path, &s.fields, s.seen).await {
            Ok(version) => version,
            Err(e) => {
                eprintln!("error: {}: not rolled back: {}", shown, one_line(&e.to_string()));
                *failed = true;
                continue;
            }
        };
        written.versions.push((s.path.clone(), version));
        writeln!(out, "vault: {shown}: version {} written again as version {version}", s.then_version)?;
        let mut custom = at::versions(&client, &vault.mount, env, &s.path)
            .await
            .ok()
            .flatten()
            .map(|v| v.custom_metadata)
            .unwrap_or_default();
        custom.insert("owner".into(), audit.who.clone());
        custom.insert("reason".into(), audit.reason.clone());
        if let Err(e) = vault_admin::write_custom_metadata(&client, &vault.mount, env, &s.path, &custom).await {
            eprintln!("error: {shown}: written, but owner and reason were not: {}", one_line(&e.to_string()));
            *failed = true;
        }
    }
    Ok(written)
}
fn mod_revision(v: &KeyValue) -> i64 {
    match v.origin {
        crate::source::KeyOrigin::Etcd { mod_revision, .. } => mod_revision,
        crate::source::KeyOrigin::File => 0,
    }
}

fn shown(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "(absent)".to_owned(),
        Some(b) => {
            shorten(&escape_controls(&crate::source::KeyData::from_bytes(b.clone()).shown(), false), 200).into_owned()
        }
    }
}

fn print_plan(
    keys: &[KeyStep],
    secrets: &[SecretStep],
    left: &[Left],
    style: Style,
    out: &mut dyn Write,
) -> io::Result<()> {
    for k in keys {
        let (mark, what) = match (&k.then, &k.now) {
            (Some(_), Some(_)) => (style.yellow("~"), "key"),
            (Some(_), None) => (style.green("+"), "key (deleted since: created again)"),
            (None, _) => (style.red("-"), "key (created since: deleted)"),
        };
        writeln!(out, "  {mark} {what} {}", k.name)?;
        writeln!(out, "      {}", style.red(&format!("- {}      (now)", shown(&k.now))))?;
        writeln!(out, "      {}", style.green(&format!("+ {}      (then)", shown(&k.then))))?;
    }
    for s in secrets {
        for field in &s.changed {
            writeln!(
                out,
                "  {} secret {}#{field} (secret, differs): version {} written again as a new version",
                style.yellow("~"),
                s.path,
                s.then_version
            )?;
        }
    }
    for l in left {
        writeln!(out, "  = {}: {}", l.name, l.why)?;
    }
    Ok(())
}

/// The outputs that render differently after the rollback, with their
/// targets' addresses: rendered now and after, compared by fingerprint.
async fn followers(
    ctx: &Context<'_>,
    env: &str,
    now_keys: &BTreeMap<String, KeyValue>,
    steps: &[KeyStep],
    now_secrets: BTreeMap<String, Secret>,
    after_secrets: BTreeMap<String, Secret>,
    revision: i64,
) -> Vec<String> {
    let mut after_keys = now_keys.clone();
    for k in steps {
        match &k.then {
            Some(v) => {
                after_keys.insert(k.name.clone(), KeyValue::new(v.clone(), crate::source::KeyOrigin::File));
            }
            None => {
                after_keys.remove(&k.name);
            }
        }
    }
    let mut after_all = now_secrets.clone();
    after_all.extend(after_secrets);
    let now = Snapshot { env: env.to_owned(), keys: now_keys.clone(), secrets: now_secrets, revision: Some(revision) };
    let after = Snapshot { env: env.to_owned(), keys: after_keys, secrets: after_all, revision: Some(revision) };
    let indices: Vec<usize> = outputs_for(ctx.config, env).map(|(i, _)| i).collect();
    let sandbox = crate::render::sandbox::Sandbox::global();
    let before = sandbox.render(ctx.templates, &Arc::new(now), &indices).await;
    let later = sandbox.render(ctx.templates, &Arc::new(after), &indices).await;
    let Ok(fp) = RunFingerprinter::new() else { return Vec::new() };
    let mut out = Vec::new();
    for ((index, b), a) in indices.iter().zip(before).zip(later) {
        let output = &ctx.config.outputs[*index];
        let print = |r: &crate::render::Rendered| {
            r.entries.iter().map(|(k, v)| (k.clone(), fp.of(v.expose()))).collect::<Vec<_>>()
        };
        let note = match (&b, &a) {
            (Ok(b), Ok(a)) if print(b) == print(a) => continue,
            (_, Err(e)) => format!(" (will not render: {})", one_line(&e.to_string())),
            _ => String::new(),
        };
        let targets: Vec<String> = output.targets.iter().map(|t| t.kind.address(env)).collect();
        out.push(format!("{}: {}{note}", output.name, targets.join(", ")));
    }
    out
}

/// Writes the keys back in one transaction guarded by what was read.
async fn write_keys(
    etcd: &crate::source::etcd::EtcdSource,
    settings: &crate::config::EtcdSettings,
    env: &str,
    keys: &[KeyStep],
    meta: &Meta,
    read_at: i64,
) -> Result<i64, String> {
    let client = etcd.connect().await.map_err(|e| e.to_string())?;
    let prefix = settings.env_prefix(env);
    let meta_keys: Vec<String> = keys.iter().map(|k| etcd_admin::meta_path(settings, env, &k.name)).collect();
    // The siblings as they are now (their mod_revision guards them too).
    let meta_seen = etcd_admin::get_many(&client, settings, &meta_keys).await.map_err(|e| e.to_string())?;
    let mut compares = vec![
        // Nothing in the env changed since the plan's read.
        Compare::mod_revision(prefix.as_str(), CompareOp::Less, read_at + 1).with_range(prefix_end(prefix.as_bytes())),
    ];
    let mut ops = Vec::new();
    for (k, meta_key) in keys.iter().zip(&meta_keys) {
        let key = etcd_admin::key_path(settings, env, &k.name);
        compares.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, k.seen));
        let seen_meta = meta_seen.get(meta_key).map_or(0, |(_, rev)| *rev);
        compares.push(Compare::mod_revision(meta_key.as_str(), CompareOp::Equal, seen_meta));
        ops.push(match &k.then {
            Some(v) => TxnOp::put(key.as_str(), v.clone(), None),
            None => TxnOp::delete(key.as_str(), None),
        });
        ops.push(TxnOp::put(meta_key.as_str(), meta.to_json(), None));
    }
    if compares.len() > MAX_TXN_OPS {
        // The per-key guards do not all fit: the prefix guard covers every
        // change but a deletion, which the plan's keys would show too.
        compares.truncate(1);
    }
    let reads: Vec<TxnOp> =
        keys.iter().map(|k| TxnOp::get(etcd_admin::key_path(settings, env, &k.name), None)).collect();
    let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
    let resp = client.kv_client().txn(txn).await.map_err(|e| match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => format!(
            "etcd: permission denied writing {prefix}{} ({}): a rollback writes with your own credentials",
            etcd_admin::who(settings),
            s.message()
        ),
        other => format!("etcd: writing {prefix}: {other}"),
    })?;
    if resp.succeeded() {
        return Ok(resp.header().map_or(0, |h| h.revision()));
    }
    let moved = keys
        .iter()
        .zip(resp.op_responses())
        .find_map(|(k, op)| match op {
            TxnOpResponse::Get(g) => {
                let now = g.kvs().first().map_or(0, |kv| kv.mod_revision());
                (now != k.seen).then(|| format!("{} (now at revision {now})", k.name))
            }
            _ => None,
        })
        .unwrap_or_else(|| format!("a key under {prefix}"));
    Err(format!(
        "etcd: {moved} changed since the plan was read (revision {read_at}): a concurrent change; nothing was written: run the command again"
    ))
}
