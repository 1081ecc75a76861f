//! `cfgsync whoami [--env E]`: who the current credentials are, and what
//! each env lets them read and write, asked of the servers.
//!
//! - **etcd**: the user is `user` (a password) or, without one, the client
//!   certificate's CN (etcd's `--client-cert-auth`); its roles come from
//!   etcd (a user may read their own record). Per env, each prefix cfgsync
//!   uses (`<prefix>/<env>/`, `_meta/<env>/`, `_state/<env>/`, `_history/<env>/`,
//!   `_secret-versions/<env>/`, `_service/envs/<env>/`) is checked for read with a count-only range
//!   and for write with a transaction whose condition never holds, so
//!   nothing is written (see [`etcd_admin::can_write`]). The secret
//!   markers' prefix answers two questions: may the reconciler read (watch)
//!   them, and may whoever runs `set-secret`, `import` or `rollback` write
//!   them (else its changes reach the service only within `[vault] refresh`).
//! - **Vault**: `lookup-self` (display name, login path, policies, TTL),
//!   and per env `sys/capabilities-self` on each secret path the templates
//!   read (and the fingerprint key), and on the env's metadata folder for
//!   listing: Vault evaluates its own policies.
//!
//! Nothing here is inferred from `policies/`: a role changed by hand shows
//! as it is. Exit 0 when every check got an answer, 1 when a server could
//! not answer one (named on stderr).

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::inventory::{Clients, KeyClient, VaultClientSide};
use super::{CmdError, Context, check_env};
use crate::cli::OutputFormat;
use crate::config::EtcdSettings;
use crate::source::etcd::{EtcdSource, Identity};
use crate::source::{etcd_admin, vault_admin};

/// One prefix or path, and what the caller may do there.
#[derive(Debug, Serialize)]
struct Access {
    source: &'static str,
    path: String,
    /// What is checked: `read`, `write`, `list`; `None` when the server
    /// could not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    read: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    list: Option<bool>,
}

#[derive(Debug, Serialize)]
struct EnvAccess {
    env: String,
    access: Vec<Access>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vault: Option<serde_json::Value>,
    envs: Vec<EnvAccess>,
    errors: Vec<String>,
    /// Who the credentials are, one line per server (text output).
    #[serde(skip)]
    identities: Vec<String>,
}

/// An etcd client that answered, with its settings.
type EtcdSide = (etcd_client::Client, EtcdSettings);
/// A Vault client that answered, with its KV mount.
type VaultSide = (Arc<vaultrs::client::VaultClient>, String);

