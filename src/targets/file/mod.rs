//! File targets: local files, written atomically, never through a link.
//!
//! ```toml
//! [[output.target]]
//! kind = "file"
//! path = "out/{{ env }}/api.env"      # relative to the config's directory
//! format = "dotenv"                   # dotenv | json | yaml | raw | dir
//! mode = "0640"                       # default 0600 if the output read a secret, else 0644
//! check_cmd = "envcheck {{src}}"      # run on the staged file before it replaces the old one
//! reload_cmd = "systemctl reload api@{{ env }}" # after a real change only (pull: only with --reload)
//! trusted_dir = "/srv/app"            # a directory whose own path may contain symlinks
//! ```
//!
//! Decisions:
//! - **Batched per directory**: a destination is the directory a target
//!   writes into; observing it reads the files wanted there (and those this
//!   instance wrote there before) without following links ([`io`]).
//! - **No symlinks below the trusted base** (the config's directory for
//!   relative paths, `trusted_dir`, else `/`), no FIFOs, devices or
//!   sockets: refused with a clear error, nothing written or read through
//!   them.
//! - **Modes**: a file holding secrets gets `0600`, or the explicit mode if
//!   it gives others nothing (checked at `validate` and again here).
//! - **Ownership**: every file written is recorded per instance and env
//!   ([`state`]), keyed relative to the config's directory whatever the
//!   cwd or the spelling of `--config`; a recorded file no target wants any
//!   more (a removed target, an entry removed from a `dir` output) is
//!   deleted — only in a pass where every source was read, only while it
//!   is still the very file observed (same inode) holding what cfgsync
//!   wrote, never more than the prune share at once.
//! - **Foreign files**: a file at a target path that this instance has no
//!   record of (a person's, another tool's, another config's) is not
//!   written: the target fails, saying how to adopt it. Adoption is making
//!   it hold exactly what the target writes — `cfgsync import` of its values
//!   into the source, for a dotenv file — which the next pass finds and
//!   records without writing; or moving it away. (A file that already is
//!   what the target writes, content and mode, changes in nothing when
//!   recorded.)
//! - **Drift**: a file that no longer holds what cfgsync recorded writing,
//!   when the source did not change, was edited by hand: restored and
//!   counted as drift.
//! - **An unchanged file costs one read and one hash**: observing compares
//!   each file with the bytes its target wants while reading it, through a
//!   small buffer ([`io::read_expecting`]: a file equal to them is kept as
//!   those very bytes, shared, not as a copy), and the plan computes the
//!   one keyed fingerprint of the wanted content that decides drift and
//!   becomes the record apply keeps; what a file held is fingerprinted (and
//!   judged for showing) only when it differs. The byte comparison decides
//!   "unchanged", never a fingerprint or a timestamp alone.
//! - **Leftovers**: temp files of a write that was killed are removed by the
//!   next pass over their directory (shown in the plan).
//! - Output of `check_cmd`/`reload_cmd` is shown only for outputs that read
//!   no secret: a checker that echoes the offending line could print one.
//! - `check_cmd` and `reload_cmd` are templates like `path`, with `env`
//!   (and `src`, quoted, for `check_cmd`): see [`crate::render::render_command`].

mod error;
pub mod io;
pub mod spec;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};

use super::registry::{Kind, Problems, Setup, SpecInput};
use super::{Applied, Claim, Ctx, DestPlan, Target, TargetError};
use crate::format::{self, Format};
use crate::plan::{self, Action, Change, EntryFingerprint, Planned, Slot};
use crate::render::Rendered;
use crate::secret::Content;
pub use error::FileError;
pub use spec::FileTarget;
use state::FileState;

/// How long a `check_cmd` or `reload_cmd` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The file kind, with the per-env records of what this instance wrote.
pub struct FileKind {
    /// `[state] dir`.
    state_dir: PathBuf,
    states: Mutex<BTreeMap<String, FileState>>,
    /// The config's directory, to key records ([`state::ConfigDir`]).
    config_dir: std::sync::OnceLock<state::ConfigDir>,
}

/// A directory files are written into: a trusted base and the path below it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dir {
    pub base: PathBuf,
    pub rel: PathBuf,
}

impl Dir {
    fn path(&self) -> PathBuf {
        self.base.join(&self.rel)
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::display_path(&self.path()))
    }
}

/// One file as a target wants it.
#[derive(Debug, Clone)]
pub struct DesiredFile {
    pub name: OsString,
    pub path: PathBuf,
    pub content: Content,
    pub mode: u32,
    /// The output's entries, to name the ones that change.
    pub entries: Option<BTreeMap<String, Content>>,
    pub output: String,
}

