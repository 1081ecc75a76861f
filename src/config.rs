//! `cfgsync.toml`: parsing, validation and the typed configuration.
//!
//! Loading happens in two steps, as in Vector and ripgrep: serde structs that
//! mirror the file (`deny_unknown_fields`, spans kept) are turned by
//! [`load`] into a typed [`Config`], collecting *every* semantic problem with
//! its `file:line:column` instead of stopping at the first. Nothing here opens
//! a connection; templates are compiled by [`crate::render::Templates`].
//!
//! Precedence for connection settings is environment > file > default, using
//! the variables the etcd and Vault CLIs already use (`ETCDCTL_ENDPOINTS`,
//! `ETCDCTL_USER`, `VAULT_ADDR`, `VAULT_TOKEN`). They only override a section
//! that exists: a developer's shell with `VAULT_ADDR` set does not turn a
//! file-source demo into a Vault one.
//!
//! Relative paths (`files.dir`, `templates/`, file targets) are relative to
//! the directory holding the config file, like docker compose, so a config
//! behaves the same from any working directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use crate::format::{self, Dialect, Format};
use crate::secret::SecretString;

/// Default reconcile period of `cfgsync run`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Where a problem is: a file and, when known, a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `source`. Scans `source` once: for
    /// many locations in one text, build a [`LineIndex`] instead.
    pub fn at(file: &Path, source: &str, offset: usize) -> Self {
        LineIndex::new(source).location(file, source, offset)
    }
}

