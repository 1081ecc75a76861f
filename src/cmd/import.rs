//! `cfgsync import --env E FROM`: adopt what already exists — a dotenv
//! file, a Kubernetes Secret or ConfigMap, the CI/CD variables of a GitLab
//! project or group — into etcd (plain) and Vault (secret) for one env,
//! showing the plan first. Day one for a team with hand-made CI variables
//! is an import, not a retype.
//!
//! ```text
//! cfgsync import --env prod dotenv:.env --plain 'LOG_*' --key-prefix api/ --secret-path api/imported
//! cfgsync import --env prod kubernetes-secret:prod/api/api --secret-path api/imported
//! cfgsync import --env prod kubernetes-configmap:prod/api/web --key-prefix web/
//! GITLAB_TOKEN=… cfgsync import --env prod gitlab:group/app --key-prefix api/ --secret-path api/ci --adopt
//! ```
//!
//! Decisions:
//! - **FROM names one object, with its kind first** (`dotenv:PATH`,
//!   `kubernetes-secret:CONTEXT/NAMESPACE/NAME`,
//!   `kubernetes-configmap:CONTEXT/NAMESPACE/NAME`, `gitlab:GROUP/PROJECT`,
//!   `gitlab-group:GROUP`), as a target's `kind` is spelled in the config.
//!   The Kubernetes context is required (importing another cluster's
//!   Secret into prod by accident is the mistake to prevent) and may hold
//!   slashes (EKS context names do): namespace and name are the last two
//!   segments. Kubernetes uses the same kubeconfig as the targets
//!   (`--kubeconfig`, `[kubernetes] kubeconfig`, `KUBECONFIG`,
//!   `~/.kube/config`); GitLab `--gitlab-url` (default gitlab.com) and the
//!   token in `GITLAB_TOKEN` (`--token-env`). A dotenv path is relative to
//!   the working directory, as `kubectl -f` is.
//! - **Where values go**: a plain value becomes the etcd key
//!   `<prefix>/<env>/<KEY_PREFIX><name>` (`--key-prefix` is a literal
//!   prefix, `api/` gives `api/DB_HOST`); a secret becomes a field of one
//!   Vault KV v2 secret `<mount>/<env>/<SECRET_PATH>` (`--secret-path`,
//!   required as soon as one value is secret: no guessed default). Names
//!   are kept as they are: the output's entry names, not the key names,
//!   decide what a rendering calls them.
//! - **Which values are secret**: what the origin protects stays
//!   protected. A Secret's data and masked (or hidden) GitLab variables
//!   are secret, a ConfigMap and unmasked variables plain. A dotenv file
//!   says nothing, so every dotenv value is secret unless `--plain GLOB`
//!   names it (safe by default). `--secret GLOB` makes any value secret.
//!   `--plain` is refused for the other kinds: import never downgrades a
//!   value its origin keeps secret (`cfgsync set` can, explicitly).
//! - **Plan first**: every name, its destination and its state: `new`,
//!   `same` or `differs`; plain values escaped for the terminal
//!   ([`crate::text`]), secrets only `(secret, new)`, `(secret, same)`,
//!   `(secret, differs)` — never the value, its length or a hash. Values
//!   live in [`Content`] from the moment they are classified (and in
//!   [`SecretString`](crate::secret::SecretString) before), so printing goes through
//!   [`Content::shown`], which has nothing to give for a secret. `--dry-run`
//!   stops after the plan. Otherwise the terminal is asked, as by `cfgsync
//!   set` (`--yes` skips; no terminal: nothing written, exit 2).
//!   `--output json` needs `--yes` or `--dry-run`, as `terraform apply
//!   -json` needs `-auto-approve`: a question cannot sit in the middle of a
//!   document.
//! - **A differing value is kept**: etcd and Vault are the source of truth
//!   and someone may have decided that value; it is replaced only with
//!   `--overwrite`, the imported value wins. The flag was first spelled
//!   `--prefer-destination` (the target system cfgsync writes to, where
//!   the value was read, wins), and that stays an alias; but in this
//!   command FROM is the source and etcd and Vault the destination, so
//!   "prefer destination" reads as the opposite of what it does, and
//!   `--overwrite` is what `cp`, `vault kv put` and `helm` users look for.
//!   Without it the conflict is reported, everything else is imported,
//!   and the exit code is 1. A value the origin has but cannot give (a
//!   hidden GitLab variable, bytes that are not text) is named as not
//!   importable, also exit 1. `--dry-run` exits with the code the import
//!   would have, so a script can ask whether it would be clean.
//! - **Writes are check-and-set** against what the plan showed: etcd
//!   through [`etcd_admin::put_guarded`] (each key's `mod_revision`; at most
//!   [`etcd_admin::MAX_TXN_OPS`] puts and 1 MiB per transaction, etcd's
//!   defaults), Vault through [`vault_admin::write_secret`] (the version;
//!   every other field of the secret kept). `--owner`/`--reason` are
//!   recorded for every value written, as `cfgsync set` records them (the
//!   `_meta` sibling key, the secret's `custom_metadata`); values already
//!   the same are not touched, so a second import writes nothing. Vault is
//!   written first (one request), then etcd; a failure names what was
//!   written before it, and running the same import again completes it.
//! - **A source that cannot be read writes nothing**: a GitLab error, a
//!   missing object, an unreadable file, a dotenv syntax error (named
//!   `file:line`, from the strict reader of
//!   [`crate::format::dotenv::decode_entries`]: what cfgsync's default
//!   dialect writes reads back exactly) or a name set twice in it is one
//!   `error:` line and exit 2, before etcd or Vault is contacted. A dotenv
//!   file is opened without following a symlink, only if regular, and
//!   read up to [`origin::MAX_DOTENV_BYTES`].
//! - **Round trip**: after an import, a reconcile whose outputs render the
//!   imported values into the place they came from writes nothing it does
//!   not have to:
//!   - a dotenv `file` target: nothing at all, byte for byte (the file
//!     target compares content and mode; use a mode the file has), and it
//!     records the file as its own: this is how a file cfgsync did not
//!     write is adopted (a differing one is refused, not overwritten);
//!   - a Kubernetes target refuses an object cfgsync did not make until
//!     it is adopted: the annotation `cfgsync.io/adopt: <instance>` on the
//!     object (`kubectl annotate`, by someone allowed to change it; the
//!     refusal prints the command). Then one apply per object adds
//!     cfgsync's labels and annotations (the data is the same).
//!   - a GitLab target refuses a hand-made variable that its record does
//!     not name. `--adopt` records every imported variable whose value now
//!     is in etcd or Vault (new, same, or replaced; not a kept conflict,
//!     not one another cfgsync wrote) in that record — the same store and
//!     key the target uses, for this config's instance, `--gitlab-url`,
//!     project or group as typed, environment scope and `--token-env`, so
//!     the target must name them the same way — with the flags it has
//!     (`protected`, `raw`, `variable_type`), which the target keeps where
//!     its config does not set them. Its first pass then sends one update
//!     per variable, which adds cfgsync's description and nothing else
//!     (unless the target sets a flag otherwise: the plan says so, in
//!     words), and later passes send none.
//!     Adoption is explicit because a record also makes every pass read
//!     that project and lets cfgsync prune what it then owns; an import
//!     that only copies values should not change who owns them.
//!   - a GitHub target refuses any existing item its record does not name
//!     (GitHub items carry no mark). `github:OWNER/REPO`,
//!     `github-env:OWNER/REPO/ENVIRONMENT` and `github-org:ORG` import the
//!     variables (plain: GitHub shows them) and, with `--adopt`, record
//!     them; a secret's value cannot be read back, so secrets are named as
//!     not importable and, with `--adopt`, recorded all the same: the
//!     target's first pass writes each once with cfgsync's value, and takes
//!     an adopted variable with the same value over without a write.
//!     `--github-url` and `--token-env` (default `GITHUB_TOKEN`) name the
//!     API as the target does.
//! - **GitLab scopes**: only variables of `--environment-scope` (default:
//!   the env's name) and of `*` are read; a `*` variable shadowed by one of
//!   the exact scope is left out, as GitLab would for a job of that env.
//!   Flags a gitlab target would change are named in the plan
//!   (`protected`, `file`, an expanded value holding `$`).
//! - **Not here, on purpose**: renaming (`--strip-prefix`, lower-casing)
//!   and choosing names (`--only`): names are kept, one FROM is imported
//!   as a whole, and the plan shows every name before anything is written.
//!
//! Layout: [`origin`] parses FROM and reads it; `destination` reads what
//! etcd, Vault and the GitLab record hold and writes; `report` prints the
//! plan and the JSON document; this module checks the command line,
//! classifies, plans (pure: `plan`) and runs the steps in order.

