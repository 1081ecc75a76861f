//! GitHub targets: Actions secrets and variables of an organization, a
//! repository or a repository environment.
//!
//! ```toml
//! [[output.target]]
//! kind = "github"
//! # api_url = "https://api.github.com"   # GitHub Enterprise Server: https://HOST/api/v3
//! token_env = "GITHUB_TOKEN"              # the default
//! repo = "acme/app"                       # or org = "acme" (with visibility = "all" | "private" | "selected")
//! environment = "{{ env }}"               # a repository environment (optional, with repo)
//! key = "{{ name }}"                      # each entry's name: A-Z, 0-9, _; not GITHUB_…
//! ```
//!
//! How it behaves, and why:
//!
//! - **Secrets and variables**: an output that read a secret becomes
//!   Actions *secrets*, sealed (libsodium sealed box, `crypto_box`) with the
//!   scope's public key, fetched once per pass that writes a secret there;
//!   any other output becomes *variables* (readable, so compared directly).
//! - **Names** are checked against GitHub's rules at `validate` time.
//! - **Drift without reading secrets back**: after writing a secret cfgsync
//!   records ([`super::state`]) a keyed fingerprint of the plaintext and the
//!   secret's `updated_at` as listed right after. Next pass: a changed
//!   fingerprint is an update; a different `updated_at` is a write by
//!   someone else — drift, re-written; no record (first pass, lost record):
//!   written, and recorded. GitHub's timestamps have one-second resolution,
//!   so a write within the second after cfgsync's own cannot be told apart
//!   (on GitHub either).
//! - **Ownership**: GitHub has no field to mark an item, so what this
//!   instance wrote is what its record names. Prune deletes only recorded
//!   items no target claims any more — with every source read, within
//!   `max_prune_share`; a lost record never deletes anything.
//! - **Observe cheaply**: one paginated list of secrets and one of
//!   variables per scope and pass, and one read of the record; a no-op pass
//!   writes nothing. A scope none of whose targets rendered is not read.
//! - **Isolation**: each organization, repository or environment is its
//!   own destination; one that fails fails only its targets.
//! - Organization items: `visibility` is compared and written;
//!   `selected_repository_ids` are sent on every write but cannot be
//!   compared without one request per item, so a hand edit of the
//!   selection is not seen as drift.

pub mod api;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::ci::{self, CiError};
use super::gitlab::Need;
use super::state::{DestState, Record, StateKey, StateStore};
use super::{Applied, Claim, Ctx, Target, TargetError};
use crate::config::TargetKind;
use crate::plan::{self, Action, Change, DestPlan, Planned, Slot};
use crate::render::Rendered;
use crate::secret::Content;
pub use spec::{GithubAddress, GithubTarget, Scope};

pub const KIND: &str = "github";

/// A scope of one GitHub, with the token to use there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct GithubDest {
    pub api_url: String,
    pub scope: Scope,
    pub token_env: String,
}

impl fmt::Display for GithubDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitHub {}", self.scope)?;
        if self.api_url != spec::DEFAULT_API_URL {
            write!(f, " at {}", self.api_url)?;
        }
        Ok(())
    }
}

impl GithubDest {
    fn state_key(&self, ctx: &Ctx<'_>) -> StateKey {
        StateKey {
            kind: KIND,
            instance: ctx.instance.to_owned(),
            env: ctx.env.to_owned(),
            dest: format!("{}/{}/{}", self.api_url, self.scope.segments().join("/"), self.token_env),
        }
    }
}

/// Secret or variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Secret,
    Variable,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Secret => "secret",
            Part::Variable => "variable",
        }
    }

    fn collection(self) -> &'static str {
        match self {
            Part::Secret => "secrets",
            Part::Variable => "variables",
        }
    }

    fn of_id(id: &str) -> Option<(Part, &str)> {
        if let Some(name) = id.strip_prefix("secret/") {
            return Some((Part::Secret, name));
        }
        id.strip_prefix("variable/").map(|name| (Part::Variable, name))
    }
}

/// The record key of an item: `secret/NAME`, `variable/NAME`.
fn item_id(part: Part, name: &str) -> String {
    format!("{}/{name}", part.name())
}

/// One secret or variable as a target wants it.
#[derive(Debug, Clone)]
pub struct DesiredItem {
    pub part: Part,
    pub name: String,
    pub entry: String,
    pub output: String,
    pub value: Content,
    /// Organization scopes only.
    pub visibility: Option<String>,
    pub selected_repository_ids: Vec<u64>,
    pub fingerprint: String,
}

