//! `cfgsync import` through the binary, against real etcd and OpenBao, the
//! Kubernetes and GitLab emulators: dotenv files, Secrets and ConfigMaps,
//! GitLab variables; the plan, conflicts, failures, and the round trip
//! (import, then reconcile into the same place: nothing written, or
//! exactly the documented adoption writes).
//!
//! Every run goes through [`Bed::run`], which sets `RUST_LOG=trace` and
//! fails the test if a canary secret appears on stdout or stderr.

use std::process::Stdio;
use std::time::Instant;

use kube_emulator::{
    Emulator, Fault, GithubEmulator, GithubScope, GitlabEmulator, GitlabOwner, GitlabVariable, Kind, Verb,
};
use serde_json::Value;

use crate::support::proxy::{FaultProxy, Inject};
use crate::support::{Etcd, FileState, Project, Run, Vault, run_output, server_config};

const CANARY: &str = "CANARY-91d3-import";
const GITLAB_TOKEN: &str = "CANARY-gitlab-token-import";
const GITHUB_TOKEN: &str = "CANARY-github-token-import";

struct Bed {
    project: Project,
    etcd: Etcd,
    vault: Vault,
}

impl Bed {
    /// etcd and OpenBao with the env's fingerprint key, one env `prod`,
    /// and `outputs` (a config's `[[output]]` tables and more).
    fn new(outputs: &str) -> Bed {
        let (etcd, vault) = (Etcd::start(), Vault::start());
        vault.kv_put("prod/cfgsync/fingerprint", &[("key", "fingerprint-key-prod")]);
        let config =
            format!("instance = \"team-a\"\n{}", server_config(&etcd, &vault, &format!("[envs.prod]\n{outputs}")));
        let project =
            Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
        project.write("vault-token", &vault.root_token);
        Bed { project, etcd, vault }
    }

    /// Runs the binary at trace level; no canary may reach its output.
    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.project.command(args);
        cmd.env("RUST_LOG", "trace");
        let run = run_output(cmd.output().unwrap());
        for canary in [CANARY, GITLAB_TOKEN, GITHUB_TOKEN] {
            assert!(!run.all().contains(canary), "a secret leaked: {run:?}");
        }
        run
    }

    /// As [`Bed::run`], without trace logging (for timing).
    fn run_untraced(&self, args: &[&str]) -> Run {
        let run = self.project.run(args);
        assert!(!run.all().contains(CANARY), "a secret leaked: {run:?}");
        run
    }

    /// The etcd store's revision: unchanged means nothing was written.
    fn revision(&self) -> i64 {
        let out: Value = serde_json::from_str(&self.etcd.ctl_ok(&["get", "/", "-w", "json"])).unwrap();
        out["header"]["revision"].as_i64().unwrap()
    }

    fn key(&self, name: &str) -> Option<String> {
        let out = self.etcd.ctl_ok(&["get", "--print-value-only", &format!("/cfgsync/prod/{name}")]);
        out.strip_suffix('\n').map(str::to_owned)
    }

    /// Every key under `/cfgsync/` (names only).
    fn keys(&self) -> Vec<String> {
        self.etcd
            .ctl_ok(&["get", "--prefix", "--keys-only", "/cfgsync/"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `prod/<path>` as JSON (`data.data`, `data.metadata`), or None.
    fn secret(&self, path: &str) -> Option<Value> {
        let out = self
            .vault
            .bao(&self.vault.root_token, &["kv", "get", "-format=json", "-mount=secret", &format!("prod/{path}")]);
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()["data"].clone())
    }

    fn field(&self, path: &str, field: &str) -> Option<String> {
        self.secret(path).and_then(|s| s["data"][field].as_str().map(str::to_owned))
    }
}

fn code(run: &Run, want: i32) {
    assert_eq!(run.code, want, "{run:?}");
}

/// The one `error:` line of an exit-2 failure.
fn one_error(run: &Run) -> &str {
    code(run, 2);
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {run:?}");
    &lines[0]["error: ".len()..]
}

// ---------------------------------------------------------------------------
// dotenv
// ---------------------------------------------------------------------------

/// What cfgsync's default dialect writes for these values, in name order.
fn api_env() -> String {
    format!(
        "API_URL=https://api.example.com\nDB_PASSWORD='{CANARY} pa$s word'\nLOG_LEVEL=info\nSESSION_KEY=\"it's \\\"{CANARY}\\\"\"\n"
    )
}

const API_OUTPUT: &str = r#"
[[output]]
name = "api"
[output.entries]
API_URL = "{{ key(name='api/API_URL') }}"
DB_PASSWORD = "{{ secret(path='api/imported', field='DB_PASSWORD') }}"
LOG_LEVEL = "{{ key(name='api/LOG_LEVEL') }}"
SESSION_KEY = "{{ secret(path='api/imported', field='SESSION_KEY') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"
"#;

const DOTENV_ARGS: &[&str] = &[
    "import",
    "--env",
    "prod",
    "dotenv:out/prod/api.env",
    "--plain",
    "API_*",
    "--plain",
    "LOG_*",
    "--key-prefix",
    "api/",
    "--secret-path",
    "api/imported",
];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    DOTENV_ARGS.iter().chain(extra).copied().collect()
}

