//! Kubernetes API calls: clients per kubeconfig context (with kubectl's
//! proxy rules), LIST and GET, create, server-side apply, the follow-up
//! writes that make an object converge, delete with preconditions,
//! rollout restarts. Planning lives in the parent module; this one only
//! talks to clusters.
//!
//! Secrets and ConfigMaps go through [`DynamicObject`]: one code path for
//! both kinds, reading `data`/`binaryData` from the JSON the server sent.
//!
//! Clients ([`KubeClients`], one set per loaded config): per context, one
//! request client and one watch client (a longer read timeout), each
//! built on first use and shared — a `kube::Client` is a kubeconfig
//! parse, a TLS configuration, a connection pool and a request buffer,
//! and one per watch stream cost megabytes each at fleet-3000. Each is
//! built again when the kubeconfig files or the files they name (CA,
//! client certificate, key) change on disk, compared by a
//! [`Stamp`] at each use as the sources' certificates are: a rotated
//! certificate is used by the next request, and by each watch when it
//! next (re)connects. A new config builds a new set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::sync::Mutex;

use super::spec::{ObjectKind, Restart};
use super::{
    ANNOTATION_CONFIG_HASH, DesiredObject, KubeError, LABEL_ENV, LABEL_MANAGED_BY, LEGACY_FIELD_MANAGER, LiveObject,
    field_manager,
};
use crate::secret::Content;
use crate::source::tls::Stamp;
use crate::targets::TargetError;

/// Clients per kubeconfig context, built on first use and shared: one
/// request client and one watch client per context (see the module doc).
pub struct KubeClients {
    /// `--kubeconfig` or `[kubernetes] kubeconfig`.
    path: Option<PathBuf>,
    /// For requests (LIST, GET, writes): [`READ_TIMEOUT`].
    clients: Clients,
    /// For watches: [`WATCH_READ_TIMEOUT`]; every watch of a context
    /// shares it (one connection pool, one TLS configuration).
    watch_clients: Clients,
    /// How many clients were built, of both sorts (a test counts them).
    built: AtomicU64,
}

/// Clients per context. Each context has its own lock, held while its
/// client is built: a thousand watches starting at once build one client,
/// not a thousand, and other contexts do not wait.
#[derive(Default)]
struct Clients(std::sync::Mutex<BTreeMap<String, Arc<Mutex<Option<Built>>>>>);

/// A client and what it was built from.
struct Built {
    client: kube::Client,
    /// The kubeconfig files read, then the files they name (CA, client
    /// certificate and key), each stamped just before it was read.
    files: [Vec<PathBuf>; 2],
    stamps: [Stamp; 2],
}

impl Built {
    /// The files are as they were when the client was built.
    fn current(&self) -> bool {
        self.files
            .iter()
            .zip(&self.stamps)
            .all(|(files, stamp)| Stamp::of_files(files.iter().map(PathBuf::as_path)) == *stamp)
    }
}

impl Clients {
    fn slot(&self, context: &str) -> Arc<Mutex<Option<Built>>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(context.to_owned()).or_default().clone()
    }
}

/// A kube config and the files it came from (see [`Built`]).
struct Loaded {
    config: kube::Config,
    files: [Vec<PathBuf>; 2],
    stamps: [Stamp; 2],
}

/// How long a cluster may take to accept a connection / answer: one
/// unreachable cluster must not hold the others' pass for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The CA an in-cluster client trusts (kube's `incluster` reads it).
const INCLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The files a kubeconfig names that the client reads when it is built
/// (token files and exec plugins are read again by kube itself).
fn named_files(k: &Kubeconfig) -> Vec<PathBuf> {
    let clusters = k.clusters.iter().filter_map(|c| c.cluster.as_ref()?.certificate_authority.clone());
    let users = k
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
        .flat_map(|a| [a.client_certificate.clone(), a.client_key.clone()])
        .flatten();
    clusters.chain(users).map(PathBuf::from).collect()
}

