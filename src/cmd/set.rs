//! `cfgsync set` and `cfgsync set-secret`: record a value together with who
//! decided it and why.
//!
//! ```text
//! cfgsync set prod api/db_host db2.prod.internal --owner team-db --reason "moved to the new cluster"
//! printf %s "$PW" | cfgsync set-secret prod api/db password --owner team-db --reason "rotated after INC-42" --yes
//! ```
//!
//! Decisions:
//! - **Both run with the caller's own credentials**, so the source's roles
//!   decide; a denied write names the path and the source's reason.
//! - **Show, ask, then write** (`--yes` skips the question; without a
//!   terminal to ask on, nothing is written and exit code is 2). The write
//!   is check-and-set against what was shown ([`etcd_admin::put_guarded`],
//!   [`vault_admin::write_secret`]): a confirmation never approves
//!   overwriting a change made in between.
//! - **A secret value never comes from argv** (shell history, `ps`): it is
//!   read from stdin when stdin is not a terminal, else typed at a prompt
//!   with echo off. What changes is shown as `(secret, differs)` /
//!   `(secret, new field)`, never the value. Other fields of the secret are
//!   kept (KV v2 writes whole versions, so they are read and written back).
//! - Owner and reason are merged into what is recorded: giving only
//!   `--reason` keeps the recorded owner. Changing a value without
//!   `--reason` warns that the recorded reason may no longer hold.
//! - Nothing to change → nothing written, exit 0.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;

use super::inventory::{Clients, KeyClient};
use super::terminal::{Style, confirm, read_secret_value};
use super::{CmdError, ConfigContext, check_env, check_relative_name};
use crate::cli::{SetArgs, SetSecretArgs};
use crate::source::etcd_admin::{self, GuardedPut, Meta};
use crate::source::vault_admin::{self, one_line};

/// Owner/reason after applying the flags, and whether that changes anything.
fn merged_meta(current: &Meta, owner: &Option<String>, reason: &Option<String>) -> (Meta, bool) {
    let mut next = current.clone();
    if let Some(o) = owner {
        next.owner = Some(o.clone());
    }
    if let Some(r) = reason {
        next.reason = Some(r.clone());
    }
    let changed = next != *current;
    (next, changed)
}

fn meta_lines(current: &Meta, next: &Meta, style: Style, out: &mut dyn Write) -> io::Result<()> {
    for (label, old, new) in [("owner", &current.owner, &next.owner), ("reason", &current.reason, &next.reason)] {
        if old != new {
            let shown = |v: &Option<String>| v.as_ref().map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"));
            writeln!(out, "    {label}: {} → {}", style.red(&shown(old)), style.green(&shown(new)))?;
        }
    }
    Ok(())
}

fn ask(yes: bool, question: &str) -> Result<bool, CmdError> {
    if yes {
        return Ok(true);
    }
    confirm(question)
}

