//! What the service keeps in etcd, and the record of an env's last pass
//! that its leader publishes there so every replica can judge readiness.
//!
//! Layout ([`crate::source::etcd::keyspace`] has the whole of it), under
//! `[etcd] prefix` (default `/cfgsync`):
//!
//! | key | written by | lease |
//! |---|---|---|
//! | `<prefix>/_service/members/<replica>` | each replica | its own |
//! | `<prefix>/_service/envs/<env>/leader` | the env's leader (txn: only if absent) | the leader's |
//! | `<prefix>/_service/envs/<env>/status` | the env's leader, after each pass | none |
//! | `<prefix>/_service/envs/<env>/pass` | `rotate verify`, `rollback`: asks the leader for a pass now ([`super::asked`]) | none |
//!
//! Decisions:
//! - **One prefix per env** (`_service/envs/<env>/`), so an etcd role can
//!   grant a reconciler exactly its envs' election and status keys; only
//!   `members/` is shared (the fair share counts every replica).
//! - **The status is fenced in etcd**: it is written in a transaction that
//!   succeeds only while the writer's lease still holds the env's leader
//!   key, so a deposed leader cannot overwrite its successor's record.
//! - **The status outlives its writer** (no lease): after a failover or a
//!   rolling restart the new leader inherits "last change" times, and
//!   followers keep judging the env by its last pass until the new leader's
//!   first one (which it runs at once when elected). Staleness is judged by
//!   the record's time, so a record nobody refreshes turns not-ready.
//! - **Codes and names only**: a record holds states, error codes, target
//!   ids, kinds and addresses (from the config), times and the etcd
//!   revision; never error text, which could quote a value. A record read
//!   back is untrusted: codes that are not `[a-z0-9_]` are replaced.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::source::etcd::EtcdSource;
use crate::source::etcd::keyspace::ServiceKeys;

/// How a target fared in the env's last pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Agrees with the sources (written now or before).
    Ok,
    /// Had been changed by someone else; this pass reverted it.
    DriftReverted,
    /// Failed in this pass.
    Failing,
    /// Failed before; skipped until its backoff is over.
    BackingOff,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Ok => "ok",
            TargetState::DriftReverted => "drift_reverted",
            TargetState::Failing => "failing",
            TargetState::BackingOff => "backing_off",
        }
    }
}

/// One target in an [`EnvRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// `<env>/<output>/<index>`.
    pub id: String,
    /// The output it belongs to (empty in a record from before this field:
    /// [`TargetRecord::output_name`] reads it from the id then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    pub kind: String,
    /// The file, or the object as `context/namespace/name`.
    pub address: String,
    pub state: TargetState,
    /// Why it fails (a code), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When cfgsync last wrote it (Unix ms), as far as any leader knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_ms: Option<u64>,
    /// When no write is known: since when passes have found it as it
    /// should be (Unix ms), so "last change" says "not since then".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since_ms: Option<u64>,
}

impl TargetRecord {
    /// The output's name, from the id (`<env>/<output>/<index>`) in a
    /// record that does not carry it.
    pub fn output_name(&self) -> &str {
        if !self.output.is_empty() {
            return &self.output;
        }
        let rest = self.id.split_once('/').map_or(self.id.as_str(), |(_, r)| r);
        rest.rsplit_once('/').map_or(rest, |(o, _)| o)
    }
}

/// An output that could not be rendered in the last pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub name: String,
    pub code: String,
}

/// The last pass of one env, as its leader (or the standalone replica)
/// saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRecord {
    /// The replica that ran the pass.
    pub leader: String,
    /// When the pass ended (Unix ms).
    pub at_ms: u64,
    /// The etcd revision the keys were read at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Nothing failed and no target is backing off.
    pub ok: bool,
    /// The first reason it is not ok (a code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRecord>,
    /// The pass was asked for from outside (`rotate verify`, `refresh`):
    /// the etcd revision of the newest request it answers. A waiter knows
    /// its request's revision, so a pass that was already running when it
    /// asked (and ends first) is never taken for the answer, and no clock
    /// is compared across hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_revision: Option<i64>,
}

