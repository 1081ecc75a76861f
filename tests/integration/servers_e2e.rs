//! End to end against real etcd and OpenBao, started per test.

use crate::support::{Etcd, Project, Vault, mode, server_config};

const CANARY: &str = "CANARY-77e1-vault-only";

const OUTPUTS: &str = r#"
[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
"app.conf" = { template = "app.conf.tera" }
[[output.target]]
kind = "file"
path = "out/{{ env }}/app.conf"
format = "raw"

[[output]]
name = "flags"
[output.entries]
FLAGS = "{% for k, v in keys(prefix='flags/') %}{{ k }}={{ v }};{% endfor %}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/flags.env"
"#;

const TEMPLATE: &str = "# {{ env }}\nurl = postgres://{{ key(name='api/db_user') }}:{{ secret(path='api/db', field='password') }}@{{ key(name='api/db_host') }}/api\n{% if exists(name='api/debug') %}debug = {{ key(name='api/debug') }}\n{% endif %}pool = {{ key_or(name='api/pool', default='10') }}\n{% for f, v in secrets(path='api/extra') %}{{ f }} = {{ v }}\n{% endfor %}";

fn seed(etcd: &Etcd, vault: &Vault) {
    for env in ["staging", "prod"] {
        etcd.put(&format!("/cfgsync/{env}/api/db_user"), "api");
        etcd.put(&format!("/cfgsync/{env}/api/db_host"), &format!("db.{env}.internal"));
        // Inserted out of order: keys() must iterate sorted.
        for f in ["zeta", "alpha", "mid"] {
            etcd.put(&format!("/cfgsync/{env}/flags/{f}"), &format!("{f}-{env}"));
        }
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("{CANARY}-{env}"))]);
        vault.kv_put(&format!("{env}/api/extra"), &[("b_field", "2"), ("a_field", "1")]);
    }
    etcd.put("/cfgsync/prod/api/debug", "false");
    // Another env's and another prefix's keys must not leak in.
    etcd.put("/cfgsync/prodx/api/db_host", "wrong");
    etcd.put("/other/prod/api/db_host", "wrong");
}

fn project(etcd: &Etcd, vault: &Vault) -> Project {
    let p = Project::new(&server_config(etcd, vault, OUTPUTS));
    p.write("templates/app.conf.tera", TEMPLATE);
    p.write("vault-token", &vault.root_token);
    p
}

#[test]
fn etcd_and_vault_render_byte_for_byte() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        p.read("out/prod/app.conf"),
        format!(
            "# prod\nurl = postgres://api:{CANARY}-prod@db.prod.internal/api\ndebug = false\npool = 10\na_field = 1\nb_field = 2\n"
        )
    );
    assert_eq!(
        p.read("out/staging/app.conf"),
        format!(
            "# staging\nurl = postgres://api:{CANARY}-staging@db.staging.internal/api\npool = 10\na_field = 1\nb_field = 2\n"
        )
    );
    assert_eq!(p.read("out/prod/flags.env"), "FLAGS='alpha=alpha-prod;mid=mid-prod;zeta=zeta-prod;'\n");
    assert_eq!(mode(&p.path("out/prod/app.conf")), 0o600);
    assert_eq!(mode(&p.path("out/prod/flags.env")), 0o644);
    assert!(r.stdout.contains("env prod (etcd revision "), "{r:?}");
    assert!(!r.all().contains(CANARY), "{r:?}");

    // Nothing changed: nothing written.
    let before = p.state();
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.state(), before);

    // A change in etcd reaches only what reads it.
    etcd.put("/cfgsync/prod/flags/alpha", "on");
    let r = p.run(&["plan", "--env", "prod"]);
    assert!(r.stdout.contains("-FLAGS='alpha=alpha-prod;"), "{r:?}");
    assert!(r.stdout.contains("+FLAGS='alpha=on;"), "{r:?}");
    assert!(r.stdout.contains("= api → file"), "{r:?}");
    assert!(!r.all().contains(CANARY), "{r:?}");
}

#[test]
fn canary_never_reaches_output_at_trace_level() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault).with_env("RUST_LOG", "trace");
    for args in [
        &["plan"][..],
        &["reconcile", "--once", "--dry-run"],
        &["reconcile", "--once"],
        &["--log-format", "json", "--output", "json", "plan"],
    ] {
        let r = p.run(args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(r.stderr.contains("snapshot read"), "trace logs are really on: {r:?}");
        assert!(!r.all().contains(CANARY), "{args:?} leaked: {r:?}");
    }
}

