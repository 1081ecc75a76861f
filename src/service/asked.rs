//! A pass asked for from outside: `cfgsync rotate verify` (and `cfgsync
//! rollback` of secrets, which no etcd watch sees) put the key
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

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::worker::{Reason, Trigger};
use crate::source::etcd::EtcdSource;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct AskedWatch {
    pub etcd: std::sync::Arc<EtcdSource>,
    pub env: String,
    /// `<prefix>/_service/envs/<env>/pass`.
    pub key: String,
    pub trigger: mpsc::Sender<Trigger>,
    pub timeout: Duration,
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
        let created =
            tokio::time::timeout(self.timeout, watch.watch(self.key.clone(), Some(WatchOptions::new()))).await;
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
                    if resp.events().iter().any(|e| e.event_type() == EventType::Put) {
                        info!(env = %self.env, "a pass was asked for");
                        let _ = self.trigger.try_send(Trigger::now(Reason::Asked));
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
