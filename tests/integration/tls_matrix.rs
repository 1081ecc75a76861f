//! Least privilege, proven: etcd with auth over mutual TLS (each identity
//! is a certificate CN) and OpenBao over TLS, with the roles of the shipped
//! `policies/` applied by `cfgsync policy apply`. Each role (`reconciler`
//! per env, `developer`) × env × (etcd key, Vault secret) × (read, write)
//! is allowed or denied exactly as `policies/` says — at the backend
//! (etcdctl and bao as that identity) and through cfgsync (`whoami`, which
//! asks the servers; `reconcile --once`, `pull` and `diff`, where a denied
//! read fails closed and writes nothing). And `policy plan` says what
//! `apply` would change: exit 0 nothing, 1 changes.

use crate::support::pki::{CertFiles, Pki, Validity};
use crate::support::servers::{EtcdTls, VaultTls};
use crate::support::{Etcd, Project, Run, Vault};

const CANARY: &str = "CANARY-4b9a-matrix";
const ENVS: [&str; 2] = ["staging", "prod"];

fn policies_dir() -> String {
    format!("{}/policies", env!("CARGO_MANIFEST_DIR"))
}

/// The matrix `policies/` describes: may `role` (read, write) `what` of `env`?
fn expected(role: &str, env: &str, what: &str) -> (bool, bool) {
    match (role, what) {
        ("developer", "etcd") => (true, false),
        ("developer", "vault") => (env == "staging", false),
        (reconciler, _) => (reconciler == format!("reconciler-{env}"), false),
    }
}

struct Estate {
    pki: Pki,
    etcd: Etcd,
    vault: Vault,
}

