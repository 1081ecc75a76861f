//! What each env's worker last saw, for `/readyz`.
//!
//! Readiness is judged per env this replica is responsible for (it leads
//! it, or there is no election): the last pass must have succeeded and the
//! last success must be less than two intervals old. An env another replica
//! leads is that replica's business and does not make this one unready; it
//! is shown with its leader. The body never holds a value: errors are the
//! `Display` of the typed errors, which name keys, paths and sources only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::http::Readiness;
use crate::reconcile::Report;
use crate::target::TargetError;

/// How this replica relates to an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No election (keys come from files): this replica writes every env.
    Standalone,
    Leader,
    /// Another replica leads (its id), or nobody does yet (`None`).
    Follower(Option<String>),
}

#[derive(Debug, Clone)]
struct Failure {
    what: String,
    error: String,
}

#[derive(Debug, Clone)]
struct EnvStatus {
    role: Role,
    last_pass: Option<(SystemTime, Instant)>,
    last_success: Option<(SystemTime, Instant)>,
    /// Why the last pass failed: the source, or the outputs/targets.
    source_failure: Option<(String, String)>,
    failures: Vec<Failure>,
    watch_error: Option<String>,
}

/// The status board every worker writes and `/readyz` reads.
pub struct Status {
    replica: String,
    inner: Mutex<Inner>,
}

struct Inner {
    interval: Duration,
    envs: BTreeMap<String, EnvStatus>,
}

