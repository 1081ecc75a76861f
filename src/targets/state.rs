//! The CI kinds' record of what they wrote: per destination, per written
//! item, a keyed fingerprint of the value and the `updated_at` seen right
//! after writing.
//!
//! GitHub secrets and GitLab hidden variables cannot be read back, so this
//! record is how cfgsync knows, without the value, that
//! - the source changed (the fingerprint of what it would write differs
//!   from the recorded one): an update;
//! - someone wrote the item behind its back (GitHub's `updated_at` differs
//!   from the recorded one): drift, restored;
//! - an item is its own to write over and prune (GitHub has no field to
//!   mark ownership): an existing item the record does not name is
//!   someone else's until `cfgsync import --adopt` records it;
//! - the item is still exactly what was written (its attributes as
//!   written are recorded too) before prune deletes it.
//!
//! No record (a first pass, or a lost store) never means "delete".
//!
//! Two stores, one format (JSON, one document per destination):
//! - **etcd**, when `[etcd]` is configured: `<prefix>/_state/<env>/<kind>/<instance>/<destination>`,
//!   under the env's state prefix the reconciler role may write, so every
//!   replica of the service sees the same record;
//! - **a directory** otherwise: `<[state] dir>/<instance>/<kind>-<env>/<destination>.json`,
//!   mode 0600, written atomically (like the file kind's record).
//!
//! Fingerprints of secret values are HMAC-SHA256 under the env's
//! fingerprint key (never a plain hash of a password); nothing else in a
//! record is secret.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, KeysSource};
use crate::source::etcd::EtcdSource;

/// What was written at one destination, by item id (`KEY@scope`,
/// `secret/NAME`, `variable/NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestState {
    /// The destination, as the kind describes it (to find it again when
    /// the config no longer names it).
    #[serde(default)]
    pub dest: serde_json::Value,
    #[serde(default)]
    pub items: BTreeMap<String, Record>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `hmac-sha256:…` for secret values, `sha256:…` for others.
    pub fingerprint: String,
    /// The server's `updated_at` right after cfgsync wrote it (GitHub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    pub output: String,
    /// The item's attributes as cfgsync wrote them (GitLab's flags, a
    /// GitHub organization item's visibility): prune deletes an item only
    /// while it still has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The attributes an item made elsewhere had when `cfgsync import
    /// --adopt` took it over: the kind keeps them where its config is silent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adopted: BTreeMap<String, String>,
}

/// Where one destination's record lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateKey {
    /// `gitlab`, `github`.
    pub kind: &'static str,
    pub instance: String,
    pub env: String,
    /// The destination's stable id (any text; encoded where stored).
    pub dest: String,
}

/// Where records are kept.
pub enum StateStore {
    Etcd {
        source: Box<EtcdSource>,
        prefix: String,
        /// Per env, every record under its state prefix as of one etcd
        /// revision (the pass's snapshot's): both CI kinds list their
        /// records from one range read. Data at a revision never changes,
        /// so a hit is exact.
        listed: tokio::sync::Mutex<BTreeMap<String, (i64, Listed)>>,
    },
    Dir(PathBuf),
}

/// (etcd key, value) of every record under one env's state prefix.
type Listed = std::sync::Arc<Vec<(String, Vec<u8>)>>;

impl StateStore {
    /// etcd when the config reads keys from etcd, else `[state] dir`.
    pub fn new(config: &Config) -> Self {
        match &config.keys {
            KeysSource::Etcd(settings) => StateStore::Etcd {
                source: Box::new(EtcdSource::new(settings.clone())),
                prefix: settings.prefix.clone(),
                listed: Default::default(),
            },
            KeysSource::Files(_) => StateStore::Dir(config.state_dir.clone()),
        }
    }

    fn kind_prefix(&self, kind: &str, instance: &str, env: &str) -> String {
        match self {
            StateStore::Etcd { prefix, .. } => {
                format!("{}{kind}/{instance}/", crate::source::etcd::keyspace::state_prefix(prefix, env))
            }
            StateStore::Dir(dir) => dir.join(instance).join(format!("{kind}-{env}")).display().to_string() + "/",
        }
    }

    /// Where `key`'s record is, as shown in errors.
    pub fn describe(&self, key: &StateKey) -> String {
        match self {
            StateStore::Etcd { .. } => format!("etcd key {}", self.etcd_key(key)),
            StateStore::Dir(_) => crate::text::display_path(&self.file(key)),
        }
    }

    fn etcd_key(&self, key: &StateKey) -> String {
        format!("{}{}", self.kind_prefix(key.kind, &key.instance, &key.env), encode(&key.dest))
    }

    fn file(&self, key: &StateKey) -> PathBuf {
        let StateStore::Dir(dir) = self else { return PathBuf::new() };
        dir.join(&key.instance).join(format!("{}-{}", key.kind, key.env)).join(format!("{}.json", encode(&key.dest)))
    }

