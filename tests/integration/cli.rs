//! The binary against the file source: no servers needed.

use crate::support::{Project, mode};

const CANARY: &str = "CANARY-9f2a-s3cr3t";

fn files_config(extra: &str) -> String {
    format!(
        r#"[files]

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
DB_PASSWORD = "{{{{ secret(path='api/db', field='password') }}}}"
HOST = "{{{{ key(name='api/host') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/api.env"
reload_cmd = "echo reloaded >> reloads.log"

[[output]]
name = "web"
[output.entries]
HOST = "{{{{ key(name='web/host') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/web.json"
format = "json"
{extra}"#
    )
}

fn project(extra: &str) -> Project {
    let p = Project::new(&files_config(extra));
    for env in ["staging", "prod"] {
        p.write(
            &format!("source/{env}.toml"),
            &format!("[keys]\n\"api/host\" = \"api.{env}\"\n\"web/host\" = \"www.{env}\"\n\n[secrets.\"api/db\"]\npassword = \"{CANARY}-{env}\"\n"),
        );
    }
    p
}

#[test]
fn quickstart_example_reconciles_and_is_idempotent() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let p = Project::new("");
    let copy = std::process::Command::new("cp").arg("-r").arg(src.join(".")).arg(p.dir.path()).status().unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(p.path("out"));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.ends_with("6 created, 0 updated, 0 unchanged, 0 failed\n"), "{r:?}");
    assert_eq!(
        p.read("out/prod/api.env"),
        "DATABASE_URL=postgres://api:prod-password-from-the-vault@db.prod.internal:5432/api\nFEATURES=dark_mode\nLOG_LEVEL=info\n"
    );
    assert_eq!(mode(&p.path("out/prod/api.env")), 0o600);
    assert_eq!(mode(&p.path("out/prod/web/config.yaml")), 0o644);
    assert_eq!(p.read("out/staging/web/robots.txt"), "User-agent: *\nDisallow: /\n");
    let r = p.run(&["reconcile", "--once"]);
    assert!(r.stdout.ends_with("0 created, 0 updated, 6 unchanged, 0 failed\n"), "{r:?}");
}

#[test]
fn second_pass_writes_nothing_and_runs_no_reload() {
    let p = project("");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("reloads.log"), "reloaded\nreloaded\n", "one reload per env on the first pass");
    let before = p.state();
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.state(), before, "inode, mtime, content and mode all unchanged");
    assert_eq!(p.read("reloads.log"), "reloaded\nreloaded\n");

    // A mode drift is repaired without rewriting the content.
    std::fs::set_permissions(p.path("out/prod/api.env"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert!(r.stdout.contains("(updated: mode 0644 → 0600)"), "{r:?}");
    assert_eq!(mode(&p.path("out/prod/api.env")), 0o600);
}

#[test]
fn tainted_output_is_0600_and_its_values_never_printed() {
    let p = project("");
    for args in [&["plan"][..], &["reconcile", "--once", "--dry-run"], &["--output", "json", "plan"]] {
        let r = p.run(args);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(!r.all().contains(CANARY), "{args:?} leaked the canary: {r:?}");
        assert!(!p.path("out").exists(), "{args:?} wrote something");
    }
    let r = p.run(&["plan"]);
    assert!(r.stdout.contains("secret content masked"), "{r:?}");
    assert!(r.stdout.contains("+  \"HOST\": \"www.prod\""), "untainted outputs show a diff: {r:?}");

    let r = p.command(&["reconcile", "--once"]).env("RUST_LOG", "trace").output().unwrap();
    let r = crate::support::run_output(r);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("file written"), "trace logging is on: {r:?}");
    assert!(!r.all().contains(CANARY), "{r:?}");
    assert_eq!(mode(&p.path("out/prod/api.env")), 0o600);
    assert_eq!(mode(&p.path("out/prod/web.json")), 0o644);
    assert!(p.read("out/prod/api.env").contains(&format!("DB_PASSWORD={CANARY}-prod\n")));

    // A changed secret: plan names the entry, not the value.
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("-prod\"", "-rotated\""));
    let r = p.run(&["plan", "--env", "prod"]);
    assert!(r.stdout.contains("(update: secret content masked; entries changed: DB_PASSWORD)"), "{r:?}");
    assert!(!r.all().contains(CANARY), "{r:?}");
}

#[test]
fn missing_key_fails_only_that_output() {
    let p = project("");
    assert_eq!(p.run(&["reconcile", "--once"]).code, 0);
    let before = p.read("out/prod/api.env");
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("\"api/host\" = \"api.prod\"\n", ""));
    p.write("source/staging.toml", &p.read("source/staging.toml").replace("www.staging", "www2.staging"));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("error: output \"api\", env \"prod\", entry \"HOST\": key \"api/host\" not found"),
        "{r:?}"
    );
    assert_eq!(p.read("out/prod/api.env"), before, "the failed output's file is untouched");
    assert!(p.read("out/staging/web.json").contains("www2.staging"), "other outputs still converge");
}