/// Where each line of a text starts, so that turning a byte offset into a
/// line and column costs a binary search and a scan of one line, not of
/// the whole text before it (a config with thousands of entries asks for
/// thousands of locations).
pub struct LineIndex {
    /// Byte offset of the first character of each line.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(source: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    /// 1-based line and column (in characters) of byte `offset` in `source`,
    /// the text this index was built from.
    pub fn line_column(&self, source: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(source.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        let column = source.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub fn location(&self, file: &Path, source: &str, offset: usize) -> Location {
        let (line, column) = self.line_column(source, offset);
        Location { file: file.to_path_buf(), line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem in the configuration or a template, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Option<Location>,
    pub message: String,
}

impl Problem {
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Self { location: Some(location), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found while loading, reported together so a user fixes
/// them in one round.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> Self {
        Self { problems: vec![p] }
    }
}

/// Reads process environment variables. A trait so tests pass a map
/// instead of mutating the process environment (as linkerd2-proxy does).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interval: Option<Spanned<String>>,
    /// This config's identity on what it writes.
    instance: Option<Spanned<String>>,
    /// The prune guard's share, for every target kind.
    max_prune_share: Option<Spanned<f64>>,
    state: Option<RawState>,
    etcd: Option<RawEtcd>,
    vault: Option<RawVault>,
    files: Option<RawFiles>,
    kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    envs: BTreeMap<String, RawEnv>,
    #[serde(default, rename = "output")]
    outputs: Vec<RawOutput>,
    service: Option<RawService>,
    render: Option<RawRender>,
}

/// `[state]`: where cfgsync records what it wrote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

/// `[render]`: the template sandbox's limits (see [`crate::render`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRender {
    max_entry_size: Option<Spanned<String>>,
    max_output_size: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_range: Option<Spanned<u64>>,
    max_memory: Option<Spanned<String>>,
}

/// `[service]`: settings only `cfgsync run` reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    debounce: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    election: Option<RawElection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElection {
    ttl: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Option<Vec<String>>,
    prefix: Option<Spanned<String>>,
    /// User name; the password comes from `password_file` or `ETCDCTL_USER`.
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    address: Option<String>,
    mount: Option<String>,
    auth: Option<Spanned<RawVaultAuth>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
enum RawVaultAuth {
    Token {
        token_file: Option<PathBuf>,
    },
    Approle {
        mount: Option<String>,
        role_id: Option<String>,
        role_id_file: Option<PathBuf>,
        secret_id_file: Option<PathBuf>,
    },
    Kubernetes {
        mount: Option<String>,
        role: String,
        token_file: Option<PathBuf>,
    },
    Jwt {
        mount: Option<String>,
        role: Option<String>,
        token_file: PathBuf,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    name: Spanned<String>,
    envs: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    entries: BTreeMap<Spanned<String>, Spanned<RawEntry>>,
    #[serde(default, rename = "target")]
    targets: Vec<Spanned<RawTarget>>,
}

/// An entry is an inline template string, `{ template = "file.tera" }`, or
/// `{ key = "name" }` (a key's bytes, verbatim).
enum RawEntry {
    Inline(String),
    File(String),
    Key(String),
}

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a template string, a table `{ template = \"path/under/templates\" }`, or `{ key = \"name\" }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEntry, E> {
                Ok(RawEntry::Inline(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
                let mut entry = None;
                while let Some(k) = map.next_key::<String>()? {
                    let value = match k.as_str() {
                        "template" => RawEntry::File(map.next_value::<String>()?),
                        "key" => RawEntry::Key(map.next_value::<String>()?),
                        other => return Err(de::Error::unknown_field(other, &["template", "key"])),
                    };
                    if entry.replace(value).is_some() {
                        return Err(de::Error::custom("an entry is either `template` or `key`, not both"));
                    }
                }
                entry.ok_or_else(|| de::Error::missing_field("template"))
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum RawTarget {
    File(RawFileTarget),
    KubernetesSecret(RawKubeTarget),
    KubernetesConfigmap(RawKubeTarget),
    Gitlab(crate::targets::gitlab::spec::RawGitlabTarget),
    Github(crate::targets::github::spec::RawGithubTarget),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubeTarget {
    /// Kubeconfig context, templated by env. Empty: the current context (or
    /// in-cluster config when there is no kubeconfig).
    context: Option<String>,
    namespace: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    #[serde(default)]
    restart: Vec<RawRestart>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: Option<PathBuf>,
    max_prune_share: Option<Spanned<f64>>,
    fingerprint_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileTarget {
    path: String,
    #[serde(default = "default_format")]
    format: Format,
    /// Which reader a dotenv file is for; only with `format = "dotenv"`.
    dialect: Option<Dialect>,
    mode: Option<String>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    /// A directory whose own path may contain symlinks (below it, none).
    trusted_dir: Option<PathBuf>,
}

fn default_format() -> Format {
    Format::Dotenv
}

// ---------------------------------------------------------------------------
// The typed configuration.

/// A loaded, validated configuration. Templates are compiled separately.
#[derive(Debug)]
pub struct Config {
    /// The config file, as given.
    pub path: PathBuf,
    /// The directory relative paths are resolved against.
    pub dir: PathBuf,
    pub interval: Duration,
    /// Every env, sorted.
    pub envs: Vec<String>,
    pub keys: KeysSource,
    pub secrets: Option<SecretsSource>,
    /// `<config dir>/templates`.
    pub templates_dir: PathBuf,
    pub kubernetes: KubernetesSettings,
    pub outputs: Vec<Output>,
    pub service: ServiceSettings,
    /// `[render]`: limits of the template sandbox.
    pub render: crate::render::Limits,
    /// Written on everything cfgsync writes (`cfgsync.io/instance`, CI
    /// variable descriptions, state): prune only touches its own.
    pub instance: String,
    /// A pass deleting more than one and more than this share of what the
    /// instance wrote at one destination stops and asks for `--allow-mass-prune`.
    pub max_prune_share: f64,
    /// `[state] dir`: what cfgsync wrote, per instance and env (default
    /// `<config dir>/.cfgsync`).
    pub state_dir: PathBuf,
    /// Where each credential setting is written (`[etcd] user` and
    /// `password_file`, the `[vault] auth` fields), for
    /// [`check_credential_files`]: keyed by setting name, e.g.
    /// `"vault.auth.secret_id_file"`.
    pub credential_spans: BTreeMap<&'static str, Location>,
}

/// `[service]`: how `cfgsync run` behaves; the one-shot commands ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Quiet time after an etcd or file change before the pass it triggers
    /// (0 = none), so a burst of puts becomes one pass.
    pub debounce: Duration,
    /// On SIGTERM/SIGINT, how long in-flight writes may take before exit.
    pub grace: Duration,
    /// TTL of the etcd lease behind leader election (whole seconds).
    pub election_ttl: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            grace: Duration::from_secs(20),
            election_ttl: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone)]
pub enum KeysSource {
    Files(PathBuf),
    Etcd(EtcdSettings),
}

#[derive(Debug, Clone)]
pub enum SecretsSource {
    Files(PathBuf),
    Vault(VaultSettings),
}

#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Without a trailing slash, e.g. `/cfgsync`.
    pub prefix: String,
    pub user: Option<String>,
    /// Set when `ETCDCTL_USER=name:password` supplied it.
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl EtcdSettings {
    /// `<prefix>/<env>/`: the one range every pass reads for an env.
    pub fn env_prefix(&self, env: &str) -> String {
        format!("{}/{env}/", self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub address: String,
    pub mount: String,
    pub auth: VaultAuth,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum VaultAuth {
    /// A token from `VAULT_TOKEN`, else `token_file`, else `~/.vault-token`
    /// (as the vault CLI does).
    Token {
        token: Option<SecretString>,
        token_file: Option<PathBuf>,
    },
    AppRole {
        mount: String,
        role_id: Option<String>,
        role_id_file: Option<PathBuf>,
        secret_id_file: Option<PathBuf>,
    },
    /// A Kubernetes service account token (`token_file`, default the
    /// projected one) exchanged at `auth/<mount>/login`.
    Kubernetes {
        mount: String,
        role: String,
        token_file: PathBuf,
    },
    /// Any JWT the platform provides (CI job token, workload identity),
    /// exchanged at `auth/<mount>/login`.
    Jwt {
        mount: String,
        role: Option<String>,
        token_file: PathBuf,
    },
}

#[derive(Debug)]
pub struct Output {
    pub name: String,
    pub location: Location,
    /// The envs this output is rendered for, sorted.
    pub envs: Vec<String>,
    pub entries: Vec<Entry>,
    pub targets: Vec<Target>,
}

#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub location: Location,
    pub template: EntryTemplate,
}

#[derive(Debug)]
pub enum EntryTemplate {
    Inline(String),
    /// Relative to `templates/`.
    File(String),
    /// A key's value, byte for byte: for content that is not text (a DER
    /// certificate, a keystore), written only where bytes can go (`raw` and
    /// `dir` files, Secrets, a ConfigMap's `binaryData`).
    Key(String),
}

#[derive(Debug)]
pub struct Target {
    pub location: Location,
    pub kind: TargetKind,
}

#[derive(Debug)]
pub enum TargetKind {
    File(FileTarget),
    Kubernetes(KubeTarget),
    Gitlab(crate::targets::gitlab::GitlabTarget),
    Github(crate::targets::github::GithubTarget),
}

impl TargetKind {
    pub fn name(&self) -> &'static str {
        match self {
            TargetKind::File(_) => "file",
            TargetKind::Kubernetes(k) => k.object.kind_name(),
            TargetKind::Gitlab(_) => crate::targets::gitlab::KIND,
            TargetKind::Github(_) => crate::targets::github::KIND,
        }
    }
}

/// Which Kubernetes object a target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ObjectKind {
    Secret,
    ConfigMap,
}

impl ObjectKind {
    /// The `kind = "..."` of the target.
    pub fn kind_name(self) -> &'static str {
        match self {
            ObjectKind::Secret => "kubernetes-secret",
            ObjectKind::ConfigMap => "kubernetes-configmap",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Secret => "Secret",
            ObjectKind::ConfigMap => "ConfigMap",
        })
    }
}

/// Where one Kubernetes object lives, for one env.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectAddress {
    /// Kubeconfig context; empty means the current context / in-cluster.
    pub context: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug)]
pub struct KubeTarget {
    pub object: ObjectKind,
    /// The address for each env, rendered.
    pub addresses: BTreeMap<String, ObjectAddress>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Secret `type`; `Opaque` when unset.
    pub secret_type: Option<String>,
    /// Workloads to roll when the object's content really changes.
    pub restart: Vec<Restart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// `Deployment`, `StatefulSet` or `DaemonSet`, in the object's namespace.
    pub kind: String,
    pub name: String,
}

/// `[kubernetes]`: settings shared by every Kubernetes target.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// `--kubeconfig` beats this; then `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A pass that would delete more than this share of our objects in a
    /// cluster stops and asks for `--allow-mass-prune`.
    pub max_prune_share: f64,
    /// `path#field` of the secret holding the HMAC key for fingerprints of
    /// secret outputs, read from each env's snapshot. Defaults to
    /// [`DEFAULT_FINGERPRINT_KEY`], which `cfgsync policy apply` creates in
    /// Vault for every env, so it never has to be configured. Always `Some`;
    /// an absent secret shows up when a secret output is written.
    pub fingerprint_key: Option<(String, String)>,
    /// Whether `[kubernetes] max_prune_share` was set (else the top-level one applies).
    pub max_prune_share_set: bool,
}

/// `cfgsync/fingerprint#key`: secret `<mount>/<env>/cfgsync/fingerprint`,
/// field `key`.
pub const DEFAULT_FINGERPRINT_KEY: (&str, &str) = ("cfgsync/fingerprint", "key");

impl Default for KubernetesSettings {
    fn default() -> Self {
        let (path, field) = DEFAULT_FINGERPRINT_KEY;
        Self {
            kubeconfig: None,
            max_prune_share: 0.25,
            fingerprint_key: Some((path.to_owned(), field.to_owned())),
            max_prune_share_set: false,
        }
    }
}

#[derive(Debug)]
pub struct FileTarget {
    /// The path for each env, rendered and resolved against the config dir.
    pub paths: BTreeMap<String, PathBuf>,
    pub format: Format,
    /// The reader a dotenv file is quoted for; the default ([`Dialect::Portable`])
    /// for every other format, which has no dialects.
    pub dialect: Dialect,
    /// Explicit mode; otherwise 0600 for tainted outputs, 0644 for others.
    pub mode: Option<u32>,
    pub check_cmd: Option<String>,
    pub reload_cmd: Option<String>,
    /// Symlinks are followed only in this directory's own path.
    pub trusted_dir: Option<PathBuf>,
}

/// Loads and validates `path`, reporting every problem found.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| Problem { location: None, message: format!("cannot read config file {}: {e}", path.display()) })?;
    parse(path, &source, env)
}

/// Parses config text as if read from `path`.
pub fn parse(path: &Path, source: &str, env: &dyn Environment) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        Problem::at(Location::at(path, source, offset), e.message().trim_end().to_owned())
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let lines = LineIndex::new(source);
    Builder { path, source, lines, dir, problems: Vec::new(), credential_spans: BTreeMap::new() }.build(raw, env)
}

