//! `cfgsync rollback` against real etcd and OpenBao: change, roll back,
//! every target equals the old render, owner/reason recorded, a rollback
//! of the rollback, and the guard aborting on a concurrent change.

use std::io::{BufRead, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::history::{CANARY, OUTPUTS, ok, project, records, seed};
use crate::support::{Etcd, Project, Vault};

fn files(p: &Project) -> (String, String) {
    (p.read("out/prod/api.env"), p.read("out/prod/web.env"))
}

fn secret(vault: &Vault, path: &str) -> Value {
    serde_json::from_str(&vault.bao_ok(&["kv", "get", "-format=json", "-mount=secret", path])).unwrap()
}

#[test]
fn a_rollback_writes_the_old_values_as_new_revisions_and_every_target_follows() {
    let etcd = Etcd::start();
    let vault = Vault::start();
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, &OUTPUTS.replace("keep = 3", "keep = 50"));
    ok(p.run(&["reconcile", "--once"]), "first pass");
    let then = files(&p);
    let first_rev = records(&etcd, "prod")[0].1["revision"].as_i64().unwrap();

    // The incident: a bad host, a new key, a rotated password, a flag.
    etcd.put("/cfgsync/prod/api/db_host", "db-bad.prod.internal");
    etcd.put("/cfgsync/prod/api/new_key", "new");
    etcd.put("/cfgsync/prod/web/flag", "on");
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-prod-2"))]);
    ok(p.run(&["reconcile", "--once"]), "the bad pass");
    let bad = files(&p);
    assert_ne!(bad, then);
    let bad_rev = records(&etcd, "prod").last().unwrap().1["revision"].as_i64().unwrap();

    // The plan, then the writes.
    let run = p.run(&[
        "rollback",
        "--env",
        "prod",
        "--to",
        &format!("rev:{first_rev}"),
        "--owner",
        "oncall",
        "--reason",
        "INC-42",
        "--yes",
    ]);
    let run = ok(run, "rollback");
    for line in [
        format!("rollback prod to prod@rev:{first_rev} (etcd revision {first_rev}, pass of "),
        "  ~ key api/db_host\n      - db-bad.prod.internal      (now)\n      + db1.prod.internal      (then)\n"
            .to_owned(),
        "  - key (created since: deleted) api/new_key\n".to_owned(),
        "  ~ key web/flag\n".to_owned(),
        "  ~ secret api/db#password (secret, differs): version 1 written again as a new version\n".to_owned(),
        "targets that will follow (by the next pass):\n  api: out/prod/api.env\n  web: out/prod/web.env\n".to_owned(),
        "vault: secret/prod/api/db: version 1 written again as version 3\n".to_owned(),
        "no service leads env prod: `cfgsync reconcile --once --env prod` writes the targets\n".to_owned(),
    ] {
        assert!(run.stdout.contains(&line), "{line:?} in {run:?}");
    }
    // New revisions, with who and why.
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db1.prod.internal\n");
    assert_eq!(etcd.ctl_ok(&["get", "/cfgsync/prod/api/new_key"]), "");
    let meta: Value =
        serde_json::from_str(&etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/_meta/prod/api/db_host"])).unwrap();
    assert_eq!(meta["owner"], "oncall");
    assert_eq!(
        meta["reason"],
        format!("rollback to prod@rev:{first_rev} (etcd revision {first_rev}) by oncall: INC-42")
    );
    let s = secret(&vault, "prod/api/db");
    assert_eq!(s["data"]["data"]["password"], format!("{CANARY}-prod-1"));
    assert_eq!(s["data"]["metadata"]["version"], 3);
    let custom = &secret(&vault, "prod/api/db")["data"]["metadata"]["custom_metadata"];
    assert_eq!(custom["reason"], meta["reason"], "{custom}");

    // The targets follow by the ordinary loop, to exactly the old render.
    ok(p.run(&["reconcile", "--once"]), "the pass after the rollback");
    assert_eq!(files(&p), then, "every target equals the old render");
    let run = p.run(&["rollback", "--env", "prod", "--to", &format!("rev:{first_rev}"), "--yes"]);
    assert!(ok(run, "again").stdout.contains("nothing to roll back"), "a second rollback has nothing to do");

    // Rolling back the rollback: back to the bad state, as new revisions again.
    let run = p.run(&["rollback", "--env", "prod", "--to", &format!("rev:{bad_rev}"), "--owner", "oncall2", "--yes"]);
    let run = ok(run, "rollback of the rollback");
    assert!(run.stdout.contains("  + key (deleted since: created again) api/new_key\n"), "{run:?}");
    assert!(run.stdout.contains("vault: secret/prod/api/db: version 2 written again as version 4\n"), "{run:?}");
    ok(p.run(&["reconcile", "--once"]), "the pass after it");
    assert_eq!(files(&p), bad);

    // --only: one key; a dry run writes nothing.
    let run = p.run(&[
        "rollback",
        "--env",
        "prod",
        "--to",
        &format!("rev:{first_rev}"),
        "--only",
        "api/db_host",
        "--dry-run",
    ]);
    let run = ok(run, "dry run");
    assert!(run.stdout.contains("  ~ key api/db_host\n"), "{run:?}");
    assert!(!run.stdout.contains("web/flag") && !run.stdout.contains("api/db#password"), "{run:?}");
    assert!(run.stdout.contains("dry run: nothing written"), "{run:?}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db-bad.prod.internal\n");

    // The log tells the story, one line per change.
    let log = ok(p.run(&["log", "--env", "prod", "api/db_host"]), "log");
    let lines: Vec<&str> = log.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{log:?}");
    assert!(lines[0].contains("key api/db_host db1.prod.internal → db-bad.prod.internal"), "{log:?}");
    assert!(
        lines[1].contains("key api/db_host db-bad.prod.internal → db1.prod.internal  by oncall: rollback to"),
        "{log:?}"
    );
    assert!(lines[1].contains(": prod/api/0"), "carried to the api target: {log:?}");
    let json: Value =
        serde_json::from_str(&ok(p.run(&["log", "--env", "prod", "--output", "json"]), "log").stdout).unwrap();
    let secrets: Vec<&Value> = json.as_array().unwrap().iter().filter(|c| c["kind"] == "secret").collect();
    // Since the oldest recorded pass: versions 2, 3 (rollback), 4 (its rollback).
    assert_eq!(secrets.len(), 3, "{json}");
    assert_eq!(secrets[2]["reason"], format!("rollback to prod@rev:{bad_rev} (etcd revision {bad_rev}) by oncall2"));
    assert!(!json.to_string().contains(CANARY));
}

/// Runs `rollback` on a terminal (util-linux `script`), and while it asks
/// "Write this?" runs `meanwhile`; then answers yes.
fn rollback_with_change_meanwhile(p: &Project, to: &str, meanwhile: impl FnOnce()) -> (String, bool) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line = [
        quote(env!("CARGO_BIN_EXE_cfgsync")),
        "--config".to_owned(),
        quote(p.path("cfgsync.toml").to_str().unwrap()),
        "rollback".to_owned(),
        "--env".to_owned(),
        "prod".to_owned(),
        "--to".to_owned(),
        quote(to),
    ]
    .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).current_dir(p.dir.path());
    cmd.env("NO_COLOR", "1").env("HOME", p.dir.path()).env_remove("VAULT_ADDR").env_remove("VAULT_TOKEN");
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut all = String::new();
        let mut chunk = Vec::new();
        loop {
            chunk.clear();
            match r.read_until(b' ', &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    all.push_str(&String::from_utf8_lossy(&chunk));
                    let _ = tx.send(all.clone());
                }
            }
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the question in time");
        if seen.contains("Write this?") {
            break;
        }
    }
    meanwhile();
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let status = child.wait().unwrap();
    let mut out = reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    out.push_str(&err);
    (out.replace("\r\n", "\n"), status.success())
}

