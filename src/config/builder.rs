//! The file as written, and the builder that turns it into a [`Config`].
//!
//! Serde structs mirror the file (`deny_unknown_fields`, spans kept); the
//! [`Builder`] checks every semantic rule and collects *every* problem with
//! its `file:line:column` (through one [`LineIndex`] per file, so locating a
//! problem costs a binary search, not a scan from the start).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::*;
use crate::secret::SecretString;
use crate::targets::registry::{Problems, RawTarget, SpecInput};

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
    envs: BTreeMap<Spanned<String>, RawEnv>,
    #[serde(default, rename = "output")]
    outputs: Vec<RawOutput>,
    service: Option<RawService>,
    render: Option<RawRender>,
    history: Option<RawHistory>,
    fingerprint: Option<RawFingerprint>,
}

/// `[history]`: what is kept of past passes (see [`crate::history`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    keep: Option<Spanned<u64>>,
    max_age: Option<Spanned<String>>,
    quiet: Option<Spanned<String>>,
}

/// `[fingerprint]`: the key of the fingerprints of secret outputs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFingerprint {
    /// `"<secret path>#<field>"`.
    key: Option<Spanned<String>>,
}

/// `[state]`: where cfgsync records what it wrote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<Spanned<PathBuf>>,
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
    // TLS (see `super::tls`).
    ca_file: Option<Spanned<PathBuf>>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    server_name: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    address: Option<String>,
    mount: Option<String>,
    auth: Option<Spanned<RawVaultAuth>>,
    timeout: Option<Spanned<String>>,
    /// How long `cfgsync run` reuses a secret version it read (see
    /// `crate::source::secret_cache`).
    refresh: Option<Spanned<String>>,
    // TLS (see `super::tls`).
    ca_file: Option<Spanned<PathBuf>>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    server_name: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
    allow_skip_verify: Option<Spanned<bool>>,
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
    targets: Vec<Spanned<RawTargetTable>>,
}

/// An `[[output.target]]` table: the kind's own fields, and the entry
/// selection every kind shares (see [`super::Selection`]).
#[derive(Deserialize)]
struct RawTargetTable {
    #[serde(flatten)]
    kind: RawTarget,
    entries: Option<NameList>,
    exclude: Option<NameList>,
}

/// A list of names as written, each with its place.
type NameList = Spanned<Vec<Spanned<String>>>;

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
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: Option<PathBuf>,
    max_prune_share: Option<Spanned<f64>>,
    /// The old name of `[fingerprint] key`.
    fingerprint_key: Option<Spanned<String>>,
}

