//! Fault injection against `cfgsync run`: the same faults as [`crate::faults`],
//! each in force while the service runs and then cleared, one after another
//! against one service. For every fault: the blocked targets keep their
//! content (checked after a pass under the fault that would have changed
//! them), the others still converge, `/readyz` and the metrics name the
//! failure, and once it clears everything converges without a restart.

use std::time::{Duration, Instant};

use kube_emulator::{Emulator, Fault, Verb};
use serde_json::Value;

use crate::faults::{
    CANARY, ENVS, KubeBed, READ_ALL, SECRET_ENVS, SourceBed, assert_same_files, disk_expected, disk_seed, env_files,
};
use crate::service::{Service, metric_value, temp_files};
use crate::support::disk::{Tmpfs, Unwritable};
use crate::support::proxy::{FaultProxy, Inject};
use crate::support::{FileState, Project, Vault, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);

/// `/readyz` (and the status page), checked for secrets.
fn readyz(svc: &Service) -> (bool, Value) {
    let (ready, body) = svc.readyz();
    assert!(!body.to_string().contains(CANARY), "a secret in /readyz: {body}");
    let (_, page) = svc.get("/").unwrap();
    assert!(!page.contains(CANARY), "a secret on the status page");
    (ready, body)
}

fn metric(svc: &Service, sample: &str) -> f64 {
    metric_value(&svc.metrics(), sample).unwrap_or(0.0)
}

/// How many passes of `env` have ended.
fn passes(svc: &Service, env: &str) -> f64 {
    metric(svc, &format!("cfgsync_reconcile_duration_seconds_count{{env=\"{env}\"}}"))
}

/// Waits until `/readyz` says `env` fails with `code`; returns the body.
fn wait_failing(svc: &Service, env: &str, code: &str) -> Value {
    wait_until(&format!("/readyz: env {env} failing with {code}"), CONVERGE, || {
        let (ready, body) = readyz(svc);
        (!ready && body["envs"][env]["code"] == code).then_some(body)
    })
}

/// Waits until `env` has ended more passes than `seen`. The faults are put
/// in force while the service is idle (its interval is an hour, the last
/// phase converged), so the first pass to end after a change began after it.
fn wait_pass_after(svc: &Service, env: &str, seen: f64) {
    wait_until(&format!("a pass of {env} after {seen}"), CONVERGE, || (passes(svc, env) > seen).then_some(()))
}

fn snapshot(p: &Project, envs: &[&str]) -> Vec<Vec<FileState>> {
    envs.iter().map(|e| env_files(p, e)).collect()
}

fn assert_untouched(p: &Project, envs: &[&str], before: &[Vec<FileState>], what: &str) {
    for (env, files) in envs.iter().zip(before) {
        assert_same_files(&env_files(p, env), files, &format!("env {env} changed under {what}"));
    }
}

// ---------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------

/// Puts `host` version `version` of `envs`.
fn put_hosts(bed: &SourceBed, envs: &[&str], version: u32) {
    for env in envs {
        bed.etcd.put(&format!("/cfgsync/{env}/host"), &SourceBed::host(env, version));
    }
}

fn wait_version(bed: &SourceBed, envs: &[&str], version: u32, what: &str) {
    wait_until(&format!("{envs:?} at version {version} ({what})"), CONVERGE, || {
        envs.iter().all(|e| bed.at_version(e, version)).then_some(())
    });
}

