//! The shipped `policies/` run the service: etcd with auth enabled, roles
//! made by `cfgsync policy apply`, and `cfgsync run` with nothing but the
//! shipped reconciler roles. A staging reconciler cannot touch prod. And
//! `policy apply` provisions each env's fingerprint key exactly once.

use std::time::Duration;

use crate::service::{Service, read_or_empty};
use crate::support::{Etcd, Project, Run, Vault, wait_until};

const CANARY: &str = "CANARY-61c0-roles";

fn policies_dir() -> String {
    format!("{}/policies", env!("CARGO_MANIFEST_DIR"))
}

fn config(etcd: &Etcd, vault: &Vault) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[vault]
address = "{}"
auth = {{ method = "token", token_file = "vault-token" }}

[service]
debounce = "20ms"
[service.election]
ttl = "3s"

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}:{{{{ secret(path='api/db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/api.env"
"#,
        etcd.endpoint, vault.addr
    )
}

fn run_as(p: &Project, etcd_user: &str, args: &[&str]) -> Run {
    crate::support::run_output(p.command(args).env("ETCDCTL_USER", etcd_user).output().unwrap())
}

fn token(vault: &Vault, policies: &[&str]) -> String {
    let mut args = vec!["token", "create", "-orphan", "-field=token"];
    let flags: Vec<String> = policies.iter().map(|p| format!("-policy={p}")).collect();
    args.extend(flags.iter().map(String::as_str));
    vault.bao_ok(&args).trim().to_owned()
}

#[test]
fn the_shipped_reconciler_roles_run_the_service_and_staging_cannot_touch_prod() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    for env in ["staging", "prod"] {
        etcd.put(&format!("/cfgsync/{env}/db_host"), &format!("db.{env}"));
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("{CANARY}-{env}"))]);
    }
    // Auth on; the only other user has no permission at all.
    etcd.enable_auth_with_reader("rootpw", "nobody", "nobodypw", &[]);
    let p = Project::new(&config(&etcd, &vault));
    p.write("vault-token", &vault.root_token);

    let dir = policies_dir();
    let r = run_as(&p, "root:rootpw", &["policy", "apply", "--dir", &dir]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("etcd role cfgsync-reconciler-prod: create, grant read /cfgsync/prod/*, grant read /cfgsync/_secret-versions/prod/*, grant readwrite /cfgsync/_service/members/*, grant readwrite /cfgsync/_service/envs/prod/*, grant readwrite /cfgsync/_state/prod/*, grant readwrite /cfgsync/_history/prod/*\n"), "{r:?}");

    etcd.ctl_ok(&["user", "add", "reconciler", "--new-user-password=recpw"]);
    for env in ["staging", "prod"] {
        etcd.ctl_ok(&["user", "grant-role", "reconciler", &format!("cfgsync-reconciler-{env}")]);
    }
    p.write("vault-token", &token(&vault, &["cfgsync-reconciler-staging", "cfgsync-reconciler-prod"]));

    let svc = Service::start(&p, &["--replica-id", "R1"], &[("ETCDCTL_USER", "reconciler:recpw")]);
    let body = svc.wait_ready(Duration::from_secs(30));
    for env in ["staging", "prod"] {
        assert_eq!(body["envs"][env]["role"], "leader", "{body}");
        assert_eq!(p.read(&format!("out/{env}/api.env")), format!("DB=db.{env}:{CANARY}-{env}\n"));
        assert_eq!(svc.metric(&format!("cfgsync_leader{{env=\"{env}\"}}")), Some(1.0));
        assert_eq!(svc.metric(&format!("cfgsync_env_led{{env=\"{env}\"}}")), Some(1.0));
        // The record the leader published, read as root.
        let status = etcd.ctl_ok(&["get", "--print-value-only", &format!("/cfgsync/_service/envs/{env}/status")]);
        let record: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
        assert_eq!((record["leader"].as_str(), record["ok"].as_bool()), (Some("R1"), Some(true)), "{record}");
        assert!(!status.contains(CANARY));
        // And the pass it recorded in the env's history (the role allows it).
        let history = etcd.ctl_ok(&["get", "--prefix", "--print-value-only", &format!("/cfgsync/_history/{env}/")]);
        assert!(history.contains("\"replica\":\"R1\""), "{history}");
    }
    // It follows a change with those roles only.
    etcd.put("/cfgsync/prod/db_host", "db2.prod");
    wait_until("the change", Duration::from_secs(10), || {
        read_or_empty(&p.path("out/prod/api.env")).contains("db2.prod").then_some(())
    });
    drop(svc);

    // A reconciler of staging only.
    etcd.ctl_ok(&["user", "add", "stagingbot", "--new-user-password=stagingpw"]);
    etcd.ctl_ok(&["user", "grant-role", "stagingbot", "cfgsync-reconciler-staging"]);
    p.write("vault-token", &token(&vault, &["cfgsync-reconciler-staging"]));
    etcd.put("/cfgsync/prod/db_host", "db3.prod");
    let before = p.read("out/prod/api.env");

    let r = run_as(&p, "stagingbot:stagingpw", &["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("permission denied"), "{r:?}");
    assert_eq!(p.read("out/prod/api.env"), before, "nothing written for prod");
    let r = run_as(&p, "stagingbot:stagingpw", &["reconcile", "--once", "--env", "staging"]);
    assert_eq!(r.code, 0, "its own env works: {r:?}");

    // As a service configured for both envs, it cannot lead prod: not
    // ready, nobody leads, nothing written.
    let svc = Service::start(&p, &["--replica-id", "S1"], &[("ETCDCTL_USER", "stagingbot:stagingpw")]);
    let body = wait_until("/readyz to say etcd denies", Duration::from_secs(20), || {
        let (ready, body) = svc.readyz();
        (!ready && body["envs"]["prod"]["code"] == "etcd_denied").then_some(body)
    });
    assert_eq!(body["envs"]["prod"]["state"], "no_leader", "{body}");
    assert_eq!(svc.metric("cfgsync_leader{env=\"prod\"}"), Some(0.0));
    assert_eq!(svc.metric("cfgsync_env_led{env=\"prod\"}"), Some(0.0));
    assert_eq!(p.read("out/prod/api.env"), before);
    assert!(!svc.log().contains(CANARY) && !svc.log().contains("stagingpw"));
}

fn kv_get(vault: &Vault, path: &str) -> Option<(String, u64)> {
    let out = vault.bao(&vault.root_token, &["kv", "get", "-format=json", "-mount=secret", path]);
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let value = json["data"]["data"]["key"].as_str()?.to_owned();
    Some((value, json["data"]["metadata"]["version"].as_u64().unwrap()))
}

#[test]
fn policy_apply_creates_each_fingerprint_key_once_and_never_overwrites_one() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    let p = Project::new(&format!(
        "[etcd]\nendpoints = [\"{}\"]\n\n[vault]\naddress = \"{}\"\n\n[envs.staging]\n[envs.prod]\n\n[[output]]\nname = \"o\"\n[output.entries]\nX = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}.env\"\n",
        etcd.endpoint, vault.addr
    ))
    .with_env("VAULT_TOKEN", &vault.root_token);
    let dir = policies_dir();

    let r = p.run(&["policy", "apply", "--dir", &dir, "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(
            "vault fingerprint key secret/prod/cfgsync/fingerprint#key: create (random 32 bytes)\n\
             vault fingerprint key secret/staging/cfgsync/fingerprint#key: create (random 32 bytes)\n"
        ),
        "{r:?}"
    );
    assert!(r.stdout.ends_with("dry run: nothing changed\n"), "{r:?}");
    assert_eq!(kv_get(&vault, "prod/cfgsync/fingerprint"), None, "a dry run writes nothing");

    // An operator's own staging key is kept.
    vault.kv_put("staging/cfgsync/fingerprint", &[("key", "operator-chosen-key")]);
    let r = p.run(&["policy", "apply", "--dir", &dir]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("vault fingerprint key secret/prod/cfgsync/fingerprint#key: create (random 32 bytes)\n"));
    assert!(r.stdout.contains("vault fingerprint key secret/staging/cfgsync/fingerprint#key: unchanged\n"));
    let (prod_key, version) = kv_get(&vault, "prod/cfgsync/fingerprint").expect("created");
    assert_eq!(version, 1);
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(&prod_key).unwrap();
    assert_eq!(bytes.len(), 32);
    assert!(!r.all().contains(&prod_key), "the key is never printed");
    assert_eq!(kv_get(&vault, "staging/cfgsync/fingerprint"), Some(("operator-chosen-key".to_owned(), 1)));

    // Again: nothing changes, same value, same version.
    let r = p.run(&["--output", "json", "policy", "apply", "--dir", &dir]);
    assert_eq!(r.code, 0, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let changes: Vec<&str> =
        json["fingerprint_keys"].as_array().unwrap().iter().map(|k| k["change"].as_str().unwrap()).collect();
    assert_eq!(changes, ["unchanged", "unchanged"], "{json}");
    assert!(json["roles"].as_array().unwrap().iter().all(|r| r["vault"] == "unchanged"), "{json}");
    assert_eq!(kv_get(&vault, "prod/cfgsync/fingerprint"), Some((prod_key, 1)));
}
