//! Vault (KV v2): secrets at `<mount>/<env>/<path>`.
//!
//! ```toml
//! [vault]                             # VAULT_ADDR, VAULT_TOKEN override
//! address = "http://127.0.0.1:8200"
//! mount = "secret"
//! auth = { method = "token" }         # VAULT_TOKEN, else token_file, else ~/.vault-token
//! # auth = { method = "approle", role_id = "...", secret_id_file = "/run/credentials/cfgsync/secret-id" }
//! ```
//!
//! KV v2 has no consistent multi-secret read, so each referenced path is read
//! once per pass and its version recorded. A 404 is not an error here: the
//! path is simply absent from the snapshot and the template that asked for it
//! fails with a message naming it. A 403 or any transport error fails the
//! whole fetch (fail closed). Response bodies are never put in errors: they
//! may hold secret values.
//!
//! # Credentials lifecycle
//!
//! ```toml
//! auth = { method = "kubernetes", role = "cfgsync" }   # mount "kubernetes", the projected SA token
//! auth = { method = "jwt", role = "cfgsync", token_file = "/run/secrets/ci-jwt" }  # mount "jwt"
//! ```
//!
//! A session remembers the token's TTL (from the login response, or
//! `lookup-self` for a given token). [`VaultSource::maintain`], which
//! `cfgsync run` keeps running, renews it with `renew-self` at 2/3 of its
//! TTL, as Vault's own lifetime watcher does. When a renewal fails (token
//! revoked, expired, server restarted) or Vault caps it at the token's max
//! TTL, the source logs in again with its auth method (AppRole, Kubernetes,
//! JWT; for `token`, the token is read again from `VAULT_TOKEN`/`token_file`,
//! which an agent may have rotated). A failed login is retried with backoff;
//! until it succeeds every fetch fails closed. The one-shot commands never
//! call `maintain`; they log in on first use, and a session whose TTL has run
//! out is replaced on the next fetch. Tokens live in [`SecretString`] and
//! the vaultrs client only.
//!
//! # TLS
//!
//! ```toml
//! address = "https://vault.internal:8200"
//! ca_file = "/etc/cfgsync/vault-ca.pem"     # VAULT_CACERT
//! cert_file = "/etc/cfgsync/vault.pem"      # VAULT_CLIENT_CERT, with key_file (VAULT_CLIENT_KEY)
//! key_file = "/etc/cfgsync/vault-key.pem"
//! server_name = "vault.internal"            # VAULT_TLS_SERVER_NAME
//! ```
//!
//! The HTTP client is built here (reqwest over the rustls configuration of
//! [`super::tls`]), not by vaultrs from the process environment: vaultrs
//! would read `VAULT_SKIP_VERIFY` and `VAULT_CLIENT_CERT` itself, behind
//! the config's back. When a TLS file changes on disk, the next use builds
//! a new HTTP client for the same token. A request that fails in transport
//! is explained by one TLS handshake with the server (wrong CA, expired,
//! name mismatch, client certificate refused): one line naming the address.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::tls::{Material, Stamp};
use super::{Request, Secret, Snapshot, Source, SourceError, SourceKind};
use crate::config::{VaultAuth, VaultSettings};
use crate::secret::SecretString;

/// Concurrent reads per fetch: enough to hide loopback latency for 100
/// secrets, few enough not to look like a burst to a rate-limited server.
const PARALLEL_READS: usize = 8;
/// First retry of a failed login; doubles up to [`LOGIN_RETRY_MAX`].
const LOGIN_RETRY_MIN: Duration = Duration::from_millis(500);
const LOGIN_RETRY_MAX: Duration = Duration::from_secs(30);

/// What happened to the credentials, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialEvent {
    Renewed,
    RenewFailed,
    LoggedIn,
    LoginFailed,
}

