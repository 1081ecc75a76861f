//! Rendering: (templates, snapshot) → rendered output + taint + what it read.
//!
//! Pure: no I/O happens here, so every rule is tested with a hand-built
//! [`Snapshot`]. Tera 1.20 is used rather than 2.x: its API and error
//! behaviour are stable and widely known, and it exposes the parsed AST
//! (`tera::ast`), which [`Templates::compile`] walks to find unknown
//! functions/filters and the secret paths each output needs *before* any
//! source is contacted.
//!
//! Template functions, bound per env to that env's snapshot:
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
//! plus the variable `env`. Secret paths must be string literals: cfgsync
//! reads exactly the paths the templates name, which is also all a
//! least-privilege Vault policy has to allow.
//!
//! **Taint**: an output whose rendering read any secret (through `secret`
//! or `secrets`) is tainted as a whole; taint decides masking in `plan`,
//! file modes, and later which targets may receive it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tera::ast::{Expr, ExprVal, FunctionCall, Node};
use tera::{Tera, Value};

use crate::config::{Config, ConfigError, EntryTemplate, Location, Problem};
use crate::source::Snapshot;

const FUNCTIONS: [&str; 6] = ["key", "key_or", "keys", "exists", "secret", "secrets"];

/// Something a rendering read, recorded so callers know what an output
/// depends on (and, for the service, which changes concern it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    Key(String),
    KeyPrefix(String),
    Secret(String),
}

/// What a rendering needed but the snapshot did not have.
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("output {output:?}, env {env:?}, entry {entry:?}: {missing}")]
    Missing { output: String, env: String, entry: String, missing: Missing },
    #[error("output {output:?}, env {env:?}, entry {entry:?}: {message}")]
    Template { output: String, env: String, entry: String, message: String },
}

/// One output rendered for one env.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub output: String,
    pub env: String,
    /// Entry name → rendered text.
    pub entries: BTreeMap<String, String>,
    /// True when any entry read a secret: the whole output is secret.
    pub tainted: bool,
    pub used: BTreeSet<Use>,
}

/// What a static look at an output's templates found.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Secret paths named by `secret`/`secrets` calls.
    pub secret_paths: BTreeSet<String>,
}

impl Analysis {
    /// Known before rendering: the output calls `secret` or `secrets`.
    pub fn reads_secrets(&self) -> bool {
        !self.secret_paths.is_empty()
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
    outputs: Vec<CompiledOutput>,
}

impl Templates {
    /// Parses the files under `templates/` and every inline entry, and
    /// checks them: syntax, unknown functions/filters/tests, missing
    /// includes, non-literal secret paths. Every problem is reported.
    pub fn compile(config: &Config) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        register_placeholders(&mut tera);

