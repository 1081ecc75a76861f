//! One recorded pass: the snapshot an env was rendered from and what it
//! did to the targets, as stored (JSON) under `<prefix>/_history/<env>/`.
//!
//! Decisions:
//! - **No value, ever.** A record holds the etcd revision (plain values
//!   are read back from etcd's own MVCC history at that revision), each
//!   secret's *version* (KV v2 keeps versions), fingerprints (keyed for
//!   secret content, as on the targets themselves), ids, kinds and codes.
//! - **Deltas, not copies.** Targets are listed only when something
//!   happened to them (written, failed, fenced); the ones found as they
//!   should be are a count. The secret versions are written in full when
//!   they differ from the previous record of the env (and in the first
//!   record a process writes); otherwise `secrets` is absent, meaning "as
//!   in the record before". A no-op pass at fleet-1000 is a few hundred
//!   bytes.
//! - **Untrusted when read back**: anyone with write access to the prefix
//!   could forge one. Codes are sanitised ([`sane_code`]), sizes are
//!   bounded ([`MAX_RECORD_BYTES`]), and everything printed from a record is
//!   escaped by the printer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::service::published::sane_code;

/// The record format; a reader skips records of a newer format.
pub const FORMAT: u32 = 1;
/// A record larger than this is not read (a forged or broken one).
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// One pass of one env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    #[serde(rename = "v")]
    pub format: u32,
    /// When the pass ended (Unix ms).
    pub at_ms: i64,
    /// The replica that ran it (`reconcile@<host>` for a one-shot pass).
    pub replica: String,
    /// The etcd revision the keys were read at (none for the file source,
    /// or when the sources failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Secret path → version read. `None`: the same as in the previous
    /// record of this env (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, u64>>,
    /// A hash of the config file and every template (`sha256:` + 32 hex).
    pub config: String,
    /// The commit the config's directory was at, when it is a git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    /// Nothing failed.
    pub ok: bool,
    /// The first reason it is not ok (a code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Only some outputs were rendered (a watch pass).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Targets found as they should be (not listed).
    #[serde(default)]
    pub unchanged: u32,
    /// Targets written, failed or fenced in this pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetEntry>,
    /// What was deleted because no target claims it any more (addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

/// What happened to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetResult {
    Written,
    Failed,
    /// This replica had lost the env's lead: nothing written.
    Fenced,
}

impl TargetResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetResult::Written => "written",
            TargetResult::Failed => "failed",
            TargetResult::Fenced => "fenced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetEntry {
    /// `<env>/<output>/<index>`.
    pub id: String,
    pub kind: String,
    pub result: TargetResult,
    /// The output's fingerprint (what the target holds once written: the
    /// `cfgsync.io/fingerprint` of a Kubernetes object). Absent for secret
    /// content without the env's fingerprint key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl PassRecord {
    /// Parses a stored record; `None` when it is not one this reader knows.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_RECORD_BYTES {
            return None;
        }
        let mut r: PassRecord = serde_json::from_slice(bytes).ok()?;
        if r.format > FORMAT {
            return None;
        }
        r.code = r.code.as_deref().map(sane_code);
        for t in &mut r.targets {
            t.code = t.code.as_deref().map(sane_code);
        }
        Some(r)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record of strings and numbers serializes")
    }

    /// Whether the pass wrote anything (a target or a prune).
    pub fn wrote(&self) -> bool {
        !self.pruned.is_empty() || self.targets.iter().any(|t| t.result == TargetResult::Written)
    }

    /// The target's entry in this record.
    pub fn target(&self, id: &str) -> Option<&TargetEntry> {
        self.targets.iter().find(|t| t.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> PassRecord {
        PassRecord {
            format: FORMAT,
            at_ms: 1_796_133_720_000,
            replica: "r1".into(),
            revision: Some(42),
            secrets: Some([("api/db".to_owned(), 3)].into()),
            config: "sha256:00".into(),
            git: None,
            ok: false,
            code: Some("check_rejected".into()),
            partial: false,
            unchanged: 7,
            targets: vec![TargetEntry {
                id: "prod/api/0".into(),
                kind: "file".into(),
                result: TargetResult::Failed,
                fp: Some("sha256:ab".into()),
                code: Some("check_rejected".into()),
            }],
            pruned: Vec::new(),
        }
    }

    #[test]
    fn a_record_round_trips_and_a_forged_one_keeps_only_sane_codes() {
        let r = sample();
        assert_eq!(PassRecord::parse(r.to_json().as_bytes()), Some(r.clone()));
        assert!(!r.wrote());
        let forged = r.to_json().replace("\"code\":\"check_rejected\"}", "\"code\":\"password is hunter2\"}");
        let parsed = PassRecord::parse(forged.as_bytes()).unwrap();
        assert_eq!(parsed.targets[0].code.as_deref(), Some("invalid_code"));
        let newer = r.to_json().replace("\"v\":1", "\"v\":2");
        assert_eq!(PassRecord::parse(newer.as_bytes()), None, "a newer format is skipped");
        assert_eq!(PassRecord::parse(b"{}"), None);
    }
}
