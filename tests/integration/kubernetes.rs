//! Kubernetes targets against kube-emulator (in-process; the real cfgsync
//! binary talks to it over HTTP) and a real kubectl for hand edits.

use kube_emulator::{Emulator, Fault, Kind, Verb};
use serde_json::Value;

use crate::support::{Project, Run, run_output};

pub(super) const CANARY: &str = "CANARY-5b0e-kube";

/// Two outputs per env: a tainted one to a Secret (with a restart) and an
/// untainted one to a ConfigMap, in namespace `api` of context `<env>`.
pub(super) fn config(extra_outputs: &str) -> String {
    format!(
        r#"instance = "kube-tests"
[files]

[kubernetes]
kubeconfig = "kubeconfig"
fingerprint_key = "cfgsync/fingerprint#key"

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
DB_PASSWORD = "{{{{ secret(path='api/db', field='password') }}}}"
DB_HOST = "{{{{ key(name='api/db_host') }}}}"
[[output.target]]
kind = "kubernetes-secret"
context = "{{{{ env }}}}"
namespace = "api"
name = "api"
labels = {{ team = "payments" }}
restart = [{{ kind = "Deployment", name = "api" }}]

[[output]]
name = "web"
[output.entries]
HOST = "{{{{ key(name='web/host') }}}}"
[[output.target]]
kind = "kubernetes-configmap"
context = "{{{{ env }}}}"
namespace = "api"
name = "web"
{extra_outputs}"#
    )
}

pub(super) struct Bed {
    pub(super) project: Project,
    pub(super) staging: Emulator,
    pub(super) prod: Emulator,
}

impl Bed {
    pub(super) fn new(extra_outputs: &str) -> Self {
        let project = Project::new(&config(extra_outputs));
        for env in ["staging", "prod"] {
            project.write(
                &format!("source/{env}.toml"),
                &format!(
                    "[keys]\n\"api/db_host\" = \"db.{env}\"\n\"web/host\" = \"www.{env}\"\n\n[secrets.\"api/db\"]\npassword = \"{CANARY}-{env}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key-{env}\"\n"
                ),
            );
        }
        let (staging, prod) = (Emulator::start("staging"), Emulator::start("prod"));
        for e in [&staging, &prod] {
            e.create_namespace("api");
            e.put_object(deployment("api")).unwrap();
        }
        project.write("kubeconfig", &Emulator::merged_kubeconfig_yaml(&[&staging, &prod]));
        Bed { project, staging, prod }
    }

    pub(super) fn run(&self, args: &[&str]) -> Run {
        self.project.run(args)
    }

    pub(super) fn kubectl(&self, context: &str, args: &[&str]) -> Run {
        let kubectl = std::env::var("CFGSYNC_TEST_KUBECTL")
            .unwrap_or_else(|_| panic!("CFGSYNC_TEST_KUBECTL is not set: run the tests through scripts/test.sh"));
        let out = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(self.project.path("kubeconfig"))
            .arg("--context")
            .arg(context)
            .args(args)
            .output()
            .unwrap();
        run_output(out)
    }
}

pub(super) fn deployment(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": "api" },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": name, "image": "x" }] } }
        }
    })
}

pub(super) fn data(obj: &Value, key: &str) -> String {
    obj["data"][key].as_str().unwrap_or_default().to_owned()
}

pub(super) fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn config_hash(e: &Emulator) -> Option<String> {
    let d = e.get_object(Kind::Deployment, "api", "api")?;
    d["spec"]["template"]["metadata"]["annotations"]["cfgsync.io/config-hash"].as_str().map(str::to_owned)
}