#[test]
fn a_broken_file_source_touches_no_target_of_that_env() {
    let p = project("");
    assert_eq!(p.run(&["reconcile", "--once"]).code, 0);
    let before = p.state();
    p.write("source/prod.toml", "[keys\n");
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("error: env prod: file source: "), "{r:?}");
    assert!(r.stderr.contains("prod.toml:1:"), "{r:?}");
    let after: Vec<_> = p.state().into_iter().filter(|f| !f.0.ends_with("prod.toml")).collect();
    let before: Vec<_> = before.into_iter().filter(|f| !f.0.ends_with("prod.toml")).collect();
    assert_eq!(after, before);
}

/// Each bad input: exit 2, file:line in the message, nothing written.
#[test]
fn bad_inputs_exit_2_with_a_location_and_write_nothing() {
    let base = files_config("");
    type Case<'a> = (&'a str, String, Option<(&'a str, &'a str)>, &'a [&'a str], &'a str);
    let cases: Vec<Case> = vec![
        (
            "unknown field",
            base.replace("[files]", "[files]\ndirr = \"x\""),
            None,
            &["reconcile", "--once"],
            "cfgsync.toml:2:1: unknown field `dirr`",
        ),
        ("toml syntax", base.replace("[envs.prod]", "[envs.prod"), None, &["reconcile", "--once"], "cfgsync.toml:4:"),
        (
            "template syntax",
            base.replace("HOST = \"{{ key(name='web/host') }}\"", "HOST = \"{{ key(name='web/host') \""),
            None,
            &["reconcile", "--once"],
            "cfgsync.toml:19:33: template syntax error: expected `or`, `and`",
        ),
        (
            "unknown function",
            base.replace("key(name='web/host')", "kye(name='web/host')"),
            None,
            &["validate"],
            "cfgsync.toml:19:12: output \"web\", entry \"HOST\": unknown function `kye` (did you mean `key`?)",
        ),
        (
            "template file syntax",
            base.replace("HOST = \"{{ key(name='web/host') }}\"", "HOST = { template = \"web.tera\" }"),
            Some(("templates/web.tera", "line one\n{% if %}\n")),
            &["reconcile", "--once"],
            "templates/web.tera:2:",
        ),
        (
            "unknown env flag",
            base.clone(),
            None,
            &["reconcile", "--once", "--env", "prd"],
            "unknown env \"prd\" (did you mean \"prod\"?)",
        ),
        (
            "unknown env in output",
            base.replace("name = \"web\"", "name = \"web\"\nenvs = [\"qa\"]"),
            None,
            &["plan"],
            "cfgsync.toml:18:9: output \"web\": unknown env \"qa\"",
        ),
        (
            "output without targets",
            format!("{base}\n[[output]]\nname = \"lonely\"\n[output.entries]\nA = \"a\"\n"),
            None,
            &["reconcile", "--once"],
            "cfgsync.toml:26:8: output \"lonely\" has no targets",
        ),
        (
            "path escaping the tree",
            base.replace("path = \"out/{{ env }}/web.json\"", "path = \"../{{ env }}/web.json\""),
            None,
            &["reconcile", "--once"],
            "cfgsync.toml:20:1: output \"web\": path \"../prod/web.json\" (env \"prod\") leaves the config's directory",
        ),
        (
            "non-literal secret path",
            base.replace("secret(path='api/db'", "secret(path=env ~ '/db'"),
            None,
            &["validate"],
            "`path` must be a string literal",
        ),
    ];
    for (what, config, extra_file, args, want) in cases {
        let p = project("");
        p.write("cfgsync.toml", &config);
        if let Some((rel, text)) = extra_file {
            p.write(rel, text);
        }
        let before = p.state();
        let r = p.run(args);
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(r.stderr.contains(want), "{what}: want {want:?} in stderr: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{what}: {r:?}");
        assert_eq!(p.state(), before, "{what}: something was written");
    }
}

#[test]
fn every_config_problem_is_reported_in_one_run() {
    let p = project("");
    let config = files_config("").replace("name = \"web\"", "name = \"web\"\nenvs = [\"qa\"]")
        + "\n[[output]]\nname = \"lonely\"\n[output.entries]\nA = \"a\"\n";
    p.write("cfgsync.toml", &config);
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("error: ")).count(), 2, "{r:?}");
}

#[test]
fn validate_reports_success() {
    let p = project("");
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.ends_with(": ok (2 envs, 2 outputs, 2 targets)\n"), "{r:?}");
}

