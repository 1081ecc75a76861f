//! Rendering: (templates, snapshot) → rendered output + taint + what it read.
//!
//! Pure: no I/O happens here beyond reading `templates/` at compile time, so
//! every rule is tested with a hand-built [`Snapshot`]. Tera 1.20 is used
//! rather than 2.x: its API and error behaviour are stable and widely known,
//! and it exposes the parsed AST, which [`check`] walks to find unknown
//! functions/filters, the secret paths each output needs and recursion
//! *before* any source is contacted.
//!
//! Template functions ([`functions`]), bound to the snapshot being rendered:
//!
//! | function | returns |
//! |---|---|
//! | `key(name)` | the key's value; error if missing |
//! | `key_or(name, default)` | the value, or `default` |
//! | `keys(prefix)` | map of names under `prefix` (prefix stripped) → value, sorted |
//! | `exists(name)` | whether the key exists |
//! | `secret(path, field)` | one field of a Vault secret; error if missing |
//! | `secrets(path)` | map of every field of a secret |
//!
//! plus the variable `env`, Tera's filters and tests, `range` (bounded) and
//! `throw`. Secret paths must be string literals: cfgsync reads exactly the
//! paths the templates name, which is also all a least-privilege Vault
//! policy has to allow.
//!
//! **Taint**: an output whose rendering read any secret (through `secret`
//! or `secrets`) is tainted as a whole; every entry becomes secret
//! [`Content`], which cannot be printed.
//!
//! # The sandbox
//!
//! Templates are code that runs inside a process holding credentials and
//! write access to production, so what they can do is an allow-list:
//! - no process environment (`get_env` refused at validate and replaced at
//!   runtime), no clock, no randomness (not compiled in);
//! - no files but those under the config's `templates/` and the shipped
//!   [`library`]: `templates` itself is not a link, links below it resolve
//!   inside it, nothing cfgsync reads itself (config, credentials, source,
//!   state) is a template, and a template only its owner can read is
//!   refused in an output that reads no secret (see [`collect_template_files`]);
//! - no recursion: include/import/extends/macro cycles and chains deeper
//!   than [`check::MAX_DEPTH`] are refused at validate; so is text nesting
//!   blocks or brackets, or chaining operators, deeper than a stack can
//!   take ([`check::nesting_problem`]: Tera, the static checks and dropping
//!   a parsed template all recurse over the expression tree, which is as
//!   deep as an operator chain is long). Every recursion over input in the
//!   render path is bounded so; the one Tera does over values a template
//!   builds at run time (`{% set_global s = [s] %}` in a loop) cannot be
//!   bounded by a scan, and is contained by the render worker (below);
//! - [`Limits`]: bytes per entry and per output (checked as text is
//!   written), elements `range` may produce, and a time budget per output
//!   (checked on every write and function call). The service and the CLI
//!   also render in a separate worker process ([`sandbox`]) with a memory
//!   limit, so even what Tera buffers internally (a macro's output) cannot
//!   exhaust or abort cfgsync itself.
//!
//! # Errors are an allow-list
//!
//! A [`RenderError`] from an output that reads a secret never carries
//! Tera's message text, which can quote a value after any transformation
//! (`| lower`, `| replace`, `| truncate`, …; scrubbing exact values is not
//! enough). It says only what is known safe: output, env, entry, template
//! file, the kind of failure and names (the filter or function that failed,
//! the missing key or secret). Messages of cfgsync's own functions are
//! built from names and always shown, and so is the template text of a
//! `throw` (its file, line and literal parts, see [`thrown`]). Outputs
//! that read no secret get Tera's full message, with Tera's internal
//! template names replaced.

pub mod check;
mod functions;
pub mod library;
pub mod sandbox;
pub mod simple;
mod thrown;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tera::{Template, Tera};

use crate::config::{Config, ConfigError, EntryTemplate, LineIndex, Location, Problem};
use crate::secret::Content;
use crate::source::Snapshot;

/// Largest template file read from `templates/`.
const MAX_TEMPLATE_FILE_BYTES: u64 = 1024 * 1024;

/// Something a rendering read, recorded so callers know what an output
/// depends on (and, for the service, which changes concern it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Use {
    Key(String),
    KeyPrefix(String),
    Secret(String),
}

/// What a rendering needed but the snapshot did not have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Missing {
    Key(String),
    Secret(String),
    SecretField { path: String, field: String },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Key(k) => write!(f, "key {k:?} not found"),
            Missing::Secret(p) => write!(f, "secret {p:?} not found"),
            Missing::SecretField { path, field } => write!(f, "secret {path:?} has no field {field:?}"),
        }
    }
}

/// Which limit a rendering ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LimitHit {
    Time,
    EntrySize,
    OutputSize,
    Range,
    /// The render worker exceeded its memory limit or crashed.
    Worker,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitHit::Time => "rendering took longer than its time budget ([render] timeout)",
            LimitHit::EntrySize => "the entry is larger than [render] max_entry_size",
            LimitHit::OutputSize => "the output is larger than [render] max_output_size",
            LimitHit::Range => "range() was asked for more elements than [render] max_range allows",
            LimitHit::Worker => {
                "the render worker died (over [render] max_memory, or a crash); the service itself is unaffected"
            }
        })
    }
}

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RenderError {
    #[error("output {output:?}, env {env:?}, entry {entry:?}: {missing}")]
    Missing { output: String, env: String, entry: String, missing: Missing },
    /// `message` is Tera's text for outputs that read no secret, and only
    /// allow-listed words otherwise (see the module docs).
    #[error("output {output:?}, env {env:?}, entry {entry:?}{}: {message}", template.as_ref().map(|t| format!(" (template {t})")).unwrap_or_default())]
    Template { output: String, env: String, entry: String, template: Option<String>, message: String },
    #[error("output {output:?}, env {env:?}{}: {limit}", entry.as_ref().map(|e| format!(", entry {e:?}")).unwrap_or_default())]
    Limit { output: String, env: String, entry: Option<String>, limit: LimitHit },
    #[error("output {output:?}, env {env:?}: cannot render: {cause}")]
    Worker { output: String, env: String, cause: String },
}

