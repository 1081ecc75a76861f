//! `notify` watches on the directories of an env's file targets: a hand
//! edit or a deletion of a file cfgsync wrote is reverted by a pass of its
//! output at once, instead of at the next interval.
//!
//! Decisions:
//! - **What is watched**: the directory of each file target of the env
//!   (non-recursive), and a `dir` target's own directory. Events name
//!   paths; only a target's path (or a file directly in a `dir` target)
//!   is looked at, and cfgsync's temp files (`.cfgsync-tmp-…`) never.
//! - **Ours or drift**: the file target records, per path, the output and
//!   a keyed fingerprint of what it wrote ([`crate::targets::file::state`]).
//!   A changed path is judged once no pass of the env runs (the watch
//!   takes the env's pass lock, so the records of a pass that just wrote
//!   are in): a file that holds what was recorded is cfgsync's own write
//!   (ignored); one that holds something else, or is gone, drifted, and
//!   its output gets a pass ([`Trigger::drift`]). A path with no record
//!   (a file someone else put there) triggers nothing: the file target
//!   refuses foreign files anyway.
//! - **Never through a link**: the path is looked at with `lstat`; a link,
//!   FIFO, device or directory where a file was written is drift (the
//!   pass then refuses it with the file target's own error), and a file is
//!   opened with `O_NOFOLLOW | O_NONBLOCK` and read up to 64 MiB (larger
//!   is drift, never read whole).
//! - Like the Kubernetes watches ([`super::target_watch`]) they run only
//!   while this replica leads the env; a directory that cannot be watched
//!   (missing, no permission) marks the env's file watch down on `/readyz`
//!   and `cfgsync_watch_up{kind="file"}`, and is tried again at the next
//!   restart of the watches (leadership or config change).
//!
//! Cost: one inotify watch per directory, whatever the number of files in
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Generation;
use super::election::Leadership;
use super::status::Board;
use super::worker::Trigger;
use crate::format::Format;
use crate::targets::TargetKind;

/// Read no more of a changed file than this: a larger one is drift.
const MAX_READ: u64 = 64 * 1024 * 1024;

/// Where an env's file targets write: each target path, and whether it is
/// a `dir` target (a directory of files).
pub fn paths(generation: &Generation, env: &str) -> BTreeMap<PathBuf, bool> {
    let outputs = generation.config.outputs.iter().filter(|o| o.envs.iter().any(|e| e == env));
    outputs
        .flat_map(|o| &o.targets)
        .filter_map(|t| match &t.kind {
            TargetKind::File(f) => f.paths.get(env).map(|p| (p.clone(), f.format == Format::Dir)),
            _ => None,
        })
        .collect()
}

/// The file watches of one env, while it lives (it is dropped when the
/// env's watches restart).
pub struct FileWatch {
    pub env: String,
    pub generation: Arc<Generation>,
    pub leadership: Arc<Leadership>,
    pub trigger: mpsc::Sender<Trigger>,
    pub status: Arc<Board>,
    pub up: crate::metrics::WatchUp,
}

