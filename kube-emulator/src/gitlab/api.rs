//! The GitLab REST v4 CI/CD variable endpoints, as pure functions of the
//! store and a fully read request.
//!
//! Decisions, each taken from GitLab's source (`lib/api/ci/variables.rb`,
//! `lib/api/group_variables.rb`, `lib/api/helpers/variables_helpers.rb`,
//! `app/models/concerns/ci/{maskable,hidable_variable,has_variable}.rb`,
//! `app/services/ci/change_variable_service.rb`) and its API docs:
//! - A lookup by key (GET, PUT, DELETE) filters by `filter[environment_scope]`
//!   when given; several matches answer 409 "There are multiple variables
//!   with provided parameters. Please use 'filter[environment_scope]'".
//! - Except group PUT: without a filter it updates the first variable with
//!   the key (no 409, kept for compatibility upstream), and with a filter
//!   that matches nothing it falls back to that same first variable.
//! - Grape's parameter errors are `{"error": "..."}`; model validation
//!   errors are `{"message": {"attribute": ["..."]}}`.
//! - Masking: masked and expanded values must match
//!   `\A[a-zA-Z0-9_+=/@:.~-]{8,}\z`; masked raw values `\A\S{8,}\z`.
//! - `masked_and_hidden` (create only) sets hidden and masked; a hidden
//!   variable's value is `null` in every answer and its masking cannot change.
//! - GitLab Free (`Store::free_tier`): group variables ignore
//!   `environment_scope` on create (stored as `*`) and update, answering
//!   201/200 all the same; the filter still selects.
//! - Numeric ids and full paths name owners; the emulator treats each
//!   distinct one as its own owner unless linked (`GitlabEmulator::link_project`).

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::{Map, Value, json};

use crate::Verb;
use crate::gitlab::{GitlabOwner, GitlabVariable, OwnerKind};
use crate::plumbing::{ApiRequest, Reply, encode_component};

pub(crate) const ROUTE_PROJECT_LIST: &str = "/api/v4/projects/:id/variables";
pub(crate) const ROUTE_PROJECT_ITEM: &str = "/api/v4/projects/:id/variables/:key";
pub(crate) const ROUTE_GROUP_LIST: &str = "/api/v4/groups/:id/variables";
pub(crate) const ROUTE_GROUP_ITEM: &str = "/api/v4/groups/:id/variables/:key";
pub(crate) const UNROUTED: &str = "unrouted";

const JSON: &str = "application/json";
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;
const MULTIPLE: &str = "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'";

/// Variables of every owner, each owner's in creation order (the order
/// GitLab lists them in).
#[derive(Default)]
pub(crate) struct Store {
    owners: BTreeMap<(OwnerKind, String), Vec<GitlabVariable>>,
    /// A numeric id or path → the canonical owner name it stands for.
    aliases: BTreeMap<(OwnerKind, String), String>,
    /// GitLab Free: group variables ignore `environment_scope` (scoped
    /// group variables are the licensed feature `group_scoped_ci_variables`):
    /// a create stores `*`, an update keeps the scope it had; both answer
    /// 201/200 as if nothing were dropped (`spec/requests/api/group_variables_spec.rb`).
    pub free_tier: bool,
}

impl Store {
    /// The canonical name of an owner as written in a URL: paths are
    /// case-insensitive in GitLab; linked names resolve to one owner.
    pub fn canonical(&self, kind: OwnerKind, id: &str) -> String {
        let id = id.to_lowercase();
        self.aliases.get(&(kind, id.clone())).cloned().unwrap_or(id)
    }

    pub fn link(&mut self, kind: OwnerKind, id: u64, path: &str) {
        let id = id.to_string();
        self.aliases.insert((kind, path.to_lowercase()), id.clone());
        // Variables already stored under the path move to the id.
        if let Some(mut moved) = self.owners.remove(&(kind, path.to_lowercase())) {
            self.owners.entry((kind, id)).or_default().append(&mut moved);
        }
    }

    pub fn variables(&self, owner: &GitlabOwner) -> Vec<GitlabVariable> {
        let (kind, id) = owner.parts();
        self.owners.get(&(kind, self.canonical(kind, id))).cloned().unwrap_or_default()
    }