impl KubeClients {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, clients: Clients::default(), watch_clients: Clients::default(), built: AtomicU64::new(0) }
    }

    /// How many clients this set has built so far.
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// The kubeconfig files that will be read, in the order kube reads them.
    fn kubeconfig_files(&self) -> Vec<PathBuf> {
        match &self.path {
            Some(p) => vec![p.clone()],
            None => match std::env::var_os("KUBECONFIG") {
                Some(v) if std::env::split_paths(&v).any(|p| !p.as_os_str().is_empty()) => {
                    std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect()
                }
                _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")).into_iter().collect(),
            },
        }
    }

    async fn config(&self, context: &str) -> Result<Loaded, KubeError> {
        let kubeconfig_files = self.kubeconfig_files();
        let kubeconfig_stamp = Stamp::of_files(kubeconfig_files.iter().map(PathBuf::as_path));
        let kubeconfig = match &self.path {
            Some(p) => {
                Some(Kubeconfig::read_from(p).map_err(|e| KubeError::Kubeconfig(format!("{}: {e}", p.display())))?)
            }
            None => match Kubeconfig::from_env() {
                Ok(Some(k)) => Some(k),
                Ok(None) => Kubeconfig::read().ok(),
                Err(e) => return Err(KubeError::Kubeconfig(format!("KUBECONFIG: {e}"))),
            },
        };
        let client_err = |cause: String| KubeError::Client { context: context.to_owned(), cause };
        let named = match &kubeconfig {
            Some(k) => named_files(k),
            None => vec![PathBuf::from(INCLUSTER_CA)],
        };
        let named_stamp = Stamp::of_files(named.iter().map(PathBuf::as_path));
        let (mut config, configured_proxy) = match kubeconfig {
            Some(k) => {
                let proxy = kubeconfig_proxy(&k, context);
                let options = KubeConfigOptions {
                    context: (!context.is_empty()).then(|| context.to_owned()),
                    ..Default::default()
                };
                let config =
                    kube::Config::from_custom_kubeconfig(k, &options).await.map_err(|e| client_err(e.to_string()))?;
                (config, proxy)
            }
            None if context.is_empty() => (kube::Config::incluster().map_err(|e| client_err(e.to_string()))?, None),
            None => {
                return Err(KubeError::Kubeconfig(format!(
                    "no kubeconfig found for context {context:?}: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
                )));
            }
        };
        let proxy = match configured_proxy {
            Some(p) => Some(p),
            None => env_proxy(&config.cluster_url, |name| std::env::var(name).ok()),
        };
        config.proxy_url = match proxy {
            Some(p) => Some(p.parse().map_err(|e| client_err(format!("proxy URL {p:?}: {e}")))?),
            None => None,
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        Ok(Loaded { config, files: [kubeconfig_files, named], stamps: [kubeconfig_stamp, named_stamp] })
    }

    /// The client of `clients` for `context`: the one built before while
    /// its files are unchanged, else a new one (with `read_timeout`).
    async fn cached(
        &self,
        clients: &Clients,
        context: &str,
        read_timeout: Duration,
    ) -> Result<kube::Client, KubeError> {
        let slot = clients.slot(context);
        let mut slot = slot.lock().await;
        if let Some(built) = slot.as_ref().filter(|b| b.current()) {
            return Ok(built.client.clone());
        }
        let Loaded { mut config, files, stamps } = self.config(context).await?;
        config.read_timeout = Some(read_timeout);
        let client = kube::Client::try_from(config)
            .map_err(|e| KubeError::Client { context: context.to_owned(), cause: e.to_string() })?;
        self.built.fetch_add(1, Ordering::Relaxed);
        *slot = Some(Built { client: client.clone(), files, stamps });
        Ok(client)
    }

    /// The request client of `context`: built on first use, and again
    /// when the kubeconfig or a file it names changed (a rotated client
    /// certificate or CA is used from the next request on).
    pub async fn client(&self, context: &str) -> Result<kube::Client, KubeError> {
        self.cached(&self.clients, context, READ_TIMEOUT).await
    }

    /// The client for long-running watches of `context` (the service's
    /// [target watches](crate::service)): the same connection settings, but a
    /// read may wait [`WATCH_READ_TIMEOUT`], longer than a watch's
    /// `timeoutSeconds`, so a quiet watch is ended by the server, not cut
    /// by the client. One per context, shared by all its watches, and
    /// rebuilt like [`KubeClients::client`] when its files change: a
    /// watch that starts (or resumes) after a rotation uses the new
    /// certificate; a stream already open keeps its connection.
    pub async fn watch_client(&self, context: &str) -> Result<kube::Client, KubeError> {
        self.cached(&self.watch_clients, context, WATCH_READ_TIMEOUT).await
    }
}