mod destination;
pub mod origin;
mod report;

use std::io::{self, Write};
use std::process::ExitCode;

use serde::Serialize;

use super::inventory::{Clients, KeyClient};
use super::terminal::{Style, confirm};
use super::{CmdError, ConfigContext, check_env, check_relative_name};
use crate::cli::{ImportArgs, OutputFormat};
use crate::config::Config;
use crate::secret::Content;
use crate::source::{etcd_admin, vault_admin};
use crate::targets::ci::{self, CiError};
use crate::targets::kubernetes::KubeClients;
use crate::targets::{github, gitlab};
use crate::text::one_line;
use destination::{Current, Destinations};
pub use origin::{Adoptable, Fetched, Found, Origin, Unimportable};
use report::{Places, Written, json_document, print_plan, report_incomplete};

pub use crate::targets::ci::ADOPTED_FINGERPRINT;

/// Usage errors and origins that cannot be read: exit code 2, nothing
/// written. Names files, lines, objects and variables, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("FROM {text:?}: {why}")]
    From { text: String, why: String },
    /// `value`: ` "as given"`, or empty for a switch.
    #[error("--{flag}{value}: {why}")]
    Flag { flag: &'static str, value: String, why: String },
    #[error("--output json needs --yes or --dry-run: a confirmation cannot be asked in the middle of a JSON document")]
    JsonNeedsYes,
    #[error("{path}: {cause}; nothing written")]
    DotenvRead { path: String, cause: String },
    #[error("{path}:{line}: {reason}; nothing written")]
    DotenvSyntax { path: String, line: usize, reason: &'static str },
    #[error("{path}:{line}: not UTF-8 text; nothing written")]
    DotenvNotText { path: String, line: usize },
    #[error(
        "{path}:{line}: {name} is set again (first on line {first}); dotenv readers disagree on which one wins: remove one; nothing written"
    )]
    DotenvDuplicate { path: String, line: usize, name: String, first: usize },
    #[error("{from}: {cause}; nothing written")]
    Kubernetes { from: String, cause: String },
    #[error(
        "{dest}: the API token is not set: export {var} (or name another variable with --token-env); nothing written"
    )]
    NoToken { dest: String, var: String },
    #[error("{0}; nothing written")]
    Ci(Box<CiError>),
    #[error(
        "{count} value(s) are secret ({names}): name the Vault secret whose fields they become with --secret-path, e.g. --secret-path api/imported; nothing written"
    )]
    NeedsSecretPath { count: usize, names: String },
}

