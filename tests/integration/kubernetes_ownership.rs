//! Kubernetes targets against an API server that behaves like a real one
//! (issue 16): never take over an object someone else made, never flip one
//! object between two instances, prune only the exact object observed,
//! converge keys other managers added, isolate a forbidden namespace,
//! honour proxies, accept what the API server accepts, refuse at
//! `validate` what it would refuse at apply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use kube_emulator::{Emulator, Kind, Verb};
use serde_json::{Value, json};

use super::kubernetes::{Bed, CANARY, b64, data, deployment};
use crate::support::{Project, run_output};

fn labels(obj: &Value) -> Value {
    obj["metadata"]["labels"].clone()
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| format!("{}/{}", m["manager"].as_str().unwrap(), m["operation"].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Bed with `instance = "team-a"`.
fn bed(extra: &str) -> Bed {
    let bed = Bed::new(extra);
    let config = bed.project.read("cfgsync.toml");
    // `Bed` names its own instance; these tests are team-a's.
    bed.project.write("cfgsync.toml", &config.replacen("instance = \"kube-tests\"", "instance = \"team-a\"", 1));
    bed
}

// --- 1. an object someone else made -------------------------------------------

fn helm_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "api", "namespace": "api", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "data": {"DB_PASSWORD": b64("helm-password")}})
}

#[test]
fn an_object_someone_else_made_is_neither_written_nor_taken_over_until_adopted() {
    let bed = bed("");
    bed.prod.put_object(helm_secret()).unwrap();
    let before = bed.prod.get_object(Kind::Secret, "api", "api").unwrap();

    let r = bed.run(&["plan", "--env", "prod"]);
    assert!(!r.stdout.contains("api → Secret api/api in context prod (create"), "plan must not say create: {r:?}");
    let refusal = "Secret api/api in context prod exists and was not made by cfgsync (app.kubernetes.io/managed-by: Helm); not written. To hand it to instance \"team-a\": kubectl --context prod -n api annotate secret api cfgsync.io/adopt=team-a";
    assert!(r.all().contains(refusal), "{r:?}");

    bed.prod.reset_requests();
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(refusal), "{r:?}");
    let after = bed.prod.get_object(Kind::Secret, "api", "api").unwrap();
    assert_eq!(after, before, "not a byte changed");
    let requests = bed.prod.requests();
    assert_eq!(requests.get(Verb::Apply, "secrets") + requests.get(Verb::Create, "secrets"), 0, "{requests}");
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "web").is_some(), "the other target is written");
    assert_eq!(bed.prod.requests().verb(Verb::Delete), 0, "never deleted");
    // Scripts see the refusal's own code beside its text.
    let r = bed.run(&["reconcile", "--once", "--env", "prod", "--output", "json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let targets: Vec<&Value> = report["envs"][0]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["targets"].as_array().unwrap())
        .filter(|t| t.get("error").is_some())
        .collect();
    let [target] = targets[..] else { panic!("one failed target: {report}") };
    assert_eq!(target["error_code"], "foreign_object", "{report}");
    assert!(target["error"].as_str().unwrap().contains(refusal), "{report}");

    // Explicit adoption: the annotation names this instance.
    let k = bed.kubectl("prod", &["-n", "api", "annotate", "secret", "api", "cfgsync.io/adopt=team-a"]);
    assert_eq!(k.code, 0, "{k:?}");
    let r = bed.run(&["plan", "--env", "prod"]);
    assert!(
        r.stdout.contains("~ api → Secret api/api in context prod (update; keys: DB_HOST, DB_PASSWORD; adopt: annotated cfgsync.io/adopt=team-a (managed by Helm)"),
        "{r:?}"
    );
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    let adopted = bed.prod.get_object(Kind::Secret, "api", "api").unwrap();
    assert_eq!(labels(&adopted)["app.kubernetes.io/managed-by"], "cfgsync");
    assert_eq!(labels(&adopted)["cfgsync.io/instance"], "team-a");
    assert_eq!(data(&adopted, "DB_PASSWORD"), b64(&format!("{CANARY}-prod")));
    // Annotated for another instance: still refused.
    let bed2 = bed_with_secret_for("team-b");
    let r = bed2.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(data(&bed2.prod.get_object(Kind::Secret, "api", "api").unwrap(), "DB_PASSWORD"), b64("helm-password"));
}

fn bed_with_secret_for(adopter: &str) -> Bed {
    let bed = bed("");
    let mut s = helm_secret();
    s["metadata"]["annotations"] = json!({"cfgsync.io/adopt": adopter});
    bed.prod.put_object(s).unwrap();
    bed
}

// --- 2. two instances, two env names, one address -----------------------------

fn instance_config(instance: &str, env: &str) -> String {
    format!(
        r#"instance = "{instance}"
[files]
[kubernetes]
kubeconfig = "kubeconfig"
[envs.{env}]
[[output]]
name = "shared"
[output.entries]
FROM = "{instance}"
[[output.target]]
kind = "kubernetes-configmap"
context = "prod"
namespace = "api"
name = "shared"
restart = [{{ kind = "Deployment", name = "api" }}]
"#
    )
}

#[test]
fn two_instances_under_different_env_names_never_flip_one_object() {
    let cluster = Emulator::start("prod");
    cluster.create_namespace("api");
    cluster.put_object(deployment("api")).unwrap();
    let a = Project::new(&instance_config("team-a", "prod"));
    let b = Project::new(&instance_config("team-b", "staging"));
    for p in [&a, &b] {
        p.write("source/prod.toml", "[keys]\n");
        p.write("source/staging.toml", "[keys]\n");
        p.write("kubeconfig", &cluster.kubeconfig_yaml());
    }
    assert_eq!(a.run(&["reconcile", "--once"]).code, 0);
    let generation =
        |c: &Emulator| c.get_object(Kind::Deployment, "api", "api").unwrap()["metadata"]["generation"].clone();
    let after_a = generation(&cluster);
    for round in 0..2 {
        let r = b.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 1, "round {round}: {r:?}");
        assert!(
            r.stderr.contains("ConfigMap api/shared in context prod: ConfigMap is owned by cfgsync instance \"team-a\", not this one (\"team-b\"); not written"),
            "{r:?}"
        );
        let r = a.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        assert!(r.stdout.contains("0 created, 0 updated, 1 unchanged"), "{r:?}");
    }
    let cm = cluster.get_object(Kind::ConfigMap, "api", "shared").unwrap();
    assert_eq!(data(&cm, "FROM"), "team-a");
    assert_eq!(generation(&cluster), after_a, "the workload rolled once, not every pass");
    assert_eq!(managers(&cm), ["cfgsync/team-a/Update"], "created by a create, under the instance's field manager");
}

