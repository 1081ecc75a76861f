//! `run-with` does not hand cfgsync's own credentials (`VAULT_TOKEN`,
//! `ETCDCTL_USER=name:password`) to the command, unless the output itself
//! has an entry of that name. Real etcd with auth enabled and a real OpenBao,
//! so the credentials are the ones the read actually used.

use crate::support::{Etcd, Project, Run, Vault, run_output, server_config};

const DB_PASSWORD: &str = "CANARY-run-with-db-7c41";
const CHILD_TOKEN: &str = "child-token-from-the-output-5e2d";
const ETCD_PASSWORD: &str = "alice-etcd-pw-93be";

/// No `vault-token` file and no etcd user in the config: the only
/// credentials are the environment variables the tests pass.
const OUTPUTS: &str = r#"
[envs.prod]

[[output]]
name = "api"
[output.entries]
DATABASE_URL = "postgres://{{ key(name='api/db_user') }}:{{ secret(path='api/db', field='password') }}@db/api"
[[output.target]]
kind = "file"
path = "out/api.env"

[[output]]
name = "deploy"
[output.entries]
VAULT_TOKEN = "{{ secret(path='ci/vault', field='token') }}"
DB_USER = "{{ key(name='api/db_user') }}"
[[output.target]]
kind = "file"
path = "out/deploy.env"
"#;

/// Seeds prod, turns on etcd auth with user `alice` (read on prod only),
/// and returns the project and the environment cfgsync is given.
fn setup(etcd: &Etcd, vault: &Vault) -> (Project, Vec<(&'static str, String)>) {
    etcd.put("/cfgsync/prod/api/db_user", "api");
    vault.kv_put("prod/api/db", &[("password", DB_PASSWORD)]);
    vault.kv_put("prod/ci/vault", &[("token", CHILD_TOKEN)]);
    etcd.enable_auth_with_reader("rootpw", "alice", ETCD_PASSWORD, &["/cfgsync/prod/"]);
    let p = Project::new(&server_config(etcd, vault, OUTPUTS));
    let env = vec![
        ("VAULT_TOKEN", vault.root_token.clone()),
        ("ETCDCTL_USER", format!("alice:{ETCD_PASSWORD}")),
        ("UNRELATED_SETTING", "kept".to_owned()),
    ];
    (p, env)
}

fn run_with(p: &Project, env: &[(&str, String)], from: &str, script: &str) -> Run {
    let mut cmd = p.command(&["run-with", "--env", "prod", "--from", from, "--", "sh", "-c", script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_output(cmd.output().unwrap())
}

const SHOW: &str = r#"printf '%s|%s|%s|%s|%s' "${VAULT_TOKEN-unset}" "${ETCDCTL_USER-unset}" "${DATABASE_URL-unset}" "${DB_USER-unset}" "${UNRELATED_SETTING-unset}""#;

#[test]
fn run_with_removes_cfgsync_credentials_from_the_command_environment() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    let (p, env) = setup(&etcd, &vault);

    let r = run_with(&p, &env, "api", SHOW);
    assert_eq!(r.code, 0, "{r:?}");
    // The read used both credentials (the output rendered), and neither
    // reached the command; other variables did.
    assert_eq!(r.stdout, format!("unset|unset|postgres://api:{DB_PASSWORD}@db/api|unset|kept"));
    assert_eq!(r.stderr, "");

    // Nowhere in the command's environment, under any name.
    let r = run_with(&p, &env, "api", "env");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("DATABASE_URL=postgres://api:{DB_PASSWORD}@db/api\n")), "{r:?}");
    assert!(!r.stdout.contains(&vault.root_token), "the Vault token reached the command: {r:?}");
    assert!(!r.stdout.contains(ETCD_PASSWORD), "the etcd password reached the command: {r:?}");
}

#[test]
fn run_with_passes_a_credential_variable_the_output_sets_itself() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    let (p, env) = setup(&etcd, &vault);

    let r = run_with(&p, &env, "deploy", SHOW);
    assert_eq!(r.code, 0, "{r:?}");
    // VAULT_TOKEN is the output's entry, not cfgsync's token; ETCDCTL_USER,
    // which the output does not set, is still removed.
    assert_eq!(r.stdout, format!("{CHILD_TOKEN}|unset|unset|api|kept"));
    assert_eq!(r.stderr, "");
}
