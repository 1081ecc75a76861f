//! The one place the service reads a [`reconcile::Report`]: it becomes a
//! [`PassSummary`] of names, codes and hashes, which the worker, the
//! metrics, the status board and the published record use.
//!
//! Decisions:
//! - **Codes, not text.** Every failure gets a short code (`etcd_unreachable`,
//!   `check_rejected`, `render_missing`, …) for `/readyz`, the status page
//!   and etcd; the error's text (which names keys and paths, and for a
//!   failed check may carry a command's output) is kept for the log only.
//! - **Exhaustive matches** on the error enums: a new variant must get a
//!   code before it compiles, instead of falling into a catch-all. Source
//!   and render codes are made here; a target's error names its own code
//!   ([`TargetError::code`]: each kind's error type, in its folder).
//! - Kept narrow on purpose, so that a change to the report's shape is a
//!   change to this file only.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::plan::Action;
use crate::reconcile::{EnvReport, Report};
use crate::render::RenderError;
use crate::source::{SourceError, SourceKind};
use crate::targets::TargetError;

/// A failure, as a code. Its text was logged by reconcile, where it
/// happened, and goes nowhere else.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: String,
}

/// One target of the pass.
#[derive(Debug, Clone)]
pub struct TargetSummary {
    pub id: String,
    /// The output it belongs to.
    pub output: String,
    pub kind: &'static str,
    pub address: String,
    /// The pass found it different from what it should be.
    pub needs_write: bool,
    /// Its changes were written.
    pub wrote: bool,
    /// The target kind itself recognised a hand edit.
    pub drift_seen: bool,
    /// A hash of what it should hold: equal across passes exactly when the
    /// desired content is.
    pub desired_hash: u64,
    pub error: Option<Failure>,
    /// The fence was closed (lost the lead mid-pass): not a failure of the
    /// target.
    pub fenced: bool,
}

/// One pass of one env, reduced to what the service needs.
#[derive(Debug, Clone, Default)]
pub struct PassSummary {
    pub revision: Option<i64>,
    /// `source_label`, failure: no target was touched.
    pub source: Option<(&'static str, Failure)>,
    /// Outputs that could not be rendered.
    pub outputs: Vec<(String, Failure)>,
    pub prune: Vec<Failure>,
    pub targets: Vec<TargetSummary>,
    /// Writes (create, update, delete, drift reverted).
    pub changed: usize,
}

impl PassSummary {
    pub fn of(report: &Report) -> Self {
        let mut s = PassSummary::default();
        for e in &report.envs {
            s.add(e);
        }
        s
    }

    /// One env's pass (the history records them env by env).
    pub fn of_env(env: &EnvReport) -> Self {
        let mut s = PassSummary::default();
        s.add(env);
        s
    }

    fn add(&mut self, e: &EnvReport) {
        let s = self;
        s.revision = s.revision.or(e.revision);
        if let Some(err) = &e.source_error {
            s.source = Some((source_label(err.kind()), Failure { code: source_code(err) }));
        }
        for p in &e.errors {
            s.prune.push(Failure { code: p.code().to_owned() });
        }
        for o in &e.outputs {
            if let Some(err) = &o.error {
                s.outputs.push((o.output.clone(), Failure { code: render_code(err).to_owned() }));
            }
            for t in &o.targets {
                let mut hasher = DefaultHasher::new();
                for c in &t.changes {
                    c.address.hash(&mut hasher);
                    c.content_hash.hash(&mut hasher);
                }
                let needs_write = t.changes.iter().any(|c| c.action.writes());
                let fenced = matches!(t.error, Some(TargetError::Fenced { .. }));
                let error = t.error.as_ref().filter(|_| !fenced).map(|e| Failure { code: e.code().to_owned() });
                let wrote = needs_write && t.applied && t.error.is_none();
                if wrote {
                    s.changed += t.changes.iter().filter(|c| c.action.writes()).count();
                }
                s.targets.push(TargetSummary {
                    id: t.id.clone(),
                    output: o.output.clone(),
                    kind: t.kind,
                    address: t.address.clone(),
                    needs_write,
                    wrote,
                    drift_seen: t.changes.iter().any(|c| c.action == Action::Drift),
                    desired_hash: hasher.finish(),
                    error,
                    fenced,
                });
            }
        }
    }