/// `cfgsync whoami`.
pub async fn run(ctx: &Context<'_>, only: Option<&str>) -> Result<ExitCode, CmdError> {
    if let Some(env) = only {
        check_env(ctx.config, env)?;
    }
    let envs: Vec<&String> = ctx.config.envs.iter().filter(|e| only.is_none_or(|o| o == e.as_str())).collect();
    let clients = Clients::new(ctx.config);
    let mut report = Report::default();
    let etcd = match &clients.keys {
        KeyClient::Etcd { source, settings } => etcd_identity(source, settings, &mut report).await,
        KeyClient::Files { .. } => None,
    };
    let vault = match &clients.vault {
        Some(v) => vault_identity(ctx, v, &mut report).await?,
        None => None,
    };
    for env in envs {
        let mut access = Vec::new();
        if let Some(etcd) = &etcd {
            etcd_access(etcd, env, &mut access, &mut report.errors).await;
        }
        if let Some(vault) = &vault {
            vault_access(ctx, vault, env, &mut access, &mut report.errors).await;
        }
        report.envs.push(EnvAccess { env: env.clone(), access });
    }
    print(&report, ctx.output)?;
    for e in &report.errors {
        eprintln!("error: {}", vault_admin::one_line(e));
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Who the etcd credentials are, and their roles; the client when etcd answered.
async fn etcd_identity(source: &EtcdSource, settings: &EtcdSettings, report: &mut Report) -> Option<EtcdSide> {
    let client = match source.connect().await {
        Ok(client) => client,
        Err(e) => {
            report.errors.push(e.to_string());
            return None;
        }
    };
    let endpoints = settings.endpoints.join(",");
    let (who, name) = match source.identity() {
        Identity::User(u) => (format!("user {u:?}"), Some(u)),
        Identity::Certificate(cn) => (format!("certificate CN {cn:?}"), Some(cn)),
        Identity::Anonymous => ("no user (etcd auth off, or anonymous)".to_owned(), None),
    };
    let roles = match &name {
        Some(n) => etcd_admin::user_roles(&client, n).await,
        None => Ok(Vec::new()),
    };
    let roles_text = match &roles {
        Ok(r) if name.is_some() => format!(", roles {}", if r.is_empty() { "(none)".to_owned() } else { r.join(", ") }),
        Ok(_) => String::new(),
        Err(e) => format!(", roles unknown ({e})"),
    };
    report.identities.push(format!("etcd {endpoints}: {who}{roles_text}"));
    report.etcd = Some(serde_json::json!({
        "endpoints": settings.endpoints,
        "identity": source.identity(),
        "roles": roles.as_ref().ok(),
    }));
    Some((client, settings.clone()))
}

/// Who the Vault token is (`lookup-self`); the client when Vault answered
/// (also when the lookup failed: capabilities may still be asked).
async fn vault_identity(
    ctx: &Context<'_>,
    v: &VaultClientSide,
    report: &mut Report,
) -> Result<Option<VaultSide>, CmdError> {
    let client = match v.source.client().await {
        Ok(client) => client,
        Err(e) => {
            report.errors.push(e.to_string());
            return Ok(None);
        }
    };
    match vault_admin::token_identity(&client).await {
        Ok(id) => {
            let via = if id.path.is_empty() { "a token".to_owned() } else { id.path.clone() };
            let ttl = if id.ttl == 0 {
                "no expiry".to_owned()
            } else {
                format!("ttl {}s{}", id.ttl, if id.renewable { ", renewable" } else { "" })
            };
            let address = match &ctx.config.secrets {
                Some(crate::config::SecretsSource::Vault(v)) => v.address.clone(),
                _ => client.settings.address.to_string(),
            };
            report.identities.push(format!(
                "vault {address}: {:?} via {via}, policies {}; {ttl}",
                id.display_name,
                id.policies.join(", ")
            ));
            report.vault = Some(serde_json::to_value(&id).map_err(io::Error::from)?);
        }
        Err(e) => report.errors.push(e.to_string()),
    }
    Ok(Some((client, v.mount.clone())))
}

/// Read and write on each etcd prefix cfgsync uses for `env`.
async fn etcd_access((client, settings): &EtcdSide, env: &str, access: &mut Vec<Access>, errors: &mut Vec<String>) {
    for path in crate::source::etcd::keyspace::env_prefixes(&settings.prefix, env) {
        let read = etcd_admin::can_read(client, settings, &path).await;
        let write = etcd_admin::can_write(client, settings, &path).await;
        for e in [read.as_ref().err(), write.as_ref().err()].into_iter().flatten() {
            errors.push(format!("env {env}: {e}"));
        }
        access.push(Access { source: "etcd", path, read: read.ok(), write: write.ok(), list: None });
    }
}

/// Vault's capabilities on each secret path `env`'s templates read (and
/// the fingerprint key), and list on the env's metadata folder.
async fn vault_access(
    ctx: &Context<'_>,
    (client, mount): &VaultSide,
    env: &str,
    access: &mut Vec<Access>,
    errors: &mut Vec<String>,
) {
    let mut paths: BTreeSet<String> = ctx.templates.secret_paths(env);
    if let Some((fingerprint, _)) = &ctx.config.fingerprint_key {
        paths.insert(fingerprint.clone());
    }
    let mut asked: Vec<String> = paths.iter().map(|p| format!("{mount}/data/{env}/{p}")).collect();
    let metadata = format!("{mount}/metadata/{env}/");
    asked.push(metadata.clone());
    match vault_admin::capabilities(client, &asked).await {
        Ok(caps) => {
            for (path, c) in caps {
                let has = |what: &str| c.iter().any(|x| x == what || x == "root");
                let entry = if path == metadata {
                    Access { source: "vault", path, read: None, write: None, list: Some(has("list")) }
                } else {
                    let write = has("create") || has("update");
                    Access { source: "vault", path, read: Some(has("read")), write: Some(write), list: None }
                };
                access.push(entry);
            }
        }
        Err(e) => errors.push(format!("env {env}: {e}")),
    }
}

/// The report on stdout, as JSON or as text.
fn print(report: &Report, format: OutputFormat) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, report)?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            for line in &report.identities {
                writeln!(out, "{line}")?;
            }
            let width = report.envs.iter().flat_map(|e| &e.access).map(|a| a.path.len()).max().unwrap_or(0);
            let yes = |b: Option<bool>| match b {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            for e in &report.envs {
                writeln!(out, "env {}:", e.env)?;
                for a in &e.access {
                    let what = match a.list {
                        Some(l) => format!("list {}", yes(Some(l))),
                        None => format!("read {:<3}  write {}", yes(a.read), yes(a.write)),
                    };
                    writeln!(out, "  {:<5} {:<width$}  {what}", a.source, a.path)?;
                }
            }
        }
    }
    out.flush()
}