fn config(estate: &Estate, client: &CertFiles) -> String {
    format!(
        r#"[etcd]
endpoints = ["{}"]
timeout = "3s"
ca_file = {:?}
cert_file = {:?}
key_file = {:?}

[vault]
address = "{}"
timeout = "3s"
ca_file = {:?}
auth = {{ method = "token", token_file = "vault-token" }}

[envs.staging]
[envs.prod]

[[output]]
name = "app"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}:{{{{ secret(path='api/db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"
"#,
        estate.etcd.endpoint,
        estate.pki.ca_file.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
        estate.vault.tls_addr.as_ref().unwrap(),
        estate.pki.ca_file.display().to_string(),
    )
}

fn project(estate: &Estate, client: &CertFiles, token: &str) -> Project {
    let p = Project::new(&config(estate, client));
    p.write("vault-token", token);
    p
}

fn run(p: &Project, args: &[&str]) -> Run {
    p.run(args)
}

#[test]
fn the_shipped_roles_allow_and_deny_exactly_what_policies_say_at_the_backend_and_through_cfgsync() {
    let pki = Pki::new("estate");
    let etcd = Etcd::start_tls(EtcdTls {
        trusted_ca: pki.ca_file.clone(),
        server: pki.server("etcd", &[], Validity::Current),
        client_cert_auth: true,
        ctl_ca: pki.ca_file.clone(),
        ctl_client: pki.client("etcdctl-root", "root", Validity::Current),
    });
    let vault = Vault::start_tls(VaultTls { server: pki.server("vault", &[], Validity::Current), client_ca: None });
    for env in ENVS {
        etcd.put(&format!("/cfgsync/{env}/db_host"), &format!("db.{env}.internal"));
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("{CANARY}-{env}"))]);
    }
    etcd.enable_auth_with_reader("rootpw", "nobody", "nobodypw", &[]);
    let estate = Estate { pki, etcd, vault };

    // policy plan before anything exists: every role is a change (exit 1).
    let root_cert = estate.pki.client("root", "root", Validity::Current);
    let admin = project(&estate, &root_cert, &estate.vault.root_token);
    let r = run(&admin, &["policy", "plan", "--dir", &policies_dir()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("etcd role cfgsync-developer: create, grant read /cfgsync/staging/*"), "{r:?}");
    assert!(r.stdout.contains("vault policy cfgsync-reconciler-prod: create\n"), "{r:?}");
    assert!(r.stdout.ends_with("change(s): `cfgsync policy apply` makes them\n"), "{r:?}");
    let r = run(&admin, &["policy", "apply", "--dir", &policies_dir()]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&admin, &["policy", "plan", "--dir", &policies_dir()]);
    assert_eq!(r.code, 0, "nothing to change after apply: {r:?}");
    assert!(r.stdout.ends_with("no changes: etcd and Vault agree with the policies\n"), "{r:?}");

    // Drift by hand: plan names it, with the policy lines that differ.
    estate.etcd.ctl_ok(&["role", "revoke-permission", "cfgsync-reconciler-prod", "--prefix=true", "/cfgsync/prod/"]);
    let widened = "path \"secret/data/prod/*\" {\n  capabilities = [\"read\"]\n}\n";
    estate.vault.token_with_policy("cfgsync-developer", widened, "1h");
    let r = run(&admin, &["policy", "plan", "--dir", &policies_dir()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("etcd role cfgsync-reconciler-prod: grant read /cfgsync/prod/*\n"), "{r:?}");
    assert!(
        r.stdout.contains("vault policy cfgsync-developer: update\n    - path \"secret/data/prod/*\" {\n"),
        "{r:?}"
    );
    let r = run(&admin, &["policy", "apply", "--dir", &policies_dir()]);
    assert_eq!(r.code, 0, "{r:?}");

    // The identities: etcd users named like the certificates' CNs, Vault tokens with the policies.
    let mut roles = Vec::new();
    for (role, policy) in [
        ("reconciler-staging", "cfgsync-reconciler-staging"),
        ("reconciler-prod", "cfgsync-reconciler-prod"),
        ("developer", "cfgsync-developer"),
    ] {
        estate.etcd.ctl_ok(&["user", "add", role, "--new-user-password=not-used-with-certificates"]);
        estate.etcd.ctl_ok(&["user", "grant-role", role, policy]);
        let token = estate
            .vault
            .bao_ok(&["token", "create", "-orphan", &format!("-policy={policy}"), "-field=token"])
            .trim()
            .to_owned();
        roles.push((role, estate.pki.client(role, role, Validity::Current), token));
    }

    let mut cells = 0;
    for (role, cert, token) in &roles {
        let p = project(&estate, cert, token);
        // whoami: what cfgsync asks of the servers.
        let r = run(&p, &["--output", "json", "whoami"]);
        assert_eq!(r.code, 0, "{r:?}");
        let who: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(who["etcd"]["identity"], serde_json::json!({"by": "certificate", "name": role}), "{who}");
        let policy = format!("cfgsync-{role}");
        assert!(who["vault"]["policies"].as_array().unwrap().contains(&serde_json::json!(policy)), "{who}");

        for env in ENVS {
            let access: Vec<&serde_json::Value> =
                who["envs"].as_array().unwrap().iter().find(|e| e["env"] == env).unwrap()["access"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .collect();
            let cell = |source: &str, path: &str| {
                let a = access
                    .iter()
                    .find(|a| a["source"] == source && a["path"] == path)
                    .unwrap_or_else(|| panic!("{path} in {who}"));
                (a["read"].as_bool().unwrap(), a["write"].as_bool().unwrap())
            };
            // etcd key: at the backend, as the certificate's user ...
            let key = format!("/cfgsync/{env}/db_host");
            let read = estate.etcd.ctl_as(cert, &["get", &key]).status.success();
            let write = estate.etcd.ctl_as(cert, &["put", &format!("/cfgsync/{env}/probe"), "x"]).status.success();
            assert_eq!((read, write), expected(role, env, "etcd"), "{role} × {env} × etcd key at the backend");
            // ... and through cfgsync.
            assert_eq!(
                cell("etcd", &format!("/cfgsync/{env}/")),
                expected(role, env, "etcd"),
                "{role} × {env} × etcd via whoami"
            );
            // The env's history: its reconciler records passes, developers read them.
            let history = match *role {
                "developer" => (true, false),
                r if r == format!("reconciler-{env}") => (true, true),
                _ => (false, false),
            };
            assert_eq!(
                cell("etcd", &format!("/cfgsync/_history/{env}/")),
                history,
                "{role} × {env} × history via whoami"
            );
            // The env's secret markers: its reconciler reads (watches)
            // them; no shipped role writes them (an admin's set-secret,
            // import and rollback do) ...
            let markers = format!("/cfgsync/_secret-versions/{env}/");
            let expected_markers = (*role == format!("reconciler-{env}"), false);
            let read = estate.etcd.ctl_as(cert, &["get", &format!("{markers}db")]).status.success();
            let write = estate.etcd.ctl_as(cert, &["put", &format!("{markers}db"), "1"]).status.success();
            assert_eq!((read, write), expected_markers, "{role} × {env} × secret markers at the backend");
            // ... and through cfgsync.
            assert_eq!(cell("etcd", &markers), expected_markers, "{role} × {env} × secret markers via whoami");
            // Vault secret: at the backend, with the role's token ...
            let read =
                estate.vault.bao(token, &["kv", "get", "-mount=secret", &format!("{env}/api/db")]).status.success();
            let write = estate
                .vault
                .bao(token, &["kv", "put", "-mount=secret", &format!("{env}/api/probe"), "x=y"])
                .status
                .success();
            assert_eq!((read, write), expected(role, env, "vault"), "{role} × {env} × vault secret at the backend");
            // ... and through cfgsync.
            assert_eq!(
                cell("vault", &format!("secret/data/{env}/api/db")),
                expected(role, env, "vault"),
                "{role} × {env} × vault via whoami"
            );
            cells += 6;

            // The commands: a denied read fails closed and writes nothing.
            let out = p.path(&format!("out/{env}/app.env"));
            let (etcd_read, _) = expected(role, env, "etcd");
            let (vault_read, _) = expected(role, env, "vault");
            let command: &[&str] = if role.starts_with("reconciler") {
                &["reconcile", "--once", "--env", env]
            } else {
                &["pull", "--env", env]
            };
            let r = run(&p, command);
            if etcd_read && vault_read {
                assert_eq!(r.code, 0, "{role} {command:?}: {r:?}");
                assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("DB=db.{env}.internal:{CANARY}-{env}\n"));
            } else {
                assert_ne!(r.code, 0, "{role} {command:?}: {r:?}");
                assert!(
                    r.stderr.contains("permission denied") || r.all().contains("no access"),
                    "{role} {command:?}: {r:?}"
                );
                assert!(!out.exists(), "{role} {command:?} wrote nothing: {r:?}");
                assert!(!r.all().contains(CANARY), "{r:?}");
            }
        }
        // diff as the role: the developer sees both envs' keys, prod's secrets as no access.
        if *role == "developer" {
            let r = run(&p, &["diff", "staging", "prod"]);
            assert_eq!(r.code, 2, "partial: {r:?}");
            assert!(r.stdout.contains("~ api/db") || r.all().contains("no access"), "{r:?}");
            assert!(!r.all().contains(CANARY), "{r:?}");
        }
    }
    assert_eq!(cells, 3 * 2 * 6, "every cell of the matrix was checked");
    // Whoever runs set-secret (here the admin) may write the markers, and whoami says so.
    let r = run(&admin, &["--output", "json", "whoami", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    let who: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let markers = who["envs"][0]["access"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "/cfgsync/_secret-versions/prod/")
        .unwrap_or_else(|| panic!("the markers' prefix in {who}"));
    assert_eq!((&markers["read"], &markers["write"]), (&serde_json::json!(true), &serde_json::json!(true)), "{who}");
}
