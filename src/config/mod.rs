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

//!
//! # Layout
//!
//! - this module: the typed configuration (what the rest of cfgsync reads),
//!   locations and problems, and the entry points [`load`] and [`parse`];
//! - [`builder`]: the file as written (serde structs) and the builder that
//!   turns it into a [`Config`], with every semantic check;
//! - [`document`]: reading the file into those structs, reporting every
//!   unknown field and type error at once instead of stopping at the first;
//! - [`own_files`]: file targets never write over what cfgsync reads itself;
//! - [`tls`]: the TLS settings of etcd and Vault (and the CI targets' `ca_file`).

mod builder;
mod document;
mod own_files;
mod tls;

pub use tls::{TlsSettings, host_of, is_loopback};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `[history]`: how many past passes are kept, for how long.
    pub history: crate::history::HistorySettings,
    /// `[render]`: limits of the template sandbox.
    pub render: crate::render::Limits,
    /// Written on everything cfgsync writes (`cfgsync.io/instance`, CI
    /// variable descriptions, state): prune only touches its own.
    pub instance: String,
    /// `instance` was written in the config (else it is the default, allowed
    /// only for file targets with the state in the config's directory).
    pub instance_set: bool,
    /// A pass deleting more than one and more than this share of what the
    /// instance wrote at one destination stops and asks for `--allow-mass-prune`.
    pub max_prune_share: f64,
    /// `[state] dir`: what cfgsync wrote, per instance and env (default
    /// `<config dir>/.cfgsync`).
    pub state_dir: PathBuf,
    /// `[fingerprint] key` (formerly `[kubernetes] fingerprint_key`, still
    /// read): `path#field` of the secret holding the HMAC key for the
    /// fingerprints of secret outputs ([`crate::fingerprint::EnvFingerprinter`]),
    /// read from each env's snapshot by the keyed kinds. Defaults to
    /// [`DEFAULT_FINGERPRINT_KEY`], which `cfgsync policy apply` creates in
    /// Vault for every env, so it never has to be configured. Always `Some`;
    /// an absent secret shows up when a secret output is written.
    pub fingerprint_key: Option<(String, String)>,
    /// Where each credential setting is written (`[etcd] user` and
    /// `password_file`, the `[vault] auth` fields), for
    /// [`check_credential_files`]: keyed by setting name, e.g.
    /// `"vault.auth.secret_id_file"`.
    pub credential_spans: BTreeMap<&'static str, Location>,
}

/// `[service]`: how `cfgsync run` behaves; the one-shot commands ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Quiet time that coalesces etcd or file changes (0 = none): a change
    /// a debounce after the previous one goes at once (the leading edge);
    /// the ones that follow within a debounce wait until none came for a
    /// debounce and go in one pass (at most 5 × debounce after the first).
    /// A burst of puts is two passes, not one.
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
    /// CA, client certificate, server name, `insecure` (see [`tls`]).
    /// Boxed: the settings live in enums whose other variant is a path.
    pub tls: Box<TlsSettings>,
}

impl EtcdSettings {
    /// `<prefix>/<env>/`: the one range every pass reads for an env.
    pub fn env_prefix(&self, env: &str) -> String {
        crate::source::etcd::keyspace::env_prefix(&self.prefix, env)
    }
}

#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub address: String,
    pub mount: String,
    pub auth: VaultAuth,
    pub timeout: Duration,
    /// `cfgsync run` re-reads a secret version it already read only this
    /// long after reading it, or when a marker says it changed
    /// ([`crate::source::secret_cache`]). One-shot commands always read.
    pub refresh: Duration,
    /// CA, client certificate, server name, skip-verify, `insecure` (see [`tls`]).
    pub tls: Box<TlsSettings>,
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

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub location: Location,
    pub template: EntryTemplate,
}

#[derive(Debug, Clone)]
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
    /// What the target is, typed by its kind (see [`crate::targets::registry`]).
    pub kind: crate::targets::TargetKind,
    /// The entries it takes (`entries = [...]`, or every entry but those
    /// of `exclude = [...]`); `None`: every entry of the output. The kind
    /// was built from these entries only, and every pass hands it only
    /// these (see [`Target::selects`]).
    pub selected: Option<BTreeSet<String>>,
}

impl Target {
    /// Whether the target takes entry `name`.
    pub fn selects(&self, name: &str) -> bool {
        self.selected.as_ref().is_none_or(|s| s.contains(name))
    }
}

/// `[kubernetes]`: settings shared by every Kubernetes target.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// `--kubeconfig` beats this; then `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A pass that would delete more than this share of our objects in a
    /// cluster stops and asks for `--allow-mass-prune`.
    pub max_prune_share: f64,
    /// Whether `[kubernetes] max_prune_share` was set (else the top-level one applies).
    pub max_prune_share_set: bool,
}

/// `cfgsync/fingerprint#key`: secret `<mount>/<env>/cfgsync/fingerprint`,
/// field `key`.
pub const DEFAULT_FINGERPRINT_KEY: (&str, &str) = ("cfgsync/fingerprint", "key");

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self { kubeconfig: None, max_prune_share: 0.25, max_prune_share_set: false }
    }
}

/// Loads and validates `path`, reporting every problem found.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| Problem { location: None, message: format!("cannot read config file {}: {e}", path.display()) })?;
    parse(path, &source, env)
}

/// Parses config text as if read from `path`.
pub fn parse(path: &Path, source: &str, env: &dyn Environment) -> Result<Config, ConfigError> {
    builder::parse(path, source, env)
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

/// The instance a config gets when it names none: its file's name when that
/// is not `cfgsync.toml`, else its directory's (`/etc/payments/cfgsync.toml`
/// → `payments`, `team-a.toml` → `team-a`), as a label value. The path is
/// resolved first, so a symlink to the config or to its directory gives the
/// same name as the real path.
pub fn default_instance(path: &Path) -> String {
    let real = path.canonicalize().ok();
    let path = real.as_deref().unwrap_or(path);
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

/// `"1m"`, `"30s"`, `"1h30m"`, `"500ms"`, `"1h 30min"`, `"2d"`: humantime's
/// syntax (a sum of number-unit spans, units from `ns` to `y`; see
/// [`humantime::parse_duration`]). A bare number has no unit and is refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// The closest candidate by edit distance (Levenshtein, counted in
/// characters), for "did you mean" hints.
pub fn suggest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

#[cfg(test)]
mod tests;