/// One output rendered for one env.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub output: String,
    pub env: String,
    /// Entry name → rendered content (secret when `tainted`).
    pub entries: BTreeMap<String, Content>,
    /// True when any entry read a secret: the whole output is secret.
    pub tainted: bool,
    pub used: BTreeSet<Use>,
}

/// What a static look at an output's templates found.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Secret paths named by `secret`/`secrets` calls.
    pub secret_paths: BTreeSet<String>,
    /// Names written as literals in the templates (see [`check::Facts`]).
    pub literal_names: Arc<BTreeSet<String>>,
}

impl Analysis {
    /// Known before rendering: the output calls `secret` or `secrets`.
    pub fn reads_secrets(&self) -> bool {
        !self.secret_paths.is_empty()
    }
}

/// What a rendering may use: `[render]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entry_bytes: usize,
    pub max_output_bytes: usize,
    /// Per output.
    pub timeout: Duration,
    /// Elements `range()` may produce in one output's rendering.
    pub max_range: usize,
    /// Address space of the render worker process.
    pub max_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entry_bytes: 1024 * 1024,
            max_output_bytes: 8 * 1024 * 1024,
            timeout: Duration::from_secs(2),
            max_range: 100_000,
            max_memory: 1024 * 1024 * 1024,
        }
    }
}

struct CompiledOutput {
    name: String,
    envs: Vec<String>,
    /// (entry name, Tera template name), in entry order.
    entries: Vec<(String, String)>,
    analysis: Analysis,
}

/// Every template of a config, parsed and checked once at load.
pub struct Templates {
    tera: Tera,
    /// Inline entries that are simple templates ([`simple`]), by template
    /// name: rendered without Tera, and not in `tera`.
    simple: HashMap<String, simple::Simple>,
    /// Shared, so a worker's start-up frame can be built off the calling thread.
    outputs: Arc<Vec<CompiledOutput>>,
    limits: Limits,
    /// (name, text) of every template, for the render worker, which compiles
    /// the same set without reading any file.
    sources: Arc<Vec<(String, String)>>,
    /// Tells compiled sets apart (a reload makes a new one).
    id: u64,
}

/// The stack a thread parsing or rendering templates gets: Tera's parser and
/// renderer recurse; the nesting limits keep them well inside this.
const STACK_BYTES: usize = 64 * 1024 * 1024;

impl Templates {
    /// Parses the files under `templates/`, the shipped library and every
    /// inline entry, and checks them: syntax, unknown functions/filters/
    /// tests/arguments, forbidden functions, missing includes, recursion,
    /// non-literal secret paths. Every problem is reported.
    pub fn compile(config: &Config) -> Result<Self, ConfigError> {
        // Tera's parser recurses: give it a stack that the nesting limits fit in.
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("compile-templates".into())
                .stack_size(STACK_BYTES)
                .spawn_scoped(s, || Self::compile_here(config))
                .expect("spawning a thread")
                .join()
                .unwrap_or_else(|_| {
                    Err(Problem { location: None, message: "compiling templates failed unexpectedly".into() }.into())
                })
        })
    }

    /// Gathers the template texts, parses them, then analyses each
    /// output's entries and the templates they reach; every problem is
    /// reported, in that order.
    fn compile_here(config: &Config) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let Sources { all, tera: tera_sources, simple, origins, private } = Sources::collect(config, &mut problems);
        let (tera, parse_problems) = build_tera(&tera_sources, |name, offset, message| {
            let text = tera_sources.iter().find(|(n, _)| n == name).map_or("", |(_, t)| t.as_str());
            Problem { location: locate(name, &origins, offset.map(|o| position(text, o))), message }
        });
        drop(tera_sources);
        problems.extend(parse_problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }

        let mut analyzer = check::Analyzer::new(&tera);
        let mut users = Users::new();
        let compiler = OutputCompiler { config, tera: &tera, simple: &simple, private: &private };
        let outputs: Vec<CompiledOutput> = config
            .outputs
            .iter()
            .map(|output| compiler.compile(output, &mut analyzer, &mut users, &mut problems))
            .collect();
        problems.extend(template_problems(&analyzer, &users, &all, &origins));
        drop(analyzer);
        if !problems.is_empty() {
            problems.dedup();
            return Err(ConfigError { problems });
        }
        let (outputs, sources) = (Arc::new(outputs), Arc::new(all));
        Ok(Self { tera, simple, outputs, limits: config.render, sources, id: fastrand::u64(..) })
    }

    /// Whether rendering output `index` runs Tera: some entry is neither a
    /// key's bytes nor a [`simple`] template. Only such outputs need the
    /// render worker's containment ([`sandbox`]).
    pub fn runs_tera(&self, index: usize) -> bool {
        self.outputs[index].entries.iter().any(|(_, t)| !t.starts_with(KEY_PREFIX) && !self.simple.contains_key(t))
    }

    /// Whether any output runs Tera.
    pub fn any_runs_tera(&self) -> bool {
        (0..self.outputs.len()).any(|i| self.runs_tera(i))
    }

    /// The static analysis of output `index` (config order).
    pub fn analysis(&self, index: usize) -> &Analysis {
        &self.outputs[index].analysis
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The secret paths every output rendered for `env` may read.
    pub fn secret_paths(&self, env: &str) -> BTreeSet<String> {
        self.outputs
            .iter()
            .filter(|o| o.envs.iter().any(|e| e == env))
            .flat_map(|o| o.analysis.secret_paths.iter().cloned())
            .collect()
    }

    /// Renders output `index` for the snapshot's env, in this process and on
    /// this thread (see [`sandbox`] for rendering in a worker process).
    pub fn render(&self, index: usize, snapshot: &Arc<Snapshot>) -> Result<Rendered, RenderError> {
        let output = &self.outputs[index];
        let env = snapshot.env.clone();
        let reads_secrets = output.analysis.reads_secrets();
        let mut context = tera::Context::new();
        context.insert("env", &env);
        let scope = functions::Scope {
            names: reads_secrets.then(|| output.analysis.literal_names.clone()),
            snapshot: snapshot.clone(),
            log: Default::default(),
            deadline: Instant::now() + self.limits.timeout,
            range_budget: self.limits.max_range.into(),
        };
        let (result, mut log) = functions::with_scope(scope, || self.render_entries(output, &env, &context));
        match result {
            Ok(entries) => {
                let tainted = log.tainted;
                let entries = entries.into_iter().map(|(k, v)| (k, Content::new(v, tainted))).collect();
                Ok(Rendered { output: output.name.clone(), env, entries, tainted, used: log.used })
            }
            Err(failed) => {
                if let Some(message) = log.thrown.take() {
                    let secret = reads_secrets || log.tainted;
                    let shown = thrown::describe(&self.tera, &self.sources, &failed.template, &message, secret);
                    log.function_error = log.function_error.take().or(shown);
                }
                Err(failed.into_error(output, env, log, reads_secrets))
            }
        }
    }

    /// Renders every entry of `output` in turn (inside the render's scope),
    /// within the entry and output size limits; stops at the first failure.
    fn render_entries(
        &self,
        output: &CompiledOutput,
        env: &str,
        context: &tera::Context,
    ) -> Result<BTreeMap<String, Vec<u8>>, EntryFailure> {
        let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut total = 0usize;
        for (entry, template) in &output.entries {
            let fail = |failure| EntryFailure { entry: entry.clone(), template: template.clone(), failure };
            let room = self.limits.max_entry_bytes.min(self.limits.max_output_bytes.saturating_sub(total));
            if let Some(key) = template.strip_prefix(KEY_PREFIX) {
                let bytes = functions::key_bytes(key).map_err(|e| fail(Failure::Tera(e)))?;
                if bytes.len() > room {
                    return Err(fail(Failure::Limit(LimitHit::EntrySize)));
                }
                total += bytes.len();
                entries.insert(entry.clone(), bytes);
                continue;
            }
            let mut out = LimitedWriter { buf: Vec::new(), room, hit: None, writes: 0 };
            let rendered = match self.simple.get(template) {
                Some(simple) => simple.render(env, &mut out),
                None => self.tera.render_to(template, context, &mut out),
            };
            if let Some(hit) = out.hit {
                let hit = if hit == LimitHit::EntrySize && room < self.limits.max_entry_bytes {
                    LimitHit::OutputSize
                } else {
                    hit
                };
                return Err(fail(Failure::Limit(hit)));
            }
            if let Err(e) = rendered {
                return Err(fail(Failure::Tera(e)));
            }
            total += out.buf.len();
            entries.insert(entry.clone(), out.buf);
        }
        Ok(entries)
    }

    /// (name, text) of every template, for a worker compiling the same set.
    pub fn sources(&self) -> &[(String, String)] {
        &self.sources
    }

    /// Compiles exactly `sources` (already checked by [`Templates::compile`]
    /// in the parent process) for outputs described by `outputs`.
    pub fn from_sources(
        sources: Vec<(String, String)>,
        outputs: Vec<OutputSpec>,
        limits: Limits,
    ) -> Result<Self, String> {
        let mut simple = HashMap::new();
        let mut tera_sources = Vec::new();
        for (name, text) in &sources {
            match name.starts_with(INLINE_PREFIX).then(|| simple::parse(text)).flatten() {
                Some(s) => {
                    simple.insert(name.clone(), s);
                }
                None => tera_sources.push((name.clone(), text.clone())),
            }
        }
        let (tera, problems) = build_tera(&tera_sources, |name, _, message| Problem {
            location: None,
            message: format!("{name}: {message}"),
        });
        if let Some(p) = problems.first() {
            return Err(p.to_string());
        }
        let outputs = outputs
            .into_iter()
            .map(|(name, envs, entries, (secret_paths, literal_names))| CompiledOutput {
                name,
                envs,
                entries,
                analysis: Analysis { secret_paths, literal_names: Arc::new(literal_names) },
            })
            .collect();
        let (outputs, sources) = (Arc::new(outputs), Arc::new(sources));
        Ok(Self { tera, simple, outputs, limits, sources, id: fastrand::u64(..) })
    }
}

