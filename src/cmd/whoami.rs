//! `cfgsync whoami [--env E]`: who the current credentials are, and what
//! each env lets them read and write, asked of the servers.
//!
//! - **etcd**: the user is `user` (a password) or, without one, the client
//!   certificate's CN (etcd's `--client-cert-auth`); its roles come from
//!   etcd (a user may read their own record). Per env, each prefix cfgsync
//!   uses (`<prefix>/<env>/`, `_meta/<env>/`, `_state/<env>/`, `_history/<env>/`,
//!   `_service/envs/<env>/`) is checked for read with a count-only range
//!   and for write with a transaction whose condition never holds, so
//!   nothing is written (see [`etcd_admin::can_write`]).
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

use serde::Serialize;

use super::inventory::{Clients, KeyClient};
use super::{CmdError, Context, check_env};
use crate::cli::OutputFormat;
use crate::source::etcd::Identity;
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
}

/// `cfgsync whoami`.
pub async fn run(ctx: &Context<'_>, only: Option<&str>) -> Result<ExitCode, CmdError> {
    if let Some(env) = only {
        check_env(ctx.config, env)?;
    }
    let envs: Vec<&String> = ctx.config.envs.iter().filter(|e| only.is_none_or(|o| o == e.as_str())).collect();
    let clients = Clients::new(ctx.config);
    let mut report = Report::default();
    let mut text = Vec::<String>::new();

    let etcd = match &clients.keys {
        KeyClient::Etcd { source, settings } => match source.connect().await {
            Ok(client) => {
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
                    Ok(r) if name.is_some() => {
                        format!(", roles {}", if r.is_empty() { "(none)".to_owned() } else { r.join(", ") })
                    }
                    Ok(_) => String::new(),
                    Err(e) => format!(", roles unknown ({e})"),
                };
                text.push(format!("etcd {endpoints}: {who}{roles_text}"));
                report.etcd = Some(serde_json::json!({
                    "endpoints": settings.endpoints,
                    "identity": source.identity(),
                    "roles": roles.as_ref().ok(),
                }));
                Some((client, settings.clone()))
            }
            Err(e) => {
                report.errors.push(e.to_string());
                None
            }
        },
        KeyClient::Files { .. } => None,
    };
    let vault = match &clients.vault {
        Some(v) => match v.source.client().await {
            Ok(client) => match vault_admin::token_identity(&client).await {
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
                    text.push(format!(
                        "vault {address}: {:?} via {via}, policies {}; {ttl}",
                        id.display_name,
                        id.policies.join(", ")
                    ));
                    report.vault = Some(serde_json::to_value(&id).map_err(io::Error::from)?);
                    Some((client, v.mount.clone()))
                }
                Err(e) => {
                    report.errors.push(e.to_string());
                    Some((client, v.mount.clone()))
                }
            },
            Err(e) => {
                report.errors.push(e.to_string());
                None
            }
        },
        None => None,
    };

    for env in envs {
        let mut access = Vec::new();
        if let Some((client, settings)) = &etcd {
            for path in crate::source::etcd::keyspace::env_prefixes(&settings.prefix, env) {
                let read = etcd_admin::can_read(client, settings, &path).await;
                let write = etcd_admin::can_write(client, settings, &path).await;
                for e in [read.as_ref().err(), write.as_ref().err()].into_iter().flatten() {
                    report.errors.push(format!("env {env}: {e}"));
                }
                access.push(Access { source: "etcd", path, read: read.ok(), write: write.ok(), list: None });
            }
        }
        if let Some((client, mount)) = &vault {
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
                Err(e) => report.errors.push(format!("env {env}: {e}")),
            }
        }
        report.envs.push(EnvAccess { env: env.clone(), access });
    }

    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            for line in &text {
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
    out.flush()?;
    for e in &report.errors {
        eprintln!("error: {}", vault_admin::one_line(e));
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
