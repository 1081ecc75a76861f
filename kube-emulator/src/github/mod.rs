//! A GitHub REST emulator for Actions secrets and variables of
//! repositories, organizations and repository environments (dev-only).
//! `docs/github-emulator.md` lists what it implements and where it differs
//! from GitHub; `tests/github_contract.rs` pins the semantics, and
//! `tests/github_openapi.rs` checks every kind of request and answer against
//! GitHub's published OpenAPI description through [`prism`].
//!
//! ```no_run
//! use kube_emulator::{GithubEmulator, GithubScope};
//!
//! let github = GithubEmulator::start(); // its own thread, 127.0.0.1:<free port>
//! // ... point the code under test at github.url() with any bearer token ...
//! let repo = GithubScope::repo("acme", "app");
//! let plaintext = github.secret_plaintext(&repo, "DB_PASSWORD"); // decrypted server-side
//! ```
//!
//! Decisions:
//! - Every repository and organization named in a request exists, with any
//!   token; names are case-insensitive. A repository environment exists
//!   only once created ([`GithubEmulator::create_environment`], or seeded
//!   through it): GitHub answers 404 for the secrets and variables of an
//!   environment that does not exist, and does not create one on a write.
//! - GitHub's documented limits are enforced: 48 KB a secret (its
//!   plaintext) or variable value, and 100 secrets / 500 variables a
//!   repository, 100 / 100 an environment, 1,000 / 1,000 an organization.
//! - Each scope gets its own X25519 key pair on first use, stable for the
//!   emulator's lifetime unless a test rotates it.
//! - A test controls the clock (`freeze_clock`, `advance_clock`) instead of
//!   sleeping to make `updated_at` move or stay.

mod api;
pub mod prism;

pub use api::Limit;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::plumbing::{self, Net, Server, Traffic, lock};
use crate::time::{Clock, format_unix};
use crate::{ServerOptions, StartError};

/// GitHub limits a secret to 48 KB and a request body to far more; this
/// keeps a runaway client from filling memory.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Where secrets and variables live.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GithubScope {
    Repo { owner: String, repo: String },
    Org { org: String },
    Environment { owner: String, repo: String, environment: String },
}

impl GithubScope {
    pub fn repo(owner: impl Into<String>, repo: impl Into<String>) -> GithubScope {
        GithubScope::Repo { owner: owner.into(), repo: repo.into() }
    }

    pub fn org(org: impl Into<String>) -> GithubScope {
        GithubScope::Org { org: org.into() }
    }

    pub fn environment(
        owner: impl Into<String>,
        repo: impl Into<String>,
        environment: impl Into<String>,
    ) -> GithubScope {
        GithubScope::Environment { owner: owner.into(), repo: repo.into(), environment: environment.into() }
    }

    pub(crate) fn kind(&self) -> api::ScopeKind {
        match self {
            GithubScope::Repo { .. } => api::ScopeKind::Repo,
            GithubScope::Org { .. } => api::ScopeKind::Org,
            GithubScope::Environment { .. } => api::ScopeKind::Env,
        }
    }

    /// GitHub matches owner, repository, organization and environment
    /// names case-insensitively.
    pub(crate) fn normalized(&self) -> GithubScope {
        let l = |s: &str| s.to_lowercase();
        match self {
            GithubScope::Repo { owner, repo } => GithubScope::repo(l(owner), l(repo)),
            GithubScope::Org { org } => GithubScope::org(l(org)),
            GithubScope::Environment { owner, repo, environment } => {
                GithubScope::environment(l(owner), l(repo), l(environment))
            }
        }
    }
}

/// A stored secret, decrypted: what a workflow would see.
#[derive(Clone, PartialEq, Eq)]
pub struct GithubSecret {
    /// Upper-case, as GitHub stores it.
    pub name: String,
    pub plaintext: Vec<u8>,
    /// RFC 3339, second resolution.
    pub created_at: String,
    pub updated_at: String,
    /// Organization secrets only: `all`, `private` or `selected`.
    pub visibility: Option<String>,
    /// Organization secrets with visibility `selected`, as sent.
    pub selected_repository_ids: Vec<serde_json::Value>,
}

