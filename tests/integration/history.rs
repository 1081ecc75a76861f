//! The history against real etcd and OpenBao: records written by passes
//! that write, pruned by count and age; `diff` at a past revision and a
//! past time; a compacted revision and a destroyed secret version give
//! errors naming what is gone and the oldest point still reachable.

use serde_json::Value;

use crate::support::{Etcd, Project, Run, Vault, server_config};

pub const CANARY: &str = "CANARY-7d3e-history";

pub const OUTPUTS: &str = r#"
[history]
keep = 3

[envs.prod]
[envs.staging]

[[output]]
name = "api"
[output.entries]
DB_HOST = "{{ key(name='api/db_host') }}"
DB_PASSWORD = "{{ secret(path='api/db', field='password') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"

[[output]]
name = "web"
[output.entries]
FLAG = "{{ key(name='web/flag') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/web.env"
"#;

pub fn seed(etcd: &Etcd, vault: &Vault) {
    for env in ["prod", "staging"] {
        etcd.put(&format!("/cfgsync/{env}/api/db_host"), &format!("db1.{env}.internal"));
        etcd.put(&format!("/cfgsync/{env}/web/flag"), "off");
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("{CANARY}-{env}-1"))]);
    }
}

pub fn project(etcd: &Etcd, vault: &Vault, outputs: &str) -> Project {
    let p = Project::new(&format!("instance = \"history-test\"\n{}", server_config(etcd, vault, outputs)));
    p.write("vault-token", &vault.root_token);
    p
}

pub fn ok(run: Run, what: &str) -> Run {
    assert_eq!(run.code, 0, "{what}: {run:?}");
    assert!(!run.all().contains(CANARY), "{what}: a secret value leaked: {run:?}");
    run
}