/// An output as the render worker rebuilds it: name, envs, (entry,
/// template) pairs, (secret paths, literal names).
pub type OutputSpec = (String, Vec<String>, Vec<(String, String)>, (BTreeSet<String>, BTreeSet<String>));

enum Failure {
    Tera(tera::Error),
    Limit(LimitHit),
}

/// The entry a render stopped at: its name, its template, and why.
struct EntryFailure {
    entry: String,
    template: String,
    failure: Failure,
}

impl EntryFailure {
    /// The error to report, from what the render's `log` knows: a missing
    /// name, a limit hit, or Tera's failure. Where the output reads
    /// secrets, only allow-listed text (see "Errors are an allow-list").
    fn into_error(
        self,
        output: &CompiledOutput,
        env: String,
        log: functions::RenderLog,
        reads_secrets: bool,
    ) -> RenderError {
        let EntryFailure { entry, template, failure } = self;
        let output_names = output.analysis.literal_names.clone();
        let output = output.name.clone();
        if let Some(missing) = log.missing {
            let (Missing::Key(name) | Missing::Secret(name) | Missing::SecretField { field: name, .. }) = &missing;
            if !reads_secrets || output_names.contains(name) {
                return RenderError::Missing { output, env, entry, missing };
            }
            let what = match missing {
                Missing::Key(_) => "a key",
                Missing::Secret(_) | Missing::SecretField { .. } => "a secret field",
            };
            let message = format!(
                "{what} was not found; its name was computed while rendering and is withheld, as this output reads secrets"
            );
            return RenderError::Template { output, env, entry, template: None, message };
        }
        let limit = match failure {
            Failure::Limit(hit) => Some(hit),
            Failure::Tera(_) => log.limit,
        };
        if let Some(limit) = limit {
            return RenderError::Limit { output, env, entry: Some(entry), limit };
        }
        let Failure::Tera(e) = failure else { unreachable!("limits are handled above") };
        let message = match &log.function_error {
            Some(ours) => ours.clone(),
            None if reads_secrets || log.tainted => allow_listed(&e),
            None => without_internal_names(&tera_error_text(&e)),
        };
        let template = (!template.starts_with(INLINE_PREFIX) && !template.starts_with(KEY_PREFIX)).then_some(template);
        RenderError::Template { output, env, entry, template, message }
    }
}