impl FileWatch {
    pub async fn run(self) {
        let targets = paths(&self.generation, &self.env);
        if targets.is_empty() {
            return;
        }
        let (tx, mut events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening or reading a file is no change (and the watch reads
            // the files it judges: counting that would spin); closing one
            // written is.
            use notify::event::{AccessKind, AccessMode};
            if let Ok(event) = res
                && !matches!(event.kind, notify::EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
            {
                let _ = tx.send(event.paths);
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => return self.down(&e.to_string()),
        };
        let mut dirs: BTreeSet<PathBuf> = targets.keys().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
        dirs.extend(targets.iter().filter(|(_, dir)| **dir).map(|(p, _)| p.clone()));
        let mut watched = BTreeSet::new();
        if let Err(e) = rewatch(&mut watcher, &dirs, &mut watched) {
            return self.down(&e);
        }
        self.up.set(true);
        self.status.set_target_watch(&self.env, "file", Some(true));
        debug!(env = %self.env, directories = dirs.len(), "watching the file targets' directories");
        while let Some(first) = events.recv().await {
            let mut changed: BTreeSet<PathBuf> = first.into_iter().collect();
            while let Ok(more) = events.try_recv() {
                changed.extend(more);
            }
            // A directory created since (the first pass makes them) is watched from now on.
            if let Err(e) = rewatch(&mut watcher, &dirs, &mut watched) {
                return self.down(&e);
            }
            let changed: BTreeSet<PathBuf> = changed.iter().filter_map(|p| concerns(&targets, p)).collect();
            if changed.is_empty() {
                continue;
            }
            // The records of a pass that is writing now are in once it is done.
            self.status.watch_event(&self.env, None);
            let lock = self.leadership.pass_lock(&self.env);
            let _guard = lock.lock().await;
            let mut outputs = BTreeSet::new();
            for path in &changed {
                let content = read_file(path);
                let recorded = self.generation.targets.files.recorded(&self.env, path, content.as_deref());
                if let Some((output, false)) = recorded {
                    let shown = crate::text::display_path(path);
                    info!(env = %self.env, output = %output, path = %shown, "file changed outside cfgsync: a pass of its output reverts it");
                    self.status.watch_event(&self.env, Some(format!("file {shown}")));
                    outputs.insert(output);
                }
            }
            if !outputs.is_empty() {
                let _ = self.trigger.try_send(Trigger::drift(outputs.into_iter().collect()));
            }
        }
        drop(watcher);
    }

    fn down(&self, error: &str) {
        warn!(env = %self.env, error, "cannot watch the file targets; drift is reverted at the interval");
        self.up.set(false);
        self.status.set_target_watch(&self.env, "file", Some(false));
    }
}

/// Watches each of `dirs` that exists, and for one that does not (yet)
/// its nearest existing ancestor, whose events say when it appears.
fn rewatch(
    watcher: &mut notify::RecommendedWatcher,
    dirs: &BTreeSet<PathBuf>,
    watched: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    for dir in dirs {
        let mut at = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.clone() };
        // lstat: a link is not a directory to watch through.
        while !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
            match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
                _ => {
                    at = PathBuf::from(".");
                    break;
                }
            }
        }
        if watched.contains(&at) {
            continue;
        }
        watcher
            .watch(&at, RecursiveMode::NonRecursive)
            .map_err(|e| format!("{}: {e}", crate::text::display_path(&at)))?;
        watched.insert(at);
    }
    Ok(())
}

/// The target path (as the config spells it) a changed path is: a
/// target's file, or a file directly in a `dir` target; cfgsync's temp
/// files never are.
fn concerns(targets: &BTreeMap<PathBuf, bool>, path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    if name.to_string_lossy().starts_with(".cfgsync") {
        return None;
    }
    let path = absolute(path);
    targets.iter().find_map(|(t, dir)| {
        let at = absolute(t);
        if path == at {
            Some(t.clone())
        } else if *dir && path.parent() == Some(at.as_path()) {
            Some(t.join(name))
        } else {
            None
        }
    })
}

/// `path` against the working directory, without `.` components (no link
/// is resolved: a link is never followed).
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(path)
    };
    joined.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

/// The content of a regular file at `path`, not through a link, at most
/// [`MAX_READ`] bytes; `None` when it is gone or is not a regular file (a
/// link, a FIFO, …: that is drift too). Some(empty-but-marked) is not
/// needed: a file larger than the limit reads as one byte over it, which
/// never matches a record.
fn read_file(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let kind = meta.file_type();
    if !kind.is_file() || kind.is_fifo() || kind.is_symlink() {
        return None;
    }
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path).ok()?;
    let mut content = Vec::new();
    file.take(MAX_READ + 1).read_to_end(&mut content).ok()?;
    Some(content)
}