/// What to read in a directory: each file's name, with the content a
/// target wants there when one does (compared while it is read, see
/// [`io::read_expecting`]).
#[derive(Default)]
pub struct Wanted(BTreeMap<OsString, Option<Content>>);

impl Wanted {
    fn insert(&mut self, name: OsString, content: Option<Content>) {
        let slot = self.0.entry(name).or_default();
        if slot.is_none() {
            *slot = content;
        }
    }
}

impl super::Merge for Wanted {
    fn merge(&mut self, other: Self) {
        for (name, content) in other.0 {
            self.insert(name, content);
        }
    }

    fn covers(&self, other: &Self) -> bool {
        other.0.keys().all(|n| self.0.contains_key(n))
    }
}

/// A directory as it is.
pub struct Observed {
    pub files: BTreeMap<OsString, Result<Option<io::Found>, String>>,
    pub stale: Vec<OsString>,
}

/// What apply does. `fingerprint`: the file's content's, recorded once
/// it is in place (computed once, by the plan).
#[derive(Debug)]
pub enum Op {
    Write {
        file: DesiredFile,
        fingerprint: String,
        check_cmd: Option<String>,
        reload_cmd: Option<String>,
        content_changed: bool,
    },
    Delete(Prune),
    Cleanup {
        name: OsString,
    },
    /// Nothing to do but remember what is there (unchanged files).
    Keep {
        file: DesiredFile,
        fingerprint: String,
    },
}

/// A file this instance wrote that no target wants any more.
#[derive(Debug)]
pub struct Prune {
    name: OsString,
    path: PathBuf,
    /// The record's key.
    key: PathBuf,
    fingerprint: String,
    /// The file observed (device, inode): only that one is removed.
    id: (u64, u64),
}

impl FileKind {
    pub fn new(state_dir: PathBuf) -> Self {
        Self { state_dir, states: Mutex::new(BTreeMap::new()), config_dir: std::sync::OnceLock::new() }
    }

    /// The config's directory, as records are keyed from it.
    fn config_dir(&self, ctx: &Ctx<'_>) -> &state::ConfigDir {
        self.config_dir.get_or_init(|| state::ConfigDir::new(&ctx.config.dir))
    }

    /// Runs `f` on the env's state, loading it first.
    fn with_state<R>(&self, ctx: &Ctx<'_>, f: impl FnOnce(&mut FileState) -> R) -> Result<R, TargetError> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if !states.contains_key(ctx.env) {
            let path = state::path(&self.state_dir, ctx.instance, ctx.env);
            let mut s = FileState::load(&path)
                .map_err(|cause| TargetError::State { path: crate::text::display_path(&path), cause })?;
            if !ctx.config.instance_set {
                // The real file's name, whatever link the config was named through.
                let real = ctx.config.path.canonicalize().unwrap_or_else(|_| ctx.config.path.clone());
                let name = real.file_name().unwrap_or_default().to_string_lossy();
                s.claim(&name).map_err(|cause| TargetError::State { path: crate::text::display_path(&path), cause })?;
            }
            if s.needs_migration() {
                s.migrate(self.config_dir(ctx));
            }
            states.insert(ctx.env.to_owned(), s);
        }
        Ok(f(states.get_mut(ctx.env).expect("inserted above")))
    }

    /// Who recorded writing `path` (as a target names it) for `env`, and
    /// whether it still holds exactly that (`content`; `None`: the file is
    /// gone): `None` when this instance recorded nothing there (or no pass
    /// loaded the env's record yet). The service's file watch asks this
    /// to tell a hand edit from cfgsync's own write.
    pub fn recorded(&self, env: &str, path: &Path, content: Option<&[u8]>) -> Option<(String, bool)> {
        let key = self.config_dir.get()?.key(path);
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.get(env)?;
        let record = state.records_in(key.parent()?).remove(&key)?;
        let holds = content.is_some_and(|c| state.fingerprint(c) == record.fingerprint);
        Some((record.output, holds))
    }

    /// Records `file` as written by this instance (it is what it should
    /// be); `fingerprint`: its content's, as the plan computed it.
    fn remember(&self, file: &DesiredFile, fingerprint: &str, ctx: &Ctx<'_>) {
        let key = self.config_dir(ctx).key(&file.path);
        let _ = self.with_state(ctx, |s| s.record(key, &file.output, fingerprint.to_owned(), file.content.is_secret()));
    }

    /// Writes `file` (only its mode when its content is as it should be)
    /// and records it.
    async fn write(
        &self,
        at: &At<'_>,
        file: &DesiredFile,
        fingerprint: &str,
        check_cmd: Option<&str>,
        content_changed: bool,
        ctx: &Ctx<'_>,
    ) -> Result<(), TargetError> {
        if content_changed {
            write(at.fd, &at.dir, file, check_cmd, ctx.env).await?;
        } else {
            io::chmod(at.fd, &at.dir, &file.name, file.mode)?;
        }
        self.remember(file, fingerprint, ctx);
        Ok(())
    }

    /// Removes a file this instance wrote, checked again right before: it
    /// must still be the very file observed (the same inode, not one put in
    /// its place, even with the same content) holding what was written
    /// (the recorded fingerprint).
    fn prune(&self, at: &At<'_>, prune: &Prune, ctx: &Ctx<'_>) -> Result<(), TargetError> {
        let Prune { name, path, key, fingerprint, id } = prune;
        let still = io::read(at.fd, &at.dir, name).ok().flatten().filter(|f| f.id == *id).and_then(|f| f.content);
        let ours =
            self.with_state(ctx, |s| still.as_ref().map(|c| s.fingerprint(c.expose())).as_ref() == Some(fingerprint));
        if !matches!(ours, Ok(true)) {
            return Err(FileError::PruneModified { path: crate::text::display_path(path) }.into());
        }
        io::remove(at.fd, &at.dir, name)?;
        info!(env = ctx.env, path = %crate::text::display_path(path), "file pruned");
        let _ = self.with_state(ctx, |s| s.forget(key));
        Ok(())
    }

    fn dir_of(&self, spec: &FileTarget, ctx: &Ctx<'_>) -> Dir {
        let path = &spec.paths[ctx.env];
        let dir = if spec.format == Format::Dir { path.as_path() } else { path.parent().unwrap_or(Path::new(".")) };
        split(dir, ctx, spec.trusted_dir.as_deref())
    }
}

