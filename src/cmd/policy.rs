//! `cfgsync policy apply`: the etcd roles and Vault policies in `policies/`,
//! as code, and the per-env fingerprint key the reconciler needs.
//!
//! Each `policies/*.toml` file describes one role on both sources:
//!
//! ```toml
//! name = "cfgsync-reconciler-{{ env }}"
//! description = "What `cfgsync run` uses for one env: that env only."
//! per_env = true                       # one role per env of cfgsync.toml
//!
//! [etcd]                               # prefix grants, each on every key under it
//! read = ["{{ prefix }}/{{ env }}/"]
//!
//! [vault]                              # an ACL policy, HCL as Vault takes it
//! policy = '''
//! path "{{ mount }}/data/{{ env }}/*" { capabilities = ["read"] }
//! '''
//! ```
//!
//! Strings are Tera templates with `prefix` (the `[etcd]` prefix), `mount`
//! (the `[vault]` mount) and, for `per_env` roles, `env`.
//!
//! Decisions:
//! - **Apply makes each role agree** with its file: an etcd role gets
//!   exactly the listed prefix permissions (missing ones granted, others
//!   revoked); a Vault policy gets exactly the listed rules. Roles and
//!   policies not described here are never touched (only what it owns).
//! - **People are not created here.** Binding a person or a service to a
//!   role is an administrator's act (`etcdctl user grant-role alice
//!   cfgsync-developer`; a Vault auth method role or `vault token create
//!   -policy=cfgsync-developer`). Enabling etcd auth is too.
//! - **The fingerprint key** (`[fingerprint] key`, default
//!   `cfgsync/fingerprint#key`: secret `<mount>/<env>/cfgsync/fingerprint`,
//!   field `key`) is created in Vault for every env where it is missing:
//!   32 random bytes (aws-lc-rs `SystemRandom`), base64, written with
//!   check-and-set. An existing key is never replaced (rotating it would
//!   make every Secret look changed once), so applying twice changes
//!   nothing.
//! - etcd needs no prefixes created (keys are created by writing them);
//!   the reconciler role grants the ones `cfgsync run` uses, listed in
//!   `policies/reconciler.toml`.
//! - It runs with admin credentials from the usual places (`ETCDCTL_USER`,
//!   `VAULT_TOKEN`, or an etcd client certificate whose CN is an admin);
//!   `--dry-run` shows the changes without making them.
//! - `cfgsync policy plan` is the dry run as a check: each change, the
//!   lines of a Vault policy that would change, and an exit code like
//!   diff(1)'s (0 nothing to do, 1 changes, 2 could not tell), for CI.
//! - Every problem in every file is reported in one run, with file:line.
//! - **Which policies**: `--policies DIR` when given; else `policies/`
//!   next to the config file when that directory exists; else the ones
//!   shipped with cfgsync (the repository's `policies/`, built into the
//!   binary), so a first `policy apply` needs no copy of them. The first
//!   line says which was used (`"policies"` in `--output json`): applying
//!   roles from a directory nobody meant is the mistake this prevents.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::inventory::{Clients, KeyClient};
use super::{CmdError, ConfigContext};
use crate::cli::OutputFormat;
use crate::config::{Config, Location, Problem, SecretsSource};
use crate::source::etcd_admin::{self, Access, PrefixGrant, RoleChange};
use crate::source::vault_admin::{self, FieldChange, PolicyChange, one_line};

/// Problems with `policies/`: every one of them, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policies directory {dir}: {source}")]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("no policy files (*.toml) in {dir}")]
    Empty { dir: PathBuf },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\nerror: "))]
    Invalid(Vec<Problem>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    /// For people reading `policies/`; accepted and not used.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    per_env: bool,
    etcd: Option<RawEtcd>,
    vault: Option<RawVault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    readwrite: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    policy: String,
}

/// One role, rendered for the config it is applied with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    pub etcd: Option<Vec<PrefixGrant>>,
    pub vault_policy: Option<String>,
}