/// `validate` only: the credential files the first pass would read exist,
/// are regular files, can be read and hold text, and the settings that
/// name them are complete (approle without `secret_id_file`, an etcd user
/// without a password). Each problem points at the setting; together with
/// `earlier` (the template problems, if any) so that one run reports all.
///
/// Decision: nothing else calls this. The service and the other commands
/// read credential files when they log in, every time (an agent may write
/// or rotate them after cfgsync starts), and report a failure there. Only
/// files a setting names are checked: `VAULT_TOKEN` or
/// `ETCDCTL_USER=name:password` replace them (as in the passes), and the
/// defaults (`~/.vault-token`, the pod's service-account token) exist only
/// where the service runs, not where a config is validated. A FIFO or
/// another special file is not opened, which could block.
pub fn check_credential_files(config: &Config, earlier: Option<&ConfigError>) -> Result<(), ConfigError> {
    // A setting's own location, else the `auth` value it belongs to.
    let at =
        |key: &str| config.credential_spans.get(key).or_else(|| config.credential_spans.get("vault.auth")).cloned();
    let mut problems = Vec::new();
    let mut file = |key: &str, what: &str, path: &Path| {
        if let Some(why) = credential_file_problem(path) {
            problems.push(Problem { location: at(key), message: format!("{what} {}: {why}", path.display()) });
        }
    };
    let mut unset = Vec::new();
    if let KeysSource::Etcd(etcd) = &config.keys
        && let Some(user) = &etcd.user
        && etcd.password.is_none()
    {
        match &etcd.password_file {
            Some(path) => file("etcd.password_file", "etcd password_file", path),
            None => unset.push(("etcd.user", format!(
                "etcd user {user:?} has no password: set password_file, or ETCDCTL_USER=name:password in the environment"
            ))),
        }
    }
    if let Some(SecretsSource::Vault(vault)) = &config.secrets {
        match &vault.auth {
            VaultAuth::Token { token: None, token_file: Some(path) } => {
                file("vault.auth.token_file", "vault token_file", path);
            }
            VaultAuth::Token { .. } => {}
            VaultAuth::AppRole { role_id, role_id_file, secret_id_file, .. } => {
                match (role_id, role_id_file) {
                    (Some(_), _) => {}
                    (None, Some(path)) => file("vault.auth.role_id_file", "vault role_id_file", path),
                    (None, None) => {
                        unset.push(("vault.auth", "vault approle auth needs role_id or role_id_file".into()))
                    }
                }
                match secret_id_file {
                    Some(path) => file("vault.auth.secret_id_file", "vault secret_id_file", path),
                    None => unset.push(("vault.auth", "vault approle auth needs secret_id_file".into())),
                }
            }
            // The default token file exists only in a pod: checked only when written.
            VaultAuth::Kubernetes { token_file, .. } => {
                if config.credential_spans.contains_key("vault.auth.token_file") {
                    file("vault.auth.token_file", "vault token_file", token_file);
                }
            }
            VaultAuth::Jwt { token_file, .. } => file("vault.auth.token_file", "vault token_file", token_file),
        }
    }
    problems.extend(unset.into_iter().map(|(key, message)| Problem { location: at(key), message }));
    problems.extend(earlier.into_iter().flat_map(|e| e.problems.iter().cloned()));
    if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
}

/// Why the first pass could not read `path` as a credential, if it could
/// not. The content is read to be checked and dropped: never shown.
fn credential_file_problem(path: &Path) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    if meta.is_dir() {
        return Some("is a directory, not a file".to_owned());
    }
    if !meta.is_file() {
        return None;
    }
    match std::fs::read(path) {
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Err(_) => Some("is not UTF-8 text".to_owned()),
            Ok(text) if text.trim().is_empty() => Some("is empty".to_owned()),
            Ok(_) => None,
        },
    }
}

