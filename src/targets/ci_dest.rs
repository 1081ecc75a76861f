//! What the CI kinds ([`super::gitlab`], [`super::github`]) share at a
//! destination (a GitLab project or group, a GitHub scope): whether it must
//! be read, their record of what they wrote there ([`super::state`]: found
//! again for prune, read with the items, saved after apply), the token at
//! apply, and the ledger of one apply.
//!
//! Decisions:
//! - **A destination none of whose targets rendered is not read** ([`Need`]):
//!   nothing would be written there; only prune reads one the config no
//!   longer names.
//! - **The record follows what exists**: after apply it keeps the items
//!   that existed when the pass looked or that the pass wrote, and it is
//!   saved only when it changed. When it cannot be saved, every write of
//!   the batch fails (what is not recorded would look like someone else's
//!   to the next pass).
//! - **A rate limit or an unreachable API stops the batch**: the rest fails
//!   with the same error and waits for the next pass ([`Ledger::stop`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use super::ci::{self, CiError};
use super::state::{DestState, Record, StateKey, StateStore};
use super::{Applied, Ctx, Merge, TargetError};
use crate::plan::{Change, Slot};
use crate::secret::SecretString;

/// A CI destination, as its kind names it.
pub trait CiDest: Serialize + DeserializeOwned + fmt::Display {
    /// The kind (`gitlab`, `github`), as the record keys have it.
    const KIND: &'static str;
    /// Where the record of what `instance` wrote here for `env` lives
    /// (also where `cfgsync import --adopt` records adopted items).
    fn state_key(&self, instance: &str, env: &str) -> StateKey;
    /// The environment variable holding the token for it.
    fn token_env(&self) -> &str;
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

/// The destinations of kind `D` this instance recorded writing to for
/// `ctx.env`, the config naming them or not (so that prune sees them). A
/// failure leaves them out of this pass's prune, logged at debug only: a
/// role that may not read records (a developer's `plan`) would otherwise
/// warn on every pass, and the destinations the config names still read
/// their own record, and fail loudly.
pub async fn recall<D: CiDest>(store: &StateStore, ctx: &Ctx<'_>) -> Vec<(D, Need)> {
    match store.list(D::KIND, ctx.instance, ctx.env, ctx.revision).await {
        Ok(records) => records
            .into_iter()
            .filter_map(|r| serde_json::from_value::<D>(r.dest).ok())
            .map(|d| (d, Need(true)))
            .collect(),
        Err(e) => {
            debug!(env = ctx.env, kind = D::KIND, error = %e, "cannot list the records; destinations no target names are not pruned in this pass");
            Vec::new()
        }
    }
}

/// The record of what this instance wrote at `dest` for `ctx.env`.
pub async fn load<D: CiDest>(store: &StateStore, dest: &D, ctx: &Ctx<'_>) -> Result<DestState, TargetError> {
    let key = dest.state_key(ctx.instance, ctx.env);
    store.load(&key).await.map_err(|cause| TargetError::State { path: store.describe(&key), cause })
}

/// The token to apply a batch with: a batch that writes needs it; one that
/// only brings the record up to date does not (an empty one then).
pub fn token<D: CiDest>(dest: &D, writes: bool) -> Result<SecretString, CiError> {
    match ci::token(dest.token_env(), &dest.to_string()) {
        Ok(t) => Ok(t),
        Err(e) if writes => Err(e),
        Err(_) => Ok(SecretString::default()),
    }
}

/// What apply starts from at a destination: the record as observed and the
/// items that exist (a record of an item that is gone serves nothing).
#[derive(Debug, Default)]
pub struct Base {
    pub state: DestState,
    pub live: BTreeSet<String>,
}

/// One apply at a destination: the record as it becomes, the items the
/// pass wrote or kept, the outcomes, and what stops the rest.
pub struct Ledger {
    base: Arc<Base>,
    pub state: DestState,
    touched: BTreeSet<String>,
    out: Vec<Applied>,
    /// After a rate limit or an unreachable API, the rest waits for the next pass.
    pub stop: Option<CiError>,
}

impl Ledger {
    pub fn new(base: Arc<Base>) -> Self {
        Self { state: base.state.clone(), base, touched: BTreeSet::new(), out: Vec::new(), stop: None }
    }

    /// An item left as it is; `record`: its record, when the one there is outdated.
    pub fn keep(&mut self, id: &str, record: Option<&Record>) {
        self.touched.insert(id.to_owned());
        if let Some(r) = record {
            self.state.items.insert(id.to_owned(), r.clone());
        }
    }

    pub fn written(&mut self, id: String, record: Record) {
        self.touched.insert(id.clone());
        self.state.items.insert(id, record);
    }

    pub fn deleted(&mut self, id: &str) {
        self.state.items.remove(id);
    }

    /// The outcome of one change.
    pub fn outcome(&mut self, slot: Slot, change: Change, result: Result<(), TargetError>) {
        self.out.push(Applied { slot, change, result, reloaded: false });
    }

    /// Saves the record when it changed (or `force`: the pass saved one
    /// before it wrote), and returns the outcomes; when it cannot be saved,
    /// every write of the batch fails.
    pub async fn save<D: CiDest>(self, store: &StateStore, dest: &D, ctx: &Ctx<'_>, force: bool) -> Vec<Applied> {
        let Ledger { base, mut state, touched, mut out, .. } = self;
        state.items.retain(|id, _| base.live.contains(id) || touched.contains(id));
        if state.items == base.state.items && !force {
            return out;
        }
        state.dest = serde_json::to_value(dest).unwrap_or_default();
        let key = dest.state_key(ctx.instance, ctx.env);
        if let Err(cause) = store.save(&key, &state).await {
            let path = store.describe(&key);
            warn!(env = ctx.env, dest = %dest, path = %path, error = %cause, "cannot save the record of what was written");
            for a in out.iter_mut().filter(|a| a.result.is_ok() && a.change.action.writes()) {
                a.result = Err(TargetError::State { path: path.clone(), cause: cause.clone() });
            }
        }
        out
    }
}
