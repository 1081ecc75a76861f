//! Discovery and the read-only documents kubectl asks for before it acts:
//!
//! - `/version`, `/api`, `/api/v1`, `/apis`, `/apis/apps`, `/apis/apps/v1`
//!   in the legacy (unaggregated) format; kubectl asks for aggregated
//!   discovery first and falls back when the answer is plain
//!   `application/json`, as against an older server;
//! - `/openapi/v3` and `/openapi/v3/{api/v1,apis/apps/v1}`: a skeleton that
//!   lists, for each kind, the PATCH operation with its
//!   `x-kubernetes-group-version-kind` and its query parameters. kubectl
//!   (`apply`, `edit`, `create -f`) reads it only to learn that the server
//!   does field validation (`fieldValidation`); without it kubectl would
//!   fall back to client-side validation, which needs the full OpenAPI v2
//!   schema. There are no schemas in it, so `kubectl explain` does not work;
//! - the `Table` form of lists and objects (`Accept: ...;as=Table`), with
//!   the columns kubectl shows for these kinds against a real cluster.

use serde_json::{Value, json};

use crate::kind::Kind;

/// The Kubernetes version the emulator reports.
pub(crate) const GIT_VERSION: &str = "v1.33.0-kube-emulator";

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn apps_group() -> Value {
    json!({
        "name": "apps",
        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}
    })
}

pub(crate) fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps_group()]})
}

pub(crate) fn api_group_apps() -> Value {
    let mut g = apps_group();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    g
}

fn resource(kind: Kind) -> Value {
    let mut r = json!({
        "name": kind.plural(),
        "singularName": kind.singular(),
        "namespaced": kind.namespaced(),
        "kind": kind.kind(),
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    });
    if kind == Kind::Namespace {
        r["verbs"] = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
    }
    if !kind.short_names().is_empty() {
        r["shortNames"] = json!(kind.short_names());
    }
    if kind == Kind::Deployment {
        r["categories"] = json!(["all"]);
    }
    r
}

/// `/api/v1` or `/apis/apps/v1`.
pub(crate) fn resource_list(group_version: &str) -> Value {
    let resources: Vec<Value> =
        Kind::ALL.into_iter().filter(|k| k.api_version() == group_version).map(resource).collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `/openapi/v3`: where each group-version's document is.
pub(crate) fn openapi_v3_root() -> Value {
    json!({"paths": {
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=kube-emulator-1"},
        "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=kube-emulator-1"},
    }})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/apps/v1`: PATCH operations and
/// their query parameters only (kubectl looks for `fieldValidation` among the
/// operation's parameters).
pub(crate) fn openapi_v3_group_version(group_version: &str) -> Value {
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
        .collect();
    let mut paths = serde_json::Map::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.api_version() == group_version) {
        let prefix = if kind.group().is_empty() { "/api/v1".to_string() } else { format!("/apis/{group_version}") };
        let path = if kind.namespaced() {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", kind.plural())
        } else {
            format!("{prefix}/{}/{{name}}", kind.plural())
        };
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", kind.kind()),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": kind.group(), "version": "v1", "kind": kind.kind()},
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}}
                },
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}}
    })
}

/// Whether the client asked for a Table (kubectl get does).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

fn age(obj: &Value) -> String {
    let Some(created) =
        obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str).and_then(crate::time::parse_rfc3339)
    else {
        return "<unknown>".into();
    };
    let now = crate::time::parse_rfc3339(&crate::time::now_rfc3339()).unwrap_or(created);
    let s = now.saturating_sub(created);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn columns(kind: Kind) -> Vec<Value> {
    let col = |name: &str, ty: &str, format: &str| json!({"name": name, "type": ty, "format": format, "description": "", "priority": 0});
    let mut cols = vec![col("Name", "string", "name")];
    match kind {
        Kind::Namespace => cols.push(col("Status", "string", "")),
        Kind::Secret => {
            cols.push(col("Type", "string", ""));
            cols.push(col("Data", "string", ""));
        }
        Kind::ConfigMap => cols.push(col("Data", "string", "")),
        Kind::Deployment => {
            cols.push(col("Ready", "string", ""));
            cols.push(col("Up-to-date", "string", ""));
            cols.push(col("Available", "string", ""));
        }
    }
    cols.push(col("Age", "string", ""));
    cols
}

fn cells(kind: Kind, obj: &Value) -> Vec<Value> {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or_default();
    let count = |field: &str| obj.get(field).and_then(Value::as_object).map_or(0, serde_json::Map::len);
    let mut cells = vec![name];
    match kind {
        Kind::Namespace => cells.push(obj.pointer("/status/phase").cloned().unwrap_or_default()),
        Kind::Secret => {
            cells.push(obj.get("type").cloned().unwrap_or_default());
            cells.push(json!(count("data")));
        }
        Kind::ConfigMap => cells.push(json!(count("data") + count("binaryData"))),
        Kind::Deployment => {
            let want = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let ready = obj.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0);
            cells.push(json!(format!("{ready}/{want}")));
            cells.push(obj.pointer("/status/updatedReplicas").cloned().unwrap_or(json!(0)));
            cells.push(obj.pointer("/status/availableReplicas").cloned().unwrap_or(json!(0)));
        }
    }
    cells.push(json!(age(obj)));
    cells
}

/// Converts a list (or one object) body to a `meta.k8s.io/v1` Table.
pub(crate) fn to_table(kind: Kind, body: &Value) -> Value {
    let objects: Vec<Value> = match body.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None => vec![body.clone()],
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut partial = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or_default()
            });
            if let Some(meta) = partial["metadata"].as_object_mut() {
                meta.shift_remove("managedFields");
            }
            json!({"cells": cells(kind, o), "object": partial})
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = body.pointer("/metadata/resourceVersion") {
        metadata["resourceVersion"] = rv.clone();
    }
    if let Some(c) = body.pointer("/metadata/continue") {
        metadata["continue"] = c.clone();
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(kind),
        "rows": rows
    })
}