/// The values policy templates see.
pub struct Vars<'a> {
    pub prefix: &'a str,
    pub mount: &'a str,
    pub envs: &'a [String],
}

impl<'a> Vars<'a> {
    pub fn of(config: &'a Config) -> Self {
        let prefix = match &config.keys {
            crate::config::KeysSource::Etcd(e) => e.prefix.as_str(),
            crate::config::KeysSource::Files(_) => "/cfgsync",
        };
        let mount = match &config.secrets {
            Some(SecretsSource::Vault(v)) => v.mount.as_str(),
            _ => "secret",
        };
        Self { prefix, mount, envs: &config.envs }
    }
}

fn render(text: &str, vars: &Vars<'_>, env: Option<&str>) -> Result<String, String> {
    let mut ctx = vec![("prefix", vars.prefix), ("mount", vars.mount)];
    if let Some(env) = env {
        ctx.push(("env", env));
    }
    crate::render::render_field(text, &ctx)
}

/// The policies shipped with cfgsync: the repository's `policies/`.
const SHIPPED: &[(&str, &str)] = &[
    ("developer.toml", include_str!("../../policies/developer.toml")),
    ("reconciler.toml", include_str!("../../policies/reconciler.toml")),
];

/// Where the roles come from (module doc: "Which policies").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `--policies DIR`.
    Flag(PathBuf),
    /// `policies/` next to the config file.
    NextToConfig(PathBuf),
    /// Built into the binary.
    Shipped,
}

impl PolicySource {
    /// `--policies DIR`, else `policies/` next to the config when it is
    /// there, else the shipped ones.
    pub fn resolve(flag: Option<&Path>, config_dir: &Path) -> Self {
        if let Some(dir) = flag {
            return Self::Flag(dir.to_path_buf());
        }
        let next = config_dir.join("policies");
        // A file or a dangling link named `policies` is still what the
        // user meant: reading it fails with its name, never a silent switch.
        if std::fs::symlink_metadata(&next).is_ok() { Self::NextToConfig(next) } else { Self::Shipped }
    }

    /// The roles of this source, rendered.
    pub fn load(&self, vars: &Vars<'_>) -> Result<Vec<Role>, PolicyError> {
        match self {
            Self::Flag(dir) | Self::NextToConfig(dir) => load(dir, vars),
            Self::Shipped => load_texts(
                SHIPPED
                    .iter()
                    .map(|(name, text)| (Path::new("(shipped with cfgsync)").join(name), Ok((*text).to_owned()))),
                vars,
            ),
        }
    }

    /// The line that says which policies were used.
    pub fn describe(&self) -> String {
        match self {
            Self::Flag(dir) => format!("policies: {} (--policies)", crate::text::display_path(dir)),
            Self::NextToConfig(dir) => format!("policies: {} (next to the config)", crate::text::display_path(dir)),
            Self::Shipped => {
                "policies: the ones shipped with cfgsync (no policies/ next to the config; --policies DIR names another)"
                    .to_owned()
            }
        }
    }

    /// `"policies"` in `--output json`: the directory, or `"shipped"`.
    fn json(&self) -> serde_json::Value {
        match self {
            Self::Flag(dir) | Self::NextToConfig(dir) => dir.display().to_string().into(),
            Self::Shipped => "shipped".into(),
        }
    }
}

/// Reads and renders every `*.toml` in `dir`, reporting every problem.
pub fn load(dir: &Path, vars: &Vars<'_>) -> Result<Vec<Role>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir { dir: dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PolicyError::Empty { dir: dir.to_path_buf() });
    }
    load_texts(
        files.into_iter().map(|file| {
            let text = std::fs::read_to_string(&file);
            (file, text)
        }),
        vars,
    )
}