/// A directory being written: its descriptor (opened without following a
/// link) and its path, for messages.
struct At<'a> {
    fd: &'a std::os::fd::OwnedFd,
    dir: PathBuf,
}

/// The trusted base of `dir`: the config's directory, `trusted`, or `/`.
fn split(dir: &Path, ctx: &Ctx<'_>, trusted: Option<&Path>) -> Dir {
    let mut bases: Vec<&Path> = vec![ctx.config.dir.as_path()];
    bases.extend(trusted);
    if dir.is_relative() && !dir.starts_with(&ctx.config.dir) {
        return Dir { base: PathBuf::from("."), rel: dir.to_path_buf() };
    }
    let (base, rel) = io::split_base(dir, &bases);
    Dir { base: base.to_path_buf(), rel: rel.to_path_buf() }
}

/// The mode a file gets: explicit, else 0600 when it holds secrets.
fn file_mode(spec: &FileTarget, tainted: bool) -> u32 {
    spec.mode.unwrap_or(if tainted { 0o600 } else { 0o644 })
}

impl Kind for FileKind {
    type Raw = spec::RawFileTarget;
    // Files of one config's directory and state are its own.
    const SHARED: bool = false;
    const LOCAL: bool = true;

    fn build(_: &str, raw: spec::RawFileTarget, input: &SpecInput<'_>) -> Result<FileTarget, Problems> {
        spec::build(raw, input)
    }

    fn new(setup: &Setup<'_>) -> Self {
        FileKind::new(setup.config.state_dir.clone())
    }

    fn kind_name(_: &FileTarget) -> &'static str {
        "file"
    }

    fn address(spec: &FileTarget, env: &str) -> String {
        crate::text::display_path(&spec.paths[env])
    }

    /// Only a mode that lets others read is refused (the default for an
    /// output that reads secrets is 0600).
    fn secret_problem(spec: &FileTarget, output: &str, secret: &str) -> Option<String> {
        let mode = spec.mode?;
        let why = crate::config::secret_mode_problem(mode).err()?;
        Some(format!("output {output:?} reads secret {secret:?}: mode {mode:04o} {why}"))
    }
}

impl Target for FileKind {
    type Spec = FileTarget;
    type Dest = Dir;
    type Scope = Wanted;
    type Item = DesiredFile;
    type Observed = Observed;
    type Op = Op;

    fn locate(&self, spec: &FileTarget, items: Option<&[DesiredFile]>, ctx: &Ctx<'_>, scope: &mut Self::Scope) -> Dir {
        for f in items.into_iter().flatten() {
            scope.insert(f.name.clone(), Some(f.content.clone()));
        }
        self.dir_of(spec, ctx)
    }

