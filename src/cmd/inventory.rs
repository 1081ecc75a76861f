//! What one env holds, as far as the caller may read it.
//!
//! A pass ([`crate::source::Sources::fetch`]) fails as a whole when any read
//! fails: right for a reconciler, which must not render from a partial
//! snapshot. A person running `diff`, `pull` or `explain` with their own
//! role needs more: which reads were *denied* (and why, in the source's own
//! words), apart from which failed for other reasons. So this module reads
//! each secret path on its own and records a [`Denial`] per path; anything
//! else (a server down, a timeout, a broken file) is still an error that
//! stops the command.
//!
//! Which secrets are read ([`SecretScope`]):
//! - `All` (diff): everything listed under `<mount>/<env>/`. When listing
//!   is not allowed, the paths the templates name are read instead and the
//!   listing itself is recorded as a denial, so a diff can never claim
//!   "only in A" for a secret it simply could not see in B.
//! - `Paths` (pull, run-with, explain): only what the templates name, which
//!   is all a least-privilege role has to allow.
//!
//! Keys are always one range read of `<prefix>/<env>/` at one revision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::{Config, EtcdSettings, KeysSource, SecretsSource};
use crate::render::Analysis;
use crate::source::etcd::EtcdSource;
use crate::source::file::FileSource;
use crate::source::vault::VaultSource;
use crate::source::{KeyValue, Request, Secret, Snapshot, Source, SourceError, SourceKind, vault_admin};

/// Concurrent secret reads per env (see `vault_admin::PARALLEL_LISTS` for
/// why more than a pass's 8).
const PARALLEL_READS: usize = 32;

/// The sources of a config, opened with the caller's own credentials.
pub struct Clients {
    pub keys: KeyClient,
    pub vault: Option<VaultClientSide>,
    /// Secret paths cfgsync keeps for itself (the `[fingerprint] key`):
    /// not configuration anyone decided, so never listed, compared or
    /// named as "no access" unless a template reads them.
    pub internal: BTreeSet<String>,
}

pub enum KeyClient {
    /// `source/<env>.toml` under `dir`.
    Files {
        source: FileSource,
        dir: PathBuf,
    },
    Etcd {
        source: Box<EtcdSource>,
        settings: EtcdSettings,
    },
}

pub struct VaultClientSide {
    pub source: VaultSource,
    pub mount: String,
}

impl Clients {
    /// Builds the clients; nothing is contacted yet.
    pub fn new(config: &Config) -> Self {
        let keys = match &config.keys {
            KeysSource::Files(dir) => KeyClient::Files { source: FileSource::new(dir.clone()), dir: dir.clone() },
            KeysSource::Etcd(s) => {
                KeyClient::Etcd { source: Box::new(EtcdSource::new(s.clone())), settings: s.clone() }
            }
        };
        let vault = match &config.secrets {
            Some(SecretsSource::Vault(v)) => {
                Some(VaultClientSide { source: VaultSource::new(v.clone()), mount: v.mount.clone() })
            }
            _ => None,
        };
        let internal = config.fingerprint_key.iter().map(|(path, _)| path.clone()).collect();
        Self { keys, vault, internal }
    }

    /// Whether secret `path` is cfgsync's own and not asked for by a template.
    pub fn hides(&self, path: &str, template_paths: &BTreeSet<String>) -> bool {
        self.internal.contains(path) && !template_paths.contains(path)
    }
}

/// Which secret paths to read.
#[derive(Debug, Clone)]
pub enum SecretScope {
    All,
    Paths(BTreeSet<String>),
}

/// One read the caller's role does not allow.
#[derive(Debug)]
pub struct Denial {
    pub env: String,
    pub kind: SourceKind,
    /// What was denied, as the source names it (`/cfgsync/prod/`, `secret/prod/api/db`).
    pub path: String,
    /// The caller's identity as the source sees it (`etcd user "dev"`, `vault token (policies …)`).
    pub role: String,
    /// The source's own error.
    pub error: SourceError,
}

impl Denial {
    /// The source's own reason, without the parentheses the error adds.
    pub fn reason(&self) -> String {
        match &self.error {
            SourceError::Denied { detail, .. } => {
                let d = detail.trim();
                let d = d.strip_prefix('(').and_then(|d| d.strip_suffix(')')).unwrap_or(d);
                if d.is_empty() { "permission denied".to_owned() } else { vault_admin::one_line(d) }
            }
            other => vault_admin::one_line(&other.to_string()),
        }
    }
}

