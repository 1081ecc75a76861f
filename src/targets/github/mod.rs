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
//!   someone else — drift, re-written. GitHub's timestamps have one-second
//!   resolution, so a write within the second after cfgsync's own cannot be
//!   told apart (on GitHub either).
//! - **Ownership**: GitHub has no field to mark an item, so what this
//!   instance wrote is what its record names, and an existing name the
//!   record does not name is someone else's (by hand, another tool, another
//!   instance, or a lost record): never written, recorded or deleted; the
//!   error names the `cfgsync import --adopt` that adopts it (a secret is
//!   then written once with cfgsync's value: GitHub never shows it). A
//!   secret is created only after the names were listed again (GitHub's
//!   PUT would replace one made in the meantime).
//! - **Prune** deletes only recorded items a target wrote (not ones only
//!   adopted) that no target claims any more and that are still as written
//!   (a secret's `updated_at`, a variable's value, an organization item's
//!   visibility) — with every source read, within `max_prune_share`.
//! - **Limits** are checked before anything is sent: 48 KB a value, and the
//!   number of secrets and variables a scope may hold.
//! - **Environments** are never created: a missing one fails its targets
//!   with GitHub's 404 explained.
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

use tracing::{info, warn};

use super::ci::{self, CiError};
use super::ci_dest::{self, Base, CiDest, Ledger, Need};
use super::registry::{Kind, Problems, Setup, SpecInput};
use super::state::{DestState, Record, StateKey, StateStore};
use super::{Applied, Claim, Ctx, DestPlan, Target, TargetError};
use crate::plan::{self, Action, Change, Planned, Slot};
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

impl CiDest for GithubDest {
    const KIND: &'static str = KIND;

    fn state_key(&self, instance: &str, env: &str) -> StateKey {
        StateKey {
            kind: KIND,
            instance: instance.to_owned(),
            env: env.to_owned(),
            dest: format!("{}/{}/{}", self.api_url, self.scope.segments().join("/"), self.token_env),
        }
    }

    fn token_env(&self) -> &str {
        &self.token_env
    }
}

impl GithubDest {
    /// `cfgsync import --env E github:… --adopt`, as this scope is named.
    fn adopt_command(&self, env: &str) -> String {
        let from = match &self.scope {
            Scope::Repo { owner, repo } => format!("github:{owner}/{repo}"),
            Scope::Environment { owner, repo, environment } => format!("github-env:{owner}/{repo}/{environment}"),
            Scope::Org { org } => format!("github-org:{org}"),
        };
        let mut command = format!("cfgsync import --env {env} {from} --adopt");
        if self.api_url != spec::DEFAULT_API_URL {
            command.push_str(&format!(" --github-url {}", self.api_url));
        }
        if self.token_env != spec::DEFAULT_TOKEN_ENV {
            command.push_str(&format!(" --token-env {}", self.token_env));
        }
        command
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
    /// The config sets `visibility` (else an adopted item keeps its own).
    pub visibility_set: bool,
    pub selected_repository_ids: Vec<u64>,
    pub fingerprint: String,
    /// What an adopted item had (from the record), carried along.
    pub adopted: BTreeMap<String, String>,
}

impl DesiredItem {
    fn id(&self) -> String {
        item_id(self.part, &self.name)
    }

    fn record(&self, updated_at: Option<String>) -> Record {
        Record {
            fingerprint: self.fingerprint.clone(),
            updated_at,
            output: self.output.clone(),
            attributes: self.visibility.iter().map(|v| ("visibility".to_owned(), v.clone())).collect(),
            adopted: self.adopted.clone(),
        }
    }

    /// An adopted organization item keeps its visibility where the config
    /// does not set one.
    fn keep_adopted(&mut self, record: Option<&Record>) {
        let Some(r) = record else { return };
        self.adopted = r.adopted.clone();
        if let (false, Some(_), Some(v)) = (self.visibility_set, &self.visibility, r.adopted.get("visibility")) {
            self.visibility = Some(v.clone());
        }
    }

    fn visibility(&self) -> Option<api::Visibility<'_>> {
        self.visibility
            .as_deref()
            .map(|v| api::Visibility { visibility: v, selected_repository_ids: &self.selected_repository_ids })
    }
}

