//! The destinations of `cfgsync import`: etcd (plain values), Vault (one
//! KV v2 secret for the secret values) and, with `--adopt`, the GitLab or
//! GitHub target's record. Opened only for what the values need; read once for
//! the plan ([`Current`]), then written check-and-set against what was read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vaultrs::client::VaultClient;

use super::report::Written;
use super::{ADOPTED_FINGERPRINT, Dest, Item, Origin, Plan, Request};
use crate::cmd::inventory::{Clients, KeyClient};
use crate::config::{Config, EtcdSettings};
use crate::secret::SecretString;
use crate::source::etcd_admin::{self, GuardedPut, Meta};
use crate::source::{Secret, vault_admin};
use crate::targets::ci_dest::CiDest;
use crate::targets::github::GithubDest;
use crate::targets::gitlab::GitlabDest;
use crate::targets::state::{DestState, Record, StateKey, StateStore};

/// The most bytes of keys and values one etcd transaction carries (etcd's
/// request limit is 1.5 MiB by default).
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// What etcd and Vault hold now for the values to import.
#[derive(Default)]
pub(super) struct Current {
    /// Full etcd key → (value, mod_revision).
    pub keys: BTreeMap<String, (Vec<u8>, i64)>,
    pub secret: Option<Secret>,
    pub info: Option<vault_admin::SecretInfo>,
    /// GitLab: `KEY@scope` of the variables the record names already.
    pub recorded: BTreeSet<String>,
}

/// The CI target's record, to add the adopted items to.
struct Adoption {
    store: StateStore,
    /// The destination as the kind records it.
    dest: serde_json::Value,
    key: StateKey,
    state: DestState,
}

/// Open connections to what the values need.
pub(super) struct Destinations<'a> {
    etcd: Option<(etcd_client::Client, &'a EtcdSettings)>,
    /// The client, the mount and the secret path.
    vault: Option<(Arc<VaultClient>, &'a str, &'a str)>,
    record: Option<Adoption>,
}

impl<'a> Destinations<'a> {
    /// Connects to etcd when a value is plain, to Vault when one is secret,
    /// and reads what they hold for those values (and the GitLab record
    /// with `--adopt`). An error says what could not be read.
    pub async fn open(
        request: &'a Request,
        config: &Config,
        clients: &'a Clients,
        items: &[(super::Found, bool, Dest)],
    ) -> Result<(Destinations<'a>, Current), String> {
        let mut current = Current::default();
        let keys: Vec<String> = items
            .iter()
            .filter_map(|(_, _, d)| match d {
                Dest::Key { path, .. } => Some(path.clone()),
                Dest::Field { .. } => None,
            })
            .collect();
        let etcd = match &clients.keys {
            KeyClient::Etcd { source, settings } if !keys.is_empty() => {
                let client = source.connect().await.map_err(|e| e.to_string())?;
                current.keys = etcd_admin::get_many(&client, settings, &keys).await.map_err(|e| e.to_string())?;
                Some((client, settings))
            }
            _ => None,
        };
        let vault = match (&clients.vault, &request.secret_path) {
            (Some(v), Some(path)) if items.iter().any(|(_, secret, _)| *secret) => {
                let client = v.source.client().await.map_err(|e| e.to_string())?;
                current.secret =
                    vault_admin::read_secret(&client, &v.mount, &request.env, path).await.map_err(|e| e.to_string())?;
                current.info = vault_admin::read_metadata(&client, &v.mount, &request.env, path)
                    .await
                    .map_err(|e| e.to_string())?;
                Some((client, v.mount.as_str(), path.as_str()))
            }
            _ => None,
        };
        let target = match (&request.origin, &request.gitlab, &request.github) {
            (Origin::Gitlab(owner), Some(g), _) if request.adopt => {
                let dest = GitlabDest { url: g.url.clone(), owner: owner.clone(), token_env: g.token_env.clone() };
                Some((dest.state_key(&config.instance, &request.env), serde_json::to_value(&dest)))
            }
            (Origin::Github(scope), _, Some(g)) if request.adopt => {
                let dest = GithubDest { api_url: g.url.clone(), scope: scope.clone(), token_env: g.token_env.clone() };
                Some((dest.state_key(&config.instance, &request.env), serde_json::to_value(&dest)))
            }
            _ => None,
        };
        let record = match target {
            Some((key, dest)) => {
                let store = StateStore::new(config);
                let state =
                    store.load(&key).await.map_err(|cause| format!("reading {}: {cause}", store.describe(&key)))?;
                current.recorded = state.items.keys().cloned().collect();
                Some(Adoption { store, dest: dest.unwrap_or_default(), key, state })
            }
            None => None,
        };
        Ok((Destinations { etcd, vault, record }, current))
    }

