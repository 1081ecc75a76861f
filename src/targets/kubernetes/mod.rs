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
//!   cfgsync`, `cfgsync.io/output`, `cfgsync.io/env`, `cfgsync.io/instance`
//!   (which config wrote it), and the annotations `cfgsync.io/fingerprint`
//!   (content hash) and `cfgsync.io/revision` (the snapshot's etcd revision
//!   when it was written). An object at a targeted address that another
//!   instance owns is not written (an error names the owner); one written
//!   before instances existed is adopted.
//! - **Fingerprints**: SHA-256 for outputs that read no secret; for a tainted
//!   output, HMAC-SHA256 with the operator's key (`fingerprint_key`), so the
//!   annotation never is a plain hash of a password.
//! - **Observe cheaply**: one LIST per (cluster, namespace, kind) per pass,
//!   with the label selector `app.kubernetes.io/managed-by=cfgsync,
//!   cfgsync.io/env=<env>`; nothing is written when nothing differs.
//! - **Drift**: when the live data no longer matches the fingerprint the
//!   object was written with, someone edited it: it is re-applied, and the
//!   keys that differ (never the values) are reported.
//! - **Prune**: objects of this instance for this env that no target names
//!   any more are deleted — only in namespaces the config still targets,
//!   never in a pass where any source failed, never another instance's or
//!   unlabelled objects, and never more than one and more than
//!   `max_prune_share` of our objects in a cluster without
//!   `--allow-mass-prune`.
//! - **Rollouts**: `restart` workloads get the pod template annotation
//!   `cfgsync.io/config-hash` patched only when the object's content really
//!   changed, so a no-op pass restarts nothing.
//! - Objects over 1 MiB are refused before any request.

pub mod client;

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::{digest, hmac};
use tracing::{info, warn};

pub use client::KubeClients;

use super::{Applied, Claim, Ctx, Target, TargetError};
use crate::config::{KubeTarget, ObjectAddress, ObjectKind, Restart, TargetKind};
use crate::plan::{self, Action, Change, DestPlan, Planned, Slot};
use crate::render::{Rendered, Use};
use crate::secret::{Content, SecretString};

pub const FIELD_MANAGER: &str = "cfgsync";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_OUTPUT: &str = "cfgsync.io/output";
pub const LABEL_ENV: &str = "cfgsync.io/env";
/// Which config wrote it: prune only ever touches its own instance's objects.
pub const LABEL_INSTANCE: &str = "cfgsync.io/instance";
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
        "output {output:?} reads secrets but the env's fingerprint key is missing from the secrets source: run `cfgsync policy apply` to create it (or set [kubernetes] fingerprint_key = \"<secret path>#<field>\"){detail}"
    )]
    NoFingerprintKey { output: String, detail: String },
}

/// An object as cfgsync wants it.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    pub kind: ObjectKind,
    pub address: ObjectAddress,
    pub output: String,
    pub env: String,
    /// The config instance that owns it (`cfgsync.io/instance`).
    pub instance: String,
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

impl DesiredObject {
    /// A Secret's `type`; `None` for a ConfigMap.
    pub fn secret_type_or_default(&self) -> Option<String> {
        (self.kind == ObjectKind::Secret).then(|| self.secret_type.clone().unwrap_or_else(|| "Opaque".to_owned()))
    }
}

/// An object as it is in the cluster (only the parts cfgsync reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObject {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// Secret data, or a ConfigMap's `data` and `binaryData` together.
    pub data: BTreeMap<String, Vec<u8>>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// A Secret's `type`.
    pub type_: Option<String>,
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

/// What apply does for one object.
#[derive(Debug)]
pub enum Op {
    /// Server-side apply `desired`; roll its workloads when the content changed.
    Apply {
        desired: Box<DesiredObject>,
        restart: bool,
    },
    Delete {
        kind: ObjectKind,
        namespace: String,
        name: String,
    },
    /// Nothing to do.
    Keep,
}

/// How an object is shown: `Secret api/web in context prod`.
pub fn describe(kind: ObjectKind, context: &str, namespace: &str, name: &str) -> String {
    let context = if context.is_empty() { "the current context".to_owned() } else { format!("context {context}") };
    format!("{kind} {namespace}/{name} in {context}")
}