/// A scope as read.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub secrets: Vec<api::LiveSecret>,
    pub variables: Vec<api::LiveVariable>,
    pub state: DestState,
    /// Not read: no target there rendered.
    pub skipped: bool,
}

#[derive(Debug)]
pub struct Op {
    base: Arc<Base>,
    what: OpKind,
}

#[derive(Debug)]
enum OpKind {
    /// `create`: none was listed; checked again right before the PUT,
    /// which would replace one made in between.
    PutSecret {
        item: Box<DesiredItem>,
        create: bool,
    },
    CreateVariable(Box<DesiredItem>),
    UpdateVariable(Box<DesiredItem>),
    Delete {
        part: Part,
        name: String,
        /// The item as the plan saw it: deleted only while it still is.
        seen: Box<Seen>,
    },
    Keep {
        id: String,
        record: Option<Record>,
    },
}

/// What the plan saw of an item it prunes.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    updated_at: String,
    visibility: Option<String>,
    /// Variables only.
    value: Option<Content>,
}

impl Seen {
    fn of_secret(s: &api::LiveSecret) -> Seen {
        Seen { updated_at: s.updated_at.clone(), visibility: s.visibility.clone(), value: None }
    }

    fn of_variable(v: &api::LiveVariable) -> Seen {
        Seen { updated_at: v.updated_at.clone(), visibility: v.visibility.clone(), value: Some(v.value.clone()) }
    }
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

