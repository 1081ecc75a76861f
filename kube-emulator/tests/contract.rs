//! The contract suite: the Kubernetes API semantics cfgsync relies on, tested
//! the way one would test a real API server — through the `kube` client
//! (`Api<Secret>`, `Api<ConfigMap>`, `Api<Deployment>`, `Patch::Apply`,
//! `Patch::Merge`), raw HTTP where the client hides details, and the real
//! `kubectl` (module `kubectl`). Fault injection is in module `faults`.
//!
//! Every expectation here is what kube-apiserver does (messages and Status
//! shapes copied from it); the emulator is trusted only as far as this suite
//! goes.

#[path = "contract/faults.rs"]
mod faults;
#[path = "contract/kubectl.rs"]
mod kubectl;
#[path = "contract/strict.rs"]
mod strict;
#[path = "contract/support.rs"]
mod support;
#[path = "contract/watch.rs"]
mod watch;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, Kind, Verb};
use serde_json::{Value, json};

use support::{Cluster, api_error, rv};

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "cfgsync"}},
        "data": data,
    }))
    .expect("secret")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
            }
        }
    })
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_string(),
                        e["operation"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of(obj: &Value, manager: &str, operation: &str) -> Value {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|e| e["manager"] == manager && e["operation"] == operation))
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// discovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn discovery_documents_list_the_served_resources() {
    let c = Cluster::start("discovery").await;
    let (code, version) = c.raw("GET", "/version", None, b"").await;
    assert_eq!(code, 200);
    assert_eq!(version["major"], "1");

    let (_, api) = c.raw("GET", "/api", None, b"").await;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"], json!(["v1"]));

    let (_, v1) = c.raw("GET", "/api/v1", None, b"").await;
    let names: Vec<&str> = v1["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["configmaps", "namespaces", "secrets"]);
    assert_eq!(v1["resources"][1]["namespaced"], false);

    let (_, apis) = c.raw("GET", "/apis", None, b"").await;
    assert_eq!(apis["groups"][0]["preferredVersion"]["groupVersion"], "apps/v1");
    let (_, apps) = c.raw("GET", "/apis/apps/v1", None, b"").await;
    assert_eq!(apps["resources"][0]["kind"], "Deployment");

    // kube's own discovery accepts the documents
    let discovery = kube::Discovery::new(c.client.clone()).run().await.expect("discovery");
    assert!(discovery.has_group("apps"));
    let (code, _) = c.raw("GET", "/apis/batch/v1", None, b"").await;
    assert_eq!(code, 404);
}

// ---------------------------------------------------------------------------
// namespaces
// ---------------------------------------------------------------------------

#[tokio::test]
async fn default_and_kube_system_exist_and_namespaces_are_cluster_scoped() {
    let c = Cluster::start("ns").await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()), "{names:?}");

    let created = namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap())
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(created.metadata.labels.unwrap()["kubernetes.io/metadata.name"], "team-a");
    let err = api_error(
        namespaces
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "Team_A"}})).unwrap())
            .await,
        "422 for a namespace name that is not a DNS label",
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
}

// ---------------------------------------------------------------------------
// create / get
// ---------------------------------------------------------------------------

#[tokio::test]
async fn create_sets_server_fields_and_get_returns_the_object() {
    let c = Cluster::start("create").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let before = c.emu.resource_version();
    let created =
        secrets.create(&PostParams::default(), &secret("api", &[("password", &b64("s3cret"))])).await.unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.resource_version, Some((before + 1).to_string()));
    assert_eq!(created.type_.as_deref(), Some("Opaque"), "type defaults to Opaque");
    assert_eq!(meta.generation, None, "Secrets have no generation");

    let got = secrets.get("api").await.unwrap();
    assert_eq!(got.data.unwrap()["password"].0, b"s3cret");
    assert_eq!(got.metadata.uid, created.metadata.uid);
}

#[tokio::test]
async fn string_data_is_folded_into_base64_data() {
    let c = Cluster::start("stringdata").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}})).unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.string_data, None);
    assert_eq!(created.data.unwrap()["k"].0, b"v");
}

