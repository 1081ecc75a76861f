//! GitLab targets: CI/CD variables of a project or a group.
//!
//! ```toml
//! [[output.target]]
//! kind = "gitlab"
//! url = "https://gitlab.example.com"  # default https://gitlab.com (REST v4 under /api/v4)
//! token_env = "GITLAB_TOKEN"          # the variable holding the token, sent as PRIVATE-TOKEN
//! project = "group/app"               # or group = "group"; templated with {{ env }}
//! environment_scope = "{{ env }}"     # the default
//! key = "APP_{{ name }}"              # each entry's variable key; default "{{ name }}"
//! protected = false
//! hidden = true                       # secret variables are masked *and* hidden
//! # raw = true                        # the default: values are not expanded ($X stays literal)
//! ```
//!
//! How it behaves, and why:
//!
//! - **One variable per entry**, with the env's `environment_scope`. Every
//!   request by key sends `filter[environment_scope]` and the answer's scope
//!   is checked ([`api`]): GitLab's group API otherwise updates the
//!   first-created variable with that key, which may be another env's.
//! - **Secrets**: an output that read a secret becomes `masked` variables
//!   (`masked_and_hidden` with `hidden = true`). A value GitLab cannot mask
//!   (under 8 characters, white space, a line break; for `raw = false` also
//!   characters outside Base64 and `@:.~-`) refuses the whole target before
//!   any request, naming the entry: a secret never becomes an unmasked
//!   variable. Multi-line values of outputs that read no secret become
//!   `variable_type = "file"`.
//! - **Ownership**: every variable carries the description `managed by
//!   cfgsync instance <instance>, env <env>, output <output>`, and its key
//!   comes from the target's key schema. A variable at a key cfgsync wants
//!   that another instance wrote, or that nobody marked (made by hand) and
//!   cfgsync's record does not name, is not overwritten: an error names it. Prune deletes only variables marked
//!   with this instance and env that no target claims any more — in a pass
//!   where every source was read, never more than `max_prune_share` at once.
//! - **Drift**: a readable value or a flag that differs from what cfgsync
//!   wants while the source did not change (the recorded fingerprint,
//!   [`super::state`], equals the wanted one) was edited in GitLab: it is
//!   restored and reported as drift. A hidden variable's value cannot be
//!   read back: it is written when the wanted value's fingerprint differs
//!   from the recorded one, or when there is no record; an edit of a hidden
//!   value in GitLab itself cannot be seen (GitLab shows no `updated_at`).
//! - **Observe cheaply**: one paginated list per project or group and pass
//!   (`per_page=100`), plus one read of the record; a no-op pass writes
//!   nothing. A destination none of whose targets rendered is not read at
//!   all (nothing would be written there).
//! - **Isolation**: each project or group is its own destination; one that
//!   fails (token, network, rate limit, permissions) fails only its targets.

pub mod api;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::ci::{self, CiError};
use super::state::{DestState, Record, StateKey, StateStore};
use super::{Applied, Claim, Ctx, Merge, Target, TargetError};
use crate::config::TargetKind;
use crate::plan::{self, Action, Change, DestPlan, Planned, Slot};
use crate::render::Rendered;
use crate::secret::Content;
pub use spec::{GitlabAddress, GitlabTarget, Owner};

pub const KIND: &str = "gitlab";

/// A project or group of one GitLab, with the token to use there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct GitlabDest {
    pub url: String,
    pub owner: Owner,
    pub token_env: String,
}

impl fmt::Display for GitlabDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitLab {}", self.owner)?;
        if self.url != spec::DEFAULT_URL {
            write!(f, " at {}", self.url)?;
        }
        Ok(())
    }
}

impl GitlabDest {
    /// Where the record of what `instance` wrote here for `env` lives
    /// (also where `cfgsync import --adopt` records adopted variables).
    pub fn state_key(&self, instance: &str, env: &str) -> StateKey {
        StateKey {
            kind: KIND,
            instance: instance.to_owned(),
            env: env.to_owned(),
            dest: format!("{}/{}/{}/{}", self.url, self.owner.collection(), self.owner.id(), self.token_env),
        }
    }
}