/// How long a watch read may wait: above the 290 s `timeoutSeconds` the
/// service's watches ask for (kube-apiserver also sends a BOOKMARK about
/// every minute to a watch that allows them).
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(330);

/// The `proxy-url` of the cluster `context` (or the current context) names.
fn kubeconfig_proxy(k: &Kubeconfig, context: &str) -> Option<String> {
    let name = if context.is_empty() { k.current_context.clone()? } else { context.to_owned() };
    let cluster = k.contexts.iter().find(|c| c.name == name)?.context.as_ref()?.cluster.clone();
    let proxy = k.clusters.iter().find(|c| c.name == cluster)?.cluster.as_ref()?.proxy_url.clone()?;
    (!proxy.trim().is_empty()).then_some(proxy)
}

/// The proxy the environment names for `server`, by the rules kubectl
/// follows (Go's `http.ProxyFromEnvironment`): `HTTPS_PROXY`/`https_proxy`
/// for an https server, `HTTP_PROXY`/`http_proxy` for an http one; none for
/// `localhost` or a loopback address, nor for a host `NO_PROXY`/`no_proxy`
/// names (`*`; a host or domain, matching its subdomains too; `.domain`,
/// subdomains only; an IP address or CIDR range; each optionally `:port`).
pub fn env_proxy(server: &http::Uri, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let nonempty = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let https = server.scheme_str() == Some("https");
    let proxy = if https {
        nonempty("HTTPS_PROXY").or_else(|| nonempty("https_proxy"))
    } else {
        nonempty("HTTP_PROXY").or_else(|| nonempty("http_proxy"))
    }?;
    let host = server.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let port = server.port_u16().unwrap_or(if https { 443 } else { 80 });
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return None;
    }
    let no_proxy = nonempty("NO_PROXY").or_else(|| nonempty("no_proxy")).unwrap_or_default();
    for entry in no_proxy.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()) {
        if entry == "*" || no_proxy_matches(&entry, &host, ip, port) {
            return None;
        }
    }
    Some(proxy)
}

fn no_proxy_matches(entry: &str, host: &str, ip: Option<std::net::IpAddr>, port: u16) -> bool {
    if let Some((net, bits)) = entry.split_once('/') {
        let (Ok(net), Ok(bits), Some(ip)) = (net.parse::<std::net::IpAddr>(), bits.parse::<u32>(), ip) else {
            return false;
        };
        return in_cidr(ip, net, bits);
    }
    // `host:port`, `[v6]:port`, or a bare host / address.
    let (name, entry_port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse::<u16>().ok()),
        _ => (entry, None),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    if let (Ok(addr), Some(ip)) = (name.parse::<std::net::IpAddr>(), ip) {
        return addr == ip;
    }
    let name = name.trim_start_matches('*');
    match name.strip_prefix('.') {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == name || host.ends_with(&format!(".{name}")),
    }
}

fn in_cidr(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u32) -> bool {
    use std::net::IpAddr;
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The API server's own words for a failed call, without response bodies.
pub fn cause(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn resource(kind: ObjectKind) -> ApiResource {
    match kind {
        ObjectKind::Secret => ApiResource::erase::<Secret>(&()),
        ObjectKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
    }
}

pub(crate) fn api(client: &kube::Client, kind: ObjectKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource(kind))
}

/// What cfgsync reads of an object. Plaintext goes straight into
/// [`Content`] (secret for a Secret), never into a printable type.
pub(crate) fn to_live(kind: ObjectKind, o: DynamicObject) -> LiveObject {
    use base64::Engine;
    let decode = |v: &Value| v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
    let field = |name: &str| o.data.get(name).and_then(Value::as_object);
    let mut data = BTreeMap::new();
    match kind {
        ObjectKind::Secret => {
            for (k, v) in field("data").into_iter().flatten() {
                data.insert(k.clone(), Content::secret(decode(v).unwrap_or_default()));
            }
        }
        ObjectKind::ConfigMap => {
            for (k, v) in field("data").into_iter().flatten() {
                data.insert(k.clone(), Content::plain(v.as_str().unwrap_or_default()));
            }
            for (k, v) in field("binaryData").into_iter().flatten() {
                data.insert(k.clone(), Content::plain(decode(v).unwrap_or_default()));
            }
        }
    }
    let type_ = (kind == ObjectKind::Secret)
        .then(|| o.data.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("Opaque").to_owned());
    let meta = o.metadata;
    let legacy_manager = meta
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(LEGACY_FIELD_MANAGER) && m.operation.as_deref() == Some("Apply"));
    LiveObject {
        kind,
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        data,
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        type_,
        uid: meta.uid.unwrap_or_default(),
        resource_version: meta.resource_version.unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.unwrap_or_default(),
        legacy_manager,
    }
}