// --- 3. prune deletes only the exact object observed ---------------------------

#[test]
fn prune_deletes_only_the_object_it_observed() {
    use cfgsync::reconcile::{self, PassOptions, Targets};
    let extra = "\n[[output]]\nname = \"old\"\n[output.entries]\nOLD = \"1\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"api\"\nname = \"old\"\n";
    let bed = bed(extra);
    assert_eq!(bed.run(&["reconcile", "--once"]).code, 0);
    let config = bed.project.read("cfgsync.toml");
    bed.project.write("cfgsync.toml", &config.replace(extra, ""));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let config = cfgsync::config::load(&bed.project.path("cfgsync.toml"), &cfgsync::config::ProcessEnv).unwrap();
        let templates = cfgsync::render::Templates::compile(&config).unwrap();
        let sources = cfgsync::source::Sources::new(&config);
        let snapshot = sources.fetch(&reconcile::request(&config, &templates, "prod", None)).await.unwrap();
        let targets = Targets::new(&config, None);
        let options = PassOptions::default();
        let plan =
            reconcile::plan_env(&config, &templates, &targets, Arc::new(snapshot), true, &options, &Default::default())
                .await;
        // Between observe and apply, someone replaces the object.
        let mut replaced = bed.prod.get_object(Kind::ConfigMap, "api", "old").unwrap();
        assert!(bed.prod.delete_object(Kind::ConfigMap, "api", "old"));
        replaced["data"] = json!({"OLD": "theirs"});
        replaced["metadata"].as_object_mut().unwrap().remove("managedFields");
        bed.prod.put_object(replaced).unwrap();
        reconcile::apply_env(plan, None).await
    });
    let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        errors.iter().any(|e| e == "ConfigMap api/old in context prod: not deleted: it changed since cfgsync wrote it"),
        "{errors:?}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["error_codes"], json!(["prune_precondition_failed"]), "{json}");
    assert_eq!(json["errors"], json!(errors), "the codes stand in the order of the texts: {json}");
    assert_eq!(
        data(&bed.prod.get_object(Kind::ConfigMap, "api", "old").expect("the new object survives"), "OLD"),
        "theirs"
    );
}

// --- 4. keys other managers added or co-own -----------------------------------