        // Source text by template name, to locate problems the AST cannot.
        let mut sources: HashMap<String, (PathBuf, String)> = HashMap::new();
        let mut files = Vec::new();
        if config.templates_dir.is_dir() {
            collect_files(&config.templates_dir, &config.templates_dir, &mut files, &mut problems);
        }
        let mut raw = Vec::new();
        for (name, path) in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    raw.push((name.clone(), text.clone()));
                    sources.insert(name, (path, text));
                }
                Err(e) => problems
                    .push(Problem { location: None, message: format!("cannot read template {}: {e}", path.display()) }),
            }
        }
        let mut inline_locations = HashMap::new();
        for output in &config.outputs {
            for entry in &output.entries {
                if let EntryTemplate::Inline(text) = &entry.template {
                    let name = inline_name(&output.name, &entry.name);
                    inline_locations.insert(name.clone(), entry.location.clone());
                    raw.push((name, text.clone()));
                }
            }
        }
        // Parse one by one first so each syntax error gets its own location;
        // `add_raw_templates` then links includes/extends across all of them.
        for (name, text) in &raw {
            let mut single = Tera::default();
            if let Err(e) = single.add_raw_template(name, text) {
                let location = locate(name, &sources, &inline_locations, syntax_position(&e));
                problems.push(Problem { location, message: format!("template syntax error: {}", syntax_message(&e)) });
            }
        }
        if problems.is_empty()
            && let Err(e) = tera.add_raw_templates(raw.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        {
            let message = tera_error_text(&e);
            problems.push(Problem {
                location: Some(Location { file: config.templates_dir.clone(), line: 0, column: 0 }),
                message,
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }

        let mut outputs = Vec::new();
        for output in &config.outputs {
            let mut analysis = Analysis::default();
            let mut entries = Vec::new();
            for entry in &output.entries {
                let template_name = match &entry.template {
                    EntryTemplate::Inline(_) => inline_name(&output.name, &entry.name),
                    EntryTemplate::File(f) => {
                        if tera.get_template(f).is_err() {
                            problems.push(Problem::at(
                                entry.location.clone(),
                                format!(
                                    "output {:?}, entry {:?}: template file {} not found",
                                    output.name,
                                    entry.name,
                                    config.templates_dir.join(f).display()
                                ),
                            ));
                            continue;
                        }
                        f.clone()
                    }
                };
                let mut checker =
                    Checker { tera: &tera, visited: BTreeSet::new(), problems: Vec::new(), analysis: &mut analysis };
                checker.template(&template_name);
                for (template, message, needle) in checker.problems {
                    let position = needle.and_then(|n| {
                        let text = sources
                            .get(&template)
                            .map(|(_, t)| t.as_str())
                            .or_else(|| raw.iter().find(|(n2, _)| *n2 == template).map(|(_, t)| t.as_str()))?;
                        let offset = text.find(&n)?;
                        let l = Location::at(Path::new(""), text, offset);
                        Some((l.line, l.column))
                    });
                    let location = locate(&template, &sources, &inline_locations, position);
                    problems.push(Problem {
                        location,
                        message: format!("output {:?}, entry {:?}: {message}", output.name, entry.name),
                    });
                }
                entries.push((entry.name.clone(), template_name));
            }
            secret_safety(output, &analysis, &mut problems);
            outputs.push(CompiledOutput { name: output.name.clone(), envs: output.envs.clone(), entries, analysis });
        }
        if !problems.is_empty() {
            problems.dedup();
            return Err(ConfigError { problems });
        }
        Ok(Self { tera, outputs })
    }

    /// The static analysis of output `index` (config order).
    pub fn analysis(&self, index: usize) -> &Analysis {
        &self.outputs[index].analysis
    }

    /// The secret paths every output rendered for `env` may read.
    pub fn secret_paths(&self, env: &str) -> BTreeSet<String> {
        self.outputs
            .iter()
            .filter(|o| o.envs.iter().any(|e| e == env))
            .flat_map(|o| o.analysis.secret_paths.iter().cloned())
            .collect()
    }

    /// A renderer bound to one env's snapshot.
    pub fn for_snapshot(&self, snapshot: Arc<Snapshot>) -> EnvRenderer<'_> {
        let scope = Arc::new(Scope { snapshot, log: Mutex::new(RenderLog::default()) });
        let mut tera = self.tera.clone();
        tera.register_function("key", KeyFn(scope.clone()));
        tera.register_function("key_or", KeyOrFn(scope.clone()));
        tera.register_function("keys", KeysFn(scope.clone()));
        tera.register_function("exists", ExistsFn(scope.clone()));
        tera.register_function("secret", SecretFn(scope.clone()));
        tera.register_function("secrets", SecretsFn(scope.clone()));
        EnvRenderer { templates: self, tera, scope }
    }
}

/// Renders outputs for one env. Outputs are rendered one at a time: the
/// scope's log is per rendering.
pub struct EnvRenderer<'a> {
    templates: &'a Templates,
    tera: Tera,
    scope: Arc<Scope>,
}

impl EnvRenderer<'_> {
    /// Renders output `index` (config order) for this env.
    pub fn render(&self, index: usize) -> Result<Rendered, RenderError> {
        let output = &self.templates.outputs[index];
        let env = self.scope.snapshot.env.clone();
        let mut context = tera::Context::new();
        context.insert("env", &env);
        *self.scope.log() = RenderLog::default();
        let mut entries = BTreeMap::new();
        for (entry, template) in &output.entries {
            match self.tera.render(template, &context) {
                Ok(text) => {
                    entries.insert(entry.clone(), text);
                }
                Err(e) => {
                    let log = std::mem::take(&mut *self.scope.log());
                    if let Some(missing) = log.missing {
                        return Err(RenderError::Missing {
                            output: output.name.clone(),
                            env,
                            entry: entry.clone(),
                            missing,
                        });
                    }
                    let message = scrub(&tera_error_text(&e), &log.read_values);
                    return Err(RenderError::Template {
                        output: output.name.clone(),
                        env,
                        entry: entry.clone(),
                        message,
                    });
                }
            }
        }
        let log = std::mem::take(&mut *self.scope.log());
        Ok(Rendered { output: output.name.clone(), env, entries, tainted: log.tainted, used: log.used })
    }
}

