//! `[vault] refresh` and the secret markers under `cfgsync run`: an idle
//! interval pass does not re-read the secrets it holds; a secret changed
//! behind cfgsync's back (the bao CLI) is picked up within `refresh`; one
//! changed through `cfgsync set-secret` propagates at once through its
//! marker, which holds a version number and never a value.

use std::process::Stdio;
use std::time::Duration;

use crate::service::{Service, read_or_empty};
use crate::support::{Etcd, Project, Vault, run_output, server_config, wait_until};

const CANARY: &str = "CANARY-5e1d-refresh";

fn project(etcd: &Etcd, vault: &Vault, refresh: &str) -> Project {
    let outputs = r#"[envs.prod]

[[output]]
name = "db"
[output.entries]
PASSWORD = "{{ secret(path='db', field='password') }}"
API = "{{ secret(path='api', field='token') }}"
HOST = "{{ key(name='host') }}"
[[output.target]]
kind = "file"
path = "out/db.env"
"#;
    let config = format!("interval = \"1s\"\n{}", server_config(etcd, vault, outputs)).replace(
        "auth = { method = \"token\", token_file = \"vault-token\" }",
        &format!("auth = {{ method = \"token\", token_file = \"vault-token\" }}\nrefresh = \"{refresh}\""),
    );
    let p = Project::new(&config);
    p.write("vault-token", &vault.root_token);
    p
}

fn seed(etcd: &Etcd, vault: &Vault) {
    etcd.put("/cfgsync/prod/host", "db.prod");
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-1"))]);
    vault.kv_put("prod/api", &[("token", &format!("{CANARY}-api"))]);
}

fn password_is(p: &Project, n: &str) -> Option<()> {
    read_or_empty(&p.path("out/db.env")).contains(&format!("PASSWORD={CANARY}-{n}\n")).then_some(())
}

fn reads(svc: &Service) -> f64 {
    svc.metric("cfgsync_secret_reads_total{env=\"prod\"}").unwrap_or(0.0)
}

fn interval_passes(svc: &Service) -> f64 {
    svc.metric("cfgsync_passes_total{env=\"prod\",reason=\"interval\"}").unwrap_or(0.0)
}

/// Waits for `n` more interval passes than now; returns the Vault reads
/// they made.
fn reads_over_interval_passes(svc: &Service, n: f64) -> f64 {
    // Start at a pass boundary: the reads of a pass in flight are not counted.
    let start = interval_passes(svc);
    wait_until("an interval pass", Duration::from_secs(10), || (interval_passes(svc) > start).then_some(()));
    let (start, before) = (interval_passes(svc), reads(svc));
    wait_until("interval passes", Duration::from_secs(20), || (interval_passes(svc) >= start + n).then_some(()));
    // The last counted pass may still be reading: wait for the next one to start.
    let (_, after) = wait_until("one more interval pass", Duration::from_secs(10), || {
        let r = reads(svc);
        (interval_passes(svc) > start + n).then_some(((), r))
    });
    after - before
}

#[test]
fn refresh_holds_secrets_between_interval_passes_and_a_short_one_reads_them_again() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, "1h");
    let svc = Service::start(&p, &[], &[]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, "1"));
    let first = reads(&svc);
    assert_eq!(first, 2.0, "the first pass reads both secrets once");

    // Idle interval passes read nothing from Vault.
    let idle = reads_over_interval_passes(&svc, 3.0);
    assert_eq!(idle, 0.0, "an idle interval pass re-read secrets held for 1h");

    // Behind cfgsync's back: not picked up by interval passes within 1h.
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-2"))]);
    let idle = reads_over_interval_passes(&svc, 3.0);
    assert_eq!(idle, 0.0);
    assert!(password_is(&p, "1").is_some(), "{}", read_or_empty(&p.path("out/db.env")));
    // `rotate verify` asks for a pass that reads every secret now.
    let r = p.run(&["rotate", "verify", "--env", "prod", "--secret", "db#password", "--wait", "20s"]);
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "{r:?}");
    wait_until("the asked pass", Duration::from_secs(20), || password_is(&p, "2"));
    drop(svc);

    // With refresh = 2s the same change is picked up.
    let p = project(&etcd, &vault, "2s");
    let svc = Service::start(&p, &[], &[]);
    wait_until("the current value", Duration::from_secs(20), || password_is(&p, "2"));
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-3"))]);
    wait_until("the value changed behind cfgsync's back", Duration::from_secs(15), || password_is(&p, "3"));
    // And it is still not every pass: 2 secrets per 2 s at most, with 1 s passes.
    let over_four = reads_over_interval_passes(&svc, 4.0);
    assert!(over_four <= 6.0, "{over_four} reads over 4 interval passes with refresh 2s");
    assert!(!svc.log().contains(CANARY), "a secret value in the log");
}

