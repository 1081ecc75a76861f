//! The GitHub REST endpoints for Actions secrets and variables of a
//! repository, an organization and a repository environment, as pure
//! functions of the store and a fully read request.
//!
//! Decisions (GitHub's REST docs and OpenAPI description, and error bodies
//! GitHub was seen to send):
//! - Error bodies are `{"message", "documentation_url", "status"}`, with
//!   `status` a string and `documentation_url` the operation's docs page.
//! - Request bodies are checked against the operation's schema first:
//!   missing required properties answer 422 `Invalid request.\n\n"key_id"
//!   wasn't supplied.`; an `encrypted_value` that is not Base64 answers
//!   422 `Invalid request.\n\n<value> does not match /<pattern>/.`.
//! - Secrets are libsodium sealed boxes for the scope's current X25519 key;
//!   one that does not open with it (or names another `key_id`) answers
//!   422 `Bad request - validation failed due to an improperly encrypted secret`.
//! - Names are case-insensitive and stored upper-case; `[A-Za-z0-9_]`, not
//!   starting with a digit, not starting with `GITHUB_`.
//! - Timestamps have second resolution, like GitHub's: two writes within
//!   one second leave equal `updated_at` (the emulator's clock can be frozen
//!   and moved by a test to pin either case).
//! - Lists are sorted by name; a `Link` header appears only when there is
//!   more than one page.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::SecretKey;
use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::RngCore;
use hyper::Method;
use serde_json::{Map, Value, json};

use crate::Verb;
use crate::github::GithubScope;
use crate::plumbing::{ApiRequest, Injected, Reply};
use crate::time::{Clock, format_unix};

const JSON: &str = "application/json; charset=utf-8";
const API_VERSION: &str = "2022-11-28";
const REST_DOCS: &str = "https://docs.github.com/rest";
const ENCRYPTED_VALUE_PATTERN: &str =
    r"^(?:[A-Za-z0-9+\/]{4})*(?:[A-Za-z0-9+\/]{2}==|[A-Za-z0-9+\/]{3}=|[A-Za-z0-9+\/]{4})$";
const SECONDARY_RATE_LIMIT: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.";
const SECONDARY_RATE_LIMIT_DOCS: &str = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
const PRIMARY_RATE_LIMIT: &str = "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.";
const PRIMARY_RATE_LIMIT_DOCS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";
/// GitHub's documented limits ("Secrets reference", "Variables reference"):
/// 48 KB a value, and how many a scope may hold.
pub(crate) const MAX_VALUE_BYTES: usize = 48 * 1024;
const MAX_SECRETS: [(ScopeKind, usize); 3] = [(ScopeKind::Repo, 100), (ScopeKind::Env, 100), (ScopeKind::Org, 1000)];
const MAX_VARIABLES: [(ScopeKind, usize); 3] = [(ScopeKind::Repo, 500), (ScopeKind::Env, 100), (ScopeKind::Org, 1000)];

fn most(table: &[(ScopeKind, usize); 3], kind: ScopeKind) -> usize {
    table.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
}

/// Which kind of thing a request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Secrets,
    PublicKey,
    Secret,
    Variables,
    Variable,
}

/// The route patterns, as in GitHub's OpenAPI description.
pub(crate) fn pattern(scope: ScopeKind, resource: Resource) -> &'static str {
    use Resource::*;
    use ScopeKind::*;
    match (scope, resource) {
        (Repo, Secrets) => "/repos/{owner}/{repo}/actions/secrets",
        (Repo, PublicKey) => "/repos/{owner}/{repo}/actions/secrets/public-key",
        (Repo, Secret) => "/repos/{owner}/{repo}/actions/secrets/{secret_name}",
        (Repo, Variables) => "/repos/{owner}/{repo}/actions/variables",
        (Repo, Variable) => "/repos/{owner}/{repo}/actions/variables/{name}",
        (Org, Secrets) => "/orgs/{org}/actions/secrets",
        (Org, PublicKey) => "/orgs/{org}/actions/secrets/public-key",
        (Org, Secret) => "/orgs/{org}/actions/secrets/{secret_name}",
        (Org, Variables) => "/orgs/{org}/actions/variables",
        (Org, Variable) => "/orgs/{org}/actions/variables/{name}",
        (Env, Secrets) => "/repos/{owner}/{repo}/environments/{environment_name}/secrets",
        (Env, PublicKey) => "/repos/{owner}/{repo}/environments/{environment_name}/secrets/public-key",
        (Env, Secret) => "/repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}",
        (Env, Variables) => "/repos/{owner}/{repo}/environments/{environment_name}/variables",
        (Env, Variable) => "/repos/{owner}/{repo}/environments/{environment_name}/variables/{name}",
    }
}