/// Reads one namespace's objects of one kind that matter to a pass: ours
/// for `env` (one LIST by label), and whatever is at each of `names` that
/// the LIST did not return ([`get_missing`]). In a steady state every
/// named object is ours and listed: no GET.
pub async fn observe_namespace(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    kind: ObjectKind,
    env: &str,
    names: &BTreeSet<String>,
) -> Result<Vec<LiveObject>, KubeError> {
    let params = ListParams::default().labels(&list_selector(env));
    let listed =
        api(client, kind, namespace).list(&params).await.map_err(|e| list_error(context, namespace, kind, &e))?;
    let live = listed.items.into_iter().map(|o| to_live(kind, o)).collect();
    get_missing(client, context, namespace, kind, live, names).await
}

/// What the pass's LIST selects (and the service's watch, whose store
/// stands in for it): cfgsync's objects of `env`, every instance's.
pub fn list_selector(env: &str) -> String {
    format!("{LABEL_MANAGED_BY}=cfgsync,{LABEL_ENV}={env}")
}

fn list_error(context: &str, namespace: &str, kind: ObjectKind, e: &kube::Error) -> KubeError {
    KubeError::List { context: context.to_owned(), namespace: namespace.to_owned(), kind, cause: cause(e) }
}

/// `listed` (a LIST's answer, or the watch's store of it) and, for each of
/// `names` it lacks, what a GET finds there: an object someone else made,
/// or another instance's under another env label.
pub async fn get_missing(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    kind: ObjectKind,
    mut live: Vec<LiveObject>,
    names: &BTreeSet<String>,
) -> Result<Vec<LiveObject>, KubeError> {
    let api = api(client, kind, namespace);
    let missing: Vec<&String> = names.iter().filter(|n| !live.iter().any(|l| &&l.name == n)).collect();
    let gets = missing.iter().map(|name| api.get_opt(name));
    for found in futures_util::future::join_all(gets).await {
        if let Some(o) = found.map_err(|e| list_error(context, namespace, kind, &e))? {
            live.push(to_live(kind, o));
        }
    }
    Ok(live)
}

fn write_error(d: &DesiredObject, e: &kube::Error) -> KubeError {
    let a = &d.address;
    let (context, namespace, name, kind) = (a.context.clone(), a.namespace.clone(), a.name.clone(), d.kind);
    match e {
        kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
            let cause = format!(
                "someone created it since this pass read the namespace ({}); not written: the next pass says whose it is",
                cause(e)
            );
            KubeError::Conflict { context, namespace, name, kind, cause }
        }
        kube::Error::Api(s) if s.code == 409 => {
            let cause =
                format!("it changed since this pass read it ({}); not written: the next pass plans it again", cause(e));
            KubeError::Conflict { context, namespace, name, kind, cause }
        }
        _ => KubeError::Apply { context, namespace, name, kind, cause: cause(e) },
    }
}

/// Creates `d` with a create (never an apply: an object someone made since
/// the pass looked is `409 AlreadyExists`, and refused). Returns the object
/// as stored.
pub async fn create(client: &kube::Client, d: &DesiredObject) -> Result<LiveObject, KubeError> {
    let object: DynamicObject = serde_json::from_value(super::manifest(d)).map_err(|e| KubeError::Apply {
        context: d.address.context.clone(),
        namespace: d.address.namespace.clone(),
        name: d.address.name.clone(),
        kind: d.kind,
        cause: e.to_string(),
    })?;
    let params = PostParams { field_manager: Some(field_manager(&d.instance)), ..Default::default() };
    let created = api(client, d.kind, &d.address.namespace).create(&params, &object).await;
    created.map(|o| to_live(d.kind, o)).map_err(|e| write_error(d, &e))
}

