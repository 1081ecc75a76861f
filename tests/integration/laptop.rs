//! The developer commands against real etcd and OpenBao: `diff`, `pull`,
//! `run-with`, `explain`, `set`, `set-secret`, completions and man.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{Etcd, Project, Run, Vault, mode, run_output, server_config, wait_until};

pub const CANARY: &str = "CANARY-5b1d-laptop";

/// staging, prod, and qa (a copy of staging); three outputs: `api` reads a
/// secret and keys, `extra` only a secret, `web` only keys.
pub const OUTPUTS: &str = r#"
[envs.staging]
[envs.prod]
[envs.qa]

[[output]]
name = "api"
[output.entries]
DATABASE_URL = "postgres://{{ key(name='api/db_user') }}:{{ secret(path='api/db', field='password') }}@{{ key(name='api/db_host') }}/api"
LOG_LEVEL = "{{ key_or(name='api/log_level', default='info') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"

[[output]]
name = "extra"
[output.entries]
TOKEN = "{{ secret(path='api/extra', field='token') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/extra.env"

[[output]]
name = "web"
[output.entries]
"config.yaml" = "db_host: {{ key(name='api/db_host') }}\ndark_mode: {{ key(name='flags/dark_mode') }}\n"
[[output.target]]
kind = "file"
path = "out/{{ env }}/web.yaml"
format = "raw"
"#;

/// Seeds the three envs; qa holds exactly what staging holds.
pub fn seed(etcd: &Etcd, vault: &Vault) {
    for (env, like) in [("staging", "staging"), ("prod", "prod"), ("qa", "staging")] {
        etcd.put(&format!("/cfgsync/{env}/api/db_user"), "api");
        etcd.put(&format!("/cfgsync/{env}/api/db_host"), &format!("db.{like}.internal"));
        etcd.put(&format!("/cfgsync/{env}/api/motd"), &format!("hello\n{like}"));
        etcd.put(&format!("/cfgsync/{env}/flags/dark_mode"), if like == "prod" { "off" } else { "on" });
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("{CANARY}-{like}")), ("user", "api")]);
        if like == "prod" {
            vault.kv_put(&format!("{env}/api/extra"), &[("token", "shared-token"), ("rotation", "90d")]);
            etcd.put(&format!("/cfgsync/{env}/api/replicas"), "3");
        } else {
            vault.kv_put(&format!("{env}/api/extra"), &[("token", "shared-token")]);
            vault.kv_put(&format!("{env}/api/legacy"), &[("key", &format!("{CANARY}-legacy"))]);
            etcd.put(&format!("/cfgsync/{env}/api/log_level"), "debug");
        }
    }
}

/// A project reading the servers with root credentials.
pub fn project(etcd: &Etcd, vault: &Vault) -> Project {
    let p = Project::new(&server_config(etcd, vault, OUTPUTS));
    p.write("vault-token", &vault.root_token);
    p
}

fn assert_no_canary(r: &Run) {
    assert!(!r.all().contains(CANARY), "a secret value leaked: {r:?}");
}

