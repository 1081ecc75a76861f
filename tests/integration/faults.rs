//! Fault injection against one-shot passes (`cfgsync reconcile --once`):
//! etcd, OpenBao, Kubernetes (kube-emulator) and the local disk failing in
//! the ways they do in production (docs/faults.md has the matrix).
//!
//! Every case runs the same script ([`Case`]): a first pass writes
//! version 1 of everything; the sources move to version 2; the fault is
//! put in force; the pass must then exit 1 naming the failure, leave every
//! target the fault blocks byte for byte, inode and mtime as it was (never
//! emptied, shrunk or deleted), and still bring every other target to
//! version 2; once the fault clears the next pass converges everything.
//! No output, log or error may carry a secret (canary values).

use std::process::Stdio;
use std::time::{Duration, Instant};

use kube_emulator::{Emulator, Fault, Kind, Verb};
use serde_json::Value;

use crate::service::temp_files;
use crate::support::disk::{Tmpfs, Unwritable};
use crate::support::proxy::{FaultProxy, Inject};
use crate::support::{Etcd, FileState, Frozen, Project, Run, Vault, run_output, wait_until};

pub const CANARY: &str = "CANARY-3f7a-faults";

// ---------------------------------------------------------------------------
// The source test bed: etcd and OpenBao, file targets.
// ---------------------------------------------------------------------------

/// Envs `a` and `b` read etcd and Vault (output `app`); env `plain` reads
/// etcd only (output `web`, which every env has), so it needs no Vault.
pub const ENVS: [&str; 3] = ["a", "b", "plain"];
pub const SECRET_ENVS: [&str; 2] = ["a", "b"];

/// A Vault policy that reads every secret of the `secret/` mount.
pub const READ_ALL: &str = "path \"secret/data/*\" { capabilities = [\"read\"] }";

pub fn source_config(etcd: &Etcd, vault: &Vault, timeout: &str, extra: &str) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{etcd}"]
timeout = "{timeout}"

[vault]
address = "{vault}"
auth = {{ method = "token", token_file = "vault-token" }}
timeout = "{timeout}"
# Every pass reads Vault: the faults below are seen by the pass they hit.
refresh = "1ms"

[service]
debounce = "20ms"
[service.election]
ttl = "3s"

[envs.a]
[envs.b]
[envs.plain]

[[output]]
name = "app"
envs = ["a", "b"]
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
PASSWORD = "{{{{ secret(path='db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"

[[output]]
name = "web"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/web.env"
{extra}"#,
        etcd = etcd.endpoint,
        vault = vault.addr,
    )
}

/// etcd, OpenBao and a project reading both (token from `vault-token`).
pub struct SourceBed {
    pub etcd: Etcd,
    pub vault: Vault,
    pub p: Project,
    /// A fault in force until the case clears it (a frozen server).
    pub frozen: Option<Frozen>,
}

impl SourceBed {
    pub fn new(timeout: &str) -> SourceBed {
        Self::with_extra(timeout, "")
    }

    pub fn with_extra(timeout: &str, extra: &str) -> SourceBed {
        let (etcd, vault) = (Etcd::start(), Vault::start());
        let p = Project::new(&source_config(&etcd, &vault, timeout, extra));
        p.write("vault-token", &vault.root_token);
        SourceBed { etcd, vault, p, frozen: None }
    }

    pub fn host(env: &str, version: u32) -> String {
        format!("{env}.v{version}.internal")
    }

    pub fn password(env: &str, version: u32) -> String {
        format!("{CANARY}-{env}-v{version}")
    }

    /// Puts version `version` of every key and secret (as root).
    pub fn seed(&self, version: u32) {
        for env in ENVS {
            self.etcd.put(&format!("/cfgsync/{env}/host"), &Self::host(env, version));
        }
        self.seed_secrets(version);
    }

    pub fn seed_secrets(&self, version: u32) {
        for env in SECRET_ENVS {
            self.vault.kv_put(&format!("{env}/db"), &[("password", &Self::password(env, version))]);
        }
    }