struct Builder<'a> {
    path: &'a Path,
    source: &'a str,
    lines: LineIndex,
    dir: PathBuf,
    problems: Vec<Problem>,
    credential_spans: BTreeMap<&'static str, Location>,
}

impl Builder<'_> {
    fn loc(&self, offset: usize) -> Location {
        self.lines.location(self.path, self.source, offset)
    }

    fn problem(&mut self, offset: usize, message: impl Into<String>) {
        let p = Problem::at(self.loc(offset), message);
        self.problems.push(p);
    }

    fn duration(&mut self, value: Option<Spanned<String>>, default: Duration, what: &str) -> Duration {
        let Some(v) = value else { return default };
        match parse_duration(v.get_ref()) {
            Some(d) if !d.is_zero() => d,
            _ => {
                self.problem(
                    v.span().start,
                    format!(
                        "invalid {what} {:?}: use a positive duration like \"30s\", \"1m\", \"1h30m\" or \"500ms\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn build(mut self, raw: RawConfig, env: &dyn Environment) -> Result<Config, ConfigError> {
        let interval = self.duration(raw.interval, DEFAULT_INTERVAL, "interval");
        let service = self.service(raw.service);
        let render = self.render(raw.render);
        let instance = match raw.instance {
            Some(i) => {
                if !is_label_value(i.get_ref()) {
                    self.problem(
                        i.span().start,
                        format!("invalid instance {:?}: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", i.get_ref()),
                    );
                }
                i.into_inner()
            }
            None => default_instance(self.path),
        };
        let max_prune_share = match raw.max_prune_share {
            Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.problem(s.span().start, "max_prune_share must be between 0.0 and 1.0");
                0.25
            }
            None => 0.25,
        };
        let state_dir = raw.state.and_then(|s| s.dir).map_or_else(|| self.dir.join(".cfgsync"), |d| self.dir.join(d));
        let envs: Vec<String> = raw.envs.keys().cloned().collect();
        if envs.is_empty() {
            self.problem(0, "no environments defined: add at least one `[envs.<name>]` table");
        }
        for name in &envs {
            if !is_valid_name(name) {
                self.problem(0, format!("invalid env name {name:?}: use letters, digits, '-' and '_'"));
            }
        }

        let files_dir = raw.files.map(|f| self.dir.join(f.dir.unwrap_or_else(|| "source".to_owned())));
        let keys = match (raw.etcd, &files_dir) {
            (Some(_), Some(_)) => {
                self.problem(0, "both [etcd] and [files] provide keys: keep one of them");
                None
            }
            (Some(etcd), None) => Some(KeysSource::Etcd(self.etcd(etcd, env))),
            (None, Some(dir)) => Some(KeysSource::Files(dir.clone())),
            (None, None) => {
                self.problem(0, "no source configured: add an [etcd] section, or [files] for the embedded file source");
                None
            }
        };
        let secrets = match (raw.vault, &files_dir) {
            (Some(_), Some(_)) => {
                self.problem(0, "both [vault] and [files] provide secrets: keep one of them");
                None
            }
            (Some(vault), None) => Some(SecretsSource::Vault(self.vault(vault, env))),
            (None, Some(dir)) => Some(SecretsSource::Files(dir.clone())),
            (None, None) => None,
        };

        let mut kubernetes = raw.kubernetes.map(|k| self.kubernetes(k)).unwrap_or_default();
        if !kubernetes.max_prune_share_set {
            kubernetes.max_prune_share = max_prune_share;
        }
        let mut outputs = Vec::new();
        let mut seen = BTreeSet::new();
        for raw_output in raw.outputs {
            if let Some(o) = self.output(raw_output, &envs, &mut seen) {
                outputs.push(o);
            }
        }
        if outputs.is_empty() && self.problems.is_empty() {
            self.problem(0, "no outputs defined: add at least one `[[output]]`");
        }

        if !self.problems.is_empty() {
            return Err(ConfigError { problems: self.problems });
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            templates_dir: self.dir.join("templates"),
            dir: self.dir,
            interval,
            envs,
            keys: keys.expect("set when there are no problems"),
            secrets,
            kubernetes,
            outputs,
            service,
            render,
            instance,
            max_prune_share,
            state_dir,
            credential_spans: self.credential_spans,
        })
    }

    fn size(&mut self, value: Option<Spanned<String>>, default: u64, what: &str) -> u64 {
        let Some(v) = value else { return default };
        match parse_size(v.get_ref()) {
            Some(n) if n > 0 => n,
            _ => {
                self.problem(
                    v.span().start,
                    format!("invalid {what} {:?}: use a size like \"512KiB\", \"1MiB\" or \"2GiB\"", v.get_ref()),
                );
                default
            }
        }
    }

    fn render(&mut self, raw: Option<RawRender>) -> crate::render::Limits {
        let default = crate::render::Limits::default();
        let Some(raw) = raw else { return default };
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let max_entry_bytes =
            as_usize(self.size(raw.max_entry_size, default.max_entry_bytes as u64, "render max_entry_size"));
        let max_output_bytes =
            as_usize(self.size(raw.max_output_size, default.max_output_bytes as u64, "render max_output_size"));
        let timeout = self.duration(raw.timeout, default.timeout, "render timeout");
        let max_memory = self.size(raw.max_memory, default.max_memory, "render max_memory");
        if max_memory < 256 * 1024 * 1024 {
            self.problem(0, "render max_memory must be at least \"256MiB\": the worker itself needs room");
        }
        let max_range = raw.max_range.map_or(default.max_range, |r| as_usize(*r.get_ref()));
        crate::render::Limits { max_entry_bytes, max_output_bytes, timeout, max_range, max_memory }
    }

    fn kubernetes(&mut self, raw: RawKubernetes) -> KubernetesSettings {
        let mut k = KubernetesSettings { kubeconfig: raw.kubeconfig.map(|p| self.dir.join(p)), ..Default::default() };
        if let Some(share) = raw.max_prune_share {
            if (0.0..=1.0).contains(share.get_ref()) {
                k.max_prune_share = *share.get_ref();
                k.max_prune_share_set = true;
            } else {
                self.problem(share.span().start, "max_prune_share must be between 0.0 and 1.0");
            }
        }
        if let Some(key) = raw.fingerprint_key {
            match key.get_ref().split_once('#') {
                Some((path, field)) if !path.is_empty() && !field.is_empty() => {
                    k.fingerprint_key = Some((path.to_owned(), field.to_owned()));
                }
                _ => self.problem(
                    key.span().start,
                    "fingerprint_key must be \"<secret path>#<field>\", e.g. \"cfgsync/fingerprint#key\"",
                ),
            }
        }
        k
    }

    fn service(&mut self, raw: Option<RawService>) -> ServiceSettings {
        let default = ServiceSettings::default();
        let Some(raw) = raw else { return default };
        let debounce = match raw.debounce {
            Some(v) if v.get_ref().trim() == "0" => Duration::ZERO,
            Some(v) => match parse_duration(v.get_ref()) {
                Some(d) => d,
                None => {
                    self.problem(
                        v.span().start,
                        format!(
                            "invalid service debounce {:?}: use a duration like \"200ms\", or \"0s\" for none",
                            v.get_ref()
                        ),
                    );
                    default.debounce
                }
            },
            None => default.debounce,
        };
        let grace = self.duration(raw.grace, default.grace, "service grace");
        let ttl = raw.election.and_then(|e| e.ttl);
        let at = ttl.as_ref().map_or(0, |t| t.span().start);
        let mut election_ttl = self.duration(ttl, default.election_ttl, "service election ttl");
        if election_ttl < Duration::from_secs(2) {
            self.problem(at, "service election ttl must be at least \"2s\": etcd leases have whole-second TTLs");
        }
        // etcd leases count whole seconds; round up so the lease is never shorter than asked.
        election_ttl = Duration::from_secs(election_ttl.as_secs() + u64::from(election_ttl.subsec_nanos() > 0));
        ServiceSettings { debounce, grace, election_ttl }
    }

    fn etcd(&mut self, raw: RawEtcd, env: &dyn Environment) -> EtcdSettings {
        let endpoints = match env.var("ETCDCTL_ENDPOINTS") {
            Some(v) => v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            None => raw.endpoints.unwrap_or_else(|| vec!["http://127.0.0.1:2379".to_owned()]),
        };
        let prefix = match raw.prefix {
            Some(p) => {
                let v = p.get_ref().trim_end_matches('/').to_owned();
                if !v.starts_with('/') {
                    self.problem(p.span().start, format!("etcd prefix {:?} must start with '/'", p.get_ref()));
                }
                v
            }
            None => "/cfgsync".to_owned(),
        };
        if let Some(u) = &raw.user {
            self.credential_spans.insert("etcd.user", self.loc(u.span().start));
        }
        if let Some(f) = &raw.password_file {
            self.credential_spans.insert("etcd.password_file", self.loc(f.span().start));
        }
        let (user, password) = match env.var("ETCDCTL_USER") {
            Some(v) => match v.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(SecretString::new(p))),
                None => (Some(v), None),
            },
            None => (raw.user.map(Spanned::into_inner), None),
        };
        let timeout = self.duration(raw.timeout, Duration::from_secs(10), "etcd timeout");
        EtcdSettings {
            endpoints,
            prefix,
            user,
            password,
            password_file: raw.password_file.map(|p| self.dir.join(p.into_inner())),
            timeout,
        }
    }

    fn vault(&mut self, raw: RawVault, env: &dyn Environment) -> VaultSettings {
        let address = env
            .var("VAULT_ADDR")
            .or(raw.address)
            .unwrap_or_else(|| "http://127.0.0.1:8200".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let env_token = env.var("VAULT_TOKEN").map(SecretString::new);
        let raw_auth = raw.auth.map(|a| {
            self.auth_spans(a.span());
            a.into_inner()
        });
        let auth = match (raw_auth, env_token) {
            // VAULT_TOKEN wins, as for the vault CLI: a developer's own token.
            (_, Some(token)) => VaultAuth::Token { token: Some(token), token_file: None },
            (None, None) => VaultAuth::Token { token: None, token_file: None },
            (Some(RawVaultAuth::Token { token_file }), None) => {
                VaultAuth::Token { token: None, token_file: token_file.map(|p| self.dir.join(p)) }
            }
            (Some(RawVaultAuth::Approle { mount, role_id, role_id_file, secret_id_file }), None) => {
                VaultAuth::AppRole {
                    mount: mount.unwrap_or_else(|| "approle".to_owned()),
                    role_id,
                    role_id_file: role_id_file.map(|p| self.dir.join(p)),
                    secret_id_file: secret_id_file.map(|p| self.dir.join(p)),
                }
            }
            (Some(RawVaultAuth::Kubernetes { mount, role, token_file }), None) => VaultAuth::Kubernetes {
                mount: mount.unwrap_or_else(|| "kubernetes".to_owned()),
                role,
                token_file: token_file.map_or_else(
                    || PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
                    |p| self.dir.join(p),
                ),
            },
            (Some(RawVaultAuth::Jwt { mount, role, token_file }), None) => VaultAuth::Jwt {
                mount: mount.unwrap_or_else(|| "jwt".to_owned()),
                role,
                token_file: self.dir.join(token_file),
            },
        };
        let timeout = self.duration(raw.timeout, Duration::from_secs(10), "vault timeout");
        VaultSettings {
            address,
            mount: raw.mount.unwrap_or_else(|| "secret".to_owned()).trim_matches('/').to_owned(),
            auth,
            timeout,
        }
    }

    /// Records where `auth` and each of its file fields are written: the
    /// field's own position inside the inline table, or in the lines of a
    /// `[vault.auth]` table (whose span is its header).
    fn auth_spans(&mut self, span: std::ops::Range<usize>) {
        let at = span.start;
        self.credential_spans.insert("vault.auth", self.loc(at));
        let rest = self.source.get(at..).unwrap_or_default();
        let text = if rest.starts_with('{') {
            self.source.get(span).unwrap_or_default()
        } else {
            &rest[..rest.find("\n[").unwrap_or(rest.len())]
        };
        for (key, field) in [
            ("vault.auth.token_file", "token_file"),
            ("vault.auth.role_id_file", "role_id_file"),
            ("vault.auth.secret_id_file", "secret_id_file"),
        ] {
            if let Some(i) = text.find(field) {
                self.credential_spans.insert(key, self.loc(at + i));
            }
        }
    }

    fn output(&mut self, raw: RawOutput, all_envs: &[String], seen: &mut BTreeSet<String>) -> Option<Output> {
        let name = raw.name.get_ref().clone();
        let at = raw.name.span().start;
        let before = self.problems.len();
        if !is_valid_name(&name) {
            self.problem(at, format!("invalid output name {name:?}: use letters, digits, '-', '_' and '.'"));
        } else if !seen.insert(name.clone()) {
            self.problem(at, format!("output {name:?} is defined twice"));
        }
        let envs = match raw.envs {
            None => all_envs.to_vec(),
            Some(list) => {
                let mut envs = Vec::new();
                for e in list {
                    if all_envs.contains(e.get_ref()) {
                        envs.push(e.get_ref().clone());
                    } else {
                        let hint = suggest(e.get_ref(), all_envs)
                            .map(|s| format!(" (did you mean {s:?}?)"))
                            .unwrap_or_default();
                        self.problem(
                            e.span().start,
                            format!(
                                "output {name:?}: unknown env {:?}{hint}; defined envs: {}",
                                e.get_ref(),
                                all_envs.join(", ")
                            ),
                        );
                    }
                }
                envs.sort();
                envs.dedup();
                envs
            }
        };
        if raw.entries.is_empty() {
            self.problem(at, format!("output {name:?} has no entries: add an `[output.entries]` table"));
        }
        let entries = raw
            .entries
            .into_iter()
            .map(|(k, v)| {
                let location = self.loc(v.span().start);
                let template = match v.into_inner() {
                    RawEntry::Inline(t) => EntryTemplate::Inline(t),
                    RawEntry::File(f) => EntryTemplate::File(f),
                    RawEntry::Key(k) => EntryTemplate::Key(k),
                };
                Entry { name: k.into_inner(), location, template }
            })
            .collect::<Vec<_>>();
        if raw.targets.is_empty() {
            self.problem(at, format!("output {name:?} has no targets: add at least one `[[output.target]]`"));
        }
        let mut targets = Vec::new();
        for t in raw.targets {
            let location = self.loc(t.span().start);
            let offset = t.span().start;
            match t.into_inner() {
                RawTarget::File(f) => {
                    if let Some(ft) = self.file_target(&name, f, &envs, &entries, offset) {
                        targets.push(Target { location, kind: TargetKind::File(ft) });
                    }
                }
                RawTarget::KubernetesSecret(k) => {
                    if let Some(kt) = self.kube_target(&name, ObjectKind::Secret, k, &envs, &entries, offset) {
                        targets.push(Target { location, kind: TargetKind::Kubernetes(kt) });
                    }
                }
                RawTarget::KubernetesConfigmap(k) => {
                    if let Some(kt) = self.kube_target(&name, ObjectKind::ConfigMap, k, &envs, &entries, offset) {
                        targets.push(Target { location, kind: TargetKind::Kubernetes(kt) });
                    }
                }
                RawTarget::Gitlab(g) => match crate::targets::gitlab::spec::build(&name, g, &envs, &entries) {
                    Ok(t) => targets.push(Target { location, kind: TargetKind::Gitlab(t) }),
                    Err(problems) => self.target_problems(offset, problems),
                },
                RawTarget::Github(g) => match crate::targets::github::spec::build(&name, g, &envs, &entries) {
                    Ok(t) => targets.push(Target { location, kind: TargetKind::Github(t) }),
                    Err(problems) => self.target_problems(offset, problems),
                },
            }
        }
        if self.problems.len() != before {
            return None;
        }
        Some(Output { name, location: self.loc(at), envs, entries, targets })
    }

    /// Problems a target kind found: at an entry's location, else the target's.
    fn target_problems(&mut self, offset: usize, problems: Vec<(Option<Location>, String)>) {
        for (at, message) in problems {
            match at {
                Some(location) => self.problems.push(Problem::at(location, message)),
                None => self.problem(offset, message),
            }
        }
    }

    fn kube_target(
        &mut self,
        output: &str,
        object: ObjectKind,
        raw: RawKubeTarget,
        envs: &[String],
        entries: &[Entry],
        offset: usize,
    ) -> Option<KubeTarget> {
        let before = self.problems.len();
        let mut addresses = BTreeMap::new();
        for env in envs {
            let mut field = |what: &str, template: &str| match render_field(template, env) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problem(offset, format!("output {output:?}: {what} {template:?}: {e}"));
                    None
                }
            };
            let context = field("context", raw.context.as_deref().unwrap_or(""));
            let namespace = field("namespace", &raw.namespace);
            let name = field("name", &raw.name);
            let (Some(context), Some(namespace), Some(name)) = (context, namespace, name) else { break };
            for (what, value, max) in [("namespace", &namespace, 63), ("name", &name, 253)] {
                if !is_dns_name(value, max) {
                    self.problem(
                        offset,
                        format!("output {output:?}: {what} {value:?} (env {env:?}) is not a valid Kubernetes name: lowercase letters, digits, '-' and '.', at most {max} characters"),
                    );
                }
            }
            addresses.insert(env.clone(), ObjectAddress { context, namespace, name });
        }
        let mut seen: BTreeMap<&ObjectAddress, &String> = BTreeMap::new();
        for (env, a) in &addresses {
            if let Some(other) = seen.insert(a, env) {
                self.problem(
                    offset,
                    format!("output {output:?}: envs {other} and {env} would both write {object} {}/{} in context {:?}; template the name, namespace or context with {{{{ env }}}}", a.namespace, a.name, a.context),
                );
            }
        }
        for e in entries {
            if !is_config_key(&e.name) {
                self.problems.push(Problem::at(
                    e.location.clone(),
                    format!(
                        "output {output:?}: entry name {:?} is not a valid {object} key: use letters, digits, '-', '_' and '.'",
                        e.name
                    ),
                ));
            }
        }
        if raw.secret_type.is_some() && object == ObjectKind::ConfigMap {
            self.problem(offset, format!("output {output:?}: `type` applies to kubernetes-secret targets only"));
        }
        for key in raw.labels.keys().chain(raw.annotations.keys()) {
            if key.starts_with("cfgsync.io/") || key == "app.kubernetes.io/managed-by" {
                self.problem(offset, format!("output {output:?}: label/annotation {key:?} is set by cfgsync itself"));
            }
        }
        let mut restart = Vec::new();
        for r in raw.restart {
            if !matches!(r.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") {
                self.problem(offset, format!("output {output:?}: restart kind {:?} is not supported: use Deployment, StatefulSet or DaemonSet", r.kind));
            }
            restart.push(Restart { kind: r.kind, name: r.name });
        }
        if self.problems.len() != before {
            return None;
        }
        Some(KubeTarget {
            object,
            addresses,
            labels: raw.labels,
            annotations: raw.annotations,
            secret_type: raw.secret_type,
            restart,
        })
    }

    fn file_target(
        &mut self,
        output: &str,
        raw: RawFileTarget,
        envs: &[String],
        entries: &[Entry],
        offset: usize,
    ) -> Option<FileTarget> {
        let before = self.problems.len();
        let mode = raw.mode.as_deref().and_then(|m| match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 => Some(v),
            _ => {
                self.problem(offset, format!("output {output:?}: invalid file mode {m:?}: use octal like \"0640\""));
                None
            }
        });
        if raw.format == Format::Raw && entries.len() != 1 {
            self.problem(
                offset,
                format!(
                    "output {output:?}: format \"raw\" writes a single entry, but the output has {}",
                    entries.len()
                ),
            );
        }
        if raw.dialect.is_some() && raw.format != Format::Dotenv {
            self.problem(offset, format!("output {output:?}: `dialect` applies to format \"dotenv\" only"));
        }
        let absolute_in_config = Path::new(&raw.path).is_absolute();
        let mut paths = BTreeMap::new();
        for env in envs {
            let rendered = match render_field(&raw.path, env) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(offset, format!("output {output:?}: file target path {:?}: {e}", raw.path));
                    break;
                }
            };
            if rendered.trim().is_empty() {
                self.problem(offset, format!("output {output:?}: file target path is empty for env {env:?}"));
                continue;
            }
            let path = Path::new(&rendered);
            if path.is_absolute() != absolute_in_config {
                self.problem(
                    offset,
                    format!(
                        "output {output:?}: path {rendered:?} must not change between relative and absolute per env"
                    ),
                );
                continue;
            }
            let resolved = if path.is_absolute() {
                normalize(path)
            } else {
                match normalize_within(path) {
                    // `./out/x` shown as `out/x`: paths look the same everywhere.
                    Some(p) if self.dir == Path::new(".") => p,
                    Some(p) => self.dir.join(p),
                    None => {
                        self.problem(
                            offset,
                            format!(
                                "output {output:?}: path {rendered:?} (env {env:?}) leaves the config's directory; write an absolute path to allow that"
                            ),
                        );
                        continue;
                    }
                }
            };
            paths.insert(env.clone(), resolved);
        }
        let mut by_path: BTreeMap<&PathBuf, Vec<&String>> = BTreeMap::new();
        for (env, p) in &paths {
            by_path.entry(p).or_default().push(env);
        }
        for (p, envs) in by_path {
            if envs.len() > 1 {
                self.problem(
                    offset,
                    format!(
                        "output {output:?}: envs {} would all write {}; put {{{{ env }}}} in the path",
                        envs.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "),
                        p.display()
                    ),
                );
            }
        }
        let trusted_dir = raw.trusted_dir.map(|d| normalize(&d));
        if let Some(d) = &trusted_dir {
            if !d.is_absolute() {
                self.problem(
                    offset,
                    format!("output {output:?}: trusted_dir {:?} must be an absolute path", d.display()),
                );
            } else if let Some(p) = paths.values().find(|p| !p.starts_with(d)) {
                self.problem(
                    offset,
                    format!("output {output:?}: path {} is not below trusted_dir {}", p.display(), d.display()),
                );
            }
        }
        // What the first pass would refuse, refused now (names are config, not data).
        for e in entries {
            let problem = match raw.format {
                Format::Dir => format::check_file_name(&e.name)
                    .err()
                    .map(|why| format!("cannot be a file name in a dir target: {why}")),
                Format::Dotenv if !format::dotenv::is_env_name(&e.name) => {
                    Some("cannot be written to a dotenv file: names must match [A-Za-z_][A-Za-z0-9_]*".to_owned())
                }
                _ => None,
            };
            if let Some(why) = problem {
                self.problems
                    .push(Problem::at(e.location.clone(), format!("output {output:?}: entry {:?} {why}", e.name)));
            }
        }
        if self.problems.len() != before {
            return None;
        }
        Some(FileTarget {
            paths,
            format: raw.format,
            dialect: raw.dialect.unwrap_or_default(),
            mode,
            check_cmd: raw.check_cmd,
            reload_cmd: raw.reload_cmd,
            trusted_dir,
        })
    }
}

