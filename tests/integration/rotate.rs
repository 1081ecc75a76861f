//! `cfgsync rotate verify` against real etcd and OpenBao and a Kubernetes
//! emulator: one target kept on the old version by an injected fault (its
//! namespace refuses writes) is named with the version it holds and why;
//! exit 0 once every target holds the new one. Without a service the pass
//! runs here; with `cfgsync run` leading the env, the service is asked.

use std::time::Duration;

use base64::Engine;
use kube_emulator::{Emulator, Kind, Verb};
use serde_json::Value;

use crate::service::Service;
use crate::support::{Etcd, Project, Run, Vault, server_config, wait_until};

const CANARY: &str = "CANARY-2c9a-rotate";

const OUTPUTS: &str = r#"
[kubernetes]
kubeconfig = "kubeconfig"
fingerprint_key = "cfgsync/fingerprint#key"

[service]
debounce = "20ms"

[envs.prod]

[[output]]
name = "api"
[output.entries]
DB_PASSWORD = "{{ secret(path='api/db', field='password') }}"
DB_HOST = "{{ key(name='api/db_host') }}"
[[output.target]]
kind = "kubernetes-secret"
context = "prod"
namespace = "api"
name = "api"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"

[[output]]
name = "web"
[output.entries]
HOST = "{{ key(name='api/db_host') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/web.env"
"#;

fn bed() -> (Etcd, Vault, Emulator, Project) {
    let etcd = Etcd::start();
    let vault = Vault::start();
    etcd.put("/cfgsync/prod/api/db_host", "db1.prod.internal");
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-1"))]);
    vault.kv_put("prod/cfgsync/fingerprint", &[("key", "fingerprint-key-prod")]);
    let kube = Emulator::start("prod");
    kube.create_namespace("api");
    let p = Project::new(&format!(
        "instance = \"rotate-test\"\ninterval = \"1h\"\n{}",
        server_config(&etcd, &vault, OUTPUTS)
    ));
    p.write("vault-token", &vault.root_token);
    p.write("kubeconfig", &kube.kubeconfig_yaml());
    (etcd, vault, kube, p)
}

fn verify(p: &Project, wait: &str) -> Run {
    let run = p.run(&["rotate", "verify", "--env", "prod", "--secret", "api/db#password", "--wait", wait]);
    assert!(!run.all().contains(CANARY), "a secret value leaked: {run:?}");
    run
}

fn refuse_writes(kube: &Emulator) {
    kube.forbid(Some("api"), &[Verb::Create, Verb::Apply, Verb::Update, Verb::Patch]);
}

#[test]
fn a_target_kept_on_the_old_version_is_named_with_why_until_it_holds_the_new_one() {
    let (etcd, vault, kube, p) = bed();
    let first = p.run(&["reconcile", "--once"]);
    assert_eq!(first.code, 0, "{first:?}");
    // Before any rotation: everything holds version 1.
    let run = verify(&p, "1s");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("2 of 2 verifiable targets hold version 1\n"), "{run:?}");

    // The rotation; the cluster refuses writes in the namespace.
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-2"))]);
    refuse_writes(&kube);
    let run = verify(&p, "1s");
    assert_eq!(run.code, 1, "{run:?}");
    for line in [
        "secret/prod/api/db#password: version 2 (written ",
        "pass: no service leads env prod: ran a pass here (",
        "  ✓ prod/api/1  file  out/prod/api.env: version 2\n",
        "  ✗ prod/api/0  kubernetes-secret  Secret api/api in context prod: version 1: failed (kube_apply_failed) in the pass just run\n",
        "1 of 2 verifiable targets hold version 2\n",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in {run:?}");
    }
    assert!(!run.stdout.contains("web"), "an output that does not read the secret is not listed: {run:?}");
    let json = p.run(&["rotate", "verify", "--env", "prod", "--secret", "api/db#password", "--output", "json"]);
    assert_eq!(json.code, 1, "{json:?}");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["targets"][0]["standing"], "old", "{v}");
    assert_eq!(v["targets"][0]["version"], 1, "{v}");
    assert_eq!(v["targets"][0]["by"], "read", "{v}");
    assert_eq!((v["verified"].as_u64(), v["verifiable"].as_u64()), (Some(1), Some(2)), "{v}");

    kube.clear_access();
    let run = verify(&p, "1s");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("2 of 2 verifiable targets hold version 2\n"), "{run:?}");

    // A hand edit (that cfgsync cannot revert now) is neither version.
    refuse_writes(&kube);
    let mut secret = kube.get_object(Kind::Secret, "api", "api").unwrap();
    secret["data"]["DB_PASSWORD"] = Value::from(base64::engine::general_purpose::STANDARD.encode("by-hand"));
    kube.put_object(secret).unwrap();
    let run = verify(&p, "1s");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(
            "  ✗ prod/api/0  kubernetes-secret  Secret api/api in context prod: holds neither the current version nor the last ones: failed (kube_apply_failed) in the pass just run\n"
        ),
        "{run:?}"
    );
    kube.clear_access();
    drop(etcd);
}

