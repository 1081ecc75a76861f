//! cfgsync's key layout in etcd: one home for every key cfgsync reads or
//! writes there, so that a new record kind is one function here and the
//! names reserved for it are known everywhere (`validate` refuses an env
//! named like one).
//!
//! Under `[etcd] prefix` (default `/cfgsync`):
//!
//! | key | what | written by |
//! |---|---|---|
//! | `<prefix>/<env>/<name>` | the env's keys: what templates read | people (`cfgsync set`, `import`) |
//! | `<prefix>/_meta/<env>/<name>` | who decided a key's value, and why | `cfgsync set` |
//! | `<prefix>/_state/<env>/<kind>/<instance>/…` | what a target kind wrote (the CI kinds' records) | the kinds |
//! | `<prefix>/_service/members/<replica>` | each replica of `cfgsync run`, under its lease | the service |
//! | `<prefix>/_service/envs/<env>/leader`, `…/status` | an env's leader and its last pass | the service |
//! | `<prefix>/_service/envs/<env>/pass` | a pass asked for now | `rotate verify`, `refresh`, `rollback` (when a secret marker could not be written) |
//! | `<prefix>/_history/<env>/<ms>-<rev>` | the record of a pass ([`crate::history`]) | the env's leader, a one-shot pass |
//! | `<prefix>/_secret-versions/<env>/<path>` | a secret's version just written to Vault (the number only, never a value), so the service reads it now ([`crate::source::secret_cache`]) | `set-secret`, `import`, `rollback` |
//!
//! Decisions:
//! - **Everything of cfgsync's own starts with `_`** and is a sibling of
//!   the envs, so one prefix range per env (`<prefix>/<env>/`) reads its
//!   keys and nothing else, and env names starting with `_` are refused.
//! - **One prefix per env** in every record kind (`_meta/<env>/`,
//!   `_state/<env>/`, `_service/envs/<env>/`, `_history/<env>/`), so an
//!   etcd role can grant a reconciler or a developer exactly its envs.
//! - **Secret markers are not env keys**: under `<prefix>/<env>/` they
//!   would be read as config by `keys()`, `pull`, `diff`, `log` and
//!   `rollback`; under `_service/envs/<env>/` every election round would
//!   read them. Their own prefix is watched by the env's service.

/// Who decided a key's value.
pub const META: &str = "_meta";
/// What target kinds wrote.
pub const STATE: &str = "_state";
/// The service's membership, elections and status.
pub const SERVICE: &str = "_service";
/// The history of passes ([`crate::history`]).
pub const HISTORY: &str = "_history";
/// The versions `set-secret`, `import` and `rollback` just wrote to Vault.
pub const SECRET_VERSIONS: &str = "_secret-versions";

/// Every name cfgsync keeps its own records under, beside the envs.
pub const RESERVED: [&str; 5] = [SERVICE, STATE, META, HISTORY, SECRET_VERSIONS];

/// `<prefix>/<env>/`: the one range every pass reads for an env. `prefix`
/// as in `[etcd] prefix`, without a trailing slash.
pub fn env_prefix(prefix: &str, env: &str) -> String {
    format!("{prefix}/{env}/")
}

/// `<prefix>/_meta/<env>/`.
pub fn meta_prefix(prefix: &str, env: &str) -> String {
    format!("{prefix}/{META}/{env}/")
}

/// `<prefix>/_meta/<env>/<name>`: where a key's owner and reason live.
pub fn meta_key(prefix: &str, env: &str, name: &str) -> String {
    format!("{}{name}", meta_prefix(prefix, env))
}

/// `<prefix>/_state/<env>/`: where target kinds may record what they wrote
/// (read-write for the env's reconciler role).
pub fn state_prefix(prefix: &str, env: &str) -> String {
    format!("{prefix}/{STATE}/{env}/")
}

