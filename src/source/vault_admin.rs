//! Vault KV v2 beyond the reads a pass needs: listing an env's secrets,
//! reading and writing one secret with its version and `custom_metadata`,
//! naming the caller's token policies, and writing ACL policies.
//!
//! Used by the developer commands (`diff`, `pull`, `explain`, `set-secret`,
//! `policy apply`), which run with a person's own token and must tell
//! "you may not read this" apart from "this does not exist" for each path,
//! instead of failing the whole read as a pass does.
//!
//! Decisions:
//! - Listing is a recursive `LIST <mount>/metadata/<env>/`, as `vault kv
//!   list` does; a 404 is an empty folder.
//! - Paths in messages are the KV paths people type (`secret/prod/api/db`),
//!   except for listing, which names the metadata path a policy must allow
//!   (`secret/metadata/prod/`).
//! - A write is check-and-set against the version that was shown, like
//!   `vault kv put -cas`, so a confirmation cannot approve overwriting a
//!   version someone wrote in the meantime. Owner and reason go into the
//!   secret's `custom_metadata`, merged with what is there.
//! - Response bodies never reach an error: they may hold values.
//! - A generated key ([`ensure_generated_field`], the per-env fingerprint
//!   key) is 32 bytes from aws-lc-rs's `SystemRandom`, base64, written with
//!   check-and-set so it never replaces a value someone else wrote.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretMetadataRequest, SetSecretRequestOptions};
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

use super::vault::client_error_text;
use super::{Secret, SourceError, SourceKind};
use crate::secret::SecretString;

pub use crate::text::one_line;

fn error_text(e: &ClientError) -> String {
    one_line(&client_error_text(e))
}

/// A failed write. Names the path, never a value.
#[derive(Debug, thiserror::Error)]
pub enum VaultAdminError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("vault: permission denied writing {path} ({reason})")]
    WriteDenied { path: String, reason: String },
    #[error("vault: writing {path}: {cause}")]
    Write { path: String, cause: String },
    #[error(
        "vault: {path} changed since it was shown (it is no longer version {seen}); nothing was written: run the command again"
    )]
    Conflict { path: String, seen: u64 },
    #[error("vault: writing the metadata of {path}: {cause}")]
    WriteMetadata { path: String, cause: String },
    #[error("vault: writing policy {name}: {cause}")]
    WritePolicy { name: String, cause: String },
    #[error("cannot draw a random key from the system")]
    Random,
}

/// `<mount>/<env>/<path>`, as people type it.
pub fn shown_path(mount: &str, env: &str, path: &str) -> String {
    format!("{mount}/{env}/{path}")
}

fn read_failure(shown: String, e: ClientError) -> SourceError {
    match e {
        e @ ClientError::APIError { code: 403, .. } => SourceError::Denied {
            source_kind: SourceKind::Vault,
            path: shown,
            who: String::new(),
            detail: format!(" ({})", error_text(&e)),
        },
        e => SourceError::Read { source_kind: SourceKind::Vault, path: shown, cause: error_text(&e) },
    }
}

/// Folders listed at once: a wide tree is listed level by level in
/// parallel rather than one round trip per folder. 32, not a pass's 8:
/// listing a whole env (`diff`) is one LIST per folder, and from a laptop
/// each is a WAN round trip (measured on loopback at fleet-3000, 6,000
/// LISTs and reads per env: `diff` 3.5 s at 8, 3.0 s at 32, where the
/// OpenBao server's own CPU is the limit).
const PARALLEL_LISTS: usize = 32;