pub(crate) const UNROUTED: &str = "unrouted";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    Repo,
    Org,
    Env,
}

/// A routed request: scope, resource and the name in the path, if any.
struct Route {
    scope: GithubScope,
    resource: Resource,
    name: Option<String>,
}

fn route(segs: &[String]) -> Option<Route> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (scope, rest): (GithubScope, &[&str]) = match s.as_slice() {
        ["repos", owner, repo, "environments", env, rest @ ..] => (GithubScope::environment(*owner, *repo, *env), rest),
        ["repos", owner, repo, "actions", rest @ ..] => (GithubScope::repo(*owner, *repo), rest),
        ["orgs", org, "actions", rest @ ..] => (GithubScope::org(*org), rest),
        _ => return None,
    };
    let (resource, name) = match rest {
        ["secrets"] => (Resource::Secrets, None),
        ["secrets", "public-key"] => (Resource::PublicKey, None),
        ["secrets", name] => (Resource::Secret, Some(name.to_string())),
        ["variables"] => (Resource::Variables, None),
        ["variables", name] => (Resource::Variable, Some(name.to_string())),
        _ => return None,
    };
    Some(Route { scope, resource, name })
}

fn verb(method: &Method, resource: Resource) -> Option<Verb> {
    use Resource::*;
    Some(match (method.as_str(), resource) {
        ("GET", Secrets | Variables) => Verb::List,
        ("GET", PublicKey | Secret | Variable) => Verb::Get,
        ("PUT", Secret) => Verb::Update,
        ("POST", Variables) => Verb::Create,
        ("PATCH", Variable) => Verb::Patch,
        ("DELETE", Secret | Variable) => Verb::Delete,
        _ => return None,
    })
}

/// Route pattern and fault-filter verb of a request.
pub(crate) fn route_of(method: &Method, path: &str) -> (&'static str, Option<Verb>) {
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(crate::plumbing::decode_segment).collect();
    match route(&segs) {
        Some(r) => (pattern(r.scope.kind(), r.resource), verb(method, r.resource)),
        None => (UNROUTED, None),
    }
}

/// The operation's documentation page, as GitHub puts in error bodies.
fn docs(scope: ScopeKind, resource: Resource, method: &Method) -> String {
    let (one, many) = match scope {
        ScopeKind::Repo => ("a-repository", "repository"),
        ScopeKind::Org => ("an-organization", "organization"),
        ScopeKind::Env => ("an-environment", "environment"),
    };
    let (page, op) = match (resource, method.as_str()) {
        (Resource::Secrets, _) => ("secrets", format!("list-{many}-secrets")),
        (Resource::PublicKey, _) => ("secrets", format!("get-{one}-public-key")),
        (Resource::Secret, "PUT") => ("secrets", format!("create-or-update-{one}-secret")),
        (Resource::Secret, "DELETE") => ("secrets", format!("delete-{one}-secret")),
        (Resource::Secret, _) => ("secrets", format!("get-{one}-secret")),
        (Resource::Variables, "POST") => ("variables", format!("create-{one}-variable")),
        (Resource::Variables, _) => ("variables", format!("list-{many}-variables")),
        (Resource::Variable, "PATCH") => ("variables", format!("update-{one}-variable")),
        (Resource::Variable, "DELETE") => ("variables", format!("delete-{one}-variable")),
        (Resource::Variable, _) => ("variables", format!("get-{one}-variable")),
    };
    format!("https://docs.github.com/rest/actions/{page}#{op}")
}

fn error(status: u16, message: &str, docs: &str) -> Reply {
    Reply::json(status, JSON, &json!({"message": message, "documentation_url": docs, "status": status.to_string()}))
        .header("x-github-api-version-selected", API_VERSION)
}

