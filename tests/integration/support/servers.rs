//! Real servers for the integration tests: etcd 3.4 and an OpenBao (Vault API) dev server.
//!
//! Each `Etcd` / `Vault` is a child process of the test binary, listening on
//! 127.0.0.1 ports picked at run time, with its own temporary directory that
//! also holds the server's log. Dropping the value (also while unwinding from a
//! panic) SIGKILLs the process. Tests may start as many as they like from
//! parallel threads: nothing is shared between two servers.
//!
//! Binaries come from `CFGSYNC_TEST_ETCD`, `CFGSYNC_TEST_ETCDCTL` and
//! `CFGSYNC_TEST_BAO` (set by `scripts/test.sh`), else from `PATH`. A missing
//! binary is a test failure, never a skip.
#![allow(dead_code)]

/// Polling with a deadline; a submodule here so that the benches, which
/// include this file alone, have it too.
#[path = "wait.rs"]
pub mod wait;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tempfile::TempDir;

/// How long a server gets to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Polling interval while waiting for a server.
const POLL: Duration = Duration::from_millis(20);
/// A fresh start is retried on new ports if the server lost a port race.
const START_ATTEMPTS: usize = 3;
/// How many lines of a server's log a failure message shows.
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------

/// A real etcd 3.4 server on 127.0.0.1 free ports with its own temp data dir;
/// killed on Drop (also on panic).
pub struct Etcd {
    /// Client URL, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    pub client_port: u16,
    pub peer_port: u16,
    etcd: PathBuf,
    etcdctl: PathBuf,
    child: Option<Child>,
    /// Set once `enable_auth_with_reader` has run: `ctl` then logs in as root.
    root_password: Mutex<Option<String>>,
    /// Set by [`Etcd::start_tls`]: the client URL is `https://`.
    pub tls: Option<EtcdTls>,
    dir: TempDir,
}

/// A certificate and its key, as PEM files (made by `support::pki`).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How [`Etcd::start_tls`] serves TLS.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// `--trusted-ca-file`: the CA client certificates must chain to.
    pub trusted_ca: PathBuf,
    /// `--cert-file` / `--key-file`.
    pub server: CertFiles,
    /// `--client-cert-auth`: a client certificate is required, and with
    /// auth enabled its CN is the user.
    pub client_cert_auth: bool,
    /// The CA etcdctl trusts, and the certificate it presents (CN `root`,
    /// which is etcd's root user once auth is on).
    pub ctl_ca: PathBuf,
    pub ctl_client: CertFiles,
}

impl Etcd {
    const NAME: &'static str = "cfgsync-test";

    /// Starts a single-member cluster and waits until `/health` says it is healthy.
    pub fn start() -> Etcd {
        Self::start_with(None)
    }