    /// The items of the collections `parts` as they are now, by record id.
    async fn seen_now(&self, api: &api::Api<'_>, parts: &BTreeSet<Part>) -> Result<BTreeMap<String, Seen>, CiError> {
        let mut now = BTreeMap::new();
        if parts.contains(&Part::Secret) {
            for s in api.list_secrets().await? {
                now.insert(item_id(Part::Secret, &s.name.to_ascii_uppercase()), Seen::of_secret(&s));
            }
        }
        if parts.contains(&Part::Variable) {
            for v in api.list_variables().await? {
                now.insert(item_id(Part::Variable, &v.name.to_ascii_uppercase()), Seen::of_variable(&v));
            }
        }
        Ok(now)
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

fn unrecorded(dest: &GithubDest, part: Part, name: &str, env: &str) -> CiError {
    CiError::Unrecorded {
        dest: dest.to_string(),
        what: format!("{} {name}", part.name()),
        adopt: dest.adopt_command(env),
        after: match part {
            Part::Secret => " (GitHub never shows a secret's value: adopting it records it as this instance's, and the next pass writes cfgsync's value over it)".to_owned(),
            Part::Variable => String::new(),
        },
    }
}

/// Refuses every target that creates secrets (or variables) at a scope
/// that would then hold more than GitHub allows: nothing of theirs is
/// sent. Writes come before deletes, so what is pruned does not count.
fn refuse_over_the_limits(
    dest: &GithubDest,
    observed: &Observed,
    planned: &mut Vec<(Slot, Vec<Planned<Op>>)>,
    errors: &mut Vec<(Slot, TargetError)>,
) {
    for (part, live) in [(Part::Secret, observed.secrets.len()), (Part::Variable, observed.variables.len())] {
        let creates = |changes: &[Planned<Op>]| {
            changes
                .iter()
                .filter(|p| {
                    p.change.action == Action::Create
                        && match &p.op.what {
                            OpKind::PutSecret { .. } => part == Part::Secret,
                            OpKind::CreateVariable(_) => part == Part::Variable,
                            _ => false,
                        }
                })
                .count()
        };
        let count = live + planned.iter().map(|(_, c)| creates(c)).sum::<usize>();
        let (limit, scope) = api::max_items(&dest.scope, part == Part::Secret);
        if count <= limit {
            continue;
        }
        planned.retain(|(slot, changes)| {
            if creates(changes) == 0 {
                return true;
            }
            let what = part.collection();
            errors.push((*slot, CiError::TooMany { dest: dest.to_string(), what, count, limit, scope }.into()));
            false
        });
    }
}

/// Why a secret cfgsync wrote is not the one it wrote any more, or cannot
/// be told to be: written since (`updated_at` moved), or its visibility
/// changed.
fn secret_changed(live: &api::LiveSecret, record: &Record) -> Option<String> {
    match record.updated_at.as_deref() {
        Some(at) if at == live.updated_at => {}
        Some(at) => return Some(format!("it was written at {} (cfgsync wrote it at {at})", live.updated_at)),
        None => return Some("when cfgsync wrote it is not recorded, so a later write cannot be ruled out".to_owned()),
    }
    visibility_changed(live.visibility.as_deref(), record)
}

/// Why a variable cfgsync wrote is not the one it wrote any more: another
/// value, or another visibility.
fn variable_changed(live: &api::LiveVariable, record: &Record, ctx: &Ctx<'_>) -> Option<String> {
    if ctx.keyed.fingerprint([(&live.name.to_ascii_uppercase(), live.value.expose())], false).as_deref()
        != Some(record.fingerprint.as_str())
    {
        return Some("its value changed".to_owned());
    }
    visibility_changed(live.visibility.as_deref(), record)
}

fn visibility_changed(live: Option<&str>, record: &Record) -> Option<String> {
    let then = record.attributes.get("visibility")?;
    (Some(then.as_str()) != live).then(|| format!("its visibility changed ({then} → {})", live.unwrap_or("none")))
}

/// A visibility change, in words.
fn visibility_note(old: Option<&str>, new: Option<&str>) -> String {
    let why = match new {
        Some("all") => " (every repository of the organization gets it, public ones too)",
        Some("private") => " (only private and internal repositories get it)",
        Some("selected") => " (only the selected repositories get it)",
        _ => "",
    };
    format!("visibility: {} → {}{why}", old.unwrap_or("?"), new.unwrap_or("?"))
}

impl Kind for GithubKind {
    type Raw = spec::RawGithubTarget;
    const SHARED: bool = true;
    const KEYED: bool = true;

    fn build(_: &str, raw: spec::RawGithubTarget, input: &SpecInput<'_>) -> Result<GithubTarget, Problems> {
        spec::build(raw, input)
    }

    fn new(setup: &Setup<'_>) -> Self {
        GithubKind::new(ci::Client::for_config(setup.config), setup.state.clone())
    }

    fn kind_name(_: &GithubTarget) -> &'static str {
        KIND
    }

    fn address(spec: &GithubTarget, env: &str) -> String {
        Self::dest_of(spec, env).to_string()
    }

    fn credential_var(spec: &GithubTarget) -> Option<&str> {
        Some(&spec.token_env)
    }

    fn server_ca(spec: &GithubTarget) -> Option<(&str, &std::path::Path)> {
        Some((&spec.api_url, spec.ca_file.as_deref()?))
    }
}

impl Target for GithubKind {
    type Spec = GithubTarget;
    type Dest = GithubDest;
    type Scope = Need;
    type Item = DesiredItem;
    type Observed = Observed;
    type Op = Op;

    fn locate(&self, spec: &GithubTarget, items: Option<&[DesiredItem]>, ctx: &Ctx<'_>, need: &mut Need) -> GithubDest {
        need.0 |= items.is_some();
        Self::dest_of(spec, ctx.env)
    }

