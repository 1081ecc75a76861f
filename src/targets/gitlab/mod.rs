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
//!   comes from the target's key schema. A variable at a key and scope
//!   cfgsync wants that another instance (or env) marked, or that nobody
//!   marked (made by hand) and cfgsync's record does not name, is not
//!   overwritten: an error names it and how to hand it over or adopt it.
//!   Prune deletes only variables marked with this instance and env, named
//!   in the record as written by a target, that no target claims any more
//!   and that are still as written (readable value, flags) — in a pass
//!   where every source was read, never more than `max_prune_share` at once.
//! - **Adopted flags are kept**: `protected`, `raw` and `variable_type` as
//!   `cfgsync import --adopt` recorded them stay where the target's config
//!   does not set them; a flag change the plan makes is said in words
//!   (`protected: true → false (exposes it to unprotected branches and tags)`).
//! - **GitLab Free** ignores `environment_scope` on group variables (stored
//!   as `*`): an answer with another scope than asked fails the group, and
//!   a later pass refuses before sending; never a delete or a flip. A group
//!   update looks its variable up by key and scope first: GitLab's group
//!   PUT falls back to another scope's variable.
//! - **Values read back** are [`Content`], secret when masked or hidden;
//!   an old value GitLab masks, or cfgsync wrote from a secret, is never shown.
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

use tracing::{info, warn};

use super::ci::{self, CiError};
pub use super::ci_dest::Need;
use super::ci_dest::{self, Base, CiDest, Ledger};
use super::registry::{Kind, Problems, Setup, SpecInput};
use super::state::{DestState, Record, StateKey, StateStore};
use super::{Applied, Claim, Ctx, DestPlan, Target, TargetError};
use crate::plan::{self, Action, Change, Planned, Slot};
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

impl CiDest for GitlabDest {
    const KIND: &'static str = KIND;

    fn state_key(&self, instance: &str, env: &str) -> StateKey {
        StateKey {
            kind: KIND,
            instance: instance.to_owned(),
            env: env.to_owned(),
            dest: format!("{}/{}/{}/{}", self.url, self.owner.collection(), self.owner.id(), self.token_env),
        }
    }

    fn token_env(&self) -> &str {
        &self.token_env
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
    /// `env_var`, or `file` for a multi-line value (or what an adopted
    /// variable had).
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    /// The target's config sets `protected` / `raw` itself: an adopted
    /// variable's own value does not replace it.
    pub protected_set: bool,
    pub raw_set: bool,
    pub hidden_set: bool,
    pub description: String,
    pub fingerprint: String,
    /// The flags the variable had when `cfgsync import --adopt` took it
    /// over (from the record), carried from record to record.
    pub adopted: BTreeMap<String, String>,
}

impl DesiredVar {
    fn id(&self) -> String {
        item_id(&self.key, &self.environment_scope)
    }

    fn record(&self) -> Record {
        Record {
            fingerprint: self.fingerprint.clone(),
            updated_at: None,
            output: self.output.clone(),
            attributes: self.attributes(),
            adopted: self.adopted.clone(),
        }
    }