impl DesiredItem {
    fn id(&self) -> String {
        item_id(self.part, &self.name)
    }

    fn record(&self, updated_at: Option<String>) -> Record {
        Record { fingerprint: self.fingerprint.clone(), updated_at, output: self.output.clone() }
    }

    fn visibility(&self) -> Option<api::Visibility<'_>> {
        self.visibility
            .as_deref()
            .map(|v| api::Visibility { visibility: v, selected_repository_ids: &self.selected_repository_ids })
    }
}

/// A scope as read.
#[derive(Debug, Default)]
pub struct Observed {
    pub secrets: Vec<api::LiveSecret>,
    pub variables: Vec<api::LiveVariable>,
    pub state: DestState,
    /// Not read: no target there rendered.
    pub skipped: bool,
}

#[derive(Debug, Default)]
pub struct Base {
    state: DestState,
    live: BTreeSet<String>,
}

#[derive(Debug)]
pub struct Op {
    base: Arc<Base>,
    what: OpKind,
}

#[derive(Debug)]
enum OpKind {
    PutSecret(Box<DesiredItem>),
    CreateVariable(Box<DesiredItem>),
    UpdateVariable(Box<DesiredItem>),
    Delete { part: Part, name: String },
    Keep { id: String, record: Option<Record> },
}

/// The kind: GitHub Actions secrets and variables.
pub struct GithubKind {
    client: ci::Client,
    store: Arc<StateStore>,
}

impl GithubKind {
    pub fn new(client: ci::Client, store: Arc<StateStore>) -> Self {
        Self { client, store }
    }

    fn dest_of(spec: &GithubTarget, env: &str) -> GithubDest {
        GithubDest {
            api_url: spec.api_url.clone(),
            scope: spec.addresses[env].scope.clone(),
            token_env: spec.token_env.clone(),
        }
    }
}

fn item_address(dest: &GithubDest, part: Part, name: &str) -> String {
    format!("{dest}: {} {name}", part.name())
}

impl Target for GithubKind {
    type Spec = GithubTarget;
    type Dest = GithubDest;
    type Scope = Need;
    type Item = DesiredItem;
    type Observed = Observed;
    type Op = Op;

    fn spec(target: &TargetKind) -> Option<&GithubTarget> {
        match target {
            TargetKind::Github(g) => Some(g),
            _ => None,
        }
    }

