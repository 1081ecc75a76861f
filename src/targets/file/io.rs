//! File I/O that never follows a symlink and never blocks on a special file.
//!
//! A target path is split into a trusted base (the config's directory for
//! relative paths, `trusted_dir` when a target names one, else `/`) and the
//! components below it. Every component below the base is opened with
//! `openat(…, O_NOFOLLOW)` from its parent's descriptor, so a directory
//! swapped for a symlink (to `/etc`, say) is refused instead of written
//! through, and nothing is resolved twice between a check and a use. The
//! file itself is opened `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat`
//! before anything is read: a FIFO, a device or a socket is refused without
//! reading (which would block, or worse).
//!
//! Writes are atomic: a temp file created `0600` with `O_EXCL` in the
//! destination's directory (named `.cfgsync-tmp-<pid>-<env>-<random>`, so
//! a later pass can tell a leftover of a killed process from a write in
//! flight), fsync, `fchmod`, then `renameat` over the destination (which
//! replaces a name, never follows one) and fsync of the directory.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::secret::Content;

/// Observed files larger than this are compared by size only: nothing
/// cfgsync writes is near it (outputs are limited to a few MiB).
pub const MAX_READ: u64 = 64 * 1024 * 1024;

/// Prefix of every temp file cfgsync creates (and the only files it removes
/// without having recorded them).
pub const TEMP_PREFIX: &str = ".cfgsync-";

/// The first component of `path` that names one of cfgsync's own files
/// (`.cfgsync/`, the default state directory; `.cfgsync-tmp-…`, a temp
/// file a later pass may remove as a leftover), if any: a target writing
/// there would corrupt the state or lose its file.
pub fn reserved_component(path: &Path) -> Option<&OsStr> {
    path.components().find_map(|c| match c {
        Component::Normal(name) if name.as_bytes().starts_with(b".cfgsync") => Some(name),
        _ => None,
    })
}

/// Why a path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(
        "{path} is a symlink; cfgsync does not follow symlinks below {base} (set trusted_dir on the target to allow a directory)"
    )]
    Symlink { path: String, base: String },
    #[error("{path} is a {what}, not a {wanted}; refusing to touch it")]
    NotRegular { path: String, what: &'static str, wanted: &'static str },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io_err(path: &Path, e: impl Into<std::io::Error>) -> PathError {
    PathError::Io { path: crate::text::display_path(path), source: e.into() }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "special file",
    }
}

/// Opens the directory `base/rel` without following a symlink in `rel`,
/// creating missing directories (`0755`) when `create`. `Ok(None)` when it
/// does not exist and `create` is false.
pub fn open_dir(base: &Path, rel: &Path, create: bool) -> Result<Option<OwnedFd>, PathError> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut fd = match rustix::fs::openat(CWD, base, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if create => {
            std::fs::create_dir_all(base).map_err(|e| io_err(base, e))?;
            rustix::fs::openat(CWD, base, flags, Mode::empty()).map_err(|e| io_err(base, e))?
        }
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err(base, e)),
    };
    let mut at = base.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        at.push(name);
        let next = match rustix::fs::openat(&fd, name, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_err(&at, e)),
                }
                open_component(&fd, name, &at, base, flags)?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(_) => open_component(&fd, name, &at, base, flags)?,
        };
        fd = next;
    }
    Ok(Some(fd))
}

/// Opens one component, turning a refusal into a clear reason.
fn open_component(parent: &OwnedFd, name: &OsStr, at: &Path, base: &Path, flags: OFlags) -> Result<OwnedFd, PathError> {
    match rustix::fs::openat(parent, name, flags | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(e) => match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                Err(PathError::Symlink { path: crate::text::display_path(at), base: crate::text::display_path(base) })
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => Err(PathError::NotRegular {
                path: crate::text::display_path(at),
                what: type_name(FileType::from_raw_mode(st.st_mode)),
                wanted: "directory",
            }),
            _ => Err(io_err(at, e)),
        },
    }
}

/// A file as found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `None` when larger than [`MAX_READ`] (compared by size only).
    /// Secret unless others may read the file ([`held_secret`]); the plan
    /// refines that with the record of what was written.
    pub content: Option<Content>,
    pub size: u64,
    pub mode: u32,
    /// Device and inode: which file this is, so a prune removes only the
    /// very file it observed (not one put in its place since).
    pub id: (u64, u64),
}