    /// The flags as written, as recorded (to recognise the exact variable
    /// before pruning it).
    fn attributes(&self) -> BTreeMap<String, String> {
        [
            ("variable_type", self.variable_type.clone()),
            ("protected", self.protected.to_string()),
            ("masked", self.masked.to_string()),
            ("hidden", self.hidden.to_string()),
            ("raw", self.raw.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Keeps what an adopted variable had where the config is silent:
    /// `protected`, `raw` and `variable_type` (the config has no setting
    /// for it). Masking follows the output's taint, as always.
    fn keep_adopted(&mut self, record: Option<&Record>) {
        let Some(r) = record else { return };
        self.adopted = r.adopted.clone();
        let flag = |name: &str| r.adopted.get(name).map(|v| v == "true");
        if let (false, Some(p)) = (self.protected_set, flag("protected")) {
            self.protected = p;
        }
        if let (false, Some(raw)) = (self.raw_set, flag("raw")) {
            self.raw = raw;
        }
        if let Some(t) = r.adopted.get("variable_type").filter(|t| matches!(t.as_str(), "env_var" | "file")) {
            self.variable_type = t.clone();
        }
        // A hidden variable is never made readable behind the config's
        // back; only a masked one can be hidden.
        if let (false, true, Some(hidden)) = (self.hidden_set, self.masked, flag("hidden")) {
            self.hidden = hidden;
        }
    }

    /// The request body; `None` for a value that is not text (refused by
    /// [`GitlabKind::desired`] already).
    fn body(&self) -> Option<api::Body<'_>> {
        Some(api::Body {
            key: &self.key,
            value: self.value.expose_str()?,
            variable_type: &self.variable_type,
            protected: self.protected,
            masked: self.masked,
            hidden: self.hidden,
            raw: self.raw,
            environment_scope: &self.environment_scope,
            description: &self.description,
            secret: self.value.is_secret(),
        })
    }

    fn flags(&self) -> String {
        let mut f = vec![self.variable_type.clone()];
        for (on, name) in [(self.masked, "masked"), (self.hidden, "hidden"), (self.protected, "protected")] {
            if on {
                f.push(name.to_owned());
            }
        }
        if !self.raw {
            f.push("expanded".to_owned());
        }
        f.join(", ")
    }
}

/// The record key of a variable: `KEY@scope` (a key holds no `@`).
pub fn item_id(key: &str, scope: &str) -> String {
    format!("{key}@{scope}")
}

/// A destination as read: its variables and cfgsync's record of them.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub variables: Vec<api::LiveVariable>,
    pub state: DestState,
    /// Not read: no target there rendered.
    pub skipped: bool,
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
        /// The variable as the plan saw it: deleted only while it still is.
        seen: Box<api::LiveVariable>,
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

impl Kind for GitlabKind {
    type Raw = spec::RawGitlabTarget;
    const SHARED: bool = true;
    const KEYED: bool = true;

    fn build(_: &str, raw: spec::RawGitlabTarget, input: &SpecInput<'_>) -> Result<GitlabTarget, Problems> {
        spec::build(raw, input)
    }

    fn new(setup: &Setup<'_>) -> Self {
        GitlabKind::new(ci::Client::for_config(setup.config), setup.state.clone())
    }

    fn kind_name(_: &GitlabTarget) -> &'static str {
        KIND
    }

    fn address(spec: &GitlabTarget, env: &str) -> String {
        let a = &spec.addresses[env];
        format!("{} (environment scope {})", Self::dest_of(spec, env), a.environment_scope)
    }

    fn credential_var(spec: &GitlabTarget) -> Option<&str> {
        Some(&spec.token_env)
    }

    fn server_ca(spec: &GitlabTarget) -> Option<(&str, &std::path::Path)> {
        Some((&spec.url, spec.ca_file.as_deref()?))
    }
}

impl Target for GitlabKind {
    type Spec = GitlabTarget;
    type Dest = GitlabDest;
    type Scope = Need;
    type Item = DesiredVar;
    type Observed = Observed;
    type Op = Op;

    fn locate(&self, spec: &GitlabTarget, items: Option<&[DesiredVar]>, ctx: &Ctx<'_>, scope: &mut Need) -> GitlabDest {
        scope.0 |= items.is_some();
        Self::dest_of(spec, ctx.env)
    }

    async fn recall(&self, ctx: &Ctx<'_>) -> Vec<(GitlabDest, Need)> {
        ci_dest::recall(&self.store, ctx).await
    }

