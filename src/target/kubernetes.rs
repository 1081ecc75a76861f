//! Kubernetes targets: Secrets and ConfigMaps in many clusters.
//!
//! ```toml
//! [kubernetes]
//! # kubeconfig = "kubeconfig"        # else --kubeconfig, KUBECONFIG (merged), ~/.kube/config, in-cluster
//! max_prune_share = 0.25              # refuse a pass deleting more of our objects in a cluster
//! fingerprint_key = "cfgsync/fingerprint#key"   # HMAC key for secret outputs, read per env from Vault
//!
//! [[output.target]]
//! kind = "kubernetes-secret"          # or kubernetes-configmap (refused for an output that reads a secret)
//! context = "{{ env }}"               # kubeconfig context
//! namespace = "api"
//! name = "api"
//! labels = { team = "payments" }
//! restart = [{ kind = "Deployment", name = "api" }]
//! ```
//!
//! How it behaves, and why:
//!
//! - **Server-side apply** under one constant field manager, `cfgsync`, with
//!   `force`: the source of truth wins over hand edits, and fields cfgsync
//!   stops writing are removed by the API server. `data` is written (base64
//!   for Secrets), never `stringData`, so what we compare is what is stored.
//! - **Ownership**: every object carries `app.kubernetes.io/managed-by:
//!   cfgsync`, `cfgsync.io/output`, `cfgsync.io/env`, and the annotations
//!   `cfgsync.io/fingerprint` (content hash) and `cfgsync.io/revision` (the
//!   snapshot's etcd revision when it was written).
//! - **Fingerprints**: SHA-256 for outputs that read no secret; for a tainted
//!   output, HMAC-SHA256 with the operator's key (`fingerprint_key`), so the
//!   annotation never is a plain hash of a password.
//! - **Observe cheaply**: one LIST per (cluster, namespace, kind) per pass,
//!   with the label selector `app.kubernetes.io/managed-by=cfgsync,
//!   cfgsync.io/env=<env>`; nothing is written when nothing differs.
//! - **Drift**: when the live data no longer matches the fingerprint the
//!   object was written with, someone edited it: it is re-applied, and the
//!   keys that differ (never the values) are reported.
//! - **Prune**: objects with our labels for this env whose output/target no
//!   longer exists in the config are deleted — only in namespaces the config
//!   still targets, never in a pass where any source failed, never objects
//!   without our labels, and never more than `max_prune_share` of our objects
//!   in a cluster without `--allow-mass-prune`.
//! - **Rollouts**: `restart` workloads get the pod template annotation
//!   `cfgsync.io/config-hash` patched only when the object's content really
//!   changed, so a no-op pass restarts nothing.
//! - Objects over 1 MiB are refused before any request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_lc_rs::{digest, hmac};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{ObjectAddress, ObjectKind, Restart};
use crate::secret::{Content, SecretString};

