//! A pass asked for from outside: `cfgsync rotate verify`, `cfgsync
//! refresh` (and `cfgsync rollback` when a secret marker could not be
//! written) put the key
//! `<prefix>/_service/envs/<env>/pass`; the env's worker gets an immediate
//! pass when it changes, and passes only where it leads, as always.
//!
//! One watch per env on that one key, from the revision it was started
//! at: a request made while the service was down is not replayed (the
//! first pass after a start reads everything anyway). An asked pass gives
//! every target a fresh try (backoffs are cleared, as after a config
//! reload): someone is waiting on its outcome. A broken watch is
//! retried after 200 ms to 2 s; the interval keeps the env converging
//! meanwhile. The value is the asker's name and time, read by nobody.
//! An asked pass reads every secret from Vault, not the versions the
//! service holds (`source::secret_cache`).
//!
//! The same watch, on a prefix, serves the secret markers
//! (`<prefix>/_secret-versions/<env>/<path>`, put by `set-secret`,
//! `import` and `rollback` after a Vault write): each tells the sources which version of
//! which path is new, and asks for a pass that reads that path at once
//! instead of within `[vault] refresh`: a pass of the outputs whose last
//! full pass read that path (and those whose reads are not known), not of
//! the whole env (see [`super::worker`]'s `secret_readers`; a marker of the
//! `[fingerprint] key` passes the whole env).

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::worker::Trigger;
use crate::source::etcd::EtcdSource;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a put of a watched key asks for (None: nothing).
pub type OnPut = Box<dyn Fn(&etcd_client::KeyValue) -> Option<Trigger> + Send + Sync>;

pub struct AskedWatch {
    pub etcd: std::sync::Arc<EtcdSource>,
    pub env: String,
    /// `<prefix>/_service/envs/<env>/pass`, or the prefix of the markers.
    pub key: String,
    /// Watch every key under `key` instead of `key` alone.
    pub prefix: bool,
    /// What a put of a key asks for (None: nothing).
    pub on_put: OnPut,
    pub trigger: mpsc::Sender<Trigger>,
    pub timeout: Duration,
}

/// The `on_put` of the `pass` key.
pub fn asked_pass(env: String) -> OnPut {
    Box::new(move |kv| {
        info!(env, revision = kv.mod_revision(), "a pass was asked for");
        Some(Trigger::asked(kv.mod_revision()))
    })
}

/// The `on_put` of the secret markers under `markers`: tells the current
/// generation's sources, then asks for a pass. A marker that is not a
/// version number is ignored (`refresh` answers for its path).
pub fn secret_marker(
    env: String,
    markers: String,
    generation: tokio::sync::watch::Receiver<std::sync::Arc<super::Generation>>,
) -> OnPut {
    Box::new(move |kv| {
        let path = kv.key_str().ok()?.strip_prefix(markers.as_str()).filter(|p| !p.is_empty())?;
        let Some(version) = crate::source::secret_cache::parse_marker(kv.value()) else {
            debug!(env, path = ?path, "a secret marker that is not a version number; ignored");
            return None;
        };
        generation.borrow().sources.secret_announced(&env, path, version);
        info!(env, path = ?path, version, "a secret was written through cfgsync; reading it now");
        Some(Trigger::secret_marked(path.to_owned()))
    })
}

impl AskedWatch {
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let error = tokio::select! {
                () = cancel.cancelled() => return,
                e = self.watch_once(&mut backoff) => e,
            };
            debug!(env = %self.env, error, "the watch for asked passes broke; retrying");
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn watch_once(&self, backoff: &mut Duration) -> String {
        let client = match self.etcd.connect().await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let mut watch = client.watch_client();
        let options = if self.prefix { WatchOptions::new().with_prefix() } else { WatchOptions::new() };
        let created = tokio::time::timeout(self.timeout, watch.watch(self.key.clone(), Some(options))).await;
        let mut stream = match created {
            Err(_) => return format!("etcd: watching {} timed out", self.key),
            Ok(Err(e)) => {
                crate::source::etcd::refresh_token_if_invalid(&client, &e).await;
                return format!("etcd: watching {}: {e}", self.key);
            }
            Ok(Ok(s)) => s,
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.created() {
                        *backoff = BACKOFF_MIN;
                    }
                    if resp.canceled() {
                        return format!("etcd: the watch on {} was canceled: {}", self.key, resp.cancel_reason());
                    }
                    let puts = resp.events().iter().filter(|e| e.event_type() == EventType::Put);
                    let mut asked = puts.filter_map(|e| (self.on_put)(e.kv()?)).collect::<Vec<_>>();
                    if let Some(t) = asked.pop() {
                        let _ = self.trigger.try_send(t);
                    }
                }
                Ok(None) => return format!("etcd: the watch on {} ended", self.key),
                Err(e) => {
                    crate::source::etcd::refresh_token_if_invalid(&client, &e).await;
                    return format!("etcd: watch on {}: {e}", self.key);
                }
            }
        }
    }
}