/// Refuses, before any source is read, what can already be known to be
/// unsafe: an output that reads a secret going to a ConfigMap. (A Secret's
/// fingerprint is always keyed: `fingerprint_key` has a default, which
/// `policy apply` provisions.) `plan` checks the rendered taint again in
/// every case (a template can only be judged fully by rendering it).
fn secret_safety(output: &crate::config::Output, analysis: &Analysis, problems: &mut Vec<Problem>) {
    let Some(secret) = analysis.secret_paths.iter().next() else { return };
    for target in &output.targets {
        let crate::config::TargetKind::Kubernetes(k) = &target.kind else { continue };
        match k.object {
            crate::config::ObjectKind::ConfigMap => problems.push(Problem::at(
                target.location.clone(),
                format!(
                    "output {:?} reads secret {secret:?} and cannot go to a ConfigMap ({}): use kind = \"kubernetes-secret\"",
                    output.name,
                    k.addresses.values().map(|a| format!("{}/{} in context {:?}", a.namespace, a.name, a.context)).collect::<Vec<_>>().join(", ")
                ),
            )),
            crate::config::ObjectKind::Secret => {}
        }
    }
}

/// Replaces secret values read during a failed rendering, in case Tera
/// quoted one in its message.
fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s.as_str(), "**REDACTED**");
    }
    out
}

fn inline_name(output: &str, entry: &str) -> String {
    format!("@output/{output}/{entry}")
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>, problems: &mut Vec<Problem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem { location: None, message: format!("cannot read {}: {e}", dir.display()) });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, out, problems);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((name, path));
        }
    }
}

/// Where a template problem is: the template file, or for an inline entry
/// the entry's place in the config (with the position inside it).
fn locate(
    template: &str,
    sources: &HashMap<String, (PathBuf, String)>,
    inline: &HashMap<String, Location>,
    position: Option<(usize, usize)>,
) -> Option<Location> {
    if let Some((path, _)) = sources.get(template) {
        let (line, column) = position.unwrap_or((1, 1));
        return Some(Location { file: path.clone(), line, column });
    }
    let at = inline.get(template)?.clone();
    Some(match position {
        // Inline templates are TOML strings: line N of the template is line
        // N-1 after the string starts; on the first line, skip the quote.
        Some((1, col)) => Location { column: at.column + col, ..at },
        Some((line, col)) => Location { line: at.line + line - 1, column: col, ..at },
        None => at,
    })
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
        _ => text,
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
    parts.join(": ").split('\n').map(str::trim_end).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ")
}

/// Walks a template's AST (and what it includes, extends and imports).
struct Checker<'a> {
    tera: &'a Tera,
    visited: BTreeSet<String>,
    /// (template name, message, text to search for to locate it)
    problems: Vec<(String, String, Option<String>)>,
    analysis: &'a mut Analysis,
}

