//! History: what each env looked like at every pass, so that after an
//! incident people can ask "what did prod look like at 14:02, and what
//! changed since?", put it back through the source of truth, and check
//! that a rotated secret reached every target.
//!
//! ```toml
//! [history]
//! keep = 500          # records per env
//! max_age = "30d"     # and none older than this
//! quiet = "15m"       # at most one pass that changed nothing, per this long
//! ```
//!
//! A pass already reads one consistent snapshot per env (an etcd revision
//! and each secret's version) and writes that revision and a fingerprint
//! on what it writes. [`Recorder`] keeps a [`record::PassRecord`] of that
//! snapshot — the revision, the secret versions, a hash of the config and
//! templates (and the git commit when the config directory is a
//! repository), which targets were written with which fingerprint, by
//! which replica, and the outcome — in the env's own etcd prefix
//! ([`store`]). No value is copied: plain values are read back from etcd's
//! MVCC history at the recorded revision, secrets at their recorded
//! version ([`crate::source::at`]).
//!
//! Which passes are recorded: every pass that writes (a target or a
//! prune), every pass whose outcome differs from the last recorded one
//! (a target starts or stops failing), and otherwise at most one pass per
//! `quiet` (so that "14:02" finds a record close to it even when nothing
//! changed for hours). In the service only the env's leader records, and
//! its write is fenced by its lease like its published status. A one-shot
//! `reconcile --once` records the passes that wrote, in etcd only (without
//! etcd there is no shared place a one-shot could write to; the service's
//! records then go to the state directory).
//!
//! Decisions:
//! - **A failed record never fails a pass.** The targets were written; the
//!   record is a log line (`warn`) short.
//! - **Ask the history, not the targets**, for "what was it": points
//!   ([`point`]) resolve to a recorded pass; only `rotate verify` reads the
//!   targets themselves.

pub mod point;
pub mod record;
pub mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::reconcile::EnvReport;
use crate::render::Templates;
use crate::service::summary::PassSummary;

pub use record::{PassRecord, TargetEntry, TargetResult};
pub use store::{Guard, HistoryError, HistoryStore, RecordKey, Retention, Written};

/// `[history]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    pub keep: usize,
    pub max_age: Duration,
    /// At most one pass that changed nothing is recorded per this long.
    pub quiet: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self { keep: 500, max_age: Duration::from_secs(30 * 86_400), quiet: Duration::from_secs(15 * 60) }
    }
}

impl HistorySettings {
    pub fn retention(&self) -> Retention {
        Retention { keep: self.keep, max_age: self.max_age }
    }
}

/// What the recorder remembers of an env's last record.
#[derive(Debug, Clone, Default)]
struct Last {
    at_ms: i64,
    outcome: (bool, Option<String>),
    /// The secret versions last written in full.
    secrets: Option<BTreeMap<String, u64>>,
}

/// Decides which passes are recorded, builds and writes their records.
/// One per process (the service keeps it across config reloads).
pub struct Recorder {
    replica: String,
    last: Mutex<BTreeMap<String, Last>>,
    /// (templates' identity, stamp): the config hash of the current config.
    stamp: Mutex<Option<(usize, ConfigStamp)>>,
}

/// Which passes to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The service: writes, changes of outcome, one quiet pass per `quiet`.
    Service,
    /// A one-shot pass: only when it wrote.
    Writes,
}

impl Recorder {
    pub fn new(replica: impl Into<String>) -> Self {
        Self { replica: replica.into(), last: Mutex::new(BTreeMap::new()), stamp: Mutex::new(None) }
    }