/// GitLab settings of the command line, checked.
struct GitlabSettings {
    url: String,
    token_env: String,
    scope: String,
}

/// GitHub settings of the command line, checked.
struct GithubSettings {
    url: String,
    token_env: String,
}

/// The command line, checked: whatever can be wrong with it is found
/// before anything is read.
struct Request {
    env: String,
    origin: Origin,
    key_prefix: String,
    secret_path: Option<String>,
    plain: Vec<String>,
    secret: Vec<String>,
    overwrite: bool,
    gitlab: Option<GitlabSettings>,
    github: Option<GithubSettings>,
    adopt: bool,
    owner: Option<String>,
    reason: Option<String>,
    dry_run: bool,
    yes: bool,
    json: bool,
}

fn flag_error(flag: &'static str, value: &str, why: impl Into<String>) -> CmdError {
    ImportError::Flag { flag, value: format!(" {value:?}"), why: why.into() }.into()
}

/// A switch (a flag without a value) that does not apply.
fn switch_error(flag: &'static str, why: impl Into<String>) -> CmdError {
    ImportError::Flag { flag, value: String::new(), why: why.into() }.into()
}

/// The names given by flags: a key prefix, a secret path, globs.
fn check_names(args: &ImportArgs) -> Result<(), CmdError> {
    if !args.key_prefix.is_empty() && check_relative_name("key prefix", &format!("{}x", args.key_prefix)).is_err() {
        return Err(flag_error(
            "key-prefix",
            &args.key_prefix,
            "a prefix of key names relative to the env, like `api/`: no leading `/`, no empty, `.` or `..` segment",
        ));
    }
    if let Some(path) = &args.secret_path {
        check_relative_name("secret path", path)?;
    }
    for (flag, globs) in [("plain", &args.plain), ("secret", &args.secret)] {
        if let Some(g) = globs.iter().find(|g| g.is_empty()) {
            return Err(flag_error(flag, g, "an empty pattern matches nothing: give a name or a glob like 'LOG_*'"));
        }
    }
    Ok(())
}