/// The env's records as `etcdctl get --prefix` lists them: (key, record).
pub fn records(etcd: &Etcd, env: &str) -> Vec<(String, Value)> {
    let out = etcd.ctl_ok(&["get", "--prefix", &format!("/cfgsync/_history/{env}/")]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .map(|kv| (kv[0].to_owned(), serde_json::from_str(kv[1]).unwrap_or_else(|e| panic!("{e}: {}", kv[1]))))
        .collect()
}

fn revision_now(etcd: &Etcd) -> i64 {
    let out = etcd.ctl_ok(&["get", "-w", "json", "/cfgsync/no-such-key"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[test]
fn passes_that_write_are_recorded_without_values_and_pruned_by_count_and_age() {
    let etcd = Etcd::start();
    let vault = Vault::start();
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, OUTPUTS);
    ok(p.run(&["reconcile", "--once"]), "first pass");
    let first = records(&etcd, "prod");
    assert_eq!(first.len(), 1, "{first:?}");
    let r = &first[0].1;
    assert_eq!(r["ok"], true);
    assert!(r["replica"].as_str().unwrap().starts_with("reconcile@"), "{r}");
    assert_eq!(r["secrets"]["api/db"], 1, "the secret's version: {r}");
    assert!(r["config"].as_str().unwrap().starts_with("sha256:"), "{r}");
    let written: Vec<&str> = r["targets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(written, ["prod/api/0", "prod/web/0"]);
    // No fingerprint key in this Vault: the secret output has no
    // fingerprint recorded (never a plain hash of a secret); the plain one has.
    assert_eq!(r["targets"][0].get("fp"), None, "{r}");
    assert!(r["targets"][1]["fp"].as_str().unwrap().starts_with("sha256:"), "{r}");
    assert!(!r.to_string().contains(CANARY), "no secret value in a record: {r}");
    assert!(!r.to_string().contains("db1.prod.internal"), "no plain value either: {r}");

    // A pass that writes nothing records nothing (one-shot passes record writes only).
    ok(p.run(&["reconcile", "--once"]), "no-op pass");
    assert_eq!(records(&etcd, "prod").len(), 1);

    // Each change is a pass that writes; keep = 3 (pruned once past 3 + 1).
    for i in 2..=6 {
        etcd.put("/cfgsync/prod/web/flag", &format!("v{i}"));
        ok(p.run(&["reconcile", "--once", "--env", "prod"]), "pass after a change");
        let now = records(&etcd, "prod");
        assert!(now.len() <= 4, "pass {i}: {} records kept: {now:?}", now.len());
    }
    let kept = records(&etcd, "prod");
    assert!((3..=4).contains(&kept.len()), "{kept:?}");
    assert!(!kept.iter().any(|(k, _)| k == &first[0].0), "the oldest record was pruned");
    // Only web changed since the first pass: its record lists web only, and
    // the secret versions, unchanged, are not repeated.
    let last = &kept.last().unwrap().1;
    assert_eq!(last["targets"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["targets"][0]["id"], "prod/web/0");

    // A record older than max_age (default 30 days) goes with the next write.
    let old = "/cfgsync/_history/prod/0000000001000-000000000001";
    etcd.put(old, &first[0].1.to_string());
    etcd.put("/cfgsync/prod/web/flag", "v7");
    ok(p.run(&["reconcile", "--once", "--env", "prod"]), "pass after a change");
    assert!(!records(&etcd, "prod").iter().any(|(k, _)| k == old), "the old record was pruned by age");
}

#[test]
fn diff_reads_a_past_revision_and_a_past_time_and_says_what_is_gone() {
    let etcd = Etcd::start();
    let vault = Vault::start();
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, &OUTPUTS.replace("keep = 3", "keep = 50"));
    ok(p.run(&["reconcile", "--once"]), "first pass");
    let before = records(&etcd, "prod")[0].1.clone();
    let rev = before["revision"].as_i64().unwrap();
    let at = before["at_ms"].as_i64().unwrap();
    // Between the passes: a time that names the first.
    let between = cfgsync::when::format_ms(at + 1);

    etcd.put("/cfgsync/prod/api/db_host", "db2.prod.internal");
    etcd.put("/cfgsync/prod/api/new_key", "new");
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-prod-2"))]);
    ok(p.run(&["reconcile", "--once"]), "second pass");

    for then in [format!("prod@rev:{rev}"), format!("prod@{between}"), "prod@-1pass".to_owned()] {
        let run = p.run(&["diff", &then, "prod"]);
        assert_eq!(run.code, 1, "{then}: {run:?}");
        assert!(!run.all().contains(CANARY), "{run:?}");
        let header = format!("--- {then} (etcd revision {rev}, pass of ");
        assert!(run.stdout.starts_with(&header), "{then}: {run:?}");
        for line in [
            "  ~ api/db_host\n      - db1.prod.internal\n      + db2.prod.internal\n",
            "  + api/new_key\n",
            "  ~ api/db#password (secret, differs)\n",
        ] {
            assert!(run.stdout.contains(line), "{then}: {line:?} in {run:?}");
        }
        let json = p.run(&["diff", &then, "prod", "--output", "json"]);
        let v: Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(v["revisions"][&then], rev, "{v}");
        assert_eq!(v["summary"]["changed"], 2, "{v}");
    }
    // The past against the past: the same point is the same.
    let same = p.run(&["diff", &format!("prod@rev:{rev}"), &format!("prod@{between}")]);
    assert_eq!(same.code, 0, "{same:?}");
    // And against another env now.
    let run = p.run(&["diff", &format!("prod@rev:{rev}"), "staging"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("  ~ api/db_host\n      - db1.prod.internal\n      + db1.staging.internal\n"),
        "{run:?}"
    );

    // A time before any record.
    let run = p.run(&["diff", "prod@2001-01-01T00:00:00Z", "prod"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("no pass of env prod is recorded at or before it (the oldest record is of "),
        "{run:?}"
    );
    let run = p.run(&["diff", "prod@-9passes", "prod"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("only 2 passes of env prod are recorded"), "{run:?}");

    // The secret's first version destroyed: named, with the oldest readable.
    vault.bao_ok(&["kv", "destroy", "-mount=secret", "-versions=1", "prod/api/db"]);
    let run = p.run(&["diff", &format!("prod@rev:{rev}"), "prod"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("vault: secret/prod/api/db version 1 was destroyed; the oldest version still readable is 2"),
        "{run:?}"
    );

    // etcd compacted past the first pass: named, with the oldest revision.
    let now = revision_now(&etcd);
    etcd.ctl_ok(&["compaction", &now.to_string()]);
    let run = p.run(&["diff", &format!("prod@rev:{rev}"), "prod"]);
    assert_eq!(run.code, 2, "{run:?}");
    let expected = format!(
        "error: etcd revision {rev} of env prod was compacted: its values are gone; the oldest revision still readable is {now}"
    );
    assert!(run.stderr.contains(&expected), "{expected}\n{run:?}");
    let run = p.run(&["diff", &format!("prod@rev:{}", now + 1000), "prod"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&format!("etcd revision {} of env prod is in the future", now + 1000)), "{run:?}");
}

/// A lease granted by etcd, as a number.
fn lease(etcd: &Etcd) -> i64 {
    // "lease 694d9a3c1b2e4f07 granted with TTL(60s)"
    let out = etcd.ctl_ok(&["lease", "grant", "60"]);
    let hex = out.split_whitespace().nth(1).unwrap_or_else(|| panic!("{out}"));
    i64::from_str_radix(hex, 16).unwrap()
}

/// The service's leader writes its records fenced by its election lease:
/// a replica whose lease no longer holds the env's leader key (deposed,
/// or never elected) writes nothing, and is told so.
#[test]
fn only_the_replica_holding_the_leader_key_records() {
    use cfgsync::history::{Guard, HistoryError, HistoryStore, PassRecord, record::FORMAT};
    let etcd = Etcd::start();
    let vault = Vault::start();
    let p = project(&etcd, &vault, OUTPUTS);
    let config = cfgsync::config::load(&p.path("cfgsync.toml"), &cfgsync::config::ProcessEnv).unwrap();
    let store = HistoryStore::for_config(&config, None);
    let leader_key = "/cfgsync/_service/envs/prod/leader";
    let (ours, theirs) = (lease(&etcd), lease(&etcd));
    etcd.ctl_ok(&["put", "--lease", &format!("{theirs:x}"), leader_key, "R2"]);
    let record = |at_ms: i64| PassRecord {
        format: FORMAT,
        at_ms,
        replica: "R1".into(),
        revision: Some(1),
        secrets: None,
        config: "sha256:00".into(),
        git: None,
        ok: true,
        code: None,
        partial: false,
        unchanged: 0,
        targets: Vec::new(),
        pruned: Vec::new(),
    };
    let retention = config.history.retention();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = cfgsync::when::now_ms();

    let deposed = Guard { leader_key: leader_key.into(), lease: ours };
    let refused = rt.block_on(store.write("prod", &record(now), Some(&deposed), retention));
    assert!(matches!(refused, Err(HistoryError::NotLeader { .. })), "{refused:?}");
    assert!(records(&etcd, "prod").is_empty(), "a replica that does not lead wrote a record");

    let leader = Guard { leader_key: leader_key.into(), lease: theirs };
    let written = rt.block_on(store.write("prod", &record(now + 1), Some(&leader), retention)).unwrap();
    assert_eq!(written.requests, 1, "one transaction per record: {written:?}");
    let kept = records(&etcd, "prod");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1["at_ms"], now + 1);
}