/// Runs the binary with stdout on a pseudo-terminal (util-linux `script`),
/// as a person at a terminal would; `\r\n` turned back into `\n`.
pub fn run_on_terminal(p: &Project, env: &[(&str, &str)], args: &[&str]) -> Run {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let config = p.path("cfgsync.toml");
    let mut line = vec![quote(env!("CARGO_BIN_EXE_cfgsync")), "--config".to_owned(), quote(config.to_str().unwrap())];
    line.extend(args.iter().map(|a| quote(a)));
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"]).current_dir(p.dir.path()).stdin(Stdio::null());
    for var in ["VAULT_ADDR", "VAULT_TOKEN", "ETCDCTL_ENDPOINTS", "ETCDCTL_USER", "CFGSYNC_CONFIG", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").env("HOME", p.dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut r = run_output(cmd.output().unwrap());
    r.stdout = r.stdout.replace("\r\n", "\n");
    r
}

/// Replaces each 16-hex-digit fingerprint with `<fp>` (they are keyed per run).
fn mask_fingerprints(text: &str) -> String {
    text.split_inclusive(|c: char| c.is_whitespace())
        .map(|word| {
            let trimmed = word.trim_end();
            if trimmed.len() == 16 && trimmed.chars().all(|c| c.is_ascii_hexdigit()) {
                format!("<fp>{}", &word[trimmed.len()..])
            } else {
                word.to_owned()
            }
        })
        .collect()
}

const DIFF_STAGING_PROD: &str = "\
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
  ~ api/db#password (secret, differs)
  + api/extra#rotation (secret, only in prod)
  - api/legacy#key (secret, only in staging)
4 changed, 2 only in staging, 2 only in prod, 3 same, 0 no access
";

#[test]
fn diff_between_two_seeded_envs_text_json_and_exit_codes() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);

    let r = p.run(&["diff", "staging", "prod"]);
    assert_eq!(r.code, 1, "different: exit 1 as diff(1): {r:?}");
    assert_eq!(r.stdout, DIFF_STAGING_PROD);
    assert_eq!(r.stderr, "");
    assert_no_canary(&r);

    let r = p.run(&["diff", "staging", "prod", "--all"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("  = api/db_user\n"), "{r:?}");
    assert!(r.stdout.contains("  = api/extra#token (secret, same)\n"), "{r:?}");
    assert!(r.stdout.contains("  = api/db#user (secret, same)\n"), "{r:?}");
    assert_no_canary(&r);

    let r = p.run(&["--output", "json", "diff", "staging", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_no_canary(&r);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["a"], "staging");
    assert_eq!(json["b"], "prod");
    assert_eq!(json["partial"], false);
    assert_eq!(
        json["summary"],
        serde_json::json!({"changed": 4, "only_in_a": 2, "only_in_b": 2, "same": 3, "no_access": 0, "not_rendered": 0})
    );
    assert!(json["revisions"]["staging"].as_i64().unwrap() > 0, "{json}");
    assert_eq!(
        json["keys"][0],
        serde_json::json!({"name": "api/db_host", "status": "changed", "a": "db.staging.internal", "b": "db.prod.internal"})
    );
    assert_eq!(json["keys"][1], serde_json::json!({"name": "api/log_level", "status": "only_in_a", "a": "debug"}));
    assert_eq!(
        json["secrets"],
        serde_json::json!([
            {"path": "api/db", "field": "password", "status": "changed"},
            {"path": "api/extra", "field": "rotation", "status": "only_in_b"},
            {"path": "api/legacy", "field": "key", "status": "only_in_a"},
        ])
    );
    assert_eq!(json["no_access"], serde_json::json!([]));

    // The same content: exit 0.
    let r = p.run(&["diff", "staging", "qa"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "--- staging\n+++ qa\n0 changed, 0 only in staging, 0 only in qa, 9 same, 0 no access\n");

    // Errors: exit 2, one line.
    let r = p.run(&["diff", "staging", "prd"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr, "error: unknown env \"prd\" (did you mean \"prod\"?); defined envs: prod, qa, staging\n");
    // --show-secrets: values on a terminal only.
    let r = run_on_terminal(&p, &[], &["diff", "staging", "prod", "--show-secrets"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "  ~ api/db#password (secret, differs)\n      - {CANARY}-staging\n      + {CANARY}-prod\n"
        )),
        "{r:?}"
    );
    let r = p.run(&["diff", "staging", "prod", "--show-secrets"]);
    assert_eq!(r.code, 2, "stdout is a pipe here: {r:?}");
    assert!(r.stderr.starts_with("error: --show-secrets prints values only to a terminal"), "{r:?}");
    assert_eq!(r.stdout, "");
    let mut etcd = etcd;
    etcd.stop();
    p.write("cfgsync.toml", &p.read("cfgsync.toml").replace("[vault]", "timeout = \"2s\"\n\n[vault]"));
    let r = p.run(&["diff", "staging", "prod"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.starts_with("error: env staging: etcd: ") || r.stderr.starts_with("error: env prod: etcd: "),
        "{r:?}"
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn diff_rendered_compares_outputs_entry_by_entry_and_masks_tainted_ones() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let r = p.run(&["diff", "staging", "prod", "--rendered"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_no_canary(&r);
    let rendered = r.stdout.split("rendered outputs:\n").nth(1).expect("a rendered section");
    assert_eq!(
        rendered,
        "  ~ api: DATABASE_URL (secret, differs)
  ~ api: LOG_LEVEL (secret, differs)
  ~ web: config.yaml
      --- staging/web/config.yaml
      +++ prod/web/config.yaml
      @@ -1,2 +1,2 @@
      -db_host: db.staging.internal
      -dark_mode: on
      +db_host: db.prod.internal
      +dark_mode: off
7 changed, 2 only in staging, 2 only in prod, 4 same, 0 no access
"
    );
    let r = p.run(&["--output", "json", "diff", "staging", "prod", "--rendered", "--all"]);
    assert_no_canary(&r);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let extra = &json["rendered"][1];
    assert_eq!(extra["output"], "extra");
    assert_eq!(extra["tainted"], true);
    assert_eq!(extra["entries"], serde_json::json!([{"entry": "TOKEN", "status": "same"}]));
    assert_eq!(json["rendered"][2]["tainted"], false);
    assert!(json["rendered"][2]["entries"][0]["diff"].as_str().unwrap().contains("+dark_mode: off\n"));
}

#[test]
fn pull_shows_each_change_then_writes_atomically_and_dry_run_writes_nothing() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let before = p.state();
    let r = p.run(&["pull", "--env", "prod", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_canary(&r);
    assert_eq!(p.state(), before, "a dry run writes nothing");
    let text = mask_fingerprints(&r.stdout);
    let rev = text.lines().next().unwrap().to_owned();
    assert!(rev.starts_with("pull prod (etcd revision "), "{text}");
    assert_eq!(
        text,
        format!(
            "{rev}
  + api → out/prod/api.env (create; mode 0600; secret: values not shown)
      DATABASE_URL  fingerprint (none) → <fp>
      LOG_LEVEL     fingerprint (none) → <fp>
  + extra → out/prod/extra.env (create; mode 0600; secret: values not shown)
      TOKEN  fingerprint (none) → <fp>
  + web → out/prod/web.yaml (create; mode 0644)
      --- a/out/prod/web.yaml
      +++ b/out/prod/web.yaml
      @@ -0,0 +1,2 @@
      +db_host: db.prod.internal
      +dark_mode: off
3 to create, 0 to update, 0 unchanged, 0 skipped, 0 failed (dry run: nothing written)
"
        )
    );

    let r = p.run(&["pull", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_canary(&r);
    assert!(r.stdout.ends_with("3 created, 0 updated, 0 unchanged, 0 skipped, 0 failed\n"), "{r:?}");
    assert_eq!(
        p.read("out/prod/api.env"),
        format!("DATABASE_URL=postgres://api:{CANARY}-prod@db.prod.internal/api\nLOG_LEVEL=info\n")
    );
    assert_eq!(mode(&p.path("out/prod/api.env")), 0o600);
    assert_eq!(mode(&p.path("out/prod/web.yaml")), 0o644);
    assert!(!p.path("out/staging").exists(), "only the pulled env");

    let written = p.state();
    let r = p.run(&["pull", "--env", "prod"]);
    assert!(r.stdout.ends_with("0 created, 0 updated, 3 unchanged, 0 skipped, 0 failed\n"), "{r:?}");
    assert_eq!(p.state(), written, "nothing changed: nothing written");

    // A changed secret: the entry is named with fingerprints; the plain file gets a diff.
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-rotated")), ("user", "api")]);
    etcd.put("/cfgsync/prod/flags/dark_mode", "on");
    let r = p.run(&["pull", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_canary(&r);
    let text = mask_fingerprints(&r.stdout);
    assert!(
        text.contains("  ~ api → out/prod/api.env (updated; secret: values not shown)\n      DATABASE_URL  fingerprint <fp> → <fp>\n  = extra"),
        "{text}"
    );
    assert!(text.contains("      -dark_mode: off\n      +dark_mode: on\n"), "{text}");
    assert!(p.read("out/prod/api.env").contains(&format!("{CANARY}-rotated")));
}

#[test]
fn run_with_passes_entries_as_env_vars_and_the_exit_code() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let before = p.state();
    let r = p.run(&[
        "run-with",
        "--env",
        "prod",
        "--from",
        "api",
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s' \"$DATABASE_URL\" \"$LOG_LEVEL\" \"$1\"; exit 42",
        "sh",
        "arg one",
    ]);
    assert_eq!(r.code, 42, "{r:?}");
    assert_eq!(r.stdout, format!("postgres://api:{CANARY}-prod@db.prod.internal/api|info|arg one"));
    assert_eq!(r.stderr, "");
    assert_eq!(p.state(), before, "nothing written to disk");

    let r = p.run(&["run-with", "--env", "prod", "--", "true"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr, "error: env \"prod\" has 3 outputs (api, extra, web): choose one with --from\n");
    let r = p.run(&["run-with", "--env", "prod", "--from", "web", "--", "true"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("\"config.yaml\": use [A-Za-z_][A-Za-z0-9_]*"), "{r:?}");
    let r = p.run(&["run-with", "--env", "prod", "--from", "api", "--", "no-such-command-here"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert!(r.stderr.starts_with("error: cannot run no-such-command-here: "), "{r:?}");
}

#[test]
fn run_with_forwards_sigterm_to_the_command() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let script =
        "trap 'printf \"%s\" \"$LOG_LEVEL\" > term-marker; exit 7' TERM; : > ready; while :; do sleep 0.05; done";
    let mut child = p
        .command(&["run-with", "--env", "prod", "--from", "api", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the command to start", Duration::from_secs(30), || p.path("ready").exists().then_some(()));
    // The shell's own `kill`: no procps needed.
    let kill = std::process::Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status().unwrap();
    assert!(kill.success());
    wait_until("the command to exit", Duration::from_secs(10), || child.try_wait().unwrap());
    let r = run_output(child.wait_with_output().unwrap());
    assert_eq!(r.code, 7, "the trap ran and its exit code came back: {r:?}");
    assert_eq!(p.read("term-marker"), "info", "the command itself received SIGTERM, with the rendered env");
}

#[test]
fn explain_shows_revision_version_owner_and_reason_set_through_set_and_set_secret() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);

    // Without --yes and without a terminal to ask on: nothing is written.
    let out = std::process::Command::new("setsid")
        .arg("-w")
        .arg(env!("CARGO_BIN_EXE_cfgsync"))
        .args(["--config", p.path("cfgsync.toml").to_str().unwrap(), "set", "prod", "api/db_host", "db2.prod.internal"])
        .current_dir(p.dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let r = run_output(out);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("error: no terminal to ask for confirmation on: pass --yes"), "{r:?}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db.prod.internal\n");

    let r = p.run(&[
        "set",
        "prod",
        "api/db_host",
        "db2.prod.internal",
        "--owner",
        "team-db",
        "--reason",
        "moved to the new cluster",
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.lines().take(5).collect::<Vec<_>>(),
        [
            "~ update etcd /cfgsync/prod/api/db_host",
            "    - db.prod.internal",
            "    + db2.prod.internal",
            "    owner: (none) → \"team-db\"",
            "    reason: (none) → \"moved to the new cluster\"",
        ]
    );
    assert_eq!(
        etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/_meta/prod/api/db_host"]),
        "{\"owner\":\"team-db\",\"reason\":\"moved to the new cluster\"}\n"
    );
    let kv: serde_json::Value =
        serde_json::from_str(&etcd.ctl_ok(&["get", "-w", "json", "/cfgsync/prod/api/db_host"])).unwrap();
    let (create, modified) =
        (kv["kvs"][0]["create_revision"].as_i64().unwrap(), kv["kvs"][0]["mod_revision"].as_i64().unwrap());
    assert!(modified > create);

    // set-secret: the value from stdin, never in argv or output; other fields kept.
    let new_value = format!("{CANARY}-rotated");
    let r = p.run_with_stdin(
        &[
            "set-secret",
            "prod",
            "api/db",
            "password",
            "--owner",
            "team-db",
            "--reason",
            "rotated after INC-42",
            "--yes",
        ],
        &format!("{new_value}\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_canary(&r);
    assert_eq!(
        r.stdout,
        "~ vault secret/prod/api/db#password (secret, differs)\n    owner: (none) → \"team-db\"\n    reason: (none) → \"rotated after INC-42\"\nwritten: secret/prod/api/db version 2\n"
    );
    assert_eq!(vault.bao_ok(&["kv", "get", "-mount=secret", "-field=password", "prod/api/db"]), new_value);
    assert_eq!(vault.bao_ok(&["kv", "get", "-mount=secret", "-field=user", "prod/api/db"]), "api");

    let r = p.run(&["explain", "prod", "api/db_host"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "prod api/db_host
  source:   etcd /cfgsync/prod/api/db_host
  value:    db2.prod.internal
  revision: created {create}, modified {modified} (version 2)
  owner:    team-db
  reason:   moved to the new cluster
  recorded: /cfgsync/_meta/prod/api/db_host
  used by:  output api, entries DATABASE_URL
              → file out/prod/api.env
            output web, entries config.yaml
              → file out/prod/web.yaml
"
        )
    );

    let r = p.run(&["explain", "prod", "api/db#password"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_canary(&r);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "prod api/db#password",
            "  source:   vault secret/prod/api/db, field \"password\"",
            "  value:    (secret, not shown)"
        ]
    );
    assert!(lines[3].starts_with("  version:  2, written 20"), "{r:?}");
    assert_eq!(
        lines[4..],
        [
            "  owner:    team-db",
            "  reason:   rotated after INC-42",
            "  recorded: secret/metadata/prod/api/db (custom_metadata)",
            "  used by:  output api, entries DATABASE_URL",
            "              → file out/prod/api.env",
        ]
    );
    let r = p.run(&["--output", "json", "explain", "prod", "api/db#password"]);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["version"]["version"], 2);
    assert_eq!(json["owner"], "team-db");
    assert_no_canary(&r);

    // Unknown names exit 1 and say so.
    let r = p.run(&["explain", "prod", "api/nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, "error: \"api/nope\" is neither a key nor a secret in env prod\n");
    let r = p.run(&["explain", "prod", "api/db#nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, "error: secret secret/prod/api/db has no field \"nope\"; its fields: password, user\n");
    assert_no_canary(&r);
}

/// `set` and `set-secret` render nothing, so they do not compile the
/// templates: one broken elsewhere stops neither (the commands that render
/// still refuse, exit 2). A config error stops them all, named by file and
/// line, with nothing written.
#[test]
fn set_and_set_secret_write_despite_a_broken_template_but_not_despite_a_config_error() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault);
    let good = p.read("cfgsync.toml");
    let broken =
        good.replace("dark_mode: {{ key(name='flags/dark_mode') }}", "dark_mode: {{ key(name='flags/dark_mode') ");
    assert_ne!(broken, good);
    p.write("cfgsync.toml", &broken);
    let r = p.run(&["plan", "--env", "prod"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("template syntax error"), "{r:?}");

    let r = p.run(&["set", "prod", "api/db_host", "db3.prod.internal", "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db3.prod.internal\n");
    let set_secret = |p: &Project, value: &str| {
        p.run_with_stdin(&["set-secret", "prod", "api/db", "password", "--yes"], &format!("{value}\n"))
    };
    let r = set_secret(&p, &format!("{CANARY}-despite"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_no_canary(&r);
    assert!(r.stdout.ends_with("written: secret/prod/api/db version 2\n"), "{r:?}");

    // A config error: exit 2, file and line, nothing written.
    p.write("cfgsync.toml", &good.replace("[envs.prod]", "[envs.prod]\nbogus = 1"));
    let r = p.run(&["set", "prod", "api/db_host", "db4.prod.internal", "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.contains("cfgsync.toml:") && r.stderr.contains("bogus"),
        "{r:?}"
    );
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db3.prod.internal\n");
    let r = set_secret(&p, &format!("{CANARY}-not-written"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cfgsync.toml:") && r.stderr.contains("bogus"), "{r:?}");
    assert_eq!(
        vault.bao_ok(&["kv", "get", "-mount=secret", "-field=password", "prod/api/db"]),
        format!("{CANARY}-despite")
    );
    for args in [&["status"][..], &["refresh", "--env", "prod"], &["policy", "plan"]] {
        let r = p.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("cfgsync.toml:") && r.stderr.contains("bogus"), "{args:?}: {r:?}");
    }
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let p = Project::new("");
    for (shell, marker) in [("bash", "_cfgsync()"), ("zsh", "#compdef cfgsync"), ("fish", "complete -c cfgsync")] {
        let r = p.run(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {r:?}");
        assert!(r.stdout.contains(marker), "{shell}: {r:?}");
        for sub in ["run-with", "set-secret", "explain", "diff"] {
            assert!(r.stdout.contains(sub), "{shell} completes {sub}");
        }
    }
    let r = p.run(&["man"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with(".ie \\n(.g .ds Aq \\(aq") || r.stdout.contains(".TH cfgsync 1"), "{r:?}");
    assert!(r.stdout.contains(".TH cfgsync 1"), "{r:?}");
    assert!(r.stdout.contains("run\\-with"), "{r:?}");
    let r = p.run(&["man", "--out-dir", "man1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let page = p.read("man1/cfgsync-diff.1");
    assert!(page.contains("\\-\\-allow\\-partial"), "{page}");
    assert!(p.path("man1/cfgsync-set-secret.1").exists());
}

/// Issue 21: the man pages say EXIT STATUS, ENVIRONMENT and FILES, with
/// EXAMPLES, and refer to no page that is not written.
#[test]
fn man_pages_have_the_usual_sections_and_refer_only_to_written_pages() {
    let p = Project::new("");
    let r = p.run(&["man"]);
    assert_eq!(r.code, 0, "{r:?}");
    for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES", ".SH EXAMPLES", ".SH COMMANDS"] {
        assert!(r.stdout.contains(section), "{section}: {}", r.stdout);
    }
    assert!(!r.stdout.contains("(1)"), "one page printed: it refers to no other: {}", r.stdout);
    assert!(!r.stdout.contains("complete\\-names"), "hidden commands stay hidden");
    let r = p.run(&["man", "--out-dir", "man1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut pages = 0;
    for entry in std::fs::read_dir(p.path("man1")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        pages += 1;
        assert!(text.contains(".SH \"EXIT STATUS\"") && text.contains(".SH ENVIRONMENT"), "{}", path.display());
        // Every `cfgsync…(1)` reference is a page in the directory.
        for (i, _) in text.match_indices("(1)") {
            let start =
                text[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '\\')).map_or(0, |s| s + 1);
            let name = text[start..i].replace('\\', "");
            if name.starts_with("cfgsync") {
                assert!(
                    p.path(&format!("man1/{name}.1")).exists(),
                    "{} refers to {name}(1), not written",
                    path.display()
                );
            }
        }
    }
    assert!(pages > 15, "{pages}");
    assert!(!p.path("man1/cfgsync-help.1").exists() && !p.path("man1/cfgsync-complete-names.1").exists());
}

/// Issue 21: completion offers the env and output names of the config (the
/// bash hook, run by bash itself).
#[test]
fn bash_completion_offers_env_and_output_names_from_the_config() {
    let p = Project::new(
        "[files]\n[envs.staging]\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nA = \"a\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}.env\"\n",
    );
    let script = p.run(&["completions", "bash"]);
    assert_eq!(script.code, 0, "{script:?}");
    p.write("completion.bash", &script.stdout);
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_cfgsync")).parent().unwrap().to_owned();
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let program = format!(
            "source completion.bash\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_cfgsync_dynamic cfgsync '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
            quoted.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2]
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(program)
            .current_dir(p.dir.path())
            .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()))
            .env_remove("CFGSYNC_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut names: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    assert_eq!(complete("cfgsync plan --env "), ["prod", "staging"]);
    assert_eq!(complete("cfgsync plan --env p"), ["prod"]);
    assert_eq!(complete("cfgsync diff staging "), ["prod", "staging"]);
    assert_eq!(complete("cfgsync run-with --env prod --from "), ["api"]);
    p.write("other.toml", &p.read("cfgsync.toml").replace("[envs.staging]", "[envs.qa]"));
    assert_eq!(complete("cfgsync --config other.toml explain "), ["prod", "qa"]);
    // Elsewhere, clap's own completion.
    assert!(complete("cfgsync pl").contains(&"plan".to_owned()));
}

/// The quickstart example (file source): the developer commands need no server.
#[test]
fn file_source_diff_pull_and_explain_need_no_server() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let p = Project::new("");
    let copy = std::process::Command::new("cp").arg("-r").arg(src.join(".")).arg(p.dir.path()).status().unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(p.path("out"));
    let secret = "prod-password-from-the-vault";

    let r = p.run(&["diff", "staging", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stdout,
        "\
--- staging
+++ prod
keys:
  ~ api/db_host
      - db.staging.internal
      + db.prod.internal
  - api/log_level
      - debug
  ~ features/dark_mode
      - false
      + true
  ~ features/new_checkout
      - true
      + false
  ~ web/host
      - staging.example.com
      + www.example.com
  + web/port
      + 443
secrets:
  ~ api/db#password (secret, differs)
5 changed, 1 only in staging, 1 only in prod, 1 same, 0 no access
"
    );
    assert!(!r.all().contains(secret), "{r:?}");

    let r = p.run(&["pull", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.all().contains(secret), "{r:?}");
    assert!(r.stdout.ends_with("3 created, 0 updated, 0 unchanged, 0 skipped, 0 failed\n"), "{r:?}");
    assert!(p.read("out/prod/api.env").contains(secret));
    assert_eq!(mode(&p.path("out/prod/api.env")), 0o600);
    assert_eq!(p.read("out/prod/web/robots.txt"), "User-agent: *\nAllow: /\n");

    // `keys(prefix)` readers are found, entry by entry.
    let r = p.run(&["explain", "prod", "features/dark_mode"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "\
prod features/dark_mode
  source:   file source/prod.toml [keys] \"features/dark_mode\"
  value:    true
  note:     the file source records no revision, owner or reason
  used by:  output api, entries FEATURES
              → file out/prod/api.env
            output web, entries config.yaml
              → file out/prod/web
"
    );
    let r = p.run(&["explain", "prod", "api/db#password"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.all().contains(secret), "{r:?}");
    assert!(r.stdout.contains("  used by:  output api, entries DATABASE_URL\n"), "{r:?}");

    // set needs etcd: a usage error naming what to do instead.
    let r = p.run(&["set", "prod", "web/port", "8443", "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "error: `cfgsync set` needs an [etcd] section in the config: with the file source, edit source/<env>.toml instead\n"
    );
}