#[tokio::test]
async fn create_of_an_existing_name_is_409_already_exists() {
    let c = Cluster::start("exists").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets.create(&PostParams::default(), &secret("a", &[])).await.unwrap();
    let err = api_error(secrets.create(&PostParams::default(), &secret("a", &[])).await, "AlreadyExists");
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "AlreadyExists");
    assert_eq!(err.message, r#"secrets "a" already exists"#);
    let details = err.details.unwrap();
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("a", "secrets"));
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_404_for_the_namespace() {
    let c = Cluster::start("missingns").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "nope");
    let err = api_error(secrets.create(&PostParams::default(), &secret("a", &[])).await, "NotFound");
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, r#"namespaces "nope" not found"#);
    // server-side apply into a missing namespace too
    let err = api_error(
        secrets.patch("a", &PatchParams::apply("cfgsync"), &Patch::Apply(secret("a", &[]))).await,
        "NotFound",
    );
    assert_eq!(err.message, r#"namespaces "nope" not found"#);
}

#[tokio::test]
async fn not_found_is_a_status_body_shaped_like_the_real_api() {
    let c = Cluster::start("notfound").await;
    let (code, body) = c.raw("GET", "/api/v1/namespaces/default/secrets/missing", None, b"").await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets \"missing\" not found", "reason": "NotFound",
            "details": {"name": "missing", "kind": "secrets"}, "code": 404
        })
    );
    let (_, body) = c.raw("GET", "/apis/apps/v1/namespaces/default/deployments/web", None, b"").await;
    assert_eq!(body["message"], "deployments.apps \"web\" not found");
    assert_eq!(body["details"]["group"], "apps");
}

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_names_and_keys_are_422_invalid_with_causes() {
    let c = Cluster::start("invalid").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let err = api_error(
        secrets.create(&PostParams::default(), &secret("Bad_Name", &[("bad key", &b64("x"))])).await,
        "Invalid",
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.starts_with(
            r#"Secret "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#
        ),
        "{}",
        err.message
    );
    let details = err.details.unwrap();
    assert_eq!(details.kind, "Secret");
    let fields: Vec<&str> = details.causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["metadata.name", "data[bad key]"]);
    assert!(details.causes.iter().all(|c| c.reason == "FieldValueInvalid"));

    let mut bad_label = secret("ok", &[]);
    bad_label.metadata.labels.as_mut().unwrap().insert("cfgsync.io/output".into(), "not a label value".into());
    let err = api_error(secrets.create(&PostParams::default(), &bad_label).await, "Invalid");
    assert_eq!(err.details.unwrap().causes[0].field, "metadata.labels");
}

#[tokio::test]
async fn secret_data_must_be_base64_like_the_real_decoder_says() {
    let c = Cluster::start("base64").await;
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}});
    let (code, status) = c
        .raw("POST", "/api/v1/namespaces/default/secrets", Some("application/json"), body.to_string().as_bytes())
        .await;
    // kube-apiserver fails to decode []byte before validating: 400 BadRequest, not 422
    assert_eq!(code, 400);
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(
        status["message"],
        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3"
    );
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "%%%%"}});
    let err =
        api_error(secrets.patch("s", &PatchParams::apply("cfgsync"), &Patch::Apply(&applied)).await, "BadRequest");
    assert_eq!(err.code, 400);
    assert!(c.emu.get_object(Kind::Secret, "default", "s").is_none());
}

#[tokio::test]
async fn objects_over_one_mebibyte_are_refused_like_the_real_server() {
    let c = Cluster::start("size").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    // exactly at the limit: the decoded values add up to 1 MiB; keys do not
    // count (`totalSize += len(value)` in ValidateSecret)
    let half = "x".repeat(512 * 1024);
    secrets
        .create(
            &PostParams::default(),
            &secret("fits", &[(&"k".repeat(200), &b64(&half)), (&"l".repeat(200), &b64(&half))]),
        )
        .await
        .expect("1 MiB of values fits, whatever the keys");
    let over = "x".repeat(1024 * 1024 + 1);
    let err =
        api_error(secrets.create(&PostParams::default(), &secret("big", &[("k", &b64(&over))])).await, "422 Too long");
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(err.message, r#"Secret "big" is invalid: data: Too long: may not be more than 1048576 bytes"#);
    assert_eq!(err.details.unwrap().causes[0].reason, "FieldValueTooLong");

    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "big"}, "data": {"k": over}})).unwrap();
    let err = api_error(configmaps.create(&PostParams::default(), &cm).await, "422 Too long");
    assert_eq!(err.message, r#"ConfigMap "big" is invalid: []: Too long: may not be more than 1048576 bytes"#);

    // a body over the apiserver's 3 MiB request limit never reaches validation
    let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"},
        "data": {"k": "y".repeat(3 * 1024 * 1024)}});
    let (code, status) = c
        .raw("POST", "/api/v1/namespaces/default/configmaps", Some("application/json"), huge.to_string().as_bytes())
        .await;
    assert_eq!((code, status["reason"].as_str()), (413, Some("RequestEntityTooLarge")));
    assert_eq!(status["message"], "Request entity too large: limit is 3145728");
}

