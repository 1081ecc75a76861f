//! Reading the sources at a past point: etcd at a revision (its own MVCC
//! history), Vault KV v2 secrets at a version.
//!
//! What is gone is a clear error naming it and the oldest point still
//! reachable:
//! - a revision etcd has compacted: `etcd revision 12 of env prod was
//!   compacted; the oldest revision still readable is 40` (the compact
//!   revision comes from a watch started at the asked revision, which etcd
//!   answers with it);
//! - a revision newer than etcd's: `is in the future (etcd is at 57)`;
//! - a secret version Vault has destroyed, deleted, or no longer keeps
//!   (`max_versions`): named with the oldest version still readable.
//!
//! Nothing here writes, and no value reaches an error.

use std::collections::BTreeMap;

use etcd_client::{GetOptions, WatchOptions};
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

use super::etcd::{EtcdSource, prefix_end};
use super::vault::client_error_text;
use super::{KeyData, KeyOrigin, KeyValue, Secret, SourceError, SourceKind};

/// A past point that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AtError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "etcd revision {revision} of env {env} was compacted: its values are gone; the oldest revision still readable is {oldest}"
    )]
    Compacted { env: String, revision: i64, oldest: i64 },
    #[error("etcd revision {revision} of env {env} is in the future (etcd is at revision {current})")]
    Future { env: String, revision: i64, current: i64 },
    #[error("vault: {path} version {version} was destroyed{oldest}")]
    Destroyed { path: String, version: u64, oldest: OldestVersion },
    #[error(
        "vault: {path} version {version} was deleted (`vault kv undelete -versions={version}` brings it back){oldest}"
    )]
    Deleted { path: String, version: u64, oldest: OldestVersion },
    #[error("vault: {path} version {version} is no longer kept (beyond the secret's max_versions){oldest}")]
    NotKept { path: String, version: u64, oldest: OldestVersion },
}

/// "; the oldest version still readable is N", or that there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestVersion(pub Option<u64>);

impl std::fmt::Display for OldestVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "; the oldest version still readable is {v}"),
            None => f.write_str("; no version of it is readable"),
        }
    }
}

fn etcd_read_error(path: &str, e: etcd_client::Error) -> SourceError {
    match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => SourceError::Denied {
            source_kind: SourceKind::Etcd,
            path: path.to_owned(),
            who: String::new(),
            detail: format!(" ({})", s.message()),
        },
        etcd_client::Error::GRpcStatus(s) => {
            SourceError::Read { source_kind: SourceKind::Etcd, path: path.to_owned(), cause: s.message().to_owned() }
        }
        other => SourceError::Read { source_kind: SourceKind::Etcd, path: path.to_owned(), cause: other.to_string() },
    }
}

/// Whether an etcd error says the revision was compacted / is in the future.
fn revision_problem(e: &etcd_client::Error) -> Option<bool> {
    let etcd_client::Error::GRpcStatus(s) = e else { return None };
    let m = s.message();
    if m.contains("required revision has been compacted") {
        Some(true)
    } else if m.contains("required revision is a future revision") {
        Some(false)
    } else {
        None
    }
}

/// The oldest revision etcd still has: what a watch from revision 1 on
/// `key` reports as compacted (1 when nothing was).
pub async fn oldest_revision(etcd: &EtcdSource, key: &str) -> Result<i64, SourceError> {
    let client = etcd.connect().await?;
    let mut watch = client.watch_client();
    let options = WatchOptions::new().with_start_revision(1);
    let mut stream = watch.watch(key, Some(options)).await.map_err(|e| etcd_read_error(key, e))?;
    let mut oldest = 1;
    // The first messages say "created", then "compacted" if it was.
    for _ in 0..4 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message()).await;
        let Ok(Ok(Some(resp))) = next else { break };
        if resp.compact_revision() > 0 {
            oldest = resp.compact_revision();
            break;
        }
        if resp.canceled() || !resp.events().is_empty() {
            break;
        }
    }
    // Dropping the stream ends the watch.
    drop(stream);
    Ok(oldest)
}