/// Decides the change for one desired object given what is live.
pub fn plan_object(desired: &DesiredObject, live: Option<&LiveObject>, fp: &Fingerprinter) -> (Change, bool) {
    let (mut change, content_changed) = decide(desired, live, fp);
    change.content_hash = plan::content_hash(&[desired.fingerprint.as_bytes()]);
    (change, content_changed)
}

fn decide(desired: &DesiredObject, live: Option<&LiveObject>, fp: &Fingerprinter) -> (Change, bool) {
    let a = &desired.address;
    let address = describe(desired.kind, &a.context, &a.namespace, &a.name);
    let restarts = || desired.restart.iter().map(|r| format!("{}/{}", r.kind, r.name)).collect::<Vec<_>>();
    let Some(live) = live else {
        let mut change = Change::new(desired.kind.kind_name(), address, Action::Create, desired.tainted);
        change.entries = desired.data.keys().cloned().collect();
        change.values =
            desired.data.iter().filter_map(|(k, v)| Some(format!("{k}: {}", plan::show(&v.shown()?)))).collect();
        change.notes.extend(restarts().into_iter().map(|r| format!("restart {r}")));
        return (change, true);
    };
    let differing = plan::changed_entries(desired.data.iter().map(|(k, v)| (k, v.expose())), &live.data);
    let recorded = live.annotations.get(ANNOTATION_FINGERPRINT);
    if !differing.is_empty() {
        // Content differs. If the live content is not what we last wrote,
        // someone edited it: drift. Otherwise the source changed: update.
        let live_fp = fp.fingerprint(live.data.iter().map(|(k, v)| (k, v.as_slice())), desired.tainted);
        let action = if recorded.is_some() && live_fp.as_ref() != recorded { Action::Drift } else { Action::Update };
        let mut change = Change::new(desired.kind.kind_name(), address, action, desired.tainted);
        change.values = plan::value_lines(&differing, &desired.data, &live.data);
        change.entries = differing;
        change.notes.extend(restarts().into_iter().map(|r| format!("restart {r}")));
        return (change, true);
    }
    let metadata_ok = recorded == Some(&desired.fingerprint)
        && desired.labels.iter().all(|(k, v)| live.labels.get(k) == Some(v))
        && desired.annotations.iter().all(|(k, v)| live.annotations.get(k) == Some(v))
        && live.labels.get(LABEL_OUTPUT) == Some(&desired.output)
        && live.labels.get(LABEL_INSTANCE) == Some(&desired.instance)
        && live.type_ == desired.secret_type_or_default();
    let mut change = Change::new(desired.kind.kind_name(), address, Action::Unchanged, desired.tainted);
    if !metadata_ok {
        change.action = Action::Update;
        change.notes.push("labels/annotations only".to_owned());
    }
    (change, false)
}

/// The kind: Secrets and ConfigMaps, one destination per cluster.
pub struct KubeKind {
    pub clients: KubeClients,
}

impl KubeKind {
    pub fn new(clients: KubeClients) -> Self {
        Self { clients }
    }
}

impl Target for KubeKind {
    type Spec = KubeTarget;
    /// The kubeconfig context.
    type Dest = String;
    /// (namespace, kind): one LIST each.
    type Scope = BTreeSet<(String, ObjectKind)>;
    type Item = DesiredObject;
    type Observed = Vec<LiveObject>;
    type Op = Op;

    fn spec(target: &TargetKind) -> Option<&KubeTarget> {
        match target {
            TargetKind::Kubernetes(k) => Some(k),
            _ => None,
        }
    }