    async fn recall(&self, ctx: &Ctx<'_>) -> Vec<(GithubDest, Need)> {
        ci_dest::recall(&self.store, ctx).await
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
                    source: std::sync::Arc::new(crate::format::FormatError::NotText { name: entry.clone() }),
                });
            }
            if content.len() > api::MAX_VALUE_BYTES {
                return Err(CiError::TooLarge {
                    dest: dest.to_string(),
                    what: format!("{} {name}", part.name()),
                    output: rendered.output.clone(),
                    entry: entry.clone(),
                    size: content.len(),
                    limit: api::MAX_VALUE_BYTES,
                }
                .into());
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
                visibility_set: spec.visibility_set,
                selected_repository_ids: spec.selected_repository_ids.clone(),
                fingerprint,
                adopted: BTreeMap::new(),
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
        let state = ci_dest::load(&self.store, dest, ctx).await?;
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
        let view = View::of(observed);
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
        let mut planned: Vec<(Slot, Vec<Planned<Op>>)> = Vec::new();
        for claim in claims {
            let Some(items) = claim.items else { continue };
            match view.plan_target(dest, items, &mut wanted_by, ctx) {
                Ok(changes) => planned.push((
                    claim.slot,
                    changes
                        .into_iter()
                        .map(|(change, what)| Planned { slot: claim.slot, change, op: view.op(what) })
                        .collect(),
                )),
                Err(e) => plan.errors.push((claim.slot, e)),
            }
        }
        refuse_over_the_limits(dest, observed, &mut planned, &mut plan.errors);
        plan.changes.extend(planned.into_iter().flat_map(|(_, changes)| changes));
        if ctx.prune {
            view.plan_prunes(&mut plan, dest, &claimed, ctx);
        }
        plan
    }

    /// A variable's value as listed; a secret's value cannot be read back
    /// from GitHub: the record of what was written answers, and says so.
    fn held(&self, item: &DesiredItem, observed: &Observed, ctx: &Ctx<'_>) -> super::HeldItem {
        let secret = item.value.is_secret();
        let held = if observed.skipped {
            super::Held::Unknown("not read".to_owned())
        } else {
            match item.part {
                Part::Variable => match observed.variables.iter().find(|v| v.name.eq_ignore_ascii_case(&item.name)) {
                    None => super::Held::Absent,
                    Some(v) => match ctx.keyed.fingerprint([(&item.name, v.value.expose())], secret) {
                        Some(f) => super::Held::Read(f),
                        None => super::Held::Unknown("no fingerprint key for secret content".to_owned()),
                    },
                },
                Part::Secret => match observed.secrets.iter().find(|s| s.name.eq_ignore_ascii_case(&item.name)) {
                    None => super::Held::Absent,
                    Some(live) => {
                        match observed.state.items.get(&item.id()) {
                            // Written since by someone else: the record no longer says.
                            Some(r) if r.updated_at.as_deref().is_some_and(|u| u != live.updated_at) => {
                                super::Held::Unknown(
                                    "changed since cfgsync wrote it (GitHub secrets cannot be read back)".to_owned(),
                                )
                            }
                            Some(r) => super::Held::Recorded {
                                fingerprint: r.fingerprint.clone(),
                                why: "GitHub secrets cannot be read back",
                            },
                            None => super::Held::Unknown(
                                "GitHub secrets cannot be read back, and there is no record of what was written"
                                    .to_owned(),
                            ),
                        }
                    }
                },
            }
        };
        super::HeldItem { item: format!("{} {}", item.part.name(), item.name), wanted: item.fingerprint.clone(), held }
    }

    async fn apply(&self, dest: &GithubDest, changes: Vec<Planned<Op>>, ctx: &Ctx<'_>) -> Vec<Applied> {
        let Some(base) = changes.first().map(|p| p.op.base.clone()) else { return Vec::new() };
        let token = match ci_dest::token(dest, changes.iter().any(|p| p.change.action.writes())) {
            Ok(t) => t,
            Err(e) => return Applied::all_failed(changes, || e.clone().into()),
        };
        let shown = dest.to_string();
        let api = api::Api::new(&self.client, &dest.api_url, &dest.scope, &token, shown.clone());
        let (deletes, writes): (Vec<_>, Vec<_>) =
            changes.into_iter().partition(|p| matches!(p.op.what, OpKind::Delete { .. }));
        let existing = existing_secrets(&api, &writes).await;
        let intent = self.record_intents(dest, &base.state, &writes, ctx).await;
        let intent_saved = intent == Some(Ok(()));
        let mut batch = Batch {
            existing,
            api,
            dest,
            ctx,
            shown,
            intent: intent.unwrap_or(Ok(())),
            key: None,
            sealed: Vec::new(),
            ledger: Ledger::new(base),
        };
        for p in writes {
            batch.apply(p, None).await;
        }
        // Prune deletes only the items the plan saw: their lists are read
        // again right before the first delete (GitHub has no conditional
        // delete), after the writes.
        let parts: BTreeSet<Part> = deletes
            .iter()
            .filter_map(|p| match &p.op.what {
                OpKind::Delete { part, .. } => Some(*part),
                _ => None,
            })
            .collect();
        let now = match deletes.is_empty() || batch.ledger.stop.is_some() {
            true => None,
            false => Some(self.seen_now(&batch.api, &parts).await),
        };
        for p in deletes {
            batch.apply(p, now.as_ref()).await;
        }
        batch.read_back_updated_at().await;
        batch.ledger.save(&self.store, dest, ctx, intent_saved).await
    }
}