/// Whether a destination must be read: some target there rendered (or it
/// holds records to prune).
#[derive(Debug, Default, Clone, Copy)]
pub struct Need(pub bool);

impl Merge for Need {
    fn merge(&mut self, other: Self) {
        self.0 |= other.0;
    }

    fn covers(&self, other: &Self) -> bool {
        self.0 || !other.0
    }
}

/// One variable as a target wants it.
#[derive(Debug, Clone)]
pub struct DesiredVar {
    pub key: String,
    pub entry: String,
    pub output: String,
    pub value: Content,
    pub environment_scope: String,
    /// `env_var`, or `file` for a multi-line value.
    pub variable_type: &'static str,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub description: String,
    pub fingerprint: String,
}

impl DesiredVar {
    fn id(&self) -> String {
        item_id(&self.key, &self.environment_scope)
    }

    fn record(&self) -> Record {
        Record { fingerprint: self.fingerprint.clone(), updated_at: None, output: self.output.clone() }
    }

    fn body(&self) -> api::Body<'_> {
        api::Body {
            key: &self.key,
            value: self.value.expose(),
            variable_type: self.variable_type,
            protected: self.protected,
            masked: self.masked,
            hidden: self.hidden,
            raw: self.raw,
            environment_scope: &self.environment_scope,
            description: &self.description,
            secret: self.value.is_secret(),
        }
    }

    fn flags(&self) -> String {
        let mut f = vec![self.variable_type.to_owned()];
        for (on, name) in [(self.masked, "masked"), (self.hidden, "hidden"), (self.protected, "protected")] {
            if on {
                f.push(name.to_owned());
            }
        }
        f.join(", ")
    }
}

/// The record key of a variable: `KEY@scope` (a key holds no `@`).
pub fn item_id(key: &str, scope: &str) -> String {
    format!("{key}@{scope}")
}

/// A destination as read: its variables and cfgsync's record of them.
#[derive(Debug, Default)]
pub struct Observed {
    pub variables: Vec<api::LiveVariable>,
    pub state: DestState,
    /// Not read: no target there rendered.
    pub skipped: bool,
}

/// What apply starts from at a destination: the record as observed and the
/// items that exist (a record of an item that is gone serves nothing).
#[derive(Debug, Default)]
pub struct Base {
    state: DestState,
    live: BTreeSet<String>,
}

/// What apply does for one planned change.
#[derive(Debug)]
pub struct Op {
    base: Arc<Base>,
    what: OpKind,
}

#[derive(Debug)]
enum OpKind {
    Create(Box<DesiredVar>),
    Update(Box<DesiredVar>),
    /// Hidden-ness can only be set on create: delete, then create.
    Recreate(Box<DesiredVar>),
    Delete {
        key: String,
        scope: String,
    },
    /// Nothing to send; remember it when the record lacks it.
    Keep {
        id: String,
        record: Option<Record>,
    },
}

/// `managed by cfgsync instance <instance>, env <env>, output <output>`.
pub fn marker(instance: &str, env: &str, output: &str) -> String {
    format!("managed by cfgsync instance {instance}, env {env}, output {output}")
}

/// Who wrote a variable, from its description: `(instance, env, output)`.
pub fn parse_marker(description: Option<&str>) -> Option<(&str, &str, &str)> {
    let rest = description?.strip_prefix("managed by cfgsync instance ")?;
    let (instance, rest) = rest.split_once(", env ")?;
    let (env, output) = rest.split_once(", output ")?;
    Some((instance, env, output))
}

/// Why GitLab would refuse to mask `value` (GitLab 17's `Ci::Maskable`).
pub fn mask_problem(value: &str, raw: bool) -> Option<&'static str> {
    if value.chars().count() < 8 {
        return Some("shorter than 8 characters");
    }
    if value.chars().any(|c| matches!(c, '\n' | '\r')) {
        return Some("it has a line break");
    }
    if value.chars().any(|c| matches!(c, ' ' | '\t' | '\x0b' | '\x0c')) {
        return Some("it has white space");
    }
    if !raw && !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=/@:.~-".contains(&b)) {
        return Some("with raw = false only letters, digits and _+=/@:.~- can be masked");
    }
    None
}

