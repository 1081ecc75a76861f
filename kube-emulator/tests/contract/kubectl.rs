//! The real kubectl against the emulator: the commands an operator (and the
//! cfgsync drift tests) use — get with a label selector, server-side apply,
//! a hand patch, edit through `KUBE_EDITOR`, delete — plus the binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kube_emulator::Kind;
use serde_json::{Value, json};

use crate::support::Cluster;

const MANAGED: &str = "app.kubernetes.io/managed-by=cfgsync";

fn write(c: &Cluster, name: &str, contents: &str) -> String {
    let path = c.dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

const SECRET_YAML: &str = "apiVersion: v1
kind: Secret
metadata:
  name: api
  namespace: default
  labels:
    app.kubernetes.io/managed-by: cfgsync
data:
  password: c2VjcmV0
";

#[tokio::test]
async fn kubectl_server_side_apply_then_get_by_label() {
    let c = Cluster::start("kubectl-apply").await;
    let file = write(&c, "secret.yaml", SECRET_YAML);
    let out = c.kubectl_ok(&["apply", "--server-side", "-f", &file]);
    assert_eq!(out.trim(), "secret/api serverside-applied");
    let obj = c.emu.get_object(Kind::Secret, "default", "api").unwrap();
    assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(obj["metadata"]["managedFields"][0]["operation"], "Apply");

    // an unlabelled neighbour must not show up
    c.emu.put_object(json!({"kind": "Secret", "metadata": {"name": "other", "namespace": "default"}})).unwrap();
    let table = c.kubectl_ok(&["get", "secrets", "-l", MANAGED]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..3], ["api", "Opaque", "1"]);

    let names = c.kubectl_ok(&["get", "secrets", "-l", MANAGED, "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names, "api");
    // applying the same file again is a no-op for the API server
    let rv = c.emu.resource_version();
    c.kubectl_ok(&["apply", "--server-side", "-f", &file]);
    assert_eq!(c.emu.resource_version(), rv);
}

#[tokio::test]
async fn kubectl_patch_by_hand_is_visible_as_drift() {
    let c = Cluster::start("kubectl-patch").await;
    let file = write(&c, "secret.yaml", SECRET_YAML);
    c.kubectl_ok(&["apply", "--server-side", "--field-manager", "cfgsync", "-f", &file]);
    let out = c.kubectl_ok(&["patch", "secret", "api", "--type", "merge", "-p", r#"{"data":{"password":"aGFja2Vk"}}"#]);
    assert_eq!(out.trim(), "secret/api patched");
    let obj = c.emu.get_object(Kind::Secret, "default", "api").unwrap();
    assert_eq!(obj["data"]["password"], "aGFja2Vk");
    let entries = obj["metadata"]["managedFields"].as_array().unwrap();
    let patcher = entries.iter().find(|e| e["manager"] == "kubectl-patch").expect("kubectl-patch entry");
    assert_eq!(patcher["operation"], "Update");
    assert_eq!(patcher["fieldsV1"], json!({"f:data": {"f:password": {}}}));

    // re-applying without force conflicts with the hand edit, as on a real cluster
    let out = c.kubectl(&["apply", "--server-side", "--field-manager", "cfgsync", "-f", &file]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("conflict with \"kubectl-patch\""), "{stderr}");
    c.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "--field-manager", "cfgsync", "-f", &file]);
    assert_eq!(c.emu.get_object(Kind::Secret, "default", "api").unwrap()["data"]["password"], "c2VjcmV0");
}

#[tokio::test]
async fn kubectl_edit_through_an_editor_script() {
    let c = Cluster::start("kubectl-edit").await;
    let file = write(&c, "secret.yaml", SECRET_YAML);
    c.kubectl_ok(&["apply", "--server-side", "-f", &file]);
    let editor = write(&c, "editor.sh", "#!/bin/sh\nsed -i 's/password: .*/password: ZWRpdGVk/' \"$1\"\n");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = c.kubectl_env(&["edit", "secret", "api"], &[("KUBE_EDITOR", &editor), ("EDITOR", &editor)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret/api edited");
    let obj = c.emu.get_object(Kind::Secret, "default", "api").unwrap();
    assert_eq!(obj["data"]["password"], "ZWRpdGVk");
    let editor_entry = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-edit")
        .cloned()
        .expect("kubectl-edit entry");
    assert_eq!(editor_entry["fieldsV1"], json!({"f:data": {"f:password": {}}}));
}

#[tokio::test]
async fn kubectl_delete_and_get_not_found() {
    let c = Cluster::start("kubectl-delete").await;
    let file = write(&c, "secret.yaml", SECRET_YAML);
    c.kubectl_ok(&["apply", "--server-side", "-f", &file]);
    let out = c.kubectl_ok(&["delete", "secret", "api"]);
    assert!(out.starts_with("secret \"api\" deleted"), "{out}");
    assert!(c.emu.get_object(Kind::Secret, "default", "api").is_none());
    let out = c.kubectl(&["get", "secret", "api"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), r#"Error from server (NotFound): secrets "api" not found"#);
}

#[tokio::test]
async fn kubectl_manages_namespaces_configmaps_and_deployments() {
    let c = Cluster::start("kubectl-kinds").await;
    let file = write(
        &c,
        "all.yaml",
        "apiVersion: v1
kind: Namespace
metadata:
  name: apps
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: apps
data:
  level: info
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
",
    );
    let out = c.kubectl_ok(&["apply", "--server-side", "-f", &file]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "namespace/apps serverside-applied",
            "configmap/settings serverside-applied",
            "deployment.apps/web serverside-applied"
        ]
    );
    let out = c.kubectl_ok(&["-n", "apps", "get", "cm,deploy", "-o", "name"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["configmap/settings", "deployment.apps/web"]);
    // the rollout annotation cfgsync sets, done by hand
    c.kubectl_ok(&[
        "-n",
        "apps",
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"cfgsync.io/config-hash":"h1"}}}}}"#,
    ]);
    let d = c.emu.get_object(Kind::Deployment, "apps", "web").unwrap();
    assert_eq!(d["spec"]["template"]["metadata"]["annotations"]["cfgsync.io/config-hash"], "h1");
    assert_eq!(d["metadata"]["generation"], 2);
    let out = c.kubectl_ok(&["delete", "namespace", "apps"]);
    assert!(out.starts_with("namespace \"apps\" deleted"), "{out}");
    assert!(c.emu.list_objects(Kind::ConfigMap, Some("apps")).is_empty());
}

/// The binary: prints its URL first, writes a kubeconfig kubectl can use.
#[tokio::test]
async fn the_binary_serves_kubectl_from_its_kubeconfig() {
    let c = Cluster::start("unused").await;
    let kubeconfig = c.dir.path().join("bin-kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args(["--listen", "127.0.0.1:0", "--context", "by-hand", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kube-emulator");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("http://127.0.0.1:"), "{first}");
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains("current-context: \"by-hand\""), "{kc}");
    assert!(kc.contains(first.trim()), "{kc}");
    let out = Command::new(crate::support::kubectl())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "namespaces", "-o", "json"])
        .env("HOME", c.dir.path())
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|n| n["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
}