/// GitHub's PUT creates *or replaces* a secret: one made by someone since
/// the pass listed them must not be written over. The names are read again
/// right before creating any (one list).
async fn existing_secrets(api: &api::Api<'_>, writes: &[Planned<Op>]) -> Result<BTreeSet<String>, CiError> {
    if !writes.iter().any(|p| matches!(p.op.what, OpKind::PutSecret { create: true, .. })) {
        return Ok(BTreeSet::new());
    }
    api.list_secrets().await.map(|l| l.into_iter().map(|s| s.name.to_ascii_uppercase()).collect())
}

impl GithubKind {
    /// Records what is about to be created before creating it: an item
    /// cfgsync created but could not record afterwards (the store failed)
    /// would otherwise look like someone else's to the next pass. Recorded
    /// items that do not come to exist are dropped by the save after apply.
    /// `None` when nothing is created; else whether the record was saved
    /// (or where and why not).
    async fn record_intents(
        &self,
        dest: &GithubDest,
        state: &DestState,
        writes: &[Planned<Op>],
        ctx: &Ctx<'_>,
    ) -> Option<Result<(), (String, String)>> {
        let created: Vec<&DesiredItem> = writes
            .iter()
            .filter_map(|p| match &p.op.what {
                OpKind::PutSecret { item, create: true } | OpKind::CreateVariable(item) => Some(item.as_ref()),
                _ => None,
            })
            .collect();
        if created.is_empty() {
            return None;
        }
        let mut planned = state.clone();
        for item in created {
            planned.items.insert(item.id(), item.record(None));
        }
        planned.dest = serde_json::to_value(dest).unwrap_or_default();
        let key = dest.state_key(ctx.instance, ctx.env);
        Some(self.store.save(&key, &planned).await.map_err(|cause| (self.store.describe(&key), cause)))
    }
}

/// One scope's changes being applied.
struct Batch<'a> {
    api: api::Api<'a>,
    dest: &'a GithubDest,
    ctx: &'a Ctx<'a>,
    shown: String,
    /// The secrets listed right before the first create.
    existing: Result<BTreeSet<String>, CiError>,
    /// Whether what is created was recorded first (where and why not).
    intent: Result<(), (String, String)>,
    /// The scope's public key, fetched for the first secret.
    key: Option<api::PublicKey>,
    /// Secrets written in this pass (record id, name): their `updated_at`
    /// is read afterwards.
    sealed: Vec<(String, String)>,
    ledger: Ledger,
}