#[test]
fn apply_creates_objects_then_a_second_pass_writes_nothing() {
    let bed = Bed::new("");
    let r = bed.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let secret = bed.prod.get_object(Kind::Secret, "api", "api").expect("secret created");
    assert_eq!(data(&secret, "DB_HOST"), b64("db.prod"));
    assert_eq!(data(&secret, "DB_PASSWORD"), b64(&format!("{CANARY}-prod")));
    assert!(secret.get("stringData").is_none());
    let labels = &secret["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "cfgsync");
    assert_eq!(labels["cfgsync.io/output"], "api");
    assert_eq!(labels["cfgsync.io/env"], "prod");
    assert_eq!(labels["team"], "payments");
    let annotations = &secret["metadata"]["annotations"];
    assert!(annotations["cfgsync.io/fingerprint"].as_str().unwrap().starts_with("hmac-sha256:"), "{annotations}");
    assert_eq!(annotations["cfgsync.io/revision"], "file");
    let managers: Vec<&str> =
        secret["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(
        matches!(&managers[..], [m] if m.starts_with("cfgsync/")),
        "one field manager, the instance's (cfgsync/<instance>): {managers:?}"
    );
    let cm = bed.staging.get_object(Kind::ConfigMap, "api", "web").expect("configmap created");
    assert_eq!(data(&cm, "HOST"), "www.staging");
    assert!(cm["metadata"]["annotations"]["cfgsync.io/fingerprint"].as_str().unwrap().starts_with("sha256:"));
    assert!(config_hash(&bed.prod).is_some(), "created content rolls the workload");

    for e in [&bed.staging, &bed.prod] {
        e.reset_requests();
    }
    let rv = bed.prod.resource_version();
    let r = bed.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("0 created, 0 updated, 4 unchanged, 0 failed"), "{r:?}");
    for e in [&bed.staging, &bed.prod] {
        let req = e.requests();
        assert_eq!(req.writes(), 0, "no-op pass wrote: {req}");
        assert_eq!(req.verb(Verb::List), 2, "one LIST per (namespace, kind): {req}");
        assert_eq!(req.verb(Verb::Get), 0, "no GET per object: {req}");
    }
    assert_eq!(bed.prod.resource_version(), rv);
}

#[test]
fn a_hand_edit_is_drift_reported_and_reverted() {
    let bed = Bed::new("");
    assert_eq!(bed.run(&["reconcile", "--once"]).code, 0);
    let hash_before = config_hash(&bed.prod);
    let patch = format!("{{\"data\":{{\"DB_HOST\":\"{}\"}}}}", b64("evil.example"));
    let k = bed.kubectl("prod", &["-n", "api", "patch", "secret", "api", "--type", "merge", "-p", &patch]);
    assert_eq!(k.code, 0, "{k:?}");
    assert_eq!(data(&bed.prod.get_object(Kind::Secret, "api", "api").unwrap(), "DB_HOST"), b64("evil.example"));

    let r = bed.run(&["plan", "--env", "prod"]);
    assert!(r.stdout.contains("! api → Secret api/api in context prod (drift: edited in the cluster, to restore; keys: DB_HOST; values masked"), "{r:?}");
    let r = bed
        .project
        .command(&["reconcile", "--once", "--env", "prod"])
        .env("RUST_LOG", "cfgsync=info")
        .output()
        .unwrap();
    let r = run_output(r);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("drift: object edited in the cluster; restoring") && r.stderr.contains("keys=DB_HOST"),
        "{r:?}"
    );
    assert!(r.stdout.contains("1 drifted, restored"), "{r:?}");
    assert!(!r.all().contains("evil.example") && !r.all().contains(CANARY), "{r:?}");
    assert_eq!(data(&bed.prod.get_object(Kind::Secret, "api", "api").unwrap(), "DB_HOST"), b64("db.prod"));
    assert_ne!(config_hash(&bed.prod), None);
    assert_eq!(config_hash(&bed.prod), hash_before, "restored to the same content: same hash annotation");
}

#[test]
fn restart_annotation_changes_only_when_content_changes() {
    let bed = Bed::new("");
    assert_eq!(bed.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    let first = config_hash(&bed.prod).expect("rolled on create");
    let deploy_rv = bed.prod.get_object(Kind::Deployment, "api", "api").unwrap()["metadata"]["resourceVersion"].clone();
    // Unrelated change (web only): the api Deployment is not touched.
    bed.project.write("source/prod.toml", &bed.project.read("source/prod.toml").replace("www.prod", "www2.prod"));
    assert_eq!(bed.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    assert_eq!(bed.prod.get_object(Kind::Deployment, "api", "api").unwrap()["metadata"]["resourceVersion"], deploy_rv);
    // The api content changes: the Deployment rolls with a new hash.
    bed.project.write("source/prod.toml", &bed.project.read("source/prod.toml").replace("db.prod", "db2.prod"));
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert!(r.stdout.contains("restarted Deployment/api"), "{r:?}");
    let second = config_hash(&bed.prod).unwrap();
    assert_ne!(first, second);
    // No-op pass: no restart.
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert!(!r.stdout.contains("restarted"), "{r:?}");
    assert_eq!(config_hash(&bed.prod).unwrap(), second);
}

#[test]
fn a_tainted_output_never_reaches_a_configmap() {
    let bed = Bed::new("");
    let config = bed.project.read("cfgsync.toml").replace(
        "HOST = \"{{ key(name='web/host') }}\"",
        "HOST = \"{{ key(name='web/host') }}\"\nPW = \"{{ secret(path='api/db', field='password') }}\"",
    );
    bed.project.write("cfgsync.toml", &config);
    let r = bed.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(
            "output \"web\" reads secret \"api/db\" and cannot go to a ConfigMap (api/web in context \"prod\""
        ),
        "{r:?}"
    );
    let r = bed.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 2, "{r:?}");
    for e in [&bed.staging, &bed.prod] {
        assert_eq!(e.requests().writes(), 0, "nothing written anywhere");
        assert!(e.list_objects(Kind::ConfigMap, Some("api")).is_empty());
        assert!(e.list_objects(Kind::Secret, Some("api")).is_empty());
    }
    assert!(!r.all().contains(CANARY), "{r:?}");
}

