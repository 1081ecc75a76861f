//! A password in a URL never reaches a person or a log: an etcd endpoint,
//! a Vault address, a GitLab/GitHub API URL or a kubeconfig server with
//! `user:password@` (or a token in its query), from the config, the
//! environment (`ETCDCTL_ENDPOINTS`, `VAULT_ADDR`) or a kubeconfig, is
//! refused or fails, and the error names the URL without it: in
//! `validate`, `plan` (text and JSON) and `reconcile` at `RUST_LOG=trace`,
//! and in the log of `cfgsync run`.

use std::time::Duration;

use crate::service::Service;
use crate::support::{Etcd, Project, Run, wait_until};

const CANARY: &str = "CANARY-pw-9d3f";

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const OUTPUT: &str = r#"
[envs.prod]

[[output]]
name = "api"
[output.entries]
HOST = "{{ key(name='db_host') }}"
"#;

const FILE_TARGET: &str = "[[output.target]]\nkind = \"file\"\npath = \"out/api.env\"\n";

fn assert_clean(what: &str, run: &Run) {
    assert!(!run.all().contains(CANARY), "{what}: the password is shown:\n{run:?}");
    assert!(!run.all().contains("CANARY"), "{what}: part of the password is shown:\n{run:?}");
}

/// Runs every one-shot command that reads the config at `RUST_LOG=trace`;
/// each must fail (the URL is refused or cannot be reached) without the
/// password; returns the runs for more checks.
fn check_commands(what: &str, p: &Project, env: &[(&str, &str)]) -> Vec<Run> {
    let mut runs = Vec::new();
    for args in [
        &["validate"][..],
        &["--output", "json", "validate"],
        &["plan"],
        &["--output", "json", "plan"],
        &["reconcile", "--once"],
    ] {
        let mut cmd = p.command(args);
        cmd.env("RUST_LOG", "trace");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = crate::support::run_output(cmd.output().unwrap());
        assert_clean(&format!("{what}: cfgsync {}", args.join(" ")), &run);
        runs.push(run);
    }
    runs
}

fn files_project(target: &str) -> Project {
    let p = Project::new(&format!("instance = \"redaction\"\n[files]\ndir = \"source\"\n{OUTPUT}{target}"));
    p.write("source/prod.toml", "[keys]\ndb_host = \"db\"\n");
    p
}

#[test]
fn a_ci_api_url_with_a_password_or_a_token_is_refused_without_showing_it() {
    for (what, target) in [
        (
            "gitlab url with user:password",
            format!(
                "[[output.target]]\nkind = \"gitlab\"\nurl = \"https://ci:{CANARY}@gitlab.example.com\"\nproject = \"g/p\"\n"
            ),
        ),
        (
            "github api_url with a token as user",
            format!(
                "[[output.target]]\nkind = \"github\"\nrepo = \"acme/api\"\napi_url = \"https://{CANARY}@github.example.com/api/v3\"\n"
            ),
        ),
        (
            "github api_url with a token in the query",
            format!(
                "[[output.target]]\nkind = \"github\"\nrepo = \"acme/api\"\napi_url = \"https://github.example.com/api/v3?access_token={CANARY}\"\n"
            ),
        ),
        (
            "gitlab url with a password holding a slash",
            format!(
                "[[output.target]]\nkind = \"gitlab\"\nurl = \"https://ci:x/{CANARY}@gitlab.example.com\"\nproject = \"g/p\"\n"
            ),
        ),
    ] {
        let p = files_project(&target);
        let runs = check_commands(what, &p, &[]);
        let validate = &runs[0];
        assert_eq!(validate.code, 2, "{what}: refused: {validate:?}");
        assert!(validate.stderr.contains("***"), "{what}: the URL is named, redacted: {validate:?}");
    }
}