    /// Starts a single-member cluster serving clients over TLS (peers stay
    /// plain: there are none), and waits until `etcdctl endpoint health`
    /// over TLS says it is healthy.
    pub fn start_tls(tls: EtcdTls) -> Etcd {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTls>) -> Etcd {
        let etcd = binary("CFGSYNC_TEST_ETCD", "etcd");
        let etcdctl = binary("CFGSYNC_TEST_ETCDCTL", "etcdctl");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let client_port = free_port();
            let peer_port = free_port();
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut server = Etcd {
                endpoint: format!("{scheme}://127.0.0.1:{client_port}"),
                client_port,
                peer_port,
                etcd: etcd.clone(),
                etcdctl: etcdctl.clone(),
                child: None,
                root_password: Mutex::new(None),
                tls: tls.clone(),
                dir: temp_dir("cfgsync-etcd-"),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(e) if e.port_in_use => last_error = e.message, // lost a port race: new ports
                Err(e) => panic!("{}", e.message),
            }
        }
        panic!("etcd: no free ports after {START_ATTEMPTS} attempts\n{last_error}");
    }

    /// SIGKILLs the server and waits for it; the data dir is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts the server again (stopping it first if it runs) on the same ports
    /// and data dir, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!("{}", e.message);
        }
    }

    /// Whether the server process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the server (SIGSTOP) until the guard is dropped: it keeps its
    /// sockets, accepts connections in the kernel's backlog and answers
    /// nothing, like a hung server.
    pub fn freeze(&self) -> Frozen {
        Frozen::new(self.pid().expect("etcd is running"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// Runs `etcdctl` (API v3) against this server. Once auth is enabled it
    /// authenticates as root, unless `args` carry their own `--user`/`--password`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.etcdctl);
        scrub_env(&mut cmd, &["ETCD_", "ETCDCTL_"]);
        cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoint));
        cmd.args(ctl_tls_args(self.tls.as_ref()));
        let own_credentials = args.iter().any(|a| a.starts_with("--user") || a.starts_with("--password"));
        let root_password = if own_credentials { None } else { self.root_password.lock().unwrap().clone() };
        if let Some(password) = root_password {
            cmd.arg(format!("--user=root:{password}"));
        }
        cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.etcdctl.display()))
    }

    /// Runs `etcdctl` over TLS presenting `client` (its CN is the user):
    /// what that user may do, asked of the server.
    pub fn ctl_as(&self, client: &CertFiles, args: &[&str]) -> Output {
        let tls = self.tls.as_ref().expect("ctl_as needs a TLS server");
        let mut cmd = Command::new(&self.etcdctl);
        scrub_env(&mut cmd, &["ETCD_", "ETCDCTL_"]);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg(format!("--cacert={}", tls.ctl_ca.display()))
            .arg(format!("--cert={}", client.cert.display()))
            .arg(format!("--key={}", client.key.display()))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.etcdctl.display()))
    }

    /// Runs `ctl` and returns its stdout; panics with stderr unless it succeeded.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        expect_success(&format!("etcdctl {}", args.join(" ")), &out)
    }

    /// Puts one key (any key or value, also one starting with `-`).
    pub fn put(&self, key: &str, value: &str) {
        self.ctl_ok(&["put", "--", key, value]);
    }

    /// Enables auth: creates the root user (with the root role) with
    /// `root_password`, a user `user` with `password` and a role `user` granted
    /// readwrite on each of `read_prefixes` (as key prefixes), then `auth enable`.
    /// From then on `ctl` authenticates as root.
    pub fn enable_auth_with_reader(&self, root_password: &str, user: &str, password: &str, read_prefixes: &[&str]) {
        let root_pw = format!("--new-user-password={root_password}");
        let user_pw = format!("--new-user-password={password}");
        self.ctl_ok(&["user", "add", "root", &root_pw]);
        // `etcdctl auth enable` would create the root role itself, but say it:
        // etcd refuses auth unless the root user exists and has the root role.
        self.ctl_ok(&["role", "add", "root"]);
        self.ctl_ok(&["user", "grant-role", "root", "root"]);
        self.ctl_ok(&["user", "add", user, &user_pw]);
        self.ctl_ok(&["role", "add", user]);
        for prefix in read_prefixes {
            self.ctl_ok(&["role", "grant-permission", user, "--prefix=true", "readwrite", "--", prefix]);
        }
        self.ctl_ok(&["user", "grant-role", user, user]);
        self.ctl_ok(&["auth", "enable"]);
        *self.root_password.lock().unwrap() = Some(root_password.to_owned());
    }

    fn launch(&mut self) -> Result<(), LaunchError> {
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = open_log(&self.log_path());
        let mut cmd = Command::new(&self.etcd);
        scrub_env(&mut cmd, &["ETCD_", "ETCDCTL_"]);
        cmd.arg(format!("--name={}", Self::NAME))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={}", self.endpoint))
            .arg(format!("--advertise-client-urls={}", self.endpoint))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}={peer_url}", Self::NAME))
            .args(["--heartbeat-interval=10", "--election-timeout=50"])
            // Cheapest password hashing: every authenticated etcdctl call pays it.
            .arg("--bcrypt-cost=4")
            .args(["--logger=zap", "--log-outputs=stderr"])
            .args(server_tls_args(self.tls.as_ref()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.etcd.display()));
        let child = self.child.insert(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let (etcdctl, endpoint, tls) = (self.etcdctl.clone(), self.endpoint.clone(), self.tls.clone());
        let waited = wait_ready(child, || match &tls {
            None => matches!(http_get(addr, "/health", &[]), Ok((200, body)) if body.contains("\"true\"")),
            Some(tls) => {
                let mut cmd = Command::new(&etcdctl);
                scrub_env(&mut cmd, &["ETCD_", "ETCDCTL_"]);
                cmd.env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoint}"))
                    .args(ctl_tls_args(Some(tls)))
                    .args(["endpoint", "health", "--command-timeout=1s"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                cmd.status().is_ok_and(|s| s.success())
            }
        });
        let outcome = match waited {
            Waited::Ready => return Ok(()),
            Waited::Exited(status) => format!("exited ({status}) before it was ready"),
            Waited::TimedOut => format!("was not ready within {READY_DEADLINE:?}"),
        };
        self.stop();
        Err(launch_error("etcd", &self.endpoint, &outcome, &self.log_path()))
    }
}