    /// The record of one env's pass, when `policy` says to record it.
    /// `partial`: the pass rendered some outputs only.
    pub fn record_of(
        &self,
        config: &Config,
        templates: &Templates,
        report: &EnvReport,
        partial: bool,
        policy: Policy,
        now_ms: i64,
    ) -> Option<PassRecord> {
        let summary = PassSummary::of_env(report);
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).get(&report.env).cloned();
        let outcome = (!summary.failed(), summary.first_code());
        let wrote = summary.targets.iter().any(|t| t.wrote) || !report.pruned.is_empty();
        let due = match (&last, policy) {
            (_, Policy::Writes) => wrote,
            (None, Policy::Service) => true,
            (Some(l), Policy::Service) => {
                wrote
                    || l.outcome != outcome
                    || now_ms.saturating_sub(l.at_ms)
                        >= i64::try_from(config.history.quiet.as_millis()).unwrap_or(i64::MAX)
            }
        };
        if !due {
            return None;
        }
        let fingerprints: BTreeMap<&str, &str> =
            report.outputs.iter().filter_map(|o| Some((o.output.as_str(), o.fingerprint.as_deref()?))).collect();
        let targets = summary
            .targets
            .iter()
            .filter_map(|t| {
                let result = if t.fenced {
                    TargetResult::Fenced
                } else if t.error.is_some() {
                    TargetResult::Failed
                } else if t.wrote {
                    TargetResult::Written
                } else {
                    return None;
                };
                Some(TargetEntry {
                    id: t.id.clone(),
                    kind: t.kind.to_owned(),
                    result,
                    fp: fingerprints.get(t.output.as_str()).map(|f| (*f).to_owned()),
                    code: t.error.as_ref().map(|e| e.code.clone()),
                })
            })
            .collect::<Vec<_>>();
        let listed = targets.len();
        let versions = report.source_error.is_none().then(|| report.secret_versions.clone());
        let secrets = match (&versions, last.as_ref().and_then(|l| l.secrets.as_ref())) {
            (Some(v), Some(before)) if v == before => None,
            (v, _) => v.clone(),
        };
        let stamp = self.stamp(config, templates);
        Some(PassRecord {
            format: record::FORMAT,
            at_ms: now_ms,
            replica: self.replica.clone(),
            revision: report.revision,
            secrets,
            config: stamp.hash,
            git: stamp.git,
            ok: outcome.0,
            code: outcome.1,
            partial,
            unchanged: u32::try_from(summary.targets.len().saturating_sub(listed)).unwrap_or(u32::MAX),
            targets,
            pruned: report.pruned.iter().map(|c| c.address.clone()).collect(),
        })
    }

    /// Writes `record` for `env`; remembers it once written.
    pub async fn write(
        &self,
        store: &HistoryStore,
        env: &str,
        record: &PassRecord,
        guard: Option<&Guard>,
        settings: &HistorySettings,
    ) -> Result<Written, HistoryError> {
        let written = store.write(env, record, guard, settings.retention()).await?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let entry = last.entry(env.to_owned()).or_default();
        entry.at_ms = record.at_ms;
        entry.outcome = (record.ok, record.code.clone());
        if record.secrets.is_some() {
            entry.secrets.clone_from(&record.secrets);
        }
        Ok(written)
    }

    /// Forgets what was recorded for `env` (this replica stopped leading
    /// it: the next leader's records come in between).
    pub fn forget(&self, env: &str) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(env);
    }

    fn stamp(&self, config: &Config, templates: &Templates) -> ConfigStamp {
        let id = templates.sources().as_ptr() as usize;
        let mut cached = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((i, s)) = cached.as_ref()
            && *i == id
        {
            return s.clone();
        }
        let s = ConfigStamp::of(config, templates);
        *cached = Some((id, s.clone()));
        s
    }
}

/// The recorder and where it writes, for a process that runs passes (the
/// service, `reconcile --once`): one call per pass.
pub struct Journal {
    recorder: Recorder,
    /// The process's etcd client (the service's coordination client).
    etcd: Option<std::sync::Arc<crate::source::etcd::EtcdSource>>,
    policy: Policy,
}

impl Journal {
    pub fn new(
        replica: impl Into<String>,
        etcd: Option<std::sync::Arc<crate::source::etcd::EtcdSource>>,
        policy: Policy,
    ) -> Self {
        Self { recorder: Recorder::new(replica), etcd, policy }
    }

