//! The Kubernetes side of HTTP/1.1 serving: routing, request counting by
//! verb and resource, watches. The accept loop, fault injection and the
//! "down" toggle are shared with the other emulators (`plumbing`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::Verb;
use crate::api::{self, Query};
use crate::discovery;
use crate::kind::Kind;
use crate::plumbing::{self, Body, DropConnection, Injected, Net, lock, parse_query, wait_true};
use crate::status::ApiError;
use crate::store::Store;

/// kube-apiserver's default limit on a request body (`MaxRequestBodyBytes`).
pub(crate) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How long a watch stays open when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_SECONDS: u64 = 1800;

/// State shared by the handle and the server tasks.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub counts: Mutex<BTreeMap<(Verb, String), u64>>,
    /// Listener, faults, stop.
    pub net: Arc<Net>,
    /// The tasks that stream watch events; they end with their client, their
    /// timeout or `stop`, and are aborted when the emulator's runtime ends.
    pub watches: Mutex<JoinSet<()>>,
    /// Who may do what ([`crate::Emulator::forbid`], `set_unauthorized`).
    pub access: Mutex<Access>,
    /// Bookmark period, closing every stream, open streams.
    pub watch: WatchControl,
}

/// Authentication and authorization, as far as tests need them: every
/// token is accepted unless `unauthorized`, and every request is allowed
/// unless a [`Forbid`] rule matches.
#[derive(Default, Clone, Debug)]
pub(crate) struct Access {
    pub unauthorized: bool,
    pub forbidden: Vec<Forbid>,
}

/// A request in `namespace` (None: anywhere) with one of `verbs` (empty: any) is 403.
#[derive(Clone, Debug)]
pub(crate) struct Forbid {
    pub namespace: Option<String>,
    pub verbs: Vec<Verb>,
}

/// The user the emulator's kubeconfig authenticates as, in 403 messages.
const USER: &str = "kube-emulator";

impl Access {
    /// The 401 or 403 a request gets, if any.
    fn check(&self, verb: Verb, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> Option<ApiError> {
        if self.unauthorized {
            return Some(ApiError::unauthorized());
        }
        let denied = self.forbidden.iter().any(|f| {
            f.namespace.as_deref().is_none_or(|n| Some(n) == namespace)
                && (f.verbs.is_empty() || f.verbs.contains(&verb))
        });
        denied.then(|| ApiError::rbac_forbidden(kind, rbac_verb(verb), USER, namespace, name))
    }
}

/// The RBAC verb of a request (server-side apply is `patch`).
fn rbac_verb(verb: Verb) -> &'static str {
    match verb {
        Verb::Apply => "patch",
        other => other.as_str(),
    }
}

/// Accepts connections until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, first: TcpListener) {
    let net = shared.net.clone();
    plumbing::run(net, first, move |req| serve(shared.clone(), req)).await;
}

/// What a request is, once routed.
enum Route {
    Version,
    Api,
    ApiV1,
    Apis,
    ApisApps,
    ApisAppsV1,
    OpenApiV3,
    OpenApiV3GroupVersion(&'static str),
    Health,
    Resource { kind: Kind, namespace: Option<String>, name: Option<String> },
    Unknown,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::Api,
        ["api", "v1"] => return Route::ApiV1,
        ["apis"] => return Route::Apis,
        ["apis", "apps"] => return Route::ApisApps,
        ["apis", "apps", "v1"] => return Route::ApisAppsV1,
        ["openapi", "v3"] => return Route::OpenApiV3,
        ["openapi", "v3", "api", "v1"] => return Route::OpenApiV3GroupVersion("v1"),
        ["openapi", "v3", "apis", "apps", "v1"] => return Route::OpenApiV3GroupVersion("apps/v1"),
        ["healthz" | "readyz" | "livez"] => return Route::Health,
        ["api", "v1", rest @ ..] => ("v1", rest),
        ["apis", "apps", "v1", rest @ ..] => ("apps/v1", rest),
        _ => return Route::Unknown,
    };
    let find = |plural: &str| Kind::ALL.into_iter().find(|k| k.plural() == plural && k.api_version() == group);
    let resource = |kind: Option<Kind>, namespace: Option<&str>, name: Option<&str>| match kind {
        Some(kind) => {
            Route::Resource { kind, namespace: namespace.map(str::to_string), name: name.map(str::to_string) }
        }
        None => Route::Unknown,
    };
    match rest {
        [plural] => resource(find(plural), None, None),
        ["namespaces", name] if group == "v1" => resource(Some(Kind::Namespace), None, Some(name)),
        [plural, name] => resource(find(plural).filter(|k| !k.namespaced()), None, Some(name)),
        ["namespaces", ns, plural] => resource(find(plural).filter(|k| k.namespaced()), Some(ns), None),
        ["namespaces", ns, plural, name] => resource(find(plural).filter(|k| k.namespaced()), Some(ns), Some(name)),
        _ => Route::Unknown,
    }
}

