//! Where pass records live: etcd under the env's own prefix, or, without
//! etcd, files in the state directory.
//!
//! ```text
//! <prefix>/_history/<env>/<at_ms:13>-<revision:12>     one record (JSON)
//! <state dir>/history/<env>/<at_ms:13>-<revision:12>.json   the same, without etcd
//! ```
//!
//! Decisions:
//! - **Keys sort by time** (fixed-width digits), and carry the revision, so
//!   "the newest record at or before 14:02" is one range read and "the
//!   record of revision 1234" a keys-only listing — no record is parsed to
//!   find one.
//! - **One request per recorded pass.** The record is put, records older
//!   than `max_age` are deleted (one range delete: keys sort by time) and
//!   the env's records are counted, in one transaction. Only when the count
//!   passes `keep` by an eighth does a second request delete the oldest
//!   down to `keep`: about two requests per `keep / 8` passes.
//! - **The leader only.** The service's transaction holds only while the
//!   writer's lease still holds the env's leader key (as the published
//!   status does), so a deposed leader cannot add to its successor's
//!   history. A one-shot `reconcile --once` writes without that guard.
//! - The state-directory store is for a service without etcd (the file
//!   source): same names, same retention, files written atomically (temp
//!   file, fsync, rename) with mode 0600, links never followed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};

use super::record::PassRecord;
use crate::config::{Config, KeysSource};
use crate::source::etcd::{EtcdSource, prefix_end};
use crate::source::{SourceError, SourceKind};

/// How many records an env keeps, and for how long (`[history]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep: usize,
    pub max_age: Duration,
}

/// `<prefix>/_history/<env>/`: the env's records (read-write for its
/// reconciler role, read for developers).
pub use crate::source::etcd::keyspace::history_prefix;

/// A record's name: when its pass ended and the revision it read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordKey {
    pub at_ms: i64,
    pub revision: i64,
}

impl RecordKey {
    pub fn name(&self) -> String {
        format!("{:013}-{:012}", self.at_ms.max(0), self.revision.max(0))
    }

    pub fn parse(name: &str) -> Option<Self> {
        let (at, rev) = name.split_once('-')?;
        if at.len() != 13 || rev.len() != 12 {
            return None;
        }
        Some(RecordKey { at_ms: at.parse().ok()?, revision: rev.parse().ok()? })
    }

    /// The greatest key of a record at `at_ms` (for "at or before").
    pub fn ceil(at_ms: i64) -> Self {
        RecordKey { at_ms, revision: 999_999_999_999 }
    }

    /// The greatest key strictly before this one (to page on from the
    /// oldest of a page without skipping a record of the same millisecond).
    pub fn before(&self) -> Self {
        if self.revision > 0 {
            RecordKey { at_ms: self.at_ms, revision: self.revision - 1 }
        } else {
            RecordKey::ceil(self.at_ms - 1)
        }
    }

    /// The smallest name of a record at `at_ms` (for "everything before").
    fn floor(at_ms: i64) -> String {
        RecordKey { at_ms, revision: 0 }.name()
    }
}

/// Why a record could not be written or read. Names keys and paths only.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("etcd: permission denied writing {key}{who} ({reason}): grant the role readwrite on {prefix} (policies/)")]
    Denied { key: String, prefix: String, who: String, reason: String },
    #[error("etcd: writing {key}: {cause}")]
    Write { key: String, cause: String },
    #[error("etcd: writing {key} timed out")]
    Timeout { key: String },
    #[error("not recorded: this replica no longer leads env {env}")]
    NotLeader { env: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("env {env}: the file source keeps no history of its values ({what})")]
    NoPast { env: String, what: &'static str },
}

/// The service's guard: the txn holds only while `lease` holds `leader_key`.
#[derive(Debug, Clone)]
pub struct Guard {
    pub leader_key: String,
    pub lease: i64,
}

/// What one write cost (for the log and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub bytes: usize,
    pub requests: u32,
    /// Records deleted by retention.
    pub pruned: u64,
}

/// The store of a config.
#[derive(Clone)]
pub enum HistoryStore {
    Etcd {
        etcd: Arc<EtcdSource>,
        /// `[etcd] prefix`.
        prefix: String,
        timeout: Duration,
    },
    Dir(PathBuf),
}

impl HistoryStore {
    /// etcd when the config reads keys from etcd (reusing `etcd`, the
    /// caller's client, when given), else `<state dir>/history`.
    pub fn for_config(config: &Config, etcd: Option<Arc<EtcdSource>>) -> Self {
        match &config.keys {
            KeysSource::Etcd(s) => HistoryStore::Etcd {
                etcd: etcd.unwrap_or_else(|| Arc::new(EtcdSource::new(s.clone()))),
                prefix: s.prefix.clone(),
                timeout: s.timeout * 3,
            },
            KeysSource::Files(_) => HistoryStore::Dir(config.state_dir.join("history")),
        }
    }