impl Batch<'_> {
    /// Applies one change and records its outcome; `now`: the items listed
    /// again before the deletes.
    async fn apply(&mut self, p: Planned<Op>, now: Option<&Result<BTreeMap<String, Seen>, CiError>>) {
        let env = self.ctx.env;
        if p.change.action == Action::Drift {
            warn!(env, address = %p.change.address, "drift: written in GitHub by someone else; restoring");
        }
        let creates = matches!(p.op.what, OpKind::PutSecret { create: true, .. } | OpKind::CreateVariable(_));
        if let (true, Err((path, cause))) = (creates, &self.intent) {
            warn!(env, address = %p.change.address, path = %path, error = %cause, "not created: the record of what is created cannot be saved first");
            let error = TargetError::State { path: path.clone(), cause: cause.clone() };
            self.ledger.outcome(p.slot, p.change, Err(error));
            return;
        }
        let result = self.execute(&p.op.what, now).await;
        match (&p.op.what, &result) {
            (OpKind::PutSecret { item, .. }, Ok(())) => {
                info!(env, dest = %self.shown, name = %item.name, action = p.change.action.name(), "secret written");
                self.ledger.written(item.id(), item.record(None));
                self.sealed.push((item.id(), item.name.clone()));
            }
            (OpKind::CreateVariable(item) | OpKind::UpdateVariable(item), Ok(())) => {
                info!(env, dest = %self.shown, name = %item.name, action = p.change.action.name(), "variable written");
                self.ledger.written(item.id(), item.record(None));
            }
            (OpKind::Delete { part, name, .. }, Ok(())) => {
                info!(env, dest = %self.shown, what = part.name(), name = %name, "pruned");
                self.ledger.deleted(&item_id(*part, name));
            }
            (_, Err(e @ (CiError::RateLimited { .. } | CiError::Connect { .. }))) => {
                self.ledger.stop.get_or_insert_with(|| e.clone());
            }
            _ => {}
        }
        if let Err(e) = &result {
            warn!(env, address = %p.change.address, error = %e, "GitHub write failed");
        }
        self.ledger.outcome(p.slot, p.change, result.map_err(TargetError::from));
    }

    async fn execute(
        &mut self,
        op: &OpKind,
        now: Option<&Result<BTreeMap<String, Seen>, CiError>>,
    ) -> Result<(), CiError> {
        let not_text =
            |item: &DesiredItem| CiError::NotText { dest: self.shown.clone(), what: format!("variable {}", item.name) };
        match (op, &self.ledger.stop) {
            (OpKind::Keep { id, record }, _) => {
                self.ledger.keep(id, record.as_ref());
                Ok(())
            }
            (_, Some(e)) => Err(e.clone()),
            (OpKind::PutSecret { item, create }, None) => self.put_secret(item, *create).await,
            (OpKind::CreateVariable(item), None) => match item.value.expose_str() {
                Some(value) => self.api.create_variable(&item.name, value, item.visibility()).await,
                None => Err(not_text(item)),
            },
            (OpKind::UpdateVariable(item), None) => match item.value.expose_str() {
                Some(value) => self.api.update_variable(&item.name, value, item.visibility()).await,
                None => Err(not_text(item)),
            },
            (OpKind::Delete { part, name, seen }, None) => match now {
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(listed)) => match listed.get(&item_id(*part, &name.to_ascii_uppercase())) {
                    None => Ok(()),
                    Some(s) if s == seen.as_ref() => self.api.delete(part.collection(), name).await,
                    Some(_) => Err(CiError::PruneModified {
                        dest: self.shown.clone(),
                        what: format!("{} {name}", part.name()),
                        why: "it changed after this pass read it".to_owned(),
                    }),
                },
                None => self.api.delete(part.collection(), name).await,
            },
        }
    }

    /// Seals and writes a secret, unless one was made at its name since
    /// the pass listed them (`create`); the scope's key is fetched once.
    async fn put_secret(&mut self, item: &DesiredItem, create: bool) -> Result<(), CiError> {
        let made_since = match (create, &self.existing) {
            (false, _) => false,
            (true, Ok(names)) => names.contains(&item.name.to_ascii_uppercase()),
            (true, Err(e)) => return Err(e.clone()),
        };
        if made_since {
            return Err(unrecorded(self.dest, Part::Secret, &item.name, self.ctx.env));
        }
        let key = match self.key.take() {
            Some(k) => k,
            None => self.api.public_key().await?,
        };
        let written = self.api.put_secret(&item.name, &key, item.value.expose(), item.visibility()).await;
        self.key = Some(key);
        written
    }

    /// The `updated_at` of the secrets written in this pass, to recognise
    /// the next write that is not cfgsync's.
    async fn read_back_updated_at(&mut self) {
        if self.sealed.is_empty() {
            return;
        }
        match self.api.list_secrets().await {
            Ok(listed) => {
                let at: BTreeMap<String, String> =
                    listed.into_iter().map(|s| (s.name.to_ascii_uppercase(), s.updated_at)).collect();
                for (id, name) in &self.sealed {
                    if let Some(r) = self.ledger.state.items.get_mut(id) {
                        r.updated_at = at.get(name).cloned();
                    }
                }
            }
            Err(e) => {
                warn!(env = self.ctx.env, dest = %self.shown, error = %e, "cannot read back when the secrets were written; they are written again next pass");
            }
        }
    }
}