/// Server-side applies `d` under the instance's field manager, with
/// `force` (the source of truth wins over hand edits) and, as a
/// precondition, the resourceVersion the pass observed: an object changed
/// or replaced since is `409 Conflict`, and not written. Then makes the
/// object converge where apply alone cannot: the old constant field
/// manager lets go of its fields (`release_legacy`), and keys cfgsync does
/// not write — another manager's, or co-owned with one — are removed with
/// a merge patch under the same precondition. Returns the object as
/// stored, and the keys that are still not as desired (none when it
/// converged).
pub async fn apply(
    client: &kube::Client,
    d: &DesiredObject,
    observed_version: &str,
    release_legacy: bool,
) -> Result<(LiveObject, Vec<String>), KubeError> {
    let api = api(client, d.kind, &d.address.namespace);
    let name = &d.address.name;
    let mut manifest = super::manifest(d);
    manifest["metadata"]["resourceVersion"] = observed_version.into();
    let params = PatchParams::apply(&field_manager(&d.instance)).force();
    let mut now = api.patch(name, &params, &Patch::Apply(&manifest)).await.map_err(|e| write_error(d, &e))?;
    if release_legacy {
        // Applying nothing gives up every field the old manager applied;
        // what the instance's manager applied above stays.
        let empty = serde_json::json!({
            "apiVersion": "v1", "kind": d.kind.to_string(),
            "metadata": { "name": name, "namespace": d.address.namespace,
                "resourceVersion": now.metadata.resource_version.clone().unwrap_or_default() },
        });
        now = api
            .patch(name, &PatchParams::apply(LEGACY_FIELD_MANAGER), &Patch::Apply(&empty))
            .await
            .map_err(|e| write_error(d, &e))?;
    }
    let foreign: Vec<String> = {
        let live = to_live(d.kind, now.clone());
        live.data.keys().filter(|k| !d.data.contains_key(*k)).cloned().collect()
    };
    if !foreign.is_empty() {
        let mut removal = serde_json::json!({
            "metadata": { "resourceVersion": now.metadata.resource_version.clone().unwrap_or_default() },
        });
        for k in &foreign {
            removal["data"][k] = Value::Null;
            if d.kind == ObjectKind::ConfigMap {
                removal["binaryData"][k] = Value::Null;
            }
        }
        let params = PatchParams { field_manager: Some(field_manager(&d.instance)), ..Default::default() };
        now = api.patch(name, &params, &Patch::Merge(&removal)).await.map_err(|e| write_error(d, &e))?;
    }
    let live = to_live(d.kind, now);
    let left = super::differing_keys(d, &live);
    Ok((live, left))
}

/// Deletes exactly the object observed (`uid` and `resourceVersion` as
/// preconditions): one replaced or changed since is `409 Conflict`, and
/// kept. Already gone is success.
pub async fn delete(client: &kube::Client, context: &str, o: &LiveObject) -> Result<(), TargetError> {
    let params = DeleteParams::default()
        .preconditions(Preconditions { uid: Some(o.uid.clone()), resource_version: Some(o.resource_version.clone()) });
    match api(client, o.kind, &o.namespace).delete(&o.name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) if is_status(&e, 409) => {
            Err(KubeError::PruneConflict { address: super::describe(o.kind, context, &o.namespace, &o.name) }.into())
        }
        Err(e) => Err(TargetError::from(KubeError::Delete {
            context: context.to_owned(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            kind: o.kind,
            cause: cause(&e),
        })),
    }
}