/// 500 and rate-limit answers for injected faults.
pub(crate) fn fault_reply(injected: &Injected) -> Reply {
    match injected {
        Injected::RateLimit { retry_after_secs, secondary } => {
            let status = if *secondary { 403 } else { 429 };
            error(status, SECONDARY_RATE_LIMIT, SECONDARY_RATE_LIMIT_DOCS)
                .header("retry-after", retry_after_secs.to_string())
        }
        _ => error(500, "Server Error", REST_DOCS),
    }
}

/// An X25519 key pair of one scope.
pub(crate) struct KeyPair {
    pub key_id: String,
    pub secret: SecretKey,
    /// Derived once: an X25519 base-point multiplication costs milliseconds
    /// in a debug build.
    public: [u8; 32],
}

impl KeyPair {
    fn generate() -> KeyPair {
        // GitHub's key ids are decimal strings of about 19 digits.
        let key_id = (OsRng.next_u64() % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000).to_string();
        let secret = SecretKey::generate(&mut OsRng);
        let public = *secret.public_key().as_bytes();
        KeyPair { key_id, secret, public }
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }
}

#[derive(Clone)]
pub(crate) struct StoredSecret {
    pub name: String,
    pub plaintext: Vec<u8>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Org secrets only.
    pub visibility: Option<String>,
    pub selected_repository_ids: Vec<Value>,
}

#[derive(Clone)]
pub(crate) struct StoredVariable {
    pub name: String,
    pub value: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// Org variables only.
    pub visibility: Option<String>,
    pub selected_repository_ids: Vec<Value>,
}

/// Everything one repository, organization or environment holds.
#[derive(Default)]
pub(crate) struct ScopeData {
    pub keys: Option<KeyPair>,
    /// By upper-case name, so lists come out sorted.
    pub secrets: BTreeMap<String, StoredSecret>,
    pub variables: BTreeMap<String, StoredVariable>,
}

impl ScopeData {
    pub fn keys(&mut self) -> &KeyPair {
        self.keys.get_or_insert_with(KeyPair::generate)
    }

    pub fn rotate(&mut self) {
        self.keys = Some(KeyPair::generate());
    }
}

#[derive(Default)]
pub(crate) struct Store {
    pub scopes: BTreeMap<GithubScope, ScopeData>,
    /// Repository environments that exist (normalized scopes): GitHub
    /// answers 404 for the secrets and variables of any other.
    pub environments: BTreeSet<GithubScope>,
    /// Rate-limit answers to give to the next requests, in order.
    pub limits: VecDeque<Limit>,
}

impl Store {
    pub fn scope(&mut self, scope: &GithubScope) -> &mut ScopeData {
        self.scopes.entry(scope.normalized()).or_default()
    }

    /// Whether requests may address `scope`: repositories and
    /// organizations always, environments once created.
    pub fn exists(&self, scope: &GithubScope) -> bool {
        scope.kind() != ScopeKind::Env || self.environments.contains(&scope.normalized())
    }
}

/// A rate-limit answer GitHub gives, as the REST docs describe them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A secondary rate limit answered 403 with neither `retry-after` nor
    /// `x-ratelimit-remaining: 0`: the client must wait at least a minute.
    SecondaryWithoutRetryAfter,
    /// The primary limit: 403, `x-ratelimit-remaining: 0` and
    /// `x-ratelimit-reset` at this Unix time.
    PrimaryExhausted { reset_unix: u64 },
}

fn limit_reply(limit: Limit, now: u64) -> Reply {
    match limit {
        Limit::SecondaryWithoutRetryAfter => error(403, SECONDARY_RATE_LIMIT, SECONDARY_RATE_LIMIT_DOCS)
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "4990")
            .header("x-ratelimit-reset", (now + 3600).to_string()),
        Limit::PrimaryExhausted { reset_unix } => error(403, PRIMARY_RATE_LIMIT, PRIMARY_RATE_LIMIT_DOCS)
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-used", "5000")
            .header("x-ratelimit-resource", "core")
            .header("x-ratelimit-reset", reset_unix.to_string()),
    }
}