#[test]
fn a_change_between_the_plan_and_the_write_aborts_the_rollback() {
    let etcd = Etcd::start();
    let vault = Vault::start();
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, &OUTPUTS.replace("keep = 3", "keep = 50"));
    ok(p.run(&["reconcile", "--once"]), "first pass");
    let first_rev = records(&etcd, "prod")[0].1["revision"].as_i64().unwrap();
    etcd.put("/cfgsync/prod/api/db_host", "db-bad.prod.internal");
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-prod-2"))]);

    // Someone changes a key of the env (not one the plan touches) meanwhile.
    let (out, success) = rollback_with_change_meanwhile(&p, &format!("rev:{first_rev}"), || {
        etcd.put("/cfgsync/prod/api/other", "concurrent");
    });
    assert!(!success, "{out}");
    assert!(out.contains("changed since the plan was read"), "{out}");
    assert!(out.contains("a concurrent change; nothing was written: run the command again"), "{out}");
    assert!(!out.contains(CANARY), "{out}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db-bad.prod.internal\n");
    assert_eq!(secret(&vault, "prod/api/db")["data"]["metadata"]["version"], 2, "Vault not written either");

    // And a key the plan touches.
    let (out, success) = rollback_with_change_meanwhile(&p, &format!("rev:{first_rev}"), || {
        etcd.put("/cfgsync/prod/api/db_host", "db-other.prod.internal");
    });
    assert!(!success, "{out}");
    assert!(out.contains("etcd: api/db_host (now at revision "), "{out}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db-other.prod.internal\n");

    // A secret the plan writes back gets a new version meanwhile: checked
    // before anything is written, so etcd is not written either.
    let (out, success) = rollback_with_change_meanwhile(&p, &format!("rev:{first_rev}"), || {
        vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-prod-3"))]);
    });
    assert!(!success, "{out}");
    assert!(
        out.contains("secret/prod/api/db changed since it was shown (it is no longer version 2); nothing was written"),
        "{out}"
    );
    assert!(!out.contains(CANARY), "{out}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db-other.prod.internal\n");
    assert_eq!(secret(&vault, "prod/api/db")["data"]["metadata"]["version"], 3, "Vault not written");

    // Without the change, the same rollback goes through.
    let (out, success) = rollback_with_change_meanwhile(&p, &format!("rev:{first_rev}"), || {});
    assert!(success, "{out}");
    assert_eq!(etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/prod/api/db_host"]), "db1.prod.internal\n");
    // The concurrent key is not the point's: the rollback deletes it too.
    assert_eq!(etcd.ctl_ok(&["get", "/cfgsync/prod/api/other"]), "");
}
