//! What the file kind fails at, and the code of each failure.

use std::sync::Arc;

use super::io::PathError;
use crate::targets::{KindError, TargetError};

/// A failed or refused file. Names the path, never the content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    /// A symlink, FIFO or device where a file or directory should be, a
    /// name reserved for cfgsync, a mode that would show a secret. `reason`
    /// names the path.
    #[error("{reason}")]
    Unsafe { path: String, reason: String },
    #[error("writing {path}: {source}")]
    Write { path: String, source: Arc<std::io::Error> },
    #[error("check_cmd rejected {path}: {detail}")]
    Check { path: String, detail: String },
    #[error("reload_cmd after writing {path} failed: {detail}")]
    Reload { path: String, detail: String },
    /// A file at a target path that this instance has no record of
    /// writing (see `not_ours`). `reason` names the path.
    #[error("{reason}")]
    Foreign { path: String, reason: String },
    #[error("{path}: not deleted: it changed since cfgsync wrote it")]
    PruneModified { path: String },
}

impl KindError for FileError {
    fn code(&self) -> &'static str {
        match self {
            FileError::Unsafe { .. } => "unsafe_path",
            FileError::Write { .. } => "write_failed",
            FileError::Check { .. } => "check_rejected",
            FileError::Reload { .. } => "reload_failed",
            FileError::Foreign { .. } => "foreign_file",
            FileError::PruneModified { .. } => "prune_modified",
        }
    }

    fn duplicate(&self) -> Box<dyn KindError> {
        Box::new(self.clone())
    }
}

impl From<PathError> for FileError {
    fn from(e: PathError) -> Self {
        let reason = e.to_string();
        match e {
            PathError::Io { path, source } => FileError::Write { path, source: Arc::new(source) },
            PathError::Symlink { path, .. } | PathError::NotRegular { path, .. } => FileError::Unsafe { path, reason },
        }
    }
}

impl From<PathError> for TargetError {
    fn from(e: PathError) -> Self {
        FileError::from(e).into()
    }
}
