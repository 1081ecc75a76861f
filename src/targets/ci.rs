//! What the CI kinds ([`super::gitlab`], [`super::github`]) share: their
//! errors, one HTTP client with bounded retries, and config checks.
//!
//! Decisions:
//! - **One TLS stack**: `reqwest` with rustls (aws-lc-rs), the client vaultrs
//!   already brings; no second HTTP or TLS library.
//! - **Tokens never leave their header**: read from the environment when a
//!   destination is observed, held in a [`SecretString`], sent as a header
//!   marked sensitive; no redirect is followed (a redirect to another host
//!   would carry `PRIVATE-TOKEN` there); request bodies are never logged.
//! - **Rate limits are honoured, within bounds**: 429, and 403 carrying
//!   `Retry-After`, `x-ratelimit-remaining: 0` or GitHub's "secondary rate
//!   limit" message, wait as the server asks (`Retry-After`, else
//!   `x-ratelimit-reset` when the remaining count is 0, else at least a
//!   minute, doubling while it repeats, as GitHub documents), by the
//!   client's [`Clock`] (a test's does not sleep), at most [`Retry::attempts`] tries and
//!   [`Retry::deadline`] in all for one request; a wait longer than what is
//!   left fails the request at once, naming the wait. 5xx answers and
//!   connection failures are tried [`Retry::error_attempts`] times (0.5 s,
//!   then 1 s apart), only for requests that may be repeated (not POST: a
//!   create that reached the server would fail as a duplicate). A server
//!   that is still failing then fails the destination for this pass; the
//!   next pass (the service backs failing targets off) tries again.
//! - **Answers to secret writes are not quoted**: an error body could echo
//!   what was sent, so errors of requests that carried a secret say only the
//!   status.
//! - Plain `http://` is accepted only for loopback addresses (tests,
//!   emulators): anything else would send the token in clear.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::secret::SecretString;
use crate::targets::registry::{Problems, SpecInput};

/// A failed CI request or a refused CI item. Names destinations, keys and
/// entries, never a value or a token. `Clone`: one unreachable destination
/// fails each of its targets with it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CiError {
    #[error("{dest}: the API token is not set: export {var} (or name another variable with token_env = \"...\")")]
    NoToken { dest: String, var: String },
    #[error("{dest}: {op}: {cause}")]
    Connect { dest: String, op: String, cause: String },
    #[error("{dest}: {op}: HTTP {status}{detail}")]
    Status { dest: String, op: String, status: u16, detail: String },
    #[error("{dest}: {op}: rate limited ({detail}); gave up after {attempts} attempt(s): the next pass retries")]
    RateLimited { dest: String, op: String, attempts: u32, detail: String },
    #[error("{dest}: {op}: unexpected answer: {cause}")]
    Answer { dest: String, op: String, cause: String },
    #[error(
        "output {output:?}, entry {entry:?}: GitLab cannot mask this secret value ({reason}), so it is not written to {dest} (variable {key}); nothing was sent. Keep secrets that GitLab cannot mask out of GitLab variables, or encode them (e.g. base64) in the template"
    )]
    Unmaskable { output: String, entry: String, key: String, dest: String, reason: String },
    #[error(
        "{dest}: {what} exists but was not written by cfgsync; not overwritten: delete it, set its description to {marker:?}, or take its value into etcd or Vault with `cfgsync import --adopt` (here: `{adopt}`), to let this instance adopt it"
    )]
    Unmanaged { dest: String, what: String, marker: String, adopt: String },
    #[error(
        "{dest}: {what} is written by output {first:?} and output {second:?}; give one of them another key (`key = \"PREFIX_{{{{ name }}}}\"`)"
    )]
    Duplicate { dest: String, what: String, first: String, second: String },
    #[error(
        "output {output:?} reads secrets but the env's fingerprint key is missing from the secrets source: run `cfgsync policy apply` to create it (or set [fingerprint] key = \"<secret path>#<field>\")"
    )]
    NoFingerprintKey { output: String },
    #[error("{dest}: sealing secret {name} for GitHub failed: {cause}")]
    Seal { dest: String, name: String, cause: String },
    /// GitHub items carry no mark: one cfgsync has no record of is someone else's.
    #[error(
        "{dest}: {what} exists but cfgsync has no record of writing it (made by hand, by another tool or by another cfgsync instance); not written, and never deleted: delete it, or adopt it explicitly with `cfgsync import --adopt` (here: `{adopt}`){after}"
    )]
    Unrecorded { dest: String, what: String, adopt: String, after: String },
    #[error(
        "{dest}: {what} is not deleted: {why} since cfgsync wrote it; delete it by hand if it is not wanted any more"
    )]
    PruneModified { dest: String, what: String, why: String },
    #[error(
        "{dest}: GitLab keeps variable {key} with environment scope \"*\" although scope {scope:?} was asked for: GitLab Free ignores environment_scope on group variables (scoped group variables need Premium), so every env would share one variable. Not written again, and nothing deleted: delete {key} (environment scope *) from the group if it should not be visible to every environment, then use a project target, or environment_scope = \"*\" with one env"
    )]
    FreeTierScope { dest: String, key: String, scope: String },
    #[error(
        "output {output:?}, entry {entry:?}: {what} would be {size} bytes, more than GitHub's limit of {limit} bytes (48 KB); nothing was sent to {dest}"
    )]
    TooLarge { dest: String, what: String, output: String, entry: String, size: usize, limit: usize },
    #[error(
        "{dest}: would hold {count} {what}, more than GitHub's limit of {limit} per {scope}; nothing was sent: write fewer, or spread them over more scopes"
    )]
    TooMany { dest: String, what: &'static str, count: usize, limit: usize, scope: &'static str },
    #[error("{dest}: {op}: HTTP 404: {hint}")]
    NotFound { dest: String, op: String, hint: String },
    #[error("{dest}: {what}: the value is not UTF-8 text, which CI variables and secrets hold; nothing was sent")]
    NotText { dest: String, what: String },
    /// GitLab: marked by another instance (or this one for another env).
    #[error(
        "{dest}: {what} is written by cfgsync instance {owner}, not this one ({ours:?}); not written, and never deleted: to hand it over, remove it from what that instance writes (it then deletes it) and this one creates its own, or set its description to {marker:?} to adopt it as it is"
    )]
    OtherInstance { dest: String, what: String, owner: String, ours: String, marker: String },
}