fn dotenv_bed() -> Bed {
    let bed = Bed::new(API_OUTPUT);
    bed.project.write("out/prod/api.env", &api_env());
    std::fs::set_permissions(bed.project.path("out/prod/api.env"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    bed
}

fn file_state(bed: &Bed) -> Vec<FileState> {
    bed.project.state().into_iter().filter(|f| f.0.ends_with("api.env")).collect()
}

#[test]
fn dotenv_plan_dry_run_import_then_nothing_to_do_and_reconcile_leaves_the_file_untouched() {
    let bed = dotenv_bed();
    let before = bed.revision();
    let plan = "\
import into env prod from dotenv file out/prod/api.env
  + API_URL → etcd /cfgsync/prod/api/API_URL (new)
      + https://api.example.com
  + DB_PASSWORD → vault secret/prod/api/imported#DB_PASSWORD (secret, new)
  + LOG_LEVEL → etcd /cfgsync/prod/api/LOG_LEVEL (new)
      + info
  + SESSION_KEY → vault secret/prod/api/imported#SESSION_KEY (secret, new)
4 new, 0 same, 0 differ, 0 not importable
";
    // --dry-run: the plan, nothing written.
    let r = bed.run(&args(&["--dry-run"]));
    code(&r, 0);
    assert_eq!(r.stdout, plan);
    assert_eq!((bed.revision(), bed.keys().len()), (before, 0), "nothing written to etcd");
    assert!(bed.secret("api/imported").is_none(), "nothing written to Vault");

    // No terminal to ask on, no --yes: nothing written, exit 2.
    let mut cmd = std::process::Command::new("setsid");
    cmd.arg("-w").arg(env!("CARGO_BIN_EXE_cfgsync")).arg("--config").arg(bed.project.path("cfgsync.toml"));
    cmd.args(DOTENV_ARGS).current_dir(bed.project.dir.path()).env("NO_COLOR", "1").stdin(Stdio::null());
    for var in ["VAULT_ADDR", "VAULT_TOKEN", "ETCDCTL_ENDPOINTS", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    let r = run_output(cmd.output().unwrap());
    assert!(!r.all().contains(CANARY));
    assert_eq!(r.stdout, plan, "the plan is shown first");
    assert_eq!(one_error(&r), "no terminal to ask for confirmation on: pass --yes to write without asking");
    assert_eq!((bed.revision(), bed.keys().len()), (before, 0));
    assert!(bed.secret("api/imported").is_none());

    let r = bed.run(&args(&["--yes"]));
    code(&r, 0);
    let written = format!(
        "{plan}written: vault secret/prod/api/imported version 1 (2 fields), etcd revision {} (2 keys)\n",
        before + 1
    );
    assert_eq!(r.stdout, written, "one etcd transaction, one Vault version");
    assert_eq!(bed.key("api/API_URL").as_deref(), Some("https://api.example.com"));
    assert_eq!(bed.key("api/LOG_LEVEL").as_deref(), Some("info"));
    assert_eq!(bed.field("api/imported", "DB_PASSWORD"), Some(format!("{CANARY} pa$s word")));
    assert_eq!(bed.field("api/imported", "SESSION_KEY"), Some(format!("it's \"{CANARY}\"")));
    assert_eq!(
        bed.keys(),
        ["/cfgsync/_secret-versions/prod/api/imported", "/cfgsync/prod/api/API_URL", "/cfgsync/prod/api/LOG_LEVEL"],
        "no _meta without --owner/--reason; the secret's marker for the service"
    );
    let marker = bed.etcd.ctl_ok(&["get", "--print-value-only", "/cfgsync/_secret-versions/prod/api/imported"]);
    assert_eq!(marker.trim(), "1", "the marker holds the version written, never a value");

    // A second import changes nothing.
    let (revision, version) = (bed.revision(), bed.secret("api/imported").unwrap()["metadata"]["version"].clone());
    let r = bed.run(&args(&["--yes"]));
    code(&r, 0);
    assert_eq!(
        r.stdout,
        "\
import into env prod from dotenv file out/prod/api.env
  = API_URL → etcd /cfgsync/prod/api/API_URL (same)
  = DB_PASSWORD → vault secret/prod/api/imported#DB_PASSWORD (secret, same)
  = LOG_LEVEL → etcd /cfgsync/prod/api/LOG_LEVEL (same)
  = SESSION_KEY → vault secret/prod/api/imported#SESSION_KEY (secret, same)
0 new, 4 same, 0 differ, 0 not importable
nothing to write
"
    );
    assert_eq!(bed.revision(), revision);
    assert_eq!(bed.secret("api/imported").unwrap()["metadata"]["version"], version);

    // The round trip: a reconcile rendering the values into the file they
    // came from finds it as it should be, byte for byte, and writes nothing.
    let file = file_state(&bed);
    assert_eq!(file.len(), 1);
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 0);
    assert!(r.stdout.contains("= api → file out/prod/api.env (unchanged)"), "{r:?}");
    assert_eq!(file_state(&bed), file, "content, mode, inode and mtime unchanged");
    assert_eq!(bed.project.read("out/prod/api.env"), api_env());
}

#[test]
fn a_differing_value_is_kept_without_overwrite_and_replaced_with_it() {
    let bed = dotenv_bed();
    bed.etcd.put("/cfgsync/prod/api/LOG_LEVEL", "debug");
    bed.vault.kv_put("prod/api/imported", &[("DB_PASSWORD", &format!("{CANARY}-in-vault")), ("OTHER", "kept-field")]);
    // --dry-run exits as the import would: 1, conflicts; nothing written.
    let (revision, keys) = (bed.revision(), bed.keys());
    let r = bed.run(&args(&["--dry-run"]));
    code(&r, 1);
    assert!(r.stdout.ends_with("2 new, 0 same, 2 differ (kept), 0 not importable\n"), "{r:?}");
    assert_eq!((bed.revision(), bed.keys()), (revision, keys));
    assert_eq!(bed.secret("api/imported").unwrap()["metadata"]["version"], 1);
    let r = bed.run(&args(&["--yes"]));
    code(&r, 1);
    assert_eq!(
        r.stdout,
        "\
import into env prod from dotenv file out/prod/api.env
  + API_URL → etcd /cfgsync/prod/api/API_URL (new)
      + https://api.example.com
  ! DB_PASSWORD → vault secret/prod/api/imported#DB_PASSWORD (secret, differs: keep, --overwrite replaces it)
  ! LOG_LEVEL → etcd /cfgsync/prod/api/LOG_LEVEL (differs: keep, --overwrite replaces it)
      - debug
      + info
  + SESSION_KEY → vault secret/prod/api/imported#SESSION_KEY (secret, new)
2 new, 0 same, 2 differ (kept), 0 not importable
written: vault secret/prod/api/imported version 2 (1 field), etcd revision 3 (1 key)
"
    );
    assert!(
        r.stderr.contains("error: 2 value(s) differ from what etcd or Vault hold and were kept: pass --overwrite"),
        "{r:?}"
    );
    // The conflicts are kept; everything else is imported; other fields kept.
    assert_eq!(bed.key("api/LOG_LEVEL").as_deref(), Some("debug"));
    assert_eq!(bed.field("api/imported", "DB_PASSWORD"), Some(format!("{CANARY}-in-vault")));
    assert_eq!(bed.key("api/API_URL").as_deref(), Some("https://api.example.com"));
    assert_eq!(bed.field("api/imported", "SESSION_KEY"), Some(format!("it's \"{CANARY}\"")));
    assert_eq!(bed.field("api/imported", "OTHER").as_deref(), Some("kept-field"));

    // --prefer-destination (alias of --overwrite): the imported values win,
    // with owner and reason recorded for what is written, and only for it.
    let r =
        bed.run(&args(&["--yes", "--prefer-destination", "--owner", "team-api", "--reason", "imported on day one"]));
    code(&r, 0);
    assert!(
        r.stdout.contains(
            "  ~ LOG_LEVEL → etcd /cfgsync/prod/api/LOG_LEVEL (differs: replace)\n      - debug\n      + info\n"
        ),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("  ~ DB_PASSWORD → vault secret/prod/api/imported#DB_PASSWORD (secret, differs: replace)\n"),
        "{r:?}"
    );
    assert!(
        // Revision 5: the first import's marker took one.
        r.stdout.ends_with("written: vault secret/prod/api/imported version 3 (1 field), etcd revision 5 (1 key)\n"),
        "{r:?}"
    );
    assert_eq!(bed.key("api/LOG_LEVEL").as_deref(), Some("info"));
    assert_eq!(bed.field("api/imported", "DB_PASSWORD"), Some(format!("{CANARY} pa$s word")));
    assert_eq!(bed.field("api/imported", "OTHER").as_deref(), Some("kept-field"));
    assert_eq!(
        bed.etcd.ctl_ok(&["get", "--prefix", "/cfgsync/_meta/"]),
        "/cfgsync/_meta/prod/api/LOG_LEVEL\n{\"owner\":\"team-api\",\"reason\":\"imported on day one\"}\n",
        "API_URL was the same: no owner recorded for it"
    );
    let custom = &bed.secret("api/imported").unwrap()["metadata"]["custom_metadata"];
    assert_eq!(custom, &serde_json::json!({ "owner": "team-api", "reason": "imported on day one" }));
    let r = bed.run(&["explain", "prod", "api/LOG_LEVEL"]);
    assert!(r.stdout.contains("owner:    team-api") && r.stdout.contains("reason:   imported on day one"), "{r:?}");

    // JSON for scripts: names, states and plain values; no secret.
    let r = bed.run(
        &["--output", "json", "--log-format", "json"]
            .iter()
            .chain(DOTENV_ARGS)
            .chain(&["--dry-run"])
            .copied()
            .collect::<Vec<_>>(),
    );
    code(&r, 0);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    let states: Vec<(&str, &str, bool)> = doc["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["state"].as_str().unwrap(), v["secret"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("API_URL", "same", false),
            ("DB_PASSWORD", "same", true),
            ("LOG_LEVEL", "same", false),
            ("SESSION_KEY", "same", true)
        ]
    );
    assert_eq!(doc["values"][0]["value"], "https://api.example.com");
    assert!(doc["values"][1].get("value").is_none(), "{doc}");
    assert_eq!(doc["values"][1]["vault_path"], "secret/prod/api/imported");
}

// ---------------------------------------------------------------------------
// failures
// ---------------------------------------------------------------------------

#[test]
fn an_origin_that_cannot_be_read_writes_nothing_and_exits_2_with_one_line() {
    let bed = Bed::new(API_OUTPUT);
    let gitlab = GitlabEmulator::start();
    let kube = Emulator::start("prod");
    kube.create_namespace("api");
    bed.project.write("kubeconfig", &kube.kubeconfig_yaml());
    bed.project.write("bad.env", &format!("A=1\nB={CANARY} {CANARY}\n"));
    bed.project.write("dup.env", "A=1\nB=2\nA=3\n");
    std::os::unix::fs::symlink("dup.env", bed.project.path("link.env")).unwrap();
    let proxy = FaultProxy::start(gitlab.addr());
    proxy.inject(Inject {
        method: "GET".into(),
        path: "/variables".into(),
        count: 1,
        status: 401,
        body: r#"{"message":"401 Unauthorized"}"#.into(),
    });
    let before = bed.revision();
    let to = ["--key-prefix", "x/", "--secret-path", "x/imported", "--yes"];
    let gl = |url: &str| -> Vec<String> {
        ["import", "--env", "prod", "gitlab:group/app", "--gitlab-url", url]
            .iter()
            .chain(&to)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let proxy_url = proxy.url();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["dotenv:missing.env".into()], "missing.env: No such file or directory (os error 2); nothing written".into()),
        (vec!["dotenv:bad.env".into()], "bad.env:2: unquoted value contains whitespace; nothing written".into()),
        (
            vec!["dotenv:dup.env".into()],
            "dup.env:3: A is set again (first on line 1); dotenv readers disagree on which one wins: remove one; nothing written".into(),
        ),
        (
            vec!["dotenv:link.env".into()],
            "link.env: is a symlink; cfgsync does not follow it: name the file it points to (dup.env); nothing written".into(),
        ),
        (
            vec!["kubernetes-secret:prod/api/missing".into(), "--kubeconfig".into(), "kubeconfig".into()],
            "Kubernetes Secret api/missing (context prod): not found (secrets \"missing\" not found (404 NotFound)); nothing written".into(),
        ),
        (
            vec!["kubernetes-configmap:staging/api/web".into(), "--kubeconfig".into(), "kubeconfig".into()],
            "Kubernetes ConfigMap api/web (context staging): context \"staging\": cannot build a client".into(),
        ),
        (gl(&proxy_url)[3..].to_vec(), "GitLab project group/app: listing variables: HTTP 401: 401 Unauthorized; nothing written".into()),
    ];
    for (from, want) in &cases {
        let mut a: Vec<&str> = vec!["import", "--env", "prod"];
        a.extend(from.iter().map(String::as_str));
        if !a.contains(&"--yes") {
            a.extend(to);
        }
        let r = bed.run(&a);
        let line = one_error(&r);
        assert!(line.starts_with(want.as_str()), "{from:?}:\n{line}\nwanted\n{want}");
    }
    assert_eq!(proxy.remaining(), 0, "the 401 was answered");
    // Server errors are retried (GET is repeatable), then fail the same way.
    gitlab.set_fault(Fault::Errors { count: 10 });
    let url = gitlab.url();
    let r = bed.run(&gl(&url).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(one_error(&r).starts_with("GitLab project group/app: listing variables: HTTP 500"), "{r:?}");
    assert_eq!(gitlab.requests().total(), 3);
    // Without a token nothing is sent.
    gitlab.reset_requests();
    let mut cmd = bed.project.command(&gl(&url).iter().map(String::as_str).collect::<Vec<_>>());
    cmd.env_remove("GITLAB_TOKEN");
    let r = run_output(cmd.output().unwrap());
    assert!(!r.all().contains(CANARY));
    assert_eq!(
        one_error(&r),
        "GitLab project group/app: the API token is not set: export GITLAB_TOKEN (or name another variable with --token-env); nothing written"
    );
    assert_eq!(gitlab.requests().total(), 0);
    // Secret values need a secret path: said before etcd or Vault is touched.
    bed.project.write("ok.env", "A=1\nB=2\n");
    let r = bed.run(&["import", "--env", "prod", "dotenv:ok.env", "--plain", "A", "--yes"]);
    assert_eq!(
        one_error(&r),
        "1 value(s) are secret (B): name the Vault secret whose fields they become with --secret-path, e.g. --secret-path api/imported; nothing written"
    );
    assert_eq!((bed.revision(), bed.keys().len()), (before, 0), "nothing reached etcd");
    assert!(bed.secret("x/imported").is_none());
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn kubernetes_secret_and_configmap_import_then_the_first_reconcile_only_labels_them() {
    let outputs = r#"
[kubernetes]
kubeconfig = "kubeconfig"

[[output]]
name = "api"
[output.entries]
DB_PASSWORD = "{{ secret(path='api/k8s', field='DB_PASSWORD') }}"
"tls.key" = "{{ secret(path='api/k8s', field='tls.key') }}"
[[output.target]]
kind = "kubernetes-secret"
context = "{{ env }}"
namespace = "api"
name = "api"

[[output]]
name = "web"
[output.entries]
HOST = "{{ key(name='web/HOST') }}"
"nginx.conf" = "{{ key(name='web/nginx.conf') }}"
[[output.target]]
kind = "kubernetes-configmap"
context = "{{ env }}"
namespace = "api"
name = "web"
"#;
    let bed = Bed::new(outputs);
    let kube = Emulator::start("prod");
    kube.create_namespace("api");
    bed.project.write("kubeconfig", &kube.kubeconfig_yaml());
    let tls_key = format!("-----BEGIN KEY-----\n{CANARY}\n-----END KEY-----\n");
    let nginx = "server {\n  listen 8080;\n}\n";
    kube.put_object(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": { "name": "api", "namespace": "api" },
        "data": { "DB_PASSWORD": b64(&format!("{CANARY}-db")), "tls.key": b64(&tls_key) }
    }))
    .unwrap();
    kube.put_object(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "web", "namespace": "api" },
        "data": { "HOST": "www.prod.internal", "nginx.conf": nginx }
    }))
    .unwrap();

    kube.reset_requests();
    let r =
        bed.run(&["import", "--env", "prod", "kubernetes-secret:prod/api/api", "--secret-path", "api/k8s", "--yes"]);
    code(&r, 0);
    assert_eq!(
        r.stdout,
        "\
import into env prod from Kubernetes Secret api/api (context prod)
  + DB_PASSWORD → vault secret/prod/api/k8s#DB_PASSWORD (secret, new)
  + tls.key → vault secret/prod/api/k8s#tls.key (secret, new)
2 new, 0 same, 0 differ, 0 not importable
written: vault secret/prod/api/k8s version 1 (2 fields)
"
    );
    let r = bed.run(&["import", "--env", "prod", "kubernetes-configmap:prod/api/web", "--key-prefix", "web/", "--yes"]);
    code(&r, 0);
    assert!(
        r.stdout.contains(
            "  + nginx.conf → etcd /cfgsync/prod/web/nginx.conf (new)\n      + server {\\n  listen 8080;\\n}\\n\n"
        ),
        "plain values shown on one line, escaped: {r:?}"
    );
    let requests = kube.requests();
    assert_eq!(
        (requests.get(Verb::Get, "secrets"), requests.get(Verb::Get, "configmaps"), requests.writes()),
        (1, 1, 0),
        "{requests}"
    );
    assert_eq!(bed.field("api/k8s", "tls.key"), Some(tls_key.clone()));
    assert_eq!(bed.key("web/nginx.conf").as_deref(), Some(nginx));
    assert_eq!(bed.key("web/HOST").as_deref(), Some("www.prod.internal"));

    // The round trip: the targets refuse the unlabelled objects until they
    // are adopted (the annotation cfgsync.io/adopt=<instance>), then take
    // them over with one apply each (labels and annotations); the data
    // stays as it was.
    let data = |kind: Kind, name: &str| kube.get_object(kind, "api", name).unwrap()["data"].clone();
    let (secret_data, cm_data) = (data(Kind::Secret, "api"), data(Kind::ConfigMap, "web"));
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 1);
    assert!(r.stderr.contains("annotate secret api cfgsync.io/adopt=team-a"), "{r:?}");
    for kind in [Kind::Secret, Kind::ConfigMap] {
        let name = if kind == Kind::Secret { "api" } else { "web" };
        let mut o = kube.get_object(kind, "api", name).unwrap();
        o["metadata"]["annotations"] = serde_json::json!({"cfgsync.io/adopt": "team-a"});
        kube.put_object(o).unwrap();
    }
    kube.reset_requests();
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 0);
    let requests = kube.requests();
    assert_eq!(
        (requests.get(Verb::Apply, "secrets"), requests.get(Verb::Apply, "configmaps"), requests.writes()),
        (1, 1, 2),
        "one apply per object, nothing else: {requests}"
    );
    assert_eq!((data(Kind::Secret, "api"), data(Kind::ConfigMap, "web")), (secret_data, cm_data));
    let labels = &kube.get_object(Kind::Secret, "api", "api").unwrap()["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "cfgsync");
    kube.reset_requests();
    code(&bed.run(&["reconcile", "--once"]), 0);
    assert_eq!(kube.requests().writes(), 0, "then quiet");
    // Importing cfgsync's own rendering back says so.
    let r = bed.run(&[
        "import",
        "--env",
        "prod",
        "kubernetes-secret:prod/api/api",
        "--secret-path",
        "api/k8s",
        "--dry-run",
    ]);
    assert!(
        r.stdout.contains("note: this Secret is written by cfgsync (instance team-a, output api): importing it copies a rendering back into the source"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------

fn variable(key: &str, value: &str, scope: &str) -> GitlabVariable {
    let mut v = GitlabVariable::new(key, value);
    v.environment_scope = scope.into();
    v.raw = true;
    v
}

fn ci_outputs(url: &str) -> String {
    format!(
        r#"
[[output]]
name = "ci"
[output.entries]
DB_HOST = "{{{{ key(name='ci/DB_HOST') }}}}"
IMAGE_TAG = "{{{{ key(name='ci/IMAGE_TAG') }}}}"
REGION = "{{{{ key(name='ci/REGION') }}}}"
[[output.target]]
kind = "gitlab"
url = "{url}"
project = "group/app"

[[output]]
name = "ci-any"
[output.entries]
LOG_LEVEL = "{{{{ key(name='ci/LOG_LEVEL') }}}}"
[[output.target]]
kind = "gitlab"
url = "{url}"
project = "group/app"
environment_scope = "*"

[[output]]
name = "ci-secret"
[output.entries]
DB_PASSWORD = "{{{{ secret(path='ci/imported', field='DB_PASSWORD') }}}}"
[[output.target]]
kind = "gitlab"
url = "{url}"
project = "group/app"
"#
    )
}

/// (method, path, query) of every request, in order.
fn log(gitlab: &GitlabEmulator) -> Vec<(String, String, String)> {
    gitlab.request_log().into_iter().map(|r| (r.method, r.path, r.query.unwrap_or_default())).collect()
}

#[test]
fn gitlab_import_then_adopt_then_the_first_reconcile_only_adds_descriptions() {
    let gitlab = GitlabEmulator::start();
    let bed = Bed::new(&ci_outputs(&gitlab.url()));
    let app = GitlabOwner::project("group/app");
    let mut password = variable("DB_PASSWORD", &format!("{CANARY}-ci"), "prod");
    password.masked = true;
    let mut deploy = variable("DEPLOY_KEY", &format!("{CANARY}-hidden"), "prod");
    (deploy.masked, deploy.hidden) = (true, true);
    let mut protected = variable("RELEASE_TOKEN", &format!("{CANARY}-release"), "prod");
    (protected.masked, protected.protected) = (true, true);
    // Flags a gitlab target's defaults differ from (raw = true, not
    // protected, file only for several lines): adopted, they are kept.
    let mut host = variable("DB_HOST", "db.prod.internal", "prod");
    host.protected = true;
    let mut tag = variable("IMAGE_TAG", "pre-$CI_COMMIT_SHA", "prod");
    tag.raw = false;
    let mut region = variable("REGION", "eu-central", "prod");
    region.variable_type = "file".into();
    for v in [
        host,
        password,
        deploy,
        protected,
        tag,
        variable("LOG_LEVEL", "info", "*"),
        variable("LOG_LEVEL", "debug", "staging"),
        variable("REGION", "eu", "*"),
        region,
    ] {
        gitlab.put_variable(&app, v);
    }
    let import = |extra: &[&str]| {
        let url = gitlab.url();
        let mut a = vec!["import", "--env", "prod", "gitlab:group/app", "--gitlab-url", &url, "--key-prefix", "ci/"];
        a.extend(["--secret-path", "ci/imported", "--yes"]);
        a.extend(extra);
        bed.run(&a)
    };
    let r = import(&[]);
    code(&r, 1);
    assert_eq!(
        r.stdout,
        "\
import into env prod from GitLab project group/app (environment scope prod)
  + DB_HOST → etcd /cfgsync/prod/ci/DB_HOST (new)
      + db.prod.internal
      note: protected in GitLab: kept when adopted (--adopt), unless the gitlab target sets protected itself
  + DB_PASSWORD → vault secret/prod/ci/imported#DB_PASSWORD (secret, new)
  + IMAGE_TAG → etcd /cfgsync/prod/ci/IMAGE_TAG (new)
      + pre-$CI_COMMIT_SHA
      note: expanded in GitLab (raw = false) and holds a `$`: imported as written, not expanded; kept expanded when adopted (--adopt), unless the gitlab target sets raw itself
  + LOG_LEVEL → etcd /cfgsync/prod/ci/LOG_LEVEL (new)
      + info
  + REGION → etcd /cfgsync/prod/ci/REGION (new)
      + eu-central
      note: a file variable in GitLab: kept a file variable when adopted (--adopt)
  + RELEASE_TOKEN → vault secret/prod/ci/imported#RELEASE_TOKEN (secret, new)
      note: protected in GitLab: kept when adopted (--adopt), unless the gitlab target sets protected itself
  x DEPLOY_KEY: not importable: hidden in GitLab: its value cannot be read back; set it with `cfgsync set-secret prod ci/imported DEPLOY_KEY` (--adopt records it as this instance's: the first pass then writes cfgsync's value over it)
note: REGION: the variable of environment scope * is shadowed by the one of scope prod (imported)
note: 1 variable(s) of other environment scopes left out (--environment-scope chooses one)
6 new, 0 same, 0 differ, 1 not importable
written: vault secret/prod/ci/imported version 1 (2 fields), etcd revision 2 (4 keys)
"
    );
    assert!(r.stderr.contains("error: 1 value(s) could not be imported (named above)"), "{r:?}");
    assert_eq!(
        log(&gitlab),
        [("GET".to_owned(), "/api/v4/projects/group%2Fapp/variables".to_owned(), "per_page=100&page=1".to_owned())],
        "import reads one page and writes nothing to GitLab"
    );
    assert_eq!(bed.field("ci/imported", "DB_PASSWORD"), Some(format!("{CANARY}-ci")));
    assert_eq!(bed.key("ci/REGION").as_deref(), Some("eu-central"));

    // Without adoption the target refuses the hand-made variables, and
    // sends nothing but its list.
    gitlab.reset_requests();
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 1);
    assert!(
        r.stderr.contains("variable DB_HOST (environment scope prod) exists but was not written by cfgsync"),
        "{r:?}"
    );
    assert!(r.stderr.contains("or take its value into etcd or Vault with `cfgsync import --adopt`"), "{r:?}");
    assert_eq!(gitlab.requests().writes(), 0, "{}", gitlab.requests());

    // --adopt: the values are there already; the variables are recorded.
    gitlab.reset_requests();
    let r = import(&["--adopt"]);
    code(&r, 1);
    assert!(
        r.stdout.contains(
            "adopt: LOG_LEVEL (environment scope *); DB_HOST, DB_PASSWORD, IMAGE_TAG, REGION, RELEASE_TOKEN (environment scope prod); DEPLOY_KEY (environment scope prod, hidden: its value written by the first pass) as instance \"team-a\"'s, recorded in etcd key /cfgsync/_state/prod/gitlab/team-a/http%3A%2F%2F127.0.0.1%3A"
        ),
        "{r:?}"
    );
    assert!(
        r.stdout.ends_with("0 new, 6 same, 0 differ, 1 not importable\nwritten: 7 GitLab variable(s) adopted\n"),
        "{r:?}"
    );
    assert_eq!(gitlab.requests().total(), 1);
    let record = bed.etcd.ctl_ok(&["get", "--prefix", "--print-value-only", "/cfgsync/_state/prod/gitlab/team-a/"]);
    let record: Value = serde_json::from_str(&record).unwrap();
    let ids: Vec<&str> = record["items"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "DB_HOST@prod",
            "DB_PASSWORD@prod",
            "DEPLOY_KEY@prod",
            "IMAGE_TAG@prod",
            "LOG_LEVEL@*",
            "REGION@prod",
            "RELEASE_TOKEN@prod"
        ]
    );
    assert_eq!(record["items"]["DB_HOST@prod"]["fingerprint"], "imported");
    assert_eq!(
        record["items"]["IMAGE_TAG@prod"]["adopted"],
        serde_json::json!({"hidden": "false", "protected": "false", "raw": "false", "variable_type": "env_var"}),
        "the flags to keep are recorded"
    );

    // The first reconcile: its list, then one update per variable a target
    // renders, each only adding cfgsync's description (values as they were).
    let before: Vec<GitlabVariable> = gitlab.variables(&app);
    gitlab.reset_requests();
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 0);
    let put = |key: &str, scope: &str| {
        (
            "PUT".to_owned(),
            format!("/api/v4/projects/group%2Fapp/variables/{key}"),
            format!("filter%5Benvironment_scope%5D={scope}"),
        )
    };
    let mut requests = log(&gitlab);
    requests.sort();
    let mut want = vec![
        ("GET".to_owned(), "/api/v4/projects/group%2Fapp/variables".to_owned(), "per_page=100&page=1".to_owned()),
        put("DB_HOST", "prod"),
        put("DB_PASSWORD", "prod"),
        put("IMAGE_TAG", "prod"),
        put("LOG_LEVEL", "*"),
        put("REGION", "prod"),
    ];
    want.sort();
    assert_eq!(requests, want);
    for v in gitlab.variables(&app) {
        let old = before.iter().find(|o| o.key == v.key && o.environment_scope == v.environment_scope).unwrap();
        assert_eq!(v.value, old.value, "{} keeps its value", v.key);
        // Issue 15, item 4: raw stays false (`$CI_COMMIT_SHA` keeps
        // expanding), protected stays true, a one-line file stays a file.
        let flags = |v: &GitlabVariable| (v.variable_type.clone(), v.protected, v.masked, v.hidden, v.raw);
        assert_eq!(flags(&v), flags(old), "{} keeps its flags", v.key);
        let adopted = [
            ("DB_HOST", "prod"),
            ("DB_PASSWORD", "prod"),
            ("IMAGE_TAG", "prod"),
            ("LOG_LEVEL", "*"),
            ("REGION", "prod"),
        ];
        if adopted.contains(&(v.key.as_str(), v.environment_scope.as_str())) {
            assert!(
                v.description
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("managed by cfgsync instance team-a, env prod"),
                "{v:?}"
            );
        } else {
            assert_eq!(v.description, old.description, "{v:?} untouched");
        }
    }
    gitlab.reset_requests();
    code(&bed.run(&["reconcile", "--once"]), 0);
    assert_eq!(gitlab.requests().writes(), 0, "then quiet: {}", gitlab.requests());

    // A later import changes nothing and adopts nothing more.
    let revision = bed.revision();
    let r = import(&["--adopt"]);
    code(&r, 1);
    assert!(r.stdout.ends_with("0 new, 6 same, 0 differ, 1 not importable\nnothing to write\n"), "{r:?}");
    assert_eq!(bed.revision(), revision);
}