    /// What each target of `env` holds at `version`: (path, content).
    pub fn expected(env: &str, version: u32) -> Vec<(String, String)> {
        let host = Self::host(env, version);
        let mut files = vec![(format!("out/{env}/web.env"), format!("HOST={host}\n"))];
        if SECRET_ENVS.contains(&env) {
            let pw = Self::password(env, version);
            files.push((format!("out/{env}/app.env"), format!("HOST={host}\nPASSWORD={pw}\n")));
        }
        files
    }

    pub fn at_version(&self, env: &str, version: u32) -> bool {
        Self::expected(env, version).iter().all(|(path, text)| read(&self.p, path).as_deref() == Some(text.as_str()))
    }

    pub fn assert_version(&self, env: &str, version: u32) {
        for (path, text) in Self::expected(env, version) {
            assert_eq!(read(&self.p, &path).as_deref(), Some(text.as_str()), "{path} at version {version}");
        }
    }
}

pub fn read(p: &Project, rel: &str) -> Option<String> {
    std::fs::read_to_string(p.path(rel)).ok()
}

/// Every file under `out/<env>/`: content, mode, inode and mtime.
pub fn env_files(p: &Project, env: &str) -> Vec<FileState> {
    let dir = p.path("out").join(env);
    p.state().into_iter().filter(|f| f.0.starts_with(&dir)).collect()
}

/// Asserts that `now` is `before` (files are shown by path, size, inode
/// and mtime, not content: the content may be long, or secret).
pub fn assert_same_files(now: &[FileState], before: &[FileState], what: &str) {
    if now != before {
        let show = |files: &[FileState]| -> Vec<String> {
            files
                .iter()
                .map(|(path, content, mode, ino, s, ns)| {
                    format!(
                        "{} ({} bytes, mode {mode:o}, inode {ino}, mtime {s}.{ns:09})",
                        path.display(),
                        content.len()
                    )
                })
                .collect()
        };
        panic!("{what}\nbefore: {:#?}\nnow: {:#?}", show(before), show(now));
    }
}

/// Runs `reconcile --once` and checks that nothing it printed holds a secret.
pub fn reconcile(p: &Project) -> Run {
    let r = p.run(&["reconcile", "--once"]);
    assert!(!r.all().contains(CANARY), "a secret in the output: {r:?}");
    r
}

/// The script every one-shot fault case follows (see the module doc).
pub struct Case<'a> {
    /// Envs the fault blocks: their targets must not change.
    pub blocked: &'a [&'a str],
    /// Text the failing pass's stderr must contain.
    pub error: &'a str,
}

impl Case<'_> {
    /// Runs the case on `bed`: `fault` puts the fault in force after the
    /// sources moved to version 2, `clear` ends it. Returns the failing
    /// pass and how long it took.
    pub fn run(
        &self,
        bed: &mut SourceBed,
        fault: impl FnOnce(&mut SourceBed),
        clear: impl FnOnce(&mut SourceBed),
    ) -> (Run, Duration) {
        bed.seed(1);
        let r = reconcile(&bed.p);
        assert_eq!(r.code, 0, "the first pass: {r:?}");
        for env in ENVS {
            bed.assert_version(env, 1);
        }
        bed.seed(2);
        let before: Vec<Vec<FileState>> = self.blocked.iter().map(|env| env_files(&bed.p, env)).collect();
        assert!(before.iter().all(|files| !files.is_empty()));

        fault(bed);
        let started = Instant::now();
        let failed = reconcile(&bed.p);
        let took = started.elapsed();
        assert_eq!(failed.code, 1, "the pass under the fault fails: {failed:?}");
        assert!(failed.stderr.contains(self.error), "the failure is named ({:?}): {failed:?}", self.error);
        for (env, files) in self.blocked.iter().zip(&before) {
            assert_same_files(
                &env_files(&bed.p, env),
                files,
                &format!("env {env} changed under the fault: {failed:?}"),
            );
            assert!(
                failed.stdout.contains(&format!("env {env}\n  ! ")) || failed.stderr.contains(&format!("env {env}")),
                "env {env} is reported failed: {failed:?}"
            );
        }
        for env in ENVS.iter().filter(|e| !self.blocked.contains(e)) {
            bed.assert_version(env, 2);
        }
        assert!(temp_files(&bed.p.path("out")).is_empty(), "no temp files left");

        clear(bed);
        let r = reconcile(&bed.p);
        assert_eq!(r.code, 0, "the pass after the fault cleared: {r:?}");
        for env in ENVS {
            bed.assert_version(env, 2);
        }
        (failed, took)
    }
}