/// Renders a templated config field (`path`, `context`, ...) for one env.
/// Only the variable `env` is available.
pub fn render_field(template: &str, env: &str) -> Result<String, String> {
    crate::render::render_field(template, &[("env", env)])
}

/// Why `mode` is wrong for a file that holds secrets: no bits for others
/// at all (group bits are allowed, since an explicit mode asked for them).
pub fn secret_mode_problem(mode: u32) -> Result<(), &'static str> {
    if mode & 0o007 != 0 {
        return Err(
            "would let every user of the machine read a file holding secrets: drop the bits for others (at most 0660)",
        );
    }
    Ok(())
}

/// `"512KiB"`, `"1MiB"`, `"2GiB"`, `"1000"` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let unit = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The instance a config gets when it names none: its file's name when that
/// is not `cfgsync.toml`, else its directory's (`/etc/payments/cfgsync.toml`
/// → `payments`, `team-a.toml` → `team-a`), as a label value.
pub fn default_instance(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("cfgsync");
    let name = if stem == "cfgsync" {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("cfgsync").to_owned()
    } else {
        stem.to_owned()
    };
    let mut clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    clean.truncate(63);
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned();
    if clean.is_empty() { "cfgsync".to_owned() } else { clean }
}

/// A DNS-1123 subdomain (names) or label (namespaces, `max` 63).
fn is_dns_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && (max > 63 || !name.contains('.'))
}