/// Parses and renders each (file, text) in order, reporting every problem.
fn load_texts(
    files: impl IntoIterator<Item = (PathBuf, io::Result<String>)>,
    vars: &Vars<'_>,
) -> Result<Vec<Role>, PolicyError> {
    let mut problems = Vec::new();
    let mut roles: Vec<Role> = Vec::new();
    for (file, text) in files {
        let at = |offset: usize, text: &str| Location::at(&file, text, offset);
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem { location: None, message: format!("cannot read {}: {e}", file.display()) });
                continue;
            }
        };
        let raw: RawRole = match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::at(at(e.span().map_or(0, |s| s.start), &text), e.message().trim_end()));
                continue;
            }
        };
        let envs: Vec<Option<&str>> =
            if raw.per_env { vars.envs.iter().map(|e| Some(e.as_str())).collect() } else { vec![None] };
        if raw.per_env && !raw.name.contains("env") {
            problems.push(Problem::at(
                at(0, &text),
                format!("role {:?} has per_env = true but its name does not use {{{{ env }}}}", raw.name),
            ));
            continue;
        }
        for env in envs {
            let mut fail = |what: &str, e: String| {
                problems.push(Problem::at(at(0, &text), format!("{what}: {e}")));
            };
            let Ok(name) = render(&raw.name, vars, env).map_err(|e| fail("name", e)) else { continue };
            let etcd = raw.etcd.as_ref().map(|e| {
                let mut grants = Vec::new();
                for (access, list) in
                    [(Access::Read, &e.read), (Access::Write, &e.write), (Access::Readwrite, &e.readwrite)]
                {
                    for p in list {
                        match render(p, vars, env) {
                            Ok(prefix) if prefix.starts_with('/') => grants.push(PrefixGrant { access, prefix }),
                            Ok(prefix) => fail(
                                &format!("role {name:?}, etcd {}", access.name()),
                                format!("prefix {prefix:?} must start with '/'"),
                            ),
                            Err(e) => fail(&format!("role {name:?}, etcd {}", access.name()), e),
                        }
                    }
                }
                grants
            });
            let vault_policy = match raw.vault.as_ref().map(|v| render(&v.policy, vars, env)) {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    fail(&format!("role {name:?}, vault policy"), e);
                    None
                }
                None => None,
            };
            if let Some(other) = roles.iter().find(|r| r.name == name) {
                problems.push(Problem::at(
                    at(0, &text),
                    format!("role {name:?} is also defined in {}", other.file.display()),
                ));
                continue;
            }
            roles.push(Role { name, file: file.clone(), etcd, vault_policy });
        }
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(problems));
    }
    Ok(roles)
}