/// Every secret path under `<mount>/<env>/`, relative to it, sorted.
pub async fn list_env(client: &Arc<VaultClient>, mount: &str, env: &str) -> Result<Vec<String>, SourceError> {
    let mut found = Vec::new();
    let mut folders = vec![String::new()];
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < PARALLEL_LISTS {
            let Some(folder) = folders.pop() else { break };
            let (client, mount, env) = (Arc::clone(client), mount.to_owned(), env.to_owned());
            tasks.spawn(async move {
                let listed = vaultrs::kv2::list(client.as_ref(), &mount, &format!("{env}/{folder}")).await;
                (folder, listed)
            });
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (folder, listed) = joined.map_err(|e| SourceError::Read {
            source_kind: SourceKind::Vault,
            path: format!("{mount}/metadata/{env}/"),
            cause: format!("list task failed: {e}"),
        })?;
        let keys = match listed {
            Ok(keys) => keys,
            Err(ClientError::APIError { code: 404, .. }) => Vec::new(),
            // Dropping the JoinSet aborts the other listings.
            Err(e) => return Err(read_failure(format!("{mount}/metadata/{env}/{folder}"), e)),
        };
        for key in keys {
            if key.ends_with('/') {
                folders.push(format!("{folder}{key}"));
            } else {
                found.push(format!("{folder}{key}"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The fields and version of `<mount>/<env>/<path>`; `None` when it does
/// not exist (or its latest version is deleted).
pub async fn read_secret(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
) -> Result<Option<Secret>, SourceError> {
    let shown = shown_path(mount, env, path);
    let full = format!("{env}/{path}");
    let endpoint = ReadSecretRequest::builder().mount(mount).path(&full).build().map_err(|e| SourceError::Invalid {
        source_kind: SourceKind::Vault,
        path: shown.clone(),
        cause: e.to_string(),
    })?;
    match vaultrs::api::exec_with_result(client, endpoint).await {
        Ok(resp) => Ok(Some(super::vault::secret_from_response(shown, resp)?)),
        Err(ClientError::APIError { code: 404, .. }) => Ok(None),
        Err(e) => Err(read_failure(shown, e)),
    }
}

/// What KV v2 keeps about a secret besides its values.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SecretInfo {
    pub current_version: u64,
    /// When the current version was written (RFC 3339, as Vault says it).
    pub version_time: Option<String>,
    /// When the secret was first created.
    pub created_time: String,
    pub custom_metadata: BTreeMap<String, String>,
}

/// The metadata of `<mount>/<env>/<path>`; `None` when there is no secret.
pub async fn read_metadata(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
) -> Result<Option<SecretInfo>, SourceError> {
    let shown = format!("{mount}/metadata/{env}/{path}");
    match vaultrs::kv2::read_metadata(client, mount, &format!("{env}/{path}")).await {
        Ok(m) => {
            let version_time = m.versions.get(&m.current_version.to_string()).map(|v| v.created_time.clone());
            Ok(Some(SecretInfo {
                current_version: m.current_version,
                version_time,
                created_time: m.created_time,
                custom_metadata: m.custom_metadata.unwrap_or_default().into_iter().collect(),
            }))
        }
        Err(ClientError::APIError { code: 404, .. }) => Ok(None),
        Err(e) => Err(read_failure(shown, e)),
    }
}

/// Writes all `fields` as a new version of `<mount>/<env>/<path>`, only if
/// the secret is still at version `seen` (0: it must not exist). Returns the
/// new version.
pub async fn write_secret(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
    fields: &BTreeMap<String, SecretString>,
    seen: u64,
) -> Result<u64, VaultAdminError> {
    let shown = shown_path(mount, env, path);
    let data: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.expose().to_owned()))).collect();
    let cas = u32::try_from(seen).map_err(|_| VaultAdminError::Write {
        path: shown.clone(),
        cause: format!("version {seen} is beyond what check-and-set can express"),
    })?;
    let options = SetSecretRequestOptions { cas };
    match vaultrs::kv2::set_with_options(client, mount, &format!("{env}/{path}"), &data, options).await {
        Ok(meta) => Ok(meta.version),
        Err(e @ ClientError::APIError { code: 403, .. }) => {
            Err(VaultAdminError::WriteDenied { path: shown, reason: error_text(&e) })
        }
        Err(ClientError::APIError { code: 400, errors }) if errors.iter().any(|e| e.contains("check-and-set")) => {
            Err(VaultAdminError::Conflict { path: shown, seen })
        }
        Err(e) => Err(VaultAdminError::Write { path: shown, cause: error_text(&e) }),
    }
}

/// Replaces the `custom_metadata` of `<mount>/<env>/<path>`.
pub async fn write_custom_metadata(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
    custom: &BTreeMap<String, String>,
) -> Result<(), VaultAdminError> {
    let shown = format!("{mount}/metadata/{env}/{path}");
    let map: HashMap<String, String> = custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut builder = SetSecretMetadataRequest::builder();
    builder.custom_metadata(map);
    vaultrs::kv2::set_metadata(client, mount, &format!("{env}/{path}"), Some(&mut builder)).await.map_err(|e| match e {
        e @ ClientError::APIError { code: 403, .. } => {
            VaultAdminError::WriteDenied { path: shown.clone(), reason: error_text(&e) }
        }
        e => VaultAdminError::WriteMetadata { path: shown.clone(), cause: error_text(&e) },
    })
}

/// Who the token is, for `no access` lines: `token "name" (policies a, b)`.
/// Falls back to `token` when the lookup itself is not allowed.
pub async fn token_role(client: &VaultClient) -> String {
    match vaultrs::token::lookup_self(client).await {
        // The response also holds the token itself: take two fields, drop it.
        Ok(resp) => {
            let mut policies = resp.policies.clone();
            policies.extend(resp.identity_policies.clone().unwrap_or_default());
            policies.sort();
            policies.dedup();
            let name = if resp.display_name.is_empty() { String::new() } else { format!(" {:?}", resp.display_name) };
            format!("vault token{name} (policies {})", policies.join(", "))
        }
        Err(_) => "vault token (policies unknown: lookup-self not allowed)".to_owned(),
    }
}

/// Who a token is, as Vault says (`lookup-self`): without the token itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenIdentity {
    pub display_name: String,
    /// The auth method's login path (`auth/approle/login`), empty for a
    /// token created directly.
    pub path: String,
    pub policies: Vec<String>,
    pub entity_id: String,
    /// Seconds left; 0 for a token that never expires.
    pub ttl: u64,
    pub renewable: bool,
    /// The auth method's metadata (role name, service account, ...).
    pub meta: BTreeMap<String, String>,
}

/// `lookup-self`, kept to what identifies the token.
pub async fn token_identity(client: &VaultClient) -> Result<TokenIdentity, SourceError> {
    let resp =
        vaultrs::token::lookup_self(client).await.map_err(|e| read_failure("auth/token/lookup-self".to_owned(), e))?;
    let mut policies = resp.policies.clone();
    policies.extend(resp.identity_policies.clone().unwrap_or_default());
    policies.sort();
    policies.dedup();
    Ok(TokenIdentity {
        display_name: resp.display_name.clone(),
        path: resp.path.clone(),
        policies,
        entity_id: resp.entity_id.clone(),
        ttl: resp.ttl,
        renewable: resp.renewable.unwrap_or(false),
        meta: resp.meta.clone().unwrap_or_default().into_iter().collect(),
    })
}

/// The token's capabilities on each of `paths` (full API paths such as
/// `secret/data/prod/api/db`), from `sys/capabilities-self`: Vault
/// evaluates its own policies, nothing is guessed here.
pub async fn capabilities(
    client: &VaultClient,
    paths: &[String],
) -> Result<BTreeMap<String, Vec<String>>, SourceError> {
    let shown = "sys/capabilities-self".to_owned();
    let url = format!("{}/v1/sys/capabilities-self", client.settings.address.as_str().trim_end_matches('/'));
    let fail = |cause: String| SourceError::Read { source_kind: SourceKind::Vault, path: shown.clone(), cause };
    let mut token = reqwest::header::HeaderValue::from_str(&client.settings.token)
        .map_err(|_| fail("the token is not a valid header value".to_owned()))?;
    token.set_sensitive(true);
    let resp = client
        .http
        .http
        .post(url)
        .header("X-Vault-Token", token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "paths": paths }).to_string())
        .send()
        .await
        .map_err(|e| fail(format!("request failed: {e:#}")))?;
    let status = resp.status().as_u16();
    if status == 403 {
        return Err(SourceError::Denied {
            source_kind: SourceKind::Vault,
            path: shown,
            who: String::new(),
            detail: " (HTTP 403)".to_owned(),
        });
    }
    if status != 200 {
        return Err(fail(format!("HTTP {status}")));
    }
    let bytes = resp.bytes().await.map_err(|e| fail(format!("reading the answer: {e}")))?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
    let data = body.get("data").unwrap_or(&body);
    paths
        .iter()
        .map(|p| {
            let caps = data.get(p).and_then(|c| c.as_array()).ok_or_else(|| fail(format!("no answer for {p}")))?;
            Ok((p.clone(), caps.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()))
        })
        .collect()
}