pub const FIELD_MANAGER: &str = "cfgsync";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_OUTPUT: &str = "cfgsync.io/output";
pub const LABEL_ENV: &str = "cfgsync.io/env";
pub const ANNOTATION_FINGERPRINT: &str = "cfgsync.io/fingerprint";
pub const ANNOTATION_REVISION: &str = "cfgsync.io/revision";
/// Set on a workload's pod template to roll it.
pub const ANNOTATION_CONFIG_HASH: &str = "cfgsync.io/config-hash";
/// The API server's limit on an object (etcd's request limit).
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// A failed observe or apply in a cluster. Names objects, never values.
/// `Clone`: one unreachable cluster fails each of its targets with it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("context {context:?}: cannot build a client: {cause}")]
    Client { context: String, cause: String },
    #[error("context {context:?}: listing {kind}s in namespace {namespace}: {cause}")]
    List { context: String, namespace: String, kind: ObjectKind, cause: String },
    #[error("context {context:?}: applying {kind} {namespace}/{name}: {cause}")]
    Apply { context: String, namespace: String, name: String, kind: ObjectKind, cause: String },
    #[error("context {context:?}: deleting {kind} {namespace}/{name}: {cause}")]
    Delete { context: String, namespace: String, name: String, kind: ObjectKind, cause: String },
    #[error("context {context:?}: restarting {workload} {namespace}/{name}: {cause}")]
    Restart { context: String, namespace: String, workload: String, name: String, cause: String },
    #[error("{kind} {namespace}/{name} would be {size} bytes, over the 1 MiB object limit")]
    TooLarge { kind: ObjectKind, namespace: String, name: String, size: usize },
    #[error(
        "output {output:?} read secret {secret:?} and cannot be written to ConfigMap {namespace}/{name} (context {context:?}): use kind = \"kubernetes-secret\""
    )]
    TaintedConfigMap { output: String, secret: String, context: String, namespace: String, name: String },
    #[error(
        "output {output:?} reads secrets but no fingerprint key is available: set [kubernetes] fingerprint_key = \"<secret path>#<field>\" (an HMAC key in the secrets source){detail}"
    )]
    NoFingerprintKey { output: String, detail: String },
    #[error(
        "context {context:?}: refusing to delete {deletes} of {total} cfgsync objects ({share:.0}% > {max:.0}%): re-run with --allow-mass-prune if that is intended"
    )]
    MassPrune { context: String, deletes: usize, total: usize, share: f64, max: f64 },
    /// The service's fence was closed before this cluster's write batch.
    #[error("not written: {reason} (env {env})")]
    Fenced { env: String, reason: String },
}

/// An object as cfgsync wants it.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    pub kind: ObjectKind,
    pub address: ObjectAddress,
    pub output: String,
    pub env: String,
    /// Entry name → content (secret when the output is tainted).
    pub data: BTreeMap<String, Content>,
    pub tainted: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub secret_type: Option<String>,
    pub restart: Vec<Restart>,
    /// The snapshot's etcd revision, or `file`.
    pub revision: String,
    pub fingerprint: String,
}

/// An object as it is in the cluster (only the parts cfgsync reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObject {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub data: BTreeMap<String, Vec<u8>>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// How fingerprints are computed for one env.
#[derive(Clone)]
pub struct Fingerprinter {
    key: Option<SecretString>,
}