// ---------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------

#[tokio::test]
async fn label_selectors_support_every_operator() {
    let c = Cluster::start("selectors").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    for (name, labels) in [
        ("a", json!({"app": "api", "env": "prod"})),
        ("b", json!({"app": "web", "env": "staging"})),
        ("c", json!({"app": "api"})),
        ("d", json!({})),
    ] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        configmaps.create(&PostParams::default(), &cm).await.unwrap();
    }
    let cases = [
        ("app=api", "a,c"),
        ("app==api", "a,c"),
        ("app!=api", "b,d"),
        ("env in (prod,staging)", "a,b"),
        ("env notin (prod)", "b,c,d"),
        ("env", "a,b"),
        ("!env", "c,d"),
        ("app=api,env=prod", "a"),
        ("app=api,!env", "c"),
        ("app in (web), env", "b"),
    ];
    for (selector, want) in cases {
        let got: Vec<String> = configmaps
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .items
            .into_iter()
            .map(|cm| cm.metadata.name.unwrap())
            .collect();
        assert_eq!(got.join(","), want, "selector {selector:?}");
    }
    let err = api_error(configmaps.list(&ListParams::default().labels("app in api")).await, "BadRequest");
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn list_items_are_scoped_sorted_and_carry_the_list_resource_version() {
    let c = Cluster::start("list").await;
    c.emu.create_namespace("b-team");
    c.emu.create_namespace("a-team");
    for ns in ["b-team", "a-team"] {
        let secrets: Api<Secret> = Api::namespaced(c.client.clone(), ns);
        for name in ["z", "m"] {
            secrets.create(&PostParams::default(), &secret(name, &[])).await.unwrap();
        }
    }
    let all: Api<Secret> = Api::all(c.client.clone());
    let list = all.list(&ListParams::default()).await.unwrap();
    let keys: Vec<String> = list
        .items
        .iter()
        .map(|s| format!("{}/{}", s.metadata.namespace.as_deref().unwrap(), s.metadata.name.as_deref().unwrap()))
        .collect();
    assert_eq!(keys, ["a-team/m", "a-team/z", "b-team/m", "b-team/z"]);
    assert_eq!(list.metadata.resource_version, Some(c.emu.resource_version().to_string()));

    let one_ns: Api<Secret> = Api::namespaced(c.client.clone(), "a-team");
    assert_eq!(one_ns.list(&ListParams::default()).await.unwrap().items.len(), 2);

    // pagination with limit/continue
    let page = all.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().expect("a continue token");
    assert_eq!(page.metadata.remaining_item_count, Some(1));
    let rest = all.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].metadata.name.as_deref(), Some("z"));

    // raw: items carry no kind/apiVersion, as from kube-apiserver
    let (_, raw) = c.raw("GET", "/api/v1/namespaces/a-team/secrets", None, b"").await;
    assert_eq!(raw["kind"], "SecretList");
    assert!(raw["items"][0].get("kind").is_none());
}

#[tokio::test]
async fn field_selectors_on_name_and_namespace() {
    let c = Cluster::start("fieldsel").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    for name in ["one", "two"] {
        secrets.create(&PostParams::default(), &secret(name, &[])).await.unwrap();
    }
    let got = secrets.list(&ListParams::default().fields("metadata.name=two")).await.unwrap();
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.items[0].metadata.name.as_deref(), Some("two"));
    let got = secrets.list(&ListParams::default().fields("metadata.name!=two")).await.unwrap();
    assert_eq!(got.items[0].metadata.name.as_deref(), Some("one"));
    let err = api_error(secrets.list(&ListParams::default().fields("spec.foo=x")).await, "BadRequest");
    assert_eq!(err.code, 400);
}

// ---------------------------------------------------------------------------
// resourceVersion, update, patch
// ---------------------------------------------------------------------------

