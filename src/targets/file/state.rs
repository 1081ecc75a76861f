//! What this instance wrote: the record that lets it remove exactly its own
//! files later (a target removed from the config, an entry removed from a
//! `dir` output) and nothing else.
//!
//! One JSON file per instance and env, `<[state] dir>/<instance>/files-<env>.json`
//! (mode `0600`), so the service's env workers never write the same file.
//! Each written path is recorded with its output and a keyed fingerprint of
//! what was written (HMAC-SHA256 under a random key kept in the same file):
//! a file is deleted only while it still holds exactly that, so a file a
//! person edited or replaced since is reported and left alone.
//!
//! Decisions:
//! - **One key per file, whatever the cwd or the spelling of `--config`**
//!   ([`ConfigDir::key`]): a file below the config's directory is recorded
//!   by its path relative to that directory, normalised (`out/prod/api.env`),
//!   whether the config was named `cfgsync.toml`, `w2/cfgsync.toml`,
//!   `/srv/w2/cfgsync.toml`, `../w2/cfgsync.toml` or through a symlinked
//!   directory; a file elsewhere by its normalised absolute path (symlinked
//!   directories above the file resolved, so two spellings of one directory
//!   are one key). Before this, keys were paths as the run spelled them, so a
//!   run with another spelling saw its own file as unclaimed and pruned it.
//! - **Records of older releases migrate** the first time a state is
//!   loaded (format 1 → 2): an absolute key is re-keyed; a relative one was
//!   relative to a working directory nobody recorded, so it is re-keyed to
//!   the reading that finds the very file it recorded (same keyed
//!   fingerprint) — relative to the current directory, else to the config's
//!   directory after dropping leading components (`w2/out/a` → `out/a`). A
//!   record no reading confirms is dropped: without a record cfgsync never
//!   deletes, so dropping can only leave a file behind, never remove one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub output: String,
    pub fingerprint: String,
    /// Whether what was written read a secret: what a file held while
    /// tainted is never shown in a plan (`None`: recorded by a release that
    /// did not say; the file's mode decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tainted: Option<bool>,
}

/// The format of [`FileState::files`]'s keys: 2 = canonical ([`ConfigDir::key`]);
/// absent (1) = as each run spelled them.
const FORMAT: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct FileState {
    /// [`FORMAT`] when written by this release; older states have none.
    #[serde(default = "legacy_format")]
    format: u32,
    /// The config file (its name in the config's directory) this state
    /// belongs to, when the config names no `instance`: two configs of one
    /// directory can default to the same instance (`cfgsync.toml` and
    /// `app.toml` in `app/`), and must not share a state ([`FileState::claim`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<String>,
    /// Hex of the HMAC key.
    key: String,
    /// Canonical key ([`ConfigDir::key`]) → record.
    pub files: BTreeMap<PathBuf, Record>,
    #[serde(skip)]
    pub dirty: bool,
}