#[test]
fn keys_other_managers_add_or_co_own_converge_for_real() {
    let bed = bed("");
    assert_eq!(bed.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    let k = bed.kubectl("prod", &["-n", "api", "patch", "cm", "web", "-p", r#"{"data":{"EXTRA":"x"}}"#]);
    assert_eq!(k.code, 0, "{k:?}");
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("1 drifted, restored"), "{r:?}");
    let cm = bed.prod.get_object(Kind::ConfigMap, "api", "web").unwrap();
    assert!(cm["data"].get("EXTRA").is_none(), "removed for real: {cm}");
    bed.prod.reset_requests();
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert!(r.stdout.contains("0 drifted") || !r.stdout.contains("drifted"), "{r:?}");
    assert_eq!(bed.prod.requests().writes(), 0, "quiet afterwards: {}", bed.prod.requests());

    // A key co-owned by another applier (same value) plus one of its own.
    let manifest = bed.project.path("gitops.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: api\ndata:\n  HOST: www.prod\n  GITOPS: y\n",
    )
    .unwrap();
    let k =
        bed.kubectl("prod", &["apply", "--server-side", "--field-manager=gitops", "-f", manifest.to_str().unwrap()]);
    assert_eq!(k.code, 0, "{k:?}");
    // The source stops writing HOST: cfgsync's key goes although gitops co-owns it.
    let config = bed.project.read("cfgsync.toml").replace("HOST = \"{{ key(name='web/host') }}\"", "PORT = \"80\"");
    bed.project.write("cfgsync.toml", &config);
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    let cm = bed.prod.get_object(Kind::ConfigMap, "api", "web").unwrap();
    assert_eq!(cm["data"], json!({"PORT": "80"}), "exactly what the source says: {cm}");
    bed.prod.reset_requests();
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(bed.prod.requests().writes(), 0, "converged: {}", bed.prod.requests());
}

#[test]
fn objects_written_under_the_old_field_manager_migrate_in_one_pass() {
    let bed = bed("");
    // What cfgsync wrote before field managers were per instance.
    let old = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": "api", "labels": {"app.kubernetes.io/managed-by": "cfgsync",
            "cfgsync.io/output": "web", "cfgsync.io/env": "prod", "cfgsync.io/instance": "team-a"},
            "annotations": {"cfgsync.io/fingerprint": "sha256:0", "cfgsync.io/revision": "file"}},
        "data": {"HOST": "www.prod", "DROPPED": "1"}});
    let manifest = bed.project.path("old.json");
    std::fs::write(&manifest, old.to_string()).unwrap();
    let k =
        bed.kubectl("prod", &["apply", "--server-side", "--field-manager=cfgsync", "-f", manifest.to_str().unwrap()]);
    assert_eq!(k.code, 0, "{k:?}");
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    let cm = bed.prod.get_object(Kind::ConfigMap, "api", "web").unwrap();
    assert_eq!(cm["data"], json!({"HOST": "www.prod"}), "{cm}");
    assert_eq!(managers(&cm), ["cfgsync/team-a/Apply"], "the old manager let go of everything");
    bed.prod.reset_requests();
    assert_eq!(bed.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    assert_eq!(bed.prod.requests().writes(), 0, "{}", bed.prod.requests());
}

// --- 5. one forbidden namespace --------------------------------------------------

#[test]
fn a_forbidden_namespace_fails_only_its_own_targets() {
    let extra = "\n[[output]]\nname = \"other\"\n[output.entries]\nX = \"1\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"team-b\"\nname = \"other\"\n";
    let bed = bed(extra);
    bed.prod.create_namespace("team-b");
    bed.prod.forbid(Some("team-b"), &[]);
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(r#"configmaps is forbidden: User "kube-emulator" cannot list resource "configmaps" in API group "" in the namespace "team-b""#), "{r:?}");
    assert!(bed.prod.get_object(Kind::Secret, "api", "api").is_some(), "namespace api is written");
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "web").is_some());
    assert!(r.stdout.contains("2 created"), "{r:?}");
}

// --- 6. proxies -----------------------------------------------------------------

/// An HTTP CONNECT proxy on loopback that counts its tunnels.
struct ConnectProxy {
    port: u16,
    tunnels: Arc<AtomicU32>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels = Arc::new(AtomicU32::new(0));
        let counter = tunnels.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let counter = counter.clone();
                std::thread::spawn(move || tunnel(client, &counter));
            }
        });
        ConnectProxy { port, tunnels }
    }
}

fn tunnel(client: TcpStream, counter: &AtomicU32) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let Some(target) = first.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()) else { return };
    let Ok(upstream) = TcpStream::connect(target) else { return };
    counter.fetch_add(1, Ordering::SeqCst);
    let mut client_w = client.try_clone().unwrap();
    client_w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
    let mut up_r = upstream.try_clone().unwrap();
    let mut up_w = upstream;
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 8192];
    while let Ok(n) = up_r.read(&mut buf) {
        if n == 0 || client_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = t.join();
}