/// Flags that apply to other origins than `origin` are refused.
fn check_flags_apply(args: &ImportArgs, origin: &Origin) -> Result<(), CmdError> {
    if let (Some(g), false) = (args.plain.first(), origin.is_dotenv()) {
        return Err(flag_error(
            "plain",
            g,
            format!(
                "applies to dotenv files only: {} says itself which values are secret, and import never makes a secret plain (use `cfgsync set` for that)",
                origin.describe()
            ),
        ));
    }
    let gitlab_only = [("environment-scope", &args.environment_scope), ("gitlab-url", &args.gitlab_url)];
    if !origin.is_gitlab()
        && let Some((flag, Some(value))) = gitlab_only.iter().find(|(_, v)| v.is_some())
    {
        return Err(flag_error(flag, value, "applies to gitlab: and gitlab-group: only"));
    }
    if !origin.is_github()
        && let Some(value) = &args.github_url
    {
        return Err(flag_error("github-url", value, "applies to github:, github-env: and github-org: only"));
    }
    let ci = origin.is_gitlab() || origin.is_github();
    if !ci {
        if let Some(value) = &args.token_env {
            return Err(flag_error("token-env", value, "applies to gitlab: and github: origins only"));
        }
        if args.adopt {
            return Err(switch_error(
                "adopt",
                "applies to gitlab: and github: origins only: a Kubernetes object is adopted by annotating it cfgsync.io/adopt=<instance> (kubectl annotate), file targets take an existing file over, without a record",
            ));
        }
    }
    Ok(())
}