impl Fingerprinter {
    pub fn new(key: Option<SecretString>) -> Self {
        Self { key }
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// `sha256:<hex>` for untainted content, `hmac-sha256:<hex>` for tainted.
    /// `None` when the content is tainted and there is no key.
    pub fn fingerprint<'a>(
        &self,
        data: impl IntoIterator<Item = (&'a String, &'a [u8])>,
        tainted: bool,
    ) -> Option<String> {
        let mut canonical = Vec::new();
        for (k, v) in data {
            canonical.extend_from_slice(&(k.len() as u64).to_be_bytes());
            canonical.extend_from_slice(k.as_bytes());
            canonical.extend_from_slice(&(v.len() as u64).to_be_bytes());
            canonical.extend_from_slice(v);
        }
        if tainted {
            let key = hmac::Key::new(hmac::HMAC_SHA256, self.key.as_ref()?.expose().as_bytes());
            Some(format!("hmac-sha256:{}", hex(&hmac::sign(&key, &canonical).as_ref()[..16])))
        } else {
            Some(format!("sha256:{}", hex(&digest::digest(&digest::SHA256, &canonical).as_ref()[..16])))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectAction {
    Create,
    Update,
    Drift,
    Delete,
    Unchanged,
}

/// A decided change to one object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectChange {
    pub kind: ObjectKind,
    pub context: String,
    pub namespace: String,
    pub name: String,
    pub output: String,
    pub action: ObjectAction,
    /// Keys whose values differ (names only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// True when labels/annotations/type need updating (content unchanged).
    pub metadata_only: bool,
    /// `key: old → new` lines, only for outputs that read no secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Workloads rolled (or to roll) because the content changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<String>,
    #[serde(skip)]
    pub desired: Option<DesiredObject>,
}

/// Decides the change for one desired object given what is live.
pub fn plan_object(desired: &DesiredObject, live: Option<&LiveObject>, fp: &Fingerprinter) -> ObjectChange {
    let mut change = ObjectChange {
        kind: desired.kind,
        context: desired.address.context.clone(),
        namespace: desired.address.namespace.clone(),
        name: desired.address.name.clone(),
        output: desired.output.clone(),
        action: ObjectAction::Unchanged,
        keys: Vec::new(),
        metadata_only: false,
        values: Vec::new(),
        restarts: Vec::new(),
        desired: Some(desired.clone()),
    };
    let restarts = || desired.restart.iter().map(|r| format!("{}/{}", r.kind, r.name)).collect::<Vec<_>>();
    let Some(live) = live else {
        change.action = ObjectAction::Create;
        change.keys = desired.data.keys().cloned().collect();
        change.values = desired.data.iter().filter_map(|(k, v)| Some(format!("{k}: {}", show(&v.shown()?)))).collect();
        change.restarts = restarts();
        return change;
    };
    let differing: Vec<String> = desired
        .data
        .iter()
        .filter(|(k, v)| live.data.get(*k).map(Vec::as_slice) != Some(v.expose()))
        .map(|(k, _)| k.clone())
        .chain(live.data.keys().filter(|k| !desired.data.contains_key(*k)).cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let recorded = live.annotations.get(ANNOTATION_FINGERPRINT);
    let live_fp = fp.fingerprint(live.data.iter().map(|(k, v)| (k, v.as_slice())), desired.tainted);
    if !differing.is_empty() {
        // Content differs. If the live content is not what we last wrote,
        // someone edited it: drift. Otherwise the source changed: update.
        change.action =
            if recorded.is_some() && live_fp.as_ref() != recorded { ObjectAction::Drift } else { ObjectAction::Update };
        if !desired.tainted {
            change.values = differing
                .iter()
                .map(|k| {
                    let old = live.data.get(k).map(|v| show(&String::from_utf8_lossy(v))).unwrap_or("(absent)".into());
                    let new =
                        desired.data.get(k).and_then(|v| v.shown()).map(|v| show(&v)).unwrap_or("(absent)".into());
                    format!("{k}: {old} → {new}")
                })
                .collect();
        }
        change.keys = differing;
        change.restarts = restarts();
        return change;
    }
    let metadata_ok = recorded == Some(&desired.fingerprint)
        && desired.labels.iter().all(|(k, v)| live.labels.get(k) == Some(v))
        && desired.annotations.iter().all(|(k, v)| live.annotations.get(k) == Some(v))
        && live.labels.get(LABEL_OUTPUT) == Some(&desired.output);
    if !metadata_ok {
        change.action = ObjectAction::Update;
        change.metadata_only = true;
    }
    change
}

/// A value in a plan: quoted (so control characters are escaped) and cut.
fn show(v: &str) -> String {
    crate::text::shorten(&format!("{v:?}"), 200).into_owned()
}

/// Plans the deletion of live objects no target claims any more.
/// `claimed(object)` says whether the config still has a target for it.
pub fn plan_prune(live: &[LiveObject], claimed: &dyn Fn(&LiveObject) -> bool, context: &str) -> Vec<ObjectChange> {
    live.iter()
        .filter(|o| !claimed(o))
        .map(|o| ObjectChange {
            kind: o.kind,
            context: context.to_owned(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            output: o.labels.get(LABEL_OUTPUT).cloned().unwrap_or_default(),
            action: ObjectAction::Delete,
            keys: Vec::new(),
            metadata_only: false,
            values: Vec::new(),
            restarts: Vec::new(),
            desired: None,
        })
        .collect()
}

/// The manifest cfgsync applies for `d`.
pub fn manifest(d: &DesiredObject) -> serde_json::Value {
    let mut labels = d.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), "cfgsync".into());
    labels.insert(LABEL_OUTPUT.into(), d.output.clone());
    labels.insert(LABEL_ENV.into(), d.env.clone());
    let mut annotations = d.annotations.clone();
    annotations.insert(ANNOTATION_FINGERPRINT.into(), d.fingerprint.clone());
    annotations.insert(ANNOTATION_REVISION.into(), d.revision.clone());
    let metadata = serde_json::json!({
        "name": d.address.name,
        "namespace": d.address.namespace,
        "labels": labels,
        "annotations": annotations,
    });
    match d.kind {
        ObjectKind::Secret => {
            use base64::Engine;
            let data: BTreeMap<&String, String> =
                d.data.iter().map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v.expose()))).collect();
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": d.secret_type.as_deref().unwrap_or("Opaque"),
                "data": data,
            })
        }
        ObjectKind::ConfigMap => {
            // Text goes to `data`; bytes that are not UTF-8 to `binaryData`,
            // as the API requires.
            use base64::Engine;
            let mut data = BTreeMap::new();
            let mut binary = BTreeMap::new();
            for (k, v) in &d.data {
                match v.expose_str() {
                    Some(text) => data.insert(k, text.to_owned()),
                    None => binary.insert(k, base64::engine::general_purpose::STANDARD.encode(v.expose())),
                };
            }
            let mut m = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": data,
            });
            if !binary.is_empty() {
                m["binaryData"] = serde_json::json!(binary);
            }
            m
        }
    }
}