// ---------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------

/// Issue 15, item 3, the way out: hand-made GitHub items are refused until
/// `cfgsync import --adopt` records them. An adopted variable whose value
/// is imported is taken over without a write; an adopted secret (GitHub
/// never shows its value) is written once with cfgsync's value. From then
/// on they are this instance's: quiet passes, and pruned when unclaimed.
#[test]
fn github_import_adopt_then_reconcile_takes_hand_made_items_over() {
    let github = GithubEmulator::start();
    github.freeze_clock(1_767_225_600);
    let (repo, env) = (GithubScope::repo("acme", "app"), GithubScope::environment("acme", "app", "prod"));
    github.put_variable(&repo, "CLASH_GH", "made-by-hand");
    github.put_secret(&env, "HAND_SECRET", format!("{CANARY}-hand").as_bytes());
    let url = github.url();
    let outputs = |with: bool| {
        if !with {
            return "[[output]]\nname = \"keep\"\n[output.entries]\nX = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/keep.env\"\n".to_owned();
        }
        format!(
            r#"
[[output]]
name = "gh"
[output.entries]
CLASH_GH = "{{{{ key(name='gh/CLASH_GH') }}}}"
[[output.target]]
kind = "github"
api_url = "{url}"
repo = "acme/app"

[[output]]
name = "gh-secret"
[output.entries]
HAND_SECRET = "{{{{ secret(path='gh/imported', field='HAND_SECRET') }}}}"
[[output.target]]
kind = "github"
api_url = "{url}"
repo = "acme/app"
environment = "{{{{ env }}}}"
"#
        )
    };
    let bed = Bed::new(&outputs(true));
    bed.vault.kv_put("prod/gh/imported", &[("HAND_SECRET", &format!("{CANARY}-ours"))]);
    let import = |from: &str, extra: &[&str]| {
        let mut a = vec!["import", "--env", "prod", from, "--github-url", &url, "--key-prefix", "gh/", "--yes"];
        a.extend(extra);
        bed.run(&a)
    };
    // Values first, without adopting: refused.
    let r = import("github:acme/app", &[]);
    code(&r, 0);
    assert!(r.stdout.contains("+ CLASH_GH → etcd /cfgsync/prod/gh/CLASH_GH (new)\n      + made-by-hand\n"), "{r:?}");
    assert_eq!(bed.key("gh/CLASH_GH").as_deref(), Some("made-by-hand"));
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 1);
    assert!(r.stderr.contains("variable CLASH_GH exists but cfgsync has no record of writing it"), "{r:?}");
    assert!(r.stderr.contains("secret HAND_SECRET exists but cfgsync has no record of writing it"), "{r:?}");
    assert_eq!(github.requests().writes(), 0);

    // --adopt: the variable (value imported already) and the secret.
    let r = import("github:acme/app", &["--adopt"]);
    code(&r, 0);
    assert!(r.stdout.contains("adopt: CLASH_GH (variable) as instance \"team-a\"'s"), "{r:?}");
    assert!(r.stdout.ends_with("written: 1 GitHub variable(s) and secret(s) adopted\n"), "{r:?}");
    let r = import("github-env:acme/app/prod", &["--adopt", "--secret-path", "gh/imported"]);
    code(&r, 1);
    assert!(
        r.stdout.contains("x HAND_SECRET: not importable: a GitHub secret: its value cannot be read back"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("adopt: HAND_SECRET (secret, its value written by the first pass: GitHub cannot show it)"),
        "{r:?}"
    );

    github.advance_clock(std::time::Duration::from_secs(5));
    github.reset_requests();
    let r = bed.run(&["reconcile", "--once"]);
    code(&r, 0);
    let writes: Vec<(String, String)> =
        github.request_log().into_iter().filter(|r| r.method != "GET").map(|r| (r.method, r.path)).collect();
    assert_eq!(
        writes,
        [("PUT".to_owned(), "/repos/acme/app/environments/prod/secrets/HAND_SECRET".to_owned())],
        "the variable is taken over as it is; the secret is written once"
    );
    assert_eq!(github.variable(&repo, "CLASH_GH").unwrap().value, "made-by-hand");
    assert_eq!(github.secret_plaintext(&env, "HAND_SECRET"), Some(format!("{CANARY}-ours")));
    github.reset_requests();
    code(&bed.run(&["reconcile", "--once"]), 0);
    assert_eq!(github.requests().writes(), 0, "then quiet: {}", github.requests());

    // Now this instance's: pruned when no output writes them.
    let config = std::fs::read_to_string(bed.project.path("cfgsync.toml")).unwrap();
    bed.project.write("cfgsync.toml", &config.replace(&outputs(true), &outputs(false)));
    code(&bed.run(&["reconcile", "--once"]), 0);
    assert_eq!(github.variable(&repo, "CLASH_GH"), None);
    assert_eq!(github.secret(&env, "HAND_SECRET"), None);
}