/// Whether a file with `mode` is taken to hold a secret: anything others
/// cannot read. cfgsync writes every tainted output so ([`crate::config::secret_mode_problem`]),
/// and a file its owner keeps from others is no file to print in a plan
/// either; a world-readable file is already visible to every user of the
/// machine.
pub fn held_secret(mode: u32) -> bool {
    mode & 0o004 == 0
}

/// Reads `name` in `dir` without following a symlink and without opening
/// anything but a regular file for reading. `Ok(None)` when absent.
pub fn read(dir: &OwnedFd, dir_path: &Path, name: &OsStr) -> Result<Option<Found>, PathError> {
    read_expecting(dir, dir_path, name, None)
}

/// [`read`], compared while it is read with what a target wants there
/// (`expected`): a file that holds exactly those bytes is found holding
/// them, shared (no buffer of its size is filled, nothing is copied: a
/// pass over unchanged files touches no fresh memory for them); any other
/// file is read as [`read`] reads it, from where it first differed.
pub fn read_expecting(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &OsStr,
    expected: Option<&Content>,
) -> Result<Option<Found>, PathError> {
    let path = dir_path.join(name);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(PathError::NotRegular {
                path: crate::text::display_path(&path),
                what: "symlink",
                wanted: "regular file",
            });
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&path, e))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(PathError::NotRegular {
            path: crate::text::display_path(&path),
            what: type_name(kind),
            wanted: "regular file",
        });
    }
    let size = st.st_size as u64;
    let mode = st.st_mode & 0o7777;
    let id = (st.st_dev, st.st_ino);
    if size > MAX_READ {
        return Ok(Some(Found { content: None, size, mode, id }));
    }
    let mut file = std::fs::File::from(fd);
    let mut content = Vec::new();
    if let Some(expected) = expected.filter(|e| e.len() as u64 == size) {
        match read_same(&mut file, expected.expose()).map_err(|e| io_err(&path, e))? {
            Same::Yes => {
                return Ok(Some(Found { size, content: Some(expected.with_secret(held_secret(mode))), mode, id }));
            }
            Same::Differs(start) => content = start,
        }
    }
    content.reserve((size as usize).saturating_sub(content.len()));
    let limit = (MAX_READ + 1).saturating_sub(content.len() as u64);
    file.take(limit).read_to_end(&mut content).map_err(|e| io_err(&path, e))?;
    if content.len() as u64 > MAX_READ {
        return Ok(Some(Found { content: None, size: content.len() as u64, mode, id }));
    }
    let size = content.len() as u64;
    Ok(Some(Found { size, content: Some(Content::new(content, held_secret(mode))), mode, id }))
}

/// What comparing a file with the bytes expected found.
enum Same {
    /// The file holds exactly `expected`, to its end.
    Yes,
    /// It does not: what was read of it so far (the rest follows).
    Differs(Vec<u8>),
}

/// Reads `file` from its current offset in pieces, comparing each with
/// `expected`, through one small buffer.
fn read_same(file: &mut std::fs::File, expected: &[u8]) -> std::io::Result<Same> {
    const PIECE: usize = 64 * 1024;
    let mut buf = vec![0u8; PIECE.min(expected.len() + 1)];
    let mut at = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(if at == expected.len() { Same::Yes } else { Same::Differs(expected[..at].to_vec()) });
        }
        if expected.get(at..at + n) != Some(&buf[..n]) {
            let mut read = Vec::with_capacity(expected.len().max(at + n));
            read.extend_from_slice(&expected[..at]);
            read.extend_from_slice(&buf[..n]);
            return Ok(Same::Differs(read));
        }
        at += n;
    }
}

/// What kind of entry `name` is in `dir` (without following it).
pub fn kind_of(dir: &OwnedFd, name: &OsStr) -> Option<FileType> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok().map(|st| FileType::from_raw_mode(st.st_mode))
}

/// A temp file of ours, written and synced, waiting to be renamed.
pub struct Staged {
    pub name: OsString,
    /// `dir/name`, for a `check_cmd` to read.
    pub path: PathBuf,
}