/// Refuses an object over the API server's limit, before any request.
pub fn check_size(d: &DesiredObject) -> Result<(), KubeError> {
    let size = serde_json::to_vec(&manifest(d)).map_or(usize::MAX, |v| v.len());
    if size > MAX_OBJECT_BYTES {
        return Err(KubeError::TooLarge {
            kind: d.kind,
            namespace: d.address.namespace.clone(),
            name: d.address.name.clone(),
            size,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clients and API calls.

/// Clients per kubeconfig context, built on first use.
pub struct KubeClients {
    /// `--kubeconfig` or `[kubernetes] kubeconfig`.
    path: Option<PathBuf>,
    clients: Mutex<BTreeMap<String, kube::Client>>,
}

/// How long a cluster may take to accept a connection / answer: one
/// unreachable cluster must not hold the others' pass for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl KubeClients {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, clients: Mutex::new(BTreeMap::new()) }
    }

    async fn config(&self, context: &str) -> Result<kube::Config, KubeError> {
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
        let mut config = match kubeconfig {
            Some(k) => {
                let options = KubeConfigOptions {
                    context: (!context.is_empty()).then(|| context.to_owned()),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(k, &options).await.map_err(|e| client_err(e.to_string()))?
            }
            None if context.is_empty() => kube::Config::incluster().map_err(|e| client_err(e.to_string()))?,
            None => {
                return Err(KubeError::Kubeconfig(format!(
                    "no kubeconfig found for context {context:?}: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
                )));
            }
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        Ok(config)
    }

    pub async fn client(&self, context: &str) -> Result<kube::Client, KubeError> {
        if let Some(c) = self.clients.lock().await.get(context) {
            return Ok(c.clone());
        }
        let config = self.config(context).await?;
        let client = kube::Client::try_from(config)
            .map_err(|e| KubeError::Client { context: context.to_owned(), cause: e.to_string() })?;
        self.clients.lock().await.insert(context.to_owned(), client.clone());
        Ok(client)
    }
}

/// The API server's own words for a failed call, without response bodies.
fn cause(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Lists our objects of one kind for one env in one namespace: one request.
pub async fn list(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    kind: ObjectKind,
    env: &str,
) -> Result<Vec<LiveObject>, KubeError> {
    let params = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}=cfgsync,{LABEL_ENV}={env}"));
    let err = |e: kube::Error| KubeError::List {
        context: context.to_owned(),
        namespace: namespace.to_owned(),
        kind,
        cause: cause(&e),
    };
    let to_live = |meta: kube::api::ObjectMeta, data: BTreeMap<String, Vec<u8>>| LiveObject {
        kind,
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        data,
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
    };
    Ok(match kind {
        ObjectKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            api.list(&params)
                .await
                .map_err(err)?
                .items
                .into_iter()
                .map(|s| {
                    let data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                    to_live(s.metadata, data)
                })
                .collect()
        }
        ObjectKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            api.list(&params)
                .await
                .map_err(err)?
                .items
                .into_iter()
                .map(|c| {
                    let data = c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    to_live(c.metadata, data)
                })
                .collect()
        }
    })
}

/// Server-side applies `d` under the `cfgsync` field manager.
pub async fn apply(client: &kube::Client, d: &DesiredObject) -> Result<(), KubeError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let manifest = manifest(d);
    let (ns, name) = (&d.address.namespace, &d.address.name);
    let result = match d.kind {
        ObjectKind::Secret => {
            Api::<Secret>::namespaced(client.clone(), ns).patch(name, &params, &Patch::Apply(&manifest)).await.map(drop)
        }
        ObjectKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(&manifest))
            .await
            .map(drop),
    };
    result.map_err(|e| KubeError::Apply {
        context: d.address.context.clone(),
        namespace: ns.clone(),
        name: name.clone(),
        kind: d.kind,
        cause: cause(&e),
    })
}