/// The keys of an env, or why they could not be read.
#[derive(Debug)]
pub enum Keys {
    Read { keys: BTreeMap<String, KeyValue>, revision: Option<i64> },
    Denied(Denial),
}

/// One secret path of an env.
#[derive(Debug)]
pub enum SecretState {
    Read(Secret),
    /// Asked for (a template names it) but not there.
    Absent,
    Denied(Denial),
}

/// Everything read for one env.
#[derive(Debug)]
pub struct EnvInventory {
    pub env: String,
    pub keys: Keys,
    pub secrets: BTreeMap<String, SecretState>,
    /// Set when listing the env's secrets was denied: secrets not in
    /// `secrets` are then unknown, not absent.
    pub listing_denied: Option<Denial>,
}

impl EnvInventory {
    /// The snapshot templates render from: every key and every readable
    /// secret. Renders that need a denied read must be stopped before by
    /// [`EnvInventory::blockers`].
    pub fn snapshot(&self) -> Snapshot {
        let (keys, revision) = match &self.keys {
            Keys::Read { keys, revision } => (keys.clone(), *revision),
            Keys::Denied(_) => (BTreeMap::new(), None),
        };
        let secrets = self
            .secrets
            .iter()
            .filter_map(|(p, s)| match s {
                SecretState::Read(secret) => Some((p.clone(), secret.clone())),
                _ => None,
            })
            .collect();
        Snapshot { env: self.env.clone(), keys, secrets, revision }
    }

    /// The denied reads an output needs: the env's keys when they were
    /// denied (any template may read any key, and `key_or`/`exists` would
    /// silently render a default), and each denied secret path it names.
    pub fn blockers(&self, analysis: &Analysis) -> Vec<&Denial> {
        let mut out = Vec::new();
        if let Keys::Denied(d) = &self.keys {
            out.push(d);
        }
        for path in &analysis.secret_paths {
            if let Some(SecretState::Denied(d)) = self.secrets.get(path) {
                out.push(d);
            }
        }
        out
    }

    /// Every denial, keys first, then the listing, then secrets by path.
    pub fn denials(&self) -> Vec<&Denial> {
        let mut out = Vec::new();
        if let Keys::Denied(d) = &self.keys {
            out.push(d);
        }
        out.extend(self.listing_denied.iter());
        out.extend(self.secrets.values().filter_map(|s| match s {
            SecretState::Denied(d) => Some(d),
            _ => None,
        }));
        out
    }

    pub fn revision(&self) -> Option<i64> {
        match &self.keys {
            Keys::Read { revision, .. } => *revision,
            Keys::Denied(_) => None,
        }
    }
}

/// Reads env `env`: keys and secrets concurrently. `on_read` is called
/// after each secret read (for progress). Denials are recorded; any other
/// failure is returned.
pub async fn read_env(
    clients: &Clients,
    env: &str,
    scope: &SecretScope,
    template_paths: &BTreeSet<String>,
    on_read: &(dyn Fn() + Sync),
) -> Result<EnvInventory, SourceError> {
    let request = Request { env: env.to_owned(), ..Default::default() };
    let keys = async {
        match &clients.keys {
            KeyClient::Files { source, .. } => source.fetch(&request).await.map(Some),
            KeyClient::Etcd { source, .. } => source.fetch(&request).await.map(Some),
        }
    };
    let secrets = async {
        match &clients.vault {
            Some(v) => {
                let hidden = |p: &str| clients.hides(p, template_paths);
                read_vault(v, env, scope, template_paths, &hidden, on_read).await.map(Some)
            }
            None => Ok(None),
        }
    };
    let (keys, secrets) = tokio::join!(keys, secrets);
    let mut inventory = EnvInventory {
        env: env.to_owned(),
        keys: Keys::Read { keys: BTreeMap::new(), revision: None },
        secrets: BTreeMap::new(),
        listing_denied: None,
    };
    match keys {
        Ok(Some(snapshot)) => {
            inventory.keys = Keys::Read { keys: snapshot.keys, revision: snapshot.revision };
            if clients.vault.is_none() {
                // The file source holds the secrets too.
                inventory.secrets = snapshot
                    .secrets
                    .into_iter()
                    .filter(|(p, _)| !clients.hides(p, template_paths))
                    .map(|(p, s)| (p, SecretState::Read(s)))
                    .collect();
                if let SecretScope::Paths(paths) = scope {
                    for p in paths {
                        inventory.secrets.entry(p.clone()).or_insert(SecretState::Absent);
                    }
                }
            }
        }
        Ok(None) => {}
        Err(e @ SourceError::Denied { .. }) => {
            let (path, role) = match &clients.keys {
                KeyClient::Etcd { settings, .. } => (settings.env_prefix(env), etcd_role(settings)),
                KeyClient::Files { .. } => (String::new(), "file source".to_owned()),
            };
            inventory.keys = Keys::Denied(Denial { env: env.to_owned(), kind: e.kind(), path, role, error: e });
        }
        Err(e) => return Err(e),
    }
    if let Some(side) = secrets? {
        inventory.secrets = side.secrets;
        inventory.listing_denied = side.listing_denied;
    }
    Ok(inventory)
}

