//! Kubernetes targets: Secrets and ConfigMaps in many clusters.
//!
//! ```toml
//! [kubernetes]
//! # kubeconfig = "kubeconfig"        # else --kubeconfig, KUBECONFIG (merged), ~/.kube/config, in-cluster
//! max_prune_share = 0.25              # refuse a pass deleting more of our objects in a cluster
//!
//! [fingerprint]
//! key = "cfgsync/fingerprint#key"     # HMAC key for secret outputs, read per env from Vault (old name: [kubernetes] fingerprint_key)
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
//! - **Ownership**: every object carries `app.kubernetes.io/managed-by:
//!   cfgsync`, `cfgsync.io/output`, `cfgsync.io/env`, `cfgsync.io/instance`
//!   (which config wrote it), and the annotations `cfgsync.io/fingerprint`
//!   (content hash) and `cfgsync.io/revision` (the snapshot's etcd revision
//!   when it was written). What is at a target's address is looked up **by
//!   name**, whatever its labels: an object of this instance is written;
//!   one of another instance is refused (the error names the owner), and so
//!   is one cfgsync did not make (a Helm release's Secret, a hand-made
//!   ConfigMap): the error names its `managed-by` and says how to hand it
//!   over. Taking an object over is explicit: the annotation
//!   `cfgsync.io/adopt: <instance>` on the object (`kubectl annotate`), put
//!   there by someone allowed to change it. The next pass applies over it
//!   (shown as an update with `adopt` in `plan`), and it is then ours like
//!   any other. An object labelled by cfgsync before instances existed
//!   (no `cfgsync.io/instance`) is ours when its output label is.
//! - **Writes that prove what they write over**: a new object is made with
//!   a create (POST): one that appeared since the pass looked is `409
//!   AlreadyExists` and refused, never applied over. An existing one is
//!   server-side applied with `force` (the source of truth wins over hand
//!   edits) under the field manager `cfgsync/<instance>` — one per instance,
//!   so two instances never share ownership of a field — and with the
//!   resourceVersion the pass observed as a precondition: an object changed
//!   or replaced since is `409 Conflict` and not written (the next pass
//!   plans again). `data` is written (base64 for Secrets), never
//!   `stringData`, so what we compare is what is stored.
//! - **Converging for real**: apply cannot remove a key another field
//!   manager added or co-owns (`kubectl patch`, another applier). After the
//!   apply, keys the output does not have are removed with a merge patch
//!   (same precondition), and the result is checked: a write is reported as
//!   done (or "drift: restored") only when the object then holds exactly
//!   what the source says; otherwise the target fails naming the keys.
//! - **Field manager migration**: objects written before field managers
//!   were per instance are held by the manager `cfgsync`. A pass that finds
//!   it plans one write (`field manager cfgsync → cfgsync/<instance>`):
//!   apply as the new manager, then apply an empty configuration as
//!   `cfgsync`, which gives up its fields (what the new manager applied
//!   stays; what only the old one held, such as a dropped key, goes). Later
//!   passes are quiet again.
//! - **Fingerprints**: SHA-256 for outputs that read no secret; for a tainted
//!   output, HMAC-SHA256 with the operator's key (`[fingerprint] key`), so the
//!   annotation never is a plain hash of a password.
//! - **Observe cheaply**: one LIST per (cluster, namespace, kind) per pass,
//!   with the label selector `app.kubernetes.io/managed-by=cfgsync,
//!   cfgsync.io/env=<env>`, plus one GET for each targeted name the LIST did
//!   not return (none in a steady state); nothing is written when nothing
//!   differs. Under `cfgsync run`, where the leader watches that scope, the
//!   watch's store stands in for the LIST while the watch is synced
//!   ([`cache`]): an idle service LISTs only when a watch starts or its
//!   version expires. Plaintext read back lives in [`Content`] (secret for
//!   a Secret's data), never in a printable type.
//! - **Isolation**: a namespace that cannot be read (403 Forbidden, say)
//!   fails the targets in it, and only those; the cluster's other
//!   namespaces are planned and written. An unreachable cluster fails its
//!   targets only.
//! - **Drift**: when the live data no longer matches the fingerprint the
//!   object was written with, someone edited it: it is re-applied, and the
//!   keys that differ (never the values) are reported.
//! - **Prune**: objects of this instance for this env that no target names
//!   any more are deleted — only in namespaces the config still targets,
//!   never in a pass where any source failed, never another instance's or
//!   unlabelled objects, and never more than one and more than
//!   `max_prune_share` of our objects in a cluster without
//!   `--allow-mass-prune`. The DELETE carries the observed `uid` and
//!   `resourceVersion` as preconditions: an object replaced or changed
//!   since is kept. An object already being deleted (held by a finalizer,
//!   `deletionTimestamp` set) is not deleted again; at a target's address it
//!   fails the target until it is gone.
//! - **Rollouts**: `restart` workloads get the pod template annotation
//!   `cfgsync.io/config-hash` patched only when the object's content really
//!   changed, so a no-op pass restarts nothing.
//! - **Size**: the API server limits the values of a Secret's or
//!   ConfigMap's data (decoded, keys not counted) to 1 MiB, and a request
//!   body to 3 MiB; objects over either are refused before any request.
//! - **Proxies**, as kubectl: a cluster's `proxy-url` in the kubeconfig
//!   (http, https or socks5); else `HTTPS_PROXY` (https servers) or
//!   `HTTP_PROXY` (http servers), never for `localhost` or a loopback
//!   address nor for a host `NO_PROXY` names ([`client::env_proxy`]).

