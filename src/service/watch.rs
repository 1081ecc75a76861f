//! The etcd watch on one env prefix, `<prefix>/<env>/`.
//!
//! Every batch of events becomes a debounced trigger for the env's worker.
//! The watch resumes from the last revision seen (an event's, or the
//! revision the last pass read at, whichever is newer), so a reconnect
//! replays what happened meanwhile instead of losing it. When the watch
//! breaks (etcd restarted, leader change, network), the worker gets an
//! immediate pass — which fails closed, and shows on `/readyz`, while etcd
//! is away — and the interval timer keeps running; reconnects back off from
//! 200 ms to 2 s. When the watch comes back, one more pass catches up. If
//! the revision to resume from was compacted, the watch restarts at the
//! current revision and a full pass resyncs.
//!
//! An `invalid auth token` (etcd restarted and forgot its simple tokens)
//! refreshes the client's token before reconnecting
//! ([`crate::source::etcd::refresh_token_if_invalid`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::WatchOptions;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::status::Board;
use super::worker::{Reason, Trigger};
use crate::source::etcd::{EtcdSource, refresh_token_if_invalid};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct EnvWatch {
    pub etcd: Arc<EtcdSource>,
    pub env: String,
    /// `<prefix>/<env>/`.
    pub prefix: String,
    /// Newest revision known to be reflected (events seen, passes read).
    pub revision: Arc<AtomicI64>,
    /// Set when a trigger could not be queued: the changed keys are then
    /// not all known, and the next pass must be a full one.
    pub overflow: Arc<std::sync::atomic::AtomicBool>,
    pub trigger: mpsc::Sender<Trigger>,
    pub status: Arc<Board>,
    /// How long connecting may take (the etcd timeout).
    pub timeout: Duration,
    /// `cfgsync_watch_up{kind="etcd"}` of the env.
    pub up: crate::metrics::WatchUp,
}

impl EnvWatch {
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut lost = false;
        loop {
            let error = tokio::select! {
                () = cancel.cancelled() => return,
                e = self.watch_once(&mut lost, &mut backoff) => e,
            };
            self.up.set(false);
            if !lost {
                lost = true;
                warn!(env = %self.env, error = %error, "etcd watch lost; falling back to the interval and reconnecting");
                self.status.set_watch_lost(&self.env, true);
                let _ = self.trigger.try_send(Trigger::now(Reason::WatchLost));
            } else {
                debug!(env = %self.env, error = %error, "etcd watch still down");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One watch, from creation until it breaks; returns why it broke.
    async fn watch_once(&self, lost: &mut bool, backoff: &mut Duration) -> String {
        let client = match self.etcd.connect().await {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let from = self.revision.load(Ordering::SeqCst);
        let mut options = WatchOptions::new().with_prefix();
        if from > 0 {
            options = options.with_start_revision(from + 1);
        }
        let mut watch_client = client.watch_client();
        let created = tokio::time::timeout(self.timeout, watch_client.watch(self.prefix.clone(), Some(options))).await;
        let mut stream = match created {
            Err(_) => return format!("etcd: creating the watch on {} timed out", self.prefix),
            Ok(Err(e)) => {
                refresh_token_if_invalid(&client, &e).await;
                return format!("etcd: watching {}: {e}", self.prefix);
            }
            Ok(Ok(s)) => s,
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        warn!(env = %self.env, from, compacted = resp.compact_revision(), "etcd watch revision compacted; resyncing from now");
                        self.revision.store(0, Ordering::SeqCst);
                        let _ = self.trigger.try_send(Trigger::now(Reason::Resync));
                        return format!("etcd: revision {} was compacted", from + 1);
                    }
                    if resp.canceled() {
                        let reason = resp.cancel_reason().to_owned();
                        if reason.contains("invalid auth token") {
                            let _ = client.refresh_token().await;
                        }
                        return format!("etcd: watch on {} canceled by the server: {reason}", self.prefix);
                    }
                    if resp.created() {
                        self.up.set(true);
                    }
                    if resp.created() && *lost {
                        *lost = false;
                        *backoff = BACKOFF_MIN;
                        info!(env = %self.env, from = from + 1, "etcd watch re-established");
                        self.status.set_watch_lost(&self.env, false);
                        let _ = self.trigger.try_send(Trigger::now(Reason::WatchResumed));
                    } else if resp.created() {
                        *backoff = BACKOFF_MIN;
                    }
                    let newest = resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max();
                    if let Some(rev) = newest {
                        self.revision.fetch_max(rev, Ordering::SeqCst);
                        let keys = resp
                            .events()
                            .iter()
                            .filter_map(|e| e.kv())
                            .map(|kv| {
                                let key = String::from_utf8_lossy(kv.key());
                                key.strip_prefix(self.prefix.as_str()).unwrap_or(&key).to_owned()
                            })
                            .collect();
                        // A full channel already holds a pending trigger, but
                        // these keys would be lost: the next pass is a full one.
                        if self.trigger.try_send(Trigger::debounced(Reason::Watch, rev, keys)).is_err() {
                            self.overflow.store(true, Ordering::SeqCst);
                        }
                    }
                }
                Ok(None) => return format!("etcd: the watch on {} ended", self.prefix),
                Err(e) => {
                    crate::source::etcd::refresh_token_if_invalid(&client, &e).await;
                    return format!("etcd: watch on {}: {e}", self.prefix);
                }
            }
        }
    }
}
