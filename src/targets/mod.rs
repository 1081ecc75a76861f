//! Targets: where rendered outputs go, behind one trait.
//!
//! A target kind ([`Target`]) is one implementation of four steps, batched
//! per destination (a directory, a cluster, a GitLab project, a GitHub
//! repository):
//!
//! 1. **desired** (pure): the items one configured target wants from a
//!    rendered output — files, objects, variables;
//! 2. **observe**: one cheap read of a destination (a directory listing, one
//!    LIST per namespace and kind, one paginated list of variables);
//! 3. **plan** (pure): desired vs observed → [`crate::plan::Change`]s,
//!    including drift and prune (only what this instance wrote, never a
//!    destination's other content);
//! 4. **apply**: executes exactly the plan, after the fence said this
//!    process may still write.
//!
//! `crate::reconcile` drives every kind the same way, so `plan`,
//! `--dry-run`, `reconcile`, `pull` and the service share one pipeline.
//! The kinds are listed once, in [`registry`]: a new kind is its folder,
//! one registry line, and its implementation of the contract suite in
//! `tests/integration/target_contract.rs`, which runs against every kind
//! (the checklist is in `docs/architecture.md`).
//!
//! Ownership: everything a kind writes carries the instance identity
//! (`instance` in the config); a kind prunes only what carries its own.

pub mod ci;
pub mod ci_dest;
pub mod ci_tls;
pub mod file;
pub mod github;
pub mod gitlab;
pub mod kubernetes;
pub mod registry;
pub mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::config::Config;
use crate::plan::{Change, Planned, Slot};
use crate::render::Rendered;
pub use registry::{Kind, Registered, SpecInput, TargetKind, Targets};

/// A failed observe, plan or apply. Names the target, never a value.
///
/// What only one kind can fail at is that kind's own error type, in its
/// folder ([`KindError`]: it names its code); the variants here are what
/// the pipeline itself refuses or what several kinds share.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A kind's own failure.
    #[error("{0}")]
    Kind(Box<dyn KindError>),
    #[error("encoding {path}: {source}")]
    Encode { path: String, source: Arc<crate::format::FormatError> },
    /// The service's fence was closed: this replica may not write the env.
    #[error("not written: {reason} (env {env})")]
    Fenced { env: String, reason: String },
    #[error(transparent)]
    MassPrune(#[from] crate::plan::MassPrune),
    /// A kind's record of what it wrote could not be read or saved.
    #[error("state {path}: {cause}")]
    State { path: String, cause: String },
}

/// A kind's own error type (`FileError`, `KubeError`, `CiError`): each
/// failure names its stable code, for `/readyz`, the status page and the
/// record in etcd (the text, which may name keys and paths, goes to the
/// log only). `Clone`-like: one failure of a destination is reported at
/// each of its targets.
pub trait KindError: std::error::Error + Send + Sync + 'static {
    /// `[a-z0-9_]+`, stable: scripts and alerts match on it.
    fn code(&self) -> &'static str;
    /// An equal error.
    fn duplicate(&self) -> Box<dyn KindError>;
}

impl<E: KindError> From<E> for TargetError {
    fn from(e: E) -> Self {
        TargetError::Kind(Box::new(e))
    }
}

impl TargetError {
    /// The stable code of this failure (see [`KindError::code`]).
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::Kind(e) => e.code(),
            TargetError::Encode { .. } => "encode_failed",
            TargetError::Fenced { .. } => "fenced",
            TargetError::MassPrune(_) => "mass_prune_refused",
            TargetError::State { .. } => "state_failed",
        }
    }

    /// An equal error, to report one failure of a destination at each of
    /// its targets.
    pub fn duplicate(&self) -> TargetError {
        match self {
            TargetError::Kind(e) => TargetError::Kind(e.duplicate()),
            TargetError::Encode { path, source } => TargetError::Encode { path: path.clone(), source: source.clone() },
            TargetError::Fenced { env, reason } => TargetError::Fenced { env: env.clone(), reason: reason.clone() },
            TargetError::MassPrune(e) => TargetError::MassPrune(e.clone()),
            TargetError::State { path, cause } => TargetError::State { path: path.clone(), cause: cause.clone() },
        }
    }
}