/// How to reach GitLab or GitHub, for a CI origin.
fn ci_settings(
    args: &ImportArgs,
    origin: &Origin,
) -> Result<(Option<GitlabSettings>, Option<GithubSettings>), CmdError> {
    let token_env = |default: &str| -> Result<String, CmdError> {
        let token_env = args.token_env.clone().unwrap_or_else(|| default.to_owned());
        if !ci::is_env_var_name(&token_env) {
            return Err(flag_error("token-env", &token_env, "not an environment variable name"));
        }
        Ok(token_env)
    };
    let gitlab = if origin.is_gitlab() {
        let url_text = args.gitlab_url.as_deref().unwrap_or(gitlab::spec::DEFAULT_URL);
        let url = ci::check_base_url(url_text).map_err(|why| flag_error("gitlab-url", url_text, why))?;
        let token_env = token_env(gitlab::spec::DEFAULT_TOKEN_ENV)?;
        let scope = args.environment_scope.clone().unwrap_or_else(|| args.env.clone());
        if scope.trim().is_empty() {
            return Err(flag_error("environment-scope", &scope, "give a scope, e.g. prod or *"));
        }
        Some(GitlabSettings { url, token_env, scope })
    } else {
        None
    };
    let github = if origin.is_github() {
        let url_text = args.github_url.as_deref().unwrap_or(github::spec::DEFAULT_API_URL);
        let url = ci::check_base_url(url_text).map_err(|why| flag_error("github-url", url_text, why))?;
        Some(GithubSettings { url, token_env: token_env(github::spec::DEFAULT_TOKEN_ENV)? })
    } else {
        None
    };
    Ok((gitlab, github))
}

impl Request {
    fn new(config: &Config, args: &ImportArgs, output: OutputFormat) -> Result<Self, CmdError> {
        check_env(config, &args.env)?;
        let origin: Origin = args.from.parse()?;
        check_names(args)?;
        check_flags_apply(args, &origin)?;
        let (gitlab, github) = ci_settings(args, &origin)?;
        let json = output == OutputFormat::Json;
        if json && !args.yes && !args.dry_run {
            return Err(ImportError::JsonNeedsYes.into());
        }
        Ok(Self {
            env: args.env.clone(),
            origin,
            key_prefix: args.key_prefix.clone(),
            secret_path: args.secret_path.clone(),
            plain: args.plain.clone(),
            secret: args.secret.clone(),
            overwrite: args.overwrite,
            gitlab,
            github,
            adopt: args.adopt,
            owner: args.owner.clone(),
            reason: args.reason.clone(),
            dry_run: args.dry_run,
            yes: args.yes,
            json,
        })
    }

    /// Whether `name` is imported as a secret.
    fn is_secret(&self, found: &Found) -> bool {
        let matches = |globs: &[String]| globs.iter().any(|g| glob_match(g, &found.name));
        let origin_says = if self.origin.is_dotenv() { !matches(&self.plain) } else { found.value.is_secret() };
        origin_says || matches(&self.secret)
    }

    /// What adopted items are called: `GitLab variable(s)`, `GitHub item(s)`.
    fn adopted_noun(&self) -> &'static str {
        if self.origin.is_github() { "GitHub variable(s) and secret(s)" } else { "GitLab variable(s)" }
    }

    /// `cfgsync set-secret E PATH`, to which a field name is added.
    fn set_secret_hint(&self) -> String {
        let path = self.secret_path.as_deref().unwrap_or("<secret path>");
        format!("cfgsync set-secret {} {path}", self.env)
    }
}

/// `*` (any run of characters) and `?` (one character) glob matching of a
/// whole name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and how much of the name it has taken.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Where one value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    /// An etcd key: its name relative to the env, and the full key.
    Key { name: String, path: String },
    /// A field of the `--secret-path` secret.
    Field { field: String },
}

/// How the destination compares with the imported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    New,
    Same,
    Differs,
}

/// What happens to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// New: written.
    Import,
    /// Same: nothing to do.
    Unchanged,
    /// Differs, `--overwrite`: the imported value replaces it.
    Replace,
    /// Differs: the value there stays; exit code 1.
    Keep,
}

/// One value of the plan.
struct Item {
    /// The name in the origin.
    name: String,
    dest: Dest,
    value: Content,
    state: State,
    outcome: Outcome,
    /// What etcd holds now, for a plain key that differs (text for a
    /// person: escaped when printed).
    current: Option<String>,
    /// The key's `mod_revision` when read (0: absent), for check-and-set.
    seen: i64,
    notes: Vec<String>,
    /// GitLab: the scope of a variable to adopt.
    adopt_scope: Option<String>,
}