    /// Where adopted variables are recorded, for the plan.
    pub fn record(&self) -> Option<String> {
        self.record.as_ref().map(|r| r.store.describe(&r.key))
    }

    /// Writes the plan: Vault (one version), then etcd (transactions of at
    /// most 128 puts), then the record of adopted variables; the first
    /// failure stops the rest. Returns what was written and the failure.
    pub async fn apply(self, request: &Request, plan: &Plan, current: &Current) -> (Written, Option<String>) {
        let mut written = Written::default();
        if let Some((client, mount, path)) = &self.vault
            && let Err(e) = write_vault(request, plan, current, client, mount, path, &mut written).await
        {
            return (written, Some(e));
        }
        if let Some((client, settings)) = &self.etcd
            && let Err(e) = write_etcd(request, plan, client, settings, &mut written).await
        {
            return (written, Some(e));
        }
        if let Some(Adoption { store, dest, key, mut state }) = self.record
            && !plan.adopt.is_empty()
        {
            for a in &plan.adopt {
                state.items.entry(a.id.clone()).or_insert_with(|| Record {
                    fingerprint: ADOPTED_FINGERPRINT.to_owned(),
                    adopted: a.attributes.clone(),
                    ..Record::default()
                });
            }
            state.dest = dest;
            if let Err(cause) = store.save(&key, &state).await {
                let e = format!(
                    "recording the adopted items in {}: {cause}; the values were written, the items not adopted: run the import again",
                    store.describe(&key)
                );
                return (written, Some(e));
            }
            written.adopted = plan.adopt.len();
        }
        (written, None)
    }
}

/// A value as text (readers keep only text; never an empty string for
/// bytes that are not).
fn text(item: &Item) -> Result<&str, String> {
    item.value.expose_str().ok_or_else(|| format!("{}: the value is not UTF-8 text; nothing written", item.name))
}

/// Owner and reason after the flags (as `cfgsync set` merges them).
fn merged(mut meta: Meta, request: &Request) -> Meta {
    if let Some(o) = &request.owner {
        meta.owner = Some(o.clone());
    }
    if let Some(r) = &request.reason {
        meta.reason = Some(r.clone());
    }
    meta
}

/// One new version of the secret: every field it had, the new ones, and
/// the replaced ones; then owner and reason.
async fn write_vault(
    request: &Request,
    plan: &Plan,
    current: &Current,
    client: &VaultClient,
    mount: &str,
    path: &str,
    written: &mut Written,
) -> Result<(), String> {
    let writes: Vec<&Item> = plan.items.iter().filter(|i| i.writes() && matches!(i.dest, Dest::Field { .. })).collect();
    if writes.is_empty() {
        return Ok(());
    }
    let mut fields = current.secret.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
    for item in &writes {
        if let Dest::Field { field } = &item.dest {
            fields.insert(field.clone(), SecretString::new(text(item)?));
        }
    }
    // A secret whose latest version is deleted reads as absent:
    // check-and-set then needs the metadata's version.
    let seen = match current.secret.as_ref().and_then(|s| s.version) {
        Some(v) => v,
        None => current.info.as_ref().map_or(0, |i| i.current_version),
    };
    let version =
        vault_admin::write_secret(client, mount, &request.env, path, &fields, seen).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("maximum number of strings") {
                // Vault and OpenBao listeners refuse a request body of more
                // than `max_request_json_strings` (default 1000) strings, and
                // a KV v2 version carries every field with its name.
                format!(
                    "{text}: the secret would hold {} fields, and one KV v2 write carries them all; import fewer secret values per --secret-path (e.g. --secret 'A*' with one path, then the rest with another)",
                    fields.len()
                )
            } else {
                text
            }
        })?;
    written.vault_version = Some(version);
    written.fields = writes.len();
    if request.owner.is_some() || request.reason.is_some() {
        let mut custom = current.info.as_ref().map(|i| i.custom_metadata.clone()).unwrap_or_default();
        let now =
            Meta { owner: custom.get("owner").cloned(), reason: custom.get("reason").cloned(), ..Meta::default() };
        let next = merged(now, request);
        for (k, v) in [("owner", next.owner), ("reason", next.reason)] {
            if let Some(v) = v {
                custom.insert(k.to_owned(), v);
            }
        }
        vault_admin::write_custom_metadata(client, mount, &request.env, path, &custom)
            .await
            .map_err(|e| format!("{e}; the values were written (version {version}), owner and reason were not"))?;
    }
    Ok(())
}