/// A scope as the plan reads it: its secrets and variables by name
/// (GitHub names are case-insensitive and listed upper-case).
struct View<'o> {
    observed: &'o Observed,
    secrets: BTreeMap<String, &'o api::LiveSecret>,
    variables: BTreeMap<String, &'o api::LiveVariable>,
    base: Arc<Base>,
}

impl<'o> View<'o> {
    fn of(observed: &'o Observed) -> Self {
        let secrets: BTreeMap<String, &api::LiveSecret> =
            observed.secrets.iter().map(|s| (s.name.to_ascii_uppercase(), s)).collect();
        let variables: BTreeMap<String, &api::LiveVariable> =
            observed.variables.iter().map(|v| (v.name.to_ascii_uppercase(), v)).collect();
        let live: BTreeSet<String> = secrets
            .keys()
            .map(|n| item_id(Part::Secret, n))
            .chain(variables.keys().map(|n| item_id(Part::Variable, n)))
            .collect();
        let base = Arc::new(Base { state: observed.state.clone(), live });
        Self { observed, secrets, variables, base }
    }

    fn op(&self, what: OpKind) -> Op {
        Op { base: self.base.clone(), what }
    }

    /// Whether `part` `name` (upper-case) exists.
    fn exists(&self, part: Part, name: &str) -> bool {
        match part {
            Part::Secret => self.secrets.contains_key(name),
            Part::Variable => self.variables.contains_key(name),
        }
    }