/// Told about every [`CredentialEvent`] and every secret read sent to
/// Vault (the service counts them).
pub trait CredentialObserver: Send + Sync {
    fn credential_event(&self, method: &'static str, event: CredentialEvent);
    fn secret_read(&self, _env: &str) {}
}

pub struct VaultSource {
    settings: VaultSettings,
    session: Mutex<Option<Session>>,
    observer: Option<Arc<dyn CredentialObserver>>,
    /// How many logins failed, and the last one's error.
    failed: std::sync::Mutex<(u64, Option<SourceError>)>,
}

/// A logged-in client and what we know of its token's lifetime.
struct Session {
    client: Arc<VaultClient>,
    /// None: the token never expires (a root token); nothing to renew.
    expires_at: Option<Instant>,
    /// When to renew (or log in again): 2/3 of the TTL.
    renew_at: Option<Instant>,
    /// The TTL the login granted. A renewal granting less means Vault hit
    /// the token's max TTL: log in again instead of renewing.
    granted: Duration,
    renewable: bool,
    /// The TLS files the client's HTTP client was built with.
    stamp: Stamp,
}

impl Session {
    fn new(client: VaultClient, ttl: Duration, granted: Duration, renewable: bool) -> Self {
        let now = Instant::now();
        let (expires_at, renew_at) =
            if ttl.is_zero() { (None, None) } else { (Some(now + ttl), Some(now + ttl * 2 / 3)) };
        Self { client: Arc::new(client), expires_at, renew_at, granted, renewable, stamp: Stamp::default() }
    }

    fn usable(&self) -> bool {
        self.expires_at.is_none_or(|at| Instant::now() < at)
    }
}

impl VaultSource {
    pub fn new(settings: VaultSettings) -> Self {
        Self { settings, session: Mutex::new(None), observer: None, failed: std::sync::Mutex::new((0, None)) }
    }

    /// Reports credential events to `observer`.
    pub fn set_observer(&mut self, observer: Arc<dyn CredentialObserver>) {
        self.observer = Some(observer);
    }

    fn method(&self) -> &'static str {
        match self.settings.auth {
            VaultAuth::Token { .. } => "token",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Kubernetes { .. } => "kubernetes",
            VaultAuth::Jwt { .. } => "jwt",
        }
    }

    fn event(&self, event: CredentialEvent) {
        if let Some(o) = &self.observer {
            o.credential_event(self.method(), event);
        }
    }

    fn auth_error(&self, cause: impl Into<String>) -> SourceError {
        SourceError::Auth {
            source_kind: SourceKind::Vault,
            who: format!(" with {} auth", self.method()),
            cause: cause.into(),
        }
    }

    fn tls_error(&self, cause: String) -> SourceError {
        SourceError::Tls { source_kind: SourceKind::Vault, endpoint: self.settings.address.clone(), cause }
    }

    fn new_client(&self, token: &SecretString) -> Result<VaultClient, SourceError> {
        // Every TLS setting explicit: vaultrs's defaults read the process
        // environment (VAULT_SKIP_VERIFY, VAULT_CLIENT_CERT, ...).
        let settings = VaultClientSettingsBuilder::default()
            .address(&self.settings.address)
            .token(token.expose())
            .timeout(Some(self.settings.timeout))
            .ca_certs(Vec::new())
            .identity(None)
            .verify(true)
            .build()
            .map_err(|e| SourceError::Connect {
                source_kind: SourceKind::Vault,
                endpoint: crate::text::redact_urls(&self.settings.address).into_owned(),
                cause: e.to_string(),
            })?;
        let mut client = VaultClient::new(settings).map_err(|e| SourceError::Connect {
            source_kind: SourceKind::Vault,
            endpoint: crate::text::redact_urls(&self.settings.address).into_owned(),
            cause: e.to_string(),
        })?;
        if self.settings.tls.is_custom() {
            client.http = self.http()?.0;
        }
        Ok(client)
    }