impl Item {
    fn writes(&self) -> bool {
        matches!(self.outcome, Outcome::Import | Outcome::Replace)
    }
}

/// The plan: pure, from what was read.
struct Plan {
    items: Vec<Item>,
    unimportable: Vec<Unimportable>,
    notes: Vec<String>,
    /// The CI items to record as adopted.
    adopt: Vec<Adoptable>,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    new: usize,
    same: usize,
    differs: usize,
    kept: usize,
    not_importable: usize,
}

impl Plan {
    fn counts(&self) -> Counts {
        let mut c = Counts { not_importable: self.unimportable.len(), ..Default::default() };
        for i in &self.items {
            match i.state {
                State::New => c.new += 1,
                State::Same => c.same += 1,
                State::Differs => c.differs += 1,
            }
            c.kept += usize::from(i.outcome == Outcome::Keep);
        }
        c
    }

    fn writes(&self) -> usize {
        self.items.iter().filter(|i| i.writes()).count()
    }

    /// 1 when something was not imported (kept conflicts, unimportable values).
    fn incomplete(&self) -> bool {
        let c = self.counts();
        c.kept > 0 || c.not_importable > 0
    }
}

/// Splits what was read into values with a destination and values that
/// cannot have one.
fn classify(request: &Request, fetched: Fetched) -> (Vec<(Found, bool, Dest)>, Vec<Unimportable>) {
    let mut mapped = Vec::new();
    let mut unimportable = fetched.unimportable;
    for found in fetched.found {
        let secret = request.is_secret(&found);
        if secret {
            if found.name.is_empty() || found.name.contains('#') {
                unimportable.push(Unimportable {
                    name: found.name,
                    reason: "cannot be a Vault field name for cfgsync (empty or holding '#')".to_owned(),
                });
                continue;
            }
            let field = found.name.clone();
            mapped.push((found, true, Dest::Field { field }));
        } else {
            let name = format!("{}{}", request.key_prefix, found.name);
            if check_relative_name("key name", &name).is_err() {
                unimportable.push(Unimportable {
                    name: found.name,
                    reason: format!(
                        "{name:?} cannot be an etcd key name (no empty, `.` or `..` segment, no leading or trailing `/`)"
                    ),
                });
                continue;
            }
            // The full key is known once the etcd settings are.
            mapped.push((found, false, Dest::Key { name, path: String::new() }));
        }
    }
    unimportable.sort_by(|a, b| a.name.cmp(&b.name));
    (mapped, unimportable)
}

/// Decides each value's state and outcome.
fn plan(
    request: &Request,
    mapped: Vec<(Found, bool, Dest)>,
    unimportable: Vec<Unimportable>,
    notes: Vec<String>,
    adopt_only: Vec<Adoptable>,
    current: &Current,
) -> Plan {
    let mut items = Vec::new();
    let mut adopt = Vec::new();
    for (found, secret, dest) in mapped {
        let text = found.value.expose();
        let (state, current_shown, seen) = match &dest {
            Dest::Key { path, .. } => match current.keys.get(path) {
                None => (State::New, None, 0),
                Some((bytes, rev)) if bytes.as_slice() == text => (State::Same, None, *rev),
                Some((bytes, rev)) => {
                    let shown = crate::source::KeyData::from_bytes(bytes.clone()).shown();
                    (State::Differs, Some(shown), *rev)
                }
            },
            Dest::Field { field } => match current.secret.as_ref().and_then(|s| s.fields.get(field)) {
                None => (State::New, None, 0),
                Some(v) if v.expose().as_bytes() == text => (State::Same, None, 0),
                Some(_) => (State::Differs, None, 0),
            },
        };
        let outcome = match state {
            State::New => Outcome::Import,
            State::Same => Outcome::Unchanged,
            State::Differs if request.overwrite => Outcome::Replace,
            State::Differs => Outcome::Keep,
        };
        let adoptable = found.adoptable.filter(|_| request.adopt && outcome != Outcome::Keep);
        let adopt_scope = adoptable.as_ref().and_then(|a| a.scope.clone());
        if let Some(a) = adoptable
            && !current.recorded.contains(&a.id)
        {
            adopt.push(a);
        }
        items.push(Item {
            value: Content::new(text, secret),
            name: found.name,
            dest,
            state,
            outcome,
            current: current_shown,
            seen,
            notes: found.notes,
            adopt_scope,
        });
    }
    if request.adopt {
        adopt.extend(adopt_only.into_iter().filter(|a| !current.recorded.contains(&a.id)));
    }
    Plan { items, unimportable, notes, adopt }
}