    /// The changes of one rendered target, or why none of its items is
    /// written: a name another output of this scope writes too, or one
    /// held by an item cfgsync has no record of.
    fn plan_target(
        &self,
        dest: &GithubDest,
        items: Vec<DesiredItem>,
        wanted_by: &mut BTreeMap<String, String>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<(Change, OpKind)>, TargetError> {
        let state = &self.observed.state;
        let mut changes = Vec::new();
        for mut item in items {
            if let Some(first) = wanted_by.insert(item.id(), item.output.clone()) {
                let what = format!("{} {}", item.part.name(), item.name);
                return Err(
                    CiError::Duplicate { dest: dest.to_string(), what, first, second: item.output.clone() }.into()
                );
            }
            let address = item_address(dest, item.part, &item.name);
            let record = state.items.get(&item.id());
            let live_name = item.name.to_ascii_uppercase();
            // No mark on GitHub: an item the record does not name is
            // someone else's, even with the value cfgsync would write;
            // so is the name when someone else's secret (variable)
            // holds it and cfgsync would write a variable (secret).
            if self.exists(item.part, &live_name) && record.is_none() {
                return Err(unrecorded(dest, item.part, &item.name, ctx.env).into());
            }
            let other = match item.part {
                Part::Secret => Part::Variable,
                Part::Variable => Part::Secret,
            };
            if self.exists(other, &live_name) && !state.items.contains_key(&item_id(other, &item.name)) {
                return Err(unrecorded(dest, other, &item.name, ctx.env).into());
            }
            item.keep_adopted(record);
            changes.push(match item.part {
                Part::Secret => plan_secret(item, self.secrets.get(&live_name).copied(), record, address),
                Part::Variable => plan_variable(item, self.variables.get(&live_name).copied(), record, address),
            });
        }
        Ok(changes)
    }

    /// Deletes what this instance wrote here and no target claims any
    /// more: items recorded as written by a target (one only adopted is not
    /// written yet), still there, and still as written.
    fn plan_prunes(&self, plan: &mut DestPlan<Op>, dest: &GithubDest, claimed: &BTreeSet<String>, ctx: &Ctx<'_>) {
        let ours: Vec<(&String, &Record)> = self
            .observed
            .state
            .items
            .iter()
            .filter(|(id, r)| self.base.live.contains(*id) && ci::written_by_a_target(r))
            .collect();
        let mut prunes: Vec<Planned<Op>> = Vec::new();
        for (id, record) in ours.iter().filter(|(id, _)| !claimed.contains(*id)) {
            let Some((part, name)) = Part::of_id(id) else { continue };
            let (why, seen) = match part {
                Part::Secret => {
                    let Some(s) = self.secrets.get(name) else { continue };
                    (secret_changed(s, record), Seen::of_secret(s))
                }
                Part::Variable => {
                    let Some(v) = self.variables.get(name) else { continue };
                    (variable_changed(v, record, ctx), Seen::of_variable(v))
                }
            };
            if let Some(why) = why {
                let what = format!("{} {name}", part.name());
                plan.errors.push((Slot::Prune, CiError::PruneModified { dest: dest.to_string(), what, why }.into()));
                continue;
            }
            let mut change = Change::new(KIND, item_address(dest, part, name), Action::Delete, false);
            change.notes.push(format!("output {:?} no longer writes it", record.output));
            let delete = OpKind::Delete { part, name: name.to_owned(), seen: Box::new(seen) };
            prunes.push(Planned { slot: Slot::Prune, change, op: self.op(delete) });
        }
        plan.add_prunes(prunes, ours.len(), ctx.config.max_prune_share, ctx.allow_mass_prune, || dest.to_string());
    }
}

fn new_change(item: &DesiredItem, address: String, action: Action) -> Change {
    let mut change = Change::new(KIND, address, action, item.value.is_secret());
    change.content_hash =
        plan::content_hash(&[item.fingerprint.as_bytes(), item.visibility.as_deref().unwrap_or_default().as_bytes()]);
    change.entries = vec![item.entry.clone()];
    change
}

const ADOPTED_NOTE: &str = "adopted with `cfgsync import --adopt`: written as cfgsync's from now on";

fn plan_secret(
    item: DesiredItem,
    live: Option<&api::LiveSecret>,
    record: Option<&Record>,
    address: String,
) -> (Change, OpKind) {
    let Some(l) = live else {
        let mut change = new_change(&item, address, Action::Create);
        change.notes.push("secret content masked".to_owned());
        return (change, OpKind::PutSecret { item: Box::new(item), create: true });
    };
    let mut notes = Vec::new();
    let visibility_differs = item.visibility.is_some() && l.visibility != item.visibility;
    if visibility_differs {
        notes.push(visibility_note(l.visibility.as_deref(), item.visibility.as_deref()));
    }
    let action = match record {
        // The planner refuses an unrecorded secret before it gets here.
        None => return (new_change(&item, address, Action::Unchanged), OpKind::Keep { id: item.id(), record: None }),
        Some(r) if r.fingerprint == ci::ADOPTED_FINGERPRINT => {
            notes.push(format!("{ADOPTED_NOTE}; GitHub cannot show the secret's value, so it is written"));
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
        Some(_) if visibility_differs => Action::Update,
        Some(r) => {
            let mut change = new_change(&item, address, Action::Unchanged);
            change.entries.clear();
            let outdated = r.output != item.output || *r != item.record(r.updated_at.clone());
            let record = outdated.then(|| item.record(r.updated_at.clone()));
            return (change, OpKind::Keep { id: item.id(), record });
        }
    };
    let mut change = new_change(&item, address, action);
    change.notes = notes;
    (change, OpKind::PutSecret { item: Box::new(item), create: false })
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
    let value_differs = l.value.expose() != item.value.expose();
    let visibility_differs = item.visibility.is_some() && l.visibility != item.visibility;
    let source_same = record.map(|r| r.fingerprint.as_str()) == Some(item.fingerprint.as_str());
    if !value_differs && !visibility_differs {
        let mut change = new_change(&item, address, Action::Unchanged);
        change.entries.clear();
        let record = (!source_same || record.is_some_and(|r| *r != item.record(None))).then(|| item.record(None));
        return (change, OpKind::Keep { id: item.id(), record });
    }
    let mut change = new_change(&item, address, if source_same { Action::Drift } else { Action::Update });
    if value_differs {
        let old = l.value.shown().map_or_else(|| "(secret)".to_owned(), |v| plan::show(&v));
        change.values.extend(new.map(|v| format!("{}: {old} → {v}", item.entry)));
    } else {
        change.entries.clear();
    }
    if visibility_differs {
        change.notes.push(visibility_note(l.visibility.as_deref(), item.visibility.as_deref()));
    }
    if record.is_some_and(|r| r.fingerprint == ci::ADOPTED_FINGERPRINT) {
        change.notes.push(ADOPTED_NOTE.to_owned());
    }
    (change, OpKind::UpdateVariable(Box::new(item)))
}

#[cfg(test)]
mod tests;