/// What [`ensure_generated_field`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldChange {
    /// The secret did not exist: created with the field.
    Created,
    /// The secret existed without the field: a new version adds it, the
    /// other fields kept.
    Added,
    Unchanged,
}

/// A fresh random key: 32 bytes from the system's generator, base64.
pub fn random_key() -> Result<SecretString, VaultAdminError> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| VaultAdminError::Random)?;
    Ok(SecretString::new(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Makes `<mount>/<env>/<path>` hold a `field`, generating a random key
/// when it has none. An existing value is never replaced.
pub async fn ensure_generated_field(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
    field: &str,
    dry_run: bool,
) -> Result<FieldChange, VaultAdminError> {
    let current = read_secret(client, mount, env, path).await?;
    let (change, mut fields, seen) = match current {
        Some(s) if s.fields.contains_key(field) => return Ok(FieldChange::Unchanged),
        Some(s) => (FieldChange::Added, s.fields, s.version.unwrap_or(0)),
        None => (FieldChange::Created, BTreeMap::new(), 0),
    };
    if !dry_run {
        fields.insert(field.to_owned(), random_key()?);
        write_secret(client, mount, env, path, &fields, seen).await?;
    }
    Ok(change)
}

/// Whether writing a policy changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyChange {
    Created,
    Updated,
    Unchanged,
}

/// The rules of ACL policy `name`; `None` when there is no such policy.
pub async fn read_policy(client: &VaultClient, name: &str) -> Result<Option<String>, VaultAdminError> {
    match vaultrs::sys::policy::read(client, name).await {
        Ok(p) => Ok(Some(p.rules)),
        Err(ClientError::APIError { code: 404, .. }) => Ok(None),
        Err(e) => Err(VaultAdminError::WritePolicy { name: name.to_owned(), cause: error_text(&e) }),
    }
}

/// Makes ACL policy `name` hold exactly `rules`.
pub async fn apply_policy(
    client: &VaultClient,
    name: &str,
    rules: &str,
    dry_run: bool,
) -> Result<PolicyChange, VaultAdminError> {
    let err = |e: ClientError| VaultAdminError::WritePolicy { name: name.to_owned(), cause: error_text(&e) };
    let change = match vaultrs::sys::policy::read(client, name).await {
        Ok(p) if p.rules.trim() == rules.trim() => PolicyChange::Unchanged,
        Ok(_) => PolicyChange::Updated,
        Err(ClientError::APIError { code: 404, .. }) => PolicyChange::Created,
        Err(e) => return Err(err(e)),
    };
    if change != PolicyChange::Unchanged && !dry_run {
        vaultrs::sys::policy::set(client, name, rules).await.map_err(err)?;
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_32_bytes_and_differ() {
        use base64::Engine;
        let (a, b) = (random_key().unwrap(), random_key().unwrap());
        let bytes = base64::engine::general_purpose::STANDARD.decode(a.expose()).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn vault_errors_become_one_line() {
        assert_eq!(
            one_line("HTTP 403: 1 error occurred:\n\t* permission denied\n\n"),
            "HTTP 403: 1 error occurred: * permission denied"
        );
    }
}