// ---------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------

#[test]
fn etcd_stopped_fails_every_env_closed_and_a_restart_heals() {
    let mut bed = SourceBed::new("2s");
    let case = Case { blocked: &ENVS, error: "error: env a: etcd: reading /cfgsync/a/: tcp connect error" };
    let (failed, _) = case.run(&mut bed, |b| b.etcd.stop(), |b| b.etcd.restart());
    assert!(failed.stdout.contains("source failed; no target of env a touched"), "{failed:?}");
}

#[test]
fn etcd_hung_past_the_timeout_fails_closed_within_the_timeout() {
    let mut bed = SourceBed::new("1s");
    let case = Case { blocked: &ENVS, error: "error: env a: etcd: reading /cfgsync/a/: Timeout expired" };
    let (_, took) = case.run(&mut bed, |b| b.frozen = Some(b.etcd.freeze()), |b| b.frozen = None);
    // The whole fetch is bounded by 3 × the timeout.
    assert!(took < Duration::from_secs(10), "a hung etcd does not stall the pass: {took:?}");
}

/// The current etcd connections of this machine to `port` (ESTABLISHED,
/// from /proc/net/tcp).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[2].ends_with(&remote) && cols[3] == "01"
        })
        .count()
}

#[test]
fn etcd_killed_while_a_pass_reads_it_fails_that_pass_closed() {
    let mut bed = SourceBed::new("10s");
    bed.seed(1);
    assert_eq!(reconcile(&bed.p).code, 0);
    bed.seed(2);
    let before: Vec<Vec<FileState>> = ENVS.iter().map(|e| env_files(&bed.p, e)).collect();
    // Frozen, etcd accepts the connection in the kernel and answers
    // nothing: the pass is in the middle of its read when etcd dies.
    let frozen = bed.etcd.freeze();
    let idle = connections_to(bed.etcd.client_port);
    let child = bed.p.command(&["reconcile", "--once"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("the pass to connect to etcd", Duration::from_secs(10), || {
        (connections_to(bed.etcd.client_port) > idle).then_some(())
    });
    let killed = Instant::now();
    bed.etcd.stop();
    drop(frozen);
    let r = run_output(child.wait_with_output().unwrap());
    let took = killed.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!r.all().contains(CANARY));
    assert!(took < Duration::from_secs(8), "a reset connection fails at once, not after the 10 s timeout: {took:?}");
    for (env, files) in ENVS.iter().zip(&before) {
        assert_same_files(&env_files(&bed.p, env), files, &format!("env {env} changed: {r:?}"));
        assert!(r.stdout.contains(&format!("source failed; no target of env {env} touched")), "{r:?}");
    }
    bed.etcd.restart();
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 0, "{r:?}");
    for env in ENVS {
        bed.assert_version(env, 2);
    }
}