    fn recorded(&self, ctx: &Ctx<'_>, scopes: &mut BTreeMap<Dir, Self::Scope>) {
        let recorded: Vec<PathBuf> = self.with_state(ctx, |s| s.files.keys().cloned().collect()).unwrap_or_default();
        // A recorded file joins the destination the config already names for
        // its directory (however that one was split into base and rest, and
        // however the config's path was spelled: records are keyed canonically).
        let config_dir = self.config_dir(ctx);
        let mut by_key: std::collections::HashMap<PathBuf, Dir> =
            scopes.keys().map(|d| (config_dir.key(&d.path()), d.clone())).collect();
        for key in recorded {
            let (Some(dir_key), Some(name)) = (key.parent(), key.file_name()) else { continue };
            let dest = by_key
                .entry(dir_key.to_path_buf())
                .or_insert_with(|| split(&config_dir.path(dir_key), ctx, None))
                .clone();
            scopes.entry(dest).or_default().insert(name.to_owned(), None);
        }
    }

    fn desired(&self, spec: &FileTarget, rendered: &Rendered, ctx: &Ctx<'_>) -> Result<Vec<DesiredFile>, TargetError> {
        let path = &spec.paths[&rendered.env];
        // Refused at validate too; checked again on the path as rendered for this pass.
        if let Some(name) = io::reserved_component(&self.config_dir(ctx).key(path)) {
            let shown = crate::text::display_path(path);
            let reason = format!(
                "{shown}: goes through {:?}: names starting with .cfgsync are cfgsync's own state and temp files",
                name.to_string_lossy()
            );
            return Err(FileError::Unsafe { reason, path: shown }.into());
        }
        let mode = file_mode(spec, rendered.tainted);
        if rendered.tainted
            && let Err(why) = crate::config::secret_mode_problem(mode)
        {
            let shown = crate::text::display_path(path);
            return Err(FileError::Unsafe { reason: format!("{shown}: mode {mode:04o} {why}"), path: shown }.into());
        }
        let encode_err =
            |source| TargetError::Encode { path: crate::text::display_path(path), source: std::sync::Arc::new(source) };
        let file = |path: PathBuf, content: Content, entries: Option<BTreeMap<String, Content>>| DesiredFile {
            name: path.file_name().unwrap_or_default().to_owned(),
            path,
            content,
            mode,
            entries,
            output: rendered.output.clone(),
        };
        Ok(match spec.format {
            Format::Dir => {
                let mut files = Vec::new();
                for (name, content) in &rendered.entries {
                    format::check_file_name(name).map_err(|reason| {
                        encode_err(format::FormatError::UnsafeFileName { name: name.clone(), reason })
                    })?;
                    files.push(file(path.join(name), content.clone(), None));
                }
                files
            }
            Format::Raw => match rendered.entries.values().next() {
                Some(content) if rendered.entries.len() == 1 => vec![file(path.clone(), content.clone(), None)],
                _ => return Err(encode_err(format::FormatError::RawNeedsOneEntry { count: rendered.entries.len() })),
            },
            other => {
                // The text formats need text; templates always produce it.
                let mut text = BTreeMap::new();
                for (name, content) in &rendered.entries {
                    let value = content
                        .expose_str()
                        .ok_or_else(|| encode_err(format::FormatError::NotText { name: name.clone() }))?;
                    text.insert(name.clone(), value.to_owned());
                }
                let encoded = format::encode(other, spec.dialect, &text).map_err(encode_err)?;
                let entries = matches!(other, Format::Dotenv | Format::Json).then(|| rendered.entries.clone());
                vec![file(path.clone(), Content::new(encoded, rendered.tainted), entries)]
            }
        })
    }

    async fn observe(&self, dest: &Dir, names: &Self::Scope, ctx: &Ctx<'_>) -> Result<Observed, TargetError> {
        let Some(fd) = io::open_dir(&dest.base, &dest.rel, false)? else {
            return Ok(Observed { files: names.0.keys().map(|n| (n.clone(), Ok(None))).collect(), stale: Vec::new() });
        };
        let dir_path = dest.path();
        let files = names
            .0
            .iter()
            .map(|(n, wanted)| {
                (n.clone(), io::read_expecting(&fd, &dir_path, n, wanted.as_ref()).map_err(|e| e.to_string()))
            })
            .collect();
        Ok(Observed { files, stale: io::stale_temp_files(&fd, ctx.env) })
    }

