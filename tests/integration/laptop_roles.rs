//! The developer role from `policies/`, applied with `cfgsync policy apply`:
//! every plain key of staging and prod, secret values of staging only.

use crate::laptop::{CANARY, project, seed};
use crate::support::{Etcd, Project, Run, Vault};

fn policies_dir() -> String {
    format!("{}/policies", env!("CARGO_MANIFEST_DIR"))
}

/// Runs cfgsync as `user` (etcd) with `token` (Vault).
fn run_as(p: &Project, etcd_user: &str, token: &str, args: &[&str]) -> Run {
    let out = p.command(args).env("ETCDCTL_USER", etcd_user).env("VAULT_TOKEN", token).output().unwrap();
    crate::support::run_output(out)
}

/// Enables etcd auth, applies `policies/` as root, and binds user `alice`
/// to the developer role; returns a Vault token with the developer policy.
fn developer(etcd: &Etcd, vault: &Vault, p: &Project) -> String {
    etcd.enable_auth_with_reader("rootpw", "alice", "alicepw", &[]);
    let dir = policies_dir();
    let r = run_as(p, "root:rootpw", &vault.root_token, &["policy", "apply", "--dir", &dir]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!("policies: {dir} (--policies)\n")
            + "\
etcd role cfgsync-developer: create, grant read /cfgsync/staging/*, grant read /cfgsync/prod/*, grant read /cfgsync/_meta/staging/*, grant read /cfgsync/_meta/prod/*, grant read /cfgsync/_history/staging/*, grant read /cfgsync/_history/prod/*, grant read /cfgsync/_service/*
vault policy cfgsync-developer: create
etcd role cfgsync-reconciler-prod: create, grant read /cfgsync/prod/*, grant read /cfgsync/_secret-versions/prod/*, grant readwrite /cfgsync/_service/members/*, grant readwrite /cfgsync/_service/envs/prod/*, grant readwrite /cfgsync/_state/prod/*, grant readwrite /cfgsync/_history/prod/*
vault policy cfgsync-reconciler-prod: create
etcd role cfgsync-reconciler-qa: create, grant read /cfgsync/qa/*, grant read /cfgsync/_secret-versions/qa/*, grant readwrite /cfgsync/_service/members/*, grant readwrite /cfgsync/_service/envs/qa/*, grant readwrite /cfgsync/_state/qa/*, grant readwrite /cfgsync/_history/qa/*
vault policy cfgsync-reconciler-qa: create
etcd role cfgsync-reconciler-staging: create, grant read /cfgsync/staging/*, grant read /cfgsync/_secret-versions/staging/*, grant readwrite /cfgsync/_service/members/*, grant readwrite /cfgsync/_service/envs/staging/*, grant readwrite /cfgsync/_state/staging/*, grant readwrite /cfgsync/_history/staging/*
vault policy cfgsync-reconciler-staging: create
vault fingerprint key secret/prod/cfgsync/fingerprint#key: create (random 32 bytes)
vault fingerprint key secret/qa/cfgsync/fingerprint#key: create (random 32 bytes)
vault fingerprint key secret/staging/cfgsync/fingerprint#key: create (random 32 bytes)
"
    );
    // Applying again changes nothing.
    let r = run_as(p, "root:rootpw", &vault.root_token, &["policy", "apply", "--dir", &dir]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.lines().skip(1).all(|l| l.ends_with(": unchanged")), "{r:?}");
    etcd.ctl_ok(&["user", "grant-role", "alice", "cfgsync-developer"]);
    vault.bao_ok(&["token", "create", "-orphan", "-policy=cfgsync-developer", "-field=token"]).trim().to_owned()
}

const NO_ACCESS: &str = "\
no access:
  ! prod: vault secret/prod/api/db as vault token \"token\" (policies cfgsync-developer, default): HTTP 403: 1 error occurred: * permission denied
  ! prod: vault secret/prod/api/extra as vault token \"token\" (policies cfgsync-developer, default): HTTP 403: 1 error occurred: * permission denied
";

#[test]
fn developer_role_diff_marks_prod_secrets_no_access() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let token = developer(&etcd, &vault, &p);

    let r = run_as(&p, "alice:alicepw", &token, &["diff", "staging", "prod"]);
    assert_eq!(r.code, 2, "partial: exit 2: {r:?}");
    assert!(!r.all().contains(CANARY), "{r:?}");
    let expected = format!(
        "\
--- staging
+++ prod
keys:
  ~ api/db_host
      - db.staging.internal
      + db.prod.internal
  - api/log_level
      - debug
  ~ api/motd
      - hello
      - staging
      + hello
      + prod
  + api/replicas
      + 3
  ~ flags/dark_mode
      - on
      + off
secrets:
  - api/legacy#key (secret, only in staging)
{NO_ACCESS}3 changed, 2 only in staging, 1 only in prod, 1 same, 2 no access (partial)
"
    );
    assert_eq!(r.stdout, expected);

    // Issue 21: the fingerprint key is cfgsync's own, not a value anyone
    // decided: neither compared nor named as "no access".
    assert!(!r.stdout.contains("cfgsync/fingerprint"), "{r:?}");

    // The developer sees the service's state (none runs here: no leader).
    let r = run_as(&p, "alice:alicepw", &token, &["status", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("env prod\n  leader:    (none)\n  last pass: (none recorded)\n"), "{r:?}");

    let r = run_as(&p, "alice:alicepw", &token, &["diff", "staging", "prod", "--allow-partial"]);
    assert_eq!(r.code, 1, "--allow-partial: the plain differences decide: {r:?}");
    assert_eq!(r.stdout, expected);

    let r = run_as(&p, "alice:alicepw", &token, &["--output", "json", "diff", "staging", "prod"]);
    assert_eq!(r.code, 2, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["partial"], true);
    assert_eq!(
        json["no_access"][0],
        serde_json::json!({
            "env": "prod",
            "source": "vault",
            "path": "secret/prod/api/db",
            "role": "vault token \"token\" (policies cfgsync-developer, default)",
            "reason": "HTTP 403: 1 error occurred: * permission denied",
        })
    );

    // --show-secrets shows only what the role could read.
    let r = crate::laptop::run_on_terminal(
        &p,
        &[("ETCDCTL_USER", "alice:alicepw"), ("VAULT_TOKEN", &token)],
        &["diff", "staging", "prod", "--show-secrets", "--allow-partial"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains(&format!("  - api/legacy#key (secret, only in staging)\n      - {CANARY}-legacy\n")),
        "{r:?}"
    );
    assert!(!r.stdout.contains(&format!("{CANARY}-prod")), "{r:?}");
    assert!(!r.stdout.contains(&format!("{CANARY}-staging")), "api/db is not comparable, so not shown: {r:?}");

    // A role without prod keys at all: the whole prefix is `no access`.
    etcd.ctl_ok(&["user", "add", "intern", "--new-user-password=internpw"]);
    etcd.ctl_ok(&["user", "grant-role", "intern", "cfgsync-reconciler-staging"]);
    let r = run_as(&p, "intern:internpw", &vault.root_token, &["diff", "staging", "prod"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains(
            "no access:\n  ! prod: etcd /cfgsync/prod/ as etcd user \"intern\": etcdserver: permission denied\n"
        ),
        "{r:?}"
    );
    assert!(!r.stdout.contains("keys:"), "no key can be compared: {r:?}");
}

#[test]
fn developer_role_pull_prod_names_every_denied_secret_and_writes_nothing() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let token = developer(&etcd, &vault, &p);
    let before = p.state();

    let r = run_as(&p, "alice:alicepw", &token, &["pull", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "\
error: env prod: vault: permission denied reading secret/prod/api/db (HTTP 403: 1 error occurred: * permission denied); needed by output \"api\"
error: env prod: vault: permission denied reading secret/prod/api/extra (HTTP 403: 1 error occurred: * permission denied); needed by output \"extra\"
error: nothing written: 2 output(s) need reads your role does not allow; --allow-partial writes the others
"
    );
    assert!(r.stdout.contains("  ! api: skipped: needs secret/prod/api/db (no access)\n"), "{r:?}");
    assert!(
        r.stdout.ends_with("1 to create, 0 to update, 0 unchanged, 2 skipped, 0 failed (nothing written)\n"),
        "{r:?}"
    );
    assert_eq!(p.state(), before, "nothing written");

    let r = run_as(&p, "alice:alicepw", &token, &["pull", "--env", "prod", "--allow-partial"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.starts_with("warning: env prod: vault: permission denied reading secret/prod/api/db"), "{r:?}");
    assert!(r.stdout.ends_with("1 created, 0 updated, 0 unchanged, 2 skipped, 0 failed\n"), "{r:?}");
    assert_eq!(p.read("out/prod/web.yaml"), "db_host: db.prod.internal\ndark_mode: off\n");
    assert!(!p.path("out/prod/api.env").exists(), "needs a denied secret: never half-rendered");
    assert!(!p.path("out/prod/extra.env").exists());

    // Staging is fully readable.
    let r = run_as(&p, "alice:alicepw", &token, &["pull", "--env", "staging"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.read("out/staging/api.env").contains(&format!("{CANARY}-staging")));
    assert!(!r.all().contains(CANARY), "{r:?}");

    // run-with needs the same reads: it names them and does not start the command.
    let r = run_as(&p, "alice:alicepw", &token, &["run-with", "--env", "prod", "--from", "api", "--", "touch", "ran"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("permission denied reading secret/prod/api/db"), "{r:?}");
    assert!(!p.path("ran").exists());

    // The role decides writes too.
    let r = run_as(&p, "alice:alicepw", &token, &["set", "prod", "api/db_host", "evil.example", "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with("error: etcd: permission denied writing /cfgsync/prod/api/db_host as user \"alice\""),
        "{r:?}"
    );
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db.prod.internal\n");
}