#[test]
fn etcd_killed_after_the_read_the_pass_finishes_from_its_snapshot() {
    // The check of env a's app.env kills etcd: the pass has read
    // everything by then, so it completes consistently from its snapshot.
    let mut bed = SourceBed::new("2s");
    bed.seed(1);
    assert_eq!(reconcile(&bed.p).code, 0);
    bed.seed(2);
    let pid = bed.etcd.pid().unwrap();
    let config = bed.p.read("cfgsync.toml").replace(
        "path = \"out/{{ env }}/app.env\"",
        &format!("path = \"out/{{{{ env }}}}/app.env\"\ncheck_cmd = \"kill -9 {pid}\""),
    );
    bed.p.write("cfgsync.toml", &config);
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!bed.etcd.is_running(), "the check killed etcd mid-pass");
    for env in ENVS {
        bed.assert_version(env, 2);
    }
    // The next pass finds etcd gone: it fails and changes nothing.
    let before: Vec<Vec<FileState>> = ENVS.iter().map(|e| env_files(&bed.p, e)).collect();
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 1, "{r:?}");
    for (env, files) in ENVS.iter().zip(&before) {
        assert_same_files(&env_files(&bed.p, env), files, &format!("env {env} changed: {r:?}"));
    }
    bed.etcd.restart();
    bed.seed(3);
    let config = bed.p.read("cfgsync.toml").replace(&format!("\ncheck_cmd = \"kill -9 {pid}\""), "");
    bed.p.write("cfgsync.toml", &config);
    assert_eq!(reconcile(&bed.p).code, 0);
    for env in ENVS {
        bed.assert_version(env, 3);
    }
}

/// The prefixes user `svc` may read and write: its envs, the service's own keys.
const SVC_PREFIXES: [&str; 5] =
    ["/cfgsync/a/", "/cfgsync/b/", "/cfgsync/plain/", "/cfgsync/_service/", "/cfgsync/_state/"];

fn revoke_b(etcd: &Etcd) {
    etcd.ctl_ok(&["role", "revoke-permission", "svc", "--prefix=true", "--", "/cfgsync/b/"]);
}

fn grant_b(etcd: &Etcd) {
    etcd.ctl_ok(&["role", "grant-permission", "svc", "--prefix=true", "readwrite", "--", "/cfgsync/b/"]);
}

#[test]
fn etcd_permission_denied_on_one_prefix_blocks_that_env_only() {
    let mut bed = SourceBed::new("2s");
    bed.etcd.enable_auth_with_reader("rootpw", "svc", "svcpw", &SVC_PREFIXES);
    bed.p.env.push(("ETCDCTL_USER".into(), "svc:svcpw".into()));
    let case = Case { blocked: &["b"], error: "etcd: permission denied reading /cfgsync/b/ as user \"svc\"" };
    case.run(&mut bed, |b| revoke_b(&b.etcd), |b| grant_b(&b.etcd));
    assert!(!bed.p.read("out/b/app.env").is_empty());
}

#[test]
fn a_denied_prefix_blocks_every_prune_of_the_pass() {
    // Output `old` is written, then removed from the config while env b
    // cannot be read: not even env a's copy may be deleted in that pass
    // (the pass cannot know what is unclaimed); once b reads again, it is.
    let extra = "\n[[output]]\nname = \"old\"\n[output.entries]\nX = \"{{ key(name='host') }}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}/old.env\"\n";
    let bed = SourceBed::with_extra("2s", extra);
    bed.etcd.enable_auth_with_reader("rootpw", "svc", "svcpw", &SVC_PREFIXES);
    let p = &bed.p;
    let p_env = |r: &mut std::process::Command| {
        r.env("ETCDCTL_USER", "svc:svcpw");
    };
    let run = |args: &[&str]| {
        let mut cmd = p.command(args);
        p_env(&mut cmd);
        let r = run_output(cmd.output().unwrap());
        assert!(!r.all().contains(CANARY));
        r
    };
    bed.seed(1);
    assert_eq!(run(&["reconcile", "--once"]).code, 0);
    assert!(p.path("out/a/old.env").exists());
    p.write("cfgsync.toml", &p.read("cfgsync.toml").replace(extra, ""));
    revoke_b(&bed.etcd);
    let before = env_files(p, "a");
    let r = run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_same_files(
        &env_files(p, "a"),
        &before,
        &format!("nothing of env a pruned while env b cannot be read: {r:?}"),
    );
    grant_b(&bed.etcd);
    let r = run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    for env in ENVS {
        assert!(!p.path(&format!("out/{env}/old.env")).exists(), "pruned in {env}: {r:?}");
    }
}

// ---------------------------------------------------------------------------
// OpenBao
// ---------------------------------------------------------------------------

