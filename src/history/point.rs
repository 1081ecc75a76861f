//! What `<env>@<when>` means: the etcd revision to read at and the version
//! of each secret, decided from the env's recorded passes.
//!
//! - `@rev:N`: etcd at revision N; secrets at the versions of the newest
//!   pass recorded at or before N.
//! - `@<time>` and `@-1h`: the newest pass recorded at or before that
//!   time: its revision, and its secret versions. (etcd keeps no time per
//!   revision; the service records a pass at least every `[history] quiet`
//!   and after every change, so the newest record before a time is the
//!   state the targets were rendered from then.)
//! - `@-3passes`: three recorded passes before the newest.
//!
//! A record whose secret versions are "as before" ([`super::record`]) takes
//! them from the records before it. Secrets a record does not name (a
//! `diff` reads every secret of the env) are read at the version Vault's
//! metadata says was current at the point's time.

use std::collections::BTreeMap;

use super::record::PassRecord;
use super::store::{HistoryError, HistoryStore, RecordKey};
use crate::when::{When, format_ms};

/// A resolved point.
#[derive(Debug, Clone)]
pub struct Point {
    pub env: String,
    pub when: When,
    /// The etcd revision to read at.
    pub revision: Option<i64>,
    /// The time the point stands for (secrets no record names are read
    /// at the version current then).
    pub at_ms: Option<i64>,
    /// The pass record the point resolved to.
    pub record: Option<(RecordKey, PassRecord)>,
    /// Secret path → version, from the records.
    pub versions: Option<BTreeMap<String, u64>>,
}

impl Point {
    /// `prod@rev:12`, as shown in headers.
    pub fn shown(&self) -> String {
        format!("{}@{}", self.env, self.when)
    }

    /// What the point resolved to, in words (for a header line).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.revision {
            parts.push(format!("etcd revision {r}"));
        }
        if let Some((_, rec)) = &self.record {
            parts.push(format!("pass of {} by {}", format_ms(rec.at_ms), rec.replica));
        }
        parts.join(", ")
    }

    /// The version a secret is read at: the records', else the one current
    /// at the point's time (`None` → the caller asks Vault's metadata).
    pub fn recorded_version(&self, path: &str) -> Option<u64> {
        self.versions.as_ref()?.get(path).copied()
    }
}

/// Why a point cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum PointError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{shown}: no pass of env {env} is recorded at or before it{oldest}")]
    NoRecord { shown: String, env: String, oldest: String },
    #[error("{shown}: only {count} passes of env {env} are recorded")]
    TooFewPasses { shown: String, env: String, count: usize },
    #[error("{shown}: is in the future")]
    Future { shown: String },
}

fn oldest_text(keys: &[RecordKey]) -> String {
    match keys.first() {
        Some(k) => format!(" (the oldest record is of {}, revision {})", format_ms(k.at_ms), k.revision),
        None => " (none is recorded yet)".to_owned(),
    }
}

/// Resolves `when` for `env` against its records; `now_ms` is now.
pub async fn resolve(store: &HistoryStore, env: &str, when: &When, now_ms: i64) -> Result<Point, PointError> {
    let shown = format!("{env}@{when}");
    let mut point =
        Point { env: env.to_owned(), when: when.clone(), revision: None, at_ms: None, record: None, versions: None };
    let found: Option<(RecordKey, PassRecord)> = match when {
        When::Revision(rev) => {
            point.revision = Some(*rev);
            let keys = store.keys(env).await?;
            let key = keys.iter().rev().find(|k| k.revision > 0 && k.revision <= *rev).cloned();
            match key {
                Some(k) => store.get(env, &k).await?.map(|r| (k, r)),
                None => None,
            }
        }
        When::Time(_) | When::Ago(_) => {
            let at = match when {
                When::Time(t) => *t,
                When::Ago(d) => now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                _ => unreachable!("matched above"),
            };
            if at > now_ms {
                return Err(PointError::Future { shown });
            }
            point.at_ms = Some(at);
            let until = RecordKey::ceil(at);
            let found = store.newest(env, Some(&until), 1).await?.into_iter().next();
            if found.is_none() {
                let keys = store.keys(env).await?;
                return Err(PointError::NoRecord { shown, env: env.to_owned(), oldest: oldest_text(&keys) });
            }
            found
        }
        When::Passes(n) => {
            let wanted = *n as usize + 1;
            let mut newest = store.newest(env, None, wanted).await?;
            if newest.len() < wanted {
                return Err(PointError::TooFewPasses { shown, env: env.to_owned(), count: newest.len() });
            }
            newest.pop()
        }
    };
    if let Some((key, record)) = &found {
        if point.revision.is_none() {
            point.revision = record.revision;
        }
        point.at_ms.get_or_insert(record.at_ms);
        point.versions = match &record.secrets {
            Some(v) => Some(v.clone()),
            None => versions_before(store, env, key).await?,
        };
    }
    point.record = found;
    Ok(point)
}

/// The secret versions in force at record `key`: those of the newest
/// record at or before it that lists them.
async fn versions_before(
    store: &HistoryStore,
    env: &str,
    key: &RecordKey,
) -> Result<Option<BTreeMap<String, u64>>, HistoryError> {
    let mut until = key.clone();
    loop {
        let page = store.newest(env, Some(&until), 64).await?;
        let Some((last, _)) = page.last().cloned() else { return Ok(None) };
        if let Some(v) = page.iter().find_map(|(_, r)| r.secrets.clone()) {
            return Ok(Some(v));
        }
        if page.len() < 64 || last.at_ms <= 0 {
            return Ok(None);
        }
        until = RecordKey::ceil(last.at_ms - 1);
    }
}