#[test]
fn set_secret_propagates_through_its_marker_at_once_and_the_marker_holds_no_value() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, "1h");
    let svc = Service::start(&p, &[], &[("RUST_LOG", "cfgsync=debug")]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, "1"));
    // Held: interval passes read nothing.
    assert_eq!(reads_over_interval_passes(&svc, 2.0), 0.0);

    let r = set_secret(&p, &format!("{CANARY}-set"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "{r:?}");
    assert!(!r.stderr.contains("warning"), "the marker was not written: {r:?}");
    wait_until("set-secret's value through the marker", Duration::from_secs(5), || password_is(&p, "set"));
    assert!(svc.log().contains("a secret was written through cfgsync"), "{}", svc.log());

    // The marker: the version number, nothing else; nothing of the
    // secret anywhere in etcd.
    let marker = etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/_secret-versions/prod/db"]);
    assert_eq!(marker.trim(), "2");
    let everything = etcd.ctl_ok(&["get", "--prefix", ""]);
    assert!(!everything.contains(CANARY), "a secret value in etcd:\n{everything}");
    // Not an env key: the file has exactly its three entries.
    let out = read_or_empty(&p.path("out/db.env"));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!svc.log().contains(CANARY), "a secret value in the log");
    // Only the marked path was read again; the other stays held.
    let held = reads(&svc);
    assert_eq!(reads_over_interval_passes(&svc, 2.0), 0.0);
    assert_eq!(held, 3.0, "2 at start, then only the marked path");
}

/// `cfgsync set-secret prod db password` with `value` on stdin.
fn set_secret(p: &Project, value: &str) -> crate::support::Run {
    p.run_with_stdin(&["set-secret", "prod", "db", "password", "--yes"], &format!("{value}\n"))
}

#[test]
fn rollback_of_a_secret_announces_it_through_its_marker_and_the_service_reads_only_that_path() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, "1h");
    let svc = Service::start(&p, &[], &[]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, "1"));
    // The point to go back to: the service's first pass, which read version 1.
    let first = crate::history::records(&etcd, "prod");
    let first_rev = first.last().unwrap().1["revision"].as_i64().unwrap();

    let r = set_secret(&p, &format!("{CANARY}-2"));
    assert_eq!(r.code, 0, "{r:?}");
    wait_until("set-secret's value", Duration::from_secs(5), || password_is(&p, "2"));
    assert_eq!(reads_over_interval_passes(&svc, 2.0), 0.0, "held between passes");
    let before = reads(&svc);

    let r = p.run(&["rollback", "--env", "prod", "--to", &format!("rev:{first_rev}"), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("version 1 written again as version 3"), "{r:?}");
    assert!(!r.all().contains(CANARY) && !r.stderr.contains("warning"), "{r:?}");
    assert!(r.stdout.contains("told the service (leader "), "{r:?}");
    // The marker says version 3 (a number, nothing else) ...
    let marker = etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/_secret-versions/prod/db"]);
    assert_eq!(marker.trim(), "3", "rollback wrote no marker");
    // ... so the service, holding secrets for 1h, writes the restored
    // value at once, reading that path and nothing else (an asked pass
    // would read every secret).
    wait_until("the restored value through the marker", Duration::from_secs(5), || password_is(&p, "1"));
    assert_eq!(reads_over_interval_passes(&svc, 1.0), 0.0);
    assert_eq!(reads(&svc) - before, 1.0, "only the rolled-back path is read again");
    assert!(!svc.log().contains(CANARY), "a secret value in the log");
}

