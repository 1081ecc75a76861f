//! Sources of truth: what a pass reads, and the [`Snapshot`] it reads into.
//!
//! A source answers one question, [`Source::fetch`]: "everything for env E
//! (and these secret paths), at one point in time". etcd is read with one
//! prefix range per env per pass at a single revision, shared by every
//! template (confd issues one request per template; we do not). Vault has no
//! such range read, so only the secret paths the templates reference are read
//! — which is also all a least-privilege reconciler role needs to allow.
//!
//! Keys come from `[etcd]` or `[files]`, secrets from `[vault]` or `[files]`;
//! [`Sources`] merges the two halves into one snapshot. Any failure of either
//! half fails the whole fetch: callers must not render a partial snapshot.

pub mod at;
pub mod etcd;
pub mod etcd_admin;
pub mod file;
pub mod secret_cache;
pub mod tls;
pub mod vault;
pub mod vault_admin;
pub mod x509;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{Config, KeysSource, SecretsSource};
use crate::secret::SecretString;

/// What a pass needs from the sources for one env.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub env: String,
    /// Secret paths (relative to the env) the templates reference.
    pub secret_paths: BTreeSet<String>,
    /// The service's watch passes: read only the keys that changed since a
    /// snapshot it kept (etcd only; anything else reads everything).
    pub patch: Option<Patch>,
}

/// The keys of one env at one etcd revision, as the service keeps them
/// between passes (keys only: no secret is kept).
pub struct KeysAt {
    pub keys: BTreeMap<String, KeyValue>,
    pub revision: i64,
}

/// Counts, not values: a report or a patch printed for debugging does not
/// dump the env.
impl fmt::Debug for KeysAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysAt").field("keys", &self.keys.len()).field("revision", &self.revision).finish()
    }
}

/// `base` brought to revision `at` by reading only the keys `changed`
/// names: every key a watch event changed after the base's revision, up
/// to `at` (see [`etcd::EtcdSource::read_changed`]).
#[derive(Debug, Clone)]
pub struct Patch {
    pub base: std::sync::Arc<KeysAt>,
    pub changed: BTreeSet<String>,
    pub at: i64,
}

/// More changed keys than this, and a patch reads the whole env instead.
pub const MAX_PATCH_KEYS: usize = 64;

/// Everything read for one env in one pass.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub env: String,
    /// Key name (relative to `<prefix>/<env>/`) → value.
    pub keys: BTreeMap<String, KeyValue>,
    /// Secret path → fields. A requested path that does not exist is absent.
    pub secrets: BTreeMap<String, Secret>,
    /// The etcd revision the keys were read at (None for the file source).
    pub revision: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub data: KeyData,
    pub origin: KeyOrigin,
}

impl KeyValue {
    pub fn new(bytes: Vec<u8>, origin: KeyOrigin) -> Self {
        Self { data: KeyData::from_bytes(bytes), origin }
    }

    /// The value as text, `None` when it is not (see [`KeyData`]).
    pub fn text(&self) -> Option<&str> {
        match &self.data {
            KeyData::Text(t) => Some(t),
            KeyData::Bytes(_) => None,
        }
    }
}

/// A key's value. Anyone who can write one key could otherwise stop a
/// whole env with one bad value, so a value that is not text is not an
/// error of the source: it is kept as bytes, and only the outputs that
/// read it fail (naming the key), or write it verbatim where an entry asks
/// for bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyData {
    /// UTF-8 without NUL: usable by templates.
    Text(String),
    /// Not UTF-8, or holding a NUL (which no environment variable, C string
    /// or most config parsers can carry).
    Bytes(Vec<u8>),
}

impl KeyData {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => KeyData::Text(s),
            Ok(s) => KeyData::Bytes(s.into_bytes()),
            Err(e) => KeyData::Bytes(e.into_bytes()),
        }
    }

    /// The value for a person to read: the text, or a description of the
    /// bytes. Escape it ([`crate::text::escape_controls`]) before printing.
    pub fn shown(&self) -> String {
        match self {
            KeyData::Text(t) => t.clone(),
            KeyData::Bytes(b) => format!("<{} bytes: {}>", b.len(), crate::render::describe_bytes(b)),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            KeyData::Text(t) => t.as_bytes(),
            KeyData::Bytes(b) => b,
        }
    }
}

