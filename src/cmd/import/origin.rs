//! FROM: where `cfgsync import` reads values, its syntax, and the readers.
//!
//! Every reader returns what it found as [`SecretString`]s, whatever the
//! origin says about them: until [`super`] has decided that a value is
//! plain, it is treated as secret. A reader never writes, and fails as a
//! whole (nothing is imported from a half-read origin).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use rustix::fs::{CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::ImportError;
use crate::format::FormatError;
use crate::secret::{Content, SecretString};
use crate::targets::ci;
use crate::targets::github::{Scope as GithubScope, api as github_api, spec::name_problem as github_name_problem};
use crate::targets::gitlab::{Owner, api as gitlab_api, parse_marker};
use crate::targets::kubernetes::ObjectKind;
use crate::targets::kubernetes::{KubeClients, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OUTPUT, client};

/// The most a dotenv file may hold: more than any env file needs, and
/// within what one Vault secret (Raft's 1 MiB entry limit) and etcd's
/// 1.5 MiB request limit can take, so a hostile file is refused before it
/// is read into memory.
pub const MAX_DOTENV_BYTES: u64 = 1024 * 1024;

/// The FROM kinds, as spelled.
const KINDS: [&str; 8] = [
    "dotenv",
    "kubernetes-secret",
    "kubernetes-configmap",
    "gitlab",
    "gitlab-group",
    "github",
    "github-env",
    "github-org",
];

/// Where to import from (the FROM argument, parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `dotenv:PATH`, relative to the working directory.
    Dotenv(PathBuf),
    /// `kubernetes-secret:CONTEXT/NAMESPACE/NAME`, `kubernetes-configmap:…`.
    Kubernetes { object: ObjectKind, context: String, namespace: String, name: String },
    /// `gitlab:GROUP/PROJECT` (or a numeric project id), `gitlab-group:GROUP`.
    Gitlab(Owner),
    /// `github:OWNER/REPO`, `github-env:OWNER/REPO/ENVIRONMENT`, `github-org:ORG`.
    Github(GithubScope),
}

impl FromStr for Origin {
    type Err = ImportError;

    fn from_str(text: &str) -> Result<Self, ImportError> {
        let bad = |why: String| ImportError::From { text: text.to_owned(), why };
        let Some((kind, rest)) = text.split_once(':') else {
            let hint =
                if Path::new(text).exists() { format!(" (for this file: dotenv:{text})") } else { String::new() };
            return Err(bad(format!("give the kind first: {}{hint}", examples())));
        };
        match kind {
            "dotenv" if rest.is_empty() => Err(bad("give the file: dotenv:PATH, e.g. dotenv:.env".to_owned())),
            "dotenv" => Ok(Origin::Dotenv(PathBuf::from(rest))),
            "kubernetes-secret" | "kubernetes-configmap" => {
                let object = if kind == "kubernetes-secret" { ObjectKind::Secret } else { ObjectKind::ConfigMap };
                // A context name may hold slashes (EKS: `arn:…:cluster/name`);
                // a namespace and an object name cannot.
                let mut parts = rest.rsplitn(3, '/');
                let (name, namespace, context) = (parts.next(), parts.next(), parts.next());
                match (context, namespace, name) {
                    (Some(c), Some(ns), Some(n)) if !c.is_empty() && !ns.is_empty() && !n.is_empty() => {
                        Ok(Origin::Kubernetes {
                            object,
                            context: c.to_owned(),
                            namespace: ns.to_owned(),
                            name: n.to_owned(),
                        })
                    }
                    _ => Err(bad(format!("give {kind}:CONTEXT/NAMESPACE/NAME, e.g. {kind}:prod/api/api"))),
                }
            }
            "gitlab" => {
                let numeric = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
                let path = rest.contains('/') && clean_path(rest);
                if !numeric && !path {
                    return Err(bad(
                        "give gitlab:GROUP/PROJECT (subgroups too: a/b/app) or a numeric project id".into()
                    ));
                }
                Ok(Origin::Gitlab(Owner::Project(rest.to_owned())))
            }
            "gitlab-group" => {
                if !clean_path(rest) {
                    return Err(bad("give gitlab-group:GROUP (subgroups too: a/b) or a numeric group id".into()));
                }
                Ok(Origin::Gitlab(Owner::Group(rest.to_owned())))
            }
            "github" => match rest.split('/').collect::<Vec<_>>().as_slice() {
                [owner, repo] if clean_name(owner) && clean_name(repo) => {
                    Ok(Origin::Github(GithubScope::Repo { owner: (*owner).to_owned(), repo: (*repo).to_owned() }))
                }
                _ => Err(bad("give github:OWNER/REPO".into())),
            },
            "github-env" => match rest.splitn(3, '/').collect::<Vec<_>>().as_slice() {
                [owner, repo, environment]
                    if clean_name(owner) && clean_name(repo) && !environment.trim().is_empty() =>
                {
                    Ok(Origin::Github(GithubScope::Environment {
                        owner: (*owner).to_owned(),
                        repo: (*repo).to_owned(),
                        environment: (*environment).to_owned(),
                    }))
                }
                _ => Err(bad("give github-env:OWNER/REPO/ENVIRONMENT".into())),
            },
            "github-org" if clean_name(rest) => Ok(Origin::Github(GithubScope::Org { org: rest.to_owned() })),
            "github-org" => Err(bad("give github-org:ORG".into())),
            other => {
                let kinds: Vec<String> = KINDS.iter().map(|k| (*k).to_owned()).collect();
                let hint =
                    crate::config::suggest(other, &kinds).map(|k| format!(" (did you mean {k}:?)")).unwrap_or_default();
                Err(bad(format!("unknown kind {other:?}{hint}: {}", examples())))
            }
        }
    }
}