impl fmt::Debug for GithubSecret {
    /// The plaintext is left out: tests put canary secrets in it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubSecret")
            .field("name", &self.name)
            .field("plaintext", &format_args!("<{} bytes>", self.plaintext.len()))
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("visibility", &self.visibility)
            .finish()
    }
}

/// A stored variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubVariable {
    pub name: String,
    pub value: String,
    pub created_at: String,
    pub updated_at: String,
    pub visibility: Option<String>,
    pub selected_repository_ids: Vec<serde_json::Value>,
}

struct State {
    store: Mutex<api::Store>,
    clock: Clock,
}

/// A running GitHub API emulator. Dereferences to [`Server`] for the URL,
/// request log and counts, and fault injection. Stops on drop.
pub struct GithubEmulator {
    server: Server,
    state: Arc<State>,
}

impl GithubEmulator {
    /// Starts on 127.0.0.1 with a free port; panics if it cannot (a test helper).
    pub fn start() -> GithubEmulator {
        GithubEmulator::start_with(ServerOptions::default()).unwrap_or_else(|e| panic!("github-emulator: {e}"))
    }

    /// Starts on its own thread and tokio runtime.
    pub fn start_with(options: ServerOptions) -> Result<GithubEmulator, StartError> {
        let ServerOptions { listen, verbose } = options;
        let ((net, traffic, state), thread) =
            plumbing::spawn("github-emulator".into(), listen, move |addr: SocketAddr, listener| {
                let net = Arc::new(Net::new("github-emulator", addr, verbose));
                let traffic = Arc::new(Traffic::default());
                let state = Arc::new(State { store: Mutex::new(api::Store::default()), clock: Clock::default() });
                let base = format!("http://{addr}");
                let handles = (net.clone(), traffic.clone(), state.clone());
                let serve = {
                    let net = net.clone();
                    move |req| {
                        let (net, traffic, state, base) = (net.clone(), traffic.clone(), state.clone(), base.clone());
                        async move {
                            plumbing::serve_api(
                                &net,
                                &traffic,
                                req,
                                MAX_BODY_BYTES,
                                api::route_of,
                                api::fault_reply,
                                |r| api::handle(&mut lock(&state.store), &state.clock, &r, &base),
                            )
                            .await
                        }
                    }
                };
                (handles, plumbing::run(net, listener, serve))
            })?;
        Ok(GithubEmulator { server: Server::new(net, traffic, thread), state })
    }

    /// The stored secret, decrypted, if it exists.
    pub fn secret(&self, scope: &GithubScope, name: &str) -> Option<GithubSecret> {
        let mut store = lock(&self.state.store);
        let s = store.scope(scope).secrets.get(&name.to_ascii_uppercase())?.clone();
        Some(GithubSecret {
            name: s.name,
            plaintext: s.plaintext,
            created_at: format_unix(s.created_at),
            updated_at: format_unix(s.updated_at),
            visibility: s.visibility,
            selected_repository_ids: s.selected_repository_ids,
        })
    }

    /// The decrypted value of a secret as text (lossy for non-UTF-8 bytes).
    pub fn secret_plaintext(&self, scope: &GithubScope, name: &str) -> Option<String> {
        self.secret(scope, name).map(|s| String::from_utf8_lossy(&s.plaintext).into_owned())
    }

    /// Names of the stored secrets, sorted.
    pub fn secret_names(&self, scope: &GithubScope) -> Vec<String> {
        lock(&self.state.store).scope(scope).secrets.keys().cloned().collect()
    }

    /// The stored variable, if it exists.
    pub fn variable(&self, scope: &GithubScope, name: &str) -> Option<GithubVariable> {
        let mut store = lock(&self.state.store);
        let v = store.scope(scope).variables.get(&name.to_ascii_uppercase())?.clone();
        Some(GithubVariable {
            name: v.name,
            value: v.value,
            created_at: format_unix(v.created_at),
            updated_at: format_unix(v.updated_at),
            visibility: v.visibility,
            selected_repository_ids: v.selected_repository_ids,
        })
    }

