//! The template functions, bound to the snapshot being rendered.
//!
//! The functions are registered once, when the templates are compiled, and
//! find the snapshot of the rendering in progress through a thread-local
//! [`Scope`]: Tera renders synchronously on the calling thread, so the
//! scope set around one render is exactly the one its functions see. This
//! is what lets one compiled set of templates serve every env and every
//! pass without being cloned (a clone per env per pass was a large part of
//! a pass's cost at fleet scale).
//!
//! Every function records what it read ([`Use`]) and whether it read a
//! secret (taint). Its own error messages are built from names only and
//! recorded as known-safe text, so an error from a render that read a
//! secret can still say *which* call failed and why (see
//! [`super::RenderError`]).
//!
//! `range` replaces Tera's own: a template could otherwise allocate an
//! array of 10⁹ numbers with one call. It is capped per call and per
//! rendering ([`super::Limits::max_range`]). `get_env` is replaced by a
//! function that always fails: templates never see the process
//! environment (the static check refuses the call before that).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tera::{Tera, Value};

use super::{Missing, Use};
use crate::source::{KeyData, Snapshot};

#[derive(Default)]
pub(super) struct RenderLog {
    pub used: BTreeSet<Use>,
    pub tainted: bool,
    /// The first value the snapshot lacked.
    pub missing: Option<Missing>,
    /// The last error a cfgsync function raised, in words known to be
    /// safe (names, never values).
    pub function_error: Option<String>,
    /// A limit was hit (time, range).
    pub limit: Option<super::LimitHit>,
    /// The message of the `throw` that stopped the rendering: text that
    /// may hold a secret, never shown as it is (see [`super::thrown`]).
    pub thrown: Option<String>,
}

thread_local! {
    /// The rendering in progress on this thread, set by [`with_scope`] for
    /// the duration of one render.
    static CURRENT: RefCell<Option<Rc<Scope>>> = const { RefCell::new(None) };
}

/// What one rendering of one output may use and has used so far. The
/// snapshot is shared through an `Arc`: nothing is copied per render.
pub(super) struct Scope {
    /// For an output that reads secrets, the names its templates write as
    /// literals: the only ones an error message may repeat.
    pub names: Option<Arc<BTreeSet<String>>>,
    pub snapshot: Arc<Snapshot>,
    pub log: RefCell<RenderLog>,
    pub deadline: Instant,
    pub range_budget: RefCell<usize>,
}

/// Runs `f` with `scope` as this thread's rendering scope, and returns the
/// scope's log with `f`'s result.
pub(super) fn with_scope<R>(scope: Scope, f: impl FnOnce() -> R) -> (R, RenderLog) {
    let scope = Rc::new(scope);
    let previous = CURRENT.with(|c| c.replace(Some(scope.clone())));
    let result = f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    let log = scope.log.take();
    (result, log)
}

fn current() -> tera::Result<Rc<Scope>> {
    CURRENT
        .with(|c| c.borrow().clone())
        .ok_or_else(|| tera::Error::msg("cfgsync template functions are only available while rendering"))
}

impl Scope {
    /// Fails once the rendering's time budget is spent.
    pub fn check_deadline(&self) -> tera::Result<()> {
        if Instant::now() > self.deadline {
            self.log.borrow_mut().limit.get_or_insert(super::LimitHit::Time);
            return Err(tera::Error::msg("time budget exceeded"));
        }
        Ok(())
    }

    fn missing(&self, m: Missing) -> tera::Error {
        let text = m.to_string();
        self.log.borrow_mut().missing.get_or_insert(m);
        tera::Error::msg(text)
    }

    /// An error in our own words, recorded as safe to show.
    fn fail(&self, text: String) -> tera::Error {
        self.log.borrow_mut().function_error = Some(text.clone());
        tera::Error::msg(text)
    }

    fn use_(&self, u: Use) {
        self.log.borrow_mut().used.insert(u);
    }

    fn taint(&self, path: &str) {
        let mut log = self.log.borrow_mut();
        log.used.insert(Use::Secret(path.to_owned()));
        log.tainted = true;
    }