#[tokio::test]
async fn resource_version_moves_only_on_real_changes() {
    let c = Cluster::start("rv").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let created = secrets.create(&PostParams::default(), &secret("s", &[("a", &b64("1"))])).await.unwrap();
    let rv0 = created.metadata.resource_version.clone().unwrap();
    let cluster_rv = c.emu.resource_version();

    // merge patch that changes nothing, replace with the same object: no write
    let same =
        secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": b64("1")}}))).await.unwrap();
    assert_eq!(same.metadata.resource_version.as_deref(), Some(rv0.as_str()));
    let replaced = secrets.replace("s", &PostParams::default(), &created).await.unwrap();
    assert_eq!(replaced.metadata.resource_version.as_deref(), Some(rv0.as_str()));
    secrets.get("s").await.unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(c.emu.resource_version(), cluster_rv, "reads and no-op writes do not move the counter");

    // a real change does, and the new value is the cluster's
    let changed =
        secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": b64("2")}}))).await.unwrap();
    let rv1 = changed.metadata.resource_version.unwrap();
    assert_ne!(rv1, rv0);
    assert_eq!(rv1, c.emu.resource_version().to_string());
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_409_conflict() {
    let c = Cluster::start("stale").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let v1 = secrets.create(&PostParams::default(), &secret("s", &[("a", &b64("1"))])).await.unwrap();
    let mut v2 = v1.clone();
    v2.data.as_mut().unwrap().insert("a".into(), k8s_openapi::ByteString(b"2".to_vec()));
    secrets.replace("s", &PostParams::default(), &v2).await.expect("fresh update works");

    let mut stale = v1.clone();
    stale.data.as_mut().unwrap().insert("a".into(), k8s_openapi::ByteString(b"3".to_vec()));
    let err = api_error(secrets.replace("s", &PostParams::default(), &stale).await, "Conflict");
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on secrets \"s\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // the same precondition in a merge patch
    let err = api_error(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"resourceVersion": rv(&serde_json::to_value(&v1).unwrap())}, "data": {"a": b64("4")}})),
            )
            .await,
        "Conflict",
    );
    assert_eq!(err.code, 409);
    assert_eq!(secrets.get("s").await.unwrap().data.unwrap()["a"].0, b"2");

    // PUT on a missing object is 404 (Secrets are not created on update)
    let mut missing = v1.clone();
    missing.metadata.name = Some("gone".into());
    missing.metadata.resource_version = None;
    let err = api_error(secrets.replace("gone", &PostParams::default(), &missing).await, "NotFound");
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn merge_patch_sets_and_removes_keys_and_records_the_patcher() {
    let c = Cluster::start("merge").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}})).unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    let patched = configmaps
        .patch("cm", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "9", "b": null, "c": "3"}})))
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!(data.get("a").map(String::as_str), Some("9"));
    assert_eq!(data.get("b"), None);
    assert_eq!(data.get("c").map(String::as_str), Some("3"));
    let obj = c.emu.get_object(Kind::ConfigMap, "default", "cm").unwrap();
    // the client's user agent names the manager when no fieldManager is given
    let patcher = managers(&obj).into_iter().find(|(_, op)| op == "Update").unwrap().0;
    assert!(!patcher.is_empty());

    let err = api_error(
        configmaps.patch("missing", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "1"}}))).await,
        "NotFound",
    );
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_and_template_annotations() {
    let c = Cluster::start("smp").await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let d: Deployment = serde_json::from_value(deployment("web")).unwrap();
    let created = deployments.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.replicas, Some(1), "replicas default to 1");

    let patch = json!({"spec": {"template": {
        "metadata": {"annotations": {"cfgsync.io/config-hash": "abc"}},
        "spec": {"containers": [{"name": "sidecar", "image": "sidecar:1"}]}}}});
    let patched = deployments.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let template = patched.spec.template;
    let names: Vec<String> = template.spec.unwrap().containers.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["app", "sidecar"], "containers merge by name");
    assert_eq!(template.metadata.unwrap().annotations.unwrap()["cfgsync.io/config-hash"], "abc");
    assert_eq!(patched.metadata.generation, Some(2), "a spec change bumps the generation");

    // a merge patch replaces the list instead
    let merged = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.spec.template.spec.unwrap().containers.len(), 1);
    // a metadata-only change does not bump the generation
    let labelled = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(3));
}

