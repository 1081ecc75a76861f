//! `kind = "github"` in the config: the fields as written, and the typed
//! target, with names checked against GitHub's rules at `validate` time.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::config::Location;
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

    pub fn is_org(&self) -> bool {
        matches!(self, Scope::Org { .. })
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
    let (output, envs, entries) = (input.output, input.envs, input.entries);
    let mut problems = Problems::new();
    let mut problem = |at: Option<&Location>, message: String| problems.push((at.cloned(), message));
    let api_url = match ci::check_base_url(raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL)) {
        Ok(u) => u,
        Err(e) => {
            problem(None, format!("output {output:?}: github api_url {e}"));
            String::new()
        }
    };
    let token_env = raw.token_env.unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned());
    if !ci::is_env_var_name(&token_env) {
        problem(None, format!("output {output:?}: token_env {token_env:?} is not an environment variable name"));
    }
    match (&raw.org, &raw.repo, &raw.environment) {
        (Some(_), None, None) | (None, Some(_), _) => {}
        (Some(_), _, Some(_)) => problem(None, format!("output {output:?}: `environment` goes with `repo`, not `org`")),
        _ => problem(None, format!("output {output:?}: a github target needs exactly one of `org` and `repo`")),
    }
    let visibility_set = raw.visibility.is_some();
    let visibility = match (&raw.org, raw.visibility) {
        (Some(_), None) => Some("private".to_owned()),
        (Some(_), Some(v)) if matches!(v.as_str(), "all" | "private" | "selected") => Some(v),
        (Some(_), Some(v)) => {
            problem(None, format!("output {output:?}: visibility {v:?}: use \"all\", \"private\" or \"selected\""));
            None
        }
        (None, Some(_)) => {
            problem(None, format!("output {output:?}: `visibility` applies to organization targets only"));
            None
        }
        (None, None) => None,
    };
    if !raw.selected_repository_ids.is_empty() && visibility.as_deref() != Some("selected") {
        problem(None, format!("output {output:?}: `selected_repository_ids` needs visibility = \"selected\""));
    }
    let key_template = raw.key.as_deref().unwrap_or(DEFAULT_KEY);
    let mut addresses = BTreeMap::new();
    for env in envs {
        let field = |what: &str, template: &str, vars: &[(&str, &str)]| {
            crate::render::render_field(template, vars)
                .map_err(|e| format!("output {output:?}: {what} {template:?}: {e}"))
        };
        let scope = match (&raw.org, &raw.repo, &raw.environment) {
            (Some(org), _, _) => match field("org", org, &[("env", env)]) {
                Ok(org) if is_account(&org) => Some(Scope::Org { org }),
                Ok(org) => {
                    problem(
                        None,
                        format!("output {output:?}: org {org:?} (env {env:?}) is not a GitHub organization name"),
                    );
                    None
                }
                Err(e) => {
                    problem(None, e);
                    None
                }
            },
            (None, Some(repo), environment) => {
                let repo = match field("repo", repo, &[("env", env)]) {
                    Ok(r) => match r.split_once('/') {
                        Some((o, n)) if is_account(o) && is_repo_name(n) => Some((o.to_owned(), n.to_owned())),
                        _ => {
                            problem(
                                None,
                                format!(
                                    "output {output:?}: repo {r:?} (env {env:?}) is not \"owner/name\" of a GitHub repository"
                                ),
                            );
                            None
                        }
                    },
                    Err(e) => {
                        problem(None, e);
                        None
                    }
                };
                let environment = match environment.as_deref().map(|e| field("environment", e, &[("env", env)])) {
                    None => Some(None),
                    Some(Ok(e)) if is_environment(&e) => Some(Some(e)),
                    Some(Ok(e)) => {
                        problem(
                            None,
                            format!(
                                "output {output:?}: environment {e:?} (env {env:?}) is not a GitHub environment name (1 to 255 printable characters)"
                            ),
                        );
                        None
                    }
                    Some(Err(e)) => {
                        problem(None, e);
                        None
                    }
                };
                match (repo, environment) {
                    (Some((owner, repo)), Some(None)) => Some(Scope::Repo { owner, repo }),
                    (Some((owner, repo)), Some(Some(environment))) => {
                        Some(Scope::Environment { owner, repo, environment })
                    }
                    _ => None,
                }
            }
            (None, None, _) => None,
        };
        let names = ci::entry_names(
            output,
            env,
            entries,
            key_template,
            "GitHub secret/variable",
            |n| {
                name_problem(n)
                    .map(|why| format!(": {why} (use key = \"{{{{ name | upper }}}}\" or another key schema)"))
            },
            &mut problem,
        );
        if let Some(scope) = scope {
            addresses.insert(env.clone(), GithubAddress { scope, names });
        }
    }
    let mut seen: BTreeMap<&Scope, &String> = BTreeMap::new();
    for (env, a) in &addresses {
        if let Some(other) = seen.insert(&a.scope, env) {
            problem(
                None,
                format!(
                    "output {output:?}: envs {other} and {env} would both write the secrets and variables of GitHub {}; template `environment` (or the repo/org) with {{{{ env }}}}, or limit the output to one env",
                    a.scope
                ),
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(GithubTarget {
        api_url,
        token_env,
        addresses,
        visibility,
        visibility_set,
        selected_repository_ids: raw.selected_repository_ids,
        // Relative to the config's directory.
        ca_file: raw.ca_file.map(|p| input.dir.join(p)),
    })
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