impl Rendered {
    /// The same rendering with only the entries named in `names` (a
    /// target's `entries`/`exclude`). Taint is the output's: an output that
    /// read a secret is secret as a whole, whichever entries a target takes.
    pub fn select(&self, names: &BTreeSet<String>) -> Rendered {
        Rendered {
            output: self.output.clone(),
            env: self.env.clone(),
            entries: self
                .entries
                .iter()
                .filter(|(k, _)| names.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tainted: self.tainted,
            used: self.used.clone(),
        }
    }
}

/// Every template text of a config, and where each came from.
struct Sources {
    /// (name, text) of every template, simple ones included: what the
    /// render worker compiles.
    all: Vec<(String, String)>,
    /// What goes to Tera: all but the simple inline templates.
    tera: Vec<(String, String)>,
    /// Inline entries that are simple templates, by template name.
    simple: HashMap<String, simple::Simple>,
    origins: HashMap<String, Origin>,
    /// Private template files, by name: their paths as shown.
    private: HashMap<String, PathBuf>,
}

impl Sources {
    /// The files under `templates/`, every inline entry, and the shipped
    /// library when something may use it.
    fn collect(config: &Config, problems: &mut Vec<Problem>) -> Self {
        let mut sources = Sources {
            all: Vec::new(),
            tera: Vec::new(),
            simple: HashMap::new(),
            origins: HashMap::new(),
            private: HashMap::new(),
        };
        sources.add_files(config, problems);
        sources.add_inline(config);
        sources.add_library();
        sources
    }

    fn add_files(&mut self, config: &Config, problems: &mut Vec<Problem>) {
        let mut files = Vec::new();
        collect_template_files(config, &mut files, problems);
        for file in files {
            if file.private {
                self.private.insert(file.name.clone(), file.shown.clone());
            }
            self.origins.insert(file.name.clone(), Origin::File(file.shown));
            self.all.push((file.name.clone(), file.text.clone()));
            self.tera.push((file.name, file.text));
        }
    }

    /// Only what is not a simple template goes to Tera.
    fn add_inline(&mut self, config: &Config) {
        for output in &config.outputs {
            for entry in &output.entries {
                let EntryTemplate::Inline(text) = &entry.template else { continue };
                let name = inline_name(&output.name, &entry.name);
                self.all.push((name.clone(), text.clone()));
                match simple::parse(text) {
                    Some(s) => {
                        self.simple.insert(name, s);
                    }
                    None => {
                        self.origins.insert(name.clone(), Origin::Inline(entry.location.clone()));
                        self.tera.push((name, text.clone()));
                    }
                }
            }
        }
    }

    /// The shipped library, when something may use it: Tera 1 names every
    /// include, import and extends as a literal, so a template that uses
    /// `cfgsync/x.tera` contains that text.
    fn add_library(&mut self) {
        if !self.tera.iter().any(|(_, text)| text.contains(library::PREFIX)) {
            return;
        }
        for (name, text) in library::SHIPPED {
            if !self.origins.contains_key(*name) {
                self.origins.insert(name.to_string(), Origin::Shipped);
                self.all.push((name.to_string(), text.to_string()));
                self.tera.push((name.to_string(), text.to_string()));
            }
        }
    }
}

/// Template name → the first (output, entry) that uses it: a template's
/// problems are reported once, at the template, with its first user.
type Users = HashMap<String, (String, String)>;

/// What compiling an output reads: the config and the parsed templates.
struct OutputCompiler<'a> {
    config: &'a Config,
    tera: &'a Tera,
    simple: &'a HashMap<String, simple::Simple>,
    private: &'a HashMap<String, PathBuf>,
}

/// What an entry renders from, once its template is known to exist.
enum EntrySource<'a> {
    /// A key's bytes.
    Key(&'a String),
    /// A simple inline template (named).
    Simple(String, &'a simple::Simple),
    /// A Tera template (named): inline, or a file under `templates/`.
    Tera(String),
}

impl OutputCompiler<'_> {
    /// The output's entries and its static analysis; its problems go to
    /// `problems`, and the templates it reaches to `users`.
    fn compile(
        &self,
        output: &crate::config::Output,
        analyzer: &mut check::Analyzer,
        users: &mut Users,
        problems: &mut Vec<Problem>,
    ) -> CompiledOutput {
        let mut analysis = Analysis::default();
        let mut literal_names = BTreeSet::new();
        let mut entries = Vec::new();
        let mut private_used = Vec::new();
        for entry in &output.entries {
            let source = match self.source_of(output, entry) {
                Ok(source) => source,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let template_name = match source {
                EntrySource::Key(k) => {
                    literal_names.insert(k.clone());
                    format!("{KEY_PREFIX}{k}")
                }
                EntrySource::Simple(name, s) => {
                    analysis.secret_paths.extend(s.secret_paths().map(str::to_owned));
                    s.literal_names(&mut literal_names);
                    name
                }
                EntrySource::Tera(name) => {
                    for t in analyzer.reach(&name) {
                        if let Some(path) = self.private.get(&t) {
                            private_used.push((entry.location.clone(), entry.name.clone(), path.display().to_string()));
                        }
                        users.entry(t).or_insert_with(|| (output.name.clone(), entry.name.clone()));
                    }
                    analysis.secret_paths.extend(analyzer.secret_paths(&name));
                    literal_names.extend(analyzer.literal_names(&name));
                    name
                }
            };
            entries.push((entry.name.clone(), template_name));
        }
        analysis.literal_names = Arc::new(literal_names);
        secret_safety(output, &analysis, problems);
        private_template_problems(output, &analysis, &private_used, problems);
        CompiledOutput { name: output.name.clone(), envs: output.envs.clone(), entries, analysis }
    }

    /// What `entry` renders from; a template file that is not there is a
    /// problem at the entry.
    fn source_of<'e>(
        &'e self,
        output: &crate::config::Output,
        entry: &'e crate::config::Entry,
    ) -> Result<EntrySource<'e>, Problem> {
        match &entry.template {
            EntryTemplate::Key(k) => Ok(EntrySource::Key(k)),
            EntryTemplate::Inline(_) => {
                let name = inline_name(&output.name, &entry.name);
                Ok(match self.simple.get(&name) {
                    Some(s) => EntrySource::Simple(name, s),
                    None => EntrySource::Tera(name),
                })
            }
            EntryTemplate::File(f) if self.tera.templates.contains_key(f) => Ok(EntrySource::Tera(f.clone())),
            EntryTemplate::File(f) => Err(Problem::at(
                entry.location.clone(),
                format!(
                    "output {:?}, entry {:?}: template file {} not found",
                    output.name,
                    entry.name,
                    self.config.templates_dir.join(f).display()
                ),
            )),
        }
    }
}