#[tokio::test]
async fn json_patch_applies_rfc_6902_operations() {
    let c = Cluster::start("jsonpatch").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"a": "1"}})).unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    let patch =
        json!([{"op": "replace", "path": "/data/a", "value": "2"}, {"op": "add", "path": "/data/b", "value": "3"}]);
    let (code, body) = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            Some("application/json-patch+json"),
            patch.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"], json!({"a": "2", "b": "3"}));
}

// ---------------------------------------------------------------------------
// server-side apply
// ---------------------------------------------------------------------------

fn applied_secret(name: &str, data: &[(&str, &str)], labels: Value) -> Value {
    let data: BTreeMap<&str, String> = data.iter().map(|(k, v)| (*k, b64(v))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels}, "data": data})
}

#[tokio::test]
async fn apply_creates_a_missing_object_and_records_the_manager() {
    let c = Cluster::start("apply-create").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let applied =
        applied_secret("api", &[("password", "pw"), ("user", "u")], json!({"app.kubernetes.io/managed-by": "cfgsync"}));
    let (code, body) = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/default/secrets/api?fieldManager=cfgsync",
            Some("application/apply-patch+yaml"),
            applied.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 201, "apply of a missing object creates it: {body}");
    assert_eq!(managers(&body), [("cfgsync".to_string(), "Apply".to_string())]);
    assert_eq!(
        fields_of(&body, "cfgsync", "Apply"),
        json!({"f:data": {"f:password": {}, "f:user": {}},
               "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}})
    );
    let entry = &body["metadata"]["managedFields"][0];
    assert_eq!(entry["apiVersion"], "v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    let got = secrets.get("api").await.unwrap();
    assert_eq!(got.data.unwrap()["password"].0, b"pw");
    // through the kube client, as cfgsync does it
    let via_kube = secrets
        .patch(
            "other",
            &PatchParams::apply("cfgsync"),
            &Patch::Apply(&applied_secret("other", &[("k", "v")], json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(via_kube.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn apply_requires_a_field_manager() {
    let c = Cluster::start("apply-manager").await;
    let applied = applied_secret("api", &[("k", "v")], json!({}));
    let (code, body) = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/default/secrets/api",
            Some("application/apply-patch+yaml"),
            applied.to_string().as_bytes(),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // YAML bodies are accepted too (kubectl may send YAML)
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n";
    let (code, body) = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/y?fieldManager=me",
            Some("application/apply-patch+yaml"),
            yaml.as_bytes(),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["k"], "v");
}

#[tokio::test]
async fn applying_the_same_configuration_again_changes_nothing() {
    let c = Cluster::start("apply-noop").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let applied = applied_secret("api", &[("password", "pw")], json!({"app.kubernetes.io/managed-by": "cfgsync"}));
    let first = secrets.patch("api", &PatchParams::apply("cfgsync"), &Patch::Apply(&applied)).await.unwrap();
    let counter = c.emu.resource_version();
    let second = secrets.patch("api", &PatchParams::apply("cfgsync").force(), &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);
    assert_eq!(second.metadata.managed_fields, first.metadata.managed_fields, "not even the time moves");
    assert_eq!(c.emu.resource_version(), counter);
}

#[tokio::test]
async fn apply_removes_fields_the_same_manager_dropped_but_keeps_others() {
    let c = Cluster::start("apply-prune").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let pp = PatchParams::apply("cfgsync").force();
    secrets
        .patch(
            "api",
            &pp,
            &Patch::Apply(applied_secret("api", &[("a", "1"), ("b", "2")], json!({"team": "x", "keep": "y"}))),
        )
        .await
        .unwrap();
    // another manager adds its own key and label
    secrets
        .patch(
            "api",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api", "labels": {"other": "z"}},
                "data": {"theirs": b64("t")}}),
            ),
        )
        .await
        .unwrap();
    // cfgsync drops key b and label team
    let after = secrets
        .patch("api", &pp, &Patch::Apply(applied_secret("api", &[("a", "1")], json!({"keep": "y"}))))
        .await
        .unwrap();
    let keys: Vec<&String> = after.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["a", "theirs"], "b is pruned, the other manager's key stays");
    let labels = after.metadata.labels.unwrap();
    assert!(!labels.contains_key("team"));
    assert_eq!(labels.get("other").map(String::as_str), Some("z"));

    // a field both appliers set survives when one of them drops it
    secrets
        .patch(
            "api",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"},
                "data": {"theirs": b64("t"), "a": b64("1")}})),
        )
        .await
        .unwrap();
    let after = secrets
        .patch("api", &pp, &Patch::Apply(applied_secret("api", &[("c", "3")], json!({"keep": "y"}))))
        .await
        .unwrap();
    let keys: Vec<&String> = after.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["a", "c", "theirs"], "a is kept: the other applier owns it too");
}