    /// Where the env's records are, for messages.
    pub fn location(&self, env: &str) -> String {
        match self {
            HistoryStore::Etcd { prefix, .. } => history_prefix(prefix, env),
            HistoryStore::Dir(dir) => format!("{}/", dir.join(env).display()),
        }
    }

    pub fn is_etcd(&self) -> bool {
        matches!(self, HistoryStore::Etcd { .. })
    }

    /// Writes `record` and applies the retention, under `guard` when given.
    pub async fn write(
        &self,
        env: &str,
        record: &PassRecord,
        guard: Option<&Guard>,
        retention: Retention,
    ) -> Result<Written, HistoryError> {
        let key = RecordKey { at_ms: record.at_ms, revision: record.revision.unwrap_or(0) };
        let json = record.to_json();
        match self {
            HistoryStore::Etcd { etcd, prefix, timeout } => {
                let env_prefix = history_prefix(prefix, env);
                let full = format!("{env_prefix}{}", key.name());
                let write = EtcdWrite {
                    env,
                    env_prefix: &env_prefix,
                    key: &full,
                    json: &json,
                    guard,
                    retention,
                    now_ms: record.at_ms,
                };
                let work = write_etcd(etcd, write);
                match tokio::time::timeout(*timeout, work).await {
                    Ok(r) => r,
                    Err(_) => Err(HistoryError::Timeout { key: full }),
                }
            }
            // A few hundred bytes: written in place, like the file state.
            HistoryStore::Dir(dir) => write_dir(&dir.join(env), &key.name(), &json, retention, record.at_ms),
        }
    }

    /// Every record's key, oldest first.
    pub async fn keys(&self, env: &str) -> Result<Vec<RecordKey>, HistoryError> {
        match self {
            HistoryStore::Etcd { etcd, prefix, .. } => {
                let env_prefix = history_prefix(prefix, env);
                let client = etcd.connect().await?;
                let mut kv = client.kv_client();
                let end = prefix_end(env_prefix.as_bytes());
                let mut start = env_prefix.as_bytes().to_vec();
                let mut out = Vec::new();
                loop {
                    let options = GetOptions::new().with_range(end.clone()).with_keys_only().with_limit(10_000);
                    let resp = kv.get(start.clone(), Some(options)).await.map_err(|e| read_error(&env_prefix, e))?;
                    for item in resp.kvs() {
                        let name = String::from_utf8_lossy(item.key());
                        if let Some(k) = name.strip_prefix(env_prefix.as_str()).and_then(RecordKey::parse) {
                            out.push(k);
                        }
                    }
                    match resp.kvs().last() {
                        Some(last) if resp.more() => {
                            start = last.key().to_vec();
                            start.push(0);
                        }
                        _ => break,
                    }
                }
                Ok(out)
            }
            HistoryStore::Dir(dir) => {
                let mut out: Vec<RecordKey> = list_dir(&dir.join(env))?.into_iter().map(|(k, _)| k).collect();
                out.sort();
                Ok(out)
            }
        }
    }

    /// One record; `None` when it is gone (pruned) or not a record.
    pub async fn get(&self, env: &str, key: &RecordKey) -> Result<Option<PassRecord>, HistoryError> {
        match self {
            HistoryStore::Etcd { etcd, prefix, .. } => {
                let full = format!("{}{}", history_prefix(prefix, env), key.name());
                let client = etcd.connect().await?;
                let resp = client.kv_client().get(full.as_str(), None).await.map_err(|e| read_error(&full, e))?;
                Ok(resp.kvs().first().and_then(|kv| PassRecord::parse(kv.value())))
            }
            HistoryStore::Dir(dir) => {
                let path = dir.join(env).join(format!("{}.json", key.name()));
                Ok(read_regular(&path)?.and_then(|b| PassRecord::parse(&b)))
            }
        }
    }