/// The findings of the static checks in every template some output uses,
/// and of the include/import graph, each at its template, naming the
/// first output and entry that use it.
fn template_problems(
    analyzer: &check::Analyzer,
    users: &Users,
    sources: &[(String, String)],
    origins: &HashMap<String, Origin>,
) -> Vec<Problem> {
    let mut findings: Vec<check::Finding> = Vec::new();
    let mut names: Vec<&String> = users.keys().collect();
    names.sort();
    for name in names {
        if let Some(f) = analyzer.facts(name) {
            findings.extend(f.findings.iter().cloned());
        }
    }
    findings.extend(analyzer.graph_findings(&|name| shown_name(name, origins)));
    findings
        .into_iter()
        .map(|finding| {
            let text = sources.iter().find(|(n, _)| *n == finding.template).map_or("", |(_, t)| t.as_str());
            let at = finding.needle.as_deref().and_then(|n| text.find(n)).map(|o| position(text, o));
            let location = locate(&finding.template, origins, at);
            let message = match (users.get(&finding.template), origins.get(&finding.template)) {
                (Some((o, e)), Some(Origin::Inline(_)) | None) => {
                    format!("output {o:?}, entry {e:?}: {}", finding.message)
                }
                (Some((o, e)), Some(_)) => format!("{} (used by output {o:?}, entry {e:?})", finding.message),
                (None, _) => finding.message,
            };
            Problem { location, message }
        })
        .collect()
}

/// Parses every `(name, text)` once and links them (includes, extends,
/// imports); `problem(name, byte offset, message)` makes the problems.
fn build_tera(
    sources: &[(String, String)],
    problem: impl Fn(&str, Option<usize>, String) -> Problem,
) -> (Tera, Vec<Problem>) {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![]);
    functions::register(&mut tera);
    let mut problems = Vec::new();
    for (name, text) in sources {
        if let Some((offset, message)) = check::nesting_problem(text) {
            problems.push(problem(name, Some(offset), format!("template too deeply nested: {message}")));
            continue;
        }
        match Template::new(name, None, text) {
            // Tera's own `add_raw_template` re-links every template after
            // each one; inserting parsed templates and linking once keeps
            // compilation linear in the number of templates.
            Ok(t) => {
                tera.templates.insert(name.clone(), t);
            }
            Err(e) => {
                let offset = syntax_position(&e).map(|(l, c)| offset_of(text, l, c));
                problems.push(problem(name, offset, format!("template syntax error: {}", syntax_message(&e))));
            }
        }
    }
    if problems.is_empty() {
        // Tera links `extends` chains by recursion, once per template:
        // refuse a chain deeper than the graph check allows before it does.
        if let Some((name, message)) = extends_problem(&tera) {
            problems.push(problem(name, None, message));
            return (tera, problems);
        }
        if let Err(e) = tera.build_inheritance_chains() {
            problems.push(problem("", None, without_internal_names(&tera_error_text(&e))));
        } else if let Err(e) = tera.check_macro_files() {
            problems.push(problem("", None, without_internal_names(&tera_error_text(&e))));
        }
    }
    (tera, problems)
}

/// Refuses what Tera's linking of `extends` chains would recurse on without
/// end or too deep: it follows parents by recursion, once per template, and
/// stops at a cycle only when the chain comes back to the template it
/// started from (`a` → `b` → `c` → `b` never does).
fn extends_problem(tera: &Tera) -> Option<(&str, String)> {
    let mut names: Vec<&String> = tera.templates.keys().collect();
    names.sort();
    for name in names {
        let mut seen: Vec<&str> = vec![name.as_str()];
        let mut parent = tera.templates[name].parent.as_deref();
        while let Some(p) = parent {
            if seen.contains(&p) {
                seen.push(p);
                return Some((name.as_str(), format!("templates extend each other in a cycle: {}", seen.join(" → "))));
            }
            seen.push(p);
            if seen.len() - 1 > check::MAX_DEPTH {
                return Some((name.as_str(), format!("template extends a chain more than {} deep", check::MAX_DEPTH)));
            }
            parent = tera.templates.get(p).and_then(|t| t.parent.as_deref());
        }
    }
    None
}

/// Collects rendered text, refusing to grow past `room` bytes and stopping
/// once the rendering's time budget is spent.
struct LimitedWriter {
    buf: Vec<u8>,
    room: usize,
    hit: Option<LimitHit>,
    /// Writes so far: the clock is read on every [`DEADLINE_EVERY`]th one,
    /// not on each (Tera writes every literal and value separately, and
    /// reading the clock was 6% of rendering a 1,000-line loop). A template
    /// that stops writing is stopped by its function calls' checks or the
    /// parent's kill ([`sandbox`]).
    writes: u32,
}