#[derive(Debug, Serialize)]
pub struct Applied {
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<RoleChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<PolicyChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A per-env key `policy apply` provisions in Vault.
#[derive(Debug, Serialize)]
pub struct ProvisionedKey {
    pub env: String,
    /// `<mount>/<env>/<path>#<field>`.
    pub secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What applying `policies/` did (or would do).
struct Outcome {
    applied: Vec<Applied>,
    keys: Vec<ProvisionedKey>,
    /// Whether etcd and Vault were configured (and so looked at).
    etcd: bool,
    vault: bool,
    /// The Vault policies a plan would change: (name, rules now, rules wanted).
    policy_diffs: Vec<(String, String, String)>,
    failed: bool,
}

/// Makes etcd and Vault agree with `roles` (or, with `dry_run`, finds what
/// would change). `Err` is the exit code of a source that cannot be reached
/// (already reported).
async fn reconcile_roles(ctx: &ConfigContext<'_>, roles: &[Role], dry_run: bool) -> Result<Outcome, ExitCode> {
    let clients = Clients::new(ctx.config);
    let etcd = match &clients.keys {
        KeyClient::Etcd { source, .. } => match source.connect().await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {}", one_line(&e.to_string()));
                return Err(ExitCode::from(if dry_run { 2 } else { 1 }));
            }
        },
        KeyClient::Files { .. } => None,
    };
    let vault = match &clients.vault {
        Some(v) => match v.source.client().await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {}", one_line(&e.to_string()));
                return Err(ExitCode::from(if dry_run { 2 } else { 1 }));
            }
        },
        None => None,
    };
    let mut applied = Vec::new();
    let mut policy_diffs = Vec::new();
    let mut failed = false;
    for role in roles {
        let mut a = Applied { role: role.name.clone(), etcd: None, vault: None, error: None };
        if let (Some(client), Some(grants)) = (&etcd, &role.etcd) {
            match etcd_admin::apply_role(client, &role.name, grants, dry_run).await {
                Ok(c) => a.etcd = Some(c),
                Err(e) => a.error = Some(one_line(&e.to_string())),
            }
        }
        if a.error.is_none()
            && let (Some(client), Some(rules)) = (&vault, &role.vault_policy)
        {
            if dry_run && let Ok(Some(now)) = vault_admin::read_policy(client, &role.name).await {
                policy_diffs.push((role.name.clone(), now, rules.clone()));
            }
            match vault_admin::apply_policy(client, &role.name, rules, dry_run).await {
                Ok(c) => a.vault = Some(c),
                Err(e) => a.error = Some(one_line(&e.to_string())),
            }
        }
        failed |= a.error.is_some();
        applied.push(a);
    }
    let mut keys = Vec::new();
    if let (Some(client), Some(v), Some((path, field))) = (&vault, &clients.vault, &ctx.config.fingerprint_key) {
        for env in &ctx.config.envs {
            let secret = format!("{}#{field}", vault_admin::shown_path(&v.mount, env, path));
            let mut k = ProvisionedKey { env: env.clone(), secret, change: None, error: None };
            match vault_admin::ensure_generated_field(client, &v.mount, env, path, field, dry_run).await {
                Ok(c) => k.change = Some(c),
                Err(e) => k.error = Some(one_line(&e.to_string())),
            }
            failed |= k.error.is_some();
            keys.push(k);
        }
    }
    Ok(Outcome { applied, keys, etcd: etcd.is_some(), vault: vault.is_some(), policy_diffs, failed })
}

impl Outcome {
    /// How many changes applying would make (or made).
    fn changes(&self) -> usize {
        let roles: usize = self
            .applied
            .iter()
            .map(|a| {
                let etcd = a.etcd.as_ref().map_or(0, |c| usize::from(c.created) + c.granted.len() + c.revoked.len());
                let vault = usize::from(a.vault.is_some_and(|v| v != PolicyChange::Unchanged));
                etcd + vault
            })
            .sum();
        let keys = self.keys.iter().filter(|k| k.change.is_some_and(|c| c != FieldChange::Unchanged)).count();
        roles + keys
    }

    fn print(&self, ctx: &ConfigContext<'_>, source: &PolicySource, dry_run: bool, plan: bool) -> Result<(), CmdError> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        match ctx.output {
            OutputFormat::Json => {
                let mut doc: BTreeMap<&str, serde_json::Value> = [
                    ("policies", source.json()),
                    ("roles", serde_json::to_value(&self.applied).map_err(io::Error::from)?),
                    ("fingerprint_keys", serde_json::to_value(&self.keys).map_err(io::Error::from)?),
                ]
                .into();
                if plan {
                    doc.insert("changes", self.changes().into());
                }
                serde_json::to_writer_pretty(&mut out, &doc).map_err(io::Error::from)?;
                writeln!(out)?;
            }
            OutputFormat::Text => {
                writeln!(out, "{}", source.describe())?;
                let diffs = if plan { self.policy_diffs.as_slice() } else { &[] };
                print_text(&self.applied, &self.keys, diffs, dry_run && !plan, self.etcd, self.vault, &mut out)?;
                if plan {
                    match self.changes() {
                        0 => writeln!(out, "no changes: etcd and Vault agree with the policies")?,
                        n => writeln!(out, "{n} change(s): `cfgsync policy apply` makes them")?,
                    }
                }
            }
        }
        out.flush()?;
        for a in &self.applied {
            if let Some(e) = &a.error {
                eprintln!("error: role {}: {e}", a.role);
            }
        }
        for k in &self.keys {
            if let Some(e) = &k.error {
                eprintln!("error: fingerprint key {}: {e}", k.secret);
            }
        }
        Ok(())
    }
}

