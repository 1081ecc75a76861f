//! The verbs: what kube-apiserver does for list, get, create, update (PUT),
//! patch (merge, strategic, JSON), apply (server-side) and delete on the
//! emulated kinds. Pure functions of (store, request) → (status code, body);
//! HTTP, faults and watches live in [`crate::server`].
//!
//! Decisions where the real server has more machinery than an emulator needs:
//! - deletion is immediate unless the object has `metadata.finalizers`: then
//!   DELETE sets `deletionTimestamp` (and `deletionGracePeriodSeconds: 0`)
//!   and answers 200 with the object, as kube-apiserver does; the object is
//!   removed by the write that empties its finalizers (no new finalizer may
//!   be added meanwhile). No graceful deletion of pods (there are none);
//! - deleting a namespace marks it `Terminating` (`deletionTimestamp`,
//!   `status.phase`), deletes (or, with finalizers, marks) everything in it
//!   at once — the namespace controller's work — and removes the namespace
//!   when the last object is gone. Creating in a terminating namespace is
//!   `403 Forbidden` with the `NamespaceTerminating` cause;
//! - `dryRun=All` runs every check and stores nothing;
//! - `fieldValidation` is accepted and ignored (unknown fields are kept);
//! - Deployments get the apiserver's top-level defaults but no controller
//!   runs: no ReplicaSets, no pods, no status.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::Verb;
use crate::fields;
use crate::kind::Kind;
use crate::patch;
use crate::selector::{FieldSelector, LabelSelector, labels_of};
use crate::status::{ApiError, FieldError};
use crate::store::{self, Store};
use crate::validation;

/// Query parameters, decoded.
pub(crate) type Query = std::collections::BTreeMap<String, String>;

/// A resource request, routed and with its body read.
pub(crate) struct Request<'a> {
    pub verb: Verb,
    pub kind: Kind,
    /// The namespace in the path (None for cluster-scoped kinds and all-namespace lists).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub query: &'a Query,
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub user_agent: &'a str,
}

pub(crate) type Reply = Result<(u16, Value), ApiError>;

/// Runs one request against the store.
pub(crate) fn handle(store: &mut Store, req: &Request<'_>) -> Reply {
    match req.verb {
        Verb::List => list(store, req),
        Verb::Get => get(store, req),
        Verb::Create => create(store, req),
        Verb::Update => update(store, req),
        Verb::Patch => patch(store, req),
        Verb::Apply => apply(store, req),
        Verb::Delete => delete(store, req),
        Verb::DeleteCollection => delete_collection(store, req),
        Verb::Watch | Verb::Discover => Err(ApiError::method_not_allowed()),
    }
}

fn ns_of<'a>(req: &'a Request<'_>) -> &'a str {
    req.namespace.as_deref().unwrap_or_default()
}

fn name_of<'a>(req: &'a Request<'_>) -> &'a str {
    req.name.as_deref().unwrap_or_default()
}

fn dry_run(req: &Request<'_>) -> bool {
    req.query.get("dryRun").is_some_and(|v| v == "All")
}

/// The manager of a non-apply write: `?fieldManager=`, else the User-Agent's
/// program name (`kubectl-edit/v1.37 ...` → `kubectl-edit`), as the apiserver does.
fn update_manager(req: &Request<'_>) -> String {
    if let Some(m) = req.query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let prefix = req.user_agent.split('/').next().unwrap_or_default();
    if prefix.is_empty() { "unknown".to_string() } else { prefix.to_string() }
}

fn with_type_meta(kind: Kind, obj: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), kind.kind().into());
    out.insert("apiVersion".into(), kind.api_version().into());
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k != "kind" && k != "apiVersion" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Parses a JSON (or, for apply, YAML) body into an object.
fn parse_body(req: &Request<'_>, yaml: bool) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(req.body).map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let parsed: Result<Value, String> = match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(_) if yaml => serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    parsed.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            req.kind.kind(),
            req.kind.api_version(),
            req.kind.kind()
        ))
    })
}