#[test]
fn the_running_service_is_asked_for_the_pass() {
    let (etcd, vault, kube, p) = bed();
    let svc = Service::start(&p, &["--replica-id", "r-rotate"], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the service's first pass", Duration::from_secs(10), || {
        std::fs::read_to_string(p.path("out/prod/api.env")).ok().filter(|t| t.contains("DB_HOST"))
    });

    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-2"))]);
    refuse_writes(&kube);
    // The service's interval is 1 h: only the ask makes it pass now.
    let run = verify(&p, "20s");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("pass: asked the service (leader r-rotate); its pass of "), "{run:?}");
    assert!(run.stdout.contains("  ✓ prod/api/1  file  out/prod/api.env: version 2\n"), "{run:?}");
    assert!(
        run.stdout.contains("  ✗ prod/api/0  kubernetes-secret  Secret api/api in context prod: version 1: failing (kube_apply_failed)\n"),
        "{run:?}"
    );

    kube.clear_access();
    let run = verify(&p, "20s");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("2 of 2 verifiable targets hold version 2\n"), "{run:?}");
    // The leader recorded its passes in the history.
    let history = etcd.ctl_ok(&["get", "--prefix", "--print-value-only", "/cfgsync/_history/prod/"]);
    assert!(history.contains("\"replica\":\"r-rotate\""), "{history}");
    assert!(svc.log().contains("a pass was asked for"), "{}", svc.log());
}

/// A new version of the `[fingerprint] key` written through `set-secret`
/// re-keys every keyed target at once, though no template reads that path:
/// its marker passes the whole env, not only the outputs that read it.
#[test]
fn a_marked_fingerprint_key_passes_the_whole_env() {
    let (etcd, _vault, kube, p) = bed();
    let svc = Service::start(&p, &["--replica-id", "r-rotate"], &[]);
    svc.wait_ready(Duration::from_secs(30));
    let fingerprint = || -> Option<String> {
        let secret = kube.get_object(Kind::Secret, "api", "api")?;
        secret["metadata"]["annotations"]["cfgsync.io/fingerprint"].as_str().map(str::to_owned)
    };
    let before = wait_until("the Secret's fingerprint", Duration::from_secs(10), fingerprint);
    let mut child = p
        .command(&["set-secret", "prod", "cfgsync/fingerprint", "key", "--yes"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"fingerprint-key-prod-2\n").unwrap();
    let r = crate::support::run_output(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{r:?}");
    // The interval is 1h: only the marker can bring the new key this soon.
    wait_until("the Secret re-keyed with the new fingerprint key", Duration::from_secs(10), || {
        fingerprint().filter(|f| *f != before)
    });
    drop(etcd);
}