fn authenticated(req: &ApiRequest) -> bool {
    req.header("authorization").is_some_and(|a| {
        let a = a.trim();
        let credentials = a.split_once(' ').map(|(_, c)| c.trim()).unwrap_or_default();
        let scheme = a.split(' ').next().unwrap_or_default().to_ascii_lowercase();
        matches!(scheme.as_str(), "bearer" | "token" | "basic") && !credentials.is_empty()
    })
}

/// What `secret_names` rules reject, in GitHub's words.
pub(crate) fn name_problem(name: &str, what: &str) -> Option<String> {
    let valid_chars = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid_chars {
        return Some(format!(
            "{what} names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_). Spaces are not allowed. Must start with a letter ([a-z], [A-Z]) or underscores (_)."
        ));
    }
    if name.to_ascii_uppercase().starts_with("GITHUB_") {
        return Some(format!("{what} names must not start with GITHUB_."));
    }
    None
}

fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return false;
    }
    let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let (body, tail) = b.split_at(b.len() - 4);
    body.iter().all(|c| alphabet(*c))
        && match tail {
            [a, b2, b'=', b'='] => alphabet(*a) && alphabet(*b2),
            [a, b2, c, b'='] => alphabet(*a) && alphabet(*b2) && alphabet(*c),
            [a, b2, c, d] => [a, b2, c, d].iter().all(|x| alphabet(**x)),
            _ => false,
        }
}

/// The body, checked against the operation's schema: an object whose
/// `strings` are strings (when present) and whose `required` are present.
fn body_object(
    req: &ApiRequest,
    required: &[&str],
    strings: &[&str],
    enums: &[(&str, &[&str])],
    docs: &str,
) -> Result<Map<String, Value>, Reply> {
    let value: Value = if req.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&req.body).map_err(|_| error(400, "Problems parsing JSON", docs))?
    };
    let Value::Object(map) = value else {
        return Err(error(422, &format!("Invalid request.\n\nFor 'links/0/schema', {value} is not an object."), docs));
    };
    let missing: Vec<String> = required.iter().filter(|r| !map.contains_key(**r)).map(|r| format!("\"{r}\"")).collect();
    match missing.len() {
        0 => {}
        1 => return Err(error(422, &format!("Invalid request.\n\n{} wasn't supplied.", missing[0]), docs)),
        _ => return Err(error(422, &format!("Invalid request.\n\n{} weren't supplied.", missing.join(", ")), docs)),
    }
    for name in strings {
        if let Some(v) = map.get(*name)
            && !v.is_string()
        {
            return Err(error(
                422,
                &format!("Invalid request.\n\nFor 'properties/{name}', {v} is not a string."),
                docs,
            ));
        }
    }
    for (name, allowed) in enums {
        if let Some(v) = map.get(*name).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            return Err(error(
                422,
                &format!("Invalid request.\n\nFor 'properties/{name}', \"{v}\" is not one of [{}].", list.join(", ")),
                docs,
            ));
        }
    }
    Ok(map)
}

const VISIBILITIES: &[&str] = &["all", "private", "selected"];