/// etcd's flags for [`EtcdTls`].
fn server_tls_args(tls: Option<&EtcdTls>) -> Vec<String> {
    let Some(tls) = tls else { return Vec::new() };
    let mut args = vec![
        format!("--cert-file={}", tls.server.cert.display()),
        format!("--key-file={}", tls.server.key.display()),
        format!("--trusted-ca-file={}", tls.trusted_ca.display()),
    ];
    if tls.client_cert_auth {
        args.push("--client-cert-auth".to_owned());
    }
    args
}

/// etcdctl's flags for [`EtcdTls`]. etcdctl is the tests' own tool: it
/// skips verifying the server, which the TLS tests serve expired or
/// misnamed certificates on purpose.
fn ctl_tls_args(tls: Option<&EtcdTls>) -> Vec<String> {
    let Some(tls) = tls else { return Vec::new() };
    vec![
        "--insecure-skip-tls-verify".to_owned(),
        format!("--cacert={}", tls.ctl_ca.display()),
        format!("--cert={}", tls.ctl_client.cert.display()),
        format!("--key={}", tls.ctl_client.key.display()),
    ]
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// OpenBao
// ---------------------------------------------------------------------------

/// A real OpenBao dev server (in-memory, unsealed, KV v2 mounted at `secret/`),
/// killed on Drop (also on panic).
pub struct Vault {
    /// API address, e.g. `http://127.0.0.1:41234`.
    pub addr: String,
    pub root_token: String,
    pub port: u16,
    /// Set by [`Vault::start_tls`]: `https://127.0.0.1:PORT` of a second
    /// listener serving TLS (the plain one stays for the helpers).
    pub tls_addr: Option<String>,
    tls: Option<VaultTls>,
    bao: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

/// How [`Vault::start_tls`]'s second listener serves TLS.
#[derive(Debug, Clone)]
pub struct VaultTls {
    pub server: CertFiles,
    /// `tls_client_ca_file` with `tls_require_and_verify_client_cert`:
    /// mutual TLS.
    pub client_ca: Option<PathBuf>,
}

impl Vault {
    const ROOT_TOKEN: &'static str = "cfgsync-test-root";

    /// Starts `bao server -dev` and waits until `/v1/sys/health` answers 200
    /// and the KV v2 engine at `secret/` answers.
    pub fn start() -> Vault {
        Self::start_with(None)
    }

    /// [`Vault::start`] with a second listener (from a `-config` file, as
    /// a production server has) serving TLS with `tls`'s certificate, and
    /// requiring client certificates when it names a client CA.
    pub fn start_tls(tls: VaultTls) -> Vault {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<VaultTls>) -> Vault {
        let bao = binary("CFGSYNC_TEST_BAO", "bao");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            // The dev server also binds its cluster listener on port + 1.
            let port = free_port_pair();
            let tls_addr = tls.as_ref().map(|_| format!("https://127.0.0.1:{}", free_port_pair()));
            let mut server = Vault {
                addr: format!("http://127.0.0.1:{port}"),
                root_token: Self::ROOT_TOKEN.to_owned(),
                port,
                tls_addr,
                tls: tls.clone(),
                bao: bao.clone(),
                child: None,
                dir: temp_dir("cfgsync-bao-"),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(e) if e.port_in_use => last_error = e.message,
                Err(e) => panic!("{}", e.message),
            }
        }
        panic!("bao: no free ports after {START_ATTEMPTS} attempts\n{last_error}");
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the server (SIGSTOP) until the guard is dropped.
    pub fn freeze(&self) -> Frozen {
        Frozen::new(self.pid().expect("bao is running"))
    }

    /// SIGKILLs the server. A dev server keeps everything in memory: after
    /// [`Vault::restart`] only the `secret/` mount and the root token exist.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts a fresh dev server on the same address (stopping the old one
    /// first), with the same root token and an empty `secret/` mount.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!("{}", e.message);
        }
    }

    /// Seals the server (`bao operator seal`): every request but health and
    /// unseal answers 503 until [`Vault::unseal`].
    pub fn seal(&self) {
        self.bao_ok(&["operator", "seal"]);
    }

    /// Unseals a sealed server with the key the dev server printed at its
    /// last start.
    pub fn unseal(&self) {
        let key = self.unseal_key();
        self.bao_ok(&["operator", "unseal", &key]);
    }

    /// The unseal key from the log of the dev server's last start.
    fn unseal_key(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).expect("read the bao log");
        log.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            .unwrap_or_else(|| panic!("no `Unseal Key:` line in {}", self.log_path().display()))
            .trim()
            .to_owned()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// Runs the `bao` CLI against this server with `token`; stdin is null.
    pub fn bao(&self, token: &str, args: &[&str]) -> Output {
        let mut cmd = self.cli(token, args);
        cmd.stdin(Stdio::null());
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bao.display()))
    }

    /// Runs `bao` as root and returns its stdout; panics with stderr unless it succeeded.
    pub fn bao_ok(&self, args: &[&str]) -> String {
        let out = self.bao(&self.root_token, args);
        expect_success(&format!("bao {}", args.join(" ")), &out)
    }

    /// Writes a KV v2 secret at `secret/PATH` as root. Any field value works,
    /// including spaces, `=`, newlines, a leading `@` and a lone `-` (which the
    /// `k=v` argument syntax would read from a file or stdin): the data goes in
    /// as a JSON object on stdin.
    pub fn kv_put(&self, path: &str, fields: &[(&str, &str)]) {
        let data: serde_json::Map<String, serde_json::Value> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
        let json = serde_json::to_vec(&data).expect("serialize kv data");
        let args = ["kv", "put", "-mount=secret", path, "-"];
        let out = self.bao_with_stdin(&self.root_token, &args, json);
        expect_success(&format!("bao kv put -mount=secret {path} - ({fields:?})"), &out);
    }

    /// Writes policy `policy_name` and creates an orphan token with it (and
    /// the `default` policy) and the given TTL, e.g. `"1h"`; returns the token.
    pub fn token_with_policy(&self, policy_name: &str, policy_hcl: &str, ttl: &str) -> String {
        let mut file = tempfile::Builder::new()
            .prefix("policy-")
            .suffix(".hcl")
            .tempfile_in(self.dir.path())
            .expect("create policy file");
        file.write_all(policy_hcl.as_bytes()).expect("write policy file");
        let policy_path = file.path().to_str().expect("utf-8 temp path").to_owned();
        self.bao_ok(&["policy", "write", policy_name, &policy_path]);
        let token = self.bao_ok(&[
            "token",
            "create",
            "-orphan",
            &format!("-policy={policy_name}"),
            &format!("-ttl={ttl}"),
            "-field=token",
        ]);
        let token = token.trim().to_owned();
        assert!(!token.is_empty(), "bao token create printed no token");
        token
    }

    /// Revokes `token` (as root).
    pub fn revoke(&self, token: &str) {
        self.bao_ok(&["token", "revoke", token]);
    }

    fn cli(&self, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bao);
        scrub_env(&mut cmd, &["BAO_", "VAULT_"]);
        cmd.env("BAO_ADDR", &self.addr)
            .env("VAULT_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .env("VAULT_TOKEN", token)
            // Keep the user's ~/.vault, ~/.vault-token and token helper out of it.
            .env("HOME", self.dir.path())
            .args(args)
            .current_dir(self.dir.path());
        cmd
    }

    fn bao_with_stdin(&self, token: &str, args: &[&str], input: Vec<u8>) -> Output {
        let mut cmd = self.cli(token, args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bao.display()));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("wait for bao");
        // bao may exit without reading all of stdin; its own error then says why.
        let _ = writer.join();
        out
    }

    fn launch(&mut self) -> Result<(), LaunchError> {
        let log = open_log(&self.log_path());
        let mut cmd = Command::new(&self.bao);
        scrub_env(&mut cmd, &["BAO_", "VAULT_"]);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={}", self.root_token))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .args(self.tls_listener_config())
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bao.display()));
        let child = self.child.insert(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let token = [("X-Vault-Token", self.root_token.as_str())];
        // Health turns 200 once unsealed; the dev `secret/` KV v2 mount (and its
        // version upgrade) lands just after, so wait for its config endpoint too.
        let waited = wait_ready(child, || {
            matches!(http_get(addr, "/v1/sys/health", &[]), Ok((200, _)))
                && matches!(http_get(addr, "/v1/secret/config", &token), Ok((200, _)))
        });
        let outcome = match waited {
            Waited::Ready => return Ok(()),
            Waited::Exited(status) => format!("exited ({status}) before it was ready"),
            Waited::TimedOut => format!(
                "was not ready within {READY_DEADLINE:?} (GET /v1/sys/health: {:?}, GET /v1/secret/config: {:?})",
                http_get(addr, "/v1/sys/health", &[]),
                http_get(addr, "/v1/secret/config", &token),
            ),
        };
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
        Err(launch_error("bao dev server", &self.addr, &outcome, &self.log_path()))
    }
}

