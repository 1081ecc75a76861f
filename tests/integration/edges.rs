//! The edges of the command line: `reconcile` without `--once`,
//! `validate --output json`, a reader that closes stdout early, and
//! multi-line backend errors printed as one line.

use std::process::Stdio;

use crate::support::{Etcd, Project, Run, Vault, run_output, server_config};

/// A copy of examples/quickstart (the file source; no server needed).
fn quickstart() -> Project {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let p = Project::new("");
    let copy = std::process::Command::new("cp").arg("-r").arg(src.join(".")).arg(p.dir.path()).status().unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(p.path("out"));
    p
}

#[test]
fn reconcile_without_once_names_both_commands_and_exits_2() {
    let p = quickstart();
    let before = p.state();
    let r = p.run(&["reconcile"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "error: `cfgsync reconcile` runs one pass and needs --once: \
         `cfgsync reconcile --once` for one pass, `cfgsync run` for the service\n"
    );
    assert_eq!(r.stdout, "");
    assert_eq!(p.state(), before, "nothing written");
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {r:?}"))
}

#[test]
fn validate_output_json_on_success() {
    let p = quickstart();
    let r = p.run(&["validate", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr, "");
    let config = p.path("cfgsync.toml").display().to_string();
    assert_eq!(
        json(&r),
        serde_json::json!({
            "ok": true,
            "config": config,
            "envs": ["prod", "staging"],
            "outputs": [
                { "name": "api", "envs": ["prod", "staging"], "secret": true, "targets": 1 },
                { "name": "web", "envs": ["prod", "staging"], "secret": false, "targets": 1 },
            ],
            "targets": 2,
        })
    );
}

#[test]
fn validate_output_json_lists_every_problem_with_its_location_and_exits_2() {
    let p = quickstart();
    let config = p.read("cfgsync.toml");
    let config = config.replace("name = \"web\"", "name = \"web\"\nenvs = [\"qa\"]")
        + "\n[[output]]\nname = \"lonely\"\n[output.entries]\nA = \"a\"\n";
    p.write("cfgsync.toml", &config);
    let line_of = |needle: &str| config.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let file = p.path("cfgsync.toml").display().to_string();
    let r = p.run(&["validate", "--output", "json"]);
    assert_eq!(r.code, 2, "{r:?}");
    let doc = json(&r);
    assert_eq!(doc["ok"], false, "{r:?}");
    let problems = doc["problems"].as_array().unwrap_or_else(|| panic!("no problems array: {r:?}"));
    assert_eq!(problems.len(), 2, "{r:?}");
    assert_eq!(problems[0]["file"], file.as_str());
    assert_eq!(problems[0]["line"], line_of("envs = [\"qa\"]"));
    assert_eq!(problems[0]["column"], 9);
    assert!(problems[0]["message"].as_str().unwrap().starts_with("output \"web\": unknown env \"qa\""), "{r:?}");
    assert_eq!(problems[1]["file"], file.as_str());
    assert_eq!(problems[1]["line"], line_of("name = \"lonely\""));
    assert_eq!(problems[1]["column"], 8);
    assert!(problems[1]["message"].as_str().unwrap().starts_with("output \"lonely\" has no targets"), "{r:?}");
    // People still read the cause on stderr, one line per problem.
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("error: ")).count(), 2, "{r:?}");
}

/// Runs cfgsync with stdout a pipe whose reader is already gone, as in
/// `cfgsync … | head -c1` once `head` has exited.
fn run_with_closed_stdout(p: &Project, args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = p.command(args);
    cmd.stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped());
    run_output(cmd.output().unwrap())
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let p = quickstart();
    // The exit code each command has when its reader stays.
    let cases: &[(&[&str], &[i32])] = &[
        (&["validate"], &[0]),
        (&["validate", "--output", "json"], &[0]),
        (&["plan"], &[0]),
        (&["plan", "--output", "json"], &[0]),
        (&["reconcile", "--once", "--dry-run"], &[0]),
        (&["reconcile", "--once", "--output", "json"], &[0]),
        // diff(1)'s codes: 1 = different. With the reader gone the result is
        // not printed; 0 or 1 are both fine, an error (2) or a panic is not.
        (&["diff", "staging", "prod"], &[0, 1]),
        (&["diff", "staging", "prod", "--output", "json"], &[0, 1]),
        (&["explain", "prod", "api/db_host"], &[0]),
        (&["explain", "prod", "api/db_host", "--output", "json"], &[0]),
        (&["pull", "--env", "prod", "--dry-run"], &[0]),
        (&["completions", "bash"], &[0]),
        (&["man"], &[0]),
    ];
    for (args, codes) in cases {
        // Each command prints something, so the closed pipe is really hit.
        let open = p.run(args);
        assert!(!open.stdout.is_empty(), "{args:?} prints nothing: {open:?}");
        assert!(codes.contains(&open.code), "{args:?}: {open:?}");
        let closed = run_with_closed_stdout(&p, args);
        assert_eq!(closed.stderr, "", "{args:?}: noise on stderr");
        assert!(codes.contains(&closed.code), "{args:?}: {closed:?}");
    }
}

#[test]
fn a_closed_stdout_keeps_the_exit_code_of_a_failed_pass() {
    let p = quickstart();
    p.write("source/prod.toml", &p.read("source/prod.toml").replace("\"api/db_host\"", "\"api/db_hots\""));
    let r = run_with_closed_stdout(&p, &["reconcile", "--once"]);
    assert_eq!(r.code, 1, "the pass failed: {r:?}");
    assert!(r.stderr.contains("api/db_host"), "the failure is still reported on stderr: {r:?}");
    assert!(!r.stderr.to_lowercase().contains("broken pipe"), "{r:?}");
    assert!(p.path("out/staging/api.env").exists(), "the pass ran: {r:?}");
}

#[test]
fn a_multi_line_vault_error_is_printed_on_one_line() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.put("/cfgsync/prod/api/db_user", "api");
    let p = Project::new(&server_config(
        &etcd,
        &vault,
        r#"
[envs.prod]

[[output]]
name = "api"
[output.entries]
DATABASE_URL = "postgres://{{ key(name='api/db_user') }}:{{ secret(path='api/db', field='password') }}@db/api"
[[output.target]]
kind = "file"
path = "out/api.env"
"#,
    ));
    // A token that may read nothing: OpenBao answers 403 with a body of
    // several lines ("1 error occurred:\n\t* permission denied\n\n").
    let token = vault.token_with_policy("nothing", "path \"secret/data/none\" { capabilities = [\"read\"] }", "1h");
    p.write("vault-token", &token);
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!r.stderr.is_empty(), "{r:?}");
    for line in r.stderr.lines() {
        assert!(line.starts_with("error: "), "a line that continues an error: {line:?} in {r:?}");
    }
    assert!(
        r.stderr.lines().any(|l| l.starts_with("error: env prod:") && l.contains("permission denied")),
        "the cause is on the error's own line: {r:?}"
    );
    assert!(!p.path("out/api.env").exists(), "{r:?}");
}
