//! Targets: where rendered outputs go. Each target kind observes what is
//! there and applies a planned change; deciding *what* to change is
//! [`crate::plan`]'s job.

pub mod file;
pub mod kubernetes;

/// A failed observe or apply. Names the target, never a value.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("reading {path}: {source}")]
    Observe { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("check_cmd rejected {path}: {detail}")]
    Check { path: String, detail: String },
    #[error("reload_cmd after writing {path} failed: {detail}")]
    Reload { path: String, detail: String },
    #[error(transparent)]
    Kube(Box<kubernetes::KubeError>),
    #[error("encoding {path}: {source}")]
    Encode { path: String, source: crate::format::FormatError },
    /// The service's fence was closed: this replica may not write the env.
    #[error("not written: {reason} (env {env})")]
    Fenced { env: String, reason: String },
}

impl From<kubernetes::KubeError> for TargetError {
    fn from(e: kubernetes::KubeError) -> Self {
        match e {
            kubernetes::KubeError::Fenced { env, reason } => TargetError::Fenced { env, reason },
            other => TargetError::Kube(Box::new(other)),
        }
    }
}
