//! What a real API server refuses or holds back, and cfgsync must cope
//! with: the keys each built-in Secret type requires, finalizers and
//! `deletionTimestamp`, a namespace in `Terminating`, RBAC's 403 per
//! namespace and verb and 401 for a bad token, label selectors validated
//! (400), `continue` tokens that expire (410), and the command line's
//! faults. Messages and shapes are kube-apiserver's
//! (`pkg/apis/core/validation`, `apimachinery/pkg/labels`, the RBAC
//! authorizer, the `NamespaceLifecycle` admission plugin).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_emulator::{Kind, Verb};
use serde_json::{Value, json};

use crate::support::{Cluster, api_error};

fn typed_secret(name: &str, type_: &str, data: Value) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "type": type_, "data": data})).unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn built_in_secret_types_require_their_keys() {
    let c = Cluster::start("types").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let create = |name: &'static str, t: &'static str, data: Value| {
        let secrets = secrets.clone();
        async move { secrets.create(&PostParams::default(), &typed_secret(name, t, data)).await }
    };
    let cases = [
        (
            "tls",
            "kubernetes.io/tls",
            json!({"tls.crt": b64("c")}),
            r#"Secret "tls" is invalid: data[tls.key]: Required value"#,
        ),
        (
            "tls2",
            "kubernetes.io/tls",
            json!({}),
            r#"Secret "tls2" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]"#,
        ),
        (
            "docker",
            "kubernetes.io/dockerconfigjson",
            json!({"other": b64("{}")}),
            r#"Secret "docker" is invalid: data[.dockerconfigjson]: Required value"#,
        ),
        (
            "basic",
            "kubernetes.io/basic-auth",
            json!({"user": b64("x")}),
            r#"Secret "basic" is invalid: [data[%s][username]: Required value, data[%s][password]: Required value]"#,
        ),
        (
            "ssh",
            "kubernetes.io/ssh-auth",
            json!({"ssh-privatekey": ""}),
            r#"Secret "ssh" is invalid: data[%s][ssh-privatekey]: Required value"#,
        ),
    ];
    for (name, t, data, message) in cases {
        let err = api_error(create(name, t, data).await, "422");
        assert_eq!((err.code, err.reason.as_str(), err.message.as_str()), (422, "Invalid", message), "{t}");
    }
    let err = api_error(
        create("bad-json", "kubernetes.io/dockerconfigjson", json!({".dockerconfigjson": b64("not json")})).await,
        "422",
    );
    assert!(
        err.message.starts_with(
            r#"Secret "bad-json" is invalid: data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": "#
        ),
        "{}",
        err.message
    );
    // What each type needs is enough; basic-auth needs only one of its keys.
    create("ok-tls", "kubernetes.io/tls", json!({"tls.crt": b64("c"), "tls.key": b64("k")})).await.unwrap();
    create("ok-basic", "kubernetes.io/basic-auth", json!({"password": ""})).await.unwrap();
    create("ok-docker", "kubernetes.io/dockerconfigjson", json!({".dockerconfigjson": b64(r#"{"auths":{}}"#)}))
        .await
        .unwrap();
    create("ok-custom", "example.com/anything", json!({})).await.unwrap();
}

#[tokio::test]
async fn the_size_limit_counts_values_not_keys_nor_base64() {
    let c = Cluster::start("size-values").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    // 900 KiB of decoded values: 1.2 MiB as base64, accepted.
    let value = "v".repeat(900 * 1024);
    secrets.create(&PostParams::default(), &typed_secret("big", "Opaque", json!({"k": b64(&value)}))).await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cm"}, "data": {"a": "x".repeat(600 * 1024)}, "binaryData": {"b": b64(&"y".repeat(424 * 1024))}}),
    )
    .unwrap();
    configmaps.create(&PostParams::default(), &cm).await.expect("1 MiB of values in data and binaryData fits");
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_they_are_removed() {
    let c = Cluster::start("finalizers").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let held: Secret =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})).unwrap();
    let created = secrets.create(&PostParams::default(), &held).await.unwrap();
    let (code, body) = c.raw("DELETE", "/api/v1/namespaces/default/secrets/held", None, b"").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "Secret", "not deleted yet: the object comes back, not a Status: {body}");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
    assert_eq!(body["metadata"]["deletionGracePeriodSeconds"], 0);
    let still = secrets.get("held").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());
    assert_eq!(still.metadata.uid, created.metadata.uid);
    // It is listed, and a create of its name is refused.
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let err =
        api_error(secrets.create(&PostParams::default(), &typed_secret("held", "Opaque", json!({}))).await, "409");
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (409, "AlreadyExists", r#"object is being deleted: secrets "held" already exists"#)
    );
    // No finalizer may be added now.
    let err = api_error(
        secrets
            .patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}})),
            )
            .await,
        "422",
    );
    assert_eq!(
        err.message,
        r#"Secret "held" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/more"}"#
    );
    // The write that removes the last finalizer deletes it.
    secrets
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert!(c.emu.get_object(Kind::Secret, "default", "held").is_none());
}

