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
//!   [`SecretString`] before), so printing goes through
//!   [`Content::shown`], which has nothing to give for a secret. `--dry-run`
//!   stops after the plan. Otherwise the terminal is asked, as by `cfgsync
//!   set` (`--yes` skips; no terminal: nothing written, exit 2).
//!   `--output json` needs `--yes` or `--dry-run`, as `terraform apply
//!   -json` needs `-auto-approve`: a question cannot sit in the middle of a
//!   document.
//! - **A differing value is kept**: etcd and Vault are the source of truth
//!   and someone may have decided that value; it is replaced only with
//!   `--overwrite` (the imported value wins; `--prefer-destination` is an
//!   alias: the destination *system* the values were read from wins).
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
//!     target compares content and mode; use a mode the file has);
//!   - a Kubernetes target: one apply per object, which adds cfgsync's
//!     labels and annotations (the data is the same). The kind owns
//!     objects by label and adopts an unlabelled one by server-side apply;
//!     there is nothing to record beforehand.
//!   - a GitLab target refuses a hand-made variable that its record does
//!     not name. `--adopt` records every imported variable whose value now
//!     is in etcd or Vault (new, same, or replaced; not a kept conflict,
//!     not one another cfgsync wrote) in that record — the same store and
//!     key the target uses, for this config's instance, `--gitlab-url`,
//!     project or group as typed, environment scope and `--token-env`, so
//!     the target must name them the same way. Its first pass then sends
//!     one update per variable, which adds cfgsync's description (and any
//!     flag the target sets otherwise), and later passes send none.
//!     Adoption is explicit because a record also makes every pass read
//!     that project and lets cfgsync prune what it then owns; an import
//!     that only copies values should not change who owns them.
//! - **GitLab scopes**: only variables of `--environment-scope` (default:
//!   the env's name) and of `*` are read; a `*` variable shadowed by one of
//!   the exact scope is left out, as GitLab would for a job of that env.
//!   Flags a gitlab target would change are named in the plan
//!   (`protected`, `file`, an expanded value holding `$`).

pub mod origin;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::process::ExitCode;

use serde::Serialize;

use super::inventory::{Clients, KeyClient, VaultClientSide};
use super::terminal::{Style, confirm};
use super::{CmdError, Context, check_env, check_relative_name};
use crate::cli::{ImportArgs, OutputFormat};
use crate::config::{Config, EtcdSettings};
use crate::secret::{Content, SecretString};
use crate::source::etcd_admin::{self, GuardedPut, Meta};
use crate::source::{Secret, vault_admin};
use crate::targets::ci::{self, CiError};
use crate::targets::gitlab::{self, GitlabDest};
use crate::targets::kubernetes::KubeClients;
use crate::targets::state::{Record, StateStore};
use crate::text::{escape_controls, one_line, shorten};
pub use origin::{Fetched, Found, Origin, Unimportable};

/// The fingerprint an adopted variable is recorded with: never one a
/// rendering produces (those start with `sha256:` or `hmac-sha256:`), so
/// the target's first pass sees "source changed", an update, not drift.
pub const ADOPTED_FINGERPRINT: &str = "imported";

/// The most bytes of keys and values one etcd transaction carries (etcd's
/// request limit is 1.5 MiB by default).
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Usage errors and origins that cannot be read: exit code 2, nothing
/// written. Names files, lines, objects and variables, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("FROM {text:?}: {why}")]
    From { text: String, why: String },
    #[error("--{flag} {value:?}: {why}")]
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
    Gitlab(Box<CiError>),
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
    adopt: bool,
    owner: Option<String>,
    reason: Option<String>,
    dry_run: bool,
    yes: bool,
    json: bool,
}

fn flag_error(flag: &'static str, value: &str, why: impl Into<String>) -> CmdError {
    ImportError::Flag { flag, value: value.to_owned(), why: why.into() }.into()
}