impl Vault {
    /// `-config=FILE` with the TLS listener, when there is one.
    fn tls_listener_config(&self) -> Vec<String> {
        let (Some(tls), Some(addr)) = (&self.tls, &self.tls_addr) else { return Vec::new() };
        let mut hcl = format!(
            "listener \"tcp\" {{\n  address = \"{}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n",
            addr.trim_start_matches("https://"),
            tls.server.cert.display(),
            tls.server.key.display()
        );
        if let Some(ca) = &tls.client_ca {
            hcl.push_str(&format!(
                "  tls_client_ca_file = \"{}\"\n  tls_require_and_verify_client_cert = true\n",
                ca.display()
            ));
        }
        hcl.push_str("}\n");
        let path = self.dir.path().join("tls-listener.hcl");
        std::fs::write(&path, hcl).expect("write the listener config");
        vec![format!("-config={}", path.display())]
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------
// a hung server
// ---------------------------------------------------------------------------

/// A process stopped with SIGSTOP; SIGCONT when dropped (also on a panic),
/// so that a failing test never leaves a server frozen.
pub struct Frozen(u32);

impl Frozen {
    pub fn new(pid: u32) -> Frozen {
        send_signal(pid, "STOP");
        Frozen(pid)
    }

    /// Resumes the process now.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // The process may be gone already (a test killed it while frozen).
        let _ = signal(self.0, "CONT");
    }
}

/// `kill -NAME pid`; panics unless it was delivered.
pub fn send_signal(pid: u32, name: &str) {
    assert!(signal(pid, name), "kill -{name} {pid}");
}

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"))
        .success()
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// The path of a server binary: `$env_var` if set, else `name` on PATH.
fn binary(env_var: &str, name: &str) -> PathBuf {
    const HINT: &str = "run the tests with `scripts/test.sh`, which installs etcd, etcdctl and \
                        bao and exports CFGSYNC_TEST_ETCD, CFGSYNC_TEST_ETCDCTL and CFGSYNC_TEST_BAO";
    if let Some(value) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        assert!(is_executable(&path), "{env_var}={} is not an executable file; {HINT}", path.display());
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| panic!("`{name}` not found ({env_var} is unset and it is not on PATH); {HINT}"))
}