fn examples() -> &'static str {
    "dotenv:PATH, kubernetes-secret:CONTEXT/NAMESPACE/NAME, kubernetes-configmap:CONTEXT/NAMESPACE/NAME, gitlab:GROUP/PROJECT, gitlab-group:GROUP, github:OWNER/REPO, github-env:OWNER/REPO/ENVIRONMENT or github-org:ORG"
}

/// A GitHub account or repository name: one non-empty segment.
fn clean_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', ' ']) && name != "." && name != ".."
}

/// A GitLab path: non-empty segments without white space.
fn clean_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|s| !s.is_empty() && !s.contains(char::is_whitespace))
}

impl fmt::Display for Origin {
    /// As typed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Dotenv(p) => write!(f, "dotenv:{}", p.display()),
            Origin::Kubernetes { object, context, namespace, name } => {
                write!(f, "{}:{context}/{namespace}/{name}", object.kind_name())
            }
            Origin::Gitlab(Owner::Project(p)) => write!(f, "gitlab:{p}"),
            Origin::Gitlab(Owner::Group(g)) => write!(f, "gitlab-group:{g}"),
            Origin::Github(scope) => f.write_str(&github_from(scope)),
        }
    }
}

impl Origin {
    /// For the plan's first line: `dotenv file .env`, `Kubernetes Secret api/api (context prod)`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Dotenv(p) => format!("dotenv file {}", crate::text::display_path(p)),
            Origin::Kubernetes { object, context, namespace, name } => {
                format!("Kubernetes {object} {namespace}/{name} (context {context})")
            }
            Origin::Gitlab(owner) => format!("GitLab {owner}"),
            Origin::Github(scope) => format!("GitHub {scope}"),
        }
    }

    /// Whether the origin says nothing about which values are secret.
    pub fn is_dotenv(&self) -> bool {
        matches!(self, Origin::Dotenv(_))
    }

    pub fn is_gitlab(&self) -> bool {
        matches!(self, Origin::Gitlab(_))
    }

    pub fn is_github(&self) -> bool {
        matches!(self, Origin::Github(_))
    }
}