    /// Names of the stored variables, sorted.
    pub fn variable_names(&self, scope: &GithubScope) -> Vec<String> {
        lock(&self.state.store).scope(scope).variables.keys().cloned().collect()
    }

    /// Creates a repository environment (as `PUT /repos/{owner}/{repo}/environments/{name}` would).
    pub fn create_environment(&self, owner: &str, repo: &str, environment: &str) {
        lock(&self.state.store).environments.insert(GithubScope::environment(owner, repo, environment).normalized());
    }

    /// Answers the next requests, one each, with these rate-limit answers
    /// (before anything else is checked), as GitHub's REST docs describe them.
    pub fn rate_limit_next(&self, answers: &[Limit]) {
        lock(&self.state.store).limits.extend(answers.iter().copied());
    }

    /// Creates or replaces a secret directly (no request counted), e.g. to
    /// seed one made by hand; an environment scope is created with it.
    pub fn put_secret(&self, scope: &GithubScope, name: &str, plaintext: &[u8]) {
        let now = self.state.clock.now();
        let mut store = lock(&self.state.store);
        seed_scope(&mut store, scope);
        let data = store.scope(scope);
        let key = name.to_ascii_uppercase();
        let created_at = data.secrets.get(&key).map_or(now, |s| s.created_at);
        let visibility = matches!(scope, GithubScope::Org { .. }).then(|| "all".to_string());
        data.secrets.insert(
            key.clone(),
            api::StoredSecret {
                name: key,
                plaintext: plaintext.to_vec(),
                created_at,
                updated_at: now,
                visibility,
                selected_repository_ids: Vec::new(),
            },
        );
    }

    /// Creates or replaces a variable directly (no request counted); an
    /// environment scope is created with it.
    pub fn put_variable(&self, scope: &GithubScope, name: &str, value: &str) {
        let now = self.state.clock.now();
        let mut store = lock(&self.state.store);
        seed_scope(&mut store, scope);
        let data = store.scope(scope);
        let key = name.to_ascii_uppercase();
        let created_at = data.variables.get(&key).map_or(now, |v| v.created_at);
        let visibility = matches!(scope, GithubScope::Org { .. }).then(|| "all".to_string());
        data.variables.insert(
            key.clone(),
            api::StoredVariable {
                name: key,
                value: value.to_string(),
                created_at,
                updated_at: now,
                visibility,
                selected_repository_ids: Vec::new(),
            },
        );
    }

    /// The scope's current public key: `(key_id, raw 32 bytes)`.
    pub fn public_key(&self, scope: &GithubScope) -> (String, [u8; 32]) {
        let mut store = lock(&self.state.store);
        let keys = store.scope(scope).keys();
        (keys.key_id.clone(), keys.public_bytes())
    }

    /// Replaces the scope's key pair (values sealed for the old key are
    /// then refused with 422), as when GitHub rotates a key.
    pub fn rotate_public_key(&self, scope: &GithubScope) {
        lock(&self.state.store).scope(scope).rotate();
    }

    /// Stops the clock at `unix_secs` (timestamps of writes from now on).
    pub fn freeze_clock(&self, unix_secs: u64) {
        self.state.clock.freeze(unix_secs);
    }

    /// Moves the clock on by whole seconds (frozen or not).
    pub fn advance_clock(&self, by: Duration) {
        self.state.clock.advance(by);
    }

    /// Back to the wall clock.
    pub fn real_clock(&self) {
        self.state.clock.real();
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.server.shutdown();
    }
}

/// A seeded item's environment exists from then on.
fn seed_scope(store: &mut api::Store, scope: &GithubScope) {
    if let GithubScope::Environment { .. } = scope {
        store.environments.insert(scope.normalized());
    }
}

impl Deref for GithubEmulator {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl fmt::Debug for GithubEmulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubEmulator").field("url", &self.server.url()).finish()
    }
}