fn is_executable(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Removes inherited variables that the servers and CLIs would read as settings.
fn scrub_env(cmd: &mut Command, prefixes: &[&str]) {
    let inherited = std::env::vars_os().filter_map(|(key, _)| key.into_string().ok());
    for key in inherited.filter(|key| prefixes.iter().any(|p| key.starts_with(p))) {
        cmd.env_remove(key);
    }
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("create temp dir")
}

/// Ports this process has handed out already, so that two servers started by
/// parallel tests never get the same one (the kernel may return a just
/// released port again).
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A free 127.0.0.1 port: bind port 0, read it, let the listener go.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if handed_out().lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A port P with P and P + 1 both free.
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local addr").port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, next)).is_err() {
            continue;
        }
        let mut ports = handed_out().lock().unwrap();
        if !ports.contains(&port) && !ports.contains(&next) {
            ports.insert(port);
            ports.insert(next);
            return port;
        }
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL; fails only if already reaped
    let _ = child.wait();
}

enum Waited {
    Ready,
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Polls `ready` every `POLL` until it holds, the child exits, or the deadline passes.
fn wait_ready(child: &mut Child, mut ready: impl FnMut() -> bool) -> Waited {
    let waited = wait::poll_until(READY_DEADLINE, POLL, || match child.try_wait() {
        Ok(Some(status)) => Some(Waited::Exited(status)),
        _ => ready().then_some(Waited::Ready),
    });
    waited.unwrap_or(Waited::TimedOut)
}

struct LaunchError {
    /// The server could not bind one of its ports (someone took it since we picked it).
    port_in_use: bool,
    message: String,
}

fn launch_error(what: &str, addr: &str, outcome: &str, log: &Path) -> LaunchError {
    let tail = log_tail(log);
    LaunchError {
        port_in_use: tail.contains("address already in use"),
        message: format!("{what} at {addr} {outcome}; last lines of its log {}:\n{tail}", log.display()),
    }
}

fn expect_success(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "`{what}` failed ({}):\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal HTTP/1.0 GET on a raw TcpStream: (status code, body).
fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad HTTP response: {response:?}"))
    })?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}