/// Answers one request.
pub(crate) fn handle(store: &mut Store, clock: &Clock, req: &ApiRequest, base_url: &str) -> Reply {
    let segs = req.segments();
    let Some(Route { scope, resource, name }) = route(&segs) else {
        return error(404, "Not Found", REST_DOCS);
    };
    let kind = scope.kind();
    let docs = docs(kind, resource, &req.method);
    if verb(&req.method, resource).is_none() {
        return error(404, "Not Found", REST_DOCS);
    }
    if !authenticated(req) {
        return error(401, "Requires authentication", REST_DOCS);
    }
    if let Some(limit) = store.limits.pop_front() {
        return limit_reply(limit, clock.now());
    }
    if !store.exists(&scope) {
        return error(404, "Not Found", &docs);
    }
    let data = store.scope(&scope);
    let reply = match (resource, name) {
        (Resource::PublicKey, _) => {
            let keys = data.keys();
            Reply::json(200, JSON, &json!({"key_id": keys.key_id, "key": B64.encode(keys.public_bytes())}))
        }
        (Resource::Secrets, _) => {
            let (per_page, page) = paging(req, 30, 100);
            let total = data.secrets.len();
            let items: Vec<Value> = data
                .secrets
                .values()
                .skip((page - 1).saturating_mul(per_page))
                .take(per_page)
                .map(|s| secret_entity(s, &scope, base_url))
                .collect();
            with_links(
                Reply::json(200, JSON, &json!({"total_count": total, "secrets": items})),
                req,
                base_url,
                total,
                per_page,
                page,
            )
        }
        (Resource::Variables, None) if req.method == Method::GET => {
            let (per_page, page) = paging(req, 10, 30);
            let total = data.variables.len();
            let items: Vec<Value> = data
                .variables
                .values()
                .skip((page - 1).saturating_mul(per_page))
                .take(per_page)
                .map(|v| variable_entity(v, &scope, base_url))
                .collect();
            with_links(
                Reply::json(200, JSON, &json!({"total_count": total, "variables": items})),
                req,
                base_url,
                total,
                per_page,
                page,
            )
        }
        (Resource::Variables, _) => create_variable(data, clock, req, kind, &docs),
        (Resource::Secret, Some(name)) => match req.method.as_str() {
            "GET" => match data.secrets.get(&name.to_ascii_uppercase()) {
                Some(s) => Reply::json(200, JSON, &secret_entity(s, &scope, base_url)),
                None => error(404, "Not Found", &docs),
            },
            "DELETE" => match data.secrets.remove(&name.to_ascii_uppercase()) {
                Some(_) => Reply::empty(204),
                None => error(404, "Not Found", &docs),
            },
            _ => put_secret(data, clock, req, kind, &name, &docs),
        },
        (Resource::Variable, Some(name)) => match req.method.as_str() {
            "GET" => match data.variables.get(&name.to_ascii_uppercase()) {
                Some(v) => Reply::json(200, JSON, &variable_entity(v, &scope, base_url)),
                None => error(404, "Not Found", &docs),
            },
            "DELETE" => match data.variables.remove(&name.to_ascii_uppercase()) {
                Some(_) => Reply::empty(204),
                None => error(404, "Not Found", &docs),
            },
            _ => update_variable(data, clock, req, kind, &name, &docs),
        },
        (Resource::Secret | Resource::Variable, None) => error(404, "Not Found", REST_DOCS),
    };
    reply.header("x-github-api-version-selected", API_VERSION)
}

/// `per_page` and `page`, defaulted and clamped (GitHub ignores values it
/// cannot read).
fn paging(req: &ApiRequest, default: usize, max: usize) -> (usize, usize) {
    let read = |name: &str| req.query.get(name).and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0);
    (read("per_page").unwrap_or(default).min(max), read("page").unwrap_or(1))
}