    /// An HTTP client with the configured TLS, and the stamp of its files.
    fn http(&self) -> Result<(rustify::clients::reqwest::Client, Stamp), SourceError> {
        let tls = &self.settings.tls;
        let material = Material::read(tls).map_err(|c| self.tls_error(c))?;
        let builder = reqwest::Client::builder().timeout(self.settings.timeout);
        let http = material.reqwest(tls, builder).map_err(|c| self.tls_error(c))?;
        Ok((rustify::clients::reqwest::Client::new(&self.settings.address, http), material.stamp))
    }

    /// The session's client again with a new HTTP client when a TLS file
    /// changed on disk since it was built: same token, new certificates.
    fn follow_tls_files(&self, session: &mut Session) -> Result<(), SourceError> {
        if !self.settings.tls.is_custom() || session.stamp == Stamp::of(&self.settings.tls) {
            return Ok(());
        }
        tracing::info!("vault: a TLS file changed on disk; connecting again with it");
        let (http, stamp) = self.http()?;
        let old = session.client.as_ref();
        session.client = Arc::new(VaultClient { http, middle: old.middle.clone(), settings: old.settings.clone() });
        session.stamp = stamp;
        Ok(())
    }

    /// A transport failure explained: one TLS handshake with the server
    /// says what is wrong with the certificates, when that is what it is.
    async fn explain_transport(&self, e: SourceError) -> SourceError {
        let transport = match &e {
            SourceError::Auth { cause, .. } | SourceError::Read { cause, .. } | SourceError::Connect { cause, .. } => {
                cause.contains("request failed")
            }
            _ => false,
        };
        if !transport || !self.settings.address.starts_with("https://") {
            return e;
        }
        let tls = &self.settings.tls;
        let config = match Material::read(tls).and_then(|m| m.rustls(tls, &[b"http/1.1"])) {
            Ok(c) => Arc::new(c),
            Err(cause) => return self.tls_error(cause),
        };
        let probe = super::tls::Probe::Http1;
        match super::tls::check_handshake(&self.settings.address, tls, config, self.settings.timeout, probe).await {
            Err(cause) => self.tls_error(cause),
            Ok(()) => e,
        }
    }

    /// The per-pass warnings: verification off, or plain http:// to
    /// another machine.
    fn warn_if_insecure(&self, env: &str) {
        let tls = &self.settings.tls;
        if tls.skip_verify {
            tracing::warn!(
                env,
                address = self.settings.address,
                "vault: VAULT_SKIP_VERIFY (allowed by allow_skip_verify): the server's certificate is not verified"
            );
        }
        if tls.insecure
            && let Some(rest) = self.settings.address.strip_prefix("http://")
            && !crate::config::is_loopback(crate::config::host_of(rest))
        {
            tracing::warn!(
                env,
                address = self.settings.address,
                "vault: plain http:// to another machine (insecure = true): tokens and secret values cross the network in clear"
            );
        }
    }

    /// The current client, logging in when there is no usable session.
    ///
    /// One login at a time, and a login that failed is the answer of every
    /// caller that waited for it: otherwise each env of a pass would log in
    /// in turn against a hung Vault, and N envs would wait N timeouts
    /// instead of one.
    pub(crate) async fn client(&self) -> Result<Arc<VaultClient>, SourceError> {
        let failures_before = self.failed.lock().unwrap_or_else(|p| p.into_inner()).0;
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_mut().filter(|s| s.usable()) {
            self.follow_tls_files(s)?;
            return Ok(s.client.clone());
        }
        if let (failures, Some(e)) = &*self.failed.lock().unwrap_or_else(|p| p.into_inner())
            && *failures != failures_before
        {
            return Err(e.clone());
        }
        let session = self.login_counted().await?;
        let client = session.client.clone();
        *guard = Some(session);
        Ok(client)
    }