    fn desired(&self, spec: &GitlabTarget, rendered: &Rendered, ctx: &Ctx<'_>) -> Result<Vec<DesiredVar>, TargetError> {
        let address = &spec.addresses[&rendered.env];
        let dest = Self::dest_of(spec, &rendered.env);
        let mut vars = Vec::new();
        for (entry, content) in &rendered.entries {
            let Some(key) = address.keys.get(entry) else { continue };
            let text = content.expose_str().ok_or_else(|| TargetError::Encode {
                path: variable_address(&dest, key, &address.environment_scope),
                source: std::sync::Arc::new(crate::format::FormatError::NotText { name: entry.clone() }),
            })?;
            if rendered.tainted
                && let Some(reason) = mask_problem(text, spec.raw_or_default())
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
                variable_type: if text.contains('\n') { "file" } else { "env_var" }.to_owned(),
                protected: spec.protected.unwrap_or(false),
                masked: rendered.tainted,
                hidden: rendered.tainted && spec.hidden.unwrap_or(false),
                raw: spec.raw_or_default(),
                protected_set: spec.protected.is_some(),
                raw_set: spec.raw.is_some(),
                hidden_set: spec.hidden.is_some(),
                description: marker(ctx.instance, &rendered.env, &rendered.output),
                fingerprint,
                adopted: BTreeMap::new(),
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
        let state = ci_dest::load(&self.store, dest, ctx).await?;
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
        let view = View::of(observed);
        // Every key a target names, rendered or not: never pruned.
        let mut claimed: BTreeSet<(String, String)> = BTreeSet::new();
        for claim in &claims {
            let a = &claim.spec.addresses[ctx.env];
            claimed.extend(a.keys.values().map(|k| (k.clone(), a.environment_scope.clone())));
        }
        let mut wanted_by: BTreeMap<String, String> = BTreeMap::new();
        for claim in claims {
            let Some(items) = claim.items else { continue };
            match view.plan_target(dest, items, &mut wanted_by, ctx) {
                Ok(changes) => plan.changes.extend(changes.into_iter().map(|(change, what)| Planned {
                    slot: claim.slot,
                    change,
                    op: view.op(what),
                })),
                Err(e) => plan.errors.push((claim.slot, e)),
            }
        }
        if ctx.prune {
            view.plan_prunes(&mut plan, dest, &claimed, ctx);
        }
        plan
    }

    /// The variable's value as listed; a hidden one's value is not
    /// returned by GitLab: its record says what was written.
    fn held(&self, var: &DesiredVar, observed: &Observed, ctx: &Ctx<'_>) -> super::HeldItem {
        let live = observed.variables.iter().find(|v| v.key == var.key && v.environment_scope == var.environment_scope);
        let held = match (observed.skipped, live) {
            (true, _) => super::Held::Unknown("not read".to_owned()),
            (false, None) => super::Held::Absent,
            (false, Some(v)) => match &v.value {
                Some(value) => match ctx.keyed.fingerprint([(&var.key, value.expose())], var.value.is_secret()) {
                    Some(f) => super::Held::Read(f),
                    None => super::Held::Unknown("no fingerprint key for secret content".to_owned()),
                },
                None => match observed.state.items.get(&var.id()) {
                    Some(r) => super::Held::Recorded {
                        fingerprint: r.fingerprint.clone(),
                        why: "a hidden GitLab variable's value cannot be read back",
                    },
                    None => super::Held::Unknown("hidden, and no record of what was written".to_owned()),
                },
            },
        };
        super::HeldItem {
            item: format!("{} (scope {})", var.key, var.environment_scope),
            wanted: var.fingerprint.clone(),
            held,
        }
    }

    async fn apply(&self, dest: &GitlabDest, changes: Vec<Planned<Op>>, ctx: &Ctx<'_>) -> Vec<Applied> {
        let Some(base) = changes.first().map(|p| p.op.base.clone()) else { return Vec::new() };
        let token = match ci_dest::token(dest, changes.iter().any(|p| p.change.action.writes())) {
            Ok(t) => t,
            Err(e) => return Applied::all_failed(changes, || e.clone().into()),
        };
        let shown = dest.to_string();
        let api = api::Api::new(&self.client, &dest.url, &dest.owner, &token, shown.clone());
        let mut batch = Batch { api, base: base.clone(), shown, ctx, ledger: Ledger::new(base) };
        // Writes first, then deletes.
        let (deletes, writes): (Vec<_>, Vec<_>) =
            changes.into_iter().partition(|p| matches!(p.op.what, OpKind::Delete { .. }));
        for p in writes {
            batch.apply(p, None).await;
        }
        // Prune deletes only the variable the plan saw: the list is read
        // again right before the first delete (GitLab has no conditional
        // delete), after the writes.
        let now = match deletes.is_empty() || batch.ledger.stop.is_some() {
            true => None,
            false => Some(batch.api.list().await),
        };
        for p in deletes {
            batch.apply(p, now.as_ref()).await;
        }
        batch.ledger.save(&self.store, dest, ctx, false).await
    }
}

/// One destination's changes being applied.
struct Batch<'a> {
    api: api::Api<'a>,
    base: Arc<Base>,
    shown: String,
    ctx: &'a Ctx<'a>,
    ledger: Ledger,
}

impl Batch<'_> {
    /// Applies one change and records its outcome; `now`: the variables
    /// listed again before the deletes.
    async fn apply(&mut self, p: Planned<Op>, now: Option<&Result<Vec<api::LiveVariable>, CiError>>) {
        let result = self.execute(&p, now).await;
        let env = self.ctx.env;
        match (&p.op.what, &result) {
            (OpKind::Create(v) | OpKind::Update(v) | OpKind::Recreate(v), Ok(())) => {
                info!(env, dest = %self.shown, key = %v.key, scope = %v.environment_scope, action = p.change.action.name(), "variable written");
                self.ledger.written(v.id(), v.record());
            }
            (OpKind::Delete { key, scope, .. }, Ok(())) => {
                info!(env, dest = %self.shown, key = %key, scope = %scope, "variable pruned");
                self.ledger.deleted(&item_id(key, scope));
            }
            // GitLab Free: every further create would land in `*` too.
            (_, Err(e @ (CiError::RateLimited { .. } | CiError::Connect { .. } | CiError::FreeTierScope { .. }))) => {
                self.ledger.stop.get_or_insert_with(|| e.clone());
            }
            _ => {}
        }
        if let Err(e) = &result {
            warn!(env, address = %p.change.address, error = %e, "GitLab write failed");
        }
        self.ledger.outcome(p.slot, p.change, result.map_err(TargetError::from));
    }