    /// Records at or before `until` (every one when `None`), newest first,
    /// at most `limit`.
    pub async fn newest(
        &self,
        env: &str,
        until: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<(RecordKey, PassRecord)>, HistoryError> {
        match self {
            HistoryStore::Etcd { etcd, prefix, .. } => {
                let env_prefix = history_prefix(prefix, env);
                let client = etcd.connect().await?;
                let mut kv = client.kv_client().max_decoding_message_size(64 * 1024 * 1024);
                let mut end = match until {
                    Some(k) => {
                        let mut e = format!("{env_prefix}{}", k.name()).into_bytes();
                        e.push(0);
                        e
                    }
                    None => prefix_end(env_prefix.as_bytes()),
                };
                let mut out = Vec::new();
                while out.len() < limit {
                    let page = (limit - out.len()).min(256) as i64;
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(page);
                    let resp =
                        kv.get(env_prefix.as_str(), Some(options)).await.map_err(|e| read_error(&env_prefix, e))?;
                    for item in resp.kvs() {
                        let name = String::from_utf8_lossy(item.key());
                        let key = name.strip_prefix(env_prefix.as_str()).and_then(RecordKey::parse);
                        if let (Some(key), Some(record)) = (key, PassRecord::parse(item.value())) {
                            out.push((key, record));
                        }
                    }
                    match resp.kvs().last() {
                        Some(last) if resp.more() => end = last.key().to_vec(),
                        _ => break,
                    }
                }
                Ok(out)
            }
            HistoryStore::Dir(dir) => {
                let dir = dir.join(env);
                let mut keys: Vec<(RecordKey, PathBuf)> =
                    list_dir(&dir)?.into_iter().filter(|(k, _)| until.is_none_or(|u| k <= u)).collect();
                keys.sort_by(|a, b| b.0.cmp(&a.0));
                let mut out = Vec::new();
                for (key, path) in keys.into_iter() {
                    if out.len() >= limit {
                        break;
                    }
                    if let Some(r) = read_regular(&path)?.and_then(|b| PassRecord::parse(&b)) {
                        out.push((key, r));
                    }
                }
                Ok(out)
            }
        }
    }
}

fn read_error(key: &str, e: etcd_client::Error) -> SourceError {
    match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => SourceError::Denied {
            source_kind: SourceKind::Etcd,
            path: key.to_owned(),
            who: String::new(),
            detail: format!(" ({})", s.message()),
        },
        etcd_client::Error::GRpcStatus(s) => {
            SourceError::Read { source_kind: SourceKind::Etcd, path: key.to_owned(), cause: s.message().to_owned() }
        }
        other => SourceError::Read { source_kind: SourceKind::Etcd, path: key.to_owned(), cause: other.to_string() },
    }
}

fn write_error(key: &str, prefix: &str, who: String, e: etcd_client::Error) -> HistoryError {
    match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => {
            HistoryError::Denied { key: key.to_owned(), prefix: prefix.to_owned(), who, reason: s.message().to_owned() }
        }
        etcd_client::Error::GRpcStatus(s) => HistoryError::Write { key: key.to_owned(), cause: s.message().to_owned() },
        other => HistoryError::Write { key: key.to_owned(), cause: other.to_string() },
    }
}

/// One record to write to etcd, and what its pruning needs.
struct EtcdWrite<'a> {
    env: &'a str,
    /// `<prefix>/_history/<env>/`.
    env_prefix: &'a str,
    /// The record's full key.
    key: &'a str,
    json: &'a str,
    guard: Option<&'a Guard>,
    retention: Retention,
    /// The record's time: what is older than `retention.max_age` before it goes.
    now_ms: i64,
}

async fn write_etcd(etcd: &EtcdSource, write: EtcdWrite<'_>) -> Result<Written, HistoryError> {
    let EtcdWrite { env, env_prefix, key, json, guard, retention, now_ms } = write;
    let client = etcd.connect().await?;
    let who = match etcd.identity() {
        crate::source::etcd::Identity::User(u) => format!(" as user {u:?}"),
        crate::source::etcd::Identity::Certificate(cn) => format!(" as certificate CN {cn:?}"),
        crate::source::etcd::Identity::Anonymous => String::new(),
    };
    let max_age_ms = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let cutoff = format!("{env_prefix}{}", RecordKey::floor(now_ms.saturating_sub(max_age_ms)));
    let compares: Vec<Compare> =
        guard.iter().map(|g| Compare::lease(g.leader_key.as_str(), CompareOp::Equal, g.lease)).collect();
    let ops = vec![
        TxnOp::put(key, json, None),
        TxnOp::delete(env_prefix, Some(DeleteOptions::new().with_range(cutoff.as_str()))),
        TxnOp::get(env_prefix, Some(GetOptions::new().with_range(prefix_end(env_prefix.as_bytes())).with_count_only())),
    ];
    let mut kv = client.kv_client();
    let resp = kv
        .txn(Txn::new().when(compares.clone()).and_then(ops))
        .await
        .map_err(|e| write_error(key, env_prefix, who.clone(), e))?;
    if !resp.succeeded() {
        return Err(HistoryError::NotLeader { env: env.to_owned() });
    }
    let mut written = Written { bytes: key.len() + json.len(), requests: 1, pruned: 0 };
    let mut count = 0;
    for op in resp.op_responses() {
        match op {
            TxnOpResponse::Delete(d) => written.pruned += d.deleted() as u64,
            TxnOpResponse::Get(g) => count = g.count() as usize,
            _ => {}
        }
    }
    let keep = retention.keep.max(1);
    if count > keep + (keep / 8).max(1) {
        // The oldest `count - keep` keys, then one range delete up to the last.
        let options = GetOptions::new()
            .with_range(prefix_end(env_prefix.as_bytes()))
            .with_keys_only()
            .with_sort(SortTarget::Key, SortOrder::Ascend)
            .with_limit((count - keep) as i64);
        let resp = kv.get(env_prefix, Some(options)).await.map_err(|e| read_error(env_prefix, e))?;
        written.requests += 1;
        if let Some(last) = resp.kvs().last() {
            let mut end = last.key().to_vec();
            end.push(0);
            let delete = TxnOp::delete(env_prefix, Some(DeleteOptions::new().with_range(end)));
            let resp = kv
                .txn(Txn::new().when(compares).and_then([delete]))
                .await
                .map_err(|e| write_error(key, env_prefix, who, e))?;
            written.requests += 1;
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = op {
                    written.pruned += d.deleted() as u64;
                }
            }
        }
    }
    Ok(written)
}