/// `<prefix>/_history/<env>/`: where the history of an env's passes goes.
pub fn history_prefix(prefix: &str, env: &str) -> String {
    format!("{prefix}/{HISTORY}/{env}/")
}

/// `<prefix>/_secret-versions/<env>/`: one marker per secret path, read
/// (and watched) by the env's reconciler.
pub fn secret_markers(prefix: &str, env: &str) -> String {
    format!("{prefix}/{SECRET_VERSIONS}/{env}/")
}

/// `<prefix>/_secret-versions/<env>/<path>`: holds the version number of
/// `path` just written.
pub fn secret_marker(prefix: &str, env: &str, path: &str) -> String {
    format!("{}{path}", secret_markers(prefix, env))
}

/// The keys under `<prefix>/_service/`.
#[derive(Debug, Clone)]
pub struct ServiceKeys {
    /// `<prefix>/_service/`.
    root: String,
}

impl ServiceKeys {
    /// `prefix` as in `[etcd] prefix`, without a trailing slash.
    pub fn new(prefix: &str) -> Self {
        Self { root: format!("{prefix}/{SERVICE}/") }
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.root)
    }

    pub fn member(&self, replica: &str) -> String {
        format!("{}{replica}", self.members())
    }

    /// `<prefix>/_service/envs/<env>/`: what a reconciler of `env` may write.
    pub fn env_prefix(&self, env: &str) -> String {
        format!("{}envs/{env}/", self.root)
    }

    pub fn leader(&self, env: &str) -> String {
        format!("{}leader", self.env_prefix(env))
    }

    pub fn status(&self, env: &str) -> String {
        format!("{}status", self.env_prefix(env))
    }

    /// Put to ask the env's leader for a pass now (`rotate verify`,
    /// `rollback`; see `service::asked`).
    pub fn asked(&self, env: &str) -> String {
        format!("{}pass", self.env_prefix(env))
    }
}

/// Every prefix cfgsync reads or writes for `env` (`whoami` checks each).
pub fn env_prefixes(prefix: &str, env: &str) -> [String; 6] {
    [
        env_prefix(prefix, env),
        meta_prefix(prefix, env),
        state_prefix(prefix, env),
        history_prefix(prefix, env),
        secret_markers(prefix, env),
        ServiceKeys::new(prefix).env_prefix(env),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_give_each_env_its_own_prefix() {
        let k = ServiceKeys::new("/cfgsync");
        assert_eq!(k.members(), "/cfgsync/_service/members/");
        assert_eq!(k.member("r1"), "/cfgsync/_service/members/r1");
        assert_eq!(k.leader("prod"), "/cfgsync/_service/envs/prod/leader");
        assert_eq!(k.status("prod"), "/cfgsync/_service/envs/prod/status");
        assert!(k.status("prod").starts_with(&k.env_prefix("prod")));
        assert!(!k.status("prod2").starts_with(&k.env_prefix("prod")), "one env's prefix never covers another's");
        assert_eq!(env_prefix("/cfgsync", "prod"), "/cfgsync/prod/");
        assert_eq!(meta_key("/cfgsync", "prod", "api/host"), "/cfgsync/_meta/prod/api/host");
        assert_eq!(state_prefix("/cfgsync", "prod"), "/cfgsync/_state/prod/");
        assert_eq!(history_prefix("/cfgsync", "prod"), "/cfgsync/_history/prod/");
        assert_eq!(secret_marker("/cfgsync", "prod", "api/db"), "/cfgsync/_secret-versions/prod/api/db");
        assert!(!secret_marker("/cfgsync", "prod", "db").starts_with(&env_prefix("/cfgsync", "prod")), "not a key");
        assert!(!secret_marker("/cfgsync", "prod2", "db").starts_with(&secret_markers("/cfgsync", "prod")));
        for reserved in RESERVED {
            assert!(reserved.starts_with('_'), "{reserved}: env names starting with '_' are refused");
        }
    }
}