/// Rolls a workload by setting its pod template's config-hash annotation.
pub async fn restart(client: &kube::Client, d: &DesiredObject, r: &Restart) -> Result<(), KubeError> {
    let patch = serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { ANNOTATION_CONFIG_HASH: d.fingerprint } } } }
    });
    let params = PatchParams { field_manager: Some(field_manager(&d.instance)), ..Default::default() };
    let ns = &d.address.namespace;
    let result = match r.kind.as_str() {
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        _ => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
    };
    result.map_err(|e| KubeError::Restart {
        context: d.address.context.clone(),
        namespace: ns.clone(),
        workload: r.kind.clone(),
        name: r.name.clone(),
        cause: cause(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_for(server: &str, vars: &[(&str, &str)]) -> Option<String> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env_proxy(&server.parse().unwrap(), |n| vars.get(n).cloned())
    }

    /// A thousand watches of a context starting at once share one client
    /// (they each built one, with its own pool and TLS configuration: the
    /// idle service's memory at fleet-3000); requests have their own; a
    /// kubeconfig replaced on disk (a rotated certificate) builds both
    /// again, and the new ones work.
    #[tokio::test]
    async fn one_watch_client_per_context_built_again_when_the_kubeconfig_changes() {
        let emulator = kube_emulator::Emulator::start("prod");
        emulator.create_namespace("api");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        emulator.write_kubeconfig(&path).unwrap();
        let clients = std::sync::Arc::new(KubeClients::new(Some(path.clone())));
        let starts = (0..1000).map(|_| {
            let clients = clients.clone();
            async move { clients.watch_client("prod").await.map(drop) }
        });
        for started in futures_util::future::join_all(starts).await {
            started.unwrap();
        }
        assert_eq!(clients.built(), 1, "one watch client for the context");
        clients.client("prod").await.unwrap();
        clients.client("prod").await.unwrap();
        assert_eq!(clients.built(), 2, "and one request client");

        // Replaced the way cert-manager or an editor does: a new file renamed over.
        let next = dir.path().join("kubeconfig.new");
        emulator.write_kubeconfig(&next).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let watch = clients.watch_client("prod").await.unwrap();
        let request = clients.client("prod").await.unwrap();
        assert_eq!(clients.built(), 4, "both built again from the new files");
        clients.watch_client("prod").await.unwrap();
        assert_eq!(clients.built(), 4);
        for c in [watch, request] {
            api(&c, ObjectKind::Secret, "api").list(&ListParams::default()).await.unwrap();
        }
    }

    #[test]
    fn environment_proxies_follow_kubectl() {
        let p = "http://proxy:3128";
        // The scheme picks the variable.
        assert_eq!(proxy_for("https://k8s.example.com", &[("HTTPS_PROXY", p)]).as_deref(), Some(p));
        assert_eq!(proxy_for("https://k8s.example.com", &[("https_proxy", p)]).as_deref(), Some(p));
        assert_eq!(proxy_for("http://k8s.example.com", &[("HTTPS_PROXY", p)]), None);
        assert_eq!(proxy_for("http://k8s.example.com", &[("HTTP_PROXY", p)]).as_deref(), Some(p));
        // Never for loopback.
        for server in ["https://127.0.0.1:6443", "https://localhost:6443", "https://[::1]:6443", "http://127.0.0.9"] {
            assert_eq!(proxy_for(server, &[("HTTPS_PROXY", p), ("HTTP_PROXY", p)]), None, "{server}");
        }
        // NO_PROXY: hosts, domains, subdomains, addresses, ranges, ports, `*`.
        let cases = [
            ("https://k8s.example.com", "example.com", true),
            ("https://k8s.example.com", ".example.com", true),
            ("https://example.com", ".example.com", false),
            ("https://example.com", "example.com", true),
            ("https://k8s.example.com", "*.example.com", true),
            ("https://notexample.com", "example.com", false),
            ("https://10.1.2.3:6443", "10.0.0.0/8", true),
            ("https://10.1.2.3:6443", "10.1.2.3", true),
            ("https://10.1.2.3:6443", "192.168.0.0/16", false),
            ("https://k8s.example.com:6443", "k8s.example.com:6443", true),
            ("https://k8s.example.com:6443", "k8s.example.com:443", false),
            ("https://anything", "*", true),
            ("https://k8s.example.com", "other.org, example.com", true),
        ];
        for (server, no_proxy, bypass) in cases {
            let got = proxy_for(server, &[("HTTPS_PROXY", p), ("NO_PROXY", no_proxy)]);
            assert_eq!(got.is_none(), bypass, "{server} with NO_PROXY={no_proxy}");
        }
        assert_eq!(proxy_for("https://k8s.example.com", &[("HTTPS_PROXY", p), ("no_proxy", "example.com")]), None);
    }
}