    async fn login_counted(&self) -> Result<Session, SourceError> {
        let logged_in = match self.login().await {
            Ok(mut s) => {
                s.stamp = Stamp::of(&self.settings.tls);
                Ok(s)
            }
            Err(e) => Err(self.explain_transport(e).await),
        };
        match logged_in {
            Ok(s) => {
                self.event(CredentialEvent::LoggedIn);
                tracing::info!(method = self.method(), ttl_s = s.granted.as_secs(), "vault: logged in");
                Ok(s)
            }
            Err(e) => {
                self.event(CredentialEvent::LoginFailed);
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                *failed = (failed.0 + 1, Some(e.clone()));
                Err(e)
            }
        }
    }

    /// Obtains a token with the configured method: a new session.
    async fn login(&self) -> Result<Session, SourceError> {
        let auth = match &self.settings.auth {
            VaultAuth::Token { token, token_file } => {
                let token = match (token, token_file) {
                    (Some(t), _) => t.clone(),
                    (None, Some(f)) => read_secret_file(f).map_err(|e| self.auth_error(e))?,
                    (None, None) => {
                        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
                        read_secret_file(&home.join(".vault-token")).map_err(|_| {
                            self.auth_error("no token: set VAULT_TOKEN, `token_file`, or log in with the vault CLI")
                        })?
                    }
                };
                let client = self.new_client(&token)?;
                // A given token: ask Vault how long it lives. A token that
                // may not look itself up is still used; it is just not renewed.
                return Ok(match vaultrs::token::lookup_self(&client).await {
                    Ok(info) => {
                        let ttl = Duration::from_secs(info.ttl);
                        Session::new(client, ttl, ttl, info.renewable.unwrap_or(false))
                    }
                    Err(ClientError::APIError { code: 403, .. }) => {
                        Session::new(client, Duration::ZERO, Duration::ZERO, false)
                    }
                    Err(e) => return Err(self.auth_error(format!("token lookup-self: {}", client_error_text(&e)))),
                });
            }
            VaultAuth::AppRole { mount, role_id, role_id_file, secret_id_file } => {
                let role_id = match (role_id, role_id_file) {
                    (Some(r), _) => r.clone(),
                    (None, Some(f)) => read_secret_file(f).map_err(|e| self.auth_error(e))?.expose().to_owned(),
                    (None, None) => return Err(self.auth_error("approle auth needs role_id or role_id_file")),
                };
                let secret_id = match secret_id_file {
                    Some(f) => read_secret_file(f).map_err(|e| self.auth_error(e))?,
                    None => return Err(self.auth_error("approle auth needs secret_id_file")),
                };
                let client = self.new_client(&SecretString::default())?;
                let auth =
                    vaultrs::auth::approle::login(&client, mount, &role_id, secret_id.expose()).await.map_err(|e| {
                        self.auth_error(format!("approle login at auth/{mount}: {}", client_error_text(&e)))
                    })?;
                (client, auth)
            }
            VaultAuth::Kubernetes { mount, role, token_file } => {
                let jwt = read_secret_file(token_file).map_err(|e| self.auth_error(e))?;
                let client = self.new_client(&SecretString::default())?;
                let auth = vaultrs::auth::kubernetes::login(&client, mount, role, jwt.expose()).await.map_err(|e| {
                    self.auth_error(format!(
                        "kubernetes login at auth/{mount} as role {role:?}: {}",
                        client_error_text(&e)
                    ))
                })?;
                (client, auth)
            }
            VaultAuth::Jwt { mount, role, token_file } => {
                let jwt = read_secret_file(token_file).map_err(|e| self.auth_error(e))?;
                let client = self.new_client(&SecretString::default())?;
                let auth = vaultrs::auth::oidc::login(&client, mount, jwt.expose(), role.clone())
                    .await
                    .map_err(|e| self.auth_error(format!("jwt login at auth/{mount}: {}", client_error_text(&e))))?;
                (client, auth)
            }
        };
        let (mut client, auth) = auth;
        client.set_token(&auth.client_token);
        let ttl = Duration::from_secs(auth.lease_duration);
        Ok(Session::new(client, ttl, ttl, auth.renewable))
    }

