//! The secret versions `cfgsync run` already read, reused between passes
//! so that an idle service does not re-read every secret on every pass.
//!
//! ```toml
//! [vault]
//! refresh = "10m"     # default; like External Secrets' refreshInterval
//! ```
//!
//! Decisions:
//! - **Only `run` keeps them** ([`super::Sources::cache_secrets`]); the
//!   one-shot commands (`reconcile --once`, `plan`, `diff`, `pull`) build
//!   their sources without a cache and always read Vault.
//! - **In memory only**, as the pass already holds them: values stay in
//!   [`SecretString`](crate::secret::SecretString)s inside [`Secret`], are
//!   never written anywhere and die with the process (or with a reload,
//!   which builds new sources). `Debug` prints counts only.
//! - **A reused secret carries the version it was read at**, so a pass's
//!   snapshot stays what it says it is: every secret with its version.
//! - **A path is re-read** when `refresh` has passed since it was read, or
//!   when the caller says it is stale (a marker written by `set-secret`,
//!   `import` or `rollback` names a newer version). A path that was absent
//!   (404) holds nothing and is asked again every pass, so a secret created
//!   behind cfgsync's back shows up at the next pass.
//! - The interval pass stays the safety net for etcd keys; a secret changed
//!   behind cfgsync's back (the vault CLI) is picked up within `refresh`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Secret;

/// `[vault] refresh` when not set.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);

/// One secret as read, and when.
struct Held {
    secret: Secret,
    read_at: Instant,
}

/// Env → secret path → what was read.
pub struct SecretCache {
    refresh: Duration,
    held: Mutex<HashMap<String, BTreeMap<String, Held>>>,
    /// Env → path → a version a marker announced: read again when the
    /// held one is older.
    announced: Mutex<HashMap<String, BTreeMap<String, u64>>>,
}

/// The longest marker value read: a version number.
const MAX_MARKER_BYTES: usize = 20;

/// A marker's value: the version written, or None when it is not one
/// (hostile or damaged: the marker is then ignored, and `refresh` answers).
pub fn parse_marker(value: &[u8]) -> Option<u64> {
    if value.len() > MAX_MARKER_BYTES {
        return None;
    }
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// After a successful Vault write of `path` at `version`: puts its marker
/// (`<prefix>/_secret-versions/<env>/<path>` = the version, nothing else)
/// so the env's service reads it now. Ok(false): no etcd to announce in
/// (the file source for keys); the service then reads it within `refresh`.
pub async fn announce(config: &crate::config::Config, env: &str, path: &str, version: u64) -> Result<bool, String> {
    let crate::config::KeysSource::Etcd(settings) = &config.keys else { return Ok(false) };
    let key = super::etcd::keyspace::secret_marker(&settings.prefix, env, path);
    let client = super::etcd::EtcdSource::new(settings.clone()).connect().await.map_err(|e| e.to_string())?;
    let mut kv = client.kv_client();
    let put = kv.put(key.clone(), version.to_string(), None);
    match tokio::time::timeout(settings.timeout, put).await {
        Err(_) => Err(format!("writing {key} timed out")),
        Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == tonic::Code::PermissionDenied => {
            Err(format!("permission denied writing {key} ({})", s.message()))
        }
        Ok(Err(e)) => Err(format!("writing {key}: {e}")),
        Ok(Ok(_)) => Ok(true),
    }
}

/// What `set-secret` and `import` say when a marker could not be written:
/// the write itself succeeded.
pub fn announce_failed(env: &str, path: &str, cause: &str) -> String {
    format!(
        "warning: the secret was written, but the service of env {env} was not told ({}): it reads {path:?} within its [vault] refresh",
        crate::text::escape_controls(cause, false)
    )
}

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let paths: usize = held.values().map(BTreeMap::len).sum();
        f.debug_struct("SecretCache").field("refresh", &self.refresh).field("paths", &paths).finish()
    }
}

impl SecretCache {
    pub fn new(refresh: Duration) -> Self {
        Self { refresh, held: Mutex::new(HashMap::new()), announced: Mutex::new(HashMap::new()) }
    }

    /// A marker says `path` of `env` is at `version` now.
    pub fn announced(&self, env: &str, path: &str, version: u64) {
        let mut announced = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let v = announced.entry(env.to_owned()).or_default().entry(path.to_owned()).or_default();
        *v = (*v).max(version);
    }