#[tokio::test]
async fn apply_over_another_managers_field_is_409_with_causes_unless_forced() {
    let c = Cluster::start("apply-conflict").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets
        .patch(
            "api",
            &PatchParams::apply("cfgsync"),
            &Patch::Apply(applied_secret("api", &[("password", "pw"), ("user", "u")], json!({}))),
        )
        .await
        .unwrap();
    // a human edits one key by hand (an Update operation takes the field over)
    secrets
        .patch(
            "api",
            &PatchParams { field_manager: Some("kubectl-edit".into()), ..PatchParams::default() },
            &Patch::Merge(json!({"data": {"password": b64("hacked")}})),
        )
        .await
        .unwrap();
    let edited = c.emu.get_object(Kind::Secret, "default", "api").unwrap();
    assert_eq!(fields_of(&edited, "kubectl-edit", "Update"), json!({"f:data": {"f:password": {}}}));
    assert_eq!(fields_of(&edited, "cfgsync", "Apply"), json!({"f:data": {"f:user": {}}}));

    // re-applying the original value without force conflicts
    let desired = applied_secret("api", &[("password", "pw"), ("user", "u")], json!({}));
    let err = api_error(
        secrets.patch("api", &PatchParams::apply("cfgsync"), &Patch::Apply(&desired)).await,
        "apply Conflict",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let time = edited["metadata"]["managedFields"][1]["time"].as_str().unwrap();
    assert_eq!(
        err.message,
        format!("Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1 at {time}: .data.password")
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".data.password");
    assert_eq!(causes[0].message, format!("conflict with \"kubectl-edit\" using v1 at {time}"));
    assert_eq!(
        secrets.get("api").await.unwrap().data.unwrap()["password"].0,
        b"hacked",
        "a refused apply writes nothing"
    );

    // applying the *same* value another manager set is not a conflict: ownership is shared
    secrets
        .patch(
            "api",
            &PatchParams::apply("observer"),
            &Patch::Apply(applied_secret("api", &[("user", "u")], json!({}))),
        )
        .await
        .expect("same value, no conflict");

    // force takes the field back
    let forced = secrets.patch("api", &PatchParams::apply("cfgsync").force(), &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(forced.data.unwrap()["password"].0, b"pw");
    let obj = c.emu.get_object(Kind::Secret, "default", "api").unwrap();
    assert!(
        !managers(&obj).contains(&("kubectl-edit".into(), "Update".into())),
        "the editor no longer owns anything: {:?}",
        managers(&obj)
    );
    assert_eq!(fields_of(&obj, "cfgsync", "Apply"), json!({"f:data": {"f:password": {}, "f:user": {}}}));
}

#[tokio::test]
async fn apply_conflicts_list_every_field_grouped_by_manager() {
    let c = Cluster::start("apply-conflicts").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": data});
    configmaps.patch("cm", &PatchParams::apply("alpha"), &Patch::Apply(cm(json!({"a": "1", "b": "1"})))).await.unwrap();
    let err = api_error(
        configmaps.patch("cm", &PatchParams::apply("beta"), &Patch::Apply(cm(json!({"a": "2", "b": "2"})))).await,
        "Conflict",
    );
    assert_eq!(err.message, "Apply failed with 2 conflicts: conflicts with \"alpha\":\n- .data.a\n- .data.b");
    let fields: Vec<String> = err.details.unwrap().causes.into_iter().map(|c| c.field).collect();
    assert_eq!(fields, [".data.a", ".data.b"]);
}

#[tokio::test]
async fn apply_on_a_deployment_owns_only_the_template_annotation() {
    let c = Cluster::start("apply-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let d: Deployment = serde_json::from_value(deployment("api")).unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let restart = |hash: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
            "spec": {"template": {"metadata": {"annotations": {"cfgsync.io/config-hash": hash}}}}})
    };
    let rolled = deployments.patch("api", &PatchParams::apply("cfgsync"), &Patch::Apply(restart("h1"))).await.unwrap();
    assert_eq!(rolled.metadata.generation, Some(2));
    let spec = rolled.spec;
    assert_eq!(spec.template.spec.unwrap().containers[0].image.as_deref(), Some("registry.example/app:1"));
    let obj = c.emu.get_object(Kind::Deployment, "default", "api").unwrap();
    assert_eq!(
        fields_of(&obj, "cfgsync", "Apply"),
        json!({"f:spec": {"f:template": {"f:metadata": {"f:annotations": {"f:cfgsync.io/config-hash": {}}}}}})
    );
    // the creator's Update entry looks like kube-apiserver's: no "." on structs or containers
    let created_by = managers(&obj).into_iter().find(|(_, op)| op == "Update").unwrap().0;
    let update_fields = fields_of(&obj, &created_by, "Update");
    assert_eq!(
        update_fields["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}})
    );
    assert_eq!(update_fields["f:metadata"]["f:labels"][".".to_string()], json!({}));

    let same = deployments.patch("api", &PatchParams::apply("cfgsync"), &Patch::Apply(restart("h1"))).await.unwrap();
    assert_eq!(same.metadata.generation, Some(2), "same hash: no rollout");
    let again = deployments.patch("api", &PatchParams::apply("cfgsync"), &Patch::Apply(restart("h2"))).await.unwrap();
    assert_eq!(again.metadata.generation, Some(3));
}

// ---------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------

#[tokio::test]
async fn delete_answers_a_success_status_then_404() {
    let c = Cluster::start("delete").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let created = secrets.create(&PostParams::default(), &secret("s", &[])).await.unwrap();
    let before = c.emu.resource_version();
    let (code, body) = c.raw("DELETE", "/api/v1/namespaces/default/secrets/s", None, b"").await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": "s", "kind": "secrets", "uid": created.metadata.uid.unwrap()}})
    );
    assert_eq!(c.emu.resource_version(), before + 1, "a delete is a write");
    let err = api_error(secrets.delete("s", &DeleteParams::default()).await, "NotFound");
    assert_eq!((err.code, err.message.as_str()), (404, r#"secrets "s" not found"#));

    // preconditions
    let created = secrets.create(&PostParams::default(), &secret("p", &[])).await.unwrap();
    let err = api_error(
        secrets
            .delete(
                "p",
                &DeleteParams::default()
                    .preconditions(kube::api::Preconditions { resource_version: Some("1".into()), uid: None }),
            )
            .await,
        "Conflict",
    );
    assert_eq!(err.code, 409);
    secrets
        .delete(
            "p",
            &DeleteParams::default().preconditions(kube::api::Preconditions {
                resource_version: created.metadata.resource_version.clone(),
                uid: created.metadata.uid.clone(),
            }),
        )
        .await
        .expect("matching preconditions");
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let c = Cluster::start("delete-ns").await;
    c.emu.create_namespace("doomed");
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "doomed");
    secrets.create(&PostParams::default(), &secret("s", &[])).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let answer = namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let ns = answer.left().expect("the namespace is returned, as by kube-apiserver");
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(c.emu.get_object(Kind::Secret, "doomed", "s").is_none());
    let err = api_error(namespaces.delete("default", &DeleteParams::default()).await, "Forbidden");
    assert_eq!(err.code, 403);
}

#[tokio::test]
async fn delete_collection_by_label() {
    let c = Cluster::start("deletecollection").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    for (name, owned) in [("a", true), ("b", false), ("c", true)] {
        let labels = if owned { json!({"owner": "cfgsync"}) } else { json!({}) };
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        configmaps.create(&PostParams::default(), &cm).await.unwrap();
    }
    configmaps
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("owner=cfgsync"))
        .await
        .unwrap();
    let left: Vec<String> = c
        .emu
        .list_objects(Kind::ConfigMap, Some("default"))
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["b"]);
}