fn io_error(path: &Path, source: std::io::Error) -> HistoryError {
    HistoryError::Io { path: path.display().to_string(), source }
}

/// A regular file's bytes (`None` when absent); a link or anything else is
/// not followed.
fn read_regular(path: &Path) -> Result<Option<Vec<u8>>, HistoryError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.len() as usize <= super::record::MAX_RECORD_BYTES => {
            std::fs::read(path).map(Some).map_err(|e| io_error(path, e))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The records in `dir`: (key, path), in no order.
fn list_dir(dir: &Path) -> Result<Vec<(RecordKey, PathBuf)>, HistoryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(RecordKey::parse) else {
            continue;
        };
        out.push((key, entry.path()));
    }
    Ok(out)
}

fn write_dir(dir: &Path, name: &str, json: &str, retention: Retention, now_ms: i64) -> Result<Written, HistoryError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // `create_new` (O_EXCL) never opens through a link at the temp name.
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_error(dir, e))?;
    if std::fs::symlink_metadata(dir).map_err(|e| io_error(dir, e))?.file_type().is_symlink() {
        return Err(io_error(dir, std::io::Error::other("is a symbolic link: not followed")));
    }
    let path = dir.join(format!("{name}.json"));
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| io_error(&temp, e))?;
    file.write_all(json.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io_error(&temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| io_error(&path, e))?;
    let mut written = Written { bytes: json.len(), requests: 0, pruned: 0 };
    let mut keys = list_dir(dir)?;
    keys.sort();
    let max_age_ms = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms.saturating_sub(max_age_ms);
    let excess = keys.len().saturating_sub(retention.keep.max(1));
    for (i, (key, path)) in keys.iter().enumerate() {
        if i < excess || key.at_ms < cutoff {
            std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
            written.pruned += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::{FORMAT, PassRecord};

    fn record(at_ms: i64, revision: i64) -> PassRecord {
        PassRecord {
            format: FORMAT,
            at_ms,
            replica: "r".into(),
            revision: Some(revision),
            secrets: None,
            config: "sha256:00".into(),
            git: None,
            ok: true,
            code: None,
            partial: false,
            unchanged: 0,
            targets: Vec::new(),
            pruned: Vec::new(),
        }
    }

    #[test]
    fn keys_sort_by_time_and_parse_back() {
        let a = RecordKey { at_ms: 999, revision: 12 };
        let b = RecordKey { at_ms: 1_000, revision: 3 };
        assert!(a.name() < b.name());
        assert_eq!(RecordKey::parse(&a.name()), Some(a));
        assert_eq!(RecordKey::parse("12-3"), None);
        assert_eq!(history_prefix("/cfgsync", "prod"), "/cfgsync/_history/prod/");
    }

    #[tokio::test]
    async fn the_state_dir_store_keeps_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::Dir(dir.path().join("history"));
        let retention = Retention { keep: 3, max_age: Duration::from_secs(100) };
        for i in 0..5 {
            store.write("prod", &record(1_000_000 + i * 1000, i), None, retention).await.unwrap();
        }
        let keys = store.keys("prod").await.unwrap();
        assert_eq!(keys.iter().map(|k| k.revision).collect::<Vec<_>>(), vec![2, 3, 4], "the newest 3");
        // A record 200 s later: the others are older than max_age.
        let w = store.write("prod", &record(1_000_000 + 204_000, 9), None, retention).await.unwrap();
        assert_eq!(w.pruned, 3);
        let newest = store.newest("prod", None, 10).await.unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].1.revision, Some(9));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("history/prod").join(format!("{}.json", newest[0].0.name())))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