impl Checker<'_> {
    fn template(&mut self, name: &str) {
        if !self.visited.insert(name.to_owned()) {
            return;
        }
        let Ok(template) = self.tera.get_template(name) else { return };
        let template = template.clone();
        for node in &template.ast {
            self.node(name, node);
        }
        for m in template.macros.values() {
            for node in &m.body {
                self.node(name, node);
            }
        }
        if let Some(parent) = &template.parent {
            self.template(parent);
        }
        for (file, _) in &template.imported_macro_files {
            self.template(file);
        }
    }

    fn nodes(&mut self, t: &str, nodes: &[Node]) {
        for n in nodes {
            self.node(t, n);
        }
    }

    fn node(&mut self, t: &str, node: &Node) {
        match node {
            Node::VariableBlock(_, e) => self.expr(t, e),
            Node::Set(_, s) => self.expr(t, &s.value),
            Node::FilterSection(_, s, _) => {
                self.filter(t, &s.filter);
                self.nodes(t, &s.body);
            }
            Node::Block(_, b, _) => self.nodes(t, &b.body),
            Node::Forloop(_, f, _) => {
                self.expr(t, &f.container);
                self.nodes(t, &f.body);
                if let Some(e) = &f.empty_body {
                    self.nodes(t, e);
                }
            }
            Node::If(i, _) => {
                for (_, cond, body) in &i.conditions {
                    self.expr(t, cond);
                    self.nodes(t, body);
                }
                if let Some((_, body)) = &i.otherwise {
                    self.nodes(t, body);
                }
            }
            Node::MacroDefinition(_, m, _) => self.nodes(t, &m.body),
            Node::Include(_, names, ignore_missing) => {
                let found = names.iter().find(|n| self.tera.get_template(n).is_ok());
                match found {
                    Some(n) => self.template(&n.clone()),
                    None if *ignore_missing => {}
                    None => self.problems.push((
                        t.to_owned(),
                        format!("included template {} not found", names.join(" or ")),
                        Some("include".to_owned()),
                    )),
                }
            }
            _ => {}
        }
    }

    fn filter(&mut self, t: &str, f: &FunctionCall) {
        if self.tera.get_filter(&f.name).is_err() {
            self.problems.push((t.to_owned(), format!("unknown filter `{}`", f.name), Some(f.name.clone())));
        }
        for e in f.args.values() {
            self.expr(t, e);
        }
    }

    fn expr(&mut self, t: &str, e: &Expr) {
        for f in &e.filters {
            self.filter(t, f);
        }
        match &e.val {
            ExprVal::FunctionCall(call) => self.call(t, call),
            ExprVal::Math(m) => {
                self.expr(t, &m.lhs);
                self.expr(t, &m.rhs);
            }
            ExprVal::Logic(l) => {
                self.expr(t, &l.lhs);
                self.expr(t, &l.rhs);
            }
            ExprVal::In(i) => {
                self.expr(t, &i.lhs);
                self.expr(t, &i.rhs);
            }
            ExprVal::Test(test) => {
                if self.tera.get_tester(&test.name).is_err() {
                    self.problems.push((
                        t.to_owned(),
                        format!("unknown test `{}`", test.name),
                        Some(test.name.clone()),
                    ));
                }
                for a in &test.args {
                    self.expr(t, a);
                }
            }
            ExprVal::MacroCall(m) => {
                for a in m.args.values() {
                    self.expr(t, a);
                }
            }
            ExprVal::Array(items) => {
                for i in items {
                    self.expr(t, i);
                }
            }
            _ => {}
        }
    }

    fn call(&mut self, t: &str, call: &FunctionCall) {
        let needle = Some(format!("{}(", call.name));
        if self.tera.get_function(&call.name).is_err() {
            let known = FUNCTIONS.map(String::from);
            let hint = crate::config::suggest(&call.name, &known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            self.problems.push((t.to_owned(), format!("unknown function `{}`{hint}", call.name), needle.clone()));
        }
        if call.name == "secret" || call.name == "secrets" {
            match call.args.get("path").map(|e| &e.val) {
                Some(ExprVal::String(p)) if e_is_plain(call.args.get("path")) => {
                    self.analysis.secret_paths.insert(p.clone());
                }
                _ => self.problems.push((
                    t.to_owned(),
                    format!(
                        "{}(): `path` must be a string literal, so cfgsync reads exactly the secrets templates name",
                        call.name
                    ),
                    needle,
                )),
            }
        }
        for e in call.args.values() {
            self.expr(t, e);
        }
    }
}

fn e_is_plain(e: Option<&Expr>) -> bool {
    e.is_some_and(|e| e.filters.is_empty() && !e.negated)
}

// ---------------------------------------------------------------------------
// Template functions.

struct Scope {
    snapshot: Arc<Snapshot>,
    log: Mutex<RenderLog>,
}

impl Scope {
    fn log(&self) -> std::sync::MutexGuard<'_, RenderLog> {
        // A panic while holding the lock cannot leave the log half-written
        // in a way that matters: it is reset before every rendering.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self, m: Missing) -> tera::Error {
        let text = m.to_string();
        self.log().missing.get_or_insert(m);
        tera::Error::msg(text)
    }

    fn use_(&self, u: Use) {
        self.log().used.insert(u);
    }
}

