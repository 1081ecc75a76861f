//! Shared test helpers: real servers ([`servers`]), disk faults ([`disk`]),
//! an HTTP proxy that injects answers ([`proxy`]), waiting for a condition
//! ([`servers::wait`]), a temp project with a config, and running the `cfgsync` binary.

pub mod disk;
pub mod pki;
pub mod proxy;
pub mod servers;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use servers::wait::{poll_until, wait_until};
pub use servers::{Etcd, Frozen, Vault};

/// A temp directory holding a cfgsync.toml and whatever else a test writes.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
}

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// The TLS variables cfgsync reads: never inherited from the test's shell.
pub const TLS_VARIABLES: [&str; 9] = [
    "ETCDCTL_CACERT",
    "ETCDCTL_CERT",
    "ETCDCTL_KEY",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_CLIENT_CERT",
    "VAULT_CLIENT_KEY",
    "VAULT_TLS_SERVER_NAME",
    "VAULT_SKIP_VERIFY",
];

impl Project {
    pub fn new(config: &str) -> Self {
        let p = Self { dir: tempfile::tempdir().unwrap(), env: Vec::new() };
        p.write("cfgsync.toml", config);
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cfgsync"));
        for var in ["VAULT_ADDR", "VAULT_TOKEN", "ETCDCTL_ENDPOINTS", "ETCDCTL_USER", "CFGSYNC_CONFIG", "RUST_LOG"]
            .into_iter()
            .chain(TLS_VARIABLES)
        {
            cmd.env_remove(var);
        }
        cmd.env("NO_COLOR", "1").env("HOME", self.dir.path());
        cmd.current_dir(self.dir.path()).arg("--config").arg(self.path("cfgsync.toml")).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_output(self.command(args).output().unwrap())
    }

    /// [`Project::run`] with `input` on stdin (as `set-secret` reads a value).
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::process::Stdio;
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        run_output(child.wait_with_output().unwrap())
    }

    /// Every file under the project except the config, with its content,
    /// mode, inode and mtime, to prove that nothing changed.
    pub fn state(&self) -> Vec<FileState> {
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out.sort();
        out
    }
}

/// A file's path, content, mode, inode, mtime seconds and nanoseconds.
pub type FileState = (PathBuf, Vec<u8>, u32, u64, i64, i64);

fn walk(dir: &Path, out: &mut Vec<FileState>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            let m = std::fs::metadata(&p).unwrap();
            out.push((p.clone(), std::fs::read(&p).unwrap(), m.mode() & 0o7777, m.ino(), m.mtime(), m.mtime_nsec()));
        }
    }
}

pub fn run_output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// A config that reads keys from `etcd` and secrets from `vault`.
pub fn server_config(etcd: &Etcd, vault: &Vault, rest: &str) -> String {
    format!(
        "[etcd]\nendpoints = [\"{}\"]\n\n[vault]\naddress = \"{}\"\nauth = {{ method = \"token\", token_file = \"vault-token\" }}\n\n{rest}",
        etcd.endpoint, vault.addr
    )
}
