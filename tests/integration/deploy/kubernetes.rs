//! deploy/kubernetes: the manifests against the API's types, applied to
//! kube-emulator with the real kubectl, and held to each other, to the
//! config they carry and to the image.
//!
//! Decision: kube-emulator serves Namespaces, Secrets, ConfigMaps and
//! Deployments only, with the semantics cfgsync needs; the other kinds here
//! (ServiceAccount, Service, PodDisruptionBudget, Role, RoleBinding) are
//! checked against their k8s-openapi types instead of being taught to it:
//! each object is read into its type and written back, and any field that
//! is dropped (unknown, misspelled, misplaced) or changed (a wrong type
//! fails to read) is reported. What a type cannot say (an enum value, a
//! required field modelled as optional) is not checked.

use std::collections::BTreeSet;
use std::process::Command;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube_emulator::{Emulator, Kind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{kubectl, read, repo, yaml_docs};
use crate::support::run_output;

/// `kubectl kustomize deploy/kubernetes/management`: what `kubectl apply -k` sends.
fn management() -> Vec<Value> {
    let out = run_output(
        Command::new(kubectl()).arg("kustomize").arg(repo("deploy/kubernetes/management")).output().unwrap(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    yaml_docs(&out.stdout, "kubectl kustomize deploy/kubernetes/management")
}

fn workload() -> Vec<Value> {
    yaml_docs(&read("deploy/kubernetes/workload/rbac.yaml"), "deploy/kubernetes/workload/rbac.yaml")
}

fn name_of(o: &Value) -> String {
    format!("{} {}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", objects.iter().map(name_of).collect::<Vec<_>>()))
}

fn through<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// What the API type of `object` drops or changes of it.
fn schema_problems(object: &Value) -> Vec<String> {
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    let kind = object["kind"].as_str().unwrap_or("");
    let back = match (api_version, kind) {
        ("v1", "Namespace") => through::<Namespace>(object),
        ("v1", "ServiceAccount") => through::<ServiceAccount>(object),
        ("v1", "Secret") => through::<Secret>(object),
        ("v1", "ConfigMap") => through::<ConfigMap>(object),
        ("v1", "Service") => through::<Service>(object),
        ("apps/v1", "Deployment") => through::<Deployment>(object),
        ("policy/v1", "PodDisruptionBudget") => through::<PodDisruptionBudget>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => through::<NetworkPolicy>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => through::<Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => through::<RoleBinding>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => through::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => through::<ClusterRoleBinding>(object),
        _ => Err(format!("no API type for {api_version} {kind} here: add its k8s-openapi type to this test")),
    };
    let mut problems = Vec::new();
    match back {
        Err(e) => problems.push(format!("{}: {e}", name_of(object))),
        Ok(back) => differences(&name_of(object), object, &back, &mut problems),
    }
    problems
}

fn differences(path: &str, sent: &Value, kept: &Value, out: &mut Vec<String>) {
    match (sent, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    None => out.push(format!("{path}.{k}: not a field of the API type (dropped)")),
                    Some(w) => differences(&format!("{path}.{k}"), v, w, out),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added by the API type"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if sent == kept => {}
        _ => out.push(format!("{path}: {sent} became {kept}")),
    }
}

#[test]
fn kubernetes_manifests_round_trip_through_their_api_types() {
    let objects: Vec<Value> = management().into_iter().chain(workload()).collect();
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert!(kinds.is_superset(&["Deployment", "Role", "RoleBinding", "ServiceAccount"].into()), "{kinds:?}");
    let problems: Vec<String> = objects.iter().flat_map(schema_problems).collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // The check can fail: a misspelled field, a number where a string goes.
    let mut deployment = find(&objects, "Deployment", "cfgsync").clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = json!({});
    assert_eq!(
        schema_problems(&deployment),
        ["Deployment cfgsync.spec.template.spec.containers[0].readinessprobe: not a field of the API type (dropped)"]
    );
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!(7);
    assert!(schema_problems(&deployment)[0].contains("invalid type"), "{:?}", schema_problems(&deployment));
}

#[test]
fn management_manifests_apply_server_side_to_kube_emulator() {
    let objects = management();
    let (served, other): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| Kind::from_str(o["kind"].as_str().unwrap()).is_ok());
    assert!(served.len() >= 5, "{:?}", served.iter().map(|o| name_of(o)).collect::<Vec<_>>());
    assert!(!other.is_empty());

    let emu = Emulator::start("management");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    // One YAML stream of JSON documents, in kustomize's order (the Namespace first).
    let list = dir.path().join("served.yaml");
    let docs: Vec<String> = served.iter().map(|o| serde_json::to_string(o).unwrap()).collect();
    std::fs::write(&list, docs.join("\n---\n")).unwrap();
    let apply = run_output(
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "--server-side", "--field-manager=deploy-test", "-f"])
            .arg(&list)
            .output()
            .unwrap(),
    );
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(apply.stdout.matches("serverside-applied").count(), served.len(), "{apply:?}");

    for o in &served {
        let kind = Kind::from_str(o["kind"].as_str().unwrap()).unwrap();
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap();
        let stored = emu.get_object(kind, ns, name).unwrap_or_else(|| panic!("{} was not stored", name_of(o)));
        assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "deploy-test", "{}", name_of(o));
        if kind.namespaced() {
            assert_eq!(ns, "cfgsync-system", "{}: kustomize puts everything in cfgsync-system", name_of(o));
        }
    }
    let deployment = emu.get_object(Kind::Deployment, "cfgsync-system", "cfgsync").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
}