    /// A key's text, or an error naming the key when its bytes are not text.
    /// `listed_under`: the key was found by listing this prefix (its name
    /// comes from the source, and may be shown when the prefix may).
    fn text<'a>(&self, name: &str, data: &'a KeyData, listed_under: Option<&str>) -> tera::Result<&'a str> {
        match data {
            KeyData::Text(t) => Ok(t),
            KeyData::Bytes(b) => {
                let shown = match listed_under {
                    Some(prefix) if self.shown(prefix).starts_with('"') => format!("{name:?}"),
                    _ => self.shown(name),
                };
                Err(self.fail(format!(
                    "key {shown} holds {} that templates cannot use as text; fix the value in the source",
                    super::describe_bytes(b)
                )))
            }
        }
    }

    /// A name for an error message: quoted, unless the output reads
    /// secrets and the name was not written in its templates (then it was
    /// computed, possibly from a secret).
    fn shown(&self, name: &str) -> String {
        match &self.names {
            Some(names) if !names.contains(name) => "(name computed while rendering, withheld)".to_owned(),
            _ => format!("{name:?}"),
        }
    }
}

/// The names, required and optional arguments of every cfgsync function
/// and of the Tera built-ins templates may call. The static check refuses
/// any other function and any other argument name.
pub const SIGNATURES: &[(&str, &[&str], &[&str])] = &[
    ("key", &["name"], &[]),
    ("key_or", &["name", "default"], &[]),
    ("keys", &["prefix"], &[]),
    ("exists", &["name"], &[]),
    ("secret", &["path", "field"], &[]),
    ("secrets", &["path"], &[]),
    ("range", &["end"], &["start", "step_by"]),
    ("throw", &["message"], &[]),
];

/// Functions Tera offers that templates must not call, with the reason.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("get_env", "templates cannot read the process environment (it holds cfgsync's own credentials)"),
    ("now", "templates cannot read the clock: a rendering must depend on the snapshot only"),
    ("get_random", "templates cannot draw random numbers: a rendering must depend on the snapshot only"),
];

fn args_of<'a>(f: &str, args: &'a HashMap<String, Value>, scope: &Scope) -> tera::Result<&'a HashMap<String, Value>> {
    let Some((_, required, optional)) = SIGNATURES.iter().find(|(n, _, _)| *n == f) else { return Ok(args) };
    for name in args.keys() {
        if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
            return Err(scope.fail(format!("{f}(): unknown argument `{name}`")));
        }
    }
    Ok(args)
}

fn str_arg<'a>(f: &str, args: &'a HashMap<String, Value>, name: &str, scope: &Scope) -> tera::Result<&'a str> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(scope.fail(format!("{f}(): argument `{name}` must be a string"))),
        None => Err(scope.fail(format!("{f}(): missing argument `{name}`"))),
    }
}

fn key(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let name = str_arg("key", args_of("key", args, &scope)?, "name", &scope)?;
    lookup_key(&scope, name).map(Value::String)
}

fn lookup_key(scope: &Scope, name: &str) -> tera::Result<String> {
    scope.use_(Use::Key(name.to_owned()));
    match scope.snapshot.keys.get(name) {
        Some(v) => Ok(scope.text(name, &v.data, None)?.to_owned()),
        None => Err(scope.missing(Missing::Key(name.to_owned()))),
    }
}

/// `key(name=…)` for a simple template ([`super::simple`]).
pub(super) fn key_text(name: &str) -> tera::Result<String> {
    let scope = current()?;
    scope.check_deadline()?;
    lookup_key(&scope, name)
}

/// `key_or(name=…, default=…)` with a string default, for a simple template.
pub(super) fn key_or_text(name: &str, default: &str) -> tera::Result<String> {
    let scope = current()?;
    scope.check_deadline()?;
    Ok(lookup_key_or(&scope, name)?.unwrap_or_else(|| default.to_owned()))
}

fn lookup_key_or(scope: &Scope, name: &str) -> tera::Result<Option<String>> {
    scope.use_(Use::Key(name.to_owned()));
    match scope.snapshot.keys.get(name) {
        Some(v) => Ok(Some(scope.text(name, &v.data, None)?.to_owned())),
        None => Ok(None),
    }
}