#[test]
fn vault_sealed_blocks_the_envs_that_read_secrets_only() {
    let mut bed = SourceBed::new("2s");
    let case = Case { blocked: &SECRET_ENVS, error: "HTTP 503: Vault is sealed" };
    case.run(&mut bed, |b| b.vault.seal(), |b| b.vault.unseal());
}

#[test]
fn vault_token_revoked_blocks_and_a_new_token_heals() {
    let mut bed = SourceBed::new("2s");
    let token = bed.vault.token_with_policy("reader", READ_ALL, "1h");
    bed.p.write("vault-token", &token);
    // A revoked token may not look itself up either, which cfgsync allows
    // (a token without the default policy); the read says what failed.
    let case = Case { blocked: &SECRET_ENVS, error: "vault: permission denied reading secret/a/db" };
    case.run(
        &mut bed,
        |b| b.vault.revoke(&token),
        |b| {
            let fresh = b.vault.token_with_policy("reader", READ_ALL, "1h");
            b.p.write("vault-token", &fresh);
        },
    );
}

#[test]
fn vault_403_on_one_path_blocks_its_env_entirely() {
    // Env b also reads `extra`; the policy stops allowing it. Env b's
    // `app.env`, whose own path is still readable, is kept as well: a
    // pass renders an env from a complete snapshot or not at all.
    let extra = "\n[[output]]\nname = \"extra\"\nenvs = [\"b\"]\n[output.entries]\nX = \"{{ secret(path='extra', field='x') }}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}/extra.env\"\n";
    let mut bed = SourceBed::with_extra("2s", extra);
    bed.vault.kv_put("b/extra", &[("x", &format!("{CANARY}-extra"))]);
    let token = bed.vault.token_with_policy("reader", READ_ALL, "1h");
    bed.p.write("vault-token", &token);
    let narrow = "path \"secret/data/+/db\" { capabilities = [\"read\"] }";
    let write_policy = |vault: &Vault, hcl: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.hcl");
        std::fs::write(&file, hcl).unwrap();
        vault.bao_ok(&["policy", "write", "reader", file.to_str().unwrap()]);
    };
    let case = Case { blocked: &["b"], error: "vault: permission denied reading secret/b/extra" };
    case.run(&mut bed, |b| write_policy(&b.vault, narrow), |b| write_policy(&b.vault, READ_ALL));
    assert_eq!(bed.p.read("out/b/extra.env"), format!("X={CANARY}-extra\n"));
}

#[test]
fn vault_stopped_blocks_the_secret_envs_and_a_restart_heals() {
    // A long timeout, so that failing at once and waiting for it differ
    // by more than a loaded machine's noise.
    let mut bed = SourceBed::new("10s");
    let case = Case { blocked: &SECRET_ENVS, error: "error: env a: vault: cannot authenticate with token auth" };
    let (failed, took) = case.run(
        &mut bed,
        |b| b.vault.stop(),
        |b| {
            // A dev server forgets everything: restore version 2.
            b.vault.restart();
            b.seed_secrets(2);
        },
    );
    assert!(failed.stderr.contains("tcp connect error: Connection refused"), "{failed:?}");
    assert!(took < Duration::from_secs(5), "a refused connection fails at once, not after the 10 s timeout: {took:?}");
}

#[test]
fn vault_hung_past_the_timeout_blocks_the_secret_envs_only() {
    let mut bed = SourceBed::new("1s");
    let case = Case { blocked: &SECRET_ENVS, error: "error: env a: vault: cannot authenticate with token auth" };
    let (failed, _) = case.run(&mut bed, |b| b.frozen = Some(b.vault.freeze()), |b| b.frozen = None);
    assert!(failed.stderr.contains("operation timed out"), "{failed:?}");
}

/// `n` envs, each reading one secret and one key.
fn many_envs_config(etcd: &Etcd, vault: &Vault, n: usize, timeout: &str) -> String {
    let envs: String = (0..n).map(|i| format!("[envs.e{i}]\n")).collect();
    format!(
        r#"[etcd]
endpoints = ["{}"]
timeout = "{timeout}"

[vault]
address = "{}"
auth = {{ method = "token", token_file = "vault-token" }}
timeout = "{timeout}"

{envs}
[[output]]
name = "app"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
PASSWORD = "{{{{ secret(path='db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"
"#,
        etcd.endpoint, vault.addr
    )
}