/// The pod's volume and key that a file at `path` in the container comes
/// from: (volume source, object name, key).
fn mounted_file(pod: &Value, container: &Value, path: &str) -> (String, String, String) {
    let (dir, file) = path.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir} for {path}"));
    assert_eq!(mount["readOnly"], true, "{dir}");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    if let Some(s) = volume.get("secret") {
        ("Secret".into(), s["secretName"].as_str().unwrap().into(), file.into())
    } else if let Some(c) = volume.get("configMap") {
        ("ConfigMap".into(), c["name"].as_str().unwrap().into(), file.into())
    } else {
        panic!("{path}: volume {} is neither a Secret nor a ConfigMap", mount["name"])
    }
}

fn has_key(object: &Value, key: &str) -> bool {
    ["data", "stringData", "binaryData"].iter().any(|field| object[field].get(key).is_some())
}

fn matches_labels(selector: &Value, labels: &Value) -> bool {
    selector.as_object().unwrap().iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn management_manifests_agree_with_each_other_the_config_and_the_image() {
    let objects = management();
    let deployment = find(&objects, "Deployment", "cfgsync");
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = &pod["containers"][0];

    // The config in the ConfigMap (`cfgsync validate` accepts it:
    // readme::the_reference_deployments_config_validates) names its instance.
    let config_map = find(&objects, "ConfigMap", "cfgsync-config");
    let config: toml::Value = toml::from_str(config_map["data"]["cfgsync.toml"].as_str().unwrap()).unwrap();
    assert!(config["instance"].is_str(), "the config names its instance");
    let password_file = config["etcd"]["password_file"].as_str().unwrap();

    // Every file the container reads is mounted, read-only, from an object
    // of this kustomization that has that key.
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let env = container["env"].as_array().unwrap();
    let kubeconfig_path = env.iter().find(|e| e["name"] == "KUBECONFIG").unwrap()["value"].as_str().unwrap();
    for path in [config_path, password_file, kubeconfig_path] {
        let (kind, name, key) = mounted_file(pod, container, path);
        assert!(has_key(find(&objects, &kind, &name), &key), "{path}: {kind} {name} has no key {key}");
    }

    // One kubeconfig context per env: `context = "{{ env }}"` selects them.
    let kubeconfigs = find(&objects, "Secret", "cfgsync-workload-kubeconfigs");
    let kubeconfig = &yaml_docs(kubeconfigs["stringData"]["config"].as_str().unwrap(), "the kubeconfig")[0];
    let contexts: BTreeSet<&str> =
        kubeconfig["contexts"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let envs: BTreeSet<&str> = config["envs"].as_table().unwrap().keys().map(String::as_str).collect();
    assert_eq!(contexts, envs);

    // The pod runs as the image's user, and passes the namespace's
    // `restricted` Pod Security level.
    let namespace = find(&objects, "Namespace", "cfgsync-system");
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    let image_user = super::container::final_user();
    let security = &pod["securityContext"];
    assert_eq!(format!("{}:{}", security["runAsUser"], security["runAsGroup"]), image_user);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    for c in pod["containers"].as_array().unwrap() {
        let s = &c["securityContext"];
        assert_eq!(s["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(s["capabilities"]["drop"], json!(["ALL"]), "{}", c["name"]);
        assert_eq!(s["readOnlyRootFilesystem"], true, "{}", c["name"]);
    }
    assert!(pod["volumes"].as_array().unwrap().iter().all(|v| v.get("hostPath").is_none()));
    assert_eq!(find(&objects, "ServiceAccount", pod["serviceAccountName"].as_str().unwrap())["kind"], "ServiceAccount");

    // Selectors select the pod; the Service and the probes use its port.
    assert!(matches_labels(&deployment["spec"]["selector"]["matchLabels"], pod_labels));
    assert!(matches_labels(&find(&objects, "Service", "cfgsync")["spec"]["selector"], pod_labels));
    assert!(matches_labels(
        &find(&objects, "PodDisruptionBudget", "cfgsync")["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let port = container["ports"][0]["name"].as_str().unwrap();
    assert_eq!(find(&objects, "Service", "cfgsync")["spec"]["ports"][0]["targetPort"], port);
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": port}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": port}));
    let listen = args[args.iter().position(|a| *a == "--listen").unwrap() + 1];
    assert_eq!(listen.rsplit_once(':').unwrap().1, container["ports"][0]["containerPort"].to_string());

    // In the workload clusters: a Role and its RoleBinding in every
    // namespace the config writes to, bound to the ServiceAccount rbac.yaml
    // makes, whose name and namespace the kubeconfig's users are tokens of.
    let rbac = workload();
    let account = rbac.iter().find(|o| o["kind"] == "ServiceAccount").unwrap();
    let subject = json!({"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]});
    let namespaces: BTreeSet<&str> = config["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["target"].as_array().unwrap())
        .filter(|t| t["kind"].as_str().unwrap().starts_with("kubernetes-"))
        .map(|t| t["namespace"].as_str().unwrap())
        .collect();
    assert!(!namespaces.is_empty());
    for ns in namespaces {
        let in_ns = |kind: &str| rbac.iter().find(|o| o["kind"] == kind && o["metadata"]["namespace"] == ns);
        let role = in_ns("Role").unwrap_or_else(|| panic!("no Role in namespace {ns}"));
        let binding = in_ns("RoleBinding").unwrap_or_else(|| panic!("no RoleBinding in namespace {ns}"));
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert!(binding["subjects"].as_array().unwrap().contains(&subject), "{binding}");
    }
    assert!(!rbac.iter().any(|o| o["kind"].as_str().unwrap().starts_with("Cluster")), "no cluster-wide RBAC");
}