/// One destination's plan.
#[derive(Debug)]
pub struct DestPlan<Op> {
    pub changes: Vec<Planned<Op>>,
    /// Targets that cannot be planned (refused content, an object owned by
    /// another instance), and refused prunes (`Slot::Prune`).
    pub errors: Vec<(Slot, TargetError)>,
}

impl<Op> Default for DestPlan<Op> {
    fn default() -> Self {
        Self { changes: Vec::new(), errors: Vec::new() }
    }
}

impl<Op> DestPlan<Op> {
    pub fn needs_write(&self) -> bool {
        self.changes.iter().any(|c| c.change.action.writes())
    }

    /// Adds a destination's prunes, unless they are a mass prune
    /// ([`crate::plan::mass_prune`]: `total` is what this instance wrote at
    /// `dest`, `max` the share, `allow` is `--allow-mass-prune`): then the
    /// whole prune is refused with [`TargetError::MassPrune`] and nothing
    /// of it is planned. Every target kind prunes through this one rule.
    pub fn add_prunes(
        &mut self,
        prunes: Vec<Planned<Op>>,
        total: usize,
        max: f64,
        allow: bool,
        dest: impl FnOnce() -> String,
    ) {
        match crate::plan::mass_prune(prunes.len(), total, max, allow, dest) {
            Ok(()) => self.changes.extend(prunes),
            Err(e) => self.errors.push((Slot::Prune, e.into())),
        }
    }
}

/// Whether this process may still write an env's targets (the service's
/// leader election). Must be cheap: it is asked before every write batch.
pub trait Fence: Send + Sync + fmt::Debug {
    /// `Err(reason)` when the env's targets must not be written now.
    fn check(&self, env: &str) -> Result<(), String>;
}

/// What every step of one env's pass may know.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub env: &'a str,
    /// The snapshot's etcd revision (`None` for the file source).
    pub revision: Option<i64>,
    /// This config's identity on everything it writes.
    pub instance: &'a str,
    /// Keyed fingerprints of secret content, with the env's key.
    pub keyed: &'a crate::fingerprint::EnvFingerprinter,
    /// Per-run fingerprints to show which secret entries change (`pull`).
    pub shown: Option<&'a crate::fingerprint::RunFingerprinter>,
    /// Deleting what this instance wrote and no target claims any more is
    /// allowed: every env of the pass was read and every target planned.
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// Run `reload_cmd` after a change (not on a laptop unless asked).
    pub run_reload: bool,
}

impl<'a> Ctx<'a> {
    /// The one way to a context: `env` of `config`, keyed with `keyed`;
    /// no revision, nothing shown, no prune, no reload. A pass sets what
    /// it knows on top (`Ctx { prune, ..Ctx::new(…) }`).
    pub fn new(config: &'a Config, env: &'a str, keyed: &'a crate::fingerprint::EnvFingerprinter) -> Self {
        Ctx {
            config,
            env,
            revision: None,
            instance: &config.instance,
            keyed,
            shown: None,
            prune: false,
            allow_mass_prune: false,
            run_reload: false,
        }
    }
}

/// One configured target's share of a destination: what it wants
/// (`None` when its output did not render or its items could not be built:
/// then whatever it owns is kept as it is).
pub struct Claim<'s, S, I> {
    pub slot: Slot,
    pub spec: &'s S,
    pub items: Option<Vec<I>>,
}

/// The outcome of one applied change.
pub struct Applied {
    pub slot: Slot,
    pub change: Change,
    pub result: Result<(), TargetError>,
    /// The target's `reload_cmd` ran after this change.
    pub reloaded: bool,
}

impl Applied {
    /// Every change of a batch failed with one error (the destination's
    /// client or token could not be had): nothing was attempted.
    pub fn all_failed<Op>(changes: Vec<Planned<Op>>, error: impl Fn() -> TargetError) -> Vec<Applied> {
        changes
            .into_iter()
            .map(|p| Applied { slot: p.slot, change: p.change, result: Err(error()), reloaded: false })
            .collect()
    }
}