#[derive(Default)]
struct RenderLog {
    used: BTreeSet<Use>,
    tainted: bool,
    missing: Option<Missing>,
    /// Secret values read, to scrub them from error messages.
    read_values: Vec<String>,
}

fn str_arg<'a>(f: &str, args: &'a HashMap<String, Value>, name: &str) -> tera::Result<&'a str> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(tera::Error::msg(format!("{f}(): argument `{name}` must be a string"))),
        None => Err(tera::Error::msg(format!("{f}(): missing argument `{name}`"))),
    }
}

struct KeyFn(Arc<Scope>);
impl tera::Function for KeyFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let name = str_arg("key", args, "name")?;
        self.0.use_(Use::Key(name.to_owned()));
        match self.0.snapshot.keys.get(name) {
            Some(v) => Ok(Value::String(v.value.clone())),
            None => Err(self.0.missing(Missing::Key(name.to_owned()))),
        }
    }
}

struct KeyOrFn(Arc<Scope>);
impl tera::Function for KeyOrFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let name = str_arg("key_or", args, "name")?;
        let default =
            args.get("default").cloned().ok_or_else(|| tera::Error::msg("key_or(): missing argument `default`"))?;
        self.0.use_(Use::Key(name.to_owned()));
        Ok(self.0.snapshot.keys.get(name).map_or(default, |v| Value::String(v.value.clone())))
    }
}

struct KeysFn(Arc<Scope>);
impl tera::Function for KeysFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let prefix = str_arg("keys", args, "prefix")?;
        self.0.use_(Use::KeyPrefix(prefix.to_owned()));
        let map = self
            .0
            .snapshot
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k[prefix.len()..].trim_start_matches('/').to_owned(), Value::String(v.value.clone())))
            .collect::<tera::Map<_, _>>();
        Ok(Value::Object(map))
    }
}

struct ExistsFn(Arc<Scope>);
impl tera::Function for ExistsFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let name = str_arg("exists", args, "name")?;
        self.0.use_(Use::Key(name.to_owned()));
        Ok(Value::Bool(self.0.snapshot.keys.contains_key(name)))
    }
}

struct SecretFn(Arc<Scope>);
impl tera::Function for SecretFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let path = str_arg("secret", args, "path")?;
        let field = str_arg("secret", args, "field")?;
        let scope = &self.0;
        {
            let mut log = scope.log();
            log.used.insert(Use::Secret(path.to_owned()));
            log.tainted = true;
        }
        let Some(secret) = scope.snapshot.secrets.get(path) else {
            return Err(scope.missing(Missing::Secret(path.to_owned())));
        };
        match secret.fields.get(field) {
            Some(v) => {
                scope.log().read_values.push(v.expose().to_owned());
                Ok(Value::String(v.expose().to_owned()))
            }
            None => Err(scope.missing(Missing::SecretField { path: path.to_owned(), field: field.to_owned() })),
        }
    }
}

struct SecretsFn(Arc<Scope>);
impl tera::Function for SecretsFn {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let path = str_arg("secrets", args, "path")?;
        let scope = &self.0;
        {
            let mut log = scope.log();
            log.used.insert(Use::Secret(path.to_owned()));
            log.tainted = true;
        }
        let Some(secret) = scope.snapshot.secrets.get(path) else {
            return Err(scope.missing(Missing::Secret(path.to_owned())));
        };
        let mut log = scope.log();
        let map = secret
            .fields
            .iter()
            .map(|(k, v)| {
                log.read_values.push(v.expose().to_owned());
                (k.clone(), Value::String(v.expose().to_owned()))
            })
            .collect::<tera::Map<_, _>>();
        Ok(Value::Object(map))
    }
}

/// At compile time the functions exist (so unknown-function checks pass)
/// but are never called: rendering always goes through `for_snapshot`.
fn register_placeholders(tera: &mut Tera) {
    for name in FUNCTIONS {
        tera.register_function(name, move |_: &HashMap<String, Value>| -> tera::Result<Value> {
            Err(tera::Error::msg(format!("{name}() called outside a snapshot")))
        });
    }
}

#[cfg(test)]
mod tests;