    async fn execute(
        &mut self,
        p: &Planned<Op>,
        now: Option<&Result<Vec<api::LiveVariable>, CiError>>,
    ) -> Result<(), CiError> {
        let not_text = |v: &DesiredVar| CiError::NotText {
            dest: self.shown.clone(),
            what: format!("variable {} (environment scope {})", v.key, v.environment_scope),
        };
        match (&p.op.what, &self.ledger.stop) {
            (OpKind::Keep { id, record }, _) => {
                self.ledger.keep(id, record.as_ref());
                Ok(())
            }
            (_, Some(e)) => Err(e.clone()),
            (OpKind::Create(v), None) => match v.body() {
                Some(body) => {
                    self.api.create(&body).await.map_err(|e| free_tier_refusal(e, v, &self.base, &self.shown))
                }
                None => Err(not_text(v)),
            },
            (OpKind::Update(v), None) => {
                if p.change.action == Action::Drift {
                    warn!(dest = %self.shown, key = %v.key, scope = %v.environment_scope, "drift: variable edited in GitLab; restoring");
                }
                match v.body() {
                    Some(body) => self.api.update(&body).await,
                    None => Err(not_text(v)),
                }
            }
            (OpKind::Recreate(v), None) => match v.body() {
                Some(body) => match self.api.delete(&v.key, &v.environment_scope).await {
                    Ok(()) => self.api.create(&body).await,
                    Err(e) => Err(e),
                },
                None => Err(not_text(v)),
            },
            (OpKind::Delete { key, scope, seen }, None) => match now {
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(listed)) => match listed.iter().find(|v| v.key == *key && v.environment_scope == *scope) {
                    None => Ok(()),
                    Some(v) if v == seen.as_ref() => self.api.delete(key, scope).await,
                    Some(_) => Err(CiError::PruneModified {
                        dest: self.shown.clone(),
                        what: format!("variable {key} (environment scope {scope})"),
                        why: "it changed after this pass read it".to_owned(),
                    }),
                },
                None => self.api.delete(key, scope).await,
            },
        }
    }
}

/// A destination as the plan reads it: its variables by key and scope.
struct View<'o> {
    observed: &'o Observed,
    live: BTreeMap<(&'o str, &'o str), &'o api::LiveVariable>,
    base: Arc<Base>,
}