/// The current revision of the etcd cluster.
pub async fn current_revision(etcd: &EtcdSource, key: &str) -> Result<i64, SourceError> {
    let client = etcd.connect().await?;
    let resp = client
        .kv_client()
        .get(key, Some(GetOptions::new().with_count_only()))
        .await
        .map_err(|e| etcd_read_error(key, e))?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// Maps a failed read at `revision` to what it means.
async fn at_error(etcd: &EtcdSource, env: &str, path: &str, revision: i64, e: etcd_client::Error) -> AtError {
    match revision_problem(&e) {
        Some(true) => match oldest_revision(etcd, path).await {
            Ok(oldest) => AtError::Compacted { env: env.to_owned(), revision, oldest },
            Err(s) => AtError::Source(s),
        },
        Some(false) => match current_revision(etcd, path).await {
            Ok(current) => AtError::Future { env: env.to_owned(), revision, current },
            Err(s) => AtError::Source(s),
        },
        None => AtError::Source(etcd_read_error(path, e)),
    }
}

/// Every key under `prefix` (an env's `<prefix>/<env>/`) at `revision`,
/// by name below it.
pub async fn keys_at(
    etcd: &EtcdSource,
    env: &str,
    prefix: &str,
    revision: i64,
) -> Result<BTreeMap<String, KeyValue>, AtError> {
    let client = etcd.connect().await?;
    let mut kv = client.kv_client().max_decoding_message_size(64 * 1024 * 1024);
    let end = prefix_end(prefix.as_bytes());
    let mut start = prefix.as_bytes().to_vec();
    let mut keys = BTreeMap::new();
    loop {
        let options = GetOptions::new().with_range(end.clone()).with_limit(20_000).with_revision(revision);
        let mut resp = match kv.get(start.clone(), Some(options)).await {
            Ok(r) => r,
            Err(e) => return Err(at_error(etcd, env, prefix, revision, e).await),
        };
        let more = resp.more();
        let kvs = resp.take_kvs();
        for item in &kvs {
            let origin = KeyOrigin::Etcd { create_revision: item.create_revision(), mod_revision: item.mod_revision() };
            let name = String::from_utf8_lossy(item.key());
            let name = name.strip_prefix(prefix).unwrap_or(&name).to_owned();
            let value = match item.key_str() {
                Ok(_) => KeyValue::new(item.value().to_vec(), origin),
                Err(_) => KeyValue { data: KeyData::Bytes(item.value().to_vec()), origin },
            };
            keys.insert(name, value);
        }
        match kvs.last() {
            Some(last) if more => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok(keys)
}

/// One key at `revision` (`None`: absent then), with its value as text
/// and its revisions.
pub async fn key_at(
    etcd: &EtcdSource,
    env: &str,
    key: &str,
    revision: i64,
) -> Result<Option<(Vec<u8>, i64, i64, i64)>, AtError> {
    let client = etcd.connect().await?;
    let options = GetOptions::new().with_revision(revision);
    match client.kv_client().get(key, Some(options)).await {
        Ok(resp) => Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.create_revision(), kv.mod_revision(), kv.version()))),
        Err(e) => Err(at_error(etcd, env, key, revision, e).await),
    }
}

/// What KV v2 metadata says about each version of a secret.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub current: u64,
    /// version → (created ms, deleted, destroyed)
    pub versions: BTreeMap<u64, VersionInfo>,
    pub custom_metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy)]
pub struct VersionInfo {
    pub created_ms: Option<i64>,
    pub deleted: bool,
    pub destroyed: bool,
}

impl Versions {
    /// The oldest version that can still be read.
    pub fn oldest_readable(&self) -> Option<u64> {
        self.versions.iter().find(|(_, v)| !v.deleted && !v.destroyed).map(|(n, _)| *n)
    }

    /// The version that was current at `at_ms` (the newest created by
    /// then); `None` when the secret did not exist yet.
    pub fn at_time(&self, at_ms: i64) -> Option<u64> {
        self.versions.iter().rev().find(|(_, v)| v.created_ms.is_some_and(|c| c <= at_ms)).map(|(n, _)| *n)
    }
}