// ---------------------------------------------------------------------------
// watch (not needed by cfgsync; enough for kubectl and informers)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn watch_streams_changes_after_the_listed_resource_version() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let c = Cluster::start("watch").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let list = configmaps.list(&ListParams::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "w", "labels": {"x": "1"}}})).unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    let mut stream = configmaps.watch(&WatchParams::default().labels("x=1").timeout(10), &from).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("w")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    configmaps.delete("w", &DeleteParams::default()).await.unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.metadata.name.as_deref(), Some("w")),
        other => panic!("expected DELETED, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// the test-facing API
// ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_are_counted_by_verb_and_resource() {
    let c = Cluster::start("counts").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets.list(&ListParams::default()).await.unwrap();
    secrets
        .patch("a", &PatchParams::apply("cfgsync"), &Patch::Apply(applied_secret("a", &[("k", "v")], json!({}))))
        .await
        .unwrap();
    secrets.get("a").await.unwrap();
    secrets.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": b64("w")}}))).await.unwrap();
    secrets.delete("a", &DeleteParams::default()).await.unwrap();
    let counts = c.emu.requests();
    assert_eq!(counts.get(Verb::List, "secrets"), 1);
    assert_eq!(counts.get(Verb::Apply, "secrets"), 1);
    assert_eq!(counts.get(Verb::Get, "secrets"), 1);
    assert_eq!(counts.get(Verb::Patch, "secrets"), 1);
    assert_eq!(counts.get(Verb::Delete, "secrets"), 1);
    assert_eq!(counts.writes(), 3);
    assert_eq!(counts.to_string(), "list secrets=1, get secrets=1, apply secrets=1, patch secrets=1, delete secrets=1");
    c.emu.reset_requests();
    assert_eq!(c.emu.requests().total(), 0);
}