/// `cfgsync policy apply`.
pub async fn run_apply(ctx: &ConfigContext<'_>, dir: Option<&Path>, dry_run: bool) -> Result<ExitCode, CmdError> {
    let source = PolicySource::resolve(dir, &ctx.config.dir);
    let roles = source.load(&Vars::of(ctx.config))?;
    let outcome = match reconcile_roles(ctx, &roles, dry_run).await {
        Ok(o) => o,
        Err(_) => return Ok(ExitCode::from(1)),
    };
    outcome.print(ctx, &source, dry_run, false)?;
    Ok(if outcome.failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `cfgsync policy plan`: what `apply` would change, compared with what
/// the servers hold now; exit 0 nothing, 1 changes, 2 could not tell (like
/// diff(1)).
pub async fn run_plan(ctx: &ConfigContext<'_>, dir: Option<&Path>) -> Result<ExitCode, CmdError> {
    let source = PolicySource::resolve(dir, &ctx.config.dir);
    let roles = source.load(&Vars::of(ctx.config))?;
    let outcome = match reconcile_roles(ctx, &roles, true).await {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    outcome.print(ctx, &source, true, true)?;
    Ok(if outcome.failed {
        ExitCode::from(2)
    } else if outcome.changes() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(
    applied: &[Applied],
    keys: &[ProvisionedKey],
    policy_diffs: &[(String, String, String)],
    dry_run: bool,
    etcd: bool,
    vault: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let grant = |g: &PrefixGrant| format!("{} {}*", g.access.name(), g.prefix);
    for a in applied {
        if let Some(c) = &a.etcd {
            let mut parts = Vec::new();
            if c.created {
                parts.push("create".to_owned());
            }
            parts.extend(c.granted.iter().map(|g| format!("grant {}", grant(g))));
            parts.extend(c.revoked.iter().map(|g| format!("revoke {}", grant(g))));
            let what = if parts.is_empty() { "unchanged".to_owned() } else { parts.join(", ") };
            writeln!(out, "etcd role {}: {what}", a.role)?;
        }
        if let Some(c) = a.vault {
            let what = match c {
                PolicyChange::Created => "create",
                PolicyChange::Updated => "update",
                PolicyChange::Unchanged => "unchanged",
            };
            writeln!(out, "vault policy {}: {what}", a.role)?;
            if c == PolicyChange::Updated
                && let Some((_, now, wanted)) = policy_diffs.iter().find(|(name, ..)| *name == a.role)
            {
                print_rules_diff(now, wanted, out)?;
            }
        }
    }
    for k in keys {
        let what = match k.change {
            Some(FieldChange::Created) => "create (random 32 bytes)",
            Some(FieldChange::Added) => "add the field (random 32 bytes)",
            Some(FieldChange::Unchanged) => "unchanged",
            None => continue,
        };
        writeln!(out, "vault fingerprint key {}: {what}", k.secret)?;
    }
    if !etcd {
        writeln!(out, "(no [etcd] in the config: etcd roles not applied)")?;
    }
    if !vault {
        writeln!(out, "(no [vault] in the config: Vault policies not applied)")?;
    }
    if dry_run {
        writeln!(out, "dry run: nothing changed")?;
    }
    Ok(())
}

/// The lines of a Vault policy that would change, indented under it.
fn print_rules_diff(now: &str, wanted: &str, out: &mut dyn Write) -> io::Result<()> {
    let diff = similar::TextDiff::from_lines(now.trim(), wanted.trim());
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => continue,
        };
        writeln!(out, "    {sign} {}", crate::text::escape_controls(change.value().trim_end(), false))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policies_load_and_render_per_env() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let envs = vec!["prod".to_owned(), "staging".to_owned()];
        let roles = load(&dir, &Vars { prefix: "/cfg", mount: "kv", envs: &envs }).unwrap();
        let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cfgsync-developer", "cfgsync-reconciler-prod", "cfgsync-reconciler-staging"]);
        let prod = &roles[1];
        let grant = |access, prefix: &str| PrefixGrant { access, prefix: prefix.into() };
        assert_eq!(
            prod.etcd.as_ref().unwrap(),
            &[
                grant(Access::Read, "/cfg/prod/"),
                grant(Access::Read, "/cfg/_secret-versions/prod/"),
                grant(Access::Readwrite, "/cfg/_service/members/"),
                grant(Access::Readwrite, "/cfg/_service/envs/prod/"),
                grant(Access::Readwrite, "/cfg/_state/prod/"),
                grant(Access::Readwrite, "/cfg/_history/prod/"),
            ]
        );
        // The keys the service writes are the ones the role grants.
        let keys = crate::source::etcd::keyspace::ServiceKeys::new("/cfg");
        assert!(keys.leader("prod").starts_with("/cfg/_service/envs/prod/"));
        assert!(keys.status("prod").starts_with("/cfg/_service/envs/prod/"));
        assert!(keys.member("r1").starts_with("/cfg/_service/members/"));
        assert_eq!(crate::source::etcd::keyspace::state_prefix("/cfg", "prod"), "/cfg/_state/prod/");
        assert_eq!(crate::source::etcd::keyspace::history_prefix("/cfg", "prod"), "/cfg/_history/prod/");
        assert_eq!(crate::source::etcd::keyspace::secret_markers("/cfg", "prod"), "/cfg/_secret-versions/prod/");
        assert!(prod.vault_policy.as_ref().unwrap().contains("path \"kv/data/prod/*\""));
        let dev = &roles[0];
        let policy = dev.vault_policy.as_ref().unwrap();
        assert!(policy.contains("kv/data/staging/*") && !policy.contains("kv/data/prod/"), "{policy}");
    }

    #[test]
    fn the_flag_wins_then_policies_next_to_the_config_then_the_shipped_ones() {
        let config_dir = tempfile::tempdir().unwrap();
        let elsewhere = Path::new("/elsewhere/policies");
        assert_eq!(PolicySource::resolve(None, config_dir.path()), PolicySource::Shipped);
        assert_eq!(PolicySource::resolve(Some(elsewhere), config_dir.path()), PolicySource::Flag(elsewhere.into()));
        std::fs::create_dir(config_dir.path().join("policies")).unwrap();
        let next = config_dir.path().join("policies");
        assert_eq!(PolicySource::resolve(None, config_dir.path()), PolicySource::NextToConfig(next));
        assert_eq!(PolicySource::resolve(Some(elsewhere), config_dir.path()), PolicySource::Flag(elsewhere.into()));
    }

    /// The shipped policies are the repository's `policies/`, every file.
    #[test]
    fn the_shipped_policies_are_the_repositorys() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let envs = vec!["prod".to_owned(), "staging".to_owned()];
        let vars = Vars { prefix: "/cfg", mount: "kv", envs: &envs };
        let from_dir = load(&dir, &vars).unwrap();
        let shipped = PolicySource::Shipped.load(&vars).unwrap();
        let strip = |roles: Vec<Role>| -> Vec<Role> {
            roles.into_iter().map(|r| Role { file: r.file.file_name().unwrap().into(), ..r }).collect()
        };
        assert_eq!(strip(shipped), strip(from_dir));
    }

    #[test]
    fn every_problem_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "name = \"x\"\ncolour = 1\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "name = \"y\"\n[etcd]\nread = [\"no-slash/\"]\n").unwrap();
        std::fs::write(dir.path().join("c.toml"), "name = \"z\"\nper_env = true\n").unwrap();
        let envs = vec!["prod".to_owned()];
        let err = load(dir.path(), &Vars { prefix: "/c", mount: "s", envs: &envs }).unwrap_err().to_string();
        assert!(err.contains("a.toml:2:1: unknown field `colour`"), "{err}");
        assert!(err.contains("b.toml:1:1: role \"y\", etcd read: prefix \"no-slash/\" must start with '/'"), "{err}");
        assert!(err.contains("c.toml:1:1: role \"z\" has per_env = true"), "{err}");
    }
}