    /// Records one env's pass when it is to be recorded; `guard`: the
    /// leader's lease (the service with an election). A one-shot process
    /// without etcd records nothing (see the module doc). Never fails the
    /// pass: a record that cannot be written is logged.
    pub async fn pass(
        &self,
        config: &Config,
        templates: &Templates,
        report: &EnvReport,
        partial: bool,
        guard: Option<&Guard>,
    ) -> Option<Written> {
        let store = HistoryStore::for_config(config, self.etcd.clone());
        if self.policy == Policy::Writes && !store.is_etcd() {
            return None;
        }
        let now = crate::when::now_ms();
        let record = self.recorder.record_of(config, templates, report, partial, self.policy, now)?;
        match self.recorder.write(&store, &report.env, &record, guard, &config.history).await {
            Ok(w) => {
                tracing::debug!(
                    env = report.env,
                    bytes = w.bytes,
                    requests = w.requests,
                    pruned = w.pruned,
                    "pass recorded in the history"
                );
                Some(w)
            }
            Err(HistoryError::NotLeader { .. }) => {
                tracing::debug!(env = report.env, "pass not recorded: no longer the leader");
                self.recorder.forget(&report.env);
                None
            }
            Err(e) => {
                tracing::warn!(env = report.env, error = %e, "pass not recorded in the history");
                None
            }
        }
    }

    /// This process stopped leading `env`.
    pub fn forget(&self, env: &str) {
        self.recorder.forget(env);
    }
}

/// What identifies the config a pass rendered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStamp {
    /// `sha256:` + 32 hex of the config file and every template.
    pub hash: String,
    /// The config directory's git commit, if it is a repository.
    pub git: Option<String>,
}

impl ConfigStamp {
    pub fn of(config: &Config, templates: &Templates) -> Self {
        let file = std::fs::read(&config.path).unwrap_or_default();
        Self::of_parts(&file, templates, git_commit(&config.dir))
    }

    /// The stamp of a config file's bytes and its compiled templates.
    pub fn of_parts(file: &[u8], templates: &Templates, git: Option<String>) -> Self {
        use aws_lc_rs::digest;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&(file.len() as u64).to_be_bytes());
        ctx.update(file);
        for (name, text) in templates.sources() {
            for part in [name.as_bytes(), text.as_bytes()] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
        }
        let hash = ctx.finish();
        let hex: String = hash.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self { hash: format!("sha256:{hex}"), git }
    }
}

/// The commit `HEAD` names in the git repository holding `dir`, read from
/// the repository's files (no `git` process): a detached HEAD's hash, or
/// the branch's ref (loose, else in `packed-refs`). `None` outside a
/// repository or when anything is unexpected.
pub fn git_commit(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mut at: Option<&Path> = Some(&dir);
    let mut git_dir = None;
    for _ in 0..64 {
        let here = at?;
        let candidate = here.join(".git");
        if let Ok(m) = std::fs::symlink_metadata(&candidate) {
            if m.is_dir() {
                git_dir = Some(candidate);
            } else if m.is_file() {
                // A worktree or submodule: `gitdir: <path>`.
                let text = read_small(&candidate)?;
                let target = text.trim().strip_prefix("gitdir:")?.trim();
                git_dir = Some(here.join(target));
            }
            break;
        }
        at = here.parent();
    }
    let git_dir = git_dir?;
    let head = read_small(&git_dir.join("HEAD"))?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_hash(head).then(|| head.to_owned());
    };
    if !reference.starts_with("refs/") || reference.contains("..") {
        return None;
    }
    // A worktree's refs live in the common directory.
    let common = read_small(&git_dir.join("commondir")).map(|c| git_dir.join(c.trim())).unwrap_or(git_dir.clone());
    for base in [&git_dir, &common] {
        if let Some(hash) = read_small(&base.join(reference)).map(|h| h.trim().to_owned())
            && is_hash(&hash)
        {
            return Some(hash);
        }
    }
    let packed = read_small(&common.join("packed-refs"))?;
    packed.lines().find_map(|line| {
        let (hash, name) = line.split_once(' ')?;
        (name.trim() == reference && is_hash(hash)).then(|| hash.to_owned())
    })
}