#[test]
fn a_vault_address_with_a_password_never_shows_it() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/db_host", "db");
    let port = closed_port();
    let config = |address: &str| {
        format!(
            "[etcd]\nendpoints = [\"{}\"]\n[vault]\naddress = \"{address}\"\ntimeout = \"2s\"\nauth = {{ method = \"token\", token_file = \"vault-token\" }}\n{}{FILE_TARGET}",
            etcd.endpoint,
            OUTPUT.replace("}}\"\n", "}}{{ secret(path='db', field='password') }}\"\n")
        )
    };
    let in_config = format!("http://root:{CANARY}@127.0.0.1:{port}");
    let p = Project::new(&config(&in_config));
    p.write("vault-token", "t");
    for run in &check_commands("[vault] address", &p, &[])[2..] {
        assert_ne!(run.code, 0, "the unreachable Vault fails the pass: {run:?}");
        assert!(run.all().contains(&format!("http://***@127.0.0.1:{port}")), "the address is named: {run:?}");
    }
    check_commands("VAULT_ADDR", &p, &[("VAULT_ADDR", &in_config)]);
    check_run("[vault] address", &p, &[]);
}

#[test]
fn an_etcd_endpoint_with_a_password_never_shows_it() {
    let port = closed_port();
    let endpoint = format!("http://root:{CANARY}@127.0.0.1:{port}");
    let p = Project::new(&format!("[etcd]\nendpoints = [\"{endpoint}\"]\ntimeout = \"1s\"\n{OUTPUT}{FILE_TARGET}"));
    check_commands("[etcd] endpoints", &p, &[]);
    let p = Project::new(&format!("[etcd]\ntimeout = \"1s\"\n{OUTPUT}{FILE_TARGET}"));
    check_commands("ETCDCTL_ENDPOINTS", &p, &[("ETCDCTL_ENDPOINTS", &format!("http://127.0.0.1:1,{endpoint}"))]);
    check_run("ETCDCTL_ENDPOINTS", &p, &[("ETCDCTL_ENDPOINTS", &endpoint)]);

    // An endpoint that accepts connections and never answers, with a user:
    // connecting authenticates, times out, and that error names the endpoints.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://root:{CANARY}@{}", hung.local_addr().unwrap());
    let p = Project::new(&format!("[etcd]\nendpoints = [\"{endpoint}\"]\ntimeout = \"1s\"\n{OUTPUT}{FILE_TARGET}"));
    let user = [("ETCDCTL_USER", "reader:pw")];
    let runs = check_commands("a hung etcd endpoint", &p, &user);
    assert!(runs[2].all().contains("cannot connect to http://***@127.0.0.1:"), "the endpoint is named: {:?}", runs[2]);
    check_run("a hung etcd endpoint", &p, &user);
    drop(hung);
}

#[test]
fn a_kubeconfig_server_with_a_password_never_shows_it() {
    let port = closed_port();
    let p = files_project(
        "[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"prod\"\nnamespace = \"api\"\nname = \"api\"\n",
    );
    p.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://admin:{CANARY}@127.0.0.1:{port}\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: prod\ncurrent-context: prod\nusers:\n- name: prod\n  user:\n    token: t\n"
        ),
    );
    let kubeconfig = p.path("kubeconfig").display().to_string();
    for run in &check_commands("kubeconfig server", &p, &[("KUBECONFIG", &kubeconfig)])[2..] {
        assert_ne!(run.code, 0, "the unreachable cluster fails: {run:?}");
    }
    check_run("kubeconfig server", &p, &[("KUBECONFIG", &kubeconfig)]);
}

/// `cfgsync run` at `RUST_LOG=trace` until its first pass ended (failed).
fn check_run(what: &str, p: &Project, env: &[(&str, &str)]) {
    let mut all = vec![("RUST_LOG", "trace")];
    all.extend_from_slice(env);
    let svc = Service::start(p, &[], &all);
    // Without etcd there is no leader and no pass: the election's failure.
    wait_until(&format!("{what}: a pass or the election to fail"), Duration::from_secs(30), || {
        let log = svc.log();
        (log.contains("pass failed") || log.contains("election step failed")).then_some(())
    });
    let (_, page) = svc.get("/").unwrap();
    let (_, ready) = svc.get("/readyz").unwrap();
    for (name, text) in [("log", svc.log()), ("status page", page), ("/readyz", ready)] {
        assert!(!text.contains("CANARY"), "{what}: the password in the service's {name}:\n{text}");
    }
}