    /// Inserts or replaces (same key and scope) without validation.
    pub fn put(&mut self, owner: &GitlabOwner, variable: GitlabVariable) {
        let (kind, id) = owner.parts();
        let list = self.owners.entry((kind, self.canonical(kind, id))).or_default();
        match list.iter_mut().find(|v| v.key == variable.key && v.environment_scope == variable.environment_scope) {
            Some(slot) => *slot = variable,
            None => list.push(variable),
        }
    }

    fn list_mut(&mut self, kind: OwnerKind, id: &str) -> &mut Vec<GitlabVariable> {
        let canonical = self.canonical(kind, id);
        self.owners.entry((kind, canonical)).or_default()
    }
}

/// Route pattern and fault-filter verb of a request.
pub(crate) fn route_of(method: &Method, path: &str) -> (&'static str, Option<Verb>) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (route, item) = match segs.as_slice() {
        ["api", "v4", "projects", _, "variables"] => (ROUTE_PROJECT_LIST, false),
        ["api", "v4", "projects", _, "variables", _] => (ROUTE_PROJECT_ITEM, true),
        ["api", "v4", "groups", _, "variables"] => (ROUTE_GROUP_LIST, false),
        ["api", "v4", "groups", _, "variables", _] => (ROUTE_GROUP_ITEM, true),
        _ => return (UNROUTED, None),
    };
    let verb = match (method.as_str(), item) {
        ("GET", false) => Verb::List,
        ("GET", true) => Verb::Get,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("DELETE", true) => Verb::Delete,
        _ => return (route, None),
    };
    (route, Some(verb))
}

fn message(status: u16, text: &str) -> Reply {
    Reply::json(status, JSON, &json!({ "message": text }))
}

fn grape_error(status: u16, text: &str) -> Reply {
    Reply::json(status, JSON, &json!({ "error": text }))
}

/// 500 and 429 answers for injected faults.
pub(crate) fn fault_reply(injected: &crate::plumbing::Injected) -> Reply {
    match injected {
        // Rack::Attack's throttle answer: plain text, Retry-After, RateLimit-*.
        crate::plumbing::Injected::RateLimit { retry_after_secs, .. } => Reply::text(429, "Retry later\n")
            .header("retry-after", retry_after_secs.to_string())
            .header("ratelimit-remaining", "0"),
        _ => message(500, "500 Internal Server Error"),
    }
}

/// One request parameter: GitLab reads the query string, JSON bodies and
/// form bodies alike.
#[derive(Clone, Debug)]
enum Param {
    Text(String),
    Json(Value),
}

impl Param {
    /// Grape's coercion to String.
    fn text(&self) -> Option<String> {
        match self {
            Param::Text(s) => Some(s.clone()),
            Param::Json(Value::String(s)) => Some(s.clone()),
            Param::Json(Value::Bool(b)) => Some(b.to_string()),
            Param::Json(Value::Number(n)) => Some(n.to_string()),
            Param::Json(_) => None,
        }
    }
}

struct Params(BTreeMap<String, Param>);

impl Params {
    fn parse(req: &ApiRequest) -> Result<Params, Reply> {
        let mut params: BTreeMap<String, Param> =
            req.query.iter().map(|(k, v)| (k.clone(), Param::Text(v.clone()))).collect();
        let content_type = req.header("content-type").unwrap_or_default();
        if !req.body.is_empty() {
            if content_type.starts_with("application/json") {
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(Value::Object(map)) => {
                        for (k, v) in map {
                            if let (true, Value::Object(inner)) = (k == "filter", &v) {
                                for (ik, iv) in inner {
                                    params.insert(format!("filter[{ik}]"), Param::Json(iv.clone()));
                                }
                            } else {
                                params.insert(k, Param::Json(v));
                            }
                        }
                    }
                    _ => return Err(grape_error(400, "message body does not match declared format")),
                }
            } else if content_type.starts_with("application/x-www-form-urlencoded") {
                let body = String::from_utf8_lossy(&req.body);
                for (k, v) in crate::plumbing::parse_query(Some(&body)) {
                    params.insert(k, Param::Text(v));
                }
            }
        }
        Ok(Params(params))
    }

    fn get(&self, name: &str) -> Option<&Param> {
        self.0.get(name).filter(|p| !matches!(p, Param::Json(Value::Null)))
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name).and_then(Param::text)
    }

    fn filter_scope(&self) -> Option<String> {
        self.text("filter[environment_scope]").filter(|s| !s.is_empty())
    }

    fn has_filter(&self) -> bool {
        self.0.keys().any(|k| k == "filter" || k.starts_with("filter["))
    }
}