/// Parses config text as if read from `path`.
pub(super) fn parse(path: &Path, source: &str, env: &dyn Environment) -> Result<Config, ConfigError> {
    let lines = LineIndex::new(source);
    // Every unknown field at once, then the semantic checks (see [`super::document`]).
    let (raw, problems): (RawConfig, _) = super::document::deserialize(path, source, &lines)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    Builder { path, source, lines, dir, problems, credential_spans: BTreeMap::new() }.build(raw, env)
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

    fn build(mut self, mut raw: RawConfig, env: &dyn Environment) -> Result<Config, ConfigError> {
        let interval = self.duration(raw.interval, DEFAULT_INTERVAL, "interval");
        let service = self.service(raw.service);
        let history = self.history(raw.history);
        let render = self.render(raw.render);
        let instance_set = raw.instance.is_some();
        let instance = self.instance(raw.instance);
        let max_prune_share = self.max_prune_share(raw.max_prune_share);
        let state_dir_at = raw.state.as_ref().and_then(|s| s.dir.as_ref()).map(|d| d.span().start);
        let state_dir =
            raw.state.and_then(|s| s.dir).map_or_else(|| self.dir.join(".cfgsync"), |d| self.dir.join(d.into_inner()));
        let envs = self.env_names(&raw.envs);
        let (keys, secrets) = self.sources(raw.etcd, raw.vault, raw.files, env);

        let old_key = raw.kubernetes.as_mut().and_then(|k| k.fingerprint_key.take());
        let fingerprint_key = self.fingerprint_key(raw.fingerprint.and_then(|f| f.key), old_key);
        let mut kubernetes = raw.kubernetes.map(|k| self.kubernetes(k)).unwrap_or_default();
        if !kubernetes.max_prune_share_set {
            kubernetes.max_prune_share = max_prune_share;
        }
        let outputs = self.outputs(raw.outputs, &envs);
        if !instance_set {
            self.instance_needed(&outputs, state_dir_at, &instance);
        }

        if !self.problems.is_empty() {
            return Err(ConfigError { problems: self.problems });
        }
        let config = Config {
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
            history,
            render,
            instance,
            instance_set,
            max_prune_share,
            state_dir,
            fingerprint_key,
            credential_spans: self.credential_spans,
        };
        // Checks of the whole config: they need every path resolved.
        let problems = super::own_files::problems(&config, env);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(config)
    }

    /// `instance`, or the default from the file's name.
    fn instance(&mut self, raw: Option<Spanned<String>>) -> String {
        match raw {
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
        }
    }

    /// `max_prune_share`, between 0 and 1 (default 0.25).
    fn max_prune_share(&mut self, raw: Option<Spanned<f64>>) -> f64 {
        match raw {
            Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.problem(s.span().start, "max_prune_share must be between 0.0 and 1.0");
                0.25
            }
            None => 0.25,
        }
    }

    /// Where keys and secrets come from: etcd and Vault, or `[files]` for
    /// both; one source of each.
    fn sources(
        &mut self,
        etcd: Option<RawEtcd>,
        vault: Option<RawVault>,
        files: Option<RawFiles>,
        env: &dyn Environment,
    ) -> (Option<KeysSource>, Option<SecretsSource>) {
        let files_dir = files.map(|f| self.dir.join(f.dir.unwrap_or_else(|| "source".to_owned())));
        let keys = match (etcd, &files_dir) {
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
        let secrets = match (vault, &files_dir) {
            (Some(_), Some(_)) => {
                self.problem(0, "both [vault] and [files] provide secrets: keep one of them");
                None
            }
            (Some(vault), None) => Some(SecretsSource::Vault(self.vault(vault, env))),
            (None, Some(dir)) => Some(SecretsSource::Files(dir.clone())),
            (None, None) => None,
        };
        (keys, secrets)
    }

    /// Every `[[output]]`, and what is checked across them (one CA per
    /// server, at least one output).
    fn outputs(&mut self, raw: Vec<RawOutput>, envs: &[String]) -> Vec<Output> {
        let mut outputs = Vec::new();
        let mut seen = BTreeSet::new();
        for raw_output in raw {
            if let Some(o) = self.output(raw_output, envs, &mut seen) {
                outputs.push(o);
            }
        }
        if let Err(message) = crate::targets::ci_tls::ca_files(&outputs) {
            self.problem(0, message);
        }
        if outputs.is_empty() && self.problems.is_empty() {
            self.problem(0, "no outputs defined: add at least one `[[output]]`");
        }
        outputs
    }

    /// A config without `instance` gets one from its file's name; that
    /// name is not unique (every `/etc/cfgsync/cfgsync.toml` is
    /// `cfgsync`, `x/app/cfgsync.toml` and `y/app/cfgsync.toml` are both
    /// `app`), and two configs of one identity prune each other. So the
    /// default is refused wherever what a config writes can be seen by
    /// another: a Kubernetes, GitLab or GitHub target (shared by every
    /// config writing to that cluster or project, records in a shared
    /// etcd), or a `[state] dir` set explicitly (which other configs may
    /// name too). Only a config with file targets and its state in its own
    /// directory keeps the default: no other config reads that state
    /// (two configs in one directory are told apart by the file state, see
    /// [`crate::targets::file::state`]).
    fn instance_needed(&mut self, outputs: &[Output], state_dir_at: Option<usize>, default: &str) {
        let how = format!(
            "set `instance = \"NAME\"` at the top of the config, a name no other cfgsync config uses where this one writes (what this config wrote before this was required carries instance {default:?}: keep that name to go on owning it, unless another config has it too)"
        );
        let shared = outputs.iter().find_map(|o| o.targets.iter().find(|t| t.kind.shared()).map(|t| (o, t)));
        if let Some((output, target)) = shared {
            self.problems.push(Problem::at(
                target.location.clone(),
                format!(
                    "output {:?}: a {} target writes where other cfgsync configs write too, so this config needs its own identity: {how}",
                    output.name,
                    target.kind.name()
                ),
            ));
        } else if let Some(at) = state_dir_at {
            self.problem(
                at,
                format!("`[state] dir` may be shared with other configs, so this config needs its own identity: {how}"),
            );
        }
    }

    /// The env names, sorted; each checked where it is written. Names
    /// starting with `_` are cfgsync's own etcd layout (`<prefix>/_service/`,
    /// `_state/`, `_meta/`, `_history/` and whatever comes next): an env so
    /// named would read those records as its keys. Names starting with `.`
    /// (`.`, `..`) would be path segments in Vault and file paths.
    fn env_names(&mut self, raw: &BTreeMap<Spanned<String>, RawEnv>) -> Vec<String> {
        if raw.is_empty() {
            self.problem(0, "no environments defined: add at least one `[envs.<name>]` table");
        }
        let reserved = format!(
            "names starting with '_' are reserved for cfgsync's own records in etcd ({})",
            crate::source::etcd::keyspace::RESERVED.join(", ")
        );
        for name in raw.keys() {
            let why = if !is_valid_name(name.get_ref()) {
                Some("use letters, digits, '-', '_' and '.'")
            } else if name.get_ref().starts_with('_') {
                Some(reserved.as_str())
            } else if name.get_ref().starts_with('.') {
                Some("names starting with '.' are reserved (they would be path segments)")
            } else {
                None
            };
            if let Some(why) = why {
                self.problem(name.span().start, format!("invalid env name {:?}: {why}", name.get_ref()));
            }
        }
        raw.keys().map(|k| k.get_ref().clone()).collect()
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
        k
    }

    /// `[fingerprint] key`, or its old name `[kubernetes] fingerprint_key`
    /// (not both), else the default.
    fn fingerprint_key(
        &mut self,
        key: Option<Spanned<String>>,
        old: Option<Spanned<String>>,
    ) -> Option<(String, String)> {
        let (path, field) = DEFAULT_FINGERPRINT_KEY;
        let default = Some((path.to_owned(), field.to_owned()));
        let (key, name) = match (key, old) {
            (Some(_), Some(old)) => {
                self.problem(
                    old.span().start,
                    "the fingerprint key is set twice: keep `[fingerprint] key` (`[kubernetes] fingerprint_key` is its old name)",
                );
                return default;
            }
            (Some(key), None) => (key, "[fingerprint] key"),
            (None, Some(old)) => (old, "fingerprint_key"),
            (None, None) => return default,
        };
        match key.get_ref().split_once('#') {
            Some((path, field)) if !path.is_empty() && !field.is_empty() => Some((path.to_owned(), field.to_owned())),
            _ => {
                self.problem(
                    key.span().start,
                    format!("{name} must be \"<secret path>#<field>\", e.g. \"cfgsync/fingerprint#key\""),
                );
                default
            }
        }
    }

    fn history(&mut self, raw: Option<RawHistory>) -> crate::history::HistorySettings {
        let default = crate::history::HistorySettings::default();
        let Some(raw) = raw else { return default };
        let keep = match raw.keep {
            Some(k) if (1..=100_000).contains(k.get_ref()) => *k.get_ref() as usize,
            Some(k) => {
                self.problem(k.span().start, "history keep must be between 1 and 100000 (records per env)");
                default.keep
            }
            None => default.keep,
        };
        let max_age = self.duration(raw.max_age, default.max_age, "history max_age");
        let quiet = self.duration(raw.quiet, default.quiet, "history quiet");
        crate::history::HistorySettings { keep, max_age, quiet }
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
        let raw_tls = tls::RawTls {
            ca_file: raw.ca_file,
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            server_name: raw.server_name,
            insecure: raw.insecure,
            allow_skip_verify: None,
        };
        let tls = self.tls(env, "[etcd]", |r| r.etcd(raw_tls, &endpoints));
        EtcdSettings {
            tls: Box::new(tls),
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
        let refresh = self.duration(raw.refresh, crate::source::secret_cache::DEFAULT_REFRESH, "vault refresh");
        let raw_tls = tls::RawTls {
            ca_file: raw.ca_file,
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            server_name: raw.server_name,
            insecure: raw.insecure,
            allow_skip_verify: raw.allow_skip_verify,
        };
        let tls = self.tls(env, "[vault]", |r| r.vault(raw_tls, &address));
        VaultSettings {
            tls: Box::new(tls),
            address,
            mount: raw.mount.unwrap_or_else(|| "secret".to_owned()).trim_matches('/').to_owned(),
            auth,
            timeout,
            refresh,
        }
    }

    /// A section's TLS settings (`super::tls`), its problems located.
    fn tls(
        &mut self,
        env: &dyn Environment,
        header: &str,
        resolve: impl FnOnce(&mut tls::Resolve<'_>) -> TlsSettings,
    ) -> TlsSettings {
        let section_at = self.source.find(&format!("\n{header}")).map_or(0, |i| i + 1);
        let mut r = tls::Resolve { env, dir: &self.dir, section_at, problems: Vec::new() };
        let settings = resolve(&mut r);
        let problems = tls::locate(r.problems, |offset| self.loc(offset));
        self.problems.extend(problems);
        settings
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
        let mut problems = Vec::new();
        for t in raw.targets {
            let location = self.loc(t.span().start);
            let table = t.into_inner();
            let Some(selected) = self.selection(&name, &entries, table.entries, table.exclude) else { continue };
            let chosen: Vec<Entry> = match &selected {
                Some(names) => entries.iter().filter(|e| names.contains(&e.name)).cloned().collect(),
                None => entries.clone(),
            };
            let input = SpecInput { output: &name, envs: &envs, entries: &chosen, dir: &self.dir };
            match table.kind.build(&input) {
                Ok(kind) => targets.push(Target { location, kind, selected }),
                Err(found) => problems.push((location, found)),
            }
        }
        for (location, found) in problems {
            self.target_problems(&location, found);
        }
        if self.problems.len() != before {
            return None;
        }
        Some(Output { name, location: self.loc(at), envs, entries, targets })
    }

    /// A target's `entries = [...]` or `exclude = [...]`, as the names of
    /// the entries it takes (`Some`), or every entry (`None`); `None` for
    /// the whole when there is a problem (each one reported where it is).
    fn selection(
        &mut self,
        output: &str,
        entries: &[Entry],
        take: Option<NameList>,
        exclude: Option<NameList>,
    ) -> Option<Option<BTreeSet<String>>> {
        let (list, excluding) = match (take, exclude) {
            (None, None) => return Some(None),
            (Some(_), Some(e)) => {
                self.problem(
                    e.span().start,
                    format!("output {output:?}: a target takes `entries` or `exclude`, not both: keep one"),
                );
                return None;
            }
            (Some(t), None) => (t, false),
            (None, Some(e)) => (e, true),
        };
        let before = self.problems.len();
        let known: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        let mut names = BTreeSet::new();
        for name in list.get_ref() {
            if known.contains(name.get_ref()) {
                names.insert(name.get_ref().clone());
                continue;
            }
            let hint = suggest(name.get_ref(), &known).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
            let field = if excluding { "exclude" } else { "entries" };
            self.problem(
                name.span().start,
                format!(
                    "output {output:?}: target `{field}` names {:?}, which is not an entry of the output{hint}; entries: {}",
                    name.get_ref(),
                    known.join(", ")
                ),
            );
        }
        if excluding {
            names = known.into_iter().filter(|n| !names.contains(n)).collect();
        }
        if names.is_empty() && self.problems.len() == before {
            let why = if excluding { "`exclude` leaves no entry" } else { "`entries` is empty" };
            self.problem(list.span().start, format!("output {output:?}: the target takes nothing: {why}"));
        }
        (self.problems.len() == before).then_some(Some(names))
    }

    /// Problems a target kind found: at an entry's location, else the target's.
    fn target_problems(&mut self, target: &Location, problems: Problems) {
        for (at, message) in problems {
            self.problems.push(Problem::at(at.unwrap_or_else(|| target.clone()), message));
        }
    }
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