#[test]
fn removing_an_output_prunes_exactly_its_objects() {
    let extra = r#"
[[output]]
name = "worker"
[output.entries]
QUEUE = "jobs"
[[output.target]]
kind = "kubernetes-configmap"
context = "{{ env }}"
namespace = "api"
name = "worker"

[[output]]
name = "cron"
[output.entries]
SCHEDULE = "daily"
[[output.target]]
kind = "kubernetes-configmap"
context = "{{ env }}"
namespace = "api"
name = "cron"
"#;
    let bed = Bed::new(extra);
    assert_eq!(bed.run(&["reconcile", "--once"]).code, 0);
    // Beside ours: an unlabelled ConfigMap, and one labelled by someone else.
    bed.prod
        .put_object(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "handmade", "namespace": "api"}, "data": {"A": "1"}}))
        .unwrap();
    bed.prod
        .put_object(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "other-tool", "namespace": "api", "labels": {"app.kubernetes.io/managed-by": "helm", "cfgsync.io/env": "prod"}}, "data": {"A": "1"}}))
        .unwrap();

    // Dropping one of four objects (25 %) is within the default guard.
    let without_worker = bed.project.read("cfgsync.toml").replace(
        "\n[[output]]\nname = \"worker\"\n[output.entries]\nQUEUE = \"jobs\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"api\"\nname = \"worker\"\n",
        "",
    );
    bed.project.write("cfgsync.toml", &without_worker);
    let r = bed.run(&["plan", "--env", "prod"]);
    assert!(
        r.stdout.contains(
            "- (pruned) → ConfigMap api/worker in context prod (delete; output \"worker\" no longer writes it)"
        ),
        "{r:?}"
    );
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "worker").is_some(), "plan deletes nothing");
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "worker").is_none(), "pruned");
    assert!(bed.staging.get_object(Kind::ConfigMap, "api", "worker").is_some(), "other env's cluster not in this pass");
    for name in ["handmade", "other-tool", "cron", "web"] {
        assert!(bed.prod.get_object(Kind::ConfigMap, "api", name).is_some(), "{name} must survive");
    }
    assert!(bed.prod.get_object(Kind::Secret, "api", "api").is_some());

    // Dropping two of the remaining three in staging's four (50 %) trips the guard.
    let without_cron = without_worker.replace(
        "\n[[output]]\nname = \"cron\"\n[output.entries]\nSCHEDULE = \"daily\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"api\"\nname = \"cron\"\n",
        "",
    );
    bed.project.write("cfgsync.toml", &without_cron);
    let r = bed.run(&["reconcile", "--once", "--env", "staging"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(
            "refusing to delete 2 of 4 objects this instance wrote (50% > 25%): re-run with --allow-mass-prune"
        ),
        "{r:?}"
    );
    assert!(bed.staging.get_object(Kind::ConfigMap, "api", "cron").is_some());
    assert!(bed.staging.get_object(Kind::ConfigMap, "api", "worker").is_some());
    let r = bed.run(&["reconcile", "--once", "--env", "staging", "--allow-mass-prune"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.staging.get_object(Kind::ConfigMap, "api", "cron").is_none());
    assert!(bed.staging.get_object(Kind::ConfigMap, "api", "worker").is_none());
}

#[test]
fn a_source_failure_updates_and_deletes_nothing() {
    let bed = Bed::new("");
    assert_eq!(bed.run(&["reconcile", "--once"]).code, 0);
    // prod's source breaks; staging's changes and an output is removed.
    bed.project.write("source/prod.toml", "[keys\n");
    bed.project
        .write("source/staging.toml", &bed.project.read("source/staging.toml").replace("www.staging", "www2.staging"));
    let config = bed.project.read("cfgsync.toml");
    let web = config.find("\n[[output]]\nname = \"web\"").unwrap();
    bed.project.write("cfgsync.toml", &config[..web]);
    for e in [&bed.staging, &bed.prod] {
        e.reset_requests();
    }
    let r = bed.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(bed.prod.requests().writes(), 0, "{}", bed.prod.requests());
    // Its clusters are listed while the sources are read (before anyone
    // knows the source fails), and nothing more.
    let prod = bed.prod.requests();
    assert_eq!(prod.total(), prod.verb(Verb::List), "a failed env's cluster is only read: {prod}");
    assert_eq!(bed.staging.requests().verb(Verb::Delete), 0, "no prune in a pass where a source failed");
    assert!(bed.staging.get_object(Kind::ConfigMap, "api", "web").is_some());
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "web").is_some());
}