impl fmt::Debug for KeyData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyData::Text(t) => write!(f, "{t:?}"),
            KeyData::Bytes(b) => write!(f, "<{} bytes, not text>", b.len()),
        }
    }
}

/// Where a key's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    File,
    Etcd { create_revision: i64, mod_revision: i64 },
}

/// One Vault secret: its fields and the version they were read at.
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub fields: BTreeMap<String, SecretString>,
    pub version: Option<u64>,
}

/// Which source failed. Used in messages and, later, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Etcd,
    Vault,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::File => "file source",
            SourceKind::Etcd => "etcd",
            SourceKind::Vault => "vault",
        })
    }
}

/// A failed read. Every variant names the source and what was being read;
/// none carries a secret value. `Clone`: callers that waited on one failed
/// connection attempt all report its error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("{source_kind}: cannot connect to {endpoint}: {cause}")]
    Connect { source_kind: SourceKind, endpoint: String, cause: String },
    /// A TLS problem: our files (a CA, a certificate, a key), or the
    /// server's certificate or its refusal of ours. `endpoint` names the
    /// server, or the setting when no server was contacted.
    #[error("{source_kind}: TLS to {endpoint}: {cause}")]
    Tls { source_kind: SourceKind, endpoint: String, cause: String },
    #[error("{source_kind}: cannot authenticate{who}: {cause}")]
    Auth { source_kind: SourceKind, who: String, cause: String },
    #[error("{source_kind}: permission denied reading {path}{who}{detail}")]
    Denied { source_kind: SourceKind, path: String, who: String, detail: String },
    #[error("{source_kind}: reading {path}: {cause}")]
    Read { source_kind: SourceKind, path: String, cause: String },
    #[error("{source_kind}: {path}: {cause}")]
    Invalid { source_kind: SourceKind, path: String, cause: String },
    #[error("{source_kind}: reading {path} timed out after {seconds} s")]
    Timeout { source_kind: SourceKind, path: String, seconds: u64 },
}

impl SourceError {
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceError::Connect { source_kind, .. }
            | SourceError::Tls { source_kind, .. }
            | SourceError::Auth { source_kind, .. }
            | SourceError::Denied { source_kind, .. }
            | SourceError::Read { source_kind, .. }
            | SourceError::Invalid { source_kind, .. }
            | SourceError::Timeout { source_kind, .. } => *source_kind,
        }
    }
}

/// One source of truth.
pub trait Source {
    /// Reads everything `request` needs, at one point in time.
    fn fetch(&self, request: &Request) -> impl Future<Output = Result<Snapshot, SourceError>> + Send;
}

/// The configured keys source and secrets source, fetched together.
pub struct Sources {
    keys: KeySide,
    /// Vault, when configured. The file source provides keys and secrets
    /// from one file, so it is read once, as the keys side.
    vault: Option<vault::VaultSource>,
    /// `cfgsync run` only: the secret versions already read, reused until
    /// `[vault] refresh` passes ([`secret_cache`]). None: always read.
    cache: Option<secret_cache::SecretCache>,
}

enum KeySide {
    Files(file::FileSource),
    /// Boxed: the etcd client is large and this enum is not.
    Etcd(Box<etcd::EtcdSource>),
}

impl Sources {
    /// Builds the clients. Nothing is contacted until the first fetch.
    pub fn new(config: &Config) -> Self {
        let keys = match &config.keys {
            KeysSource::Files(dir) => KeySide::Files(file::FileSource::new(dir.clone())),
            KeysSource::Etcd(s) => KeySide::Etcd(Box::new(etcd::EtcdSource::new(s.clone()))),
        };
        let vault = match &config.secrets {
            Some(SecretsSource::Vault(v)) => Some(vault::VaultSource::new(v.clone())),
            Some(SecretsSource::Files(_)) | None => None,
        };
        Self { keys, vault, cache: None }
    }

    /// Reuses the secret versions already read until `refresh` has passed
    /// since they were read (`cfgsync run`; see [`secret_cache`]).
    pub fn cache_secrets(&mut self, refresh: std::time::Duration) {
        if self.vault.is_some() {
            self.cache = Some(secret_cache::SecretCache::new(refresh));
        }
    }

