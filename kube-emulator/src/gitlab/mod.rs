//! A GitLab REST v4 emulator for CI/CD variables of projects and groups
//! (dev-only). `docs/gitlab-emulator.md` lists what it implements and where
//! it differs from GitLab; `tests/gitlab_contract.rs` pins the semantics.
//!
//! ```no_run
//! use kube_emulator::{Fault, GitlabEmulator, GitlabOwner};
//!
//! let gitlab = GitlabEmulator::start(); // its own thread, 127.0.0.1:<free port>
//! let api = gitlab.api_url(); // http://127.0.0.1:PORT/api/v4
//! // ... point the code under test at `api` with any PRIVATE-TOKEN ...
//! let project = GitlabOwner::project("group/app");
//! let v = gitlab.variable(&project, "DB_PASSWORD", "*"); // hidden values too
//! gitlab.set_fault(Fault::RateLimited { count: 1, retry_after: std::time::Duration::from_secs(1) });
//! ```
//!
//! Decisions:
//! - Every project and group named in a request exists, with any token.
//! - Project `42` and project `group/app` are different owners unless
//!   [`GitlabEmulator::link_project`] says they are the same.
//! - The API logic (`api`) is pure; this module holds the handle and the
//!   glue to the shared plumbing.

mod api;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::plumbing::{self, Net, Server, Traffic, lock};
use crate::{ServerOptions, StartError};

/// GitLab's request body limit is far above what variables need; this
/// keeps a runaway client from filling memory.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum OwnerKind {
    Project,
    Group,
}

/// A project or group, by numeric id or full path (`group/app`, not encoded).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GitlabOwner {
    Project(String),
    Group(String),
}

impl GitlabOwner {
    pub fn project(id_or_path: impl Into<String>) -> GitlabOwner {
        GitlabOwner::Project(id_or_path.into())
    }

    pub fn group(id_or_path: impl Into<String>) -> GitlabOwner {
        GitlabOwner::Group(id_or_path.into())
    }

    pub(crate) fn parts(&self) -> (OwnerKind, &str) {
        match self {
            GitlabOwner::Project(id) => (OwnerKind::Project, id),
            GitlabOwner::Group(id) => (OwnerKind::Group, id),
        }
    }
}

/// A stored CI/CD variable, as the emulator holds it (a hidden variable's
/// value included, which the API never returns).
#[derive(Clone, PartialEq, Eq)]
pub struct GitlabVariable {
    pub key: String,
    pub value: String,
    /// `env_var` or `file`.
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    /// Created with `masked_and_hidden`: the API answers `"value": null`.
    pub hidden: bool,
    /// Not expanded (`$OTHER` stays literal).
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

impl GitlabVariable {
    /// A plain `env_var` for every environment (`*`).
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> GitlabVariable {
        GitlabVariable {
            key: key.into(),
            value: value.into(),
            variable_type: "env_var".into(),
            protected: false,
            masked: false,
            hidden: false,
            raw: false,
            environment_scope: "*".into(),
            description: None,
        }
    }
}

impl fmt::Debug for GitlabVariable {
    /// The value is left out: tests put canary secrets in it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitlabVariable")
            .field("key", &self.key)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("variable_type", &self.variable_type)
            .field("protected", &self.protected)
            .field("masked", &self.masked)
            .field("hidden", &self.hidden)
            .field("raw", &self.raw)
            .field("environment_scope", &self.environment_scope)
            .field("description", &self.description)
            .finish()
    }
}

/// A running GitLab API emulator. Dereferences to [`Server`] for the URL,
/// request log and counts, and fault injection. Stops on drop.
pub struct GitlabEmulator {
    server: Server,
    store: Arc<Mutex<api::Store>>,
}

impl GitlabEmulator {
    /// Starts on 127.0.0.1 with a free port; panics if it cannot (a test helper).
    pub fn start() -> GitlabEmulator {
        GitlabEmulator::start_with(ServerOptions::default()).unwrap_or_else(|e| panic!("gitlab-emulator: {e}"))
    }

    /// Starts on its own thread and tokio runtime.
    pub fn start_with(options: ServerOptions) -> Result<GitlabEmulator, StartError> {
        let ServerOptions { listen, verbose } = options;
        let ((net, traffic, store), thread) =
            plumbing::spawn("gitlab-emulator".into(), listen, move |addr: SocketAddr, listener| {
                let net = Arc::new(Net::new("gitlab-emulator", addr, verbose));
                let traffic = Arc::new(Traffic::default());
                let store = Arc::new(Mutex::new(api::Store::default()));
                let base = format!("http://{addr}");
                let handles = (net.clone(), traffic.clone(), store.clone());
                let serve = {
                    let net = net.clone();
                    move |req| {
                        let (net, traffic, store, base) = (net.clone(), traffic.clone(), store.clone(), base.clone());
                        async move {
                            plumbing::serve_api(
                                &net,
                                &traffic,
                                req,
                                MAX_BODY_BYTES,
                                api::route_of,
                                api::fault_reply,
                                |r| api::handle(&mut lock(&store), &r, &base),
                            )
                            .await
                        }
                    }
                };
                (handles, plumbing::run(net, listener, serve))
            })?;
        Ok(GitlabEmulator { server: Server::new(net, traffic, thread), store })
    }

    /// The API root, `http://127.0.0.1:PORT/api/v4`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v4", self.server.url())
    }

    /// Every variable of `owner`, in creation order, hidden values included.
    pub fn variables(&self, owner: &GitlabOwner) -> Vec<GitlabVariable> {
        lock(&self.store).variables(owner)
    }

    /// The variable with this key and environment scope, hidden value included.
    pub fn variable(&self, owner: &GitlabOwner, key: &str, environment_scope: &str) -> Option<GitlabVariable> {
        self.variables(owner).into_iter().find(|v| v.key == key && v.environment_scope == environment_scope)
    }

    /// Creates or replaces (same key and scope) a variable directly: no
    /// request counted, no validation (e.g. to seed one made by hand).
    pub fn put_variable(&self, owner: &GitlabOwner, variable: GitlabVariable) {
        lock(&self.store).put(owner, variable);
    }

    /// GitLab Free (true) or Premium (false, the default): without Premium,
    /// GitLab drops `environment_scope` on group variables (a create stores
    /// `*`, an update keeps the scope) and answers as if it had not.
    pub fn set_free_tier(&self, free: bool) {
        lock(&self.store).free_tier = free;
    }

    /// Makes project `id` and project `path` one project (as in GitLab,
    /// where both name it in URLs).
    pub fn link_project(&self, id: u64, path: &str) {
        lock(&self.store).link(OwnerKind::Project, id, path);
    }

    /// Makes group `id` and group `path` one group.
    pub fn link_group(&self, id: u64, path: &str) {
        lock(&self.store).link(OwnerKind::Group, id, path);
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.server.shutdown();
    }
}

impl Deref for GitlabEmulator {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl fmt::Debug for GitlabEmulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitlabEmulator").field("url", &self.server.url()).finish()
    }
}