/// The kind: variables of GitLab projects and groups.
pub struct GitlabKind {
    client: ci::Client,
    store: Arc<StateStore>,
}

impl GitlabKind {
    pub fn new(client: ci::Client, store: Arc<StateStore>) -> Self {
        Self { client, store }
    }

    fn dest_of(spec: &GitlabTarget, env: &str) -> GitlabDest {
        GitlabDest {
            url: spec.url.clone(),
            owner: spec.addresses[env].owner.clone(),
            token_env: spec.token_env.clone(),
        }
    }
}

fn variable_address(dest: &GitlabDest, key: &str, scope: &str) -> String {
    format!("{dest}: {key} (environment scope {scope})")
}

impl Target for GitlabKind {
    type Spec = GitlabTarget;
    type Dest = GitlabDest;
    type Scope = Need;
    type Item = DesiredVar;
    type Observed = Observed;
    type Op = Op;

    fn spec(target: &TargetKind) -> Option<&GitlabTarget> {
        match target {
            TargetKind::Gitlab(g) => Some(g),
            _ => None,
        }
    }

    fn kind_name(_: &GitlabTarget) -> &'static str {
        KIND
    }

    fn address(spec: &GitlabTarget, env: &str) -> String {
        let a = &spec.addresses[env];
        format!("{} (environment scope {})", Self::dest_of(spec, env), a.environment_scope)
    }

    fn locate(&self, spec: &GitlabTarget, items: Option<&[DesiredVar]>, ctx: &Ctx<'_>, scope: &mut Need) -> GitlabDest {
        scope.0 |= items.is_some();
        Self::dest_of(spec, ctx.env)
    }

    async fn recall(&self, ctx: &Ctx<'_>) -> Vec<(GitlabDest, Need)> {
        match self.store.list(KIND, ctx.instance, ctx.env, ctx.revision).await {
            Ok(records) => records
                .into_iter()
                .filter_map(|r| serde_json::from_value::<GitlabDest>(r.dest).ok())
                .map(|d| (d, Need(true)))
                .collect(),
            // Debug only: a role that may not read records (a developer's
            // `plan`) would otherwise warn on every pass. The destinations
            // the config names still read their own record, and fail loudly.
            Err(e) => {
                debug!(env = ctx.env, error = %e, "cannot list GitLab records; destinations no target names are not pruned in this pass");
                Vec::new()
            }
        }
    }

    fn desired(&self, spec: &GitlabTarget, rendered: &Rendered, ctx: &Ctx<'_>) -> Result<Vec<DesiredVar>, TargetError> {
        let address = &spec.addresses[&rendered.env];
        let dest = Self::dest_of(spec, &rendered.env);
        let mut vars = Vec::new();
        for (entry, content) in &rendered.entries {
            let Some(key) = address.keys.get(entry) else { continue };
            let text = content.expose_str().ok_or_else(|| TargetError::Encode {
                path: variable_address(&dest, key, &address.environment_scope),
                source: crate::format::FormatError::NotText { name: entry.clone() },
            })?;
            if rendered.tainted
                && let Some(reason) = mask_problem(text, spec.raw)
            {
                return Err(CiError::Unmaskable {
                    output: rendered.output.clone(),
                    entry: entry.clone(),
                    key: key.clone(),
                    dest: dest.to_string(),
                    reason: reason.to_owned(),
                }
                .into());
            }
            let fingerprint = ctx
                .keyed
                .fingerprint([(key, content.expose())], rendered.tainted)
                .ok_or_else(|| CiError::NoFingerprintKey { output: rendered.output.clone() })?;
            vars.push(DesiredVar {
                key: key.clone(),
                entry: entry.clone(),
                output: rendered.output.clone(),
                value: content.clone(),
                environment_scope: address.environment_scope.clone(),
                variable_type: if text.contains('\n') { "file" } else { "env_var" },
                protected: spec.protected,
                masked: rendered.tainted,
                hidden: rendered.tainted && spec.hidden,
                raw: spec.raw,
                description: marker(ctx.instance, &rendered.env, &rendered.output),
                fingerprint,
            });
        }
        Ok(vars)
    }

    async fn observe(&self, dest: &GitlabDest, need: &Need, ctx: &Ctx<'_>) -> Result<Observed, TargetError> {
        if !need.0 {
            return Ok(Observed { skipped: true, ..Default::default() });
        }
        let shown = dest.to_string();
        let token = ci::token(&dest.token_env, &shown)?;
        let api = api::Api::new(&self.client, &dest.url, &dest.owner, &token, shown);
        let variables = api.list().await?;
        let key = dest.state_key(ctx.instance, ctx.env);
        let state = self
            .store
            .load(&key)
            .await
            .map_err(|cause| TargetError::State { path: self.store.describe(&key), cause })?;
        Ok(Observed { variables, state, skipped: false })
    }

    fn plan(
        &self,
        dest: &GitlabDest,
        claims: Vec<Claim<'_, GitlabTarget, DesiredVar>>,
        observed: &Observed,
        ctx: &Ctx<'_>,
    ) -> DestPlan<Op> {
        let mut plan = DestPlan::default();
        if observed.skipped {
            return plan;
        }
        let live: BTreeMap<(&str, &str), &api::LiveVariable> =
            observed.variables.iter().map(|v| ((v.key.as_str(), v.environment_scope.as_str()), v)).collect();
        let base = Arc::new(Base {
            state: observed.state.clone(),
            live: observed.variables.iter().map(|v| item_id(&v.key, &v.environment_scope)).collect(),
        });
        let op = |what: OpKind| Op { base: base.clone(), what };
        // Every key a target names, rendered or not: never pruned.
        let mut claimed: BTreeSet<(String, String)> = BTreeSet::new();
        for claim in &claims {
            let a = &claim.spec.addresses[ctx.env];
            claimed.extend(a.keys.values().map(|k| (k.clone(), a.environment_scope.clone())));
        }
        let mut wanted_by: BTreeMap<String, String> = BTreeMap::new();
        for claim in claims {
            let Some(items) = claim.items else { continue };
            let mut changes = Vec::new();
            let mut error = None;
            for var in items {
                let address = variable_address(dest, &var.key, &var.environment_scope);
                if let Some(first) = wanted_by.insert(var.id(), var.output.clone()) {
                    error = Some(
                        CiError::Duplicate {
                            dest: dest.to_string(),
                            what: format!("variable {} (environment scope {})", var.key, var.environment_scope),
                            first,
                            second: var.output.clone(),
                        }
                        .into(),
                    );
                    break;
                }
                let current = live.get(&(var.key.as_str(), var.environment_scope.as_str())).copied();
                if let Some(l) = current {
                    match parse_marker(l.description.as_deref()) {
                        Some((instance, env, _)) if instance == ctx.instance && env == ctx.env => {}
                        Some((instance, env, _)) => {
                            error = Some(TargetError::Foreign {
                                address,
                                what: "variable".to_owned(),
                                owner: if instance == ctx.instance {
                                    format!("{instance}, env {env}")
                                } else {
                                    instance.to_owned()
                                },
                                ours: ctx.instance.to_owned(),
                            });
                            break;
                        }
                        // Our record says we wrote it: someone cleared the
                        // description (drift, restored below).
                        None if observed.state.items.contains_key(&var.id()) => {}
                        None => {
                            error = Some(
                                CiError::Unmanaged {
                                    dest: dest.to_string(),
                                    what: format!("variable {} (environment scope {})", var.key, var.environment_scope),
                                    marker: var.description.clone(),
                                }
                                .into(),
                            );
                            break;
                        }
                    }
                }
                let record = observed.state.items.get(&var.id());
                let (change, what) = plan_variable(var, current, record, address);
                changes.push(Planned { slot: claim.slot, change, op: op(what) });
            }
            match error {
                Some(e) => plan.errors.push((claim.slot, e)),
                None => plan.changes.extend(changes),
            }
        }
        if !ctx.prune {
            return plan;
        }
        let ours: Vec<&api::LiveVariable> = observed
            .variables
            .iter()
            .filter(|v| {
                parse_marker(v.description.as_deref())
                    .is_some_and(|(instance, env, _)| instance == ctx.instance && env == ctx.env)
            })
            .collect();
        let prunes: Vec<Planned<Op>> = ours
            .iter()
            .filter(|v| !claimed.contains(&(v.key.clone(), v.environment_scope.clone())))
            .map(|v| {
                let mut change =
                    Change::new(KIND, variable_address(dest, &v.key, &v.environment_scope), Action::Delete, false);
                if let Some((_, _, output)) = parse_marker(v.description.as_deref()) {
                    change.notes.push(format!("output {output:?} no longer writes it"));
                }
                Planned {
                    slot: Slot::Prune,
                    change,
                    op: op(OpKind::Delete { key: v.key.clone(), scope: v.environment_scope.clone() }),
                }
            })
            .collect();
        plan.add_prunes(prunes, ours.len(), ctx.config.max_prune_share, ctx.allow_mass_prune, || dest.to_string());
        plan
    }

    async fn apply(&self, dest: &GitlabDest, changes: Vec<Planned<Op>>, ctx: &Ctx<'_>) -> Vec<Applied> {
        let Some(base) = changes.first().map(|p| p.op.base.clone()) else { return Vec::new() };
        let shown = dest.to_string();
        let writes = changes.iter().any(|p| p.change.action.writes());
        let token = match ci::token(&dest.token_env, &shown) {
            Ok(t) => Some(t),
            Err(e) if writes => {
                return Applied::all_failed(changes, || e.clone().into());
            }
            Err(_) => None,
        };
        let token = token.unwrap_or_default();
        let api = api::Api::new(&self.client, &dest.url, &dest.owner, &token, shown.clone());
        let mut state = base.state.clone();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut out: Vec<Applied> = Vec::new();
        // After a rate limit or an unreachable API, the rest waits for the next pass.
        let mut stop: Option<CiError> = None;
        // Writes first, then deletes.
        let (deletes, writes): (Vec<_>, Vec<_>) =
            changes.into_iter().partition(|p| matches!(p.op.what, OpKind::Delete { .. }));
        for p in writes.into_iter().chain(deletes) {
            let result: Result<(), CiError> = match (&p.op.what, &stop) {
                (OpKind::Keep { id, record }, _) => {
                    touched.insert(id.clone());
                    if let Some(r) = record {
                        state.items.insert(id.clone(), r.clone());
                    }
                    Ok(())
                }
                (_, Some(e)) => Err(e.clone()),
                (OpKind::Create(v), None) => api.create(&v.body()).await,
                (OpKind::Update(v), None) => {
                    if p.change.action == Action::Drift {
                        warn!(dest = %shown, key = %v.key, scope = %v.environment_scope, "drift: variable edited in GitLab; restoring");
                    }
                    api.update(&v.body()).await
                }
                (OpKind::Recreate(v), None) => match api.delete(&v.key, &v.environment_scope).await {
                    Ok(()) => api.create(&v.body()).await,
                    Err(e) => Err(e),
                },
                (OpKind::Delete { key, scope }, None) => api.delete(key, scope).await,
            };
            match (&p.op.what, &result) {
                (OpKind::Create(v) | OpKind::Update(v) | OpKind::Recreate(v), Ok(())) => {
                    info!(env = ctx.env, dest = %shown, key = %v.key, scope = %v.environment_scope, action = p.change.action.name(), "variable written");
                    touched.insert(v.id());
                    state.items.insert(v.id(), v.record());
                }
                (OpKind::Delete { key, scope }, Ok(())) => {
                    info!(env = ctx.env, dest = %shown, key = %key, scope = %scope, "variable pruned");
                    state.items.remove(&item_id(key, scope));
                }
                (_, Err(e @ (CiError::RateLimited { .. } | CiError::Connect { .. }))) => {
                    stop.get_or_insert_with(|| e.clone());
                }
                _ => {}
            }
            if let Err(e) = &result {
                warn!(env = ctx.env, address = %p.change.address, error = %e, "GitLab write failed");
            }
            out.push(Applied {
                slot: p.slot,
                change: p.change,
                result: result.map_err(TargetError::from),
                reloaded: false,
            });
        }
        state.items.retain(|id, _| base.live.contains(id) || touched.contains(id));
        if state.items != base.state.items {
            state.dest = serde_json::to_value(dest).unwrap_or_default();
            let key = dest.state_key(ctx.instance, ctx.env);
            if let Err(cause) = self.store.save(&key, &state).await {
                let path = self.store.describe(&key);
                warn!(env = ctx.env, dest = %shown, path = %path, error = %cause, "cannot save the record of what was written");
                for a in out.iter_mut().filter(|a| a.result.is_ok() && a.change.action.writes()) {
                    a.result = Err(TargetError::State { path: path.clone(), cause: cause.clone() });
                }
            }
        }
        out
    }
}