#[tokio::test]
async fn a_terminating_namespace_refuses_new_content_until_it_is_gone() {
    let c = Cluster::start("terminating").await;
    c.emu.create_namespace("doomed");
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "doomed");
    let held: Secret =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})).unwrap();
    secrets.create(&PostParams::default(), &held).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let ns = namespaces.get("doomed").await.expect("terminating, not gone: an object holds it");
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(ns.metadata.deletion_timestamp.is_some());
    let err = api_error(
        secrets.create(&PostParams::default(), &typed_secret("new", "Opaque", json!({}))).await,
        "403 NamespaceTerminating",
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            403,
            "Forbidden",
            r#"secrets "new" is forbidden: unable to create new content in namespace doomed because it is being terminated"#
        )
    );
    assert_eq!(err.details.unwrap().causes[0].reason, "NamespaceTerminating");
    // Server-side apply of a new object is a create too.
    let (code, body) = c
        .raw(
            "PATCH",
            "/api/v1/namespaces/doomed/configmaps/cm?fieldManager=t",
            Some("application/apply-patch+yaml"),
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}"#,
        )
        .await;
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")), "{body}");
    assert!(c.emu.remove_finalizers(Kind::Secret, "doomed", "held"));
    assert!(c.emu.get_object(Kind::Namespace, "", "doomed").is_none(), "gone with its last object");
}

#[tokio::test]
async fn rbac_forbids_per_namespace_and_verb_and_a_bad_token_is_401() {
    let c = Cluster::start("rbac").await;
    c.emu.create_namespace("team-b");
    c.emu.forbid(Some("team-b"), &[Verb::List, Verb::Get]);
    let in_b: Api<Secret> = Api::namespaced(c.client.clone(), "team-b");
    let err = api_error(in_b.list(&ListParams::default()).await, "403");
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            403,
            "Forbidden",
            r#"secrets is forbidden: User "kube-emulator" cannot list resource "secrets" in API group "" in the namespace "team-b""#
        )
    );
    let err = api_error(in_b.get("api").await, "403");
    assert_eq!(
        err.message,
        r#"secrets "api" is forbidden: User "kube-emulator" cannot get resource "secrets" in API group "" in the namespace "team-b""#
    );
    // Other verbs there, and every verb elsewhere, are allowed.
    in_b.create(&PostParams::default(), &typed_secret("api", "Opaque", json!({}))).await.unwrap();
    let in_default: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    in_default.list(&ListParams::default()).await.unwrap();
    // Apply is the RBAC verb patch.
    c.emu.forbid(None, &[Verb::Apply]);
    let err = api_error(
        in_default
            .patch(
                "x",
                &PatchParams::apply("t"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})),
            )
            .await,
        "403",
    );
    assert!(err.message.contains(r#"cannot patch resource "secrets""#), "{}", err.message);
    c.emu.set_unauthorized(true);
    let err = api_error(in_default.list(&ListParams::default()).await, "401");
    assert_eq!((err.code, err.reason.as_str(), err.message.as_str()), (401, "Unauthorized", "Unauthorized"));
    c.emu.clear_access();
    in_b.list(&ListParams::default()).await.expect("allowed again");
}

#[tokio::test]
async fn label_selectors_with_invalid_keys_or_values_are_400() {
    let c = Cluster::start("selector-400").await;
    for (selector, message) in [
        (
            "cfgsync.io/env=-prod",
            r#"unable to parse requirement: values[0][cfgsync.io/env]: Invalid value: "-prod": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#,
        ),
        (
            "env=x,-bad",
            "unable to parse requirement: key: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
    ] {
        let path = format!("/api/v1/namespaces/default/secrets?labelSelector={}", selector.replace('/', "%2F"));
        let (code, body) = c.raw("GET", &path, None, b"").await;
        assert_eq!((code, body["reason"].as_str(), body["message"].as_str()), (400, Some("BadRequest"), Some(message)));
    }
    let value = "v".repeat(64);
    let (code, _) = c.raw("GET", &format!("/api/v1/secrets?labelSelector=env%3D{value}"), None, b"").await;
    assert_eq!(code, 400, "a value over 63 characters");
}

#[tokio::test]
async fn continue_tokens_expire_with_compaction() {
    let c = Cluster::start("continue").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    for name in ["a", "b", "c"] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        configmaps.create(&PostParams::default(), &cm).await.unwrap();
    }
    let first = configmaps.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("more to come");
    use base64::Engine;
    let decoded: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(&token).unwrap()).unwrap();
    assert_eq!(decoded["v"], "meta.k8s.io/v1", "shaped like kube-apiserver's: {decoded}");
    let second = configmaps.list(&ListParams::default().limit(1).continue_token(&token)).await.unwrap();
    assert_eq!(second.items[0].metadata.name.as_deref(), Some("b"));
    let d: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "d"}})).unwrap();
    configmaps.create(&PostParams::default(), &d).await.unwrap();
    c.emu.compact();
    let err = api_error(configmaps.list(&ListParams::default().limit(1).continue_token(&token)).await, "410");
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    assert!(err.message.starts_with("The provided continue parameter is too old"), "{}", err.message);
}

/// The binary's `--forbid`, `--unauthorized` and `--rate-limit`, seen by kubectl.
#[tokio::test]
async fn the_command_line_sets_403_and_429() {
    let c = Cluster::start("unused-cli").await;
    let kubeconfig = c.dir.path().join("cli-kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args(["--listen", "127.0.0.1:0", "--context", "cli", "--forbid", "kube-system:list", "--rate-limit", "1:1"])
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kube-emulator");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let kubectl = |args: &[&str]| {
        Command::new(crate::support::kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .env("HOME", c.dir.path())
            .output()
            .unwrap()
    };
    // The first request is rate limited; kubectl waits Retry-After and retries.
    let ok = kubectl(&["get", "secrets", "-n", "default", "-o", "name"]);
    let forbidden = kubectl(&["get", "secrets", "-n", "kube-system"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let stderr = String::from_utf8_lossy(&forbidden.stderr);
    assert!(!forbidden.status.success());
    assert!(
        stderr.contains(r#"secrets is forbidden: User "kube-emulator" cannot list resource "secrets" in API group "" in the namespace "kube-system""#),
        "{stderr}"
    );
}