const MANY: usize = 5;
const MANY_TIMEOUT: Duration = Duration::from_secs(2);
/// About one timeout (2 s) plus a loaded machine's slack, well below what
/// waiting in turn costs (10 s for Vault, 6 s for etcd).
const HUNG_BOUND: Duration = Duration::from_millis(4500);

fn many_envs() -> (Etcd, Vault, Project) {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    for i in 0..MANY {
        etcd.put(&format!("/cfgsync/e{i}/host"), "h");
        vault.kv_put(&format!("e{i}/db"), &[("password", CANARY)]);
    }
    let p = Project::new(&many_envs_config(&etcd, &vault, MANY, "2s"));
    p.write("vault-token", &vault.root_token);
    assert_eq!(reconcile(&p).code, 0);
    (etcd, vault, p)
}

/// Runs a pass against a hung server: every env fails, nothing changes;
/// returns how long it took.
fn hung_pass(p: &Project) -> Duration {
    let before = p.state();
    let started = Instant::now();
    let r = reconcile(p);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    for i in 0..MANY {
        assert!(r.stdout.contains(&format!("source failed; no target of env e{i} touched")), "{r:?}");
    }
    assert_same_files(&p.state(), &before, "nothing changed");
    eprintln!("{MANY} envs against a hung server, timeout {MANY_TIMEOUT:?}: the pass took {took:?}");
    took
}

#[test]
fn envs_waiting_on_a_hung_vault_wait_concurrently() {
    let (_etcd, vault, p) = many_envs();
    let frozen = vault.freeze();
    let took = hung_pass(&p);
    drop(frozen);
    // One after another would be MANY × the timeout (10 s).
    assert!(took < HUNG_BOUND, "{MANY} envs hung on Vault for {took:?}, about one timeout expected");
    assert_eq!(reconcile(&p).code, 0);
}

#[test]
fn envs_waiting_on_a_hung_etcd_with_auth_wait_concurrently() {
    let (etcd, _vault, p) = many_envs();
    etcd.enable_auth_with_reader("rootpw", "svc", "svcpw", &["/cfgsync/"]);
    let p = p.with_env("ETCDCTL_USER", "svc:svcpw");
    assert_eq!(reconcile(&p).code, 0);
    let frozen = etcd.freeze();
    let took = hung_pass(&p);
    drop(frozen);
    // One after another, each env's connect (and login) would time out in
    // turn, until the 3 × timeout bound of a fetch (6 s).
    assert!(took < HUNG_BOUND, "{MANY} envs hung on etcd for {took:?}, about one timeout expected");
    assert_eq!(reconcile(&p).code, 0);
}

// ---------------------------------------------------------------------------
// Kubernetes (kube-emulator)
// ---------------------------------------------------------------------------

/// Two clusters (`staging`, `prod`), each with a Secret `api` (tainted
/// output) and a ConfigMap `web`, from the file source.
pub struct KubeBed {
    pub p: Project,
    pub staging: Emulator,
    pub prod: Emulator,
}

pub const KUBE_CONFIG: &str = r#"interval = "1h"
instance = "faults"

[files]

[kubernetes]
kubeconfig = "kubeconfig"
fingerprint_key = "cfgsync/fingerprint#key"

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
PASSWORD = "{{ secret(path='api/db', field='password') }}"
[[output.target]]
kind = "kubernetes-secret"
context = "{{ env }}"
namespace = "api"
name = "api"

[[output]]
name = "web"
[output.entries]
HOST = "{{ key(name='web/host') }}"
[[output.target]]
kind = "kubernetes-configmap"
context = "{{ env }}"
namespace = "api"
name = "web"
"#;