#[test]
fn one_cluster_down_the_other_converges() {
    let bed = Bed::new("");
    bed.staging.set_fault(Fault::Down);
    let r = bed.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("context \"staging\""), "{r:?}");
    assert!(bed.prod.get_object(Kind::Secret, "api", "api").is_some());
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "web").is_some());
    bed.staging.clear_fault();
    let r = bed.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.staging.get_object(Kind::Secret, "api", "api").is_some());
}

#[test]
fn the_canary_reaches_no_configmap_log_or_plan() {
    let bed = Bed::new("");
    for args in
        [&["plan"][..], &["reconcile", "--once", "--dry-run"], &["--output", "json", "plan"], &["reconcile", "--once"]]
    {
        let r = bed.project.command(args).env("RUST_LOG", "trace").output().unwrap();
        let r = run_output(r);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(!r.all().contains(CANARY), "{args:?} leaked: {r:?}");
        assert!(!r.all().contains(&b64(&format!("{CANARY}-prod"))), "{args:?} leaked base64: {r:?}");
    }
    for e in [&bed.staging, &bed.prod] {
        for cm in e.list_objects(Kind::ConfigMap, None) {
            assert!(!cm.to_string().contains(CANARY), "{cm}");
        }
    }
}

#[test]
fn oversized_objects_are_refused_before_any_request() {
    let bed = Bed::new("");
    bed.project.write(
        "source/prod.toml",
        &bed.project.read("source/prod.toml").replace("www.prod", &"x".repeat(1024 * 1024 + 10)),
    );
    // The template sandbox's default entry limit (1 MiB) would stop this
    // entry first; raise it to reach the object limit.
    bed.project
        .write("cfgsync.toml", &format!("{}\n[render]\nmax_entry_size = \"2MiB\"\n", bed.project.read("cfgsync.toml")));
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("ConfigMap api/web would be"), "{r:?}");
    assert!(
        r.stderr.contains("bytes of data, over the 1 MiB (1048576 bytes) of values the API server accepts"),
        "{r:?}"
    );
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "web").is_none());
    assert_eq!(bed.prod.requests().verb(Verb::Apply) + bed.prod.requests().verb(Verb::Create), 1, "only the Secret");
}

/// Requests per pass on 100 outputs across 10 namespaces: the figures the
/// README quotes. One LIST per namespace; writes only for what changed.
#[test]
fn requests_per_pass_at_scale() {
    let mut text = String::from(
        "instance = \"kube-tests\"\n[files]\n\n[kubernetes]\nkubeconfig = \"kubeconfig\"\n\n[envs.prod]\n",
    );
    for i in 0..100 {
        text.push_str(&format!(
            "\n[[output]]\nname = \"app{i:03}\"\n[output.entries]\nVALUE = \"{{{{ key(name='k{i:03}') }}}}\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"prod\"\nnamespace = \"ns{}\"\nname = \"app{i:03}\"\n",
            i % 10
        ));
    }
    let project = Project::new(&text);
    let keys: String = (0..100).map(|i| format!("\"k{i:03}\" = \"v{i}\"\n")).collect();
    project.write("source/prod.toml", &format!("[keys]\n{keys}"));
    let prod = Emulator::start("prod");
    for n in 0..10 {
        prod.create_namespace(&format!("ns{n}"));
    }
    project.write("kubeconfig", &prod.kubeconfig_yaml());
    assert_eq!(project.run(&["reconcile", "--once"]).code, 0);
    prod.reset_requests();
    assert_eq!(project.run(&["reconcile", "--once"]).code, 0);
    let noop = prod.requests();
    assert_eq!((noop.verb(Verb::List), noop.writes()), (10, 0), "no-op: {noop}");
    project.write("source/prod.toml", &format!("[keys]\n{}", keys.replace("\"v7\"", "\"changed\"")));
    prod.reset_requests();
    assert_eq!(project.run(&["reconcile", "--once"]).code, 0);
    let one = prod.requests();
    assert_eq!((one.verb(Verb::List), one.writes()), (10, 1), "one-key change: {one}");
    println!("requests per pass, 100 outputs in 10 namespaces: no-op {noop}; one-key change {one}");
}