pub mod cache;
pub mod client;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::{info, warn};

pub use cache::{ObjectCache, ScopeKey};
pub use client::KubeClients;
pub use spec::{KubeTarget, ObjectAddress, ObjectKind, Restart};

use super::registry::{Kind, Problems, Setup, SpecInput};
use super::{Applied, Claim, Ctx, DestPlan, KindError, Target, TargetError};
use crate::fingerprint::EnvFingerprinter;
use crate::plan::{self, Action, Change, Planned, Slot};
use crate::render::{Rendered, Use};
use crate::secret::Content;

/// The field manager every instance shared before managers were per
/// instance; found on an object, it is released (see the module doc).
pub const LEGACY_FIELD_MANAGER: &str = "cfgsync";
/// Set by a person on an object cfgsync did not make: this instance may
/// take it over.
pub const ANNOTATION_ADOPT: &str = "cfgsync.io/adopt";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_OUTPUT: &str = "cfgsync.io/output";
pub const LABEL_ENV: &str = "cfgsync.io/env";
/// Which config wrote it: prune only ever touches its own instance's objects.
pub const LABEL_INSTANCE: &str = "cfgsync.io/instance";
pub const ANNOTATION_FINGERPRINT: &str = "cfgsync.io/fingerprint";
pub const ANNOTATION_REVISION: &str = "cfgsync.io/revision";
/// Set on a workload's pod template to roll it.
pub const ANNOTATION_CONFIG_HASH: &str = "cfgsync.io/config-hash";
/// The API server's limit on the values of a Secret's or ConfigMap's data
/// (`MaxSecretSize`; decoded values, keys not counted).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
/// How many reads (LIST or GET of one namespace and kind) a pass has in
/// flight per cluster. Each is a connection of the context's client,
/// which keeps it idle in its pool afterwards (kube's client evicts none),
/// and each holds a LIST body while it is decoded: unbounded, a pass that
/// LISTs (the service's first, one-shot commands) at fleet-3000 opened 600
/// connections per cluster at once and kept them for good.
pub const READS_PER_CLUSTER: usize = 32;
/// The API server's limit on a request body (`MaxRequestBodyBytes`).
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// The field manager of an instance: `cfgsync/<instance>` (an instance is
/// a label value, at most 63 characters; managers may have 128).
pub fn field_manager(instance: &str) -> String {
    format!("{LEGACY_FIELD_MANAGER}/{instance}")
}

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
    #[error("{kind} {namespace}/{name} would be {size} bytes of {what}, over the {limit} the API server accepts")]
    TooLarge { kind: ObjectKind, namespace: String, name: String, size: usize, what: &'static str, limit: &'static str },
    #[error(
        "output {output:?} read secret {secret:?} and cannot be written to ConfigMap {namespace}/{name} (context {context:?}): use kind = \"kubernetes-secret\""
    )]
    TaintedConfigMap { output: String, secret: String, context: String, namespace: String, name: String },
    #[error(
        "output {output:?} reads secrets but the env's fingerprint key is missing from the secrets source: run `cfgsync policy apply` to create it (or set [fingerprint] key = \"<secret path>#<field>\"){detail}"
    )]
    NoFingerprintKey { output: String, detail: String },
    /// Another cfgsync instance's object at a target's address.
    #[error("{address}: {what} is owned by cfgsync instance {owner:?}, not this one ({ours:?}); not written")]
    OtherInstance { address: String, what: String, owner: String, ours: String },
    /// An object cfgsync did not make at a target's address. `reason`
    /// names it and says how to hand it over.
    #[error("{reason}")]
    Foreign { address: String, reason: String },
    /// A write refused because the object changed, or appeared, since the
    /// pass read it (`409`): the next pass plans it again.
    #[error("context {context:?}: applying {kind} {namespace}/{name}: {cause}")]
    Conflict { context: String, namespace: String, name: String, kind: ObjectKind, cause: String },
    /// A prune refused by its preconditions (`409`): the object was
    /// replaced or changed since the pass read it, and is kept.
    #[error("{address}: not deleted: it changed since cfgsync wrote it")]
    PruneConflict { address: String },
    /// The object at a target's address is being deleted (held by its
    /// finalizers): not written, created again once it is gone.
    #[error(
        "{address}: it is being deleted (finalizers: {finalizers}); not written: it is created again once it is gone"
    )]
    BeingDeleted { address: String, finalizers: String },
    /// A write that left keys other than the source says: another field
    /// manager owns them (server-side apply does not take them over).
    #[error("{address}: written, but keys {keys} still differ from the source: another field manager keeps them")]
    FieldsKept { address: String, keys: String },
}

impl KindError for KubeError {
    fn code(&self) -> &'static str {
        match self {
            KubeError::Kubeconfig(_) => "kubeconfig_invalid",
            KubeError::Client { .. } => "kube_client_failed",
            KubeError::List { .. } => "kube_list_failed",
            KubeError::Apply { .. } => "kube_apply_failed",
            KubeError::Delete { .. } => "kube_delete_failed",
            KubeError::Restart { .. } => "kube_restart_failed",
            KubeError::TooLarge { .. } => "object_too_large",
            KubeError::TaintedConfigMap { .. } => "secret_to_configmap",
            KubeError::NoFingerprintKey { .. } => "no_fingerprint_key",
            KubeError::OtherInstance { .. } => "owned_by_other_instance",
            KubeError::Foreign { .. } => "foreign_object",
            KubeError::Conflict { .. } => "write_conflict",
            KubeError::PruneConflict { .. } => "prune_precondition_failed",
            KubeError::BeingDeleted { .. } => "object_being_deleted",
            KubeError::FieldsKept { .. } => "fields_kept_by_other_manager",
        }
    }

    fn duplicate(&self) -> Box<dyn KindError> {
        Box::new(self.clone())
    }
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
    /// Secret data (secret content), or a ConfigMap's `data` and
    /// `binaryData` together (plain).
    pub data: BTreeMap<String, Content>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// A Secret's `type`.
    pub type_: Option<String>,
    /// Preconditions of a delete or apply: exactly this object, as seen.
    pub uid: String,
    pub resource_version: String,
    /// `deletionTimestamp` is set: held by `finalizers` until they are done.
    pub deleting: bool,
    pub finalizers: Vec<String>,
    /// The old shared field manager `cfgsync` still holds fields.
    pub legacy_manager: bool,
}