    /// A marker says `path` of `env` was written at `version`: the next
    /// pass reads it (when this version is newer than the one held).
    pub fn secret_announced(&self, env: &str, path: &str, version: u64) {
        if let Some(c) = &self.cache {
            c.announced(env, path, version);
        }
    }

    /// The next pass of `env` reads every secret from Vault.
    pub fn forget_secrets(&self, env: &str) {
        if let Some(c) = &self.cache {
            c.forget(env);
        }
    }

    /// The secrets of `request` from Vault, or those still held by the
    /// cache with only the others read.
    async fn read_secrets(&self, vault: &vault::VaultSource, request: &Request) -> Result<Snapshot, SourceError> {
        let Some(cache) = &self.cache else { return vault.fetch(request).await };
        let now = std::time::Instant::now();
        let (reused, due) = cache.split(&request.env, &request.secret_paths, now);
        let asked = Request { env: request.env.clone(), secret_paths: due, patch: None };
        let mut read = vault.fetch(&asked).await?;
        cache.store(&request.env, &asked.secret_paths, &read.secrets, now);
        tracing::debug!(env = request.env, reused = reused.len(), read = asked.secret_paths.len(), "secrets held");
        read.secrets.extend(reused);
        Ok(read)
    }

    /// Reports Vault credential renewals and logins to `observer`.
    pub fn observe_credentials(&mut self, observer: std::sync::Arc<dyn vault::CredentialObserver>) {
        if let Some(v) = &mut self.vault {
            v.set_observer(observer);
        }
    }

    /// Keeps the Vault token renewed (or logs in again) until `cancel`;
    /// returns at once when there is no Vault. Only `cfgsync run` calls it.
    pub async fn maintain_credentials(&self, cancel: tokio_util::sync::CancellationToken) {
        if let Some(v) = &self.vault {
            v.maintain(cancel).await;
        }
    }

    /// Reads keys and secrets for one env concurrently; either failing fails
    /// the whole fetch.
    pub async fn fetch(&self, request: &Request) -> Result<Snapshot, SourceError> {
        let keys = async {
            let started = std::time::Instant::now();
            let keys = match (&self.keys, &request.patch) {
                // A name that is not UTF-8 reached the watch lossily
                // decoded: it cannot be read back by name.
                (KeySide::Etcd(s), Some(p))
                    if p.changed.len() <= MAX_PATCH_KEYS
                        && p.at >= p.base.revision
                        && !p.changed.iter().any(|k| k.contains(char::REPLACEMENT_CHARACTER)) =>
                {
                    match s.read_changed(&request.env, &p.base.keys, &p.changed, p.at).await {
                        Ok(keys) => {
                            tracing::debug!(
                                env = request.env,
                                changed = p.changed.len(),
                                from = p.base.revision,
                                at = p.at,
                                "keys patched"
                            );
                            Ok(Snapshot {
                                env: request.env.clone(),
                                keys,
                                secrets: BTreeMap::new(),
                                revision: Some(p.at),
                            })
                        }
                        // Compacted, or anything else: the full read
                        // answers (and fails the pass if it fails too).
                        Err(e) => {
                            tracing::debug!(env = request.env, error = %e, "reading the changed keys failed; reading the env");
                            s.fetch(request).await
                        }
                    }
                }
                (KeySide::Files(s), _) => s.fetch(request).await,
                (KeySide::Etcd(s), _) => s.fetch(request).await,
            };
            tracing::debug!(env = request.env, took_us = started.elapsed().as_micros() as u64, "keys read");
            keys
        };
        let secrets = async {
            let started = std::time::Instant::now();
            let secrets = match &self.vault {
                Some(v) => self.read_secrets(v, request).await.map(Some),
                None => Ok(None),
            };
            tracing::debug!(
                env = request.env,
                paths = request.secret_paths.len(),
                took_us = started.elapsed().as_micros() as u64,
                "secrets read"
            );
            secrets
        };
        let (keys, secrets) = tokio::join!(keys, secrets);
        let mut snapshot = keys?;
        if let Some(s) = secrets? {
            snapshot.secrets = s.secrets;
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_keys_print_counts_not_values() {
        let keys = [("db/host".to_owned(), KeyValue::new(b"value-printed-nowhere".to_vec(), KeyOrigin::File))].into();
        let shown = format!("{:?}", KeysAt { keys, revision: 7 });
        assert_eq!(shown, "KeysAt { keys: 1, revision: 7 }");
    }
}