/// Grape's Boolean coercion (project endpoints).
fn grape_bool(p: &Param) -> Option<bool> {
    match p {
        Param::Json(Value::Bool(b)) => Some(*b),
        other => match other.text()?.to_lowercase().as_str() {
            "true" | "1" | "t" | "yes" | "y" | "on" => Some(true),
            "false" | "0" | "f" | "no" | "n" | "off" => Some(false),
            _ => None,
        },
    }
}

/// ActiveRecord's boolean cast of a String parameter (group endpoints,
/// which declare the flags as String): a few spellings are false, the rest true.
fn active_record_bool(p: &Param) -> Option<bool> {
    match p {
        Param::Json(Value::Bool(b)) => Some(*b),
        other => {
            let s = other.text()?;
            if s.is_empty() {
                return None;
            }
            Some(!matches!(s.to_lowercase().as_str(), "false" | "0" | "f" | "off" | "no" | "n"))
        }
    }
}

/// Model validation errors, in the order Rails adds them.
#[derive(Default)]
struct Errors(Vec<(&'static str, Vec<String>)>);

impl Errors {
    fn add(&mut self, attribute: &'static str, text: impl Into<String>) {
        match self.0.iter_mut().find(|(a, _)| *a == attribute) {
            Some((_, list)) => list.push(text.into()),
            None => self.0.push((attribute, vec![text.into()])),
        }
    }

    fn into_reply(self) -> Option<Reply> {
        if self.0.is_empty() {
            return None;
        }
        let mut map = Map::new();
        for (attribute, list) in self.0 {
            map.insert(attribute.to_string(), json!(list));
        }
        Some(Reply::json(400, JSON, &json!({ "message": map })))
    }
}

fn key_is_valid(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `Ci::Maskable::REGEX`: at least 8 characters of the Base64 alphabet plus `@:.~-`.
pub(crate) fn maskable(value: &str) -> bool {
    value.chars().count() >= 8 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=/@:.~-".contains(&b))
}

/// `Ci::Maskable::MASK_AND_RAW_REGEX` (`\A\S{8,}\z`): Ruby's `\S` is ASCII
/// `[^ \t\r\n\f\v]`.
pub(crate) fn maskable_raw(value: &str) -> bool {
    value.chars().count() >= 8 && !value.chars().any(|c| matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0c' | '\x0b'))
}

/// `Gitlab::Regex.environment_scope_regex`.
fn scope_is_valid(scope: &str) -> bool {
    !scope.is_empty() && scope.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_/${}. *".contains(&b))
}

/// The checks `Ci::Variable`/`Ci::GroupVariable` run on save.
fn validate(v: &GitlabVariable, others: &[GitlabVariable], errors: &mut Errors) {
    if v.key.is_empty() {
        errors.add("key", "can't be blank");
    }
    if v.key.chars().count() > 255 {
        errors.add("key", "is too long (maximum is 255 characters)");
    }
    if !key_is_valid(&v.key) {
        errors.add("key", "can contain only letters, digits and '_'.");
    }
    if v.masked && !v.raw && !maskable(&v.value) {
        errors.add("value", "is invalid");
    }
    if v.masked && v.raw && !maskable_raw(&v.value) {
        errors.add("value", "is invalid");
    }
    if v.environment_scope.is_empty() {
        errors.add("environment_scope", "can't be blank");
    }
    if v.environment_scope.chars().count() > 255 {
        errors.add("environment_scope", "is too long (maximum is 255 characters)");
    }
    if !scope_is_valid(&v.environment_scope) {
        errors.add(
            "environment_scope",
            "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', '*' and spaces",
        );
    }
    if v.description.as_ref().is_some_and(|d| d.chars().count() > 255) {
        errors.add("description", "is too long (maximum is 255 characters)");
    }
    if others.iter().any(|o| o.key == v.key && o.environment_scope == v.environment_scope) {
        errors.add("key", format!("({}) has already been taken", v.key));
    }
}

/// `Entities::Ci::Variable`, in its field order; a hidden value is null.
pub(crate) fn entity(v: &GitlabVariable) -> Value {
    json!({
        "variable_type": v.variable_type,
        "key": v.key,
        "value": if v.hidden { Value::Null } else { Value::String(v.value.clone()) },
        "hidden": v.hidden,
        "protected": v.protected,
        "masked": v.masked,
        "raw": v.raw,
        "environment_scope": v.environment_scope,
        "description": v.description,
    })
}

fn authenticated(req: &ApiRequest) -> bool {
    let token = |v: Option<&str>| v.is_some_and(|t| !t.trim().is_empty());
    token(req.header("private-token"))
        || token(req.header("job-token"))
        || req.header("authorization").is_some_and(|a| {
            a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")).is_some_and(|t| !t.trim().is_empty())
        })
        || req.query.get("private_token").is_some_and(|t| !t.is_empty())
        || req.query.get("access_token").is_some_and(|t| !t.is_empty())
}

/// Answers one request.
pub(crate) fn handle(store: &mut Store, req: &ApiRequest, base_url: &str) -> Reply {
    let (route, _) = route_of(&req.method, &req.path);
    if route == UNROUTED {
        return grape_error(404, "404 Not Found");
    }
    if !authenticated(req) {
        return message(401, "401 Unauthorized");
    }
    let segs = req.segments();
    let kind = if segs[2] == "projects" { OwnerKind::Project } else { OwnerKind::Group };
    let owner_id = segs[3].clone();
    let key = segs.get(5).cloned();
    let params = match Params::parse(req) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    match (req.method.as_str(), key) {
        ("GET", None) => list(store, kind, &owner_id, &params, req, base_url),
        ("POST", None) => {
            let free = store.free_tier && kind == OwnerKind::Group;
            create(store, kind, &owner_id, &params, free)
        }
        ("GET", Some(key)) => match find(store.list_mut(kind, &owner_id), &key, &params, kind) {
            Ok(i) => Reply::json(200, JSON, &entity(&store.list_mut(kind, &owner_id)[i])),
            Err(reply) => reply,
        },
        ("PUT", Some(key)) => {
            let free = store.free_tier && kind == OwnerKind::Group;
            update(store, kind, &owner_id, &key, &params, free)
        }
        ("DELETE", Some(key)) => {
            let list = store.list_mut(kind, &owner_id);
            match find(list, &key, &params, kind) {
                Ok(i) => {
                    list.remove(i);
                    Reply::empty(204)
                }
                Err(reply) => reply,
            }
        }
        _ => grape_error(405, "405 Not Allowed"),
    }
}

fn not_found(kind: OwnerKind) -> Reply {
    match kind {
        OwnerKind::Project => message(404, "404 Variable Not Found"),
        OwnerKind::Group => message(404, "404 GroupVariable Not Found"),
    }
}

/// `find_variable`: by key, then by `filter[environment_scope]` if given.
fn find(list: &[GitlabVariable], key: &str, params: &Params, kind: OwnerKind) -> Result<usize, Reply> {
    let scope = params.filter_scope();
    let matches: Vec<usize> = list
        .iter()
        .enumerate()
        .filter(|(_, v)| v.key == key && scope.as_ref().is_none_or(|s| &v.environment_scope == s))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [] => Err(not_found(kind)),
        [one] => Ok(*one),
        _ => Err(message(409, MULTIPLE)),
    }
}

fn page_param(params: &Params, name: &str, default: usize) -> Result<usize, String> {
    match params.text(name) {
        None => Ok(default),
        Some(s) if s.is_empty() => Ok(default),
        Some(s) => {
            s.trim().parse::<i64>().map(|n| if n < 1 { default } else { n as usize }).map_err(|_| name.to_string())
        }
    }
}

fn list(store: &mut Store, kind: OwnerKind, owner: &str, params: &Params, req: &ApiRequest, base_url: &str) -> Reply {
    let page = page_param(params, "page", 1);
    let per_page = page_param(params, "per_page", DEFAULT_PER_PAGE);
    let invalid: Vec<String> =
        [&page, &per_page].iter().filter_map(|r| r.as_ref().err()).map(|n| format!("{n} is invalid")).collect();
    if !invalid.is_empty() {
        return grape_error(400, &invalid.join(", "));
    }
    let (page, per_page) = (page.unwrap_or(1), per_page.unwrap_or(DEFAULT_PER_PAGE).min(MAX_PER_PAGE));
    let all = store.list_mut(kind, owner);
    let total = all.len();
    let items: Vec<Value> = all.iter().skip((page - 1).saturating_mul(per_page)).take(per_page).map(entity).collect();
    let total_pages = total.div_ceil(per_page).max(1);
    let next = (page < total_pages).then(|| page + 1);
    let prev = (page > 1).then(|| (page - 1).min(total_pages));
    let link_to = |p: usize| {
        let mut query: Vec<String> = req
            .query
            .iter()
            .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "per_page")
            .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
            .collect();
        query.push(format!("page={p}"));
        query.push(format!("per_page={per_page}"));
        format!("<{base_url}{}?{}>", req.path, query.join("&"))
    };
    let mut links = Vec::new();
    if let Some(p) = prev {
        links.push(format!("{}; rel=\"prev\"", link_to(p)));
    }
    if let Some(n) = next {
        links.push(format!("{}; rel=\"next\"", link_to(n)));
    }
    links.push(format!("{}; rel=\"first\"", link_to(1)));
    links.push(format!("{}; rel=\"last\"", link_to(total_pages)));
    Reply::json(200, JSON, &Value::Array(items))
        .header("link", links.join(", "))
        .header("x-next-page", next.map(|n| n.to_string()).unwrap_or_default())
        .header("x-page", page.to_string())
        .header("x-per-page", per_page.to_string())
        .header("x-prev-page", prev.map(|p| p.to_string()).unwrap_or_default())
        .header("x-total", total.to_string())
        .header("x-total-pages", total_pages.to_string())
}

/// Reads the boolean flags, the way each endpoint declares them.
fn flag(params: &Params, name: &'static str, kind: OwnerKind, invalid: &mut Vec<String>) -> Option<bool> {
    let p = params.get(name)?;
    let parsed = match kind {
        OwnerKind::Project => grape_bool(p),
        OwnerKind::Group => active_record_bool(p),
    };
    if parsed.is_none() && kind == OwnerKind::Project {
        invalid.push(format!("{name} is invalid"));
    }
    parsed
}

fn variable_type(params: &Params, invalid: &mut Vec<String>) -> Option<String> {
    let t = params.text("variable_type")?;
    if t == "env_var" || t == "file" {
        Some(t)
    } else {
        invalid.push("variable_type does not have a valid value".into());
        None
    }
}

fn create(store: &mut Store, kind: OwnerKind, owner: &str, params: &Params, free: bool) -> Reply {
    let mut problems = Vec::new();
    let key = params.text("key");
    let value = params.text("value");
    if key.is_none() {
        problems.push("key is missing".to_string());
    }
    if value.is_none() {
        problems.push("value is missing".to_string());
    }
    let protected = flag(params, "protected", kind, &mut problems);
    let masked = flag(params, "masked", kind, &mut problems);
    let masked_and_hidden = flag(params, "masked_and_hidden", kind, &mut problems);
    let raw = flag(params, "raw", kind, &mut problems);
    let vtype = variable_type(params, &mut problems);
    if !problems.is_empty() {
        return grape_error(400, &problems.join(", "));
    }
    let hidden = masked_and_hidden.unwrap_or(false);
    let variable = GitlabVariable {
        key: key.unwrap_or_default(),
        value: value.unwrap_or_default(),
        variable_type: vtype.unwrap_or_else(|| "env_var".into()),
        protected: protected.unwrap_or(false),
        masked: hidden || masked.unwrap_or(false),
        hidden,
        raw: raw.unwrap_or(false),
        environment_scope: params.text("environment_scope").filter(|_| !free).unwrap_or_else(|| "*".into()),
        description: params.text("description"),
    };
    let list = store.list_mut(kind, owner);
    let mut errors = Errors::default();
    validate(&variable, list, &mut errors);
    if let Some(reply) = errors.into_reply() {
        return reply;
    }
    let body = entity(&variable);
    list.push(variable);
    Reply::json(201, JSON, &body)
}

fn update(store: &mut Store, kind: OwnerKind, owner: &str, key: &str, params: &Params, free: bool) -> Reply {
    let mut problems = Vec::new();
    let protected = flag(params, "protected", kind, &mut problems);
    let masked = flag(params, "masked", kind, &mut problems);
    let raw = flag(params, "raw", kind, &mut problems);
    let vtype = variable_type(params, &mut problems);
    if !problems.is_empty() {
        return grape_error(400, &problems.join(", "));
    }
    let list = store.list_mut(kind, owner);
    let index = match kind {
        OwnerKind::Project => find(list, key, params, kind),
        // Group PUT: find_variable only with a filter, and the service's
        // own lookup by key when that found nothing (or no filter was given).
        OwnerKind::Group => {
            let found = if params.has_filter() { find(list, key, params, kind).map(Some) } else { Ok(None) };
            match found {
                Ok(Some(i)) => Ok(i),
                Err(reply) if reply.status == 409 => Err(reply),
                _ => list.iter().position(|v| v.key == key).ok_or_else(|| not_found(kind)),
            }
        }
    };
    let index = match index {
        Ok(i) => i,
        Err(reply) => return reply,
    };
    let before = list[index].clone();
    let mut v = before.clone();
    if let Some(value) = params.text("value") {
        v.value = value;
    }
    if let Some(p) = protected {
        v.protected = p;
    }
    if let Some(m) = masked {
        v.masked = m;
    }
    if let Some(r) = raw {
        v.raw = r;
    }
    if let Some(t) = vtype {
        v.variable_type = t;
    }
    if let Some(scope) = params.text("environment_scope").filter(|_| !free) {
        v.environment_scope = scope;
    }
    if params.get("description").is_some() {
        v.description = params.text("description");
    }
    let mut errors = Errors::default();
    let others: Vec<GitlabVariable> =
        list.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, o)| o.clone()).collect();
    validate(&v, &others, &mut errors);
    if before.hidden && v.masked != before.masked {
        errors.add("base", "The visibility setting cannot be changed for masked and hidden variables.");
    }
    if let Some(reply) = errors.into_reply() {
        return reply;
    }
    let body = entity(&v);
    list[index] = v;
    Reply::json(200, JSON, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_rules_follow_both_regexes() {
        assert!(maskable("abcdEFGH"));
        assert!(maskable("a+b/c=d@e:f.g~h-i_j"));
        assert!(!maskable("short7c"));
        assert!(!maskable("has space here"));
        assert!(!maskable("dollar$VARIABLE"));
        assert!(!maskable("ünïcödé!!"));
        assert!(maskable_raw("dollar$VARIABLE"));
        assert!(maskable_raw("HelloWorld%#^"));
        assert!(!maskable_raw("two\nlines!!"));
        assert!(!maskable_raw("has space here"));
    }

    #[test]
    fn routes_name_patterns_and_verbs() {
        assert_eq!(
            route_of(&Method::GET, "/api/v4/projects/group%2Fapp/variables"),
            (ROUTE_PROJECT_LIST, Some(Verb::List))
        );
        assert_eq!(route_of(&Method::PUT, "/api/v4/groups/7/variables/K"), (ROUTE_GROUP_ITEM, Some(Verb::Update)));
        assert_eq!(route_of(&Method::PATCH, "/api/v4/groups/7/variables/K"), (ROUTE_GROUP_ITEM, None));
        assert_eq!(route_of(&Method::GET, "/api/v4/projects/group/app/variables").0, UNROUTED);
    }
}