/// Writes `content` to a new temp file in `dir` (mode `0600` while written,
/// then `mode`).
pub fn stage(dir: &OwnedFd, dir_path: &Path, env: &str, content: &[u8], mode: u32) -> Result<Staged, PathError> {
    let name = OsString::from(format!("{TEMP_PREFIX}tmp-{}-{env}-{:016x}", std::process::id(), fastrand::u64(..)));
    let path = dir_path.join(&name);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(0o600)).map_err(|e| io_err(&path, e))?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(content)
        .and_then(|_| file.sync_all())
        .and_then(|_| rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(Into::into));
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, &name, AtFlags::empty());
        return Err(io_err(&path, e));
    }
    Ok(Staged { name, path })
}

/// Renames a staged file over `name` and syncs the directory.
pub fn commit(dir: &OwnedFd, dir_path: &Path, staged: &Staged, name: &OsStr) -> Result<(), PathError> {
    let path = dir_path.join(name);
    if let Err(e) = rustix::fs::renameat(dir, &staged.name, dir, name) {
        discard(dir, staged);
        return Err(io_err(&path, e));
    }
    rustix::fs::fsync(dir).map_err(|e| io_err(dir_path, e))
}

/// Removes a staged file that will not be committed.
pub fn discard(dir: &OwnedFd, staged: &Staged) {
    let _ = rustix::fs::unlinkat(dir, &staged.name, AtFlags::empty());
}

/// Changes the mode of a regular file `name` (not following a symlink).
pub fn chmod(dir: &OwnedFd, dir_path: &Path, name: &OsStr, mode: u32) -> Result<(), PathError> {
    let path = dir_path.join(name);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| io_err(&path, e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(PathError::NotRegular {
            path: crate::text::display_path(&path),
            what: type_name(FileType::from_raw_mode(st.st_mode)),
            wanted: "regular file",
        });
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_err(&path, e))
}

/// Removes `name` from `dir` (a name, never what a symlink points to).
pub fn remove(dir: &OwnedFd, dir_path: &Path, name: &OsStr) -> Result<(), PathError> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => rustix::fs::fsync(dir).map_err(|e| io_err(dir_path, e)),
        Err(e) => Err(io_err(&dir_path.join(name), e)),
    }
}

/// Temp files in `dir` left behind by a write that did not finish: by a
/// process that is gone, by an earlier pass of this process for `env`, or
/// (older naming) untouched for ten minutes.
pub fn stale_temp_files(dir: &OwnedFd, env: &str) -> Vec<OsString> {
    let Ok(listing) = rustix::fs::Dir::read_from(dir) else { return Vec::new() };
    let me = std::process::id();
    let mut stale = Vec::new();
    for entry in listing.flatten() {
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else { continue };
        let is_stale = match rest.strip_prefix("tmp-") {
            Some(tail) => {
                let mut parts = tail.splitn(3, '-');
                let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
                let owner_env = parts.next();
                match pid {
                    Some(pid) if pid == me => owner_env == Some(env),
                    Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                    None => false,
                }
            }
            // `.cfgsync-XXXXXX`: written by releases before this naming.
            None if rest.len() == 6 => rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
                modified.elapsed().is_ok_and(|age| age > Duration::from_secs(600))
            }),
            None => false,
        };
        if is_stale && kind_of(dir, &name) == Some(FileType::RegularFile) {
            stale.push(name);
        }
    }
    stale.sort();
    stale
}

