//! An OpenBao dev server with a file audit device, so every request the
//! measured processes send is counted where it arrives.
//!
//! The tests' launcher (`servers::Vault`) cannot be used as is: OpenBao
//! refuses `bao audit enable` through the API ("use declarative,
//! config-based audit device management instead"), so the device has to be
//! in a config file given at start: `bao server -dev -config=audit.hcl`.
//! Otherwise this starts the server as the tests do (same binary from
//! `CFGSYNC_TEST_BAO`, same root token, loopback, ready when
//! `/v1/sys/health` and the `secret/` KV v2 mount answer).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::http_get;

pub struct AuditedVault {
    pub addr: String,
    pub root_token: String,
    pub audit_log: PathBuf,
    child: Child,
}

const ROOT_TOKEN: &str = "cfgsync-bench-root";
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A port P with P and P + 1 free (the dev server's cluster listener takes P + 1).
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local addr").port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

impl AuditedVault {
    pub fn start(dir: &Path) -> Self {
        let bao = std::env::var_os("CFGSYNC_TEST_BAO")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("bao"), PathBuf::from);
        let audit_log = dir.join("vault-audit.log");
        let config = dir.join("bao-audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"bench\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .expect("write the bao config");
        let port = free_port_pair();
        let log = std::fs::File::create(dir.join("bao.log")).expect("bao log");
        let mut cmd = Command::new(&bao);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("BAO_") || k.starts_with("VAULT_")) {
                cmd.env_remove(key);
            }
        }
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-config={}", config.display()))
            .env("HOME", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bao.display()));
        let mut vault =
            AuditedVault { addr: format!("http://127.0.0.1:{port}"), root_token: ROOT_TOKEN.into(), audit_log, child };
        let sock = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let token = [("X-Vault-Token", ROOT_TOKEN)];
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let ready = matches!(http_get(sock, "/v1/sys/health", &[]), Ok((200, _)))
                && matches!(http_get(sock, "/v1/secret/config", &token), Ok((200, _)));
            if ready {
                break;
            }
            let exited = matches!(vault.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("bao.log")).unwrap_or_default();
                panic!("bao dev server at {} did not become ready; its log:\n{log}", vault.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(vault.audit_log.exists(), "the audit device wrote no {}", vault.audit_log.display());
        vault
    }
}

impl Drop for AuditedVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