fn with_links(reply: Reply, req: &ApiRequest, base_url: &str, total: usize, per_page: usize, page: usize) -> Reply {
    let last = total.div_ceil(per_page).max(1);
    if last <= 1 {
        return reply;
    }
    let link = |p: usize, rel: &str| format!("<{base_url}{}?per_page={per_page}&page={p}>; rel=\"{rel}\"", req.path);
    let mut links = Vec::new();
    if page > 1 {
        links.push(link((page - 1).min(last), "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    reply.header("link", links.join(", "))
}

fn repositories_url(scope: &GithubScope, base_url: &str, collection: &str, name: &str) -> String {
    let org = match scope {
        GithubScope::Org { org } => org.as_str(),
        _ => "",
    };
    format!("{base_url}/orgs/{org}/actions/{collection}/{name}/repositories")
}

fn secret_entity(s: &StoredSecret, scope: &GithubScope, base_url: &str) -> Value {
    let mut v =
        json!({"name": s.name, "created_at": format_unix(s.created_at), "updated_at": format_unix(s.updated_at)});
    if let Some(visibility) = &s.visibility {
        v["visibility"] = visibility.clone().into();
        if visibility == "selected" {
            v["selected_repositories_url"] = repositories_url(scope, base_url, "secrets", &s.name).into();
        }
    }
    v
}

fn variable_entity(s: &StoredVariable, scope: &GithubScope, base_url: &str) -> Value {
    let mut v = json!({
        "name": s.name, "value": s.value,
        "created_at": format_unix(s.created_at), "updated_at": format_unix(s.updated_at),
    });
    if let Some(visibility) = &s.visibility {
        v["visibility"] = visibility.clone().into();
        if visibility == "selected" {
            v["selected_repositories_url"] = repositories_url(scope, base_url, "variables", &s.name).into();
        }
    }
    v
}

fn selected_ids(map: &Map<String, Value>) -> Vec<Value> {
    map.get("selected_repository_ids").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn put_secret(data: &mut ScopeData, clock: &Clock, req: &ApiRequest, kind: ScopeKind, name: &str, docs: &str) -> Reply {
    let org = kind == ScopeKind::Org;
    let required: &[&str] = if org { &["visibility"] } else { &["encrypted_value", "key_id"] };
    let enums: &[(&str, &[&str])] = if org { &[("visibility", VISIBILITIES)] } else { &[] };
    let map = match body_object(req, required, &["encrypted_value", "key_id", "visibility"], enums, docs) {
        Ok(m) => m,
        Err(reply) => return reply,
    };
    let encrypted = map.get("encrypted_value").and_then(Value::as_str);
    if let Some(e) = encrypted
        && !is_base64(e)
    {
        return error(422, &format!("Invalid request.\n\n{e} does not match /{ENCRYPTED_VALUE_PATTERN}/."), docs);
    }
    if let Some(problem) = name_problem(name, "Secret") {
        return error(422, &problem, docs);
    }
    // An org secret PUT may leave the value out (visibility-only change of
    // an existing secret); a new one needs it.
    let improperly = || error(422, "Bad request - validation failed due to an improperly encrypted secret", docs);
    let key = name.to_ascii_uppercase();
    let plaintext = match encrypted {
        Some(e) => {
            let keys = data.keys();
            if map.get("key_id").and_then(Value::as_str) != Some(keys.key_id.as_str()) {
                return improperly();
            }
            let Ok(sealed) = B64.decode(e) else { return improperly() };
            match keys.secret.unseal(&sealed) {
                Ok(p) => Some(p),
                Err(_) => return improperly(),
            }
        }
        None => None,
    };
    if plaintext.as_ref().is_some_and(|p| p.len() > MAX_VALUE_BYTES) {
        return error(422, "Secret value is too large (48 KB max)", docs);
    }
    if !data.secrets.contains_key(&key) && data.secrets.len() >= most(&MAX_SECRETS, kind) {
        return error(
            422,
            &format!("Limit reached - there can be at most {} secrets here", most(&MAX_SECRETS, kind)),
            docs,
        );
    }
    let now = clock.now();
    let visibility = map.get("visibility").and_then(Value::as_str).map(str::to_string);
    match data.secrets.get_mut(&key) {
        Some(s) => {
            if let Some(p) = plaintext {
                s.plaintext = p;
            }
            s.updated_at = now;
            if org {
                s.visibility = visibility;
                s.selected_repository_ids = selected_ids(&map);
            }
            Reply::empty(204)
        }
        None => {
            let Some(plaintext) = plaintext else { return improperly() };
            data.secrets.insert(
                key.clone(),
                StoredSecret {
                    name: key,
                    plaintext,
                    created_at: now,
                    updated_at: now,
                    visibility: if org { visibility } else { None },
                    selected_repository_ids: selected_ids(&map),
                },
            );
            Reply::json(201, JSON, &json!({}))
        }
    }
}

fn create_variable(data: &mut ScopeData, clock: &Clock, req: &ApiRequest, kind: ScopeKind, docs: &str) -> Reply {
    let org = kind == ScopeKind::Org;
    let required: &[&str] = if org { &["name", "value", "visibility"] } else { &["name", "value"] };
    let enums: &[(&str, &[&str])] = if org { &[("visibility", VISIBILITIES)] } else { &[] };
    let map = match body_object(req, required, &["name", "value", "visibility"], enums, docs) {
        Ok(m) => m,
        Err(reply) => return reply,
    };
    let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
    if let Some(problem) = name_problem(name, "Variable") {
        return error(422, &problem, docs);
    }
    let key = name.to_ascii_uppercase();
    if data.variables.contains_key(&key) {
        return error(409, "Already exists - Variable already exists", docs);
    }
    if map.get("value").and_then(Value::as_str).is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
        return error(422, "Variable value is too large (48 KB max)", docs);
    }
    if data.variables.len() >= most(&MAX_VARIABLES, kind) {
        return error(
            422,
            &format!("Limit reached - there can be at most {} variables here", most(&MAX_VARIABLES, kind)),
            docs,
        );
    }
    let now = clock.now();
    data.variables.insert(
        key.clone(),
        StoredVariable {
            name: key,
            value: map.get("value").and_then(Value::as_str).unwrap_or_default().to_string(),
            created_at: now,
            updated_at: now,
            visibility: if org { map.get("visibility").and_then(Value::as_str).map(str::to_string) } else { None },
            selected_repository_ids: selected_ids(&map),
        },
    );
    Reply::json(201, JSON, &json!({}))
}

fn update_variable(
    data: &mut ScopeData,
    clock: &Clock,
    req: &ApiRequest,
    kind: ScopeKind,
    name: &str,
    docs: &str,
) -> Reply {
    let org = kind == ScopeKind::Org;
    let enums: &[(&str, &[&str])] = if org { &[("visibility", VISIBILITIES)] } else { &[] };
    let map = match body_object(req, &[], &["name", "value", "visibility"], enums, docs) {
        Ok(m) => m,
        Err(reply) => return reply,
    };
    let key = name.to_ascii_uppercase();
    if !data.variables.contains_key(&key) {
        return error(404, "Not Found", docs);
    }
    if map.get("value").and_then(Value::as_str).is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
        return error(422, "Variable value is too large (48 KB max)", docs);
    }
    let new_key = match map.get("name").and_then(Value::as_str) {
        Some(new) => {
            if let Some(problem) = name_problem(new, "Variable") {
                return error(422, &problem, docs);
            }
            let new = new.to_ascii_uppercase();
            if new != key && data.variables.contains_key(&new) {
                return error(409, "Already exists - Variable already exists", docs);
            }
            new
        }
        None => key.clone(),
    };
    let Some(mut v) = data.variables.remove(&key) else { return error(404, "Not Found", docs) };
    if let Some(value) = map.get("value").and_then(Value::as_str) {
        v.value = value.to_string();
    }
    if org {
        if let Some(visibility) = map.get("visibility").and_then(Value::as_str) {
            v.visibility = Some(visibility.to_string());
        }
        if map.contains_key("selected_repository_ids") {
            v.selected_repository_ids = selected_ids(&map);
        }
    }
    v.name = new_key.clone();
    v.updated_at = clock.now();
    data.variables.insert(new_key, v);
    Reply::empty(204)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_githubs_rules() {
        assert_eq!(name_problem("DB_PASSWORD", "Secret"), None);
        assert_eq!(name_problem("_x1", "Secret"), None);
        assert!(name_problem("1ABC", "Secret").unwrap().starts_with("Secret names can only contain"));
        assert!(name_problem("A-B", "Variable").unwrap().starts_with("Variable names can only contain"));
        assert!(name_problem("", "Secret").is_some());
        assert_eq!(
            name_problem("github_token", "Secret").as_deref(),
            Some("Secret names must not start with GITHUB_.")
        );
    }

    #[test]
    fn base64_check_matches_the_openapi_pattern() {
        assert!(is_base64("c2VjcmV0"));
        assert!(is_base64("YQ=="));
        assert!(is_base64("YWI="));
        assert!(!is_base64(""));
        assert!(!is_base64("YQ="));
        assert!(!is_base64("ainsdr-34234vsdf-dfdf"));
        assert!(!is_base64("Y=Q="));
    }

    #[test]
    fn routes_name_patterns_and_verbs() {
        assert_eq!(
            route_of(&Method::PUT, "/repos/o/r/environments/prod/secrets/A"),
            ("/repos/{owner}/{repo}/environments/{environment_name}/secrets/{secret_name}", Some(Verb::Update))
        );
        assert_eq!(route_of(&Method::GET, "/orgs/o/actions/secrets/public-key").1, Some(Verb::Get));
        assert_eq!(route_of(&Method::POST, "/orgs/o/actions/secrets/X").1, None);
        assert_eq!(route_of(&Method::GET, "/repos/o/r/actions/runs").0, UNROUTED);
    }
}