/// Splits an absolute `path` into its trusted base and the part below it:
/// the longest of `bases` that is a prefix, else `/`.
pub fn split_base<'a>(path: &'a Path, bases: &[&'a Path]) -> (&'a Path, &'a Path) {
    let base = bases.iter().filter(|b| path.starts_with(b)).max_by_key(|b| b.as_os_str().len()).copied();
    match base {
        Some(b) => (b, path.strip_prefix(b).unwrap_or(path)),
        None => (Path::new("/"), path.strip_prefix("/").unwrap_or(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_directories_and_special_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.join("link")).unwrap();
        let e = open_dir(base, Path::new("link/sub"), true).unwrap_err();
        assert!(matches!(e, PathError::Symlink { .. }), "{e}");
        assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none(), "nothing created through the link");

        let dir = open_dir(base, Path::new("a/b"), true).unwrap().unwrap();
        let dir_path = base.join("a/b");
        std::os::unix::fs::symlink("/etc/hostname", dir_path.join("f")).unwrap();
        let e = read(&dir, &dir_path, OsStr::new("f")).unwrap_err();
        assert!(e.to_string().contains("is a symlink, not a regular file"), "{e}");
        assert!(std::process::Command::new("mkfifo").arg(dir_path.join("p")).status().unwrap().success());
        let e = read(&dir, &dir_path, OsStr::new("p")).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        assert!(read(&dir, &dir_path, OsStr::new("absent")).unwrap().is_none());
    }

    /// A file compared with what a target wants while it is read is found
    /// holding exactly its own bytes, whatever it holds: the wanted bytes
    /// (shared) only when it is those to its end; any difference, at any
    /// offset (in the first piece, beyond it, the last byte), a shorter or
    /// a longer file, reads the file itself.
    #[test]
    fn a_file_compared_while_read_is_found_holding_its_own_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path(), Path::new(""), false).unwrap().unwrap();
        let wanted: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let expected = Content::plain(wanted.clone());
        let name = OsStr::new("f");
        let found = |bytes: &[u8]| {
            std::fs::write(tmp.path().join("f"), bytes).unwrap();
            read_expecting(&dir, tmp.path(), name, Some(&expected)).unwrap().unwrap().content.unwrap()
        };
        let same = found(&wanted);
        assert!(std::ptr::eq(same.expose(), expected.expose()), "equal: the wanted bytes, shared");
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for at in [0, 1_000, 65_536, 150_000, wanted.len() - 1] {
            let mut edited = wanted.clone();
            edited[at] = b'#';
            cases.push(edited);
        }
        cases.push(wanted[..wanted.len() - 1].to_vec());
        cases.push([&wanted[..], b"+"].concat());
        cases.push(Vec::new());
        for case in cases {
            let got = found(&case);
            assert!(got.expose() == case.as_slice(), "a file of {} bytes read as {} bytes", case.len(), got.len());
            assert!(!std::ptr::eq(got.expose(), expected.expose()));
        }
        // Nothing wanted, or a file of another size: read as it is.
        std::fs::write(tmp.path().join("f"), &wanted).unwrap();
        let plain = read_expecting(&dir, tmp.path(), name, None).unwrap().unwrap().content.unwrap();
        assert_eq!(plain.expose(), wanted.as_slice());
        // Found secret or not as its mode says, whatever the wanted content is.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path().join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(found(&wanted).is_secret());
    }

    #[test]
    fn writes_are_atomic_and_leftovers_are_recognised() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path(), Path::new(""), false).unwrap().unwrap();
        let staged = stage(&dir, tmp.path(), "prod", b"A=1\n", 0o640).unwrap();
        assert_eq!(
            stale_temp_files(&dir, "prod"),
            std::slice::from_ref(&staged.name),
            "ours, for this env: stale between passes"
        );
        assert!(stale_temp_files(&dir, "staging").is_empty(), "another env's pass may be writing it");
        commit(&dir, tmp.path(), &staged, OsStr::new("app.env")).unwrap();
        let found = read(&dir, tmp.path(), OsStr::new("app.env")).unwrap().unwrap();
        assert_eq!((found.content.as_ref().map(Content::expose), found.mode), (Some(&b"A=1\n"[..]), 0o640));
        assert!(found.content.as_ref().is_some_and(Content::is_secret), "others cannot read it: secret");
        let staged = stage(&dir, tmp.path(), "prod", b"B=1\n", 0o644).unwrap();
        commit(&dir, tmp.path(), &staged, OsStr::new("b.env")).unwrap();
        let found = read(&dir, tmp.path(), OsStr::new("b.env")).unwrap().unwrap();
        assert_eq!(found.content.as_ref().and_then(Content::shown).as_deref(), Some("B=1\n"), "world-readable: plain");
        std::fs::write(tmp.path().join(".cfgsync-tmp-999999999-prod-00"), "partial").unwrap();
        assert_eq!(
            stale_temp_files(&dir, "prod"),
            [OsString::from(".cfgsync-tmp-999999999-prod-00")],
            "a dead process's"
        );
    }
}