    /// Drops what is held for `env`: its next pass reads every secret
    /// (a pass asked for by `rotate verify` or `rollback`).
    pub fn forget(&self, env: &str) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(env);
    }

    /// Splits `paths` of `env` into the secrets still held (read less than
    /// `refresh` ago and not `stale`) and the paths to read from Vault.
    /// A path a marker announced a newer version of is read.
    pub fn split(
        &self,
        env: &str,
        paths: &BTreeSet<String>,
        now: Instant,
    ) -> (BTreeMap<String, Secret>, BTreeSet<String>) {
        let announced = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let announced = announced.get(env);
        let stale = |path: &str, held: Option<u64>| {
            announced.and_then(|a| a.get(path)).is_some_and(|v| held.is_none_or(|h| h < *v))
        };
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let of_env = held.get(env);
        let mut reused = BTreeMap::new();
        let mut due = BTreeSet::new();
        for path in paths {
            match of_env.and_then(|h| h.get(path)) {
                Some(h)
                    if now.saturating_duration_since(h.read_at) < self.refresh && !stale(path, h.secret.version) =>
                {
                    reused.insert(path.clone(), h.secret.clone());
                }
                _ => {
                    due.insert(path.clone());
                }
            }
        }
        (reused, due)
    }

    /// Records what a read of `asked` (paths of `env`) found at `now`: the
    /// found ones are held, the absent ones forgotten. Their announced
    /// versions are answered: a marker naming a version Vault does not
    /// have does not make every later pass read the path again.
    pub fn store(&self, env: &str, asked: &BTreeSet<String>, found: &BTreeMap<String, Secret>, now: Instant) {
        if let Some(a) = self.announced.lock().unwrap_or_else(|p| p.into_inner()).get_mut(env) {
            a.retain(|path, _| !asked.contains(path));
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let of_env = held.entry(env.to_owned()).or_default();
        for path in asked {
            match found.get(path) {
                Some(s) => {
                    of_env.insert(path.clone(), Held { secret: s.clone(), read_at: now });
                }
                None => {
                    of_env.remove(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    fn secret(value: &str, version: u64) -> Secret {
        Secret { fields: [("password".to_owned(), SecretString::new(value))].into(), version: Some(version) }
    }

    fn paths(p: &[&str]) -> BTreeSet<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn reuses_within_refresh_and_reads_again_after_it() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let asked = paths(&["db", "api"]);
        // Nothing held yet: everything is read.
        let (reused, due) = cache.split("prod", &asked, t0);
        assert!(reused.is_empty());
        assert_eq!(due, asked);
        let found: BTreeMap<String, Secret> = [("db".to_owned(), secret("canary-db-1", 3))].into();
        cache.store("prod", &asked, &found, t0);

        // Within refresh: db reused with its version; api (absent) asked again.
        let (reused, due) = cache.split("prod", &asked, t0 + Duration::from_secs(59));
        assert_eq!(due, paths(&["api"]));
        assert_eq!(reused["db"].version, Some(3));
        assert_eq!(reused["db"].fields["password"].expose(), "canary-db-1");
        // Another env holds nothing.
        assert_eq!(cache.split("dev", &asked, t0).1, asked);

        // Refresh passed: read again.
        let (reused, due) = cache.split("prod", &asked, t0 + Duration::from_secs(60));
        assert!(reused.is_empty());
        assert_eq!(due, asked);

        // A marker naming the version held changes nothing; a newer one
        // makes the path read again at once, and only that path's.
        let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        cache.announced("prod", "db", 3);
        assert_eq!(cache.split("prod", &asked, t1).1, paths(&["api"]));
        cache.announced("dev", "db", 9);
        cache.announced("prod", "db", 4);
        let (reused, due) = cache.split("prod", &asked, t1);
        assert!(reused.is_empty());
        assert_eq!(due, asked);
        // Read (whatever version Vault had): held again, the marker answered.
        cache.store("prod", &paths(&["db"]), &[("db".to_owned(), secret("canary-db-4", 4))].into(), t1);
        let (reused, due) = cache.split("prod", &asked, t2);
        assert_eq!(reused["db"].version, Some(4));
        assert_eq!(due, paths(&["api"]));
        // Asked for a pass: everything read.
        cache.forget("prod");
        assert_eq!(cache.split("prod", &asked, t2).1, asked);
        cache.store("prod", &asked, &found, t0);

        // A path gone from Vault is forgotten.
        cache.store("prod", &paths(&["db"]), &BTreeMap::new(), t0);
        assert_eq!(cache.split("prod", &asked, t0).1, asked);
    }

    #[test]
    fn markers_hold_a_version_number_only() {
        assert_eq!(parse_marker(b"7"), Some(7));
        assert_eq!(parse_marker(b" 12\n"), Some(12));
        for bad in [&b""[..], b"-1", b"seven", b"\xff", &[b'9'; 40]] {
            assert_eq!(parse_marker(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_prints_counts_not_values() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let found: BTreeMap<String, Secret> = [("db".to_owned(), secret("canary-never-printed", 1))].into();
        cache.store("prod", &paths(&["db"]), &found, Instant::now());
        let shown = format!("{cache:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("paths: 1"), "{shown}");
    }
}