/// One kind of target.
pub trait Target: Sync {
    /// The configuration of one target of this kind.
    type Spec: Sync;
    /// A destination: observed with one read, written as one batch.
    type Dest: Clone + Ord + Send + Sync + fmt::Display;
    /// What to observe at a destination, gathered from the config.
    type Scope: Default + Send + Sync + Merge;
    /// One thing a target wants: a file, an object, a variable.
    type Item: Send + Sync;
    /// What a destination holds.
    type Observed: Send + Sync;
    /// What apply does for one planned change.
    type Op: Send + Sync;

    /// True when [`Target::locate`] ignores the items and
    /// [`Target::observe`] uses nothing of the context but the config, the
    /// env and the instance: a pass then reads such destinations while the
    /// sources are being read, not after rendering.
    const OBSERVE_BEFORE_RENDER: bool = false;

    /// The destination `spec` writes to for `ctx.env`, adding what it
    /// needs observed there (for `items`, when its output rendered) to `scope`.
    fn locate(
        &self,
        spec: &Self::Spec,
        items: Option<&[Self::Item]>,
        ctx: &Ctx<'_>,
        scope: &mut Self::Scope,
    ) -> Self::Dest;

    /// Destinations this kind wrote to before but the config may no longer
    /// name (so that prune can see them).
    fn recorded(&self, _ctx: &Ctx<'_>, _scopes: &mut BTreeMap<Self::Dest, Self::Scope>) {}

    /// Like [`Target::recorded`], for kinds whose records live on a server
    /// (the CI kinds' [`state`] in etcd). A failure leaves them out: they
    /// are then not pruned in this pass.
    fn recall(&self, _ctx: &Ctx<'_>) -> impl Future<Output = Vec<(Self::Dest, Self::Scope)>> + Send {
        async { Vec::new() }
    }

    /// The items `spec` wants from a rendered output. Pure.
    fn desired(&self, spec: &Self::Spec, rendered: &Rendered, ctx: &Ctx<'_>) -> Result<Vec<Self::Item>, TargetError>;

    /// One read of a destination.
    fn observe(
        &self,
        dest: &Self::Dest,
        scope: &Self::Scope,
        ctx: &Ctx<'_>,
    ) -> impl Future<Output = Result<Self::Observed, TargetError>> + Send;

    /// Decides the changes of one destination. Pure.
    fn plan(
        &self,
        dest: &Self::Dest,
        claims: Vec<Claim<'_, Self::Spec, Self::Item>>,
        observed: &Self::Observed,
        ctx: &Ctx<'_>,
    ) -> DestPlan<Self::Op>;

    /// Executes exactly `changes` (one destination's, fence already checked).
    fn apply(
        &self,
        dest: &Self::Dest,
        changes: Vec<Planned<Self::Op>>,
        ctx: &Ctx<'_>,
    ) -> impl Future<Output = Vec<Applied>> + Send;

    /// Saves what the kind records about what it wrote, after apply.
    fn commit(&self, _ctx: &Ctx<'_>) -> Result<(), TargetError> {
        Ok(())
    }

    /// Reports the fingerprint the destination holds for `item` (read back
    /// from what [`Target::observe`] saw; where a value cannot be read back,
    /// a GitHub secret, the fingerprint recorded when it was written),
    /// beside `item`'s own: equal exactly when the destination holds what
    /// `item` wants. `rotate verify` asks it of every target using a secret.
    fn held(&self, item: &Self::Item, observed: &Self::Observed, ctx: &Ctx<'_>) -> HeldItem;
}

/// What a destination holds for one item ([`Target::held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Read back: the fingerprint of what is there.
    Read(String),
    /// Cannot be read back: the fingerprint recorded when cfgsync wrote it.
    Recorded { fingerprint: String, why: &'static str },
    /// Nothing there.
    Absent,
    /// Cannot be told, and why.
    Unknown(String),
}

/// One item of a target: its name, the fingerprint it wants, what is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldItem {
    pub item: String,
    pub wanted: String,
    pub held: Held,
}

impl HeldItem {
    /// The destination holds exactly what the item wants.
    pub fn matches(&self) -> bool {
        match &self.held {
            Held::Read(f) | Held::Recorded { fingerprint: f, .. } => *f == self.wanted,
            Held::Absent | Held::Unknown(_) => false,
        }
    }
}

/// What a target holds, asked for several renderings of its output (the
/// current one first, then older ones): one observation of its
/// destination, then each rendering's items asked [`Target::held`].
pub async fn held_of<K: Target>(
    kind: &K,
    spec: &K::Spec,
    rendered: &[&Rendered],
    ctx: &Ctx<'_>,
) -> Result<Vec<Vec<HeldItem>>, TargetError> {
    let mut items = Vec::new();
    for r in rendered {
        items.push(kind.desired(spec, r, ctx)?);
    }
    let mut scope = K::Scope::default();
    let Some(current) = items.first() else { return Ok(Vec::new()) };
    let dest = kind.locate(spec, Some(current), ctx, &mut scope);
    for old in &items[1..] {
        let mut more = K::Scope::default();
        kind.locate(spec, Some(old), ctx, &mut more);
        Merge::merge(&mut scope, more);
    }
    let observed = kind.observe(&dest, &scope, ctx).await?;
    Ok(items.iter().map(|its| its.iter().map(|i| kind.held(i, &observed, ctx)).collect()).collect())
}

/// A fingerprint of content as [`Target::held`] compares it: keyed with
/// the env's key for secret content (as on the targets), else SHA-256;
/// secret content without the env's key gets a key drawn for this process
/// (`run:`), good for comparing within one command, never stored.
pub fn content_fingerprint(ctx: &Ctx<'_>, name: &str, content: &[u8], secret: bool) -> String {
    let name = name.to_owned();
    if let Some(f) = ctx.keyed.fingerprint([(&name, content)], secret) {
        return f;
    }
    static RUN: std::sync::OnceLock<Option<crate::fingerprint::RunFingerprinter>> = std::sync::OnceLock::new();
    match RUN.get_or_init(|| crate::fingerprint::RunFingerprinter::new().ok()) {
        Some(run) => {
            let mut bytes = (name.len() as u64).to_be_bytes().to_vec();
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(content);
            format!("run:{}", run.of(&bytes))
        }
        None => "run:unavailable".to_owned(),
    }
}

/// Scopes of one destination gathered from several targets.
pub trait Merge {
    fn merge(&mut self, other: Self);
    /// Whether what `self` asks to observe includes all `other` asks.
    fn covers(&self, other: &Self) -> bool;
}

impl<T: Ord> Merge for std::collections::BTreeSet<T> {
    fn merge(&mut self, other: Self) {
        self.extend(other);
    }

    fn covers(&self, other: &Self) -> bool {
        self.is_superset(other)
    }
}

impl Merge for () {
    fn merge(&mut self, _: Self) {}

    fn covers(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    fn prunes(n: usize) -> Vec<Planned<()>> {
        (0..n)
            .map(|i| Planned {
                slot: Slot::Prune,
                change: Change::new("file", format!("p{i}"), Action::Delete, false),
                op: (),
            })
            .collect()
    }

    #[test]
    fn prunes_beyond_the_share_are_refused_whole_unless_allowed() {
        let mut plan = DestPlan::default();
        // One delete is never a mass prune, even of everything.
        plan.add_prunes(prunes(1), 1, 0.5, false, || "d".to_owned());
        assert_eq!((plan.changes.len(), plan.errors.len()), (1, 0));
        // At the share: planned.
        let mut plan = DestPlan::default();
        plan.add_prunes(prunes(2), 4, 0.5, false, || "d".to_owned());
        assert_eq!((plan.changes.len(), plan.errors.len()), (2, 0));
        // Beyond it: nothing planned, one error naming the counts.
        let mut plan = DestPlan::default();
        plan.add_prunes(prunes(3), 4, 0.5, false, || "d".to_owned());
        assert!(plan.changes.is_empty());
        assert!(matches!(
            &plan.errors[..],
            [(Slot::Prune, TargetError::MassPrune(crate::plan::MassPrune { deletes: 3, total: 4, .. }))]
        ));
        // --allow-mass-prune lifts the guard.
        let mut plan = DestPlan::default();
        plan.add_prunes(prunes(3), 4, 0.5, true, || "d".to_owned());
        assert_eq!((plan.changes.len(), plan.errors.len()), (3, 0));
    }
}