/// Deletes one object; already gone is success.
pub async fn delete(client: &kube::Client, c: &ObjectChange) -> Result<(), KubeError> {
    let params = DeleteParams::default();
    let result = match c.kind {
        ObjectKind::Secret => {
            Api::<Secret>::namespaced(client.clone(), &c.namespace).delete(&c.name, &params).await.map(drop)
        }
        ObjectKind::ConfigMap => {
            Api::<ConfigMap>::namespaced(client.clone(), &c.namespace).delete(&c.name, &params).await.map(drop)
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(KubeError::Delete {
            context: c.context.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            kind: c.kind,
            cause: cause(&e),
        }),
    }
}

/// Rolls a workload by setting its pod template's config-hash annotation.
pub async fn restart(client: &kube::Client, d: &DesiredObject, r: &Restart) -> Result<(), KubeError> {
    let patch = serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { ANNOTATION_CONFIG_HASH: d.fingerprint } } } }
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
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

    fn desired(data: &[(&str, &str)], tainted: bool, fp: &Fingerprinter) -> DesiredObject {
        let data: BTreeMap<String, Content> =
            data.iter().map(|(k, v)| (k.to_string(), Content::new(v.as_bytes(), tainted))).collect();
        let fingerprint = fp.fingerprint(data.iter().map(|(k, v)| (k, v.expose())), tainted).unwrap();
        DesiredObject {
            kind: ObjectKind::Secret,
            address: ObjectAddress { context: "prod".into(), namespace: "api".into(), name: "api".into() },
            output: "api".into(),
            env: "prod".into(),
            data,
            tainted,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            secret_type: None,
            restart: vec![Restart { kind: "Deployment".into(), name: "api".into() }],
            revision: "7".into(),
            fingerprint,
        }
    }

    fn live_of(d: &DesiredObject) -> LiveObject {
        let m = manifest(d);
        LiveObject {
            kind: d.kind,
            namespace: d.address.namespace.clone(),
            name: d.address.name.clone(),
            data: d.data.iter().map(|(k, v)| (k.clone(), v.expose().to_vec())).collect(),
            labels: serde_json::from_value(m["metadata"]["labels"].clone()).unwrap(),
            annotations: serde_json::from_value(m["metadata"]["annotations"].clone()).unwrap(),
        }
    }

    #[test]
    fn fingerprints_are_keyed_for_secrets() {
        let pw = "PW".to_string();
        let data = || [(&pw, &b"CANARY-x"[..])];
        let none = Fingerprinter::new(None);
        assert!(none.fingerprint(data(), true).is_none(), "no key, no fingerprint for secret content");
        let plain = none.fingerprint(data(), false).unwrap();
        assert!(plain.starts_with("sha256:"));
        let k1 = Fingerprinter::new(Some(SecretString::new("k1"))).fingerprint(data(), true).unwrap();
        let k2 = Fingerprinter::new(Some(SecretString::new("k2"))).fingerprint(data(), true).unwrap();
        assert!(k1.starts_with("hmac-sha256:"));
        assert_ne!(k1, k2);
        assert_ne!(k1.trim_start_matches("hmac-"), plain, "not the plain hash");
        // Key/value boundaries matter.
        let (ab, a) = ("AB".to_string(), "A".to_string());
        assert_ne!(none.fingerprint([(&ab, &b"C"[..])], false), none.fingerprint([(&a, &b"BC"[..])], false));
    }

    #[test]
    fn create_unchanged_update_drift() {
        let fp = Fingerprinter::new(Some(SecretString::new("key")));
        let d = desired(&[("A", "1"), ("B", "2")], true, &fp);
        assert_eq!(plan_object(&d, None, &fp).action, ObjectAction::Create);

        let live = live_of(&d);
        let c = plan_object(&d, Some(&live), &fp);
        assert_eq!(c.action, ObjectAction::Unchanged);
        assert!(c.restarts.is_empty());

        // The source changed B: update, restart.
        let d2 = desired(&[("A", "1"), ("B", "3")], true, &fp);
        let c = plan_object(&d2, Some(&live), &fp);
        assert_eq!((c.action, c.keys.clone()), (ObjectAction::Update, vec!["B".to_string()]));
        assert_eq!(c.restarts, ["Deployment/api"]);
        assert!(c.values.is_empty(), "tainted: no values");

        // Someone edited A by hand and added C: drift.
        let mut edited = live.clone();
        edited.data.insert("A".into(), b"hand".to_vec());
        edited.data.insert("C".into(), b"x".to_vec());
        let c = plan_object(&d, Some(&edited), &fp);
        assert_eq!((c.action, c.keys.clone()), (ObjectAction::Drift, vec!["A".to_string(), "C".to_string()]));

        // Labels removed by hand: metadata-only update, no restart.
        let mut unlabelled = live.clone();
        unlabelled.labels.remove(LABEL_OUTPUT);
        let c = plan_object(&d, Some(&unlabelled), &fp);
        assert_eq!(c.action, ObjectAction::Update);
        assert!(c.metadata_only && c.restarts.is_empty());
    }

    #[test]
    fn untainted_changes_show_values() {
        let fp = Fingerprinter::new(None);
        let d = desired(&[("HOST", "new")], false, &fp);
        let mut live = live_of(&desired(&[("HOST", "old")], false, &fp));
        live.kind = d.kind;
        let c = plan_object(&d, Some(&live), &fp);
        assert_eq!(c.values, ["HOST: \"old\" → \"new\""]);
    }

    #[test]
    fn manifests_carry_ownership_and_base64_data() {
        let fp = Fingerprinter::new(Some(SecretString::new("key")));
        let d = desired(&[("PW", "s3cr3t")], true, &fp);
        let m = manifest(&d);
        assert_eq!(m["data"]["PW"], "czNjcjN0");
        assert_eq!(m["type"], "Opaque");
        assert_eq!(m["metadata"]["labels"][LABEL_MANAGED_BY], "cfgsync");
        assert_eq!(m["metadata"]["labels"][LABEL_OUTPUT], "api");
        assert_eq!(m["metadata"]["labels"][LABEL_ENV], "prod");
        assert!(m["metadata"]["annotations"][ANNOTATION_FINGERPRINT].as_str().unwrap().starts_with("hmac-sha256:"));
        assert!(m.get("stringData").is_none());
        let big = desired(&[("BIG", &"x".repeat(800 * 1024))], true, &fp);
        assert!(matches!(check_size(&big), Err(KubeError::TooLarge { .. })), "base64 makes 800 KiB exceed 1 MiB");
        assert!(check_size(&d).is_ok());
    }

    #[test]
    fn prune_plans_only_unclaimed_objects() {
        let fp = Fingerprinter::new(None);
        let keep = live_of(&desired(&[("A", "1")], false, &fp));
        let mut gone = keep.clone();
        gone.name = "old".into();
        let plan = plan_prune(&[keep, gone], &|o| o.name == "api", "prod");
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].name.as_str(), plan[0].action), ("old", ObjectAction::Delete));
    }
}