impl<'o> View<'o> {
    fn of(observed: &'o Observed) -> Self {
        let live = observed.variables.iter().map(|v| ((v.key.as_str(), v.environment_scope.as_str()), v)).collect();
        let base = Arc::new(Base {
            state: observed.state.clone(),
            live: observed.variables.iter().map(|v| item_id(&v.key, &v.environment_scope)).collect(),
        });
        Self { observed, live, base }
    }

    fn op(&self, what: OpKind) -> Op {
        Op { base: self.base.clone(), what }
    }

    /// The changes of one rendered target, or why none of its variables
    /// is written: a key another output of this destination writes too, a
    /// variable that is not this instance's, a value GitLab cannot mask.
    fn plan_target(
        &self,
        dest: &GitlabDest,
        items: Vec<DesiredVar>,
        wanted_by: &mut BTreeMap<String, String>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<(Change, OpKind)>, TargetError> {
        let mut changes = Vec::new();
        for mut var in items {
            let address = variable_address(dest, &var.key, &var.environment_scope);
            if let Some(first) = wanted_by.insert(var.id(), var.output.clone()) {
                let what = format!("variable {} (environment scope {})", var.key, var.environment_scope);
                return Err(
                    CiError::Duplicate { dest: dest.to_string(), what, first, second: var.output.clone() }.into()
                );
            }
            let record = self.observed.state.items.get(&var.id());
            let current = self.live.get(&(var.key.as_str(), var.environment_scope.as_str())).copied();
            if let Some(e) = self.refusal(dest, &var, current, record, ctx) {
                return Err(e);
            }
            var.keep_adopted(record);
            if var.masked
                && let Some(reason) = var.value.expose_str().and_then(|t| mask_problem(t, var.raw))
            {
                return Err(CiError::Unmaskable {
                    output: var.output.clone(),
                    entry: var.entry.clone(),
                    key: var.key.clone(),
                    dest: dest.to_string(),
                    reason: format!("{reason}; the adopted variable is expanded (raw = false)"),
                }
                .into());
            }
            changes.push(plan_variable(var, current, record, address));
        }
        Ok(changes)
    }

    /// Why `var` must not be written where it would go: a variable there that
    /// another instance marked, or nobody did and the record does not name
    /// (someone else's); or GitLab Free's single `*` group variable standing
    /// in for the scope asked for.
    fn refusal(
        &self,
        dest: &GitlabDest,
        var: &DesiredVar,
        current: Option<&api::LiveVariable>,
        record: Option<&Record>,
        ctx: &Ctx<'_>,
    ) -> Option<TargetError> {
        if let Some(l) = current {
            return match parse_marker(l.description.as_deref()) {
                Some((instance, env, _)) if instance == ctx.instance && env == ctx.env => None,
                Some((instance, env, _)) => Some(
                    CiError::OtherInstance {
                        dest: dest.to_string(),
                        what: format!("variable {} (environment scope {})", var.key, var.environment_scope),
                        owner: if instance == ctx.instance {
                            format!("{instance:?} for env {env}")
                        } else {
                            format!("{instance:?}")
                        },
                        ours: ctx.instance.to_owned(),
                        marker: var.description.clone(),
                    }
                    .into(),
                ),
                // Our record says we wrote it: someone cleared the description
                // (drift, restored).
                None if record.is_some() => None,
                None => Some(
                    CiError::Unmanaged {
                        dest: dest.to_string(),
                        what: format!("variable {} (environment scope {})", var.key, var.environment_scope),
                        marker: var.description.clone(),
                        adopt: adopt_command(dest, ctx.env),
                    }
                    .into(),
                ),
            };
        }
        // GitLab Free stored an earlier create of this env's variable with
        // scope `*` (and cfgsync, told so by the answer, did not record it):
        // creating it again would be refused, pruning it would make the next
        // pass create it again.
        let free_tier = matches!(dest.owner, Owner::Group(_))
            && var.environment_scope != "*"
            && self.live.get(&(var.key.as_str(), "*")).is_some_and(|any| {
                parse_marker(any.description.as_deref())
                    .is_some_and(|(instance, env, _)| instance == ctx.instance && env == ctx.env)
                    && !self.observed.state.items.contains_key(&item_id(&var.key, "*"))
            });
        free_tier.then(|| {
            CiError::FreeTierScope {
                dest: dest.to_string(),
                key: var.key.clone(),
                scope: var.environment_scope.clone(),
            }
            .into()
        })
    }

    /// Deletes what this instance wrote here and no target claims any more
    /// (`claimed`: key and scope): only variables marked with this instance
    /// and env and recorded as written by a target (one only adopted is
    /// not written yet), still as written.
    fn plan_prunes(
        &self,
        plan: &mut DestPlan<Op>,
        dest: &GitlabDest,
        claimed: &BTreeSet<(String, String)>,
        ctx: &Ctx<'_>,
    ) {
        let state = &self.observed.state;
        let ours: Vec<&api::LiveVariable> = self
            .observed
            .variables
            .iter()
            .filter(|v| {
                parse_marker(v.description.as_deref())
                    .is_some_and(|(instance, env, _)| instance == ctx.instance && env == ctx.env)
                    && state.items.get(&item_id(&v.key, &v.environment_scope)).is_some_and(ci::written_by_a_target)
            })
            .collect();
        let mut prunes: Vec<Planned<Op>> = Vec::new();
        for v in ours.iter().filter(|v| !claimed.contains(&(v.key.clone(), v.environment_scope.clone()))) {
            let record = &state.items[&item_id(&v.key, &v.environment_scope)];
            if let Some(why) = changed_since_written(v, record, ctx) {
                let what = format!("variable {} (environment scope {})", v.key, v.environment_scope);
                plan.errors.push((Slot::Prune, CiError::PruneModified { dest: dest.to_string(), what, why }.into()));
                continue;
            }
            let mut change =
                Change::new(KIND, variable_address(dest, &v.key, &v.environment_scope), Action::Delete, false);
            if let Some((_, _, output)) = parse_marker(v.description.as_deref()) {
                change.notes.push(format!("output {output:?} no longer writes it"));
            }
            let seen = Box::new((*v).clone());
            let delete = OpKind::Delete { key: v.key.clone(), scope: v.environment_scope.clone(), seen };
            prunes.push(Planned { slot: Slot::Prune, change, op: self.op(delete) });
        }
        plan.add_prunes(prunes, ours.len(), ctx.config.max_prune_share, ctx.allow_mass_prune, || dest.to_string());
    }
}

/// A group create refused as a duplicate although no variable of that key
/// and scope was listed, while one of scope `*` was: GitLab Free treated
/// the scope asked for as `*`.
fn free_tier_refusal(e: CiError, v: &DesiredVar, base: &Base, dest: &str) -> CiError {
    let duplicate = matches!(&e, CiError::Status { status: 400, .. })
        && v.environment_scope != "*"
        && dest.starts_with("GitLab group")
        && base.live.contains(&item_id(&v.key, "*"))
        && !base.live.contains(&v.id());
    if duplicate {
        return CiError::FreeTierScope {
            dest: dest.to_owned(),
            key: v.key.clone(),
            scope: v.environment_scope.clone(),
        };
    }
    e
}

/// `cfgsync import --env E gitlab:… --adopt`, as this destination is named.
fn adopt_command(dest: &GitlabDest, env: &str) -> String {
    let from = match &dest.owner {
        Owner::Project(p) => format!("gitlab:{p}"),
        Owner::Group(g) => format!("gitlab-group:{g}"),
    };
    let mut command = format!("cfgsync import --env {env} {from} --adopt");
    if dest.url != spec::DEFAULT_URL {
        command.push_str(&format!(" --gitlab-url {}", dest.url));
    }
    if dest.token_env != spec::DEFAULT_TOKEN_ENV {
        command.push_str(&format!(" --token-env {}", dest.token_env));
    }
    command
}

/// Why a variable cfgsync wrote is not exactly what it wrote any more
/// (its readable value or a recorded flag changed), or why that cannot be
/// told; `None` when it is.
fn changed_since_written(v: &api::LiveVariable, record: &Record, ctx: &Ctx<'_>) -> Option<String> {
    let live_attributes = [
        ("variable_type", v.variable_type.clone()),
        ("protected", v.protected.to_string()),
        ("masked", v.masked.to_string()),
        ("hidden", v.hidden.to_string()),
        ("raw", v.raw.to_string()),
    ];
    let changed: Vec<String> = live_attributes
        .iter()
        .filter_map(|(name, now)| {
            let then = record.attributes.get(*name)?;
            (then != now).then(|| format!("{name} {then} → {now}"))
        })
        .collect();
    if !changed.is_empty() {
        return Some(format!("its flags changed ({})", changed.join(", ")));
    }
    let value = v.value.as_ref()?;
    let tainted = record.fingerprint.starts_with("hmac-sha256:");
    match ctx.keyed.fingerprint([(&v.key, value.expose())], tainted) {
        Some(now) if now == record.fingerprint => None,
        Some(_) => Some("its value changed".to_owned()),
        None => Some("whether its value changed cannot be checked without the env's fingerprint key".to_owned()),
    }
}

/// One flag's change, in words where it changes what jobs get.
fn flag_note(name: &str, old: &str, new: &str) -> String {
    let why = match (name, old, new) {
        ("protected", "true", "false") => " (exposes it to unprotected branches and tags)",
        ("protected", "false", "true") => " (only pipelines of protected branches and tags get it)",
        ("raw", "false", "true") => " (stops expanding $ references in its value)",
        ("raw", "true", "false") => " ($ references in its value are expanded)",
        ("variable_type", "file", "env_var") => " (jobs get the value itself, not the path of a file holding it)",
        ("variable_type", "env_var", "file") => " (jobs get the path of a file holding the value, not the value)",
        ("masked", "true", "false") => " (its value is no longer masked in job logs)",
        _ => "",
    };
    format!("{name}: {old} → {new}{why}")
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
            flag_notes.push(flag_note(name, &old, &new));
        }
    };
    flag("variable_type", l.variable_type.clone(), var.variable_type.clone());
    flag("protected", l.protected.to_string(), var.protected.to_string());
    flag("masked", l.masked.to_string(), var.masked.to_string());
    flag("raw", l.raw.to_string(), var.raw.to_string());
    flag("description", format!("{:?}", l.description.as_deref().unwrap_or("")), format!("{:?}", var.description));
    if l.hidden != var.hidden {
        change.action = Action::Update;
        change.notes.push(format!(
            "hidden: {} → {}{}: deleted and created again (GitLab sets it only on create)",
            l.hidden,
            var.hidden,
            if l.hidden { " (its value becomes readable in GitLab)" } else { "" }
        ));
        change.notes.extend(flag_notes);
        return (change, OpKind::Recreate(Box::new(var)));
    }
    let value_differs = l.value.as_ref().map(|v| v.expose() != var.value.expose());
    let action = match value_differs {
        Some(differs) if differs || !flag_notes.is_empty() => {
            // A value GitLab masks or hides, or that cfgsync wrote from a
            // secret, stays secret after the fact: never shown.
            let old_secret = record.is_some_and(|r| r.fingerprint.starts_with("hmac-sha256:"));
            let old = l.value.as_ref().and_then(|v| v.shown()).filter(|_| !old_secret);
            if differs && let Some(new) = shown_new {
                let old = old.map_or_else(|| "(secret)".to_owned(), |o| plan::show(&o));
                change.values.push(format!("{}: {old} → {new}", var.entry));
            }
            if source_same { Action::Drift } else { Action::Update }
        }
        Some(_) => Action::Unchanged,
        // Hidden: the value cannot be read back.
        None if !source_same => {
            change.notes.push(match record {
                None => "hidden value: no record of what was written, written to be sure".to_owned(),
                Some(r) if r.fingerprint == ci::ADOPTED_FINGERPRINT => {
                    "adopted hidden variable: GitLab never shows its value, so cfgsync's is written".to_owned()
                }
                Some(_) => "hidden value changed".to_owned(),
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
        let outdated = record.is_none_or(|r| {
            !source_same || r.output != var.output || r.attributes != var.attributes() || r.adopted != var.adopted
        });
        let record = outdated.then(|| var.record());
        return (change, OpKind::Keep { id, record });
    }
    if value_differs == Some(false) {
        change.entries.clear();
    }
    (change, OpKind::Update(Box::new(var)))
}

#[cfg(test)]
mod tests;