#[test]
fn proxy_settings_are_honoured_like_kubectl() {
    let bed = bed("");
    // A proxy in the environment is not used for a loopback cluster (as by
    // kubectl), and never stops the client from being built.
    let dead = "http://127.0.0.1:9";
    let r = run_output(
        bed.project
            .command(&["reconcile", "--once", "--env", "prod"])
            .env("HTTPS_PROXY", dead)
            .env("https_proxy", dead)
            .env("HTTP_PROXY", dead)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.prod.get_object(Kind::Secret, "api", "api").is_some());

    // `proxy-url` in the kubeconfig is used.
    let proxy = ConnectProxy::start();
    let kubeconfig = bed.project.read("kubeconfig");
    let with_proxy = kubeconfig.replacen(
        &format!("    server: \"{}\"\n", bed.staging.url()),
        &format!("    server: \"{}\"\n    proxy-url: http://127.0.0.1:{}\n", bed.staging.url(), proxy.port),
        1,
    );
    assert_ne!(with_proxy, kubeconfig);
    bed.project.write("kubeconfig", &with_proxy);
    let r = bed.run(&["reconcile", "--once", "--env", "staging"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(proxy.tunnels.load(Ordering::SeqCst) > 0, "requests went through the proxy");
    assert!(bed.staging.get_object(Kind::Secret, "api", "api").is_some());
}

// --- 7. size ------------------------------------------------------------------------

#[test]
fn secrets_up_to_one_mebibyte_of_values_are_written() {
    let bed = bed("");
    let big = "b".repeat(900 * 1024);
    bed.project
        .write("source/prod.toml", &bed.project.read("source/prod.toml").replace(&format!("{CANARY}-prod"), &big));
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "900 KiB of data (1.2 MiB as base64) is accepted by the API server: {r:?}");
    assert_eq!(data(&bed.prod.get_object(Kind::Secret, "api", "api").unwrap(), "DB_PASSWORD"), b64(&big));
}

// --- 8. validate, and objects held by finalizers --------------------------------------

#[test]
fn validate_refuses_what_the_api_server_would_refuse() {
    let base = super::kubernetes::config("");
    let cases: Vec<(String, &str)> = vec![
        (
            base.replace(
                "name = \"web\"\n[output.entries]",
                &format!("name = \"{}\"\n[output.entries]", "w".repeat(64)),
            ),
            "cannot be a Kubernetes label value",
        ),
        (base.replace("[envs.staging]", "[envs.\"-staging\"]"), "env \"-staging\""),
        (base.replace("HOST = \"{{ key(name='web/host') }}\"", "\"..\" = \"x\""), "\"..\""),
        (
            base.replace("name = \"web\"\n{", "name = \"a..b\"\n{")
                .replace("namespace = \"api\"\nname = \"web\"", "namespace = \"api\"\nname = \"a..b\""),
            "\"a..b\"",
        ),
        (base.replace("labels = { team = \"payments\" }", "labels = { team = \"-payments\" }"), "label team"),
        (
            base.replace(
                "labels = { team = \"payments\" }",
                "labels = { team = \"payments\" }\ntype = \"kubernetes.io/tls\"",
            ),
            "kubernetes.io/tls needs entries tls.crt and tls.key",
        ),
        (
            base.replace(
                "labels = { team = \"payments\" }",
                &format!("annotations = {{ note = \"{}\" }}", "n".repeat(300 * 1024)),
            ),
            "annotations",
        ),
    ];
    for (config, expected) in cases {
        let project = Project::new(&config);
        project.write("kubeconfig", "");
        let r = project.run(&["validate"]);
        assert_eq!(r.code, 2, "{expected}: {r:?}");
        assert!(r.stderr.contains(expected), "{expected}: {r:?}");
    }
}

#[test]
fn an_object_held_by_a_finalizer_is_not_pruned_again() {
    let extra = "\n[[output]]\nname = \"old\"\n[output.entries]\nOLD = \"1\"\n[[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"api\"\nname = \"old\"\n";
    let bed = bed(extra);
    assert_eq!(bed.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    let k = bed.kubectl(
        "prod",
        &["-n", "api", "patch", "cm", "old", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#],
    );
    assert_eq!(k.code, 0, "{k:?}");
    let config = bed.project.read("cfgsync.toml");
    bed.project.write("cfgsync.toml", &config.replace(extra, ""));
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(bed.prod.get_object(Kind::ConfigMap, "api", "old").unwrap()["metadata"]["deletionTimestamp"].is_string());
    bed.prod.reset_requests();
    let r = bed.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(bed.prod.requests().verb(Verb::Delete), 0, "already being deleted: {}", bed.prod.requests());
    assert!(!r.stdout.contains("pruned"), "{r:?}");
}