/// Checks `apiVersion`/`kind`/`metadata.namespace` of a body against the URL.
fn check_body(req: &Request<'_>, obj: &mut Value, require_type: bool) -> Result<(), ApiError> {
    let kind = req.kind;
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body is not an object",
            kind.kind(),
            kind.api_version(),
            kind.kind()
        )));
    }
    let got_kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let got_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if require_type && (got_kind.is_empty() || got_version.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            String::from_utf8_lossy(req.body).chars().take(200).collect::<String>()
        )));
    }
    if (!got_kind.is_empty() && got_kind != kind.kind())
        || (!got_version.is_empty() && got_version != kind.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the body of the request was of kind {got_version}/{got_kind}, but the URL names {} {}",
            kind.api_version(),
            kind.kind()
        )));
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if kind.namespaced() {
        let ns = ns_of(req);
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = ns.into(),
        }
    } else if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.shift_remove("namespace");
    }
    if let Some(url_name) = &req.name {
        let body_name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if body_name.is_empty() {
            obj["metadata"]["name"] = url_name.clone().into();
        } else if body_name != url_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
    }
    Ok(())
}

/// The server's defaults and normalisation for a stored object of `kind`
/// (what the typed decoding, defaulting and `omitempty` encoding do).
pub(crate) fn default_fields(kind: Kind, obj: &mut Value) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    match kind {
        Kind::Secret => {
            if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.shift_remove("stringData")) {
                let data = obj["data"].as_object_mut().map(std::mem::take).unwrap_or_default();
                let mut data = data;
                for (k, v) in string_data {
                    let s = v.as_str().unwrap_or_default();
                    data.insert(k, base64::engine::general_purpose::STANDARD.encode(s).into());
                }
                obj["data"] = Value::Object(data);
            }
            if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                obj["type"] = "Opaque".into();
            }
        }
        Kind::Namespace => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name.into();
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        Kind::Deployment => {
            let spec = &mut obj["spec"];
            if spec.is_object() {
                for (field, default) in [
                    ("replicas", json!(1)),
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                ] {
                    if spec.get(field).is_none_or(Value::is_null) {
                        spec[field] = default;
                    }
                }
                if spec.pointer("/strategy/type").is_none() {
                    spec["strategy"]["type"] = "RollingUpdate".into();
                }
                if spec.pointer("/strategy/type") == Some(&json!("RollingUpdate"))
                    && spec.pointer("/strategy/rollingUpdate").is_none()
                {
                    spec["strategy"]["rollingUpdate"] = json!({"maxSurge": "25%", "maxUnavailable": "25%"});
                }
            }
        }
        Kind::ConfigMap => {}
    }
    normalize(obj);
}

/// Drops what Go's `omitempty` would not encode: nulls, and empty maps/lists at the known optional fields.
fn normalize(obj: &mut Value) {
    fn drop_empty(m: &mut Map<String, Value>, fields: &[&str]) {
        for f in fields {
            let empty = match m.get(*f) {
                Some(Value::Null) => true,
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                m.shift_remove(*f);
            }
        }
    }
    const META: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences", "generateName"];
    if let Some(m) = obj.as_object_mut() {
        drop_empty(m, &["data", "binaryData", "stringData", "immutable"]);
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        drop_empty(m, META);
    }
    if let Some(m) = obj.pointer_mut("/spec/template/metadata").and_then(Value::as_object_mut) {
        drop_empty(m, META);
    }
}

/// Removes fields a client may not set (the server owns them).
fn strip_server_fields(obj: &mut Value) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            meta.shift_remove(f);
        }
    }
}

/// Copies the server-owned fields of `live` into `new`, and bumps a Deployment's generation on a spec change.
fn carry_server_fields(kind: Kind, live: &Value, new: &mut Value) {
    for f in
        ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"]
    {
        match live["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.shift_remove(f);
                }
            }
        }
    }
    if kind == Kind::Deployment {
        if let Some(status) = live.get("status") {
            new["status"] = status.clone();
        } else if let Some(m) = new.as_object_mut() {
            m.shift_remove("status");
        }
        if live.get("spec") != new.get("spec") {
            let generation = live.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            new["metadata"]["generation"] = (generation + 1).into();
        }
    }
    if kind == Kind::Namespace
        && let Some(status) = live.get("status")
    {
        new["status"] = status.clone();
    }
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// read verbs
// ---------------------------------------------------------------------------

fn get(store: &mut Store, req: &Request<'_>) -> Reply {
    let obj =
        store.get(req.kind, ns_of(req), name_of(req)).ok_or_else(|| ApiError::not_found(req.kind, name_of(req)))?;
    Ok((200, with_type_meta(req.kind, obj)))
}