impl super::KindError for CiError {
    fn code(&self) -> &'static str {
        match self {
            CiError::NoToken { .. } => "no_token",
            CiError::Connect { .. } => "unreachable",
            CiError::Status { .. } => "api_error",
            CiError::RateLimited { .. } => "rate_limited",
            CiError::Answer { .. } => "bad_answer",
            CiError::Unmaskable { .. } => "unmaskable_secret",
            CiError::Unmanaged { .. } => "not_managed",
            CiError::Duplicate { .. } => "duplicate_key",
            CiError::NoFingerprintKey { .. } => "no_fingerprint_key",
            CiError::Seal { .. } => "seal_failed",
            CiError::Unrecorded { .. } => "not_managed",
            CiError::PruneModified { .. } => "prune_modified",
            CiError::FreeTierScope { .. } => "free_tier_scope",
            CiError::TooLarge { .. } => "too_large",
            CiError::TooMany { .. } => "too_many",
            CiError::NotFound { .. } => "not_found",
            CiError::NotText { .. } => "not_text",
            CiError::OtherInstance { .. } => "owned_by_other_instance",
        }
    }

    fn duplicate(&self) -> Box<dyn super::KindError> {
        Box::new(self.clone())
    }
}

/// Reads the API token from the environment variable `var`.
pub fn token(var: &str, dest: &str) -> Result<SecretString, CiError> {
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Ok(SecretString::new(t.trim())),
        _ => Err(CiError::NoToken { dest: dest.to_owned(), var: var.to_owned() }),
    }
}

/// A header value the HTTP stack must not print (`Debug` shows `Sensitive`).
pub fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// How long one request may keep trying.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all when rate limited, the first included.
    pub attempts: u32,
    /// Tries in all on a server error or a failed connection.
    pub error_attempts: u32,
    /// Time in all, waits included, from the first try.
    pub deadline: Duration,
    /// One try's time limit.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 6, error_attempts: 3, deadline: Duration::from_secs(120), timeout: Duration::from_secs(30) }
    }
}

/// One request. The body may hold a secret (`secret`): it is never logged,
/// and answers to it are not quoted in errors.
pub struct Call<'a> {
    pub method: Method,
    pub url: Url,
    pub headers: &'a HeaderMap,
    pub body: Option<Vec<u8>>,
    pub secret: bool,
    /// For messages: the destination and the operation (`listing variables`).
    pub dest: &'a str,
    pub op: String,
}