/// A code as `/readyz` may show it: `[a-z0-9_]`, at most 48 bytes.
pub fn sane_code(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 48
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { code.to_owned() } else { "invalid_code".to_owned() }
}

impl EnvRecord {
    /// Whether this record is of a pass that answered the request put at
    /// etcd revision `asked` (or a later one: requests coalesce).
    pub fn answers(&self, asked: i64) -> bool {
        self.asked_revision.is_some_and(|r| r >= asked)
    }

    /// Parses a record read from etcd; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut r: EnvRecord = serde_json::from_slice(bytes).ok()?;
        r.code = r.code.as_deref().map(sane_code);
        for o in &mut r.outputs {
            o.code = sane_code(&o.code);
        }
        for t in &mut r.targets {
            t.code = t.code.as_deref().map(sane_code);
        }
        Some(r)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record of strings and numbers serializes")
    }
}

/// Why a record was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Connect(#[from] crate::source::SourceError),
    #[error("etcd: writing {key}: {source}")]
    Etcd { key: String, source: etcd_client::Error },
    #[error("etcd: writing {key} timed out")]
    Timeout { key: String },
    /// The leader key is no longer held by this replica's lease.
    #[error("not the leader of env {env} any more")]
    NotLeader { env: String },
}

/// Writes the leader's [`EnvRecord`]s to etcd.
pub struct Publisher {
    pub etcd: Arc<EtcdSource>,
    pub keys: ServiceKeys,
    /// Per write: a third of the election TTL, like every election call.
    pub timeout: Duration,
}

impl Publisher {
    /// Writes `record` as env's status while `lease` holds its leader key;
    /// returns the etcd revision of the write.
    pub async fn publish(&self, env: &str, lease: i64, record: &EnvRecord) -> Result<i64, PublishError> {
        let key = self.keys.status(env);
        let client = self.etcd.connect().await?;
        let txn = Txn::new()
            .when([Compare::lease(self.keys.leader(env), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(key.clone(), record.to_json(), None::<PutOptions>)]);
        let mut kv = client.kv_client();
        let resp = match tokio::time::timeout(self.timeout, kv.txn(txn)).await {
            Err(_) => return Err(PublishError::Timeout { key }),
            Ok(Err(source)) => return Err(PublishError::Etcd { key, source }),
            Ok(Ok(r)) => r,
        };
        if !resp.succeeded() {
            return Err(PublishError::NotLeader { env: env.to_owned() });
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_read_back_keeps_only_sane_codes() {
        let r = EnvRecord {
            leader: "r1".into(),
            at_ms: 5,
            revision: Some(7),
            asked_revision: None,
            ok: false,
            code: Some("etcd_unreachable".into()),
            outputs: vec![OutputRecord { name: "api".into(), code: "render_missing".into() }],
            targets: vec![TargetRecord {
                id: "prod/api/0".into(),
                output: "api".into(),
                kind: "file".into(),
                address: "out/prod/api.env".into(),
                state: TargetState::Failing,
                code: Some("check_rejected".into()),
                last_change_ms: Some(3),
                unchanged_since_ms: None,
            }],
        };
        assert_eq!(EnvRecord::parse(r.to_json().as_bytes()), Some(r.clone()));
        // A record from before `output`: the name comes from the id.
        let old = r.to_json().replace("\"output\":\"api\",", "");
        let old = EnvRecord::parse(old.as_bytes()).unwrap();
        assert_eq!((old.targets[0].output.as_str(), old.targets[0].output_name()), ("", "api"));
        let forged = r.to_json().replace("check_rejected", "password is hunter2");
        let parsed = EnvRecord::parse(forged.as_bytes()).unwrap();
        assert_eq!(parsed.targets[0].code.as_deref(), Some("invalid_code"));
        assert_eq!(EnvRecord::parse(b"not json"), None);
        assert_eq!(sane_code(&"a".repeat(49)), "invalid_code");
    }
}