/// What one cluster holds for a pass: the objects read, and the namespaces
/// that could not be read (their targets fail; the others go on).
#[derive(Debug, Default)]
pub struct Observed {
    pub objects: Vec<LiveObject>,
    pub failed: BTreeMap<String, KubeError>,
}

/// Who an object at a target's address belongs to.
#[derive(Debug, PartialEq, Eq)]
enum Ownership<'a> {
    /// Written by this instance (or by cfgsync before instances existed,
    /// for the same output).
    Ours,
    /// Annotated `cfgsync.io/adopt: <this instance>`: taken over now.
    Adopt,
    /// Another cfgsync instance's.
    Instance(&'a str),
    /// Made by someone else (its `managed-by`, if any).
    Foreign(Option<&'a str>),
}

fn ownership<'a>(live: &'a LiveObject, instance: &str, output: &str) -> Ownership<'a> {
    if live.annotations.get(ANNOTATION_ADOPT).map(String::as_str) == Some(instance) {
        let ours = live.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(instance);
        return if ours { Ownership::Ours } else { Ownership::Adopt };
    }
    let managed_by = live.labels.get(LABEL_MANAGED_BY).map(String::as_str);
    if managed_by != Some("cfgsync") {
        return Ownership::Foreign(managed_by);
    }
    match live.labels.get(LABEL_INSTANCE) {
        Some(owner) if owner == instance => Ownership::Ours,
        Some(owner) => Ownership::Instance(owner),
        None if live.labels.get(LABEL_OUTPUT).map(String::as_str) == Some(output) => Ownership::Ours,
        None => Ownership::Foreign(managed_by),
    }
}

/// The refusal for an object cfgsync did not make, saying how to hand it over.
fn not_ours(live: &LiveObject, context: &str, instance: &str) -> TargetError {
    let address = describe(live.kind, context, &live.namespace, &live.name);
    let managed_by = match live.labels.get(LABEL_MANAGED_BY) {
        Some(m) => format!("{LABEL_MANAGED_BY}: {m}"),
        None => "no app.kubernetes.io/managed-by label".to_owned(),
    };
    let context_flag = if context.is_empty() { String::new() } else { format!("--context {context} ") };
    let resource = match live.kind {
        ObjectKind::Secret => "secret",
        ObjectKind::ConfigMap => "configmap",
    };
    KubeError::Foreign {
        address: address.clone(),
        reason: format!(
            "{address} exists and was not made by cfgsync ({managed_by}); not written. To hand it to instance {instance:?}: kubectl {context_flag}-n {} annotate {resource} {} {ANNOTATION_ADOPT}={instance} (the next pass then takes it over, with its data)",
            live.namespace, live.name
        ),
    }
    .into()
}

/// The keys whose content differs between `desired` and `live` (extra live
/// keys included).
pub fn differing_keys(desired: &DesiredObject, live: &LiveObject) -> Vec<String> {
    plan::changed_entries(desired.data.iter().map(|(k, v)| (k, v.expose())), &live.data)
}

/// What apply does for one object.
#[derive(Debug)]
pub enum Op {
    /// Create `desired` (POST); roll its workloads.
    Create { desired: Box<DesiredObject> },
    /// Server-side apply `desired` over the object observed at
    /// `resource_version`, then make it converge; roll its workloads when
    /// the content changed.
    Apply { desired: Box<DesiredObject>, restart: bool, resource_version: String, release_legacy: bool },
    /// Delete exactly this object (its uid and resourceVersion).
    Delete(Box<LiveObject>),
    /// Nothing to do.
    Keep,
}

/// How an object is shown: `Secret api/web in context prod`.
pub fn describe(kind: ObjectKind, context: &str, namespace: &str, name: &str) -> String {
    let context = if context.is_empty() { "the current context".to_owned() } else { format!("context {context}") };
    format!("{kind} {namespace}/{name} in {context}")
}

/// Decides the change for one desired object given what is live.
pub fn plan_object(desired: &DesiredObject, live: Option<&LiveObject>, fp: &EnvFingerprinter) -> (Change, bool) {
    let (mut change, content_changed) = decide(desired, live, fp);
    change.content_hash = plan::content_hash(&[desired.fingerprint.as_bytes()]);
    (change, content_changed)
}

fn decide(desired: &DesiredObject, live: Option<&LiveObject>, fp: &EnvFingerprinter) -> (Change, bool) {
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
    let differing = differing_keys(desired, live);
    let recorded = live.annotations.get(ANNOTATION_FINGERPRINT);
    if !differing.is_empty() {
        // Content differs. If the live content is not what we last wrote,
        // someone edited it: drift. Otherwise the source changed: update.
        let live_fp = fp.fingerprint(live.data.iter().map(|(k, v)| (k, v.expose())), desired.tainted);
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
    } else if live.legacy_manager {
        change.action = Action::Update;
        change.notes.push(format!("field manager {LEGACY_FIELD_MANAGER} → {}", field_manager(&desired.instance)));
    }
    (change, false)
}