/// `secret(path=…, field=…)` for a simple template.
pub(super) fn secret_text(path: &str, field: &str) -> tera::Result<String> {
    let scope = current()?;
    scope.check_deadline()?;
    lookup_secret(&scope, path, field)
}

fn lookup_secret(scope: &Scope, path: &str, field: &str) -> tera::Result<String> {
    scope.taint(path);
    let Some(secret) = scope.snapshot.secrets.get(path) else {
        return Err(scope.missing(Missing::Secret(path.to_owned())));
    };
    match secret.fields.get(field) {
        Some(v) => Ok(v.expose().to_owned()),
        None => Err(scope.missing(Missing::SecretField { path: path.to_owned(), field: field.to_owned() })),
    }
}

/// A key's bytes for a `{ key = "name" }` entry, recorded as read like `key()`.
pub(super) fn key_bytes(name: &str) -> tera::Result<Vec<u8>> {
    let scope = current()?;
    scope.use_(Use::Key(name.to_owned()));
    match scope.snapshot.keys.get(name) {
        Some(v) => Ok(v.data.as_bytes().to_vec()),
        None => Err(scope.missing(Missing::Key(name.to_owned()))),
    }
}

fn key_or(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let name = str_arg("key_or", args_of("key_or", args, &scope)?, "name", &scope)?;
    let default =
        args.get("default").cloned().ok_or_else(|| scope.fail("key_or(): missing argument `default`".into()))?;
    Ok(lookup_key_or(&scope, name)?.map_or(default, Value::String))
}

fn keys(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let prefix = str_arg("keys", args_of("keys", args, &scope)?, "prefix", &scope)?;
    scope.use_(Use::KeyPrefix(prefix.to_owned()));
    if let Some(listed) = KEYS_LISTED.with(|c| c.borrow().get(&scope.snapshot, prefix)) {
        return Ok(listed);
    }
    let mut map = tera::Map::new();
    for (k, v) in scope.snapshot.keys.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)) {
        let text = scope.text(k, &v.data, Some(prefix))?;
        map.insert(k[prefix.len()..].trim_start_matches('/').to_owned(), Value::String(text.to_owned()));
    }
    let listed = Value::Object(map);
    KEYS_LISTED.with(|c| c.borrow_mut().put(&scope.snapshot, prefix, &listed));
    Ok(listed)
}

thread_local! {
    /// What `keys()` listed for the snapshot being rendered on this thread.
    static KEYS_LISTED: RefCell<KeysListed> = RefCell::new(KeysListed::default());
}

/// The maps `keys(prefix=…)` built from one snapshot, by prefix, so that
/// the outputs of an env that list the same prefix (confd's job: 100 files
/// each looping over the same 1,000 keys) build it once and clone it after
/// (a clone copies the strings but neither checks nor hashes them again:
/// building was 40% of rendering such an output). Only successful lists are
/// kept: a key that is not text fails every call as it did the first time.
/// Each call still records its read ([`Use::KeyPrefix`]).
#[derive(Default)]
struct KeysListed {
    /// The snapshot the maps were built from. A `Weak` keeps its
    /// allocation, so no other snapshot can take its address while this is
    /// held: equal addresses are the same snapshot.
    snapshot: std::sync::Weak<Snapshot>,
    maps: HashMap<String, Value>,
    /// Entries held, bounded by [`KEYS_LISTED_MAX`].
    entries: usize,
}

/// Most entries [`KeysListed`] holds; a list that would exceed it is
/// built at every call, as before.
const KEYS_LISTED_MAX: usize = 100_000;

impl KeysListed {
    fn get(&self, snapshot: &Arc<Snapshot>, prefix: &str) -> Option<Value> {
        if !std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(snapshot)) {
            return None;
        }
        self.maps.get(prefix).cloned()
    }

    fn put(&mut self, snapshot: &Arc<Snapshot>, prefix: &str, listed: &Value) {
        if !std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(snapshot)) {
            *self = KeysListed { snapshot: Arc::downgrade(snapshot), ..KeysListed::default() };
        }
        let count = listed.as_object().map_or(0, |m| m.len());
        if self.entries + count <= KEYS_LISTED_MAX {
            self.entries += count;
            self.maps.insert(prefix.to_owned(), listed.clone());
        }
    }
}