/// An answer, read in full.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// This answer as an error of `call`.
    pub fn error(&self, call: &Call<'_>) -> CiError {
        let detail = if call.secret {
            " (the answer is not shown: the request carried a secret)".to_owned()
        } else {
            message(&self.body).map(|m| format!(": {m}")).unwrap_or_default()
        };
        CiError::Status { dest: call.dest.to_owned(), op: call.op.clone(), status: self.status, detail }
    }

    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, call: &Call<'_>) -> Result<T, CiError> {
        serde_json::from_slice(&self.body).map_err(|e| CiError::Answer {
            dest: call.dest.to_owned(),
            op: call.op.clone(),
            cause: format!("not the JSON expected: {e}"),
        })
    }
}

/// The `message` (GitLab, GitHub) or `error` (GitLab's Grape) of an error
/// body, escaped and cut.
fn message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = v.get("message").or_else(|| v.get("error"))?;
    let text = match m {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(crate::text::shorten(&crate::text::escape_controls(&text, false), 300).into_owned())
}

/// The time the client waits by: when a request started, the wall clock
/// (`x-ratelimit-reset` is a Unix time) and the waits between tries. A test
/// passes one that records a wait instead of sleeping it, so that a
/// minute-long rate-limit wait is tested in no time.
pub trait Clock: Send + Sync {
    /// A monotonic instant, as time since an arbitrary start.
    fn now(&self) -> Duration;
    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> u64;
    fn sleep(&self, wait: Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real clock: tokio's sleep (so `tokio::time::pause` applies too).
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self { start: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn unix_now(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn sleep(&self, wait: Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(wait))
    }
}

/// The CI kinds' HTTP client.
pub struct Client {
    /// Built at the first request: building it loads the system's CA
    /// certificates, which a pass without CI targets never needs.
    http: std::sync::OnceLock<reqwest::Client>,
    pub retry: Retry,
    clock: std::sync::Arc<dyn Clock>,
    /// Servers with a private CA (`ca_file`, see [`super::ci_tls`]).
    trust: super::ci_tls::Trust,
}

impl Client {
    pub fn new(retry: Retry) -> Self {
        Self {
            http: std::sync::OnceLock::new(),
            retry,
            trust: Default::default(),
            clock: std::sync::Arc::new(SystemClock::default()),
        }
    }

    /// The client of a config's CI targets: default retries, each
    /// server's private CA trusted.
    pub fn for_config(config: &crate::config::Config) -> Self {
        Self::new(Retry::default()).with_trust(super::ci_tls::Trust::from_config(config))
    }

    /// The same client waiting by `clock`.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Trusts each server's private CA (`ca_file` on the targets).
    pub fn with_trust(mut self, trust: super::ci_tls::Trust) -> Self {
        self.trust = trust;
        self
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cfgsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(self.retry.timeout)
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| self.builder().build().unwrap_or_else(|_| reqwest::Client::new()))
    }

    /// The client for `call`: its server's own CA, else the default.
    fn http_for(&self, call: &Call<'_>) -> Result<reqwest::Client, CiError> {
        match self.trust.client_for(&call.url, || self.builder()) {
            None => Ok(self.http().clone()),
            Some(Ok(client)) => Ok(client),
            Some(Err(cause)) => Err(CiError::Connect {
                dest: call.dest.to_owned(),
                op: call.op.clone(),
                cause: format!("TLS: {cause}"),
            }),
        }
    }

    /// Sends `call`, retrying as the module doc says. Any answer that is
    /// not retried is returned, success or not.
    pub async fn send(&self, call: &Call<'_>) -> Result<Answer, CiError> {
        let start = self.clock.now();
        let repeatable = call.method != Method::POST;
        let mut attempt = 0;
        // Secondary rate limits answered without a wait: each waits longer.
        let mut unsaid = 0;
        let http = self.http_for(call)?;
        loop {
            attempt += 1;
            let mut request = http.request(call.method.clone(), call.url.clone()).headers(call.headers.clone());
            if let Some(body) = &call.body {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            let sent = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>(Answer { status, headers, body })
            }
            .await;
            let (wait, failure) = match sent {
                Ok(answer) => {
                    trace!(method = %call.method, path = call.url.path(), status = answer.status, attempt, "CI request");
                    match rate_limit_wait(&answer, self.clock.unix_now(), &mut unsaid) {
                        Some(wait) => {
                            let detail = format!("HTTP {}, retry after {} s", answer.status, wait.as_secs());
                            (wait, Failure::RateLimited(detail))
                        }
                        None if answer.status >= 500 && repeatable => {
                            (backoff(attempt), Failure::Final(answer.error(call)))
                        }
                        None => return Ok(answer),
                    }
                }
                Err(e) => {
                    let cause = describe(&e);
                    let failure =
                        CiError::Connect { dest: call.dest.to_owned(), op: call.op.clone(), cause: cause.clone() };
                    // A connection that was never made sent nothing: safe to repeat.
                    if repeatable || e.is_connect() {
                        (backoff(attempt), Failure::Final(failure))
                    } else {
                        return Err(failure);
                    }
                }
            };
            let left = self.retry.deadline.saturating_sub(self.clock.now().saturating_sub(start));
            let most = match failure {
                Failure::RateLimited(_) => self.retry.attempts,
                Failure::Final(_) => self.retry.error_attempts,
            };
            if attempt >= most || wait > left {
                return Err(match failure {
                    Failure::RateLimited(detail) => CiError::RateLimited {
                        dest: call.dest.to_owned(),
                        op: call.op.clone(),
                        attempts: attempt,
                        detail,
                    },
                    Failure::Final(e) => e,
                });
            }
            debug!(dest = call.dest, op = %call.op, attempt, wait_ms = wait.as_millis() as u64, "CI request retried");
            self.clock.sleep(wait).await;
        }
    }
}

enum Failure {
    RateLimited(String),
    Final(CiError),
}

/// reqwest's error with its causes, without the URL (it is in the message
/// already, as the destination).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::text::shorten(&text, 300).into_owned()
}