impl FileState {
    fn fresh() -> Self {
        let mut key = [0u8; 32];
        // A failing system RNG leaves a fixed key: fingerprints still tell
        // contents apart, they are just not secret from this file's reader.
        // The kernel's getrandom, not aws-lc's RNG: seeding aws-lc's DRBG
        // (CPU-jitter entropy) costs ~20 ms of CPU at its first use in a
        // process, and every env without a state file starts here.
        let _ = rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty());
        Self {
            format: FORMAT,
            config: None,
            key: key.iter().map(|b| format!("{b:02x}")).collect(),
            files: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Binds this state to the config file `name` (a config without
    /// `instance`), or says which other config of the directory it belongs
    /// to. A state without an owner (new, or of an older release) is
    /// taken; saved with the next change.
    pub fn claim(&mut self, name: &str) -> Result<(), String> {
        match &self.config {
            Some(owner) if owner != name => Err(format!(
                "belongs to config {owner} of the same directory, which defaults to the same instance as {name}: set `instance = \"NAME\"` in one of them (a name of its own)"
            )),
            Some(_) => Ok(()),
            None => {
                self.config = Some(name.to_owned());
                Ok(())
            }
        }
    }

    /// Whether the keys predate [`FORMAT`] and need [`FileState::migrate`].
    pub fn needs_migration(&self) -> bool {
        self.format < FORMAT
    }

    /// Re-keys the records of an older release to canonical keys (see the
    /// module doc): each record goes to the one reading of its old key that
    /// finds the file it recorded, or is dropped.
    pub fn migrate(&mut self, dir: &ConfigDir) {
        let fingerprint = self.fingerprinter();
        let holds = |path: &Path, record: &Record| {
            read_regular(path).is_some_and(|content| fingerprint(&content) == record.fingerprint)
        };
        // Canonical key → (record, whether the file still holds it).
        let mut migrated: BTreeMap<PathBuf, (Record, bool)> = BTreeMap::new();
        for (old, record) in std::mem::take(&mut self.files) {
            let found = if old.is_absolute() {
                let confirmed = holds(&old, &record);
                Some((dir.key(&old), confirmed))
            } else {
                dir.readings(&old).into_iter().find(|path| holds(path, &record)).map(|path| (dir.key(&path), true))
            };
            let Some((key, confirmed)) = found else {
                tracing::info!(record = %old.display(), "file record of an older release dropped: no reading of it finds the file it recorded (that file is never deleted)");
                continue;
            };
            match migrated.get(&key) {
                Some((_, true)) => {}
                Some((_, false)) if !confirmed => {}
                _ => {
                    migrated.insert(key, (record, confirmed));
                }
            }
        }
        self.files = migrated.into_iter().map(|(k, (r, _))| (k, r)).collect();
        self.format = FORMAT;
        self.dirty = true;
    }

    /// The state for `env` at `path`, or an empty one when there is none.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("not a cfgsync state file: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::fresh()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes the state atomically (temp file, fsync, rename), mode 0600,
    /// and removes temp files a killed process left beside it.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        crate::targets::state::write_atomically(path, &text)
    }

    /// The keyed fingerprint of `content`.
    pub fn fingerprint(&self, content: &[u8]) -> String {
        (self.fingerprinter())(content)
    }

    /// The records of the files directly in the directory `dir_key`.
    /// Keys order by component, so everything under a directory is one
    /// range of the map: no walk over every record per directory.
    pub fn records_in(&self, dir_key: &Path) -> BTreeMap<PathBuf, Record> {
        self.files
            .range(dir_key.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir_key))
            .filter(|(p, _)| p.parent() == Some(dir_key))
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect()
    }

    /// The fingerprint function, usable without holding the state.
    pub fn fingerprinter(&self) -> impl Fn(&[u8]) -> String + Send + Sync + use<> {
        let bytes: Vec<u8> =
            (0..self.key.len() / 2).filter_map(|i| u8::from_str_radix(&self.key[2 * i..2 * i + 2], 16).ok()).collect();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        move |content: &[u8]| hmac::sign(&key, content).as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `fingerprint`: [`FileState::fingerprint`] of what the file holds,
    /// which the plan computed once for the file (it is what tells drift
    /// from a source change).
    pub fn record(&mut self, path: PathBuf, output: &str, fingerprint: String, tainted: bool) {
        let record = Record { output: output.to_owned(), fingerprint, tainted: Some(tainted) };
        if self.files.get(&path) != Some(&record) {
            self.files.insert(path, record);
            self.dirty = true;
        }
    }

    pub fn forget(&mut self, path: &Path) {
        if self.files.remove(path).is_some() {
            self.dirty = true;
        }
    }
}

fn legacy_format() -> u32 {
    1
}

/// The config's directory, as the runs of one config may spell it, to key
/// every record the same way (see the module doc).
#[derive(Debug, Clone)]
pub struct ConfigDir {
    /// As the config path gave it (`.`, `w2`, `/srv/w2`, `../w2`): the
    /// spelling target paths were resolved with.
    given: PathBuf,
    /// `given` made absolute against the working directory, normalised.
    absolute: PathBuf,
    /// With symlinks resolved, when it exists.
    real: Option<PathBuf>,
    /// The working directory, for relative spellings.
    cwd: PathBuf,
}

impl ConfigDir {
    pub fn new(given: &Path) -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let absolute = normalize(&cwd.join(given));
        let real = std::fs::canonicalize(&absolute).ok();
        Self { given: given.to_path_buf(), absolute, real, cwd }
    }