/// The label and field selectors of a list/watch request.
pub(crate) fn selectors(req: &Request<'_>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.query.get("labelSelector").map(String::as_str).unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(req.kind, req.query.get("fieldSelector").map(String::as_str).unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

/// A `continue` token shaped like kube-apiserver's: base64 of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`.
fn encode_continue(rv: u64, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last_key}\u{0}")});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

/// The list's resourceVersion and the key to continue after, or the 400
/// the real server gives for a token it cannot read.
fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let invalid = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| invalid("illegal base64 data"))?;
    let parsed: Value = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    if parsed["v"] != "meta.k8s.io/v1" {
        return Err(invalid("server does not recognize this encoded key"));
    }
    let rv = parsed["rv"]
        .as_u64()
        .ok_or_else(|| invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = parsed["start"].as_str().unwrap_or_default().trim_end_matches('\u{0}').to_string();
    Ok((rv, start))
}

fn list(store: &mut Store, req: &Request<'_>) -> Reply {
    let (labels, fields) = selectors(req)?;
    let limit: usize = req.query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            if !store.resumable(rv) {
                return Err(ApiError::continue_expired());
            }
            Some(start)
        }
        None => None,
    };
    let selected: Vec<(String, &Value)> = store
        .list(req.kind, req.namespace.as_deref())
        .map(|((_, ns, name), obj)| (format!("{ns}/{name}"), obj))
        .filter(|(key, _)| after.as_ref().is_none_or(|a| key > a))
        .filter(|(_, obj)| labels.matches(&labels_of(obj)) && fields.matches(obj))
        .collect();
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), store.resource_version().to_string().into());
    let more = selected.len() > limit;
    let items: Vec<Value> = selected
        .iter()
        .take(limit)
        .map(|(_, obj)| {
            // like the real server, list items carry no kind/apiVersion
            let mut o = (*obj).clone();
            if let Some(m) = o.as_object_mut() {
                m.shift_remove("kind");
                m.shift_remove("apiVersion");
            }
            o
        })
        .collect();
    if more {
        let last = &selected[limit - 1].0;
        metadata.insert("continue".into(), encode_continue(store.resource_version(), last).into());
        metadata.insert("remainingItemCount".into(), (selected.len() - limit).into());
    }
    Ok((
        200,
        json!({
            "kind": req.kind.list_kind(),
            "apiVersion": req.kind.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

// ---------------------------------------------------------------------------
// write verbs
// ---------------------------------------------------------------------------

/// A create needs its namespace, and one that is not being deleted.
fn require_namespace(store: &Store, req: &Request<'_>) -> Result<(), ApiError> {
    if !req.kind.namespaced() {
        return Ok(());
    }
    let ns = ns_of(req);
    match store.get(Kind::Namespace, "", ns) {
        None => Err(ApiError::not_found(Kind::Namespace, ns)),
        Some(n) if is_deleting(n) => Err(ApiError::namespace_terminating(req.kind, name_of_new(req), ns)),
        Some(_) => Ok(()),
    }
}

/// The name a create names (the URL's, else the body's).
fn name_of_new(req: &Request<'_>) -> String {
    if let Some(n) = &req.name {
        return n.clone();
    }
    serde_json::from_slice::<Value>(req.body)
        .ok()
        .and_then(|b| b.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// Whether an object is being deleted (held by its finalizers).
pub(crate) fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Deletes an object as kube-apiserver does: at once, or, while it has
/// finalizers, by setting `deletionTimestamp` (the object stays until a
/// write empties them). Returns what the DELETE answers with.
pub(crate) fn delete_object(store: &mut Store, kind: Kind, ns: &str, name: &str) -> Option<Deleted> {
    let live = store.get(kind, ns, name)?.clone();
    if kind == Kind::Namespace {
        return Some(Deleted::Pending(delete_namespace(store, live, name)));
    }
    if !finalizers(&live).is_empty() {
        if is_deleting(&live) {
            return Some(Deleted::Pending(live));
        }
        let mut marked = live;
        marked["metadata"]["deletionTimestamp"] = crate::time::now_rfc3339().into();
        marked["metadata"]["deletionGracePeriodSeconds"] = 0.into();
        return Some(Deleted::Pending(store.put(kind, marked)));
    }
    let gone = store.remove(kind, ns, name)?;
    finish_namespace(store, ns);
    Some(Deleted::Gone(gone))
}

/// What a DELETE did.
pub(crate) enum Deleted {
    /// Removed; the object as last seen.
    Gone(Value),
    /// Marked for deletion (finalizers) or a namespace now terminating.
    Pending(Value),
}

fn delete_namespace(store: &mut Store, live: Value, name: &str) -> Value {
    let marked = if is_deleting(&live) {
        live
    } else {
        let mut marked = live;
        marked["metadata"]["deletionTimestamp"] = crate::time::now_rfc3339().into();
        marked["status"]["phase"] = "Terminating".into();
        store.put(Kind::Namespace, marked)
    };
    let contents: Vec<(Kind, String)> = Kind::ALL
        .into_iter()
        .filter(|k| k.namespaced())
        .flat_map(|k| store.list(k, Some(name)).map(|((_, _, n), _)| (k, n.clone())).collect::<Vec<_>>())
        .collect();
    for (k, n) in contents {
        delete_object(store, k, name, &n);
    }
    finish_namespace(store, name);
    marked
}

/// Removes a terminating namespace once nothing is left in it.
fn finish_namespace(store: &mut Store, ns: &str) {
    let terminating = store.get(Kind::Namespace, "", ns).is_some_and(is_deleting);
    let empty = Kind::ALL.into_iter().filter(|k| k.namespaced()).all(|k| store.list(k, Some(ns)).next().is_none());
    if terminating && empty {
        store.remove(Kind::Namespace, "", ns);
    }
}

fn create(store: &mut Store, req: &Request<'_>) -> Reply {
    let mut obj = parse_body(req, false)?;
    check_body(req, &mut obj, false)?;
    if obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
    }
    strip_server_fields(&mut obj);
    let kind = req.kind;
    obj["kind"] = kind.kind().into();
    obj["apiVersion"] = kind.api_version().into();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let name = if name.is_empty() {
        match obj.pointer("/metadata/generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let suffix: String = store.new_uid().chars().filter(char::is_ascii_alphanumeric).take(5).collect();
                let generated = format!("{prefix}{suffix}");
                obj["metadata"]["name"] = generated.clone().into();
                generated
            }
            _ => String::new(),
        }
    } else {
        name
    };
    default_fields(kind, &mut obj);
    validation::validate(kind, &obj, None)?;
    require_namespace(store, req)?;
    if let Some(existing) = store.get(kind, ns_of(req), &name) {
        if is_deleting(existing) {
            return Err(ApiError::already_exists_deleting(kind, &name));
        }
        return Err(ApiError::already_exists(kind, &name));
    }
    store.stamp_new(kind, &mut obj);
    let now = crate::time::now_rfc3339();
    let manager = update_manager(req);
    fields::record_update(kind, None, &mut obj, &manager, &now);
    let stored = if dry_run(req) { obj } else { store.put(kind, obj) };
    Ok((201, with_type_meta(kind, &stored)))
}

/// Stores `new` as the next version of `live` if it differs; answers 200 with what is stored.
fn commit(store: &mut Store, req: &Request<'_>, live: &Value, mut new: Value) -> Reply {
    let kind = req.kind;
    carry_server_fields(kind, live, &mut new);
    if new == *live || dry_run(req) {
        return Ok((200, with_type_meta(kind, if dry_run(req) { &new } else { live })));
    }
    Ok((200, with_type_meta(kind, &store_next(store, kind, new))))
}

/// Stores the next version of an object; one being deleted whose last
/// finalizer this write removed is removed instead (and answered as it
/// was last written).
fn store_next(store: &mut Store, kind: Kind, new: Value) -> Value {
    if kind != Kind::Namespace && is_deleting(&new) && finalizers(&new).is_empty() {
        let (ns, name) = (store::key_of(kind, &new).1, store::key_of(kind, &new).2);
        let stored = store.put(kind, new);
        store.remove(kind, &ns, &name);
        finish_namespace(store, &ns);
        return stored;
    }
    store.put(kind, new)
}

/// The common tail of PUT and the patches: `new` is the client's next version of `live`.
fn finish_update(store: &mut Store, req: &Request<'_>, live: Value, mut new: Value) -> Reply {
    let kind = req.kind;
    let name = name_of(req).to_string();
    if let Some(rv) = new.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        && !rv.is_empty()
        && Some(rv) != live.pointer("/metadata/resourceVersion").and_then(Value::as_str)
    {
        return Err(ApiError::conflict_modified(kind, &name));
    }
    if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str) {
        let live_uid = live.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        if !uid.is_empty() && uid != live_uid {
            return Err(ApiError::conflict_precondition(
                kind,
                &name,
                format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {live_uid}"),
            ));
        }
    }
    strip_server_fields(&mut new);
    new["kind"] = kind.kind().into();
    new["apiVersion"] = kind.api_version().into();
    default_fields(kind, &mut new);
    carry_server_fields(kind, &live, &mut new);
    validation::validate(kind, &new, Some(&live))?;
    if let Some(managed) = live.pointer("/metadata/managedFields") {
        new["metadata"]["managedFields"] = managed.clone();
    }
    let now = crate::time::now_rfc3339();
    fields::record_update(kind, Some(&live), &mut new, &update_manager(req), &now);
    commit(store, req, &live, new)
}

fn update(store: &mut Store, req: &Request<'_>) -> Reply {
    let mut obj = parse_body(req, false)?;
    check_body(req, &mut obj, false)?;
    let live = store
        .get(req.kind, ns_of(req), name_of(req))
        .cloned()
        .ok_or_else(|| ApiError::not_found(req.kind, name_of(req)))?;
    finish_update(store, req, live, obj)
}

fn patch(store: &mut Store, req: &Request<'_>) -> Reply {
    if req.query.contains_key("force") {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io",
            "PatchOptions",
            "meta.k8s.io",
            "",
            &[FieldError::forbidden("force", "may not be specified for non-apply patch")],
        ));
    }
    let live = store
        .get(req.kind, ns_of(req), name_of(req))
        .cloned()
        .ok_or_else(|| ApiError::not_found(req.kind, name_of(req)))?;
    let body = parse_body(req, false)?;
    let media = req.content_type.split(';').next().unwrap_or_default().trim();
    let mut new = match media {
        "application/merge-patch+json" => patch::merge_patch(&live, &body),
        "application/strategic-merge-patch+json" => {
            patch::strategic_merge_patch(req.kind, &live, &body).map_err(|e| ApiError::bad_request(e.0))?
        }
        "application/json-patch+json" => patch::json_patch(&live, &body)
            .map_err(|e| ApiError::invalid_object(req.kind, name_of(req), &[FieldError::invalid("", "", e.0)]))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    // A patch may not move the object.
    if new.pointer("/metadata/name") != live.pointer("/metadata/name")
        || new.pointer("/metadata/namespace") != live.pointer("/metadata/namespace")
    {
        return Err(ApiError::bad_request("metadata.name and metadata.namespace may not be changed by a patch"));
    }
    // Preconditions only count when the patch itself sets them.
    if body.pointer("/metadata/resourceVersion").is_none()
        && let Some(m) = new["metadata"].as_object_mut()
    {
        m.shift_remove("resourceVersion");
    }
    if body.pointer("/metadata/uid").is_none()
        && let Some(m) = new["metadata"].as_object_mut()
    {
        m.shift_remove("uid");
    }
    finish_update(store, req, live, new)
}

fn apply(store: &mut Store, req: &Request<'_>) -> Reply {
    let kind = req.kind;
    let manager = req.query.get("fieldManager").cloned().unwrap_or_default();
    if manager.is_empty() {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io",
            "PatchOptions",
            "meta.k8s.io",
            "",
            &[FieldError::required("fieldManager", "is required for apply patch")],
        ));
    }
    let force = match req.query.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("invalid boolean value for force: {other:?}"))),
    };
    let mut applied = parse_body(req, true)?;
    check_body(req, &mut applied, true)?;
    drop_nulls(&mut applied);
    if applied.pointer("/metadata/managedFields").is_some_and(|m| m.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let precondition_rv = applied
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        .map(str::to_string);
    strip_server_fields(&mut applied);
    if kind == Kind::Secret {
        // decoding the applied Secret fails before anything else, as in apiserver
        validation::decode_secret_data(&applied)?;
    }
    let now = crate::time::now_rfc3339();
    let name = name_of(req).to_string();
    let live = store.get(kind, ns_of(req), &name).cloned();
    if let (Some(rv), Some(live)) = (&precondition_rv, &live)
        && live.pointer("/metadata/resourceVersion").and_then(Value::as_str) != Some(rv.as_str())
    {
        return Err(ApiError::conflict_modified(kind, &name));
    }
    match live {
        None => {
            if precondition_rv.is_some() {
                return Err(ApiError::not_found(kind, &name));
            }
            require_namespace(store, req)?;
            let mut new = fields::apply(kind, None, &applied, &manager, force, &now, |m| {
                default_fields(kind, m);
                Ok(())
            })?;
            new["kind"] = kind.kind().into();
            new["apiVersion"] = kind.api_version().into();
            validation::validate(kind, &new, None)?;
            store.stamp_new(kind, &mut new);
            let stored = if dry_run(req) { new } else { store.put(kind, new) };
            Ok((201, with_type_meta(kind, &stored)))
        }
        Some(live) => {
            let mut new = fields::apply(kind, Some(&live), &applied, &manager, force, &now, |m| {
                default_fields(kind, m);
                Ok(())
            })?;
            carry_server_fields(kind, &live, &mut new);
            validation::validate(kind, &new, Some(&live))?;
            commit(store, req, &live, new)
        }
    }
}

