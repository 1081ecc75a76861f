//! Dev-only API emulators for cfgsync's tests: Kubernetes ([`Emulator`]),
//! GitLab CI/CD variables ([`GitlabEmulator`]) and GitHub Actions secrets
//! and variables ([`GithubEmulator`]).
//!
//! No kube-apiserver, GitLab or GitHub can be installed where cfgsync's
//! tests run, and the existing fakes get the semantics that matter wrong.
//! Each emulator serves, over plain HTTP/1.1 on 127.0.0.1, the part of its
//! API that cfgsync uses, with the real server's semantics and error
//! bodies, and is trusted only as far as its contract suite goes:
//! `tests/contract.rs` (Kubernetes, with the `kube` client and a real
//! `kubectl`), `tests/gitlab_contract.rs`, `tests/github_contract.rs` and
//! `tests/github_openapi.rs` (every GitHub exchange checked against GitHub's
//! OpenAPI description through Prism). `docs/kube-emulator.md`,
//! `docs/gitlab-emulator.md` and `docs/github-emulator.md` list what each
//! implements and where it differs from the real service.
//!
//! The Kubernetes emulator serves namespaces, secrets, configmaps and
//! deployments; list/get/create/update/patch/server-side apply/delete.
//!
//! # In a test
//!
//! ```no_run
//! use kube_emulator::{Emulator, Fault, Kind, Verb};
//!
//! let cluster = Emulator::start("staging"); // its own thread, 127.0.0.1:<free port>
//! let dir = tempfile::tempdir().unwrap();
//! cluster.write_kubeconfig(dir.path().join("kubeconfig")).unwrap(); // context "staging"
//! // ... run the real binary with KUBECONFIG pointing there ...
//! assert_eq!(cluster.requests().writes(), 0);
//! assert!(cluster.get_object(Kind::Secret, "default", "api").is_some());
//! cluster.set_fault(Fault::Down); // connections refused until clear_fault()
//! ```
//!
//! # Layout
//!
//! - `plumbing`: shared by all three: server thread, accept loop, fault
//!   injection, the "down" toggle, query parsing, request log and counts
//! - `gitlab`, `github`: the GitLab and GitHub emulators (handle + pure API
//!   logic each); `github::prism`: the OpenAPI-validating proxy helper
//! - `cli`: what the three binaries share
//! - `server`: Kubernetes HTTP, routing, request counts, watches
//! - `api`: the verbs (pure: store + request → status + body)
//! - `fields`: managedFields and the server-side apply merge
//! - `patch`: merge, strategic merge and JSON patches
//! - `selector`: label and field selectors
//! - `validation`: names, labels, keys, sizes, with the real messages
//! - `status`: `Status` error bodies
//! - `discovery`: `/api`, `/apis`, `/version`, OpenAPI v3 skeleton, Tables
//! - `store`: objects, the resourceVersion counter, change history
//! - `kind`: the four kinds and the schema server-side apply needs
//! - `tls`: an https:// front (optionally mutual TLS) for any emulator
//! - `auth`: service-account tokens and TokenReview (Vault's Kubernetes auth)
#![forbid(unsafe_code)]

mod api;
pub mod auth;
pub mod cli;
mod discovery;
mod fields;
pub mod github;
pub mod gitlab;
mod kind;
mod patch;
mod plumbing;
mod selector;
mod server;
mod status;
mod store;
mod time;
pub mod tls;
mod validation;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

pub use github::{GithubEmulator, GithubScope};
pub use gitlab::{GitlabEmulator, GitlabOwner, GitlabVariable};
pub use kind::{Kind, UnknownKind};
pub use plumbing::{LoggedRequest, RouteCounts, Server};
use plumbing::{Net, lock};
use server::Shared;

/// A request verb, as the emulator counts requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// GET on a collection.
    List,
    /// GET on an object.
    Get,
    /// POST on a collection.
    Create,
    /// PATCH with `application/apply-patch+yaml` (server-side apply).
    Apply,
    /// PUT on an object.
    Update,
    /// PATCH with a merge, strategic-merge or JSON patch.
    Patch,
    /// DELETE on an object.
    Delete,
    /// DELETE on a collection.
    DeleteCollection,
    /// GET with `watch=true`.
    Watch,
    /// Discovery and other non-resource reads (`/api`, `/apis/apps/v1`,
    /// `/version`, `/openapi/v3`, ...), counted by path.
    Discover,
}