fn exists(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let name = str_arg("exists", args_of("exists", args, &scope)?, "name", &scope)?;
    scope.use_(Use::Key(name.to_owned()));
    Ok(Value::Bool(scope.snapshot.keys.contains_key(name)))
}

fn secret(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let args = args_of("secret", args, &scope)?;
    let path = str_arg("secret", args, "path", &scope)?;
    let field = str_arg("secret", args, "field", &scope)?;
    lookup_secret(&scope, path, field).map(Value::String)
}

fn secrets(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let path = str_arg("secrets", args_of("secrets", args, &scope)?, "path", &scope)?;
    scope.taint(path);
    let Some(secret) = scope.snapshot.secrets.get(path) else {
        return Err(scope.missing(Missing::Secret(path.to_owned())));
    };
    let map = secret.fields.iter().map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned()))).collect();
    Ok(Value::Object(map))
}

/// Tera's `range`, with the number of elements charged to the rendering's
/// budget before anything is allocated.
fn range(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let scope = current()?;
    scope.check_deadline()?;
    let args = args_of("range", args, &scope)?;
    let number = |name: &str, default: Option<u64>| -> tera::Result<u64> {
        match args.get(name) {
            Some(v) => {
                v.as_u64().ok_or_else(|| scope.fail(format!("range(): `{name}` must be a non-negative integer")))
            }
            None => default.ok_or_else(|| scope.fail(format!("range(): missing argument `{name}`"))),
        }
    };
    let start = number("start", Some(0))?;
    let end = number("end", None)?;
    let step = number("step_by", Some(1))?;
    if step == 0 {
        return Err(scope.fail("range(): `step_by` must be at least 1".into()));
    }
    if start > end {
        return Err(scope.fail("range(): `start` must not be greater than `end`".into()));
    }
    let count = (end - start).div_ceil(step);
    {
        let mut budget = scope.range_budget.borrow_mut();
        if count > *budget as u64 {
            scope.log.borrow_mut().limit.get_or_insert(super::LimitHit::Range);
            return Err(tera::Error::msg("range budget exceeded"));
        }
        *budget -= count as usize;
    }
    Ok(Value::Array((start..end).step_by(step as usize).map(Value::from).collect()))
}

fn refuse_env(_: &HashMap<String, Value>) -> tera::Result<Value> {
    let text = "get_env(): templates cannot read the process environment".to_owned();
    if let Ok(scope) = current() {
        return Err(scope.fail(text));
    }
    Err(tera::Error::msg(text))
}

/// Registers the cfgsync functions (and the replacements of Tera's
/// `range` and `get_env`) on `tera`.
/// Tera's `throw`, which also records the message, so that the error can
/// say which `throw` of the templates stopped the rendering.
fn throw(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let Ok(scope) = current() else {
        let message =
            args.get("message").and_then(Value::as_str).unwrap_or("throw() was called without a text message");
        return Err(tera::Error::msg(message));
    };
    let message = str_arg("throw", args_of("throw", args, &scope)?, "message", &scope)?;
    scope.log.borrow_mut().thrown = Some(message.to_owned());
    Err(tera::Error::msg(message))
}

pub(super) fn register(tera: &mut Tera) {
    tera.register_function("key", key);
    tera.register_function("key_or", key_or);
    tera.register_function("keys", keys);
    tera.register_function("exists", exists);
    tera.register_function("secret", secret);
    tera.register_function("secrets", secrets);
    tera.register_function("range", range);
    tera.register_function("get_env", refuse_env);
    tera.register_function("throw", throw);
}

/// Whether the thread's scope recorded a limit (used by the writer).
pub(super) fn check_deadline_now() -> Result<(), ()> {
    match current() {
        Ok(scope) => scope.check_deadline().map_err(drop),
        Err(_) => Ok(()),
    }
}