fn verb_of(method: &Method, item: bool, query: &Query, content_type: &str) -> Option<Verb> {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    Some(match (method.as_str(), item) {
        ("GET", _) if watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("GET", true) => Verb::Get,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) if content_type.starts_with("application/apply-patch") => Verb::Apply,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    })
}

fn json_response(code: u16, body: &Value) -> hyper::Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    hyper::Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("valid response")
}

fn error_response(e: &ApiError) -> hyper::Response<Body> {
    json_response(e.code, &e.body())
}

async fn serve(shared: Arc<Shared>, req: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, DropConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (content_type, accept, user_agent) = (header("content-type"), header("accept"), header("user-agent"));
    let route = route(&path);
    let verb = match &route {
        Route::Resource { name, .. } => verb_of(&method, name.is_some(), &query, &content_type),
        _ => None,
    };
    let counted = match &route {
        Route::Resource { kind, .. } => verb.map(|v| (v, kind.plural().to_string())),
        Route::Unknown => None,
        _ => Some((Verb::Discover, path.clone())),
    };
    if let Some(key) = counted {
        *lock(&shared.counts).entry(key).or_default() += 1;
    }
    if shared.net.verbose {
        eprintln!("{method} {}", req.uri());
    }
    match shared.net.injected(verb) {
        Injected::Nothing => {}
        Injected::Delay(d) => tokio::time::sleep(d).await,
        Injected::Error => {
            return Ok(error_response(&ApiError::internal("Internal error occurred: injected by kube-emulator fault")));
        }
        Injected::RateLimit { retry_after_secs, .. } => {
            let mut response = error_response(&ApiError::too_many_requests(retry_after_secs));
            response.headers_mut().insert("retry-after", retry_after_secs.into());
            return Ok(response);
        }
        Injected::Drop => return Err(DropConnection),
    }

    if content_type.starts_with("application/vnd.kubernetes.protobuf") || content_type.starts_with("application/cbor") {
        return Ok(error_response(&ApiError::unsupported_media_type(&content_type)));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error_response(&ApiError::too_large(MAX_BODY_BYTES))),
    };
    let host = shared.net.addr.to_string();
    let read_only = |doc: Value| {
        if method == Method::GET { json_response(200, &doc) } else { error_response(&ApiError::method_not_allowed()) }
    };
    Ok(match route {
        Route::Version => read_only(discovery::version()),
        Route::Api => read_only(discovery::api_versions(&host)),
        Route::ApiV1 => read_only(discovery::resource_list("v1")),
        Route::Apis => read_only(discovery::api_group_list()),
        Route::ApisApps => read_only(discovery::api_group_apps()),
        Route::ApisAppsV1 => read_only(discovery::resource_list("apps/v1")),
        Route::OpenApiV3 => read_only(discovery::openapi_v3_root()),
        Route::OpenApiV3GroupVersion(gv) => read_only(discovery::openapi_v3_group_version(gv)),
        Route::Health => hyper::Response::new(Full::new(Bytes::from_static(b"ok")).boxed()),
        Route::Unknown => hyper::Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"404 page not found\n")).boxed())
            .expect("valid response"),
        Route::Resource { kind, namespace, name } => {
            let Some(verb) = verb else {
                return Ok(error_response(&ApiError::method_not_allowed()));
            };
            let request = api::Request {
                verb,
                kind,
                namespace,
                name,
                query: &query,
                body: &body,
                content_type: &content_type,
                user_agent: &user_agent,
            };
            let denied = lock(&shared.access).check(verb, kind, request.namespace.as_deref(), request.name.as_deref());
            if let Some(e) = denied {
                return Ok(error_response(&e));
            }
            if verb == Verb::Watch {
                return Ok(watch(&shared, &request));
            }
            let result = api::handle(&mut lock(&shared.store), &request);
            match result {
                Ok((code, body)) if discovery::wants_table(&accept) && matches!(verb, Verb::List | Verb::Get) => {
                    json_response(code, &discovery::to_table(kind, &body))
                }
                Ok((code, body)) => json_response(code, &body),
                Err(e) => error_response(&e),
            }
        }
    })
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn typed(kind: Kind, obj: &Value) -> Value {
    let mut o = obj.clone();
    o["kind"] = kind.kind().into();
    o["apiVersion"] = kind.api_version().into();
    o
}

/// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK by
/// default: kube-apiserver's watch cache sends one about every minute (and
/// one just before it closes a watch at its timeout).
pub(crate) const DEFAULT_BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// What tests control about watches: the bookmark period, and closing
/// every open stream (as an apiserver restart or its timeout would).
pub(crate) struct WatchControl {
    pub bookmark_every: Mutex<Duration>,
    /// Bumped to end every open watch.
    pub close: tokio::sync::watch::Sender<u64>,
    /// Watches streaming now.
    pub open: std::sync::atomic::AtomicUsize,
}

impl Default for WatchControl {
    fn default() -> Self {
        Self {
            bookmark_every: Mutex::new(DEFAULT_BOOKMARK_EVERY),
            close: tokio::sync::watch::channel(0).0,
            open: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Counts a streaming watch while it lives.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.watch.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The event a change is for a watch whose selector `selected` says
/// whether an object matches: a change that makes an object match is
/// `ADDED`, one that makes it stop matching `DELETED` (with the new
/// state), as kube-apiserver's watch cache does; None when neither state
/// matches.
fn event_for(change: &crate::store::Change, selected: impl Fn(&Value) -> bool) -> Option<&'static str> {
    let now = selected(&change.object);
    match (change.event, change.previous.as_ref().map(&selected)) {
        ("MODIFIED", Some(before)) => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        (event, _) => now.then_some(event),
    }
}

/// A watch, as `GET …?watch=true` on kube-apiserver:
/// - `resourceVersion` unset or `"0"`: synthetic `ADDED` events for what
///   exists now, then the changes ("Get State and Start at Most Recent");
/// - `resourceVersion=N`: every change after N, or, when N is older than
///   the history kept, one `ERROR` event with a `Status` of code 410
///   (`Expired`, "too old resource version") and the end of the stream;
/// - `sendInitialEvents=true`: the synthetic `ADDED` events end with a
///   BOOKMARK annotated `k8s.io/initial-events-end`;
/// - `allowWatchBookmarks=true`: a BOOKMARK (the kind with only
///   `metadata.resourceVersion`, the version up to which this watch has
///   seen every change) every bookmark period and just before the timeout.
///
/// The stream ends at `timeoutSeconds` (default 1800), on
/// [`crate::Emulator::close_watches`], or when the watcher falls too far
/// behind.
fn watch(shared: &Arc<Shared>, req: &api::Request<'_>) -> hyper::Response<Body> {
    let (labels, fields) = match api::selectors(req) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let kind = req.kind;
    let namespace = req.namespace.clone();
    let name = req.name.clone();
    let selected = move |ns: &str, obj: &Value| {
        namespace.as_deref().is_none_or(|n| n == ns)
            && name.as_deref().is_none_or(|n| obj.pointer("/metadata/name").and_then(Value::as_str) == Some(n))
            && labels.matches(&crate::selector::labels_of(obj))
            && fields.matches(obj)
    };
    let timeout = req.query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(DEFAULT_WATCH_SECONDS);
    let initial = req.query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = req.query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let from = match req.query.get("resourceVersion").map(String::as_str).filter(|rv| !rv.is_empty()) {
        None | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error_response(&ApiError {
                    code: 400,
                    reason: "BadRequest",
                    message: format!("invalid resource version: {rv}"),
                    details: None,
                });
            }
        },
    };

