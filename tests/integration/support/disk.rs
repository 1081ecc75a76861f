//! Local disk faults for the tests: a directory nobody can write into, and
//! a small filesystem that fills up.
//!
//! The tests run as root (CI and this machine), where `chmod 0555` stops
//! nobody, so a directory is made unwritable with the immutable attribute
//! (`chattr +i`: no entry may be created, renamed or removed, even by
//! root); as another user plain `chmod 0555` does it. A full disk is a
//! tmpfs of a few KiB mounted by the test (root only: mounting needs
//! `CAP_SYS_ADMIN`). Both undo themselves on drop, also when a test
//! panics; a helper that cannot set up its fault panics (a test failure,
//! never a skip).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// A directory no process of ours can create, rename or remove entries in.
pub struct Unwritable {
    dir: PathBuf,
    how: How,
}

enum How {
    Immutable,
    Mode(u32),
}

impl Unwritable {
    pub fn new(dir: &Path) -> Unwritable {
        let shown = dir.to_str().expect("utf-8 path");
        let how = if is_root() {
            run("chattr", &["+i", shown])
                .unwrap_or_else(|e| panic!("cannot make {shown} immutable (the tests run as root): {e}"));
            How::Immutable
        } else {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            How::Mode(mode)
        };
        // The fault must hold: creating a file there fails.
        let probe = dir.join("probe-unwritable");
        assert!(std::fs::write(&probe, "x").is_err(), "{shown} is still writable");
        Unwritable { dir: dir.to_owned(), how }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let shown = self.dir.to_str().unwrap_or_default();
        let undone = match self.how {
            How::Immutable => run("chattr", &["-i", shown]),
            How::Mode(mode) => {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
            }
        };
        if let Err(e) = undone {
            eprintln!("cannot make {shown} writable again: {e}");
        }
    }
}

/// A tmpfs of `size` bytes mounted on an existing directory; unmounted on
/// drop (what it holds goes with it).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: u64) -> Tmpfs {
        assert!(is_root(), "mounting a small tmpfs (a disk that fills up) needs root; the tests run as root in CI");
        let shown = dir.to_str().expect("utf-8 path");
        run("mount", &["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "cfgsync-test", shown])
            .unwrap_or_else(|e| panic!("cannot mount a tmpfs on {shown}: {e}"));
        Tmpfs { dir: dir.to_owned() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills the filesystem: one file takes every free byte (and then no
    /// more can be written). Returns the filler's path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", self.path().display()),
            }
        }
        // Nothing fits any more, not even one byte in a new file.
        let probe = self.path().join("probe-full");
        let full = std::fs::write(&probe, "x").is_err();
        let _ = std::fs::remove_file(&probe);
        assert!(full, "{} is not full", self.path().display());
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let shown = self.dir.to_str().unwrap_or_default().to_owned();
        // Lazy: a process of a failed test may still hold a file open there.
        if let Err(e) = run("umount", &["-l", &shown]) {
            eprintln!("cannot unmount {shown}: {e}");
        }
    }
}