    fn plan(
        &self,
        dest: &Dir,
        claims: Vec<Claim<'_, FileTarget, DesiredFile>>,
        observed: &Observed,
        ctx: &Ctx<'_>,
    ) -> DestPlan<Op> {
        let mut plan = DestPlan::default();
        let config_dir = self.config_dir(ctx);
        let dir_key = config_dir.key(&dest.path());
        let (records, fingerprint) = match self.with_state(ctx, |s| (s.records_in(&dir_key), s.fingerprinter())) {
            Ok(r) => r,
            Err(e) => {
                for c in &claims {
                    plan.errors.push((c.slot, TargetError::State { path: dest.to_string(), cause: e.to_string() }));
                }
                return plan;
            }
        };
        let here = Here { dest, observed, records: &records, fingerprint: &fingerprint, config_dir, ctx };
        // Keys some target still claims, rendered or not.
        let mut claimed = Claimed::default();
        for claim in claims {
            let spec_key = config_dir.key(&claim.spec.paths[ctx.env]);
            let Some(items) = claim.items else {
                if claim.spec.format == Format::Dir {
                    claimed.dirs.insert(spec_key);
                } else {
                    claimed.files.insert(spec_key);
                }
                continue;
            };
            claimed.files.extend(items.iter().map(|f| config_dir.key(&f.path)));
            match here.plan_target(items, claim.spec) {
                Ok(changes) => plan.changes.extend(changes.into_iter().map(|(change, op)| Planned {
                    slot: claim.slot,
                    change,
                    op,
                })),
                Err(e) => plan.errors.push((claim.slot, e)),
            }
        }
        here.plan_prunes(&mut plan, &claimed);
        for name in &observed.stale {
            let path = dest.path().join(name);
            let mut change = Change::new("file", crate::text::display_path(&path), Action::Delete, false);
            change.notes.push("temp file of an interrupted write".to_owned());
            plan.changes.push(Planned { slot: Slot::Prune, change, op: Op::Cleanup { name: name.clone() } });
        }
        plan
    }

    /// The file's content, fingerprinted as the item's (whether the file
    /// is this instance's is not asked here: what it holds is).
    fn held(&self, item: &DesiredFile, observed: &Observed, ctx: &Ctx<'_>) -> super::HeldItem {
        let secret = item.content.is_secret();
        let held = match observed.files.get(&item.name) {
            Some(Ok(Some(found))) => match &found.content {
                Some(c) => super::Held::Read(super::content_fingerprint(ctx, "", c.expose(), secret)),
                None => super::Held::Unknown(format!("larger than {} bytes: not read back", io::MAX_READ)),
            },
            Some(Ok(None)) | None => super::Held::Absent,
            Some(Err(e)) => super::Held::Unknown(e.clone()),
        };
        super::HeldItem {
            item: crate::text::display_path(&item.path),
            wanted: super::content_fingerprint(ctx, "", item.content.expose(), secret),
            held,
        }
    }

    async fn apply(&self, dest: &Dir, changes: Vec<Planned<Op>>, ctx: &Ctx<'_>) -> Vec<Applied> {
        let fd = match io::open_dir(&dest.base, &dest.rel, true) {
            Ok(Some(fd)) => fd,
            Ok(None) => unreachable!("created when missing"),
            Err(e) => {
                let reason = e.to_string();
                warn!(env = ctx.env, dir = %dest, error = %reason, "directory cannot be written");
                let path = dest.to_string();
                return Applied::all_failed(changes, || {
                    FileError::Unsafe { path: path.clone(), reason: reason.clone() }.into()
                });
            }
        };
        let at = At { fd: &fd, dir: dest.path() };
        let mut out: Vec<Applied> = Vec::new();
        let mut failed_slots: BTreeSet<Slot> = BTreeSet::new();
        // The targets with a reload_cmd whose content really changed.
        let mut changed_slots: BTreeMap<Slot, (String, bool, PathBuf)> = BTreeMap::new();
        for p in changes {
            if failed_slots.contains(&p.slot) {
                continue;
            }
            let result = match &p.op {
                Op::Keep { file, fingerprint } => {
                    self.remember(file, fingerprint, ctx);
                    Ok(())
                }
                Op::Write { file, fingerprint, check_cmd, reload_cmd, content_changed } => {
                    let result = self.write(&at, file, fingerprint, check_cmd.as_deref(), *content_changed, ctx).await;
                    if result.is_ok() {
                        info!(env = ctx.env, output = %file.output, path = %crate::text::display_path(&file.path), action = p.change.action.name(), "file written");
                        if let (Some(cmd), true) = (reload_cmd, *content_changed) {
                            changed_slots.insert(p.slot, (cmd.clone(), file.content.is_secret(), file.path.clone()));
                        }
                    }
                    result
                }
                Op::Delete(prune) => self.prune(&at, prune, ctx),
                Op::Cleanup { name } => io::remove(at.fd, &at.dir, name).map_err(TargetError::from),
            };
            if let Err(e) = &result {
                warn!(env = ctx.env, address = %p.change.address, error = %e, "write failed");
                if let Slot::Target { .. } = p.slot {
                    failed_slots.insert(p.slot);
                }
            }
            out.push(Applied { slot: p.slot, change: p.change, result, reloaded: false });
        }
        // reload_cmd: once per target, after all its files, when one really changed.
        for (slot, (cmd, secret, path)) in changed_slots {
            if failed_slots.contains(&slot) || !ctx.run_reload {
                continue;
            }
            let result = reload(&cmd, &path, secret, ctx.env).await;
            if let Some(last) = out.iter_mut().rev().find(|a| a.slot == slot) {
                match result {
                    Ok(()) => last.reloaded = true,
                    Err(e) => last.result = Err(e),
                }
            }
        }
        out
    }