impl Request {
    fn new(config: &Config, args: &ImportArgs, output: OutputFormat) -> Result<Self, CmdError> {
        check_env(config, &args.env)?;
        let origin: Origin = args.from.parse()?;
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
                return Err(flag_error(
                    flag,
                    g,
                    "an empty pattern matches nothing: give a name or a glob like 'LOG_*'",
                ));
            }
        }
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
        let gitlab_only = [
            ("environment-scope", &args.environment_scope),
            ("gitlab-url", &args.gitlab_url),
            ("token-env", &args.token_env),
        ];
        if !origin.is_gitlab() {
            if let Some((flag, Some(value))) = gitlab_only.iter().find(|(_, v)| v.is_some()) {
                return Err(flag_error(flag, value, "applies to gitlab: and gitlab-group: only"));
            }
            if args.adopt {
                return Err(flag_error(
                    "adopt",
                    "",
                    "applies to gitlab: and gitlab-group: only: Kubernetes targets take over an unlabelled object by server-side apply, file targets an existing file, without a record",
                ));
            }
        }
        let gitlab = if origin.is_gitlab() {
            let url_text = args.gitlab_url.as_deref().unwrap_or(gitlab::spec::DEFAULT_URL);
            let url = ci::check_base_url(url_text).map_err(|why| flag_error("gitlab-url", url_text, why))?;
            let token_env = args.token_env.clone().unwrap_or_else(|| gitlab::spec::DEFAULT_TOKEN_ENV.to_owned());
            if !ci::is_env_var_name(&token_env) {
                return Err(flag_error("token-env", &token_env, "not an environment variable name"));
            }
            let scope = args.environment_scope.clone().unwrap_or_else(|| args.env.clone());
            if scope.trim().is_empty() {
                return Err(flag_error("environment-scope", &scope, "give a scope, e.g. prod or *"));
            }
            Some(GitlabSettings { url, token_env, scope })
        } else {
            None
        };
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
        let origin_says = if self.origin.is_dotenv() { !matches(&self.plain) } else { found.secret };
        origin_says || matches(&self.secret)
    }

    fn set_secret_hint(&self) -> String {
        let path = self.secret_path.as_deref().unwrap_or("<secret path>");
        format!("`cfgsync set-secret {} {path} <name>`", self.env)
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

/// What etcd and Vault hold now for the values to import.
#[derive(Default)]
struct Current {
    /// Full etcd key → (value, mod_revision).
    keys: BTreeMap<String, (Vec<u8>, i64)>,
    secret: Option<Secret>,
    info: Option<vault_admin::SecretInfo>,
    /// GitLab: `KEY@scope` of the variables the record names already.
    recorded: BTreeSet<String>,
}

/// The plan: pure, from what was read.
struct Plan {
    items: Vec<Item>,
    unimportable: Vec<Unimportable>,
    notes: Vec<String>,
    /// `(key, scope)` of the GitLab variables to record as adopted.
    adopt: Vec<(String, String)>,
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
    current: &Current,
) -> Plan {
    let mut items = Vec::new();
    let mut adopt = Vec::new();
    for (found, secret, dest) in mapped {
        let text = found.value.expose();
        let (state, current_shown, seen) = match &dest {
            Dest::Key { path, .. } => match current.keys.get(path) {
                None => (State::New, None, 0),
                Some((bytes, rev)) if bytes.as_slice() == text.as_bytes() => (State::Same, None, *rev),
                Some((bytes, rev)) => {
                    let shown = crate::source::KeyData::from_bytes(bytes.clone()).shown();
                    (State::Differs, Some(shown), *rev)
                }
            },
            Dest::Field { field } => match current.secret.as_ref().and_then(|s| s.fields.get(field)) {
                None => (State::New, None, 0),
                Some(v) if v.expose() == text => (State::Same, None, 0),
                Some(_) => (State::Differs, None, 0),
            },
        };
        let outcome = match state {
            State::New => Outcome::Import,
            State::Same => Outcome::Unchanged,
            State::Differs if request.overwrite => Outcome::Replace,
            State::Differs => Outcome::Keep,
        };
        let adopt_scope = found.adoptable_scope.filter(|_| request.adopt && outcome != Outcome::Keep);
        if let Some(scope) = &adopt_scope
            && !current.recorded.contains(&gitlab::item_id(&found.name, scope))
        {
            adopt.push((found.name.clone(), scope.clone()));
        }
        items.push(Item {
            value: Content::new(text.as_bytes().to_vec(), secret),
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
    Plan { items, unimportable, notes, adopt }
}

/// Where the destinations are, for messages.
struct Places {
    /// `secret/prod/api/imported`, when secrets are imported.
    secret: Option<String>,
    /// Where adopted variables are recorded.
    record: Option<String>,
    instance: String,
}

/// A plain value for one line of text.
fn show(value: &str) -> String {
    shorten(&escape_controls(value, false), 200).into_owned()
}

fn describe_dest(item: &Item, places: &Places) -> String {
    match &item.dest {
        Dest::Key { path, .. } => format!("etcd {path}"),
        Dest::Field { field } => format!("vault {}#{field}", places.secret.as_deref().unwrap_or("?")),
    }
}

fn print_plan(request: &Request, plan: &Plan, places: &Places, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let scope = request.gitlab.as_ref().map(|g| format!(" (environment scope {})", g.scope)).unwrap_or_default();
    writeln!(out, "import into env {} from {}{scope}", request.env, request.origin.describe())?;
    for item in &plan.items {
        let (sign, how) = match item.outcome {
            Outcome::Import => (style.green("+"), "new".to_owned()),
            Outcome::Unchanged => ("=".to_owned(), "same".to_owned()),
            Outcome::Replace => (style.yellow("~"), "differs: replace".to_owned()),
            Outcome::Keep => (style.red("!"), "differs: keep, --overwrite replaces it".to_owned()),
        };
        let how = if item.value.is_secret() { format!("secret, {how}") } else { how };
        writeln!(out, "  {sign} {} → {} ({how})", item.name, describe_dest(item, places))?;
        if let Some(shown) = item.value.shown() {
            if let Some(current) = &item.current {
                writeln!(out, "      {}", style.red(&format!("- {}", show(current))))?;
            }
            if item.state != State::Same {
                writeln!(out, "      {}", style.green(&format!("+ {}", show(&shown))))?;
            }
        }
        for note in &item.notes {
            writeln!(out, "      note: {note}")?;
        }
    }
    for u in &plan.unimportable {
        writeln!(out, "  {} {}: not importable: {}", style.red("x"), u.name, u.reason)?;
    }
    for note in &plan.notes {
        writeln!(out, "note: {note}")?;
    }
    if !plan.adopt.is_empty() {
        let mut by_scope: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, scope) in &plan.adopt {
            by_scope.entry(scope.as_str()).or_default().push(key);
        }
        let list: Vec<String> =
            by_scope.iter().map(|(scope, keys)| format!("{} (environment scope {scope})", keys.join(", "))).collect();
        writeln!(
            out,
            "adopt: {} as instance {:?}'s, recorded in {}",
            list.join("; "),
            places.instance,
            places.record.as_deref().unwrap_or("?")
        )?;
    }
    let c = plan.counts();
    let differs = match (c.differs, c.kept) {
        (0, _) => String::new(),
        (_, 0) => " (replace)".to_owned(),
        (d, k) if d == k => " (kept)".to_owned(),
        (_, k) => format!(" ({k} kept)"),
    };
    writeln!(out, "{} new, {} same, {} differ{differs}, {} not importable", c.new, c.same, c.differs, c.not_importable)
}

/// What was written, for the last line and the JSON document.
#[derive(Debug, Default, Serialize)]
struct Written {
    #[serde(skip_serializing_if = "Option::is_none")]
    vault_version: Option<u64>,
    fields: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_revision: Option<i64>,
    keys: usize,
    adopted: usize,
}

impl Written {
    fn line(&self, places: &Places) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.vault_version {
            parts.push(format!(
                "vault {} version {v} ({} field{})",
                places.secret.as_deref().unwrap_or("?"),
                self.fields,
                if self.fields == 1 { "" } else { "s" }
            ));
        }
        if let Some(r) = self.etcd_revision {
            parts.push(format!("etcd revision {r} ({} key{})", self.keys, if self.keys == 1 { "" } else { "s" }));
        }
        if self.adopted > 0 {
            parts.push(format!("{} GitLab variable(s) adopted", self.adopted));
        }
        if parts.is_empty() { "nothing written".to_owned() } else { format!("written: {}", parts.join(", ")) }
    }
}

/// One value in the JSON document: names and destinations; the value and
/// the current one only for plain values.
#[derive(Serialize)]
struct JsonItem<'a> {
    name: &'a str,
    secret: bool,
    state: State,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vault_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    adopt_scope: Option<&'a str>,
}

fn json_document(
    request: &Request,
    plan: &Plan,
    places: &Places,
    written: Option<&Written>,
    errors: &[String],
) -> serde_json::Value {
    let items: Vec<JsonItem<'_>> = plan
        .items
        .iter()
        .map(|i| JsonItem {
            name: &i.name,
            secret: i.value.is_secret(),
            state: i.state,
            outcome: i.outcome,
            etcd_key: match &i.dest {
                Dest::Key { path, .. } => Some(path),
                Dest::Field { .. } => None,
            },
            vault_path: matches!(i.dest, Dest::Field { .. }).then_some(places.secret.as_deref()).flatten(),
            field: match &i.dest {
                Dest::Field { field } => Some(field),
                Dest::Key { .. } => None,
            },
            value: i.value.shown().map(|v| v.into_owned()),
            current: i.current.as_deref().filter(|_| !i.value.is_secret()),
            notes: &i.notes,
            adopt_scope: i.adopt_scope.as_deref(),
        })
        .collect();
    let adopt: Vec<String> = plan.adopt.iter().map(|(k, s)| gitlab::item_id(k, s)).collect();
    serde_json::json!({
        "env": request.env,
        "from": request.origin.to_string(),
        "source": request.origin.describe(),
        "environment_scope": request.gitlab.as_ref().map(|g| g.scope.as_str()),
        "dry_run": request.dry_run,
        "values": items,
        "not_importable": plan.unimportable,
        "notes": plan.notes,
        "adopt": adopt,
        "counts": plan.counts(),
        "written": written,
        "errors": errors,
    })
}

/// `cfgsync import --env E FROM`.
pub async fn run(
    ctx: &Context<'_>,
    args: &ImportArgs,
    kubeconfig: Option<std::path::PathBuf>,
) -> Result<ExitCode, CmdError> {
    let request = Request::new(ctx.config, args, ctx.output)?;
    let config = ctx.config;
    let fetched = read_origin(&request, config, kubeconfig).await?;
    let notes = fetched.notes.clone();
    let (mut mapped, unimportable) = classify(&request, fetched);

    // What the values need, before any server is contacted.
    let secrets: Vec<String> = mapped.iter().filter(|(_, s, _)| *s).map(|(f, _, _)| f.name.clone()).collect();
    let plains = mapped.len() - secrets.len();
    if !secrets.is_empty() && request.secret_path.is_none() {
        let mut names = secrets.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if secrets.len() > 5 {
            names.push_str(", …");
        }
        return Err(ImportError::NeedsSecretPath { count: secrets.len(), names }.into());
    }
    let clients = Clients::new(config);
    let etcd = match &clients.keys {
        KeyClient::Etcd { source, settings } => Some((source, settings)),
        KeyClient::Files { .. } => None,
    };
    if plains > 0 && etcd.is_none() {
        return Err(CmdError::NeedsSource {
            command: "import",
            what: "an [etcd] section for plain values",
            hint: "with the file source, add them to source/<env>.toml",
        });
    }
    let vault = clients.vault.as_ref();
    if !secrets.is_empty() && vault.is_none() {
        return Err(CmdError::NeedsSource {
            command: "import",
            what: "a [vault] section for secret values",
            hint: "with the file source, add them to source/<env>.toml",
        });
    }
    if let Some((_, settings)) = etcd {
        for (_, _, dest) in &mut mapped {
            if let Dest::Key { name, path } = dest {
                *path = etcd_admin::key_path(settings, &request.env, name);
            }
        }
    }
    let places = Places {
        secret: match (vault, &request.secret_path) {
            (Some(v), Some(p)) => Some(vault_admin::shown_path(&v.mount, &request.env, p)),
            _ => None,
        },
        record: None,
        instance: config.instance.clone(),
    };

    // What etcd, Vault (and the GitLab record) hold now.
    let mut current = Current::default();
    let etcd_conn = match etcd {
        Some((source, settings)) if plains > 0 => {
            let client = match source.connect().await {
                Ok(c) => c,
                Err(e) => return failed(&request, &[e.to_string()]),
            };
            let keys: Vec<String> = mapped
                .iter()
                .filter_map(|(_, _, d)| match d {
                    Dest::Key { path, .. } => Some(path.clone()),
                    Dest::Field { .. } => None,
                })
                .collect();
            current.keys = match etcd_admin::get_many(&client, settings, &keys).await {
                Ok(k) => k,
                Err(e) => return failed(&request, &[e.to_string()]),
            };
            Some((client, settings))
        }
        _ => None,
    };
    let vault_client = match (vault, &request.secret_path) {
        (Some(v), Some(path)) if !secrets.is_empty() => {
            let client = match v.source.client().await {
                Ok(c) => c,
                Err(e) => return failed(&request, &[e.to_string()]),
            };
            match vault_admin::read_secret(&client, &v.mount, &request.env, path).await {
                Ok(s) => current.secret = s,
                Err(e) => return failed(&request, &[e.to_string()]),
            }
            match vault_admin::read_metadata(&client, &v.mount, &request.env, path).await {
                Ok(i) => current.info = i,
                Err(e) => return failed(&request, &[e.to_string()]),
            }
            Some((client, v, path.as_str()))
        }
        _ => None,
    };
    let adoption = match (&request.origin, &request.gitlab) {
        (Origin::Gitlab(owner), Some(g)) if request.adopt => {
            let store = StateStore::new(config);
            let dest = GitlabDest { url: g.url.clone(), owner: owner.clone(), token_env: g.token_env.clone() };
            let key = dest.state_key(&config.instance, &request.env);
            let state = match store.load(&key).await {
                Ok(s) => s,
                Err(cause) => return failed(&request, &[format!("reading {}: {cause}", store.describe(&key))]),
            };
            current.recorded = state.items.keys().cloned().collect();
            Some((store, dest, key, state))
        }
        _ => None,
    };
    let places = Places { record: adoption.as_ref().map(|(store, _, key, _)| store.describe(key)), ..places };

    let plan = plan(&request, mapped, unimportable, notes, &current);
    let style = if request.json { Style::plain() } else { Style::detect() };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if !request.json {
        print_plan(&request, &plan, &places, style, &mut out)?;
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
        let question = format!("Write {} value(s) into env {}?", plan.writes(), request.env);
        let question = if plan.adopt.is_empty() {
            question
        } else {
            format!("{} and adopt {} GitLab variable(s)?", question.trim_end_matches('?'), plan.adopt.len())
        };
        if !confirm(&question)? {
            writeln!(out, "nothing written")?;
            return Ok(ExitCode::from(1));
        }
    }

    let mut written = Written::default();
    let mut errors: Vec<String> = Vec::new();
    if let Some((client, v, path)) = &vault_client
        && let Err(e) = write_vault(&request, &plan, &current, client, v, path, &mut written).await
    {
        errors.push(e);
    }
    if errors.is_empty()
        && let Some((client, settings)) = &etcd_conn
        && let Err(e) = write_etcd(&request, &plan, client, settings, &mut written).await
    {
        errors.push(e);
    }
    if errors.is_empty()
        && let Some((store, dest, key, mut state)) = adoption
        && !plan.adopt.is_empty()
    {
        for (k, scope) in &plan.adopt {
            state.items.entry(gitlab::item_id(k, scope)).or_insert_with(|| Record {
                fingerprint: ADOPTED_FINGERPRINT.to_owned(),
                updated_at: None,
                output: String::new(),
            });
        }
        state.dest = serde_json::to_value(&dest).unwrap_or_default();
        match store.save(&key, &state).await {
            Ok(()) => written.adopted = plan.adopt.len(),
            Err(cause) => errors.push(format!(
                "recording the adopted variables in {}: {cause}; the values were written, the variables not adopted: run the import again",
                store.describe(&key)
            )),
        }
    }
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

/// The `error:` lines that explain exit code 1 after a complete write.
fn report_incomplete(plan: &Plan) {
    let c = plan.counts();
    if c.kept > 0 {
        eprintln!(
            "error: {} value(s) differ from what etcd or Vault hold and were kept: pass --overwrite to replace them with the imported ones",
            c.kept
        );
    }
    if c.not_importable > 0 {
        eprintln!("error: {} value(s) could not be imported (named above)", c.not_importable);
    }
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
    }
}

/// Owner and reason after the flags (as `cfgsync set` merges them).
fn merged(mut meta: Meta, request: &Request) -> Meta {
    if let Some(o) = &request.owner {
        meta.owner = Some(o.clone());
    }
    if let Some(r) = &request.reason {
        meta.reason = Some(r.clone());
    }
    meta
}

/// One new version of the secret: every field it had, the new ones, and
/// the replaced ones; then owner and reason.
async fn write_vault(
    request: &Request,
    plan: &Plan,
    current: &Current,
    client: &vaultrs::client::VaultClient,
    vault: &VaultClientSide,
    path: &str,
    written: &mut Written,
) -> Result<(), String> {
    let writes: Vec<&Item> = plan.items.iter().filter(|i| i.writes() && matches!(i.dest, Dest::Field { .. })).collect();
    if writes.is_empty() {
        return Ok(());
    }
    let mut fields = current.secret.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
    for item in &writes {
        if let Dest::Field { field } = &item.dest {
            // Values were checked to be text when read.
            fields.insert(field.clone(), SecretString::new(item.value.expose_str().unwrap_or_default()));
        }
    }
    // A secret whose latest version is deleted reads as absent:
    // check-and-set then needs the metadata's version.
    let seen = match current.secret.as_ref().and_then(|s| s.version) {
        Some(v) => v,
        None => current.info.as_ref().map_or(0, |i| i.current_version),
    };
    let version = vault_admin::write_secret(client, &vault.mount, &request.env, path, &fields, seen)
        .await
        .map_err(|e| e.to_string())?;
    written.vault_version = Some(version);
    written.fields = writes.len();
    if request.owner.is_some() || request.reason.is_some() {
        let mut custom = current.info.as_ref().map(|i| i.custom_metadata.clone()).unwrap_or_default();
        let now =
            Meta { owner: custom.get("owner").cloned(), reason: custom.get("reason").cloned(), ..Meta::default() };
        let next = merged(now, request);
        for (k, v) in [("owner", next.owner), ("reason", next.reason)] {
            if let Some(v) = v {
                custom.insert(k.to_owned(), v);
            }
        }
        vault_admin::write_custom_metadata(client, &vault.mount, &request.env, path, &custom)
            .await
            .map_err(|e| format!("{e}; the values were written (version {version}), owner and reason were not"))?;
    }
    Ok(())
}

/// The keys to write (and their `_meta` siblings with owner and reason),
/// in transactions of at most [`etcd_admin::MAX_TXN_OPS`] puts and
/// [`MAX_TXN_BYTES`], each check-and-set.
async fn write_etcd(
    request: &Request,
    plan: &Plan,
    client: &etcd_client::Client,
    settings: &EtcdSettings,
    written: &mut Written,
) -> Result<(), String> {
    let writes: Vec<(&Item, &str, &str)> = plan
        .items
        .iter()
        .filter_map(|i| match &i.dest {
            Dest::Key { name, path } if i.writes() => Some((i, name.as_str(), path.as_str())),
            _ => None,
        })
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    let with_meta = request.owner.is_some() || request.reason.is_some();
    let metas = if with_meta {
        let keys: Vec<String> =
            writes.iter().map(|(_, name, _)| etcd_admin::meta_path(settings, &request.env, name)).collect();
        etcd_admin::get_many(client, settings, &keys).await.map_err(|e| e.to_string())?
    } else {
        BTreeMap::new()
    };
    // One group per value: its key, and its sibling when owner/reason are recorded.
    let mut groups: Vec<Vec<GuardedPut>> = Vec::new();
    for (item, name, path) in &writes {
        let mut group = vec![GuardedPut {
            key: (*path).to_owned(),
            value: item.value.expose_str().unwrap_or_default().to_owned(),
            seen_mod_revision: item.seen,
        }];
        if with_meta {
            let meta_key = etcd_admin::meta_path(settings, &request.env, name);
            let (meta, seen) = match metas.get(&meta_key) {
                Some((bytes, rev)) => {
                    let text = String::from_utf8_lossy(bytes);
                    let meta = Meta::parse(&text).map_err(|cause| {
                        etcd_admin::EtcdAdminError::InvalidMeta { key: meta_key.clone(), cause }.to_string()
                    })?;
                    (meta, *rev)
                }
                None => (Meta::default(), 0),
            };
            group.push(GuardedPut { key: meta_key, value: merged(meta, request).to_json(), seen_mod_revision: seen });
        }
        groups.push(group);
    }
    for (puts, keys) in batches(groups) {
        match etcd_admin::put_guarded(client, settings, &puts).await {
            Ok(revision) => {
                written.etcd_revision = Some(revision);
                written.keys += keys;
            }
            Err(e) => {
                let done = if written.keys > 0 {
                    format!(
                        "; {} key(s) were written before it (revision {})",
                        written.keys,
                        written.etcd_revision.unwrap_or(0)
                    )
                } else {
                    String::new()
                };
                return Err(format!("{e}{done}"));
            }
        }
    }
    Ok(())
}

/// Groups of puts (a key and its sibling stay together) in transactions of
/// at most [`etcd_admin::MAX_TXN_OPS`] puts and [`MAX_TXN_BYTES`]; with the
/// number of groups in each.
fn batches(groups: Vec<Vec<GuardedPut>>) -> Vec<(Vec<GuardedPut>, usize)> {
    let mut out = Vec::new();
    let (mut batch, mut count, mut bytes): (Vec<GuardedPut>, usize, usize) = (Vec::new(), 0, 0);
    for group in groups {
        let size: usize = group.iter().map(|p| p.key.len() + p.value.len()).sum();
        if !batch.is_empty() && (batch.len() + group.len() > etcd_admin::MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
            out.push((std::mem::take(&mut batch), count));
            (count, bytes) = (0, 0);
        }
        batch.extend(group);
        count += 1;
        bytes += size;
    }
    if !batch.is_empty() {
        out.push((batch, count));
    }
    out
}

#[cfg(test)]
mod tests;