    // Snapshot and subscription under one lock: no change falls between them.
    let (mut first, mut changes, mut seen) = {
        let store = lock(&shared.store);
        let rx = store.changes.subscribe();
        let mut first: Vec<Bytes> = Vec::new();
        if let Some(rv) = from.filter(|_| !initial) {
            match store.changes_since(rv) {
                Some(past) => {
                    for c in past.iter().filter(|c| c.kind == kind) {
                        if let Some(event) = event_for(c, |o| selected(&c.namespace, o)) {
                            first.push(event_line(event, &typed(kind, &c.object)));
                        }
                    }
                }
                None => {
                    let gone = ApiError {
                        code: 410,
                        reason: "Expired",
                        message: format!("too old resource version: {rv} ({})", store.resource_version()),
                        details: None,
                    };
                    first.push(event_line("ERROR", &gone.body()));
                }
            }
        } else {
            for ((_, ns, _), obj) in store.list(kind, None) {
                if selected(ns, obj) {
                    first.push(event_line("ADDED", &typed(kind, obj)));
                }
            }
            if initial {
                let bookmark = json!({
                    "kind": kind.kind(), "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": store.resource_version().to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"}}
                });
                first.push(event_line("BOOKMARK", &bookmark));
            }
        }
        (first, rx, store.resource_version())
    };
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(64);
    let mut stop = shared.net.stop.subscribe();
    let mut close = shared.watch.close.subscribe();
    let every = *lock(&shared.watch.bookmark_every);
    let expired = first.last().is_some_and(|l| l.starts_with(b"{\"type\":\"ERROR\""));
    shared.watch.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let open = OpenWatch(shared.clone());
    let bookmark = move |rv: u64| {
        event_line(
            "BOOKMARK",
            &json!({"kind": kind.kind(), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}}),
        )
    };
    let mut watches = lock(&shared.watches);
    while watches.try_join_next().is_some() {}
    watches.spawn(async move {
        let _open = open;
        for line in first.drain(..) {
            if tx.send(Frame::data(line)).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let timeout = Duration::from_secs(timeout);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // The last bookmark goes a little before the timeout, as the watch cache's does.
        let last_bookmark = tokio::time::sleep(timeout.saturating_sub(Duration::from_secs(1)).max(timeout / 2));
        tokio::pin!(last_bookmark);
        let mut last_sent = false;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = wait_true(&mut stop) => return,
                _ = close.changed() => return,
                _ = &mut last_bookmark, if bookmarks && !last_sent => {
                    last_sent = true;
                    if tx.send(Frame::data(bookmark(seen))).await.is_err() {
                        return;
                    }
                }
                _ = ticks.tick(), if bookmarks => {
                    if tx.send(Frame::data(bookmark(seen))).await.is_err() {
                        return;
                    }
                }
                change = changes.recv() => match change {
                    Ok(c) => {
                        seen = seen.max(c.resource_version);
                        if c.kind != kind {
                            continue;
                        }
                        if let Some(event) = event_for(&c, |o| selected(&c.namespace, o))
                            && tx.send(Frame::data(event_line(event, &typed(kind, &c.object)))).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher too slow for the channel ends, as a real watch would.
                    Err(_) => return,
                },
            }
        }
    });
    hyper::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(body.boxed())
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_collections_items_and_cluster_scope() {
        assert!(matches!(route("/api/v1/namespaces/a/secrets"),
            Route::Resource { kind: Kind::Secret, namespace: Some(ref n), name: None } if n == "a"));
        assert!(matches!(route("/api/v1/namespaces/a/secrets/s"),
            Route::Resource { kind: Kind::Secret, name: Some(ref n), .. } if n == "s"));
        assert!(matches!(route("/api/v1/namespaces/a"),
            Route::Resource { kind: Kind::Namespace, name: Some(ref n), .. } if n == "a"));
        assert!(matches!(
            route("/api/v1/secrets"),
            Route::Resource { kind: Kind::Secret, namespace: None, name: None }
        ));
        assert!(matches!(
            route("/apis/apps/v1/namespaces/a/deployments/d"),
            Route::Resource { kind: Kind::Deployment, .. }
        ));
        assert!(matches!(route("/api/v1/namespaces/a/deployments"), Route::Unknown));
        assert!(matches!(route("/api/v1/secrets/s"), Route::Unknown));
    }
}