#[tokio::test]
async fn put_object_seeds_unlabelled_objects_without_a_manager() {
    let c = Cluster::start("seed").await;
    let stored = c
        .emu
        .put_object(json!({"kind": "Secret", "metadata": {"name": "hand-made", "namespace": "default"},
            "data": {"k": b64("v")}}))
        .unwrap();
    assert_eq!(stored["type"], "Opaque");
    assert!(stored["metadata"].get("managedFields").is_none());
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    assert!(secrets.get("hand-made").await.unwrap().metadata.labels.is_none());
    let err =
        c.emu.put_object(json!({"kind": "Secret", "metadata": {"name": "x", "namespace": "missing"}})).unwrap_err();
    assert_eq!(err, r#"namespaces "missing" not found"#);
    assert_eq!(c.emu.requests().total(), 1, "seeding is not a request; the get is");
}

#[tokio::test]
async fn two_emulators_share_one_kubeconfig_with_two_contexts() {
    let a = Emulator::start("cluster-a");
    let b = Emulator::start("cluster-b");
    let yaml = Emulator::merged_kubeconfig_yaml(&[&a, &b]);
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    assert_eq!(kc.current_context.as_deref(), Some("cluster-a"));
    for (emu, ctx) in [(&a, "cluster-a"), (&b, "cluster-b")] {
        let options = kube::config::KubeConfigOptions { context: Some(ctx.into()), ..Default::default() };
        let config = kube::Config::from_custom_kubeconfig(kc.clone(), &options).await.unwrap();
        assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), emu.url());
    }
    assert_ne!(a.url(), b.url());
}

#[tokio::test]
async fn start_is_fast_and_stop_frees_the_port() {
    let t = Instant::now();
    let emu = Emulator::start("timing");
    let started = t.elapsed();
    let addr = emu.addr();
    eprintln!("emulator start: {started:?}");
    assert!(started < Duration::from_secs(2), "start took {started:?}");
    emu.stop();
    assert!(std::net::TcpStream::connect(addr).is_err(), "nothing listens after stop");
}

/// A bounded loopback benchmark (prints requests/s; asserts only that it finishes sanely).
#[tokio::test]
async fn throughput_of_apply_and_list_on_loopback() {
    const N: usize = 300;
    let c = Cluster::start("throughput").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let t = Instant::now();
    for i in 0..N {
        let name = format!("s{}", i % 100);
        let applied =
            applied_secret(&name, &[("k", &i.to_string())], json!({"app.kubernetes.io/managed-by": "cfgsync"}));
        secrets.patch(&name, &PatchParams::apply("cfgsync").force(), &Patch::Apply(&applied)).await.unwrap();
    }
    let apply_rate = N as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=cfgsync");
    for _ in 0..N {
        assert_eq!(secrets.list(&lp).await.unwrap().items.len(), 100);
    }
    let list_rate = N as f64 / t.elapsed().as_secs_f64();
    eprintln!("loopback: {apply_rate:.0} applies/s, {list_rate:.0} lists/s (100 secrets per list)");
    assert_eq!(c.emu.requests().get(Verb::Apply, "secrets"), N as u64);
    assert!(apply_rate > 10.0 && list_rate > 10.0);
}
