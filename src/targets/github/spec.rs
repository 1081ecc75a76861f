//! `kind = "github"` in the config: the fields as written, and the typed
//! target, with names checked against GitHub's rules at `validate` time.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::targets::ci;
use crate::targets::registry::{Problems, SpecInput};

pub const DEFAULT_API_URL: &str = "https://api.github.com";
pub const DEFAULT_TOKEN_ENV: &str = "GITHUB_TOKEN";
pub const DEFAULT_KEY: &str = "{{ name }}";

/// The target as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGithubTarget {
    /// Default `https://api.github.com`; GitHub Enterprise Server:
    /// `https://HOST/api/v3`.
    api_url: Option<String>,
    token_env: Option<String>,
    /// Exactly one of `org` and `repo` (`owner/name`); templated.
    org: Option<String>,
    repo: Option<String>,
    /// A repository environment (with `repo`); templated.
    environment: Option<String>,
    /// Organization secrets and variables: `all`, `private` (default) or `selected`.
    visibility: Option<String>,
    /// With `visibility = "selected"`.
    #[serde(default)]
    selected_repository_ids: Vec<u64>,
    /// Each entry's secret or variable name; templated with `name` and `env`.
    key: Option<String>,
    /// A private CA for GitHub Enterprise Server (relative: to the config's directory).
    ca_file: Option<std::path::PathBuf>,
}

/// Where secrets and variables live.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Org { org: String },
    Repo { owner: String, repo: String },
    Environment { owner: String, repo: String, environment: String },
}