impl KubeBed {
    pub fn new() -> KubeBed {
        let p = Project::new(KUBE_CONFIG);
        let (staging, prod) = (Emulator::start("staging"), Emulator::start("prod"));
        for e in [&staging, &prod] {
            e.create_namespace("api");
        }
        p.write("kubeconfig", &Emulator::merged_kubeconfig_yaml(&[&staging, &prod]));
        KubeBed { p, staging, prod }
    }

    pub fn seed(&self, version: u32) {
        for env in ["staging", "prod"] {
            self.p.write(
                &format!("source/{env}.toml"),
                &format!(
                    "[keys]\n\"web/host\" = \"www.{env}.v{version}\"\n\n[secrets.\"api/db\"]\npassword = \"{CANARY}-{env}-v{version}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key-{env}\"\n"
                ),
            );
        }
    }

    pub fn cluster(&self, env: &str) -> &Emulator {
        if env == "prod" { &self.prod } else { &self.staging }
    }

    pub fn secret(&self, env: &str) -> Option<Value> {
        self.cluster(env).get_object(Kind::Secret, "api", "api")
    }

    pub fn configmap(&self, env: &str) -> Option<Value> {
        self.cluster(env).get_object(Kind::ConfigMap, "api", "web")
    }

    pub fn secret_at(&self, env: &str, version: u32) -> bool {
        self.secret(env).is_some_and(|s| s["data"]["PASSWORD"] == b64(&format!("{CANARY}-{env}-v{version}")))
    }

    pub fn configmap_at(&self, env: &str, version: u32) -> bool {
        self.configmap(env).is_some_and(|c| c["data"]["HOST"] == format!("www.{env}.v{version}"))
    }

    pub fn at(&self, env: &str, version: u32) -> bool {
        self.secret_at(env, version) && self.configmap_at(env, version)
    }

    /// Both objects of `env` as stored, resourceVersion included: equal
    /// exactly when nothing wrote them.
    pub fn objects(&self, env: &str) -> (Option<Value>, Option<Value>) {
        (self.secret(env), self.configmap(env))
    }
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Version 1 everywhere, then version 2 in the source; returns prod's
/// objects as they are before the fault.
fn kube_case_start(bed: &KubeBed) -> (Option<Value>, Option<Value>) {
    bed.seed(1);
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.at("staging", 1) && bed.at("prod", 1));
    bed.seed(2);
    bed.objects("prod")
}

fn kube_case_end(bed: &KubeBed) {
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.at("staging", 2) && bed.at("prod", 2), "{r:?}");
}

#[test]
fn kube_500s_block_the_failing_cluster_only() {
    let bed = KubeBed::new();
    let before = kube_case_start(&bed);
    bed.prod.set_fault_on(&Verb::WRITES, Fault::Errors { count: 1000 });
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("500"), "{r:?}");
    assert_eq!(bed.objects("prod"), before, "nothing written in prod");
    assert!(bed.at("staging", 2), "staging converged: {r:?}");
    bed.prod.clear_fault();
    kube_case_end(&bed);
}

#[test]
fn kube_409_fails_that_object_only_and_the_next_pass_converges() {
    let bed = KubeBed::new();
    let proxy = FaultProxy::start(bed.prod.addr());
    let kubeconfig =
        Emulator::merged_kubeconfig_yaml(&[&bed.staging, &bed.prod]).replace(&bed.prod.url(), &proxy.url());
    bed.p.write("kubeconfig", &kubeconfig);
    let before = kube_case_start(&bed);
    proxy.inject(Inject::kube_conflict("PATCH", "secrets", "api", 1));
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(proxy.remaining(), 0, "the conflict was answered: {:?}", proxy.seen());
    assert!(r.stderr.contains("Conflict") || r.stderr.contains("409"), "{r:?}");
    assert_eq!(bed.secret("prod"), before.0, "the conflicting Secret is untouched");
    assert!(bed.configmap_at("prod", 2), "the other object of the cluster converged: {r:?}");
    assert!(bed.at("staging", 2));
    kube_case_end(&bed);
}