/// While etcd is away no replica leads: every env is not ready, nothing is
/// written (checked for three election TTLs), and Vault changes made
/// meanwhile arrive once it is back.
fn etcd_outage(svc: &Service, bed: &mut SourceBed, version: u32, what: &str) {
    let before = snapshot(&bed.p, &ENVS);
    let body = wait_until(&format!("/readyz 503 during {what}"), CONVERGE, || {
        let (ready, body) = readyz(svc);
        (!ready && ENVS.iter().all(|e| body["envs"][e]["code"] == "etcd_unreachable")).then_some(body)
    });
    assert_eq!(body["envs"]["a"]["state"], "no_leader", "{body}");
    bed.seed_secrets(version);
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(9) {
        assert_untouched(&bed.p, &ENVS, &before, what);
        assert!(!readyz(svc).0, "ready during {what}");
        std::thread::sleep(Duration::from_millis(200)); // sampling the files, not waiting for a condition
    }
    assert_eq!(metric(svc, "cfgsync_env_ready{env=\"a\"}"), 0.0);
    assert_eq!(metric(svc, "cfgsync_leader{env=\"a\"}"), 0.0);
}

#[test]
fn service_etcd_stopped_mid_pass_hung_and_restarted() {
    let mut bed = SourceBed::new("1s");
    // env a's app.env check kills etcd when the test asks: mid-pass, after
    // the read and before the write.
    let config = bed.p.read("cfgsync.toml").replace(
        "path = \"out/{{ env }}/app.env\"",
        "path = \"out/{{ env }}/app.env\"\ncheck_cmd = \"if [ -e kill-etcd ]; then kill -9 $(cat kill-etcd); rm kill-etcd; fi\"",
    );
    bed.p.write("cfgsync.toml", &config);
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(CONVERGE);
    wait_version(&bed, &ENVS, 1, "start");

    // Stopped mid-pass: the pass that read version 2 finishes writing it.
    bed.p.write("kill-etcd", &bed.etcd.pid().unwrap().to_string());
    put_hosts(&bed, &["a"], 2);
    wait_until("the check to kill etcd", CONVERGE, || (!bed.etcd.is_running()).then_some(()));
    let host = format!("HOST={}\n", SourceBed::host("a", 2));
    wait_until("the pass in flight to finish its writes", CONVERGE, || {
        (bed.p.read("out/a/web.env") == host && bed.p.read("out/a/app.env").starts_with(&host)).then_some(())
    });
    etcd_outage(&svc, &mut bed, 2, "etcd stopped");
    bed.etcd.restart();
    svc.wait_ready(CONVERGE);
    put_hosts(&bed, &ENVS, 2);
    wait_version(&bed, &ENVS, 2, "after etcd restarted");

    // Hung (SIGSTOP) far past the timeout.
    bed.frozen = Some(bed.etcd.freeze());
    etcd_outage(&svc, &mut bed, 3, "etcd hung");
    bed.frozen = None;
    svc.wait_ready(CONVERGE);
    put_hosts(&bed, &ENVS, 3);
    wait_version(&bed, &ENVS, 3, "after etcd thawed");

    // Restarted between passes (its tokens and watches gone): converges.
    bed.etcd.restart();
    bed.seed_secrets(4);
    put_hosts(&bed, &ENVS, 4);
    wait_version(&bed, &ENVS, 4, "after a restart");
    svc.wait_ready(CONVERGE);
    assert!(metric(&svc, "cfgsync_env_ready{env=\"a\"}") == 1.0);
    assert!(!svc.log().contains(CANARY));
}