    /// A 403 may mean that the token itself is gone (revoked, or lost with a
    /// restarted server), not that the policy lacks a path. When the token
    /// cannot even look itself up, the credentials are refreshed now, as the
    /// renewal would do when due (renew, which fails, then log in again,
    /// reading the token file again where an agent may have put a new one),
    /// instead of failing every fetch with the dead token until then, which
    /// for a token without a TTL is never.
    async fn refresh_if_refused(&self, client: &Arc<VaultClient>) {
        let Err(ClientError::APIError { code: 403, .. }) = vaultrs::token::lookup_self(client.as_ref()).await else {
            return;
        };
        let current = self.session.lock().await.as_ref().is_some_and(|s| Arc::ptr_eq(&s.client, client));
        if !current {
            return; // replaced meanwhile
        }
        tracing::warn!(method = self.method(), "vault: the token is refused; renewing or logging in again now");
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "vault: login failed; fetches fail closed until it works");
        }
    }

    /// One step of the lifecycle: renew the token, or log in again when it
    /// cannot be renewed. Returns when the next step is due (None: never).
    pub async fn refresh(&self) -> Result<Option<Instant>, SourceError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_mut().filter(|s| s.renewable && s.usable()) {
            match vaultrs::token::renew_self(s.client.as_ref(), None).await {
                Ok(auth) => {
                    let ttl = Duration::from_secs(auth.lease_duration);
                    let now = Instant::now();
                    s.expires_at = Some(now + ttl);
                    s.renew_at = Some(now + ttl * 2 / 3);
                    if ttl < s.granted {
                        // Capped by the max TTL: the next step logs in again.
                        s.renewable = false;
                    }
                    self.event(CredentialEvent::Renewed);
                    tracing::info!(method = self.method(), ttl_s = ttl.as_secs(), "vault: token renewed");
                    return Ok(s.renew_at);
                }
                Err(e) => {
                    self.event(CredentialEvent::RenewFailed);
                    tracing::warn!(
                        method = self.method(),
                        error = %client_error_text(&e),
                        "vault: token renewal failed; logging in again"
                    );
                }
            }
        }
        let session = self.login_counted().await?;
        let next = session.renew_at;
        *guard = Some(session);
        Ok(next)
    }

    /// Keeps the credentials alive until `cancel`: log in now, then renew or
    /// log in again whenever due; failed logins are retried with backoff.
    pub async fn maintain(&self, cancel: CancellationToken) {
        let mut retry = LOGIN_RETRY_MIN;
        let mut first = true;
        loop {
            let due = if first {
                first = false;
                Some(Instant::now())
            } else {
                self.session.lock().await.as_ref().and_then(|s| s.renew_at)
            };
            let Some(due) = due else {
                // A token that never expires: nothing to do.
                cancel.cancelled().await;
                return;
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(due) => {}
            }
            loop {
                let result = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = self.refresh() => r,
                };
                match result {
                    Ok(_) => {
                        retry = LOGIN_RETRY_MIN;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "vault: login failed; fetches fail closed until it works");
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(retry) => {}
                        }
                        retry = (retry * 2).min(LOGIN_RETRY_MAX);
                    }
                }
            }
        }
    }
}