impl Status {
    pub fn new(replica: String, envs: &[String], interval: Duration, election: bool) -> Self {
        let role = if election { Role::Follower(None) } else { Role::Standalone };
        let envs = envs
            .iter()
            .map(|e| {
                let s = EnvStatus {
                    role: role.clone(),
                    last_pass: None,
                    last_success: None,
                    source_failure: None,
                    failures: Vec::new(),
                    watch_error: None,
                };
                (e.clone(), s)
            })
            .collect();
        Self { replica, inner: Mutex::new(Inner { interval, envs }) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Follows a config reload: the env set and the interval.
    pub fn set_envs(&self, envs: &[String], interval: Duration, election: bool) {
        self.with(|inner| {
            inner.interval = interval;
            inner.envs.retain(|e, _| envs.contains(e));
            for e in envs {
                inner.envs.entry(e.clone()).or_insert_with(|| EnvStatus {
                    role: if election { Role::Follower(None) } else { Role::Standalone },
                    last_pass: None,
                    last_success: None,
                    source_failure: None,
                    failures: Vec::new(),
                    watch_error: None,
                });
            }
        });
    }

    pub fn set_role(&self, env: &str, role: Role) {
        self.with(|inner| {
            if let Some(s) = inner.envs.get_mut(env) {
                s.role = role;
            }
        });
    }

    pub fn set_watch_error(&self, env: &str, error: Option<String>) {
        self.with(|inner| {
            if let Some(s) = inner.envs.get_mut(env) {
                s.watch_error = error;
            }
        });
    }

    /// Records a pass. `backing_off` lists targets skipped in this pass
    /// and the error that put them there; they keep the env failing.
    pub fn record_pass(&self, env: &str, report: &Report, backing_off: &[(String, String)]) {
        let now = (SystemTime::now(), Instant::now());
        self.with(|inner| {
            let Some(s) = inner.envs.get_mut(env) else { return };
            s.last_pass = Some(now);
            s.source_failure = None;
            s.failures.clear();
            for e in &report.envs {
                if let Some(err) = &e.source_error {
                    s.source_failure = Some((crate::metrics::source_label(err.kind()).to_owned(), err.to_string()));
                }
                for o in &e.outputs {
                    if let Some(err) = &o.error {
                        s.failures.push(Failure { what: format!("output {}", o.output), error: err.to_string() });
                    }
                    for t in &o.targets {
                        match &t.error {
                            // Losing leadership mid-pass is not a failure of the env.
                            None | Some(TargetError::Fenced { .. }) => {}
                            Some(err) => {
                                s.failures.push(Failure { what: format!("target {}", t.id), error: err.to_string() })
                            }
                        }
                    }
                }
            }
            for (id, error) in backing_off {
                s.failures.push(Failure { what: format!("target {id} (backing off)"), error: error.clone() });
            }
            if s.source_failure.is_none() && s.failures.is_empty() {
                s.last_success = Some(now);
            }
        });
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Readiness for Status {
    fn readiness(&self) -> (bool, Value) {
        self.with(|inner| {
            let stale_after = inner.interval * 2;
            let mut all_ready = true;
            let mut envs = serde_json::Map::new();
            for (name, s) in &inner.envs {
                let (role, leader) = match &s.role {
                    Role::Standalone => ("standalone", None),
                    Role::Leader => ("leader", None),
                    Role::Follower(l) => ("follower", l.clone()),
                };
                let responsible = matches!(s.role, Role::Standalone | Role::Leader);
                let failing = s.source_failure.is_some() || !s.failures.is_empty();
                let reason = if !responsible {
                    None
                } else if let Some((source, error)) = &s.source_failure {
                    Some(format!("source {source} failed: {error}"))
                } else if !s.failures.is_empty() {
                    Some(format!(
                        "{} failing",
                        s.failures.iter().map(|f| f.what.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    match s.last_success {
                        None => Some("no pass has completed yet".to_owned()),
                        Some((_, at)) if at.elapsed() > stale_after => Some(format!(
                            "last successful pass was {} s ago (limit: 2 intervals)",
                            at.elapsed().as_secs()
                        )),
                        Some(_) => None,
                    }
                };
                let ready = reason.is_none();
                all_ready &= ready;
                let mut e = json!({ "ready": ready, "role": role });
                if let Some(l) = leader {
                    e["leader"] = json!(l);
                }
                if let Some(r) = reason {
                    e["reason"] = json!(r);
                }
                if let Some((source, error)) = &s.source_failure
                    && responsible
                {
                    e["source"] = json!({ "name": source, "error": error });
                }
                if failing && responsible && !s.failures.is_empty() {
                    e["failing"] = s.failures.iter().map(|f| json!({ "what": f.what, "error": f.error })).collect();
                }
                if let Some((t, _)) = s.last_success {
                    e["last_success_unix"] = json!(unix(t));
                }
                if let Some((t, _)) = s.last_pass {
                    e["last_pass_unix"] = json!(unix(t));
                }
                if let Some(w) = &s.watch_error {
                    e["watch"] = json!(format!("lost: {w}"));
                }
                envs.insert(name.clone(), e);
            }
            (all_ready, json!({ "ready": all_ready, "replica": self.replica, "envs": envs }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::EnvReport;
    use crate::source::{SourceError, SourceKind};

    fn report(env: &str, source_error: Option<SourceError>) -> Report {
        Report {
            envs: vec![EnvReport {
                env: env.to_owned(),
                revision: None,
                source_error,
                outputs: Vec::new(),
                pruned: Vec::new(),
                prune_errors: Vec::new(),
            }],
        }
    }

    #[test]
    fn ready_only_when_every_responsible_env_succeeded() {
        let envs = ["prod".to_owned(), "staging".to_owned()];
        let s = Status::new("r1".to_owned(), &envs, Duration::from_secs(60), true);
        s.set_role("prod", Role::Leader);
        s.set_role("staging", Role::Follower(Some("r2".to_owned())));
        let (ready, body) = s.readiness();
        assert!(!ready);
        assert_eq!(body["envs"]["prod"]["reason"], "no pass has completed yet");
        assert_eq!(body["envs"]["staging"]["ready"], true, "another replica's env: {body}");
        assert_eq!(body["envs"]["staging"]["leader"], "r2");

        s.record_pass("prod", &report("prod", None), &[]);
        assert!(s.readiness().0);

        let err = SourceError::Connect {
            source_kind: SourceKind::Etcd,
            endpoint: "http://e:2379".to_owned(),
            cause: "refused".to_owned(),
        };
        s.record_pass("prod", &report("prod", Some(err)), &[]);
        let (ready, body) = s.readiness();
        assert!(!ready);
        assert_eq!(body["envs"]["prod"]["source"]["name"], "etcd", "{body}");
        assert!(
            body["envs"]["prod"]["reason"].as_str().unwrap().starts_with("source etcd failed: etcd: cannot connect")
        );
        assert!(body["envs"]["prod"]["last_success_unix"].is_u64());
    }
}