/// Decides the change for one variable.
fn plan_variable(
    var: DesiredVar,
    live: Option<&api::LiveVariable>,
    record: Option<&Record>,
    address: String,
) -> (Change, OpKind) {
    let secret = var.value.is_secret();
    let mut change = Change::new(KIND, address, Action::Create, secret);
    change.content_hash = plan::content_hash(&[var.fingerprint.as_bytes(), var.flags().as_bytes()]);
    change.entries = vec![var.entry.clone()];
    let shown_new = var.value.shown().map(|v| plan::show(&v));
    let Some(l) = live else {
        change.values.extend(shown_new.map(|v| format!("{}: {v}", var.entry)));
        change.notes.push(var.flags());
        return (change, OpKind::Create(Box::new(var)));
    };
    let source_same = record.map(|r| r.fingerprint.as_str()) == Some(var.fingerprint.as_str());
    let mut flag_notes = Vec::new();
    let mut flag = |name: &str, old: String, new: String| {
        if old != new {
            flag_notes.push(format!("{name}: {old} → {new}"));
        }
    };
    flag("variable_type", l.variable_type.clone(), var.variable_type.to_owned());
    flag("protected", l.protected.to_string(), var.protected.to_string());
    flag("masked", l.masked.to_string(), var.masked.to_string());
    flag("raw", l.raw.to_string(), var.raw.to_string());
    flag("description", format!("{:?}", l.description.as_deref().unwrap_or("")), format!("{:?}", var.description));
    if l.hidden != var.hidden {
        change.action = Action::Update;
        change.notes.push(format!(
            "hidden: {} → {}: deleted and created again (GitLab sets it only on create)",
            l.hidden, var.hidden
        ));
        change.notes.extend(flag_notes);
        return (change, OpKind::Recreate(Box::new(var)));
    }
    let value_differs = l.value.as_ref().map(|v| v.as_bytes() != var.value.expose());
    let action = match value_differs {
        Some(differs) if differs || !flag_notes.is_empty() => {
            if differs {
                let old = plan::show(l.value.as_deref().unwrap_or_default());
                change.values.extend(shown_new.map(|new| format!("{}: {old} → {new}", var.entry)));
            }
            if source_same { Action::Drift } else { Action::Update }
        }
        Some(_) => Action::Unchanged,
        // Hidden: the value cannot be read back.
        None if !source_same => {
            change.notes.push(if record.is_none() {
                "hidden value: no record of what was written, written to be sure".to_owned()
            } else {
                "hidden value changed".to_owned()
            });
            Action::Update
        }
        None if !flag_notes.is_empty() => Action::Drift,
        None => Action::Unchanged,
    };
    change.action = action;
    change.notes.extend(flag_notes);
    if action == Action::Unchanged {
        change.entries.clear();
        let id = var.id();
        let record = (!source_same || record.is_some_and(|r| r.output != var.output)).then(|| var.record());
        return (change, OpKind::Keep { id, record });
    }
    if value_differs == Some(false) {
        change.entries.clear();
    }
    (change, OpKind::Update(Box::new(var)))
}

#[cfg(test)]
mod tests;
