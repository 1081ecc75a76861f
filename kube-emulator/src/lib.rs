//! A small, faithful Kubernetes API server emulator for tests (dev-only).
//!
//! No kube-apiserver can be installed where cfgsync's tests run, and the
//! existing fakes get the semantics that matter wrong (apply on a missing
//! object, label selectors, resourceVersion). This crate serves, over plain
//! HTTP/1.1 on 127.0.0.1, the parts of the Kubernetes API that cfgsync's
//! `kube` client and a real `kubectl` use — namespaces, secrets, configmaps
//! and deployments; list/get/create/update/patch/server-side apply/delete —
//! with the real server's semantics and error bodies. `docs/kube-emulator.md`
//! lists what it implements and where it differs from a real cluster;
//! `tests/contract.rs` is the suite that pins those semantics.
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
//! - `server`: HTTP, routing, request counts, faults, watches
//! - `api`: the verbs (pure: store + request → status + body)
//! - `fields`: managedFields and the server-side apply merge
//! - `patch`: merge, strategic merge and JSON patches
//! - `selector`: label and field selectors
//! - `validation`: names, labels, keys, sizes, with the real messages
//! - `status`: `Status` error bodies
//! - `discovery`: `/api`, `/apis`, `/version`, OpenAPI v3 skeleton, Tables
//! - `store`: objects, the resourceVersion counter, change history
//! - `kind`: the four kinds and the schema server-side apply needs
#![forbid(unsafe_code)]

mod api;
mod discovery;
mod fields;
mod kind;
mod patch;
mod selector;
mod server;
mod status;
mod store;
mod time;
mod validation;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

pub use kind::{Kind, UnknownKind};
use server::{FaultState, Shared, lock};

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

/// A fault to inject (see [`Emulator::set_fault`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer the next `count` requests with 500 InternalError (a `Status`
    /// body), then serve normally again.
    Errors { count: u32 },
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

/// How long `set_fault` waits for the listener to close or reopen.
const LISTENER_DEADLINE: Duration = Duration::from_secs(5);

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
        let (tx, rx) = std::sync::mpsc::channel::<Result<Arc<Shared>, StartError>>();
        let Options { listen, context, verbose } = options;
        let thread = std::thread::Builder::new()
            .name(format!("kube-emulator-{context}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(StartError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(source) => {
                            let _ = tx.send(Err(StartError::Bind { addr: listen, source }));
                            return;
                        }
                    };
                    let addr = match listener.local_addr() {
                        Ok(a) => a,
                        Err(source) => {
                            let _ = tx.send(Err(StartError::Bind { addr: listen, source }));
                            return;
                        }
                    };
                    let shared = Arc::new(Shared {
                        store: Mutex::new(store::Store::new()),
                        counts: Mutex::new(BTreeMap::new()),
                        faults: Mutex::new(FaultState { rng: 0x2545_F491_4F6C_DD1D, ..FaultState::default() }),
                        down: watch::channel(false).0,
                        listening: watch::channel(true).0,
                        stop: watch::channel(false).0,
                        addr,
                        verbose,
                        watches: Mutex::new(tokio::task::JoinSet::new()),
                    });
                    let _ = tx.send(Ok(shared.clone()));
                    server::run(shared, listener).await;
                });
            })
            .map_err(StartError::Runtime)?;
        let shared = rx.recv().map_err(|_| StartError::Thread)??;
        Ok(Emulator { shared, context, thread: Some(thread) })
    }

    /// The server URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
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
        self.install_fault(fault, None);
    }

    /// Like [`Emulator::set_fault`], but only for resource requests with one of `verbs`
    /// (e.g. `&Verb::WRITES`). [`Fault::Down`] ignores the filter.
    pub fn set_fault_on(&self, verbs: &[Verb], fault: Fault) {
        self.install_fault(fault, Some(verbs.to_vec()));
    }

    /// Removes the fault; after [`Fault::Down`], returns once the listener is back.
    pub fn clear_fault(&self) {
        lock(&self.shared.faults).fault = None;
        self.shared.down.send_replace(false);
        self.wait_listening(true);
    }

    fn install_fault(&self, fault: Fault, verbs: Option<Vec<Verb>>) {
        let down = fault == Fault::Down;
        {
            let mut f = lock(&self.shared.faults);
            f.remaining = match fault {
                Fault::Errors { count } | Fault::DropConnections { count } => count,
                _ => 0,
            };
            f.verbs = if down { None } else { verbs };
            f.fault = Some(fault);
        }
        self.shared.down.send_replace(down);
        self.wait_listening(!down);
    }

    fn wait_listening(&self, want: bool) {
        let deadline = Instant::now() + LISTENER_DEADLINE;
        while *self.shared.listening.borrow() != want {
            assert!(
                Instant::now() < deadline,
                "kube-emulator: the listener did not {} within {LISTENER_DEADLINE:?}",
                if want { "reopen" } else { "close" }
            );
            std::thread::sleep(Duration::from_millis(1));
        }
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

    /// Deletes an object directly; false if it did not exist.
    pub fn delete_object(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let ns = if kind.namespaced() { namespace } else { "" };
        lock(&self.shared.store).remove(kind, ns, name).is_some()
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
        self.shared.stop.send_replace(true);
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
