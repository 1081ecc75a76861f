//! An env at a past point, as the developer commands read it: `diff
//! prod@-1h prod`, `explain prod@rev:1234 api/db_host`, `plan --at`,
//! `rollback --to`.
//!
//! [`read_env_at`] is [`super::inventory::read_env`] at a point: the keys
//! are one range read of `<prefix>/<env>/` at the point's revision (etcd's
//! own MVCC history), each secret is read at the version the point's pass
//! record names (else the version Vault's metadata says was current at the
//! point's time). Denied reads are recorded as denials, as for now; a
//! compacted revision or a destroyed version stops the command with an
//! error naming what is gone and the oldest point still reachable.

use std::collections::{BTreeMap, BTreeSet};

use super::CmdError;
use super::inventory::{Clients, Denial, EnvInventory, KeyClient, Keys, SecretScope, SecretState, etcd_role};
use crate::config::Config;
use crate::history::HistoryStore;
use crate::history::point::{self, Point};
use crate::source::at::{self, AtError};
use crate::source::{SourceError, SourceKind, vault_admin};
use crate::when::{EnvAt, When, now_ms};

/// `prod@-1h` → the env name and its resolved point (`None`: now).
pub async fn resolve(config: &Config, env_at: &EnvAt) -> Result<Option<Point>, CmdError> {
    let Some(when) = &env_at.at else { return Ok(None) };
    resolve_when(config, &env_at.env, when).await.map(Some)
}

/// Resolves `when` for `env` against the env's history.
pub async fn resolve_when(config: &Config, env: &str, when: &When) -> Result<Point, CmdError> {
    super::check_env(config, env)?;
    let store = HistoryStore::for_config(config, None);
    if !store.is_etcd() {
        return Err(CmdError::NoPast { env: env.to_owned() });
    }
    point::resolve(&store, env, when, now_ms()).await.map_err(|e| CmdError::Point(Box::new(e)))
}

fn at_error(env: &str, e: AtError) -> CmdError {
    CmdError::At { env: env.to_owned(), source: Box::new(e) }
}

/// The version of `path` at `point`: the records', else the one current
/// at the point's time. `Ok(None)`: the secret did not exist then.
pub async fn version_of(
    client: &vaultrs::client::VaultClient,
    mount: &str,
    point: &Point,
    path: &str,
) -> Result<Option<u64>, SourceError> {
    if let Some(v) = point.recorded_version(path) {
        return Ok(Some(v));
    }
    let Some(info) = at::versions(client, mount, &point.env, path).await? else { return Ok(None) };
    Ok(match point.at_ms {
        Some(t) => info.at_time(t),
        None => Some(info.current),
    })
}

/// Reads env `point.env` as it was at `point`.
pub async fn read_env_at(
    clients: &Clients,
    point: &Point,
    scope: &SecretScope,
    template_paths: &BTreeSet<String>,
) -> Result<EnvInventory, CmdError> {
    let env = point.env.as_str();
    let (KeyClient::Etcd { source, settings }, Some(revision)) = (&clients.keys, point.revision) else {
        return Err(CmdError::NoPast { env: env.to_owned() });
    };
    let mut inventory = EnvInventory {
        env: env.to_owned(),
        keys: Keys::Read { keys: BTreeMap::new(), revision: Some(revision) },
        secrets: BTreeMap::new(),
        listing_denied: None,
    };
    let prefix = settings.env_prefix(env);
    match at::keys_at(source, env, &prefix, revision).await {
        Ok(keys) => inventory.keys = Keys::Read { keys, revision: Some(revision) },
        Err(AtError::Source(e @ SourceError::Denied { .. })) => {
            inventory.keys = Keys::Denied(Denial {
                env: env.to_owned(),
                kind: SourceKind::Etcd,
                path: prefix,
                role: etcd_role(settings),
                error: e,
            });
        }
        Err(e) => return Err(at_error(env, e)),
    }
    let Some(vault) = &clients.vault else { return Ok(inventory) };
    let client = vault.source.client().await.map_err(|source| CmdError::Source { env: env.to_owned(), source })?;
    let mount = vault.mount.as_str();
    let mut paths: BTreeSet<String> = match scope {
        SecretScope::Paths(p) => p.clone(),
        SecretScope::All => match vault_admin::list_env(&client, mount, env).await {
            Ok(listed) => listed.into_iter().chain(template_paths.iter().cloned()).collect(),
            Err(e @ SourceError::Denied { .. }) => {
                let path = format!("{mount}/metadata/{env}/");
                inventory.listing_denied =
                    Some(Denial { env: env.to_owned(), kind: SourceKind::Vault, path, role: String::new(), error: e });
                template_paths.clone()
            }
            Err(source) => return Err(CmdError::Source { env: env.to_owned(), source }),
        },
    };
    // A secret deleted since is not listed any more, but the record knows it.
    if matches!(scope, SecretScope::All) {
        paths.extend(point.versions.iter().flat_map(|v| v.keys().cloned()));
    }
    // cfgsync's own secrets (the fingerprint key) as `read_env` leaves them out.
    paths.retain(|p| !clients.hides(p, template_paths));
    for path in paths {
        let state = match version_of(&client, mount, point, &path).await {
            Ok(None) => SecretState::Absent,
            Ok(Some(version)) => match at::secret_at(&client, mount, env, &path, version).await {
                Ok(secret) => SecretState::Read(secret),
                Err(AtError::Source(e @ SourceError::Denied { .. })) => SecretState::Denied(Denial {
                    env: env.to_owned(),
                    kind: SourceKind::Vault,
                    path: vault_admin::shown_path(mount, env, &path),
                    role: String::new(),
                    error: e,
                }),
                Err(e) => return Err(at_error(env, e)),
            },
            Err(e @ SourceError::Denied { .. }) => SecretState::Denied(Denial {
                env: env.to_owned(),
                kind: SourceKind::Vault,
                path: format!("{mount}/metadata/{env}/{path}"),
                role: String::new(),
                error: e,
            }),
            Err(source) => return Err(CmdError::Source { env: env.to_owned(), source }),
        };
        inventory.secrets.insert(path, state);
    }
    if inventory.denials().iter().any(|d| d.kind == SourceKind::Vault) {
        let role = vault_admin::token_role(&client).await;
        for s in inventory.secrets.values_mut() {
            if let SecretState::Denied(d) = s {
                d.role = role.clone();
            }
        }
        if let Some(d) = &mut inventory.listing_denied {
            d.role = role;
        }
    }
    Ok(inventory)
}