/// 0.5 s, 1 s, 2 s, … up to 8 s, with up to 25 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1).min(4));
    base + base.mul_f64(fastrand::f64() * 0.25)
}

/// How long a rate-limited answer asks to wait; `None` when it is not one.
/// GitHub's rules ("Rate limits for the REST API"): a primary limit is a 403
/// or 429 with `x-ratelimit-remaining: 0`, to wait until `x-ratelimit-reset`
/// (Unix seconds, `now` by the client's clock); a secondary limit is a 403
/// or 429 whose message says so: `retry-after` if present, else the reset
/// as above, else at least one minute, longer each time it repeats
/// (`unsaid` counts those). A plain 403 is a permission problem, not retried.
fn rate_limit_wait(answer: &Answer, now: u64, unsaid: &mut u32) -> Option<Duration> {
    let retry_after = answer.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let exhausted = answer.header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    let secondary = matches!(answer.status, 403 | 429)
        && message(&answer.body).is_some_and(|m| m.to_ascii_lowercase().contains("secondary rate limit"));
    let limited = answer.status == 429 || (answer.status == 403 && (retry_after.is_some() || exhausted || secondary));
    if !limited {
        return None;
    }
    if let Some(secs) = retry_after {
        return Some(Duration::from_secs(secs.max(1)));
    }
    let reset = answer.header("x-ratelimit-reset").and_then(|v| v.trim().parse::<u64>().ok());
    if let (true, Some(reset)) = (exhausted, reset) {
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    // Neither header: at least a minute, doubling while it repeats.
    *unsaid += 1;
    Some(Duration::from_secs(60u64.saturating_mul(1 << (*unsaid - 1).min(4))))
}

/// Parses and checks an API base URL from the config: `https://`, or
/// `http://` on a loopback address; no query or fragment. Returns it
/// without a trailing slash.
pub fn check_base_url(text: &str) -> Result<String, String> {
    let text = &*crate::text::redact_urls(text); // refused if redacted: errors never quote a credential
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{text:?} would send the API token unencrypted: use https:// (plain http is allowed only on a loopback address)"
            ));
        }
        other => return Err(format!("{text:?}: unsupported scheme {other:?}: use https://")),
    }
    if host.is_empty() || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{text:?}: give a base URL like \"https://gitlab.example.com\": no query, fragment or user"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The fingerprint an adopted item is recorded with (`cfgsync import
/// --adopt`): never one a rendering produces (those start with `sha256:` or
/// `hmac-sha256:`), so the target's first pass sees "source changed", an
/// update, not drift.
pub const ADOPTED_FINGERPRINT: &str = "imported";

/// Whether a record is of an item a target wrote (not one only adopted,
/// which no target has written yet): only those are ever pruned.
pub fn written_by_a_target(record: &super::state::Record) -> bool {
    !record.output.is_empty() && record.fingerprint != ADOPTED_FINGERPRINT
}

/// Builds a CI target's spec from its table, collecting every problem:
/// what GitLab's and GitHub's `spec::build` share (the server, the token
/// variable, fields rendered per env, each entry's name, one env per
/// destination).
pub struct SpecBuilder<'i, 'a> {
    pub input: &'i SpecInput<'a>,
    pub problems: Problems,
}

impl<'i, 'a> SpecBuilder<'i, 'a> {
    pub fn new(input: &'i SpecInput<'a>) -> Self {
        Self { input, problems: Problems::new() }
    }

    /// A problem of the target: `output "NAME": {message}`.
    pub fn problem(&mut self, message: impl std::fmt::Display) {
        self.problems.push((None, format!("output {:?}: {message}", self.input.output)));
    }

    /// The API base URL (`what`: how the config names it, `gitlab url`),
    /// checked ([`check_base_url`]), without a trailing slash.
    pub fn base_url(&mut self, what: &str, url: Option<&str>, default: &str) -> String {
        check_base_url(url.unwrap_or(default)).unwrap_or_else(|e| {
            self.problem(format!("{what} {e}"));
            String::new()
        })
    }

    /// The environment variable holding the API token.
    pub fn token_env(&mut self, token_env: Option<String>, default: &str) -> String {
        let token_env = token_env.unwrap_or_else(|| default.to_owned());
        if !is_env_var_name(&token_env) {
            self.problem(format!("token_env {token_env:?} is not an environment variable name"));
        }
        token_env
    }

    /// `template` rendered for `env` and checked: `check` says why not
    /// (its message follows `output "NAME": `).
    pub fn field<T>(
        &mut self,
        what: &str,
        template: &str,
        env: &str,
        check: impl FnOnce(String) -> Result<T, String>,
    ) -> Option<T> {
        let rendered = crate::render::render_field(template, &[("env", env)])
            .map_err(|e| format!("{what} {template:?}: {e}"))
            .and_then(check);
        rendered.map_err(|message| self.problem(message)).ok()
    }

    /// The name each entry of the output becomes at one destination: the
    /// target's `key` schema rendered with `env` and the entry's `name`. A
    /// name `invalid` refuses (it says why, completing "entry E would be
    /// NOUN N (env V)…"), and two entries with one name, are problems at
    /// the entry; a key schema that does not render is one problem for the
    /// target, and ends the walk (every entry would fail the same way).
    pub fn names(
        &mut self,
        env: &str,
        key_template: &str,
        noun: &str,
        invalid: impl Fn(&str) -> Option<String>,
    ) -> BTreeMap<String, String> {
        let output = self.input.output;
        let mut names = BTreeMap::new();
        let mut by_name: BTreeMap<String, &str> = BTreeMap::new();
        for e in self.input.entries {
            let name = match crate::render::render_field(key_template, &[("env", env), ("name", &e.name)]) {
                Ok(n) => n,
                Err(err) => {
                    self.problem(format!("key {key_template:?}: {err}"));
                    break;
                }
            };
            let at = Some(e.location.clone());
            if let Some(why) = invalid(&name) {
                let message =
                    format!("output {output:?}: entry {:?} would be {noun} {name:?} (env {env:?}){why}", e.name);
                self.problems.push((at, message));
                continue;
            }
            if let Some(first) = by_name.insert(name.clone(), &e.name) {
                let message =
                    format!("output {output:?}: entries {first:?} and {:?} would both be {noun} {name}", e.name);
                self.problems.push((at, message));
            }
            names.insert(e.name.clone(), name);
        }
        names
    }

    /// Two envs must not write one destination (`dest` of each env's
    /// address): `clash(other, env, dest)` says why.
    pub fn one_env_each<'e, D: Ord>(
        &mut self,
        dests: impl IntoIterator<Item = (&'e String, D)>,
        clash: impl Fn(&str, &str, &D) -> String,
    ) {
        let mut seen: BTreeMap<D, &String> = BTreeMap::new();
        for (env, dest) in dests {
            let clashes = seen.get(&dest).map(|other| clash(other, env, &dest));
            seen.insert(dest, env);
            if let Some(message) = clashes {
                self.problem(message);
            }
        }
    }

    /// The spec, unless a problem was found.
    pub fn finish<T>(self, spec: T) -> Result<T, Problems> {
        if self.problems.is_empty() { Ok(spec) } else { Err(self.problems) }
    }
}

/// Whether `name` can name an environment variable (`token_env`).
pub fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// `base` with `segments` appended, each percent-encoded as one segment
/// (`group/app` becomes `group%2Fapp`).
pub fn url(base: &str, segments: &[&str]) -> Url {
    // `base` was checked by `check_base_url`; a URL that cannot be a base
    // is not possible there.
    let mut url = Url::parse(base).unwrap_or_else(|_| Url::parse("https://invalid.invalid").expect("valid URL"));
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        for s in segments {
            path.push(s);
        }
    }
    url
}