// ---------------------------------------------------------------------------
// scale
// ---------------------------------------------------------------------------

/// Requests etcd has completed, by gRPC method.
fn etcd_calls(etcd: &Etcd, method: &str) -> u64 {
    let body = reqwest_get(&format!("{}/metrics", etcd.endpoint));
    body.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&format!("grpc_method=\"{method}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn reqwest_get(url: &str) -> String {
    let out = std::process::Command::new("curl").args(["-sf", url]).output().expect("curl");
    assert!(out.status.success(), "GET {url}");
    String::from_utf8(out.stdout).unwrap()
}

/// 1,000 dotenv values, 600 plain and 400 secret: etcd reads and writes
/// 128 keys per transaction, Vault gets one read, one metadata read and
/// one write. Prints the wall time (`-- --nocapture`). All 1,000 as
/// secrets of one Vault secret are more than a Vault listener takes in one
/// request: refused, and nothing is written anywhere.
#[test]
fn a_thousand_dotenv_values_take_a_few_transactions() {
    let bed = Bed::new(API_OUTPUT);
    // Vault through a proxy that records every request.
    let proxy = FaultProxy::start(bed.vault.addr.trim_start_matches("http://").parse().unwrap());
    let config = bed.project.read("cfgsync.toml").replace(&bed.vault.addr, &proxy.url());
    bed.project.write("cfgsync.toml", &config);
    let vault_requests = || proxy.seen().len();
    let mut text = String::new();
    for i in 0..1000 {
        if i % 5 < 3 {
            text.push_str(&format!("PLAIN_{i:03}=value-{i}\n"));
        } else {
            text.push_str(&format!("SECRET_{i:03}='{CANARY} {i}'\n"));
        }
    }
    bed.project.write("big.env", &text);
    let import = |plain: &'static str| {
        let a = ["import", "--env", "prod", "dotenv:big.env", "--plain", plain, "--key-prefix", "big/"];
        bed.run_untraced(&[&a[..], &["--secret-path", "big/imported", "--yes"]].concat())
    };
    // Every value secret, in one Vault secret: one request too many strings.
    let r = import("NONE");
    code(&r, 1);
    assert!(
        r.stderr.contains("exceeded maximum number of strings: the secret would hold 1000 fields, and one KV v2 write carries them all; import fewer secret values per --secret-path"),
        "{r:?}"
    );
    assert!(r.stdout.ends_with("1000 new, 0 same, 0 differ, 0 not importable\nnothing written\n"), "{r:?}");
    assert!(bed.secret("big/imported").is_none() && bed.keys().is_empty());

    let (txn, range, requests) = (etcd_calls(&bed.etcd, "Txn"), etcd_calls(&bed.etcd, "Range"), vault_requests());
    let started = Instant::now();
    let r = import("PLAIN_*");
    let took = started.elapsed();
    code(&r, 0);
    let tail: Vec<&str> = r.stdout.lines().rev().take(2).collect();
    assert_eq!(tail[1], "1000 new, 0 same, 0 differ, 0 not importable");
    assert!(
        tail[0].starts_with("written: vault secret/prod/big/imported version 1 (400 fields), etcd revision"),
        "{tail:?}"
    );
    assert!(tail[0].ends_with(" (600 keys)"), "{tail:?}");
    let (txn, range, requests) =
        (etcd_calls(&bed.etcd, "Txn") - txn, etcd_calls(&bed.etcd, "Range") - range, vault_requests() - requests);
    assert_eq!(bed.keys().len(), 601, "600 keys and the secret's marker");
    // 600 keys: 5 transactions of 128 gets, 5 of guarded puts; no per-key read.
    assert_eq!((txn, range), (10, 0), "etcd calls");
    // A token lookup, the secret, its metadata, one write.
    assert!(requests <= 4, "Vault requests: {:?}", proxy.seen());
    println!("import of 1,000 dotenv values: {took:?}, {txn} etcd transactions, {requests} Vault requests");
    let (txn, requests) = (etcd_calls(&bed.etcd, "Txn"), vault_requests());
    let again = Instant::now();
    let r = import("PLAIN_*");
    let took = again.elapsed();
    code(&r, 0);
    assert!(r.stdout.ends_with("0 new, 1000 same, 0 differ, 0 not importable\nnothing to write\n"), "{r:?}");
    let (txn, requests) = (etcd_calls(&bed.etcd, "Txn") - txn, vault_requests() - requests);
    assert_eq!(txn, 5, "reads only");
    println!("second import (nothing to write): {took:?}, {txn} etcd transactions, {requests} Vault requests");
}