fn read_small(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() || m.len() > 4 * 1024 * 1024 {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

fn is_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Change};
    use crate::reconcile::{OutputReport, TargetReport};

    /// prod's report with one target that wrote (or not), failed (or not).
    fn report(wrote: bool, failed: bool, versions: &[(&str, u64)]) -> EnvReport {
        let mut changes = Vec::new();
        if wrote {
            changes.push(Change::new("file", "out/prod/api.env".into(), Action::Update, false));
        }
        let target = TargetReport {
            id: "prod/api/0".into(),
            kind: "file",
            address: "out/prod/api.env".into(),
            changes,
            applied: wrote && !failed,
            reloaded: false,
            error: failed.then(|| crate::targets::TargetError::State { path: "p".into(), cause: "c".into() }),
        };
        EnvReport {
            env: "prod".into(),
            revision: Some(7),
            source_error: None,
            outputs: vec![OutputReport {
                output: "api".into(),
                tainted: false,
                error: None,
                skipped: None,
                used: Default::default(),
                fingerprint: Some("sha256:aa".into()),
                targets: vec![target],
            }],
            pruned: Vec::new(),
            errors: Vec::new(),
            keys: None,
            secret_versions: versions.iter().map(|(p, v)| ((*p).to_owned(), *v)).collect(),
        }
    }

    /// The service records its first pass, then a pass only when it
    /// wrote, its outcome changed, or `quiet` passed since the last
    /// record; secret versions only when they differ from the last
    /// record's. A one-shot pass records only when it wrote.
    #[test]
    fn the_service_records_writes_changes_of_outcome_and_one_quiet_pass_per_quiet() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/cfgsync.toml");
        let config = crate::config::load(&path, &crate::config::ProcessEnv).unwrap();
        let templates = Templates::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        let quiet = i64::try_from(config.history.quiet.as_millis()).unwrap();
        let recorder = Recorder::new("R1");
        let v1 = [("api/db", 1)];
        let record = |r: &EnvReport, now: i64| {
            let rec = recorder.record_of(&config, &templates, r, false, Policy::Service, now)?;
            // As `write` remembers a written record.
            let mut last = recorder.last.lock().unwrap();
            let entry = last.entry("prod".into()).or_default();
            entry.at_ms = rec.at_ms;
            entry.outcome = (rec.ok, rec.code.clone());
            if rec.secrets.is_some() {
                entry.secrets.clone_from(&rec.secrets);
            }
            Some(rec)
        };
        let t0 = 1_000_000_000;
        let first = record(&report(false, false, &v1), t0).expect("the first pass");
        assert_eq!(first.secrets, Some([("api/db".to_owned(), 1)].into()));
        assert!(record(&report(false, false, &v1), t0 + 1_000).is_none(), "a quiet pass within quiet");
        let wrote = record(&report(true, false, &v1), t0 + 2_000).expect("a pass that wrote");
        assert_eq!(wrote.secrets, None, "the same versions as the last record: not repeated");
        assert_eq!(wrote.targets.len(), 1);
        assert_eq!(wrote.targets[0].fp.as_deref(), Some("sha256:aa"));
        let failed = record(&report(false, true, &v1), t0 + 3_000).expect("the outcome changed");
        assert!(!failed.ok);
        assert!(record(&report(false, true, &v1), t0 + 4_000).is_none(), "failing as before");
        let later = record(&report(false, true, &[("api/db", 2)]), t0 + 3_000 + quiet).expect("quiet passed");
        assert_eq!(later.secrets, Some([("api/db".to_owned(), 2)].into()), "new versions are listed");
        // A one-shot process records writes only.
        let once = Recorder::new("reconcile@h");
        let r = report(false, false, &v1);
        assert!(once.record_of(&config, &templates, &r, false, Policy::Writes, t0).is_none());
        let r = report(true, false, &v1);
        assert!(once.record_of(&config, &templates, &r, false, Policy::Writes, t0).is_some());
    }

    #[test]
    fn git_commit_reads_loose_and_packed_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let hash = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(git.join("packed-refs"), format!("# pack-refs\n{hash} refs/heads/main\n")).unwrap();
        assert_eq!(git_commit(&dir.path().join("conf")).as_deref(), Some(hash));
        let loose = "89abcdef0123456789abcdef0123456789abcdef";
        std::fs::write(git.join("refs/heads/main"), format!("{loose}\n")).unwrap();
        assert_eq!(git_commit(dir.path()).as_deref(), Some(loose));
        std::fs::write(git.join("HEAD"), format!("{hash}\n")).unwrap();
        assert_eq!(git_commit(dir.path()).as_deref(), Some(hash), "a detached HEAD");
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(git_commit(outside.path()), None);
    }
}