/// FROM for a GitHub scope, as typed (`github:acme/app`).
pub fn github_from(scope: &GithubScope) -> String {
    match scope {
        GithubScope::Repo { owner, repo } => format!("github:{owner}/{repo}"),
        GithubScope::Environment { owner, repo, environment } => format!("github-env:{owner}/{repo}/{environment}"),
        GithubScope::Org { org } => format!("github-org:{org}"),
    }
}

/// One value read.
pub struct Found {
    /// The name in the origin: a dotenv name, a data key, a variable key.
    pub name: String,
    /// Text (checked when read), as secret as the origin says: a Secret's
    /// data and masked variables are secret; a dotenv file says nothing
    /// (secret: safe by default).
    pub value: Content,
    /// Things a person should know before importing it (GitLab flags a
    /// gitlab target would change).
    pub notes: Vec<String>,
    /// A CI item cfgsync may adopt (`None`: not a CI item, or one cfgsync wrote).
    pub adoptable: Option<Adoptable>,
}

impl Found {
    fn new(name: String, value: Content) -> Self {
        Self { name, value, notes: Vec::new(), adoptable: None }
    }
}

/// A CI item `--adopt` may record as this instance's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoptable {
    /// The target's record key: `KEY@scope` (GitLab), `variable/NAME` or
    /// `secret/NAME` (GitHub).
    pub id: String,
    /// Its name, for the plan.
    pub name: String,
    /// What it is, for the plan: `environment scope prod`, `variable`,
    /// `secret, …`; the plan lists names by this.
    pub group: String,
    /// What the target keeps where its config is silent (GitLab:
    /// `protected`, `raw`, `variable_type`; GitHub org items: `visibility`).
    pub attributes: BTreeMap<String, String>,
    /// GitLab: the scope (for the JSON document).
    pub scope: Option<String>,
}

/// A value the origin has but that cannot be imported, and why (never
/// the value itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unimportable {
    pub name: String,
    pub reason: String,
}

/// Everything read from an origin.
#[derive(Default)]
pub struct Fetched {
    pub found: Vec<Found>,
    pub unimportable: Vec<Unimportable>,
    /// About the origin as a whole (an object cfgsync wrote itself,
    /// variables of other environment scopes left out).
    pub notes: Vec<String>,
    /// Items that cannot be imported but may be adopted all the same
    /// (GitHub secrets: their values cannot be read back, so the target's
    /// first pass writes cfgsync's value over them).
    pub adopt_only: Vec<Adoptable>,
}

/// A value as text an etcd key or a Vault field can hold, or why not.
/// A value read from an origin, as secret as it says, when it is text
/// without NUL (what etcd keys and Vault fields cfgsync reads carry).
fn text_value(bytes: Vec<u8>, secret: bool) -> Result<Content, String> {
    match String::from_utf8(bytes) {
        Ok(t) if !t.contains('\0') => Ok(Content::new(t, secret)),
        Ok(t) => Err(format!(
            "its value holds {}, which etcd keys and Vault fields cfgsync reads do not carry",
            crate::render::describe_bytes(t.as_bytes())
        )),
        Err(e) => Err(format!(
            "its value is {}, and etcd keys and Vault fields hold text",
            crate::render::describe_bytes(e.as_bytes())
        )),
    }
}

// ---------------------------------------------------------------------------
// dotenv
// ---------------------------------------------------------------------------

/// Reads a dotenv file: the final component is not followed if it is a
/// symlink, only a regular file is read (a FIFO would block), at most
/// [`MAX_DOTENV_BYTES`]; parsed strictly ([`crate::format::dotenv::decode_entries`]:
/// the forms cfgsync's default dialect writes, plus comments, blank lines,
/// `export` and CRLF), a name set twice is refused.
pub fn read_dotenv(path: &Path) -> Result<Fetched, ImportError> {
    let shown = crate::text::display_path(path);
    let bytes = read_bounded(path, &shown)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        ImportError::DotenvNotText { path: shown.clone(), line }
    })?;
    let entries = crate::format::dotenv::decode_entries(&text).map_err(|e| match e {
        FormatError::DotenvSyntax { line, reason } => ImportError::DotenvSyntax { path: shown.clone(), line, reason },
        other => ImportError::DotenvRead { path: shown.clone(), cause: other.to_string() },
    })?;
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    let mut fetched = Fetched::default();
    for (line, name, value) in entries {
        if let Some(first) = first_line.insert(name.clone(), line) {
            return Err(ImportError::DotenvDuplicate { path: shown, line, name, first });
        }
        match text_value(value.into_bytes(), true) {
            Ok(value) => fetched.found.push(Found::new(name, value)),
            Err(reason) => fetched.unimportable.push(Unimportable { name, reason }),
        }
    }
    Ok(fetched)
}