    fn kind_name(_: &GithubTarget) -> &'static str {
        KIND
    }

    fn address(spec: &GithubTarget, env: &str) -> String {
        Self::dest_of(spec, env).to_string()
    }

    fn locate(&self, spec: &GithubTarget, items: Option<&[DesiredItem]>, ctx: &Ctx<'_>, need: &mut Need) -> GithubDest {
        need.0 |= items.is_some();
        Self::dest_of(spec, ctx.env)
    }

    async fn recall(&self, ctx: &Ctx<'_>) -> Vec<(GithubDest, Need)> {
        match self.store.list(KIND, ctx.instance, ctx.env, ctx.revision).await {
            Ok(records) => records
                .into_iter()
                .filter_map(|r| serde_json::from_value::<GithubDest>(r.dest).ok())
                .map(|d| (d, Need(true)))
                .collect(),
            // Debug only: a role that may not read records (a developer's
            // `plan`) would otherwise warn on every pass. The destinations
            // the config names still read their own record, and fail loudly.
            Err(e) => {
                debug!(env = ctx.env, error = %e, "cannot list GitHub records; scopes no target names are not pruned in this pass");
                Vec::new()
            }
        }
    }

    fn desired(
        &self,
        spec: &GithubTarget,
        rendered: &Rendered,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<DesiredItem>, TargetError> {
        let address = &spec.addresses[&rendered.env];
        let dest = Self::dest_of(spec, &rendered.env);
        let part = if rendered.tainted { Part::Secret } else { Part::Variable };
        let mut items = Vec::new();
        for (entry, content) in &rendered.entries {
            let Some(name) = address.names.get(entry) else { continue };
            // Variables are JSON strings; secrets are sealed bytes, but
            // workflows read them as text too.
            if content.expose_str().is_none() {
                return Err(TargetError::Encode {
                    path: item_address(&dest, part, name),
                    source: crate::format::FormatError::NotText { name: entry.clone() },
                });
            }
            let fingerprint = ctx
                .keyed
                .fingerprint([(name, content.expose())], rendered.tainted)
                .ok_or_else(|| CiError::NoFingerprintKey { output: rendered.output.clone() })?;
            items.push(DesiredItem {
                part,
                name: name.clone(),
                entry: entry.clone(),
                output: rendered.output.clone(),
                value: content.clone(),
                visibility: spec.visibility.clone(),
                selected_repository_ids: spec.selected_repository_ids.clone(),
                fingerprint,
            });
        }
        Ok(items)
    }

    async fn observe(&self, dest: &GithubDest, need: &Need, ctx: &Ctx<'_>) -> Result<Observed, TargetError> {
        if !need.0 {
            return Ok(Observed { skipped: true, ..Default::default() });
        }
        let shown = dest.to_string();
        let token = ci::token(&dest.token_env, &shown)?;
        let api = api::Api::new(&self.client, &dest.api_url, &dest.scope, &token, shown);
        let secrets = api.list_secrets().await?;
        let variables = api.list_variables().await?;
        let key = dest.state_key(ctx);
        let state = self
            .store
            .load(&key)
            .await
            .map_err(|cause| TargetError::State { path: self.store.describe(&key), cause })?;
        Ok(Observed { secrets, variables, state, skipped: false })
    }

    fn plan(
        &self,
        dest: &GithubDest,
        claims: Vec<Claim<'_, GithubTarget, DesiredItem>>,
        observed: &Observed,
        ctx: &Ctx<'_>,
    ) -> DestPlan<Op> {
        let mut plan = DestPlan::default();
        if observed.skipped {
            return plan;
        }
        // GitHub names are case-insensitive and listed upper-case.
        let secrets: BTreeMap<String, &api::LiveSecret> =
            observed.secrets.iter().map(|s| (s.name.to_ascii_uppercase(), s)).collect();
        let variables: BTreeMap<String, &api::LiveVariable> =
            observed.variables.iter().map(|v| (v.name.to_ascii_uppercase(), v)).collect();
        let live: BTreeSet<String> = secrets
            .keys()
            .map(|n| item_id(Part::Secret, n))
            .chain(variables.keys().map(|n| item_id(Part::Variable, n)))
            .collect();
        let base = Arc::new(Base { state: observed.state.clone(), live: live.clone() });
        let op = |what: OpKind| Op { base: base.clone(), what };
        // What targets claim: rendered ones their items; the others every
        // name they could write, as secret and as variable.
        let mut claimed: BTreeSet<String> = BTreeSet::new();
        for claim in &claims {
            match &claim.items {
                Some(items) => claimed.extend(items.iter().map(DesiredItem::id)),
                None => {
                    for name in claim.spec.addresses[ctx.env].names.values() {
                        claimed.insert(item_id(Part::Secret, name));
                        claimed.insert(item_id(Part::Variable, name));
                    }
                }
            }
        }
        let mut wanted_by: BTreeMap<String, String> = BTreeMap::new();
        for claim in claims {
            let Some(items) = claim.items else { continue };
            let mut changes = Vec::new();
            let mut error = None;
            for item in items {
                if let Some(first) = wanted_by.insert(item.id(), item.output.clone()) {
                    error = Some(
                        CiError::Duplicate {
                            dest: dest.to_string(),
                            what: format!("{} {}", item.part.name(), item.name),
                            first,
                            second: item.output.clone(),
                        }
                        .into(),
                    );
                    break;
                }
                let address = item_address(dest, item.part, &item.name);
                let record = observed.state.items.get(&item.id());
                let live_name = item.name.to_ascii_uppercase();
                let (change, what) = match item.part {
                    Part::Secret => plan_secret(item, secrets.get(&live_name).copied(), record, address),
                    Part::Variable => plan_variable(item, variables.get(&live_name).copied(), record, address),
                };
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
        // Ours: recorded and still there.
        let ours: Vec<(&String, &Record)> = observed.state.items.iter().filter(|(id, _)| live.contains(*id)).collect();
        let prunes: Vec<Planned<Op>> = ours
            .iter()
            .filter(|(id, _)| !claimed.contains(*id))
            .filter_map(|(id, record)| {
                let (part, name) = Part::of_id(id)?;
                let mut change = Change::new(KIND, item_address(dest, part, name), Action::Delete, false);
                change.notes.push(format!("output {:?} no longer writes it", record.output));
                Some(Planned { slot: Slot::Prune, change, op: op(OpKind::Delete { part, name: name.to_owned() }) })
            })
            .collect();
        plan.add_prunes(prunes, ours.len(), ctx.config.max_prune_share, ctx.allow_mass_prune, || dest.to_string());
        plan
    }

    async fn apply(&self, dest: &GithubDest, changes: Vec<Planned<Op>>, ctx: &Ctx<'_>) -> Vec<Applied> {
        let Some(base) = changes.first().map(|p| p.op.base.clone()) else { return Vec::new() };
        let shown = dest.to_string();
        let writes = changes.iter().any(|p| p.change.action.writes());
        let token = match ci::token(&dest.token_env, &shown) {
            Ok(t) => t,
            Err(e) if writes => {
                return Applied::all_failed(changes, || e.clone().into());
            }
            Err(_) => Default::default(),
        };
        let api = api::Api::new(&self.client, &dest.api_url, &dest.scope, &token, shown.clone());
        let mut state = base.state.clone();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut out: Vec<Applied> = Vec::new();
        let mut key: Option<api::PublicKey> = None;
        let mut stop: Option<CiError> = None;
        // Secrets written in this pass: their `updated_at` is read afterwards.
        let mut sealed: Vec<(String, String)> = Vec::new();
        let (deletes, writes): (Vec<_>, Vec<_>) =
            changes.into_iter().partition(|p| matches!(p.op.what, OpKind::Delete { .. }));
        for p in writes.into_iter().chain(deletes) {
            if p.change.action == Action::Drift {
                warn!(env = ctx.env, address = %p.change.address, "drift: written in GitHub by someone else; restoring");
            }
            let result: Result<(), CiError> = match (&p.op.what, &stop) {
                (OpKind::Keep { id, record }, _) => {
                    touched.insert(id.clone());
                    if let Some(r) = record {
                        state.items.insert(id.clone(), r.clone());
                    }
                    Ok(())
                }
                (_, Some(e)) => Err(e.clone()),
                (OpKind::PutSecret(item), None) => {
                    let k = match key.take() {
                        Some(k) => Ok(k),
                        None => api.public_key().await,
                    };
                    match k {
                        Ok(k) => {
                            let r = api.put_secret(&item.name, &k, item.value.expose(), item.visibility()).await;
                            key = Some(k);
                            r
                        }
                        Err(e) => Err(e),
                    }
                }
                (OpKind::CreateVariable(item), None) => {
                    api.create_variable(&item.name, item.value.expose_str().unwrap_or_default(), item.visibility())
                        .await
                }
                (OpKind::UpdateVariable(item), None) => {
                    api.update_variable(&item.name, item.value.expose_str().unwrap_or_default(), item.visibility())
                        .await
                }
                (OpKind::Delete { part, name }, None) => api.delete(part.collection(), name).await,
            };
            match (&p.op.what, &result) {
                (OpKind::PutSecret(item), Ok(())) => {
                    info!(env = ctx.env, dest = %shown, name = %item.name, action = p.change.action.name(), "secret written");
                    touched.insert(item.id());
                    state.items.insert(item.id(), item.record(None));
                    sealed.push((item.id(), item.name.clone()));
                }
                (OpKind::CreateVariable(item) | OpKind::UpdateVariable(item), Ok(())) => {
                    info!(env = ctx.env, dest = %shown, name = %item.name, action = p.change.action.name(), "variable written");
                    touched.insert(item.id());
                    state.items.insert(item.id(), item.record(None));
                }
                (OpKind::Delete { part, name }, Ok(())) => {
                    info!(env = ctx.env, dest = %shown, what = part.name(), name = %name, "pruned");
                    state.items.remove(&item_id(*part, name));
                }
                (_, Err(e @ (CiError::RateLimited { .. } | CiError::Connect { .. }))) => {
                    stop.get_or_insert_with(|| e.clone());
                }
                _ => {}
            }
            if let Err(e) = &result {
                warn!(env = ctx.env, address = %p.change.address, error = %e, "GitHub write failed");
            }
            out.push(Applied {
                slot: p.slot,
                change: p.change,
                result: result.map_err(TargetError::from),
                reloaded: false,
            });
        }
        if !sealed.is_empty() {
            // The `updated_at` of our own writes, to recognise the next one
            // that is not ours.
            match api.list_secrets().await {
                Ok(listed) => {
                    let at: BTreeMap<String, String> =
                        listed.into_iter().map(|s| (s.name.to_ascii_uppercase(), s.updated_at)).collect();
                    for (id, name) in &sealed {
                        if let Some(r) = state.items.get_mut(id) {
                            r.updated_at = at.get(name).cloned();
                        }
                    }
                }
                Err(e) => {
                    warn!(env = ctx.env, dest = %shown, error = %e, "cannot read back when the secrets were written; they are written again next pass");
                }
            }
        }
        state.items.retain(|id, _| base.live.contains(id) || touched.contains(id));
        if state.items != base.state.items {
            state.dest = serde_json::to_value(dest).unwrap_or_default();
            let key = dest.state_key(ctx);
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

fn new_change(item: &DesiredItem, address: String, action: Action) -> Change {
    let mut change = Change::new(KIND, address, action, item.value.is_secret());
    change.content_hash =
        plan::content_hash(&[item.fingerprint.as_bytes(), item.visibility.as_deref().unwrap_or_default().as_bytes()]);
    change.entries = vec![item.entry.clone()];
    change
}

fn plan_secret(
    item: DesiredItem,
    live: Option<&api::LiveSecret>,
    record: Option<&Record>,
    address: String,
) -> (Change, OpKind) {
    let Some(l) = live else {
        let mut change = new_change(&item, address, Action::Create);
        change.notes.push("secret content masked".to_owned());
        return (change, OpKind::PutSecret(Box::new(item)));
    };
    let mut notes = Vec::new();
    let action = match record {
        None => {
            notes.push("no record of what was written: written again".to_owned());
            Action::Update
        }
        Some(r) if r.fingerprint != item.fingerprint => Action::Update,
        Some(r) if r.updated_at.as_deref() != Some(l.updated_at.as_str()) => {
            notes.push(format!(
                "updated at {} by someone else (cfgsync wrote it at {})",
                l.updated_at,
                r.updated_at.as_deref().unwrap_or("an unknown time")
            ));
            Action::Drift
        }
        Some(_) if item.visibility.is_some() && l.visibility != item.visibility => {
            notes.push(format!(
                "visibility {} → {}",
                l.visibility.as_deref().unwrap_or("?"),
                item.visibility.as_deref().unwrap_or("?")
            ));
            Action::Update
        }
        Some(r) => {
            let mut change = new_change(&item, address, Action::Unchanged);
            change.entries.clear();
            let record = (r.output != item.output).then(|| item.record(r.updated_at.clone()));
            return (change, OpKind::Keep { id: item.id(), record });
        }
    };
    let mut change = new_change(&item, address, action);
    change.notes = notes;
    (change, OpKind::PutSecret(Box::new(item)))
}

fn plan_variable(
    item: DesiredItem,
    live: Option<&api::LiveVariable>,
    record: Option<&Record>,
    address: String,
) -> (Change, OpKind) {
    let new = item.value.shown().map(|v| plan::show(&v));
    let Some(l) = live else {
        let mut change = new_change(&item, address, Action::Create);
        change.values.extend(new.map(|v| format!("{}: {v}", item.entry)));
        return (change, OpKind::CreateVariable(Box::new(item)));
    };
    let value_differs = l.value.as_bytes() != item.value.expose();
    let visibility_differs = item.visibility.is_some() && l.visibility != item.visibility;
    let source_same = record.map(|r| r.fingerprint.as_str()) == Some(item.fingerprint.as_str());
    if !value_differs && !visibility_differs {
        let mut change = new_change(&item, address, Action::Unchanged);
        change.entries.clear();
        let record = (!source_same || record.is_some_and(|r| r.output != item.output)).then(|| item.record(None));
        return (change, OpKind::Keep { id: item.id(), record });
    }
    let mut change = new_change(&item, address, if source_same { Action::Drift } else { Action::Update });
    if value_differs {
        change.values.extend(new.map(|v| format!("{}: {} → {v}", item.entry, plan::show(&l.value))));
    } else {
        change.entries.clear();
    }
    if visibility_differs {
        change.notes.push(format!(
            "visibility {} → {}",
            l.visibility.as_deref().unwrap_or("?"),
            item.visibility.as_deref().unwrap_or("?")
        ));
    }
    (change, OpKind::UpdateVariable(Box::new(item)))
}

#[cfg(test)]
mod tests;