impl Verb {
    /// The verbs that write.
    pub const WRITES: [Verb; 6] =
        [Verb::Create, Verb::Apply, Verb::Update, Verb::Patch, Verb::Delete, Verb::DeleteCollection];

    /// Lower-case name, as in Kubernetes RBAC (`apply` is a `patch` there).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Apply => "apply",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Watch => "watch",
            Verb::Discover => "discover",
        }
    }

    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        Verb::WRITES.contains(&self)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of how many requests the emulator received, by verb and
/// resource (`secrets`, `configmaps`, `deployments`, `namespaces`; the path
/// for [`Verb::Discover`]). Requests answered by an injected 500 count too;
/// refused or dropped connections do not reach the counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts(BTreeMap<(Verb, String), u64>);

impl RequestCounts {
    /// Requests with this verb on this resource.
    pub fn get(&self, verb: Verb, resource: &str) -> u64 {
        self.0.get(&(verb, resource.to_string())).copied().unwrap_or(0)
    }

    /// Requests with this verb on any resource.
    pub fn verb(&self, verb: Verb) -> u64 {
        self.0.iter().filter(|((v, _), _)| *v == verb).map(|(_, n)| n).sum()
    }

    /// Writes of any kind (create, apply, update, patch, delete, deletecollection).
    pub fn writes(&self) -> u64 {
        self.0.iter().filter(|((v, _), _)| v.is_write()).map(|(_, n)| n).sum()
    }

    /// Every counted request, discovery included.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// All counts, ordered by verb then resource.
    pub fn iter(&self) -> impl Iterator<Item = (Verb, &str, u64)> {
        self.0.iter().map(|((v, r), n)| (*v, r.as_str(), *n))
    }
}

impl fmt::Display for RequestCounts {
    /// `apply secrets=2, list secrets=1` (discovery left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.iter().filter(|(v, _, _)| *v != Verb::Discover).map(|(v, r, n)| format!("{v} {r}={n}")).collect();
        if parts.is_empty() { f.write_str("no requests") } else { f.write_str(&parts.join(", ")) }
    }
}

/// A fault to inject (see [`Emulator::set_fault`], [`Server::set_fault`]).
/// Each emulator answers an injected error in its own API's shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer the next `count` requests with 500 (Kubernetes: an
    /// `InternalError` `Status`; GitLab: `{"message":"500 Internal Server
    /// Error"}`; GitHub: `{"message":"Server Error"}`), then serve normally again.
    Errors { count: u32 },
    /// Answer the next `count` requests with 429 and `Retry-After:
    /// <retry_after, whole seconds rounded up>` (Kubernetes: a
    /// `TooManyRequests` `Status`; GitLab: `Retry later`; GitHub: the
    /// secondary rate limit message).
    RateLimited { count: u32, retry_after: Duration },
    /// GitHub's other secondary-rate-limit answer: 403 with `Retry-After`
    /// and the secondary rate limit message. The Kubernetes and GitLab
    /// emulators answer it like [`Fault::RateLimited`] (429).
    SecondaryRateLimited { count: u32, retry_after: Duration },
    /// Answer each request with 500 with this probability (0.0–1.0), from a
    /// fixed-seed generator so that runs repeat.
    ErrorRate { rate: f64 },
    /// Wait this long before answering each request.
    Latency(Duration),
    /// Close the connection of the next `count` requests without answering.
    DropConnections { count: u32 },
    /// The API server is down: the listening socket is closed (connections
    /// are refused by the kernel) and open connections are cut, until
    /// [`Emulator::clear_fault`]. Always applies to every request.
    Down,
}

/// How to start an emulator ([`Emulator::start_with`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The kubeconfig context (and cluster and user) name.
    pub context: String,
    /// Log one line per request on stderr.
    pub verbose: bool,
}