/// How often [`LimitedWriter`] looks at the clock, in writes.
const DEADLINE_EVERY: u32 = 32;

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.room {
            self.hit = Some(LimitHit::EntrySize);
            return Err(std::io::Error::other("render size limit"));
        }
        self.writes = self.writes.wrapping_add(1);
        if self.writes % DEADLINE_EVERY == 1 && functions::check_deadline_now().is_err() {
            self.hit = Some(LimitHit::Time);
            return Err(std::io::Error::other("render time budget"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses, before any source is read, what can already be known to be
/// unsafe: an output that reads a secret going where its kind says a
/// secret must not go ([`crate::targets::Kind::secret_problem`]: a
/// ConfigMap, a file readable by others). Targets check the rendered
/// taint again in every case (a template can only be judged fully by
/// rendering it).
fn secret_safety(output: &crate::config::Output, analysis: &Analysis, problems: &mut Vec<Problem>) {
    let Some(secret) = analysis.secret_paths.iter().next() else { return };
    for target in &output.targets {
        if let Some(message) = target.kind.secret_problem(&output.name, secret) {
            problems.push(Problem::at(target.location.clone(), message));
        }
    }
}

/// What a failed render that may have read a secret may say: the kinds of
/// failure in Tera's error chain and the names in them (of filters,
/// functions, tests, templates), never a message text.
fn allow_listed(e: &tera::Error) -> String {
    use tera::ErrorKind;
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<tera::Error>() {
            let part = match &t.kind {
                ErrorKind::CallFunction(name) => Some(format!("function `{name}` failed")),
                ErrorKind::CallFilter(name) => Some(format!("filter `{name}` failed")),
                ErrorKind::CallTest(name) => Some(format!("test `{name}` failed")),
                ErrorKind::TemplateNotFound(name) => Some(format!("template {} not found", shown_plain(name))),
                ErrorKind::FilterNotFound(name) => Some(format!("unknown filter `{name}`")),
                ErrorKind::TestNotFound(name) => Some(format!("unknown test `{name}`")),
                ErrorKind::FunctionNotFound(name) => Some(format!("unknown function `{name}`")),
                ErrorKind::MissingParent { parent, .. } => Some(format!("parent template {parent} not found")),
                ErrorKind::CircularExtend { tpl, .. } => Some(format!("template {tpl} extends itself")),
                ErrorKind::Json(_) => Some("a value could not be converted".to_owned()),
                ErrorKind::Utf8Conversion { .. } => Some("the rendered text is not UTF-8".to_owned()),
                ErrorKind::Msg(text) => safe_tera_message(text),
                _ => None,
            };
            parts.extend(part);
        }
        cur = err.source();
    }
    parts.dedup();
    let mut text = if parts.is_empty() { "the template failed".to_owned() } else { parts.join(": ") };
    text.push_str(" (Tera's message is withheld: this output reads secrets)");
    text
}

/// The few Tera messages whose variable parts come from template text only.
fn safe_tera_message(text: &str) -> Option<String> {
    let rest = text.strip_prefix("Variable `")?;
    let name = &rest[..rest.find('`')?];
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    plain.then(|| format!("variable `{name}` not found"))
}

const INLINE_PREFIX: &str = "@output/";
/// An entry that is a key's bytes, not a template (`{ key = "name" }`).
const KEY_PREFIX: &str = "@key:";

fn inline_name(output: &str, entry: &str) -> String {
    format!("{INLINE_PREFIX}{output}/{entry}")
}

/// Where a template came from.
enum Origin {
    File(PathBuf),
    Shipped,
    Inline(Location),
}

fn shown_name(name: &str, origins: &HashMap<String, Origin>) -> String {
    match origins.get(name) {
        Some(Origin::File(p)) => p.display().to_string(),
        Some(Origin::Shipped) => format!("{name} (shipped with cfgsync)"),
        Some(Origin::Inline(_)) | None => shown_plain(name),
    }
}

/// A template name as a user knows it: inline entries by output and entry.
fn shown_plain(name: &str) -> String {
    match name.strip_prefix(INLINE_PREFIX).and_then(|r| r.split_once('/')) {
        Some((output, entry)) => format!("output {output:?} entry {entry:?}"),
        None => name.to_owned(),
    }
}

/// Tera's text with its internal template names (`'@output/api/HOST'`,
/// `__tera_one_off`) replaced by what a user knows them as.
pub fn without_internal_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&format!("'{INLINE_PREFIX}")) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('\'') {
            Some(end) => {
                out.push_str(&shown_plain(&after[..end]));
                rest = &after[end + 1..];
            }
            None => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace(" while rendering 'the field'", "")
        .replace("'__tera_one_off'", "the field")
        .replace("__tera_one_off", "the field")
}

/// A template file as read from `templates/`.
struct TemplateFile {
    /// Its name for Tera: the path below `templates/` as listed (a link's
    /// own name, not its target's).
    name: String,
    /// The path as shown in messages.
    shown: PathBuf,
    text: String,
    /// Others cannot read it (no `o+r`): see [`private_template_problems`].
    private: bool,
}

/// Reads the template files under `dir` (sorted, hidden files skipped).
///
/// What a template can read is `templates/` and nothing else, whatever the
/// links, because its text ends up in outputs that others read:
/// - `templates` itself must be a real directory, not a link (`templates ->
///   .` made the config's directory, with `password_file` in it, the
///   templates; `templates -> /elsewhere` made any directory one);
/// - a link below it is followed only to a file or directory inside it,
///   so the layout of a Kubernetes ConfigMap volume works (`api.tera ->
///   ..data/api.tera`, `parts -> ..data/parts`, `..data -> ..2026_12_07_…`,
///   all inside the mount; hidden names are not listed themselves) and
///   `sub -> /etc` does not;
/// - the resolved file is then opened from `templates/` one component at a
///   time without following links (`O_NOFOLLOW`), so swapping a directory
///   for a link after the check does not redirect the read, and only a
///   regular file is opened (a FIFO would block the read);
/// - never a file cfgsync itself reads ([`protected_paths`]: the config, a
///   credential file, the embedded source, the state), even inside
///   `templates/`.
fn collect_template_files(config: &Config, out: &mut Vec<TemplateFile>, problems: &mut Vec<Problem>) {
    let dir = &config.templates_dir;
    match std::fs::symlink_metadata(dir) {
        Err(_) => return,
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_default();
            problems.push(Problem {
                location: None,
                message: format!(
                    "{} is a symlink (to {target}); cfgsync reads templates only from a real directory, so that a link cannot make other files (the config, a credential) templates: replace the link with the directory, or mount the templates there",
                    dir.display()
                ),
            });
            return;
        }
        Ok(meta) if !meta.is_dir() => return,
        Ok(_) => {}
    }
    let Ok(root) = dir.canonicalize() else { return };
    let protected = protected_paths(config);
    let mut todo = vec![root.clone()];
    let mut walked: std::collections::HashSet<PathBuf> = [root.clone()].into();
    while let Some(current) = todo.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem { location: None, message: format!("cannot read {}: {e}", current.display()) });
                continue;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            let shown = dir.join(path.strip_prefix(&root).unwrap_or(&path));
            let refuse = |problems: &mut Vec<Problem>, why: &str| {
                problems.push(Problem { location: None, message: format!("template {}: {why}", shown.display()) });
            };
            let Ok(real) = path.canonicalize() else {
                refuse(problems, "a dangling symlink");
                continue;
            };
            let Ok(inside) = real.strip_prefix(&root) else {
                refuse(problems, "a symlink to a file outside templates/; templates may only read templates/");
                continue;
            };
            if let Some((_, what)) = protected.paths.iter().find(|(p, _)| real.starts_with(p)) {
                refuse(problems, &format!("is {what}, which cfgsync reads itself; a template may never read it"));
                continue;
            }
            let Ok(meta) = std::fs::metadata(&real) else { continue };
            if meta.is_dir() {
                // Each directory once, however many links lead to it (a
                // link to an ancestor would loop).
                if walked.insert(real) {
                    todo.push(path);
                }
                continue;
            }
            let Ok(rel) = path.strip_prefix(&root) else { continue };
            let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            match read_below(&root, inside) {
                Ok(read) => match protected.inodes.iter().find(|(inode, _)| *inode == read.inode) {
                    Some((_, what)) => refuse(
                        problems,
                        &format!("is {what} (a hard link), which cfgsync reads itself; a template may never read it"),
                    ),
                    None => out.push(TemplateFile { name, shown, text: read.text, private: read.mode & 0o004 == 0 }),
                },
                Err(why) => refuse(problems, &why),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
}