/// `cfgsync import --env E FROM`: read, classify, look at etcd and Vault,
/// show the plan, ask, write.
pub async fn run(
    ctx: &ConfigContext<'_>,
    args: &ImportArgs,
    kubeconfig: Option<std::path::PathBuf>,
) -> Result<ExitCode, CmdError> {
    let request = Request::new(ctx.config, args, ctx.output)?;
    let config = ctx.config;
    let mut fetched = read_origin(&request, config, kubeconfig).await?;
    let notes = fetched.notes.clone();
    let adopt_only = std::mem::take(&mut fetched.adopt_only);
    let (mut mapped, unimportable) = classify(&request, fetched);
    let clients = Clients::new(config);
    let places = locate(&request, config, &clients, &mut mapped)?;
    let (destinations, current) = match Destinations::open(&request, config, &clients, &mapped).await {
        Ok(opened) => opened,
        Err(e) => return failed(&request, &[e]),
    };
    let places = Places { record: destinations.record(), ..places };
    let plan = plan(&request, mapped, unimportable, notes, adopt_only, &current);

    let stdout = io::stdout();
    let mut out = stdout.lock();
    if !request.json {
        print_plan(&request, &plan, &places, Style::detect(), &mut out)?;
        out.flush()?;
    }
    let incomplete = ExitCode::from(u8::from(plan.incomplete()));
    let finish = |out: &mut dyn Write, written: Option<&Written>, errors: &[String]| -> Result<(), CmdError> {
        if request.json {
            let doc = json_document(&request, &plan, &places, written, errors);
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        Ok(())
    };
    if request.dry_run {
        finish(&mut out, None, &[])?;
        return Ok(incomplete);
    }
    if plan.writes() == 0 && plan.adopt.is_empty() {
        if !request.json {
            writeln!(out, "nothing to write")?;
        }
        finish(&mut out, None, &[])?;
        report_incomplete(&plan);
        return Ok(incomplete);
    }
    if !request.yes {
        let mut question = format!("Write {} value(s) into env {}", plan.writes(), request.env);
        if !plan.adopt.is_empty() {
            question.push_str(&format!(" and adopt {} {}", plan.adopt.len(), request.adopted_noun()));
        }
        if !confirm(&format!("{question}?"))? {
            writeln!(out, "nothing written")?;
            return Ok(ExitCode::from(1));
        }
    }
    let (written, error) = destinations.apply(&request, &plan, &current).await;
    // The running service reads the new version now, not within `[vault] refresh`.
    if let (Some(version), Some(path)) = (written.vault_version, &request.secret_path)
        && let Err(e) = crate::source::secret_cache::announce(config, &request.env, path, version).await
    {
        eprintln!("{}", crate::source::secret_cache::announce_failed(&request.env, path, &e));
    }
    let errors: Vec<String> = error.into_iter().collect();
    if !request.json {
        writeln!(out, "{}", written.line(&places))?;
    }
    finish(&mut out, Some(&written), &errors)?;
    out.flush()?;
    for e in &errors {
        eprintln!("error: {}", one_line(e));
    }
    if !errors.is_empty() {
        return Ok(ExitCode::from(1));
    }
    report_incomplete(&plan);
    Ok(incomplete)
}

/// Checks that the config has a place for every value (etcd for plain
/// ones, Vault and `--secret-path` for secrets) before any server is
/// contacted, and fills in the full etcd keys.
fn locate(
    request: &Request,
    config: &Config,
    clients: &Clients,
    mapped: &mut [(Found, bool, Dest)],
) -> Result<Places, CmdError> {
    let secrets: Vec<&str> = mapped.iter().filter(|(_, s, _)| *s).map(|(f, _, _)| f.name.as_str()).collect();
    let plains = mapped.len() - secrets.len();
    if !secrets.is_empty() && request.secret_path.is_none() {
        let mut names = secrets.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if secrets.len() > 5 {
            names.push_str(", …");
        }
        return Err(ImportError::NeedsSecretPath { count: secrets.len(), names }.into());
    }
    let settings = match &clients.keys {
        KeyClient::Etcd { settings, .. } => Some(settings),
        KeyClient::Files { .. } => None,
    };
    let needs = |what: &'static str| CmdError::NeedsSource {
        command: "import",
        what,
        hint: "with the file source, add the values to source/<env>.toml",
    };
    if plains > 0 && settings.is_none() {
        return Err(needs("an [etcd] section for plain values"));
    }
    if !secrets.is_empty() && clients.vault.is_none() {
        return Err(needs("a [vault] section for secret values"));
    }
    if let Some(settings) = settings {
        for (_, _, dest) in mapped.iter_mut() {
            if let Dest::Key { name, path } = dest {
                *path = etcd_admin::key_path(settings, &request.env, name);
            }
        }
    }
    Ok(Places {
        secret: match (&clients.vault, &request.secret_path) {
            (Some(v), Some(p)) => Some(vault_admin::shown_path(&v.mount, &request.env, p)),
            _ => None,
        },
        record: None,
        instance: config.instance.clone(),
        adopted_noun: request.adopted_noun(),
    })
}