#[test]
fn check_cmd_failure_keeps_the_old_file() {
    let p = project("");
    let config =
        files_config("").replace("format = \"json\"", "format = \"json\"\ncheck_cmd = \"grep -q www.prod {{src}}\"");
    p.write("cfgsync.toml", &config);
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("www.prod", "www.broken"));
    let before = p.read("out/prod/web.json");
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("check_cmd rejected"), "{r:?}");
    assert_eq!(p.read("out/prod/web.json"), before);
}

/// DESIGN: `NO_COLOR` respected. Colour follows anstream's rule (clap's
/// help follows it too): on a terminal (a pty through script(1)) unless
/// `NO_COLOR`; on a pipe only with `CLICOLOR_FORCE`; `NO_COLOR` wins over
/// `CLICOLOR_FORCE`. The escape codes are the same as before anstyle.
#[test]
fn colour_on_a_terminal_or_when_forced_and_never_with_no_color() {
    let p = project("");
    let plan = |env: &[(&str, &str)], pty: bool| {
        let mut cmd = p.command(&["plan", "--env", "prod"]);
        for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CI"] {
            cmd.env_remove(var);
        }
        cmd.env("TERM", "xterm");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if pty {
            // script(1) runs the command on a new pty; its stdout is a terminal.
            let line: Vec<String> = std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| format!("'{}'", a.to_str().unwrap()))
                .collect();
            let mut script = std::process::Command::new("script");
            script.args(["-qec", &line.join(" "), "/dev/null"]).current_dir(p.dir.path());
            script
                .env_clear()
                .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
                .env("PATH", std::env::var_os("PATH").unwrap());
            cmd = script;
        }
        let r = crate::support::run_output(cmd.output().unwrap());
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.replace("\r\n", "\n")
    };
    let plain = plan(&[], false);
    assert!(plain.contains("+ api → file") && !plain.contains('\x1b'), "{plain:?}");
    let green_plus = "\x1b[32m+\x1b[0m api → file";
    assert!(plan(&[("CLICOLOR_FORCE", "1")], false).contains(green_plus), "forced on a pipe");
    assert_eq!(plan(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], false), plain);
    let tty = plan(&[], true);
    assert!(tty.contains(green_plus), "{tty:?}");
    assert_eq!(plan(&[("NO_COLOR", "1")], true), plain);
}

/// Issue 21: `--output json` of `plan` and `reconcile` carries the counts
/// of the text's last line.
#[test]
fn json_reports_carry_the_summary_counts() {
    let p = project("");
    let summary = |args: &[&str]| {
        let r = p.run(args);
        let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        (r.code, json["applied"].clone(), json["summary"].clone())
    };
    let zero = serde_json::json!({"create": 0, "update": 0, "delete": 0, "drift": 0, "unchanged": 0, "not_written": 0, "failed": 0});
    let with = |changes: &[(&str, usize)]| {
        let mut v = zero.clone();
        for (k, n) in changes {
            v[*k] = (*n).into();
        }
        v
    };
    assert_eq!(summary(&["--output", "json", "plan"]), (0, false.into(), with(&[("create", 4)])));
    assert_eq!(summary(&["--output", "json", "reconcile", "--once"]), (0, true.into(), with(&[("create", 4)])));
    assert_eq!(summary(&["--output", "json", "reconcile", "--once"]), (0, true.into(), with(&[("unchanged", 4)])));
    // A failing output counts as failed; the other envs' files stay unchanged.
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("\"web/host\"", "\"web/hostx\""));
    assert_eq!(summary(&["--output", "json", "plan"]), (1, false.into(), with(&[("unchanged", 3), ("failed", 1)])));
}

/// Issue 21: `explain` names what each target writes (the object, the CI
/// variables), and only the targets that take an entry using the value.
#[test]
fn explain_names_the_objects_that_use_a_value() {
    let p = Project::new(
        "instance = \"t\"\n[files]\n[envs.prod]\n[[output]]\nname = \"web\"\n[output.entries]\nHOST = \"{{ key(name='web/host') }}\"\nPORT = \"{{ key(name='web/port') }}\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"default\"\nname = \"web\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"http://127.0.0.1:9\"\nproject = \"group/web\"\nentries = [\"PORT\"]\n[[output.target]]\nkind = \"file\"\npath = \"out/web.env\"\n",
    );
    p.write("source/prod.toml", "[keys]\n\"web/host\" = \"www\"\n\"web/port\" = \"80\"\n");
    let r = p.run(&["explain", "prod", "web/host"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("→ ConfigMap default/web in context prod (defined at "), "{r:?}");
    assert!(r.stdout.contains("→ file "), "{r:?}");
    assert!(!r.stdout.contains("GitLab"), "the GitLab target takes only PORT: {r:?}");
    let r = p.run(&["explain", "prod", "web/port"]);
    assert!(r.stdout.contains("→ GitLab project group/web"), "{r:?}");
}