    fn commit(&self, ctx: &Ctx<'_>) -> Result<(), TargetError> {
        let path = state::path(&self.state_dir, ctx.instance, ctx.env);
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = states.get_mut(ctx.env) else { return Ok(()) };
        if !s.dirty {
            return Ok(());
        }
        s.save(&path).map_err(|cause| TargetError::State { path: crate::text::display_path(&path), cause })?;
        s.dirty = false;
        Ok(())
    }
}

/// The record keys targets still claim in a directory: files, and whole
/// `dir` targets that did not render.
#[derive(Default)]
struct Claimed {
    files: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Claimed {
    fn contains(&self, key: &Path) -> bool {
        self.files.contains(key) || self.dirs.iter().any(|d| key.starts_with(d))
    }
}

/// One directory as the plan reads it: what is there and what this
/// instance recorded writing there.
struct Here<'a> {
    dest: &'a Dir,
    observed: &'a Observed,
    /// Records of this directory's files, by key.
    records: &'a BTreeMap<PathBuf, state::Record>,
    fingerprint: &'a dyn Fn(&[u8]) -> String,
    config_dir: &'a state::ConfigDir,
    ctx: &'a Ctx<'a>,
}

impl Here<'_> {
    /// The changes of one rendered target, or why none of its files is
    /// written: one that cannot be read safely, or one this instance has
    /// no record of writing that is not already exactly what it writes.
    fn plan_target(&self, items: Vec<DesiredFile>, spec: &FileTarget) -> Result<Vec<(Change, Op)>, TargetError> {
        let mut changes = Vec::new();
        for file in items {
            let found = match self.observed.files.get(&file.name) {
                Some(Err(reason)) => {
                    let path = crate::text::display_path(&file.path);
                    return Err(FileError::Unsafe { path, reason: reason.clone() }.into());
                }
                found => found.and_then(|f| f.as_ref().ok()).and_then(|f| f.as_ref()),
            };
            let record = self.records.get(&self.config_dir.key(&file.path));
            if let (Some(found), None) = (found, record)
                && !holds_exactly(found, &file)
            {
                return Err(not_ours(&file.path, self.ctx));
            }
            changes.push(plan_file(file, found, record, self.fingerprint, spec, self.ctx));
        }
        Ok(changes)
    }

    /// Deletes what this instance wrote here that nothing claims any more,
    /// while it is still the file observed holding what was written.
    fn plan_prunes(&self, plan: &mut DestPlan<Op>, claimed: &Claimed) {
        let dir_path = self.dest.path();
        let mut deletes = Vec::new();
        for (key, record) in self.records.iter().filter(|(key, _)| !claimed.contains(key)) {
            let Some(name) = key.file_name() else { continue };
            let path = &dir_path.join(name);
            match self.observed.files.get(name) {
                Some(Ok(Some(found)))
                    if found.content.as_ref().map(|c| (self.fingerprint)(c.expose()))
                        == Some(record.fingerprint.clone()) =>
                {
                    let mut change = Change::new("file", crate::text::display_path(path), Action::Delete, false);
                    change.notes.push(format!("output {:?} no longer writes it", record.output));
                    let op = Op::Delete(Prune {
                        name: name.to_owned(),
                        path: path.clone(),
                        key: key.clone(),
                        fingerprint: record.fingerprint.clone(),
                        id: found.id,
                    });
                    deletes.push(Planned { slot: Slot::Prune, change, op });
                }
                Some(Ok(Some(_))) if self.ctx.prune => {
                    let path = crate::text::display_path(path);
                    plan.errors.push((Slot::Prune, FileError::PruneModified { path }.into()))
                }
                _ => {}
            }
        }
        let ctx = self.ctx;
        if ctx.prune && !deletes.is_empty() {
            let ours = self.records.len();
            plan.add_prunes(deletes, ours, ctx.config.max_prune_share, ctx.allow_mass_prune, || self.dest.to_string());
        }
    }
}

