//! `kind = "gitlab"` in the config: the fields as written, and the typed
//! target built from them with every problem found at `validate` time
//! (names, scopes, URLs, keys) rather than at the first pass.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::targets::ci;
use crate::targets::registry::{Problems, SpecInput};

pub const DEFAULT_URL: &str = "https://gitlab.com";
pub const DEFAULT_TOKEN_ENV: &str = "GITLAB_TOKEN";
pub const DEFAULT_SCOPE: &str = "{{ env }}";
pub const DEFAULT_KEY: &str = "{{ name }}";

/// The target as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitlabTarget {
    /// The GitLab instance (`https://gitlab.com`); `/api/v4` is appended.
    url: Option<String>,
    /// The environment variable holding the token (sent as `PRIVATE-TOKEN`).
    token_env: Option<String>,
    /// `group/app` or a numeric id; templated. Exactly one of `project`, `group`.
    project: Option<String>,
    group: Option<String>,
    /// Templated; default `{{ env }}`.
    environment_scope: Option<String>,
    /// The variable key of each entry; templated with `name` and `env`.
    key: Option<String>,
    protected: Option<bool>,
    /// Secret variables are also hidden (`masked_and_hidden`): nobody can
    /// read them back in GitLab's UI or API.
    hidden: Option<bool>,
    /// Values are not expanded (`$X` stays literal). Default true: a
    /// rendered value is final.
    raw: Option<bool>,
    /// A private CA for the server (relative: to the config's directory).
    ca_file: Option<std::path::PathBuf>,
}

/// A project or a group, by path or numeric id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    Project(String),
    Group(String),
}

impl Owner {
    /// `projects` or `groups`, as in the API path.
    pub fn collection(&self) -> &'static str {
        match self {
            Owner::Project(_) => "projects",
            Owner::Group(_) => "groups",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Owner::Project(p) | Owner::Group(p) => p,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Project(p) => write!(f, "project {p}"),
            Owner::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// Where one env's variables go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitlabAddress {
    pub owner: Owner,
    pub environment_scope: String,
    /// Entry name → variable key.
    pub keys: BTreeMap<String, String>,
}

/// A GitLab target, rendered for each env.
#[derive(Debug)]
pub struct GitlabTarget {
    /// Without a trailing slash.
    pub url: String,
    pub token_env: String,
    pub addresses: BTreeMap<String, GitlabAddress>,
    /// `None`: not set in the config (false, or what an adopted variable had).
    pub protected: Option<bool>,
    /// `None`: not set in the config (false, or what an adopted variable had).
    pub hidden: Option<bool>,
    /// `None`: not set in the config (true, or what an adopted variable had).
    pub raw: Option<bool>,
    /// A private CA for `url` (see `crate::targets::ci_tls`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl GitlabTarget {
    /// `raw` as configured, else its default.
    pub fn raw_or_default(&self) -> bool {
        self.raw.unwrap_or(true)
    }
}

/// Builds the typed target; every problem, with the entry's location when
/// it is about one entry (else `None`: the target's).
pub fn build(raw: RawGitlabTarget, input: &SpecInput<'_>) -> Result<GitlabTarget, Problems> {
    let mut b = ci::SpecBuilder::new(input);
    let url = b.base_url("gitlab url", raw.url.as_deref(), DEFAULT_URL);
    let token_env = b.token_env(raw.token_env, DEFAULT_TOKEN_ENV);
    let owner = match (&raw.project, &raw.group) {
        (Some(p), None) => Some((p.as_str(), true)),
        (None, Some(g)) => Some((g.as_str(), false)),
        _ => {
            b.problem("a gitlab target needs exactly one of `project` and `group`");
            None
        }
    };
    let scope_template = raw.environment_scope.as_deref().unwrap_or(DEFAULT_SCOPE);
    let key_template = raw.key.as_deref().unwrap_or(DEFAULT_KEY);
    let mut addresses = BTreeMap::new();
    for env in input.envs {
        let owner = owner_of(&mut b, owner.unwrap_or(("", true)), env);
        let scope = b.field("environment_scope", scope_template, env, |s| {
            if is_environment_scope(&s) {
                Ok(s)
            } else {
                Err(format!(
                    "environment_scope {s:?} (env {env:?}) is not valid in GitLab: at most 255 of letters, digits, '-', '_', '/', '$', '{{', '}}', '.', '*' and spaces"
                ))
            }
        });
        let keys = b.names(env, key_template, "GitLab variable", |k| {
            (!is_variable_key(k)).then(|| ", but keys may only hold letters, digits and '_' (at most 255)".to_owned())
        });
        if let (Some(owner), Some(environment_scope)) = (owner, scope) {
            addresses.insert(env.clone(), GitlabAddress { owner, environment_scope, keys });
        }
    }
    b.one_env_each(addresses.iter().map(|(env, a)| (env, (&a.owner, a.environment_scope.as_str()))), |other, env, (owner, scope)| {
        format!(
            "envs {other} and {env} would both write the variables of GitLab {owner} with environment scope {scope:?}; template environment_scope (default \"{{{{ env }}}}\") or the project with {{{{ env }}}}"
        )
    });
    b.finish(GitlabTarget {
        url,
        token_env,
        addresses,
        protected: raw.protected,
        hidden: raw.hidden,
        raw: raw.raw,
        // Relative to the config's directory.
        ca_file: raw.ca_file.map(|p| input.dir.join(p)),
    })
}

/// The project or group (`template`, and whether it is a project) for `env`.
fn owner_of(b: &mut ci::SpecBuilder<'_, '_>, (template, is_project): (&str, bool), env: &str) -> Option<Owner> {
    b.field("gitlab project/group", template, env, |o| {
        if !is_owner_path(&o) {
            let what = if is_project { "project" } else { "group" };
            return Err(format!("gitlab {what} {o:?} (env {env:?}) is not a GitLab path (`group/app`) or numeric id"));
        }
        Ok(if is_project { Owner::Project(o) } else { Owner::Group(o) })
    })
}

/// A project or group path (`group/sub/app`) or a numeric id.
fn is_owner_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && !p.ends_with('/')
        && !p.contains("//")
        && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// `Gitlab::Regex.environment_scope_regex`.
fn is_environment_scope(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_/${}. *".contains(&b))
}

/// GitLab's variable key rule.
pub fn is_variable_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