/// etcd or Vault could not be read: nothing written, exit 1 (as `set`).
fn failed(request: &Request, errors: &[String]) -> Result<ExitCode, CmdError> {
    for e in errors {
        eprintln!("error: {}", one_line(e));
    }
    eprintln!("error: nothing written");
    if request.json {
        let mut out = io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "errors": errors, "written": null }))
            .map_err(io::Error::from)?;
        writeln!(out)?;
    }
    Ok(ExitCode::from(1))
}

async fn read_origin(
    request: &Request,
    config: &Config,
    kubeconfig: Option<std::path::PathBuf>,
) -> Result<Fetched, ImportError> {
    match &request.origin {
        Origin::Dotenv(path) => origin::read_dotenv(path),
        Origin::Kubernetes { object, context, namespace, name } => {
            let clients = KubeClients::new(kubeconfig.or_else(|| config.kubernetes.kubeconfig.clone()));
            let shown = request.origin.describe();
            origin::read_kubernetes(&clients, *object, context, namespace, name, &shown).await
        }
        Origin::Gitlab(owner) => {
            let Some(g) = &request.gitlab else { unreachable!("checked with the command line") };
            let access = origin::GitlabAccess { url: &g.url, token_env: &g.token_env, scope: &g.scope };
            origin::read_gitlab(owner, &access, &request.set_secret_hint()).await
        }
        Origin::Github(scope) => {
            let Some(g) = &request.github else { unreachable!("checked with the command line") };
            let access = origin::GithubAccess { url: &g.url, token_env: &g.token_env };
            origin::read_github(scope, &access, &request.set_secret_hint()).await
        }
    }
}

#[cfg(test)]
mod tests;
