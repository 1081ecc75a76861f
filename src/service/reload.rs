//! Watching `cfgsync.toml`, `templates/` and the file source with `notify`.
//!
//! Directories are watched, not files: editors save by writing a new file
//! and renaming it over the old one, which a watch on the old inode would
//! miss. Only create/modify/remove events count (not reads), on the config
//! file itself, on anything under `templates/` except editor droppings
//! (dot files, `~` backups, `.swp`), and on `<env>.toml` in the file source.
//! A mounted Kubernetes ConfigMap is updated by renaming its `..data`
//! link, which counts as a change of the config (or the templates) too.
//! Events are debounced (the `[service] debounce`, at least 100 ms) so one
//! save that is several events becomes one reload.
//!
//! A changed config or template is loaded and compiled in full; if that
//! fails, the new config is rejected with one error line listing every
//! problem (file:line:col), counted in `cfgsync_config_reloads_total
//! {result="rejected"}`, and the service goes on with the last good one. A
//! good one replaces it for every following pass. Changes to `[etcd]`
//! endpoints or credentials and to `[service]` are used by passes at once
//! but by the watches and the election only after a restart; the reload
//! says so. A changed `source/<env>.toml` is not a reload: it triggers a
//! pass for that env.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Generation;
use crate::config::{self, Config, KeysSource, ProcessEnv};
use crate::metrics::Metrics;
use crate::render::Templates;

/// What the main loop is told.
pub enum ReloadEvent {
    /// A new, valid configuration.
    Config(Box<(Config, Templates)>),
    /// `source/<env>.toml` changed.
    SourceFile(String),
}

/// The paths watched for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Paths {
    config_file: PathBuf,
    config_dir: PathBuf,
    templates: PathBuf,
    files: Option<PathBuf>,
}

impl Paths {
    fn of(config: &Config) -> Self {
        let config_dir = absolute(&config.dir);
        let name = config.path.file_name().map(PathBuf::from).unwrap_or_default();
        let files = match &config.keys {
            KeysSource::Files(d) => Some(absolute(d)),
            KeysSource::Etcd(_) => None,
        };
        Self { config_file: config_dir.join(name), config_dir, templates: absolute(&config.templates_dir), files }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

#[derive(Debug, Default)]
struct Changes {
    config: bool,
    sources: BTreeSet<String>,
}

/// Kubernetes swaps a mounted ConfigMap by renaming `..data`; the file
/// names (symlinks) themselves never change.
fn configmap_swap(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "..data")
}

fn editor_dropping(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".swx") || name == "4913"
}

impl Paths {
    /// Records what `path` changing means; false when it is not watched for.
    fn classify(&self, path: &Path, changes: &mut Changes) -> bool {
        let config_file =
            path == self.config_file || (configmap_swap(path) && path.parent() == Some(self.config_dir.as_path()));
        let template = path.starts_with(&self.templates) && (configmap_swap(path) || !editor_dropping(path));
        if config_file || template {
            changes.config = true;
            true
        } else if let Some(files) = &self.files
            && path.parent() == Some(files.as_path())
            && path.extension().is_some_and(|e| e == "toml")
            && !editor_dropping(path)
            && let Some(env) = path.file_stem().and_then(|s| s.to_str())
        {
            changes.sources.insert(env.to_owned());
            true
        } else {
            false
        }
    }
}

/// A failure to set up the file watches.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}")]
pub struct WatchSetupError {
    pub path: String,
    #[source]
    pub source: notify::Error,
}

pub struct ConfigWatch {
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    paths: Paths,
    watched: Vec<PathBuf>,
    config_path: PathBuf,
}

impl ConfigWatch {
    /// Sets up the watches for `config` (so a failure stops the start).
    pub fn new(config: &Config) -> Result<Self, WatchSetupError> {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .map_err(|source| WatchSetupError { path: config.path.display().to_string(), source })?;
        let mut this =
            Self { watcher, events, paths: Paths::of(config), watched: Vec::new(), config_path: config.path.clone() };
        this.rewatch()?;
        Ok(this)
    }