/// The kind: Secrets and ConfigMaps, one destination per cluster.
pub struct KubeKind {
    pub clients: KubeClients,
    /// What the service's watches keep of each scope they watch; a pass
    /// reads a synced scope here instead of LISTing it ([`cache`]).
    pub cache: Arc<ObjectCache>,
}

impl KubeKind {
    pub fn new(clients: KubeClients) -> Self {
        Self { clients, cache: Arc::default() }
    }
}

impl KubeKind {
    /// [`Target::held`]: the live object's data fingerprinted as the
    /// `cfgsync.io/fingerprint` annotation is (so a hand edit shows).
    fn held_object(item: &DesiredObject, observed: &Observed, ctx: &Ctx<'_>) -> super::HeldItem {
        let a = &item.address;
        let held = match observed
            .objects
            .iter()
            .find(|o| o.kind == item.kind && o.namespace == a.namespace && o.name == a.name)
        {
            Some(live) => match ctx.keyed.fingerprint(live.data.iter().map(|(k, v)| (k, v.expose())), item.tainted) {
                Some(f) => super::Held::Read(f),
                None => super::Held::Unknown("no fingerprint key for secret content".to_owned()),
            },
            None => match observed.failed.get(&a.namespace) {
                Some(e) => super::Held::Unknown(e.to_string()),
                None => super::Held::Absent,
            },
        };
        super::HeldItem {
            item: describe(item.kind, &a.context, &a.namespace, &a.name),
            wanted: item.fingerprint.clone(),
            held,
        }
    }
}

impl Kind for KubeKind {
    type Raw = spec::RawKubeTarget;
    const SHARED: bool = true;
    const KEYED: bool = true;

    fn build(tag: &str, raw: spec::RawKubeTarget, input: &SpecInput<'_>) -> Result<KubeTarget, Problems> {
        let object = if tag == ObjectKind::ConfigMap.kind_name() { ObjectKind::ConfigMap } else { ObjectKind::Secret };
        spec::build(object, raw, input)
    }

    fn new(setup: &Setup<'_>) -> Self {
        let kubeconfig = setup.kubeconfig.clone().or_else(|| setup.config.kubernetes.kubeconfig.clone());
        KubeKind::new(KubeClients::new(kubeconfig))
    }

    fn kind_name(spec: &KubeTarget) -> &'static str {
        spec.object.kind_name()
    }

    fn address(spec: &KubeTarget, env: &str) -> String {
        let a = &spec.addresses[env];
        describe(spec.object, &a.context, &a.namespace, &a.name)
    }

    /// A ConfigMap is readable by whoever may read the namespace's
    /// configuration: an output that reads a secret goes to a Secret.
    fn secret_problem(spec: &KubeTarget, output: &str, secret: &str) -> Option<String> {
        (spec.object == ObjectKind::ConfigMap).then(|| {
            let addresses: Vec<String> =
                spec.addresses.values().map(|a| format!("{}/{} in context {:?}", a.namespace, a.name, a.context)).collect();
            format!(
                "output {output:?} reads secret {secret:?} and cannot go to a ConfigMap ({}): use kind = \"kubernetes-secret\"",
                addresses.join(", ")
            )
        })
    }
}

impl Target for KubeKind {
    type Spec = KubeTarget;
    /// The kubeconfig context.
    type Dest = String;
    /// (namespace, kind, name): one LIST per namespace and kind, one GET
    /// per name the LIST did not return.
    type Scope = BTreeSet<(String, ObjectKind, String)>;
    type Item = DesiredObject;
    type Observed = Observed;
    type Op = Op;

    // One LIST per namespace and kind, known from the config alone.
    const OBSERVE_BEFORE_RENDER: bool = true;