impl Scope {
    /// The API path segments up to `secrets`/`variables`.
    pub fn segments(&self) -> Vec<&str> {
        match self {
            Scope::Org { org } => vec!["orgs", org, "actions"],
            Scope::Repo { owner, repo } => vec!["repos", owner, repo, "actions"],
            Scope::Environment { owner, repo, environment } => {
                vec!["repos", owner, repo, "environments", environment]
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Org { org } => write!(f, "organization {org}"),
            Scope::Repo { owner, repo } => write!(f, "repository {owner}/{repo}"),
            Scope::Environment { owner, repo, environment } => {
                write!(f, "environment {environment:?} of repository {owner}/{repo}")
            }
        }
    }
}

/// Where one env's secrets and variables go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubAddress {
    pub scope: Scope,
    /// Entry name → secret or variable name.
    pub names: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct GithubTarget {
    /// Without a trailing slash.
    pub api_url: String,
    pub token_env: String,
    pub addresses: BTreeMap<String, GithubAddress>,
    /// Organization scopes only.
    pub visibility: Option<String>,
    /// `visibility` is set in the config (else `private`, or what an
    /// adopted item had).
    pub visibility_set: bool,
    pub selected_repository_ids: Vec<u64>,
    /// A private CA for `api_url` (see `crate::targets::ci_tls`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Builds the typed target; every problem, with the entry's location when
/// it is about one entry.
pub fn build(raw: RawGithubTarget, input: &SpecInput<'_>) -> Result<GithubTarget, Problems> {
    let mut b = ci::SpecBuilder::new(input);
    let api_url = b.base_url("github api_url", raw.api_url.as_deref(), DEFAULT_API_URL);
    let token_env = b.token_env(raw.token_env.clone(), DEFAULT_TOKEN_ENV);
    match (&raw.org, &raw.repo, &raw.environment) {
        (Some(_), None, None) | (None, Some(_), _) => {}
        (Some(_), _, Some(_)) => b.problem("`environment` goes with `repo`, not `org`"),
        _ => b.problem("a github target needs exactly one of `org` and `repo`"),
    }
    let visibility = visibility(&mut b, &raw);
    let key_template = raw.key.as_deref().unwrap_or(DEFAULT_KEY);
    let mut addresses = BTreeMap::new();
    for env in input.envs {
        let scope = scope_of(&mut b, &raw, env);
        let names = b.names(env, key_template, "GitHub secret/variable", |n| {
            name_problem(n).map(|why| format!(": {why} (use key = \"{{{{ name | upper }}}}\" or another key schema)"))
        });
        if let Some(scope) = scope {
            addresses.insert(env.clone(), GithubAddress { scope, names });
        }
    }
    b.one_env_each(addresses.iter().map(|(env, a)| (env, &a.scope)), |other, env, scope| {
        format!(
            "envs {other} and {env} would both write the secrets and variables of GitHub {scope}; template `environment` (or the repo/org) with {{{{ env }}}}, or limit the output to one env"
        )
    });
    b.finish(GithubTarget {
        api_url,
        token_env,
        addresses,
        visibility_set: raw.visibility.is_some(),
        visibility,
        selected_repository_ids: raw.selected_repository_ids,
        // Relative to the config's directory.
        ca_file: raw.ca_file.map(|p| input.dir.join(p)),
    })
}

/// An organization's items' visibility: `private` unless set; only for
/// organization targets.
fn visibility(b: &mut ci::SpecBuilder<'_, '_>, raw: &RawGithubTarget) -> Option<String> {
    let visibility = match (&raw.org, &raw.visibility) {
        (Some(_), None) => Some("private".to_owned()),
        (Some(_), Some(v)) if matches!(v.as_str(), "all" | "private" | "selected") => Some(v.clone()),
        (Some(_), Some(v)) => {
            b.problem(format!("visibility {v:?}: use \"all\", \"private\" or \"selected\""));
            None
        }
        (None, Some(_)) => {
            b.problem("`visibility` applies to organization targets only");
            None
        }
        (None, None) => None,
    };
    if !raw.selected_repository_ids.is_empty() && visibility.as_deref() != Some("selected") {
        b.problem("`selected_repository_ids` needs visibility = \"selected\"");
    }
    visibility
}

/// Where `env`'s secrets and variables go: an organization, a repository,
/// or one of its environments.
fn scope_of(b: &mut ci::SpecBuilder<'_, '_>, raw: &RawGithubTarget, env: &str) -> Option<Scope> {
    match (&raw.org, &raw.repo, &raw.environment) {
        (Some(org), _, _) => b.field("org", org, env, |org| {
            if is_account(&org) {
                Ok(Scope::Org { org })
            } else {
                Err(format!("org {org:?} (env {env:?}) is not a GitHub organization name"))
            }
        }),
        (None, Some(repo), environment) => {
            let repo = b.field("repo", repo, env, |r| match r.split_once('/') {
                Some((o, n)) if is_account(o) && is_repo_name(n) => Ok((o.to_owned(), n.to_owned())),
                _ => Err(format!("repo {r:?} (env {env:?}) is not \"owner/name\" of a GitHub repository")),
            });
            let environment = match environment {
                None => Some(None),
                Some(template) => b
                    .field("environment", template, env, |e| {
                        if is_environment(&e) {
                            Ok(e)
                        } else {
                            Err(format!(
                                "environment {e:?} (env {env:?}) is not a GitHub environment name (1 to 255 printable characters)"
                            ))
                        }
                    })
                    .map(Some),
            };
            match (repo?, environment?) {
                ((owner, repo), None) => Some(Scope::Repo { owner, repo }),
                ((owner, repo), Some(environment)) => Some(Scope::Environment { owner, repo, environment }),
            }
        }
        (None, None, _) => None,
    }
}

/// Why GitHub would refuse `name` for a secret or variable.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("names cannot be empty");
    }
    if !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
        return Some("names may only hold A-Z, 0-9 and '_' (GitHub stores them upper-case)");
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Some("names cannot start with a digit");
    }
    if name.starts_with("GITHUB_") {
        return Some("names cannot start with GITHUB_");
    }
    None
}

/// A user or organization login.
fn is_account(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_repo_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_environment(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= 255 && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::name_problem;

    #[test]
    fn names_follow_githubs_rules() {
        assert_eq!(name_problem("DB_PASSWORD"), None);
        assert_eq!(name_problem("_X1"), None);
        assert!(name_problem("db_password").is_some());
        assert!(name_problem("1ST").is_some());
        assert!(name_problem("GITHUB_TOKEN").is_some());
        assert!(name_problem("A-B").is_some());
        assert!(name_problem("").is_some());
    }
}