#[test]
fn service_etcd_permission_denied_on_one_prefix() {
    let bed = SourceBed::new("2s");
    bed.etcd.enable_auth_with_reader(
        "rootpw",
        "svc",
        "svcpw",
        &["/cfgsync/a/", "/cfgsync/b/", "/cfgsync/plain/", "/cfgsync/_service/", "/cfgsync/_state/"],
    );
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[("ETCDCTL_USER", "svc:svcpw")]);
    svc.wait_ready(CONVERGE);
    wait_version(&bed, &ENVS, 1, "start");

    bed.etcd.ctl_ok(&["role", "revoke-permission", "svc", "--prefix=true", "--", "/cfgsync/b/"]);
    let errors = metric(&svc, "cfgsync_source_errors_total{source=\"etcd\"}");
    let before = snapshot(&bed.p, &["b"]);
    bed.seed_secrets(2);
    let seen = passes(&svc, "b");
    put_hosts(&bed, &ENVS, 2);
    let body = wait_failing(&svc, "b", "etcd_denied");
    assert_eq!(body["envs"]["b"]["state"], "failing", "{body}");
    wait_version(&bed, &["a", "plain"], 2, "the readable envs");
    wait_pass_after(&svc, "b", seen);
    assert_untouched(&bed.p, &["b"], &before, "a denied prefix");
    let (_, body) = readyz(&svc);
    assert_eq!(body["envs"]["a"]["state"], "ok", "{body}");
    assert!(metric(&svc, "cfgsync_source_errors_total{source=\"etcd\"}") > errors);
    assert_eq!(metric(&svc, "cfgsync_env_ready{env=\"b\"}"), 0.0);
    assert_eq!(metric(&svc, "cfgsync_env_ready{env=\"a\"}"), 1.0);

    bed.etcd.ctl_ok(&["role", "grant-permission", "svc", "--prefix=true", "readwrite", "--", "/cfgsync/b/"]);
    wait_version(&bed, &["b"], 2, "after the grant");
    svc.wait_ready(CONVERGE);
    assert!(!svc.log().contains(CANARY) && !svc.log().contains("svcpw"));
}

// ---------------------------------------------------------------------------
// OpenBao
// ---------------------------------------------------------------------------

/// A Vault fault, as the service sees it: the etcd side moves to
/// `version` under it; env `plain` converges, the secret envs keep their
/// files and fail with `code`.
fn vault_fault(svc: &Service, bed: &SourceBed, version: u32, code: &str, blocked: &[&str]) {
    let errors = metric(svc, "cfgsync_source_errors_total{source=\"vault\"}");
    let before = snapshot(&bed.p, blocked);
    let seen: Vec<f64> = blocked.iter().map(|e| passes(svc, e)).collect();
    put_hosts(bed, &ENVS, version);
    let converging: Vec<&str> = ENVS.iter().copied().filter(|e| !blocked.contains(e)).collect();
    wait_until(&format!("{converging:?} to converge under {code}"), CONVERGE, || {
        converging
            .iter()
            .all(|e| bed.p.read(&format!("out/{e}/web.env")) == format!("HOST={}\n", SourceBed::host(e, version)))
            .then_some(())
    });
    for (env, seen) in blocked.iter().zip(seen) {
        wait_pass_after(svc, env, seen);
        wait_failing(svc, env, code);
    }
    assert_untouched(&bed.p, blocked, &before, code);
    assert!(metric(svc, "cfgsync_source_errors_total{source=\"vault\"}") > errors, "vault errors counted");
    for env in blocked {
        assert_eq!(metric(svc, &format!("cfgsync_env_ready{{env=\"{env}\"}}")), 0.0);
    }
    assert_eq!(metric(svc, "cfgsync_env_ready{env=\"plain\"}"), 1.0);
}

/// After a Vault fault cleared, the secrets move to `version` as well
/// (Vault has no watch: a put of the keys makes the passes that read them):
/// every env converges, the service is ready.
fn vault_recovered(svc: &Service, bed: &SourceBed, version: u32) {
    bed.seed_secrets(version);
    put_hosts(bed, &ENVS, version);
    wait_version(bed, &ENVS, version, "after the fault cleared");
    svc.wait_ready(CONVERGE);
}

#[test]
fn service_vault_sealed_stopped_and_hung() {
    let mut bed = SourceBed::new("1s");
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(CONVERGE);
    wait_version(&bed, &ENVS, 1, "start");

    bed.vault.seal();
    vault_fault(&svc, &bed, 2, "vault_read_failed", &SECRET_ENVS);
    bed.vault.unseal();
    vault_recovered(&svc, &bed, 2);

    bed.vault.stop();
    vault_fault(&svc, &bed, 3, "vault_read_failed", &SECRET_ENVS);
    bed.vault.restart();
    vault_recovered(&svc, &bed, 3);

    bed.frozen = Some(bed.vault.freeze());
    vault_fault(&svc, &bed, 4, "vault_read_failed", &SECRET_ENVS);
    bed.frozen = None;
    vault_recovered(&svc, &bed, 4);
    assert!(!svc.log().contains(CANARY));
}