    fn kind_name(spec: &KubeTarget) -> &'static str {
        spec.object.kind_name()
    }

    fn address(spec: &KubeTarget, env: &str) -> String {
        let a = &spec.addresses[env];
        describe(spec.object, &a.context, &a.namespace, &a.name)
    }

    // One LIST per namespace and kind, known from the config alone.
    const OBSERVE_BEFORE_RENDER: bool = true;

    fn locate(&self, spec: &KubeTarget, _: Option<&[DesiredObject]>, ctx: &Ctx<'_>, scope: &mut Self::Scope) -> String {
        let a = &spec.addresses[ctx.env];
        scope.insert((a.namespace.clone(), spec.object));
        a.context.clone()
    }

    fn desired(
        &self,
        spec: &KubeTarget,
        rendered: &Rendered,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<DesiredObject>, TargetError> {
        let address = &spec.addresses[&rendered.env];
        if spec.object == ObjectKind::ConfigMap && rendered.tainted {
            let secret = rendered
                .used
                .iter()
                .find_map(|u| match u {
                    Use::Secret(p) => Some(p.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(KubeError::TaintedConfigMap {
                output: rendered.output.clone(),
                secret,
                context: address.context.clone(),
                namespace: address.namespace.clone(),
                name: address.name.clone(),
            }
            .into());
        }
        let fingerprint = ctx
            .keyed
            .fingerprint(rendered.entries.iter().map(|(k, v)| (k, v.expose())), rendered.tainted)
            .ok_or_else(|| KubeError::NoFingerprintKey { output: rendered.output.clone(), detail: String::new() })?;
        let desired = DesiredObject {
            kind: spec.object,
            address: address.clone(),
            output: rendered.output.clone(),
            env: rendered.env.clone(),
            instance: ctx.instance.to_owned(),
            data: rendered.entries.clone(),
            tainted: rendered.tainted,
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            secret_type: spec.secret_type.clone(),
            restart: spec.restart.clone(),
            revision: ctx.revision.map_or_else(|| "file".to_owned(), |r| r.to_string()),
            fingerprint,
        };
        check_size(&desired)?;
        Ok(vec![desired])
    }

    async fn observe(
        &self,
        context: &String,
        scope: &Self::Scope,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<LiveObject>, TargetError> {
        let client = self.clients.client(context).await?;
        type List<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Vec<LiveObject>, KubeError>> + Send + 'a>>;
        let lists: Vec<List<'_>> = scope
            .iter()
            .map(|(namespace, kind)| -> List<'_> {
                Box::pin(client::list(&client, context, namespace, *kind, ctx.env))
            })
            .collect();
        let mut live = Vec::new();
        for result in futures_util::future::join_all(lists).await {
            live.extend(result?);
        }
        Ok(live)
    }

    fn plan(
        &self,
        context: &String,
        claims: Vec<Claim<'_, KubeTarget, DesiredObject>>,
        live: &Vec<LiveObject>,
        ctx: &Ctx<'_>,
    ) -> DestPlan<Op> {
        let mut plan = DestPlan::default();
        let by_address: std::collections::HashMap<(ObjectKind, &str, &str), &LiveObject> =
            live.iter().map(|l| ((l.kind, l.namespace.as_str(), l.name.as_str()), l)).collect();
        let find = |kind: ObjectKind, namespace: &str, name: &str| by_address.get(&(kind, namespace, name)).copied();
        let mut claimed: BTreeSet<(ObjectKind, &str, &str)> = BTreeSet::new();
        for claim in &claims {
            let a = &claim.spec.addresses[ctx.env];
            claimed.insert((claim.spec.object, a.namespace.as_str(), a.name.as_str()));
            let Some(items) = &claim.items else { continue };
            for desired in items {
                let current = find(desired.kind, &desired.address.namespace, &desired.address.name);
                if let Some(owner) = current.and_then(|l| l.labels.get(LABEL_INSTANCE))
                    && owner != ctx.instance
                {
                    plan.errors.push((
                        claim.slot,
                        TargetError::Foreign {
                            address: describe(desired.kind, context, &desired.address.namespace, &desired.address.name),
                            what: desired.kind.to_string(),
                            owner: owner.clone(),
                            ours: ctx.instance.to_owned(),
                        },
                    ));
                    continue;
                }
                let (change, content_changed) = plan_object(desired, current, ctx.keyed);
                let op = if change.action.writes() {
                    Op::Apply { desired: Box::new(desired.clone()), restart: content_changed }
                } else {
                    Op::Keep
                };
                plan.changes.push(Planned { slot: claim.slot, change, op });
            }
        }
        if !ctx.prune {
            return plan;
        }
        // Only objects this instance wrote; never one another instance or a
        // person owns, never one a target still names (rendered or not).
        let ours: Vec<&LiveObject> =
            live.iter().filter(|o| o.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(ctx.instance)).collect();
        let prunes: Vec<Planned<Op>> = ours
            .iter()
            .filter(|o| !claimed.contains(&(o.kind, o.namespace.as_str(), o.name.as_str())))
            .map(|o| {
                let mut change = Change::new(
                    o.kind.kind_name(),
                    describe(o.kind, context, &o.namespace, &o.name),
                    Action::Delete,
                    false,
                );
                if let Some(output) = o.labels.get(LABEL_OUTPUT) {
                    change.notes.push(format!("output {output:?} no longer writes it"));
                }
                Planned {
                    slot: Slot::Prune,
                    change,
                    op: Op::Delete { kind: o.kind, namespace: o.namespace.clone(), name: o.name.clone() },
                }
            })
            .collect();
        let max = ctx.config.kubernetes.max_prune_share;
        plan.add_prunes(prunes, ours.len(), max, ctx.allow_mass_prune, || format!("context {context:?}"));
        plan
    }

    async fn apply(&self, context: &String, changes: Vec<Planned<Op>>, ctx: &Ctx<'_>) -> Vec<Applied> {
        let client = match self.clients.client(context).await {
            Ok(c) => c,
            Err(e) => {
                return Applied::all_failed(changes, || e.clone().into());
            }
        };
        let mut out = Vec::new();
        // Writes first (with the restarts of what really changed), then deletes.
        let (deletes, writes): (Vec<_>, Vec<_>) = changes.into_iter().partition(|p| matches!(p.op, Op::Delete { .. }));
        for p in writes.into_iter().chain(deletes) {
            let result = match &p.op {
                Op::Keep => Ok(()),
                Op::Apply { desired, restart } => {
                    if p.change.action == Action::Drift {
                        warn!(context = %context, kind = %desired.kind, namespace = %desired.address.namespace, name = %desired.address.name,
                            keys = %p.change.entries.join(","), "drift: object edited in the cluster; restoring");
                    }
                    apply_object(&client, desired, *restart).await.map_err(TargetError::from)
                }
                Op::Delete { kind, namespace, name } => {
                    let r = client::delete(&client, context, *kind, namespace, name).await;
                    if r.is_ok() {
                        info!(context = %context, env = ctx.env, kind = %kind, namespace = %namespace, name = %name, "pruned");
                    }
                    r.map_err(TargetError::from)
                }
            };
            out.push(Applied { slot: p.slot, change: p.change, result, reloaded: false });
        }
        out
    }
}

/// Applies one object and rolls its workloads when its content changed.
async fn apply_object(client: &kube::Client, desired: &DesiredObject, restart: bool) -> Result<(), KubeError> {
    client::apply(client, desired).await?;
    info!(context = %desired.address.context, kind = %desired.kind, namespace = %desired.address.namespace, name = %desired.address.name, "object applied");
    if restart {
        for r in &desired.restart {
            client::restart(client, desired, r).await?;
            info!(context = %desired.address.context, namespace = %desired.address.namespace, workload = %r.kind, name = %r.name, "workload restarted");
        }
    }
    Ok(())
}

/// The manifest cfgsync applies for `d`.
pub fn manifest(d: &DesiredObject) -> serde_json::Value {
    let mut labels = d.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), "cfgsync".into());
    labels.insert(LABEL_OUTPUT.into(), d.output.clone());
    labels.insert(LABEL_ENV.into(), d.env.clone());
    labels.insert(LABEL_INSTANCE.into(), d.instance.clone());
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

/// An upper bound of the manifest's JSON size, without building it: every
/// string, values included, at its worst JSON escaping (6 bytes a byte,
/// `\u00XX`; more than base64's 4 per 3), plus the fixed parts.
fn size_bound(d: &DesiredObject) -> usize {
    let text = |s: &str| 6 * s.len() + 4;
    let pairs = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| text(k) + text(v)).sum::<usize>();
    let data: usize = d.data.iter().map(|(k, v)| text(k) + 6 * v.len() + 4).sum();
    let fixed = [&d.address.name, &d.address.namespace, &d.output, &d.env, &d.instance, &d.fingerprint, &d.revision]
        .iter()
        .map(|s| text(s))
        .sum::<usize>()
        + d.secret_type.as_deref().map_or(0, text);
    data + pairs(&d.labels) + pairs(&d.annotations) + fixed + 1024
}

/// Refuses an object over the API server's limit, before any request.
pub fn check_size(d: &DesiredObject) -> Result<(), KubeError> {
    if size_bound(d) <= MAX_OBJECT_BYTES {
        return Ok(());
    }
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
            instance: "team-a".into(),
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
            type_: d.secret_type_or_default(),
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
        assert_eq!(plan_object(&d, None, &fp).0.action, Action::Create);

        let live = live_of(&d);
        let (c, content) = plan_object(&d, Some(&live), &fp);
        assert_eq!((c.action, content), (Action::Unchanged, false));

        // The source changed B: update, restart.
        let d2 = desired(&[("A", "1"), ("B", "3")], true, &fp);
        let (c, content) = plan_object(&d2, Some(&live), &fp);
        assert_eq!((c.action, c.entries.clone(), content), (Action::Update, vec!["B".to_string()], true));
        assert_eq!(c.notes, ["restart Deployment/api"]);
        assert!(c.values.is_empty(), "tainted: no values");

        // Someone edited A by hand and added C: drift.
        let mut edited = live.clone();
        edited.data.insert("A".into(), b"hand".to_vec());
        edited.data.insert("C".into(), b"x".to_vec());
        let (c, _) = plan_object(&d, Some(&edited), &fp);
        assert_eq!((c.action, c.entries.clone()), (Action::Drift, vec!["A".to_string(), "C".to_string()]));

        // Labels removed by hand, or written before instances existed:
        // metadata-only update, no restart.
        for label in [LABEL_OUTPUT, LABEL_INSTANCE] {
            let mut unlabelled = live.clone();
            unlabelled.labels.remove(label);
            let (c, content) = plan_object(&d, Some(&unlabelled), &fp);
            assert_eq!((c.action, content), (Action::Update, false));
            assert_eq!(c.notes, ["labels/annotations only"]);
        }
    }

    #[test]
    fn untainted_changes_show_values() {
        let fp = Fingerprinter::new(None);
        let d = desired(&[("HOST", "new")], false, &fp);
        let mut live = live_of(&desired(&[("HOST", "old")], false, &fp));
        live.kind = d.kind;
        let (c, _) = plan_object(&d, Some(&live), &fp);
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
        assert_eq!(m["metadata"]["labels"][LABEL_INSTANCE], "team-a");
        assert!(m["metadata"]["annotations"][ANNOTATION_FINGERPRINT].as_str().unwrap().starts_with("hmac-sha256:"));
        assert!(m.get("stringData").is_none());
        let big = desired(&[("BIG", &"x".repeat(800 * 1024))], true, &fp);
        assert!(matches!(check_size(&big), Err(KubeError::TooLarge { .. })), "base64 makes 800 KiB exceed 1 MiB");
        assert!(check_size(&d).is_ok());
        // A ConfigMap keeps bytes that are not text in binaryData.
        let mut cm = desired(&[("TEXT", "t")], false, &fp);
        cm.kind = ObjectKind::ConfigMap;
        cm.data.insert("BIN".into(), Content::plain(vec![0xff, 0x00]));
        let m = manifest(&cm);
        assert_eq!((m["data"]["TEXT"].as_str(), m["binaryData"]["BIN"].as_str()), (Some("t"), Some("/wA=")));
    }

    #[test]
    fn the_size_bound_is_never_below_the_manifest() {
        let fp = Fingerprinter::new(Some(SecretString::new("key")));
        let values = ["", "x", "\u{1}\u{1f}\"\\", "é€😀", &"\u{7}".repeat(50_000), &"y".repeat(200_000)];
        for kind in [ObjectKind::Secret, ObjectKind::ConfigMap] {
            for tainted in [false, true] {
                for v in values {
                    let mut d = desired(&[("K\u{1}", v), ("plain", "p")], tainted, &fp);
                    d.kind = kind;
                    d.labels.insert("team\u{2}".into(), "\"x\"".into());
                    d.annotations.insert("note".into(), "\n".repeat(100));
                    let size = serde_json::to_vec(&manifest(&d)).unwrap().len();
                    assert!(size_bound(&d) >= size, "{kind:?}, {} bytes: bound {} < {size}", v.len(), size_bound(&d));
                }
            }
        }
        // Near the limit the exact size decides: 300 KiB of control bytes bound
        // far over 1 MiB, and its manifest (escaped to 1.8 MiB) is refused.
        let near = desired(&[("C", &"\u{7}".repeat(300 * 1024))], false, &fp);
        let mut cm = near;
        cm.kind = ObjectKind::ConfigMap;
        assert!(matches!(check_size(&cm), Err(KubeError::TooLarge { .. })));
    }
}