/// The keys to write (and their `_meta` siblings with owner and reason),
/// in transactions of at most [`etcd_admin::MAX_TXN_OPS`] puts and
/// [`MAX_TXN_BYTES`], each check-and-set.
async fn write_etcd(
    request: &Request,
    plan: &Plan,
    client: &etcd_client::Client,
    settings: &EtcdSettings,
    written: &mut Written,
) -> Result<(), String> {
    let writes: Vec<(&Item, &str, &str)> = plan
        .items
        .iter()
        .filter_map(|i| match &i.dest {
            Dest::Key { name, path } if i.writes() => Some((i, name.as_str(), path.as_str())),
            _ => None,
        })
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    let with_meta = request.owner.is_some() || request.reason.is_some();
    let metas = if with_meta {
        let keys: Vec<String> =
            writes.iter().map(|(_, name, _)| etcd_admin::meta_path(settings, &request.env, name)).collect();
        etcd_admin::get_many(client, settings, &keys).await.map_err(|e| e.to_string())?
    } else {
        BTreeMap::new()
    };
    // One group per value: its key, and its sibling when owner/reason are recorded.
    let mut groups: Vec<Vec<GuardedPut>> = Vec::new();
    for (item, name, path) in &writes {
        let mut group =
            vec![GuardedPut { key: (*path).to_owned(), value: text(item)?.to_owned(), seen_mod_revision: item.seen }];
        if with_meta {
            let meta_key = etcd_admin::meta_path(settings, &request.env, name);
            let (meta, seen) = match metas.get(&meta_key) {
                Some((bytes, rev)) => {
                    let text = String::from_utf8_lossy(bytes);
                    let meta = Meta::parse(&text).map_err(|cause| {
                        etcd_admin::EtcdAdminError::InvalidMeta { key: meta_key.clone(), cause }.to_string()
                    })?;
                    (meta, *rev)
                }
                None => (Meta::default(), 0),
            };
            group.push(GuardedPut { key: meta_key, value: merged(meta, request).to_json(), seen_mod_revision: seen });
        }
        groups.push(group);
    }
    for (puts, keys) in batches(groups) {
        match etcd_admin::put_guarded(client, settings, &puts).await {
            Ok(revision) => {
                written.etcd_revision = Some(revision);
                written.keys += keys;
            }
            Err(e) => {
                let done = if written.keys > 0 {
                    format!(
                        "; {} key(s) were written before it (revision {})",
                        written.keys,
                        written.etcd_revision.unwrap_or(0)
                    )
                } else {
                    String::new()
                };
                return Err(format!("{e}{done}"));
            }
        }
    }
    Ok(())
}

/// Groups of puts (a key and its sibling stay together) in transactions of
/// at most [`etcd_admin::MAX_TXN_OPS`] puts and [`MAX_TXN_BYTES`]; with the
/// number of groups in each.
pub(super) fn batches(groups: Vec<Vec<GuardedPut>>) -> Vec<(Vec<GuardedPut>, usize)> {
    let mut out = Vec::new();
    let (mut batch, mut count, mut bytes): (Vec<GuardedPut>, usize, usize) = (Vec::new(), 0, 0);
    for group in groups {
        let size: usize = group.iter().map(|p| p.key.len() + p.value.len()).sum();
        if !batch.is_empty() && (batch.len() + group.len() > etcd_admin::MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
            out.push((std::mem::take(&mut batch), count));
            (count, bytes) = (0, 0);
        }
        batch.extend(group);
        count += 1;
        bytes += size;
    }
    if !batch.is_empty() {
        out.push((batch, count));
    }
    out
}