    /// The record of one destination; empty when there is none.
    pub async fn load(&self, key: &StateKey) -> Result<DestState, String> {
        let bytes = match self {
            StateStore::Etcd { source, .. } => {
                let client = source.connect().await.map_err(|e| e.to_string())?;
                let resp = client.kv_client().get(self.etcd_key(key), None).await.map_err(|e| e.to_string())?;
                match resp.kvs().first() {
                    Some(kv) => kv.value().to_vec(),
                    None => return Ok(DestState::default()),
                }
            }
            StateStore::Dir(_) => match std::fs::read(self.file(key)) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DestState::default()),
                Err(e) => return Err(e.to_string()),
            },
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("not a cfgsync state record: {e}"))
    }

    /// Saves one destination's record (removes it when it holds no item).
    pub async fn save(&self, key: &StateKey, state: &DestState) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        match self {
            StateStore::Etcd { source, .. } => {
                let client = source.connect().await.map_err(|e| e.to_string())?;
                let mut kv = client.kv_client();
                if state.items.is_empty() {
                    kv.delete(self.etcd_key(key), None).await.map(drop).map_err(|e| e.to_string())
                } else {
                    kv.put(self.etcd_key(key), text, None).await.map(drop).map_err(|e| e.to_string())
                }
            }
            StateStore::Dir(_) => {
                let path = self.file(key);
                if state.items.is_empty() {
                    return match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                        _ => Ok(()),
                    };
                }
                write_atomically(&path, &text)
            }
        }
    }

    /// Every record of a kind for an instance and env; `at`: the etcd
    /// revision to read at (the pass's snapshot's), so that the kinds of one
    /// pass share one read.
    pub async fn list(
        &self,
        kind: &'static str,
        instance: &str,
        env: &str,
        at: Option<i64>,
    ) -> Result<Vec<DestState>, String> {
        let prefix = self.kind_prefix(kind, instance, env);
        let mut out = Vec::new();
        match self {
            StateStore::Etcd { source, prefix: root, listed } => {
                let env_prefix = crate::source::etcd::keyspace::state_prefix(root, env);
                let mut memo = listed.lock().await;
                let all = match (at, memo.get(env)) {
                    (Some(rev), Some((seen, all))) if *seen == rev => all.clone(),
                    _ => {
                        let client = source.connect().await.map_err(|e| e.to_string())?;
                        let end = crate::source::etcd::prefix_end(env_prefix.as_bytes());
                        let mut options = etcd_client::GetOptions::new().with_range(end);
                        if let Some(rev) = at {
                            options = options.with_revision(rev);
                        }
                        let resp = match client.kv_client().get(env_prefix.as_bytes(), Some(options.clone())).await {
                            Ok(r) => r,
                            // Compacted past the snapshot: read what is there now.
                            Err(_) if at.is_some() => {
                                let options = etcd_client::GetOptions::new()
                                    .with_range(crate::source::etcd::prefix_end(env_prefix.as_bytes()));
                                client
                                    .kv_client()
                                    .get(env_prefix.as_bytes(), Some(options))
                                    .await
                                    .map_err(|e| e.to_string())?
                            }
                            Err(e) => return Err(e.to_string()),
                        };
                        let all: Vec<(String, Vec<u8>)> = resp
                            .kvs()
                            .iter()
                            .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()))
                            .collect();
                        let all = std::sync::Arc::new(all);
                        if let Some(rev) = at {
                            memo.insert(env.to_owned(), (rev, all.clone()));
                        }
                        all
                    }
                };
                drop(memo);
                for (_, value) in all.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                    out.push(serde_json::from_slice(value).map_err(|e| format!("not a cfgsync state record: {e}"))?);
                }
            }
            StateStore::Dir(_) => {
                let dir = PathBuf::from(prefix.trim_end_matches('/'));
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(format!("{}: {e}", dir.display())),
                };
                for entry in entries {
                    let path = entry.map_err(|e| e.to_string())?.path();
                    if path.extension().is_some_and(|x| x == "json") {
                        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                        out.push(
                            serde_json::from_slice(&bytes)
                                .map_err(|e| format!("{}: not a cfgsync state record: {e}", path.display()))?,
                        );
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A destination id as one path segment or key part: `[A-Za-z0-9._-]`
/// kept, every other byte `%XX`; cut with a hash when long.
fn encode(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 180 {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
        let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
        out.truncate(100);
        out.push('-');
        out.push_str(&hex);
    }
    out
}

/// Writes a state file atomically (temp file `<stem>.tmp-<pid>`, fsync,
/// rename), mode 0600, and first removes the temp files of writers that
/// died (their pid is gone) beside it.
pub(crate) fn write_atomically(path: &Path, text: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    remove_leftovers(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem().and_then(|s| s.to_str())) else { return };
    let prefix = format!("{stem}.tmp-");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dest: &str) -> StateKey {
        StateKey { kind: "github", instance: "inst".into(), env: "prod".into(), dest: dest.into() }
    }

    #[tokio::test]
    async fn records_round_trip_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_path_buf());
        let k = key("https://api.github.com/repos/acme/app");
        assert_eq!(store.load(&k).await.unwrap(), DestState::default(), "no record yet");
        let mut s = DestState { dest: serde_json::json!({"repo": "acme/app"}), items: BTreeMap::new() };
        s.items.insert(
            "secret/PW".into(),
            Record {
                fingerprint: "hmac-sha256:ab".into(),
                updated_at: Some("2026-01-01T00:00:00Z".into()),
                output: "api".into(),
                ..Default::default()
            },
        );
        store.save(&k, &s).await.unwrap();
        assert_eq!(store.load(&k).await.unwrap(), s);
        let file = store.file(&k);
        assert!(file.starts_with(dir.path().join("inst").join("github-prod")), "{}", file.display());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(store.list("github", "inst", "prod", None).await.unwrap(), vec![s.clone()]);
        assert!(store.list("github", "other", "prod", None).await.unwrap().is_empty());
        store.save(&k, &DestState::default()).await.unwrap();
        assert!(!file.exists(), "an empty record is removed");
    }

    #[test]
    fn ids_encode_to_one_segment() {
        assert_eq!(encode("https://gitlab.com/projects/g/app"), "https%3A%2F%2Fgitlab.com%2Fprojects%2Fg%2Fapp");
        let long = encode(&"x/".repeat(200));
        assert!(long.len() < 140 && !long.contains('/'), "{long}");
        assert_ne!(encode(&"x/".repeat(200)), encode(&"x/".repeat(201)));
    }
}