    fn locate(&self, spec: &KubeTarget, _: Option<&[DesiredObject]>, ctx: &Ctx<'_>, scope: &mut Self::Scope) -> String {
        let a = &spec.addresses[ctx.env];
        scope.insert((a.namespace.clone(), spec.object, a.name.clone()));
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

    async fn observe(&self, context: &String, scope: &Self::Scope, ctx: &Ctx<'_>) -> Result<Observed, TargetError> {
        let client = self.clients.client(context).await?;
        let mut by_list: BTreeMap<(&str, ObjectKind), BTreeSet<String>> = BTreeMap::new();
        for (namespace, kind, name) in scope {
            by_list.entry((namespace.as_str(), *kind)).or_default().insert(name.clone());
        }
        let reads: Vec<_> = by_list
            .iter()
            .map(|((namespace, kind), names)| {
                let client = &client;
                let key = ScopeKey {
                    env: ctx.env.to_owned(),
                    context: context.clone(),
                    namespace: (*namespace).to_owned(),
                    kind: *kind,
                };
                let cached = self.cache.read(&key);
                async move {
                    let read = match cached {
                        Some(listed) => client::get_missing(client, context, namespace, *kind, listed, names).await,
                        None => client::observe_namespace(client, context, namespace, *kind, ctx.env, names).await,
                    };
                    (*namespace, read)
                }
            })
            .collect();
        let mut observed = Observed::default();
        let reads: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
            futures_util::stream::iter(reads),
            READS_PER_CLUSTER,
        ))
        .await;
        for (namespace, result) in reads {
            match result {
                Ok(objects) => observed.objects.extend(objects),
                Err(e) => {
                    warn!(context = %context, namespace, error = %e, "namespace cannot be read; its targets are not touched");
                    observed.failed.entry(namespace.to_owned()).or_insert(e);
                }
            }
        }
        // Nothing could be read: the cluster itself is the problem.
        let namespaces: BTreeSet<&str> = by_list.keys().map(|(ns, _)| *ns).collect();
        if !namespaces.is_empty()
            && namespaces.len() == observed.failed.len()
            && let Some(e) = observed.failed.values().next()
        {
            return Err(e.clone().into());
        }
        Ok(observed)
    }

    fn plan(
        &self,
        context: &String,
        claims: Vec<Claim<'_, KubeTarget, DesiredObject>>,
        observed: &Observed,
        ctx: &Ctx<'_>,
    ) -> DestPlan<Op> {
        let mut plan = DestPlan::default();
        let live = &observed.objects;
        let by_address: std::collections::HashMap<(ObjectKind, &str, &str), &LiveObject> =
            live.iter().map(|l| ((l.kind, l.namespace.as_str(), l.name.as_str()), l)).collect();
        let find = |kind: ObjectKind, namespace: &str, name: &str| by_address.get(&(kind, namespace, name)).copied();
        let mut claimed: BTreeSet<(ObjectKind, &str, &str)> = BTreeSet::new();
        for claim in &claims {
            let a = &claim.spec.addresses[ctx.env];
            claimed.insert((claim.spec.object, a.namespace.as_str(), a.name.as_str()));
            let Some(items) = &claim.items else { continue };
            if let Some(e) = observed.failed.get(&a.namespace) {
                plan.errors.push((claim.slot, e.clone().into()));
                continue;
            }
            for desired in items {
                let current = find(desired.kind, &desired.address.namespace, &desired.address.name);
                match plan_one(desired, current, context, ctx) {
                    Ok(planned) => plan.changes.push(Planned { slot: claim.slot, change: planned.0, op: planned.1 }),
                    Err(e) => plan.errors.push((claim.slot, e)),
                }
            }
        }
        if !ctx.prune {
            return plan;
        }
        // Only objects this instance wrote for this env; never one another
        // instance or a person owns, never one a target still names
        // (rendered or not), never one already being deleted.
        let ours: Vec<&LiveObject> = live
            .iter()
            .filter(|o| {
                o.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(ctx.instance)
                    && o.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some("cfgsync")
                    && o.labels.get(LABEL_ENV).map(String::as_str) == Some(ctx.env)
                    && !o.deleting
            })
            .collect();
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
                Planned { slot: Slot::Prune, change, op: Op::Delete(Box::new((*o).clone())) }
            })
            .collect();
        let max = ctx.config.kubernetes.max_prune_share;
        plan.add_prunes(prunes, ours.len(), max, ctx.allow_mass_prune, || format!("context {context:?}"));
        plan
    }

    fn held(&self, item: &DesiredObject, observed: &Observed, ctx: &Ctx<'_>) -> super::HeldItem {
        Self::held_object(item, observed, ctx)
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
        let (deletes, writes): (Vec<_>, Vec<_>) = changes.into_iter().partition(|p| matches!(p.op, Op::Delete(_)));
        for p in writes.into_iter().chain(deletes) {
            let result = match &p.op {
                Op::Keep => Ok(()),
                Op::Create { desired } => {
                    self.write_object(&client, ctx.env, desired, None, true).await.map_err(TargetError::from)
                }
                Op::Apply { desired, restart, resource_version, release_legacy } => {
                    if p.change.action == Action::Drift {
                        warn!(context = %context, kind = %desired.kind, namespace = %desired.address.namespace, name = %desired.address.name,
                            keys = %p.change.entries.join(","), "drift: object edited in the cluster; restoring");
                    }
                    let over = Some((resource_version, *release_legacy));
                    self.write_object(&client, ctx.env, desired, over, *restart).await.map_err(TargetError::from)
                }
                Op::Delete(o) => {
                    let r = client::delete(&client, context, o).await;
                    if r.is_ok() {
                        self.cache.deleted(ctx.env, context, o);
                        info!(context = %context, env = ctx.env, kind = %o.kind, namespace = %o.namespace, name = %o.name, "pruned");
                    }
                    r
                }
            };
            out.push(Applied { slot: p.slot, change: p.change, result, reloaded: false });
        }
        out
    }
}

/// The change and the operation for one desired object, given what is at
/// its address; an error when the object there is not this instance's to
/// write.
fn plan_one(
    desired: &DesiredObject,
    current: Option<&LiveObject>,
    context: &str,
    ctx: &Ctx<'_>,
) -> Result<(Change, Op), TargetError> {
    let Some(live) = current else {
        let (change, _) = plan_object(desired, None, ctx.keyed);
        return Ok((change, Op::Create { desired: Box::new(desired.clone()) }));
    };
    let address = describe(desired.kind, context, &desired.address.namespace, &desired.address.name);
    let adopt = match ownership(live, ctx.instance, &desired.output) {
        Ownership::Instance(owner) => {
            return Err(KubeError::OtherInstance {
                address,
                what: desired.kind.to_string(),
                owner: owner.to_owned(),
                ours: ctx.instance.to_owned(),
            }
            .into());
        }
        Ownership::Foreign(_) => return Err(not_ours(live, context, ctx.instance)),
        Ownership::Adopt => true,
        Ownership::Ours => false,
    };
    if live.deleting {
        return Err(KubeError::BeingDeleted { address, finalizers: live.finalizers.join(", ") }.into());
    }
    let (mut change, content_changed) = plan_object(desired, Some(live), ctx.keyed);
    if adopt {
        let from =
            live.labels.get(LABEL_MANAGED_BY).map_or("no managed-by label".to_owned(), |m| format!("managed by {m}"));
        change.notes.push(format!("adopt: annotated {ANNOTATION_ADOPT}={} ({from})", ctx.instance));
        if change.action == Action::Unchanged {
            change.action = Action::Update;
        }
    }
    let op = if change.action.writes() {
        Op::Apply {
            desired: Box::new(desired.clone()),
            restart: content_changed,
            resource_version: live.resource_version.clone(),
            release_legacy: live.legacy_manager,
        }
    } else {
        Op::Keep
    };
    Ok((change, op))
}