/// `etcd user "dev"`, or `etcd (no user)` when auth is off for the caller.
pub fn etcd_role(settings: &EtcdSettings) -> String {
    match &settings.user {
        Some(u) => format!("etcd user {u:?}"),
        None => "etcd (no user)".to_owned(),
    }
}

struct VaultSide {
    secrets: BTreeMap<String, SecretState>,
    listing_denied: Option<Denial>,
}

async fn read_vault(
    side: &VaultClientSide,
    env: &str,
    scope: &SecretScope,
    template_paths: &BTreeSet<String>,
    hidden: &(dyn Fn(&str) -> bool + Sync),
    on_read: &(dyn Fn() + Sync),
) -> Result<VaultSide, SourceError> {
    let client = side.source.client().await?;
    let mut listing_denied = None;
    let paths: BTreeSet<String> = match scope {
        SecretScope::Paths(p) => p.clone(),
        SecretScope::All => match vault_admin::list_env(&client, &side.mount, env).await {
            Ok(listed) => listed.into_iter().filter(|p| !hidden(p)).chain(template_paths.iter().cloned()).collect(),
            Err(e @ SourceError::Denied { .. }) => {
                let path = match &e {
                    SourceError::Denied { path, .. } => path.clone(),
                    _ => format!("{}/metadata/{env}/", side.mount),
                };
                listing_denied =
                    Some(Denial { env: env.to_owned(), kind: SourceKind::Vault, path, role: String::new(), error: e });
                template_paths.clone()
            }
            Err(e) => return Err(e),
        },
    };
    let mut secrets = BTreeMap::new();
    let mut pending = paths.into_iter();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < PARALLEL_READS {
            let Some(path) = pending.next() else { break };
            let (client, mount, env) = (Arc::clone(&client), side.mount.clone(), env.to_owned());
            tasks.spawn(async move {
                let r = vault_admin::read_secret(&client, &mount, &env, &path).await;
                (path, r)
            });
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (path, result) = joined.map_err(|e| SourceError::Read {
            source_kind: SourceKind::Vault,
            path: side.mount.clone(),
            cause: format!("read task failed: {e}"),
        })?;
        on_read();
        let state = match result {
            Ok(Some(secret)) => SecretState::Read(secret),
            Ok(None) => SecretState::Absent,
            Err(e @ SourceError::Denied { .. }) => SecretState::Denied(Denial {
                env: env.to_owned(),
                kind: SourceKind::Vault,
                path: vault_admin::shown_path(&side.mount, env, &path),
                role: String::new(),
                error: e,
            }),
            // Dropping the JoinSet aborts the other reads.
            Err(e) => return Err(e),
        };
        secrets.insert(path, state);
    }
    let denied = listing_denied.is_some() || secrets.values().any(|s| matches!(s, SecretState::Denied(_)));
    if denied {
        let role = vault_admin::token_role(&client).await;
        for s in secrets.values_mut() {
            if let SecretState::Denied(d) = s {
                d.role = role.clone();
            }
        }
        if let Some(d) = &mut listing_denied {
            d.role = role;
        }
    }
    Ok(VaultSide { secrets, listing_denied })
}