fn write_policy(vault: &Vault, hcl: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.hcl");
    std::fs::write(&file, hcl).unwrap();
    vault.bao_ok(&["policy", "write", "reader", file.to_str().unwrap()]);
}

#[test]
fn service_vault_403_on_one_path_and_a_revoked_token() {
    let bed = SourceBed::new("2s");
    let token = bed.vault.token_with_policy("reader", READ_ALL, "1h");
    bed.p.write("vault-token", &token);
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(CONVERGE);
    wait_version(&bed, &ENVS, 1, "start");

    // 403 on env b's path only.
    write_policy(&bed.vault, "path \"secret/data/a/*\" { capabilities = [\"read\"] }");
    vault_fault(&svc, &bed, 2, "vault_denied", &["b"]);
    assert!(bed.p.read("out/a/app.env").starts_with(&format!("HOST={}\n", SourceBed::host("a", 2))), "env a converged");
    write_policy(&bed.vault, READ_ALL);
    vault_recovered(&svc, &bed, 2);

    // The token revoked; an agent writes a new one to the token file.
    bed.vault.revoke(&token);
    vault_fault(&svc, &bed, 3, "vault_denied", &SECRET_ENVS);
    let fresh = bed.vault.token_with_policy("reader", READ_ALL, "1h");
    bed.p.write("vault-token", &fresh);
    vault_recovered(&svc, &bed, 3);
    let log = svc.log();
    assert!(!log.contains(CANARY) && !log.contains(&token) && !log.contains(&fresh));
    // Vault's multi-error text ("1 error occurred:\n\t* permission denied")
    // does not split a log record into several lines.
    let stray: Vec<&str> = log.lines().filter(|l| !l.starts_with(|c: char| c.is_ascii_digit())).collect();
    assert!(stray.is_empty(), "every log record on one line: {stray:?}");
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

fn kube_fault(svc: &Service, bed: &KubeBed, version: u32, code: &str) {
    let before = bed.objects("prod");
    let errors = metric(svc, "cfgsync_target_writes_total{kind=\"kubernetes-secret\",result=\"error\"}");
    bed.seed(version);
    wait_until("staging to converge", CONVERGE, || bed.at("staging", version).then_some(()));
    let body = wait_until(&format!("/readyz: prod's Secret failing with {code}"), CONVERGE, || {
        let (ready, body) = readyz(svc);
        (!ready && body["envs"]["prod"]["targets"]["prod/api/0"]["code"] == code).then_some(body)
    });
    assert_eq!(body["envs"]["staging"]["state"], "ok", "{body}");
    assert_eq!(bed.objects("prod").0, before.0, "prod's Secret untouched");
    assert!(metric(svc, "cfgsync_target_writes_total{kind=\"kubernetes-secret\",result=\"error\"}") > errors);
}

fn kube_recovered(svc: &Service, bed: &KubeBed, version: u32) {
    wait_until("prod to converge after the fault", CONVERGE, || bed.at("prod", version).then_some(()));
    svc.wait_ready(CONVERGE);
}

#[test]
fn service_kube_500s_409s_and_dropped_connections() {
    let bed = KubeBed::new();
    let proxy = FaultProxy::start(bed.prod.addr());
    let kubeconfig =
        Emulator::merged_kubeconfig_yaml(&[&bed.staging, &bed.prod]).replace(&bed.prod.url(), &proxy.url());
    bed.p.write("kubeconfig", &kubeconfig);
    bed.seed(1);
    let svc = Service::start(&bed.p, &[], &[]);
    svc.wait_ready(CONVERGE);
    assert!(bed.at("staging", 1) && bed.at("prod", 1));

    bed.prod.set_fault_on(&Verb::WRITES, Fault::Errors { count: 1000 });
    kube_fault(&svc, &bed, 2, "kube_apply_failed");
    bed.prod.clear_fault();
    kube_recovered(&svc, &bed, 2);

    // Conflicts on the Secret only, three times: the ConfigMap converges
    // at once, the Secret on a retry.
    proxy.inject(Inject::kube_conflict("PATCH", "secrets", "api", 3));
    kube_fault(&svc, &bed, 3, "write_conflict");
    assert!(bed.configmap_at("prod", 3), "prod's ConfigMap converged beside the conflict");
    kube_recovered(&svc, &bed, 3);
    assert_eq!(proxy.remaining(), 0);

    // The cluster drops every connection, the watches' too: the passes
    // no longer read the watches' stores and LIST, which fails.
    bed.prod.set_fault(Fault::DropConnections { count: 100_000 });
    bed.prod.close_watches();
    wait_until("the watches down", CONVERGE, || {
        (metric(&svc, "cfgsync_watch_up{env=\"prod\",kind=\"kubernetes\"}") == 0.0).then_some(())
    });
    kube_fault(&svc, &bed, 4, "kube_list_failed");
    bed.prod.clear_fault();
    kube_recovered(&svc, &bed, 4);
    assert!(!svc.log().contains(CANARY));
}

// ---------------------------------------------------------------------------
// Local disk
// ---------------------------------------------------------------------------

fn disk_config() -> String {
    format!("interval = \"1h\"\n\n[service]\ndebounce = \"20ms\"\n\n{}", crate::faults::DISK_CONFIG)
}

fn disk_fault(svc: &Service, p: &Project, version: u32, code: &str) {
    let before: Vec<FileState> = env_files(p, "prod").into_iter().filter(|f| !f.0.ends_with("filler")).collect();
    let errors = metric(svc, "cfgsync_target_writes_total{kind=\"file\",result=\"error\"}");
    disk_seed(p, version);
    wait_until("staging to converge", CONVERGE, || {
        (crate::faults::read(p, "out/staging/app.env") == Some(disk_expected("staging", version))).then_some(())
    });
    let body = wait_until(&format!("/readyz: prod failing with {code}"), CONVERGE, || {
        let (ready, body) = readyz(svc);
        (!ready && body["envs"]["prod"]["targets"]["prod/app/0"]["code"] == code).then_some(body)
    });
    assert_eq!(body["envs"]["staging"]["state"], "ok", "{body}");
    let now: Vec<FileState> = env_files(p, "prod").into_iter().filter(|f| !f.0.ends_with("filler")).collect();
    assert_same_files(&now, &before, "prod's file under a disk fault");
    assert!(temp_files(&p.path("out")).is_empty(), "no temp files: {:?}", temp_files(&p.path("out")));
    assert!(metric(svc, "cfgsync_target_writes_total{kind=\"file\",result=\"error\"}") > errors);
}

fn disk_recovered(svc: &Service, p: &Project, version: u32) {
    wait_until("prod to converge after the fault", CONVERGE, || {
        (crate::faults::read(p, "out/prod/app.env") == Some(disk_expected("prod", version))).then_some(())
    });
    svc.wait_ready(CONVERGE);
}

#[test]
fn service_unwritable_directory_and_full_disk() {
    let p = Project::new(&disk_config());
    std::fs::create_dir_all(p.path("out/prod")).unwrap();
    let disk = Tmpfs::mount(&p.path("out/prod"), 64 * 1024);
    disk_seed(&p, 1);
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(CONVERGE);

    let locked = Unwritable::new(&p.path("out/prod"));
    disk_fault(&svc, &p, 2, "write_failed");
    drop(locked);
    disk_recovered(&svc, &p, 2);

    let filler = disk.fill();
    disk_fault(&svc, &p, 3, "write_failed");
    std::fs::remove_file(filler).unwrap();
    disk_recovered(&svc, &p, 3);
    assert!(!svc.log().contains(CANARY));
}