    fn rewatch(&mut self) -> Result<(), WatchSetupError> {
        for p in self.watched.drain(..) {
            let _ = self.watcher.unwatch(&p);
        }
        let mut wanted = vec![(self.paths.config_dir.clone(), RecursiveMode::NonRecursive)];
        if self.paths.templates.is_dir() {
            wanted.push((self.paths.templates.clone(), RecursiveMode::Recursive));
        }
        if let Some(f) = self.paths.files.clone().filter(|f| f.is_dir() && *f != self.paths.config_dir) {
            wanted.push((f, RecursiveMode::NonRecursive));
        }
        for (path, mode) in wanted {
            self.watcher
                .watch(&path, mode)
                .map_err(|source| WatchSetupError { path: path.display().to_string(), source })?;
            self.watched.push(path);
        }
        Ok(())
    }

    /// Runs until `cancel`, sending reloads and source changes to `out`.
    pub async fn run(
        mut self,
        current: watch::Receiver<Arc<Generation>>,
        out: mpsc::Sender<ReloadEvent>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        loop {
            let mut changes = Changes::default();
            // Wait for the first relevant event.
            loop {
                let event = tokio::select! {
                    () = cancel.cancelled() => return,
                    e = self.events.recv() => e,
                };
                let Some(event) = event else { return };
                if self.absorb(event, &mut changes) {
                    break;
                }
            }
            // Debounce: until no relevant event came for `quiet`. Reads of
            // the watched directories (inotify reports opens too) do not
            // count, or a busy reader would starve the reload.
            let quiet = current.borrow().config.service.debounce.max(Duration::from_millis(100));
            let mut deadline = tokio::time::Instant::now() + quiet;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep_until(deadline) => break,
                    e = self.events.recv() => match e {
                        Some(e) => {
                            if self.absorb(e, &mut changes) {
                                deadline = tokio::time::Instant::now() + quiet;
                            }
                        }
                        None => return,
                    },
                }
            }
            if changes.config {
                match self.load(&current) {
                    Ok((config, templates)) => {
                        metrics.config_reload(true);
                        let new_paths = Paths::of(&config);
                        if new_paths != self.paths {
                            self.paths = new_paths;
                            if let Err(e) = self.rewatch() {
                                warn!(error = %e, "config reloaded, but watching its new paths failed");
                            }
                        }
                        if out.send(ReloadEvent::Config(Box::new((config, templates)))).await.is_err() {
                            return;
                        }
                    }
                    Err(problems) => {
                        metrics.config_reload(false);
                        error!(
                            config = %self.config_path.display(),
                            problems = %problems,
                            "rejected the changed configuration; still running the last good one"
                        );
                    }
                }
            }
            for env in changes.sources {
                if out.send(ReloadEvent::SourceFile(env)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Records a relevant change; returns whether `event` was one.
    fn absorb(&self, event: notify::Result<notify::Event>, changes: &mut Changes) -> bool {
        match event {
            Ok(e) if matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)) => {
                tracing::trace!(kind = ?e.kind, paths = ?e.paths, "file event");
                let mut relevant = false;
                for p in &e.paths {
                    relevant |= self.paths.classify(p, changes);
                }
                relevant
            }
            Ok(_) => false,
            Err(e) => {
                warn!(error = %e, "file watch error");
                false
            }
        }
    }

    /// Loads and compiles; on failure, every problem joined on one line.
    fn load(&self, current: &watch::Receiver<Arc<Generation>>) -> Result<(Config, Templates), String> {
        let join = |e: config::ConfigError| e.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ");
        let config = config::load(&self.config_path, &ProcessEnv).map_err(join)?;
        let templates = Templates::compile(&config).map_err(join)?;
        let old = current.borrow();
        let etcd_changed = match (&old.config.keys, &config.keys) {
            (KeysSource::Etcd(a), KeysSource::Etcd(b)) => {
                a.endpoints != b.endpoints
                    || a.user != b.user
                    || a.prefix != b.prefix
                    || a.password_file != b.password_file
            }
            (KeysSource::Files(_), KeysSource::Files(_)) => false,
            _ => true,
        };
        if etcd_changed {
            warn!(
                "the [etcd] connection changed: passes use the new one now; watches and leader election after a restart"
            );
        }
        if old.config.service != config.service {
            warn!("[service] changed: debounce applies now; grace and election ttl after a restart");
        }
        info!(
            config = %self.config_path.display(),
            envs = config.envs.len(),
            outputs = config.outputs.len(),
            "configuration reloaded"
        );
        Ok((config, templates))
    }
}