#[test]
fn refresh_asks_the_service_to_re_read_every_secret_and_waits_for_that_pass() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    // No interval pass in flight to answer the request before the asked
    // one (see src/cmd/refresh.rs): interval 1h, secrets held for 1h.
    let p = project(&etcd, &vault, "1h");
    p.write("cfgsync.toml", &p.read("cfgsync.toml").replace("interval = \"1s\"", "interval = \"1h\""));
    let svc = Service::start(&p, &[], &[]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, "1"));
    let before = reads(&svc);

    // Behind cfgsync's back: no marker.
    vault.kv_put("prod/db", &[("password", &format!("{CANARY}-2"))]);
    let r = p.run(&["refresh", "--env", "prod", "--wait", "20s"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("asked the service (leader "), "{r:?}");
    assert!(r.stdout.contains(" to re-read every secret of env prod\nits pass of "), "{r:?}");
    assert!(r.stdout.ends_with(" read them: succeeded\n"), "{r:?}");
    // When it returns, the file holds the new value: every secret was read.
    assert!(password_is(&p, "2").is_some(), "{}", read_or_empty(&p.path("out/db.env")));
    assert_eq!(reads(&svc) - before, 2.0, "both secrets read again");
    assert!(!r.all().contains(CANARY) && !svc.log().contains(CANARY), "{r:?}");

    // JSON for scripts.
    let r = p.run(&["--output", "json", "refresh", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (out["env"].as_str(), out["ran"].as_bool(), out["ok"].as_bool()),
        (Some("prod"), Some(true), Some(true))
    );

    // No service answers: said, exit 1, within --wait. The leader key
    // outlives a killed service until its lease expires (15 s): the
    // request is made, and nobody answers it.
    let mut svc = svc;
    svc.kill();
    let started = std::time::Instant::now();
    let r = p.run(&["refresh", "--env", "prod", "--wait", "1s"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("published no pass of env prod within 1s: the secrets were not re-read"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by --wait");
    // Once the lease is gone nobody leads: said at once.
    etcd.ctl_ok(&["del", "/cfgsync/_service/envs/prod/leader"]);
    let r = p.run(&["refresh", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("error: no service leads env prod: nothing was re-read"), "{r:?}");
}

/// A pass that was already running when `refresh` asked ends first and
/// publishes its record: it read the secrets before the request and is not
/// the answer. Modelled without timing luck: the service is stopped (its
/// leader key outlives it until the lease ends), `refresh` waits, and a
/// record like the running pass's lands meanwhile, newer than the request.
#[test]
fn a_pass_already_running_when_refresh_asked_is_not_taken_for_its_answer() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, "1h");
    let mut svc = Service::start(&p, &[], &[]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, "1"));
    let status_key = "/cfgsync/_service/envs/prod/status";
    wait_until("the first record", Duration::from_secs(20), || {
        let v = etcd.ctl_ok(&["get", "--print-value-only", status_key]);
        (!v.trim().is_empty()).then_some(v)
    });
    svc.kill();

    let waiting = p
        .command(&["refresh", "--env", "prod", "--wait", "4s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the request", Duration::from_secs(10), || {
        let v = etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/_service/envs/prod/pass"]);
        (!v.trim().is_empty()).then_some(())
    });
    // The pass that was in flight publishes now, a minute "after" the request.
    let mut record: serde_json::Value =
        serde_json::from_str(etcd.ctl_ok(&["get", "--print-value-only", status_key]).trim()).unwrap();
    assert!(record.get("asked_revision").is_none(), "{record}");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    record["at_ms"] = serde_json::json!(now_ms + 60_000);
    etcd.ctl_ok(&["put", status_key, &record.to_string()]);

    let out = run_output(waiting.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "the in-flight pass is not the answer: {out:?}");
    assert!(out.stderr.contains("published no pass of env prod within 4s"), "{out:?}");
}

/// A secret written through cfgsync passes only the outputs that read it
/// (known from the last full pass), not the whole env; the pass reads the
/// env's keys again, so it is recorded at a revision after the marker's.
#[test]
fn a_marked_secret_passes_only_the_outputs_that_read_it() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    seed(&etcd, &vault);
    let p = project(&etcd, &vault, "1h");
    let other = "\n[[output]]\nname = \"other\"\n[output.entries]\nHOST = \"{{ key(name='host') }}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/other.env\"\n";
    p.write(
        "cfgsync.toml",
        &format!("{}{other}", p.read("cfgsync.toml").replace("interval = \"1s\"", "interval = \"1h\"")),
    );
    let svc = Service::start(&p, &[], &[("RUST_LOG", "cfgsync=debug")]);
    wait_until("the first write", Duration::from_secs(20), || password_is(&p, "1"));
    wait_until("the other output", Duration::from_secs(20), || {
        read_or_empty(&p.path("out/other.env")).contains("HOST=db.prod").then_some(())
    });
    let recorded = wait_until("the first pass's record", Duration::from_secs(10), || {
        let records = crate::history::records(&etcd, "prod");
        (!records.is_empty()).then_some(records.len())
    });

    let r = set_secret(&p, &format!("{CANARY}-set"));
    assert_eq!(r.code, 0, "{r:?}");
    wait_until("set-secret's value through the marker", Duration::from_secs(5), || password_is(&p, "set"));
    let log = svc.log();
    let line = log.lines().find(|l| l.contains("a pass of some outputs")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("outputs=1") && line.contains("secret written through cfgsync"), "{line}");
    // Its record: a partial pass that reached db's target alone (a full
    // pass would count other's target among the unchanged ones), at a
    // revision after the marker's put.
    let records = wait_until("the marker pass's record", Duration::from_secs(10), || {
        let records = crate::history::records(&etcd, "prod");
        (records.len() > recorded).then_some(records)
    });
    let (_, record) = records.last().unwrap();
    assert_eq!(record["partial"], serde_json::json!(true), "{record}");
    assert_eq!(record["unchanged"], serde_json::json!(0), "{record}");
    let targets: Vec<&str> = record["targets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(targets, ["prod/db/0"], "{record}");
    let marker = etcd.ctl_ok(&["get", "-w", "json", "/cfgsync/_secret-versions/prod/db"]);
    let marker: serde_json::Value = serde_json::from_str(&marker).unwrap();
    let marker_rev = marker["kvs"][0]["mod_revision"].as_i64().unwrap();
    assert!(record["revision"].as_i64().unwrap() >= marker_rev, "{record} before the marker at {marker_rev}");
    assert!(read_or_empty(&p.path("out/other.env")).contains("HOST=db.prod"));
    assert!(!log.contains(CANARY), "a secret value in the log");
}