fn read_bounded(path: &Path, shown: &str) -> Result<Vec<u8>, ImportError> {
    let io = |cause: String| ImportError::DotenvRead { path: shown.to_owned(), cause };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => {
            let target = std::fs::read_link(path).map(|t| format!(" ({})", t.display())).unwrap_or_default();
            return Err(io(format!("is a symlink; cfgsync does not follow it: name the file it points to{target}")));
        }
        Err(e) => return Err(io(std::io::Error::from(e).to_string())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| io(std::io::Error::from(e).to_string()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(io(format!("is not a regular file ({kind:?}); refusing to read it")));
    }
    let too_large = || io(format!("is larger than {MAX_DOTENV_BYTES} bytes, the most import reads from a dotenv file"));
    if st.st_size as u64 > MAX_DOTENV_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    // The size may change between fstat and read: bound the read itself.
    std::fs::File::from(fd).take(MAX_DOTENV_BYTES + 1).read_to_end(&mut bytes).map_err(|e| io(e.to_string()))?;
    if bytes.len() as u64 > MAX_DOTENV_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// Reads one Secret's `data` (secret) or ConfigMap's `data` and
/// `binaryData` (plain): one GET.
pub async fn read_kubernetes(
    clients: &KubeClients,
    object: ObjectKind,
    context: &str,
    namespace: &str,
    name: &str,
    shown: &str,
) -> Result<Fetched, ImportError> {
    let fail = |cause: String| ImportError::Kubernetes { from: shown.to_owned(), cause };
    let kube = clients.client(context).await.map_err(|e| fail(e.to_string()))?;
    let get_error = |e: kube::Error| match &e {
        kube::Error::Api(s) if s.code == 404 => fail(format!("not found ({})", client::cause(&e))),
        _ => fail(client::cause(&e)),
    };
    let (data, meta): (BTreeMap<String, Vec<u8>>, kube::api::ObjectMeta) = match object {
        ObjectKind::Secret => {
            let api: kube::Api<Secret> = kube::Api::namespaced(kube, namespace);
            let s = api.get(name).await.map_err(get_error)?;
            (s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(), s.metadata)
        }
        ObjectKind::ConfigMap => {
            let api: kube::Api<ConfigMap> = kube::Api::namespaced(kube, namespace);
            let c = api.get(name).await.map_err(get_error)?;
            let mut data: BTreeMap<String, Vec<u8>> =
                c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(c.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            (data, c.metadata)
        }
    };
    let mut fetched = Fetched::default();
    let labels = meta.labels.unwrap_or_default();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some("cfgsync") {
        let output = labels.get(LABEL_OUTPUT).map(String::as_str).unwrap_or("?");
        let instance = labels.get(LABEL_INSTANCE).map(String::as_str).unwrap_or("?");
        fetched.notes.push(format!(
            "this {object} is written by cfgsync (instance {instance}, output {output}): importing it copies a rendering back into the source"
        ));
    }
    for (key, bytes) in data {
        match text_value(bytes, object == ObjectKind::Secret) {
            Ok(value) => fetched.found.push(Found::new(key, value)),
            Err(reason) => fetched.unimportable.push(Unimportable { name: key, reason }),
        }
    }
    Ok(fetched)
}

// ---------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------

/// How to reach GitLab.
pub struct GitlabAccess<'a> {
    /// Checked base URL, no trailing slash.
    pub url: &'a str,
    pub token_env: &'a str,
    /// The environment scope to import; `*` variables come too unless a
    /// variable of this scope has the same key.
    pub scope: &'a str,
}

/// Lists a project's or group's variables (every page, `per_page=100`)
/// and keeps those of the scope.
pub async fn read_gitlab(
    owner: &Owner,
    access: &GitlabAccess<'_>,
    set_secret_hint: &str,
) -> Result<Fetched, ImportError> {
    let dest = format!("GitLab {owner}");
    let token = match std::env::var(access.token_env) {
        Ok(t) if !t.trim().is_empty() => SecretString::new(t.trim()),
        _ => return Err(ImportError::NoToken { dest, var: access.token_env.to_owned() }),
    };
    let http = ci::Client::new(ci::Retry::default());
    let api = gitlab_api::Api::new(&http, access.url, owner, &token, dest);
    let listed = api.list().await.map_err(|e| ImportError::Ci(Box::new(e)))?;
    let mut fetched = Fetched::default();
    for v in of_scope(listed, access.scope, &mut fetched) {
        read_gitlab_variable(v, set_secret_hint, &mut fetched);
    }
    Ok(fetched)
}

/// The variables of `scope`, and those of `*` no variable of `scope`
/// shadows, by key; notes what is left out.
fn of_scope(
    listed: Vec<gitlab_api::LiveVariable>,
    scope: &str,
    fetched: &mut Fetched,
) -> Vec<gitlab_api::LiveVariable> {
    let (mut exact, mut any): (BTreeMap<String, gitlab_api::LiveVariable>, BTreeMap<String, gitlab_api::LiveVariable>) =
        Default::default();
    let mut other_scopes = 0usize;
    for v in listed {
        if v.environment_scope == scope {
            exact.insert(v.key.clone(), v);
        } else if v.environment_scope == "*" {
            any.insert(v.key.clone(), v);
        } else {
            other_scopes += 1;
        }
    }
    for (key, _) in any.iter().filter(|(k, _)| exact.contains_key(*k)) {
        fetched.notes.push(format!(
            "{key}: the variable of environment scope * is shadowed by the one of scope {scope} (imported)"
        ));
    }
    any.retain(|k, _| !exact.contains_key(k));
    if other_scopes > 0 {
        fetched.notes.push(format!(
            "{other_scopes} variable(s) of other environment scopes left out (--environment-scope chooses one)"
        ));
    }
    let mut all: Vec<gitlab_api::LiveVariable> = exact.into_values().chain(any.into_values()).collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

/// One GitLab variable: found (with what adopting it keeps), adoptable
/// only (hidden: its value cannot be read), or not importable.
fn read_gitlab_variable(v: gitlab_api::LiveVariable, set_secret_hint: &str, fetched: &mut Fetched) {
    // What the gitlab target keeps of an adopted variable where its
    // config is silent (masking follows the output's taint).
    let adoptable = |group: String| {
        let attributes = [
            ("protected", v.protected.to_string()),
            ("raw", v.raw.to_string()),
            ("variable_type", v.variable_type.clone()),
            ("hidden", v.hidden.to_string()),
        ];
        Adoptable {
            id: crate::targets::gitlab::item_id(&v.key, &v.environment_scope),
            name: v.key.clone(),
            group,
            attributes: attributes.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            scope: Some(v.environment_scope.clone()),
        }
    };
    let marker = parse_marker(v.description.as_deref());
    let value = match (&v.value, v.hidden) {
        (Some(value), false) => text_value(value.expose().to_vec(), v.masked),
        _ => Err(format!(
            "hidden in GitLab: its value cannot be read back; set it with `{set_secret_hint} {}`{}",
            v.key,
            if marker.is_none() {
                " (--adopt records it as this instance's: the first pass then writes cfgsync's value over it)"
            } else {
                ""
            }
        )),
    };
    let value = match value {
        Ok(value) => value,
        Err(reason) => {
            if v.hidden && marker.is_none() {
                fetched.adopt_only.push(adoptable(format!(
                    "environment scope {}, hidden: its value written by the first pass",
                    v.environment_scope
                )));
            }
            fetched.unimportable.push(Unimportable { name: v.key.clone(), reason });
            return;
        }
    };
    let mut found = Found::new(v.key.clone(), value);
    match marker {
        Some((instance, env, output)) => found
            .notes
            .push(format!("written by cfgsync (instance {instance}, env {env}, output {output}): not adopted")),
        None => found.adoptable = Some(adoptable(format!("environment scope {}", v.environment_scope))),
    }
    if v.protected {
        found.notes.push(
            "protected in GitLab: kept when adopted (--adopt), unless the gitlab target sets protected itself".into(),
        );
    }
    if v.variable_type == "file" {
        found.notes.push("a file variable in GitLab: kept a file variable when adopted (--adopt)".into());
    }
    if !v.raw && found.value.expose().contains(&b'$') {
        found.notes.push(
            "expanded in GitLab (raw = false) and holds a `$`: imported as written, not expanded; kept expanded when adopted (--adopt), unless the gitlab target sets raw itself".into(),
        );
    }
    fetched.found.push(found);
}

// ---------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------

/// How to reach GitHub.
pub struct GithubAccess<'a> {
    /// Checked base URL, no trailing slash.
    pub url: &'a str,
    pub token_env: &'a str,
}

/// Lists a repository's, environment's or organization's Actions variables
/// (plain: GitHub shows them to anyone who may read the repository) and
/// secrets (whose values GitHub never gives back: not importable, but
/// adoptable).
pub async fn read_github(
    scope: &GithubScope,
    access: &GithubAccess<'_>,
    set_secret_hint: &str,
) -> Result<Fetched, ImportError> {
    let dest = format!("GitHub {scope}");
    let token = match std::env::var(access.token_env) {
        Ok(t) if !t.trim().is_empty() => SecretString::new(t.trim()),
        _ => return Err(ImportError::NoToken { dest, var: access.token_env.to_owned() }),
    };
    let http = ci::Client::new(ci::Retry::default());
    let api = github_api::Api::new(&http, access.url, scope, &token, dest);
    let fail = |e: ci::CiError| ImportError::Ci(Box::new(e));
    let variables = api.list_variables().await.map_err(fail)?;
    let secrets = api.list_secrets().await.map_err(fail)?;
    let mut fetched = Fetched::default();
    let visibility = |v: &Option<String>| -> BTreeMap<String, String> {
        v.iter().map(|v| ("visibility".to_owned(), v.clone())).collect()
    };
    for v in variables {
        let name = v.name.to_ascii_uppercase();
        match text_value(v.value.expose().to_vec(), false) {
            Ok(value) => {
                let mut found = Found::new(name.clone(), value);
                if github_name_problem(&name).is_none() {
                    found.adoptable = Some(Adoptable {
                        id: format!("variable/{name}"),
                        name: name.clone(),
                        group: "variable".to_owned(),
                        attributes: visibility(&v.visibility),
                        scope: None,
                    });
                }
                if let Some(vis) = &v.visibility {
                    found.notes.push(format!(
                        "visibility {vis} in GitHub: kept when adopted (--adopt), unless the github target sets visibility itself"
                    ));
                }
                fetched.found.push(found);
            }
            Err(reason) => fetched.unimportable.push(Unimportable { name, reason }),
        }
    }
    for s in secrets {
        let name = s.name.to_ascii_uppercase();
        fetched.unimportable.push(Unimportable {
            name: name.clone(),
            reason: format!(
                "a GitHub secret: its value cannot be read back; set it with `{set_secret_hint} {name}`{}",
                if github_name_problem(&name).is_none() {
                    " (--adopt records it as this instance's: the first pass then writes cfgsync's value over it)"
                } else {
                    ""
                }
            ),
        });
        if github_name_problem(&name).is_none() {
            fetched.adopt_only.push(Adoptable {
                id: format!("secret/{name}"),
                name,
                group: "secret, its value written by the first pass: GitHub cannot show it".to_owned(),
                attributes: visibility(&s.visibility),
                scope: None,
            });
        }
    }
    Ok(fetched)
}