impl KubeKind {
    /// Writes one object — a create, or an apply over the version observed —
    /// and rolls its workloads when its content changed. A write that leaves
    /// keys other than the source says is a failure, never a success. What
    /// the server answered goes into the watch's store at once, so the next
    /// pass plans from it ([`cache`]).
    async fn write_object(
        &self,
        client: &kube::Client,
        env: &str,
        desired: &DesiredObject,
        over: Option<(&String, bool)>,
        restart: bool,
    ) -> Result<(), KubeError> {
        let a = &desired.address;
        match over {
            None => self.cache.wrote(env, &a.context, &client::create(client, desired).await?),
            Some((resource_version, release_legacy)) => {
                let (live, left) = client::apply(client, desired, resource_version, release_legacy).await?;
                self.cache.wrote(env, &a.context, &live);
                if !left.is_empty() {
                    let address = describe(desired.kind, &a.context, &a.namespace, &a.name);
                    return Err(KubeError::FieldsKept { address, keys: left.join(", ") });
                }
            }
        }
        info!(context = %a.context, kind = %desired.kind, namespace = %a.namespace, name = %a.name, "object written");
        if restart {
            for r in &desired.restart {
                client::restart(client, desired, r).await?;
                info!(context = %a.context, namespace = %a.namespace, workload = %r.kind, name = %r.name, "workload restarted");
            }
        }
        Ok(())
    }
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

/// Refuses an object the API server would refuse for its size, before any
/// request: over 1 MiB of values (decoded, keys not counted, as
/// `ValidateSecret` and `ValidateConfigMap` count), or a request body over
/// 3 MiB (a ConfigMap of control characters escapes to 6 bytes each).
pub fn check_size(d: &DesiredObject) -> Result<(), KubeError> {
    let too_large = |size, what, limit| KubeError::TooLarge {
        kind: d.kind,
        namespace: d.address.namespace.clone(),
        name: d.address.name.clone(),
        size,
        what,
        limit,
    };
    let values: usize = d.data.values().map(Content::len).sum();
    if values > MAX_DATA_BYTES {
        return Err(too_large(values, "data", "1 MiB (1048576 bytes) of values"));
    }
    if size_bound(d) <= MAX_REQUEST_BYTES {
        return Ok(());
    }
    let size = serde_json::to_vec(&manifest(d)).map_or(usize::MAX, |v| v.len());
    if size > MAX_REQUEST_BYTES {
        return Err(too_large(size, "request", "3 MiB request limit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    fn desired(data: &[(&str, &str)], tainted: bool, fp: &EnvFingerprinter) -> DesiredObject {
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
            data: d
                .data
                .iter()
                .map(|(k, v)| (k.clone(), Content::new(v.expose(), d.kind == ObjectKind::Secret)))
                .collect(),
            labels: serde_json::from_value(m["metadata"]["labels"].clone()).unwrap(),
            annotations: serde_json::from_value(m["metadata"]["annotations"].clone()).unwrap(),
            type_: d.secret_type_or_default(),
            uid: "uid-1".into(),
            resource_version: "7".into(),
            deleting: false,
            finalizers: Vec::new(),
            legacy_manager: false,
        }
    }

    #[test]
    fn fingerprints_are_keyed_for_secrets() {
        let pw = "PW".to_string();
        let data = || [(&pw, &b"CANARY-x"[..])];
        let none = EnvFingerprinter::new(None);
        assert!(none.fingerprint(data(), true).is_none(), "no key, no fingerprint for secret content");
        let plain = none.fingerprint(data(), false).unwrap();
        assert!(plain.starts_with("sha256:"));
        let k1 = EnvFingerprinter::new(Some(SecretString::new("k1"))).fingerprint(data(), true).unwrap();
        let k2 = EnvFingerprinter::new(Some(SecretString::new("k2"))).fingerprint(data(), true).unwrap();
        assert!(k1.starts_with("hmac-sha256:"));
        assert_ne!(k1, k2);
        assert_ne!(k1.trim_start_matches("hmac-"), plain, "not the plain hash");
        // Key/value boundaries matter.
        let (ab, a) = ("AB".to_string(), "A".to_string());
        assert_ne!(none.fingerprint([(&ab, &b"C"[..])], false), none.fingerprint([(&a, &b"BC"[..])], false));
    }

    #[test]
    fn create_unchanged_update_drift() {
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
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
        edited.data.insert("A".into(), Content::secret("hand"));
        edited.data.insert("C".into(), Content::secret("x"));
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
    fn ownership_is_by_instance_label_or_explicit_adoption() {
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
        let ours = live_of(&desired(&[("A", "1")], true, &fp));
        assert_eq!(ownership(&ours, "team-a", "api"), Ownership::Ours);
        assert_eq!(ownership(&ours, "team-b", "api"), Ownership::Instance("team-a"));
        // Before instances: ours only for the same output.
        let mut legacy = ours.clone();
        legacy.labels.remove(LABEL_INSTANCE);
        assert_eq!(ownership(&legacy, "team-a", "api"), Ownership::Ours);
        assert_eq!(ownership(&legacy, "team-a", "web"), Ownership::Foreign(Some("cfgsync")));
        // Someone else's, whatever else it says, until annotated for us.
        let mut helm = ours.clone();
        helm.labels = [(LABEL_MANAGED_BY.to_owned(), "Helm".to_owned())].into();
        assert_eq!(ownership(&helm, "team-a", "api"), Ownership::Foreign(Some("Helm")));
        helm.annotations.insert(ANNOTATION_ADOPT.into(), "team-b".into());
        assert_eq!(ownership(&helm, "team-a", "api"), Ownership::Foreign(Some("Helm")));
        helm.annotations.insert(ANNOTATION_ADOPT.into(), "team-a".into());
        assert_eq!(ownership(&helm, "team-a", "api"), Ownership::Adopt);
        let refusal = not_ours(&ours_with(&helm, &[]), "prod", "team-a").to_string();
        assert!(
            refusal.ends_with("kubectl --context prod -n api annotate secret api cfgsync.io/adopt=team-a (the next pass then takes it over, with its data)"),
            "{refusal}"
        );
    }

    /// Each refusal and conflict has its own code (they were reported as
    /// `unsafe_path`, `kube_apply_failed` and `prune_modified`; an object
    /// being deleted as `kube_apply_failed`).
    #[tokio::test]
    async fn refusals_and_conflicts_have_their_own_codes() {
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
        let d = desired(&[("A", "1")], true, &fp);
        let mut helm = live_of(&d);
        helm.labels = [(LABEL_MANAGED_BY.to_owned(), "Helm".to_owned())].into();
        assert_eq!(not_ours(&helm, "prod", "team-a").code(), "foreign_object");
        let config_text = |instance: &str| {
            format!(
                "instance = \"{instance}\"\n[files]\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nA = \"1\"\n[[output.target]]\nkind = \"file\"\npath = \"a.env\"\n"
            )
        };
        let config = crate::config::parse(
            std::path::Path::new("/cfg/cfgsync.toml"),
            &config_text("team-b"),
            &BTreeMap::<String, String>::new(),
        )
        .unwrap();
        let other = plan_one(&d, Some(&live_of(&d)), "prod", &Ctx::new(&config, "prod", &fp)).err().unwrap();
        assert_eq!(other.code(), "owned_by_other_instance");
        let config = crate::config::parse(
            std::path::Path::new("/cfg/cfgsync.toml"),
            &config_text("team-a"),
            &BTreeMap::<String, String>::new(),
        )
        .unwrap();
        let mut held = live_of(&d);
        (held.deleting, held.finalizers) = (true, vec!["example.com/hold".into()]);
        let deleting = plan_one(&d, Some(&held), "prod", &Ctx::new(&config, "prod", &fp)).err().unwrap();
        assert_eq!(deleting.code(), "object_being_deleted", "{deleting}");
        assert!(deleting.to_string().contains("finalizers: example.com/hold"), "{deleting}");

        let emulator = kube_emulator::Emulator::start("prod");
        let dir = tempfile::tempdir().unwrap();
        emulator.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        let client = KubeClients::new(Some(dir.path().join("kubeconfig"))).client("prod").await.unwrap();
        emulator.create_namespace("api");
        client::create(&client, &d).await.unwrap();
        let again = TargetError::from(client::create(&client, &d).await.unwrap_err());
        assert_eq!(again.code(), "write_conflict", "{again}");
        let stale = TargetError::from(client::apply(&client, &d, "1", false).await.unwrap_err());
        assert_eq!(stale.code(), "write_conflict", "{stale}");
        let mut seen = live_of(&d);
        (seen.uid, seen.resource_version) = ("not-the-uid".into(), "1".into());
        let kept = client::delete(&client, "prod", &seen).await.unwrap_err();
        assert_eq!(kept.code(), "prune_precondition_failed", "{kept}");
        assert!(emulator.get_object(kube_emulator::Kind::Secret, "api", "api").is_some());
    }

    /// A pass reads a synced store instead of LISTing, and what its own
    /// writes answered is in the store at once: with a watch that has not
    /// delivered (here: never delivers) their events, the next pass plans
    /// nothing, where planning from the store as the watch left it would
    /// create again (409) and apply over a stale version (409).
    #[tokio::test]
    async fn passes_read_the_store_and_their_own_writes_are_in_it_at_once() {
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
        let emulator = kube_emulator::Emulator::start("prod");
        emulator.create_namespace("api");
        let dir = tempfile::tempdir().unwrap();
        emulator.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        let config_text = "instance = \"team-a\"\n[files]\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nA = \"1\"\n[[output.target]]\nkind = \"file\"\npath = \"a.env\"\n";
        let config = crate::config::parse(
            std::path::Path::new("/cfg/cfgsync.toml"),
            config_text,
            &BTreeMap::<String, String>::new(),
        )
        .unwrap();
        let ctx = Ctx::new(&config, "prod", &fp);
        let kind = KubeKind::new(KubeClients::new(Some(dir.path().join("kubeconfig"))));
        let key =
            ScopeKey { env: "prod".into(), context: "prod".into(), namespace: "api".into(), kind: ObjectKind::Secret };
        let store = kind.cache.fill(key);
        store.listed(&[], Some(&emulator.resource_version().to_string()));
        store.synced(true);
        let context = "prod".to_owned();
        let scope = BTreeSet::from([("api".to_owned(), ObjectKind::Secret, "api".to_owned())]);
        let pass = |mut d: DesiredObject| {
            d.restart.clear();
            let (kind, ctx, scope, context) = (&kind, &ctx, &scope, &context);
            async move {
                let observed = kind.observe(context, scope, ctx).await.unwrap();
                let live = observed.objects.iter().find(|o| o.name == "api");
                let (change, op) = plan_one(&d, live, context, ctx).unwrap();
                let action = change.action;
                let planned = Planned { slot: Slot::Prune, change, op };
                for applied in kind.apply(context, vec![planned], ctx).await {
                    applied.result.unwrap();
                }
                action
            }
        };
        assert_eq!(pass(desired(&[("A", "1")], true, &fp)).await, Action::Create);
        assert_eq!(pass(desired(&[("A", "1")], true, &fp)).await, Action::Unchanged);
        assert_eq!(pass(desired(&[("A", "2")], true, &fp)).await, Action::Update);
        assert_eq!(pass(desired(&[("A", "2")], true, &fp)).await, Action::Unchanged);
        let requests = emulator.requests();
        assert_eq!(requests.verb(kube_emulator::Verb::List), 0, "{requests}");
        assert_eq!(requests.verb(kube_emulator::Verb::Get), 1, "the name before it existed: {requests}");
        assert_eq!(requests.writes(), 2, "{requests}");
        // A prune is in the store at once too.
        let live = kind.cache.read(&ScopeKey {
            env: "prod".into(),
            context: "prod".into(),
            namespace: "api".into(),
            kind: ObjectKind::Secret,
        });
        let live = live.unwrap().pop().unwrap();
        let prune = Planned {
            slot: Slot::Prune,
            change: Change::new("Secret", "api".into(), Action::Delete, false),
            op: Op::Delete(Box::new(live)),
        };
        kind.apply(&context, vec![prune], &ctx).await.pop().unwrap().result.unwrap();
        let observed = kind.observe(&context, &BTreeSet::new(), &ctx).await.unwrap();
        assert!(observed.objects.is_empty());
        assert!(kind.observe(&context, &scope, &ctx).await.unwrap().objects.is_empty(), "gone (one GET)");
        assert_eq!(emulator.requests().verb(kube_emulator::Verb::List), 0);
    }

    fn ours_with(l: &LiveObject, labels: &[(&str, &str)]) -> LiveObject {
        let mut l = l.clone();
        l.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l
    }

    #[test]
    fn the_old_shared_field_manager_is_one_write_without_a_restart() {
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
        let d = desired(&[("A", "1")], true, &fp);
        let mut live = live_of(&d);
        live.legacy_manager = true;
        let (c, content) = plan_object(&d, Some(&live), &fp);
        assert_eq!((c.action, content), (Action::Update, false));
        assert_eq!(c.notes, ["field manager cfgsync → cfgsync/team-a"]);
    }

    #[test]
    fn untainted_changes_show_values() {
        let fp = EnvFingerprinter::new(None);
        let d = desired(&[("HOST", "new")], false, &fp);
        let mut live = live_of(&desired(&[("HOST", "old")], false, &fp));
        live.data.values_mut().for_each(|v| *v = Content::plain(v.expose()));
        live.kind = d.kind;
        let (c, _) = plan_object(&d, Some(&live), &fp);
        assert_eq!(c.values, ["HOST: \"old\" → \"new\""]);
    }

    /// A Secret's data read back is secret, even when what replaces it is
    /// not (an output that stopped reading secrets): the old value is never
    /// shown in the plan.
    #[test]
    fn what_a_secret_held_is_not_shown_when_plain_content_replaces_it() {
        let fp = EnvFingerprinter::new(None);
        let d = desired(&[("PASSWORD", "literal")], false, &fp);
        let live = live_of(&desired(&[("PASSWORD", "CANARY-old-password")], false, &fp));
        assert!(live.data.values().all(Content::is_secret), "a Secret's data is read back as secret");
        let (c, _) = plan_object(&d, Some(&live), &fp);
        assert_eq!(c.entries, ["PASSWORD"]);
        assert!(c.values.is_empty(), "{:?}", c.values);
        assert!(!format!("{c:?}").contains("CANARY"), "{c:?}");
    }

    #[test]
    fn manifests_carry_ownership_and_base64_data() {
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
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
        // The API server counts decoded values, not base64 nor keys.
        let big = desired(&[("BIG", &"x".repeat(900 * 1024)), (&"K".repeat(200), &"y".repeat(124 * 1024))], true, &fp);
        assert!(check_size(&big).is_ok(), "exactly 1 MiB of values fits");
        let over = desired(&[("BIG", &"x".repeat(1024 * 1024 + 1))], true, &fp);
        assert!(matches!(check_size(&over), Err(KubeError::TooLarge { what: "data", .. })));
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
        let fp = EnvFingerprinter::new(Some(SecretString::new("key")));
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
        // Near the request limit the exact size decides: 300 KiB of control
        // bytes bound over 1.8 MiB and escape to 1.8 MiB: accepted; 600 KiB
        // escape to 3.6 MiB: over the 3 MiB request limit.
        for (kib, refused) in [(300, false), (600, true)] {
            let mut cm = desired(&[("C", &"\u{7}".repeat(kib * 1024))], false, &fp);
            cm.kind = ObjectKind::ConfigMap;
            assert_eq!(
                matches!(check_size(&cm), Err(KubeError::TooLarge { what: "request", .. })),
                refused,
                "{kib} KiB"
            );
        }
    }
}