fn read_secret_file(path: &std::path::Path) -> Result<SecretString, String> {
    std::fs::read_to_string(path)
        .map(|s| SecretString::new(s.trim()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A Vault error as text, without any response body, on one line: Vault's
/// multi-errors ("1 error occurred:\n\t* permission denied\n\n") would
/// otherwise split a log record.
pub(crate) fn client_error_text(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => {
            let errors: Vec<String> = errors
                .iter()
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|s| !s.is_empty())
                .collect();
            if errors.is_empty() { format!("HTTP {code}") } else { format!("HTTP {code}: {}", errors.join("; ")) }
        }
        ClientError::RestClientError { source } => match source {
            rustify::errors::ClientError::RequestError { source, .. } => {
                crate::text::redact_urls(&format!("request failed: {source:#}")).into_owned()
            }
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

enum ReadOutcome {
    Found(Secret),
    Absent,
}

/// The fields of a KV v2 read as secrets (non-string values as JSON text),
/// with the version they were read at.
pub(crate) fn secret_from_response(
    shown: String,
    resp: vaultrs::api::kv2::responses::ReadSecretResponse,
) -> Result<Secret, SourceError> {
    let serde_json::Value::Object(map) = resp.data else {
        return Err(SourceError::Invalid {
            source_kind: SourceKind::Vault,
            path: shown,
            cause: "secret data is not a map of fields".to_owned(),
        });
    };
    let fields = map
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, SecretString::new(text))
        })
        .collect();
    Ok(Secret { fields, version: Some(resp.metadata.version) })
}

async fn read_one(client: Arc<VaultClient>, mount: String, full_path: String) -> Result<ReadOutcome, SourceError> {
    let shown = format!("{mount}/{full_path}");
    let endpoint = ReadSecretRequest::builder().mount(&mount).path(&full_path).build().map_err(|e| {
        SourceError::Invalid { source_kind: SourceKind::Vault, path: shown.clone(), cause: e.to_string() }
    })?;
    match vaultrs::api::exec_with_result(client.as_ref(), endpoint).await {
        Ok(resp) => Ok(ReadOutcome::Found(secret_from_response(shown, resp)?)),
        Err(ClientError::APIError { code: 404, .. }) => Ok(ReadOutcome::Absent),
        Err(e @ ClientError::APIError { code: 403, .. }) => Err(SourceError::Denied {
            source_kind: SourceKind::Vault,
            path: shown,
            who: String::new(),
            detail: format!(" ({})", client_error_text(&e)),
        }),
        Err(e) => Err(SourceError::Read { source_kind: SourceKind::Vault, path: shown, cause: client_error_text(&e) }),
    }
}

impl Source for VaultSource {
    async fn fetch(&self, request: &Request) -> Result<Snapshot, SourceError> {
        self.warn_if_insecure(&request.env);
        let mut snapshot = Snapshot { env: request.env.clone(), ..Default::default() };
        if request.secret_paths.is_empty() {
            return Ok(snapshot);
        }
        let client = self.client().await?;
        let mut pending = request.secret_paths.iter();
        let mut tasks = JoinSet::new();
        let mut found = BTreeMap::new();
        loop {
            while tasks.len() < PARALLEL_READS {
                let Some(path) = pending.next() else { break };
                let full = format!("{}/{path}", request.env);
                let (client, mount, path) = (client.clone(), self.settings.mount.clone(), path.clone());
                tasks.spawn(async move { (path, read_one(client, mount, full).await) });
                if let Some(o) = &self.observer {
                    o.secret_read(&request.env);
                }
            }
            let Some(joined) = tasks.join_next().await else { break };
            let (path, outcome) = joined.map_err(|e| SourceError::Read {
                source_kind: SourceKind::Vault,
                path: self.settings.mount.clone(),
                cause: format!("read task failed: {e}"),
            })?;
            // Dropping the JoinSet on error aborts the other reads.
            let outcome = match outcome {
                Err(e @ SourceError::Denied { .. }) => {
                    self.refresh_if_refused(&client).await;
                    return Err(e);
                }
                Err(e) => return Err(self.explain_transport(e).await),
                Ok(o) => o,
            };
            if let ReadOutcome::Found(secret) = outcome {
                found.insert(path, secret);
            }
        }
        snapshot.secrets = found;
        Ok(snapshot)
    }
}