fn delete(store: &mut Store, req: &Request<'_>) -> Reply {
    let kind = req.kind;
    let name = name_of(req).to_string();
    let ns = ns_of(req).to_string();
    let live = store.get(kind, &ns, &name).cloned().ok_or_else(|| ApiError::not_found(kind, &name))?;
    let options: Value = if req.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(req.body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let dry =
        dry_run(req) || options.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.contains(&json!("All")));
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
        let live_uid = live.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        if uid != live_uid {
            return Err(ApiError::conflict_precondition(
                kind,
                &name,
                format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {live_uid}"),
            ));
        }
    }
    if let Some(rv) = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
        let live_rv = live.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        if rv != live_rv {
            return Err(ApiError::conflict_precondition(
                kind,
                &name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {live_rv}"
                ),
            ));
        }
    }
    if kind == Kind::Namespace && ["default", "kube-system", "kube-public"].contains(&name.as_str()) {
        return Err(ApiError::forbidden(kind, &name, "this namespace may not be deleted"));
    }
    if dry {
        return Ok((200, with_type_meta(kind, &live)));
    }
    match delete_object(store, kind, &ns, &name) {
        // Not deleted yet (finalizers, a terminating namespace): the object.
        Some(Deleted::Pending(obj)) => Ok((200, with_type_meta(kind, &obj))),
        Some(Deleted::Gone(gone)) => {
            let mut details = Map::new();
            details.insert("name".into(), name.into());
            if !kind.group().is_empty() {
                details.insert("group".into(), kind.group().into());
            }
            details.insert("kind".into(), kind.plural().into());
            details.insert("uid".into(), gone.pointer("/metadata/uid").cloned().unwrap_or_default());
            Ok((
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ))
        }
        None => Err(ApiError::not_found(kind, &name)),
    }
}