/// `cfgsync set E NAME VALUE`.
pub async fn run_set(ctx: &ConfigContext<'_>, args: &SetArgs) -> Result<ExitCode, CmdError> {
    check_env(ctx.config, &args.env)?;
    check_relative_name("key name", &args.name)?;
    let clients = Clients::new(ctx.config);
    let KeyClient::Etcd { source, settings } = &clients.keys else {
        return Err(CmdError::NeedsSource {
            command: "set",
            what: "an [etcd] section",
            hint: "with the file source, edit source/<env>.toml instead",
        });
    };
    let (env, name) = (args.env.as_str(), args.name.as_str());
    let client = match source.connect().await {
        Ok(c) => c,
        Err(e) => return failed(&e.to_string()),
    };
    let key = etcd_admin::key_path(settings, env, name);
    let meta_key = etcd_admin::meta_path(settings, env, name);
    let current = match etcd_admin::get(&client, settings, &key).await {
        Ok(c) => c,
        Err(e) => return failed(&e.to_string()),
    };
    let (current_meta, meta_record) = match etcd_admin::get_meta(&client, settings, env, name).await {
        Ok(Some((m, r))) => (m, Some(r)),
        Ok(None) => (Meta::default(), None),
        Err(e) => return failed(&e.to_string()),
    };
    let value_changed = current.as_ref().map(|c| &c.value) != Some(&args.value);
    let (next_meta, meta_changed) = merged_meta(&current_meta, &args.owner, &args.reason);
    let style = Style::detect();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if !value_changed && !meta_changed {
        writeln!(out, "{env} {name}: nothing to change ({key} already holds this value)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if current.is_none() { "create" } else { "update" };
    writeln!(out, "{} {verb} etcd {key}", if current.is_none() { style.green("+") } else { style.yellow("~") })?;
    if value_changed {
        if let Some(c) = &current {
            writeln!(out, "    {}", style.red(&format!("- {}", c.value)))?;
        }
        writeln!(out, "    {}", style.green(&format!("+ {}", args.value)))?;
    }
    meta_lines(&current_meta, &next_meta, style, &mut out)?;
    out.flush()?;
    if value_changed && args.reason.is_none() && current_meta.reason.is_some() {
        eprintln!("warning: no --reason given: the recorded reason ({meta_key}) may no longer hold for the new value");
    }
    if !ask(args.yes, "Write this?")? {
        writeln!(out, "nothing written")?;
        return Ok(ExitCode::from(1));
    }
    let mut puts = Vec::new();
    if value_changed {
        let seen = current.as_ref().map_or(0, |c| c.mod_revision);
        puts.push(GuardedPut { key: key.clone(), value: args.value.clone(), seen_mod_revision: seen });
    }
    if meta_changed {
        let seen = meta_record.as_ref().map_or(0, |r| r.mod_revision);
        puts.push(GuardedPut { key: meta_key.clone(), value: next_meta.to_json(), seen_mod_revision: seen });
    }
    match etcd_admin::put_guarded(&client, settings, &puts).await {
        Ok(revision) => {
            writeln!(out, "written at etcd revision {revision}")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(&e.to_string()),
    }
}

/// A secret's field name: not empty, no `#` (it separates path and field).
fn check_field(field: &str) -> Result<(), CmdError> {
    if field.is_empty() || field.contains('#') {
        return Err(CmdError::InvalidName {
            what: "field",
            name: field.to_owned(),
            why: "use a non-empty name without '#'",
        });
    }
    Ok(())
}

/// The secret at `path` of `env` and its metadata, each `None` when absent.
async fn read_current(
    client: &vaultrs::client::VaultClient,
    mount: &str,
    env: &str,
    path: &str,
) -> Result<(Option<crate::source::Secret>, Option<vault_admin::SecretInfo>), crate::source::SourceError> {
    let current = vault_admin::read_secret(client, mount, env, path).await?;
    let info = vault_admin::read_metadata(client, mount, env, path).await?;
    Ok((current, info))
}

/// A secret's custom metadata with the owner and reason of `meta` set.
fn with_meta(mut custom: BTreeMap<String, String>, meta: &Meta) -> BTreeMap<String, String> {
    for (k, v) in [("owner", &meta.owner), ("reason", &meta.reason)] {
        if let Some(v) = v {
            custom.insert(k.to_owned(), v.clone());
        }
    }
    custom
}

fn failed(message: &str) -> Result<ExitCode, CmdError> {
    eprintln!("error: {}", one_line(message));
    eprintln!("error: nothing written");
    Ok(ExitCode::from(1))
}

/// `cfgsync set-secret E PATH FIELD`.
pub async fn run_set_secret(ctx: &ConfigContext<'_>, args: &SetSecretArgs) -> Result<ExitCode, CmdError> {
    check_env(ctx.config, &args.env)?;
    check_relative_name("secret path", &args.path)?;
    check_field(&args.field)?;
    let clients = Clients::new(ctx.config);
    let Some(vault) = &clients.vault else {
        return Err(CmdError::NeedsSource {
            command: "set-secret",
            what: "a [vault] section",
            hint: "with the file source, edit source/<env>.toml instead",
        });
    };
    let (env, path, field) = (args.env.as_str(), args.path.as_str(), args.field.as_str());
    let shown = vault_admin::shown_path(&vault.mount, env, path);
    let value = read_secret_value(&format!("value for {shown}#{field}: "))?;
    if value.expose().is_empty() {
        return Err(CmdError::EmptyValue);
    }
    let client = match vault.source.client().await {
        Ok(c) => c,
        Err(e) => return failed(&e.to_string()),
    };
    let (current, info) = match read_current(&client, &vault.mount, env, path).await {
        Ok(read) => read,
        Err(e) => return failed(&e.to_string()),
    };
    let custom = info.as_ref().map(|i| i.custom_metadata.clone()).unwrap_or_default();
    let current_meta =
        Meta { owner: custom.get("owner").cloned(), reason: custom.get("reason").cloned(), other: BTreeMap::new() };
    let (next_meta, meta_changed) = merged_meta(&current_meta, &args.owner, &args.reason);
    let old = current.as_ref().and_then(|s| s.fields.get(field));
    let value_changed = old.map(|o| o.expose()) != Some(value.expose());

    let style = Style::detect();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if !value_changed && !meta_changed {
        writeln!(out, "{shown}#{field}: nothing to change (secret, same)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let what = match (current.is_some(), old.is_some(), value_changed) {
        (false, _, _) => "(secret, new secret)",
        (true, false, _) => "(secret, new field)",
        (true, true, true) => "(secret, differs)",
        (true, true, false) => "(secret, same)",
    };
    let sign = if old.is_none() { style.green("+") } else { style.yellow("~") };
    writeln!(out, "{sign} vault {shown}#{field} {what}")?;
    meta_lines(&current_meta, &next_meta, style, &mut out)?;
    out.flush()?;
    if value_changed && args.reason.is_none() && current_meta.reason.is_some() {
        eprintln!("warning: no --reason given: the recorded reason may no longer hold for the new value");
    }
    if !ask(args.yes, "Write this?")? {
        writeln!(out, "nothing written")?;
        return Ok(ExitCode::from(1));
    }
    let mut version = current.as_ref().and_then(|s| s.version).unwrap_or(0);
    if value_changed {
        let mut fields = current.map(|s| s.fields).unwrap_or_default();
        fields.insert(field.to_owned(), value);
        // A secret that exists but whose latest version is deleted reads as
        // absent; check-and-set then needs the metadata's version.
        let seen = if version == 0 { info.as_ref().map_or(0, |i| i.current_version) } else { version };
        version = match vault_admin::write_secret(&client, &vault.mount, env, path, &fields, seen).await {
            Ok(v) => v,
            Err(e) => return failed(&e.to_string()),
        };
        // The running service reads it now, not within `[vault] refresh`.
        if let Err(e) = crate::source::secret_cache::announce(ctx.config, env, path, version).await {
            eprintln!("{}", crate::source::secret_cache::announce_failed(env, path, &e));
        }
    }
    if meta_changed {
        let custom = with_meta(custom, &next_meta);
        if let Err(e) = vault_admin::write_custom_metadata(&client, &vault.mount, env, path, &custom).await {
            eprintln!("error: {}", one_line(&e.to_string()));
            if value_changed {
                eprintln!("error: the value was written (version {version}); owner and reason were not");
            }
            return Ok(ExitCode::from(1));
        }
    }
    writeln!(out, "written: {shown} version {version}")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_merge_into_recorded_metadata() {
        let current = Meta { owner: Some("a".into()), reason: Some("r".into()), other: BTreeMap::new() };
        let (next, changed) = merged_meta(&current, &None, &Some("new".into()));
        assert_eq!((next.owner.as_deref(), next.reason.as_deref(), changed), (Some("a"), Some("new"), true));
        let (_, changed) = merged_meta(&current, &Some("a".into()), &None);
        assert!(!changed);
    }
}