/// A file read by [`read_below`].
struct ReadFile {
    text: String,
    mode: u32,
    /// (device, inode).
    inode: (u64, u64),
}

/// Reads the regular file `root/rel` (`rel` free of links, as resolved),
/// opening every component from its parent without following a link.
fn read_below(root: &Path, rel: &Path) -> Result<ReadFile, String> {
    use rustix::fs::{CWD, FileType, Mode, OFlags};
    use std::io::Read;
    let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let changed =
        |e: rustix::io::Errno| format!("cannot be read without following a link ({e}): was it just replaced?");
    let mut fd = rustix::fs::openat(CWD, root, dir_flags, Mode::empty()).map_err(changed)?;
    let mut components = rel.components().peekable();
    while let Some(c) = components.next() {
        let name = c.as_os_str();
        if components.peek().is_some() {
            fd = rustix::fs::openat(&fd, name, dir_flags, Mode::empty()).map_err(changed)?;
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let file = rustix::fs::openat(&fd, name, flags, Mode::empty()).map_err(changed)?;
        let st = rustix::fs::fstat(&file).map_err(|e| format!("cannot be read: {e}"))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err("not a regular file".to_owned());
        }
        if st.st_size as u64 > MAX_TEMPLATE_FILE_BYTES {
            return Err("larger than 1 MiB".to_owned());
        }
        let mut text = String::new();
        std::fs::File::from(file)
            .take(MAX_TEMPLATE_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read: {e}"))?;
        if text.len() as u64 > MAX_TEMPLATE_FILE_BYTES {
            return Err("larger than 1 MiB".to_owned());
        }
        return Ok(ReadFile { text, mode: st.st_mode & 0o7777, inode: (st.st_dev, st.st_ino) });
    }
    Err("not a file".to_owned())
}

/// The files and directories cfgsync reads or writes itself, resolved, and
/// what each is: no template may be one of them or inside one.
fn protected_paths(config: &Config) -> Protected {
    let mut paths: Vec<(&Path, &'static str)> =
        vec![(&config.path, "the config file"), (&config.state_dir, "cfgsync's state directory")];
    match &config.keys {
        crate::config::KeysSource::Files(dir) => paths.push((dir, "the embedded source's directory")),
        crate::config::KeysSource::Etcd(etcd) => {
            paths.extend(etcd.password_file.as_deref().map(|p| (p, "the etcd password_file")))
        }
    }
    match &config.secrets {
        Some(crate::config::SecretsSource::Files(dir)) => paths.push((dir, "the embedded source's directory")),
        Some(crate::config::SecretsSource::Vault(vault)) => match &vault.auth {
            crate::config::VaultAuth::Token { token_file, .. } => {
                paths.extend(token_file.as_deref().map(|p| (p, "the vault token_file")))
            }
            crate::config::VaultAuth::AppRole { role_id_file, secret_id_file, .. } => {
                paths.extend(role_id_file.as_deref().map(|p| (p, "the vault role_id_file")));
                paths.extend(secret_id_file.as_deref().map(|p| (p, "the vault secret_id_file")));
            }
            crate::config::VaultAuth::Kubernetes { token_file, .. }
            | crate::config::VaultAuth::Jwt { token_file, .. } => paths.push((token_file, "the vault token_file")),
        },
        None => {}
    }
    paths.extend(config.kubernetes.kubeconfig.as_deref().map(|p| (p, "the kubeconfig")));
    // As resolved (relative paths are relative to where cfgsync runs, as
    // when it reads them), and by inode: a hard link is the same file.
    let mut out = Protected::default();
    for (path, what) in paths {
        if let Ok(real) = path.canonicalize() {
            if let Ok(meta) = std::fs::metadata(&real) {
                use std::os::unix::fs::MetadataExt;
                out.inodes.push(((meta.dev(), meta.ino()), what));
            }
            out.paths.push((real, what));
        }
    }
    out
}

/// What [`protected_paths`] found.
#[derive(Default)]
struct Protected {
    /// Resolved paths: nothing at or below them is a template.
    paths: Vec<(PathBuf, &'static str)>,
    /// (device, inode) of each: no hard link to them is a template either.
    inodes: Vec<((u64, u64), &'static str)>,
}

/// Refuses a template that only its owner (or group) can read in an output
/// that reads no secret.
///
/// Decision: refuse rather than taint. A file kept from others says its
/// text is not for everyone, but an output that reads no secret is written
/// where others read it (a `0644` file, a ConfigMap, a plain CI variable,
/// a plan's diff): copying it there would publish what its mode protects.
/// Treating the output as tainted instead would silently turn a ConfigMap
/// target into a validate error about a secret nobody named, and mask the
/// plans of a file that is private only because of a umask. So `validate`
/// says which template and how to fix it: make the template world-readable
/// if it holds nothing secret, or keep the secret in the secret source. An
/// output that reads a secret is tainted as a whole anyway, and may use
/// private templates.
fn private_template_problems(
    output: &crate::config::Output,
    analysis: &Analysis,
    private_used: &[(Location, String, String)],
    problems: &mut Vec<Problem>,
) {
    if analysis.reads_secrets() {
        return;
    }
    for (location, entry, template) in private_used {
        problems.push(Problem::at(
            location.clone(),
            format!(
                "output {:?}, entry {entry:?}: template {template} can be read only by its owner or group, but the output reads no secret and is written where others can read it: make the template world-readable (chmod 0644) if it holds no secret, or keep the secret in the secret source and read it with secret()",
                output.name
            ),
        ));
    }
}

/// Where a template problem is: the template file, or for an inline entry
/// the entry's place in the config (with the position inside it).
fn locate(template: &str, origins: &HashMap<String, Origin>, position: Option<(usize, usize)>) -> Option<Location> {
    match origins.get(template)? {
        Origin::File(path) => {
            let (line, column) = position.unwrap_or((1, 1));
            Some(Location { file: path.clone(), line, column })
        }
        Origin::Shipped => None,
        Origin::Inline(at) => Some(match position {
            // Inline templates are TOML strings: line N of the template is line
            // N-1 after the string starts; on the first line, skip the quote.
            Some((1, col)) => Location { column: at.column + col, ..at.clone() },
            Some((line, col)) => Location { line: at.line + line - 1, column: col, ..at.clone() },
            None => at.clone(),
        }),
    }
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_column(text, offset)
}

/// The byte offset of 1-based (line, column) in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    let rest = &text[start.min(text.len())..];
    start + rest.char_indices().nth(column.saturating_sub(1)).map_or(rest.len(), |(i, _)| i)
}

/// The `--> line:col` of a pest parse error, when Tera has one.
fn syntax_position(e: &tera::Error) -> Option<(usize, usize)> {
    let text = tera_error_text(e);
    let rest = &text[text.find("--> ")? + 4..];
    let end = rest.find(|c: char| !c.is_ascii_digit() && c != ':').unwrap_or(rest.len());
    let (l, c) = rest[..end].split_once(':')?;
    Some((l.parse().ok()?, c.parse().ok()?))
}

/// The parser's own words ("expected ..."), without pest's drawing of the
/// offending line: the location is reported separately.
fn syntax_message(e: &tera::Error) -> String {
    let text = tera_error_text(e);
    match text.rfind(" = ") {
        Some(i) if text.contains("--> ") => text[i + 3..].trim().to_owned(),
        _ => without_internal_names(&text),
    }
}

/// A Tera error with its whole cause chain on one line.
pub fn tera_error_text(e: &tera::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.retain(|p| !(p.starts_with("Failed to render '") && p.ends_with('\'')));
    parts.join(": ").split('\n').map(str::trim_end).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ")
}

/// A short description of bytes that are not text, for messages.
pub fn describe_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(t) => match t.find('\0') {
            Some(i) => format!("a NUL character (at byte {i})"),
            None => "text".to_owned(),
        },
        Err(e) => format!("bytes that are not UTF-8 (at byte {})", e.valid_up_to()),
    }
}

/// Renders a file target's `check_cmd` (with `src`, the staged file's path,
/// already shell-quoted) or `reload_cmd` (without) for `env`.
///
/// Decision: commands are templates like `path`, rendered per env in the
/// same sandbox, with only their variables: `reload_cmd = "systemctl
/// reload api@{{ env }}"` runs `… api@prod`, never the braces (the shell
/// would have run `{{ env }}` as text). They can name no key or secret
/// (render_field refuses functions), so no value from a source reaches a
/// shell; env names are letters, digits, `-` and `_`, and `src` is quoted.
/// `validate` renders them for every env, so a typo is an error at the
/// config's line, not at the first write.
pub fn render_command(template: &str, env: &str, src: Option<&str>) -> Result<String, String> {
    match src {
        Some(src) => render_field(template, &[("env", env), ("src", src)]),
        None => render_field(template, &[("env", env)]),
    }
}

/// Renders a templated config field (`path`, `context`, a policy name …)
/// with only the given variables, in the same sandbox as entries: no
/// environment, no files, no recursion.
pub fn render_field(template: &str, vars: &[(&str, &str)]) -> Result<String, String> {
    if !template.contains("{{") && !template.contains("{%") {
        return Ok(template.to_owned());
    }
    if let Some(done) = simple::substitute(template, vars) {
        return Ok(done);
    }
    thread_local! {
        /// Fields parsed on this thread, by text: a config of thousands of
        /// targets templates the same few shapes per env, and a `Tera` with
        /// its built-ins is costly to set up.
        static FIELDS: std::cell::RefCell<(Tera, HashMap<String, String>)> = std::cell::RefCell::new({
            let mut tera = Tera::default();
            tera.autoescape_on(vec![]);
            functions::register(&mut tera);
            (tera, HashMap::new())
        });
    }
    FIELDS.with(|cell| {
        let (tera, names) = &mut *cell.borrow_mut();
        let name = match names.get(template) {
            Some(n) => n.clone(),
            None => {
                if let Some((_, message)) = check::nesting_problem(template) {
                    return Err(format!("too deeply nested: {message}"));
                }
                let name = format!("the field {}", names.len());
                let parsed = Template::new(&name, None, template).map_err(|e| syntax_message(&e))?;
                let facts = check::facts(tera, &name, &parsed);
                if let Some(f) = facts.findings.first() {
                    return Err(f.message.clone());
                }
                if !facts.needs.is_empty() || !facts.secret_paths.is_empty() || !facts.edges.is_empty() {
                    return Err("a config field can only use its variables".into());
                }
                tera.templates.insert(name.clone(), parsed);
                names.insert(template.to_owned(), name.clone());
                name
            }
        };
        let mut ctx = tera::Context::new();
        for (k, v) in vars {
            ctx.insert(*k, v);
        }
        tera.render(&name, &ctx).map_err(|e| {
            without_internal_names(&tera_error_text(&e)).replace(&format!(" while rendering '{name}'"), "")
        })
    })
}

#[cfg(test)]
mod tests;