/// Whether `found` already is `file`, content and mode: a file nobody
/// recorded that holds exactly what the target writes is taken over by
/// recording it (nothing about it changes; this is how a file whose values
/// were imported into the source is adopted).
fn holds_exactly(found: &io::Found, file: &DesiredFile) -> bool {
    found.content.as_ref().is_some_and(|c| c.same_bytes(file.content.expose())) && found.mode == file.mode
}

/// A file at a target path that this instance has no record of writing:
/// someone else's (a person's, another tool's, another config's).
fn not_ours(path: &Path, ctx: &Ctx<'_>) -> TargetError {
    let shown = crate::text::display_path(path);
    let reason = format!(
        "{shown}: exists, and cfgsync instance {:?} has no record of writing it (env {}): not overwritten. To hand it to cfgsync, adopt it: copy its values into the source (`cfgsync import --env {} dotenv:{shown}` for a dotenv file), and the next pass, finding it exactly as it would write it, records it as its own; or move it away and cfgsync writes its own",
        ctx.instance, ctx.env, ctx.env
    );
    FileError::Foreign { path: shown, reason }.into()
}

/// What a file held, judged for showing: secret when the record says this
/// instance wrote it from a tainted output (whatever it holds now: a hand
/// edit of a secret file keeps most of the secret), plain when the record
/// proves these are the bytes written from a plain output, else as its
/// mode says ([`io::held_secret`]).
fn held(found: &io::Found, record: Option<&state::Record>, fingerprint: &dyn Fn(&[u8]) -> String) -> Option<Content> {
    let content = found.content.as_ref()?;
    let secret = match record {
        Some(r) if r.tainted == Some(true) => true,
        Some(r) if r.tainted == Some(false) && fingerprint(content.expose()) == r.fingerprint => false,
        _ => content.is_secret(),
    };
    Some(content.with_secret(secret))
}

/// Decides the change for one file.
///
/// The keyed fingerprint of the desired content is computed once, here:
/// it decides drift, becomes the record apply writes and keys the change's
/// `content_hash`. What the file holds is compared byte for byte (at once
/// when observing found it equal and kept the desired bytes), and is
/// fingerprinted (and judged for showing) only when it differs: an
/// unchanged file costs one hash, not three.
fn plan_file(
    file: DesiredFile,
    found: Option<&io::Found>,
    record: Option<&state::Record>,
    fingerprint: &dyn Fn(&[u8]) -> String,
    spec: &FileTarget,
    ctx: &Ctx<'_>,
) -> (Change, Op) {
    let secret = file.content.is_secret();
    let address = crate::text::display_path(&file.path);
    let recorded = record.map(|r| r.fingerprint.as_str());
    let content_changed = match found {
        None => true,
        Some(f) => !f.content.as_ref().is_some_and(|c| c.same_bytes(file.content.expose())),
    };
    let mode_changed = found.is_some_and(|f| f.mode != file.mode);
    let desired_fp = fingerprint(file.content.expose());
    // What the file held, judged for showing: only needed when it changes.
    let held = match (found, content_changed) {
        (Some(f), true) => held(f, record, fingerprint),
        _ => None,
    };
    let action = match (found, content_changed || mode_changed) {
        (None, _) => Action::Create,
        (Some(_), false) => Action::Unchanged,
        (Some(_), true) => {
            // Still what we wrote last time, but not what is there: a hand edit.
            let live_fp = held.as_ref().map(|c| fingerprint(c.expose()));
            if content_changed && recorded == Some(desired_fp.as_str()) && live_fp.as_deref() != recorded {
                Action::Drift
            } else {
                Action::Update
            }
        }
    };
    let mut change = Change::new("file", address, action, secret);
    // The keyed fingerprint stands for the content (equal exactly when it
    // is, under the state's key, which every pass of this instance shares).
    change.content_hash = plan::content_hash(&[desired_fp.as_bytes(), &file.mode.to_be_bytes()]);
    if action == Action::Unchanged {
        return (change, Op::Keep { file, fingerprint: desired_fp });
    }
    match (found, mode_changed) {
        (None, _) => change.notes.push(format!("mode {:04o}", file.mode)),
        (Some(f), true) => change.notes.push(format!("mode {:04o} → {:04o}", f.mode, file.mode)),
        (Some(_), false) => {}
    }
    if content_changed {
        describe_content_change(&mut change, &file, held.as_ref(), found.is_some(), spec.format, ctx.shown);
    }
    let op = Op::Write {
        check_cmd: spec.check_cmd.clone(),
        reload_cmd: spec.reload_cmd.clone(),
        content_changed,
        fingerprint: desired_fp,
        file,
    };
    (change, op)
}