    /// The record key of `path` (a target path as the config resolved it,
    /// absolute or relative to the working directory): relative to the
    /// config's directory when it is below it, else absolute; normalised.
    pub fn key(&self, path: &Path) -> PathBuf {
        let absolute = normalize(&self.cwd.join(path));
        if let Ok(rel) = absolute.strip_prefix(&self.absolute) {
            return rel.to_path_buf();
        }
        let Some(real) = &self.real else { return absolute };
        if let Ok(rel) = absolute.strip_prefix(real) {
            return rel.to_path_buf();
        }
        // An absolute target path through a symlink to the config's directory
        // is below it too. Only the directories are resolved (the file's own
        // name is never followed), and a path that stays outside keeps its
        // spelling: a flipped symlink above it must not make cfgsync's own
        // file look unclaimed.
        let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else { return absolute };
        match resolve_existing(parent).strip_prefix(real) {
            Ok(rel) => rel.join(name),
            Err(_) => absolute,
        }
    }

    /// The path to open for `key`, spelled as the config resolves target
    /// paths (so a recorded file joins the destination a target names).
    pub fn path(&self, key: &Path) -> PathBuf {
        if key.is_absolute() || self.given == Path::new(".") {
            return if key.as_os_str().is_empty() { self.given.clone() } else { key.to_path_buf() };
        }
        self.given.join(key)
    }

    /// Where an old relative record may have pointed: relative to the
    /// working directory, then below the config's directory with 0, 1, …
    /// leading components dropped (`w2/out/a`: `w2/out/a`, `out/a`, `a`).
    fn readings(&self, old: &Path) -> Vec<PathBuf> {
        let mut out = vec![self.cwd.join(old)];
        let parts: Vec<_> = old.components().collect();
        for start in 0..parts.len() {
            let rest = &parts[start..];
            if rest.iter().all(|c| matches!(c, std::path::Component::Normal(_))) {
                out.push(self.absolute.join(rest.iter().collect::<PathBuf>()));
            }
        }
        out
    }
}

/// Lexically normalised: `.` dropped, `..` pops.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` with its longest existing ancestor's symlinks resolved.
pub(crate) fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// A regular file's content (not through a final symlink, never blocking on
/// a FIFO, bounded), for a migration to compare with a record.
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_size as u64 > super::io::MAX_READ
    {
        return None;
    }
    let mut content = Vec::new();
    std::fs::File::from(fd).take(super::io::MAX_READ).read_to_end(&mut content).ok()?;
    Some(content)
}

/// `<dir>/<instance>/files-<env>.json`.
pub fn path(dir: &Path, instance: &str, env: &str) -> PathBuf {
    dir.join(instance).join(format!("files-{env}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_fingerprints_are_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "inst", "prod");
        let mut s = FileState::load(&p).unwrap();
        let fingerprint = s.fingerprint(b"CANARY-x");
        s.record("out/a".into(), "api", fingerprint, true);
        assert!(s.dirty);
        s.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("CANARY"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let again = FileState::load(&p).unwrap();
        assert_eq!(again.files, s.files);
        assert_eq!(again.fingerprint(b"CANARY-x"), s.fingerprint(b"CANARY-x"));
        assert_ne!(FileState::fresh().fingerprint(b"CANARY-x"), s.fingerprint(b"CANARY-x"), "a key per state");
        // A temp file of a process that died while saving is removed by the next save.
        let leftover = p.with_extension("tmp-999999999");
        std::fs::write(&leftover, "partial").unwrap();
        s.save(&p).unwrap();
        assert!(!leftover.exists());
    }

    #[test]
    fn keys_are_relative_to_the_config_dir_however_it_is_spelled() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(real.join("w2/out")).unwrap();
        std::os::unix::fs::symlink(real.join("w2"), real.join("link")).unwrap();
        let spellings = [real.join("w2"), real.join("link"), real.join("w2/../w2"), real.join("link/./")];
        for given in &spellings {
            let dir = ConfigDir::new(given);
            for target in [given.join("out/a.env"), real.join("w2/out/a.env"), real.join("link/out/x/../a.env")] {
                assert_eq!(dir.key(&target), Path::new("out/a.env"), "{} via {}", target.display(), given.display());
            }
            assert_eq!(dir.key(Path::new("/srv/app/../app/a.env")), Path::new("/srv/app/a.env"), "outside: absolute");
            assert_eq!(dir.path(Path::new("out/a.env")), given.join("out/a.env"));
            assert_eq!(dir.path(Path::new("/srv/a.env")), Path::new("/srv/a.env"));
        }
    }
}