/// A valid key of a Secret's or ConfigMap's `data`.
fn is_config_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Lexically normalizes a relative path; `None` when it climbs above its start.
fn normalize_within(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                depth -= 1;
                out.pop();
            }
            Component::Normal(p) => {
                depth += 1;
                out.push(p);
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (depth > 0).then_some(out)
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `"1m"`, `"30s"`, `"1h30m"`, `"500ms"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
    }
    Some(total)
}

/// The closest candidate by edit distance, for "did you mean" hints.
pub fn suggest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    const BASE: &str = r#"
[files]
[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
A = "{{ key(name='a') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"
"#;

    #[test]
    fn a_minimal_config_loads_with_defaults() {
        let c = parse(Path::new("/etc/cfgsync/cfgsync.toml"), BASE, &no_env()).unwrap();
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.envs, ["prod", "staging"]);
        assert!(matches!(&c.keys, KeysSource::Files(d) if d == Path::new("/etc/cfgsync/source")));
        let TargetKind::File(f) = &c.outputs[0].targets[0].kind else { panic!("file target expected") };
        assert_eq!(f.paths["prod"], Path::new("/etc/cfgsync/out/prod/api.env"));
        assert_eq!(f.format, Format::Dotenv);
    }

    #[test]
    fn unknown_field_names_file_line_and_column() {
        let text = BASE.replace("[envs.prod]", "[envs.prod]\ncolour = 1");
        let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:5:1: unknown field `colour`"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = format!(
            "{BASE}\n[[output]]\nname = \"web\"\nenvs = [\"prd\"]\n[output.entries]\nX = \"x\"\n\n[[output]]\nname = \"db\"\n[output.entries]\nY = \"y\"\n[[output.target]]\nkind = \"file\"\npath = \"../../etc/{{{{ env }}}}.env\"\n"
        );
        let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err();
        let all = err.to_string();
        assert_eq!(err.problems.len(), 4, "{all}");
        assert!(all.contains("c.toml:16:9: output \"web\": unknown env \"prd\" (did you mean \"prod\"?)"), "{all}");
        assert!(all.contains("output \"web\" has no targets"), "{all}");
        assert!(all.contains("c.toml:24:1: output \"db\": path \"../../etc/prod.env\" (env \"prod\") leaves"), "{all}");
    }

    #[test]
    fn env_vars_override_only_existing_sections() {
        let mut env = no_env();
        env.insert("ETCDCTL_ENDPOINTS".into(), "http://a:1,http://b:2".into());
        env.insert("ETCDCTL_USER".into(), "reader:pw".into());
        env.insert("VAULT_ADDR".into(), "http://v:8200/".into());
        env.insert("VAULT_TOKEN".into(), "tok".into());
        let files = parse(Path::new("c.toml"), BASE, &env).unwrap();
        assert!(matches!(files.keys, KeysSource::Files(_)));
        let text = BASE.replace(
            "[files]",
            "[etcd]\nendpoints = [\"http://x:1\"]\n[vault]\nauth = { method = \"approle\", role_id = \"r\" }",
        );
        let c = parse(Path::new("c.toml"), &text, &env).unwrap();
        let KeysSource::Etcd(e) = &c.keys else { panic!("etcd expected") };
        assert_eq!(e.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(e.user.as_deref(), Some("reader"));
        assert_eq!(e.password.as_ref().map(|p| p.expose()), Some("pw"));
        let Some(SecretsSource::Vault(v)) = &c.secrets else { panic!("vault expected") };
        assert_eq!(v.address, "http://v:8200");
        assert!(matches!(&v.auth, VaultAuth::Token { token: Some(t), .. } if t.expose() == "tok"));
    }

    #[test]
    fn service_settings_have_defaults_and_are_validated() {
        let c = parse(Path::new("c.toml"), BASE, &no_env()).unwrap();
        assert_eq!(c.service, ServiceSettings::default());
        assert_eq!(c.service.debounce, Duration::from_millis(200));
        let text =
            format!("{BASE}\n[service]\ndebounce = \"0s\"\ngrace = \"5s\"\n[service.election]\nttl = \"2500ms\"\n");
        let c = parse(Path::new("c.toml"), &text, &no_env()).unwrap();
        assert_eq!(
            c.service,
            ServiceSettings {
                debounce: Duration::ZERO,
                grace: Duration::from_secs(5),
                election_ttl: Duration::from_secs(3)
            }
        );
        let text = format!("{BASE}\n[service]\ndebounce = \"soon\"\n[service.election]\nttl = \"1s\"\n");
        let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
        assert!(err.contains("invalid service debounce \"soon\""), "{err}");
        assert!(err.contains("service election ttl must be at least \"2s\""), "{err}");
    }

    #[test]
    fn kubernetes_and_jwt_vault_auth() {
        let with = |auth: &str| {
            let text = BASE.replace("[files]", &format!("[etcd]\n[vault]\nauth = {auth}"));
            let c = parse(Path::new("/etc/cfgsync/c.toml"), &text, &no_env()).unwrap();
            let Some(SecretsSource::Vault(v)) = c.secrets else { panic!("vault expected") };
            v.auth
        };
        let VaultAuth::Kubernetes { mount, role, token_file } = with("{ method = \"kubernetes\", role = \"r\" }")
        else {
            panic!("kubernetes expected")
        };
        assert_eq!((mount.as_str(), role.as_str()), ("kubernetes", "r"));
        assert_eq!(token_file, Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token"));
        let VaultAuth::Jwt { mount, role, token_file } =
            with("{ method = \"jwt\", mount = \"gitlab\", token_file = \"ci.jwt\" }")
        else {
            panic!("jwt expected")
        };
        assert_eq!((mount.as_str(), role), ("gitlab", None));
        assert_eq!(token_file, Path::new("/etc/cfgsync/ci.jwt"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn line_index_agrees_with_a_scan_from_the_start() {
        let text = "a = 1\nnamé = \"x\"\n\n[[output]]\nname = \"é€\"\n";
        let index = LineIndex::new(text);
        for (offset, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            assert_eq!(index.line_column(text, offset), (line, column), "offset {offset}");
        }
        assert_eq!(index.line_column(text, 10_000), index.line_column(text, text.len()), "clamped");
    }

    #[test]
    fn relative_paths_must_stay_inside() {
        assert_eq!(normalize_within(Path::new("a/../b/c")), Some(PathBuf::from("b/c")));
        assert_eq!(normalize_within(Path::new("a/../../b")), None);
        assert_eq!(normalize_within(Path::new("./")), None);
    }
}