/// The versions of `<mount>/<env>/<path>`; `None` when there is no such secret.
pub async fn versions(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
) -> Result<Option<Versions>, SourceError> {
    let shown = format!("{mount}/metadata/{env}/{path}");
    match vaultrs::kv2::read_metadata(client, mount, &format!("{env}/{path}")).await {
        Ok(m) => Ok(Some(Versions {
            current: m.current_version,
            versions: m
                .versions
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        n.parse().ok()?,
                        VersionInfo {
                            created_ms: crate::when::parse_rfc3339_ms(&v.created_time),
                            deleted: !v.deletion_time.is_empty(),
                            destroyed: v.destroyed,
                        },
                    ))
                })
                .collect(),
            custom_metadata: m.custom_metadata.unwrap_or_default().into_iter().collect(),
        })),
        Err(ClientError::APIError { code: 404, .. }) => Ok(None),
        Err(e @ ClientError::APIError { code: 403, .. }) => Err(SourceError::Denied {
            source_kind: SourceKind::Vault,
            path: shown,
            who: String::new(),
            detail: format!(" ({})", client_error_text(&e)),
        }),
        Err(e) => Err(SourceError::Read { source_kind: SourceKind::Vault, path: shown, cause: client_error_text(&e) }),
    }
}

/// The HTTP status of a Vault error, however vaultrs wrapped it.
fn status_of(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError { source: rustify::errors::ClientError::ServerResponseError { code, .. } } => {
            Some(*code)
        }
        _ => None,
    }
}

/// `<mount>/<env>/<path>` at `version`. A version that cannot be read is
/// an [`AtError`] saying why, with the oldest readable one.
pub async fn secret_at(
    client: &VaultClient,
    mount: &str,
    env: &str,
    path: &str,
    version: u64,
) -> Result<Secret, AtError> {
    let shown = format!("{mount}/{env}/{path}");
    let endpoint = ReadSecretRequest::builder()
        .mount(mount)
        .path(format!("{env}/{path}"))
        .version(Some(version))
        .build()
        .map_err(|e| SourceError::Invalid {
            source_kind: SourceKind::Vault,
            path: shown.clone(),
            cause: e.to_string(),
        })?;
    match vaultrs::api::exec_with_result(client, endpoint).await {
        Ok(resp) => Ok(super::vault::secret_from_response(shown, resp)?),
        // A deleted or destroyed version answers 404 with its metadata (no
        // `errors` list), which vaultrs leaves as a REST error.
        Err(e) if status_of(&e) == Some(404) => {
            let info = versions(client, mount, env, path).await?.unwrap_or_default();
            let oldest = OldestVersion(info.oldest_readable());
            Err(match info.versions.get(&version) {
                Some(v) if v.destroyed => AtError::Destroyed { path: shown, version, oldest },
                Some(v) if v.deleted => AtError::Deleted { path: shown, version, oldest },
                _ => AtError::NotKept { path: shown, version, oldest },
            })
        }
        Err(e @ ClientError::APIError { code: 403, .. }) => Err(AtError::Source(SourceError::Denied {
            source_kind: SourceKind::Vault,
            path: shown,
            who: String::new(),
            detail: format!(" ({})", client_error_text(&e)),
        })),
        Err(e) => Err(AtError::Source(SourceError::Read {
            source_kind: SourceKind::Vault,
            path: shown,
            cause: client_error_text(&e),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_at_a_time_is_the_newest_created_by_then() {
        let v = |created: i64, deleted, destroyed| VersionInfo { created_ms: Some(created), deleted, destroyed };
        let info = Versions {
            current: 3,
            versions: [(1, v(100, false, true)), (2, v(200, true, false)), (3, v(300, false, false))].into(),
            custom_metadata: BTreeMap::new(),
        };
        assert_eq!(info.at_time(50), None);
        assert_eq!(info.at_time(250), Some(2));
        assert_eq!(info.at_time(300), Some(3));
        assert_eq!(info.oldest_readable(), Some(3));
        assert_eq!(
            AtError::Destroyed { path: "secret/prod/api/db".into(), version: 1, oldest: OldestVersion(Some(3)) }
                .to_string(),
            "vault: secret/prod/api/db version 1 was destroyed; the oldest version still readable is 3"
        );
    }
}