/// What a change of content says without showing a secret: the entries
/// that change (decoded from what the file `held`, where its format
/// allows), their per-run fingerprints when `shown` asks for them, and the
/// diff when both sides may be shown.
fn describe_content_change(
    change: &mut Change,
    file: &DesiredFile,
    held: Option<&Content>,
    exists: bool,
    format: Format,
    shown: Option<&crate::fingerprint::RunFingerprinter>,
) {
    let secret = file.content.is_secret();
    let old_entries = held.and_then(|c| decode_entries(format, c));
    if let Some(new) = &file.entries {
        change.entries = match (&old_entries, exists) {
            (Some(old), _) => plan::changed_entries(new.iter().map(|(k, v)| (k, v.expose())), old),
            (None, false) => new.keys().cloned().collect(),
            (None, true) => Vec::new(),
        };
        if let (Some(shown), true) = (shown, secret) {
            let empty = BTreeMap::new();
            let old = old_entries.as_ref().unwrap_or(&empty);
            change.fingerprints = change
                .entries
                .iter()
                .map(|n| EntryFingerprint {
                    entry: n.clone(),
                    old: old.get(n).map(|v| shown.of(v.expose()).to_string()),
                    new: new.get(n).map(|v| shown.of(v.expose()).to_string()),
                })
                .collect();
        }
    } else if let (Some(shown), true) = (shown, secret) {
        change.fingerprints = vec![EntryFingerprint {
            entry: file.name.to_string_lossy().into_owned(),
            old: held.map(|c| shown.of(c.expose()).to_string()),
            new: Some(shown.of(file.content.expose()).to_string()),
        }];
    }
    match file.content.shown() {
        // An absent file, or one too large to read, diffs against nothing.
        Some(_) => change.diff_between(held, &file.content, &file.path),
        None if change.entries.is_empty() || change.action == Action::Create => {
            change.notes.push("secret content masked".to_owned())
        }
        None => change.notes.push(format!("secret content masked; entries changed: {}", change.entries.join(", "))),
    }
}

/// Decodes an observed file back into entries, where the format allows, so
/// a plan can name the entries that changed without showing values. Each
/// entry is as secret as the file it was read from.
pub fn decode_entries(format: Format, content: &Content) -> Option<BTreeMap<String, Content>> {
    let text = content.expose_str()?;
    let map: BTreeMap<String, String> = match format {
        Format::Dotenv => format::decode_dotenv(text).ok()?,
        Format::Json => serde_json::from_str(text).ok()?,
        Format::Yaml | Format::Raw | Format::Dir => return None,
    };
    Some(map.into_iter().map(|(k, v)| (k, Content::new(v.into_bytes(), content.is_secret()))).collect())
}

/// Stages, checks and commits one file.
async fn write(
    fd: &std::os::fd::OwnedFd,
    dir: &Path,
    file: &DesiredFile,
    check_cmd: Option<&str>,
    env: &str,
) -> Result<(), TargetError> {
    let shown = crate::text::display_path(&file.path);
    let staged = io::stage(fd, dir, env, file.content.expose(), file.mode)?;
    if let Some(cmd) = check_cmd {
        let src = shell_quote(&staged.path.display().to_string());
        let checked = match crate::render::render_command(cmd, env, Some(&src)) {
            Ok(cmd) => run(&cmd, file.content.is_secret()).await,
            Err(e) => Err(format!("check_cmd {cmd:?}: {e}")),
        };
        if let Err(detail) = checked {
            io::discard(fd, &staged);
            return Err(FileError::Check { path: shown, detail }.into());
        }
    }
    Ok(io::commit(fd, dir, &staged, &file.name)?)
}

/// Runs `reload_cmd`, rendered for `env`, after a real change.
async fn reload(cmd: &str, path: &Path, secret: bool, env: &str) -> Result<(), TargetError> {
    let ran = match crate::render::render_command(cmd, env, None) {
        Ok(cmd) => run(&cmd, secret).await,
        Err(e) => Err(format!("reload_cmd {cmd:?}: {e}")),
    };
    ran.map_err(|detail| FileError::Reload { path: crate::text::display_path(path), detail }.into())
}

async fn run(cmd: &str, secret: bool) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Err(_) => return Err(format!("`{cmd}` timed out after {} s", COMMAND_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run `{cmd}`: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let mut detail = format!("`{cmd}` exited with {}", out.status);
    if secret {
        detail.push_str(" (its output is not shown: the file holds secrets)");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<String> =
            stderr.lines().rev().take(10).map(|l| crate::text::escape_controls(l, false).into_owned()).collect();
        if !tail.is_empty() {
            detail.push_str(": ");
            detail.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
        }
    }
    Err(detail)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