#[test]
fn etcd_down_fails_closed() {
    let (mut etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    p.write("cfgsync.toml", &(p.read("cfgsync.toml").replace("[vault]", "timeout = \"2s\"\n\n[vault]")));
    assert_eq!(p.run(&["reconcile", "--once"]).code, 0);
    let before = p.state();
    etcd.stop();
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("error: env prod: etcd: "), "{r:?}");
    assert!(r.stderr.contains("error: env staging: etcd: "), "{r:?}");
    assert_eq!(p.state(), before, "every target byte-identical, same inode");
}

#[test]
fn revoked_vault_token_fails_closed() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let token = vault.token_with_policy("reader", "path \"secret/data/*\" { capabilities = [\"read\"] }", "1h");
    p.write("vault-token", &token);
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = p.state();
    vault.revoke(&token);
    etcd.put("/cfgsync/prod/flags/alpha", "changed-while-vault-is-down");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("error: env prod: vault: permission denied reading secret/prod/api/"), "{r:?}");
    assert_eq!(p.state(), before, "no target of the env changed, not even the untainted one");
}

#[test]
fn vault_policy_denying_one_path_names_it() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let policy = "path \"secret/data/staging/*\" { capabilities = [\"read\"] }\npath \"secret/data/prod/api/extra\" { capabilities = [\"read\"] }";
    p.write("vault-token", &vault.token_with_policy("partial", policy, "1h"));
    let r = p.run(&["pull", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("error: env prod: vault: permission denied reading secret/prod/api/db (HTTP 403"),
        "{r:?}"
    );
    assert!(!p.path("out/prod").exists());
    let r = p.run(&["pull", "--env", "staging"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.path("out/staging/app.conf").exists());
}

#[test]
fn etcd_role_limited_to_staging_can_pull_staging_only() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    etcd.enable_auth_with_reader("rootpw", "dev", "devpw", &["/cfgsync/staging/"]);
    let p = project(&etcd, &vault).with_env("ETCDCTL_USER", "dev:devpw");
    let r = p.run(&["pull", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("error: env prod: etcd: permission denied reading /cfgsync/prod/ as user \"dev\""),
        "{r:?}"
    );
    assert!(!p.path("out").exists(), "nothing written");
    let r = p.run(&["pull", "--env", "staging"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.read("out/staging/flags.env").contains("alpha=alpha-staging"));
    assert!(!p.path("out/prod").exists());

    let p = p.with_env("ETCDCTL_USER", "dev:wrong");
    let r = p.run(&["pull", "--env", "staging"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("etcd: cannot authenticate as user \"dev\""), "{r:?}");
    assert!(!r.all().contains("wrong"), "{r:?}");
}

#[test]
fn approle_login_reads_secrets() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    vault.bao_ok(&["auth", "enable", "approle"]);
    let policy = "path \"secret/data/*\" { capabilities = [\"read\"] }";
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("p.hcl");
    std::fs::write(&policy_file, policy).unwrap();
    vault.bao_ok(&["policy", "write", "cfgsync-reader", policy_file.to_str().unwrap()]);
    vault.bao_ok(&["write", "auth/approle/role/cfgsync", "token_policies=cfgsync-reader", "token_ttl=10m"]);
    let role_id = vault.bao_ok(&["read", "-field=role_id", "auth/approle/role/cfgsync/role-id"]);
    let secret_id = vault.bao_ok(&["write", "-f", "-field=secret_id", "auth/approle/role/cfgsync/secret-id"]);
    let config = server_config(&etcd, &vault, OUTPUTS).replace(
        "auth = { method = \"token\", token_file = \"vault-token\" }",
        &format!("auth = {{ method = \"approle\", role_id = \"{}\", secret_id_file = \"secret-id\" }}", role_id.trim()),
    );
    let p = Project::new(&config);
    p.write("templates/app.conf.tera", TEMPLATE);
    p.write("secret-id", secret_id.trim());
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.read("out/prod/app.conf").contains(&format!("{CANARY}-prod")));

    p.write("secret-id", "not-a-secret-id");
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("vault: cannot authenticate with approle auth: approle login at auth/approle: HTTP 400"),
        "{r:?}"
    );
    assert!(!r.all().contains("not-a-secret-id"), "{r:?}");
}