/// How to start a GitLab or GitHub emulator
/// ([`GitlabEmulator::start_with`], [`GithubEmulator::start_with`]).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Log one line per request on stderr.
    pub verbose: bool,
}

impl Default for ServerOptions {
    /// 127.0.0.1 on a free port, quiet.
    fn default() -> ServerOptions {
        ServerOptions { listen: SocketAddr::from(([127, 0, 0, 1], 0)), verbose: false }
    }
}

/// Failure to start an emulator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the emulator's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the emulator's thread ended before it was listening")]
    Thread,
}

/// A running emulated cluster. Stops (and frees its port) on [`Emulator::stop`] or drop.
pub struct Emulator {
    shared: Arc<Shared>,
    context: String,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts an emulator on 127.0.0.1 with a free port, for kubeconfig
    /// context `context`. Panics if it cannot start (it is a test helper; see
    /// [`Emulator::start_with`] for a `Result`).
    pub fn start(context: &str) -> Emulator {
        Emulator::start_with(Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            context: context.to_string(),
            verbose: false,
        })
        .unwrap_or_else(|e| panic!("kube-emulator: {e}"))
    }

    /// Starts an emulator on its own thread and tokio runtime.
    pub fn start_with(options: Options) -> Result<Emulator, StartError> {
        let Options { listen, context, verbose } = options;
        let (shared, thread) = plumbing::spawn(format!("kube-emulator-{context}"), listen, move |addr, listener| {
            let shared = Arc::new(Shared {
                store: Mutex::new(store::Store::new()),
                counts: Mutex::new(BTreeMap::new()),
                net: Arc::new(Net::new("kube-emulator", addr, verbose)),
                watches: Mutex::new(tokio::task::JoinSet::new()),
                access: Mutex::new(server::Access::default()),
                watch: server::WatchControl::default(),
            });
            (shared.clone(), server::run(shared, listener))
        })?;
        Ok(Emulator { shared, context, thread: Some(thread) })
    }

    /// The server URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.net.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.net.addr
    }

    /// The kubeconfig context name.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// A kubeconfig with one context named after this emulator: plain
    /// `http://` server, namespace `default`, a dummy token user.
    pub fn kubeconfig_yaml(&self) -> String {
        Emulator::merged_kubeconfig_yaml(&[self])
    }

    /// One kubeconfig holding the contexts of several emulators (the first is current).
    pub fn merged_kubeconfig_yaml(emulators: &[&Emulator]) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut clusters = String::new();
        let mut contexts = String::new();
        let mut users = String::new();
        for e in emulators {
            let name = q(&e.context);
            clusters.push_str(&format!("- name: {name}\n  cluster:\n    server: {}\n", q(&e.url())));
            contexts.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: {name}\n    namespace: default\n    user: {name}\n"
            ));
            users.push_str(&format!("- name: {name}\n  user:\n    token: kube-emulator\n"));
        }
        let current = emulators.first().map(|e| q(&e.context)).unwrap_or_else(|| "\"\"".into());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}current-context: {current}\npreferences: {{}}\nusers:\n{users}"
        )
    }

    /// Writes [`Emulator::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// How many requests arrived so far, by verb and resource.
    pub fn requests(&self) -> RequestCounts {
        RequestCounts(lock(&self.shared.counts).clone())
    }

    /// Sets every request count back to zero.
    pub fn reset_requests(&self) {
        lock(&self.shared.counts).clear();
    }

    /// Injects `fault` into every request from now on (replacing any other
    /// fault). Returns once it is in force: for [`Fault::Down`], once the
    /// listener is closed.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.net.install_fault(fault, None);
    }

    /// Like [`Emulator::set_fault`], but only for resource requests with one of `verbs`
    /// (e.g. `&Verb::WRITES`). [`Fault::Down`] ignores the filter.
    pub fn set_fault_on(&self, verbs: &[Verb], fault: Fault) {
        self.shared.net.install_fault(fault, Some(verbs.to_vec()));
    }

    /// Removes the fault; after [`Fault::Down`], returns once the listener is back.
    pub fn clear_fault(&self) {
        self.shared.net.clear_fault();
    }

    /// The stored object (with `kind`/`apiVersion`), if it exists. Namespaces take `namespace = ""`.
    pub fn get_object(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let store = lock(&self.shared.store);
        let ns = if kind.namespaced() { namespace } else { "" };
        store.get(kind, ns, name).cloned()
    }

    /// Every stored object of `kind`, in `namespace` or everywhere, sorted by namespace and name.
    pub fn list_objects(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        let store = lock(&self.shared.store);
        store.list(kind, namespace).map(|(_, v)| v.clone()).collect()
    }

    /// Creates or replaces an object directly (no request counted, no field
    /// manager recorded), e.g. to seed an unlabelled Secret beside managed
    /// ones. `kind`, `metadata.name` and (for namespaced kinds)
    /// `metadata.namespace` are required; the server's defaults and
    /// validation apply. Returns the stored object, or the `Status` message
    /// of the error a real server would give.
    pub fn put_object(&self, object: Value) -> Result<Value, String> {
        let kind: Kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .parse()
            .map_err(|e: UnknownKind| e.to_string())?;
        api::put_direct(&mut lock(&self.shared.store), kind, object).map_err(|e| e.message)
    }

    /// Deletes an object directly, as a DELETE request would (no request
    /// counted): an object with finalizers only gets its
    /// `deletionTimestamp`, a namespace turns `Terminating`. False if it
    /// did not exist.
    pub fn delete_object(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let ns = if kind.namespaced() { namespace } else { "" };
        api::delete_object(&mut lock(&self.shared.store), kind, ns, name).is_some()
    }

    /// Empties an object's finalizers, as the controller that put them
    /// there would; an object being deleted is then gone (and a
    /// terminating namespace with it once empty). False if it did not exist.
    pub fn remove_finalizers(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let Some(mut obj) = self.get_object(kind, namespace, name) else { return false };
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.shift_remove("finalizers");
            meta.shift_remove("managedFields");
        }
        api::put_direct(&mut lock(&self.shared.store), kind, obj).is_ok()
    }

    /// Forgets the history a `continue` token (and a watch) can resume
    /// from, as etcd's compaction does: a LIST continued with a token taken
    /// before this is `410 Expired`, as on a real cluster.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Ends every watch stream open now, as kube-apiserver does when it
    /// restarts or a watch reaches its timeout: clients must watch again
    /// from the last resourceVersion they saw.
    pub fn close_watches(&self) {
        self.shared.watch.close.send_modify(|n| *n += 1);
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.shared.watch.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK
    /// (default 60 s, as kube-apiserver); for watches started from now on.
    pub fn set_bookmark_interval(&self, every: Duration) {
        *lock(&self.shared.watch.bookmark_every) = every.max(Duration::from_millis(10));
    }

    /// Refuses requests in `namespace` (None: cluster-wide and in every
    /// namespace) with one of `verbs` (empty: every verb) with `403
    /// Forbidden`, worded as RBAC words it. Rules add up until
    /// [`Emulator::clear_access`].
    pub fn forbid(&self, namespace: Option<&str>, verbs: &[Verb]) {
        lock(&self.shared.access)
            .forbidden
            .push(server::Forbid { namespace: namespace.map(str::to_string), verbs: verbs.to_vec() });
    }

    /// Answers every resource request with `401 Unauthorized` (an expired
    /// or unknown token) until [`Emulator::clear_access`].
    pub fn set_unauthorized(&self, on: bool) {
        lock(&self.shared.access).unauthorized = on;
    }

    /// Removes every [`Emulator::forbid`] rule and [`Emulator::set_unauthorized`].
    pub fn clear_access(&self) {
        *lock(&self.shared.access) = server::Access::default();
    }

    /// Creates a namespace (no-op if it exists).
    pub fn create_namespace(&self, name: &str) {
        if self.get_object(Kind::Namespace, "", name).is_none() {
            let ns = serde_json::json!({"kind": "Namespace", "metadata": {"name": name}});
            self.put_object(ns).unwrap_or_else(|e| panic!("kube-emulator: namespace {name:?}: {e}"));
        }
    }

    /// The cluster's current resourceVersion (moves on every real write).
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.net.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator").field("context", &self.context).field("url", &self.url()).finish()
    }
}