#[test]
fn kube_answers_slower_than_the_client_timeout_block_that_cluster_only() {
    // The client gives up after its 30 s read timeout (not configurable):
    // the slowest test here.
    let bed = KubeBed::new();
    let before = kube_case_start(&bed);
    bed.prod.set_fault_on(&[Verb::List], Fault::Latency(Duration::from_secs(40)));
    let started = Instant::now();
    let r = reconcile(&bed.p);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(40), "gave up before the answer came: {took:?}");
    assert_eq!(bed.objects("prod"), before, "nothing written in prod");
    assert!(bed.at("staging", 2), "staging converged: {r:?}");
    bed.prod.clear_fault();
    kube_case_end(&bed);
}

#[test]
fn kube_dropped_connections_block_that_cluster_only() {
    let bed = KubeBed::new();
    let before = kube_case_start(&bed);
    bed.prod.set_fault(Fault::DropConnections { count: 1000 });
    let r = reconcile(&bed.p);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(bed.objects("prod"), before, "nothing written in prod");
    assert!(bed.at("staging", 2), "staging converged: {r:?}");
    bed.prod.clear_fault();
    kube_case_end(&bed);
}

// ---------------------------------------------------------------------------
// Local disk
// ---------------------------------------------------------------------------

pub const DISK_CONFIG: &str = r#"[files]
dir = "source"

[envs.staging]
[envs.prod]

[[output]]
name = "app"
[output.entries]
PASSWORD = "{{ secret(path='db', field='password') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/app.env"
"#;

pub fn disk_seed(p: &Project, version: u32) {
    for env in ["staging", "prod"] {
        // Version 2 is longer: a write cut short by a full disk would show.
        let pad = "x".repeat(200 * version as usize);
        p.write(
            &format!("source/{env}.toml"),
            &format!("[secrets.db]\npassword = \"{CANARY}-{env}-v{version}-{pad}\"\n"),
        );
    }
}

pub fn disk_expected(env: &str, version: u32) -> String {
    format!("PASSWORD={CANARY}-{env}-v{version}-{}\n", "x".repeat(200 * version as usize))
}

/// Version 1 written, version 2 in the source; returns prod's files.
fn disk_case_start(p: &Project) -> Vec<FileState> {
    disk_seed(p, 1);
    assert_eq!(reconcile(p).code, 0);
    disk_seed(p, 2);
    env_files(p, "prod")
}

fn disk_case_check(p: &Project, before: &[FileState], error: &str) {
    let r = reconcile(p);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(error), "{r:?}");
    let now: Vec<FileState> = env_files(p, "prod").into_iter().filter(|f| !f.0.ends_with("filler")).collect();
    assert_same_files(&now, before, &format!("prod's file is intact: {r:?}"));
    assert_eq!(p.read("out/prod/app.env"), disk_expected("prod", 1));
    assert_eq!(p.read("out/staging/app.env"), disk_expected("staging", 2), "staging converged");
    assert!(temp_files(&p.path("out")).is_empty(), "no temp files left: {:?}", temp_files(&p.path("out")));
}

fn disk_case_end(p: &Project) {
    let r = reconcile(p);
    assert_eq!(r.code, 0, "{r:?}");
    for env in ["staging", "prod"] {
        assert_eq!(p.read(&format!("out/{env}/app.env")), disk_expected(env, 2));
    }
}

#[test]
fn an_unwritable_directory_keeps_the_old_file() {
    let p = Project::new(DISK_CONFIG);
    let before = disk_case_start(&p);
    let locked = Unwritable::new(&p.path("out/prod"));
    disk_case_check(&p, &before, "out/prod");
    drop(locked);
    disk_case_end(&p);
}

#[test]
fn a_full_disk_keeps_the_old_file_and_leaves_no_temp_file() {
    let p = Project::new(DISK_CONFIG);
    std::fs::create_dir_all(p.path("out/prod")).unwrap();
    let disk = Tmpfs::mount(&p.path("out/prod"), 64 * 1024);
    let before = disk_case_start(&p);
    let filler = disk.fill();
    disk_case_check(&p, &before, "No space left on device");
    std::fs::remove_file(filler).unwrap();
    disk_case_end(&p);
    drop(disk);
}