/// Headers of every request to one API: authentication and content
/// negotiation.
pub fn headers(pairs: &[(&'static str, HeaderValue)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(HeaderName::from_static(name), value.clone());
    }
    map
}

/// What the CI kinds' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::render::Rendered;
    use crate::secret::Content;

    /// Output `api` of env `prod`, with `entries`.
    pub fn rendered(entries: &[(&str, &str)], tainted: bool) -> Rendered {
        Rendered {
            output: "api".into(),
            env: "prod".into(),
            entries: entries.iter().map(|(k, v)| (k.to_string(), Content::new(v.as_bytes(), tainted))).collect(),
            tainted,
            used: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &str)]) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        Answer { status, headers: map, body: Vec::new() }
    }

    #[test]
    fn rate_limits_are_recognised() {
        let now = 1_767_225_600;
        let wait = |a: &Answer| rate_limit_wait(a, now, &mut 0);
        assert_eq!(wait(&answer(429, &[("retry-after", "3")])), Some(Duration::from_secs(3)));
        assert_eq!(wait(&answer(403, &[("retry-after", "60")])), Some(Duration::from_secs(60)));
        let reset = (now + 30).to_string();
        let exhausted = answer(403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]);
        assert_eq!(wait(&exhausted), Some(Duration::from_secs(30)));
        assert_eq!(wait(&answer(403, &[])), None, "a plain 403 is a permission problem");
        assert_eq!(wait(&answer(404, &[("retry-after", "1")])), None);
        assert_eq!(wait(&answer(429, &[])), Some(Duration::from_secs(60)));
        // GitHub's secondary limit without either header: at least a
        // minute, longer each time it repeats.
        let mut secondary = answer(403, &[("x-ratelimit-remaining", "12"), ("x-ratelimit-reset", &reset)]);
        secondary.body = br#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#.to_vec();
        let mut unsaid = 0;
        assert_eq!(rate_limit_wait(&secondary, now, &mut unsaid), Some(Duration::from_secs(60)));
        assert_eq!(rate_limit_wait(&secondary, now, &mut unsaid), Some(Duration::from_secs(120)));
        let mut denied = answer(403, &[]);
        denied.body = br#"{"message":"Resource not accessible by integration"}"#.to_vec();
        assert_eq!(wait(&denied), None);
    }

    #[test]
    fn base_urls_need_tls_off_loopback() {
        assert_eq!(check_base_url("https://gitlab.com/").unwrap(), "https://gitlab.com");
        assert_eq!(check_base_url("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert!(check_base_url("http://gitlab.example.com").unwrap_err().contains("unencrypted"));
        assert!(check_base_url("https://x.example/?a=b").is_err());
        assert!(check_base_url("ftp://x.example").is_err());
        assert!(check_base_url("not a url").is_err());
    }

    #[test]
    fn segments_are_encoded_whole() {
        let u = url("https://gitlab.example.com/gl", &["api", "v4", "projects", "group/app", "variables"]);
        assert_eq!(u.as_str(), "https://gitlab.example.com/gl/api/v4/projects/group%2Fapp/variables");
        let u = url("https://api.github.com", &["repos", "o", "r", "environments", "prod east", "secrets"]);
        assert_eq!(u.as_str(), "https://api.github.com/repos/o/r/environments/prod%20east/secrets");
    }

    #[test]
    fn error_answers_to_secret_writes_are_not_quoted() {
        let headers = HeaderMap::new();
        let mut call = Call {
            method: Method::PUT,
            url: url("https://x.example", &[]),
            headers: &headers,
            body: None,
            secret: true,
            dest: "d",
            op: "writing".into(),
        };
        let a = Answer { status: 400, headers: HeaderMap::new(), body: br#"{"message":"CANARY echoed"}"#.to_vec() };
        assert!(!a.error(&call).to_string().contains("CANARY"));
        call.secret = false;
        assert!(a.error(&call).to_string().contains("CANARY echoed"));
    }
}