fn delete_collection(store: &mut Store, req: &Request<'_>) -> Reply {
    if req.kind == Kind::Namespace {
        return Err(ApiError::method_not_allowed());
    }
    let (labels, fields) = selectors(req)?;
    let doomed: Vec<(String, String)> = store
        .list(req.kind, req.namespace.as_deref())
        .filter(|(_, obj)| labels.matches(&labels_of(obj)) && fields.matches(obj))
        .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
        .collect();
    let mut items = Vec::new();
    for (ns, name) in doomed {
        let gone = if dry_run(req) {
            store.get(req.kind, &ns, &name).cloned()
        } else {
            delete_object(store, req.kind, &ns, &name).map(|d| match d {
                Deleted::Gone(v) | Deleted::Pending(v) => v,
            })
        };
        items.extend(gone);
    }
    Ok((
        200,
        json!({
            "kind": req.kind.list_kind(),
            "apiVersion": req.kind.api_version(),
            "metadata": {"resourceVersion": store.resource_version().to_string()},
            "items": items,
        }),
    ))
}

/// Direct write for tests ([`crate::Emulator::put_object`]): create or replace
/// with the server's defaults and validation, without managed fields.
pub(crate) fn put_direct(store: &mut Store, kind: Kind, mut obj: Value) -> Result<Value, ApiError> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        return Err(ApiError::bad_request("the object has no metadata"));
    }
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
    if kind.namespaced() && !store.namespace_exists(&ns) {
        return Err(ApiError::not_found(Kind::Namespace, &ns));
    }
    obj["kind"] = kind.kind().into();
    obj["apiVersion"] = kind.api_version().into();
    strip_server_fields(&mut obj);
    default_fields(kind, &mut obj);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let live = store.get(kind, &ns, &name).cloned();
    validation::validate(kind, &obj, live.as_ref())?;
    match &live {
        Some(live) => carry_server_fields(kind, live, &mut obj),
        None => store.stamp_new(kind, &mut obj),
    }
    Ok(store_next(store, kind, obj))
}