    /// Anything failed (a fenced target is not a failure).
    pub fn failed(&self) -> bool {
        self.source.is_some()
            || !self.outputs.is_empty()
            || !self.prune.is_empty()
            || self.targets.iter().any(|t| t.error.is_some())
    }

    /// The first reason the pass failed, as a code.
    pub fn first_code(&self) -> Option<String> {
        if let Some((_, f)) = &self.source {
            return Some(f.code.clone());
        }
        if let Some((_, f)) = self.outputs.first() {
            return Some(f.code.clone());
        }
        if let Some(t) = self.targets.iter().find(|t| t.error.is_some()) {
            return t.error.as_ref().map(|f| f.code.clone());
        }
        self.prune.first().map(|f| f.code.clone())
    }
}

/// The metric label of a source.
pub fn source_label(kind: SourceKind) -> &'static str {
    crate::metrics::source_label(kind)
}

/// `<source>_<what>`, e.g. `etcd_unreachable`, `vault_denied`.
pub fn source_code(e: &SourceError) -> String {
    let what = match e {
        SourceError::Connect { .. } => "unreachable",
        SourceError::Tls { .. } => "tls_failed",
        SourceError::Auth { .. } => "auth_failed",
        SourceError::Denied { .. } => "denied",
        SourceError::Read { .. } => "read_failed",
        SourceError::Invalid { .. } => "invalid",
        SourceError::Timeout { .. } => "timeout",
    };
    format!("{}_{what}", source_label(e.kind()))
}

fn render_code(e: &RenderError) -> &'static str {
    match e {
        RenderError::Missing { .. } => "render_missing",
        RenderError::Template { .. } => "render_failed",
        RenderError::Limit { .. } => "render_limit",
        RenderError::Worker { .. } => "render_worker_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{EnvReport, OutputReport, TargetReport};
    use crate::targets::file::FileError;

    fn target(id: &str, error: Option<TargetError>) -> TargetReport {
        TargetReport {
            id: id.to_owned(),
            kind: "file",
            address: format!("out/{id}"),
            changes: Vec::new(),
            applied: false,
            reloaded: false,
            error,
        }
    }

    #[test]
    fn failures_become_codes_and_the_fence_is_not_a_failure() {
        let secret = "s3cr3t-value";
        let report = Report {
            envs: vec![EnvReport {
                env: "prod".into(),
                revision: Some(42),
                source_error: None,
                outputs: vec![
                    OutputReport {
                        output: "api".into(),
                        tainted: true,
                        error: None,
                        skipped: None,
                        used: Default::default(),
                        fingerprint: None,
                        targets: vec![
                            target(
                                "prod/api/0",
                                Some(FileError::Check { path: "p".into(), detail: secret.into() }.into()),
                            ),
                            target("prod/api/1", Some(TargetError::Fenced { env: "prod".into(), reason: "r".into() })),
                        ],
                    },
                    OutputReport {
                        output: "web".into(),
                        tainted: false,
                        error: Some(RenderError::Template {
                            output: "web".into(),
                            env: "prod".into(),
                            entry: "X".into(),
                            template: None,
                            message: secret.into(),
                        }),
                        skipped: None,
                        used: Default::default(),
                        fingerprint: None,
                        targets: Vec::new(),
                    },
                ],
                pruned: Vec::new(),
                errors: Vec::new(),
                keys: None,
                secret_versions: Default::default(),
            }],
        };
        let s = PassSummary::of(&report);
        assert_eq!(s.revision, Some(42));
        assert!(s.failed());
        assert_eq!(s.first_code().as_deref(), Some("render_failed"));
        assert_eq!(s.outputs[0].0, "web");
        let failing = &s.targets[0];
        assert_eq!(failing.error.as_ref().unwrap().code, "check_rejected");
        assert!(s.targets[1].fenced && s.targets[1].error.is_none());
        for code in [s.first_code().unwrap(), failing.error.clone().unwrap().code] {
            assert!(!code.contains(secret));
        }

        let err = SourceError::Timeout { source_kind: SourceKind::Vault, path: "p".into(), seconds: 3 };
        assert_eq!(source_code(&err), "vault_timeout");
    }
}
