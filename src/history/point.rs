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
//! Only passes that read a snapshot count: a recorded pass whose sources
//! failed (no revision) is never a point.
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
            let found = newest_rendered(store, env, Some(RecordKey::ceil(at)), 0).await?;
            if found.is_none() {
                let keys = store.keys(env).await?;
                return Err(PointError::NoRecord { shown, env: env.to_owned(), oldest: oldest_text(&keys) });
            }
            found
        }
        When::Passes(n) => {
            let found = newest_rendered(store, env, None, *n as usize).await?;
            if found.is_none() {
                let count = store.keys(env).await?.iter().filter(|k| k.revision > 0).count();
                return Err(PointError::TooFewPasses { shown, env: env.to_owned(), count });
            }
            found
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

/// The newest record at or before `until` (`None`: the newest of all) that rendered (read a snapshot:
/// a pass whose sources failed has no revision), after skipping `skip`
/// such records.
async fn newest_rendered(
    store: &HistoryStore,
    env: &str,
    mut until: Option<RecordKey>,
    mut skip: usize,
) -> Result<Option<(RecordKey, PassRecord)>, HistoryError> {
    loop {
        let page = store.newest(env, until.as_ref(), 64).await?;
        for (key, record) in &page {
            if record.revision.is_some() {
                if skip == 0 {
                    return Ok(Some((key.clone(), record.clone())));
                }
                skip -= 1;
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == 64 && last.at_ms > 0 => until = Some(last.before()),
            _ => return Ok(None),
        }
    }
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
        until = last.before();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::FORMAT;
    use crate::history::store::Retention;
    use std::time::Duration;

    fn record(at_ms: i64, revision: Option<i64>) -> PassRecord {
        PassRecord {
            format: FORMAT,
            at_ms,
            replica: "r".into(),
            revision,
            secrets: None,
            config: "sha256:00".into(),
            git: None,
            ok: revision.is_some(),
            code: revision.is_none().then(|| "source".to_owned()),
            partial: false,
            unchanged: 0,
            targets: Vec::new(),
            pruned: Vec::new(),
        }
    }

    /// A pass whose sources failed recorded no revision: `@-Npasses` and
    /// `@<time>` step over it to a pass that read a snapshot, also when
    /// more than a page of failed passes lies between.
    #[tokio::test]
    async fn a_failed_pass_is_never_a_point() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::Dir(dir.path().join("history"));
        let retention = Retention { keep: 1_000, max_age: Duration::from_secs(1_000_000) };
        let now = 1_000_000;
        store.write("prod", &record(now - 500_000, Some(3)), None, retention).await.unwrap();
        store.write("prod", &record(now - 400_000, Some(5)), None, retention).await.unwrap();
        for i in 0..100 {
            store.write("prod", &record(now - 300_000 + i, None), None, retention).await.unwrap();
        }
        store.write("prod", &record(now - 1_000, Some(7)), None, retention).await.unwrap();
        let at = |w: When| {
            let store = &store;
            async move { resolve(store, "prod", &w, now).await.unwrap().revision }
        };
        assert_eq!(at(When::Passes(0)).await, Some(7));
        assert_eq!(at(When::Passes(1)).await, Some(5), "100 failed passes lie between");
        assert_eq!(at(When::Passes(2)).await, Some(3));
        assert_eq!(at(When::Time(now - 250_000)).await, Some(5), "the newest record then failed");
        let err = resolve(&store, "prod", &When::Passes(3), now).await.unwrap_err();
        assert_eq!(err.to_string(), "prod@-3passes: only 3 passes of env prod are recorded");
    }
}
